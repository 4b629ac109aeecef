//! Where gitleaks finds its files, so that a repository set up for gitleaks scans the same
//! way with `bot-bottle scan`: the rule file (`--config`, then `GITLEAKS_CONFIG`, then
//! `GITLEAKS_CONFIG_TOML`, then `.gitleaks.toml` in the scanned directory) and the
//! `.gitleaksignore` files (the one `--gitleaks-ignore-path` names or holds, and the one in the
//! scanned directory).
//!
//! The environment and the file system are asked through [`Env`], so the order is tested
//! without touching the process's environment.

use std::path::{Path, PathBuf};

/// What the lookup may ask of the outside world.
pub trait Env {
    /// An environment variable, when set and not empty.
    fn var(&self, name: &str) -> Option<String>;
    /// Whether a regular file exists at `path`.
    fn is_file(&self, path: &Path) -> bool;
}

/// The process's environment and file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }
}

/// Where the rules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A rule file, and why it was chosen (`--config`, `GITLEAKS_CONFIG`, `.gitleaks.toml in
    /// the scanned directory`).
    File(PathBuf, &'static str),
    /// The rule file's text, from `GITLEAKS_CONFIG_TOML`.
    Toml(String),
    /// The built-in rules.
    Builtin,
}

/// The rule file gitleaks would use for a scan of `source` (a directory or repository),
/// given an explicit `--config`.
pub fn find_config(env: &dyn Env, explicit: Option<&Path>, source: Option<&Path>) -> ConfigSource {
    if let Some(p) = explicit {
        return ConfigSource::File(p.to_path_buf(), "--config");
    }
    if let Some(p) = env.var("GITLEAKS_CONFIG") {
        return ConfigSource::File(PathBuf::from(p), "GITLEAKS_CONFIG");
    }
    if let Some(t) = env.var("GITLEAKS_CONFIG_TOML") {
        return ConfigSource::Toml(t);
    }
    if let Some(dir) = source {
        let f = dir.join(".gitleaks.toml");
        if env.is_file(&f) {
            return ConfigSource::File(f, ".gitleaks.toml in the scanned directory");
        }
    }
    ConfigSource::Builtin
}

/// The `.gitleaksignore` files gitleaks reads for a scan of `source`: `ignore_path` itself
/// when it is a file, `ignore_path/.gitleaksignore`, and `source/.gitleaksignore`; those that
/// exist, each once.
pub fn gitleaksignore_files(
    env: &dyn Env,
    ignore_path: &Path,
    source: Option<&Path>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut candidates = vec![
        ignore_path.to_path_buf(),
        ignore_path.join(".gitleaksignore"),
    ];
    if let Some(dir) = source {
        candidates.push(dir.join(".gitleaksignore"));
    }
    for c in candidates {
        if env.is_file(&c) && !out.iter().any(|o| same_file(o, &c)) {
            out.push(c);
        }
    }
    out
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        vars: HashMap<&'static str, &'static str>,
        files: Vec<PathBuf>,
    }

    impl Env for Fake {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).map(|v| v.to_string())
        }
        fn is_file(&self, path: &Path) -> bool {
            self.files.iter().any(|f| f == path)
        }
    }

    #[test]
    fn config_lookup_follows_gitleaks_order() {
        let mut env = Fake {
            vars: HashMap::new(),
            files: vec![PathBuf::from("repo/.gitleaks.toml")],
        };
        let repo = Some(Path::new("repo"));
        assert_eq!(
            find_config(&env, None, repo),
            ConfigSource::File(
                "repo/.gitleaks.toml".into(),
                ".gitleaks.toml in the scanned directory"
            )
        );
        assert_eq!(
            find_config(&env, None, Some(Path::new("other"))),
            ConfigSource::Builtin
        );
        env.vars.insert("GITLEAKS_CONFIG_TOML", "title = 'x'");
        assert_eq!(
            find_config(&env, None, repo),
            ConfigSource::Toml("title = 'x'".into())
        );
        env.vars.insert("GITLEAKS_CONFIG", "/etc/g.toml");
        assert_eq!(
            find_config(&env, None, repo),
            ConfigSource::File("/etc/g.toml".into(), "GITLEAKS_CONFIG")
        );
        assert_eq!(
            find_config(&env, Some(Path::new("c.toml")), repo),
            ConfigSource::File("c.toml".into(), "--config")
        );
    }

    #[test]
    fn ignore_files_from_the_flag_and_the_scanned_directory() {
        let env = Fake {
            vars: HashMap::new(),
            files: vec![
                PathBuf::from("./.gitleaksignore"),
                PathBuf::from("repo/.gitleaksignore"),
            ],
        };
        assert_eq!(
            gitleaksignore_files(&env, Path::new("."), Some(Path::new("repo"))),
            vec![
                PathBuf::from("./.gitleaksignore"),
                PathBuf::from("repo/.gitleaksignore")
            ]
        );
        assert_eq!(
            gitleaksignore_files(&env, Path::new("none"), None),
            Vec::<PathBuf>::new()
        );
    }
}
