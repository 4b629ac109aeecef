//! The kernel seam of the native backend: every mount the bottle makes goes through [`Os`], so
//! the mount plan can be checked against a recording fake; [`RealOs`] does the syscalls and is
//! exercised by the integration tests with real namespaces.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use super::plan::{HostKind, HostView};

/// What a mount point must be.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum NodeKind {
    Dir,
    File,
}

/// Mount-namespace operations the bottle needs.
pub trait Os {
    /// Creates `path` (and its parents) as an empty directory or file unless it exists.
    fn ensure_mountpoint(&mut self, path: &Path, kind: NodeKind) -> io::Result<()>;
    /// Mounts an empty tmpfs (nosuid, nodev).
    fn mount_tmpfs(&mut self, target: &Path, mode: u32) -> io::Result<()>;
    /// Bind-mounts `source` (recursively) on `target`.
    fn bind(&mut self, source: &Path, target: &Path) -> io::Result<()>;
    /// Makes the mount tree at `target` read-only, nosuid and nodev, recursively.
    fn make_read_only(&mut self, target: &Path) -> io::Result<()>;
    /// Makes the mount tree at `target` nosuid and nodev, recursively.
    fn make_nosuid_nodev(&mut self, target: &Path) -> io::Result<()>;
    /// Remounts the single mount at `target` read-only (for the bottle's own tmpfs mounts).
    fn remount_read_only(&mut self, target: &Path) -> io::Result<()>;
    /// Creates a symlink at `path` pointing to `points_to`.
    fn symlink(&mut self, points_to: &Path, path: &Path) -> io::Result<()>;
    /// Mounts a new procfs (read-only, nosuid, nodev, noexec).
    fn mount_proc(&mut self, target: &Path) -> io::Result<()>;
    /// Mounts a new devpts instance.
    fn mount_devpts(&mut self, target: &Path) -> io::Result<()>;
    /// Whether nothing is at `path` (`lstat` says it does not exist). Any other answer,
    /// an error included, is "something may be there".
    fn is_gone(&self, path: &Path) -> bool;
}

/// The cgroup filesystem, for the bottle's resource limits (see [`super::cgroup`]).
pub trait CgroupOs {
    /// The contents of a file (`cgroup.controllers`, `cgroup.subtree_control`).
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The owner of a file or directory, `None` when it does not exist.
    fn owner(&self, path: &Path) -> Option<u32>;
    /// Creates one directory (a cgroup).
    fn mkdir(&mut self, path: &Path) -> io::Result<()>;
    /// Writes `value` to a cgroup file.
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()>;
    /// Removes an (empty) cgroup.
    fn rmdir(&mut self, path: &Path) -> io::Result<()>;
}

/// The real syscalls.
#[derive(Debug, Default)]
pub struct RealOs;

impl CgroupOs for RealOs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn owner(&self, path: &Path) -> Option<u32> {
        std::fs::symlink_metadata(path).ok().map(|m| m.uid())
    }

    fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
            .map_err(|e| io::Error::new(e.kind(), format!("create cgroup {}: {e}", path.display())))
    }

    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        // One write(2) of the whole value, as cgroup files expect; no create, no truncate.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        io::Write::write_all(&mut file, value.as_bytes()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("write `{value}` to {}: {e}", path.display()),
            )
        })
    }

    fn rmdir(&mut self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;

/// `struct mount_attr` of `mount_setattr(2)` (Linux 5.12).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(2)` with `AT_RECURSIVE`: neither `nix` nor `rustix` wrap it yet.
fn mount_setattr_recursive(target: &Path, set: u64) -> io::Result<()> {
    let path = cpath(target)?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is a valid NUL-terminated string and `attr` a properly sized, initialised
    // `struct mount_attr` that outlives the call; the kernel only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            (libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn with_path(err: nix::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(
        io::Error::from(err).kind(),
        format!("{what} {}: {err}", path.display()),
    )
}

