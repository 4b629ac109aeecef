//! The gate's pre-receive hook as a small binary of its own, with the same command line as
//! `bot-bottle gate hook` and the same built-in scanner. This crate's integration tests
//! install it as the mirrors' hook; bot-bottle itself uses its own binary.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Accept `gate hook pre-receive …` as well as `pre-receive …`.
    let args: Vec<String> = match args.first().map(String::as_str) {
        Some("gate") => args.into_iter().skip(2).collect(),
        _ => args,
    };
    let scanner = gitgate::push_scanner();
    let code = gitgate::hook::run_cli(&args, scanner.as_ref());
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
