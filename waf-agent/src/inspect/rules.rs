//! Rule files: YAML mappings whose keys are written as in the guide, `waf.rules.<category>`
//! holding a list of rules, and `waf.exceptions` holding time-boxed exceptions. Every file in
//! the rules directory is read; all problems in all files are reported together.

use std::path::Path;

use serde::Deserialize;

use super::{exceptions::Exception, parse::Target};
use crate::config::Problem;

/// The attack classes rules are grouped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    SqlInjection,
    Xss,
    PathTraversal,
    Rfi,
    CommandInjection,
    Php,
    Java,
    Protocol,
}

impl Category {
    pub fn parse(key: &str) -> Option<Category> {
        Some(match key {
            "sql_injection" | "sqli" => Category::SqlInjection,
            "xss" | "xss_protection" => Category::Xss,
            "path_traversal" | "lfi" => Category::PathTraversal,
            "rfi" => Category::Rfi,
            "command_injection" | "rce" => Category::CommandInjection,
            "php" => Category::Php,
            "java" => Category::Java,
            "protocol" => Category::Protocol,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Category::SqlInjection => "sql_injection",
            Category::Xss => "xss",
            Category::PathTraversal => "path_traversal",
            Category::Rfi => "rfi",
            Category::CommandInjection => "command_injection",
            Category::Php => "php",
            Category::Java => "java",
            Category::Protocol => "protocol",
        }
    }

    /// Where a rule of this category looks when its file names no targets.
    pub fn default_targets(self) -> Vec<TargetSpec> {
        let mut t = vec![
            Target::Args,
            Target::ArgNames,
            Target::Cookies,
            Target::Body,
            Target::Filenames,
        ];
        if matches!(self, Category::PathTraversal | Category::Protocol) {
            t.push(Target::Path);
        }
        t.into_iter().map(TargetSpec::all).collect()
    }
}

/// What a matched rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Monitor,
    Sanitize,
    Block,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "block" | "blocking" | "deny" => Action::Block,
            "sanitize" => Action::Sanitize,
            "monitor" | "log" => Action::Monitor,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Sanitize => "sanitize",
            Action::Monitor => "monitor",
        }
    }
}

/// A target, optionally narrowed to one header (`header:user-agent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub target: Target,
    pub name: Option<String>,
}

impl TargetSpec {
    pub fn all(target: Target) -> TargetSpec {
        TargetSpec { target, name: None }
    }

    fn parse(s: &str) -> Option<TargetSpec> {
        if let Some(h) = s.strip_prefix("header:") {
            return Some(TargetSpec {
                target: Target::Headers,
                name: Some(h.to_ascii_lowercase()),
            });
        }
        let target = serde_norway::from_str::<Target>(s).ok()?;
        Some(TargetSpec::all(target))
    }

    pub fn covers(&self, target: Target, name: &str) -> bool {
        self.target == target && self.name.as_deref().is_none_or(|n| n == name)
    }
}

/// Extra decoding a rule asks for before its pattern is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    HtmlEntityDecode,
    JsDecode,
    CompressWhitespace,
    RemoveComments,
    /// Drops what a shell removes before running a word: quotes, backslashes, carets and
    /// empty expansions (`c'a't`, `c\at`, `ca$()t`, `ca$@t`).
    ShellNormalize,
}

/// One rule as written in a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    pattern: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    score: Option<u32>,
    #[serde(default)]
    sanitize_strategy: Option<String>,
    #[serde(default)]
    log: Option<bool>,
    #[serde(default)]
    targets: Option<Vec<String>>,
    #[serde(default)]
    paranoia_level: Option<u8>,
    #[serde(default)]
    transforms: Vec<Transform>,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub category: Category,
    /// The pattern with its flags folded in as an inline group.
    pub pattern: String,
    pub score: Option<u32>,
    pub action: Option<Action>,
    pub sanitize_strategy: Option<String>,
    pub log: bool,
    pub targets: Vec<TargetSpec>,
    pub paranoia_level: u8,
    pub transforms: Vec<Transform>,
}

