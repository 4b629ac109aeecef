//! Supervise: how a bottled agent asks a human for more access.
//!
//! The agent calls MCP tools ([`server`]); each request becomes a proposal file in the
//! bottle's queue ([`queue`]); the operator answers from the dashboard or the CLI; the
//! server applies the change through an [`Applier`] ([`apply`]), records the decision in
//! a hash-chained audit log ([`audit`]) and only then answers the agent ([`engine`]).
//!
//! Entry point for the sidecar bundle: [`serve`].

pub mod apply;
pub mod audit;
pub mod effect;
pub mod engine;
pub mod fsutil;
pub mod paths;
pub mod proposal;
pub mod queue;
pub mod server;
pub mod validate;

pub use apply::{Applier, ApplyError, FileApplier, RecordingApplier, ReloadHook};
pub use effect::{Change, Effect};
pub use engine::{Engine, WaitResult};
pub use paths::Home;
pub use proposal::{Decision, Outcome, Proposal, Response, Status, Tool};
pub use queue::{Entry, NewProposal, Problem, Queue, QueueError};
pub use server::{MAX_WAIT, ServeError, SuperviseConfig, SuperviseServer, router, serve};
