//! The system's package tools as `bot-bottle prepare qemu` uses them, behind [`PackageTools`]
//! so that `prepare`'s decisions are unit-tested against a recording fake; [`DebianTools`]
//! runs the real ones (`apt-cache`, `apt-get download`, `dpkg-deb`, `xz`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::assets::{AssetsError, DEBIAN_ARCH, io};

/// Where `prepare` takes the kernel package from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// The distribution's current generic kernel, downloaded with its package tools.
    Distribution,
    /// A kernel package already on disk (`bot-bottle prepare qemu --deb FILE`).
    Deb(PathBuf),
}

/// The system's package tools, as `prepare` uses them.
pub trait PackageTools {
    /// The kernel package `metapackage` (e.g. `linux-image-amd64`) depends on now, e.g.
    /// `linux-image-6.1.0-57-amd64`.
    fn kernel_package(&mut self, metapackage: &str) -> Result<String, AssetsError>;
    /// Downloads `package` into the empty directory `dir`; returns the `.deb`'s path.
    fn download(&mut self, package: &str, dir: &Path) -> Result<PathBuf, AssetsError>;
    /// The name of the package in a `.deb` (its control file's `Package:`).
    fn package_name(&mut self, deb: &Path) -> Result<String, AssetsError>;
    /// Unpacks the files of the `.deb` into `dir` (no maintainer scripts run).
    fn extract(&mut self, deb: &Path, dir: &Path) -> Result<(), AssetsError>;
    /// Decompresses one xz stream from `input` into `output`.
    fn unxz(&mut self, input: &Path, output: &Path) -> Result<(), AssetsError>;
}

/// Debian's tools: `apt-cache`, `apt-get download`, `dpkg-deb -x`, `xz`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DebianTools;

pub(super) fn run_tool(
    command: &mut Command,
    fix: &str,
) -> Result<std::process::Output, AssetsError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let shown = std::iter::once(program.clone())
        .chain(command.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AssetsError::ToolMissing {
                tool: program.clone(),
            },
            _ => AssetsError::ToolFailed {
                command: shown.clone(),
                status: "could not start".into(),
                stderr: e.to_string(),
                fix: fix.to_owned(),
            },
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(AssetsError::ToolFailed {
            command: shown,
            status: output.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&output.stderr), 3),
            fix: fix.to_owned(),
        })
    }
}

/// The last `n` non-empty lines of `text`, joined with ` / `.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

impl PackageTools for DebianTools {
    fn kernel_package(&mut self, metapackage: &str) -> Result<String, AssetsError> {
        let not_found = |detail: String| AssetsError::NoKernelPackage {
            metapackage: metapackage.to_owned(),
            detail,
        };
        let output = match run_tool(
            Command::new("apt-cache").args(["depends", metapackage]),
            "run `sudo apt-get update` and try again",
        ) {
            Ok(output) => output,
            Err(AssetsError::ToolFailed { stderr, .. }) => return Err(not_found(stderr)),
            Err(other) => return Err(other),
        };
        parse_depends(&String::from_utf8_lossy(&output.stdout), metapackage).ok_or_else(|| {
            not_found(format!(
                "`apt-cache depends {metapackage}` names no linux-image package"
            ))
        })
    }

    fn download(&mut self, package: &str, dir: &Path) -> Result<PathBuf, AssetsError> {
        run_tool(
            Command::new("apt-get")
                .args(["download", "-q", package])
                .current_dir(dir),
            "check the network and the apt sources, then run `sudo apt-get update` and try again, or download the package yourself and run `bot-bottle prepare qemu --deb FILE`",
        )?;
        let debs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io("read", dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        match debs.as_slice() {
            [deb] => Ok(deb.clone()),
            _ => Err(AssetsError::BadPackage {
                package: dir.to_path_buf(),
                problem: format!(
                    "`apt-get download {package}` left {} .deb files here, expected one",
                    debs.len()
                ),
            }),
        }
    }

    fn package_name(&mut self, deb: &Path) -> Result<String, AssetsError> {
        let output = run_tool(
            Command::new("dpkg-deb")
                .arg("--field")
                .arg(deb)
                .arg("Package"),
            "check that the file is a Debian package (a linux-image .deb)",
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn extract(&mut self, deb: &Path, dir: &Path) -> Result<(), AssetsError> {
        run_tool(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir),
            "check that the file is a complete Debian package and that the cache's disk has room (about 500 MB)",
        )
        .map(drop)
    }

    fn unxz(&mut self, input: &Path, output: &Path) -> Result<(), AssetsError> {
        let out = std::fs::File::create(output).map_err(io("create", output))?;
        let mut command = Command::new("xz");
        command
            .args(["--decompress", "--stdout", "--single-stream"])
            .arg(input)
            .stdout(out);
        let status = command
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => AssetsError::ToolMissing { tool: "xz".into() },
                _ => io("run xz on", input)(e),
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(AssetsError::ToolFailed {
                command: format!("xz --decompress {}", input.display()),
                status: status.to_string(),
                stderr: String::new(),
                fix: "the kernel still boots from vmlinuz".into(),
            })
        }
    }
}

/// The versioned kernel package in `apt-cache depends <metapackage>`'s output.
pub fn parse_depends(output: &str, metapackage: &str) -> Option<String> {
    let suffix = metapackage.strip_prefix("linux-image")?; // "-amd64"
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|p| p.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|p| p.starts_with("linux-image-") && p.ends_with(suffix) && *p != metapackage)
        .map(str::to_owned)
}

/// The Debian kernel metapackage for this machine (`linux-image-amd64`).
pub(super) fn metapackage() -> Result<String, AssetsError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(format!("linux-image-{DEBIAN_ARCH}")),
        other => Err(AssetsError::UnsupportedArch(other.to_owned())),
    }
}
