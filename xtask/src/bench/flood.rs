//! The flood generator (trafgen from netsniff-ng, in the generator's namespace) and the
//! receiver's CPU time from /proc/stat.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// One kind of flood: a trafgen packet configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 60-byte IPv4 UDP packets.
    Udp,
    /// 54-byte IPv4 TCP SYNs to port 80.
    Syn,
    /// IPv4 UDP from a random /16 source and IPv6 UDP from a random source in a /48, in turn.
    Spoofed,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Udp => "UDP",
            Kind::Syn => "TCP SYN",
            Kind::Spoofed => "spoofed UDP",
        }
    }
}

fn bytes(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:#04x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The trafgen configuration for `kind`. `src16` is the first two bytes of the IPv4 source
/// (the rest is random; for `Udp` and `Syn` the last byte is even, see `load::flood_denied`),
/// `dst` the receiver's IPv4 address, `dst6` its IPv6 address.
pub fn config(
    kind: Kind,
    dst_mac: [u8; 6],
    src16: [u8; 2],
    dst: [u8; 4],
    dst6: [u8; 16],
) -> String {
    let eth = |ethertype: &str| {
        format!(
            "{}, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, {ethertype},",
            bytes(&dst_mac)
        )
    };
    let ip4 = |proto: u8, total: u16, src_tail: &str| {
        format!(
            "0x45, 0x00, c16({total}), drnd(2), c16(0), 64, {proto}, csumip(14, 33), \
             {}, {src_tail}, {},",
            bytes(&src16),
            bytes(&dst)
        )
    };
    match kind {
        Kind::Udp => format!(
            "{{ {} {} c16(40000), c16(9), c16(26), c16(0), fill(0x00, 18) }}\n",
            eth("c16(0x0800)"),
            ip4(17, 46, "drnd(1), dinc(0, 254, 2)")
        ),
        Kind::Syn => format!(
            "{{ {} {} drnd(2), c16(80), drnd(4), c32(0), 0x50, 0x02, c16(64240), \
             csumtcp(14, 34), c16(0) }}\n",
            eth("c16(0x0800)"),
            ip4(6, 40, "drnd(1), dinc(0, 254, 2)")
        ),
        Kind::Spoofed => format!(
            "{{ {} {} c16(40000), c16(9), c16(26), c16(0), fill(0x00, 18) }}\n\
             {{ {} 0x60, 0x00, 0x00, 0x00, c16(26), 17, 64, \
             0x20, 0x01, 0x00, 0x02, 0x00, 0x00, drnd(10), {}, \
             c16(40000), c16(9), c16(26), c16(0), fill(0x00, 18) }}\n",
            eth("c16(0x0800)"),
            ip4(17, 46, "drnd(2)"),
            eth("c16(0x86dd)"),
            bytes(&dst6)
        ),
    }
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs trafgen in namespace `ns` out of `iface` for `secs` seconds on one CPU.
pub fn run(ns: &str, iface: &str, config: &str, secs: f64) -> Result<Duration> {
    let file = TempFile(std::env::temp_dir().join(waf_tests::unique("bench-trafgen-")));
    std::fs::File::create(&file.0)
        .and_then(|mut f| f.write_all(config.as_bytes()))
        .with_context(|| format!("writing {}", file.0.display()))?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{ns}"))
        .args(["trafgen", "--dev", iface, "--conf"])
        .arg(&file.0)
        .args(["--cpus", "1", "--no-cpu-stats"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", crate::cmd::line(&cmd)))?;
    let limit = Duration::from_secs_f64(secs);
    while start.elapsed() < limit {
        if child.try_wait().context("polling trafgen")?.is_some() {
            let out = child.wait_with_output().context("waiting for trafgen")?;
            anyhow::bail!(
                "`{}` stopped after {:.1} s ({}): {}",
                crate::cmd::line(&cmd),
                start.elapsed().as_secs_f64(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: plain kill(2) on the child we spawned, which has not been reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let elapsed = start.elapsed();
    // Its exit status says nothing about the flood: when interrupted with frames still in
    // its ring, it reports the failed final flush. The link counters tell what was sent.
    child.wait().context("waiting for trafgen")?;
    Ok(elapsed)
}

/// Softirq time summed over all CPUs, in seconds, from the `cpu` line of /proc/stat.
pub fn softirq_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let ticks: u64 = line
        .split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .context("no softirq column in /proc/stat")?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}
