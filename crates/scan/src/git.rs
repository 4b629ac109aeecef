//! Scanning the lines that commits add, from a streamed `git log -p`.
//!
//! Merge commits are shown as a dense combined diff (`--diff-merges=dense-combined`): only the
//! lines a merge adds relative to *every* parent (conflict resolutions, "evil merge" edits) are
//! scanned for the merge. Lines it brings in from a parent belong to that parent's commits,
//! which are scanned themselves when they are in the range, and were accepted earlier when they
//! are not. Renames are detected (`-M`): a pure rename adds no lines, and lines added to a renamed
//! file are reported under its new path.
//!
//! Binary blobs are diffed as text (`--text`): a file with a zero byte in it is scanned like
//! any other, its lines as git splits them (UTF-16 text and encoded runs are looked into by the
//! engine).
//!
//! Ranges of more than [`SPLIT_MIN_COMMITS`] commits are listed with `git rev-list` and split in
//! two halves: the `git log` over the range is read up to the second half, which a second
//! `git log --stdin --no-walk=unsorted` shows at the same time; findings come back in git's
//! order, the same as from the one `git log`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rayon::prelude::*;

use crate::engine::{Engine, Fragment};
use crate::error::ScanError;
use crate::finding::Finding;

/// Fragments are handed to the scanning threads in batches of about this many bytes.
const BATCH_BYTES: usize = 4 << 20;
/// How much of git's stderr is kept for error messages.
const STDERR_KEEP: usize = 16 * 1024;
/// Read buffer for git's output.
const READ_BUF: usize = 256 * 1024;

/// What to scan in a repository: the commits `git rev-list <rev_args>` lists.
#[derive(Debug, Clone, Default)]
pub struct GitScanRequest {
    /// The repository (work tree or bare / `.git` directory).
    pub repo: PathBuf,
    /// Raw revision arguments for `git log`, e.g. `["main..HEAD"]` or
    /// `["<new>", "--not", "--all"]`. Trusted: they are passed to git as they are.
    pub rev_args: Vec<String>,
    /// Extra environment for the git subprocess (e.g. `GIT_OBJECT_DIRECTORY` and
    /// `GIT_ALTERNATE_OBJECT_DIRECTORIES` inside a receive quarantine).
    pub env: Vec<(OsString, OsString)>,
}

impl GitScanRequest {
    /// A request for one range (`A..B`, a single commit means all its history).
    pub fn range(repo: impl Into<PathBuf>, range: &str) -> Self {
        Self {
            repo: repo.into(),
            rev_args: vec![range.to_string()],
            env: Vec::new(),
        }
    }

    pub(crate) fn describe(&self) -> String {
        self.rev_args.join(" ")
    }
}

/// The added lines of one file in one commit.
#[derive(Debug, Default)]
struct OwnedFragment {
    commit: String,
    path: String,
    data: Vec<u8>,
    line_map: Vec<u32>,
}

/// Ranges with more commits than this are split in two halves scanned by two `git log`
/// processes side by side (git producing the patch is most of the work). Below it, the one
/// `git log` over the range is all there is: the `git rev-list` that counts the commits runs
/// while that `git log` starts, so a small push does not wait for it.
pub(crate) const SPLIT_MIN_COMMITS: usize = 16;
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

