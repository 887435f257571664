//! The GeoLite2 country CSV pair: `Country-Locations-*.csv` maps `geoname_id` to
//! `country_iso_code`; `Country-Blocks-IPv4/IPv6.csv` map `network` to a `geoname_id`, or
//! to `registered_country_geoname_id` when the first is empty. Columns are found by their
//! header names, so extra columns (`is_anycast`) do not matter.

use std::{collections::HashMap, path::Path};

use ipnet::IpNet;

use super::GeoError;

/// Splits one CSV line into fields, honouring double quotes (`"Korea, Republic of"`).
pub fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn read(path: &Path) -> Result<String, GeoError> {
    std::fs::read_to_string(path).map_err(|source| GeoError::Read {
        path: path.to_owned(),
        source,
    })
}

fn column(header: &[String], name: &'static str, path: &Path) -> Result<usize, GeoError> {
    header
        .iter()
        .position(|h| h.trim() == name)
        .ok_or_else(|| GeoError::Column {
            path: path.to_owned(),
            column: name,
        })
}

/// `geoname_id` to ISO country code.
pub fn locations(path: &Path) -> Result<HashMap<String, String>, GeoError> {
    let text = read(path)?;
    let mut lines = text.lines();
    let header = fields(lines.next().unwrap_or(""));
    let id = column(&header, "geoname_id", path)?;
    let iso = column(&header, "country_iso_code", path)?;
    let mut map = HashMap::new();
    for line in lines {
        let f = fields(line.trim_end_matches('\r'));
        if let (Some(id), Some(iso)) = (f.get(id), f.get(iso)) {
            if !iso.is_empty() {
                map.insert(id.clone(), iso.to_ascii_uppercase());
            }
        }
    }
    Ok(map)
}

/// Calls `pick` with every block's prefix and country; returns the rows that could not be
/// read.
pub fn blocks(
    path: &Path,
    countries: &HashMap<String, String>,
    pick: &mut dyn FnMut(IpNet, &str),
) -> Result<u64, GeoError> {
    let text = read(path)?;
    let mut lines = text.lines();
    let header = fields(lines.next().unwrap_or(""));
    let network = column(&header, "network", path)?;
    let geo = column(&header, "geoname_id", path)?;
    let registered = column(&header, "registered_country_geoname_id", path)?;
    let mut bad = 0;
    for line in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let f = fields(line);
        let net = f.get(network).and_then(|n| n.parse::<IpNet>().ok());
        let id = f
            .get(geo)
            .filter(|g| !g.is_empty())
            .or_else(|| f.get(registered).filter(|g| !g.is_empty()));
        match (net, id.and_then(|id| countries.get(id))) {
            (Some(net), Some(country)) => pick(net.trunc(), country),
            (Some(_), None) if id.is_none() => {}
            _ => bad += 1,
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::fields;

    #[test]
    fn quoted_fields_keep_their_commas() {
        assert_eq!(
            fields(r#"1835841,en,AS,Asia,KR,"Korea, Republic of",0"#),
            [
                "1835841",
                "en",
                "AS",
                "Asia",
                "KR",
                "Korea, Republic of",
                "0"
            ]
        );
        assert_eq!(fields(r#"a,"say ""hi""",,"#), ["a", "say \"hi\"", "", ""]);
    }
}
