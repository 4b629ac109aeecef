//! A fake model API for the real agent clients: enough of the Anthropic Messages API, the
//! OpenAI Responses API and the Gemini API (`generateContent`, and `streamGenerateContent`
//! as server-sent events) to carry a real `claude -p`, `codex exec`, `gemini -p` or
//! `opencode run` through one scripted session, recording every request.
//!
//! It also speaks the little of the ChatGPT backend that `codex exec` needs with a ChatGPT
//! login: the Responses API under `/backend-api/codex/`, the account check Codex runs
//! before its first turn (answered for whichever account the request names, on the host
//! the request was for), and the login refresh of `auth.openai.com` (`POST /oauth/token`,
//! answered with [`REFRESHED_ACCESS_TOKEN`]).
//!
//! The script is stateless, decided per request from what the client sent:
//! * the request already carries a tool result → the final answer ([`FINAL_TEXT`]);
//! * the request offers a tool whose name ends in the scripted tool's name (e.g. the
//!   supervise MCP tool `list-egress-routes`, however the client prefixes it) → a call of
//!   that tool with empty arguments;
//! * anything else (titles, summaries, side requests) → a short text answer; a Gemini
//!   request that asks for JSON of a schema (Gemini CLI's model router, its checks) gets a
//!   value of that schema.
//!
//! Requests that do not look like the protocol this fake speaks are recorded as
//! [`ModelApi::protocol_problems`], each naming what differed, so a client version that
//! changes its protocol fails a test with a message that says what changed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::TestCa;

/// The final answer the fake model gives once the tool result came back.
pub const FINAL_TEXT: &str = "FAKE-MODEL-FINAL-ANSWER";
/// The answer to requests outside the script.
pub const SIDE_TEXT: &str = "FAKE-MODEL-SIDE-ANSWER";
/// The access token a login refresh (`POST /oauth/token`) hands out: JWT-shaped, valid
/// for years, signed by nobody.
pub const REFRESHED_ACCESS_TOKEN: &str = "eyJhbGciOiJub25lIn0.eyJleHAiOjQxMDI0NDQ4MDAsInN1YiI6ImZha2UtcmVmcmVzaGVkIn0.ZmFrZS1yZWZyZXNoZWQ";
/// The refresh token a login refresh hands out (rotated, as the real one is).
pub const REFRESHED_REFRESH_TOKEN: &str = "fake-rotated-refresh-token";

/// Which API a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/messages` (Anthropic).
    AnthropicMessages,
    /// `POST /v1/responses` (OpenAI).
    OpenAiResponses,
    /// `POST /backend-api/codex/responses` (the ChatGPT backend, same protocol).
    ChatGptResponses,
    /// `GET /backend-api/wham/accounts/check` (the ChatGPT backend's account list).
    ChatGptAccounts,
    /// `POST /oauth/token` (a ChatGPT login refresh at `auth.openai.com`).
    OAuthToken,
    /// `POST /v1beta/models/<model>:generateContent` (Gemini).
    GeminiGenerate,
    /// `POST /v1beta/models/<model>:streamGenerateContent` (Gemini, streamed).
    GeminiStream,
    /// Anything else.
    Other,
}

/// What the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A call of the named tool.
    ToolCall(String),
    /// The final answer, after a tool result.
    Final,
    /// A non-model answer the client needs (account check, login refresh).
    Service,
    /// A short text answer to a request outside the script.
    Side,
    /// An error status (unknown path, malformed request).
    Error(u16),
}

/// One request the fake received, with its whole body.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// The body; decoded when it came zstd-compressed (`content-encoding: zstd`, as Codex
    /// sends it with a ChatGPT login).
    pub body: Vec<u8>,
    /// TLS server name.
    pub sni: Option<String>,
    /// The API the path belongs to.
    pub api: Api,
    /// What the fake answered.
    pub answer: Answer,
}

