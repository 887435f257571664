//! The XDP layer: loading, attaching and pinning the program, and reading and writing its maps.

pub mod apply;
pub mod clock;
pub mod events;
pub mod loader;
pub mod maps;
pub mod ops;
pub mod sink;

/// The compiled XDP object, built by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/waf-ebpf"));

/// The pinned maps shared by the agent's tasks. A plain mutex: every critical section is a
/// handful of map syscalls, never an await.
pub type SharedMaps = std::sync::Arc<std::sync::Mutex<maps::EdgeMaps>>;

/// Locks the shared maps; a panic elsewhere while holding the lock leaves the maps usable.
pub fn lock(maps: &SharedMaps) -> std::sync::MutexGuard<'_, maps::EdgeMaps> {
    maps.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
