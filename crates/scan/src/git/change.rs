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
//! [`MIN_DIFF_BYTES`] (the diff would cost what it saves), more than [`MAX_EDITS`] edits
//! between the two (a rewrite), or regions that cover more than half of the blob.

use std::ops::Range;

use crate::engine::Engine;

/// Blobs smaller than this are judged whole: the diff costs about what judging them does.
pub(crate) const MIN_DIFF_BYTES: usize = 2048;
/// Lines that are not blank kept as context on each side of a hunk.
pub(crate) const CONTEXT_LINES: usize = 3;
/// How far before and after a hunk a private key block's `-----BEGIN` / `-----END` is
/// looked for (an 8192-bit RSA key in PEM is about 6.5 KB).
pub(crate) const BLOCK_BYTES: usize = 16 * 1024;
/// More edits than this (lines added plus lines removed, after the common start and end)
/// and the blob is judged whole: the diff's cost grows with the product of edits and lines.
pub(crate) const MAX_EDITS: usize = 512;

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
    let old_lines = lines(old);
    let new_lines = lines(new);
    let hunks = hunks(old, &old_lines, new, &new_lines)?;
    let mut regions: Vec<Range<usize>> = Vec::new();
    let mut covered = 0usize;
    for h in hunks {
        let r = widen(new, &new_lines, h);
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

/// The lines of `data` as byte ranges, each with its `\n` (the last one may lack it).
fn lines(data: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(data.len() / 32 + 1);
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', data) {
        out.push(start..nl + 1);
        start = nl + 1;
    }
    if start < data.len() {
        out.push(start..data.len());
    }
    out
}

/// The hunks of the diff from `old` to `new`, as ranges of new lines: the lines added, or an
/// empty range at the line before which old lines were removed. `None` past [`MAX_EDITS`].
fn hunks(
    old: &[u8],
    old_lines: &[Range<usize>],
    new: &[u8],
    new_lines: &[Range<usize>],
) -> Option<Vec<Range<usize>>> {
    let a = |i: usize| &old[old_lines[i].clone()];
    let b = |i: usize| &new[new_lines[i].clone()];
    // Common lines at the start and the end.
    let (n, m) = (old_lines.len(), new_lines.len());
    let mut pre = 0;
    while pre < n && pre < m && a(pre) == b(pre) {
        pre += 1;
    }
    let mut suf = 0;
    while suf < n - pre && suf < m - pre && a(n - 1 - suf) == b(m - 1 - suf) {
        suf += 1;
    }
    let (n_mid, m_mid) = (n - pre - suf, m - pre - suf);
    if n_mid == 0 && m_mid == 0 {
        return Some(Vec::new());
    }
    if n_mid == 0 || m_mid == 0 {
        return Some(std::iter::once(pre..pre + m_mid).collect());
    }
    // Each line's hash first: most lines the diff compares differ, and differ there.
    let xs: Vec<u64> = (pre..n - suf).map(|i| line_hash(a(i))).collect();
    let ys: Vec<u64> = (pre..m - suf).map(|j| line_hash(b(j))).collect();
    let same = |x: usize, y: usize| xs[x] == ys[y] && a(pre + x) == b(pre + y);
    let edits = myers(n_mid, m_mid, same, MAX_EDITS)?;
    // Added new lines and seams, in new-line coordinates, grouped into hunks.
    let mut out: Vec<Range<usize>> = Vec::new();
    for e in edits {
        let r = match e {
            Edit::Insert(j) => pre + j..pre + j + 1,
            Edit::Delete(j) => pre + j..pre + j,
        };
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    Some(out)
}

/// One edit of the script from `xs` to `ys`: the line `ys[j]` added, or old lines removed
/// before `ys[j]` (at `ys.len()`: at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    Insert(usize),
    Delete(usize),
}

/// A line's hash (word at a time, multiply and rotate: not for adversaries, only to skip
/// comparing lines that differ; equal hashes are compared byte for byte).
fn line_hash(line: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = line.len() as u64;
    let mut words = line.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
    }
    let mut b = [0u8; 8];
    b[..words.remainder().len()].copy_from_slice(words.remainder());
    (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K)
}

/// Myers' greedy diff of `n` old lines and `m` new ones, `same(x, y)` saying whether old
/// line `x` equals new line `y`: the edits in order of their place in the new lines, or
/// `None` when there are more than `max_edits`.
fn myers(
    n: usize,
    m: usize,
    same: impl Fn(usize, usize) -> bool,
    max_edits: usize,
) -> Option<Vec<Edit>> {
    let dmax = (n + m).min(max_edits) as isize;
    let (n, m) = (n as isize, m as isize);
    let off = dmax + 1;
    let mut v = vec![0isize; (2 * dmax + 3) as usize];
    // `trace[d]`: V after step d, for k in -d..=d.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut end = None;
    'outer: for d in 0..=dmax {
        for k in (-d..=d).step_by(2) {
            let down = k == -d || (k != d && v[(off + k - 1) as usize] < v[(off + k + 1) as usize]);
            let mut x = if down {
                v[(off + k + 1) as usize]
            } else {
                v[(off + k - 1) as usize] + 1
            };
            let mut y = x - k;
            while x < n && y < m && same(x as usize, y as usize) {
                x += 1;
                y += 1;
            }
            v[(off + k) as usize] = x;
            if x >= n && y >= m {
                trace.push(v[(off - d) as usize..=(off + d) as usize].to_vec());
                end = Some(d);
                break 'outer;
            }
        }
        trace.push(v[(off - d) as usize..=(off + d) as usize].to_vec());
    }
    let dend = end?;
    // Back from (n, m): at each step d, the move that led onto diagonal k.
    let mut edits = Vec::with_capacity(dend as usize);
    let (mut x, mut y) = (n, m);
    for d in (1..=dend).rev() {
        let prev = &trace[(d - 1) as usize];
        let at = |k: isize| prev[(k + d - 1) as usize];
        let k = x - y;
        let down = k == -d || (k != d && at(k - 1) < at(k + 1));
        let pk = if down { k + 1 } else { k - 1 };
        let px = at(pk);
        let py = px - pk;
        if down {
            // From (px, py) down: ys[py] added.
            edits.push(Edit::Insert(py as usize));
        } else {
            // From (px, py) right: xs[px] removed, before ys[py].
            edits.push(Edit::Delete(py as usize));
        }
        x = px;
        y = py;
    }
    edits.reverse();
    Some(edits)
}

