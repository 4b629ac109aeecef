//! The egress request head as it reaches our code: an optional `CONNECT` (the tunnel's
//! target, which is also the leaf certificate's name and so the SNI the client checked),
//! then one HTTP/1 request head, through the same steps as the proxy — the framing check
//! (`StrictIo`), httparse, the target of an absolute-form request, the checks before the
//! routes (`Host` / authority against the target, `CONNECT` inside, limits), hop-by-hop
//! headers removed, `Policy::judge`.
//!
//! Oracles: nothing panics; a request that is allowed is one the route matcher allows for
//! that host and port, its `Host` header and URI authority (when given) name the same place
//! as the target, the target's host is already in its one spelling, and the path forwarded
//! is judged the same way again (allowed, and forwarded unchanged).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use egress::fuzzing;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use policy::{Ask, Policy};

const ROUTES: &str = r#"
routes:
  - host: api.example.test
    matches:
      - paths: [{type: prefix, value: /v1/}]
        methods: [GET, POST]
      - paths: [{type: exact, value: /scoped}]
        headers: [{name: x-scope, value: read}]
  - host: "*.wild.test"
  - host: plain.test
    port: 8080
    matches:
      - paths: [{type: prefix, value: /ok/}]
  - host: "10.1.2.3"
    port: 8443
"#;

const HOSTS: [&str; 14] = [
    "api.example.test",
    "API.Example.TEST",
    "api.example.test.",
    "a.wild.test",
    "wild.test",
    "plain.test",
    "10.1.2.3",
    "0x0a.1.2.3",
    "[::1]",
    "evil.test",
    "user@api.example.test",
    "api.example.test@evil.test",
    "api.example.test%2eevil.test",
    "_egress.local",
];
const PORTS: [&str; 9] = [
    "", ":443", ":0443", ":80", ":8080", ":8443", ":", ":65536", ":443:1",
];
const PATHS: [&str; 12] = [
    "/v1/x",
    "/v1/../admin",
    "/v1/%2e%2e/admin",
    "/scoped",
    "/ok/a",
    "/v1//x",
    "/v1/x;a=b",
    "/v1\\x",
    "*",
    "/",
    "/v1/x?q=1",
    "",
];
const METHODS: [&str; 8] = [
    "GET", "POST", "CONNECT", "PUT", "get", "OPTIONS", "DELETE", "PATCH",
];
const NAMES: [&str; 14] = [
    "Host",
    "host",
    "X-Scope",
    "Connection",
    "Upgrade",
    "Transfer-Encoding",
    "Content-Length",
    "Proxy-Authorization",
    "X-HTTP-Method-Override",
    "Keep-Alive",
    "TE",
    "Authorization",
    "X-Scope ",
    "Proxy-Foo",
];
const VALUES: [&str; 10] = [
    "read",
    "write",
    "close, x-scope",
    "upgrade",
    "websocket",
    "chunked",
    "0",
    "5, 5",
    "keep-alive",
    "\tread",
];

#[derive(Arbitrary, Debug)]
enum Part {
    Pick(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Target {
    /// origin-form: a path
    Origin(Part),
    /// absolute-form: scheme, host, port, path
    Absolute(u8, Part, u8, Part),
    /// authority-form: host, port
    Authority(Part, u8),
}

#[derive(Arbitrary, Debug)]
enum Head {
    /// Built from the pools (and raw strings): reaches the checks after the framing one.
    Built {
        method: Part,
        target: Target,
        headers: Vec<(Part, Part)>,
    },
    /// Bytes as they came (the seed corpus: heads from the tests).
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// A `CONNECT host:port` first: the request then travels inside that tunnel.
    connect: Option<(Part, u8)>,
    head: Head,
}

fn pick<'a>(p: &'a Part, pool: &[&'a str]) -> &'a str {
    match p {
        Part::Pick(i) => pool[usize::from(*i) % pool.len()],
        Part::Raw(s) => s.as_str(),
    }
}

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        let cfg = policy::parse_routes(ROUTES, Path::new("routes.yaml")).expect("routes parse");
        Policy::new(policy::validate(&cfg).expect("routes validate"))
    })
}

