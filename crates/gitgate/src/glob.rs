//! Branch globs for `push_branches`: `*` matches within one path segment, `**` across
//! segments, `?` one character. Small on purpose: a branch rule must be easy to read.

/// A compiled branch glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
}

impl Glob {
    /// Checks and compiles a glob.
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("empty branch glob".into());
        }
        if pattern.starts_with("refs/") {
            return Err("write branch names without `refs/heads/`".into());
        }
        if pattern.chars().any(|c| c.is_control() || c == ' ') {
            return Err("branch globs cannot contain spaces or control characters".into());
        }
        Ok(Glob {
            pattern: pattern.chars().collect(),
        })
    }

    /// Whether a branch name (without `refs/heads/`) matches.
    pub fn matches(&self, branch: &str) -> bool {
        let text: Vec<char> = branch.chars().collect();
        matches_at(&self.pattern, &text)
    }
}

fn matches_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = &p[2..];
            (0..=t.len()).any(|i| matches_at(rest, &t[i..]))
        }
        Some('*') => {
            let rest = &p[1..];
            for i in 0..=t.len() {
                if matches_at(rest, &t[i..]) {
                    return true;
                }
                if t.get(i) == Some(&'/') {
                    break;
                }
            }
            false
        }
        Some('?') => t.first().is_some_and(|c| *c != '/') && matches_at(&p[1..], &t[1..]),
        Some(c) => t.first() == Some(c) && matches_at(&p[1..], &t[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_in_one_segment() {
        let g = Glob::new("agent/*").unwrap();
        assert!(g.matches("agent/fix-1"));
        assert!(!g.matches("agent/a/b"));
        assert!(!g.matches("main"));
        assert!(!g.matches("agent"));
    }

    #[test]
    fn double_star_crosses_segments() {
        let g = Glob::new("agent/**").unwrap();
        assert!(g.matches("agent/a/b"));
        assert!(Glob::new("main").unwrap().matches("main"));
        assert!(!Glob::new("main").unwrap().matches("main2"));
        assert!(Glob::new("v?").unwrap().matches("v1"));
    }

    #[test]
    fn refs_prefix_is_rejected() {
        assert!(Glob::new("refs/heads/main").is_err());
        assert!(Glob::new("").is_err());
    }
}
