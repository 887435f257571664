//! What sits on the receiving interface during a flood: our program, xdp-filter, an
//! nftables set at the netdev ingress hook, or nothing. Each is loaded with its list once and
//! put on and taken off the interface around each flood, so that runs of different receivers
//! alternate and share the machine's background noise; each counts what it dropped.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};
use aya::{
    maps::{Map, MapData, PerCpuArray},
    programs::Xdp,
};
use ipnet::IpNet;
use waf_common::Counter;
use waf_tests::fixture::Filter;

use super::xdp_filter::{self, PinDir};
use crate::cmd;

fn in_ns(ns: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/var/run/netns/{ns}"));
    c
}

/// An XDP program attached in driver mode from its pin; detached when dropped.
pub struct Attached {
    ns: String,
    iface: String,
}

impl Attached {
    pub fn new(ns: &str, iface: &str, pin: &Path) -> Result<Attached> {
        cmd::capture(
            in_ns(ns)
                .args(["ip", "link", "set", "dev", iface, "xdpdrv", "pinned"])
                .arg(pin),
        )?;
        Ok(Attached {
            ns: ns.to_owned(),
            iface: iface.to_owned(),
        })
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = in_ns(&self.ns)
            .args(["ip", "link", "set", "dev", &self.iface, "xdpdrv", "off"])
            .output();
    }
}

/// Our program with its deny list, pinned for `Attached`.
pub struct Ours {
    pin: PinDir,
    pub filter: Filter,
}

impl Ours {
    pub fn load(filter: Filter) -> Result<Ours> {
        let mut filter = filter;
        let pin = PinDir::create("bench-waf-prog-")?;
        let prog: &mut Xdp = filter
            .loaded
            .ebpf
            .program_mut(waf_common::PROGRAM_NAME)
            .context("our program is missing")?
            .try_into()
            .context("our program is not XDP")?;
        prog.pin(pin.0.join("prog"))
            .context("pinning our program")?;
        Ok(Ours { pin, filter })
    }

    pub fn pin(&self) -> PathBuf {
        self.pin.0.join("prog")
    }

    pub fn counter(&self, c: Counter) -> Result<u64> {
        Ok(self.filter.maps.counters().context("reading counters")?[c as usize])
    }
}

/// xdp-filter's program with the same list, pinned for `Attached`.
pub struct XdpFilter {
    object: xdp_filter::Object,
    pin: PathBuf,
}

impl XdpFilter {
    pub fn load(entries: &[IpNet]) -> Result<XdpFilter> {
        let mut object = xdp_filter::Object::load(entries.len())?;
        object.fill(entries)?;
        let pin = object.pin_program()?;
        Ok(XdpFilter { object, pin })
    }

    pub fn pin(&self) -> &Path {
        &self.pin
    }

    /// Packets it returned XDP_DROP for, from its own `xdp_stats_map` (per-CPU records of
    /// packets and bytes, indexed by XDP action).
    pub fn dropped(&self) -> Result<u64> {
        let data = MapData::from_pin(self.object.pin_dir().join("xdp_stats_map"))
            .context("opening xdp_stats_map")?;
        let stats: PerCpuArray<MapData, [u64; 2]> = PerCpuArray::try_from(Map::PerCpuArray(data))?;
        let per_cpu = stats.get(&1, 0).context("reading xdp_stats_map")?;
        Ok(per_cpu.iter().map(|r| r[0]).sum())
    }
}

const NFT_TABLE: &str = "waf_bench";
const NFT_SETS: [&str; 4] = ["deny4", "deny4net", "deny6", "deny6net"];

/// An nftables table with the list in four sets: exact addresses in hash sets, prefixes in
/// interval sets, per family.
pub struct Nft {
    ns: String,
}

impl Nft {
    pub fn load(entries: &[IpNet], ns: &str) -> Result<Nft> {
        // deny4, deny4net, deny6, deny6net
        let mut sets: [String; 4] = Default::default();
        for net in entries {
            let i = match net {
                IpNet::V4(n) if n.prefix_len() == 32 => 0,
                IpNet::V4(_) => 1,
                IpNet::V6(n) if n.prefix_len() == 128 => 2,
                IpNet::V6(_) => 3,
            };
            let text = if i % 2 == 0 {
                net.addr().to_string()
            } else {
                net.to_string()
            };
            if !sets[i].is_empty() {
                sets[i].push_str(",\n");
            }
            sets[i].push_str(&text);
        }
        let mut ruleset = format!("table netdev {NFT_TABLE} {{\n");
        for (i, elements) in sets.iter().enumerate() {
            let ty = if i < 2 { "ipv4_addr" } else { "ipv6_addr" };
            let flags = if i % 2 == 1 {
                " flags interval; auto-merge;"
            } else {
                ""
            };
            let _ = write!(ruleset, "  set {} {{ type {ty};{flags}", NFT_SETS[i]);
            if !elements.is_empty() {
                let _ = write!(ruleset, " elements = {{ {elements} }}");
            }
            ruleset.push_str(" }\n");
        }
        // A named counter: reading it does not make nft fetch the sets' million elements.
        ruleset.push_str("  counter dropped { }\n}\n");
        let nft = Nft { ns: ns.to_owned() };
        nft.apply(&ruleset)?;
        Ok(nft)
    }

