//! Judging a new blob by what changed from the blob its path had in the parent commit.
//!
//! The history scan of a push asks [`Engine::may_find`] of every new blob that new commits
//! bring in, and shows as patches only the commits that bring in a blob for which it says
//! yes; the patch scan then finds what the commit's *added lines* hold. A new version of a
//! file differs from the version before in a few places: judging the whole blob again read
//! every unchanged line once per version (most of a push's scan). Here a blob whose path had
//! a blob in the parent commit is judged only around where it differs from that parent blob:
//!
//! - the two blobs are compared line by line (lines end at `\n`, as in git's diff): common
//!   lines at the start and the end are set aside, the rest is diffed (Myers' O(ND) diff,
//!   lines compared by a hash first) into hunks: the new lines that are not the parent's, and the places in
//!   the new blob where parent lines were removed (the lines around such a seam are new
//!   neighbours);
//! - each hunk is widened to whole lines, by [`CONTEXT_LINES`] lines that are not blank on
//!   each side, and over every blank (whitespace-only) line among them (`\s+` in a rule may
//!   span any run of blank lines, so blank lines are free). The patch scan that follows sees
//!   only the lines git's diff shows as added, so a match it can make lies in those lines;
//!   the context is for where git's diff puts a hunk's edge a few lines away from this one
//!   (its slider heuristics move a hunk over lines equal to its own, its treatment of
//!   frequent lines, `diff.algorithm`), and for what a rule looks at just outside a match
//!   (`\b`, a line's end); and it makes a secret split over a changed line and the lines
//!   next to it (a key on one line, its value on the next) be judged as a whole;
//! - a hunk inside a `-----BEGIN … -----END` block (a private key: its one rule spans the
//!   whole block) is widened to the whole block, found within [`BLOCK_BYTES`] either side;
//! - the regions, joined in order, are judged as one text, as the patch scan joins the lines
//!   a commit adds to a file into one fragment (a rule's keyword may sit in one hunk and its
//!   match in another: keywords are looked for in the whole fragment).
//!
//! What "already judged" means: text outside every region is the parent blob's text, with
//! the same lines around it. The parent blob is either new in the same push (then it is
//! judged itself, and the commit that brings it in is shown when it may hold a finding) or
//! one the upstream already has (accepted by an earlier push). Either way that text is not
//! new: the only findings a region judge can lose against the whole-blob judge are lines
//! git's diff would show as added though they are unchanged from the parent with the same
//! neighbours (git re-adding lines its heuristics could not match), and those are not new
//! secrets.
//!
//! The whole blob is judged when unsure: a blob with a NUL byte (UTF-16 text, binary data:
//! lines cut at `\n` may split a UTF-16 character), a blob smaller than
//! [`MIN_DIFF_BYTES`] (the diff would cost what it saves), a change the diff does not see the
//! end of within [`RESYNC_LINES`] (a rewrite), or regions that cover more than half of the
//! blob.

use std::ops::Range;

use crate::engine::Engine;

/// Blobs smaller than this are judged whole: the diff costs about what judging them does.
pub(crate) const MIN_DIFF_BYTES: usize = 2048;
/// Lines that are not blank kept as context on each side of a hunk.
pub(crate) const CONTEXT_LINES: usize = 3;
/// How far before and after a hunk a private key block's `-----BEGIN` / `-----END` is
/// looked for (an 8192-bit RSA key in PEM is about 6.5 KB).
pub(crate) const BLOCK_BYTES: usize = 16 * 1024;
/// Where the two blobs differ, how far (old and new lines together) the place where they
/// agree again is looked for in every combination of lines removed and added; past it,
/// only lines added alone or removed alone, up to [`RESYNC_ONE_SIDE`]; past that the blob
/// is judged whole (a rewrite).
pub(crate) const RESYNC_LINES: usize = 48;
/// See [`RESYNC_LINES`].
pub(crate) const RESYNC_ONE_SIDE: usize = 2048;

/// Whether `new`, whose path had `old` in the parent commit, may hold a finding where it
/// differs from `old` (see the module doc): [`Engine::may_find`] of the changed regions
/// joined, or of the whole blob when unsure.
pub(crate) fn may_find_change(engine: &Engine, old: &[u8], new: &[u8]) -> bool {
    match changed_regions(old, new) {
        Some(regions) => match regions.as_slice() {
            [] => false,
            [one] => engine.may_find(&new[one.clone()]),
            more => engine.may_find(&joined(new, more)),
        },
        None => engine.may_find(new),
    }
}

