//! The mount plan: the bottle's whole filesystem view, computed as data before anything is
//! mounted, so it can be checked (unit tests through [`HostView`] fakes) and then applied by
//! [`apply`] through the [`Os`] seam.
//!
//! The view is built from nothing: a fresh tmpfs root into which only the system directories
//! (read-only), a minimal `/dev`, a private `/proc`, empty `/tmp`, `/var/tmp` and `/run`, the
//! home and workspace (writable) and the caller's read-only files are placed. Everything else of
//! the host — homes, `/root`, `/var`, `/srv`, `/mnt`, every socket directory — is absent by
//! construction. Inside the system view, entries that not every user of the machine may read
//! (`/etc/shadow`, SSH host keys, …) and Unix sockets are masked, so the bottle sees at most
//! what an unprivileged stranger on the machine would.

use std::path::{Component, Path, PathBuf};

use super::os::{NodeKind, Os};
use crate::spec::LaunchSpec;

/// One step of building the bottle's filesystem. Targets are absolute paths *inside* the bottle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MountOp {
    /// An empty tmpfs with this mode.
    Tmpfs { target: PathBuf, mode: u32 },
    /// A host file or directory, read-only (recursively), nosuid, nodev.
    BindReadOnly {
        source: PathBuf,
        target: PathBuf,
        kind: NodeKind,
    },
    /// A host file or directory, writable, nosuid, nodev.
    BindWritable {
        source: PathBuf,
        target: PathBuf,
        kind: NodeKind,
    },
    /// A host device node (`/dev/null`, …), writable.
    BindDevice { source: PathBuf, target: PathBuf },
    /// Hide a file: `/dev/null` mounted read-only over it.
    MaskFile { target: PathBuf },
    /// Hide a directory: an empty read-only tmpfs over it.
    MaskDir { target: PathBuf },
    /// A symbolic link.
    Symlink { target: PathBuf, points_to: PathBuf },
    /// The bottle's own `/proc` (read-only, nosuid, nodev, noexec).
    Proc { target: PathBuf },
    /// A private `devpts` instance (`/dev/pts`, `ptmx` mode 0666).
    Devpts { target: PathBuf },
    /// Make an earlier tmpfs read-only once everything under it is in place.
    RemountReadOnly { target: PathBuf },
}

/// What the plan needs to know about the host. The real one reads the filesystem; unit tests
/// use a fake.
pub trait HostView {
    /// The kind of a host path, without following a final symlink; `None` when absent.
    fn kind(&self, path: &Path) -> Option<HostKind>;
    /// Entries under `dir` (recursively, not following symlinks, not descending into what is
    /// returned) that are not readable by every user, or are Unix sockets.
    fn unshareable_entries(&self, dir: &Path) -> Vec<(PathBuf, NodeKind)>;
}

/// A host path's type, as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    Dir,
    File,
    Symlink(PathBuf),
    Other,
}

/// Paths the bottle must never see, and trees the workspace must not come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Secrets {
    /// No bind source may be one of these or contain one (the real home, `/root`,
    /// `$BOT_BOTTLE_HOME`, `~/.ssh`, the Docker socket, `/run`, …).
    pub never_visible: Vec<PathBuf>,
    /// The workspace may not lie inside one of these (`$BOT_BOTTLE_HOME`, `~/.ssh`, …).
    pub no_workspace_inside: Vec<PathBuf>,
}

