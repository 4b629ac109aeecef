//! The interactive loop: a terminal, a thread reading keys (blocking, no timeouts; paused
//! while the editor runs), a file watcher on every bottle's queue, and the operator's
//! actions.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use proposals::queue::{self, QueueError};
use proposals::validate;
use proposals::{Decision, Grant, Home};
use ratatui::crossterm::event;

use crate::app::{self, Action, App, Tone};
use crate::input::{self, Input};

/// The dashboard could not run.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The terminal failed.
    #[error("terminal error: {0}")]
    Terminal(#[from] std::io::Error),
    /// The queue directory cannot be watched.
    #[error("cannot watch {path} for new proposals: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: notify::Error,
    },
    /// The queues cannot be read.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What wakes the loop.
#[derive(Debug)]
pub enum Event {
    /// A key press.
    Key(event::KeyEvent),
    /// The terminal was resized.
    Resize,
    /// Something changed under `queue/`.
    QueueChanged,
    /// The terminal is gone (hung up): nobody can answer anything here any more.
    InputClosed,
}

/// The watch on every bottle's queue; dropping it stops watching.
pub struct QueueWatch {
    _watcher: notify::RecommendedWatcher,
    deliveries: Arc<AtomicU64>,
}

impl std::fmt::Debug for QueueWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueWatch")
            .field("deliveries", &self.deliveries())
            .finish()
    }
}

impl QueueWatch {
    /// How many file events woke the watcher, changes or not (the kernel reports every
    /// open of a queue file too). It stays still while every queue is idle: tests and
    /// benchmarks watch it.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }
}

/// Watches every bottle's queue (recursively) and sends [`Event::QueueChanged`] for
/// changes only ([`proposals::queue::is_queue_change`]): the dashboard's own reloads open
/// every queue file, and must not wake it again.
pub fn watch_queues(home: &Home, tx: mpsc::Sender<Event>) -> Result<QueueWatch, DashboardError> {
    use notify::Watcher;
    let root = home.queue_root();
    std::fs::create_dir_all(&root)?;
    let deliveries = Arc::new(AtomicU64::new(0));
    let counter = deliveries.clone();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        counter.fetch_add(1, Ordering::Relaxed);
        let change = match &res {
            Ok(ev) => queue::is_queue_change(ev),
            Err(_) => true,
        };
        if change {
            let _ = tx.send(Event::QueueChanged);
        }
    })
    .map_err(|source| DashboardError::Watch {
        path: root.clone(),
        source,
    })?;
    w.watch(&root, notify::RecursiveMode::Recursive)
        .map_err(|source| DashboardError::Watch {
            path: root.clone(),
            source,
        })?;
    Ok(QueueWatch {
        _watcher: w,
        deliveries,
    })
}

fn notify_arrival(count: usize) {
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\x07");
    let _ = out.flush();
    let msg = if count == 1 {
        "a new proposal is waiting".to_owned()
    } else {
        format!("{count} new proposals are waiting")
    };
    // A desktop notification where notify-send exists; never waited for.
    let _ = std::process::Command::new("notify-send")
        .args(["bot-bottle", &msg])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

fn reload(home: &Home, app: &mut App, announce: bool) {
    match app::snapshot(home) {
        Ok(s) => {
            for p in &s.problems {
                tracing::warn!(path = %p.path.display(), reason = %p.reason, "skipping queue file");
            }
            let arrived = app.load(s);
            if arrived > 0 && announce {
                notify_arrival(arrived);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the queues");
            app.message = Some((Tone::Error, format!("cannot read the queues: {e}")));
        }
    }
}

/// Opens `text` in the operator's editor and returns the saved result.
pub fn edit_in_editor(text: &str, suffix: &str) -> std::io::Result<String> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned());
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "bot-bottle-proposal-{}{suffix}",
        proposals::proposal::new_id()
    ));
    std::fs::write(&path, text)?;
    let mut parts = editor.split_whitespace();
    let program = parts.next().unwrap_or("vi");
    let status = std::process::Command::new(program)
        .args(parts)
        .arg(&path)
        .status();
    let result = match status {
        Ok(s) if s.success() => std::fs::read_to_string(&path),
        Ok(s) => Err(std::io::Error::other(format!(
            "the editor {editor:?} exited with {s}; nothing was sent"
        ))),
        Err(e) => Err(std::io::Error::other(format!(
            "cannot start the editor {editor:?}: {e}; set $EDITOR"
        ))),
    };
    let _ = std::fs::remove_file(&path);
    result
}

