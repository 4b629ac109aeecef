//! A bottle's identity: `<agent>-<5 hex>`, e.g. `fixer-3fa9c`.

use std::fmt;

/// Why a string is not a bottle identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not of the form `<agent>-<5 lowercase hex digits>`.
    #[error(
        "`{0}` is not a bottle identity: expected <agent>-<5 hex digits> such as fixer-3fa9c (see `bot-bottle list`)"
    )]
    Malformed(String),
    /// The agent name cannot be part of an identity.
    #[error(
        "agent name `{0}` cannot name a bottle: use letters, digits, `_` and `-`, starting with a letter or digit"
    )]
    BadAgentName(String),
}

/// A validated bottle identity. It is safe to use as a single path component.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Identity(String);

impl Identity {
    /// A new identity for `agent` with a random 5-hex suffix.
    pub fn generate(agent: &str) -> Result<Self, IdentityError> {
        check_agent(agent)?;
        let suffix = rand::random::<u32>() & 0xf_ffff;
        Ok(Self(format!("{agent}-{suffix:05x}")))
    }

    /// Parses and validates an identity given by a user.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let malformed = || IdentityError::Malformed(s.to_string());
        let (agent, suffix) = s.rsplit_once('-').ok_or_else(malformed)?;
        let hex = suffix.len() == 5
            && suffix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex || check_agent(agent).is_err() {
            return Err(malformed());
        }
        Ok(Self(s.to_string()))
    }

    /// The agent part.
    pub fn agent(&self) -> &str {
        self.0.rsplit_once('-').map_or(self.0.as_str(), |(a, _)| a)
    }

    /// The identity as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Identity {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Identity::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn check_agent(agent: &str) -> Result<(), IdentityError> {
    let ok = !agent.is_empty()
        && agent.len() <= 64
        && agent
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && agent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadAgentName(agent.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn generated_identities_parse_back() {
        for _ in 0..100 {
            let id = Identity::generate("fixer").unwrap();
            assert_eq!(Identity::parse(id.as_str()).unwrap(), id);
            assert_eq!(id.agent(), "fixer");
        }
    }

    #[test]
    fn agent_names_with_dashes_keep_their_dashes() {
        let id = Identity::parse("code-review-0a1b2").unwrap();
        assert_eq!(id.agent(), "code-review");
    }

    #[test]
    fn malformed_identities_are_refused_with_a_hint() {
        for bad in [
            "fixer",
            "fixer-3fa9",
            "fixer-3FA9C",
            "fixer-3fa9g",
            "-3fa9c",
            "../x-3fa9c",
            "a/b-3fa9c",
            "",
        ] {
            let err = Identity::parse(bad).unwrap_err();
            assert_eq!(err, IdentityError::Malformed(bad.to_string()));
        }
        assert_eq!(
            Identity::parse("fixer").unwrap_err().to_string(),
            "`fixer` is not a bottle identity: expected <agent>-<5 hex digits> such as fixer-3fa9c (see `bot-bottle list`)"
        );
    }

    #[test]
    fn agent_names_that_are_not_path_safe_are_refused() {
        for bad in ["", "../etc", "a b", ".hidden", "x/y"] {
            assert_eq!(
                Identity::generate(bad).unwrap_err(),
                IdentityError::BadAgentName(bad.to_string())
            );
        }
    }
}
