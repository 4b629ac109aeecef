//! Which OCI runtime runs the agent container, and why.
//!
//! gVisor (`runsc`) puts a user-space kernel between the agent and the host's, so the agent
//! runs under it whenever the daemon has it (DESIGN.md §8) — but only in the one network mode
//! where the bottle's packet filter still sees every packet the agent sends: `--network=host`
//! in the runtime's `runtimeArgs`. In that mode gVisor's sockets are host-kernel sockets *in
//! the container's own network namespace* (runsc joins the namespace Docker made for the
//! container; it only uses the host's root namespace when the container has none, i.e.
//! `docker run --network=host`, which bottles never use), where the firewall container
//! installed its rules. In gVisor's default mode (`sandbox`: its own network stack), packets
//! leave as raw frames on the container's interface and never cross that namespace's
//! netfilter: the filter, and with it the block of the host on the bridge's gateway, would not
//! apply. So a runsc registered in any other mode is not chosen automatically, and naming it
//! explicitly is refused (fail closed), with the fix.
//!
//! The same holds for the daemon's default runtime, which runs the agent when nothing is
//! named: a default that is gVisor outside host network mode is refused too.
//!
//! `BOT_BOTTLE_DOCKER_RUNTIME` chooses explicitly (`runc` opts out of gVisor; empty or `auto`:
//! the automatic choice). A named runtime the daemon does not list is refused before anything
//! is created.

use std::collections::BTreeMap;

/// The environment variable that chooses the agent's runtime.
pub const RUNTIME_ENV: &str = "BOT_BOTTLE_DOCKER_RUNTIME";
/// gVisor's runtime name, the one chosen automatically.
pub const GVISOR: &str = "runsc";
/// The registration the scripts write (`scripts/docker/start-dockerd`) and the fixes name.
pub const GVISOR_REGISTRATION: &str =
    r#"{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host"]}}}"#;

/// Which OCI runtime runs the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RuntimeChoice {
    /// `runsc` (gVisor) when the daemon lists it in a mode the bottle's firewall covers, else
    /// the daemon's default.
    #[default]
    Auto,
    /// Exactly this runtime (e.g. `runc`).
    Named(String),
}

impl RuntimeChoice {
    /// The choice `BOT_BOTTLE_DOCKER_RUNTIME` makes: unset, empty or `auto` is [`Auto`].
    ///
    /// [`Auto`]: RuntimeChoice::Auto
    pub fn from_env() -> RuntimeChoice {
        RuntimeChoice::parse(std::env::var(RUNTIME_ENV).ok().as_deref())
    }

    /// As [`from_env`](RuntimeChoice::from_env), for a given value.
    pub fn parse(value: Option<&str>) -> RuntimeChoice {
        match value.map(str::trim) {
            None | Some("") | Some("auto") => RuntimeChoice::Auto,
            Some(name) => RuntimeChoice::Named(name.to_owned()),
        }
    }
}

/// A runtime as the daemon lists it (`docker info`'s `Runtimes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registered {
    /// The executable (a name looked up in `PATH`, or a path).
    pub path: String,
    /// `runtimeArgs`.
    pub args: Vec<String>,
}

impl Registered {
    /// Whether this runtime is gVisor (its executable is `runsc`, whatever the name it is
    /// registered under).
    pub fn is_gvisor(&self, name: &str) -> bool {
        name == GVISOR || self.path.rsplit('/').next() == Some(GVISOR)
    }

    /// gVisor's `--network` mode in these arguments (Go flag syntax, the last one wins;
    /// `sandbox` when absent).
    pub fn gvisor_network(&self) -> String {
        let mut mode = "sandbox".to_owned();
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            let flag = arg.trim_start_matches('-');
            if arg.starts_with('-') && flag == "network" {
                if let Some(value) = args.next() {
                    mode = value.clone();
                }
            } else if arg.starts_with('-')
                && let Some(value) = flag.strip_prefix("network=")
            {
                mode = value.to_owned();
            }
        }
        mode
    }
}

/// What the agent runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The runtime to ask for; `None`: the daemon's default.
    pub runtime: Option<String>,
    /// What `doctor` says (`runtime runsc (gVisor)`, ...).
    pub summary: String,
    /// Why gVisor is not used although it could be, with the fix (`doctor` warns).
    pub warning: Option<(String, String)>,
    /// Whether the chosen runtime is gVisor (see [`host_pids_limit`]).
    pub gvisor: bool,
}

/// Host tasks gVisor needs per process of the agent: measured 8 on Debian's runsc 20221219
/// (ptrace platform: 100 `sleep`s took the container's `pids.current` from 45 to 849), with
/// room to spare.
pub const GVISOR_HOST_TASKS_PER_PROCESS: i64 = 10;

