//! The agent's plan, published by the bundle once it is ready (kubernetes warm pools, issue
//! 21: `bot-bottle sidecar --plan FILE --plan-dir DIR`).
//!
//! A warm pod's agent container runs a waiter instead of the bottle's command: it waits for
//! `plan.sh` in a volume the bundle writes and the agent mounts read-only, then runs it. The
//! plan arrives with the bundle's config (`crate::intake`); the bundle publishes it only once
//! every sidecar listens, so the agent's first request finds egress, the git gate and
//! supervise there (the plan clones through the gate at once). It is written under another
//! name and renamed, so the waiter never runs half a plan; it is readable by every uid (the
//! agent's is not the bundle's) and holds nothing secret. If it cannot be published the
//! bundle stops with the reason: the agent then runs nothing, and the launcher, which waits
//! for the pod, fails the launch.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The plan's name in the plan directory (what the agent's waiter looks for).
pub const PLAN_FILE: &str = "plan.sh";

/// The plan's mode: readable by the agent's uid, writable by none.
pub const PLAN_MODE: u32 = 0o444;

/// The largest plan taken (it came through the intake, which holds no more in all).
const MAX_PLAN: u64 = crate::intake::MAX_BYTES as u64;

/// Where the plan comes from and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The plan as received (`/run/bot-bottle/sidecar/plan.sh` in a warm pod).
    pub file: PathBuf,
    /// The directory the agent's waiter watches.
    pub dir: PathBuf,
}

/// Why the plan was not published.
#[derive(Debug, thiserror::Error)]
#[error("cannot publish the agent's plan {} into {}: {message}", file.display(), dir.display())]
pub struct PlanError {
    /// The plan as received.
    pub file: PathBuf,
    /// The plan directory.
    pub dir: PathBuf,
    /// What failed, and what to do.
    pub message: String,
}

impl Plan {
    /// Copies the plan into the plan directory as [`PLAN_FILE`], mode [`PLAN_MODE`], through a
    /// temporary name and a rename; returns the published path. A plan there already is an
    /// error (a bundle publishes one plan).
    pub fn publish(&self) -> Result<PathBuf, PlanError> {
        let fail = |message: String| PlanError {
            file: self.file.clone(),
            dir: self.dir.clone(),
            message,
        };
        let content = read_plan(&self.file).map_err(fail)?;
        let target = self.dir.join(PLAN_FILE);
        match std::fs::symlink_metadata(&target) {
            Ok(_) => {
                return Err(fail(format!(
                    "{PLAN_FILE} is there already; a bundle publishes one plan (a restarted sidecar container needs a new pod: start the bottle again)"
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(format!("cannot look at {PLAN_FILE}: {e}"))),
        }
        let tmp = self
            .dir
            .join(format!(".{PLAN_FILE}.{}.tmp", std::process::id()));
        let written = write_readonly(&tmp, &content).and_then(|()| std::fs::rename(&tmp, &target));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(format!(
                "{e} (the plan directory must be a writable volume of the sidecar, the agent's read-only)"
            )));
        }
        Ok(target)
    }
}

/// The received plan: a regular file (a FIFO or a device is refused without waiting on
/// it), at most [`MAX_PLAN`] bytes.
fn read_plan(file: &Path) -> Result<Vec<u8>, String> {
    state::read::read_limited(file, MAX_PLAN).map_err(|e| format!("cannot read it: {e}"))
}

/// Writes `content` into a new file at `path`, then sets [`PLAN_MODE`] on it (explicitly:
/// the sidecar's script runs under `umask 077`).
fn write_readonly(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)?;
    file.set_permissions(std::fs::Permissions::from_mode(PLAN_MODE))?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn plan(tmp: &Path, content: &[u8]) -> Plan {
        let file = tmp.join("received.sh");
        std::fs::write(&file, content).unwrap();
        let dir = tmp.join("plan");
        std::fs::create_dir(&dir).unwrap();
        Plan { file, dir }
    }

    #[test]
    fn the_plan_is_published_unchanged_readable_by_all_and_only_under_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let content = b"set -e\nexport A='x y'\n\0binary\xff";
        let plan = plan(tmp.path(), content);
        let published = plan.publish().unwrap();
        assert_eq!(published, plan.dir.join(PLAN_FILE));
        assert_eq!(std::fs::read(&published).unwrap(), content);
        let mode = std::fs::metadata(&published).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, PLAN_MODE);
        let names: Vec<_> = std::fs::read_dir(&plan.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [PLAN_FILE]);
    }

    /// One plan: a second publish (or one planted before) is refused and leaves the first.
    #[test]
    fn a_plan_there_already_is_refused_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = plan(tmp.path(), b"echo first\n");
        plan.publish().unwrap();
        std::fs::write(&plan.file, "echo second\n").unwrap();
        let e = plan.publish().unwrap_err().to_string();
        assert!(e.contains("is there already"), "{e}");
        assert_eq!(
            std::fs::read_to_string(plan.dir.join(PLAN_FILE)).unwrap(),
            "echo first\n"
        );
    }

    #[test]
    fn a_missing_plan_or_a_missing_directory_says_which() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = plan(tmp.path(), b"echo\n");
        let missing_file = Plan {
            file: tmp.path().join("nothing.sh"),
            dir: plan.dir.clone(),
        };
        let e = missing_file.publish().unwrap_err().to_string();
        assert!(
            e.contains("nothing.sh") && e.contains("cannot read it"),
            "{e}"
        );
        let missing_dir = Plan {
            file: plan.file.clone(),
            dir: tmp.path().join("no-dir"),
        };
        let e = missing_dir.publish().unwrap_err().to_string();
        assert!(e.contains("no-dir") && e.contains("writable volume"), "{e}");
        let dir_as_file = Plan {
            file: plan.dir.clone(),
            dir: plan.dir.clone(),
        };
        let e = dir_as_file.publish().unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
