//! The in-bottle helper as its own executable, for this crate's integration tests only
//! (`bot-bottle` runs the same code through its hidden `__bottle-init` subcommand).
//!
//! With `launch <spec.json> <bot-bottle-home>` it is instead a stand-in for `bot-bottle start`:
//! it launches the spec with inherited stdio, prints its own PID, and exits with the bottle's
//! code — so tests can `kill -9` a launcher that is not the test process itself.

#[cfg(target_os = "linux")]
use std::path::Path;

#[cfg(target_os = "linux")]
use backend::native::{HelperCommand, NativeBackend, NativeConfig};
#[cfg(target_os = "linux")]
use backend::qemu::{QemuBackend, QemuConfig};
#[cfg(target_os = "linux")]
use backend::{Backend, BottleStdio, LaunchSpec};

/// The native and qemu backends are Linux-only.
#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("bottle-helper-for-tests: the native and qemu backends run on Linux only");
    std::process::exit(2)
}

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "launch" {
        std::process::exit(launch(Path::new(&args[2]), Path::new(&args[3])));
    }
    backend::inbottle::native_helper::helper_main()
}

/// `name` beside this executable (this crate's other test binaries are built with it).
#[cfg(target_os = "linux")]
fn exe_dir_file(name: &str) -> Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    Ok(exe.with_file_name(name))
}

#[cfg(target_os = "linux")]
fn launch(spec: &Path, home: &Path) -> i32 {
    let result = (|| -> Result<i32, String> {
        let text = std::fs::read_to_string(spec).map_err(|e| e.to_string())?;
        let spec: LaunchSpec = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let helper = HelperCommand { exe, args: vec![] };
        // `BOTTLE_HELPER_BACKEND=qemu`: the qemu backend under TCG with the prepared kernel
        // (the tests that need a terminal of their own launch through here).
        let backend: Box<dyn Backend> =
            if std::env::var("BOTTLE_HELPER_BACKEND").as_deref() == Ok("qemu") {
                let mut config = QemuConfig::new(helper, home);
                config.guest = exe_dir_file("qemu-guest-for-tests")?;
                config.accel = Some(backend::qemu::assets::Accel::Tcg);
                Box::new(QemuBackend::new(config))
            } else {
                Box::new(NativeBackend::new(NativeConfig::new(helper, home)))
            };
        let mut bottle = backend
            .launch(&spec, BottleStdio::inherit())
            .map_err(|e| e.to_string())?;
        let code = bottle.wait().map(|e| e.code).map_err(|e| e.to_string())?;
        if spec.interactive {
            let ours = nix::unistd::getpgrp();
            let foreground = nix::unistd::tcgetpgrp(std::io::stdin()).ok();
            println!(
                "launcher-foreground={}",
                if foreground == Some(ours) {
                    "yes"
                } else {
                    "no"
                }
            );
        }
        Ok(code)
    })();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
