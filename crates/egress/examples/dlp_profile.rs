//! A small driver of outbound DLP for profiling (`valgrind --tool=callgrind`) without the
//! proxy, TLS or sockets: the body the egress bench uploads (`egress_load --mode upload`)
//! goes through the streaming window in chunks, as a request body does.
//!
//! ```text
//! dlp_profile [MIB] [CHUNK_BYTES] [KIND]    defaults: 16 MiB in chunks of 16384, KIND source
//! ```
//!
//! KIND: `source` (the bench's upload, one line of code repeated), `json` (a model API
//! conversation: prose in JSON strings with escapes), `base64` (wrapped base64 of random
//! bytes, an uploaded file). Prints the bytes forwarded and the time (wall time; one run,
//! not a benchmark: `bench/egress/run` measures the proxy side by side without DLP).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

fn body(kind: &str, mb: usize) -> Vec<u8> {
    let n = mb << 20;
    let mut v = Vec::with_capacity(n + 4096);
    match kind {
        "source" => {
            let line = b"    let value = compute(input, &config).unwrap_or_default(); // step 42 of the pipeline\n";
            while v.len() < n {
                v.extend_from_slice(line);
            }
        }
        "json" => {
            let mut i = 0u64;
            v.extend_from_slice(b"{\"model\":\"m\",\"messages\":[");
            while v.len() < n {
                i += 1;
                v.extend_from_slice(
                    format!(
                        "{{\"role\":\"user\",\"content\":\"Step {i}: the function \\\"parse_config\\\" \
                         returns an error when the file is missing;\\nplease check src/config/mod.rs \
                         line {} and the test tests/config_{i}.rs.\\n\"}},",
                        i * 7
                    )
                    .as_bytes(),
                );
            }
            v.extend_from_slice(b"{}]}");
        }
        "base64" => {
            use std::io::Write;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            while v.len() < n {
                for _ in 0..76 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    v.push(alphabet[(x % 64) as usize]);
                }
                v.write_all(b"\n").unwrap();
            }
        }
        other => panic!("unknown kind {other} (source, json, base64)"),
    }
    v.truncate(n);
    v
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mb: usize = args.first().map_or(16, |a| a.parse().unwrap());
    let chunk: usize = args.get(1).map_or(16 * 1024, |a| a.parse().unwrap());
    let kind = args.get(2).map_or("source", String::as_str);
    let data = body(kind, mb);
    // the scanner's rules are compiled before the clock starts (once per process)
    egress::fuzzing::dlp_body([&b"warm up"[..]], policy::DlpMode::Block, &[]).unwrap();
    let start = Instant::now();
    let out = egress::fuzzing::dlp_body(
        data.chunks(chunk),
        policy::DlpMode::Block,
        &["bench-token-0123456789"],
    );
    let secs = start.elapsed().as_secs_f64();
    match out {
        Ok(out) => {
            assert_eq!(out.len(), data.len());
            eprintln!(
                "{kind}: {} MiB in chunks of {chunk}: forwarded in {secs:.3} s ({:.0} MB/s)",
                mb,
                data.len() as f64 / secs / 1e6
            );
        }
        Err(rule) => eprintln!("{kind}: stopped by {rule} after {secs:.3} s"),
    }
}
