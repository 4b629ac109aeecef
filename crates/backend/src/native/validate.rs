//! What the native backend refuses before anything starts ([`NativeBackend::validate`]), and the
//! identity files (`/etc/passwd`, `/etc/group`, `/etc/hosts`) it writes for each bottle.

use super::*;

impl NativeBackend {
    pub(super) fn validate(&self, spec: &LaunchSpec) -> Result<(), BackendError> {
        let invalid = |m: String| Err(BackendError::InvalidSpec(m));
        if !valid_identity(&spec.identity) {
            return invalid(format!(
                "bottle identity `{}` must be 1-63 lowercase letters, digits or dashes",
                spec.identity
            ));
        }
        if spec.argv.is_empty() || spec.argv[0].is_empty() {
            return invalid("the command to run is empty".into());
        }
        let mut ports: Vec<u16> = spec.forwards.iter().map(|f| f.inside_port).collect();
        ports.sort_unstable();
        if ports.contains(&0) || ports.windows(2).any(|w| w[0] == w[1]) {
            return invalid(format!(
                "forward ports must be non-zero and distinct, got {:?}",
                spec.forwards
                    .iter()
                    .map(|f| f.inside_port)
                    .collect::<Vec<_>>()
            ));
        }
        for fwd in &spec.forwards {
            use std::os::unix::fs::FileTypeExt;
            let is_socket =
                std::fs::metadata(&fwd.host_unix_socket).is_ok_and(|m| m.file_type().is_socket());
            if !is_socket {
                return invalid(format!(
                    "the sidecar socket {} does not exist or is not a Unix socket; is the sidecar running?",
                    fwd.host_unix_socket.display()
                ));
            }
        }
        if spec.workspace.inside == spec.home.inside {
            return invalid(format!(
                "the workspace and the home directory cannot both be {} inside the bottle",
                spec.home.inside.display()
            ));
        }
        for (what, dir) in [
            ("workspace", &spec.workspace.host),
            ("home directory", &spec.home.host),
        ] {
            if !dir.is_dir() {
                return invalid(format!("the {what} {} is not a directory", dir.display()));
            }
        }
        Ok(())
    }

    /// `/etc/passwd`, `/etc/group` and `/etc/hosts` for the bottle: the host's, plus an entry
    /// for the agent's uid (named `$USER` from the spec, else `agent`, home = the home inside)
    /// and the bottle's hostname on loopback — so `whoami`, `~user` and tools that look up
    /// their own user or host work. Files the caller places itself are left alone.
    pub(super) fn identity_files(
        &self,
        spec: &LaunchSpec,
        dir: &Path,
    ) -> Result<Vec<crate::spec::ReadOnlyFile>, BackendError> {
        let (uid, gid) = (self.config.inside_uid, self.config.inside_gid);
        let name: String = spec
            .env
            .get("USER")
            .filter(|u| {
                !u.is_empty()
                    && u.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
            .cloned()
            .unwrap_or_else(|| "agent".to_owned());
        let shell = if Path::new("/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        let keep = |text: String, id: u32| -> String {
            text.lines()
                .filter(|line| {
                    let mut fields = line.split(':');
                    let first = fields.next();
                    let id_field = fields.nth(1);
                    first != Some(name.as_str()) && id_field != Some(id.to_string().as_str())
                })
                .map(|line| format!("{line}\n"))
                .collect()
        };
        let generated = [
            (
                "/etc/passwd",
                std::fs::read_to_string("/etc/passwd").ok().map(|t| {
                    keep(t, uid)
                        + &format!(
                            "{name}:x:{uid}:{gid}:bot-bottle agent:{}:{shell}\n",
                            spec.home.inside.display()
                        )
                }),
            ),
            (
                "/etc/group",
                std::fs::read_to_string("/etc/group")
                    .ok()
                    .map(|t| keep(t, gid) + &format!("{name}:x:{gid}:\n")),
            ),
            (
                "/etc/hosts",
                Path::new("/etc/hosts").exists().then(|| {
                    format!(
                        "127.0.0.1\tlocalhost {id}\n::1\tlocalhost ip6-localhost ip6-loopback {id}\n",
                        id = spec.identity
                    )
                }),
            ),
        ];
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).map_err(io_err("create", &etc))?;
        let mut files = Vec::new();
        for (inside, content) in generated {
            let Some(content) = content else { continue };
            if spec.files.iter().any(|f| f.inside == Path::new(inside)) {
                continue;
            }
            let host = etc.join(inside.trim_start_matches("/etc/"));
            std::fs::write(&host, content).map_err(io_err("write", &host))?;
            files.push(crate::spec::ReadOnlyFile {
                host,
                inside: inside.into(),
            });
        }
        Ok(files)
    }

    pub(super) fn workspace_source(&self, spec: &LaunchSpec) -> PathBuf {
        match &spec.workspace.mode {
            WorkspaceMode::Mount => spec.workspace.host.clone(),
            WorkspaceMode::Copy { into } => into.clone(),
        }
    }
}
