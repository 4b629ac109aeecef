//! Where proposals live under `$BOT_BOTTLE_HOME`.
//!
//! The `state` crate owns the whole layout, the one reading of `BOT_BOTTLE_HOME` and the one
//! check of names that become path components; this module only names what the queue and
//! the audit log use of it, so that a hostile identity or proposal id is refused in one place.

pub use state::{Home, NameError, check_identity, check_proposal_id};

/// The mode the queue's files and the audit log's head are created with, before the umask:
/// the operator's dashboard and CLI read what a bottle's supervise wrote, and in a docker
/// bottle that is a sidecar container, so these files keep the mode any new file of the
/// process gets rather than the state directory's 0600.
pub const FILE_MODE: u32 = 0o666;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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
