//! Approving *into the manifest*: what an approval changes in the bottle's routes, written
//! into the project's manifest (the bottle's `egress.routes`) so the next bottle starts
//! with it. The operator confirms the diff first ([`plan`] computes it, nothing is
//! written); [`write()`] writes it only if the file is still what the operator saw.
//!
//! Every routes kind can be written: a route for a new host is added to the bottle's list;
//! a route the approval changes (wider paths or methods from `egress-allow`, a secret from
//! `egress-token-allow`, a rule from `dlp-allow`, a narrower route from `egress-block`) is
//! replaced where the bottle lists it, and one the approval removes is taken out. A route
//! the bottle does not list itself (it comes from a parent bottle, or the agent provider's
//! implicit route) is refused with the reason: changing it in the parent would change other
//! bottles too. A `gitleaks-allow` cannot be written (see [`crate::grant::check`]).

use std::path::PathBuf;

use crate::Home;
use crate::proposal::{Decision, Proposal};
use crate::validate::{self, Payload};

/// Why a proposal cannot be written into the manifest.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The kind cannot be written into the manifest, and why.
    #[error(transparent)]
    Unsupported(#[from] crate::grant::Unsupported),
    /// Nothing changes in the routes.
    #[error("the proposal changes no route, so there is nothing to write into the manifest")]
    Nothing,
    /// The bottle's metadata says no manifest.
    #[error(
        "bottle {0} was not started from a manifest file or directory, so there is none to write into; approve it without --persist"
    )]
    NoManifest(String),
    /// Any other cause, with its context.
    #[error("{0}")]
    Other(String),
}

/// What writing into the manifest will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The file to write.
    pub file: PathBuf,
    /// The bottle in the manifest.
    pub bottle: String,
    /// The file as it is.
    pub before: String,
    /// The file as it will be.
    pub after: String,
}

