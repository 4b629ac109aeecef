//! Loose objects read with one `openat` and `read` each, inflated by a decoder kept per thread.
//!
//! Why: `gix-odb` reads a loose object by its whole path, `stat`s it twice, maps it, inflates
//! it with a new decoder and unmaps it. In a repository whose objects are loose (one built by
//! `git commit` and never packed; a push of fewer than `receive.unpackLimit` objects, which
//! `git receive-pack` unpacks into loose objects) that was a third of a history scan's CPU, most
//! of it in the kernel: path walks, and an `munmap` per object that interrupts the scan's
//! other threads to flush their address translations. Here the object directory is opened
//! once and each object is opened relative to it and read into a buffer the thread keeps.
//!
//! Only directories without packs are read this way (see [`LooseDir::open`]): in one with
//! packs most objects are packed, and trying the loose path first would cost a failed `openat`
//! for each of them. Whatever cannot be read here (no such file, a file that is not a loose
//! object, a stream that does not inflate) is left to `gix-odb`, so that its answer and its
//! errors stay what they were.

use std::cell::RefCell;
use std::ffi::CStr;
use std::path::Path;

use gix_hash::oid;

/// A compressed object larger than this is read into a buffer of its own, not kept for the
/// thread's next object.
const KEPT_BUFFER_BYTES: usize = 4 << 20;

/// Room for a loose object's header (`<kind> <size>\0`), as `gix-odb` reads it.
const HEADER_MAX_SIZE: usize = 64;

/// How much of a loose object's file is read for its header: far more than the deflate
/// stream of 64 bytes takes (whatever cannot be told from it is left to `gix-odb`).
const HEADER_READ_BYTES: usize = 4096;

/// An object directory without packs, opened to read its loose objects from.
#[derive(Debug)]
pub(crate) struct LooseDir {
    fd: rustix::fd::OwnedFd,
}

