//! The inspection engine: every active rule compiled into one `RegexSet` per decoding
//! pipeline, so a benign value costs one pass per pipeline; libinjection for SQL injection
//! and XSS; structural anomalies; CRS-style anomaly scoring with paranoia levels; exceptions.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use regex::{RegexSet, RegexSetBuilder};

use super::{
    detect,
    exceptions::Exception,
    parse::{extract, Anomaly, Input, Target},
    request::RequestView,
    rules::{load_dir, Action, Category, Rule, RuleSet, RulesError, Transform},
    sanitize::Strategy,
    timestamp::now_unix,
    transforms::apply,
    uploads::FileInfo,
};
use crate::config::{raw::RawRuleCategory, Config, WafMode};

/// A rule's score when its file gives none: CRS's "critical".
pub const DEFAULT_SCORE: u32 = 5;
/// The blocking threshold when the configuration gives none: one critical match blocks.
pub const DEFAULT_THRESHOLD: u32 = 5;

/// Longest excerpt of a matched value kept for events.
const EXCERPT: usize = 80;

/// One rule that matched one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub rule_id: String,
    pub rule_name: String,
    pub category: Category,
    pub score: u32,
    pub action: Action,
    pub target: Target,
    /// The argument, cookie or header name the value came from.
    pub name: String,
    pub excerpt: String,
    pub log: bool,
}

/// What the engine decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing matched.
    Pass,
    /// Something matched; it is reported and the request forwarded unchanged.
    Monitor,
    /// XSS matches are stripped and escaped, then the request is forwarded.
    Sanitize,
    Block,
    /// The request is malformed in a way that different servers read differently (400).
    Reject,
}

/// The result of inspecting one request.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Every match that counted, first match of each rule only.
    pub matches: Vec<Match>,
    /// Rule ids whose matches an exception lifted.
    pub excepted: Vec<String>,
    pub score: u32,
    pub verdict: Verdict,
    /// The path with dot segments resolved.
    pub path: String,
    /// The arguments to sanitise when the verdict is `Sanitize`, each with its strategy.
    pub sanitize_args: Vec<(String, Strategy)>,
    /// Files uploaded in a multipart body.
    pub files: Vec<FileInfo>,
}

impl Inspection {
    /// The match that decided the verdict: the highest-scoring acting one.
    pub fn primary(&self) -> Option<&Match> {
        self.matches.iter().max_by_key(|m| (m.action, m.score))
    }
}

struct Group {
    transforms: Vec<Transform>,
    set: RegexSet,
    rules: Vec<usize>,
    targets: Vec<Target>,
}

/// The compiled rules and policy.
pub struct Engine {
    mode: WafMode,
    paranoia: u8,
    threshold: u32,
    rules: Vec<Rule>,
    groups: Vec<Group>,
    category_actions: HashMap<Category, Action>,
    disabled: Vec<Category>,
    exceptions: Vec<Exception>,
    runtime: super::exceptions::RuntimeExceptions,
}

impl Engine {
    /// Builds the engine from the agent's configuration and its rules directory
    /// (`waf.rules.dir`, default `rules/`, relative to the configuration's directory).
    /// When no directory is named and the default one does not exist (the embedded default
    /// configuration on a host without /etc/waf-agent), the rules built into the binary
    /// are used: the same files as `config/rules/`.
    pub fn from_config(config: &Config) -> Result<Engine, RulesError> {
        let dir = rules_dir(config);
        if config.rules.dir.is_none() && !dir.exists() {
            return Engine::new(
                config,
                crate::inspect::rules::load_texts(SHIPPED_RULES.iter().copied())?,
            );
        }
        Engine::new(config, load_dir(&dir)?)
    }

