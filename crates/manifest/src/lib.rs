//! The bot-bottle manifest: what bottles and agents a user has described.
//!
//! Two layers: [`raw`] is exactly what the user wrote (serde, unknown fields rejected), and
//! the resolved layer ([`ResolvedBottle`], [`ResolvedAgent`]), after `extends` and
//! validation, is what the rest of bot-bottle uses.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let opts = manifest::DiscoverOptions::from_env(
//!     None,
//!     |name| std::env::var_os(name),
//!     std::env::current_dir()?,
//! );
//! let manifest = manifest::Manifest::discover(&opts)?;
//! let agent = manifest.agent("demo")?; // fails if the agent or its bottle has errors
//! println!("{} runs in {}", agent.name, agent.bottle_name);
//! # Ok(()) }
//! ```
//!
//! A manifest that loads can still be invalid: [`Manifest::errors`] lists every problem
//! found (one YAML error per file at most, since the parser stops there, and every
//! `extends` and validation problem), each naming the file, line and column.

mod diag;
mod discover;
pub mod edit;
mod load;
pub mod raw;
mod resolve;
mod resolved;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use diag::Diagnostic;
pub use discover::{DiscoverOptions, HOME_ENV, MANIFEST_ENV, find_manifest};
pub use raw::{McpFileSpec, ModelApiSpec, ProviderKind};
pub use resolved::{
    AgentProvider, GenericProvider, ResolvedAgent, ResolvedBottle, ResolvedEgress, ResolvedGitGate,
    ResolvedKubernetes, ResolvedResources,
};

use load::{AgentDef, Parsed};
use resolve::{Resolver, list_names, resolve_path};
use validate::is_safe_name;

/// The manifest could not be found or read (as opposed to being invalid).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// No manifest in any of the places searched.
    #[error(
        "no manifest found; looked for {}; create bot-bottle.yaml (see \
         examples/bot-bottle.yaml) or pass --manifest PATH",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        /// Every place looked at, in search order.
        searched: Vec<PathBuf>,
    },
    /// A manifest named by `--manifest` or `$BOT_BOTTLE_MANIFEST` does not exist.
    #[error("manifest {} (from {origin}) does not exist; check the path", .path.display())]
    Missing {
        /// The path as given.
        path: PathBuf,
        /// Where the path came from: `--manifest` or `BOT_BOTTLE_MANIFEST`.
        origin: String,
    },
    /// A manifest file or directory exists but could not be read.
    #[error("cannot read manifest {}: {source}", .path.display())]
    Read {
        /// The file or directory that failed.
        path: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
}

impl PartialEq for LoadError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::NotFound { searched: a }, Self::NotFound { searched: b }) => a == b,
            (Self::Missing { path: a, origin: x }, Self::Missing { path: b, origin: y }) => {
                a == b && x == y
            }
            (Self::Read { path: a, source: x }, Self::Read { path: b, source: y }) => {
                a == b && x.kind() == y.kind()
            }
            _ => false,
        }
    }
}

/// A YAML file read on its own (the gate's `--repos FILE`, a `routes.yaml`) cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum YamlFileError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("{0}")]
    Invalid(Diagnostic),
}

/// Reads a YAML file with the manifest's YAML settings and error messages (file, line,
/// column, what is expected; no Rust type names), e.g.
/// `read_yaml_file::<raw::GitGate>(path)` for `gate serve --repos FILE`.
pub fn read_yaml_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, YamlFileError> {
    let text =
        state::read::read_limited_to_string(path, state::read::CONFIG_LIMIT).map_err(|source| {
            YamlFileError::Read {
                path: path.to_path_buf(),
                source: Arc::new(source),
            }
        })?;
    raw::from_yaml(&text)
        .map_err(|err| YamlFileError::Invalid(diag::Source::new(path, 0).yaml_error(&err, &text)))
}

/// A bottle or agent cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The manifest (or the part of it the bottle or agent needs) has errors.
    #[error("{}", render_invalid(.path, .errors))]
    Invalid {
        /// The manifest file or directory.
        path: PathBuf,
        /// Every problem, as `path:line:col: message`.
        errors: Vec<Diagnostic>,
    },
    /// No bottle of that name.
    #[error("no bottle `{name}` in {}; available bottles: {available}", .path.display())]
    UnknownBottle {
        /// The name asked for.
        name: String,
        /// The manifest searched.
        path: PathBuf,
        /// The bottles that exist, comma separated.
        available: String,
    },
    /// No agent of that name.
    #[error("no agent `{name}` in {}; available agents: {available}", .path.display())]
    UnknownAgent {
        /// The name asked for.
        name: String,
        /// The manifest searched.
        path: PathBuf,
        /// The agents that exist, comma separated.
        available: String,
    },
}

fn render_invalid(path: &Path, errors: &[Diagnostic]) -> String {
    let n = errors.len();
    let mut out = format!(
        "manifest {} has {n} error{}:",
        path.display(),
        if n == 1 { "" } else { "s" }
    );
    for e in errors {
        out.push_str("\n  ");
        out.push_str(&e.to_string());
    }
    out
}