/// The container's PID limit for an agent that may have `limit` processes. Docker's limit
/// counts host tasks; under gVisor those are the sandbox's own (the Sentry's threads, one
/// stub per address space), about eight per agent process, and when they run out the whole
/// sandbox dies instead of a `fork` failing (measured: 200 `sleep`s under a 1024 limit killed
/// it). So under gVisor the limit is scaled to the host tasks that many processes need; it
/// stays a hard bound on what the bottle can take from the host. Zero or negative (no limit)
/// is passed through.
pub fn host_pids_limit(gvisor: bool, limit: i64) -> i64 {
    if gvisor && limit > 0 {
        limit.saturating_mul(GVISOR_HOST_TASKS_PER_PROCESS)
    } else {
        limit
    }
}

/// Why the configured runtime cannot be used; `fix` says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: String,
    pub fix: String,
}

/// Chooses the agent's runtime from what the daemon lists (`default`: the daemon's default
/// runtime, named in what `doctor` says).
pub fn choose(
    choice: &RuntimeChoice,
    runtimes: &BTreeMap<String, Registered>,
    default: &str,
) -> Result<Chosen, Refused> {
    match choice {
        RuntimeChoice::Named(name) => {
            let Some(registered) = runtimes.get(name) else {
                let listed: Vec<&str> = runtimes.keys().map(String::as_str).collect();
                return Err(Refused {
                    reason: format!(
                        "{RUNTIME_ENV} names the runtime `{name}`, which dockerd does not list (it lists: {})",
                        listed.join(", ")
                    ),
                    fix: format!(
                        "register `{name}` in /etc/docker/daemon.json and reload dockerd, or unset {RUNTIME_ENV}"
                    ),
                });
            };
            if registered.is_gvisor(name) {
                let mode = registered.gvisor_network();
                if mode != "host" {
                    return Err(Refused {
                        reason: format!(
                            "{RUNTIME_ENV} names `{name}` (gVisor), registered with --network={mode}: gVisor's own network stack would send the agent's packets past the bottle's firewall"
                        ),
                        fix: format!(
                            "add \"runtimeArgs\": [\"--network=host\"] to `{name}` in /etc/docker/daemon.json and reload dockerd (sudo kill -HUP $(pidof dockerd)), or set {RUNTIME_ENV}=runc"
                        ),
                    });
                }
                return Ok(Chosen {
                    runtime: Some(name.clone()),
                    summary: format!("runtime {name} (gVisor, {RUNTIME_ENV}={name})"),
                    warning: None,
                    gvisor: true,
                });
            }
            let gvisor_skipped = runtimes.get(GVISOR).is_some_and(|r| r.gvisor_network() == "host");
            Ok(Chosen {
                runtime: Some(name.clone()),
                summary: format!("runtime {name} ({RUNTIME_ENV}={name})"),
                warning: gvisor_skipped.then(|| {
                    (
                        format!("gVisor (runsc) is registered but {RUNTIME_ENV}={name} opts out of it: the agent shares the host's kernel"),
                        format!("unset {RUNTIME_ENV} to run agents under gVisor"),
                    )
                }),
                gvisor: false,
            })
        }
        RuntimeChoice::Auto => match runtimes.get(GVISOR) {
            Some(registered) if registered.gvisor_network() == "host" => Ok(Chosen {
                runtime: Some(GVISOR.to_owned()),
                summary: format!("runtime {GVISOR} (gVisor)"),
                warning: None,
                gvisor: true,
            }),
            // The daemon's default runs the agent from here on: a gVisor default is judged as a
            // named one is (dockerd can be told `"default-runtime": "runsc"`).
            _ if runtimes.get(default).is_some_and(|r| r.is_gvisor(default)) => {
                default_gvisor(runtimes, default)
            }
            Some(registered) => Ok(Chosen {
                runtime: None,
                summary: format!("runtime {default} (the daemon's default)"),
                warning: Some((
                    format!(
                        "gVisor (runsc) is registered with --network={}, where its own network stack would bypass the bottle's firewall; bottles use the daemon's default runtime",
                        registered.gvisor_network()
                    ),
                    "add \"runtimeArgs\": [\"--network=host\"] to runsc in /etc/docker/daemon.json and reload dockerd (sudo kill -HUP $(pidof dockerd))".to_owned(),
                )),
                gvisor: false,
            }),
            None => Ok(Chosen {
                runtime: None,
                summary: format!("runtime {default} (the daemon's default)"),
                warning: Some((
                    "gVisor (runsc) is not registered with dockerd; bottles use the daemon's default runtime".to_owned(),
                    format!(
                        "sudo apt-get install runsc, add {GVISOR_REGISTRATION} to /etc/docker/daemon.json and reload dockerd (sudo kill -HUP $(pidof dockerd)); scripts/docker/start-dockerd does both"
                    ),
                )),
                gvisor: false,
            }),
        },
    }
}

