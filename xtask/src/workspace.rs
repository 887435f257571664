//! The workspace's target directory and packages, as cargo sees them.

use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};

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

/// The XDP object that waf-agent's build script left for `include_bytes!`, found in cargo's
/// JSON messages (`--message-format=json*`) of a build that included waf-agent. Fails when
/// the object is empty: the agent would then be built without its program.
pub fn xdp_object(cargo_messages: &str) -> Result<PathBuf> {
    let mut found = None;
    for line in cargo_messages.lines() {
        let msg: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("cannot parse cargo message {line}"))?;
        let agent = msg["package_id"]
            .as_str()
            .is_some_and(|id| id.contains("/waf-agent#"));
        if msg["reason"] == "build-script-executed" && agent {
            found = msg["out_dir"]
                .as_str()
                .map(|out| Path::new(out).join("waf-ebpf"));
        }
    }
    let object = found.context("cargo reported no build of waf-agent, so no XDP object")?;
    let len = std::fs::metadata(&object)
        .with_context(|| format!("cannot stat the XDP object {}", object.display()))?
        .len();
    if len == 0 {
        bail!(
            "the XDP object {} is empty: waf-agent was built with AYA_BUILD_SKIP set",
            object.display()
        );
    }
    Ok(object)
}
