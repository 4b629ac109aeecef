//! The end of a time-limited approval, enforced where the route is enforced.
//!
//! An operator may approve a route `once` (the route carries `uses: 1`) or for a duration
//! (`expires: <RFC 3339>`). Every request a route allows passes through [`admit`] before
//! anything leaves: an expired route allows nothing, whatever the clock of supervise or
//! the dashboard says and whether they run at all; a route with `uses` allows that many
//! requests, counted here. The counts belong to the route (its host and the proposal that
//! granted it), not to one generation of the routes: a reload that carries the route
//! (another approval, say, even one that narrowed it) keeps its count, and a route that is
//! gone from the routes loses it. Supervise's sweeper reads the counts
//! ([`crate::RoutesHandle::used`]) to take used-up and expired routes out of the live file.

use std::collections::HashMap;
use std::sync::Mutex;

use policy::{EgressConfig, Policy, Route};

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

impl Uses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u32>> {
        match self.spent.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Forgets the counts of routes `config` no longer has.
    pub(crate) fn retain(&self, config: &EgressConfig) {
        let keys: Vec<Key> = config.routes.iter().flatten().map(key).collect();
        self.lock().retain(|k, _| keys.contains(k));
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

    /// Spends one request of `route` if it has one left.
    fn spend(&self, route: &Route, limit: u32) -> bool {
        let mut spent = self.lock();
        let n = spent.entry(key(route)).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }
}

/// Whether the route `index` of `policy` (which a request matched) still allows it, now;
/// spends one of its uses if it has a limit. Routes without `expires` or `uses` always do.
pub(crate) fn admit(uses: &Uses, policy: &Policy, index: Option<usize>) -> Result<(), Ended> {
    let Some(i) = index else { return Ok(()) };
    if policy
        .route(i)
        .and_then(|r| r.expires)
        .is_some_and(|at| time::OffsetDateTime::now_utc() >= at)
    {
        return Err(Ended::Expired);
    }
    let route = policy
        .routes()
        .config
        .routes
        .as_deref()
        .and_then(|r| r.get(i));
    match route.and_then(|r| r.uses.map(|limit| (r, limit))) {
        Some((route, limit)) if !uses.spend(route, limit) => Err(Ended::UsedUp),
        _ => Ok(()),
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
        assert_eq!(
            [
                admit(&uses, &p, Some(0)),
                admit(&uses, &p, Some(0)),
                admit(&uses, &p, Some(1)),
                admit(&uses, &p, Some(1)),
            ],
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