fn judge_ok(
    p: &Policy,
    host: &str,
    port: u16,
    tls: bool,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> (bool, String) {
    let j = p.judge(
        host,
        port,
        &Ask {
            tls,
            method,
            path,
            query,
            headers,
            upgrade: None,
        },
    );
    (j.decision.allowed, j.path.into_owned())
}

fuzz_target!(|input: Input| {
    let p = policy();
    // The tunnel, as `connect` sets it up.
    let tunnel = match &input.connect {
        None => None,
        Some((h, port)) => {
            let auth = format!(
                "{}{}",
                pick(h, &HOSTS),
                PORTS[usize::from(*port) % PORTS.len()]
            );
            let Ok(uri) = auth.parse::<Uri>() else { return };
            let Ok((host, port)) = fuzzing::connect_target(&uri) else {
                return;
            };
            if p.route_for(&host, port, true).is_none() {
                return;
            }
            assert_eq!(
                policy::normalize_host(&host),
                host,
                "the tunnel's host in one spelling"
            );
            Some((host, port))
        }
    };

    // The head as the client sent it.
    let head = match &input.head {
        Head::Raw(bytes) => bytes.clone(),
        Head::Built {
            method,
            target,
            headers,
        } => {
            let method = pick(method, &METHODS);
            let target = match target {
                Target::Origin(path) => pick(path, &PATHS).to_owned(),
                Target::Absolute(scheme, h, port, path) => format!(
                    "{}://{}{}{}",
                    ["http", "https", "HTTP", "ftp"][usize::from(*scheme) % 4],
                    pick(h, &HOSTS),
                    PORTS[usize::from(*port) % PORTS.len()],
                    pick(path, &PATHS)
                ),
                Target::Authority(h, port) => {
                    format!(
                        "{}{}",
                        pick(h, &HOSTS),
                        PORTS[usize::from(*port) % PORTS.len()]
                    )
                }
            };
            let mut head = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
            for (n, v) in headers.iter().take(120) {
                head.extend_from_slice(pick(n, &NAMES).as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(pick(v, &VALUES).as_bytes());
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"\r\n");
            head
        }
    };

    // The framing check, then the parse hyper makes.
    if fuzzing::strict_head(&head).is_err() {
        return;
    }
    let mut slots = vec![httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = req.parse(&head) else {
        return;
    };
    let (Some(m), Some(t)) = (req.method, req.path) else {
        return;
    };
    let Ok(method) = Method::from_bytes(m.as_bytes()) else {
        return;
    };
    let Ok(uri) = t.parse::<Uri>() else { return };
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        headers.append(n, v);
    }

    // Where it goes.
    let (host, port, tls) = match &tunnel {
        Some((h, port)) => (h.clone(), *port, true),
        None if method == Method::CONNECT => return,
        None => match fuzzing::plain_target(&uri) {
            Ok((h, port)) => (h, port, false),
            Err(_) => return,
        },
    };
    if host == egress::INTROSPECTION_HOST {
        return;
    }
    if fuzzing::check_head(&method, &uri, &headers, tls, &host, port).is_err() {
        return;
    }
    let host_header = headers.get(http::header::HOST).cloned();
    fuzzing::strip_hop_by_hop(&mut headers);
    let (allowed, forwarded) = judge_ok(
        p,
        &host,
        port,
        tls,
        method.as_str(),
        uri.path(),
        uri.query(),
        &headers,
    );
    if !allowed {
        return;
    }
    assert!(
        p.route_for(&host, port, tls).is_some(),
        "allowed without a route: {host}:{port}"
    );
    assert_eq!(
        policy::normalize_host(&host),
        host,
        "the target's host in one spelling"
    );
    if let Some(h) = host_header {
        let h = h.to_str().expect("a Host that passed is text");
        assert!(
            fuzzing::same_place(h, tls, &host, port),
            "Host {h:?} is not {host}:{port}"
        );
    }
    if let Some(a) = uri.authority() {
        assert!(
            fuzzing::same_place(a.as_str(), tls, &host, port),
            "authority {a} is not {host}:{port}"
        );
    }
    let (again, forwarded_again) = judge_ok(
        p,
        &host,
        port,
        tls,
        method.as_str(),
        &forwarded,
        uri.query(),
        &headers,
    );
    assert!(
        again,
        "the forwarded path {forwarded:?} is refused (sent {:?})",
        uri.path()
    );
    assert_eq!(
        forwarded_again, forwarded,
        "the forwarded path is not in its one spelling"
    );
});
