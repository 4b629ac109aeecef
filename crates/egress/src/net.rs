//! Destination safety: which addresses a name found through DNS may not reach, how odd
//! IPv4 spellings are read, and the resolver seam tests replace.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;

/// Why an address may not be reached through a name resolved by DNS (or an IP literal).
/// `None` means the address is public.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if s[0] == 0x0064 && s[1] == 0xff9b {
                Some("nat64")
            } else if s[0] == 0x2002 {
                Some("6to4")
            } else if s[0] == 0x2001 && s[1] == 0 {
                Some("teredo")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else if s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0 {
                // IPv4-compatible (deprecated) ::a.b.c.d
                Some("ipv4-compatible")
            } else if v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
                Some("metadata")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_private() {
        Some("private")
    } else if o[0] == 169 && o[1] == 254 {
        // covers 169.254.169.254, the cloud metadata address
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("cgnat")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || o[0] >= 240 {
        Some("reserved")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("ietf-protocol")
    } else if o[0] == 198 && (o[1] == 18 || o[1] == 19) {
        Some("benchmarking")
    } else if ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("metadata")
    } else {
        None
    }
}

/// Reads a host as an IP address the way `inet_aton` (and so curl and many libraries)
/// would: `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1` are all 127.0.0.1. Returns `None`
/// for a real host name.
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(ip);
    }
    let h = h.strip_suffix('.').unwrap_or(h);
    let parts: Vec<&str> = h.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        nums.push(parse_c_number(p)?);
    }
    let last = *nums.last()?;
    let head = &nums[..nums.len() - 1];
    if head.iter().any(|n| *n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if rest_bits < 32 && last >= (1u64 << rest_bits) || last > u64::from(u32::MAX) {
        return None;
    }
    let mut value: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        value |= n << (24 - 8 * i as u32);
    }
    value |= last;
    Some(IpAddr::V4(Ipv4Addr::from(u32::try_from(value).ok()?)))
}

fn parse_c_number(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (hex, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        return if radix == 16 { None } else { Some(0) };
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .filter(|n| *n <= u64::from(u32::MAX))
}

/// A boxed future returned by [`Resolve::resolve`].
pub type ResolveFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Turns a host name into addresses. The proxy checks every address it gets and
/// connects to a checked one, so a resolver cannot smuggle a private destination in.
pub trait Resolve: Send + Sync + 'static {
    /// Resolves `host` (never an IP literal) for `port`.
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture;
}

/// The system resolver (getaddrinfo on a blocking thread).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// A fixed table of names, for tests and for hosts pinned in configuration.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    entries: std::collections::HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty table: every lookup fails.
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Adds `host` → `ips`.
    pub fn with(mut self, host: &str, ips: &[IpAddr]) -> StaticResolver {
        self.entries.insert(host.to_ascii_lowercase(), ips.to_vec());
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        let found = self.entries.get(&host.to_ascii_lowercase()).cloned();
        let host = host.to_string();
        Box::pin(async move {
            match found {
                Some(ips) => Ok(ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no address for {host}"),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn reason(s: &str) -> Option<&'static str> {
        forbidden_reason(s.parse().unwrap())
    }

    #[test]
    fn classifies_addresses() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("100.64.0.1", Some("cgnat")),
            ("100.128.0.1", None),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("0.0.0.0", Some("unspecified")),
            ("93.184.216.34", None),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.0.0.1", Some("private")),
            ("::ffff:93.184.216.34", None),
            ("fe80::1", Some("link-local")),
            ("fd00::1", Some("unique-local")),
            ("fd00:ec2::254", Some("unique-local")),
            ("64:ff9b::7f00:1", Some("nat64")),
            ("2002:7f00:1::", Some("6to4")),
            ("2001::1", Some("teredo")),
            ("ff02::1", Some("multicast")),
            ("2606:4700::1111", None),
        ];
        let got: Vec<_> = cases.iter().map(|(s, _)| (*s, reason(s))).collect();
        assert_eq!(got, cases.to_vec());
    }

    #[test]
    fn odd_ipv4_spellings() {
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(parse_ip_literal("2130706433"), lo);
        assert_eq!(parse_ip_literal("0x7f.1"), lo);
        assert_eq!(parse_ip_literal("127.1"), lo);
        assert_eq!(parse_ip_literal("0177.0.0.1"), lo);
        assert_eq!(parse_ip_literal("0x7f000001"), lo);
        assert_eq!(parse_ip_literal("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip_literal("example.com"), None);
        assert_eq!(parse_ip_literal("1.2.3.4.5"), None);
        assert_eq!(parse_ip_literal("256.1.1.1"), None);
        assert_eq!(parse_ip_literal("12abc"), None);
    }
}
