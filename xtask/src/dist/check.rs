//! `cargo xtask dist --check`: installs the package into a clean Debian root and checks what
//! an operator relies on: the files, the conffiles, the state directory, the unit as systemd
//! reads it, `waf-agent --version`, `waf-agent config check`, and a clean purge.
//!
//! The root is debootstrap's minbase plus systemd and procps (a minimal systemd host),
//! made once under `<target>/dist/` from the mirror apt already uses, and copied afresh for
//! every run.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::{cmd, workspace::Workspace};

const SUITE: &str = "bookworm";
const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";

/// Files the package must install, relative to the root.
const FILES: &[&str] = &[
    "usr/bin/waf-agent",
    "etc/waf-agent/agent.yaml",
    "etc/waf-agent/playbooks.yaml",
    "etc/waf-agent/error_codes.yaml",
    "usr/lib/systemd/system/waf-agent.service",
    "usr/share/bash-completion/completions/waf-agent",
    "usr/share/zsh/vendor-completions/_waf-agent",
    "usr/share/fish/vendor_completions.d/waf-agent.fish",
    "usr/share/man/man1/waf-agent.1.gz",
    "usr/share/doc/waf-agent/copyright",
    "usr/share/doc/waf-agent/install.md",
    "etc/waf-agent/rules/sql_injection.yaml",
    "etc/waf-agent/rules/xss.yaml",
    "etc/waf-agent/rules/path_traversal.yaml",
];
const CONFFILES: &[&str] = &[
    "/etc/waf-agent/agent.yaml",
    "/etc/waf-agent/playbooks.yaml",
    "/etc/waf-agent/error_codes.yaml",
    "/etc/waf-agent/rules/sql_injection.yaml",
    "/etc/waf-agent/rules/xss.yaml",
];

pub fn run(ws: &Workspace, deb: &Path) -> Result<()> {
    cmd::require_root("the package test (debootstrap and chroot)")?;
    let dir = ws.target_dir.join("dist");
    let base = clean_root(&dir)?;
    let root = dir.join("package-test-root");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("cannot remove {}", root.display()))?;
    }
    cmd::run(Command::new("cp").arg("-a").arg(&base).arg(&root))?;
    let name = deb
        .file_name()
        .context("package path without a file name")?;
    let inside = Path::new("/tmp").join(name);
    fs::copy(deb, root.join(inside.strip_prefix("/")?))
        .with_context(|| format!("cannot copy {} into the root", deb.display()))?;

    cmd::run(chroot(&root).arg("dpkg").arg("--install").arg(&inside)).context("installing")?;
    for file in FILES {
        ensure!(
            root.join(file).is_file(),
            "the package did not install /{file}"
        );
    }
    let conffiles = fs::read_to_string(root.join("var/lib/dpkg/info/waf-agent.conffiles"))
        .context("the package declares no conffiles")?;
    for file in CONFFILES {
        ensure!(
            conffiles.lines().any(|l| l.trim() == *file),
            "{file} is not a conffile"
        );
    }
    check_state_dir(&root)?;
    let man =
        cmd::output(Command::new("zcat").arg(root.join("usr/share/man/man1/waf-agent.1.gz")))?;
    ensure!(man.contains(".TH"), "the man page has no .TH header");

    let version = cmd::output(chroot(&root).args(["waf-agent", "--version"]))?;
    let expected = format!("waf-agent {}", env!("CARGO_PKG_VERSION"));
    ensure!(
        version.trim() == expected,
        "`waf-agent --version` printed {version:?}, not {expected:?}"
    );
    cmd::run(chroot(&root).args(["waf-agent", "config", "check", "/etc/waf-agent/agent.yaml"]))
        .context("the packaged configuration")?;
    verify_unit(&root)?;

    cmd::run(chroot(&root).args(["dpkg", "--purge", "waf-agent"])).context("purging")?;
    for gone in ["usr/bin/waf-agent", "etc/waf-agent", "var/lib/waf-agent"] {
        ensure!(
            !root.join(gone).exists(),
            "/{gone} is still there after the purge"
        );
    }
    eprintln!(
        "dist: {} installs, checks and purges cleanly in a {SUITE} root",
        deb.display()
    );
    Ok(())
}

fn chroot(root: &Path) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root).env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    c
}

/// `systemd-analyze verify` against the root's own units and binaries. It exits 0 on
/// warnings, so any message at all fails the check.
fn verify_unit(root: &Path) -> Result<()> {
    let mut verify = Command::new("systemd-analyze");
    verify
        .arg(format!("--root={}", root.display()))
        // The man page is checked above; systemd-analyze would look for it on the host.
        .args(["--man=no", "verify", "waf-agent.service"]);
    let line = format!("{verify:?}");
    let out = verify
        .output()
        .with_context(|| format!("cannot start {line}"))?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "{line} failed ({}):\n{said}",
        out.status
    );
    Ok(())
}

fn check_state_dir(root: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::metadata(root.join("var/lib/waf-agent"))
        .context("the package made no /var/lib/waf-agent")?;
    ensure!(meta.is_dir(), "/var/lib/waf-agent is not a directory");
    ensure!(
        meta.mode() & 0o007 == 0,
        "/var/lib/waf-agent is open to others"
    );
    Ok(())
}

/// The cached base root, made on first use.
fn clean_root(dir: &Path) -> Result<PathBuf> {
    let base = dir.join(format!("{SUITE}-minbase"));
    if base.join("usr/bin/systemctl").exists() {
        return Ok(base);
    }
    let partial = dir.join(format!("{SUITE}-minbase.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove {}", partial.display()))?;
    }
    if Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("debootstrap is missing: apt-get install debootstrap");
    }
    let mirror = debian_mirror();
    eprintln!("dist: making a clean {SUITE} root from {mirror}");
    cmd::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include=systemd,procps", SUITE])
            .arg(&partial)
            .arg(&mirror),
    )
    .with_context(|| format!("debootstrap from {mirror} (is the mirror reachable?)"))?;
    fs::rename(&partial, &base)
        .with_context(|| format!("cannot move {} into place", base.display()))?;
    Ok(base)
}

/// The mirror apt uses for the suite here (deb822 `.sources` or `sources.list`).
fn debian_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.flatten() {
            if entry.path().extension().is_some_and(|e| e == "sources") {
                texts.extend(fs::read_to_string(entry.path()).ok());
            }
        }
    }
    for text in &texts {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            if field("Suites:").iter().any(|s| s == SUITE) {
                if let Some(uri) = field("URIs:").into_iter().next() {
                    return uri;
                }
            }
        }
    }
    let list = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    list.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&"deb") && w.get(2) == Some(&SUITE))
        .and_then(|w| w.get(1).map(|s| (*s).to_owned()))
        .unwrap_or_else(|| FALLBACK_MIRROR.to_owned())
}
