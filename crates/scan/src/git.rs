//! Scanning the lines that commits add, from a streamed `git log -p`.
//!
//! Merge commits are shown as a dense combined diff (`--diff-merges=dense-combined`): only the
//! lines a merge adds relative to *every* parent (conflict resolutions, "evil merge" edits) are
//! scanned for the merge. Lines it brings in from a parent belong to that parent's commits,
//! which are scanned themselves when they are in the range, and were accepted earlier when they
//! are not. Renames are detected (`-M`): a pure rename adds no lines, and lines added to a renamed
//! file are reported under its new path.
//!
//! Binary blobs are not scanned in git mode (git prints no lines for them).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
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

    fn describe(&self) -> String {
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

/// Runs `git log -p` for the request and scans what each commit adds.
pub(crate) fn scan_git(
    engine: &Engine,
    req: &GitScanRequest,
    timeout: Duration,
) -> Result<Vec<Finding>, ScanError> {
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
            "log",
            "--patch",
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
        ])
        .args(&req.rev_args)
        .arg("--")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let git_err = |message: String| ScanError::Git {
        repo: req.repo.clone(),
        range: req.describe(),
        message,
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| git_err(format!("cannot run git: {e}; is git installed?")))?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(git_err("cannot read git's output".into()));
    };
    let child = Arc::new(Mutex::new(child));

    // Watchdog: kills git when it runs past the timeout.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = {
        let child = Arc::clone(&child);
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
                if let Ok(mut c) = child.lock() {
                    let _ = c.kill();
                }
                return true;
            }
            false
        })
    };
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(STDERR_KEEP as u64).read_to_end(&mut buf);
        // Drain the rest so git never blocks on a full pipe.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        buf
    });

    // Parser thread -> bounded channel of batches -> scanning on the rayon pool.
    let (batch_tx, batch_rx) = mpsc::sync_channel::<Vec<OwnedFragment>>(2);
    let parser = std::thread::spawn(move || parse_log(BufReader::new(stdout), &batch_tx));
    let mut findings = Vec::new();
    for batch in batch_rx {
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
    let parsed = parser
        .join()
        .map_err(|_| git_err("the git output parser failed".into()))?;
    let status = child
        .lock()
        .map_err(|_| git_err("lost track of the git process".into()))
        .and_then(|mut c| {
            c.wait()
                .map_err(|e| git_err(format!("waiting for git: {e}")))
        });
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let stderr = stderr_reader.join().unwrap_or_default();
    if timed_out {
        return Err(git_err(format!(
            "git log did not finish within {} s and was stopped",
            timeout.as_secs()
        )));
    }
    let status = status?;
    parsed.map_err(|e| git_err(format!("reading git output: {e}")))?;
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
    Ok(findings)
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
        if self.batch_bytes >= BATCH_BYTES {
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
            if !self.current.data.is_empty() {
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

fn parse_log<R: BufRead>(
    mut reader: R,
    tx: &mpsc::SyncSender<Vec<OwnedFragment>>,
) -> std::io::Result<()> {
    let mut p = LogParser {
        parents: 1,
        ..LogParser::default()
    };
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        p.line(&buf);
        if let Some(batch) = p.take_batch()
            && tx.send(batch).is_err()
        {
            return Ok(());
        }
    }
    p.flush_file();
    if !p.batch.is_empty() {
        let _ = tx.send(std::mem::take(&mut p.batch));
    }
    Ok(())
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
        parse_log(text.as_bytes(), &tx).unwrap();
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
}
