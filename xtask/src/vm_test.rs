//! `cargo xtask vm-test`: builds the kernel-level suite as static binaries, packs them with
//! the XDP object into an initramfs, boots each kernel under test in QEMU and turns the
//! guest's verdict line into the exit status.
//!
//! The kernels: Debian bookworm's `linux-image-amd64` (6.1), fetched with `apt-get download`
//! and cached under `<target>/vm/kernels/`, plus every `--kernel` image.

mod cpio;
mod init;
mod initramfs;
mod kernel;
mod qemu;
mod suite;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};

use crate::workspace;

/// Kernel modules the suite needs that Debian builds as modules (`CONFIG_VETH=m`; a bridge
/// is the device without native XDP that the generic-mode test attaches to).
const GUEST_MODULES: &[&str] = &["veth", "bridge"];

#[derive(clap::Args)]
pub struct Args {
    /// Also boot this kernel image (bzImage). Its modules come from lib/modules/<release>
    /// beside the image's boot/ directory or from /lib/modules/<release>. Repeatable.
    #[arg(long, value_name = "IMAGE")]
    kernel: Vec<PathBuf>,
    /// Boot only the `--kernel` images, not Debian's 6.1.
    #[arg(long, requires = "kernel")]
    skip_debian: bool,
    /// Wall-clock limit for one guest, from QEMU's start to the verdict, in minutes.
    #[arg(long, default_value_t = 20, value_name = "MINUTES")]
    timeout: u64,
    /// Declare the guest hung after this long without console output, in minutes.
    #[arg(long, default_value_t = 5, value_name = "MINUTES")]
    idle_timeout: u64,
    /// Hardware acceleration: KVM when it works, or force one.
    #[arg(long, value_enum, default_value_t = qemu::Accel::Auto)]
    accel: qemu::Accel,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    memory: u32,
    /// Guest CPUs. Under software emulation more CPUs mostly cost host time.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Arguments for every test binary after `--test-threads=1`, such as a test name filter.
    #[arg(last = true)]
    test_args: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let ws = workspace::load()?;
    let vm_dir = ws.target_dir.join("vm");
    std::fs::create_dir_all(&vm_dir)
        .with_context(|| format!("cannot create {}", vm_dir.display()))?;

    let suite = suite::build(&ws)?;
    let mut kernels = Vec::new();
    if !args.skip_debian {
        kernels.push(kernel::debian(&vm_dir)?);
    }
    for image in &args.kernel {
        kernels.push(kernel::given(image)?);
    }
    let accel = qemu::resolve(args.accel)?;
    let limits = qemu::Limits {
        wall: Duration::from_secs(args.timeout * 60),
        idle: Duration::from_secs(args.idle_timeout * 60),
    };

    let mut failed = Vec::new();
    for kernel in &kernels {
        let dir = vm_dir.join("runs").join(&kernel.name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let modules = kernel.modules(GUEST_MODULES)?;
        let image = initramfs::build(&dir, &suite, &modules, &args.test_args)?;
        eprintln!(
            "vm-test: booting {} ({}) with {accel}, {} MiB, {} CPU(s)",
            kernel.name,
            kernel.image.display(),
            args.memory,
            args.cpus
        );
        let guest = qemu::Guest {
            kernel: &kernel.image,
            initramfs: &image,
            accel,
            memory_mib: args.memory,
            cpus: args.cpus,
            console_log: &dir.join("console.log"),
        };
        let outcome = qemu::run(&guest, limits)?;
        eprintln!("vm-test: {}: {outcome}", kernel.name);
        if !outcome.passed() {
            eprintln!("vm-test: console log in {}", guest.console_log.display());
            failed.push(kernel.name.clone());
        }
    }
    if !failed.is_empty() {
        bail!("the kernel-level suite failed on {}", failed.join(", "));
    }
    eprintln!(
        "vm-test: the kernel-level suite passed on {} kernel(s)",
        kernels.len()
    );
    Ok(())
}
