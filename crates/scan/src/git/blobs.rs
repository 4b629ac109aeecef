//! The history scan that reads each blob once.
//!
//! Producing the patch (`git log -p`) was most of the cost of a history scan, and a blob that
//! many commits carry (the same file at many paths, a file copied between branches) was
//! diffed and scanned once per commit. Here:
//!
//! 1. `git log --raw` lists, for every commit of the range, the blob each changed path has in
//!    that commit (merges: the paths that differ from every parent). This is a tree walk: no
//!    diff is computed and no blob is read.
//! 2. Each blob named there is read once, as it is first named, by one `git cat-file --batch`
//!    fed from the listing, and asked [`Engine::may_find`]: whether any rule could report
//!    something in it at some path.
//! 3. Only the commits that bring in such a blob (or name a path a path-only rule matches) are
//!    shown as patches, each against its own parents, in the order the listing gave (the same
//!    `git log --stdin --no-walk=unsorted` the split scan uses), and scanned as before; so
//!    findings, their lines, commits and fingerprints are exactly those of one `git log -p`
//!    over the range.
//!
//! On a clean history step 3 shows nothing; on a history with findings it shows the commits
//! that introduce them. The one thing step 2 does not look for is a match the patch scan would
//! make across two added lines that are not next to each other in the file (the patch scan
//! joins a file's added lines); such a match is an artefact of the joining, not text of the
//! file. Revision arguments that are not only commit selectors (diff options
//! such as `-w`) keep the one `git log -p` (see [`super::process::splittable`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc;

use rayon::prelude::*;

use super::parse::{ParsePlan, unquote};
use super::process::{Watchdog, finish_log, git_stderr_message, log_command, read_log};
use super::{BATCH_BYTES, Children, GitScanRequest, git_command, scan_batches, spawn_child};
use crate::engine::Engine;
use crate::error::ScanError;
use crate::finding::Finding;
use crate::objects::JudgedBlobs;

/// The arguments of the listing: one line per changed path with its new blob, no renames
/// (a renamed file's blob is named under its new path all the same), merges as in the patch.
const RAW_ARGS: [&str; 8] = [
    "--raw",
    "--no-abbrev",
    "--no-renames",
    "--diff-merges=dense-combined",
    "--no-color",
    "--no-ext-diff",
    "--no-relative",
    "--format=%x00%H",
];

/// How many `git cat-file` processes read blobs side by side (inflating is most of the work).
const READERS: usize = 2;

/// A commit of the listing and what it brings in.
#[derive(Default)]
struct ListedCommit {
    id: String,
    /// Indexes of the blobs it brings in (into the order they were first named).
    blobs: Vec<usize>,
    /// A path-only rule matches one of its changed paths.
    path_hit: bool,
}

/// How much of the range a history scan read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GitScanCounts {
    /// Commits in the range.
    pub commits: u64,
    /// Distinct blobs read here (each once; blobs the object scan of a push read are not
    /// read again).
    pub blobs: u64,
    /// Commits shown as patches because they bring in a blob that may hold a finding.
    pub patched: u64,
}

/// Scans the range by reading each blob once (see the module doc). Blobs in `known` were read
/// and judged already (by the object scan of the same push) and are not read again.
pub(crate) fn scan_git_blobs(
    engine: &Engine,
    req: &GitScanRequest,
    timeout: std::time::Duration,
    known: Option<&JudgedBlobs>,
) -> Result<(Vec<Finding>, GitScanCounts), ScanError> {
    let git_err = |message: String| ScanError::Git {
        repo: req.repo.clone(),
        range: req.describe(),
        message,
    };
    let children: Children = std::sync::Arc::default();
    let watchdog = Watchdog::start(&children, timeout);
    let result = run(engine, req, &children, &git_err, known);
    if watchdog.finish() {
        return Err(git_err(format!(
            "git log did not finish within {} s and was stopped",
            timeout.as_secs()
        )));
    }
    result
}

