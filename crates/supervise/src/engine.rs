//! The server side of the queue: turns operator responses into changes in effect, then
//! into answers for waiting agents.
//!
//! One task per bottle ([`Engine::run`]) reacts to changes in the queue directory
//! (inotify through `notify`, creations, removals, renames and writes only: reads, its own
//! included, never wake it, so an idle bottle costs no CPU; a slow rescan is the fallback
//! for file systems that do not report events): for each response it applies the change
//! through the [`Applier`], appends the decision to the audit log, records the outcome and
//! only then wakes the waiting tool calls (the proposal moves to `processed/` right after).
//! Waiters never read responses themselves, so a
//! change is applied exactly once however many calls wait for it, and an agent is never
//! told "approved" before the change is in effect. Everything lives in files, so a
//! restarted server picks up where the previous one stopped.
//!
//! # Durability
//!
//! The promise: a decision is on disk before it is applied or answered, and a crash never
//! leaves half a file or an audit log that reads as tampered. An approval waits for the
//! disk twice, once on each side, each wait a group of syncs that run side by side:
//!
//! 1. the operator (`proposals::queue::answer_granted`): the `decided` audit line, its head
//!    record and the response's content under a temporary name; then the response is
//!    linked into the queue and the queue directory synced. The response appears only once
//!    its audit line is on disk, so nothing can apply a decision the log lacks, and it is
//!    on disk, name included, before the operator is told it was sent.
//! 2. the engine, after applying: the `applied` audit line, its head record and the
//!    outcome's content under a temporary name; then the outcome is renamed into
//!    `processed/` and the waiting agents are answered at once; the directory syncs of
//!    [`Queue::move_handled`] follow. The agent is answered only after the record of the
//!    change in effect is on disk.
//!
//! (The applier's own writes come on top: [`crate::FileApplier`] writes `routes.yaml`
//! atomically and durably before the engine's group.)
//!
//! The outcome's name is the one thing a crash can lose after the agent was answered (its
//! content was synced before it appeared, so it is never half there), and only until the
//! directory sync that follows the answer. What the promise needs is durable by then: the
//! `decided` line, the response, the `applied` line with the routes before and after. The
//! restarted engine finds the response without an outcome and handles it again, the
//! recovery it always had for a crash between applying a change and its outcome (the
//! window now ends at the directory sync after the answer instead of before it); for an
//! approved routes file it finds the change already live, so it records `apply-failed`
//! and leaves the proposal pending for the operator, with the change in effect. The
//! directory sync saved is one wait for the disk on every approval, tens of milliseconds
//! when the disk is busy (`bench/supervise/busy`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::apply::{Applier, ApplyError, Ended};
use proposals::audit::{self, NewEntry};
use proposals::effect::{self, Effect};
use proposals::grant::{Grant, Stamp};
use proposals::proposal::{
    ApplyFailure, Decision, Outcome, Proposal, Response, Tool, now_timestamp,
};
use proposals::queue::{NewProposal, Queue, QueueError};
use proposals::validate::{self, Payload};

/// How a wait for a decision ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitResult {
    /// Handled; for approvals the change is in effect.
    Done(Outcome),
    /// The operator approved but applying failed; the proposal is pending again.
    ApplyFailed(String),
    /// Still waiting for the operator (the last failed apply, if any).
    Pending(Option<String>),
    /// No such proposal in this bottle's queue.
    Unknown,
}

/// What one audit line of the engine says beyond the proposal and the response.
struct Record {
    decision: &'static str,
    before: Option<String>,
    after: Option<String>,
    error: Option<String>,
    effect: Vec<String>,
    stage: Option<&'static str>,
    grant: Option<String>,
}

