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
//! After `start` ([`Recorded`]): `bot-bottle supervise` relays the cluster bottles of this
//! home whose `start` is gone (no process holds their run lock), reaching each in the
//! cluster its `start` recorded, with the operator token read from the bottle's Secret (the
//! laptop never stores it). A relay lock in the bottle's state directory keeps it to one
//! relay per bottle, and the count of audit lines copied so far (`relay.json`) is kept
//! there, so the relay that takes over copies no line twice.
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
pub const TOKEN_KEY: &str = backend::kubernetes::objects::OPERATOR_TOKEN_KEY;

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

/// The file in a bottle's state directory that keeps relays to one per bottle.
const RELAY_LOCK: &str = "relay.lock";
/// The file in a bottle's state directory with the audit lines copied so far.
const PROGRESS: &str = "relay.json";
/// How often [`Recorded`] looks for bottles to relay.
const SCAN: Duration = Duration::from_secs(2);

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
    /// Rounds completed so far (a command waits for whole rounds: [`Relays::settle`]).
    rounds: std::sync::atomic::AtomicU64,
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
    /// Starts relaying between the pod of `identity` and the laptop's `home` (`start`'s
    /// relay: it runs until told to stop or finish).
    pub fn start(
        backend: Arc<KubernetesBackend>,
        home: Home,
        identity: String,
        token: String,
    ) -> Relay {
        let lock = relay_lock(&home, &identity).ok().flatten();
        Relay::spawn(backend, home, identity, token, lock, false)
    }

    fn spawn(
        backend: Arc<KubernetesBackend>,
        home: Home,
        identity: String,
        token: String,
        lock: Option<std::fs::File>,
        until_pod_gone: bool,
    ) -> Relay {
        let control = Arc::new(Control::default());
        let told = control.clone();
        let thread = std::thread::Builder::new()
            .name(format!("relay-{identity}"))
            .spawn(move || {
                let _lock = lock;
                let mirror = Mirror::new(home, identity);
                run(&backend, mirror, &token, &told, until_pod_gone);
            })
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

    /// Rounds completed so far.
    fn rounds(&self) -> u64 {
        self.control.rounds.load(Ordering::SeqCst)
    }

    /// Whether the relay has ended by itself (its pod is gone).
    fn ended(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
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

/// The relays `bot-bottle supervise` runs: one for each cluster bottle of this home whose
/// `start` is gone and whose pod is still there (see the module doc). Stops on drop.
pub struct Recorded {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorded {
    /// Looks for such bottles every few seconds, reaching their clusters through `backend`
    /// (one with this home: the bottles' records name their context and namespace).
    pub fn start(home: Home, backend: Arc<KubernetesBackend>) -> Recorded {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cluster-relays".into())
            .spawn(move || {
                let mut relays = Relays::default();
                while !stopping.load(Ordering::SeqCst) {
                    relays.scan(&home, &backend);
                    let mut left = SCAN;
                    while !stopping.load(Ordering::SeqCst) && !left.is_zero() {
                        let step = left.min(Duration::from_millis(50));
                        std::thread::sleep(step);
                        left -= step;
                    }
                }
            })
            .ok();
        Recorded { stop, thread }
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The relays of [`Recorded`], by bottle.
#[derive(Default)]
pub struct Relays {
    running: BTreeMap<String, Relay>,
    /// Bottles whose pod is gone (an identity is never reused): not looked at again.
    gone: BTreeSet<String>,
}

impl Relays {
    /// One look: a relay for each cluster bottle whose `start` is gone and that no other
    /// relay serves; relays whose pod went are dropped.
    pub fn scan(&mut self, home: &Home, backend: &Arc<KubernetesBackend>) {
        let ended: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.ended())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            self.running.remove(&id);
            self.gone.insert(id);
        }
        let entries = std::fs::read_dir(home.root().join("state"))
            .into_iter()
            .flatten();
        for entry in entries.flatten() {
            let Some(identity) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if self.running.contains_key(&identity)
                || self.gone.contains(&identity)
                || !entry.path().join(backend::kubernetes::RECORD).is_file()
            {
                continue;
            }
            // Its `start` runs (and relays) still.
            match state::Identity::parse(&identity) {
                Ok(id) if !home.is_running(&id) => {}
                _ => continue,
            }
            let Ok(Some(lock)) = relay_lock(home, &identity) else {
                continue;
            };
            match backend.secret_value(&identity, TOKEN_KEY) {
                Ok(Some(token)) => match String::from_utf8(token) {
                    Ok(token) => {
                        let relay = Relay::spawn(
                            backend.clone(),
                            home.clone(),
                            identity.clone(),
                            token,
                            Some(lock),
                            true,
                        );
                        self.running.insert(identity, relay);
                    }
                    Err(_) => {
                        tracing::warn!(
                            identity,
                            "the bottle's operator token is not text; its proposals stay in its pod"
                        );
                        self.gone.insert(identity);
                    }
                },
                // No Secret: the pod is gone (or was started without supervise).
                Ok(None) => {
                    self.gone.insert(identity);
                }
                Err(e) => {
                    tracing::debug!(identity, error = %e, "cannot read the bottle's Secret; trying again");
                }
            }
        }
    }

    /// The bottles relayed now.
    pub fn relayed(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Waits until each relay has made a whole round that began after this call (so what
    /// the laptop's queue held at the call has reached the pod, and what the pod held then
    /// is on the laptop), or has ended; `within` at most. Returns the bottles whose relay
    /// did not get there (their pod did not answer in time).
    pub fn settle(&self, within: Duration) -> Vec<String> {
        // A round in flight may have read the laptop's queue before this call: two more.
        let wanted: BTreeMap<&String, u64> = self
            .running
            .iter()
            .map(|(id, relay)| (id, relay.rounds() + 2))
            .collect();
        let deadline = std::time::Instant::now() + within;
        loop {
            let behind: Vec<String> = self
                .running
                .iter()
                .filter(|(id, relay)| !relay.ended() && relay.rounds() < wanted[id])
                .map(|(id, _)| id.clone())
                .collect();
            if behind.is_empty() || std::time::Instant::now() >= deadline {
                return behind;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How long `bot-bottle proposals` waits for a cluster bottle's pod to answer a round.
pub const COMMAND_ROUND: Duration = Duration::from_secs(10);

/// `bot-bottle proposals`' relays: the cluster bottles of this home whose `start` is gone and
/// that no dashboard relays (see [`Relays::scan`]), each relayed until the returned value
/// is dropped, and a whole round made with each before this returns ([`Relays::settle`],
/// [`COMMAND_ROUND`] at most): the laptop's queue then holds their pods' proposals. A bottle
/// whose pod did not answer is said on stderr (the command's own terminal).
pub fn relay_now(home: &Home, backend: &Arc<KubernetesBackend>) -> Relays {
    let mut relays = Relays::default();
    relays.scan(home, backend);
    for identity in relays.settle(COMMAND_ROUND) {
        eprintln!(
            "bot-bottle: cluster bottle {identity}'s pod did not answer within {} s; its newest proposals may be missing here (`bot-bottle supervise` keeps relaying it)",
            COMMAND_ROUND.as_secs()
        );
    }
    relays
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

/// The bottle's relay lock, taken; `None` when another relay holds it.
fn relay_lock(home: &Home, identity: &str) -> std::io::Result<Option<std::fs::File>> {
    let path = home.state_dir(identity).join(RELAY_LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn run(
    backend: &KubernetesBackend,
    mut mirror: Mirror,
    token: &str,
    control: &Control,
    until_pod_gone: bool,
) {
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
        if until_pod_gone && matches!(backend.pod_exists(&mirror.identity), Ok(false)) {
            tracing::debug!(identity = %mirror.identity, "the bottle's pod is gone: its relay ends");
            return;
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
        control.rounds.fetch_add(1, Ordering::SeqCst);
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
    /// The mirror of `identity`, going on from the audit lines an earlier relay copied.
    fn new(home: Home, identity: String) -> Mirror {
        let audit_seen = std::fs::read(home.state_dir(&identity).join(PROGRESS))
            .ok()
            .and_then(|text| serde_json::from_slice(&text).ok())
            .unwrap_or_default();
        Mirror {
            home,
            identity,
            sent: BTreeSet::new(),
            audit_seen,
        }
    }

    /// Keeps the count of lines copied for the relay that takes over (a relay that fails
    /// to keep it says so: the next one would copy those lines again).
    fn keep_progress(&self) {
        let path = self.home.state_dir(&self.identity).join(PROGRESS);
        let kept = serde_json::to_vec(&self.audit_seen)
            .map_err(std::io::Error::other)
            .and_then(|json| state::atomic_write(&path, &json));
        if let Err(e) = kept {
            tracing::warn!(identity = %self.identity, path = %path.display(), error = %e, "cannot keep the relay's progress");
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
                        // Kept per line: a relay that dies between the two copies that one
                        // line again at most.
                        self.keep_progress();
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
    use test_support::eventually;

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

    /// Standard base64, as the API server carries a Secret's values.
    fn base64(bytes: &[u8]) -> String {
        const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn dlp_line(pod: &Home, n: u32) {
        let hit = proposals::dlp::Hit {
            time: "2026-12-06T09:00:00Z".into(),
            method: "POST".into(),
            host: "api.example.com".into(),
            path: Some(format!("/v1/{n}")),
            rule: "credential".into(),
            place: "body".into(),
            action: "blocked".into(),
        };
        proposals::audit::append(pod, hit.audit_entry(ID)).unwrap();
    }

    /// A cluster bottle whose `start` is gone, as the laptop sees it: its pod record, the pod
    /// (whose operator port is the bundle's real one over the pod's home, reached through the
    /// fake API server's port-forward) and the Secret holding its operator token.
    struct ClusterBottle {
        _dir: tempfile::TempDir,
        laptop: Home,
        pod: Home,
        name: String,
        token: String,
        rt: tokio::runtime::Runtime,
        /// Cancelled when the pod goes: the operator port stops.
        pod_ends: tokio_util::sync::CancellationToken,
        cluster: Arc<backend::kubernetes::fake::FakeCluster>,
        backend: Arc<KubernetesBackend>,
        _api: test_support::kube_api::FakeApiServer,
    }

    impl ClusterBottle {
        fn new() -> ClusterBottle {
            use backend::kubernetes::fake::{self, FakeCluster};
            use backend::kubernetes::{ClusterSettings, KubernetesConfig, objects};
            let dir = tempfile::tempdir().unwrap();
            let (laptop, pod) = (
                Home::new(dir.path().join("l")),
                Home::new(dir.path().join("p")),
            );
            let state_dir = laptop.state_dir(ID);
            std::fs::create_dir_all(&state_dir).unwrap();

            let name = objects::object_name(ID);
            let token = new_token();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            // The pod's operator port: the bundle's, over the pod's home.
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let operator_addr = listener.local_addr().unwrap();
            let port =
                bundle::operator::OperatorPort::new(pod.clone(), ID.into(), token.clone()).unwrap();
            let pod_ends = tokio_util::sync::CancellationToken::new();
            rt.spawn(bundle::operator::serve_tcp(
                listener,
                port,
                pod_ends.clone(),
            ));
            let api = rt.block_on(test_support::kube_api::FakeApiServer::start());
            api.serve_port(fake::NAMESPACE, &name, OPERATOR_PORT, operator_addr);
            let cluster = Arc::new(FakeCluster::new());
            {
                let _in = rt.enter();
                cluster.forward_through(Arc::new(
                    backend::kubernetes::client::KubeCluster::at_url(&api.url(), fake::NAMESPACE)
                        .unwrap(),
                ));
            }
            cluster.insert_pod(
                serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap(),
            );
            // The record names the pod launched (the relay reaches that one only).
            backend::kubernetes::PodRecord {
                pod_uid: cluster.pod(&name).unwrap().metadata.uid,
                ..Default::default()
            }
            .write(&state_dir)
            .unwrap();
            cluster.insert_secret(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "data": {TOKEN_KEY: base64(token.as_bytes())},
                }))
                .unwrap(),
            );
            let backend = Arc::new(
                KubernetesBackend::with_cluster(
                    KubernetesConfig::new(ClusterSettings::default(), String::new()),
                    cluster.clone(),
                )
                .unwrap()
                .with_home(laptop.root().to_path_buf()),
            );
            ClusterBottle {
                _dir: dir,
                laptop,
                pod,
                name,
                token,
                rt,
                pod_ends,
                cluster,
                backend,
                _api: api,
            }
        }
    }

    /// A cluster bottle whose `start` is gone: the dashboard's relays take it over (the
    /// token read from the bottle's Secret, through the real kube-rs port-forward over the
    /// fake API server, to the real operator port), go on from the lines `start`'s relay
    /// copied (none twice), stay one per bottle, leave alone a bottle whose `start` runs,
    /// and end when its pod goes.
    #[test]
    fn a_bottle_whose_start_is_gone_is_relayed_by_the_dashboard_once() {
        use backend::kubernetes::Cluster;
        let ClusterBottle {
            _dir,
            laptop,
            pod,
            name,
            token,
            rt,
            pod_ends,
            cluster,
            backend,
            _api,
        } = ClusterBottle::new();
        let log = laptop.audit_file("egress", ID);
        let copied = || proposals::audit::read_file(&log).unwrap_or_default();

        // `start`'s relay copies the first line, then `start` is gone.
        dlp_line(&pod, 1);
        let run_lock = laptop
            .lock_bottle(&state::Identity::parse(ID).unwrap())
            .unwrap();
        let mut first = Relay::start(backend.clone(), laptop.clone(), ID.into(), token.clone());
        eventually("start's relay copying the first line", || {
            (copied().len() == 1).then_some(())
        });
        // While `start` runs, the dashboard leaves its bottle to it.
        let mut relays = Relays::default();
        relays.scan(&laptop, &backend);
        assert_eq!(relays.relayed(), Vec::<String>::new());
        first.stop();
        drop(first);
        drop(run_lock);

        // `start` is gone: the dashboard relays the bottle; a second dashboard does not.
        relays.scan(&laptop, &backend);
        assert_eq!(relays.relayed(), vec![ID.to_owned()]);
        let mut other = Relays::default();
        other.scan(&laptop, &backend);
        assert_eq!(other.relayed(), Vec::<String>::new());

        // The agent proposes in the pod; a line is audited there.
        let p = pod_proposal(&pod, "routes:\n- host: a.example\n");
        dlp_line(&pod, 2);
        let id = eventually("the proposal on the laptop", || {
            let (pending, _) = proposals::queue::pending_all(&laptop, Some(ID)).unwrap();
            pending.first().map(|e| e.proposal.id.clone())
        });
        assert_eq!(id, p.id);
        let lines = eventually("the second line on the laptop", || {
            let lines = copied();
            (lines.len() >= 2).then_some(lines)
        });
        // The first line is not copied again.
        let effects: Vec<String> = lines.iter().map(|l| l.effect.join(" ")).collect();
        assert_eq!(lines.len(), 2, "{effects:?}");
        assert!(
            effects[0].contains("/v1/1") && effects[1].contains("/v1/2"),
            "{effects:?}"
        );
        assert_eq!(proposals::audit::verify(&laptop).unwrap(), (vec![], 1));
        // The operator answers on the laptop: the answer reaches the pod's queue.
        proposals::queue::answer(&laptop, &id, Decision::Approved, None, None, "op").unwrap();
        let pod_queue = Queue::new(pod.clone(), ID).unwrap();
        eventually("the answer in the pod", || {
            (pod_queue.status(&id).unwrap() == Some(Status::Answered)).then_some(())
        });

        // The pod goes (its connections with it): its relay ends, and the bottle is not
        // looked at again.
        rt.block_on(cluster.delete_pod(&name, Duration::ZERO, None))
            .unwrap();
        pod_ends.cancel();
        eventually("the relay's end", || {
            relays.scan(&laptop, &backend);
            relays.relayed().is_empty().then_some(())
        });
        assert!(relays.gone.contains(ID));
        drop(other);
        rt.shutdown_background();
    }

    /// A pod deleted and made again under the bottle's name (another uid) is not the
    /// bottle's: the dashboard's relay opens no port-forward to it (nothing of the
    /// operator's, not the token, reaches it), takes none of its proposals, and ends as for
    /// a pod that is gone.
    #[test]
    fn a_pod_made_again_under_the_bottles_name_is_not_relayed() {
        use backend::kubernetes::Cluster;
        let ClusterBottle {
            _dir,
            laptop,
            pod,
            name,
            rt,
            pod_ends,
            cluster,
            backend,
            _api,
            ..
        } = ClusterBottle::new();
        rt.block_on(cluster.delete_pod(&name, Duration::ZERO, None))
            .unwrap();
        cluster.insert_pod(
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name, "uid": "uid-made-again"}}),
            )
            .unwrap(),
        );
        pod_proposal(&pod, "routes:\n- host: a.example\n");
        let mut relays = Relays::default();
        relays.scan(&laptop, &backend);
        assert_eq!(relays.relayed(), vec![ID.to_owned()]);
        eventually("the relay's end", || {
            relays.scan(&laptop, &backend);
            relays.relayed().is_empty().then_some(())
        });
        assert!(relays.gone.contains(ID));
        assert!(
            _api.calls().iter().all(|c| !c.contains("portforward")),
            "{:?}",
            _api.calls()
        );
        assert!(!cluster.calls().iter().any(|c| c.starts_with("portforward")));
        let (pending, _) = proposals::queue::pending_all(&laptop, Some(ID)).unwrap();
        assert!(pending.is_empty());
        pod_ends.cancel();
        rt.shutdown_background();
    }

    /// `bot-bottle proposals` with no `start` and no dashboard running: [`relay_now`] returns
    /// with the pod's proposal already in the laptop's queue (no waiting after it), and once
    /// the operator answered, [`Relays::settle`] returns with the answer in the pod's queue.
    #[test]
    fn a_command_relays_a_cluster_bottle_whose_start_is_gone_for_its_own_time() {
        let ClusterBottle {
            _dir,
            laptop,
            pod,
            rt,
            pod_ends,
            backend,
            _api,
            ..
        } = ClusterBottle::new();
        let p = pod_proposal(&pod, "routes:\n- host: a.example\n");

        // `proposals list`: the pod's proposal is on the laptop when `relay_now` returns.
        let relays = relay_now(&laptop, &backend);
        assert_eq!(relays.relayed(), vec![ID.to_owned()]);
        let (listed, _) = proposals::queue::pending_all(&laptop, Some(ID)).unwrap();
        let ids: Vec<&str> = listed.iter().map(|e| e.proposal.id.as_str()).collect();
        assert_eq!(ids, vec![p.id.as_str()]);
        // A second command meanwhile leaves the bottle to the first (one relay per bottle).
        assert_eq!(relay_now(&laptop, &backend).relayed(), Vec::<String>::new());

        // `proposals approve`: answered on the laptop, in the pod once `settle` returns.
        proposals::queue::answer(&laptop, &p.id, Decision::Approved, None, None, "op").unwrap();
        assert_eq!(relays.settle(COMMAND_ROUND), Vec::<String>::new());
        let pod_queue = Queue::new(pod.clone(), ID).unwrap();
        assert_eq!(pod_queue.status(&p.id).unwrap(), Some(Status::Answered));
        drop(relays);
        pod_ends.cancel();
        rt.shutdown_background();
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
