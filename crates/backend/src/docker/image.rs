//! Image inputs: what an image is built from, its content hash and its build context.
//!
//! An image is rebuilt only when its inputs change: the tag is `<repository>:<hash>` where the
//! hash covers the Dockerfile, every file of the build context (path, executable bit,
//! content) and the build arguments; the same hash is stored in the image's
//! [`super::spec::LABEL_INPUT_HASH`] label. An existing image with that tag is reused as is.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The provider Dockerfiles shipped with bot-bottle (`images/` in the repository). They build
/// `FROM ${BASE}` with `BASE=node:22-slim` by default.
pub const DOCKERFILE_CLAUDE: &str = include_str!("../../../../images/Dockerfile.claude");
pub const DOCKERFILE_CODEX: &str = include_str!("../../../../images/Dockerfile.codex");
pub const DOCKERFILE_GEMINI: &str = include_str!("../../../../images/Dockerfile.gemini");
pub const DOCKERFILE_OPENCODE: &str = include_str!("../../../../images/Dockerfile.opencode");
/// The sidecar image: `bot-bottle` (the same binary) with `git`, `ssh` and `iptables`.
pub const DOCKERFILE_SIDECAR: &str = include_str!("../../../../images/Dockerfile.sidecar");

/// Where the Dockerfile goes inside the build context we send.
const CONTEXT_DOCKERFILE: &str = ".bot-bottle.Dockerfile";

/// Everything an image is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// The repository part of the tag, e.g. `bot-bottle/agent-claude`.
    pub repository: String,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// A host directory sent as the build context (`None`: an empty context).
    pub context_dir: Option<PathBuf>,
    /// Extra files placed in the context: (name in the context, host path).
    pub extra_files: Vec<(String, PathBuf)>,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
}

impl ImageSource {
    /// The agent image from a shipped provider template (`claude` or `codex`), optionally from
    /// another base image than `node:22-slim` (e.g. the local base of CI).
    pub fn provider(provider: &str, base: Option<&str>) -> Option<ImageSource> {
        let dockerfile = match provider {
            "claude" => DOCKERFILE_CLAUDE,
            "codex" => DOCKERFILE_CODEX,
            "gemini" => DOCKERFILE_GEMINI,
            "opencode" => DOCKERFILE_OPENCODE,
            _ => return None,
        };
        Some(ImageSource {
            repository: format!("bot-bottle/agent-{provider}"),
            dockerfile: dockerfile.to_owned(),
            context_dir: None,
            extra_files: vec![],
            build_args: base_arg(base),
        })
    }

    /// The agent image from a bottle-supplied Dockerfile (its directory is the context).
    pub fn bottle_dockerfile(agent: &str, dockerfile: &Path) -> io::Result<ImageSource> {
        Ok(ImageSource {
            repository: format!("bot-bottle/agent-{agent}"),
            dockerfile: state::read::read_limited_to_string(dockerfile, state::read::CONFIG_LIMIT)?,
            context_dir: dockerfile.parent().map(Path::to_path_buf),
            extra_files: vec![],
            build_args: BTreeMap::new(),
        })
    }

    /// The sidecar image: [`DOCKERFILE_SIDECAR`], the tools `bot-bottle sidecar` runs (git,
    /// ssh, iptables). The executable itself is mounted read-only at launch (as the agent's
    /// init is), so a new build of bot-bottle needs no new image.
    pub fn sidecar(base: Option<&str>) -> ImageSource {
        ImageSource {
            repository: "bot-bottle/sidecar".to_owned(),
            dockerfile: DOCKERFILE_SIDECAR.to_owned(),
            context_dir: None,
            extra_files: vec![],
            build_args: base_arg(base),
        }
    }

    /// The files of the build context, sorted by their name in the context.
    fn files(&self) -> io::Result<Vec<(String, PathBuf)>> {
        let mut files = Vec::new();
        if let Some(dir) = &self.context_dir {
            walk(dir, "", &mut files)?;
        }
        files.extend(self.extra_files.iter().cloned());
        files.sort();
        Ok(files)
    }

