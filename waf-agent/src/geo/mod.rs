//! Geo-blocking: country lists turned into prefixes, from a GeoLite2-format country CSV
//! pair (`csv.rs`) or an MMDB file (`mmdb.rs`). Denied countries join the deny list,
//! allowed countries join the allow list (and so win over feeds and denied countries).

pub mod csv;
pub mod mmdb;

use std::{collections::BTreeSet, path::PathBuf};

use ipnet::IpNet;

/// Where the country database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeoSource {
    /// GeoLite2 `Country-Blocks-IPv4.csv`, `Country-Blocks-IPv6.csv` (either may be
    /// absent) and `Country-Locations-en.csv`.
    Csv {
        blocks_ipv4: Option<PathBuf>,
        blocks_ipv6: Option<PathBuf>,
        locations: PathBuf,
    },
    Mmdb(PathBuf),
}

/// The geo block of the config: a database and the countries to deny or allow (ISO 3166
/// alpha-2 codes, upper case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoConfig {
    pub source: GeoSource,
    pub deny_countries: BTreeSet<String>,
    pub allow_countries: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: missing column {column}")]
    Column { path: PathBuf, column: &'static str },
    #[error("cannot read mmdb {path}")]
    Mmdb {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
}

/// Prefixes by verdict, with counts for status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoLists {
    pub deny: Vec<IpNet>,
    pub allow: Vec<IpNet>,
    /// Rows or records that could not be read.
    pub bad_records: u64,
}

/// Loads the database and picks the configured countries' prefixes.
pub fn load(config: &GeoConfig) -> Result<GeoLists, GeoError> {
    let mut lists = GeoLists::default();
    let mut pick = |net: IpNet, country: &str| {
        if config.allow_countries.contains(country) {
            lists.allow.push(net);
        } else if config.deny_countries.contains(country) {
            lists.deny.push(net);
        }
    };
    let bad = match &config.source {
        GeoSource::Csv {
            blocks_ipv4,
            blocks_ipv6,
            locations,
        } => {
            let countries = csv::locations(locations)?;
            let mut bad = 0;
            for blocks in [blocks_ipv4, blocks_ipv6].into_iter().flatten() {
                bad += csv::blocks(blocks, &countries, &mut pick)?;
            }
            bad
        }
        GeoSource::Mmdb(path) => mmdb::networks(path, &mut pick)?,
    };
    lists.bad_records = bad;
    crate::feeds::netset::normalize(&mut lists.deny);
    crate::feeds::netset::normalize(&mut lists.allow);
    Ok(lists)
}
