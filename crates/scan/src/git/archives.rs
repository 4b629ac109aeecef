//! Archives in git scans (gitleaks' `--max-archive-depth` in `git` mode).
//!
//! Why: gitleaks 8.30 opens archives in git mode too. For each file a commit adds or changes
//! (`--diff-filter` without deletions), a binary file it identifies as an archive is read
//! whole from that commit and scanned as a file, its entries named `path!entry` and reported
//! in that commit; a `--staged` scan does the same for the index. The history scan's `--text`
//! patch of such a blob is compressed bytes, so its entries are only seen this way.
//!
//! Here a blob is an archive by its first bytes (zip, tar, gzip, xz, zstd; gitleaks goes by
//! the file's extension), no larger than the file size limit, and it is opened with the same
//! bounds as on disk (`crate::archive`): an archive bomb is refused with a warning, and its
//! patch is still scanned as text. This list comes from `git log --raw` (or
//! `git diff --cached --raw`) over the same revision arguments; the blobs are read in process.

use std::process::Stdio;

use gix_hash::ObjectId;

use super::GitScanRequest;
use super::odb::Objects;
use super::process::{git_command, git_stderr_message};

/// A blob a commit (or the index) brings in at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangedBlob {
    /// The commit (empty for the index).
    pub commit: String,
    /// The path in the commit's tree.
    pub path: String,
    /// The blob.
    pub blob: ObjectId,
}

/// The blobs the request's commits add or change (`staged`: the index against `HEAD`), in
/// git's order. The error is a sentence for [`crate::ScanError::Git`].
pub(crate) fn changed_blobs(
    req: &GitScanRequest,
    staged: bool,
) -> Result<Vec<ChangedBlob>, String> {
    let mut cmd = if staged {
        let mut c = git_command(req, "diff");
        c.args(["--cached", "--raw", "-z", "--no-abbrev", "--find-renames"]);
        c.arg("--diff-filter=AMRC");
        c
    } else {
        let mut c = git_command(req, "log");
        c.args([
            "--format=%x01%H",
            "--raw",
            "-z",
            "--no-abbrev",
            "--find-renames",
            "--no-color",
            "--diff-filter=AMRC",
        ]);
        c.args(&req.rev_args);
        c
    };
    cmd.arg("--")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run git: {e}; is git installed?"))?;
    if !out.status.success() {
        return Err(git_stderr_message(&out.stderr, out.status));
    }
    Ok(parse_raw(&out.stdout))
}

/// Reads `git log --format=%x01%H --raw -z` (or `git diff --raw -z`) output.
fn parse_raw(bytes: &[u8]) -> Vec<ChangedBlob> {
    let mut out = Vec::new();
    let mut commit = String::new();
    let mut tokens = bytes.split(|&b| b == 0);
    while let Some(token) = tokens.next() {
        let token = token.strip_prefix(b"\n").unwrap_or(token);
        if let Some(id) = token.strip_prefix(b"\x01") {
            commit = String::from_utf8_lossy(id).trim().to_string();
            continue;
        }
        let Some(header) = token.strip_prefix(b":") else {
            continue;
        };
        // `:old_mode new_mode old_id new_id status`, then one path (two for R and C).
        let header = String::from_utf8_lossy(header);
        let fields: Vec<&str> = header.split(' ').collect();
        let [_, new_mode, _, new_id, status] = fields[..] else {
            continue;
        };
        let mut path = tokens.next();
        if status.starts_with(['R', 'C']) {
            path = tokens.next();
        }
        let Some(path) = path else { break };
        // Regular files only (no symbolic links, no submodules).
        if !new_mode.starts_with("100") {
            continue;
        }
        let Ok(blob) = ObjectId::from_hex(new_id.as_bytes()) else {
            continue;
        };
        out.push(ChangedBlob {
            commit: commit.clone(),
            path: String::from_utf8_lossy(path).into_owned(),
            blob,
        });
    }
    out
}

/// The blobs among `changed` that are archives (by their first bytes), no larger than
/// `max_size`, with their content.
pub(crate) fn archive_blobs(
    req: &GitScanRequest,
    changed: Vec<ChangedBlob>,
    max_size: u64,
) -> Result<Vec<(ChangedBlob, Vec<u8>)>, String> {
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let objects = Objects::open(req)?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for c in changed {
        match objects.header(&c.blob)? {
            Some(h) if h.kind == gix_object::Kind::Blob && h.size <= max_size => {}
            _ => continue,
        }
        let Some(data) = objects.read(&c.blob, &mut buf)? else {
            continue;
        };
        if crate::archive::is_archive(data.data) {
            let data = data.data.to_vec();
            out.push((c, data));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_output_is_read_with_renames_and_without_links() {
        let a = "7b73c66e12bdfb29d8d2252d3886cf7103e5dc06";
        let b = "d5d0b8b4c4c9e9368908f0f6799cfbb5ba984470";
        let text = format!(
            "\x01c1\0\n:000000 100644 {z} {a} A\0x.zip\0\x01c2\0\n:100644 100644 {a} {b} R087\0\
             old.zip\0new.zip\0:000000 120000 {z} {b} A\0link\0:000000 100755 {z} {b} A\0run.gz\0",
            z = "0".repeat(40)
        );
        let got: Vec<(String, String)> = parse_raw(text.as_bytes())
            .into_iter()
            .map(|c| (c.commit, c.path))
            .collect();
        assert_eq!(
            got,
            vec![
                ("c1".to_string(), "x.zip".to_string()),
                ("c2".to_string(), "new.zip".to_string()),
                ("c2".to_string(), "run.gz".to_string()),
            ]
        );
    }
}
