//! Building the kernel-level suite as statically linked test binaries, so that the guest
//! needs no C library of its own.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, workspace::Workspace};

const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The datapath tests (packet shapes, decisions, counters), shared with the host run.
const SUITE_PACKAGE: &str = "waf-tests";
/// Checks of the guest kernel itself; always part of the run.
const SMOKE_PACKAGE: &str = "waf-vm-smoke";

pub struct Suite {
    /// Test executables, in the order they run.
    pub binaries: Vec<PathBuf>,
    /// The XDP object the agent embeds, handed to the tests as `WAF_XDP_OBJECT`.
    pub xdp_object: PathBuf,
}

pub fn build(ws: &Workspace) -> Result<Suite> {
    let mut cargo = crate::workspace::cargo();
    cargo
        .current_dir(&ws.root)
        .args([
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .args(["--target", TARGET, "--package", SMOKE_PACKAGE])
        // Only this target's flags: build scripts and the BPF build stay dynamic and untouched.
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        );
    if ws.has_package(SUITE_PACKAGE) {
        cargo.args(["--package", SUITE_PACKAGE]);
    } else {
        eprintln!(
            "vm-test: no `{SUITE_PACKAGE}` package in the workspace; running the smoke checks"
        );
    }
    let json = cmd::output_string(&mut cargo)?;

    let mut binaries = BTreeSet::new();
    let mut xdp_object = None;
    for line in json.lines() {
        let msg: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("cannot parse cargo message {line}"))?;
        match msg["reason"].as_str() {
            Some("compiler-artifact") if msg["profile"]["test"] == true => {
                if let Some(exe) = msg["executable"].as_str() {
                    binaries.insert(PathBuf::from(exe));
                }
            }
            Some("build-script-executed")
                if msg["package_id"]
                    .as_str()
                    .is_some_and(|id| id.contains("/waf-agent#")) =>
            {
                if let Some(out) = msg["out_dir"].as_str() {
                    xdp_object = Some(Path::new(out).join("waf-ebpf"));
                }
            }
            _ => {}
        }
    }
    if binaries.is_empty() {
        bail!("cargo built no test binaries");
    }
    for binary in &binaries {
        ensure_static(binary)?;
    }
    let xdp_object = xdp_object
        .context("cargo reported no build of waf-agent, so there is no XDP object to test")?;
    let len = std::fs::metadata(&xdp_object)
        .with_context(|| format!("cannot stat the XDP object {}", xdp_object.display()))?
        .len();
    if len == 0 {
        bail!(
            "the XDP object {} is empty (was AYA_BUILD_SKIP set?)",
            xdp_object.display()
        );
    }
    Ok(Suite {
        binaries: binaries.into_iter().collect(),
        xdp_object,
    })
}

/// The guest has no dynamic loader for test binaries; a dynamic one would fail to start with
/// a confusing "not found".
fn ensure_static(binary: &Path) -> Result<()> {
    let kind = cmd::output_string(std::process::Command::new("file").arg("-b").arg(binary))?;
    if !(kind.contains("statically linked") || kind.contains("static-pie linked")) {
        bail!(
            "{} is not statically linked ({}); is RUSTFLAGS overriding the target's flags?",
            binary.display(),
            kind.trim()
        );
    }
    Ok(())
}