/// The regions of `data` one after the other, each ending with a line end.
fn joined(data: &[u8], regions: &[Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(regions.iter().map(|r| r.len() + 1).sum());
    for r in regions {
        out.extend_from_slice(&data[r.clone()]);
        if out.last().is_some_and(|&b| b != b'\n') {
            out.push(b'\n');
        }
    }
    out
}

/// The byte ranges of `new` to judge, in order and apart; `None` when the whole blob is to
/// be judged. Empty when nothing changed.
pub(crate) fn changed_regions(old: &[u8], new: &[u8]) -> Option<Vec<Range<usize>>> {
    if new.len() < MIN_DIFF_BYTES
        || memchr::memchr(0, new).is_some()
        || memchr::memchr(0, old).is_some()
    {
        return None;
    }
    let blocks = memchr::memmem::find(new, b"-----BEGIN").is_some();
    let mut regions: Vec<Range<usize>> = Vec::new();
    let mut covered = 0usize;
    for (_, h) in hunks(old, new)? {
        let r = widen(new, h, blocks);
        match regions.last_mut() {
            // Overlapping or touching: one region.
            Some(last) if r.start <= last.end => {
                covered += r.end.saturating_sub(last.end);
                last.end = last.end.max(r.end);
            }
            _ => {
                covered += r.len();
                regions.push(r);
            }
        }
        if covered * 2 > new.len() {
            return None;
        }
    }
    Some(regions)
}

/// How many bytes `a` and `b` have in common at their start.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 64;
    let n = a.len().min(b.len());
    let mut i = 0;
    // Whole blocks compared at once (memcmp), then the block that differs byte by byte.
    while i + BLOCK <= n && a[i..i + BLOCK] == b[i..i + BLOCK] {
        i += BLOCK;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// The line of `data` that starts at `at`: up to and with its `\n` (or the end).
fn line_end(data: &[u8], at: usize) -> usize {
    memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |p| at + p + 1)
}

/// Line starts from `at` on, found as they are asked for: `get(i)` is where line `i` (after
/// `at`) starts, `data.len()` past the last line.
struct LineStarts<'a> {
    data: &'a [u8],
    starts: Vec<usize>,
}

impl<'a> LineStarts<'a> {
    fn new(data: &'a [u8], at: usize) -> Self {
        Self {
            data,
            starts: vec![at],
        }
    }

    fn get(&mut self, i: usize) -> usize {
        while self.starts.len() <= i {
            let last = *self.starts.last().unwrap_or(&self.data.len());
            let next = if last >= self.data.len() {
                self.data.len()
            } else {
                line_end(self.data, last)
            };
            self.starts.push(next);
        }
        self.starts[i]
    }

    /// Line `i`'s bytes (empty past the end).
    fn line(&mut self, i: usize) -> &'a [u8] {
        let (s, e) = (self.get(i), self.get(i + 1));
        &self.data[s..e]
    }
}

/// The hunks of an edit script from `old` to `new`, as line-aligned byte ranges (old, new):
/// the old lines removed and the new lines put in their place (either may be empty). Not
/// the shortest script, but a valid one: the text between hunks is the same in both, in
/// order. Common text is skipped by comparing bytes a block at a time; where the two differ,
/// the nearest place where two lines in a row agree again (or both blobs end) is looked
/// for, nearest first (see [`RESYNC_LINES`]); `None` when it is not found.
fn hunks(old: &[u8], new: &[u8]) -> Option<Vec<(Range<usize>, Range<usize>)>> {
    let mut out = Vec::new();
    let (mut o, mut n) = (0usize, 0usize);
    loop {
        let k = common_prefix(&old[o..], &new[n..]);
        if o + k == old.len() && n + k == new.len() {
            return Some(out);
        }
        // Back to the start of the line where they differ (the same bytes on both sides).
        let back = memchr::memrchr(b'\n', &new[n..n + k]).map_or(0, |p| p + 1);
        o += back;
        n += back;
        // The nearest (a, b), a old lines and b new lines on, where they agree again.
        let mut ol = LineStarts::new(old, o);
        let mut nl = LineStarts::new(new, n);
        let mut found = None;
        'search: for d in 1..=RESYNC_ONE_SIDE {
            for a in 0..=d {
                let b = d - a;
                if d > RESYNC_LINES && a != 0 && b != 0 {
                    continue;
                }
                let (oa, nb) = (ol.get(a), nl.get(b));
                if oa == old.len() && nb == new.len() {
                    found = Some((a, b));
                    break 'search;
                }
                if oa == old.len() || nb == new.len() {
                    // One side ended there: the other's lines on cannot agree with nothing.
                    continue;
                }
                if ol.line(a) == nl.line(b) && ol.line(a + 1) == nl.line(b + 1) {
                    found = Some((a, b));
                    break 'search;
                }
            }
        }
        let (a, b) = found?;
        let (oa, nb) = (ol.get(a), nl.get(b));
        out.push((o..oa, n..nb));
        o = oa;
        n = nb;
    }
}

