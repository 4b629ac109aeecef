//! The trash: directories of ended bottles, removed after `start` has returned.
//!
//! Removing a directory tree costs one `unlink` per file, and on a file system mounted with
//! `discard` (as on the VMs this is developed on) every unlink that frees blocks waits for a
//! synchronous discard of them (~8 ms each on that virtual disk): removing an ended bottle's
//! state, queue and runtime directories was 21–117 ms of every `start`, after the agent had
//! exited. None of it is needed for the exit code or for what must be durable, so `start`
//! *moves* those directories here instead (one `rename` each, on the same file system: no
//! block is freed, nothing is discarded) and a detached process of the same executable
//! ([`EMPTY_TRASH_SUBCOMMAND`], started by [`Home::spawn_emptying_trash`]) removes them, one
//! thread per subtree so that the discards overlap, while the operator already has the prompt.
//!
//! Nothing is left behind for long: the remover holds `trash/.lock` while it works; a remover
//! that was killed leaves its entries, which the next `start` hands to a new remover
//! ([`Home::trash_needs_emptying`]) and `cleanup` removes itself ([`Home::empty_trash`]).
//! An entry is named after what it was (`<name>.<kind>.<pid>.<nanos>.<n>`), never after a live
//! identity: moved out of `state/`, a bottle is gone for `list`, `resume` and `cleanup`, and
//! a new bottle may take its identity at once. The trash is inside the home (mode 0700), so
//! what a moved state holds (the bottle's CA key, its copy of a forwarded login) is no more
//! exposed there than it was in `state/`.
//!
//! **Records.** What an ended bottle left outside the file system (the docker backend's
//! containers and networks) is a *record* in the trash ([`record_in_trash`]: a small file
//! `<identity>.<kind>.<pid>.<nanos>.<n>.record`), removed by the [`RecordRemover`] of its kind,
//! which the caller of [`Home::empty_trash`] passes (this crate knows no backend); the record
//! file goes only once its remover succeeded. A record of a kind nobody passed a remover for
//! stays (an error naming it): nothing it names is forgotten. While a record of an identity is
//! in the trash, no new bottle is given that identity ([`Home::trash_holds`]).
//!
//! **Failures are kept where they are seen.** Whoever empties the trash writes what it could
//! not remove (the path, the error, what to do) to `trash/.failures`, and removes that file
//! once everything went: the next `start`, `list` and `cleanup` show it
//! ([`Home::trash_failures`]), so a detached remover that fails is not silent.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Home;

/// The hidden subcommand of `bot-bottle` that empties a home's trash ([`empty_trash_main`]).
pub const EMPTY_TRASH_SUBCOMMAND: &str = "__empty-trash";

/// Held (exclusively) by whoever empties the trash.
const LOCK: &str = ".lock";

/// What the last emptying could not remove, one line per entry (absent when it removed all).
const FAILURES: &str = ".failures";

/// The suffix of a record's name ([`record_in_trash`]).
const RECORD: &str = ".record";

/// Removes what a record of one kind names outside the file system (the docker backend's
/// containers and networks of an ended bottle). `remove` gets the record's path; its error
/// (the objects, the cause and what to do) keeps the record for the next try.
#[derive(Clone, Copy)]
pub struct RecordRemover {
    /// The kind given to [`record_in_trash`] (`docker`).
    pub kind: &'static str,
    pub remove: fn(&Path) -> Result<(), String>,
}

impl std::fmt::Debug for RecordRemover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordRemover")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// What one emptying of the trash removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Emptied {
    /// Directories and files moved into the trash ([`Home::move_to_trash`]).
    pub moved: usize,
    /// Records whose objects their [`RecordRemover`] removed ([`record_in_trash`]).
    pub records: usize,
}

impl Emptied {
    /// Entries of either kind.
    pub fn total(&self) -> usize {
        self.moved + self.records
    }
}

/// At most this many threads remove subtrees at once.
const THREADS: usize = 8;

impl Home {
    /// `trash/`: directories moved out of the way, removed by [`Home::empty_trash`].
    pub fn trash_dir(&self) -> PathBuf {
        self.root().join("trash")
    }

