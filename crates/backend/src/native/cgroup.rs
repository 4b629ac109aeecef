//! Resource limits of a native bottle: one cgroup per bottle, made before the bottle's first
//! process exists, so the outer helper, init and every process of the agent are inside it
//! from their first instruction.
//!
//! Which cgroup is used, in order:
//! * **v2** (one unified hierarchy with `cpu`, `memory` and `pids`): as root,
//!   `<v2 mount>/bot-bottle/<identity>`; as a regular user, a sibling of the launcher's own
//!   cgroup when that cgroup's parent is delegated to the user (owned by the user, as systemd
//!   does for `user@UID.service` and `systemd-run --user --scope`);
//! * **v1** (hosts that mount `cpu`, `memory` and `pids` as separate hierarchies, with v2
//!   holding none of them): `<mount>/<launcher's cgroup>/bot-bottle-<identity>` in each of
//!   the three, as root or where that cgroup is owned by the user.
//!
//! Neither usable: [`plan`] fails with what it found and the fix; the launch refuses
//! unless the bottle set `resources: {dangerously_allow_unenforced: true}`.
//!
//! The detection and the files written are a pure function of the host's facts read through
//! [`CgroupOs`] ([`plan`]), unit-tested with the recording fake; [`apply`], [`attach`] and
//! [`remove`] do the writes.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::os::CgroupOs;
use crate::spec::Resources;

/// The controllers a bottle's limits need.
pub const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
/// The CFS period used for the CPU quota (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// One cgroup filesystem mount (from `/proc/self/mountinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The cgroup shown at the mount point (`/` unless the mount is of a sub-tree).
    pub root: PathBuf,
    /// `true` for `cgroup2`.
    pub v2: bool,
    /// v1: the controllers bound to this hierarchy (from the mount options).
    pub controllers: Vec<String>,
}

/// One line of `/proc/self/cgroup`: the launcher's own cgroup in a hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCgroup {
    /// The v1 controllers of the hierarchy; empty for the v2 line (`0::/path`).
    pub controllers: Vec<String>,
    /// The cgroup's path in its hierarchy.
    pub path: PathBuf,
}

/// What the plan needs to know about the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupFacts {
    pub mounts: Vec<CgroupMount>,
    pub own: Vec<OwnCgroup>,
    /// The launcher's effective uid.
    pub euid: u32,
}

impl CgroupFacts {
    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn gather() -> CgroupFacts {
        CgroupFacts {
            mounts: parse_mountinfo(
                &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            ),
            own: parse_proc_cgroup(
                &std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
            ),
            euid: nix::unistd::geteuid().as_raw(),
        }
    }
}

/// The cgroup mounts of a `mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let unescape = |s: &str| {
        // mountinfo escapes space, tab, newline and backslash as \ooo.
        let mut out = Vec::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\'
                && i + 3 < bytes.len()
                && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
            {
                out.push(v);
                i += 4;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&out))
    };
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let fstype = *right.first()?;
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let controllers = if v2 {
                Vec::new()
            } else {
                right
                    .get(2)?
                    .split(',')
                    .filter(|o| CONTROLLERS.contains(o) || *o == "cpuacct" || *o == "cpuset")
                    .map(str::to_owned)
                    .collect()
            };
            Some(CgroupMount {
                root: unescape(left.get(3)?),
                mount_point: unescape(left.get(4)?),
                v2,
                controllers,
            })
        })
        .collect()
}

/// The lines of a `/proc/self/cgroup` text.
pub fn parse_proc_cgroup(text: &str) -> Vec<OwnCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(OwnCgroup {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: PathBuf::from(path),
            })
        })
        .collect()
}

/// The cgroup version a plan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// The cgroups of one bottle, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPlan {
    pub version: Version,
    /// Shared parents created when missing and never removed (v2 as root: `bot-bottle`).
    pub parents: Vec<PathBuf>,
    /// The bottle's own cgroups (one on v2, one per controller on v1), removed with it.
    pub dirs: Vec<PathBuf>,
    /// Files written, in order, before the bottle's first process joins.
    pub writes: Vec<(PathBuf, String)>,
}

impl CgroupPlan {
    /// One line for logs and `doctor`: `cgroup v1: /sys/fs/cgroup/memory/…, …`.
    pub fn describe(&self) -> String {
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        format!(
            "cgroup {}: {}",
            match self.version {
                Version::V1 => "v1",
                Version::V2 => "v2",
            },
            dirs.join(", ")
        )
    }
}

