//! `BPF_PROG_TEST_RUN` for XDP: runs the program on a crafted frame without any interface.

use std::os::fd::RawFd;

const BPF_PROG_TEST_RUN: libc::c_long = 10;

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

/// What one test run returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The XDP action of the last repetition.
    pub action: u32,
    /// Mean nanoseconds per run, as the kernel measured it.
    pub ns_per_run: u32,
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Runs `prog_fd` on `frame` `repeat` times (0 counts as 1).
pub fn run(prog_fd: RawFd, frame: &[u8], repeat: u32) -> std::io::Result<Outcome> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestAttr {
        prog_fd: prog_fd as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
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
    Ok(Outcome {
        action: attr.retval,
        ns_per_run: attr.duration,
    })
}
