//! Every object a push adds, whatever reaches it: the scan of what `git log -p` never shows.
//!
//! `git log -p NEW --not --all` shows the lines that the new *commits* add. It shows nothing
//! for a tag (lightweight or annotated) that points at a blob or a tree, nothing of a tag's
//! or a commit's message, nothing of author and committer identities, and nothing of path
//! names. This module lists the new objects (`git rev-list --objects`: git decides what the
//! upstream's refs reach), reads them in process from the object database (`gix-odb`, see
//! `git/odb.rs`; in the gate's quarantine too: the pack a push arrived in is walked in
//! delta-tree order, each object decoded once, and each blob looked at as it is decoded) and
//! scans:
//!
//! - each new commit and tag object whole (headers, identities, message);
//! - each new tree's entry names, one per line;
//! - each new blob that no new commit reaches (the lines of blobs that new commits reach are
//!   the log scan's, attributed to commit, file and line).
//!
//! With the history scan of the same push ([`crate::Scanner::scan_push`]), the new blobs new
//! commits reach are judged here ([`Engine::may_find`]) as they are read, so that the history
//! scan shows as patches only the commits that bring in a blob that may hold a finding; blobs
//! of [`change::MIN_DIFF_BYTES`] or more are kept instead (up to [`KEEP_BYTES`] in all) and
//! judged by the history scan where they differ from the blob their path had in the parent
//! commit (`git/change.rs`), which only it knows.
//!
//! Every new blob, whatever reaches it, is checked for what no rule can see into: larger than
//! the size limit, or a compressed archive or encrypted file. Those are returned as
//! [`Unreadable`] for the caller to refuse or let through.
//!
//! Where a finding sits, as `commit:file:rule_id:line`: `commit` is the id of the object that
//! holds the secret; `file` is `<commit>`, `<tag>` or `<tree>` for those objects (and the path
//! for a blob, `<blob>` when no new tree names it); `line` is the line in
//! `git cat-file -p <object>` (for a tree: its entry's line).

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gix_hash::ObjectId;
use rayon::iter::ParallelBridge;
use rayon::prelude::*;

use crate::decode::unreadable_kind;
use crate::engine::{Engine, Fragment};
use crate::error::ScanError;
use crate::finding::Finding;
use crate::git::change;
use crate::git::odb::{Decoded, IdMap, IdSet, Objects, WalkError};
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
    /// How many of them were read by walking a pack in delta-tree order (each delta applied
    /// once to its base); the others were read one by one.
    pub walked: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Commit,
    Tree,
    Blob,
    Tag,
}

/// One tree entry, read where it is in the tree's bytes: name, whether it is a tree or a
/// blob, and its id (bytes, and as an id when it has the length of this build's ids).
struct Entry<'a> {
    name: &'a [u8],
    is_tree: bool,
    is_blob: bool,
    id: &'a [u8],
    oid: Option<&'a gix_hash::oid>,
}

/// How the objects are read: whether the blobs new commits reach are judged, whether packs
/// are walked, and until when.
#[derive(Clone, Copy)]
struct How {
    judge: bool,
    /// Blobs large enough are kept for the history scan to judge by what changed.
    by_change: bool,
    walk: bool,
    stop_at: std::time::Instant,
}

/// Something to scan: an object's text and how findings in it are named.
struct Piece {
    oid: String,
    file: String,
    data: Vec<u8>,
}

/// The new blobs that new commits reach, as the object scan read them: what the history scan
/// of the same push need not read again (see [`crate::Scanner::scan_push`]).
#[derive(Default)]
pub(crate) struct JudgedBlobs {
    /// Every new blob new commits reach.
    pub(crate) known: IdSet,
    /// Those that may hold a finding ([`Engine::may_find`]), or that were not read (too large).
    pub(crate) flagged: IdSet,
    /// The new trees, decoded: the history scan's tree diffs read them from here.
    pub(crate) trees: Option<Arc<Decoded>>,
    /// New blobs new commits reach that are not judged yet, with their bytes: the history
    /// scan judges each where it differs from the blob its path had in the parent commit
    /// ([`crate::git::change::may_find_change`]), or whole where the path is new. In neither
    /// `flagged` nor its complement until then.
    pub(crate) pending: IdMap<Vec<u8>>,
    /// The object database as the object scan opened it (the history scan reads from it too).
    pub(crate) objects: Option<Objects>,
}

/// Whether and how the object scan judges the new blobs that new commits reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judge {
    /// Not at all (the object scan alone).
    Not,
    /// Each whole, as it is read.
    Whole,
    /// Small ones whole as they are read; the others kept for the history scan to judge by
    /// what changed from the blob their path had in the parent ([`JudgedBlobs::pending`]).
    ByChange,
}

