//! Bounded reads of files the user names (a manifest, a routes file, a rules file, a PEM
//! bundle, a key...): only regular files, and never more than a limit no real file reaches.
//!
//! `std::fs::read` on a path the user typed hangs on a FIFO without a writer, reads a FIFO
//! with a writer or `/dev/zero` until memory runs out, and fails on a directory with an
//! unhelpful "Is a directory". Here the file is opened with `O_NONBLOCK` (so opening a FIFO
//! does not wait for a writer) and `O_NOCTTY`, its type is taken from the opened descriptor
//! (`fstat`, not the path: no swap between check and read), and at most `limit + 1` bytes are
//! read, so an oversized or growing file is refused rather than read whole. The path is also
//! looked at before opening, so a device node is refused without being opened at all.
//!
//! Errors are `std::io::Error`s whose message reads well after the caller's
//! `cannot read <path>: ` (e.g. "it is a named pipe (FIFO), not a regular file"); the
//! [`ReadError`] inside says which refusal it was.

use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most a configuration file may hold: manifests (each file of the directory form),
/// routes files, gitleaks rule files, `gate --repos` files, sidecar configs, Dockerfiles,
/// PEM bundles, deploy keys and logins. The largest real ones (a system CA bundle, a full
/// gitleaks rule set) are well under a tenth of it.
pub const CONFIG_LIMIT: u64 = 4 << 20;

/// The most a findings report read back as input may hold (`scan --baseline`): it grows
/// with the findings of a whole history, so it gets more room than a configuration file.
pub const REPORT_LIMIT: u64 = 64 << 20;

/// Why a file was refused; carried inside the `io::Error` the readers return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The path is not a regular file (a FIFO, a device, a socket, a directory).
    #[error("it is {kind}, not a regular file")]
    NotRegular {
        /// What it is instead, e.g. "a named pipe (FIFO)".
        kind: &'static str,
    },
    /// The file holds more than the limit.
    #[error(
        "it holds more than {}, more than any real file of this kind; check that it is the right file",
        human(*limit)
    )]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is not UTF-8 text (for the `_to_string` reader).
    #[error("it is not UTF-8 text")]
    NotText,
}

impl From<ReadError> for io::Error {
    fn from(err: ReadError) -> io::Error {
        let kind = match &err {
            ReadError::NotRegular { kind } if *kind == DIRECTORY => io::ErrorKind::IsADirectory,
            ReadError::NotRegular { .. } => io::ErrorKind::InvalidInput,
            ReadError::TooLarge { .. } => io::ErrorKind::FileTooLarge,
            ReadError::NotText => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}

const DIRECTORY: &str = "a directory";

/// What a non-regular file is, in words; `None` for a regular file.
pub fn describe(file_type: &FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some(DIRECTORY)
    } else if file_type.is_fifo() {
        Some("a named pipe (FIFO)")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("not a file")
    }
}

/// Fails unless `meta` is a regular file of at most `limit` bytes.
pub fn check_regular(meta: &Metadata, limit: u64) -> io::Result<()> {
    if let Some(kind) = describe(&meta.file_type()) {
        return Err(ReadError::NotRegular { kind }.into());
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit }.into());
    }
    Ok(())
}

/// Reads a regular file of at most `limit` bytes (symbolic links are followed).
pub fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    // Refused before opening: opening a device node can have effects of its own. What the
    // path is may change before the open, so the descriptor is checked again below.
    if let Ok(meta) = std::fs::metadata(path) {
        check_regular(&meta, limit)?;
    }
    open_and_read(path, limit)
}

/// Reads a regular file of at most `limit` bytes that a directory walk (which does not
/// follow symbolic links) found to be one: the path is not looked at before opening, and is
/// opened without following a symbolic link, so what is opened is what the walk saw, or a
/// regular file or device node put in its place since, in the same directory (a device node
/// there needs `CAP_MKNOD`, and is refused by the descriptor's check before anything is
/// read). A symbolic link put in its place fails the open (`ELOOP`).
///
/// Why: a look at the path before opening is one more system call and path walk per file,
/// and a file scan of a source tree opens tens of thousands of them.
pub fn read_walked_file(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    open_and_read_with(path, limit, libc::O_NOFOLLOW)
}