/// Plan errors: the spec would expose a secret or cannot be represented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{what} `{path}` must be an absolute path without `..`")]
    NotAbsolute { what: &'static str, path: PathBuf },
    #[error(
        "{what} `{path}` would make `{secret}` visible inside the bottle; use a directory that does not contain it"
    )]
    ExposesSecret {
        what: &'static str,
        path: PathBuf,
        secret: PathBuf,
    },
    #[error(
        "the workspace `{path}` lies inside `{tree}`, which is never given to a bottle; run from a project directory"
    )]
    WorkspaceInPrivateTree { path: PathBuf, tree: PathBuf },
    #[error("{what} `{path}` does not exist on the host")]
    Missing { what: &'static str, path: PathBuf },
    #[error(
        "{what} cannot be placed at `{inside}`: it lies in the read-only system view `{system_dir}` where `{inside}` does not exist on the host; choose another path (e.g. under /run/bot-bottle)"
    )]
    InsideReadOnlyView {
        what: &'static str,
        inside: PathBuf,
        system_dir: PathBuf,
    },
    #[error("{what} cannot be placed at `{inside}`: that path is reserved by the bottle")]
    Reserved { what: &'static str, inside: PathBuf },
    #[error(
        "the device `{path}` is not one a bottle may be given (only {allowed:?}: the qemu backend's jail under KVM)"
    )]
    DeviceNotAllowed {
        path: PathBuf,
        allowed: &'static [&'static str],
    },
    #[error("the device `{path}` is not a device node on the host")]
    NotADevice { path: PathBuf },
}

/// Device nodes a bottle may get besides the standard ones ([`with_devices`]): `/dev/kvm`
/// for the QEMU that the qemu backend runs in a native jail when KVM can boot its guest.
pub const EXTRA_DEVICES: &[&str] = &["/dev/kvm"];

/// `plan` with the host device nodes `devices` bound writable at the same path, after the
/// standard ones. Only [`EXTRA_DEVICES`] are accepted, and only device nodes: anything else
/// fails, naming the path, rather than widening the bottle.
pub fn with_devices(
    mut plan: Vec<MountOp>,
    devices: &[PathBuf],
    host: &dyn HostView,
) -> Result<Vec<MountOp>, PlanError> {
    let at = plan
        .iter()
        .rposition(|op| matches!(op, MountOp::BindDevice { .. }))
        .map_or(plan.len(), |i| i + 1);
    let mut ops = Vec::new();
    for path in devices {
        if !EXTRA_DEVICES.iter().any(|d| Path::new(d) == path) {
            return Err(PlanError::DeviceNotAllowed {
                path: path.clone(),
                allowed: EXTRA_DEVICES,
            });
        }
        match host.kind(path) {
            Some(HostKind::Other) => {}
            None => {
                return Err(PlanError::Missing {
                    what: "the device",
                    path: path.clone(),
                });
            }
            Some(_) => return Err(PlanError::NotADevice { path: path.clone() }),
        }
        ops.push(MountOp::BindDevice {
            source: path.clone(),
            target: path.clone(),
        });
    }
    plan.splice(at..at, ops);
    Ok(plan)
}

