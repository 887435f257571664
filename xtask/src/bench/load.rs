//! `bench load`: floods at the NIC. A generator namespace sends small UDP packets and TCP
//! SYNs over veth to a receiver namespace whose interface runs, in turn, our program with a
//! deny list covering every flood source, xdp-filter with the same addresses, an nftables
//! set drop at the ingress hook, and nothing. Then a spoofed-source flood against our rate
//! limit, with an allow-listed and a denied source beside it.
//!
//! All traffic stays inside 198.18.0.0/15 and 2001:2::/48.

use std::{fmt::Write as _, net::Ipv4Addr, time::Instant};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use ipnet::{IpNet, Ipv4Net};
use waf_common::{Counter, RateKey, RateState};
use waf_tests::lab::Lab;

use super::{
    chart, denylist,
    flood::{self, Kind},
    live,
    receivers::{self, BareDrop, Nft, Ours, XdpFilter},
    table, write_report, xdp, Spread,
};

#[derive(clap::Args)]
pub struct Args {
    /// Deny-list entries (exact and prefixes together).
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    /// Seconds per flood.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of unmeasured flood after each switch of receiver.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Floods per receiver and packet kind; min and max over them are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Per-source rate limit during the spoofed-source flood, packets per second.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Packets per second of the spoofed-source flood: below what the receiver can take, so
    /// that the legitimate sources' packets are not lost in veth's queue before any filter.
    #[arg(long, default_value_t = 100_000)]
    spoof_pps: u64,
    /// What floods the receivers: frames redirected by XDP in the kernel (`live`, as
    /// xdp-trafficgen does: they reach the receiver as from a NIC's driver, and the rate
    /// is set by how fast the receiver takes them), or trafgen's packet sockets (`trafgen`,
    /// socket buffers through veth, where the generator is the bottleneck on a small VM).
    #[arg(long, value_enum, default_value_t = Generator::Live)]
    generator: Generator,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generator {
    Live,
    Trafgen,
}

/// The lab's subnet number: receiver 198.18.252.1, generator 198.18.252.2.
const NET: u8 = 252;
/// Flood sources: 198.19.<random>.<random>; every one of them is on the deny list.
const FLOOD_SRC16: [u8; 2] = [198, 19];
/// Spoofed sources: 198.18.<random>.<random>.
const SPOOF_SRC16: [u8; 2] = [198, 18];
/// A generator address on the allow list (and, as part of 198.19.0.0/16, on the deny list:
/// the allow list must win).
const ALLOWED: &str = "198.19.250.3";
/// A generator address on the deny list.
const DENIED: &str = "198.19.251.9";

const RECEIVERS: [&str; 5] = [
    "waf-agent",
    "xdp-filter",
    "nftables",
    "no filter",
    "bare XDP_DROP",
];
/// The index of the bare `XDP_DROP` receiver in `RECEIVERS`.
const BARE: usize = 4;

/// The flood sources (which include `DENIED`), each as an exact entry, then generated ones.
fn deny_list(total: usize) -> Vec<IpNet> {
    let mut fixed: Vec<IpNet> = Vec::with_capacity(65_536);
    for third in 0..=255u8 {
        for fourth in 0..=255u8 {
            let a = Ipv4Addr::new(FLOOD_SRC16[0], FLOOD_SRC16[1], third, fourth);
            fixed.push(IpNet::V4(Ipv4Net::from(a)));
        }
    }
    denylist::generate(total, &fixed, &xdp::test_ranges(), 8)
}

/// One flood's figures.
#[derive(Clone, Copy, Default)]
struct Sample {
    offered_pps: f64,
    dropped_pps: f64,
    /// Softirq seconds over all CPUs; with the live generator, its own thread's CPU
    /// seconds (where the receiver's work runs) plus ksoftirqd's.
    cpu_s: f64,
    /// How long the flood lasted.
    secs: f64,
    /// Times trafgen gave up on a full queue and was started again (see `flood::run`).
    restarts: u32,
}

/// Samples per receiver and kind: `[receiver][kind]`.
type Results = Vec<[Vec<Sample>; 2]>;

struct Env {
    lab: Lab,
    generator: Generator,
    dst_mac: [u8; 6],
    dst: [u8; 4],
    dst6: [u8; 16],
}

impl Env {
    fn config(&self, kind: Kind) -> String {
        let src16 = if kind == Kind::Spoofed {
            SPOOF_SRC16
        } else {
            FLOOD_SRC16
        };
        flood::config(kind, self.dst_mac, src16, self.dst, self.dst6)
    }

