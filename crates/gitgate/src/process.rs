//! Subprocesses with a deadline. Every child runs in its own process group so that a
//! timeout or a client going away kills the whole tree (`git` → `ssh`, `http-backend` →
//! `receive-pack` → hook), never just the top process.

use std::ffi::OsString;
use std::io::Read;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// A subprocess that failed to run to completion.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// Program name.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The program did not finish in time and was killed.
    #[error("`{program}` did not finish within {timeout:?} and was stopped")]
    Timeout {
        /// Program name.
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// Reading its output or waiting for it failed.
    #[error("lost track of `{program}`: {source}")]
    Wait {
        /// Program name.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Sends SIGKILL to a whole process group.
pub(crate) fn kill_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg only sends a signal; it has no memory-safety preconditions. The group
    // id is a child we spawned with `process_group(0)` and have not reaped yet.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// How long a child's output may stay open after the child itself has exited. Whatever
/// still holds the pipes then is a leftover descendant that inherited them (a hook's or a
/// helper's background process); waiting for it would hold the caller — a push, a fetch,
/// a sync — until the deadline or for ever. Its end of the output is not the child's result.
pub(crate) const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// A child's exit, seen without reaping it: while the child is an unreaped zombie its PID,
/// and so its process group id, cannot be reused, so the group may still be killed safely.
pub(crate) struct ExitWatch(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>);

impl ExitWatch {
    /// Watches `pid`, a child of this process not yet reaped. Fails on kernels without
    /// `pidfd_open` (before 5.3); callers then fall back to waiting for the child.
    pub(crate) fn new(pid: u32) -> std::io::Result<ExitWatch> {
        use std::os::fd::FromRawFd;
        let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
        // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1; it
        // touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
        // SAFETY: `fd` is the descriptor pidfd_open just returned; nothing else owns it.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: an `OwnedFd` is open for as long as it lives and always returns the same
        // descriptor; the `AsyncFd` owns it and so outlives nothing of it.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
        }
        .map(ExitWatch)
        .map_err(|e| e.into_parts().1)
    }

    /// Resolves once the child has exited (it stays a zombie until it is waited for).
    pub(crate) async fn exited(&self) {
        // A pidfd turns readable when its process exits and stays so; an error from the
        // reactor also means there is nothing left to wait for.
        let _ = self.0.readable().await;
    }
}

/// Reads a pipe to its end in a task; what was read so far stays readable through the
/// shared buffer if the task is given up on.
fn read_all(
    pipe: Option<impl tokio::io::AsyncRead + Send + Unpin + 'static>,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let shared = buf.clone();
    let task = tokio::spawn(async move {
        let Some(mut p) = pipe else { return };
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut p, &mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if let Ok(mut b) = shared.lock() {
                        b.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
    });
    (task, buf)
}

fn take(buf: &std::sync::Mutex<Vec<u8>>) -> Vec<u8> {
    buf.lock()
        .map(|mut b| std::mem::take(&mut *b))
        .unwrap_or_default()
}

/// Runs an async command to completion (stdin closed), capturing output, within `timeout`.
///
/// Its output is read until the child exits and then for at most [`DRAIN_AFTER_EXIT`]
/// more; after that (or at once when the pipes are closed) what is left of its process
/// group — descendants that did not start a session of their own — is killed before the
/// child is reaped.
pub(crate) async fn run_async(
    mut cmd: tokio::process::Command,
    timeout: Duration,
) -> Result<Output, RunError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let program = program_name(cmd.as_std());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id();
    let watch = pid.and_then(|p| ExitWatch::new(p).ok());
    let (out_task, out_buf) = read_all(child.stdout.take());
    let (err_task, err_buf) = read_all(child.stderr.take());
    let exited = async {
        match &watch {
            Some(w) => {
                w.exited().await;
                Ok(None)
            }
            // No pidfd: learn of the exit by reaping (the group is then not killed after).
            None => child.wait().await.map(Some),
        }
    };
    let exited = tokio::time::timeout_at(deadline, exited).await;
    let reaped = match exited {
        Ok(Ok(reaped)) => reaped,
        Ok(Err(source)) => return Err(RunError::Wait { program, source }),
        Err(_) => {
            // Still ours and not reaped: the group id cannot have been reused.
            if let Some(pid) = pid {
                kill_group(pid);
            }
            let _ = child.wait().await;
            out_task.abort();
            err_task.abort();
            return Err(RunError::Timeout { program, timeout });
        }
    };
    let drain_until = deadline.min(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
    let readers = [out_task.abort_handle(), err_task.abort_handle()];
    let drained = tokio::time::timeout_at(drain_until, async {
        let _ = out_task.await;
        let _ = err_task.await;
    })
    .await
    .is_ok();
    if !drained {
        readers.iter().for_each(tokio::task::AbortHandle::abort);
        tracing::warn!(
            "`{program}` exited but a process it started still held its output open; stopped waiting for it"
        );
    }
    let status = match reaped {
        Some(status) => status,
        None => {
            // Unreaped zombie: the group id is still this child's.
            if let Some(pid) = pid {
                kill_group(pid);
            }
            child
                .wait()
                .await
                .map_err(|source| RunError::Wait { program, source })?
        }
    };
    Ok(Output {
        status,
        stdout: take(&out_buf),
        stderr: take(&err_buf),
    })
}

/// Runs a blocking command to completion, feeding `stdin`, capturing output, within
/// `timeout` (used by the pre-receive hook, which has no async runtime).
///
/// The child stays in the caller's process group: the hook runs inside the gate's CGI
/// group, and when the gate kills that group (client gone, deadline) the hook's own
/// children — `git push`, `ssh`, a local upstream's receive-pack — must die with it. So a
/// descendant still holding the pipes after the child has exited cannot be killed by group
/// here; it is left behind (the gate's kill of the CGI group ends it) and its output is not
/// waited for longer than [`DRAIN_AFTER_EXIT`].
pub(crate) fn run_blocking(
    mut cmd: std::process::Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Output, RunError> {
    let program = program_name(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    // Neither the feeder nor the readers are joined unboundedly: a descendant holding a
    // pipe open (or not reading its stdin) would block them for ever.
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&data);
        });
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = buf.clone();
        let done = done_tx.clone();
        std::thread::spawn(move || {
            if let Some(mut p) = pipe {
                let mut chunk = vec![0u8; 16 * 1024];
                while let Ok(n @ 1..) = p.read(&mut chunk) {
                    if let Ok(mut b) = shared.lock() {
                        b.extend_from_slice(&chunk[..n]);
                    }
                }
            }
            let _ = done.send(());
        });
        buf
    };
    let out_buf = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_buf = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    drop(done_tx);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout { program, timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(source) => return Err(RunError::Wait { program, source }),
        }
    };
    let drain_until = deadline.min(Instant::now() + DRAIN_AFTER_EXIT);
    for _ in 0..2 {
        let left = drain_until.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    Ok(Output {
        status,
        stdout: take(&out_buf),
        stderr: take(&err_buf),
    })
}

