//! Second looks at content that hides text: UTF-16 text, and base64, hex or percent-encoded
//! runs (what gitleaks does with `--max-decode-depth`), plus the shapes no scanner can read
//! (compressed archives, encrypted files).
//!
//! Why: a secret written as UTF-16, or encoded once, is the same secret; a rule that only sees
//! the raw bytes misses it. Decoding is kept off the common path: a run is decoded only when it
//! is long enough to hold a secret and looks like its encoding, and the decoded text is kept
//! only when it is mostly printable (random binary is thrown away at once).

use std::ops::Range;

use base64::Engine as _;

/// How many decoding passes run by default (gitleaks' `--max-decode-depth` default).
pub const DEFAULT_MAX_DECODE_DEPTH: usize = 5;

/// How a run was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Base64,
    Hex,
    Percent,
    Unicode,
}

/// One encoded run and what it decodes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// Where the encoded run sits in the scanned bytes.
    pub span: Range<usize>,
    /// How it was encoded.
    pub encoding: Encoding,
    /// The decoded text.
    pub text: Vec<u8>,
}

/// The bytes of UTF-16 text with its zero bytes dropped, when at least a quarter of the data
/// is zero bytes (ASCII text as UTF-16, little or big endian, lines kept where they were).
/// Secrets are ASCII, so dropping the zero half of each code unit restores them.
pub(crate) fn utf16_text(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 8 {
        return None;
    }
    let zeros = quarter_zeros(data)?;
    Some(without_zeros(data, data.len() - zeros))
}

/// How many zero bytes `data` holds, when they are at least a quarter of it.
///
/// Counted 4 KiB at a time, and given up as soon as the bytes left could not make up a
/// quarter: text holds no zero bytes, and its last quarter is not read. With AVX-512, 64
/// bytes an instruction (`memchr`'s count otherwise).
fn quarter_zeros(data: &[u8]) -> Option<usize> {
    const CHUNK: usize = 4096;
    // `zeros * 4 >= len`, in whole bytes.
    let need = data.len().div_ceil(4);
    #[cfg(target_arch = "x86_64")]
    let avx512 = std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("popcnt");
    let count = |chunk: &[u8]| {
        #[cfg(target_arch = "x86_64")]
        if avx512 {
            // SAFETY: the processor runs AVX-512BW and POPCNT (detected above).
            return unsafe { avx512::count_zeros(chunk) };
        }
        memchr::memchr_iter(0, chunk).count()
    };
    let (mut zeros, mut left) = (0, data.len());
    for chunk in data.chunks(CHUNK) {
        zeros += count(chunk);
        left -= chunk.len();
        if zeros + left < need {
            return None;
        }
    }
    Some(zeros)
}

/// `data` without its zero bytes (`kept`: how many are not zero).
///
/// Why not a filter: every byte was a branch on whether it is zero, which the processor
/// cannot guess in binary files (most of the files at least a quarter zeros), and a push
/// that checked the capacity (4.75% of a registry scan's samples); here each byte is written
/// and the next one written over it when it was a zero, without a branch.
///
/// Eight bytes at a time first: in the cargo registry's binary files (import libraries,
/// most of them) 4 words of 8 bytes in 10 are all zeros (dropped at once) or hold none
/// (copied at once); the others go a byte at a time. With AVX-512 (VBMI2), 64 bytes at a
/// time: the bytes that are not zero packed together by one instruction (`vpcompressb`)
/// and stored where the last block's ended.
fn without_zeros(data: &[u8], kept: usize) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vbmi2")
        && std::arch::is_x86_feature_detected!("popcnt")
    {
        // SAFETY: the processor runs AVX-512BW, AVX-512VBMI2 and POPCNT (detected just
        // above).
        return unsafe { avx512::without_zeros(data, kept) };
    }
    without_zeros_words(data, kept)
}

/// [`without_zeros`] eight bytes at a time, then a byte at a time (processors without
/// AVX-512, and the end of the data after the blocks of 64).
fn without_zeros_words(data: &[u8], kept: usize) -> Vec<u8> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut out = vec![0u8; kept + 1];
    let mut j = 0;
    let mut words = data.chunks_exact(8);
    for word in words.by_ref() {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let v = u64::from_le_bytes(w);
        if v == 0 {
            continue;
        }
        // (the classic test: some byte of `v` is zero)
        if v.wrapping_sub(ONES) & !v & HIGHS == 0 {
            // eight bytes that are not zero: `j + 8 <= kept`
            out[j..j + 8].copy_from_slice(word);
            j += 8;
            continue;
        }
        for &b in word {
            // `j <= kept` always: it counts the non-zero bytes before this one.
            out[j.min(kept)] = b;
            j += usize::from(b != 0);
        }
    }
    for &b in words.remainder() {
        out[j.min(kept)] = b;
        j += usize::from(b != 0);
    }
    out.truncate(kept);
    out
}

const B64: u8 = 1;
const HEX: u8 = 2;
/// `%` and `\`, where the escapes start.
const ESCAPE: u8 = 8;

/// Byte classes: the base64 alphabet (standard and URL-safe: the candidate pattern's
/// `[\w/+-]`), hex digits (in it too) flagged apart.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'-' || b == b'_' {
            t[i] = B64;
        }
        if b.is_ascii_hexdigit() {
            t[i] |= HEX;
        }
        if b == b'%' || b == b'\\' {
            t[i] = ESCAPE;
        }
        i += 1;
    }
    t
};

/// The candidate runs, as gitleaks finds them: in this order of precedence, percent escapes
/// (from the first to the last escape of a line), Unicode escapes (`\uXXXX`, `U+XXXX`), hex
/// (32 digits or more) and base64 (16 characters or more, standard or URL-safe). The
/// reference [`candidate_runs`] must agree with (it is what gitleaks' decoder runs).
#[cfg(test)]
fn candidates() -> &'static regex::bytes::Regex {
    static RE: std::sync::OnceLock<regex::bytes::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::bytes::RegexBuilder::new(concat!(
            r"%[0-9A-Fa-f]{2}(?:.*%[0-9A-Fa-f]{2})?",
            r"|(?:U\+[a-fA-F0-9]{4}(?:\s|$))+|(?i:(?:\\{1,2}u[a-fA-F0-9]{4})+)",
            r"|[0-9A-Fa-f]{32,}",
            r"|[\w/+-]{16,}={0,2}",
        ))
        .unicode(false)
        .build()
        .unwrap_or_else(|e| unreachable!("the candidate pattern is valid: {e}"))
    })
}

/// A run of `U+XXXX` code points, whole (tells the Unicode alternative from base64).
#[cfg(test)]
fn unicode_points() -> &'static regex::bytes::Regex {
    static RE: std::sync::OnceLock<regex::bytes::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::bytes::RegexBuilder::new(r"^(?:U\+[a-fA-F0-9]{4}(?:\s|$))+$")
            .unicode(false)
            .build()
            .unwrap_or_else(|e| unreachable!("the code point pattern is valid: {e}"))
    })
}

/// Finds the encoded runs of `data` that decode to printable text (one decoding pass of
/// gitleaks' decoder, plus base64 wrapped over several lines decoded as one block).
pub(crate) fn encoded_runs(data: &[u8]) -> Vec<Decoded> {
    decode_runs(data, &candidate_runs(data, true))
}

/// The candidate runs `found` of `data` decoded, as [`encoded_runs`] keeps them.
fn decode_runs(data: &[u8], found: &[(Range<usize>, Encoding)]) -> Vec<Decoded> {
    let mut out = Vec::new();
    if found.is_empty() {
        return out;
    }
    let mut skip_to = 0usize;
    let mut blocks = WrappedBlocks::default();
    let mut scratch = Vec::new();
    // As gitleaks: a candidate touching a neighbour of higher precedence (a base64 run cut by
    // a `%XX` escape) waits for the next pass, when the escape is decoded and the run whole.
    let touches = |a: &Range<usize>, b: &Range<usize>| b.start <= a.end && b.end >= a.start;
    for (i, (span, kind)) in found.iter().enumerate() {
        let outranked = |j: usize| {
            found
                .get(j)
                .is_some_and(|(o, k)| touches(span, o) && precedence(*k) > precedence(*kind))
        };
        if (i > 0 && outranked(i - 1)) || outranked(i + 1) || span.start < skip_to {
            continue;
        }
        let run = &data[span.clone()];
        let text = match kind {
            Encoding::Percent => decode_percent(run),
            Encoding::Unicode => decode_unicode(run),
            Encoding::Hex => decode_hex(run),
            Encoding::Base64 => {
                let bare = run.len() - run.iter().rev().take_while(|&&b| b == b'=').count();
                if let Some((text, to)) = blocks.wrapped_base64(data, span.start, span.start + bare)
                {
                    skip_to = to;
                    out.push(Decoded {
                        span: span.start..to,
                        encoding: Encoding::Base64,
                        text,
                    });
                    continue;
                }
                decode_base64(run, &mut scratch)
            }
        };
        if let Some(text) = text.filter(|t| !t.is_empty() && t.as_slice() != run) {
            out.push(Decoded {
                span: span.clone(),
                encoding: *kind,
                text,
            });
        }
    }
    out
}

/// The candidate runs of `data` and their kinds: what `candidates()` (gitleaks' pattern)
/// finds, left to right, found by hand.
///
/// Why not the pattern: it has no literal to look for, so its automaton walks every byte
/// forwards and every match backwards again; with an identifier of 16 characters on most
/// lines of code that was a sixth of a whole scan. Here one walk of the bytes, with the
/// pattern's rules of precedence: at the leftmost position where some alternative matches,
/// the first alternative in the pattern's order wins (percent escapes, `U+XXXX` code points,
/// `\uXXXX` escapes, 32 hex digits, 16 base64 characters), and the next search starts where
/// that match ends. Unit test `the_hand_search_finds_what_the_pattern_finds` compares both.
///
/// The walk does not look at every byte: from a byte outside the alphabet that holds no
/// escape, it jumps to the next place where something can start ([`Starts`], 64 bytes at a
/// time), passing over the words of ordinary text and the bytes between them in a few bit
/// operations; the byte-at-a-time walk (`candidate_runs_bytewise`, the reference of unit
/// test `the_skipping_walk_finds_what_the_bytewise_walk_finds`) does the same steps.
///
/// `prune`: without the base64 runs [`encoded_runs`] would turn down at once, shorter than
/// a wrapped line (so [`WrappedBlocks::wrapped_base64`] finds nothing) and
/// [`base64_turned_down`]. Dropping them changes nothing in what `encoded_runs` finds: such
/// a run decodes to nothing, sets nothing, and outranks nothing (base64 comes last), and the
/// runs on either side of it cannot touch each other across it (unit test
/// `pruned_runs_decode_as_all_runs_do`). Why: most candidates in source code are such
/// identifiers, each pushed and looked at again for nothing.
fn candidate_runs(data: &[u8], prune: bool) -> Vec<(Range<usize>, Encoding)> {
    let simd = Simd::detect();
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx512 {
        // SAFETY: `Simd::Avx512` is chosen only where the processor runs AVX-512BW,
        // AVX-512VBMI, BMI1, BMI2 and POPCNT (`Simd::detect`).
        return unsafe { avx512::candidate_runs(data, prune) };
    }
    candidate_runs_with(data, simd, prune)
}

