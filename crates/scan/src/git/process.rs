//! Running git for a scan: the `git log -p` and `git rev-list` commands, the children a
//! watchdog stops at the timeout, the threads that feed a `git log` its commit ids, keep its
//! stderr and hand its output to the parser, and the decision whether a range may be split.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::GitScanRequest;
use super::parse::{OwnedFragment, ParseEnd, ParsePlan, parse_log};
use crate::error::ScanError;

/// How much of git's stderr is kept for error messages.
const STDERR_KEEP: usize = 16 * 1024;
/// Read buffer for git's output.
const READ_BUF: usize = 256 * 1024;
/// Above this many commits the list is not kept in memory and the range is not split.
const SPLIT_MAX_COMMITS: usize = 100_000;

/// The `git log -p` command every scan runs; `rev_args` of `None` means commit ids on stdin,
/// each shown on its own (`--stdin --no-walk=unsorted`), in the order given.
pub(crate) fn git_command(req: &GitScanRequest, sub: &str) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(&req.repo)
        .args([
            "-c",
            "core.quotePath=false",
            "-c",
            "log.showSignature=false",
            "-c",
            "diff.noprefix=false",
            "-c",
            "log.showRoot=true",
            sub,
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .envs(req.env.iter().map(|(k, v)| (k, v)));
    cmd
}

const LOG_ARGS: [&str; 12] = [
    "--patch",
    "--text",
    "--diff-merges=dense-combined",
    "--find-renames",
    "--unified=0",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--format=%x00%H",
];

pub(super) fn log_command(req: &GitScanRequest, stdin_ids: bool) -> Command {
    let mut cmd = git_command(req, "log");
    cmd.args(LOG_ARGS);
    if stdin_ids {
        cmd.args(["--stdin", "--no-walk=unsorted"]);
    } else {
        cmd.args(&req.rev_args);
    }
    cmd.arg("--")
        .stdin(if stdin_ids {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The children the watchdog stops at the timeout.
pub(crate) type Children = Arc<Mutex<ChildList>>;

#[derive(Default)]
pub(crate) struct ChildList {
    /// Set by the watchdog: a child started after the timeout is stopped at once.
    pub(crate) stopped: bool,
    pub(crate) list: Vec<Arc<Mutex<Child>>>,
}

/// Adds a child for the watchdog (stopping it if the timeout has already passed).
pub(crate) fn watch(children: &Children, child: &Arc<Mutex<Child>>) {
    if let Ok(mut c) = children.lock() {
        c.list.push(Arc::clone(child));
        if c.stopped
            && let Ok(mut child) = child.lock()
        {
            let _ = child.kill();
        }
    }
}

/// Kills every git process of a scan when it runs past the timeout.
pub(super) struct Watchdog {
    done: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    /// Starts the timer for `children`.
    pub(super) fn start(children: &Children, timeout: Duration) -> Self {
        let (done, done_rx) = mpsc::channel::<()>();
        let children = Arc::clone(children);
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
                if let Ok(mut list) = children.lock() {
                    list.stopped = true;
                    for child in list.list.iter() {
                        if let Ok(mut c) = child.lock() {
                            let _ = c.kill();
                        }
                    }
                }
                return true;
            }
            false
        });
        Self { done, thread }
    }

    /// Stops the timer; whether the timeout had passed (and the children were killed).
    pub(super) fn finish(self) -> bool {
        let _ = self.done.send(());
        self.thread.join().unwrap_or(false)
    }
}

/// One running `git log` and the threads reading it.
pub(super) struct LogProc {
    pub(super) child: Arc<Mutex<Child>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    parser: std::thread::JoinHandle<std::io::Result<ParseEnd>>,
}

/// The parsed fragments of one stream, in batches.
pub(super) type Batches = mpsc::Receiver<Vec<OwnedFragment>>;

/// Starts `cmd` under the watchdog.
pub(crate) fn spawn_child(
    mut cmd: Command,
    children: &Children,
    git_err: &dyn Fn(String) -> ScanError,
) -> Result<Arc<Mutex<Child>>, ScanError> {
    let child = cmd
        .spawn()
        .map_err(|e| git_err(format!("cannot run git: {e}; is git installed?")))?;
    let child = Arc::new(Mutex::new(child));
    watch(children, &child);
    Ok(child)
}

/// Starts the threads that feed `ids` to the child's stdin (if any), keep its stderr and
/// parse its output.
pub(super) fn read_log(
    child: Arc<Mutex<Child>>,
    stdin_ids: Option<Vec<String>>,
    plan: ParsePlan,
    git_err: &dyn Fn(String) -> ScanError,
) -> Result<(LogProc, Batches), ScanError> {
    let pipes = child
        .lock()
        .map(|mut c| (c.stdin.take(), c.stdout.take(), c.stderr.take()))
        .ok();
    let Some((stdin, Some(stdout), Some(mut stderr))) = pipes else {
        if let Ok(mut c) = child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
        return Err(git_err("cannot read git's output".into()));
    };
    if let (Some(ids), Some(mut stdin)) = (stdin_ids, stdin) {
        std::thread::spawn(move || {
            let mut w = std::io::BufWriter::new(&mut stdin);
            for id in ids {
                if w.write_all(id.as_bytes()).is_err() || w.write_all(b"\n").is_err() {
                    return;
                }
            }
            let _ = w.flush();
        });
    }
    let stderr = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(STDERR_KEEP as u64).read_to_end(&mut buf);
        // Drain the rest so git never blocks on a full pipe.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        buf
    });
    // Parser thread -> bounded channel of batches -> scanning on the rayon pool.
    let (batch_tx, batches) = mpsc::sync_channel::<Vec<OwnedFragment>>(2);
    let parser = std::thread::spawn(move || {
        parse_log(BufReader::with_capacity(READ_BUF, stdout), &batch_tx, &plan)
    });
    Ok((
        LogProc {
            child,
            stderr,
            parser,
        },
        batches,
    ))
}

