//! The bundle's config taken once from a loopback listener: the waiting mode of a warm pod's
//! sidecar (issue 21, kubernetes warm pools), run there by `bot-bottle intake`; the plan it
//! brings is published by [`crate::plan`].
//!
//! A pod of a warm pool is made before any bottle claims it, so its sidecar cannot hold a
//! bottle's config, CA key or tokens. It waits instead on a loopback port that is not a
//! sidecar port (the pod's packet filter refuses it to the agent's uid); once the claim
//! binds, the launcher sends the files through the API server's port-forward. [`receive`]
//! takes exactly one connection — the listener is closed as soon as it is accepted, so a
//! second sender is refused, and a config planted before the claim makes the launcher's
//! own send fail instead of running the planted one — reads the whole config, checks it,
//! and only then writes the files (read-only, into a directory that must be empty). A
//! malformed config writes nothing: the bundle never serves without its config.
//!
//! The stream: [`MAGIC`], then per file a big-endian `u16` name length, the name, a `u32`
//! content length and the content; a name length of 0 ends it. The bundle answers `ok\n`,
//! or `refused: <why>\n` before it closes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first bytes of a config stream.
pub const MAGIC: &[u8] = b"bot-bottle config 1\n";

/// What one config may hold in all (the bottle's Secret holds no more: 1 MiB).
pub const MAX_BYTES: usize = 1024 * 1024;

/// How many files one config may hold.
pub const MAX_FILES: usize = 64;

/// How long the sender may take to send the whole config once connected.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a config was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The directory the files go to cannot be used (missing, not empty, unreadable).
    #[error("the config directory {}: {message}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The connection failed (accept, read, write, timeout).
    #[error("cannot {action} the config connection: {source}")]
    Io {
        /// What failed.
        action: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The stream is not a valid config.
    #[error("the config sent is refused: {0}")]
    Malformed(String),
    /// The sender: the bundle refused the config, or took one already.
    #[error("the sidecar bundle did not take the config: {0}")]
    NotTaken(String),
}

/// A file name the config may hold: letters, digits, `.`, `_`, `-`, not starting with `.`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The config stream of `files`.
pub fn encode(files: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, IntakeError> {
    if files.len() > MAX_FILES {
        return Err(IntakeError::Malformed(format!(
            "{} files, more than {MAX_FILES}",
            files.len()
        )));
    }
    let total: usize = files.values().map(Vec::len).sum();
    if total > MAX_BYTES {
        return Err(IntakeError::Malformed(format!(
            "{total} bytes, more than {MAX_BYTES}"
        )));
    }
    let mut out = MAGIC.to_vec();
    for (name, content) in files {
        if !valid_name(name) {
            return Err(IntakeError::Malformed(format!(
                "file name {name:?} (letters, digits, `.`, `_`, `-`, not starting with `.`)"
            )));
        }
        let name_len = u16::try_from(name.len()).map_err(|_| bad("a name too long"))?;
        let len = u32::try_from(content.len()).map_err(|_| bad("a file too large"))?;
        out.extend_from_slice(&name_len.to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(content);
    }
    out.extend_from_slice(&0u16.to_be_bytes());
    Ok(out)
}

fn bad(what: &str) -> IntakeError {
    IntakeError::Malformed(what.to_owned())
}

/// Reads and checks a whole config stream (nothing is written).
fn decode(stream: &mut impl Read) -> Result<BTreeMap<String, Vec<u8>>, IntakeError> {
    let io = |source| IntakeError::Io {
        action: "read",
        source,
    };
    let mut magic = [0u8; MAGIC.len()];
    stream.read_exact(&mut magic).map_err(io)?;
    if magic != MAGIC {
        return Err(bad("it does not start as a bot-bottle config"));
    }
    let mut files = BTreeMap::new();
    let mut total = 0usize;
    loop {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).map_err(io)?;
        let name_len = usize::from(u16::from_be_bytes(len));
        if name_len == 0 {
            return Ok(files);
        }
        if files.len() == MAX_FILES {
            return Err(IntakeError::Malformed(format!(
                "more than {MAX_FILES} files"
            )));
        }
        if name_len > 255 {
            return Err(bad("a file name longer than 255 bytes"));
        }
        let mut name = vec![0u8; name_len];
        stream.read_exact(&mut name).map_err(io)?;
        let name = String::from_utf8(name).map_err(|_| bad("a file name that is not UTF-8"))?;
        if !valid_name(&name) {
            return Err(IntakeError::Malformed(format!(
                "file name {name:?} (letters, digits, `.`, `_`, `-`, not starting with `.`)"
            )));
        }
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).map_err(io)?;
        let len = usize::try_from(u32::from_be_bytes(len)).map_err(|_| bad("a file too large"))?;
        total = total.saturating_add(len);
        if total > MAX_BYTES {
            return Err(IntakeError::Malformed(format!(
                "more than {MAX_BYTES} bytes"
            )));
        }
        let mut content = vec![0u8; len];
        stream.read_exact(&mut content).map_err(io)?;
        if files.insert(name.clone(), content).is_some() {
            return Err(IntakeError::Malformed(format!("file {name:?} twice")));
        }
    }
}

