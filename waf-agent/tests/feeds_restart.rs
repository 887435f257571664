//! Restart and reboot: the agent stopped, its state directory kept, and started again.
//! Before any refresh, the maps hold the last good feeds and the unexpired bans; manual
//! unbans stay; a reboot (monotonic clock from zero) takes remaining time from the wall
//! clock, capped by the time that was left.

mod feeds_support;

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use feeds_support::*;
use waf_agent::{
    bans::{BanSource, ManualClock},
    config::FeedSource,
    feeds::{FailureKind, FeedEvent, RefreshError},
};

const S: i128 = 1_000_000_000;

fn net(s: &str) -> ipnet::IpNet {
    waf_agent::config::parse_net(s).expect("test prefix")
}

fn setup(server: &Server) -> waf_agent::config::Reputation {
    server.set("/drop", ok("spamhaus_drop.txt"));
    server.set("/v1/decisions/stream", ok("crowdsec_startup.json"));
    reputation(vec![
        feed("drop", FeedSource::Url(server.url("/drop")), "auto"),
        feed(
            "lapi",
            FeedSource::Url(server.url("/v1/decisions/stream")),
            "crowdsec",
        ),
        feed(
            "inline",
            FeedSource::Inline(strings(&["203.0.113.200"])),
            "auto",
        ),
    ])
}

fn drop_list() -> Vec<String> {
    strings(&["198.18.0.0/15", "203.0.113.0/25", "203.0.113.200/32"])
}

