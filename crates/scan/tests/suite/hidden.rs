//! Secrets that hide: in binary files, as UTF-16, encoded (base64, hex, percent), and in the
//! git objects `git log -p` never shows (tags, messages, identities, path names).

use base64::Engine as _;
use pretty_assertions::assert_eq;
use scan::{GitScanRequest, ObjectScanOptions, Scanner, Unreadable};

use super::git::Repo;
use super::{aws_key, github_token};

/// (line, column, rule) of each finding.
fn places(findings: &[scan::Finding]) -> Vec<(u32, u32, String)> {
    findings
        .iter()
        .map(|f| (f.line, f.column, f.rule_id.clone()))
        .collect()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[test]
fn encoded_runs_are_decoded_and_reported_where_they_sit() {
    let key = aws_key();
    let pct: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
    let text = format!(
        "plain line\nconfig: \"{}\"\nid {}\nurl = https://h/?k={pct}\nnested = {}\nurl_safe = {}\n",
        b64(&format!("aws_access_key_id = {key}")),
        hex::encode(&key),
        b64(&b64(&format!("key {key} end"))),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("k?>>{key}")),
    );
    let s = Scanner::builtin().unwrap();
    let rule = "aws-access-key-id".to_string();
    assert_eq!(
        places(&s.scan_bytes("enc.txt", text.as_bytes())),
        vec![
            (2, 10, rule.clone()),
            (3, 4, rule.clone()),
            // Reported where the first escape is, as gitleaks maps a decoded match back.
            (4, 20, rule.clone()),
            (5, 10, rule.clone()),
            (6, 12, rule),
        ]
    );
    // Fingerprints keep `file:rule:line`, so a baseline or an exception still names them.
    assert_eq!(
        s.scan_bytes("enc.txt", text.as_bytes())[0].fingerprint,
        "enc.txt:aws-access-key-id:2"
    );
}

#[test]
fn a_large_fragment_decoded_beside_the_rules_or_after_them_gives_the_same_findings() {
    // Over 64 KiB the first decoding pass runs on another rayon thread unless
    // `decode_beside` is off (outbound DLP): the findings must not depend on it.
    let key = aws_key();
    let mut text = String::new();
    for i in 0..400 {
        text.push_str(&format!("line {i} of ordinary text, nothing here at all\n"));
        if i % 97 == 5 {
            text.push_str(&format!(
                "blob = \"{}\"\n",
                b64(&format!("aws_access_key_id = {key}"))
            ));
            text.push_str(&format!("plain = {key}\n"));
            text.push_str(&format!("hexed {}\n", hex::encode(&key)));
        }
    }
    while text.len() < 200 * 1024 {
        text.push_str("padding padding padding padding padding padding padding padding\n");
    }
    let beside = Scanner::builtin().unwrap();
    assert!(beside.options().decode_beside);
    let in_line = Scanner::builtin().unwrap().with_options(scan::ScanOptions {
        decode_beside: false,
        ..scan::ScanOptions::default()
    });
    let want = places(&beside.scan_bytes("big.txt", text.as_bytes()));
    assert_eq!(want.len(), 15, "{want:?}");
    assert_eq!(
        places(&in_line.scan_bytes("big.txt", text.as_bytes())),
        want
    );
}

#[test]
fn ordinary_text_gains_no_findings_from_decoding() {
    let text = "checksum = \"0d8bd0a4e6a3bb0de3ac9fe1a1f7ab3a5c5d9e7b4c3a2f1e0d9c8b7a6f5e4d3c\"\nfn a_rather_long_function_name_here() {}\nsee https://example.invalid/a%20b%20c\nimage: iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\n";
    let s = Scanner::builtin().unwrap();
    assert_eq!(places(&s.scan_bytes("plain.txt", text.as_bytes())), vec![]);
}

#[test]
fn binary_and_utf16_content_is_scanned() {
    let key = aws_key();
    let s = Scanner::builtin().unwrap();
    let rule = "aws-access-key-id".to_string();
    // One zero byte does not hide the rest of the file.
    let nul = format!("header\0\nkey = {key}\n");
    assert_eq!(
        places(&s.scan_bytes("nul.txt", nul.as_bytes())),
        vec![(2, 7, rule.clone())]
    );
    // UTF-16, little and big endian, with a byte order mark.
    let text = format!("first\r\nkey = {key}\r\n");
    let mut le = vec![0xff, 0xfe];
    le.extend(utf16le(&text));
    let mut be = vec![0xfe, 0xff];
    be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
    for data in [le, be] {
        let found = places(&s.scan_bytes("utf16.txt", &data));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].0, &found[0].2), (2, &rule));
    }
}