    /// The live generator's frames for `kind`: 256 flood sources in turn.
    fn frames(&self, kind: Kind) -> Vec<Vec<u8>> {
        (0..=255u8)
            .map(|i| {
                let src = Ipv4Addr::new(FLOOD_SRC16[0], FLOOD_SRC16[1], i, i.wrapping_mul(37));
                live::frame(kind, self.dst_mac, src, Ipv4Addr::from(self.dst))
            })
            .collect()
    }

    /// Floods for `args.seconds` and returns the figures, `dropped` read before and after.
    fn flood(&self, secs: f64, kind: Kind, dropped: &dyn Fn() -> Result<u64>) -> Result<Sample> {
        let (ns, iface) = (&self.lab.peer, &self.lab.peer_if);
        let tx0 = receivers::link_packets(ns, iface, "tx")?;
        let d0 = dropped()?;
        // The live generator runs the receiver's work in its own thread, where the kernel
        // counts it (also as softirq time in /proc/stat, so that is not added again); what
        // it defers runs in ksoftirqd.
        let other_cpu = || match self.generator {
            Generator::Live => flood::ksoftirqd_seconds(),
            Generator::Trafgen => flood::softirq_seconds(),
        };
        let s0 = other_cpu()?;
        let (run, sent, thread_cpu_s) = match self.generator {
            Generator::Live => {
                let live = live::run(ns, iface, &self.frames(kind), secs)?;
                (live.flood, live.sent, live.thread_cpu_s)
            }
            Generator::Trafgen => {
                let run = flood::run(ns, iface, &self.config(kind), secs, None)?;
                let tx1 = receivers::link_packets(ns, iface, "tx")?;
                (run, tx1 - tx0, 0.0)
            }
        };
        let s1 = other_cpu()?;
        let d1 = dropped()?;
        let secs = run.elapsed.as_secs_f64();
        Ok(Sample {
            offered_pps: sent as f64 / secs,
            dropped_pps: (d1 - d0) as f64 / secs,
            cpu_s: s1 - s0 + thread_cpu_s,
            secs,
            restarts: run.restarts,
        })
    }
}

fn setup(generator: Generator) -> Result<Env> {
    let lab = Lab::new(NET, &[ALLOWED, DENIED]);
    if generator == Generator::Live {
        live::enable_napi(&lab.host, &lab.host_if)?;
    }
    for route in ["198.19.250.0/24", "198.19.251.0/24"] {
        receivers::run_in(
            &lab.host,
            &["ip", "route", "add", route, "dev", &lab.host_if],
        )?;
    }
    // veth has no queue of its own; the generator sends through this one (see `flood::run`).
    receivers::run_in(
        &lab.peer,
        &[
            "tc",
            "qdisc",
            "replace",
            "dev",
            &lab.peer_if,
            "root",
            "pfifo",
            "limit",
            "10000",
        ],
    )?;
    let dst_mac = receivers::mac(&lab.host, &lab.host_if)?;
    let dst6: std::net::Ipv6Addr = format!("2001:2:0:{NET}::1").parse()?;
    Ok(Env {
        generator,
        dst_mac,
        dst: [198, 18, NET, 1],
        dst6: dst6.octets(),
        lab,
    })
}

fn measure(args: &Args, env: &Env, entries: &[IpNet], results: &mut Results) -> Result<()> {
    let (host, iface) = (env.lab.host.as_str(), env.lab.host_if.as_str());
    let t = Instant::now();
    eprintln!("bench load: loading the lists into each receiver");
    let ours = Ours::load(xdp::our_filter(entries)?)?;
    let peer = XdpFilter::load(entries)?;
    let nft = Nft::load(entries, host)?;
    let bare = BareDrop::load()?;
    eprintln!("bench load: ready in {:.1} s", t.elapsed().as_secs_f64());
    let dropped = |ri: usize| -> Result<u64> {
        match ri {
            0 => ours.counter(Counter::DropDeny),
            1 => peer.dropped(),
            2 => nft.dropped(),
            BARE => BareDrop::dropped(host, iface),
            _ => receivers::link_packets(host, iface, "rx"),
        }
    };
    for run in 0..args.runs {
        eprintln!("bench load: run {} of {}", run + 1, args.runs);
        // Each run starts with another receiver, so none always follows the same one.
        for step in 0..RECEIVERS.len() {
            let ri = (run + step) % RECEIVERS.len();
            // On the interface for this receiver's floods, off again at the end of the step.
            let _xdp = match ri {
                0 => Some(receivers::Attached::new(host, iface, &ours.pin())?),
                1 => Some(receivers::Attached::new(host, iface, peer.pin())?),
                BARE => Some(receivers::Attached::new(host, iface, &bare.pin())?),
                _ => None,
            };
            let _hook = if ri == 2 {
                Some(nft.hook(iface)?)
            } else {
                None
            };
            // A flood that is not measured: right after a switch, veth's queue may still be
            // stopped from the previous flood, which stalls the generator for a moment.
            env.flood(args.warmup, Kind::Udp, &|| dropped(ri))
                .context("warm-up flood")?;
            for (ki, kind) in [Kind::Udp, Kind::Syn].iter().enumerate() {
                let s = env
                    .flood(args.seconds, *kind, &|| dropped(ri))
                    .with_context(|| format!("{} flood against {}", kind.name(), RECEIVERS[ri]))?;
                results[ri][ki].push(s);
            }
        }
    }
    Ok(())
}

/// What the spoofed-source flood showed.
struct Spoofed {
    offered_pps: f64,
    seconds: f64,
    restarts: u32,
    moved: Vec<(&'static str, u64)>,
    allowed_sent: u32,
    allowed_answered: u32,
    denied_sent: u32,
    denied_answered: u32,
    rate_entries: usize,
    rate_capacity: u32,
}

fn spoofed(args: &Args, env: &Env, entries: &[IpNet]) -> Result<Spoofed> {
    eprintln!("bench load: spoofed-source flood");
    let mut filter = xdp::our_filter(entries)?;
    filter.set_rate(args.rate, args.rate);
    filter.allow(&format!("{ALLOWED}/32"));
    let ours = Ours::load(filter)?;
    let _attached = receivers::Attached::new(&env.lab.host, &env.lab.host_if, &ours.pin())?;
    let before = ours.filter.counters();
    let (allowed_sent, denied_sent) = (100, 20);
    let flood_secs = args.seconds.max(8.0);
    let tx0 = receivers::link_packets(&env.lab.peer, &env.lab.peer_if, "tx")?;
    let (run, (allowed_answered, denied_answered)) = std::thread::scope(|s| {
        let pings = s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let dst = format!("198.18.{NET}.1");
            let allowed = env.lab.ping(ALLOWED, &dst, allowed_sent, "0.05");
            let denied = env.lab.ping(DENIED, &dst, denied_sent, "0.05");
            (allowed, denied)
        });
        let flood = flood::run(
            &env.lab.peer,
            &env.lab.peer_if,
            &env.config(Kind::Spoofed),
            flood_secs,
            Some(args.spoof_pps),
        );
        let pings = pings.join().unwrap_or((0, 0));
        flood.map(|e| (e, pings))
    })?;
    let tx1 = receivers::link_packets(&env.lab.peer, &env.lab.peer_if, "tx")?;
    let rate_pin = ours.filter.pin_dir.join(waf_common::maps::RATE);
    let rate: BpfHashMap<MapData, RateKey, RateState> = BpfHashMap::try_from(Map::LruHashMap(
        MapData::from_pin(&rate_pin).context("opening RATE")?,
    ))?;
    Ok(Spoofed {
        offered_pps: (tx1 - tx0) as f64 / run.elapsed.as_secs_f64(),
        seconds: run.elapsed.as_secs_f64(),
        restarts: run.restarts,
        moved: ours.filter.moved_since(&before),
        allowed_sent,
        allowed_answered,
        denied_sent,
        denied_answered,
        rate_entries: rate.keys().flatten().count(),
        rate_capacity: waf_common::capacity::RATE,
    })
}

