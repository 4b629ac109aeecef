//! What travels through the queue: a proposal from the agent, the operator's response,
//! and the outcome once the change is in effect.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::grant::Grant;

/// A tool whose calls become proposals for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Tool {
    /// Replace the live routes with a wider set.
    #[serde(rename = "egress-allow")]
    EgressAllow,
    /// Replace the live routes with a narrower set.
    #[serde(rename = "egress-block")]
    EgressBlock,
    /// Attach a named host secret to a route.
    #[serde(rename = "egress-token-allow")]
    EgressTokenAllow,
    /// Allow one secret-scan finding for this bottle.
    #[serde(rename = "gitleaks-allow")]
    GitleaksAllow,
    /// Let one outbound DLP rule through to one host for this bottle.
    #[serde(rename = "dlp-allow")]
    DlpAllow,
}

impl Tool {
    /// Every queued tool.
    pub const ALL: [Tool; 5] = [
        Tool::EgressAllow,
        Tool::EgressBlock,
        Tool::EgressTokenAllow,
        Tool::GitleaksAllow,
        Tool::DlpAllow,
    ];

    /// The MCP tool name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tool::EgressAllow => "egress-allow",
            Tool::EgressBlock => "egress-block",
            Tool::EgressTokenAllow => "egress-token-allow",
            Tool::GitleaksAllow => "gitleaks-allow",
            Tool::DlpAllow => "dlp-allow",
        }
    }

    /// The audit-log component the decision is recorded under.
    pub fn component(self) -> &'static str {
        match self {
            Tool::GitleaksAllow => "gitleaks",
            _ => "egress",
        }
    }

    /// File name suffix for editing the proposed file (`$EDITOR` picks its mode by it).
    pub fn file_suffix(self) -> &'static str {
        match self {
            Tool::GitleaksAllow => ".txt",
            _ => ".yaml",
        }
    }

    /// Parses an MCP tool name.
    pub fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request of the agent, waiting for the operator. Stored as `queue/<identity>/<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Lower-case hex id, unique in the home.
    pub id: String,
    /// When the proposal arrived (UTC, RFC 3339 with microseconds; sorts as text).
    pub arrival_timestamp: String,
    /// The bottle identity that asked.
    pub bottle_slug: String,
    /// Which tool was called.
    pub tool: Tool,
    /// The full proposed file: `routes.yaml` for egress tools, `host:`/`token_name:` YAML
    /// for `egress-token-allow`, the allowlist line for `gitleaks-allow`.
    pub proposed_file: String,
    /// The agent's reason, shown to the operator.
    pub justification: String,
    /// sha256 (hex) of the file the proposal replaces, as it was when the proposal arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_file_hash: Option<String>,
    /// That file's content, so the operator sees the diff even once the bottle is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_file: Option<String>,
    /// The tool's structured arguments (without the justification), for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Value>,
}

/// The operator's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Apply the proposed file as it is.
    Approved,
    /// Apply the operator's edited file (`final_file`).
    Modified,
    /// Apply nothing.
    Rejected,
}

impl Decision {
    /// Lower-case name as written in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Modified => "modified",
            Decision::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operator's answer. Stored as `queue/<identity>/<id>.response.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The proposal it answers.
    pub id: String,
    /// approved, modified or rejected.
    pub status: Decision,
    /// The operator's file; required for `modified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_file: Option<String>,
    /// A note for the agent and the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Who decided (`$USER` of the operator).
    pub operator: String,
    /// When (UTC, RFC 3339).
    pub responded_at: String,
    /// Whether the decision was written to the audit log when it was made (the engine then
    /// records only whether it took effect). Absent on responses of older versions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audited: bool,
    /// How long the approval holds; absent means for the bottle (older responses).
    #[serde(default, skip_serializing_if = "Grant::is_bottle")]
    pub grant: Grant,
}

/// What happened to a handled proposal. Stored as `processed/<id>.outcome.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The proposal.
    pub id: String,
    /// The decision, now in effect.
    pub status: Decision,
    /// The file that was applied (absent for rejections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_file: Option<String>,
    /// The operator's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Who decided.
    pub operator: String,
    /// When the operator decided.
    pub decided_at: String,
    /// When the change took effect (absent for rejections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// How long the approval holds; absent means for the bottle.
    #[serde(default, skip_serializing_if = "Grant::is_bottle")]
    pub grant: Grant,
    /// When a grant `for` a duration ends (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// An approval whose apply failed; the proposal stays pending.
/// Stored as `queue/<identity>/<id>.apply-error.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyFailure {
    /// The proposal.
    pub id: String,
    /// Why applying failed.
    pub error: String,
    /// Who approved.
    pub operator: String,
    /// When applying failed.
    pub at: String,
}

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Waiting for the operator.
    Pending,
    /// The operator answered; the bottle's supervise server has not applied it yet.
    Answered,
    /// The operator approved but applying failed; waiting for the operator again.
    ApplyFailed,
    /// Handled: approved and in effect.
    Approved,
    /// Handled: the operator's version is in effect.
    Modified,
    /// Handled: rejected.
    Rejected,
}

impl Status {
    /// Name as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Answered => "answered",
            Status::ApplyFailed => "apply-failed",
            Status::Approved => "approved",
            Status::Modified => "modified",
            Status::Rejected => "rejected",
        }
    }
}

impl From<Decision> for Status {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Approved => Status::Approved,
            Decision::Modified => Status::Modified,
            Decision::Rejected => Status::Rejected,
        }
    }
}

/// sha256 of a text, lower-case hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Now, in the format every supervise timestamp uses (sorts as text).
pub fn now_timestamp() -> String {
    format_timestamp(time::OffsetDateTime::now_utc())
}

/// Formats a UTC time as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_timestamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// A fresh proposal id: 16 lower-case hex digits.
pub fn new_id() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn timestamps_sort_as_text() {
        let t = time::macros::datetime!(2026-05-25 12:00:01.5 UTC);
        assert_eq!(format_timestamp(t), "2026-05-25T12:00:01.500000Z");
    }

    #[test]
    fn proposal_round_trips_with_design_field_names() {
        let p = Proposal {
            id: "00aa".into(),
            arrival_timestamp: "2026-05-25T12:00:00.000000Z".into(),
            bottle_slug: "dev-00001".into(),
            tool: Tool::EgressAllow,
            proposed_file: "routes: []\n".into(),
            justification: "why".into(),
            current_file_hash: Some("h".into()),
            current_file: None,
            args: None,
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "00aa",
                "arrival_timestamp": "2026-05-25T12:00:00.000000Z",
                "bottle_slug": "dev-00001",
                "tool": "egress-allow",
                "proposed_file": "routes: []\n",
                "justification": "why",
                "current_file_hash": "h"
            })
        );
        let back: Proposal = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }
}
