//! The seam between the smolmachines backend and `smolvm`: [`SmolvmCli`] runs its commands
//! and reads the machine records it persisted. [`RealSmolvm`] runs the real executable and
//! reads its real state database; [`super::fake::FakeSmolvm`] behaves like both for tests.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{BackendError, BottleStdio, StdioMode};

/// What a finished `smolvm` command printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CliOutput {
    /// The exit code (`-1` when killed by a signal).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
}

/// A running `smolvm machine exec` (the agent).
pub trait CliChild: Send {
    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>>;
    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>>;
    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>>;
    /// Waits for it; its exit code (`128 + n` for a signal).
    fn wait(&mut self) -> Result<i32, BackendError>;
    /// Kills the local `smolvm` process (the machine is stopped separately).
    fn kill(&mut self) -> Result<(), BackendError>;
}

/// `smolvm` as the backend uses it.
pub trait SmolvmCli: Send + Sync {
    /// Runs `smolvm <args>` to completion. `Err` only when it could not be run at all.
    fn run(&self, args: &[String]) -> Result<CliOutput, BackendError>;
    /// Starts `smolvm <args>` with the bottle's standard streams (the agent's exec).
    fn spawn(&self, args: &[String], stdio: BottleStdio)
    -> Result<Box<dyn CliChild>, BackendError>;
    /// The record smolvm persisted for `machine` in its state database (`vms.data`, JSON);
    /// `None` when it has no such row. `Err` when the database cannot be read.
    fn machine_record(&self, machine: &str) -> Result<Option<serde_json::Value>, BackendError>;
}

/// smolvm's state database: `<local data dir>/smolvm/server/smolvm.db` (its `db.rs`), the
/// local data directory being `$XDG_DATA_HOME` or `~/.local/share` on Linux and
/// `~/Library/Application Support` on macOS.
pub fn default_db_path(home: Option<&Path>, xdg_data_home: Option<&Path>) -> Option<PathBuf> {
    let base = if cfg!(target_os = "macos") {
        home?.join("Library/Application Support")
    } else {
        match xdg_data_home.filter(|p| p.is_absolute()) {
            Some(xdg) => xdg.to_path_buf(),
            None => home?.join(".local/share"),
        }
    };
    Some(base.join("smolvm/server/smolvm.db"))
}

/// Reads machine records from a smolvm state database with the `sqlite3` command-line shell
/// (read-only), so no SQLite is compiled into bot-bottle.
#[derive(Debug, Clone)]
pub struct StateDb {
    pub path: PathBuf,
    pub sqlite3: PathBuf,
}

