//! The XDP program on the running kernel, driven by `BPF_PROG_TEST_RUN` on crafted frames:
//! every packet shape, every decision, with the exact counters each must move.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use waf_agent::xdp::clock;
use waf_common::{Counter, Mode};
use waf_tests::{
    fixture::{net, Filter},
    frames::{self, Ext, TPID_8021AD, TPID_8021Q},
    test_run::{XDP_DROP, XDP_PASS},
};

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("test address")
}

#[test]
fn clean_source_passes_and_counts_as_clean() {
    let f = Filter::new();
    let before = f.counters();
    assert_eq!(f.run(&frames::v4(v4("198.18.0.2"))), XDP_PASS);
    assert_eq!(f.run(&frames::v6(v6("2001:2::2"))), XDP_PASS);
    assert_eq!(f.moved_since(&before), vec![("pass_clean", 2)]);
}

#[test]
fn denied_ipv4_source_is_dropped_in_every_frame_shape() {
    let mut f = Filter::new();
    f.deny("198.18.0.66");
    let src = v4("198.18.0.66");
    let shapes = [
        ("plain", frames::v4(src)),
        ("802.1Q", frames::v4_with(&[(TPID_8021Q, 10)], src, 0, 0)),
        (
            "QinQ",
            frames::v4_with(&[(TPID_8021AD, 100), (TPID_8021Q, 10)], src, 0, 0),
        ),
        ("options IHL=15", frames::v4_with(&[], src, 40, 0)),
        (
            "options IHL=6 in QinQ",
            frames::v4_with(&[(TPID_8021AD, 1), (TPID_8021Q, 2)], src, 4, 0),
        ),
        ("non-first fragment", frames::v4_with(&[], src, 0, 185)),
    ];
    let before = f.counters();
    for (name, frame) in &shapes {
        assert_eq!(
            f.run(frame),
            XDP_DROP,
            "{name} frame from a denied source must drop"
        );
    }
    assert_eq!(
        f.moved_since(&before),
        vec![("drop_deny", shapes.len() as u64)]
    );
}

#[test]
fn denied_ipv6_source_is_dropped_behind_any_extension_headers() {
    let mut f = Filter::new();
    f.deny("2001:2:0:66::/64");
    let src = v6("2001:2:0:66::9");
    let udp = (17u8, &[0u8; 12][..]);
    let shapes = [
        ("plain", frames::v6(src)),
        (
            "802.1Q",
            frames::v6_with(&[(TPID_8021Q, 7)], src, &[], udp, 64),
        ),
        (
            "QinQ",
            frames::v6_with(&[(TPID_8021AD, 7), (TPID_8021Q, 8)], src, &[], udp, 64),
        ),
        (
            "hop-by-hop, routing, destination options",
            frames::v6_with(
                &[],
                src,
                &[Ext::HopByHop, Ext::Routing, Ext::DestOpts],
                udp,
                64,
            ),
        ),
        (
            "first fragment",
            frames::v6_with(&[], src, &[Ext::Fragment { offset: 0 }], udp, 64),
        ),
        (
            "non-first fragment",
            frames::v6_with(&[], src, &[Ext::Fragment { offset: 185 }], udp, 64),
        ),
        ("AH", frames::v6_with(&[], src, &[Ext::Auth], udp, 64)),
        (
            "ICMPv6 echo behind hop-by-hop",
            frames::v6_with(
                &[],
                src,
                &[Ext::HopByHop],
                (58, &[128, 0, 0, 0, 0, 0, 0, 0]),
                64,
            ),
        ),
    ];
    let before = f.counters();
    for (name, frame) in &shapes {
        assert_eq!(
            f.run(frame),
            XDP_DROP,
            "{name} packet from a denied source must drop"
        );
    }
    assert_eq!(
        f.moved_since(&before),
        vec![("drop_deny", shapes.len() as u64)]
    );
}

