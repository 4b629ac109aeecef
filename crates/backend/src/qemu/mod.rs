//! The qemu backend: the agent behind its own kernel, in a QEMU `microvm` that itself runs
//! jailed in a native bottle.
//!
//! Layers, outside in:
//! * **the jail** — a native bottle ([`crate::native`]) whose "agent" is QEMU: its namespaces,
//!   empty network namespace, unprivileged uid, seccomp, Landlock and cgroups hold a guest
//!   that escapes QEMU. Only what QEMU needs is made visible to it: the kernel, the
//!   initramfs, the guest executable (`bot-bottle-guest`: stage 2 and the relay) and the
//!   guest spec, read-only under
//!   `/run/bot-bottle/qemu/`; the sidecar endpoints are the native forwards on the jail's
//!   loopback, plus two more to this process's control and console sockets.
//! * **the VM** — its own kernel; devices: console, virtio-serial ports, three 9p shares (the
//!   jail's root read-only, so the guest sees exactly what a native bottle sees, and the
//!   workspace and home read-write), one NIC on QEMU's user network with `restrict=on` whose
//!   only doors are the `guestfwd`s to the sidecar ports (see [`cmdline`]); no monitor.
//! * **the guest** — stage 1 in our initramfs ([`initramfs`]), stage 2 the guest executable
//!   ([`crate::inbottle::qemu_guest`]): the agent as uid 1000 with the spec's environment and
//!   the sidecars on `127.0.0.1:<port>`, as on native.
//!
//! A guest is normally not booted but restored from a snapshot of the same device set
//! ([`snapshot`]), taken at stage 1's snapshot point; stage 1's first step after it, in a
//! booted guest too, reseeds the kernel's CRNG with the 64 bytes the host sends first on the
//! control port ([`initramfs::RESEED`]), so no two bottles draw the same random bytes.
//!
//! The host talks to the guest over the control port: `ready` once the agent runs, `exit <n>`
//! when it ended (acknowledged before the guest powers off); `term` and `winsize` go the other
//! way. A guest that does not reach `ready` within the boot bound is killed and reported with
//! the tail of its console log (`console.log` in the bottle's logs, [`console_log_path`]).

pub mod assets;
pub mod cmdline;
mod elf;
pub mod initramfs;
pub mod kvm;
mod package;
pub mod preflight;
pub mod snapshot;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::inbottle::qemu_guest::GuestSpec;
use crate::native::{HelperCommand, NativeBackend, NativeConfig};
use crate::preflight::BackendStatus;
use crate::spec::{BottleStdio, Forward, LaunchSpec, ReadOnlyFile, StdioMode};
use crate::{
    Backend, BackendError, BackendKind, BottleExit, BottleInfo, CleanupAction, RunningBottle,
};

/// The guest executable's file name, beside `bot-bottle` (its `bot-bottle-guest` binary):
/// stage 2 of the guest's boot and the relay in QEMU's jail, small so the guest reads little
/// over 9p before the agent starts.
pub const GUEST_EXE_NAME: &str = "bot-bottle-guest";

/// How long a guest may take from QEMU's start to the agent running.
pub const BOOT_TIMEOUT_ENV: &str = "BOT_BOTTLE_QEMU_BOOT_TIMEOUT";
const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Host memory for QEMU itself on top of the guest's RAM (the jail's cgroup limit): its own
/// heap, the 9p and network buffers and TCG's translation cache (at most 256 MiB, [`cmdline::tcg_cache_mib`]).
const QEMU_OVERHEAD_BYTES: u64 = 512 << 20;
/// How much of the console log an error shows.
const CONSOLE_TAIL_BYTES: usize = 4096;

/// Configuration of the qemu backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// The native helper of QEMU's jail: the small `bot-bottle-helper` where it is installed
    /// ([`crate::OpenOptions::native_helper`], as for a native bottle), else this executable's
    /// hidden subcommand.
    pub helper: HelperCommand,
    /// `$BOT_BOTTLE_HOME`.
    pub bot_bottle_home: PathBuf,
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// A static busybox for stage 1.
    pub busybox: PathBuf,
    /// The guest executable (stage 2 and the relay, [`GUEST_EXE_NAME`]): by default beside
    /// the helper's executable, where `cargo build` and `cargo install` put it.
    pub guest: PathBuf,
    /// The guest kernel; `None`: [`assets::guest_kernel`] at each launch.
    pub kernel: Option<assets::GuestKernel>,
    /// The accelerator; `None`: [`assets::choose_accel`] at each launch.
    pub accel: Option<assets::Accel>,
    /// How long a guest may take to start the agent; `None`: `$BOT_BOTTLE_QEMU_BOOT_TIMEOUT`
    /// seconds, else 120 s.
    pub boot_timeout: Option<Duration>,
    /// Whether guests are restored from a snapshot ([`snapshot`]) instead of booted: on
    /// unless `BOT_BOTTLE_QEMU_SNAPSHOT=0`.
    pub snapshots: bool,
    /// Where snapshots are cached: [`snapshots_dir`].
    pub snapshot_dir: PathBuf,
    /// How the host sends the guest its seed: whole, except in the tests of the reseed's
    /// failure path ([`SeedDelivery`]).
    #[doc(hidden)]
    pub seed_delivery: SeedDelivery,
}

/// How the host sends a guest the 64 bytes its stage 1 reseeds from. Anything but
/// [`SeedDelivery::Whole`] is a fault the tests inject to check that the guest refuses to go
/// on and the start fails saying why: the port closed before anything was sent, or after the
/// first few bytes.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeedDelivery {
    #[default]
    Whole,
    /// The control port closed before the seed.
    Nothing,
    /// Only the first `n` bytes (fewer than 64), then the control port closed.
    Short(usize),
}

impl QemuConfig {
    /// The defaults: QEMU from `$PATH`, a statically linked busybox (`busybox-static`).
    pub fn new(helper: HelperCommand, bot_bottle_home: &Path) -> QemuConfig {
        QemuConfig {
            guest: helper.exe.with_file_name(GUEST_EXE_NAME),
            helper,
            bot_bottle_home: bot_bottle_home.to_path_buf(),
            qemu: assets::find_qemu()
                .unwrap_or_else(|_| PathBuf::from("/usr/bin/qemu-system-x86_64")),
            busybox: assets::find_static_busybox()
                .unwrap_or_else(|_| PathBuf::from("/bin/busybox")),
            kernel: None,
            accel: None,
            boot_timeout: None,
            snapshots: snapshot::enabled(),
            snapshot_dir: snapshots_dir(),
            seed_delivery: SeedDelivery::Whole,
        }
    }