/// First run: a feed, a decision stream, a manual and a playbook ban, a manual unban.
async fn first_run(server: &Server, dir: &std::path::Path, clock: Arc<ManualClock>) {
    let rep = setup(server);
    let h = Harness::start(&rep, Some(dir), clock);
    h.refresh("drop").await.expect("drop applies");
    h.refresh("lapi").await.expect("stream applies");
    {
        let mut e = h.engine.lock().unwrap();
        e.ban(
            net("192.0.2.99"),
            BanSource::Manual,
            Duration::from_secs(3600),
            "cli",
        )
        .expect("manual ban");
        e.ban(
            net("10.9.0.0/16"),
            BanSource::Playbook("scan".into()),
            Duration::from_secs(600),
            "pb",
        )
        .expect("playbook ban");
        e.ban(
            net("192.0.2.99"),
            BanSource::Playbook("scan".into()),
            Duration::from_secs(60),
            "pb",
        )
        .expect("second source");
        assert_eq!(
            e.unban(net("192.0.2.50")),
            vec![BanSource::Crowdsec("lapi".into())]
        );
    }
    assert_eq!(h.deny(), drop_list());
    assert_eq!(
        h.bans(),
        vec![
            ("10.9.0.0/16".to_owned(), 600 * S),
            ("192.0.2.99/32".to_owned(), 3600 * S),
            ("2001:db8:dead::/48".to_owned(), 24 * 3600 * S),
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn restart_restores_feeds_bans_and_unbans_before_any_refresh() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    first_run(&server, dir.path(), clock.clone()).await;

    clock.advance(Duration::from_secs(60));
    for path in ["/drop", "/v1/decisions/stream"] {
        server.set(
            path,
            Fixture::Status {
                code: 503,
                body: b"down".to_vec(),
                content_type: "text/plain",
            },
        );
    }
    let rep = setup_without_fixtures(&server);
    let h = Harness::start(&rep, Some(dir.path()), clock.clone());
    assert_eq!(
        h.deny(),
        drop_list(),
        "last good feed before the first refresh"
    );
    assert_eq!(
        h.bans(),
        vec![
            ("10.9.0.0/16".to_owned(), 600 * S),
            ("192.0.2.99/32".to_owned(), 3600 * S),
            ("2001:db8:dead::/48".to_owned(), 24 * 3600 * S),
        ],
        "same monotonic expiries: the restart neither lifts nor extends"
    );
    let sources: Vec<String> = h.engine.lock().unwrap().ban_status()[1]
        .sources
        .iter()
        .map(|(s, _)| s.to_string())
        .collect();
    assert_eq!(
        sources,
        ["manual"],
        "the 60 s playbook ban on 192.0.2.99 has expired"
    );

    assert!(matches!(
        h.refresh("drop").await,
        Err(RefreshError::Failed {
            kind: FailureKind::Status(503),
            ..
        })
    ));
    assert_eq!(
        h.deny(),
        drop_list(),
        "a failing refresh keeps the restored list"
    );

    server.set("/v1/decisions/stream", ok("crowdsec_startup.json"));
    h.refresh("lapi").await.expect("stream applies");
    assert_eq!(
        server.seen().last().expect("request").target,
        "/v1/decisions/stream?startup=true",
        "a restarted agent asks for the full decision list"
    );
    assert!(
        !h.bans().iter().any(|(n, _)| n == "192.0.2.50/32"),
        "the manual unban survives the restart and the re-sent decision"
    );
    h.stop().await;
}

fn setup_without_fixtures(server: &Server) -> waf_agent::config::Reputation {
    reputation(vec![
        feed("drop", FeedSource::Url(server.url("/drop")), "auto"),
        feed(
            "lapi",
            FeedSource::Url(server.url("/v1/decisions/stream")),
            "crowdsec",
        ),
        feed(
            "inline",
            FeedSource::Inline(strings(&["203.0.113.200"])),
            "auto",
        ),
    ])
}

#[tokio::test]
async fn reboot_takes_remaining_time_from_the_wall_clock() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    first_run(&server, dir.path(), clock()).await;

    // Ten minutes later the host is back; its monotonic clock restarted near zero.
    let rebooted = Arc::new(ManualClock::new(
        7_000_000_000,
        UNIX_EPOCH + Duration::from_secs(START_WALL_SECS + 600),
    ));
    let h = Harness::start(&setup_without_fixtures(&server), Some(dir.path()), rebooted);
    let since_boot = |secs: i128| 7 * S + secs * S - START_MONO_NS as i128;
    assert_eq!(
        h.bans(),
        vec![
            ("192.0.2.99/32".to_owned(), since_boot(3000)),
            ("2001:db8:dead::/48".to_owned(), since_boot(24 * 3600 - 600)),
        ],
        "the 600 s playbook ban ran out while the host was down"
    );
    assert_eq!(h.deny(), drop_list());
    h.stop().await;
}

#[tokio::test]
async fn reboot_with_the_wall_clock_set_back_does_not_extend_bans() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    first_run(&server, dir.path(), clock()).await;
    let rebooted = Arc::new(ManualClock::new(
        7_000_000_000,
        UNIX_EPOCH + Duration::from_secs(START_WALL_SECS - 86_400),
    ));
    let h = Harness::start(&setup_without_fixtures(&server), Some(dir.path()), rebooted);
    let since_boot = |secs: i128| 7 * S + secs * S - START_MONO_NS as i128;
    assert_eq!(
        h.bans(),
        vec![
            ("10.9.0.0/16".to_owned(), since_boot(600)),
            ("192.0.2.99/32".to_owned(), since_boot(3600)),
            ("2001:db8:dead::/48".to_owned(), since_boot(24 * 3600)),
        ],
        "capped at the time that was left when written"
    );
    h.stop().await;
}

#[tokio::test]
async fn wall_clock_jump_neither_lifts_nor_extends_a_ban() {
    let clock = clock();
    let h = Harness::start(&reputation(vec![]), None, clock.clone());
    {
        let mut e = h.engine.lock().unwrap();
        e.ban(
            net("192.0.2.99"),
            BanSource::Manual,
            Duration::from_secs(3600),
            "cli",
        )
        .expect("ban");
    }
    clock.set_wall(UNIX_EPOCH + Duration::from_secs(START_WALL_SECS + 7200));
    h.engine.lock().unwrap().tick();
    assert_eq!(
        h.bans(),
        vec![("192.0.2.99/32".to_owned(), 3600 * S)],
        "forward jump"
    );
    clock.set_wall(UNIX_EPOCH + Duration::from_secs(START_WALL_SECS - 86_400));
    clock.set_monotonic(START_MONO_NS + 3600 * 1_000_000_000);
    h.engine.lock().unwrap().tick();
    assert!(
        h.bans().is_empty(),
        "expired on the monotonic clock despite the wall clock"
    );
    h.stop().await;
}

