//! The `credentials` section: the real token (which only the proxy may hold) searched for in
//! the environment, every visible process, the files the agent can read, and the private keys
//! of the bundle (the CA key, the gate's deploy key).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Cfg;
use crate::verdict::Tally;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn scan_tree(
    root: &Path,
    needle: &[u8],
    found: &mut Vec<String>,
    budget: &mut usize,
    deadline: Instant,
) {
    if Instant::now() > deadline || *budget == 0 {
        return;
    }
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return;
    };
    if meta.is_dir() {
        let Ok(rd) = std::fs::read_dir(root) else {
            return;
        };
        for e in rd.flatten() {
            scan_tree(&e.path(), needle, found, budget, deadline);
        }
    } else if meta.is_file() && meta.len() < 4 << 20 {
        *budget = budget.saturating_sub(1);
        if let Ok(data) = std::fs::read(root)
            && contains(&data, needle)
        {
            found.push(root.display().to_string());
        }
    }
}

fn is_private_key_pem(data: &[u8]) -> bool {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(data).is_ok()
}

/// The `credentials` section.
pub(crate) fn cases(c: &Cfg) {
    // Passed reversed, so that the probe's own command line does not hold the token.
    let token: String = c.s("token_fragment_rev").chars().rev().collect();
    let needle = token.as_bytes();
    let mut t = Tally::new("cred-environment");
    for (k, v) in std::env::vars_os() {
        if contains(v.as_encoded_bytes(), needle) || contains(k.as_encoded_bytes(), needle) {
            t.escaped(format!("env {k:?}"));
        }
    }
    t.blocked("own environment clean");
    t.done();

    let mut t = Tally::new("cred-proc");
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .chars()
                .all(|ch| ch.is_ascii_digit())
            {
                continue;
            }
            n += 1;
            for f in ["environ", "cmdline"] {
                if let Ok(data) = std::fs::read(e.path().join(f))
                    && contains(&data, needle)
                {
                    t.escaped(format!("{}/{f}", e.path().display()));
                }
            }
        }
    }
    t.blocked(format!("{n} processes visible, none holds the token"));
    t.done();

    let mut t = Tally::new("cred-files");
    let mut found = Vec::new();
    let mut budget = 50_000usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut roots: Vec<PathBuf> = [
        "/etc", "/home", "/root", "/run", "/tmp", "/var", "/opt", "/srv", "/mnt", "/media",
        "/dev/shm",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    for extra in c.list("host_secret_dirs") {
        roots.push(PathBuf::from(extra));
    }
    for r in &roots {
        scan_tree(r, needle, &mut found, &mut budget, deadline);
    }
    for f in found {
        t.escaped(format!("token in {f}"));
    }
    t.blocked(format!(
        "scanned {} files under {} (/usr and other read-only system trees skipped)",
        50_000 - budget,
        roots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    ));
    t.done();

    let mut t = Tally::new("cred-ca-key-bundle-config-deploy-key");
    for p in c.list("host_secret_files") {
        match std::fs::read(&p) {
            Ok(_) => t.escaped(format!("read {p}")),
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    for p in ["/run/bot-bottle", "/etc/ssl/private"] {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                // A PEM private key that parses: executables mounted here (the docker init)
                // hold the label text too.
                if let Ok(data) = std::fs::read(e.path())
                    && contains(&data, b"PRIVATE KEY")
                    && is_private_key_pem(&data)
                {
                    t.escaped(format!("private key at {}", e.path().display()));
                }
            }
        }
    }
    t.done();
}
