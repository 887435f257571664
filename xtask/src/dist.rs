//! `cargo xtask dist`: the Debian package. A release build of the agent (the XDP object is
//! inside it), shell completions and the man page generated from its clap definitions, then
//! cargo-deb with the metadata in `waf-agent/Cargo.toml`. `--check` installs the package into
//! a clean Debian root and checks it there.

mod check;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, workspace};

#[derive(clap::Args)]
pub struct Args {
    /// Install the package into a clean Debian bookworm root (debootstrap, cached under the
    /// target directory) and check files, unit, `--version` and `config check` (root).
    #[arg(long)]
    check: bool,
}

/// Generated files, where cargo-deb's assets expect them (`target/release/...` in the
/// metadata means the real target directory).
const GENERATED: &str = "release/dist";

pub fn run(args: &Args) -> Result<()> {
    let ws = workspace::load()?;
    if cmd::output(cmd::cargo().args(["deb", "--version"])).is_err() {
        bail!("cargo-deb is missing: `cargo install cargo-deb --locked` (scripts/setup.sh does)");
    }
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "--package",
        "waf-agent",
        "--bin",
        "waf-agent",
    ]))
    .context("building the agent")?;
    let agent = ws.target_dir.join("release/waf-agent");
    generate(&agent, &ws.target_dir.join(GENERATED))?;

    let out_dir = ws.target_dir.join("dist");
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let printed = cmd::stdout(
        cmd::cargo()
            .args(["deb", "--package", "waf-agent", "--no-build", "--output"])
            .arg(&out_dir),
    )
    .context("packaging")?;
    let deb = printed
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo-deb printed no package path")?;
    eprintln!("dist: {}", deb.display());
    if args.check {
        check::run(&ws, &deb)?;
    }
    Ok(())
}

/// Completions for bash, zsh and fish and the man page, from the agent's hidden `generate`
/// command, so they always match the binary in the package.
fn generate(agent: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let outputs: [(&[&str], &str); 4] = [
        (&["completions", "bash"], "waf-agent.bash"),
        (&["completions", "zsh"], "_waf-agent"),
        (&["completions", "fish"], "waf-agent.fish"),
        (&["man"], "waf-agent.1"),
    ];
    for (what, file) in outputs {
        let text = cmd::output(Command::new(agent).arg("generate").args(what))?;
        if text.trim().is_empty() {
            bail!("`waf-agent generate {}` printed nothing", what.join(" "));
        }
        let path = dir.join(file);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Debian installs man pages compressed; -n keeps the archive free of timestamps.
    cmd::run(
        Command::new("gzip")
            .args(["-9nf"])
            .arg(dir.join("waf-agent.1")),
    )?;
    Ok(())
}
