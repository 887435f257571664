//! `cargo xtask test`: every test. The host crates' tests first, then the kernel-level suite
//! (`waf-tests`) one test at a time, because its tests attach programs and create namespaces,
//! then the same suite again on Debian's 6.1 kernel in a VM (`vm-test`), then the Debian
//! package installed and checked in a clean root (`dist --check`).

use anyhow::Context as _;

use crate::cmd;

#[derive(clap::Args)]
pub struct Args {
    /// Only the host crates' tests (no root needed).
    #[arg(long)]
    unit_only: bool,
    /// Skip the VM run on Debian's 6.1 kernel and the package check.
    #[arg(long)]
    quick: bool,
    /// Extra arguments for the test binaries (a test name filter, for example).
    #[arg(last = true)]
    filter: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // Builds the XDP object through waf-agent's build script, and the binary the
    // kernel-level tests drive.
    cmd::run(cmd::cargo().args(["build", "-p", "waf-agent"])).context("building the agent")?;
    cmd::run(
        cmd::cargo()
            .args([
                "test",
                "--workspace",
                "--exclude",
                "waf-tests",
                "--exclude",
                "waf-ebpf",
                "--",
            ])
            .args(&args.filter),
    )
    .context("host tests")?;
    if args.unit_only {
        return Ok(());
    }
    cmd::require_root("the kernel-level tests")?;
    let bin = cmd::root().join("target/debug/waf-agent");
    cmd::run(
        cmd::cargo()
            .args(["test", "-p", "waf-tests", "--", "--test-threads=1"])
            .args(&args.filter)
            .env("WAF_AGENT_BIN", bin),
    )
    .context("kernel-level tests")?;
    if args.quick || !args.filter.is_empty() {
        return Ok(());
    }
    let me = std::env::current_exe().context("locating xtask")?;
    cmd::run(std::process::Command::new(&me).arg("vm-test"))
        .context("the kernel-level suite on Debian's 6.1 kernel")?;
    cmd::run(std::process::Command::new(&me).args(["dist", "--check"]))
        .context("the Debian package check")?;
    Ok(())
}
