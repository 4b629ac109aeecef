// scratch (not committed): findings per rule over a directory
fn main() {
    let root = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let s = scan::Scanner::builtin().unwrap().with_options(scan::ScanOptions { respect_gitignore: false, ..Default::default() });
    let scan = s.scan_paths(&[root]).unwrap();
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    for f in &scan.findings { *by.entry(f.rule_id.clone()).or_default() += 1; if std::env::args().nth(2).is_some() { println!("{} {}:{} {}", f.rule_id, f.file, f.line, f.secret.expose()); } }
    println!("{} findings {:?}", scan.findings.len(), by);
}