fn log_command(req: &GitScanRequest, stdin_ids: bool) -> Command {
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

/// One running `git log` and the threads reading it.
struct LogProc {
    child: Arc<Mutex<Child>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    parser: std::thread::JoinHandle<std::io::Result<ParseEnd>>,
}

type Batches = mpsc::Receiver<Vec<OwnedFragment>>;

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
fn read_log(
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
fn splittable(rev_args: &[String]) -> bool {
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
fn list_commits(req: &GitScanRequest, children: &Children) -> Option<Vec<String>> {
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

/// Runs `git log -p` for the request and scans what each commit adds; ranges of more than
/// `split_min` commits are split between two `git log` processes.
pub(crate) fn scan_git(
    engine: &Engine,
    req: &GitScanRequest,
    timeout: Duration,
    split_min: usize,
) -> Result<Vec<Finding>, ScanError> {
    let git_err = |message: String| ScanError::Git {
        repo: req.repo.clone(),
        range: req.describe(),
        message,
    };
    let children: Children = Arc::default();
    // The `git log` over the whole range starts first: a small range never waits for the
    // listing, and a missing git fails here as it always did.
    let first = spawn_child(log_command(req, false), &children, &git_err)?;

    // Watchdog: kills every git process when the scan runs past the timeout.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = {
        let children = Arc::clone(&children);
        std::thread::spawn(move || {
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
        })
    };
    let result = run_scan(engine, req, split_min, &children, first, &git_err);
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    if timed_out {
        return Err(git_err(format!(
            "git log did not finish within {} s and was stopped",
            timeout.as_secs()
        )));
    }
    result
}

fn run_scan(
    engine: &Engine,
    req: &GitScanRequest,
    split_min: usize,
    children: &Children,
    first: Arc<Mutex<Child>>,
    git_err: &dyn Fn(String) -> ScanError,
) -> Result<Vec<Finding>, ScanError> {
    let ids = if split_min == usize::MAX || !splittable(&req.rev_args) {
        None
    } else {
        list_commits(req, children).filter(|ids| ids.len() > split_min && ids.len() >= 2)
    };
    let Some(mut ids) = ids else {
        let (proc, batches) = read_log(first, None, ParsePlan::whole(BATCH_BYTES), git_err)?;
        let findings = scan_batches(engine, batches);
        finish_log(proc, false, git_err)?;
        return Ok(findings);
    };
    // Two halves: the first `git log` stops where the second half starts; the second shows
    // exactly those commits, each against its own parents, in the listed order.
    let second_ids = ids.split_off(ids.len() / 2);
    let second = spawn_child(log_command(req, true), children, git_err).ok();
    let plan = match second {
        Some(_) => ParsePlan {
            batch_bytes: BATCH_BYTES / 2,
            expect: ids,
            stop: second_ids.first().cloned(),
        },
        None => ParsePlan::whole(BATCH_BYTES),
    };
    let (first, first_batches) = read_log(first, None, plan, git_err)?;
    let (second, second_batches) = match second {
        Some(child) => read_log(
            child,
            Some(second_ids),
            ParsePlan::whole(BATCH_BYTES / 2),
            git_err,
        )
        .map(|(p, b)| (Some(p), Some(b)))?,
        None => (None, None),
    };
    let (first_found, second_found) = std::thread::scope(|s| {
        let second_scan = second_batches.map(|b| s.spawn(|| scan_batches(engine, b)));
        let first_found = scan_batches(engine, first_batches);
        (first_found, second_scan.map(|h| h.join()))
    });
    let mut findings = first_found;
    let end = finish_log(first, true, git_err)?;
    match (end, second, second_found) {
        // The first process stopped where planned: the second one covers the rest.
        (ParseEnd::Stopped, Some(second), Some(Ok(rest))) => {
            finish_log(second, false, git_err)?;
            findings.extend(rest);
            Ok(findings)
        }
        (ParseEnd::Stopped, _, _) => Err(git_err("the git output parser failed".into())),
        // The first process ran to the end (its order differed from the listing): it saw
        // every commit itself, so the second one is not needed.
        (ParseEnd::Whole, second, _) => {
            if let Some(second) = second {
                let _ = second.child.lock().map(|mut c| c.kill());
                let _ = finish_log(second, true, git_err);
            }
            Ok(findings)
        }
    }
}

/// Scans the batches of one stream, in order, on the rayon pool.
fn scan_batches(engine: &Engine, batches: Batches) -> Vec<Finding> {
    let mut findings = Vec::new();
    for batch in batches {
        let results: Vec<Vec<Finding>> = batch
            .par_iter()
            .map(|f| {
                let mut out = Vec::new();
                engine.scan(
                    &Fragment {
                        path: &f.path,
                        commit: Some(&f.commit),
                        data: &f.data,
                        line_map: Some(&f.line_map),
                    },
                    &mut out,
                );
                out
            })
            .collect();
        findings.extend(results.into_iter().flatten());
    }
    findings
}

/// Waits for a `git log` whose output has been read; a process stopped on purpose (its parser
/// reached the planned stop, or `may_stop` and it was killed) is not an error.
fn finish_log(
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
        let text = String::from_utf8_lossy(&stderr);
        let msg = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(git_err(if msg.is_empty() {
            format!("git log failed ({status})")
        } else {
            msg
        }));
    }
    Ok(end)
}

/// Where a stream's parser stops and what it checks on the way.
#[derive(Default)]
struct ParsePlan {
    batch_bytes: usize,
    /// The commits expected before `stop`, in order; a stream that shows anything else is read
    /// to its end instead.
    expect: Vec<String>,
    /// The commit at which the stream is no longer read.
    stop: Option<String>,
}

impl ParsePlan {
    fn whole(batch_bytes: usize) -> Self {
        Self {
            batch_bytes,
            ..Self::default()
        }
    }
}

/// How a stream's parsing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParseEnd {
    /// At the end of the output.
    Whole,
    /// At the planned stop.
    Stopped,
}

/// Parser state for one `git log -p` stream.
#[derive(Default)]
struct LogParser {
    commit: String,
    /// The current file's fragment (path empty until known).
    current: OwnedFragment,
    /// Inside a hunk (otherwise in a file header).
    in_hunk: bool,
    /// Number of parents in a combined diff (1 for a normal diff).
    parents: usize,
    /// Next line number on the new side.
    next_line: u32,
    batch: Vec<OwnedFragment>,
    batch_bytes: usize,
    /// Batches are handed over when they hold this many bytes.
    batch_limit: usize,
}

impl LogParser {
    fn flush_file(&mut self) {
        let f = std::mem::take(&mut self.current);
        if !f.data.is_empty() && !f.path.is_empty() {
            self.batch_bytes += f.data.len();
            self.batch.push(f);
        }
        self.in_hunk = false;
        self.parents = 1;
    }

    fn take_batch(&mut self) -> Option<Vec<OwnedFragment>> {
        if self.batch_bytes >= self.batch_limit {
            self.batch_bytes = 0;
            Some(std::mem::take(&mut self.batch))
        } else {
            None
        }
    }

    fn line(&mut self, line: &[u8]) {
        if let Some(rest) = line.strip_prefix(b"\0") {
            self.flush_file();
            self.commit = String::from_utf8_lossy(rest).trim().to_string();
            return;
        }
        if line.starts_with(b"diff --git ")
            || line.starts_with(b"diff --cc ")
            || line.starts_with(b"diff --combined ")
        {
            self.flush_file();
            self.current.commit = self.commit.clone();
            if let Some(p) = line
                .strip_prefix(b"diff --cc ")
                .or_else(|| line.strip_prefix(b"diff --combined "))
            {
                self.current.path = unquote(p);
            }
            return;
        }
        if !self.in_hunk {
            if let Some(p) = line.strip_prefix(b"+++ ") {
                if p != b"/dev/null" {
                    let p = unquote(p);
                    self.current.path = p.strip_prefix("b/").map(str::to_string).unwrap_or(p);
                }
                return;
            }
            if line.starts_with(b"@@") {
                self.hunk_header(line);
            }
            return;
        }
        if line.starts_with(b"@@") {
            self.hunk_header(line);
            return;
        }
        let n = self.parents;
        if line.len() < n {
            return;
        }
        let (prefix, content) = line.split_at(n);
        if prefix.iter().any(|&b| !matches!(b, b'+' | b'-' | b' ')) {
            // "\ No newline at end of file" and anything unexpected.
            return;
        }
        if prefix.contains(&b'-') {
            return;
        }
        if prefix.iter().all(|&b| b == b'+') {
            // Separators follow the lines kept so far, empty ones included, so that the n-th
            // line of the fragment is the n-th entry of its line map.
            if !self.current.line_map.is_empty() {
                self.current.data.push(b'\n');
            }
            self.current.data.extend_from_slice(content);
            self.current.line_map.push(self.next_line);
        }
        self.next_line = self.next_line.saturating_add(1);
    }

    /// `@@ -a,b +c,d @@` or `@@@ -a,b -c,d +e,f @@@`.
    fn hunk_header(&mut self, line: &[u8]) {
        let ats = line.iter().take_while(|&&b| b == b'@').count();
        self.parents = ats.saturating_sub(1).max(1);
        self.in_hunk = true;
        let text = String::from_utf8_lossy(line);
        self.next_line = text
            .split_whitespace()
            .skip(1)
            .find_map(|t| t.strip_prefix('+'))
            .and_then(|t| t.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
    }
}

/// What the reading loop does after a line.
enum Step {
    Go,
    /// The planned stop was reached.
    Stop,
    /// Nobody takes the batches any more.
    Quit,
}

fn parse_log<R: BufRead>(
    mut reader: R,
    tx: &mpsc::SyncSender<Vec<OwnedFragment>>,
    plan: &ParsePlan,
) -> std::io::Result<ParseEnd> {
    let mut p = LogParser {
        parents: 1,
        batch_limit: plan.batch_bytes,
        ..LogParser::default()
    };
    // Commits seen so far, while they follow the plan (`None` once the stream went its own way).
    let mut seen = plan.stop.as_ref().map(|_| 0usize);
    let mut step = |line: &[u8]| -> Step {
        if let (Some(n), Some(id)) = (seen, line.strip_prefix(b"\0")) {
            let id = id.trim_ascii();
            if let Some(want) = plan.expect.get(n) {
                seen = (want.as_bytes() == id).then_some(n + 1);
            } else if plan.stop.as_ref().is_some_and(|s| s.as_bytes() == id) {
                return Step::Stop;
            } else {
                seen = None;
            }
        }
        p.line(line);
        match p.take_batch().map(|batch| tx.send(batch)) {
            Some(Err(_)) => Step::Quit,
            _ => Step::Go,
        }
    };
    // Lines are handled where they sit in the read buffer; only a line cut by the buffer's end
    // is copied (into `partial`).
    let mut partial: Vec<u8> = Vec::new();
    let mut end = ParseEnd::Whole;
    'read: loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            if !partial.is_empty() {
                match step(&partial) {
                    Step::Go => {}
                    Step::Stop => end = ParseEnd::Stopped,
                    Step::Quit => return Ok(end),
                }
            }
            break;
        }
        let mut pos = 0;
        while let Some(nl) = memchr::memchr(b'\n', &chunk[pos..]) {
            let line = &chunk[pos..pos + nl];
            pos += nl + 1;
            let outcome = if partial.is_empty() {
                step(line)
            } else {
                partial.extend_from_slice(line);
                let o = step(&partial);
                partial.clear();
                o
            };
            match outcome {
                Step::Go => {}
                Step::Stop => {
                    end = ParseEnd::Stopped;
                    break 'read;
                }
                Step::Quit => return Ok(end),
            }
        }
        partial.extend_from_slice(&chunk[pos..]);
        let used = chunk.len();
        reader.consume(used);
    }
    p.flush_file();
    if !p.batch.is_empty() {
        let _ = tx.send(std::mem::take(&mut p.batch));
    }
    Ok(end)
}

