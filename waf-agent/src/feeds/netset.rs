//! Prefix arithmetic on `IpNet`: address ranges split into prefixes, duplicate and covered
//! prefixes dropped, and allowed prefixes cut out of denied ones. Addresses are handled as
//! `u128` within their family so that IPv4 and IPv6 share one code path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// First and last address of a prefix, as integers of its family.
pub fn bounds(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn make(v4: bool, start: u128, prefix: u8) -> IpNet {
    if v4 {
        let addr = Ipv4Addr::from(u32::try_from(start).unwrap_or(u32::MAX));
        IpNet::V4(Ipv4Net::new_assert(addr, prefix))
    } else {
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(start), prefix))
    }
}

/// The smallest list of prefixes that covers exactly `start..=end`. `None` when the two ends
/// are of different families or the range runs backwards.
pub fn range_to_nets(start: IpAddr, end: IpAddr) -> Option<Vec<IpNet>> {
    let (v4, bits, mut cur, end) = match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) => (
            true,
            32u32,
            u128::from(u32::from(s)),
            u128::from(u32::from(e)),
        ),
        (IpAddr::V6(s), IpAddr::V6(e)) => (false, 128u32, u128::from(s), u128::from(e)),
        _ => return None,
    };
    if cur > end {
        return None;
    }
    let mut out = Vec::new();
    loop {
        let align = if cur == 0 {
            bits
        } else {
            cur.trailing_zeros().min(bits)
        };
        let span = end - cur;
        // The largest k with 2^k - 1 <= span.
        let fit = if span == u128::MAX {
            128
        } else {
            127 - (span + 1).leading_zeros()
        };
        let k = align.min(fit);
        let prefix = u8::try_from(bits - k).unwrap_or(0);
        out.push(make(v4, cur, prefix));
        let last = if k == 128 {
            u128::MAX
        } else {
            cur + ((1u128 << k) - 1)
        };
        if last >= end {
            return Some(out);
        }
        cur = last + 1;
    }
}

/// Sorts the list and drops duplicates and prefixes covered by another entry. Returns how
/// many entries were dropped. Stable sort: a concatenation of sorted lists (the feeds'
/// stored lists) sorts in linear time.
pub fn normalize(nets: &mut Vec<IpNet>) -> usize {
    let before = nets.len();
    nets.sort();
    let mut last: Option<IpNet> = None;
    nets.retain(|n| match last {
        Some(l) if l.contains(n) => false,
        _ => {
            last = Some(*n);
            true
        }
    });
    before - nets.len()
}

/// A normalized set of prefixes that answers "which of you overlap this prefix" quickly.
#[derive(Debug, Clone, Default)]
pub struct NetIndex {
    v4: Vec<(u128, u128, IpNet)>,
    v6: Vec<(u128, u128, IpNet)>,
}

impl NetIndex {
    pub fn new(nets: &[IpNet]) -> NetIndex {
        let mut nets = nets.to_vec();
        normalize(&mut nets);
        let mut index = NetIndex::default();
        for n in nets {
            let (s, e) = bounds(&n);
            match n {
                IpNet::V4(_) => index.v4.push((s, e, n)),
                IpNet::V6(_) => index.v6.push((s, e, n)),
            }
        }
        index
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The indexed prefixes that overlap `net` (contain it or lie inside it).
    pub fn overlapping(&self, net: &IpNet) -> impl Iterator<Item = &IpNet> + '_ {
        let list = match net {
            IpNet::V4(_) => &self.v4,
            IpNet::V6(_) => &self.v6,
        };
        let (s, e) = bounds(net);
        let from = list.partition_point(|(_, end, _)| *end < s);
        list[from..]
            .iter()
            .take_while(move |(start, _, _)| *start <= e)
            .map(|(_, _, n)| n)
    }

    /// Whether any indexed prefix contains the address.
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        self.overlapping(&IpNet::from(addr)).next().is_some()
    }
}

/// What is left of `net` once every prefix of `cut` is taken out, appended to `out` in
/// address order. Returns false when nothing of `net` was cut.
pub fn subtract_into(net: IpNet, cut: &NetIndex, out: &mut Vec<IpNet>) -> bool {
    let overlaps: Vec<IpNet> = cut.overlapping(&net).copied().collect();
    if overlaps.is_empty() {
        out.push(net);
        return false;
    }
    split_off(net, &overlaps, out);
    true
}

fn split_off(net: IpNet, cut: &[IpNet], out: &mut Vec<IpNet>) {
    if cut.iter().any(|c| c.contains(&net)) {
        return;
    }
    if !cut.iter().any(|c| net.contains(c)) {
        out.push(net);
        return;
    }
    let Ok(halves) = net.subnets(net.prefix_len() + 1) else {
        return;
    };
    for half in halves {
        let inside: Vec<IpNet> = cut
            .iter()
            .filter(|c| c.contains(&half) || half.contains(*c))
            .copied()
            .collect();
        split_off(half, &inside, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| s.parse().expect("test prefix"))
            .collect()
    }

    fn strings(list: &[IpNet]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn range_splits_into_minimal_prefixes() {
        let r = range_to_nets("10.0.0.1".parse().unwrap(), "10.0.0.10".parse().unwrap())
            .expect("valid range");
        assert_eq!(
            strings(&r),
            [
                "10.0.0.1/32",
                "10.0.0.2/31",
                "10.0.0.4/30",
                "10.0.0.8/31",
                "10.0.0.10/32"
            ]
        );
        let all = range_to_nets(
            "0.0.0.0".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
        )
        .expect("valid range");
        assert_eq!(strings(&all), ["0.0.0.0/0"]);
        let v6 = range_to_nets(
            "::".parse().unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
        )
        .expect("valid range");
        assert_eq!(strings(&v6), ["::/0"]);
        let v6 = range_to_nets(
            "2001:db8::".parse().unwrap(),
            "2001:db8::1:ffff".parse().unwrap(),
        )
        .expect("valid range");
        assert_eq!(strings(&v6), ["2001:db8::/111"]);
    }

    #[test]
    fn range_rejects_mixed_families_and_backwards() {
        assert!(range_to_nets("10.0.0.1".parse().unwrap(), "::1".parse().unwrap()).is_none());
        assert!(range_to_nets("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn normalize_drops_duplicates_and_covered() {
        let mut list = nets(&[
            "10.1.0.0/16",
            "10.0.0.0/8",
            "10.0.0.0/8",
            "11.0.0.1/32",
            "2001:db8::/32",
            "2001:db8:1::/48",
        ]);
        assert_eq!(normalize(&mut list), 3);
        assert_eq!(
            strings(&list),
            ["10.0.0.0/8", "11.0.0.1/32", "2001:db8::/32"]
        );
    }

    #[test]
    fn subtract_cuts_an_allowed_hole() {
        let allow = NetIndex::new(&nets(&["10.0.0.5/32"]));
        let mut out = Vec::new();
        assert!(subtract_into(
            "10.0.0.0/29".parse().unwrap(),
            &allow,
            &mut out
        ));
        assert_eq!(strings(&out), ["10.0.0.0/30", "10.0.0.4/32", "10.0.0.6/31"]);
        let mut out = Vec::new();
        assert!(subtract_into(
            "10.0.0.5/32".parse().unwrap(),
            &allow,
            &mut out
        ));
        assert!(
            out.is_empty(),
            "a fully allowed prefix leaves nothing: {out:?}"
        );
        let mut out = Vec::new();
        assert!(!subtract_into(
            "10.0.1.0/24".parse().unwrap(),
            &allow,
            &mut out
        ));
        assert_eq!(strings(&out), ["10.0.1.0/24"]);
    }
}
