//! Drawing the dashboard: the pending list on top (each with its effect), the selected
//! proposal below (its effect first, then the justification and the diff), the keys (or the
//! open prompt: reject note, approve for how long, quit; or the last message) at the
//! bottom. Approving into the manifest shows the manifest diff in place of the proposal
//! until the operator confirms it with `y`; `d` shows the outbound DLP hits there instead.

use proposals::{Entry, Status, Tool};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};

use crate::app::{App, Tone};
use crate::diff;

fn status_label(e: &Entry) -> String {
    let s = match e.status {
        Status::ApplyFailed => "apply failed",
        Status::Answered => "answered",
        other => other.as_str(),
    };
    if e.bottle_present {
        s.to_owned()
    } else {
        format!("{s} (bottle gone)")
    }
}

/// What approving the proposal does (its effect, most dangerous change first), or why
/// that cannot be told.
fn effect_of(e: &Entry) -> Result<proposals::Effect, String> {
    proposals::effect::proposal_effect(&e.proposal)
        .map_err(|err| format!("cannot tell what it does: {err}"))
}

fn clock(ts: &str) -> &str {
    ts.get(11..19).unwrap_or(ts)
}

/// Draws the whole screen.
pub fn render(frame: &mut Frame, app: &App) {
    // A long status line (a refusal and its reason) wraps onto up to four lines, so the
    // operator reads the reason whole.
    let width = usize::from(frame.area().width.max(1));
    let footer_lines = match &app.message {
        Some((_, m)) => m.chars().count().div_ceil(width).clamp(1, 4),
        None => 1,
    };
    let [title, list, detail, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Percentage(35),
        Constraint::Min(5),
        Constraint::Length(u16::try_from(footer_lines).unwrap_or(1)),
    ])
    .areas(frame.area());

    let visible = app.visible();
    let mut head = format!("bot-bottle supervise: {} pending", visible.len());
    if let Some(f) = app.filter() {
        head.push_str(&format!(" (bottle {f})"));
    }
    let hits = app.hits();
    if !hits.is_empty() {
        let blocked = hits.iter().filter(|h| h.action == "blocked").count();
        head.push_str(&format!(
            ", {} dlp hit(s) ({blocked} blocked; d shows them)",
            hits.len()
        ));
    }
    if !app.problems().is_empty() {
        head.push_str(&format!(
            ", {} unreadable queue file(s) skipped",
            app.problems().len()
        ));
    }
    frame.render_widget(
        Paragraph::new(head).style(Style::new().add_modifier(Modifier::BOLD)),
        title,
    );

    let rows = visible.iter().map(|e| {
        let p = &e.proposal;
        let style = match e.status {
            Status::ApplyFailed => Style::new().fg(Color::Red),
            Status::Answered => Style::new().fg(Color::DarkGray),
            _ => Style::new(),
        };
        Row::new(vec![
            Cell::from(clock(&p.arrival_timestamp).to_owned()),
            Cell::from(p.bottle_slug.clone()),
            Cell::from(p.tool.as_str()),
            Cell::from(status_label(e)),
            Cell::from(effect_of(e).map(|f| f.headline()).unwrap_or_else(|why| why)),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(18),
            Constraint::Length(24),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(vec!["arrived", "bottle", "tool", "status", "effect"])
            .style(Style::new().add_modifier(Modifier::UNDERLINED)),
    )
    .block(Block::new().borders(Borders::ALL).title(" proposals "))
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(app.selected_index());
    frame.render_stateful_widget(table, list, &mut state);

    let detail_block = Block::new().borders(Borders::ALL);
    match app.selected() {
        None => frame.render_widget(
            Paragraph::new("No pending proposals. New ones appear here as agents send them.")
                .block(detail_block.title(" proposal ")),
            detail,
        ),
        Some(e) => {
            let p = &e.proposal;
            let mut lines = vec![Line::from(vec![
                Span::styled("bottle ", Style::new().fg(Color::DarkGray)),
                Span::raw(p.bottle_slug.clone()),
                Span::styled("  tool ", Style::new().fg(Color::DarkGray)),
                Span::raw(p.tool.as_str()),
                Span::styled("  status ", Style::new().fg(Color::DarkGray)),
                Span::raw(status_label(e)),
            ])];
            // What it does comes first, whatever the tool is called: changes that give the
            // bottle more in red, the rest in green.
            lines.push(Line::styled(
                "effect (what approving does, most dangerous first)",
                Style::new().add_modifier(Modifier::BOLD),
            ));
            match effect_of(e) {
                Ok(effect) => {
                    for change in &effect.changes {
                        let colour = if change.widens() {
                            Color::Red
                        } else {
                            Color::Green
                        };
                        lines.push(Line::styled(format!("  {change}"), Style::new().fg(colour)));
                    }
                }
                Err(why) => lines.push(Line::styled(
                    format!("  {why}"),
                    Style::new().fg(Color::Red),
                )),
            }
            if let Some(f) = &e.failure {
                lines.push(Line::styled(
                    format!("last approval failed to apply: {}", f.error),
                    Style::new().fg(Color::Red),
                ));
            }
            if app.is_stale(&p.id) {
                lines.push(Line::styled(
                    "the live routes changed since this arrived: approving replaces them with the proposed file",
                    Style::new().fg(Color::Yellow),
                ));
            }
            lines.push(Line::styled(
                "justification",
                Style::new().add_modifier(Modifier::BOLD),
            ));
            lines.extend(p.justification.lines().map(|l| Line::raw(format!("  {l}"))));
            let what = match p.tool {
                Tool::GitleaksAllow => "allowed finding",
                Tool::EgressTokenAllow => "token (host secret attached to the route)",
                Tool::DlpAllow => "dlp rule let through to the host's routes",
                _ => "routes.yaml: live -> proposed",
            };
            lines.push(Line::styled(
                what,
                Style::new().add_modifier(Modifier::BOLD),
            ));
            let current = p.current_file.as_deref().unwrap_or("");
            let current = if matches!(p.tool, Tool::EgressTokenAllow | Tool::DlpAllow) {
                ""
            } else {
                current
            };
            for l in diff::lines(current, &p.proposed_file) {
                let (prefix, style) = match l.kind {
                    diff::Kind::Same => (' ', Style::new()),
                    diff::Kind::Removed => ('-', Style::new().fg(Color::Red)),
                    diff::Kind::Added => ('+', Style::new().fg(Color::Green)),
                };
                lines.push(Line::styled(format!("{prefix} {}", l.text), style));
            }
            frame.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(detail_block.title(format!(" proposal {} ", p.id))),
                detail,
            );
        }
    }

    // The DLP hits take the detail pane while shown (`d`).
    if app.show_hits {
        let rows = hits.iter().map(|h| {
            let style = match h.action.as_str() {
                "blocked" => Style::new().fg(Color::Red),
                "redacted" => Style::new().fg(Color::Yellow),
                _ => Style::new(),
            };
            Row::new(vec![
                Cell::from(clock(&h.time).to_owned()),
                Cell::from(h.bottle.clone()),
                Cell::from(h.action.clone()),
                Cell::from(h.rule.clone()),
                Cell::from(h.place.clone()),
                Cell::from(format!("{} {}{}", h.method, h.host, h.path)),
            ])
            .style(style)
        });
        let table = Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(16),
                Constraint::Length(8),
                Constraint::Length(22),
                Constraint::Length(14),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(vec!["time", "bottle", "action", "rule", "where", "request"])
                .style(Style::new().add_modifier(Modifier::UNDERLINED)),
        )
        .block(
            Block::new()
                .borders(Borders::ALL)
                .title(" outbound dlp hits, newest first (the secret is never logged) "),
        );
        frame.render_widget(Clear, detail);
        if hits.is_empty() {
            frame.render_widget(
                Paragraph::new("No dlp hits: nothing egress scans has carried a secret.").block(
                    Block::new()
                        .borders(Borders::ALL)
                        .title(" outbound dlp hits "),
                ),
                detail,
            );
        } else {
            frame.render_widget(table, detail);
        }
    }

    // The confirm screen of an approval into the manifest: the diff takes the detail pane.
    if let Some((id, plan)) = &app.persist {
        let mut lines = vec![Line::styled(
            format!(
                "approve {id} for this bottle and write it into bottle {} of the manifest:",
                plan.bottle
            ),
            Style::new().add_modifier(Modifier::BOLD),
        )];
        for l in plan.diff().lines() {
            let style = match l.chars().next() {
                Some('+') => Style::new().fg(Color::Green),
                Some('-') => Style::new().fg(Color::Red),
                _ => Style::new(),
            };
            lines.push(Line::styled(l.to_owned(), style));
        }
        frame.render_widget(Clear, detail);
        frame.render_widget(
            Paragraph::new(lines).wrap(Wrap { trim: false }).block(
                Block::new()
                    .borders(Borders::ALL)
                    .title(" into the manifest "),
            ),
            detail,
        );
    }

    let footer_line = if app.persist.is_some() {
        Line::from(vec![
            Span::styled(
                "write this into the manifest and approve?",
                Style::new().fg(Color::Yellow),
            ),
            Span::styled(
                "  (y: write and approve, any other key: cancel)",
                Style::new().fg(Color::DarkGray),
            ),
        ])
    } else if let Some(text) = &app.duration {
        Line::from(vec![
            Span::styled("approve for: ", Style::new().fg(Color::Yellow)),
            Span::raw(format!("{text}_")),
            Span::styled(
                "  (30s, 10m, 2h, 1d; Enter: approve, Esc: cancel)",
                Style::new().fg(Color::DarkGray),
            ),
        ])
    } else if let Some(note) = &app.note {
        Line::from(vec![
            Span::styled("reject note: ", Style::new().fg(Color::Yellow)),
            Span::raw(format!("{note}_")),
            Span::styled(
                "  (Enter: reject, Esc: cancel)",
                Style::new().fg(Color::DarkGray),
            ),
        ])
    } else if app.confirm_quit {
        let n = app.waiting();
        let what = if n == 1 {
            "1 proposal is".to_owned()
        } else {
            format!("{n} proposals are")
        };
        Line::from(vec![
            Span::styled(
                format!("quit? {what} still waiting for you (they stay queued)"),
                Style::new().fg(Color::Yellow),
            ),
            Span::styled(
                "  (y: quit, n or Esc: stay)",
                Style::new().fg(Color::DarkGray),
            ),
        ])
    } else if let Some((tone, msg)) = &app.message {
        let style = match tone {
            Tone::Info => Style::new().fg(Color::Cyan),
            Tone::Error => Style::new().fg(Color::Red),
        };
        Line::styled(msg.clone(), style)
    } else {
        Line::styled(
            "a approve  o once  t for a while  p manifest  e edit  r reject  d dlp hits  f filter  j/k  q quit",
            Style::new().fg(Color::DarkGray),
        )
    };
    frame.render_widget(
        Paragraph::new(footer_line).wrap(Wrap { trim: false }),
        footer,
    );
}
