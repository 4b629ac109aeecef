//! How a backend starts one of bot-bottle's hidden subcommands (the native in-bottle helper,
//! the docker reaper): an executable and its arguments. Platform-neutral, so the backends that
//! run on macOS (docker, apple) use it while the native backend itself is Linux-only.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::BackendError;

/// Helper arguments for `bot-bottle`: the hidden subcommand that runs the native in-bottle
/// helper (`inbottle::native_helper::helper_main`, Linux).
pub const HELPER_SUBCOMMAND: &str = "__bottle-init";

/// The small executable beside `bot-bottle` that serves only [`HELPER_SUBCOMMAND`]
/// (`crate::OpenOptions::native_helper`).
pub const HELPER_EXE_NAME: &str = "bot-bottle-helper";

/// How to start the in-bottle helper: an executable that calls the native helper's
/// `helper_main` when given `args` (for `bot-bottle`: its own path and [`HELPER_SUBCOMMAND`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperCommand {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl HelperCommand {
    /// The running executable with the hidden `__bottle-init` subcommand.
    pub fn current_exe() -> Result<HelperCommand, BackendError> {
        let exe = std::env::current_exe().map_err(|source| BackendError::Io {
            action: "find the bot-bottle executable",
            path: PathBuf::from("/proc/self/exe"),
            source,
        })?;
        Ok(HelperCommand {
            exe,
            args: vec![HELPER_SUBCOMMAND.into()],
        })
    }
}
