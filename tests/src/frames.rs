//! Crafted Ethernet frames: every shape the parser must handle, built byte by byte.

use std::net::{Ipv4Addr, Ipv6Addr};

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Ethernet header with optional VLAN tags (outer first): each tag is (TPID, VLAN id).
pub fn ethernet(tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 header with `options` bytes of options (a multiple of 4) and a UDP payload.
pub fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, options: usize, frag_offset: u16) -> Vec<u8> {
    assert!(
        options % 4 == 0 && options <= 40,
        "IPv4 options must be 0..=40 in steps of 4"
    );
    let ihl = (20 + options) / 4;
    let payload = 8 + 4;
    let total = (20 + options + payload) as u16;
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag_offset.to_be_bytes());
    h.extend_from_slice(&[64, 17, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    // NOP options ending in End of Options.
    for i in 0..options {
        h.push(if i + 1 == options { 0 } else { 1 });
    }
    h
}

fn udp() -> Vec<u8> {
    vec![
        0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, b'p', b'i', b'n', b'g',
    ]
}

/// A UDP packet from `src` over IPv4.
pub fn v4(src: Ipv4Addr) -> Vec<u8> {
    v4_with(&[], src, 0, 0)
}

pub fn v4_with(tags: &[(u16, u16)], src: Ipv4Addr, options: usize, frag_offset: u16) -> Vec<u8> {
    let mut f = ethernet(tags, 0x0800);
    f.extend(ipv4_header(
        src,
        Ipv4Addr::new(198, 18, 0, 1),
        options,
        frag_offset,
    ));
    f.extend(udp());
    f
}

/// IPv6 extension headers to place between the fixed header and the upper layer.
#[derive(Debug, Clone, Copy)]
pub enum Ext {
    HopByHop,
    Routing,
    /// A fragment header; `offset` in 8-byte units (non-zero: a non-first fragment).
    Fragment {
        offset: u16,
    },
    DestOpts,
    Auth,
}

impl Ext {
    fn number(self) -> u8 {
        match self {
            Ext::HopByHop => 0,
            Ext::Routing => 43,
            Ext::Fragment { .. } => 44,
            Ext::DestOpts => 60,
            Ext::Auth => 51,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            // 8 bytes: next, hdr ext len 0, PadN option of 4 bytes of padding.
            Ext::HopByHop | Ext::DestOpts => vec![next, 0, 1, 4, 0, 0, 0, 0],
            // Type 0 routing header, no addresses, segments left 0.
            Ext::Routing => vec![next, 0, 0, 0, 0, 0, 0, 0],
            Ext::Fragment { offset } => {
                let field = (offset << 3) | 1;
                let f = field.to_be_bytes();
                vec![next, 0, f[0], f[1], 0, 0, 0, 7]
            }
            // AH: payload length in 4-byte units minus 2: 12 bytes of header + 4 of ICV = 16.
            Ext::Auth => {
                let mut v = vec![next, 2, 0, 0];
                v.extend_from_slice(&[0, 0, 1, 0]);
                v.extend_from_slice(&[0, 0, 0, 1]);
                v.extend_from_slice(&[0xaa; 4]);
                v
            }
        }
    }
}

/// An IPv6 packet from `src` through `exts` to `upper` (protocol number and bytes).
pub fn v6_with(
    tags: &[(u16, u16)],
    src: Ipv6Addr,
    exts: &[Ext],
    upper: (u8, &[u8]),
    hop_limit: u8,
) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(upper.0, |n| n.number());
        body.extend(e.bytes(next));
    }
    body.extend_from_slice(upper.1);
    let first = exts.first().map_or(upper.0, |e| e.number());
    let mut f = ethernet(tags, 0x86DD);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(body.len() as u16).to_be_bytes());
    f.push(first);
    f.push(hop_limit);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(
        &"2001:2::1"
            .parse::<Ipv6Addr>()
            .expect("valid address")
            .octets(),
    );
    f.extend(body);
    f
}

/// A UDP packet from `src` over IPv6, no extension headers.
pub fn v6(src: Ipv6Addr) -> Vec<u8> {
    v6_with(&[], src, &[], (17, &udp()), 64)
}

/// An ICMPv6 message of `icmp_type`.
pub fn icmpv6(src: Ipv6Addr, icmp_type: u8, hop_limit: u8) -> Vec<u8> {
    v6_with(
        &[],
        src,
        &[],
        (58, &[icmp_type, 0, 0, 0, 0, 0, 0, 0]),
        hop_limit,
    )
}

/// An ARP request.
pub fn arp() -> Vec<u8> {
    let mut f = ethernet(&[], 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[198, 18, 0, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[198, 18, 0, 1]);
    f
}

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88A8;
