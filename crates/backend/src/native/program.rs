//! Whether a program of the host (the agent: `claude`, `codex`) can run inside a native
//! bottle. A native bottle sees the host's system directories read-only and nothing of the
//! user's home, so a program installed per user (`~/.local/bin/claude`, an npm prefix in
//! the home) or a system-wide link into the home is not there: said before anything is
//! created, with the fix, instead of the bottle failing with "command not found".

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::plan::default_system_dirs;

/// The directories of the bottle's `PATH` that come from the host (the agent's own
/// `~/.local/bin` is the bottle's, empty at first).
pub const BOTTLE_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Why a program cannot run in a native bottle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramProblem {
    /// Not on the host at all.
    #[error(
        "the native backend runs the host's `{name}` inside the bottle, and there is none on this machine; {fix}"
    )]
    Missing {
        /// The program.
        name: String,
        /// How to install it.
        fix: String,
    },
    /// On the host, but where a bottle cannot see it.
    #[error(
        "the native backend runs the host's `{name}` inside the bottle, and {} is not visible there (a bottle sees the host's /usr, /bin, /sbin, /lib*, /etc and /opt, not your home); {fix}",
        found.display()
    )]
    NotVisible {
        /// The program.
        name: String,
        /// Where the host has it.
        found: PathBuf,
        /// How to install it where a bottle sees it.
        fix: String,
    },
}

/// How to install a provider's agent system-wide.
pub fn install_hint(name: &str) -> String {
    let package = match name {
        "claude" => Some("@anthropic-ai/claude-code"),
        "codex" => Some("@openai/codex"),
        "gemini" => Some("@google/gemini-cli"),
        "opencode" => Some("opencode-ai"),
        _ => None,
    };
    match package {
        Some(p) => format!(
            "install it system-wide (as root: `npm install -g {p}`, which puts it in /usr/local/bin), or use --backend docker"
        ),
        None => format!("install `{name}` system-wide (under /usr), or use --backend docker"),
    }
}

/// Finds `name` as a native bottle would: in [`BOTTLE_PATH`], resolved to a file inside
/// the system directories the bottle sees. `host_path` is the host's `$PATH`, searched only
/// to say where the program is when the bottle cannot see it.
pub fn find_for_bottle(name: &str, host_path: Option<&OsStr>) -> Result<PathBuf, ProgramProblem> {
    find_in(
        name,
        host_path,
        &BOTTLE_PATH.map(PathBuf::from),
        &default_system_dirs(),
    )
}

fn find_in(
    name: &str,
    host_path: Option<&OsStr>,
    bottle_path: &[PathBuf],
    system_dirs: &[PathBuf],
) -> Result<PathBuf, ProgramProblem> {
    let fix = install_hint(name);
    let mut outside = None;
    for dir in bottle_path {
        let candidate = dir.join(name);
        if !is_executable(&candidate) {
            continue;
        }
        let real = std::fs::canonicalize(&candidate).unwrap_or_else(|_| candidate.clone());
        if system_dirs.iter().any(|d| real.starts_with(d)) {
            return Ok(candidate);
        }
        outside.get_or_insert(real);
    }
    let on_host = outside.or_else(|| {
        host_path
            .into_iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    });
    match on_host {
        Some(found) => Err(ProgramProblem::NotVisible {
            name: name.to_owned(),
            found,
            fix,
        }),
        None => Err(ProgramProblem::Missing {
            name: name.to_owned(),
            fix,
        }),
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn exe(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn found_missing_or_only_in_the_home() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path().join("usr");
        let home = tmp.path().join("home/u");
        let bin = sys.join("local/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let find = |name: &str, path: &Path| {
            find_in(
                name,
                Some(path.as_os_str()),
                std::slice::from_ref(&bin),
                std::slice::from_ref(&sys),
            )
        };
        let host_path = std::env::join_paths([home.join(".local/bin"), bin.clone()]).unwrap();
        let host_path = Path::new(&host_path);

        assert_eq!(
            find("claude", host_path),
            Err(ProgramProblem::Missing {
                name: "claude".into(),
                fix: install_hint("claude")
            })
        );
        // installed per user: on the host's PATH, not in the bottle's
        exe(&home.join(".local/bin/claude"));
        assert_eq!(
            find("claude", host_path),
            Err(ProgramProblem::NotVisible {
                name: "claude".into(),
                found: home.join(".local/bin/claude"),
                fix: install_hint("claude")
            })
        );
        // a system-wide link into the home does not help either
        std::os::unix::fs::symlink(home.join(".local/bin/claude"), bin.join("claude")).unwrap();
        assert_eq!(
            find("claude", host_path),
            Err(ProgramProblem::NotVisible {
                name: "claude".into(),
                found: home.join(".local/bin/claude"),
                fix: install_hint("claude")
            })
        );
        // installed system-wide
        exe(&bin.join("codex"));
        assert_eq!(find("codex", host_path), Ok(bin.join("codex")));
    }

    #[test]
    fn messages_say_the_fix() {
        assert_eq!(
            ProgramProblem::Missing {
                name: "codex".into(),
                fix: install_hint("codex")
            }
            .to_string(),
            "the native backend runs the host's `codex` inside the bottle, and there is none on this machine; install it system-wide (as root: `npm install -g @openai/codex`, which puts it in /usr/local/bin), or use --backend docker"
        );
        assert_eq!(
            ProgramProblem::NotVisible {
                name: "claude".into(),
                found: "/home/u/.local/bin/claude".into(),
                fix: install_hint("claude")
            }
            .to_string(),
            "the native backend runs the host's `claude` inside the bottle, and /home/u/.local/bin/claude is not visible there (a bottle sees the host's /usr, /bin, /sbin, /lib*, /etc and /opt, not your home); install it system-wide (as root: `npm install -g @anthropic-ai/claude-code`, which puts it in /usr/local/bin), or use --backend docker"
        );
    }
}
