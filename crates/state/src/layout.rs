//! The directory layout under `$BOT_BOTTLE_HOME`, bottle metadata and the run lock.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::atomic_write;
use crate::identity::{Identity, IdentityError};

/// What went wrong with the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Neither `$BOT_BOTTLE_HOME` nor `$HOME` is set.
    #[error("cannot find the bot-bottle home: set BOT_BOTTLE_HOME or HOME")]
    NoHome,
    /// A file or directory could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "cannot create".
        action: &'static str,
        /// The path that failed.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `metadata.json` is not valid.
    #[error("bottle metadata {} is corrupt ({source}); remove that bottle's state with `bot-bottle cleanup`", path.display())]
    CorruptMetadata {
        /// The metadata file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// No state directory for this identity.
    #[error("no bottle `{0}` here; `bot-bottle list` shows the bottles there are")]
    UnknownBottle(Identity),
    /// The bottle is running (its run lock is held).
    #[error("bottle `{0}` is running")]
    Running(Identity),
    /// An identity could not be made.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The operator decided on proposals of this bottle that its supervise server has not
    /// applied yet (it was down): removing the queue would lose them.
    #[error(
        "bottle `{identity}` has {} operator decision(s) not applied yet (proposal {}); `bot-bottle resume {identity}` applies them",
        ids.len(),
        ids.join(", ")
    )]
    UnappliedDecisions {
        /// The bottle.
        identity: Identity,
        /// The proposals answered but not applied.
        ids: Vec<String>,
    },
    /// Could not find a free identity (the random space is crowded).
    #[error("could not allocate a free identity for agent `{0}`; run `bot-bottle cleanup`")]
    Exhausted(String),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The mark of a bottle whose sidecar bundle died (holds what happened to it).
const SIDECAR_DOWN: &str = ".sidecar-down";

/// What a bottle was started with; enough to `resume` it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The agent's name in the manifest.
    pub agent: String,
    /// The directory `start` was run in (the workspace).
    pub cwd: PathBuf,
    /// Whether the workspace is a copy rather than the mounted directory.
    pub copy_cwd: bool,
    /// The backend that runs it.
    pub backend: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// The manifest the bottle came from, if it was a file or directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<PathBuf>,
    /// The command that replaced the provider's agent command, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Whether the host's Codex login (`auth.json`) is forwarded into the bottle
    /// (`start --forward-codex-auth`); `resume` forwards it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_codex_auth: bool,
}

/// Whether a bottle's state is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BottleState {
    /// Its `start` (or `resume`) process holds the run lock.
    Running,
    /// Its sidecar bundle died while the agent ran: its `start` is stopping the bottle,
    /// which is then kept (`preserved`) for `resume`.
    Stopping,
    /// Kept for `resume` after a failure.
    Preserved,
    /// Not running and not preserved: left over, `cleanup` removes it.
    Stale,
}

/// One bottle known to this home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BottleEntry {
    /// Its identity.
    pub identity: Identity,
    /// Its metadata, if readable.
    pub metadata: Option<Metadata>,
    /// Running, preserved or stale.
    pub state: BottleState,
}

