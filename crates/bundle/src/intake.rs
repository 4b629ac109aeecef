//! The bundle's config taken once from a loopback listener: the waiting mode of a warm pod's
//! sidecar (issue 21, kubernetes warm pools), run there by `bot-bottle intake`; the plan it
//! brings is published by [`crate::plan`].
//!
//! A pod of a warm pool is made before any bottle claims it, so its sidecar cannot hold a
//! bottle's config, CA key or tokens. It waits instead on a loopback port that is not a
//! sidecar port (the pod's packet filter refuses it to the agent's uid); once the claim
//! binds, the launcher sends the files through the API server's port-forward.
//!
//! Root in the pod's network namespace reaches that port too, and that is what the
//! kubelet's port-forward connects as: anyone allowed `pods/portforward` on the pod. So a
//! config is taken only from the launcher that made the claim. Per launch it makes an
//! [`IntakeToken`] and puts its SHA-256 in the claim's pod annotations
//! ([`TOKEN_ANNOTATION`]); agent-sandbox's controllers copy them onto the claimed pod, and
//! the kubelet into the sidecar's `downwardAPI` file, which [`receive`] reads at every
//! connection. A connection whose token's SHA-256 is not there is refused and the port
//! keeps listening: a refused connection consumes nothing, so nobody can use up the one
//! config before the launcher; and it costs at most [`HEADER_TIMEOUT`] plus a bounded
//! drain. The first connection with the right token closes the listener, and only then are
//! the files sent. The files are read whole, checked, and only then written (read-only,
//! into a directory that must be empty). A malformed config writes nothing: the bundle
//! never serves without its config.
//!
//! The stream: [`MAGIC`] and the token's [`TOKEN_LEN`] bytes; the bundle answers `go\n`
//! or `refused: <why>\n` (and closes). After `go`: per file a big-endian `u16` name length,
//! the name, a `u32` content length and the content; a name length of 0 ends it. The
//! bundle answers `ok\n`, or `refused: <why>\n` before it closes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The first bytes of a config stream (version 2: a token follows).
pub const MAGIC: &[u8] = b"bot-bottle config 2\n";

/// The length of an [`IntakeToken`].
pub const TOKEN_LEN: usize = 32;

/// The pod annotation holding the hex SHA-256 of the launch's [`IntakeToken`] (the same
/// text as `backend::kubernetes::objects::INTAKE_TOKEN_ANNOTATION`, which the backend puts
/// in the claim; a test holds them equal).
pub const TOKEN_ANNOTATION: &str = "bot-bottle.org/intake-sha256";

/// The answer to a token while the pod carries no [`TOKEN_ANNOTATION`]: the sender retries
/// (the kubelet refreshes the downward API file some time after the pod changes).
pub const NOT_CLAIMED: &str = "not claimed yet";

/// The answer to a token whose SHA-256 is not the annotation's.
pub const MISMATCH: &str = "the token does not match";

/// What one config may hold in all (the bottle's Secret holds no more: 1 MiB).
pub const MAX_BYTES: usize = 1024 * 1024;

/// How many files one config may hold.
pub const MAX_FILES: usize = 64;

/// How long the token's sender may take to send the whole config once admitted.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How long any connection may take to send the magic and the token, in all: what one
/// connection that stalls or trickles can delay the next one by.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long, and how much, a refused connection is read after the answer (so that closing
/// does not reset the connection before the answer is read).
const DRAIN_TIME: Duration = Duration::from_secs(1);
const DRAIN_BYTES: u64 = 64 * 1024;

/// How many refused connections are logged, one line each; then one line says that the
/// rest are not (a planter connecting in a loop does not fill the log).
pub const MAX_LOGGED_REFUSALS: usize = 20;

/// The largest annotations file read (Kubernetes allows 256 KiB of annotations per object;
/// Go's quoting can make that up to four times longer).
const MAX_ANNOTATIONS_BYTES: u64 = 1024 * 1024;

/// How long [`send_when_claimed`] retries a pod that answers [`NOT_CLAIMED`] by default.
pub const CLAIM_WAIT: Duration = Duration::from_secs(30);

/// A launch's secret for its warm pod's intake: 32 random bytes, sent on the connection;
/// only its SHA-256 ([`IntakeToken::annotation_value`]) goes into the claim.
#[derive(Clone, PartialEq, Eq)]
pub struct IntakeToken([u8; TOKEN_LEN]);

impl IntakeToken {
    /// A new token from the operating system's random source (through `rand`'s
    /// cryptographically secure thread generator).
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// A token of these bytes.
    pub fn from_bytes(bytes: [u8; TOKEN_LEN]) -> Self {
        Self(bytes)
    }

