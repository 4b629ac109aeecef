//! Allow/block decisions, credential injection, blocked responses, introspection, reload.

use pretty_assertions::assert_eq;

use super::common::{TOKEN, start};

const ROUTES: &str = r#"
log: all
routes:
  - host: api.test
    connect_to: UPSTREAM
    auth_scheme: Bearer
    token_env: TEST_TOKEN
    matches:
      - paths: [{type: prefix, value: /v1/}]
        methods: [GET, POST]
      - paths: [{type: exact, value: /admin}]
        methods: [GET]
        headers: [{name: x-env, value: test}]
  - host: "*.wild.test"
    port: 443
  - host: other.test
    connect_to: UPSTREAM
"#;

fn pins(h: &mut egress::ProxyConfig, addr: &str) {
    h.connect_to = vec![
        egress::ConnectTo::parse(&format!("a.wild.test:443:{addr}")).unwrap(),
        egress::ConnectTo::parse(&format!("b.wild.test:443:{addr}")).unwrap(),
    ];
}

#[tokio::test]
async fn allows_and_blocks_by_host_path_method_and_header() {
    let h = start(ROUTES).await;
    let ok = h.https("GET", "api.test", 443, "/v1/models", &[]).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok"));

    let cases = [
        ("DELETE", "/v1/models", vec![], "method-not-allowed"),
        ("GET", "/v2/models", vec![], "path-not-allowed"),
        ("GET", "/admin", vec![], "header-not-allowed"),
        (
            "GET",
            "/admin",
            vec![("x-env", "prod")],
            "header-not-allowed",
        ),
    ];
    for (method, path, headers, reason) in cases {
        let r = h.https(method, "api.test", 443, path, &headers).await;
        assert_eq!(
            (r.status, r.header("x-bot-bottle-blocked")),
            (403, Some(reason)),
            "{method} {path}"
        );
        assert!(
            r.body
                .contains(&format!("{method} https://api.test:443{path}")),
            "{}",
            r.body
        );
        assert!(r.body.contains("egress-allow"), "{}", r.body);
    }
    let admin = h
        .https("GET", "api.test", 443, "/admin", &[("x-env", "test")])
        .await;
    assert_eq!(admin.status, 200);
    // only the allowed requests reached the upstream
    let seen: Vec<String> = h
        .upstream
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(seen, vec!["GET /v1/models", "GET /admin"]);
}