    /// Moves `path` (a directory or file on the home's file system) into the trash, as
    /// `kind` (`state`, `queue`, …). `Ok(false)`: there was nothing at `path`. An error (the
    /// trash cannot be created, `path` is on another file system) leaves `path` where it
    /// was: the caller removes it in place.
    pub fn move_to_trash(&self, path: &Path, kind: &str) -> io::Result<bool> {
        move_to_trash(&self.trash_dir(), path, kind)
    }

    /// Whether the trash has no entries (or does not exist).
    pub fn trash_is_empty(&self) -> bool {
        entries(&self.trash_dir())
            .map(|e| e.is_empty())
            .unwrap_or(true)
    }

    /// Whether the trash has entries and no remover is at work on them (a remover that was
    /// killed, or none started yet).
    pub fn trash_needs_emptying(&self) -> bool {
        let trash = self.trash_dir();
        if entries(&trash).map(|e| e.is_empty()).unwrap_or(true) {
            return false;
        }
        match fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(trash.join(LOCK))
        {
            Ok(file) => file.try_lock().is_ok(),
            Err(_) => true,
        }
    }

    /// Removes everything in the trash, now, waiting for a remover already at work; what
    /// was removed, directories and records counted apart. Records go through the remover
    /// of their kind in `removers`. Entries that cannot be removed are an error naming each of them (and
    /// stay in `trash/.failures` until an emptying removes them).
    pub fn empty_trash(&self, removers: &[RecordRemover]) -> io::Result<Emptied> {
        empty(&self.trash_dir(), removers)
    }

    /// What the last emptying of the trash could not remove: one message per entry, naming
    /// it, the error and what to do. Empty when it removed everything (or never ran).
    pub fn trash_failures(&self) -> Vec<String> {
        fs::read_to_string(self.trash_dir().join(FAILURES))
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Whether the trash holds an entry of `identity` (a record of what it left outside the
    /// file system, or its directories): such an identity is not given to a new bottle,
    /// and a bottle resumed under it waits until the entry is gone.
    pub fn trash_holds(&self, identity: &str) -> bool {
        let prefix = format!("{identity}.");
        entries(&self.trash_dir()).is_ok_and(|e| {
            e.iter().any(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
        })
    }

    /// [`record_in_trash`] in this home's trash.
    pub fn record_in_trash(&self, name: &str, kind: &str, contents: &[u8]) -> io::Result<PathBuf> {
        record_in_trash(&self.trash_dir(), name, kind, contents)
    }

    /// Starts `exe` ([`EMPTY_TRASH_SUBCOMMAND`]) to empty the trash without waiting for it:
    /// in a process group of its own (a Ctrl-C on the terminal does not reach it), with no
    /// environment and no standard streams (a caller reading `start`'s output is not held
    /// open by it). It runs after the caller has exited.
    pub fn spawn_emptying_trash(&self, exe: &Path) -> io::Result<()> {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(exe)
            .arg(EMPTY_TRASH_SUBCOMMAND)
            .arg(self.root())
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map(drop)
    }
}

/// A new entry's name: `<name>.<kind>.<pid>.<nanos>.<n>` (never starting with `.`).
fn entry_name(name: &str, kind: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}.{kind}.{}.{nanos}.{}",
        name.trim_start_matches('.'),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Records in the trash directory `trash` that what `contents` names (for the
/// [`RecordRemover`] of `kind`) is to be removed: the file appears whole (written under a
/// hidden name, then renamed) or not at all. Not fsynced: after a crash what it named is
/// still found by `cleanup` (the docker backend's objects carry the labels of a launcher
/// that is gone). The record's path.
pub fn record_in_trash(
    trash: &Path,
    name: &str,
    kind: &str,
    contents: &[u8],
) -> io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(trash)?;
    let entry = trash.join(format!("{}{RECORD}", entry_name(name, kind)));
    let building = trash.join(format!(
        ".{}",
        entry.file_name().unwrap_or_default().to_string_lossy()
    ));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&building)
        .and_then(|mut file| file.write_all(contents))
        .and_then(|()| fs::rename(&building, &entry));
    if let Err(e) = written {
        let _ = fs::remove_file(&building);
        return Err(e);
    }
    Ok(entry)
}

/// [`Home::move_to_trash`] into the trash directory `trash` (for a backend that knows only
/// that directory).
pub fn move_to_trash(trash: &Path, path: &Path, kind: &str) -> io::Result<bool> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name to move into the trash", path.display()),
        ));
    };
    if fs::symlink_metadata(path).is_err() {
        return Ok(false);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(trash)?;
    let entry = trash.join(entry_name(&name.to_string_lossy(), kind));
    match fs::rename(path, &entry) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Entry point of `bot-bottle __empty-trash <home>`, with the removers of the records the
/// backends leave; never returns. Exits 0 once the trash is empty, 1 if something in it
/// could not be removed (left for the next try, and named in `trash/.failures`), 2 on a
/// wrong command line.
pub fn empty_trash_main(removers: &[RecordRemover]) -> ! {
    let Some(home) = std::env::args_os().nth(2) else {
        std::process::exit(2);
    };
    // Below the interactive work of the machine: nobody waits for this. Its unlinks wait for
    // the device's discards (a file system mounted with `discard`); in the idle I/O class
    // they queue behind the next `start`'s reads instead of before them (mq-deadline and
    // BFQ honour it; its starvation is bounded by the scheduler's aging).
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: setpriority and ioprio_set change only this process's scheduling and I/O
    // priority; they take no pointers.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        );
    }
    match Home::new(PathBuf::from(home)).empty_trash(removers) {
        Ok(_) => std::process::exit(0),
        Err(_) => std::process::exit(1),
    }
}

