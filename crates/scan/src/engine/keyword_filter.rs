//! A candidate filter in front of the keyword DFA: with AVX-512 (BW, VBMI, VBMI2), 64
//! positions at a time are tested for one trigram per keyword, and only the keywords a
//! position's trigram stands for are compared there.
//!
//! Why: the DFA reads every byte, one dependent load after another (four lanes in step hide
//! part of that); on source files it was about a fifth of a scan's time, on a DLP upload most
//! of the judging. Most 64-byte blocks of text hold no keyword's rarest trigram (two in three
//! of the cargo registry's `.rs` blocks, every block of the DLP bench's upload), and a block
//! costs the filter a few dozen instructions. Where candidates come dense (more than
//! [`DENSE`] in [`STRETCH`] blocks) their checks cost more than the lanes, which then search
//! the next stretch (see bench/README.md, session kwsimd, for what it measured).
//!
//! Exact (the same matches in the same order as the DFA's overlapping search): each keyword
//! is known by one of its trigrams (one of its bytes or two for shorter keywords), chosen to
//! be rare, and every occurrence of the keyword holds it; the filter reports every position
//! where such a trigram begins (it can report more: rare bytes share a class, and a byte from
//! 0x80 on is of no keyword's class), and each keyword known by the trigram is compared
//! there, ASCII case folded as the DFA folds it. So every occurrence is found, once (from
//! its own trigram's position). The order: by end; occurrences ending at one byte are
//! ordered by the DFA's state after that byte (walked from the longest keyword's length
//! minus one before it: the state stands for the longest suffix read that begins a keyword,
//! never longer than a keyword, the lanes' argument), and where that state's matches are
//! not the ones found, the caller searches the usual way. Around the lanes' stretches the
//! filter starts the longest keyword's length minus one before their end and reports only
//! what ends after it.

use aho_corasick::Anchored;
use aho_corasick::automaton::Automaton;
use aho_corasick::dfa::DFA;

/// Blocks of 64 positions over which candidates are counted.
const STRETCH: usize = 64;
/// More candidates than this in a stretch: the lanes search the next [`LANES_STRETCH`] bytes
/// (64 in 4 KiB, 32 before session kwdense: with each keyword known by a rarer trigram the
/// filter's candidates are more often keywords, and on the registry's files, their `.rs` and
/// `.md` files and `.a` archives the filter was faster than the lanes up to there; the
/// lanes stay faster on a text of keywords alone and about even on base64, bench/README.md).
const DENSE: u32 = 64;

/// Bytes the lanes search after a stretch of too many candidates, before the filter
/// takes over again.
const LANES_STRETCH: usize = 64 * 1024;

/// Classes of a trigram's first and second bytes (6 bits each: a word of the table each).
const CLASSES: usize = 64;
/// Classes of a trigram's third byte (5 bits: a bit of a word).
const THIRD_CLASSES: usize = 32;

/// How often each pair of adjacent bytes occurs in source and text, on a log scale (entry
/// `128 * a + b`; written by `byte_pairs.py`, which says how): the rule by which each
/// keyword's trigram is chosen.
static BYTE_PAIRS: &[u8; 128 * 128] = include_bytes!("byte_pairs.bin");

/// The 8192 most frequent trigrams of the same files, in the order of their bytes, 4 bytes
/// each: the trigram (folded as [`BYTE_PAIRS`]), then 8 times the log2 of 1 + its count per
/// 16 MiB (written by `byte_pairs.py`).
static TRIGRAMS: &[u8; 8192 * 4] = include_bytes!("trigrams.bin");

/// How often each byte (ASCII letters folded to lower case, bytes from 0x80 on counted with
/// their low seven bits) occurs, per million bytes, in 20 MB of files of the cargo registry
/// (`~/.cargo/registry/src`, files in random order, 2026-12-07): the rule by which rare
/// trigrams are chosen and rare keyword bytes share a class. Computed with
/// `c.update(open(f, 'rb').read().lower())` in Python, then the counts of `b & 127` scaled.
#[rustfmt::skip]
const BYTE_FREQUENCY: [u32; 128] = [
    111828, 5111, 1626, 2265, 1727, 593, 1041, 1100, 675, 1131, 17862, 155, 1244, 187, 204, 142,
    779, 144, 270, 193, 284, 124, 202, 128, 224, 138, 215, 219, 235, 183, 247, 181,
    160018, 1259, 5452, 1366, 2360, 786, 1365, 1112, 6158, 6150, 1804, 464, 11326, 3368, 10832, 9163,
    12179, 7724, 8292, 5475, 4713, 2792, 5390, 2048, 3800, 1469, 12553, 3323, 1354, 3415, 2061, 453,
    7686, 36, 72, 42, 63, 36, 63, 35, 64, 38, 68, 38, 71, 42, 69, 43,
    70, 42, 68, 37, 65, 37, 68, 36, 109, 74, 63, 1775, 1858, 1717, 214, 28140,
    3052, 35078, 9452, 21456, 22446, 56558, 13116, 9202, 8462, 35592, 1672, 4106, 26101, 16452, 28723, 27890,
    20893, 1654, 33591, 33088, 44661, 18954, 5377, 6475, 5160, 6295, 1598, 3078, 502, 3079, 210, 2510,
];