/// Why the limits cannot be enforced on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot enforce the bottle's resources (cpus, memory, pids): {found}; {fix}, or set `resources: {{dangerously_allow_unenforced: true}}` in the bottle to start without limits"
)]
pub struct CgroupError {
    /// What was found on the host.
    pub found: String,
    /// What makes it work.
    pub fix: String,
}

/// Where a cgroup of the launcher's lives on disk, for a mount.
fn on_disk(mount: &CgroupMount, path: &Path) -> PathBuf {
    let rel = path.strip_prefix(&mount.root).unwrap_or(path);
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    if rel.as_os_str().is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rel)
    }
}

fn has_all(listed: &str) -> bool {
    let listed: Vec<&str> = listed.split_whitespace().collect();
    CONTROLLERS.iter().all(|c| listed.contains(c))
}

/// The v2 limit files; `swap`: the kernel accounts swap (`memory.swap.max` exists), so the
/// bottle gets none on top of its memory.
fn v2_limits(dir: &Path, r: &Resources, swap: bool) -> Vec<(PathBuf, String)> {
    let quota = u64::from(r.millicpus) * CPU_PERIOD_US / 1000;
    let mut writes = vec![
        (dir.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}")),
        (dir.join("memory.max"), r.memory_bytes.to_string()),
    ];
    if swap {
        writes.push((dir.join("memory.swap.max"), "0".to_owned()));
    }
    writes.push((dir.join("pids.max"), r.pids.to_string()));
    writes
}

/// Whether the kernel accounts swap: the launcher's own (non-root) v2 cgroup has
/// `memory.swap.max`.
fn swap_accounted(mount: &CgroupMount, facts: &CgroupFacts, os: &dyn CgroupOs) -> bool {
    facts
        .own
        .iter()
        .find(|o| o.controllers.is_empty())
        .is_some_and(|own| {
            os.owner(&on_disk(mount, &own.path).join("memory.swap.max"))
                .is_some()
        })
}

/// Enables the controllers in `parent`'s subtree, for those not yet enabled.
fn enable(parent: &Path, os: &dyn CgroupOs, writes: &mut Vec<(PathBuf, String)>) {
    let file = parent.join("cgroup.subtree_control");
    let enabled = os.read(&file).unwrap_or_default();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if !missing.is_empty() {
        writes.push((file, missing.join(" ")));
    }
}

/// The v2 plan, or why v2 cannot be used (`None`: no v2 mount at all).
fn plan_v2(
    facts: &CgroupFacts,
    identity: &str,
    r: &Resources,
    os: &dyn CgroupOs,
) -> Option<Result<CgroupPlan, String>> {
    let mount = facts.mounts.iter().find(|m| m.v2)?;
    if facts.euid == 0 {
        let top = mount.mount_point.clone();
        let available = os.read(&top.join("cgroup.controllers")).unwrap_or_default();
        if !has_all(&available) {
            return Some(Err(format!(
                "cgroup v2 at {} has controllers [{}], not cpu, memory and pids",
                top.display(),
                available.trim()
            )));
        }
        let parent = top.join("bot-bottle");
        let dir = parent.join(identity);
        let mut writes = Vec::new();
        enable(&top, os, &mut writes);
        enable(&parent, os, &mut writes);
        writes.extend(v2_limits(&dir, r, swap_accounted(mount, facts, os)));
        return Some(Ok(CgroupPlan {
            version: Version::V2,
            parents: vec![parent],
            dirs: vec![dir],
            writes,
        }));
    }
    // A regular user: only a delegated parent of the launcher's own cgroup will do (the
    // launcher's cgroup itself holds processes, so it cannot get controlled children).
    let own = facts.own.iter().find(|o| o.controllers.is_empty())?;
    let here = on_disk(mount, &own.path);
    let Some(parent) = here.parent().filter(|p| p.starts_with(&mount.mount_point)) else {
        return Some(Err(format!(
            "the launcher runs in the root cgroup {} and is not root",
            here.display()
        )));
    };
    let delegated = ["", "cgroup.procs", "cgroup.subtree_control"]
        .iter()
        .all(|f| {
            let path = if f.is_empty() {
                parent.to_path_buf()
            } else {
                parent.join(f)
            };
            os.owner(&path) == Some(facts.euid)
        });
    if !delegated {
        return Some(Err(format!(
            "cgroup v2 is mounted, but {} is not delegated to uid {}",
            parent.display(),
            facts.euid
        )));
    }
    let available = os
        .read(&parent.join("cgroup.controllers"))
        .unwrap_or_default();
    if !has_all(&available) {
        return Some(Err(format!(
            "the delegated cgroup {} has controllers [{}], not cpu, memory and pids",
            parent.display(),
            available.trim()
        )));
    }
    let dir = parent.join(format!("bot-bottle-{identity}"));
    let mut writes = Vec::new();
    enable(parent, os, &mut writes);
    writes.extend(v2_limits(&dir, r, swap_accounted(mount, facts, os)));
    Some(Ok(CgroupPlan {
        version: Version::V2,
        parents: vec![],
        dirs: vec![dir],
        writes,
    }))
}

