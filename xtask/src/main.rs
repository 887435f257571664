//! `cargo xtask`: project automation that plain cargo cannot express. One module per
//! subcommand; `cmd` runs external commands.

mod cmd;
mod vm_test;
mod workspace;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Project automation for waf-agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot kernels in QEMU and run the kernel-level test suite inside each.
    VmTest(vm_test::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::VmTest(args) => vm_test::run(args),
    }
}
