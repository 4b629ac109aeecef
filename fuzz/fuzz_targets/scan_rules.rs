//! gitleaks-format TOML rule files: arbitrary text never panics while parsing and compiling,
//! and a rule set that compiles scans a sample without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SAMPLE: &[u8] = b"token = \"ghp_0123456789abcdefABCDEF0123456789abcd\"\npassword=hunter2\n\
AKIAZ7VRSQ4TJ2LMXW5P\n-----BEGIN PRIVATE KEY-----\nMIIE\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // no base directory: an `[extend] path` is refused rather than read from disk
    let Ok(rules) = scan::RuleSet::from_toml_str(text, "fuzz.toml", None) else {
        return;
    };
    let s = scan::Scanner::from_rules(rules);
    for f in s.scan_bytes("sample.txt", SAMPLE) {
        assert!(f.line >= 1 && f.line as usize <= SAMPLE.split(|&b| b == b'\n').count());
    }
});
