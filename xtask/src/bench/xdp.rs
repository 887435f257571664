//! `bench xdp`: per-packet cost of the filter from the kernel's own clock
//! (`BPF_PROG_TEST_RUN` with a repeat count), beside a bare `XDP_PASS` program and
//! xdp-filter, on the same frames in the same run, at several deny-list sizes.
//!
//! NB: a test run repeats one frame, so the map lookups run with warm caches; the figures
//! are the floor of what each program costs, not what it costs on a cold packet mix.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, RawFd},
    time::Instant,
};

use anyhow::{Context as _, Result};
use ipnet::IpNet;
use waf_tests::{
    fixture::Filter,
    frames,
    test_run::{XDP_DROP, XDP_PASS},
};

use super::{bpf, chart, denylist, table, write_report, xdp_filter, Spread};

#[derive(clap::Args)]
pub struct Args {
    /// Deny-list sizes (entries, exact and prefixes together).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 100_000, 1_000_000])]
    sizes: Vec<usize>,
    /// Test runs per program and frame; min and max over them are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Repetitions inside one test run; the kernel reports their mean.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
}

/// Frames every program runs, and the verdict each must reach.
struct Probe {
    name: &'static str,
    frame: Vec<u8>,
    verdict: u32,
    /// Whether an exact-match filter can reach the same verdict (not for prefix hits).
    exact: bool,
}

/// Entries that the probes hit; the rest of each list stays clear of the test ranges.
fn fixed_entries() -> Vec<IpNet> {
    [
        "198.19.0.1/32",
        "198.19.128.0/24",
        "2001:2:0:ff::1/128",
        "2001:2:0:fe::/64",
    ]
    .iter()
    .map(|s| s.parse().expect("valid literal"))
    .collect()
}

pub fn test_ranges() -> Vec<IpNet> {
    ["198.18.0.0/15", "2001:2::/48"]
        .iter()
        .map(|s| s.parse().expect("valid literal"))
        .collect()
}

fn probes() -> Vec<Probe> {
    let v6 = |s: &str| s.parse::<Ipv6Addr>().expect("valid literal");
    vec![
        Probe {
            name: "IPv4 pass",
            frame: frames::v4(Ipv4Addr::new(198, 18, 0, 2)),
            verdict: XDP_PASS,
            exact: true,
        },
        Probe {
            name: "IPv4 drop, exact",
            frame: frames::v4(Ipv4Addr::new(198, 19, 0, 1)),
            verdict: XDP_DROP,
            exact: true,
        },
        Probe {
            name: "IPv4 drop, prefix",
            frame: frames::v4(Ipv4Addr::new(198, 19, 128, 5)),
            verdict: XDP_DROP,
            exact: false,
        },
        Probe {
            name: "IPv6 pass",
            frame: frames::v6(v6("2001:2::2")),
            verdict: XDP_PASS,
            exact: true,
        },
        Probe {
            name: "IPv6 drop, exact",
            frame: frames::v6(v6("2001:2:0:ff::1")),
            verdict: XDP_DROP,
            exact: true,
        },
        Probe {
            name: "IPv6 drop, prefix",
            frame: frames::v6(v6("2001:2:0:fe::5")),
            verdict: XDP_DROP,
            exact: false,
        },
    ]
}

const PROGRAMS: [&str; 4] = [
    "bare XDP_PASS",
    "waf-agent",
    "xdp-filter",
    "xdp-filter (CLI)",
];

/// ns per packet of each program on each probe at one list size: `[probe][program]`.
struct SizeResult {
    size: usize,
    fill_seconds: (f64, f64),
    ns: Vec<[Option<Spread>; 4]>,
}

/// Loads our filter into its own pin directory with `entries` on its deny list, written as the
/// agent writes a feed (`sync_deny`), in enforce mode with the agent's default event sampling
/// (1 in 64) and no rate limit (a test run repeats one source, which a rate limit would turn
/// into drops).
pub fn our_filter(entries: &[IpNet]) -> Result<Filter> {
    let mut f = Filter::new();
    f.maps
        .update_settings(|s| s.sample_every = 64)
        .context("writing settings")?;
    let desired = entries.iter().copied().collect();
    f.maps
        .sync_deny(&desired)
        .context("writing the deny list")?;
    Ok(f)
}

