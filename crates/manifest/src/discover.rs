//! Where the manifest is: `--manifest PATH`, `$BOT_BOTTLE_MANIFEST`, `./bot-bottle.yaml`,
//! `./.bot-bottle/`, `$BOT_BOTTLE_HOME/manifest/` (home default `~/.bot-bottle`).
//!
//! The search is a function of its inputs (explicit path, environment lookups, working
//! directory, home directory) plus the file system, so tests can drive it without touching
//! the real environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::LoadError;

/// Environment variable naming the manifest file or directory.
pub const MANIFEST_ENV: &str = "BOT_BOTTLE_MANIFEST";
/// Environment variable naming bot-bottle's home directory (default `~/.bot-bottle`).
pub use state::HOME_ENV;

/// The inputs of the manifest search.
#[derive(Debug, Clone, Default)]
pub struct DiscoverOptions {
    /// `--manifest PATH`, if given: used as is, never falls back to the search.
    pub explicit: Option<PathBuf>,
    /// `$BOT_BOTTLE_MANIFEST`, if set and not empty.
    pub manifest_env: Option<PathBuf>,
    /// `$BOT_BOTTLE_HOME`, if set and not empty.
    pub bot_bottle_home: Option<PathBuf>,
    /// The working directory (for `./bot-bottle.yaml` and `./.bot-bottle/`).
    pub cwd: PathBuf,
    /// The user's home directory (for the default `~/.bot-bottle`).
    pub home: Option<PathBuf>,
}

impl DiscoverOptions {
    /// Builds the options from an explicit path and an environment lookup function
    /// (`|name| std::env::var_os(name)` in the binary).
    pub fn from_env(
        explicit: Option<PathBuf>,
        env: impl Fn(&str) -> Option<OsString>,
        cwd: PathBuf,
    ) -> Self {
        let non_empty = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        DiscoverOptions {
            explicit,
            manifest_env: non_empty(MANIFEST_ENV),
            bot_bottle_home: non_empty(HOME_ENV),
            cwd,
            home: non_empty("HOME"),
        }
    }

    /// `$BOT_BOTTLE_HOME`, or `~/.bot-bottle` (as `state` resolves it).
    pub fn bot_bottle_home(&self) -> Option<PathBuf> {
        let var = |name: &str| match name {
            HOME_ENV => self.bot_bottle_home.clone().map(OsString::from),
            "HOME" => self.home.clone().map(OsString::from),
            _ => None,
        };
        state::Home::from_vars(var)
            .ok()
            .map(|home| home.root().to_path_buf())
    }
}

/// Finds the manifest to load. An explicit path or `$BOT_BOTTLE_MANIFEST` must exist; the
/// other places are tried in order and skipped when absent. Finding nothing is an error
/// that lists every place looked at.
pub fn find_manifest(opts: &DiscoverOptions) -> Result<PathBuf, LoadError> {
    let named = opts
        .explicit
        .as_ref()
        .map(|p| (p, "--manifest"))
        .or_else(|| opts.manifest_env.as_ref().map(|p| (p, MANIFEST_ENV)));
    if let Some((path, origin)) = named {
        // Returned as given, so that errors show the path the user typed.
        return if absolutize(&opts.cwd, path).exists() {
            Ok(path.clone())
        } else {
            Err(LoadError::Missing {
                path: path.clone(),
                origin: origin.to_owned(),
            })
        };
    }
    let mut searched = Vec::new();
    let file = opts.cwd.join("bot-bottle.yaml");
    // Found but not a file (a directory, a FIFO...): said, rather than skipped for a
    // manifest further down the search that the user did not mean.
    if let Ok(meta) = std::fs::metadata(&file) {
        return match state::read::check_regular(&meta, u64::MAX) {
            Ok(()) => Ok(file),
            Err(source) => Err(LoadError::Read {
                path: file,
                source: std::sync::Arc::new(source),
            }),
        };
    }
    searched.push(file);
    let dir = opts.cwd.join(".bot-bottle");
    // `./.bot-bottle` run from `~` is bot-bottle's home (its state), never a manifest: it
    // is skipped, and the search goes on to `$BOT_BOTTLE_HOME/manifest/`.
    if dir.is_dir() && !is_bot_bottle_home(opts, &dir) {
        return Ok(dir);
    }
    searched.push(dir);
    if let Some(home) = opts.bot_bottle_home() {
        let dir = state::Home::new(absolutize(&opts.cwd, &home)).manifest_dir();
        if dir.is_dir() {
            return Ok(dir);
        }
        searched.push(dir);
    }
    Err(LoadError::NotFound { searched })
}

/// Whether `dir` is bot-bottle's home (`$BOT_BOTTLE_HOME` or `~/.bot-bottle`), compared
/// after following links.
fn is_bot_bottle_home(opts: &DiscoverOptions, dir: &Path) -> bool {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let dir = real(dir);
    [
        opts.bot_bottle_home.clone(),
        opts.home.as_ref().map(|h| h.join(".bot-bottle")),
    ]
    .into_iter()
    .flatten()
    .any(|home| real(&absolutize(&opts.cwd, &home)) == dir)
}

