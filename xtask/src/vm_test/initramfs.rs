//! The guest image: an initramfs with busybox, the host tools the suite calls and their
//! libraries, the kernel modules, the test binaries, the agent, the XDP object and `/init`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use super::{
    cpio::{self, Body, Entry},
    init::{self, AGENT, XDP_OBJECT},
    kernel::Module,
    suite::Suite,
};
use crate::cmd;

const BUSYBOX: &str = "/bin/busybox";
/// A host program the guest gets, with the shared libraries `ldd` lists for it.
struct HostTool {
    name: &'static str,
    package: &'static str,
    /// Data directories it reads at run time, copied whole.
    data: &'static [&'static str],
}

/// Busybox's `ip` lacks `netns`, `veth` and XDP, and busybox's `nsenter` runs its own `ip`
/// applet rather than the one on PATH, so the guest gets the host's. The suite installs a
/// foreign XDP program with `xdp-filter`, which loads its BPF objects from a directory, and
/// talks to the agent's admin API and metrics endpoint with `curl`.
const HOST_TOOLS: &[HostTool] = &[
    HostTool {
        name: "ip",
        package: "iproute2",
        data: &[],
    },
    HostTool {
        name: "nsenter",
        package: "util-linux",
        data: &[],
    },
    HostTool {
        name: "curl",
        package: "curl",
        data: &[],
    },
    HostTool {
        name: "xdp-filter",
        package: "xdp-tools",
        data: &["/usr/lib/x86_64-linux-gnu/bpf"],
    },
];

/// Writes the image to `dir/initramfs.cpio` and returns its path.
pub fn build(
    dir: &Path,
    suite: &Suite,
    modules: &[Module],
    test_args: &[String],
) -> Result<PathBuf> {
    let mut entries = Vec::new();
    // Mount points; directories that hold files are added from the files' paths.
    for d in ["dev", "proc", "sys", "run", "tmp", "root", "etc", "var"] {
        entries.push(Entry {
            path: d.to_owned(),
            body: Body::Dir,
        });
    }
    entries.push(Entry {
        path: "var/run".into(),
        body: Body::Symlink("/run".into()),
    });
    // The kernel opens /dev/console before /init mounts devtmpfs.
    entries.push(Entry {
        path: "dev/console".into(),
        body: Body::CharDev { major: 5, minor: 1 },
    });

    ensure_static(Path::new(BUSYBOX))?;
    entries.push(file_entry("bin/busybox", Path::new(BUSYBOX))?);
    let applets = cmd::output(Command::new(BUSYBOX).arg("--list"))?;
    let shadowed = |a: &str| a == "busybox" || HOST_TOOLS.iter().any(|t| t.name == a);
    for applet in applets.lines().filter(|a| !a.is_empty() && !shadowed(a)) {
        entries.push(Entry {
            path: format!("bin/{applet}"),
            body: Body::Symlink("busybox".into()),
        });
    }

    let mut libs = std::collections::BTreeSet::new();
    for tool in HOST_TOOLS {
        let path = find_in_path(tool.name).with_context(|| {
            format!(
                "`{}` is not installed (apt-get install {})",
                tool.name, tool.package
            )
        })?;
        entries.push(file_entry(&format!("usr/bin/{}", tool.name), &path)?);
        for dir in tool.data {
            add_tree(Path::new(dir), &mut entries)?;
        }
        libs.extend(shared_libraries(&path)?);
    }
    for lib in libs {
        let rel = lib
            .strip_prefix("/")
            .unwrap_or(&lib)
            .to_string_lossy()
            .into_owned();
        entries.push(file_entry(&rel, &lib)?);
    }

    for module in modules {
        entries.push(Entry {
            path: format!("lib/modules/{}.ko", module.name),
            body: Body::Bytes {
                data: module.bytes.clone(),
                mode: 0o644,
            },
        });
    }
    for (i, binary) in suite.binaries.iter().enumerate() {
        let file = binary
            .file_name()
            .context("test binary without a file name")?;
        let name = format!("{:02}-{}", i + 1, file.to_string_lossy());
        entries.push(file_entry(
            &format!("tests/{name}"),
            &stripped(dir, binary)?,
        )?);
    }
    entries.push(file_entry(
        XDP_OBJECT.trim_start_matches('/'),
        &suite.xdp_object,
    )?);
    entries.push(file_entry(
        AGENT.trim_start_matches('/'),
        &stripped(dir, &suite.agent)?,
    )?);
    let init = init::script(modules, test_args);
    entries.push(Entry {
        path: "init".into(),
        body: Body::Bytes {
            data: init.into(),
            mode: 0o755,
        },
    });

    let out = dir.join("initramfs.cpio");
    cpio::write(&out, entries)?;
    Ok(out)
}

/// Every regular file under `dir`, at the same path in the guest.
fn add_tree(dir: &Path, entries: &mut Vec<Entry>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            add_tree(&path, entries)?;
        } else if path.is_file() {
            let rel = path
                .strip_prefix("/")
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            entries.push(file_entry(&rel, &path)?);
        }
    }
    Ok(())
}

/// A copy of `binary` without debug information. Debug builds of the suite are around
/// 100 MB each with it, and the guest holds the image and its unpacked files in RAM.
/// Symbols stay, so backtraces still name functions.
fn stripped(dir: &Path, binary: &Path) -> Result<PathBuf> {
    let out_dir = dir.join("stripped");
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let out = out_dir.join(binary.file_name().context("binary without a file name")?);
    cmd::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(binary),
    )?;
    Ok(out)
}

fn file_entry(path: &str, source: &Path) -> Result<Entry> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = fs::metadata(source).with_context(|| format!("cannot stat {}", source.display()))?;
    Ok(Entry {
        path: path.to_owned(),
        body: Body::File {
            source: source.to_path_buf(),
            mode: meta.permissions().mode() & 0o7777,
        },
    })
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn ensure_static(binary: &Path) -> Result<()> {
    let kind = cmd::output(Command::new("file").arg("-b").arg("-L").arg(binary))?;
    if !kind.contains("statically linked") {
        bail!(
            "{} is not statically linked (install busybox-static)",
            binary.display()
        );
    }
    Ok(())
}

/// The loader and libraries `ldd` lists for `binary`, as absolute paths.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let listing = cmd::output(Command::new("ldd").arg(binary))?;
    let mut libs = Vec::new();
    for line in listing.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}
