//! Geo-blocking from a GeoLite2-format country CSV pair built for the tests.

mod feeds_support;

use std::collections::BTreeSet;

use feeds_support::*;
use waf_agent::{
    config::FeedSource,
    feeds::FeedEvent,
    geo::{GeoConfig, GeoSource},
};

fn csv_geo(deny: &[&str], allow: &[&str]) -> GeoConfig {
    GeoConfig {
        source: GeoSource::Csv {
            blocks_ipv4: Some(data("geo/GeoLite2-Country-Blocks-IPv4.csv")),
            blocks_ipv6: Some(data("geo/GeoLite2-Country-Blocks-IPv6.csv")),
            locations: data("geo/GeoLite2-Country-Locations-en.csv"),
        },
        deny_countries: deny
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>(),
        allow_countries: allow
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>(),
    }
}

#[test]
fn csv_pair_yields_each_countrys_prefixes() {
    let lists = waf_agent::geo::load(&csv_geo(&["XB"], &["XC"])).expect("csv loads");
    let s = |v: &[ipnet::IpNet]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        s(&lists.deny),
        ["192.0.2.128/25", "198.51.100.0/24", "2001:db8:b::/48"],
        "198.51.100.0/24 has only a registered country"
    );
    assert_eq!(s(&lists.allow), ["203.0.113.0/24", "2001:db8:c::/48"]);
    assert_eq!(lists.bad_records, 1);
}

#[tokio::test]
async fn geo_deny_and_allow_reach_the_maps_and_allow_beats_feeds() {
    let server = Server::start().await;
    server.set("/drop", ok("spamhaus_drop.txt"));
    let mut rep = reputation(vec![feed(
        "drop",
        FeedSource::Url(server.url("/drop")),
        "auto",
    )]);
    rep.geo = Some(csv_geo(&["XB"], &["XC"]));
    let h = Harness::start(&rep, None, clock());
    assert_eq!(
        h.deny(),
        strings(&["192.0.2.128/25", "198.51.100.0/24", "2001:db8:b::/48"])
    );
    assert_eq!(h.allow(), strings(&["203.0.113.0/24", "2001:db8:c::/48"]));
    h.refresh("drop").await.expect("drop applies");
    assert_eq!(
        h.deny(),
        strings(&[
            "192.0.2.128/25",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "2001:db8:b::/48"
        ]),
        "drop's 203.0.113.0/25 lies in an allowed country"
    );
    assert_eq!(h.status("drop").suppressed_by_allow, 1);
    h.stop().await;
}

#[tokio::test]
async fn missing_geo_database_is_an_event_not_a_crash() {
    let mut rep = reputation(vec![]);
    rep.geo = Some(GeoConfig {
        source: GeoSource::Mmdb(data("geo/absent.mmdb")),
        deny_countries: BTreeSet::from(["XB".to_owned()]),
        allow_countries: BTreeSet::new(),
    });
    let mut h = Harness::start(&rep, None, clock());
    let events = h.drain();
    assert!(
        matches!(events.as_slice(), [FeedEvent::GeoFailed { .. }]),
        "events: {events:?}"
    );
    assert!(h.deny().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn mmdb_database_yields_each_countrys_prefixes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("country.mmdb");
    let net = |s: &str| s.parse::<ipnet::IpNet>().expect("test prefix");
    let db = mmdb::build(&[
        (net("192.0.2.128/25"), "XB"),
        (net("203.0.113.0/24"), "XC"),
        (net("198.51.100.0/24"), "XA"),
        (net("2001:db8:b::/48"), "XB"),
        (net("2002:c000:280::/41"), "XB"),
    ]);
    std::fs::write(&path, db).expect("write mmdb");
    let mut rep = reputation(vec![]);
    rep.geo = Some(GeoConfig {
        source: GeoSource::Mmdb(path),
        deny_countries: BTreeSet::from(["XB".to_owned()]),
        allow_countries: BTreeSet::from(["XC".to_owned()]),
    });
    let mut h = Harness::start(&rep, None, clock());
    assert!(h
        .drain()
        .iter()
        .all(|e| !matches!(e, FeedEvent::GeoFailed { .. })));
    assert_eq!(
        h.deny(),
        strings(&["192.0.2.128/25", "2001:db8:b::/48"]),
        "IPv4 read once through its own view; the 6to4 alias is skipped"
    );
    assert_eq!(h.allow(), strings(&["203.0.113.0/24"]));
    h.stop().await;
}
