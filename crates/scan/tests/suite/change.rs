//! A push's new blobs judged by what changed from the blob their path had in the parent
//! commit give the findings that judging every new blob whole gives
//! ([`Scanner::scan_push_judging_whole`]), on generated histories: edits at the start, in the
//! middle and at the end of files large and small, lines added, replaced and removed, secrets
//! planted in an edit and across an edit's edge (a key on an unchanged line, its value on a
//! new one), a private key whose BEGIN line is unchanged and body new, CRLF files, a file with
//! a NUL byte, renames and copies (with edits), merges, and parents the upstream already has.

use pretty_assertions::assert_eq;
use scan::{GitScanRequest, ObjectScanOptions, ScanOptions, Scanner};

use super::git::Repo;
use super::{aws_key, github_token, tok};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const WORDS: [&str; 16] = [
    "let", "value", "config", "return", "match", "self", "error", "result", "iter", "map",
    "filter", "collect", "into", "default", "clone", "push",
];

fn code_line(rng: &mut Rng) -> String {
    let n = 2 + rng.below(9);
    let words: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
    format!("{}{};", "    ".repeat(rng.below(3)), words.join(" "))
}

/// A private key block: BEGIN, `body` lines of base64-like text, END.
fn private_key(rng: &mut Rng) -> Vec<String> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = vec![tok(&["-----BEGIN RSA ", "PRIVATE KEY-----"])];
    for _ in 0..12 {
        out.push((0..64).map(|_| B64[rng.below(64)] as char).collect());
    }
    out.push(tok(&["-----END RSA ", "PRIVATE KEY-----"]));
    out
}

/// A line that holds a secret, of one of several shapes.
fn secret_line(rng: &mut Rng, n: usize) -> Vec<String> {
    match rng.below(5) {
        0 => vec![format!("AWS_ACCESS_KEY_ID={}", aws_key())],
        1 => vec![format!("    let token = \"{}\"; // {n}", github_token())],
        // A key on one line, its value on the next.
        2 => vec![
            "aws_access_key_id =".to_string(),
            format!("    \"{}\"", aws_key()),
        ],
        3 => vec![format!(
            "password = \"{}\"",
            tok(&["Zq8Lr2Xv5N", "w1Tb7Kd4Hs"])
        )],
        _ => vec![format!("gh{n} = {}", github_token())],
    }
}

/// A file: its lines, and whether it is written with CRLF line ends.
struct File {
    lines: Vec<String>,
    crlf: bool,
}

impl File {
    fn text(&self) -> String {
        let end = if self.crlf { "\r\n" } else { "\n" };
        self.lines.iter().map(|l| format!("{l}{end}")).collect()
    }
}

/// Edits `f` at its start, middle or end: lines replaced, added or removed, now and then a
/// secret, a private key, or a private key's body replaced under an unchanged BEGIN line.
fn edit(rng: &mut Rng, f: &mut File, n: usize) {
    for _ in 0..1 + rng.below(4) {
        let len = f.lines.len().max(1);
        let at = match rng.below(3) {
            0 => rng.below(3.min(len)),
            1 => len / 2 + rng.below(5),
            _ => len.saturating_sub(1 + rng.below(3)),
        }
        .min(f.lines.len());
        match rng.below(10) {
            0 | 1 => {
                let new = secret_line(rng, n);
                f.lines.splice(at..at, new);
            }
            2 => {
                let key = private_key(rng);
                f.lines.splice(at..at, key);
            }
            3 => {
                // A key's body: new lines under the BEGIN line that stays.
                if let Some(b) = f.lines.iter().position(|l| l.contains("BEGIN RSA")) {
                    let body = private_key(rng);
                    let end = (b + 13).min(f.lines.len());
                    f.lines.splice(b + 1..end, body[1..13].iter().cloned());
                }
            }
            4 if f.lines.len() > 3 => {
                let k = (1 + rng.below(3)).min(f.lines.len() - at.min(f.lines.len()));
                f.lines.drain(at..at + k);
            }
            5 if at < f.lines.len() => f.lines[at] = code_line(rng),
            _ => {
                let k = 1 + rng.below(4);
                let new: Vec<String> = (0..k).map(|_| code_line(rng)).collect();
                f.lines.splice(at..at, new);
            }
        }
    }
}

/// Commits everything (an edit may have changed nothing); returns the commit.
fn commit(r: &Repo, msg: &str) -> String {
    r.git(&["add", "-A"]);
    r.git(&["commit", "-q", "--allow-empty", "-m", msg]);
    r.git(&["rev-parse", "HEAD"])
}