#[tokio::test]
async fn corrupt_store_is_set_aside_and_the_agent_runs_on_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("state.db"),
        b"this is not a database file at all".repeat(200),
    )
    .expect("write garbage");
    let rep = reputation(vec![feed(
        "inline",
        FeedSource::Inline(strings(&["203.0.113.200"])),
        "auto",
    )]);
    let mut h = Harness::start(&rep, Some(dir.path()), clock());
    let events = h.drain();
    let aside = dir
        .path()
        .join(format!("state.db.corrupt-{START_WALL_SECS}"));
    assert!(
        events.contains(&FeedEvent::StoreSetAside {
            path: dir.path().join("state.db"),
            moved_to: aside.clone()
        }),
        "events: {events:?}"
    );
    assert!(aside.exists());
    assert_eq!(h.deny(), strings(&["203.0.113.200/32"]));
    h.engine
        .lock()
        .unwrap()
        .ban(
            net("192.0.2.99"),
            BanSource::Manual,
            Duration::from_secs(60),
            "cli",
        )
        .expect("bans work on the fresh store");
    h.stop().await;
    let mut h = Harness::start(&rep, Some(dir.path()), clock());
    assert!(
        !h.drain()
            .iter()
            .any(|e| matches!(e, FeedEvent::StoreSetAside { .. })),
        "set aside once, not on every start"
    );
    assert_eq!(h.bans(), vec![("192.0.2.99/32".to_owned(), 60 * S)]);
    h.stop().await;
}

#[tokio::test]
async fn full_disk_gives_events_and_retries() {
    let server = Server::start().await;
    let body: String = (0..4000)
        .map(|i| format!("10.{}.{}.0/24\n", i / 256, i % 256))
        .collect();
    server.set(
        "/big",
        Fixture::Ok {
            body: body.into_bytes(),
            content_type: "text/plain",
            etag: None,
        },
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let rep = reputation(vec![feed(
        "big",
        FeedSource::Url(server.url("/big")),
        "plain",
    )]);
    let mut h = Harness::start(&rep, Some(dir.path()), clock());
    h.engine.lock().unwrap().set_store_max_bytes(32 * 1024);
    h.drain();
    h.refresh("big")
        .await
        .expect("the maps update even when the store cannot");
    assert_eq!(h.deny().len(), 4000);
    h.engine
        .lock()
        .unwrap()
        .ban(
            net("192.0.2.99"),
            BanSource::Manual,
            Duration::from_secs(600),
            "cli",
        )
        .expect("ban applies");
    let events = h.drain();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, FeedEvent::StoreWriteFailed { .. }))
            .count(),
        1,
        "one event per outage: {events:?}"
    );
    assert_eq!(h.bans().len(), 1);
    h.engine
        .lock()
        .unwrap()
        .set_store_max_bytes(64 * 1024 * 1024);
    h.engine.lock().unwrap().tick();
    assert!(h.drain().contains(&FeedEvent::StoreRecovered));
    h.stop().await;

    server.set(
        "/big",
        Fixture::Status {
            code: 500,
            body: Vec::new(),
            content_type: "text/plain",
        },
    );
    let h = Harness::start(&rep, Some(dir.path()), clock());
    assert_eq!(
        h.deny().len(),
        4000,
        "the copy written on retry is restored"
    );
    assert_eq!(h.bans(), vec![("192.0.2.99/32".to_owned(), 600 * S)]);
    h.stop().await;
}
