//! The MCP server: streamable HTTP at `/mcp`, JSON-RPC 2.0, six tools.
//!
//! Built on the official SDK (`rmcp`) in stateless mode: every POST is answered on its
//! own, so clients of the stateless revision work, 2025-era clients that start with
//! `initialize` work too, and a restarted server serves a client that is mid-conversation
//! without a "session not found". The tools are dispatched by hand rather than through
//! `#[tool_router]`: the router reports argument errors as tool results, and our contract
//! with the agent is a JSON-RPC `-32602` error with a helpful message (`-32601` for an
//! unknown tool). The input schemas still come from the argument types via schemars.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    Implementation, JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    ServerConfig, Tool as McpTool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::apply::Applier;
use crate::engine::{Engine, WaitResult, describe_effect};
use proposals::paths::Home;
use proposals::proposal::{Decision, Outcome, Tool};
use proposals::queue::{NewProposal, Queue, QueueError};
use proposals::validate::{self, ValidationError};

/// The longest a tool call waits for the operator (MCP clients time calls out at 60 s).
pub const MAX_WAIT: Duration = Duration::from_secs(45);
/// Largest JSON-RPC request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Everything the server needs.
#[derive(Clone)]
pub struct SuperviseConfig {
    /// `$BOT_BOTTLE_HOME` (the queue and audit log live there).
    pub home: Home,
    /// The bottle this server serves.
    pub identity: String,
    /// How approved changes take effect.
    pub applier: Arc<dyn Applier>,
    /// `Host` header values accepted (`host` or `host:port`), e.g. the address the bottle
    /// reaches the server at. Empty means loopback only (`localhost`, `127.0.0.1`, `::1`);
    /// it never means "any host".
    pub allowed_hosts: Vec<String>,
    /// Longest wait of a tool call before it answers `pending` (default and cap: 45 s).
    pub max_wait: Duration,
    /// Largest request body (default 1 MiB).
    pub max_body_bytes: usize,
}

impl std::fmt::Debug for SuperviseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuperviseConfig")
            .field("home", &self.home)
            .field("identity", &self.identity)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("max_wait", &self.max_wait)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl SuperviseConfig {
    /// A config with the defaults: loopback hosts, 45 s wait, 1 MiB bodies.
    pub fn new(home: Home, identity: &str, applier: Arc<dyn Applier>) -> Self {
        Self {
            home,
            identity: identity.to_owned(),
            applier,
            allowed_hosts: Vec::new(),
            max_wait: MAX_WAIT,
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// The server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad identity or unusable queue directory.
    #[error("cannot open the proposal queue: {0}")]
    Queue(#[from] QueueError),
    /// The HTTP server failed.
    #[error("the supervise server stopped: {0}")]
    Io(#[from] std::io::Error),
}

// ---- tool arguments (their JSON schemas are what the agent sees) ----

/// Arguments of `egress-allow` and `egress-block`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutesArgs {
    /// The COMPLETE proposed routes.yaml: the current file from `list-egress-routes` with
    /// your change applied. Routes left out are removed. Keep `log` as it is.
    pub routes_yaml: String,
    /// Why you need this, in a sentence or two; the operator reads it before deciding.
    pub justification: String,
}

/// Arguments of `egress-token-allow`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenArgs {
    /// The host of an existing route (as in `list-egress-routes`), e.g. `api.github.com`.
    pub host: String,
    /// The name of the host secret to attach, e.g. `GITHUB_TOKEN`; you never see its value.
    pub token_name: String,
    /// Why requests to this host need the credential.
    pub justification: String,
}

/// Arguments of `dlp-allow`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DlpArgs {
    /// The host the refused request went to, as egress named it, e.g. `api.example.com`.
    pub host: String,
    /// The rule egress named in the refusal (`x-bot-bottle-blocked: dlp <rule>`).
    pub rule: String,
    /// Why this request must carry what the rule found.
    pub justification: String,
}

/// Arguments of `gitleaks-allow`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitleaksArgs {
    /// The finding's fingerprint exactly as the rejected push printed it
    /// (`commit:file:rule_id:line`). Give this, or `file` and `line`.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The file of the finding (with `line`, when you have no fingerprint).
    #[serde(default)]
    pub file: Option<String>,
    /// The 1-based line of the finding (with `file`).
    #[serde(default)]
    pub line: Option<u64>,
    /// Why this is not a real secret (a test fixture, a public key, ...).
    pub justification: String,
}

