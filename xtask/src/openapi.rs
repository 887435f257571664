//! `cargo xtask openapi`: writes the admin API's OpenAPI document, generated from the code,
//! to `docs/_generated/openapi.json`. A test fails when the committed file drifts.

use std::process::Command;

use anyhow::Context as _;

use crate::cmd;

pub fn run() -> anyhow::Result<()> {
    cmd::run(cmd::cargo().args(["build", "-q", "-p", "waf-agent"]))?;
    let doc = cmd::output(
        Command::new(cmd::root().join("target/debug/waf-agent")).args(["generate", "openapi"]),
    )?;
    let path = cmd::root().join("docs/_generated/openapi.json");
    std::fs::create_dir_all(path.parent().context("docs dir")?)?;
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