fn new_file(rng: &mut Rng, large: bool) -> File {
    let n = if large {
        80 + rng.below(400)
    } else {
        2 + rng.below(30)
    };
    File {
        lines: (0..n).map(|_| code_line(rng)).collect(),
        crlf: rng.chance(15),
    }
}

/// A generated history on top of a base commit: (base, new).
fn generated(r: &Repo, seed: u64, commits: usize) -> (String, String) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut files: Vec<(String, File)> = Vec::new();
    for i in 0..8 {
        files.push((format!("src/f{i}.rs"), new_file(&mut rng, i % 4 != 3)));
    }
    // A file with a NUL byte (text otherwise).
    let mut nul = new_file(&mut rng, true);
    nul.lines[3] = "binary\0marker".into();
    files.push(("data/with_nul.txt".into(), nul));
    let write = |files: &[(String, File)]| {
        for (path, f) in files {
            let full = r.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, f.text()).unwrap();
        }
    };
    write(&files);
    let base = r.commit("base");
    for n in 0..commits {
        match rng.below(12) {
            // A rename with an edit.
            0 => {
                let i = rng.below(files.len());
                let to = format!("moved/m{n}.rs");
                std::fs::create_dir_all(r.path().join("moved")).unwrap();
                r.git(&["mv", &files[i].0, &to]);
                files[i].0 = to;
                edit(&mut rng, &mut files[i].1, n);
            }
            // A copy with an edit.
            1 => {
                let i = rng.below(files.len());
                let copy = File {
                    lines: files[i].1.lines.clone(),
                    crlf: files[i].1.crlf,
                };
                files.push((format!("src/copy{n}.rs"), copy));
                let last = files.len() - 1;
                edit(&mut rng, &mut files[last].1, n);
            }
            // A side branch merged back, with an edit of its own in the merge.
            2 if n > 2 => {
                r.git(&["checkout", "-q", "-b", &format!("side{n}")]);
                let i = rng.below(files.len());
                edit(&mut rng, &mut files[i].1, n);
                write(&files);
                commit(r, &format!("side {n}"));
                r.git(&["checkout", "-q", "main"]);
                r.git(&["merge", "-q", "--no-ff", "--no-commit", &format!("side{n}")]);
                let j = rng.below(files.len());
                let mut mine = File {
                    lines: std::fs::read_to_string(r.path().join(&files[j].0))
                        .unwrap()
                        .lines()
                        .map(|l| l.trim_end_matches('\r').to_string())
                        .collect(),
                    crlf: files[j].1.crlf,
                };
                edit(&mut rng, &mut mine, n);
                files[j].1 = mine;
                write(&files);
                commit(r, &format!("merge {n}"));
                continue;
            }
            _ => {
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(files.len());
                    edit(&mut rng, &mut files[i].1, n);
                }
            }
        }
        write(&files);
        commit(r, &format!("change {n}"));
    }
    let new = r.git(&["rev-parse", "HEAD"]);
    (base, new)
}

fn scanner() -> Scanner {
    Scanner::builtin().unwrap().with_options(ScanOptions {
        honor_inline_allow: false,
        ..ScanOptions::default()
    })
}

/// Both judges over `rev_args` (walking packs and reading one by one); returns the findings
/// after checking that every way gives the same.
fn same_findings(s: &Scanner, repo: &std::path::Path, rev_args: &[&str]) -> Vec<scan::Finding> {
    let req = GitScanRequest {
        repo: repo.to_path_buf(),
        rev_args: rev_args.iter().map(|a| a.to_string()).collect(),
        env: vec![],
    };
    let options = ObjectScanOptions::default();
    let whole = s.scan_push_judging_whole(&req, &options).unwrap();
    let by_change = s.scan_push(&req, &options).unwrap();
    let one_by_one = s.scan_push_one_by_one(&req, &options).unwrap();
    assert_eq!(by_change.findings, whole.findings, "{rev_args:?}");
    assert_eq!(one_by_one.findings, whole.findings, "{rev_args:?}");
    assert_eq!(by_change.unreadable, whole.unreadable, "{rev_args:?}");
    assert_eq!(by_change.objects, whole.objects, "{rev_args:?}");
    by_change.findings
}