/// Host system directories shown read-only by default (absent ones are skipped; symlinks such
/// as merged-`/usr` `/bin` are recreated as symlinks).
pub fn default_system_dirs() -> Vec<PathBuf> {
    [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// Directories scanned for unshareable entries (non-world-readable files, sockets).
pub(crate) const SCANNED_DIRS: [&str; 2] = ["/etc", "/opt"];
/// Device nodes bound from the host.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Paths owned by the bottle itself: nothing of the caller may be placed there.
const RESERVED: [&str; 5] = ["/", "/proc", "/dev", "/sys", "/run"];

/// Computes the plan. `workspace_source` is the host directory the bottle sees as workspace
/// (the workspace itself, or its copy).
pub fn build(
    spec: &LaunchSpec,
    workspace_source: &Path,
    system_dirs: &[PathBuf],
    secrets: &Secrets,
    host: &dyn HostView,
) -> Result<Vec<MountOp>, PlanError> {
    check_absolute("the workspace", &spec.workspace.host)?;
    check_absolute("the workspace copy", workspace_source)?;
    check_absolute("the workspace path inside", &spec.workspace.inside)?;
    check_absolute("the home directory", &spec.home.host)?;
    check_absolute("the home path inside", &spec.home.inside)?;
    for dir in system_dirs {
        check_absolute("the system directory", dir)?;
    }
    for file in &spec.files {
        check_absolute("the file", &file.host)?;
        check_absolute("the file's path inside", &file.inside)?;
    }

    // Nothing given to the bottle may contain a secret.
    let mut sources: Vec<(&'static str, &Path)> = vec![
        ("the workspace", spec.workspace.host.as_path()),
        ("the workspace copy", workspace_source),
        ("the home directory", spec.home.host.as_path()),
    ];
    sources.extend(
        system_dirs
            .iter()
            .map(|d| ("the system directory", d.as_path())),
    );
    sources.extend(spec.files.iter().map(|f| ("the file", f.host.as_path())));
    for (what, source) in &sources {
        if let Some(secret) = secrets.never_visible.iter().find(|s| s.starts_with(source)) {
            return Err(PlanError::ExposesSecret {
                what,
                path: source.to_path_buf(),
                secret: secret.clone(),
            });
        }
    }
    // The user's directory may not come from a private tree (a copy made by `prepare` into
    // the bottle's own state directory is the caller's deliberate choice, like the home).
    if let Some(tree) = secrets
        .no_workspace_inside
        .iter()
        .find(|t| spec.workspace.host.starts_with(t))
    {
        return Err(PlanError::WorkspaceInPrivateTree {
            path: spec.workspace.host.clone(),
            tree: tree.clone(),
        });
    }

    let mut plan = Vec::new();
    let mut shown_dirs = Vec::new();
    for dir in system_dirs {
        match host.kind(dir) {
            Some(HostKind::Dir) => {
                plan.push(MountOp::BindReadOnly {
                    source: dir.clone(),
                    target: dir.clone(),
                    kind: NodeKind::Dir,
                });
                shown_dirs.push(dir.clone());
            }
            Some(HostKind::Symlink(points_to)) => plan.push(MountOp::Symlink {
                target: dir.clone(),
                points_to,
            }),
            Some(HostKind::File | HostKind::Other) | None => {}
        }
    }
    for scanned in SCANNED_DIRS.iter().map(Path::new) {
        if shown_dirs.iter().any(|d| d == scanned) {
            for (path, kind) in host.unshareable_entries(scanned) {
                plan.push(match kind {
                    NodeKind::Dir => MountOp::MaskDir { target: path },
                    NodeKind::File => MountOp::MaskFile { target: path },
                });
            }
        }
    }

    plan.push(MountOp::Tmpfs {
        target: "/dev".into(),
        mode: 0o755,
    });
    for dev in DEVICES {
        let path = Path::new("/dev").join(dev);
        plan.push(MountOp::BindDevice {
            source: path.clone(),
            target: path,
        });
    }
    plan.push(MountOp::Devpts {
        target: "/dev/pts".into(),
    });
    plan.push(MountOp::Tmpfs {
        target: "/dev/shm".into(),
        mode: 0o1777,
    });
    for (link, to) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        plan.push(MountOp::Symlink {
            target: link.into(),
            points_to: to.into(),
        });
    }
    plan.push(MountOp::Proc {
        target: "/proc".into(),
    });
    for (dir, mode) in [("/tmp", 0o1777), ("/var/tmp", 0o1777), ("/run", 0o755)] {
        plan.push(MountOp::Tmpfs {
            target: dir.into(),
            mode,
        });
    }
    plan.push(MountOp::Symlink {
        target: "/var/run".into(),
        points_to: "/run".into(),
    });

    // The caller's directories and files, parents before children.
    let mut placed: Vec<(usize, MountOp)> = Vec::new();
    let mut place = |what: &'static str, op: MountOp, inside: &Path| -> Result<(), PlanError> {
        check_placeable(what, inside, &shown_dirs, host)?;
        placed.push((inside.components().count(), op));
        Ok(())
    };
    place(
        "the home directory",
        MountOp::BindWritable {
            source: spec.home.host.clone(),
            target: spec.home.inside.clone(),
            kind: NodeKind::Dir,
        },
        &spec.home.inside,
    )?;
    place(
        "the workspace",
        MountOp::BindWritable {
            source: workspace_source.to_path_buf(),
            target: spec.workspace.inside.clone(),
            kind: NodeKind::Dir,
        },
        &spec.workspace.inside,
    )?;
    for file in &spec.files {
        let kind = match host.kind(&file.host) {
            Some(HostKind::Dir) => NodeKind::Dir,
            Some(HostKind::File) => NodeKind::File,
            Some(HostKind::Symlink(_) | HostKind::Other) | None => {
                return Err(PlanError::Missing {
                    what: "the file",
                    path: file.host.clone(),
                });
            }
        };
        place(
            "a read-only file",
            MountOp::BindReadOnly {
                source: file.host.clone(),
                target: file.inside.clone(),
                kind,
            },
            &file.inside,
        )?;
    }
    placed.sort_by_key(|(depth, _)| *depth);
    plan.extend(placed.into_iter().map(|(_, op)| op));

    for target in ["/dev", "/run", "/"] {
        plan.push(MountOp::RemountReadOnly {
            target: target.into(),
        });
    }
    Ok(plan)
}

