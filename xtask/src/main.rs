//! `cargo xtask`: project automation, one module per subcommand.

mod bench_feeds;
mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "waf-agent project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// Parse and apply 1M feed entries, then a 10k-entry delta.
    Feeds(bench_feeds::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(Bench::Feeds(args)) => bench_feeds::run(&args),
    }
}
