//! Supervise: how a bottled agent asks a human for more access.
//!
//! The agent calls MCP tools ([`server`]); each request becomes a proposal file in the
//! bottle's queue ([`queue`]); the operator answers from the dashboard or the CLI; the
//! server applies the change through an [`Applier`] ([`apply`]), records the decision in
//! a hash-chained audit log ([`audit`]) and only then answers the agent ([`engine`]).
//!
//! The proposal data itself (queue, audit log, effects, validation) lives in the
//! `proposals` crate, which the dashboard uses without this crate's HTTP stack; it is
//! re-exported here so the server's callers see one API.
//!
//! Entry point for the sidecar bundle: [`serve`].

pub mod apply;
pub mod engine;
pub mod server;

pub use proposals::{audit, effect, paths, proposal, queue, validate};

pub use apply::{
    Applier, ApplyError, Ended, FileApplier, RecordingApplier, ReloadHook, SweepAudit, Swept,
    UsesHook,
};
pub use engine::{Engine, WaitResult};
pub use proposals::Home;
pub use proposals::{Change, Effect, Grant};
pub use proposals::{Decision, Outcome, Proposal, Response, Status, Tool};
pub use proposals::{Entry, NewProposal, Problem, Queue, QueueError};
pub use server::{MAX_WAIT, ServeError, SuperviseConfig, SuperviseServer, router, serve};
