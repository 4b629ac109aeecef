//! A fake Kubernetes API server on loopback, for the one call an in-memory cluster cannot
//! stand in for: `pods/portforward`, whose bytes must really flow. It also answers `GET` of
//! the pods it forwards to and of the Secrets a test gives it, so that the `bot-bottle`
//! executable, reaching it through a kubeconfig, can relay a cluster bottle.
//!
//! It also keeps PersistentVolumeClaims ([`FakeApiServer::serve_claim`]; each has a uid, as
//! every object an API server returns has): `GET` one, list them by label selector, `DELETE`
//! one (gone from then on; refused `409` when the request's uid precondition is not the
//! claim's, as the API server refuses it), so `bot-bottle cleanup` of a
//! cluster bottle's home claim runs through the real client; the pod and Secret lists are
//! the served ones (a `cleanup` sees what the test gave), the ConfigMap list is empty, and
//! the agent-sandbox API is not
//! served (its discovery is answered `404`, as on a cluster without it).
//!
//! It answers as the API server answers kube-rs (`Api::<Pod>::portforward`): a websocket
//! upgrade choosing the `v4.channel.k8s.io` subprotocol; per forwarded port two channels,
//! data `2n` and error `2n+1`, each opened by a frame carrying the port as a little-endian
//! `u16`; then binary frames whose first byte names the channel. A pod's port is a loopback
//! address the test names ([`FakeApiServer::serve_port`]), so the bytes reach a real
//! listener (the sidecar bundle's) as they would through the kubelet; a port with nothing
//! listening gets the kubelet's error on the error channel. An unknown pod is answered
//! `404` with a `Status` body, as the API server does.
//!
//! Everything listens and connects on loopback only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The subprotocol the API server speaks for port-forward over websockets.
pub const PORT_FORWARD_PROTOCOL: &str = "v4.channel.k8s.io";

type Ports = Arc<Mutex<BTreeMap<(String, String), BTreeMap<u16, SocketAddr>>>>;
type Calls = Arc<Mutex<Vec<String>>>;
type Objects = Arc<Mutex<BTreeMap<(String, String), serde_json::Value>>>;

/// The uid the fake API server gives served pod `pod` of `namespace` (a bottle's record
/// names it: the relay reaches that pod only).
pub fn pod_uid(namespace: &str, pod: &str) -> String {
    format!("uid-{namespace}-{pod}")
}

/// The uid the fake API server gives served claim `name` of `namespace` that was served
/// without one.
pub fn claim_uid(namespace: &str, name: &str) -> String {
    format!("uid-{namespace}-pvc-{name}")
}

