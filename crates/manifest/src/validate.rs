//! Checks on single values. Strings that end up in the agent's gitconfig or in file names
//! must not smuggle in extra lines or path tricks; resource limits must be sizes a backend
//! can enforce.

use crate::raw::Scalar;

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

/// `resources.cpus`: a number of CPUs between 0.01 and 1024, in thousandths of a CPU.
pub(crate) fn parse_cpus(v: &Scalar) -> Result<u32, String> {
    let cpus = match v {
        Scalar::Int(i) => *i as f64,
        Scalar::Float(f) => *f,
        Scalar::Str(s) => s.trim().parse::<f64>().map_err(|_| {
            format!(
                "must be a number of CPUs such as `1.5`, found the string `{}`",
                s.escape_debug()
            )
        })?,
        Scalar::Other(kind) => {
            return Err(format!(
                "must be a number of CPUs such as `1.5`, found {kind}"
            ));
        }
    };
    if !(0.01..=1024.0).contains(&cpus) {
        return Err(format!("must be between 0.01 and 1024 CPUs, found {cpus}"));
    }
    Ok((cpus * 1000.0).round() as u32)
}

/// The smallest `resources.memory` accepted: a bottle needs room for its init and a shell.
pub(crate) const MIN_MEMORY: u64 = 32 << 20;
/// The largest `resources.memory` accepted (1 PiB).
pub(crate) const MAX_MEMORY: u64 = 1 << 50;

/// `resources.memory`: `2GiB`, `512MiB`, `2G`, `1.5GiB` (binary units: K, M, G, T with or
/// without `iB`) or a whole number of bytes; between 32 MiB and 1 PiB.
pub(crate) fn parse_memory(v: &Scalar) -> Result<u64, String> {
    const HINT: &str = "write a size such as `2GiB` or `512MiB` (binary units K, M, G, T, \
                        optionally with `iB`) or a number of bytes";
    let bytes: f64 = match v {
        Scalar::Int(i) => *i as f64,
        Scalar::Float(f) => *f,
        Scalar::Str(s) => {
            let t = s.trim();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(t.len());
            let (number, unit) = t.split_at(split);
            let shift = match unit.trim_start() {
                "" | "B" => 0,
                "K" | "k" | "Ki" | "KiB" => 10,
                "M" | "m" | "Mi" | "MiB" => 20,
                "G" | "g" | "Gi" | "GiB" => 30,
                "T" | "t" | "Ti" | "TiB" => 40,
                "KB" | "kB" | "MB" | "GB" | "TB" => {
                    return Err(format!(
                        "`{}` is ambiguous (decimal or binary?); write {}iB instead",
                        s.escape_debug(),
                        &unit.trim_start()[..1].to_ascii_uppercase()
                    ));
                }
                _ => return Err(format!("`{}` is not a size; {HINT}", s.escape_debug())),
            };
            let n: f64 = number
                .parse()
                .map_err(|_| format!("`{}` is not a size; {HINT}", s.escape_debug()))?;
            n * (1u64 << shift) as f64
        }
        Scalar::Other(kind) => return Err(format!("must be a size, found {kind}; {HINT}")),
    };
    if !bytes.is_finite() || bytes < MIN_MEMORY as f64 || bytes > MAX_MEMORY as f64 {
        return Err(format!(
            "must be between 32MiB and 1PiB, found {}",
            match v {
                Scalar::Str(s) => format!("`{}`", s.escape_debug()),
                _ => format!("{bytes} bytes"),
            }
        ));
    }
    Ok(bytes as u64)
}

/// The smallest `resources.pids` accepted: the bottle's own init and helper count too.
pub(crate) const MIN_PIDS: i128 = 16;
/// The largest `resources.pids` accepted (the kernel's `pid_max` ceiling).
pub(crate) const MAX_PIDS: i128 = 4_194_304;

/// `resources.pids`: a whole number of processes between 16 and 4194304.
pub(crate) fn parse_pids(v: &Scalar) -> Result<u32, String> {
    let n = match v {
        Scalar::Int(i) => *i,
        Scalar::Str(s) => s.trim().parse::<i128>().map_err(|_| {
            format!(
                "must be a whole number of processes, found the string `{}`",
                s.escape_debug()
            )
        })?,
        Scalar::Float(f) => {
            return Err(format!("must be a whole number of processes, found {f}"));
        }
        Scalar::Other(kind) => {
            return Err(format!("must be a whole number of processes, found {kind}"));
        }
    };
    if !(MIN_PIDS..=MAX_PIDS).contains(&n) {
        return Err(format!(
            "must be between {MIN_PIDS} and {MAX_PIDS} processes, found {n}"
        ));
    }
    Ok(n as u32)
}

