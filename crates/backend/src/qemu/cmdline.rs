//! The QEMU command line of one bottle, computed as data (unit-tested as a snapshot).
//!
//! A `microvm` with no default devices and no monitor; the guest's only devices are the
//! console, virtio-serial ports (control, and the agent's stdout/stderr when it has no
//! terminal), three 9p shares (the jail's root read-only, the workspace and the home
//! read-write) and one NIC on QEMU's user network with `restrict=on`, whose only open doors
//! are the `guestfwd`s to the sidecar endpoints.

use std::path::PathBuf;

use crate::inbottle::qemu_guest::{
    CONTROL_PORT, HOME_TAG, RELAY_SUBCOMMAND, SIDECAR_ADDR, STDERR_PORT, STDOUT_PORT, WORKSPACE_TAG,
};

use super::assets::Accel;

/// Where the jail places the kernel and the initramfs.
pub const JAIL_KERNEL: &str = "/run/bot-bottle/qemu/kernel";
pub const JAIL_INITRAMFS: &str = "/run/bot-bottle/qemu/initramfs";
/// Where the jail places the guest snapshot a bottle is restored from ([`super::snapshot`]).
pub const JAIL_SNAPSHOT: &str = "/run/bot-bottle/qemu/snapshot";
/// The descriptor QEMU reads the snapshot from (`-incoming fd:5`): opened by the jail's shell,
/// so QEMU spawns nothing to read it.
const SNAPSHOT_FD: u32 = 5;

/// TCG's translation cache by default, in MiB (`-accel tcg,tb-size=`). A restored guest's
/// start alone translates ~38 MiB of code, and the cache stays resident at its bound once full,
/// so the bound is an idle bottle's cache. 16 keeps one idle bottle within issue 18's 64 MiB
/// beyond its RAM (61 MiB by PSS; 64 MiB: 84, 24 MiB: 69) for 0.35-0.7 s more CPU at the start
/// and 1.7x the CPU of an agent's code-heavy work (bench/README.md, "qemu: ... session qemu9").
pub const TCG_CACHE_MIB: u32 = 16;
/// Environment variable that sets another translation cache size (MiB, 8 to 256): 64 for an
/// agent that runs much code under TCG (its CPU back, ~20 MiB more per bottle).
pub const TCG_CACHE_ENV: &str = "BOT_BOTTLE_QEMU_TCG_CACHE_MIB";

/// The translation cache size `$BOT_BOTTLE_QEMU_TCG_CACHE_MIB` asks for, else
/// [`TCG_CACHE_MIB`]; an error naming the value when it is not a size from 8 to 256 MiB (the jail's
/// memory limit leaves QEMU 512 MiB beyond the guest's RAM, the cache included).
pub fn tcg_cache_mib() -> Result<u32, String> {
    parse_tcg_cache_mib(std::env::var(TCG_CACHE_ENV).ok().as_deref())
}

fn parse_tcg_cache_mib(value: Option<&str>) -> Result<u32, String> {
    let Some(v) = value else {
        return Ok(TCG_CACHE_MIB);
    };
    match v.trim().parse::<u32>() {
        Ok(n) if (8..=256).contains(&n) => Ok(n),
        _ => Err(format!(
            "{TCG_CACHE_ENV}={v:?} is not a translation cache size in MiB from 8 to 256; unset it for the default ({TCG_CACHE_MIB})"
        )),
    }
}