/// Whether the second process, which gets commit ids instead of `rev_args`, shows those commits
/// exactly as the first one does: the arguments only name commits or choose which ones and in
/// what order. Anything else (diff or format options) keeps the one `git log`.
pub(super) fn splittable(rev_args: &[String]) -> bool {
    const FLAGS: [&str; 12] = [
        "--not",
        "--all",
        "--branches",
        "--tags",
        "--remotes",
        "--topo-order",
        "--date-order",
        "--author-date-order",
        "--reverse",
        "--no-merges",
        "--merges",
        "--first-parent",
    ];
    const WITH_VALUE: [&str; 12] = [
        "--branches=",
        "--tags=",
        "--remotes=",
        "--glob=",
        "--exclude=",
        "--max-count=",
        "--skip=",
        "--since=",
        "--until=",
        "--after=",
        "--before=",
        "--author=",
    ];
    rev_args.iter().all(|a| {
        !a.starts_with('-')
            || FLAGS.contains(&a.as_str())
            || WITH_VALUE.iter().any(|p| a.starts_with(p))
    })
}

/// Lists the range's commits with `git rev-list` (same revision arguments, hence the order
/// `git log` shows them in). `None` when that fails or the list is too long to keep: the scan
/// then relies on the one `git log` alone, which reports any error itself.
pub(super) fn list_commits(req: &GitScanRequest, children: &Children) -> Option<Vec<String>> {
    let mut cmd = git_command(req, "rev-list");
    cmd.args(&req.rev_args)
        .arg("--")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().ok()?;
    let stdout = child.stdout.take();
    let child = Arc::new(Mutex::new(child));
    watch(children, &child);
    let mut ids = Vec::new();
    let mut complete = stdout.is_some();
    if let Some(stdout) = stdout {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) if ids.len() < SPLIT_MAX_COMMITS => ids.push(line),
                _ => {
                    complete = false;
                    break;
                }
            }
        }
    }
    let mut c = child.lock().ok()?;
    if !complete {
        let _ = c.kill();
    }
    let status = c.wait().ok()?;
    (status.success() && complete).then_some(ids)
}

/// Waits for a `git log` whose output has been read; a process stopped on purpose (its parser
/// reached the planned stop, or `may_stop` and it was killed) is not an error.
pub(super) fn finish_log(
    proc: LogProc,
    may_stop: bool,
    git_err: &dyn Fn(String) -> ScanError,
) -> Result<ParseEnd, ScanError> {
    let parsed = proc
        .parser
        .join()
        .map_err(|_| git_err("the git output parser failed".into()))?;
    let stopped = matches!(parsed, Ok(ParseEnd::Stopped));
    let status = proc
        .child
        .lock()
        .map_err(|_| git_err("lost track of the git process".into()))
        .and_then(|mut c| {
            if stopped && may_stop {
                let _ = c.kill();
            }
            c.wait()
                .map_err(|e| git_err(format!("waiting for git: {e}")))
        });
    let stderr = proc.stderr.join().unwrap_or_default();
    let status = status?;
    let end = parsed.map_err(|e| git_err(format!("reading git output: {e}")))?;
    if stopped && may_stop {
        return Ok(end);
    }
    if !status.success() {
        return Err(git_err(git_stderr_message(&stderr, status)));
    }
    Ok(end)
}

