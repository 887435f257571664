//! A minimal MaxMind DB writer for tests: an IPv6 tree (IPv4 under `::/96`), 24-bit
//! records, and GeoIP2-Country-shaped records `{"country": {"iso_code": ..}}`. Just
//! enough of the format for `maxminddb` to read back what the tests wrote.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(u32),
    Data(u32),
}

fn string(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 29, "short strings only");
    out.push(0x40 | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn map(out: &mut Vec<u8>, n: u8) {
    out.push(0xe0 | n);
}

fn u16_(out: &mut Vec<u8>, v: u16) {
    out.push(0xa0 | 2);
    out.extend_from_slice(&v.to_be_bytes());
}

fn u32_(out: &mut Vec<u8>, v: u32) {
    out.push(0xc0 | 4);
    out.extend_from_slice(&v.to_be_bytes());
}

fn u64_(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&[8, 9 - 7]);
    out.extend_from_slice(&v.to_be_bytes());
}

fn array(out: &mut Vec<u8>, n: u8) {
    out.extend_from_slice(&[n, 11 - 7]);
}

/// Builds a database mapping each prefix to a country code.
pub fn build(entries: &[(IpNet, &str)]) -> Vec<u8> {
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    let mut data = Vec::new();
    for (net, iso) in entries {
        let offset = data.len() as u32;
        map(&mut data, 1);
        string(&mut data, "country");
        map(&mut data, 1);
        string(&mut data, "iso_code");
        string(&mut data, iso);
        let (bits, len) = match net.network() {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 96 + net.prefix_len()),
            IpAddr::V6(a) => (u128::from(a), net.prefix_len()),
        };
        let mut node = 0usize;
        for i in 0..len {
            let bit = ((bits >> (127 - i)) & 1) as usize;
            if i + 1 == len {
                nodes[node][bit] = Rec::Data(offset);
                break;
            }
            node = match nodes[node][bit] {
                Rec::Node(n) => n as usize,
                _ => {
                    nodes.push([Rec::Empty, Rec::Empty]);
                    let n = nodes.len() - 1;
                    nodes[node][bit] = Rec::Node(n as u32);
                    n
                }
            };
        }
    }
    let count = nodes.len() as u32;
    let mut out = Vec::new();
    for pair in &nodes {
        for rec in pair {
            let v = match rec {
                Rec::Empty => count,
                Rec::Node(n) => *n,
                Rec::Data(off) => count + 16 + off,
            };
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
    map(&mut out, 9);
    string(&mut out, "binary_format_major_version");
    u16_(&mut out, 2);
    string(&mut out, "binary_format_minor_version");
    u16_(&mut out, 0);
    string(&mut out, "build_epoch");
    u64_(&mut out, 1_800_000_000);
    string(&mut out, "database_type");
    string(&mut out, "Test-Country");
    string(&mut out, "description");
    map(&mut out, 1);
    string(&mut out, "en");
    string(&mut out, "test database");
    string(&mut out, "ip_version");
    u16_(&mut out, 6);
    string(&mut out, "languages");
    array(&mut out, 1);
    string(&mut out, "en");
    string(&mut out, "node_count");
    u32_(&mut out, count);
    string(&mut out, "record_size");
    u16_(&mut out, 24);
    out
}
