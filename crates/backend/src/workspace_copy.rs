//! `--copy-cwd`: the bottle gets a copy of the working directory (made once, with `cp -a`,
//! into the bottle's state) instead of the directory itself. One function for every backend,
//! so that a failed copy is said the same way everywhere: the path, what `cp` could not do,
//! and the fix — never `cp`'s raw output on the operator's terminal.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use crate::BackendError;

/// At most this many of `cp`'s complaints are quoted in the error.
const QUOTED: usize = 3;

/// Makes the copy a `copy` workspace asks for ([`crate::WorkspaceMode::Copy`]); nothing for a
/// bind-mounted one. The `prepare` step of the backends that copy before launch.
pub(crate) fn prepare(spec: &crate::LaunchSpec) -> Result<(), BackendError> {
    match &spec.workspace.mode {
        crate::WorkspaceMode::Copy { into } => copy_workspace(&spec.workspace.host, into),
        _ => Ok(()),
    }
}

/// Copies `from` into `into` (unless `into` exists already: a resumed bottle keeps its copy).
/// The copy is made beside `into` and renamed into place, so a failed copy leaves nothing
/// that a resume would take for a finished one.
pub(crate) fn copy_workspace(from: &Path, into: &Path) -> Result<(), BackendError> {
    if into.exists() {
        return Ok(());
    }
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BackendError::Io {
            action,
            path,
            source,
        }
    };
    let partial = into.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(io("create the workspace copy", &partial))?;
    let mut source = from.as_os_str().to_owned();
    source.push("/.");
    let out = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg("--")
        .arg(&source)
        .arg(&partial)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .map_err(io("run cp to copy the workspace", from))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(copy_failed(
            from,
            out.status,
            &String::from_utf8_lossy(&out.stderr),
        ));
    }
    std::fs::rename(&partial, into).map_err(io("rename the workspace copy", &partial))
}

/// The error of a failed copy: the workspace, the first complaints of `cp` (without its
/// `cp: ` prefix), and what to do.
fn copy_failed(from: &Path, status: ExitStatus, stderr: &str) -> BackendError {
    let complaints: Vec<&str> = stderr
        .lines()
        .map(|l| l.strip_prefix("cp: ").unwrap_or(l).trim())
        .filter(|l| !l.is_empty())
        .collect();
    let what = match complaints.len() {
        0 => format!("cp exited with {status}"),
        n if n <= QUOTED => complaints.join("; "),
        n => format!(
            "{} (and {} more)",
            complaints[..QUOTED].join("; "),
            n - QUOTED
        ),
    };
    BackendError::Setup {
        stage: "copy the workspace".to_owned(),
        message: format!(
            "--copy-cwd could not copy the workspace {}: {what}; make those files readable \
             (or move them out of the project), or start without --copy-cwd",
            from.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_copy_is_made_once() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("w");
        std::fs::create_dir_all(from.join("src")).unwrap();
        std::fs::write(from.join("src/main.rs"), "fn main() {}\n").unwrap();
        let into = tmp.path().join("copy");
        copy_workspace(&from, &into).unwrap();
        assert_eq!(
            std::fs::read_to_string(into.join("src/main.rs")).unwrap(),
            "fn main() {}\n"
        );
        std::fs::write(from.join("src/main.rs"), "changed\n").unwrap();
        copy_workspace(&from, &into).unwrap();
        assert_eq!(
            std::fs::read_to_string(into.join("src/main.rs")).unwrap(),
            "fn main() {}\n"
        );
        assert!(!tmp.path().join("copy.partial").exists());
    }

    #[test]
    fn a_failed_copy_names_the_workspace_what_failed_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("missing");
        let into = tmp.path().join("copy");
        let err = copy_workspace(&from, &into).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "could not set up the bottle (copy the workspace): --copy-cwd could not copy the workspace {}: cannot stat '{}/.': No such file or directory; make those files readable (or move them out of the project), or start without --copy-cwd",
                from.display(),
                from.display()
            )
        );
        assert!(!into.exists());
        assert!(!tmp.path().join("copy.partial").exists());
    }

    #[test]
    fn many_complaints_are_cut_short() {
        let stderr = "cp: cannot open 'w/a' for reading: Permission denied\n\
                      cp: cannot open 'w/b' for reading: Permission denied\n\
                      cp: cannot open 'w/c' for reading: Permission denied\n\
                      cp: cannot open 'w/d' for reading: Permission denied\n\
                      cp: cannot open 'w/e' for reading: Permission denied\n";
        let err = copy_failed(Path::new("/p/w"), ExitStatus::from_raw(256), stderr);
        assert_eq!(
            err.to_string(),
            "could not set up the bottle (copy the workspace): --copy-cwd could not copy the workspace /p/w: cannot open 'w/a' for reading: Permission denied; cannot open 'w/b' for reading: Permission denied; cannot open 'w/c' for reading: Permission denied (and 2 more); make those files readable (or move them out of the project), or start without --copy-cwd"
        );
        let err = copy_failed(Path::new("/p/w"), ExitStatus::from_raw(256), "");
        assert_eq!(
            err.to_string(),
            "could not set up the bottle (copy the workspace): --copy-cwd could not copy the workspace /p/w: cp exited with exit status: 1; make those files readable (or move them out of the project), or start without --copy-cwd"
        );
    }
}
