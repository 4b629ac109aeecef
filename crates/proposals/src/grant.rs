//! How long an approval holds: a *grant*.
//!
//! The operator says it when approving (dashboard keys, `proposals approve --once | --for
//! 10m | --persist`): **once** (one request, one push, one use of the token), **for** a
//! duration (gone at a wall-clock time, even with nobody watching), for **this bottle**
//! (the default, and what older responses without a grant mean), or **persist** (for this
//! bottle, and written into the project's manifest too).
//!
//! A grant is stamped onto what the approval adds — a route's `expires` / `uses` / `grant`
//! fields in the live routes file, a tab-separated suffix on the git gate's allowed-findings
//! line — so the sidecar that enforces the rule also enforces its end, on every request and
//! every push, without supervise or the dashboard running.

use serde::{Deserialize, Serialize};

/// Longest duration a grant may be given for (30 days): longer than that is "this bottle".
pub const MAX_SECONDS: u64 = 30 * 24 * 3600;

/// How long an approval holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Grant {
    /// One request (egress), one push (gate), one use of the token.
    Once,
    /// Until `seconds` after it took effect.
    For {
        /// The duration, in seconds.
        seconds: u64,
    },
    /// For as long as the bottle lives (the default).
    #[default]
    Bottle,
    /// For this bottle and written into the project's manifest.
    Persist,
}

impl Grant {
    /// Whether this is the default grant (older responses carry none).
    pub fn is_bottle(&self) -> bool {
        *self == Grant::Bottle
    }

    /// Whether the rule it stamps ends on its own (once or for a duration).
    pub fn ends(&self) -> bool {
        matches!(self, Grant::Once | Grant::For { .. })
    }

    /// The short scope written to the audit log and shown to the operator:
    /// `once`, `for 10m`, `bottle`, `persist`.
    pub fn scope(&self) -> String {
        match self {
            Grant::Once => "once".to_owned(),
            Grant::For { seconds } => format!("for {}", format_duration(*seconds)),
            Grant::Bottle => "bottle".to_owned(),
            Grant::Persist => "persist".to_owned(),
        }
    }

    /// What the agent is told about how long the approval holds.
    pub fn holds(&self, tool: crate::Tool, expires: Option<&str>) -> String {
        let thing = match tool {
            crate::Tool::GitleaksAllow => "push",
            crate::Tool::EgressTokenAllow => "request with the secret",
            _ => "request",
        };
        match self {
            Grant::Once => format!("it holds for one {thing} only, then it is gone"),
            Grant::For { seconds } => match expires {
                Some(at) => format!(
                    "it holds for {} (until {at}), then it is gone",
                    format_duration(*seconds)
                ),
                None => format!(
                    "it holds for {}, then it is gone",
                    format_duration(*seconds)
                ),
            },
            Grant::Bottle => "it holds for as long as this bottle runs".to_owned(),
            Grant::Persist => {
                "it holds for this bottle and was added to the project's manifest".to_owned()
            }
        }
    }
}

/// A proposal kind that cannot be approved with a grant, and why (told to the operator in
/// the dashboard and the CLI, and refused by supervise for a response written by other
/// means).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{tool} proposals cannot be approved {}: {why}", .grant.describe())]
pub struct Unsupported {
    /// The proposal's tool.
    pub tool: crate::Tool,
    /// The grant asked for.
    pub grant: Grant,
    /// Why, and what to do instead.
    pub why: &'static str,
}

impl Grant {
    /// How the grant reads in a sentence: `once`, `for a while`, `for this bottle`,
    /// `into the manifest`.
    pub fn describe(&self) -> &'static str {
        match self {
            Grant::Once => "once",
            Grant::For { .. } => "for a while",
            Grant::Bottle => "for this bottle",
            Grant::Persist => "into the manifest",
        }
    }
}