#[test]
fn judging_blobs_by_what_changed_finds_what_judging_them_whole_finds() {
    let s = scanner();
    let mut total = 0;
    let mut rules = std::collections::BTreeSet::new();
    for seed in 1..=4u64 {
        let Some(r) = Repo::new() else { return };
        let (base, new) = generated(&r, seed, 30);
        // Loose objects; then packed (the pack walk), as a push arrives.
        for pack in [false, true] {
            if pack {
                r.git(&["repack", "-adq"]);
            }
            // The parents of the first edits are the upstream's (in `base`).
            let pushed = same_findings(&s, r.path(), &[&new, "--not", &base]);
            // Everything new (the base commit's files judged whole).
            let all = same_findings(&s, r.path(), &["--all"]);
            assert!(all.len() >= pushed.len(), "seed {seed}");
            total += pushed.len();
            rules.extend(pushed.iter().map(|f| f.rule_id.clone()));
        }
    }
    // The generated secrets are found, of several kinds.
    assert!(total >= 20, "{total} findings");
    assert!(rules.len() >= 3, "{rules:?}");
}

/// A rule's keyword in one hunk and its match in another, far apart in a large file: the
/// lines the commit adds are one fragment for the patch scan, so the changed regions are
/// judged together, and the commit is shown.
#[test]
fn a_keyword_in_one_hunk_and_its_secret_in_another_are_judged_together() {
    let Some(r) = Repo::new() else { return };
    let (base, added, s) = r.keyword_far_from_its_secret();
    let found = same_findings(&s, r.path(), &[&added, "--not", &base]);
    let places: Vec<(Option<String>, String, u32)> = found
        .iter()
        .map(|f| (f.commit.clone(), f.file.clone(), f.line))
        .collect();
    assert_eq!(places, vec![(Some(added), "big.txt".to_string(), 3002)]);
}

/// A private key whose BEGIN line was pushed before (so it is the upstream's) and whose body
/// a new commit replaces: judged with its whole block, as the whole blob is.
#[test]
fn a_new_private_key_body_under_an_old_begin_line_is_judged_with_its_block() {
    let Some(r) = Repo::new() else { return };
    let mut rng = Rng(7);
    let code: Vec<String> = (0..200).map(|_| code_line(&mut rng)).collect();
    let old_key = private_key(&mut rng);
    let new_key = private_key(&mut rng);
    let file = |key: &[String]| -> String {
        let mut lines = code[..100].to_vec();
        lines.extend(key.iter().cloned());
        lines.extend(code[100..].iter().cloned());
        lines.join("\n") + "\n"
    };
    r.write("keys.txt", &file(&old_key));
    let base = r.commit("a key");
    let mut body = old_key.clone();
    body[1..13].clone_from_slice(&new_key[1..13]);
    r.write("keys.txt", &file(&body));
    let new = r.commit("its body replaced");
    let s = scanner();
    let found = same_findings(&s, r.path(), &[&new, "--not", &base]);
    // What the patch scan finds there, the same either way (the patch holds the body alone).
    assert!(
        found
            .iter()
            .all(|f| f.commit.as_deref() == Some(new.as_str()))
    );
    // The key added whole is found, judged either way.
    let all = same_findings(&s, r.path(), &["--all"]);
    assert!(
        all.iter().any(|f| f.rule_id == "private-key"),
        "{:?}",
        all.iter().map(|f| &f.rule_id).collect::<Vec<_>>()
    );
}

/// git's diff slides a hunk over lines equal to its own (its indent heuristic): a line
/// inserted after an equal line is shown as added *before* it. Here the commit adds an
/// `authorization: bearer` line and a token under it, right after an old `authorization:
/// bearer` line: this diff sees the token and the second line added, git the first line and
/// the token (a finding). The context around each hunk covers the difference.
#[test]
fn a_hunk_git_slides_over_an_equal_line_is_judged_with_its_context() {
    let Some(r) = Repo::new() else { return };
    let filler: Vec<String> = (0..100)
        .map(|i| format!("filler line {i} of the file"))
        .collect();
    let text = |middle: &[&str]| {
        let mut lines: Vec<String> = filler[..50].to_vec();
        lines.extend(middle.iter().map(|l| l.to_string()));
        lines.extend(filler[50..].iter().cloned());
        lines.join("\n") + "\n"
    };
    r.write("api.txt", &text(&["authorization: bearer"]));
    let base = r.commit("an authorization line");
    let token = format!("    {}", tok(&["Zq8Lr2Xv5N", "w1Tb7Kd4Hs9Mf3"]));
    r.write(
        "api.txt",
        &text(&["authorization: bearer", &token, "authorization: bearer"]),
    );
    let new = r.commit("a token");
    let diff = r.git(&["diff", "-U0", &base, &new]);
    assert!(
        diff.contains(&format!("+authorization: bearer\n+{token}")),
        "{diff}"
    );
    let found = same_findings(&scanner(), r.path(), &[&new, "--not", &base]);
    assert_eq!(
        found
            .iter()
            .map(|f| (f.rule_id.as_str(), f.line))
            .collect::<Vec<_>>(),
        vec![("generic-bearer-token", 51)]
    );
}
