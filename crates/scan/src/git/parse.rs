//! The `git log -p` parser: the lines each commit adds, per file, with their line numbers on
//! the new side, handed over in batches; it can stop at a planned commit (the split's second
//! half) while the stream follows the listed order.

use std::io::BufRead;
use std::sync::mpsc;

/// The added lines of one file in one commit.
#[derive(Debug, Default)]
pub(super) struct OwnedFragment {
    pub(super) commit: String,
    pub(super) path: String,
    pub(super) data: Vec<u8>,
    pub(super) line_map: Vec<u32>,
}

/// Where a stream's parser stops and what it checks on the way.
#[derive(Default)]
pub(super) struct ParsePlan {
    pub(super) batch_bytes: usize,
    /// The commits expected before `stop`, in order; a stream that shows anything else is read
    /// to its end instead.
    pub(super) expect: Vec<String>,
    /// The commit at which the stream is no longer read.
    pub(super) stop: Option<String>,
}

impl ParsePlan {
    pub(super) fn whole(batch_bytes: usize) -> Self {
        Self {
            batch_bytes,
            ..Self::default()
        }
    }
}

/// How a stream's parsing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ParseEnd {
    /// At the end of the output.
    Whole,
    /// At the planned stop.
    Stopped,
}

/// Parser state for one `git log -p` stream.
#[derive(Default)]
struct LogParser {
    commit: String,
    /// The current file's fragment (path empty until known).
    current: OwnedFragment,
    /// Inside a hunk (otherwise in a file header).
    in_hunk: bool,
    /// Number of parents in a combined diff (1 for a normal diff).
    parents: usize,
    /// Next line number on the new side.
    next_line: u32,
    batch: Vec<OwnedFragment>,
    batch_bytes: usize,
    /// Batches are handed over when they hold this many bytes.
    batch_limit: usize,
}

impl LogParser {
    fn flush_file(&mut self) {
        let f = std::mem::take(&mut self.current);
        if !f.data.is_empty() && !f.path.is_empty() {
            self.batch_bytes += f.data.len();
            self.batch.push(f);
        }
        self.in_hunk = false;
        self.parents = 1;
    }

    fn take_batch(&mut self) -> Option<Vec<OwnedFragment>> {
        if self.batch_bytes >= self.batch_limit {
            self.batch_bytes = 0;
            Some(std::mem::take(&mut self.batch))
        } else {
            None
        }
    }

    fn line(&mut self, line: &[u8]) {
        if let Some(rest) = line.strip_prefix(b"\0") {
            self.flush_file();
            self.commit = String::from_utf8_lossy(rest).trim().to_string();
            return;
        }
        if line.starts_with(b"diff --git ")
            || line.starts_with(b"diff --cc ")
            || line.starts_with(b"diff --combined ")
        {
            self.flush_file();
            self.current.commit = self.commit.clone();
            if let Some(p) = line
                .strip_prefix(b"diff --cc ")
                .or_else(|| line.strip_prefix(b"diff --combined "))
            {
                self.current.path = unquote(p);
            }
            return;
        }
        if !self.in_hunk {
            if let Some(p) = line.strip_prefix(b"+++ ") {
                if p != b"/dev/null" {
                    let p = unquote(p);
                    self.current.path = p.strip_prefix("b/").map(str::to_string).unwrap_or(p);
                }
                return;
            }
            if line.starts_with(b"@@") {
                self.hunk_header(line);
            }
            return;
        }
        if line.starts_with(b"@@") {
            self.hunk_header(line);
            return;
        }
        let n = self.parents;
        if line.len() < n {
            return;
        }
        let (prefix, content) = line.split_at(n);
        if prefix.iter().any(|&b| !matches!(b, b'+' | b'-' | b' ')) {
            // "\ No newline at end of file" and anything unexpected.
            return;
        }
        if prefix.contains(&b'-') {
            return;
        }
        if prefix.iter().all(|&b| b == b'+') {
            // Separators follow the lines kept so far, empty ones included, so that the n-th
            // line of the fragment is the n-th entry of its line map.
            if !self.current.line_map.is_empty() {
                self.current.data.push(b'\n');
            }
            self.current.data.extend_from_slice(content);
            self.current.line_map.push(self.next_line);
        }
        self.next_line = self.next_line.saturating_add(1);
    }

