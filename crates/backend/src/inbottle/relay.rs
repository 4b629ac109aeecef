//! The in-bottle half of a sidecar endpoint on backends whose sidecars are not on the
//! bottle's own loopback (docker: a sidecar container; qemu: the host beyond the guest's user
//! network): PID 1 listens on `127.0.0.1:<port>` (and `[::1]:<port>` where the bottle has IPv6)
//! and relays each connection to where the sidecar really is, so the agent's contract
//! (addresses, proxy variables) is the same on every backend.
//!
//! Where the sidecar can vanish without anyone refusing a connection on its behalf (docker:
//! once the sidecar container is gone, a connect to its address on the bridge waits for ARP to
//! give up, seconds), a [`SidecarWatch`] keeps the relay honest: it holds one idle connection
//! to the sidecar, and when that connection ends it checks at once whether the sidecar still
//! accepts connections. If not, the sidecar is *gone*: the loopback listeners are shut, so the
//! agent's next connection is refused by its own kernel at once, and connections already taken
//! are reset instead of waiting on a connect that cannot succeed. A sidecar that is gone never
//! comes back (its bottle is being stopped), so neither does the relay.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a relayed connection may wait for the sidecar to accept it.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// One connect attempt of a relayed connection; between attempts it looks whether the watch
/// has declared the sidecar gone.
const CONNECT_SLICE: Duration = Duration::from_millis(250);
/// One reachability probe of the watch. A live sidecar's kernel answers a SYN at once, however
/// busy the sidecar is; only a dropped SYN (retransmitted after 1 s) or a dead address waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes before the sidecar is declared gone (each refused or timed out).
const PROBES: usize = 2;

/// Whether a bottle's sidecar is still reachable, shared by all of its relays.
#[derive(Debug, Default)]
pub(crate) struct SidecarWatch {
    gone: AtomicBool,
    /// Clones of the loopback listeners, shut down when the sidecar is gone.
    listeners: Mutex<Vec<TcpListener>>,
    /// The watch's idle connection, shut down to make the watch probe again at once.
    watching: Mutex<Option<TcpStream>>,
}

impl SidecarWatch {
    pub(crate) fn new() -> Arc<SidecarWatch> {
        Arc::new(SidecarWatch::default())
    }

