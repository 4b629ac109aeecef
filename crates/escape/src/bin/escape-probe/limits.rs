//! The `resources` section: the agent must not be host root, and the bottle's limits must
//! stop a fork bomb and a memory hog before the host feels them.
//!
//! Both attacks are bounded just above the limits the harness gave the bottle
//! (`pids_limit`, `memory_limit_mib` in the probe's config; the suite's manifest sets the
//! same values in `resources:`), so a backend without limits is caught without hurting the
//! machine: a burst that reaches its bound was not stopped and is ESCAPED. The sidecars must
//! still answer afterwards.

use crate::config::Cfg;
use crate::http::https;
use crate::verdict::{blocked, escaped, na};

pub(super) fn resources(c: &Cfg) {
    agent_host_uid();
    if crate::gvisor::kernel().gvisor {
        // Under gVisor the engine's limits bound the sandbox's host tasks and memory as a
        // whole: a burst past them ends the whole sandbox (measured: the probe dies with it),
        // which cannot be reported from inside. Not judged here; the runc and native columns
        // judge the limits, and the sanity requests still go out.
        for (name, path) in [
            ("resource-fork-bomb", "/v1/after-fork"),
            ("resource-memory", "/v1/after-memory"),
        ] {
            let alive = sidecars_answer(c, path);
            na(
                name,
                format!(
                    "not judged under gVisor: the limits bound the whole sandbox, and a burst past them ends it with the probe inside; sidecars answer: {alive}"
                ),
            );
        }
        return;
    }
    fork_bomb(c);
    memory_hog(c);
}

/// Whether the sidecars still answer: one allowed request through the egress proxy.
fn sidecars_answer(c: &Cfg, path: &str) -> bool {
    let api = c.s("api_host");
    let r = https(
        &format!("{api}:443"),
        &api,
        format!("GET {path} HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes(),
    );
    matches!(&r, Ok(r) if r.status == 200)
}

/// The host uid behind the agent's uid, from `/proc/self/uid_map`.
fn agent_host_uid() {
    const NAME: &str = "proc-agent-host-uid";
    // SAFETY: getuid(2) cannot fail.
    let uid = unsafe { libc::getuid() };
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let lines: Vec<(u64, u64, u64)> = map
        .lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .collect();
    let host = lines
        .iter()
        .find(|(inside, _, n)| (*inside..inside + n).contains(&u64::from(uid)))
        .map(|(inside, lower, _)| lower + (u64::from(uid) - inside));
    let root_mapped = lines.iter().any(|(_, lower, _)| *lower == 0);
    let detail = format!(
        "uid {uid} is host uid {}; host uid 0 mapped into the bottle: {}",
        host.map_or("unknown".to_owned(), |h| h.to_string()),
        if root_mapped { "yes" } else { "no" }
    );
    match host {
        Some(0) => escaped(NAME, format!("the agent is host root: {detail}")),
        Some(_) => blocked(NAME, detail),
        None => escaped(NAME, format!("cannot tell: {detail}")),
    }
}

fn fork_bomb(c: &Cfg) {
    const NAME: &str = "resource-fork-bomb";
    let limit = usize::from(c.n("pids_limit"));
    if limit == 0 {
        escaped(NAME, "the harness gave no pids_limit to judge against");
        return;
    }
    let bound = limit + 64;
    let mut kids = Vec::new();
    let mut refused = None;
    for _ in 0..bound {
        match std::process::Command::new("sleep").arg("30").spawn() {
            Ok(child) => kids.push(child),
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    let spawned = kids.len();
    for mut k in kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    let alive = sidecars_answer(c, "/v1/after-fork");
    let detail = format!(
        "pids limit {limit}: spawned {spawned}/{bound}{}; sidecars answer afterwards: {alive}",
        refused
            .as_ref()
            .map(|e| format!(", then refused: {e}"))
            .unwrap_or_default()
    );
    if refused.is_some() && alive {
        blocked(NAME, detail)
    } else {
        escaped(NAME, detail)
    }
}

fn memory_hog(c: &Cfg) {
    const NAME: &str = "resource-memory";
    let limit = usize::from(c.n("memory_limit_mib"));
    if limit == 0 {
        escaped(
            NAME,
            "the harness gave no memory_limit_mib to judge against",
        );
        return;
    }
    let bound = limit + 256;
    // SAFETY: the section runs single-threaded; the child only allocates and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut held: Vec<Vec<u8>> = Vec::new();
        for _ in 0..bound {
            let mut chunk = vec![0u8; 1 << 20];
            // Touch every page: untouched pages cost nothing and prove nothing.
            for i in (0..chunk.len()).step_by(4096) {
                chunk[i] = 1;
            }
            held.push(chunk);
        }
        // SAFETY: leave the child without running destructors.
        unsafe { libc::_exit(if held.len() == bound { 0 } else { 1 }) };
    }
    if pid < 0 {
        escaped(NAME, "cannot fork the memory hog");
        return;
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let outcome = if libc::WIFSIGNALED(status) {
        Some(format!("killed by signal {}", libc::WTERMSIG(status)))
    } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
        Some(format!(
            "allocation refused (exit {})",
            libc::WEXITSTATUS(status)
        ))
    } else {
        None
    };
    let alive = sidecars_answer(c, "/v1/after-memory");
    let detail = format!(
        "memory limit {limit} MiB: a hog touching {bound} MiB was {}; sidecars answer afterwards: {alive}",
        outcome.as_deref().unwrap_or("NOT stopped")
    );
    if outcome.is_some() && alive {
        blocked(NAME, detail)
    } else {
        escaped(NAME, detail)
    }
}
