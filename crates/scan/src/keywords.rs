//! The keyword search by trigrams: every keyword occurrence in some bytes, found without a
//! byte-at-a-time automaton.
//!
//! Why: the rules have ~330 keywords, matched without regard to ASCII case. With that many
//! the `aho_corasick` crate builds no SIMD prefilter and its DFA reads one byte, looks its
//! next state up, and only then reads the next: a chain of dependent loads, the largest part
//! of judging an upload (issue 15 §3). Here each keyword is known by one of its trigrams,
//! picked to be rare in text (a keyword of two bytes by its two bytes and any third); a
//! trigram is reduced to 15 bits (each byte to one of 32 classes, letters case-folded), and
//! a 4 KiB bit set says which of the 32,768 reductions some keyword uses. The walk reads
//! each position's reduction and its bit, independently of the others (no chain), and only
//! where a bit is set looks up the keywords that use it and compares them with the bytes.
//!
//! Exact: every occurrence of a keyword holds its trigram at its offset, so the bit of that
//! position is set and the comparison finds it; the comparison alone decides, so a set bit
//! where no keyword is costs time, never a false hit. The hits are ordered as the
//! automaton's overlapping search reports them (by end, longer first, then pattern number),
//! so the engine's windows are what they were (tests against the DFA below and in
//! `engine`).

use aho_corasick::{Match, PatternID};

/// The classes bytes are reduced to (5 bits): 0 white space and control bytes, 1–26 the
/// letters without case, 27 digits, 28 `_`, 29 `-`, 30 `.`, 31 everything else.
const CLASS: [u8; 256] = {
    let mut t = [31u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            0..=0x20 | 0x7f => 0,
            b'a'..=b'z' => c - b'a' + 1,
            b'A'..=b'Z' => c - b'A' + 1,
            b'0'..=b'9' => 27,
            b'_' => 28,
            b'-' => 29,
            b'.' => 30,
            _ => 31,
        };
        b += 1;
    }
    t
};

/// The reduction of three bytes' classes.
#[inline(always)]
fn key(a: u8, b: u8, c: u8) -> usize {
    (usize::from(a) << 10) | (usize::from(b) << 5) | usize::from(c)
}

/// Common letter pairs of English text and code, most common first (after the usual
/// bigram tables): a trigram made of them is a poor pick.
const COMMON_PAIRS: &str = "th he in er an re on at en nd ti es or te of ed is it al ar st to \
    nt ng se ha as ou io le ve co me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur ca el \
    ta la ns di fo ho pe ec pr no ct us ac ot il tr ly nc et ut ss so rs un lo wa ge ie wh ee \
    wi em ad ol rt po we na ul ni ts mo ow pa im mi ai sh ir su id os iv ia am fi ci vi pl ig \
    tu ev ld ry mp fe bl ab gh ty op wo sa ay ex ke fr oo av ag if ap gr od bo sp rd do uc bu \
    ei ov by rm ep tt oc fa ef cu rn sc gi da yo cr cl du ga qu ue ff ba ey ls va um pp ua up \
    lu go ht ru ug ds lt pi rc rr eg au ck ew mu br bi pt ak pu ui rg ib tl ny ki rk ys ob mm \
    fu ph og ms ye ud mb ip ub oi rl gu dr hr cc tw ft wn nu af hu nn eo vo rv nf xp gn sm fl \
    iz ok nl my gl aw ju oa eq sy sl ps jo";

/// How common a pair of classes is in text (higher: more common).
fn pair_weight(common: &[[u16; 32]; 32], a: u8, b: u8) -> u32 {
    // White space next to anything is common.
    if a == 0 || b == 0 {
        return 1000;
    }
    u32::from(common[usize::from(a)][usize::from(b)])
}

/// The keyword search of [`crate::engine::Engine`] (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Trigrams {
    /// Bit `k` set: some keyword uses the reduction `k`.
    bits: Box<[u32; 1024]>,
    /// (reduction, pattern, offset of the trigram in it), sorted by reduction.
    uses: Vec<(u16, PatternID, u32)>,
    patterns: Vec<Box<[u8]>>,
}

impl Trigrams {
    /// The search for these keywords; `None` when one is shorter than two bytes (the
    /// caller uses the automaton).
    pub(crate) fn new<P: AsRef<[u8]>>(patterns: &[P]) -> Option<Self> {
        if patterns.is_empty() || patterns.iter().any(|p| p.as_ref().len() < 2) {
            return None;
        }
        let mut common = [[0u16; 32]; 32];
        let pairs: Vec<&str> = COMMON_PAIRS.split_whitespace().collect();
        for (rank, p) in pairs.iter().enumerate() {
            let p = p.as_bytes();
            common[usize::from(CLASS[usize::from(p[0])])][usize::from(CLASS[usize::from(p[1])])] =
                u16::try_from(pairs.len() - rank).unwrap_or(u16::MAX);
        }
        let mut uses: Vec<(u16, PatternID, u32)> = Vec::new();
        for (pid, p) in patterns.iter().enumerate() {
            let p = p.as_ref();
            let pid = PatternID::new(pid).ok()?;
            let c: Vec<u8> = p.iter().map(|&b| CLASS[usize::from(b)]).collect();
            if c.len() == 2 {
                // Two bytes: the trigram is theirs and any byte after (or none: the end of
                // the input reads as class 0).
                for x in 0..32 {
                    uses.push((key(c[0], c[1], x) as u16, pid, 0));
                }
                continue;
            }
            let off = (0..c.len() - 2)
                .min_by_key(|&o| {
                    pair_weight(&common, c[o], c[o + 1]) + pair_weight(&common, c[o + 1], c[o + 2])
                })
                .unwrap_or(0);
            uses.push((key(c[off], c[off + 1], c[off + 2]) as u16, pid, off as u32));
        }
        uses.sort_unstable();
        let mut bits = Box::new([0u32; 1024]);
        for &(k, _, _) in &uses {
            bits[usize::from(k) >> 5] |= 1 << (k & 31);
        }
        Some(Trigrams {
            bits,
            uses,
            patterns: patterns.iter().map(|p| p.as_ref().into()).collect(),
        })
    }

