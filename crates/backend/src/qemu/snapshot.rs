//! Guest snapshots: a guest booted once to the snapshot point of stage 1 (kernel booted,
//! modules loaded, nothing per-bottle done: no 9p mount, no spec read, no agent), saved, and
//! restored by every bottle of the same device set instead of booting its own.
//!
//! * **Made** by a QEMU in a jail like a bottle's QEMU's ([`make`]: a native bottle with its
//!   namespaces, empty network namespace, unprivileged uid, seccomp, Landlock and cgroups; the
//!   kernel and initramfs read-only at the bottle's paths; an empty workspace, which its 9p
//!   shares point at) with the bottle's machine, CPUs, memory, kernel command line and devices
//!   ([`cmdline::snapshot_args`]). Its only ways out are the jail's forwards to sockets of the
//!   launcher's: the guest's console (the launcher logs it) and control port (never written
//!   to), and a QMP monitor that connects out, which only this run has. Once the console says
//!   [`SNAPSHOT_POINT`], a live `migrate` to `tcp:` the jail's migration port (no `stop` first,
//!   so the saved run state is `running` and a restored QEMU starts the VM by itself, without
//!   a monitor), whose forward the launcher copies into a file of its own, then `quit`. If the
//!   jail cannot be set up, nothing is made and the error says why; a `start` then boots its
//!   guest (as with `BOT_BOTTLE_QEMU_SNAPSHOT=0`), saying so.
//! * **Cached** under `<cache>/qemu/snapshots/<key>.snap`, the key a hash of everything the
//!   saved state depends on ([`key`]): QEMU's binary, the kernel image, the initramfs (named by
//!   its content hash) and the device set's arguments ([`cmdline::device_set`]). Published
//!   atomically: written to a temporary file, synced, renamed, then its length recorded in
//!   `<key>.len` the same way; a snapshot without its record, of another length or without
//!   QEMU's stream magic is never used (it is made again). One launch makes it while the others
//!   wait on `<key>.lock`.
//! * **Restored** by the bottle's QEMU from a descriptor (`-incoming fd:5`, see
//!   [`cmdline::jail_argv`]). The guest resumes inside stage 1's reseed, which reads the 64
//!   bytes the host sends first on the control port and reseeds the kernel's CRNG with them
//!   before anything else runs ([`super::initramfs::RESEED`]).
//!
//! What the guests of one snapshot share is in SECURITY.md ("qemu"): the kernel's KASLR
//! offset and whatever else the kernel drew at boot, not the CRNG's output after the reseed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::cmdline::{self, VmPlan};
pub use super::initramfs::{RESEEDED, SNAPSHOT_POINT};
use crate::Backend;
use crate::spec::{
    BottleStdio, Forward, Home, LaunchSpec, ReadOnlyFile, Resources, StdioMode, Workspace,
    WorkspaceMode,
};

/// `BOT_BOTTLE_QEMU_SNAPSHOT=0` boots every guest instead of restoring a snapshot.
pub const SNAPSHOT_ENV: &str = "BOT_BOTTLE_QEMU_SNAPSHOT";
/// Bumped when what a snapshot holds changes without any input of [`key`] changing.
const FORMAT: &str = "bot-bottle qemu snapshot 1";
/// The first bytes of a QEMU migration stream (`QEMU_VM_FILE_MAGIC`).
const STREAM_MAGIC: &[u8; 4] = b"QEVM";
/// How long making a snapshot may take (a boot to the snapshot point and the save).
const MAKE_TIMEOUT: Duration = Duration::from_secs(300);
/// A snapshot no launch used for this long is removed when another one is made: a new
/// kernel, QEMU or bot-bottle makes new keys, and each snapshot is tens to hundreds of MB.
pub const UNUSED_FOR: Duration = Duration::from_secs(14 * 24 * 3600);
/// A temporary file or directory of a make that died is removed after this long.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

/// Whether bottles are restored from snapshots: yes unless [`SNAPSHOT_ENV`] is `0`.
pub fn enabled() -> bool {
    std::env::var(SNAPSHOT_ENV).map_or(true, |v| v.trim() != "0")
}

/// A file's identity and version: path, length, modification time, inode.
fn stamp(path: &Path) -> Result<String, String> {
    let m = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!(
        "{}\0{}\0{mtime}\0{}\0{}",
        path.display(),
        m.len(),
        m.ino(),
        m.dev()
    ))
}