fn absolutize(cwd: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn opts(cwd: &Path) -> DiscoverOptions {
        DiscoverOptions {
            cwd: cwd.to_path_buf(),
            home: Some(cwd.join("home")),
            ..DiscoverOptions::default()
        }
    }

    #[test]
    fn nothing_found_lists_every_place() {
        let tmp = tempfile::tempdir().unwrap();
        let err = find_manifest(&opts(tmp.path())).unwrap_err();
        assert_eq!(
            err,
            LoadError::NotFound {
                searched: vec![
                    tmp.path().join("bot-bottle.yaml"),
                    tmp.path().join(".bot-bottle"),
                    tmp.path().join("home/.bot-bottle/manifest"),
                ]
            }
        );
    }

    #[test]
    fn search_order() {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = tmp.path();
        let o = DiscoverOptions {
            bot_bottle_home: Some(cwd.join("bbhome")),
            ..opts(cwd)
        };
        std::fs::create_dir_all(cwd.join("bbhome/manifest")).unwrap();
        std::fs::create_dir_all(cwd.join("home/.bot-bottle/manifest")).unwrap();
        assert_eq!(find_manifest(&o).unwrap(), cwd.join("bbhome/manifest"));
        assert_eq!(
            find_manifest(&opts(cwd)).unwrap(),
            cwd.join("home/.bot-bottle/manifest")
        );
        std::fs::create_dir(cwd.join(".bot-bottle")).unwrap();
        assert_eq!(find_manifest(&o).unwrap(), cwd.join(".bot-bottle"));
        std::fs::write(cwd.join("bot-bottle.yaml"), "bottles: {}\n").unwrap();
        assert_eq!(find_manifest(&o).unwrap(), cwd.join("bot-bottle.yaml"));
        std::fs::write(cwd.join("env.yaml"), "").unwrap();
        let with_env = DiscoverOptions {
            manifest_env: Some(PathBuf::from("env.yaml")),
            ..o.clone()
        };
        assert_eq!(find_manifest(&with_env).unwrap(), PathBuf::from("env.yaml"));
        std::fs::write(cwd.join("explicit.yaml"), "").unwrap();
        let explicit = DiscoverOptions {
            explicit: Some(cwd.join("explicit.yaml")),
            ..with_env
        };
        assert_eq!(find_manifest(&explicit).unwrap(), cwd.join("explicit.yaml"));
    }

    #[test]
    fn the_state_in_the_home_is_never_taken_for_a_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(home.join(".bot-bottle/state")).unwrap();
        // Run from `~`: `./.bot-bottle` is the state, skipped; nothing else is there.
        let from_home = DiscoverOptions {
            cwd: home.clone(),
            home: Some(home.clone()),
            ..DiscoverOptions::default()
        };
        assert_eq!(
            find_manifest(&from_home).unwrap_err(),
            LoadError::NotFound {
                searched: vec![
                    home.join("bot-bottle.yaml"),
                    home.join(".bot-bottle"),
                    home.join(".bot-bottle/manifest"),
                ]
            }
        );
        // The manifest kept in the state's `manifest/` is found.
        std::fs::create_dir_all(home.join(".bot-bottle/manifest")).unwrap();
        assert_eq!(
            find_manifest(&from_home).unwrap(),
            home.join(".bot-bottle/manifest")
        );
        // The same with `$BOT_BOTTLE_HOME` naming it (relative to the working directory).
        let named = DiscoverOptions {
            bot_bottle_home: Some(PathBuf::from(".bot-bottle")),
            home: None,
            ..from_home
        };
        assert_eq!(
            find_manifest(&named).unwrap(),
            home.join(".bot-bottle/manifest")
        );
    }

    #[test]
    fn named_path_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("bot-bottle.yaml"), "").unwrap();
        let o = DiscoverOptions {
            explicit: Some(PathBuf::from("nope.yaml")),
            ..opts(tmp.path())
        };
        assert_eq!(
            find_manifest(&o).unwrap_err(),
            LoadError::Missing {
                path: PathBuf::from("nope.yaml"),
                origin: "--manifest".into()
            }
        );
        let o = DiscoverOptions {
            manifest_env: Some(PathBuf::from("gone")),
            ..opts(tmp.path())
        };
        assert_eq!(
            find_manifest(&o).unwrap_err(),
            LoadError::Missing {
                path: PathBuf::from("gone"),
                origin: MANIFEST_ENV.into()
            }
        );
    }

    #[test]
    fn a_bot_bottle_yaml_that_is_not_a_file_is_reported_not_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = tmp.path();
        std::fs::create_dir_all(cwd.join(".bot-bottle/bottles")).unwrap();
        std::fs::create_dir(cwd.join("bot-bottle.yaml")).unwrap();
        let err = find_manifest(&opts(cwd)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read manifest {}: it is a directory, not a regular file",
                cwd.join("bot-bottle.yaml").display()
            )
        );
    }

    #[test]
    fn from_env_ignores_empty_values() {
        let o = DiscoverOptions::from_env(
            None,
            |name| match name {
                "BOT_BOTTLE_MANIFEST" => Some(OsString::new()),
                "HOME" => Some(OsString::from("/home/u")),
                _ => None,
            },
            PathBuf::from("/w"),
        );
        assert_eq!(o.manifest_env, None);
        assert_eq!(
            o.bot_bottle_home(),
            Some(PathBuf::from("/home/u/.bot-bottle"))
        );
    }
}
