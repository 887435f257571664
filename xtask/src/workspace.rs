//! Where the workspace and its target directory are, and which packages it has.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::cmd;

pub struct Workspace {
    pub root: PathBuf,
    /// Honours `CARGO_TARGET_DIR` and `build.target-dir`, as cargo itself does.
    pub target_dir: PathBuf,
    pub packages: Vec<String>,
}

impl Workspace {
    pub fn has_package(&self, name: &str) -> bool {
        self.packages.iter().any(|p| p == name)
    }
}

/// The cargo that runs this xtask, so that toolchain overrides carry over.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub fn load() -> Result<Workspace> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    let json = cmd::output(
        cargo()
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(&root),
    )?;
    let meta: serde_json::Value =
        serde_json::from_slice(&json).context("cannot parse `cargo metadata` output")?;
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
        root,
        target_dir,
        packages,
    })
}
