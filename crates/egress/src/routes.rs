//! The live routes: a generation of validated rules, their credentials and their upstream
//! connection pool, swapped atomically by [`RoutesHandle::replace`]. A request takes an
//! `Arc` of the current generation when it arrives and keeps it to the end, so requests
//! in flight finish under the rules they started with.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use policy::{EgressConfig, LogMode, Policy, PolicyError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::body::ReqBody;
use crate::config::{ConnectTo, EnvReader, Timeouts};
use crate::net::Resolve;
use crate::upstream::{Connector, Pins};

/// A token read from the environment. Its `Debug` never shows the value and it has no
/// `Display`, so it cannot end up in a log line or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a token.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The token itself, for building the outgoing header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why new routes were not taken (the old ones stay in force).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration is invalid.
    #[error("invalid routes: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<PolicyError>),
    /// A route names a token variable that is not set in the proxy's environment.
    #[error(
        "the route for {host}: token_env {var} is not set in the egress proxy's environment; set it or remove the credential"
    )]
    MissingToken {
        /// Route index.
        index: usize,
        /// Route host.
        host: String,
        /// Variable name.
        var: String,
    },
    /// The token cannot be put in a header.
    // Named by host, not index: the live routes start with the provider's implicit ones.
    #[error("the route for {host}: the token in {var} has characters not allowed in a header")]
    BadToken {
        /// Route index.
        index: usize,
        /// Route host.
        host: String,
        /// Variable name.
        var: String,
    },
    /// The outbound DLP scanner could not be built (egress refuses to run without it).
    #[error("cannot build the outbound dlp scanner: {0}")]
    Dlp(String),
    /// An `upstream_ca` file could not be used.
    #[error("upstream ca {}: {why}", path.display())]
    UpstreamCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// What does not change with the routes.
pub(crate) struct Base {
    pub env: EnvReader,
    /// The configured upstream CAs (`--upstream-ca`), read at start.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Whether the system's roots join the trusted ones (read on the first upstream
    /// handshake, [`UpstreamVerifier`]).
    pub system_roots: bool,
    pub pins: Vec<ConnectTo>,
    pub resolver: Arc<dyn Resolve>,
    pub listen: Arc<OnceLock<std::net::SocketAddr>>,
    pub timeouts: Timeouts,
    /// `dangerously_skip_dlp`: no request is judged, so the DLP engine is not built.
    pub skip_dlp: bool,
}

/// One generation of routes.
pub(crate) struct Loaded {
    pub policy: Policy,
    /// Per route index: the header to set and its value (marked sensitive).
    pub credentials: Vec<Option<(HeaderName, HeaderValue)>>,
    /// Pooled client; HTTP/2 where the upstream offers it, HTTP/1.1 otherwise.
    pub client: Client<Connector, ReqBody>,
    /// HTTP/1.1-only client for upgrade requests (WebSocket), which need HTTP/1.1.
    pub client_h1: Client<Connector, ReqBody>,
    pub log: LogMode,
    pub routes_json: Bytes,
    /// What outbound DLP looks for in this generation (scanner rules and its credentials);
    /// `None` only under `dangerously_skip_dlp`, where nothing is judged.
    pub dlp: Option<Arc<crate::dlp::Detector>>,
    /// Per route index: its DLP settings.
    pub dlp_routes: Vec<crate::dlp::RouteDlp>,
}

/// A cloneable handle on the live routes of a running proxy.
#[derive(Clone)]
pub struct RoutesHandle {
    base: Arc<Base>,
    current: Arc<RwLock<Arc<Loaded>>>,
    /// Requests spent by routes with `uses`, across generations.
    pub(crate) uses: Arc<crate::grant::Uses>,
}

impl std::fmt::Debug for RoutesHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutesHandle").finish_non_exhaustive()
    }
}

impl RoutesHandle {
    pub(crate) fn new(base: Base, config: EgressConfig) -> Result<RoutesHandle, ReloadError> {
        let loaded = load(&base, config)?;
        Ok(RoutesHandle {
            base: Arc::new(base),
            current: Arc::new(RwLock::new(Arc::new(loaded))),
            uses: Arc::default(),
        })
    }