    /// `@@ -a,b +c,d @@` or `@@@ -a,b -c,d +e,f @@@`.
    fn hunk_header(&mut self, line: &[u8]) {
        let ats = line.iter().take_while(|&&b| b == b'@').count();
        self.parents = ats.saturating_sub(1).max(1);
        self.in_hunk = true;
        let text = String::from_utf8_lossy(line);
        self.next_line = text
            .split_whitespace()
            .skip(1)
            .find_map(|t| t.strip_prefix('+'))
            .and_then(|t| t.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
    }
}

/// What the reading loop does after a line.
enum Step {
    Go,
    /// The planned stop was reached.
    Stop,
    /// Nobody takes the batches any more.
    Quit,
}

/// Every fragment of `bytes` read as one whole `git log -p` stream, handed over in batches
/// of `batch_bytes` (the fuzz target's entry: the parser as the scanner drives it).
pub(crate) fn fragments(bytes: &[u8], batch_bytes: usize) -> Vec<OwnedFragment> {
    // A batch holds at least one line, so this many never blocks the parser.
    let (tx, rx) = mpsc::sync_channel(bytes.len() + 16);
    let _ = parse_log(bytes, &tx, &ParsePlan::whole(batch_bytes));
    drop(tx);
    rx.into_iter().flatten().collect()
}

/// Reads a `git log -p` stream to its end or to the plan's stop, sending batches to `tx`.
pub(super) fn parse_log<R: BufRead>(
    mut reader: R,
    tx: &mpsc::SyncSender<Vec<OwnedFragment>>,
    plan: &ParsePlan,
) -> std::io::Result<ParseEnd> {
    let mut p = LogParser {
        parents: 1,
        batch_limit: plan.batch_bytes,
        ..LogParser::default()
    };
    // Commits seen so far, while they follow the plan (`None` once the stream went its own way).
    let mut seen = plan.stop.as_ref().map(|_| 0usize);
    let mut step = |line: &[u8]| -> Step {
        if let (Some(n), Some(id)) = (seen, line.strip_prefix(b"\0")) {
            let id = id.trim_ascii();
            if let Some(want) = plan.expect.get(n) {
                seen = (want.as_bytes() == id).then_some(n + 1);
            } else if plan.stop.as_ref().is_some_and(|s| s.as_bytes() == id) {
                return Step::Stop;
            } else {
                seen = None;
            }
        }
        p.line(line);
        match p.take_batch().map(|batch| tx.send(batch)) {
            Some(Err(_)) => Step::Quit,
            _ => Step::Go,
        }
    };
    // Lines are handled where they sit in the read buffer; only a line cut by the buffer's end
    // is copied (into `partial`).
    let mut partial: Vec<u8> = Vec::new();
    let mut end = ParseEnd::Whole;
    'read: loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            if !partial.is_empty() {
                match step(&partial) {
                    Step::Go => {}
                    Step::Stop => end = ParseEnd::Stopped,
                    Step::Quit => return Ok(end),
                }
            }
            break;
        }
        let mut pos = 0;
        while let Some(nl) = memchr::memchr(b'\n', &chunk[pos..]) {
            let line = &chunk[pos..pos + nl];
            pos += nl + 1;
            let outcome = if partial.is_empty() {
                step(line)
            } else {
                partial.extend_from_slice(line);
                let o = step(&partial);
                partial.clear();
                o
            };
            match outcome {
                Step::Go => {}
                Step::Stop => {
                    end = ParseEnd::Stopped;
                    break 'read;
                }
                Step::Quit => return Ok(end),
            }
        }
        partial.extend_from_slice(&chunk[pos..]);
        let used = chunk.len();
        reader.consume(used);
    }
    p.flush_file();
    if !p.batch.is_empty() {
        let _ = tx.send(std::mem::take(&mut p.batch));
    }
    Ok(end)
}