/// Lists, reads and scans the objects `git rev-list --objects <rev_args>` names; with
/// `judge`, the blobs new commits reach are judged too (each read once for both scans). With
/// `walk`, the packs that hold most of the objects are walked in delta-tree order (see
/// [`Objects::walk_packs`]); without it every object is read one by one (the reference the
/// tests compare the walk with).
pub(crate) fn scan_objects(
    engine: &Engine,
    req: &GitScanRequest,
    options: &ObjectScanOptions,
    timeout: Duration,
    judge: Judge,
    walk: bool,
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
    let how = How {
        judge: judge != Judge::Not,
        by_change: judge == Judge::ByChange,
        walk,
        stop_at,
    };
    let result = scan_inner(engine, req, options, &children, &git_err, &how);
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
    how: &How,
) -> Result<(ObjectScan, Option<JudgedBlobs>), ScanError> {
    let (judge, stop_at) = (how.judge, how.stop_at);
    // 1. the new objects
    let mut cmd = git_command(req, "rev-list");
    cmd.args(["--objects", "--no-object-names"])
        .args(&req.rev_args)
        .arg("--");
    let listing = run_to_end(cmd, None, children, git_err)?;
    let mut ids: Vec<ObjectId> = Vec::new();
    for line in listing.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        ids.push(ObjectId::from_hex(line).map_err(|_| {
            git_err(format!(
                "cannot read pushed object: `{}`",
                String::from_utf8_lossy(line)
            ))
        })?);
    }
    let mut scan = ObjectScan {
        objects: ids.len() as u64,
        ..ObjectScan::default()
    };
    if ids.is_empty() {
        return Ok((scan, judge.then(JudgedBlobs::default)));
    }

    // 2. read in process: the packs that hold most of them walked in delta-tree order (a
    // received push), the rest one by one
    let objects = Objects::open(req).map_err(git_err)?;
    let (mut got, walked) = read_new_objects(&objects, &ids, engine, options, how, git_err)?;
    scan.walked = walked;
    if let Some(id) = ids.iter().find(|id| !got.contains_key(*id)) {
        return Err(git_err(format!("pushed object {id} is missing")));
    }

    // 3. commits, tags and trees (in the listing's order), then the blobs
    let mut blobs: Vec<&ObjectId> = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    // The new trees' bytes, and their ids in the listing's order.
    let mut raw_trees: Decoded = Decoded::default();
    let mut tree_ids: Vec<ObjectId> = Vec::new();
    let mut commit_roots: Vec<ObjectId> = Vec::new();
    for id in &ids {
        let (kind, data) = match got.remove(id) {
            Some(Got::Object(kind, data)) => (kind, data),
            Some(b @ Got::Blob(_)) => {
                got.insert(*id, b);
                blobs.push(id);
                continue;
            }
            None => return Err(git_err(format!("pushed object {id} is missing"))),
        };
        match kind {
            Kind::Tree => {
                let entries = parse_tree(&data, id.as_slice().len())
                    .ok_or_else(|| git_err(format!("cannot parse pushed tree {id}")))?;
                // One entry per line (a newline inside a name becomes a space, so the lines
                // stay the entries of `git cat-file -p <tree>`).
                let mut names = Vec::new();
                for e in &entries {
                    names.extend(e.name.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
                    names.push(b'\n');
                }
                pieces.push(Piece {
                    oid: id.to_string(),
                    file: "<tree>".into(),
                    data: names,
                });
                tree_ids.push(*id);
                raw_trees.insert(*id, (gix_object::Kind::Tree, data));
            }
            Kind::Commit => {
                if let Some(tree) = data
                    .strip_prefix(b"tree ")
                    .and_then(|r| r.split(|&b| b == b'\n').next())
                    .and_then(|hex| ObjectId::from_hex(hex).ok())
                {
                    commit_roots.push(tree);
                }
                pieces.push(Piece {
                    oid: id.to_string(),
                    file: "<commit>".into(),
                    data,
                });
            }
            Kind::Tag => pieces.push(Piece {
                oid: id.to_string(),
                file: "<tag>".into(),
                data,
            }),
            Kind::Blob => {}
        }
    }
    // The trees' entries, read where the bytes are (kept for the history scan's tree diffs).
    let raw_trees = Arc::new(raw_trees);
    let mut trees: IdMap<Vec<Entry<'_>>> = IdMap::default();
    trees.reserve(raw_trees.len());
    for (id, (_, data)) in raw_trees.iter() {
        let entries = parse_tree(data, id.as_slice().len())
            .filter(|entries| entries.iter().all(|e| e.oid.is_some()))
            .ok_or_else(|| git_err(format!("cannot parse pushed tree {id}")))?;
        trees.insert(*id, entries);
    }

    // Paths of new blobs, and which ones new commits reach (the log scan has their lines).
    let is_new_blob = |id: &gix_hash::oid| matches!(got.get(id), Some(Got::Blob(_)));
    let mut path_of: IdMap<String> = IdMap::default();
    let mut from_commits = IdSet::default();
    let children_of: IdSet = trees
        .values()
        .flatten()
        .filter(|e| e.is_tree)
        .filter_map(|e| e.oid.map(ToOwned::to_owned))
        .collect();
    let mut seen = IdSet::default();
    let other_roots = tree_ids.iter().filter(|t| !children_of.contains(*t));
    let roots: Vec<(bool, &gix_hash::oid)> = commit_roots
        .iter()
        .map(|r| (true, r.as_ref()))
        .chain(other_roots.map(|r| (false, r.as_ref())))
        .collect();
    for (by_commit, root) in roots {
        let mut stack: Vec<(&gix_hash::oid, String)> = vec![(root, String::new())];
        while let Some((tree, prefix)) = stack.pop() {
            let Some(entries) = trees.get(tree) else {
                continue;
            };
            if !seen.insert(tree.to_owned()) {
                continue;
            }
            for e in entries {
                // Every entry has an id (checked above).
                let Some(oid) = e.oid else { continue };
                if e.is_tree {
                    // Only a new tree not walked yet has paths to give (the others are
                    // skipped when taken from the stack).
                    if trees.contains_key(oid) && !seen.contains(oid) {
                        let name = String::from_utf8_lossy(e.name);
                        stack.push((oid, format!("{prefix}{name}/")));
                    }
                } else if e.is_blob && is_new_blob(oid) {
                    if by_commit {
                        from_commits.insert(oid.to_owned());
                    }
                    if !path_of.contains_key(oid) {
                        let name = String::from_utf8_lossy(e.name);
                        path_of.insert(oid.to_owned(), format!("{prefix}{name}"));
                    }
                }
            }
        }
    }

    let mut judged = judge.then(|| JudgedBlobs {
        known: from_commits.clone(),
        flagged: IdSet::default(),
        trees: Some(Arc::clone(&raw_trees)),
        pending: IdMap::default(),
        objects: Some(objects.clone()),
    });
    let blob = |id: &ObjectId| match got.get(id) {
        Some(Got::Blob(b)) => Some(b),
        _ => None,
    };
    let path_or_blob = |id: &ObjectId| path_of.get(id).cloned().unwrap_or_else(|| "<blob>".into());
    let mut readable: Vec<&ObjectId> = Vec::new();
    for &id in &blobs {
        let size = blob(id).map_or(0, |b| b.size);
        if size > options.max_blob_size {
            // Not read here: the history scan shows its commits' patches.
            if let Some(j) = judged.as_mut() {
                j.flagged.insert(*id);
            }
            scan.unreadable.push(Unreadable {
                object: id.to_string(),
                path: path_or_blob(id),
                reason: format!("larger than {} bytes", options.max_blob_size),
            });
        } else {
            readable.push(id);
        }
    }
    // Blobs no new commit reaches are scanned whole at their path: read again (they are few:
    // what only a tag or a tree without commit reaches).
    let mut again: Vec<&ObjectId> = Vec::new();
    let mut pending: Vec<ObjectId> = Vec::new();
    for &id in &readable {
        let Some(b) = blob(id) else { continue };
        let by_commit = from_commits.contains(id);
        if let Some(kind) = b.unreadable {
            scan.unreadable.push(Unreadable {
                object: id.to_string(),
                path: path_or_blob(id),
                reason: kind.to_string(),
            });
        } else if !by_commit {
            again.push(id);
            continue;
        }
        if by_commit && let Some(j) = judged.as_mut() {
            if b.may_find {
                j.flagged.insert(*id);
            } else if b.kept.is_some() {
                pending.push(*id);
            }
        }
    }
    if let Some(j) = judged.as_mut() {
        for id in pending {
            if let Some(Got::Blob(BlobRead {
                kept: Some(data), ..
            })) = got.get_mut(&id)
            {
                j.pending.insert(id, std::mem::take(data));
            }
        }
    }
    read_objects(
        &objects,
        &again,
        stop_at,
        git_err,
        |_, data| data,
        |id, data| {
            pieces.push(Piece {
                oid: id.to_string(),
                file: path_or_blob(id),
                data,
            });
            Ok(())
        },
    )?;

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
            .map(|e| (e.name.to_vec(), e.is_tree, e.is_blob, hex::encode(e.id)))
            .collect()
    })
}

