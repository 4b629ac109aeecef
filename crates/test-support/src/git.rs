//! Real git for tests: commands with a fixed identity, and a bare upstream with one commit.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `git ARGS` in `dir` with a fixed author; panics with git's stderr when it fails.
/// Its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap_or_else(|e| panic!("cannot run git: {e}"));
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository `<dir>/up.git` whose `main` has one commit (`README`: `hello`), made
/// from a work tree at `<dir>/seed`; the repository's path and the commit id.
pub fn seeded_upstream(dir: &Path) -> (PathBuf, String) {
    let upstream = dir.join("up.git");
    git(dir, &["init", "-q", "--bare", "-b", "main", "up.git"]);
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README"), "hello\n")
        .unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-qm", "seed"]);
    let path = upstream.to_string_lossy().into_owned();
    git(&seed, &["push", "-q", &path, "main"]);
    let commit = git(&seed, &["rev-parse", "HEAD"]);
    (upstream, commit)
}
