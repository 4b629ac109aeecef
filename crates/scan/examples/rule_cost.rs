//! What building the scanner costs at start-up, and which rules' regexes cost most to build
//! (run by `bench/scan/startup`; not a test, it measures):
//!
//! ```text
//! rule_cost [RULE_FILE...]
//! rule_cost --scan DIR [--rules FILE] [RULE_ID...]
//!     CPU time of scanning DIR with the built-in rules (or FILE's), and without each RULE_ID
//!     in turn (what each of those rules costs a scan), median of 5 runs each, side by side
//! rule_cost --once [--compile-all] [RULE_FILE]
//!     build the scanner once (--compile-all: with every regex compiled at load) and scan one
//!     line, for instruction counts under `valgrind --tool=callgrind`
//! ```
//!
//! For each rule file given (e.g. an earlier `builtin.toml`; a file's regexes are compiled at
//! load), the built-in rules with every regex compiled at load (as before issue 23's deferred
//! compilation) and the built-in rules as loaded now (each regex compiled on first use), side
//! by side in one run, the median of 9 runs of: reading and compiling the rule set; that plus
//! the keyword automaton (the scanner); and all that plus a scan of a one-line file (what
//! `bot-bottle scan` does before and around its first file). Then the built-in regexes that
//! take longest to build (median of 9 builds each, with the options the loader uses).

use std::path::PathBuf;
use std::time::{Duration, Instant};

const RUNS: usize = 9;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

