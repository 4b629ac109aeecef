//! Which host uid a native bottle runs as, and handing it what it must write.
//!
//! The agent's uid inside (`inside_uid`, 1000) maps to exactly one host uid, and host uid 0 is
//! never mapped (unless `dangerously_run_as_host_root`):
//! * started by a regular user: that user (the only id an unprivileged user namespace can map);
//! * started by root: the owner of the workspace when that is not root (files the agent
//!   writes belong to the project's owner, as if they had started it), else the dedicated
//!   unprivileged id [`BOTTLE_HOST_ID`] — so an escape from the bottle lands as nobody in
//!   particular, and nothing the agent writes (a setuid binary, say) is root's.
//!
//! What the agent must write is handed to that uid before it starts (root only; a regular
//! user's bottle already owns its files): the bottle's home and workspace copy (the bottle's
//! own state) and, for a mounted workspace of root's, the entries owned by root (`chown`, like
//! podman's `:U` volumes; root keeps full access, since root ignores ownership). A user's
//! workspace is left as it is: the agent is that user and gets exactly what they have.
//! The walk opens every directory relative to its parent with `O_NOFOLLOW` and changes owners
//! with `fchownat(AT_SYMLINK_NOFOLLOW)`, so a symlink or a directory swapped for one by an
//! earlier bottle cannot redirect it; it stays on the workspace's filesystem and leaves
//! hard-linked files alone (a hard link may share its inode with a file elsewhere).
//!
//! Why not an idmapped mount: it would map the agent's files back to root on disk, which is
//! what this module exists to stop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{Gid, Uid, fchownat};

/// The host uid and gid a root-started bottle runs as when its workspace belongs to root:
/// 1879048192 (`0x70000000`), the first id of the range systemd documents as unused
/// (1879048192–2147352575: above container id ranges, below the foreign range). No login,
/// no files anywhere but what a bottle was handed.
pub const BOTTLE_HOST_ID: u32 = 0x7000_0000;

/// The host ids a bottle's agent runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostIds {
    pub uid: u32,
    pub gid: u32,
}

/// Chooses the host ids: `launcher` is the launcher's (uid, gid), `workspace_owner` the
/// workspace directory's.
pub fn host_ids(
    launcher: HostIds,
    workspace_owner: HostIds,
    dangerously_run_as_host_root: bool,
) -> HostIds {
    if launcher.uid != 0 || dangerously_run_as_host_root {
        return launcher;
    }
    if workspace_owner.uid != 0 {
        return HostIds {
            uid: workspace_owner.uid,
            // A project owned by a user but group root must not make the agent group root.
            gid: if workspace_owner.gid != 0 {
                workspace_owner.gid
            } else {
                BOTTLE_HOST_ID
            },
        };
    }
    HostIds {
        uid: BOTTLE_HOST_ID,
        gid: BOTTLE_HOST_ID,
    }
}

/// Which entries [`hand_over`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Everything (the bottle's own home and workspace copy).
    All,
    /// Only what root owns (a mounted workspace: other users' files stay theirs).
    OwnedByRoot,
}

/// The deepest directory nesting walked; deeper trees are refused rather than half-handed.
const MAX_DEPTH: usize = 512;

/// Gives the tree at `root` to `to` (see the module docs for what is skipped).
pub fn hand_over(root: &Path, to: HostIds, which: Which) -> io::Result<()> {
    let annotate = |e: nix::Error, what: &str, path: &Path| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("{what} {}: {e}", path.display()),
        )
    };
    let dir = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| annotate(e, "open", root))?;
    let st = nix::sys::stat::fstat(&dir).map_err(|e| annotate(e, "stat", root))?;
    if wanted(st.st_uid, st.st_gid, to, which) {
        change(&dir, c".", to, st.st_gid, which).map_err(|e| annotate(e, "chown", root))?;
    }
    walk(&dir, root, st.st_dev, to, which, 0)
}