/// The v1 plan, or why v1 cannot be used.
fn plan_v1(
    facts: &CgroupFacts,
    identity: &str,
    r: &Resources,
    os: &dyn CgroupOs,
) -> Result<CgroupPlan, String> {
    let mut dirs = Vec::new();
    let mut writes = Vec::new();
    let mut missing = Vec::new();
    for controller in CONTROLLERS {
        let has = |list: &[String]| list.iter().any(|c| c == controller);
        let Some(mount) = facts.mounts.iter().find(|m| !m.v2 && has(&m.controllers)) else {
            missing.push(controller);
            continue;
        };
        let own = facts
            .own
            .iter()
            .find(|o| has(&o.controllers))
            .map(|o| o.path.clone())
            .unwrap_or_else(|| PathBuf::from("/"));
        let here = on_disk(mount, &own);
        if facts.euid != 0 && os.owner(&here) != Some(facts.euid) {
            return Err(format!(
                "the v1 {controller} cgroup {} is not delegated to uid {}",
                here.display(),
                facts.euid
            ));
        }
        let dir = here.join(format!("bot-bottle-{identity}"));
        match controller {
            "cpu" => {
                if os.owner(&here.join("cpu.cfs_quota_us")).is_none() {
                    return Err(format!(
                        "the v1 cpu controller at {} has no CPU quota (cpu.cfs_quota_us; the kernel lacks CONFIG_CFS_BANDWIDTH)",
                        here.display()
                    ));
                }
                writes.push((dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string()));
                writes.push((
                    dir.join("cpu.cfs_quota_us"),
                    (u64::from(r.millicpus) * CPU_PERIOD_US / 1000).to_string(),
                ));
            }
            "memory" => {
                writes.push((
                    dir.join("memory.limit_in_bytes"),
                    r.memory_bytes.to_string(),
                ));
                // With swap accounting, memory+swap gets the same limit: no swap on top.
                if os
                    .owner(&here.join("memory.memsw.limit_in_bytes"))
                    .is_some()
                {
                    writes.push((
                        dir.join("memory.memsw.limit_in_bytes"),
                        r.memory_bytes.to_string(),
                    ));
                }
            }
            _ => writes.push((dir.join("pids.max"), r.pids.to_string())),
        }
        dirs.push(dir);
    }
    if !missing.is_empty() {
        return Err(format!("no cgroup v1 hierarchy for {}", missing.join(", ")));
    }
    Ok(CgroupPlan {
        version: Version::V1,
        parents: vec![],
        dirs,
        writes,
    })
}

/// Chooses the cgroups of bottle `identity` and the files that set `resources` on them.
pub fn plan(
    facts: &CgroupFacts,
    identity: &str,
    resources: &Resources,
    os: &dyn CgroupOs,
) -> Result<CgroupPlan, CgroupError> {
    let v2 = plan_v2(facts, identity, resources, os);
    if let Some(Ok(plan)) = v2 {
        return Ok(plan);
    }
    let v1 = plan_v1(facts, identity, resources, os);
    let v1_err = match v1 {
        Ok(plan) => return Ok(plan),
        Err(e) => e,
    };
    let mut found = Vec::new();
    match v2 {
        Some(Err(e)) => found.push(e),
        _ => found.push("no cgroup v2 mount".to_owned()),
    }
    found.push(v1_err);
    let fix = if facts.euid == 0 {
        "mount cgroup v2 with the cpu, memory and pids controllers (current distributions do; \
         older ones: boot with systemd.unified_cgroup_hierarchy=1), or mount the v1 cpu, \
         memory and pids hierarchies under /sys/fs/cgroup"
    } else {
        "run `bot-bottle start` in a cgroup delegated to you, e.g. `systemd-run --user --scope \
         -p Delegate=yes bot-bottle start ...`, or as root"
    };
    Err(CgroupError {
        found: found.join("; "),
        fix: fix.to_owned(),
    })
}

