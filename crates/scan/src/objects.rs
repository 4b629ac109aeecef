//! Every object a push adds, whatever reaches it: the scan of what `git log -p` never shows.
//!
//! `git log -p NEW --not --all` shows the lines that the new *commits* add. It shows nothing
//! for a tag (lightweight or annotated) that points at a blob or a tree, nothing of a tag's
//! or a commit's message, nothing of author and committer identities, and nothing of path
//! names. This module lists the new objects (`git rev-list --objects`: git decides what the
//! upstream's refs reach), reads them in process from the object database (`gix-odb`, see
//! `git/odb.rs`; in the gate's quarantine too) and scans:
//!
//! - each new commit and tag object whole (headers, identities, message);
//! - each new tree's entry names, one per line;
//! - each new blob that no new commit reaches (the lines of blobs that new commits reach are
//!   the log scan's, attributed to commit, file and line).
//!
//! Every new blob, whatever reaches it, is checked for what no rule can see into: larger than
//! the size limit, or a compressed archive or encrypted file. Those are returned as
//! [`Unreadable`] for the caller to refuse or let through.
//!
//! Where a finding sits, as `commit:file:rule_id:line`: `commit` is the id of the object that
//! holds the secret; `file` is `<commit>`, `<tag>` or `<tree>` for those objects (and the path
//! for a blob, `<blob>` when no new tree names it); `line` is the line in
//! `git cat-file -p <object>` (for a tree: its entry's line).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rayon::prelude::*;

use crate::decode::unreadable_kind;
use crate::engine::{Engine, Fragment};
use crate::error::ScanError;
use crate::finding::Finding;
use crate::git::odb::Objects;
use crate::git::{Children, GitScanRequest, git_command, spawn_child};

/// Blobs larger than this are not read by default: reported as [`Unreadable`].
pub const DEFAULT_MAX_BLOB_SIZE: u64 = crate::DEFAULT_MAX_FILE_SIZE;

/// How the object scan behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectScanOptions {
    /// Blobs larger than this many bytes are reported as unreadable instead of being read.
    pub max_blob_size: u64,
}

impl Default for ObjectScanOptions {
    fn default() -> Self {
        Self {
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
        }
    }
}

/// A new blob the scanner cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The blob's id.
    pub object: String,
    /// Its path in a new tree, or `<blob>` when no new tree names it.
    pub path: String,
    /// Why: `larger than N bytes`, `gzip-compressed`, `a zip archive`, `PGP-encrypted`, …
    pub reason: String,
}

/// What the object scan found.
#[derive(Debug, Clone, Default)]
pub struct ObjectScan {
    /// Findings in commit and tag objects, tree entry names and blobs no new commit reaches.
    pub findings: Vec<Finding>,
    /// New blobs that could not be scanned.
    pub unreadable: Vec<Unreadable>,
    /// How many new objects there were.
    pub objects: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Commit,
    Tree,
    Blob,
    Tag,
}

/// One tree entry: name, whether it is a tree, and its id (hex).
struct Entry {
    name: Vec<u8>,
    is_tree: bool,
    is_blob: bool,
    oid: String,
}

/// Something to scan: an object's text and how findings in it are named.
struct Piece {
    oid: String,
    file: String,
    data: Vec<u8>,
}

/// The new blobs that new commits reach, as the object scan read them: what the history scan
/// of the same push need not read again (see [`crate::Scanner::scan_push`]).
#[derive(Debug, Default)]
pub(crate) struct JudgedBlobs {
    /// Every new blob new commits reach.
    pub(crate) known: HashSet<String>,
    /// Those that may hold a finding ([`Engine::may_find`]), or that were not read (too large).
    pub(crate) flagged: HashSet<String>,
}

/// Lists, reads and scans the objects `git rev-list --objects <rev_args>` names; with
/// `judge`, the blobs new commits reach are judged too (each read once for both scans).
pub(crate) fn scan_objects(
    engine: &Engine,
    req: &GitScanRequest,
    options: &ObjectScanOptions,
    timeout: Duration,
    judge: bool,
) -> Result<(ObjectScan, Option<JudgedBlobs>), ScanError> {
    let git_err = |message: String| ScanError::Git {
        repo: req.repo.clone(),
        range: req.describe(),
        message,
    };
    let children: Children = Arc::default();
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
    let stop_at = std::time::Instant::now() + timeout;
    let result = scan_inner(engine, req, options, &children, &git_err, judge, stop_at);
    let _ = done_tx.send(());
    if watchdog.join().unwrap_or(false) {
        return Err(git_err(format!(
            "reading the pushed objects did not finish within {} s and was stopped",
            timeout.as_secs()
        )));
    }
    result
}

