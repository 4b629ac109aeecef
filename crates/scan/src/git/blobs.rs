//! The history scan that reads each blob once, in process.
//!
//! Producing the patch (`git log -p`) was most of the cost of a history scan, and a blob that
//! many commits carry (the same file at many paths, a file copied between branches) was
//! diffed and scanned once per commit. Here:
//!
//! 1. `git log --format='%H %T %P'` lists the range's commits with their trees and parents:
//!    git chooses the commits, so every revision argument `git log` takes means what it means
//!    there (ranges, `--all`, `--since`, `--not`, …), and its errors are git's. No diff is
//!    computed and no object read by git.
//! 2. Each commit's tree is diffed in process against its parents' (`gix-diff` over the object
//!    database opened by [`super::odb`]), on the rayon pool: the blob each changed path has in
//!    the commit (merges: the paths whose blob differs from every parent, as git's combined
//!    diff lists them; renames are not looked for, a renamed file's blob is named under its
//!    new path all the same).
//! 3. Each blob named there is read once, in process, and asked [`Engine::may_find`]: whether
//!    any rule could report something in it at some path. In a push's scan the object scan has
//!    judged the new blobs already, except the larger ones it kept: those are judged here
//!    where they differ from the blob their path had in the commit's first parent (see
//!    [`super::change`]), whole where the path is new.
//! 4. Only the commits that bring in such a blob (or name a path a path-only rule matches) are
//!    shown as patches, each against its own parents, in the order the listing gave
//!    (`git log -p --stdin --no-walk=unsorted`, the split scan's second process), and scanned
//!    as before; so findings, their lines, commits and fingerprints are exactly those of one
//!    `git log -p` over the range. That `git log -p` is kept on purpose: it is what decides
//!    which lines a commit adds (git's diff algorithm, rename detection, dense combined diffs
//!    of merges), and it runs only for the commits that hold a finding.
//!
//! Before step 2, the history scan of most of a repository ([`scan_git_history`]) walks the
//! packs that hold mostly the range's commits in delta-tree order ([`Objects::walk_whole_packs`]):
//! each blob is judged as it is decoded (step 3 done before step 2, each delta applied once to
//! its base instead of each blob inflating its chain) and each tree kept, so step 2 diffs trees
//! from memory and step 3 reads one by one only what no walked pack holds (loose objects).
//!
//! On a clean history step 4 shows nothing; on a history with findings it shows the commits
//! that introduce them. The one thing step 3 does not look for is a match the patch scan would
//! make across two added lines that are not next to each other in the file (the patch scan
//! joins a file's added lines); such a match is an artefact of the joining, not text of the
//! file. Revision arguments that are not only commit selectors (diff options such as `-w`)
//! keep the one `git log -p` (see [`super::process::splittable`]).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gix_diff::tree::recorder::Change;
use gix_hash::ObjectId;
use gix_object::TreeRefIter;
use rayon::prelude::*;

use super::change;
use super::odb::{Decoded, IdMap, IdSet, Objects, WalkError};
use super::parse::ParsePlan;
use super::process::{Watchdog, finish_log, git_stderr_message, log_command, read_log};
use super::{BATCH_BYTES, Children, GitScanRequest, git_command, scan_batches, spawn_child};
use crate::engine::Engine;
use crate::error::ScanError;
use crate::finding::Finding;
use crate::objects::JudgedBlobs;

/// A commit of the range, as the listing gives it.
pub(crate) struct RangeCommit {
    id: ObjectId,
    tree: ObjectId,
    parents: Vec<ObjectId>,
}