/// [`candidate_runs`] with the masks of `simd` (inlined into each caller: compiled for
/// AVX-512 in [`avx512::candidate_runs`]).
#[inline(always)]
fn candidate_runs_with(data: &[u8], simd: Simd, prune: bool) -> Vec<(Range<usize>, Encoding)> {
    let n = data.len();
    let mut out = Vec::new();
    let mut starts = Starts::new(data, simd, prune);
    let mut i = 0;
    while i < n {
        let c = CLASS[usize::from(data[i])];
        if c & B64 != 0 {
            // The run's end and its hex digits' end from the blocks' masks (64 bytes a step)
            // instead of byte by byte.
            let run_end = starts.run_end(i, |m| m.alpha);
            let hex_end = if run_end - i >= 16 {
                starts.run_end(i, |m| m.hex).min(run_end)
            } else {
                i
            };
            i = alpha_run_step(data, i, run_end, &mut out, hex_end, prune);
            continue;
        }
        if c & ESCAPE != 0 {
            i = candidate_step(data, i, &mut out);
            continue;
        }
        // A byte outside the alphabet without an escape: every run of the alphabet after it
        // starts after such a byte, so the walk's next step that finds something is at an
        // escape that starts a candidate, at the start of a run of 16, or at the start of a
        // short run where a code point (`U+XXXX`) starts; the bytes, escapes and short runs
        // before it are passed over.
        match starts.next_after(i) {
            Some(q) => i = q,
            None => break,
        }
    }
    out
}

/// The byte-at-a-time walk [`candidate_runs`] skips through (its reference in tests).
#[cfg(test)]
fn candidate_runs_bytewise(data: &[u8]) -> Vec<(Range<usize>, Encoding)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        i = candidate_step(data, i, &mut out);
    }
    out
}

/// One step of the candidate walk at `i` (a byte, or the run of the alphabet starting at
/// it): pushes the candidate found there, if any, and returns where the walk goes on.
fn candidate_step(data: &[u8], mut i: usize, out: &mut Vec<(Range<usize>, Encoding)>) -> usize {
    let n = data.len();
    let c = CLASS[usize::from(data[i])];
    if c & B64 == 0 {
        // Only the escapes start outside the base64 alphabet.
        if c & ESCAPE != 0 {
            let (end, kind) = if data[i] == b'%' {
                (percent_at(data, i), Encoding::Percent)
            } else {
                (escapes_at(data, i), Encoding::Unicode)
            };
            if let Some(e) = end {
                out.push((i..e, kind));
                return e;
            }
        }
        return i + 1;
    }
    // A run of the alphabet from `i`.
    let start = i;
    i += 1;
    while i < n && CLASS[usize::from(data[i])] & B64 != 0 {
        i += 1;
    }
    let hex_end = data[start..i]
        .iter()
        .position(|&b| CLASS[usize::from(b)] & HEX == 0)
        .map_or(i, |p| start + p);
    alpha_run_step(data, start, i, out, hex_end, false)
}

/// Where a base64 run of `data` that ends at `run_end` ends with its padding (up to two `=`).
#[inline(always)]
fn padded_end(data: &[u8], run_end: usize) -> usize {
    let mut e = run_end;
    while e < data.len() && e - run_end < 2 && data[e] == b'=' {
        e += 1;
    }
    e
}

/// The step of the candidate walk at `start`, the first byte of a run of the alphabet that
/// ends at `run_end`; `hex_end`: where the run's leading hex digits end (read for runs of 16
/// or more only). Inlined into the walk (a call for each run of 16 was a tenth of the
/// decoders' instructions on the DLP bench's source body).
#[inline(always)]
fn alpha_run_step(
    data: &[u8],
    start: usize,
    run_end: usize,
    out: &mut Vec<(Range<usize>, Encoding)>,
    hex_end: usize,
    prune: bool,
) -> usize {
    if run_end - start >= 16 {
        // A match starts here: code points (which cannot be followed by more of the
        // alphabet, so never here in fact), else hex, else base64.
        if let Some(e) = code_points_at(data, start) {
            out.push((start..e, Encoding::Unicode));
            return e;
        }
        if hex_end - start >= 32 {
            out.push((start..hex_end, Encoding::Hex));
            return hex_end;
        }
        let e = padded_end(data, run_end);
        if !(prune && run_end - start < MIN_WRAPPED_LINE && base64_turned_down(&data[start..e])) {
            out.push((start..e, Encoding::Base64));
        }
        return e;
    }
    // A run too short for hex or base64 (from any of its positions): only code points
    // (`U+`) can start in it.
    if memchr::memchr(b'+', &data[start..run_end]).is_some()
        && let Some((k, e)) = (start..run_end)
            .filter(|&k| data[k] == b'U')
            .find_map(|k| code_points_at(data, k).map(|e| (k, e)))
    {
        out.push((k..e, Encoding::Unicode));
        return e;
    }
    run_end
}

/// Where the candidate walk has something to do, found 64 bytes at a time: the escapes that
/// start one (`%` before two hex digits, `\` before `u` or `\u`, either case, and four hex
/// digits), the starts of runs of the base64 alphabet 16 bytes long or more, and the runs
/// holding a `U+XXXX` (a code point may start there). Each block's bytes are classified into
/// bit masks (AVX-512 on x86-64 processors that have it, else AVX2 or SSE2), runs of 16 are
/// found by shifting the alphabet's mask onto itself, and each `%`, `\` and `+` is looked at
/// with the bytes after it.
///
/// Why the escapes and `+` are looked at here: in source code most `\` start `\n` or `\"`,
/// most `%` a format, most `+` a sum; the walk went to each of them and stepped a byte
/// further to find nothing. Where a step finds nothing it goes on at the next byte, as at
/// any other byte outside the alphabet (or at its short run's end), so passing over it finds
/// the same.
struct Starts<'a> {
    data: &'a [u8],
    /// Which SIMD version computes the masks.
    simd: Simd,
    /// The block whose masks `cur` holds, and `next` the following block's.
    block: usize,
    cur: Masks,
    next: Masks,
    /// Where in block `block` the walk may have something to do (computed once per block:
    /// the walk asks again after each candidate, often several times in one block); the
    /// escapes and `+` that were looked at and start nothing are taken out.
    wanted: u64,
    /// The starts of runs of 16 or more in block `block` (without those [`Starts::load`]
    /// finds turned down, when pruning).
    long: u64,
    /// Whether the walk prunes (see [`candidate_runs`]).
    prune: bool,
}

/// Bit `j` of each mask stands for byte `j` of a block of 64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Masks {
    /// In the base64 alphabet (both alphabets: `[A-Za-z0-9+/_-]`).
    alpha: u64,
    /// `%` or `\`.
    escape: u64,
    /// `+`.
    plus: u64,
    /// Hex digits (`[0-9A-Fa-f]`).
    hex: u64,
}

/// The classes of [`Masks`], one bit each, of every byte below 128 (for the AVX-512 table
/// look-up, and the bytewise masks).
const M_ALPHA: u8 = 1;
const M_ESCAPE: u8 = 2;
const M_PLUS: u8 = 4;
const M_HEX: u8 = 8;

static MASK_CLASS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        let mut c = 0;
        if CLASS[i] & B64 != 0 {
            c |= M_ALPHA;
        }
        if CLASS[i] & ESCAPE != 0 {
            c |= M_ESCAPE;
        }
        if i == b'+' as usize {
            c |= M_PLUS;
        }
        if CLASS[i] & HEX != 0 {
            c |= M_HEX;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// The versions of [`block_masks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    /// AVX-512 with byte instructions and byte permutes (`avx512bw`, `avx512vbmi`), and the
    /// bit instructions every such processor has (`bmi1`, `bmi2`, `popcnt`: without them a
    /// bit count was a dozen instructions, a shift by a variable three).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Sse2,
    /// A byte at a time (other processors).
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    Bytewise,
}

impl Simd {
    /// The best version this processor runs.
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vbmi")
                && std::arch::is_x86_feature_detected!("bmi1")
                && std::arch::is_x86_feature_detected!("bmi2")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                return Simd::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Simd::Avx2;
            }
            Simd::Sse2
        }
        #[cfg(not(target_arch = "x86_64"))]
        Simd::Bytewise
    }
}

// The methods are inlined into the walk (`candidate_runs_with`), so that in the walk
// compiled for AVX-512 the masks' few instructions sit in the loop, without a call.
impl<'a> Starts<'a> {
    #[inline(always)]
    fn new(data: &'a [u8], simd: Simd, prune: bool) -> Self {
        Self {
            data,
            simd,
            block: usize::MAX,
            cur: Masks::default(),
            next: Masks::default(),
            wanted: 0,
            long: 0,
            prune,
        }
    }

    #[inline(always)]
    fn masks(&self, block: usize) -> Masks {
        let from = block.saturating_mul(64);
        if from >= self.data.len() {
            return Masks::default();
        }
        block_masks(self.simd, &self.data[from..self.data.len().min(from + 64)])
    }

