//! Reading `routes.yaml`: YAML text to [`EgressConfig`], with errors that name the file,
//! the line and what is wrong. Validation of the values is a separate step
//! ([`crate::validate()`]).

use std::path::{Path, PathBuf};

use crate::raw::EgressConfig;

/// Why a routes file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The file could not be read.
    #[error("cannot read routes file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed or does not have the shape of an `egress:` block.
    #[error("{}{}: {message}", path.display(), line.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Yaml {
        /// The file (or a label such as `<routes>` for text not read from a file).
        path: PathBuf,
        /// Line and column (1-based) when known.
        line: Option<(u64, u64)>,
        /// What is wrong.
        message: String,
    },
}

/// Parses routes YAML text. `source` names where it came from in error messages.
pub fn parse_routes(text: &str, source: &Path) -> Result<EgressConfig, ParseError> {
    if text.trim().is_empty() {
        return Ok(EgressConfig::default());
    }
    serde_saphyr::from_str::<EgressConfig>(text).map_err(|err| {
        let line = err.location().map(|l| (l.line(), l.column()));
        let message = err.without_snippet().to_string();
        ParseError::Yaml {
            path: source.to_path_buf(),
            line,
            message: first_line(&message),
        }
    })
}

/// Reads and parses a routes file.
pub fn load_routes_file(path: &Path) -> Result<EgressConfig, ParseError> {
    let text =
        state::read::read_limited_to_string(path, state::read::CONFIG_LIMIT).map_err(|source| {
            ParseError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
    parse_routes(&text, path)
}

fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or("invalid yaml").trim();
    // The location is already in front of the message; drop the library's own copy.
    match line.rfind(" at line ") {
        Some(i) => line[..i].to_string(),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::{PathMatch, PathMatchKind, Route, RouteMatch};
    use pretty_assertions::assert_eq;

    #[test]
    fn parses_a_routes_file() {
        let text = "log: all\nroutes:\n  - host: api.example.com\n    auth_scheme: Bearer\n    token_env: TOKEN\n    matches:\n      - paths: [{type: prefix, value: /v1/}]\n        methods: [GET]\n";
        let config = parse_routes(text, Path::new("routes.yaml")).unwrap();
        assert_eq!(
            config,
            EgressConfig {
                log: Some(crate::LogMode::All),
                upstream_ca: None,
                routes: Some(vec![Route {
                    host: "api.example.com".into(),
                    websocket: None,
                    dangerously_raw_paths: None,
                    expires: None,
                    uses: None,
                    grant: None,
                    after_grant: None,
                    dlp: None,
                    dlp_allow: None,
                    dlp_allow_grants: None,
                    dangerously_dlp_pass_unscannable: None,
                    port: None,
                    auth_scheme: Some("Bearer".into()),
                    token_env: Some("TOKEN".into()),
                    auth_header: None,
                    connect_to: None,
                    matches: Some(vec![RouteMatch {
                        paths: Some(vec![PathMatch {
                            kind: PathMatchKind::Prefix,
                            value: "/v1/".into()
                        }]),
                        methods: Some(vec!["GET".into()]),
                        headers: None,
                    }]),
                }]),
            }
        );
    }

    #[test]
    fn unknown_field_names_file_and_line() {
        let text = "routes:\n  - host: a.example\n    hots: b\n";
        let err = parse_routes(text, Path::new("/x/routes.yaml")).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("/x/routes.yaml:3:"), "{shown}");
        assert!(shown.contains("hots"), "{shown}");
        assert_eq!(
            shown,
            "/x/routes.yaml:3:5: unknown field `hots`, expected one of host, port, auth_scheme, token_env, auth_header, connect_to, matches, websocket, dangerously_raw_paths, expires, uses, grant, after_grant, dlp, dlp_allow, dlp_allow_grants, dangerously_dlp_pass_unscannable"
        );
    }

    #[test]
    fn empty_text_is_no_routes() {
        assert_eq!(
            parse_routes("", Path::new("r")).unwrap(),
            EgressConfig::default()
        );
    }
}
