//! Support for the kernel-level tests: crafted frames, `BPF_PROG_TEST_RUN`, a filter loaded
//! into a pin directory of its own, and test hosts in network namespaces.
//!
//! These tests need root, bpffs and veth. `cargo xtask test` runs them one at a time.

pub mod agent;
pub mod fixture;
pub mod frames;
pub mod lab;
pub mod test_run;

/// A name unique to this process and call, for pin directories, namespaces and links.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 10_000)
}