    /// Validates `config`, reads its tokens and swaps it in atomically. On any error the
    /// routes in force stay unchanged. Requests already in flight keep their rules.
    pub fn replace(&self, config: EgressConfig) -> Result<(), ReloadError> {
        let loaded = Arc::new(load(&self.base, config)?);
        self.uses.retain(&loaded.policy.routes().config);
        match self.current.write() {
            Ok(mut cur) => *cur = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
        Ok(())
    }

    /// Routes with `uses` that have spent requests: (host as written, `grant`, requests
    /// spent). Supervise's sweeper removes the used-up ones from the live routes.
    pub fn used(&self) -> Vec<(String, Option<String>, u32)> {
        self.uses.snapshot()
    }

    /// The configuration in force (token variable names only, never tokens).
    pub fn config(&self) -> EgressConfig {
        self.current().policy.routes().config.clone()
    }

    pub(crate) fn current(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(cur) => cur.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

fn load(base: &Base, config: EgressConfig) -> Result<Loaded, ReloadError> {
    let validated = policy::validate(&config).map_err(ReloadError::Invalid)?;
    let max_index = validated
        .routes
        .iter()
        .map(|r| r.index + 1)
        .max()
        .unwrap_or(0);
    let mut credentials = vec![None; max_index];
    let mut dlp_routes = vec![crate::dlp::RouteDlp::default(); max_index];
    let mut tokens: Vec<Secret> = Vec::new();
    let mut route_pins = Vec::new();
    for route in &validated.routes {
        dlp_routes[route.index] = crate::dlp::RouteDlp::of(route);
        if let Some(cred) = &route.credential {
            let token = (base.env)(&cred.token_env)
                .filter(|t| !t.is_empty())
                .map(Secret::new)
                .ok_or_else(|| ReloadError::MissingToken {
                    index: route.index,
                    host: route.host_text.clone(),
                    var: cred.token_env.clone(),
                })?;
            let text = match &cred.scheme {
                Some(s) => format!("{s} {}", token.expose()),
                None => token.expose().to_string(),
            };
            let mut value = HeaderValue::from_str(&text).map_err(|_| ReloadError::BadToken {
                index: route.index,
                host: route.host_text.clone(),
                var: cred.token_env.clone(),
            })?;
            value.set_sensitive(true);
            credentials[route.index] = Some((cred.header.clone(), value));
            tokens.push(token);
        }
        if let (Some(pin), policy::RouteHost::Exact(h)) = (&route.connect_to, &route.host) {
            route_pins.push((h.clone(), route.port, pin.host.clone(), pin.port));
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in &base.extra_roots {
        let _ = roots.add(cert.clone());
    }
    for path in config.upstream_ca.iter().flatten() {
        let path = PathBuf::from(path);
        for cert in read_pem_certs(&path)? {
            roots.add(cert).map_err(|e| ReloadError::UpstreamCa {
                path: path.clone(),
                why: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(UpstreamVerifier {
        roots,
        system_roots: base.system_roots,
        provider: provider.clone(),
        built: OnceLock::new(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ReloadError::UpstreamCa {
            path: PathBuf::new(),
            why: e.to_string(),
        })?
        // The same verifier `with_root_certificates` builds, only built on first use.
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let mut tls_h1 = tls.clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tls_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let pins = Arc::new(Pins {
        cli: base.pins.clone(),
        routes: route_pins,
    });
    let connector = |tls: rustls::ClientConfig| Connector {
        resolver: base.resolver.clone(),
        tls: Arc::new(tls),
        pins: pins.clone(),
        listen: base.listen.clone(),
        timeouts: base.timeouts,
    };
    let client = |tls: rustls::ClientConfig| {
        Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector(tls))
    };
    let client_h1 = client(tls_h1);
    let client = client(tls);
    let routes_json = Bytes::from(
        serde_json::to_vec_pretty(&serde_json::json!({
            "log": config.log.unwrap_or_default(),
            "routes": config.routes.clone().unwrap_or_default(),
        }))
        .unwrap_or_default(),
    );
    // Without DLP (a benchmark's baseline) the rules are not compiled: the baseline's memory
    // and start-up are then those of the proxy alone.
    let dlp = if base.skip_dlp {
        None
    } else {
        let scanner = crate::dlp::scanner().map_err(ReloadError::Dlp)?;
        let token_texts: Vec<&str> = tokens.iter().map(Secret::expose).collect();
        let dlp = crate::dlp::Detector::new(scanner, &token_texts).map_err(ReloadError::Dlp)?;
        Some(Arc::new(dlp))
    };
    Ok(Loaded {
        dlp,
        dlp_routes,
        log: config.log.unwrap_or_default(),
        policy: Policy::new(validated),
        credentials,
        client,
        client_h1,
        routes_json,
    })
}

/// The system's trusted roots (`rustls_native_certs`), read once per process on first use; a
/// store that cannot be read gives none (the built-in webpki roots remain).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// The verifier of upstream certificates: rustls's `WebPkiServerVerifier` over the webpki
/// roots, the configured upstream CAs and (where enabled) the system's roots, the same one
/// `ClientConfig::with_root_certificates` makes, built on the first upstream handshake
/// instead of when the routes load. Reading and parsing the system's roots (~150 certificates,
/// about 1.4 ms) was part of every start of the sidecar bundle, before its `ready`, though a
/// bottle may never contact an upstream; now it is paid once, by the first connection that
/// needs it. Every method is the inner verifier's; should it not build (no roots at all), no
/// certificate and no signature is accepted.
#[derive(Debug)]
struct UpstreamVerifier {
    /// The webpki roots and the configured upstream CAs.
    roots: rustls::RootCertStore,
    system_roots: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
    built: OnceLock<Result<Arc<rustls::client::WebPkiServerVerifier>, String>>,
}

impl UpstreamVerifier {
    fn inner(&self) -> Result<&Arc<rustls::client::WebPkiServerVerifier>, rustls::Error> {
        self.built
            .get_or_init(|| {
                let mut roots = self.roots.clone();
                if self.system_roots {
                    roots.add_parsable_certificates(system_roots().iter().cloned());
                }
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| rustls::Error::General(format!("no upstream roots: {e}")))
    }
}

impl rustls::client::danger::ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// Reads every certificate of a PEM file.
pub(crate) fn read_pem_certs(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, ReloadError> {
    let fail = |why: String| ReloadError::UpstreamCa {
        path: path.to_path_buf(),
        why,
    };
    let data = state::read::read_limited(path, state::read::CONFIG_LIMIT)
        .map_err(|e| fail(e.to_string()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no certificate found in the file".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_verifier_is_built_on_first_use_and_checks_as_webpki_does() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let trusted = test_support::TestCa::new("upstream verifier test CA");
        let other = test_support::TestCa::new("an untrusted CA");
        let verifier = UpstreamVerifier {
            roots: trusted.root_store(),
            system_roots: false,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            built: OnceLock::new(),
        };
        assert!(verifier.built.get().is_none(), "built before any handshake");
        let name = ServerName::try_from("api.test").unwrap();
        let (chain, _) = trusted.issue(&["api.test"]);
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .unwrap();
        assert!(verifier.built.get().is_some());
        assert!(!verifier.supported_verify_schemes().is_empty());
        // Another CA's certificate, and the trusted CA's for another name: refused.
        let (foreign, _) = other.issue(&["api.test"]);
        let err = verifier
            .verify_server_cert(&foreign[0], &[], &name, &[], UnixTime::now())
            .unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );
        let (wrong_name, _) = trusted.issue(&["elsewhere.test"]);
        assert!(
            verifier
                .verify_server_cert(&wrong_name[0], &[], &name, &[], UnixTime::now())
                .is_err()
        );
        // No roots at all: nothing is accepted, no scheme offered.
        let empty = UpstreamVerifier {
            roots: rustls::RootCertStore::empty(),
            system_roots: false,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            built: OnceLock::new(),
        };
        assert!(
            empty
                .verify_server_cert(&chain[0], &[], &name, &[], UnixTime::now())
                .is_err()
        );
        assert!(empty.supported_verify_schemes().is_empty());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("sk-live-123".into());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }
}