/// Queue, applier and waiters of one bottle.
pub struct Engine {
    queue: Queue,
    applier: Arc<dyn Applier>,
    generation: watch::Sender<u64>,
    failures: Mutex<HashMap<String, (u64, String)>>,
    process_lock: tokio::sync::Mutex<()>,
    submit_lock: tokio::sync::Mutex<()>,
    fallback_scan: Duration,
    file_wakeups: AtomicU64,
    /// Grants' ends audited by this engine (grant, what, why): a sweep whose write failed
    /// finds them again and does not audit them twice.
    ends_audited: Mutex<HashSet<(Option<String>, String, &'static str)>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("queue", &self.queue)
            .finish()
    }
}

impl Engine {
    /// An engine over `queue`, applying through `applier`.
    pub fn new(queue: Queue, applier: Arc<dyn Applier>) -> Arc<Self> {
        Arc::new(Self {
            queue,
            applier,
            generation: watch::Sender::new(0),
            failures: Mutex::default(),
            process_lock: tokio::sync::Mutex::new(()),
            submit_lock: tokio::sync::Mutex::new(()),
            fallback_scan: Duration::from_secs(5),
            file_wakeups: AtomicU64::new(0),
            ends_audited: Mutex::default(),
        })
    }

    /// The queue.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The applier.
    pub fn applier(&self) -> &Arc<dyn Applier> {
        &self.applier
    }

