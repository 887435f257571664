//! The XDP layer: loading, attaching and pinning the program, and reading and writing its maps.

pub mod apply;
pub mod clock;
pub mod events;
pub mod loader;
pub mod maps;
pub mod ops;

/// The compiled XDP object, built by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/waf-ebpf"));
