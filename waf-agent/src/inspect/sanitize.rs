//! The guide's `strip_tags_and_escape`: what sanitize mode does to a value an XSS rule
//! matched, and the rewriting of query strings and form bodies that carry such values.

use std::collections::HashMap;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::normalize::decode_value;

/// How a sanitising rule cleans the value it matched (`sanitize_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strategy {
    /// HTML-escape only: the text survives, markup cannot.
    Escape,
    /// Drop tags, then escape what is left (the default).
    StripTagsAndEscape,
}

impl Strategy {
    /// The rule's `sanitize_strategy`; none means the guide's `strip_tags_and_escape`.
    pub fn of(name: Option<&str>) -> Strategy {
        match name {
            Some("escape") => Strategy::Escape,
            _ => Strategy::StripTagsAndEscape,
        }
    }

    pub fn apply(self, value: &str) -> String {
        match self {
            Strategy::Escape => escape(value),
            Strategy::StripTagsAndEscape => strip_tags_and_escape(value),
        }
    }
}

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
/// form cleaned by the argument's strategy, re-encoded. Other pairs are kept byte for byte.
pub fn rewrite_form(raw: &[u8], names: &HashMap<String, Strategy>) -> Vec<u8> {
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
            Some(v) if names.contains_key(&decoded_name) => {
                let clean = names[&decoded_name].apply(&decode_value(v, true).text);
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
        let names = HashMap::from([("q".to_owned(), Strategy::StripTagsAndEscape)]);
        let out = rewrite_form(b"a=%3Cb%3E&q=%3Cscript%3Ex&z", &names);
        assert_eq!(String::from_utf8_lossy(&out), "a=%3Cb%3E&q=x&z");
    }

    #[test]
    fn escape_strategy_keeps_the_text_and_neutralises_the_markup() {
        let names = HashMap::from([("q".to_owned(), Strategy::Escape)]);
        let out = rewrite_form(b"q=%3Cb%3Ehi%3C%2Fb%3E", &names);
        assert_eq!(
            decode_value(&out[2..], true).text,
            "&lt;b&gt;hi&lt;/b&gt;",
            "escaped, not stripped"
        );
    }
}