/// Undoes git's C-style path quoting (`"b/a\tb"`); unquoted paths are returned as they are.
fn unquote(p: &[u8]) -> String {
    let Some(inner) = p.strip_prefix(b"\"").and_then(|s| s.strip_suffix(b"\"")) else {
        return String::from_utf8_lossy(p).into_owned();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b != b'\\' || i + 1 >= inner.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let e = inner[i + 1];
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut k = 0;
                while k < 2 && i < inner.len() && (b'0'..=b'7').contains(&inner[i]) {
                    v = v * 8 + u32::from(inner[i] - b'0');
                    i += 1;
                    k += 1;
                }
                out.push(u8::try_from(v & 0xff).unwrap_or(b'?'));
            }
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn parse(text: &str) -> Vec<(String, String, String, Vec<u32>)> {
        let (tx, rx) = mpsc::sync_channel(100);
        parse_log(text.as_bytes(), &tx, &ParsePlan::whole(BATCH_BYTES)).unwrap();
        drop(tx);
        rx.into_iter()
            .flatten()
            .map(|f| {
                (
                    f.commit,
                    f.path,
                    String::from_utf8(f.data).unwrap(),
                    f.line_map,
                )
            })
            .collect()
    }

    #[test]
    fn parses_added_lines_with_line_numbers() {
        let log = "\0aaaa\n\ndiff --git a/x.txt b/x.txt\nindex 1..2 100644\n--- a/x.txt\n+++ b/x.txt\n@@ -2,0 +3,2 @@\n+one\n++++ two\n@@ -9 +10,0 @@\n-gone\n@@ -20,0 +21 @@\n+three\n\0bbbb\n\ndiff --git a/y b/y\nnew file mode 100644\n--- /dev/null\n+++ \"b/y\\tz\"\n@@ -0,0 +1 @@\n+why\n\\ No newline at end of file\n";
        assert_eq!(
            parse(log),
            vec![
                (
                    "aaaa".to_string(),
                    "x.txt".to_string(),
                    "one\n+++ two\nthree".to_string(),
                    vec![3, 4, 21]
                ),
                (
                    "bbbb".to_string(),
                    "y\tz".to_string(),
                    "why".to_string(),
                    vec![1]
                ),
            ]
        );
    }

    #[test]
    fn leading_empty_added_lines_keep_their_place() {
        let log =
            "\0aaaa\n\ndiff --git a/u b/u\n--- /dev/null\n+++ b/u\n@@ -0,0 +1,3 @@\n+\n+\n+three\n";
        assert_eq!(
            parse(log),
            vec![(
                "aaaa".to_string(),
                "u".to_string(),
                "\n\nthree".to_string(),
                vec![1, 2, 3]
            )]
        );
    }

    #[test]
    fn combined_diff_keeps_only_lines_new_to_every_parent() {
        let log = "\0mmmm\n\ndiff --cc f.txt\nindex 1,2..3\n--- a/f.txt\n+++ b/f.txt\n@@@ -1,1 -1,1 +1,3 @@@\n- left\n -right\n++evil\n+ fromright\n  both\n";
        assert_eq!(
            parse(log),
            vec![(
                "mmmm".to_string(),
                "f.txt".to_string(),
                "evil".to_string(),
                vec![1]
            )]
        );
    }

    #[test]
    fn deleted_files_and_pure_renames_add_nothing() {
        let log = "\0cccc\n\ndiff --git a/old b/new\nsimilarity index 100%\nrename from old\nrename to new\ndiff --git a/d b/d\ndeleted file mode 100644\n--- a/d\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n";
        assert_eq!(parse(log), vec![]);
    }

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

    #[test]
    fn lines_cut_by_the_read_buffer_parse_the_same() {
        let log = "\0aaaa\n\ndiff --git a/x.txt b/x.txt\n--- a/x.txt\n+++ b/x.txt\n@@ -2,0 +3,2 @@\n+one\n++++ two\n@@@ -1,1 -1,1 +1,3 @@@\n++evil\n\0bbbb\n\ndiff --git a/y b/y\n--- /dev/null\n+++ \"b/y\\tz\"\n@@ -0,0 +1 @@\n+why";
        let whole = parse(log);
        assert_eq!(whole.len(), 2);
        for cap in 1..12 {
            let (tx, rx) = mpsc::sync_channel(100);
            let reader = BufReader::with_capacity(cap, log.as_bytes());
            parse_log(reader, &tx, &ParsePlan::whole(BATCH_BYTES)).unwrap();
            drop(tx);
            let got: Vec<_> = rx
                .into_iter()
                .flatten()
                .map(|f| {
                    (
                        f.commit,
                        f.path,
                        String::from_utf8(f.data).unwrap(),
                        f.line_map,
                    )
                })
                .collect();
            assert_eq!(got, whole, "buffer of {cap}");
            let (tx, rx) = mpsc::sync_channel(100);
            let reader = BufReader::with_capacity(cap, log.as_bytes());
            let end = parse_log(reader, &tx, &plan(&["aaaa"], "bbbb")).unwrap();
            drop(tx);
            assert_eq!(end, ParseEnd::Stopped, "buffer of {cap}");
            assert_eq!(rx.into_iter().flatten().count(), 1, "buffer of {cap}");
        }
    }

    fn plan(expect: &[&str], stop: &str) -> ParsePlan {
        ParsePlan {
            batch_bytes: BATCH_BYTES,
            expect: expect.iter().map(|s| s.to_string()).collect(),
            stop: Some(stop.to_string()),
        }
    }

    fn parse_planned(text: &str, plan: &ParsePlan) -> (ParseEnd, Vec<String>) {
        let (tx, rx) = mpsc::sync_channel(100);
        let end = parse_log(text.as_bytes(), &tx, plan).unwrap();
        drop(tx);
        (end, rx.into_iter().flatten().map(|f| f.commit).collect())
    }

    #[test]
    fn planned_stream_stops_at_the_second_half_only_when_it_follows_the_list() {
        let log = "\0a1\n\ndiff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+one\n\0a2\n\ndiff --git a/y b/y\n--- a/y\n+++ b/y\n@@ -0,0 +1 @@\n+two\n\0a3\n\ndiff --git a/z b/z\n--- a/z\n+++ b/z\n@@ -0,0 +1 @@\n+three\n";
        assert_eq!(
            parse_planned(log, &plan(&["a1"], "a2")),
            (ParseEnd::Stopped, vec!["a1".to_string()])
        );
        assert_eq!(
            parse_planned(log, &plan(&["a1", "a2"], "a3")),
            (ParseEnd::Stopped, vec!["a1".to_string(), "a2".to_string()])
        );
        let all = vec!["a1".to_string(), "a2".to_string(), "a3".to_string()];
        // Another order than listed, or a stop that never comes: read to the end.
        assert_eq!(
            parse_planned(log, &plan(&["a2"], "a1")),
            (ParseEnd::Whole, all.clone())
        );
        assert_eq!(
            parse_planned(log, &plan(&["a1"], "a3")),
            (ParseEnd::Whole, all.clone())
        );
        assert_eq!(
            parse_planned(log, &plan(&["a1", "a2", "a3"], "a4")),
            (ParseEnd::Whole, all)
        );
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
