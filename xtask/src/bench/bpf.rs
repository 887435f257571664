//! The few bpf(2) commands the benchmarks need beyond aya: a bare XDP_PASS program as the
//! floor to compare against, the live-frames generator's redirect program, another tool's
//! program by id, and a test run with min/max.

use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};

use anyhow::{bail, Context as _, Result};
use waf_tests::test_run;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// The head of the kernel's `bpf_attr` for `BPF_PROG_LOAD` (include/uapi/linux/bpf.h); the
/// zeroed tail stands for the fields we leave at their defaults.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    tail: [u8; 64],
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<RawFd> {
    // SAFETY: `attr` is a live, fully initialised `bpf_attr` prefix of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc as RawFd)
}

/// Loads `r0 = XDP_PASS; exit`: the cost of running any XDP program at all.
pub fn load_bare_pass() -> Result<OwnedFd> {
    // BPF_ALU64 | BPF_MOV | BPF_K into r0 with imm 2, then BPF_JMP | BPF_EXIT.
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 2, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    load(&insns, "bare_pass")
}

/// Loads the XDP program `insns` under `name` (at most 15 bytes).
/// `r0 = XDP_DROP; exit`: the cheapest possible drop, the floor under every XDP filter.
pub fn load_bare_drop() -> Result<OwnedFd> {
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 1, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    load(&insns, "bare_drop")
}

#[repr(C)]
struct PinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Pins the object behind `fd` at `path` in bpffs.
pub fn pin(fd: RawFd, path: &std::path::Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut attr = PinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
    };
    sys_bpf(BPF_OBJ_PIN, &mut attr).with_context(|| format!("pinning at {}", path.display()))?;
    Ok(())
}

pub fn load(insns: &[u64], name: &str) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        tail: [0; 64],
    };
    let fd =
        sys_bpf(BPF_PROG_LOAD, &mut attr).with_context(|| format!("BPF_PROG_LOAD of {name}"))?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
struct GetFdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// A descriptor for the loaded program with kernel id `id`.
pub fn prog_fd_by_id(id: u32) -> Result<OwnedFd> {
    let mut attr = GetFdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    let fd = sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)
        .with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}"))?;
    // SAFETY: as in `load`.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs `fd` on `frame` with `repeat` repetitions; returns the kernel's mean ns per run after
/// checking that the program returned `expect` (a benchmark of the wrong verdict is void).
pub fn ns_per_run(fd: RawFd, frame: &[u8], repeat: u32, expect: u32) -> Result<u32> {
    let out = test_run::run(fd, frame, repeat).context("BPF_PROG_TEST_RUN")?;
    if out.action != expect {
        bail!(
            "program returned XDP action {} where {} was expected",
            out.action,
            expect
        );
    }
    Ok(out.ns_per_run)
}
