//! The workspace's target directory and packages, as cargo sees them.

use anyhow::{Context as _, Result};
use std::path::PathBuf;

use crate::cmd;

pub struct Workspace {
    /// Honours `CARGO_TARGET_DIR` and `build.target-dir`, as cargo itself does.
    pub target_dir: PathBuf,
    pub packages: Vec<String>,
}

impl Workspace {
    pub fn has_package(&self, name: &str) -> bool {
        self.packages.iter().any(|p| p == name)
    }
}

pub fn load() -> Result<Workspace> {
    let json = cmd::output(cmd::cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let meta: serde_json::Value =
        serde_json::from_str(&json).context("cannot parse `cargo metadata` output")?;
    let target_dir = meta["target_directory"]
        .as_str()
        .context("`cargo metadata` gave no target_directory")?
        .into();
    let packages = meta["packages"]
        .as_array()
        .context("`cargo metadata` gave no packages")?
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    Ok(Workspace {
        target_dir,
        packages,
    })
}