/// The cache key of the snapshot of `plan`'s device set booted from `kernel` and `initramfs`
/// (named by the hash of its content, as [`super::initramfs`] names it).
pub fn key(plan: &VmPlan, kernel: &Path, initramfs: &Path) -> Result<String, String> {
    let mut h = Sha256::new();
    h.update(FORMAT);
    for input in [&plan.qemu, kernel] {
        h.update([0]);
        h.update(stamp(input)?);
    }
    // The initramfs by its name, which is the hash of its content: an identical archive
    // written again (another bot-bottle version's launch pruned it meanwhile) is the same
    // guest, and its snapshot stays usable.
    h.update([0]);
    h.update(initramfs.file_name().unwrap_or_default().as_encoded_bytes());
    let len = std::fs::metadata(initramfs)
        .map_err(|e| format!("cannot read {}: {e}", initramfs.display()))?
        .len();
    h.update(len.to_le_bytes());
    // TCG's translation cache is not in the saved state (QEMU translates the guest's code
    // again after a restore), so a snapshot restores under any cache size: one snapshot,
    // not one per `BOT_BOTTLE_QEMU_TCG_CACHE_MIB`.
    let set = cmdline::VmPlan {
        tcg_cache_mib: cmdline::TCG_CACHE_MIB,
        ..cmdline::device_set(plan)
    };
    for arg in cmdline::qemu_args(&set) {
        h.update([0]);
        h.update(arg);
    }
    Ok(hex::encode(&h.finalize()[..16]))
}

/// A snapshot ready to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub path: PathBuf,
    /// How long making it took, when this call made it.
    pub made_in: Option<Duration>,
}

fn io_text(action: &str, path: &Path) -> impl FnOnce(std::io::Error) -> String {
    let text = format!("cannot {action} {}", path.display());
    move |e| format!("{text}: {e}")
}

/// Whether `snap` is a whole, published snapshot: its length record matches it and it
/// starts with QEMU's stream magic.
fn usable(snap: &Path, len_record: &Path) -> bool {
    let Ok(recorded) = std::fs::read_to_string(len_record) else {
        return false;
    };
    let Ok(mut file) = std::fs::File::open(snap) else {
        return false;
    };
    let mut magic = [0u8; 4];
    let len = file.metadata().map(|m| m.len()).ok();
    len.is_some_and(|l| recorded.trim().parse::<u64>().ok() == Some(l))
        && file.read_exact(&mut magic).is_ok()
        && &magic == STREAM_MAGIC
}

