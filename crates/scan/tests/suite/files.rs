//! Scanning files and directories.

use std::path::PathBuf;

use pretty_assertions::assert_eq;
use scan::{Baseline, ScanOptions, Scanner, Skipped};

use super::github_token;

fn write(dir: &std::path::Path, name: &str, content: &[u8]) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn locations(findings: &[scan::Finding]) -> Vec<(String, u32, String)> {
    findings
        .iter()
        .map(|f| (f.file.clone(), f.line, f.rule_id.clone()))
        .collect()
}

#[test]
fn directory_scan_respects_gitignore_and_reads_hidden_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gh = github_token();
    write(d, ".gitignore", b"ignored.txt\nbuild/\n");
    write(d, "ignored.txt", gh.as_bytes());
    write(d, "build/out.txt", gh.as_bytes());
    write(d, ".env", format!("A=1\nGH={gh}\n").as_bytes());
    write(
        d,
        "src/main.rs",
        format!("fn main() {{}}\n\n// {gh}\n").as_bytes(),
    );
    write(d, ".git/config", gh.as_bytes());
    let s = Scanner::builtin().unwrap();
    let scan = s.scan_paths(&[d.to_path_buf()]).unwrap();
    let root = d.display().to_string();
    assert_eq!(
        locations(&scan.findings),
        vec![
            (format!("{root}/.env"), 2, "github-pat".to_string()),
            (format!("{root}/src/main.rs"), 3, "github-pat".to_string()),
        ]
    );
    // Switched off, ignored files are scanned too (but never .git).
    let s = Scanner::builtin().unwrap().with_options(ScanOptions {
        respect_gitignore: false,
        ..ScanOptions::default()
    });
    assert_eq!(s.scan_paths(&[d.to_path_buf()]).unwrap().findings.len(), 4);
}

#[test]
fn binary_files_are_scanned_compressed_and_oversized_ones_skipped_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gh = github_token();
    write(d, "blob.bin", format!("\0\x01\x02{gh}").as_bytes());
    write(d, "notes.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03");
    write(
        d,
        "big.txt",
        format!("{gh}\n{}", "x".repeat(2000)).as_bytes(),
    );
    write(d, "small.txt", gh.as_bytes());
    let s = Scanner::builtin().unwrap().with_options(ScanOptions {
        max_file_size: 1000,
        ..ScanOptions::default()
    });
    let mut scan = s.scan_paths(&[d.to_path_buf()]).unwrap();
    scan.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    let root = d.display().to_string();
    assert_eq!(
        scan.skipped,
        vec![
            Skipped {
                path: format!("{root}/big.txt"),
                reason: "larger than 1000 bytes".into()
            },
            Skipped {
                path: format!("{root}/notes.gz"),
                // Archives and compressed files are opened with --max-archive-depth.
                reason: "an archive (opened with --max-archive-depth 1 or more)".into()
            },
        ]
    );
    assert_eq!(scan.files, 2);
    assert_eq!(
        locations(&scan.findings),
        vec![
            (format!("{root}/blob.bin"), 1, "github-pat".to_string()),
            (format!("{root}/small.txt"), 1, "github-pat".to_string()),
        ]
    );
}