/// Creates the plan's cgroups and writes the limits. On failure, what was created is removed.
pub fn apply(plan: &CgroupPlan, os: &mut dyn CgroupOs) -> io::Result<()> {
    for parent in &plan.parents {
        if os.owner(parent).is_none() {
            os.mkdir(parent)?;
        }
    }
    let result = (|| {
        for dir in &plan.dirs {
            // A leftover of a crashed launcher with this identity: empty, so removable.
            if os.owner(dir).is_some() {
                os.rmdir(dir)?;
            }
            os.mkdir(dir)?;
        }
        for (file, value) in &plan.writes {
            os.write(file, value)?;
        }
        Ok(())
    })();
    if result.is_err() {
        remove(plan, os);
    }
    result
}

/// Moves process `pid` (and so everything it will start) into the plan's cgroups.
pub fn attach(plan: &CgroupPlan, pid: u32, os: &mut dyn CgroupOs) -> io::Result<()> {
    for dir in &plan.dirs {
        os.write(&dir.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// Removes the bottle's cgroups (once they are empty; retried briefly while the last
/// processes are reaped). Best effort: what remains is removed by `cleanup`.
pub fn remove(plan: &CgroupPlan, os: &mut dyn CgroupOs) {
    remove_dirs(&plan.dirs, os);
}

/// [`remove`] for the cgroup directories a bottle's record names (`cleanup`).
pub fn remove_dirs(dirs: &[PathBuf], os: &mut dyn CgroupOs) {
    for dir in dirs.iter().rev() {
        for attempt in 0..50 {
            match os.rmdir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(_) if attempt < 49 => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the bottle's cgroup");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::native::os::tests::RecordingOs;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn resources() -> Resources {
        Resources {
            millicpus: 1500,
            memory_bytes: 2 << 30,
            pids: 512,
            allow_unenforced: false,
        }
    }

    /// This machine's layout: cpu, memory and pids as v1 hierarchies, v2 with hugetlb only.
    const V1_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V1_CGROUP: &str = "\
8:pids:/
4:memory:/process_api/f848
1:cpu:/
0::/
";

    fn v1_host() -> RecordingOs {
        let mut os = RecordingOs::default();
        os.files.insert(
            p("/sys/fs/cgroup/unified/cgroup.controllers"),
            "hugetlb\n".into(),
        );
        for f in [
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            "/sys/fs/cgroup/memory/process_api/f848",
            "/sys/fs/cgroup/memory/process_api/f848/memory.memsw.limit_in_bytes",
            "/sys/fs/cgroup/pids",
        ] {
            os.owners.insert(p(f), 0);
        }
        os
    }

    #[test]
    fn mountinfo_and_proc_cgroup_are_read() {
        let mounts = parse_mountinfo(V1_MOUNTINFO);
        assert_eq!(mounts.len(), 5);
        assert_eq!(
            mounts[2],
            CgroupMount {
                mount_point: p("/sys/fs/cgroup/memory"),
                root: p("/"),
                v2: false,
                controllers: vec!["memory".into()],
            }
        );
        assert!(mounts[4].v2);
        let own = parse_proc_cgroup(V1_CGROUP);
        assert_eq!(
            own[1],
            OwnCgroup {
                controllers: vec!["memory".into()],
                path: p("/process_api/f848"),
            }
        );
        assert_eq!(
            own[3],
            OwnCgroup {
                controllers: vec![],
                path: p("/"),
            }
        );
        let escaped = parse_mountinfo("1 2 0:1 / /a\\040b rw - cgroup2 cgroup2 rw\n");
        assert_eq!(escaped[0].mount_point, p("/a b"));
    }

    #[test]
    fn v1_host_as_root_gets_one_cgroup_per_controller() {
        let facts = CgroupFacts {
            mounts: parse_mountinfo(V1_MOUNTINFO),
            own: parse_proc_cgroup(V1_CGROUP),
            euid: 0,
        };
        let os = v1_host();
        let plan = plan(&facts, "demo-abcde", &resources(), &os).unwrap();
        let w = |f: &str, v: &str| (p(f), v.to_owned());
        assert_eq!(
            plan,
            CgroupPlan {
                version: Version::V1,
                parents: vec![],
                dirs: vec![
                    p("/sys/fs/cgroup/cpu/bot-bottle-demo-abcde"),
                    p("/sys/fs/cgroup/memory/process_api/f848/bot-bottle-demo-abcde"),
                    p("/sys/fs/cgroup/pids/bot-bottle-demo-abcde"),
                ],
                writes: vec![
                    w(
                        "/sys/fs/cgroup/cpu/bot-bottle-demo-abcde/cpu.cfs_period_us",
                        "100000"
                    ),
                    w(
                        "/sys/fs/cgroup/cpu/bot-bottle-demo-abcde/cpu.cfs_quota_us",
                        "150000"
                    ),
                    w(
                        "/sys/fs/cgroup/memory/process_api/f848/bot-bottle-demo-abcde/memory.limit_in_bytes",
                        "2147483648"
                    ),
                    w(
                        "/sys/fs/cgroup/memory/process_api/f848/bot-bottle-demo-abcde/memory.memsw.limit_in_bytes",
                        "2147483648"
                    ),
                    w("/sys/fs/cgroup/pids/bot-bottle-demo-abcde/pids.max", "512"),
                ],
            }
        );
        let mut os = os;
        apply(&plan, &mut os).unwrap();
        attach(&plan, 42, &mut os).unwrap();
        remove(&plan, &mut os);
        assert_eq!(
            os.calls,
            vec![
                "mkdir /sys/fs/cgroup/cpu/bot-bottle-demo-abcde",
                "mkdir /sys/fs/cgroup/memory/process_api/f848/bot-bottle-demo-abcde",
                "mkdir /sys/fs/cgroup/pids/bot-bottle-demo-abcde",
                "write /sys/fs/cgroup/cpu/bot-bottle-demo-abcde/cpu.cfs_period_us 100000",
                "write /sys/fs/cgroup/cpu/bot-bottle-demo-abcde/cpu.cfs_quota_us 150000",
                "write /sys/fs/cgroup/memory/process_api/f848/bot-bottle-demo-abcde/memory.limit_in_bytes 2147483648",
                "write /sys/fs/cgroup/memory/process_api/f848/bot-bottle-demo-abcde/memory.memsw.limit_in_bytes 2147483648",
                "write /sys/fs/cgroup/pids/bot-bottle-demo-abcde/pids.max 512",
                "write /sys/fs/cgroup/cpu/bot-bottle-demo-abcde/cgroup.procs 42",
                "write /sys/fs/cgroup/memory/process_api/f848/bot-bottle-demo-abcde/cgroup.procs 42",
                "write /sys/fs/cgroup/pids/bot-bottle-demo-abcde/cgroup.procs 42",
                "rmdir /sys/fs/cgroup/pids/bot-bottle-demo-abcde",
                "rmdir /sys/fs/cgroup/memory/process_api/f848/bot-bottle-demo-abcde",
                "rmdir /sys/fs/cgroup/cpu/bot-bottle-demo-abcde",
            ]
        );
    }

    const V2_MOUNTINFO: &str = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn v2_as_root_uses_a_bot_bottle_subtree_with_controllers_enabled() {
        let facts = CgroupFacts {
            mounts: parse_mountinfo(V2_MOUNTINFO),
            own: parse_proc_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
            euid: 0,
        };
        let mut os = RecordingOs::default();
        os.files.insert(
            p("/sys/fs/cgroup/cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n".into(),
        );
        os.files.insert(
            p("/sys/fs/cgroup/cgroup.subtree_control"),
            "cpu memory pids\n".into(),
        );
        os.owners.insert(
            p("/sys/fs/cgroup/user.slice/user-0.slice/session-1.scope/memory.swap.max"),
            0,
        );
        let plan = plan(&facts, "demo-abcde", &resources(), &os).unwrap();
        let w = |f: &str, v: &str| (p(f), v.to_owned());
        assert_eq!(
            plan,
            CgroupPlan {
                version: Version::V2,
                parents: vec![p("/sys/fs/cgroup/bot-bottle")],
                dirs: vec![p("/sys/fs/cgroup/bot-bottle/demo-abcde")],
                writes: vec![
                    w(
                        "/sys/fs/cgroup/bot-bottle/cgroup.subtree_control",
                        "+cpu +memory +pids"
                    ),
                    w(
                        "/sys/fs/cgroup/bot-bottle/demo-abcde/cpu.max",
                        "150000 100000"
                    ),
                    w(
                        "/sys/fs/cgroup/bot-bottle/demo-abcde/memory.max",
                        "2147483648"
                    ),
                    w("/sys/fs/cgroup/bot-bottle/demo-abcde/memory.swap.max", "0"),
                    w("/sys/fs/cgroup/bot-bottle/demo-abcde/pids.max", "512"),
                ],
            }
        );
        apply(&plan, &mut os).unwrap();
        assert_eq!(
            os.calls[..2],
            [
                "mkdir /sys/fs/cgroup/bot-bottle",
                "mkdir /sys/fs/cgroup/bot-bottle/demo-abcde"
            ]
        );
    }

    #[test]
    fn v2_for_a_user_needs_a_delegated_parent() {
        let facts = CgroupFacts {
            mounts: parse_mountinfo(V2_MOUNTINFO),
            own: parse_proc_cgroup(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope\n",
            ),
            euid: 1000,
        };
        let parent = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice";
        let mut os = RecordingOs::default();
        os.files.insert(
            p(&format!("{parent}/cgroup.controllers")),
            "cpu memory pids\n".into(),
        );
        os.files.insert(
            p(&format!("{parent}/cgroup.subtree_control")),
            "memory pids\n".into(),
        );
        for f in ["", "/cgroup.procs", "/cgroup.subtree_control"] {
            os.owners.insert(p(&format!("{parent}{f}")), 1000);
        }
        let plan = plan(&facts, "demo-abcde", &resources(), &os).unwrap();
        assert_eq!(
            plan.dirs,
            vec![p(&format!("{parent}/bot-bottle-demo-abcde"))]
        );
        assert_eq!(
            plan.writes[0],
            (
                p(&format!("{parent}/cgroup.subtree_control")),
                "+cpu".to_owned()
            )
        );

        // The same user in a login session (root-owned scope): refused with the fix.
        let facts = CgroupFacts {
            own: parse_proc_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n"),
            ..facts
        };
        let err = super::plan(&facts, "demo-abcde", &resources(), &os).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot enforce the bottle's resources (cpus, memory, pids): cgroup v2 is mounted, \
             but /sys/fs/cgroup/user.slice/user-1000.slice is not delegated to uid 1000; no \
             cgroup v1 hierarchy for cpu, memory, pids; run `bot-bottle start` in a cgroup \
             delegated to you, e.g. `systemd-run --user --scope -p Delegate=yes bot-bottle \
             start ...`, or as root, or set `resources: {dangerously_allow_unenforced: true}` \
             in the bottle to start without limits"
        );
    }

    #[test]
    fn no_usable_hierarchy_is_an_error_with_the_fix() {
        let facts = CgroupFacts {
            mounts: parse_mountinfo(
                "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                 41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            ),
            own: parse_proc_cgroup("1:cpu:/\n0::/\n"),
            euid: 0,
        };
        let mut os = RecordingOs::default();
        os.files.insert(
            p("/sys/fs/cgroup/unified/cgroup.controllers"),
            "hugetlb\n".into(),
        );
        os.owners
            .insert(p("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), 0);
        let err = plan(&facts, "x", &resources(), &os).unwrap_err();
        assert_eq!(
            err,
            CgroupError {
                found: "cgroup v2 at /sys/fs/cgroup/unified has controllers [hugetlb], not cpu, \
                        memory and pids; no cgroup v1 hierarchy for memory, pids"
                    .into(),
                fix: "mount cgroup v2 with the cpu, memory and pids controllers (current \
                      distributions do; older ones: boot with systemd.unified_cgroup_hierarchy=1), \
                      or mount the v1 cpu, memory and pids hierarchies under /sys/fs/cgroup"
                    .into(),
            }
        );
    }

    #[test]
    fn a_failed_write_removes_what_was_created() {
        let facts = CgroupFacts {
            mounts: parse_mountinfo(V1_MOUNTINFO),
            own: parse_proc_cgroup(V1_CGROUP),
            euid: 0,
        };
        let mut os = v1_host();
        let plan = plan(&facts, "d", &resources(), &os).unwrap();
        os.fail_writes_to = Some(p("/sys/fs/cgroup/pids/bot-bottle-d/pids.max"));
        assert!(apply(&plan, &mut os).is_err());
        assert_eq!(
            os.calls[os.calls.len() - 3..],
            [
                "rmdir /sys/fs/cgroup/pids/bot-bottle-d",
                "rmdir /sys/fs/cgroup/memory/process_api/f848/bot-bottle-d",
                "rmdir /sys/fs/cgroup/cpu/bot-bottle-d",
            ]
        );
    }
}