/// Machine names are passed inside SQL: only the characters bot-bottle's names use.
fn plain_name(machine: &str) -> bool {
    !machine.is_empty()
        && machine
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl StateDb {
    pub fn new(path: impl Into<PathBuf>, sqlite3: impl Into<PathBuf>) -> StateDb {
        StateDb {
            path: path.into(),
            sqlite3: sqlite3.into(),
        }
    }

    /// The `data` of `machine`'s row, decoded.
    pub fn machine_record(&self, machine: &str) -> Result<Option<serde_json::Value>, BackendError> {
        let unreadable = |why: String| BackendError::Setup {
            stage: "read smolvm's state database".into(),
            message: format!(
                "{}: {why}; bot-bottle cannot confirm the machine's isolation, so it refuses to start it",
                self.path.display()
            ),
        };
        if !plain_name(machine) {
            return Err(unreadable(format!("unexpected machine name {machine:?}")));
        }
        if !self.path.is_file() {
            return Err(unreadable(
                "no such file (is smolvm installed for this user, and is its version supported?)"
                    .into(),
            ));
        }
        let sql = format!("SELECT hex(data) FROM vms WHERE name = '{machine}';");
        let out = Command::new(&self.sqlite3)
            .arg("-readonly")
            .arg("-batch")
            .arg("-bail")
            .arg(&self.path)
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| unreadable(format!("cannot run {}: {e}", self.sqlite3.display())))?;
        if !out.status.success() {
            return Err(unreadable(format!(
                "sqlite3 failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let hex_text = text.trim();
        if hex_text.is_empty() {
            return Ok(None);
        }
        let bytes = hex::decode(hex_text)
            .map_err(|e| unreadable(format!("the row of {machine} is not hex: {e}")))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| unreadable(format!("the row of {machine} is not JSON: {e}")))
    }
}

/// The real `smolvm` executable and its state database.
#[derive(Debug, Clone)]
pub struct RealSmolvm {
    pub program: PathBuf,
    pub db: StateDb,
}

fn stdio(mode: StdioMode) -> Stdio {
    match mode {
        StdioMode::Inherit => Stdio::inherit(),
        StdioMode::Null => Stdio::null(),
        StdioMode::Piped => Stdio::piped(),
    }
}

/// A CLI that cannot be run: not installed is [`BackendError::Unavailable`] (nothing of
/// bot-bottle can exist in it, and `cleanup` goes on), anything else a process error.
pub(crate) fn not_run(
    backend: crate::BackendKind,
    program: &Path,
    action: &'static str,
    install: &str,
) -> impl FnOnce(std::io::Error) -> BackendError {
    let program = program.to_path_buf();
    let install = install.to_owned();
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            BackendError::Unavailable {
                backend,
                reason: format!("{} is not installed; {install}", program.display()),
            }
        } else {
            BackendError::Process { action, source }
        }
    }
}

const INSTALL: &str = "install smolvm: curl -sSL https://smolmachines.com/install.sh | sh";

impl SmolvmCli for RealSmolvm {
    fn run(&self, args: &[String]) -> Result<CliOutput, BackendError> {
        let out = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(not_run(
                crate::BackendKind::Smolmachines,
                &self.program,
                "run smolvm",
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
            .map_err(not_run(
                crate::BackendKind::Smolmachines,
                &self.program,
                "run smolvm machine exec",
                INSTALL,
            ))?;
        Ok(Box::new(RealChild(child)))
    }

    fn machine_record(&self, machine: &str) -> Result<Option<serde_json::Value>, BackendError> {
        self.db.machine_record(machine)
    }
}

/// A started process as a [`CliChild`] (also the apple backend's).
pub(crate) fn child(child: std::process::Child) -> Box<dyn CliChild> {
    Box::new(RealChild(child))
}

struct RealChild(std::process::Child);

impl CliChild for RealChild {
    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>> {
        self.0.stdin.take().map(|s| Box::new(s) as _)
    }
    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        self.0.stdout.take().map(|s| Box::new(s) as _)
    }
    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>> {
        self.0.stderr.take().map(|s| Box::new(s) as _)
    }
    fn wait(&mut self) -> Result<i32, BackendError> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.0.wait().map_err(|source| BackendError::Process {
            action: "wait for smolvm machine exec",
            source,
        })?;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }
    fn kill(&mut self) -> Result<(), BackendError> {
        match self.0.kill() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
            Err(source) => Err(BackendError::Process {
                action: "kill smolvm machine exec",
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_path_follows_smolvm() {
        let p = default_db_path(Some(Path::new("/home/a")), None).unwrap();
        if cfg!(target_os = "macos") {
            assert_eq!(
                p,
                Path::new("/home/a/Library/Application Support/smolvm/server/smolvm.db")
            );
        } else {
            assert_eq!(p, Path::new("/home/a/.local/share/smolvm/server/smolvm.db"));
            let p = default_db_path(Some(Path::new("/home/a")), Some(Path::new("/x"))).unwrap();
            assert_eq!(p, Path::new("/x/smolvm/server/smolvm.db"));
            // A relative XDG_DATA_HOME is ignored, as the XDG spec says.
            let p = default_db_path(Some(Path::new("/home/a")), Some(Path::new("x"))).unwrap();
            assert_eq!(p, Path::new("/home/a/.local/share/smolvm/server/smolvm.db"));
        }
    }

    #[test]
    fn a_missing_smolvm_is_unavailable_not_a_failure() {
        let cli = RealSmolvm {
            program: "/nonexistent/smolvm".into(),
            db: StateDb::new("/nonexistent.db", "sqlite3"),
        };
        let err = cli
            .run(&["machine".into(), "ls".into(), "--json".into()])
            .unwrap_err();
        assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
        assert!(
            err.to_string().contains("smolmachines.com/install.sh"),
            "{err}"
        );
    }

    #[test]
    fn names_with_quotes_never_reach_sql() {
        let db = StateDb::new("/nonexistent.db", "sqlite3");
        let err = db.machine_record("x'; DROP TABLE vms; --").unwrap_err();
        assert!(err.to_string().contains("unexpected machine name"), "{err}");
    }
}
