//! The bottle CA and the leaf certificates the proxy presents inside CONNECT tunnels.
//!
//! `ca.pem` / `ca-key.pem` live in `--ca-dir`, created on first use (directory 0700, key
//! 0600). Leaves are issued per host name with a random serial, `not_before` backdated a
//! day (clock skew inside a bottle), SAN and EKU serverAuth, and cached as ready
//! `Arc<ServerConfig>`s so a repeated host costs one hash lookup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::ServerConfig;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const CA_NAME: &str = "bot-bottle egress CA";
const CACHE_LIMIT: usize = 4096;

/// Problems with the CA directory or issuing a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file or directory could not be read or written.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Only one of `ca.pem` / `ca-key.pem` exists, or they do not hold a usable CA.
    #[error("{} does not hold a usable bot-bottle CA ({why}); remove ca.pem and ca-key.pem to create a new one", dir.display())]
    Unusable {
        /// The CA directory.
        dir: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Certificate generation failed.
    #[error("cannot issue a certificate for {name}: {why}")]
    Issue {
        /// The host name.
        name: String,
        /// Why.
        why: String,
    },
}

/// The bottle CA, able to issue leaf certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    leaf_key: KeyPair,
    cache: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "bot-bottle");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CaError + 'a {
    move |source| CaError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl CertificateAuthority {
    /// Loads `ca.pem` + `ca-key.pem` from `dir`, creating both (and `dir`) if absent.
    pub fn load_or_create(dir: &Path) -> Result<CertificateAuthority, CaError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        let (cert_pem, key) = match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert_pem =
                    state::read::read_limited_to_string(&cert_path, state::read::CONFIG_LIMIT)
                        .map_err(io_err("cannot read", &cert_path))?;
                let key_pem =
                    state::read::read_limited_to_string(&key_path, state::read::CONFIG_LIMIT)
                        .map_err(io_err("cannot read", &key_path))?;
                let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Unusable {
                    dir: dir.to_path_buf(),
                    why: format!("ca-key.pem: {e}"),
                })?;
                (cert_pem, key)
            }
            (false, false) => create(dir, &cert_path, &key_path)?,
            _ => {
                return Err(CaError::Unusable {
                    dir: dir.to_path_buf(),
                    why: "only one of ca.pem and ca-key.pem exists".into(),
                });
            }
        };
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| CaError::Unusable {
                dir: dir.to_path_buf(),
                why: format!("ca.pem: {e}"),
            })?;
        let leaf_key = KeyPair::generate().map_err(|e| CaError::Issue {
            name: "leaf key".into(),
            why: e.to_string(),
        })?;
        let ca = CertificateAuthority {
            issuer: Issuer::new(ca_params(), key),
            cert_der,
            cert_pem,
            leaf_key,
            cache: Mutex::new(HashMap::new()),
        };
        ca.self_check().map_err(|why| CaError::Unusable {
            dir: dir.to_path_buf(),
            why,
        })?;
        Ok(ca)
    }

    /// The CA certificate (PEM), to install in the bottle's trust store.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a throwaway leaf and verifies it against `ca.pem`: proves the key and the
    /// certificate belong together and that issued leaves will chain.
    fn self_check(&self) -> Result<(), String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .map_err(|e| e.to_string())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| e.to_string())?;
        let (chain, _) = self
            .issue("self-check.invalid")
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from("self-check.invalid")
            .map_err(|e| e.to_string())?;
        verifier
            .verify_server_cert(
                &chain[0],
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .map_err(|e| format!("issued certificates do not verify against ca.pem: {e}"))?;
        Ok(())
    }

    fn issue(
        &self,
        name: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let fail = |e: rcgen::Error| CaError::Issue {
            name: name.to_string(),
            why: e.to_string(),
        };
        let mut params = CertificateParams::new(vec![name.to_string()]).map_err(fail)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let serial: [u8; 16] = rand::random();
        let mut serial = serial.to_vec();
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(fail)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key))
    }

    /// A ready server config presenting a leaf for `name` (cached).
    pub fn server_config(&self, name: &str) -> Result<Arc<ServerConfig>, CaError> {
        if let Ok(cache) = self.cache.lock()
            && let Some(config) = cache.get(name)
        {
            return Ok(config.clone());
        }
        let (chain, key) = self.issue(name)?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
                .map_err(|e| CaError::Issue {
                    name: name.to_string(),
                    why: e.to_string(),
                })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(name.to_string(), config.clone());
        }
        Ok(config)
    }
}

fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(String, KeyPair), CaError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("cannot create", dir))?;
    }
    let key = KeyPair::generate().map_err(|e| CaError::Issue {
        name: CA_NAME.into(),
        why: e.to_string(),
    })?;
    let mut params = ca_params();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let serial: [u8; 16] = rand::random();
    let mut serial = serial.to_vec();
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key).map_err(|e| CaError::Issue {
        name: CA_NAME.into(),
        why: e.to_string(),
    })?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_path)
        .map_err(io_err("cannot create", key_path))?;
    f.write_all(key.serialize_pem().as_bytes())
        .map_err(io_err("cannot write", key_path))?;
    let cert_pem = cert.pem();
    std::fs::write(cert_path, &cert_pem).map_err(io_err("cannot write", cert_path))?;
    Ok((cert_pem, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_then_reloads_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let first = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca_dir), 0o700);
        assert_eq!(mode(&ca_dir.join("ca-key.pem")), 0o600);
        let again = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        assert_eq!(first.cert_pem(), again.cert_pem());
        let a = again.server_config("api.example.com").unwrap();
        let b = again.server_config("api.example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn half_a_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
        let err = CertificateAuthority::load_or_create(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("only one of ca.pem and ca-key.pem exists")
        );
    }
}
