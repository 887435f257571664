//! A reload of the feed set: feeds appear, change and go without a restart, the refresh
//! task follows, and an address that moves from one feed to another never leaves the maps.

mod feeds_support;

use std::time::Duration;

use feeds_support::*;
use waf_agent::{
    config::FeedSource,
    feeds::{FeedChanges, RefreshError, RefreshOutcome, SinkOp},
};

fn inline(name: &str, nets: &[&str]) -> waf_agent::config::FeedConfig {
    feed(
        name,
        FeedSource::Inline(nets.iter().map(|n| (*n).to_owned()).collect()),
        "plain",
    )
}

#[tokio::test]
async fn an_address_moving_between_feeds_on_reload_never_leaves_the_deny_map() {
    let before = reputation(vec![
        inline("a", &["198.18.70.1"]),
        inline("b", &["198.18.70.2"]),
    ]);
    let h = Harness::start(&before, None, clock());
    assert_eq!(h.deny(), ["198.18.70.1/32", "198.18.70.2/32"]);
    h.engine.lock().unwrap().sink_mut().record();

    // `a` goes away and `b` takes its address: the update to `b` lands before `a` is removed.
    let after = reputation(vec![inline("b", &["198.18.70.1", "198.18.70.2"])]);
    let changes = {
        let mut engine = h.engine.lock().unwrap();
        engine.reload_lists(&after);
        engine.reload_feeds(&after)
    };
    assert_eq!(
        changes,
        FeedChanges {
            added: vec![],
            changed: vec!["b".to_owned()],
            removed: vec!["a".to_owned()],
        }
    );
    assert_eq!(h.deny(), ["198.18.70.1/32", "198.18.70.2/32"]);
    let journal = h.engine.lock().unwrap().sink().journal.clone();
    assert!(
        !journal.iter().any(|op| matches!(op, SinkOp::DenyRemove(_))),
        "nothing still denied is removed, even for a moment: {journal:?}"
    );
}

#[tokio::test]
async fn a_reload_starts_the_refresh_of_a_new_remote_feed_and_stops_a_removed_one() {
    let server = Server::start().await;
    server.set("/new.txt", ok("firehol_level1.netset"));
    let before = reputation(vec![inline("local", &["198.18.70.9"])]);
    let h = Harness::start(&before, None, clock());
    assert_eq!(h.deny(), ["198.18.70.9/32"]);
    // The task is running (and has read the feed set) before the reload.
    assert_eq!(h.refresh("local").await, Ok(RefreshOutcome::Static));

    let mut remote = feed("remote", FeedSource::Url(server.url("/new.txt")), "auto");
    remote.score = 90;
    let after = reputation(vec![remote]);
    let changes = {
        let mut engine = h.engine.lock().unwrap();
        engine.reload_lists(&after);
        engine.reload_feeds(&after)
    };
    assert_eq!(changes.added, ["remote"]);
    assert_eq!(changes.removed, ["local"]);
    assert!(h.handle.reconfigure(), "the task takes the new set");
    // The task fetches a feed new to the set at once, without a refresh request.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.deny().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut want = strings(&[
        "0.0.0.0/8",
        "192.0.2.0/24",
        "198.51.100.7/32",
        "203.0.113.64/26",
        "2001:db8:bad::/48",
    ]);
    want.sort();
    let mut got = h.deny();
    got.sort();
    assert_eq!(got, want, "the new feed's list, without the removed one's");
    assert_eq!(server.seen().len(), 1, "one fetch");
    assert_eq!(
        h.refresh("local").await,
        Err(RefreshError::UnknownFeed("local".to_owned()))
    );
}

#[tokio::test]
async fn an_unchanged_reload_changes_no_feed() {
    let rep = reputation(vec![inline("a", &["198.18.70.1"])]);
    let h = Harness::start(&rep, None, clock());
    let changes = {
        let mut engine = h.engine.lock().unwrap();
        engine.reload_lists(&rep);
        engine.reload_feeds(&rep)
    };
    assert_eq!(changes, FeedChanges::default());
    assert_eq!(h.deny(), ["198.18.70.1/32"]);
}
