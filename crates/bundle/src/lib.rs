//! The sidecar bundle: one bottle's egress, git gate and supervise as tasks of one runtime.
//!
//! The launcher writes the bundle's config ([`SidecarConfig`], `sidecar.json` in the bottle's
//! state directory) and starts `bot-bottle sidecar --config FILE`, whose whole work is
//! [`run`]: bind every listener, prepare the git gate's mirrors, print `ready` on stdout, and
//! serve until SIGTERM (in-flight requests finish or fail, forge deploy keys are revoked). A
//! sidecar that stops on its own stops the bundle: a bottle is never left with a way out
//! that nothing checks. The bundle holds the tokens and the CA key; neither is ever written
//! where the agent can read it. [`check`] is the health check of a running bundle.
//!
//! A kubernetes warm pod's bundle (issue 21) gets its files through [`intake`] instead of a
//! Secret, from the launcher that claimed the pod only (a token whose SHA-256 the claim put
//! in the pod's annotations), and hands the agent its plan once ready ([`plan`], [`run_with_plan`]): the
//! agent's container runs nothing before that.
//!
//! This crate is the only one that knows all three sidecars: it wires an approval in
//! supervise to the live routes of egress and the allowed findings of the git gate
//! ([`serve`]'s `SidecarApplier`). The sidecars themselves never know each other.

mod check;
mod config;
mod dlp_audit;
mod error;
pub mod intake;
pub mod operator;
pub mod plan;
mod serve;

pub use check::{Health, check};
pub use config::{
    EgressSidecar, GateSidecar, Listen, OperatorSidecar, SidecarConfig, SuperviseSidecar,
};
pub use error::BundleError;
pub use plan::Plan;
pub use serve::{SHUTDOWN_BOUND, run, run_with_plan, serve, serve_with_env, serve_with_plan};