/// Compiles every deferred regex of a rule set (the rules' and their allowlists'), as loading
/// did before regexes were compiled on first use.
fn compile_all(set: &scan::RuleSet) {
    for r in &set.rules {
        for p in r
            .regex
            .iter()
            .chain(r.allowlists.iter().flat_map(|a| &a.regexes))
        {
            std::hint::black_box(p.regex());
        }
    }
    for p in set.allowlists.iter().flat_map(|a| &a.regexes) {
        std::hint::black_box(p.regex());
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let line = b"let greeting = \"hello world\"; // a line with no secret\n";
    if args.first().is_some_and(|a| a == "--once") {
        let all = args.get(1).is_some_and(|a| a == "--compile-all");
        let set = match args.get(if all { 2 } else { 1 }) {
            Some(f) => scan::RuleSet::from_file(std::path::Path::new(f))?,
            None => scan::RuleSet::builtin()?,
        };
        if all {
            compile_all(&set);
        }
        let found = scan::Scanner::from_rules(set)
            .scan_bytes("one.rs", line)
            .len();
        println!("{found} findings");
        return Ok(());
    }
    if args.first().is_some_and(|a| a == "--scan") {
        return scan_costs(&args[1..]);
    }
    let files: Vec<PathBuf> = args.drain(..).map(PathBuf::from).collect();
    type Load = Box<dyn Fn() -> Result<scan::RuleSet, scan::ConfigError>>;
    let mut sets: Vec<(String, Load)> = Vec::new();
    for f in &files {
        let f2 = f.clone();
        sets.push((
            f.display().to_string(),
            Box::new(move || scan::RuleSet::from_file(&f2)),
        ));
    }
    // The built-in rules as before deferred compilation: every regex compiled at load.
    sets.push((
        "built-in, every regex compiled at load".into(),
        Box::new(|| scan::RuleSet::builtin().inspect(compile_all)),
    ));
    sets.push((
        "built-in (each regex compiled on first use)".into(),
        Box::new(scan::RuleSet::builtin),
    ));

    println!(
        "| rules | count | rule set ms | scanner ms | scanner + one-line scan ms | vs first |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut first: Option<Duration> = None;
    for (name, load) in &sets {
        let count = load()?.rules.len();
        let set_t = time(|| load().map(|s| s.rules.len()));
        let scanner_t = time(|| load().map(scan::Scanner::from_rules).map(|_| ()));
        let full_t = time(|| {
            load()
                .map(scan::Scanner::from_rules)
                .map(|s| s.scan_bytes("one.rs", line).len())
        });
        let base = *first.get_or_insert(full_t);
        println!(
            "| {name} | {count} | {} | {} | {} | {:.2}x |",
            ms(set_t),
            ms(scanner_t),
            ms(full_t),
            full_t.as_secs_f64() / base.as_secs_f64()
        );
    }

    let set = scan::RuleSet::builtin()?;
    let build = |pattern: &str| {
        time(|| {
            regex::bytes::RegexBuilder::new(pattern)
                .unicode(false)
                .size_limit(64 << 20)
                .dfa_size_limit(32 << 20)
                .build()
                .or_else(|_| regex::bytes::RegexBuilder::new(pattern).build())
                .map(|r| r.captures_len())
        })
    };
    // Per rule: its regex, and the regexes of its allowlists and path.
    let mut per_rule: Vec<(Duration, Duration, String)> = set
        .rules
        .iter()
        .map(|r| {
            let own = r
                .regex
                .as_ref()
                .map_or(Duration::ZERO, |re| build(re.as_str()));
            let others: Duration = r
                .allowlists
                .iter()
                .flat_map(|a| {
                    a.regexes
                        .iter()
                        .map(|p| p.as_str())
                        .chain(a.paths.iter().map(|p| p.as_str()))
                })
                .chain(r.path.iter().map(|p| p.as_str()))
                .map(build)
                .sum();
            (own, others, r.id.clone())
        })
        .collect();
    per_rule.sort_by_key(|r| std::cmp::Reverse(r.0 + r.1));
    let own: Duration = per_rule.iter().map(|r| r.0).sum();
    let others: Duration = per_rule.iter().map(|r| r.1).sum();
    let total = own + others;
    println!();
    println!(
        "built-in rules: {} ms to build their regexes, {} ms their allowlists' and paths' (sums of medians)",
        ms(own),
        ms(others)
    );
    println!();
    println!("| rule | regex ms | allowlists ms | share |");
    println!("|---|---:|---:|---:|");
    for (a, b, id) in per_rule.iter().take(12) {
        println!(
            "| {id} | {} | {} | {:.1}% |",
            ms(*a),
            ms(*b),
            (*a + *b).as_secs_f64() * 100.0 / total.as_secs_f64()
        );
    }
    Ok(())
}

/// User + system CPU time of this process so far (Linux: /proc/self/stat, in clock ticks of
/// 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) closed by ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn scan_costs(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (dir, mut ids) = args
        .split_first()
        .ok_or("--scan DIR [--rules FILE] [RULE_ID...]")?;
    let dir = PathBuf::from(dir);
    let mut file: Option<PathBuf> = None;
    if ids.first().is_some_and(|a| a == "--rules") {
        file = ids.get(1).map(PathBuf::from);
        ids = ids.get(2..).unwrap_or_default();
    }
    let load = || match &file {
        Some(f) => scan::RuleSet::from_file(f),
        None => scan::RuleSet::builtin(),
    };
    let run = |without: Option<&str>| -> Result<(Duration, usize), Box<dyn std::error::Error>> {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..5 {
            let mut set = load()?;
            set.rules.retain(|r| Some(r.id.as_str()) != without);
            let before = cpu_time();
            let scan = scan::Scanner::from_rules(set).scan_paths(std::slice::from_ref(&dir))?;
            times.push(cpu_time() - before);
            found = scan.findings.len();
        }
        Ok((median(times), found))
    };
    let (all, all_found) = run(None)?;
    println!("| rules | CPU s (median of 5) | vs all | findings |");
    println!("|---|---:|---:|---:|");
    println!(
        "| all built-in | {:.2} | 1.00x | {all_found} |",
        all.as_secs_f64()
    );
    for id in ids {
        let (t, found) = run(Some(id))?;
        println!(
            "| all but {id} | {:.2} | {:.2}x | {found} |",
            t.as_secs_f64(),
            t.as_secs_f64() / all.as_secs_f64()
        );
    }
    Ok(())
}
