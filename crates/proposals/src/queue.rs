//! The proposal queue: plain files under `queue/<identity>/`.
//!
//! * `<id>.json`: a proposal waiting for the operator (written once, atomically);
//! * `<id>.response.json`: the operator's answer (written atomically, never replaced: two
//!   operators racing, one wins);
//! * `<id>.apply-error.json`: the last approval of it failed to apply; still pending;
//! * `processed/<id>.json`, `processed/<id>.response.json`, `processed/<id>.outcome.json`:
//!   handled proposals.
//!
//! Only the bottle's supervise server creates proposals and moves them to `processed/`;
//! operators (dashboard, CLI) only write responses. A file that does not parse is reported
//! and skipped, never fatal.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use state::Staged;

use crate::grant::Grant;
use crate::paths::FILE_MODE;
use crate::paths::{self, Home, NameError};
use crate::proposal::{
    ApplyFailure, Decision, Outcome, Proposal, Response, Status, Tool, new_id, now_timestamp,
};
use crate::validate::{self, ValidationError};

/// A queue operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Reading or writing a queue file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A queue file does not parse.
    #[error("{path} is corrupt ({reason}); move it away or delete it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// A bad identity or id.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The proposal's kind cannot be approved that way (nothing was sent).
    #[error("{0}; nothing was sent")]
    Grant(#[from] crate::grant::Unsupported),
    /// No pending proposal with this id.
    #[error("no pending proposal {0}; `bot-bottle proposals list` shows the pending ones")]
    NotPending(String),
    /// The proposal was answered already.
    #[error(
        "proposal {0} was answered already; wait for it to be applied or look at `bot-bottle proposals show {0}`"
    )]
    AlreadyAnswered(String),
    /// The bottle has too many proposals waiting already.
    #[error(
        "{0} proposals are already waiting for the operator; wait for their decisions (proposal-status) before sending more"
    )]
    TooMany(usize),
    /// The decision could not be written to the audit log, so it was not sent.
    #[error(
        "cannot record the decision on proposal {id} in the audit log, so it was not sent: {source}"
    )]
    Audit {
        /// The proposal.
        id: String,
        /// Why.
        source: crate::audit::AuditError,
    },
    /// `modified` without a file, or a file that does not validate.
    #[error("the approved file for proposal {id} is not valid: {source}")]
    InvalidFile {
        /// The proposal.
        id: String,
        /// Why.
        source: ValidationError,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> QueueError + 'a {
    move |source| QueueError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Reads and parses a JSON file; `Ok(None)` when it does not exist.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, QueueError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| QueueError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail; fall back to an empty object anyway.
    let mut v = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    v
}

/// Most proposals one bottle may have waiting at once.
pub const MAX_PENDING: usize = 64;

/// A file in the queue that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped {}: {}", self.path.display(), self.reason)
    }
}

/// A proposal with where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The proposal.
    pub proposal: Proposal,
    /// Its status.
    pub status: Status,
    /// The last failed apply, if any.
    pub failure: Option<ApplyFailure>,
    /// The outcome once handled.
    pub outcome: Option<Outcome>,
    /// Whether the bottle's state directory still exists.
    pub bottle_present: bool,
}

/// What the agent asks for, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProposal {
    /// Which tool.
    pub tool: Tool,
    /// The proposed file.
    pub proposed_file: String,
    /// Why.
    pub justification: String,
    /// The file being replaced, as it is now.
    pub current_file: Option<String>,
    /// Structured arguments for display.
    pub args: Option<serde_json::Value>,
}

/// One bottle's queue.
#[derive(Debug, Clone)]
pub struct Queue {
    home: Home,
    identity: String,
}

impl Queue {
    /// The queue of bottle `identity`.
    pub fn new(home: Home, identity: &str) -> Result<Self, QueueError> {
        paths::check_identity(identity)?;
        Ok(Self {
            home,
            identity: identity.to_owned(),
        })
    }

    /// The bottle identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The home this queue lives in.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// `queue/<identity>/`.
    pub fn dir(&self) -> PathBuf {
        self.home.queue_dir(&self.identity)
    }