    #[inline(always)]
    fn load(&mut self, block: usize) {
        if block == self.block {
            return;
        }
        // Runs that start in this block (a byte after one outside the alphabet; byte 0
        // of the block looks at the previous block's last byte: the top bit of its
        // alphabet mask when the walk comes from it).
        let before;
        (self.cur, before) = if self.block != usize::MAX && block == self.block + 1 {
            (self.next, self.cur.alpha >> 63)
        } else if block == 0 {
            (self.masks(block), 0)
        } else {
            let last = CLASS[usize::from(self.data[block * 64 - 1])] & B64 != 0;
            (self.masks(block), u64::from(last))
        };
        self.next = self.masks(block + 1);
        self.block = block;
        let alpha = self.cur.alpha;
        let run_starts = alpha & !((alpha << 1) | before);
        // Bit j: bytes j..j+16 are all of the alphabet (the next block's bytes count).
        let both = u128::from(alpha) | (u128::from(self.next.alpha) << 64);
        let mut long = both & (both >> 1);
        long &= long >> 2;
        long &= long >> 4;
        long &= long >> 8;
        self.long = run_starts & long as u64;
        // Bytes of the runs taken out of `long` (their `+` need not be looked at).
        let mut quiet = 0u64;
        if self.prune {
            let mut each = self.long;
            while each != 0 {
                let j = each.trailing_zeros();
                each &= each - 1;
                // The run's length, when it ends in this block or the next.
                let len = (!(both >> j)).trailing_zeros();
                if len < 32 && self.turned_down(block * 64 + j as usize, len as usize) {
                    self.long &= !(1u64 << j);
                    quiet |= (((1u128 << len) - 1) << j) as u64;
                }
            }
        }
        self.wanted = self.cur.escape | self.long | (self.cur.plus & !quiet);
    }

    /// Whether the walk's step at `start`, the first byte of a run of the alphabet `len`
    /// bytes long (16 to 31), finds nothing when pruning: too short for hex (32 digits) and
    /// for a wrapped line, the run (with up to two `=` after it) is a base64 run that
    /// [`base64_turned_down`] drops ([`alpha_run_step`]'s test, made here).
    ///
    /// Why here: most runs of 16 in source code are identifiers that are turned down (a
    /// length of 4n+1, a first character from which no group decodes to text); taken out of
    /// the block's wanted places when the block is loaded, the walk passes over them with
    /// the bytes around them instead of stopping at each, finding their ends and
    /// judging them there (the DLP bench's upload line holds one such run in each line).
    /// Passing over a run whose step finds nothing is what the walk does after that step
    /// (it goes on at the run's end, a byte outside the alphabet, or after its `=`).
    #[inline(always)]
    fn turned_down(&self, start: usize, len: usize) -> bool {
        base64_turned_down(&self.data[start..padded_end(self.data, start + len)])
    }

    /// The first position from `i` whose byte is not in the mask `which` picks (the data's
    /// length if none): the end of a run of the alphabet or of hex digits.
    #[inline(always)]
    fn run_end(&mut self, i: usize, which: impl Fn(&Masks) -> u64) -> usize {
        let n = self.data.len();
        let mut block = i / 64;
        let mut low = i % 64;
        while block.saturating_mul(64) < n {
            let m = if block == self.block {
                which(&self.cur)
            } else if self.block != usize::MAX && block == self.block + 1 {
                which(&self.next)
            } else {
                which(&self.masks(block))
            };
            // (a short last block's masks have no bits past the data's end)
            let gaps = !m & (u64::MAX << low);
            if gaps != 0 {
                return (block * 64 + gaps.trailing_zeros() as usize).min(n);
            }
            block += 1;
            low = 0;
        }
        n
    }

    /// The first position after `i` (a byte outside the alphabet) where the walk has
    /// something to do: an escape that starts a candidate, the start of a run of 16 or more,
    /// or the start of a short run where a code point (`U+XXXX`) starts.
    #[inline(always)]
    fn next_after(&mut self, i: usize) -> Option<usize> {
        let from = i + 1;
        let mut block = from / 64;
        let mut low = from % 64;
        while block.saturating_mul(64) < self.data.len() {
            self.load(block);
            let mut wanted = self.wanted & (u64::MAX << low);
            while wanted != 0 {
                let bit = 1u64 << wanted.trailing_zeros();
                wanted &= !bit;
                let at = block * 64 + bit.trailing_zeros() as usize;
                if self.long & bit != 0 || self.starts_here(at) {
                    return Some(at);
                }
                if self.data[at] == b'+'
                    && at > from
                    && self.data[at - 1] == b'U'
                    && code_points_at(self.data, at - 1).is_some()
                {
                    // The walk's step is at the start of the `+`'s run (after `i`: `i`
                    // is outside the alphabet).
                    let mut s = at - 1;
                    while s > from && CLASS[usize::from(self.data[s - 1])] & B64 != 0 {
                        s -= 1;
                    }
                    return Some(s);
                }
                // An escape or `+` that starts nothing: passed over from now on.
                self.wanted &= !bit;
            }
            block += 1;
            low = 0;
        }
        None
    }

    /// Whether the escape at `at` starts a candidate (`false` for other bytes).
    #[inline(always)]
    fn starts_here(&self, at: usize) -> bool {
        let hex = |k: usize| self.data.get(k).is_some_and(u8::is_ascii_hexdigit);
        match self.data[at] {
            b'%' => hex(at + 1) && hex(at + 2),
            b'\\' => escapes_at(self.data, at).is_some(),
            _ => false,
        }
    }
}

/// The masks of up to 64 bytes, with the version `simd` for a whole block.
#[inline(always)]
fn block_masks(simd: Simd, block: &[u8]) -> Masks {
    #[cfg(target_arch = "x86_64")]
    if let Ok(full) = <&[u8; 64]>::try_from(block) {
        match simd {
            // SAFETY: `Simd::Avx512` is chosen only where the processor runs AVX-512BW and
            // AVX-512VBMI (`Simd::detect`).
            Simd::Avx512 => return unsafe { avx512::block_masks(full) },
            // SAFETY: `Simd::Avx2` is chosen only where the processor runs AVX2.
            Simd::Avx2 => return unsafe { avx2::block_masks(full) },
            Simd::Sse2 => return block_masks_sse2(full),
            Simd::Bytewise => {}
        }
    }
    let _ = simd;
    block_masks_bytewise(block)
}

/// [`block_masks`] a byte at a time (a block's tail, other processors, and the reference
/// of the SIMD versions in tests).
fn block_masks_bytewise(block: &[u8]) -> Masks {
    let mut m = Masks::default();
    for (j, &b) in block.iter().enumerate().take(64) {
        let c = MASK_CLASS.get(usize::from(b)).copied().unwrap_or(0);
        m.alpha |= u64::from(c & M_ALPHA != 0) << j;
        m.escape |= u64::from(c & M_ESCAPE != 0) << j;
        m.plus |= u64::from(c & M_PLUS != 0) << j;
        m.hex |= u64::from(c & M_HEX != 0) << j;
    }
    m
}

/// [`block_masks`] of 64 bytes with SSE2 (part of every x86-64 processor).
#[cfg(target_arch = "x86_64")]
fn block_masks_sse2(block: &[u8; 64]) -> Masks {
    // SAFETY: SSE2 is part of the x86-64 baseline, so every x86-64 processor runs it.
    unsafe { sse2::block_masks(block) }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi8, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8,
    };

    use super::Masks;

    /// `lo <= x <= hi` for each byte: moved so that `lo` is -128, then one signed comparison.
    #[target_feature(enable = "sse2")]
    fn range(x: __m128i, lo: u8, hi: u8) -> __m128i {
        let shifted = _mm_add_epi8(x, _mm_set1_epi8(0x80u8.wrapping_sub(lo) as i8));
        _mm_cmplt_epi8(
            shifted,
            _mm_set1_epi8(0x80u8.wrapping_add(hi - lo + 1) as i8),
        )
    }

    #[target_feature(enable = "sse2")]
    fn eq(x: __m128i, b: u8) -> __m128i {
        _mm_cmpeq_epi8(x, _mm_set1_epi8(b as i8))
    }

    // (never inlined: the walk's code, with its AVX2 and SSE2 masks in one loop, is kept as
    // small as it was built before; inlined there it was ~6% more instructions for the DLP
    // bench's base64 body under callgrind)
    #[inline(never)]
    #[target_feature(enable = "sse2")]
    pub(super) fn block_masks(block: &[u8; 64]) -> Masks {
        let mut m = Masks::default();
        for (k, part) in block.chunks_exact(16).enumerate() {
            // SAFETY: `part` is 16 readable bytes (`chunks_exact(16)`), and `_mm_loadu_si128`
            // reads 16 bytes at any alignment.
            let x = unsafe { _mm_loadu_si128(part.as_ptr().cast::<__m128i>()) };
            let lower = _mm_or_si128(x, _mm_set1_epi8(0x20));
            let letters = range(lower, b'a', b'z');
            let digits = range(x, b'0', b'9');
            let hex = _mm_or_si128(digits, range(lower, b'a', b'f'));
            let plus = eq(x, b'+');
            let symbols = _mm_or_si128(
                _mm_or_si128(plus, eq(x, b'/')),
                _mm_or_si128(eq(x, b'-'), eq(x, b'_')),
            );
            let alpha = _mm_or_si128(_mm_or_si128(letters, digits), symbols);
            let bits = |v: __m128i| u64::from(_mm_movemask_epi8(v) as u16) << (16 * k);
            m.alpha |= bits(alpha);
            m.escape |= bits(_mm_or_si128(eq(x, b'%'), eq(x, b'\\')));
            m.plus |= bits(plus);
            m.hex |= bits(hex);
        }
        m
    }
}

/// [`block_masks`] of 64 bytes with AVX2 (32 bytes an instruction), where the processor has
/// it and not AVX-512.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi8, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8, _mm256_loadu_si256,
        _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8,
    };

    use super::Masks;

    /// `lo <= x <= hi` for each byte: moved so that `lo` is -128, then one signed comparison.
    #[target_feature(enable = "avx2")]
    fn range(x: __m256i, lo: u8, hi: u8) -> __m256i {
        let shifted = _mm256_add_epi8(x, _mm256_set1_epi8(0x80u8.wrapping_sub(lo) as i8));
        _mm256_cmpgt_epi8(
            _mm256_set1_epi8(0x80u8.wrapping_add(hi - lo + 1) as i8),
            shifted,
        )
    }

    #[target_feature(enable = "avx2")]
    fn eq(x: __m256i, b: u8) -> __m256i {
        _mm256_cmpeq_epi8(x, _mm256_set1_epi8(b as i8))
    }

    /// The masks of 64 bytes; the caller makes sure the processor runs AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) fn block_masks(block: &[u8; 64]) -> Masks {
        let mut m = Masks::default();
        for (k, part) in block.chunks_exact(32).enumerate() {
            // SAFETY: `part` is 32 readable bytes (`chunks_exact(32)`), and
            // `_mm256_loadu_si256` reads 32 bytes at any alignment.
            let x = unsafe { _mm256_loadu_si256(part.as_ptr().cast::<__m256i>()) };
            let lower = _mm256_or_si256(x, _mm256_set1_epi8(0x20));
            let letters = range(lower, b'a', b'z');
            let digits = range(x, b'0', b'9');
            let hex = _mm256_or_si256(digits, range(lower, b'a', b'f'));
            let plus = eq(x, b'+');
            let symbols = _mm256_or_si256(
                _mm256_or_si256(plus, eq(x, b'/')),
                _mm256_or_si256(eq(x, b'-'), eq(x, b'_')),
            );
            let alpha = _mm256_or_si256(_mm256_or_si256(letters, digits), symbols);
            let bits = |v: __m256i| u64::from(_mm256_movemask_epi8(v) as u32) << (32 * k);
            m.alpha |= bits(alpha);
            m.escape |= bits(_mm256_or_si256(eq(x, b'%'), eq(x, b'\\')));
            m.plus |= bits(plus);
            m.hex |= bits(hex);
        }
        m
    }
}

