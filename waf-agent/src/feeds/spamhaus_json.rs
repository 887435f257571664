//! Spamhaus DROP JSON lines: `{"cidr": "...", "sblid": "...", "rir": "..."}` records and a
//! trailing `{"type": "metadata", "records": N, ...}` record declaring the count.

use serde::Deserialize;

use super::parse::{entry, Line, ParsedFeed};

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(default, borrow)]
    cidr: Option<&'a str>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(default)]
    records: Option<u64>,
}

pub(crate) fn line(line: &str, feed: &mut ParsedFeed) -> Line {
    let data = line.trim();
    if data.is_empty() {
        return Line::Skip;
    }
    let Ok(record) = serde_json::from_str::<Record<'_>>(data) else {
        return Line::Bad;
    };
    if record.kind == Some("metadata") {
        return match record.records {
            Some(n) => Line::Declared(n),
            None => Line::Skip,
        };
    }
    match record.cidr {
        Some(cidr) if entry(cidr.trim(), feed) => Line::Good,
        _ => Line::Bad,
    }
}

#[cfg(test)]
mod tests {
    use crate::feeds::parse::{parse, Format};

    #[test]
    fn json_lines_with_metadata_record() {
        let body = "{\"cidr\":\"1.10.16.0/20\",\"sblid\":\"SBL256894\",\"rir\":\"apnic\"}\n\
                    {\"cidr\":\"2a06:e480::/29\",\"sblid\":\"SBL301771\",\"rir\":\"ripencc\"}\n\
                    {\"cidr\":17}\n\
                    {\"type\":\"metadata\",\"timestamp\":1764547200,\"size\":190,\"records\":3,\"copyright\":\"(c) 2026 The Spamhaus Project SLU\",\"terms\":\"https://www.spamhaus.org/drop/terms/\"}\n";
        let (format, feed) = parse(body, Format::Auto).expect("json parses");
        assert_eq!(format, Format::SpamhausJson);
        let got: Vec<String> = feed.nets.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["1.10.16.0/20", "2a06:e480::/29"]);
        assert_eq!(feed.stats.records, 3);
        assert_eq!(feed.stats.bad_lines, 1);
        assert_eq!(feed.stats.declared_records, Some(3));
    }
}
