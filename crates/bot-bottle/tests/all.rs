//! Tests of the `bot-bottle` binary (one test binary; each command in `suite/`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