fn scan_inner(
    engine: &Engine,
    req: &GitScanRequest,
    options: &ObjectScanOptions,
    children: &Children,
    git_err: &dyn Fn(String) -> ScanError,
    judge: bool,
    stop_at: std::time::Instant,
) -> Result<(ObjectScan, Option<JudgedBlobs>), ScanError> {
    // 1. the new objects
    let mut cmd = git_command(req, "rev-list");
    cmd.args(["--objects", "--no-object-names"])
        .args(&req.rev_args)
        .arg("--");
    let listing = run_to_end(cmd, None, children, git_err)?;
    let oids: Vec<String> = String::from_utf8_lossy(&listing)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let mut scan = ObjectScan {
        objects: oids.len() as u64,
        ..ObjectScan::default()
    };
    if oids.is_empty() {
        return Ok((scan, judge.then(JudgedBlobs::default)));
    }

    // 2. their types and sizes, from the object database read in process
    let objects = Objects::open(req).map_err(git_err)?;
    let mut kinds: HashMap<String, (Kind, u64)> = HashMap::with_capacity(oids.len());
    for oid in &oids {
        let id = gix_hash::ObjectId::from_hex(oid.as_bytes())
            .map_err(|_| git_err(format!("cannot read pushed object: `{oid}`")))?;
        let header = objects
            .header(&id)
            .map_err(git_err)?
            .ok_or_else(|| git_err(format!("pushed object {oid} is missing")))?;
        let kind = match header.kind {
            gix_object::Kind::Commit => Kind::Commit,
            gix_object::Kind::Tree => Kind::Tree,
            gix_object::Kind::Blob => Kind::Blob,
            gix_object::Kind::Tag => Kind::Tag,
        };
        kinds.insert(oid.clone(), (kind, header.size));
    }

    // 3. commits, tags and trees, then the blobs small enough to read
    let mut to_read: Vec<&String> = Vec::new();
    let mut blobs: Vec<&String> = Vec::new();
    for oid in &oids {
        match kinds.get(oid) {
            Some((Kind::Blob, _)) => blobs.push(oid),
            Some(_) => to_read.push(oid),
            None => return Err(git_err(format!("pushed object {oid} is missing"))),
        }
    }
    let mut pieces: Vec<Piece> = Vec::new();
    let mut trees: HashMap<String, Vec<Entry>> = HashMap::new();
    let mut commit_roots: Vec<String> = Vec::new();
    read_objects(&objects, &to_read, stop_at, git_err, |oid, kind, data| {
        match kind {
            Kind::Tree => {
                let entries = parse_tree(&data, oid.len() / 2)
                    .ok_or_else(|| git_err(format!("cannot parse pushed tree {oid}")))?;
                // One entry per line (a newline inside a name becomes a space, so the lines
                // stay the entries of `git cat-file -p <tree>`).
                let mut names = Vec::new();
                for e in &entries {
                    names.extend(e.name.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
                    names.push(b'\n');
                }
                pieces.push(Piece {
                    oid: oid.to_string(),
                    file: "<tree>".into(),
                    data: names,
                });
                trees.insert(oid.to_string(), entries);
            }
            Kind::Commit => {
                if let Some(tree) = data
                    .strip_prefix(b"tree ")
                    .and_then(|r| r.split(|&b| b == b'\n').next())
                {
                    commit_roots.push(String::from_utf8_lossy(tree).into_owned());
                }
                pieces.push(Piece {
                    oid: oid.to_string(),
                    file: "<commit>".into(),
                    data,
                });
            }
            Kind::Tag => pieces.push(Piece {
                oid: oid.to_string(),
                file: "<tag>".into(),
                data,
            }),
            Kind::Blob => {}
        }
        Ok(())
    })?;

    // Paths of new blobs, and which ones new commits reach (the log scan has their lines).
    let mut path_of: HashMap<&str, String> = HashMap::new();
    let mut from_commits: HashSet<&str> = HashSet::new();
    let children_of: HashSet<&str> = trees
        .values()
        .flatten()
        .filter(|e| e.is_tree)
        .map(|e| e.oid.as_str())
        .collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let other_roots = oids
        .iter()
        .filter(|o| trees.contains_key(o.as_str()) && !children_of.contains(o.as_str()));
    let roots: Vec<(bool, &str)> = commit_roots
        .iter()
        .map(|r| (true, r.as_str()))
        .chain(other_roots.map(|r| (false, r.as_str())))
        .collect();
    for (by_commit, root) in roots {
        let mut stack: Vec<(&str, String)> = vec![(root, String::new())];
        while let Some((tree, prefix)) = stack.pop() {
            let Some(entries) = trees.get(tree) else {
                continue;
            };
            if !seen.insert(tree) {
                continue;
            }
            for e in entries {
                let path = format!("{prefix}{}", String::from_utf8_lossy(&e.name));
                if e.is_tree {
                    stack.push((e.oid.as_str(), format!("{path}/")));
                } else if e.is_blob && kinds.contains_key(&e.oid) {
                    if by_commit {
                        from_commits.insert(e.oid.as_str());
                    }
                    path_of.entry(e.oid.as_str()).or_insert(path);
                }
            }
        }
    }

    let mut judged = judge.then(|| JudgedBlobs {
        known: from_commits.iter().map(|o| o.to_string()).collect(),
        flagged: HashSet::new(),
    });
    let mut readable: Vec<&String> = Vec::new();
    for oid in blobs {
        let size = kinds.get(oid).map_or(0, |k| k.1);
        if size > options.max_blob_size {
            // Not read here: the history scan shows its commits' patches.
            if let Some(j) = judged.as_mut() {
                j.flagged.insert(oid.clone());
            }
            scan.unreadable.push(Unreadable {
                object: oid.clone(),
                path: path_of
                    .get(oid.as_str())
                    .cloned()
                    .unwrap_or_else(|| "<blob>".into()),
                reason: format!("larger than {} bytes", options.max_blob_size),
            });
        } else {
            readable.push(oid);
        }
    }
    // Blobs new commits reach, judged in parallel batches.
    let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0usize;
    let judge_batch = |batch: &mut Vec<(String, Vec<u8>)>, judged: &mut Option<JudgedBlobs>| {
        if let Some(j) = judged.as_mut() {
            j.flagged.extend(
                batch
                    .par_iter()
                    .filter(|(_, data)| engine.may_find(data))
                    .map(|(oid, _)| oid.clone())
                    .collect::<Vec<_>>(),
            );
        }
        batch.clear();
    };
    read_objects(&objects, &readable, stop_at, git_err, |oid, _, data| {
        let path = path_of.get(oid).cloned().unwrap_or_else(|| "<blob>".into());
        let by_commit = from_commits.contains(oid);
        if let Some(kind) = unreadable_kind(&data) {
            scan.unreadable.push(Unreadable {
                object: oid.to_string(),
                path,
                reason: kind.to_string(),
            });
        } else if !by_commit {
            pieces.push(Piece {
                oid: oid.to_string(),
                file: path,
                data,
            });
            return Ok(());
        }
        if by_commit && judged.is_some() {
            batch_bytes += data.len();
            batch.push((oid.to_string(), data));
            if batch_bytes >= JUDGE_BATCH_BYTES {
                batch_bytes = 0;
                judge_batch(&mut batch, &mut judged);
            }
        }
        Ok(())
    })?;
    judge_batch(&mut batch, &mut judged);

    let found: Vec<Vec<Finding>> = pieces
        .par_iter()
        .map(|p| {
            let mut out = Vec::new();
            engine.scan(
                &Fragment {
                    path: &p.file,
                    commit: Some(&p.oid),
                    data: &p.data,
                    line_map: None,
                },
                &mut out,
            );
            out
        })
        .collect();
    scan.findings = found.into_iter().flatten().collect();
    Ok((scan, judged))
}

/// The entries of a tree object as the scanner reads them: (name, is a tree, is a blob,
/// hex id); `None` for a tree it cannot read (the fuzz target's entry).
pub(crate) fn tree_entries(data: &[u8], hash_len: usize) -> Option<Vec<crate::fuzzing::TreeEntry>> {
    parse_tree(data, hash_len).map(|entries| {
        entries
            .into_iter()
            .map(|e| (e.name, e.is_tree, e.is_blob, e.oid))
            .collect()
    })
}
/// Blobs are judged in parallel batches of about this many bytes.
const JUDGE_BATCH_BYTES: usize = 4 << 20;

/// Parses a tree object: `<mode> <name>\0<raw id>` entries.
fn parse_tree(data: &[u8], hash_len: usize) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = memchr::memchr(b' ', rest)?;
        let mode = &rest[..sp];
        let nul = sp + 1 + memchr::memchr(0, &rest[sp + 1..])?;
        let name = rest[sp + 1..nul].to_vec();
        let id = rest.get(nul + 1..nul + 1 + hash_len)?;
        out.push(Entry {
            name,
            is_tree: mode == b"40000",
            is_blob: mode.starts_with(b"10") || mode == b"120000",
            oid: hex::encode(id),
        });
        rest = &rest[nul + 1 + hash_len..];
    }
    Some(out)
}

