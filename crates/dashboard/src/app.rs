//! The dashboard's model and key handling, free of any terminal: what is shown, what is
//! selected, and which operator action a key press asks for. The runner performs the
//! actions; tests drive this directly.

use std::collections::{BTreeSet, HashSet};

use proposals::persist::Plan;
use proposals::queue::{self, Entry, Problem, QueueError};
use proposals::{Grant, Home, Status, Tool};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Everything the dashboard shows, read from the queues at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Pending proposals of every bottle, by arrival.
    pub entries: Vec<Entry>,
    /// Queue files that could not be read.
    pub problems: Vec<Problem>,
    /// Ids whose file changed since the proposal arrived (approving would undo that change).
    pub stale: HashSet<String>,
    /// The newest outbound DLP hits of every bottle, newest first.
    pub hits: Vec<crate::hits::DlpHit>,
}

/// Reads every bottle's queue.
pub fn snapshot(home: &Home) -> Result<Snapshot, QueueError> {
    let (entries, problems) = queue::pending_all(home, None)?;
    let mut stale = HashSet::new();
    for e in &entries {
        let p = &e.proposal;
        if matches!(
            p.tool,
            Tool::EgressAllow | Tool::EgressBlock | Tool::EgressTokenAllow | Tool::DlpAllow
        ) && let Some(hash) = &p.current_file_hash
        {
            let live = home.bottle(&p.bottle_slug).routes_file();
            if let Ok(text) = std::fs::read_to_string(&live)
                && &proposals::proposal::sha256_hex(&text) != hash
            {
                stale.insert(p.id.clone());
            }
        }
    }
    Ok(Snapshot {
        entries,
        problems,
        stale,
        hits: crate::hits::read(home),
    })
}

/// What the operator asked for with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do outside the model.
    None,
    /// Leave the dashboard.
    Quit,
    /// Approve the proposal as it is.
    Approve(String),
    /// Open the proposed file in `$EDITOR`; the result, if valid and different, is
    /// approved as `modified`.
    Edit(String),
    /// Approve the proposal as it is, for one use (`o`) or for a while (`t`).
    Grant {
        /// The proposal.
        id: String,
        /// How long it holds.
        grant: Grant,
    },
    /// Work out what approving into the manifest writes (`p`); the runner opens the
    /// confirm screen with the diff.
    PreviewPersist(String),
    /// Approve for the bottle and write the manifest as the operator confirmed (`y` on the
    /// confirm screen).
    Persist {
        /// The proposal.
        id: String,
        /// The manifest change shown.
        plan: Box<Plan>,
    },
    /// Show or hide the DLP hits (`d`); the runner reads them afresh.
    ToggleHits,
    /// Reject the proposal with an optional note.
    Reject {
        /// The proposal.
        id: String,
        /// The note.
        notes: Option<String>,
    },
}

/// Tone of the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Neutral information.
    Info,
    /// Something went wrong.
    Error,
}

/// The dashboard model.
#[derive(Debug, Clone, Default)]
pub struct App {
    snapshot: Snapshot,
    selected: Option<String>,
    filter: Option<String>,
    /// The reject note being typed, when the note prompt is open.
    pub note: Option<String>,
    /// Whether the "quit with proposals still waiting?" prompt is open.
    pub confirm_quit: bool,
    /// The duration being typed, when the "approve for how long?" prompt is open.
    pub duration: Option<String>,
    /// The manifest change waiting for the operator's `y` (the confirm screen).
    pub persist: Option<(String, Plan)>,
    /// Whether the DLP hits take the detail pane (`d`).
    pub show_hits: bool,
    /// The status line.
    pub message: Option<(Tone, String)>,
    seen: HashSet<String>,
    loaded_once: bool,
}

impl App {
    /// A dashboard showing only `filter`'s proposals, or every bottle's.
    pub fn new(filter: Option<String>) -> Self {
        Self {
            filter,
            ..Self::default()
        }
    }

