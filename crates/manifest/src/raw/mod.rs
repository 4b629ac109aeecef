//! Raw serde layer: what a user writes, every field optional, unknown fields rejected.

pub mod git_gate;

pub use git_gate::{GitGate, GitUser, KeySpec, RepoSpec};
pub use policy::raw::EgressConfig;
