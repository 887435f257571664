//! Feed bodies into prefix lists: the formats, their detection, and the counts that
//! validation and status report. A bad line is skipped and counted, never fatal; only a
//! body that is not the declared structure at all (a CrowdSec answer that is not JSON)
//! fails as a whole.

use std::time::Duration;

use ipnet::IpNet;

use super::{crowdsec, dshield, plain, spamhaus_drop, spamhaus_json};

/// A feed's format, declared in the config or detected from the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Auto,
    /// One address, prefix or `a-b` range a line, `#` comments (FireHOL, Emerging Threats).
    Plain,
    /// `CIDR ; SBLid`, `;` comments.
    SpamhausDrop,
    /// JSON lines `{"cidr": ...}` ending with a `{"type":"metadata", "records": N}` record.
    SpamhausJson,
    /// DShield `block.txt`: tab-separated start, end, prefix length.
    Dshield,
    /// CrowdSec LAPI `/v1/decisions/stream` answer.
    Crowdsec,
}

impl Format {
    pub fn from_config(s: &str) -> Option<Format> {
        Some(match s {
            "auto" => Format::Auto,
            "plain" => Format::Plain,
            "spamhaus_drop" => Format::SpamhausDrop,
            "spamhaus_json" => Format::SpamhausJson,
            "dshield" => Format::Dshield,
            "crowdsec" => Format::Crowdsec,
            _ => return None,
        })
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Plain => "plain",
            Format::SpamhausDrop => "spamhaus_drop",
            Format::SpamhausJson => "spamhaus_json",
            Format::Dshield => "dshield",
            Format::Crowdsec => "crowdsec",
        }
    }

    /// Guesses the format from the first meaningful line of the body.
    pub fn detect(body: &str) -> Format {
        let head = body.trim_start_matches('\u{feff}').trim_start();
        if head.starts_with('{') {
            let first = head.lines().next().unwrap_or("");
            if first.contains("\"cidr\"") || first.contains("\"metadata\"") {
                return Format::SpamhausJson;
            }
            return Format::Crowdsec;
        }
        for line in head.lines().take(200) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with(';') {
                return Format::SpamhausDrop;
            }
            if line.starts_with('#') {
                continue;
            }
            if line.contains(';') {
                return Format::SpamhausDrop;
            }
            if line.split('\t').count() >= 3 {
                return Format::Dshield;
            }
            return Format::Plain;
        }
        Format::Plain
    }
}

/// A timed ban carried by a feed (CrowdSec `new` decisions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedBan {
    pub net: IpNet,
    pub ttl: Duration,
}

/// CrowdSec decisions: bans to add and bans the LAPI has withdrawn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    pub new: Vec<FeedBan>,
    pub deleted: Vec<IpNet>,
}

/// Counts a parse leaves for validation, status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Data records seen (lines or JSON records that are neither comments nor metadata).
    pub records: u64,
    pub bad_lines: u64,
    /// Prefixes written with host bits set, truncated to their network.
    pub host_bits: u64,
    /// Entries dropped as duplicates or because another entry covers them.
    pub duplicates: u64,
    /// The record count the feed declares about itself, when it does.
    pub declared_records: Option<u64>,
    /// The body ends without a newline and its last line did not parse: cut off in transit.
    pub truncated: bool,
}

/// A parsed feed: sorted, with duplicates and covered prefixes dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedFeed {
    pub nets: Vec<IpNet>,
    pub decisions: Option<Decisions>,
    pub stats: ParseStats,
}

/// The body is not the declared structure at all.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A CrowdSec answer that is not a decision stream object.
    #[error("not a decision stream")]
    Json(#[source] serde_json::Error),
}

/// Parses a body in the given format (`Auto` detects it).
pub fn parse(body: &str, format: Format) -> Result<(Format, ParsedFeed), ParseError> {
    let format = match format {
        Format::Auto => Format::detect(body),
        f => f,
    };
    let mut feed = ParsedFeed::default();
    match format {
        Format::Auto | Format::Plain => lines(body, &mut feed, plain::line),
        Format::SpamhausDrop => lines(body, &mut feed, spamhaus_drop::line),
        Format::SpamhausJson => lines(body, &mut feed, spamhaus_json::line),
        Format::Dshield => lines(body, &mut feed, dshield::line),
        Format::Crowdsec => crowdsec::parse(body, &mut feed)?,
    }
    feed.stats.duplicates += super::netset::normalize(&mut feed.nets) as u64;
    Ok((format, feed))
}

/// What one line was.
pub(crate) enum Line {
    /// A comment, header or blank line.
    Skip,
    /// A data record that parsed (its prefixes are pushed already).
    Good,
    /// A data record that did not parse.
    Bad,
    /// A record describing the feed itself, with its declared record count.
    Declared(u64),
}

fn lines(body: &str, feed: &mut ParsedFeed, per_line: fn(&str, &mut ParsedFeed) -> Line) {
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    let mut last_bad = false;
    for raw in body.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        last_bad = false;
        match per_line(line, feed) {
            Line::Skip => {}
            Line::Good => feed.stats.records += 1,
            Line::Bad => {
                feed.stats.records += 1;
                feed.stats.bad_lines += 1;
                last_bad = true;
            }
            Line::Declared(n) => feed.stats.declared_records = Some(n),
        }
    }
    feed.stats.truncated = last_bad && !body.ends_with('\n');
}

/// Parses one address, prefix (host bits truncated and counted) or `a-b` range into `out`.
pub(crate) fn entry(token: &str, feed: &mut ParsedFeed) -> bool {
    if let Some((a, b)) = token.split_once('-') {
        let (Ok(a), Ok(b)) = (a.trim().parse(), b.trim().parse()) else {
            return false;
        };
        return match super::netset::range_to_nets(a, b) {
            Some(list) => {
                feed.nets.extend(list);
                true
            }
            None => false,
        };
    }
    if token.contains('/') {
        let Ok(net) = token.parse::<IpNet>() else {
            return false;
        };
        let trunc = net.trunc();
        if trunc != net {
            feed.stats.host_bits += 1;
        }
        feed.nets.push(unmap(trunc));
        return true;
    }
    match token.parse::<std::net::IpAddr>() {
        Ok(addr) => {
            feed.nets.push(unmap(IpNet::from(addr)));
            true
        }
        Err(_) => false,
    }
}

/// An IPv4-mapped IPv6 prefix (`::ffff:192.0.2.1`) as the IPv4 prefix it stands for: the
/// kernel sees those packets as IPv4 and would never match the IPv6 form.
fn unmap(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if let (Some(v4), true) = (n.network().to_ipv4_mapped(), n.prefix_len() >= 96) {
            if let Ok(v4net) = ipnet::Ipv4Net::new(v4, n.prefix_len() - 96) {
                return IpNet::V4(v4net);
            }
        }
    }
    net
}
