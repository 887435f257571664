//! Carrying out what a playbook fired: bans and throttles at the NIC, webhook notifications.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use ipnet::IpNet;
use serde::Serialize;
use tracing::{info, warn};

use super::{
    config::{Action, Channel},
    engine::{escalated_ttl, Firing},
};
use crate::xdp::{apply, clock, maps::EdgeMaps, maps::MapsError};

/// The NIC operations a playbook needs; the pinned maps in production, a recorder in tests.
pub trait Edge {
    fn ban(&mut self, source: IpNet, ttl: Duration) -> Result<(), MapsError>;
    fn throttle(
        &mut self,
        source: IpNet,
        pps: u64,
        burst: u64,
        ttl: Duration,
    ) -> Result<(), MapsError>;
}

impl Edge for EdgeMaps {
    fn ban(&mut self, source: IpNet, ttl: Duration) -> Result<(), MapsError> {
        crate::xdp::ops::ban(self, source, ttl)
    }

    fn throttle(
        &mut self,
        source: IpNet,
        pps: u64,
        burst: u64,
        ttl: Duration,
    ) -> Result<(), MapsError> {
        let (interval, tolerance) = apply::gcra(&crate::config::EdgeRate {
            packets_per_second: pps,
            burst,
            ipv6_prefix: 64,
        });
        self.throttle_set(
            source,
            waf_common::Throttle {
                rate_interval_ns: interval,
                rate_tolerance_ns: tolerance,
                expires_ns: clock::deadline_ns(ttl),
            },
        )
    }
}

/// The JSON body a notification channel receives.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Notification {
    pub playbook: String,
    pub severity: String,
    pub source: String,
    pub blocked_requests: u64,
    pub actions: Vec<String>,
}

/// What was done, for events and the caller's bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    Banned {
        source: IpNet,
        ttl: Duration,
    },
    Throttled {
        source: IpNet,
        pps: u64,
        ttl: Duration,
    },
    Notify {
        channel: String,
        notification: Notification,
    },
    Logged,
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

fn describe(a: &Action, previous_bans: u32) -> String {
    match a {
        Action::EdgeBan {
            ttl,
            escalation_factor,
            max_ttl,
        } => format!(
            "edge_ban {}s",
            escalated_ttl(*ttl, *escalation_factor, *max_ttl, previous_bans).as_secs()
        ),
        Action::Throttle {
            packets_per_second,
            ttl,
            ..
        } => {
            format!("throttle {packets_per_second}/s for {}s", ttl.as_secs())
        }
        Action::Notify { channels } => format!("notify {}", channels.join(",")),
        Action::Log => "log".to_owned(),
    }
}

/// Applies the NIC actions of `firing` at once and returns the notifications still to send.
pub fn apply(edge: &mut dyn Edge, firing: &Firing) -> Vec<Done> {
    let source = host_net(firing.source);
    let summary: Vec<String> = firing
        .actions
        .iter()
        .map(|a| describe(a, firing.previous_bans))
        .collect();
    let mut done = Vec::new();
    for action in &firing.actions {
        match action {
            Action::EdgeBan {
                ttl,
                escalation_factor,
                max_ttl,
            } => {
                let ttl = escalated_ttl(*ttl, *escalation_factor, *max_ttl, firing.previous_bans);
                match edge.ban(source, ttl) {
                    Ok(()) => done.push(Done::Banned { source, ttl }),
                    Err(e) => {
                        warn!(playbook = %firing.playbook, client.ip = %firing.source, error = %e, "playbook ban failed")
                    }
                }
            }
            Action::Throttle {
                packets_per_second,
                burst,
                ttl,
            } => match edge.throttle(source, *packets_per_second, *burst, *ttl) {
                Ok(()) => done.push(Done::Throttled {
                    source,
                    pps: *packets_per_second,
                    ttl: *ttl,
                }),
                Err(e) => {
                    warn!(playbook = %firing.playbook, client.ip = %firing.source, error = %e, "playbook throttle failed")
                }
            },
            Action::Notify { channels } => {
                for channel in channels {
                    done.push(Done::Notify {
                        channel: channel.clone(),
                        notification: Notification {
                            playbook: firing.playbook.clone(),
                            severity: firing.severity.clone(),
                            source: firing.source.to_string(),
                            blocked_requests: firing.count,
                            actions: summary.clone(),
                        },
                    });
                }
            }
            Action::Log => {
                info!(playbook = %firing.playbook, severity = %firing.severity, client.ip = %firing.source, count = firing.count, "playbook tier reached");
                done.push(Done::Logged);
            }
        }
    }
    done
}

/// Posts a notification to its channel's webhook; failures are logged, never fatal.
pub async fn notify(
    client: &reqwest::Client,
    channels: &BTreeMap<String, Channel>,
    channel: &str,
    n: &Notification,
) -> bool {
    let Some(c) = channels.get(channel) else {
        warn!(channel, "notification channel not configured");
        return false;
    };
    let mut req = client.post(&c.url).json(n).timeout(Duration::from_secs(5));
    for (k, v) in &c.headers {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            warn!(
                channel,
                status = r.status().as_u16(),
                "notification refused"
            );
            false
        }
        Err(e) => {
            warn!(channel, error = %e, "notification failed");
            false
        }
    }
}