/// Arguments of `proposal-status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    /// The proposal id from an earlier `pending` answer.
    pub id: String,
    /// How long to wait for the decision, in seconds (0 to 45; default 45).
    #[serde(default)]
    pub wait_seconds: Option<u64>,
}

/// `list-egress-routes` takes no arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

const LIST_ROUTES: &str = "list-egress-routes";
const PROPOSAL_STATUS: &str = "proposal-status";

fn schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_type::<T>()
}

/// The six tools with their descriptions and input schemas.
pub fn tool_list() -> Vec<McpTool> {
    let mut tools = vec![
        McpTool::new(
            LIST_ROUTES,
            "Return the live egress routes (routes.yaml) of this bottle: the hosts, paths and \
             methods your HTTP(S) requests may reach. Answers at once. Call it before \
             egress-allow or egress-block and edit the returned file. A route approved once \
             or for a while has `uses` or `expires`, and a comment at the end says how much \
             of it is left.",
            schema::<NoArgs>(),
        ),
        McpTool::new(
            Tool::EgressAllow.as_str(),
            "Ask the human operator to allow more network access. Use it when a request was \
             blocked (HTTP 403 with header x-bot-bottle-blocked). Pass the COMPLETE new \
             routes.yaml (the output of list-egress-routes plus your change) and a \
             justification. The call waits up to 45 s for the operator: 'approved' or \
             'modified' means the routes are already live, retry your request; 'rejected' \
             means do not retry; 'pending' gives a proposal id: call proposal-status with it \
             to keep waiting. Do not send the same proposal again.",
            schema::<RoutesArgs>(),
        ),
        McpTool::new(
            Tool::EgressBlock.as_str(),
            "Ask the operator to narrow network access (remove or restrict routes you no \
             longer need). Pass the COMPLETE new routes.yaml and a justification. A proposal \
             is judged by what it does: one that widens anything (a route added or loosened, \
             a credential moved) is refused at once; use egress-allow for that. Answers as \
             egress-allow does.",
            schema::<RoutesArgs>(),
        ),
        McpTool::new(
            Tool::EgressTokenAllow.as_str(),
            "Ask the operator to attach a named host secret (credential) to the route of a \
             host, so the egress proxy adds it to your requests to that host. You never see \
             the secret. The host must already have a route. Answers as egress-allow does.",
            schema::<TokenArgs>(),
        ),
        McpTool::new(
            Tool::GitleaksAllow.as_str(),
            "Ask the operator to allow one secret-scan finding that rejected your git push \
             (a false positive such as a test fixture). Pass the fingerprint printed by the \
             rejected push (or file and line) and a justification. On approval push again. \
             Answers as egress-allow does.",
            schema::<GitleaksArgs>(),
        ),
        McpTool::new(
            Tool::DlpAllow.as_str(),
            "Ask the operator to let one outbound secret-scan (DLP) rule through to one host, \
             after egress refused a request with 'x-bot-bottle-blocked: dlp <rule>'. Pass the \
             host, the rule and a justification. On approval send the request again. Answers \
             as egress-allow does.",
            schema::<DlpArgs>(),
        ),
        McpTool::new(
            PROPOSAL_STATUS,
            "Wait for the operator's decision on a proposal that answered 'pending'. Pass its \
             id and wait_seconds (at most 45). Returns approved / modified (the change is \
             live), rejected, or pending again: then call it again.",
            schema::<StatusArgs>(),
        ),
    ];
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    tools
}

/// The MCP handler of one bottle.
#[derive(Clone)]
pub struct SuperviseServer {
    engine: Arc<Engine>,
    max_wait: Duration,
}

impl std::fmt::Debug for SuperviseServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuperviseServer")
            .field("engine", &self.engine)
            .finish()
    }
}

fn invalid(tool: &str, e: impl std::fmt::Display) -> ErrorData {
    ErrorData::invalid_params(format!("{tool}: {e}"), None)
}