    /// The [`TOKEN_ANNOTATION`] value: the lowercase hex SHA-256 of the token.
    pub fn annotation_value(&self) -> String {
        hex::encode(Sha256::digest(self.0))
    }
}

impl std::fmt::Debug for IntakeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntakeToken(<redacted>)")
    }
}

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
    /// The downward API file of the pod's annotations cannot be read or parsed.
    #[error(
        "the pod's annotations file {}: {message} (the sidecar mounts a downwardAPI volume of metadata.annotations there)",
        path.display()
    )]
    Annotations {
        /// The file.
        path: PathBuf,
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
    /// The sender: the pod does not carry the claim's annotation (yet).
    #[error(
        "the sidecar refused the config: {NOT_CLAIMED} (the pod does not carry the claim's {TOKEN_ANNOTATION} annotation, or the kubelet has not refreshed the sidecar's file yet)"
    )]
    NotClaimedYet,
    /// The sender: the bundle refused the config, or took one already.
    #[error("the sidecar bundle did not take the config: {0}")]
    NotTaken(String),
    /// The sender: the pod never carried the claim's annotation within the wait.
    #[error(
        "the warm pod {pod}'s sidecar still answered `refused: {NOT_CLAIMED}` after {} s: the pod does not carry the claim's {TOKEN_ANNOTATION} annotation. Check that the pod has it (kubectl get pod {pod} -o jsonpath='{{.metadata.annotations}}'), that agent-sandbox's controllers are a version that copies the claim's spec.additionalPodMetadata.annotations onto the adopted pod, and that the claim holds it",
        waited.as_secs()
    )]
    NeverClaimed {
        /// The pod.
        pod: String,
        /// How long it was tried.
        waited: Duration,
    },
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

/// The files part of a config stream (what follows `go`).
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
    let mut out = Vec::with_capacity(total + files.len() * 64 + 2);
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

/// The first bytes a sender writes: [`MAGIC`] and the token.
pub fn header(token: &IntakeToken) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&token.0);
    out
}

fn bad(what: &str) -> IntakeError {
    IntakeError::Malformed(what.to_owned())
}

/// Reads and checks the files part of a config stream (nothing is written).
fn decode(stream: &mut impl Read) -> Result<BTreeMap<String, Vec<u8>>, IntakeError> {
    let io = |source| IntakeError::Io {
        action: "read",
        source,
    };
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

/// Parses the kubelet's downward API file of `metadata.annotations`: one `key="value"` per
/// line, sorted, the value quoted as Go's `%q` does (`strconv.Quote`), the last line without
/// a newline. Every escape of a Go string literal is read; anything else is an error (the
/// file is then not trusted at all).
pub fn parse_annotations(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let line_no = n + 1;
        let (key, quoted) = line
            .split_once('=')
            .ok_or_else(|| format!("line {line_no} is not key=\"value\""))?;
        if key.is_empty() {
            return Err(format!("line {line_no} has no key"));
        }
        let value = go_unquote(quoted).map_err(|e| format!("line {line_no} ({key}): {e}"))?;
        if out.insert(key.to_owned(), value).is_some() {
            return Err(format!("{key} twice"));
        }
    }
    Ok(out)
}