#[test]
fn git_history_scans_files_with_zero_bytes_and_utf16() {
    let Some(r) = Repo::new() else { return };
    r.write("README", "hi\n");
    r.commit("base");
    std::fs::write(
        r.path().join("data.bin"),
        format!("\0\x01bin\nkey = {}\n", aws_key()),
    )
    .unwrap();
    std::fs::write(
        r.path().join("notes.txt"),
        utf16le(&format!("a\nb {}\n", github_token())),
    )
    .unwrap();
    let c = r.commit("binary");
    let found: Vec<_> = Scanner::builtin()
        .unwrap()
        .scan_git(&GitScanRequest::range(r.path(), "HEAD~1..HEAD"))
        .unwrap()
        .into_iter()
        .map(|f| f.fingerprint)
        .collect();
    assert_eq!(
        found,
        vec![
            format!("{c}:data.bin:aws-access-key-id:2"),
            format!("{c}:notes.txt:github-pat:2"),
        ]
    );
}

/// Every object kind that `git log -p` does not show, each holding the key, then scanned as
/// the new objects of a push that names them as tips.
#[test]
fn object_scan_covers_tags_messages_identities_and_path_names() {
    let Some(r) = Repo::new() else { return };
    let key = aws_key();
    r.write("README", "hi\n");
    let base = r.commit("base");
    let hash = |content: &str| {
        std::fs::write(r.path().join(".tmp-blob"), content).unwrap();
        let oid = r.git(&["hash-object", "-w", ".tmp-blob"]);
        std::fs::remove_file(r.path().join(".tmp-blob")).unwrap();
        oid
    };
    let blob = hash(&format!("aws = {key}\n"));
    let tree_blob = hash(&format!("x\naws = {key}\n"));
    let tree = {
        let mut cmd = std::process::Command::new("git");
        let out = cmd
            .arg("-C")
            .arg(r.path())
            .arg("mktree")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut out = out;
        out.stdin
            .take()
            .unwrap()
            .write_all(format!("100644 blob {tree_blob}\tcreds.env\n").as_bytes())
            .unwrap();
        String::from_utf8(out.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    r.git(&["tag", "-a", "-m", &format!("release\n\nkey {key}\n"), "msg"]);
    let msg_tag = r.git(&["rev-parse", "msg"]);
    r.git(&["tag", "-a", "-m", "outer", "outer", "msg"]);
    let outer = r.git(&["rev-parse", "outer"]);
    r.git(&[
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        &format!("add\n\n{key}\n"),
    ]);
    let message = r.git(&["rev-parse", "HEAD"]);
    r.git(&[
        "-c",
        &format!("user.name=Dev {key}"),
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "identity",
    ]);
    let identity = r.git(&["rev-parse", "HEAD"]);
    r.write(&format!("notes-{key}.txt"), "nothing\n");
    let named = r.commit("a path name");
    let named_tree = r.git(&["rev-parse", "HEAD^{tree}"]);
    let s = Scanner::builtin().unwrap();
    let req = GitScanRequest {
        repo: r.path().to_path_buf(),
        rev_args: [&blob, &tree, &outer, &named, "--not", &base]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        env: vec![],
    };
    let scan = s
        .scan_git_objects(&req, &ObjectScanOptions::default())
        .unwrap();
    let mut found: Vec<String> = scan
        .findings
        .iter()
        .map(|f| f.fingerprint.clone())
        .collect();
    found.sort();
    let rule = "aws-access-key-id";
    let mut want = vec![
        format!("{blob}:<blob>:{rule}:1"),
        format!("{tree_blob}:creds.env:{rule}:2"),
        format!("{msg_tag}:<tag>:{rule}:8"),
        format!("{message}:<commit>:{rule}:8"),
        format!("{identity}:<commit>:{rule}:3"),
        format!("{identity}:<commit>:{rule}:4"),
        format!("{named_tree}:<tree>:{rule}:2"),
    ];
    want.sort();
    // The tree holding `creds.env` names no secret, and `outer` (a tag of a tag) is clean
    // itself: the key is found in the blob and the tag they lead to.
    assert_eq!(found, want);
    assert_eq!(scan.unreadable, vec![]);
}

#[test]
fn object_scan_reports_what_it_cannot_read() {
    let Some(r) = Repo::new() else { return };
    r.write("README", "hi\n");
    let base = r.commit("base");
    std::fs::write(
        r.path().join("backup.tar.gz"),
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03rest",
    )
    .unwrap();
    r.write("big.txt", &"x".repeat(4096));
    r.commit("archive");
    let gz = r.git(&["rev-parse", "HEAD:backup.tar.gz"]);
    let big = r.git(&["rev-parse", "HEAD:big.txt"]);
    let scan = Scanner::builtin()
        .unwrap()
        .scan_git_objects(
            &GitScanRequest::range(r.path(), &format!("{base}..HEAD")),
            &ObjectScanOptions {
                max_blob_size: 1024,
            },
        )
        .unwrap();
    let mut unreadable = scan.unreadable;
    unreadable.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        unreadable,
        vec![
            Unreadable {
                object: gz,
                path: "backup.tar.gz".into(),
                reason: "gzip-compressed".into()
            },
            Unreadable {
                object: big,
                path: "big.txt".into(),
                reason: "larger than 1024 bytes".into()
            },
        ]
    );
    assert_eq!(scan.findings, vec![]);
}