    fn processed(&self) -> PathBuf {
        self.home.processed_dir(&self.identity)
    }

    fn proposal_path(&self, id: &str) -> PathBuf {
        self.dir().join(format!("{id}.json"))
    }

    fn response_path(&self, id: &str) -> PathBuf {
        self.dir().join(format!("{id}.response.json"))
    }

    fn failure_path(&self, id: &str) -> PathBuf {
        self.dir().join(format!("{id}.apply-error.json"))
    }

    fn outcome_path(&self, id: &str) -> PathBuf {
        self.processed().join(format!("{id}.outcome.json"))
    }

    /// Creates the queue directories.
    pub fn create(&self) -> Result<(), QueueError> {
        let p = self.processed();
        fs::create_dir_all(&p).map_err(io_err("create", &p))
    }

    /// Ids of files in the queue directory ending in `suffix` (`.json` = proposals).
    fn ids_with(&self, suffix: &str) -> Result<Vec<String>, QueueError> {
        let dir = self.dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &dir)(e)),
        };
        let mut ids = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io_err("read", &dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(suffix)
                && paths::check_proposal_id(id).is_ok()
            {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Pending proposals (including answered and apply-failed ones), by arrival; corrupt
    /// files are returned as problems.
    pub fn pending(&self) -> Result<(Vec<Entry>, Vec<Problem>), QueueError> {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        let bottle_present = self.home.state_dir(&self.identity).is_dir();
        for id in self.ids_with(".json")? {
            if self.outcome_path(&id).exists() {
                continue; // handled; being moved to processed/
            }
            let proposal = match read_json::<Proposal>(&self.proposal_path(&id)) {
                Ok(Some(p)) => p,
                Ok(None) => continue, // handled meanwhile
                Err(e) => {
                    problems.push(problem(&self.proposal_path(&id), e));
                    continue;
                }
            };
            let failure = match read_json::<ApplyFailure>(&self.failure_path(&id)) {
                Ok(f) => f,
                Err(e) => {
                    problems.push(problem(&self.failure_path(&id), e));
                    None
                }
            };
            let status = if self.response_path(&id).exists() {
                Status::Answered
            } else if failure.is_some() {
                Status::ApplyFailed
            } else {
                Status::Pending
            };
            entries.push(Entry {
                proposal,
                status,
                failure,
                outcome: None,
                bottle_present,
            });
        }
        entries.sort_by(|a, b| {
            (&a.proposal.arrival_timestamp, &a.proposal.id)
                .cmp(&(&b.proposal.arrival_timestamp, &b.proposal.id))
        });
        Ok((entries, problems))
    }

    /// Queues a proposal, or returns the identical pending one (same tool and file) with
    /// `true`: the same request is never queued twice.
    pub fn submit(&self, new: NewProposal) -> Result<(Proposal, bool), QueueError> {
        self.create()?;
        let lock_path = self.dir().join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        lock.lock().map_err(io_err("lock", &lock_path))?;
        let (pending, problems) = self.pending()?;
        for p in problems {
            tracing::warn!(path = %p.path.display(), reason = %p.reason, "skipping corrupt queue file");
        }
        if let Some(existing) = pending
            .into_iter()
            .map(|e| e.proposal)
            .find(|p| p.tool == new.tool && p.proposed_file == new.proposed_file)
        {
            return Ok((existing, true));
        }
        let waiting = self.ids_with(".json")?.len();
        if waiting >= MAX_PENDING {
            return Err(QueueError::TooMany(waiting));
        }
        let proposal = Proposal {
            id: new_id(),
            arrival_timestamp: now_timestamp(),
            bottle_slug: self.identity.clone(),
            tool: new.tool,
            current_file_hash: new.current_file.as_deref().map(crate::proposal::sha256_hex),
            current_file: new.current_file,
            proposed_file: new.proposed_file,
            justification: new.justification,
            args: new.args,
        };
        let path = self.proposal_path(&proposal.id);
        state::atomic_write_new(&path, &to_json(&proposal), FILE_MODE)
            .map_err(io_err("write", &path))?;
        Ok((proposal, false))
    }

    /// A pending proposal.
    pub fn proposal(&self, id: &str) -> Result<Option<Proposal>, QueueError> {
        paths::check_proposal_id(id)?;
        read_json(&self.proposal_path(id))
    }

    /// A handled proposal (from `processed/`).
    pub fn processed_proposal(&self, id: &str) -> Result<Option<Proposal>, QueueError> {
        paths::check_proposal_id(id)?;
        read_json(&self.processed().join(format!("{id}.json")))
    }

    /// The operator's response to a pending proposal.
    pub fn response(&self, id: &str) -> Result<Option<Response>, QueueError> {
        paths::check_proposal_id(id)?;
        read_json(&self.response_path(id))
    }

    /// The last failed apply of a pending proposal.
    pub fn failure(&self, id: &str) -> Result<Option<ApplyFailure>, QueueError> {
        paths::check_proposal_id(id)?;
        read_json(&self.failure_path(id))
    }

    /// The outcome of a handled proposal.
    pub fn outcome(&self, id: &str) -> Result<Option<Outcome>, QueueError> {
        paths::check_proposal_id(id)?;
        read_json(&self.outcome_path(id))
    }

    /// Ids of pending proposals that have a response file.
    pub fn answered_ids(&self) -> Result<Vec<String>, QueueError> {
        self.ids_with(".response.json")
    }

    /// Where a proposal stands; `None` if unknown.
    pub fn status(&self, id: &str) -> Result<Option<Status>, QueueError> {
        paths::check_proposal_id(id)?;
        if let Some(o) = self.outcome(id)? {
            return Ok(Some(o.status.into()));
        }
        if !self.proposal_path(id).exists() {
            return Ok(None);
        }
        if self.response_path(id).exists() {
            return Ok(Some(Status::Answered));
        }
        if self.failure_path(id).exists() {
            return Ok(Some(Status::ApplyFailed));
        }
        Ok(Some(Status::Pending))
    }

    /// Writes the operator's response, after checking the proposal is pending and
    /// unanswered and that a `modified` file validates for the tool.
    pub fn respond(&self, response: &Response) -> Result<(), QueueError> {
        self.check_response(response)?;
        self.write_response(response)
    }

    /// Checks a response before it is audited and written: the proposal is pending and a
    /// `modified` file validates for its tool.
    pub fn check_response(&self, response: &Response) -> Result<Proposal, QueueError> {
        let id = response.id.as_str();
        let Some(proposal) = self.proposal(id)? else {
            return Err(QueueError::NotPending(id.to_owned()));
        };
        if response.status == Decision::Modified {
            let Some(file) = response.final_file.as_deref() else {
                return Err(QueueError::InvalidFile {
                    id: id.to_owned(),
                    source: ValidationError::Empty("final_file"),
                });
            };
            validate::parse_payload(proposal.tool, file).map_err(|source| {
                QueueError::InvalidFile {
                    id: id.to_owned(),
                    source,
                }
            })?;
        }
        if self.response_path(id).exists() {
            return Err(QueueError::AlreadyAnswered(id.to_owned()));
        }
        Ok(proposal)
    }

    /// Writes a checked response (never replacing one: two operators racing, one wins).
    pub fn write_response(&self, response: &Response) -> Result<(), QueueError> {
        self.place_response(self.stage_response(response)?)
    }

    /// The first half of [`Queue::write_response`]: the response written and synced under a
    /// temporary name, not yet visible (see [`state::Staged`]).
    pub fn stage_response(&self, response: &Response) -> Result<Staged, QueueError> {
        paths::check_proposal_id(&response.id)?;
        let path = self.response_path(&response.id);
        Staged::write(&path, &to_json(response), FILE_MODE).map_err(io_err("write", &path))
    }

    /// The second half of [`Queue::write_response`]: the staged response appears under its
    /// name unless another operator's is there already.
    pub fn place_response(&self, staged: Staged) -> Result<(), QueueError> {
        let path = staged.path().to_owned();
        match staged.create_new() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let id = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".response.json"))
                    .unwrap_or_default();
                Err(QueueError::AlreadyAnswered(id.to_owned()))
            }
            Err(e) => Err(io_err("write", &path)(e)),
        }
    }

    /// Moves a handled proposal and its response to `processed/` with its outcome. The
    /// outcome is written first: a crash in between leaves a proposal that is both
    /// pending and handled, which is resolved as handled.
    pub fn archive(&self, outcome: &Outcome) -> Result<(), QueueError> {
        self.write_outcome(outcome)?;
        self.move_handled(&outcome.id)
    }

    /// Records a handled proposal's outcome (the durable decision; see [`Queue::archive`]).
    pub fn write_outcome(&self, outcome: &Outcome) -> Result<(), QueueError> {
        self.place_outcome(self.stage_outcome(outcome)?)
    }

    /// The first half of [`Queue::write_outcome`]: the outcome written and synced under a
    /// temporary name, not yet visible (see [`state::Staged`]).
    pub fn stage_outcome(&self, outcome: &Outcome) -> Result<Staged, QueueError> {
        paths::check_proposal_id(&outcome.id)?;
        self.create()?;
        let out = self.outcome_path(&outcome.id);
        Staged::write(&out, &to_json(outcome), FILE_MODE).map_err(io_err("write", &out))
    }

    /// The second half of [`Queue::write_outcome`]: the staged outcome put in place.
    pub fn place_outcome(&self, staged: Staged) -> Result<(), QueueError> {
        let out = staged.path().to_owned();
        staged.replace().map_err(io_err("write", &out))
    }

    /// Like [`Queue::place_outcome`], without the directory sync: the staged outcome (its
    /// content synced already) is visible at once, so the waiting agent can be answered,
    /// and its name becomes durable with the directory syncs of [`Queue::move_handled`]
    /// right after. A crash in between loses at most the name: the response is still in the
    /// queue and the engine applies it again on restart (the supervise engine's module doc
    /// has the argument).
    pub fn place_outcome_before_dir_sync(&self, staged: Staged) -> Result<(), QueueError> {
        let out = staged.path().to_owned();
        staged
            .replace_leaving_dir_unsynced()
            .map_err(io_err("write", &out))
    }

    /// Moves a proposal whose outcome is written, and its response, to `processed/`.
    pub fn move_handled(&self, id: &str) -> Result<(), QueueError> {
        paths::check_proposal_id(id)?;
        for (from, name) in [
            (self.response_path(id), format!("{id}.response.json")),
            (self.proposal_path(id), format!("{id}.json")),
        ] {
            let to = self.processed().join(name);
            // `processed/` exists (the outcome is in it); the directories are synced below.
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("move", &from)(e)),
            }
        }
        let failure = self.failure_path(id);
        let _ = fs::remove_file(failure);
        let _ = state::sync_dir(&self.processed());
        let _ = state::sync_dir(&self.dir());
        Ok(())
    }

    /// Records a failed apply: the response is set aside (into `processed/` with a
    /// `.failed-<time>` suffix) and the proposal stays pending with the error.
    pub fn record_failure(&self, failure: &ApplyFailure) -> Result<(), QueueError> {
        let id = failure.id.as_str();
        paths::check_proposal_id(id)?;
        let path = self.failure_path(id);
        state::atomic_write_mode(&path, &to_json(failure), FILE_MODE)
            .map_err(io_err("write", &path))?;
        self.set_response_aside(id, "failed")
    }

    /// Moves a response out of the way (corrupt or failed), so the proposal is pending again.
    pub fn set_response_aside(&self, id: &str, why: &str) -> Result<(), QueueError> {
        paths::check_proposal_id(id)?;
        let from = self.response_path(id);
        let stamp = now_timestamp().replace([':', '.'], "");
        let to = self
            .processed()
            .join(format!("{id}.response.{why}-{stamp}.json"));
        match state::move_durably(&from, &to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("move", &from)(e)),
        }
    }
}