fn internal(tool: &str, e: impl std::fmt::Display) -> ErrorData {
    tracing::error!(tool, error = %e, "internal error");
    ErrorData::internal_error("internal error", None)
}

fn parse_args<T: DeserializeOwned>(tool: &str, args: Option<JsonObject>) -> Result<T, ErrorData> {
    let value = Value::Object(args.unwrap_or_default());
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("missing field `justification`") {
            invalid(tool, ValidationError::MissingJustification)
        } else {
            invalid(
                tool,
                format!("bad arguments: {msg}; see this tool's input schema in tools/list"),
            )
        }
    })
}

fn result(status: &str, text: String, data: Value, is_error: bool) -> CallToolResponse {
    let mut r = if is_error {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    let mut data = data;
    if let Value::Object(m) = &mut data {
        m.insert("status".into(), Value::from(status));
    }
    r.structured_content = Some(data);
    r.into()
}

fn notes_suffix(notes: &Option<String>) -> String {
    notes
        .as_deref()
        .map(|n| format!(" Operator's note: {n}"))
        .unwrap_or_default()
}

fn answer(tool: Option<Tool>, id: &str, res: WaitResult, wait_hint: Duration) -> CallToolResponse {
    match res {
        WaitResult::Done(Outcome {
            status,
            notes,
            final_file,
            grant,
            expires,
            ..
        }) => {
            // How long it holds, for the agent to plan by.
            let holds = tool.map_or_else(String::new, |t| {
                format!(" How long: {}.", grant.holds(t, expires.as_deref()))
            });
            let data = json!({
                "id": id,
                "notes": notes,
                "final_file": final_file,
                "grant": grant.scope(),
                "expires": expires,
            });
            match status {
                Decision::Approved => {
                    let effect = tool
                        .map(describe_effect)
                        .unwrap_or("the change is in effect");
                    result(
                        "approved",
                        format!(
                            "approved: the operator approved proposal {id} and it is in effect; {effect}.{holds}{}",
                            notes_suffix(&notes)
                        ),
                        data,
                        false,
                    )
                }
                Decision::Modified => result(
                    "modified",
                    format!(
                        "modified: the operator approved an edited version of proposal {id}, which is in effect now (not your original).{holds} In effect:\n{}\n{}",
                        final_file.as_deref().unwrap_or(""),
                        notes_suffix(&notes).trim_start()
                    ),
                    data,
                    false,
                ),
                Decision::Rejected => result(
                    "rejected",
                    format!(
                        "rejected: the operator rejected proposal {id}; nothing changed. Do not send the same proposal again.{}",
                        notes_suffix(&notes)
                    ),
                    data,
                    false,
                ),
            }
        }
        WaitResult::ApplyFailed(err) => result(
            "apply-failed",
            format!(
                "apply-failed: the operator approved proposal {id} but applying it failed: {err}. \
                 Nothing changed and the proposal is pending for the operator again; call \
                 proposal-status with {{\"id\": \"{id}\", \"wait_seconds\": 45}} to wait for the outcome."
            ),
            json!({ "id": id, "error": err }),
            true,
        ),
        WaitResult::Pending(last) => {
            let secs = wait_hint.as_secs().max(1);
            let extra = last
                .map(|e| format!(" (an earlier approval failed to apply: {e})"))
                .unwrap_or_default();
            result(
                "pending",
                format!(
                    "pending: proposal {id} is waiting for the operator{extra}. Call proposal-status \
                     with {{\"id\": \"{id}\", \"wait_seconds\": {secs}}} to wait for the decision, \
                     and again while it answers pending. Do not send the proposal again."
                ),
                json!({ "id": id }),
                false,
            )
        }
        WaitResult::Unknown => result(
            "unknown",
            format!("unknown: there is no proposal {id} in this bottle's queue"),
            json!({ "id": id }),
            true,
        ),
    }
}

impl SuperviseServer {
    /// A handler over `engine`, waiting at most `max_wait` per call.
    pub fn new(engine: Arc<Engine>, max_wait: Duration) -> Self {
        Self {
            engine,
            max_wait: max_wait.min(MAX_WAIT),
        }
    }

    async fn current_routes(&self, tool: &str) -> Result<String, ErrorData> {
        self.engine
            .applier()
            .current_routes(self.engine.queue().identity())
            .await
            .map_err(|e| internal(tool, e))
    }

    async fn propose(&self, tool: Tool, new: NewProposal) -> Result<CallToolResponse, ErrorData> {
        let name = tool.as_str();
        let (proposal, reused) = self.engine.submit(new).await.map_err(|e| match e {
            QueueError::TooMany(_) => invalid(name, e),
            other => internal(name, other),
        })?;
        if reused {
            tracing::info!(id = %proposal.id, tool = name, "identical proposal pending; waiting on it");
        } else {
            tracing::info!(id = %proposal.id, tool = name, "proposal queued; waiting for the operator");
        }
        let res = self
            .engine
            .wait(&proposal.id, self.max_wait)
            .await
            .map_err(|e| internal(name, e))?;
        Ok(answer(Some(tool), &proposal.id, res, self.max_wait))
    }

    async fn routes_call(
        &self,
        tool: Tool,
        args: Option<JsonObject>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = tool.as_str();
        let a: RoutesArgs = parse_args(name, args)?;
        validate::check_justification(&a.justification).map_err(|e| invalid(name, e))?;
        let proposed = validate::parse_routes(&a.routes_yaml).map_err(|e| invalid(name, e))?;
        let current_text = self.current_routes(name).await?;
        let current = if current_text.trim().is_empty() {
            policy::EgressConfig::default()
        } else {
            validate::parse_routes(&current_text).map_err(|e| internal(name, e))?
        };
        validate::check_routes_proposal(&current, &proposed).map_err(|e| invalid(name, e))?;
        if tool == Tool::EgressAllow {
            validate::check_nothing_omitted(&current, &proposed).map_err(|e| invalid(name, e))?;
        }
        // Judged by what it does, not by its name: a block that widens is refused here,
        // before it reaches the operator as a "block".
        let effect =
            proposals::effect::routes_effect(&current, &proposed).map_err(|e| match e {
                proposals::effect::EffectError::Proposed(v) => invalid(name, v),
                other => internal(name, other),
            })?;
        proposals::effect::check_kind(tool, &effect).map_err(|e| invalid(name, e))?;
        self.propose(
            tool,
            NewProposal {
                tool,
                proposed_file: a.routes_yaml,
                justification: a.justification,
                current_file: Some(current_text),
                args: None,
            },
        )
        .await
    }

    async fn token_call(&self, args: Option<JsonObject>) -> Result<CallToolResponse, ErrorData> {
        let tool = Tool::EgressTokenAllow;
        let name = tool.as_str();
        let a: TokenArgs = parse_args(name, args)?;
        validate::check_justification(&a.justification).map_err(|e| invalid(name, e))?;
        let req = validate::TokenRequest {
            host: a.host.trim().to_owned(),
            token_name: a.token_name.trim().to_owned(),
        };
        validate::check_token(&req).map_err(|e| invalid(name, e))?;
        let current_text = self.current_routes(name).await?;
        let has_route = validate::parse_routes(&current_text)
            .ok()
            .and_then(|c| c.routes)
            .is_some_and(|r| r.iter().any(|r| r.host == req.host));
        if !has_route {
            return Err(invalid(
                name,
                format!(
                    "there is no route for host {}; ask for the route with egress-allow first",
                    req.host
                ),
            ));
        }
        let effect =
            proposals::effect::file_effect(tool, &current_text, &validate::token_file(&req))
                .map_err(|e| match e {
                    proposals::effect::EffectError::Proposed(v) => invalid(name, v),
                    other => internal(name, other),
                })?;
        proposals::effect::check_kind(tool, &effect).map_err(|e| invalid(name, e))?;
        self.propose(
            tool,
            NewProposal {
                tool,
                proposed_file: validate::token_file(&req),
                justification: a.justification,
                current_file: Some(current_text),
                args: Some(json!({ "host": req.host, "token_name": req.token_name })),
            },
        )
        .await
    }

    async fn dlp_call(&self, args: Option<JsonObject>) -> Result<CallToolResponse, ErrorData> {
        let tool = Tool::DlpAllow;
        let name = tool.as_str();
        let a: DlpArgs = parse_args(name, args)?;
        validate::check_justification(&a.justification).map_err(|e| invalid(name, e))?;
        let req = proposals::dlp::DlpAllowRequest {
            host: a.host.trim().to_owned(),
            rule: a.rule.trim().to_owned(),
        };
        proposals::dlp::check_dlp_allow(&req).map_err(|e| invalid(name, e))?;
        let current_text = self.current_routes(name).await?;
        let file = proposals::dlp::dlp_allow_file(&req);
        let effect =
            proposals::effect::file_effect(tool, &current_text, &file).map_err(|e| match e {
                proposals::effect::EffectError::Proposed(v) => invalid(name, v),
                proposals::effect::EffectError::NoRoute(h) => invalid(
                    name,
                    format!(
                        "there is no route for host {h}; ask for the route with egress-allow first"
                    ),
                ),
                other => internal(name, other),
            })?;
        proposals::effect::check_kind(tool, &effect).map_err(|e| invalid(name, e))?;
        self.propose(
            tool,
            NewProposal {
                tool,
                proposed_file: file,
                justification: a.justification,
                current_file: Some(current_text),
                args: Some(json!({ "host": req.host, "rule": req.rule })),
            },
        )
        .await
    }

    async fn gitleaks_call(&self, args: Option<JsonObject>) -> Result<CallToolResponse, ErrorData> {
        let tool = Tool::GitleaksAllow;
        let name = tool.as_str();
        let a: GitleaksArgs = parse_args(name, args)?;
        validate::check_justification(&a.justification).map_err(|e| invalid(name, e))?;
        let entry = match (
            a.fingerprint.as_deref().map(str::trim),
            a.file.as_deref(),
            a.line,
        ) {
            (Some(fp), None, None) if !fp.is_empty() => fp.to_owned(),
            (None, Some(file), Some(line)) if !file.trim().is_empty() && line > 0 => {
                format!("{}:{line}", file.trim())
            }
            _ => {
                return Err(invalid(
                    name,
                    "pass either 'fingerprint' (as printed by the rejected push) or both 'file' and 'line' (1-based)",
                ));
            }
        };
        let entry = validate::check_finding(&entry).map_err(|e| invalid(name, e))?;
        let args = json!({ "fingerprint": a.fingerprint, "file": a.file, "line": a.line });
        self.propose(
            tool,
            NewProposal {
                tool,
                proposed_file: format!("{entry}\n"),
                justification: a.justification,
                current_file: None,
                args: Some(args),
            },
        )
        .await
    }

    async fn status_call(&self, args: Option<JsonObject>) -> Result<CallToolResponse, ErrorData> {
        let a: StatusArgs = parse_args(PROPOSAL_STATUS, args)?;
        let id = a.id.trim().to_owned();
        proposals::paths::check_proposal_id(&id).map_err(|e| invalid(PROPOSAL_STATUS, e))?;
        let queue: &Queue = self.engine.queue();
        let tool = queue
            .proposal(&id)
            .ok()
            .flatten()
            .or_else(|| queue.processed_proposal(&id).ok().flatten())
            .map(|p| p.tool);
        if tool.is_none() {
            return Err(invalid(
                PROPOSAL_STATUS,
                format!(
                    "there is no proposal {id} in this bottle's queue; use the id from the 'pending' answer"
                ),
            ));
        }
        let wait = Duration::from_secs(a.wait_seconds.unwrap_or(45).min(45)).min(self.max_wait);
        let res = self
            .engine
            .wait(&id, wait)
            .await
            .map_err(|e| internal(PROPOSAL_STATUS, e))?;
        Ok(answer(tool, &id, res, self.max_wait))
    }

    async fn list_routes_call(
        &self,
        args: Option<JsonObject>,
    ) -> Result<CallToolResponse, ErrorData> {
        let _: NoArgs = parse_args(LIST_ROUTES, args)?;
        let text = self.current_routes(LIST_ROUTES).await?;
        let shown = if text.trim().is_empty() {
            "routes: []\n".to_owned()
        } else {
            // Routes approved once or for a while: how much is left, as comments.
            let spent = self
                .engine
                .applier()
                .uses_spent(self.engine.queue().identity())
                .await;
            let notes = crate::apply::grant_notes(&text, &spent);
            if notes.is_empty() {
                text
            } else {
                let sep = if text.ends_with('\n') { "" } else { "\n" };
                format!("{text}{sep}{notes}")
            }
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(shown)]).into())
    }

    /// Dispatches one `tools/call`.
    pub async fn dispatch(
        &self,
        name: &str,
        args: Option<JsonObject>,
    ) -> Result<CallToolResponse, ErrorData> {
        match name {
            LIST_ROUTES => self.list_routes_call(args).await,
            PROPOSAL_STATUS => self.status_call(args).await,
            "egress-allow" => self.routes_call(Tool::EgressAllow, args).await,
            "egress-block" => self.routes_call(Tool::EgressBlock, args).await,
            "egress-token-allow" => self.token_call(args).await,
            "gitleaks-allow" => self.gitleaks_call(args).await,
            "dlp-allow" => self.dlp_call(args).await,
            other => Err(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!(
                    "unknown tool {other:?}; the tools are list-egress-routes, egress-allow, egress-block, egress-token-allow, gitleaks-allow, dlp-allow and proposal-status"
                ),
                None,
            )),
        }
    }
}

