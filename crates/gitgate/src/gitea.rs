//! The `gitea` key provider: a fresh SSH key pair per bottle and repository, registered as a
//! write deploy key through the Gitea API and revoked at teardown. Every HTTP call and the
//! `ssh-keygen` run have a timeout; an existing key with the same title is an explicit
//! error, never silently reused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use crate::keys::{ensure_private_dir, keys_dir, write_private};
use crate::process::run_async;

/// A Gitea API call or key generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GiteaError {
    /// The token variable is not set.
    #[error(
        "environment variable {var} (forge_token_env) is not set; export the Gitea API token in it"
    )]
    MissingToken {
        /// Variable name.
        var: String,
    },
    /// The API URL is unusable.
    #[error("invalid Gitea API URL `{url}`: {message}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The upstream path does not name `owner/repo`.
    #[error(
        "cannot tell the Gitea owner and repository from `{url}`; use a URL like git@host:owner/repo.git"
    )]
    BadRepoPath {
        /// The upstream URL.
        url: String,
    },
    /// A deploy key with this title already exists.
    #[error(
        "a deploy key titled `{title}` already exists on {owner}/{repo}; another bottle with the same name may be running — stop it or delete the key in Gitea, then retry"
    )]
    Collision {
        /// Key title.
        title: String,
        /// Owner.
        owner: String,
        /// Repository.
        repo: String,
    },
    /// The call did not finish in time.
    #[error("the Gitea API at {url} did not answer within {timeout:?}")]
    Timeout {
        /// Request URL.
        url: String,
        /// Limit.
        timeout: Duration,
    },
    /// Network or protocol failure.
    #[error("cannot reach the Gitea API at {url}: {message}")]
    Http {
        /// Request URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The API answered with an error status.
    #[error("the Gitea API refused {action} ({status}): {body}")]
    Status {
        /// What was attempted.
        action: String,
        /// HTTP status.
        status: u16,
        /// Response text (shortened).
        body: String,
    },
    /// Key generation failed.
    #[error("cannot generate a deploy key: {0}")]
    Keygen(String),
    /// Local state could not be written or read.
    #[error("{0}")]
    State(String),
}

/// A Gitea API client with a per-call timeout.
#[derive(Clone)]
pub struct GiteaClient {
    api_url: String,
    token: String,
    timeout: Duration,
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// A deploy key created by the gate, recorded so it can be revoked at teardown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployKeyRecord {
    /// API base URL.
    pub api_url: String,
    /// Environment variable holding the token.
    pub forge_token_env: String,
    /// Repository owner.
    pub owner: String,
    /// Repository name on Gitea.
    pub repo: String,
    /// Key id returned by Gitea.
    pub id: u64,
    /// Key title.
    pub title: String,
}

impl std::fmt::Debug for GiteaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GiteaClient")
            .field("api_url", &self.api_url)
            .field("token", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Serialize)]
struct CreateKey<'a> {
    title: &'a str,
    key: &'a str,
    read_only: bool,
}

#[derive(Deserialize)]
struct CreatedKey {
    id: u64,
}

impl GiteaClient {
    /// A client for `api_url` (e.g. `https://gitea.example/api/v1`).
    pub fn new(api_url: &str, token: String, timeout: Duration) -> Self {
        GiteaClient {
            api_url: api_url.trim_end_matches('/').to_string(),
            token,
            timeout,
            extra_roots: Vec::new(),
        }
    }

    /// Also trusts `root` for HTTPS (a forge with a private CA); the public web roots stay.
    pub fn with_extra_root(mut self, root: rustls::pki_types::CertificateDer<'static>) -> Self {
        self.extra_roots.push(root);
        self
    }

    /// A client whose token is read from the environment variable `token_env`.
    pub fn from_env(api_url: &str, token_env: &str, timeout: Duration) -> Result<Self, GiteaError> {
        let token = std::env::var(token_env).map_err(|_| GiteaError::MissingToken {
            var: token_env.to_string(),
        })?;
        Ok(Self::new(api_url, token, timeout))
    }