fn measure_size(args: &Args, size: usize, bare: RawFd) -> Result<SizeResult> {
    let entries = denylist::generate(size, &fixed_entries(), &test_ranges(), size as u64);
    eprintln!("bench xdp: {size} entries: filling the maps");
    let t = Instant::now();
    let ours = our_filter(&entries)?;
    let ours_fill = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let peer = xdp_filter::Object::load(entries.len())?;
    peer.fill(&entries)?;
    let peer_fill = t.elapsed().as_secs_f64();
    let cli = if entries.len() <= xdp_filter::CLI_CAPACITY {
        match xdp_filter::Cli::load(250).and_then(|c| c.fill(&entries).map(|()| c)) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("bench xdp: skipping xdp-filter through its command line: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let fds: [Option<RawFd>; 4] = [
        Some(bare),
        Some(ours.prog_fd()),
        Some(peer.fd()?),
        cli.as_ref().map(|c| c.fd()).transpose()?,
    ];
    let probes = probes();
    let mut samples = vec![[const { Vec::new() }; 4]; probes.len()];
    eprintln!("bench xdp: {size} entries: {} runs", args.runs);
    for _ in 0..args.runs {
        for (pi, probe) in probes.iter().enumerate() {
            for (gi, fd) in fds.iter().enumerate() {
                let Some(fd) = fd else { continue };
                let is_peer = gi >= 2;
                if is_peer && !probe.exact {
                    continue;
                }
                let expect = if gi == 0 { XDP_PASS } else { probe.verdict };
                let ns = bpf::ns_per_run(*fd, &probe.frame, args.repeat, expect)
                    .with_context(|| format!("{} on {}", PROGRAMS[gi], probe.name))?;
                samples[pi][gi].push(ns as f64);
            }
        }
    }
    Ok(SizeResult {
        size,
        fill_seconds: (ours_fill, peer_fill),
        ns: samples
            .iter()
            .map(|per| std::array::from_fn(|gi| Spread::of(&per[gi])))
            .collect(),
    })
}

fn ratio(a: Option<Spread>, b: Option<Spread>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.min > 0.0 => format!("{:.2}", a.min / b.min),
        _ => "–".into(),
    }
}

fn cell(v: Option<Spread>) -> String {
    v.map_or("–".into(), |v| v.show(0))
}

fn report(args: &Args, results: &[SizeResult]) -> String {
    let probes = probes();
    let mut md = String::from("# bench xdp: nanoseconds per packet\n\n");
    let _ = writeln!(
        md,
        "Kernel-measured mean ns per run from BPF_PROG_TEST_RUN, {} repetitions per run, \
         min–max over {} runs. Ratios use the minima. Lists are 90 % IPv4; 80 % exact \
         addresses, 20 % prefixes (/16–/30, /48–/64). xdp-filter matches exact addresses only: \
         each prefix is given to it as its network address, and prefix probes do not apply. \
         `xdp-filter (CLI)` is the program `xdp-filter load` attached, whose maps hold {} \
         entries; `xdp-filter` is the same object loaded with maps sized to the list.\n",
        args.repeat,
        args.runs,
        xdp_filter::CLI_CAPACITY
    );
    for r in results {
        let _ = writeln!(
            md,
            "## {} entries\n\nFilling the maps took {:.1} s for waf-agent, {:.1} s for \
             xdp-filter.\n",
            r.size, r.fill_seconds.0, r.fill_seconds.1
        );
        let rows: Vec<Vec<String>> = probes
            .iter()
            .zip(&r.ns)
            .map(|(p, ns)| {
                vec![
                    p.name.to_string(),
                    cell(ns[0]),
                    cell(ns[1]),
                    cell(ns[2]),
                    cell(ns[3]),
                    ratio(ns[1], ns[0]),
                    ratio(ns[1], ns[2]),
                ]
            })
            .collect();
        md.push_str(&table(
            &[
                "frame",
                PROGRAMS[0],
                PROGRAMS[1],
                PROGRAMS[2],
                PROGRAMS[3],
                "waf-agent / bare",
                "waf-agent / xdp-filter",
            ],
            &rows,
        ));
        md.push('\n');
    }
    if let Some(last) = results.iter().max_by_key(|r| r.size) {
        md.push_str("## Targets\n\n");
        for (pi, p) in probes.iter().enumerate() {
            if p.verdict != XDP_PASS {
                continue;
            }
            let [bare, ours, peer, _] = last.ns[pi];
            let (Some(bare), Some(ours), Some(peer)) = (bare, ours, peer) else {
                continue;
            };
            let _ =
                writeln!(
                md,
                "- {} at {} entries: waf-agent {:.0} ns vs xdp-filter {:.0} ns ({}), vs 2 × bare \
                 {:.0} ns ({}).",
                p.name,
                last.size,
                ours.min,
                peer.min,
                if ours.min <= peer.min { "met" } else { "not met" },
                2.0 * bare.min,
                if ours.min <= 2.0 * bare.min { "met" } else { "not met" },
            );
        }
    }
    md
}

fn charts(results: &[SizeResult]) -> Result<()> {
    let probes = probes();
    let categories: Vec<String> = results
        .iter()
        .map(|r| format!("{} entries", r.size))
        .collect();
    let panels = [0usize, 1, 2, 3]
        .iter()
        .map(|&pi| chart::Panel {
            title: probes[pi].name.to_string(),
            y_desc: "ns per packet".into(),
            categories: categories.clone(),
            series: (0..3)
                .map(|gi| chart::Series {
                    name: PROGRAMS[gi].to_string(),
                    values: results.iter().map(|r| r.ns[pi][gi]).collect(),
                })
                .collect(),
        })
        .collect::<Vec<_>>();
    chart::draw(&super::out_dir()?.join("xdp.png"), &panels)
}

pub fn run(args: &Args) -> Result<()> {
    let bare = bpf::load_bare_pass()?;
    let mut results = Vec::new();
    for &size in &args.sizes {
        results.push(measure_size(args, size, bare.as_raw_fd())?);
    }
    let md = report(args, &results);
    print!("{md}");
    let path = write_report("xdp.md", &md)?;
    charts(&results)?;
    eprintln!("bench xdp: wrote {} and xdp.png beside it", path.display());
    Ok(())
}
