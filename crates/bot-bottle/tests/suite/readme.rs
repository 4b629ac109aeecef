//! The README's manifest example is the checked example file, word for word.

use std::path::Path;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

#[test]
fn readme_embeds_the_example_manifest_verbatim() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let example = std::fs::read_to_string(repo_root().join("examples/bot-bottle.yaml")).unwrap();
    let marker = "<!-- examples/bot-bottle.yaml -->\n```yaml\n";
    let start = readme.find(marker).expect("README has the example marker") + marker.len();
    let len = readme[start..]
        .find("```\n")
        .expect("example block is closed");
    pretty_assertions::assert_eq!(&readme[start..start + len], example.as_str());
}

#[test]
fn readme_example_passes_manifest_check() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(["manifest", "check", "--manifest"])
        .arg(repo_root().join("examples/bot-bottle.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn readme_starts_with_the_two_commands() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let first_block = readme
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    assert!(first_block.contains("bot-bottle start "), "{first_block}");
    assert!(first_block.contains("scripts/test"), "{first_block}");
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).unwrap();
    assert!(
        ci.contains("scripts/test"),
        ".ci/run must run the README's test command"
    );
}
