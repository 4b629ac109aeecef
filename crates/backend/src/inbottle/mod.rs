//! Code that runs inside a bottle, apart from the host side of the backends.
//!
//! Everything here executes as (or on the way to becoming) the bottle's PID 1, next to the
//! agent: [`native_helper`] re-executes the launcher's binary to build a native bottle (user,
//! mount, PID and network namespaces, the mount plan, seccomp, Landlock) and then forwards the
//! sidecar ports and reaps; [`docker_init`] is the agent container's PID 1 (it relays the
//! sidecar ports on loopback and waits for the firewall before starting the agent).
//!
//! What this side must never hold: a Docker client, a tokio runtime other than the
//! single-threaded event loop that relays the sidecar ports, the home directory's
//! paths other than those the launcher hands over in its request, or any credential. The
//! launcher speaks to it only through the JSON request / status types defined here
//! ([`native_helper::HelperRequest`], [`native_helper::HelperStatus`],
//! [`docker_init::InitConfig`]), and runs it as a hidden subcommand of its own executable
//! (`bot-bottle`'s `main` dispatches [`native_helper::HELPER_SUBCOMMAND`] and
//! [`docker_init::INIT_SUBCOMMAND`] before anything else starts).
//!
//! Why a module and not a crate: both entry points are the very binary that launches the
//! bottle (re-executed or bind-mounted read-only into the container), so a separate crate would
//! not make that binary smaller or change what is inside a bottle; it would only add a third
//! crate for the request types both sides share. The boundary is kept by imports instead: this
//! module uses `crate::native`'s mount plan, seccomp filter and forwarder (the host side
//! computes the plan, this side applies it), never `crate::docker`'s engine client.

#[cfg(target_os = "linux")]
mod agent_exec;
pub mod docker_init;
#[cfg(target_os = "linux")]
pub mod native_helper;
#[cfg(target_os = "linux")]
pub mod qemu_guest;
mod relay;
pub mod smolvm_guest;