impl ModelRequest {
    /// All values of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<ModelRequest>,
    problems: Vec<String>,
}

/// The fake model API on `127.0.0.1`.
pub struct ModelApi {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ModelApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ModelApi {
    /// Starts the fake over TLS with a certificate from `ca` for `names`; it scripts a call
    /// of the tool whose name ends in `tool`.
    pub async fn start_tls(ca: &TestCa, names: &[&str], tool: &str) -> ModelApi {
        Self::start(
            Some(tokio_rustls::TlsAcceptor::from(ca.server_config(names))),
            tool,
        )
        .await
    }

    /// Starts the fake over plain HTTP (for trying a client directly on the host).
    pub async fn start_plain(tool: &str) -> ModelApi {
        Self::start(None, tool).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>, tool: &str) -> ModelApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let tool: Arc<str> = Arc::from(tool);
        let sh = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                let (sh, tls, tool) = (sh.clone(), tls.clone(), tool.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let sni = stream.get_ref().1.server_name().map(str::to_string);
                            serve(TokioIo::new(stream), sh, sni, tool).await;
                        }
                        None => serve(TokioIo::new(tcp), sh, None, tool).await,
                    }
                });
            }
        });
        ModelApi { addr, shared, task }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<ModelRequest> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// Every way a request differed from the protocol this fake speaks.
    pub fn protocol_problems(&self) -> Vec<String> {
        self.shared.lock().unwrap().problems.clone()
    }
}

async fn serve<I>(io: I, shared: Arc<Mutex<Shared>>, sni: Option<String>, tool: Arc<str>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(req, shared.clone(), sni.clone(), tool.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

type Out = BoxBody<Bytes, Infallible>;

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
    sni: Option<String>,
    tool: Arc<str>,
) -> Result<Response<Out>, Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let mut problems = Vec::new();
    let zstd = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("content-encoding") && v.trim() == "zstd");
    let body = if zstd {
        match unzstd(&body) {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!(
                    "{method} {path}: the zstd body does not decode: {e}"
                ));
                body
            }
        }
    } else {
        body
    };
    let bare = path.split('?').next().unwrap_or("").to_string();
    let api = match (method.as_str(), bare.as_str()) {
        ("POST", "/v1/messages") => Api::AnthropicMessages,
        ("POST", "/v1/responses") => Api::OpenAiResponses,
        ("POST", "/backend-api/codex/responses") => Api::ChatGptResponses,
        ("GET", "/backend-api/wham/accounts/check") => Api::ChatGptAccounts,
        ("POST", "/oauth/token") => Api::OAuthToken,
        ("POST", p) if p.starts_with("/v1beta/models/") && p.ends_with(":generateContent") => {
            Api::GeminiGenerate
        }
        ("POST", p)
            if p.starts_with("/v1beta/models/") && p.ends_with(":streamGenerateContent") =>
        {
            Api::GeminiStream
        }
        _ => Api::Other,
    };
    let (answer, resp) = match api {
        Api::AnthropicMessages => anthropic(&body, &tool, &mut problems),
        Api::OpenAiResponses | Api::ChatGptResponses => openai(&body, &tool, &mut problems),
        Api::ChatGptAccounts => (Answer::Service, accounts_check(&headers, &mut problems)),
        Api::OAuthToken => (Answer::Service, token_refresh(&body, &mut problems)),
        Api::GeminiGenerate | Api::GeminiStream => {
            gemini(&body, &tool, api == Api::GeminiStream, &path, &mut problems)
        }
        Api::Other => (
            Answer::Error(404),
            error(
                StatusCode::NOT_FOUND,
                &format!("the fake model API does not serve {method} {bare}"),
            ),
        ),
    };
    let mut s = shared.lock().unwrap();
    s.problems.extend(problems);
    s.requests.push(ModelRequest {
        method,
        path,
        headers,
        body,
        sni,
        api,
        answer,
    });
    Ok(resp)
}

