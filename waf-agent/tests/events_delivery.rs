//! Delivery through a receiver outage: every event arrives at least once and, per source, in
//! order; a forwarder restarted while the receiver is down still delivers from its spool;
//! a full spool drops the oldest events, counts them and says so in a `siem.dropped` event.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use common::{wait_for, Dialect, Receiver};
use serde_json::Value;
use waf_agent::{
    config::siem::SinkConfig,
    events::{ErrorCatalogue, EventBus, Forwarder, RequestInfo, RuleRef, SecurityEvent},
    metrics::Metrics,
};

const SOURCES: u8 = 4;

fn event(source: u8, seq: u64) -> SecurityEvent {
    let req = RequestInfo {
        request_id: Some(format!("req_{source}_{seq}")),
        client_ip: Some(IpAddr::from([198, 51, 100, source])),
        path: Some(format!("/login?user=u{seq}&password=hunter2")),
        method: Some("POST".to_owned()),
        user_id: None,
    };
    let rule = RuleRef {
        id: "sqli-001".to_owned(),
        name: "SQL Injection Basic Pattern".to_owned(),
    };
    SecurityEvent::waf_block(&req, &rule, "SEC-1001").detail("seq", seq)
}

fn start(sinks: &[SinkConfig], metrics: &Metrics) -> (EventBus, Forwarder) {
    let catalogue = ErrorCatalogue::embedded().expect("embedded catalogue");
    let (bus, rx) = EventBus::new(100_000, catalogue, metrics.clone());
    let fwd = Forwarder::start(sinks, rx).expect("forwarder must start");
    (bus, fwd)
}

/// The `seq` of each arrival per source, first arrivals only (duplicates are allowed by
/// at-least-once and removed by event id, as a receiver would).
fn first_arrivals(events: &[Value]) -> BTreeMap<String, Vec<u64>> {
    let mut seen = HashSet::new();
    let mut per_source: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for ev in events {
        if ev["event"]["type"] != "waf.block" {
            continue;
        }
        let id = ev["event_id"].as_str().expect("event_id").to_owned();
        if !seen.insert(id) {
            continue;
        }
        let source = ev["event"]["client_ip"]
            .as_str()
            .expect("client_ip")
            .to_owned();
        let seq = ev["event"]["details"]["seq"].as_u64().expect("seq");
        per_source.entry(source).or_default().push(seq);
    }
    per_source
}

fn assert_complete_and_ordered(events: &[Value], per_source: u64) {
    let arrivals = first_arrivals(events);
    assert_eq!(
        arrivals.len(),
        usize::from(SOURCES),
        "events from every source"
    );
    for (source, seqs) in arrivals {
        let expected: Vec<u64> = (0..per_source).collect();
        assert_eq!(
            seqs, expected,
            "source {source}: every event once, in order"
        );
    }
}