#[test]
fn arp_and_other_non_ip_frames_pass_even_in_panic_mode() {
    let mut f = Filter::new();
    f.set_mode(Mode::Panic);
    let before = f.counters();
    assert_eq!(f.run(&frames::arp()), XDP_PASS);
    let mut lldp = frames::ethernet(&[], 0x88cc);
    lldp.extend_from_slice(&[0; 46]);
    assert_eq!(f.run(&lldp), XDP_PASS);
    assert_eq!(f.moved_since(&before), vec![("pass_non_ip", 2)]);
}

#[test]
fn neighbour_discovery_passes_in_panic_mode_only_with_hop_limit_255() {
    let mut f = Filter::new();
    f.set_mode(Mode::Panic);
    let src = v6("fe80::2");
    let before = f.counters();
    for icmp_type in 133..=137 {
        assert_eq!(
            f.run(&frames::icmpv6(src, icmp_type, 255)),
            XDP_PASS,
            "ND type {icmp_type}"
        );
    }
    // Hop limit below 255 cannot be on-link neighbour discovery: judged like any packet.
    assert_eq!(f.run(&frames::icmpv6(src, 135, 64)), XDP_DROP);
    assert_eq!(
        f.moved_since(&before),
        vec![("pass_nd", 5), ("drop_panic", 1)]
    );
}

#[test]
fn malformed_frames_are_dropped_and_counted_as_malformed() {
    let f = Filter::new();
    let src = v4("198.18.0.2");
    let mut bad_version = frames::v4(src);
    bad_version[14] = 0x55;
    let mut ihl_too_small = frames::v4(src);
    ihl_too_small[14] = 0x44;
    let mut options_past_end = frames::v4(src);
    options_past_end[14] = 0x4f; // claims 60 bytes of header; the frame has 20 + 12
    let three_tags = frames::v4_with(
        &[(TPID_8021AD, 1), (TPID_8021Q, 2), (TPID_8021Q, 3)],
        src,
        0,
        0,
    );
    let mut truncated_v6 = frames::v6(v6("2001:2::2"));
    truncated_v6.truncate(14 + 30);
    let long_chain = frames::v6_with(&[], v6("2001:2::2"), &[Ext::DestOpts; 9], (17, &[0; 8]), 64);
    let mut truncated_ext = frames::v6_with(&[], v6("2001:2::2"), &[Ext::HopByHop], (17, &[]), 64);
    truncated_ext.truncate(14 + 40 + 4);
    // BPF_PROG_TEST_RUN refuses frames under 14 bytes (as NICs discard runts), so the
    // shortest shape here is a bare Ethernet header announcing IP.
    let shapes: Vec<(&str, Vec<u8>)> = vec![
        ("Ethernet header only", frames::ethernet(&[], 0x0800)),
        ("IPv4 cut at 10 bytes", frames::v4(src)[..24].to_vec()),
        ("IP version 5", bad_version),
        ("IHL 4", ihl_too_small),
        ("options past the end", options_past_end),
        ("three VLAN tags", three_tags),
        ("IPv6 cut in the fixed header", truncated_v6),
        ("nine extension headers", long_chain),
        ("extension header cut short", truncated_ext),
    ];
    let before = f.counters();
    for (name, frame) in &shapes {
        assert_eq!(
            f.run(frame),
            XDP_DROP,
            "{name} must be dropped as malformed"
        );
    }
    assert_eq!(
        f.moved_since(&before),
        vec![("drop_malformed", shapes.len() as u64)]
    );
}

#[test]
fn ipv4_prefix_edges_deny_inside_and_pass_outside() {
    let mut f = Filter::new();
    f.deny("198.18.5.0/25");
    let before = f.counters();
    assert_eq!(f.run(&frames::v4(v4("198.18.5.77"))), XDP_DROP);
    assert_eq!(f.run(&frames::v4(v4("198.18.5.127"))), XDP_DROP);
    assert_eq!(f.run(&frames::v4(v4("198.18.5.128"))), XDP_PASS);
    assert_eq!(f.run(&frames::v4(v4("198.18.5.200"))), XDP_PASS);
    assert_eq!(
        f.moved_since(&before),
        vec![("pass_clean", 2), ("drop_deny", 2)]
    );
}