/// A Go double-quoted string literal's value (`strconv.Unquote` of a `"…"` literal).
fn go_unquote(quoted: &str) -> Result<String, String> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .ok_or("the value is not a double-quoted string")?;
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    let hex_digits = |chars: &mut std::str::Chars<'_>, n: usize| -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = chars
                .next()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| format!("an escape needs {n} hex digits"))?;
            v = v * 16 + d;
        }
        Ok(v)
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err("a quote inside the value that is not escaped".into()),
            '\n' => return Err("a newline inside the value".into()),
            '\\' => {
                let e = chars.next().ok_or("the value ends in a backslash")?;
                let simple = match e {
                    'a' => Some(0x07),
                    'b' => Some(0x08),
                    'f' => Some(0x0c),
                    'n' => Some(b'\n'),
                    'r' => Some(b'\r'),
                    't' => Some(b'\t'),
                    'v' => Some(0x0b),
                    '\\' => Some(b'\\'),
                    '"' => Some(b'"'),
                    _ => None,
                };
                if let Some(b) = simple {
                    out.push(b);
                    continue;
                }
                match e {
                    'x' => out.push(u8::try_from(hex_digits(&mut chars, 2)?).unwrap_or(0)),
                    '0'..='7' => {
                        let mut v = e.to_digit(8).unwrap_or(0);
                        for _ in 0..2 {
                            let d = chars
                                .next()
                                .and_then(|c| c.to_digit(8))
                                .ok_or("an octal escape needs 3 digits")?;
                            v = v * 8 + d;
                        }
                        out.push(u8::try_from(v).map_err(|_| "an octal escape above \\377")?);
                    }
                    'u' | 'U' => {
                        let v = hex_digits(&mut chars, if e == 'u' { 4 } else { 8 })?;
                        let c = char::from_u32(v)
                            .ok_or_else(|| format!("\\{e}{v:x} is not a Unicode character"))?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    other => return Err(format!("an unknown escape \\{other}")),
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    String::from_utf8(out).map_err(|_| "the value is not UTF-8 once unquoted".to_owned())
}

/// Reads the pod's annotations file.
fn read_annotations(path: &Path) -> Result<BTreeMap<String, String>, IntakeError> {
    let error = |message: String| IntakeError::Annotations {
        path: path.to_path_buf(),
        message,
    };
    let text = state::read::read_limited_to_string(path, MAX_ANNOTATIONS_BYTES)
        .map_err(|e| error(format!("cannot read it: {e}")))?;
    parse_annotations(&text).map_err(|e| error(format!("cannot parse it: {e}")))
}

/// Reads exactly `buf.len()` bytes before `deadline`.
fn read_exact_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a connection's magic and token and judges them against the annotations file; the
/// reason it is refused otherwise (the text after `refused: `).
fn admit(stream: &mut TcpStream, annotations: &Path) -> Result<(), String> {
    let deadline = Instant::now() + HEADER_TIMEOUT;
    let mut magic = [0u8; MAGIC.len()];
    read_exact_by(stream, &mut magic, deadline).map_err(|e| header_error(&e))?;
    if magic != MAGIC {
        if magic.starts_with(b"bot-bottle config ") {
            return Err(format!(
                "another version of the config stream (this sidecar takes {:?}): use a launcher of the same bot-bottle version as the pool's image",
                String::from_utf8_lossy(MAGIC).trim_end()
            ));
        }
        return Err("it does not start as a bot-bottle config".into());
    }
    let mut token = [0u8; TOKEN_LEN];
    read_exact_by(stream, &mut token, deadline).map_err(|e| header_error(&e))?;
    let claimed = read_annotations(annotations).map_err(|e| {
        tracing::error!(error = %e, "intake: cannot judge a token");
        "the sidecar cannot read the pod's annotations".to_owned()
    })?;
    let Some(expected) = claimed.get(TOKEN_ANNOTATION) else {
        return Err(NOT_CLAIMED.into());
    };
    let mut expected_digest = [0u8; 32];
    hex::decode_to_slice(expected.trim(), &mut expected_digest)
        .map_err(|_| format!("the pod's {TOKEN_ANNOTATION} annotation is not a hex SHA-256"))?;
    let digest: [u8; 32] = Sha256::digest(token).into();
    if bool::from(digest.ct_eq(&expected_digest)) {
        Ok(())
    } else {
        Err(MISMATCH.into())
    }
}

fn header_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut => format!(
            "the magic and the token were not sent within {} s",
            HEADER_TIMEOUT.as_secs()
        ),
        std::io::ErrorKind::UnexpectedEof => "the stream ended before the token".into(),
        _ => format!("cannot read the token: {e}"),
    }
}

/// Takes one config from `listener` into `dir` (which must exist and be empty), from the
/// first connection whose token's SHA-256 is the pod's [`TOKEN_ANNOTATION`] in
/// `annotations` (the downward API file, read again at every connection); every other
/// connection is answered `refused: <why>` and the port keeps listening. Closes the
/// listener once a token is admitted; returns the files written.
pub fn receive(
    listener: TcpListener,
    dir: &Path,
    annotations: &Path,
) -> Result<Vec<PathBuf>, IntakeError> {
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
    // The file is there from the pod's start (empty before any annotation): a sidecar
    // whose file cannot be read could never admit anyone, so it fails at once.
    read_annotations(annotations)?;
    let mut refused = 0usize;
    let mut stream = loop {
        let (mut stream, _) = match listener.accept() {
            Ok(accepted) => accepted,
            // A connection reset before it was accepted is that sender's loss only.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
            Err(source) => {
                return Err(IntakeError::Io {
                    action: "accept",
                    source,
                });
            }
        };
        match admit(&mut stream, annotations) {
            Ok(()) => break stream,
            Err(why) => {
                refused += 1;
                if refused <= MAX_LOGGED_REFUSALS {
                    tracing::warn!("intake: a connection was refused: {why}");
                } else if refused == MAX_LOGGED_REFUSALS + 1 {
                    tracing::warn!(
                        "intake: {MAX_LOGGED_REFUSALS} connections refused; further refusals are not logged"
                    );
                }
                refuse(&mut stream, &format!("refused: {why}\n"));
            }
        }
    };
    // The claimer's connection: nobody else connects from here on.
    drop(listener);
    let io = |action| move |source| IntakeError::Io { action, source };
    stream.write_all(b"go\n").map_err(io("answer on"))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(io("set a timeout on"))?;
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
    stream.write_all(b"ok\n").map_err(io("answer on"))?;
    Ok(written)
}