impl Plan {
    /// The change as a unified-style diff of the lines around it.
    pub fn diff(&self) -> String {
        let mut out = format!("--- {}\n+++ {}\n", self.file.display(), self.file.display());
        let old: Vec<&str> = self.before.lines().collect();
        let new: Vec<&str> = self.after.lines().collect();
        // One insertion block (and the line it may rewrite): common prefix and suffix.
        let pre = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
        let suf = old[pre..]
            .iter()
            .rev()
            .zip(new[pre..].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let from = pre.saturating_sub(3);
        out.push_str(&format!("@@ line {} @@\n", from + 1));
        for l in &old[from..pre] {
            out.push_str(&format!(" {l}\n"));
        }
        for l in &old[pre..old.len() - suf] {
            out.push_str(&format!("-{l}\n"));
        }
        for l in &new[pre..new.len() - suf] {
            out.push_str(&format!("+{l}\n"));
        }
        for l in old[old.len() - suf..].iter().take(3) {
            out.push_str(&format!(" {l}\n"));
        }
        out
    }
}

/// What approving `p` (with `final_file`, if the operator edited it) does to the routes:
/// the live routes it was proposed against, and the routes after.
fn routes_change(
    p: &Proposal,
    decision: Decision,
    final_file: Option<&str>,
) -> Result<(policy::EgressConfig, policy::EgressConfig), PersistError> {
    let other = |e: &dyn std::fmt::Display| PersistError::Other(e.to_string());
    let file = match (decision, final_file) {
        (Decision::Modified, Some(f)) => f,
        _ => p.proposed_file.as_str(),
    };
    let live = match p.current_file.as_deref() {
        Some(t) if !t.trim().is_empty() => crate::effect::parse_live(t).map_err(|e| other(&e))?,
        _ => policy::EgressConfig::default(),
    };
    let after = match validate::parse_payload(p.tool, file).map_err(|e| other(&e))? {
        Payload::Routes(proposed) => proposed,
        Payload::Token(t) => {
            crate::effect::attach_token(&live, &t.host, &t.token_name).map_err(|e| other(&e))?
        }
        Payload::DlpAllow(r) => {
            crate::dlp::allow_dlp_rule(&live, &r.host, &r.rule).map_err(|e| other(&e))?
        }
        Payload::Finding(_) => return Err(other(&"an allowed finding has no route to write")),
    };
    Ok((live, after))
}

/// Computes what `--persist` would write for proposal `p` (approved with `final_file`, if
/// the operator edited it). Reads the bottle's metadata and its manifest; writes nothing.
pub fn plan(
    home: &Home,
    p: &Proposal,
    decision: Decision,
    final_file: Option<&str>,
) -> Result<Plan, PersistError> {
    crate::grant::check(p.tool, crate::Grant::Persist)?;
    let other = |e: &dyn std::fmt::Display| PersistError::Other(e.to_string());
    let (live, proposed) = routes_change(p, decision, final_file)?;
    let same = |a: &policy::Route, b: &policy::Route| {
        a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port
    };
    let live_routes = live.routes.unwrap_or_default();
    let proposed_routes = proposed.routes.unwrap_or_default();
    // What a manifest route says holds for every bottle made from it: a grant of this
    // bottle's (its end, its count, what it goes back to) is never written there.
    let durable = |r: &policy::Route| policy::Route {
        expires: None,
        uses: None,
        grant: None,
        after_grant: None,
        dlp_allow_grants: None,
        ..r.clone()
    };
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for r in &proposed_routes {
        match live_routes.iter().find(|l| same(l, r)) {
            None => added.push(durable(r)),
            Some(l) if l != r => changed.push((r.host.clone(), r.port, Some(durable(r)))),
            Some(_) => {}
        }
    }
    let removed = live_routes
        .iter()
        .filter(|l| !proposed_routes.iter().any(|r| same(l, r)))
        .map(|l| (l.host.clone(), l.port, None));
    changed.extend(removed);
    if added.is_empty() && changed.is_empty() {
        return Err(PersistError::Nothing);
    }
    let identity = state::Identity::parse(&p.bottle_slug).map_err(|e| other(&e))?;
    let meta = home.read_metadata(&identity).map_err(|e| other(&e))?;
    let Some(manifest_path) = meta.manifest else {
        return Err(PersistError::NoManifest(p.bottle_slug.clone()));
    };
    let loaded = manifest::Manifest::load(&manifest_path).map_err(|e| other(&e))?;
    let bottle = loaded
        .agent(&meta.agent)
        .map_err(|e| other(&e))?
        .bottle_name;
    let (file, place) = manifest::edit::bottle_file(&manifest_path, &bottle);
    let before = state::read::read_limited_to_string(&file, state::read::CONFIG_LIMIT)
        .map_err(|e| other(&e))?;
    let mut after = before.clone();
    for (host, port, route) in &changed {
        after = manifest::edit::replace_route(&after, &place, host, *port, route.as_ref(), &file)
            .map_err(|e| other(&e))?;
    }
    if !added.is_empty() {
        after = manifest::edit::add_routes(&after, &place, &added, &file).map_err(|e| other(&e))?;
    }
    Ok(Plan {
        file,
        bottle: bottle.clone(),
        before,
        after,
    })
}

/// Writes the plan if the file is still as planned, keeping its permissions.
pub fn write(plan: &Plan) -> Result<(), PersistError> {
    let now = std::fs::read_to_string(&plan.file)
        .map_err(|e| PersistError::Other(format!("cannot read {}: {e}", plan.file.display())))?;
    if now != plan.before {
        return Err(PersistError::Other(format!(
            "{} changed since the diff was shown; nothing was written there, run the approval again",
            plan.file.display()
        )));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&plan.file)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    state::atomic_write_mode(&plan.file, plan.after.as_bytes(), mode)
        .map_err(|e| PersistError::Other(format!("cannot write {}: {e}", plan.file.display())))
}
