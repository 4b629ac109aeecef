//! `--persist`: an approved route written into the shipped example manifests, both forms,
//! keeping every comment; the result loads and the bottle has the route.

use std::path::{Path, PathBuf};

use manifest::Manifest;
use manifest::edit::{Place, add_routes, bottle_file};
use pretty_assertions::assert_eq;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn new_route() -> policy::Route {
    serde_saphyr::from_str(
        "host: pypi.org\nmatches:\n  - paths: [{type: prefix, value: /simple/}]\n    methods: [GET]\n",
    )
    .unwrap()
}

fn hosts(m: &Manifest, bottle: &str) -> Vec<String> {
    m.bottle(bottle)
        .unwrap()
        .egress
        .routes
        .iter()
        .map(|r| r.host.clone())
        .collect()
}

#[test]
fn persist_into_the_file_form_keeps_its_comments() {
    let path = examples().join("bot-bottle.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (file, place) = bottle_file(&path, "dev");
    assert_eq!(
        (file.as_path(), &place),
        (path.as_path(), &Place::File("dev"))
    );
    let edited = add_routes(&text, &place, &[new_route()], Path::new("bot-bottle.yaml")).unwrap();
    // Every line of the original is still there, in order.
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("egress: {log: all}"))
        .collect();
    let mut rest = edited.lines();
    for line in &kept {
        assert!(rest.any(|l| l == *line), "lost {line:?}");
    }
    insta::assert_snapshot!("persist_file_form", similar_diff(&text, &edited));
    let m = Manifest::from_yaml(&path, &edited, None);
    assert_eq!(m.errors(), &[]);
    assert_eq!(
        hosts(&m, "dev").last().map(String::as_str),
        Some("pypi.org")
    );
}

#[test]
fn persist_into_the_directory_form_edits_the_front_matter() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("m");
    copy_dir(&examples().join("dot-bot-bottle"), &root);
    let (file, place) = bottle_file(&root, "net");
    assert_eq!(
        (file.clone(), &place),
        (root.join("bottles/net.md"), &Place::FrontMatter)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = add_routes(&text, &place, &[new_route()], Path::new("bottles/net.md")).unwrap();
    insta::assert_snapshot!("persist_directory_form", edited);
    std::fs::write(&file, &edited).unwrap();
    let m = Manifest::load(&root).unwrap();
    assert_eq!(m.errors(), &[]);
    assert_eq!(
        hosts(&m, "net"),
        vec![
            "crates.io",
            "*.crates.io",
            "static.rust-lang.org",
            "pypi.org"
        ]
    );
}

/// The lines added, as `+` lines with a little context (what the operator confirms).
fn similar_diff(old: &str, new: &str) -> String {
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while j < new.len() {
        if i < old.len() && old[i] == new[j] {
            i += 1;
        } else if i < old.len() && !new[j..].contains(&old[i]) {
            out.push_str(&format!("-{}\n", old[i]));
            i += 1;
            continue;
        } else {
            out.push_str(&format!("+{}\n", new[j]));
        }
        j += 1;
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