    /// Whether the sidecar was found gone (then it stays gone).
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Starts watching `target` (one of the sidecar's endpoints) on a thread of its own. Call
    /// it once the sidecar is known to accept connections: a sidecar that does not answer the
    /// first probe is gone at once.
    pub(crate) fn start(self: &Arc<SidecarWatch>, target: SocketAddr) {
        let watch = self.clone();
        std::thread::spawn(move || watch.run(target));
    }

    fn run(&self, target: SocketAddr) {
        loop {
            let Some(conn) = probe(target) else {
                self.declare_gone();
                return;
            };
            if let Ok(clone) = conn.try_clone() {
                *lock(&self.watching) = Some(clone);
            }
            // Idle until the sidecar closes it: it died, shut down, or dropped an idle client
            // (then the next probe simply connects again).
            let mut sink = std::io::sink();
            let _ = std::io::copy(&mut &conn, &mut sink);
            *lock(&self.watching) = None;
        }
    }

    /// A relayed connection could not reach the sidecar: the watch probes now rather than
    /// when its idle connection ends.
    fn recheck(&self) {
        if let Some(conn) = lock(&self.watching).as_ref() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    fn declare_gone(&self) {
        self.gone.store(true, Ordering::SeqCst);
        let listeners = std::mem::take(&mut *lock(&self.listeners));
        for listener in &listeners {
            // A listening socket shut down stops listening (new connections are refused) and
            // wakes its acceptor, which then drops it.
            let _ =
                nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        let _ = writeln_stderr(
            "the sidecar no longer answers; its endpoints inside the bottle are closed",
        );
    }
}

fn writeln_stderr(message: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "bot-bottle: {message}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection to `target`, or `None` when [`PROBES`] attempts were refused or timed out.
fn probe(target: SocketAddr) -> Option<TcpStream> {
    (0..PROBES).find_map(|attempt| {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        TcpStream::connect_timeout(&target, PROBE_TIMEOUT).ok()
    })
}

/// Listens on the loopback `port` and relays every connection to `target`, each on its own
/// thread, half-closes kept; with a `watch`, the listeners close once it finds the sidecar
/// gone. Fails only when the IPv4 loopback port cannot be bound.
pub(crate) fn listen_loopback(
    port: u16,
    target: SocketAddr,
    watch: Option<&Arc<SidecarWatch>>,
) -> Result<(), String> {
    let v4 = TcpListener::bind(("127.0.0.1", port))
        .map_err(|err| format!("cannot listen on 127.0.0.1:{port}: {err}"))?;
    serve(v4, target, watch.cloned());
    // IPv6 loopback only where the bottle has IPv6 at all.
    if let Ok(v6) = TcpListener::bind(("::1", port)) {
        serve(v6, target, watch.cloned());
    }
    Ok(())
}

/// Starts a thread, or says it could not: the relay runs in the bottle's PID 1, inside the
/// bottle's process limit, which the agent may have used up. `std::thread::spawn` would panic
/// there — taking an acceptor, and so the port, down for good.
type Spawn = fn(Box<dyn FnOnce() + Send>) -> std::io::Result<()>;

fn spawn_thread(f: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
    std::thread::Builder::new().spawn(f).map(drop)
}

/// Relays every connection `listener` takes to `target`, on a thread of its own.
pub(crate) fn serve(listener: TcpListener, target: SocketAddr, watch: Option<Arc<SidecarWatch>>) {
    serve_with(listener, target, watch, spawn_thread);
}

/// [`serve`] with the threads of each connection started by `spawn`; a connection whose
/// threads cannot start is reset (refused at once, never left waiting for an answer).
fn serve_with(
    listener: TcpListener,
    target: SocketAddr,
    watch: Option<Arc<SidecarWatch>>,
    spawn: Spawn,
) {
    if let Some(watch) = &watch
        && let Ok(clone) = listener.try_clone()
    {
        lock(&watch.listeners).push(clone);
    }
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let gone = watch.as_ref().is_some_and(|w| w.is_gone());
            match conn {
                Ok(inbound) if gone => reset(&inbound),
                Ok(inbound) => {
                    let watch = watch.clone();
                    let refuse = inbound.try_clone();
                    let started = spawn(Box::new(move || {
                        relay(inbound, target, watch.as_deref(), spawn);
                    }));
                    if started.is_err()
                        && let Ok(conn) = refuse
                    {
                        reset(&conn);
                    }
                }
                // Shut down by the watch: dropping the listener frees the port.
                Err(_) if gone => return,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
}

/// Closes `conn` with a reset, so the agent sees a refusal rather than an orderly end.
fn reset(conn: &TcpStream) {
    let _ = nix::sys::socket::setsockopt(
        conn,
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}

/// Connects to `target` in short attempts until it answers, [`CONNECT_LIMIT`] passes or the
/// watch finds the sidecar gone.
fn connect(target: SocketAddr, watch: Option<&SidecarWatch>) -> Option<TcpStream> {
    let Some(watch) = watch else {
        return TcpStream::connect_timeout(&target, CONNECT_LIMIT).ok();
    };
    let deadline = Instant::now() + CONNECT_LIMIT;
    let mut told = false;
    while !watch.is_gone() && Instant::now() < deadline {
        match TcpStream::connect_timeout(&target, CONNECT_SLICE) {
            Ok(conn) => return Some(conn),
            // Refused or unreachable: nothing to wait for (and the watch looks again).
            Err(err) if err.kind() != std::io::ErrorKind::TimedOut => {
                watch.recheck();
                return None;
            }
            Err(_) => {
                if !told {
                    watch.recheck();
                    told = true;
                }
            }
        }
    }
    None
}

fn relay(inbound: TcpStream, target: SocketAddr, watch: Option<&SidecarWatch>, spawn: Spawn) {
    let Some(outbound) = connect(target, watch) else {
        reset(&inbound);
        return;
    };
    copy_both_ways(inbound, outbound, spawn);
}

/// Copies `inbound` to `outbound` on a second thread and back on this one, each end of stream
/// passed on as a half-close; returns when both directions are done. When the second thread
/// cannot start, both connections are closed at once (`inbound` with a reset): one direction
/// alone would carry the request and never the answer.
fn copy_both_ways<S>(inbound: TcpStream, outbound: S, spawn: Spawn)
where
    S: std::io::Read + std::io::Write + Send + 'static + Shutdownable,
{
    let (Ok(mut in_read), Ok(mut out_read)) = (inbound.try_clone(), outbound.duplicate()) else {
        return;
    };
    let (mut in_write, mut out_write) = (inbound, outbound);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let started = spawn(Box::new(move || {
        let _ = std::io::copy(&mut in_read, &mut out_write);
        let _ = out_write.shutdown_write();
        let _ = done_tx.send(());
    }));
    if started.is_err() {
        reset(&in_write);
        let _ = out_read.shutdown_both();
        return;
    }
    let _ = std::io::copy(&mut out_read, &mut in_write);
    let _ = in_write.shutdown(Shutdown::Write);
    let _ = done_rx.recv();
}

/// The two kinds of sidecar connection the relay copies to.
trait Shutdownable: Sized {
    fn duplicate(&self) -> std::io::Result<Self>;
    fn shutdown_write(&self) -> std::io::Result<()>;
    fn shutdown_both(&self) -> std::io::Result<()>;
}

impl Shutdownable for TcpStream {
    fn duplicate(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn shutdown_both(&self) -> std::io::Result<()> {
        self.shutdown(Shutdown::Both)
    }
}

impl Shutdownable for UnixStream {
    fn duplicate(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn shutdown_both(&self) -> std::io::Result<()> {
        self.shutdown(Shutdown::Both)
    }
}

/// Listens on the loopback `port` and relays every connection to the Unix socket `target`
/// (smolmachines: the sidecar's host socket bridged into the guest).
pub(crate) fn listen_loopback_unix(port: u16, target: &Path) -> Result<(), String> {
    let v4 = TcpListener::bind(("127.0.0.1", port))
        .map_err(|err| format!("cannot listen on 127.0.0.1:{port}: {err}"))?;
    spawn_unix_acceptor(v4, target.to_path_buf());
    if let Ok(v6) = TcpListener::bind(("::1", port)) {
        spawn_unix_acceptor(v6, target.to_path_buf());
    }
    Ok(())
}

fn spawn_unix_acceptor(listener: TcpListener, target: PathBuf) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(inbound) = conn else { continue };
            let target = target.clone();
            let refuse = inbound.try_clone();
            let started = spawn_thread(Box::new(move || {
                let Ok(outbound) = UnixStream::connect(&target) else {
                    reset(&inbound);
                    return;
                };
                copy_both_ways(inbound, outbound, spawn_thread);
            }));
            if started.is_err()
                && let Ok(conn) = refuse
            {
                reset(&conn);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    /// An echo "sidecar" on loopback whose accepted connections the test can drop.
    struct Sidecar {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        conns: Arc<Mutex<Vec<TcpStream>>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Sidecar {
        fn start() -> Sidecar {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let conns = Arc::new(Mutex::new(Vec::new()));
            let (s, c) = (stop.clone(), conns.clone());
            let thread = std::thread::spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            conn.set_nonblocking(false).unwrap();
                            let mut echo = conn.try_clone().unwrap();
                            lock(&c).push(conn);
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 64];
                                while let Ok(n @ 1..) = echo.read(&mut buf) {
                                    let _ = echo.write_all(&buf[..n]);
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            Sidecar {
                addr,
                stop,
                conns,
                thread: Some(thread),
            }
        }

        /// The sidecar process dies: its listener and every connection close.
        fn die(mut self) {
            self.stop.store(true, Ordering::SeqCst);
            self.thread.take().unwrap().join().unwrap();
            for conn in lock(&self.conns).drain(..) {
                let _ = conn.shutdown(Shutdown::Both);
            }
        }
    }

    fn relayed(sidecar: &Sidecar, watch: Option<Arc<SidecarWatch>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        serve(listener, sidecar.addr, watch);
        addr
    }

    fn echo_once(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut conn = TcpStream::connect(addr)?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        conn.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn a_watched_relay_relays_and_closes_its_endpoint_once_the_sidecar_is_gone() {
        let sidecar = Sidecar::start();
        let watch = SidecarWatch::new();
        let addr = relayed(&sidecar, Some(watch.clone()));
        watch.start(sidecar.addr);
        assert_eq!(echo_once(addr).unwrap(), b"ping");
        assert!(!watch.is_gone());

        sidecar.die();
        // The watch's idle connection ends, its probe is refused twice: gone.
        for _ in 0..300 {
            if watch.is_gone() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(watch.is_gone(), "the watch never noticed the sidecar died");
        // The endpoint itself now refuses (the bottle's kernel answers, nothing waits).
        let mut refused = None;
        for _ in 0..300 {
            match TcpStream::connect(addr) {
                Err(err) => {
                    refused = Some(err.kind());
                    break;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));
    }

    #[test]
    fn a_watched_relay_survives_the_sidecar_dropping_its_idle_connection() {
        let sidecar = Sidecar::start();
        let watch = SidecarWatch::new();
        let addr = relayed(&sidecar, Some(watch.clone()));
        watch.start(sidecar.addr);
        // Wait for the watch's connection, then drop it as an idle timeout would.
        for _ in 0..300 {
            if !lock(&sidecar.conns).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for conn in lock(&sidecar.conns).drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
        // The watch probes again, finds the sidecar and keeps relaying.
        for _ in 0..300 {
            if !lock(&sidecar.conns).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!watch.is_gone());
        assert_eq!(echo_once(addr).unwrap(), b"ping");
        sidecar.die();
    }

    #[test]
    fn a_connection_taken_while_the_sidecar_is_unreachable_is_reset_not_left_idle() {
        // A sidecar address nothing listens on: every connect is refused.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dead: SocketAddr = ([127, 0, 0, 1], port).into();
        let watch = SidecarWatch::new();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        serve(listener, dead, Some(watch.clone()));
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 1];
        // A refused connect to the sidecar is passed on as a reset, never an orderly empty
        // reply or a wait.
        let got = conn.read(&mut buf);
        assert_eq!(
            got.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset)
        );
    }

    #[test]
    fn a_loopback_port_reaches_the_unix_socket_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("egress.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            conn.write_all(&[b"echo:".as_slice(), &got].concat())
                .unwrap();
        });
        // A free loopback port.
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        super::listen_loopback_unix(port, &socket).unwrap();
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.write_all(b"CONNECT api.example:443").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "echo:CONNECT api.example:443");
    }

    fn no_threads(_: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        Err(std::io::Error::other("the bottle is at its process limit"))
    }

    /// Starts the first thread of each pair (the connection's own), refuses the second (its
    /// upward copy).
    fn one_thread_only(f: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        if STARTED.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            std::thread::spawn(f);
            Ok(())
        } else {
            no_threads(f)
        }
    }

    /// What a client gets: the echo, or how the connection ended (never a read timeout).
    fn outcome(addr: SocketAddr) -> String {
        match echo_once(addr) {
            Ok(got) => String::from_utf8_lossy(&got).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => "closed".into(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                "closed".into()
            }
            Err(e) => format!("{:?}", e.kind()),
        }
    }

    #[test]
    fn at_the_process_limit_connections_are_refused_and_the_port_stays_open() {
        let sidecar = Sidecar::start();
        for spawn in [no_threads as Spawn, one_thread_only] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            serve_with(listener, sidecar.addr, None, spawn);
            // Refused at once, again and again: the acceptor survives every failed start.
            assert_eq!(
                (outcome(addr), outcome(addr), outcome(addr)),
                ("closed".into(), "closed".into(), "closed".into())
            );
        }
        // With threads to spare, the same relay answers.
        let addr = relayed(&sidecar, None);
        assert_eq!(outcome(addr), "ping");
        sidecar.die();
    }
}