/// Whether a `tool` proposal can be approved with `grant`. Every kind can be approved for
/// the bottle; the others hold for every kind where they mean something:
///
/// | | once | for a while | bottle | manifest |
/// |---|---|---|---|---|
/// | egress-allow | yes | yes | yes | yes |
/// | egress-block | no: a block that ended would widen the routes again unasked | no | yes | yes |
/// | egress-token-allow | yes | yes | yes | yes |
/// | gitleaks-allow | yes | yes | yes | no: a finding names one commit |
/// | dlp-allow | yes | yes | yes | yes |
pub fn check(tool: crate::Tool, grant: Grant) -> Result<(), Unsupported> {
    use crate::Tool;
    let why = match (tool, grant) {
        (Tool::EgressBlock, Grant::Once | Grant::For { .. }) => Some(
            "a block narrows the routes, and one that ended would widen them again unasked; approve it for this bottle or into the manifest",
        ),
        (Tool::GitleaksAllow, Grant::Persist) => Some(
            "an allowed finding is named by its fingerprint, which holds the commit it was found in, so no other bottle's push would ever match it; approve it for this bottle, once or for a while, and remove the secret from the history if it should pass for good",
        ),
        _ => None,
    };
    match why {
        Some(why) => Err(Unsupported { tool, grant, why }),
        None => Ok(()),
    }
}

/// The end a grant puts on what an approval adds, as stamped onto a route or an allowed
/// finding. Empty for a grant that does not end (for the bottle, persist).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    /// When it ends (RFC 3339).
    pub expires: Option<String>,
    /// How many requests / pushes it allows.
    pub uses: Option<u32>,
    /// The proposal that granted it.
    pub grant: Option<String>,
}

impl Stamp {
    /// The stamp of `grant` for proposal `id`, starting `now`.
    pub fn new(grant: Grant, id: &str, now: time::OffsetDateTime) -> Stamp {
        match grant {
            Grant::Once => Stamp {
                expires: None,
                uses: Some(1),
                grant: Some(id.to_owned()),
            },
            Grant::For { seconds } => Stamp {
                expires: Some(expiry(now, seconds)),
                uses: None,
                grant: Some(id.to_owned()),
            },
            Grant::Bottle | Grant::Persist => Stamp::default(),
        }
    }

    /// Whether it puts an end on anything.
    pub fn is_empty(&self) -> bool {
        self.expires.is_none() && self.uses.is_none()
    }

    /// Puts the end on a route.
    pub fn apply(&self, route: &mut policy::Route) {
        if self.is_empty() {
            return;
        }
        route.expires = self.expires.clone();
        route.uses = self.uses;
        route.grant = self.grant.clone();
    }

    /// Stamps every route of `proposed` that `live` does not have exactly as it is (what
    /// the approval adds or changes); routes the approval leaves alone keep their own end.
    /// A changed route keeps the live one as its `after_grant`: when the grant ends, the
    /// route goes back to exactly what it was (a path or a token given once or for a
    /// while ends; the access the host had before does not). A route the approval adds
    /// has nothing to go back to, and is gone when the grant ends.
    pub fn apply_to_new_routes(
        &self,
        live: &policy::EgressConfig,
        proposed: &mut policy::EgressConfig,
    ) {
        if self.is_empty() {
            return;
        }
        let old = live.routes.as_deref().unwrap_or_default();
        for route in proposed.routes.iter_mut().flatten() {
            if old.contains(route) {
                continue;
            }
            let was = old
                .iter()
                .find(|l| l.host.eq_ignore_ascii_case(&route.host) && l.port == route.port);
            self.apply(route);
            route.after_grant = was.map(|l| Box::new(l.clone()));
        }
    }
}

/// For an approval that does not end (for the bottle, persist): a route it changes while a
/// grant of that route still runs gets the same change in what it goes back to (its
/// `after_grant`, and theirs), so the change outlasts the grant. Without this the
/// approval would only change the granted form, and be lost when the grant ends. Each
/// field the approval changes is set the same under the grant; in `matches`, what the
/// approval takes out or adds (an entry, or a path, method or header inside one it
/// changed in place) is taken out of / added to the layer under it, so what the grant
/// itself added still ends with it.
///
/// Refused (fail closed) when the change to `matches` cannot be lined up with the layer
/// under the grant: an approval that takes out or changes an entry the grant added or
/// widened while also adding or taking out others reads as "remove one, add one", and
/// carrying the added entry down would keep the grant's widening for good.
pub fn carry_to_after_grant(
    live: &policy::EgressConfig,
    proposed: &mut policy::EgressConfig,
) -> Result<(), CarryRefused> {
    let old = live.routes.as_deref().unwrap_or_default();
    for route in proposed.routes.iter_mut().flatten() {
        let Some(was) = old.iter().find(|l| {
            l.host.eq_ignore_ascii_case(&route.host)
                && l.port == route.port
                && l.after_grant.is_some()
                && l.after_grant == route.after_grant
        }) else {
            continue;
        };
        if was == route {
            continue;
        }
        let to = route.clone();
        if let Some(under) = route.after_grant.as_deref_mut() {
            let mut ambiguous = false;
            under.for_each_layer_mut(|layer| {
                ambiguous |= matches_change_is_ambiguous(was, &to, layer);
            });
            if ambiguous {
                return Err(CarryRefused {
                    host: route.host.clone(),
                });
            }
            under.for_each_layer_mut(|layer| carry_change(was, &to, layer));
        }
    }
    Ok(())
}