/// Answers a refusal, then reads what the sender still sends (at most [`DRAIN_BYTES`],
/// for at most [`DRAIN_TIME`] in all) so that closing does not reset the connection
/// before the answer is read.
fn refuse(stream: &mut TcpStream, answer: &str) {
    let _ = stream.set_write_timeout(Some(DRAIN_TIME));
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + DRAIN_TIME;
    let mut left = DRAIN_BYTES;
    let mut buf = [0u8; 8192];
    while left > 0 {
        let time = deadline.saturating_duration_since(Instant::now());
        if time.is_zero() || stream.set_read_timeout(Some(time)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n as u64),
        }
    }
}

/// Reads one answer line (without its newline), at most 4096 bytes; an empty string when
/// the stream ends first.
fn answer_line(stream: &mut impl Read) -> Result<String, IntakeError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(IntakeError::Io {
                    action: "read the answer on",
                    source,
                });
            }
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn not_taken(answer: &str) -> IntakeError {
    match answer {
        "" => IntakeError::NotTaken(
            "it closed the connection without an answer (it took a config already, or stopped)"
                .into(),
        ),
        other if other == format!("refused: {NOT_CLAIMED}") => IntakeError::NotClaimedYet,
        other => IntakeError::NotTaken(other.to_owned()),
    }
}

/// The launcher's side: sends the token on `stream`, then, once the bundle admits it,
/// `files`; waits for the bundle's answer. [`IntakeError::NotClaimedYet`] when the pod does
/// not carry the claim's annotation yet (retry: [`send_when_claimed`]); a token that does
/// not match fails with the bundle's answer. No file byte is sent before the bundle admits
/// the token.
pub fn send(
    stream: &mut (impl Read + Write),
    token: &IntakeToken,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<(), IntakeError> {
    let body = encode(files)?;
    let io = |action| move |source| IntakeError::Io { action, source };
    stream.write_all(&header(token)).map_err(io("write to"))?;
    stream.flush().map_err(io("write to"))?;
    let first = answer_line(stream)?;
    if first != "go" {
        return Err(not_taken(&first));
    }
    stream.write_all(&body).map_err(io("write to"))?;
    stream.flush().map_err(io("write to"))?;
    match answer_line(stream)?.as_str() {
        "ok" => Ok(()),
        other => Err(not_taken(other)),
    }
}

/// How a sender waits for a pod that answers [`NOT_CLAIMED`] (the kubelet refreshes the
/// downward API file some time after the controller annotates the pod): a backoff from
/// 200 ms to 2 s, for at most a given wait ([`CLAIM_WAIT`]); then
/// [`ClaimRetry::never_claimed`]. For senders whose connect step has errors of its own (a
/// port-forward); [`send_when_claimed`] uses it. The kubernetes backend's warm launch
/// retries on a new port-forward per attempt with the same policy (it does not depend on
/// this crate: its `CLAIM_RETRY_FIRST`, `CLAIM_RETRY_MAX`), each attempt through [`send_async`].
#[derive(Debug, Clone)]
pub struct ClaimRetry {
    start: Instant,
    backoff: Duration,
    wait: Duration,
}

impl ClaimRetry {
    /// From now, for at most `wait`.
    pub fn new(wait: Duration) -> Self {
        Self {
            start: Instant::now(),
            backoff: Duration::from_millis(200),
            wait,
        }
    }

    /// How long to sleep before the next attempt; `None` when the wait is spent.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let delay = self.backoff;
        if self.start.elapsed() + delay > self.wait {
            return None;
        }
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
        Some(delay)
    }

    /// The error once [`ClaimRetry::next_delay`] said `None`: names the pod, the annotation
    /// and what to check.
    pub fn never_claimed(&self, pod: &str) -> IntakeError {
        IntakeError::NeverClaimed {
            pod: pod.to_owned(),
            waited: self.start.elapsed(),
        }
    }
}

/// [`send`] on a new connection from `connect` until the pod `pod` admits the token,
/// retrying while it answers [`NOT_CLAIMED`] as [`ClaimRetry`] says, for at most `wait`
/// ([`CLAIM_WAIT`]); then [`IntakeError::NeverClaimed`]. Any other failure (a token that
/// does not match, a connection that fails) is returned at once.
pub fn send_when_claimed<S: Read + Write>(
    pod: &str,
    mut connect: impl FnMut() -> Result<S, IntakeError>,
    token: &IntakeToken,
    files: &BTreeMap<String, Vec<u8>>,
    wait: Duration,
) -> Result<(), IntakeError> {
    let mut retry = ClaimRetry::new(wait);
    loop {
        let mut stream = connect()?;
        match send(&mut stream, token, files) {
            Err(IntakeError::NotClaimedYet) => {}
            other => return other,
        }
        drop(stream);
        match retry.next_delay() {
            Some(delay) => std::thread::sleep(delay),
            None => return Err(retry.never_claimed(pod)),
        }
    }
}

