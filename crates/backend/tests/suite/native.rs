//! The native backend against the real kernel.

use pretty_assertions::assert_eq;

use super::support::Fixture;

#[test]
fn runs_a_command_and_propagates_its_exit_code() {
    let f = Fixture::new();
    let out = f.sh("echo hello; exit 7");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (7, "hello\n"),
        "{}",
        out.stderr
    );
}