/// [`read_walked_file`] into `buf`, which is cleared first and then holds the file's bytes:
/// for a walk that reads many files one after another, so that one buffer serves them all
/// (no allocation, no fresh pages for the kernel to clear, per file). The file is read with
/// as few `read`s as it takes: a file no larger than the buffer's room and as long as its
/// descriptor said (`fstat`) is read with one, whose coming back short of the room at that
/// length is its end; any other is read until a `read` returns nothing, as
/// [`read_walked_file`] reads it, and refused once it holds more than `limit` bytes.
pub fn read_walked_file_into(path: &Path, limit: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let file = open_with(path, libc::O_NOFOLLOW)?;
    read_checked_into(&file, limit, buf)
}

/// Reads a walked file just opened into `buf` (cleared): judged from its descriptor first
/// (a regular file within `limit`), so that what was put in the walked file's place since
/// is refused before anything is read.
fn read_checked_into(file: &File, limit: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    let meta = file.metadata()?;
    check_regular(&meta, limit)?;
    read_open_into(file, meta.len(), limit, buf)
}

/// A directory a walk found, opened to name its files from (`O_PATH`: nothing of the
/// directory itself is read, only the search permission a path through it would need).
/// The path is resolved as `open` resolves the directories of a file's path, symbolic links
/// among them followed: a file opened from here with [`read_walked_file_at_into`] is the file
/// [`read_walked_file_into`] would open by its whole path.
///
/// Why: opening each file by its whole path looks every directory of the path up again, for
/// every file; a walk finds several files in most directories.
#[derive(Debug)]
pub struct WalkedDir {
    fd: rustix::fd::OwnedFd,
}

impl WalkedDir {
    /// Opens the directory at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = retry_on_intr(|| rustix::fs::open(path, flags, Mode::empty()))?;
        Ok(Self { fd })
    }
}

/// [`read_walked_file_into`] for the file called `name` in `dir` (`path`: the file's whole
/// path, named in errors): opened relative to the directory, without following a symbolic
/// link, judged from its descriptor and read as [`read_walked_file_into`] judges and reads it.
pub fn read_walked_file_at_into(
    dir: &WalkedDir,
    name: &std::ffi::OsStr,
    path: &Path,
    limit: u64,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    buf.clear();
    let flags =
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = match retry_on_intr(|| rustix::fs::openat(&dir.fd, name, flags, Mode::empty())) {
        Ok(fd) => File::from(fd),
        Err(err) => return Err(opening_failed(path, err)),
    };
    read_checked_into(&file, limit, buf)
}

/// A system call retried for as long as a signal interrupts it.
pub fn retry_on_intr<T>(mut call: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Reads an open regular file whose descriptor said `len` bytes into `buf` (cleared first),
/// refusing more than `limit` bytes.
fn read_open_into(file: &File, len: u64, limit: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    // Room for the file and one byte more: a read that fills it says the file grew.
    let want = usize::try_from(len.min(limit).saturating_add(1)).unwrap_or(usize::MAX);
    if buf.capacity() < want {
        // A new allocation rather than a larger one: nothing of the old is worth copying.
        *buf = Vec::with_capacity(want);
    }
    loop {
        if buf.len() as u64 > limit {
            return Err(ReadError::TooLarge { limit }.into());
        }
        if buf.len() == buf.capacity() {
            // Grown since `fstat`: room for as much again (at least a page), whatever the
            // limit, which is checked above as the bytes come in.
            buf.reserve(buf.len().max(PAGE));
        }
        let room = buf.capacity() - buf.len();
        let n = loop {
            match rustix::io::read(file, rustix::buffer::spare_capacity(buf)) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r.map_err(io::Error::from)?,
            }
        };
        if n == 0 || (n < room && buf.len() as u64 == len) {
            // End of file: a read that returned nothing, or one that came back short of the
            // room with the bytes the descriptor said the file holds (a regular file's read
            // stops short only at its end).
            break;
        }
    }
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit }.into());
    }
    Ok(())
}

/// A page: the least a buffer that ran out of room grows by.
const PAGE: usize = 4096;

/// The authoritative part of [`read_limited`]: open without blocking, check the descriptor.
fn open_and_read(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    open_and_read_with(path, limit, 0)
}

/// [`open_and_read`] with more flags to `open`.
fn open_and_read_with(path: &Path, limit: u64, flags: libc::c_int) -> io::Result<Vec<u8>> {
    let file = open_with(path, flags)?;
    let meta = file.metadata()?;
    check_regular(&meta, limit)?;
    read_open(file, meta.len(), limit)
}

