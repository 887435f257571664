//! Project automation: `cargo xtask <command>`.

mod bench_proxy;
mod corpus;
mod loopback;
mod modsec;
mod waf_eval;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "waf-agent project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detection and false-positive rates of the proxy beside nginx + ModSecurity + CRS.
    WafEval(waf_eval::Args),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// Throughput and latency: direct, through the proxy, through nginx + ModSecurity.
    Proxy(bench_proxy::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::WafEval(a) => waf_eval::run(&a),
        Command::Bench(Bench::Proxy(a)) => bench_proxy::run(&a),
    }
}