impl Os for RealOs {
    fn ensure_mountpoint(&mut self, path: &Path, kind: NodeKind) -> io::Result<()> {
        if std::fs::symlink_metadata(path).is_ok() {
            return Ok(());
        }
        let annotate =
            |e: io::Error| io::Error::new(e.kind(), format!("create {}: {e}", path.display()));
        match kind {
            NodeKind::Dir => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
                .map_err(annotate),
            NodeKind::File => {
                if let Some(parent) = path.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(parent)
                        .map_err(annotate)?;
                }
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(path)
                    .map(drop)
                    .map_err(annotate)
            }
        }
    }

    fn mount_tmpfs(&mut self, target: &Path, mode: u32) -> io::Result<()> {
        let data = format!("mode={mode:o}");
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|e| with_path(e, "mount tmpfs on", target))
    }

    fn bind(&mut self, source: &Path, target: &Path) -> io::Result<()> {
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| with_path(e, &format!("bind {} on", source.display()), target))
    }

    fn make_read_only(&mut self, target: &Path) -> io::Result<()> {
        mount_setattr_recursive(
            target,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("make {} read-only: {e}", target.display()),
            )
        })
    }

    fn make_nosuid_nodev(&mut self, target: &Path) -> io::Result<()> {
        mount_setattr_recursive(target, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
            .map_err(|e| io::Error::new(e.kind(), format!("make {} nosuid: {e}", target.display())))
    }

    fn remount_read_only(&mut self, target: &Path) -> io::Result<()> {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| with_path(e, "remount read-only", target))
    }

    fn symlink(&mut self, points_to: &Path, path: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(points_to, path)
            .map_err(|e| io::Error::new(e.kind(), format!("symlink {}: {e}", path.display())))
    }

    fn mount_proc(&mut self, target: &Path) -> io::Result<()> {
        mount(
            Some("proc"),
            target,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| with_path(e, "mount proc on", target))
    }

    fn mount_devpts(&mut self, target: &Path) -> io::Result<()> {
        mount(
            Some("devpts"),
            target,
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
        .map_err(|e| with_path(e, "mount devpts on", target))
    }

    fn is_gone(&self, path: &Path) -> bool {
        matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// The real host, read through `std::fs`.
#[derive(Debug, Default)]
pub struct RealHost;

impl HostView for RealHost {
    fn kind(&self, path: &Path) -> Option<HostKind> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        let ft = meta.file_type();
        Some(if ft.is_symlink() {
            HostKind::Symlink(std::fs::read_link(path).ok()?)
        } else if ft.is_dir() {
            HostKind::Dir
        } else if ft.is_file() {
            HostKind::File
        } else {
            HostKind::Other
        })
    }

    /// The walk runs on four threads (`SCAN_THREADS`) sharing one stack of directories: on a cold
    /// cache every directory read and every `stat` waits for the disk (an inode table block),
    /// and one thread issues those reads one at a time (93 ms for `/etc` and `/opt`'s 1,478
    /// entries in bench/README.md's native10 section); several keep several reads in flight.
    /// The result is sorted, so it does not depend on which thread saw what.
    fn unshareable_entries(&self, dir: &Path) -> Vec<(PathBuf, NodeKind)> {
        let walk = Walk {
            state: std::sync::Mutex::new(WalkState {
                stack: vec![dir.to_path_buf()],
                busy: 0,
                found: Vec::new(),
            }),
            changed: std::sync::Condvar::new(),
        };
        std::thread::scope(|scope| {
            for _ in 1..SCAN_THREADS {
                // A thread that cannot be started leaves its share to the others.
                let _ = std::thread::Builder::new()
                    .name("host-scan".into())
                    .spawn_scoped(scope, || walk.work());
            }
            walk.work();
        });
        let mut found = walk
            .state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .found;
        found.sort();
        found
    }
}

/// Threads of one [`RealHost::unshareable_entries`] walk (the caller's included).
const SCAN_THREADS: usize = 4;

/// The directories of a walk still to read, shared by its threads.
struct Walk {
    state: std::sync::Mutex<WalkState>,
    changed: std::sync::Condvar,
}

struct WalkState {
    stack: Vec<PathBuf>,
    /// Threads reading a directory now (each may push more onto `stack`).
    busy: usize,
    found: Vec<(PathBuf, NodeKind)>,
}

impl Walk {
    /// Reads directories off the stack until it is empty and no thread can add to it. If
    /// `read_one` panics, the guard still lowers `busy`, so the other threads finish instead
    /// of waiting forever, and the scope re-raises the panic to the caller (the lock, only
    /// ever pushed to, is taken over when poisoned).
    fn work(&self) {
        let lock = || {
            self.state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let mut state = lock();
        loop {
            let Some(current) = state.stack.pop() else {
                if state.busy == 0 {
                    self.changed.notify_all();
                    return;
                }
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            };
            state.busy += 1;
            drop(state);
            struct Done<'a>(&'a Walk);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    let mut state = self
                        .0
                        .state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    state.busy -= 1;
                    self.0.changed.notify_all();
                }
            }
            let done = Done(self);
            let (subdirs, found) = read_one(&current);
            {
                let mut state = lock();
                state.stack.extend(subdirs);
                state.found.extend(found);
            }
            drop(done);
            state = lock();
        }
    }
}

