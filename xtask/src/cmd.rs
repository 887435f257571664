//! Running commands: fail with the command line and its exit status.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _};

/// Runs `cmd` with inherited output; fails naming the command line and status.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let line = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {line}"))?;
    if !status.success() {
        bail!("{line} failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; fails with the command line, status and stderr.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let line = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {line}"))?;
    if !out.status.success() {
        bail!(
            "{line} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with stderr on the terminal (progress stays visible) and returns its stdout.
pub fn stdout(cmd: &mut Command) -> anyhow::Result<String> {
    String::from_utf8(stdout_bytes(cmd)?).context("output is not UTF-8")
}

/// Like [`stdout`], for binary output.
pub fn stdout_bytes(cmd: &mut Command) -> anyhow::Result<Vec<u8>> {
    let line = format!("{cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {line}"))?;
    if !out.status.success() {
        bail!("{line} failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// Marks the release child of [`rerun_in_release`].
const RELEASE_CHILD: &str = "WAF_XTASK_RELEASE_CHILD";

/// In a debug build of xtask, runs this same command line again from a release build and
/// returns its outcome; `None` in the release build
/// itself. Benchmarks and evaluations of code that runs inside xtask use it, so their
/// figures are those of optimised code.
pub fn rerun_in_release() -> Option<anyhow::Result<()>> {
    if !cfg!(debug_assertions) || std::env::var_os(RELEASE_CHILD).is_some() {
        return None;
    }
    Some(run(Command::new(
        std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
    )
    .args(["run", "--quiet", "--release", "--package", "xtask", "--"])
    .args(std::env::args_os().skip(1))
    .env(RELEASE_CHILD, "1")))
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

pub fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (BPF, bpffs and network namespaces); run it with sudo");
    }
    Ok(())
}

/// The command as one would type it.
pub fn line(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` to completion and returns its output; an error names the command, its exit
/// status and its stderr.
pub fn capture(cmd: &mut Command) -> anyhow::Result<std::process::Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{}`", line(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            line(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}
