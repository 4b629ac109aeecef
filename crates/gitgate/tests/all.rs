//! Integration tests of the git gate: real git clients, real upstream repositories, a real
//! sshd and a fake Gitea API — all on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