    fn runtime_dir(&self) -> PathBuf {
        self.bot_bottle_home.join("run").join("qemu")
    }
}

/// The qemu backend.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    config: QemuConfig,
    jail: NativeBackend,
}

/// The qemu backend of `options` ([`crate::open`]).
pub fn open(options: &crate::OpenOptions) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(QemuBackend::new(config(options))))
}

/// The configuration [`open`] uses: QEMU's jail runs the same small in-bottle helper as a
/// native bottle ([`crate::OpenOptions::native_helper`]). Two of its processes live as long
/// as the VM (the helper outside the jail's namespaces and the jail's init, the forwarder),
/// and as copies of all of `bot-bottle` they held 13-15 MiB (PSS) of every idle bottle: the
/// pages its relocations dirtied (bench/README.md, "qemu: ... session qemu5").
fn config(options: &crate::OpenOptions) -> QemuConfig {
    QemuConfig::new(options.native_helper(), &options.home)
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackendError {
    let path = path.to_path_buf();
    move |source| BackendError::Io {
        action,
        path,
        source,
    }
}

fn unavailable(reason: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable {
        backend: BackendKind::Qemu,
        reason: reason.to_string(),
    }
}

/// The native jail of a VM under `accel`: its records under `run/qemu/jail`; under KVM it
/// gets `/dev/kvm`, the only device of the host's beyond the standard ones (`null`, `zero`,
/// `tty`, ...), and under TCG not even that.
fn jail_config(config: &QemuConfig, accel: assets::Accel) -> NativeConfig {
    let mut native = NativeConfig::new(config.helper.clone(), &config.bot_bottle_home);
    native.runtime_dir = config.runtime_dir().join("jail");
    if accel == assets::Accel::Kvm {
        native.devices = vec![PathBuf::from("/dev/kvm")];
    }
    native
}

/// What the host's control and console threads report.
enum Event {
    Ready,
    Exit(i32),
    GuestError(String),
    JailExited(Result<BottleExit, BackendError>),
}

/// The last bytes of the console, shared with the console thread.
type Tail = Arc<Mutex<VecDeque<u8>>>;

impl QemuBackend {
    pub fn new(config: QemuConfig) -> QemuBackend {
        let jail = NativeBackend::new(jail_config(&config, assets::Accel::Tcg));
        QemuBackend { config, jail }
    }

    /// The native jail QEMU runs in under `accel`: [`QemuBackend::jail_config`].
    pub fn jail_config(&self, accel: assets::Accel) -> NativeConfig {
        jail_config(&self.config, accel)
    }

    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    fn bottle_dir(&self, identity: &str) -> PathBuf {
        self.config.runtime_dir().join("vm").join(identity)
    }

    /// The VM of a bottle with `resources` (interactive or not), its ports and paths left
    /// out (those of [`cmdline::device_set`]): what its snapshot depends on.
    fn device_plan(
        &self,
        resources: &crate::spec::Resources,
        interactive: bool,
        accel: assets::Accel,
        kernel: &assets::GuestKernel,
    ) -> Result<cmdline::VmPlan, BackendError> {
        let (cpus, memory_mib) = resources.vm_size();
        let tcg_cache_mib = cmdline::tcg_cache_mib().map_err(BackendError::InvalidSpec)?;
        Ok(cmdline::device_set(&cmdline::VmPlan {
            qemu: self.config.qemu.clone(),
            accel,
            cpus,
            memory_mib,
            tsc_khz: cmdline::host_tsc_khz(),
            hz: cmdline::kernel_hz(&kernel.image, &kernel.version),
            interactive,
            ports: Vec::new(),
            workspace: PathBuf::new(),
            home: PathBuf::new(),
            control_port: 0,
            console_port: 0,
            relay: PathBuf::new(),
            restore: false,
            tcg_cache_mib,
        }))
    }

    /// Makes (or finds) the snapshot bottles with `resources` restore from, as a `start`
    /// would on its first launch (`bot-bottle prepare qemu`): its path, and how long making
    /// it took when it was made now.
    pub fn prepare_snapshot(
        &self,
        resources: &crate::spec::Resources,
        interactive: bool,
    ) -> Result<snapshot::Snapshot, BackendError> {
        let kernel = match &self.config.kernel {
            Some(k) => k.clone(),
            None => assets::guest_kernel().map_err(unavailable)?,
        };
        let accel = match self.config.accel {
            Some(a) => a,
            None => assets::choose_accel().map_err(unavailable)?,
        };
        let initramfs = initramfs::build_cached(
            &self.config.busybox,
            &kernel.modules,
            &assets::cache_root().join("qemu"),
        )
        .map_err(unavailable)?;
        let plan = self.device_plan(resources, interactive, accel, &kernel)?;
        self.cached_snapshot(&plan, &kernel.image, initramfs.path(), resources)
            .map_err(unavailable)
    }

    /// The snapshot of `plan` in the cache, made now if it is missing: by a QEMU in a jail
    /// like a bottle's ([`snapshot::make`]) with the limits of a bottle with `resources`.
    fn cached_snapshot(
        &self,
        plan: &cmdline::VmPlan,
        kernel: &Path,
        initramfs: &Path,
        resources: &crate::spec::Resources,
    ) -> Result<snapshot::Snapshot, String> {
        let dir = self.config.snapshot_dir.clone();
        let jail = NativeBackend::new(self.jail_config(plan.accel));
        snapshot::key(plan, kernel, initramfs).and_then(|key| {
            snapshot::cached_or_made(&dir, &key, &|out| {
                let work = tempfile::Builder::new()
                    .prefix(".make.")
                    .tempdir_in(&dir)
                    .map_err(|e| format!("cannot create a directory in {}: {e}", dir.display()))?;
                let maker = snapshot::Maker {
                    plan,
                    kernel,
                    initramfs,
                    resources: *resources,
                    identity: maker_identity(&key)?,
                    jail: &jail,
                };
                snapshot::make(&maker, work.path(), out)
            })
        })
    }

    /// The jail's spec and the guest's: QEMU as the jail's command, the VM's files placed.
    fn plans(
        &self,
        spec: &LaunchSpec,
        dir: &Path,
        accel: assets::Accel,
        kernel: &assets::GuestKernel,
        initramfs: &Path,
    ) -> Result<(LaunchSpec, Option<PathBuf>), BackendError> {
        let used: Vec<u16> = spec.forwards.iter().map(|f| f.inside_port).collect();
        let mut free = (40000u16..).filter(|p| !used.contains(p));
        let (control_port, console_port) = match (free.next(), free.next()) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(BackendError::InvalidSpec("no free jail port".into())),
        };
        let guest = GuestSpec {
            identity: spec.identity.clone(),
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            workspace: spec.workspace.inside.clone(),
            home: spec.home.inside.clone(),
            ports: used.clone(),
            interactive: spec.interactive,
            uid: 1000,
            gid: 1000,
            pids: spec.resources.pids,
            winsize: if spec.interactive {
                terminal_size()
            } else {
                None
            },
        };
        let guest_path = dir.join("guest.json");
        let json = serde_json::to_vec_pretty(&guest).map_err(|e| BackendError::Process {
            action: "encode the guest spec",
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&guest_path, json).map_err(io_err("write", &guest_path))?;
        let r = &spec.resources;
        let plan = cmdline::VmPlan {
            ports: used,
            workspace: spec.workspace.inside.clone(),
            home: spec.home.inside.clone(),
            control_port,
            console_port,
            relay: initramfs::GUEST_EXE.into(),
            ..self.device_plan(r, spec.interactive, accel, kernel)?
        };
        let mut plan = plan;
        let snapshot = self.snapshot(&plan, &kernel.image, initramfs, r);
        plan.restore = snapshot.is_some();
        let mut jail = spec.clone();
        jail.argv = cmdline::jail_argv(&plan);
        jail.env = [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into();
        jail.interactive = spec.interactive;
        jail.resources.memory_bytes = r.memory_bytes.saturating_add(QEMU_OVERHEAD_BYTES);
        for (host, inside) in [
            (self.config.guest.clone(), initramfs::GUEST_EXE),
            (kernel.image.clone(), cmdline::JAIL_KERNEL),
            (initramfs.to_path_buf(), cmdline::JAIL_INITRAMFS),
            (guest_path, initramfs::GUEST_SPEC),
        ]
        .into_iter()
        .chain(snapshot.clone().map(|s| (s, cmdline::JAIL_SNAPSHOT)))
        {
            jail.files.push(ReadOnlyFile {
                host,
                inside: inside.into(),
            });
        }
        for (port, name) in [
            (control_port, "control.sock"),
            (console_port, "console.sock"),
        ] {
            jail.forwards.push(Forward {
                inside_port: port,
                host_unix_socket: dir.join(name),
            });
        }
        Ok((jail, snapshot))
    }

    /// The snapshot `plan`'s guest is restored from ([`snapshot`]), made now if it is missing
    /// (one line on stderr says so, with the time it took); `None` (the guest boots) when
    /// snapshots are off ([`snapshot::SNAPSHOT_ENV`]) or it cannot be made, which is said on
    /// stderr with the reason. A booted guest is reseeded from the host as a restored one.
    fn snapshot(
        &self,
        plan: &cmdline::VmPlan,
        kernel: &Path,
        initramfs: &Path,
        resources: &crate::spec::Resources,
    ) -> Option<PathBuf> {
        if !self.config.snapshots {
            return None;
        }
        match self.cached_snapshot(plan, kernel, initramfs, resources) {
            Ok(s) => {
                if let Some(took) = s.made_in {
                    eprintln!(
                        "bot-bottle: made the qemu guest snapshot {} in {:.1} s (once per kernel, QEMU and VM size)",
                        s.path.display(),
                        took.as_secs_f64()
                    );
                }
                Some(s.path)
            }
            Err(e) => {
                eprintln!(
                    "bot-bottle: no qemu guest snapshot, booting the guest instead ({} to skip snapshots): {e}",
                    format_args!("{}=0", snapshot::SNAPSHOT_ENV)
                );
                None
            }
        }
    }
}

/// The identity of the jail that makes the snapshot of `key`: the key's start and 4 random
/// bytes. Unique, where the key alone is not: two snapshot directories, each with its own
/// lock, may make one key at once, and a jail's cgroups are named after its identity.
fn maker_identity(key: &str) -> Result<String, String> {
    let random =
        bottle_seed().map_err(|e| format!("cannot draw a name for the snapshot's jail: {e}"))?;
    Ok(format!(
        "qemu-snapshot-{}-{}",
        &key[..key.len().min(12)],
        hex::encode(&random[..4])
    ))
}

/// Where guest snapshots are cached: `<cache>/qemu/snapshots`.
pub fn snapshots_dir() -> PathBuf {
    assets::cache_root().join("qemu").join("snapshots")
}

/// Draws the 64 bytes a guest's stage 1 reseeds its kernel's random number generator with
/// (sent first on the control port), from the host's CSPRNG (`getrandom`).
fn bottle_seed() -> std::io::Result<[u8; 64]> {
    let mut seed = [0u8; 64];
    // SAFETY: getrandom writes at most `seed.len()` bytes into `seed`, which we own.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n == seed.len() as isize {
        Ok(seed)
    } else if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Err(std::io::Error::other(
            "getrandom returned fewer than 64 bytes",
        ))
    }
}

