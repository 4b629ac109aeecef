//! Integration tests of the backends with real kernel namespaces (one test binary).

// Test support code outside `#[test]` functions panics on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
