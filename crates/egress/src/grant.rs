//! The end of a time-limited approval, enforced where the route is enforced.
//!
//! An operator may approve a route `once` (the route carries `uses: 1`) or for a duration
//! (`expires: <RFC 3339>`). Every request a route allows passes through [`admit`] before
//! anything leaves: an expired route allows nothing, whatever the clock of supervise or
//! the dashboard says and whether they run at all; a route with `uses` allows that many
//! requests, counted here. A request spends its use with [`spend`] only once outbound DLP
//! let it go (its head and the first window of its body, judged before any upstream is
//! contacted): a request DLP refuses there was never sent, and uses up nothing. A body DLP
//! stops later, while it streams, did reach the upstream in part, and its use stays spent.
//!
//! A `dlp-allow` approved once or for a duration is a [`policy::DlpGrant`] on the route:
//! DLP asks [`Taken::allows`] when a hit of its rule would stop a request, which spends the
//! grant's use for that request (one per request however many hits), and a request that
//! is refused before it is sent gives it back ([`Taken::refund`]).
//!
//! The counts belong to the route (its host and the proposal that
//! granted it), not to one generation of the routes: a reload that carries the route
//! (another approval, say, even one that narrowed it) keeps its count, and a route that is
//! gone from the routes loses it. Supervise's sweeper reads the counts
//! ([`crate::RoutesHandle::used`]) to take used-up and expired routes out of the live file.

use std::collections::HashMap;
use std::sync::Mutex;

use policy::{EgressConfig, Policy, Route, ValidatedRoute};

/// Why a route that matched allows nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Its `expires` has passed.
    Expired,
    /// Its `uses` were all spent.
    UsedUp,
}

impl Ended {
    /// The short reason in `x-bot-bottle-blocked` and the request log.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Ended::Expired => "grant-expired",
            Ended::UsedUp => "grant-used-up",
        }
    }

    /// What the agent reads.
    pub(crate) fn why(self, index: usize, host: &str) -> String {
        match self {
            Ended::Expired => format!(
                "routes[{index}] ({host}) was approved for a limited time, which has passed"
            ),
            Ended::UsedUp => format!(
                "routes[{index}] ({host}) was approved for a limited number of requests, all used"
            ),
        }
    }
}

/// Requests spent per route with `uses`, across generations of the routes.
#[derive(Debug, Default)]
pub(crate) struct Uses {
    spent: Mutex<HashMap<Key, u32>>,
}

/// Which route a count belongs to: its host as written and its `grant`.
type Key = (String, Option<String>);

fn key(route: &Route) -> Key {
    (route.host.clone(), route.grant.clone())
}

fn key_of(route: &ValidatedRoute) -> Key {
    (route.host_text.clone(), route.grant.clone())
}

/// A route and every route under it (its `after_grant`, and theirs).
fn with_layers(route: &Route) -> impl Iterator<Item = &Route> {
    std::iter::successors(Some(route), |r| r.after_grant.as_deref())
}

impl Uses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u32>> {
        match self.spent.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Forgets the counts of routes (and DLP grants) `config` no longer has.
    pub(crate) fn retain(&self, config: &EgressConfig) {
        let all = || config.routes.iter().flatten().flat_map(with_layers);
        let mut keys: Vec<Key> = all().map(key).collect();
        for r in all() {
            for g in r.dlp_allow_grants.iter().flatten() {
                keys.push((
                    policy::DlpAllowGrant::count_key(&r.host, &g.rule),
                    g.grant.clone(),
                ));
            }
        }
        self.lock().retain(|k, _| keys.contains(k));
    }

    /// How many requests the count `k` has spent.
    fn spent(&self, k: &Key) -> u32 {
        self.lock().get(k).copied().unwrap_or(0)
    }

    /// Gives one request of count `k` back.
    fn refund(&self, k: &Key) {
        if let Some(n) = self.lock().get_mut(k) {
            *n = n.saturating_sub(1);
        }
    }

    /// Every route (host, grant) that has spent requests, with how many.
    pub(crate) fn snapshot(&self) -> Vec<(String, Option<String>, u32)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|((h, g), n)| (h.clone(), g.clone(), *n))
            .collect();
        v.sort();
        v
    }

    /// Spends one request of count `k` if it has one left.
    fn spend_key(&self, k: Key, limit: u32) -> bool {
        let mut spent = self.lock();
        let n = spent.entry(k).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }
}

/// The route `index` of `policy` and its limit of uses, if it has one.
fn limited(policy: &Policy, index: usize) -> Option<(&ValidatedRoute, u32)> {
    let route = policy.route(index)?;
    route.uses.map(|limit| (route, limit))
}

/// Whether `route`'s grant has ended now (its `expires` passed, or its uses are spent):
/// the request is judged by what the route went back to, if anything.
pub(crate) fn ended(uses: &Uses, route: &ValidatedRoute) -> bool {
    route
        .expires
        .is_some_and(|at| time::OffsetDateTime::now_utc() >= at)
        || route
            .uses
            .is_some_and(|limit| uses.spent(&key_of(route)) >= limit)
}

/// Whether the route `index` of `policy` (which a request matched) still allows it, now:
/// not expired, and a use left if it has a limit. Spends nothing: [`spend`] does, once
/// DLP let the request go. Routes without `expires` or `uses` always allow.
pub(crate) fn admit(uses: &Uses, policy: &Policy, index: Option<usize>) -> Result<(), Ended> {
    let Some(i) = index else { return Ok(()) };
    if policy
        .route(i)
        .and_then(|r| r.expires)
        .is_some_and(|at| time::OffsetDateTime::now_utc() >= at)
    {
        return Err(Ended::Expired);
    }
    match limited(policy, i) {
        Some((route, limit)) if uses.spent(&key_of(route)) >= limit => Err(Ended::UsedUp),
        _ => Ok(()),
    }
}