/// Whether an edited file says what the proposal says: editors that save an untouched
/// file may still add a final newline (vi does), and that is not a change.
fn unchanged(edited: &str, proposed: &str) -> bool {
    edited.trim_end() == proposed.trim_end()
}

/// Performs an operator action; returns the status line to show. For [`Action::Edit`],
/// `edited` is the file as the editor left it: an unchanged file decides nothing.
pub fn perform(
    home: &Home,
    app: &App,
    action: &Action,
    operator: &str,
    edited: Option<String>,
) -> (Tone, String) {
    let result = match action {
        Action::Approve(id) => queue::answer(home, id, Decision::Approved, None, None, operator)
            .map(|_| format!("approved {id}; its bottle applies it now")),
        Action::Grant { id, grant } => {
            let tool = app
                .visible()
                .into_iter()
                .find(|e| &e.proposal.id == id)
                .map(|e| e.proposal.tool);
            queue::answer_granted(home, id, Decision::Approved, None, None, operator, *grant).map(
                |_| {
                    let holds = tool.map_or_else(|| grant.scope(), |t| grant.holds(t, None));
                    format!("approved {id} ({holds}); its bottle applies it now")
                },
            )
        }
        Action::PreviewPersist(_) => return (Tone::Info, String::new()),
        Action::Persist { id, plan } => {
            match queue::answer_granted(
                home,
                id,
                Decision::Approved,
                None,
                None,
                operator,
                Grant::Persist,
            ) {
                Ok(_) => {
                    return match proposals::persist::write(plan) {
                        Ok(()) => (
                            Tone::Info,
                            format!(
                                "approved {id} for the bottle and wrote it into {}",
                                plan.file.display()
                            ),
                        ),
                        Err(e) => (
                            Tone::Error,
                            format!(
                                "approved {id} for the bottle, but the manifest was not changed: {e}"
                            ),
                        ),
                    };
                }
                Err(e) => Err(e),
            }
        }
        Action::Reject { id, notes } => {
            queue::answer(home, id, Decision::Rejected, None, notes.clone(), operator)
                .map(|_| format!("rejected {id}"))
        }
        Action::Edit(id) => {
            let Some(entry) = app.visible().into_iter().find(|e| &e.proposal.id == id) else {
                return (Tone::Error, format!("proposal {id} is gone"));
            };
            let Some(text) = edited else {
                return (
                    Tone::Info,
                    format!("edit cancelled: nothing was decided, {id} is still pending"),
                );
            };
            if unchanged(&text, &entry.proposal.proposed_file) {
                return (
                    Tone::Info,
                    format!(
                        "edit unchanged: nothing was decided, {id} is still pending (a approves it as proposed)"
                    ),
                );
            }
            if let Err(e) = validate::parse_payload(entry.proposal.tool, &text) {
                return (
                    Tone::Error,
                    format!("the edited file is not valid, nothing was sent: {e}"),
                );
            }
            queue::answer(home, id, Decision::Modified, Some(text), None, operator)
                .map(|_| format!("approved your edit of {id} (modified)"))
        }
        Action::None | Action::Quit | Action::ToggleHits => return (Tone::Info, String::new()),
    };
    match result {
        Ok(m) => (Tone::Info, m),
        Err(e) => (Tone::Error, e.to_string()),
    }
}

/// Opens the confirm screen of `p` (approve into the manifest) with the diff, or says why
/// the proposal cannot be written there.
pub fn preview_persist(home: &Home, app: &mut App, id: &str) {
    let Some(entry) = app.visible().into_iter().find(|e| e.proposal.id == id) else {
        app.message = Some((Tone::Error, format!("proposal {id} is gone")));
        return;
    };
    match proposals::persist::plan(home, &entry.proposal, Decision::Approved, None) {
        Ok(plan) => app.persist = Some((id.to_owned(), plan)),
        Err(e) => {
            app.message = Some((
                Tone::Error,
                format!("cannot approve into the manifest: {e}"),
            ))
        }
    }
}

/// Gives the screen back to the shell (and so to the editor).
fn leave_screen() -> std::io::Result<()> {
    use ratatui::crossterm::{cursor, execute, terminal};
    terminal::disable_raw_mode()?;
    execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    )
}

