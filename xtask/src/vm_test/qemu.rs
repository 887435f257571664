//! Booting one guest in QEMU and watching its serial console for the verdict line, a kernel
//! panic, silence or the wall-clock limit.

use std::{
    fmt,
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    os::fd::AsRawFd as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::init::VERDICT;

/// Kernel command line. `panic=-1` reboots on a panic and `-no-reboot` turns that reboot
/// into QEMU's exit; `oops=panic` and `softlockup_panic=1` make a broken kernel say so
/// instead of leaving a half-dead guest to the idle limit. NB: `no_timer_check` skips the
/// IO-APIC timer check, which software emulation on a busy host can fail ("IO-APIC + timer
/// doesn't work!") with a panic before /init runs.
const CMDLINE: &str = "console=ttyS0 rdinit=/init panic=-1 oops=panic softlockup_panic=1 \
                       no_timer_check loglevel=4 mitigations=off";
/// Console lines after which the run means nothing: the kernel died, or the guest lacks part
/// of its image (too little memory for the initramfs).
const FATAL: &[&str] = &["Kernel panic", "Initramfs unpacking failed"];
/// How long a guest that printed its verdict gets to power off before it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);
/// How long to keep reading after a panic line, so that the console log holds the trace.
const PANIC_TRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG (software emulation)",
        })
    }
}

/// Chooses KVM when it can run guests here, software emulation otherwise, and says why.
pub fn resolve(accel: Accel) -> Result<Accel> {
    if !matches!(accel, Accel::Auto) {
        return Ok(accel);
    }
    match kvm_unusable() {
        None => Ok(Accel::Kvm),
        Some(reason) => {
            eprintln!("vm-test: KVM unusable ({reason}); using software emulation");
            Ok(Accel::Tcg)
        }
    }
}

/// Why KVM cannot run the guest, if it cannot. NB: inside a VM without nested
/// virtualisation /dev/kvm can exist and even create a VM and a vCPU, yet a Linux guest
/// stalls right after the BIOS; the CPU flags tell that case apart.
fn kvm_unusable() -> Option<&'static str> {
    const KVM_GET_API_VERSION: libc::c_ulong = 0xae00;
    const KVM_CREATE_VM: libc::c_ulong = 0xae01;
    const KVM_CREATE_VCPU: libc::c_ulong = 0xae41;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hardware {
        return Some("the CPU flags show neither vmx nor svm");
    }
    let Ok(kvm) = File::options().read(true).write(true).open("/dev/kvm") else {
        return Some("/dev/kvm does not open read-write");
    };
    // SAFETY: these KVM ioctls take an integer argument and touch no user memory; every
    // descriptor they return is closed here.
    unsafe {
        if libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) != 12 {
            return Some("/dev/kvm speaks an unknown API version");
        }
        let vm = libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0);
        if vm < 0 {
            return Some("KVM cannot create a VM");
        }
        let vcpu = libc::ioctl(vm, KVM_CREATE_VCPU, 0);
        if vcpu >= 0 {
            libc::close(vcpu);
        }
        libc::close(vm);
        (vcpu < 0).then_some("KVM cannot create a vCPU")
    }
}

pub struct Guest<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub console_log: &'a Path,
}

#[derive(Clone, Copy)]
pub struct Limits {
    pub wall: Duration,
    pub idle: Duration,
}

pub enum Outcome {
    Pass { line: String, elapsed: Duration },
    Fail { line: String, elapsed: Duration },
    Fatal { line: String, elapsed: Duration },
    WallClock(Duration),
    Silent { idle: Duration, elapsed: Duration },
    Exited { status: String, elapsed: Duration },
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Pass { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass { line, elapsed } | Outcome::Fail { line, elapsed } => {
                write!(f, "{line} after {:.0?} of wall time", elapsed)
            }
            Outcome::Fatal { line, elapsed } => {
                write!(f, "guest failed after {elapsed:.0?}: {line}")
            }
            Outcome::WallClock(limit) => write!(f, "no verdict within the limit of {limit:?}"),
            Outcome::Silent { idle, elapsed } => {
                write!(
                    f,
                    "guest hung: no console output for {idle:?} (after {elapsed:.0?})"
                )
            }
            Outcome::Exited { status, elapsed } => {
                write!(
                    f,
                    "QEMU exited with {status} after {elapsed:.0?} without a verdict"
                )
            }
        }
    }
}

