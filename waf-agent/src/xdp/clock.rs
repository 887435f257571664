//! The monotonic clock shared with the kernel: `bpf_ktime_get_ns` reads `CLOCK_MONOTONIC`.
//! Ban and panic expiries are written in it, so a wall-clock jump neither lifts nor extends
//! them.

use std::time::Duration;

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The monotonic time `ttl` from now, saturating.
pub fn deadline_ns(ttl: Duration) -> u64 {
    monotonic_ns().saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
}