    /// The API base URL.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Registers `public_key` as a write deploy key titled `title`; returns its id.
    pub async fn create_deploy_key(
        &self,
        owner: &str,
        repo: &str,
        title: &str,
        public_key: &str,
    ) -> Result<u64, GiteaError> {
        let url = format!("{}/repos/{owner}/{repo}/keys", self.api_url);
        let body = serde_json::to_vec(&CreateKey {
            title,
            key: public_key.trim(),
            read_only: false,
        })
        .map_err(|e| GiteaError::State(e.to_string()))?;
        let (status, text) = self.call(Method::POST, &url, Some(body)).await?;
        if status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::CONFLICT {
            return Err(GiteaError::Collision {
                title: title.to_string(),
                owner: owner.to_string(),
                repo: repo.to_string(),
            });
        }
        if !status.is_success() {
            return Err(status_error("creating a deploy key", status, &text));
        }
        let created: CreatedKey = serde_json::from_slice(&text).map_err(|e| GiteaError::Http {
            url,
            message: format!("unexpected answer to key creation: {e}"),
        })?;
        Ok(created.id)
    }

    /// Revokes a deploy key; a key that is already gone counts as revoked.
    pub async fn delete_deploy_key(
        &self,
        owner: &str,
        repo: &str,
        id: u64,
    ) -> Result<(), GiteaError> {
        let url = format!("{}/repos/{owner}/{repo}/keys/{id}", self.api_url);
        let (status, text) = self.call(Method::DELETE, &url, None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(status_error("revoking a deploy key", status, &text))
        }
    }

    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), GiteaError> {
        match tokio::time::timeout(self.timeout, self.call_inner(method, url, body)).await {
            Ok(r) => r,
            Err(_) => Err(GiteaError::Timeout {
                url: url.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    async fn call_inner(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), GiteaError> {
        let bad = |message: &str| GiteaError::BadUrl {
            url: url.to_string(),
            message: message.to_string(),
        };
        let http_err = |message: String| GiteaError::Http {
            url: url.to_string(),
            message,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("use http:// or https://")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| host.clone());
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| http_err(e.to_string()))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::AUTHORIZATION, format!("token {}", self.token))
            .header(http::header::USER_AGENT, "bot-bottle-gitgate");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| http_err(e.to_string()))?;
        if https {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for root in &self.extra_roots {
                roots
                    .add(root.clone())
                    .map_err(|e| http_err(format!("invalid extra root certificate: {e}")))?;
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| http_err(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|_| bad("invalid host name"))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| http_err(format!("TLS: {e}")))?;
            send(TokioIo::new(tls), req).await.map_err(http_err)
        } else {
            send(TokioIo::new(tcp), req).await.map_err(http_err)
        }
    }
}

async fn send<T>(io: T, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let conn_task = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), 1024 * 1024)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    conn_task.abort();
    Ok((status, body))
}

fn status_error(action: &str, status: StatusCode, body: &[u8]) -> GiteaError {
    let text: String = String::from_utf8_lossy(body).chars().take(300).collect();
    GiteaError::Status {
        action: action.to_string(),
        status: status.as_u16(),
        body: text.trim().to_string(),
    }
}

/// `owner` and `repo` from an upstream path like `/owner/repo.git` or `owner/repo`.
pub fn owner_repo(path: &str) -> Option<(String, String)> {
    let p = path.trim_matches('/');
    let p = p.strip_suffix(".git").unwrap_or(p);
    let mut parts = p.rsplit('/');
    let repo = parts.next()?;
    let owner = parts.next()?;
    if repo.is_empty() || owner.is_empty() {
        return None;
    }
    Some((owner.to_string(), repo.to_string()))
}

fn record_path(state_dir: &Path, repo_name: &str) -> PathBuf {
    keys_dir(state_dir).join(format!("{repo_name}.gitea.json"))
}

