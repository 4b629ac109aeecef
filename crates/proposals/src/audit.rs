//! The audit log: one append-only JSON-lines file per component and bottle
//! (`audit/<component>/<identity>.jsonl`), one line per operator decision.
//!
//! Each line carries `seq` (its 1-based line number) and `prev_hash`, the sha256 of the
//! previous line's bytes (64 zeros on the first line); `<identity>.head` records the
//! line count and the hash of the last line. [`verify`] recomputes the chain: an edited
//! line breaks the next line's `prev_hash` (or the head, for the last line), a deleted
//! line breaks `seq` and `prev_hash`, a truncated file disagrees with the head.
//!
//! The head record also holds the log's length in bytes after the line it counts. An
//! append takes its `seq` and `prev_hash` from the head when that length is the log's own:
//! it reads 128 bytes, not the whole log, so it costs the same on the ten-thousandth line as
//! on the first, and an edit of the log that keeps its length (the last line rewritten, say)
//! is never folded into the chain by the next line: the next line still names the hash the
//! head recorded, and [`verify`] reports the edit. When the lengths differ (a crash between
//! the line and its head record, a torn line, a head from before lengths were recorded, or
//! no head yet) the append reads the log and continues from its last line, as every append
//! did before.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::paths::FILE_MODE;
use crate::paths::{self, Home};
use crate::proposal::sha256_hex;

/// `prev_hash` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The components that keep an audit log.
pub const COMPONENTS: [&str; 2] = ["egress", "gitleaks"];

/// An audit log operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing the log failed.
    #[error("cannot {action} audit log {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A line does not parse (use [`verify`] for the full story).
    #[error(
        "audit log {path} line {line} is not a valid entry: {reason}; run `bot-bottle audit verify`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A bad identity.
    #[error(transparent)]
    Name(#[from] paths::NameError),
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1-based line number.
    pub seq: u64,
    /// When the line was written.
    pub time: String,
    /// `egress` or `gitleaks`.
    pub component: String,
    /// The bottle identity.
    pub bottle: String,
    /// The proposal.
    pub proposal_id: String,
    /// The MCP tool.
    pub tool: String,
    /// The agent's reason.
    pub justification: String,
    /// When the proposal arrived.
    pub arrival_timestamp: String,
    /// When the operator decided.
    pub decided_at: String,
    /// `approved`, `modified`, `rejected`, or `apply-failed`.
    pub decision: String,
    /// Who decided.
    pub operator: String,
    /// The operator's note.
    #[serde(default)]
    pub notes: Option<String>,
    /// The file before the change (routes), if any.
    #[serde(default)]
    pub before: Option<String>,
    /// The file after the change, or the proposed one for rejections.
    #[serde(default)]
    pub after: Option<String>,
    /// Why applying failed (`apply-failed` only).
    #[serde(default)]
    pub error: Option<String>,
    /// What the decision does, one line per change, most dangerous first (routes added,
    /// widened, narrowed, removed; credentials given). Absent on lines written before
    /// effects were recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effect: Vec<String>,
    /// `decided`: the operator's decision, written when it is made (approvals take effect
    /// later); `applied`: the bottle's supervise server put it in effect; `not-applied`:
    /// it was not (see `error`). Absent on older lines, which were written once applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// How long an approval holds (`once`, `for 10m until <time>`, `persist`); absent for
    /// the default, for the bottle. Lines of stage `expired` or `used-up` record its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// sha256 of the previous line.
    pub prev_hash: String,
}

