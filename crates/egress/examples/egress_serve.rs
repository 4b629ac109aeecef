//! `bot-bottle egress serve` without the rest of `bot-bottle`: the same library call
//! (`egress::standalone::run`) and flags, in a binary that links in minutes rather than the
//! whole CLI's release link. For `bench/egress/run` (`BENCH_BB=<this example>`, which it runs
//! as `BENCH_BB egress serve --routes ...`; the leading words are skipped).
//!
//! ```text
//! egress_serve [egress serve] --routes FILE --listen ADDR --ca-dir DIR [--upstream-ca PEM]...
//!              [--connect-to H:P:CH:CP]... [--log-file FILE] [--dangerously-skip-dlp]
//! ```

use std::process::ExitCode;

#[path = "common/serve_args.rs"]
mod serve_args;

fn main() -> ExitCode {
    let opts = match serve_args::serve_options("egress_serve") {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match egress::standalone::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egress_serve: {e}");
            ExitCode::FAILURE
        }
    }
}