    /// How many times a file event woke [`Engine::run`] to look at the queue again
    /// (the start-up pass and the slow fallback rescans are not counted). An idle queue
    /// wakes it never, whoever reads the queue: tests and benchmarks watch this number.
    pub fn file_wakeups(&self) -> u64 {
        self.file_wakeups.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Queues a proposal (or finds the identical pending one) and wakes nobody: the
    /// operator's side watches the queue directory itself.
    pub async fn submit(&self, new: NewProposal) -> Result<(Proposal, bool), QueueError> {
        let _g = self.submit_lock.lock().await;
        self.queue.submit(new)
    }

    /// Handles every response in the queue. Runs one pass at a time.
    pub async fn process_responses(&self) {
        let _g = self.process_lock.lock().await;
        let ids = match self.queue.answered_ids() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the queue");
                return;
            }
        };
        for id in ids {
            self.process_one(&id).await;
        }
        // Every pass follows a change in the queue directory, some of which this engine
        // did not make (an outcome written by a server that has since stopped, say):
        // wake the waiters so they look at the files again rather than wait for the
        // next change of their own.
        self.bump();
    }

    async fn process_one(&self, id: &str) {
        let response = match self.queue.response(id) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(id, error = %e, "skipping an unreadable response; the proposal is pending again");
                if let Err(e) = self.queue.set_response_aside(id, "corrupt") {
                    tracing::error!(id, error = %e, "cannot move the corrupt response aside");
                }
                self.bump();
                return;
            }
        };
        if response.id != id {
            tracing::warn!(id, other = %response.id, "response names another proposal; set aside");
            let _ = self.queue.set_response_aside(id, "corrupt");
            self.bump();
            return;
        }
        let proposal = match self.queue.proposal(id) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(id, error = %e, "skipping a response to an unreadable proposal");
                return;
            }
        };
        // A crash after the outcome was written but before the move: finish the move.
        if let Ok(Some(outcome)) = self.queue.outcome(id) {
            if let Err(e) = self.queue.archive(&outcome) {
                tracing::error!(id, error = %e, "cannot archive a handled proposal");
            }
            self.bump();
            return;
        }
        match response.status {
            Decision::Rejected => self.reject(&proposal, &response),
            Decision::Approved | Decision::Modified => self.approve(&proposal, &response).await,
        }
        self.bump();
    }

    fn audit(&self, p: &Proposal, r: &Response, rec: Record) {
        let Record {
            decision,
            before,
            after,
            error,
            effect,
            stage,
            grant,
        } = rec;
        let entry = NewEntry {
            component: p.tool.component().to_owned(),
            bottle: self.queue.identity().to_owned(),
            proposal_id: p.id.clone(),
            tool: p.tool.as_str().to_owned(),
            justification: p.justification.clone(),
            arrival_timestamp: p.arrival_timestamp.clone(),
            decided_at: r.responded_at.clone(),
            decision: decision.to_owned(),
            operator: r.operator.clone(),
            notes: r.notes.clone(),
            before,
            after,
            error,
            effect,
            stage: stage.map(str::to_owned),
            grant,
        };
        if let Err(e) = audit::append(self.queue.home(), entry) {
            tracing::error!(id = %p.id, error = %e, "cannot write the audit log");
        }
    }

    fn reject(&self, p: &Proposal, r: &Response) {
        // Audited by the operator's process when it was made; older responses were not.
        if !r.audited {
            let effect = proposals::effect::proposal_effect(p)
                .map(|e| e.lines())
                .unwrap_or_default();
            self.audit(
                p,
                r,
                Record {
                    decision: "rejected",
                    before: p.current_file.clone(),
                    after: Some(p.proposed_file.clone()),
                    error: None,
                    effect,
                    stage: None,
                    grant: None,
                },
            );
        }
        let outcome = Outcome {
            id: p.id.clone(),
            status: Decision::Rejected,
            final_file: None,
            notes: r.notes.clone(),
            operator: r.operator.clone(),
            decided_at: r.responded_at.clone(),
            applied_at: None,
            grant: Grant::Bottle,
            expires: None,
        };
        if let Err(e) = self.queue.archive(&outcome) {
            tracing::error!(id = %p.id, error = %e, "cannot archive a rejected proposal");
        }
    }

    /// Applies `file` with the end `stamp` puts on what it adds, and returns the live
    /// routes before and after and what it did.
    async fn apply(
        &self,
        p: &Proposal,
        status: Decision,
        file: &str,
        stamp: &Stamp,
    ) -> Result<(Option<String>, Option<String>, Effect), ApplyError> {
        let bottle = self.queue.identity();
        let payload = validate::parse_payload(p.tool, file)
            .map_err(|e| ApplyError::Other(format!("the approved file is not valid: {e}")))?;
        let before = match payload {
            Payload::Finding(_) => String::new(),
            _ => self.applier.current_routes(bottle).await?,
        };
        let effect = effect::file_effect(p.tool, &before, file).map_err(|e| {
            ApplyError::Other(format!("cannot tell what the approved file would do: {e}"))
        })?;
        // The operator approved the effect shown, computed against the routes the proposal
        // was made against. If the live routes moved on and the same file now does
        // something else, nothing is applied: the operator looks again.
        if status == Decision::Approved
            && let Some(seen) = &p.current_file
            && seen != &before
            && effect::proposal_effect(p).ok().as_ref() != Some(&effect)
        {
            return Err(ApplyError::Other(format!(
                "the live routes changed since this proposal arrived, and against them it would do something else ({}); reject it so the agent proposes again against the live routes, or approve an edited file",
                effect.lines().join("; ")
            )));
        }
        // A proposal that contradicts its tool (one queued before proposals were judged by
        // their effect, or put in the queue by other means) is never applied as approved:
        // the operator's own edited version is the way to want it anyway.
        if status == Decision::Approved
            && let Err(e @ validate::ValidationError::Contradicts { .. }) =
                effect::check_kind(p.tool, &effect)
        {
            return Err(ApplyError::Other(format!(
                "{e}; to apply it anyway, approve it as your own edited file"
            )));
        }
        match payload {
            Payload::Routes(cfg) if !stamp.is_empty() => {
                // What the approval adds or changes ends with the grant; the text is
                // written anew (the operator's comments give way to the stamp).
                let live = if before.trim().is_empty() {
                    policy::EgressConfig::default()
                } else {
                    validate::parse_routes(&before).map_err(|e| {
                        ApplyError::Other(format!("the live routes do not parse: {e}"))
                    })?
                };
                let mut cfg = cfg;
                stamp.apply_to_new_routes(&live, &mut cfg);
                let text = serde_saphyr::to_string(&cfg)
                    .map_err(|e| ApplyError::Other(format!("cannot write the routes: {e}")))?;
                self.applier.apply_routes(bottle, &cfg, &text).await?;
                Ok((Some(before), Some(text), effect))
            }
            Payload::Routes(cfg) => {
                // For the bottle: a change to a route whose grant still runs is made in
                // what it goes back to as well, so it outlasts the grant.
                let mut carried = cfg.clone();
                if !before.trim().is_empty()
                    && let Ok(live) = validate::parse_routes(&before)
                {
                    proposals::grant::carry_to_after_grant(&live, &mut carried)
                        .map_err(|e| ApplyError::Other(e.to_string()))?;
                }
                if carried == cfg {
                    self.applier.apply_routes(bottle, &cfg, file).await?;
                    return Ok((Some(before), Some(file.to_owned()), effect));
                }
                let text = serde_saphyr::to_string(&carried)
                    .map_err(|e| ApplyError::Other(format!("cannot write the routes: {e}")))?;
                self.applier.apply_routes(bottle, &carried, &text).await?;
                Ok((Some(before), Some(text), effect))
            }
            Payload::Token(t) => {
                self.applier
                    .attach_token(bottle, &t.host, &t.token_name, stamp)
                    .await?;
                let after = self.applier.current_routes(bottle).await.ok();
                Ok((Some(before), after, effect))
            }
            Payload::Finding(fp) => {
                self.applier.allow_finding(bottle, &fp, stamp).await?;
                Ok((None, Some(fp), effect))
            }
            Payload::DlpAllow(r) => {
                let (cfg, text) = dlp_allowed_routes(&before, &r, stamp)?;
                self.applier.apply_routes(bottle, &cfg, &text).await?;
                Ok((Some(before), Some(text), effect))
            }
        }
    }

    async fn approve(&self, p: &Proposal, r: &Response) {
        let file = match (r.status, &r.final_file) {
            (Decision::Modified, Some(f)) => f.clone(),
            _ => p.proposed_file.clone(),
        };
        let stamp = Stamp::new(r.grant, &p.id, time::OffsetDateTime::now_utc());
        // A response written by other means than the dashboard or the CLI may ask for a
        // grant the kind cannot have: nothing is applied.
        let applied = match proposals::grant::check(p.tool, r.grant) {
            Ok(()) => self.apply(p, r.status, &file, &stamp).await,
            Err(e) => Err(ApplyError::Other(e.to_string())),
        };
        match applied {
            Ok((before, after, effect)) => {
                let scope = match &stamp.expires {
                    Some(at) => format!("{} until {at}", r.grant.scope()),
                    None => r.grant.scope(),
                };
                let outcome = Outcome {
                    id: p.id.clone(),
                    status: r.status,
                    final_file: Some(file),
                    notes: r.notes.clone(),
                    operator: r.operator.clone(),
                    decided_at: r.responded_at.clone(),
                    applied_at: Some(now_timestamp()),
                    grant: r.grant,
                    expires: stamp.expires.clone(),
                };
                // The audit line first, then the outcome: the outcome is written and synced
                // under a temporary name meanwhile, so the two cost one wait for the disk,
                // and it appears only after the line is on disk, before its directory is
                // synced (see "Durability" in the module doc).
                let staged = std::thread::scope(|s| {
                    let staged = s.spawn(|| self.queue.stage_outcome(&outcome));
                    self.audit(
                        p,
                        r,
                        Record {
                            decision: r.status.as_str(),
                            before,
                            after,
                            error: None,
                            effect: effect.lines(),
                            stage: Some("applied"),
                            grant: (!r.grant.is_bottle()).then_some(scope),
                        },
                    );
                    staged.join()
                });
                let written = match staged {
                    Ok(staged) => {
                        staged.and_then(|staged| self.queue.place_outcome_before_dir_sync(staged))
                    }
                    Err(_) => self.queue.write_outcome(&outcome),
                };
                // Wake the waiters as soon as the outcome is visible, then tidy the queue
                // directory, whose syncs make the outcome's name durable.
                match written {
                    Ok(()) => {
                        self.bump();
                        if let Err(e) = self.queue.move_handled(&p.id) {
                            tracing::error!(id = %p.id, error = %e, "cannot archive an applied proposal");
                        }
                    }
                    Err(e) => {
                        tracing::error!(id = %p.id, error = %e, "cannot record an applied proposal");
                    }
                }
            }
            Err(err) => {
                let msg = err.to_string();
                tracing::warn!(id = %p.id, error = %msg, "applying an approved proposal failed; it stays pending");
                self.audit(
                    p,
                    r,
                    Record {
                        decision: "apply-failed",
                        before: p.current_file.clone(),
                        after: Some(file),
                        error: Some(msg.clone()),
                        effect: Vec::new(),
                        stage: Some("not-applied"),
                        grant: None,
                    },
                );
                let failure = ApplyFailure {
                    id: p.id.clone(),
                    error: msg.clone(),
                    operator: r.operator.clone(),
                    at: now_timestamp(),
                };
                if let Err(e) = self.queue.record_failure(&failure) {
                    tracing::error!(id = %p.id, error = %e, "cannot record the failed apply");
                }
                let next = *self.generation.borrow() + 1;
                if let Ok(mut f) = self.failures.lock() {
                    f.insert(p.id.clone(), (next, msg));
                }
            }
        }
    }

    /// Takes the rules whose grant ended out of the live files and writes one audit line
    /// for each (stage `expired` or `used-up`), before the file changes; returns when to
    /// sweep again.
    ///
    /// The line comes first so that a crash between the two cannot lose it (the restarted
    /// engine finds the grant ended again and audits it then: at most one line more per
    /// crash); a sweep whose write failed and is tried again does not write it twice.
    pub async fn sweep(&self) -> Option<Duration> {
        let bottle = self.queue.identity();
        let audit = |ended: &[Ended], routes: Option<(&str, &str)>| {
            let now = now_timestamp();
            for ended in ended {
                let key = (ended.grant.clone(), ended.what.clone(), ended.why);
                let first = self
                    .ends_audited
                    .lock()
                    .map_or(true, |mut done| done.insert(key));
                if !first {
                    continue;
                }
                self.audit_end(bottle, ended, routes, &now);
            }
        };
        match self.applier.sweep(bottle, &audit).await {
            Ok(swept) => swept.next,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take ended grants out of the live files");
                Some(self.fallback_scan)
            }
        }
    }

    /// The audit line of one grant's end.
    fn audit_end(&self, bottle: &str, ended: &Ended, routes: Option<(&str, &str)>, now: &str) {
        let (before, after) = match (routes, ended.tool) {
            (Some((b, a)), Tool::EgressAllow | Tool::EgressTokenAllow | Tool::DlpAllow) => {
                (Some(b.to_owned()), Some(a.to_owned()))
            }
            _ => (None, None),
        };
        let entry = NewEntry {
            component: ended.tool.component().to_owned(),
            bottle: bottle.to_owned(),
            proposal_id: ended.grant.clone().unwrap_or_default(),
            tool: ended.tool.as_str().to_owned(),
            justification: String::new(),
            arrival_timestamp: String::new(),
            decided_at: now.to_owned(),
            decision: ended.why.to_owned(),
            operator: "bot-bottle".to_owned(),
            notes: None,
            before,
            after,
            error: None,
            effect: vec![format!(
                "{}: its grant {}",
                if ended.restored {
                    format!("puts {} back as it was before the grant", ended.what)
                } else {
                    format!("removes {}", ended.what)
                },
                match ended.why {
                    "used-up" => "is used up",
                    _ => "expired",
                }
            )],
            stage: Some(ended.why.to_owned()),
            grant: Some(format!("ended: {}", ended.why)),
        };
        if let Err(e) = audit::append(self.queue.home(), entry) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Waits up to `max` for proposal `id` to be handled.
    pub async fn wait(&self, id: &str, max: Duration) -> Result<WaitResult, QueueError> {
        let mut rx = self.generation.subscribe();
        let start = *rx.borrow_and_update();
        let deadline = tokio::time::Instant::now() + max;
        loop {
            if let Some(outcome) = self.queue.outcome(id)? {
                return Ok(WaitResult::Done(outcome));
            }
            if let Some(msg) = self.failures.lock().ok().and_then(|f| {
                f.get(id)
                    .filter(|(g, _)| *g > start)
                    .map(|(_, m)| m.clone())
            }) {
                return Ok(WaitResult::ApplyFailed(msg));
            }
            if self.queue.proposal(id)?.is_none() {
                return Ok(WaitResult::Unknown);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    let last = self.queue.failure(id).ok().flatten().map(|f| f.error);
                    return Ok(WaitResult::Pending(last));
                }
            }
        }
    }

    /// Watches the queue directory and handles responses until `shutdown` is cancelled.
    /// Handles whatever is already there first (responses written while no server ran).
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        if let Err(e) = self.queue.create() {
            tracing::error!(error = %e, "cannot create the queue directory");
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let watcher = {
            use notify::Watcher;
            let tx = tx.clone();
            // Only changes wake the engine: each pass opens the queue directory, and
            // reacting to opens would wake it again at once, forever.
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let change = match &res {
                    Ok(ev) => proposals::queue::is_queue_change(ev),
                    // An error from the watcher (lost events, say): look again.
                    Err(_) => true,
                };
                if change {
                    let _ = tx.try_send(());
                }
            })
            .and_then(|mut w| {
                w.watch(&self.queue.dir(), notify::RecursiveMode::NonRecursive)?;
                Ok(w)
            })
        };
        let fallback = match &watcher {
            Ok(_) => self.fallback_scan,
            Err(e) => {
                tracing::warn!(error = %e, "file watching unavailable; scanning the queue every 500 ms");
                Duration::from_millis(500)
            }
        };
        self.process_responses().await;
        let mut next_sweep = self.sweep().await;
        loop {
            // Ended grants are swept when they end (the sidecars refuse them already).
            let wait = next_sweep.map_or(fallback, |n| n.min(fallback));
            tokio::select! {
                // A stopped engine must not apply anything more, even with events queued.
                biased;
                () = shutdown.cancelled() => break,
                Some(()) = rx.recv() => {
                    self.file_wakeups.fetch_add(1, Ordering::Relaxed);
                }
                () = tokio::time::sleep(wait) => {}
            }
            self.process_responses().await;
            next_sweep = self.sweep().await;
        }
        drop(watcher);
    }
}

