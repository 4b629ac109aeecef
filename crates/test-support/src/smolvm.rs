//! The stand-in for `smolvm` that `bot-bottle start --backend smolmachines` runs against on
//! Linux (`fakes/smolvm.py`, whose docstring says what it emulates and how): `smolvm` in a
//! directory to put first on `PATH`, its state database under an `XDG_DATA_HOME` of its own
//! (give bot-bottle the same), its faults and calls, and the docker containers it made
//! (removed on drop). Test setup only.

use std::path::PathBuf;

use crate::apple_container::{StandIn, remove_docker_objects};
use crate::docker::docker;

/// One stand-in `smolvm` with a state database of its own.
pub struct FakeSmolvmCli {
    dir: tempfile::TempDir,
    /// The directory holding `smolvm` (put it first on `PATH`).
    pub bin: PathBuf,
    /// Its `XDG_DATA_HOME` (the database is `smolvm/server/smolvm.db` in it).
    pub data_home: PathBuf,
    /// The prefix of the docker containers it creates.
    pub prefix: String,
}

impl FakeSmolvmCli {
    pub fn new() -> Result<FakeSmolvmCli, String> {
        let data = tempfile::Builder::new()
            .prefix("bbsd")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let made = StandIn::new(
            "smolvm.py",
            "smolvm",
            "BB_FAKE_SMOLVM_DIR",
            &[("XDG_DATA_HOME", &data)],
        )?;
        Ok(FakeSmolvmCli {
            bin: made.bin,
            data_home: data,
            prefix: made.prefix,
            dir: made.dir,
        })
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Replaces the faults (see the script's docstring).
    pub fn set_faults(&self, faults: &[&str]) {
        crate::apple_container::write_faults(&self.state_dir(), faults);
    }

    /// Every command line it was given, in order.
    pub fn calls(&self) -> Vec<String> {
        crate::apple_container::read_calls(&self.state_dir())
    }

    /// The machines in its state database.
    pub fn machines(&self) -> Vec<String> {
        let db = self.data_home.join("smolvm/server/smolvm.db");
        if !db.exists() {
            return Vec::new();
        }
        let out = std::process::Command::new("sqlite3")
            .arg("-readonly")
            .arg(&db)
            .arg("SELECT name FROM vms ORDER BY name;")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The docker containers it made that still exist.
    pub fn docker_objects(&self) -> Vec<String> {
        let filter = format!("name={}", self.prefix);
        let mut all: Vec<String> =
            docker(&["ps", "--all", "--filter", &filter, "--format", "{{.Names}}"])
                .map(|out| out.lines().map(str::to_owned).collect())
                .unwrap_or_default();
        all.retain(|n| n.starts_with(&self.prefix));
        all
    }
}

impl Drop for FakeSmolvmCli {
    fn drop(&mut self) {
        remove_docker_objects(&self.docker_objects());
        let _ = std::fs::remove_dir_all(&self.data_home);
    }
}
