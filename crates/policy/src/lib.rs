//! The egress route model.
//!
//! One shape serves three places: a bottle's `egress:` block in the manifest, the
//! `routes.yaml` file the sidecar bundle reads, and the `routes_yaml` an agent proposes
//! through supervise. Keeping it in one small crate means the proxy, the manifest loader
//! and the supervise server can never disagree on what a route is.
//!
//! Layers: [`raw`] is what a user writes; [`parse`] turns YAML text into it with located
//! errors; [`validate`](crate::validate()) checks it and yields [`ValidatedRoutes`];
//! [`Policy`] compiles those into a fast matcher the proxy asks for every request.

pub mod matcher;
pub mod parse;
pub mod path;
pub mod raw;
pub mod validate;

pub use matcher::{Ask, Decision, Judged, METHOD_OVERRIDE_HEADERS, Policy, Reason};
pub use parse::{ParseError, load_routes_file, parse_routes};
pub use path::PathProblem;
pub use raw::{
    DlpAllowGrant, DlpMode, EgressConfig, HeaderMatch, LogMode, PathMatch, PathMatchKind, Route,
    RouteMatch,
};
pub use validate::{
    ConnectTarget, CredentialSpec, DlpGrant, MatchSpec, PolicyError, RouteAt, RouteHost,
    ValidatedRoute, ValidatedRoutes, normalize_host, valid_dns_name, validate,
};
