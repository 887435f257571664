//! The guide's `strip_tags_and_escape`: what sanitize mode does to a value an XSS rule
//! matched, and the rewriting of query strings and form bodies that carry such values.

use std::collections::HashSet;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::normalize::decode_value;

/// Removes everything between `<` and the next `>` (or the end), then HTML-escapes what is
/// left, so neither markup nor an attribute break-out survives.
pub fn strip_tags_and_escape(value: &str) -> String {
    let mut stripped = String::with_capacity(value.len());
    let mut in_tag = false;
    for c in value.chars() {
        match (in_tag, c) {
            (false, '<') => in_tag = true,
            (true, '>') => in_tag = false,
            (false, c) => stripped.push(c),
            (true, _) => {}
        }
    }
    escape(&stripped)
}

/// HTML-escapes `& < > " '` and backticks.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '`' => out.push_str("&#x60;"),
            c => out.push(c),
        }
    }
    out
}

/// Rewrites an urlencoded string, replacing the values of the named arguments with their
/// sanitised, re-encoded form. Other pairs are kept byte for byte.
pub fn rewrite_form(raw: &[u8], names: &HashSet<String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, pair) in raw.split(|&b| b == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(p) => (&pair[..p], Some(&pair[p + 1..])),
            None => (pair, None),
        };
        let decoded_name = decode_value(name, true).text;
        match value {
            Some(v) if names.contains(&decoded_name) => {
                let clean = strip_tags_and_escape(&decode_value(v, true).text);
                out.extend_from_slice(name);
                out.push(b'=');
                out.extend(utf8_percent_encode(&clean, NON_ALPHANUMERIC).flat_map(str::bytes));
            }
            _ => out.extend_from_slice(pair),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stripped_and_quotes_escaped() {
        assert_eq!(
            strip_tags_and_escape("hi <script>alert(1)</script>!"),
            "hi alert(1)!"
        );
        assert_eq!(
            strip_tags_and_escape("x\" onmouseover='y'"),
            "x&quot; onmouseover=&#x27;y&#x27;"
        );
        assert_eq!(strip_tags_and_escape("<img src=x onerror=alert(1)"), "");
    }

    #[test]
    fn only_named_values_are_rewritten() {
        let names = HashSet::from(["q".to_owned()]);
        let out = rewrite_form(b"a=%3Cb%3E&q=%3Cscript%3Ex&z", &names);
        assert_eq!(String::from_utf8_lossy(&out), "a=%3Cb%3E&q=x&z");
    }
}
