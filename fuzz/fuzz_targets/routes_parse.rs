//! Route files (`routes.yaml`, an `egress:` block, a proposed `routes_yaml`): arbitrary text
//! never panics through parsing, validation and compiling, and a compiled policy answers a
//! few requests without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = policy::parse_routes(text, Path::new("routes.yaml")) else {
        return;
    };
    let Ok(routes) = policy::validate(&config) else {
        return;
    };
    let hosts: Vec<String> = routes.routes.iter().map(|r| r.host_text.clone()).collect();
    let p = policy::Policy::new(routes);
    let headers = http::HeaderMap::new();
    for host in hosts
        .iter()
        .map(String::as_str)
        .chain(["api.example.com", "a.b.example.org."])
    {
        for port in [80, 443, 8443] {
            let d = p.decide(host, port, "GET", "/v1/x/../y", &headers);
            assert_eq!(d.allowed, d.reason == policy::Reason::Allowed);
        }
    }
});