/// Undoes git's C-style path quoting (`"b/a\tb"`); unquoted paths are returned as they are.
pub(super) fn unquote(p: &[u8]) -> String {
    let Some(inner) = p.strip_prefix(b"\"").and_then(|s| s.strip_suffix(b"\"")) else {
        return String::from_utf8_lossy(p).into_owned();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b != b'\\' || i + 1 >= inner.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let e = inner[i + 1];
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut k = 0;
                while k < 2 && i < inner.len() && (b'0'..=b'7').contains(&inner[i]) {
                    v = v * 8 + u32::from(inner[i] - b'0');
                    i += 1;
                    k += 1;
                }
                out.push(u8::try_from(v & 0xff).unwrap_or(b'?'));
            }
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::BATCH_BYTES;
    use pretty_assertions::assert_eq;
    use std::io::BufReader;

    fn parse(text: &str) -> Vec<(String, String, String, Vec<u32>)> {
        let (tx, rx) = mpsc::sync_channel(100);
        parse_log(text.as_bytes(), &tx, &ParsePlan::whole(BATCH_BYTES)).unwrap();
        drop(tx);
        rx.into_iter()
            .flatten()
            .map(|f| {
                (
                    f.commit,
                    f.path,
                    String::from_utf8(f.data).unwrap(),
                    f.line_map,
                )
            })
            .collect()
    }

    #[test]
    fn parses_added_lines_with_line_numbers() {
        let log = "\0aaaa\n\ndiff --git a/x.txt b/x.txt\nindex 1..2 100644\n--- a/x.txt\n+++ b/x.txt\n@@ -2,0 +3,2 @@\n+one\n++++ two\n@@ -9 +10,0 @@\n-gone\n@@ -20,0 +21 @@\n+three\n\0bbbb\n\ndiff --git a/y b/y\nnew file mode 100644\n--- /dev/null\n+++ \"b/y\\tz\"\n@@ -0,0 +1 @@\n+why\n\\ No newline at end of file\n";
        assert_eq!(
            parse(log),
            vec![
                (
                    "aaaa".to_string(),
                    "x.txt".to_string(),
                    "one\n+++ two\nthree".to_string(),
                    vec![3, 4, 21]
                ),
                (
                    "bbbb".to_string(),
                    "y\tz".to_string(),
                    "why".to_string(),
                    vec![1]
                ),
            ]
        );
    }

    #[test]
    fn leading_empty_added_lines_keep_their_place() {
        let log =
            "\0aaaa\n\ndiff --git a/u b/u\n--- /dev/null\n+++ b/u\n@@ -0,0 +1,3 @@\n+\n+\n+three\n";
        assert_eq!(
            parse(log),
            vec![(
                "aaaa".to_string(),
                "u".to_string(),
                "\n\nthree".to_string(),
                vec![1, 2, 3]
            )]
        );
    }

    #[test]
    fn combined_diff_keeps_only_lines_new_to_every_parent() {
        let log = "\0mmmm\n\ndiff --cc f.txt\nindex 1,2..3\n--- a/f.txt\n+++ b/f.txt\n@@@ -1,1 -1,1 +1,3 @@@\n- left\n -right\n++evil\n+ fromright\n  both\n";
        assert_eq!(
            parse(log),
            vec![(
                "mmmm".to_string(),
                "f.txt".to_string(),
                "evil".to_string(),
                vec![1]
            )]
        );
    }

    #[test]
    fn deleted_files_and_pure_renames_add_nothing() {
        let log = "\0cccc\n\ndiff --git a/old b/new\nsimilarity index 100%\nrename from old\nrename to new\ndiff --git a/d b/d\ndeleted file mode 100644\n--- a/d\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n";
        assert_eq!(parse(log), vec![]);
    }

    #[test]
    fn lines_cut_by_the_read_buffer_parse_the_same() {
        let log = "\0aaaa\n\ndiff --git a/x.txt b/x.txt\n--- a/x.txt\n+++ b/x.txt\n@@ -2,0 +3,2 @@\n+one\n++++ two\n@@@ -1,1 -1,1 +1,3 @@@\n++evil\n\0bbbb\n\ndiff --git a/y b/y\n--- /dev/null\n+++ \"b/y\\tz\"\n@@ -0,0 +1 @@\n+why";
        let whole = parse(log);
        assert_eq!(whole.len(), 2);
        for cap in 1..12 {
            let (tx, rx) = mpsc::sync_channel(100);
            let reader = BufReader::with_capacity(cap, log.as_bytes());
            parse_log(reader, &tx, &ParsePlan::whole(BATCH_BYTES)).unwrap();
            drop(tx);
            let got: Vec<_> = rx
                .into_iter()
                .flatten()
                .map(|f| {
                    (
                        f.commit,
                        f.path,
                        String::from_utf8(f.data).unwrap(),
                        f.line_map,
                    )
                })
                .collect();
            assert_eq!(got, whole, "buffer of {cap}");
            let (tx, rx) = mpsc::sync_channel(100);
            let reader = BufReader::with_capacity(cap, log.as_bytes());
            let end = parse_log(reader, &tx, &plan(&["aaaa"], "bbbb")).unwrap();
            drop(tx);
            assert_eq!(end, ParseEnd::Stopped, "buffer of {cap}");
            assert_eq!(rx.into_iter().flatten().count(), 1, "buffer of {cap}");
        }
    }

    fn plan(expect: &[&str], stop: &str) -> ParsePlan {
        ParsePlan {
            batch_bytes: BATCH_BYTES,
            expect: expect.iter().map(|s| s.to_string()).collect(),
            stop: Some(stop.to_string()),
        }
    }

    fn parse_planned(text: &str, plan: &ParsePlan) -> (ParseEnd, Vec<String>) {
        let (tx, rx) = mpsc::sync_channel(100);
        let end = parse_log(text.as_bytes(), &tx, plan).unwrap();
        drop(tx);
        (end, rx.into_iter().flatten().map(|f| f.commit).collect())
    }

    #[test]
    fn planned_stream_stops_at_the_second_half_only_when_it_follows_the_list() {
        let log = "\0a1\n\ndiff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+one\n\0a2\n\ndiff --git a/y b/y\n--- a/y\n+++ b/y\n@@ -0,0 +1 @@\n+two\n\0a3\n\ndiff --git a/z b/z\n--- a/z\n+++ b/z\n@@ -0,0 +1 @@\n+three\n";
        assert_eq!(
            parse_planned(log, &plan(&["a1"], "a2")),
            (ParseEnd::Stopped, vec!["a1".to_string()])
        );
        assert_eq!(
            parse_planned(log, &plan(&["a1", "a2"], "a3")),
            (ParseEnd::Stopped, vec!["a1".to_string(), "a2".to_string()])
        );
        let all = vec!["a1".to_string(), "a2".to_string(), "a3".to_string()];
        // Another order than listed, or a stop that never comes: read to the end.
        assert_eq!(
            parse_planned(log, &plan(&["a2"], "a1")),
            (ParseEnd::Whole, all.clone())
        );
        assert_eq!(
            parse_planned(log, &plan(&["a1"], "a3")),
            (ParseEnd::Whole, all.clone())
        );
        assert_eq!(
            parse_planned(log, &plan(&["a1", "a2", "a3"], "a4")),
            (ParseEnd::Whole, all)
        );
    }
}
