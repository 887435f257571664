//! xdp-filter (xdp-tools) as a peer. It matches exact source addresses in per-CPU hashes
//! (`filter_ipv4`, `filter_ipv6`; value: flag bits, `MAP_FLAG_SRC` = 1, with a hit counter
//! from bit 6 up), in its "allow" policy: listed addresses are dropped, the rest pass.
//!
//! Its command line creates those maps with 10 000 entries each, so for larger lists the
//! same compiled program (`xdpfilt_alw_ip.o`, the one `xdp-filter load --features ipv4,ipv6
//! --policy allow` picks) is loaded here with its maps sized to fit. `Cli` drives the real
//! command for lists that fit, so that the two can be compared.

use std::{
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{MapData, PerCpuHashMap, PerCpuValues},
    programs::Xdp,
    Ebpf, EbpfLoader,
};
use ipnet::IpNet;

use super::{bpf, denylist};
use crate::cmd;

pub const OBJECT: &str = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_ip.o";
const PROGRAM: &str = "xdpfilt_alw_ip";
const MAP_FLAG_SRC: u64 = 1;
/// Where `xdp-filter` pins its maps; one directory for the whole machine.
const CLI_PIN_DIR: &str = "/sys/fs/bpf/xdp-filter";
/// Entries per map that `xdp-filter load` creates.
pub const CLI_CAPACITY: usize = 10_000;

/// xdp-filter's program loaded from its object, maps pinned in a directory of ours.
pub struct Object {
    ebpf: Ebpf,
    pin_dir: PinDir,
}

/// A pin directory of ours, removed with everything in it when dropped.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn create(prefix: &str) -> Result<PinDir> {
        let path = PathBuf::from("/sys/fs/bpf").join(waf_tests::unique(prefix));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(PinDir(path))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Object {
    /// Loads the program with room for `capacity` addresses per family.
    pub fn load(capacity: usize) -> Result<Object> {
        let bytes = std::fs::read(OBJECT)
            .with_context(|| format!("reading {OBJECT} (is xdp-tools installed?)"))?;
        let pin_dir = PinDir::create("bench-xdpfilt-")?;
        let cap = capacity.max(1) as u32;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir.0)
            .map_max_entries("filter_ipv4", cap)
            .map_max_entries("filter_ipv6", cap)
            .load(&bytes)
            .context("loading xdp-filter's object")?;
        let mut object = Object { ebpf, pin_dir };
        let prog: &mut Xdp = object
            .ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("no program {PROGRAM} in {OBJECT}"))?
            .try_into()
            .context("xdp-filter's program is not XDP")?;
        prog.load().context("verifying xdp-filter's program")?;
        Ok(object)
    }

    pub fn fd(&self) -> Result<RawFd> {
        let prog: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .context("program missing")?
            .try_into()
            .context("not XDP")?;
        Ok(prog.fd()?.as_fd().as_raw_fd())
    }

    /// Pins the program so that `ip link set ... xdp pinned` can attach it.
    pub fn pin_program(&mut self) -> Result<PathBuf> {
        let path = self.pin_dir.0.join("prog");
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .context("program missing")?
            .try_into()
            .context("not XDP")?;
        prog.pin(&path).context("pinning xdp-filter's program")?;
        Ok(path)
    }

    pub fn fill(&self, entries: &[IpNet]) -> Result<()> {
        fill(&self.pin_dir.0, entries)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir.0
    }
}

/// Writes the exact-match key of every entry with the source flag on every CPU.
pub fn fill(pin_dir: &Path, entries: &[IpNet]) -> Result<()> {
    let open = |name: &str| {
        MapData::from_pin(pin_dir.join(name)).with_context(|| format!("opening {name}"))
    };
    let mut v4: PerCpuHashMap<MapData, u32, u64> =
        PerCpuHashMap::try_from(aya::maps::Map::PerCpuHashMap(open("filter_ipv4")?))?;
    let mut v6: PerCpuHashMap<MapData, [u8; 16], u64> =
        PerCpuHashMap::try_from(aya::maps::Map::PerCpuHashMap(open("filter_ipv6")?))?;
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let values = || PerCpuValues::try_from(vec![MAP_FLAG_SRC; cpus]);
    for net in entries {
        match denylist::exact_key(net) {
            IpNet::V4(n) => v4.insert(u32::from_ne_bytes(n.addr().octets()), values()?, 0)?,
            IpNet::V6(n) => v6.insert(n.addr().octets(), values()?, 0)?,
        }
    }
    Ok(())
}

/// xdp-filter attached by its own command line to an interface in a namespace of ours.
pub struct Cli {
    lab: waf_tests::lab::Lab,
    prog: Option<OwnedFd>,
}

impl Cli {
    /// Runs `xdp-filter load` and finds the program it attached. Refuses to run while
    /// someone else's xdp-filter is loaded, since its pins are machine-wide.
    pub fn load(net: u8) -> Result<Cli> {
        if Path::new(CLI_PIN_DIR).exists() {
            bail!("{CLI_PIN_DIR} exists: another xdp-filter is loaded on this machine");
        }
        let lab = waf_tests::lab::Lab::new(net, &[]);
        let mut cli = Cli { lab, prog: None };
        cmd::capture(cli.in_host().args([
            "xdp-filter",
            "load",
            "--mode",
            "native",
            "--policy",
            "allow",
            "--features",
            "ipv4,ipv6",
            &cli.lab.host_if,
        ]))?;
        let id = attached_prog_id(&cli.lab.host, &cli.lab.host_if)?;
        cli.prog = Some(bpf::prog_fd_by_id(id)?);
        Ok(cli)
    }

    fn in_host(&self) -> std::process::Command {
        let mut c = std::process::Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", self.lab.host));
        c
    }

    pub fn fd(&self) -> Result<RawFd> {
        Ok(self.prog.as_ref().context("no program")?.as_raw_fd())
    }

    pub fn fill(&self, entries: &[IpNet]) -> Result<()> {
        fill(Path::new(CLI_PIN_DIR), entries)
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self
            .in_host()
            .args(["xdp-filter", "unload", &self.lab.host_if])
            .output();
    }
}

/// The id of the XDP program on `iface` in namespace `ns`, from `bpftool net show`.
pub fn attached_prog_id(ns: &str, iface: &str) -> Result<u32> {
    let out = cmd::capture(
        std::process::Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .args(["bpftool", "--json", "net", "show", "dev", iface]),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    v.pointer("/0/xdp/0/id")
        .and_then(|id| id.as_u64())
        .map(|id| id as u32)
        .with_context(|| format!("no XDP program on {iface} in {ns}: {v}"))
}
