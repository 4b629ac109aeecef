//! Which process launched a bottle, for the backends whose bottle outlives a killed launcher
//! without a reaper of its own (smolmachines, apple): the launcher writes its pid into the
//! bottle's runtime directory, and `list`/`cleanup` call a running bottle whose launcher is
//! gone an orphan. Portable (a signal-0 probe, no `/proc`), so it works on macOS too.

use std::path::Path;

use crate::BackendError;

/// The file in a bottle's runtime directory holding the pid of the process that launched it.
pub const FILE: &str = "launcher.pid";

/// Records this process as the launcher of the bottle whose runtime directory is `dir`.
pub fn write(dir: &Path) -> Result<(), BackendError> {
    std::fs::create_dir_all(dir).map_err(|source| BackendError::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let file = dir.join(FILE);
    std::fs::write(&file, std::process::id().to_string()).map_err(|source| BackendError::Io {
        action: "write",
        path: file,
        source,
    })
}

/// Whether the launcher recorded in `dir` is known and gone (its pid file names a process
/// that no longer exists). Unknown counts as alive: cleanup never kills what it cannot judge.
pub fn gone(dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(dir.join(FILE))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
    else {
        return false;
    };
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Whether `dir` names a launcher that is alive.
pub fn alive(dir: &Path) -> bool {
    dir.join(FILE).is_file() && !gone(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_pid_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!gone(dir.path()) && !alive(dir.path()), "unknown");
        write(dir.path()).unwrap();
        assert!(alive(dir.path()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        std::fs::write(dir.path().join(FILE), pid.to_string()).unwrap();
        assert!(gone(dir.path()) && !alive(dir.path()));
    }
}