/// A loaded manifest: every bottle and agent resolved (or its errors).
#[derive(Debug, Clone)]
pub struct Manifest {
    path: PathBuf,
    bottles: Vec<(String, Result<ResolvedBottle, Vec<Diagnostic>>)>,
    agents: Vec<(String, Result<ResolvedAgent, Vec<Diagnostic>>)>,
    /// Problems that may hide definitions (nothing could be read at all).
    file_errors: Vec<Diagnostic>,
    errors: Vec<Diagnostic>,
}

impl Manifest {
    /// Finds the manifest (see [`find_manifest`]) and loads it.
    pub fn discover(opts: &DiscoverOptions) -> Result<Manifest, LoadError> {
        let path = find_manifest(opts)?;
        let abs = if path.is_absolute() {
            path.clone()
        } else {
            opts.cwd.join(&path)
        };
        let parsed = load::parse_path(&abs)?;
        Ok(Self::build(path, &abs, parsed, opts.home.as_deref()))
    }

    /// Loads a manifest file (file form) or directory (directory form). `~/` in paths is
    /// the `$HOME` directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest, LoadError> {
        let path = path.as_ref();
        let abs = std::path::absolute(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source: Arc::new(source),
        })?;
        let parsed = load::parse_path(&abs)?;
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        Ok(Self::build(
            path.to_path_buf(),
            &abs,
            parsed,
            home.as_deref(),
        ))
    }

    /// Parses file-form manifest text as if read from `path` (relative paths in it are
    /// relative to `path`'s directory).
    pub fn from_yaml(path: impl AsRef<Path>, text: &str, home: Option<&Path>) -> Manifest {
        let path = path.as_ref();
        let parsed = load::parse_file_text(path, text);
        Self::build(path.to_path_buf(), path, parsed, home)
    }

    fn build(display: PathBuf, abs: &Path, parsed: Parsed, home: Option<&Path>) -> Manifest {
        // Relative paths are relative to the manifest's directory.
        let root = if abs.is_dir() {
            abs.to_path_buf()
        } else {
            abs.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        // Diagnostics name files as the user named the manifest.
        let display_file = |p: &Path| -> PathBuf {
            match p.strip_prefix(abs) {
                Ok(rest) if !rest.as_os_str().is_empty() => display.join(rest),
                _ if p == abs => display.clone(),
                _ => p.to_path_buf(),
            }
        };
        let mut parsed = parsed;
        for d in &mut parsed.diagnostics {
            d.file = display_file(&d.file);
        }
        for b in &mut parsed.bottles {
            b.source = Arc::new(diag_source(&b.source, &display_file));
        }
        for a in &mut parsed.agents {
            a.source = Arc::new(diag_source(&a.source, &display_file));
        }

        for d in parsed
            .broken_bottles
            .values_mut()
            .chain(parsed.broken_agents.values_mut())
        {
            d.file = display_file(&d.file);
        }
        let mut bottles =
            Resolver::new(&parsed.bottles, &parsed.broken_bottles, &root, home).resolve_all();
        // A bottle whose file is broken is known, but unusable.
        for (name, diag) in &parsed.broken_bottles {
            bottles.push((name.clone(), Err(vec![diag.clone()])));
        }
        let by_name: BTreeMap<&str, &Result<ResolvedBottle, Vec<Diagnostic>>> =
            bottles.iter().map(|(n, r)| (n.as_str(), r)).collect();
        let available = list_names(bottles.iter().map(|(n, _)| n.as_str()));
        let agents = parsed
            .agents
            .iter()
            .map(|def| {
                let result = resolve_agent(def, &by_name, &available, &root, home);
                (def.name.clone(), result)
            })
            .chain(
                parsed
                    .broken_agents
                    .iter()
                    .map(|(name, diag)| (name.clone(), Err(vec![diag.clone()]))),
            )
            .collect::<Vec<_>>();

        let mut errors: Vec<Diagnostic> = parsed.diagnostics.clone();
        for (_, r) in &bottles {
            if let Err(e) = r {
                errors.extend(e.iter().cloned());
            }
        }
        for (_, r) in &agents {
            if let Err(e) = r {
                errors.extend(e.iter().cloned());
            }
        }
        sort_dedup(&mut errors);
        Manifest {
            path: display,
            bottles,
            agents,
            // Errors that left nothing defined (the file form's YAML error, a directory
            // that is not a manifest) may hide the bottle or agent asked for.
            file_errors: if parsed.bottles.is_empty()
                && parsed.agents.is_empty()
                && parsed.broken_bottles.is_empty()
                && parsed.broken_agents.is_empty()
            {
                parsed.diagnostics
            } else {
                Vec::new()
            },
            errors,
        }
    }

    /// The manifest file or directory, as given or found.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every problem in the manifest, sorted by file and line, each reported once.
    pub fn errors(&self) -> &[Diagnostic] {
        &self.errors
    }

    /// `Ok` when the manifest has no errors at all.
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.invalid(self.errors.clone()))
        }
    }

    /// Bottle names in definition order.
    pub fn bottle_names(&self) -> Vec<&str> {
        self.bottles.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Agent names in definition order.
    pub fn agent_names(&self) -> Vec<&str> {
        self.agents.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn invalid(&self, mut errors: Vec<Diagnostic>) -> ManifestError {
        sort_dedup(&mut errors);
        ManifestError::Invalid {
            path: self.path.clone(),
            errors,
        }
    }

    /// The bottle `name`, resolved. Fails when it is not defined or when it or one of its
    /// parents has errors.
    pub fn bottle(&self, name: &str) -> Result<ResolvedBottle, ManifestError> {
        match self.bottles.iter().find(|(n, _)| n == name) {
            Some((_, Ok(bottle))) => Ok(bottle.clone()),
            Some((_, Err(errors))) => Err(self.invalid(errors.clone())),
            None if !self.file_errors.is_empty() => Err(self.invalid(self.file_errors.clone())),
            None => Err(ManifestError::UnknownBottle {
                name: name.to_owned(),
                path: self.path.clone(),
                available: list_names(self.bottle_names()),
            }),
        }
    }

    /// The agent `name` with its resolved bottle. Fails when it is not defined or when it
    /// or its bottle has errors.
    pub fn agent(&self, name: &str) -> Result<ResolvedAgent, ManifestError> {
        match self.agents.iter().find(|(n, _)| n == name) {
            Some((_, Ok(agent))) => Ok(agent.clone()),
            Some((_, Err(errors))) => Err(self.invalid(errors.clone())),
            None if !self.file_errors.is_empty() => Err(self.invalid(self.file_errors.clone())),
            None => Err(ManifestError::UnknownAgent {
                name: name.to_owned(),
                path: self.path.clone(),
                available: list_names(self.agent_names()),
            }),
        }
    }
}

/// Orders diagnostics by file and position (keeping discovery order on the same
/// position) and drops repeats (a parent's error reached through several children).
fn sort_dedup(errors: &mut Vec<Diagnostic>) {
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert(e.clone()));
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
}

