mod agent_headers;
mod change;
mod config;
mod files;
mod git;
mod gitleaks;
mod gitmodes;
mod hidden;
mod history;
mod packed;
mod packs;
mod sarif;

/// Joins the parts of a token so no well-formed secret sits in the repository.
pub fn tok(parts: &[&str]) -> String {
    parts.concat()
}

/// A fake GitHub classic token (the body is random-looking but made up).
pub fn github_token() -> String {
    tok(&["gh", "p_", "Zq8Lr2Xv5Nw1Tb7Kd4Hs9Mf3Pc6Gy0Ja2Ue5"])
}

/// A realistic AWS access key id (Nosey Parker's `np.aws.5` example, not an allowlisted
/// `EXAMPLE` key).
pub fn aws_key() -> String {
    tok(&["AKIA", "IDQJ6PTGDFFWYX7A"])
}