/// The filter for one set of keywords (see the module docs).
#[derive(Debug)]
pub(super) struct KeywordFilter {
    /// The class of each byte below 0x80 as a trigram's first or second byte (ASCII letters
    /// folded); 0: no keyword's byte.
    classes: [u8; 128],
    /// The class of each byte below 0x80 as a trigram's third byte; 0: no trigram's.
    third: [u8; 128],
    /// Bit `c` of word `a * 64 + b`: some keyword's trigram is of the classes `(a, b, c)`.
    table: Box<[u32; CLASSES * CLASSES]>,
    /// The first stage's index of a trigram's first byte (its coarse class times 4).
    pair_first: [u8; 128],
    /// The first stage's index of a trigram's second byte (its coarse class over 8).
    pair_second: [u8; 128],
    /// The first stage's bit of a trigram's second byte (1 << its coarse class mod 8).
    pair_bit: [u8; 128],
    /// Bit `b % 8` of byte `a * 4 + b / 8`: some keyword's trigram begins with bytes of the
    /// coarse classes `(a, b)`.
    pairs: [u8; 128],
    /// The keywords, folded (indexed by pattern id).
    keywords: Vec<Vec<u8>>,
    /// For each word of `table`, the keywords known by a trigram of its classes.
    known_by: Vec<Vec<Known>>,
    /// [`DENSE`] (the tests try others).
    dense: u32,
    /// [`LANES_STRETCH`] (the tests try others).
    lanes_stretch: usize,
}

/// A keyword known by a trigram (see [`KeywordFilter::known_by`]).
#[derive(Debug, Clone, Copy)]
struct Known {
    /// The class of the trigram's third byte; [`ANY`] for a keyword of one or two bytes.
    third: u8,
    /// The keyword's pattern id.
    id: u32,
    /// Where the trigram begins in the keyword.
    at: u32,
}

/// See [`Known::third`].
const ANY: u8 = 0xff;

impl KeywordFilter {
    /// The filter for `patterns` (the DFA's, in its order), or `None` where it does not
    /// apply: a processor without AVX-512 BW and VBMI, an empty keyword, a keyword byte
    /// from 0x80 on (the classes fold ASCII only).
    pub(super) fn new<P: AsRef<[u8]>>(patterns: &[P]) -> Option<Self> {
        if !supported() {
            return None;
        }
        Self::build(patterns)
    }

    /// [`KeywordFilter::new`] whatever the processor (the tests' way to check the tables
    /// on any machine).
    fn build<P: AsRef<[u8]>>(patterns: &[P]) -> Option<Self> {
        let folded: Vec<Vec<u8>> = patterns
            .iter()
            .map(|p| p.as_ref().to_ascii_lowercase())
            .collect();
        if folded.is_empty() || folded.iter().any(|p| p.is_empty() || !p.is_ascii()) {
            return None;
        }
        // Each keyword's trigram: the one of the least [`trigram_cost`].
        let (common, _) = TRIGRAMS.as_chunks::<4>();
        let least = common.iter().map(|e| e[3]).min().unwrap_or(0);
        let cost = |t: &[u8]| trigram_cost(t, least);
        let trigrams: Vec<&[u8]> = folded
            .iter()
            .map(|p| p.windows(3).min_by_key(|t| cost(t)).unwrap_or(p.as_slice()))
            .collect();
        // Every keyword byte its own class while there are classes for them; beyond that the
        // rarest share the last one. The same for the trigrams' third bytes.
        let classes = class_map(folded.iter().flatten().copied(), CLASSES);
        let third = class_map(
            trigrams.iter().filter_map(|t| t.get(2).copied()),
            THIRD_CLASSES,
        );
        let mut table = Box::new([0u32; CLASSES * CLASSES]);
        let mut known_by: Vec<Vec<Known>> = vec![Vec::new(); CLASSES * CLASSES];
        for (id, (p, t)) in folded.iter().zip(&trigrams).enumerate() {
            let a = usize::from(classes[usize::from(t[0])]) * CLASSES;
            let known = Known {
                third: ANY,
                id: u32::try_from(id).ok()?,
                // Where the trigram begins in its keyword.
                at: u32::try_from(t.as_ptr() as usize - p.as_ptr() as usize).ok()?,
            };
            match t {
                [_] => {
                    for word in a..a + CLASSES {
                        table[word] = u32::MAX;
                        known_by[word].push(known);
                    }
                }
                [_, b] => {
                    let word = a + usize::from(classes[usize::from(*b)]);
                    table[word] = u32::MAX;
                    known_by[word].push(known);
                }
                [_, b, c, ..] => {
                    let word = a + usize::from(classes[usize::from(*b)]);
                    let c = third[usize::from(*c)];
                    table[word] |= 1 << c;
                    known_by[word].push(Known { third: c, ..known });
                }
                [] => return None,
            }
        }
        // The first stage: coarse classes of the trigrams' first and second bytes.
        let first = class_map(trigrams.iter().map(|t| t[0]), 32);
        let second = class_map(trigrams.iter().filter_map(|t| t.get(1).copied()), 32);
        let mut pairs = [0u8; 128];
        for t in &trigrams {
            let a = usize::from(first[usize::from(t[0])]) * 4;
            match t.get(1) {
                Some(&b) => {
                    let b = second[usize::from(b)];
                    pairs[a + usize::from(b / 8)] |= 1 << (b % 8);
                }
                None => pairs[a..a + 4].fill(0xff),
            }
        }
        Some(Self {
            classes,
            third,
            table,
            pair_first: first.map(|a| a * 4),
            pair_second: second.map(|b| b / 8),
            pair_bit: second.map(|b| 1 << (b % 8)),
            pairs,
            keywords: folded,
            known_by,
            dense: DENSE,
            lanes_stretch: LANES_STRETCH,
        })
    }

