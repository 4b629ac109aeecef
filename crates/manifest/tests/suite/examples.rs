//! The shipped examples are valid, agree with each other, and render as expected.

use std::path::PathBuf;

use manifest::Manifest;
use pretty_assertions::assert_eq;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn file_example_is_valid() {
    let m = Manifest::load(examples().join("bot-bottle.yaml")).unwrap();
    assert_eq!(m.errors(), &[]);
    assert_eq!(m.bottle_names(), vec!["base", "net", "dev"]);
    assert_eq!(m.agent_names(), vec!["demo"]);
    let demo = m.agent("demo").unwrap();
    assert_eq!(demo.bottle_name, "dev");
    assert_eq!(
        demo.prompt.as_deref(),
        Some("Fix the failing tests, then push the fix to a bot/ branch.")
    );
    assert_eq!(
        demo.skills,
        vec![std::path::absolute(examples().join("skills/review")).unwrap()]
    );
}

#[test]
fn directory_example_matches_the_file_example() {
    let file = Manifest::load(examples().join("bot-bottle.yaml")).unwrap();
    let dir = Manifest::load(examples().join("dot-bot-bottle")).unwrap();
    assert_eq!(dir.errors(), &[]);
    for name in ["base", "net", "dev"] {
        assert_eq!(
            dir.bottle(name).unwrap(),
            file.bottle(name).unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        dir.agent("demo").unwrap().prompt,
        file.agent("demo").unwrap().prompt
    );
}

#[test]
fn show_dev_yaml() {
    let m = Manifest::load(examples().join("bot-bottle.yaml")).unwrap();
    insta::assert_snapshot!(m.bottle("dev").unwrap().to_yaml().unwrap());
}

#[test]
fn show_dev_json() {
    let m = Manifest::load(examples().join("bot-bottle.yaml")).unwrap();
    insta::assert_snapshot!(serde_json::to_string_pretty(&m.bottle("dev").unwrap()).unwrap());
}

#[test]
fn resolved_yaml_reads_back_as_a_bottle() {
    // `manifest show` output is itself a valid bottle body.
    let m = Manifest::load(examples().join("bot-bottle.yaml")).unwrap();
    let dev = m.bottle("dev").unwrap();
    let body = dev.to_yaml().unwrap();
    let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
    let again = Manifest::from_yaml("again.yaml", &format!("bottles:\n  dev:\n{indented}"), None);
    assert_eq!(again.errors(), &[]);
    assert_eq!(again.bottle("dev").unwrap(), dev);
}