/// The snapshot of `plan` in `dir` (`<cache>/qemu/snapshots`), made with `make` when it is
/// missing or not whole (under `<key>.lock`, so concurrent launches make it once).
pub fn cached_or_made(
    dir: &Path,
    key: &str,
    make: &dyn Fn(&Path) -> Result<(), String>,
) -> Result<Snapshot, String> {
    let snap = dir.join(format!("{key}.snap"));
    let len_record = dir.join(format!("{key}.len"));
    if usable(&snap, &len_record) {
        mark_used(&len_record);
        return Ok(Snapshot {
            path: snap,
            made_in: None,
        });
    }
    std::fs::create_dir_all(dir).map_err(io_text("create", dir))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    let lock_path = dir.join(format!("{key}.lock"));
    let lock = std::fs::File::create(&lock_path).map_err(io_text("create", &lock_path))?;
    lock.lock().map_err(io_text("lock", &lock_path))?;
    if usable(&snap, &len_record) {
        return Ok(Snapshot {
            path: snap,
            made_in: None,
        });
    }
    // Not whole (or not there): never used as it is.
    let _ = std::fs::remove_file(&len_record);
    let _ = std::fs::remove_file(&snap);
    let started = Instant::now();
    let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let made = make(&tmp).and_then(|()| {
        let file = std::fs::File::open(&tmp).map_err(io_text("open", &tmp))?;
        file.sync_all().map_err(io_text("sync", &tmp))?;
        let mut magic = [0u8; 4];
        let len = file.metadata().map_err(io_text("read", &tmp))?.len();
        (&file)
            .read_exact(&mut magic)
            .map_err(io_text("read", &tmp))?;
        if &magic != STREAM_MAGIC {
            return Err(format!(
                "QEMU wrote {} without its stream header",
                tmp.display()
            ));
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
            .map_err(io_text("make readable", &tmp))?;
        std::fs::rename(&tmp, &snap).map_err(io_text("rename into", &snap))?;
        let len_tmp = dir.join(format!(".{key}.{}.len.tmp", std::process::id()));
        std::fs::write(&len_tmp, format!("{len}\n")).map_err(io_text("write", &len_tmp))?;
        std::fs::rename(&len_tmp, &len_record).map_err(io_text("rename into", &len_record))
    });
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    prune(dir, std::time::SystemTime::now());
    Ok(Snapshot {
        path: snap,
        made_in: Some(started.elapsed()),
    })
}

/// Records that a snapshot was used now (its length record's modification time), for [`prune`].
fn mark_used(len_record: &Path) {
    let _ = std::fs::File::options()
        .write(true)
        .open(len_record)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// Removes, as of `now`, the snapshots in `dir` that no launch used for [`UNUSED_FOR`] (their
/// length record's modification time, or the snapshot's own without a record) and what makes
/// that died left behind. A bottle restored from a removed snapshot keeps running: its jail
/// holds the file. Lock files stay (a launch may hold one). Best effort.
pub fn prune(dir: &Path, now: std::time::SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let age = |p: &Path| {
        std::fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            if (name.ends_with(".tmp") || name.starts_with(".make."))
                && age(&path).is_some_and(|a| a > STALE_TEMPORARY)
            {
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
            continue;
        }
        let Some(key) = name.strip_suffix(".snap") else {
            continue;
        };
        let record = dir.join(format!("{key}.len"));
        let used = age(&record).or_else(|| age(&path));
        if used.is_some_and(|a| a > UNUSED_FOR) {
            let _ = std::fs::remove_file(&record);
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The name of a maker's empty workspace in the temporary directory begins with this.
const EMPTY_WORKSPACE_PREFIX: &str = "bot-bottle-snapshot-";

/// Removes, as of `now`, the empty workspaces in `tmp` that makes killed before they could
/// remove their own left behind (a launcher killed with SIGKILL runs no destructor), once they
/// are older than [`STALE_TEMPORARY`] (a make takes at most [`MAKE_TIMEOUT`]). Only empty
/// directories go (`rmdir`): a directory that holds anything, a file or a symbolic link of
/// that name is left as it is. Best effort.
fn prune_empty_workspaces(tmp: &Path, now: std::time::SystemTime) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(EMPTY_WORKSPACE_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        let stale = std::fs::symlink_metadata(&path).is_ok_and(|m| {
            m.is_dir()
                && m.modified()
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|a| a > STALE_TEMPORARY)
        });
        if stale {
            let _ = std::fs::remove_dir(&path);
        }
    }
}

/// Removes the snapshot at `path` and its length record, so the next launch makes it anew
/// (a bottle could not be restored from it).
pub fn discard(path: &Path) {
    let _ = std::fs::remove_file(path.with_extension("len"));
    let _ = std::fs::remove_file(path);
}

/// The longest QMP line read (an answer of `query-migrate` is a few hundred bytes).
const MAX_QMP_LINE: u64 = 64 << 10;

/// One QMP command and its answer (events before it are skipped), by `deadline`.
fn qmp(
    reader: &mut BufReader<UnixStream>,
    writer: &mut UnixStream,
    command: &serde_json::Value,
    deadline: Instant,
) -> Result<serde_json::Value, String> {
    writer
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| format!("cannot write to QEMU's QMP socket: {e}"))?;
    loop {
        if Instant::now() > deadline {
            return Err(format!("QEMU did not answer {command} in time"));
        }
        let mut line = String::new();
        if reader
            .by_ref()
            .take(MAX_QMP_LINE)
            .read_line(&mut line)
            .map_err(|e| format!("cannot read QEMU's QMP socket: {e}"))?
            == 0
        {
            return Err("QEMU closed its QMP socket".into());
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
            format!(
                "QEMU's QMP answer is not JSON ({e}): {}",
                line.chars().take(200).collect::<String>()
            )
        })?;
        if let Some(ret) = v.get("return") {
            return Ok(ret.clone());
        }
        if let Some(err) = v.get("error") {
            return Err(format!("QEMU refused {command}: {err}"));
        }
    }
}

fn console_tail(log: &Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let start = text.len().saturating_sub(2048);
    let text = String::from_utf8_lossy(&text[start..]).replace('\r', "");
    if text.trim().is_empty() {
        "(the console printed nothing)".to_owned()
    } else {
        text.trim_end().to_owned()
    }
}

/// What a snapshot is made of and where its QEMU runs ([`make`]).
pub struct Maker<'a> {
    /// The device set's plan ([`cmdline::device_set`]).
    pub plan: &'a VmPlan,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    /// The bottle's resources: the jail's limits are a bottle's jail's (QEMU's own memory on
    /// top of the guest's).
    pub resources: Resources,
    /// The jail's identity (a native bottle's: lowercase letters, digits, dashes).
    pub identity: String,
    /// The native backend of the bottles' QEMU jails.
    pub jail: &'a dyn Backend,
}