/// Reads one answer line on an async stream (see [`answer_line`]), within [`READ_TIMEOUT`].
async fn answer_line_async(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<String, IntakeError> {
    use tokio::io::AsyncReadExt;
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < 4096 {
            if stream.read(&mut byte).await? == 0 || byte[0] == b'\n' {
                break;
            }
            line.push(byte[0]);
        }
        Ok::<_, std::io::Error>(line)
    })
    .await;
    match read {
        Ok(Ok(line)) => Ok(String::from_utf8_lossy(&line).into_owned()),
        Ok(Err(source)) => Err(IntakeError::Io {
            action: "read the answer on",
            source,
        }),
        Err(_) => Err(IntakeError::NotTaken(format!(
            "it gave no answer within {} s",
            READ_TIMEOUT.as_secs()
        ))),
    }
}

/// [`send`] on an async stream (the launcher's port-forward to a warm pod); each answer is
/// waited for at most [`READ_TIMEOUT`].
pub async fn send_async(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    token: &IntakeToken,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<(), IntakeError> {
    use tokio::io::AsyncWriteExt;
    let body = encode(files)?;
    let io = |action| move |source| IntakeError::Io { action, source };
    stream
        .write_all(&header(token))
        .await
        .map_err(io("write to"))?;
    stream.flush().await.map_err(io("write to"))?;
    let first = answer_line_async(stream).await?;
    if first != "go" {
        return Err(not_taken(&first));
    }
    stream.write_all(&body).await.map_err(io("write to"))?;
    stream.flush().await.map_err(io("write to"))?;
    match answer_line_async(stream).await?.as_str() {
        "ok" => Ok(()),
        other => Err(not_taken(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::os::unix::fs::PermissionsExt;

    fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    fn config() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("sidecar.json".to_owned(), b"{\"egress\":{}}".to_vec()),
            ("token-github".to_owned(), b"ghp_not_a_real_token".to_vec()),
            ("ca-key.pem".to_owned(), vec![0u8, 1, 2, 255]),
        ])
    }

    /// The pod's volumes here: the empty config directory and the downward API file
    /// (kubelet's format), with the claim's annotation when `claimed_by` is given.
    struct Pod {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        annotations: PathBuf,
    }

    impl Pod {
        fn new(claimed_by: Option<&IntakeToken>) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("sidecar");
            std::fs::create_dir(&dir).unwrap();
            let annotations = tmp.path().join("annotations");
            let pod = Self {
                _tmp: tmp,
                dir,
                annotations,
            };
            pod.annotate(claimed_by);
            pod
        }

        /// As the kubelet writes it: sorted `key="value"` lines, no final newline.
        fn annotate(&self, claimed_by: Option<&IntakeToken>) {
            let mut lines = vec![
                r#"agents.x-k8s.io/pod-name="demo""#.to_owned(),
                r#"kubectl.kubernetes.io/last-applied="{\"a\":\"b=c\\n\"}""#.to_owned(),
            ];
            if let Some(token) = claimed_by {
                lines.insert(
                    1,
                    format!("{TOKEN_ANNOTATION}=\"{}\"", token.annotation_value()),
                );
            }
            std::fs::write(&self.annotations, lines.join("\n")).unwrap();
        }

        fn start(
            &self,
            listener: TcpListener,
        ) -> std::thread::JoinHandle<Result<Vec<PathBuf>, IntakeError>> {
            let dir = self.dir.clone();
            let annotations = self.annotations.clone();
            std::thread::spawn(move || receive(listener, &dir, &annotations))
        }

        fn written(&self) -> usize {
            std::fs::read_dir(&self.dir).unwrap().count()
        }
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        TcpStream::connect(addr).unwrap()
    }

    /// The claimer's config is written, each file read-only, and the bundle answers `ok`;
    /// then the port is closed: a second sender is refused at connect.
    #[test]
    fn the_claimers_config_is_taken_then_the_port_is_closed() {
        let token = IntakeToken::random();
        let pod = Pod::new(Some(&token));
        let (listener, addr) = listener();
        let bundle = pod.start(listener);
        send(&mut connect(addr), &token, &config()).unwrap();
        let written = bundle.join().unwrap().unwrap();
        assert_eq!(written.len(), 3);
        for (name, content) in config() {
            let path = pod.dir.join(&name);
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

    /// The hole of issue 21: someone who reaches the port before the launcher (a
    /// port-forward to a pool's pod) is refused — before the claim (`not claimed yet`) and
    /// after it with another token — nothing is written, and the port still takes the
    /// claimer's config afterwards: a refusal consumes nothing.
    #[test]
    fn a_planter_is_refused_before_and_after_the_claim_and_the_claimer_still_gets_through() {
        let token = IntakeToken::random();
        let pod = Pod::new(None);
        let (listener, addr) = listener();
        let bundle = pod.start(listener);
        let planted = BTreeMap::from([("start.sh".to_owned(), b"echo planted\n".to_vec())]);
        // Before the claim, with any token (even the right one).
        for planter in [&IntakeToken::random(), &token] {
            let err = send(&mut connect(addr), planter, &planted).unwrap_err();
            assert!(matches!(err, IntakeError::NotClaimedYet), "{err}");
            assert_eq!(pod.written(), 0);
        }
        // Claimed: another token does not match, and fails at once.
        pod.annotate(Some(&token));
        let err = send(&mut connect(addr), &IntakeToken::random(), &planted).unwrap_err();
        assert!(
            matches!(&err, IntakeError::NotTaken(a) if a == &format!("refused: {MISMATCH}")),
            "{err}"
        );
        assert_eq!(pod.written(), 0);
        assert!(!bundle.is_finished());
        send(&mut connect(addr), &token, &config()).unwrap();
        assert_eq!(bundle.join().unwrap().unwrap().len(), 3);
        assert!(!pod.dir.join("start.sh").exists());
    }

    /// No file byte crosses before the token is admitted: a sender refused at the token
    /// never wrote its files (the refusal comes after the header alone).
    #[test]
    fn a_refused_sender_sends_nothing_but_its_token() {
        let pod = Pod::new(None);
        let (listener, addr) = listener();
        let _bundle = pod.start(listener);
        let mut stream = connect(addr);
        stream.write_all(&header(&IntakeToken::random())).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, format!("refused: {NOT_CLAIMED}\n"));
    }

    /// The kubelet refreshes the downward API file some time after the controller annotates
    /// the pod: the retrying sender gets through once the file holds the annotation (here
    /// written between its first and second attempt).
    #[test]
    fn the_retrying_sender_gets_through_once_the_annotation_appears() {
        let token = IntakeToken::random();
        let pod = Pod::new(None);
        let (listener, addr) = listener();
        let bundle = pod.start(listener);
        let mut attempts = 0;
        send_when_claimed(
            "bot-bottle-demo",
            || {
                attempts += 1;
                if attempts == 2 {
                    pod.annotate(Some(&token));
                }
                Ok(connect(addr))
            },
            &token,
            &config(),
            CLAIM_WAIT,
        )
        .unwrap();
        assert_eq!(attempts, 2);
        assert_eq!(bundle.join().unwrap().unwrap().len(), 3);
    }

    /// Never claimed within the wait: the error names the pod, the annotation and what to
    /// check; a mismatch is not retried.
    #[test]
    fn a_pod_never_claimed_fails_naming_what_to_check_and_a_mismatch_fails_at_once() {
        let pod = Pod::new(None);
        let (listener, addr) = listener();
        let _bundle = pod.start(listener);
        let token = IntakeToken::random();
        let err = send_when_claimed(
            "bot-bottle-demo",
            || Ok(connect(addr)),
            &token,
            &config(),
            Duration::from_millis(700),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, IntakeError::NeverClaimed { .. }), "{text}");
        for said in [
            "bot-bottle-demo",
            TOKEN_ANNOTATION,
            "additionalPodMetadata",
            "agent-sandbox",
            "kubectl get pod bot-bottle-demo",
        ] {
            assert!(text.contains(said), "{said}: {text}");
        }

        pod.annotate(Some(&IntakeToken::random()));
        let mut attempts = 0;
        let err = send_when_claimed(
            "bot-bottle-demo",
            || {
                attempts += 1;
                Ok(connect(addr))
            },
            &token,
            &config(),
            CLAIM_WAIT,
        )
        .unwrap_err();
        assert_eq!(attempts, 1, "{err}");
        assert!(err.to_string().contains(MISMATCH), "{err}");
        assert_eq!(pod.written(), 0);
    }

    /// Planted connections that send garbage, an older stream, half a token, or nothing at
    /// all (held open) are refused within the bound, and the claimer's send that queued
    /// behind them is taken.
    #[test]
    fn garbage_and_stalled_connections_do_not_keep_the_claimer_out() {
        let token = IntakeToken::random();
        let pod = Pod::new(Some(&token));
        let (listener, addr) = listener();
        let bundle = pod.start(listener);
        let mut answers = Vec::new();
        for bytes in [
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
            b"bot-bottle config 1\n\0\0\0".to_vec(),
            [MAGIC, &[7u8; 5]].concat(),
        ] {
            let mut stream = connect(addr);
            stream.write_all(&bytes).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answers.push(answer);
        }
        assert!(
            answers[0].starts_with("refused: it does not start as a bot-bottle config"),
            "{answers:?}"
        );
        assert!(
            answers[1].contains("another version of the config stream"),
            "{answers:?}"
        );
        assert!(
            answers[2].contains("the stream ended before the token"),
            "{answers:?}"
        );
        // One that sends nothing and stays open, then one that trickles half a token.
        let stalled = connect(addr);
        let mut trickle = connect(addr);
        trickle.write_all(MAGIC).unwrap();
        let claimer = std::thread::spawn(move || send(&mut connect(addr), &token, &config()));
        claimer.join().unwrap().unwrap();
        assert_eq!(bundle.join().unwrap().unwrap().len(), 3);
        drop((stalled, trickle));
    }

    /// A stream whose token is admitted but whose files are not a valid config is answered
    /// `refused: <why>` and nothing is written: a name that leaves the directory, one
    /// starting with `.`, a file twice, too many bytes, a stream cut short.
    #[test]
    fn a_malformed_config_is_refused_and_nothing_is_written() {
        let token = IntakeToken::random();
        let valid = encode(&config()).unwrap();
        let with_name = |name: &[u8]| {
            let mut s = Vec::new();
            s.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
            s.extend_from_slice(name);
            s.extend_from_slice(&1u32.to_be_bytes());
            s.push(b'x');
            s.extend_from_slice(&0u16.to_be_bytes());
            s
        };
        let mut twice = Vec::new();
        for _ in 0..2 {
            twice.extend_from_slice(&1u16.to_be_bytes());
            twice.push(b'a');
            twice.extend_from_slice(&0u32.to_be_bytes());
        }
        twice.extend_from_slice(&0u16.to_be_bytes());
        let mut huge = Vec::new();
        huge.extend_from_slice(&1u16.to_be_bytes());
        huge.push(b'a');
        huge.extend_from_slice(&u32::try_from(MAX_BYTES + 1).unwrap().to_be_bytes());
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("a path", with_name(b"../etc/passwd"), "file name"),
            ("a hidden name", with_name(b".ssh"), "file name"),
            ("a file twice", twice, "twice"),
            ("too many bytes", huge, "more than"),
            ("cut short", valid[..valid.len() - 3].to_vec(), "read"),
        ];
        for (what, bytes, said) in cases {
            let pod = Pod::new(Some(&token));
            let (listener, addr) = listener();
            let bundle = pod.start(listener);
            let mut stream = connect(addr);
            stream.write_all(&header(&token)).unwrap();
            stream.write_all(&bytes).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            let err = bundle.join().unwrap().unwrap_err();
            assert!(err.to_string().contains(said), "{what}: {err}");
            assert!(answer.starts_with("go\n"), "{what}: {answer:?}");
            if !matches!(err, IntakeError::Io { .. }) {
                assert!(answer.contains("\nrefused: "), "{what}: {answer:?}");
            }
            assert_eq!(pod.written(), 0, "{what}: something was written");
        }
    }

    /// A directory that holds something already, or an annotations file that cannot be
    /// read or parsed, is refused before the port is served.
    #[test]
    fn a_directory_not_empty_or_an_unreadable_annotations_file_is_refused() {
        let pod = Pod::new(None);
        std::fs::write(pod.dir.join("sidecar.json"), "{}").unwrap();
        let (l, _) = listener();
        let err = receive(l, &pod.dir, &pod.annotations).unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");

        let pod = Pod::new(None);
        let missing = pod.annotations.with_file_name("nothing-here");
        let (l, _) = listener();
        let err = receive(l, &pod.dir, &missing).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("nothing-here") && text.contains("downwardAPI"),
            "{text}"
        );
        // A named pipe there: refused unopened, never a hang.
        let fifo = pod.annotations.with_file_name("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let (l, _) = listener();
        let err = receive(l, &pod.dir, &fifo).unwrap_err();
        assert!(err.to_string().contains("named pipe"), "{err}");
        std::fs::write(&pod.annotations, "a=\"unterminated").unwrap();
        let (l, _) = listener();
        let err = receive(l, &pod.dir, &pod.annotations).unwrap_err();
        assert!(err.to_string().contains("cannot parse it"), "{err}");
    }

    /// The kubelet's format (Go's `%q` values), odd values included; anything that is not
    /// a Go string literal fails the whole file.
    #[test]
    fn annotations_are_parsed_as_the_kubelet_writes_them() {
        let text = concat!(
            "a.example/plain=\"abc\"\n",
            "a.example/empty=\"\"\n",
            "a.example/eq=\"x=\\\"y\\\"\"\n",
            "a.example/nl=\"line1\\nline2\\ttab\\\\back\"\n",
            "a.example/bytes=\"\\x41\\101\\u00e9\\U0001F600\\a\\b\\f\\r\\v\"\n",
            "a.example/raw=\"é😀\"",
        );
        let parsed = parse_annotations(text).unwrap();
        let want = BTreeMap::from(
            [
                ("a.example/plain", "abc"),
                ("a.example/empty", ""),
                ("a.example/eq", "x=\"y\""),
                ("a.example/nl", "line1\nline2\ttab\\back"),
                ("a.example/bytes", "AAé😀\x07\x08\x0c\r\x0b"),
                ("a.example/raw", "é😀"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        assert_eq!(parsed, want);
        assert_eq!(parse_annotations("").unwrap(), BTreeMap::new());
        assert_eq!(parse_annotations("k=\"v\"\n").unwrap().len(), 1);

        for (what, bad) in [
            ("no quotes", "k=v"),
            ("no equals", "k"),
            ("no key", "=\"v\""),
            ("unterminated", "k=\"v"),
            ("a quote inside", "k=\"a\"b\""),
            ("a lone quote", "k=\""),
            ("an unknown escape", "k=\"\\q\""),
            ("a single-quote escape", "k=\"\\'\""),
            ("short hex", "k=\"\\x4\""),
            ("octal too large", "k=\"\\400\""),
            ("a surrogate", "k=\"\\ud800\""),
            ("not UTF-8 once unquoted", "k=\"\\xff\""),
            ("a trailing backslash", "k=\"\\\""),
            ("a key twice", "k=\"a\"\nk=\"b\""),
        ] {
            assert!(parse_annotations(bad).is_err(), "{what}: {bad:?}");
        }
    }

    /// The annotation is the lowercase hex SHA-256 of the token; the token never shows in
    /// debug output; two tokens differ.
    #[test]
    fn the_annotation_is_the_tokens_sha256_and_the_token_is_not_printed() {
        let token = IntakeToken::from_bytes([0u8; TOKEN_LEN]);
        assert_eq!(
            token.annotation_value(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert_eq!(format!("{token:?}"), "IntakeToken(<redacted>)");
        assert_ne!(IntakeToken::random(), IntakeToken::random());
    }

    #[test]
    fn names_that_leave_the_directory_are_not_sent_either() {
        let files = BTreeMap::from([("a/b".to_owned(), Vec::new())]);
        assert!(matches!(encode(&files), Err(IntakeError::Malformed(_))));
    }

    /// The async sender (the launcher's port-forward) against the real receiver: refused
    /// `not claimed yet` before the annotation, a mismatch fails, and the launch's token
    /// is taken once the pod carries its hash. (Retrying on a new port-forward is the
    /// kubernetes backend's, which checks the pod's uid on each one.)
    #[test]
    fn the_async_sender_is_refused_until_the_claim_then_taken() {
        let token = IntakeToken::random();
        let pod = Pod::new(None);
        let (listener, addr) = listener();
        let bundle = pod.start(listener);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let e = send_async(&mut stream, &token, &config())
                .await
                .unwrap_err();
            assert!(matches!(e, IntakeError::NotClaimedYet), "{e}");
            pod.annotate(Some(&IntakeToken::random()));
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let e = send_async(&mut stream, &token, &config())
                .await
                .unwrap_err();
            assert!(e.to_string().contains(MISMATCH), "{e}");
            pod.annotate(Some(&token));
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            send_async(&mut stream, &token, &config()).await.unwrap();
        });
        assert_eq!(bundle.join().unwrap().unwrap().len(), 3);
        assert_eq!(
            std::fs::read(pod.dir.join("token-github")).unwrap(),
            b"ghp_not_a_real_token"
        );
    }

    /// The retry policy: growing delays up to 2 s, and none once the wait is spent.
    #[test]
    fn the_claim_retry_backs_off_and_ends() {
        let mut retry = ClaimRetry::new(Duration::from_secs(60));
        let delays: Vec<_> = (0..6).map(|_| retry.next_delay().unwrap()).collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 2000, 2000].map(Duration::from_millis)
        );
        let mut spent = ClaimRetry::new(Duration::from_millis(100));
        assert_eq!(spent.next_delay(), None);
        let e = spent.never_claimed("bot-bottle-demo").to_string();
        assert!(
            e.contains("bot-bottle-demo") && e.contains(TOKEN_ANNOTATION),
            "{e}"
        );
    }
}