/// Held by the process that runs a bottle; released on drop or process exit (even `kill -9`).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// The bot-bottle home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$BOT_BOTTLE_HOME`, else `$HOME/.bot-bottle`.
    pub fn from_env() -> Result<Self, StateError> {
        Self::from_vars(|k| std::env::var_os(k))
    }

    /// As [`Home::from_env`], with the environment given as a lookup (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Self, StateError> {
        if let Some(home) = var(crate::HOME_ENV).filter(|v| !v.is_empty()) {
            return Ok(Self::new(home));
        }
        let home = var("HOME")
            .filter(|v| !v.is_empty())
            .ok_or(StateError::NoHome)?;
        Ok(Self::new(PathBuf::from(home).join(".bot-bottle")))
    }

    /// A home at this path.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `state/`.
    pub fn state_root(&self) -> PathBuf {
        self.root.join("state")
    }

    /// `state/<identity>/`: the bottle's own state; absent once the bottle is gone.
    pub fn state_dir(&self, id: impl AsRef<str>) -> PathBuf {
        self.state_root().join(id.as_ref())
    }

    /// The layout of the bottle's state directory, `state/<identity>/`.
    pub fn bottle(&self, id: impl AsRef<str>) -> crate::BottlePaths {
        crate::BottlePaths::new(self.state_dir(id))
    }

    /// `state/<identity>/live-config/`: the routes and allowed findings in effect.
    pub fn live_config_dir(&self, id: impl AsRef<str>) -> PathBuf {
        self.bottle(id).live_config()
    }

    /// `queue/`, holding one directory per bottle.
    pub fn queue_root(&self) -> PathBuf {
        self.root.join("queue")
    }

    /// `queue/<identity>/`: pending proposals and responses.
    pub fn queue_dir(&self, id: impl AsRef<str>) -> PathBuf {
        self.queue_root().join(id.as_ref())
    }

    /// `queue/<identity>/processed/`: handled proposals with their response and outcome.
    pub fn processed_dir(&self, id: impl AsRef<str>) -> PathBuf {
        self.queue_dir(id).join("processed")
    }

    /// `audit/`, holding one directory per component.
    pub fn audit_root(&self) -> PathBuf {
        self.root.join("audit")
    }

    /// `audit/<component>/<identity>.jsonl`.
    pub fn audit_file(&self, component: &str, id: impl AsRef<str>) -> PathBuf {
        self.audit_root()
            .join(component)
            .join(format!("{}.jsonl", id.as_ref()))
    }

    /// `logs/`: log files of commands that own the terminal (the dashboard).
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// `run/<backend>/`: a backend's runtime records of the bottles it runs.
    pub fn runtime_dir(&self, backend: &str) -> PathBuf {
        self.root.join("run").join(backend)
    }

    /// `manifest/`: the manifest directory searched last.
    pub fn manifest_dir(&self) -> PathBuf {
        self.root.join("manifest")
    }

    fn ensure_dir(path: &Path) -> Result<(), StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io_err("cannot create", path))
    }

    /// Creates a fresh state directory for a new bottle of `agent` and writes its
    /// metadata, durably. Identity allocation happens under a home-wide lock, and the
    /// directory is created exclusively, so two launches never collide.
    pub fn create_bottle(&self, meta: &Metadata) -> Result<(Identity, RunLock), StateError> {
        let mut pending = crate::PendingSync::new();
        let (id, lock) = self.create_bottle_pending(meta, &mut pending)?;
        let dir = self.state_dir(&id);
        pending.sync().map_err(io_err("cannot write", &dir))?;
        Ok((id, lock))
    }

    /// [`Home::create_bottle`], with the metadata, the new directory's entry and the state
    /// root's entry left for `pending` to make durable: `start` syncs them together with the
    /// rest of the new bottle's state while its sidecar bundle starts, and before the agent
    /// runs. A machine crash before that sync loses at most this bottle (whose agent never
    /// ran): its directory may be missing, or listed with empty or missing metadata.
    pub fn create_bottle_pending(
        &self,
        meta: &Metadata,
        pending: &mut crate::PendingSync,
    ) -> Result<(Identity, RunLock), StateError> {
        let state_root = self.state_root();
        Self::ensure_dir(&state_root)?;
        let lock_path = self.root.join(".lock");
        let guard = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("cannot open", &lock_path))?;
        guard.lock().map_err(io_err("cannot lock", &lock_path))?;
        for _ in 0..64 {
            let id = Identity::generate(&meta.agent)?;
            let dir = self.state_dir(&id);
            // An ended bottle's identity is free once its entries left the trash (what
            // its docker objects are named after, among others).
            if fs::symlink_metadata(&dir).is_ok() || self.trash_holds(id.as_str()) {
                continue;
            }
            // Built under a name no identity has, then renamed into place: whoever sees the
            // bottle's directory (`list`, `stop`, `cleanup`) sees it locked and with its
            // metadata, never half made.
            let building = state_root.join(format!(".creating-{id}"));
            match fs::remove_dir_all(&building) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("cannot remove", &building)(e));
                }
                _ => {}
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&building)
                .map_err(io_err("cannot create", &building))?;
            let made = Self::fill_bottle_dir(&building, &dir, meta);
            if made.is_err() {
                // A half-made directory (a full disk, say) is not left behind.
                let _ = fs::remove_dir_all(&building);
            }
            let file = made?;
            // The metadata, the directory holding it, and the rename of the directory.
            pending.add(&dir.join("metadata.json"));
            pending.add(&dir);
            pending.add(&state_root);
            return Ok((id, RunLock { _file: file }));
        }
        Err(StateError::Exhausted(meta.agent.clone()))
    }

    /// Locks `building`, writes the metadata into it (not yet durably: the caller syncs it
    /// where it lands) and renames it to `dir`; the lock file stays open for the caller.
    fn fill_bottle_dir(building: &Path, dir: &Path, meta: &Metadata) -> Result<File, StateError> {
        let lock_path = building.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("cannot open", &lock_path))?;
        file.lock().map_err(io_err("cannot lock", &lock_path))?;
        let meta_path = building.join("metadata.json");
        let mut data = serde_json::to_vec_pretty(meta).map_err(|e| StateError::Io {
            action: "cannot encode",
            path: meta_path.clone(),
            source: io::Error::other(e),
        })?;
        data.push(b'\n');
        crate::atomic_write_unsynced(&meta_path, &data, 0o600)
            .map_err(io_err("cannot write", &meta_path))?;
        // Only `create_bottle` makes state directories, under the home-wide lock held by
        // its caller, so the name checked there is still free.
        fs::rename(building, dir).map_err(io_err("cannot create", dir))?;
        Ok(file)
    }

    /// Takes the run lock of an existing bottle; fails with [`StateError::Running`] if a
    /// live process holds it.
    pub fn lock_bottle(&self, id: &Identity) -> Result<RunLock, StateError> {
        let dir = self.state_dir(id);
        if !dir.is_dir() {
            return Err(StateError::UnknownBottle(id.clone()));
        }
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StateError::Running(id.clone())),
            Err(std::fs::TryLockError::Error(e)) => Err(io_err("cannot lock", &path)(e)),
        }
    }

    /// Whether some process holds the bottle's run lock.
    pub fn is_running(&self, id: &Identity) -> bool {
        matches!(self.lock_bottle(id), Err(StateError::Running(_)))
    }

    /// Writes `metadata.json` atomically.
    pub fn write_metadata(&self, id: &Identity, meta: &Metadata) -> Result<(), StateError> {
        let path = self.state_dir(id).join("metadata.json");
        let mut data = serde_json::to_vec_pretty(meta).map_err(|e| StateError::Io {
            action: "cannot encode",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        data.push(b'\n');
        atomic_write(&path, &data).map_err(io_err("cannot write", &path))
    }

    /// Reads `metadata.json`.
    pub fn read_metadata(&self, id: &Identity) -> Result<Metadata, StateError> {
        let dir = self.state_dir(id);
        if !dir.is_dir() {
            return Err(StateError::UnknownBottle(id.clone()));
        }
        let path = dir.join("metadata.json");
        let data = fs::read(&path).map_err(io_err("cannot read", &path))?;
        serde_json::from_slice(&data).map_err(|source| StateError::CorruptMetadata { path, source })
    }

    /// Marks the bottle's state to be kept for `resume` (and by `cleanup`).
    pub fn mark_preserved(&self, id: &Identity) -> Result<(), StateError> {
        let path = self.state_dir(id).join(".preserve");
        atomic_write(&path, b"").map_err(io_err("cannot write", &path))
    }

    /// Removes the `.preserve` marker (after a successful resume).
    pub fn clear_preserved(&self, id: &Identity) -> Result<(), StateError> {
        let path = self.state_dir(id).join(".preserve");
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("cannot remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Records that the bottle's sidecar bundle died and the bottle is being stopped
    /// (`list` shows it as [`BottleState::Stopping`] while its run lock is held).
    pub fn mark_sidecar_down(&self, id: &Identity, why: &str) -> Result<(), StateError> {
        let path = self.state_dir(id).join(SIDECAR_DOWN);
        atomic_write(&path, why.as_bytes()).map_err(io_err("cannot write", &path))
    }

    /// Removes the mark of [`Home::mark_sidecar_down`] (a new run has a new sidecar).
    pub fn clear_sidecar_down(&self, id: &Identity) -> Result<(), StateError> {
        let path = self.state_dir(id).join(SIDECAR_DOWN);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("cannot remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Whether the bottle's state is marked `.preserve`.
    pub fn is_preserved(&self, id: &Identity) -> bool {
        self.state_dir(id).join(".preserve").exists()
    }

    /// Every bottle with a state directory, sorted by identity. Directories whose names
    /// are not identities are ignored (they are not ours).
    pub fn list(&self) -> Result<Vec<BottleEntry>, StateError> {
        let root = self.state_root();
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot read", &root)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("cannot read", &root))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(identity) = Identity::parse(&name) else {
                continue;
            };
            let state = if self.is_running(&identity) {
                if self.state_dir(&identity).join(SIDECAR_DOWN).exists() {
                    BottleState::Stopping
                } else {
                    BottleState::Running
                }
            } else if self.is_preserved(&identity) {
                BottleState::Preserved
            } else {
                BottleState::Stale
            };
            let metadata = self.read_metadata(&identity).ok();
            out.push(BottleEntry {
                identity,
                metadata,
                state,
            });
        }
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(out)
    }

    /// Proposals of the bottle that the operator answered but its supervise server has not
    /// handled yet (`queue/<identity>/<id>.response.json`), sorted.
    pub fn unapplied_decisions(&self, id: &Identity) -> Result<Vec<String>, StateError> {
        let dir = self.queue_dir(id);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot read", &dir)(e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("cannot read", &dir))?;
            if let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".response.json"))
            {
                // An outcome in `processed/` means the decision was handled: its server
                // stopped after recording the outcome, before moving the response (the
                // queue resolves such a proposal as handled).
                let outcome = dir.join("processed").join(format!("{p}.outcome.json"));
                if !outcome.exists() {
                    ids.push(p.to_owned());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Removes a bottle's state and queue. Refuses a running or preserved bottle, and one
    /// with operator decisions not applied yet (they would be lost).
    pub fn remove_bottle(&self, id: &Identity) -> Result<(), StateError> {
        let _lock = self.removable(id)?;
        self.remove_dirs(id)
    }

    /// [`Home::remove_bottle`] for a bottle whose `start` has just ended: the same checks
    /// under its run lock, then its state and queue directories are moved into the trash
    /// (see [`crate::trash`]) instead of removed file by file; a directory that cannot be
    /// moved is removed in place. Gone for `list`, `resume` and `cleanup` when this returns;
    /// the caller has the trash emptied ([`Home::spawn_emptying_trash`]).
    pub fn retire_bottle(&self, id: &Identity) -> Result<(), StateError> {
        let _lock = self.removable(id)?;
        for (dir, kind) in [(self.queue_dir(id), "queue"), (self.state_dir(id), "state")] {
            if self.move_to_trash(&dir, kind).is_err() {
                match fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err("cannot remove", &dir)(e));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The run lock of a bottle whose state may be removed: not running, not preserved, no
    /// operator decision waiting in its queue.
    fn removable(&self, id: &Identity) -> Result<RunLock, StateError> {
        let lock = self.lock_bottle(id)?;
        let ids = self.unapplied_decisions(id)?;
        if !ids.is_empty() {
            return Err(StateError::UnappliedDecisions {
                identity: id.clone(),
                ids,
            });
        }
        if self.is_preserved(id) {
            return Err(StateError::Io {
                action: "refusing to remove preserved state",
                path: self.state_dir(id),
                source: io::Error::other("it is kept for `bot-bottle resume`"),
            });
        }
        Ok(lock)
    }

    /// Removes a bottle the operator chose to throw away (`bot-bottle discard`): its state,
    /// preserved or not, and its queue, with any decision not applied yet. Refuses a
    /// running bottle and a bottle this home does not have.
    pub fn discard_bottle(&self, id: &Identity) -> Result<(), StateError> {
        let _lock = self.lock_bottle(id)?;
        self.remove_dirs(id)
    }

    fn remove_dirs(&self, id: &Identity) -> Result<(), StateError> {
        for dir in [self.queue_dir(id), self.state_dir(id)] {
            match fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("cannot remove", &dir)(e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::collections::HashSet;

    fn meta(agent: &str) -> Metadata {
        Metadata {
            agent: agent.into(),
            cwd: "/work/project".into(),
            copy_cwd: false,
            backend: "native".into(),
            created: "2026-11-27T12:00:00Z".into(),
            manifest: None,
            command: vec![],
            forward_codex_auth: false,
        }
    }

    #[test]
    fn metadata_without_newer_fields_still_reads() {
        let old = r#"{"agent":"fixer","cwd":"/work/project","copy_cwd":false,"backend":"native","created":"2026-11-27T12:00:00Z"}"#;
        assert_eq!(
            serde_json::from_str::<Metadata>(old).unwrap(),
            meta("fixer")
        );
        let forwarded = Metadata {
            forward_codex_auth: true,
            ..meta("fixer")
        };
        let text = serde_json::to_string(&forwarded).unwrap();
        assert!(text.contains(r#""forward_codex_auth":true"#), "{text}");
        assert_eq!(serde_json::from_str::<Metadata>(&text).unwrap(), forwarded);
        assert!(
            !serde_json::to_string(&meta("fixer"))
                .unwrap()
                .contains("forward_codex_auth")
        );
    }

    #[test]
    fn home_comes_from_bot_bottle_home_then_home() {
        let h = Home::from_vars(|k| (k == "BOT_BOTTLE_HOME").then(|| "/bb".into())).unwrap();
        assert_eq!(h.root(), Path::new("/bb"));
        let h = Home::from_vars(|k| (k == "HOME").then(|| "/home/u".into())).unwrap();
        assert_eq!(h.root(), Path::new("/home/u/.bot-bottle"));
        assert!(matches!(Home::from_vars(|_| None), Err(StateError::NoHome)));
    }

    #[test]
    fn layout_matches_the_design() {
        let h = Home::new("/bb");
        let id = Identity::parse("fixer-3fa9c").unwrap();
        assert_eq!(h.state_dir(&id), Path::new("/bb/state/fixer-3fa9c"));
        assert_eq!(h.queue_dir(&id), Path::new("/bb/queue/fixer-3fa9c"));
        assert_eq!(
            h.audit_file("egress", &id),
            Path::new("/bb/audit/egress/fixer-3fa9c.jsonl")
        );
        assert_eq!(h.manifest_dir(), Path::new("/bb/manifest"));
    }

    #[test]
    fn create_write_read_list_preserve_remove() {
        let dir = tempfile::tempdir().unwrap();
        let h = Home::new(dir.path());
        let (id, lock) = h.create_bottle(&meta("fixer")).unwrap();
        assert_eq!(id.agent(), "fixer");
        assert_eq!(h.read_metadata(&id).unwrap(), meta("fixer"));
        assert!(h.is_running(&id));
        assert!(matches!(h.lock_bottle(&id), Err(StateError::Running(_))));
        let listed = h.list().unwrap();
        assert_eq!(
            listed,
            vec![BottleEntry {
                identity: id.clone(),
                metadata: Some(meta("fixer")),
                state: BottleState::Running
            }]
        );
        h.mark_sidecar_down(&id, "killed by SIGKILL").unwrap();
        assert_eq!(h.list().unwrap()[0].state, BottleState::Stopping);
        h.clear_sidecar_down(&id).unwrap();
        assert_eq!(h.list().unwrap()[0].state, BottleState::Running);
        h.mark_sidecar_down(&id, "killed by SIGKILL").unwrap();
        drop(lock);
        assert_eq!(h.list().unwrap()[0].state, BottleState::Stale);
        h.mark_preserved(&id).unwrap();
        assert_eq!(h.list().unwrap()[0].state, BottleState::Preserved);
        assert!(
            h.remove_bottle(&id).is_err(),
            "preserved state must be kept"
        );
        assert!(h.state_dir(&id).is_dir());
        h.clear_preserved(&id).unwrap();
        h.remove_bottle(&id).unwrap();
        assert_eq!(h.list().unwrap(), vec![]);
    }

    #[test]
    fn discard_removes_a_preserved_bottle_with_its_queue_but_never_a_running_one() {
        let dir = tempfile::tempdir().unwrap();
        let h = Home::new(dir.path());
        let (id, lock) = h.create_bottle(&meta("fixer")).unwrap();
        assert!(matches!(h.discard_bottle(&id), Err(StateError::Running(_))));
        drop(lock);
        h.mark_preserved(&id).unwrap();
        let queue = h.queue_dir(&id);
        fs::create_dir_all(&queue).unwrap();
        fs::write(queue.join("00000000000000a1.json"), "{}").unwrap();
        fs::write(queue.join("00000000000000a1.response.json"), "{}").unwrap();
        h.discard_bottle(&id).unwrap();
        assert_eq!(h.list().unwrap(), vec![]);
        assert!(!queue.exists());
        assert!(matches!(
            h.discard_bottle(&id),
            Err(StateError::UnknownBottle(_))
        ));
    }

    #[test]
    fn a_decision_not_applied_keeps_the_bottle() {
        let dir = tempfile::tempdir().unwrap();
        let h = Home::new(dir.path());
        let (id, lock) = h.create_bottle(&meta("fixer")).unwrap();
        drop(lock);
        let queue = h.queue_dir(&id);
        fs::create_dir_all(queue.join("processed")).unwrap();
        fs::write(queue.join("00000000000000a1.json"), "{}").unwrap();
        fs::write(queue.join("00000000000000a1.response.json"), "{}").unwrap();
        fs::write(queue.join("processed/00000000000000b2.response.json"), "{}").unwrap();
        assert_eq!(
            h.remove_bottle(&id).unwrap_err().to_string(),
            format!(
                "bottle `{id}` has 1 operator decision(s) not applied yet (proposal 00000000000000a1); `bot-bottle resume {id}` applies them"
            )
        );
        assert!(queue.join("00000000000000a1.response.json").exists());
        assert!(h.state_dir(&id).is_dir());
        // A server killed after recording the outcome, before moving the response: handled.
        fs::write(queue.join("processed/00000000000000a1.outcome.json"), "{}").unwrap();
        assert_eq!(h.unapplied_decisions(&id).unwrap(), Vec::<String>::new());
        fs::remove_file(queue.join("processed/00000000000000a1.outcome.json")).unwrap();
        assert_eq!(
            h.unapplied_decisions(&id).unwrap(),
            vec!["00000000000000a1"]
        );
        // Once the supervise server handled it (moved to processed/), the bottle can go.
        fs::rename(
            queue.join("00000000000000a1.response.json"),
            queue.join("processed/00000000000000a1.response.json"),
        )
        .unwrap();
        h.remove_bottle(&id).unwrap();
        assert!(!queue.exists());
    }

    /// `retire_bottle` keeps every refusal of `remove_bottle` (a running or preserved bottle,
    /// a decision not applied) and moves the rest into the trash.
    #[test]
    fn retiring_refuses_what_removing_refuses_and_moves_the_rest_into_the_trash() {
        let dir = tempfile::tempdir().unwrap();
        let h = Home::new(dir.path());
        let (id, lock) = h.create_bottle(&meta("fixer")).unwrap();
        assert!(matches!(h.retire_bottle(&id), Err(StateError::Running(_))));
        drop(lock);
        h.mark_preserved(&id).unwrap();
        assert!(
            h.retire_bottle(&id).is_err(),
            "preserved state must be kept"
        );
        assert!(h.state_dir(&id).is_dir());
        h.clear_preserved(&id).unwrap();
        let queue = h.queue_dir(&id);
        fs::create_dir_all(&queue).unwrap();
        fs::write(queue.join("00000000000000a1.response.json"), "{}").unwrap();
        assert!(matches!(
            h.retire_bottle(&id),
            Err(StateError::UnappliedDecisions { .. })
        ));
        assert!(queue.join("00000000000000a1.response.json").exists());
        assert!(h.state_dir(&id).is_dir());
        fs::remove_file(queue.join("00000000000000a1.response.json")).unwrap();
        fs::write(queue.join("00000000000000a1.json"), "{}").unwrap();
        h.retire_bottle(&id).unwrap();
        assert_eq!(h.list().unwrap(), vec![]);
        assert!(!queue.exists() && !h.state_dir(&id).exists());
        assert!(h.trash_needs_emptying());
        assert_eq!(h.empty_trash(&[]).unwrap().moved, 2);
        assert!(matches!(
            h.retire_bottle(&id),
            Err(StateError::UnknownBottle(_))
        ));
    }

    #[test]
    fn concurrent_launches_get_distinct_identities() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let home = home.clone();
                std::thread::spawn(move || home.create_bottle(&meta("a")).unwrap())
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ids: HashSet<_> = results.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids.len(), 8);
    }

    /// `stop` right after `start` read a listed bottle whose metadata was not written yet:
    /// a bottle is listed only whole (locked, with its metadata).
    #[test]
    fn a_listed_bottle_always_has_its_metadata_and_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let maker = {
            let home = home.clone();
            std::thread::spawn(move || {
                (0..150)
                    .map(|_| home.create_bottle(&meta("a")).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        let mut seen = 0;
        while !maker.is_finished() {
            for b in home.list().unwrap() {
                assert!(
                    b.metadata.is_some(),
                    "{} listed without metadata",
                    b.identity
                );
                assert_eq!(b.state, BottleState::Running, "{}", b.identity);
                seen += 1;
            }
        }
        let made = maker.join().unwrap();
        assert_eq!(home.list().unwrap().len(), made.len());
        assert!(seen > 0);
    }

    #[test]
    fn corrupt_metadata_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let h = Home::new(dir.path());
        let (id, _lock) = h.create_bottle(&meta("x")).unwrap();
        fs::write(h.state_dir(&id).join("metadata.json"), "{not json").unwrap();
        let err = h.read_metadata(&id).unwrap_err().to_string();
        assert!(err.starts_with(&format!(
            "bottle metadata {}/metadata.json is corrupt",
            h.state_dir(&id).display()
        )));
        let listed = h.list().unwrap();
        assert_eq!(listed[0].metadata, None);
    }

    #[test]
    fn unknown_bottle_says_where_to_look() {
        let dir = tempfile::tempdir().unwrap();
        let h = Home::new(dir.path());
        let id = Identity::parse("ghost-00000").unwrap();
        assert_eq!(
            h.read_metadata(&id).unwrap_err().to_string(),
            "no bottle `ghost-00000` here; `bot-bottle list` shows the bottles there are"
        );
    }
}
