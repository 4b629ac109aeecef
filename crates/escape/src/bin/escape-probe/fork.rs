//! Forked children: each section runs in one with a deadline, and the cases that change the
//! process (namespaces, credentials) run their attempt in one so the probe stays as it was.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::config::Cfg;
use crate::verdict::{self, escaped};

/// How long one section may take before it is killed.
const SECTION_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs one section in a forked child with a deadline, so a hang (a proxy that never
/// answers) cannot stop the other sections; a killed section is reported, never passed.
pub(crate) fn section(name: &str, cfg: &Cfg, f: fn(&Cfg)) {
    let _ = std::io::stdout().flush();
    eprintln!("escape-probe: section {name}");
    // SAFETY: the probe is single-threaded here (sections run in children).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        f(cfg);
        let _ = std::io::stdout().flush();
        let code = if verdict::any_escaped() { 3 } else { 0 };
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        escaped(
            &format!("section-{name}"),
            format!("cannot fork: {}", errno()),
        );
        return;
    }
    let deadline = Instant::now() + SECTION_TIMEOUT;
    loop {
        let mut status = 0;
        // SAFETY: polling our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3 {
                verdict::mark_escaped();
            } else if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                escaped(
                    &format!("section-{name}"),
                    format!("the section died (status {status}); its remaining cases are unjudged"),
                );
            }
            return;
        }
        if Instant::now() > deadline {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: reaping it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            escaped(
                &format!("section-{name}"),
                format!(
                    "hung for {SECTION_TIMEOUT:?} and was killed; its remaining cases are unjudged"
                ),
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `f` in a forked child (so namespace or credential changes cannot affect the probe)
/// and returns its exit code: 0 means the attack worked.
pub(crate) fn in_child(f: impl FnOnce() -> bool) -> i32 {
    // SAFETY: fork in a single-threaded moment of the probe? Not guaranteed (no threads are
    // left running between cases); the child only makes syscalls and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = f();
        // SAFETY: leave the child without running destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    if pid < 0 {
        return -1;
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -2
    }
}

/// The last OS error, as text.
pub(crate) fn errno() -> String {
    std::io::Error::last_os_error().to_string()
}