/// Everything the command line depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPlan {
    pub qemu: PathBuf,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u64,
    /// `tsc_early_khz=` (the host's TSC rate): without it a TCG guest under load can hang
    /// calibrating the PIT.
    pub tsc_khz: Option<u64>,
    /// The guest kernel's `CONFIG_HZ` ([`kernel_hz`]): with the TSC rate it gives `lpj=`, so a
    /// vCPU brought online under TCG skips its delay-loop calibration.
    pub hz: Option<u32>,
    pub interactive: bool,
    /// Sidecar ports (the same number in the guest, at 10.0.2.100, and in the jail).
    pub ports: Vec<u16>,
    pub workspace: PathBuf,
    pub home: PathBuf,
    /// The jail's loopback ports of the host's control and console sockets.
    pub control_port: u16,
    pub console_port: u16,
    /// The relay executable in the jail (the guest executable).
    pub relay: PathBuf,
    /// Whether the guest is restored from the snapshot at [`JAIL_SNAPSHOT`] instead of booted.
    pub restore: bool,
    /// TCG's translation cache in MiB (`-accel tcg,tb-size=`; unused under KVM, which
    /// translates nothing): [`TCG_CACHE_MIB`] unless `$BOT_BOTTLE_QEMU_TCG_CACHE_MIB` says.
    pub tcg_cache_mib: u32,
}

/// The argv the jail runs: a shell that keeps the agent's stdout and stderr as fds 3 and 4
/// (QEMU takes no standard stream for `-add-fd`) and execs QEMU.
pub fn jail_argv(plan: &VmPlan) -> Vec<String> {
    let mut argv = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        if plan.restore {
            format!("exec 3>&1 4>&2 {SNAPSHOT_FD}<{JAIL_SNAPSHOT}; exec \"$0\" \"$@\"")
        } else {
            "exec 3>&1 4>&2; exec \"$0\" \"$@\"".to_owned()
        },
        plan.qemu.to_string_lossy().into_owned(),
    ];
    argv.extend(qemu_args(plan));
    argv
}