#[tokio::test]
async fn wildcard_routes_cover_subdomains_only() {
    let h = super::common::start_with(ROUTES, |c, up| pins(c, &up.to_string())).await;
    for (host, port, want) in [
        // no route: on 443 the tunnel is completed and the request inside refused (below)
        ("wild.test", 443, "HTTP/1.1 200"),
        ("a.wild.test", 8443, "HTTP/1.1 403"),
        ("deep.a.wild.test", 443, "HTTP/1.1 200"),
    ] {
        let (_, head) = test_support::client::connect_tunnel(h.proxy, host, port)
            .await
            .unwrap();
        assert!(head.starts_with(want), "{host}:{port}: {head}");
    }
    let r = h.https("GET", "wild.test", 443, "/anything", &[]).await;
    assert_eq!(
        (r.status, r.header("x-bot-bottle-blocked")),
        (403, Some("host-not-allowed"))
    );
    let r = h.https("GET", "a.wild.test", 443, "/anything", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = h.https("PUT", "b.wild.test", 443, "/x", &[]).await;
    assert_eq!(r.status, 200);
    let sni: Vec<_> = h.upstream.requests().into_iter().map(|r| r.sni).collect();
    assert_eq!(
        sni,
        vec![
            Some("a.wild.test".to_string()),
            Some("b.wild.test".to_string())
        ]
    );
}

#[tokio::test]
async fn injects_the_token_replacing_the_placeholder_only_for_its_host() {
    let h = start(ROUTES).await;
    let r = h
        .https(
            "GET",
            "api.test",
            443,
            "/v1/x",
            &[("authorization", "Bearer placeholder")],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = h
        .https(
            "GET",
            "other.test",
            443,
            "/y",
            &[("authorization", "Bearer placeholder")],
        )
        .await;
    assert_eq!(r.status, 200);
    let reqs = h.upstream.requests();
    assert_eq!(
        reqs[0].header("authorization"),
        vec![format!("Bearer {TOKEN}").as_str()]
    );
    // other.test has no credential: what the client sent goes through, the token does not
    assert_eq!(reqs[1].header("authorization"), vec!["Bearer placeholder"]);
    for r in &reqs {
        assert!(r.header("proxy-authorization").is_empty());
    }
    // never in the log or the introspection output
    let allowlist = h.http_abs("GET", "http://_egress.local/allowlist").await;
    assert_eq!(allowlist.status, 200);
    assert!(!allowlist.body.contains(TOKEN));
    assert!(
        allowlist.body.contains("\"token_env\": \"TEST_TOKEN\""),
        "{}",
        allowlist.body
    );
    // `/routes` is the page's name; `/allowlist` above stays served for bottles started
    // before the rename
    let routes = h.http_abs("GET", "http://_egress.local/routes").await;
    assert_eq!(
        (routes.status, routes.body),
        (allowlist.status, allowlist.body)
    );
    assert!(!h.log_text().contains(TOKEN));
    assert!(!h.log_text().contains("placeholder"));
}

#[tokio::test]
async fn the_token_never_travels_over_plain_http() {
    let plain = test_support::Upstream::start_plain().await;
    let addr = plain.addr().to_string();
    let h = super::common::start(&format!(
        "routes:\n  - host: api.test\n    port: 80\n    connect_to: {addr}\n    auth_scheme: Bearer\n    token_env: TEST_TOKEN\n"
    ))
    .await;
    let tcp = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let mut send = test_support::client::http1(tcp).await;
    let req = http::Request::get("http://api.test/v1/x")
        .header("host", "api.test")
        .header("authorization", "Bearer placeholder")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = test_support::client::send(&mut send, req).await.unwrap();
    assert_eq!(r.status, 200);
    let reqs = plain.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("authorization"), Vec::<&str>::new());
}

#[tokio::test]
async fn connect_to_unknown_host_is_answered_with_403_inside_the_tunnel() {
    let h = start(ROUTES).await;
    let (_, head) = test_support::client::connect_tunnel(h.proxy, "nothere.test", 443)
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let r = h.https("GET", "nothere.test", 443, "/x", &[]).await;
    assert_eq!(
        (r.status, r.header("x-bot-bottle-blocked")),
        (403, Some("host-not-allowed"))
    );
    let plain = h.http_abs("GET", "http://nothere.test/x").await;
    assert_eq!(
        (plain.status, plain.header("x-bot-bottle-blocked")),
        (403, Some("host-not-allowed"))
    );
    assert!(
        plain.body.contains("GET http://nothere.test:80/x"),
        "{}",
        plain.body
    );
}

#[tokio::test]
async fn request_log_has_one_json_line_per_request_without_secrets() {
    let h = start(ROUTES).await;
    h.https(
        "POST",
        "api.test",
        443,
        "/v1/chat?key=secret-query",
        &[("authorization", "Bearer placeholder")],
    )
    .await;
    h.https("GET", "api.test", 443, "/nope", &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let lines = h.log_lines();
    let brief: Vec<(String, String, String, String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["method"].as_str().unwrap().to_string(),
                l["path"].as_str().unwrap().to_string(),
                l["decision"].as_str().unwrap().to_string(),
                l["reason"].as_str().unwrap().to_string(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        brief,
        vec![
            (
                "POST".into(),
                "/v1/chat".into(),
                "allowed".into(),
                "allowed".into(),
                200
            ),
            (
                "GET".into(),
                "/nope".into(),
                "blocked".into(),
                "path-not-allowed".into(),
                403
            ),
        ]
    );
    assert_eq!(lines[0]["bytes_down"], 2);
    assert_eq!(lines[0]["rule"], 0);
    assert!(!h.log_text().contains("secret-query"));
}

#[tokio::test]
async fn reload_swaps_rules_and_refuses_invalid_ones() {
    let h = start(ROUTES).await;
    assert_eq!(
        h.https("GET", "api.test", 443, "/v2/x", &[]).await.status,
        403
    );
    let mut config = h.routes.config();
    let routes = config.routes.as_mut().unwrap();
    routes[0].matches = None;
    h.routes.replace(config.clone()).unwrap();
    assert_eq!(
        h.https("GET", "api.test", 443, "/v2/x", &[]).await.status,
        200
    );

    // invalid: the old rules stay
    let mut bad = config.clone();
    bad.routes.as_mut().unwrap()[1].host = "a.*.test".into();
    let err = h.routes.replace(bad).unwrap_err();
    assert!(err.to_string().contains("routes[1] (a.*.test)"), "{err}");
    let mut missing = config;
    missing.routes.as_mut().unwrap()[2].token_env = Some("NOT_SET".into());
    missing.routes.as_mut().unwrap()[2].auth_scheme = Some("Bearer".into());
    let err = h.routes.replace(missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the route for other.test: token_env NOT_SET is not set in the egress proxy's environment; set it or remove the credential"
    );
    assert_eq!(
        h.https("GET", "api.test", 443, "/v2/x", &[]).await.status,
        200
    );
}

#[tokio::test]
async fn reload_under_load_loses_no_request() {
    let h = std::sync::Arc::new(start(ROUTES).await);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let config = test_support::client_config_for_pem(&h.ca_pem);
            let tls = test_support::client::tls_through_proxy(
                h.proxy, "api.test", 443, "api.test", config,
            )
            .await
            .unwrap();
            let mut send = test_support::client::http1(tls).await;
            let mut statuses = Vec::new();
            for _ in 0..50 {
                let req = http::Request::get("/v1/x")
                    .header("host", "api.test")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                statuses.push(
                    test_support::client::send(&mut send, req)
                        .await
                        .unwrap()
                        .status,
                );
            }
            statuses
        }));
    }
    let base = h.routes.config();
    for i in 0..20 {
        let mut c = base.clone();
        // alternate between two equivalent rule sets that both allow /v1/
        if i % 2 == 0 {
            c.routes.as_mut().unwrap()[0].matches = None;
        }
        h.routes.replace(c).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut total = 0;
    for t in tasks {
        let statuses = t.await.unwrap();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        total += statuses.len();
    }
    assert_eq!(total, 200);
    assert_eq!(h.upstream.requests().len(), 200);
}
