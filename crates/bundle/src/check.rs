//! The health check of a running bundle (`bot-bottle sidecar --check`): each sidecar is asked
//! a question only it answers that way, on a fresh connection to where it listens.

use crate::{Listen, SidecarConfig};

/// How long one health question may take.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One sidecar's answer to the health check; its `Display` is the line the check prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// It answered as only it would.
    Answering {
        /// `egress`, `git gate` or `supervise`.
        sidecar: &'static str,
    },
    /// Something answered, but not as this sidecar would.
    Unexpected {
        /// The sidecar asked.
        sidecar: &'static str,
        /// The answer's first line.
        first_line: String,
    },
    /// Nothing answered.
    NotAnswering {
        /// The sidecar asked.
        sidecar: &'static str,
        /// Why the question could not be asked.
        reason: String,
    },
}

impl Health {
    /// Whether the sidecar answered as it should.
    pub fn is_answering(&self) -> bool {
        matches!(self, Health::Answering { .. })
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Answering { sidecar } => write!(f, "{sidecar}: answering"),
            Health::Unexpected {
                sidecar,
                first_line,
            } => write!(f, "{sidecar}: unexpected answer ({first_line})"),
            Health::NotAnswering { sidecar, reason } => {
                write!(f, "{sidecar}: not answering ({reason})")
            }
        }
    }
}

/// Asks every sidecar of a running bundle a question only it answers that way: egress its
/// introspection page, the git gate its answer to a path it does not serve, supervise an MCP
/// `ping`. One [`Health`] per sidecar the config has, in the order egress, git gate,
/// supervise.
pub fn check(config: &SidecarConfig) -> Vec<Health> {
    let mut probes = vec![(
        "egress",
        &config.egress.listen,
        "GET http://_egress.local/routes HTTP/1.1\r\nHost: _egress.local\r\nConnection: close\r\n\r\n".to_owned(),
        "HTTP/1.1 200",
    )];
    if let Some(g) = &config.gate {
        probes.push((
            "git gate",
            &g.listen,
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_owned(),
            "the git gate",
        ));
    }
    if let Some(s) = &config.supervise {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        probes.push((
            "supervise",
            &s.listen,
            format!(
                "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            "\"result\"",
        ));
    }
    probes
        .into_iter()
        .map(
            |(sidecar, listen, request, expect)| match ask(listen, &request) {
                Ok(answer) if answer.contains(expect) => Health::Answering { sidecar },
                Ok(answer) => Health::Unexpected {
                    sidecar,
                    first_line: answer.lines().next().unwrap_or("nothing").to_owned(),
                },
                Err(e) => Health::NotAnswering {
                    sidecar,
                    reason: e.to_string(),
                },
            },
        )
        .collect()
}

/// One request on a fresh connection; the whole answer (until the sidecar closes it).
fn ask(listen: &Listen, request: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    fn exchange(mut stream: impl Read + Write, request: &str) -> std::io::Result<String> {
        stream.write_all(request.as_bytes())?;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }
    match listen {
        Listen::Unix(path) => {
            let stream = std::os::unix::net::UnixStream::connect(path)?;
            stream.set_read_timeout(Some(CHECK_TIMEOUT))?;
            stream.set_write_timeout(Some(CHECK_TIMEOUT))?;
            exchange(stream, request)
        }
        Listen::Tcp(addr) => {
            // A bundle listening on every address answers on loopback too.
            let mut target = *addr;
            if target.ip().is_unspecified() {
                target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let stream = std::net::TcpStream::connect_timeout(&target, CHECK_TIMEOUT)?;
            stream.set_read_timeout(Some(CHECK_TIMEOUT))?;
            stream.set_write_timeout(Some(CHECK_TIMEOUT))?;
            exchange(stream, request)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EgressSidecar, SuperviseSidecar};
    use pretty_assertions::assert_eq;

    #[test]
    fn sidecars_nobody_listens_for_are_reported_not_answering() {
        let dir = tempfile::tempdir().unwrap();
        let socket = |name: &str| Listen::Unix(dir.path().join(format!("{name}.sock")));
        let config = SidecarConfig {
            identity: "demo-1a2b3".into(),
            home: dir.path().into(),
            egress: EgressSidecar {
                listen: socket("egress"),
                routes: dir.path().join("routes.yaml"),
                ca_dir: dir.path().join("ca"),
                upstream_ca: vec![],
                log: dir.path().join("egress.jsonl"),
            },
            gate: None,
            supervise: Some(SuperviseSidecar {
                listen: socket("supervise"),
            }),
            tokens: vec![],
            operator: None,
        };
        let lines: Vec<String> = check(&config)
            .iter()
            .map(|h| {
                assert!(!h.is_answering());
                h.to_string()
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                "egress: not answering (No such file or directory (os error 2))",
                "supervise: not answering (No such file or directory (os error 2))",
            ]
        );
    }
}
