//! The escape suite (see `suite/mod.rs`).

mod suite;