#[test]
fn removing_a_covering_prefix_keeps_a_shorter_one_that_overlaps_it() {
    let mut f = Filter::new();
    let both: BTreeSet<IpNet> = [net("198.18.0.0/16"), net("198.18.7.0/24")].into();
    f.maps.sync_deny(&both).expect("sync");
    assert_eq!(f.run(&frames::v4(v4("198.18.7.9"))), XDP_DROP);
    let outer: BTreeSet<IpNet> = [net("198.18.0.0/16")].into();
    f.maps.sync_deny(&outer).expect("sync");
    assert_eq!(f.run(&frames::v4(v4("198.18.7.9"))), XDP_DROP);
    assert_eq!(f.run(&frames::v4(v4("198.18.200.1"))), XDP_DROP);
    let inner: BTreeSet<IpNet> = [net("198.18.7.0/24")].into();
    f.maps.sync_deny(&inner).expect("sync");
    assert_eq!(f.run(&frames::v4(v4("198.18.7.9"))), XDP_DROP);
    assert_eq!(f.run(&frames::v4(v4("198.18.200.1"))), XDP_PASS);
    f.maps.sync_deny(&BTreeSet::new()).expect("sync");
    assert_eq!(f.run(&frames::v4(v4("198.18.7.9"))), XDP_PASS);
}

#[test]
fn ipv6_prefix_edges_deny_inside_the_48_and_pass_the_neighbour() {
    let mut f = Filter::new();
    f.deny("2001:2:1::/48");
    let before = f.counters();
    assert_eq!(f.run(&frames::v6(v6("2001:2:1::1"))), XDP_DROP);
    assert_eq!(
        f.run(&frames::v6(v6("2001:2:1:ffff:ffff:ffff:ffff:ffff"))),
        XDP_DROP
    );
    assert_eq!(f.run(&frames::v6(v6("2001:2:2::1"))), XDP_PASS);
    assert_eq!(f.run(&frames::v6(v6("2001:2:0:ffff::1"))), XDP_PASS);
    assert_eq!(
        f.moved_since(&before),
        vec![("pass_clean", 2), ("drop_deny", 2)]
    );
}

#[test]
fn exact_ipv6_deny_uses_the_hash_and_spares_the_next_address() {
    let mut f = Filter::new();
    f.deny("2001:2::66");
    assert_eq!(f.run(&frames::v6(v6("2001:2::66"))), XDP_DROP);
    assert_eq!(f.run(&frames::v6(v6("2001:2::67"))), XDP_PASS);
}

#[test]
fn allow_list_beats_deny_and_ban() {
    let mut f = Filter::new();
    f.deny("198.18.7.0/24");
    f.maps
        .ban_set(
            net("198.18.7.9"),
            clock::deadline_ns(Duration::from_secs(600)),
        )
        .expect("ban");
    f.allow("198.18.7.9/32");
    f.deny("2001:2:7::/48");
    f.allow("2001:2:7::/64");
    let before = f.counters();
    assert_eq!(f.run(&frames::v4(v4("198.18.7.9"))), XDP_PASS);
    assert_eq!(f.run(&frames::v4(v4("198.18.7.10"))), XDP_DROP);
    assert_eq!(f.run(&frames::v6(v6("2001:2:7::5"))), XDP_PASS);
    assert_eq!(f.run(&frames::v6(v6("2001:2:7:1::5"))), XDP_DROP);
    assert_eq!(
        f.moved_since(&before),
        vec![("pass_allow", 2), ("drop_deny", 2)]
    );
}

