//! The CrowdSec LAPI decision stream (`GET /v1/decisions/stream`): `new` and `deleted`
//! decision lists, either of which may be null. Only `ban` decisions with the `Ip` or
//! `Range` scope are taken; others are counted as bad records. Durations are Go-style
//! (`3h59m58.123s`) and become ban lifetimes.

use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::parse::{entry, Decisions, FeedBan, ParseError, ParsedFeed};

#[derive(Deserialize)]
struct Stream {
    #[serde(default)]
    new: Option<Vec<Decision>>,
    #[serde(default)]
    deleted: Option<Vec<Decision>>,
}

#[derive(Deserialize)]
struct Decision {
    #[serde(default)]
    scope: String,
    #[serde(default)]
    value: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    duration: String,
}

/// Parses a Go duration (`1h2m3.5s`, `300ms`, `-2s`) into nanoseconds.
pub fn go_duration_ns(s: &str) -> Option<i64> {
    go_parse_duration::parse_duration(s.trim()).ok()
}

fn target(d: &Decision, feed: &mut ParsedFeed) -> Option<IpNet> {
    let scope = d.scope.to_ascii_lowercase();
    if scope != "ip" && scope != "range" {
        return None;
    }
    let before = feed.nets.len();
    if !entry(d.value.trim(), feed) {
        return None;
    }
    let net = feed.nets.pop();
    if feed.nets.len() != before {
        feed.nets.truncate(before);
        return None;
    }
    net
}

pub(crate) fn parse(body: &str, feed: &mut ParsedFeed) -> Result<(), ParseError> {
    let stream: Stream = serde_json::from_str(body.trim()).map_err(ParseError::Json)?;
    let mut decisions = Decisions::default();
    for d in stream.new.unwrap_or_default() {
        feed.stats.records += 1;
        let ttl = go_duration_ns(&d.duration)
            .and_then(|ns| u64::try_from(ns).ok())
            .filter(|ns| *ns > 0);
        match (d.kind.eq_ignore_ascii_case("ban"), target(&d, feed), ttl) {
            (true, Some(net), Some(ns)) => decisions.new.push(FeedBan {
                net,
                ttl: Duration::from_nanos(ns),
            }),
            _ => feed.stats.bad_lines += 1,
        }
    }
    for d in stream.deleted.unwrap_or_default() {
        feed.stats.records += 1;
        match target(&d, feed) {
            Some(net) => decisions.deleted.push(net),
            None => feed.stats.bad_lines += 1,
        }
    }
    feed.decisions = Some(decisions);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::feeds::parse::{parse, Format};

    #[test]
    fn stream_with_new_ranges_and_null_deleted() {
        let body = r#"{"new":[
            {"duration":"3h59m58.5s","id":1,"origin":"crowdsec","scenario":"ssh-bf","scope":"Ip","type":"ban","value":"192.0.2.7"},
            {"duration":"24h","id":2,"origin":"lists","scenario":"x","scope":"Range","type":"ban","value":"2001:db8:66::/48"},
            {"duration":"1h","id":3,"origin":"crowdsec","scenario":"x","scope":"Ip","type":"captcha","value":"192.0.2.8"},
            {"duration":"1h","id":4,"origin":"crowdsec","scenario":"x","scope":"Country","type":"ban","value":"FR"}
        ],"deleted":null}"#;
        let (format, feed) = parse(body, Format::Auto).expect("stream parses");
        assert_eq!(format, Format::Crowdsec);
        let d = feed.decisions.expect("decisions present");
        assert_eq!(d.new.len(), 2);
        assert_eq!(d.new[0].net.to_string(), "192.0.2.7/32");
        assert_eq!(
            d.new[0].ttl,
            Duration::from_millis((3 * 3600 + 59 * 60 + 58) * 1000 + 500)
        );
        assert_eq!(d.new[1].net.to_string(), "2001:db8:66::/48");
        assert_eq!(d.new[1].ttl, Duration::from_secs(24 * 3600));
        assert!(d.deleted.is_empty());
        assert_eq!(feed.stats.bad_lines, 2);
        assert!(feed.nets.is_empty(), "decisions are bans, not deny entries");
    }

    #[test]
    fn stream_with_null_new_and_deletions() {
        let body = r#"{"new":null,"deleted":[{"duration":"-2s","scope":"ip","type":"ban","value":"192.0.2.7"}]}"#;
        let (_, feed) = parse(body, Format::Crowdsec).expect("stream parses");
        let d = feed.decisions.expect("decisions present");
        assert!(d.new.is_empty());
        assert_eq!(
            d.deleted,
            vec!["192.0.2.7/32".parse::<ipnet::IpNet>().unwrap()]
        );
    }

    #[test]
    fn stream_that_is_not_json_fails_whole() {
        assert!(parse("<html>", Format::Crowdsec).is_err());
    }
}