/// A path a commit brings in: the path, its blob, and the blob it had in the first parent
/// (when it was a file there and is one now).
type Brought = (String, ObjectId, Option<ObjectId>);

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
    /// Distinct blobs read here one by one (each once; blobs the object scan of a push read,
    /// or the walk of the packs judged, are not read again).
    pub blobs: u64,
    /// Commits shown as patches because they bring in a blob that may hold a finding.
    pub patched: u64,
    /// Distinct blobs the range's commits bring in that may hold a finding.
    pub flagged: u64,
    /// Objects decoded by walking the repository's packs in delta-tree order before the
    /// trees were diffed (each blob judged as it was decoded, each tree kept for the diffs).
    pub walked: u64,
}

/// The time a scan may take, for the work done in process (the git processes are stopped by
/// the [`Watchdog`]).
struct Deadline {
    start: Instant,
    limit: Duration,
    passed: AtomicBool,
}

impl Deadline {
    fn new(limit: Duration) -> Self {
        Self {
            start: Instant::now(),
            limit,
            passed: AtomicBool::new(false),
        }
    }

    /// Whether the time is up (remembered, so that every thread stops).
    fn passed(&self) -> bool {
        if self.passed.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.start.elapsed() >= self.limit;
        if now {
            self.passed.store(true, Ordering::Relaxed);
        }
        now
    }
}

/// The range's commits, trees and parents (step 1 of the module doc), listed ahead of
/// [`scan_git_blobs`]: a push's scan lists them while its object scan reads the objects.
pub(crate) struct ListedRange(Vec<RangeCommit>);

/// Lists the range's commits (`git log --format='%H %T %P'`, stopped at `timeout`) for
/// [`scan_git_blobs`].
pub(crate) fn list_git_range(
    req: &GitScanRequest,
    timeout: Duration,
) -> Result<ListedRange, ScanError> {
    let git_err = |message: String| ScanError::Git {
        repo: req.repo.clone(),
        range: req.describe(),
        message,
    };
    let children: Children = std::sync::Arc::default();
    let watchdog = Watchdog::start(&children, timeout);
    let result = list_range(req, &children, &git_err);
    if watchdog.finish() {
        return Err(git_err(format!(
            "git log did not finish within {} s and was stopped",
            timeout.as_secs()
        )));
    }
    result.map(ListedRange)
}

