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
//!
//! [`process`] runs git (the commands, the split, the watchdog that enforces the timeout) and
//! [`parse`] turns its patch text into fragments; this module puts them together and scans
//! the fragments on the rayon pool.
//!
//! The history scan of commit selectors ([`scan_git_once`]) does not stream the whole range's
//! patch: [`blobs`] diffs the trees and reads each blob once in process ([`odb`], gitoxide)
//! and shows as patches only the commits that may hold a finding. The one `git log -p` over
//! the range is kept where revision arguments change the diffs themselves (`-w`, `-M90%`:
//! only git knows what they mean) and for [`Scanner::scan_git_split`], the reference the
//! tests compare with. `--staged` ([`scan_staged`]) is one `git diff --cached` parsed the
//! same way.
//!
//! [`Scanner::scan_git_split`]: crate::Scanner::scan_git_split

mod archives;
mod blobs;
pub(crate) mod change;
mod loose;
pub(crate) mod odb;
mod parse;
mod process;

pub(crate) use archives::{archive_blobs, changed_blobs};
pub use blobs::GitScanCounts;
pub(crate) use blobs::{list_git_range, scan_git_blobs};

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rayon::prelude::*;

use crate::engine::{Engine, Fragment};
use crate::error::ScanError;
use crate::finding::Finding;

use parse::{ParseEnd, ParsePlan};

/// Every fragment of `bytes` read as a `git log -p` stream: (commit, path, added bytes, line
/// numbers on the new side). For the fuzz target.
pub(crate) fn log_fragments(
    bytes: &[u8],
    batch_bytes: usize,
) -> Vec<(String, String, Vec<u8>, Vec<u32>)> {
    parse::fragments(bytes, batch_bytes)
        .into_iter()
        .map(|f| (f.commit, f.path, f.data, f.line_map))
        .collect()
}
use process::{Batches, Watchdog, finish_log, list_commits, log_command, read_log, splittable};
pub(crate) use process::{Children, git_command, spawn_child};

/// Fragments are handed to the scanning threads in batches of about this many bytes.
const BATCH_BYTES: usize = 4 << 20;

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

/// The top of the repository's work tree (canonical), when it has one; `None` for a bare
/// repository or when git cannot say.
pub(crate) fn toplevel(req: &GitScanRequest) -> Option<PathBuf> {
    let out = git_command(req, "rev-parse")
        .arg("--show-toplevel")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?;
    std::fs::canonicalize(text.trim_end_matches('\n')).ok()
}

/// Ranges with more commits than this are split in two halves scanned by two `git log`
/// processes side by side (git producing the patch is most of the work). Below it, the one
/// `git log` over the range is all there is: the `git rev-list` that counts the commits runs
/// while that `git log` starts, so a small push does not wait for it.
pub(crate) const SPLIT_MIN_COMMITS: usize = 16;

/// Scans what the range's commits add, reading each blob once and showing as patches only the
/// commits that may hold findings ([`blobs`]); revision arguments that change the diffs keep
/// the one `git log -p` ([`scan_git`]).
pub(crate) fn scan_git_once(
    engine: &Engine,
    req: &GitScanRequest,
    timeout: Duration,
) -> Result<(Vec<Finding>, Option<GitScanCounts>), ScanError> {
    if splittable(&req.rev_args) {
        blobs::scan_git_history(engine, req, timeout).map(|(f, c)| (f, Some(c)))
    } else {
        scan_git(engine, req, timeout, SPLIT_MIN_COMMITS).map(|f| (f, None))
    }
}

/// Whether the request's revision arguments only choose commits (so the history scan reads
/// each blob once); diff options keep the one `git log -p`.
pub(crate) fn reads_blobs_once(req: &GitScanRequest) -> bool {
    splittable(&req.rev_args)
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

    let watchdog = Watchdog::start(&children, timeout);
    let result = run_scan(engine, req, split_min, &children, first, &git_err);
    if watchdog.finish() {
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

/// The options of the `git diff` that shows what is staged: the patch as the history scan's
/// `git log -p` shows a commit (text, renames, no context, no external tools).
const STAGED_ARGS: [&str; 11] = [
    "--cached",
    "--patch",
    "--text",
    "--find-renames",
    "--unified=0",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "--src-prefix=a/",
    "--dst-prefix=b/",
];

/// What a pre-commit hook scans: the lines the index adds to `HEAD` (to the empty tree before
/// the first commit), from `git diff --cached`. Findings have no commit; their lines are the
/// lines of the staged files.
pub(crate) fn scan_staged(
    engine: &Engine,
    req: &GitScanRequest,
    timeout: Duration,
) -> Result<Vec<Finding>, ScanError> {
    let git_err = |message: String| ScanError::Git {
        repo: req.repo.clone(),
        range: req.describe(),
        message,
    };
    let children: Children = Arc::default();
    let mut cmd = git_command(req, "diff");
    cmd.args(STAGED_ARGS)
        .arg("--")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = spawn_child(cmd, &children, &git_err)?;
    let watchdog = Watchdog::start(&children, timeout);
    let result = read_log(child, None, ParsePlan::whole(BATCH_BYTES), &git_err).and_then(
        |(proc, batches)| {
            let findings = scan_batches(engine, batches);
            finish_log(proc, false, &git_err).map(|_| findings)
        },
    );
    if watchdog.finish() {
        return Err(git_err(format!(
            "git diff did not finish within {} s and was stopped",
            timeout.as_secs()
        )));
    }
    result
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
                        // `git diff` (the staged scan) shows no commit.
                        commit: Some(f.commit.as_str()).filter(|c| !c.is_empty()),
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
