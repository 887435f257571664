//! A "newc" cpio archive, the format the kernel unpacks an initramfs from.

use std::{
    fs::{self, File},
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

pub enum Body {
    Dir,
    File { source: PathBuf, mode: u32 },
    Bytes { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

pub struct Entry {
    pub path: String,
    pub body: Body,
}

/// Writes `entries` to `out`, with every parent directory before its children, as the
/// kernel's unpacker needs.
pub fn write(out: &Path, mut entries: Vec<Entry>) -> Result<()> {
    add_parents(&mut entries);
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    write_all(out, &entries).with_context(|| format!("cannot write {}", out.display()))
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

fn write_all(out: &Path, entries: &[Entry]) -> Result<()> {
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
