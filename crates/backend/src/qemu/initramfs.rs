//! The guest's initramfs: static busybox, the kernel modules the guest needs (in dependency
//! order) and the stage-1 script that mounts the host's root over 9p and hands over to our
//! stage 2 (`inbottle::qemu_guest`).
//!
//! Built by our code (a cpio "newc" archive; the format is a fixed header of hex fields, so a
//! small writer here is simpler than a dependency) and cached by the hash of its content under
//! `assets::cache_root()/qemu/`, so a second bottle reuses it and a new kernel or busybox makes
//! a new one. A launch finds the archive without building it through a lookup record of its
//! inputs' stamps ([`cached`]); only a miss builds and hashes it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::inbottle::qemu_guest::CONTROL_PORT;

/// The modules the guest needs, by name; their dependencies are added from each `.ko`'s
/// `depends=` field. virtio-mmio transport, console and serial ports, the NIC, 9p.
pub const NEEDED_MODULES: [&str; 5] = [
    "virtio_mmio",
    "virtio_console",
    "virtio_net",
    "9pnet_virtio",
    "9p",
];

/// Where stage 2 lives in the guest: the guest executable (`bot-bottle-guest`, see
/// [`super::GUEST_EXE_NAME`]), placed read-only in the jail and seen by the guest through the
/// 9p root.
pub const GUEST_EXE: &str = "/run/bot-bottle/qemu/bot-bottle-guest";
/// Where the guest spec lives in the guest (a file in the 9p root, never on the command line).
pub const GUEST_SPEC: &str = "/run/bot-bottle/qemu/guest.json";

/// Why the initramfs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A needed module is not in the kernel's modules directory.
    #[error(
        "the guest kernel module `{name}` is not under {dir} (neither as .ko nor built in); use a kernel with 9p, virtio-mmio, virtio_net and virtio_console (Debian's generic kernel has them)"
    )]
    MissingModule { name: String, dir: PathBuf },
    /// A needed module is there only compressed (Debian's 6.1 kernels ship them
    /// uncompressed, `CONFIG_MODULE_COMPRESS_NONE`; other kernels may not).
    #[error(
        "the guest kernel module {path} is compressed, which the initramfs builder does not unpack; decompress the modules directory (`find DIR -name '*.ko.xz' -exec xz -d {{}} +`, or `zstd -d --rm` for .ko.zst) or use a kernel with uncompressed modules"
    )]
    CompressedModule { path: PathBuf },
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InitramfsError {
    let path = path.to_path_buf();
    move |source| InitramfsError::Io {
        action,
        path,
        source,
    }
}

/// One file of a cpio archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// Writes a cpio "newc" archive of `entries` (owned by root, mtime 0: the same input gives the
/// same bytes).
pub fn write_cpio(entries: &[Entry], out: &mut impl Write) -> std::io::Result<()> {
    let mut pos = 0usize;
    let put = |out: &mut dyn Write, bytes: &[u8], pos: &mut usize| -> std::io::Result<()> {
        out.write_all(bytes)?;
        *pos += bytes.len();
        let pad = (4 - *pos % 4) % 4;
        out.write_all(&[0u8; 3][..pad])?;
        *pos += pad;
        Ok(())
    };
    let trailer = Entry::File {
        path: "TRAILER!!!".into(),
        mode: 0,
        data: Vec::new(),
    };
    for (ino, entry) in entries.iter().chain(std::iter::once(&trailer)).enumerate() {
        let (path, mode, data, nlink): (&str, u32, &[u8], u32) = match entry {
            Entry::Dir { path, mode } => (path, 0o040000 | mode, &[], 2),
            Entry::File { path, mode, data } if path == "TRAILER!!!" => (path, *mode, data, 1),
            Entry::File { path, mode, data } => (path, 0o100000 | mode, data, 1),
            Entry::Symlink { path, target } => (path, 0o120777, target.as_bytes(), 1),
        };
        let ino = if path == "TRAILER!!!" { 0 } else { ino + 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            path.len() + 1,
            0
        );
        let mut name = header.into_bytes();
        name.extend_from_slice(path.as_bytes());
        name.push(0);
        put(out, &name, &mut pos)?;
        if !data.is_empty() {
            put(out, data, &mut pos)?;
        }
    }
    Ok(())
}

/// The `depends=` field of a module's `.modinfo` section.
fn depends_of(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &ko[at + KEY.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Suffixes of compressed modules, recognised only to say what to do about them.
const COMPRESSED: [&str; 3] = [".ko.xz", ".ko.zst", ".ko.gz"];

/// Every `.ko` under `dir`, by module name (`-` and `_` are the same in module names). Each
/// directory is stamped into `read` before it is listed: a module added, removed or renamed
/// changes its directory's stamp.
fn index_modules(
    dir: &Path,
    seen: &mut Sources,
) -> Result<BTreeMap<String, PathBuf>, InitramfsError> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        seen.stamp(&d);
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if d == dir.join("kernel") => return Err(io("read", &d)(e)),
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
                && let Some(stem) = name
                    .strip_suffix(".ko")
                    .or_else(|| COMPRESSED.iter().find_map(|ext| name.strip_suffix(ext)))
            {
                // An uncompressed module wins over a compressed one of the same name.
                let key = stem.replace('-', "_");
                if name.ends_with(".ko") || !found.contains_key(&key) {
                    found.insert(key, path);
                }
            }
        }
    }
    Ok(found)
}

/// Names of modules built into the kernel (`modules.builtin`), if the file is there.
fn builtin_modules(dir: &Path, seen: &mut Sources) -> Vec<String> {
    let file = dir.join("modules.builtin");
    seen.stamp(&file);
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter_map(|n| n.strip_suffix(".ko"))
        .map(|n| n.replace('-', "_"))
        .collect()
}

/// The modules to load, dependencies first, with their files: `needed` and everything they
/// depend on, minus what is built in.
pub fn resolve_modules(
    dir: &Path,
    needed: &[&str],
) -> Result<Vec<(String, PathBuf)>, InitramfsError> {
    Ok(resolve_and_read(dir, needed, &mut Sources::default())?
        .into_iter()
        .map(|(name, path, _)| (name, path))
        .collect())
}

