//! The logs of bottles that are gone: when a bottle's state is removed (a clean exit, a
//! requested stop, `discard`), its `logs/` directory (the egress request log, the sidecar
//! bundle's log) moves to `$BOT_BOTTLE_HOME/logs/bottles/<identity>/`, where the operator
//! reads it (`bot-bottle logs ID`). Bounded: the logs of the last [`KEPT_BOTTLES`] bottles
//! are kept, older ones removed (moved into the trash, see [`crate::trash`]); each request log
//! is itself rotated by the proxy.

use std::fs;
use std::path::{Path, PathBuf};

use std::os::unix::fs::DirBuilderExt;

use crate::{Home, Identity, StateError};

/// How many ended bottles keep their logs.
pub const KEPT_BOTTLES: usize = 20;

impl Home {
    /// `logs/bottles/`: the kept logs of ended bottles, one directory per identity.
    pub fn kept_logs_root(&self) -> PathBuf {
        self.logs_dir().join("bottles")
    }

    /// `logs/bottles/<identity>/`.
    pub fn kept_logs_dir(&self, id: &Identity) -> PathBuf {
        self.kept_logs_root().join(id.as_str())
    }

    /// Moves a bottle's `logs` directory (`from`, inside its state) to
    /// [`Home::kept_logs_dir`], replacing an older copy, then removes the oldest kept logs
    /// beyond [`KEPT_BOTTLES`]. Nothing to move is not an error.
    pub fn keep_logs(&self, id: &Identity, from: &Path) -> Result<(), StateError> {
        if !from.is_dir() {
            return Ok(());
        }
        let root = self.kept_logs_root();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|source| StateError::Io {
                action: "cannot create",
                path: root.clone(),
                source,
            })?;
        let to = self.kept_logs_dir(id);
        let _ = fs::remove_dir_all(&to);
        fs::rename(from, &to).map_err(|source| StateError::Io {
            action: "cannot keep the logs in",
            path: to.clone(),
            source,
        })?;
        // Touched so that the newest kept logs are the last removed.
        let _ = fs::File::open(&to).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        prune(self, &root, KEPT_BOTTLES);
        Ok(())
    }
}

/// Removes the oldest directories of `root` beyond `keep`: moved into the trash (see
/// [`crate::trash`]; removed in place if they cannot be).
fn prune(home: &Home, root: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_dir()
                .then(|| (meta.modified().unwrap_or(std::time::UNIX_EPOCH), e.path()))
        })
        .collect();
    if dirs.len() <= keep {
        return;
    }
    dirs.sort();
    for (_, dir) in &dirs[..dirs.len() - keep] {
        if home.move_to_trash(dir, "logs").is_err() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn logs_move_out_of_the_state_and_only_the_newest_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path());
        let mut ids = Vec::new();
        for n in 0..(KEPT_BOTTLES + 2) {
            let id = Identity::parse(&format!("dev-{n:05x}")).unwrap();
            let from = tmp.path().join(format!("state-{n}/logs"));
            fs::create_dir_all(&from).unwrap();
            fs::write(from.join("egress.jsonl"), format!("{n}\n")).unwrap();
            home.keep_logs(&id, &from).unwrap();
            assert!(!from.exists());
            // distinct modification times, oldest first
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + n as u64);
            fs::File::open(home.kept_logs_dir(&id))
                .unwrap()
                .set_modified(t)
                .unwrap();
            ids.push(id);
        }
        // one more: the two oldest go
        let id = Identity::parse("dev-fffff").unwrap();
        let from = tmp.path().join("last/logs");
        fs::create_dir_all(&from).unwrap();
        home.keep_logs(&id, &from).unwrap();
        let mut kept: Vec<String> = fs::read_dir(home.kept_logs_root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        kept.sort();
        let mut want: Vec<String> = ids[3..].iter().map(|i| i.to_string()).collect();
        want.push("dev-fffff".into());
        want.sort();
        assert_eq!(kept, want);
        // The pruned ones wait in the trash until it is emptied.
        assert!(home.trash_needs_emptying());
        assert_eq!(home.empty_trash(&[]).unwrap().moved, 3);
        assert_eq!(
            fs::read_to_string(home.kept_logs_dir(&ids[5]).join("egress.jsonl")).unwrap(),
            "5\n"
        );
        // nothing to keep: fine
        home.keep_logs(&id, &tmp.path().join("none")).unwrap();
    }
}
