use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

#[test]
fn bans_unbans_and_feeds_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (mut store, opened) = Store::open(dir.path(), now);
    assert_eq!(opened, Opened::Ready);
    let ban = StoredBan {
        net: net("192.0.2.7/32"),
        source: BanSource::Playbook("bf".into()),
        wall_expires: now + Duration::from_secs(600),
        remaining: Duration::from_secs(600),
        reason: "brute force".into(),
    };
    let unban = StoredUnban {
        net: net("198.51.100.0/24"),
        wall_until: now + Duration::from_secs(60),
        remaining: Duration::from_secs(60),
    };
    store
        .write_bans(&[
            BanWrite::Put(ban.clone()),
            BanWrite::PutUnban(unban.clone()),
        ])
        .expect("write bans");
    let copy = FeedCopy {
        fetched: now,
        etag: Some("\"v1\"".into()),
        last_modified: None,
        nets: vec![net("203.0.113.0/24"), net("2001:db8::/32")],
    };
    store.save_feed("drop", &copy).expect("save feed");
    drop(store);
    let (mut store, opened) = Store::open(dir.path(), now);
    assert_eq!(opened, Opened::Ready);
    assert_eq!(
        store.load_bans(now).expect("load bans"),
        (vec![ban], vec![unban])
    );
    assert_eq!(store.load_feed("drop").expect("load feed"), Some(copy));
    assert_eq!(store.load_feed("other").expect("load feed"), None);
}

#[test]
fn corrupt_store_is_set_aside_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    std::fs::write(dir.path().join(FILE_NAME), vec![0x5a; 8192]).expect("write garbage");
    let (mut store, opened) = Store::open(dir.path(), now);
    let aside = dir.path().join("state.db.corrupt-1800000000");
    assert_eq!(
        opened,
        Opened::SetAside {
            moved_to: aside.clone()
        }
    );
    assert!(aside.exists(), "corrupt file kept for inspection");
    assert_eq!(
        store.load_bans(now).expect("fresh store reads"),
        (vec![], vec![])
    );
    drop(store);
    let (_, opened) = Store::open(dir.path(), now);
    assert_eq!(
        opened,
        Opened::Ready,
        "the fresh store opens cleanly next time"
    );
}

#[test]
fn remaining_is_capped_when_the_wall_clock_went_back() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let ban = StoredBan {
        net: net("192.0.2.7/32"),
        source: BanSource::Manual,
        wall_expires: now + Duration::from_secs(600),
        remaining: Duration::from_secs(600),
        reason: String::new(),
    };
    assert_eq!(
        ban.remaining_at(now - Duration::from_secs(86_400)),
        Duration::from_secs(600)
    );
    assert_eq!(
        ban.remaining_at(now + Duration::from_secs(100)),
        Duration::from_secs(500)
    );
    assert_eq!(
        ban.remaining_at(now + Duration::from_secs(700)),
        Duration::ZERO
    );
}
