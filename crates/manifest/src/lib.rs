//! The bot-bottle manifest: what bottles and agents a user has described.
//!
//! Two layers: [`raw`] is exactly what the user wrote (serde, unknown fields rejected), and
//! the resolved layer (after `extends` and validation) is what the rest of bot-bottle uses.

pub mod raw;
