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

/// The statuses and block reasons of some answers, for one whole-value comparison.
fn outcomes(answers: &[&test_support::client::Collected]) -> Vec<(u16, Option<String>)> {
    answers
        .iter()
        .map(|a| {
            (
                a.status,
                a.header("x-bot-bottle-blocked").map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_request_dlp_refuses_uses_up_no_once_grant() {
    use super::dlp::{KEY, post};
    let h = start("routes:\n  - host: api.test\n    connect_to: UPSTREAM\n    uses: 1\n").await;
    // a key in the body (the first window, read before the upstream is contacted) and one
    // in a header: DLP refuses both, and the route's one request is still there
    let in_body = post(
        &h,
        "api.test",
        "/body",
        &[],
        format!("{{\"k\":\"{KEY}\"}}").as_bytes(),
    )
    .await;
    let in_header = post(&h, "api.test", "/header", &[("x-key", KEY)], b"{}").await;
    let clean = post(&h, "api.test", "/clean", &[], b"{}").await;
    let after = post(&h, "api.test", "/after", &[], b"{}").await;
    assert_eq!(
        outcomes(&[&in_body, &in_header, &clean, &after]),
        vec![
            (403, Some("dlp aws-access-key-id".to_owned())),
            (403, Some("dlp aws-access-key-id".to_owned())),
            (200, None),
            (403, Some("grant-used-up".to_owned())),
        ]
    );
    let seen: Vec<String> = h
        .upstream
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(seen, vec!["/clean"]);
}

#[tokio::test]
async fn a_dlp_rule_granted_once_or_for_a_while_lets_the_rule_through_then_not() {
    use super::dlp::{KEY, post};
    let future = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let h = start(&format!(
        "routes:
  - host: api.test
    connect_to: UPSTREAM
    dlp_allow_grants:
      - rule: aws-access-key-id
        uses: 1
        grant: 00000000000000e5
  - host: other.test
    connect_to: UPSTREAM
    dlp_allow_grants:
      - rule: aws-access-key-id
        expires: {future}
        grant: 00000000000000e6
  - host: b.wild.test
    connect_to: UPSTREAM
    dlp_allow_grants:
      - rule: aws-access-key-id
        expires: 2020-01-01T00:00:00Z
        grant: 00000000000000e7
"
    ))
    .await;
    let body = format!("{{\"k\":\"{KEY}\",\"again\":\"{KEY}\"}}");
    let once = post(&h, "api.test", "/once", &[], body.as_bytes()).await;
    let twice = post(&h, "api.test", "/twice", &[], body.as_bytes()).await;
    let clean = post(&h, "api.test", "/clean", &[], b"{}").await;
    let while_1 = post(&h, "other.test", "/w1", &[], body.as_bytes()).await;
    let while_2 = post(&h, "other.test", "/w2", &[], body.as_bytes()).await;
    let expired = post(&h, "b.wild.test", "/expired", &[], body.as_bytes()).await;
    assert_eq!(
        outcomes(&[&once, &twice, &clean, &while_1, &while_2, &expired]),
        vec![
            (200, None),
            (403, Some("dlp aws-access-key-id".to_owned())),
            (200, None),
            (200, None),
            (200, None),
            (403, Some("dlp aws-access-key-id".to_owned())),
        ]
    );
    let seen: Vec<String> = h
        .upstream
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(seen, vec!["/once", "/clean", "/w1", "/w2"]);
    // the count is the grant's, read by supervise's sweeper like a route's
    assert_eq!(
        h.routes.used(),
        vec![(
            "api.test dlp aws-access-key-id".to_owned(),
            Some("00000000000000e5".to_owned()),
            1
        )]
    );
}
