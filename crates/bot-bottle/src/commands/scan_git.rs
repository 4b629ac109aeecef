//! The git modes of `bot-bottle scan`: `--git RANGE`, gitleaks' `--log-opts` and `--staged`.
//!
//! `--log-opts` is passed to `git log` the way gitleaks passes it: split on spaces, in order,
//! after the scan's own options (so `--all`, several ranges, `--since=…`, `--not` all mean
//! what they mean to git). Only what would change the output the scan reads, write a file or
//! run a program is refused, with the option named.

use anyhow::bail;

/// Options of `git log` that `--log-opts` may not carry, and why.
const REFUSED: [(&str, &str); 9] = [
    ("--output", "writes the output to a file"),
    ("--ext-diff", "runs an external diff program"),
    (
        "--textconv",
        "runs the repository's text conversion programs",
    ),
    ("--format", "changes the output format the scan reads"),
    ("--pretty", "changes the output format the scan reads"),
    ("--oneline", "changes the output format the scan reads"),
    ("--stdin", "reads revisions from standard input"),
    ("--color", "changes the output format the scan reads"),
    ("--word-diff", "changes the output format the scan reads"),
];

/// The revision arguments of a git-mode scan: the `--git` range, then the `--log-opts` words.
pub fn rev_args(range: Option<&str>, log_opts: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut args = Vec::new();
    if let Some(range) = range {
        if range.starts_with('-') || range.trim().is_empty() {
            bail!("invalid git range `{range}`: give a revision range such as main..HEAD");
        }
        args.push(range.to_string());
    }
    if let Some(opts) = log_opts {
        let words: Vec<&str> = opts.split(' ').filter(|w| !w.is_empty()).collect();
        if words.is_empty() {
            bail!(
                "--log-opts is empty: give git log options or ranges, e.g. --log-opts=\"--all\" \
                 or --log-opts=\"main..dev\""
            );
        }
        for w in words {
            let name = w.split('=').next().unwrap_or(w);
            if let Some((opt, why)) = REFUSED.iter().find(|(opt, _)| refused(name, opt)) {
                bail!(
                    "--log-opts: `{w}` ({opt}) {why}; leave it out (the scan chooses how git \
                     shows the commits)"
                );
            }
            args.push(w.to_string());
        }
    }
    Ok(args)
}

/// Whether `name` is `opt`, a longer form of it (`--color-words`) or an abbreviation git
/// would take for it (`--outp`); `--text`, a whole option of its own, is not `--textconv`.
fn refused(name: &str, opt: &str) -> bool {
    name.starts_with(opt) || (name.len() >= 4 && opt.starts_with(name) && name != "--text")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_opts_are_split_on_spaces_after_the_range() {
        assert_eq!(
            rev_args(Some("main..HEAD"), Some(" --all  --since=2024-01-01 ")).unwrap(),
            vec!["main..HEAD", "--all", "--since=2024-01-01"]
        );
        assert_eq!(
            rev_args(None, Some("a..b c..d")).unwrap(),
            vec!["a..b", "c..d"]
        );
        assert_eq!(rev_args(Some("HEAD"), None).unwrap(), vec!["HEAD"]);
    }

    #[test]
    fn options_that_write_run_or_reformat_are_refused_by_name() {
        for bad in [
            "--output=/tmp/x",
            "--ext-diff",
            "--textconv",
            "--format=%H",
            "--pretty=oneline",
            "--oneline",
            "--stdin",
            "--outp=/tmp/x",
            "--color=always",
            "--color-words",
        ] {
            let err = rev_args(None, Some(&format!("--all {bad}")))
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
        assert!(rev_args(None, Some("--text --no-color --no-merges --first-parent")).is_ok());
        assert!(rev_args(None, Some("   ")).is_err());
        assert!(rev_args(Some("--all"), None).is_err());
    }
}