/// Scans the range by reading each blob once (see the module doc). Blobs in `known` were read
/// and judged already (by the object scan of the same push) and are not read again; `listed`
/// is the range listed ahead ([`list_git_range`] over the same request), if it was.
pub(crate) fn scan_git_blobs(
    engine: &Engine,
    req: &GitScanRequest,
    timeout: Duration,
    known: Option<&JudgedBlobs>,
    listed: Option<ListedRange>,
) -> Result<(Vec<Finding>, GitScanCounts), ScanError> {
    let git_err = |message: String| ScanError::Git {
        repo: req.repo.clone(),
        range: req.describe(),
        message,
    };
    let children: Children = std::sync::Arc::default();
    let deadline = Deadline::new(timeout);
    let watchdog = Watchdog::start(&children, timeout);
    let result = run(engine, req, &children, &git_err, known, listed, &deadline);
    if watchdog.finish() || deadline.passed() {
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
    listed: Option<ListedRange>,
    deadline: &Deadline,
) -> Result<(Vec<Finding>, GitScanCounts), ScanError> {
    // 1. The commits, as git chooses them (its errors first: they name the range).
    let range = match listed {
        Some(ListedRange(range)) => range,
        None => list_range(req, children, git_err)?,
    };
    if deadline.passed() {
        return Ok((Vec::new(), GitScanCounts::default()));
    }
    // Handles are per thread (each has its own caches): every thread clones this one (the
    // object scan's of the same push, when there was one).
    let mut objects = match known.and_then(|k| k.objects.clone()) {
        Some(objects) => objects,
        None => Objects::open(req).map_err(git_err)?,
    };
    // The new trees the object scan of the same push decoded are not read again.
    if let Some(trees) = known.and_then(|k| k.trees.clone()) {
        objects = objects.with_decoded(trees);
    }
    let objects = std::sync::Mutex::new(objects);
    let handle = || match objects.lock() {
        Ok(o) => o.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };

    // 2. What each commit brings in, by tree diffs in process.
    let trees: IdMap<ObjectId> = range.iter().map(|c| (c.id, c.tree)).collect();
    let changed: Vec<Result<Vec<Brought>, String>> = range
        .par_iter()
        .map_init(
            || DiffState::new(handle()),
            |st, c| {
                if deadline.passed() || engine.skips_commit(&c.id.to_string()) {
                    return Ok(Vec::new());
                }
                st.brought_in(c, &trees)
            },
        )
        .collect();

    // Each blob gets an index the first time it is named, in the listing's order.
    let mut index: IdMap<usize> = IdMap::default();
    let mut to_read: Vec<(usize, ObjectId)> = Vec::new();
    let mut known_flagged: Vec<usize> = Vec::new();
    // Blobs the object scan kept unjudged: each with the blobs its path had in the parents of
    // the commits that bring it in (`None`: a path new there).
    let mut by_change: Vec<(usize, ObjectId, Vec<Option<ObjectId>>)> = Vec::new();
    let mut change_at: HashMap<usize, usize> = HashMap::new();
    let mut commits: Vec<ListedCommit> = Vec::with_capacity(range.len());
    for (c, paths) in range.iter().zip(changed) {
        let paths = paths.map_err(|e| git_err(format!("reading the range's objects: {e}")))?;
        let mut listed = ListedCommit {
            id: c.id.to_string(),
            ..ListedCommit::default()
        };
        for (path, blob, before) in paths {
            if engine.skips_path(&path) {
                continue;
            }
            if engine.path_rule_matches(&path) {
                listed.path_hit = true;
            }
            let next = index.len();
            let i = *index.entry(blob).or_insert(next);
            if i == next {
                match known {
                    Some(k) if k.known.contains(&blob) => {
                        if k.flagged.contains(&blob) {
                            known_flagged.push(i);
                        } else if k.pending.contains_key(&blob) {
                            change_at.insert(i, by_change.len());
                            by_change.push((i, blob, Vec::new()));
                        }
                    }
                    _ => to_read.push((i, blob)),
                }
            }
            // Every place that brings in a kept blob: it is judged against each parent blob.
            if let Some(&at) = change_at.get(&i) {
                let befores = &mut by_change[at].2;
                if !befores.contains(&before) {
                    befores.push(before);
                }
            }
            listed.blobs.push(i);
        }
        commits.push(listed);
    }
    if deadline.passed() {
        return Ok((Vec::new(), GitScanCounts::default()));
    }

    // 3. Each blob read once and judged whole.
    let judged: Vec<Result<Option<usize>, String>> = to_read
        .par_iter()
        .map_init(
            || (handle(), Vec::new()),
            |(objects, buf), &(i, blob)| {
                if deadline.passed() {
                    return Ok(None);
                }
                match objects.read(&blob, buf)? {
                    Some(d) if d.kind == gix_object::Kind::Blob => {
                        Ok(engine.may_find(d.data).then_some(i))
                    }
                    Some(d) => Err(format!("object {blob} is a {}, not a blob", d.kind)),
                    None => Err(format!("object {blob} is missing")),
                }
            },
        )
        .collect();
    // 3b. The kept blobs judged where they differ from the blob their path had in the parent
    // (`change`), whole where the path is new.
    let pending = known.map(|k| &k.pending);
    let judged_by_change: Vec<Result<Option<usize>, String>> = by_change
        .par_iter()
        .map_init(
            || (handle(), Vec::new()),
            |(objects, buf), (i, blob, befores)| {
                if deadline.passed() {
                    return Ok(None);
                }
                let Some(new) = pending.and_then(|p| p.get(blob)) else {
                    return Ok(Some(*i));
                };
                for before in befores {
                    let hit = match before {
                        None => engine.may_find(new),
                        Some(old) => match pending.and_then(|p| p.get(old)) {
                            Some(old) => change::may_find_change(engine, old, new),
                            // Not kept (small, or an old blob the upstream has): read it;
                            // unreadable, the new blob is judged whole.
                            None => match objects.read(old, buf) {
                                Ok(Some(d)) if d.kind == gix_object::Kind::Blob => {
                                    change::may_find_change(engine, d.data, new)
                                }
                                _ => engine.may_find(new),
                            },
                        },
                    };
                    if hit {
                        return Ok(Some(*i));
                    }
                }
                Ok(None)
            },
        )
        .collect();
    let mut is_flagged = vec![false; index.len()];
    for j in judged.into_iter().chain(judged_by_change) {
        let j = j.map_err(|e| git_err(format!("cannot read a blob: {e}")))?;
        if let Some(f) = j.and_then(|i| is_flagged.get_mut(i)) {
            *f = true;
        }
    }
    for i in known_flagged {
        if let Some(f) = is_flagged.get_mut(i) {
            *f = true;
        }
    }
    let mut counts = GitScanCounts {
        commits: commits.len() as u64,
        blobs: to_read.len() as u64,
        patched: 0,
        flagged: is_flagged.iter().filter(|f| **f).count() as u64,
        walked: 0,
    };
    let ids: Vec<String> = commits
        .into_iter()
        .filter(|c| c.path_hit || c.blobs.iter().any(|&b| is_flagged[b]))
        .map(|c| c.id)
        .collect();
    counts.patched = ids.len() as u64;
    if ids.is_empty() || deadline.passed() {
        return Ok((Vec::new(), counts));
    }
    // 4. The commits that may hold findings, shown as `git log -p` shows them in the range.
    let child = spawn_child(log_command(req, true), children, git_err)?;
    let (proc, batches) = read_log(child, Some(ids), ParsePlan::whole(BATCH_BYTES), git_err)?;
    let findings = scan_batches(engine, batches);
    finish_log(proc, false, git_err)?;
    Ok((findings, counts))
}

/// A pack is walked whole by the history scan when at least half of the commits it holds are
/// commits of the range: a history scan of most of the repository (`HEAD`, `--all`) walks
/// its packs; a short range, `--first-parent` of a history of many merges, or a pack of other
/// branches' objects is not walked, and what the range brings in is read one by one
/// (walking judges every blob of the pack, also those the range does not bring in). A pack
/// without commits is walked when it holds at most this many objects per commit of the
/// range.
const WALK_OBJECTS_PER_COMMIT: usize = 64;

/// Decoded trees kept in memory for the tree diffs, at most (past it, trees are read from
/// the object database again when they are diffed).
const KEEP_TREE_BYTES: usize = 256 << 20;

/// The history scan of commit selectors: lists the range, then judges every blob of the
/// repository's packs in pack order ([`judge_packs`]: each delta applied once to its base,
/// each blob judged as it is decoded, each tree kept) before the commits' trees are diffed
/// ([`scan_git_blobs`], which then reads from memory, not from the packs, and reads one by
/// one only what no walked pack holds: loose objects, packs not walked).
pub(crate) fn scan_git_history(
    engine: &Engine,
    req: &GitScanRequest,
    timeout: Duration,
) -> Result<(Vec<Finding>, GitScanCounts), ScanError> {
    let git_err = |message: String| ScanError::Git {
        repo: req.repo.clone(),
        range: req.describe(),
        message,
    };
    let start = Instant::now();
    let (listed, objects) = std::thread::scope(|s| {
        let listing = s.spawn(|| list_git_range(req, timeout));
        let objects = Objects::open(req);
        (listing.join(), objects)
    });
    let listed = listed.map_err(|_| git_err("listing the range's commits failed".into()))??;
    let objects = objects.map_err(git_err)?;
    let stop_at = start + timeout;
    let judged = judge_packs(engine, objects, &listed.0, stop_at);
    let judged = match judged {
        Ok(j) => j,
        Err(WalkError::Stopped) => {
            return Err(git_err(format!(
                "reading the packs did not finish within {} s and was stopped",
                timeout.as_secs()
            )));
        }
        // Not walked: every blob the commits bring in is read one by one instead.
        Err(WalkError::Failed(_)) => None,
    };
    let rest = timeout.saturating_sub(start.elapsed());
    let walked = judged.as_ref().map_or(0, |(_, n)| *n);
    let judged = judged.map(|(j, _)| j);
    let (findings, mut counts) = scan_git_blobs(engine, req, rest, judged.as_ref(), Some(listed))?;
    counts.walked = walked;
    Ok((findings, counts))
}

/// Walks the packs at least half of whose commits are among the range's `commits` (see
/// [`WALK_OBJECTS_PER_COMMIT`]), judging each blob whole ([`Engine::may_find`]) and keeping
/// each tree (up to [`KEEP_TREE_BYTES`]); `None` when no pack is walked.
fn judge_packs(
    engine: &Engine,
    objects: Objects,
    commits: &[RangeCommit],
    stop_at: Instant,
) -> Result<Option<(JudgedBlobs, u64)>, WalkError> {
    #[derive(Default)]
    struct Walked {
        known: IdSet,
        flagged: IdSet,
        trees: Decoded,
        tree_bytes: usize,
    }
    let walked = std::sync::Mutex::new(Walked::default());
    let stop = AtomicBool::new(false);
    let choose = |in_pack: usize, pack_commits: usize, index: &gix_pack::index::File| {
        if pack_commits == 0 {
            return in_pack <= commits.len().saturating_mul(WALK_OBJECTS_PER_COMMIT);
        }
        let of_range = commits
            .iter()
            .filter(|c| index.lookup(c.id).is_some())
            .count();
        of_range.saturating_mul(2) >= pack_commits
    };
    let n = objects.walk_whole_packs(choose, &stop, |id, kind, data| {
        if Instant::now() >= stop_at {
            stop.store(true, Ordering::Relaxed);
            return Err("the scan's time is up".into());
        }
        match kind {
            gix_object::Kind::Blob => {
                let hit = engine.may_find(data);
                let mut w = walked.lock().map_err(|_| "a walking thread failed")?;
                w.known.insert(id.to_owned());
                if hit {
                    w.flagged.insert(id.to_owned());
                }
            }
            gix_object::Kind::Tree => {
                let mut w = walked.lock().map_err(|_| "a walking thread failed")?;
                if w.tree_bytes + data.len() <= KEEP_TREE_BYTES {
                    w.tree_bytes += data.len();
                    w.trees
                        .insert(id.to_owned(), (gix_object::Kind::Tree, data.to_vec()));
                }
            }
            _ => {}
        }
        Ok(())
    });
    let n = match n {
        Err(WalkError::Failed(_)) if stop.load(Ordering::Relaxed) => {
            return Err(WalkError::Stopped);
        }
        other => other?,
    };
    if n == 0 {
        return Ok(None);
    }
    let w = walked
        .into_inner()
        .map_err(|_| WalkError::Failed("a walking thread failed".into()))?;
    Ok(Some((
        JudgedBlobs {
            known: w.known,
            flagged: w.flagged,
            trees: Some(std::sync::Arc::new(w.trees)),
            pending: IdMap::default(),
            objects: Some(objects),
        },
        n,
    )))
}

/// The range's commits, trees and parents in `git log`'s order.
fn list_range(
    req: &GitScanRequest,
    children: &Children,
    git_err: &dyn Fn(String) -> ScanError,
) -> Result<Vec<RangeCommit>, ScanError> {
    let mut list = git_command(req, "log");
    list.args(["--no-color", "--format=%H %T %P"])
        .args(&req.rev_args)
        .arg("--")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let lister = spawn_child(list, children, git_err)?;
    let pipes = lister
        .lock()
        .map(|mut c| (c.stdout.take(), c.stderr.take()))
        .map_err(|_| git_err("lost track of the git process".into()))?;
    let (Some(out), Some(mut err)) = pipes else {
        return Err(git_err("cannot read git's output".into()));
    };
    let stderr = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = Vec::new();
        let _ = (&mut err).take(16 * 1024).read_to_end(&mut buf);
        let _ = std::io::copy(&mut err, &mut std::io::sink());
        buf
    });
    let mut commits = Vec::new();
    let mut bad: Option<String> = None;
    for line in BufReader::with_capacity(256 * 1024, out).split(b'\n') {
        let line = line.map_err(|e| git_err(format!("reading git output: {e}")))?;
        if line.is_empty() || bad.is_some() {
            continue;
        }
        match parse_listed(&line) {
            Some(c) => commits.push(c),
            None => bad = Some(String::from_utf8_lossy(&line).into_owned()),
        }
    }
    let status = lister
        .lock()
        .map_err(|_| git_err("lost track of the git process".into()))?
        .wait()
        .map_err(|e| git_err(format!("waiting for git: {e}")))?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(git_err(git_stderr_message(&stderr, status)));
    }
    if let Some(line) = bad {
        return Err(git_err(format!("unexpected line from git log: {line}")));
    }
    Ok(commits)
}

