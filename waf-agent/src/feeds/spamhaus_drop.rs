//! Spamhaus DROP/EDROP text: `CIDR ; SBLid` lines and `;` comments.

use super::parse::{entry, Line, ParsedFeed};

pub(crate) fn line(line: &str, feed: &mut ParsedFeed) -> Line {
    let data = match line.split_once(';') {
        Some((data, _)) => data,
        None => line,
    };
    let data = data.trim();
    if data.is_empty() {
        return Line::Skip;
    }
    if data.contains(char::is_whitespace) || !entry(data, feed) {
        return Line::Bad;
    }
    Line::Good
}

#[cfg(test)]
mod tests {
    use crate::feeds::parse::{parse, Format};

    #[test]
    fn drop_text_with_sbl_ids() {
        let body = "; Spamhaus DROP List 2026/12/01\r\n; Last-Modified: Tue, 01 Dec 2026\r\n\
                    1.10.16.0/20 ; SBL256894\r\n2.56.192.0/22 ; SBL459831\r\nbogus ; SBL1\r\n";
        let (format, feed) = parse(body, Format::Auto).expect("drop parses");
        assert_eq!(format, Format::SpamhausDrop);
        let got: Vec<String> = feed.nets.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["1.10.16.0/20", "2.56.192.0/22"]);
        assert_eq!(feed.stats.bad_lines, 1);
        assert_eq!(feed.stats.records, 3);
    }
}