/// QEMU's arguments.
pub fn qemu_args(plan: &VmPlan) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-monitor", "none", "-parallel", "none"]);
    push(&["-M", "microvm,pit=on,pic=on,rtc=on"]);
    match plan.accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        // The translation cache is mapped at 1 GiB by default and stays resident as it fills
        // (a flush reuses it, never returns it): bounded here, since it is most of an idle
        // bottle's memory beyond the guest's RAM ([`TCG_CACHE_MIB`]).
        Accel::Tcg => {
            let accel = format!("tcg,tb-size={}", plan.tcg_cache_mib);
            push(&["-accel", &accel, "-cpu", "max"]);
        }
    }
    let smp = plan.cpus.to_string();
    let mem = format!("{}M", plan.memory_mib);
    push(&["-smp", &smp, "-m", &mem]);
    // `cryptomgr.notests`: the boot-time self-tests of the crypto algorithms took 0.3-0.5 s
    // of a 1.5 s boot to userspace under TCG (`initcall_debug`: `crypto_algapi_init`); they
    // guard against a miscompiled kernel, not against the agent.
    // `swiotlb=noforce`: a guest with RAM above 4 GiB (the default 4 GiB `resources:` puts
    // 1 GiB there) reserves and zeroes a 64 MiB bounce buffer that nothing here uses (the
    // virtio devices address guest memory directly, and there is no other DMA device): 64 MiB
    // of host memory per bottle, and their zeroing under TCG.
    // `softlockup_panic=1`: a guest kernel whose CPU stops scheduling (a soft lockup) panics,
    // and `panic=-1` with `-no-reboot` ends QEMU, so the bottle ends and `wait` reports it with
    // the console's last lines. Without it such a guest ran on forever after `ready` with the
    // host none the wiser: seen once in ~60 TCG starts at load 12-16 (bench/README.md, "qemu:
    // ... session qemu5": CPU0 stuck in a kworker from the agent's start, soft lockups logged
    // for 425 s until the start was killed by hand; the agent had exited and its exit was never
    // reported).
    let mut cmdline =
        "console=ttyS0 quiet panic=-1 softlockup_panic=1 rdinit=/init cryptomgr.notests swiotlb=noforce"
            .to_owned();
    if let Some(khz) = plan.tsc_khz {
        cmdline.push_str(&format!(" tsc_early_khz={khz}"));
    }
    if plan.accel == Accel::Tcg {
        cmdline.push_str(&tcg_boot_options(plan));
    }
    push(&[
        "-kernel",
        JAIL_KERNEL,
        "-initrd",
        JAIL_INITRAMFS,
        "-append",
        &cmdline,
    ]);
    // The console (kernel messages, stage 1's failures) goes to the host's console log.
    let console = format!(
        "socket,id=console,host=127.0.0.1,port={}",
        plan.console_port
    );
    push(&["-chardev", &console, "-serial", "chardev:console"]);
    push(&["-device", "virtio-serial-device,max_ports=4"]);
    let control = format!(
        "socket,id=control,host=127.0.0.1,port={}",
        plan.control_port
    );
    push(&["-chardev", &control]);
    push(&[
        "-device",
        &format!("virtserialport,chardev=control,name={CONTROL_PORT}"),
    ]);
    if plan.interactive {
        push(&["-chardev", "stdio,id=term,signal=off"]);
        push(&["-device", "virtconsole,chardev=term"]);
    } else {
        push(&["-add-fd", "fd=3,set=1", "-add-fd", "fd=4,set=2"]);
        push(&["-chardev", "file,id=stdout,path=/dev/fdset/1,append=on"]);
        push(&[
            "-device",
            &format!("virtserialport,chardev=stdout,name={STDOUT_PORT}"),
        ]);
        push(&["-chardev", "file,id=stderr,path=/dev/fdset/2,append=on"]);
        push(&[
            "-device",
            &format!("virtserialport,chardev=stderr,name={STDERR_PORT}"),
        ]);
    }
    let shares = [
        ("root", PathBuf::from("/"), true),
        (WORKSPACE_TAG, plan.workspace.clone(), false),
        (HOME_TAG, plan.home.clone(), false),
    ];
    for (tag, path, readonly) in shares {
        let mut fsdev = format!(
            "local,id={tag},path={},security_model=none,multidevs=remap",
            path.to_string_lossy().replace(',', ",,")
        );
        if readonly {
            fsdev.push_str(",readonly=on");
        }
        push(&["-fsdev", &fsdev]);
        push(&[
            "-device",
            &format!("virtio-9p-device,fsdev={tag},mount_tag={tag}"),
        ]);
    }
    let mut netdev = "user,id=net,restrict=on,ipv6=off".to_owned();
    for port in &plan.ports {
        netdev.push_str(&format!(
            ",guestfwd=tcp:{SIDECAR_ADDR}:{port}-cmd:{} {RELAY_SUBCOMMAND} {port}",
            plan.relay.to_string_lossy().replace(',', ",,")
        ));
    }
    push(&[
        "-netdev",
        &netdev,
        "-device",
        "virtio-net-device,netdev=net",
    ]);
    // QEMU's own seccomp filter, inherited by the relays: guestfwd's `cmd:` spawns one per
    // connection, so spawning stays allowed, and so does `setsid` (libslirp's child set-up
    // calls it, which `elevateprivileges=deny` kills). Privileges cannot rise anyway: the
    // jail runs QEMU unprivileged with `no_new_privs` and no capabilities.
    push(&[
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=allow,spawn=allow,resourcecontrol=deny",
    ]);
    if plan.restore {
        // Resumed running without a monitor: the snapshot was taken from a running guest
        // (a live migration, no `stop`), so its saved run state is `running` and QEMU starts
        // the VM as soon as the state is loaded (no `-S`, no `cont`).
        push(&["-incoming", &format!("fd:{SNAPSHOT_FD}")]);
    }
    a
}

/// `plan` with everything that is not part of the guest's saved state made the same for every
/// bottle: the backends of the devices (chardev sockets and their ports, the 9p shares' host
/// paths, the sidecar `guestfwd`s) are not in a migration stream, so a snapshot made with
/// one set of them restores under another. What stays is the machine, the accelerator, the
/// CPUs, the memory, the kernel's command line and the device set (interactive or not).
pub fn device_set(plan: &VmPlan) -> VmPlan {
    VmPlan {
        ports: Vec::new(),
        workspace: "/workspace".into(),
        home: "/home/agent".into(),
        control_port: 1,
        console_port: 2,
        relay: "/relay".into(),
        restore: false,
        ..plan.clone()
    }
}