/// `<commit> <tree> [<parent>...]`, hex ids.
fn parse_listed(line: &[u8]) -> Option<RangeCommit> {
    let mut ids = line
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .map(ObjectId::from_hex);
    let id = ids.next()?.ok()?;
    let tree = ids.next()?.ok()?;
    let parents = ids.collect::<Result<Vec<_>, _>>().ok()?;
    Some(RangeCommit { id, tree, parents })
}

/// One thread's tools for tree diffs.
struct DiffState {
    objects: Objects,
    state: gix_diff::tree::State,
    recorder: gix_diff::tree::Recorder,
    tree: Vec<u8>,
    parent: Vec<u8>,
    commit: Vec<u8>,
    /// Where each entry of the two trees ends (reused by [`differing_entries`]).
    ends: (Vec<usize>, Vec<usize>),
}

impl DiffState {
    fn new(objects: Objects) -> Self {
        Self {
            objects,
            state: gix_diff::tree::State::default(),
            recorder: gix_diff::tree::Recorder::default(),
            tree: Vec::new(),
            parent: Vec::new(),
            commit: Vec::new(),
            ends: (Vec::new(), Vec::new()),
        }
    }

    /// The paths (with their blobs) whose content in `c` differs from every parent's: all of
    /// the tree's files for a root commit. Deleted paths and submodules name no blob. With
    /// each, the blob the path had in the first parent when both are files (not a symlink on
    /// either side): what a merge adds to every parent it adds to the first.
    fn brought_in(
        &mut self,
        c: &RangeCommit,
        trees: &IdMap<ObjectId>,
    ) -> Result<Vec<Brought>, String> {
        let tree = read_tree(&self.objects, &c.tree, &mut self.tree)?;
        // A root commit is diffed against the empty tree.
        let lhs_list: Vec<Option<ObjectId>> = if c.parents.is_empty() {
            vec![None]
        } else {
            c.parents.iter().copied().map(Some).collect()
        };
        let mut result: Option<Vec<Brought>> = None;
        for parent in lhs_list {
            let lhs: &[u8] = match parent {
                None => &[],
                Some(p) => {
                    let ptree = match trees.get(&p) {
                        Some(t) => *t,
                        None => self.objects.commit_tree(&p, &mut self.commit)?,
                    };
                    read_tree(&self.objects, &ptree, &mut self.parent)?
                }
            };
            self.recorder.records.clear();
            // The entries both trees hold alike at their start and end change nothing:
            // only what lies between is diffed (a commit that edits one file of a large
            // directory leaves all but one entry of it as they were).
            let (lhs, rhs) = differing_entries(lhs, tree, &mut self.ends);
            gix_diff::tree(
                TreeRefIter::from_bytes(lhs, gix_hash::Kind::Sha1),
                TreeRefIter::from_bytes(rhs, gix_hash::Kind::Sha1),
                &mut self.state,
                &self.objects,
                &mut self.recorder,
            )
            .map_err(|e| format!("cannot diff the trees of commit {}: {e}", c.id))?;
            let here = self.recorder.records.drain(..).filter_map(|ch| match ch {
                Change::Addition {
                    entry_mode,
                    oid,
                    path,
                    ..
                } if entry_mode.is_blob_or_symlink() => {
                    Some((String::from_utf8_lossy(&path).into_owned(), oid, None))
                }
                Change::Modification {
                    previous_entry_mode,
                    previous_oid,
                    entry_mode,
                    oid,
                    path,
                } if entry_mode.is_blob_or_symlink() => {
                    let before = (previous_entry_mode.is_blob() && entry_mode.is_blob())
                        .then_some(previous_oid);
                    Some((String::from_utf8_lossy(&path).into_owned(), oid, before))
                }
                _ => None,
            });
            match result.as_mut() {
                None => result = Some(here.collect()),
                Some(r) => {
                    // A merge: only the paths that differ from this parent too.
                    let differs: HashSet<(String, ObjectId)> =
                        here.map(|(path, oid, _)| (path, oid)).collect();
                    r.retain(|(path, oid, _)| differs.contains(&(path.clone(), *oid)));
                }
            }
            if result.as_ref().is_some_and(Vec::is_empty) {
                break;
            }
        }
        Ok(result.unwrap_or_default())
    }
}