impl ServerHandler for SuperviseServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "bot-bottle-supervise",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Ask the human operator of this bottle for more access: network routes \
                 (egress-allow), credentials (egress-token-allow), secret-scan exceptions \
                 (gitleaks-allow). Calls wait up to 45 s; on 'pending' use proposal-status.",
            )
    }

    fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListToolsResult, ErrorData>> + Send + '_ {
        std::future::ready(Ok(ListToolsResult::with_all_items(tool_list())))
    }

    fn get_tool(&self, name: &str) -> Option<McpTool> {
        tool_list().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.dispatch(&request.name, request.arguments).await
    }
}

/// The HTTP router serving `/mcp`, and the engine to run beside it ([`Engine::run`]).
pub fn router(
    config: &SuperviseConfig,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<(axum::Router, Arc<Engine>), ServeError> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    let queue = Queue::new(config.home.clone(), &config.identity)?;
    queue.create()?;
    let engine = Engine::new(queue, config.applier.clone());
    let handler = SuperviseServer::new(engine.clone(), config.max_wait);
    let mut http = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_cancellation_token(cancel)
        .with_max_request_body_bytes(config.max_body_bytes);
    if !config.allowed_hosts.is_empty() {
        http = http.with_allowed_hosts(config.allowed_hosts.clone());
    }
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        http,
    );
    let limit = config.max_body_bytes;
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(move |req, next| {
            json_rpc_guard(req, next, limit)
        }));
    Ok((app, engine))
}

