//! Loopback test fixtures shared by the crates' integration tests.
//!
//! * [`TestCa`]: a throwaway certificate authority that issues server certificates for
//!   test upstreams (and hands out its PEM so a proxy can be told to trust it).
//! * [`Upstream`]: a real HTTP/1.1 server on `127.0.0.1` (TLS or plain) that records every
//!   request it receives, so tests assert on what actually left the bottle, and serves a
//!   few behaviours by path (server-sent events, large bodies, upgrades).
//! * [`client`]: helpers to talk through a forward proxy (CONNECT + TLS, or absolute form).
//! * [`kube_api`]: a fake Kubernetes API server answering `pods/portforward` over websockets
//!   as the API server does, to a real listener on loopback.
//! * [`apple_container`], [`smolvm`]: stand-ins for Apple's `container` CLI and for `smolvm`
//!   (their containers and machines run in docker) for `start` on those backends.
//!
//! Everything listens and connects on loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod apple_container;
pub mod client;
pub mod docker;
pub mod git;
pub mod kube_api;
pub mod model_api;
pub mod smolvm;
mod upstream;

pub use model_api::ModelApi;
pub use upstream::{Recorded, Upstream};

use std::sync::{Arc, Once};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Polls `f` every 50 ms until it gives a value, for at most 30 s; panics naming `what`.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{what} did not happen within 30 s");
}

/// Installs the `ring` crypto provider as the process default (idempotent).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A certificate authority for test upstreams.
pub struct TestCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA with the given common name.
    pub fn new(name: &str) -> TestCa {
        install_crypto_provider();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA certificate PEM to `path`.
    pub fn write_pem(&self, path: &std::path::Path) {
        std::fs::write(path, &self.cert_pem).unwrap();
    }

    /// A root store holding only this CA.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der.clone()).unwrap();
        roots
    }

    /// A certificate chain and key for a server answering to `names` (DNS names or IPs).
    pub fn issue(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("test"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key_der)
    }

    /// A rustls server config for `names`, offering HTTP/1.1.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let (chain, key) = self.issue(names);
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A rustls client config trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        client_config_for_pem(&self.cert_pem)
    }
}

/// A rustls client config trusting only the certificates in `pem`, offering HTTP/1.1.
pub fn client_config_for_pem(pem: &str) -> Arc<rustls::ClientConfig> {
    client_config_with_alpn(pem, &[b"http/1.1"])
}

/// A rustls client config trusting only the certificates in `pem`, offering `alpn`.
pub fn client_config_with_alpn(pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    install_crypto_provider();
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
