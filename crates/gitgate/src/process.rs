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

/// Runs an async command to completion (stdin closed), capturing output, within `timeout`.
pub(crate) async fn run_async(
    mut cmd: tokio::process::Command,
    timeout: Duration,
) -> Result<Output, RunError> {
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
    let read_all = |pipe: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut p, &mut buf).await;
            }
            buf
        })
    };
    let out_task = read_all(child.stdout.take().map(|p| Box::new(p) as _));
    let err_task = read_all(child.stderr.take().map(|p| Box::new(p) as _));
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ok(Output {
            status,
            stdout: out_task.await.unwrap_or_default(),
            stderr: err_task.await.unwrap_or_default(),
        }),
        Ok(Err(source)) => Err(RunError::Wait { program, source }),
        Err(_) => {
            // Still ours and not reaped: the group id cannot have been reused.
            if let Some(pid) = pid {
                kill_group(pid);
            }
            let _ = child.wait().await;
            out_task.abort();
            err_task.abort();
            Err(RunError::Timeout { program, timeout })
        }
    }
}

/// Runs a blocking command to completion, feeding `stdin`, capturing output, within
/// `timeout` (used by the pre-receive hook, which has no async runtime).
///
/// The child stays in the caller's process group: the hook runs inside the gate's CGI
/// group, and when the gate kills that group (client gone, deadline) the hook's own
/// children — `git push`, `ssh`, a local upstream's receive-pack — must die with it.
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
    let feeder = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => Some(std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&data);
        })),
        _ => None,
    };
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_t = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_t = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
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
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
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
