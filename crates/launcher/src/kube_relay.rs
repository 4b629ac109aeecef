//! The relay that puts a cluster bottle's proposals on the operator's dashboard.
//!
//! supervise writes its queue and audit log under the pod's home, which the laptop cannot
//! read. While `start` runs, this relay reaches the bundle's operator port
//! ([`backend::kubernetes::OPERATOR_PORT`], refused to the agent's uid by the pod's packet
//! filter) through the API server's port-forward, presents the bottle's operator token
//! (made here, shipped in the bottle's Secret, kept in memory only) and, a few times a
//! second, exchanges one round with the bundle ([`bundle::operator`]):
//!
//! * the pod's pending proposals are copied into the laptop's `queue/<identity>/`, where
//!   `bot-bottle supervise` and `bot-bottle proposals` see them next to local ones;
//! * the operator's responses (written and audited on the laptop as for any bottle) go to
//!   the pod, whose supervise applies them; an apply that failed there sets the laptop's
//!   response aside with the error, so the operator can answer again;
//! * the outcomes of handled proposals move them to the laptop's `processed/`;
//! * the pod's audit lines (applied, not applied, expired, DLP hits) are appended to the
//!   laptop's audit log, each extending the laptop's hash chain (`bot-bottle audit verify`).
//!
//! Fail closed: a bundle that refuses the token, or answers for another bottle, gets
//! nothing; what the pod sends is checked (ids, the bottle, the component) before it
//! becomes a file on the laptop. A lost connection is retried until the bottle ends.
//!
//! The end ([`Relay::finish`]): once the agent has ended and before the pod is deleted,
//! the relay's rounds say `finish`; the bundle stops its sidecars, writes out what they
//! queued (the DLP hits of the agent's last requests) and answers `ended`. Rounds go on
//! until an ended reply brings no new audit line: the laptop then has the pod's whole log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backend::kubernetes::{KubernetesBackend, OPERATOR_PORT};
use bundle::operator::{Hello, SyncReply, SyncRequest, Welcome, read_line, write_line};
use proposals::audit::{self, NewEntry};
use proposals::{Queue, Status};
use state::Home;
use tokio::io::BufReader;

/// The Secret key of the operator token.
pub const TOKEN_KEY: &str = "operator-token";

/// How often the relay exchanges a round with the bundle.
const ROUND: Duration = Duration::from_millis(250);
/// How long it waits before connecting again after a failure.
const RETRY: Duration = Duration::from_secs(1);
/// How a refusal by the bundle (not a lost connection) starts.
const REFUSED: &str = "the bundle refused the relay";
/// How long an answer of the bundle may take before the connection is given up.
const ANSWER: Duration = Duration::from_secs(10);
/// How long the last rounds may take: the bundle's sidecars stop within 10 s and its
/// queued lines are written within 10 s more ([`bundle::operator::FINISH_WAIT`]).
pub const FINISH_WITHIN: Duration = Duration::from_secs(30);
/// How many failed connections the last rounds try before giving up (a bundle that is
/// gone, or never answered, does not hold the pod's removal for [`FINISH_WITHIN`]).
const FINISH_TRIES: u32 = 5;

/// A fresh operator token: 32 random bytes, hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The relay of one bottle, running on a thread of its own until [`Relay::stop`] (or drop)
/// or [`Relay::finish`].
pub struct Relay {
    control: Arc<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the relay's thread is told.
#[derive(Default)]
struct Control {
    /// Stop now, after the round in flight.
    stop: AtomicBool,
    /// Make the last rounds, until this time at most.
    finish_by: std::sync::Mutex<Option<std::time::Instant>>,
    /// The last rounds were made: the laptop has the pod's whole audit log.
    finished: AtomicBool,
}

impl Control {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn finish_by(&self) -> Option<std::time::Instant> {
        *self.finish_by.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Relay {
    /// Starts relaying between the pod of `identity` and the laptop's `home`.
    pub fn start(
        backend: Arc<KubernetesBackend>,
        home: Home,
        identity: String,
        token: String,
    ) -> Relay {
        let control = Arc::new(Control::default());
        let told = control.clone();
        let thread = std::thread::Builder::new()
            .name(format!("relay-{identity}"))
            .spawn(move || run(&backend, Mirror::new(home, identity), &token, &told))
            .ok();
        if thread.is_none() {
            tracing::error!(
                "cannot start the relay thread; the bottle's proposals stay in its pod"
            );
        }
        Relay { control, thread }
    }

    /// The last rounds, once the agent has ended and before the pod is deleted (see the
    /// module doc); waits for them `within` at most. `Err` says why the pod's last audit
    /// lines may be missing on the laptop.
    pub fn finish(&mut self, within: Duration) -> Result<(), String> {
        *self
            .control
            .finish_by
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now() + within);
        let Some(thread) = self.thread.take() else {
            return Err("the relay was not running".into());
        };
        let _ = thread.join();
        if self.control.finished.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(format!(
                "the bundle did not end its audit log within {} s",
                within.as_secs()
            ))
        }
    }

