//! Time for bans. Decisions use `CLOCK_MONOTONIC`, the clock `bpf_ktime_get_ns` reads, so
//! a wall-clock jump neither lifts nor extends a ban. Wall time is only for display and
//! for carrying bans across a reboot, where the monotonic clock starts again from zero.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime},
};

pub trait Clock: Send + Sync {
    /// Nanoseconds on `CLOCK_MONOTONIC`.
    fn monotonic_ns(&self) -> u64;
    fn wall(&self) -> SystemTime;
}

/// The host's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn monotonic_ns(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC is always
        // available on Linux; the call only writes into `ts`.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        if rc != 0 {
            return 0;
        }
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(nanos)
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock moved by hand: tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(u64, SystemTime)>,
}

impl ManualClock {
    pub fn new(monotonic_ns: u64, wall: SystemTime) -> ManualClock {
        ManualClock {
            state: Mutex::new((monotonic_ns, wall)),
        }
    }

    /// Lets time pass on both clocks.
    pub fn advance(&self, by: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 =
            s.0.saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX));
        s.1 += by;
    }

    /// Sets the wall clock alone, as an operator or NTP step would.
    pub fn set_wall(&self, wall: SystemTime) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = wall;
    }

    /// Sets the monotonic clock alone, as a reboot does.
    pub fn set_monotonic(&self, ns: u64) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = ns;
    }
}

impl Clock for ManualClock {
    fn monotonic_ns(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    fn wall(&self) -> SystemTime {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}