/// An approval for the bottle that [`carry_to_after_grant`] cannot make under a running
/// grant without keeping what the grant added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the route for {host} has a grant still running, and this change both alters an entry the grant added or widened and adds or removes other entries; it cannot be kept past the grant without keeping the grant's part too. Approve it once the grant has ended, or approve it once / for a while"
)]
pub struct CarryRefused {
    /// The route's host.
    pub host: String,
}

/// Whether the change `from` → `to` of a route's `matches` can only be carried onto
/// `layer` (the same route under a grant) entry by entry, and an entry it takes out is
/// not in `layer` (the grant added or widened it): then an entry the change adds may be
/// that widened entry changed, and carrying it would make the grant's part last.
fn matches_change_is_ambiguous(
    from: &policy::Route,
    to: &policy::Route,
    layer: &policy::Route,
) -> bool {
    let (Some(f), Some(t), Some(l)) = (
        from.matches.as_deref(),
        to.matches.as_deref(),
        layer.matches.as_deref(),
    ) else {
        return false;
    };
    if f == t || f == l || (f.len() == t.len() && f.len() == l.len()) {
        return false;
    }
    f.iter().any(|e| !t.contains(e) && !l.contains(e))
}

/// Makes on `layer` the change from `from` to `to` (the top of one route, before and after
/// an approval for the bottle).
fn carry_change(from: &policy::Route, to: &policy::Route, layer: &mut policy::Route) {
    macro_rules! carry {
        ($($field:ident),*) => {$(
            if from.$field != to.$field {
                layer.$field = to.$field.clone();
            }
        )*};
    }
    carry!(
        auth_scheme,
        token_env,
        auth_header,
        connect_to,
        websocket,
        dangerously_raw_paths,
        dlp,
        dlp_allow,
        dangerously_dlp_pass_unscannable
    );
    if let Some(m) = carry_list(
        &from.matches,
        &to.matches,
        &layer.matches,
        |from, to, layer| {
            // An entry the approval changed in place (same place in all three lists) gets
            // the change inside it, so what the grant added to that entry is not kept.
            if from.len() != to.len() || from.len() != layer.len() {
                return None;
            }
            let mut out = layer.to_vec();
            for ((f, t), l) in from.iter().zip(to).zip(out.iter_mut()) {
                if f == t {
                    continue;
                }
                if let Some(paths) = carry_list(&f.paths, &t.paths, &l.paths, |_, _, _| None) {
                    l.paths = paths;
                }
                if let Some(methods) =
                    carry_list(&f.methods, &t.methods, &l.methods, |_, _, _| None)
                {
                    l.methods = methods;
                }
                if let Some(headers) =
                    carry_list(&f.headers, &t.headers, &l.headers, |_, _, _| None)
                {
                    l.headers = headers;
                }
            }
            Some(out)
        },
    ) {
        layer.matches = m;
    }
}

/// The change from `from` to `to` (one list of conditions, before and after an approval
/// for the bottle) made on `layer`, the same list under a grant; `None` when `layer` stays.
/// Absent is "no condition": a list the approval removes is removed; a layer without the
/// list already allows what any list would. Otherwise `in_place` may match items up, and
/// failing that the items the approval took out are taken out and those it added are added.
fn carry_list<T: PartialEq + Clone>(
    from: &Option<Vec<T>>,
    to: &Option<Vec<T>>,
    layer: &Option<Vec<T>>,
    in_place: impl FnOnce(&[T], &[T], &[T]) -> Option<Vec<T>>,
) -> Option<Option<Vec<T>>> {
    if from == to {
        return None;
    }
    if layer == from || to.is_none() {
        return Some(to.clone());
    }
    let items = layer.as_deref()?;
    let (before, after) = (
        from.as_deref().unwrap_or_default(),
        to.as_deref().unwrap_or_default(),
    );
    if let Some(out) = in_place(before, after, items) {
        return Some(Some(out));
    }
    let mut out: Vec<T> = items
        .iter()
        .filter(|m| !before.contains(m) || after.contains(m))
        .cloned()
        .collect();
    for m in after {
        if !before.contains(m) && !out.contains(m) {
            out.push(m.clone());
        }
    }
    Some(Some(out))
}