/// [`resolve_modules`] with each module's bytes, stamping into `read` every directory listed
/// and every file read, each before it is read.
fn resolve_and_read(
    dir: &Path,
    needed: &[&str],
    seen: &mut Sources,
) -> Result<Vec<(String, PathBuf, Vec<u8>)>, InitramfsError> {
    let index = index_modules(dir, seen)?;
    let builtin = builtin_modules(dir, seen);
    let mut order: Vec<(String, PathBuf, Vec<u8>)> = Vec::new();
    // Depth-first, each module after its dependencies; `visiting` stops a cycle.
    struct Walk<'a> {
        index: &'a BTreeMap<String, PathBuf>,
        builtin: &'a [String],
        dir: &'a Path,
        visiting: Vec<String>,
        order: &'a mut Vec<(String, PathBuf, Vec<u8>)>,
        seen: &'a mut Sources,
    }
    fn visit(name: &str, w: &mut Walk<'_>) -> Result<(), InitramfsError> {
        let name = name.replace('-', "_");
        if w.order.iter().any(|(n, _, _)| *n == name) || w.visiting.contains(&name) {
            return Ok(());
        }
        if let Some(path) = w.index.get(&name)
            && !path.to_string_lossy().ends_with(".ko")
        {
            return Err(InitramfsError::CompressedModule { path: path.clone() });
        }
        let Some(path) = w.index.get(&name) else {
            if w.builtin.contains(&name) {
                return Ok(());
            }
            return Err(InitramfsError::MissingModule {
                name,
                dir: w.dir.to_path_buf(),
            });
        };
        w.visiting.push(name.clone());
        w.seen.stamp(path);
        let bytes = std::fs::read(path).map_err(io("read", path))?;
        for dep in depends_of(&bytes) {
            visit(&dep, w)?;
        }
        w.visiting.pop();
        w.order.push((name, path.clone(), bytes));
        Ok(())
    }
    let mut walk = Walk {
        index: &index,
        builtin: &builtin,
        dir,
        visiting: Vec::new(),
        order: &mut order,
        seen,
    };
    for name in needed {
        visit(name, &mut walk)?;
    }
    Ok(order)
}

/// The line stage 1 prints on the console once the guest is booted and its modules loaded,
/// just before it waits for the host's seed: where [`super::snapshot`] saves the guest.
pub const SNAPSHOT_POINT: &str = "bot-bottle stage 1: at the snapshot point";

/// The line stage 1 prints on the console after the reseed, followed by the first 16 bytes it
/// then reads from `/dev/urandom` in hex: the earliest draw after a restore, which the tests
/// compare across bottles restored from one snapshot (without the reseed, most were equal).
/// Printing them gives nothing away: the CRNG's later output cannot be computed from it.
pub const RESEEDED: &str = "bot-bottle stage 1: reseeded, first bytes drawn:";

/// How every line stage 1 prints when it gives up starts (the reason follows); the guest
/// then powers off, and the host names the reason in the start's error.
pub const STAGE1_FAILED: &str = "bot-bottle stage 1 failed: ";

/// The reason stage 1 gives when the reseed failed: the 64 bytes of the host did not all
/// arrive (the control port closed before them) or the kernel refused them.
pub const RESEED_FAILED: &str = "cannot reseed the random number generator from the host";

/// Where the reseed executable ([`RESEED`]) lives in the initramfs.
pub const RESEED_PATH: &str = "/bin/reseed";

/// The reseed executable of stage 1 (680 bytes, static, no libc): reads 64 bytes from the
/// file named by its argument (the control port), adds them to the kernel's input pool
/// credited as 512 bits (`RNDADDENTROPY`) and reseeds the CRNG from it (`RNDRESEEDCRNG`);
/// exits 0 only if all of it succeeded. Assembled from `reseed.S` beside this file
/// (`as --64 -o reseed.o reseed.S && ld -static -N -s --build-id=none -o reseed.bin
/// reseed.o`; a test checks the two agree where binutils is installed). Busybox (1.35 in
/// Debian 12) has no applet that calls these ioctls, and our guest executable needs the
/// host's libc from the 9p root, which is mounted only after the reseed.
pub const RESEED: &[u8] = include_bytes!("reseed.bin");

/// The stage-1 script: load the modules, wait for the control port, say that the snapshot
/// point is reached ([`SNAPSHOT_POINT`]), then reseed the kernel's random number generator
/// from the 64 bytes the host sends first on the control port ([`RESEED`]), set the clock
/// from the RTC, mount the root over 9p read-only, switch to it and run stage 2. A guest
/// restored from a snapshot ([`super::snapshot`]) resumes in the reseed's read, so nothing
/// after it ran in the snapshot's boot and everything after it draws from the reseeded CRNG;
/// a booted guest goes through the same steps. Any failure is printed on the console (the
/// host keeps its tail) and the guest powers off, so the host reports it instead of waiting.
pub fn stage1_script(modules: &[String]) -> String {
    let mut s = format!(
        "#!/bin/busybox sh\n\
         bb=/bin/busybox\n\
         fail() {{ echo \"{STAGE1_FAILED}$1\" >/dev/console; $bb poweroff -f; }}\n\
         $bb mount -t proc proc /proc || fail 'cannot mount /proc'\n\
         $bb mount -t devtmpfs dev /dev || fail 'cannot mount /dev'\n\
         $bb mount -t sysfs sys /sys || fail 'cannot mount /sys'\n"
    );
    for m in modules {
        s.push_str(&format!(
            "$bb insmod /lib/modules/{m}.ko || fail 'cannot load module {m}'\n"
        ));
    }
    s.push_str(&format!(
        "port=\n\
         tries=0\n\
         while [ -z \"$port\" ]; do\n\
         \x20 for p in /sys/class/virtio-ports/*; do\n\
         \x20   [ \"$($bb cat $p/name 2>/dev/null)\" = {CONTROL_PORT} ] && port=/dev/${{p##*/}}\n\
         \x20 done\n\
         \x20 [ -n \"$port\" ] && break\n\
         \x20 tries=$((tries + 1))\n\
         \x20 [ $tries -gt 1000 ] && fail 'the control port never appeared'\n\
         \x20 $bb usleep 10000\n\
         done\n\
         echo '{SNAPSHOT_POINT}' >/dev/console\n\
         {RESEED_PATH} $port || fail '{RESEED_FAILED} (its 64 bytes did not all arrive on the control port, or RNDADDENTROPY or RNDRESEEDCRNG failed); powering off'\n\
         echo \"{RESEEDED} $($bb od -An -tx1 -N16 /dev/urandom | $bb tr -d ' \\n')\" >/dev/console\n\
         $bb hwclock -s -u || fail 'cannot set the clock from the RTC'\n\
         $bb umount /sys\n\
         $bb mount -t 9p -o ro,nosuid,nodev,trans=virtio,version=9p2000.L,cache=loose,msize=262144 root /newroot || fail 'cannot mount the root over 9p'\n\
         $bb umount /dev\n\
         $bb umount /proc\n\
         exec $bb switch_root /newroot {GUEST_EXE} __qemu-init {GUEST_SPEC}\n"
    ));
    s
}

/// The archive's entries for `busybox` and the modules (name, bytes), in load order.
pub fn entries(busybox: Vec<u8>, modules: Vec<(String, Vec<u8>)>) -> Vec<Entry> {
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    let mut entries = vec![
        Entry::Dir {
            path: "bin".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "dev".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "lib".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "lib/modules".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "newroot".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "proc".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "sys".into(),
            mode: 0o755,
        },
        Entry::File {
            path: "bin/busybox".into(),
            mode: 0o755,
            data: busybox,
        },
        Entry::File {
            path: RESEED_PATH.trim_start_matches('/').into(),
            mode: 0o755,
            data: RESEED.to_vec(),
        },
        Entry::Symlink {
            path: "bin/sh".into(),
            target: "busybox".into(),
        },
    ];
    for (name, data) in modules {
        entries.push(Entry::File {
            path: format!("lib/modules/{name}.ko"),
            mode: 0o644,
            data,
        });
    }
    entries.push(Entry::File {
        path: "init".into(),
        mode: 0o755,
        data: stage1_script(&names).into_bytes(),
    });
    entries
}

