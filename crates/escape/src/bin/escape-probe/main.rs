//! `escape-probe`: runs inside a bottle as the agent and tries to get out.
//!
//! Usage: `escape-probe '<json config>'` (see the harness, `tests/suite/mod.rs`). Prints one
//! line per case: `CASE <name> blocked|ESCAPED|n/a <detail>`, then `PROBE-DONE`.
//! Every network attempt goes to loopback or to the test namespaces' addresses named in the
//! config, with short timeouts; resource cases are bounded.
//!
//! One module per attack family (the sections below, each run in a forked child by
//! [`fork::section`]); the raw sockets and the raw HTTP/TLS client every family shares are
//! in [`sockets`] and [`http`]: most attacks are about framing, so they write bytes, not
//! requests built by a library that would normalise them.

use std::io::Write;

use serde_json::Value;

mod config;
mod fork;
mod http;
mod sockets;
mod verdict;

mod blocked_tunnel;
mod credentials;
mod dns;
mod egress;
mod filesystem;
mod git;
mod kernel;
mod network;
mod supervise;

mod dlp;
mod egress_classes;
mod git_objects;
mod gvisor;
mod limits;
mod supervise_effect;
mod vm;

use config::Cfg;

/// The sidecars' fixed addresses inside a bottle.
const PROXY: &str = "127.0.0.1:3128";
const GATE: &str = "127.0.0.1:3129";
const SUPERVISE: &str = "127.0.0.1:3130";

/// A named group of cases.
type Section = (&'static str, fn(&Cfg));

/// Every section, in the order they run.
const SECTIONS: [Section; 11] = [
    ("network", network::cases),
    ("dns", dns::cases),
    ("egress", egress::cases),
    ("credentials", credentials::cases),
    ("filesystem", filesystem::cases),
    ("kernel", kernel::cases),
    ("git", git::cases),
    ("supervise", supervise::cases),
    ("dlp", dlp::cases),
    ("resources", limits::resources),
    ("vm", vm::cases),
];

fn main() {
    let raw = std::env::args().nth(1).unwrap_or_default();
    let cfg = match serde_json::from_str::<Value>(&raw) {
        Ok(v) => Cfg(v),
        Err(e) => {
            eprintln!("escape-probe: bad config: {e}");
            std::process::exit(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !config::wait_for_harness(&cfg) {
        println!("PROBE-DONE");
        std::process::exit(1);
    }
    // `sections` (optional) restricts the run: the harness's control run uses it.
    let only = cfg.list("sections");
    for (name, f) in SECTIONS {
        if only.is_empty() || only.iter().any(|o| o == name) {
            fork::section(name, &cfg, f);
        }
    }
    println!("PROBE-DONE");
    let _ = std::io::stdout().flush();
    if verdict::any_escaped() {
        std::process::exit(1);
    }
}