fn check_absolute(what: &'static str, path: &Path) -> Result<(), PlanError> {
    let clean = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if clean {
        Ok(())
    } else {
        Err(PlanError::NotAbsolute {
            what,
            path: path.to_path_buf(),
        })
    }
}

/// A caller's mount target must not be a bottle-owned path, and inside the read-only system
/// view it can only replace something that exists on the host (a read-only bind cannot get a
/// new mount point).
fn check_placeable(
    what: &'static str,
    inside: &Path,
    shown_dirs: &[PathBuf],
    host: &dyn HostView,
) -> Result<(), PlanError> {
    let reserved = RESERVED.iter().any(|r| inside == Path::new(r))
        || ["/proc", "/dev", "/sys"]
            .iter()
            .any(|r| inside.starts_with(r));
    if reserved {
        return Err(PlanError::Reserved {
            what,
            inside: inside.to_path_buf(),
        });
    }
    if let Some(system_dir) = shown_dirs.iter().find(|d| inside.starts_with(d))
        && host.kind(inside).is_none()
    {
        return Err(PlanError::InsideReadOnlyView {
            what,
            inside: inside.to_path_buf(),
            system_dir: system_dir.clone(),
        });
    }
    Ok(())
}

/// Where a bottle path lives under the new root (before `pivot_root`).
pub fn under_root(root: &Path, inside: &Path) -> PathBuf {
    match inside.strip_prefix("/") {
        Ok(rel) if !rel.as_os_str().is_empty() => root.join(rel),
        _ => root.to_path_buf(),
    }
}

/// Applies a plan below `root` (a directory on which [`apply`] first mounts the root tmpfs).
/// `/proc` must be applied by a process inside the bottle's PID namespace.
pub fn apply(plan: &[MountOp], root: &Path, os: &mut dyn Os) -> std::io::Result<()> {
    os.mount_tmpfs(root, 0o755)?;
    apply_below(plan, root, Path::new("/dev/null"), os)
}

/// [`apply`] on a `root` whose tmpfs is already mounted; masked files are covered by `null`
/// (`/dev/null`, or a descriptor's `/proc/self/fd/N` when the host paths were opened before
/// the bottle's processes lost the right to look them up).
pub fn apply_below(
    plan: &[MountOp],
    root: &Path,
    null: &Path,
    os: &mut dyn Os,
) -> std::io::Result<()> {
    for op in plan {
        match op {
            MountOp::Tmpfs { target, mode } => {
                let at = under_root(root, target);
                os.ensure_mountpoint(&at, NodeKind::Dir)?;
                os.mount_tmpfs(&at, *mode)?;
            }
            MountOp::BindReadOnly {
                source,
                target,
                kind,
            } => {
                let at = under_root(root, target);
                os.ensure_mountpoint(&at, *kind)?;
                os.bind(source, &at)?;
                os.make_read_only(&at)?;
            }
            MountOp::BindWritable {
                source,
                target,
                kind,
            } => {
                let at = under_root(root, target);
                os.ensure_mountpoint(&at, *kind)?;
                os.bind(source, &at)?;
                os.make_nosuid_nodev(&at)?;
            }
            MountOp::BindDevice { source, target } => {
                let at = under_root(root, target);
                os.ensure_mountpoint(&at, NodeKind::File)?;
                os.bind(source, &at)?;
            }
            MountOp::MaskFile { target } => {
                let at = under_root(root, target);
                if mask_target_gone(os.bind(null, &at), &at, os)? {
                    continue;
                }
                os.make_read_only(&at)?;
            }
            MountOp::MaskDir { target } => {
                let at = under_root(root, target);
                if mask_target_gone(os.mount_tmpfs(&at, 0o755), &at, os)? {
                    continue;
                }
                os.make_read_only(&at)?;
            }
            MountOp::Symlink { target, points_to } => {
                let at = under_root(root, target);
                if let Some(parent) = at.parent() {
                    os.ensure_mountpoint(parent, NodeKind::Dir)?;
                }
                os.symlink(points_to, &at)?;
            }
            MountOp::Proc { target } => {
                let at = under_root(root, target);
                os.ensure_mountpoint(&at, NodeKind::Dir)?;
                os.mount_proc(&at)?;
            }
            MountOp::Devpts { target } => {
                let at = under_root(root, target);
                os.ensure_mountpoint(&at, NodeKind::Dir)?;
                os.mount_devpts(&at)?;
            }
            MountOp::RemountReadOnly { target } => {
                os.remount_read_only(&under_root(root, target))?;
            }
        }
    }
    Ok(())
}

