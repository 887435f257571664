//! The request pre-processor: turns what a client sent into what an application will see,
//! so that an encoding trick cannot carry a payload past the rules. Every decoder here is
//! total: bad input is kept as literal bytes, never an error.

/// How many rounds of percent-decoding are applied before giving up. Three rounds undo
/// double and triple encoding; a value still changing after that is flagged by the caller.
pub const MAX_DECODE_ROUNDS: usize = 3;

/// A decoded value and whether decoding stopped at the bound while it was still changing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub text: String,
    pub exhausted: bool,
}

/// Percent-decodes to a fixed point (at most `MAX_DECODE_ROUNDS` rounds), with `%uXXXX`,
/// then folds overlong UTF-8 forms, replaces invalid UTF-8 with U+FFFD and strips NUL.
/// `plus_is_space` applies to form and query values, once, before the first round.
pub fn decode_value(raw: &[u8], plus_is_space: bool) -> Decoded {
    let mut bytes: Vec<u8> = if plus_is_space {
        raw.iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect()
    } else {
        raw.to_vec()
    };
    let mut exhausted = false;
    for round in 0..=MAX_DECODE_ROUNDS {
        let next = fold_overlong(&percent_decode_once(&bytes));
        if next == bytes {
            break;
        }
        if round == MAX_DECODE_ROUNDS {
            exhausted = true;
            break;
        }
        bytes = next;
    }
    let mut text = String::from_utf8_lossy(&bytes).replace('\0', "");
    if bytes.contains(&0xEF) {
        text = fold_fullwidth(&text);
    }
    Decoded { text, exhausted }
}

