//! `bot-bottle doctor` through the real binary.

use pretty_assertions::assert_eq;

#[test]
fn doctor_prints_one_line_per_backend_and_exits_0_when_native_works() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .arg("doctor")
        .env("HOME", home.path())
        .env("BOT_BOTTLE_HOME", home.path().join(".bot-bottle"))
        .env_remove("XDG_CACHE_HOME")
        .env_remove("BOT_BOTTLE_QEMU_KERNEL")
        .env_remove("BOT_BOTTLE_QEMU_MODULES")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let prefixes: Vec<&str> = lines
        .iter()
        .map(|l| l.split(':').next().unwrap_or(""))
        .collect();
    // only the backends this build has, then the agents a native bottle can run
    assert_eq!(
        prefixes,
        vec![
            "native (default)",
            "docker",
            "smolmachines",
            "apple",
            "qemu",
            "kubernetes",
            "claude (native)",
            "codex (native)",
            "gemini (native)",
            "opencode (native)"
        ]
    );
    // The two CLI-driven backends say plainly what they were verified against.
    assert!(
        lines[2].contains("warning: implemented and proven against fakes only")
            && lines[2].contains("not yet run on a real smolvm host by this project"),
        "{}",
        lines[2]
    );
    if cfg!(target_os = "linux") {
        assert_eq!(
            lines[3],
            "apple: not usable: only available on macOS; fix: use --backend native on Linux"
        );
    }
    for line in &lines[6..] {
        assert!(
            line.contains(": usable (/") || line.contains("or use --backend docker"),
            "{line}"
        );
    }
    if lines[0].starts_with("native (default): usable") {
        assert_eq!(out.status.code(), Some(0));
        assert!(lines[0].contains("a test bottle ran"), "{}", lines[0]);
    } else {
        // A machine without user namespaces: the line carries the fix and the exit code is 1.
        assert!(lines[0].contains("fix: "), "{}", lines[0]);
        assert_eq!(out.status.code(), Some(1));
    }
    // No kernel in this fresh home's cache: the qemu line says how to prepare one.
    assert!(
        lines[4].contains("; fix: run `bot-bottle prepare qemu`"),
        "{}",
        lines[4]
    );
    // No kubeconfig in this fresh home: the kubernetes line says where to get one, offline.
    assert!(lines[5].contains("fix: point $KUBECONFIG"), "{}", lines[5]);
    // doctor leaves nothing behind
    assert!(!home.path().join(".bot-bottle").exists());
}
