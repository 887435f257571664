//! Runs external commands and fails with the command line and exit status.

use std::process::{Command, Output};

use anyhow::{bail, Context as _, Result};

/// The command as one would type it.
pub fn line(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` to completion; an error names the command, its exit status and its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
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