    /// Builds the engine from rules already loaded.
    pub fn new(config: &Config, set: RuleSet) -> Result<Engine, RulesError> {
        let r = &config.rules;
        let mut category_actions = HashMap::new();
        let mut disabled = Vec::new();
        let switches: [(Category, &Option<RawRuleCategory>); 4] = [
            (Category::SqlInjection, &r.sql_injection),
            (Category::Xss, &r.xss_protection),
            (Category::PathTraversal, &r.path_traversal),
            (Category::CommandInjection, &r.command_injection),
        ];
        for (category, switch) in switches {
            let Some(s) = switch else { continue };
            if !s.enabled {
                disabled.push(category);
            }
            if let Some(a) = s.action.as_deref().and_then(Action::parse) {
                category_actions.insert(category, a);
            }
        }
        let paranoia = r.paranoia_level.unwrap_or(1).clamp(1, 4);
        let rules: Vec<Rule> = set
            .rules
            .into_iter()
            .filter(|rule| rule.paranoia_level <= paranoia && !disabled.contains(&rule.category))
            .collect();
        let mut by_pipeline: BTreeMap<Vec<Transform>, Vec<usize>> = BTreeMap::new();
        for (i, rule) in rules.iter().enumerate() {
            // In the order the rule wrote them: `[remove_comments, compress_whitespace]` is
            // not the same pipeline as the reverse.
            let mut t: Vec<Transform> = Vec::with_capacity(rule.transforms.len());
            for x in &rule.transforms {
                if !t.contains(x) {
                    t.push(*x);
                }
            }
            by_pipeline.entry(t).or_default().push(i);
        }
        let mut groups = Vec::new();
        for (transforms, idx) in by_pipeline {
            let set = RegexSetBuilder::new(idx.iter().map(|&i| &rules[i].pattern))
                .size_limit(1 << 26)
                .dfa_size_limit(1 << 26)
                .build()
                .map_err(|e| {
                    RulesError::Invalid(vec![crate::config::Problem {
                        path: "rule set".to_owned(),
                        message: e.to_string(),
                    }])
                })?;
            let mut targets: Vec<Target> = idx
                .iter()
                .flat_map(|&i| rules[i].targets.iter().map(|t| t.target))
                .collect();
            targets.sort_by_key(|t| *t as u8);
            targets.dedup();
            groups.push(Group {
                transforms,
                set,
                rules: idx,
                targets,
            });
        }
        Ok(Engine {
            mode: config.mode,
            paranoia,
            threshold: r.anomaly_threshold.unwrap_or(DEFAULT_THRESHOLD),
            rules,
            groups,
            category_actions,
            disabled,
            exceptions: set.exceptions,
            runtime: Default::default(),
        })
    }

    /// Consults `list` too, the exceptions operators add at run time.
    pub fn with_runtime_exceptions(mut self, list: super::exceptions::RuntimeExceptions) -> Engine {
        self.runtime = list;
        self
    }

    /// The compiled rules, for listing.
    pub fn rules(&self) -> &[super::rules::Rule] {
        &self.rules
    }

    /// Exceptions from rule files.
    pub fn file_exceptions(&self) -> &[Exception] {
        &self.exceptions
    }

    pub fn mode(&self) -> WafMode {
        self.mode
    }