#[test]
fn ban_drops_until_its_monotonic_expiry_then_the_source_passes() {
    let mut f = Filter::new();
    f.maps
        .ban_set(
            net("198.18.8.0/24"),
            clock::deadline_ns(Duration::from_millis(300)),
        )
        .expect("ban");
    f.maps
        .ban_set(
            net("2001:2:8::1"),
            clock::deadline_ns(Duration::from_millis(300)),
        )
        .expect("ban");
    assert_eq!(f.run(&frames::v4(v4("198.18.8.4"))), XDP_DROP);
    assert_eq!(f.run(&frames::v6(v6("2001:2:8::1"))), XDP_DROP);
    std::thread::sleep(Duration::from_millis(400));
    let before = f.counters();
    assert_eq!(
        f.run(&frames::v4(v4("198.18.8.4"))),
        XDP_PASS,
        "expired ban must not drop"
    );
    assert_eq!(
        f.run(&frames::v6(v6("2001:2:8::1"))),
        XDP_PASS,
        "expired ban must not drop"
    );
    assert_eq!(f.moved_since(&before), vec![("pass_clean", 2)]);
    let swept = f.maps.sweep_bans(clock::monotonic_ns()).expect("sweep");
    assert_eq!(swept.len(), 2, "both expired bans are removed by the sweep");
}

#[test]
fn short_ban_inside_a_long_one_does_not_hide_it_once_expired() {
    // Bans set with the agent stopped (the CLI's fallback): a /32 for 300 ms inside a /24
    // for ten minutes, in either order. The kernel finds the /32 first, so it must not end
    // before the /24 that covers it.
    let mut f = Filter::new();
    waf_agent::xdp::ops::ban(&mut f.maps, net("198.18.19.0/24"), Duration::from_secs(600))
        .expect("long ban");
    waf_agent::xdp::ops::ban(
        &mut f.maps,
        net("198.18.19.7/32"),
        Duration::from_millis(300),
    )
    .expect("short ban");
    waf_agent::xdp::ops::ban(
        &mut f.maps,
        net("2001:2:19::7/128"),
        Duration::from_millis(300),
    )
    .expect("short ban");
    waf_agent::xdp::ops::ban(&mut f.maps, net("2001:2:19::/48"), Duration::from_secs(600))
        .expect("long ban");
    std::thread::sleep(Duration::from_millis(400));
    let before = f.counters();
    assert_eq!(f.run(&frames::v4(v4("198.18.19.7"))), XDP_DROP);
    assert_eq!(f.run(&frames::v6(v6("2001:2:19::7"))), XDP_DROP);
    assert_eq!(f.moved_since(&before), vec![("drop_ban", 2)]);
}

#[test]
fn monitor_mode_counts_what_it_would_drop_and_drops_nothing() {
    let mut f = Filter::new();
    f.set_mode(Mode::Monitor);
    f.deny("198.18.9.9");
    f.maps
        .ban_set(
            net("198.18.9.10"),
            clock::deadline_ns(Duration::from_secs(60)),
        )
        .expect("ban");
    // One packet a second, burst 1: the second frame is over the rate however slowly the
    // kernel runs (software emulation in the VM run included).
    f.set_rate(1, 1);
    let before = f.counters();
    assert_eq!(f.run(&frames::v4(v4("198.18.9.9"))), XDP_PASS);
    assert_eq!(f.run(&frames::v4(v4("198.18.9.10"))), XDP_PASS);
    assert_eq!(f.run(&frames::ethernet(&[], 0x86DD)), XDP_PASS);
    assert_eq!(f.run(&frames::v4(v4("198.18.9.11"))), XDP_PASS);
    assert_eq!(
        f.run(&frames::v4(v4("198.18.9.11"))),
        XDP_PASS,
        "over rate, but monitor"
    );
    assert_eq!(
        f.moved_since(&before),
        vec![
            ("pass_clean", 1),
            ("monitor_ban", 1),
            ("monitor_deny", 1),
            ("monitor_rate", 1),
            ("monitor_malformed", 1)
        ]
    );
}

#[test]
fn panic_mode_drops_everything_but_the_allow_list() {
    let mut f = Filter::new();
    f.allow("198.18.10.1/32");
    f.allow("2001:2:10::/64");
    f.set_mode(Mode::Panic);
    let before = f.counters();
    assert_eq!(f.run(&frames::v4(v4("198.18.10.1"))), XDP_PASS);
    assert_eq!(f.run(&frames::v4(v4("198.18.10.2"))), XDP_DROP);
    assert_eq!(f.run(&frames::v6(v6("2001:2:10::9"))), XDP_PASS);
    assert_eq!(f.run(&frames::v6(v6("2001:2:11::9"))), XDP_DROP);
    assert_eq!(
        f.moved_since(&before),
        vec![("pass_allow", 2), ("drop_panic", 2)]
    );
}

