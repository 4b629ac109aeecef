//! The gate's pre-receive hook as a small binary of its own, with the same command line as
//! `bot-bottle gate hook`. This crate's integration tests and benchmarks install it as the
//! mirrors' hook; bot-bottle itself uses its own binary.

mod fake_scanner;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Accept `gate hook pre-receive …` as well as `pre-receive …`.
    let args: Vec<String> = match args.first().map(String::as_str) {
        Some("gate") => args.into_iter().skip(2).collect(),
        _ => args,
    };
    let code = gitgate::hook::run_cli(&args, &fake_scanner::AwsKeyScanner);
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
