//! Integration tests of the `bot-bottle` binary, compiled as one binary (each command in `suite/`).

// Test helpers outside `#[test]` functions may unwrap too: a failure is a test failure.
//! Tests of the `bot-bottle` binary (one test binary; each command in `suite/`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
