//! Loading the XDP program, attaching it, and keeping it attached across agent restarts.
//!
//! Maps are pinned under the pin directory by name and links under `links/<interface>`. A
//! pinned link keeps the program filtering after the agent exits, crashes or is killed; the
//! next agent opens the pins, checks their layout version, and swaps its freshly loaded
//! program into the existing link atomically (`BPF_LINK_UPDATE`), so there is no moment
//! without a filter and never two programs on one interface.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    programs::{links::FdLink, links::PinnedLink, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use waf_common::{maps as names, PROGRAM_NAME};

use super::maps::{self, EdgeMaps, MapsError};
use crate::config::{AttachMode, Capacity};

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path} is not on a bpffs mount (mount one with `mount -t bpf bpf /sys/fs/bpf`)")]
    NoBpffs { path: PathBuf },
    #[error("cannot create pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("this binary was built without the XDP object (AYA_BUILD_SKIP was set)")]
    NoObject,
    #[error("loading the XDP object failed")]
    Load(#[source] aya::EbpfError),
    #[error("the kernel rejected the XDP program")]
    Verify(#[source] aya::programs::ProgramError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("interface {iface} does not exist")]
    NoInterface { iface: String },
    #[error(
        "interface {iface} already has an XDP program that is not ours; refusing to replace \
         it (remove it with `ip link set dev {iface} xdp off`, or `xdp-loader unload`)"
    )]
    Busy { iface: String },
    #[error("attaching to {iface} failed")]
    Attach {
        iface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("pinning the link for {iface} failed")]
    PinLink {
        iface: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// How the program ended up on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    Native,
    Generic,
    /// A pinned link from an earlier run, now running this agent's program.
    Adopted,
}

impl Attachment {
    pub fn as_str(self) -> &'static str {
        match self {
            Attachment::Native => "native",
            Attachment::Generic => "generic",
            Attachment::Adopted => "adopted",
        }
    }
}

/// The loaded program and its maps. Dropping it leaves the pins, and so the filter, in place.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub pin_dir: PathBuf,
    pub adopted_maps: bool,
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

pub fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join("links").join(iface)
}

/// Loads the program with maps pinned under `pin_dir`, reusing pins that exist.
pub fn load(object: &[u8], pin_dir: &Path, capacity: &Capacity) -> Result<Loaded, LoadError> {
    if object.is_empty() {
        return Err(LoadError::NoObject);
    }
    std::fs::create_dir_all(pin_dir.join("links")).map_err(|source| LoadError::PinDir {
        path: pin_dir.to_owned(),
        source,
    })?;
    if !is_bpffs(pin_dir) {
        return Err(LoadError::NoBpffs {
            path: pin_dir.to_owned(),
        });
    }
    let adopted_maps = maps::pins_exist(pin_dir);
    if adopted_maps {
        // Refuse a foreign layout before aya reuses the pins under our names.
        EdgeMaps::open(pin_dir)?;
    }
    let mut loader = EbpfLoader::new();
    loader
        .default_map_pin_directory(pin_dir)
        .map_max_entries(names::ALLOW_V4, capacity.allow)
        .map_max_entries(names::ALLOW_V6, capacity.allow)
        .map_max_entries(names::BAN_V4, capacity.ban)
        .map_max_entries(names::BAN_V6, capacity.ban)
        .map_max_entries(names::DENY_V4, capacity.deny_exact)
        .map_max_entries(names::DENY_V6, capacity.deny_exact)
        .map_max_entries(names::DENY_NET_V4, capacity.deny_net)
        .map_max_entries(names::DENY_NET_V6, capacity.deny_net)
        .map_max_entries(names::RATE, capacity.rate);
    let mut ebpf = loader.load(object).map_err(LoadError::Load)?;
    let program: &mut Xdp = program(&mut ebpf)?;
    program.load().map_err(LoadError::Verify)?;
    Ok(Loaded {
        ebpf,
        pin_dir: pin_dir.to_owned(),
        adopted_maps,
    })
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    let p = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(LoadError::Load(aya::EbpfError::ProgramError(
            aya::programs::ProgramError::NotLoaded,
        )))?;
    p.try_into().map_err(LoadError::Verify)
}