/// The contents of a rules directory.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub exceptions: Vec<Exception>,
}

/// Why the rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The directory could not be listed or a file read.
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Files were read, and these entries are wrong.
    #[error("{} problem(s) in the rules: {}", .0.len(), .0.iter().map(|p| format!("{}: {}", p.path, p.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}

/// Loads every `.yaml`/`.yml` file of a directory, in name order.
pub fn load_dir(dir: &Path) -> Result<RuleSet, RulesError> {
    let read_err = |source| RulesError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut texts = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| RulesError::Read {
            path: f.display().to_string(),
            source,
        })?;
        texts.push((f.display().to_string(), text));
    }
    load_texts(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())))
}

/// Loads rule files given as (name, text) pairs.
pub fn load_texts<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<RuleSet, RulesError> {
    let mut set = RuleSet::default();
    let mut problems = Vec::new();
    for (file, text) in files {
        load_one(file, text, &mut set, &mut problems);
    }
    for (i, r) in set.rules.iter().enumerate() {
        if set.rules[..i].iter().any(|o| o.id == r.id) {
            problems.push(Problem {
                path: format!("rule {}", r.id),
                message: "the id is used twice".to_owned(),
            });
        }
    }
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(RulesError::Invalid(problems))
    }
}

fn load_one(file: &str, text: &str, set: &mut RuleSet, problems: &mut Vec<Problem>) {
    let mut problem = |path: String, message: String| problems.push(Problem { path, message });
    let doc: serde_norway::Mapping = match serde_norway::from_str(text) {
        Ok(d) => d,
        Err(e) => return problem(file.to_owned(), e.to_string()),
    };
    for (key, value) in doc {
        let key = match key {
            serde_norway::Value::String(k) => k,
            other => {
                problem(
                    file.to_owned(),
                    format!("top-level key {other:?} is not a string"),
                );
                continue;
            }
        };
        let at = format!("{file}: {key}");
        if key == "waf.exceptions" {
            match serde_norway::from_value::<Vec<super::exceptions::RawException>>(value) {
                Ok(list) => {
                    for (i, raw) in list.into_iter().enumerate() {
                        match Exception::check(raw) {
                            Ok(e) => set.exceptions.push(e),
                            Err(m) => problem(format!("{at}[{i}]"), m),
                        }
                    }
                }
                Err(e) => problem(at, e.to_string()),
            }
            continue;
        }
        let Some(category) = key.strip_prefix("waf.rules.").and_then(Category::parse) else {
            problem(
                at,
                "expected waf.rules.<sql_injection|xss|path_traversal|rfi|command_injection|php|java|protocol> or waf.exceptions".to_owned(),
            );
            continue;
        };
        let list: Vec<RawRule> = match serde_norway::from_value(value) {
            Ok(l) => l,
            Err(e) => {
                problem(at, e.to_string());
                continue;
            }
        };
        for (i, raw) in list.into_iter().enumerate() {
            match check_rule(raw, category) {
                Ok(rule) => set.rules.push(rule),
                Err((field, m)) => problem(format!("{at}[{i}].{field}"), m),
            }
        }
    }
}

