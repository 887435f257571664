//! The filter loaded into a pin directory of its own, with typed access to its maps.

use std::{
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
    path::PathBuf,
};

use aya::programs::Xdp;
use ipnet::IpNet;
use waf_agent::{
    config::{Capacity, EdgeRate},
    xdp::{apply, loader, maps::EdgeMaps, OBJECT},
};
use waf_common::{Counter, Mode, COUNTER_COUNT};

use crate::test_run;

pub struct Filter {
    pub loaded: loader::Loaded,
    pub maps: EdgeMaps,
    pub pin_dir: PathBuf,
}

impl Filter {
    /// Loads the program into a fresh pin directory, in enforce mode without a rate limit.
    pub fn new() -> Filter {
        Filter::with_capacity(&Capacity::default())
    }

    /// As [`Filter::new`], with the map sizes of `capacity`.
    pub fn with_capacity(capacity: &Capacity) -> Filter {
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(crate::unique("waf-test-"));
        let loaded = loader::load(OBJECT, &pin_dir, capacity).unwrap_or_else(|e| {
            panic!("loading the XDP program into {}: {e:?}", pin_dir.display())
        });
        let mut maps = EdgeMaps::open(&pin_dir).expect("opening the maps just pinned");
        maps.update_settings(|s| {
            s.mode = Mode::Enforce as u32;
            s.saved_mode = Mode::Enforce as u32;
            s.sample_every = 1;
        })
        .expect("writing settings");
        Filter {
            loaded,
            maps,
            pin_dir,
        }
    }

    pub fn prog_fd(&self) -> RawFd {
        let prog: &Xdp = self
            .loaded
            .ebpf
            .program(waf_common::PROGRAM_NAME)
            .expect("program in object")
            .try_into()
            .expect("an XDP program");
        prog.fd()
            .expect("loaded program has an fd")
            .as_fd()
            .as_raw_fd()
    }

    pub fn set_mode(&mut self, mode: Mode) {
        self.maps
            .update_settings(|s| s.mode = mode as u32)
            .expect("writing the mode");
    }

    pub fn set_rate(&mut self, packets_per_second: u64, burst: u64) {
        let (interval, tolerance) = apply::gcra(&EdgeRate {
            packets_per_second,
            burst,
            ipv6_prefix: 64,
        });
        self.maps
            .update_settings(|s| {
                s.rate_interval_ns = interval;
                s.rate_tolerance_ns = tolerance;
            })
            .expect("writing the rate");
    }

    pub fn deny(&mut self, n: &str) {
        self.maps.deny_insert_raw(net(n)).expect("deny insert");
        self.maps.refresh_present().expect("presence bits");
    }

    pub fn allow(&mut self, n: &str) {
        self.maps.allow_insert(net(n)).expect("allow insert");
    }

    /// Runs a frame once; returns the XDP action.
    pub fn run(&self, frame: &[u8]) -> u32 {
        test_run::run(self.prog_fd(), frame, 1)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"))
            .action
    }

    pub fn counters(&self) -> [u64; COUNTER_COUNT as usize] {
        self.maps.counters().expect("reading counters")
    }

    pub fn count(&self, c: Counter) -> u64 {
        self.counters()[c as usize]
    }

    /// The counters that moved since `before`, by name, for exact comparisons.
    pub fn moved_since(&self, before: &[u64; COUNTER_COUNT as usize]) -> Vec<(&'static str, u64)> {
        let now = self.counters();
        Counter::ALL
            .iter()
            .filter(|c| now[**c as usize] != before[**c as usize])
            .map(|c| (c.name(), now[*c as usize] - before[*c as usize]))
            .collect()
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        let _ = loader::detach_all(&self.pin_dir);
    }
}

pub fn net(s: &str) -> IpNet {
    waf_agent::config::parse_net(s).unwrap_or_else(|e| panic!("{e}"))
}
