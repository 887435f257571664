//! Playbook definitions as written in YAML, and their checked form.
//!
//! The default set is the security guide's alerting playbook for WAF blocks: more than 100
//! unique blocked requests from one source in 10 minutes bans it at the NIC for an hour and
//! notifies; 20 to 100 throttles it and notifies; anything less is logged.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use crate::config::Problem;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlaybooks {
    #[serde(default)]
    pub playbooks: Vec<RawPlaybook>,
    /// Named notification channels: each a webhook (email and SMS gateways included).
    #[serde(default)]
    pub channels: BTreeMap<String, RawChannel>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlaybook {
    pub name: String,
    #[serde(default = "ten")]
    pub window_minutes: u64,
    pub tiers: Vec<RawTier>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    /// `high` | `medium` | `low` (or any label; it appears in events and notifications).
    pub severity: String,
    /// Fires when the count of unique blocked requests in the window exceeds this.
    #[serde(default)]
    pub above: Option<u64>,
    /// Fires when the count reaches this.
    #[serde(default)]
    pub at_least: Option<u64>,
    /// Written as `- edge_ban: {...}` or `- log`, not as YAML tags.
    #[serde(default, with = "serde_norway::with::singleton_map_recursive")]
    pub actions: Vec<RawAction>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawAction {
    EdgeBan {
        ttl_minutes: u64,
        /// Each further ban of the same source multiplies the TTL by this.
        #[serde(default)]
        escalation_factor: Option<u32>,
        #[serde(default)]
        max_ttl_minutes: Option<u64>,
    },
    Throttle {
        packets_per_second: u64,
        burst: u64,
        ttl_minutes: u64,
    },
    Notify {
        channels: Vec<String>,
    },
    Log,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn ten() -> u64 {
    10
}

/// Playbooks and their notification channels, as one file defines them.
pub type PlaybookFile = (Vec<Playbook>, BTreeMap<String, Channel>);

/// A checked playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub name: String,
    pub window: Duration,
    /// Highest threshold first.
    pub tiers: Vec<Tier>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub severity: String,
    /// The count of unique blocked requests at which the tier fires.
    pub threshold: u64,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    EdgeBan {
        ttl: Duration,
        escalation_factor: u32,
        max_ttl: Duration,
    },
    Throttle {
        packets_per_second: u64,
        burst: u64,
        ttl: Duration,
    },
    Notify {
        channels: Vec<String>,
    },
    Log,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub url: String,
    pub headers: BTreeMap<String, String>,
}

pub const DEFAULT_PLAYBOOKS: &str = include_str!("../../../config/playbooks.yaml");

/// Parses and checks playbooks; every problem is reported with its path.
pub fn parse(text: &str) -> Result<PlaybookFile, Vec<Problem>> {
    let de = serde_norway::Deserializer::from_str(text);
    let raw: RawPlaybooks = serde_path_to_error::deserialize(de).map_err(|e| {
        vec![Problem {
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        }]
    })?;
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, p) in raw.playbooks.iter().enumerate() {
        let base = format!("playbooks[{i}]");
        if p.window_minutes == 0 {
            problems.push(Problem {
                path: format!("{base}.window_minutes"),
                message: "must be above 0".into(),
            });
        }
        let mut tiers = Vec::new();
        for (j, t) in p.tiers.iter().enumerate() {
            let path = format!("{base}.tiers[{j}]");
            let threshold = match (t.above, t.at_least) {
                (Some(a), None) => a + 1,
                (None, Some(n)) if n > 0 => n,
                _ => {
                    problems.push(Problem {
                        path: path.clone(),
                        message: "needs exactly one of `above` or `at_least` (at least 1)".into(),
                    });
                    continue;
                }
            };
            let mut actions = Vec::new();
            for (k, a) in t.actions.iter().enumerate() {
                let apath = format!("{path}.actions[{k}]");
                match a {
                    RawAction::EdgeBan {
                        ttl_minutes,
                        escalation_factor,
                        max_ttl_minutes,
                    } => {
                        if *ttl_minutes == 0 {
                            problems.push(Problem {
                                path: apath,
                                message: "ttl_minutes must be above 0".into(),
                            });
                            continue;
                        }
                        let ttl = Duration::from_secs(ttl_minutes * 60);
                        actions.push(Action::EdgeBan {
                            ttl,
                            escalation_factor: escalation_factor.unwrap_or(2).max(1),
                            max_ttl: max_ttl_minutes
                                .map_or(ttl * 24, |m| Duration::from_secs(m * 60)),
                        });
                    }
                    RawAction::Throttle {
                        packets_per_second,
                        burst,
                        ttl_minutes,
                    } => {
                        if *packets_per_second == 0 || *ttl_minutes == 0 {
                            problems.push(Problem {
                                path: apath,
                                message: "packets_per_second and ttl_minutes must be above 0"
                                    .into(),
                            });
                            continue;
                        }
                        actions.push(Action::Throttle {
                            packets_per_second: *packets_per_second,
                            burst: (*burst).max(1),
                            ttl: Duration::from_secs(ttl_minutes * 60),
                        });
                    }
                    RawAction::Notify { channels } => {
                        for (c, name) in channels.iter().enumerate() {
                            if !raw.channels.contains_key(name) {
                                problems.push(Problem {
                                    path: format!("{apath}.notify.channels[{c}]"),
                                    message: format!(
                                        "{name:?} is not a channel defined under `channels`"
                                    ),
                                });
                            }
                        }
                        actions.push(Action::Notify {
                            channels: channels.clone(),
                        });
                    }
                    RawAction::Log => actions.push(Action::Log),
                }
            }
            tiers.push(Tier {
                severity: t.severity.clone(),
                threshold,
                actions,
            });
        }
        tiers.sort_by_key(|t| std::cmp::Reverse(t.threshold));
        out.push(Playbook {
            name: p.name.clone(),
            window: Duration::from_secs(p.window_minutes * 60),
            tiers,
        });
    }
    let mut channels = BTreeMap::new();
    for (name, c) in raw.channels {
        if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
            problems.push(Problem {
                path: format!("channels.{name}.url"),
                message: format!("{:?} is not an http(s) URL", c.url),
            });
        }
        channels.insert(
            name,
            Channel {
                url: c.url,
                headers: c.headers,
            },
        );
    }
    if problems.is_empty() {
        Ok((out, channels))
    } else {
        Err(problems)
    }
}
