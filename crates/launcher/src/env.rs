//! The host environment as the launcher sees it.
//!
//! Which tokens a bottle's routes can carry depends on which host variables are set, and the
//! sidecar bundle gets their values: the launcher reads them through [`HostEnv`], given in
//! [`Options`](crate::Options), never from the process directly. The binary passes
//! [`HostEnv::Process`]; a test passes a [`HostEnv::Map`] and knows exactly which tokens the
//! bottle has, whatever the machine running it exports.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// Where the launcher reads host variables from.
#[derive(Debug, Clone, Default)]
pub enum HostEnv {
    /// This process's environment.
    #[default]
    Process,
    /// These variables and no others.
    Map(BTreeMap<String, OsString>),
}

impl HostEnv {
    /// A map of these variables and no others.
    pub fn map<K: Into<String>, V: Into<OsString>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        HostEnv::Map(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The variable's value, if set.
    pub fn var_os(&self, name: &str) -> Option<OsString> {
        match self {
            HostEnv::Process => std::env::var_os(name),
            HostEnv::Map(vars) => vars.get(name).cloned(),
        }
    }

    /// The variable's value, if set and valid UTF-8.
    pub fn var(&self, name: &str) -> Option<String> {
        self.var_os(name).and_then(|v| v.into_string().ok())
    }

    /// Whether the variable is set and not empty (a token that can be used).
    pub fn is_set(&self, name: &str) -> bool {
        self.var_os(name).is_some_and(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_is_the_whole_environment() {
        let env = HostEnv::map([("TOKEN", "t"), ("EMPTY", "")]);
        assert_eq!(env.var("TOKEN"), Some("t".to_owned()));
        assert!(env.is_set("TOKEN"));
        assert!(!env.is_set("EMPTY"));
        assert_eq!(env.var_os("PATH"), None);
    }
}
