//! Codex login write-back (`start --forward-codex-auth`).
//!
//! Codex rotates the refresh token of a ChatGPT login when it refreshes, so after a refresh
//! inside the bottle the host's copy holds a refresh token the login server no longer
//! accepts. When the bottle ends — never earlier: the agent could still change the file —
//! the bottle's copy is written back to the host, atomically, and only when:
//! * the host file is still the one that was forwarded (its SHA-256 is unchanged): a login
//!   made on the host meanwhile, or another bottle's write-back, is never overwritten;
//! * the bottle's copy is a ChatGPT login (access and refresh tokens) of the same account as
//!   the forwarded one: the agent may have rewritten the file, and the host's Codex must not
//!   end up signed in to an account the agent chose.
//!
//! Otherwise the host file is left alone; when the bottle's copy is a usable login of the
//! same account it is kept beside it (`auth.json.bot-bottle-<identity>`, 0600) and the
//! operator is told which is which.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::Context;
use crate::{LaunchError, Report};

/// What was forwarded into a bottle: the host file, the hash of the bytes read from it and
/// the account of the login the bottle started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedLogin {
    /// The host's login file.
    pub host: PathBuf,
    /// SHA-256 of the host file when it was forwarded.
    pub host_sha256: [u8; 32],
    /// The login's ChatGPT account (`tokens.account_id`), if it names one.
    pub account: Option<String>,
}

/// What the write-back did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteBack {
    /// The bottle's copy is the host's: nothing to do.
    Unchanged,
    /// The refreshed login replaced the host file.
    Written,
    /// The host file changed while the bottle ran; the bottle's login was kept at the path.
    KeptBoth(PathBuf),
    /// The bottle's copy is not a login of the forwarded account; the host file is
    /// untouched and the copy is not kept.
    Refused(String),
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The ChatGPT account a login names, if it is a usable ChatGPT login at all (`None` when
/// it is not: no access or refresh token). The account is `Some("")` when the login names
/// none.
fn login_account(text: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(text).ok()?;
    let tokens = json.get("tokens")?;
    let token = |k: &str| {
        tokens
            .get(k)
            .and_then(serde_json::Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    if !(token("access_token") && token("refresh_token")) {
        return None;
    }
    Some(
        tokens
            .get("account_id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string(),
    )
}

/// The record of a forwarded login whose host file held `host_text`.
pub fn forwarded(host: &Path, host_text: &[u8]) -> ForwardedLogin {
    ForwardedLogin {
        host: host.to_path_buf(),
        host_sha256: sha256(host_text),
        account: login_account(host_text).filter(|a| !a.is_empty()),
    }
}

/// Writes the bottle's login (`bottle_copy`) back to the host after the bottle ended; see
/// the module docs for when. `identity` names the copy kept when the host file changed.
pub fn write_back(
    forwarded: &ForwardedLogin,
    bottle_copy: &Path,
    identity: &str,
) -> Result<WriteBack, LaunchError> {
    // The agent owned its home: a symlink there must not make bot-bottle read a file of the
    // host's (the agent has ended, so what is checked here is what is read).
    let inside_home = bottle_copy
        .parent()
        .and_then(Path::parent)
        .and_then(|home| std::fs::canonicalize(home).ok())
        .zip(std::fs::canonicalize(bottle_copy).ok())
        .is_some_and(|(home, real)| real.starts_with(&home) && real != home);
    let regular = std::fs::symlink_metadata(bottle_copy).is_ok_and(|m| m.file_type().is_file());
    if !inside_home || !regular {
        return Ok(WriteBack::Refused(format!(
            "the bottle's Codex login {} is gone, unreadable or not a regular file in the bottle's home",
            bottle_copy.display()
        )));
    }
    let Ok(ours) = state::read::read_limited(bottle_copy, state::read::CONFIG_LIMIT) else {
        return Ok(WriteBack::Refused(format!(
            "the bottle's Codex login {} is gone or unreadable",
            bottle_copy.display()
        )));
    };
    let host_now = match state::read::read_limited(&forwarded.host, state::read::CONFIG_LIMIT) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot read the host's Codex login {}",
                    forwarded.host.display()
                )
            });
        }
    };
    if host_now.as_deref() == Some(ours.as_slice()) {
        return Ok(WriteBack::Unchanged);
    }
    match login_account(&ours) {
        None => {
            return Ok(WriteBack::Refused(
                "the bottle's copy is no longer a ChatGPT login (no access and refresh tokens)"
                    .into(),
            ));
        }
        Some(account) => {
            if forwarded.account.as_deref().is_some_and(|a| a != account) {
                return Ok(WriteBack::Refused(
                    "the bottle's copy is a login of another ChatGPT account than the one forwarded"
                        .into(),
                ));
            }
        }
    }
    // The real file behind a symlinked auth.json is the one replaced.
    let target = std::fs::canonicalize(&forwarded.host).unwrap_or_else(|_| forwarded.host.clone());
    let still_forwarded = host_now
        .as_deref()
        .is_some_and(|t| sha256(t) == forwarded.host_sha256);
    if still_forwarded {
        state::atomic_write_mode(&target, &ours, 0o600)
            .with_context(|| format!("cannot write {}", target.display()))?;
        return Ok(WriteBack::Written);
    }
    let mut name = target
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "auth.json".into());
    name.push(format!(".bot-bottle-{identity}"));
    let kept = target.with_file_name(name);
    state::atomic_write_mode(&kept, &ours, 0o600)
        .with_context(|| format!("cannot write {}", kept.display()))?;
    Ok(WriteBack::KeptBoth(kept))
}

