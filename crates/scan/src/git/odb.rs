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

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use gix_hash::{ObjectId, oid};
use gix_object::{Data, Exists, Find, FindHeader};

use super::GitScanRequest;
use super::process::git_command;

/// Bytes of decoded pack entries kept per thread (delta bases: small edits to large files are
/// chains of deltas on the same base).
const PACK_CACHE_BYTES: usize = 16 << 20;

/// The object directories of a repository, opened for reading; cheap to clone, one clone per
/// thread (each has its own pack cache).
#[derive(Clone)]
pub(crate) struct Objects {
    stores: Vec<gix_odb::HandleArc>,
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
        for d in dirs {
            stores.push(open_store(&d)?);
        }
        Ok(Self { stores })
    }

    /// Reads an object into `buf`: `None` if no directory has it.
    pub(crate) fn read<'a>(
        &self,
        id: &oid,
        buf: &'a mut Vec<u8>,
    ) -> Result<Option<Data<'a>>, String> {
        let store = self.holder(id);
        store
            .try_find(id, buf)
            .map_err(|e| format!("cannot read object {id}: {e}"))
    }

    /// An object's kind and size, without reading it: `None` if no directory has it.
    pub(crate) fn header(&self, id: &oid) -> Result<Option<gix_object::Header>, String> {
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
        self.holder(id).try_find(id, buffer)
    }
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
