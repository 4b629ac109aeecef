//! `egress_serve` with a counting allocator: the heap profile of the proxy for
//! `bench/egress/heap`. The proxy is the same library call (`egress::standalone::run`) with
//! the same flags; every allocation goes to the system allocator as in the shipped binary,
//! and the live allocations are counted by exact size.
//!
//! Each line read on stdin is a label: the proxy then prints `heap LABEL` to stderr,
//! followed by one `SIZE COUNT` line for every allocation size with live allocations, the
//! line `total BYTES COUNT` (live bytes and allocations) and `end`. `bench/egress/heap` takes
//! a dump idle and one with N open tunnels, and divides the difference by N.
//!
//! `EGRESS_HEAP_TRACE=SIZE,SIZE...`: after the first dump, the first allocation of each of
//! these sizes prints a backtrace to stderr (function names only in a release build), to
//! say what holds them.
//!
//! ```text
//! egress_heap [egress serve] --routes FILE --listen ADDR --ca-dir DIR [--upstream-ca PEM]...
//!             [--connect-to H:P:CH:CP]... [--dangerously-skip-dlp]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, Write};
use std::process::ExitCode;

#[path = "common/serve_args.rs"]
mod serve_args;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Sizes up to this are counted exactly; larger ones in the last slot.
const EXACT: usize = 1 << 17;

struct Counting;

static LIVE: [AtomicI64; EXACT + 1] = [const { AtomicI64::new(0) }; EXACT + 1];
static LARGE_BYTES: AtomicI64 = AtomicI64::new(0);

/// Set by the first dump: from then on, sizes in `EGRESS_HEAP_TRACE` are traced once.
static TRACING: AtomicBool = AtomicBool::new(false);
static TRACE_SIZES: OnceLock<Vec<(usize, AtomicBool)>> = OnceLock::new();

thread_local! {
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

fn trace(size: usize) {
    if !TRACING.load(Ordering::Relaxed) {
        return;
    }
    let Some(sizes) = TRACE_SIZES.get() else {
        return;
    };
    let Some((_, done)) = sizes.iter().find(|(s, _)| *s == size) else {
        return;
    };
    if IN_TRACE.with(|t| t.replace(true)) {
        return;
    }
    if !done.swap(true, Ordering::Relaxed) {
        let bt = std::backtrace::Backtrace::force_capture();
        eprintln!("trace {size}\n{bt}\nend trace");
    }
    IN_TRACE.with(|t| t.set(false));
}

fn slot(size: usize) -> usize {
    size.min(EXACT)
}

fn count(size: usize, sign: i64) {
    LIVE[slot(size)].fetch_add(sign, Ordering::Relaxed);
    if size >= EXACT {
        LARGE_BYTES.fetch_add(sign * size as i64, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed through to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size(), 1);
            trace(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `GlobalAlloc::realloc` requires.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(layout.size(), -1);
            count(new_size, 1);
            trace(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn dump(label: &str) {
    let mut out = String::new();
    let mut bytes = 0i64;
    let mut n = 0i64;
    for (size, c) in LIVE.iter().enumerate().take(EXACT) {
        let c = c.load(Ordering::Relaxed);
        if c != 0 {
            out.push_str(&format!("{size} {c}\n"));
            bytes += c * size as i64;
            n += c;
        }
    }
    let large = LIVE[EXACT].load(Ordering::Relaxed);
    let large_bytes = LARGE_BYTES.load(Ordering::Relaxed);
    if large != 0 {
        out.push_str(&format!("large {large} {large_bytes}\n"));
    }
    bytes += large_bytes;
    n += large;
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "heap {label}\n{out}total {bytes} {n}\nend\n");
    let _ = err.flush();
}

fn main() -> ExitCode {
    let opts = match serve_args::serve_options("egress_heap") {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let sizes = std::env::var("EGRESS_HEAP_TRACE").unwrap_or_default();
    let _ = TRACE_SIZES.set(
        sizes
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .map(|s| (s, AtomicBool::new(false)))
            .collect(),
    );
    std::thread::spawn(|| {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(label) => {
                    dump(label.trim());
                    TRACING.store(true, Ordering::Relaxed);
                }
                Err(_) => return,
            }
        }
    });
    match egress::standalone::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egress_heap: {e}");
            ExitCode::FAILURE
        }
    }
}