/// The host sockets of the maker's jail, under its work directory: `(file name, port in the
/// jail)`.
const MAKER_SOCKETS: [(&str, u16); 4] = [
    ("control.sock", cmdline::MAKER_CONTROL_PORT),
    ("console.sock", cmdline::MAKER_CONSOLE_PORT),
    ("qmp.sock", cmdline::MAKER_QMP_PORT),
    ("migration.sock", cmdline::MAKER_MIGRATION_PORT),
];
/// Where the maker's jail sees its home (an empty directory of the work directory's).
const JAIL_MAKER_HOME: &str = "/run/bot-bottle/qemu/home";

/// The jail the snapshot's QEMU runs in: a native bottle like a bottle's QEMU's, whose command
/// is QEMU with [`cmdline::snapshot_args`], whose only files are the kernel and the initramfs
/// (read-only), whose workspace is the empty directory `empty` and home `work/home`, and
/// whose only ways out are the forwards of [`MAKER_SOCKETS`] to sockets in `work`.
fn jail_spec(m: &Maker, work: &Path, empty: &Path) -> LaunchSpec {
    let mut argv = vec![m.plan.qemu.to_string_lossy().into_owned()];
    argv.extend(cmdline::snapshot_args(m.plan));
    LaunchSpec {
        identity: m.identity.clone(),
        argv,
        env: [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into(),
        workspace: Workspace {
            host: empty.to_path_buf(),
            inside: cmdline::JAIL_MAKER_EMPTY.into(),
            mode: WorkspaceMode::Mount,
        },
        home: Home {
            host: work.join("home"),
            inside: JAIL_MAKER_HOME.into(),
        },
        files: vec![
            ReadOnlyFile {
                host: m.kernel.to_path_buf(),
                inside: cmdline::JAIL_KERNEL.into(),
            },
            ReadOnlyFile {
                host: m.initramfs.to_path_buf(),
                inside: cmdline::JAIL_INITRAMFS.into(),
            },
        ],
        forwards: MAKER_SOCKETS
            .iter()
            .map(|(name, port)| Forward {
                inside_port: *port,
                host_unix_socket: work.join(name),
            })
            .collect(),
        interactive: false,
        resources: Resources {
            memory_bytes: m
                .resources
                .memory_bytes
                .saturating_add(super::QEMU_OVERHEAD_BYTES),
            ..m.resources
        },
        dangerously_run_as_host_root: false,
    }
}

/// Boots `m`'s device set to the snapshot point in a jail like a bottle's QEMU's and saves it
/// to `out` (see the module's doc). `work` is an empty directory of the launcher's, which the
/// jail never sees: it holds the host ends of the jail's forwards and the console log, which
/// the launcher writes from the console's forward. The migration stream, too, comes out of the
/// jail through a forward and is written to `out` by the launcher, so nothing of the jail's uid
/// lands in the cache. When the jail cannot be set up, nothing is made and the error says why
/// (the caller boots the guest instead).
pub fn make(m: &Maker, work: &Path, out: &Path) -> Result<(), String> {
    let home = work.join("home");
    std::fs::create_dir_all(&home).map_err(io_text("create", &home))?;
    // The jail's workspace, where the 9p shares point: empty, and outside `$BOT_BOTTLE_HOME`
    // (a bottle's workspace may not come from a private tree, and the cache may be in one).
    prune_empty_workspaces(&std::env::temp_dir(), std::time::SystemTime::now());
    let empty = tempfile::Builder::new()
        .prefix(EMPTY_WORKSPACE_PREFIX)
        .tempdir()
        .map_err(|e| {
            format!(
                "cannot create a directory in {}: {e}",
                std::env::temp_dir().display()
            )
        })?;
    let mut listeners = Vec::new();
    for (name, _) in MAKER_SOCKETS {
        let path = work.join(name);
        listeners.push(UnixListener::bind(&path).map_err(io_text("listen on", &path))?);
    }
    let [_control, console_l, qmp_l, migration_l]: [UnixListener; 4] = listeners
        .try_into()
        .map_err(|_| "the maker's sockets were not all made".to_owned())?;
    let stop = Arc::new(Mutex::new(false));
    let console = work.join("console.log");
    let console_copy = {
        let (stop, console) = (stop.clone(), console.clone());
        std::thread::spawn(move || {
            if let Some(mut stream) = super::accept_one(&console_l, &stop)
                && let Ok(mut file) = std::fs::File::create(&console)
            {
                let _ = std::io::copy(&mut stream, &mut file);
            }
        })
    };
    let spec = jail_spec(m, work, empty.path());
    let stdio = BottleStdio {
        stdin: StdioMode::Null,
        stdout: StdioMode::Null,
        stderr: StdioMode::Piped,
    };
    let mut jail = match m.jail.launch(&spec, stdio) {
        Ok(jail) => jail,
        Err(e) => {
            *stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
            return Err(format!(
                "cannot start the jail of the QEMU that makes it: {e}"
            ));
        }
    };
    let stderr = jail.take_stderr().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        })
    });
    let running = || {
        m.jail
            .list()
            .is_ok_and(|l| l.iter().any(|b| b.identity == m.identity && b.running))
    };
    // The migration stream, through the jail's forward, into `out` (the launcher's file), at
    // most the guest's memory and its devices' state.
    let limit = (m.plan.memory_mib << 20) + (m.plan.memory_mib << 14) + (64 << 20);
    let (copied_tx, copied) = std::sync::mpsc::channel();
    let migration_copy = {
        let (stop, out) = (stop.clone(), out.to_path_buf());
        std::thread::spawn(move || {
            let _ = copied_tx.send(copy_stream(&migration_l, &out, limit, &stop));
        })
    };
    let result = save(&running, &console, &qmp_l, &copied);
    let _ = jail.kill();
    let status = jail.wait();
    // The jail is gone, and with it every connection of its forwards.
    *stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
    let _ = console_copy.join();
    let _ = migration_copy.join();
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    result.map_err(|e| {
        let qemu = if stderr.trim().is_empty() {
            String::new()
        } else {
            format!("; QEMU said: {}", stderr.trim())
        };
        format!(
            "{e} (QEMU's jail: {}){qemu}; the console's last lines:\n{}",
            status.map_or_else(|e| e.to_string(), |s| format!("exited {}", s.code)),
            console_tail(&console)
        )
    })
}