/// Runs a git command to its end, feeding `input`; its stdout, or the error with its stderr.
fn run_to_end(
    mut cmd: std::process::Command,
    input: Option<Vec<u8>>,
    children: &Children,
    git_err: &dyn Fn(String) -> ScanError,
) -> Result<Vec<u8>, ScanError> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = spawn_child(cmd, children, git_err)?;
    let (stdin, stdout, stderr) = take_pipes(&child, git_err)?;
    let feeder = feed(stdin, input);
    let err = std::thread::spawn(move || read_all(stderr));
    let mut out = Vec::new();
    if let Some(mut stdout) = stdout {
        stdout
            .read_to_end(&mut out)
            .map_err(|e| git_err(format!("cannot read git's output: {e}")))?;
    }
    let _ = feeder.map(|f| f.join());
    let err = err.join().unwrap_or_default();
    let status = child
        .lock()
        .map_err(|_| git_err("lost track of the git process".into()))?
        .wait()
        .map_err(|e| git_err(format!("cannot wait for git: {e}")))?;
    if !status.success() {
        return Err(git_err(String::from_utf8_lossy(&err).trim().to_string()));
    }
    Ok(out)
}

type Pipes = (
    Option<std::process::ChildStdin>,
    Option<std::process::ChildStdout>,
    Option<std::process::ChildStderr>,
);