/// Accepts one connection on `listener` (polling, so the thread ends when `stop` is set).
fn accept_one(listener: &UnixListener, stop: &Mutex<bool>) -> Option<UnixStream> {
    let _ = listener.set_nonblocking(true);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                return Some(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if *stop.lock().unwrap_or_else(|p| p.into_inner()) {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return None,
        }
    }
}

fn console_thread(listener: UnixListener, log: PathBuf, tail: Tail, stop: Arc<Mutex<bool>>) {
    std::thread::spawn(move || {
        let Some(mut stream) = accept_one(&listener, &stop) else {
            return;
        };
        // Appended: a resumed bottle keeps the consoles of its earlier runs.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .ok();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = console_text(&buf[..n]);
            if let Some(f) = file.as_mut() {
                let _ = f.write_all(&text);
            }
            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
            t.extend(&text);
            while t.len() > CONSOLE_TAIL_BYTES {
                t.pop_front();
            }
        }
    });
}

fn control_thread(
    listener: UnixListener,
    events: Sender<Event>,
    writer: Arc<Mutex<Option<UnixStream>>>,
    stop: Arc<Mutex<bool>>,
    delivery: SeedDelivery,
) {
    std::thread::spawn(move || {
        let Some(mut stream) = accept_one(&listener, &stop) else {
            return;
        };
        // First on the port, before any line: the guest's seed, which stage 1 reads before it
        // goes on. Without it the guest waits, and the launch fails (fail closed).
        let seed = match bottle_seed() {
            Ok(seed) => seed,
            Err(e) => {
                let _ = events.send(Event::GuestError(format!(
                    "cannot draw the guest's random seed: {e}"
                )));
                return;
            }
        };
        let sent = match delivery {
            SeedDelivery::Whole => stream.write_all(&seed),
            SeedDelivery::Nothing => return,
            SeedDelivery::Short(n) => {
                let _ = stream.write_all(&seed[..n.min(63)]);
                return;
            }
        };
        if sent.is_err() {
            // The port's other end is gone: QEMU ended (it could not load its snapshot, say)
            // or closed the port. The guest, if it still runs, reads end-of-file and powers
            // off; the jail's exit says why the start failed, and discards a snapshot QEMU
            // could not load. Reported here instead, a failed write raced that exit (seen
            // under load: "cannot send the guest its random seed: Broken pipe" for a corrupt
            // snapshot, which was kept).
            return;
        }
        if let Ok(w) = stream.try_clone() {
            *writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
        }
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut writer = writer.lock().unwrap_or_else(|p| p.into_inner());
            let mut ack = writer.as_mut().map(|w| w as &mut dyn Write);
            if !forward_control_line(&line, &events, &mut ack) {
                break;
            }
        }
    });
}

