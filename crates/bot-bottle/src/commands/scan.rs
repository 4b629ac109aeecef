//! `bot-bottle scan`: look for secrets in files or git commits.
//!
//! Exit codes: 0 nothing found, 1 findings, 2 error (bad rule file, unreadable path, bad range).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use scan::compat::{ConfigSource, ProcessEnv};
use scan::{Baseline, Format, GitScanRequest, RuleSet, ScanOptions, Scanner};

/// Exit code when secrets were found.
const FOUND: u8 = 1;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories to scan (`-` for stdin) [default: .]
    pub paths: Vec<PathBuf>,
    /// Scan the added lines of the commits in this git range instead (e.g. main..HEAD);
    /// the repository is the one PATH given, or the current directory
    #[arg(long, value_name = "RANGE")]
    pub git: Option<String>,
    /// gitleaks' --log-opts: options and ranges for `git log`, split on spaces (e.g. "--all",
    /// "main..dev v1..v2", "--since=2024-01-01"); implies git mode, after --git's RANGE if given
    #[arg(long, value_name = "OPTS", allow_hyphen_values = true)]
    pub log_opts: Option<String>,
    /// Scan what is staged for the next commit (the index against HEAD), as a pre-commit hook
    /// does; the repository is the one PATH given, or the current directory
    #[arg(long, conflicts_with_all = ["git", "log_opts"])]
    pub staged: bool,
    /// gitleaks-format rule file (`[extend] useDefault = true` layers it on the built-in rules);
    /// without it, as gitleaks: $GITLEAKS_CONFIG, $GITLEAKS_CONFIG_TOML, then .gitleaks.toml
    /// in the scanned directory, else the built-in rules
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format: text, json, sarif, gitleaks (gitleaks' JSON report)
    #[arg(long, short = 'f', default_value = "text", value_parser = ["text", "json", "sarif", "gitleaks"])]
    pub format: String,
    /// A .gitleaksignore file, or a directory holding one (read with the one in the scanned
    /// directory; their fingerprints are not reported)
    #[arg(long, short = 'i', value_name = "PATH", default_value = ".")]
    pub gitleaks_ignore_path: PathBuf,
    /// How many times encoded text (base64, hex, percent, \u escapes) is decoded and scanned
    /// again; 0 switches decoding off
    #[arg(long, value_name = "N", default_value_t = scan::DEFAULT_MAX_DECODE_DEPTH)]
    pub max_decode_depth: usize,
    /// Open archives and compressed files (zip, tar, gz, xz, zst) nested up to this depth;
    /// 0 lists them as skipped. Archive bombs are refused
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_archive_depth: usize,
    /// Show secrets in full instead of redacted
    #[arg(long)]
    pub no_redact: bool,
    /// Approved findings: a JSON report (ours or gitleaks') or a list of fingerprints, one per
    /// line (`#` comments)
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Ignore inline `gitleaks:allow` markers
    #[arg(long)]
    pub no_inline_allow: bool,
    /// Skip files larger than this many bytes (skipped files are listed with -v)
    #[arg(long, value_name = "BYTES", default_value_t = scan::DEFAULT_MAX_FILE_SIZE)]
    pub max_file_size: u64,
    /// Also scan files that .gitignore and .ignore exclude
    #[arg(long)]
    pub no_ignore: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let format: Format = args
        .format
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    // The directory gitleaks would call the source: the repository, or the one directory
    // scanned; its .gitleaks.toml and .gitleaksignore are read as gitleaks reads them.
    let source: Option<PathBuf> = match (args.git.is_some(), args.paths.as_slice()) {
        (_, []) => Some(PathBuf::from(".")),
        (_, [one]) if one.is_dir() => Some(one.clone()),
        _ => None,
    };
    let (rules, rule_file) = load_rules(args.config.as_deref(), source.as_deref())?;
    let mut scanner = Scanner::from_rules(rules).with_options(ScanOptions {
        honor_inline_allow: !args.no_inline_allow,
        max_file_size: args.max_file_size,
        respect_gitignore: !args.no_ignore,
        max_decode_depth: args.max_decode_depth,
        max_archive_depth: args.max_archive_depth,
        ..ScanOptions::default()
    });
    let mut approved = Baseline::new();
    for file in scan::compat::gitleaksignore_files(
        &ProcessEnv,
        &args.gitleaks_ignore_path,
        source.as_deref(),
    ) {
        tracing::info!("findings listed in {} are not reported", file.display());
        approved.extend(Baseline::from_file(&file)?);
    }
    if let Some(path) = &args.baseline {
        approved.extend(Baseline::from_file(path)?);
    }
    // gitleaks does not scan its own config file and baseline; neither do we.
    if let Some(path) = &rule_file {
        scanner = scanner.with_own_file(path, "the rule file in use");
    }
    if let Some(path) = &args.baseline {
        scanner = scanner.with_own_file(path, "the baseline");
    }
    if !approved.is_empty() {
        scanner = scanner.with_baseline(approved);
    }

    let git_mode = args.git.is_some() || args.log_opts.is_some();
    let (findings, summary) = match (git_mode, args.staged) {
        (true, _) | (_, true) => {
            let repo = match args.paths.as_slice() {
                [] => PathBuf::from("."),
                [one] => one.clone(),
                _ => bail!("a git scan reads one repository; give at most one PATH"),
            };
            if args.staged {
                let findings = scanner.scan_staged(&repo)?;
                (findings, "staged changes".to_string())
            } else {
                let rev_args =
                    super::scan_git::rev_args(args.git.as_deref(), args.log_opts.as_deref())?;
                let summary = format!("git log {}", rev_args.join(" "));
                let req = GitScanRequest {
                    repo,
                    rev_args,
                    env: Vec::new(),
                };
                (scanner.scan_git(&req)?, summary)
            }
        }
        (false, false) => {
            let paths = if args.paths.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                args.paths.clone()
            };
            let result = scanner.scan_paths(&paths)?;
            for s in &result.skipped {
                if s.reason.contains("archive bomb") {
                    tracing::warn!("{}: {}", s.path, s.reason);
                } else {
                    tracing::info!("skipped {}: {}", s.path, s.reason);
                }
            }
            let summary = format!(
                "{} file(s), {} byte(s), {} skipped",
                result.files,
                result.bytes,
                result.skipped.len()
            );
            (result.findings, summary)
        }
    };

    let out = scan::render(
        format,
        &findings,
        &scanner.rule_infos(),
        !args.no_redact,
        env!("CARGO_PKG_VERSION"),
    );
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write the report")?;
    if format == Format::Text {
        match findings.len() {
            0 => eprintln!("no secrets found ({summary})"),
            n => eprintln!("found {n} secret(s) ({summary})"),
        }
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FOUND)
    })
}

