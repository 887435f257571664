//! `cargo xtask`: project automation, one module per subcommand.

mod bench;
mod cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "waf-agent project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks; each writes a Markdown table and PNG charts under target/bench/.
    #[command(subcommand)]
    Bench(bench::Bench),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Bench(b) => bench::run(b),
    }
}
