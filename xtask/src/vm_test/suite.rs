//! Building the kernel-level suite as statically linked test binaries, so that the guest
//! needs no C library of its own.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    cmd,
    workspace::{self, Workspace},
};

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
    /// The static agent binary, handed to the tests as `WAF_AGENT_BIN`.
    pub agent: PathBuf,
}

/// Test binaries of the kernel-level suite that run in the guest.
const VM_SUITE: [&str; 2] = ["datapath", "traffic"];

pub fn build(ws: &Workspace) -> Result<Suite> {
    let mut cargo = static_cargo("test");
    cargo.args(["--no-run", "--package", SMOKE_PACKAGE]);
    if ws.has_package(SUITE_PACKAGE) {
        cargo.args(["--package", SUITE_PACKAGE]);
    } else {
        eprintln!(
            "vm-test: no `{SUITE_PACKAGE}` package in the workspace; running the smoke checks"
        );
    }
    let json = cmd::stdout(&mut cargo)?;

    let mut binaries = BTreeSet::new();
    for line in json.lines() {
        let msg: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("cannot parse cargo message {line}"))?;
        match msg["reason"].as_str() {
            Some("compiler-artifact") if msg["profile"]["test"] == true => {
                let from_suite = msg["package_id"]
                    .as_str()
                    .is_some_and(|p| p.contains("/tests#"))
                    || msg["target"]["src_path"]
                        .as_str()
                        .is_some_and(|p| p.contains("/tests/tests/"));
                let name = msg["target"]["name"].as_str().unwrap_or_default();
                // The datapath suite proves the program on the guest's kernel; the control
                // and playbook suites drive curl and a Python upstream, host tools the
                // guest does not carry.
                if from_suite && !VM_SUITE.contains(&name) {
                    continue;
                }
                if let Some(exe) = msg["executable"].as_str() {
                    binaries.insert(PathBuf::from(exe));
                }
            }
            _ => {}
        }
    }
    let agent = build_agent()?;
    if binaries.is_empty() {
        bail!("cargo built no test binaries");
    }
    for binary in binaries.iter().chain([&agent]) {
        ensure_static(binary)?;
    }
    let xdp_object = workspace::xdp_object(&json)?;
    Ok(Suite {
        binaries: binaries.into_iter().collect(),
        xdp_object,
        agent,
    })
}

/// `cargo SUBCOMMAND` for the static target, with JSON messages on stdout.
fn static_cargo(subcommand: &str) -> std::process::Command {
    let mut cargo = cmd::cargo();
    cargo
        .args([
            subcommand,
            "--message-format=json-render-diagnostics",
            "--target",
            TARGET,
        ])
        // Only this target's flags: build scripts and the BPF build stay dynamic and untouched.
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        .env_remove("AYA_BUILD_SKIP");
    cargo
}

/// The agent binary, which the suite's process-level tests run as `WAF_AGENT_BIN`.
fn build_agent() -> Result<PathBuf> {
    let json =
        cmd::stdout(static_cargo("build").args(["--package", "waf-agent", "--bin", "waf-agent"]))?;
    for line in json.lines() {
        let msg: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("cannot parse cargo message {line}"))?;
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "waf-agent" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo reported no waf-agent executable")
}

/// The guest has no dynamic loader for test binaries; a dynamic one would fail to start with
/// a confusing "not found".
fn ensure_static(binary: &Path) -> Result<()> {
    let kind = cmd::output(std::process::Command::new("file").arg("-b").arg(binary))?;
    if !(kind.contains("statically linked") || kind.contains("static-pie linked")) {
        bail!(
            "{} is not statically linked ({}); is RUSTFLAGS overriding the target's flags?",
            binary.display(),
            kind.trim()
        );
    }
    Ok(())
}