/// Bytes as the manifest writes them: the largest binary unit that divides them exactly.
pub(crate) fn format_memory(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Every problem of a generic provider's description, each naming the field and the fix.
pub(crate) fn generic_provider_problems(g: &crate::raw::GenericSpec) -> Vec<String> {
    let mut out = Vec::new();
    match g.command.first() {
        None => out.push(
            "agent_provider.command is empty; name the agent's program and its arguments, e.g. `command: [my-agent, --yes]`"
                .to_string(),
        ),
        Some(p) if p.trim().is_empty() => out.push(
            "agent_provider.command[0] is empty; it is the agent's program".to_string(),
        ),
        Some(_) => {}
    }
    for (i, arg) in g.command.iter().enumerate() {
        if arg.contains('\0') {
            out.push(format!("agent_provider.command[{i}] contains a NUL byte"));
        }
    }
    let mut hosts = std::collections::BTreeSet::new();
    for (i, api) in g.model_api.iter().enumerate() {
        let at = format!("agent_provider.model_api[{i}]");
        if !is_host(&api.host) {
            out.push(format!(
                "{at}.host `{}` is not a host name; write the API's host alone, e.g. `api.mistral.ai` (no scheme, port or path)",
                api.host.escape_debug()
            ));
        } else if !hosts.insert(api.host.to_ascii_lowercase()) {
            out.push(format!(
                "{at}.host `{}` is listed twice; one host takes one credential",
                api.host
            ));
        }
        if !is_env_name(&api.token_env) {
            out.push(format!(
                "{at}.token_env `{}` is not an environment variable name; name the HOST variable holding the key (letters, digits and `_`)",
                api.token_env.escape_debug()
            ));
        }
        if let Some(h) = &api.auth_header
            && !is_header_name(h)
        {
            out.push(format!(
                "{at}.auth_header `{}` is not an HTTP header name (letters, digits and `-`), e.g. `x-api-key`",
                h.escape_debug()
            ));
        }
        if let Some(scheme) = &api.auth_scheme
            && (scheme.is_empty() || scheme.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            out.push(format!(
                "{at}.auth_scheme `{}` must be one word, e.g. `Bearer`; leave it out to send the bare key",
                scheme.escape_debug()
            ));
        }
        if let Some(env) = &api.env
            && !is_env_name(env)
        {
            out.push(format!(
                "{at}.env `{}` is not an environment variable name; name the variable the agent reads its key from",
                env.escape_debug()
            ));
        }
    }
    if let Some(mcp) = &g.mcp {
        if let Some(problem) = home_relative_problem(&mcp.file) {
            out.push(format!("agent_provider.mcp.file {problem}"));
        } else if !(mcp.file.ends_with(".json") || mcp.file.ends_with(".toml")) {
            out.push(format!(
                "agent_provider.mcp.file `{}` is neither `.json` nor `.toml`; bot-bottle writes the MCP registration in one of those formats",
                mcp.file
            ));
        }
        if mcp.key.is_empty() || mcp.key.split('.').any(str::is_empty) {
            out.push(format!(
                "agent_provider.mcp.key `{}` is not a dotted key; name the table of servers, e.g. `mcpServers` or `mcp.servers`",
                mcp.key.escape_debug()
            ));
        }
        if let Some(entry) = &mcp.entry
            && !entry.is_object()
        {
            out.push(
                "agent_provider.mcp.entry is not a mapping; write the server's entry, e.g. `{type: http, url: \"{url}\"}`"
                    .to_string(),
            );
        }
    }
    if let Some(path) = &g.instructions
        && let Some(problem) = home_relative_problem(path)
    {
        out.push(format!("agent_provider.instructions {problem}"));
    }
    out
}

/// Why `path` is not a file path under the agent's home, if it is not.
fn home_relative_problem(path: &str) -> Option<String> {
    let p = std::path::Path::new(path);
    if path.is_empty() || control_char(path).is_some() {
        return Some(format!(
            "`{}` is not a path; write a file path relative to the agent's home, e.g. `.config/agent/mcp.json`",
            path.escape_debug()
        ));
    }
    if p.is_absolute() || path.starts_with('~') {
        return Some(format!(
            "`{path}` is not relative; write it relative to the agent's home (`.config/agent/mcp.json`, not `~/.config/...` or `/home/...`)"
        ));
    }
    if p.components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Some(format!(
            "`{path}` leaves the agent's home or has `.` / `..` parts; write a plain path below the home"
        ));
    }
    None
}

/// A host name as a route takes it: letters, digits, `-` and `.`, optionally `*.` first.
fn is_host(s: &str) -> bool {
    let rest = s.strip_prefix("*.").unwrap_or(s);
    !rest.is_empty()
        && !rest.starts_with('.')
        && !rest.ends_with('.')
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
}

/// An HTTP header name (RFC 9110 token, the usual subset).
fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `kubernetes.namespace`: an RFC 1123 label (what the API server accepts).
pub(crate) fn check_namespace(s: &str) -> Result<(), String> {
    dns_label(s).map_err(|why| format!("{why}; use a namespace name like `agents`"))
}

/// An RFC 1123 subdomain (dot-separated labels, at most 253 characters): the names of
/// cluster-wide objects such as RuntimeClasses and StorageClasses.
fn dns_subdomain(s: &str) -> Result<(), &'static str> {
    if s.len() > 253 {
        Err("is longer than 253 characters")
    } else {
        s.split('.').try_for_each(dns_label)
    }
}

