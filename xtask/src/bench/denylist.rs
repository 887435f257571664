//! Synthetic deny lists: a reproducible mix of exact addresses and prefixes, shaped like a
//! merged reputation feed, that never touches the ranges the benchmarks send from unless
//! asked to.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Share of IPv6 entries, in percent.
const V6_PERCENT: u64 = 10;
/// Share of prefixes (the rest are exact /32 and /128), in percent.
const PREFIX_PERCENT: u64 = 20;

/// splitmix64: small, fast and good enough to scatter addresses; the fixed seed makes every
/// run measure the same list.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// `fixed` followed by generated entries up to `total`, none of which overlaps `keep_clear`.
/// 90 % IPv4; of each family 80 % exact addresses, 20 % prefixes (/16 to /30, /48 to /64).
pub fn generate(total: usize, fixed: &[IpNet], keep_clear: &[IpNet], seed: u64) -> Vec<IpNet> {
    let mut rng = Rng::new(seed);
    let mut seen: HashSet<IpNet> = fixed.iter().copied().collect();
    let mut out: Vec<IpNet> = fixed.to_vec();
    while out.len() < total {
        let v6 = rng.next() % 100 < V6_PERCENT;
        let prefix = rng.next() % 100 < PREFIX_PERCENT;
        let net = if v6 {
            // Global unicast 2000::/3, so the entries look like real feed contents.
            let hi = (rng.next() & !(0b111 << 61)) | (0b001 << 61);
            let addr = Ipv6Addr::from(((hi as u128) << 64) | rng.next() as u128);
            let len = if prefix {
                rng.between(48, 64) as u8
            } else {
                128
            };
            Ipv6Net::new(addr, len).map(|n| IpNet::V6(n.trunc()))
        } else {
            let addr = Ipv4Addr::from(rng.next() as u32);
            let len = if prefix {
                rng.between(16, 30) as u8
            } else {
                32
            };
            Ipv4Net::new(addr, len).map(|n| IpNet::V4(n.trunc()))
        };
        let Ok(net) = net else { continue };
        if keep_clear.iter().any(|c| overlaps(c, &net)) || !seen.insert(net) {
            continue;
        }
        out.push(net);
    }
    out.truncate(total.max(fixed.len()));
    out
}

/// What an exact-match filter (xdp-filter) can hold of `net`: the address itself for /32
/// and /128, the network address for a prefix, so that both filters hold as many keys.
pub fn exact_key(net: &IpNet) -> IpNet {
    match net {
        IpNet::V4(n) => IpNet::V4(Ipv4Net::from(n.network())),
        IpNet::V6(n) => IpNet::V6(Ipv6Net::from(n.network())),
    }
}