/// The trash's entries (not its lock, its failures or a record being written: every
/// entry's name starts with something else than `.`); none when it does not exist.
fn entries(trash: &Path) -> io::Result<Vec<PathBuf>> {
    let list = match fs::read_dir(trash) {
        Ok(list) => list,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in list {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// An error removing `path`, named, with what to do.
fn named(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot remove {}: {e}; remove it by hand (it is what is left of an ended bottle)",
                path.display()
            ),
        )
    }
}

/// The kind of a record (`<name>.<kind>.<pid>.<nanos>.<n>.record`); `None` for a
/// directory or file moved here.
fn record_kind(entry: &Path) -> Option<String> {
    let name = entry.file_name()?.to_string_lossy().into_owned();
    let stem = name.strip_suffix(RECORD)?;
    stem.rsplit('.').nth(3).map(str::to_owned)
}

fn empty(trash: &Path, removers: &[RecordRemover]) -> io::Result<Emptied> {
    if entries(trash).map_err(named(trash))?.is_empty() {
        // Nothing left: whatever failed before is gone (removed by hand, say).
        let _ = fs::remove_file(trash.join(FAILURES));
        return Ok(Emptied::default());
    }
    let lock_path = trash.join(LOCK);
    let lock = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(named(&lock_path))?;
    // A remover at work finishes first; what it leaves (moved in since it looked) is ours.
    lock.lock().map_err(named(&lock_path))?;
    let mut removed = Emptied::default();
    let mut failed: Vec<(PathBuf, io::Error)> = Vec::new();
    loop {
        let todo: Vec<PathBuf> = entries(trash)
            .map_err(named(trash))?
            .into_iter()
            .filter(|p| !failed.iter().any(|(f, _)| f == p))
            .collect();
        if todo.is_empty() {
            break;
        }
        for (path, result) in remove_all(&todo, removers) {
            match result {
                Ok(()) if record_kind(&path).is_some() => removed.records += 1,
                Ok(()) => removed.moved += 1,
                Err(e) => failed.push((path, e)),
            }
        }
    }
    let failures_path = trash.join(FAILURES);
    if failed.is_empty() {
        let _ = fs::remove_file(&failures_path);
        return Ok(removed);
    }
    let lines: Vec<String> = failed.into_iter().map(|(_, e)| e.to_string()).collect();
    // Kept where the next `start`, `list` and `cleanup` look (`Home::trash_failures`).
    let text = format!("{}\n", lines.join("\n"));
    let kept = crate::atomic_write_unsynced(&failures_path, text.as_bytes(), 0o600);
    let mut message = lines.join("\n");
    if let Err(e) = kept {
        message.push_str(&format!(
            "\n(and {} could not be written: {e})",
            failures_path.display()
        ));
    }
    Err(io::Error::other(message))
}

