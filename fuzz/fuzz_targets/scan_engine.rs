//! The secret scanner on arbitrary bytes with the built-in rules: never panics, every
//! finding lies inside the input (its line and column exist), and a planted secret in the
//! fuzzed surroundings is found.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// A planted AWS access key id (the documented example key's shape, not a real key).
const PLANTED: &str = "AKIAZ7VRSQ4TJ2LMXW5P";

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    before: &'a [u8],
    after: &'a [u8],
    data: &'a [u8],
}

fn scanner() -> &'static scan::Scanner {
    static S: OnceLock<scan::Scanner> = OnceLock::new();
    S.get_or_init(|| scan::Scanner::builtin().expect("built-in rules compile"))
}

fn check_inside(data: &[u8], findings: &[scan::Finding]) {
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    for f in findings {
        assert!(f.line >= 1, "line 0 in {f:?}");
        let line = lines
            .get(f.line as usize - 1)
            .unwrap_or_else(|| panic!("finding on line {} of {} lines", f.line, lines.len()));
        assert!(
            f.column >= 1 && f.column as usize <= line.len() + 1,
            "column {} outside line {} of {} bytes",
            f.column,
            f.line,
            line.len()
        );
    }
}

fuzz_target!(|input: Input| {
    let s = scanner();
    let found = s.scan_bytes("fuzz.txt", input.data);
    check_inside(input.data, &found);

    // Planted: surroundings that cannot glue onto the key (a separator on both sides).
    let mut planted = Vec::new();
    planted.extend_from_slice(input.before);
    planted.extend_from_slice(b"\naws_access_key_id = ");
    planted.extend_from_slice(PLANTED.as_bytes());
    planted.extend_from_slice(b"\n");
    planted.extend_from_slice(input.after);
    let found = s.scan_bytes("fuzz.txt", &planted);
    check_inside(&planted, &found);
    assert!(
        found.iter().any(|f| f.secret.expose().contains(PLANTED)),
        "planted key not found in {:?}: {found:?}",
        String::from_utf8_lossy(&planted)
    );
});
