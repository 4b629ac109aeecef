//! The egress proxy: a forward proxy that terminates TLS inside `CONNECT` tunnels with
//! leaf certificates from the bottle CA, checks **every** request against the routes,
//! injects credentials the bottle never sees, and streams bodies both ways.
//!
//! Guarantees: a destination reached through DNS (or an IP literal) is never loopback,
//! private, link-local or otherwise internal unless the operator pinned it; the address
//! connected to is the address checked; the `Host` header agrees with the tunnel target
//! and SNI; ambiguous HTTP/1 framing is refused before it is parsed; tokens never leave
//! for another host and never appear in logs, errors or introspection; every allowed
//! request is scanned for secrets on its way out (outbound DLP, `dlp` module), and one
//! carrying a secret is refused, redacted or logged as its route says.
//!
//! Embedding (the sidecar bundle):
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let proxy = egress::Proxy::new(egress::ProxyConfig::new("/state/ca"), policy::EgressConfig::default())?;
//! let routes = proxy.routes(); // routes.replace(new_config) after an approval
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! proxy.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod body;
pub mod ca;
pub mod config;
mod dlp;
mod grant;
mod idle;
pub mod log;
pub mod net;
mod park;
mod proxy;
mod routes;
pub mod standalone;
mod strict;
mod upstream;

pub use body::IdleTimeout;
pub use config::{ConnectTo, ConnectToError, EnvReader, Limits, ProxyConfig, Timeouts};
pub use dlp::websocket::MESSAGE_LIMIT as WEBSOCKET_MESSAGE_LIMIT;
pub use dlp::{DlpLog, MARKER as DLP_MARKER};
pub use log::{DlpHit, DlpHitSink, LogEntry, LogSink, WITHHELD_PATH};
pub use net::{Resolve, ResolveFuture, StaticResolver, SystemResolver};
#[doc(hidden)]
pub use proxy::fuzzing;
pub use proxy::{INTROSPECTION_HOST, Proxy, ProxyError, serve};
pub use routes::{ReloadError, RoutesHandle, Secret};
pub use upstream::ConnectError;