/// Removes a record: what it names through the remover of its kind, then the record.
fn remove_record(entry: &Path, kind: &str, removers: &[RecordRemover]) -> io::Result<()> {
    let Some(remover) = removers.iter().find(|r| r.kind == kind) else {
        return Err(io::Error::other(format!(
            "the trash remover cannot remove the {kind} objects recorded in {}: this bot-bottle has no remover for them; run `bot-bottle cleanup` with a bot-bottle that has the {kind} backend",
            entry.display()
        )));
    };
    (remover.remove)(entry).map_err(|why| {
        io::Error::other(format!(
            "the trash remover cannot remove what {} records: {why}",
            entry.display()
        ))
    })?;
    remove_any(entry).map_err(named(entry))
}

/// Removes each of `entries` with its whole tree: the subtrees (each entry's children) on up
/// to [`THREADS`] threads, then the entries themselves. The result for each entry.
fn remove_all(entries: &[PathBuf], removers: &[RecordRemover]) -> Vec<(PathBuf, io::Result<()>)> {
    let mut subtrees = Vec::new();
    for entry in entries {
        if record_kind(entry).is_some() {
            continue;
        }
        if let Ok(children) = fs::read_dir(entry) {
            subtrees.extend(children.flatten().map(|c| c.path()));
        }
    }
    let queue = Mutex::new(subtrees);
    let threads = queue.lock().map(|q| q.len()).unwrap_or(0).min(THREADS);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                // (The guard is dropped inside `and_then`: other threads pop meanwhile.)
                while let Some(path) = queue.lock().ok().and_then(|mut q| q.pop()) {
                    // A failure shows when its entry is removed below.
                    let _ = remove_any(&path);
                }
            });
        }
    });
    entries
        .iter()
        .map(|e| {
            let result = match record_kind(e) {
                Some(kind) => remove_record(e, &kind, removers),
                None => remove_any(e).map_err(named(e)),
            };
            (e.clone(), result)
        })
        .collect()
}