    #[inline(always)]
    fn bit(&self, k: usize) -> u32 {
        self.bits[k >> 5] >> (k & 31)
    }

    /// Every keyword occurrence in `data` (overlapping ones included), in the order of the
    /// automaton's overlapping search: by end, then the longer first, then by pattern.
    pub(crate) fn hits(&self, data: &[u8]) -> Vec<Match> {
        let mut out = Vec::new();
        let n = data.len();
        if n < 2 {
            return out;
        }
        // Positions 0..n-1 start a trigram (the last one's third byte is past the end and
        // reads as class 0); walked 16 at a time, a block looked at closer only when one of
        // its bits is set.
        const BLOCK: usize = 16;
        let mut p = 0;
        while p + BLOCK + 2 <= n {
            let w: &[u8; BLOCK + 2] = data[p..p + BLOCK + 2]
                .try_into()
                .unwrap_or_else(|_| unreachable!());
            let c: [u8; BLOCK + 2] = std::array::from_fn(|i| CLASS[usize::from(w[i])]);
            let mut any = 0;
            for i in 0..BLOCK {
                any |= self.bit(key(c[i], c[i + 1], c[i + 2]));
            }
            if any & 1 != 0 {
                for i in 0..BLOCK {
                    let k = key(c[i], c[i + 1], c[i + 2]);
                    if self.bit(k) & 1 != 0 {
                        self.verify(data, p + i, k, &mut out);
                    }
                }
            }
            p += BLOCK;
        }
        while p + 1 < n {
            let third = data.get(p + 2).map_or(0, |&b| CLASS[usize::from(b)]);
            let k = key(
                CLASS[usize::from(data[p])],
                CLASS[usize::from(data[p + 1])],
                third,
            );
            if self.bit(k) & 1 != 0 {
                self.verify(data, p, k, &mut out);
            }
            p += 1;
        }
        // Found by where their trigram is; reported by where they end (the automaton's order).
        out.sort_unstable_by_key(|m| (m.end(), std::cmp::Reverse(m.len()), m.pattern()));
        out
    }

    /// The keywords whose trigram reduces to `k` at position `p`, compared with the bytes.
    #[cold]
    #[inline(never)]
    fn verify(&self, data: &[u8], p: usize, k: usize, out: &mut Vec<Match>) {
        let from = self.uses.partition_point(|u| usize::from(u.0) < k);
        for &(uk, pid, off) in &self.uses[from..] {
            if usize::from(uk) != k {
                break;
            }
            let pat = &self.patterns[pid.as_usize()];
            let Some(start) = p.checked_sub(off as usize) else {
                continue;
            };
            let end = start + pat.len();
            if end <= data.len() && data[start..end].eq_ignore_ascii_case(pat) {
                out.push(Match::new(pid, start..end));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::{AhoCorasick, MatchKind};

    #[test]
    fn hits_are_every_overlapping_match_in_the_automatons_order() {
        // Keywords inside others, sharing prefixes and suffixes, of two bytes and more, one
        // twice under different case, classes that fold several bytes into one.
        let patterns = [
            "pass", "password", "sword", "wo", "key=", "token=", "ken", "KEN", "ssw", "q~", "a$",
            "$a", "sk", "x.y", "x-y", "é1",
        ];
        let t = Trigrams::new(&patterns).unwrap();
        // The reference: the crate's overlapping search.
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(patterns)
            .unwrap();
        let alphabet = "paswordkeytn=PASWORDKEY \n~q$x.y-_/é1".as_bytes();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for case in 0..30_000 {
            let len = match case % 10 {
                0 => 300,
                1 => case % 7,
                _ => 24,
            };
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            assert_eq!(
                t.hits(&data),
                ac.find_overlapping_iter(&data[..]).collect::<Vec<_>>(),
                "{:?}",
                String::from_utf8_lossy(&data)
            );
        }
    }

    #[test]
    fn too_short_a_keyword_is_left_to_the_automaton() {
        assert!(Trigrams::new(&["k", "key"]).is_none());
        assert!(Trigrams::new(&["", "key"]).is_none());
        assert!(Trigrams::new::<&str>(&[]).is_none());
    }
}