fn run(
    engine: &Engine,
    req: &GitScanRequest,
    children: &Children,
    git_err: &dyn Fn(String) -> ScanError,
    known: Option<&JudgedBlobs>,
) -> Result<(Vec<Finding>, GitScanCounts), ScanError> {
    let mut list = git_command(req, "log");
    list.args(RAW_ARGS)
        .args(&req.rev_args)
        .arg("--")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let lister = spawn_child(list, children, git_err)?;
    let take = |c: &std::sync::Arc<std::sync::Mutex<std::process::Child>>| {
        c.lock()
            .map(|mut c| (c.stdin.take(), c.stdout.take(), c.stderr.take()))
            .map_err(|_| git_err("lost track of the git process".into()))
    };
    let (_, list_out, list_err) = take(&lister)?;
    let Some(list_out) = list_out else {
        return Err(git_err("cannot read git's output".into()));
    };
    let list_err = std::thread::spawn(move || keep_stderr(list_err));
    // The readers: blobs are dealt to them in turn, each inflates its share.
    let mut readers = Vec::with_capacity(READERS);
    let mut cat_ins = Vec::with_capacity(READERS);
    let mut cat_outs = Vec::with_capacity(READERS);
    for _ in 0..READERS {
        let mut cat = git_command(req, "cat-file");
        cat.arg("--batch")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let reader = match spawn_child(cat, children, git_err) {
            Ok(c) => c,
            Err(e) => {
                let _ = lister.lock().map(|mut c| c.kill());
                return Err(e);
            }
        };
        let (cat_in, cat_out, cat_err) = take(&reader)?;
        let (Some(cat_in), Some(cat_out)) = (cat_in, cat_out) else {
            return Err(git_err("cannot read git's output".into()));
        };
        cat_ins.push(cat_in);
        cat_outs.push(cat_out);
        readers.push((reader, std::thread::spawn(move || keep_stderr(cat_err))));
    }

    let (listed, flagged, read_results) = std::thread::scope(|s| {
        let listing = s.spawn(move || list_commits(engine, list_out, cat_ins, known));
        let (tx, rx) = mpsc::sync_channel::<Vec<(usize, Vec<u8>)>>(2);
        let blobs: Vec<_> = cat_outs
            .into_iter()
            .enumerate()
            .map(|(j, out)| {
                let tx = tx.clone();
                s.spawn(move || read_blobs(out, j, READERS, &tx))
            })
            .collect();
        drop(tx);
        let mut flagged: Vec<usize> = Vec::new();
        for batch in rx {
            flagged.extend(
                batch
                    .par_iter()
                    .filter(|(_, data)| engine.may_find(data))
                    .map(|(i, _)| *i)
                    .collect::<Vec<_>>(),
            );
        }
        let listed = listing.join();
        let read: Vec<_> = blobs.into_iter().map(|b| b.join()).collect();
        (listed, flagged, read)
    });

    // Either side failing first makes the other stop: report the listing's error (it names
    // the range) before the reader's.
    let list_status = lister
        .lock()
        .map_err(|_| git_err("lost track of the git process".into()))?
        .wait()
        .map_err(|e| git_err(format!("waiting for git: {e}")))?;
    let list_stderr = list_err.join().unwrap_or_default();
    if !list_status.success() {
        return Err(git_err(git_stderr_message(&list_stderr, list_status)));
    }
    let listed = listed
        .map_err(|_| git_err("the git output parser failed".into()))?
        .map_err(|e| git_err(format!("reading git output: {e}")))?;
    for ((reader, cat_err), read_result) in readers.into_iter().zip(read_results) {
        let cat_status = reader
            .lock()
            .map_err(|_| git_err("lost track of the git process".into()))
            .and_then(|mut c| {
                if read_result.as_ref().map_or(true, |r| r.is_err()) {
                    let _ = c.kill();
                }
                c.wait()
                    .map_err(|e| git_err(format!("waiting for git: {e}")))
            })?;
        let cat_stderr = cat_err.join().unwrap_or_default();
        let read = read_result.map_err(|_| git_err("the blob reader failed".into()))?;
        read.map_err(|e| git_err(format!("cannot read a blob: {e}")))?;
        if !cat_status.success() {
            return Err(git_err(git_stderr_message(&cat_stderr, cat_status)));
        }
    }

    let mut is_flagged = vec![false; listed.blob_count];
    let read_flagged = flagged
        .into_iter()
        .filter_map(|k| listed.sent.get(k).copied());
    for i in read_flagged.chain(listed.known_flagged.iter().copied()) {
        if let Some(f) = is_flagged.get_mut(i) {
            *f = true;
        }
    }
    let mut counts = GitScanCounts {
        commits: listed.commits.len() as u64,
        blobs: listed.sent.len() as u64,
        patched: 0,
    };
    let ids: Vec<String> = listed
        .commits
        .into_iter()
        .filter(|c| c.path_hit || c.blobs.iter().any(|&b| is_flagged[b]))
        .map(|c| c.id)
        .collect();
    counts.patched = ids.len() as u64;
    if ids.is_empty() {
        return Ok((Vec::new(), counts));
    }
    // The commits that may hold findings, shown as `git log -p` shows them in the range.
    let child = spawn_child(log_command(req, true), children, git_err)?;
    let (proc, batches) = read_log(child, Some(ids), ParsePlan::whole(BATCH_BYTES), git_err)?;
    let findings = scan_batches(engine, batches);
    finish_log(proc, false, git_err)?;
    Ok((findings, counts))
}

