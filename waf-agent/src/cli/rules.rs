//! `waf-agent rules test FILE`: runs a raw HTTP request through the rule engine offline and
//! prints every match, the anomaly score and the verdict.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::output::print;
use crate::{
    config::{env::Overrides, Config},
    inspect::{engine::Engine, parse_raw_request},
};

#[derive(Serialize)]
struct MatchOut {
    rule_id: String,
    rule_name: String,
    category: String,
    target: String,
    name: String,
    score: u32,
    excerpt: String,
}

#[derive(Serialize)]
struct TestOut {
    file: String,
    verdict: String,
    score: u32,
    threshold: u32,
    paranoia_level: u8,
    matches: Vec<MatchOut>,
    excepted: Vec<String>,
}

pub fn test(file: &Path, config: Option<&PathBuf>, json: bool) -> anyhow::Result<()> {
    let env = Overrides::from_process();
    let config = match config {
        Some(p) => Config::load(p, &env)
            .with_context(|| format!("configuration {} refused", p.display()))?,
        None => Config::embedded_default(&env)?,
    };
    let engine = Engine::from_config(&config).context("loading the rules")?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let request = parse_raw_request(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not an HTTP request: {e}", file.display()))?;
    let inspection = engine.inspect(&request);
    let out = TestOut {
        file: file.display().to_string(),
        verdict: format!("{:?}", inspection.verdict).to_lowercase(),
        score: inspection.score,
        threshold: engine.threshold(),
        paranoia_level: engine.paranoia_level(),
        matches: inspection
            .matches
            .iter()
            .map(|m| MatchOut {
                rule_id: m.rule_id.clone(),
                rule_name: m.rule_name.clone(),
                category: m.category.name().to_owned(),
                target: format!("{:?}", m.target).to_lowercase(),
                name: m.name.clone(),
                score: m.score,
                excerpt: m.excerpt.clone(),
            })
            .collect(),
        excepted: inspection.excepted.clone(),
    };
    print(json, &out, |o| {
        let mut s = format!(
            "{}: {} (score {} of threshold {}, paranoia level {})\n",
            o.file, o.verdict, o.score, o.threshold, o.paranoia_level
        );
        if o.matches.is_empty() {
            s.push_str("  no rule matched\n");
        }
        for m in &o.matches {
            s.push_str(&format!(
                "  {:<14} {:>3}  {:<16} {} {:?}: {}\n",
                m.rule_id, m.score, m.category, m.target, m.name, m.excerpt
            ));
        }
        for id in &o.excepted {
            s.push_str(&format!("  {id} lifted by an exception\n"));
        }
        s.trim_end().to_owned()
    });
    Ok(())
}
