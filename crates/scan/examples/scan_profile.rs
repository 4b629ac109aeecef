//! A small driver of the scanner for profiling (`valgrind --tool=callgrind`) and quick
//! timings of one part at a time, without building the whole `bot-bottle` binary:
//!
//! ```text
//! scan_profile git <repo> <rev>...    the history scan (Scanner::scan_git), with its counts
//! scan_profile split <repo> <rev>...  the same range from one `git log -p` (the reference)
//! scan_profile push <repo> <rev>...   what the gate runs on a push (Scanner::scan_push)
//! scan_profile push-one-by-one <repo> <rev>...
//!                                     the same with every object read one by one (the reader
//!                                     before received packs were walked in delta-tree order)
//! scan_profile push-whole <repo> <rev>...
//!                                     the same with every new blob judged whole (the judge
//!                                     before blobs were judged by what changed from the
//!                                     parent's blob)
//! scan_profile files <path>...        files and directories (Scanner::scan_paths); with
//!                                     SCAN_PROFILE_SKIPPED=FILE, the skipped files, one
//!                                     `path<TAB>reason` line each, in the scan's order
//! scan_profile bytes <file>           one file's bytes as one fragment (Scanner::scan_bytes)
//! ```
//!
//! Prints what was found and how long it took (wall time; one run, not a benchmark). With
//! SCAN_PROFILE_JSON=FILE set, the findings of `git`, `push*` and `files` (secrets unredacted)
//! are written there as the JSON report.

use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, rest) = args
        .split_first()
        .ok_or("usage: scan_profile MODE ARGS...")?;
    let scanner = scan::Scanner::builtin()?;
    let start = Instant::now();
    let req = |rest: &[String]| -> Result<scan::GitScanRequest, Box<dyn std::error::Error>> {
        let (repo, revs) = rest.split_first().ok_or("a repository and revisions")?;
        Ok(scan::GitScanRequest {
            repo: repo.into(),
            rev_args: revs.to_vec(),
            env: Vec::new(),
        })
    };
    let (found, what) = match mode.as_str() {
        "git" => {
            let (f, counts) = scanner.scan_git_counted(&req(rest)?)?;
            write_json(&f)?;
            (f.len(), format!("{counts:?}"))
        }
        "split" => (
            scanner.scan_git_split(&req(rest)?, usize::MAX)?.len(),
            String::new(),
        ),
        "push" | "push-one-by-one" | "push-whole" => {
            let options = scan::ObjectScanOptions::default();
            let scan = match mode.as_str() {
                "push" => scanner.scan_push(&req(rest)?, &options)?,
                "push-whole" => scanner.scan_push_judging_whole(&req(rest)?, &options)?,
                _ => scanner.scan_push_one_by_one(&req(rest)?, &options)?,
            };
            write_json(&scan.findings)?;
            (
                scan.findings.len(),
                format!(
                    "{} objects, {} read by walking packs, {} unreadable",
                    scan.objects,
                    scan.walked,
                    scan.unreadable.len()
                ),
            )
        }
        "files" => {
            let paths: Vec<PathBuf> = rest.iter().map(PathBuf::from).collect();
            let scan = scanner.scan_paths(&paths)?;
            write_json(&scan.findings)?;
            if let Some(out) = std::env::var_os("SCAN_PROFILE_SKIPPED") {
                let lines: String = scan
                    .skipped
                    .iter()
                    .map(|s| format!("{}\t{}\n", s.path, s.reason))
                    .collect();
                std::fs::write(out, lines)?;
            }
            (
                scan.findings.len(),
                format!("{} files, {} bytes", scan.files, scan.bytes),
            )
        }
        "bytes" => {
            let path = rest.first().ok_or("a file")?;
            let data = std::fs::read(path)?;
            (
                scanner.scan_bytes(path, &data).len(),
                format!("{} bytes", data.len()),
            )
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    eprintln!(
        "{mode}: {found} findings ({what}) in {:.3} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// With `SCAN_PROFILE_JSON=FILE` set, writes the findings (secrets unredacted) there as the
/// JSON report.
fn write_json(findings: &[scan::Finding]) -> std::io::Result<()> {
    match std::env::var_os("SCAN_PROFILE_JSON") {
        Some(out) => std::fs::write(out, scan::render_json(findings, false)),
        None => Ok(()),
    }
}
