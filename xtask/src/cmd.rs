//! Running external commands: every failure names the command line and its exit status.

use std::{
    fmt::Write as _,
    process::{Command, Output, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// Renders a command as a shell-like line for error messages and progress output.
pub fn line(cmd: &Command) -> String {
    let mut out = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let _ = write!(
                out,
                "{}={} ",
                key.to_string_lossy(),
                value.to_string_lossy()
            );
        }
    }
    out.push_str(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            let _ = write!(out, " '{arg}'");
        } else {
            let _ = write!(out, " {arg}");
        }
    }
    out
}

/// Runs `cmd` with inherited stdio and fails unless it exits with status 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = line(cmd);
    eprintln!("+ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed with {status}");
    }
    Ok(())
}

/// Runs `cmd`, captures its stdout (stderr stays on the terminal) and fails unless it exits
/// with status 0.
pub fn output(cmd: &mut Command) -> Result<Vec<u8>> {
    let shown = line(cmd);
    let Output { status, stdout, .. } = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed with {status}");
    }
    Ok(stdout)
}

/// Like [`output`], for commands whose output is text.
pub fn output_string(cmd: &mut Command) -> Result<String> {
    let shown = line(cmd);
    String::from_utf8(output(cmd)?).with_context(|| format!("`{shown}` printed non-UTF-8 output"))
}
