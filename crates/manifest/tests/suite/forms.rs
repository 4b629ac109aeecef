//! The directory form: `bottles/<name>.md` and `agents/<name>.md` with YAML front matter.

use std::path::{Path, PathBuf};

use manifest::Manifest;
use pretty_assertions::assert_eq;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Errors with the temporary directory replaced by `<dir>`.
fn errors_of(m: &Manifest, dir: &Path) -> Vec<String> {
    m.errors()
        .iter()
        .map(|d| d.to_string().replace(&dir.display().to_string(), "<dir>"))
        .collect()
}

#[test]
fn directory_form_resolves_like_the_file_form() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "bottles/base.md",
        "---\nenv: {A: \"1\"}\negress: {routes: [{host: a.example.com}]}\n---\nNotes.\n",
    );
    write(
        dir,
        "bottles/dev.md",
        "---\nextends: base\nsupervise: false\n---\n",
    );
    write(
        dir,
        "agents/demo.md",
        "---\nbottle: dev\nskills: [skills/review]\n---\n\nFix the tests.\n\nThen push.\n",
    );
    write(dir, "skills/review/SKILL.md", "review\n");
    write(dir, "bottles/README.txt", "not a bottle\n");
    let dm = Manifest::load(dir).unwrap();
    assert_eq!(errors_of(&dm, dir), Vec::<String>::new());
    assert_eq!(dm.bottle_names(), vec!["base", "dev"]);

    let fm = Manifest::from_yaml(
        dir.join("bot-bottle.yaml"),
        "bottles:\n  base: {env: {A: \"1\"}, egress: {routes: [{host: a.example.com}]}}\n  dev: {extends: base, supervise: false}\nagents:\n  demo: {bottle: dev, skills: [skills/review], prompt: \"Fix the tests.\\n\\nThen push.\"}\n",
        None,
    );
    assert_eq!(fm.errors(), &[]);
    assert_eq!(dm.bottle("dev").unwrap(), fm.bottle("dev").unwrap());
    let agent = dm.agent("demo").unwrap();
    assert_eq!(agent, fm.agent("demo").unwrap());
    assert_eq!(
        agent.prompt.as_deref(),
        Some("Fix the tests.\n\nThen push.")
    );
    assert_eq!(agent.skills, vec![dir.join("skills/review")]);
}

#[test]
fn file_without_front_matter_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "bottles/plain.md",
        "# plain\n\nJust notes, no front matter.\n",
    );
    write(dir, "agents/open.md", "---\nbottle: plain\n");
    let m = Manifest::load(dir).unwrap();
    assert_eq!(
        errors_of(&m, dir),
        vec![
            "<dir>/agents/open.md:1:1: the front matter opened by `---` on line 1 is never \
             closed: add a `---` line after the agent's fields",
            "<dir>/bottles/plain.md:1:1: no YAML front matter: start the file with a `---` \
             line, then the bottle's fields in YAML, then a closing `---` line",
        ]
    );
}

#[test]
fn yaml_errors_count_lines_from_the_top_of_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "bottles/a.md",
        "---\nenv: {A: x}\nsupervize: true\n---\n",
    );
    write(dir, "bottles/b.md", "---\nextends: [a, nope]\n---\n");
    let m = Manifest::load(dir).unwrap();
    assert_eq!(
        errors_of(&m, dir),
        vec![
            "<dir>/bottles/a.md:3:1: unknown field `supervize`, expected one of extends, \
             agent_provider, supervise, env, git-gate, egress, resources, \
             dangerously_run_as_host_root, kubernetes; did you mean `supervise`?",
            "<dir>/bottles/b.md:2:14: bottle `b`: extends `nope`, which is not defined; \
             available bottles: a, b",
        ]
    );
}

#[test]
fn agent_with_prompt_field_and_body() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, "bottles/a.md", "---\n---\n");
    write(
        dir,
        "agents/x.md",
        "---\nbottle: a\nprompt: one\n---\ntwo\n",
    );
    let m = Manifest::load(dir).unwrap();
    assert_eq!(
        errors_of(&m, dir),
        vec![
            "<dir>/agents/x.md:3:9: agent `x` has both a `prompt:` field and a Markdown body; \
             keep one of them"
        ]
    );
}

#[test]
fn directory_without_bottles_or_agents() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Manifest::load(tmp.path()).unwrap();
    assert_eq!(
        errors_of(&m, tmp.path()),
        vec![
            "<dir>: not a manifest directory: expected `bottles/<name>.md` and \
             `agents/<name>.md` files inside"
        ]
    );
}

#[test]
fn relative_manifest_path_is_shown_as_given() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "m/bottles/a.md", "no front matter\n");
    let opts = manifest::DiscoverOptions {
        explicit: Some(PathBuf::from("m")),
        cwd: tmp.path().to_path_buf(),
        ..manifest::DiscoverOptions::default()
    };
    let m = Manifest::discover(&opts).unwrap();
    assert_eq!(m.path(), Path::new("m"));
    assert_eq!(m.errors()[0].file, PathBuf::from("m/bottles/a.md"),);
}

#[test]
fn unknown_and_broken_names_in_the_directory_form() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, "bottles/ok.md", "---\n---\n");
    write(dir, "bottles/bad.md", "---\nsupervise: maybe\n---\n");
    let m = Manifest::load(dir).unwrap();
    assert!(m.bottle("ok").is_ok());
    assert_eq!(
        m.bottle("nope")
            .unwrap_err()
            .to_string()
            .replace(&dir.display().to_string(), "<dir>"),
        "no bottle `nope` in <dir>; available bottles: bad, ok"
    );
    assert_eq!(
        m.bottle("bad")
            .unwrap_err()
            .to_string()
            .replace(&dir.display().to_string(), "<dir>"),
        "manifest <dir> has 1 error:\n  <dir>/bottles/bad.md:2:12: `supervise`: expected `true` or `false`"
    );
}

#[test]
fn file_form_yaml_error_hides_every_name() {
    let m = Manifest::from_yaml("m.yaml", "bottles:\n  a: {supervise: maybe}\n", None);
    assert_eq!(
        m.bottle("a").unwrap_err().to_string(),
        "manifest m.yaml has 1 error:\n  m.yaml:2:18: `bottles.a.supervise`: expected `true` or `false`"
    );
    assert_eq!(
        m.agent("x").unwrap_err().to_string(),
        "manifest m.yaml has 1 error:\n  m.yaml:2:18: `bottles.a.supervise`: expected `true` or `false`"
    );
}
