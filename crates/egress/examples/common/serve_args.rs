//! The flags of `bot-bottle egress serve`, read by the examples that run its library call
//! (`egress_serve`, `egress_heap`) so that `bench/egress` can start either in its place.

use std::path::PathBuf;

/// Reads `[egress serve] --routes FILE --listen ADDR --ca-dir DIR [--upstream-ca PEM]...
/// [--connect-to H:P:CH:CP]... [--log-file FILE] [--dangerously-skip-dlp]` from the command
/// line; an unknown flag or a missing value is an error naming it (`name` is the example's).
pub fn serve_options(name: &str) -> Result<egress::standalone::ServeOptions, String> {
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
            args.next()
                .ok_or_else(|| format!("{name}: {a} needs a value"))
        };
        match a.as_str() {
            "egress" | "serve" => {}
            "--routes" => opts.routes = value()?.into(),
            "--listen" => opts.listen = value()?,
            "--ca-dir" => opts.ca_dir = value()?.into(),
            "--upstream-ca" => opts.upstream_ca.push(value()?.into()),
            "--connect-to" => opts.connect_to.push(value()?),
            "--log-file" => opts.log_file = Some(value()?.into()),
            "--dangerously-skip-dlp" => opts.dangerously_skip_dlp = true,
            other => return Err(format!("{name}: unknown argument {other}")),
        }
    }
    Ok(opts)
}
