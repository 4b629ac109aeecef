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

/// Shortest base64 run decoded (18 bytes of decoded text; a 20-character key id needs 28).
pub(crate) const MIN_BASE64_RUN: usize = 24;
/// Shortest hex run decoded (16 bytes of decoded text).
pub(crate) const MIN_HEX_RUN: usize = 32;
/// Fewest `%XX` escapes in a percent-encoded run before it is decoded.
pub(crate) const MIN_PERCENT_ESCAPES: usize = 2;
/// How many times decoded text is itself searched for encoded runs.
pub(crate) const MAX_DECODE_DEPTH: usize = 2;

/// How a run was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Base64,
    Hex,
    Percent,
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
    let zeros = memchr::memchr_iter(0, data).count();
    if zeros * 4 < data.len() {
        return None;
    }
    Some(data.iter().copied().filter(|&b| b != 0).collect())
}

const B64: u8 = 1;

/// Byte classes: the base64 alphabet (standard and URL-safe), hex digits included.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'-' || b == b'_' {
            t[i] = B64;
        }
        i += 1;
    }
    t
};

/// Finds the encoded runs of `data` that decode to mostly printable text.
///
/// Ordinary text costs about one byte look-up in [`MIN_BASE64_RUN`]: a run that long must
/// cover the byte at `i + MIN_BASE64_RUN - 1`, so when that byte cannot be part of a run the
/// search jumps past it.
pub(crate) fn encoded_runs(data: &[u8]) -> Vec<Decoded> {
    const MIN: usize = if MIN_HEX_RUN < MIN_BASE64_RUN {
        MIN_HEX_RUN
    } else {
        MIN_BASE64_RUN
    };
    let in_run = |b: u8| CLASS[usize::from(b)] & B64 != 0;
    let mut out = Vec::new();
    let n = data.len();
    let mut i = 0;
    while i + MIN <= n {
        let probe = i + MIN - 1;
        if !in_run(data[probe]) {
            i = probe + 1;
            continue;
        }
        let mut start = probe;
        while start > i && in_run(data[start - 1]) {
            start -= 1;
        }
        let mut end = probe + 1;
        while end < n && in_run(data[end]) {
            end += 1;
        }
        i = end;
        if end - start < MIN {
            continue;
        }
        let run = &data[start..end];
        if run.len() >= MIN_HEX_RUN
            && run.iter().all(u8::is_ascii_hexdigit)
            && let Ok(text) = hex::decode(&run[..run.len() - run.len() % 2])
            && printable(&text)
        {
            out.push(Decoded {
                span: start..end,
                encoding: Encoding::Hex,
                text,
            });
            continue;
        }
        if let Some((text, to)) = wrapped_base64(data, start, end) {
            out.push(Decoded {
                span: start..to,
                encoding: Encoding::Base64,
                text,
            });
            i = to;
            continue;
        }
        if run.len() >= MIN_BASE64_RUN {
            let mut padded = end;
            while padded < n && data[padded] == b'=' && padded - end < 2 {
                padded += 1;
            }
            if let Some(text) = base64_decode(run)
                && printable(&text)
            {
                out.push(Decoded {
                    span: start..padded,
                    encoding: Encoding::Base64,
                    text,
                });
            }
            i = padded;
        }
    }
    if memchr::memchr(b'%', data).is_some() {
        percent_runs(data, &mut out);
        out.sort_by_key(|d| d.span.start);
    }
    out
}

/// Shortest line of a wrapped base64 block (`base64` wraps at 76, PEM at 64).
const MIN_WRAPPED_LINE: usize = 60;

/// Base64 wrapped over several lines (what `base64` prints): the run `start..end` and the
/// lines that continue it, decoded as one, when that is printable text; with where it ends.
/// A line of a multiple of 4 characters decodes on its own too, but a secret cut by the line
/// end would be lost.
fn wrapped_base64(data: &[u8], start: usize, end: usize) -> Option<(Vec<u8>, usize)> {
    let in_run = |b: u8| CLASS[usize::from(b)] & B64 != 0;
    let (mut line_start, mut last) = (start, end);
    let mut joined: Vec<u8> = Vec::new();
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
        joined.extend_from_slice(&data[line_start..last]);
        (line_start, last) = (next, e);
    }
    if joined.is_empty() {
        return None;
    }
    joined.extend_from_slice(&data[line_start..last]);
    let mut to = last;
    while to < data.len() && data[to] == b'=' && to - last < 2 {
        to += 1;
    }
    let text = base64_decode(&joined)?;
    printable(&text).then_some((text, to))
}

/// Standard or URL-safe base64, padding optional; a length that cannot be base64 loses its
/// last characters (the run may continue into text).
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

/// Runs holding `%XX` escapes: each maximal run of bytes other than spaces, quotes and
/// brackets that contains at least [`MIN_PERCENT_ESCAPES`] escapes.
fn percent_runs(data: &[u8], out: &mut Vec<Decoded>) {
    let delim = |b: u8| b.is_ascii_whitespace() || b"\"'<>()[]{}`,;".contains(&b) || b < 0x20;
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'%', &data[i..]) {
        let pct = i + p;
        let mut start = pct;
        while start > i && !delim(data[start - 1]) {
            start -= 1;
        }
        let mut end = pct;
        while end < data.len() && !delim(data[end]) {
            end += 1;
        }
        let run = &data[start..end];
        let escapes = run
            .windows(3)
            .filter(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
            .count();
        if escapes >= MIN_PERCENT_ESCAPES {
            let text: Vec<u8> = percent_encoding::percent_decode(run).collect();
            if printable(&text) {
                out.push(Decoded {
                    span: start..end,
                    encoding: Encoding::Percent,
                    text,
                });
            }
        }
        i = end.max(pct + 1);
    }
}

/// Mostly printable ASCII text (tabs and newlines count), at least 90 %.
fn printable(text: &[u8]) -> bool {
    if text.is_empty() {
        return false;
    }
    let ok = text
        .iter()
        .filter(|&&b| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\r' || b == b'\t')
        .count();
    ok * 10 >= text.len() * 9
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

#[cfg(test)]
mod tests {
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
                (Encoding::Percent, format!("d=x?v={KEY}&z=1")),
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

    #[test]
    fn ordinary_text_and_random_runs_decode_to_nothing() {
        let data = b"fn some_long_function_name_for_tests() {}\nchecksum = \"0d8bd0a4e6a3bb0de3ac9fe1a1f7ab3a5c5d9e7b4c3a2f1e0d9c8b7a6f5e4d3c\"\nurl = https://x/a%20b\n";
        assert_eq!(texts(data), vec![]);
    }

    #[test]
    fn utf16_and_archives_are_recognised() {
        let utf16: Vec<u8> = format!("k={KEY}\n")
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(utf16_text(&utf16).unwrap(), format!("k={KEY}\n").as_bytes());
        assert_eq!(utf16_text(b"plain text, no zeros"), None);
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