    /// Stops the relay (after the round in flight) and waits for it.
    pub fn stop(&mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps `d` in steps, returning early once told to stop or finish.
fn pause(d: Duration, control: &Control) {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !control.stopped() && control.finish_by().is_none() && !left.is_zero() {
        let now = left.min(step);
        std::thread::sleep(now);
        left -= now;
    }
}

fn run(backend: &KubernetesBackend, mut mirror: Mirror, token: &str, control: &Control) {
    let mut last_error = String::new();
    let mut finish_tries = 0;
    while !control.stopped() {
        if let Some(by) = control.finish_by() {
            finish_tries += 1;
            if std::time::Instant::now() >= by || finish_tries > FINISH_TRIES {
                tracing::warn!(identity = %mirror.identity, error = %last_error, "the pod's last audit lines may be missing here: the relay's last round did not complete");
                return;
            }
        }
        let result = match backend.port_forward(&mirror.identity, OPERATOR_PORT) {
            Ok((runtime, stream)) => runtime.block_on(session(stream, token, &mut mirror, control)),
            Err(e) => Err(format!("cannot reach the bundle's operator port: {e}")),
        };
        match result {
            Ok(()) => return,
            // Said once per kind of failure, and only at debug level when it is a lost or
            // not yet possible connection (retried): `start` logs to the terminal the
            // agent owns. A refusal is a misconfiguration the operator must see.
            Err(e) if e != last_error => {
                if e.starts_with(REFUSED) {
                    tracing::warn!(identity = %mirror.identity, error = %e, "relay of the bottle's proposals");
                } else {
                    tracing::debug!(identity = %mirror.identity, error = %e, "relay of the bottle's proposals");
                }
                last_error = e;
            }
            Err(_) => {}
        }
        if control.finish_by().is_some() {
            // Retried sooner: the pod is about to go.
            std::thread::sleep(Duration::from_millis(200));
        } else {
            pause(RETRY, control);
        }
    }
}

/// One connection: the token, then rounds until told to stop (`Ok`), the last round
/// (`Ok`, [`Control::finished`] set) or a failure (`Err`).
async fn session(
    stream: backend::kubernetes::PortStream,
    token: &str,
    mirror: &mut Mirror,
    control: &Control,
) -> Result<(), String> {
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);
    let io = |e: std::io::Error| format!("the operator port's connection failed: {e}");
    write_line(
        &mut write,
        &Hello {
            token: token.to_owned(),
        },
    )
    .await
    .map_err(io)?;
    let line = answer(&mut read, ANSWER)
        .await?
        .ok_or("the operator port closed the connection before answering")?;
    let welcome: Welcome = serde_json::from_slice(&line)
        .map_err(|e| format!("the operator port answered something else: {e}"))?;
    if let Some(error) = welcome.error {
        return Err(format!("{REFUSED}: {error}"));
    }
    if welcome.identity.as_deref() != Some(mirror.identity.as_str()) {
        return Err(format!(
            "{REFUSED}: the operator port belongs to bottle {:?}, not {}; nothing was relayed",
            welcome.identity, mirror.identity
        ));
    }
    loop {
        if control.stopped() {
            return Ok(());
        }
        let finish_by = control.finish_by();
        let mut request = mirror.request();
        request.finish = finish_by.is_some();
        write_line(&mut write, &request).await.map_err(io)?;
        // The last round waits for the bundle to stop its sidecars.
        let within = finish_by.map_or(ANSWER, |by| {
            by.saturating_duration_since(std::time::Instant::now())
        });
        let line = answer(&mut read, within)
            .await?
            .ok_or("the operator port closed the connection")?;
        let reply: SyncReply = serde_json::from_slice(&line)
            .map_err(|e| format!("the operator port answered something else: {e}"))?;
        // Nothing new after an ended reply that brought no audit line: the bundle has
        // written its last one, and the laptop has it.
        let ended = reply.ended;
        let last = request.finish && ended && reply.audit.values().all(Vec::is_empty);
        mirror.apply(&request, reply);
        if last {
            control.finished.store(true, Ordering::SeqCst);
            return Ok(());
        }
        if finish_by.is_none() {
            tokio::time::sleep(ROUND).await;
        } else if !ended {
            // The bundle did not stop its sidecars in time: ask again, not in a spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The bundle's next line, within `within`.
async fn answer<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
    within: Duration,
) -> Result<Option<Vec<u8>>, String> {
    match tokio::time::timeout(within, read_line(read)).await {
        Ok(Ok(line)) => Ok(line),
        Ok(Err(e)) => Err(format!("the operator port's connection failed: {e}")),
        Err(_) => Err(format!(
            "the operator port did not answer within {} s",
            within.as_secs()
        )),
    }
}

/// The laptop's copy of one pod's queue and audit log.
struct Mirror {
    home: Home,
    identity: String,
    /// Responses sent to the pod, by (proposal id, when answered): each is sent once.
    sent: BTreeSet<(String, String)>,
    /// Audit lines of the pod copied so far, by component.
    audit_seen: BTreeMap<String, u64>,
}

impl Mirror {
    fn new(home: Home, identity: String) -> Mirror {
        Mirror {
            home,
            identity,
            sent: BTreeSet::new(),
            audit_seen: BTreeMap::new(),
        }
    }

    fn queue(&self) -> Option<Queue> {
        Queue::new(self.home.clone(), &self.identity).ok()
    }

    /// What to send this round: the responses not sent yet, the proposals the laptop holds.
    fn request(&self) -> SyncRequest {
        let mut request = SyncRequest {
            audit_seen: self.audit_seen.clone(),
            ..SyncRequest::default()
        };
        let Some(queue) = self.queue() else {
            return request;
        };
        if let Ok(ids) = queue.answered_ids() {
            for id in ids {
                if let Ok(Some(response)) = queue.response(&id)
                    && !self
                        .sent
                        .contains(&(id.clone(), response.responded_at.clone()))
                {
                    request.responses.push(response);
                }
            }
        }
        if let Ok((entries, _)) = queue.pending() {
            request.watching = entries.into_iter().map(|e| e.proposal.id).collect();
        }
        request
    }

    /// Takes in the bundle's answer.
    fn apply(&mut self, request: &SyncRequest, reply: SyncReply) {
        for r in &request.responses {
            self.sent.insert((r.id.clone(), r.responded_at.clone()));
        }
        for refused in &reply.refused {
            tracing::debug!(identity = %self.identity, refused, "the bundle did not take a response");
        }
        let Some(queue) = self.queue() else {
            return;
        };
        for pending in reply.pending {
            let p = pending.proposal;
            if state::check_proposal_id(&p.id).is_err() || p.bottle_slug != self.identity {
                tracing::warn!(identity = %self.identity, id = %p.id, "skipping a proposal that is not this bottle's");
                continue;
            }
            if matches!(queue.outcome(&p.id), Ok(Some(_))) {
                continue;
            }
            if !matches!(queue.proposal(&p.id), Ok(Some(_))) {
                let path = queue.dir().join(format!("{}.json", p.id));
                let written = queue.create().map_err(|e| e.to_string()).and_then(|()| {
                    let mut json = serde_json::to_vec_pretty(&p).map_err(|e| e.to_string())?;
                    json.push(b'\n');
                    match state::atomic_write_new(&path, &json, proposals::paths::FILE_MODE) {
                        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                            Err(format!("cannot write {}: {e}", path.display()))
                        }
                        _ => Ok(()),
                    }
                });
                if let Err(e) = written {
                    tracing::warn!(identity = %self.identity, error = %e, "cannot copy a proposal");
                }
            }
            // Applying the operator's approval failed in the pod: the laptop's response
            // (the one sent) is set aside with the error, and the proposal is pending again.
            if pending.status == Status::ApplyFailed
                && let Some(failure) = pending.failure
                && failure.id == p.id
                && let Ok(Some(response)) = queue.response(&p.id)
                && self
                    .sent
                    .contains(&(p.id.clone(), response.responded_at.clone()))
                && let Err(e) = queue.record_failure(&failure)
            {
                tracing::warn!(identity = %self.identity, error = %e, "cannot record a failed apply");
            }
        }
        for outcome in reply.outcomes {
            if state::check_proposal_id(&outcome.id).is_err()
                || !matches!(queue.proposal(&outcome.id), Ok(Some(_)))
            {
                continue;
            }
            if let Err(e) = queue.archive(&outcome) {
                tracing::warn!(identity = %self.identity, error = %e, "cannot archive a handled proposal");
            }
        }
        for (component, entries) in reply.audit {
            if !audit::COMPONENTS.contains(&component.as_str()) {
                continue;
            }
            for e in entries {
                let seen = self.audit_seen.get(&component).copied().unwrap_or(0);
                if e.seq <= seen || e.component != component {
                    continue;
                }
                let seq = e.seq;
                let appended = audit::append(
                    &self.home,
                    NewEntry {
                        component: component.clone(),
                        // The pod's line is this bottle's, whatever it says.
                        bottle: self.identity.clone(),
                        proposal_id: e.proposal_id,
                        tool: e.tool,
                        justification: e.justification,
                        arrival_timestamp: e.arrival_timestamp,
                        decided_at: e.decided_at,
                        decision: e.decision,
                        operator: e.operator,
                        notes: e.notes,
                        before: e.before,
                        after: e.after,
                        error: e.error,
                        effect: e.effect,
                        stage: e.stage,
                        grant: e.grant,
                    },
                );
                match appended {
                    Ok(_) => {
                        self.audit_seen.insert(component.clone(), seq);
                    }
                    Err(e) => {
                        // Retried next round from the same line: none is lost or doubled.
                        tracing::warn!(identity = %self.identity, error = %e, "cannot copy an audit line");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bundle::operator::Pending;
    use pretty_assertions::assert_eq;
    use proposals::proposal::ApplyFailure;
    use proposals::{Decision, NewProposal, Proposal, Tool};

    const ID: &str = "demo-1a2b3";

    /// A proposal as the pod's supervise made it (in a queue of its own).
    fn pod_proposal(pod: &Home, file: &str) -> Proposal {
        Queue::new(pod.clone(), ID)
            .unwrap()
            .submit(NewProposal {
                tool: Tool::EgressAllow,
                proposed_file: file.into(),
                justification: "docs".into(),
                current_file: Some("routes: []\n".into()),
                args: None,
            })
            .unwrap()
            .0
    }

    fn pending(p: &Proposal, status: Status, failure: Option<ApplyFailure>) -> Pending {
        Pending {
            proposal: p.clone(),
            status,
            failure,
        }
    }

    #[test]
    fn what_the_pod_sends_is_checked_before_it_becomes_a_file_on_the_laptop() {
        let dir = tempfile::tempdir().unwrap();
        let (laptop, pod) = (
            Home::new(dir.path().join("l")),
            Home::new(dir.path().join("p")),
        );
        let mut mirror = Mirror::new(laptop.clone(), ID.into());
        let ok = pod_proposal(&pod, "routes:\n- host: a.example\n");
        let mut other = pod_proposal(&pod, "routes:\n- host: b.example\n");
        other.bottle_slug = "other-1a2b3".into();
        let mut bad_id = pod_proposal(&pod, "routes:\n- host: c.example\n");
        bad_id.id = "../../state/x".into();
        let line = |seq: u64, component: &str| {
            let mut e = proposals::audit::append(
                &pod,
                NewEntry {
                    component: "egress".into(),
                    bottle: ID.into(),
                    proposal_id: ok.id.clone(),
                    tool: "egress-allow".into(),
                    justification: "docs".into(),
                    arrival_timestamp: ok.arrival_timestamp.clone(),
                    decided_at: ok.arrival_timestamp.clone(),
                    decision: "approved".into(),
                    operator: "op".into(),
                    notes: None,
                    before: None,
                    after: None,
                    error: None,
                    effect: vec![],
                    stage: Some("applied".into()),
                    grant: None,
                },
            )
            .unwrap();
            e.seq = seq;
            e.component = component.into();
            e.bottle = "someone-else-00000".into();
            e
        };
        let reply = SyncReply {
            pending: vec![
                pending(&ok, Status::Pending, None),
                pending(&other, Status::Pending, None),
                pending(&bad_id, Status::Pending, None),
            ],
            audit: BTreeMap::from([
                (
                    "egress".to_owned(),
                    vec![line(1, "egress"), line(1, "egress")],
                ),
                ("shell".to_owned(), vec![line(1, "shell")]),
            ]),
            ..SyncReply::default()
        };
        mirror.apply(&SyncRequest::default(), reply);
        let (entries, problems) = proposals::queue::pending_all(&laptop, None).unwrap();
        assert_eq!(problems, vec![]);
        let ids: Vec<&str> = entries.iter().map(|e| e.proposal.id.as_str()).collect();
        assert_eq!(ids, vec![ok.id.as_str()]);
        // One line copied (the repeat is not), under this bottle, in a chain that verifies;
        // no log for a component that does not exist.
        let copied = proposals::audit::read_file(&laptop.audit_file("egress", ID)).unwrap();
        assert_eq!(copied.len(), 1);
        assert_eq!(copied[0].bottle, ID);
        assert_eq!(proposals::audit::verify(&laptop).unwrap(), (vec![], 1));
        assert!(!laptop.audit_file("shell", ID).exists());
        assert_eq!(
            mirror.audit_seen,
            BTreeMap::from([("egress".to_owned(), 1)])
        );
        assert_eq!(mirror.request().audit_seen, mirror.audit_seen);
    }

    #[test]
    fn a_response_is_sent_once_and_a_failed_apply_in_the_pod_makes_it_pending_again() {
        let dir = tempfile::tempdir().unwrap();
        let (laptop, pod) = (
            Home::new(dir.path().join("l")),
            Home::new(dir.path().join("p")),
        );
        let mut mirror = Mirror::new(laptop.clone(), ID.into());
        let p = pod_proposal(&pod, "routes:\n- host: a.example\n");
        mirror.apply(
            &SyncRequest::default(),
            SyncReply {
                pending: vec![pending(&p, Status::Pending, None)],
                ..SyncReply::default()
            },
        );
        proposals::queue::answer(&laptop, &p.id, Decision::Approved, None, None, "op").unwrap();
        let request = mirror.request();
        assert_eq!(request.responses.len(), 1);
        assert_eq!(request.watching, vec![p.id.clone()]);
        mirror.apply(
            &request,
            SyncReply {
                pending: vec![pending(&p, Status::Answered, None)],
                ..SyncReply::default()
            },
        );
        // Sent once.
        assert_eq!(mirror.request().responses, vec![]);
        let failure = ApplyFailure {
            id: p.id.clone(),
            error: "disk full".into(),
            operator: "op".into(),
            at: "2026-12-06T06:00:00Z".into(),
        };
        mirror.apply(
            &mirror.request(),
            SyncReply {
                pending: vec![pending(&p, Status::ApplyFailed, Some(failure.clone()))],
                ..SyncReply::default()
            },
        );
        let laptop_queue = Queue::new(laptop.clone(), ID).unwrap();
        assert_eq!(
            laptop_queue.status(&p.id).unwrap(),
            Some(Status::ApplyFailed)
        );
        assert_eq!(laptop_queue.failure(&p.id).unwrap(), Some(failure));
        // The operator answers again: that response is new, so it is sent.
        proposals::queue::answer(&laptop, &p.id, Decision::Rejected, None, None, "op").unwrap();
        assert_eq!(mirror.request().responses.len(), 1);
    }
}