/// Takes the screen back after the editor; the fresh terminal redraws it whole. (Not
/// `Terminal::clear`, which asks the terminal where its cursor is and reads the answer
/// from the keyboard input.)
fn enter_screen(terminal: &mut ratatui::DefaultTerminal) -> std::io::Result<()> {
    use ratatui::crossterm::{execute, terminal as term};
    term::enable_raw_mode()?;
    execute!(
        std::io::stdout(),
        term::EnterAlternateScreen,
        term::Clear(term::ClearType::All)
    )?;
    *terminal = ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))?;
    Ok(())
}

/// Runs `f` (the editor) with the terminal handed to it alone. The key reader is parked
/// first, and only once it says so does anything else happen; keys typed after the one
/// that opened the editor were meant for the editor and are dropped. Afterwards whatever
/// was typed and not read by the editor is thrown away too, and the dashboard takes the
/// screen back. Nothing typed while the editor runs can become a dashboard command.
fn hand_terminal_to<T>(
    terminal: &mut ratatui::DefaultTerminal,
    input: &mut Input,
    rx: &mpsc::Receiver<Event>,
    backlog: &mut VecDeque<Event>,
    f: impl FnOnce() -> T,
) -> Result<T, DashboardError> {
    input.pause();
    backlog.retain(|e| !matches!(e, Event::Key(_)));
    while let Ok(ev) = rx.try_recv() {
        if !matches!(ev, Event::Key(_)) {
            backlog.push_back(ev);
        }
    }
    input::discard_typeahead(input.tty());
    let left = leave_screen();
    let out = left.is_ok().then(f);
    input::discard_typeahead(input.tty());
    let back = enter_screen(terminal);
    input.resume();
    left?;
    back?;
    out.ok_or_else(|| DashboardError::Terminal(std::io::Error::other("the screen was not left")))
}

/// Runs the dashboard on the terminal until the operator quits.
pub fn run(home: Home, filter: Option<String>) -> Result<(), DashboardError> {
    let (tx, rx) = mpsc::channel();
    let _watch = watch_queues(&home, tx.clone())?;
    let operator = queue::operator_name();
    let mut app = App::new(filter);
    reload(&home, &mut app, false);
    let mut terminal = ratatui::try_init()?;
    let result = Input::start(tx)
        .map_err(DashboardError::from)
        .and_then(|mut input| {
            event_loop(&home, &operator, &mut app, &mut terminal, &mut input, &rx)
        });
    ratatui::restore();
    result
}

fn event_loop(
    home: &Home,
    operator: &str,
    app: &mut App,
    terminal: &mut ratatui::DefaultTerminal,
    input: &mut Input,
    rx: &mpsc::Receiver<Event>,
) -> Result<(), DashboardError> {
    let mut backlog = VecDeque::new();
    loop {
        terminal.draw(|f| crate::ui::render(f, app))?;
        let ev = match backlog.pop_front() {
            Some(ev) => ev,
            None => match rx.recv() {
                Ok(ev) => ev,
                Err(_) => return Ok(()),
            },
        };
        let mut changed = matches!(ev, Event::QueueChanged);
        match ev {
            Event::InputClosed => return Ok(()),
            Event::Resize | Event::QueueChanged => {}
            Event::Key(k) => match app.handle_key(k) {
                Action::Quit => return Ok(()),
                Action::None => {}
                Action::Edit(id) => {
                    let proposal = app
                        .visible()
                        .into_iter()
                        .find(|e| e.proposal.id == id)
                        .map(|e| e.proposal.clone());
                    app.message = Some(match proposal {
                        None => (Tone::Error, format!("proposal {id} is gone")),
                        Some(p) => {
                            let edited =
                                hand_terminal_to(terminal, input, rx, &mut backlog, || {
                                    edit_in_editor(&p.proposed_file, p.tool.file_suffix())
                                })?;
                            match edited {
                                Ok(text) => {
                                    perform(home, app, &Action::Edit(id), operator, Some(text))
                                }
                                Err(e) => (Tone::Error, e.to_string()),
                            }
                        }
                    });
                    changed = true;
                }
                Action::PreviewPersist(id) => {
                    preview_persist(home, app, &id);
                }
                // The hits are read afresh when shown (the request logs are not watched).
                Action::ToggleHits => changed = true,
                action => {
                    app.message = Some(perform(home, app, &action, operator, None));
                    changed = true;
                }
            },
        }
        // Coalesce bursts of file events into one reload.
        while let Ok(more) = rx.try_recv() {
            match more {
                Event::QueueChanged => changed = true,
                other => backlog.push_back(other),
            }
        }
        if changed {
            reload(home, app, true);
        }
    }
}