fn problem(path: &Path, e: QueueError) -> Problem {
    let reason = match e {
        QueueError::Corrupt { reason, .. } => format!("corrupt: {reason}"),
        other => other.to_string(),
    };
    Problem {
        path: path.to_owned(),
        reason,
    }
}

/// Whether a file event under `queue/` can change what a queue holds: a file or
/// directory created, removed, renamed, written or closed after writing (and any event
/// the watcher could not classify, such as a lost-events rescan).
///
/// Opening and reading are not changes. The inotify backend reports every open
/// (`IN_OPEN`), and each pass over a queue opens its directory: a watcher that reacted to
/// those woke itself in an endless loop (a core per idle bottle) and woke every other
/// watcher of the same directory (the dashboard) thousands of times a second.
pub fn is_queue_change(event: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Any
        | EventKind::Other => true,
    }
}

/// Every bottle that has a queue directory.
pub fn identities(home: &Home) -> Result<Vec<String>, QueueError> {
    let root = home.queue_root();
    let rd = match fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", &root)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err("read", &root))?;
        if let Some(name) = entry.file_name().to_str()
            && paths::check_identity(name).is_ok()
            && entry.path().is_dir()
        {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Pending proposals of every bottle (or one), by arrival, with the files skipped.
pub fn pending_all(
    home: &Home,
    bottle: Option<&str>,
) -> Result<(Vec<Entry>, Vec<Problem>), QueueError> {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for identity in identities(home)? {
        if bottle.is_some_and(|b| b != identity) {
            continue;
        }
        let (mut e, mut p) = Queue::new(home.clone(), &identity)?.pending()?;
        entries.append(&mut e);
        problems.append(&mut p);
    }
    entries.sort_by(|a, b| {
        (&a.proposal.arrival_timestamp, &a.proposal.id)
            .cmp(&(&b.proposal.arrival_timestamp, &b.proposal.id))
    });
    Ok((entries, problems))
}

/// Finds a proposal by id in any bottle's queue, pending or handled.
pub fn find(home: &Home, id: &str) -> Result<Option<(Queue, Entry)>, QueueError> {
    paths::check_proposal_id(id)?;
    for identity in identities(home)? {
        let q = Queue::new(home.clone(), &identity)?;
        let bottle_present = home.state_dir(&identity).is_dir();
        if let Some(proposal) = q.proposal(id)? {
            let failure = q.failure(id)?;
            let status = q.status(id)?.unwrap_or(Status::Pending);
            return Ok(Some((
                q,
                Entry {
                    proposal,
                    status,
                    failure,
                    outcome: None,
                    bottle_present,
                },
            )));
        }
        if let Some(proposal) = q.processed_proposal(id)? {
            let outcome = q.outcome(id)?;
            let status = outcome
                .as_ref()
                .map(|o| o.status.into())
                .unwrap_or(Status::Answered);
            return Ok(Some((
                q,
                Entry {
                    proposal,
                    status,
                    failure: None,
                    outcome,
                    bottle_present,
                },
            )));
        }
    }
    Ok(None)
}

/// The operator's name: `$USER`, else `operator`.
pub fn operator_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "operator".to_owned())
}