fn check_rule(raw: RawRule, category: Category) -> Result<Rule, (&'static str, String)> {
    let mut inline = String::new();
    for f in &raw.flags {
        match f.as_str() {
            "i" | "s" | "m" | "x" | "U" => inline.push_str(f),
            other => return Err(("flags", format!("{other:?} is not one of i, s, m, x, U"))),
        }
    }
    let pattern = if inline.is_empty() {
        raw.pattern.clone()
    } else {
        format!("(?{inline}){}", raw.pattern)
    };
    if let Err(e) = regex::RegexBuilder::new(&pattern)
        .size_limit(1 << 24)
        .build()
    {
        return Err(("pattern", e.to_string()));
    }
    let action = match raw.action.as_deref() {
        None => None,
        Some(a) => Some(Action::parse(a).ok_or((
            "action",
            format!("{a:?} is not one of block, sanitize, monitor"),
        ))?),
    };
    if let Some(s) = raw.sanitize_strategy.as_deref() {
        if s != "strip_tags_and_escape" && s != "escape" {
            return Err((
                "sanitize_strategy",
                format!("{s:?} is not one of strip_tags_and_escape, escape"),
            ));
        }
    }
    let targets = match &raw.targets {
        None => category.default_targets(),
        Some(list) => list
            .iter()
            .map(|t| {
                TargetSpec::parse(t).ok_or((
                    "targets",
                    format!(
                        "{t:?} is not one of path, args, arg_names, cookies, headers, \
                         header:<name>, body, filenames"
                    ),
                ))
            })
            .collect::<Result<_, _>>()?,
    };
    let paranoia_level = raw.paranoia_level.unwrap_or(1);
    if !(1..=4).contains(&paranoia_level) {
        return Err(("paranoia_level", "must be 1 to 4".to_owned()));
    }
    Ok(Rule {
        name: raw
            .name
            .or(raw.description)
            .unwrap_or_else(|| raw.id.clone()),
        id: raw.id,
        category,
        pattern,
        score: raw.score,
        action,
        sanitize_strategy: raw.sanitize_strategy,
        log: raw.log.unwrap_or(true),
        targets,
        paranoia_level,
        transforms: raw.transforms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three fragments of the security guide, byte for byte.
    pub const GUIDE: &str = r#"waf.rules.sql_injection:
  - id: sqli-001
    description: "Basic SQL injection pattern detection (UNION/SELECT/--)"
    pattern: "(\\b(select|union|insert|update|delete)\\b.*\\b(from|into|where)\\b|--|;|/\\*|\\*/)"
    flags: ["i"]
    action: block
    score: 80
waf.rules.xss:
  - id: xss-001
    description: "Inline script tags and event handlers"
    pattern: "<(script|img|iframe)[\\s>]|on\\w+\\s*=\\s*['\\\"]"
    action: sanitize
    sanitize_strategy: "strip_tags_and_escape"
waf.rules.path_traversal:
  - id: pt-001
    pattern: "(\\.{2}/|/\\.{2})"
    action: block
    log: true
"#;

    #[test]
    fn the_guides_rule_fragments_load_as_written() {
        let set = load_texts([("guide.yaml", GUIDE)]).expect("the guide's rules must load");
        let ids: Vec<_> = set.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["sqli-001", "xss-001", "pt-001"]);
        assert_eq!(set.rules[0].score, Some(80));
        assert_eq!(set.rules[0].category, Category::SqlInjection);
        assert_eq!(set.rules[1].action, Some(Action::Sanitize));
        assert_eq!(set.rules[2].name, "pt-001");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = "waf.rules.xss:\n  - id: a\n    pattern: \"(\"\n  - id: b\n    pattern: x\n    action: explode\nwaf.rules.nope: []\n";
        let Err(RulesError::Invalid(p)) = load_texts([("f.yaml", text)]) else {
            panic!("bad rules must be refused");
        };
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "f.yaml: waf.rules.xss[0].pattern",
                "f.yaml: waf.rules.xss[1].action",
                "f.yaml: waf.rules.nope"
            ]
        );
    }

    #[test]
    fn unknown_rule_keys_are_refused() {
        let text = "waf.rules.xss:\n  - id: a\n    pattern: x\n    scroe: 5\n";
        assert!(
            load_texts([("f.yaml", text)]).is_err(),
            "a typo must not be ignored"
        );
    }

    #[test]
    fn shipped_rules_directory_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules");
        let set = load_dir(&dir).expect("config/rules must load");
        assert!(
            set.rules.len() >= 20,
            "only {} rules loaded",
            set.rules.len()
        );
    }
}