/// An entry before it gets its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// See [`AuditEntry`].
    pub component: String,
    /// See [`AuditEntry`].
    pub bottle: String,
    /// See [`AuditEntry`].
    pub proposal_id: String,
    /// See [`AuditEntry`].
    pub tool: String,
    /// See [`AuditEntry`].
    pub justification: String,
    /// See [`AuditEntry`].
    pub arrival_timestamp: String,
    /// See [`AuditEntry`].
    pub decided_at: String,
    /// See [`AuditEntry`].
    pub decision: String,
    /// See [`AuditEntry`].
    pub operator: String,
    /// See [`AuditEntry`].
    pub notes: Option<String>,
    /// See [`AuditEntry`].
    pub before: Option<String>,
    /// See [`AuditEntry`].
    pub after: Option<String>,
    /// See [`AuditEntry`].
    pub error: Option<String>,
    /// See [`AuditEntry`].
    pub effect: Vec<String>,
    /// See [`AuditEntry`].
    pub stage: Option<String>,
    /// See [`AuditEntry`].
    pub grant: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Head {
    lines: u64,
    last_hash: String,
    /// The log's length in bytes after the last line; absent in records written before it
    /// was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
}

fn head_path(log: &Path) -> PathBuf {
    log.with_extension("head")
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AuditError + 'a {
    move |source| AuditError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The size of a head record on disk: its JSON padded with spaces (which JSON ignores) and a
/// newline. One fixed size, well inside a disk sector, lets each append overwrite the record
/// in place, so that it needs one sync of its data instead of a temp file, a rename and a
/// sync of the directory; a torn write would not parse and reads as a break, never as a
/// different valid count.
const HEAD_LEN: usize = 128;

fn head_record(head: &Head) -> Vec<u8> {
    let mut json = serde_json::to_vec(head).unwrap_or_default();
    if json.len() < HEAD_LEN {
        json.resize(HEAD_LEN - 1, b' ');
        json.push(b'\n');
    }
    json
}

/// An open head record and what it held before this append.
struct HeadFile {
    file: fs::File,
    old: Vec<u8>,
}

impl HeadFile {
    /// Opens an existing head record for reading and writing and reads it; `None` when there
    /// is none yet (the first line, or a log from before head records).
    fn open(head_file: &Path) -> Result<Option<HeadFile>, AuditError> {
        let mut file = match OpenOptions::new().read(true).write(true).open(head_file) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", head_file)(e)),
        };
        let mut old = Vec::new();
        io::Read::read_to_end(&mut file, &mut old).map_err(io_err("read", head_file))?;
        Ok(Some(HeadFile { file, old }))
    }

    /// The record it held, if it parses.
    fn head(&self) -> Option<Head> {
        serde_json::from_slice(&self.old).ok()
    }

    /// Overwrites the record in place (not synced); on failure the old one is put back.
    fn overwrite(&self, head_file: &Path, record: &[u8]) -> Result<(), AuditError> {
        use std::os::unix::fs::FileExt;
        let written = self.file.write_all_at(record, 0).and_then(|()| {
            if self.old.len() > record.len() {
                self.file.set_len(record.len() as u64)
            } else {
                Ok(())
            }
        });
        written.map_err(|e| {
            self.undo();
            io_err("write", head_file)(e)
        })
    }

    /// Puts the previous record back after a failed append (best effort, like the log's).
    fn undo(&self) {
        use std::os::unix::fs::FileExt;
        let _ = self
            .file
            .write_all_at(&self.old, 0)
            .and_then(|()| self.file.set_len(self.old.len() as u64))
            .and_then(|()| self.file.sync_data());
    }
}

/// Where the chain stands before an append: how many lines the log has, the hash of the
/// last one, and whether the log needs a newline before the next line (a torn last line).
struct Tail {
    lines: u64,
    last_hash: String,
    needs_newline: bool,
}

