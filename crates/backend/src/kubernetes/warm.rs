//! Warm pools (issue 21): the agent container's waiter and the plan it runs (the warm
//! template's agent runs [`WAITER`]; a claimed pod is sent [`plan_script`]'s plan).
//!
//! A warm pod is made before any bottle claims it, so its agent container cannot carry the
//! bottle's command, environment or clones. Its command is [`WAITER`] instead: it waits
//! until the plan file ([`PLAN_FILE`]) appears in the plan directory — a volume the sidecar
//! bundle writes and the agent mounts read-only — and runs it in its own shell. The plan
//! ([`plan_script`]) holds nothing secret: the environment, the working directory, the
//! clones through the git gate and the agent's argv, every value single-quoted; it ends as
//! the cold pod's agent does, waiting for the start line on stdin before it `exec`s the
//! agent. An agent without a plan runs nothing. The bundle writes the plan under another
//! name and renames it (the waiter never reads half a plan), once it is ready
//! (`bot-bottle sidecar --plan --plan-dir`, the `bundle` crate's `plan` module).

use std::collections::BTreeMap;

use super::objects::PlanError;

/// The plan's file name in the plan directory.
pub const PLAN_FILE: &str = "plan.sh";

/// The warm agent container's command: `/bin/sh -c WAITER agent <plan directory>`.
pub const WAITER: &str =
    "plan_dir=$1; until [ -f \"$plan_dir/plan.sh\" ]; do sleep 1; done; . \"$plan_dir/plan.sh\"";