    /// Every match of `dfa` (built from the patterns this filter was, case-insensitive) in
    /// `data`, in the order of its overlapping search; `None` (the caller searches another
    /// way) for an automaton this does not handle: an empty keyword, a dead state.
    pub(super) fn hits(&self, dfa: &DFA, data: &[u8]) -> Option<Vec<aho_corasick::Match>> {
        if dfa.min_pattern_len() == 0 {
            return None;
        }
        let n = data.len();
        let warm = dfa.max_pattern_len().saturating_sub(1);
        let mut out = Vec::new();
        // The filter's part begins at `from`, and reports the matches that end after `after`
        // (it finds every occurrence whose trigram begins at `from` or later, so every one
        // ending more than the longest keyword's length minus one after it).
        let (mut from, mut after) = (0, 0);
        loop {
            // (end, start, pattern) of every occurrence, found from its trigram's position.
            let mut found: Vec<(usize, usize, u32)> = Vec::new();
            let dense = self.scan(data, from, &mut found);
            let until = dense.unwrap_or(n);
            // Candidates before `until` found every occurrence ending there or before.
            found.retain(|&(end, _, _)| end > after && end <= until);
            out.extend(self.in_dfa_order(dfa, data, found)?);
            if until == n {
                return Some(out);
            }
            // Too many candidates: the lanes search a stretch, for the matches ending after
            // `until` (reading from the longest keyword's length minus one before it).
            let to = n.min(until + self.lanes_stretch);
            let read = until.checked_sub(warm)?;
            let lanes = super::lane_hits(dfa, &data[read..to])?;
            out.extend(
                lanes
                    .into_iter()
                    .filter(|m| m.end() + read > until)
                    .map(|m| {
                        aho_corasick::Match::new(m.pattern(), m.start() + read..m.end() + read)
                    }),
            );
            if to == n {
                return Some(out);
            }
            from = to.checked_sub(warm)?;
            after = to;
        }
    }

