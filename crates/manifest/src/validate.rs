//! Checks on single values. Strings that end up in the agent's gitconfig or in file names
//! must not smuggle in extra lines or path tricks.

/// Describes the first control character in `s`, if any.
pub(crate) fn control_char(s: &str) -> Option<&'static str> {
    s.chars().find(|c| c.is_control()).map(|c| match c {
        '\n' => "a newline",
        '\r' => "a carriage return",
        '\0' => "a NUL byte",
        '\t' => "a tab",
        _ => "a control character",
    })
}

/// A name used in file paths and URLs (bottles, agents, repositories):
/// `[A-Za-z0-9._-]+`, not starting with `.`.
pub(crate) fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether a git URL reaches its upstream over SSH: `ssh://…` or scp-like `[user@]host:path`.
pub(crate) fn is_ssh_url(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return scheme.eq_ignore_ascii_case("ssh") || scheme.eq_ignore_ascii_case("git+ssh");
    }
    match url.find(':') {
        // scp-like syntax needs the colon before any slash (`./a:b` is a path).
        Some(colon) => !url[..colon].contains('/') && colon > 0,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn control_chars() {
        assert_eq!(control_char("Bot"), None);
        assert_eq!(control_char("a\nb"), Some("a newline"));
        assert_eq!(control_char("a\rb"), Some("a carriage return"));
        assert_eq!(control_char("a\0b"), Some("a NUL byte"));
        assert_eq!(control_char("a\u{1b}b"), Some("a control character"));
    }

    #[test]
    fn names() {
        assert!(is_safe_name("app.v2_x-y"));
        assert!(!is_safe_name(".hidden"));
        assert!(!is_safe_name(""));
        assert!(!is_safe_name("a/b"));
        assert!(!is_safe_name("a b"));
        assert!(is_env_name("_A1"));
        assert!(!is_env_name("1A"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }

    #[test]
    fn ssh_urls() {
        assert!(is_ssh_url("ssh://git@github.com/org/app.git"));
        assert!(is_ssh_url("git@github.com:org/app.git"));
        assert!(!is_ssh_url("/srv/git/app.git"));
        assert!(!is_ssh_url("file:///srv/git/app.git"));
        assert!(!is_ssh_url("./a:b"));
        assert!(!is_ssh_url("https://example.com/app.git"));
    }
}
