//! The dashboard's key reader, which can be stopped from reading while the operator's
//! editor owns the terminal.
//!
//! Both the dashboard and the editor read the same terminal; a byte goes to whichever
//! process reads first. A reader that kept reading while the editor ran took the keys
//! typed into the editor and replayed them as dashboard commands afterwards (an approval
//! nobody meant, a quit, the editor again). So the reader thread only ever reads when
//! poll(2) says the terminal has input, and it polls a wake-up pipe beside it: before the
//! editor starts, [`Input::pause`] wakes the thread and waits until it answers that it is
//! parked. From then until [`Input::resume`] nothing in this process touches the
//! terminal's input. poll(2) has no timeout and SIGWINCH arrives through a pipe of its
//! own, so an idle dashboard does not wake up.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ratatui::crossterm::event::{self, Event as TermEvent};

use crate::run::Event;

/// What the main loop tells the reader thread.
enum Control {
    Pause,
    Resume,
    Stop,
}

/// The terminal's input, as the event reader sees it: standard input when it is a
/// terminal, else `/dev/tty` (the same choice as crossterm's).
pub(crate) fn open_tty() -> std::io::Result<OwnedFd> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        stdin.as_fd().try_clone_to_owned()
    } else {
        Ok(File::options()
            .read(true)
            .write(true)
            .open("/dev/tty")?
            .into())
    }
}

/// Throws away what was typed on the terminal and not read yet: keys typed while the
/// editor ran belong to the editor, never to the dashboard.
pub(crate) fn discard_typeahead(tty: BorrowedFd<'_>) {
    let _ = nix::sys::termios::tcflush(tty, nix::sys::termios::FlushArg::TCIFLUSH);
    // crossterm may hold keys it read earlier; they were typed before the editor opened
    // (after the key that opened it) and are dropped too.
    while matches!(event::poll(Duration::ZERO), Ok(true)) {
        if event::read().is_err() {
            break;
        }
    }
}

/// The key reader thread and the handles to pause it.
pub struct Input {
    control: mpsc::Sender<Control>,
    parked: mpsc::Receiver<()>,
    wake: UnixStream,
    tty: OwnedFd,
    thread: Option<JoinHandle<()>>,
    winch: Option<signal_hook::SigId>,
}

impl Input {
    /// Starts reading keys and resizes into `tx`. When the terminal goes away the thread
    /// sends [`Event::InputClosed`] and ends.
    pub fn start(tx: mpsc::Sender<Event>) -> std::io::Result<Self> {
        let tty = open_tty()?;
        let thread_tty = tty.try_clone()?;
        let (wake, wake_rx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        let (winch_tx, winch_rx) = UnixStream::pair()?;
        winch_rx.set_nonblocking(true)?;
        let winch =
            signal_hook::low_level::pipe::register(signal_hook::consts::SIGWINCH, winch_tx)?;
        let (control, control_rx) = mpsc::channel();
        let (parked_tx, parked) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("dashboard-keys".into())
            .spawn(move || {
                read_loop(&thread_tty, wake_rx, winch_rx, &control_rx, &parked_tx, &tx);
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => {
                signal_hook::low_level::unregister(winch);
                return Err(e);
            }
        };
        Ok(Self {
            control,
            parked,
            wake,
            tty,
            thread: Some(thread),
            winch: Some(winch),
        })
    }

    /// The terminal's input.
    pub fn tty(&self) -> BorrowedFd<'_> {
        self.tty.as_fd()
    }

    /// Stops the reader and returns once it is parked, not reading: from now on every
    /// key goes to whoever else reads the terminal. If the thread has ended already, it
    /// reads nothing either.
    pub fn pause(&mut self) {
        if self.control.send(Control::Pause).is_err() {
            return;
        }
        let _ = self.wake.write_all(&[1]);
        let _ = self.parked.recv();
    }

    /// Lets a paused reader read again.
    pub fn resume(&mut self) {
        let _ = self.control.send(Control::Resume);
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Stop);
        let _ = self.wake.write_all(&[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(id) = self.winch.take() {
            signal_hook::low_level::unregister(id);
        }
    }
}

fn drain(mut s: &UnixStream) {
    let mut buf = [0u8; 64];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

fn read_loop(
    tty: &OwnedFd,
    wake: UnixStream,
    winch: UnixStream,
    control: &mpsc::Receiver<Control>,
    parked: &mpsc::Sender<()>,
    tx: &mpsc::Sender<Event>,
) {
    loop {
        let mut fds = [
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            PollFd::new(winch.as_fd(), PollFlags::POLLIN),
            PollFd::new(tty.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                let _ = tx.send(Event::InputClosed);
                return;
            }
        }
        let ready = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
        let (wake_ready, winch_ready, tty_ready) = (ready(0), ready(1), ready(2));
        if !wake_ready.is_empty() {
            drain(&wake);
            // Every control message: a pause parks here until resumed or stopped.
            loop {
                match control.try_recv() {
                    Ok(Control::Pause) => {
                        let _ = parked.send(());
                        match control.recv() {
                            Ok(Control::Resume) => {}
                            Ok(Control::Pause) => {
                                let _ = parked.send(());
                            }
                            Ok(Control::Stop) | Err(_) => return,
                        }
                    }
                    Ok(Control::Resume) => {}
                    Ok(Control::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            // Whatever else was ready was ready before the pause: poll again.
            continue;
        }
        if !winch_ready.is_empty() {
            drain(&winch);
            if tx.send(Event::Resize).is_err() {
                return;
            }
        }
        if tty_ready.contains(PollFlags::POLLIN) {
            // Input is there: crossterm reads it without blocking; take every event it
            // parsed, so none waits in its buffer while this thread polls.
            loop {
                match event::poll(Duration::ZERO) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => {
                        let _ = tx.send(Event::InputClosed);
                        return;
                    }
                }
                let ev = match event::read() {
                    Ok(TermEvent::Key(k)) => Event::Key(k),
                    Ok(TermEvent::Resize(..)) => Event::Resize,
                    Ok(_) => continue,
                    Err(_) => {
                        let _ = tx.send(Event::InputClosed);
                        return;
                    }
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        }
        if tty_ready.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            // The terminal is gone (what it still had is read above).
            let _ = tx.send(Event::InputClosed);
            return;
        }
    }
}