/// Maps fullwidth forms (U+FF01 to U+FF5E, `＜script＞`) to the ASCII they mirror, as
/// best-fit code page conversions and Unicode-folding back ends do.
pub fn fold_fullwidth(text: &str) -> String {
    text.chars()
        .map(|c| match u32::from(c) {
            cp @ 0xFF01..=0xFF5E => char::from_u32(cp - 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// One round of `%XX` and `%uXXXX` decoding; malformed escapes stay as they are.
pub fn percent_decode_once(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            if let (Some(h), Some(l)) = (hex_at(input, i + 1), hex_at(input, i + 2)) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            if matches!(input.get(i + 1), Some(b'u' | b'U')) {
                let digits: Option<Vec<u8>> = (2..6).map(|k| hex_at(input, i + k)).collect();
                if let Some(d) = digits {
                    let cp = d.iter().fold(0u32, |acc, &x| acc << 4 | u32::from(x));
                    let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    i += 6;
                    continue;
                }
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn hex_at(input: &[u8], i: usize) -> Option<u8> {
    let b = *input.get(i)?;
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Rewrites overlong UTF-8 sequences (`C0 AE` for `.`, `E0 80 AF` for `/`) as the ASCII or
/// shortest form they stand for. Decoders that accept them exist; the rules must see what
/// such a decoder would.
pub fn fold_overlong(input: &[u8]) -> Vec<u8> {
    let cont = |b: Option<&u8>| b.is_some_and(|b| b & 0xC0 == 0x80);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        let cp = if (b == 0xC0 || b == 0xC1) && cont(input.get(i + 1)) {
            let cp = (u32::from(b & 0x1F) << 6) | u32::from(input[i + 1] & 0x3F);
            Some((cp, 2))
        } else if b == 0xE0
            && input.get(i + 1).is_some_and(|&c| (0x80..0xA0).contains(&c))
            && cont(input.get(i + 2))
        {
            let cp = (u32::from(input[i + 1] & 0x3F) << 6) | u32::from(input[i + 2] & 0x3F);
            Some((cp, 3))
        } else if b == 0xF0
            && input.get(i + 1).is_some_and(|&c| (0x80..0x90).contains(&c))
            && cont(input.get(i + 2))
            && cont(input.get(i + 3))
        {
            let cp = (u32::from(input[i + 1] & 0x3F) << 12)
                | (u32::from(input[i + 2] & 0x3F) << 6)
                | u32::from(input[i + 3] & 0x3F);
            Some((cp, 4))
        } else {
            None
        };
        match cp.and_then(|(cp, n)| char::from_u32(cp).map(|c| (c, n))) {
            Some((c, n)) => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += n;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The path as an application resolving it would act on it, before dot segments are
/// removed: decoded, backslashes as slashes, `;` parameters dropped from each segment and
/// repeated slashes collapsed. Traversal rules match this form, where `../` is still visible.
pub fn decode_path(raw: &str) -> Decoded {
    let d = decode_value(raw.as_bytes(), false);
    let unified = d.text.replace('\\', "/");
    let segments: Vec<&str> = unified
        .split('/')
        .map(|s| s.split_once(';').map_or(s, |(s, _)| s))
        .filter(|s| !s.is_empty())
        .collect();
    let mut out = String::with_capacity(unified.len());
    if unified.starts_with('/') {
        out.push('/');
    }
    out.push_str(&segments.join("/"));
    if unified.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    Decoded {
        text: out,
        exhausted: d.exhausted,
    }
}

/// Removes `.` and `..` segments. Returns the resolved path and whether a `..` tried to climb
/// above the root, which no legitimate link does.
pub fn resolve_dots(decoded: &str) -> (String, bool) {
    let mut stack: Vec<&str> = Vec::new();
    let mut escaped = false;
    for segment in decoded.split('/') {
        match segment.trim() {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    escaped = true;
                }
            }
            _ => stack.push(segment),
        }
    }
    let mut path = String::from("/");
    path.push_str(&stack.join("/"));
    if decoded.ends_with('/') && path.len() > 1 {
        path.push('/');
    }
    (path, escaped)
}

/// Decodes HTML character references: the five XML names, `&nbsp;`, decimal and hex forms
/// with or without the final `;`.
pub fn html_entity_decode(input: &str) -> String {
    if !input.contains('&') {
        return input.to_owned();
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        match decode_entity(rest) {
            Some((c, used)) => {
                out.push(c);
                rest = &rest[used..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(s: &str) -> Option<(char, usize)> {
    // Entities browsers also accept without the `;`, then HTML5 ones that need it.
    const NAMED: [(&str, char, bool); 15] = [
        ("&lt", '<', false),
        ("&gt", '>', false),
        ("&quot", '"', false),
        ("&apos", '\'', false),
        ("&amp", '&', false),
        ("&nbsp", ' ', false),
        ("&colon", ':', false),
        ("&lpar", '(', false),
        ("&rpar", ')', false),
        ("&tab;", '\t', true),
        ("&newline;", '\n', true),
        ("&semi;", ';', true),
        ("&sol;", '/', true),
        ("&grave;", '`', true),
        ("&excl;", '!', true),
    ];
    for (name, c, exact) in NAMED {
        let prefix = s.as_bytes().get(..name.len());
        if prefix.is_some_and(|p| p.eq_ignore_ascii_case(name.as_bytes())) {
            let used = if exact {
                name.len()
            } else {
                name.len() + usize::from(s[name.len()..].starts_with(';'))
            };
            return Some((c, used));
        }
    }
    let body = s.strip_prefix("&#")?;
    let (radix, digits_start) = match body.as_bytes().first() {
        Some(b'x' | b'X') => (16, 3),
        _ => (10, 2),
    };
    let digits: String = s[digits_start..]
        .chars()
        .take_while(|c| c.is_digit(radix))
        .take(8)
        .collect();
    if digits.is_empty() {
        return None;
    }
    let cp = u32::from_str_radix(&digits, radix).ok()?;
    let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
    let mut used = digits_start + digits.len();
    if s[used..].starts_with(';') {
        used += 1;
    }
    Some((c, used))
}

/// Decodes JavaScript escapes: `\xHH`, `\uHHHH`, `\u{H..}` and the one-letter escapes.
pub fn js_decode(input: &str) -> String {
    if !input.contains('\\') {
        return input.to_owned();
    }
    let chars: Vec<char> = input.chars().collect();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let hex = |from: usize, n: usize| -> Option<u32> {
        let s: String = chars.get(from..from + n)?.iter().collect();
        u32::from_str_radix(&s, 16).ok()
    };
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            let decoded = match chars[i + 1] {
                'x' => hex(i + 2, 2).map(|cp| (cp, 4)),
                'u' if chars.get(i + 2) == Some(&'{') => {
                    let end = chars[i + 3..].iter().position(|&c| c == '}');
                    end.and_then(|e| hex(i + 3, e).map(|cp| (cp, e + 4)))
                }
                'u' => hex(i + 2, 4).map(|cp| (cp, 6)),
                'n' => Some((u32::from('\n'), 2)),
                't' => Some((u32::from('\t'), 2)),
                'r' => Some((u32::from('\r'), 2)),
                _ => None,
            };
            if let Some((cp, used)) = decoded {
                out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                i += used;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_encoding_is_decoded_to_a_fixed_point() {
        let d = decode_value(b"%252e%252e%252f", false);
        assert_eq!(d.text, "../");
        assert!(!d.exhausted);
    }

    #[test]
    fn encoding_deeper_than_the_bound_is_flagged() {
        let d = decode_value(b"%25252525252e", false);
        assert!(
            d.exhausted,
            "five layers must exhaust three rounds, got {d:?}"
        );
    }

    #[test]
    fn percent_u_and_plus_are_decoded() {
        assert_eq!(decode_value(b"%u003cscript%u003e", false).text, "<script>");
        assert_eq!(decode_value(b"a+b", true).text, "a b");
        assert_eq!(decode_value(b"a+b", false).text, "a+b");
    }

    #[test]
    fn overlong_utf8_dot_and_slash_fold_to_ascii() {
        assert_eq!(decode_value(b"%c0%ae%c0%ae%c0%af", false).text, "../");
        assert_eq!(decode_value(b"%e0%80%ae%e0%80%ae/", false).text, "../");
    }

    #[test]
    fn null_bytes_are_stripped_and_invalid_utf8_replaced() {
        assert_eq!(decode_value(b"un%00ion", false).text, "union");
        assert_eq!(decode_value(b"a%ffb", false).text, "a\u{FFFD}b");
    }

    #[test]
    fn path_tricks_are_normalised() {
        assert_eq!(decode_path("/a//b\\..;x=1/%2e%2e/c").text, "/a/b/../../c");
        assert_eq!(resolve_dots("/a/b/../../c"), ("/c".to_owned(), false));
        assert_eq!(
            resolve_dots("/../etc/passwd"),
            ("/etc/passwd".to_owned(), true)
        );
    }

    #[test]
    fn html_entities_decode_with_and_without_semicolon() {
        assert_eq!(
            html_entity_decode("&lt;svg&#x20;onload&#61;x&gt"),
            "<svg onload=x>"
        );
        assert_eq!(html_entity_decode("a & b"), "a & b");
    }

    #[test]
    fn multibyte_text_after_an_ampersand_does_not_panic() {
        assert_eq!(html_entity_decode("&wd=最流行&q"), "&wd=最流行&q");
        assert_eq!(html_entity_decode("&最"), "&最");
        assert_eq!(html_entity_decode("&#最"), "&#最");
    }

    #[test]
    fn js_escapes_decode() {
        assert_eq!(js_decode("\\x3cscript\\u003e\\u{61}"), "<script>a");
        assert_eq!(js_decode("c:\\dir"), "c:\\dir");
    }
}