fn spread(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Option<Spread> {
    Spread::of(&samples.iter().map(f).collect::<Vec<_>>())
}

fn mega(v: Option<Spread>) -> String {
    v.map_or("–".into(), |v| {
        format!("{:.3}–{:.3}", v.min / 1e6, v.max / 1e6)
    })
}

fn report(args: &Args, results: &Results, sp: &Spoofed) -> String {
    let mut md = String::from("# bench load: floods at the NIC\n\n");
    let _ = writeln!(
        md,
        "{} deny entries (every flood source among them as an exact address), {} runs of \
         {:.0} s per receiver and kind, the receivers taking turns within each run (each turn starting with an unmeasured {:.0} s flood), min–max over the runs. {} on one CPU in the \
         generator namespace, as fast as it can; the receiver is a veth in driver-mode XDP \
         (nftables: netdev ingress hook). Offered: packets the generator's interface sent \
         (veth holds the sender back when the receiver falls behind). Dropped: the receiver's own \
         drop counter (no filter: packets the stack received and discarded). CPU: softirq seconds over all CPUs from /proc/stat \
         during the flood, which is where veth's receive path and XDP run (with the live \
         generator: see below); the machine is shared, so this \
         includes other load. Ratios compare medians to ours (drops/s: \
         higher is better; CPU per packet: lower is better). Generator restarts: trafgen gives \
         up when veth's queue stays full and is started again at once.\n\n{}\n",
        args.entries,
        args.runs,
        args.seconds,
        args.warmup,
        match args.generator {
            Generator::Trafgen => "trafgen",
            Generator::Live => "An XDP redirect program run by BPF_PROG_TEST_RUN in live-frames mode",
        },
        match args.generator {
            Generator::Trafgen => "NB: veth runs driver-mode XDP on a socket buffer only after \
                copying the packet into a page with XDP headroom (the generator's buffers have \
                too little), a per-packet cost a physical NIC's driver does not have and \
                nftables and the plain stack do not pay here. This flood ranks the XDP filters \
                against each other; it understates their edge over nftables and no filter.",
            Generator::Live => "NB: live frames reach the receiver as XDP frames, as from a \
                NIC's driver (nftables and no filter get them after veth builds a socket buffer \
                from each). The receiving side's work runs on the sending CPU inside the \
                generator's system call, one frame after the other, so the rate reached is set \
                by the receiver's cost per frame plus the generator's own (the same for every \
                receiver). CPU: the generator thread's CPU seconds plus ksoftirqd's; a bare \
                XDP_DROP program shows the floor that the generator and veth put under every \
                receiver, and the last table takes it away to give each receiver's own cost \
                per frame and the drop rate one CPU would reach at that cost.",
        }
    );
    for (ki, kind) in [Kind::Udp, Kind::Syn].iter().enumerate() {
        let _ = writeln!(md, "## {} flood\n", kind.name());
        let ours_drop = spread(&results[0][ki], |s| s.dropped_pps);
        let per_pkt = |s: &Sample| {
            if s.dropped_pps > 0.0 {
                s.cpu_s / (s.dropped_pps * s.secs) * 1e9
            } else {
                0.0
            }
        };
        let ours_cpu = spread(&results[0][ki], per_pkt);
        let rows: Vec<Vec<String>> = RECEIVERS
            .iter()
            .enumerate()
            .map(|(ri, name)| {
                let s = &results[ri][ki];
                let drop = spread(s, |x| x.dropped_pps);
                let cpu = spread(s, |x| x.cpu_s);
                let ns = spread(s, per_pkt);
                let ratio = |a: Option<Spread>, b: Option<Spread>| match (a, b) {
                    (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}", a.median / b.median),
                    _ => "–".into(),
                };
                vec![
                    name.to_string(),
                    mega(spread(s, |x| x.offered_pps)),
                    mega(drop),
                    cpu.map_or("–".into(), |c| c.show(2)),
                    ns.map_or("–".into(), |c| c.show(0)),
                    ratio(drop, ours_drop),
                    ratio(ns, ours_cpu),
                    s.iter().map(|x| x.restarts).sum::<u32>().to_string(),
                ]
            })
            .collect();
        md.push_str(&table(
            &[
                "receiver",
                "offered Mpps",
                "dropped Mpps",
                "CPU s",
                "CPU ns per dropped packet",
                "drops/s ÷ ours",
                "CPU per packet ÷ ours",
                "generator restarts",
            ],
            &rows,
        ));
        md.push('\n');
        if args.generator == Generator::Live {
            md.push_str(&own_cost_table(results, ki));
        }
    }
    let _ = writeln!(
        md,
        "## Spoofed-source flood (waf-agent)\n\nIPv4 UDP from random sources in \
         198.18.0.0/16 and IPv6 UDP from random sources in 2001:2::/48 (rate-limited per /64), \
         {:.3} Mpps offered for {:.1} s ({} generator restarts), rate limit {} packets/s per \
         source with a burst of {}. Meanwhile {ALLOWED} (allow-listed) and {DENIED} (denied) \
         ping the receiver.\n",
        sp.offered_pps / 1e6,
        sp.seconds,
        sp.restarts,
        args.rate,
        args.rate
    );
    let rows = vec![
        vec![
            format!("allow-listed {ALLOWED}, end to end"),
            format!(
                "{} of {} pings answered",
                sp.allowed_answered, sp.allowed_sent
            ),
        ],
        vec![
            format!("allow-listed {ALLOWED} at the filter"),
            format!(
                "{} of {} passed (pass_allow)",
                sp.moved
                    .iter()
                    .find(|(n, _)| *n == "pass_allow")
                    .map_or(0, |(_, v)| *v),
                sp.allowed_sent
            ),
        ],
        vec![
            format!("denied {DENIED}"),
            format!(
                "{} of {} pings answered",
                sp.denied_answered, sp.denied_sent
            ),
        ],
        vec![
            "RATE map entries".into(),
            format!(
                "{} of {} ({:.0} %)",
                sp.rate_entries,
                sp.rate_capacity,
                100.0 * sp.rate_entries as f64 / sp.rate_capacity as f64
            ),
        ],
    ];
    md.push_str(&table(&["what", "result"], &rows));
    md.push('\n');
    let rows: Vec<Vec<String>> = sp
        .moved
        .iter()
        .map(|(name, n)| vec![name.to_string(), n.to_string()])
        .collect();
    md.push_str(&table(&["counter", "packets during the flood"], &rows));
    md
}

/// Each receiver's own ns per dropped frame: its ns per frame minus the bare `XDP_DROP`
/// receiver's in the same run (the generator's and veth's share), the drop rate one CPU
/// reaches at that cost, and its ratio to ours.
fn own_cost_table(results: &Results, ki: usize) -> String {
    let own = |ri: usize| -> Vec<f64> {
        results[ri][ki]
            .iter()
            .zip(&results[BARE][ki])
            .filter(|(s, b)| s.dropped_pps > 0.0 && b.dropped_pps > 0.0)
            .map(|(s, b)| 1e9 / s.dropped_pps - 1e9 / b.dropped_pps)
            .collect()
    };
    let ours = Spread::of(&own(0));
    let rows: Vec<Vec<String>> = (0..BARE)
        .map(|ri| {
            let ns = Spread::of(&own(ri));
            let rate = Spread::of(
                &own(ri)
                    .iter()
                    .map(|&n| if n > 0.0 { 1e3 / n } else { f64::INFINITY })
                    .collect::<Vec<_>>(),
            );
            let ratio = match (ns, ours) {
                (Some(n), Some(o)) if n.median > 0.0 => format!("{:.2}", o.median / n.median),
                _ => "–".into(),
            };
            vec![
                RECEIVERS[ri].to_string(),
                ns.map_or("–".into(), |n| n.show(0)),
                rate.map_or("–".into(), |r| r.show(2)),
                ratio,
            ]
        })
        .collect();
    let mut md =
        String::from("Without the floor (each run's bare XDP_DROP ns per frame taken away):\n\n");
    md.push_str(&table(
        &[
            "receiver",
            "own ns per dropped frame",
            "Mpps one CPU drops at that cost",
            "drops/s ÷ ours",
        ],
        &rows,
    ));
    md.push('\n');
    md
}

fn charts(results: &Results) -> Result<()> {
    let dir = super::out_dir()?;
    let kinds = [Kind::Udp, Kind::Syn];
    let panel = |title: &str, y: &str, f: &dyn Fn(&Sample) -> f64| chart::Panel {
        title: title.into(),
        y_desc: y.into(),
        categories: kinds.iter().map(|k| k.name().to_string()).collect(),
        series: RECEIVERS
            .iter()
            .enumerate()
            .map(|(ri, name)| chart::Series {
                name: name.to_string(),
                values: (0..2).map(|ki| spread(&results[ri][ki], f)).collect(),
            })
            .collect(),
    };
    chart::draw(
        &dir.join("load-drops.png"),
        &[panel("Packets dropped per second", "Mpps", &|s| {
            s.dropped_pps / 1e6
        })],
    )?;
    chart::draw(
        &dir.join("load-cpu.png"),
        &[
            panel("CPU seconds per flood", "CPU s", &|s| s.cpu_s),
            panel("CPU ns per dropped packet", "ns", &|s| {
                if s.dropped_pps > 0.0 {
                    s.cpu_s / (s.dropped_pps * s.secs) * 1e9
                } else {
                    0.0
                }
            }),
        ],
    )
}

pub fn run(args: &Args) -> Result<()> {
    let entries = deny_list(args.entries);
    let env = setup(args.generator)?;
    let mut results: Results = (0..RECEIVERS.len())
        .map(|_| [Vec::new(), Vec::new()])
        .collect();
    measure(args, &env, &entries, &mut results)?;
    let sp = spoofed(args, &env, &entries)?;
    let md = report(args, &results, &sp);
    print!("{md}");
    let path = write_report("load.md", &md)?;
    charts(&results)?;
    eprintln!(
        "bench load: wrote {} with load-drops.png and load-cpu.png beside it",
        path.display()
    );
    Ok(())
}