/// The choice when the daemon's default runtime, `default`, is gVisor: taken (named, so
/// that the pid limit is scaled for it) in host network mode, refused in any other (its own
/// network stack would send the agent's packets past the bottle's firewall).
fn default_gvisor(
    runtimes: &BTreeMap<String, Registered>,
    default: &str,
) -> Result<Chosen, Refused> {
    let mode = runtimes
        .get(default)
        .map(Registered::gvisor_network)
        .unwrap_or_default();
    if mode != "host" {
        return Err(Refused {
            reason: format!(
                "dockerd's default runtime `{default}` is gVisor registered with --network={mode}: gVisor's own network stack would send the agent's packets past the bottle's firewall"
            ),
            fix: format!(
                "add \"runtimeArgs\": [\"--network=host\"] to `{default}` in /etc/docker/daemon.json and reload dockerd (sudo kill -HUP $(pidof dockerd)), or set {RUNTIME_ENV}=runc"
            ),
        });
    }
    Ok(Chosen {
        runtime: Some(default.to_owned()),
        summary: format!("runtime {default} (gVisor, the daemon's default)"),
        warning: None,
        gvisor: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(entries: &[(&str, &str, &[&str])]) -> BTreeMap<String, Registered> {
        entries
            .iter()
            .map(|(name, path, args)| {
                (
                    (*name).to_owned(),
                    Registered {
                        path: (*path).to_owned(),
                        args: args.iter().map(|a| (*a).to_owned()).collect(),
                    },
                )
            })
            .collect()
    }

    const RUNC: (&str, &str, &[&str]) = ("runc", "runc", &[]);

    #[test]
    fn the_environment_chooses_auto_or_a_name() {
        assert_eq!(RuntimeChoice::parse(None), RuntimeChoice::Auto);
        assert_eq!(RuntimeChoice::parse(Some(" ")), RuntimeChoice::Auto);
        assert_eq!(RuntimeChoice::parse(Some("auto")), RuntimeChoice::Auto);
        assert_eq!(
            RuntimeChoice::parse(Some("runc")),
            RuntimeChoice::Named("runc".into())
        );
    }

    #[test]
    fn gvisor_network_mode_is_read_as_go_flags_read_it() {
        let mode = |args: &[&str]| {
            Registered {
                path: "/usr/bin/runsc".into(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
            }
            .gvisor_network()
        };
        assert_eq!(mode(&[]), "sandbox");
        assert_eq!(mode(&["--network=host"]), "host");
        assert_eq!(mode(&["-network=host"]), "host");
        assert_eq!(mode(&["--network", "host"]), "host");
        assert_eq!(mode(&["--network=host", "--network=sandbox"]), "sandbox");
        assert_eq!(mode(&["--debug", "network=host"]), "sandbox");
        assert_eq!(mode(&["--network=none"]), "none");
    }

    #[test]
    fn auto_takes_runsc_only_in_host_network_mode() {
        let with_host = daemon(&[RUNC, ("runsc", "/usr/bin/runsc", &["--network=host"])]);
        assert_eq!(
            choose(&RuntimeChoice::Auto, &with_host, "runc"),
            Ok(Chosen {
                runtime: Some("runsc".into()),
                summary: "runtime runsc (gVisor)".into(),
                warning: None,
                gvisor: true,
            })
        );
        for args in [&[][..], &["--network=sandbox"][..], &["--network=none"][..]] {
            let chosen = choose(
                &RuntimeChoice::Auto,
                &daemon(&[RUNC, ("runsc", "runsc", args)]),
                "runc",
            )
            .unwrap();
            assert_eq!(chosen.runtime, None, "{args:?}");
            let (why, fix) = chosen.warning.unwrap();
            assert!(why.contains("bypass the bottle's firewall"), "{why}");
            assert!(fix.contains("--network=host"), "{fix}");
        }
        let none = choose(&RuntimeChoice::Auto, &daemon(&[RUNC]), "runc").unwrap();
        assert_eq!(none.runtime, None);
        assert_eq!(none.summary, "runtime runc (the daemon's default)");
        assert_eq!(
            none.warning.unwrap().0,
            "gVisor (runsc) is not registered with dockerd; bottles use the daemon's default runtime"
        );
    }

    /// With `"default-runtime"` set to a gVisor, the automatic choice's "the daemon's
    /// default" is that gVisor: refused outside host network mode (it would bypass the
    /// firewall), taken by name in it.
    #[test]
    fn auto_refuses_a_default_runtime_that_is_gvisor_outside_host_network_mode() {
        for (name, path) in [
            ("runsc", "/usr/bin/runsc"),
            ("gvisor", "/usr/local/bin/runsc"),
        ] {
            let runtimes = daemon(&[RUNC, (name, path, &["--network=sandbox"])]);
            let refused = choose(&RuntimeChoice::Auto, &runtimes, name).unwrap_err();
            assert_eq!(
                refused.reason,
                format!(
                    "dockerd's default runtime `{name}` is gVisor registered with --network=sandbox: gVisor's own network stack would send the agent's packets past the bottle's firewall"
                )
            );
            assert!(refused.fix.contains("--network=host"), "{}", refused.fix);
            assert!(
                refused.fix.contains("BOT_BOTTLE_DOCKER_RUNTIME=runc"),
                "{}",
                refused.fix
            );
            // Naming runc explicitly still runs bottles on such a daemon.
            let runc = choose(&RuntimeChoice::Named("runc".into()), &runtimes, name).unwrap();
            assert_eq!(runc.runtime.as_deref(), Some("runc"));
        }
        let runtimes = daemon(&[
            RUNC,
            ("gvisor", "/usr/local/bin/runsc", &["--network=host"]),
        ]);
        assert_eq!(
            choose(&RuntimeChoice::Auto, &runtimes, "gvisor"),
            Ok(Chosen {
                runtime: Some("gvisor".into()),
                summary: "runtime gvisor (gVisor, the daemon's default)".into(),
                warning: None,
                gvisor: true,
            })
        );
        // A runsc in host mode is still preferred to a default of another name.
        let both = daemon(&[
            RUNC,
            ("runsc", "/usr/bin/runsc", &["--network=host"]),
            ("gvisor", "/usr/local/bin/runsc", &[]),
        ]);
        assert_eq!(
            choose(&RuntimeChoice::Auto, &both, "gvisor")
                .unwrap()
                .runtime
                .as_deref(),
            Some("runsc")
        );
    }

    #[test]
    fn a_named_runtime_must_be_listed_and_a_named_gvisor_must_be_covered_by_the_firewall() {
        let runtimes = daemon(&[
            RUNC,
            ("runsc", "/usr/bin/runsc", &["--network=host"]),
            ("gvisor-netstack", "/usr/local/bin/runsc", &[]),
        ]);
        let runc = choose(&RuntimeChoice::Named("runc".into()), &runtimes, "runc").unwrap();
        assert_eq!(runc.runtime.as_deref(), Some("runc"));
        assert_eq!(
            runc.summary,
            "runtime runc (BOT_BOTTLE_DOCKER_RUNTIME=runc)"
        );
        assert!(runc.warning.unwrap().0.contains("opts out of it"));
        assert_eq!(
            choose(&RuntimeChoice::Named("kata".into()), &runtimes, "runc"),
            Err(Refused {
                reason: "BOT_BOTTLE_DOCKER_RUNTIME names the runtime `kata`, which dockerd does not list (it lists: gvisor-netstack, runc, runsc)".into(),
                fix: "register `kata` in /etc/docker/daemon.json and reload dockerd, or unset BOT_BOTTLE_DOCKER_RUNTIME".into(),
            })
        );
        let refused = choose(
            &RuntimeChoice::Named("gvisor-netstack".into()),
            &runtimes,
            "runc",
        )
        .unwrap_err();
        assert!(
            refused.reason.contains("--network=sandbox"),
            "{}",
            refused.reason
        );
        let runsc = choose(&RuntimeChoice::Named("runsc".into()), &runtimes, "runc").unwrap();
        assert_eq!(runsc.runtime.as_deref(), Some("runsc"));
        assert_eq!(runsc.warning, None);
        assert!(runsc.gvisor && !runc.gvisor);
    }

    #[test]
    fn under_gvisor_the_pid_limit_counts_the_sandbox_host_tasks() {
        assert_eq!(host_pids_limit(false, 1024), 1024);
        assert_eq!(host_pids_limit(true, 1024), 10240);
        assert_eq!(host_pids_limit(true, 0), 0);
        assert_eq!(host_pids_limit(true, -1), -1);
        assert_eq!(host_pids_limit(true, i64::MAX), i64::MAX);
    }
}