/// Where each entry of a tree's bytes ends (`<mode> <name>\0<20-byte id>`); `None` if the
/// bytes are not a well-formed tree of SHA-1 ids.
fn entry_ends(tree: &[u8], ends: &mut Vec<usize>) -> Option<()> {
    ends.clear();
    let mut at = 0;
    while at < tree.len() {
        let nul = memchr::memchr(0, &tree[at..])?;
        let end = at + nul + 1 + 20;
        if end > tree.len() {
            return None;
        }
        ends.push(end);
        at = end;
    }
    Some(())
}

/// The parts of two trees' bytes between the entries they share at their start and at their
/// end: byte-equal entries (same mode, name and id) at the same place in both produce no
/// change in a tree diff, so diffing what is left gives the same changes. Both whole when
/// either is not a well-formed tree (the diff reports that).
fn differing_entries<'a>(
    lhs: &'a [u8],
    rhs: &'a [u8],
    ends: &mut (Vec<usize>, Vec<usize>),
) -> (&'a [u8], &'a [u8]) {
    let (le, re) = (&mut ends.0, &mut ends.1);
    if entry_ends(lhs, le).is_none() || entry_ends(rhs, re).is_none() {
        return (lhs, rhs);
    }
    let entry = |t: &'a [u8], e: &[usize], i: usize| {
        let start = if i == 0 { 0 } else { e[i - 1] };
        &t[start..e[i]]
    };
    let mut head = 0;
    while head < le.len() && head < re.len() && entry(lhs, le, head) == entry(rhs, re, head) {
        head += 1;
    }
    let mut tail = 0;
    while tail < le.len() - head
        && tail < re.len() - head
        && entry(lhs, le, le.len() - 1 - tail) == entry(rhs, re, re.len() - 1 - tail)
    {
        tail += 1;
    }
    let cut = |t: &'a [u8], e: &[usize]| {
        let start = if head == 0 { 0 } else { e[head - 1] };
        let end = if e.len() - tail == 0 {
            0
        } else {
            e[e.len() - tail - 1]
        };
        &t[start..end.max(start)]
    };
    (cut(lhs, le), cut(rhs, re))
}

