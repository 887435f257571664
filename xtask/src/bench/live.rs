//! A flood generator inside the kernel: an XDP program that redirects every frame out of the
//! generator's veth, run by `BPF_PROG_TEST_RUN` in live-frames mode (Linux 5.18+). The frames
//! reach the receiving veth as XDP frames, the way a NIC's driver hands them over: an XDP
//! filter there sees them before any socket buffer exists, while nftables and the plain stack
//! get them only after one is built. This is how xdp-trafficgen works; Debian's xdp-tools
//! 1.3.1 build of it no longer loads on current kernels (it wants the `xdp_redirect_map_err`
//! tracepoint, which is gone).
//!
//! veth delivers redirected frames only to a peer that polls with NAPI: with an XDP program
//! attached, or with GRO switched on (see `enable_napi`).

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::flood::{Flood, Kind};

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Every test run in live-frames mode pays a fixed cost (about 24 ms on the 2-core VM, the
/// set-up and tear-down of its frame pool), so each run repeats its frame for about
/// `RUN_SECONDS`: the fixed cost is then a few per cent for every receiver alike, and the
/// rate reached is set by how fast the receiver takes frames, not by the system call. The
/// repeat count adapts from run to run within these bounds.
const RUN_SECONDS: f64 = 0.5;
const MIN_REPEAT: u32 = 1 << 16;
const MAX_REPEAT: u32 = 1 << 26;

/// `r1 = ifindex; r2 = 0; call bpf_redirect; exit`.
fn redirect_program(ifindex: u32) -> [u64; 4] {
    let imm = ifindex.to_le_bytes();
    [
        // BPF_ALU64 | BPF_MOV | BPF_K into r1.
        u64::from_le_bytes([0xb7, 0x01, 0, 0, imm[0], imm[1], imm[2], imm[3]]),
        // The same into r2, imm 0.
        u64::from_le_bytes([0xb7, 0x02, 0, 0, 0, 0, 0, 0]),
        // BPF_JMP | BPF_CALL, helper 23 (bpf_redirect).
        u64::from_le_bytes([0x85, 0, 0, 0, 23, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ]
}

/// The kernel's `bpf_attr.test` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct xdp_md` as a test run's input context.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Runs the redirect program `repeat` times on `frame`. Live mode reports no return value;
/// the receiver's counters show what arrived.
fn send(prog: &OwnedFd, ifindex: u32, frame: &[u8], repeat: u32) -> std::io::Result<()> {
    let mut ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..XdpMd::default()
    };
    let mut attr = TestAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: &mut ctx as *mut XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        ..TestAttr::default()
    };
    // SAFETY: attr points at buffers that outlive the call; the size passed is attr's own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestAttr,
            std::mem::size_of::<TestAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Enters network namespace `ns` on this thread only.
fn enter(ns: &str) -> Result<()> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a descriptor we hold; it changes this thread's namespace only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("entering {ns}"));
    }
    Ok(())
}

fn ifindex(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface {iface}");
    }
    Ok(index)
}

/// CPU seconds this thread has used.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// What one live flood did.
pub struct LiveFlood {
    pub flood: Flood,
    /// Frames handed to the interface; those veth could not queue for the receiver are
    /// among them (the receiver's counters tell what arrived).
    pub sent: u64,
    /// CPU seconds of the generator's thread, which include the receiver's XDP program and
    /// whatever of its receive path runs inside the system call.
    pub thread_cpu_s: f64,
}

/// Floods out of `iface` in namespace `ns` for about `secs` seconds (the last test run may
/// go on for up to `RUN_SECONDS` more; `Flood::elapsed` has the real time), one source of
/// `frames` per test run in turn, as fast as one CPU goes.
pub fn run(ns: &str, iface: &str, frames: &[Vec<u8>], secs: f64) -> Result<LiveFlood> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sender = s.spawn(|| -> Result<LiveFlood> {
            enter(ns)?;
            let index = ifindex(iface)?;
            let prog = super::bpf::load(&redirect_program(index), "bench_live")
                .context("loading the generator's redirect program")?;
            let cpu0 = thread_cpu_seconds();
            let start = Instant::now();
            let mut sent = 0u64;
            let mut repeat = MIN_REPEAT;
            for frame in frames.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                send(&prog, index, frame, repeat).context("live-frames test run")?;
                sent += u64::from(repeat);
                let took = t.elapsed().as_secs_f64().max(1e-6);
                repeat = (f64::from(repeat) * RUN_SECONDS / took)
                    .clamp(f64::from(MIN_REPEAT), f64::from(MAX_REPEAT))
                    as u32;
            }
            Ok(LiveFlood {
                flood: Flood {
                    elapsed: start.elapsed(),
                    restarts: 0,
                },
                sent,
                thread_cpu_s: thread_cpu_seconds() - cpu0,
            })
        });
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?
    })
}

/// Switches GRO on, which makes veth poll with NAPI and so accept redirected frames without
/// an XDP program of its own (the nftables and no-filter receivers).
pub fn enable_napi(ns: &str, iface: &str) -> Result<()> {
    super::receivers::run_in(ns, &["ethtool", "-K", iface, "gro", "on"])
}

fn checksum(words: &[u8]) -> u16 {
    let mut sum: u32 = words
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One flood frame of `kind` from `src` to `dst` (IPv4; `Kind::Spoofed` is not generated
/// here).
pub fn frame(kind: Kind, dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let (proto, l4): (u8, Vec<u8>) = match kind {
        Kind::Syn => {
            let mut tcp = vec![0u8; 20];
            tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
            tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
            tcp[12] = 0x50;
            tcp[13] = 0x02;
            tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
            let mut pseudo = Vec::with_capacity(32);
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, 6, 0, 20]);
            pseudo.extend_from_slice(&tcp);
            let sum = checksum(&pseudo);
            tcp[16..18].copy_from_slice(&sum.to_be_bytes());
            (6, tcp)
        }
        Kind::Udp | Kind::Spoofed => {
            let mut udp = vec![0u8; 26];
            udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
            udp[2..4].copy_from_slice(&9u16.to_be_bytes());
            udp[4..6].copy_from_slice(&26u16.to_be_bytes());
            (17, udp)
        }
    };
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&(20 + l4.len() as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}