/// A cached initramfs in use by one bottle: its path and a shared lock on the archive, held
/// for the bottle's life ([`super::QemuBottle`]). [`prune`] removes only archives it can lock
/// exclusively, so never one that a live bottle (of any bot-bottle version sharing the cache)
/// is about to boot from or booted from.
#[derive(Debug)]
pub struct CachedInitramfs {
    path: PathBuf,
    _in_use: std::fs::File,
}

impl CachedInitramfs {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether the open `file` is still the one named `path` (a pruner may have unlinked it
/// between our open and our lock).
fn still_named(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The version of the archive's layout (its entries, stage 1, the cpio writer, the modules
/// needed) and of the lookup record's format (`Record`). A record of another version is never
/// trusted. Bump it when any of these change; the builder's own stamp ([`Lookup::builder`])
/// already makes every new build of bot-bottle miss once, so this is the explicit guard for a
/// change that reaches the cache without a new executable (a record written by hand, a copied
/// cache).
pub const LAYOUT_VERSION: u32 = 2;

/// A record is written only when every input it names was last changed at least this long
/// before: a file changed twice within the filesystem's timestamp granularity (a few
/// milliseconds; one second on some filesystems) can keep its stamp, so a record taken right
/// after a change could miss the second one. Such a launch builds the archive and writes no
/// record; the next one writes it.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What identifies one version of a file or directory on disk: writing a file changes its
/// size or times; adding, removing or renaming a directory's entry changes the directory's
/// times; replacing either by a rename changes the inode. The change time (`ctime`) cannot be
/// set back by a user (`touch -d` sets it to now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of `path` (following symbolic links, as reading it does); `None` when it
    /// cannot be read (absent).
    pub fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether it changed less than `window` before `now` (or after it: a clock set back).
    fn changed_within(&self, window: Duration, now: SystemTime) -> bool {
        let at = |(secs, nanos): (i64, i64)| {
            u64::try_from(secs).ok().map(|s| {
                UNIX_EPOCH + Duration::from_secs(s) + Duration::from_nanos(nanos.max(0) as u64)
            })
        };
        [self.mtime, self.ctime].into_iter().any(|t| match at(t) {
            Some(t) => now.duration_since(t).map_or(true, |age| age < window),
            None => true,
        })
    }
}

/// The files and directories an archive was made from, each stamped before it was read or
/// listed (`None`: it was absent, e.g. no `modules.builtin`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources(Vec<(PathBuf, Option<Stamp>)>);

impl Sources {
    fn stamp(&mut self, path: &Path) {
        self.0.push((path.to_path_buf(), Stamp::of(path)));
    }

    /// The paths, in the order they were read.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.0.iter().map(|(p, _)| p.as_path())
    }
}

/// Makes the archive's bytes. [`FromFiles`] reads the inputs; the tests wrap it to count builds.
pub trait Build {
    /// The archive for `busybox` and the modules under `modules_dir`, and what it was made from.
    fn build(
        &self,
        busybox: &Path,
        modules_dir: &Path,
    ) -> Result<(Vec<u8>, Sources), InitramfsError>;
}

/// The archive of [`entries`]: [`NEEDED_MODULES`] and their dependencies from the modules
/// directory, in load order, and busybox.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromFiles;

impl Build for FromFiles {
    fn build(
        &self,
        busybox: &Path,
        modules_dir: &Path,
    ) -> Result<(Vec<u8>, Sources), InitramfsError> {
        let mut seen = Sources::default();
        let modules = resolve_and_read(modules_dir, &NEEDED_MODULES, &mut seen)?;
        seen.stamp(busybox);
        let busybox_bytes = std::fs::read(busybox).map_err(io("read", busybox))?;
        let loaded = modules
            .into_iter()
            .map(|(name, _, bytes)| (name, bytes))
            .collect();
        let mut archive = Vec::new();
        write_cpio(&entries(busybox_bytes, loaded), &mut archive)
            .map_err(io("write the initramfs for", modules_dir))?;
        Ok((archive, seen))
    }
}

/// One launch's initramfs: its inputs and where the cache is.
#[derive(Debug, Clone)]
pub struct Lookup<'a> {
    /// A static busybox.
    pub busybox: &'a Path,
    /// The kernel's `lib/modules/<version>` directory.
    pub modules_dir: &'a Path,
    /// The executable whose code lays the archive out (bot-bottle's own, [`build_cached`]):
    /// its stamp is part of the key, so a new build never trusts a record of an old one.
    /// `None` (unknown): every launch builds the archive, no record is written.
    pub builder: Option<&'a Path>,
    /// `assets::cache_root()/qemu`.
    pub cache_dir: &'a Path,
    /// [`RACY_WINDOW`].
    pub racy: Duration,
}

/// The lookup record of one (busybox, modules directory, builder) triple: the archive built
/// from them and the stamps of everything it was made from. Stored as
/// `initramfs-<hash of the three paths>.key`, its first line the archive's name (read alone by
/// [`prune`]), then this as JSON.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    layout: u32,
    busybox: PathBuf,
    modules_dir: PathBuf,
    builder: PathBuf,
    builder_stamp: Stamp,
    archive: String,
    archive_size: u64,
    sources: Vec<(PathBuf, Option<Stamp>)>,
}