    /// Replaces what is shown; returns how many proposals arrived since the last load
    /// (zero on the first load).
    pub fn load(&mut self, snapshot: Snapshot) -> usize {
        let mut arrived = 0;
        for e in &snapshot.entries {
            if self.seen.insert(e.proposal.id.clone()) && self.loaded_once {
                arrived += 1;
            }
        }
        self.loaded_once = true;
        self.snapshot = snapshot;
        let visible = self.visible();
        let still_there = self
            .selected
            .as_ref()
            .is_some_and(|id| visible.iter().any(|e| &e.proposal.id == id));
        if !still_there {
            self.selected = visible.first().map(|e| e.proposal.id.clone());
        }
        arrived
    }

    /// The bottle filter.
    pub fn filter(&self) -> Option<&str> {
        self.filter.as_deref()
    }

    /// Files skipped at the last load.
    pub fn problems(&self) -> &[Problem] {
        &self.snapshot.problems
    }

    /// The newest outbound DLP hits of every bottle (of the filtered bottle only, when
    /// filtered), newest first.
    pub fn hits(&self) -> Vec<&crate::hits::DlpHit> {
        self.snapshot
            .hits
            .iter()
            .filter(|h| self.filter.as_deref().is_none_or(|f| h.bottle == f))
            .collect()
    }

    /// Whether the live file changed since proposal `id` arrived.
    pub fn is_stale(&self, id: &str) -> bool {
        self.snapshot.stale.contains(id)
    }

    /// How many proposals (of every bottle, whatever the filter) wait for the operator:
    /// pending, or approved but failed to apply.
    pub fn waiting(&self) -> usize {
        self.snapshot
            .entries
            .iter()
            .filter(|e| matches!(e.status, Status::Pending | Status::ApplyFailed))
            .count()
    }

    /// The proposals shown, by arrival.
    pub fn visible(&self) -> Vec<&Entry> {
        self.snapshot
            .entries
            .iter()
            .filter(|e| {
                self.filter
                    .as_deref()
                    .is_none_or(|f| e.proposal.bottle_slug == f)
            })
            .collect()
    }

    /// Index of the selected proposal among the visible ones.
    pub fn selected_index(&self) -> Option<usize> {
        let id = self.selected.as_ref()?;
        self.visible().iter().position(|e| &e.proposal.id == id)
    }

    /// The selected proposal.
    pub fn selected(&self) -> Option<&Entry> {
        let i = self.selected_index()?;
        self.visible().get(i).copied()
    }

    fn bottles(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .snapshot
            .entries
            .iter()
            .map(|e| e.proposal.bottle_slug.clone())
            .collect();
        set.into_iter().collect()
    }

    fn move_selection(&mut self, delta: isize) {
        let visible = self.visible();
        if visible.is_empty() {
            self.selected = None;
            return;
        }
        let cur = self.selected_index().unwrap_or(0) as isize;
        let next = (cur + delta).clamp(0, visible.len() as isize - 1) as usize;
        self.selected = Some(visible[next].proposal.id.clone());
    }

    fn cycle_filter(&mut self) {
        let bottles = self.bottles();
        self.filter = match &self.filter {
            None => bottles.first().cloned(),
            Some(cur) => bottles
                .iter()
                .position(|b| b == cur)
                .and_then(|i| bottles.get(i + 1).cloned()),
        };
        self.selected = self.visible().first().map(|e| e.proposal.id.clone());
        self.message = Some((
            Tone::Info,
            match &self.filter {
                Some(b) => format!("showing bottle {b} only (f: next bottle)"),
                None => "showing every bottle".to_owned(),
            },
        ));
    }

    /// The selected proposal if it can still be answered; otherwise sets a message.
    fn answerable(&mut self) -> Option<String> {
        let Some(e) = self.selected() else {
            self.message = Some((Tone::Info, "no proposal selected".to_owned()));
            return None;
        };
        if e.status == Status::Answered {
            let id = e.proposal.id.clone();
            self.message = Some((
                Tone::Info,
                format!("proposal {id} is answered already; waiting for its bottle to apply it"),
            ));
            return None;
        }
        Some(e.proposal.id.clone())
    }

