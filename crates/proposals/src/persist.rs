//! Approving *into the manifest*: the routes an `egress-allow` proposal adds, written into
//! the project's manifest (the bottle's `egress.routes`) so the next bottle starts with
//! them. The operator confirms the diff first ([`plan`] computes it, nothing is written);
//! [`write()`] writes it only if the file is still what the operator saw.
//!
//! Only new hosts are written: a proposal that changes a route the bottle already has
//! (wider paths, a token) is refused here, since the manifest's route may come from a
//! parent bottle and editing it in place would change other bottles too.

use std::path::PathBuf;

use crate::Home;
use crate::proposal::{Decision, Proposal, Tool};
use crate::validate;

/// Why a proposal cannot be written into the manifest.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Not an `egress-allow`.
    #[error(
        "--persist writes routes into the manifest, and a {0} approval has none to write; approve it without --persist (for this bottle)"
    )]
    Tool(Tool),
    /// The proposal changes routes that exist.
    #[error(
        "the proposal changes the existing route(s) for {0}; --persist only adds routes for new hosts: approve it for this bottle and edit the manifest by hand"
    )]
    Changes(String),
    /// Nothing new.
    #[error("the proposal adds no route, so there is nothing to write into the manifest")]
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

/// Computes what `--persist` would write for proposal `p` (approved with `final_file`, if
/// the operator edited it). Reads the bottle's metadata and its manifest; writes nothing.
pub fn plan(
    home: &Home,
    p: &Proposal,
    decision: Decision,
    final_file: Option<&str>,
) -> Result<Plan, PersistError> {
    if p.tool != Tool::EgressAllow {
        return Err(PersistError::Tool(p.tool));
    }
    let other = |e: &dyn std::fmt::Display| PersistError::Other(e.to_string());
    let file = match (decision, final_file) {
        (Decision::Modified, Some(f)) => f,
        _ => p.proposed_file.as_str(),
    };
    let proposed = validate::parse_routes(file).map_err(|e| other(&e))?;
    let live = match p.current_file.as_deref() {
        Some(t) if !t.trim().is_empty() => crate::effect::parse_live(t).map_err(|e| other(&e))?,
        _ => policy::EgressConfig::default(),
    };
    let live_routes = live.routes.unwrap_or_default();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for r in proposed.routes.unwrap_or_default() {
        match live_routes
            .iter()
            .find(|l| l.host == r.host && l.port == r.port)
        {
            None => added.push(r),
            Some(l) if *l != r => changed.push(r.host.clone()),
            Some(_) => {}
        }
    }
    if !changed.is_empty() {
        return Err(PersistError::Changes(changed.join(", ")));
    }
    if added.is_empty() {
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
    let after =
        manifest::edit::add_routes(&before, &place, &added, &file).map_err(|e| other(&e))?;
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