/// One line from the guest's control port passed on as its event (`ready`, `exit <n>`,
/// `error <message>`; others are ignored). `exit` is acknowledged to the guest on `ack`, which
/// makes it power off, so only once its event is queued: acknowledged first, the guest's
/// power-off and QEMU's exit could reach the bottle before the exit code (seen under load:
/// "the guest ended without reporting the agent's exit" after the agent printed and ended).
/// False when nobody receives events any more.
fn forward_control_line(
    line: &str,
    events: &Sender<Event>,
    ack: &mut Option<&mut dyn Write>,
) -> bool {
    let event = if line == "ready" {
        Event::Ready
    } else if let Some(code) = line.strip_prefix("exit ") {
        match code.trim().parse() {
            Ok(code) => Event::Exit(code),
            Err(_) => Event::GuestError(format!("the guest reported `{line}`")),
        }
    } else if let Some(message) = line.strip_prefix("error ") {
        Event::GuestError(message.chars().take(500).collect())
    } else {
        return true;
    };
    if events.send(event).is_err() {
        return false;
    }
    if line.starts_with("exit ")
        && let Some(w) = ack.as_mut()
    {
        let _ = w.write_all(b"ack\n");
    }
    true
}

/// `stop` from another process: each connection to the bottle's `command.sock` may send
/// `term`, passed to the guest's init (which SIGTERMs the agent).
fn command_thread(
    listener: UnixListener,
    writer: Arc<Mutex<Option<UnixStream>>>,
    stop: Arc<Mutex<bool>>,
) {
    std::thread::spawn(move || {
        while let Some(stream) = accept_one(&listener, &stop) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line);
            if line.trim() == "term"
                && let Some(w) = writer.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
            {
                let _ = w.write_all(b"term\n");
            }
        }
    });
}

/// The console's bytes as logged: without NULs (a stray one was seen in the console output,
/// which makes the log a binary file to `grep`; a kernel console never means one).
/// The reason of stage 1's last failure line in the console's `tail` ([`initramfs::STAGE1_FAILED`]),
/// prefixed with it: why the guest powered off before the agent started.
fn stage1_failure(tail: &str) -> Option<String> {
    tail.lines()
        .rev()
        .find_map(|l| l.trim_end().split_once(initramfs::STAGE1_FAILED))
        .map(|(_, reason)| format!("{}{reason}", initramfs::STAGE1_FAILED))
}

fn console_text(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(|b| *b != 0).collect()
}

fn tail_text(tail: &Tail) -> String {
    let t = tail.lock().unwrap_or_else(|p| p.into_inner());
    let bytes: Vec<u8> = t.iter().copied().collect();
    let text = String::from_utf8_lossy(&bytes).replace('\r', "");
    if text.trim().is_empty() {
        "(the console printed nothing)".to_owned()
    } else {
        text.trim_end().to_owned()
    }
}

/// A running VM bottle.
pub struct QemuBottle {
    identity: String,
    jail: NativeBackend,
    events: Receiver<Event>,
    writer: Arc<Mutex<Option<UnixStream>>>,
    stop: Arc<Mutex<bool>>,
    tail: Tail,
    console_log: PathBuf,
    dir: PathBuf,
    stdin: Option<Box<dyn Write + Send>>,
    stdout: Option<Box<dyn Read + Send>>,
    stderr: Option<Box<dyn Read + Send>>,
    /// The launcher's copies of the jail's stdout/stderr pipes ([`jail_stdio`]), joined once
    /// the jail ended so nothing the agent wrote is lost.
    copies: Vec<std::thread::JoinHandle<()>>,
    exit: Option<i32>,
    terminated: bool,
    done: bool,
    /// The initramfs this VM booted from, held (a shared lock) so that another launch's
    /// pruning of the cache leaves it while the bottle lives.
    _initramfs: initramfs::CachedInitramfs,
}

