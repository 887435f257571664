//! Smoke checks that the kernel under test can run the XDP suite at all. Each check is a
//! plain syscall or `ip` call, so a failure here points at the kernel or the guest image
//! rather than at the XDP program. Run as root.

use std::{ffi::CString, fs, os::fd::RawFd, path::Path, process::Command};

/// `BPF_FS_MAGIC` from `include/uapi/linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
const XDP_PASS: u32 = 2;
/// `EM_BPF` from the ELF specification.
const EM_BPF: u16 = 247;

/// Network namespace and veth names, unique to this file so that the real suite's
/// namespaces never collide with them.
const NETNS: &str = "waf-smoke";
const VETH: &str = "wsm0";
const VETH_PEER: &str = "wsm1";
const PIN: &str = "/sys/fs/bpf/waf-smoke-pass";

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`.
#[repr(C)]
#[derive(Default)]
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
}

/// The leading fields of `union bpf_attr` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

/// `union bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
#[derive(Default)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<i64, std::io::Error> {
    // SAFETY: `attr` is a live, initialised `#[repr(C)]` prefix of `union bpf_attr` for
    // `cmd`, and the size passed is its own; the kernel zero-extends shorter attributes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as u32,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Loads `r0 = XDP_PASS; exit` and returns its file descriptor.
fn load_xdp_pass() -> RawFd {
    let mov_r0_pass = [0xb7, 0x00, 0x00, 0x00, XDP_PASS as u8, 0x00, 0x00, 0x00];
    let exit = [0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    let insns: Vec<u8> = [mov_r0_pass, exit].concat();
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => fd as RawFd,
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            panic!(
                "BPF_PROG_LOAD of a two-instruction XDP program failed: {e}\nverifier log:\n{}",
                String::from_utf8_lossy(&log[..end])
            );
        }
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed with {}: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the namespace (and with it both veth ends) and the pin, even when a check fails.
struct Cleanup;

impl Cleanup {
    fn run() {
        if Path::new("/run/netns").join(NETNS).exists() {
            let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
        }
        let _ = fs::remove_file(PIN);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        Cleanup::run();
    }
}

#[test]
fn bpffs_is_mounted() {
    let path = CString::new("/sys/fs/bpf").expect("path has no NUL");
    // SAFETY: `statfs` is plain old data, and the kernel fills it on success.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a valid, writable `statfs`.
    let ret = unsafe { libc::statfs(path.as_ptr(), &mut st) };
    assert_eq!(
        ret,
        0,
        "statfs(/sys/fs/bpf): {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(st.f_type, BPF_FS_MAGIC, "/sys/fs/bpf is not a bpffs mount");
}

#[test]
fn xdp_program_loads_and_passes_a_frame() {
    let fd = load_xdp_pass();
    let mut frame = [0u8; 64];
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let mut out = [0u8; 256];
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    let result = bpf(BPF_PROG_TEST_RUN, &mut attr);
    // SAFETY: `fd` came from BPF_PROG_LOAD and is closed once.
    unsafe { libc::close(fd) };
    result.unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"));
    assert_eq!(
        attr.retval, XDP_PASS,
        "the program returned {} instead of XDP_PASS",
        attr.retval
    );
}

#[test]
fn xdp_attaches_in_driver_mode_to_veth_in_a_namespace() {
    Cleanup::run();
    let _cleanup = Cleanup;

    ip(&["netns", "add", NETNS]);
    ip(&[
        "-n", NETNS, "link", "add", VETH, "type", "veth", "peer", "name", VETH_PEER,
    ]);
    ip(&["-n", NETNS, "addr", "add", "198.18.0.1/30", "dev", VETH]);
    ip(&[
        "-n",
        NETNS,
        "addr",
        "add",
        "198.18.0.2/30",
        "dev",
        VETH_PEER,
    ]);
    ip(&["-n", NETNS, "link", "set", VETH, "up"]);
    ip(&["-n", NETNS, "link", "set", VETH_PEER, "up"]);

    let fd = load_xdp_pass();
    let path = CString::new(PIN).expect("path has no NUL");
    let mut attr = ObjPinAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
    };
    let pinned = bpf(BPF_OBJ_PIN, &mut attr);
    // SAFETY: `fd` came from BPF_PROG_LOAD and is closed once; the pin keeps the program.
    unsafe { libc::close(fd) };
    pinned.unwrap_or_else(|e| panic!("BPF_OBJ_PIN to {PIN} failed: {e}"));

    // `ip -n` remounts /sys and so loses bpffs; nsenter enters only the network namespace.
    let netns = format!("--net=/var/run/netns/{NETNS}");
    let status = Command::new("nsenter")
        .args([
            netns.as_str(),
            "ip",
            "link",
            "set",
            "dev",
            VETH,
            "xdpdrv",
            "pinned",
            PIN,
        ])
        .status()
        .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"));
    assert!(
        status.success(),
        "attaching XDP in driver mode to {VETH} failed with {status}"
    );
    let link = ip(&["-n", NETNS, "link", "show", "dev", VETH]);
    assert!(
        link.contains("xdp"),
        "{VETH} shows no XDP program after attaching:\n{link}"
    );
}

fn assert_bpf_elf(what: &str, bytes: &[u8]) {
    assert!(
        bytes.len() > 64,
        "{what} is {} bytes, too short for an ELF object",
        bytes.len()
    );
    assert_eq!(&bytes[..4], b"\x7fELF", "{what} is not an ELF object");
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    assert_eq!(
        machine, EM_BPF,
        "{what} is ELF for machine {machine}, not BPF"
    );
}

#[test]
fn agent_xdp_object_is_bpf_elf() {
    assert_bpf_elf("waf_agent::xdp::OBJECT", waf_agent::xdp::OBJECT);
    if let Some(path) = std::env::var_os("WAF_XDP_OBJECT") {
        let path = Path::new(&path);
        let bytes = fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read WAF_XDP_OBJECT={}: {e}", path.display()));
        assert_bpf_elf(&path.display().to_string(), &bytes);
    }
}
