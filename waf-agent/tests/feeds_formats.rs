//! Every feed format fetched over HTTP from a local server, with the exact map contents
//! after each step.

mod feeds_support;

use std::time::Duration;

use feeds_support::*;
use waf_agent::{
    config::FeedSource,
    feeds::{Delta, FeedEvent, RefreshOutcome},
};

const S: i128 = 1_000_000_000;

#[tokio::test]
async fn each_list_format_lands_in_the_deny_maps() {
    let server = Server::start().await;
    let formats = [
        ("firehol", "firehol_level1.netset", "auto"),
        ("et", "et_compromised.txt", "plain"),
        ("drop", "spamhaus_drop.txt", "auto"),
        ("drop_v6", "spamhaus_drop_v6.json", "auto"),
        ("dshield", "dshield_block.txt", "auto"),
    ];
    let mut feeds = Vec::new();
    for (name, file, format) in formats {
        server.set(&format!("/{name}"), ok(file));
        feeds.push(feed(
            name,
            FeedSource::Url(server.url(&format!("/{name}"))),
            format,
        ));
    }
    let h = Harness::start(&reputation(feeds), None, clock());

    h.refresh("firehol").await.expect("firehol applies");
    assert_eq!(
        h.deny(),
        strings(&[
            "0.0.0.0/8",
            "192.0.2.0/24",
            "198.51.100.7/32",
            "203.0.113.64/26",
            "2001:db8:bad::/48"
        ])
    );
    let st = h.status("firehol");
    assert_eq!((st.entries, st.duplicates, st.bad_lines), (5, 1, 0));

    h.refresh("et").await.expect("et applies");
    let st = h.status("et");
    assert_eq!(
        (
            st.entries,
            st.bad_lines,
            st.host_bits_normalized,
            st.duplicates
        ),
        (6, 1, 1, 1)
    );
    assert_eq!(
        h.deny(),
        strings(&[
            "0.0.0.0/8",
            "192.0.2.0/24",
            "198.51.100.7/32",
            "198.51.100.20/32",
            "198.51.100.21/32",
            "198.51.100.30/31",
            "198.51.100.32/31",
            "203.0.113.64/26",
            "2001:db8:1::9/128",
            "2001:db8:bad::/48"
        ]),
        "192.0.2.128/25 is inside firehol's /24 and not written twice"
    );

    h.refresh("drop").await.expect("drop applies");
    h.refresh("drop_v6").await.expect("drop json applies");
    h.refresh("dshield").await.expect("dshield applies");
    assert_eq!(
        h.deny(),
        strings(&[
            "0.0.0.0/8",
            "192.0.2.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/25",
            "2001:db8:1::9/128",
            "2001:db8:100::/40",
            "2001:db8:200::/40",
            "2001:db8:bad::/48"
        ]),
        "dshield's 198.51.100.0/24 covers the single addresses and the json /25"
    );
    assert_eq!(h.status("drop_v6").entries, 3);
    h.stop().await;
}

#[tokio::test]
async fn crowdsec_stream_becomes_timed_bans() {
    let server = Server::start().await;
    server.set("/v1/decisions/stream", ok("crowdsec_startup.json"));
    let mut cs = feed(
        "lapi",
        FeedSource::Url(server.url("/v1/decisions/stream")),
        "crowdsec",
    );
    cs.api_key_header = Some("X-Api-Key".into());
    cs.api_key_env = Some("PATH".into());
    let mut h = Harness::start(&reputation(vec![cs]), None, clock());

    let outcome = h.refresh("lapi").await.expect("startup stream applies");
    assert_eq!(
        outcome,
        RefreshOutcome::Applied(Delta {
            added: 2,
            removed: 0
        })
    );
    assert_eq!(
        h.bans(),
        vec![
            (
                "192.0.2.50/32".to_owned(),
                (3 * 3600 + 59 * 60 + 59) * S + S / 2
            ),
            ("2001:db8:dead::/48".to_owned(), 24 * 3600 * S),
        ]
    );
    assert!(h.deny().is_empty(), "decisions are bans, not deny entries");
    let first = &server.seen()[0];
    assert_eq!(first.target, "/v1/decisions/stream?startup=true");
    assert_eq!(
        first.header("x-api-key").map(str::to_owned),
        std::env::var("PATH").ok(),
        "api key header sent from the named variable"
    );
    assert_eq!(h.status("lapi").bad_lines, 1, "the captcha decision");
    assert_eq!(
        decisions(&mut h),
        vec![(
            vec!["192.0.2.50/32".to_owned(), "2001:db8:dead::/48".to_owned()],
            vec![]
        )],
        "the decisions reach the event stream"
    );

    h.clock.advance(Duration::from_secs(60));
    server.set("/v1/decisions/stream", ok("crowdsec_delta.json"));
    h.refresh("lapi").await.expect("delta applies");
    assert_eq!(server.seen()[1].target, "/v1/decisions/stream");
    assert_eq!(
        h.bans(),
        vec![
            ("2001:db8::77/128".to_owned(), 60 * S + 30 * 60 * S),
            ("2001:db8:dead::/48".to_owned(), 24 * 3600 * S),
        ]
    );
    let bans = h.engine.lock().unwrap().ban_status();
    assert_eq!(bans.len(), 2);
    assert_eq!(bans[0].sources[0].0.to_string(), "crowdsec:lapi");
    assert_eq!(
        decisions(&mut h),
        vec![(
            vec!["2001:db8::77/128".to_owned()],
            vec!["192.0.2.50/32".to_owned()]
        )],
        "a delta reports what it banned and what it withdrew"
    );
    h.stop().await;
}

