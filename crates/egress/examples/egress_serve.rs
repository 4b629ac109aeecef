//! `bot-bottle egress serve` without the rest of `bot-bottle`: the same library call
//! (`egress::standalone::run`) and flags, in a binary that links in minutes rather than the
//! whole CLI's release link. For `bench/egress/run` (`BENCH_BB=<this example>`, which it runs
//! as `BENCH_BB egress serve --routes ...`; the leading words are skipped).
//!
//! ```text
//! egress_serve [egress serve] --routes FILE --listen ADDR --ca-dir DIR [--upstream-ca PEM]...
//!              [--connect-to H:P:CH:CP]... [--log-file FILE] [--dangerously-skip-dlp]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut opts = egress::standalone::ServeOptions {
        routes: PathBuf::new(),
        listen: String::new(),
        ca_dir: PathBuf::new(),
        upstream_ca: Vec::new(),
        connect_to: Vec::new(),
        log_file: None,
        dangerously_skip_dlp: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("egress_serve: {a} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "egress" | "serve" => {}
            "--routes" => opts.routes = value().into(),
            "--listen" => opts.listen = value(),
            "--ca-dir" => opts.ca_dir = value().into(),
            "--upstream-ca" => opts.upstream_ca.push(value().into()),
            "--connect-to" => opts.connect_to.push(value()),
            "--log-file" => opts.log_file = Some(value().into()),
            "--dangerously-skip-dlp" => opts.dangerously_skip_dlp = true,
            other => {
                eprintln!("egress_serve: unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    match egress::standalone::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egress_serve: {e}");
            ExitCode::FAILURE
        }
    }
}