/// A hunk (new bytes, whole lines) widened to the byte range to judge: [`CONTEXT_LINES`]
/// lines that are not blank each side plus the blank lines among them, and, where `blocks`
/// (the blob has a `-----BEGIN`), a private key block around it whole.
fn widen(new: &[u8], hunk: Range<usize>, blocks: bool) -> Range<usize> {
    let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
    // Before: back over CONTEXT_LINES lines that are not blank and any blank ones.
    let mut start = hunk.start;
    let mut kept = 0;
    while start > 0 {
        let prev = memchr::memrchr(b'\n', &new[..start - 1]).map_or(0, |p| p + 1);
        if !blank(&new[prev..start]) {
            if kept == CONTEXT_LINES {
                break;
            }
            kept += 1;
        }
        start = prev;
    }
    let mut end = hunk.end;
    let mut kept = 0;
    while end < new.len() {
        let next = line_end(new, end);
        if !blank(&new[end..next]) {
            if kept == CONTEXT_LINES {
                break;
            }
            kept += 1;
        }
        end = next;
    }
    if !blocks {
        return start..end;
    }
    // Inside an open `-----BEGIN` block: back to the line it starts on.
    let before = &new[start.saturating_sub(BLOCK_BYTES)..start];
    if let Some(b) = memchr::memmem::rfind(before, b"-----BEGIN")
        && memchr::memmem::find(&before[b..], b"-----END").is_none()
    {
        let at = start - before.len() + b;
        start = memchr::memrchr(b'\n', &new[..at]).map_or(0, |p| p + 1);
    }
    // A block open at the end of the region: on to the end of the line its END is on.
    let region = &new[start..end];
    let open = match (
        memchr::memmem::rfind(region, b"-----BEGIN"),
        memchr::memmem::rfind(region, b"-----END"),
    ) {
        (Some(b), Some(e)) => b > e,
        (Some(_), None) => true,
        _ => false,
    };
    if open {
        let after = &new[end..(end + BLOCK_BYTES).min(new.len())];
        if let Some(e) = memchr::memmem::find(after, b"-----END") {
            end = line_end(new, end + e);
        }
    }
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// Checks that `hunks` is a valid edit script from `old` to `new`: the text between
    /// hunks is the same on both sides, the hunks are whole lines; returns how many.
    fn check_script(old: &str, new: &str) -> usize {
        let hs = hunks(old.as_bytes(), new.as_bytes()).unwrap();
        let (mut o, mut n) = (0, 0);
        for (ho, hn) in &hs {
            assert_eq!(
                &old[o..ho.start],
                &new[n..hn.start],
                "{old:?} -> {new:?}: {hs:?}"
            );
            assert!(ho.start == 0 || old.as_bytes()[ho.start - 1] == b'\n');
            assert!(hn.start == 0 || new.as_bytes()[hn.start - 1] == b'\n');
            assert!(ho.start <= ho.end && hn.start <= hn.end);
            assert!(
                !(ho.is_empty() && hn.is_empty()),
                "{old:?} -> {new:?}: {hs:?}"
            );
            o = ho.end;
            n = hn.end;
        }
        assert_eq!(&old[o..], &new[n..], "{old:?} -> {new:?}: {hs:?}");
        hs.len()
    }

    #[test]
    fn the_hunks_are_a_valid_edit_script() {
        assert_eq!(check_script("a\nb\nc\n", "a\nb\nc\n"), 0);
        assert_eq!(check_script("", "a\nb\n"), 1);
        assert_eq!(check_script("a\nb\n", ""), 1);
        assert_eq!(check_script("a\nb\nc\nd\n", "a\nx\nc\nd\n"), 1);
        assert_eq!(check_script("a\nb\nc", "a\nb\nd"), 1);
        // Every pair of short texts over a small alphabet of lines (a last line with and
        // without its line end).
        let mut texts: Vec<String> = vec![String::new()];
        let mut last: Vec<String> = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for t in &last {
                if !t.is_empty() && !t.ends_with('\n') {
                    continue;
                }
                for c in ["a\n", "b\n", "\n", "c"] {
                    next.push(format!("{t}{c}"));
                }
            }
            texts.extend(next.iter().cloned());
            last = next;
        }
        for a in &texts {
            for b in &texts {
                check_script(a, b);
            }
        }
    }

    fn file(lines: usize, edit: impl Fn(usize) -> Option<String>) -> String {
        (0..lines)
            .map(|i| edit(i).unwrap_or_else(|| format!("line number {i} of a source file\n")))
            .collect()
    }

    #[test]
    fn a_small_edit_gives_a_small_region_with_its_context() {
        let old = file(200, |_| None);
        let new = file(200, |i| (i == 100).then(|| "changed line\n".to_string()));
        let regions = changed_regions(old.as_bytes(), new.as_bytes()).unwrap();
        assert_eq!(regions.len(), 1);
        let text = &new[regions[0].clone()];
        assert!(text.contains("changed line"));
        assert_eq!(text.lines().count(), 1 + 2 * CONTEXT_LINES, "{text}");
        assert!(text.starts_with(&format!("line number {} ", 100 - CONTEXT_LINES)));
        // Nothing changed: nothing to judge.
        assert_eq!(
            changed_regions(old.as_bytes(), old.as_bytes()),
            Some(vec![])
        );
        // Lines removed: the seam with its context.
        let cut = file(200, |_| None).replace("line number 50 of a source file\n", "");
        let regions = changed_regions(old.as_bytes(), cut.as_bytes()).unwrap();
        assert_eq!(regions.len(), 1);
        assert_eq!(cut[regions[0].clone()].lines().count(), 2 * CONTEXT_LINES);
    }

    #[test]
    fn blank_lines_do_not_count_as_context() {
        let old = file(200, |i| (i % 2 == 1).then(|| "   \n".to_string()));
        let new = file(200, |i| {
            if i == 100 {
                Some("changed line\n".into())
            } else {
                (i % 2 == 1).then(|| "\t\n".to_string())
            }
        });
        let regions = changed_regions(old.as_bytes(), new.as_bytes());
        // Every blank line changed too: more than half of the blob, judged whole.
        assert_eq!(regions, None);
        let new = file(200, |i| {
            if i == 100 {
                Some("changed line\n".into())
            } else {
                (i % 2 == 1).then(|| "   \n".to_string())
            }
        });
        let regions = changed_regions(old.as_bytes(), new.as_bytes()).unwrap();
        let text = &new[regions[0].clone()];
        let solid = text.lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(solid, 1 + 2 * CONTEXT_LINES, "{text}");
    }

    #[test]
    fn a_change_inside_a_private_key_block_widens_to_the_block() {
        let key = |body: &str| {
            let mut s = String::from("-----BEGIN RSA PRIVATE KEY-----\n");
            for i in 0..30 {
                s.push_str(&format!("{body}{i:02}{}\n", "A".repeat(60)));
            }
            s.push_str("-----END RSA PRIVATE KEY-----\n");
            s
        };
        let old = file(100, |i| (i == 50).then(|| key("MII")));
        let new = file(100, |i| {
            (i == 50).then(|| {
                key("MII").replace(
                    &format!("MII15{}", "A".repeat(60)),
                    &format!("XYZ15{}", "B".repeat(60)),
                )
            })
        });
        let regions = changed_regions(old.as_bytes(), new.as_bytes()).unwrap();
        assert_eq!(regions.len(), 1);
        let text = &new[regions[0].clone()];
        assert!(text.contains("-----BEGIN RSA PRIVATE KEY-----\n"), "{text}");
        assert!(text.contains("-----END RSA PRIVATE KEY-----\n"), "{text}");
    }

    #[test]
    fn unsure_cases_are_judged_whole() {
        let old = file(200, |_| None);
        // Small.
        assert_eq!(changed_regions(b"a\nb\n", b"a\nc\n"), None);
        // A NUL byte.
        let nul = file(200, |i| (i == 3).then(|| "x\0y\n".to_string()));
        assert_eq!(changed_regions(old.as_bytes(), nul.as_bytes()), None);
        // A rewrite.
        let other = file(200, |i| Some(format!("another line {i}\n")));
        assert_eq!(changed_regions(old.as_bytes(), other.as_bytes()), None);
    }
}