/// The rules, from where gitleaks would take them (see `scan::compat::find_config`), and the
/// rule file they were read from; what loading decided is said with -v, what it ignored
/// always.
fn load_rules(
    explicit: Option<&std::path::Path>,
    source: Option<&std::path::Path>,
) -> anyhow::Result<(RuleSet, Option<PathBuf>)> {
    let cwd = std::env::current_dir().ok();
    let mut file = None;
    let rules = match scan::compat::find_config(&ProcessEnv, explicit, source) {
        ConfigSource::File(path, why) => {
            tracing::info!("rules from {} ({why})", path.display());
            let rules =
                RuleSet::from_file_in(&path, cwd.as_deref()).context("cannot load the rules")?;
            file = Some(path);
            rules
        }
        ConfigSource::Toml(text) => {
            tracing::info!("rules from GITLEAKS_CONFIG_TOML");
            RuleSet::from_toml_str_in(&text, "GITLEAKS_CONFIG_TOML", None, cwd.as_deref())
                .context("cannot load the rules")?
        }
        ConfigSource::Builtin => RuleSet::builtin().context("cannot load the built-in rules")?,
    };
    for note in &rules.notes {
        tracing::info!("{note}");
    }
    for warning in &rules.warnings {
        tracing::warn!("{warning}");
    }
    Ok((rules, file))
}