    /// The occurrences of keywords whose trigrams begin at `from` or later, in `found`; or,
    /// where [`DENSE`] candidates come in a stretch of [`STRETCH`] blocks, those of the
    /// candidates before the stretch's end, and `Some` of that end (each candidate costs
    /// about what the lanes cost for 100 bytes).
    fn scan(
        &self,
        data: &[u8],
        from: usize,
        found: &mut Vec<(usize, usize, u32)>,
    ) -> Option<usize> {
        let n = data.len();
        // Whole blocks read in place, then the rest from a copy padded with zero bytes (of no
        // class: no candidate from them).
        let whole = n.saturating_sub(from + 2) / 64;
        #[cfg(target_arch = "x86_64")]
        let dense = if supported() {
            // SAFETY: the processor has AVX-512 F, BW, VBMI, VBMI2, BMI1, BMI2 and POPCNT
            // (checked just above).
            unsafe { self.blocks_avx512(data, from, whole, found) }
        } else {
            self.blocks_scalar(data, from, whole, found)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let dense = self.blocks_scalar(data, from, whole, found);
        if dense.is_some() {
            return dense;
        }
        let mut base = from + whole * 64;
        while base < n {
            let mut padded = [0u8; 66];
            let rest = &data[base..n.min(base + 66)];
            padded[..rest.len()].copy_from_slice(rest);
            let valid = if n - base >= 64 {
                u64::MAX
            } else {
                (1 << (n - base)) - 1
            };
            let mut mask = self.mask(&padded) & valid;
            while mask != 0 {
                self.verify(data, base + mask.trailing_zeros() as usize, found);
                mask &= mask - 1;
            }
            base += 64;
        }
        None
    }

    /// The occurrences `found`, in the order of the DFA's overlapping search: by end, and
    /// those ending at one byte in the order of the DFA's state there (the state after the
    /// longest keyword's length minus one bytes before it, as a search from the start has
    /// it). `None` where the DFA finds other keywords there (never, if the filter holds what
    /// its module docs say).
    fn in_dfa_order(
        &self,
        dfa: &DFA,
        data: &[u8],
        mut found: Vec<(usize, usize, u32)>,
    ) -> Option<Vec<aho_corasick::Match>> {
        found.sort_unstable();
        let start = dfa.start_state(Anchored::No).ok()?;
        let warm = dfa.max_pattern_len().saturating_sub(1);
        let mut out = Vec::with_capacity(found.len());
        for group in found.chunk_by(|x, y| x.0 == y.0) {
            if let [(end, start, id)] = group {
                out.push(aho_corasick::Match::new(
                    aho_corasick::PatternID::new(*id as usize).ok()?,
                    *start..*end,
                ));
                continue;
            }
            let end = group[0].0;
            let mut sid = start;
            for &b in &data[(end - 1).saturating_sub(warm)..end] {
                sid = dfa.next_state(Anchored::No, sid, b);
            }
            if dfa.is_dead(sid) {
                return None;
            }
            let before = out.len();
            super::push_matches(dfa, sid, end, &mut out);
            let same = out.len() - before == group.len()
                && out[before..].iter().all(|m| {
                    group
                        .iter()
                        .any(|&(_, s, id)| m.start() == s && m.pattern().as_usize() == id as usize)
                });
            if !same {
                return None;
            }
        }
        Some(out)
    }

    /// The occurrences of the keywords known by the trigram at `q` (the filter's candidate).
    #[inline]
    fn verify(&self, data: &[u8], q: usize, found: &mut Vec<(usize, usize, u32)>) {
        let class = |map: &[u8; 128], i: usize| {
            data.get(i)
                .and_then(|&x| map.get(usize::from(x)))
                .copied()
                .unwrap_or(0)
        };
        let (a, b) = (class(&self.classes, q), class(&self.classes, q + 1));
        let c = class(&self.third, q + 2);
        let word = usize::from(a) * CLASSES + usize::from(b);
        for k in self.known_by.get(word).into_iter().flatten() {
            if k.third != c && k.third != ANY {
                continue;
            }
            let Some(keyword) = self.keywords.get(k.id as usize) else {
                continue;
            };
            let Some(start) = q.checked_sub(k.at as usize) else {
                continue;
            };
            let end = start + keyword.len();
            if data
                .get(start..end)
                .is_some_and(|s| s.eq_ignore_ascii_case(keyword))
            {
                found.push((end, start, k.id));
            }
        }
    }

    /// [`KeywordFilter::scan`]'s `whole` blocks from `from`, each read in place.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi1,bmi2,popcnt")]
    fn blocks_avx512(
        &self,
        data: &[u8],
        from: usize,
        whole: usize,
        found: &mut Vec<(usize, usize, u32)>,
    ) -> Option<usize> {
        assert!(whole == 0 || from + whole * 64 + 2 <= data.len());
        let maps = self.maps();
        self.walk_blocks(data, from, whole, found, |base| {
            // SAFETY: base + 66 <= from + whole * 64 + 2 <= data.len() (asserted above).
            unsafe { self.block_mask(&maps, data.as_ptr().add(base)) }
        })
    }

    /// [`KeywordFilter::blocks_avx512`] one position after another (elsewhere, and the
    /// tests' reference).
    fn blocks_scalar(
        &self,
        data: &[u8],
        from: usize,
        whole: usize,
        found: &mut Vec<(usize, usize, u32)>,
    ) -> Option<usize> {
        self.walk_blocks(data, from, whole, found, |base| {
            data.get(base..base + 66)
                .and_then(|b| b.try_into().ok())
                .map_or(u64::MAX, |b| self.mask(b))
        })
    }

    /// The blocks' walk both mask versions share: `mask(base)` is the candidates of the 64
    /// positions from `base`, each verified; a stretch denser than [`DENSE`] ends the walk
    /// (`Some`: where the lanes take over). Inlined into each caller, so the AVX-512 one is
    /// compiled with its features and its mask inlined.
    #[inline(always)]
    fn walk_blocks(
        &self,
        data: &[u8],
        from: usize,
        whole: usize,
        found: &mut Vec<(usize, usize, u32)>,
        mut mask_at: impl FnMut(usize) -> u64,
    ) -> Option<usize> {
        let mut candidates = 0;
        // Each block's mask is found before the previous block's candidates are checked: its
        // loads and its gather are in flight meanwhile, where before they waited on the
        // branches of the check (session kwdense: the search alone 15% faster on the registry's
        // files, 17% on the DLP upload line; two blocks ahead was no faster than one).
        let mut next = if whole > 0 { mask_at(from) } else { 0 };
        for block in 0..whole {
            let base = from + block * 64;
            let mut mask = next;
            if block + 1 < whole {
                next = mask_at(base + 64);
            }
            candidates += mask.count_ones();
            while mask != 0 {
                self.verify(data, base + mask.trailing_zeros() as usize, found);
                mask &= mask - 1;
            }
            if (block + 1) % STRETCH == 0 {
                if candidates > self.dense && base + 64 < data.len() {
                    return Some(base + 64);
                }
                candidates = 0;
            }
        }
        None
    }

    /// Bit i: a keyword's trigram (as the classes see it) begins at `bytes[i]`.
    fn mask(&self, bytes: &[u8; 66]) -> u64 {
        let class = |map: &[u8; 128], x: u8| map.get(usize::from(x)).copied().unwrap_or(0);
        let mut mask = 0;
        for i in 0..64 {
            let a = usize::from(class(&self.classes, bytes[i]));
            let b = usize::from(class(&self.classes, bytes[i + 1]));
            let c = class(&self.third, bytes[i + 2]);
            mask |= u64::from(self.table[a * CLASSES + b] >> c & 1) << i;
        }
        mask
    }

    /// Bit i: a keyword's trigram (as the classes see it) begins at `at + i`.
    ///
    /// Two stages: the trigram's first two bytes in coarser classes (one table of 1024 bits,
    /// one `vpermi2b`), which most positions of text fail (but few blocks: of the registry's
    /// `.rs` files about 98 blocks in 100 hold a position that passes, session kwdense);
    /// then, for the positions that pass, packed 16 at a time, the trigram table (a gather).
    ///
    /// # Safety
    /// The 66 bytes from `at` are readable; `maps` are [`KeywordFilter::maps`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi1,bmi2,popcnt")]
    #[inline]
    unsafe fn block_mask(&self, maps: &Maps, at: *const u8) -> u64 {
        use std::arch::x86_64::*;
        // SAFETY: k + 64 <= 66 bytes from `at` (the caller's promise).
        let [x0, x1, x2] = std::array::from_fn(|k| unsafe { _mm512_loadu_si512(at.add(k).cast()) });
        let look = |map: [__m512i; 2], x| _mm512_permutex2var_epi8(map[0], x, map[1]);
        let index = _mm512_or_si512(look(maps.pair_first, x0), look(maps.pair_second, x1));
        let mut pairs = _mm512_test_epi8_mask(look(maps.pairs, index), look(maps.pair_bit, x1));
        if pairs == 0 {
            return 0;
        }
        // The exact classes (0 for bytes from 0x80 on).
        let exact = |map: [__m512i; 2], x| {
            _mm512_maskz_permutex2var_epi8(!_mm512_movepi8_mask(x), map[0], x, map[1])
        };
        let (c0, c1, c2) = (
            exact(maps.classes, x0),
            exact(maps.classes, x1),
            exact(maps.third, x2),
        );
        let one = _mm512_set1_epi32(1);
        let table = self.table.as_ptr().cast::<i32>();
        let mut mask = 0;
        while pairs != 0 {
            let packed = |c| _mm512_castsi512_si128(_mm512_maskz_compress_epi8(pairs, c));
            let a = _mm512_cvtepu8_epi32(packed(c0));
            let b = _mm512_cvtepu8_epi32(packed(c1));
            let c = _mm512_cvtepu8_epi32(packed(c2));
            let word = _mm512_or_si512(_mm512_slli_epi32::<6>(a), b);
            // SAFETY: every index is below 64 * 64 (classes are below 64; packed-out lanes
            // are 0), the table's length in 4-byte words.
            let rows = unsafe { _mm512_i32gather_epi32::<4>(word, table) };
            let hit = _mm512_test_epi32_mask(rows, _mm512_sllv_epi32(one, c));
            // The first 16 positions of `pairs` (in order) are the 16 lanes.
            let lanes = _pdep_u64(0xffff, pairs);
            mask |= _pdep_u64(u64::from(hit), pairs);
            pairs &= !lanes;
        }
        mask
    }

    /// The tables of [`KeywordFilter::block_mask`] in registers.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn maps(&self) -> Maps {
        let halves = |map: &[u8; 128]| -> [std::arch::x86_64::__m512i; 2] {
            std::array::from_fn(|h| {
                // SAFETY: each map holds 128 bytes; each half is 64 of them.
                unsafe { std::arch::x86_64::_mm512_loadu_si512(map[h * 64..].as_ptr().cast()) }
            })
        };
        Maps {
            classes: halves(&self.classes),
            third: halves(&self.third),
            pair_first: halves(&self.pair_first),
            pair_second: halves(&self.pair_second),
            pair_bit: halves(&self.pair_bit),
            pairs: halves(&self.pairs),
        }
    }
}