fn unzstd(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    ruzstd::decoding::StreamingDecoder::new(body)
        .map_err(std::io::Error::other)?
        .read_to_end(&mut out)?;
    Ok(out)
}

fn error(status: StatusCode, message: &str) -> Response<Out> {
    let body =
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn sse(events: &[(&str, Value)]) -> Response<Out> {
    let mut text = String::new();
    for (name, data) in events {
        text.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Full::new(Bytes::from(text)).boxed())
        .unwrap()
}

fn json_response(v: &Value) -> Response<Out> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

/// The ChatGPT backend's account list: one personal account, the one the request names in
/// `chatgpt-account-id`, served from the host the request was for.
fn accounts_check(headers: &[(String, String)], problems: &mut Vec<String>) -> Response<Out> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let Some(id) = header("chatgpt-account-id") else {
        problems.push(
            "chatgpt: GET /backend-api/wham/accounts/check names no `chatgpt-account-id`".into(),
        );
        return error(StatusCode::BAD_REQUEST, "no chatgpt-account-id");
    };
    let host = header("host").unwrap_or_else(|| "chatgpt.com".into());
    let host = host.split(':').next().unwrap_or("chatgpt.com").to_string();
    json_response(&json!({
        "accounts": [{
            "id": id, "name": "Fake account", "profile_picture_url": null,
            "structure": "personal",
            "workspace_backend_origin": format!("https://{host}"),
            "account_routing_override": "NO_CONSTRAINT",
        }],
        "account_ordering": [id],
        "default_account_id": id,
    }))
}

/// A login refresh: a new access token and a rotated refresh token (no new ID token, so
/// the client keeps its account).
fn token_refresh(body: &[u8], problems: &mut Vec<String>) -> Response<Out> {
    let grant = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.get("grant_type")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if grant.as_deref() != Some("refresh_token") {
        problems.push(format!(
            "oauth: POST /oauth/token is not a JSON refresh_token grant (grant_type {grant:?})"
        ));
        return error(StatusCode::BAD_REQUEST, "not a refresh_token grant");
    }
    json_response(&json!({
        "access_token": REFRESHED_ACCESS_TOKEN,
        "refresh_token": REFRESHED_REFRESH_TOKEN,
        "token_type": "Bearer",
        "expires_in": 864000,
    }))
}

/// The first tool in `tools` whose name ends in `tool` (names as the client spells them).
fn offered_tool(tools: Option<&Value>, tool: &str) -> Option<String> {
    let mut names = Vec::new();
    collect_tool_names(tools?, &mut names);
    names.into_iter().find(|n| n.ends_with(tool))
}

fn collect_tool_names(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect_tool_names(i, out)),
        Value::Object(map) => {
            if let Some(Value::String(n)) = map.get("name") {
                out.push(n.clone());
            }
            for key in ["tools", "function", "functionDeclarations"] {
                if let Some(inner) = map.get(key) {
                    collect_tool_names(inner, out);
                }
            }
        }
        _ => {}
    }
}

