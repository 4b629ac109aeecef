//! The repository's object database, read in process with gitoxide (`gix-odb`).
//!
//! Reading blobs and trees through `git cat-file --batch` and `git log --raw` cost a copy
//! through a pipe per object, a process per reader and, for the listing, a tree diff printed
//! as text and parsed back. Here the packs and loose objects are read where they are, by as
//! many threads as the rayon pool has, each with its own handle and pack cache.
//!
//! Where the objects are is git's answer, not ours: `git rev-parse --git-path objects` (which
//! honours `GIT_OBJECT_DIRECTORY`, the receive quarantine's), plus the directories of
//! `GIT_ALTERNATE_OBJECT_DIRECTORIES` (the quarantine's way to see the repository's own
//! objects) and, for each directory, its `info/alternates` (read by `gix-odb`). The
//! environment is the request's first, then this process's (the gate's pre-receive hook runs
//! the scan in process, where git set both variables).
//!
//! A push arrives as a pack (`git index-pack` wrote it and its index into the quarantine),
//! most of whose objects are deltas, in chains up to 50 long. Read one by one, each object
//! inflates its chain again (the per-thread cache keeps some bases, not the chain), so reading
//! a pushed pack cost several inflations per object. [`Objects::walk_packs`] reads such a pack
//! the way `git index-pack` resolves it: in delta-tree order, each delta applied once to its
//! base, decoded just before (`gix-pack`'s pack traversal, on as many threads as the rayon
//! pool has: a thread takes a base and its deltas, an idle one steals deltas from the others);
//! what no walked pack holds is read one by one. Objects decoded that way can be handed back
//! ([`Objects::with_decoded`]) so that a later reader of the same scan (the tree diffs) does
//! not inflate them again.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gix_hash::{ObjectId, oid};
use gix_object::{Data, Exists, Find, FindHeader};

use super::GitScanRequest;
use super::loose::LooseDir;
use super::process::git_command;

/// Bytes of decoded pack entries kept per thread (delta bases: small edits to large files are
/// chains of deltas on the same base).
const PACK_CACHE_BYTES: usize = 16 << 20;

/// A map keyed by object ids. The hasher is seeded per process (foldhash), not the id's first
/// bytes taken as they are: ids are hashes of what the pusher chose, so a push could be made
/// of objects whose ids all fall in one bucket of an unseeded table.
pub(crate) type IdMap<V> = foldhash::HashMap<ObjectId, V>;
/// A set of object ids (see [`IdMap`]).
pub(crate) type IdSet = foldhash::HashSet<ObjectId>;

/// Objects already decoded in this scan: their kind and bytes, by id.
pub(crate) type Decoded = IdMap<(gix_object::Kind, Vec<u8>)>;

/// Why [`Objects::walk_packs`] did not hand over every object of the packs it chose.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// `stop` was set (the scan's time is up).
    Stopped,
    /// A pack could not be walked (unreadable, or an object larger than the limit): the
    /// objects are for [`Objects::read`], which reads them one by one.
    Failed(String),
}

/// The object directories of a repository, opened for reading; cheap to clone, one clone per
/// thread (each has its own pack cache).
#[derive(Clone)]
pub(crate) struct Objects {
    stores: Vec<gix_odb::HandleArc>,
    /// The leading directories that have no packs, opened to read their loose objects from
    /// before `stores` (see [`super::loose`]); empty when the first directory has packs.
    loose: Arc<[LooseDir]>,
    /// The directories, in the order of `stores` (their packs are what a walk reads).
    dirs: Vec<PathBuf>,
    /// Objects decoded earlier in this scan, read before the stores.
    decoded: Option<Arc<Decoded>>,
}

