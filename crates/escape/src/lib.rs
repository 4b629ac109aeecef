//! The escape suite (test-only crate).
//!
//! * `escape-probe` (`src/bin/escape-probe/main.rs`, one module per attack family): run
//!   inside a bottle as the agent, it tries every attack of the threat model and prints one
//!   line per case:
//!   `CASE <name> blocked|ESCAPED|n/a <detail>`.
//! * `tests/suite/`: the host-side harness. It builds canaries (an "internet" and a "LAN"
//!   network namespace, a canary on host loopback, a DNS canary, a recording TLS upstream
//!   behind an allowed route), runs the probe through `bot-bottle start` on every backend in
//!   [`BACKENDS`], checks what the canaries received and prints the table that `SECURITY.md`
//!   keeps. Any `ESCAPED` fails the suite.

pub mod gvisor;

/// The backends the suite runs on. A new backend has to be added here (and, where its world
/// differs from native's, to the harness: see `tests/suite/docker.rs`); one that
/// `bot-bottle doctor` reports as not usable on this machine is skipped with its reason.
/// `docker` runs with runc, `docker+runsc` is the docker backend with the agent under gVisor
/// (`BOT_BOTTLE_DOCKER_RUNTIME` chooses; the harness also checks the container's runtime).
pub const BACKENDS: &[&str] = &["native", "docker", "docker+runsc", "qemu"];

/// One line of probe output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseLine {
    /// The case name (`net-tcp-internet`, ...).
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Free text: what was tried and what happened.
    pub detail: String,
}

/// The outcome of one case on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The attack did not get through.
    Blocked,
    /// The attack got through: the suite fails.
    Escaped,
    /// Does not apply (the detail says why).
    NotApplicable,
}

impl Verdict {
    /// The word used in probe lines and the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Blocked => "blocked",
            Verdict::Escaped => "ESCAPED",
            Verdict::NotApplicable => "n/a",
        }
    }
}

/// Parses the `CASE` lines of the probe's output (other lines are ignored).
pub fn parse_cases(stdout: &str) -> Vec<CaseLine> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("CASE ")?;
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next()?.to_string();
            let verdict = match parts.next()? {
                "blocked" => Verdict::Blocked,
                "ESCAPED" => Verdict::Escaped,
                "n/a" => Verdict::NotApplicable,
                _ => return None,
            };
            Some(CaseLine {
                name,
                verdict,
                detail: parts.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_lines_parse_and_other_lines_are_ignored() {
        let out = "noise\nCASE net-tcp ESCAPED connected to 1.2.3.4\nCASE x n/a why not\nCASE y bogus z\nCASE z blocked\n";
        assert_eq!(
            parse_cases(out),
            vec![
                CaseLine {
                    name: "net-tcp".into(),
                    verdict: Verdict::Escaped,
                    detail: "connected to 1.2.3.4".into()
                },
                CaseLine {
                    name: "x".into(),
                    verdict: Verdict::NotApplicable,
                    detail: "why not".into()
                },
                CaseLine {
                    name: "z".into(),
                    verdict: Verdict::Blocked,
                    detail: String::new()
                },
            ]
        );
    }
}