fn json_rpc_error(
    status: http::StatusCode,
    code: i32,
    message: String,
) -> axum::response::Response {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    let mut resp = axum::response::Response::new(axum::body::Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Answers bodies that are too large (413) or not JSON (`-32700`) before the SDK sees
/// them, so the agent gets a JSON-RPC error it can read instead of a bare text reply.
async fn json_rpc_guard(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    limit: usize,
) -> axum::response::Response {
    if req.method() != http::Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return json_rpc_error(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                -32600,
                format!("request body larger than {limit} bytes; send a smaller proposal"),
            );
        }
    };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return json_rpc_error(
            http::StatusCode::BAD_REQUEST,
            -32700,
            format!("parse error: the request body is not JSON ({e})"),
        );
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// Serves the supervise MCP server of bottle `config.identity` on `listener` until
/// `shutdown` completes: answers tool calls at `/mcp` and applies the operator's
/// responses as they arrive.
pub async fn serve<L>(
    listener: L,
    config: SuperviseConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let cancel = tokio_util::sync::CancellationToken::new();
    let (app, engine) = router(&config, cancel.child_token())?;
    let engine_task = tokio::spawn(engine.run(cancel.child_token()));
    let stop = cancel.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stop.cancel();
        })
        .await;
    cancel.cancel();
    let _ = engine_task.await;
    served.map_err(ServeError::Io)
}