impl Objects {
    /// Opens the object database of the request's repository. The error is a sentence for
    /// [`crate::ScanError::Git`].
    pub(crate) fn open(req: &GitScanRequest) -> Result<Self, String> {
        let mut cmd = git_command(req, "rev-parse");
        cmd.args(["--git-path", "objects"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run git: {e}; is git installed?"))?;
        if !out.status.success() {
            return Err(super::process::git_stderr_message(&out.stderr, out.status));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(text.trim_end_matches(['\n', '\r']));
        // `--git-path` is relative to the directory git ran in.
        let dir = if dir.is_absolute() {
            dir
        } else {
            req.repo.join(dir)
        };
        let mut dirs = vec![dir];
        let alternates = env_value(req, "GIT_ALTERNATE_OBJECT_DIRECTORIES");
        if let Some(list) = alternates {
            dirs.extend(
                split_alternates(&list)
                    .into_iter()
                    .map(|d| if d.is_absolute() { d } else { req.repo.join(d) }),
            );
        }
        let mut stores = Vec::with_capacity(dirs.len());
        for d in &dirs {
            stores.push(open_store(d)?);
        }
        let loose = dirs.iter().map_while(|d| LooseDir::open(d)).collect();
        Ok(Self {
            stores,
            loose,
            dirs,
            decoded: None,
        })
    }

    /// These objects, with `decoded` read from memory instead of the object directories.
    pub(crate) fn with_decoded(mut self, decoded: Arc<Decoded>) -> Self {
        self.decoded = Some(decoded);
        self
    }

    /// Hands each object of `wanted` that the walked packs hold to `each`, once, decoded;
    /// returns those objects. A pack is walked when at least half of its objects are wanted
    /// (a received push's pack: all of it but the bases `index-pack --fix-thin` appended), in
    /// delta-tree order: each delta is applied once to its base, decoded just before, as `git
    /// index-pack` resolves a pack. Objects larger than `max_object_bytes` fail the walk (the
    /// caller reads those one by one, where a header says how large an object is before it is
    /// read). `each` runs on the walking threads (a clone of it on each); its error stops the
    /// walk.
    pub(crate) fn walk_packs<F>(
        &self,
        wanted: &IdSet,
        max_object_bytes: Option<usize>,
        stop: &AtomicBool,
        each: F,
    ) -> Result<IdSet, WalkError>
    where
        F: FnMut(&oid, gix_object::Kind, &[u8]) -> Result<(), String> + Send + Clone,
    {
        let mut walked = IdSet::default();
        for dir in &self.dirs {
            for idx in pack_indexes(dir) {
                let bundle = open_pack(&idx)?;
                let here: IdSet = wanted
                    .iter()
                    .filter(|id| !walked.contains(*id) && bundle.index.lookup(*id).is_some())
                    .copied()
                    .collect();
                let in_pack = bundle.index.num_objects() as usize;
                if here.is_empty() || here.len() * 2 < in_pack {
                    continue;
                }
                let mut each = each.clone();
                let here_ref = &here;
                walk_pack(
                    &bundle,
                    &idx,
                    max_object_bytes,
                    stop,
                    move |id: &oid, kind, data: &[u8]| {
                        if here_ref.contains(id) {
                            each(id, kind, data)?;
                        }
                        Ok(())
                    },
                )?;
                walked.extend(here);
            }
        }
        Ok(walked)
    }

    /// Hands every object of every pack that `choose` picks (given its number of objects, of
    /// commits stored whole in it, and its index) to `each`, decoded, in delta-tree order as
    /// [`Objects::walk_packs`] does; an object that more than one walked pack holds is
    /// handed over once per pack. Returns how many objects were handed over. The history
    /// scan judges every blob of the repository's packs this way before it knows which of
    /// them its commits bring in.
    pub(crate) fn walk_whole_packs<C, F>(
        &self,
        choose: C,
        stop: &AtomicBool,
        each: F,
    ) -> Result<u64, WalkError>
    where
        C: Fn(usize, usize, &gix_pack::index::File) -> bool,
        F: FnMut(&oid, gix_object::Kind, &[u8]) -> Result<(), String> + Send + Clone,
    {
        let mut walked = 0u64;
        for dir in &self.dirs {
            for idx in pack_indexes(dir) {
                let bundle = open_pack(&idx)?;
                let in_pack = bundle.index.num_objects() as usize;
                // Commits stored whole (git does not make deltas of commits, as a rule):
                // read from the entries' headers, nothing inflated.
                let commits = bundle
                    .index
                    .iter()
                    .filter(|e| {
                        bundle.pack.entry(e.pack_offset).is_ok_and(|entry| {
                            matches!(entry.header, gix_pack::data::entry::Header::Commit)
                        })
                    })
                    .count();
                if in_pack == 0 || !choose(in_pack, commits, &bundle.index) {
                    continue;
                }
                walk_pack(&bundle, &idx, None, stop, each.clone())?;
                walked += in_pack as u64;
            }
        }
        Ok(walked)
    }

    /// An object decoded earlier in this scan ([`Objects::with_decoded`]), borrowed.
    pub(crate) fn decoded(&self, id: &oid) -> Option<(gix_object::Kind, &[u8])> {
        self.decoded
            .as_ref()
            .and_then(|d| d.get(id))
            .map(|(kind, data)| (*kind, data.as_slice()))
    }

    /// Reads an object into `buf`: `None` if no directory has it.
    pub(crate) fn read<'a>(
        &self,
        id: &oid,
        buf: &'a mut Vec<u8>,
    ) -> Result<Option<Data<'a>>, String> {
        if let Some(kind) = self.read_here(id, buf) {
            return Ok(Some(Data::new(buf, kind, id.kind())));
        }
        let store = self.holder(id);
        store
            .try_find(id, buf)
            .map_err(|e| format!("cannot read object {id}: {e}"))
    }

    /// Reads `id` into `buf` from what is read before the stores: the objects decoded earlier
    /// in this scan, then the loose objects of the leading directories without packs (the
    /// first that has it: what `gix-odb` would read there, faster; a directory with packs
    /// ends the search, as it may hold the object packed and the stores look there in their
    /// order). `None` leaves it to the stores.
    fn read_here(&self, id: &oid, buf: &mut Vec<u8>) -> Option<gix_object::Kind> {
        if let Some((kind, data)) = self.decoded.as_ref().and_then(|d| d.get(id)) {
            buf.clear();
            buf.extend_from_slice(data);
            return Some(*kind);
        }
        self.loose.iter().find_map(|dir| dir.read(id, buf))
    }

    /// An object's kind and size, without reading it: `None` if no directory has it.
    pub(crate) fn header(&self, id: &oid) -> Result<Option<gix_object::Header>, String> {
        if let Some((kind, data)) = self.decoded.as_ref().and_then(|d| d.get(id)) {
            return Ok(Some(gix_object::Header {
                kind: *kind,
                size: data.len() as u64,
            }));
        }
        if let Some(header) = self.loose.iter().find_map(|dir| dir.header(id)) {
            return Ok(Some(header));
        }
        self.holder(id)
            .try_header(id)
            .map_err(|e| format!("cannot read object {id}: {e}"))
    }

    /// The tree a commit points at.
    pub(crate) fn commit_tree(&self, id: &oid, buf: &mut Vec<u8>) -> Result<ObjectId, String> {
        match self.read(id, buf)? {
            Some(d) if d.kind == gix_object::Kind::Commit => {
                gix_object::CommitRefIter::from_bytes(d.data, d.object_hash)
                    .tree_id()
                    .map_err(|e| format!("cannot parse commit {id}: {e}"))
            }
            Some(d) => Err(format!("object {id} is a {}, not a commit", d.kind)),
            None => Err(format!("object {id} is missing")),
        }
    }

    /// The store that holds `id` (the first one when none does: its answer is "not found").
    fn holder(&self, id: &oid) -> &gix_odb::HandleArc {
        if self.stores.len() > 1 {
            for s in &self.stores {
                if s.exists(id) {
                    return s;
                }
            }
        }
        &self.stores[0]
    }
}

impl Find for Objects {
    fn try_find<'a>(
        &self,
        id: &oid,
        buffer: &'a mut Vec<u8>,
    ) -> gix_error::Result<Option<Data<'a>>> {
        if let Some(kind) = self.read_here(id, buffer) {
            return Ok(Some(Data::new(buffer, kind, id.kind())));
        }
        self.holder(id).try_find(id, buffer)
    }
}

