//! The checks that decide whether a fetched list replaces the last good one. A rejected
//! list changes nothing in the maps: the feed keeps its last good list.

use super::{event::FailureKind, parse::ParsedFeed};

/// Why a body or its parse was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("empty body")]
    Empty,
    #[error("html page instead of a list")]
    Html,
    #[error("body cut off mid-line")]
    Truncated,
    #[error("feed declares {declared} records, {seen} were read")]
    CountMismatch { declared: u64, seen: u64 },
    #[error("{now} entries is under {min_keep_fraction} of the last good {previous}")]
    Shrink {
        previous: usize,
        now: usize,
        min_keep_fraction: f64,
    },
    #[error("none of {records} records parsed")]
    NoValidEntries { records: u64 },
}

impl Rejection {
    pub fn kind(&self) -> FailureKind {
        match self {
            Rejection::Empty => FailureKind::Empty,
            Rejection::Html => FailureKind::Html,
            Rejection::Truncated => FailureKind::Truncated,
            Rejection::CountMismatch { .. } => FailureKind::CountMismatch,
            Rejection::Shrink { .. } => FailureKind::Shrink,
            Rejection::NoValidEntries { .. } => FailureKind::NoValidEntries,
        }
    }
}

/// Checks on the raw body, before parsing.
pub fn check_body(body: &str, content_type: Option<&str>) -> Result<(), Rejection> {
    let head = body.trim_start_matches('\u{feff}').trim_start();
    if head.is_empty() {
        return Err(Rejection::Empty);
    }
    let html_type = content_type
        .map(|c| c.to_ascii_lowercase().contains("text/html"))
        .unwrap_or(false);
    let lower: String = head
        .chars()
        .take(15)
        .collect::<String>()
        .to_ascii_lowercase();
    if html_type || lower.starts_with("<!doctype") || lower.starts_with("<html") {
        return Err(Rejection::Html);
    }
    Ok(())
}

/// Checks on the parse. `previous` is the size of the last good list, when there is one;
/// decision streams are deltas and skip the shrink check.
pub fn check_parsed(
    feed: &ParsedFeed,
    previous: Option<usize>,
    min_keep_fraction: f64,
) -> Result<(), Rejection> {
    let s = &feed.stats;
    if s.truncated {
        return Err(Rejection::Truncated);
    }
    if let Some(declared) = s.declared_records {
        if declared != s.records {
            return Err(Rejection::CountMismatch {
                declared,
                seen: s.records,
            });
        }
    }
    if feed.decisions.is_some() {
        return Ok(());
    }
    if feed.nets.is_empty() && s.records > 0 {
        return Err(Rejection::NoValidEntries { records: s.records });
    }
    if let Some(previous) = previous.filter(|p| *p > 0) {
        let now = feed.nets.len();
        if (now as f64) < previous as f64 * min_keep_fraction {
            return Err(Rejection::Shrink {
                previous,
                now,
                min_keep_fraction,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::parse::{parse, Format};

    #[test]
    fn html_error_page_is_refused() {
        assert_eq!(
            check_body("\n<!DOCTYPE html><html>504</html>", None),
            Err(Rejection::Html)
        );
        assert_eq!(
            check_body("1.2.3.4\n", Some("text/html; charset=utf-8")),
            Err(Rejection::Html)
        );
        assert_eq!(check_body(" \r\n", None), Err(Rejection::Empty));
        assert_eq!(check_body("1.2.3.4\n", Some("text/plain")), Ok(()));
    }

    #[test]
    fn shrink_below_fraction_is_refused() {
        let (_, feed) = parse("1.2.3.4\n", Format::Plain).expect("parses");
        assert_eq!(
            check_parsed(&feed, Some(10), 0.5),
            Err(Rejection::Shrink {
                previous: 10,
                now: 1,
                min_keep_fraction: 0.5
            })
        );
        assert_eq!(check_parsed(&feed, Some(2), 0.5), Ok(()));
        assert_eq!(check_parsed(&feed, None, 0.5), Ok(()));
    }

    #[test]
    fn declared_count_mismatch_is_refused() {
        let body = "{\"cidr\":\"1.10.16.0/20\"}\n{\"type\":\"metadata\",\"records\":2}\n";
        let (_, feed) = parse(body, Format::SpamhausJson).expect("parses");
        assert_eq!(
            check_parsed(&feed, None, 0.5),
            Err(Rejection::CountMismatch {
                declared: 2,
                seen: 1
            })
        );
    }
}
