//! Route matching against request paths, with two oracles.
//!
//! 1. A path the matcher allows must still be allowed (or refused as ambiguous) after any
//!    normalisation an upstream might apply: full percent-decoding (repeated), `\` read as
//!    `/`, `;parameters` dropped, duplicate slashes merged, dot segments resolved, alone or
//!    together. Otherwise the upstream may serve a path no rule allowed.
//! 2. Two spellings of one path (unreserved characters percent-encoded, hex in either case)
//!    get one decision and one forwarded path.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use policy::{Ask, Policy, Reason};
use std::path::Path;

const SEGS: [&str; 6] = ["v1", "admin", "a.b", "x", "health", "~u"];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Tok {
    Slash,
    Seg(u8),
    Dot,
    DotDot,
    Param(u8),
    Backslash,
    Pct(u8),
    Pct25,
    Raw(u8),
}

#[derive(Arbitrary, Debug)]
struct Cond {
    exact: bool,
    segs: Vec<u8>,
    trailing_slash: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    conds: Vec<Cond>,
    /// the path starts with this condition's value (then the tokens follow)
    base: u8,
    path: Vec<Tok>,
    /// which unreserved characters the second spelling encodes (bit per character)
    encode_mask: u64,
    lower_hex: bool,
}

fn render(base: &str, toks: &[Tok]) -> String {
    let mut s = String::from(base);
    for t in toks.iter().take(24) {
        match *t {
            Tok::Slash => s.push('/'),
            Tok::Seg(i) => s.push_str(SEGS[usize::from(i) % SEGS.len()]),
            Tok::Dot => s.push('.'),
            Tok::DotDot => s.push_str(".."),
            Tok::Param(i) => s.push_str([";", ";jsessionid=1", "%3b", ";x/"][usize::from(i) % 4]),
            Tok::Backslash => s.push('\\'),
            Tok::Pct(b) => s.push_str(&format!("%{b:02x}")),
            Tok::Pct25 => s.push_str("%25"),
            Tok::Raw(b) => {
                let c = [b'%', b'+', b'@', b':', b'=', b'&', b'!', b'$'][usize::from(b) % 8];
                s.push(c as char);
            }
        }
    }
    s
}

fn pct_decode_once(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// What an upstream may do to a path, each step optional.
#[derive(Clone, Copy)]
struct Steps {
    decode: bool,
    backslash: bool,
    params: bool,
    merge: bool,
}

fn upstream(path: &str, st: Steps) -> Option<String> {
    let mut b = path.as_bytes().to_vec();
    if st.decode {
        for _ in 0..3 {
            b = pct_decode_once(&b);
        }
    }
    let mut s = String::from_utf8(b).ok()?;
    if s.bytes().any(|c| c < 0x20 || c == 0x7f) {
        return None; // the upstream sees a control character; not a path question
    }
    if st.backslash {
        s = s.replace('\\', "/");
    }
    let mut segs: Vec<&str> = s.split('/').collect();
    if st.params {
        for seg in &mut segs {
            if let Some(i) = seg.find(';') {
                *seg = &seg[..i];
            }
        }
    }
    if st.merge {
        let last = segs.len() - 1;
        segs = segs
            .into_iter()
            .enumerate()
            .filter(|(i, seg)| *i == 0 || *i == last || !seg.is_empty())
            .map(|(_, s)| s)
            .collect();
    }
    // dot segments (RFC 3986 5.2.4), on the segments after the leading empty one
    let mut out: Vec<&str> = Vec::new();
    let n = segs.len();
    for (i, seg) in segs.iter().enumerate().skip(1) {
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if i == n - 1 {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    Some(format!("/{}", out.join("/")))
}

fn judge(p: &Policy, path: &str) -> (Reason, String) {
    let headers = http::HeaderMap::new();
    let j = p.judge(
        "h.example",
        443,
        &Ask {
            tls: true,
            method: "GET",
            path,
            query: None,
            headers: &headers,
            upgrade: None,
        },
    );
    (j.decision.reason, j.path.into_owned())
}

fn respell(path: &str, mask: u64, lower: bool) -> String {
    let mut out = String::new();
    let mut skip = 0;
    for (i, c) in path.chars().enumerate() {
        if skip > 0 || c == '%' {
            // an escape stays as it is
            skip = if c == '%' { 2 } else { skip - 1 };
            out.push(c);
            continue;
        }
        let unreserved = c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~');
        if unreserved && mask & (1 << (i % 64)) != 0 {
            if lower {
                out.push_str(&format!("%{:02x}", c as u32));
            } else {
                out.push_str(&format!("%{:02X}", c as u32));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fuzz_target!(|input: Input| {
    let mut yaml = String::from("routes:\n  - host: h.example\n    matches:\n      - paths:\n");
    let mut values = Vec::new();
    for c in input.conds.iter().take(4) {
        let mut v = String::new();
        for s in c.segs.iter().take(4) {
            v.push('/');
            v.push_str(SEGS[usize::from(*s) % SEGS.len()]);
        }
        if c.trailing_slash || v.is_empty() {
            v.push('/');
        }
        let kind = if c.exact { "exact" } else { "prefix" };
        yaml.push_str(&format!("          - {{type: {kind}, value: \"{v}\"}}\n"));
        values.push(v);
    }
    if values.is_empty() {
        return;
    }
    let Ok(cfg) = policy::parse_routes(&yaml, Path::new("routes.yaml")) else {
        return;
    };
    let Ok(routes) = policy::validate(&cfg) else {
        return;
    };
    let p = Policy::new(routes);
    let path = render(&values[usize::from(input.base) % values.len()], &input.path);
    let (reason, forwarded) = judge(&p, &path);

    if reason == Reason::Allowed {
        for bits in 0u8..16 {
            let st = Steps {
                decode: bits & 1 != 0,
                backslash: bits & 2 != 0,
                params: bits & 4 != 0,
                merge: bits & 8 != 0,
            };
            let Some(up) = upstream(&path, st) else {
                continue;
            };
            let (r2, _) = judge(&p, &up);
            assert!(
                r2 == Reason::Allowed || r2 == Reason::AmbiguousPath,
                "{path:?} is allowed (forwarded as {forwarded:?}) but an upstream may read it \
                 as {up:?}, which is {r2:?}:\n{yaml}"
            );
        }
    }

    let other = respell(&path, input.encode_mask, input.lower_hex);
    let (reason2, forwarded2) = judge(&p, &other);
    if reason != Reason::AmbiguousPath && reason2 != Reason::AmbiguousPath {
        assert_eq!(
            (reason, &forwarded),
            (reason2, &forwarded2),
            "two spellings of one path, {path:?} and {other:?}, judged differently:\n{yaml}"
        );
    }
});