/// A fake API server answering `pods/portforward` (see the module doc).
pub struct FakeApiServer {
    addr: SocketAddr,
    ports: Ports,
    calls: Calls,
    /// The `Sec-WebSocket-Protocol` header of each port-forward upgrade, as the client sent it.
    offered: Calls,
    secrets: Objects,
    claims: Objects,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Starts the server on `127.0.0.1` (on the current tokio runtime).
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ports: Ports = Arc::default();
        let calls: Calls = Arc::default();
        let offered: Calls = Arc::default();
        let secrets: Objects = Arc::default();
        let claims: Objects = Arc::default();
        let (p, c, o, s, v) = (
            ports.clone(),
            calls.clone(),
            offered.clone(),
            secrets.clone(),
            claims.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (p, c, o, s, v) = (p.clone(), c.clone(), o.clone(), s.clone(), v.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        handle(req, p.clone(), c.clone(), o.clone(), s.clone(), v.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeApiServer {
            addr,
            ports,
            calls,
            offered,
            secrets,
            claims,
            task,
        }
    }

    /// The server's URL, for a kube-rs `Config`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Pod `pod` of `namespace` exists, and its loopback port `port` is `target` (a
    /// listener of the test's on loopback).
    pub fn serve_port(&self, namespace: &str, pod: &str, port: u16, target: SocketAddr) {
        self.ports
            .lock()
            .unwrap()
            .entry((namespace.to_owned(), pod.to_owned()))
            .or_default()
            .insert(port, target);
    }

    /// Secret `name` of `namespace` is `secret` (a whole object, as `GET` returns it).
    pub fn serve_secret(&self, namespace: &str, name: &str, secret: serde_json::Value) {
        self.secrets
            .lock()
            .unwrap()
            .insert((namespace.to_owned(), name.to_owned()), secret);
    }

    /// PersistentVolumeClaim `name` of `namespace` is `claim` (a whole object; given the uid
    /// [`claim_uid`] if it has none, as an API server never answers an object without one).
    pub fn serve_claim(&self, namespace: &str, name: &str, mut claim: serde_json::Value) {
        if claim["metadata"]["uid"].as_str().is_none() {
            claim["metadata"]["uid"] = serde_json::Value::String(claim_uid(namespace, name));
        }
        self.claims
            .lock()
            .unwrap()
            .insert((namespace.to_owned(), name.to_owned()), claim);
    }

    /// Whether claim `name` of `namespace` is still there (not deleted).
    pub fn has_claim(&self, namespace: &str, name: &str) -> bool {
        self.claims
            .lock()
            .unwrap()
            .contains_key(&(namespace.to_owned(), name.to_owned()))
    }

    /// Every request, in order (`GET <path>?<query>`).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// The subprotocols each port-forward upgrade offered (`Sec-WebSocket-Protocol`), in
    /// order; the server answers [`PORT_FORWARD_PROTOCOL`] when it is among them, as an API
    /// server's websocket port-forward does.
    pub fn offered(&self) -> Vec<String> {
        self.offered.lock().unwrap().clone()
    }
}

/// The `key=value` pairs of the request's `labelSelector`.
fn label_selector(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("labelSelector="))
        .flat_map(|s| {
            let s = s
                .replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/");
            s.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The served objects of `namespace`.
fn in_namespace(objects: &Objects, namespace: &str) -> Vec<serde_json::Value> {
    objects
        .lock()
        .unwrap()
        .iter()
        .filter(|((n, _), _)| n == namespace)
        .map(|(_, o)| o.clone())
        .collect()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap()
}

fn json_response(body: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap()
}

/// `ports=80%2C1234` (as kube-rs sends it) or repeated `ports=` parameters.
fn requested_ports(query: &str) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("ports=") {
            for p in value.replace("%2C", ",").replace("%2c", ",").split(',') {
                out.push(p.parse().ok()?);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

async fn handle(
    mut req: Request<Incoming>,
    ports: Ports,
    calls: Calls,
    offered_by: Calls,
    secrets: Objects,
    claims: Objects,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    calls
        .lock()
        .unwrap()
        .push(format!("{} {path}?{query}", req.method()));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (namespace, pod) = match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", pod, "portforward"] => {
            ((*ns).to_owned(), (*pod).to_owned())
        }
        // A served pod exists (its status is not kept: the relays only ask whether it is
        // there), and so does a served Secret.
        ["api", "v1", "namespaces", ns, "pods", pod] if req.method() == http::Method::GET => {
            let key = ((*ns).to_owned(), (*pod).to_owned());
            return Ok(if ports.lock().unwrap().contains_key(&key) {
                json_response(&serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": ns, "uid": pod_uid(ns, pod)},
                }))
            } else {
                status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("pods \"{pod}\" not found"),
                )
            });
        }
        ["api", "v1", "namespaces", ns, "secrets", name] if req.method() == http::Method::GET => {
            let found = secrets
                .lock()
                .unwrap()
                .get(&((*ns).to_owned(), (*name).to_owned()))
                .cloned();
            return Ok(match found {
                Some(secret) => json_response(&secret),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("secrets \"{name}\" not found"),
                ),
            });
        }
        // Lists: the served objects of the namespace that match the label selector.
        [
            "api",
            "v1",
            "namespaces",
            ns,
            kind @ ("pods" | "secrets" | "configmaps" | "persistentvolumeclaims"),
        ] if req.method() == http::Method::GET => {
            let wanted = label_selector(&query);
            let items: Vec<serde_json::Value> = match *kind {
                "pods" => ports
                    .lock()
                    .unwrap()
                    .keys()
                    .filter(|(n, _)| n == ns)
                    .map(|(n, pod)| {
                        serde_json::json!({
                            "apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": pod, "namespace": n, "uid": pod_uid(n, pod)},
                        })
                    })
                    .collect(),
                "secrets" => in_namespace(&secrets, ns),
                // None are served: `cleanup` lists them beside the Secrets.
                "configmaps" => Vec::new(),
                _ => in_namespace(&claims, ns),
            };
            let items: Vec<serde_json::Value> = items
                .into_iter()
                .filter(|o| {
                    wanted
                        .iter()
                        .all(|(k, v)| o["metadata"]["labels"][k].as_str() == Some(v))
                })
                .collect();
            let list_kind = match *kind {
                "pods" => "PodList",
                "secrets" => "SecretList",
                "configmaps" => "ConfigMapList",
                _ => "PersistentVolumeClaimList",
            };
            return Ok(json_response(&serde_json::json!({
                "apiVersion": "v1", "kind": list_kind,
                "metadata": {"resourceVersion": "1"}, "items": items,
            })));
        }
        [
            "api",
            "v1",
            "namespaces",
            ns,
            "persistentvolumeclaims",
            name,
        ] => {
            let key = ((*ns).to_owned(), (*name).to_owned());
            let found = if req.method() == http::Method::DELETE {
                // The API server refuses a delete whose uid precondition is not the object's.
                use http_body_util::BodyExt;
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let wanted = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["preconditions"]["uid"].as_str().map(str::to_owned));
                let mut claims = claims.lock().unwrap();
                if let (Some(want), Some(claim)) = (&wanted, claims.get(&key)) {
                    let have = claim["metadata"]["uid"].as_str().unwrap_or_default();
                    if want != have {
                        return Ok(status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            &format!(
                                "Operation cannot be fulfilled on persistentvolumeclaims \"{name}\": Precondition failed: UID in precondition: {want}, UID in object meta: {have}"
                            ),
                        ));
                    }
                }
                claims.remove(&key)
            } else if req.method() == http::Method::GET {
                claims.lock().unwrap().get(&key).cloned()
            } else {
                return Ok(status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "the fake API server gets, lists and deletes claims only",
                ));
            };
            return Ok(match found {
                Some(claim) => json_response(&claim),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("persistentvolumeclaims \"{name}\" not found"),
                ),
            });
        }
        _ => {
            return Ok(status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the fake API server answers pods/portforward, GET and lists of pods, secrets and claims, lists of configmaps, and DELETE of claims only",
            ));
        }
    };
    let Some(wanted) = requested_ports(&query) else {
        return Ok(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "query parameter \"ports\" is required",
        ));
    };
    let Some(served) = ports
        .lock()
        .unwrap()
        .get(&(namespace, pod.clone()))
        .cloned()
    else {
        return Ok(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{pod}\" not found"),
        ));
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let offered = header("sec-websocket-protocol");
    offered_by.lock().unwrap().push(offered.clone());
    if !header("upgrade").eq_ignore_ascii_case("websocket")
        || !offered
            .split(',')
            .any(|p| p.trim() == PORT_FORWARD_PROTOCOL)
    {
        return Ok(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("port-forward needs a websocket upgrade offering {PORT_FORWARD_PROTOCOL}"),
        ));
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
        header("sec-websocket-key").as_bytes(),
    );
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        forward(ws, pod, wanted, served).await;
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", PORT_FORWARD_PROTOCOL)
        .body(Full::new(Bytes::new()))
        .unwrap())
}

