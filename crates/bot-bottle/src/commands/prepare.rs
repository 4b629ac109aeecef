//! `bot-bottle prepare qemu`: the slow, one-time work a backend needs before its first start,
//! done on request with progress rather than in the middle of a `start`. For qemu: download the
//! distribution's generic kernel package, unpack it into the cache shared by every
//! `$BOT_BOTTLE_HOME` (`backend::qemu::assets`), then say whether KVM can boot a guest here
//! (the cached probe of `backend::qemu::kvm`) and so which accelerator bottles will use.
//! Running it again is quick: it says the kernel is ready and reuses the probe's verdict.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use backend::qemu::{QemuBackend, QemuConfig, assets, kvm, snapshot};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Download and cache the guest kernel for `--backend qemu`, and check whether KVM works
    Qemu(QemuArgs),
}

#[derive(Debug, clap::Args)]
pub struct QemuArgs {
    /// Unpack this kernel package (a Debian linux-image .deb) instead of downloading the
    /// distribution's current one
    #[arg(long, value_name = "FILE")]
    pub deb: Option<PathBuf>,
    /// Boot the KVM test guest again even when a verdict for this kernel, QEMU and host kernel
    /// is cached
    #[arg(long)]
    pub reprobe: bool,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Qemu(args) => qemu(args),
    }
}

fn qemu(args: QemuArgs) -> anyhow::Result<ExitCode> {
    let source = match args.deb {
        Some(deb) => assets::KernelSource::Deb(
            std::fs::canonicalize(&deb)
                .with_context(|| format!("--deb {}: cannot read the package", deb.display()))?,
        ),
        None => assets::KernelSource::Distribution,
    };
    println!(
        "preparing the qemu backend in {}",
        assets::qemu_cache(&assets::cache_root()).display()
    );
    assets::prepare_from(&source, &mut |line| println!("{line}"))?;

    // What bottles will boot: the user's own kernel wins over the prepared one.
    let kernel = assets::guest_kernel()?;
    if std::env::var_os(assets::KERNEL_ENV).is_some() {
        println!(
            "note: {} and {} are set: qemu bottles boot {} ({}), not the prepared kernel",
            assets::KERNEL_ENV,
            assets::MODULES_ENV,
            kernel.image.display(),
            kernel.version
        );
    }
    println!(
        "checking KVM (a test guest boots under -accel kvm; at most {} s)",
        kvm::PROBE_TIMEOUT.as_secs()
    );
    let status = kvm::status(&assets::cache_root(), &kernel, args.reprobe);
    let cached = if status.cached {
        " (cached verdict; --reprobe to boot the test guest again)"
    } else {
        ""
    };
    if status.usable {
        println!("KVM: usable ({}){cached}", status.reason);
    } else {
        println!("{}{cached}", status.reason);
    }
    match assets::decide_accel(&status, std::env::var(assets::ACCEL_ENV).ok().as_deref()) {
        Ok(accel) => {
            snapshot(accel);
            if accel == assets::Accel::Kvm {
                println!("ready: qemu bottles run under KVM");
            } else {
                println!("ready: qemu bottles run under software emulation (TCG)");
                eprintln!("{}", assets::TCG_WARNING);
            }
        }
        // The kernel is ready; what is missing is the machine's, and the message says it.
        Err(e) => println!("not ready to start qemu bottles: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes the guest snapshot that bottles of the default size (`resources:` left out, not
/// interactive) restore from, so that their first `start` does not make it. Other sizes are
/// made by their first `start`. Not fatal: a bottle boots without one.
fn snapshot(accel: assets::Accel) {
    if !snapshot::enabled() {
        println!(
            "guest snapshot: off ({}=0); bottles boot their guest",
            snapshot::SNAPSHOT_ENV
        );
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        println!(
            "guest snapshot: not made (cannot find this executable); the first start makes it"
        );
        return;
    };
    let home = match state::Home::from_env() {
        Ok(home) => home.root().to_path_buf(),
        Err(e) => {
            println!("guest snapshot: not made ({e}); the first start makes it");
            return;
        }
    };
    // The snapshot's QEMU runs in a jail like a bottle's, started by the native helper a
    // `start` would use.
    let helper = backend::OpenOptions::new(&home, exe).native_helper();
    let mut config = QemuConfig::new(helper, &home);
    config.accel = Some(accel);
    println!("making the guest snapshot of default-size bottles (a guest boots once)");
    match QemuBackend::new(config).prepare_snapshot(&backend::Resources::default(), false) {
        Ok(s) => match s.made_in {
            Some(took) => println!(
                "guest snapshot: made {} in {:.1} s",
                s.path.display(),
                took.as_secs_f64()
            ),
            None => println!("guest snapshot: ready ({})", s.path.display()),
        },
        Err(e) => println!("guest snapshot: not made, bottles boot their guest instead: {e}"),
    }
}
