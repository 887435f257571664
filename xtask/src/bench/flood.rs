//! The flood generator (trafgen from netsniff-ng, in the generator's namespace) and the
//! receiver's CPU time from /proc/stat.

use std::{
    io::Write as _,
    os::unix::process::CommandExt as _,
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
/// (the rest is random),
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
            ip4(17, 46, "drnd(2)")
        ),
        Kind::Syn => format!(
            "{{ {} {} drnd(2), c16(80), drnd(4), c32(0), 0x50, 0x02, c16(64240), \
             csumtcp(14, 34), c16(0) }}\n",
            eth("c16(0x0800)"),
            ip4(6, 40, "drnd(2)")
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

/// How one flood went.
pub struct Flood {
    pub elapsed: Duration,
    /// Times it gave up on a full queue and was started again.
    pub restarts: u32,
}

/// Runs trafgen in namespace `ns` out of `iface` for `secs` seconds on one CPU, at `pps`
/// packets per second if given, else as fast as it can.
///
/// NB: when the receiver falls behind, veth stops its queue (kernel 6.x) and trafgen gives up
/// with "Flushing TX_RING failed: Resource temporarily unavailable". It is started again at
/// once until the time is up; the link counters tell what was actually sent.
pub fn run(ns: &str, iface: &str, config: &str, secs: f64, pps: Option<u64>) -> Result<Flood> {
    let file = TempFile(std::env::temp_dir().join(waf_tests::unique("bench-trafgen-")));
    std::fs::File::create(&file.0)
        .and_then(|mut f| f.write_all(config.as_bytes()))
        .with_context(|| format!("writing {}", file.0.display()))?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{ns}"))
        .args(["trafgen", "--dev", iface, "--conf"])
        .arg(&file.0)
        .args(["--cpus", "1", "--no-cpu-stats"])
        .args(pps.map(|r| format!("--rate={r}pps")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // trafgen forks its senders; a group of their own lets one signal reach them all.
        .process_group(0);
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let mut restarts = 0;
    while start.elapsed() < limit {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", crate::cmd::line(&cmd)))?;
        let mut gen = Generator(child);
        while start.elapsed() < limit && gen.0.try_wait().context("polling trafgen")?.is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let time_up = gen.0.try_wait().context("polling trafgen")?.is_none();
        if time_up {
            gen.stop()?;
            break;
        }
        let mut stderr = String::new();
        if let Some(mut e) = gen.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        if !stderr.contains("Resource temporarily unavailable") {
            anyhow::bail!(
                "`{}` stopped after {:.1} s: {}",
                crate::cmd::line(&cmd),
                start.elapsed().as_secs_f64(),
                stderr.trim()
            );
        }
        restarts += 1;
    }
    Ok(Flood {
        elapsed: start.elapsed(),
        restarts,
    })
}

/// A running trafgen, leader of its own process group; the whole group is killed when this
/// is dropped, whatever happened in between.
struct Generator(std::process::Child);

impl Generator {
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the process group of a child we spawned and have not reaped.
        unsafe { libc::kill(-(self.0.id() as libc::pid_t), sig) };
    }

    /// Interrupts trafgen and waits up to five seconds for it; `Drop` kills what is left.
    fn stop(&mut self) -> Result<()> {
        self.signal(libc::SIGINT);
        let stop = Instant::now();
        while self.0.try_wait().context("polling trafgen")?.is_none() {
            if stop.elapsed() > Duration::from_secs(5) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.signal(libc::SIGKILL);
            let _ = self.0.wait();
        }
    }
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

/// CPU seconds the kernel's `ksoftirqd` threads have used: softirq work deferred out of the
/// context that raised it.
pub fn ksoftirqd_seconds() -> Result<f64> {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: utime and stime are fields 14 and 15.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        if !head.contains("(ksoftirqd/") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        ticks += field(14).unwrap_or(0) + field(15).unwrap_or(0);
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}
