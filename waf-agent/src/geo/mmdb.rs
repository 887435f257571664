//! MMDB country databases (GeoLite2-Country.mmdb and compatible) through `maxminddb`.
//! Every network of the tree is visited once; in an IPv6 database the IPv4 space is read
//! through its IPv4 view, and the aliases of it (`::/96`, `::ffff:0:0/96`, `2002::/16`)
//! are skipped so that IPv4 blocks do not come out twice.

use std::path::Path;

use ipnet::IpNet;
use maxminddb::{geoip2, Reader};

use super::GeoError;

fn aliases() -> [IpNet; 3] {
    [
        IpNet::V6(ipnet::Ipv6Net::new_assert(
            std::net::Ipv6Addr::UNSPECIFIED,
            96,
        )),
        IpNet::V6(ipnet::Ipv6Net::new_assert(
            std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0),
            96,
        )),
        IpNet::V6(ipnet::Ipv6Net::new_assert(
            std::net::Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
            16,
        )),
    ]
}

/// Calls `pick` with every network and its country; returns the records that could not
/// be read.
pub fn networks(path: &Path, pick: &mut dyn FnMut(IpNet, &str)) -> Result<u64, GeoError> {
    let err = |source| GeoError::Mmdb {
        path: path.to_owned(),
        source,
    };
    let reader = Reader::open_readfile(path).map_err(err)?;
    let v6 = reader.metadata.ip_version == 6;
    let v4_root = ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::UNSPECIFIED, 0)
        .ok()
        .map(ipnetwork::IpNetwork::V4);
    let v6_root = ipnetwork::Ipv6Network::new(std::net::Ipv6Addr::UNSPECIFIED, 0)
        .ok()
        .map(ipnetwork::IpNetwork::V6)
        .filter(|_| v6);
    let aliases = aliases();
    let mut bad = 0;
    for root in [v4_root, v6_root].into_iter().flatten() {
        let within_v6 = root.is_ipv6();
        for item in reader.within::<geoip2::Country<'_>>(root).map_err(err)? {
            let Ok(item) = item else {
                bad += 1;
                continue;
            };
            let Ok(net) = IpNet::new(item.ip_net.network(), item.ip_net.prefix()) else {
                bad += 1;
                continue;
            };
            if within_v6 && aliases.iter().any(|a| a.contains(&net)) {
                continue;
            }
            let iso = item
                .info
                .country
                .as_ref()
                .and_then(|c| c.iso_code)
                .or_else(|| {
                    item.info
                        .registered_country
                        .as_ref()
                        .and_then(|c| c.iso_code)
                });
            if let Some(iso) = iso {
                pick(net.trunc(), &iso.to_ascii_uppercase());
            }
        }
    }
    Ok(bad)
}