fn open_pack(idx: &Path) -> Result<gix_pack::Bundle, WalkError> {
    gix_pack::Bundle::at(idx, gix_hash::Kind::Sha1)
        .map_err(|e| WalkError::Failed(format!("cannot open the pack {}: {e}", idx.display())))
}

/// Walks one pack in delta-tree order, handing each object to `each` on the walking threads.
fn walk_pack<F>(
    bundle: &gix_pack::Bundle,
    idx: &Path,
    max_object_bytes: Option<usize>,
    stop: &AtomicBool,
    mut each: F,
) -> Result<(), WalkError>
where
    F: FnMut(&oid, gix_object::Kind, &[u8]) -> Result<(), String> + Send + Clone,
{
    use gix_error::ErrorExt;
    use gix_pack::index::traverse::{SafetyCheck, with_index};

    let walk = bundle.index.traverse_with_index(
        &bundle.pack,
        move |kind, data, entry, _progress| {
            if stop.load(Ordering::Relaxed) {
                return Err(gix_error::cancelled("the scan was stopped").raise());
            }
            each(&entry.oid, kind, data).map_err(|e| gix_error::Message::from(e).raise())?;
            Ok(())
        },
        &mut gix_utils::progress::Discard,
        stop,
        with_index::Options {
            // As many walking threads as the rayon pool has (a thread takes
            // a base and its deltas; idle ones steal deltas of the others).
            thread_limit: Some(rayon::current_num_threads()),
            // index-pack checked the pack and computed every id as it wrote the
            // index; a pack of the repository's own was checked when it came in.
            check: SafetyCheck::SkipFileAndObjectChecksumVerification,
            alloc_limit_bytes: max_object_bytes,
        },
    );
    if let Err(e) = walk {
        if stop.load(Ordering::Relaxed) {
            return Err(WalkError::Stopped);
        }
        return Err(WalkError::Failed(format!(
            "cannot walk the pack {}: {e}",
            idx.display()
        )));
    }
    Ok(())
}