    /// The selected proposal if it can be answered and approved with `grant`; otherwise
    /// says why not in the status line.
    fn grantable(&mut self, grant: Grant) -> Option<String> {
        let id = self.answerable()?;
        let tool = self.selected()?.proposal.tool;
        if let Err(e) = proposals::grant::check(tool, grant) {
            self.message = Some((Tone::Error, format!("{e}; nothing was decided")));
            return None;
        }
        Some(id)
    }

    /// Handles one key press. Esc only ever cancels (a prompt, the status line); `q`
    /// asks first while proposals wait; Ctrl-C leaves at once.
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        // A status line is read by the next key: the keys come back in the footer.
        self.message = None;
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Action::Quit;
        }
        if self.confirm_quit {
            self.confirm_quit = false;
            if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                return Action::Quit;
            }
            self.message = Some((Tone::Info, "still here; nothing was decided".to_owned()));
            return Action::None;
        }
        if let Some((id, plan)) = self.persist.take() {
            if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                return Action::Persist {
                    id,
                    plan: Box::new(plan),
                };
            }
            self.message = Some((
                Tone::Info,
                format!("not approved: nothing was written, {id} is still pending"),
            ));
            return Action::None;
        }
        if let Some(text) = &mut self.duration {
            match key.code {
                KeyCode::Esc => {
                    self.duration = None;
                    self.message = Some((Tone::Info, "approval cancelled".to_owned()));
                }
                KeyCode::Enter => match proposals::grant::parse_duration(text.trim()) {
                    Ok(seconds) => {
                        self.duration = None;
                        if let Some(id) = self.answerable() {
                            return Action::Grant {
                                id,
                                grant: Grant::For { seconds },
                            };
                        }
                    }
                    Err(e) => self.message = Some((Tone::Error, e.to_string())),
                },
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) if c.is_ascii_alphanumeric() => text.push(c),
                _ => {}
            }
            return Action::None;
        }
        if let Some(note) = &mut self.note {
            match key.code {
                KeyCode::Esc => {
                    self.note = None;
                    self.message = Some((Tone::Info, "reject cancelled".to_owned()));
                }
                KeyCode::Enter => {
                    let notes = Some(note.trim().to_owned()).filter(|n| !n.is_empty());
                    self.note = None;
                    if let Some(id) = self.answerable() {
                        return Action::Reject { id, notes };
                    }
                }
                KeyCode::Backspace => {
                    note.pop();
                }
                KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                    note.push(c);
                }
                _ => {}
            }
            return Action::None;
        }
        match key.code {
            KeyCode::Char('q') => {
                if self.waiting() == 0 {
                    return Action::Quit;
                }
                self.confirm_quit = true;
                Action::None
            }
            KeyCode::Esc => {
                // Esc cancels what is open: the DLP hits go back to the proposal.
                self.show_hits = false;
                Action::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.move_selection(1);
                Action::None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.move_selection(-1);
                Action::None
            }
            KeyCode::Char('f') => {
                self.cycle_filter();
                Action::None
            }
            KeyCode::Char('d') => {
                self.show_hits = !self.show_hits;
                Action::ToggleHits
            }
            KeyCode::Char('a') => self.answerable().map_or(Action::None, Action::Approve),
            KeyCode::Char('o') => {
                self.grantable(Grant::Once)
                    .map_or(Action::None, |id| Action::Grant {
                        id,
                        grant: Grant::Once,
                    })
            }
            KeyCode::Char('t') => {
                if self.grantable(Grant::For { seconds: 1 }).is_some() {
                    self.duration = Some(String::new());
                }
                Action::None
            }
            KeyCode::Char('p') => self
                .grantable(Grant::Persist)
                .map_or(Action::None, Action::PreviewPersist),
            KeyCode::Char('e') => self.answerable().map_or(Action::None, Action::Edit),
            KeyCode::Char('r') => {
                if self.answerable().is_some() {
                    self.note = Some(String::new());
                    self.message = None;
                }
                Action::None
            }
            _ => Action::None,
        }
    }
}