enum Event {
    Line(String),
    Eof,
}

pub fn run(guest: &Guest<'_>, limits: Limits) -> Result<Outcome> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-nodefaults",
        "-nographic",
        "-serial",
        "stdio",
        "-no-reboot",
    ])
    .args([
        "-m",
        &guest.memory_mib.to_string(),
        "-smp",
        &guest.cpus.to_string(),
    ])
    .arg("-kernel")
    .arg(guest.kernel)
    .arg("-initrd")
    .arg(guest.initramfs)
    .args(["-append", CMDLINE]);
    match guest.accel {
        Accel::Kvm => qemu.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg | Accel::Auto => qemu.args(["-accel", "tcg", "-cpu", "max"]),
    };
    let shown = format!("{qemu:?}");
    eprintln!("+ {shown}");
    let started = Instant::now();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("failed to start `{shown}` (apt-get install qemu-system-x86)"))?;
    let stdout = child.stdout.take().context("QEMU's stdout is not piped")?;
    let mut log = File::create(guest.console_log)
        .with_context(|| format!("cannot create {}", guest.console_log.display()))?;

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Event::Eof);
                    return;
                }
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\r', '\n']).to_owned();
                    if tx.send(Event::Line(line)).is_err() {
                        return;
                    }
                }
            }
        }
    });

    let outcome = watch(&rx, &mut log, started, limits)?;
    finish(&mut child, &rx, &mut log, &outcome)?;
    Ok(match outcome {
        Some(outcome) => outcome,
        None => {
            let status = child.wait().context("cannot wait for QEMU")?;
            Outcome::Exited {
                status: status.to_string(),
                elapsed: started.elapsed(),
            }
        }
    })
}

/// Echoes and logs console lines until a verdict, a panic, a limit, or QEMU's exit (`None`).
fn watch(
    rx: &mpsc::Receiver<Event>,
    log: &mut File,
    started: Instant,
    limits: Limits,
) -> Result<Option<Outcome>> {
    let mut last_output = Instant::now();
    loop {
        let elapsed = started.elapsed();
        let Some(wall_left) = limits.wall.checked_sub(elapsed) else {
            return Ok(Some(Outcome::WallClock(limits.wall)));
        };
        let idle_left = limits.idle.saturating_sub(last_output.elapsed());
        if idle_left.is_zero() {
            return Ok(Some(Outcome::Silent {
                idle: limits.idle,
                elapsed,
            }));
        }
        let line = match rx.recv_timeout(wall_left.min(idle_left)) {
            Ok(Event::Line(line)) => line,
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
        };
        last_output = Instant::now();
        echo(log, &line)?;
        let elapsed = started.elapsed();
        if let Some(at) = line.find(VERDICT) {
            let verdict = line[at..].to_owned();
            let rest = verdict[VERDICT.len()..].trim_start();
            if rest.starts_with("PASS") {
                return Ok(Some(Outcome::Pass {
                    line: verdict,
                    elapsed,
                }));
            }
            if rest.starts_with("FAIL") {
                return Ok(Some(Outcome::Fail {
                    line: verdict,
                    elapsed,
                }));
            }
        }
        if let Some(at) = FATAL.iter().find_map(|f| line.find(f)) {
            let line = line[at..].to_owned();
            return Ok(Some(Outcome::Fatal { line, elapsed }));
        }
    }
}

/// Lets a guest that reached a verdict power off, keeps a panic's trace in the log, and
/// kills whatever is still running.
fn finish(
    child: &mut Child,
    rx: &mpsc::Receiver<Event>,
    log: &mut File,
    outcome: &Option<Outcome>,
) -> Result<()> {
    let grace = match outcome {
        None => return Ok(()),
        Some(Outcome::Pass { .. } | Outcome::Fail { .. }) => POWEROFF_GRACE,
        Some(Outcome::Fatal { .. }) => PANIC_TRACE,
        Some(_) => Duration::ZERO,
    };
    let until = Instant::now() + grace;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(Event::Line(line)) => echo(log, &line)?,
            Ok(Event::Eof) | Err(_) => break,
        }
    }
    if child.try_wait().context("cannot poll QEMU")?.is_none() {
        let _ = child.kill();
    }
    child.wait().context("cannot wait for QEMU")?;
    Ok(())
}

fn echo(log: &mut File, line: &str) -> Result<()> {
    println!("{line}");
    writeln!(log, "{line}").context("cannot write the console log")
}