/// A hunk (new lines) widened to the byte range to judge: whole lines, [`CONTEXT_LINES`]
/// lines that are not blank each side plus the blank lines among them, and a private key
/// block around it whole.
fn widen(new: &[u8], lines: &[Range<usize>], hunk: Range<usize>) -> Range<usize> {
    let blank = |i: usize| new[lines[i].clone()].iter().all(u8::is_ascii_whitespace);
    // Before: back over CONTEXT_LINES lines that are not blank and any blank ones.
    let mut first = hunk.start.min(lines.len());
    let mut kept = 0;
    while first > 0 {
        let i = first - 1;
        if !blank(i) {
            if kept == CONTEXT_LINES {
                break;
            }
            kept += 1;
        }
        first = i;
    }
    let mut last = hunk.end.min(lines.len());
    let mut kept = 0;
    while last < lines.len() {
        if !blank(last) {
            if kept == CONTEXT_LINES {
                break;
            }
            kept += 1;
        }
        last += 1;
    }
    let mut start = lines.get(first).map_or(new.len(), |l| l.start);
    let mut end = if last == 0 { 0 } else { lines[last - 1].end };
    if end < start {
        end = start;
    }
    // Inside an open `-----BEGIN` block: back to the line it starts on.
    let before = &new[start.saturating_sub(BLOCK_BYTES)..start];
    if let Some(b) = memchr::memmem::rfind(before, b"-----BEGIN")
        && memchr::memmem::find(&before[b..], b"-----END").is_none()
    {
        let at = start - before.len() + b;
        start = new[..at]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |p| p + 1);
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
            let at = end + e;
            end = memchr::memchr(b'\n', &new[at..]).map_or(new.len(), |p| at + p + 1);
        }
    }
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// Applies the edit script's view: the new lines not added equal, in order, the old lines
    /// not removed.
    fn check_script(xs: &[u32], ys: &[u32]) -> usize {
        let edits = myers(xs.len(), ys.len(), |x, y| xs[x] == ys[y], usize::MAX).unwrap();
        let added: Vec<usize> = edits
            .iter()
            .filter_map(|e| match e {
                Edit::Insert(j) => Some(*j),
                Edit::Delete(_) => None,
            })
            .collect();
        let removed = edits.len() - added.len();
        let kept_new: Vec<u32> = (0..ys.len())
            .filter(|j| !added.contains(j))
            .map(|j| ys[j])
            .collect();
        assert_eq!(kept_new.len(), xs.len() - removed, "{xs:?} -> {ys:?}");
        // The kept new lines are a subsequence of the old ones of the same length.
        let mut it = xs.iter();
        for y in &kept_new {
            assert!(it.any(|x| x == y), "{xs:?} -> {ys:?}: {kept_new:?}");
        }
        edits.len()
    }

    #[test]
    fn the_edit_script_is_valid_and_minimal_on_small_cases() {
        assert_eq!(check_script(&[1, 2, 3], &[1, 2, 3]), 0);
        assert_eq!(check_script(&[], &[1, 2]), 2);
        assert_eq!(check_script(&[1, 2], &[]), 2);
        assert_eq!(check_script(&[1, 2, 3], &[1, 4, 3]), 2);
        assert_eq!(check_script(&[1, 2, 3, 4, 5], &[2, 3, 9, 5, 6]), 4);
        // Every pair of short sequences over a small alphabet: valid scripts, and their
        // length is n + m - 2 * LCS.
        let mut seqs: Vec<Vec<u32>> = vec![vec![]];
        for len in 1..=4 {
            let mut next = Vec::new();
            for s in seqs.iter().filter(|s| s.len() == len - 1) {
                for c in 0..3 {
                    let mut t = s.clone();
                    t.push(c);
                    next.push(t);
                }
            }
            seqs.extend(next);
        }
        for a in &seqs {
            for b in &seqs {
                let d = check_script(a, b);
                assert_eq!(d, a.len() + b.len() - 2 * lcs(a, b), "{a:?} -> {b:?}");
            }
        }
    }

    fn lcs(a: &[u32], b: &[u32]) -> usize {
        let mut t = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for i in 0..a.len() {
            for j in 0..b.len() {
                t[i + 1][j + 1] = if a[i] == b[j] {
                    t[i][j] + 1
                } else {
                    t[i][j + 1].max(t[i + 1][j])
                };
            }
        }
        t[a.len()][b.len()]
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
