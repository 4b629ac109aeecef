//! The bundle as a process: the whole of `bot-bottle sidecar --config FILE [--check]`, shared
//! by that subcommand and by the small `bot-bottle-sidecar` executable installed beside
//! `bot-bottle` (which the native and docker backends start instead, so that a bottle's
//! sidecar maps only the code it runs). Both run exactly [`run_process`]: the same config,
//! the same [`crate::run`], the same `stopped` line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::{BundleError, Health, SidecarConfig};

/// The subcommand both executables take first: the launcher starts either with the same
/// arguments (`sidecar --config FILE`), so only the executable differs.
pub const SIDECAR_SUBCOMMAND: &str = "sidecar";

/// The line the bundle prints once its shutdown is done: the sidecars drained, the gate's
/// deploy keys revoked, the runtime gone. `start` returns at it instead of waiting for the
/// kernel's end of the process; never printed after a failure.
pub const STOPPED_LINE: &str = "stopped";

/// The arguments of `sidecar`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarArgs {
    /// The bottle's sidecar config file (`sidecar.json`), written by `start`.
    pub config: PathBuf,
    /// Health check of the bundle that runs with this config instead of running it.
    pub check: bool,
}

impl SidecarArgs {
    /// Reads `sidecar --config FILE [--check]` (also `--config=FILE`), the arguments after the
    /// executable's name, for `bot-bottle-sidecar`, which has no other command line.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<SidecarArgs, String> {
        let mut args = args.into_iter();
        if args.next().as_deref() != Some(std::ffi::OsStr::new(SIDECAR_SUBCOMMAND)) {
            return Err(format!(
                "bot-bottle-sidecar runs a bottle's sidecar bundle for `start` and takes `{SIDECAR_SUBCOMMAND} --config FILE [--check]`; see `bot-bottle sidecar --help`"
            ));
        }
        let mut config = None;
        let mut check = false;
        while let Some(arg) = args.next() {
            let text = arg.to_string_lossy();
            if text == "--check" {
                check = true;
            } else if text == "--config" {
                let Some(file) = args.next() else {
                    return Err("`--config` needs a value: the bottle's sidecar.json".into());
                };
                config = Some(PathBuf::from(file));
            } else if let Some(file) = text.strip_prefix("--config=") {
                config = Some(PathBuf::from(file));
            } else {
                return Err(format!(
                    "unexpected argument `{text}`; `{SIDECAR_SUBCOMMAND}` takes `--config FILE [--check]`"
                ));
            }
        }
        let Some(config) = config else {
            return Err("`--config FILE` is required: the bottle's sidecar.json".into());
        };
        Ok(SidecarArgs { config, check })
    }
}

/// Runs the bundle of `args.config` until it is stopped and prints [`STOPPED_LINE`] (exit 0),
/// or with `check`, asks each sidecar of the running bundle a real question, prints one line
/// each and exits 0 only when all answered (1 otherwise).
pub fn run_process(args: &SidecarArgs) -> Result<ExitCode, BundleError> {
    let config = SidecarConfig::load(&args.config)?;
    if args.check {
        let health = crate::check(&config);
        for answer in &health {
            println!("{answer}");
        }
        return Ok(if health.iter().all(Health::is_answering) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    crate::run(config)?;
    // The shutdown is done and the runtime gone: `start` need not wait for the kernel's end
    // of this process (`launcher`'s bundle module). Not said after a failure.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{STOPPED_LINE}");
        let _ = out.flush();
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SidecarArgs, String> {
        SidecarArgs::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn the_launchers_arguments_are_read_in_either_form() {
        let run = SidecarArgs {
            config: "/s/sidecar.json".into(),
            check: false,
        };
        assert_eq!(
            parse(&["sidecar", "--config", "/s/sidecar.json"]),
            Ok(run.clone())
        );
        assert_eq!(parse(&["sidecar", "--config=/s/sidecar.json"]), Ok(run));
        let check = SidecarArgs {
            config: "/s/sidecar.json".into(),
            check: true,
        };
        assert_eq!(
            parse(&["sidecar", "--config", "/s/sidecar.json", "--check"]),
            Ok(check.clone())
        );
        assert_eq!(
            parse(&["sidecar", "--check", "--config", "/s/sidecar.json"]),
            Ok(check)
        );
    }

    #[test]
    fn anything_else_is_refused_naming_what_to_give() {
        for (args, says) in [
            (&[][..], "takes `sidecar --config FILE [--check]`"),
            (&["egress", "serve"][..], "takes `sidecar --config FILE"),
            (&["sidecar"][..], "`--config FILE` is required"),
            (&["sidecar", "--config"][..], "`--config` needs a value"),
            (
                &["sidecar", "--config", "/s", "--verbose"][..],
                "unexpected argument `--verbose`",
            ),
            (&["sidecar", "/s"][..], "unexpected argument `/s`"),
        ] {
            let err = parse(args).expect_err("refused");
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
}
