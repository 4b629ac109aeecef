//! The escape suite (see `suite/mod.rs`), compiled as one binary.

// Test helpers outside `#[test]` functions may unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
