//! Header parsing: Ethernet with up to two VLAN tags, IPv4 with options, IPv6 with a bounded
//! walk over extension headers. Every read goes through `ptr_at`, the one bounds check.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Pre-standard QinQ outer tag, still emitted by some switches.
const ETH_P_QINQ_OLD: u16 = 0x9100;
const VLAN_HLEN: usize = 4;
/// 802.1Q, and 802.1ad with one inner tag. A third tag is treated as malformed.
const MAX_VLAN_TAGS: usize = 2;

const IPV6_HLEN: usize = 40;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_NONE: u8 = 59;
const NEXTHDR_DEST: u8 = 60;
const NEXTHDR_ICMPV6: u8 = 58;
/// Extension headers walked before giving up. Linux itself accepts long chains, but a
/// legitimate packet rarely carries more than three; a longer one is malformed here.
const MAX_EXT_HEADERS: usize = 8;

/// The source of a packet and what the verdict needs to know about it.
pub enum Packet {
    /// ARP, LLDP and every other non-IP ethertype.
    NonIp,
    /// Too short or inconsistent before the source address could be read.
    Malformed,
    V4 {
        src: [u8; 4],
    },
    V6 {
        src: Src6,
        tail: V6Tail,
    },
}

/// An IPv6 source address, aligned so that every copy of it is two word moves rather than
/// sixteen byte moves.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Src6(pub [u8; 16]);

/// What the extension-header walk found after the fixed IPv6 header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum V6Tail {
    /// Neighbour discovery (ICMPv6 133-137) with hop limit 255, which cannot come from off
    /// the link (RFC 4861 section 7.1).
    NeighbourDiscovery,
    /// Any other upper layer, a non-first fragment, or no next header.
    Other,
    /// The chain was truncated or longer than `MAX_EXT_HEADERS`.
    Malformed,
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn load<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked that `size_of::<T>()` bytes at `offset` lie inside the
    // packet; `read_unaligned` because packet headers have no alignment guarantee.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}

#[inline(always)]
fn load_be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    load::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

pub fn parse(ctx: &XdpContext) -> Packet {
    let Some(mut proto) = load_be16(ctx, ETH_HLEN - 2) else {
        return Packet::Malformed;
    };
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(proto) {
            break;
        }
        match load_be16(ctx, l3 + 2) {
            Some(inner) => proto = inner,
            None => return Packet::Malformed,
        }
        l3 += VLAN_HLEN;
    }
    match proto {
        ETH_P_IP => parse_v4(ctx, l3),
        ETH_P_IPV6 => parse_v6(ctx, l3),
        // More tags than we walk: the IP header could hide behind them.
        p if is_vlan(p) => Packet::Malformed,
        _ => Packet::NonIp,
    }
}

#[inline(always)]
fn is_vlan(proto: u16) -> bool {
    proto == ETH_P_8021Q || proto == ETH_P_8021AD || proto == ETH_P_QINQ_OLD
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, l3: usize) -> Packet {
    // One read of the fixed header: separate one-byte reads after a wider bounds check let
    // LLVM drop checks it can prove redundant, leaving paths the verifier still walks.
    let Some(h) = load::<[u8; 20]>(ctx, l3) else {
        return Packet::Malformed;
    };
    let ihl = (h[0] & 0x0f) as usize * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Packet::Malformed;
    }
    // The whole header, options included, must be present. Fragments (first or not) carry
    // their source here like any other packet, and the verdict needs nothing more.
    // NB: a two-byte probe, because LLVM turns a one-byte bounds check into `end > p`, from
    // which the verifier learns no range for a pointer with a variable offset.
    if ptr_at::<[u8; 2]>(ctx, l3 + ihl - 2).is_none() {
        return Packet::Malformed;
    }
    Packet::V4 {
        src: [h[12], h[13], h[14], h[15]],
    }
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, l3: usize) -> Packet {
    let Some(h) = load::<[u8; IPV6_HLEN]>(ctx, l3) else {
        return Packet::Malformed;
    };
    if h[0] >> 4 != 6 {
        return Packet::Malformed;
    }
    let mut src = Src6([0; 16]);
    src.0.copy_from_slice(&h[8..24]);
    // Most packets carry TCP or UDP right behind the fixed header: only a next header that
    // the walk looks at (an extension header, or ICMPv6 for neighbour discovery) pays for it.
    let tail = match h[6] {
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_FRAGMENT | NEXTHDR_AUTH | NEXTHDR_DEST
        | NEXTHDR_ICMPV6 => walk_v6(ctx, l3 + IPV6_HLEN, h[6], h[7]),
        _ => V6Tail::Other,
    };
    Packet::V6 { src, tail }
}

/// Follows the extension-header chain to the upper layer. Kept out of line: it is the
/// largest stage, and a BPF-to-BPF call keeps the verifier's state small.
#[inline(never)]
fn walk_v6(ctx: &XdpContext, start: usize, first: u8, hop_limit: u8) -> V6Tail {
    let mut off = start;
    let mut next = first;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let Some([nh, len]) = load::<[u8; 2]>(ctx, off) else {
                    return V6Tail::Malformed;
                };
                next = nh;
                off += (len as usize + 1) * 8;
                if ptr_at::<[u8; 2]>(ctx, off - 2).is_none() {
                    return V6Tail::Malformed;
                }
            }
            NEXTHDR_AUTH => {
                let Some([nh, len]) = load::<[u8; 2]>(ctx, off) else {
                    return V6Tail::Malformed;
                };
                next = nh;
                off += (len as usize + 2) * 4;
                if ptr_at::<[u8; 2]>(ctx, off - 2).is_none() {
                    return V6Tail::Malformed;
                }
            }
            NEXTHDR_FRAGMENT => {
                let Some(frag) = load::<[u8; 8]>(ctx, off) else {
                    return V6Tail::Malformed;
                };
                if u16::from_be_bytes([frag[2], frag[3]]) & 0xfff8 != 0 {
                    // A non-first fragment has no upper-layer header to look at; it is
                    // judged by its source address alone.
                    return V6Tail::Other;
                }
                next = frag[0];
                off += 8;
            }
            NEXTHDR_NONE => return V6Tail::Other,
            NEXTHDR_ICMPV6 => {
                // Type and code together: see the note on one-byte probes in `parse_v4`.
                let Some([icmp_type, _code]) = load::<[u8; 2]>(ctx, off) else {
                    return V6Tail::Malformed;
                };
                if hop_limit == 255 && (133..=137).contains(&icmp_type) {
                    return V6Tail::NeighbourDiscovery;
                }
                return V6Tail::Other;
            }
            _ => return V6Tail::Other,
        }
    }
    V6Tail::Malformed
}
