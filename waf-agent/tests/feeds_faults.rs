//! Every fault a feed server can produce keeps the last good list in the maps, reports
//! the failure, and shows up in status.

mod feeds_support;

use std::time::Duration;

use feeds_support::*;
use waf_agent::{
    config::FeedSource,
    feeds::{FailureKind, FeedEvent, RefreshError, RefreshOutcome},
};

fn firehol() -> Vec<String> {
    strings(&[
        "0.0.0.0/8",
        "192.0.2.0/24",
        "198.51.100.7/32",
        "203.0.113.64/26",
        "2001:db8:bad::/48",
    ])
}

fn kind_of(r: Result<RefreshOutcome, RefreshError>) -> FailureKind {
    match r {
        Err(RefreshError::Failed { kind, .. }) => kind,
        other => panic!("expected a failed refresh, got {other:?}"),
    }
}

#[tokio::test]
async fn faults_keep_the_last_good_list() {
    let server = Server::start().await;
    server.set(
        "/list",
        Fixture::Ok {
            body: fixture("firehol_level1.netset"),
            content_type: "text/plain",
            etag: Some("\"v1\"".into()),
        },
    );
    let h = Harness::start(
        &reputation(vec![feed(
            "list",
            FeedSource::Url(server.url("/list")),
            "auto",
        )]),
        None,
        clock(),
    );
    let mut h = h;
    h.refresh("list").await.expect("good list applies");
    assert_eq!(h.deny(), firehol());
    h.drain();

    let html = fixture("html_504.html");
    let mut big = Vec::new();
    while big.len() <= 64 * 1024 {
        big.extend_from_slice(b"192.0.2.1\n");
    }
    let faults: Vec<(&str, Fixture, FailureKind)> = vec![
        (
            "html 504",
            Fixture::Status {
                code: 504,
                body: html.clone(),
                content_type: "text/html",
            },
            FailureKind::Status(504),
        ),
        (
            "html page with 200",
            Fixture::Ok {
                body: html,
                content_type: "text/html",
                etag: None,
            },
            FailureKind::Html,
        ),
        (
            "404",
            Fixture::Status {
                code: 404,
                body: b"not found".to_vec(),
                content_type: "text/plain",
            },
            FailureKind::Status(404),
        ),
        (
            "empty",
            Fixture::Ok {
                body: Vec::new(),
                content_type: "text/plain",
                etag: None,
            },
            FailureKind::Empty,
        ),
        (
            "short read against content-length",
            Fixture::ShortRead {
                body: fixture("firehol_level1.netset")[..90].to_vec(),
                declared: 400,
            },
            FailureKind::Truncated,
        ),
        (
            "truncated mid-line",
            Fixture::CloseDelimited {
                body: fixture("truncated_cut.txt"),
            },
            FailureKind::Truncated,
        ),
        (
            "oversized",
            Fixture::Ok {
                body: big,
                content_type: "text/plain",
                etag: None,
            },
            FailureKind::TooLarge,
        ),
        (
            "slow past the timeout",
            Fixture::Slow {
                delay: Duration::from_secs(5),
            },
            FailureKind::Timeout,
        ),
    ];
    for (i, (what, fixture, kind)) in faults.into_iter().enumerate() {
        server.set("/list", fixture);
        assert_eq!(kind_of(h.refresh("list").await), kind, "{what}");
        assert_eq!(h.deny(), firehol(), "{what}: maps keep the last good list");
        let events = h.drain();
        assert!(
            events.contains(&FeedEvent::KeptLastGood {
                feed: "list".into(),
                entries: 5,
                kind
            }),
            "{what}: events {events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, FeedEvent::FetchFailed { kind: k, .. } if *k == kind)),
            "{what}: events {events:?}"
        );
        let st = h.status("list");
        assert_eq!(st.consecutive_failures, i as u64 + 1, "{what}");
        assert_eq!(st.failures_total, i as u64 + 1, "{what}");
        assert!(st.stale, "{what}: a failing feed shows as stale");
        assert_eq!(st.last_error_kind, Some(kind), "{what}");
        assert_eq!(st.entries, 5, "{what}");
    }

    server.set(
        "/list",
        Fixture::Ok {
            body: fixture("firehol_level1.netset"),
            content_type: "text/plain",
            etag: Some("\"v1\"".into()),
        },
    );
    assert_eq!(h.refresh("list").await, Ok(RefreshOutcome::NotModified));
    let last = server.seen().pop().expect("a request");
    assert_eq!(last.header("if-none-match"), Some("\"v1\""));
    let st = h.status("list");
    assert_eq!((st.consecutive_failures, st.stale), (0, false));
    h.stop().await;
}