/// Whether a mask's mount failed only because its target has gone since the scan found it
/// (`Ok(true)`: skip the mask), else the mount's own result. The host's `/etc` and `/opt`
/// change while a bottle starts (a daemon's socket removed, a package's directory replaced):
/// with nothing at the path there is nothing to hide, as for an entry made after the scan.
/// Any other failure, or a path that is not confirmed gone, stays an error (fail closed).
fn mask_target_gone(
    mounted: std::io::Result<()>,
    at: &Path,
    os: &mut dyn Os,
) -> std::io::Result<bool> {
    match mounted {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && os.is_gone(at) => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pretty_assertions::assert_eq;

    use super::*;
    use crate::native::os::tests::RecordingOs;
    use crate::spec::{Home, ReadOnlyFile, Workspace, WorkspaceMode};

    #[derive(Default)]
    struct FakeHost {
        kinds: BTreeMap<PathBuf, HostKind>,
        unshareable: BTreeMap<PathBuf, Vec<(PathBuf, NodeKind)>>,
    }

    impl HostView for FakeHost {
        fn kind(&self, path: &Path) -> Option<HostKind> {
            self.kinds.get(path).cloned()
        }
        fn unshareable_entries(&self, dir: &Path) -> Vec<(PathBuf, NodeKind)> {
            self.unshareable.get(dir).cloned().unwrap_or_default()
        }
    }

    fn host() -> FakeHost {
        let mut h = FakeHost::default();
        for d in ["/usr", "/etc", "/lib64"] {
            h.kinds.insert(d.into(), HostKind::Dir);
        }
        h.kinds
            .insert("/bin".into(), HostKind::Symlink("usr/bin".into()));
        h.kinds.insert("/state/ca.pem".into(), HostKind::File);
        h.kinds
            .insert("/etc/ssl/certs/ca-certificates.crt".into(), HostKind::File);
        h.unshareable.insert(
            "/etc".into(),
            vec![
                ("/etc/shadow".into(), NodeKind::File),
                ("/etc/ssl/private".into(), NodeKind::Dir),
            ],
        );
        h
    }

    fn spec() -> LaunchSpec {
        LaunchSpec {
            identity: "demo-abcde".into(),
            argv: vec!["bash".into()],
            env: BTreeMap::new(),
            workspace: Workspace {
                host: "/home/alice/proj".into(),
                inside: "/home/alice/proj".into(),
                mode: WorkspaceMode::Mount,
            },
            home: Home {
                host: "/home/alice/.bot-bottle/state/demo-abcde/home".into(),
                inside: "/home/alice".into(),
            },
            files: vec![ReadOnlyFile {
                host: "/state/ca.pem".into(),
                inside: "/etc/ssl/certs/ca-certificates.crt".into(),
            }],
            forwards: vec![],
            interactive: false,
            resources: crate::spec::Resources::default(),
            dangerously_run_as_host_root: false,
        }
    }

    fn secrets() -> Secrets {
        Secrets {
            never_visible: vec![
                "/home/alice".into(),
                "/root".into(),
                "/home/alice/.bot-bottle".into(),
                "/home/alice/.ssh".into(),
                "/var/run/docker.sock".into(),
                "/run".into(),
            ],
            no_workspace_inside: vec!["/home/alice/.bot-bottle".into(), "/home/alice/.ssh".into()],
        }
    }

    fn dirs() -> Vec<PathBuf> {
        ["/usr", "/bin", "/etc", "/lib64", "/opt"]
            .into_iter()
            .map(PathBuf::from)
            .collect()
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// The qemu backend's jail under KVM: `/dev/kvm` (and nothing else of the host's `/dev`)
    /// is bound after the standard devices, before `/dev` is made read-only.
    #[test]
    fn the_kvm_device_is_bound_after_the_standard_ones_and_nothing_else_is_accepted() {
        let mut h = host();
        h.kinds.insert("/dev/kvm".into(), HostKind::Other);
        h.kinds.insert("/dev/sda".into(), HostKind::Other);
        h.kinds.insert("/dev/notadevice".into(), HostKind::File);
        let built = build(&spec(), &p("/home/alice/proj"), &dirs(), &secrets(), &h).unwrap();
        let with = with_devices(built.clone(), &[p("/dev/kvm")], &h).unwrap();
        assert_eq!(with.len(), built.len() + 1);
        let kvm = with
            .iter()
            .position(|op| {
                *op == MountOp::BindDevice {
                    source: p("/dev/kvm"),
                    target: p("/dev/kvm"),
                }
            })
            .expect("no /dev/kvm bind");
        assert!(matches!(with[kvm - 1], MountOp::BindDevice { .. }));
        assert!(matches!(with[kvm + 1], MountOp::Devpts { .. }));
        let devices: Vec<&PathBuf> = with
            .iter()
            .filter_map(|op| match op {
                MountOp::BindDevice { source, .. } => Some(source),
                _ => None,
            })
            .collect();
        assert_eq!(
            devices,
            ["null", "zero", "full", "random", "urandom", "tty", "kvm"]
                .map(|d| Path::new("/dev").join(d))
                .iter()
                .collect::<Vec<_>>()
        );
        assert_eq!(with_devices(built.clone(), &[], &h).unwrap(), built);
        assert_eq!(
            with_devices(built.clone(), &[p("/dev/sda")], &h),
            Err(PlanError::DeviceNotAllowed {
                path: p("/dev/sda"),
                allowed: EXTRA_DEVICES
            })
        );
        let mut missing = host();
        missing.kinds.remove(&p("/dev/kvm"));
        assert!(matches!(
            with_devices(built.clone(), &[p("/dev/kvm")], &missing),
            Err(PlanError::Missing { .. })
        ));
        let mut file = host();
        file.kinds.insert("/dev/kvm".into(), HostKind::File);
        assert_eq!(
            with_devices(built, &[p("/dev/kvm")], &file),
            Err(PlanError::NotADevice {
                path: p("/dev/kvm")
            })
        );
    }

    #[test]
    fn plan_builds_the_view_from_nothing() {
        let s = spec();
        let plan = build(&s, &s.workspace.host, &dirs(), &secrets(), &host()).unwrap();
        let ro = |d: &str| MountOp::BindReadOnly {
            source: p(d),
            target: p(d),
            kind: NodeKind::Dir,
        };
        let dev = |d: &str| MountOp::BindDevice {
            source: p(d),
            target: p(d),
        };
        let link = |t: &str, to: &str| MountOp::Symlink {
            target: p(t),
            points_to: p(to),
        };
        let tmpfs = |t: &str, mode| MountOp::Tmpfs { target: p(t), mode };
        assert_eq!(
            plan,
            vec![
                ro("/usr"),
                link("/bin", "usr/bin"),
                ro("/etc"),
                ro("/lib64"),
                MountOp::MaskFile {
                    target: p("/etc/shadow")
                },
                MountOp::MaskDir {
                    target: p("/etc/ssl/private")
                },
                tmpfs("/dev", 0o755),
                dev("/dev/null"),
                dev("/dev/zero"),
                dev("/dev/full"),
                dev("/dev/random"),
                dev("/dev/urandom"),
                dev("/dev/tty"),
                MountOp::Devpts {
                    target: p("/dev/pts")
                },
                tmpfs("/dev/shm", 0o1777),
                link("/dev/ptmx", "pts/ptmx"),
                link("/dev/fd", "/proc/self/fd"),
                link("/dev/stdin", "/proc/self/fd/0"),
                link("/dev/stdout", "/proc/self/fd/1"),
                link("/dev/stderr", "/proc/self/fd/2"),
                MountOp::Proc { target: p("/proc") },
                tmpfs("/tmp", 0o1777),
                tmpfs("/var/tmp", 0o1777),
                tmpfs("/run", 0o755),
                link("/var/run", "/run"),
                MountOp::BindWritable {
                    source: p("/home/alice/.bot-bottle/state/demo-abcde/home"),
                    target: p("/home/alice"),
                    kind: NodeKind::Dir,
                },
                MountOp::BindWritable {
                    source: p("/home/alice/proj"),
                    target: p("/home/alice/proj"),
                    kind: NodeKind::Dir,
                },
                MountOp::BindReadOnly {
                    source: p("/state/ca.pem"),
                    target: p("/etc/ssl/certs/ca-certificates.crt"),
                    kind: NodeKind::File,
                },
                MountOp::RemountReadOnly { target: p("/dev") },
                MountOp::RemountReadOnly { target: p("/run") },
                MountOp::RemountReadOnly { target: p("/") },
            ]
        );
    }

    #[test]
    fn plan_refuses_the_home_directory_as_workspace() {
        let mut s = spec();
        s.workspace.host = "/home".into();
        let err = build(&s, &s.workspace.host, &dirs(), &secrets(), &host()).unwrap_err();
        assert_eq!(
            err,
            PlanError::ExposesSecret {
                what: "the workspace",
                path: p("/home"),
                secret: p("/home/alice"),
            }
        );
    }

    #[test]
    fn plan_refuses_a_system_dir_that_contains_a_secret() {
        let s = spec();
        let mut d = dirs();
        d.push("/".into());
        let err = build(&s, &s.workspace.host, &d, &secrets(), &host()).unwrap_err();
        assert_eq!(
            err,
            PlanError::ExposesSecret {
                what: "the system directory",
                path: p("/"),
                secret: p("/home/alice"),
            }
        );
    }

    #[test]
    fn plan_refuses_a_workspace_inside_the_state_tree() {
        let mut s = spec();
        s.workspace.host = "/home/alice/.bot-bottle/queue/x".into();
        let err = build(&s, &s.workspace.host, &dirs(), &secrets(), &host()).unwrap_err();
        assert_eq!(
            err,
            PlanError::WorkspaceInPrivateTree {
                path: p("/home/alice/.bot-bottle/queue/x"),
                tree: p("/home/alice/.bot-bottle"),
            }
        );
    }

    #[test]
    fn plan_refuses_new_paths_in_the_read_only_view_and_reserved_paths() {
        let mut s = spec();
        s.files[0].inside = "/etc/bot-bottle/ca.pem".into();
        let err = build(&s, &s.workspace.host, &dirs(), &secrets(), &host()).unwrap_err();
        assert_eq!(
            err,
            PlanError::InsideReadOnlyView {
                what: "a read-only file",
                inside: p("/etc/bot-bottle/ca.pem"),
                system_dir: p("/etc"),
            }
        );
        s.files[0].inside = "/proc/self/environ".into();
        let err = build(&s, &s.workspace.host, &dirs(), &secrets(), &host()).unwrap_err();
        assert_eq!(
            err,
            PlanError::Reserved {
                what: "a read-only file",
                inside: p("/proc/self/environ"),
            }
        );
        s.files[0].inside = "/run/bot-bottle/ca.pem".into();
        assert!(build(&s, &s.workspace.host, &dirs(), &secrets(), &host()).is_ok());
    }

    #[test]
    fn plan_refuses_relative_and_dotdot_paths() {
        let mut s = spec();
        s.home.inside = "/home/../etc".into();
        let err = build(&s, &s.workspace.host, &dirs(), &secrets(), &host()).unwrap_err();
        assert_eq!(
            err,
            PlanError::NotAbsolute {
                what: "the home path inside",
                path: p("/home/../etc"),
            }
        );
    }

    #[test]
    fn apply_mounts_in_order_under_the_new_root() {
        let plan = vec![
            MountOp::BindReadOnly {
                source: p("/usr"),
                target: p("/usr"),
                kind: NodeKind::Dir,
            },
            MountOp::MaskFile {
                target: p("/etc/shadow"),
            },
            MountOp::Tmpfs {
                target: p("/tmp"),
                mode: 0o1777,
            },
            MountOp::BindWritable {
                source: p("/w"),
                target: p("/w"),
                kind: NodeKind::Dir,
            },
            MountOp::Symlink {
                target: p("/bin"),
                points_to: p("usr/bin"),
            },
            MountOp::Proc { target: p("/proc") },
            MountOp::RemountReadOnly { target: p("/") },
        ];
        let mut os = RecordingOs::default();
        apply(&plan, Path::new("/r"), &mut os).unwrap();
        assert_eq!(
            os.calls,
            vec![
                "tmpfs /r 755",
                "mountpoint dir /r/usr",
                "bind /usr /r/usr",
                "read-only /r/usr",
                "bind /dev/null /r/etc/shadow",
                "read-only /r/etc/shadow",
                "mountpoint dir /r/tmp",
                "tmpfs /r/tmp 1777",
                "mountpoint dir /r/w",
                "bind /w /r/w",
                "nosuid-nodev /r/w",
                "mountpoint dir /r",
                "symlink usr/bin /r/bin",
                "mountpoint dir /r/proc",
                "proc /r/proc",
                "remount read-only /r",
            ]
        );
    }

    /// A masked entry removed from the host between the scan and the mounts (a daemon's
    /// socket in `/opt`) leaves nothing to hide: its mask is skipped and the others apply.
    /// A mount that fails for any other reason, or on a path that is not confirmed gone
    /// (something appeared there again), refuses the bottle.
    #[test]
    fn a_mask_whose_target_is_gone_is_skipped_and_any_other_failure_refuses() {
        let p = PathBuf::from;
        let plan = vec![
            MountOp::BindReadOnly {
                source: p("/opt"),
                target: p("/opt"),
                kind: NodeKind::Dir,
            },
            MountOp::MaskFile {
                target: p("/opt/d/daemon.sock"),
            },
            MountOp::MaskDir {
                target: p("/opt/d/private"),
            },
            MountOp::MaskFile {
                target: p("/opt/d/private.key"),
            },
        ];
        let gone = [p("/r/opt/d/daemon.sock"), p("/r/opt/d/private")];
        let mut os = RecordingOs {
            missing: gone.iter().cloned().collect(),
            gone: gone.iter().cloned().collect(),
            ..RecordingOs::default()
        };
        apply(&plan, Path::new("/r"), &mut os).unwrap();
        assert_eq!(
            os.calls,
            vec![
                "tmpfs /r 755",
                "mountpoint dir /r/opt",
                "bind /opt /r/opt",
                "read-only /r/opt",
                "bind /dev/null /r/opt/d/daemon.sock",
                "tmpfs /r/opt/d/private 755",
                "bind /dev/null /r/opt/d/private.key",
                "read-only /r/opt/d/private.key",
            ]
        );
        // The mount failed with ENOENT but something is at the path now: refused.
        for target in gone {
            let mut os = RecordingOs {
                missing: [target.clone()].into_iter().collect(),
                ..RecordingOs::default()
            };
            let err = apply(&plan, Path::new("/r"), &mut os).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{target:?}");
        }
    }
}
