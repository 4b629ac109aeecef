//! The in-bottle half of a sidecar endpoint on backends whose sidecars are not on the
//! bottle's own loopback (docker and apple: a sidecar container; qemu: the host beyond the
//! guest's user network; smolmachines: a host socket bridged into the machine): PID 1 listens
//! on `127.0.0.1:<port>` (and `[::1]:<port>` where the bottle has IPv6) and relays each
//! connection to where the sidecar really is, so the agent's contract (addresses, proxy
//! variables) is the same on every backend.
//!
//! Thread-free, like the native forwarder (`crate::native::forward`): every listener, every
//! connection (both directions) and the sidecar watch are tasks of one event loop (a
//! single-threaded tokio runtime, which starts no thread of its own for sockets and timers).
//! A relay never needs a new thread, so an agent that has used up the bottle's `pids` limit
//! (PID 1 is inside it on docker) still has every connection answered. The docker init runs
//! the loop on its own thread ([`Relays::run_until`], its supervision a task of the same
//! loop); the VM guests, whose init blocks elsewhere, on one thread started before the agent
//! runs ([`Relays::run_on_thread`]). Each connection is read until the kernel says it would
//! block before the loop waits on it (`crate::socket_copy`, shared with the native
//! forwarder): under gVisor, whose network stack reports no `EPOLLRDHUP`, an end of stream
//! that came with the last data is otherwise never seen.
//!
//! Where the sidecar can vanish without anyone refusing a connection on its behalf (docker:
//! once the sidecar container is gone, a connect to its address on the bridge waits for ARP to
//! give up, seconds), a [`SidecarWatch`] keeps the relay honest: it holds one idle connection
//! to the sidecar, and when that connection ends it checks at once whether the sidecar still
//! accepts connections. If not, the sidecar is *gone*: the loopback listeners are closed, so
//! the agent's next connection is refused by its own kernel at once, and connections already
//! taken are reset instead of waiting on a connect that cannot succeed. A sidecar that is gone
//! never comes back (its bottle is being stopped), so neither does the relay.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep, timeout};

use crate::socket_copy::{copy_both_ways, read_some};

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

/// Where a loopback port's connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A sidecar's TCP endpoint (docker, apple, qemu).
    Tcp(SocketAddr),
    /// A Unix socket (smolmachines: the sidecar's host socket bridged into the guest).
    Unix(PathBuf),
}

/// Whether a bottle's sidecar is still reachable, shared by all of its relays.
#[derive(Debug)]
pub(crate) struct SidecarWatch {
    gone: AtomicBool,
    /// Turns `true` once the sidecar is gone: the acceptors then drop their listeners.
    closed: watch::Sender<bool>,
    /// Makes the watch probe again at once instead of when its idle connection ends.
    recheck: Notify,
}

impl SidecarWatch {
    fn new() -> Arc<SidecarWatch> {
        Arc::new(SidecarWatch {
            gone: AtomicBool::new(false),
            closed: watch::Sender::new(false),
            recheck: Notify::new(),
        })
    }

    /// Whether the sidecar was found gone (then it stays gone).
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Holds an idle connection to `target` (one of the sidecar's endpoints) and probes again
    /// whenever it ends or a relay could not connect; declares the sidecar gone when a probe
    /// fails. Started once the sidecar is known to accept connections: a sidecar that does not
    /// answer the first probe is gone at once.
    async fn run(self: Arc<SidecarWatch>, target: SocketAddr) {
        loop {
            let Some(conn) = probe(target).await else {
                self.declare_gone();
                return;
            };
            // Idle until the sidecar closes it (it died, shut down, or dropped an idle client:
            // then the next probe simply connects again) or a relay asks for a look.
            let mut sink = [0u8; 256];
            loop {
                tokio::select! {
                    read = read_some(&conn, &mut sink) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                    () = self.recheck.notified() => break,
                }
            }
        }
    }

    fn declare_gone(&self) {
        self.gone.store(true, Ordering::SeqCst);
        self.closed.send_replace(true);
        let _ = writeln_stderr(
            "the sidecar no longer answers; its endpoints inside the bottle are closed",
        );
    }
}

fn writeln_stderr(message: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "bot-bottle: {message}")
}