#[test]
fn panic_ttl_lifts_by_itself_without_the_agent() {
    let mut f = Filter::new();
    f.maps
        .update_settings(|s| {
            s.saved_mode = Mode::Enforce as u32;
            s.mode = Mode::Panic as u32;
            s.panic_until_ns = clock::deadline_ns(Duration::from_millis(200));
        })
        .expect("panic on");
    assert_eq!(f.run(&frames::v4(v4("198.18.11.2"))), XDP_DROP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(f.run(&frames::v4(v4("198.18.11.2"))), XDP_PASS);
    assert_eq!(f.count(Counter::DropPanic), 1);
}

#[test]
fn rate_limit_lets_exactly_the_burst_through_back_to_back() {
    let mut f = Filter::new();
    f.set_rate(100, 50);
    let frame = frames::v4(v4("198.18.12.2"));
    let before = f.counters();
    // 200 runs inside the kernel take well under a millisecond: no token is earned.
    waf_tests::test_run::run(f.prog_fd(), &frame, 200).expect("test run");
    assert_eq!(
        f.moved_since(&before),
        vec![("pass_clean", 50), ("drop_rate", 150)]
    );
}

#[test]
fn playbook_throttle_lowers_the_sources_rate_until_it_ends_and_is_swept() {
    use waf_agent::playbooks::executor::Edge as _;
    let mut f = Filter::new();
    f.set_rate(1000, 100);
    // The medium tier's throttle: 10 packets/s, burst 5, for 300 ms, on one /32 only.
    f.maps
        .throttle(net("198.18.14.2/32"), 10, 5, Duration::from_millis(300))
        .expect("throttle");
    let throttled = frames::v4(v4("198.18.14.2"));
    let neighbour = frames::v4(v4("198.18.14.3"));
    let before = f.counters();
    waf_tests::test_run::run(f.prog_fd(), &throttled, 50).expect("test run");
    assert_eq!(
        f.moved_since(&before),
        vec![("pass_clean", 5), ("drop_rate", 45)],
        "the throttled source gets its own burst of 5"
    );
    let before = f.counters();
    waf_tests::test_run::run(f.prog_fd(), &neighbour, 50).expect("test run");
    assert_eq!(
        f.moved_since(&before),
        vec![("pass_clean", 50)],
        "its neighbour keeps the configured rate"
    );
    assert!(f
        .maps
        .sweep_throttles(clock::monotonic_ns())
        .expect("sweep")
        .is_empty());
    std::thread::sleep(Duration::from_millis(400));
    let swept = f
        .maps
        .sweep_throttles(clock::monotonic_ns())
        .expect("sweep");
    assert_eq!(
        swept,
        vec![net("198.18.14.2/32")],
        "the ended throttle is removed"
    );
    assert!(f.maps.throttle_entries().is_empty());
}

#[test]
fn rate_limit_holds_the_configured_rate_within_ten_percent() {
    let mut f = Filter::new();
    let rate = 500u64;
    let burst = 10u64;
    f.set_rate(rate, burst);
    let frame = frames::v4(v4("198.18.13.2"));
    let start = Instant::now();
    let period = Duration::from_micros(500); // offered: 2000 packets per second
    let mut sent = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        f.run(&frame);
        sent += 1;
        let next = period * sent;
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let passed = f.count(Counter::PassClean) as f64;
    let expected = burst as f64 + rate as f64 * secs;
    let error = (passed - expected).abs() / expected;
    assert!(
        error <= 0.10,
        "passed {passed} of {sent} in {secs:.2}s; expected {expected:.0} (±10 %), off by {:.1} %",
        error * 100.0
    );
    assert_eq!(
        f.count(Counter::DropRate) + f.count(Counter::PassClean),
        u64::from(sent)
    );
}

#[test]
fn ipv6_sources_in_one_64_share_a_rate_bucket() {
    let mut f = Filter::new();
    f.set_rate(1, 3);
    let before = f.counters();
    for host in [
        "2001:2:14::1",
        "2001:2:14::2",
        "2001:2:14::3",
        "2001:2:14::4",
    ] {
        f.run(&frames::v6(v6(host)));
    }
    f.run(&frames::v6(v6("2001:2:14:1::1")));
    assert_eq!(
        f.moved_since(&before),
        vec![("pass_clean", 4), ("drop_rate", 1)]
    );
}

#[test]
fn drops_are_sampled_into_the_ring_buffer_with_source_and_reason() {
    let mut f = Filter::new();
    f.deny("198.18.15.5");
    for _ in 0..3 {
        f.run(&frames::v4(v4("198.18.15.5")));
    }
    let data =
        aya::maps::MapData::from_pin(f.pin_dir.join(waf_common::maps::EVENTS)).expect("ring pin");
    let map = aya::maps::Map::from_map_data(data).expect("ring map");
    let mut ring: aya::maps::RingBuf<aya::maps::MapData> = map.try_into().expect("a ring buffer");
    let mut seen = Vec::new();
    while let Some(item) = ring.next() {
        seen.push(waf_agent::xdp::events::Drop::decode(&item).expect("a drop event"));
    }
    assert_eq!(seen.len(), 3, "sample_every=1 sends every drop");
    for d in seen {
        assert_eq!(
            d.source,
            "198.18.15.5".parse::<std::net::IpAddr>().expect("addr")
        );
        assert_eq!(d.counter, Counter::DropDeny);
    }
}

#[test]
fn pins_of_another_layout_are_refused_not_adopted() {
    let mut f = Filter::new();
    f.maps
        .write_settings(&waf_common::Settings {
            layout_version: waf_common::LAYOUT_VERSION + 1,
            ..f.maps.settings().expect("settings")
        })
        .expect("write a foreign layout version");
    let err = waf_agent::xdp::loader::load(
        waf_agent::xdp::OBJECT,
        &f.pin_dir,
        &waf_agent::config::Capacity::default(),
    )
    .err()
    .expect("a foreign layout must be refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("layout version") && text.contains("waf-agent detach"),
        "the refusal names the cause and the remedy: {text}"
    );
    // The foreign settings are left as they were.
    assert_eq!(
        f.maps.settings().expect("settings").layout_version,
        waf_common::LAYOUT_VERSION + 1
    );
}

#[test]
fn spoofed_sources_past_the_rate_maps_size_evict_no_deny_or_ban_entry() {
    let mut f = waf_tests::fixture::Filter::with_capacity(&waf_agent::config::Capacity {
        rate: 1024,
        ..waf_agent::config::Capacity::default()
    });
    f.set_rate(1000, 100);
    f.deny("198.18.20.1");
    f.maps
        .ban_set(
            net("198.18.20.2"),
            clock::deadline_ns(Duration::from_secs(600)),
        )
        .expect("ban");
    // Four times as many sources as the rate map holds, each seen once.
    let before = f.counters();
    for i in 0..4096u32 {
        let [_, _, c, d] = i.to_be_bytes();
        f.run(&frames::v4(Ipv4Addr::new(198, 19, c, d)));
    }
    assert_eq!(f.moved_since(&before), vec![("pass_clean", 4096)]);
    let rate_entries = f
        .maps
        .fill()
        .into_iter()
        .find(|(m, _)| *m == waf_common::maps::RATE)
        .map(|(_, n)| n);
    if let Some(n) = rate_entries {
        assert!(n <= 1024, "the LRU stays within its size: {n}");
    }
    let before = f.counters();
    assert_eq!(f.run(&frames::v4(v4("198.18.20.1"))), XDP_DROP);
    assert_eq!(f.run(&frames::v4(v4("198.18.20.2"))), XDP_DROP);
    assert_eq!(
        f.moved_since(&before),
        vec![("drop_ban", 1), ("drop_deny", 1)],
        "the deny and ban entries outlived the flood"
    );
}
