//! DShield `block.txt`: `#` comments, a `Start End Netblock ...` header, then tab-separated
//! rows of start address, end address and prefix length (attack counts and contact details
//! follow and are ignored). When start and end disagree with the prefix, the range wins.

use ipnet::IpNet;

use super::parse::{Line, ParsedFeed};

pub(crate) fn line(line: &str, feed: &mut ParsedFeed) -> Line {
    let data = line.trim();
    if data.is_empty() || data.starts_with('#') || data.starts_with("Start") {
        return Line::Skip;
    }
    let mut fields = data.split('\t').map(str::trim);
    let (Some(start), Some(end), Some(prefix)) = (fields.next(), fields.next(), fields.next())
    else {
        return Line::Bad;
    };
    let (Ok(start), Ok(end), Ok(prefix)) = (
        start.parse::<std::net::IpAddr>(),
        end.parse::<std::net::IpAddr>(),
        prefix.parse::<u8>(),
    ) else {
        return Line::Bad;
    };
    let Ok(net) = IpNet::new(start, prefix) else {
        return Line::Bad;
    };
    if net.network() == start && net.broadcast() == end {
        feed.nets.push(net);
        return Line::Good;
    }
    match super::netset::range_to_nets(start, end) {
        Some(list) => {
            feed.stats.host_bits += 1;
            feed.nets.extend(list);
            Line::Good
        }
        None => Line::Bad,
    }
}

#[cfg(test)]
mod tests {
    use crate::feeds::parse::{parse, Format};

    #[test]
    fn block_txt_rows() {
        let body = "#\n#   DShield.org Recommended Block List\n#\n\
                    Start\tEnd\tNetblock\tAttacks\tName\tCountry\temail\n\
                    80.82.77.0\t80.82.77.255\t24\t1842\tExample\tNL\tabuse@example.net\n\
                    45.143.200.0\t45.143.200.255\t24\t900\n\
                    10.0.0.1\tnope\t24\n";
        let (format, feed) = parse(body, Format::Auto).expect("dshield parses");
        assert_eq!(format, Format::Dshield);
        let got: Vec<String> = feed.nets.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["45.143.200.0/24", "80.82.77.0/24"]);
        assert_eq!(feed.stats.bad_lines, 1);
    }
}
