//! Atomic file writes: a reader sees the old content or the new, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `data` to `path` atomically with mode 0600.
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    atomic_write_mode(path, data, 0o600)
}

/// Writes `data` to `path` atomically: a temp file in the same directory, fsync, rename,
/// then fsync of the directory so the rename itself survives a crash. `mode` is subject to
/// the umask (`0o666` gives a file the mode any new file would get).
pub fn atomic_write_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    Staged::write(path, data, mode)?.replace()
}

/// Like [`atomic_write_mode`], but fails with `AlreadyExists` instead of replacing a file:
/// the complete temp file is hard-linked into place, which the kernel refuses when the name
/// exists. Two writers racing for the same name: exactly one wins.
pub fn atomic_write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    Staged::write(path, data, mode)?.create_new()
}

/// Writes `data` to `path` atomically for readers (temp file, rename) but not durably: no
/// fsync. Only for files rebuilt from durable inputs before every use (a bottle's sidecar
/// config, the CA copies handed to the bottle, run markers), whose loss in a machine crash
/// costs nothing: the next `start` or `resume` writes them again. Each fsync saved is a wait
/// for the disk on `start`'s path, up to tens of milliseconds on a busy disk.
pub fn atomic_write_unsynced(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut staged = Staged::create(path, mode)?;
    if let Some(mut file) = staged.file.take() {
        file.write_all(data)?;
    }
    fs::rename(&staged.tmp, path)?;
    staged.done = true;
    Ok(())
}

/// Files and directories written for readers now and made durable later, all at once: the
/// launcher's state of a new bottle (metadata, live routes, the agent's home), which must be on
/// disk before the agent runs but not before the sidecar bundle starts reading it. Each
/// [`PendingSync::write`] is atomic for readers at once (temp file, rename); only
/// [`PendingSync::sync`] (or the [`PendingSync::sync_in_background`] handle's
/// [`SyncHandle::wait`]) makes them durable, with one fsync per file and per directory issued
/// side by side, so that the file system commits them together (ext4 joins concurrent fsyncs
/// into one journal commit) instead of one commit after another.
///
/// Until the sync has returned, a machine crash may leave any of these names missing, empty or
/// whole (never a mix of two contents); afterwards they are as durable as [`atomic_write`]'s.
/// So a caller waits for the sync before anything may depend on them surviving a crash.
#[derive(Debug, Default)]
pub struct PendingSync {
    /// Files and directories to fsync, each once.
    entries: std::collections::BTreeSet<std::path::PathBuf>,
}

impl PendingSync {
    /// Nothing pending.
    pub fn new() -> PendingSync {
        PendingSync::default()
    }

    /// Writes `data` to `path` atomically for readers (as [`atomic_write_unsynced`]) and
    /// remembers the file and its directory for the sync.
    pub fn write(&mut self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        atomic_write_unsynced(path, data, mode)?;
        self.add(path);
        self.add(parent_or_cwd(path));
        Ok(())
    }

    /// Remembers a file or directory whose content or entries must become durable (a
    /// directory after a rename into it).
    pub fn add(&mut self, path: &Path) {
        self.entries.insert(path.to_path_buf());
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Fsyncs every file and directory, side by side (one thread each); the first error,
    /// naming its path. Nothing pending: returns at once.
    pub fn sync(self) -> io::Result<()> {
        let entries: Vec<_> = self.entries.into_iter().collect();
        let sync_one = |path: &Path| {
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        match entries.as_slice() {
            [] => Ok(()),
            [one] => sync_one(one),
            _ => std::thread::scope(|scope| {
                let syncs: Vec<_> = entries
                    .iter()
                    .map(|path| scope.spawn(move || sync_one(path)))
                    .collect();
                let mut first = Ok(());
                for sync in syncs {
                    let done = sync
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("an fsync thread panicked")));
                    if first.is_ok() {
                        first = done;
                    }
                }
                first
            }),
        }
    }

    /// Starts [`PendingSync::sync`] on a thread of its own; [`SyncHandle::wait`] returns its
    /// result. The caller goes on meanwhile (the launcher starts the sidecar bundle).
    pub fn sync_in_background(self) -> SyncHandle {
        if self.is_empty() {
            return SyncHandle { thread: None };
        }
        SyncHandle {
            thread: Some(std::thread::spawn(move || self.sync())),
        }
    }
}

/// A [`PendingSync`] under way on its own thread.
#[derive(Debug)]
pub struct SyncHandle {
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl SyncHandle {
    /// Waits until every pending file and directory is durable; the first error.
    pub fn wait(mut self) -> io::Result<()> {
        match self.thread.take() {
            None => Ok(()),
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the fsync thread panicked"))),
        }
    }
}

impl Drop for SyncHandle {
    /// Not waited for (the launch failed first): still finished before it is forgotten, so
    /// no fsync thread outlives its caller's cleanup of the same files.
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Moves `from` to `to` on the same file system, creating `to`'s directory, and makes the
/// move durable (fsync of `to`'s directory).
pub fn move_durably(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::rename(from, to)?;
    sync_dir(parent_or_cwd(to))
}

/// Makes the entries of `dir` durable (after renames into or out of it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_or_cwd(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A file written and synced under a temporary name beside its final `path`, not yet
/// visible there: the first half of an atomic write, so that the fsync of its content can
/// run while the caller does other durable work (the audit line a decision needs before
/// its response may appear), and only the second half, the rename or link and the
/// directory sync, waits for that work. Dropped without being put in place, the temp file
/// is removed.
#[derive(Debug)]
pub struct Staged {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    done: bool,
    /// Open while it is being written.
    file: Option<File>,
}

impl Staged {
    /// A new, empty temp file beside `path` with `mode`.
    fn create(path: &Path, mode: u32) -> io::Result<Staged> {
        let dir = parent_or_cwd(path);
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut staged = Staged {
            path: path.to_owned(),
            tmp: dir.join(tmp_name),
            done: false,
            file: None,
        };
        staged.file = Some(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&staged.tmp)
                .inspect_err(|_| staged.done = true)?,
        );
        Ok(staged)
    }

