//! The guest's initramfs: static busybox, the kernel modules the guest needs (in dependency
//! order) and the stage-1 script that mounts the host's root over 9p and hands over to our
//! stage 2 (`inbottle::qemu_guest`).
//!
//! Built by our code (a cpio "newc" archive; the format is a fixed header of hex fields, so a
//! small writer here is simpler than a dependency) and cached by the hash of its content under
//! `assets::cache_root()/qemu/`, so a second bottle reuses it and a new kernel or busybox makes
//! a new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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

/// Every `.ko` under `dir`, by module name (`-` and `_` are the same in module names).
fn index_modules(dir: &Path) -> Result<BTreeMap<String, PathBuf>, InitramfsError> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
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
fn builtin_modules(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("modules.builtin"))
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
    let index = index_modules(dir)?;
    let builtin = builtin_modules(dir);
    let mut order: Vec<(String, PathBuf)> = Vec::new();
    // Depth-first, each module after its dependencies; `visiting` stops a cycle.
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        builtin: &[String],
        dir: &Path,
        visiting: &mut Vec<String>,
        order: &mut Vec<(String, PathBuf)>,
    ) -> Result<(), InitramfsError> {
        let name = name.replace('-', "_");
        if order.iter().any(|(n, _)| *n == name) || visiting.contains(&name) {
            return Ok(());
        }
        if let Some(path) = index.get(&name)
            && !path.to_string_lossy().ends_with(".ko")
        {
            return Err(InitramfsError::CompressedModule { path: path.clone() });
        }
        let Some(path) = index.get(&name) else {
            if builtin.contains(&name) {
                return Ok(());
            }
            return Err(InitramfsError::MissingModule {
                name,
                dir: dir.to_path_buf(),
            });
        };
        visiting.push(name.clone());
        let bytes = std::fs::read(path).map_err(io("read", path))?;
        for dep in depends_of(&bytes) {
            visit(&dep, index, builtin, dir, visiting, order)?;
        }
        visiting.pop();
        order.push((name, path.clone()));
        Ok(())
    }
    let mut visiting = Vec::new();
    for name in needed {
        visit(name, &index, &builtin, dir, &mut visiting, &mut order)?;
    }
    Ok(order)
}

/// The stage-1 script: load the modules, mount the root over 9p read-only, switch to it and
/// run stage 2. Any failure is printed on the console (the host keeps its tail) and the guest
/// powers off, so the host reports it instead of waiting.
pub fn stage1_script(modules: &[String]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         bb=/bin/busybox\n\
         fail() { echo \"bot-bottle stage 1: $1\" >/dev/console; $bb poweroff -f; }\n\
         $bb mount -t proc proc /proc || fail 'cannot mount /proc'\n\
         $bb mount -t devtmpfs dev /dev || fail 'cannot mount /dev'\n",
    );
    for m in modules {
        s.push_str(&format!(
            "$bb insmod /lib/modules/{m}.ko || fail 'cannot load module {m}'\n"
        ));
    }
    s.push_str(&format!(
        "$bb mount -t 9p -o ro,nosuid,nodev,trans=virtio,version=9p2000.L,cache=loose,msize=262144 root /newroot || fail 'cannot mount the root over 9p'\n\
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
        Entry::File {
            path: "bin/busybox".into(),
            mode: 0o755,
            data: busybox,
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

/// Builds (or finds in the cache) the initramfs for the kernel modules in `modules_dir`, with
/// `busybox` (a static binary), under `cache_dir`, and then prunes the cache's other archives
/// that no live bottle holds ([`prune`]): each new kernel, busybox or bot-bottle version makes
/// a new content-hashed archive, and nothing else ever removed the old ones.
pub fn build_cached(
    busybox: &Path,
    modules_dir: &Path,
    cache_dir: &Path,
) -> Result<CachedInitramfs, InitramfsError> {
    let modules = resolve_modules(modules_dir, &NEEDED_MODULES)?;
    let busybox_bytes = std::fs::read(busybox).map_err(io("read", busybox))?;
    let mut loaded = Vec::new();
    for (name, path) in modules {
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        loaded.push((name, bytes));
    }
    let mut archive = Vec::new();
    write_cpio(&entries(busybox_bytes, loaded), &mut archive)
        .map_err(io("write the initramfs for", modules_dir))?;
    let hash = hex::encode(&Sha256::digest(&archive)[..12]);
    let path = cache_dir.join(format!("initramfs-{hash}.cpio"));
    let cached = cached_or_written(&archive, &hash, &path, cache_dir)?;
    prune(cache_dir, &path);
    Ok(cached)
}

fn cached_or_written(
    archive: &[u8],
    hash: &str,
    path: &Path,
    cache_dir: &Path,
) -> Result<CachedInitramfs, InitramfsError> {
    // QEMU reads the archive as the jail's unprivileged uid: world-readable (nothing in it is
    // secret), also when an older build cached it owner-only.
    let readable = std::fs::Permissions::from_mode(0o644);
    // Three rounds: a pruner may unlink the archive between our open and our lock, and a
    // concurrent build may put it in place before our rename.
    for _ in 0..3 {
        if let Ok(file) = std::fs::File::open(path) {
            file.lock_shared().map_err(io("lock", path))?;
            if still_named(&file, path) {
                std::fs::set_permissions(path, readable.clone())
                    .map_err(io("make readable", path))?;
                return Ok(CachedInitramfs {
                    path: path.to_path_buf(),
                    _in_use: file,
                });
            }
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
/// a crashed build. Best effort: what cannot be removed stays for the next launch.
pub fn prune(cache_dir: &Path, current: &Path) {
    let Ok(dir) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        if path == current {
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

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
                "bin/sh",
                "dev",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/m.ko",
                "newroot",
                "proc"
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
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
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

    fn names(cache: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
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
