// scratch (not committed): recall / negatives on the Nosey Parker corpus
fn main() {
    let root = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("labels.json")).unwrap()).unwrap();
    let s = scan::Scanner::builtin().unwrap();
    let scan = s.scan_paths(&[root.clone()]).unwrap();
    let prefix = format!("{}/", root.display());
    let mut flagged = std::collections::BTreeMap::<String, Vec<String>>::new();
    for f in &scan.findings {
        let rel = f.file.strip_prefix(&prefix).unwrap_or(&f.file).to_string();
        flagged.entry(rel).or_default().push(format!("{}={}", f.rule_id, f.secret.expose()));
    }
    let (mut tp, mut pos, mut negf, mut negn) = (0, 0, 0, 0);
    let verbose = std::env::args().nth(2);
    for (k, v) in labels.as_object().unwrap() {
        let text = std::fs::read_to_string(root.join(k)).unwrap();
        if v.is_null() {
            if let Some(fs) = flagged.get(k) {
                negf += 1;
                negn += fs.len();
                if verbose.as_deref() == Some("neg") { println!("NEG {k} {} {fs:?}\n   {}", "", text.trim()); }
            }
        } else {
            pos += 1;
            if flagged.contains_key(k) { tp += 1; } else if verbose.as_deref() == Some("miss") {
                println!("MISS {k} {} | {}", v["rule"], text.trim().chars().take(300).collect::<String>());
            }
        }
    }
    println!("recall {tp}/{pos}, flagged negatives {negf}, findings on negatives {negn}");
}