    /// The content hash of all inputs (hex, 64 characters).
    pub fn input_hash(&self) -> io::Result<String> {
        let mut hash = Sha256::new();
        hash.update(b"bot-bottle image v1\0");
        hash.update(self.dockerfile.as_bytes());
        hash.update(b"\0");
        for (name, path) in self.files()? {
            let meta = std::fs::metadata(&path)?;
            hash.update(name.as_bytes());
            hash.update(if meta.permissions().mode() & 0o111 != 0 {
                b"\0x\0"
            } else {
                b"\0-\0"
            });
            hash.update(meta.len().to_le_bytes());
            let mut file = std::fs::File::open(&path)?;
            io::copy(&mut file, &mut hash)?;
        }
        for (key, value) in &self.build_args {
            hash.update(format!("\0arg {key}={value}").as_bytes());
        }
        Ok(hex::encode(hash.finalize()))
    }

    /// The tag for a given input hash.
    pub fn tag(&self, hash: &str) -> String {
        format!("{}:{}", self.repository, &hash[..12])
    }

    /// The build context as a tar archive, with the Dockerfile at [`Self::dockerfile_name`].
    pub fn context_tar(&self) -> io::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        // Docker's classic builder rejects GNU sparse entries.
        tar.sparse(false);
        let mut header = tar::Header::new_gnu();
        header.set_size(self.dockerfile.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, CONTEXT_DOCKERFILE, self.dockerfile.as_bytes())?;
        for (name, path) in self.files()? {
            tar.append_path_with_name(&path, &name)?;
        }
        tar.into_inner()
    }

    /// The Dockerfile's name inside [`Self::context_tar`].
    pub fn dockerfile_name() -> &'static str {
        CONTEXT_DOCKERFILE
    }
}

fn base_arg(base: Option<&str>) -> BTreeMap<String, String> {
    base.map(|b| BTreeMap::from([("BASE".to_owned(), b.to_owned())]))
        .unwrap_or_default()
}

/// Regular files under `dir` (symlinks and special files are not sent).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if prefix.is_empty() && (name == ".git" || name == ".dockerignore") {
            continue;
        }
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else if kind.is_file() {
            out.push((rel, entry.path()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn hash_changes_with_every_input() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), "one").unwrap();
        let source =
            ImageSource::bottle_dockerfile("demo", &dir.path().join("Dockerfile")).unwrap();
        let first = source.input_hash().unwrap();
        assert_eq!(first, source.input_hash().unwrap(), "the hash is stable");

        std::fs::write(dir.path().join("sub/a.txt"), "two").unwrap();
        let second = source.input_hash().unwrap();
        assert!(first != second, "a context file changed");

        let mut with_arg = source.clone();
        with_arg.build_args.insert("BASE".into(), "x".into());
        assert!(
            with_arg.input_hash().unwrap() != second,
            "a build arg changed"
        );

        let mut other_file = source.clone();
        other_file.dockerfile.push_str("RUN true\n");
        assert!(
            other_file.input_hash().unwrap() != second,
            "the Dockerfile changed"
        );
    }

    #[test]
    fn context_lists_the_dockerfile_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("x"), "x").unwrap();
        let source =
            ImageSource::bottle_dockerfile("demo", &dir.path().join("Dockerfile")).unwrap();
        let tar = source.context_tar().unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec![".bot-bottle.Dockerfile", "Dockerfile", "x"]);
    }

    #[test]
    fn provider_templates_take_the_base_as_build_arg() {
        let claude = ImageSource::provider("claude", Some("bot-bottle/base:abc")).unwrap();
        assert_eq!(claude.repository, "bot-bottle/agent-claude");
        assert_eq!(claude.build_args["BASE"], "bot-bottle/base:abc");
        assert!(claude.dockerfile.contains("ARG BASE=node:22-slim"));
        assert!(claude.dockerfile.contains("FROM ${BASE}"));
        for p in ["codex", "gemini", "opencode"] {
            let source = ImageSource::provider(p, None).unwrap();
            assert_eq!(source.repository, format!("bot-bottle/agent-{p}"));
            assert!(source.dockerfile.contains(&format!("CMD [\"{p}\"]")), "{p}");
        }
        assert!(ImageSource::provider("nope", None).is_none());
    }
}
