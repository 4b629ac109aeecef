//! Approvals that end: a route approved once serves one request, a route approved for a
//! while stops at its `expires` with nothing but the proxy running.

use pretty_assertions::assert_eq;

use super::common::start;

#[tokio::test]
async fn a_once_route_serves_exactly_one_request() {
    let h = start(
        "routes:\n  - host: api.test\n    connect_to: UPSTREAM\n    uses: 1\n  - host: other.test\n    connect_to: UPSTREAM\n",
    )
    .await;
    let first = h.https("GET", "api.test", 443, "/one", &[]).await;
    let second = h.https("GET", "api.test", 443, "/two", &[]).await;
    let other = h.https("GET", "other.test", 443, "/three", &[]).await;
    assert_eq!(
        [
            (first.status, first.header("x-bot-bottle-blocked")),
            (second.status, second.header("x-bot-bottle-blocked")),
            (other.status, other.header("x-bot-bottle-blocked")),
        ],
        [(200, None), (403, Some("grant-used-up")), (200, None)]
    );
    assert!(
        second.body.contains(
            "routes[0] (api.test) was approved for a limited number of requests, all used"
        ),
        "{}",
        second.body
    );
    let seen: Vec<String> = h
        .upstream
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(seen, vec!["/one", "/three"]);
    // The count belongs to the route: a reload that carries it keeps it used up.
    assert_eq!(h.routes.used(), vec![("api.test".to_owned(), None, 1)]);
    h.routes.replace(h.routes.config()).unwrap();
    assert_eq!(
        h.https("GET", "api.test", 443, "/four", &[]).await.status,
        403
    );
}

#[tokio::test]
async fn a_route_for_a_while_stops_at_its_expiry_with_nobody_watching() {
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::seconds(4))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let h = start(&format!(
        "routes:\n  - host: api.test\n    connect_to: UPSTREAM\n    expires: {expires}\n"
    ))
    .await;
    let at = time::OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339)
        .unwrap();
    let before = h.https("GET", "api.test", 443, "/before", &[]).await;
    // It works until its time; only a machine too slow to ask within 4 s sees it refused.
    if time::OffsetDateTime::now_utc() < at {
        assert_eq!(before.status, 200, "{}", before.body);
    } else {
        eprintln!("note: the first request came after the expiry; only the end is checked");
    }
    // Wait on the effect: the same request until the proxy refuses it (bounded).
    let mut last = before;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        last = h.https("GET", "api.test", 443, "/after", &[]).await;
        if last.status != 200 {
            break;
        }
    }
    assert_eq!(
        (last.status, last.header("x-bot-bottle-blocked")),
        (403, Some("grant-expired"))
    );
    assert!(
        time::OffsetDateTime::now_utc()
            >= time::OffsetDateTime::parse(
                &expires,
                &time::format_description::well_known::Rfc3339
            )
            .unwrap(),
        "refused only once the expiry had passed"
    );
}
