//! The pod's packet filter: what the `network` init container installs with `nft -f`.
//!
//! A pod's containers share one network namespace, so the agent and the sidecar bundle see
//! the same interfaces; what separates them is their uid. The rules match the uid of the
//! socket that sends (`meta skuid`, output hook):
//!
//! * the agent's uid reaches `127.0.0.1` on the sidecar's ports and nothing else — no other
//!   loopback port (the bundle's internal listeners), no DNS, no pod IP, no IPv6; refused
//!   at once (TCP reset, ICMP) so the agent fails fast instead of hanging;
//! * the sidecar's uid goes out (to the upstreams, through the cluster's DNS);
//! * anything else that is not loopback (root in the pod, a uid nobody expected) is dropped:
//!   the policy is deny, so a mistake in the uids fails closed.
//!
//! Loopback stays open to other uids so that the kubelet's port-forward (which connects to
//! `localhost:<port>` inside the namespace as root) reaches supervise from the operator's
//! laptop. The agent has no `NET_ADMIN` and cannot change the table.

use std::fmt::Write as _;

/// The table the rules live in (one per pod network namespace).
pub const TABLE: &str = "bot_bottle";

/// The ruleset for an agent uid, the sidecar's uid and the sidecar ports on loopback.
/// Rejects (returns `None`) uids that would make the rules meaningless: root, or the same
/// uid for both sides. The caller validates earlier with the same rule and a full message.
pub fn ruleset(agent_uid: u32, sidecar_uid: u32, ports: &[u16]) -> Option<String> {
    if agent_uid == 0 || sidecar_uid == 0 || agent_uid == sidecar_uid || ports.is_empty() {
        return None;
    }
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let ports = sorted
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = String::new();
    // `flush` after `add` makes the file idempotent (a restarted init container
    // replaces the table instead of appending a second copy).
    let _ = writeln!(out, "add table inet {TABLE}");
    let _ = writeln!(out, "flush table inet {TABLE}");
    let _ = writeln!(out, "table inet {TABLE} {{");
    let _ = writeln!(out, "  chain output {{");
    let _ = writeln!(
        out,
        "    type filter hook output priority filter; policy drop;"
    );
    let _ = writeln!(
        out,
        "    meta skuid {agent_uid} oifname \"lo\" ip daddr 127.0.0.1 tcp dport {{ {ports} }} accept"
    );
    let _ = writeln!(
        out,
        "    meta skuid {agent_uid} meta l4proto tcp reject with tcp reset"
    );
    let _ = writeln!(out, "    meta skuid {agent_uid} reject");
    let _ = writeln!(out, "    meta skuid {agent_uid} drop");
    let _ = writeln!(out, "    meta skuid {sidecar_uid} accept");
    let _ = writeln!(out, "    oifname \"lo\" accept");
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "}}");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_confines_the_agent_uid_to_the_sidecar_ports() {
        insta::assert_snapshot!(ruleset(1000, 1001, &[3130, 3128, 3129, 3128]).unwrap());
    }

    #[test]
    fn root_or_one_uid_for_both_sides_or_no_port_gives_no_ruleset() {
        assert_eq!(ruleset(0, 1001, &[3128]), None);
        assert_eq!(ruleset(1000, 0, &[3128]), None);
        assert_eq!(ruleset(1000, 1000, &[3128]), None);
        assert_eq!(ruleset(1000, 1001, &[]), None);
    }
}
