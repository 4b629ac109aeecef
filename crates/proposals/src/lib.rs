//! Proposals: the data both sides of supervision share, and nothing else.
//!
//! An agent's request for more access is a *proposal*: the MCP server (`supervise`) writes
//! it into the bottle's queue ([`queue`]), the operator answers it from the dashboard or the
//! CLI, and every decision is appended to a hash-chained audit log ([`audit`]). What an
//! approval would change is computed here too ([`effect`], [`validate`]), so that the
//! server, the dashboard and the CLI show and apply the same thing.
//!
//! The crate is named after the domain object, not after the queue, because it owns a
//! proposal's whole life as data: request, response, effect and audit line. It is kept
//! apart from `supervise` so that the operator's side (the dashboard, the CLI) reads and
//! answers proposals without linking the MCP server and its HTTP stack (rmcp, axum): the
//! dependency points from the server and the dashboard to this crate, never between them.
//! No transport, no async runtime; files and pure logic only.

pub mod audit;
pub mod dlp;
pub mod effect;
pub mod grant;
pub mod paths;
pub mod persist;
pub mod proposal;
pub mod queue;
pub mod validate;

pub use effect::{Change, Effect};
pub use grant::Grant;
pub use paths::Home;
pub use proposal::{Decision, Outcome, Proposal, Response, Status, Tool};
pub use queue::{Entry, NewProposal, Problem, Queue, QueueError};