fn take_pipes(
    child: &Arc<Mutex<Child>>,
    git_err: &dyn Fn(String) -> ScanError,
) -> Result<Pipes, ScanError> {
    child
        .lock()
        .map(|mut c| (c.stdin.take(), c.stdout.take(), c.stderr.take()))
        .map_err(|_| git_err("lost track of the git process".into()))
}

fn feed(
    stdin: Option<std::process::ChildStdin>,
    input: Option<Vec<u8>>,
) -> Option<std::thread::JoinHandle<()>> {
    let (mut stdin, input) = (stdin?, input?);
    Some(std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    }))
}

fn read_all(pipe: Option<std::process::ChildStderr>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = (&mut p).take(16 * 1024).read_to_end(&mut buf);
        let _ = std::io::copy(&mut p, &mut std::io::sink());
    }
    buf
}

/// Objects read side by side on the rayon pool, then handed over in order.
const READ_CHUNK: usize = 256;

/// Reads objects in process (each thread with its own handle), handing each to `each` in the
/// order given.
fn read_objects(
    objects: &Objects,
    oids: &[&String],
    stop_at: std::time::Instant,
    git_err: &dyn Fn(String) -> ScanError,
    mut each: impl FnMut(&str, Kind, Vec<u8>) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    // Handles are per thread: each thread clones this one.
    let template = Mutex::new(objects.clone());
    let handle = || match template.lock() {
        Ok(o) => o.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    for chunk in oids.chunks(READ_CHUNK) {
        // Past the timeout (the caller reports it): stop reading.
        if std::time::Instant::now() >= stop_at {
            return Err(git_err("stopped at the timeout".into()));
        }
        let read: Vec<Result<(Kind, Vec<u8>), String>> = chunk
            .par_iter()
            .map_init(
                || (handle(), Vec::new()),
                |(objects, buf), oid| {
                    let id = gix_hash::ObjectId::from_hex(oid.as_bytes())
                        .map_err(|_| format!("cannot read pushed object: `{oid}`"))?;
                    let data = objects
                        .read(&id, buf)?
                        .ok_or_else(|| format!("pushed object {oid} is missing"))?;
                    let kind = match data.kind {
                        gix_object::Kind::Commit => Kind::Commit,
                        gix_object::Kind::Tree => Kind::Tree,
                        gix_object::Kind::Tag => Kind::Tag,
                        gix_object::Kind::Blob => Kind::Blob,
                    };
                    Ok((kind, data.data.to_vec()))
                },
            )
            .collect();
        for (oid, r) in chunk.iter().zip(read) {
            let (kind, data) =
                r.map_err(|e| git_err(format!("cannot read a pushed object: {e}")))?;
            each(oid, kind, data)?;
        }
    }
    Ok(())
}