/// A connection to `target`, or `None` when [`PROBES`] attempts were refused or timed out.
async fn probe(target: SocketAddr) -> Option<TcpStream> {
    for attempt in 0..PROBES {
        if attempt > 0 {
            sleep(Duration::from_millis(50)).await;
        }
        if let Ok(Ok(conn)) = timeout(PROBE_TIMEOUT, TcpStream::connect(target)).await {
            return Some(conn);
        }
    }
    None
}

/// The loopback endpoints of a bottle and, optionally, the sidecar endpoint its watch holds;
/// nothing is served until [`Relays::run_until`] or [`Relays::run_on_thread`].
#[derive(Debug, Default)]
pub(crate) struct Relays {
    endpoints: Vec<(TcpListener, Target)>,
    watched: Option<SocketAddr>,
}

impl Relays {
    pub(crate) fn new() -> Relays {
        Relays::default()
    }

    /// Listens on the loopback `port` (its connections wait in the accept queue until the
    /// relays run). Fails only when the IPv4 loopback port cannot be bound.
    pub(crate) fn listen_loopback(&mut self, port: u16, target: Target) -> Result<(), String> {
        let v4 = TcpListener::bind(("127.0.0.1", port))
            .map_err(|err| format!("cannot listen on 127.0.0.1:{port}: {err}"))?;
        self.endpoints.push((v4, target.clone()));
        // IPv6 loopback only where the bottle has IPv6 at all.
        if let Ok(v6) = TcpListener::bind(("::1", port)) {
            self.endpoints.push((v6, target));
        }
        Ok(())
    }

    /// Adds an endpoint already bound (tests: port 0).
    #[cfg(test)]
    fn serve(&mut self, listener: TcpListener, target: Target) {
        self.endpoints.push((listener, target));
    }

    /// Watches the sidecar through `target` once the relays run (see [`SidecarWatch`]).
    pub(crate) fn watch(&mut self, target: SocketAddr) {
        self.watched = Some(target);
    }

    /// Serves every endpoint on the calling thread alone until `until` completes; what it
    /// returned. `Err` only when the event loop cannot be set up: the listeners are closed by
    /// then, so clients are refused instead of waiting in the accept queue.
    pub(crate) fn run_until<T>(self, until: impl Future<Output = T>) -> std::io::Result<T> {
        self.run_with(|_| (), until)
    }

    /// [`Relays::run_until`], handing the watch (when there is one) to `seen` first.
    fn run_with<T>(
        self,
        seen: impl FnOnce(Option<Arc<SidecarWatch>>),
        until: impl Future<Output = T>,
    ) -> std::io::Result<T> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let watch = self.watched.map(|target| (SidecarWatch::new(), target));
        seen(watch.as_ref().map(|(w, _)| w.clone()));
        runtime.block_on(async move {
            for (listener, target) in self.endpoints {
                listener.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let watch = watch.as_ref().map(|(w, _)| w.clone());
                tokio::spawn(accept_loop(listener, target, watch));
            }
            if let Some((watch, target)) = watch {
                tokio::spawn(watch.run(target));
            }
            Ok(until.await)
        })
    }

    /// Serves every endpoint, for good, on one thread started now: for an init that blocks
    /// elsewhere (the VM guests). Call it before the agent runs; no thread is started after.
    pub(crate) fn run_on_thread(self) -> Result<(), String> {
        std::thread::Builder::new()
            .name("relays".into())
            .spawn(move || {
                let _ = self.run_until(std::future::pending::<()>());
            })
            .map(drop)
            .map_err(|err| format!("cannot start the sidecar relays: {err}"))
    }
}