/// Opens `path` for reading without blocking (a FIFO does not wait for a writer) or taking a
/// terminal, with more flags to `open`; a socket is named as one.
fn open_with(path: &Path, flags: libc::c_int) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | flags)
        .open(path)
        .map_err(|err| opening_failed(path, err))
}

/// Why `path` could not be opened: a socket cannot be opened at all (ENXIO), so what it is
/// is said rather than that; any other failure as the system said it.
fn opening_failed(path: &Path, err: io::Error) -> io::Error {
    match std::fs::metadata(path)
        .ok()
        .and_then(|m| describe(&m.file_type()))
    {
        Some(kind) => ReadError::NotRegular { kind }.into(),
        None => err,
    }
}

/// As [`read_limited`], for UTF-8 text.
pub fn read_limited_to_string(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_limited(path, limit)?).map_err(|_| ReadError::NotText.into())
}

fn read_open(file: File, len: u64, limit: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(usize::try_from(len.min(limit)).unwrap_or(0));
    // One byte past the limit tells a file that grew since `fstat` from one that fits.
    file.take(limit.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit }.into());
    }
    Ok(data)
}

/// `4 MiB`, `512 KiB`, `100 bytes`.
fn human(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::io::Write;

    fn refusal(err: &io::Error) -> Option<ReadError> {
        err.get_ref()
            .and_then(|e| e.downcast_ref::<ReadError>())
            .cloned()
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_regular_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, "bottles: {}\n").unwrap();
        assert_eq!(read_limited(&path, 100).unwrap(), b"bottles: {}\n");
        assert_eq!(read_limited_to_string(&path, 100).unwrap(), "bottles: {}\n");
        // Exactly at the limit is fine.
        assert_eq!(read_limited(&path, 12).unwrap().len(), 12);
    }

    #[test]
    fn a_symlink_to_a_regular_file_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), "x").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        assert_eq!(read_limited(&dir.path().join("link"), 10).unwrap(), b"x");
    }

    #[test]
    fn a_fifo_without_a_writer_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let fifo_kind = Some(ReadError::NotRegular {
            kind: "a named pipe (FIFO)",
        });
        let err = read_limited(&fifo, CONFIG_LIMIT).unwrap_err();
        assert_eq!(refusal(&err), fifo_kind);
        assert_eq!(
            err.to_string(),
            "it is a named pipe (FIFO), not a regular file"
        );
        // The descriptor check alone (a path swapped after the first look): the open does
        // not wait for a writer.
        assert_eq!(
            refusal(&open_and_read(&fifo, CONFIG_LIMIT).unwrap_err()),
            fifo_kind
        );
    }

    #[test]
    fn a_fifo_with_a_writer_is_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        // Our own read end, so that the writer's open returns and it writes.
        let hold = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        // A writer that never stops (until the pipe breaks when every reader is gone).
        let (opened, is_open) = std::sync::mpsc::channel();
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                opened.send(()).unwrap();
                let chunk = vec![b'a'; 65536];
                while w.write_all(&chunk).is_ok() {}
            })
        };
        is_open.recv().unwrap();
        let fifo_kind = Some(ReadError::NotRegular {
            kind: "a named pipe (FIFO)",
        });
        assert_eq!(
            refusal(&read_limited(&fifo, CONFIG_LIMIT).unwrap_err()),
            fifo_kind
        );
        assert_eq!(
            refusal(&open_and_read(&fifo, CONFIG_LIMIT).unwrap_err()),
            fifo_kind
        );
        drop(hold);
        writer.join().unwrap();
    }

    #[test]
    fn devices_sockets_and_directories_are_refused_naming_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        for (path, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (Path::new("/dev/null"), "a character device"),
            (sock.as_path(), "a socket"),
            (dir.path(), "a directory"),
        ] {
            for err in [
                read_limited(path, CONFIG_LIMIT).unwrap_err(),
                open_and_read(path, CONFIG_LIMIT).unwrap_err(),
            ] {
                assert_eq!(
                    refusal(&err),
                    Some(ReadError::NotRegular { kind }),
                    "{}",
                    path.display()
                );
            }
        }
        assert_eq!(
            read_limited(dir.path(), 1).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'x'; 4097]).unwrap();
        let err = read_limited(&path, 4096).unwrap_err();
        assert_eq!(refusal(&err), Some(ReadError::TooLarge { limit: 4096 }));
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            err.to_string(),
            "it holds more than 4 KiB, more than any real file of this kind; check that it is the right file"
        );
    }

    #[test]
    fn a_file_that_grows_past_the_limit_after_fstat_is_refused() {
        // `fstat` said small; the read still stops at limit + 1.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grows");
        std::fs::write(&path, vec![b'x'; 10]).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        let err = read_open(file, 10, 50).unwrap_err();
        assert_eq!(refusal(&err), Some(ReadError::TooLarge { limit: 50 }));
    }

    #[test]
    fn a_walked_file_is_read_and_what_took_its_place_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.rs");
        std::fs::write(&path, "fn main() {}\n").unwrap();
        assert_eq!(read_walked_file(&path, 100).unwrap(), b"fn main() {}\n");
        // over the limit: refused as `read_limited` refuses it
        let err = read_walked_file(&path, 4).unwrap_err();
        assert_eq!(refusal(&err), Some(ReadError::TooLarge { limit: 4 }));
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        // a symbolic link put in the walked file's place is not followed
        std::fs::write(dir.path().join("secret"), "x").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("secret", &path).unwrap();
        let err = read_walked_file(&path, 100).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        // a FIFO in its place: refused from the descriptor, without waiting for a writer
        std::fs::remove_file(&path).unwrap();
        mkfifo(&path);
        let err = read_walked_file(&path, 100).unwrap_err();
        assert_eq!(
            refusal(&err),
            Some(ReadError::NotRegular {
                kind: "a named pipe (FIFO)"
            })
        );
    }

    #[test]
    fn a_walked_file_read_into_a_buffer_is_what_read_walked_file_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        // Sizes around the buffer's room and a page; the buffer is reused from file to file,
        // holding a longer file before a shorter one and a shorter before a longer.
        for size in [0, 1, 4095, 4096, 4097, 100_000, 3, 70_000, 0] {
            let path = dir.path().join(format!("f{size}"));
            let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            std::fs::write(&path, &bytes).unwrap();
            read_walked_file_into(&path, 1 << 20, &mut buf).unwrap();
            assert_eq!(buf, bytes, "{size} bytes");
            assert_eq!(read_walked_file(&path, 1 << 20).unwrap(), bytes);
        }
        // at the limit, and one byte over it
        let path = dir.path().join("f100000");
        read_walked_file_into(&path, 100_000, &mut buf).unwrap();
        assert_eq!(buf.len(), 100_000);
        let err = read_walked_file_into(&path, 99_999, &mut buf).unwrap_err();
        assert_eq!(refusal(&err), Some(ReadError::TooLarge { limit: 99_999 }));
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn a_file_that_changes_after_fstat_is_read_to_its_end_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("changes");
        let mut buf = Vec::new();
        // `fstat` said 10 bytes, the file holds 100 by the read: all 100 are read (with the
        // buffer grown), within the limit ...
        let grown: Vec<u8> = (0..100u8).collect();
        std::fs::write(&path, &grown).unwrap();
        read_open_into(&File::open(&path).unwrap(), 10, 1000, &mut buf).unwrap();
        assert_eq!(buf, grown);
        // ... also into a buffer with room for only the 11 bytes `fstat` asked for
        let mut small = Vec::new();
        read_open_into(&File::open(&path).unwrap(), 10, 1000, &mut small).unwrap();
        assert_eq!(small, grown);
        // ... and refused past it, whatever the buffer's room
        let err = read_open_into(&File::open(&path).unwrap(), 10, 50, &mut Vec::new());
        assert_eq!(
            refusal(&err.unwrap_err()),
            Some(ReadError::TooLarge { limit: 50 })
        );
        let mut roomy = Vec::with_capacity(1 << 16);
        let err = read_open_into(&File::open(&path).unwrap(), 10, 50, &mut roomy);
        assert_eq!(
            refusal(&err.unwrap_err()),
            Some(ReadError::TooLarge { limit: 50 })
        );
        // `fstat` said 100, the file holds 10 by the read: the 10 are read
        std::fs::write(&path, &grown[..10]).unwrap();
        read_open_into(&File::open(&path).unwrap(), 100, 1000, &mut buf).unwrap();
        assert_eq!(buf, &grown[..10]);
    }

    #[test]
    fn what_took_a_walked_files_place_is_refused_when_read_into_a_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.rs");
        let mut buf = b"left from before".to_vec();
        std::fs::write(dir.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink("secret", &path).unwrap();
        let err = read_walked_file_into(&path, 100, &mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        assert_eq!(buf, b"");
        std::fs::remove_file(&path).unwrap();
        mkfifo(&path);
        let err = read_walked_file_into(&path, 100, &mut buf).unwrap_err();
        assert_eq!(
            refusal(&err),
            Some(ReadError::NotRegular {
                kind: "a named pipe (FIFO)"
            })
        );
        for (path, kind) in [
            (Path::new("/dev/null"), "a character device"),
            (dir.path(), "a directory"),
        ] {
            let err = read_walked_file_into(path, 100, &mut buf).unwrap_err();
            assert_eq!(refusal(&err), Some(ReadError::NotRegular { kind }));
        }
    }

    #[test]
    fn a_file_read_from_its_open_directory_is_what_read_walked_file_into_reads() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let open = WalkedDir::open(&sub).unwrap();
        let (mut at, mut whole) = (Vec::new(), Vec::new());
        for size in [0, 1, 4097, 100_000, 3] {
            let name = format!("f{size}");
            let path = sub.join(&name);
            let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            std::fs::write(&path, &bytes).unwrap();
            read_walked_file_at_into(&open, name.as_ref(), &path, 1 << 20, &mut at).unwrap();
            read_walked_file_into(&path, 1 << 20, &mut whole).unwrap();
            assert_eq!(at, bytes, "{size} bytes");
            assert_eq!(whole, bytes);
        }
        // over the limit: refused as by its path
        let path = sub.join("f100000");
        let err = read_walked_file_at_into(&open, "f100000".as_ref(), &path, 99_999, &mut at);
        assert_eq!(
            refusal(&err.unwrap_err()),
            Some(ReadError::TooLarge { limit: 99_999 })
        );
        // a directory reached through a symbolic link is opened as a path through it is
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("sub", &link).unwrap();
        let via_link = WalkedDir::open(&link).unwrap();
        read_walked_file_at_into(&via_link, "f3".as_ref(), &link.join("f3"), 100, &mut at).unwrap();
        assert_eq!(at, [0, 1, 2]);
        // a file is not a directory
        let err = WalkedDir::open(&sub.join("f3")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    }

    #[test]
    fn what_took_a_walked_files_place_is_refused_when_read_from_its_open_directory() {
        let dir = tempfile::tempdir().unwrap();
        let open = WalkedDir::open(dir.path()).unwrap();
        let path = dir.path().join("a.rs");
        let mut buf = b"left from before".to_vec();
        // a symbolic link: not followed
        std::fs::write(dir.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink("secret", &path).unwrap();
        let err = read_walked_file_at_into(&open, "a.rs".as_ref(), &path, 100, &mut buf);
        assert_eq!(err.unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(buf, b"");
        // a FIFO: refused from the descriptor, without waiting for a writer
        std::fs::remove_file(&path).unwrap();
        mkfifo(&path);
        let err = read_walked_file_at_into(&open, "a.rs".as_ref(), &path, 100, &mut buf);
        assert_eq!(
            refusal(&err.unwrap_err()),
            Some(ReadError::NotRegular {
                kind: "a named pipe (FIFO)"
            })
        );
        // a socket cannot be opened: said to be one, as by its path
        std::fs::remove_file(&path).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = read_walked_file_at_into(&open, "a.rs".as_ref(), &path, 100, &mut buf);
        assert_eq!(
            refusal(&err.unwrap_err()),
            Some(ReadError::NotRegular { kind: "a socket" })
        );
        // a directory, and a file gone: as by its path
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let err =
            read_walked_file_at_into(&open, "d".as_ref(), &dir.path().join("d"), 100, &mut buf);
        assert_eq!(
            refusal(&err.unwrap_err()),
            Some(ReadError::NotRegular {
                kind: "a directory"
            })
        );
        let err = read_walked_file_at_into(
            &open,
            "gone".as_ref(),
            &dir.path().join("gone"),
            100,
            &mut buf,
        );
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn missing_files_keep_the_os_error() {
        let err = read_limited(Path::new("/nonexistent/x"), 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(refusal(&err), None);
    }

    #[test]
    fn text_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        let err = read_limited_to_string(&path, 10).unwrap_err();
        assert_eq!(refusal(&err), Some(ReadError::NotText));
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn sizes_are_said_in_the_largest_whole_unit() {
        assert_eq!(human(CONFIG_LIMIT), "4 MiB");
        assert_eq!(human(REPORT_LIMIT), "64 MiB");
        assert_eq!(human(4096), "4 KiB");
        assert_eq!(human(100), "100 bytes");
    }
}
