//! `bench load`: floods at the NIC.

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> Result<()> {
    anyhow::bail!("bench load is not available yet")
}