/// Parses a tree object: `<mode> <name>\0<raw id>` entries, each read where it is.
fn parse_tree(data: &[u8], hash_len: usize) -> Option<Vec<Entry<'_>>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = memchr::memchr(b' ', rest)?;
        let mode = &rest[..sp];
        let nul = sp + 1 + memchr::memchr(0, &rest[sp + 1..])?;
        let name = &rest[sp + 1..nul];
        let id = rest.get(nul + 1..nul + 1 + hash_len)?;
        out.push(Entry {
            name,
            is_tree: mode == b"40000",
            is_blob: mode.starts_with(b"10") || mode == b"120000",
            id,
            oid: gix_hash::oid::try_from_bytes(id).ok(),
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

/// Reads objects in process one by one (each thread with its own handle), `map` on the rayon
/// pool, handing each result to `each` in the order given.
fn read_objects<T: Send>(
    objects: &Objects,
    ids: &[&ObjectId],
    stop_at: std::time::Instant,
    git_err: &dyn Fn(String) -> ScanError,
    map: impl Fn(Kind, Vec<u8>) -> T + Sync,
    mut each: impl FnMut(&ObjectId, T) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    // Handles are per thread: each thread clones this one.
    let template = Mutex::new(objects.clone());
    let handle = || match template.lock() {
        Ok(o) => o.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    for chunk in ids.chunks(READ_CHUNK) {
        // Past the timeout (the caller reports it): stop reading.
        if std::time::Instant::now() >= stop_at {
            return Err(git_err("stopped at the timeout".into()));
        }
        let read: Vec<Result<T, String>> = chunk
            .par_iter()
            .map_init(
                || (handle(), Vec::new()),
                |(objects, buf), id| {
                    let data = objects
                        .read(id, buf)?
                        .ok_or_else(|| format!("pushed object {id} is missing"))?;
                    let kind = kind_of(data.kind);
                    Ok(map(kind, data.data.to_vec()))
                },
            )
            .collect();
        for (id, r) in chunk.iter().zip(read) {
            let t = r.map_err(|e| git_err(format!("cannot read a pushed object: {e}")))?;
            each(id, t)?;
        }
    }
    Ok(())
}

fn kind_of(kind: gix_object::Kind) -> Kind {
    match kind {
        gix_object::Kind::Commit => Kind::Commit,
        gix_object::Kind::Tree => Kind::Tree,
        gix_object::Kind::Tag => Kind::Tag,
        gix_object::Kind::Blob => Kind::Blob,
    }
}

/// What reading one new object gave: a commit's, tree's or tag's bytes, or what a blob is
/// (blobs are looked at as they are read and not kept).
enum Got {
    Object(Kind, Vec<u8>),
    Blob(BlobRead),
}

/// What a new blob is.
struct BlobRead {
    size: u64,
    /// Why no rule can see into it (compressed, encrypted), if so.
    unreadable: Option<&'static str>,
    /// Whether it may hold a finding ([`Engine::may_find`]; asked only when the caller judges
    /// blobs, and not of blobs over the size limit nor of those kept).
    may_find: bool,
    /// Its bytes, kept unjudged to be judged by what changed from the blob its path had in
    /// the parent commit ([`JudgedBlobs::pending`]): blobs of [`change::MIN_DIFF_BYTES`] or
    /// more that rules can read, while the kept bytes stay under [`KEEP_BYTES`].
    kept: Option<Vec<u8>>,
}

/// The most bytes of new blobs kept unjudged for the history scan (see [`BlobRead::kept`]);
/// past it, blobs are judged whole as they are read.
const KEEP_BYTES: usize = 512 << 20;

/// Objects decoded and judged between the pack walk and the rayon pool at a time.
const WALK_QUEUE: usize = 64;

/// Reads every object of `ids` once: the packs that hold most of them walked in delta-tree
/// order ([`Objects::walk_packs`], with `walk`), the rest one by one (a header first, so
/// that a blob over the size limit is not read). Blobs are looked at on the rayon pool as
/// they come and only what they are is kept.
fn read_new_objects(
    objects: &Objects,
    ids: &[ObjectId],
    engine: &Engine,
    options: &ObjectScanOptions,
    how: &How,
    git_err: &dyn Fn(String) -> ScanError,
) -> Result<(IdMap<Got>, u64), ScanError> {
    let How {
        judge,
        by_change,
        walk,
        stop_at,
    } = *how;
    let kept_bytes = AtomicUsize::new(0);
    let look = |kind: Kind, data: Vec<u8>| -> Got {
        if kind != Kind::Blob {
            return Got::Object(kind, data);
        }
        let size = data.len() as u64;
        if size > options.max_blob_size {
            return Got::Blob(BlobRead {
                size,
                unreadable: None,
                may_find: false,
                kept: None,
            });
        }
        let unreadable = unreadable_kind(&data);
        // Kept to be judged by what changed, when it may be worth it and memory allows.
        if by_change
            && unreadable.is_none()
            && data.len() >= change::MIN_DIFF_BYTES
            && kept_bytes.fetch_add(data.len(), Ordering::Relaxed) + data.len() <= KEEP_BYTES
        {
            return Got::Blob(BlobRead {
                size,
                unreadable,
                may_find: false,
                kept: Some(data),
            });
        }
        Got::Blob(BlobRead {
            size,
            unreadable,
            may_find: judge && engine.may_find(&data),
            kept: None,
        })
    };
    let mut got: IdMap<Got> = IdMap::default();
    got.reserve(ids.len());
    if walk {
        let wanted: IdSet = ids.iter().copied().collect();
        let stop = AtomicBool::new(false);
        // An object this large fails the walk: read one by one, a header says so first.
        let limit = usize::try_from(options.max_blob_size.max(MIN_WALK_LIMIT))
            .ok()
            .filter(|&n| n <= MAX_WALK_LIMIT);
        // What the walk decoded, or, for a blob over the size limit, what it is (not copied).
        let (tx, rx) = mpsc::sync_channel::<(ObjectId, Result<(Kind, Vec<u8>), Got>)>(WALK_QUEUE);
        let (walked, read) = std::thread::scope(|s| {
            let looker = s.spawn(|| {
                rx.into_iter()
                    .par_bridge()
                    .map(|(id, read)| (id, read.map_or_else(|got| got, |(k, d)| look(k, d))))
                    .collect::<Vec<_>>()
            });
            let stop = &stop;
            let walked = objects.walk_packs(&wanted, limit, stop, move |id, kind, data| {
                if std::time::Instant::now() >= stop_at {
                    stop.store(true, Ordering::Relaxed);
                    return Err("stopped at the timeout".into());
                }
                let kind = kind_of(kind);
                let size = data.len() as u64;
                let read = if kind == Kind::Blob && size > options.max_blob_size {
                    Err(Got::Blob(BlobRead {
                        size,
                        unreadable: None,
                        may_find: false,
                        kept: None,
                    }))
                } else {
                    Ok((kind, data.to_vec()))
                };
                tx.send((id.to_owned(), read))
                    .map_err(|_| "the blob judging stopped".to_string())
            });
            (walked, looker.join())
        });
        let read =
            read.map_err(|_| git_err("judging the pushed blobs stopped unexpectedly".into()))?;
        match walked {
            Ok(_) => got.extend(read),
            Err(WalkError::Stopped) => return Err(git_err("stopped at the timeout".into())),
            // Read one by one below (what the walk read is read again).
            Err(WalkError::Failed(why)) => {
                tracing::debug!("reading the new objects one by one: {why}");
            }
        }
    }

    let walked = got.len() as u64;
    // What no walked pack holds: kinds and sizes first, then the objects small enough.
    let mut to_read: Vec<&ObjectId> = Vec::new();
    for id in ids {
        if got.contains_key(id) {
            continue;
        }
        let header = objects
            .header(id)
            .map_err(git_err)?
            .ok_or_else(|| git_err(format!("pushed object {id} is missing")))?;
        if header.kind == gix_object::Kind::Blob && header.size > options.max_blob_size {
            got.insert(
                *id,
                Got::Blob(BlobRead {
                    size: header.size,
                    unreadable: None,
                    may_find: false,
                    kept: None,
                }),
            );
        } else {
            to_read.push(id);
        }
    }
    read_objects(objects, &to_read, stop_at, git_err, look, |id, g| {
        got.insert(*id, g);
        Ok(())
    })?;
    Ok((got, walked))
}

/// The pack walk decodes objects up to at least this size (the size limit of blobs, when it
/// is larger): a larger object stops it, and the objects are read one by one.
const MIN_WALK_LIMIT: u64 = 64 << 20;
/// Above this the walk has no limit of its own (the size limit is then "no limit").
const MAX_WALK_LIMIT: usize = 1 << 40;