#[tokio::test]
async fn connection_refused_and_unresolvable_host_fail_cleanly() {
    // A bound socket that never listens: the port stays ours, and connecting to it is
    // refused (a released port could be taken by another process meanwhile).
    let closed = tokio::net::TcpSocket::new_v4().expect("socket");
    closed.set_reuseaddr(false).expect("exclusive port");
    closed.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let port = closed.local_addr().expect("addr").port();
    // A generous timeout: these fail at once, and a loaded machine must not turn the
    // failure into a timeout.
    let mut feeds = vec![
        feed(
            "refused",
            FeedSource::Url(format!("http://127.0.0.1:{port}/refused")),
            "auto",
        ),
        feed(
            "nxdomain",
            FeedSource::Url("http://feeds.example.invalid/list".into()),
            "auto",
        ),
    ];
    for f in &mut feeds {
        f.timeout_seconds = 20;
    }
    let mut h = Harness::start(&reputation(feeds), None, clock());
    let refused = h.refresh("refused").await;
    assert!(
        matches!(
            &refused,
            Err(RefreshError::Failed {
                kind: FailureKind::Connect,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(kind_of(h.refresh("nxdomain").await), FailureKind::Resolve);
    assert!(h.deny().is_empty());
    let events = h.drain();
    assert!(events.contains(&FeedEvent::KeptLastGood {
        feed: "nxdomain".into(),
        entries: 0,
        kind: FailureKind::Resolve
    }));
    let st = h.status("refused");
    assert_eq!(
        (st.failures_total, st.last_success, st.stale),
        (1, None, true)
    );
    assert_eq!(
        h.refresh("nope").await,
        Err(RefreshError::UnknownFeed("nope".into()))
    );
    h.stop().await;
    drop(closed);
}

#[tokio::test]
async fn shrink_to_ten_percent_is_refused() {
    let server = Server::start().await;
    let full: String = (0..20).map(|i| format!("198.51.100.{i}\n")).collect();
    let tenth: String = (0..2).map(|i| format!("198.51.100.{i}\n")).collect();
    server.set(
        "/list",
        Fixture::Ok {
            body: full.into_bytes(),
            content_type: "text/plain",
            etag: None,
        },
    );
    let h = Harness::start(
        &reputation(vec![feed(
            "list",
            FeedSource::Url(server.url("/list")),
            "plain",
        )]),
        None,
        clock(),
    );
    h.refresh("list").await.expect("full list applies");
    assert_eq!(h.deny().len(), 20);
    server.set(
        "/list",
        Fixture::Ok {
            body: tenth.into_bytes(),
            content_type: "text/plain",
            etag: None,
        },
    );
    assert_eq!(kind_of(h.refresh("list").await), FailureKind::Shrink);
    assert_eq!(h.deny().len(), 20, "the last good list stays");
    h.stop().await;
}

#[tokio::test]
async fn declared_record_count_mismatch_is_refused() {
    let server = Server::start().await;
    server.set("/drop.json", ok("spamhaus_drop_count_mismatch.json"));
    let h = Harness::start(
        &reputation(vec![feed(
            "drop",
            FeedSource::Url(server.url("/drop.json")),
            "spamhaus_json",
        )]),
        None,
        clock(),
    );
    assert_eq!(kind_of(h.refresh("drop").await), FailureKind::CountMismatch);
    assert!(h.deny().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn feed_that_overflows_its_map_reports_map_full() {
    let server = Server::start().await;
    server.set("/list", ok("spamhaus_drop.txt"));
    let sink = waf_agent::feeds::MemorySink::new(waf_agent::feeds::SinkCapacity {
        deny_exact: waf_agent::feeds::MapFill { size: 10, used: 0 },
        deny_net: waf_agent::feeds::MapFill { size: 1, used: 0 },
        ban: waf_agent::feeds::MapFill { size: 10, used: 0 },
        allow: waf_agent::feeds::MapFill { size: 10, used: 0 },
    });
    let mut h = Harness::start_with(
        &reputation(vec![feed(
            "list",
            FeedSource::Url(server.url("/list")),
            "auto",
        )]),
        None,
        clock(),
        sink,
    );
    assert_eq!(kind_of(h.refresh("list").await), FailureKind::MapFull);
    assert!(h.deny().is_empty(), "nothing half-applied");
    let events = h.drain();
    assert!(
        events.contains(&FeedEvent::MapFull {
            feed: "list".into(),
            map: waf_agent::feeds::MapKind::DenyNet,
            requested: 2,
            available: 1
        }),
        "events: {events:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn last_modified_is_sent_back_as_if_modified_since_and_304_keeps_the_list() {
    let server = Server::start().await;
    let date = "Wed, 02 Dec 2026 10:00:00 GMT".to_owned();
    server.set(
        "/dated",
        Fixture::Dated {
            body: fixture("firehol_level1.netset"),
            last_modified: date.clone(),
        },
    );
    let h = Harness::start(
        &reputation(vec![feed(
            "dated",
            FeedSource::Url(server.url("/dated")),
            "auto",
        )]),
        None,
        clock(),
    );
    h.refresh("dated").await.expect("first fetch applies");
    assert_eq!(h.deny(), firehol());
    let first = server.seen().pop().expect("a request");
    assert_eq!(
        first.header("if-modified-since"),
        None,
        "nothing to send yet"
    );
    assert_eq!(h.refresh("dated").await, Ok(RefreshOutcome::NotModified));
    let second = server.seen().pop().expect("a request");
    assert_eq!(second.header("if-modified-since"), Some(date.as_str()));
    assert_eq!(h.deny(), firehol(), "a 304 keeps the list");
    assert_eq!(h.status("dated").consecutive_failures, 0);
    h.stop().await;
}