/// What the listing gave.
struct Listing {
    commits: Vec<ListedCommit>,
    blob_count: usize,
    /// The blobs asked of `git cat-file`, in order (their indexes).
    sent: Vec<usize>,
    /// Blobs judged before (`known`) that may hold a finding.
    known_flagged: Vec<usize>,
}

/// Reads the `git log --raw` listing; each blob named for the first time is asked of
/// `git cat-file` at once (its stdin is closed at the end, which ends the reader).
fn list_commits(
    engine: &Engine,
    out: std::process::ChildStdout,
    cat_ins: Vec<ChildStdin>,
    known: Option<&JudgedBlobs>,
) -> std::io::Result<Listing> {
    let mut sent = Vec::new();
    let mut known_flagged = Vec::new();
    let mut cats: Vec<BufWriter<ChildStdin>> = cat_ins
        .into_iter()
        .map(|c| BufWriter::with_capacity(16 * 1024, c))
        .collect();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut commits: Vec<ListedCommit> = Vec::new();
    let mut r = BufReader::with_capacity(256 * 1024, out);
    let mut line = Vec::new();
    // A failed write means a `cat-file` is gone: the listing is still read to its end (so that
    // `git log` is not killed by a broken pipe and its own error, if any, is the one reported).
    let mut cat_ok = vec![true; cats.len()];
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let l = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Some(id) = l.strip_prefix(b"\0") {
            commits.push(ListedCommit {
                id: String::from_utf8_lossy(id).trim().to_string(),
                ..ListedCommit::default()
            });
            continue;
        }
        let Some(entry) = parse_raw(l) else { continue };
        let Some(commit) = commits.last_mut() else {
            continue;
        };
        if engine.skips_commit(&commit.id) {
            continue;
        }
        let path = unquote(entry.path);
        if engine.skips_path(&path) {
            continue;
        }
        if engine.path_rule_matches(&path) {
            commit.path_hit = true;
        }
        let next = index.len();
        let i = *index.entry(entry.oid.to_vec()).or_insert(next);
        if i == next {
            let oid = std::str::from_utf8(entry.oid).unwrap_or_default();
            match known {
                Some(k) if k.known.contains(oid) => {
                    if k.flagged.contains(oid) {
                        known_flagged.push(i);
                    }
                }
                _ => {
                    // The k-th blob sent goes to reader k % n (see `read_blobs`).
                    let j = sent.len() % cats.len().max(1);
                    sent.push(i);
                    if let (Some(cat), Some(ok)) = (cats.get_mut(j), cat_ok.get_mut(j))
                        && *ok
                    {
                        *ok = cat.write_all(entry.oid).is_ok() && cat.write_all(b"\n").is_ok();
                    }
                }
            }
        }
        commit.blobs.push(i);
    }
    for mut cat in cats {
        let _ = cat.flush();
    }
    Ok(Listing {
        commits,
        blob_count: index.len(),
        sent,
        known_flagged,
    })
}