fn diag_source(src: &diag::Source, display_file: &dyn Fn(&Path) -> PathBuf) -> diag::Source {
    diag::Source::new(&display_file(&src.path), src.line_offset)
}

fn resolve_agent(
    def: &AgentDef,
    bottles: &BTreeMap<&str, &Result<ResolvedBottle, Vec<Diagnostic>>>,
    available: &str,
    root: &Path,
    home: Option<&Path>,
) -> Result<ResolvedAgent, Vec<Diagnostic>> {
    let src = &def.source;
    let name = def.name.as_str();
    let mut errors = Vec::new();
    if !is_safe_name(name) {
        errors.push(src.diag(
            def.pos,
            format!(
                "agent name `{}` is not valid; use letters, digits, `.`, `_` and `-`, not \
                 starting with `.` (it becomes part of the bottle's identity)",
                name.escape_debug()
            ),
        ));
    }
    let bottle = match &def.raw.bottle {
        None => {
            errors.push(src.diag(
                def.pos,
                format!(
                    "agent `{name}` has no `bottle`; add `bottle: NAME` (available bottles: \
                     {available})"
                ),
            ));
            None
        }
        Some(b) => match bottles.get(b.value.as_str()) {
            None => {
                errors.push(src.diag(
                    src.pos(&b.referenced),
                    format!(
                        "agent `{name}`: bottle `{}` is not defined; available bottles: \
                         {available}",
                        b.value.escape_debug()
                    ),
                ));
                None
            }
            Some(Err(bottle_errors)) => {
                errors.extend(bottle_errors.iter().cloned());
                None
            }
            Some(Ok(bottle)) => Some(bottle.clone()),
        },
    };
    let mut skills = Vec::new();
    for skill in def.raw.skills.iter().flatten() {
        let path = resolve_path(root, home, &skill.value);
        if !path.exists() {
            errors.push(src.diag(
                src.pos(&skill.referenced),
                format!(
                    "agent `{name}`: skill `{}` not found (looked at {}); skill paths are \
                     relative to the manifest",
                    skill.value.escape_debug(),
                    path.display()
                ),
            ));
        }
        skills.push(path);
    }
    let prompt = match (&def.raw.prompt, &def.body) {
        (Some(p), Some(_)) => {
            errors.push(src.diag(
                src.pos(&p.referenced),
                format!(
                    "agent `{name}` has both a `prompt:` field and a Markdown body; keep one \
                     of them"
                ),
            ));
            None
        }
        (Some(p), None) => Some(p.value.clone()),
        (None, body) => body.clone(),
    };
    match bottle {
        Some(bottle) if errors.is_empty() => Ok(ResolvedAgent {
            name: name.to_owned(),
            bottle_name: bottle.name.clone(),
            bottle,
            prompt,
            skills,
        }),
        _ => Err(errors),
    }
}