/// Whether `name` is a content-named archive's file name (`initramfs-<hex>.cpio`).
fn archive_name(name: &str) -> bool {
    name.strip_prefix("initramfs-")
        .and_then(|n| n.strip_suffix(".cpio"))
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Lookup<'_> {
    fn record_path(&self, builder: &Path) -> PathBuf {
        let mut key = Sha256::new();
        for part in [self.busybox, self.modules_dir, builder] {
            key.update(part.as_os_str().as_encoded_bytes());
            key.update([0]);
        }
        self.cache_dir.join(format!(
            "initramfs-{}.key",
            hex::encode(&key.finalize()[..12])
        ))
    }

    /// The archive the record names, if the record is for these inputs, nothing it names has
    /// changed since, and the archive is still there (held for the bottle, as a build's is).
    fn recorded(
        &self,
        builder: &Path,
        builder_stamp: &Stamp,
    ) -> Result<Option<CachedInitramfs>, InitramfsError> {
        let Ok(text) = std::fs::read(self.record_path(builder)) else {
            return Ok(None);
        };
        let Some(json) = text.splitn(2, |b| *b == b'\n').nth(1) else {
            return Ok(None);
        };
        let Ok(record) = serde_json::from_slice::<Record>(json) else {
            return Ok(None);
        };
        let current = record.layout == LAYOUT_VERSION
            && record.busybox == self.busybox
            && record.modules_dir == self.modules_dir
            && record.builder == builder
            && record.builder_stamp == *builder_stamp
            && archive_name(&record.archive)
            && record
                .sources
                .iter()
                .all(|(path, stamp)| Stamp::of(path) == *stamp);
        if !current {
            return Ok(None);
        }
        let path = self.cache_dir.join(&record.archive);
        Ok(open_held(&path)?.filter(|held| {
            held._in_use
                .metadata()
                .is_ok_and(|m| m.len() == record.archive_size)
        }))
    }

    /// Writes the record of `archive`, made from `sources`, unless one of them (or the
    /// builder) changed too recently to be trusted ([`RACY_WINDOW`]). Best effort: without a
    /// record the next launch builds again.
    fn record(
        &self,
        builder: &Path,
        builder_stamp: Stamp,
        archive: &Path,
        size: u64,
        sources: Sources,
    ) {
        let now = SystemTime::now();
        let racy = std::iter::once(Some(builder_stamp))
            .chain(sources.0.iter().map(|(_, s)| *s))
            .flatten()
            .any(|s| s.changed_within(self.racy, now));
        let Some(name) = archive.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        if racy {
            return;
        }
        let record = Record {
            layout: LAYOUT_VERSION,
            busybox: self.busybox.to_path_buf(),
            modules_dir: self.modules_dir.to_path_buf(),
            builder: builder.to_path_buf(),
            builder_stamp,
            archive: name.to_owned(),
            archive_size: size,
            sources: sources.0,
        };
        let Ok(json) = serde_json::to_vec(&record) else {
            return;
        };
        let written = tempfile::Builder::new()
            .prefix(".initramfs-key.")
            .suffix(".tmp")
            .tempfile_in(self.cache_dir)
            .and_then(|mut tmp| {
                tmp.write_all(name.as_bytes())?;
                tmp.write_all(b"\n")?;
                tmp.write_all(&json)?;
                tmp.persist(self.record_path(builder))
                    .map_err(|e| e.error)?;
                Ok(())
            });
        if let Err(e) = written {
            tracing::debug!(error = %e, "the initramfs lookup record was not written; the next launch builds the archive again");
        }
    }
}

/// The initramfs for the kernel modules in `modules_dir`, with `busybox` (a static binary),
/// from the cache under `cache_dir` ([`cached`] with bot-bottle's own executable as the
/// builder and [`FromFiles`]).
pub fn build_cached(
    busybox: &Path,
    modules_dir: &Path,
    cache_dir: &Path,
) -> Result<CachedInitramfs, InitramfsError> {
    let builder = std::env::current_exe().ok();
    cached(
        &Lookup {
            busybox,
            modules_dir,
            builder: builder.as_deref(),
            cache_dir,
            racy: RACY_WINDOW,
        },
        &FromFiles,
    )
}

/// Finds the initramfs of `lookup` in the cache or builds it, then prunes the cache's other
/// archives that no live bottle holds ([`prune`]): each new kernel, busybox or bot-bottle
/// version makes a new content-hashed archive, and nothing else ever removed the old ones.
///
/// The archive is named by the hash of its content, as before; what is new is how a launch
/// finds it: the lookup record (`Record`) of these inputs names the archive and stamps
/// ([`Stamp`]) every directory listed and file read to make it, and the builder executable.
/// When all of them still have those stamps the archive is used as it is (a few hundred
/// `stat`s for Debian's modules directory). Otherwise (anything changed, added or removed, no
/// record, another layout version) it is built again with `build` (reading busybox and the
/// modules, writing the cpio, hashing it), which cost 580 ms of every launch of a debug build
/// when it was the only way to find the archive.
pub fn cached(lookup: &Lookup<'_>, build: &dyn Build) -> Result<CachedInitramfs, InitramfsError> {
    let builder = lookup
        .builder
        .and_then(|b| Stamp::of(b).map(|stamp| (b, stamp)));
    if let Some((builder, stamp)) = &builder
        && let Some(held) = lookup.recorded(builder, stamp)?
    {
        prune(lookup.cache_dir, held.path());
        return Ok(held);
    }
    let (archive, sources) = build.build(lookup.busybox, lookup.modules_dir)?;
    let hash = hex::encode(&Sha256::digest(&archive)[..12]);
    let path = lookup.cache_dir.join(format!("initramfs-{hash}.cpio"));
    let cached = cached_or_written(&archive, &hash, &path, lookup.cache_dir)?;
    if let Some((builder, stamp)) = builder {
        lookup.record(builder, stamp, &path, archive.len() as u64, sources);
    }
    prune(lookup.cache_dir, &path);
    Ok(cached)
}

/// The archive at `path`, held (a shared lock), if it is there and still named so once
/// locked. World-readable: QEMU reads it as the jail's unprivileged uid (nothing in it is
/// secret), also when an older build cached it owner-only.
fn open_held(path: &Path) -> Result<Option<CachedInitramfs>, InitramfsError> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(None);
    };
    file.lock_shared().map_err(io("lock", path))?;
    if !still_named(&file, path) {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(io("make readable", path))?;
    Ok(Some(CachedInitramfs {
        path: path.to_path_buf(),
        _in_use: file,
    }))
}

fn cached_or_written(
    archive: &[u8],
    hash: &str,
    path: &Path,
    cache_dir: &Path,
) -> Result<CachedInitramfs, InitramfsError> {
    let readable = std::fs::Permissions::from_mode(0o644);
    // Three rounds: a pruner may unlink the archive between our open and our lock, and a
    // concurrent build may put it in place before our rename.
    for _ in 0..3 {
        if let Some(held) = open_held(path)? {
            return Ok(held);
        }
        std::fs::create_dir_all(cache_dir).map_err(io("create", cache_dir))?;
        // A temporary file of its own: two launches (threads of one process too) may build
        // the same archive at once, and each must put a whole file into place. Locked before
        // the rename, so no pruner can take it between the rename and our lock; the first
        // rename wins, the others use its archive (no rename replaces a file a bottle holds).
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".initramfs-{hash}."))
            .suffix(".tmp")
            .tempfile_in(cache_dir)
            .map_err(io("create a temporary file in", cache_dir))?;
        tmp.as_file()
            .lock_shared()
            .map_err(io("lock", tmp.path()))?;
        std::io::Write::write_all(&mut tmp, archive).map_err(io("write", tmp.path()))?;
        tmp.as_file()
            .set_permissions(readable.clone())
            .map_err(io("make readable", tmp.path()))?;
        tmp.as_file().sync_all().map_err(io("sync", path))?;
        match tmp.persist_noclobber(path) {
            Ok(file) => {
                return Ok(CachedInitramfs {
                    path: path.to_path_buf(),
                    _in_use: file,
                });
            }
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("rename into", path)(e.error)),
        }
    }
    Err(InitramfsError::Io {
        action: "keep (other launches kept replacing or removing it)",
        path: path.to_path_buf(),
        source: std::io::Error::other("try the launch again"),
    })
}