/// A duration the operator typed that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not `<number><unit>`.
    #[error(
        "{0:?} is not a duration; write a whole number and a unit: 30s, 10m, 2h or 1d (one unit, no spaces)"
    )]
    Syntax(String),
    /// Zero.
    #[error("{0:?} is no time at all; give a duration of at least 1s, or use --once")]
    Zero(String),
    /// Longer than [`MAX_SECONDS`].
    #[error("{0:?} is longer than 30 days; approve it for the bottle instead (no --for)")]
    TooLong(String),
}

/// Parses `30s`, `10m`, `2h`, `1d`: a whole number (no sign, no leading `+`) and one unit.
/// Strict on purpose: `10` (no unit), `1h30m`, `1.5h`, ` 10m` are refused, so a typo never
/// becomes a different duration.
pub fn parse_duration(text: &str) -> Result<u64, DurationError> {
    let syntax = || DurationError::Syntax(text.to_owned());
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(syntax)?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() || digits.len() > 9 {
        return Err(syntax());
    }
    let n: u64 = digits.parse().map_err(|_| syntax())?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(syntax()),
    };
    let seconds = n.checked_mul(unit_seconds).ok_or_else(syntax)?;
    if seconds == 0 {
        return Err(DurationError::Zero(text.to_owned()));
    }
    if seconds > MAX_SECONDS {
        return Err(DurationError::TooLong(text.to_owned()));
    }
    Ok(seconds)
}

