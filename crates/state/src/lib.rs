//! `$BOT_BOTTLE_HOME`: where bot-bottle keeps everything a bottle needs between processes.
//!
//! ```text
//! $BOT_BOTTLE_HOME/
//!   state/<identity>/   metadata.json, ca/, live-config/, git-gate/, transcript/, logs/, .preserve
//!   queue/<identity>/   proposals, responses, processed/
//!   audit/<component>/<identity>.jsonl
//!   trash/              what ended bottles left, removed in the background (see [`trash`])
//! ```
//!
//! Everything is plain files written atomically (temp file, fsync, rename), so a crash never
//! leaves half a file. A bottle's state directory is created under a home-wide lock, so two
//! launches never get the same identity, and a running bottle holds an exclusive lock on its
//! `lock` file for as long as it lives, which is how `list` tells running from stale.
//!
//! [`read`] is the one way bot-bottle reads a file the user names: regular files only, with
//! a size limit (every crate that reads user input depends on this small crate for it).

mod atomic;
mod bottle;
mod identity;
mod kept_logs;
mod layout;
mod names;
pub mod read;
pub mod trash;

/// The environment variable naming the home; read only by [`Home::from_env`].
pub const HOME_ENV: &str = "BOT_BOTTLE_HOME";

pub use atomic::{
    PendingSync, Staged, SyncHandle, atomic_write, atomic_write_mode, atomic_write_new,
    atomic_write_unsynced, move_durably, sync_dir,
};
pub use bottle::{BottlePaths, SocketPathTooLong};
pub use identity::{Identity, IdentityError};
pub use kept_logs::KEPT_BOTTLES;
pub use layout::{BottleEntry, BottleState, Home, Metadata, RunLock, StateError};
pub use names::{NameError, check_identity, check_proposal_id};
pub use trash::{EMPTY_TRASH_SUBCOMMAND, move_to_trash};