/// The loopback ports, in the snapshot maker's jail ([`super::snapshot`]), of its host sockets:
/// the guest's control port and console, QEMU's QMP monitor and the migration stream. Fixed:
/// the jail's network namespace is its own.
pub const MAKER_CONTROL_PORT: u16 = 40000;
pub const MAKER_CONSOLE_PORT: u16 = 40001;
pub const MAKER_QMP_PORT: u16 = 40002;
pub const MAKER_MIGRATION_PORT: u16 = 40003;
/// Where the snapshot maker's jail sees its workspace: an empty directory, which the guest's
/// three 9p shares point at (the guest mounts none of them before the snapshot point).
pub const JAIL_MAKER_EMPTY: &str = "/run/bot-bottle/qemu/empty";

/// The arguments of the run that makes a snapshot of `plan`'s device set
/// ([`super::snapshot`]), in the jail a bottle's QEMU runs in: [`qemu_args`] of [`device_set`]
/// (the kernel and initramfs at [`JAIL_KERNEL`] and [`JAIL_INITRAMFS`]) with the console and the
/// control port connected to the jail's loopback ports [`MAKER_CONSOLE_PORT`] and
/// [`MAKER_CONTROL_PORT`] (forwards to the launcher's sockets; it never writes to the control
/// port, so the guest waits at the snapshot point), the stdio chardevs `null`, the 9p shares on
/// the empty directory [`JAIL_MAKER_EMPTY`], and a QMP monitor that connects to
/// [`MAKER_QMP_PORT`], which only this run has. The `-device`s are the bottle's.
pub fn snapshot_args(plan: &VmPlan) -> Vec<String> {
    let args = qemu_args(&VmPlan {
        control_port: MAKER_CONTROL_PORT,
        console_port: MAKER_CONSOLE_PORT,
        ..device_set(plan)
    });
    let mut out = Vec::new();
    let mut it = args.into_iter().peekable();
    while let Some(flag) = it.next() {
        if flag == "-add-fd" {
            it.next();
            continue;
        }
        let Some(value) = it.next_if(|v| !v.starts_with('-') || flag == "-append") else {
            out.push(flag);
            continue;
        };
        let value = match flag.as_str() {
            "-chardev" => {
                let id = value
                    .split(',')
                    .find_map(|p| p.strip_prefix("id="))
                    .unwrap_or_default()
                    .to_owned();
                if id == "console" || id == "control" {
                    value
                } else {
                    format!("null,id={id}")
                }
            }
            "-fsdev" => value
                .split(',')
                .map(|p| {
                    if p.starts_with("path=") {
                        format!("path={JAIL_MAKER_EMPTY}")
                    } else {
                        p.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
            _ => value,
        };
        out.push(flag);
        out.push(value);
    }
    out.push("-chardev".to_owned());
    out.push(format!(
        "socket,id=qmp,host=127.0.0.1,port={MAKER_QMP_PORT}"
    ));
    out.push("-mon".to_owned());
    out.push("chardev=qmp,mode=control".to_owned());
    out
}

/// Kernel options that shorten a boot under TCG (measured in bench/README.md, "Where the
/// time went"); none of them turns off a protection:
/// * `tsc=reliable`: TCG's TSC is the host's clock, the same on every vCPU, but the kernel
///   does not trust an emulated AMD CPU's TSC with more than one CPU and falls back to jiffies
///   after a synchronisation check;
/// * `lpj=`: the delay-loop constant from the TSC rate, so a vCPU that comes online does not
///   spend a few hundred milliseconds of emulated time calibrating it;
/// * `maxcpus=1`: the other vCPUs are not brought up during the boot (their bring-up, and
///   every module load's cross-CPU code patching with them online, cost 0.5 s under TCG);
///   stage 2 brings them online once the agent runs ([`crate::inbottle::qemu_guest`]), so the
///   VM still has the `resources:` CPUs.
fn tcg_boot_options(plan: &VmPlan) -> String {
    let mut options = " tsc=reliable".to_owned();
    if let (Some(khz), Some(hz)) = (plan.tsc_khz, plan.hz)
        && hz > 0
    {
        options.push_str(&format!(" lpj={}", khz * 1000 / u64::from(hz)));
    }
    if plan.cpus > 1 {
        options.push_str(" maxcpus=1");
    }
    options
}

/// The `CONFIG_HZ` of a kernel from its build configuration, found beside the image as
/// `config` (the layout `bot-bottle prepare qemu` caches) or `config-<version>` (Debian's
/// `/boot`); `None` when neither is there or it has no `CONFIG_HZ`.
pub fn kernel_hz(image: &std::path::Path, version: &str) -> Option<u32> {
    let dir = image.parent()?;
    ["config".to_owned(), format!("config-{version}")]
        .iter()
        .find_map(|name| std::fs::read_to_string(dir.join(name)).ok())
        .and_then(|config| parse_hz(&config))
}

fn parse_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

/// The host's TSC rate in kHz, from `/proc/cpuinfo`'s `cpu MHz`.
pub fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_of_a_non_interactive_tcg_bottle() {
        let plan = VmPlan {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 1024,
            tsc_khz: Some(2_300_000),
            hz: Some(250),
            interactive: false,
            ports: vec![3128, 3129, 3130],
            workspace: "/home/alice/proj".into(),
            home: "/home/alice".into(),
            control_port: 40000,
            console_port: 40001,
            relay: "/run/bot-bottle/qemu/bot-bottle-guest".into(),
            restore: false,
            tcg_cache_mib: TCG_CACHE_MIB,
        };
        insta::assert_yaml_snapshot!(jail_argv(&plan));
    }

    #[test]
    fn an_interactive_bottle_gets_the_console_on_the_terminal() {
        let plan = VmPlan {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Kvm,
            cpus: 1,
            memory_mib: 512,
            tsc_khz: None,
            hz: None,
            interactive: true,
            ports: vec![],
            workspace: "/w,x".into(),
            home: "/h".into(),
            control_port: 1,
            console_port: 2,
            relay: "/r".into(),
            restore: false,
            tcg_cache_mib: TCG_CACHE_MIB,
        };
        insta::assert_yaml_snapshot!(qemu_args(&plan));
    }

    #[test]
    fn a_guest_kernel_that_locks_up_panics_and_a_panic_ends_qemu() {
        for accel in [Accel::Tcg, Accel::Kvm] {
            let plan = VmPlan {
                qemu: "/q".into(),
                accel,
                cpus: 2,
                memory_mib: 512,
                tsc_khz: None,
                hz: None,
                interactive: false,
                ports: vec![],
                workspace: "/w".into(),
                home: "/h".into(),
                control_port: 1,
                console_port: 2,
                relay: "/r".into(),
                restore: false,
                tcg_cache_mib: TCG_CACHE_MIB,
            };
            let options: Vec<String> = append(&plan).split(' ').map(str::to_owned).collect();
            assert!(
                options.contains(&"softlockup_panic=1".to_owned()),
                "{options:?}"
            );
            // A panic reboots at once, and QEMU exits instead of rebooting.
            assert!(options.contains(&"panic=-1".to_owned()), "{options:?}");
            assert!(qemu_args(&plan).contains(&"-no-reboot".to_owned()));
        }
    }

    fn append(plan: &VmPlan) -> String {
        let args = qemu_args(plan);
        let at = args.iter().position(|a| a == "-append").unwrap();
        args[at + 1].clone()
    }

    #[test]
    fn tcg_boots_one_vcpu_with_a_trusted_tsc_and_kvm_is_left_alone() {
        let mut plan = VmPlan {
            qemu: "/q".into(),
            accel: Accel::Tcg,
            cpus: 4,
            memory_mib: 512,
            tsc_khz: Some(2_596_132),
            hz: Some(250),
            interactive: false,
            ports: vec![],
            workspace: "/w".into(),
            home: "/h".into(),
            control_port: 1,
            console_port: 2,
            relay: "/r".into(),
            restore: false,
            tcg_cache_mib: TCG_CACHE_MIB,
        };
        assert!(
            append(&plan).ends_with(" tsc_early_khz=2596132 tsc=reliable lpj=10384528 maxcpus=1"),
            "{}",
            append(&plan)
        );
        // `-smp` keeps every CPU of `resources:`; only their bring-up waits for stage 2.
        let args = qemu_args(&plan);
        assert_eq!(
            args[args.iter().position(|a| a == "-smp").unwrap() + 1],
            "4"
        );
        plan.cpus = 1;
        assert!(append(&plan).ends_with(" tsc=reliable lpj=10384528"));
        plan.hz = None;
        assert!(append(&plan).ends_with(" tsc_early_khz=2596132 tsc=reliable"));
        plan.accel = Accel::Kvm;
        plan.cpus = 4;
        plan.hz = Some(250);
        assert!(append(&plan).ends_with(" tsc_early_khz=2596132"));
    }

    #[test]
    fn the_translation_cache_size_is_the_default_or_a_sane_size_in_mib_and_kvm_has_none() {
        assert_eq!(parse_tcg_cache_mib(None), Ok(TCG_CACHE_MIB));
        assert_eq!(parse_tcg_cache_mib(Some(" 24 ")), Ok(24));
        for bad in ["", "7", "257", "64M", "-1"] {
            let err = parse_tcg_cache_mib(Some(bad)).unwrap_err();
            assert!(
                err.starts_with(&format!("{TCG_CACHE_ENV}={bad:?} is not")),
                "{err}"
            );
        }
        let mut plan = bottle_plan(false);
        plan.tcg_cache_mib = 24;
        assert!(qemu_args(&plan).contains(&"tcg,tb-size=24".to_owned()));
        plan.accel = Accel::Kvm;
        assert!(!qemu_args(&plan).iter().any(|a| a.contains("tb-size")));
    }

    #[test]
    fn the_kernels_hz_comes_from_its_config_beside_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("vmlinux");
        assert_eq!(kernel_hz(&image, "6.1.0-57-amd64"), None);
        std::fs::write(
            dir.path().join("config-6.1.0-57-amd64"),
            "CONFIG_HZ_250=y\nCONFIG_HZ=250\n",
        )
        .unwrap();
        assert_eq!(kernel_hz(&image, "6.1.0-57-amd64"), Some(250));
        std::fs::write(
            dir.path().join("config"),
            "# CONFIG_HZ_1000 is not set\nCONFIG_HZ=1000\n",
        )
        .unwrap();
        assert_eq!(kernel_hz(&image, "6.1.0-57-amd64"), Some(1000));
        assert_eq!(parse_hz("CONFIG_HZ_PERIODIC=y\n"), None);
    }

    fn bottle_plan(interactive: bool) -> VmPlan {
        VmPlan {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 1024,
            tsc_khz: Some(2_300_000),
            hz: Some(250),
            interactive,
            ports: vec![3128, 3129],
            workspace: "/home/alice/proj".into(),
            home: "/home/alice".into(),
            control_port: 40000,
            console_port: 40001,
            relay: "/run/bot-bottle/qemu/bot-bottle-guest".into(),
            restore: false,
            tcg_cache_mib: TCG_CACHE_MIB,
        }
    }

    /// `(flag, value)` of every flag in `args` that the migration stream depends on.
    fn saved_state(args: &[String]) -> Vec<(String, String)> {
        args.windows(2)
            .filter(|w| {
                ["-M", "-accel", "-cpu", "-smp", "-m", "-append", "-device"].contains(&&*w[0])
            })
            .map(|w| (w[0].clone(), w[1].clone()))
            .collect()
    }

    #[test]
    fn the_snapshot_run_has_the_bottles_devices_and_only_it_has_a_monitor() {
        for interactive in [false, true] {
            let plan = bottle_plan(interactive);
            let snap = snapshot_args(&plan);
            let bottle = qemu_args(&plan);
            assert_eq!(saved_state(&snap), saved_state(&bottle), "{snap:?}");
            assert!(snap.ends_with(&[
                "-chardev".to_owned(),
                "socket,id=qmp,host=127.0.0.1,port=40002".to_owned(),
                "-mon".to_owned(),
                "chardev=qmp,mode=control".to_owned(),
            ]));
            assert!(!bottle.iter().any(|a| a == "-qmp" || a == "-mon"));
            assert!(bottle.windows(2).any(|w| w == ["-monitor", "none"]));
            // Nothing of the host's reaches the snapshot's guest: its shares are an empty
            // directory and its chardevs write nowhere but the jail's forwards.
            assert!(!snap.iter().any(|a| a.contains("/home/alice")), "{snap:?}");
            assert!(!snap.iter().any(|a| a.contains("guestfwd")), "{snap:?}");
            assert!(!snap.iter().any(|a| a == "-add-fd"), "{snap:?}");
            let chardevs: Vec<&str> = snap
                .windows(2)
                .filter(|w| w[0] == "-chardev")
                .map(|w| w[1].as_str())
                .filter(|c| !c.starts_with("null,id="))
                .collect();
            assert_eq!(
                chardevs,
                [
                    "socket,id=console,host=127.0.0.1,port=40001",
                    "socket,id=control,host=127.0.0.1,port=40000",
                    "socket,id=qmp,host=127.0.0.1,port=40002",
                ]
            );
            let fsdevs: Vec<&String> = snap
                .windows(2)
                .filter(|w| w[0] == "-fsdev")
                .map(|w| &w[1])
                .collect();
            assert_eq!(fsdevs.len(), 3);
            assert!(
                fsdevs
                    .iter()
                    .all(|f| f.contains(",path=/run/bot-bottle/qemu/empty,")),
                "{fsdevs:?}"
            );
            // The kernel and initramfs where the jail places them, read-only.
            assert!(
                snap.windows(2)
                    .any(|w| w == ["-kernel", "/run/bot-bottle/qemu/kernel"])
            );
            assert!(
                snap.windows(2)
                    .any(|w| w == ["-initrd", "/run/bot-bottle/qemu/initramfs"])
            );
        }
    }

    #[test]
    fn a_restored_bottle_reads_its_snapshot_from_a_descriptor_and_runs_without_a_monitor() {
        let mut plan = bottle_plan(false);
        assert!(!qemu_args(&plan).iter().any(|a| a == "-incoming"));
        plan.restore = true;
        let argv = jail_argv(&plan);
        assert_eq!(
            argv[2],
            "exec 3>&1 4>&2 5</run/bot-bottle/qemu/snapshot; exec \"$0\" \"$@\""
        );
        assert!(argv.ends_with(&["-incoming".to_owned(), "fd:5".to_owned()]));
        // No `-S`: the VM runs as soon as its state is loaded.
        assert!(!argv.iter().any(|a| a == "-S" || a == "-qmp"));
        // The device set (and so the snapshot's key) does not depend on the bottle's ports,
        // paths or whether it is restored.
        let mut other = bottle_plan(false);
        other.ports = vec![1];
        other.workspace = "/elsewhere".into();
        other.control_port = 40007;
        assert_eq!(
            qemu_args(&device_set(&plan)),
            qemu_args(&device_set(&other))
        );
        other.memory_mib = 2048;
        assert_ne!(
            qemu_args(&device_set(&plan)),
            qemu_args(&device_set(&other))
        );
    }
}