async fn outage_under_load(dialect: Dialect) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = Receiver::start(dialect).await;
    let metrics = Metrics::default();
    let (bus, fwd) = start(&[receiver.sink("siem", dir.path())], &metrics);
    let per_source = 300u64;
    for seq in 0..per_source {
        for source in 1..=SOURCES {
            bus.emit(event(source, seq));
        }
        if seq == 100 {
            receiver.stop();
        }
        if seq == 200 {
            // Down for a while, with events still coming.
            tokio::time::sleep(Duration::from_millis(300)).await;
            receiver.restart().await;
        }
        if seq % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let total = usize::from(SOURCES) * per_source as usize;
    let arrived = wait_for(20, || {
        first_arrivals(&receiver.events())
            .values()
            .map(Vec::len)
            .sum::<usize>()
            == total
    })
    .await;
    assert!(
        arrived,
        "{dialect:?}: {} of {total} events arrived",
        receiver.events().len()
    );
    assert_complete_and_ordered(&receiver.events(), per_source);
    for ev in receiver.events() {
        assert_eq!(
            ev["event"]["path"]
                .as_str()
                .map(|p| p.ends_with("password=[REDACTED]")),
            Some(true),
            "password redacted before leaving: {ev}"
        );
        assert_eq!(
            ev["event"]["severity"], "high",
            "severity from the catalogue"
        );
    }
    fwd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_outage_under_load_loses_nothing() {
    outage_under_load(Dialect::Webhook).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_outage_under_load_loses_nothing() {
    outage_under_load(Dialect::SplunkHec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_outage_under_load_loses_nothing() {
    outage_under_load(Dialect::Elasticsearch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tcp_outage_under_load_loses_nothing() {
    outage_under_load(Dialect::SyslogTcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_udp_delivers_rfc5424_datagrams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(Dialect::SyslogUdp).await;
    let (bus, fwd) = start(&[receiver.sink("syslog", dir.path())], &Metrics::default());
    for seq in 0..20 {
        for source in 1..=SOURCES {
            bus.emit(event(source, seq));
        }
    }
    let total = usize::from(SOURCES) * 20;
    assert!(
        wait_for(10, || receiver.events().len() >= total).await,
        "{} of {total} datagrams",
        receiver.events().len()
    );
    assert_complete_and_ordered(&receiver.events(), 20);
    fwd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sinks_send_their_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = Receiver::start(Dialect::Webhook).await;
    let hec = Receiver::start(Dialect::SplunkHec).await;
    let (bus, fwd) = start(
        &[hook.sink("hook", dir.path()), hec.sink("hec", dir.path())],
        &Metrics::default(),
    );
    bus.emit(event(1, 0));
    assert!(wait_for(10, || hook.events().len() == 1 && hec.events().len() == 1).await);
    assert_eq!(hook.auth(), HashSet::from(["Bearer hook-token".to_owned()]));
    assert_eq!(hec.auth(), HashSet::from(["Splunk hec-token".to_owned()]));
    fwd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_forwarder_delivers_spool_left_while_receiver_was_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = Receiver::down(Dialect::Webhook).await;
    let sink = receiver.sink("siem", dir.path());
    let per_source = 50u64;
    {
        let (bus, fwd) = start(std::slice::from_ref(&sink), &Metrics::default());
        for seq in 0..per_source {
            for source in 1..=SOURCES {
                bus.emit(event(source, seq));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        fwd.shutdown().await;
    }
    assert!(
        receiver.events().is_empty(),
        "nothing could have been delivered"
    );
    // A new agent: new bus, new forwarder, same spool directory.
    let metrics = Metrics::default();
    let (_bus, fwd) = start(std::slice::from_ref(&sink), &metrics);
    receiver.restart().await;
    let total = usize::from(SOURCES) * per_source as usize;
    assert!(
        wait_for(20, || receiver.events().len() >= total).await,
        "{} of {total} events delivered after the restart",
        receiver.events().len()
    );
    assert_complete_and_ordered(&receiver.events(), per_source);
    fwd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_forwarder_keeps_spooled_events_for_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = Receiver::down(Dialect::Elasticsearch).await;
    let sink = receiver.sink("es", dir.path());
    {
        let (bus, fwd) = start(std::slice::from_ref(&sink), &Metrics::default());
        for seq in 0..40 {
            for source in 1..=SOURCES {
                bus.emit(event(source, seq));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // No orderly shutdown: the tasks are cut off.
        drop(fwd);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_bus, fwd) = start(std::slice::from_ref(&sink), &Metrics::default());
    receiver.restart().await;
    let total = usize::from(SOURCES) * 40;
    assert!(
        wait_for(20, || first_arrivals(&receiver.events())
            .values()
            .map(Vec::len)
            .sum::<usize>()
            == total)
        .await,
        "{} events delivered after the restart",
        receiver.events().len()
    );
    assert_complete_and_ordered(&receiver.events(), 40);
    fwd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drops_oldest_counts_them_and_reports_siem_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = Receiver::down(Dialect::Webhook).await;
    let mut sink = receiver.sink("siem", dir.path());
    sink.spool_max_bytes = 64 * 1024;
    let metrics = Metrics::default();
    let (bus, fwd) = start(&[sink], &metrics);
    let total = 2000u64;
    for seq in 0..total {
        bus.emit(event(1, seq).detail("padding", "x".repeat(200)));
        if seq % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let dropped = || -> u64 {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("waf_siem_dropped_total{sink=\"siem\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .expect("waf_siem_dropped_total for the sink")
    };
    // Let the forwarder take the whole flood before the receiver comes back, so that what
    // is kept is exactly the newest.
    assert!(wait_for(10, || bus.depth() == 0).await, "queue drained");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        dropped() > 0,
        "2000 events of ~600 bytes cannot fit in 64 KiB"
    );
    receiver.restart().await;
    let arrived = wait_for(20, || {
        receiver
            .events()
            .iter()
            .any(|e| e["event"]["details"]["seq"] == total - 1)
    })
    .await;
    assert!(arrived, "the newest event is delivered");
    let events = receiver.events();
    let reported: u64 = events
        .iter()
        .filter(|e| e["event"]["type"] == "siem.dropped")
        .map(|e| {
            assert_eq!(e["event"]["details"]["sink"], "siem");
            assert_eq!(e["event"]["severity"], "high");
            e["event"]["details"]["dropped"]
                .as_u64()
                .expect("dropped count")
        })
        .sum();
    assert!(reported > 0, "a siem.dropped event reaches the receiver");
    let seqs = &first_arrivals(&events)["198.51.100.1"];
    let dropped = dropped();
    assert_eq!(
        seqs.first().copied(),
        Some(total - seqs.len() as u64),
        "the oldest were dropped: what is left is the newest, contiguous"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap among the kept"
    );
    // The count also covers `siem.dropped` reports that were themselves dropped later.
    assert!(
        seqs.len() as u64 + dropped >= total,
        "every event is kept or counted"
    );
    fwd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_counts_the_overflow_and_reports_it_as_siem_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(Dialect::Webhook).await;
    let metrics = Metrics::default();
    let catalogue = ErrorCatalogue::embedded().expect("embedded catalogue");
    let (bus, rx) = EventBus::new(5, catalogue, metrics.clone());
    // Nobody is reading yet: five fit, five are dropped and counted.
    for seq in 0..10 {
        bus.emit(event(1, seq));
    }
    let fwd = Forwarder::start(&[receiver.sink("siem", dir.path())], rx).expect("start");
    assert!(wait_for(10, || receiver.events().len() >= 6).await);
    let events = receiver.events();
    assert_eq!(first_arrivals(&events)["198.51.100.1"], vec![0, 1, 2, 3, 4]);
    let report = events
        .iter()
        .find(|e| e["event"]["type"] == "siem.dropped")
        .expect("a siem.dropped event");
    assert_eq!(report["event"]["details"]["sink"], "queue");
    assert_eq!(report["event"]["details"]["dropped"], 5);
    assert_eq!(report["event"]["code"], "SYS-5101");
    assert!(metrics
        .encode()
        .contains("waf_siem_dropped_total{sink=\"queue\"} 5\n"));
    fwd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_writes_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let sink = SinkConfig {
        name: "file".to_owned(),
        target: waf_agent::config::siem::SinkTarget::File(path.clone()),
        batch_size: 10,
        flush_interval: Duration::ZERO,
        timeout: Duration::from_secs(2),
        spool_dir: dir.path().join("spool"),
        spool_max_bytes: 1 << 20,
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
    };
    let (bus, fwd) = start(&[sink], &Metrics::default());
    for seq in 0..25 {
        bus.emit(event(2, seq));
    }
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        wait_for(10, || read().lines().count() == 25).await,
        "25 lines"
    );
    let events: Vec<Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one event"))
        .collect();
    assert_eq!(
        first_arrivals(&events)["198.51.100.2"],
        (0..25).collect::<Vec<u64>>()
    );
    fwd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_too_large_is_halved_and_an_event_refused_alone_is_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(Dialect::Webhook).await;
    receiver.got.lock().expect("lock").max_batch = Some(7);
    let metrics = Metrics::default();
    let (bus, fwd) = start(&[receiver.sink("siem", dir.path())], &metrics);
    for seq in 0..40 {
        let ev = event(3, seq);
        bus.emit(if seq == 17 {
            ev.detail("huge", true)
        } else {
            ev
        });
    }
    assert!(wait_for(10, || receiver.events().len() >= 39).await);
    let expected: Vec<u64> = (0..40).filter(|s| *s != 17).collect();
    assert_eq!(first_arrivals(&receiver.events())["198.51.100.3"], expected);
    assert!(metrics
        .encode()
        .contains("waf_siem_dropped_total{sink=\"siem\"} 1\n"));
    fwd.shutdown().await;
}

fn sample(metrics: &Metrics, prefix: &str) -> u64 {
    metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix}"))
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_doubling_up_to_the_maximum_then_deliver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("not-yet");
    let sink = SinkConfig {
        name: "file".to_owned(),
        target: waf_agent::config::siem::SinkTarget::File(missing.join("events.jsonl")),
        batch_size: 10,
        flush_interval: Duration::ZERO,
        timeout: Duration::from_secs(2),
        spool_dir: dir.path().join("spool"),
        spool_max_bytes: 1 << 20,
        retry_initial: Duration::from_secs(1),
        retry_max: Duration::from_secs(4),
    };
    let metrics = Metrics::default();
    let (bus, fwd) = start(&[sink], &metrics);
    bus.emit(event(1, 0));
    let errors = "waf_siem_delivery_errors_total{sink=\"file\"}";
    // Attempts at 0, 1, 3, 7, 11, 15 s: the wait doubles from 1 s and stays at 4 s.
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    assert_eq!(sample(&metrics, errors), 4, "attempts at 0, 1, 3 and 7 s");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sample(&metrics, errors), 5, "the next one 4 s later, not 8");
    std::fs::create_dir(&missing).expect("create the sink's directory");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sample(&metrics, errors), 5);
    assert_eq!(
        sample(&metrics, "waf_siem_delivered_total{sink=\"file\"}"),
        1
    );
    let lines = std::fs::read_to_string(missing.join("events.jsonl")).expect("file sink output");
    assert_eq!(lines.lines().count(), 1);
    fwd.shutdown().await;
}