fn program_name(cmd: &std::process::Command) -> String {
    let mut name = cmd.get_program().to_string_lossy().into_owned();
    if let Some(first) = cmd.get_args().next() {
        name.push(' ');
        name.push_str(&first.to_string_lossy());
    }
    name
}

/// Environment every git we run gets: no system or user config (the gate must behave the
/// same on any host), never prompt.
pub(crate) fn hermetic_git_env() -> Vec<(OsString, OsString)> {
    vec![
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("GIT_ASKPASS".into(), "/bin/false".into()),
        ("SSH_ASKPASS".into(), "/bin/false".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_timeout_kills_the_child() {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg("sleep 30");
        let start = Instant::now();
        let err = run_blocking(cmd, None, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn blocking_feeds_stdin_and_captures_stdout() {
        let cmd = std::process::Command::new("cat");
        let out = run_blocking(cmd, Some(b"hello".to_vec()), Duration::from_secs(10)).unwrap();
        assert_eq!(out.stdout, b"hello".to_vec());
    }

    /// Whether `pid` has ended (gone, or a zombie waiting for its reaper), waiting up to 10 s.
    fn ended(pid: i32) -> bool {
        for _ in 0..200 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat) => {
                    // The state follows the command name in parentheses.
                    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
                    if state == Some(Some('Z')) || state == Some(Some('X')) {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn leftover_pid(dir: &std::path::Path) -> i32 {
        std::fs::read_to_string(dir.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// A child that exits while a background process it started still holds its stdout and
    /// stderr (a hook or helper that inherited them): the run ends with the child's own
    /// output, and the leftover process is killed with the child's group.
    #[tokio::test]
    async fn async_run_ends_when_the_child_exits_though_a_descendant_holds_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg("sleep 1000 & echo $! > pid; echo done; echo note >&2")
            .current_dir(dir.path());
        // The guard turns the hang this test is about into a failure.
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            run_async(cmd, Duration::from_secs(120)),
        )
        .await
        .expect("run_async waited for the descendant holding the pipes")
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"done\n");
        assert_eq!(out.stderr, b"note\n");
        let pid = leftover_pid(dir.path());
        let killed = ended(pid);
        if !killed {
            // SAFETY: kill(2) on the test's own leftover process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        assert!(
            killed,
            "the leftover `sleep` ({pid}) of the child's group still runs"
        );
    }

    /// The same for the hook's blocking runner, with a stdin the leftover holds but never
    /// reads (the feeder must not be waited for either). The leftover stays in the caller's
    /// group by design, so the test ends it itself.
    #[test]
    fn blocking_run_ends_when_the_child_exits_though_a_descendant_holds_its_pipes() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg("sleep 1000 & echo $! > pid; echo done")
            .current_dir(dir.path());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run_blocking(
                cmd,
                Some(vec![b'x'; 1024 * 1024]),
                Duration::from_secs(120),
            ));
        });
        let result = rx.recv_timeout(Duration::from_secs(60));
        let pid = leftover_pid(dir.path());
        // SAFETY: kill(2) on the test's own leftover process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let out = result
            .expect("run_blocking waited for the descendant holding the pipes")
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"done\n");
    }

    #[tokio::test]
    async fn async_timeout_kills_the_child() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg("sleep 30");
        let err = run_async(cmd, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c` did not finish within 200ms and was stopped"
        );
    }
}