    pub fn paranoia_level(&self) -> u8 {
        self.paranoia
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The action a match of this rule asks for under the current mode.
    fn action_for(&self, category: Category, rule_action: Option<Action>) -> Action {
        if let Some(a) = rule_action.or_else(|| self.category_actions.get(&category).copied()) {
            return a;
        }
        match (self.mode, category) {
            (WafMode::Sanitize, Category::Xss) => Action::Sanitize,
            _ => Action::Block,
        }
    }

    /// Inspects one request.
    pub fn inspect(&self, req: &RequestView) -> Inspection {
        let extracted = extract(req);
        let mut found: Vec<Match> = Vec::new();
        let mut reject = false;
        for group in &self.groups {
            for input in &extracted.inputs {
                if input.value.is_empty() || !group.targets.contains(&input.target) {
                    continue;
                }
                let value = apply(&group.transforms, &input.value);
                for hit in group.set.matches(&value).iter() {
                    let rule = &self.rules[group.rules[hit]];
                    if !rule
                        .targets
                        .iter()
                        .any(|t| t.covers(input.target, &input.name))
                    {
                        continue;
                    }
                    let action = self.action_for(rule.category, rule.action);
                    push(
                        &mut found,
                        &rule.id,
                        &rule.name,
                        rule.category,
                        rule.score,
                        action,
                        input,
                        rule.log,
                    );
                }
            }
        }
        for input in &extracted.inputs {
            for d in detect::libinjection(input) {
                if self.disabled.contains(&d.category) {
                    continue;
                }
                let action = self.action_for(d.category, None);
                push(
                    &mut found, d.id, d.name, d.category, None, action, input, true,
                );
            }
        }
        for anomaly in &extracted.anomalies {
            let d = detect::anomaly(anomaly);
            if self.disabled.contains(&d.category) {
                continue;
            }
            if matches!(anomaly, Anomaly::Multipart(_)) {
                reject = true;
            }
            let input = Input {
                target: d.target,
                name: String::new(),
                value: d.detail.to_owned(),
            };
            let action = self.action_for(d.category, None);
            push(
                &mut found, d.id, d.name, d.category, None, action, &input, true,
            );
        }
        let files = extracted
            .parts
            .iter()
            .filter_map(FileInfo::from_part)
            .collect();
        let mut inspection = self.decide(found, extracted.path, req, reject);
        inspection.files = files;
        inspection
    }

    fn decide(
        &self,
        found: Vec<Match>,
        path: String,
        req: &RequestView,
        reject: bool,
    ) -> Inspection {
        let now = now_unix();
        let mut matches = Vec::new();
        let mut excepted = Vec::new();
        let runtime = self
            .runtime
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for m in found {
            let lifted = self
                .exceptions
                .iter()
                .chain(runtime.iter().map(|(_, e)| e))
                .any(|e| e.applies(&m.rule_id, &path, &m.name, req.client_ip, now));
            if lifted {
                excepted.push(m.rule_id);
            } else {
                matches.push(m);
            }
        }
        let acting = matches.iter().filter(|m| m.action != Action::Monitor);
        let score: u32 = acting.clone().map(|m| m.score).sum();
        let strongest = acting.map(|m| m.action).max();
        let mut verdict = match strongest {
            _ if matches.is_empty() => Verdict::Pass,
            _ if self.mode == WafMode::Monitor => Verdict::Monitor,
            _ if reject => Verdict::Reject,
            Some(a) if score >= self.threshold => match a {
                Action::Block => Verdict::Block,
                Action::Sanitize => Verdict::Sanitize,
                Action::Monitor => Verdict::Monitor,
            },
            _ => Verdict::Monitor,
        };
        let mut sanitize_args: Vec<(String, Strategy)> = Vec::new();
        if verdict == Verdict::Sanitize {
            for m in matches.iter().filter(|m| m.action == Action::Sanitize) {
                if m.target == Target::Args {
                    let strategy = Strategy::of(
                        self.rules
                            .iter()
                            .find(|r| r.id == m.rule_id)
                            .and_then(|r| r.sanitize_strategy.as_deref()),
                    );
                    // Two rules on one argument: the stricter strategy.
                    match sanitize_args.iter_mut().find(|(n, _)| *n == m.name) {
                        Some((_, s)) => *s = (*s).max(strategy),
                        None => sanitize_args.push((m.name.clone(), strategy)),
                    }
                } else {
                    // Only argument values can be rewritten; markup anywhere else is blocked.
                    verdict = Verdict::Block;
                }
            }
        }
        Inspection {
            matches,
            excepted,
            score,
            verdict,
            path,
            sanitize_args,
            files: Vec::new(),
        }
    }
}

/// The files of `config/rules/`, built in.
pub const SHIPPED_RULES: &[(&str, &str)] = &[
    (
        "command_injection.yaml",
        include_str!("../../../config/rules/command_injection.yaml"),
    ),
    ("java.yaml", include_str!("../../../config/rules/java.yaml")),
    (
        "path_traversal.yaml",
        include_str!("../../../config/rules/path_traversal.yaml"),
    ),
    ("php.yaml", include_str!("../../../config/rules/php.yaml")),
    (
        "protocol.yaml",
        include_str!("../../../config/rules/protocol.yaml"),
    ),
    ("rfi.yaml", include_str!("../../../config/rules/rfi.yaml")),
    (
        "sql_injection.yaml",
        include_str!("../../../config/rules/sql_injection.yaml"),
    ),
    ("xss.yaml", include_str!("../../../config/rules/xss.yaml")),
];

/// The rules directory a configuration names.
pub fn rules_dir(config: &Config) -> PathBuf {
    let base = &config.base_dir;
    config
        .rules
        .dir
        .as_deref()
        .map_or_else(|| base.join("rules"), |d| base.join(d))
}

#[expect(clippy::too_many_arguments, reason = "one flat record of a match")]
fn push(
    found: &mut Vec<Match>,
    id: &str,
    name: &str,
    category: Category,
    score: Option<u32>,
    action: Action,
    input: &Input,
    log: bool,
) {
    if found.iter().any(|m| m.rule_id == id) {
        return;
    }
    found.push(Match {
        rule_id: id.to_owned(),
        rule_name: name.to_owned(),
        category,
        score: score.unwrap_or(DEFAULT_SCORE),
        action,
        target: input.target,
        name: input.name.clone(),
        excerpt: input.value.chars().take(EXCERPT).collect(),
        log,
    });
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("mode", &self.mode)
            .field("paranoia", &self.paranoia)
            .field("threshold", &self.threshold)
            .field("rules", &self.rules.len())
            .finish()
    }
}
