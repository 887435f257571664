//! The extra decodings a rule can ask for (`transforms:`), applied to a value before the
//! rule's pattern set runs on it.

use super::{
    normalize::{html_entity_decode, js_decode},
    rules::Transform,
};

/// Applies a rule group's transforms in order.
pub fn apply(transforms: &[Transform], value: &str) -> String {
    let mut v = value.to_owned();
    for t in transforms {
        v = match t {
            Transform::HtmlEntityDecode => html_entity_decode(&v),
            Transform::JsDecode => js_decode(&v),
            Transform::CompressWhitespace => v.split_whitespace().collect::<Vec<_>>().join(" "),
            Transform::RemoveComments => remove_comments(&v),
            Transform::ShellNormalize => shell_normalize(&v),
        };
    }
    v
}

/// See `Transform::ShellNormalize`.
fn shell_normalize(v: &str) -> String {
    v.replace("$()", "")
        .replace("${}", "")
        .replace("$@", "")
        .chars()
        .filter(|c| !matches!(c, '\'' | '"' | '\\' | '^'))
        .collect()
}

/// Drops `/* ... */` comments, which SQL treats as whitespace (`UN/**/ION`).
fn remove_comments(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find("*/") {
            Some(end) => rest = &rest[start + 2 + end + 2..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_comments_and_shell_quoting_are_removed() {
        assert_eq!(
            apply(&[Transform::RemoveComments], "UN/**/ION SEL/*x*/ECT"),
            "UNION SELECT"
        );
        assert_eq!(
            apply(&[Transform::ShellNormalize], "c'a't /e\\tc/pa$()sswd"),
            "cat /etc/passwd"
        );
        assert_eq!(apply(&[Transform::CompressWhitespace], " a \t\n b "), "a b");
    }
}
