//! Atomic file writes: a reader sees the old content or the new, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `data` to `path` atomically with mode 0600.
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    atomic_write_mode(path, data, 0o600)
}

/// Writes `data` to `path` atomically: a temp file in the same directory, fsync, rename,
/// then fsync of the directory so the rename itself survives a crash. `mode` is subject to
/// the umask (`0o666` gives a file the mode any new file would get).
pub fn atomic_write_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_then(path, data, mode, |tmp| fs::rename(tmp, path))
}

/// Like [`atomic_write_mode`], but fails with `AlreadyExists` instead of replacing a file:
/// the complete temp file is hard-linked into place, which the kernel refuses when the name
/// exists. Two writers racing for the same name: exactly one wins.
pub fn atomic_write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_then(path, data, mode, |tmp| {
        let linked = fs::hard_link(tmp, path);
        let _ = fs::remove_file(tmp);
        linked
    })
}

/// Moves `from` to `to` on the same file system, creating `to`'s directory, and makes the
/// move durable (fsync of `to`'s directory).
pub fn move_durably(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::rename(from, to)?;
    sync_dir(parent_or_cwd(to))
}

/// Makes the entries of `dir` durable (after renames into or out of it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_or_cwd(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The complete, synced temp file beside `path`, put in place by `place`; the temp file is
/// gone afterwards whatever happened.
fn write_then(
    path: &Path,
    data: &[u8],
    mode: u32,
    place: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent_or_cwd(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        place(&tmp)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["metadata.json".to_string()]);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn write_new_refuses_to_replace_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        atomic_write_new(&p, b"one", 0o666).unwrap();
        let err = atomic_write_new(&p, b"two", 0o666).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        atomic_write_mode(&p, b"three", 0o666).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["a.json".to_owned()]);
    }

    #[test]
    fn move_durably_creates_the_target_directory() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a.json");
        let to = dir.path().join("processed/a.json");
        atomic_write(&from, b"one").unwrap();
        move_durably(&from, &to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), b"one");
        assert!(!from.exists());
    }

    #[test]
    fn missing_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = atomic_write(&dir.path().join("nope/file"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
