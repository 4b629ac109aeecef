//! The gitea key provider against a fake Gitea API on loopback that records every request.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gitgate::gitea::{GiteaClient, GiteaError, KeyRequest, provision, revoke_all};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pretty_assertions::assert_eq;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    authorization: String,
    body: serde_json::Value,
}

#[derive(Clone, Copy)]
enum Mode {
    Normal,
    Collision,
    Hang,
}

struct FakeGitea {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The server certificate, when serving HTTPS.
    cert: Option<rustls::pki_types::CertificateDer<'static>>,
}

async fn fake_gitea(mode: Mode) -> FakeGitea {
    fake_gitea_on(mode, false).await
}

async fn fake_gitea_on(mode: Mode, tls: bool) -> FakeGitea {
    let (acceptor, cert) = if tls {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = ck.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
        (
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            Some(cert),
        )
    } else {
        (None, None)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let authorization = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                        record.lock().unwrap().push(Seen {
                            method: method.clone(),
                            path,
                            authorization,
                            body,
                        });
                        let (status, text) = match (mode, method.as_str()) {
                            (Mode::Hang, _) => {
                                tokio::time::sleep(Duration::from_secs(60)).await;
                                (200, String::new())
                            }
                            (Mode::Collision, "POST") => {
                                (422, r#"{"message":"Key title has been used"}"#.to_string())
                            }
                            (_, "POST") => (201, r#"{"id":42,"title":"x"}"#.to_string()),
                            (_, "DELETE") => (204, String::new()),
                            _ => (404, String::new()),
                        };
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(text)));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                match acceptor {
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    }
                    None => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                }
            });
        }
    });
    let scheme = if tls { "https" } else { "http" };
    FakeGitea {
        base: format!("{scheme}://{addr}/api/v1"),
        seen,
        cert,
    }
}

fn request<'a>() -> KeyRequest<'a> {
    KeyRequest {
        repo_name: "app",
        upstream_url: "git@gitea.test:team/app.git",
        upstream_path: "team/app.git",
        forge_token_env: "TEST_GITEA_TOKEN",
        title: "bot-bottle-b1-app",
    }
}

#[tokio::test]
async fn creates_a_write_deploy_key_and_revokes_it() {
    let fake = fake_gitea(Mode::Normal).await;
    let state = tempfile::tempdir().unwrap();
    let client = GiteaClient::new(&fake.base, "s3cret".into(), Duration::from_secs(5));
    let key = provision(state.path(), &client, &request()).await.unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();

    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Seen {
            method: "POST".into(),
            path: "/api/v1/repos/team/app/keys".into(),
            authorization: "token s3cret".into(),
            body: serde_json::json!({
                "title": "bot-bottle-b1-app",
                "key": public.trim(),
                "read_only": false,
            }),
        }]
    );
    assert!(format!("{client:?}").contains("<redacted>"));
    assert!(!format!("{client:?}").contains("s3cret"));

    let token_for = |var: &str| (var == "TEST_GITEA_TOKEN").then(|| "s3cret".to_string());
    let revoked = revoke_all(state.path(), Duration::from_secs(5), &token_for)
        .await
        .unwrap();
    assert_eq!(revoked, 1);
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen[1].method, "DELETE");
    assert_eq!(seen[1].path, "/api/v1/repos/team/app/keys/42");
    assert_eq!(seen[1].authorization, "token s3cret");
    // Revoked keys are forgotten: a second teardown has nothing to do.
    assert_eq!(
        revoke_all(state.path(), Duration::from_secs(5), &token_for)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_title_collision_is_an_explicit_error() {
    let fake = fake_gitea(Mode::Collision).await;
    let state = tempfile::tempdir().unwrap();
    let client = GiteaClient::new(&fake.base, "s3cret".into(), Duration::from_secs(5));
    let err = provision(state.path(), &client, &request())
        .await
        .unwrap_err();
    assert!(matches!(err, GiteaError::Collision { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "a deploy key titled `bot-bottle-b1-app` already exists on team/app; another bottle with the same name may be running — stop it or delete the key in Gitea, then retry"
    );
    assert!(!Path::new(&state.path().join("keys/app.gitea.json")).exists());
}

#[tokio::test]
async fn an_unresponsive_api_times_out() {
    let fake = fake_gitea(Mode::Hang).await;
    let state = tempfile::tempdir().unwrap();
    let client = GiteaClient::new(&fake.base, "s3cret".into(), Duration::from_millis(300));
    let start = Instant::now();
    let err = provision(state.path(), &client, &request())
        .await
        .unwrap_err();
    assert!(matches!(err, GiteaError::Timeout { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(
        err.to_string(),
        format!(
            "the Gitea API at {}/repos/team/app/keys did not answer within 300ms",
            fake.base
        )
    );
}

#[tokio::test]
async fn gate_setup_names_a_missing_token_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = "repos:\n  app:\n    url: git@127.0.0.1:team/app.git\n    host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n    key:\n      provider: gitea\n      forge_token_env: BOT_BOTTLE_TEST_TOKEN_THAT_IS_NEVER_SET\n      api_url: http://127.0.0.1:9/api/v1\n";
    let config = gitgate::GateConfig::parse(yaml, Path::new("t.yaml")).unwrap();
    let err = gitgate::Gate::new(config, &tmp.path().join("state"), super::support::options())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "repo `app`: environment variable BOT_BOTTLE_TEST_TOKEN_THAT_IS_NEVER_SET (forge_token_env) is not set; export the Gitea API token in it"
    );
}

#[tokio::test]
async fn https_api_with_a_trusted_root_works_and_an_untrusted_one_fails() {
    let fake = fake_gitea_on(Mode::Normal, true).await;
    let state = tempfile::tempdir().unwrap();
    let untrusted = GiteaClient::new(&fake.base, "s3cret".into(), Duration::from_secs(5));
    let err = provision(state.path(), &untrusted, &request())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    assert_eq!(fake.seen.lock().unwrap().len(), 0);

    let client = GiteaClient::new(&fake.base, "s3cret".into(), Duration::from_secs(5))
        .with_extra_root(fake.cert.clone().unwrap());
    provision(state.path(), &client, &request()).await.unwrap();
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/api/v1/repos/team/app/keys");
}