fn anthropic(body: &[u8], tool: &str, problems: &mut Vec<String>) -> (Answer, Response<Out>) {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        problems.push("anthropic: POST /v1/messages body is not JSON".into());
        return (
            Answer::Error(400),
            error(StatusCode::BAD_REQUEST, "body is not JSON"),
        );
    };
    let Some(messages) = req.get("messages").and_then(Value::as_array) else {
        problems.push("anthropic: POST /v1/messages has no `messages` array".into());
        return (
            Answer::Error(400),
            error(StatusCode::BAD_REQUEST, "no messages"),
        );
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-fake")
        .to_string();
    let has_result = messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| {
            blocks
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    let (answer, block, stop) = if has_result {
        (
            Answer::Final,
            json!({"type": "text", "text": FINAL_TEXT}),
            "end_turn",
        )
    } else if let Some(name) = offered_tool(req.get("tools"), tool) {
        (
            Answer::ToolCall(name.clone()),
            json!({"type": "tool_use", "id": "toolu_fake_1", "name": name, "input": {}}),
            "tool_use",
        )
    } else {
        (
            Answer::Side,
            json!({"type": "text", "text": SIDE_TEXT}),
            "end_turn",
        )
    };
    let usage = json!({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    if !stream {
        if matches!(answer, Answer::ToolCall(_) | Answer::Final) {
            problems.push(
                "anthropic: the main conversation request is no longer streamed (`stream: true` missing)"
                    .into(),
            );
        }
        let msg = json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop, "stop_sequence": null, "usage": usage,
        });
        return (answer, json_response(&msg));
    }
    let start_block = match &answer {
        Answer::ToolCall(name) => {
            json!({"type": "tool_use", "id": "toolu_fake_1", "name": name, "input": {}})
        }
        _ => json!({"type": "text", "text": ""}),
    };
    let delta = match &answer {
        Answer::ToolCall(_) => json!({"type": "input_json_delta", "partial_json": "{}"}),
        Answer::Final => json!({"type": "text_delta", "text": FINAL_TEXT}),
        _ => json!({"type": "text_delta", "text": SIDE_TEXT}),
    };
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            }}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": start_block}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 5}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    (answer, sse(&events))
}

/// A value of a Gemini response schema (`OBJECT`, `STRING`, ... in either case): every
/// property filled, numbers 10, strings the first enum value or `fake`.
fn schema_value(schema: &Value) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("STRING")
        .to_ascii_uppercase();
    match kind.as_str() {
        "OBJECT" => Value::Object(
            schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .map(|(k, v)| (k.clone(), schema_value(v)))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        "INTEGER" | "NUMBER" => json!(10),
        "BOOLEAN" => json!(false),
        "ARRAY" => json!([]),
        _ => json!("fake"),
    }
}

fn gemini(
    body: &[u8],
    tool: &str,
    stream: bool,
    path: &str,
    problems: &mut Vec<String>,
) -> (Answer, Response<Out>) {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        problems.push(format!("gemini: POST {path} body is not JSON"));
        return (
            Answer::Error(400),
            error(StatusCode::BAD_REQUEST, "body is not JSON"),
        );
    };
    let Some(contents) = req.get("contents").and_then(Value::as_array) else {
        problems.push(format!("gemini: POST {path} has no `contents` array"));
        return (
            Answer::Error(400),
            error(StatusCode::BAD_REQUEST, "no contents"),
        );
    };
    if stream && !path.contains("alt=sse") {
        problems.push(format!(
            "gemini: POST {path} streams without `alt=sse` (another framing)"
        ));
    }
    let config = req.get("generationConfig");
    let schema = config
        .and_then(|c| {
            c.get("responseJsonSchema")
                .or_else(|| c.get("responseSchema"))
        })
        .filter(|s| s.is_object());
    let has_result = contents
        .last()
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()));
    let (answer, part) = if let Some(schema) = schema {
        (
            Answer::Side,
            json!({"text": schema_value(schema).to_string()}),
        )
    } else if has_result {
        (Answer::Final, json!({"text": FINAL_TEXT}))
    } else if let Some(name) = offered_tool(req.get("tools"), tool) {
        (
            Answer::ToolCall(name.clone()),
            json!({"functionCall": {"name": name, "args": {}}}),
        )
    } else {
        (Answer::Side, json!({"text": SIDE_TEXT}))
    };
    let chunk = json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
        "modelVersion": "gemini-fake",
    });
    if !stream {
        return (answer, json_response(&chunk));
    }
    // Gemini's SSE has data lines only (no event names).
    let resp = Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Full::new(Bytes::from(format!("data: {chunk}\r\n\r\n"))).boxed())
        .unwrap();
    (answer, resp)
}