/// `kubernetes.runtime_class`: an RFC 1123 subdomain (a RuntimeClass name).
pub(crate) fn check_runtime_class(s: &str) -> Result<(), String> {
    dns_subdomain(s).map_err(|why| {
        format!(
            "{why}; use a RuntimeClass name like `gvisor` (`kubectl get runtimeclass` lists them)"
        )
    })
}

/// `kubernetes.storage_class`: an RFC 1123 subdomain (a StorageClass name).
pub(crate) fn check_storage_class(s: &str) -> Result<(), String> {
    dns_subdomain(s).map_err(|why| {
        format!(
            "{why}; use a StorageClass name like `standard` (`kubectl get storageclass` lists them)"
        )
    })
}

/// `kubernetes.home_size`: a storage quantity as a claim asks for one (`10Gi`, `500Mi`).
pub(crate) fn check_storage_size(s: &str) -> Result<(), String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let why = if digits == 0 || digits > 18 {
        "does not start with a whole number"
    } else if s[..digits].bytes().all(|b| b == b'0') {
        "is zero"
    } else if !matches!(
        &s[digits..],
        "" | "k" | "M" | "G" | "T" | "P" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi"
    ) {
        "has a unit other than Ki, Mi, Gi, Ti, Pi (or k, M, G, T, P)"
    } else {
        return Ok(());
    };
    Err(format!(
        "{why}; write a storage size like `10Gi` or `500Mi`"
    ))
}

/// `kubernetes.registry`: an image name prefix (`registry.example.com/team`), no scheme,
/// tag or digest.
pub(crate) fn check_registry(s: &str) -> Result<(), String> {
    let fix =
        "; write it as an image name prefix like `registry.example.com/team` (no scheme, no tag)";
    let why = if s.contains("://") {
        "has a scheme"
    } else if s.is_empty() || s.starts_with('/') || s.contains("//") {
        "is not an image name prefix"
    } else if s.contains('@')
        || (s.contains('/') && s.rsplit('/').next().is_some_and(|l| l.contains(':')))
    {
        "has a tag or digest"
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._/:".contains(&b))
    {
        "has characters an image name cannot hold"
    } else if s
        .split_once('/')
        .is_some_and(|(_, path)| path.bytes().any(|b| b.is_ascii_uppercase()))
    {
        "has uppercase letters in its path"
    } else {
        return Ok(());
    };
    Err(format!("{why}{fix}"))
}

/// An RFC 1123 label: 1 to 63 of `a-z0-9-`, a letter or digit at both ends.
fn dns_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 63 {
        Err("must be 1 to 63 characters long")
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Err("may hold only lowercase letters, digits and `-`")
    } else if s.starts_with('-') || s.ends_with('-') {
        Err("must start and end with a letter or digit")
    } else {
        Ok(())
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

    #[test]
    fn resource_values() {
        assert_eq!(parse_cpus(&Scalar::Float(1.5)), Ok(1500));
        assert_eq!(parse_cpus(&Scalar::Int(2)), Ok(2000));
        assert_eq!(parse_cpus(&Scalar::Str("0.25".into())), Ok(250));
        assert_eq!(
            parse_cpus(&Scalar::Float(0.0)),
            Err("must be between 0.01 and 1024 CPUs, found 0".into())
        );
        assert_eq!(
            parse_cpus(&Scalar::Other("a boolean")),
            Err("must be a number of CPUs such as `1.5`, found a boolean".into())
        );
        assert_eq!(parse_memory(&Scalar::Str("2GiB".into())), Ok(2 << 30));
        assert_eq!(parse_memory(&Scalar::Str("512MiB".into())), Ok(512 << 20));
        assert_eq!(parse_memory(&Scalar::Str("2G".into())), Ok(2 << 30));
        assert_eq!(parse_memory(&Scalar::Str("1.5 GiB".into())), Ok(3 << 29));
        assert_eq!(parse_memory(&Scalar::Int(1 << 30)), Ok(1 << 30));
        assert_eq!(
            parse_memory(&Scalar::Str("2GB".into())),
            Err("`2GB` is ambiguous (decimal or binary?); write GiB instead".into())
        );
        assert_eq!(
            parse_memory(&Scalar::Str("1MiB".into())),
            Err("must be between 32MiB and 1PiB, found `1MiB`".into())
        );
        assert!(
            parse_memory(&Scalar::Str("lots".into()))
                .unwrap_err()
                .starts_with("`lots` is not a size")
        );
        assert_eq!(parse_pids(&Scalar::Int(512)), Ok(512));
        assert_eq!(
            parse_pids(&Scalar::Int(3)),
            Err("must be between 16 and 4194304 processes, found 3".into())
        );
        assert_eq!(
            parse_pids(&Scalar::Float(1.5)),
            Err("must be a whole number of processes, found 1.5".into())
        );
        assert_eq!(format_memory(2 << 30), "2GiB");
        assert_eq!(format_memory(3 << 29), "1536MiB");
        assert_eq!(format_memory(1000), "1000");
    }
}