/// Reads a tree's bytes into `buf` (the slice of it that is the tree).
/// A tree decoded earlier in the scan is borrowed where it is kept, not copied.
fn read_tree<'a>(
    objects: &'a Objects,
    id: &ObjectId,
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], String> {
    if *id == ObjectId::empty_tree(gix_hash::Kind::Sha1) {
        return Ok(&[]);
    }
    if let Some((kind, data)) = objects.decoded(id) {
        return match kind {
            gix_object::Kind::Tree => Ok(data),
            kind => Err(format!("object {id} is a {kind}, not a tree")),
        };
    }
    match objects.read(id, buf)? {
        Some(d) if d.kind == gix_object::Kind::Tree => Ok(d.data),
        Some(d) => Err(format!("object {id} is a {}, not a tree", d.kind)),
        None => Err(format!("object {id} is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn tree_bytes(entries: &[(&str, &str, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (mode, name, id) in entries {
            out.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            out.extend_from_slice(&[*id; 20]);
        }
        out
    }

    #[test]
    fn only_the_entries_between_the_shared_head_and_tail_are_diffed() {
        let mut ends = (Vec::new(), Vec::new());
        let old = tree_bytes(&[
            ("100644", "a", 1),
            ("100644", "b", 2),
            ("100644", "c", 3),
            ("40000", "d", 4),
        ]);
        let new = tree_bytes(&[
            ("100644", "a", 1),
            ("100644", "b", 9),
            ("100644", "bb", 7),
            ("100644", "c", 3),
            ("40000", "d", 4),
        ]);
        let (l, r) = differing_entries(&old, &new, &mut ends);
        assert_eq!(l, tree_bytes(&[("100644", "b", 2)]));
        assert_eq!(r, tree_bytes(&[("100644", "b", 9), ("100644", "bb", 7)]));
        // Equal trees: nothing left; a tree against the empty one: all of it.
        let (l, r) = differing_entries(&old, &old, &mut ends);
        assert_eq!((l, r), (&[][..], &[][..]));
        let (l, r) = differing_entries(&[], &new, &mut ends);
        assert_eq!((l, r), (&[][..], &new[..]));
        // An entry removed at the end, one added at the start.
        let shorter = tree_bytes(&[("100644", "a", 1), ("100644", "b", 2), ("100644", "c", 3)]);
        let (l, r) = differing_entries(&old, &shorter, &mut ends);
        assert_eq!((l, r), (&tree_bytes(&[("40000", "d", 4)])[..], &[][..]));
        let longer = tree_bytes(&[("100644", "0", 5), ("100644", "a", 1)]);
        let only_a = tree_bytes(&[("100644", "a", 1)]);
        let (l, r) = differing_entries(&only_a, &longer, &mut ends);
        assert_eq!((l, r), (&[][..], &tree_bytes(&[("100644", "0", 5)])[..]));
        // Bytes that are not a tree are left whole.
        let (l, r) = differing_entries(b"100644 a", &new, &mut ends);
        assert_eq!((l, r), (&b"100644 a"[..], &new[..]));
    }

    #[test]
    fn listed_lines_give_commit_tree_and_parents() {
        let (a, b, c, d) = (
            "a".repeat(40),
            "b".repeat(40),
            "c".repeat(40),
            "d".repeat(40),
        );
        let root = parse_listed(format!("{a} {b}").as_bytes()).unwrap();
        assert_eq!(
            (root.id.to_string(), root.tree.to_string()),
            (a.clone(), b.clone())
        );
        assert!(root.parents.is_empty());
        let merge = parse_listed(format!("{a} {b} {c} {d}").as_bytes()).unwrap();
        assert_eq!(
            merge
                .parents
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            vec![c.clone(), d]
        );
        assert!(parse_listed(b"commit abc").is_none());
        assert!(parse_listed(a.as_bytes()).is_none());
        assert!(parse_listed(format!("{a} {b} zz").as_bytes()).is_none());
    }
}
