//! While the operator's editor runs, the terminal is the editor's alone: the dashboard
//! runs in a real pseudo-terminal, `e` opens a scripted editor, and the keys typed during
//! the edit (`a`, Esc, `q`, `e`: approve, quit, edit to the dashboard) must all reach the
//! editor and none the dashboard. The key reader's other duty, redrawing when the terminal
//! is resized, is checked here too.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::pty::{Winsize, openpty};
use pretty_assertions::assert_eq;
use proposals::queue::{NewProposal, Queue};
use proposals::{Home, Status, Tool};

/// The editor: puts the terminal in raw mode as vi does, says it started, waits until
/// the test has typed, then takes whatever the terminal holds for it (without waiting).
/// `$MODE` says how it ends: `unchanged` (the file as it was), `change` (a port added),
/// `fail` (exit status 3), `late` (unchanged, after more keys were typed that it never
/// reads).
const EDITOR: &str = r#"#!/bin/sh
saved=$(stty -g)
stty raw -echo
: > "$MARKS/started"
while [ ! -e "$MARKS/typed" ]; do sleep 0.05; done
stty -icanon min 0 time 0
dd bs=64 count=1 of="$MARKS/keys" 2>/dev/null
if [ "$MODE" = late ]; then
    : > "$MARKS/read"
    while [ ! -e "$MARKS/late" ]; do sleep 0.05; done
fi
if [ "$MODE" = change ]; then
    printf 'routes:\n  - host: a.example\n    port: 8443\n' > "$1"
fi
stty "$saved"
: > "$MARKS/done"
if [ "$MODE" = fail ]; then exit 3; fi
"#;

nix::ioctl_write_int_bad!(set_controlling_terminal, nix::libc::TIOCSCTTY);
nix::ioctl_write_ptr_bad!(set_window_size, nix::libc::TIOCSWINSZ, Winsize);

const ROWS: usize = 30;
const COLS: usize = 120;

/// The screen the dashboard drew: a small terminal emulator that knows what ratatui's
/// crossterm backend sends (cursor moves, clears, text; colours are ignored).
fn render(output: &[u8]) -> Vec<String> {
    let mut grid = vec![vec![' '; COLS]; ROWS];
    let (mut row, mut col) = (0usize, 0usize);
    let text = String::from_utf8_lossy(output);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    let mut params = String::new();
                    let mut last = ' ';
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            last = c;
                            break;
                        }
                        params.push(c);
                    }
                    let nums: Vec<usize> = params
                        .split(';')
                        .map(|n| n.trim_start_matches('?').parse().unwrap_or(0))
                        .collect();
                    let at = |i: usize| nums.get(i).copied().filter(|n| *n > 0).unwrap_or(1);
                    match last {
                        'H' | 'f' => (row, col) = (at(0) - 1, at(1) - 1),
                        'J' if nums.first() == Some(&2) => grid = vec![vec![' '; COLS]; ROWS],
                        // entering or leaving the alternate screen
                        'h' | 'l' if params == "?1049" => grid = vec![vec![' '; COLS]; ROWS],
                        _ => {}
                    }
                }
                Some(']') => {
                    for c in chars.by_ref() {
                        if c == '\x07' {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => col = 0,
            '\n' => row = (row + 1).min(ROWS - 1),
            c if c.is_control() => {}
            c => {
                if row < ROWS && col < COLS {
                    grid[row][col] = c;
                }
                col += 1;
            }
        }
    }
    grid.into_iter()
        .map(|r| r.into_iter().collect::<String>().trim_end().to_owned())
        .collect()
}