/// What a failed git process said, on one line (or its exit status if it said nothing).
pub(super) fn git_stderr_message(stderr: &[u8], status: std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    let msg = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if msg.is_empty() {
        format!("git log failed ({status})")
    } else {
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn only_arguments_that_choose_commits_allow_a_split() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for ok in [
            &["main..HEAD"][..],
            &["abc", "--not", "--all"],
            &["^a", "b", "--topo-order", "--max-count=9"],
            &["--branches=x*", "--exclude=y"],
        ] {
            assert!(splittable(&args(ok)), "{ok:?}");
        }
        for no in [
            &["HEAD", "-w"][..],
            &["HEAD", "--ignore-all-space"],
            &["HEAD", "--stdin"],
            &["HEAD", "--boundary"],
            &["HEAD", "-M90%"],
        ] {
            assert!(!splittable(&args(no)), "{no:?}");
        }
    }

    fn git(dir: &std::path::Path, args: &[&str]) -> Vec<u8> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@example.invalid",
            ])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .unwrap();
        out.stdout
    }

    /// The raw patch text of the two processes of a split scan, put together, is byte for byte
    /// the text of the one `git log` over the range: same commits, same order, same diffs
    /// (merges as dense combined diffs, renames, binary files, root commit).
    #[test]
    fn split_git_log_output_is_identical_to_one_git_log() {
        if Command::new("git").arg("--version").output().is_err() {
            eprintln!("skipping: git is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q", "-b", "main"]);
        let body: String = (0..30).map(|i| format!("filler {i}\n")).collect();
        let commit = |msg: &str| {
            git(d, &["add", "-A"]);
            git(d, &["commit", "-q", "--allow-empty", "-m", msg]);
        };
        std::fs::write(d.join("shared"), "a\nb\nc\n").unwrap();
        commit("root");
        for round in 0..4 {
            git(d, &["checkout", "-q", "-b", &format!("side{round}")]);
            for i in 0..5 {
                std::fs::write(d.join(format!("s{round}_{i}")), format!("{body}{i}\n")).unwrap();
                std::fs::write(d.join(format!("b{round}_{i}.bin")), [0u8, 1, 255, i]).unwrap();
                if i == 2 {
                    git(d, &["mv", &format!("s{round}_0"), &format!("m{round}")]);
                    std::fs::write(d.join(format!("m{round}")), format!("{body}0\nnew\n")).unwrap();
                }
                commit(&format!("side {round} {i}"));
            }
            std::fs::write(d.join("shared"), format!("a\nside {round}\nc\n")).unwrap();
            commit("side edit");
            git(d, &["checkout", "-q", "main"]);
            for i in 0..4 {
                std::fs::write(d.join(format!("t{round}_{i}")), format!("{i}\n")).unwrap();
                commit(&format!("main {round} {i}"));
            }
            std::fs::write(d.join("shared"), format!("a\nmain {round}\nc\n")).unwrap();
            commit("main edit");
            git(
                d,
                &[
                    "merge",
                    "-q",
                    "--no-ff",
                    "--no-commit",
                    &format!("side{round}"),
                ],
            );
            std::fs::write(d.join("shared"), format!("a\nresolved {round}\nc\nevil\n")).unwrap();
            commit("merge");
        }
        for rev_args in [
            vec!["HEAD"],
            vec!["HEAD~2..HEAD"],
            vec!["HEAD", "--not", "side1"],
        ] {
            let req = GitScanRequest {
                repo: d.to_path_buf(),
                rev_args: rev_args.iter().map(|s| s.to_string()).collect(),
                env: vec![],
            };
            let whole = log_command(&req, false).output().unwrap();
            assert!(whole.status.success());
            let ids: Vec<String> = String::from_utf8(git(
                d,
                &[&["rev-list"][..], &rev_args[..], &["--"][..]].concat(),
            ))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
            assert!(ids.len() > 2, "{rev_args:?}");
            let text = String::from_utf8_lossy(&whole.stdout).into_owned();
            assert!(text.contains("diff --cc shared"));
            assert!(text.contains("rename from"));
            // Binary files are shown as text, never as "Binary files … differ".
            assert!(!text.contains("Binary files"));
            assert!(text.contains(".bin") || rev_args[0] == "HEAD~2..HEAD");
            for cut in [1, ids.len() / 2, ids.len() - 1] {
                let mut second = log_command(&req, true).spawn().unwrap();
                let mut stdin = second.stdin.take().unwrap();
                stdin
                    .write_all((ids[cut..].join("\n") + "\n").as_bytes())
                    .unwrap();
                drop(stdin);
                let second = second.wait_with_output().unwrap();
                assert!(second.status.success());
                let at = format!("\0{}\n", ids[cut]);
                let split = whole
                    .stdout
                    .windows(at.len())
                    .position(|w| w == at.as_bytes())
                    .unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&second.stdout),
                    String::from_utf8_lossy(&whole.stdout[split..]),
                    "{rev_args:?} cut at {cut}"
                );
            }
        }
    }
}