/// The pack indexes of an object directory, by name (none if it has no `pack` directory).
pub(super) fn pack_indexes(dir: &Path) -> Vec<PathBuf> {
    let Ok(list) = std::fs::read_dir(dir.join("pack")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = list
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    out.sort();
    out
}

fn open_store(dir: &Path) -> Result<gix_odb::HandleArc, String> {
    if !dir.is_dir() {
        return Err(format!("no object directory at {}", dir.display()));
    }
    let mut handle = gix_odb::at(dir, gix_hash::Kind::Sha1)
        .and_then(|h| h.into_arc())
        .map_err(|e| format!("cannot open the object directory {}: {e}", dir.display()))?;
    // An object one directory lacks is looked for in the next (a quarantine and its
    // alternates): a miss must not make the store re-read its directory each time. The
    // repository does not change while it is scanned.
    handle.refresh_never();
    handle.set_pack_cache(|| {
        Box::new(gix_pack::cache::lru::MemoryCappedHashmap::new(
            PACK_CACHE_BYTES,
        ))
    });
    Ok(handle)
}

/// A variable of the request's environment, else of this process's.
fn env_value(req: &GitScanRequest, name: &str) -> Option<OsString> {
    req.env
        .iter()
        .rev()
        .find(|(k, _)| k == OsStr::new(name))
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os(name))
        .filter(|v| !v.is_empty())
}

/// `GIT_ALTERNATE_OBJECT_DIRECTORIES`: `:`-separated; an entry in double quotes is C-quoted
/// (so it may hold a `:`).
fn split_alternates(list: &OsStr) -> Vec<PathBuf> {
    let text = list.to_string_lossy();
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            // Up to the closing quote that is not escaped.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end.unwrap_or(quoted.len());
            let raw = format!("\"{}\"", &quoted[..end]);
            out.push(PathBuf::from(super::parse::unquote(raw.as_bytes())));
            rest = quoted.get(end + 1..).unwrap_or("");
            rest = rest.strip_prefix(':').unwrap_or(rest);
            continue;
        }
        let (entry, tail) = rest.split_once(':').unwrap_or((rest, ""));
        if !entry.is_empty() {
            out.push(PathBuf::from(entry));
        }
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn alternates_split_on_colons_and_unquote_quoted_entries() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            split_alternates(OsStr::new("/a/objects:/b/objects")),
            vec![p("/a/objects"), p("/b/objects")]
        );
        assert_eq!(
            split_alternates(OsStr::new("\"/x:y/objects\":/z::")),
            vec![p("/x:y/objects"), p("/z")]
        );
        assert_eq!(
            split_alternates(OsStr::new("\"/q\\\"uote\"")),
            vec![p("/q\"uote")]
        );
        assert_eq!(split_alternates(OsStr::new("")), Vec::<PathBuf>::new());
    }
}
