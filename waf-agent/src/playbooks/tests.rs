use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use tokio::time::Instant;

use super::{
    config::{parse, Action, DEFAULT_PLAYBOOKS},
    engine::{escalated_ttl, Engine},
    executor::{apply, Done, Edge},
};
use crate::xdp::maps::MapsError;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn engine() -> Engine {
    let (books, _) = parse(DEFAULT_PLAYBOOKS).expect("default playbooks parse");
    Engine::new(books)
}

fn severities(e: &mut Engine, src: IpAddr, from: u64, to: u64, now: Instant) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for i in from..=to {
        for f in e.observe(src, &format!("req_{i}"), now) {
            out.push((i, f.severity));
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn default_playbook_bans_at_101_blocks_not_at_100() {
    let mut e = engine();
    let src = ip("198.18.60.1");
    let now = Instant::now();
    let fired = severities(&mut e, src, 1, 100, now);
    assert_eq!(
        fired,
        vec![(1, "low".to_owned()), (20, "medium".to_owned())],
        "100 blocks reach medium, not high"
    );
    let fired = e.observe(src, "req_101", now);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].severity, "high");
    assert_eq!(fired[0].count, 101);
    assert!(
        matches!(fired[0].actions[0], Action::EdgeBan { ttl, .. } if ttl == Duration::from_secs(3600))
    );
}

#[tokio::test(start_paused = true)]
async fn repeated_request_ids_count_once() {
    let mut e = engine();
    let src = ip("198.18.60.2");
    let now = Instant::now();
    for _ in 0..500 {
        e.observe(src, "req_same", now);
    }
    for i in 0..18 {
        e.observe(src, &format!("req_{i}"), now);
    }
    // 19 unique ids: still below the medium tier at 20.
    assert!(e.observe(src, "req_same", now).is_empty());
    let f = e.observe(src, "req_new", now);
    assert_eq!(f[0].severity, "medium");
    assert_eq!(f[0].count, 20);
}

#[tokio::test(start_paused = true)]
async fn blocks_older_than_the_window_do_not_count() {
    let mut e = engine();
    let src = ip("198.18.60.3");
    let start = Instant::now();
    severities(&mut e, src, 1, 60, start);
    // Ten minutes later the first 60 have left the window: 41 more make 41, not 101.
    tokio::time::advance(Duration::from_secs(600)).await;
    let later = Instant::now();
    let fired = severities(&mut e, src, 61, 101, later);
    assert!(
        fired.iter().all(|(_, s)| s != "high"),
        "no ban from blocks spread over two windows: {fired:?}"
    );
    // At one second before the edge, the earlier blocks still count.
    let mut e = engine();
    let start = Instant::now();
    severities(&mut e, src, 1, 60, start);
    tokio::time::advance(Duration::from_secs(599)).await;
    let fired = severities(&mut e, src, 61, 101, Instant::now());
    assert_eq!(
        fired.last().map(|(i, s)| (*i, s.as_str())),
        Some((101, "high"))
    );
}

#[tokio::test(start_paused = true)]
async fn repeat_offenders_get_longer_bans_up_to_the_cap() {
    let mut e = engine();
    let src = ip("198.18.60.4");
    let mut ttls = Vec::new();
    for round in 0..7 {
        let now = Instant::now();
        for i in 0..101 {
            for f in e.observe(src, &format!("r{round}_{i}"), now) {
                if let Some(Action::EdgeBan {
                    ttl,
                    escalation_factor,
                    max_ttl,
                }) = f.actions.first()
                {
                    ttls.push(
                        escalated_ttl(*ttl, *escalation_factor, *max_ttl, f.previous_bans)
                            .as_secs()
                            / 60,
                    );
                }
            }
        }
        tokio::time::advance(Duration::from_secs(3600)).await;
    }
    assert_eq!(ttls, vec![60, 120, 240, 480, 960, 1440, 1440]);
}

#[derive(Default)]
struct Recorder {
    bans: Vec<(IpNet, Duration)>,
    throttles: Vec<(IpNet, u64)>,
}

impl Edge for Recorder {
    fn ban(&mut self, source: IpNet, ttl: Duration) -> Result<(), MapsError> {
        self.bans.push((source, ttl));
        Ok(())
    }
    fn throttle(
        &mut self,
        source: IpNet,
        pps: u64,
        _burst: u64,
        _ttl: Duration,
    ) -> Result<(), MapsError> {
        self.throttles.push((source, pps));
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn high_tier_bans_and_notifies_three_channels_medium_throttles() {
    let mut e = engine();
    let src = ip("2001:2:60::7");
    let now = Instant::now();
    let mut edge = Recorder::default();
    let mut notified = Vec::new();
    for i in 1..=101 {
        for f in e.observe(src, &format!("q{i}"), now) {
            for d in apply(&mut edge, &f) {
                if let Done::Notify {
                    channel,
                    notification,
                } = d
                {
                    notified.push((channel, notification.severity));
                }
            }
        }
    }
    let net: IpNet = "2001:2:60::7/128".parse().expect("net");
    assert_eq!(edge.throttles, vec![(net, 20)]);
    assert_eq!(edge.bans, vec![(net, Duration::from_secs(3600))]);
    let names: Vec<String> = notified.iter().map(|(c, s)| format!("{c}:{s}")).collect();
    assert_eq!(
        names,
        vec![
            "email:medium",
            "siem_webhook:medium",
            "email:high",
            "sms:high",
            "siem_webhook:high"
        ]
    );
}

#[test]
fn playbook_problems_are_reported_with_paths() {
    let bad = r#"
playbooks:
  - name: x
    window_minutes: 0
    tiers:
      - severity: high
        actions: [ { notify: { channels: [pager] } } ]
      - severity: low
        at_least: 1
        actions: [ { edge_ban: { ttl_minutes: 0 } } ]
channels: {}
"#;
    let problems = parse(bad).expect_err("invalid");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "playbooks[0].window_minutes",
            "playbooks[0].tiers[0]",
            "playbooks[0].tiers[1].actions[0]"
        ]
    );
}