/// Takes one config from `listener` into `dir` (which must exist and be empty), closing
/// the listener at the first connection; returns the files written.
pub fn receive(listener: TcpListener, dir: &Path) -> Result<Vec<PathBuf>, IntakeError> {
    let dir_error = |message: String| IntakeError::Dir {
        dir: dir.to_path_buf(),
        message,
    };
    let mut entries = std::fs::read_dir(dir).map_err(|e| dir_error(e.to_string()))?;
    if entries.next().is_some() {
        return Err(dir_error(
            "is not empty; a config is taken into an empty directory only".into(),
        ));
    }
    let (mut stream, _) = listener.accept().map_err(|source| IntakeError::Io {
        action: "accept",
        source,
    })?;
    // One config: nobody else connects from here on.
    drop(listener);
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|source| IntakeError::Io {
            action: "set a timeout on",
            source,
        })?;
    let files = match decode(&mut stream) {
        Ok(files) => files,
        Err(e) => {
            refuse(&mut stream, &format!("refused: {e}\n"));
            return Err(e);
        }
    };
    let mut written = Vec::new();
    for (name, content) in &files {
        let path = dir.join(name);
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                // `create_new`: never through a name that is there (a symlink included).
                .mode(0o400)
                .open(&path)?;
            file.write_all(content)?;
            file.sync_all()
        };
        if let Err(e) = write() {
            refuse(&mut stream, "refused: the bundle cannot write its config\n");
            return Err(dir_error(format!("cannot write {name}: {e}")));
        }
        written.push(path);
    }
    stream
        .write_all(b"ok\n")
        .map_err(|source| IntakeError::Io {
            action: "answer on",
            source,
        })?;
    Ok(written)
}

/// Answers a refusal, then reads what the sender still sends (a bounded amount, briefly)
/// so that closing does not reset the connection before the answer is read.
fn refuse(stream: &mut std::net::TcpStream, answer: &str) {
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = std::io::copy(&mut stream.take(64 * 1024), &mut std::io::sink());
}