impl QemuBottle {
    fn send(&self, line: &str) -> Result<(), BackendError> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match w.as_mut() {
            Some(w) => w
                .write_all(format!("{line}\n").as_bytes())
                .map_err(|source| BackendError::Process {
                    action: "write to the guest's control port",
                    source,
                }),
            None => Err(BackendError::Process {
                action: "write to the guest's control port",
                source: std::io::Error::other("the guest has not connected"),
            }),
        }
    }

    fn end_threads(&self) {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }
}

impl RunningBottle for QemuBottle {
    fn identity(&self) -> &str {
        &self.identity
    }
    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>> {
        self.stdin.take()
    }
    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        self.stdout.take()
    }
    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>> {
        self.stderr.take()
    }

    fn wait(&mut self) -> Result<BottleExit, BackendError> {
        let result = loop {
            match self.events.recv() {
                Ok(Event::Exit(code)) => self.exit = Some(code),
                Ok(Event::Ready | Event::GuestError(_)) => {}
                Ok(Event::JailExited(result)) => break result,
                Err(_) => break Err(BackendError::Unsupported("the bottle was lost".into())),
            }
        };
        self.done = true;
        self.end_threads();
        for copy in self.copies.drain(..) {
            let _ = copy.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let jail = result?;
        if let Some(code) = self.exit {
            return Ok(BottleExit { code });
        }
        if self.terminated {
            return Ok(BottleExit {
                code: 128 + libc::SIGTERM,
            });
        }
        Err(BackendError::Setup {
            stage: "guest".into(),
            message: format!(
                "the guest ended without reporting the agent's exit (QEMU's jail exited {}); the console's last lines:\n{}",
                jail.code,
                tail_text(&self.tail)
            ),
        })
    }

    fn terminate(&mut self) -> Result<(), BackendError> {
        self.terminated = true;
        if self.send("term").is_err() {
            self.jail.stop(&self.identity, Duration::ZERO)?;
        }
        Ok(())
    }

    fn kill(&mut self) -> Result<(), BackendError> {
        self.terminated = true;
        self.jail.stop(&self.identity, Duration::ZERO).map(drop)
    }
}

impl Drop for QemuBottle {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.jail.stop(&self.identity, Duration::ZERO);
            let _ = self.wait();
        }
        self.end_threads();
    }
}

/// Where the guest's console is logged: `console.log` in the bottle's logs directory
/// (`state/<identity>/logs/`, where `bot-bottle logs <identity> --console` reads it, kept
/// with the request log when the bottle ends) when the launcher made it, else in the VM's
/// runtime directory `vm_dir`.
pub fn console_log_path(bot_bottle_home: &Path, identity: &str, vm_dir: &Path) -> PathBuf {
    let logs = state::Home::new(bot_bottle_home).bottle(identity).logs();
    if logs.is_dir() {
        logs.join(CONSOLE_LOG)
    } else {
        vm_dir.join(CONSOLE_LOG)
    }
}

/// The guest console's log file name.
pub const CONSOLE_LOG: &str = "console.log";

/// The jail's standard streams for `stdio`, and for stdout and stderr what the launcher must
/// copy the jail's pipe to (`None`: the caller takes the pipe itself).
///
/// QEMU's `-add-fd` passes the agent's stdout and stderr to its `file` chardevs only when the
/// descriptors are open write-only (it compares the access mode): a terminal, `/dev/null` or a
/// file opened read-write made QEMU exit with "Could not open '/dev/fdset/2'". A pipe's write
/// end always is, so a non-interactive bottle's jail always gets pipes, and the launcher copies
/// what the caller wanted inherited (or discards what it wanted null). An interactive bottle's
/// terminal is QEMU's `stdio` chardev, which takes any descriptor.
pub fn jail_stdio(stdio: BottleStdio, interactive: bool) -> (BottleStdio, [Option<StdioMode>; 2]) {
    if interactive {
        return (stdio, [None, None]);
    }
    let mut jail = stdio;
    let mut copied = [None, None];
    for (i, mode) in [&mut jail.stdout, &mut jail.stderr].into_iter().enumerate() {
        if *mode != StdioMode::Piped {
            copied[i] = Some(*mode);
            *mode = StdioMode::Piped;
        }
    }
    (jail, copied)
}

/// Copies one of the jail's output pipes to the launcher's own stdout (`stdout`) or stderr
/// (`to` is [`StdioMode::Inherit`]), or drains it ([`StdioMode::Null`]).
fn copy_stream(
    mut from: Box<dyn Read + Send>,
    to: StdioMode,
    stdout: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if to == StdioMode::Inherit {
                // A closed terminal or reader: keep draining so QEMU never blocks on the pipe.
                let _ = if stdout {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&buf[..n]).and_then(|()| out.flush())
                } else {
                    std::io::stderr().lock().write_all(&buf[..n])
                };
            }
        }
    })
}

/// Whether this machine can run the qemu backend: the native jail's facts (QEMU runs in a
/// native bottle) and the qemu checks of [`preflight`] (QEMU, the guest kernel, KVM or
/// allowed TCG, a static busybox, the guest executable `guest`).
pub fn status(guest: &Path) -> BackendStatus {
    let own = preflight::status(guest);
    let mut status = crate::preflight::native(None);
    status.backend = BackendKind::Qemu;
    status.checks.extend(own.checks);
    status.usable = status.checks.iter().all(|c| c.ok || !c.required);
    status
}

/// The caller's terminal size, as `winsize <rows> <cols>`.
fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ writes the `winsize` we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fd 0 is only borrowed.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