/// Takes `listener`'s connections and relays each as a task of its own, until the watch finds
/// the sidecar gone: then the listener is dropped (the port closes, new connections are
/// refused by the kernel, queued ones reset).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    target: Target,
    watch: Option<Arc<SidecarWatch>>,
) {
    let mut closed = watch.as_ref().map(|w| w.closed.subscribe());
    loop {
        let accepted = match &mut closed {
            Some(closed) => tokio::select! {
                biased;
                _ = closed.wait_for(|gone| *gone) => return,
                accepted = listener.accept() => accepted,
            },
            None => listener.accept().await,
        };
        match accepted {
            Ok((inbound, _)) => {
                tokio::spawn(relay(inbound, target.clone(), watch.clone()));
            }
            // Out of descriptors or memory: the connection stays queued; try again shortly
            // rather than spinning on a listener that stays readable.
            Err(_) => sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Closes `conn` with a reset once dropped, so the agent sees a refusal rather than an
/// orderly end.
fn reset(conn: &impl AsFd) {
    let _ = nix::sys::socket::setsockopt(
        conn,
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}

/// Connects to the sidecar and copies both ways until both directions have ended, each end of
/// stream passed on as a half-close; a connection that cannot reach the sidecar, or whose
/// copy fails, is reset.
async fn relay(inbound: TcpStream, target: Target, watch: Option<Arc<SidecarWatch>>) {
    if watch.as_ref().is_some_and(|w| w.is_gone()) {
        reset(&inbound);
        return;
    }
    let copied = match target {
        Target::Tcp(addr) => match connect_tcp(addr, watch.as_deref()).await {
            Some(outbound) => copy_both_ways(&inbound, &outbound).await,
            None => Err(std::io::ErrorKind::NotConnected.into()),
        },
        Target::Unix(path) => match connect_unix(&path).await {
            Some(outbound) => copy_both_ways(&inbound, &outbound).await,
            None => Err(std::io::ErrorKind::NotConnected.into()),
        },
    };
    if copied.is_err() {
        reset(&inbound);
    }
}

/// Connects to `target` in short attempts until it answers, [`CONNECT_LIMIT`] passes or the
/// watch finds the sidecar gone.
async fn connect_tcp(target: SocketAddr, watch: Option<&SidecarWatch>) -> Option<TcpStream> {
    let Some(watch) = watch else {
        return timeout(CONNECT_LIMIT, TcpStream::connect(target))
            .await
            .ok()?
            .ok();
    };
    let deadline = Instant::now() + CONNECT_LIMIT;
    let mut told = false;
    while !watch.is_gone() && Instant::now() < deadline {
        match timeout(CONNECT_SLICE, TcpStream::connect(target)).await {
            Ok(Ok(conn)) => return Some(conn),
            // Refused or unreachable: nothing to wait for (and the watch looks again).
            Ok(Err(_)) => {
                watch.recheck.notify_one();
                return None;
            }
            Err(_) => {
                if !told {
                    watch.recheck.notify_one();
                    told = true;
                }
            }
        }
    }
    None
}

/// A non-blocking connect answers `EAGAIN` while the socket's accept queue is full; retried
/// for [`CONNECT_LIMIT`] so a burst does not turn into refused connections.
async fn connect_unix(target: &std::path::Path) -> Option<UnixStream> {
    let give_up = Instant::now() + CONNECT_LIMIT;
    loop {
        match UnixStream::connect(target).await {
            Ok(conn) => return Some(conn),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < give_up => {
                sleep(Duration::from_millis(20)).await;
            }
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::os::unix::net::UnixListener;
    use std::sync::Mutex;

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

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

    /// Relays from a fresh loopback port to `target` on a thread of their own (as in a VM
    /// guest's init), watching `watched` if given; the port and the watch.
    fn relayed_to(
        target: Target,
        watched: Option<SocketAddr>,
    ) -> (SocketAddr, Option<Arc<SidecarWatch>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut relays = Relays::new();
        relays.serve(listener, target);
        if let Some(w) = watched {
            relays.watch(w);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = relays.run_with(
                move |watch| tx.send(watch).unwrap(),
                std::future::pending::<()>(),
            );
        });
        (addr, rx.recv().unwrap())
    }

    fn relayed(sidecar: &Sidecar, watch: bool) -> (SocketAddr, Option<Arc<SidecarWatch>>) {
        relayed_to(Target::Tcp(sidecar.addr), watch.then_some(sidecar.addr))
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
        let (addr, watch) = relayed(&sidecar, true);
        let watch = watch.unwrap();
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
        let (addr, watch) = relayed(&sidecar, true);
        let watch = watch.unwrap();
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
        let (addr, _) = relayed_to(Target::Tcp(dead), None);
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

    /// The sidecar answers and closes at once (an error answer, `Connection: close`): the agent
    /// reads the answer and then the end, never waits.
    #[test]
    fn the_sidecars_close_reaches_the_agent_after_its_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sidecar = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut buf = [0u8; 64];
                let _ = conn.read(&mut buf);
                conn.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                    .unwrap();
            }
        });
        let (addr, _) = relayed_to(Target::Tcp(sidecar), None);
        for _ in 0..50 {
            let mut conn = TcpStream::connect(addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            conn.write_all(b"GET / HTTP/1.1\n\n").unwrap();
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer).unwrap();
            assert_eq!(
                answer,
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"
            );
        }
    }

    /// A connection whose data never pauses (the sidecar writes without end, the agent reads
    /// as fast) does not keep the one event loop to itself: another port's connection is
    /// still answered while it streams.
    #[test]
    fn a_connection_that_never_pauses_does_not_hold_up_the_others() {
        let streaming = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream_target = streaming.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let (mut conn, _) = streaming.accept().unwrap();
            let chunk = [b'x'; 64 * 1024];
            while !s.load(Ordering::SeqCst) && conn.write_all(&chunk).is_ok() {}
        });
        let echo = Sidecar::start();
        let (first, second) = (
            TcpListener::bind("127.0.0.1:0").unwrap(),
            TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        let (first_addr, second_addr) = (first.local_addr().unwrap(), second.local_addr().unwrap());
        let mut relays = Relays::new();
        relays.serve(first, Target::Tcp(stream_target));
        relays.serve(second, Target::Tcp(echo.addr));
        std::thread::spawn(move || relays.run_until(std::future::pending::<()>()));
        // The agent reads the stream as fast as it can, on a thread of its own.
        let reading = Arc::new(AtomicBool::new(false));
        let r = reading.clone();
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut conn = TcpStream::connect(first_addr).unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            while !s.load(Ordering::SeqCst) {
                match conn.read(&mut buf) {
                    Ok(1..) => r.store(true, Ordering::SeqCst),
                    _ => break,
                }
            }
        });
        for _ in 0..6000 {
            if reading.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            reading.load(Ordering::SeqCst),
            "the stream never reached the agent"
        );
        let answer = echo_once(second_addr).map_err(|e| e.kind());
        stop.store(true, Ordering::SeqCst);
        assert_eq!(answer, Ok(b"ping".to_vec()));
        echo.die();
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
        let mut relays = Relays::new();
        relays
            .listen_loopback(port, Target::Unix(socket.clone()))
            .unwrap();
        relays.run_on_thread().unwrap();
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.write_all(b"CONNECT api.example:443").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "echo:CONNECT api.example:443");
    }

    /// Every connection is a task of the one event loop on the calling thread: 64 held open at
    /// once (none answered before all are taken) are all relayed, and `run_until` returns
    /// what its future returned. (That no thread is needed at a real `pids` limit is shown
    /// end to end by the docker backend's limits test.)
    #[test]
    fn many_connections_at_once_are_all_relayed_by_the_calling_thread() {
        let sidecar = Sidecar::start();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut relays = Relays::new();
        relays.serve(listener, Target::Tcp(sidecar.addr));
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut clients: Vec<TcpStream> = (0..64)
                .map(|_| {
                    let c = TcpStream::connect(addr).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    c
                })
                .collect();
            for (i, c) in clients.iter_mut().enumerate() {
                c.write_all(&[b'a' + (i % 26) as u8; 4]).unwrap();
            }
            let answers: Vec<Vec<u8>> = clients
                .iter_mut()
                .map(|c| {
                    let mut buf = [0u8; 4];
                    c.read_exact(&mut buf)
                        .map(|()| buf.to_vec())
                        .unwrap_or_default()
                })
                .collect();
            let _ = tx.send(answers);
        });
        let answers = relays.run_until(async { rx.await.unwrap() }).unwrap();
        let expected: Vec<Vec<u8>> = (0..64).map(|i| vec![b'a' + (i % 26) as u8; 4]).collect();
        assert_eq!(answers, expected);
        sidecar.die();
    }
}