/// The kubelet's side: one connection per port to the pod's listener, bytes both ways.
async fn forward<S>(
    ws: WebSocketStream<S>,
    pod: String,
    wanted: Vec<u16>,
    served: BTreeMap<u16, SocketAddr>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (to_client, mut outgoing) = tokio::sync::mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let close = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || close {
                break;
            }
        }
    });
    let mut writers = BTreeMap::new();
    let mut readers = Vec::new();
    for (n, port) in wanted.iter().enumerate() {
        let data = (2 * n) as u8;
        let [lo, hi] = port.to_le_bytes();
        for ch in [data, data + 1] {
            let _ = to_client.send(Message::binary(vec![ch, lo, hi])).await;
        }
        let connected = match served.get(port) {
            Some(addr) => TcpStream::connect(addr).await.ok(),
            None => None,
        };
        let Some(tcp) = connected else {
            let message = format!(
                "error forwarding port {port} to pod {pod}, uid : failed to connect to localhost:{port} inside namespace: connection refused"
            );
            let mut frame = vec![data + 1];
            frame.extend_from_slice(message.as_bytes());
            let _ = to_client.send(Message::binary(frame)).await;
            continue;
        };
        let (mut r, w) = tcp.into_split();
        writers.insert(data, w);
        let to_client = to_client.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut frame = Vec::with_capacity(n + 1);
                        frame.push(data);
                        frame.extend_from_slice(&buf[..n]);
                        if to_client.send(Message::binary(frame)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    let inbound = async {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Binary(bytes) if bytes.len() > 1 => {
                    if let Some(w) = writers.get_mut(&bytes[0])
                        && w.write_all(&bytes[1..]).await.is_err()
                    {
                        writers.remove(&bytes[0]);
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        // The client is done sending: the pod's connections see the end of their input.
        for (_, mut w) in std::mem::take(&mut writers) {
            let _ = w.shutdown().await;
        }
    };
    let outbound = async move {
        for r in readers {
            let _ = r.await;
        }
    };
    // The pod's side ended: the API server closes the stream. The client is done sending:
    // the pod's side still answers what it got, then ends.
    tokio::pin!(inbound, outbound);
    tokio::select! {
        () = &mut outbound => {}
        () = &mut inbound => outbound.await,
    }
    let _ = to_client.send(Message::Close(None)).await;
    drop(to_client);
    let _ = writer.await;
}