/// One directory of [`RealHost::unshareable_entries`]: its subdirectories to walk, and its
/// entries to mask.
fn read_one(current: &Path) -> (Vec<PathBuf>, Vec<(PathBuf, NodeKind)>) {
    use std::os::unix::fs::FileTypeExt;
    let (mut subdirs, mut found) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(current) else {
        return (subdirs, found);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // fstatat relative to the open directory: no full path walk per entry.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let ft = meta.file_type();
        let mode = meta.mode();
        if ft.is_symlink() {
            continue;
        }
        if ft.is_dir() {
            // A directory others cannot list or enter is hidden whole.
            if mode & 0o005 != 0o005 {
                found.push((path, NodeKind::Dir));
            } else {
                subdirs.push(path);
            }
        } else if ft.is_socket() || mode & 0o004 == 0 {
            found.push((path, NodeKind::File));
        }
    }
    (subdirs, found)
}

/// [`RealHost`] with the scans of `/etc` and `/opt` (the plan's scanned directories) made ahead of the plan, on a
/// thread of their own ([`Prefetched::start`]) while the sidecar bundle starts: `launch`
/// joins it before it builds the plan. The same scans as [`RealHost::unshareable_entries`]
/// of the same directories, only earlier; a directory not scanned ahead (or a scan thread
/// that panicked) is scanned when the plan asks, so the plan never gets fewer masks.
#[derive(Debug, Default)]
pub struct Prefetched {
    scans: Vec<(PathBuf, Vec<(PathBuf, NodeKind)>)>,
}

impl Prefetched {
    /// Starts the scans of the directories in `dirs` that the plan scans.
    pub fn start(dirs: &[PathBuf]) -> std::thread::JoinHandle<Prefetched> {
        let scanned: Vec<PathBuf> = super::plan::SCANNED_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|d| dirs.contains(d))
            .collect();
        std::thread::spawn(move || Prefetched {
            scans: scanned
                .into_iter()
                .map(|dir| {
                    let found = RealHost.unshareable_entries(&dir);
                    (dir, found)
                })
                .collect(),
        })
    }

    /// The scans of a [`Prefetched::start`], or none (every scan made when asked).
    pub fn join(started: Option<std::thread::JoinHandle<Prefetched>>) -> Prefetched {
        started
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    }
}

impl HostView for Prefetched {
    fn kind(&self, path: &Path) -> Option<HostKind> {
        RealHost.kind(path)
    }

