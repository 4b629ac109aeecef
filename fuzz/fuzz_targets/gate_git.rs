//! The git side of the git gate, where our code reads what git or the agent sends: the
//! request path (`route`: which repository, which endpoint), the CGI head of
//! `git http-backend`, the ref updates fed to the pre-receive hook, and the scanner's
//! parsers of git's output (`git log -p`, tree objects). The pkt-lines themselves are read
//! by git (`git http-backend`), never by our code, so they have no target here.
//!
//! Oracles: nothing panics; a routed repository name is one path segment (no `/`, not
//! empty) taken from the path itself; a parsed ref update is three whitespace-free fields
//! and re-rendering the updates parses back to the same; every `git log -p` fragment has
//! one line number per added line, increasing, and its bytes are in the input; a tree
//! parses back to exactly its input.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Route { post: bool, path: String },
    Cgi(Vec<Vec<u8>>),
    Updates(String),
    GitLog { batch: u16, bytes: Vec<u8> },
    Tree { sha256: bool, bytes: Vec<u8> },
}

fuzz_target!(|input: Input| match input {
    Input::Route { post, path } => {
        let method = if post {
            http::Method::POST
        } else {
            http::Method::GET
        };
        if let Some((repo, endpoint)) = gitgate::fuzzing::route(&method, &path) {
            assert!(
                !repo.is_empty() && !repo.contains('/'),
                "repository {repo:?} from {path:?}"
            );
            assert!(
                path.starts_with(&format!("/{repo}.git/{endpoint}")),
                "{path:?}"
            );
        }
    }
    Input::Cgi(lines) => {
        if let Ok((status, _)) = gitgate::fuzzing::cgi_headers(&lines) {
            assert!((100..1000).contains(&status));
        }
    }
    Input::Updates(text) => {
        if let Ok(updates) = gitgate::hook::parse_updates(&text) {
            let mut again = String::new();
            for u in &updates {
                for f in [&u.old, &u.new, &u.name] {
                    assert!(
                        !f.is_empty() && !f.chars().any(char::is_whitespace),
                        "{u:?}"
                    );
                }
                again.push_str(&format!("{} {} {}\n", u.old, u.new, u.name));
            }
            let back = gitgate::hook::parse_updates(&again).expect("re-rendered updates parse");
            assert_eq!(format!("{back:?}"), format!("{updates:?}"));
        }
    }
    Input::GitLog { batch, bytes } => {
        for (_commit, _path, data, lines) in scan::fuzzing::git_log(&bytes, usize::from(batch) + 1)
        {
            let added = data.split(|b| *b == b'\n').count() - usize::from(data.ends_with(b"\n"));
            assert_eq!(lines.len(), added, "one line number per added line");
            assert!(
                lines.windows(2).all(|w| w[0] < w[1]),
                "line numbers increase: {lines:?}"
            );
            assert!(data.len() <= bytes.len());
        }
    }
    Input::Tree { sha256, bytes } => {
        let hash_len = if sha256 { 32 } else { 20 };
        if let Some(entries) = scan::fuzzing::tree(&bytes, hash_len) {
            let mut back = Vec::new();
            let mut rest = bytes.as_slice();
            for (name, _, _, oid) in &entries {
                assert_eq!(oid.len(), hash_len * 2);
                let sp = rest.iter().position(|b| *b == b' ').expect("a mode");
                back.extend_from_slice(&rest[..=sp]);
                back.extend_from_slice(name);
                back.push(0);
                back.extend_from_slice(&hex_decode(oid));
                rest = &rest[sp + 1 + name.len() + 1 + hash_len..];
            }
            assert_eq!(back, bytes, "a tree parses back to its input");
        }
    }
});

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