/// [`block_masks`] of 64 bytes with AVX-512 (one register the block): each byte's classes
/// looked up at once in [`MASK_CLASS`] (`vpermi2b`, two registers of table), bytes from 128
/// on set to none, and each class's mask read out with one test; and the candidate walk
/// compiled for it, so that the masks are computed in the walk's loop.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512i, _mm512_loadu_si512, _mm512_maskz_compress_epi8, _mm512_maskz_permutex2var_epi8,
        _mm512_movepi8_mask, _mm512_set1_epi8, _mm512_storeu_si512, _mm512_test_epi8_mask,
        _mm512_testn_epi8_mask,
    };
    use std::ops::Range;

    use super::{Encoding, M_ALPHA, M_ESCAPE, M_HEX, M_PLUS, MASK_CLASS, Masks, Simd};

    /// [`super::candidate_runs`] with the masks of AVX-512; the caller makes sure the
    /// processor runs AVX-512BW, AVX-512VBMI, BMI1, BMI2 and POPCNT.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,bmi1,bmi2,popcnt")]
    pub(super) fn candidate_runs(data: &[u8], prune: bool) -> Vec<(Range<usize>, Encoding)> {
        super::candidate_runs_with(data, Simd::Avx512, prune)
    }

    /// [`super::without_zeros`] 64 bytes at a time; the caller makes sure the processor runs
    /// AVX-512BW, AVX-512VBMI2 and POPCNT.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,popcnt")]
    pub(super) fn without_zeros(data: &[u8], kept: usize) -> Vec<u8> {
        // Room for a whole block stored after the last byte kept.
        let mut out = vec![0u8; kept + 64];
        let mut j = 0;
        let mut done = 0;
        for block in data.chunks_exact(64) {
            // A `kept` too small (not the count of bytes that are not zero) ends the blocks
            // here: the bytewise end below keeps within `out` whatever it is.
            let Some(dst) = out.get_mut(j..j + 64) else {
                break;
            };
            // SAFETY: `block` is 64 readable bytes, and `_mm512_loadu_si512` reads 64 bytes
            // at any alignment.
            let x = unsafe { _mm512_loadu_si512(block.as_ptr().cast::<__m512i>()) };
            let keep = _mm512_test_epi8_mask(x, x);
            let packed = _mm512_maskz_compress_epi8(keep, x);
            // SAFETY: `dst` is 64 writable bytes, and `_mm512_storeu_si512` writes 64 bytes
            // at any alignment.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast::<__m512i>(), packed) };
            j += keep.count_ones() as usize;
            done += 64;
        }
        for &b in &data[done..] {
            let last = out.len() - 1;
            out[j.min(last)] = b;
            j += usize::from(b != 0);
        }
        out.truncate(kept);
        out
    }

    /// How many zero bytes `data` holds, 64 bytes at a time; the caller makes sure the
    /// processor runs AVX-512BW and POPCNT.
    #[target_feature(enable = "avx512f,avx512bw,popcnt")]
    pub(super) fn count_zeros(data: &[u8]) -> usize {
        let mut n = 0;
        let mut blocks = data.chunks_exact(64);
        for block in blocks.by_ref() {
            // SAFETY: `block` is 64 readable bytes, and `_mm512_loadu_si512` reads 64 bytes
            // at any alignment.
            let x = unsafe { _mm512_loadu_si512(block.as_ptr().cast::<__m512i>()) };
            n += _mm512_testn_epi8_mask(x, x).count_ones() as usize;
        }
        n + blocks.remainder().iter().filter(|&&b| b == 0).count()
    }

    /// The bytes of `class` that have bit `bit`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn has(class: __m512i, bit: u8) -> u64 {
        _mm512_test_epi8_mask(class, _mm512_set1_epi8(bit as i8))
    }

    /// The masks of 64 bytes; the caller makes sure the processor runs AVX-512BW and
    /// AVX-512VBMI.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) fn block_masks(block: &[u8; 64]) -> Masks {
        // SAFETY: `block` is 64 readable bytes, and `_mm512_loadu_si512` reads 64 bytes at
        // any alignment.
        let x = unsafe { _mm512_loadu_si512(block.as_ptr().cast::<__m512i>()) };
        // SAFETY: `MASK_CLASS` has 128 entries: bytes 0..64 and 64..128 are readable.
        let (low, high) = unsafe {
            (
                _mm512_loadu_si512(MASK_CLASS.as_ptr().cast::<__m512i>()),
                _mm512_loadu_si512(MASK_CLASS.as_ptr().add(64).cast::<__m512i>()),
            )
        };
        // Bytes below 128 index the table by their 7 bits; the others are in no class.
        let ascii = !_mm512_movepi8_mask(x);
        let class = _mm512_maskz_permutex2var_epi8(ascii, low, x, high);
        Masks {
            alpha: has(class, M_ALPHA),
            escape: has(class, M_ESCAPE),
            plus: has(class, M_PLUS),
            hex: has(class, M_HEX),
        }
    }
}

/// `%XX(?:.*%XX)?` at `i`: to the last escape of the line (`.` is any byte but a newline).
fn percent_at(data: &[u8], i: usize) -> Option<usize> {
    let hex = |k: usize| data.get(k).is_some_and(u8::is_ascii_hexdigit);
    if data.get(i) != Some(&b'%') || !hex(i + 1) || !hex(i + 2) {
        return None;
    }
    let from = i + 3;
    let line_end = memchr::memchr(b'\n', &data[from..]).map_or(data.len(), |p| from + p);
    let mut hay = &data[from..line_end];
    while let Some(p) = memchr::memrchr(b'%', hay) {
        let j = from + p;
        if j + 2 < line_end && hex(j + 1) && hex(j + 2) {
            return Some(j + 3);
        }
        hay = &hay[..p];
    }
    Some(from)
}

/// `(?i:(?:\\{1,2}u[0-9a-fA-F]{4})+)` at `i`.
fn escapes_at(data: &[u8], i: usize) -> Option<usize> {
    let hex4 = |k: usize| {
        data.get(k..k + 4)
            .is_some_and(|d| d.iter().all(u8::is_ascii_hexdigit))
    };
    let u = |k: usize| matches!(data.get(k), Some(b'u' | b'U'));
    let mut k = i;
    loop {
        if data.get(k) != Some(&b'\\') {
            break;
        }
        if data.get(k + 1) == Some(&b'\\') && u(k + 2) && hex4(k + 3) {
            k += 7;
        } else if u(k + 1) && hex4(k + 2) {
            k += 6;
        } else {
            break;
        }
    }
    (k > i).then_some(k)
}