/// [`KeywordFilter`]'s maps, each in two registers (bytes 0..64 and 64..128).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Maps {
    classes: [std::arch::x86_64::__m512i; 2],
    third: [std::arch::x86_64::__m512i; 2],
    pair_first: [std::arch::x86_64::__m512i; 2],
    pair_second: [std::arch::x86_64::__m512i; 2],
    pair_bit: [std::arch::x86_64::__m512i; 2],
    pairs: [std::arch::x86_64::__m512i; 2],
}

/// Whether this processor runs the filter.
fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
            && std::arch::is_x86_feature_detected!("avx512vbmi2")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What knowing a keyword by the trigram `t` (three bytes, folded) costs the filter, on a log
/// scale (16 times the log2 of a count per 16 MiB): mostly how often the trigram occurs (each
/// occurrence a candidate checked), and 1/64 of how often its first two bytes do (the
/// positions [`KeywordFilter::block_mask`]'s first stage passes, each a lane of a gather).
///
/// The trigram's count: from [`TRIGRAMS`] where it is one of the most frequent, else
/// estimated from its pairs (the pairs' counts less the middle byte's, in the log domain),
/// below the least frequent of [`TRIGRAMS`]. Why the counts and not only the estimate: a word
/// makes its trigrams far more frequent than their pairs say; by the estimate alone `not`
/// (of `notion`), `bit` (`bittrex`), `try` (`sentry`), `uns` (`unseal`) were those keywords'
/// trigrams, and two in three of the filter's candidates on the registry's files were such
/// trigrams, no keyword there. Why the pair: with the counts alone more positions of text
/// passed the first stage (16 in 64 of the DLP bench's upload line against 14), and its
/// search got slower (session kwdense, bench/README.md).
/// `least`: the least count of [`TRIGRAMS`].
fn trigram_cost(t: &[u8], least: u8) -> i32 {
    let pair =
        |a: u8, b: u8| i32::from(BYTE_PAIRS[usize::from(a & 127) * 128 + usize::from(b & 127)]);
    let (common, _) = TRIGRAMS.as_chunks::<4>();
    let want = [t[0] & 127, t[1] & 127, t[2] & 127];
    let count = match common.binary_search_by_key(&want, |e| [e[0], e[1], e[2]]) {
        Ok(i) => 2 * i32::from(common[i][3]),
        Err(_) => {
            let estimate = 2 * (pair(t[0], t[1]) + pair(t[1], t[2])) - frequency(t[1]);
            estimate.min(2 * i32::from(least) - 1)
        }
    };
    let lead = f64::from(pair(t[0], t[1])) / 8.0;
    let cost = (f64::from(count) / 16.0).exp2() + lead.exp2() / 64.0;
    (16.0 * cost.log2()) as i32
}

