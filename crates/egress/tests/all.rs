//! Integration tests of the egress proxy: real TLS upstreams on loopback, real clients
//! (hyper in-process and `curl` as a subprocess), the real `bot-bottle` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
