//! The one check for names that become path components under the home.
//!
//! A bottle identity or a proposal id arrives from the agent (MCP arguments), from the
//! operator (CLI arguments) or from a directory listing; every one is checked here before it
//! is joined to a path, so a hostile value (`..`, `a/b`, a leading dot) can never walk out
//! of `$BOT_BOTTLE_HOME`.

/// A name that is not safe as a path component.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// A bottle identity with characters other than `a-z`, `0-9`, `-`, `_`, `.`.
    #[error("invalid bottle identity {0:?}: use lower-case letters, digits, '-', '_' or '.'")]
    Identity(String),
    /// A proposal id that is not 6 to 64 lower-case hex digits.
    #[error(
        "invalid proposal id {0:?}: ids are lower-case hex, as printed by `bot-bottle proposals list`"
    )]
    ProposalId(String),
}

/// Checks a bottle identity as a path component (`<agent>-<5 hex>`, or any safe name in
/// tests): lower-case letters, digits, `-`, `_`, `.`, not leading `.`, at most 128 bytes.
pub fn check_identity(identity: &str) -> Result<(), NameError> {
    let ok = !identity.is_empty()
        && identity.len() <= 128
        && !identity.starts_with('.')
        && identity
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NameError::Identity(identity.to_owned()))
    }
}

/// Checks a proposal id: 6 to 64 lower-case hex digits.
pub fn check_proposal_id(id: &str) -> Result<(), NameError> {
    let ok = (6..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NameError::ProposalId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_and_ids_cannot_escape_the_home() {
        assert!(check_identity("claude-1a2b3").is_ok());
        for bad in ["", "..", "../x", "a/b", ".hidden", "Upper", "a b"] {
            assert!(check_identity(bad).is_err(), "{bad}");
        }
        assert!(check_proposal_id("0123abcd").is_ok());
        for bad in ["", "abc", "../../etc", "ABCDEF12", "0123abcg"] {
            assert!(check_proposal_id(bad).is_err(), "{bad}");
        }
    }
}