/// Answers proposal `id` (any bottle) for the bottle's lifetime (the default grant).
pub fn answer(
    home: &Home,
    id: &str,
    status: Decision,
    final_file: Option<String>,
    notes: Option<String>,
    operator: &str,
) -> Result<Queue, QueueError> {
    answer_granted(home, id, status, final_file, notes, operator, Grant::Bottle)
}

/// Answers proposal `id` (any bottle), saying how long an approval holds: the one call
/// behind the dashboard's and the CLI's approve / modify / reject.
pub fn answer_granted(
    home: &Home,
    id: &str,
    status: Decision,
    final_file: Option<String>,
    notes: Option<String>,
    operator: &str,
    grant: Grant,
) -> Result<Queue, QueueError> {
    // A rejection holds nothing, for no time.
    let grant = if status == Decision::Rejected {
        Grant::Bottle
    } else {
        grant
    };
    let Some((queue, entry)) = find(home, id)? else {
        return Err(QueueError::NotPending(id.to_owned()));
    };
    if entry.outcome.is_some() || entry.status == Status::Answered {
        return Err(QueueError::AlreadyAnswered(id.to_owned()));
    }
    crate::grant::check(entry.proposal.tool, grant)?;
    let response = Response {
        id: id.to_owned(),
        status,
        final_file,
        notes: notes.filter(|n| !n.trim().is_empty()),
        operator: operator.to_owned(),
        responded_at: now_timestamp(),
        audited: true,
        grant,
    };
    let proposal = queue.check_response(&response)?;
    // Audited when it is made, before anything can apply it: a decision is never in effect
    // (or lost with a removed bottle) without its audit line. The response is written and
    // synced meanwhile under a temporary name (one wait for the disk, not two in a row) and
    // appears only once the line is on disk.
    let (audited, staged) = std::thread::scope(|s| {
        let staged = s.spawn(|| queue.stage_response(&response));
        let audited = audit_decision(&queue, &proposal, &response, "decided", None);
        (audited, staged.join())
    });
    audited.map_err(|source| QueueError::Audit {
        id: id.to_owned(),
        source,
    })?;
    let written = match staged {
        Ok(staged) => staged.and_then(|staged| queue.place_response(staged)),
        Err(_) => Err(QueueError::Io {
            action: "write",
            path: queue.response_path(id),
            source: io::Error::other("the writing thread panicked"),
        }),
    };
    if let Err(e) = written {
        let why = format!("the decision was not sent: {e}");
        if let Err(a) = audit_decision(&queue, &proposal, &response, "not-applied", Some(why)) {
            tracing::error!(id, error = %a, "cannot record an unsent decision in the audit log");
        }
        return Err(e);
    }
    Ok(queue)
}

