//! The seam between the apple backend and Apple's `container` CLI: [`ContainerCli`] runs its
//! commands; [`RealContainer`] runs the real executable, [`super::fake::FakeContainer`]
//! behaves like it for tests. The output and child types are the smolmachines backend's (both
//! backends only run commands).

use std::path::PathBuf;
use std::process::{Command, Stdio};

pub use crate::smolvm::cli::{CliChild, CliOutput};
use crate::{BackendError, BottleStdio, StdioMode};

/// `container` as the backend uses it.
pub trait ContainerCli: Send + Sync {
    /// Runs `container <args>` to completion, with `env` added to its environment (values
    /// that must not appear on a command line, which `--env NAME` reads). `Err` only when it
    /// could not be run at all.
    fn run(&self, args: &[String], env: &[(String, String)]) -> Result<CliOutput, BackendError>;
    /// Starts `container <args>` with the bottle's standard streams (the agent's start).
    fn spawn(&self, args: &[String], stdio: BottleStdio)
    -> Result<Box<dyn CliChild>, BackendError>;
}

const INSTALL: &str = "install Apple's container CLI from github.com/apple/container and run `container system start`";

/// The real `container` executable.
#[derive(Debug, Clone)]
pub struct RealContainer {
    pub program: PathBuf,
}

fn stdio(mode: StdioMode) -> Stdio {
    match mode {
        StdioMode::Inherit => Stdio::inherit(),
        StdioMode::Null => Stdio::null(),
        StdioMode::Piped => Stdio::piped(),
    }
}

impl ContainerCli for RealContainer {
    fn run(&self, args: &[String], env: &[(String, String)]) -> Result<CliOutput, BackendError> {
        let out = Command::new(&self.program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .map_err(crate::smolvm::cli::not_run(
                crate::BackendKind::Apple,
                &self.program,
                "run container",
                INSTALL,
            ))?;
        Ok(CliOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn spawn(&self, args: &[String], io: BottleStdio) -> Result<Box<dyn CliChild>, BackendError> {
        let child = Command::new(&self.program)
            .args(args)
            .stdin(stdio(io.stdin))
            .stdout(stdio(io.stdout))
            .stderr(stdio(io.stderr))
            .spawn()
            .map_err(crate::smolvm::cli::not_run(
                crate::BackendKind::Apple,
                &self.program,
                "run container start",
                INSTALL,
            ))?;
        Ok(crate::smolvm::cli::child(child))
    }
}
