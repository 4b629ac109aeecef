//! Soak: many concurrent clones, fetches and pushes through the gate, side by side over two
//! paths — straight to the gate's TCP listener (the baseline) and to its Unix socket through
//! the native bottle's own forwarder (`backend::native::forward`, the way a native bottle
//! reaches the gate) — with the machine under CPU load. Every git run is bounded: one that
//! does not finish in time is a *hang* and is reported with its `GIT_TRACE_CURL` trace and
//! the gate's debug log, so a rare hang is caught with the evidence to explain it.
//!
//! The CI form is short (seconds). `bench/soak/run` runs the same harness longer through
//! the `SOAK_*` variables and prints its table.

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;

use super::support::*;

/// How big a soak is; the CI defaults, overridden by `SOAK_WORKERS` (per path),
/// `SOAK_ROUNDS` (clone + push + fetch each), `SOAK_OP_TIMEOUT_S` and `SOAK_LOAD` (busy
/// threads).
#[derive(Debug, Clone)]
struct SoakOptions {
    workers: usize,
    rounds: usize,
    op_timeout: Duration,
    load_threads: usize,
}

impl SoakOptions {
    fn from_env() -> SoakOptions {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        SoakOptions {
            workers: usize::try_from(var("SOAK_WORKERS", 2)).unwrap_or(2),
            rounds: usize::try_from(var("SOAK_ROUNDS", 2)).unwrap_or(2),
            op_timeout: Duration::from_secs(var("SOAK_OP_TIMEOUT_S", 120)),
            load_threads: usize::try_from(var("SOAK_LOAD", 2)).unwrap_or(2),
        }
    }
}

/// How a client reaches the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Straight to the gate's TCP listener.
    Direct,
    /// Loopback TCP → the native forwarder → the gate's Unix socket.
    Forwarded,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Forwarded => "forwarded",
        }
    }
}

/// One git run.
#[derive(Debug)]
struct Outcome {
    route: Route,
    op: &'static str,
    elapsed: Duration,
    result: Result<(), Problem>,
}

/// A git run that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    Failed(String),
    Hung(String),
}

/// The gate's log for this test binary (debug level), if this test could install it.
static GATE_LOG: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