/// `value` as one single-quoted shell word.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// Whether `name` can be an environment variable's name in the shell.
fn env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The plan the waiter runs: `env`, then `cd workdir`, the clones (URL, directory) through
/// the gate, then the start gate and the agent's `argv`.
pub fn plan_script(
    argv: &[String],
    env: &BTreeMap<String, String>,
    workdir: &str,
    clones: &[(String, String)],
) -> Result<String, PlanError> {
    if argv.is_empty() {
        return Err(PlanError("the agent's command is empty".into()));
    }
    let values = argv
        .iter()
        .chain(env.values())
        .chain(std::iter::once(&workdir.to_owned()))
        .chain(clones.iter().flat_map(|(u, d)| [u, d]))
        .any(|v| v.contains('\0'));
    if values {
        return Err(PlanError(
            "a value of the agent's plan holds a NUL byte, which no command line carries".into(),
        ));
    }
    let mut out = String::from("set -e\n");
    for (name, value) in env {
        if !env_name(name) {
            return Err(PlanError(format!(
                "the agent's environment variable {name:?} is not a name the shell can export (letters, digits, `_`, not starting with a digit)"
            )));
        }
        out.push_str(&format!("export {name}={}\n", quote(value)));
    }
    out.push_str(&format!("cd -- {}\n", quote(workdir)));
    for (url, dir) in clones {
        out.push_str(&format!("git clone -q -- {} {}\n", quote(url), quote(dir)));
    }
    out.push_str("set +e\nset --");
    for arg in argv {
        out.push(' ');
        out.push_str(&quote(arg));
    }
    out.push_str("\nIFS= read -r _ || exit 125\nexec \"$@\"\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Starts the waiter in a real shell on `plan_dir`, stdin piped.
    fn waiter(plan_dir: &std::path::Path) -> std::process::Child {
        Command::new("/bin/sh")
            .args(["-c", WAITER, "agent"])
            .arg(plan_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Writes the plan as the bundle is to: under another name, then renamed.
    fn publish(plan_dir: &std::path::Path, plan: &str) {
        let tmp = plan_dir.join(".plan.sh.tmp");
        std::fs::write(&tmp, plan).unwrap();
        std::fs::rename(&tmp, plan_dir.join(PLAN_FILE)).unwrap();
    }

    /// The waiter waits for the plan, then clones through real git into the working
    /// directory, exports the environment and runs the agent's argv exactly (quotes, `$`,
    /// spaces and newlines are data), once the start line comes.
    #[test]
    fn the_waiter_runs_the_plan_once_it_is_there_with_every_value_as_data() {
        let tmp = tempfile::tempdir().unwrap();
        let (upstream, _) = test_support::git::seeded_upstream(tmp.path());
        let plan_dir = tmp.path().join("plan");
        let workdir = tmp.path().join("work space");
        std::fs::create_dir_all(&plan_dir).unwrap();
        std::fs::create_dir_all(&workdir).unwrap();
        let mut child = waiter(&plan_dir);
        let tricky = "it's $HOME `id` \"q\"\nline two";
        let script = "printf '%s|' \"$0\" \"$@\" > args; printf '%s' \"$TRICKY\" > tricky; cat app/README > readme";
        let argv: Vec<String> = vec![
            "/bin/sh".into(),
            "-c".into(),
            script.into(),
            "zero".into(),
            "a b".into(),
            tricky.into(),
        ];
        let env = BTreeMap::from([
            ("TRICKY".to_owned(), tricky.to_owned()),
            ("PATH".to_owned(), std::env::var("PATH").unwrap()),
        ]);
        let clones = vec![(upstream.display().to_string(), "app".to_owned())];
        let plan = plan_script(&argv, &env, &workdir.display().to_string(), &clones).unwrap();
        publish(&plan_dir, &plan);
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(workdir.join("args")).unwrap(),
            format!("zero|a b|{tricky}|")
        );
        assert_eq!(
            std::fs::read_to_string(workdir.join("tricky")).unwrap(),
            tricky
        );
        assert_eq!(
            std::fs::read_to_string(workdir.join("readme")).unwrap(),
            "hello\n"
        );
    }

    /// Without its start line (`start` gone before it released the agent) the plan ends
    /// with 125 and the agent never runs; a clone that fails stops the plan before it.
    #[test]
    fn no_start_line_or_a_failed_clone_runs_nothing() {
        for failing_clone in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let plan_dir = tmp.path().join("plan");
            std::fs::create_dir_all(&plan_dir).unwrap();
            let mut child = waiter(&plan_dir);
            let clones = if failing_clone {
                vec![(
                    tmp.path().join("nothing.git").display().to_string(),
                    "app".to_owned(),
                )]
            } else {
                Vec::new()
            };
            let argv = vec!["/bin/sh".into(), "-c".into(), "echo ran > ran".into()];
            let env = BTreeMap::from([("PATH".to_owned(), std::env::var("PATH").unwrap())]);
            let plan =
                plan_script(&argv, &env, &tmp.path().display().to_string(), &clones).unwrap();
            publish(&plan_dir, &plan);
            let mut stdin = child.stdin.take().unwrap();
            if failing_clone {
                // The shell may be gone already (the clone failed): a closed pipe is fine.
                let _ = stdin.write_all(b"\n");
            }
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            assert!(!out.status.success(), "failing_clone={failing_clone}");
            if !failing_clone {
                assert_eq!(out.status.code(), Some(125));
            }
            assert!(
                !tmp.path().join("ran").exists(),
                "failing_clone={failing_clone}: the agent ran"
            );
        }
    }

    #[test]
    fn a_plan_that_cannot_be_said_in_the_shell_is_refused() {
        let argv = vec!["claude".to_owned()];
        let bad = BTreeMap::from([("A-B".to_owned(), "x".to_owned())]);
        let e = plan_script(&argv, &bad, "/workspace", &[]).unwrap_err();
        assert!(e.0.contains("\"A-B\""), "{e}");
        let nul = BTreeMap::from([("A".to_owned(), "x\0y".to_owned())]);
        assert!(plan_script(&argv, &nul, "/workspace", &[]).is_err());
        assert!(plan_script(&[], &BTreeMap::new(), "/workspace", &[]).is_err());
    }
}