/// Removes a file, a symlink or a directory tree; nothing there is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn tree(root: &Path, files: usize) {
        for d in 0..3 {
            let dir = root.join(format!("d{d}/sub"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..files {
                fs::write(dir.join(format!("f{f}")), vec![b'x'; 5000]).unwrap();
            }
        }
        fs::write(root.join("top"), b"x").unwrap();
    }

    #[test]
    fn moved_trees_leave_their_place_at_once_and_emptying_removes_every_file() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path());
        let state = home.state_dir("dev-00001");
        tree(&state, 4);
        let queue = home.queue_dir("dev-00001");
        tree(&queue, 2);
        assert!(home.move_to_trash(&state, "state").unwrap());
        assert!(home.move_to_trash(&queue, "queue").unwrap());
        assert!(!state.exists() && !queue.exists());
        // Nothing there: nothing moved, no error.
        assert!(!home.move_to_trash(&state, "state").unwrap());
        assert!(home.trash_needs_emptying());
        let mut names: Vec<String> = entries(&home.trash_dir())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2);
        assert!(names[0].starts_with("dev-00001.queue."), "{names:?}");
        assert!(names[1].starts_with("dev-00001.state."), "{names:?}");
        assert_eq!(home.empty_trash(&[]).unwrap().moved, 2);
        assert_eq!(entries(&home.trash_dir()).unwrap(), Vec::<PathBuf>::new());
        assert!(!home.trash_needs_emptying());
        assert_eq!(home.empty_trash(&[]).unwrap(), Emptied::default());
    }

    #[test]
    fn a_remover_at_work_is_waited_for_and_not_doubled() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path());
        let dir = tmp.path().join("run/native/dev-00002");
        tree(&dir, 1);
        home.move_to_trash(&dir, "run").unwrap();
        // Another process holds the lock: the trash is being emptied, no second remover.
        let lock = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(home.trash_dir().join(LOCK))
            .unwrap();
        lock.lock().unwrap();
        assert!(!home.trash_needs_emptying());
        let emptying = std::thread::spawn({
            let home = home.clone();
            move || home.empty_trash(&[]).unwrap()
        });
        // `empty_trash` waits for the lock (the holder here never removes anything).
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!emptying.is_finished());
        lock.unlock().unwrap();
        assert_eq!(emptying.join().unwrap().moved, 1);
        assert!(!home.trash_needs_emptying());
    }

    #[test]
    fn an_entry_that_cannot_be_removed_is_named_and_the_rest_still_goes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path());
        let stuck = tmp.path().join("stuck");
        fs::create_dir_all(stuck.join("inner")).unwrap();
        let other = tmp.path().join("other");
        tree(&other, 1);
        home.move_to_trash(&stuck, "state").unwrap();
        home.move_to_trash(&other, "state").unwrap();
        let inner = entries(&home.trash_dir())
            .unwrap()
            .into_iter()
            .find(|p| p.to_string_lossy().contains("stuck"))
            .unwrap()
            .join("inner");
        // Root removes entries of a read-only directory anyway, but not a mount point.
        let root = is_root();
        if root {
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(&inner)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            fs::write(inner.join("file"), b"x").unwrap();
            fs::set_permissions(&inner, fs::Permissions::from_mode(0o500)).unwrap();
        }
        let err = home.empty_trash(&[]).map(drop).unwrap_err().to_string();
        if root {
            let out = std::process::Command::new("umount")
                .arg(&inner)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            fs::set_permissions(&inner, fs::Permissions::from_mode(0o700)).unwrap();
        }
        assert!(err.contains("stuck.state."), "{err}");
        assert!(err.contains("remove it by hand"), "{err}");
        let left = entries(&home.trash_dir()).unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        // Kept where the next `start`, `list` and `cleanup` see it.
        assert_eq!(home.trash_failures(), vec![err.clone()]);
        assert!(err.contains(&left[0].display().to_string()), "{err}");
        assert_eq!(home.empty_trash(&[]).unwrap().moved, 1);
        assert!(!home.trash_needs_emptying());
        // Removed at last: no failure is shown any more.
        assert_eq!(home.trash_failures(), Vec::<String>::new());
    }

    /// The record removers of these tests: `ok` removes what `fail-<n>` does not.
    fn remove_ok(path: &Path) -> Result<(), String> {
        assert!(fs::read_to_string(path).unwrap().starts_with("objects of"));
        Ok(())
    }

    fn remove_fails(path: &Path) -> Result<(), String> {
        Err(format!(
            "the daemon does not answer ({}); `bot-bottle cleanup` tries again",
            fs::read_to_string(path).unwrap()
        ))
    }

    #[test]
    fn a_record_goes_once_its_remover_succeeded_and_stays_named_while_it_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path());
        let record = home
            .record_in_trash("demo-0a1b2", "docker", b"objects of demo-0a1b2")
            .unwrap();
        let name = record.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("demo-0a1b2.docker."), "{name}");
        assert!(name.ends_with(".record"), "{name}");
        assert_eq!(record_kind(&record).as_deref(), Some("docker"));
        // The identity is taken while its record is there.
        assert!(home.trash_holds("demo-0a1b2"));
        assert!(!home.trash_holds("demo-0a1b"));
        assert!(home.trash_needs_emptying());

        // No remover for its kind: kept, and said so.
        let err = home.empty_trash(&[]).unwrap_err().to_string();
        assert!(err.contains(&record.display().to_string()), "{err}");
        assert!(err.contains("no remover for them"), "{err}");
        assert!(record.exists());
        // Its remover fails: kept, the failure named with what to do, for the next reader.
        let failing = RecordRemover {
            kind: "docker",
            remove: remove_fails,
        };
        let err = home.empty_trash(&[failing]).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "the trash remover cannot remove what {} records: the daemon does not answer (objects of demo-0a1b2); `bot-bottle cleanup` tries again",
                record.display()
            )
        );
        assert!(record.exists());
        assert_eq!(home.trash_failures(), vec![err]);
        // It succeeds: the record goes, the failure with it, the identity is free.
        let removing = RecordRemover {
            kind: "docker",
            remove: remove_ok,
        };
        // A moved directory beside it: the two are counted apart (`cleanup` says what each
        // was, never a record as an ended bottle's directory).
        let moved = tmp.path().join("demo-0a1b2-state");
        fs::create_dir_all(moved.join("ca")).unwrap();
        assert!(home.move_to_trash(&moved, "state").unwrap());
        assert_eq!(
            home.empty_trash(&[removing]).unwrap(),
            Emptied {
                moved: 1,
                records: 1
            }
        );
        assert!(!record.exists());
        assert_eq!(home.trash_failures(), Vec::<String>::new());
        assert!(!home.trash_holds("demo-0a1b2"));
        assert!(home.trash_is_empty());
    }

    fn is_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        // `/proc/self` belongs to the process's effective uid.
        fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
}