/// The chain's end from the head record when it counts the log as it is (its recorded
/// length is the log's), else from the log itself.
fn tail(
    path: &Path,
    file: &mut fs::File,
    len: u64,
    head: Option<Head>,
) -> Result<Tail, AuditError> {
    if let Some(head) = head
        && head.bytes == Some(len)
    {
        return Ok(Tail {
            lines: head.lines,
            last_hash: head.last_hash,
            needs_newline: false,
        });
    }
    use std::io::{Read, Seek};
    let mut existing = String::new();
    file.seek(io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut existing))
        .map_err(io_err("read", path))?;
    let lines: Vec<&str> = existing.lines().filter(|l| !l.is_empty()).collect();
    Ok(Tail {
        lines: lines.len() as u64,
        last_hash: lines
            .last()
            .map(|l| sha256_hex(l))
            .unwrap_or_else(|| GENESIS.to_owned()),
        needs_newline: !existing.is_empty() && !existing.ends_with('\n'),
    })
}

/// Appends a decision to `audit/<component>/<bottle>.jsonl`, extending the hash chain.
pub fn append(home: &Home, new: NewEntry) -> Result<AuditEntry, AuditError> {
    paths::check_identity(&new.bottle)?;
    let path = home.audit_file(&new.component, &new.bottle);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    file.lock().map_err(io_err("lock", &path))?;
    let len = file.metadata().map_err(io_err("read", &path))?.len();
    let head_file = head_path(&path);
    let open_head = HeadFile::open(&head_file)?;
    let tail = tail(
        &path,
        &mut file,
        len,
        open_head.as_ref().and_then(HeadFile::head),
    )?;
    let entry = AuditEntry {
        seq: tail.lines + 1,
        time: crate::proposal::now_timestamp(),
        component: new.component,
        bottle: new.bottle,
        proposal_id: new.proposal_id,
        tool: new.tool,
        justification: new.justification,
        arrival_timestamp: new.arrival_timestamp,
        decided_at: new.decided_at,
        decision: new.decision,
        operator: new.operator,
        notes: new.notes,
        before: new.before,
        after: new.after,
        error: new.error,
        effect: new.effect,
        stage: new.stage,
        grant: new.grant,
        prev_hash: tail.last_hash,
    };
    let line = serde_json::to_string(&entry).map_err(|e| AuditError::Corrupt {
        path: path.clone(),
        line: entry.seq as usize,
        reason: e.to_string(),
    })?;
    let mut bytes = Vec::with_capacity(line.len() + 2);
    if tail.needs_newline {
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    let head = Head {
        lines: entry.seq,
        last_hash: sha256_hex(&line),
        bytes: Some(len + bytes.len() as u64),
    };
    let head_json = head_record(&head);
    // The line and the head record (overwritten in place) are written first and synced side
    // by side: one wait for the disk instead of three in a row (line, temp head, directory).
    // The append returns only once both are on disk, and a failure of either undoes both.
    let written = file
        .write_all(&bytes)
        .map_err(io_err("append to", &path))
        .and_then(|()| match &open_head {
            Some(open_head) => {
                open_head.overwrite(&head_file, &head_json)?;
                std::thread::scope(|s| {
                    let synced_head = s.spawn(|| {
                        open_head
                            .file
                            .sync_data()
                            .map_err(io_err("sync", &head_file))
                    });
                    let synced_line = file.sync_data().map_err(io_err("sync", &path));
                    let synced_head = synced_head.join().unwrap_or_else(|_| {
                        Err(io_err("sync", &head_file)(io::Error::other(
                            "the syncing thread panicked",
                        )))
                    });
                    synced_line
                        .and(synced_head)
                        .inspect_err(|_| open_head.undo())
                })
            }
            // The first head record: the line is on disk before the record that counts it
            // appears (a new file, put in place atomically).
            None => file
                .sync_data()
                .map_err(io_err("sync", &path))
                .and_then(|()| {
                    state::atomic_write_mode(&head_file, &head_json, FILE_MODE)
                        .map_err(io_err("write", &head_file))
                }),
        });
    if let Err(e) = written {
        // All or nothing: a line the head does not count (a full disk can take the line and
        // refuse the head, or take half the line) would read as tampering and record a
        // decision that was not made. Cutting the file back needs no space.
        let _ = file.set_len(len).and_then(|()| file.sync_all());
        return Err(e);
    }
    Ok(entry)
}

/// Every audit log file, as (component, identity, path), sorted.
pub fn log_files(home: &Home) -> Result<Vec<(String, String, PathBuf)>, AuditError> {
    let root = home.audit_root();
    let mut out = Vec::new();
    let rd = match fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("read", &root)(e)),
    };
    for comp in rd {
        let comp = comp.map_err(io_err("read", &root))?;
        let Some(component) = comp.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let dir = comp.path();
        if !dir.is_dir() {
            continue;
        }
        for f in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let f = f.map_err(io_err("read", &dir))?;
            let name = f.file_name();
            if let Some(identity) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) {
                out.push((component.clone(), identity.to_owned(), f.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads one log file's entries.
pub fn read_file(path: &Path) -> Result<Vec<AuditEntry>, AuditError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| AuditError::Corrupt {
                path: path.to_owned(),
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Entries of every log (optionally one bottle / component), ordered by time.
pub fn read_all(
    home: &Home,
    bottle: Option<&str>,
    component: Option<&str>,
) -> Result<Vec<AuditEntry>, AuditError> {
    let mut all = Vec::new();
    for (comp, identity, path) in log_files(home)? {
        if bottle.is_some_and(|b| b != identity) || component.is_some_and(|c| c != comp) {
            continue;
        }
        all.extend(read_file(&path)?);
    }
    all.sort_by(|a, b| a.time.cmp(&b.time));
    Ok(all)
}

/// A break in a log's hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The file.
    pub path: PathBuf,
    /// The first line found wrong (1-based); `None` when the file as a whole disagrees with
    /// its head record.
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{} line {}: {}", self.path.display(), l, self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

/// Checks one log file's chain; returns the first break, if any.
pub fn verify_file(path: &Path) -> Result<Option<ChainBreak>, AuditError> {
    // Read under a shared lock: an append (egress writes DLP hits while the bottle runs)
    // holds the exclusive one from its line to its head record, and a verify between the
    // two would see a head one line behind and report tampering that never happened.
    let mut file = fs::File::open(path).map_err(io_err("open", path))?;
    file.lock_shared().map_err(io_err("lock", path))?;
    let mut text = String::new();
    io::Read::read_to_string(&mut file, &mut text).map_err(io_err("read", path))?;
    let brk = |line: Option<usize>, reason: String| {
        Ok(Some(ChainBreak {
            path: path.to_owned(),
            line,
            reason,
        }))
    };
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    let mut prev_hash = GENESIS.to_owned();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let entry: AuditEntry = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => return brk(Some(n), format!("not a valid entry ({e}): edited")),
        };
        if entry.seq != n as u64 {
            return brk(
                Some(n),
                format!(
                    "sequence number is {} where {n} was expected: a line before it was deleted or inserted",
                    entry.seq
                ),
            );
        }
        if entry.prev_hash != prev_hash {
            let what = if n == 1 {
                "the first line's previous hash is not the genesis hash: lines before it were removed".to_owned()
            } else {
                format!(
                    "line {} was edited: its hash does not match what line {n} recorded",
                    n - 1
                )
            };
            return brk(Some(n.saturating_sub(1).max(1)), what);
        }
        prev_hash = sha256_hex(line);
    }
    let head_file = head_path(path);
    let head: Option<Head> = match fs::read(&head_file) {
        Ok(b) => serde_json::from_slice(&b).ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("read", &head_file)(e)),
    };
    let Some(head) = head else {
        if lines.is_empty() {
            return Ok(None);
        }
        return brk(
            None,
            format!("head record {} is missing or corrupt", head_file.display()),
        );
    };
    if head.lines != lines.len() as u64 {
        return brk(
            None,
            format!(
                "has {} lines but {} were written: lines at the end were deleted or added",
                lines.len(),
                head.lines
            ),
        );
    }
    if head.last_hash != prev_hash {
        return brk(Some(lines.len()), "the last line was edited".to_owned());
    }
    Ok(None)
}

/// Verifies every log; returns the breaks (empty: all intact) and how many files were checked.
pub fn verify(home: &Home) -> Result<(Vec<ChainBreak>, usize), AuditError> {
    let files = log_files(home)?;
    let mut breaks = Vec::new();
    for (_, _, path) in &files {
        if let Some(b) = verify_file(path)? {
            breaks.push(b);
        }
    }
    Ok((breaks, files.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn entry(n: u32) -> NewEntry {
        NewEntry {
            component: "egress".into(),
            bottle: "dev-00001".into(),
            proposal_id: format!("{n:016x}"),
            tool: "egress-allow".into(),
            justification: "why".into(),
            arrival_timestamp: "t0".into(),
            decided_at: "t1".into(),
            decision: "approved".into(),
            operator: "op".into(),
            notes: None,
            before: Some("routes: []\n".into()),
            after: Some(format!("routes:\n  - host: h{n}\n")),
            error: None,
            effect: vec![format!("adds host h{n}: any request")],
            stage: Some("applied".into()),
            grant: None,
        }
    }

    fn three() -> (tempfile::TempDir, Home, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        for n in 1..=3 {
            append(&home, entry(n)).unwrap();
        }
        let path = home.audit_file("egress", "dev-00001");
        (dir, home, path)
    }

    #[test]
    fn intact_chain_verifies() {
        let (_d, home, path) = three();
        assert_eq!(verify(&home).unwrap(), (vec![], 1));
        let entries = read_file(&path).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(entries[0].prev_hash, GENESIS);
    }

    fn edit(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
        let mut lines: Vec<String> = fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        f(&mut lines);
        fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn the_head_record_is_rewritten_in_place_and_an_older_one_is_taken_over() {
        use std::os::unix::fs::MetadataExt;
        let (_d, home, path) = three();
        let head = head_path(&path);
        let inode = fs::metadata(&head).unwrap().ino();
        assert_eq!(fs::read(&head).unwrap().len(), HEAD_LEN);
        // A head record as written before records had one size: compact JSON.
        let compact = serde_json::to_vec(&Head {
            lines: 3,
            last_hash: sha256_hex(fs::read_to_string(&path).unwrap().lines().last().unwrap()),
            bytes: None,
        })
        .unwrap();
        fs::write(&head, &compact).unwrap();
        assert_eq!(verify(&home).unwrap(), (vec![], 1));
        append(&home, entry(4)).unwrap();
        append(&home, entry(5)).unwrap();
        assert_eq!(verify(&home).unwrap(), (vec![], 1));
        let meta = fs::metadata(&head).unwrap();
        assert_eq!((meta.ino(), meta.len()), (inode, HEAD_LEN as u64));
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_failed_head_write_takes_the_line_back() {
        let (_d, home, path) = three();
        let head = head_path(&path);
        let before = (fs::read(&path).unwrap(), fs::read(&head).unwrap());
        // A head that cannot be opened for writing (a directory in its place).
        fs::remove_file(&head).unwrap();
        fs::create_dir(&head).unwrap();
        let err = append(&home, entry(4)).unwrap_err();
        assert!(err.to_string().contains(".head"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before.0);
        fs::remove_dir(&head).unwrap();
        fs::write(&head, &before.1).unwrap();
        assert_eq!(verify(&home).unwrap(), (vec![], 1));
    }

    fn head_of(path: &Path) -> Head {
        serde_json::from_slice(&fs::read(head_path(path)).unwrap()).unwrap()
    }

    #[test]
    fn a_long_chain_verifies_and_each_append_continues_from_the_head_record() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let path = home.audit_file("egress", "dev-00001");
        for n in 1..=600 {
            let e = append(&home, entry(n)).unwrap();
            assert_eq!(e.seq, u64::from(n));
        }
        assert_eq!(verify(&home).unwrap(), (vec![], 1));
        let head = head_of(&path);
        assert_eq!(head.lines, 600);
        assert_eq!(head.bytes, Some(fs::metadata(&path).unwrap().len()));
        let entries = read_file(&path).unwrap();
        assert_eq!(entries.len(), 600);
        assert!(entries.iter().zip(1..).all(|(e, n)| e.seq == n));
    }

    #[test]
    fn an_edit_that_keeps_the_length_is_not_folded_into_the_chain_by_the_next_line() {
        // The next line names the hash the head recorded, not the edited line's: before
        // appends read the log, an edit of the last line followed by one more decision
        // verified as intact.
        let (_d, home, path) = three();
        edit(&path, |l| l[2] = l[2].replace("\"op\"", "\"mo\""));
        append(&home, entry(4)).unwrap();
        let (breaks, _) = verify(&home).unwrap();
        assert_eq!(breaks.len(), 1, "{breaks:?}");
        assert_eq!(breaks[0].line, Some(3), "{}", breaks[0]);
    }

    #[test]
    fn a_crash_between_the_line_and_its_head_record_is_taken_up_by_the_next_append() {
        // The line reached the disk, its head record did not: the log is one line longer
        // than the head says; the next append counts that line and the chain verifies.
        let (_d, home, path) = three();
        let old_head = fs::read(head_path(&path)).unwrap();
        append(&home, entry(4)).unwrap();
        fs::write(head_path(&path), &old_head).unwrap();
        let b = verify_file(&path).unwrap().unwrap();
        assert_eq!(b.line, None, "{b}");
        assert_eq!(append(&home, entry(5)).unwrap().seq, 5);
        assert_eq!(verify(&home).unwrap(), (vec![], 1));
        assert_eq!(
            head_of(&path).bytes,
            Some(fs::metadata(&path).unwrap().len())
        );

        // The head record reached the disk, the line did not.
        let (_d, home, path) = three();
        let old_log = fs::read(&path).unwrap();
        append(&home, entry(4)).unwrap();
        fs::write(&path, &old_log).unwrap();
        assert!(verify_file(&path).unwrap().is_some());
        assert_eq!(append(&home, entry(5)).unwrap().seq, 4);
        assert_eq!(verify(&home).unwrap(), (vec![], 1));

        // Half a line reached the disk: it stays (and reads as a break), the next line
        // starts on a line of its own and is counted after it.
        let (_d, home, path) = three();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":4,\"ti").unwrap();
        drop(f);
        assert_eq!(append(&home, entry(5)).unwrap().seq, 5);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert!(text.ends_with('\n'));
        let b = verify_file(&path).unwrap().unwrap();
        assert_eq!(b.line, Some(4), "{b}");
    }

    #[test]
    fn edited_middle_line_is_named() {
        let (_d, home, path) = three();
        edit(&path, |l| {
            l[1] = l[1].replace("\"approved\"", "\"rejected\"")
        });
        let (breaks, _) = verify(&home).unwrap();
        assert_eq!(breaks.len(), 1);
        assert_eq!(breaks[0].line, Some(2));
    }

    #[test]
    fn edited_last_line_deleted_line_and_truncation_are_detected() {
        let (_d, _home, path) = three();
        edit(&path, |l| l[2] = l[2].replace("\"op\"", "\"mallory\""));
        assert_eq!(verify_file(&path).unwrap().unwrap().line, Some(3));

        let (_d, _home, path) = three();
        edit(&path, |l| {
            l.remove(1);
        });
        let b = verify_file(&path).unwrap().unwrap();
        assert_eq!(b.line, Some(2), "{b}");

        let (_d, _home, path) = three();
        edit(&path, |l| {
            l.pop();
        });
        let b = verify_file(&path).unwrap().unwrap();
        assert_eq!(b.line, None, "{b}");
    }
}
