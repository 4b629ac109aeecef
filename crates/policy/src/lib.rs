//! The egress route model.
//!
//! One shape serves three places: a bottle's `egress:` block in the manifest, the
//! `routes.yaml` file the sidecar bundle reads, and the `routes_yaml` an agent proposes
//! through supervise. Keeping it in one small crate means the proxy, the manifest loader
//! and the supervise server can never disagree on what a route is.

pub mod raw;

pub use raw::{EgressConfig, HeaderMatch, LogMode, PathMatch, PathMatchKind, Route, RouteMatch};
