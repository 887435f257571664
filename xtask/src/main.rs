//! `cargo xtask`: the project's automation. One module per subcommand.

mod bench;
mod bench_feeds;
mod bench_proxy;
mod cmd;
mod corpus;
mod demo;
mod dist;
mod loopback;
mod modsec;
mod openapi;
mod test;
mod vm_test;
mod waf_eval;
mod workspace;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "Build, test, evaluate and demonstrate waf-agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the XDP object and run every test, the kernel-level ones included (root).
    Test(test::Args),
    /// Boot kernels in QEMU and run the kernel-level test suite inside each.
    VmTest(vm_test::Args),
    /// Build the Debian package; `--check` installs and checks it in a clean root (root).
    Dist(dist::Args),
    /// Build a namespace lab, run the agent on it, send traffic and show the verdicts (root).
    Demo(demo::Args),
    /// Write the admin API's OpenAPI document to docs/_generated/openapi.json.
    Openapi,
    /// Send UDP datagrams as fast as possible (the demo runs it inside its client namespace).
    #[command(hide = true)]
    UdpFlood(demo::FloodArgs),
    /// Detection and false-positive rates of the proxy beside nginx + ModSecurity + CRS.
    WafEval(waf_eval::Args),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// Per-packet cost from BPF_PROG_TEST_RUN: ours, a bare XDP_PASS, xdp-filter.
    Xdp(bench::xdp::Args),
    /// Floods at the NIC (ours, xdp-filter, nftables, no filter), a spoofed-source flood,
    /// then the proxy under load.
    Load(bench::load::Args),
    /// Throughput and latency: direct, through the proxy, through nginx + ModSecurity.
    Proxy(bench_proxy::Args),
    /// Parse and apply 1M feed entries, then a 10k-entry delta.
    Feeds(bench_feeds::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Test(args) => test::run(&args),
        Command::VmTest(args) => vm_test::run(args),
        Command::Dist(args) => dist::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Openapi => openapi::run(),
        Command::UdpFlood(args) => demo::udp_flood(&args),
        Command::WafEval(a) => waf_eval::run(&a),
        Command::Bench(Bench::Xdp(a)) => bench::run(bench::Bench::Xdp(a)),
        Command::Bench(Bench::Load(a)) => {
            bench::run(bench::Bench::Load(a))?;
            // The proxy under load belongs to the same report: direct, ours, ModSecurity.
            let me = std::env::current_exe()?;
            cmd::run(std::process::Command::new(me).args(["bench", "proxy"]))
        }
        Command::Bench(Bench::Proxy(a)) => bench_proxy::run(&a),
        Command::Bench(Bench::Feeds(args)) => bench_feeds::run(&args),
    }
}