/// Writes the migration stream that comes to `listener` into `out` (created here), at most
/// `limit` bytes; its length.
fn copy_stream(
    listener: &UnixListener,
    out: &Path,
    limit: u64,
    stop: &Mutex<bool>,
) -> Result<u64, String> {
    let file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(io_text("create", out))?;
    let stream =
        super::accept_one(listener, stop).ok_or("QEMU's migration stream did not connect")?;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
    let n = std::io::copy(&mut stream.take(limit + 1), &mut file).map_err(|e| {
        format!(
            "cannot copy QEMU's migration stream into {}: {e}",
            out.display()
        )
    })?;
    if n > limit {
        return Err(format!(
            "QEMU's migration stream is longer than the guest's memory and devices can be ({limit} bytes)"
        ));
    }
    file.flush()
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(n)
}

/// Waits for the snapshot point on the `console` log, takes QEMU's QMP connection on `qmp_l`
/// and has it migrate the running guest to the jail's migration port, whose stream
/// [`copy_stream`] reports on `copied`; `running` says whether QEMU's jail still runs.
fn save(
    running: &dyn Fn() -> bool,
    console: &Path,
    qmp_l: &UnixListener,
    copied: &std::sync::mpsc::Receiver<Result<u64, String>>,
) -> Result<(), String> {
    let deadline = Instant::now() + MAKE_TIMEOUT;
    let alive = || -> Result<(), String> {
        if !running() {
            return Err("the snapshot's guest ended before its snapshot point".to_owned());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the snapshot's guest did not reach its snapshot point within {}s",
                MAKE_TIMEOUT.as_secs()
            ));
        }
        Ok(())
    };
    loop {
        alive()?;
        let text = std::fs::read(console).unwrap_or_default();
        if text
            .windows(SNAPSHOT_POINT.len())
            .any(|w| w == SNAPSHOT_POINT.as_bytes())
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the shell reach the reseed's read (it prints the line just before running it).
    std::thread::sleep(Duration::from_millis(200));
    // QEMU connected to its QMP port when it started; the forward's connection waits here.
    qmp_l
        .set_nonblocking(true)
        .map_err(|e| format!("cannot poll QEMU's QMP socket: {e}"))?;
    let stream = loop {
        match qmp_l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                alive().map_err(|why| format!("{why}; QEMU's monitor did not connect"))?;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("cannot accept QEMU's QMP connection: {e}")),
        }
    };
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(MAKE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    reader
        .by_ref()
        .take(MAX_QMP_LINE)
        .read_line(&mut greeting)
        .map_err(|e| format!("cannot read QEMU's QMP greeting: {e}"))?;
    qmp(
        &mut reader,
        &mut writer,
        &serde_json::json!({"execute": "qmp_capabilities"}),
        deadline,
    )?;
    // The default bandwidth limit (32 MiB/s) would make the save take seconds.
    qmp(
        &mut reader,
        &mut writer,
        &serde_json::json!({"execute": "migrate-set-parameters",
            "arguments": {"max-bandwidth": 8u64 << 30}}),
        deadline,
    )?;
    migrate(&mut reader, &mut writer, deadline)?;
    // QEMU closes the stream once the migration completed: the copy ends.
    match copied.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(copied) => copied?,
        Err(_) => return Err("QEMU's migration stream did not end in time".into()),
    };
    let _ = qmp(
        &mut reader,
        &mut writer,
        &serde_json::json!({"execute": "quit"}),
        deadline,
    );
    Ok(())
}