    fn unshareable_entries(&self, dir: &Path) -> Vec<(PathBuf, NodeKind)> {
        match self.scans.iter().find(|(scanned, _)| scanned == dir) {
            Some((_, found)) => found.clone(),
            None => RealHost.unshareable_entries(dir),
        }
    }
}

/// The host as [`crate::Backend::prepare`] checks a spec against it: [`RealHost`]'s kinds,
/// without the scan for entries to mask. The scan adds masks and refuses nothing, so every
/// check that can fail a plan still runs; a plan made on this view is never applied.
#[derive(Debug, Default)]
pub struct ChecksOnly;

impl HostView for ChecksOnly {
    fn kind(&self, path: &Path) -> Option<HostKind> {
        RealHost.kind(path)
    }

    fn unshareable_entries(&self, _dir: &Path) -> Vec<(PathBuf, NodeKind)> {
        Vec::new()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Records every call as a short line, e.g. `bind /usr /r/usr`. Cgroup reads answer
    /// from `files` and `owners`; a write to `fail_writes_to` fails. A mount on a path of
    /// `missing` fails as the kernel's does on a path that does not exist (`ENOENT`), and
    /// `is_gone` says so for the paths of `gone` (a path can be missing without being gone:
    /// the mount failed, then something appeared there).
    #[derive(Debug, Default)]
    pub struct RecordingOs {
        pub calls: Vec<String>,
        pub files: std::collections::BTreeMap<PathBuf, String>,
        pub owners: std::collections::BTreeMap<PathBuf, u32>,
        pub fail_writes_to: Option<PathBuf>,
        pub missing: std::collections::BTreeSet<PathBuf>,
        pub gone: std::collections::BTreeSet<PathBuf>,
    }

    impl RecordingOs {
        fn mount_on(&self, target: &Path) -> io::Result<()> {
            if self.missing.contains(target) {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            Ok(())
        }
    }

    impl CgroupOs for RecordingOs {
        fn read(&self, path: &Path) -> io::Result<String> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn owner(&self, path: &Path) -> Option<u32> {
            self.owners.get(path).copied()
        }
        fn mkdir(&mut self, path: &Path) -> io::Result<()> {
            self.calls.push(format!("mkdir {}", path.display()));
            Ok(())
        }
        fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
            self.calls.push(format!("write {} {value}", path.display()));
            if self.fail_writes_to.as_deref() == Some(path) {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            Ok(())
        }
        fn rmdir(&mut self, path: &Path) -> io::Result<()> {
            self.calls.push(format!("rmdir {}", path.display()));
            Ok(())
        }
    }

    impl Os for RecordingOs {
        fn ensure_mountpoint(&mut self, path: &Path, kind: NodeKind) -> io::Result<()> {
            let k = match kind {
                NodeKind::Dir => "dir",
                NodeKind::File => "file",
            };
            self.calls
                .push(format!("mountpoint {k} {}", path.display()));
            Ok(())
        }
        fn mount_tmpfs(&mut self, target: &Path, mode: u32) -> io::Result<()> {
            self.calls
                .push(format!("tmpfs {} {mode:o}", target.display()));
            self.mount_on(target)
        }
        fn bind(&mut self, source: &Path, target: &Path) -> io::Result<()> {
            self.calls
                .push(format!("bind {} {}", source.display(), target.display()));
            self.mount_on(target)
        }
        fn make_read_only(&mut self, target: &Path) -> io::Result<()> {
            self.calls.push(format!("read-only {}", target.display()));
            Ok(())
        }
        fn make_nosuid_nodev(&mut self, target: &Path) -> io::Result<()> {
            self.calls
                .push(format!("nosuid-nodev {}", target.display()));
            Ok(())
        }
        fn remount_read_only(&mut self, target: &Path) -> io::Result<()> {
            self.calls
                .push(format!("remount read-only {}", target.display()));
            Ok(())
        }
        fn symlink(&mut self, points_to: &Path, path: &Path) -> io::Result<()> {
            self.calls.push(format!(
                "symlink {} {}",
                points_to.display(),
                path.display()
            ));
            Ok(())
        }
        fn mount_proc(&mut self, target: &Path) -> io::Result<()> {
            self.calls.push(format!("proc {}", target.display()));
            Ok(())
        }
        fn mount_devpts(&mut self, target: &Path) -> io::Result<()> {
            self.calls.push(format!("devpts {}", target.display()));
            Ok(())
        }
        fn is_gone(&self, path: &Path) -> bool {
            self.gone.contains(path)
        }
    }

    /// The walk on several threads finds exactly what one thread walking the same tree in
    /// order finds: a tree wide and deep enough that every thread gets directories, with
    /// entries to mask at every depth and in directories that are themselves masked.
    #[test]
    fn the_walk_on_several_threads_finds_what_a_walk_in_order_finds() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        fn in_order(dir: &Path, found: &mut Vec<(PathBuf, NodeKind)>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
            entries.sort_by_key(std::fs::DirEntry::path);
            for entry in entries {
                let meta = entry.metadata().unwrap();
                let (ft, mode) = (meta.file_type(), meta.mode());
                if ft.is_symlink() {
                    continue;
                }
                if ft.is_dir() {
                    if mode & 0o005 != 0o005 {
                        found.push((entry.path(), NodeKind::Dir));
                    } else {
                        in_order(&entry.path(), found);
                    }
                } else if ft.is_socket() || mode & 0o004 == 0 {
                    found.push((entry.path(), NodeKind::File));
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        let mut sockets = Vec::new();
        for a in 0..12 {
            for b in 0..4 {
                let d = dir.path().join(format!("a{a}/b{b}/c"));
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("public"), "x").unwrap();
                if (a + b) % 3 == 0 {
                    std::fs::write(d.join("secret"), "x").unwrap();
                    mode(&d.join("secret"), 0o600);
                }
                if (a * b) % 5 == 1 {
                    sockets.push(std::os::unix::net::UnixListener::bind(d.join("s.sock")).unwrap());
                }
                if b == 3 && a % 4 == 0 {
                    std::fs::create_dir(d.join("private")).unwrap();
                    std::fs::write(d.join("private/inside"), "x").unwrap();
                    mode(&d.join("private"), 0o750);
                }
                std::os::unix::fs::symlink("/etc/shadow", d.join("link")).unwrap();
            }
            std::fs::write(dir.path().join(format!("a{a}/top")), "x").unwrap();
            if a % 2 == 1 {
                mode(&dir.path().join(format!("a{a}/top")), 0o640);
            }
        }
        let mut expected = Vec::new();
        in_order(dir.path(), &mut expected);
        expected.sort();
        assert!(
            expected.len() > 20,
            "the tree has entries to mask: {expected:?}"
        );
        for _ in 0..5 {
            assert_eq!(RealHost.unshareable_entries(dir.path()), expected);
        }
        // A directory that cannot be read (gone) gives nothing, and the walk still ends.
        assert_eq!(
            RealHost.unshareable_entries(&dir.path().join("absent")),
            Vec::new()
        );
    }

    #[test]
    fn real_host_finds_unreadable_files_and_sockets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("public"), "x").unwrap();
        std::fs::write(d.join("secret"), "x").unwrap();
        std::fs::set_permissions(d.join("secret"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::create_dir(d.join("private")).unwrap();
        std::fs::set_permissions(d.join("private"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(d.join("sub/agent.sock")).unwrap();
        let found = RealHost.unshareable_entries(d);
        assert_eq!(
            found,
            vec![
                (d.join("private"), NodeKind::Dir),
                (d.join("secret"), NodeKind::File),
                (d.join("sub/agent.sock"), NodeKind::File),
            ]
        );
    }
}
