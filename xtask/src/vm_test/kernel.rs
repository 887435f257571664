//! The kernels under test: Debian's 6.1 from its package, or a given image, with the
//! modules the guest loads at boot.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

pub struct Kernel {
    /// Names the run's directory and its report lines.
    pub name: String,
    pub image: PathBuf,
    /// `lib/modules/<version>` of this kernel, when its modules are at hand.
    pub modules_dir: Option<PathBuf>,
}

/// Fetches (once) and unpacks the package that `linux-image-amd64` depends on.
pub fn debian(vm_dir: &Path) -> Result<Kernel> {
    let deps = cmd::output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .context("`apt-cache depends linux-image-amd64` names no linux-image package")?
        .to_owned();
    let version = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_owned();
    let root = vm_dir.join("kernels").join(&package);
    let image = root.join("boot").join(format!("vmlinuz-{version}"));
    if !image.exists() {
        let debs = vm_dir.join("debs");
        fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;
        eprintln!("vm-test: fetching {package}");
        cmd::run(
            Command::new("apt-get")
                .args(["download", &package])
                .current_dir(&debs),
        )?;
        let deb = find_deb(&debs, &package)?;
        let staging = vm_dir.join("kernels").join(format!("{package}.partial"));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)
            .with_context(|| format!("cannot create {}", staging.display()))?;
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        fs::rename(&staging, &root)
            .with_context(|| format!("cannot move {} into place", staging.display()))?;
    }
    if !image.exists() {
        bail!("{package} holds no {}", image.display());
    }
    Ok(Kernel {
        name: format!("debian-{version}"),
        image,
        modules_dir: Some(root.join("lib/modules").join(&version)),
    })
}

fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(path);
        }
    }
    bail!(
        "`apt-get download {package}` left no .deb in {}",
        dir.display()
    )
}

/// A kernel image given on the command line. Its release string comes from the bzImage
/// header; its modules from `lib/modules/<release>` beside the image's `boot/` directory
/// (an unpacked kernel package) or else from the host's /lib/modules/<release>.
pub fn given(image: &Path) -> Result<Kernel> {
    let bytes = fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
    let release = bzimage_release(&bytes)
        .with_context(|| format!("{} is not a bzImage with a version string", image.display()))?;
    let beside = image
        .parent()
        .and_then(Path::parent)
        .map(|root| root.join("lib/modules").join(&release));
    let modules_dir = beside
        .into_iter()
        .chain([Path::new("/lib/modules").join(&release)])
        .find(|dir| dir.join("kernel").is_dir());
    Ok(Kernel {
        name: release,
        image: image.to_path_buf(),
        modules_dir,
    })
}

/// Reads `kernel_version` from the x86 boot protocol header (offset 0x20e, a pointer to the
/// version string, relative to 0x200).
fn bzimage_release(bytes: &[u8]) -> Option<String> {
    if bytes.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let offset = u16::from_le_bytes([*bytes.get(0x20e)?, *bytes.get(0x20f)?]) as usize + 0x200;
    let text = bytes.get(offset..)?;
    let end = text.iter().position(|&b| b == 0 || b == b' ')?;
    String::from_utf8(text[..end].to_vec()).ok()
}

impl Kernel {
    /// The module files for `names` and their dependencies, dependencies first, ready for
    /// `insmod`. A module missing from the kernel's tree is assumed to be built in; the
    /// guest's checks fail clearly if it is not.
    pub fn modules(&self, names: &[&str]) -> Result<Vec<Module>> {
        let Some(dir) = &self.modules_dir else {
            eprintln!(
                "vm-test: {}: no modules at hand; {names:?} must be built in",
                self.name
            );
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        collect_ko(&dir.join("kernel"), &mut files)?;
        let mut out = Vec::new();
        for name in names {
            add_module(name, &files, &mut out)?;
        }
        Ok(out)
    }
}

pub struct Module {
    pub name: String,
    /// The uncompressed module image.
    pub bytes: Vec<u8>,
}

fn add_module(name: &str, files: &[PathBuf], out: &mut Vec<Module>) -> Result<()> {
    let key = name.replace('-', "_");
    if out.iter().any(|m| m.name == key) {
        return Ok(());
    }
    let Some(path) = files
        .iter()
        .find(|p| module_name(p).is_some_and(|n| n == key))
    else {
        eprintln!("vm-test: module {name} not in the kernel's tree; assuming it is built in");
        return Ok(());
    };
    let bytes = read_module(path)?;
    for dep in modinfo(&bytes, "depends")
        .split(',')
        .filter(|d| !d.is_empty())
    {
        add_module(dep, files, out)?;
    }
    out.push(Module { name: key, bytes });
    Ok(())
}

fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = [".ko", ".ko.xz", ".ko.zst"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(stem.replace('-', "_"))
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko.xz") {
        cmd::stdout_bytes(Command::new("xz").arg("-dc").arg(path))
    } else if name.ends_with(".ko.zst") {
        cmd::stdout_bytes(Command::new("zstd").arg("-dc").arg(path))
    } else {
        fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// One `key=value` entry of the module's `.modinfo` section, found by its NUL-separated
/// key, which is what `modinfo -F` reads.
fn modinfo(bytes: &[u8], key: &str) -> String {
    let needle = format!("\0{key}=");
    let needle = needle.as_bytes();
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| {
            let value = &bytes[at + needle.len()..];
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            String::from_utf8_lossy(&value[..end]).into_owned()
        })
        .unwrap_or_default()
}

fn collect_ko(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_ko(&path, out)?;
        } else if module_name(&path).is_some() {
            out.push(path);
        }
    }
    Ok(())
}
