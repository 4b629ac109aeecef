//! Where supervise keeps its files under `$BOT_BOTTLE_HOME`.
//!
//! The `state` crate will own the whole layout; until it does, supervise keeps these few
//! helpers to itself so the two never collide. Every name that becomes a path component
//! (bottle identity, proposal id, component) is checked here, so a hostile value can never
//! walk out of the home directory.

use std::path::{Path, PathBuf};

/// A name that is not safe as a path component.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// A bottle identity with characters other than `a-z`, `0-9`, `-`, `_`, `.`.
    #[error("invalid bottle identity {0:?}: use lower-case letters, digits, '-', '_' or '.'")]
    Identity(String),
    /// A proposal id that is not 6 to 64 lower-case hex digits.
    #[error(
        "invalid proposal id {0:?}: ids are lower-case hex, as printed by `bot-bottle proposals list`"
    )]
    ProposalId(String),
    /// No home directory to default `$BOT_BOTTLE_HOME` to.
    #[error("cannot find the home directory: set BOT_BOTTLE_HOME or HOME")]
    NoHome,
}

/// The root of bot-bottle's files (`$BOT_BOTTLE_HOME`, default `~/.bot-bottle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home at an explicit directory (tests, the sidecar bundle).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$BOT_BOTTLE_HOME`, or `~/.bot-bottle`.
    pub fn from_env() -> Result<Self, NameError> {
        if let Some(dir) = std::env::var_os("BOT_BOTTLE_HOME").filter(|v| !v.is_empty()) {
            return Ok(Self::new(dir));
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .ok_or(NameError::NoHome)?;
        Ok(Self::new(PathBuf::from(home).join(".bot-bottle")))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `queue/`, holding one directory per bottle.
    pub fn queue_root(&self) -> PathBuf {
        self.root.join("queue")
    }

    /// `queue/<identity>/`: pending proposals and responses.
    pub fn queue_dir(&self, identity: &str) -> PathBuf {
        self.queue_root().join(identity)
    }

    /// `queue/<identity>/processed/`: handled proposals with their response and outcome.
    pub fn processed_dir(&self, identity: &str) -> PathBuf {
        self.queue_dir(identity).join("processed")
    }

    /// `state/<identity>/`: the bottle's own state; absent once the bottle is gone.
    pub fn state_dir(&self, identity: &str) -> PathBuf {
        self.root.join("state").join(identity)
    }

    /// `state/<identity>/live-config/`: the routes and allowlist in effect.
    pub fn live_config_dir(&self, identity: &str) -> PathBuf {
        self.state_dir(identity).join("live-config")
    }

    /// `audit/`, holding one directory per component.
    pub fn audit_root(&self) -> PathBuf {
        self.root.join("audit")
    }

    /// `audit/<component>/<identity>.jsonl`.
    pub fn audit_file(&self, component: &str, identity: &str) -> PathBuf {
        self.audit_root()
            .join(component)
            .join(format!("{identity}.jsonl"))
    }

    /// `logs/`: log files of commands that own the terminal (the dashboard).
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
}

/// Checks a bottle identity (`<agent>-<5 hex>`, or any safe name in tests).
pub fn check_identity(identity: &str) -> Result<(), NameError> {
    let ok = !identity.is_empty()
        && identity.len() <= 128
        && !identity.starts_with('.')
        && identity
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NameError::Identity(identity.to_owned()))
    }
}

/// Checks a proposal id.
pub fn check_proposal_id(id: &str) -> Result<(), NameError> {
    let ok = (6..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NameError::ProposalId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_and_ids_cannot_escape_the_home() {
        assert!(check_identity("claude-1a2b3").is_ok());
        for bad in ["", "..", "../x", "a/b", ".hidden", "Upper", "a b"] {
            assert!(check_identity(bad).is_err(), "{bad}");
        }
        assert!(check_proposal_id("0123abcd").is_ok());
        for bad in ["", "abc", "../../etc", "ABCDEF12", "0123abcg"] {
            assert!(check_proposal_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layout_matches_the_design() {
        let home = Home::new("/h");
        assert_eq!(home.queue_dir("b-1"), PathBuf::from("/h/queue/b-1"));
        assert_eq!(
            home.processed_dir("b-1"),
            PathBuf::from("/h/queue/b-1/processed")
        );
        assert_eq!(
            home.audit_file("egress", "b-1"),
            PathBuf::from("/h/audit/egress/b-1.jsonl")
        );
        assert_eq!(
            home.live_config_dir("b-1"),
            PathBuf::from("/h/state/b-1/live-config")
        );
    }
}
