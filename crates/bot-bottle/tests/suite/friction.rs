//! A newcomer's first runs (issue 16 §3): each refusal names the input and says the fix.

use std::path::Path;
use std::process::Command;

use pretty_assertions::assert_eq;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `bot-bottle ARGS` in `cwd` with `HOME` = `home` and no `BOT_BOTTLE_*` variables.
fn run(cwd: &Path, home: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(args)
        .current_dir(cwd)
        .env_remove("BOT_BOTTLE_MANIFEST")
        .env_remove("BOT_BOTTLE_HOME")
        .env_remove("BOT_BOTTLE_BACKEND")
        .env_remove("BOT_BOTTLE_LOG")
        .env("HOME", home)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[test]
fn start_from_home_says_to_run_it_in_the_project_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("u");
    // A home that has been used: the state directory exists, no manifest anywhere.
    std::fs::create_dir_all(home.join(".bot-bottle/state")).unwrap();
    for args in [
        &["start", "demo"][..],
        &["start", "--copy-cwd", "demo"][..],
        &["start", "--backend", "docker", "demo"][..],
    ] {
        let r = run(&home, &home, args);
        assert_eq!(
            (r.code, r.stdout.as_str(), r.stderr.as_str()),
            (
                2,
                "",
                format!(
                    "error: bot-bottle start gives the bottle the directory it runs in, and {} is your home directory, with your credentials (~/.ssh, ~/.bot-bottle...); cd into your project directory (e.g. `cd ~/src/myproject`) and run it there\n",
                    home.display()
                )
                .as_str()
            ),
            "{args:?}"
        );
    }
}

#[test]
fn the_state_directory_is_not_taken_for_a_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("u");
    std::fs::create_dir_all(home.join(".bot-bottle/state")).unwrap();
    let r = run(&home, &home, &["manifest", "check"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            2,
            "",
            format!(
                "error: no manifest found; looked for {h}/bot-bottle.yaml, {h}/.bot-bottle, {h}/.bot-bottle/manifest; create bot-bottle.yaml (see examples/bot-bottle.yaml) or pass --manifest PATH\n",
                h = home.display()
            )
            .as_str()
        )
    );
}
