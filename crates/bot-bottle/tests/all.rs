//! Integration tests of the `bot-bottle` binary, compiled as one binary (each command in `suite/`).

// Test helpers outside `#[test]` functions may unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