/// The launcher's side: sends `files` on `stream` and waits for the bundle's answer.
pub fn send(
    stream: &mut (impl Read + Write),
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<(), IntakeError> {
    let bytes = encode(files)?;
    stream.write_all(&bytes).map_err(|source| IntakeError::Io {
        action: "write to",
        source,
    })?;
    let mut answer = Vec::new();
    Read::by_ref(stream)
        .take(4096)
        .read_to_end(&mut answer)
        .map_err(|source| IntakeError::Io {
            action: "read the answer on",
            source,
        })?;
    let answer = String::from_utf8_lossy(&answer);
    match answer.trim_end() {
        "ok" => Ok(()),
        "" => Err(IntakeError::NotTaken(
            "it closed the connection without an answer (it took a config already, or stopped)"
                .into(),
        )),
        other => Err(IntakeError::NotTaken(other.to_owned())),
    }
}

/// [`send`] on an async stream (the launcher's port-forward to a warm pod): sends `files`,
/// closes its write side, and waits for the bundle's answer.
pub async fn send_async(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<(), IntakeError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bytes = encode(files)?;
    stream
        .write_all(&bytes)
        .await
        .map_err(|source| IntakeError::Io {
            action: "write to",
            source,
        })?;
    stream.flush().await.map_err(|source| IntakeError::Io {
        action: "write to",
        source,
    })?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 512];
        // Until the answer's line or the end, at most 4 KiB.
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.contains(&b'\n') || answer.len() >= 4096 {
                return Ok(());
            }
        }
    })
    .await;
    match read {
        Ok(Ok(())) => {}
        Ok(Err(source)) => {
            return Err(IntakeError::Io {
                action: "read the answer on",
                source,
            });
        }
        Err(_) => {
            return Err(IntakeError::NotTaken(format!(
                "it gave no answer within {} s",
                READ_TIMEOUT.as_secs()
            )));
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    match answer.trim_end() {
        "ok" => Ok(()),
        "" => Err(IntakeError::NotTaken(
            "it closed the connection without an answer (it took a config already, or stopped)"
                .into(),
        )),
        other => Err(IntakeError::NotTaken(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpStream};
    use std::os::unix::fs::PermissionsExt;

    fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// The async sender (a warm pod's port-forward) against the real receiver: taken; a
    /// second sender, after the first took the port, is refused with the reason.
    #[test]
    fn the_async_sender_is_taken_once_and_a_later_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, addr) = listener();
        let path = dir.path().to_path_buf();
        let bundle = std::thread::spawn(move || receive(first, &path));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            send_async(&mut stream, &config()).await.unwrap();
        });
        bundle.join().unwrap().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("token-github")).unwrap(),
            b"ghp_not_a_real_token"
        );
        // A listener that took another's config first: it answers nothing to this one.
        let (other, addr) = listener();
        let taken = std::thread::spawn(move || {
            let (mut first, _) = other.accept().unwrap();
            let (second, _) = other.accept().unwrap();
            drop(second);
            let _ = first.write_all(b"ok\n");
        });
        let planter = TcpStream::connect(addr).unwrap();
        let e = rt
            .block_on(async {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                send_async(&mut stream, &config()).await
            })
            .unwrap_err();
        taken.join().unwrap();
        drop(planter);
        assert!(
            e.to_string().contains("took a config already")
                || e.to_string().contains("the config connection"),
            "{e}"
        );
    }

    fn config() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("sidecar.json".to_owned(), b"{\"egress\":{}}".to_vec()),
            ("token-github".to_owned(), b"ghp_not_a_real_token".to_vec()),
            ("ca-key.pem".to_owned(), vec![0u8, 1, 2, 255]),
        ])
    }

    /// The config sent is written, each file read-only, and the bundle answers `ok`; then
    /// the port is closed: a second sender is refused at connect.
    #[test]
    fn one_config_is_taken_then_the_port_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, addr) = listener();
        let path = dir.path().to_path_buf();
        let bundle = std::thread::spawn(move || receive(listener, &path));
        let mut stream = TcpStream::connect(addr).unwrap();
        send(&mut stream, &config()).unwrap();
        let written = bundle.join().unwrap().unwrap();
        assert_eq!(written.len(), 3);
        for (name, content) in config() {
            let path = dir.path().join(&name);
            assert_eq!(std::fs::read(&path).unwrap(), content, "{name}");
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o400, "{name}");
        }
        let second = TcpStream::connect(addr);
        assert_eq!(
            second.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused),
            "a second config could be sent"
        );
    }

    /// A config planted first (someone allowed to port-forward to the warm pod, before the
    /// claim) is the one taken; the launcher's own send then fails — the launch fails
    /// instead of running a bundle with the planted config.
    #[test]
    fn a_config_planted_first_makes_the_launchers_send_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, addr) = listener();
        let path = dir.path().to_path_buf();
        let bundle = std::thread::spawn(move || receive(listener, &path));
        let mut planted = TcpStream::connect(addr).unwrap();
        // The bundle accepted it and closed the port before the launcher comes.
        let planted_files = BTreeMap::from([("sidecar.json".to_owned(), b"{}".to_vec())]);
        send(&mut planted, &planted_files).unwrap();
        bundle.join().unwrap().unwrap();
        let err = match TcpStream::connect(addr) {
            Err(e) => IntakeError::Io {
                action: "connect",
                source: e,
            },
            Ok(mut s) => send(&mut s, &config()).unwrap_err(),
        };
        assert!(
            err.to_string().contains("Connection refused")
                || matches!(err, IntakeError::NotTaken(_)),
            "{err}"
        );
    }

    /// A stream that is not a valid config is answered `refused: <why>` and nothing is
    /// written: a name that leaves the directory, one starting with `.`, a file twice, too
    /// many bytes, a wrong start, a stream cut short.
    #[test]
    fn a_malformed_config_is_refused_and_nothing_is_written() {
        let valid = encode(&config()).unwrap();
        let with_name = |name: &[u8]| {
            let mut s = MAGIC.to_vec();
            s.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
            s.extend_from_slice(name);
            s.extend_from_slice(&1u32.to_be_bytes());
            s.push(b'x');
            s.extend_from_slice(&0u16.to_be_bytes());
            s
        };
        let mut twice = MAGIC.to_vec();
        for _ in 0..2 {
            twice.extend_from_slice(&1u16.to_be_bytes());
            twice.push(b'a');
            twice.extend_from_slice(&0u32.to_be_bytes());
        }
        twice.extend_from_slice(&0u16.to_be_bytes());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&1u16.to_be_bytes());
        huge.push(b'a');
        huge.extend_from_slice(&u32::try_from(MAX_BYTES + 1).unwrap().to_be_bytes());
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("a path", with_name(b"../etc/passwd"), "file name"),
            ("a hidden name", with_name(b".ssh"), "file name"),
            ("a file twice", twice, "twice"),
            ("too many bytes", huge, "more than"),
            (
                "another start",
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
                "does not start",
            ),
            ("cut short", valid[..valid.len() - 3].to_vec(), "read"),
        ];
        for (what, bytes, said) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (listener, addr) = listener();
            let path = dir.path().to_path_buf();
            let bundle = std::thread::spawn(move || receive(listener, &path));
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(&bytes).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            let err = bundle.join().unwrap().unwrap_err();
            assert!(err.to_string().contains(said), "{what}: {err}");
            if !matches!(err, IntakeError::Io { .. }) {
                assert!(answer.starts_with("refused: "), "{what}: {answer:?}");
            }
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                0,
                "{what}: something was written"
            );
        }
    }

    /// A directory that holds something already is refused before the port is served (a
    /// config is never mixed with files that were there).
    #[test]
    fn a_directory_that_is_not_empty_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sidecar.json"), "{}").unwrap();
        let (listener, _) = listener();
        let err = receive(listener, dir.path()).unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");
    }

    #[test]
    fn names_that_leave_the_directory_are_not_sent_either() {
        let files = BTreeMap::from([("a/b".to_owned(), Vec::new())]);
        assert!(matches!(encode(&files), Err(IntakeError::Malformed(_))));
    }
}