    /// Writes `data` to a new temp file beside `path` with `mode` and syncs it.
    pub fn write(path: &Path, data: &[u8], mode: u32) -> io::Result<Staged> {
        let mut staged = Staged::create(path, mode)?;
        if let Some(mut file) = staged.file.take() {
            file.write_all(data)?;
            file.sync_all()?;
        }
        Ok(staged)
    }

    /// Where the file will be once put in place.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temp file over `path` and syncs the directory (as [`atomic_write_mode`]).
    pub fn replace(self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.path)?;
        self.placed()
    }

    /// Renames the temp file over `path` without syncing the directory: the content is on
    /// disk (it was synced when staged), so after a crash `path` holds the new content whole
    /// or its old state, never a part; the rename itself becomes durable with the next sync
    /// of the directory. For a caller whose crash recovery does not need the name (the
    /// supervise engine's outcome, re-derived from the durable response).
    pub fn replace_leaving_dir_unsynced(mut self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.path)?;
        self.done = true;
        Ok(())
    }

    /// Links the temp file to `path`, failing with `AlreadyExists` when the name exists (as
    /// [`atomic_write_new`]), and syncs the directory.
    pub fn create_new(self) -> io::Result<()> {
        let linked = fs::hard_link(&self.tmp, &self.path);
        let _ = fs::remove_file(&self.tmp);
        linked?;
        self.placed()
    }

    /// The temp file has been put in place (or linked and removed): sync the directory.
    fn placed(mut self) -> io::Result<()> {
        self.done = true;
        sync_dir(parent_or_cwd(&self.path))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["metadata.json".to_string()]);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn write_new_refuses_to_replace_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        atomic_write_new(&p, b"one", 0o666).unwrap();
        let err = atomic_write_new(&p, b"two", 0o666).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        atomic_write_mode(&p, b"three", 0o666).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["a.json".to_owned()]);
    }

    #[test]
    fn a_staged_file_appears_only_when_placed_and_leaves_nothing_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let names = || -> Vec<String> {
            let mut v: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        let p = dir.path().join("a.json");
        let staged = Staged::write(&p, b"one", 0o600).unwrap();
        assert!(!p.exists(), "visible before it was placed");
        assert_eq!(staged.path(), p);
        drop(staged);
        assert_eq!(names(), Vec::<String>::new());

        Staged::write(&p, b"one", 0o600).unwrap().replace().unwrap();
        Staged::write(&p, b"two", 0o600).unwrap().replace().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let err = Staged::write(&p, b"three", 0o600)
            .unwrap()
            .create_new()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(names(), vec!["a.json".to_owned()]);
    }

    #[test]
    fn a_staged_file_put_in_place_without_a_directory_sync_appears_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.outcome.json");
        Staged::write(&p, b"one", 0o600)
            .unwrap()
            .replace_leaving_dir_unsynced()
            .unwrap();
        Staged::write(&p, b"two", 0o600)
            .unwrap()
            .replace_leaving_dir_unsynced()
            .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["a.outcome.json".to_owned()]);
    }

    #[test]
    fn an_unsynced_write_replaces_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sidecar.json");
        atomic_write_unsynced(&p, b"one", 0o600).unwrap();
        atomic_write_unsynced(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["sidecar.json".to_owned()]);
        let missing = dir.path().join("nope/file");
        assert_eq!(
            atomic_write_unsynced(&missing, b"x", 0o600)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn pending_writes_are_visible_at_once_and_synced_together() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        let mut pending = PendingSync::new();
        assert!(pending.is_empty());
        pending
            .write(&dir.path().join("metadata.json"), b"one", 0o600)
            .unwrap();
        pending
            .write(&dir.path().join("home/.gitconfig"), b"two", 0o644)
            .unwrap();
        pending.add(dir.path());
        // Readers see the whole files before the sync.
        assert_eq!(fs::read(dir.path().join("metadata.json")).unwrap(), b"one");
        assert_eq!(
            fs::read(dir.path().join("home/.gitconfig")).unwrap(),
            b"two"
        );
        let mode = fs::metadata(dir.path().join("home/.gitconfig"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode & !0o022, 0o644 & !0o022);
        // Two files, their two directories (one added twice): four fsyncs.
        assert_eq!(pending.entries.len(), 4);
        pending.sync_in_background().wait().unwrap();
        PendingSync::new().sync_in_background().wait().unwrap();
    }

    #[test]
    fn a_pending_sync_names_what_it_could_not_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut pending = PendingSync::new();
        pending.write(&dir.path().join("a"), b"a", 0o600).unwrap();
        let gone = dir.path().join("removed-before-the-sync");
        pending.add(&gone);
        let err = pending.sync().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("removed-before-the-sync"), "{err}");
    }

    #[test]
    fn move_durably_creates_the_target_directory() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a.json");
        let to = dir.path().join("processed/a.json");
        atomic_write(&from, b"one").unwrap();
        move_durably(&from, &to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), b"one");
        assert!(!from.exists());
    }

    #[test]
    fn missing_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = atomic_write(&dir.path().join("nope/file"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