    fn apply(&self, ruleset: &str) -> Result<()> {
        let file = std::env::temp_dir().join(waf_tests::unique("bench-nft-"));
        std::fs::write(&file, ruleset).with_context(|| format!("writing {}", file.display()))?;
        let result = cmd::capture(in_ns(&self.ns).args(["nft", "-f"]).arg(&file));
        let _ = std::fs::remove_file(&file);
        result.map(|_| ())
    }

    /// Hooks the sets into the ingress of `iface`, the earliest point nftables sees a packet,
    /// until the returned guard is dropped.
    pub fn hook(&self, iface: &str) -> Result<NftHook<'_>> {
        let mut rules = format!(
            "table netdev {NFT_TABLE} {{\n  chain ingress {{\n    type filter hook ingress \
             device \"{iface}\" priority -500; policy accept;\n"
        );
        for (i, set) in NFT_SETS.iter().enumerate() {
            let family = if i < 2 { "ip" } else { "ip6" };
            let _ = writeln!(rules, "    {family} saddr @{set} counter name dropped drop");
        }
        rules.push_str("  }\n}\n");
        self.apply(&rules)?;
        Ok(NftHook(self))
    }

    /// Packets the drop rules counted.
    pub fn dropped(&self) -> Result<u64> {
        let out = cmd::capture(in_ns(&self.ns).args([
            "nft", "-j", "list", "counter", "netdev", NFT_TABLE, "dropped",
        ]))?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("nft's JSON")?;
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|item| item["counter"]["packets"].as_u64())
            .with_context(|| format!("no counter in nft's answer: {v}"))
    }
}

/// The ingress chain of `Nft::hook`; removed when dropped, the sets stay.
pub struct NftHook<'a>(&'a Nft);

impl Drop for NftHook<'_> {
    fn drop(&mut self) {
        let _ = in_ns(&self.0.ns)
            .args(["nft", "delete", "chain", "netdev", NFT_TABLE, "ingress"])
            .output();
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        let _ = in_ns(&self.ns)
            .args(["nft", "delete", "table", "netdev", NFT_TABLE])
            .output();
    }
}

/// A bare `XDP_DROP` program, pinned for `Attached`: what dropping costs with no filtering
/// at all, so that the generator's and veth's share of every other receiver's figure shows.
pub struct BareDrop {
    pin: PinDir,
    _prog: std::os::fd::OwnedFd,
}

impl BareDrop {
    pub fn load() -> Result<BareDrop> {
        use std::os::fd::AsRawFd as _;
        let prog = super::bpf::load_bare_drop()?;
        let pin = PinDir::create("bench-bare-drop-")?;
        super::bpf::pin(prog.as_raw_fd(), &pin.0.join("prog"))?;
        Ok(BareDrop { pin, _prog: prog })
    }

    pub fn pin(&self) -> PathBuf {
        self.pin.0.join("prog")
    }

    /// Frames veth's XDP path dropped on `iface` (its `*_xdp_drops` statistics).
    pub fn dropped(ns: &str, iface: &str) -> Result<u64> {
        let out = cmd::capture(in_ns(ns).args(["ethtool", "-S", iface]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let counts: Vec<u64> = text
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .filter(|(k, _)| k.ends_with("_xdp_drops"))
            .filter_map(|(_, v)| v.trim().parse().ok())
            .collect();
        if counts.is_empty() {
            anyhow::bail!("ethtool -S {iface} shows no xdp_drops counter");
        }
        Ok(counts.iter().sum())
    }
}

/// A counter of `ip -s link` for `iface` in `ns`: `dir` is "rx" or "tx".
pub fn link_packets(ns: &str, iface: &str, dir: &str) -> Result<u64> {
    let out = cmd::capture(in_ns(ns).args(["ip", "-s", "-j", "link", "show", "dev", iface]))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip's JSON")?;
    v.pointer(&format!("/0/stats64/{dir}/packets"))
        .and_then(|p| p.as_u64())
        .with_context(|| format!("no {dir} packet count for {iface}"))
}

/// The MAC address of `iface` in `ns`.
pub fn mac(ns: &str, iface: &str) -> Result<[u8; 6]> {
    let out = cmd::capture(in_ns(ns).args(["ip", "-j", "link", "show", "dev", iface]))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip's JSON")?;
    let text = v[0]["address"].as_str().context("no MAC address")?;
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16).with_context(|| format!("MAC {text}"))?;
    }
    Ok(mac)
}

/// Runs a command inside `ns`, failing like `cmd::run`.
pub fn run_in(ns: &str, args: &[&str]) -> Result<()> {
    cmd::capture(in_ns(ns).args(args)).map(|_| ())
}