/// The `Decisions` events the engine sent since the last call: (banned, withdrawn), with
/// the totals checked against the lists.
fn decisions(h: &mut Harness) -> Vec<(Vec<String>, Vec<String>)> {
    h.drain()
        .into_iter()
        .filter_map(|e| match e {
            FeedEvent::Decisions {
                banned,
                banned_total,
                withdrawn,
                withdrawn_total,
                ..
            } => {
                assert_eq!(banned.len() as u64, banned_total);
                assert_eq!(withdrawn.len() as u64, withdrawn_total);
                Some((
                    banned.iter().map(|(n, _)| n.to_string()).collect(),
                    withdrawn.iter().map(ToString::to_string).collect(),
                ))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn local_inline_and_file_feeds_with_a_low_score() {
    let mut inline = feed(
        "internal_blocklist",
        FeedSource::Inline(strings(&["203.0.113.10", "198.51.100.0/24"])),
        "auto",
    );
    inline.score = 100;
    let mut low = feed("low", FeedSource::File(data("spamhaus_drop.txt")), "auto");
    low.score = 50;
    let mut rep = reputation(vec![inline, low]);
    rep.threshold = 85;
    let h = Harness::start(&rep, None, clock());
    assert_eq!(h.deny(), strings(&["198.51.100.0/24", "203.0.113.10/32"]));
    h.refresh("low").await.expect("file feed reads");
    assert_eq!(h.status("low").entries, 2);
    assert!(!h.status("low").enforced);
    assert_eq!(
        h.deny(),
        strings(&["198.51.100.0/24", "203.0.113.10/32"]),
        "score 50 is under the threshold of 85"
    );
    assert_eq!(
        h.refresh("internal_blocklist").await,
        Ok(RefreshOutcome::Static)
    );
    h.stop().await;
}

#[tokio::test]
async fn reload_with_a_new_allow_entry_splits_the_feed_range() {
    let server = Server::start().await;
    server.set("/drop", ok("spamhaus_drop.txt"));
    let mut rep = reputation(vec![feed(
        "drop",
        FeedSource::Url(server.url("/drop")),
        "auto",
    )]);
    let h = Harness::start(&rep, None, clock());
    h.refresh("drop").await.expect("drop applies");
    assert_eq!(h.deny(), strings(&["198.18.0.0/15", "203.0.113.0/25"]));
    rep.allow = vec!["203.0.113.0/26".parse().expect("prefix")];
    rep.threshold = 80;
    h.engine.lock().unwrap().reload_lists(&rep);
    assert_eq!(h.deny(), strings(&["198.18.0.0/15", "203.0.113.64/26"]));
    assert_eq!(h.allow(), strings(&["203.0.113.0/26"]));
    assert_eq!(h.status("drop").suppressed_by_allow, 1);
    rep.threshold = 100;
    rep.allow.clear();
    h.engine.lock().unwrap().reload_lists(&rep);
    assert_eq!(
        h.deny(),
        strings(&["198.18.0.0/15", "203.0.113.0/25"]),
        "score 100 still counts"
    );
    assert!(h.allow().is_empty());
    h.stop().await;
}