#[test]
fn a_walked_tree_is_read_through_its_directories_without_following_links() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let gh = github_token();
    write(dir.path(), "outside/secret.txt", gh.as_bytes());
    // Many files in one directory (read relative to it), one alone in another (read by its
    // path), files beside subdirectories.
    for i in 0..40 {
        let text = if i % 7 == 0 { gh.as_str() } else { "plain" };
        write(&tree, &format!("many/f{i:02}.txt"), text.as_bytes());
    }
    write(&tree, "lone/only.txt", gh.as_bytes());
    write(&tree, "a/x.txt", gh.as_bytes());
    write(&tree, "a/b/y.txt", b"plain");
    write(&tree, "a/b/c/deep.txt", gh.as_bytes());
    // Symbolic links (to a file, to a directory) are not followed; a socket is passed over.
    let outside = dir.path().join("outside");
    std::os::unix::fs::symlink(outside.join("secret.txt"), tree.join("many/link.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, tree.join("many/linkdir")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(tree.join("many/sock")).unwrap();
    let s = Scanner::builtin().unwrap();
    let expected = |root: &std::path::Path| {
        ["a/b/c/deep.txt", "a/x.txt", "lone/only.txt"]
            .into_iter()
            .map(String::from)
            .chain((0..40).step_by(7).map(|i| format!("many/f{i:02}.txt")))
            .map(|f| {
                (
                    format!("{}/{f}", root.display()),
                    1,
                    "github-pat".to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let scan = s.scan_paths(std::slice::from_ref(&tree)).unwrap();
    assert_eq!(locations(&scan.findings), expected(&tree));
    assert_eq!((scan.files, scan.skipped), (44, vec![]));
    // A tree named through a symbolic link given as the root is walked as the tree itself.
    let root_link = dir.path().join("tree-link");
    std::os::unix::fs::symlink(&tree, &root_link).unwrap();
    let scan = s.scan_paths(std::slice::from_ref(&root_link)).unwrap();
    assert_eq!(locations(&scan.findings), expected(&root_link));
    assert_eq!(scan.files, 44);
}

#[test]
fn unreadable_path_is_an_error_naming_it() {
    let s = Scanner::builtin().unwrap();
    let err = s
        .scan_paths(&[PathBuf::from("/nonexistent/dir")])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cannot read /nonexistent/dir: "), "{err}");
}

#[test]
fn inline_allow_is_honoured_unless_switched_off() {
    let text = format!("token = \"{}\" # gitleaks:allow\n", github_token());
    let s = Scanner::builtin().unwrap();
    assert_eq!(s.scan_bytes("a", text.as_bytes()), vec![]);
    let s = s.with_options(ScanOptions {
        honor_inline_allow: false,
        ..ScanOptions::default()
    });
    assert_eq!(
        locations(&s.scan_bytes("a", text.as_bytes())),
        vec![("a".to_string(), 1, "github-pat".to_string())]
    );
}

#[test]
fn large_files_are_scanned_around_keywords_without_missing_secrets() {
    // Past the windowing threshold: secrets at the start, middle and end, a PEM block spanning
    // lines near the end, and lots of keyword noise in between.
    let gh = github_token();
    let mut text = String::new();
    text.push_str(&format!("{gh}\n"));
    for i in 0..6000 {
        text.push_str(&format!("let token_{i} = next(); // filler line {i}\n"));
        if i == 3000 {
            text.push_str(&format!("x = {gh}\n"));
        }
    }
    let body: String = (0..8)
        .map(|i| {
            format!(
                "{}{i}\n",
                "MIIEowIBAAKCAQEA7Zq8Lr2Xv5Nw1Tb7Kd4Hs9Mf3Pc6Gy0Ja2Ue5QwErTy"
            )
        })
        .collect();
    text.push_str(&format!(
        "-----BEGIN RSA PRIVATE {k}-----\n{body}-----END RSA PRIVATE {k}-----\n",
        k = "KEY"
    ));
    text.push_str(&format!("{gh}\n"));
    assert!(text.len() > 200_000);
    let s = Scanner::builtin().unwrap();
    let found: Vec<(u32, String)> = s
        .scan_bytes("big.rs", text.as_bytes())
        .into_iter()
        .map(|f| (f.line, f.rule_id))
        .collect();
    assert_eq!(
        found,
        vec![
            (1, "github-pat".to_string()),
            (3003, "github-pat".to_string()),
            (6013, "github-pat".to_string()),
            (6003, "private-key".to_string()),
        ]
    );
}

#[test]
fn baseline_drops_approved_fingerprints() {
    let text = format!("a\n{}\n", github_token());
    let mut b = Baseline::new();
    b.insert("notes.txt:github-pat:2");
    let s = Scanner::builtin().unwrap().with_baseline(b);
    assert_eq!(s.scan_bytes("notes.txt", text.as_bytes()), vec![]);
    assert_eq!(s.scan_bytes("other.txt", text.as_bytes()).len(), 1);
}