/// Spends one use of the route `index` (if it has a limit), as a request leaves. Fails when
/// requests that arrived meanwhile spent the last one.
pub(crate) fn spend(uses: &Uses, policy: &Policy, index: Option<usize>) -> Result<(), Ended> {
    match index.and_then(|i| limited(policy, i)) {
        Some((route, limit)) if !uses.spend_key(key_of(route), limit) => Err(Ended::UsedUp),
        _ => Ok(()),
    }
}

/// The DLP grants one request used: each spent once, given back if the request is refused.
#[derive(Debug)]
pub(crate) struct Taken {
    uses: std::sync::Arc<Uses>,
    taken: Mutex<Vec<Key>>,
}

impl Taken {
    /// Nothing taken yet; counts go to `uses`.
    pub(crate) fn new(uses: std::sync::Arc<Uses>) -> Taken {
        Taken {
            uses,
            taken: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Key>> {
        match self.taken.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether a grant of `grants` (on the route for `host`) lets `rule` through for this
    /// request now; spends the grant's use the first time it does for this request.
    pub(crate) fn allows(&self, host: &str, grants: &[policy::DlpGrant], rule: &str) -> bool {
        let now = time::OffsetDateTime::now_utc();
        for g in grants.iter().filter(|g| g.rule == rule) {
            if g.expires.is_some_and(|at| now >= at) {
                continue;
            }
            let Some(limit) = g.uses else { return true };
            let k = (
                policy::DlpAllowGrant::count_key(host, rule),
                g.grant.clone(),
            );
            let mut taken = self.lock();
            if taken.contains(&k) {
                return true;
            }
            if self.uses.spend_key(k.clone(), limit) {
                taken.push(k);
                return true;
            }
        }
        false
    }

    /// Gives back every use this request took (it was refused).
    pub(crate) fn refund(&self) {
        for k in self.lock().drain(..) {
            self.uses.refund(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn config(yaml: &str) -> EgressConfig {
        policy::parse_routes(yaml, std::path::Path::new("r.yaml")).unwrap()
    }

    fn compiled(yaml: &str) -> Policy {
        Policy::new(policy::validate(&config(yaml)).unwrap())
    }

    #[test]
    fn a_once_route_admits_one_request_across_reloads() {
        let uses = Uses::default();
        let yaml = "routes:\n  - host: a.example\n    uses: 1\n  - host: b.example\n";
        let (c, p) = (config(yaml), compiled(yaml));
        let go = |i| admit(&uses, &p, Some(i)).and_then(|()| spend(&uses, &p, Some(i)));
        assert_eq!(
            [go(0), go(0), go(1), go(1)],
            [Ok(()), Err(Ended::UsedUp), Ok(()), Ok(())]
        );
        // the same route in a new generation keeps its count
        uses.retain(&c);
        assert_eq!(admit(&uses, &p, Some(0)), Err(Ended::UsedUp));
        // gone and approved again: a fresh count
        uses.retain(&config("routes: []\n"));
        assert_eq!(admit(&uses, &p, Some(0)), Ok(()));
    }

    #[test]
    fn admitting_spends_nothing_and_only_one_of_two_admitted_requests_leaves() {
        let uses = Uses::default();
        let p = compiled("routes:\n  - host: a.example\n    uses: 1\n");
        // two requests in flight at once: both admitted, only one may leave
        assert_eq!(admit(&uses, &p, Some(0)), Ok(()));
        assert_eq!(admit(&uses, &p, Some(0)), Ok(()));
        assert_eq!(spend(&uses, &p, Some(0)), Ok(()));
        assert_eq!(spend(&uses, &p, Some(0)), Err(Ended::UsedUp));
        assert_eq!(admit(&uses, &p, Some(0)), Err(Ended::UsedUp));
    }

    #[test]
    fn a_dlp_grant_once_lets_its_rule_through_in_one_request() {
        let uses = std::sync::Arc::new(Uses::default());
        let c = config(
            "routes:\n  - host: a.example\n    dlp_allow_grants:\n      - rule: aws-access-key-id\n        uses: 1\n        grant: 00e5\n      - rule: jwt\n        expires: 2000-01-01T00:00:00Z\n",
        );
        let validated = policy::validate(&c).unwrap();
        let grants = &validated.routes[0].dlp_allow_grants;
        let first = Taken::new(uses.clone());
        // two hits of the rule in one request spend one use
        assert!(first.allows("a.example", grants, "aws-access-key-id"));
        assert!(first.allows("a.example", grants, "aws-access-key-id"));
        assert!(!first.allows("a.example", grants, "jwt"), "expired");
        assert!(!first.allows("a.example", grants, "other"));
        let second = Taken::new(uses.clone());
        assert!(!second.allows("a.example", grants, "aws-access-key-id"));
        // the first request was refused after all: its use comes back
        first.refund();
        assert!(second.allows("a.example", grants, "aws-access-key-id"));
        // and the count is forgotten with the grant
        uses.retain(&config("routes:\n  - host: a.example\n"));
        assert_eq!(uses.snapshot(), vec![]);
    }

    #[test]
    fn an_expired_route_admits_nothing() {
        let uses = Uses::default();
        let at = |d: time::Duration| {
            let t = time::OffsetDateTime::now_utc() + d;
            compiled(&format!(
                "routes:\n  - host: a.example\n    expires: {}\n",
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            ))
        };
        assert_eq!(
            [
                admit(&uses, &at(-time::Duration::seconds(1)), Some(0)),
                admit(&uses, &at(time::Duration::hours(1)), Some(0)),
            ],
            [Err(Ended::Expired), Ok(())]
        );
    }
}