impl Backend for QemuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn preflight(&self) -> BackendStatus {
        status(&self.config.guest)
    }

    /// Under software emulation (which the operator allowed), what that means.
    fn launch_warnings(&self) -> Vec<String> {
        let accel = match self.config.accel {
            Some(a) => Ok(a),
            None => assets::choose_accel(),
        };
        match accel {
            Ok(assets::Accel::Tcg) => vec![assets::TCG_WARNING.to_owned()],
            _ => Vec::new(),
        }
    }

    fn prepare(&self, spec: &LaunchSpec) -> Result<(), BackendError> {
        self.jail.prepare(spec)
    }

    fn launch(
        &self,
        spec: &LaunchSpec,
        stdio: BottleStdio,
    ) -> Result<Box<dyn RunningBottle>, BackendError> {
        if !self.config.guest.is_file() {
            return Err(unavailable(format!(
                "the guest executable {} is missing (the guest's init and its sidecar relay); {}",
                self.config.guest.display(),
                preflight::GUEST_EXE_FIX
            )));
        }
        let kernel = match &self.config.kernel {
            Some(k) => k.clone(),
            None => assets::guest_kernel().map_err(unavailable)?,
        };
        let accel = match self.config.accel {
            Some(a) => a,
            None => assets::choose_accel().map_err(unavailable)?,
        };
        if !self.config.qemu.is_file() {
            return Err(unavailable(format!(
                "QEMU is not installed ({} is missing); apt-get install qemu-system-x86",
                self.config.qemu.display()
            )));
        }
        let initramfs = initramfs::build_cached(
            &self.config.busybox,
            &kernel.modules,
            &assets::cache_root().join("qemu"),
        )
        .map_err(unavailable)?;
        let dir = self.bottle_dir(&spec.identity);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let cleanup = |e: BackendError| {
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        let (jail_spec, restored) = self
            .plans(spec, &dir, accel, &kernel, initramfs.path())
            .map_err(cleanup)?;
        let control = dir.join("control.sock");
        let console = dir.join("console.sock");
        let control_l = UnixListener::bind(&control)
            .map_err(io_err("listen on", &control))
            .map_err(cleanup)?;
        let console_l = UnixListener::bind(&console)
            .map_err(io_err("listen on", &console))
            .map_err(cleanup)?;
        let command = dir.join("command.sock");
        let command_l = UnixListener::bind(&command)
            .map_err(io_err("listen on", &command))
            .map_err(cleanup)?;
        let (tx, events) = channel();
        let writer = Arc::new(Mutex::new(None));
        let stop = Arc::new(Mutex::new(false));
        let tail: Tail = Arc::default();
        let console_log = console_log_path(&self.config.bot_bottle_home, &spec.identity, &dir);
        console_thread(console_l, console_log.clone(), tail.clone(), stop.clone());
        control_thread(
            control_l,
            tx.clone(),
            writer.clone(),
            stop.clone(),
            self.config.seed_delivery,
        );
        command_thread(command_l, writer.clone(), stop.clone());

        let (stdio, copied) = jail_stdio(stdio, spec.interactive);
        let jail = NativeBackend::new(self.jail_config(accel));
        let mut native = match jail.launch(&jail_spec, stdio) {
            Ok(b) => b,
            Err(e) => {
                *stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
                return Err(cleanup(e));
            }
        };
        let mut bottle = QemuBottle {
            identity: spec.identity.clone(),
            jail: self.jail.clone(),
            events,
            writer,
            stop,
            tail,
            console_log,
            dir: dir.clone(),
            stdin: native.take_stdin(),
            stdout: None,
            stderr: None,
            copies: Vec::new(),
            exit: None,
            terminated: false,
            done: false,
            _initramfs: initramfs,
        };
        for (i, stream) in [native.take_stdout(), native.take_stderr()]
            .into_iter()
            .enumerate()
        {
            let Some(stream) = stream else { continue };
            let kept = match copied[i] {
                Some(to) => {
                    bottle.copies.push(copy_stream(stream, to, i == 0));
                    None
                }
                None => Some(stream),
            };
            if i == 0 {
                bottle.stdout = kept;
            } else {
                bottle.stderr = kept;
            }
        }
        std::thread::spawn(move || {
            let result = native.wait();
            let _ = tx.send(Event::JailExited(result));
        });

        let timeout = self.config.boot_timeout.unwrap_or_else(|| {
            std::env::var(BOOT_TIMEOUT_ENV)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_BOOT_TIMEOUT)
        });
        let deadline = Instant::now() + timeout;
        let failure = loop {
            match bottle
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Event::Ready) => break None,
                Ok(Event::Exit(code)) => bottle.exit = Some(code),
                Ok(Event::GuestError(message)) => {
                    break Some(format!("the guest could not start the agent: {message}"));
                }
                Ok(Event::JailExited(result)) => {
                    bottle.done = true;
                    let why = match result {
                        Ok(exit) => format!("QEMU's jail exited {}", exit.code),
                        Err(e) => e.to_string(),
                    };
                    // The console's last lines (stage 1's reason) may reach its thread just
                    // after QEMU's exit.
                    std::thread::sleep(Duration::from_millis(200));
                    let stage1 = stage1_failure(&tail_text(&bottle.tail));
                    let reseed =
                        format!("{}{}", initramfs::STAGE1_FAILED, initramfs::RESEED_FAILED);
                    if let Some(reason) = stage1.as_ref().filter(|r| r.starts_with(&reseed)) {
                        // The guest ran stage 1 (restored or booted) and refused to go on
                        // without the host's whole seed: the host's fault, not the snapshot's,
                        // which is kept.
                        break Some(format!(
                            "the guest ended before the agent started: {reason}"
                        ));
                    }
                    let why = match stage1 {
                        Some(reason) => format!("{reason}; {why}"),
                        None => why,
                    };
                    if let Some(snap) = &restored {
                        // It may be the snapshot that QEMU could not load: made anew next time.
                        snapshot::discard(snap);
                        break Some(format!(
                            "the guest ended before the agent started ({why}); it was restored from the snapshot {}, which was removed so that the next start makes it anew",
                            snap.display()
                        ));
                    }
                    break Some(format!("the guest ended before the agent started ({why})"));
                }
                Err(RecvTimeoutError::Timeout) => {
                    break Some(format!(
                        "the guest did not start the agent within {}s (raise {BOOT_TIMEOUT_ENV} on a slow host)",
                        timeout.as_secs()
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    break Some("the bottle was lost".to_owned());
                }
            }
        };
        if let Some(message) = failure {
            // Give the console thread a moment to take the last lines QEMU wrote.
            std::thread::sleep(Duration::from_millis(200));
            let tail = tail_text(&bottle.tail);
            let log = bottle.console_log.clone();
            if !bottle.done {
                let _ = bottle.kill();
                let _ = bottle.wait();
            }
            bottle.done = true;
            bottle.end_threads();
            // The console log stays for the operator: in the bottle's logs (which the launcher
            // keeps when the bottle ends), or, outside a launcher, beside the runtime records.
            let kept = if log.starts_with(&dir) {
                let kept = self
                    .config
                    .runtime_dir()
                    .join(format!("{}.console.log", spec.identity));
                let _ = std::fs::rename(&log, &kept);
                kept
            } else {
                log
            };
            let _ = std::fs::remove_dir_all(&dir);
            return Err(BackendError::Setup {
                stage: "boot".into(),
                message: format!(
                    "{message}; console log kept in {}; its last lines:\n{tail}",
                    kept.display()
                ),
            });
        }
        if spec.interactive {
            let writer = bottle.writer.clone();
            let stop = bottle.stop.clone();
            std::thread::spawn(move || {
                let mut last = None;
                while !*stop.lock().unwrap_or_else(|p| p.into_inner()) {
                    let size = terminal_size();
                    if size.is_some() && size != last {
                        last = size;
                        if let (Some((rows, cols)), Some(w)) = (
                            size,
                            writer.lock().unwrap_or_else(|p| p.into_inner()).as_mut(),
                        ) {
                            let _ = w.write_all(format!("winsize {rows} {cols}\n").as_bytes());
                        }
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            });
        }
        Ok(Box::new(bottle))
    }

    fn attach(&self, identity: &str) -> Result<Box<dyn RunningBottle>, BackendError> {
        Err(BackendError::Unsupported(format!(
            "the qemu backend runs the agent on the terminal of the `start` that launched it; there is no separate console to attach to bottle {identity}"
        )))
    }

    /// Asks the guest's init to SIGTERM the agent (through the launcher's `command.sock`),
    /// then ends the jail after `grace` if the bottle still runs.
    fn stop(&self, identity: &str, grace: Duration) -> Result<bool, BackendError> {
        let running = |jail: &NativeBackend| {
            jail.list()
                .map(|l| l.iter().any(|b| b.identity == identity && b.running))
                .unwrap_or(false)
        };
        let plain = !identity.is_empty()
            && identity
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain || !running(&self.jail) {
            return Ok(false);
        }
        let asked = UnixStream::connect(self.bottle_dir(identity).join("command.sock"))
            .and_then(|mut s| s.write_all(b"term\n"))
            .is_ok();
        if asked {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if !running(&self.jail) {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.jail
            .stop(identity, if asked { Duration::ZERO } else { grace })
    }

    fn list(&self) -> Result<Vec<BottleInfo>, BackendError> {
        Ok(self
            .jail
            .list()?
            .into_iter()
            .map(|info| BottleInfo {
                backend: BackendKind::Qemu,
                ..info
            })
            .collect())
    }

    fn cleanup(&self, dry_run: bool) -> Result<Vec<CleanupAction>, BackendError> {
        // The bottles that keep their VM directory: running and not orphaned (the jail's
        // cleanup kills orphans, or would in a dry run).
        let kept: Vec<String> = self
            .jail
            .list()?
            .into_iter()
            .filter(|b| b.running && !b.orphaned)
            .map(|b| b.identity)
            .collect();
        let mut actions = self.jail.cleanup(dry_run)?;
        let vm_dir = self.config.runtime_dir().join("vm");
        let entries = match std::fs::read_dir(&vm_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(actions),
            Err(e) => return Err(io_err("read", &vm_dir)(e)),
        };
        let mut dirs: Vec<(String, PathBuf)> = entries
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(identity, _)| !kept.contains(identity))
            .collect();
        dirs.sort();
        for (identity, path) in dirs {
            if !dry_run {
                std::fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
            }
            actions.push(CleanupAction::RemovedRuntimeDir { identity, path });
        }
        Ok(actions)
    }
}

/// The names in `dir`, sorted (the module's tests' listing of a directory).
#[cfg(test)]
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn backend(accel: Option<assets::Accel>) -> QemuBackend {
        let mut config = QemuConfig::new(
            HelperCommand {
                exe: "/usr/bin/bot-bottle".into(),
                args: vec![],
            },
            Path::new("/home/alice/.bot-bottle"),
        );
        config.accel = accel;
        QemuBackend::new(config)
    }

    /// The guest, on the other end of the control port: it powers off as soon as it reads
    /// the `ack` of its `exit`, so by then the exit code must already be queued for `wait`
    /// (else QEMU's exit can overtake it).
    struct Guest<'a> {
        events: &'a Receiver<Event>,
        acked_after: Vec<String>,
    }

    impl Write for Guest<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            // The last event queued so far (`ready` comes before).
            let queued = match self.events.try_iter().last() {
                Some(Event::Exit(code)) => format!("exit {code}"),
                Some(Event::GuestError(m)) => format!("error {m}"),
                Some(_) => "another event".to_owned(),
                None => "nothing".to_owned(),
            };
            self.acked_after
                .push(format!("{} after {queued}", String::from_utf8_lossy(buf)));
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn stage_ones_last_failure_on_the_console_is_the_reason() {
        let tail = "[    1.0] virtio\nbot-bottle stage 1 failed: cannot mount /proc\n\
                    \u{1b}[0mbot-bottle stage 1 failed: cannot reseed the random number generator from the host (x)\n\
                    [    6.1] reboot: Power down";
        assert_eq!(
            stage1_failure(tail).as_deref(),
            Some(
                "bot-bottle stage 1 failed: cannot reseed the random number generator from the host (x)"
            )
        );
        assert_eq!(
            stage1_failure("bot-bottle stage 1: reseeded, first bytes drawn: 00\n"),
            None
        );
        assert_eq!(stage1_failure("(the console printed nothing)"), None);
    }

    #[test]
    fn each_snapshot_jail_has_an_identity_of_its_own_that_a_native_bottle_accepts() {
        let key = "0123456789abcdef0123456789abcdef";
        let (a, b) = (maker_identity(key).unwrap(), maker_identity(key).unwrap());
        assert_ne!(a, b);
        for id in [a, b] {
            assert!(id.starts_with("qemu-snapshot-0123456789ab-"), "{id}");
            assert_eq!(id.len(), 35, "{id}");
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'),
                "{id}"
            );
        }
    }

    #[test]
    fn the_guests_exit_is_queued_before_it_is_acknowledged() {
        let (tx, rx) = channel();
        let mut guest = Guest {
            events: &rx,
            acked_after: Vec::new(),
        };
        for line in ["ready", "noise", "exit 3", "exit x"] {
            let mut ack = Some(&mut guest as &mut dyn Write);
            assert!(forward_control_line(line, &tx, &mut ack));
        }
        assert_eq!(
            guest.acked_after,
            [
                "ack\n after exit 3",
                "ack\n after error the guest reported `exit x`"
            ]
        );
        drop(rx);
        let mut ack = None;
        assert!(!forward_control_line("ready", &tx, &mut ack));
    }

    #[test]
    fn the_jail_runs_the_small_helper_beside_bot_bottle_and_the_guest_executable_is_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("bot-bottle");
        std::fs::write(&exe, b"").unwrap();
        let options = crate::OpenOptions::new(dir.path().join("home"), &exe);
        let without = config(&options);
        assert_eq!(
            without.helper,
            HelperCommand {
                exe: exe.clone(),
                args: vec![crate::native::HELPER_SUBCOMMAND.into()],
            },
            "without bot-bottle-helper: bot-bottle's own subcommand"
        );
        let small = dir.path().join(crate::helper_command::HELPER_EXE_NAME);
        std::fs::write(&small, b"").unwrap();
        let with = config(&options);
        assert_eq!(
            with.helper,
            HelperCommand {
                exe: small,
                args: vec![crate::native::HELPER_SUBCOMMAND.into()],
            }
        );
        // The same jail otherwise, and the guest executable found beside bot-bottle either way.
        assert_eq!(with.guest, dir.path().join(GUEST_EXE_NAME));
        assert_eq!(without.guest, with.guest);
        assert_eq!(
            jail_config(&with, assets::Accel::Tcg).helper,
            with.helper,
            "the jail is a native bottle started by that helper"
        );
    }

    #[test]
    fn under_kvm_the_jail_gets_dev_kvm_and_under_tcg_no_device_beyond_the_standard_ones() {
        let b = backend(None);
        assert_eq!(
            b.jail_config(assets::Accel::Kvm).devices,
            vec![PathBuf::from("/dev/kvm")]
        );
        assert_eq!(
            b.jail_config(assets::Accel::Tcg).devices,
            Vec::<PathBuf>::new()
        );
        // Everything else of the jail is the same either way.
        let mut kvm = b.jail_config(assets::Accel::Kvm);
        kvm.devices.clear();
        assert_eq!(kvm, b.jail_config(assets::Accel::Tcg));
        assert_eq!(
            kvm.runtime_dir,
            Path::new("/home/alice/.bot-bottle/run/qemu/jail")
        );
    }

    #[test]
    fn software_emulation_is_reported_as_a_launch_warning_and_kvm_is_not() {
        let warnings = backend(Some(assets::Accel::Tcg)).launch_warnings();
        assert_eq!(warnings, vec![assets::TCG_WARNING.to_owned()]);
        assert!(warnings[0].starts_with("warning: "));
        assert!(warnings[0].contains("slow"));
        assert!(warnings[0].contains("upstream QEMU does not treat TCG as a security boundary"));
        assert!(warnings[0].contains("still holds"));
        assert_eq!(
            backend(Some(assets::Accel::Kvm)).launch_warnings(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_non_interactive_jail_always_writes_into_pipes() {
        use StdioMode::{Inherit, Null, Piped};
        let s = |stdin, stdout, stderr| BottleStdio {
            stdin,
            stdout,
            stderr,
        };
        assert_eq!(
            jail_stdio(s(Null, Inherit, Null), false),
            (s(Null, Piped, Piped), [Some(Inherit), Some(Null)])
        );
        assert_eq!(
            jail_stdio(s(Piped, Piped, Inherit), false),
            (s(Piped, Piped, Piped), [None, Some(Inherit)])
        );
        assert_eq!(
            jail_stdio(BottleStdio::piped(), false),
            (BottleStdio::piped(), [None, None])
        );
        // QEMU's stdio chardev takes the terminal as it is.
        assert_eq!(
            jail_stdio(BottleStdio::inherit(), true),
            (BottleStdio::inherit(), [None, None])
        );
    }

    #[test]
    fn the_console_log_goes_into_the_bottles_logs_when_the_launcher_made_them() {
        let home = tempfile::tempdir().unwrap();
        let vm = home.path().join("run/qemu/vm/demo-abcde");
        assert_eq!(
            console_log_path(home.path(), "demo-abcde", &vm),
            vm.join("console.log")
        );
        let logs = home.path().join("state/demo-abcde/logs");
        std::fs::create_dir_all(&logs).unwrap();
        assert_eq!(
            console_log_path(home.path(), "demo-abcde", &vm),
            logs.join("console.log")
        );
    }

    #[test]
    fn the_console_log_has_no_nul_bytes() {
        assert_eq!(
            console_text(b"\0[    0.1] Linux\0\r\n"),
            b"[    0.1] Linux\r\n"
        );
    }

    /// `cleanup --dry-run` lists the VM runtime directory of an ended bottle that `cleanup`
    /// removes, and `cleanup` says it removed it; both leave a running bottle's alone (none
    /// runs here: the jail lists no bottle).
    #[test]
    fn cleanup_reports_the_vm_directories_it_removes_and_a_dry_run_lists_them() {
        let home = tempfile::tempdir().unwrap();
        let backend = QemuBackend::new(QemuConfig::new(
            HelperCommand {
                exe: "/usr/bin/bot-bottle".into(),
                args: vec![],
            },
            home.path(),
        ));
        let vm = home.path().join("run/qemu/vm/demo-abcde");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(vm.join("console.log"), "[    0.1] Linux").unwrap();
        let expected = vec![CleanupAction::RemovedRuntimeDir {
            identity: "demo-abcde".into(),
            path: vm.clone(),
        }];
        assert_eq!(backend.cleanup(true).unwrap(), expected);
        assert!(vm.exists(), "a dry run removed {}", vm.display());
        assert_eq!(backend.cleanup(false).unwrap(), expected);
        assert!(!vm.exists(), "{} left behind", vm.display());
        assert_eq!(backend.cleanup(false).unwrap(), vec![]);
    }
}