/// Writes back and tells the operator what happened (errors too: the bottle has ended
/// either way, and its own copy stays in its state when it is kept).
pub fn write_back_and_report(
    forwarded: &ForwardedLogin,
    bottle_copy: &Path,
    identity: &str,
    report: &dyn Report,
) {
    let host = forwarded.host.display();
    match write_back(forwarded, bottle_copy, identity) {
        Ok(WriteBack::Unchanged) => {}
        Ok(WriteBack::Written) => report.line(&format!(
            "bot-bottle: the Codex login refreshed in {identity} was written back to {host}"
        )),
        Ok(WriteBack::KeptBoth(kept)) => report.line(&format!(
            "bot-bottle: {host} changed while {identity} ran (a login on the host?), so it was left as it is; the login refreshed in the bottle is kept beside it in {} — if `codex` on the host cannot refresh, move that file over {host}",
            kept.display()
        )),
        Ok(WriteBack::Refused(why)) => report.line(&format!(
            "bot-bottle: the Codex login of {identity} was not written back to {host}: {why}; {host} is unchanged"
        )),
        Err(e) => report.line(&format!(
            "bot-bottle: cannot write the Codex login of {identity} back to {host}: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::os::unix::fs::PermissionsExt;

    fn login(account: &str, refresh: &str) -> String {
        format!(
            r#"{{"tokens":{{"access_token":"a-{refresh}","refresh_token":"{refresh}","account_id":"{account}"}},"last_refresh":"2026-12-01T00:00:00Z"}}"#
        )
    }

    struct Files {
        _tmp: tempfile::TempDir,
        host: PathBuf,
        bottle: PathBuf,
    }

    fn files(host: &str) -> (Files, ForwardedLogin) {
        let tmp = tempfile::tempdir().unwrap();
        let host_path = tmp.path().join("codex").join("auth.json");
        std::fs::create_dir_all(host_path.parent().unwrap()).unwrap();
        std::fs::write(&host_path, host).unwrap();
        let bottle = tmp.path().join("home").join("auth.json");
        std::fs::create_dir_all(bottle.parent().unwrap()).unwrap();
        std::fs::write(&bottle, host).unwrap();
        let fwd = forwarded(&host_path, host.as_bytes());
        (
            Files {
                _tmp: tmp,
                host: host_path,
                bottle,
            },
            fwd,
        )
    }

    #[test]
    fn a_refreshed_login_replaces_the_forwarded_host_file() {
        let (f, fwd) = files(&login("acct-1", "r1"));
        assert_eq!(fwd.account.as_deref(), Some("acct-1"));
        assert_eq!(
            write_back(&fwd, &f.bottle, "demo-12345").unwrap(),
            WriteBack::Unchanged
        );
        std::fs::write(&f.bottle, login("acct-1", "r2")).unwrap();
        assert_eq!(
            write_back(&fwd, &f.bottle, "demo-12345").unwrap(),
            WriteBack::Written
        );
        assert_eq!(
            std::fs::read_to_string(&f.host).unwrap(),
            login("acct-1", "r2")
        );
        assert_eq!(
            std::fs::metadata(&f.host).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_host_file_changed_meanwhile_is_kept_and_so_is_the_bottles_login() {
        let (f, fwd) = files(&login("acct-1", "r1"));
        std::fs::write(&f.bottle, login("acct-1", "r2")).unwrap();
        std::fs::write(&f.host, login("acct-1", "host-relogin")).unwrap();
        let kept = f.host.with_file_name("auth.json.bot-bottle-demo-12345");
        assert_eq!(
            write_back(&fwd, &f.bottle, "demo-12345").unwrap(),
            WriteBack::KeptBoth(kept.clone())
        );
        assert_eq!(
            std::fs::read_to_string(&f.host).unwrap(),
            login("acct-1", "host-relogin")
        );
        assert_eq!(
            std::fs::read_to_string(&kept).unwrap(),
            login("acct-1", "r2")
        );
        assert_eq!(
            std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A host file removed meanwhile is not recreated either.
        std::fs::remove_file(&f.host).unwrap();
        assert_eq!(
            write_back(&fwd, &f.bottle, "demo-12345").unwrap(),
            WriteBack::KeptBoth(kept)
        );
        assert!(!f.host.exists());
    }

    #[test]
    fn what_the_agent_made_of_the_file_never_reaches_the_host() {
        let original = login("acct-1", "r1");
        for (bottle, why) in [
            (
                login("acct-attacker", "r9"),
                "the bottle's copy is a login of another ChatGPT account than the one forwarded",
            ),
            (
                r#"{"OPENAI_API_KEY":"sk-x"}"#.to_string(),
                "the bottle's copy is no longer a ChatGPT login (no access and refresh tokens)",
            ),
            (
                "not json".to_string(),
                "the bottle's copy is no longer a ChatGPT login (no access and refresh tokens)",
            ),
        ] {
            let (f, fwd) = files(&original);
            std::fs::write(&f.bottle, &bottle).unwrap();
            assert_eq!(
                write_back(&fwd, &f.bottle, "demo-12345").unwrap(),
                WriteBack::Refused(why.into())
            );
            assert_eq!(std::fs::read_to_string(&f.host).unwrap(), original);
        }
        let (f, fwd) = files(&original);
        std::fs::remove_file(&f.bottle).unwrap();
        assert!(matches!(
            write_back(&fwd, &f.bottle, "demo-12345").unwrap(),
            WriteBack::Refused(_)
        ));
    }

    #[test]
    fn a_symlink_the_agent_left_in_its_home_is_not_followed() {
        let (f, fwd) = files(&login("acct-1", "r1"));
        // A host file holding a login of the same account, outside the bottle's home.
        let outside = f.host.with_file_name("elsewhere.json");
        std::fs::write(&outside, login("acct-1", "r-outside")).unwrap();
        std::fs::remove_file(&f.bottle).unwrap();
        std::os::unix::fs::symlink(&outside, &f.bottle).unwrap();
        assert!(matches!(
            write_back(&fwd, &f.bottle, "demo-12345").unwrap(),
            WriteBack::Refused(_)
        ));
        assert_eq!(
            std::fs::read_to_string(&f.host).unwrap(),
            login("acct-1", "r1")
        );
    }

    #[test]
    fn a_symlinked_host_login_is_replaced_behind_the_link() {
        let (f, fwd) = files(&login("acct-1", "r1"));
        let real = f.host.with_file_name("real-auth.json");
        std::fs::rename(&f.host, &real).unwrap();
        std::os::unix::fs::symlink(&real, &f.host).unwrap();
        std::fs::write(&f.bottle, login("acct-1", "r2")).unwrap();
        assert_eq!(
            write_back(&fwd, &f.bottle, "demo-12345").unwrap(),
            WriteBack::Written
        );
        assert!(
            std::fs::symlink_metadata(&f.host)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(&real).unwrap(),
            login("acct-1", "r2")
        );
    }
}