/// The tools Codex lists inside `input` (`additional_tools` items), as one array.
fn input_tools(input: &[Value]) -> &Value {
    input
        .iter()
        .find(|i| i.get("type").and_then(Value::as_str) == Some("additional_tools"))
        .and_then(|i| i.get("tools"))
        .unwrap_or(&Value::Null)
}

/// The first MCP namespace Codex announces as deferred (`- mcp__name: description`).
fn deferred_mcp_namespace(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let at = text.find("Deferred tool namespaces:")?;
    let rest = &text[at..];
    let start = rest.find("- mcp__")? + 2;
    let name: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (name.len() > 5).then_some(name)
}

fn openai(body: &[u8], tool: &str, problems: &mut Vec<String>) -> (Answer, Response<Out>) {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        problems.push("openai: POST /v1/responses body is not JSON (compressed?)".into());
        return (
            Answer::Error(400),
            error(StatusCode::BAD_REQUEST, "body is not JSON"),
        );
    };
    let Some(input) = req.get("input").and_then(Value::as_array) else {
        problems.push("openai: POST /v1/responses has no `input` array".into());
        return (
            Answer::Error(400),
            error(StatusCode::BAD_REQUEST, "no input"),
        );
    };
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        problems.push(
            "openai: POST /v1/responses is no longer streamed (`stream: true` missing)".into(),
        );
    }
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-fake")
        .to_string();
    let has_result = input.iter().any(|i| {
        i.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("call_output"))
    });
    let (answer, item) = if has_result {
        (
            Answer::Final,
            json!({"type": "message", "id": "msg_fake_2", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": FINAL_TEXT, "annotations": []}]}),
        )
    } else if let Some(name) = offered_tool(req.get("tools"), tool)
        .or_else(|| offered_tool(Some(input_tools(input)), tool))
    {
        (
            Answer::ToolCall(name.clone()),
            json!({"type": "function_call", "id": "fc_fake_1", "call_id": "call_fake_1",
                   "name": name, "arguments": "{}", "status": "completed"}),
        )
    } else if let (Some(ns), true) = (
        deferred_mcp_namespace(body),
        offered_tool(Some(input_tools(input)), "exec").is_some(),
    ) {
        // Codex "code mode": MCP tools are nested tools reached from the `exec` JavaScript
        // tool, named `<namespace>__<tool>` as JavaScript identifiers.
        let js_name = format!("{ns}__{}", tool.replace('-', "_"));
        let code = format!("const r = await tools.{js_name}({{}});\ntext(r);\n");
        (
            Answer::ToolCall(format!("exec:{js_name}")),
            json!({"type": "custom_tool_call", "id": "ctc_fake_1", "call_id": "call_fake_1",
                   "name": "exec", "input": code, "status": "completed"}),
        )
    } else {
        (
            Answer::Side,
            json!({"type": "message", "id": "msg_fake_1", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": SIDE_TEXT, "annotations": []}]}),
        )
    };
    let response = |status: &str, output: Value| {
        json!({"id": "resp_fake", "object": "response", "created_at": 0, "status": status,
               "model": model, "output": output,
               "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                         "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
                         "total_tokens": 15}})
    };
    let mut events = vec![
        (
            "response.created",
            json!({"type": "response.created", "sequence_number": 0, "response": response("in_progress", json!([]))}),
        ),
        (
            "response.output_item.added",
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": item}),
        ),
    ];
    if let Some(text) = match &answer {
        Answer::Final => Some(FINAL_TEXT),
        Answer::Side => Some(SIDE_TEXT),
        _ => None,
    } {
        events.push((
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "sequence_number": 2, "item_id": item["id"], "output_index": 0, "content_index": 0, "delta": text}),
        ));
    }
    events.push((
        "response.output_item.done",
        json!({"type": "response.output_item.done", "sequence_number": 3, "output_index": 0, "item": item}),
    ));
    events.push((
        "response.completed",
        json!({"type": "response.completed", "sequence_number": 4, "response": response("completed", json!([item]))}),
    ));
    (answer, sse(&events))
}
