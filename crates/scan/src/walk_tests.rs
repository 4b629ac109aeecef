//! Directory scans: the walk on the calling thread hands its batches to the pool, and what
//! comes back is put in the walk's order, whichever threads scanned it.

use pretty_assertions::assert_eq;

use crate::{PathScan, ScanOptions, Scanner, WALK_AHEAD, WALK_BATCH};

/// A token the built-in `github-pat` rule reports.
fn token() -> String {
    ["gh", "p_", "Zq8Lr2Xv5Nw1Tb7Kd4Hs9Mf3Pc6Gy0Ja2Ue5"].concat()
}

/// Findings as (file, line, rule), skipped files as (path, reason), files and bytes.
type Summary = (Vec<(String, u32, String)>, Vec<(String, String)>, u64, u64);

fn summary(scan: &PathScan) -> Summary {
    (
        scan.findings
            .iter()
            .map(|f| (f.file.clone(), f.line, f.rule_id.clone()))
            .collect(),
        scan.skipped
            .iter()
            .map(|s| (s.path.clone(), s.reason.clone()))
            .collect(),
        scan.files,
        scan.bytes,
    )
}

#[test]
fn a_walk_of_many_batches_comes_back_in_the_walks_order_on_any_pool() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let gh = token();
    // More batches than may wait at once, so that the walk pauses for the pool; directories
    // of one file and of many; every 9th file over the size limit (skipped and listed, in
    // the walk's order), every 13th holding a token.
    let files = WALK_BATCH * WALK_AHEAD * 2 + 7;
    for i in 0..files {
        let sub = root
            .join(format!("d{:03}", i % 97))
            .join(format!("e{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        let text = match (i % 9, i % 13) {
            (0, _) => "x".repeat(200),
            (_, 0) => format!("let t = \"{gh}\";\n"),
            _ => format!("file {i}\n"),
        };
        std::fs::write(sub.join(format!("f{i}.txt")), text).unwrap();
    }
    let scanner = Scanner::builtin().unwrap().with_options(ScanOptions {
        max_file_size: 100,
        ..ScanOptions::default()
    });
    let scan = |_: ()| summary(&scanner.scan_paths(&[root.to_path_buf()]).unwrap());
    let here = scan(());
    // The skipped files are the oversized ones, in the order the walk gives them.
    let walked_oversized: Vec<(String, String)> = scanner
        .walk(root)
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
        .filter(|e| e.metadata().unwrap().len() > 100)
        .map(|e| {
            (
                e.path().display().to_string(),
                "larger than 100 bytes".into(),
            )
        })
        .collect();
    assert_eq!(here.1, walked_oversized);
    assert_eq!(here.1.len(), files.div_ceil(9));
    assert_eq!(
        here.0.len(),
        (0..files).filter(|i| i % 13 == 0 && i % 9 != 0).count()
    );
    assert_eq!(here.2, (files - here.1.len()) as u64);
    // The same from a thread of a pool of one thread (which walks and, having no other
    // thread to wait for, scans what the pool has not) and of two.
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        assert_eq!(pool.install(|| scan(())), here, "{threads} threads");
    }
}