/// Whether an entry owned by `uid`:`gid` needs changing (entries already handed over are
/// left alone, so a second start costs one `stat` per entry).
fn wanted(uid: u32, gid: u32, to: HostIds, which: Which) -> bool {
    match which {
        Which::All => uid != to.uid || gid != to.gid,
        Which::OwnedByRoot => uid == 0,
    }
}

fn change<P: ?Sized + nix::NixPath>(
    dir: &OwnedFd,
    name: &P,
    to: HostIds,
    gid: u32,
    which: Which,
) -> nix::Result<()> {
    // The bottle's own files get its group; in a mounted workspace only root's group does.
    let group = (which == Which::All || gid == 0).then_some(Gid::from_raw(to.gid));
    fchownat(
        dir.as_fd(),
        name,
        Some(Uid::from_raw(to.uid)),
        group,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

fn walk(
    dir: &OwnedFd,
    path: &Path,
    dev: u64,
    to: HostIds,
    which: Which,
    depth: usize,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "{} is nested deeper than {MAX_DEPTH} directories",
            path.display()
        )));
    }
    // The names, read through the descriptor (never by path again).
    let names: Vec<std::ffi::OsString> =
        std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
    for name in names {
        let here = path.join(&name);
        let err = |e: nix::Error, what: &str| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{what} {}: {e}", here.display()),
            )
        };
        let st = match fstatat(
            dir.as_fd(),
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(nix::Error::ENOENT) => continue,
            Err(e) => return Err(err(e, "stat")),
        };
        if st.st_dev != dev {
            continue;
        }
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let is_dir = kind == SFlag::S_IFDIR;
        if !is_dir && kind != SFlag::S_IFLNK && st.st_nlink > 1 {
            continue;
        }
        if wanted(st.st_uid, st.st_gid, to, which) {
            change(dir, name.as_os_str(), to, st.st_gid, which).map_err(|e| err(e, "chown"))?;
        }
        if is_dir {
            let child = openat(
                dir.as_fd(),
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| err(e, "open"))?;
            walk(&child, &here, dev, to, which, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    const fn ids(uid: u32, gid: u32) -> HostIds {
        HostIds { uid, gid }
    }

    #[test]
    fn root_never_maps_the_agent_to_root() {
        let bottle = ids(BOTTLE_HOST_ID, BOTTLE_HOST_ID);
        // A regular user: always themselves.
        assert_eq!(host_ids(ids(1000, 1000), ids(0, 0), false), ids(1000, 1000));
        // Root with a user's project: that user.
        assert_eq!(host_ids(ids(0, 0), ids(1001, 1002), false), ids(1001, 1002));
        assert_eq!(
            host_ids(ids(0, 0), ids(1001, 0), false),
            ids(1001, BOTTLE_HOST_ID)
        );
        // Root with root's project: the dedicated id.
        assert_eq!(host_ids(ids(0, 0), ids(0, 0), false), bottle);
        // Only the dangerous opt-out keeps root.
        assert_eq!(host_ids(ids(0, 0), ids(0, 0), true), ids(0, 0));
    }

    #[test]
    fn hand_over_skips_symlinks_targets_hard_links_and_others_files() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            println!("skipping: needs root to chown");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        let ws = tmp.path().join("ws");
        std::fs::create_dir_all(ws.join("sub/deeper")).unwrap();
        std::fs::write(ws.join("sub/deeper/f"), "x").unwrap();
        std::fs::write(ws.join("theirs"), "x").unwrap();
        std::os::unix::fs::lchown(ws.join("theirs"), Some(1234), Some(1234)).unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("link")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), ws.join("dirlink")).unwrap();
        std::fs::hard_link(&outside, ws.join("hard")).unwrap();
        hand_over(&ws, ids(4242, 4343), Which::OwnedByRoot).unwrap();
        let owner = |p: &Path| {
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(
            [
                owner(&ws),
                owner(&ws.join("sub/deeper/f")),
                owner(&ws.join("theirs")),
                owner(&ws.join("link")),
                owner(&outside),
                owner(tmp.path()),
            ],
            [
                (4242, 4343),
                (4242, 4343),
                (1234, 1234),
                (4242, 4343),
                (0, 0),
                (0, 0),
            ]
        );
    }
}