/// `(?:U\+[0-9a-fA-F]{4}(?:\s|$))+` at `i` (`\s`: ASCII white space; `$`: the end of the
/// data).
fn code_points_at(data: &[u8], i: usize) -> Option<usize> {
    let mut k = i;
    while data.get(k) == Some(&b'U')
        && data.get(k + 1) == Some(&b'+')
        && data
            .get(k + 2..k + 6)
            .is_some_and(|d| d.iter().all(u8::is_ascii_hexdigit))
    {
        match data.get(k + 6) {
            None => {
                k += 6;
                break;
            }
            Some(b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ') => k += 7,
            Some(_) => break,
        }
    }
    (k > i).then_some(k)
}

/// Which encoding wins where two candidates touch (gitleaks' order).
fn precedence(kind: Encoding) -> u8 {
    match kind {
        Encoding::Percent => 4,
        Encoding::Unicode => 3,
        Encoding::Hex => 2,
        Encoding::Base64 => 1,
    }
}

/// Printable ASCII, tab to tilde (what gitleaks keeps of a decoded run).
fn printable_ascii(text: &[u8]) -> bool {
    text.iter().all(|&b| (0x09..0x7f).contains(&b))
}

/// `%XX` escapes decoded; any escape of a byte that is not printable drops the run.
fn decode_percent(run: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(run.len());
    let mut i = 0;
    while i < run.len() {
        if run[i] == b'%'
            && i + 2 < run.len()
            && let (Some(h), Some(l)) = (hex_val(run[i + 1]), hex_val(run[i + 2]))
        {
            let b = (h << 4) | l;
            if !(0x09..0x7f).contains(&b) {
                return None;
            }
            out.push(b);
            i += 3;
            continue;
        }
        out.push(run[i]);
        i += 1;
    }
    Some(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `\uXXXX` escapes and `U+XXXX` code points (whitespace-separated) as UTF-8.
fn decode_unicode(run: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < run.len() {
        let digits = if run[i..].starts_with(b"U+") {
            i += 2;
            run.get(i..i + 4)
        } else if run[i] == b'\\' {
            while i < run.len() && run[i] == b'\\' {
                i += 1;
            }
            i += 1; // the `u`
            run.get(i..i + 4)
        } else {
            // whitespace between code points
            i += 1;
            continue;
        };
        let cp = digits
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .and_then(char::from_u32)?;
        let mut buf = [0u8; 4];
        out.extend_from_slice(cp.encode_utf8(&mut buf).as_bytes());
        i += 4;
    }
    Some(out)
}

/// Hex digits (an even number, at least one a decimal digit) that decode to printable text.
fn decode_hex(run: &[u8]) -> Option<Vec<u8>> {
    if !run.len().is_multiple_of(2) || !run.iter().any(u8::is_ascii_digit) {
        return None;
    }
    hex::decode(run).ok().filter(|t| printable_ascii(t))
}

/// gitleaks' two base64 decoders: standard with canonical padding, URL-safe without.
mod engines {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    pub(super) const STD: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
            .with_decode_allow_trailing_bits(true),
    );
    pub(super) const RAW_URL: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
}

/// Base64 (standard, else URL-safe) holding at least one digit or symbol, that decodes to
/// printable text: what `strict_base64` (the tests' reference) decodes, kept when
/// printable. `scratch` is reused between runs: most runs (identifiers) decode to nothing
/// printable or not at all, and are now turned down without an allocation; a run neither
/// decoder can take (a length of 4n+1, both alphabets' symbols, padding on a run that is not
/// a multiple of 4 long) is not handed to them.
fn decode_base64(run: &[u8], scratch: &mut Vec<u8>) -> Option<Vec<u8>> {
    if base64_turned_down(run) {
        return None;
    }
    // One pass for what the run holds (three `any` walks before).
    let seen = run
        .iter()
        .fold(0u8, |seen, &b| seen | SYMBOLS[usize::from(b)]);
    if seen & (DIGIT | URL_SYMBOL | STD_SYMBOL) == 0 {
        return None;
    }
    let url_symbol = seen & URL_SYMBOL != 0;
    let std_symbol = seen & (STD_SYMBOL | PAD) != 0;
    // Canonical padding: a multiple of 4; the URL-safe alphabet has none of `+/=`; no
    // base64 is 4n+1 characters long.
    let std_may = run.len().is_multiple_of(4) && !url_symbol;
    let url_may = run.len() % 4 != 1 && !std_symbol;
    for (may, engine, values) in [
        (std_may, &engines::STD, &STD_VALUES),
        (url_may, &engines::RAW_URL, &URL_VALUES),
    ] {
        if !may || !printable_start(run, values) {
            continue;
        }
        scratch.clear();
        if engine.decode_vec(run, scratch).is_ok() && printable_ascii(scratch) {
            return Some(scratch.clone());
        }
    }
    None
}

/// Whether [`decode_base64`] turns `run` down before looking at it whole: a length of 4n+1,
/// or a group of letters and digits that decodes to a byte that is not printable.
fn base64_turned_down(run: &[u8]) -> bool {
    // No base64 is 4n+1 characters long: neither decoder below takes such a run (the test
    // first: an identifier of 17 characters on every line of code was read three times).
    if run.len() % 4 == 1 {
        return true;
    }
    // The groups of four before the last, as long as they are letters and digits only (the
    // same values in both alphabets), decode to what `printable_start` finds for either
    // alphabet: one that is not printable makes neither decoder's text printable, and the
    // pass over the whole run below is not needed. Most runs are identifiers: one starting
    // with a letter from `g` on or a digit already decodes to a first byte of 128 or more,
    // and most others (`CamelCase`) within a group or two.
    let value = |x: u8| u32::from(STD_VALUES[usize::from(x)]);
    for group in run.chunks_exact(4).take(run.len().saturating_sub(1) / 4) {
        let (a, b, c, d) = (
            value(group[0]),
            value(group[1]),
            value(group[2]),
            value(group[3]),
        );
        if a.max(b).max(c).max(d) >= 62 {
            // A symbol (or a byte of neither alphabet): the alphabets differ from here.
            break;
        }
        let bits = (a << 18) | (b << 12) | (c << 6) | d;
        if !printable_ascii(&[(bits >> 16) as u8, (bits >> 8) as u8, bits as u8]) {
            return true;
        }
    }
    false
}

/// What a byte of a base64 run is, for [`decode_base64`]'s first look.
const DIGIT: u8 = 1;
/// `-` or `_` (URL-safe alphabet).
const URL_SYMBOL: u8 = 2;
/// `+` or `/` (standard alphabet).
const STD_SYMBOL: u8 = 4;
/// `=`.
const PAD: u8 = 8;

static SYMBOLS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = b'0';
    while b <= b'9' {
        t[b as usize] = DIGIT;
        b += 1;
    }
    t[b'-' as usize] = URL_SYMBOL;
    t[b'_' as usize] = URL_SYMBOL;
    t[b'+' as usize] = STD_SYMBOL;
    t[b'/' as usize] = STD_SYMBOL;
    t[b'=' as usize] = PAD;
    t
};

/// Each base64 character's 6 bits in one alphabet (`0xff`: not in it).
const fn base64_values(alphabet: &[u8; 64]) -> [u8; 256] {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
}

static STD_VALUES: [u8; 256] =
    base64_values(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
static URL_VALUES: [u8; 256] =
    base64_values(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");

/// Whether the run's groups of four characters before its last group, decoded with
/// `values`, are printable as far as they are of the alphabet: `false` only when one of them
/// decodes to a byte that is not, so that the whole run, decoded by a decoder of that
/// alphabet, is not printable text or not base64 at all.
///
/// Why: most candidate runs are identifiers (`some_long_function_name`), which decode to
/// binary: a first character from `g` on (value 32 or more) already makes the first byte
/// 128 or more, and the decoder, its output and the printable check after it are not needed
/// for them. The last group, where padding may be, is left to the decoder.
fn printable_start(run: &[u8], values: &[u8; 256]) -> bool {
    let groups = run.len().saturating_sub(1) / 4;
    for group in run.chunks_exact(4).take(groups) {
        let v = group.iter().map(|&b| values[usize::from(b)]);
        let mut bits = 0u32;
        for x in v {
            if x == 0xff {
                // Not of this alphabet: the decoder decides.
                return true;
            }
            bits = (bits << 6) | u32::from(x);
        }
        let bytes = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        if !printable_ascii(&bytes) {
            return false;
        }
    }
    true
}

/// Base64 as gitleaks' decoder takes a run: standard with its padding (a length of a multiple
/// of 4), else URL-safe without padding. A run of any other shape is not decoded here; in a
/// later pass it may join its neighbours into one that is (a run cut by a `%XX` escape).
/// (How [`decode_base64`] decoded before it turned shapes down itself: the tests' reference.)
#[cfg(test)]
fn strict_base64(run: &[u8]) -> Option<Vec<u8>> {
    use engines::{RAW_URL, STD};
    STD.decode(run)
        .ok()
        .filter(|t| printable_ascii(t))
        .or_else(|| RAW_URL.decode(run).ok())
}

/// Shortest line of a wrapped base64 block (`base64` wraps at 76, PEM at 64).
const MIN_WRAPPED_LINE: usize = 60;

/// Where the lines of a wrapped base64 block are: the run `start..end` and the lines that
/// continue it (each line before the last at least [`MIN_WRAPPED_LINE`] characters, a
/// multiple of 4, followed by a newline), with where the block ends (its padding included).
/// `None` when no line continues the run.
fn wrapped_lines(data: &[u8], start: usize, end: usize) -> Option<(Vec<Range<usize>>, usize)> {
    let in_run = |b: u8| CLASS[usize::from(b)] & B64 != 0;
    let (mut line_start, mut last) = (start, end);
    let mut lines: Vec<Range<usize>> = Vec::new();
    loop {
        let len = last - line_start;
        if len < MIN_WRAPPED_LINE || len % 4 != 0 {
            break;
        }
        let mut next = last;
        if data.get(next) == Some(&b'\r') {
            next += 1;
        }
        if data.get(next) != Some(&b'\n') {
            break;
        }
        next += 1;
        let mut e = next;
        while e < data.len() && in_run(data[e]) {
            e += 1;
        }
        if e == next {
            break;
        }
        lines.push(line_start..last);
        (line_start, last) = (next, e);
    }
    if lines.is_empty() {
        return None;
    }
    lines.push(line_start..last);
    let mut to = last;
    while to < data.len() && data[to] == b'=' && to - last < 2 {
        to += 1;
    }
    Some((lines, to))
}

/// The wrapped blocks of one scan, each decoded once.
///
/// Why: every line of a wrapped block is a candidate run of its own, and the block read from
/// each line on is that line and all the lines after it. Joining and decoding the rest of the
/// block again for each of its lines made a block of `n` lines cost `n²/2` line decodings (270
/// KB of random base64, which decodes to nothing printable, took seconds); a block is decoded
/// once here and the answer for each of its lines read from it.
#[derive(Default)]
struct WrappedBlocks {
    block: Option<WrappedBlock>,
}

/// One wrapped block, decoded once with `-` and `_` read as `+` and `/` (each line after the
/// first starts a line of `data`, so a later candidate run is one of these lines).
struct WrappedBlock {
    /// The base64 of each line in `data`.
    lines: Vec<Range<usize>>,
    /// Where each line's decoded bytes start in `decoded` (all lines but the last are whole
    /// groups of 4 characters, so a line decodes on its own to the same bytes).
    at: Vec<usize>,
    /// The block's lines joined and decoded (a last line that leaves a length of 4n+1 loses
    /// its last character).
    decoded: Vec<u8>,
    /// How many bytes of `decoded` before each position are printable ([`printable_byte`]).
    printable_before: Vec<u32>,
    /// Whether the block from line `j` on holds a URL-safe (`-`, `_`) or a standard (`+`,
    /// `/`) symbol: holding both, it is not base64.
    url_from: Vec<bool>,
    std_from: Vec<bool>,
    /// Where the block ends in `data`, padding included.
    to: usize,
}

impl WrappedBlocks {
    /// Base64 wrapped over several lines (what `base64` prints): the run `start..end` and the
    /// lines that continue it, decoded as one, when that is printable text; with where it
    /// ends. A line of a multiple of 4 characters decodes on its own too, but a secret cut by
    /// the line end would be lost.
    fn wrapped_base64(
        &mut self,
        data: &[u8],
        start: usize,
        end: usize,
    ) -> Option<(Vec<u8>, usize)> {
        let line = match &self.block {
            // The lines are in order: a binary search (a walk of them for each line made a
            // block quadratic again).
            Some(b) => b
                .lines
                .binary_search_by_key(&start, |l| l.start)
                .ok()
                .filter(|&j| b.lines[j].end == end),
            None => None,
        };
        let (block, j) = match line {
            Some(j) => (self.block.as_ref()?, j),
            None => {
                self.block = None;
                let (lines, to) = wrapped_lines(data, start, end)?;
                (&*self.block.insert(WrappedBlock::new(data, lines, to)?), 0)
            }
        };
        block.read_from_line(j)
    }
}

impl WrappedBlock {
    fn new(data: &[u8], lines: Vec<Range<usize>>, to: usize) -> Option<Self> {
        let total: usize = lines.iter().map(|l| l.len()).sum();
        // What `base64_decode` does to a length that cannot be base64: the last character
        // goes (the same for the block read from any of its lines: the lines before the last
        // are whole groups of 4).
        let cut = usize::from(total % 4 == 1);
        let n = lines.len();
        let mut std_alphabet: Vec<u8> = Vec::with_capacity(total);
        let mut at = Vec::with_capacity(n);
        let mut url_in = vec![false; n];
        let mut std_in = vec![false; n];
        for (j, l) in lines.iter().enumerate() {
            at.push(std_alphabet.len() / 4 * 3);
            let text = if j + 1 == n {
                &data[l.start..l.end - cut]
            } else {
                &data[l.clone()]
            };
            for &b in text {
                std_alphabet.push(match b {
                    b'-' => {
                        url_in[j] = true;
                        b'+'
                    }
                    b'_' => {
                        url_in[j] = true;
                        b'/'
                    }
                    b'+' | b'/' => {
                        std_in[j] = true;
                        b
                    }
                    _ => b,
                });
            }
        }
        let mut url_from = url_in;
        let mut std_from = std_in;
        for j in (0..n.saturating_sub(1)).rev() {
            url_from[j] |= url_from[j + 1];
            std_from[j] |= std_from[j + 1];
        }
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        const STANDARD: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new()
                .with_decode_padding_mode(DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        let decoded = STANDARD.decode(&std_alphabet).ok()?;
        let mut printable_before = Vec::with_capacity(decoded.len() + 1);
        let mut count = 0u32;
        printable_before.push(0);
        for &b in &decoded {
            count += u32::from(printable_byte(b));
            printable_before.push(count);
        }
        Some(Self {
            lines,
            at,
            decoded,
            printable_before,
            url_from,
            std_from,
            to,
        })
    }

    /// The block read from line `j` on (at least two lines), decoded, when it is base64 of
    /// printable text.
    fn read_from_line(&self, j: usize) -> Option<(Vec<u8>, usize)> {
        if j + 1 >= self.lines.len() || (self.url_from[j] && self.std_from[j]) {
            return None;
        }
        let at = *self.at.get(j)?;
        let text = self.decoded.get(at..)?;
        let ok = self.printable_before[self.decoded.len()] - self.printable_before[at];
        if text.is_empty() || (ok as usize) * 10 < text.len() * 9 {
            return None;
        }
        Some((text.to_vec(), self.to))
    }
}

/// Standard or URL-safe base64, padding optional; a length that cannot be base64 loses its
/// last characters (the run may continue into text). How a wrapped block read from one of its
/// lines was decoded before [`WrappedBlock`] (the tests' reference).
#[cfg(test)]
fn base64_decode(run: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);
    let run = match run.len() % 4 {
        1 => &run[..run.len() - 1],
        _ => run,
    };
    let url = run.iter().any(|&b| b == b'-' || b == b'_');
    let std = run.iter().any(|&b| b == b'+' || b == b'/');
    match (url, std) {
        (true, true) => None,
        (true, false) => URL_SAFE.decode(run).ok(),
        _ => STANDARD.decode(run).ok(),
    }
}

/// A byte of printable ASCII text: space to tilde, tab, newline, carriage return.
fn printable_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\r' || b == b'\t'
}

/// Why the scanner cannot read some content, if it is a compressed archive or an encrypted
/// file (recognised by its first bytes).
pub(crate) fn unreadable_kind(data: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 11] = [
        (b"\x1f\x8b", "gzip-compressed"),
        (b"PK\x03\x04", "a zip archive"),
        (b"PK\x05\x06", "a zip archive"),
        (b"PK\x07\x08", "a zip archive"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
        (b"\xfd7zXZ\x00", "xz-compressed"),
        (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
        (b"Rar!\x1a\x07", "a rar archive"),
        (b"\x04\x22\x4d\x18", "lz4-compressed"),
        (b"age-encryption.org/", "age-encrypted"),
        (b"-----BEGIN PGP MESSAGE-----", "PGP-encrypted"),
    ];
    if data.len() >= 10 && data.starts_with(b"BZh") && data[4..10] == *b"1AY&SY" {
        return Some("bzip2-compressed");
    }
    if data.starts_with(b"Salted__") && data.len() >= 16 {
        return Some("openssl-encrypted");
    }
    if pgp_binary(data) {
        return Some("PGP-encrypted");
    }
    MAGIC
        .iter()
        .find(|(m, _)| data.starts_with(m))
        .map(|(_, k)| *k)
}

/// A binary OpenPGP message starting with an encrypted session key packet (public-key, tag 1,
/// version 3; or symmetric, tag 3, version 4 or 5), old or new packet format.
fn pgp_binary(data: &[u8]) -> bool {
    let version_at = |i: usize, ok: &[u8]| data.get(i).is_some_and(|v| ok.contains(v));
    match data.first() {
        Some(0x84) => version_at(2, &[3]),
        Some(0x85) => version_at(3, &[3]),
        Some(0x8c) => version_at(2, &[4, 5]),
        Some(0x8d) => version_at(3, &[4, 5]),
        Some(0xc1) => data.get(1).is_some_and(|&l| l < 192) && version_at(2, &[3, 6]),
        Some(0xc3) => data.get(1).is_some_and(|&l| l < 192) && version_at(2, &[4, 5, 6]),
        _ => false,
    }
}

/// How many candidate runs the walk finds in `data`, pruning as [`encoded_runs`] does (the
/// walk alone, for the timing table of the keyword filter's tests).
#[cfg(test)]
pub(crate) fn candidate_walk(data: &[u8]) -> usize {
    candidate_runs(data, true).len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const KEY: &str = "AKIAZ7QWERTYUIOPASDF";

    fn texts(data: &[u8]) -> Vec<(Encoding, String)> {
        encoded_runs(data)
            .into_iter()
            .map(|d| (d.encoding, String::from_utf8(d.text).unwrap()))
            .collect()
    }

    #[test]
    fn each_encoding_is_found_and_decoded() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("key={KEY}"));
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("k?>{KEY}"));
        let hexed = hex::encode(KEY);
        let pct: String = KEY.bytes().map(|b| format!("%{b:02X}")).collect();
        let data = format!("a = \"{b64}\"\nb: {url}\nc {hexed}\nd=x?v={pct}&z=1\n");
        assert_eq!(
            texts(data.as_bytes()),
            vec![
                (Encoding::Base64, format!("key={KEY}")),
                (Encoding::Base64, format!("k?>{KEY}")),
                (Encoding::Hex, KEY.to_string()),
                // From the first escape to the last, as gitleaks takes it.
                (Encoding::Percent, KEY.to_string()),
            ]
        );
    }

    #[test]
    fn base64_wrapped_over_lines_is_decoded_as_one() {
        // The key straddles the end of the first 76-character line.
        let text = format!("{}{KEY} and more text after it\n", "x".repeat(50));
        let enc = base64::engine::general_purpose::STANDARD.encode(&text);
        let wrapped: Vec<&str> = enc
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let data = format!("creds:\n{}\nend\n", wrapped.join("\n"));
        let found = texts(data.as_bytes());
        assert_eq!(found, vec![(Encoding::Base64, text)]);
    }

    /// The way a wrapped block was read before blocks were decoded once: from the given
    /// line on, joined and decoded again (the reference the cached blocks must agree with).
    fn wrapped_reference(data: &[u8], start: usize, end: usize) -> Option<(Vec<u8>, usize)> {
        let (lines, to) = wrapped_lines(data, start, end)?;
        let joined: Vec<u8> = lines
            .iter()
            .flat_map(|l| data[l.clone()].to_vec())
            .collect();
        let text = base64_decode(&joined)?;
        let ok = text.iter().filter(|&&b| printable_byte(b)).count();
        (!text.is_empty() && ok * 10 >= text.len() * 9).then_some((text, to))
    }

    /// A small deterministic generator (xorshift), so that the cases are the same each run
    /// (the keyword filter's tests use it too).
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn each_line_of_a_wrapped_block_reads_as_the_block_from_that_line_joined_again() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        let mut found = 0;
        for case in 0..400 {
            // Lines of printable text and of binary, encoded with either alphabet, some
            // padded, wrapped at 64 or 76, with CRLF now and then and a last line of any
            // length; sometimes a run that starts mid-line.
            let mut plain = Vec::new();
            for _ in 0..1 + rng.below(12) {
                let binary = rng.below(4) == 0;
                for _ in 0..rng.below(120) {
                    plain.push(if binary {
                        rng.below(256) as u8
                    } else {
                        b' ' + rng.below(95) as u8
                    });
                }
            }
            let enc = if case % 3 == 0 {
                URL_SAFE.encode(&plain)
            } else {
                STANDARD.encode(&plain)
            };
            let width = if rng.below(2) == 0 { 64 } else { 76 };
            let nl = if rng.below(5) == 0 { "\r\n" } else { "\n" };
            let mut data = String::from(if rng.below(3) == 0 { "key: " } else { "" });
            let lines: Vec<&str> = enc
                .as_bytes()
                .chunks(width)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            data.push_str(&lines.join(nl));
            data.push_str(" tail\n");
            let data = data.as_bytes();
            // Every candidate run the decoder would ask about: each line's base64 (padding
            // left out, as the caller does).
            let mut blocks = WrappedBlocks::default();
            let mut at = 0;
            while at < data.len() {
                let in_run = |b: u8| CLASS[usize::from(b)] & B64 != 0;
                if !in_run(data[at]) {
                    at += 1;
                    continue;
                }
                let mut end = at;
                while end < data.len() && in_run(data[end]) {
                    end += 1;
                }
                let got = blocks.wrapped_base64(data, at, end);
                assert_eq!(got, wrapped_reference(data, at, end), "case {case} at {at}");
                found += usize::from(got.is_some());
                checked += 1;
                at = end;
            }
        }
        assert!(
            checked > 2000 && found > 100,
            "{checked} runs, {found} decoded"
        );
    }

    #[test]
    fn a_block_with_both_alphabets_is_base64_only_from_where_one_is_left() {
        // The first line has a `+`, the rest `-` and `_`: the whole block is not base64, the
        // block from the second line on is.
        let text = b"abcdefghijklmnopqrstuvwxyz0123456789-_ABCDEFGHIJKLMNOPQRSTUVWXYZ and some more text here";
        // `???` encodes as `Pz8_` in the URL-safe alphabet.
        let url = base64::engine::general_purpose::URL_SAFE
            .encode([b"???", &text[..]].concat().repeat(3));
        assert!(url.starts_with("Pz8_"));
        let first = format!("{}+{}", "A".repeat(38), "B".repeat(37));
        let mut lines = vec![first];
        lines.extend(
            url.as_bytes()
                .chunks(76)
                .map(|c| String::from_utf8(c.to_vec()).unwrap()),
        );
        let data = lines.join("\n");
        let data = data.as_bytes();
        let mut blocks = WrappedBlocks::default();
        assert_eq!(blocks.wrapped_base64(data, 0, 76), None);
        assert_eq!(wrapped_reference(data, 0, 76), None);
        let second = 77..77 + 76;
        let got = blocks.wrapped_base64(data, second.start, second.end);
        assert_eq!(got, wrapped_reference(data, second.start, second.end));
        assert!(got.is_some());
    }

    /// The candidates as the pattern finds them, with their kinds told from the match as
    /// `encoded_runs` told them before the hand search.
    fn pattern_runs(data: &[u8]) -> Vec<(Range<usize>, Encoding)> {
        candidates()
            .find_iter(data)
            .map(|m| {
                let run = m.as_bytes();
                let kind = match run[0] {
                    b'%' => Encoding::Percent,
                    b'\\' => Encoding::Unicode,
                    b'U' if run.get(1) == Some(&b'+') && unicode_points().is_match(run) => {
                        Encoding::Unicode
                    }
                    _ if run.len() >= 32 && run.iter().all(u8::is_ascii_hexdigit) => Encoding::Hex,
                    _ => Encoding::Base64,
                };
                (m.range(), kind)
            })
            .collect()
    }

    #[test]
    fn the_hand_search_finds_what_the_pattern_finds() {
        // Pieces that sit on the edges of each alternative: escapes with and without their
        // digits, doubled backslashes, code points before white space, the end or more
        // letters, hex and base64 runs around their minimum lengths, padding, line ends.
        let pieces: &[&[u8]] = &[
            b"%",
            b"%4",
            b"%41",
            b"%zz",
            b"%2F",
            b"\\",
            b"\\\\",
            b"\\u",
            b"\\u0041",
            b"\\U00e9",
            b"\\\\u12AB",
            b"\\x41",
            b"u",
            b"U",
            b"U+",
            b"U+0041",
            b"U+00e9 ",
            b"U+12",
            b"+",
            b"/",
            b"-",
            b"_",
            b"=",
            b"==",
            b"===",
            b" ",
            b"\n",
            b"\t",
            b"\r",
            b"\x0b",
            b"\x0c",
            b".",
            b"\xff",
            b"\x00",
            b"a",
            b"Z",
            b"0",
            b"f",
            b"F",
            b"g",
            b"deadbeef",
            b"0123456789abcdef",
            b"ABCDEFGHIJKLMNOP",
            b"abcdefghijklmno",
            b"c2VjcmV0",
            b"0123456789abcdef0123456789abcde",
            b"x%41y",
            b"%0A",
        ];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for case in 0..40_000 {
            let n = rng.below(if case % 10 == 0 { 120 } else { 30 });
            let mut data = Vec::new();
            for _ in 0..n {
                data.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
            assert_eq!(
                candidate_runs(&data, false),
                pattern_runs(&data),
                "{:?}",
                String::from_utf8_lossy(&data)
            );
        }
        // Text mostly without escapes or `+`, with runs of every length around 16 and 32.
        let plain: &[&[u8]] = &[
            b"a",
            b"Z",
            b"0",
            b"f",
            b"_",
            b"-",
            b"/",
            b"=",
            b" ",
            b"\n",
            b".",
            b"\xff",
            b"deadbeef",
            b"abcdefghijklmno",
            b"0123456789abcdef",
            b"U",
        ];
        for _ in 0..20_000 {
            let mut data = Vec::new();
            for _ in 0..rng.below(80) {
                data.extend_from_slice(plain[rng.below(plain.len())]);
            }
            // now and then an escape or a code point somewhere
            if rng.below(4) == 0 {
                let at = rng.below(data.len() + 1);
                let piece = pieces[rng.below(pieces.len())];
                data.splice(at..at, piece.iter().copied());
            }
            assert_eq!(
                candidate_runs(&data, false),
                pattern_runs(&data),
                "{:?}",
                String::from_utf8_lossy(&data)
            );
        }
        // Random bytes, and real text: this crate's sources and rules.
        for _ in 0..200 {
            let data: Vec<u8> = (0..rng.below(4000)).map(|_| rng.next() as u8).collect();
            assert_eq!(candidate_runs(&data, false), pattern_runs(&data));
        }
        for text in [
            include_str!("decode.rs"),
            include_str!("engine.rs"),
            include_str!("../rules/builtin.toml"),
            include_str!("../rules/builtin-cases.toml"),
        ] {
            assert_eq!(
                candidate_runs(text.as_bytes(), false),
                pattern_runs(text.as_bytes())
            );
        }
    }

    #[test]
    fn the_skipping_walk_finds_what_the_bytewise_walk_finds() {
        // The walk that jumps over quiet bytes 64 at a time against the one that steps on
        // each: texts whose escapes, `+`, `U+` and runs of 15 to 17 and 31 to 33 characters
        // sit at every place around the blocks' borders (63, 64, 65 ... bytes in), and
        // whose runs cross from one block into the next.
        let pieces: &[&[u8]] = &[
            b" ",
            b"\n",
            b".",
            b"(",
            b"=",
            b"\xff",
            b"\x00",
            b"%",
            b"%41",
            b"%4",
            b"%4g",
            b"%g1",
            b"\\",
            b"\\u0041",
            b"\\U00e9",
            b"\\u004",
            b"\\u00x1",
            b"\\\\u12AB",
            b"\\\\u12A",
            b"\\\\",
            b"\\n",
            b"u",
            b"U+0041 ",
            b"U+0041",
            b"U+004",
            b"U+00g1 ",
            b"xU+0041 ",
            b"U+",
            b"+",
            b"a+b",
            b"U",
            b"-",
            b"_",
            b"/",
            b"abc",
            b"unwrap_or_default",
            b"0123456789abcde",
            b"0123456789abcdef",
            b"0123456789abcdef0",
            b"0123456789abcdef0123456789abcde",
            b"0123456789abcdef0123456789abcdef",
            b"0123456789abcdef0123456789abcdef0",
            b"c2VjcmV0c2VjcmV0==",
            b"==",
            // runs of 16 to 33 that pruning drops when a block is loaded, or not: a length of
            // 4n+1, a first character from which no group decodes to text (`A`, `B`, `g` to
            // `z`, digits), a symbol in the first group, `=` after them, a code point at
            // their end
            b"unwrap_or_default=",
            b"unwrap_or_defaul==",
            b"Azzzzzzzzzzzzzzzzz",
            b"Bzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            b"gzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            b"9abcdefabcdefabcdefabcdefabcdefa",
            b"zz_zzzzzzzzzzzzzzzzzzz",
            b"c2VjcmV0c2VjcmV0c2Vj=",
            b"abcdefghijkU+0041 ",
            b"zzzzzzzzzzzzzzzzzzzzU+0041\n",
            // runs across several blocks: base64, hex then letters, hex then a symbol
            b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODkrLw",
            b"0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdefXYZ",
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-g",
        ];
        let mut rng = Rng(0x51f1_5eed_d1b3_0004);
        for case in 0..30_000 {
            let mut data = Vec::new();
            // a prefix that moves what follows across the block borders
            let lead = rng.below(70);
            data.extend((0..lead).map(|k| if case % 2 == 0 { b' ' } else { b"ab"[k % 2] }));
            for _ in 0..rng.below(if case % 10 == 0 { 200 } else { 40 }) {
                data.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
            assert_walks(&data, &String::from_utf8_lossy(&data));
        }
        // Runs of every length from every offset of a block, framed by quiet bytes.
        for len in (1..80).chain([127, 128, 129, 200]) {
            for at in 0..130 {
                for fill in [b'a', b'0', b'+', b'_', b'g', b'B'] {
                    let mut data = vec![b' '; at + len + 70];
                    data[at..at + len].fill(fill);
                    assert_walks(&data, &format!("a run of {len} {:?} at {at}", fill as char));
                }
            }
        }
        // Random bytes, and real text: this crate's sources and rules.
        for _ in 0..300 {
            let data: Vec<u8> = (0..rng.below(5000)).map(|_| rng.next() as u8).collect();
            assert_walks(&data, "random bytes");
        }
        for text in [
            include_str!("decode.rs"),
            include_str!("engine.rs"),
            include_str!("../rules/builtin.toml"),
            include_str!("../rules/builtin-cases.toml"),
        ] {
            assert_walks(text.as_bytes(), "a source file");
        }
    }

    /// The skipping walk with each version of the masks this processor runs finds what the
    /// bytewise walk finds in `data`; pruning, what it finds less the runs pruning drops.
    fn assert_walks(data: &[u8], what: &str) {
        let want = candidate_runs_bytewise(data);
        let pruned = pruned_reference(data, &want);
        for (prune, want) in [(false, &want), (true, &pruned)] {
            assert_eq!(&candidate_runs(data, prune), want, "{what} {prune}");
            assert_eq!(
                &candidate_runs_with(data, Simd::Bytewise, prune),
                want,
                "{what} {prune}"
            );
            #[cfg(target_arch = "x86_64")]
            {
                assert_eq!(
                    &candidate_runs_with(data, Simd::Sse2, prune),
                    want,
                    "{what} {prune}"
                );
                if std::arch::is_x86_feature_detected!("avx2") {
                    assert_eq!(
                        &candidate_runs_with(data, Simd::Avx2, prune),
                        want,
                        "{what} {prune}"
                    );
                }
            }
        }
    }

    /// The runs of the bytewise walk `all` without the base64 runs pruning drops (shorter
    /// than a wrapped line without their `=`, and turned down).
    fn pruned_reference(
        data: &[u8],
        all: &[(Range<usize>, Encoding)],
    ) -> Vec<(Range<usize>, Encoding)> {
        all.iter()
            .filter(|(span, kind)| {
                let run = &data[span.clone()];
                let bare = run.len() - run.iter().rev().take_while(|&&b| b == b'=').count();
                !(*kind == Encoding::Base64 && bare < MIN_WRAPPED_LINE && base64_turned_down(run))
            })
            .cloned()
            .collect()
    }

    #[test]
    fn pruned_runs_decode_as_all_runs_do() {
        // Base64 of text and identifiers of every length around 16 and 60 next to escapes,
        // hex and code points, touching them or not, on one line or wrapped.
        let b64 = base64::engine::general_purpose::STANDARD
            .encode("user=admin password=hunter2 and some more text to wrap over lines");
        let url =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("k?>AKIAZ7QWERTYUIOPASDF");
        let long = "unwrap_or_default_".repeat(4);
        // Wrapped at 76: the block decodes to text with one control byte first, which each
        // line alone would not pass (so only the block is found, from its first line).
        let wrapped = base64::engine::general_purpose::STANDARD
            .encode(format!(
                "\x01{}",
                "user=admin password=hunter2 and more text; ".repeat(4)
            ))
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        let pieces: Vec<&[u8]> = vec![
            b" ",
            b"\n",
            b"=",
            b"%41",
            b"%2F",
            b"\\u0041",
            b"U+0041 ",
            b"+",
            b"unwrap_or_default",
            b"unwrap_or_else_x",
            b"CamelCaseIdentifier",
            b"Q29tcHV0ZVZhbHVl",
            b"0123456789abcdef0123456789abcdef",
            b"c2VjcmV0c2VjcmV0==",
            b64.as_bytes(),
            &b64.as_bytes()[..60],
            &b64.as_bytes()[..64],
            url.as_bytes(),
            long.as_bytes(),
            &long.as_bytes()[..59],
            &long.as_bytes()[..61],
            wrapped.as_bytes(),
        ];
        let mut rng = Rng(0x0dd_ba11_cafe_f00d);
        let mut decoded = 0;
        for _ in 0..20_000 {
            let mut data = Vec::new();
            for _ in 0..rng.below(30) {
                data.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
            let got = encoded_runs(&data);
            assert_eq!(
                got,
                decode_runs(&data, &candidate_runs(&data, false)),
                "{:?}",
                String::from_utf8_lossy(&data)
            );
            decoded += got.len();
        }
        assert!(decoded > 10_000, "{decoded} runs decoded");
        let lone = format!(" {wrapped} ");
        let found = encoded_runs(lone.as_bytes());
        assert!(
            found.iter().any(|d| d.text.starts_with(b"\x01user=admin")),
            "{found:?}"
        );
        for _ in 0..200 {
            let data: Vec<u8> = (0..rng.below(5000)).map(|_| rng.next() as u8).collect();
            assert_eq!(
                encoded_runs(&data),
                decode_runs(&data, &candidate_runs(&data, false))
            );
        }
        for text in [
            include_str!("decode.rs"),
            include_str!("engine.rs"),
            include_str!("../rules/builtin.toml"),
            include_str!("../rules/builtin-cases.toml"),
        ] {
            let data = text.as_bytes();
            assert!(candidate_runs(data, true).len() < candidate_runs(data, false).len());
            assert_eq!(
                encoded_runs(data),
                decode_runs(data, &candidate_runs(data, false))
            );
        }
    }

    #[test]
    fn the_block_masks_are_those_of_each_byte() {
        // Every byte value at every place of a block, and random blocks.
        let mut rng = Rng(7);
        for v in 0..=255u8 {
            for at in 0..64 {
                let mut block = [b' '; 64];
                block[at] = v;
                assert_eq!(
                    block_masks(Simd::detect(), &block),
                    block_masks_bytewise(&block),
                    "{v} at {at}"
                );
                assert_simd_masks(&block);
            }
        }
        for _ in 0..2000 {
            let block: Vec<u8> = (0..64).map(|_| rng.next() as u8).collect();
            assert_eq!(
                block_masks(Simd::detect(), &block),
                block_masks_bytewise(&block)
            );
            assert_simd_masks(&block.try_into().unwrap());
        }
    }

    /// Each SIMD version this processor runs gives the bytewise masks.
    fn assert_simd_masks(block: &[u8; 64]) {
        #[cfg(target_arch = "x86_64")]
        {
            let want = block_masks_bytewise(block);
            assert_eq!(block_masks_sse2(block), want, "sse2 {block:?}");
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was detected just above.
                assert_eq!(unsafe { avx2::block_masks(block) }, want, "avx2 {block:?}");
            }
            if std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vbmi")
            {
                // SAFETY: AVX-512BW and AVX-512VBMI were detected just above.
                let got = unsafe { avx512::block_masks(block) };
                assert_eq!(got, want, "avx512 {block:?}");
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = block;
    }

    #[test]
    fn base64_runs_decode_as_the_two_decoders_decode_them() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
        // Before: any run with a digit or symbol was handed to both decoders.
        let reference = |run: &[u8]| {
            if !run
                .iter()
                .any(|b| b.is_ascii_digit() || b"+/-_".contains(b))
            {
                return None;
            }
            strict_base64(run).filter(|t| printable_ascii(t))
        };
        let mut rng = Rng(99);
        let mut scratch = Vec::new();
        let alphabet = b"aZ09+/-_=Qx";
        for case in 0..20_000 {
            let run: Vec<u8> = match case % 4 {
                0 => (0..16 + rng.below(30))
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect(),
                // identifiers, as most runs in source code are
                3 => {
                    let words = [&b"some"[..], b"long", b"_", b"Name", b"2", b"for", b"Test"];
                    let mut run = Vec::new();
                    while run.len() < 16 + rng.below(20) {
                        run.extend_from_slice(words[rng.below(words.len())]);
                    }
                    run
                }
                // base64 of printable text, in each alphabet, padded or not
                _ => {
                    let text: Vec<u8> = (0..12 + rng.below(30))
                        .map(|_| 0x20 + rng.below(0x5f) as u8)
                        .collect();
                    match rng.below(3) {
                        0 => STANDARD.encode(&text),
                        1 => URL_SAFE.encode(&text),
                        _ => URL_SAFE_NO_PAD.encode(&text),
                    }
                    .into_bytes()
                }
            };
            assert_eq!(
                decode_base64(&run, &mut scratch),
                reference(&run),
                "{:?}",
                String::from_utf8_lossy(&run)
            );
        }
    }

    #[test]
    fn ordinary_text_and_random_runs_decode_to_nothing() {
        let data = b"fn some_long_function_name_for_tests() {}\nchecksum = \"0d8bd0a4e6a3bb0de3ac9fe1a1f7ab3a5c5d9e7b4c3a2f1e0d9c8b7a6f5e4d3c\"\nurl = https://x/a%20b\n";
        // Only the escape is decoded (as gitleaks does): the identifier and the checksum,
        // which decode to binary, are not.
        assert_eq!(texts(data), vec![(Encoding::Percent, " ".to_string())]);
    }

    #[test]
    fn utf16_and_archives_are_recognised() {
        let utf16: Vec<u8> = format!("k={KEY}\n")
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(utf16_text(&utf16).unwrap(), format!("k={KEY}\n").as_bytes());
        assert_eq!(utf16_text(b"plain text, no zeros"), None);
        // binary with zeros alone and in runs, between bytes that are not: the same bytes
        // as a filter keeps
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in (0..300).chain([1000, 4099]) {
            let mut data: Vec<u8> = Vec::new();
            while data.len() < len {
                let run = (next() % 20) as usize;
                let zero = next().is_multiple_of(2);
                for _ in 0..run {
                    let b = (next() >> 8) as u8;
                    data.push(if zero { 0 } else { b.max(1) });
                }
            }
            data.truncate(len);
            let kept: Vec<u8> = data.iter().copied().filter(|&b| b != 0).collect();
            assert_eq!(without_zeros(&data, kept.len()), kept, "{len}");
            let zeros = len - kept.len();
            let quarter = zeros * 4 >= len;
            assert_eq!(quarter_zeros(&data), quarter.then_some(zeros), "{len}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                // SAFETY: AVX-512BW and POPCNT were detected just above.
                assert_eq!(unsafe { avx512::count_zeros(&data) }, zeros, "{len}");
            }
            let want = (len >= 8 && quarter).then(|| kept.clone());
            assert_eq!(utf16_text(&data), want, "{len}");
            assert_eq!(without_zeros_words(&data, kept.len()), kept, "{len}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vbmi2")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                // SAFETY: AVX-512BW, AVX-512VBMI2 and POPCNT were detected just above.
                let got = unsafe { avx512::without_zeros(&data, kept.len()) };
                assert_eq!(got, kept, "avx512 {len}");
            }
        }
        // Zeros just under, at and over a quarter, spread out or all at the end (where the
        // count may give up only once they cannot make up a quarter), over several chunks.
        for len in [7usize, 8, 9, 100, 4095, 4096, 4097, 12_288, 20_001] {
            let need = len.div_ceil(4);
            for zeros in [0, need.saturating_sub(1), need, need + 1, len] {
                for at_end in [false, true] {
                    let mut data = vec![b'a'; len];
                    for k in 0..zeros {
                        let at = if at_end {
                            len - 1 - k
                        } else {
                            // spread: every (len / zeros)-th byte
                            k * len / zeros
                        };
                        data[at] = 0;
                    }
                    let got = data.iter().filter(|&&b| b == 0).count();
                    assert_eq!(got, zeros, "{len} {zeros} {at_end}");
                    let quarter = zeros * 4 >= len;
                    assert_eq!(
                        quarter_zeros(&data),
                        quarter.then_some(zeros),
                        "{len} {zeros} {at_end}"
                    );
                    let want = (len >= 8 && quarter).then(|| vec![b'a'; len - zeros]);
                    assert_eq!(utf16_text(&data), want, "{len} {zeros} {at_end}");
                }
            }
        }
        assert_eq!(
            unreadable_kind(b"\x1f\x8b\x08\0rest"),
            Some("gzip-compressed")
        );
        assert_eq!(unreadable_kind(b"PK\x03\x04rest"), Some("a zip archive"));
        assert_eq!(unreadable_kind(b"BZh is a word"), None);
        assert_eq!(
            unreadable_kind(b"Salted__\x01\x02\x03\x04\x05\x06\x07\x08cipher"),
            Some("openssl-encrypted")
        );
        assert_eq!(
            unreadable_kind(b"\x85\x01\x0c\x03\x11\x22"),
            Some("PGP-encrypted")
        );
        assert_eq!(unreadable_kind(b"\x85 not pgp"), None);
        assert_eq!(unreadable_kind(b"plain"), None);
    }
}