impl Loaded {
    /// Attaches to `iface`, or swaps this program into the link an earlier run pinned.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<Attachment, LoadError> {
        let pin = link_pin(&self.pin_dir, iface);
        let prog = program(&mut self.ebpf)?;
        if pin.exists() {
            if let Ok(pinned) = PinnedLink::from_pin(&pin) {
                let fd_link: FdLink = pinned.into();
                let link = fd_link
                    .try_into()
                    .map_err(|e: aya::programs::links::LinkError| LoadError::PinLink {
                        iface: iface.to_owned(),
                        source: Box::new(e),
                    })?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|source| LoadError::Attach {
                        iface: iface.to_owned(),
                        source,
                    })?;
                // The pin keeps the link; our handle only needs to be closed, not detached.
                let link = prog.take_link(id).map_err(|source| LoadError::Attach {
                    iface: iface.to_owned(),
                    source,
                })?;
                drop(link);
                return Ok(Attachment::Adopted);
            }
            // A stale pin (its link was destroyed): replace it.
            let _ = std::fs::remove_file(&pin);
        }
        let tries: &[(XdpMode, Attachment)] = match mode {
            AttachMode::Auto => &[
                (XdpMode::Driver, Attachment::Native),
                (XdpMode::Skb, Attachment::Generic),
            ],
            AttachMode::Native => &[(XdpMode::Driver, Attachment::Native)],
            AttachMode::Generic => &[(XdpMode::Skb, Attachment::Generic)],
        };
        let mut last = None;
        for (xdp_mode, kind) in tries {
            match prog.attach(iface, *xdp_mode) {
                Ok(id) => {
                    let link = prog.take_link(id).map_err(|source| LoadError::Attach {
                        iface: iface.to_owned(),
                        source,
                    })?;
                    let fd_link: FdLink =
                        link.try_into()
                            .map_err(|e: aya::programs::links::LinkError| LoadError::PinLink {
                                iface: iface.to_owned(),
                                source: Box::new(e),
                            })?;
                    fd_link.pin(&pin).map_err(|e| LoadError::PinLink {
                        iface: iface.to_owned(),
                        source: Box::new(e),
                    })?;
                    return Ok(*kind);
                }
                Err(aya::programs::ProgramError::UnknownInterface { .. }) => {
                    return Err(LoadError::NoInterface {
                        iface: iface.to_owned(),
                    });
                }
                Err(e) if is_busy(&e) => {
                    return Err(LoadError::Busy {
                        iface: iface.to_owned(),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(LoadError::Attach {
            iface: iface.to_owned(),
            source: last.unwrap_or(aya::programs::ProgramError::NotLoaded),
        })
    }
}

fn is_busy(e: &aya::programs::ProgramError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST)) {
                return true;
            }
        }
        cur = err.source();
    }
    let text = format!("{e:?}");
    text.contains("EBUSY") || text.contains("Device or resource busy")
}

/// Interfaces with a pinned link of ours.
pub fn pinned_links(pin_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(pin_dir.join("links"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Removes every link and map pin of ours. Unpinning the last reference to a link detaches
/// the program from its interface.
pub fn detach_all(pin_dir: &Path) -> io::Result<Vec<String>> {
    let links = pinned_links(pin_dir);
    for iface in &links {
        std::fs::remove_file(link_pin(pin_dir, iface))?;
    }
    let _ = std::fs::remove_dir(pin_dir.join("links"));
    for name in names::ALL {
        match std::fs::remove_file(pin_dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let _ = std::fs::remove_dir(pin_dir);
    Ok(links)
}
