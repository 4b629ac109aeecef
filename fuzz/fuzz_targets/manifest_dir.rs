//! The directory form of the manifest: `bottles/<name>.md` and `agents/<name>.md` files
//! with YAML front matter (missing, unclosed, empty, hostile YAML) and `extends` between
//! them, written to a scratch directory and loaded; loading never panics.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

const NAMES: [&str; 4] = ["base", "dev", "ok", "x"];

#[derive(Arbitrary, Debug)]
struct File<'a> {
    agent: bool,
    name: u8,
    /// wrap `yaml` in `---` lines (otherwise written as is)
    fenced: bool,
    yaml: &'a str,
    body: &'a str,
}

fn scratch() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| std::env::temp_dir().join(format!("bb-fuzz-dir-{}", std::process::id())))
}

fuzz_target!(|files: Vec<File>| {
    let dir = scratch();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("bottles")).unwrap();
    std::fs::create_dir_all(dir.join("agents")).unwrap();
    for f in files.iter().take(6) {
        let sub = if f.agent { "agents" } else { "bottles" };
        let path = dir
            .join(sub)
            .join(format!("{}.md", NAMES[usize::from(f.name) % 4]));
        let text = if f.fenced {
            format!("---\n{}\n---\n{}", f.yaml, f.body)
        } else {
            format!("{}{}", f.yaml, f.body)
        };
        std::fs::write(path, text).unwrap();
    }
    if let Ok(m) = manifest::Manifest::load(dir) {
        let _ = m.check();
        for name in m.agent_names() {
            let _ = m.agent(name);
        }
    }
});