/// Has QEMU migrate the running guest to the jail's migration port and waits until it did.
fn migrate(
    reader: &mut BufReader<UnixStream>,
    writer: &mut UnixStream,
    deadline: Instant,
) -> Result<(), String> {
    qmp(
        reader,
        writer,
        &serde_json::json!({"execute": "migrate",
            "arguments": {"uri": format!("tcp:127.0.0.1:{}", cmdline::MAKER_MIGRATION_PORT)}}),
        deadline,
    )?;
    loop {
        let state = qmp(
            reader,
            writer,
            &serde_json::json!({"execute": "query-migrate"}),
            deadline,
        )?;
        match state.get("status").and_then(|s| s.as_str()) {
            Some("completed") => return Ok(()),
            Some("failed" | "cancelled") => {
                return Err(format!("QEMU could not save the guest: {state}"));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err("QEMU did not finish saving the guest in time".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(dir: &Path, key: &str, body: &[u8]) {
        std::fs::write(dir.join(format!("{key}.snap")), body).unwrap();
        std::fs::write(dir.join(format!("{key}.len")), format!("{}\n", body.len())).unwrap();
    }

    #[test]
    fn a_whole_snapshot_is_used_and_a_truncated_or_foreign_one_is_made_anew() {
        let dir = tempfile::tempdir().unwrap();
        let made = std::cell::Cell::new(0);
        let make = |out: &Path| {
            made.set(made.get() + 1);
            std::fs::write(out, b"QEVM\0\0\0\x03rest").map_err(|e| e.to_string())
        };
        let first = cached_or_made(dir.path(), "k", &make).unwrap();
        assert!(first.made_in.is_some());
        assert_eq!(made.get(), 1);
        assert_eq!(std::fs::read(&first.path).unwrap(), b"QEVM\0\0\0\x03rest");
        let again = cached_or_made(dir.path(), "k", &make).unwrap();
        assert_eq!((again.made_in, made.get()), (None, 1));
        // Truncated: its length is not the recorded one.
        std::fs::write(&first.path, b"QEVM\0").unwrap();
        assert!(
            cached_or_made(dir.path(), "k", &make)
                .unwrap()
                .made_in
                .is_some()
        );
        assert_eq!(made.get(), 2);
        // Not a QEMU stream, with a matching record.
        whole(dir.path(), "k", b"garbage!!!!!");
        assert!(
            cached_or_made(dir.path(), "k", &make)
                .unwrap()
                .made_in
                .is_some()
        );
        assert_eq!(made.get(), 3);
        // No length record (a crash between the two renames).
        std::fs::remove_file(dir.path().join("k.len")).unwrap();
        assert!(
            cached_or_made(dir.path(), "k", &make)
                .unwrap()
                .made_in
                .is_some()
        );
        assert_eq!(made.get(), 4);
        // Discarded after a failed restore.
        discard(&first.path);
        assert!(!first.path.exists());
        assert!(
            cached_or_made(dir.path(), "k", &make)
                .unwrap()
                .made_in
                .is_some()
        );
    }

    use super::super::names_in;

    /// Sets `path`'s modification time to `secs` before `now`.
    fn age(path: &Path, now: std::time::SystemTime, secs: u64) {
        std::fs::File::open(path)
            .unwrap()
            .set_modified(now - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn empty_workspaces_of_killed_makes_are_removed_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let now = std::time::SystemTime::now();
        let made = |name: &str, secs: u64| {
            let p = t.join(name);
            std::fs::create_dir(&p).unwrap();
            age(&p, now, secs);
            p
        };
        // A killed make's workspace; one of a make still running; one that holds a file (not
        // a maker's, or written into: never removed); another program's directory.
        made("bot-bottle-snapshot-killed", 2 * 3600);
        made("bot-bottle-snapshot-running", 60);
        let full = made("bot-bottle-snapshot-full", 2 * 3600);
        std::fs::write(full.join("kept"), "data").unwrap();
        age(&full, now, 2 * 3600);
        made("other-program", 2 * 3600);
        std::os::unix::fs::symlink(t.join("other-program"), t.join("bot-bottle-snapshot-link"))
            .unwrap();
        prune_empty_workspaces(t, now);
        assert_eq!(
            names_in(t),
            [
                "bot-bottle-snapshot-full",
                "bot-bottle-snapshot-link",
                "bot-bottle-snapshot-running",
                "other-program"
            ]
        );
        assert_eq!(std::fs::read(full.join("kept")).unwrap(), b"data");
    }

    #[test]
    fn snapshots_unused_for_two_weeks_and_dead_makes_leftovers_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let now = std::time::SystemTime::now();
        let ago = |p: &Path, secs: u64| age(p, now, secs);
        for key in ["old", "recent", "norecord"] {
            whole(d, key, b"QEVM");
            std::fs::write(d.join(format!("{key}.lock")), "").unwrap();
        }
        std::fs::remove_file(d.join("norecord.len")).unwrap();
        // "old" was used 15 days ago, its snapshot written long before that; "recent" was
        // written long ago but used yesterday.
        ago(&d.join("old.len"), 15 * 24 * 3600);
        ago(&d.join("old.snap"), 30 * 24 * 3600);
        ago(&d.join("recent.len"), 24 * 3600);
        ago(&d.join("recent.snap"), 30 * 24 * 3600);
        ago(&d.join("norecord.snap"), 15 * 24 * 3600);
        std::fs::write(d.join(".k.1.tmp"), "half").unwrap();
        ago(&d.join(".k.1.tmp"), 2 * 3600);
        std::fs::write(d.join(".k.2.tmp"), "being written").unwrap();
        std::fs::create_dir(d.join(".make.abc")).unwrap();
        ago(&d.join(".make.abc"), 2 * 3600);
        prune(d, now + Duration::from_secs(60));
        assert_eq!(
            names_in(d),
            [
                ".k.2.tmp",
                "norecord.lock",
                "old.lock",
                "recent.len",
                "recent.lock",
                "recent.snap"
            ]
        );
        // A use marks it: not pruned a week later.
        let used = cached_or_made(d, "recent", &|_| Err("not made".into())).unwrap();
        assert_eq!(used.made_in, None);
        prune(d, now + Duration::from_secs(7 * 24 * 3600));
        assert!(d.join("recent.snap").exists());
    }

    #[test]
    fn a_failed_or_headerless_save_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = cached_or_made(dir.path(), "k", &|out: &Path| {
            std::fs::write(out, b"partial").unwrap();
            Err("the guest ended".into())
        })
        .unwrap_err();
        assert_eq!(err, "the guest ended");
        let err = cached_or_made(dir.path(), "k", &|out: &Path| {
            std::fs::write(out, b"not a stream").map_err(|e| e.to_string())
        })
        .unwrap_err();
        assert!(err.contains("without its stream header"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "k.lock")
            .collect();
        assert_eq!(left, Vec::<String>::new());
    }

    #[test]
    fn the_maker_runs_in_a_jail_that_has_the_kernel_and_initramfs_and_only_forwards_to_work() {
        let plan = VmPlan {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            accel: super::super::assets::Accel::Tcg,
            cpus: 2,
            memory_mib: 1024,
            tsc_khz: None,
            hz: None,
            interactive: false,
            ports: vec![3128],
            workspace: "/w".into(),
            home: "/h".into(),
            control_port: 1,
            console_port: 2,
            relay: "/r".into(),
            restore: false,
            tcg_cache_mib: cmdline::TCG_CACHE_MIB,
        };
        let jail = crate::native::NativeBackend::new(crate::native::NativeConfig::new(
            crate::HelperCommand {
                exe: "/usr/bin/bot-bottle-helper".into(),
                args: vec![],
            },
            Path::new("/home/alice/.bot-bottle"),
        ));
        let resources = Resources {
            millicpus: 1500,
            memory_bytes: 1 << 30,
            pids: 64,
            allow_unenforced: false,
        };
        let maker = Maker {
            plan: &plan,
            kernel: Path::new("/k/vmlinux"),
            initramfs: Path::new("/k/initramfs.cpio"),
            resources,
            identity: "qemu-snapshot-0123456789abcdef".into(),
            jail: &jail,
        };
        let work = Path::new("/cache/snapshots/.make.x");
        let spec = jail_spec(&maker, work, Path::new("/tmp/bot-bottle-snapshot-y"));
        let mut argv = vec!["/usr/bin/qemu-system-x86_64".to_owned()];
        argv.extend(cmdline::snapshot_args(&plan));
        pretty_assertions::assert_eq!(
            spec,
            LaunchSpec {
                identity: "qemu-snapshot-0123456789abcdef".into(),
                argv,
                env: [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into(),
                workspace: Workspace {
                    host: "/tmp/bot-bottle-snapshot-y".into(),
                    inside: "/run/bot-bottle/qemu/empty".into(),
                    mode: WorkspaceMode::Mount,
                },
                home: Home {
                    host: "/cache/snapshots/.make.x/home".into(),
                    inside: "/run/bot-bottle/qemu/home".into(),
                },
                files: vec![
                    ReadOnlyFile {
                        host: "/k/vmlinux".into(),
                        inside: "/run/bot-bottle/qemu/kernel".into(),
                    },
                    ReadOnlyFile {
                        host: "/k/initramfs.cpio".into(),
                        inside: "/run/bot-bottle/qemu/initramfs".into(),
                    },
                ],
                forwards: [
                    (40000, "control.sock"),
                    (40001, "console.sock"),
                    (40002, "qmp.sock"),
                    (40003, "migration.sock"),
                ]
                .into_iter()
                .map(|(inside_port, name)| Forward {
                    inside_port,
                    host_unix_socket: work.join(name),
                })
                .collect(),
                interactive: false,
                // A bottle's jail's limits: QEMU's own memory on top of the guest's.
                resources: Resources {
                    memory_bytes: (1 << 30) + super::super::QEMU_OVERHEAD_BYTES,
                    ..resources
                },
                dangerously_run_as_host_root: false,
            }
        );
    }

    #[test]
    fn the_migration_stream_is_written_whole_up_to_its_bound_and_refused_beyond() {
        let dir = tempfile::tempdir().unwrap();
        let stop = Mutex::new(false);
        for (sent, limit) in [(1000usize, 1000u64), (1001, 1000)] {
            let sock = dir.path().join(format!("m{sent}.sock"));
            let listener = UnixListener::bind(&sock).unwrap();
            let client = std::thread::spawn(move || {
                let mut s = UnixStream::connect(&sock).unwrap();
                // The launcher stops reading past the bound; what it did not read is lost.
                let _ = s.write_all(&vec![7u8; sent]);
            });
            let out = dir.path().join(format!("out{sent}"));
            let copied = copy_stream(&listener, &out, limit, &stop);
            client.join().unwrap();
            if sent as u64 <= limit {
                assert_eq!(copied, Ok(1000));
                assert_eq!(std::fs::read(&out).unwrap(), vec![7u8; 1000]);
            } else {
                let err = copied.unwrap_err();
                assert!(err.contains("longer than"), "{err}");
            }
            // Created by the launcher, readable by nobody else until published.
            assert_eq!(
                std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // A stream that never connects: the copy ends when told to stop.
        let listener = UnixListener::bind(dir.path().join("never.sock")).unwrap();
        *stop.lock().unwrap() = true;
        let err = copy_stream(&listener, &dir.path().join("never"), 10, &stop).unwrap_err();
        assert_eq!(err, "QEMU's migration stream did not connect");
    }

    #[test]
    fn the_key_changes_with_the_device_set_and_each_input_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, name).unwrap();
            p
        };
        let (qemu, kernel, initramfs) = (file("qemu"), file("kernel"), file("initramfs"));
        let plan = VmPlan {
            qemu: qemu.clone(),
            accel: super::super::assets::Accel::Tcg,
            cpus: 1,
            memory_mib: 512,
            tsc_khz: None,
            hz: None,
            interactive: false,
            ports: vec![3128],
            workspace: "/w".into(),
            home: "/h".into(),
            control_port: 40000,
            console_port: 40001,
            relay: "/r".into(),
            restore: false,
            tcg_cache_mib: cmdline::TCG_CACHE_MIB,
        };
        let k = key(&plan, &kernel, &initramfs).unwrap();
        let mut same = plan.clone();
        same.ports = vec![1, 2];
        same.workspace = "/other".into();
        same.restore = true;
        same.tcg_cache_mib = 64;
        assert_eq!(key(&same, &kernel, &initramfs).unwrap(), k);
        for change in [
            |p: &mut VmPlan| p.cpus = 2,
            |p: &mut VmPlan| p.memory_mib = 1024,
            |p: &mut VmPlan| p.interactive = true,
            |p: &mut VmPlan| p.accel = super::super::assets::Accel::Kvm,
            |p: &mut VmPlan| p.tsc_khz = Some(1),
        ] {
            let mut other = plan.clone();
            change(&mut other);
            assert_ne!(key(&other, &kernel, &initramfs).unwrap(), k);
        }
        assert_ne!(key(&plan, &initramfs, &kernel).unwrap(), k);
        // The same archive written again (a new inode and time): the same key.
        std::fs::remove_file(&initramfs).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&initramfs, "initramfs").unwrap();
        assert_eq!(key(&plan, &kernel, &initramfs).unwrap(), k);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&kernel, "another kernel").unwrap();
        assert_ne!(key(&plan, &kernel, &initramfs).unwrap(), k);
        let err = key(&plan, &dir.path().join("gone"), &initramfs).unwrap_err();
        assert!(err.contains("gone"), "{err}");
    }
}