/// The tool whose proposals `tool` answers, for messages.
pub fn describe_effect(tool: Tool) -> &'static str {
    match tool {
        Tool::EgressAllow | Tool::EgressBlock => "the new routes are live: retry your request now",
        Tool::EgressTokenAllow => {
            "requests to that host now carry the secret: retry your request now"
        }
        Tool::GitleaksAllow => "that finding is allowed for this bottle: push again now",
        Tool::DlpAllow => "that dlp rule is allowed to that host: send the request again now",
    }
}

/// The live routes with an approved `dlp-allow` applied, and their text: the rule allowed
/// for good, or (approved once or for a while) a grant that ends as `stamp` says.
fn dlp_allowed_routes(
    before: &str,
    r: &proposals::dlp::DlpAllowRequest,
    stamp: &Stamp,
) -> Result<(policy::EgressConfig, String), ApplyError> {
    let live = effect::parse_live(before)
        .map_err(|e| ApplyError::Other(format!("the live routes do not parse: {e}")))?;
    let cfg = if stamp.is_empty() {
        proposals::dlp::allow_dlp_rule(&live, &r.host, &r.rule)
    } else {
        proposals::dlp::grant_dlp_rule(&live, &r.host, &r.rule, stamp)
    }
    .map_err(|e| ApplyError::Other(e.to_string()))?;
    let text = serde_saphyr::to_string(&cfg)
        .map_err(|e| ApplyError::Other(format!("cannot write the new routes: {e}")))?;
    Ok((cfg, text))
}