/// How often `b` occurs, on the scale of [`BYTE_PAIRS`] (twice its log).
fn frequency(b: u8) -> i32 {
    let per_16_mib = f64::from(BYTE_FREQUENCY[usize::from(b & 127)]) * 16.78;
    (16.0 * (1.0 + per_16_mib).log2()) as i32
}

/// Classes 1.. for `bytes` (ASCII; upper-case letters with their lower-case ones), the most
/// frequent first; beyond `n - 1` of them the rarest share class `n - 1`.
fn class_map(bytes: impl Iterator<Item = u8>, n: usize) -> [u8; 128] {
    let mut bytes: Vec<u8> = bytes.map(|b| b.to_ascii_lowercase()).collect();
    bytes.sort_unstable();
    bytes.dedup();
    bytes.sort_by_key(|&b| std::cmp::Reverse(BYTE_FREQUENCY[usize::from(b)]));
    let mut map = [0u8; 128];
    for (i, &b) in bytes.iter().enumerate() {
        let class = (i + 1).min(n - 1) as u8;
        map[usize::from(b & 127)] = class;
        map[usize::from(b.to_ascii_uppercase() & 127)] = class;
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DFA as `Engine::new` builds it.
    fn dfa<P: AsRef<[u8]>>(patterns: &[P]) -> DFA {
        DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(aho_corasick::MatchKind::Standard)
            .start_kind(aho_corasick::StartKind::Unanchored)
            .prefilter(false)
            .build(patterns)
            .unwrap()
    }

    fn builtin_patterns() -> Vec<String> {
        let set = crate::config::RuleSet::builtin().unwrap();
        let mut patterns: Vec<String> = Vec::new();
        for rule in set.rules.iter().filter(|r| r.regex.is_some()) {
            for k in &rule.keywords {
                if !patterns.contains(k) {
                    patterns.push(k.clone());
                }
            }
        }
        patterns
    }

    use crate::decode::tests::Rng;

    /// The filter's matches are the reference search's (`dfa_hits`), on `data` and on its
    /// prefixes ending around the blocks' borders.
    fn check(filter: &KeywordFilter, dfa: &DFA, data: &[u8]) {
        let want = super::super::dfa_hits(dfa, data);
        assert_eq!(
            filter.hits(dfa, data).unwrap(),
            want,
            "{:?}",
            String::from_utf8_lossy(data)
        );
    }

    #[test]
    fn planted_keywords_at_every_offset_are_found() {
        let patterns = builtin_patterns();
        let dfa = dfa(&patterns);
        let filter = KeywordFilter::build(&patterns).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Filler without keywords, and filler of keyword-like bytes.
        let fillers: [&[u8]; 3] = [b" ", b"x", b"zq\n"];
        for (n, k) in patterns.iter().enumerate() {
            // Case variants: as written, upper case, mixed.
            let upper = k.to_ascii_uppercase();
            let mixed: String = k
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            let variant = [k.as_str(), &upper, &mixed][n % 3];
            let filler = fillers[n % fillers.len()];
            // Across the first blocks' borders, the tail (after the last whole block) and
            // the restart distance of the walk (a keyword after a candidate).
            for len in [70, 131, 200] {
                for at in 0..len - variant.len() {
                    let mut data: Vec<u8> = filler.iter().copied().cycle().take(len).collect();
                    data[at..at + variant.len()].copy_from_slice(variant.as_bytes());
                    if rng.below(4) == 0 {
                        // A second keyword soon after (the walk's merged stretches).
                        let other = &patterns[rng.below(patterns.len())];
                        let at2 = at + rng.below(60);
                        if at2 + other.len() <= len {
                            data[at2..at2 + other.len()].copy_from_slice(other.as_bytes());
                        }
                    }
                    check(&filter, &dfa, &data);
                }
            }
        }
    }

    #[test]
    fn random_text_of_keyword_pieces_is_searched_exactly() {
        let patterns = builtin_patterns();
        let dfa = dfa(&patterns);
        let filter = KeywordFilter::build(&patterns).unwrap();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for case in 0..3000 {
            let len = [64, 66, 67, 128, 130, 300, 1000, 5000][case % 8];
            let mut data = Vec::with_capacity(len + 30);
            while data.len() < len {
                match rng.below(4) {
                    0 => {
                        // A keyword's piece, in some case.
                        let k = patterns[rng.below(patterns.len())].as_bytes();
                        let s = rng.below(k.len());
                        let e = s + 1 + rng.below(k.len() - s);
                        for &b in &k[s..e] {
                            data.push(if rng.below(2) == 0 {
                                b.to_ascii_uppercase()
                            } else {
                                b
                            });
                        }
                    }
                    1 => data.push(rng.next() as u8),
                    2 => data.extend_from_slice(b" = \""),
                    _ => {
                        let k = patterns[rng.below(patterns.len())].as_bytes();
                        data.extend_from_slice(k);
                    }
                }
            }
            data.truncate(len);
            check(&filter, &dfa, &data);
        }
    }

    #[test]
    fn the_vector_mask_is_the_scalar_one() {
        let patterns = builtin_patterns();
        let filter = KeywordFilter::build(&patterns).unwrap();
        let mut rng = Rng(0x5555_aaaa_1234_4321);
        let text = include_bytes!("../../rules/builtin-cases.toml");
        let mut any = 0u32;
        for case in 0..20_000 {
            let bytes: [u8; 66] = if case % 2 == 0 {
                std::array::from_fn(|_| rng.next() as u8)
            } else {
                let at = rng.below(text.len() - 66);
                std::array::from_fn(|i| text[at + i])
            };
            let scalar = filter.mask(&bytes);
            any += scalar.count_ones();
            #[cfg(target_arch = "x86_64")]
            if supported() {
                // SAFETY: this processor runs the filter; `bytes` holds 66 bytes.
                let vector = unsafe { filter.block_mask(&filter.maps(), bytes.as_ptr()) };
                assert_eq!(vector, scalar, "{bytes:?}");
            }
        }
        // The rules' own test cases hold keywords.
        assert!(any > 1000);
    }

    #[test]
    fn dense_stretches_go_to_the_lanes_and_back() {
        // Stretches dense with keywords (the lanes take over after one) and sparse ones
        // (the filter takes over again), of lengths around the stretches' and the blocks'; with
        // the thresholds the filter has, and with lower ones and short stretches of lanes (more
        // hand-overs, some in the middle of a keyword).
        let patterns = builtin_patterns();
        let dfa = dfa(&patterns);
        let mut filter = KeywordFilter::build(&patterns).unwrap();
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for case in 0..6 {
            let mut data = Vec::new();
            while data.len() < 300_000 {
                let dense = rng.below(2) == 0;
                let len = [100, 4096, 5000, 64 * 1024, 70_000][rng.below(5)] + case;
                let end = data.len() + len;
                while data.len() < end {
                    if dense {
                        data.extend_from_slice(patterns[rng.below(patterns.len())].as_bytes());
                        data.push(b' ');
                    } else {
                        data.extend_from_slice(b"lorem ipsum dolor ");
                        if rng.below(50) == 0 {
                            data.extend_from_slice(patterns[rng.below(patterns.len())].as_bytes());
                        }
                    }
                }
            }
            for (dense, lanes) in [(DENSE, LANES_STRETCH), (0, 100), (8, 5000), (40, 777)] {
                (filter.dense, filter.lanes_stretch) = (dense, lanes);
                check(&filter, &dfa, &data);
            }
        }
    }

    #[test]
    fn random_bytes_and_small_keyword_sets_are_searched_exactly() {
        let sets: [&[&str]; 5] = [
            &[
                "pass", "password", "sword", "wo", "key=", "token=", "ken", "k", "ssw",
            ],
            &["a"],
            &["ab", "b~", "~~"],
            &["abcdefghijklmnopqrstuvwxyz0123456789", "xyz"],
            // More distinct bytes than classes: rare ones share the last class.
            &[
                "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
                "0123456789",
                "abc",
                "q~z",
                "{x}",
            ],
        ];
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for set in sets {
            let dfa = dfa(set);
            let filter = KeywordFilter::build(set).unwrap();
            let alphabet: Vec<u8> = set
                .iter()
                .flat_map(|k| k.bytes())
                .chain(*b"AZ \n\x80\xc3")
                .collect();
            for case in 0..2000 {
                let len = [1, 2, 3, 65, 66, 67, 129, 200, 700][case % 9];
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        if case % 5 == 0 {
                            rng.next() as u8
                        } else {
                            alphabet[rng.below(alphabet.len())]
                        }
                    })
                    .collect();
                check(&filter, &dfa, &data);
            }
        }
    }

    #[test]
    fn keywords_the_classes_cannot_hold_have_no_filter() {
        assert!(KeywordFilter::build(&["key", ""]).is_none());
        assert!(KeywordFilter::build(&["clé"]).is_none());
        assert!(KeywordFilter::build::<&str>(&[]).is_none());
        let filter = KeywordFilter::build(&["Key", "token"]).unwrap();
        // Upper and lower case share a class; bytes of no keyword are class 0.
        assert_eq!(
            filter.classes[usize::from(b'K')],
            filter.classes[usize::from(b'k')]
        );
        assert_ne!(filter.classes[usize::from(b'k')], 0);
        assert_eq!(filter.classes[usize::from(b'z')], 0);
        assert_eq!(filter.keywords, [b"key".to_vec(), b"token".to_vec()]);
    }

    /// Bodies for the timing table: (name, bytes).
    fn bodies() -> Vec<(&'static str, Vec<u8>)> {
        let home = std::env::var("HOME").unwrap_or_default();
        let registry = std::path::Path::new(&home).join(".cargo/registry/src");
        let mut source = Vec::new();
        let mut prose = Vec::new();
        let mut binary = Vec::new();
        let mut stack = vec![registry];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            entries.sort();
            for path in entries {
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path.to_string_lossy();
                let into = if name.ends_with(".rs") {
                    &mut source
                } else if name.ends_with(".md") {
                    &mut prose
                } else if name.ends_with(".a") {
                    &mut binary
                } else {
                    continue;
                };
                if into.len() < 8 << 20
                    && let Ok(d) = std::fs::read(&path)
                {
                    into.extend_from_slice(&d);
                }
            }
        }
        let line = b"    let value = compute(input, &config).unwrap_or_default(); // step 42 of the pipeline\n";
        let upload: Vec<u8> = line.iter().copied().cycle().take(8 << 20).collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let base64: Vec<u8> = (0..8 << 20)
            .map(|i| {
                if i % 77 == 76 {
                    b'\n'
                } else {
                    alphabet[rng.below(64)]
                }
            })
            .collect();
        vec![
            ("source (.rs)", source),
            ("prose (.md)", prose),
            ("base64", base64),
            ("binary (.a)", binary),
            ("upload line", upload),
        ]
    }

    #[test]
    #[ignore = "a timing table, not a check: cargo test --release -p scan keyword_filter_speed -- --ignored --nocapture"]
    // (with the decoders' candidate walk, the other pass over every byte, beside it)
    fn keyword_filter_speed() {
        let patterns = builtin_patterns();
        let dfa = dfa(&patterns);
        let Some(filter) = KeywordFilter::new(&patterns) else {
            println!("no AVX-512 VBMI here");
            return;
        };
        println!(
            "body | MB | blocks with a candidate | candidates/KiB | lanes ns/B | filter ns/B | masks alone ns/B | decoders' walk ns/B"
        );
        for (name, body) in bodies() {
            let blocks = body.len().saturating_sub(2) / 64;
            let (mut hit, mut bits) = (0usize, 0u32);
            // SAFETY: this processor runs the filter (`new` checked); every block's 66 bytes
            // lie in `body`.
            unsafe {
                let maps = filter.maps();
                for b in 0..blocks {
                    let m = filter.block_mask(&maps, body.as_ptr().add(b * 64));
                    hit += usize::from(m != 0);
                    bits += m.count_ones();
                }
            }
            let time = |f: &dyn Fn() -> usize| {
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let t = std::time::Instant::now();
                    std::hint::black_box(f());
                    best = best.min(t.elapsed().as_secs_f64());
                }
                best * 1e9 / body.len() as f64
            };
            let lanes = time(&|| super::super::lane_hits(&dfa, &body).unwrap().len());
            let filtered = time(&|| filter.hits(&dfa, &body).unwrap().len());
            let masks = time(&|| {
                let mut any = 0;
                // SAFETY: as above.
                unsafe {
                    let maps = filter.maps();
                    for b in 0..blocks {
                        any += filter
                            .block_mask(&maps, body.as_ptr().add(b * 64))
                            .count_ones();
                    }
                }
                any as usize
            });
            let walk = time(&|| crate::decode::candidate_walk(&body));
            assert!(
                filter.hits(&dfa, &body) == super::super::lane_hits(&dfa, &body),
                "{name}"
            );
            println!(
                "{name} | {:.1} | {:.1}% | {:.2} | {lanes:.3} | {filtered:.3} | {masks:.3} | {walk:.3}",
                body.len() as f64 / 1e6,
                100.0 * hit as f64 / blocks.max(1) as f64,
                f64::from(bits) * 1024.0 / body.len().max(1) as f64,
            );
        }
    }
}