/// How old a left-over temporary archive (a build that crashed before its rename) must be
/// before [`prune`] removes it: far longer than any build takes.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the cached archives in `cache_dir` other than `current` that no live bottle holds
/// (each is taken with an exclusive lock that does not wait: a bottle's shared lock, see
/// [`CachedInitramfs`], makes it fail and the archive stays), and temporary archives left by
/// a crashed build, then the lookup records ([`cached`]) whose archive is gone. Best effort:
/// what cannot be removed stays for the next launch.
pub fn prune(cache_dir: &Path, current: &Path) {
    let Ok(dir) = std::fs::read_dir(cache_dir) else {
        return;
    };
    let mut records = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        if path == current {
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("initramfs-") && name.ends_with(".key") {
            records.push(path);
            continue;
        }
        let archive = name.starts_with("initramfs-") && name.ends_with(".cpio");
        let temporary = name.starts_with(".initramfs-")
            && name.ends_with(".tmp")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TEMPORARY);
        if !(archive || temporary) {
            continue;
        }
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() && still_named(&file, &path) {
            let _ = std::fs::remove_file(&path);
        }
    }
    // A record is replaced whole (a rename), so its first line is always an archive's name.
    for record in records {
        let mut head = [0u8; 128];
        let names_a_live_archive = std::fs::File::open(&record)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .ok()
            .and_then(|n| head[..n].split(|b| *b == b'\n').next())
            .and_then(|line| std::str::from_utf8(line).ok())
            .is_some_and(|name| archive_name(name) && cache_dir.join(name).is_file());
        if !names_a_live_archive {
            let _ = std::fs::remove_file(&record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// Stage 1 stops at the snapshot point only after the modules, reseeds before anything
    /// else after it (and fails closed), and mounts the root, reads the spec and runs stage 2
    /// only after the reseed.
    #[test]
    fn stage_one_reseeds_right_after_the_snapshot_point_and_before_the_root() {
        let script = stage1_script(&["virtio_console".to_owned(), "9p".to_owned()]);
        let at = |needle: &str| {
            script
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} not in:\n{script}"))
        };
        let point = at(SNAPSHOT_POINT);
        assert!(at("insmod /lib/modules/9p.ko") < point);
        let after: Vec<&str> = script[point..].lines().skip(1).collect();
        assert!(
            after[0].starts_with(&format!("{RESEED_PATH} $port || fail ")),
            "{}",
            after[0]
        );
        assert!(at("mount -t 9p") > at(RESEED_PATH));
        assert!(at("switch_root") > at(RESEED_PATH));
        assert_eq!(script.matches("/dev/urandom").count(), 1);
        assert!(at("/dev/urandom") > at(RESEED_PATH));
    }

    /// The committed reseed executable is `reseed.S` assembled (where binutils is here), a
    /// static ELF, and refuses to go on without a whole seed or the right to add entropy.
    #[test]
    fn the_reseed_executable_is_its_source_assembled_and_fails_closed() {
        assert_eq!(super::super::elf::is_static(RESEED), Some(true));
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/qemu/reseed.S");
        let (obj, exe) = (dir.path().join("reseed.o"), dir.path().join("reseed"));
        let assembled = std::process::Command::new("as")
            .args(["--64", "-o"])
            .arg(&obj)
            .arg(&src)
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new("ld")
                .args(["-static", "-N", "-s", "--build-id=none", "-o"])
                .arg(&exe)
                .arg(&obj)
                .status()
                .is_ok_and(|s| s.success());
        if assembled {
            assert!(
                std::fs::read(&exe).unwrap() == RESEED,
                "reseed.bin is not reseed.S assembled; rebuild it (see RESEED)"
            );
        } else {
            eprintln!("not compared with reseed.S: binutils (as, ld) are not installed");
        }
        let bin = dir.path().join("reseed.bin");
        std::fs::write(&bin, RESEED).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, [7u8; 63]).unwrap();
        // No argument, a missing file, a seed one byte short: exit 1 before any ioctl.
        for args in [vec![], vec![dir.path().join("none")], vec![short]] {
            let status = std::process::Command::new(&bin)
                .args(&args)
                .status()
                .unwrap();
            assert_eq!(status.code(), Some(1), "{args:?}");
        }
    }

    #[test]
    fn a_cpio_archive_has_newc_headers_padding_and_a_trailer() {
        let mut out = Vec::new();
        write_cpio(
            &[
                Entry::Dir {
                    path: "d".into(),
                    mode: 0o755,
                },
                Entry::File {
                    path: "d/f".into(),
                    mode: 0o644,
                    data: b"hello".to_vec(),
                },
                Entry::Symlink {
                    path: "l".into(),
                    target: "d/f".into(),
                },
            ],
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out).into_owned();
        assert_eq!(text.matches("070701").count(), 4);
        let first = [
            "070701",
            "00000001",
            "000041ed",
            "00000000",
            "00000000",
            "00000002",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000002",
            "00000000",
            "d\x00070701",
        ]
        .concat();
        assert!(text.starts_with(&first), "{text:?}");
        assert!(text.contains("d/f\0\0\0hello\0\0\0"), "{text:?}");
        assert!(text.contains("l\0d/f\0"), "{text:?}");
        assert!(text.contains("TRAILER!!!\0"));
    }

    #[test]
    fn the_archive_reads_back_with_busybox_cpio() {
        let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
        else {
            eprintln!("skipped: busybox is not installed (apt-get install busybox-static)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        write_cpio(
            &entries(b"#!/bin/sh\n".to_vec(), vec![("m".into(), b"ko".to_vec())]),
            &mut out,
        )
        .unwrap();
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, &out).unwrap();
        let listed = std::process::Command::new(busybox)
            .args(["cpio", "-t", "-F"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(listed.status.success(), "{listed:?}");
        let mut names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/reseed",
                "bin/sh",
                "dev",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/m.ko",
                "newroot",
                "proc",
                "sys"
            ]
        );
    }

    #[test]
    fn threads_building_the_same_archive_at_once_each_get_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("modules/kernel/x");
        std::fs::create_dir_all(&k).unwrap();
        for name in NEEDED_MODULES {
            std::fs::write(k.join(format!("{name}.ko")), fake_ko("")).unwrap();
        }
        let busybox = dir.path().join("busybox");
        std::fs::write(&busybox, vec![7u8; 1 << 20]).unwrap();
        let cache = dir.path().join("cache");
        let built: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|_| s.spawn(|| build_cached(&busybox, &dir.path().join("modules"), &cache)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap().path().to_path_buf())
                .collect()
        });
        assert!(built.windows(2).all(|w| w[0] == w[1]), "{built:?}");
        let mut expected = Vec::new();
        let modules = resolve_modules(&dir.path().join("modules"), &NEEDED_MODULES).unwrap();
        let loaded = modules
            .into_iter()
            .map(|(n, p)| (n, std::fs::read(p).unwrap()))
            .collect();
        write_cpio(&entries(vec![7u8; 1 << 20], loaded), &mut expected).unwrap();
        assert!(std::fs::read(&built[0]).unwrap() == expected);
        // nothing but the archive is left in the cache
        // nothing but the archive is left in the cache (and, had the inputs been older than
        // RACY_WINDOW, its lookup record)
        assert_eq!(names(&cache), [file_name(&built[0])]);
    }

    /// QEMU opens the archive as the jail's unprivileged uid: a cached archive readable only
    /// by its owner (what a temporary file is created as) failed every launch as root with
    /// "error reading initrd ... Permission denied".
    #[test]
    fn the_cached_archive_is_readable_by_the_jail_uid_even_if_an_older_build_left_it_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("modules/kernel/x");
        std::fs::create_dir_all(&k).unwrap();
        for name in NEEDED_MODULES {
            std::fs::write(k.join(format!("{name}.ko")), fake_ko("")).unwrap();
        }
        let busybox = dir.path().join("busybox");
        std::fs::write(&busybox, b"busybox").unwrap();
        let cache = dir.path().join("cache");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let built = build_cached(&busybox, &dir.path().join("modules"), &cache).unwrap();
        let built = built.path();
        assert_eq!(mode(built), 0o644);
        std::fs::set_permissions(built, std::fs::Permissions::from_mode(0o600)).unwrap();
        let again = build_cached(&busybox, &dir.path().join("modules"), &cache).unwrap();
        assert_eq!(again.path(), built);
        assert_eq!(mode(again.path()), 0o644);
    }

    /// A modules directory with every needed module (fake `.ko`s) under `dir`.
    fn fake_modules(dir: &Path) -> PathBuf {
        let k = dir.join("modules/kernel/x");
        std::fs::create_dir_all(&k).unwrap();
        for name in NEEDED_MODULES {
            std::fs::write(k.join(format!("{name}.ko")), fake_ko("")).unwrap();
        }
        dir.join("modules")
    }

    /// The cache's files but the lookup records (which `cached_lookups_*` test).
    fn names(cache: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".key"))
            .collect();
        names.sort();
        names
    }

    fn file_name(path: &Path) -> String {
        path.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Every new busybox, kernel or bot-bottle version cached one more archive and none was
    /// ever removed (eight were found in a development machine's cache). A launch now removes
    /// the others, except one a live bottle holds, whatever version made it.
    #[test]
    fn a_launch_prunes_old_archives_but_not_one_a_live_bottle_holds() {
        let dir = tempfile::tempdir().unwrap();
        let modules = fake_modules(dir.path());
        let cache = dir.path().join("cache");
        let busybox = dir.path().join("busybox");
        let build = |version: &str| {
            std::fs::write(&busybox, version).unwrap();
            build_cached(&busybox, &modules, &cache).unwrap()
        };
        let live = build("busybox 1");
        let old = file_name(build("busybox 2").path());
        std::fs::write(cache.join("kvm-probe.json"), "{}").unwrap();
        // A build that crashed before its rename, long ago, and one under way.
        let crashed = cache.join(".initramfs-0123.abc.tmp");
        std::fs::write(&crashed, "partial").unwrap();
        let hour_ago = std::time::SystemTime::now() - 2 * STALE_TEMPORARY;
        std::fs::File::options()
            .write(true)
            .open(&crashed)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        std::fs::write(cache.join(".initramfs-4567.def.tmp"), "writing").unwrap();

        let current = build("busybox 3");
        let mut expected = vec![
            ".initramfs-4567.def.tmp".to_owned(),
            file_name(live.path()),
            file_name(current.path()),
            "kvm-probe.json".to_owned(),
        ];
        expected.sort();
        assert_eq!(names(&cache), expected, "{old} should be gone");
        // Still whole: the live bottle's resume finds the same archive.
        assert!(
            std::fs::read(live.path())
                .unwrap()
                .windows(9)
                .any(|w| w == b"busybox 1")
        );

        // Once the bottle ended, the next launch removes it; the current one stays.
        let live_name = file_name(live.path());
        drop(live);
        drop(current);
        let again = build("busybox 3");
        assert!(!names(&cache).contains(&live_name));
        assert!(again.path().is_file());
    }

    /// A launch that opened the archive just before another launch's pruning removed it (it
    /// waits for the pruner's lock) writes it again instead of booting from a file that is gone.
    #[test]
    fn an_archive_removed_while_a_launch_waited_for_its_lock_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let modules = fake_modules(dir.path());
        let cache = dir.path().join("cache");
        let busybox = dir.path().join("busybox");
        std::fs::write(&busybox, "busybox").unwrap();
        let path = build_cached(&busybox, &modules, &cache)
            .unwrap()
            .path()
            .to_path_buf();
        let content = std::fs::read(&path).unwrap();
        // The pruner's side: an exclusive lock on the archive.
        let pruner = std::fs::File::open(&path).unwrap();
        pruner.try_lock().unwrap();
        let opened_by_us = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
                .count()
        };
        let before = opened_by_us();
        std::thread::scope(|s| {
            let launch = s.spawn(|| build_cached(&busybox, &modules, &cache));
            // The launch has opened the archive and waits for its shared lock.
            while opened_by_us() == before {
                assert!(
                    !launch.is_finished(),
                    "the launch did not wait for the lock"
                );
                std::thread::yield_now();
            }
            std::fs::remove_file(&path).unwrap();
            drop(pruner);
            let cached = launch.join().unwrap().unwrap();
            assert_eq!(cached.path(), path);
            assert_eq!(std::fs::read(cached.path()).unwrap(), content);
        });
    }

    /// [`FromFiles`], counting its builds.
    #[derive(Default)]
    struct Counting(std::cell::Cell<usize>);

    impl Build for Counting {
        fn build(
            &self,
            busybox: &Path,
            modules_dir: &Path,
        ) -> Result<(Vec<u8>, Sources), InitramfsError> {
            self.0.set(self.0.get() + 1);
            FromFiles.build(busybox, modules_dir)
        }
    }

    /// Returns once the filesystem's clock has moved on: every change made after it gets
    /// times later than every stamp taken before it (timestamps are coarse, a few ms here;
    /// [`RACY_WINDOW`] covers that in production, these tests use no window).
    fn tick(dir: &Path) {
        let probe = dir.join(".tick");
        std::fs::write(&probe, "").unwrap();
        let before = Stamp::of(&probe).unwrap().ctime;
        while Stamp::of(&probe).unwrap().ctime == before {
            std::thread::yield_now();
            std::fs::write(&probe, "").unwrap();
        }
    }

    struct Inputs {
        dir: tempfile::TempDir,
        busybox: PathBuf,
        modules: PathBuf,
        builder: PathBuf,
        cache: PathBuf,
    }

    impl Inputs {
        fn new() -> Inputs {
            let dir = tempfile::tempdir().unwrap();
            let modules = dir.path().join("modules");
            let k = modules.join("kernel/x");
            std::fs::create_dir_all(&k).unwrap();
            for name in NEEDED_MODULES {
                std::fs::write(k.join(format!("{name}.ko")), fake_ko("")).unwrap();
            }
            let busybox = dir.path().join("busybox");
            std::fs::write(&busybox, "busybox 1").unwrap();
            let builder = dir.path().join("bot-bottle");
            std::fs::write(&builder, "build 1").unwrap();
            let cache = dir.path().join("cache");
            Inputs {
                busybox,
                modules,
                builder,
                cache,
                dir,
            }
        }

        fn lookup(&self) -> Lookup<'_> {
            Lookup {
                busybox: &self.busybox,
                modules_dir: &self.modules,
                builder: Some(&self.builder),
                cache_dir: &self.cache,
                racy: Duration::ZERO,
            }
        }

        /// The archive's path and content after a lookup with `build`.
        fn get(&self, build: &Counting) -> (PathBuf, Vec<u8>) {
            let held = cached(&self.lookup(), build).unwrap();
            tick(self.dir.path());
            (
                held.path().to_path_buf(),
                std::fs::read(held.path()).unwrap(),
            )
        }
    }

    fn has(archive: &[u8], needle: &[u8]) -> bool {
        archive.windows(needle.len()).any(|w| w == needle)
    }

    /// A launch found the cached archive only by building it again in memory and hashing it
    /// (580 ms of a debug build). Now an unchanged set of inputs is found by its record,
    /// without a build; the archive keeps its content-hash name.
    #[test]
    fn cached_lookups_of_unchanged_inputs_do_not_build() {
        let inputs = Inputs::new();
        let build = Counting::default();
        let (first, content) = inputs.get(&build);
        assert_eq!(build.0.get(), 1);
        for _ in 0..3 {
            let (again, again_content) = inputs.get(&build);
            assert_eq!(
                (again.as_path(), &again_content),
                (first.as_path(), &content)
            );
        }
        assert_eq!(
            build.0.get(),
            1,
            "an unchanged lookup built the archive again"
        );
        let hash = hex::encode(&Sha256::digest(&content)[..12]);
        assert_eq!(file_name(&first), format!("initramfs-{hash}.cpio"));
        // The same bytes as a build without the cache.
        assert_eq!(
            content,
            FromFiles.build(&inputs.busybox, &inputs.modules).unwrap().0
        );
    }

    /// Every input of the archive, changed: the next lookup builds it again and gets the new
    /// content, never the cached archive of the old inputs.
    #[test]
    fn cached_lookups_build_again_when_any_input_changed() {
        let inputs = Inputs::new();
        let k = inputs.modules.join("kernel/x");
        let build = Counting::default();
        let mut builds = 1;
        let (_, mut last) = inputs.get(&build);
        type Change = Box<dyn Fn(&Inputs)>;
        type Check = Box<dyn Fn(&[u8]) -> bool>;
        let now_in = |needle: &'static [u8]| -> Check { Box::new(move |a| has(a, needle)) };
        let gone = |needle: &'static [u8]| -> Check { Box::new(move |a| !has(a, needle)) };
        let changes: Vec<(&str, Change, Check)> = vec![
            (
                "busybox's content, same size",
                Box::new(|i| std::fs::write(&i.busybox, "busybox 2").unwrap()),
                now_in(b"busybox 2"),
            ),
            (
                "a module's content, same size",
                Box::new(move |_| {
                    std::fs::write(
                        k.join("9p.ko"),
                        String::from_utf8(fake_ko(""))
                            .unwrap()
                            .replace("GPL", "MIT"),
                    )
                    .unwrap()
                }),
                now_in(b"license=MIT"),
            ),
            (
                "a dependency added to a module (and that module)",
                Box::new(|i| {
                    let k = i.modules.join("kernel/x");
                    std::fs::write(k.join("netfs.ko"), b"\x7fELF netfs\0").unwrap();
                    std::fs::write(k.join("9p.ko"), fake_ko("netfs")).unwrap();
                }),
                now_in(b"lib/modules/netfs.ko"),
            ),
            (
                "the dependency now built into the kernel (modules.builtin appears)",
                Box::new(|i| {
                    std::fs::write(
                        i.modules.join("modules.builtin"),
                        "kernel/fs/netfs/netfs.ko\n",
                    )
                    .unwrap();
                    std::fs::remove_file(i.modules.join("kernel/x/netfs.ko")).unwrap();
                }),
                gone(b"lib/modules/netfs.ko"),
            ),
            (
                "a module file added in a new directory (the built-in dependency found there)",
                Box::new(|i| {
                    let a = i.modules.join("kernel/a");
                    std::fs::create_dir_all(&a).unwrap();
                    std::fs::write(a.join("netfs.ko"), b"\x7fELF netfs in a\0").unwrap();
                }),
                now_in(b"netfs in a"),
            ),
            (
                "a module file added in an existing directory (same)",
                Box::new(|i| {
                    let a = i.modules.join("kernel/a");
                    std::fs::remove_file(a.join("netfs.ko")).unwrap();
                    tick(i.dir.path());
                    // A launch records the directory without it (not counted).
                    cached(&i.lookup(), &FromFiles).unwrap();
                    tick(i.dir.path());
                    std::fs::write(a.join("netfs.ko"), b"\x7fELF netfs again\0").unwrap();
                }),
                now_in(b"netfs again"),
            ),
            (
                "a module file replaced by a rename (same size and times)",
                Box::new(|i| {
                    let k = i.modules.join("kernel/x");
                    let old = k.join("virtio_mmio.ko");
                    let new = i.dir.path().join("virtio_mmio.ko.new");
                    std::fs::write(
                        &new,
                        String::from_utf8(fake_ko(""))
                            .unwrap()
                            .replace("name=x", "name=y"),
                    )
                    .unwrap();
                    let mtime = std::fs::metadata(&old).unwrap().modified().unwrap();
                    std::fs::File::options()
                        .write(true)
                        .open(&new)
                        .unwrap()
                        .set_modified(mtime)
                        .unwrap();
                    std::fs::rename(&new, &old).unwrap();
                }),
                now_in(b"name=y"),
            ),
            (
                "a module's content with its modification time set back",
                Box::new(|i| {
                    let ko = i.modules.join("kernel/x/virtio_console.ko");
                    let mtime = std::fs::metadata(&ko).unwrap().modified().unwrap();
                    std::fs::write(
                        &ko,
                        String::from_utf8(fake_ko(""))
                            .unwrap()
                            .replace("GPL", "BSD"),
                    )
                    .unwrap();
                    std::fs::File::options()
                        .write(true)
                        .open(&ko)
                        .unwrap()
                        .set_modified(mtime)
                        .unwrap();
                }),
                now_in(b"license=BSD"),
            ),
            (
                "a needed module now built in (modules.builtin changed)",
                Box::new(|i| {
                    std::fs::write(
                        i.modules.join("modules.builtin"),
                        "kernel/fs/netfs/netfs.ko\nkernel/fs/9p/9p.ko\n",
                    )
                    .unwrap();
                    std::fs::remove_file(i.modules.join("kernel/x/9p.ko")).unwrap();
                }),
                gone(b"lib/modules/9p.ko"),
            ),
        ];
        for (what, change, check) in changes {
            change(&inputs);
            let (_, content) = inputs.get(&build);
            builds += 1;
            assert_eq!(build.0.get(), builds, "no build after {what}");
            assert!(check(&content), "{what}: the old archive was served");
            assert_ne!(content, last, "{what}");
            last = content;
            inputs.get(&build);
            assert_eq!(build.0.get(), builds, "a second build after {what}");
        }
    }

    /// The builder (bot-bottle's executable, whose code lays the archive out), the layout
    /// version and the archive itself are inputs of the lookup too.
    #[test]
    fn cached_lookups_build_again_for_a_new_builder_layout_or_a_pruned_archive() {
        let inputs = Inputs::new();
        let build = Counting::default();
        let (archive, _) = inputs.get(&build);

        std::fs::write(&inputs.builder, "build 2").unwrap();
        inputs.get(&build);
        assert_eq!(build.0.get(), 2, "no build for a new builder");

        // A record of another layout version (as an older or newer bot-bottle writes it).
        let record = inputs.lookup().record_path(&inputs.builder);
        let text = std::fs::read_to_string(&record).unwrap();
        let other = text.replace(
            &format!("\"layout\":{LAYOUT_VERSION},"),
            &format!("\"layout\":{},", LAYOUT_VERSION + 1),
        );
        assert_ne!(other, text);
        std::fs::write(&record, other).unwrap();
        inputs.get(&build);
        assert_eq!(build.0.get(), 3, "no build for another layout version");

        // The archive removed (another launch pruned it, or by hand): built and written again.
        std::fs::remove_file(&archive).unwrap();
        let (again, _) = inputs.get(&build);
        assert_eq!(build.0.get(), 4, "no build for a removed archive");
        assert_eq!(again, archive);
        assert!(archive.is_file());

        // Another busybox (another path) has a record of its own; each is found again.
        let other = inputs.dir.path().join("busybox-other");
        std::fs::write(&other, "busybox 1").unwrap();
        let lookup = Lookup {
            busybox: &other,
            ..inputs.lookup()
        };
        cached(&lookup, &build).unwrap();
        cached(&lookup, &build).unwrap();
        inputs.get(&build);
        assert_eq!(build.0.get(), 5);

        // Without a known builder nothing is trusted: every lookup builds.
        let lookup = Lookup {
            builder: None,
            ..inputs.lookup()
        };
        cached(&lookup, &build).unwrap();
        cached(&lookup, &build).unwrap();
        assert_eq!(build.0.get(), 7);
    }

    /// A record taken right after a change could miss a second change within the
    /// filesystem's timestamp granularity: inputs changed within [`RACY_WINDOW`] are built
    /// every time until they are older.
    #[test]
    fn cached_lookups_write_no_record_for_inputs_changed_just_now() {
        let inputs = Inputs::new();
        let build = Counting::default();
        let lookup = Lookup {
            racy: RACY_WINDOW,
            ..inputs.lookup()
        };
        cached(&lookup, &build).unwrap();
        cached(&lookup, &build).unwrap();
        assert_eq!(build.0.get(), 2);
        assert!(!lookup.record_path(&inputs.builder).exists());

        let stamp = Stamp::of(&inputs.busybox).unwrap();
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(stamp.ctime.0 as u64 + secs);
        assert!(stamp.changed_within(RACY_WINDOW, at(1)));
        assert!(!stamp.changed_within(RACY_WINDOW, at(3)));
        // A clock set back before the change: not trusted either.
        assert!(stamp.changed_within(RACY_WINDOW, at(0) - Duration::from_secs(60)));
    }

    /// Records are pruned with their archives: a record whose archive is gone goes too.
    #[test]
    fn a_record_whose_archive_was_pruned_is_removed() {
        let inputs = Inputs::new();
        let build = Counting::default();
        let first = cached(&inputs.lookup(), &build).unwrap();
        let first_record = inputs.lookup().record_path(&inputs.builder);
        assert!(first_record.is_file());
        drop(first);
        // Another busybox path: another archive and record; the first archive is pruned.
        let other = inputs.dir.path().join("busybox-other");
        std::fs::write(&other, "busybox 2").unwrap();
        let lookup = Lookup {
            busybox: &other,
            ..inputs.lookup()
        };
        let second = cached(&lookup, &build).unwrap();
        let second_record = lookup.record_path(&inputs.builder);
        assert!(second_record.is_file());
        assert!(
            !first_record.exists(),
            "the record of a pruned archive stays"
        );
        assert!(second.path().is_file());
    }

    #[test]
    fn a_compressed_module_is_refused_with_the_way_to_unpack_it() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("kernel/x");
        std::fs::create_dir_all(&k).unwrap();
        for name in NEEDED_MODULES {
            std::fs::write(k.join(format!("{name}.ko")), fake_ko("")).unwrap();
        }
        std::fs::remove_file(k.join("9p.ko")).unwrap();
        std::fs::write(k.join("9p.ko.xz"), b"\xfd7zXZ\0").unwrap();
        let err = resolve_modules(dir.path(), &NEEDED_MODULES).unwrap_err();
        assert!(
            matches!(&err, InitramfsError::CompressedModule { path } if path.ends_with("9p.ko.xz")),
            "{err}"
        );
        assert!(err.to_string().contains("xz -d"), "{err}");
        // Beside an uncompressed copy, the compressed one is ignored.
        std::fs::write(k.join("9p.ko"), fake_ko("")).unwrap();
        let resolved = resolve_modules(dir.path(), &NEEDED_MODULES).unwrap();
        assert!(
            resolved
                .iter()
                .all(|(_, p)| p.extension().is_some_and(|e| e == "ko"))
        );
    }

    fn fake_ko(depends: &str) -> Vec<u8> {
        format!("\x7fELF....\0license=GPL\0depends={depends}\0name=x\0").into_bytes()
    }

    #[test]
    fn modules_come_after_their_dependencies_and_builtins_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("kernel/x");
        std::fs::create_dir_all(&k).unwrap();
        for (name, deps) in [
            ("virtio", ""),
            ("virtio_ring", ""),
            ("virtio_mmio", "virtio,virtio_ring"),
            ("9pnet", ""),
            ("9pnet_virtio", "virtio,9pnet,virtio_ring"),
            ("9p", "9pnet,netfs"),
        ] {
            std::fs::write(k.join(format!("{name}.ko")), fake_ko(deps)).unwrap();
        }
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/fs/netfs/netfs.ko\n",
        )
        .unwrap();
        let order: Vec<String> =
            resolve_modules(dir.path(), &["virtio_mmio", "9pnet_virtio", "9p"])
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
        assert_eq!(
            order,
            [
                "virtio",
                "virtio_ring",
                "virtio_mmio",
                "9pnet",
                "9pnet_virtio",
                "9p"
            ]
        );
        let missing = resolve_modules(dir.path(), &["virtio_net"]).unwrap_err();
        assert_eq!(
            missing.to_string(),
            format!(
                "the guest kernel module `virtio_net` is not under {} (neither as .ko nor built in); use a kernel with 9p, virtio-mmio, virtio_net and virtio_console (Debian's generic kernel has them)",
                dir.path().display()
            )
        );
    }
}
