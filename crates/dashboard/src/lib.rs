//! The operator dashboard (`bot-bottle supervise`): pending proposals of every bottle by
//! arrival, the selected one's justification and diff, and keys to approve, edit,
//! reject and filter. It only writes responses into the queues; each bottle's supervise
//! server applies them. It never logs to its own screen: the caller sends logs to a file.

pub mod app;
pub mod diff;
pub mod hits;
mod input;
pub mod run;
pub mod ui;

pub use app::{Action, App, Snapshot, Tone, snapshot};
pub use run::{
    DashboardError, Event, QueueWatch, edit_in_editor, perform, preview_persist, run, watch_queues,
};
