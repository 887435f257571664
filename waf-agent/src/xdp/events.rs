//! Sampled drop events from the kernel's ring buffer, aggregated per source and reason.
//! Nothing here happens per packet at a visible log level: the kernel samples, and the
//! agent summarises per interval.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::maps::{Map, MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use waf_common::{maps as names, Counter, DropEvent};

use super::maps::MapsError;

/// One sampled drop as the agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drop {
    pub source: IpAddr,
    pub counter: Counter,
    pub ifindex: u32,
}

impl Drop {
    pub fn decode(bytes: &[u8]) -> Option<Drop> {
        if bytes.len() < std::mem::size_of::<DropEvent>() {
            return None;
        }
        // SAFETY: the length is checked; DropEvent is plain data valid for any bytes.
        let ev: DropEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let source = match ev.family {
            4 => IpAddr::V4(Ipv4Addr::new(
                ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
            )),
            6 => IpAddr::V6(Ipv6Addr::from(ev.addr)),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        Some(Drop {
            source,
            counter: Counter::from_u32(ev.counter)?,
            ifindex: ev.ifindex,
        })
    }
}

/// Opens the pinned ring buffer for reading.
pub fn open(pin_dir: &Path) -> Result<AsyncFd<RingBuf<MapData>>, MapsError> {
    let path = pin_dir.join(names::EVENTS);
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Open {
        name: names::EVENTS,
        source,
    })?;
    let map = Map::from_map_data(data).map_err(|source| MapsError::Open {
        name: names::EVENTS,
        source,
    })?;
    let ring: RingBuf<MapData> = map.try_into().map_err(|source| MapsError::Open {
        name: names::EVENTS,
        source,
    })?;
    // SAFETY: the ring buffer owns its file descriptor and is owned by the AsyncFd, so the
    // descriptor stays open for as long as it is registered.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| MapsError::Poll(std::io::Error::from(e)))
}

/// Reads events until the ring is empty, then waits for more; calls `f` for each.
///
/// NB: events written before the reader registered with epoll do not always raise
/// readiness (seen on 6.1), so the ring is drained before every wait, and a wait ends after
/// a second at most.
pub async fn pump(
    mut ring: AsyncFd<RingBuf<MapData>>,
    mut f: impl FnMut(Drop),
) -> std::io::Result<()> {
    loop {
        let inner = ring.get_mut();
        while let Some(item) = inner.next() {
            if let Some(d) = Drop::decode(&item) {
                f(d);
            }
        }
        let wait = tokio::time::timeout(std::time::Duration::from_secs(1), ring.readable_mut());
        if let Ok(guard) = wait.await {
            guard?.clear_ready();
        }
    }
}

/// Sampled drops per (source, reason) since the last `take`.
#[derive(Debug, Default)]
pub struct Aggregate {
    counts: HashMap<(IpAddr, &'static str), u64>,
}

impl Aggregate {
    pub fn add(&mut self, d: Drop) {
        *self
            .counts
            .entry((d.source, d.counter.reason()))
            .or_default() += 1;
    }

    /// The `k` busiest (source, reason) pairs, busiest first, and clears the aggregate.
    pub fn take_top(&mut self, k: usize) -> Vec<(IpAddr, &'static str, u64)> {
        let mut v: Vec<_> = self.counts.drain().map(|((ip, r), n)| (ip, r, n)).collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}