/// One line of `--raw` output, the side that matters: the path's blob in the commit.
struct RawEntry<'a> {
    oid: &'a [u8],
    path: &'a [u8],
}

/// `:<mode> <mode> <oid> <oid> <status>\t<path>`, or with `n` colons for a merge of `n`
/// parents (`n + 1` modes and ids, the commit's last). Deleted paths and submodules (no blob)
/// give `None`.
fn parse_raw(line: &[u8]) -> Option<RawEntry<'_>> {
    let colons = line.iter().take_while(|&&b| b == b':').count();
    if colons == 0 {
        return None;
    }
    let tab = memchr::memchr(b'\t', line)?;
    let meta = &line[colons..tab];
    let path = &line[tab + 1..];
    let fields: Vec<&[u8]> = meta.split(|&b| b == b' ').collect();
    let mode = fields.get(colons)?;
    let oid = fields.get(2 * colons + 1)?;
    if oid.iter().all(|&b| b == b'0') || mode.starts_with(b"160") || *mode == b"000000" {
        return None;
    }
    Some(RawEntry { oid, path })
}

/// Reads the output of reader `j` of `n`: the blobs in the order they were asked, in batches,
/// each with its place among all the blobs sent (the k-th blob this reader gets is the
/// `k * n + j`-th sent).
fn read_blobs(
    out: std::process::ChildStdout,
    j: usize,
    n: usize,
    tx: &mpsc::SyncSender<Vec<(usize, Vec<u8>)>>,
) -> std::io::Result<()> {
    let mut r = BufReader::with_capacity(256 * 1024, out);
    let mut header = Vec::new();
    let mut batch: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut i = 0usize;
    loop {
        header.clear();
        if r.read_until(b'\n', &mut header)? == 0 {
            break;
        }
        let h = String::from_utf8_lossy(&header);
        let mut f = h.split_whitespace();
        let (oid, kind, size) = (f.next(), f.next(), f.next());
        let size: usize = match (kind, size.and_then(|s| s.parse().ok())) {
            (Some(_), Some(size)) => size,
            _ => {
                return Err(std::io::Error::other(format!(
                    "object {} is missing",
                    oid.unwrap_or("?")
                )));
            }
        };
        let mut data = vec![0u8; size];
        r.read_exact(&mut data)?;
        let mut nl = [0u8; 1];
        r.read_exact(&mut nl)?;
        batch_bytes += size;
        batch.push((i * n + j, data));
        i += 1;
        if batch_bytes >= BATCH_BYTES {
            batch_bytes = 0;
            if tx.send(std::mem::take(&mut batch)).is_err() {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
    Ok(())
}

fn keep_stderr(pipe: Option<std::process::ChildStderr>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = (&mut p).take(16 * 1024).read_to_end(&mut buf);
        let _ = std::io::copy(&mut p, &mut std::io::sink());
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn entry(line: &str) -> Option<(String, String)> {
        parse_raw(line.as_bytes()).map(|e| {
            (
                String::from_utf8(e.oid.to_vec()).unwrap(),
                String::from_utf8(e.path.to_vec()).unwrap(),
            )
        })
    }

    #[test]
    fn raw_lines_give_the_blob_each_path_has_in_the_commit() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let m = "c".repeat(40);
        let z = "0".repeat(40);
        assert_eq!(
            entry(&format!(":100644 100644 {a} {b} M\tsrc/x.rs")),
            Some((b.clone(), "src/x.rs".into()))
        );
        assert_eq!(
            entry(&format!(":000000 100644 {z} {b} A\t\"q\\tz\"")),
            Some((b.clone(), "\"q\\tz\"".into()))
        );
        assert_eq!(
            entry(&format!("::100644 100644 100644 {a} {b} {m} MM\tf")),
            Some((m.clone(), "f".into()))
        );
        // Deleted, a submodule, not a raw line.
        assert_eq!(entry(&format!(":100644 000000 {a} {z} D\tgone")), None);
        assert_eq!(entry(&format!(":000000 160000 {z} {a} A\tsub")), None);
        assert_eq!(entry("commit abc"), None);
    }
}
