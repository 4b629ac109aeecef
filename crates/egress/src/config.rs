//! What the proxy is started with (as opposed to the routes, which can change live).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::log::LogSink;
use crate::net::{Resolve, SystemResolver};

/// Reads an environment variable (the proxy's own environment by default).
pub type EnvReader = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Timeouts of each stage.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// DNS lookup of an upstream.
    pub dns: Duration,
    /// TCP connect to an upstream.
    pub connect: Duration,
    /// TLS handshake (client side and upstream side).
    pub tls: Duration,
    /// From sending a request upstream to its response head.
    pub first_byte: Duration,
    /// No byte in either direction for this long ends a body, tunnel or idle connection.
    pub idle: Duration,
    /// A client must finish sending a request head within this.
    pub request_head: Duration,
    /// An HTTP/1 connection (a tunnel's, or a plain one) with nothing in flight and no byte
    /// moved for this long is parked: hyper's buffers are freed until its next request
    /// (`park` module). Changes memory only, no deadline and no limit.
    pub park: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            dns: Duration::from_secs(5),
            connect: Duration::from_secs(10),
            tls: Duration::from_secs(10),
            first_byte: Duration::from_secs(300),
            idle: Duration::from_secs(300),
            request_head: Duration::from_secs(30),
            park: Duration::from_millis(500),
        }
    }
}

/// Size limits on what a client sends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest request line.
    pub request_line: usize,
    /// Largest request head (request line and headers).
    pub head: usize,
    /// Most header fields.
    pub headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: 8 * 1024,
            head: 64 * 1024,
            headers: 100,
        }
    }
}

/// A `--connect-to HOST:PORT:CONNECT_HOST:CONNECT_PORT` entry (curl's meaning: an empty
/// HOST or PORT matches any, an empty CONNECT_HOST or CONNECT_PORT keeps the original).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    /// Host to match (lower case); `None` matches any.
    pub host: Option<String>,
    /// Port to match; `None` matches any.
    pub port: Option<u16>,
    /// Where to connect instead; `None` keeps the host.
    pub to_host: Option<String>,
    /// Port to connect to; `None` keeps the port.
    pub to_port: Option<u16>,
}

/// A malformed `--connect-to` value.
#[derive(Debug, thiserror::Error)]
#[error("--connect-to {value:?} is invalid: {why}; write HOST:PORT:CONNECT_HOST:CONNECT_PORT")]
pub struct ConnectToError {
    /// The value.
    pub value: String,
    /// What is wrong.
    pub why: &'static str,
}

impl ConnectTo {
    /// Parses `HOST:PORT:CONNECT_HOST:CONNECT_PORT` (IPv6 in brackets).
    pub fn parse(value: &str) -> Result<ConnectTo, ConnectToError> {
        let err = |why| ConnectToError {
            value: value.to_string(),
            why,
        };
        let mut parts = Vec::new();
        let mut rest = value;
        for _ in 0..3 {
            let (field, tail) = if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(|| err("unclosed ["))?;
                let tail = r[end + 1..]
                    .strip_prefix(':')
                    .ok_or_else(|| err("expected : after ]"))?;
                (&r[..end], tail)
            } else {
                rest.split_once(':')
                    .ok_or_else(|| err("expected four fields"))?
            };
            parts.push(field);
            rest = tail;
        }
        let last = rest
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(rest);
        parts.push(last);
        let port = |p: &str| -> Result<Option<u16>, ConnectToError> {
            if p.is_empty() {
                Ok(None)
            } else {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .map(Some)
                    .ok_or_else(|| err("bad port"))
            }
        };
        let host = |h: &str| (!h.is_empty()).then(|| policy::normalize_host(h));
        Ok(ConnectTo {
            host: host(parts[0]),
            port: port(parts[1])?,
            to_host: host(parts[2]),
            to_port: port(parts[3])?,
        })
    }

    /// Where `host:port` goes under this entry, if it applies.
    pub fn apply(&self, host: &str, port: u16) -> Option<(String, u16)> {
        if self.host.as_deref().is_some_and(|h| h != host) || self.port.is_some_and(|p| p != port) {
            return None;
        }
        Some((
            self.to_host.clone().unwrap_or_else(|| host.to_string()),
            self.to_port.unwrap_or(port),
        ))
    }
}

/// How the proxy is started.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Directory holding `ca.pem` and `ca-key.pem` (created if absent).
    pub ca_dir: PathBuf,
    /// Extra PEM files trusted for upstream TLS (added to the webpki roots).
    pub upstream_ca: Vec<PathBuf>,
    /// Also trust the operating system's root store (default true).
    pub system_roots: bool,
    /// Operator pins.
    pub connect_to: Vec<ConnectTo>,
    /// Name resolution (the system resolver by default).
    pub resolver: Arc<dyn Resolve>,
    /// Where tokens named by `token_env` are read (the process environment by default).
    pub env: EnvReader,
    /// Where the request log goes.
    pub log: LogSink,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Limits.
    pub limits: Limits,
    /// Forward requests without outbound DLP (benchmarks' baseline only; the sidecar
    /// bundle never sets it).
    pub dangerously_skip_dlp: bool,
    /// Where each outbound DLP hit goes besides the request log (the sidecar bundle: the
    /// bottle's audit chain). `None`: the request log only.
    pub dlp_hits: Option<crate::log::DlpHitSink>,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("ca_dir", &self.ca_dir)
            .field("upstream_ca", &self.upstream_ca)
            .field("system_roots", &self.system_roots)
            .field("connect_to", &self.connect_to)
            .field("log", &self.log)
            .field("timeouts", &self.timeouts)
            .field("limits", &self.limits)
            .field("dangerously_skip_dlp", &self.dangerously_skip_dlp)
            .finish_non_exhaustive()
    }
}

impl ProxyConfig {
    /// Defaults: system resolver, process environment, log to stderr.
    pub fn new(ca_dir: impl Into<PathBuf>) -> ProxyConfig {
        ProxyConfig {
            ca_dir: ca_dir.into(),
            upstream_ca: Vec::new(),
            system_roots: true,
            connect_to: Vec::new(),
            resolver: Arc::new(SystemResolver),
            env: Arc::new(|name| std::env::var(name).ok()),
            log: LogSink::Stderr,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            dangerously_skip_dlp: false,
            dlp_hits: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn parses_connect_to() {
        assert_eq!(
            ConnectTo::parse("api.example.com:443:127.0.0.1:8443").unwrap(),
            ConnectTo {
                host: Some("api.example.com".into()),
                port: Some(443),
                to_host: Some("127.0.0.1".into()),
                to_port: Some(8443)
            }
        );
        let any = ConnectTo::parse("::[::1]:").unwrap();
        assert_eq!(any.apply("x.example", 443), Some(("::1".into(), 443)));
        assert!(ConnectTo::parse("a:1:b").is_err());
        assert!(ConnectTo::parse("a:x:b:1").is_err());
    }
}