/// What to provision: one repository's deploy key.
#[derive(Debug, Clone)]
pub struct KeyRequest<'a> {
    /// Repository name in the gate.
    pub repo_name: &'a str,
    /// Upstream URL (for messages).
    pub upstream_url: &'a str,
    /// Upstream path, `owner/repo(.git)`.
    pub upstream_path: &'a str,
    /// Environment variable the token came from (recorded for teardown).
    pub forge_token_env: &'a str,
    /// Deploy key title, unique per bottle and repository.
    pub title: &'a str,
}

/// Generates a key pair in the gate's state, registers its public half as a write deploy
/// key, records it for [`revoke_all`] and returns the private key path.
pub async fn provision(
    state_dir: &Path,
    client: &GiteaClient,
    req: &KeyRequest<'_>,
) -> Result<PathBuf, GiteaError> {
    let (repo_name, title, timeout) = (req.repo_name, req.title, client.timeout);
    let (owner, repo) = owner_repo(req.upstream_path).ok_or_else(|| GiteaError::BadRepoPath {
        url: req.upstream_url.to_string(),
    })?;
    let dir = keys_dir(state_dir);
    ensure_private_dir(&dir).map_err(|e| GiteaError::State(e.to_string()))?;
    let key_path = dir.join(repo_name);
    let _ = std::fs::remove_file(&key_path);
    let _ = std::fs::remove_file(key_path.with_extension("pub"));
    let mut cmd = tokio::process::Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", title, "-f"])
        .arg(&key_path);
    let out = run_async(cmd, timeout)
        .await
        .map_err(|e| GiteaError::Keygen(e.to_string()))?;
    if !out.status.success() {
        return Err(GiteaError::Keygen(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let pub_path = PathBuf::from(format!("{}.pub", key_path.display()));
    let public = std::fs::read_to_string(&pub_path)
        .map_err(|e| GiteaError::Keygen(format!("cannot read {}: {e}", pub_path.display())))?;
    let id = client
        .create_deploy_key(&owner, &repo, title, &public)
        .await?;
    let record = DeployKeyRecord {
        api_url: client.api_url.clone(),
        forge_token_env: req.forge_token_env.to_string(),
        owner,
        repo,
        id,
        title: title.to_string(),
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| GiteaError::State(e.to_string()))?;
    write_private(&record_path(state_dir, repo_name), &json)
        .map_err(|e| GiteaError::State(e.to_string()))?;
    Ok(key_path)
}

/// Revokes every deploy key this gate created (teardown), with tokens looked up by
/// environment variable name through `token_for`. Keys revoked are forgotten; the first
/// failure is returned after trying them all.
pub async fn revoke_all(
    state_dir: &Path,
    timeout: Duration,
    token_for: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<usize, GiteaError> {
    let dir = keys_dir(state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut revoked = 0;
    let mut first_err = None;
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.to_string_lossy().ends_with(".gitea.json") {
            continue;
        }
        let result = async {
            let text = std::fs::read(&path)
                .map_err(|e| GiteaError::State(format!("cannot read {}: {e}", path.display())))?;
            let rec: DeployKeyRecord = serde_json::from_slice(&text)
                .map_err(|e| GiteaError::State(format!("invalid {}: {e}", path.display())))?;
            let token =
                token_for(&rec.forge_token_env).ok_or_else(|| GiteaError::MissingToken {
                    var: rec.forge_token_env.clone(),
                })?;
            let client = GiteaClient::new(&rec.api_url, token, timeout);
            client
                .delete_deploy_key(&rec.owner, &rec.repo, rec.id)
                .await?;
            let _ = std::fs::remove_file(&path);
            Ok::<(), GiteaError>(())
        }
        .await;
        match result {
            Ok(()) => revoked += 1,
            Err(e) => {
                tracing::warn!(error = %e, "cannot revoke a deploy key");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(revoked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn owner_and_repo_from_paths() {
        assert_eq!(
            owner_repo("/team/app.git"),
            Some(("team".into(), "app".into()))
        );
        assert_eq!(owner_repo("team/app"), Some(("team".into(), "app".into())));
        assert_eq!(owner_repo("app.git"), None);
    }
}