impl LooseDir {
    /// `dir` opened for [`LooseDir::read`], or `None` where the loose path would not pay or
    /// cannot be taken: a directory with a `pack` directory that lists a pack index, or one
    /// that cannot be opened (`gix-odb` reads it and says why).
    pub(crate) fn open(dir: &Path) -> Option<Self> {
        use rustix::fs::{Mode, OFlags};
        if !super::odb::pack_indexes(dir).is_empty() {
            return None;
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = retry_on_intr(|| rustix::fs::open(dir, flags, Mode::empty()))?;
        Some(Self { fd })
    }

    /// Reads the loose object `id` into `out` (cleared first): its kind, or `None` when it
    /// is not here as a readable loose object (then `out` holds nothing of worth).
    pub(crate) fn read(&self, id: &oid, out: &mut Vec<u8>) -> Option<gix_object::Kind> {
        self.decode(id, usize::MAX, |inflate, compressed| {
            inflate_object(inflate, compressed, out)
        })
    }

    /// The loose object `id`'s kind and size, reading only the file's first
    /// [`HEADER_READ_BYTES`] and inflating only its header (a blob too large to be read is
    /// told so without being read).
    pub(crate) fn header(&self, id: &oid) -> Option<gix_object::Header> {
        self.decode(id, HEADER_READ_BYTES, |inflate, compressed| {
            let head = inflate_head(inflate, compressed)?;
            Some(gix_object::Header {
                kind: head.kind,
                size: head.size,
            })
        })
    }

    /// Reads the file of `id` into the thread's buffer, whole or its first `limit` bytes,
    /// and hands it, with the thread's decoder reset, to `decode`.
    fn decode<T>(
        &self,
        id: &oid,
        limit: usize,
        decode: impl FnOnce(&mut gix_zlib::Inflate, &[u8]) -> Option<T>,
    ) -> Option<T> {
        // Room for the longest id's hex digits (SHA-256), a slash and the closing NUL.
        let mut name = [0u8; 2 * 32 + 2];
        let hex_len = {
            let hex = id.hex_to_buf(&mut name[1..]);
            hex.len()
        };
        // "ab/cdef…\0": the first two hex digits name the fan-out directory.
        name[0] = name[1];
        name[1] = name[2];
        name[2] = b'/';
        let path = CStr::from_bytes_with_nul(&name[..hex_len + 2]).ok()?;
        THREAD.with(|state| {
            let mut state = state.borrow_mut();
            let Reader {
                inflate,
                compressed,
            } = &mut *state;
            // A bounded read goes to a buffer of its own of that size, so that it reads no
            // more than that whatever room the thread's buffer has.
            let mut head = Vec::new();
            let buf = if limit == usize::MAX {
                &mut *compressed
            } else {
                head.reserve_exact(limit);
                &mut head
            };
            let decoded = read_file(&self.fd, path, limit, buf).and_then(|()| {
                inflate.reset();
                decode(inflate, buf)
            });
            if compressed.capacity() > KEPT_BUFFER_BYTES {
                *compressed = Vec::new();
            }
            decoded
        })
    }
}

/// What a thread keeps between the loose objects it reads.
#[derive(Default)]
struct Reader {
    inflate: gix_zlib::Inflate,
    compressed: Vec<u8>,
}

thread_local! {
    static THREAD: RefCell<Reader> = RefCell::default();
}

/// The start of a loose object, inflated: its header and what came with it.
struct Head {
    /// The first bytes inflated (`written` of them): the header, then the body's first.
    bytes: [u8; HEADER_MAX_SIZE],
    status: gix_zlib::Status,
    /// Bytes of `compressed` the decoder took for them.
    consumed: usize,
    written: usize,
    kind: gix_object::Kind,
    /// The body's size, as the header says.
    size: u64,
    /// The header's length (`<kind> <size>\0`).
    header_size: usize,
}

/// Inflates the first [`HEADER_MAX_SIZE`] bytes of a loose object and reads its header, as
/// `gix-odb` reads it; `None` if they do not inflate or are not a header.
fn inflate_head(inflate: &mut gix_zlib::Inflate, compressed: &[u8]) -> Option<Head> {
    let mut bytes = [0u8; HEADER_MAX_SIZE];
    let (status, consumed, written) = inflate.prefix(compressed, &mut bytes).ok()?;
    if status == gix_zlib::Status::BufError {
        return None;
    }
    let (kind, size, header_size) = gix_object::decode::loose_header(&bytes[..written]).ok()?;
    Some(Head {
        bytes,
        status,
        consumed,
        written,
        kind,
        size,
        header_size,
    })
}

/// Inflates a whole loose object from `compressed` into `out`, checked as `gix-odb` checks
/// it (the header's size is the body's); its kind.
fn inflate_object(
    inflate: &mut gix_zlib::Inflate,
    compressed: &[u8],
    out: &mut Vec<u8>,
) -> Option<gix_object::Kind> {
    let head = inflate_head(inflate, compressed)?;
    let (prefix, skip) = (&head.bytes[..head.written], head.header_size);
    let size = usize::try_from(head.size).ok()?;
    let ended = head.status == gix_zlib::Status::StreamEnd;
    let body_prefix = prefix.len().checked_sub(skip)?;
    if body_prefix > size || (ended && body_prefix != size) {
        return None;
    }
    out.clear();
    out.try_reserve(size).ok()?;
    if ended {
        out.extend_from_slice(&prefix[skip..]);
    } else {
        let n = inflate
            .rest(&compressed[head.consumed..], prefix, skip, out, size)
            .ok()?;
        if n != size {
            return None;
        }
    }
    Some(head.kind)
}

/// Reads the file `path` of `dir` into `buf` (cleared first), whole or until it holds at
/// least `limit` bytes; `None` if it cannot be opened or read.
fn read_file(
    dir: &rustix::fd::OwnedFd,
    path: &CStr,
    limit: usize,
    buf: &mut Vec<u8>,
) -> Option<()> {
    use rustix::fs::{Mode, OFlags};
    // Non-blocking: a FIFO in an object's place answers at once (and is left to gix-odb).
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = retry_on_intr(|| rustix::fs::openat(dir, path, flags, Mode::empty()))?;
    buf.clear();
    loop {
        if buf.len() >= limit {
            return Some(());
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(buf.len().max(64 << 10));
        }
        let n = retry_on_intr(|| rustix::io::read(&fd, rustix::buffer::spare_capacity(buf)))?;
        if n == 0 {
            return Some(());
        }
    }
}

/// A system call retried for as long as a signal interrupts it; `None` on any other error.
fn retry_on_intr<T>(call: impl FnMut() -> rustix::io::Result<T>) -> Option<T> {
    state::read::retry_on_intr(call).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn loose_objects_read_here_are_what_gix_odb_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        git(repo, &["init", "-q"]);
        // An empty blob, one that inflates in one step, larger ones, a tree and a commit.
        std::fs::write(repo.join("empty"), "").unwrap();
        std::fs::write(repo.join("small"), "aws_key = AKIA0123\n").unwrap();
        let large: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(repo.join("large"), &large).unwrap();
        // Bytes that do not compress: its file is far larger than the part read for a header.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(repo.join("noise"), &noise).unwrap();
        git(repo, &["add", "-A"]);
        git(
            repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "commit",
                "-qm",
                "one",
            ],
        );
        let objects = repo.join(".git/objects");
        let loose = LooseDir::open(&objects).expect("no packs yet");
        let store = gix_odb::at(&objects, gix_hash::Kind::Sha1).unwrap();
        let ids = git(
            repo,
            &["rev-list", "--objects", "--no-object-names", "HEAD"],
        );
        let mut n = 0;
        for id in ids.lines() {
            let id = gix_hash::ObjectId::from_hex(id.as_bytes()).unwrap();
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            let kind = loose.read(&id, &mut ours).unwrap();
            let data = gix_object::Find::try_find(&store, &id, &mut theirs)
                .unwrap()
                .unwrap();
            assert_eq!((kind, ours.as_slice()), (data.kind, data.data), "{id}");
            let header = loose.header(&id).unwrap();
            assert_eq!((header.kind, header.size), (kind, ours.len() as u64));
            n += 1;
        }
        assert_eq!(n, 6);
        // Not here, or not a loose object: left to gix-odb.
        let missing =
            gix_hash::ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        assert_eq!(loose.read(&missing, &mut Vec::new()), None);
        let bad =
            gix_hash::ObjectId::from_hex(b"00aa56789abcdef0123456789abcdef012345678").unwrap();
        std::fs::create_dir_all(objects.join("00")).unwrap();
        std::fs::write(
            objects.join("00/aa56789abcdef0123456789abcdef012345678"),
            "not zlib",
        )
        .unwrap();
        assert_eq!(loose.read(&bad, &mut Vec::new()), None);
        assert!(loose.header(&bad).is_none());
        // A directory with a pack is not read this way.
        std::fs::remove_file(objects.join("00/aa56789abcdef0123456789abcdef012345678")).unwrap();
        git(repo, &["gc", "-q"]);
        assert!(LooseDir::open(&objects).is_none());
    }
}
