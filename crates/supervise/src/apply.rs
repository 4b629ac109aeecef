//! Applying an approved proposal: the seam between supervise and the sidecars.
//!
//! Supervise never talks to the egress proxy or the git gate directly: it calls an
//! [`Applier`]. [`FileApplier`] writes the live files (`state/<identity>/live-config/
//! routes.yaml`, atomically, and `allowed-findings`, appended) and can call a live-reload hook
//! first (the sidecar bundle plugs the egress proxy's reload handle in there), so the
//! change is in effect before supervise answers the agent. [`RecordingApplier`] is the
//! fake for tests: it records every call in order and can be told to fail.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use policy::EgressConfig;

use proposals::grant::Stamp;
use proposals::paths;
use proposals::paths::Home;
use proposals::proposal::Tool;

/// Why a change could not be applied. The message reaches the agent and the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Reading or writing a live file failed.
    #[error("cannot {action} {path}: {reason}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// The egress proxy refused to load the routes.
    #[error("the egress proxy did not load the new routes: {0}")]
    Reload(String),
    /// No live route for the host a token should be attached to.
    #[error("no live route for host {0}; ask for the route with egress-allow first")]
    NoRoute(String),
    /// The named host secret does not exist in the sidecar bundle.
    #[error(
        "no host secret named {0} is available to this bottle; the operator must provide it first"
    )]
    UnknownToken(String),
    /// The live routes file does not parse.
    #[error("the live routes file {path} does not parse: {reason}")]
    CurrentRoutes {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// Anything else an implementation reports.
    #[error("{0}")]
    Other(String),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ApplyError + 'a {
    move |e| ApplyError::Io {
        action,
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Makes approved changes take effect. Each method returns only once the change is in
/// effect (for routes: the egress proxy has loaded them), or with the reason it is not.
#[async_trait::async_trait]
pub trait Applier: Send + Sync {
    /// The live routes file of `bottle` as text (empty when there is none).
    async fn current_routes(&self, bottle: &str) -> Result<String, ApplyError>;

    /// Replaces the live routes with `routes` (parsed and validated from `text`, which
    /// is what gets stored so the operator's comments survive).
    async fn apply_routes(
        &self,
        bottle: &str,
        routes: &EgressConfig,
        text: &str,
    ) -> Result<(), ApplyError>;

    /// Attaches the host secret `token_name` to the live route(s) of `host`, which then
    /// end as `stamp` says (an approval once or for a while).
    async fn attach_token(
        &self,
        bottle: &str,
        host: &str,
        token_name: &str,
        stamp: &Stamp,
    ) -> Result<(), ApplyError>;

    /// Allows the secret-scan finding `fingerprint` for `bottle`'s pushes, until `stamp`
    /// ends it.
    async fn allow_finding(
        &self,
        bottle: &str,
        fingerprint: &str,
        stamp: &Stamp,
    ) -> Result<(), ApplyError>;

    /// Takes the rules whose grant has ended (expired, or used up) out of the live files,
    /// and says when to look again. The sidecars refuse an ended rule on their own; this
    /// keeps the live files, `list-egress-routes` and the audit log in step with them.
    ///
    /// `audit` is called with what ended (and the live routes before and after, when they
    /// change) **before** each live file is written, so that no crash or failed write
    /// between the two leaves an ended grant unaudited; a write that then fails is tried
    /// again by the next sweep, which finds the same grants ended.
    async fn sweep(&self, _bottle: &str, _audit: SweepAudit<'_>) -> Result<Swept, ApplyError> {
        Ok(Swept::default())
    }

    /// Requests spent by routes with `uses`, as the egress proxy counts them:
    /// (host, grant, requests spent). Empty when nothing counts.
    async fn uses_spent(&self, _bottle: &str) -> Vec<(String, Option<String>, u32)> {
        Vec::new()
    }
}

/// The end of every route with a grant, as comment lines for `list-egress-routes`:
/// `# routes[1] (api.example): 1 request left (approved once)`.
pub fn grant_notes(text: &str, spent: &[(String, Option<String>, u32)]) -> String {
    let Ok(config) = serde_saphyr::from_str::<EgressConfig>(text) else {
        return String::new();
    };
    let mut out = String::new();
    for (i, r) in config.routes.iter().flatten().enumerate() {
        let mut ends = Vec::new();
        if let Some(limit) = r.uses {
            let used = spent
                .iter()
                .find(|(h, g, _)| *h == r.host && *g == r.grant)
                .map_or(0, |s| s.2);
            let left = limit.saturating_sub(used);
            ends.push(if left == 1 {
                "1 request left".to_owned()
            } else {
                format!("{left} requests left")
            });
        }
        if let Some(at) = &r.expires {
            ends.push(format!("until {at}"));
        }
        if !ends.is_empty() {
            let then = if r.after_grant.is_some() {
                "then it goes back to what it was before the grant"
            } else {
                "then it is gone"
            };
            out.push_str(&format!(
                "# routes[{i}] ({}): {}, {then}\n",
                r.host,
                ends.join(", ")
            ));
        }
        for g in r.dlp_allow_grants.iter().flatten() {
            let mut ends = Vec::new();
            if let Some(limit) = g.uses {
                let name = policy::DlpAllowGrant::count_key(&r.host, &g.rule);
                let used = spent
                    .iter()
                    .find(|(h, k, _)| *h == name && *k == g.grant)
                    .map_or(0, |s| s.2);
                let left = limit.saturating_sub(used);
                ends.push(if left == 1 {
                    "1 request left".to_owned()
                } else {
                    format!("{left} requests left")
                });
            }
            if let Some(at) = &g.expires {
                ends.push(format!("until {at}"));
            }
            out.push_str(&format!(
                "# routes[{i}] ({}): dlp rule {} let through: {}, then it is gone\n",
                r.host,
                g.rule,
                ends.join(", ")
            ));
        }
    }
    out
}

/// One rule whose grant ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The tool whose approval it was (`egress-allow` for routes, `gitleaks-allow`).
    pub tool: Tool,
    /// The proposal that granted it, when the rule says.
    pub grant: Option<String>,
    /// What ended, e.g. `route api.example.com` or `finding <fingerprint>`.
    pub what: String,
    /// `expired` or `used-up`.
    pub why: &'static str,
    /// Whether a route went back to what it was before the grant (its `after_grant`)
    /// rather than being taken out.
    pub restored: bool,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// The rules it took out.
    pub ended: Vec<Ended>,
    /// The live routes before and after, when it changed them.
    pub routes: Option<(String, String)>,
    /// When the next rule ends (or a count should be read again), if any rule has an end.
    pub next: Option<std::time::Duration>,
}

/// Writes the audit lines of a sweep's ended grants, before the sweep writes the live file
/// they leave: (what ended, the live routes before and after when they change).
pub type SweepAudit<'a> = &'a (dyn Fn(&[Ended], Option<(&str, &str)>) + Send + Sync);

/// How requests spent by routes with `uses` are read from the running egress proxy:
/// (host, grant, requests spent).
pub type UsesHook = Arc<dyn Fn(&str) -> Vec<(String, Option<String>, u32)> + Send + Sync>;

/// How often the counts of routes approved for a number of requests are read while such a
/// route is live.
pub const USES_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes the routes whose grant ended out of `config` (expired at `now`, or with all their
/// uses spent according to `spent`); returns what ended and when to look again.
pub fn sweep_routes(
    config: &mut EgressConfig,
    spent: &[(String, Option<String>, u32)],
    now: time::OffsetDateTime,
) -> (Vec<Ended>, Option<std::time::Duration>) {
    let mut ended = Vec::new();
    let mut next: Option<std::time::Duration> = None;
    let mut soonest = |d: std::time::Duration| {
        next = Some(next.map_or(d, |n| n.min(d)));
    };
    if let Some(routes) = config.routes.as_mut() {
        // A rule let through for a while or once: taken off its route when it ended.
        for top in routes.iter_mut() {
            top.for_each_layer_mut(|r| {
                let host = r.host.clone();
                let Some(grants) = r.dlp_allow_grants.as_mut() else {
                    return;
                };
                grants.retain(|g| {
                    let why = match g.expires.as_deref().map(proposals::grant::parse_time) {
                        Some(None) => Some("expired"),
                        Some(Some(at)) if now >= at => Some("expired"),
                        Some(Some(at)) => {
                            soonest((at - now).try_into().unwrap_or_default());
                            None
                        }
                        None => None,
                    };
                    let why = why.or_else(|| {
                        let limit = g.uses?;
                        let name = policy::DlpAllowGrant::count_key(&host, &g.rule);
                        let used = spent
                            .iter()
                            .find(|(h, k, _)| *h == name && *k == g.grant)
                            .map_or(0, |s| s.2);
                        if used >= limit {
                            Some("used-up")
                        } else {
                            soonest(USES_POLL);
                            None
                        }
                    });
                    if let Some(why) = why {
                        ended.push(Ended {
                            tool: Tool::DlpAllow,
                            grant: g.grant.clone(),
                            what: format!("dlp rule {} on route {host}", g.rule),
                            why,
                            restored: false,
                        });
                    }
                    why.is_none()
                });
                if grants.is_empty() {
                    r.dlp_allow_grants = None;
                }
            });
        }
        // A route whose grant ended goes back to what it was before the grant (its
        // `after_grant`, whose own end is then looked at), or is taken out.
        let mut kept = Vec::with_capacity(routes.len());
        for mut r in std::mem::take(routes) {
            loop {
                let why = match route_end(&r, spent, now) {
                    RouteEnd::Ended(why) => why,
                    RouteEnd::LookAgain(after) => {
                        soonest(after);
                        kept.push(r);
                        break;
                    }
                    RouteEnd::Never => {
                        kept.push(r);
                        break;
                    }
                };
                let lower = r.after_grant.take();
                // A route that goes back to one without its credential ended a token's grant.
                let tool = match &lower {
                    Some(l) if l.token_env != r.token_env => Tool::EgressTokenAllow,
                    _ => Tool::EgressAllow,
                };
                ended.push(Ended {
                    tool,
                    grant: r.grant.clone(),
                    what: format!("route {}", r.host),
                    why,
                    restored: lower.is_some(),
                });
                match lower {
                    Some(l) => r = *l,
                    None => break,
                }
            }
        }
        *routes = kept;
    }
    (ended, next)
}

/// Where a route's grant stands.
enum RouteEnd {
    /// It ended: `expired` or `used-up`.
    Ended(&'static str),
    /// It holds; look again after this long (its expiry, or the next read of its count).
    LookAgain(std::time::Duration),
    /// The route has no end.
    Never,
}

fn route_end(
    r: &policy::Route,
    spent: &[(String, Option<String>, u32)],
    now: time::OffsetDateTime,
) -> RouteEnd {
    let mut after = None;
    match r.expires.as_deref().map(proposals::grant::parse_time) {
        // An end that cannot be read is an end (the proxy refuses such a file).
        Some(None) => return RouteEnd::Ended("expired"),
        Some(Some(at)) if now >= at => return RouteEnd::Ended("expired"),
        Some(Some(at)) => after = Some((at - now).try_into().unwrap_or_default()),
        None => {}
    }
    if let Some(limit) = r.uses {
        let used = spent
            .iter()
            .find(|(h, g, _)| *h == r.host && *g == r.grant)
            .map_or(0, |s| s.2);
        if used >= limit {
            return RouteEnd::Ended("used-up");
        }
        after = Some(after.map_or(USES_POLL, |a: std::time::Duration| a.min(USES_POLL)));
    }
    after.map_or(RouteEnd::Never, RouteEnd::LookAgain)
}

/// A live-reload hook: loads `routes` into the running egress proxy of `bottle`, or says
/// why not. Called before the routes file is written.
pub type ReloadHook = Arc<dyn Fn(&str, &EgressConfig) -> Result<(), String> + Send + Sync>;

/// Applies changes to the live files under `state/<identity>/live-config/`, after an
/// optional live reload.
#[derive(Clone)]
pub struct FileApplier {
    home: Home,
    reload: Option<ReloadHook>,
    uses: Option<UsesHook>,
    known_tokens: Option<BTreeSet<String>>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for FileApplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileApplier")
            .field("home", &self.home)
            .field("reload", &self.reload.is_some())
            .field("known_tokens", &self.known_tokens)
            .finish()
    }
}

impl FileApplier {
    /// Writes only the files (the egress proxy reads them at its next start).
    pub fn new(home: Home) -> Self {
        Self {
            home,
            reload: None,
            uses: None,
            known_tokens: None,
            lock: Arc::default(),
        }
    }

    /// Loads routes into the running proxy through `hook` before writing the file.
    pub fn with_reload(mut self, hook: ReloadHook) -> Self {
        self.reload = Some(hook);
        self
    }

    /// Reads the requests spent by routes with `uses` through `hook` (the running proxy).
    pub fn with_uses(mut self, hook: UsesHook) -> Self {
        self.uses = Some(hook);
        self
    }

    /// Only these host secret names may be attached (names, never values).
    pub fn with_known_tokens(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.known_tokens = Some(names.into_iter().collect());
        self
    }

    /// `state/<bottle>/live-config/routes.yaml`.
    pub fn routes_path(&self, bottle: &str) -> PathBuf {
        self.home.bottle(bottle).routes_file()
    }

    /// `state/<bottle>/live-config/allowed-findings`: finding fingerprints the git gate
    /// allows.
    pub fn allowed_findings_path(&self, bottle: &str) -> PathBuf {
        self.home.bottle(bottle).allowed_findings()
    }

    fn read_routes(&self, bottle: &str) -> Result<String, ApplyError> {
        let path = self.routes_path(bottle);
        match fs::read_to_string(&path) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    fn parse_current(&self, bottle: &str, text: &str) -> Result<EgressConfig, ApplyError> {
        if text.trim().is_empty() {
            return Ok(EgressConfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| ApplyError::CurrentRoutes {
            path: self.routes_path(bottle),
            reason: e.to_string(),
        })
    }

    fn replace_routes(
        &self,
        bottle: &str,
        routes: &EgressConfig,
        text: &str,
    ) -> Result<(), ApplyError> {
        let old_text = self.read_routes(bottle)?;
        if let Some(reload) = &self.reload {
            reload(bottle, routes).map_err(ApplyError::Reload)?;
        }
        let path = self.routes_path(bottle);
        let written = match path.parent() {
            Some(dir) => fs::create_dir_all(dir),
            None => Ok(()),
        }
        .and_then(|()| state::atomic_write_mode(&path, text.as_bytes(), paths::FILE_MODE));
        if let Err(e) = written {
            // Keep the proxy and the file in agreement: put the old routes back.
            if let Some(reload) = &self.reload
                && let Ok(old) = self.parse_current(bottle, &old_text)
                && let Err(why) = reload(bottle, &old)
            {
                tracing::error!(bottle, %why, "could not restore the previous routes after a failed write");
            }
            return Err(io_err("write", &path)(e));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Applier for FileApplier {
    async fn current_routes(&self, bottle: &str) -> Result<String, ApplyError> {
        self.read_routes(bottle)
    }

    async fn apply_routes(
        &self,
        bottle: &str,
        routes: &EgressConfig,
        text: &str,
    ) -> Result<(), ApplyError> {
        let _guard = self.lock.lock().await;
        self.replace_routes(bottle, routes, text)
    }

    async fn attach_token(
        &self,
        bottle: &str,
        host: &str,
        token_name: &str,
        stamp: &Stamp,
    ) -> Result<(), ApplyError> {
        if let Some(known) = &self.known_tokens
            && !known.contains(token_name)
        {
            return Err(ApplyError::UnknownToken(token_name.to_owned()));
        }
        let _guard = self.lock.lock().await;
        let text = self.read_routes(bottle)?;
        let current = self.parse_current(bottle, &text)?;
        // The same edit the proposal's effect was computed with.
        let mut config = proposals::effect::attach_token(&current, host, token_name)
            .map_err(|_| ApplyError::NoRoute(host.to_owned()))?;
        // The route that now carries the secret ends with the grant.
        stamp.apply_to_new_routes(&current, &mut config);
        let new_text = serde_saphyr::to_string(&config)
            .map_err(|e| ApplyError::Other(format!("cannot write the routes: {e}")))?;
        self.replace_routes(bottle, &config, &new_text)
    }

    async fn allow_finding(
        &self,
        bottle: &str,
        fingerprint: &str,
        stamp: &Stamp,
    ) -> Result<(), ApplyError> {
        let _guard = self.lock.lock().await;
        let path = self.allowed_findings_path(bottle);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        // A bottle from before the file's rename: its approvals move to the new name.
        let before = self.home.bottle(bottle).allowed_findings_before_rename();
        if !path.exists() && before.exists() {
            fs::rename(&before, &path).map_err(io_err("move", &before))?;
        }
        let existing = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let line = finding_line(fingerprint, stamp);
        if existing.lines().any(|l| l.trim() == line) {
            return Ok(());
        }
        if existing
            .lines()
            .any(|l| l.split('\t').next().map(str::trim) == Some(fingerprint))
        {
            // A new approval of the same finding sets a new end: replace its line.
            let mut text: String = existing
                .lines()
                .filter(|l| l.split('\t').next().map(str::trim) != Some(fingerprint))
                .map(|l| format!("{l}\n"))
                .collect();
            text.push_str(&line);
            text.push('\n');
            return state::atomic_write_mode(&path, text.as_bytes(), paths::FILE_MODE)
                .map_err(io_err("write", &path));
        }
        let fingerprint = line.as_str();
        let mut line = String::new();
        if !existing.is_empty() && !existing.ends_with('\n') {
            line.push('\n');
        }
        line.push_str(fingerprint);
        line.push('\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err("append to", &path))
    }

    async fn uses_spent(&self, bottle: &str) -> Vec<(String, Option<String>, u32)> {
        self.uses.as_ref().map(|u| u(bottle)).unwrap_or_default()
    }

    async fn sweep(&self, bottle: &str, audit: SweepAudit<'_>) -> Result<Swept, ApplyError> {
        let _guard = self.lock.lock().await;
        let text = self.read_routes(bottle)?;
        if !text.contains("expires") && !text.contains("uses") {
            return Ok(Swept::default());
        }
        let mut config = self.parse_current(bottle, &text)?;
        let spent = self.uses.as_ref().map(|u| u(bottle)).unwrap_or_default();
        let (ended, next) = sweep_routes(&mut config, &spent, time::OffsetDateTime::now_utc());
        if ended.is_empty() {
            return Ok(Swept {
                next,
                ..Swept::default()
            });
        }
        let new_text = serde_saphyr::to_string(&config)
            .map_err(|e| ApplyError::Other(format!("cannot write the routes: {e}")))?;
        audit(&ended, Some((&text, &new_text)));
        self.replace_routes(bottle, &config, &new_text)?;
        Ok(Swept {
            ended,
            routes: Some((text, new_text)),
            next,
        })
    }
}

/// An allowed-finding line with its grant (see the git gate's allowed-findings format).
pub fn finding_line(fingerprint: &str, stamp: &Stamp) -> String {
    let mut line = fingerprint.to_owned();
    if let Some(e) = &stamp.expires {
        line.push_str(&format!("\texpires={e}"));
    }
    if let Some(u) = stamp.uses {
        line.push_str(&format!("\tuses={u}"));
    }
    if let (Some(g), false) = (&stamp.grant, stamp.is_empty()) {
        line.push_str(&format!("\tgrant={g}"));
    }
    line
}

/// One call seen by [`RecordingApplier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppliedCall {
    /// `apply_routes` with the stored text.
    Routes {
        /// Bottle.
        bottle: String,
        /// The routes text.
        text: String,
    },
    /// `attach_token`.
    Token {
        /// Bottle.
        bottle: String,
        /// Host.
        host: String,
        /// Secret name.
        token_name: String,
    },
    /// `allow_finding`.
    Finding {
        /// Bottle.
        bottle: String,
        /// Fingerprint.
        fingerprint: String,
    },
}

/// A fake applier for tests: keeps routes in memory, records calls, and appends
/// `apply:<what>` to a shared event log so tests can check ordering against other events.
#[derive(Debug, Clone, Default)]
pub struct RecordingApplier {
    /// Calls that succeeded, in order.
    pub calls: Arc<Mutex<Vec<AppliedCall>>>,
    /// Shared ordered event log.
    pub events: Arc<Mutex<Vec<String>>>,
    /// The current routes text.
    pub routes: Arc<Mutex<String>>,
    /// When set, the next apply fails with this message (and is consumed).
    pub fail_next: Arc<Mutex<Option<String>>>,
    /// Delay before each apply completes.
    pub delay: Option<std::time::Duration>,
}

impl RecordingApplier {
    /// A fake with `routes` as the live routes.
    pub fn with_routes(routes: &str) -> Self {
        let a = Self::default();
        if let Ok(mut r) = a.routes.lock() {
            *r = routes.to_owned();
        }
        a
    }

    /// Makes the next apply fail with `message`.
    pub fn fail_next(&self, message: &str) {
        if let Ok(mut f) = self.fail_next.lock() {
            *f = Some(message.to_owned());
        }
    }

    /// The recorded calls.
    pub fn calls(&self) -> Vec<AppliedCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    async fn step(&self, call: AppliedCall) -> Result<(), ApplyError> {
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        if let Some(msg) = self.fail_next.lock().ok().and_then(|mut f| f.take()) {
            if let Ok(mut e) = self.events.lock() {
                e.push("apply-failed".to_owned());
            }
            return Err(ApplyError::Other(msg));
        }
        if let Ok(mut e) = self.events.lock() {
            e.push(match &call {
                AppliedCall::Routes { .. } => "apply:routes".to_owned(),
                AppliedCall::Token { .. } => "apply:token".to_owned(),
                AppliedCall::Finding { .. } => "apply:finding".to_owned(),
            });
        }
        if let AppliedCall::Routes { text, .. } = &call
            && let Ok(mut r) = self.routes.lock()
        {
            *r = text.clone();
        }
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Applier for RecordingApplier {
    async fn current_routes(&self, _bottle: &str) -> Result<String, ApplyError> {
        Ok(self.routes.lock().map(|r| r.clone()).unwrap_or_default())
    }

    async fn apply_routes(
        &self,
        bottle: &str,
        _routes: &EgressConfig,
        text: &str,
    ) -> Result<(), ApplyError> {
        self.step(AppliedCall::Routes {
            bottle: bottle.to_owned(),
            text: text.to_owned(),
        })
        .await
    }

    async fn attach_token(
        &self,
        bottle: &str,
        host: &str,
        token_name: &str,
        _stamp: &Stamp,
    ) -> Result<(), ApplyError> {
        self.step(AppliedCall::Token {
            bottle: bottle.to_owned(),
            host: host.to_owned(),
            token_name: token_name.to_owned(),
        })
        .await
    }

    async fn allow_finding(
        &self,
        bottle: &str,
        fingerprint: &str,
        stamp: &Stamp,
    ) -> Result<(), ApplyError> {
        self.step(AppliedCall::Finding {
            bottle: bottle.to_owned(),
            fingerprint: finding_line(fingerprint, stamp),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn sweeping_takes_out_expired_and_used_up_routes_and_says_when_to_look_again() {
        let mut config: EgressConfig = serde_saphyr::from_str(
            "routes:\n  - host: keep.example\n  - host: gone.example\n    expires: 2026-05-25T12:00:00Z\n    grant: 00aa\n  - host: later.example\n    expires: 2026-05-25T12:10:00Z\n  - host: once.example\n    uses: 1\n    grant: 00bb\n  - host: fresh.example\n    uses: 1\n    grant: 00cc\n",
        )
        .unwrap();
        let now = time::macros::datetime!(2026-05-25 12:00:00 UTC);
        let spent = vec![("once.example".to_owned(), Some("00bb".to_owned()), 1)];
        let (ended, next) = sweep_routes(&mut config, &spent, now);
        let hosts: Vec<&str> = config
            .routes
            .iter()
            .flatten()
            .map(|r| r.host.as_str())
            .collect();
        assert_eq!(
            hosts,
            vec!["keep.example", "later.example", "fresh.example"]
        );
        assert_eq!(
            ended,
            vec![
                Ended {
                    tool: Tool::EgressAllow,
                    grant: Some("00aa".into()),
                    what: "route gone.example".into(),
                    why: "expired",
                    restored: false,
                },
                Ended {
                    tool: Tool::EgressAllow,
                    grant: Some("00bb".into()),
                    what: "route once.example".into(),
                    why: "used-up",
                    restored: false,
                },
            ]
        );
        // fresh.example's count is read again in a second; later.example ends in 10 min
        assert_eq!(next, Some(USES_POLL));
        assert_eq!(
            grant_notes(&serde_saphyr::to_string(&config).unwrap(), &[]),
            "# routes[1] (later.example): until 2026-05-25T12:10:00Z, then it is gone\n# routes[2] (fresh.example): 1 request left, then it is gone\n"
        );
    }

    #[test]
    fn sweeping_takes_ended_dlp_grants_off_their_routes_and_keeps_the_routes() {
        let mut config: EgressConfig = serde_saphyr::from_str(
            "routes:\n  - host: api.example\n    dlp_allow_grants:\n      - rule: jwt\n        expires: 2026-05-25T12:00:00Z\n        grant: 00e5\n      - rule: aws-access-key-id\n        uses: 1\n        grant: 00e6\n  - host: b.example\n    dlp_allow_grants:\n      - rule: jwt\n        expires: 2026-05-25T12:30:00Z\n        grant: 00e7\n",
        )
        .unwrap();
        let now = time::macros::datetime!(2026-05-25 12:00:00 UTC);
        let spent = vec![(
            "api.example dlp aws-access-key-id".to_owned(),
            Some("00e6".to_owned()),
            1,
        )];
        let (ended, next) = sweep_routes(&mut config, &spent, now);
        assert_eq!(
            ended,
            vec![
                Ended {
                    tool: Tool::DlpAllow,
                    grant: Some("00e5".into()),
                    what: "dlp rule jwt on route api.example".into(),
                    why: "expired",
                    restored: false,
                },
                Ended {
                    tool: Tool::DlpAllow,
                    grant: Some("00e6".into()),
                    what: "dlp rule aws-access-key-id on route api.example".into(),
                    why: "used-up",
                    restored: false,
                },
            ]
        );
        assert_eq!(next, Some(std::time::Duration::from_secs(1800)));
        let text = serde_saphyr::to_string(&config).unwrap();
        assert_eq!(
            text,
            "routes:\n- host: api.example\n- host: b.example\n  dlp_allow_grants:\n  - rule: jwt\n    expires: \"2026-05-25T12:30:00Z\"\n    grant: \"00e7\"\n"
        );
        assert_eq!(
            grant_notes(&text, &[]),
            "# routes[1] (b.example): dlp rule jwt let through: until 2026-05-25T12:30:00Z, then it is gone\n"
        );
    }

    #[tokio::test]
    async fn a_finding_allowed_for_a_while_carries_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileApplier::new(Home::new(dir.path()));
        let now = time::macros::datetime!(2026-05-25 12:00:00 UTC);
        let stamp = Stamp::new(proposals::Grant::For { seconds: 600 }, "00aa", now);
        a.allow_finding("b-1", "c1:a.rs:rule:3", &Stamp::default())
            .await
            .unwrap();
        a.allow_finding("b-1", "c1:a.rs:rule:3", &stamp)
            .await
            .unwrap();
        a.allow_finding(
            "b-1",
            "c2:b.rs:rule:4",
            &Stamp::new(proposals::Grant::Once, "00bb", now),
        )
        .await
        .unwrap();
        assert_eq!(
            fs::read_to_string(a.allowed_findings_path("b-1")).unwrap(),
            "c1:a.rs:rule:3\texpires=2026-05-25T12:10:00Z\tgrant=00aa\nc2:b.rs:rule:4\tuses=1\tgrant=00bb\n"
        );
    }

    #[tokio::test]
    async fn file_applier_reloads_first_then_writes_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let a = FileApplier::new(home.clone())
            .with_reload(Arc::new(move |b: &str, c: &EgressConfig| {
                let hosts: Vec<String> =
                    c.routes.iter().flatten().map(|r| r.host.clone()).collect();
                seen2
                    .lock()
                    .unwrap()
                    .push(format!("{b}:{}", hosts.join(",")));
                if hosts.iter().any(|h| h == "refused.example") {
                    return Err("bad route".into());
                }
                Ok(())
            }))
            .with_known_tokens(["API_TOKEN".to_owned()]);
        let text = "routes:\n  - host: api.example # comment kept\n";
        let cfg = proposals::validate::parse_routes(text).unwrap();
        a.apply_routes("b-1", &cfg, text).await.unwrap();
        assert_eq!(a.current_routes("b-1").await.unwrap(), text);

        let bad = "routes:\n  - host: refused.example\n";
        let err = a
            .apply_routes("b-1", &proposals::validate::parse_routes(bad).unwrap(), bad)
            .await
            .unwrap_err();
        assert_eq!(err, ApplyError::Reload("bad route".into()));
        assert_eq!(
            a.current_routes("b-1").await.unwrap(),
            text,
            "file untouched"
        );

        assert_eq!(
            a.attach_token("b-1", "api.example", "OTHER", &Stamp::default())
                .await,
            Err(ApplyError::UnknownToken("OTHER".into()))
        );
        assert_eq!(
            a.attach_token("b-1", "nope.example", "API_TOKEN", &Stamp::default())
                .await,
            Err(ApplyError::NoRoute("nope.example".into()))
        );
        a.attach_token("b-1", "api.example", "API_TOKEN", &Stamp::default())
            .await
            .unwrap();
        let now =
            proposals::validate::parse_routes(&a.current_routes("b-1").await.unwrap()).unwrap();
        let r = &now.routes.unwrap()[0];
        assert_eq!(
            (r.token_env.as_deref(), r.auth_scheme.as_deref()),
            (Some("API_TOKEN"), Some("Bearer"))
        );

        a.allow_finding("b-1", "c1:a.rs:rule:3", &Stamp::default())
            .await
            .unwrap();
        a.allow_finding("b-1", "c1:a.rs:rule:3", &Stamp::default())
            .await
            .unwrap();
        a.allow_finding("b-1", "c2:b.rs:rule:4", &Stamp::default())
            .await
            .unwrap();
        assert_eq!(
            fs::read_to_string(a.allowed_findings_path("b-1")).unwrap(),
            "c1:a.rs:rule:3\nc2:b.rs:rule:4\n"
        );
        assert_eq!(
            seen.lock().unwrap().clone(),
            vec!["b-1:api.example", "b-1:refused.example", "b-1:api.example"]
        );
    }
    #[tokio::test]
    async fn allowed_findings_of_a_bottle_from_before_the_rename_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let a = FileApplier::new(home.clone());
        let before = home.bottle("b-1").allowed_findings_before_rename();
        fs::create_dir_all(before.parent().unwrap()).unwrap();
        fs::write(&before, "c1:a.rs:rule:3\n").unwrap();

        a.allow_finding("b-1", "c2:b.rs:rule:4", &Stamp::default())
            .await
            .unwrap();
        a.allow_finding("b-1", "c1:a.rs:rule:3", &Stamp::default())
            .await
            .unwrap();
        assert_eq!(
            fs::read_to_string(a.allowed_findings_path("b-1")).unwrap(),
            "c1:a.rs:rule:3\nc2:b.rs:rule:4\n"
        );
        assert!(!before.exists());
    }
}