struct Dashboard {
    child: Child,
    stderr: std::path::PathBuf,
    master: File,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Dashboard {
    fn start(home: &Path, editor: &Path, marks: &Path, mode: &str) -> Self {
        let size = Winsize {
            ws_row: ROWS as u16,
            ws_col: COLS as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&size, None).unwrap();
        let slave = File::from(pty.slave);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dashboard-for-tests"));
        cmd.env("BOT_BOTTLE_HOME", home)
            .env("EDITOR", editor)
            .env_remove("VISUAL")
            .env("MARKS", marks)
            .env("MODE", mode)
            .env("TERM", "xterm-256color")
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(File::create(marks.join("stderr")).unwrap());
        // The pseudo-terminal becomes the dashboard's controlling terminal, as a real one
        // is, so that resizing it sends SIGWINCH.
        // SAFETY: between fork and exec the closure only makes two async-signal-safe
        // system calls (setsid, ioctl) and touches no memory of the parent's.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                set_controlling_terminal(0, 0)?;
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd);
        drop(slave);
        let master = File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), screen.clone());
        let mut answers = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the dashboard and its editor have closed the terminal.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                // A terminal answers "where is the cursor?" (ratatui asks when it clears).
                if buf[..n].windows(4).any(|w| w == b"\x1b[6n") {
                    let _ = answers.write_all(b"\x1b[1;1R");
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            stderr: marks.join("stderr"),
            master,
            screen,
        }
    }

    fn screen(&self) -> Vec<String> {
        render(&self.screen.lock().unwrap())
    }

    fn footer(&self) -> String {
        self.screen()[ROWS - 1].clone()
    }

    /// Resizes the terminal, as a terminal window does when the operator drags it.
    fn resize(&self, rows: u16, cols: u16) {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `Winsize`, which lives for the call.
        unsafe { set_window_size(self.master.as_raw_fd(), &size) }.unwrap();
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits (a minute at most) until `done` holds or the dashboard has exited.
    fn wait_for(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the dashboard exited ({status}) while waiting for {what}; it said {:?} and showed:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                    self.screen().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} after a minute; the dashboard showed:\n{}",
                self.screen().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn submit(q: &Queue, host: &str) -> proposals::Proposal {
    q.submit(NewProposal {
        tool: Tool::EgressAllow,
        proposed_file: format!("routes:\n  - host: {host}\n"),
        justification: "need it".into(),
        current_file: Some("routes: []\n".into()),
        args: None,
    })
    .unwrap()
    .0
}

/// Two proposals waiting; `opening` (`e`, maybe with keys typed right after it) opens the
/// editor on the first, and `a`, Esc, `q`, `e` are typed one by one, as a person types
/// them, while it runs.
struct Session {
    _dir: tempfile::TempDir,
    d: Dashboard,
    q: Queue,
    a: proposals::Proposal,
    b: proposals::Proposal,
    editor: std::path::PathBuf,
    marks: std::path::PathBuf,
}

fn edit_while_typing(mode: &str, opening: &[u8]) -> Session {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(&editor, EDITOR).unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let a = submit(&q, "a.example");
    let b = submit(&q, "b.example");

    let mut d = Dashboard::start(home.root(), &editor, &marks, mode);
    let title = format!(" proposal {} ", a.id);
    d.wait_for("the first proposal", |d| {
        d.screen().iter().any(|l| l.contains(&title))
    });
    d.type_keys(opening);
    d.wait_for("the editor", |_| marks.join("started").exists());
    for key in [&b"a"[..], b"\x1b", b"q", b"e"] {
        d.type_keys(key);
        std::thread::sleep(Duration::from_millis(100));
    }
    File::create(marks.join("typed")).unwrap();
    if mode == "late" {
        // Typed while the editor still runs, but no longer reads: nobody's keys.
        d.wait_for("the editor to stop reading", |_| {
            marks.join("read").exists()
        });
        d.type_keys(b"a");
        std::thread::sleep(Duration::from_millis(100));
        File::create(marks.join("late")).unwrap();
    }
    d.wait_for("the editor to finish", |_| marks.join("done").exists());
    Session {
        _dir: dir,
        d,
        q,
        a,
        b,
        editor,
        marks,
    }
}

impl Session {
    /// Every key typed during the edit reached the editor, and the dashboard still runs.
    fn assert_the_editor_got_the_keys(&mut self) {
        assert_eq!(
            std::fs::read(self.marks.join("keys")).unwrap(),
            b"a\x1bqe".to_vec(),
            "the editor did not get the keys typed into it"
        );
        assert_eq!(self.d.child.try_wait().unwrap(), None, "the dashboard quit");
    }

    fn statuses(&self) -> [Option<Status>; 2] {
        [&self.a.id, &self.b.id].map(|id| self.q.status(id).unwrap())
    }
}

#[test]
fn keys_typed_into_the_editor_never_reach_the_dashboard() {
    let mut s = edit_while_typing("unchanged", b"e");
    let unchanged = format!(
        "edit unchanged: nothing was decided, {} is still pending (a approves it as proposed)",
        s.a.id
    );
    s.d.wait_for("the status line after the edit", |d| {
        d.footer() == unchanged
    });
    s.assert_the_editor_got_the_keys();
    assert_eq!(
        s.statuses(),
        [Some(Status::Pending), Some(Status::Pending)],
        "a proposal was decided that nobody decided"
    );

    // The dashboard still answers keys, and asks before leaving waiting proposals.
    s.d.type_keys(b"q");
    s.d.wait_for("the quit prompt", |d| {
        d.footer()
            == "quit? 2 proposals are still waiting for you (they stay queued)  (y: quit, n or Esc: stay)"
    });
    s.d.type_keys(b"y");
    let status = s.d.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(s.statuses(), [Some(Status::Pending), Some(Status::Pending)]);
}

#[test]
fn an_editor_that_fails_gets_the_keys_and_decides_nothing() {
    let mut s = edit_while_typing("fail", b"e");
    let failed = format!(
        "the editor {:?} exited with exit status: 3; nothing was sent",
        s.editor.to_str().unwrap()
    );
    s.d.wait_for("the status line after the edit", |d| d.footer() == failed);
    s.assert_the_editor_got_the_keys();
    assert_eq!(s.statuses(), [Some(Status::Pending), Some(Status::Pending)]);
}

#[test]
fn an_edit_is_approved_as_modified_and_the_keys_still_go_to_the_editor() {
    let mut s = edit_while_typing("change", b"e");
    let approved = format!("approved your edit of {} (modified)", s.a.id);
    s.d.wait_for("the status line after the edit", |d| d.footer() == approved);
    s.assert_the_editor_got_the_keys();
    let r = s.q.response(&s.a.id).unwrap().unwrap();
    assert_eq!(
        (r.status, r.final_file.as_deref()),
        (
            proposals::Decision::Modified,
            Some("routes:\n  - host: a.example\n    port: 8443\n")
        )
    );
    assert_eq!(
        s.statuses(),
        [Some(Status::Answered), Some(Status::Pending)]
    );
}

#[test]
fn keys_typed_right_after_e_are_not_replayed_after_the_editor() {
    // `e` and `a` arrive in one read: the `a` was meant for the editor that was opening.
    let mut s = edit_while_typing("unchanged", b"ea");
    let unchanged = format!(
        "edit unchanged: nothing was decided, {} is still pending (a approves it as proposed)",
        s.a.id
    );
    s.d.wait_for("the status line after the edit", |d| {
        d.footer() == unchanged
    });
    s.assert_the_editor_got_the_keys();
    assert_eq!(s.statuses(), [Some(Status::Pending), Some(Status::Pending)]);
}

#[test]
fn keys_the_editor_left_unread_are_dropped_when_it_exits() {
    let mut s = edit_while_typing("late", b"e");
    let unchanged = format!(
        "edit unchanged: nothing was decided, {} is still pending (a approves it as proposed)",
        s.a.id
    );
    s.d.wait_for("the status line after the edit", |d| {
        d.footer() == unchanged
    });
    s.assert_the_editor_got_the_keys();
    // The dashboard reads again: a key typed now is its own (j selects the second).
    s.d.type_keys(b"j");
    let second = format!(" proposal {} ", s.b.id);
    s.d.wait_for("the second proposal selected", |d| {
        d.screen().iter().any(|l| l.contains(&second))
    });
    assert_eq!(s.statuses(), [Some(Status::Pending), Some(Status::Pending)]);
}

#[test]
fn a_resized_terminal_is_redrawn_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let a = submit(&q, "a.example");
    let mut d = Dashboard::start(home.root(), Path::new("false"), &marks, "unchanged");
    let keys = "a approve  o once  t for a while  p manifest  e edit  r reject  d dlp hits  f filter  j/k  q quit";
    d.wait_for("the first screen", |d| d.footer() == keys);
    // Smaller: the footer moves up to the new last row, without a key pressed.
    d.resize(25, 100);
    d.wait_for("the screen redrawn at 25 rows", |d| {
        let s = d.screen();
        s[24] == keys && s[25..].iter().all(String::is_empty)
    });
    assert!(
        d.screen()
            .iter()
            .any(|l| l.contains(&format!(" proposal {} ", a.id))),
        "{:#?}",
        d.screen()
    );
    assert_eq!(d.child.try_wait().unwrap(), None);
}