/// Appends an audit line for the operator's decision on `p`: what it does (its effect
/// against the routes the proposal was made against), before and after.
pub fn audit_decision(
    queue: &Queue,
    p: &Proposal,
    r: &Response,
    stage: &str,
    error: Option<String>,
) -> Result<crate::audit::AuditEntry, crate::audit::AuditError> {
    let file = match (r.status, &r.final_file) {
        (Decision::Modified, Some(f)) => f.as_str(),
        _ => p.proposed_file.as_str(),
    };
    // For a rejection, what was asked for (nothing changes).
    let effect = crate::effect::file_effect(p.tool, p.current_file.as_deref().unwrap_or(""), file)
        .map(|e| e.lines())
        .unwrap_or_else(|e| vec![format!("effect unknown: {e}")]);
    crate::audit::append(
        queue.home(),
        crate::audit::NewEntry {
            component: p.tool.component().to_owned(),
            bottle: queue.identity().to_owned(),
            proposal_id: p.id.clone(),
            tool: p.tool.as_str().to_owned(),
            justification: p.justification.clone(),
            arrival_timestamp: p.arrival_timestamp.clone(),
            decided_at: r.responded_at.clone(),
            decision: r.status.as_str().to_owned(),
            operator: r.operator.clone(),
            notes: r.notes.clone(),
            before: p.current_file.clone(),
            after: Some(file.to_owned()),
            error,
            effect,
            stage: Some(stage.to_owned()),
            grant: (!r.grant.is_bottle()).then(|| r.grant.scope()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn new(tool: Tool, file: &str) -> NewProposal {
        NewProposal {
            tool,
            proposed_file: file.into(),
            justification: "because".into(),
            current_file: Some("routes: []\n".into()),
            args: None,
        }
    }

    #[test]
    fn opening_and_reading_are_not_queue_changes() {
        use notify::EventKind::{Access, Create, Modify, Other, Remove};
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode,
        };
        let kinds = [
            Access(AccessKind::Open(AccessMode::Any)),
            Access(AccessKind::Read),
            Access(AccessKind::Close(AccessMode::Read)),
            Access(AccessKind::Close(AccessMode::Write)),
            Create(CreateKind::File),
            Remove(RemoveKind::File),
            Modify(ModifyKind::Name(RenameMode::To)),
            Modify(ModifyKind::Name(RenameMode::From)),
            Modify(ModifyKind::Data(DataChange::Any)),
            Other,
        ];
        assert_eq!(
            kinds.map(|k| is_queue_change(&notify::Event::new(k))),
            [
                false, false, false, true, true, true, true, true, true, true
            ]
        );
    }

    #[test]
    fn identical_pending_proposals_are_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(Home::new(dir.path()), "dev-00001").unwrap();
        let (a, reused_a) = q
            .submit(new(Tool::EgressAllow, "routes:\n  - host: a\n"))
            .unwrap();
        let (b, reused_b) = q
            .submit(new(Tool::EgressAllow, "routes:\n  - host: a\n"))
            .unwrap();
        let (c, _) = q
            .submit(new(Tool::EgressBlock, "routes:\n  - host: a\n"))
            .unwrap();
        assert_eq!(
            (reused_a, reused_b, a.id == b.id, a.id == c.id),
            (false, true, true, false)
        );
        assert_eq!(q.pending().unwrap().0.len(), 2);
        assert_eq!(
            a.current_file_hash.as_deref(),
            Some(crate::proposal::sha256_hex("routes: []\n").as_str())
        );
    }

    #[test]
    fn a_bottle_cannot_flood_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(Home::new(dir.path()), "dev-00001").unwrap();
        for i in 0..MAX_PENDING {
            q.submit(new(
                Tool::EgressAllow,
                &format!("routes:\n  - host: h{i}\n"),
            ))
            .unwrap();
        }
        assert!(matches!(
            q.submit(new(Tool::EgressAllow, "routes:\n  - host: one-more\n")),
            Err(QueueError::TooMany(64))
        ));
        // the identical one is still found
        assert!(
            q.submit(new(Tool::EgressAllow, "routes:\n  - host: h0\n"))
                .unwrap()
                .1
        );
    }

    #[test]
    fn corrupt_files_are_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let q = Queue::new(home.clone(), "dev-00001").unwrap();
        let (good, _) = q.submit(new(Tool::EgressAllow, "routes: []\n")).unwrap();
        fs::write(q.dir().join("0123456789abcdef.json"), "{not json").unwrap();
        let (entries, problems) = pending_all(&home, None).unwrap();
        assert_eq!(
            entries
                .iter()
                .map(|e| e.proposal.id.clone())
                .collect::<Vec<_>>(),
            vec![good.id]
        );
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].reason.starts_with("corrupt:"),
            "{}",
            problems[0].reason
        );
    }

    #[test]
    fn answer_once_then_archive() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let q = Queue::new(home.clone(), "dev-00001").unwrap();
        let (p, _) = q.submit(new(Tool::EgressAllow, "routes: []\n")).unwrap();
        answer(
            &home,
            &p.id,
            Decision::Rejected,
            None,
            Some("no".into()),
            "op",
        )
        .unwrap();
        assert!(matches!(
            answer(&home, &p.id, Decision::Approved, None, None, "op2"),
            Err(QueueError::AlreadyAnswered(_))
        ));
        assert_eq!(q.status(&p.id).unwrap(), Some(Status::Answered));
        let outcome = Outcome {
            id: p.id.clone(),
            status: Decision::Rejected,
            final_file: None,
            notes: Some("no".into()),
            operator: "op".into(),
            decided_at: now_timestamp(),
            applied_at: None,
            grant: Grant::Bottle,
            expires: None,
        };
        q.archive(&outcome).unwrap();
        assert_eq!(q.status(&p.id).unwrap(), Some(Status::Rejected));
        assert!(q.pending().unwrap().0.is_empty());
        assert!(
            q.processed()
                .join(format!("{}.response.json", p.id))
                .exists()
        );
        assert_eq!(
            find(&home, &p.id).unwrap().unwrap().1.outcome,
            Some(outcome)
        );
    }

    #[test]
    fn modified_needs_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let q = Queue::new(home.clone(), "dev-00001").unwrap();
        let (p, _) = q.submit(new(Tool::EgressAllow, "routes: []\n")).unwrap();
        let err = answer(
            &home,
            &p.id,
            Decision::Modified,
            Some("routes: [".into()),
            None,
            "op",
        )
        .unwrap_err();
        assert!(matches!(err, QueueError::InvalidFile { .. }), "{err}");
        assert_eq!(q.status(&p.id).unwrap(), Some(Status::Pending));
    }
}
