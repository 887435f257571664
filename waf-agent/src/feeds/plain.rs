//! Plain lists: one address, prefix or `a.b.c.d-e.f.g.h` range a line, `#` starting a
//! comment (FireHOL netsets, Emerging Threats, hand-kept files).

use super::parse::{entry, Line, ParsedFeed};

pub(crate) fn line(line: &str, feed: &mut ParsedFeed) -> Line {
    let data = match line.split_once('#') {
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
    fn firehol_style_list_with_comments_crlf_ranges_and_host_bits() {
        let body =
            "# FireHOL level1\r\n#\r\n1.2.3.4\r\n10.0.0.1/8\r\n192.0.2.1-192.0.2.6 # range\r\n\
                    2001:db8::/32\r\nnot-an-ip\r\n1.2.3.4\r\n10.9.0.0/16\r\n";
        let (format, feed) = parse(body, Format::Auto).expect("plain parses");
        assert_eq!(format, Format::Plain);
        let got: Vec<String> = feed.nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "1.2.3.4/32",
                "10.0.0.0/8",
                "192.0.2.1/32",
                "192.0.2.2/31",
                "192.0.2.4/31",
                "192.0.2.6/32",
                "2001:db8::/32"
            ]
        );
        assert_eq!(feed.stats.records, 7);
        assert_eq!(feed.stats.bad_lines, 1);
        assert_eq!(feed.stats.host_bits, 1);
        assert_eq!(feed.stats.duplicates, 2);
        assert!(!feed.stats.truncated);
    }

    #[test]
    fn ipv4_mapped_ipv6_becomes_ipv4() {
        let (_, feed) = parse("::ffff:192.0.2.1\n::ffff:198.51.100.0/120\n", Format::Plain)
            .expect("plain parses");
        let got: Vec<String> = feed.nets.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["192.0.2.1/32", "198.51.100.0/24"]);
    }

    #[test]
    fn unterminated_last_line_that_does_not_parse_is_truncation() {
        let (_, feed) = parse("1.2.3.4\n5.6.7.", Format::Plain).expect("plain parses");
        assert!(feed.stats.truncated);
        let (_, feed) = parse("1.2.3.4\n5.6.7.8", Format::Plain).expect("plain parses");
        assert!(
            !feed.stats.truncated,
            "a complete last line without newline is fine"
        );
    }
}