/// Formats seconds in the largest unit that divides them: `10m`, `2h`, `90s`.
pub fn format_duration(seconds: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds >= size && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// The RFC 3339 time (UTC, whole seconds) `seconds` after `from`.
pub fn expiry(from: time::OffsetDateTime, seconds: u64) -> String {
    let at = from.to_offset(time::UtcOffset::UTC)
        + time::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 2))
        - time::Duration::nanoseconds(i64::from(from.nanosecond()));
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Parses an RFC 3339 time as written in a route's `expires` or an allowed-finding line.
pub fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn durations_parse_strictly() {
        let ok = ["1s", "30s", "10m", "2h", "1d", "30d"].map(|t| parse_duration(t).ok());
        assert_eq!(
            ok,
            [
                Some(1),
                Some(30),
                Some(600),
                Some(7200),
                Some(86_400),
                Some(MAX_SECONDS)
            ]
        );
        for bad in [
            "",
            "10",
            "m",
            "1h30m",
            "1.5h",
            " 10m",
            "10m ",
            "+10m",
            "-1m",
            "10M",
            "10 m",
            "10min",
            "99999999999h",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(DurationError::Syntax(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(parse_duration("0m"), Err(DurationError::Zero("0m".into())));
        assert_eq!(
            parse_duration("31d"),
            Err(DurationError::TooLong("31d".into()))
        );
    }

    #[test]
    fn durations_format_in_their_largest_unit() {
        assert_eq!(
            [1, 90, 600, 7200, 86_400, 3660].map(format_duration),
            ["1s", "90s", "10m", "2h", "1d", "61m"].map(String::from)
        );
    }

    #[test]
    fn expiry_is_rfc3339_whole_seconds() {
        let t = time::macros::datetime!(2026-05-25 12:00:01.5 UTC);
        assert_eq!(expiry(t, 600), "2026-05-25T12:10:01Z");
        assert_eq!(
            parse_time("2026-05-25T12:10:01Z"),
            Some(time::macros::datetime!(2026-05-25 12:10:01 UTC))
        );
        assert_eq!(parse_time("tomorrow"), None);
    }

    #[test]
    fn a_stamp_ends_only_what_the_approval_adds() {
        let parse = |y: &str| serde_saphyr::from_str::<policy::EgressConfig>(y).unwrap();
        let live = parse("routes:\n  - host: a.example\n");
        let mut proposed = parse("routes:\n  - host: a.example\n  - host: b.example\n");
        let now = time::macros::datetime!(2026-05-25 12:00:00 UTC);
        Stamp::new(Grant::For { seconds: 600 }, "0000000000000012", now)
            .apply_to_new_routes(&live, &mut proposed);
        assert_eq!(
            serde_saphyr::to_string(&proposed).unwrap(),
            "routes:\n- host: a.example\n- host: b.example\n  expires: \"2026-05-25T12:10:00Z\"\n  grant: \"0000000000000012\"\n"
        );
        // and it reads back as it was written (an all-digit id stays a string)
        let back: policy::EgressConfig =
            serde_saphyr::from_str(&serde_saphyr::to_string(&proposed).unwrap()).unwrap();
        assert_eq!(back, proposed);
        assert!(Stamp::new(Grant::Bottle, "00aa", now).is_empty());
        assert_eq!(Stamp::new(Grant::Once, "00aa", now).uses, Some(1));
    }

    #[test]
    fn a_stamped_change_keeps_the_route_it_changed_to_go_back_to() {
        let parse = |y: &str| serde_saphyr::from_str::<policy::EgressConfig>(y).unwrap();
        let live = parse("routes:\n  - host: a.example\n    matches:\n      - methods: [GET]\n");
        let mut proposed =
            parse("routes:\n  - host: a.example\n    matches:\n      - methods: [GET, POST]\n");
        let now = time::macros::datetime!(2026-05-25 12:00:00 UTC);
        Stamp::new(Grant::Once, "00aa", now).apply_to_new_routes(&live, &mut proposed);
        assert_eq!(
            serde_saphyr::to_string(&proposed).unwrap(),
            "routes:\n- host: a.example\n  matches:\n  - methods:\n    - GET\n    - POST\n  uses: 1\n  grant: 00aa\n  after_grant:\n    host: a.example\n    matches:\n    - methods:\n      - GET\n"
        );
        // the live routes file reads back the same, and the proxy takes it
        let text = serde_saphyr::to_string(&proposed).unwrap();
        let back: policy::EgressConfig = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, proposed);
        assert!(policy::validate(&back).is_ok());
        // for the bottle: nothing to go back to, the change is the route
        let mut bottle = parse("routes:\n  - host: a.example\n");
        Stamp::new(Grant::Bottle, "00ab", now).apply_to_new_routes(&live, &mut bottle);
        assert_eq!(bottle, parse("routes:\n  - host: a.example\n"));
    }

    #[test]
    fn a_change_for_the_bottle_under_a_running_grant_outlasts_it() {
        let parse = |y: &str| serde_saphyr::from_str::<policy::EgressConfig>(y).unwrap();
        let now = time::macros::datetime!(2026-05-25 12:00:00 UTC);
        let initial = parse("routes:\n  - host: a.example\n    matches:\n      - methods: [GET]\n");
        let mut live =
            parse("routes:\n  - host: a.example\n    matches:\n      - methods: [GET, POST]\n");
        Stamp::new(Grant::Once, "00aa", now).apply_to_new_routes(&initial, &mut live);
        // for the bottle: a path entry added, and the route's websocket turned on
        let mut proposed = live.clone();
        let r = &mut proposed.routes.as_mut().unwrap()[0];
        let path: policy::RouteMatch =
            serde_saphyr::from_str("paths:\n  - type: prefix\n    value: /c\n").unwrap();
        r.matches.as_mut().unwrap().push(path.clone());
        r.websocket = Some(true);
        let granted = proposed.routes.as_ref().unwrap()[0].clone();
        carry_to_after_grant(&live, &mut proposed).unwrap();
        let r = &proposed.routes.as_ref().unwrap()[0];
        // the granted form is what was approved; its end and grant stay
        assert_eq!((r.uses, r.grant.as_deref()), (Some(1), Some("00aa")));
        assert_eq!(r.matches, granted.matches);
        // what it goes back to has the change too, without the granted POST
        let under = r.after_grant.as_deref().unwrap();
        let mut want = initial.routes.as_ref().unwrap()[0].clone();
        want.matches.as_mut().unwrap().push(path);
        want.websocket = Some(true);
        assert_eq!(under, &want);
        // a method added in place to the entry the grant widened: the granted POST
        // still ends, the bottle-long PUT stays
        let mut proposed = live.clone();
        let r = &mut proposed.routes.as_mut().unwrap()[0];
        r.matches.as_mut().unwrap()[0]
            .methods
            .as_mut()
            .unwrap()
            .push("PUT".to_owned());
        carry_to_after_grant(&live, &mut proposed).unwrap();
        let under = proposed.routes.as_ref().unwrap()[0].after_grant.as_deref();
        let methods = under
            .and_then(|u| u.matches.as_ref())
            .map(|m| m[0].methods.clone());
        assert_eq!(
            methods,
            Some(Some(vec!["GET".to_owned(), "PUT".to_owned()]))
        );
        // a route with no running grant is left as proposed
        let mut plain = initial.clone();
        plain.routes.as_mut().unwrap()[0].websocket = Some(true);
        let kept = plain.clone();
        carry_to_after_grant(&initial, &mut plain).unwrap();
        assert_eq!(plain, kept);
    }

    #[test]
    fn a_change_that_cannot_be_lined_up_under_a_running_grant_is_refused() {
        let parse = |y: &str| serde_saphyr::from_str::<policy::EgressConfig>(y).unwrap();
        let now = time::macros::datetime!(2026-05-25 12:00:00 UTC);
        let initial = parse("routes:\n  - host: a.example\n    matches:\n      - methods: [GET]\n");
        let mut live =
            parse("routes:\n  - host: a.example\n    matches:\n      - methods: [GET, POST]\n");
        Stamp::new(Grant::Once, "00aa", now).apply_to_new_routes(&initial, &mut live);
        // for the bottle: the widened entry changed (PUT added beside the granted POST)
        // and a path entry added: entry by entry, the changed entry would carry POST down
        let mut proposed = live.clone();
        let r = &mut proposed.routes.as_mut().unwrap()[0];
        let m = r.matches.as_mut().unwrap();
        m[0].methods.as_mut().unwrap().push("PUT".to_owned());
        m.push(serde_saphyr::from_str("paths:\n  - type: prefix\n    value: /c\n").unwrap());
        let before = proposed.clone();
        let err = carry_to_after_grant(&live, &mut proposed).unwrap_err();
        assert_eq!(err.host, "a.example");
        assert!(
            err.to_string().contains("once the grant has ended"),
            "{err}"
        );
        assert_eq!(proposed, before, "nothing is carried when refused");
        // the same path entry added alone lines up (the widened entry is untouched)
        let mut proposed = live.clone();
        let r = &mut proposed.routes.as_mut().unwrap()[0];
        r.matches
            .as_mut()
            .unwrap()
            .push(serde_saphyr::from_str("paths:\n  - type: prefix\n    value: /c\n").unwrap());
        carry_to_after_grant(&live, &mut proposed).unwrap();
        let under = proposed.routes.as_ref().unwrap()[0]
            .after_grant
            .as_deref()
            .unwrap();
        let methods: Vec<_> = under
            .matches
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.methods.clone())
            .collect();
        assert_eq!(
            methods[0],
            Some(vec!["GET".to_owned()]),
            "the granted POST still ends"
        );
    }

    #[test]
    fn every_kind_can_be_approved_every_way_it_means_something() {
        use crate::Tool;
        let grants = [
            Grant::Once,
            Grant::For { seconds: 60 },
            Grant::Bottle,
            Grant::Persist,
        ];
        let table: Vec<(Tool, Vec<bool>)> = Tool::ALL
            .into_iter()
            .map(|t| (t, grants.map(|g| check(t, g).is_ok()).to_vec()))
            .collect();
        assert_eq!(
            table,
            vec![
                (Tool::EgressAllow, vec![true, true, true, true]),
                (Tool::EgressBlock, vec![false, false, true, true]),
                (Tool::EgressTokenAllow, vec![true, true, true, true]),
                (Tool::GitleaksAllow, vec![true, true, true, false]),
                (Tool::DlpAllow, vec![true, true, true, true]),
            ]
        );
        assert_eq!(
            check(Tool::EgressBlock, Grant::Once)
                .unwrap_err()
                .to_string(),
            "egress-block proposals cannot be approved once: a block narrows the routes, and one that ended would widen them again unasked; approve it for this bottle or into the manifest"
        );
    }

    #[test]
    fn grants_serialize_tagged_and_default_to_the_bottle() {
        assert_eq!(
            serde_json::to_value(Grant::For { seconds: 600 }).unwrap(),
            serde_json::json!({"kind": "for", "seconds": 600})
        );
        assert_eq!(
            serde_json::to_value(Grant::Once).unwrap(),
            serde_json::json!({"kind": "once"})
        );
        assert_eq!(Grant::default(), Grant::Bottle);
        assert_eq!(
            [
                Grant::Once,
                Grant::For { seconds: 7200 },
                Grant::Bottle,
                Grant::Persist
            ]
            .map(|g| g.scope()),
            ["once", "for 2h", "bottle", "persist"].map(String::from)
        );
    }
}