fn gate_log(dir: &Path) -> Option<PathBuf> {
    GATE_LOG
        .get_or_init(|| {
            let path = dir.join("gate-debug.log");
            let file = std::fs::File::create(&path).ok()?;
            tracing_subscriber::fmt()
                .with_env_filter("gitgate=debug")
                .with_ansi(false)
                .with_thread_ids(true)
                .with_writer(std::sync::Mutex::new(file))
                .try_init()
                .ok()?;
            Some(path)
        })
        .clone()
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(f) = std::fs::File::open(path) else {
        return format!("({} unreadable)", path.display());
    };
    let all: Vec<String> = std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs git with a deadline, tracing its HTTP traffic to `<dir>/<tag>.curl`; past the
/// deadline its whole process group is killed and the run is a hang.
fn git_bounded(cwd: &Path, args: &[&str], tag: &str, timeout: Duration) -> Result<(), Problem> {
    let trace = cwd.join(format!("{tag}.curl"));
    let err_path = cwd.join(format!("{tag}.stderr"));
    let err = std::fs::File::create(&err_path).unwrap();
    let mut child = Command::new("git")
        .arg("-C")
        .arg(cwd)
        .args(args)
        .envs(git_env())
        .env("GIT_TRACE_CURL", &trace)
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            if status.success() {
                let _ = std::fs::remove_file(&trace);
                let _ = std::fs::remove_file(&err_path);
                return Ok(());
            }
            return Err(Problem::Failed(format!(
                "git {args:?}: {status}: {}",
                std::fs::read_to_string(&err_path)
                    .unwrap_or_default()
                    .trim()
            )));
        }
        if Instant::now() >= deadline {
            let pgid = i32::try_from(child.id()).unwrap();
            // SAFETY: signals the process group of the git client this function spawned.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
            let _ = child.wait();
            return Err(Problem::Hung(format!(
                "git {args:?} did not finish within {timeout:?}\n--- its curl trace:\n{}",
                tail(&trace, 60)
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One client's loop: each round clones afresh, pushes a new commit to a branch of its own
/// and fetches.
fn worker(root: &Path, url: &str, route: Route, id: usize, opts: &SoakOptions) -> Vec<Outcome> {
    let me = root.join(format!("{}-{id}", route.name()));
    std::fs::create_dir_all(&me).unwrap();
    let mut out = Vec::new();
    let mut record = |op: &'static str, start: Instant, result: Result<(), Problem>| {
        let stop = result.is_err();
        out.push(Outcome {
            route,
            op,
            elapsed: start.elapsed(),
            result,
        });
        stop
    };
    for round in 0..opts.rounds {
        let dir = format!("r{round}");
        let start = Instant::now();
        let r = git_bounded(
            &me,
            &["clone", "-q", url, &dir],
            &format!("clone{round}"),
            opts.op_timeout,
        );
        if record("clone", start, r) {
            continue;
        }
        let work = me.join(&dir);
        // Big enough that the push's body reaches the gate in many reads, while git
        // http-backend is already running.
        commit_file(
            &work,
            &format!("w{id}-{round}.txt"),
            &noise(id * 1000 + round),
            "soak",
        );
        let branch = format!("HEAD:refs/heads/soak/{}-{id}-{round}", route.name());
        let start = Instant::now();
        let r = git_bounded(
            &work,
            &["push", "-q", "origin", &branch],
            "push",
            opts.op_timeout,
        );
        if record("push", start, r) {
            continue;
        }
        let start = Instant::now();
        let r = git_bounded(&work, &["fetch", "-q", "origin"], "fetch", opts.op_timeout);
        record("fetch", start, r);
        let _ = std::fs::remove_dir_all(&work);
    }
    out
}

/// About 200 KB of text that does not compress well.
fn noise(seed: usize) -> String {
    let mut x = seed as u64 + 1;
    (0..5000)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            format!("{:016x}{:016x}{:08x}\n", x, x.rotate_left(17), x >> 40)
        })
        .collect()
}

/// Busy threads, so the gate, the forwarder and git compete for the CPU; they stop when the
/// returned flag is set.
fn cpu_load(threads: usize) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = (0..threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x: u64 = 1;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..10_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    (stop, handles)
}

/// Per route and operation: count, failures, hangs, p50, p99.
#[derive(Debug, Default, Clone)]
struct Stats {
    ops: usize,
    failed: usize,
    hung: usize,
    times: Vec<Duration>,
}

impl Stats {
    fn quantile(&self, q: f64) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        if t.is_empty() {
            return Duration::ZERO;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((t.len() - 1) as f64 * q).round() as usize;
        t[i]
    }
}

fn stats(outcomes: &[Outcome], route: Route, op: &str) -> Stats {
    let mut s = Stats::default();
    for o in outcomes.iter().filter(|o| o.route == route && o.op == op) {
        s.ops += 1;
        match &o.result {
            Ok(()) => s.times.push(o.elapsed),
            Err(Problem::Failed(_)) => s.failed += 1,
            Err(Problem::Hung(_)) => s.hung += 1,
        }
    }
    s
}

/// The table `bench/soak/run` prints: both routes side by side, the forwarded one's
/// quantiles as ratios against the direct one's.
fn table(outcomes: &[Outcome], opts: &SoakOptions, wall: Duration) -> String {
    let mut t = format!(
        "soak: {} workers per route x {} rounds, {} busy threads, {:.1} s wall\n\n\
         | op | route | ops | failed | hung | p50 (ms) | p99 (ms) | p50 ratio | p99 ratio |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        opts.workers,
        opts.rounds,
        opts.load_threads,
        wall.as_secs_f64()
    );
    for op in ["clone", "push", "fetch"] {
        let base = stats(outcomes, Route::Direct, op);
        for route in [Route::Direct, Route::Forwarded] {
            let s = stats(outcomes, route, op);
            let ratio = |q| {
                let b = base.quantile(q).as_secs_f64();
                if b > 0.0 {
                    format!("{:.2}x", s.quantile(q).as_secs_f64() / b)
                } else {
                    "-".to_string()
                }
            };
            t.push_str(&format!(
                "| {op} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {} |\n",
                route.name(),
                s.ops,
                s.failed,
                s.hung,
                s.quantile(0.5).as_secs_f64() * 1000.0,
                s.quantile(0.99).as_secs_f64() * 1000.0,
                ratio(0.5),
                ratio(0.99)
            ));
        }
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_clones_pushes_and_fetches_through_the_forwarder_never_hang() {
    let opts = SoakOptions::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let log = gate_log(&root);
    let up = upstream(&root, "app");
    let yaml = format!("repos:\n  app:\n    url: {}\n", up.display());
    let gate = start_gate(&root, &yaml, options()).await;

    // The gate's Unix socket, and the native bottle's forwarder in front of it.
    let sock = root.join("gate.sock");
    let unix = tokio::net::UnixListener::bind(&sock).unwrap();
    let (_stop_unix, stopped) = tokio::sync::oneshot::channel::<()>();
    let g = gate.gate.clone();
    tokio::spawn(async move {
        g.serve_unix(unix, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let fwd = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fwd_url = format!("http://{}/app.git", fwd.local_addr().unwrap());
    backend::native::forward::serve(vec![(
        fwd,
        backend::native::forward::open_socket(&sock).unwrap(),
    )])
    .unwrap();

    let (stop_load, load) = cpu_load(opts.load_threads);
    let started = Instant::now();
    let direct_url = gate.url("app");
    let (o, r) = (opts.clone(), root.clone());
    let outcomes: Vec<Outcome> = blocking(move || {
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for id in 0..o.workers {
                for (route, url) in [(Route::Direct, &direct_url), (Route::Forwarded, &fwd_url)] {
                    let (o, r) = (&o, &r);
                    handles.push(s.spawn(move || worker(r, url, route, id, o)));
                }
            }
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
    })
    .await;
    let wall = started.elapsed();
    stop_load.store(true, Ordering::Relaxed);
    for h in load {
        h.join().unwrap();
    }

    let report = table(&outcomes, &opts, wall);
    println!("{report}");
    if let Ok(path) = std::env::var("SOAK_TABLE") {
        std::fs::File::create(path)
            .and_then(|mut f| f.write_all(report.as_bytes()))
            .unwrap();
    }
    let problems: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.result
                .as_ref()
                .err()
                .map(|p| format!("{} {}: {p:?}", o.route.name(), o.op))
        })
        .collect();
    if !problems.is_empty()
        && let Some(log) = &log
    {
        eprintln!("--- the gate's debug log (tail):\n{}", tail(log, 200));
    }
    assert_eq!(problems, Vec::<String>::new(), "{report}");
    let expected = opts.workers * 2 * opts.rounds * 3;
    assert_eq!(outcomes.len(), expected, "every operation ran");
}
