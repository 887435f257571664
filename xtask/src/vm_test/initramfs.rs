//! The guest image: an initramfs (newc cpio) with busybox, iproute2's `ip` and its
//! libraries, the kernel modules, the test binaries, the XDP object and a shell `/init`
//! that runs the suite and prints the verdict line.

use std::{
    fs::{self, File},
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use super::{kernel::Module, suite::Suite};
use crate::cmd;

/// The verdict line's prefix; `qemu` looks for exactly this.
pub const VERDICT: &str = "WAF-VM-TEST:";
const XDP_OBJECT: &str = "/lib/waf/waf-xdp.o";
const AGENT: &str = "/usr/bin/waf-agent";
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
/// foreign XDP program with `xdp-filter`, which loads its BPF objects from a directory.
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
        name: "xdp-filter",
        package: "xdp-tools",
        data: &["/usr/lib/x86_64-linux-gnu/bpf"],
    },
];

enum Body {
    Dir,
    File { source: PathBuf, mode: u32 },
    Bytes { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

struct Entry {
    path: String,
    body: Body,
}

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
    let init = init_script(modules, test_args);
    entries.push(Entry {
        path: "init".into(),
        body: Body::Bytes {
            data: init.into(),
            mode: 0o755,
        },
    });

    add_parents(&mut entries);
    // Parents before children, as the kernel's unpacker needs.
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let out = dir.join("initramfs.cpio");
    write_cpio(&out, &entries).with_context(|| format!("cannot write {}", out.display()))?;
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

fn add_parents(entries: &mut Vec<Entry>) {
    let mut dirs = std::collections::BTreeSet::new();
    for entry in entries.iter() {
        let mut path = Path::new(&entry.path);
        while let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(parent.to_string_lossy().into_owned());
            path = parent;
        }
    }
    for entry in entries.iter() {
        dirs.remove(&entry.path);
    }
    entries.extend(dirs.into_iter().map(|path| Entry {
        path,
        body: Body::Dir,
    }));
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

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

fn init_script(modules: &[Module], test_args: &[String]) -> String {
    let insmods: String = modules
        .iter()
        .map(|m| {
            format!(
                "insmod /lib/modules/{}.ko || verdict FAIL 'insmod {}'\n",
                m.name, m.name
            )
        })
        .collect();
    let extra: String = test_args
        .iter()
        .map(|a| format!(" {}", shell_quote(a)))
        .collect();
    format!(
        r#"#!/bin/busybox sh
# Generated by `cargo xtask vm-test`. Runs every test binary once with one test thread and
# ends with exactly one verdict line, then powers the guest off.
export PATH=/usr/bin:/bin HOME=/root TMPDIR=/tmp RUST_BACKTRACE=1
export WAF_XDP_OBJECT={XDP_OBJECT} WAF_AGENT_BIN={AGENT}

verdict() {{
    echo "{VERDICT} $1 ($2)"
    sync
    poweroff -f
}}

mount -t proc proc /proc || verdict FAIL 'mount proc'
mount -t sysfs sysfs /sys || verdict FAIL 'mount sysfs'
mount -t devtmpfs devtmpfs /dev || verdict FAIL 'mount devtmpfs'
mount -t tmpfs tmpfs /run || verdict FAIL 'mount /run'
mount -t tmpfs tmpfs /tmp || verdict FAIL 'mount /tmp'
mount -t bpf bpf /sys/fs/bpf || verdict FAIL 'mount bpffs'
mount -t debugfs debugfs /sys/kernel/debug || verdict FAIL 'mount debugfs'
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
{insmods}ip link set lo up || verdict FAIL 'loopback up'

echo "waf-vm-test: kernel $(uname -r), $(nproc) CPU(s), guest up after $(cut -d' ' -f1 /proc/uptime)s"
failed=""
count=0
for t in /tests/*; do
    count=$((count + 1))
    echo "waf-vm-test: running ${{t##*/}}"
    "$t" --test-threads=1{extra} || failed="$failed ${{t##*/}}"
done
took="$(cut -d' ' -f1 /proc/uptime)s of guest uptime"
if [ -z "$failed" ]; then
    verdict PASS "$count test binaries on $(uname -r), $took"
else
    verdict FAIL "failed:$failed on $(uname -r), $took"
fi
"#
    )
}

fn write_cpio(out: &Path, entries: &[Entry]) -> Result<()> {
    let mut w = BufWriter::new(File::create(out)?);
    for (ino, entry) in entries.iter().enumerate() {
        let (mode, data, rdev) = match &entry.body {
            Body::Dir => (0o040_755, Vec::new(), (0, 0)),
            Body::File { source, mode } => (
                0o100_000 | mode,
                fs::read(source).with_context(|| format!("cannot read {}", source.display()))?,
                (0, 0),
            ),
            Body::Bytes { data, mode } => (0o100_000 | mode, data.clone(), (0, 0)),
            Body::Symlink(target) => (0o120_777, target.clone().into_bytes(), (0, 0)),
            Body::CharDev { major, minor } => (0o020_600, Vec::new(), (*major, *minor)),
        };
        write_record(&mut w, ino as u32 + 1, mode, &entry.path, &data, rdev)?;
    }
    write_record(&mut w, 0, 0, "TRAILER!!!", &[], (0, 0))?;
    w.flush()?;
    Ok(())
}

/// One "newc" record: a 110-byte ASCII header, the NUL-terminated name and the data, each
/// padded to four bytes. Owner root, time zero, so the image depends only on its inputs.
fn write_record(
    w: &mut impl std::io::Write,
    ino: u32,
    mode: u32,
    name: &str,
    data: &[u8],
    (rdev_major, rdev_minor): (u32, u32),
) -> Result<()> {
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        u32::try_from(data.len()).context("file too large for cpio")?,
        0,
        0,
        rdev_major,
        rdev_minor,
        name.len() as u32 + 1,
        0,
    ];
    let mut header = String::from("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w, 110 + name.len() + 1)?;
    w.write_all(data)?;
    pad(w, data.len())?;
    Ok(())
}

fn pad(w: &mut impl std::io::Write, len: usize) -> Result<()> {
    let zeros = [0u8; 3];
    w.write_all(&zeros[..(4 - len % 4) % 4])?;
    Ok(())
}
