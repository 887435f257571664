//! The sliding-window counter behind playbooks: unique blocked requests per source, and the
//! tier each source has reached. Time is tokio's monotonic `Instant`, so tests drive it with
//! paused time and a wall-clock jump changes nothing.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
    time::Duration,
};

use tokio::time::Instant;

use super::config::{Action, Playbook};

/// What the engine decided for one source: the tier reached and its actions, once per
/// escalation to a higher tier within a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub playbook: String,
    pub severity: String,
    pub source: IpAddr,
    /// Unique blocked requests in the window when the tier fired.
    pub count: u64,
    pub actions: Vec<Action>,
    /// How many times this source has been banned by this playbook before (for escalation).
    pub previous_bans: u32,
}

#[derive(Debug, Default)]
struct SourceWindow {
    events: VecDeque<(Instant, String)>,
    ids: HashSet<String>,
    /// Threshold of the highest tier fired in the current window.
    fired: Option<u64>,
}

#[derive(Debug)]
struct Book {
    playbook: Playbook,
    sources: HashMap<IpAddr, SourceWindow>,
    bans: HashMap<IpAddr, (u32, Instant)>,
}

/// Counts blocked requests per source for every playbook.
#[derive(Debug)]
pub struct Engine {
    books: Vec<Book>,
    /// A source's ban count is forgotten after this long without a ban.
    repeat_memory: Duration,
}

impl Engine {
    pub fn new(playbooks: Vec<Playbook>) -> Engine {
        Engine {
            books: playbooks
                .into_iter()
                .map(|playbook| Book {
                    playbook,
                    sources: HashMap::new(),
                    bans: HashMap::new(),
                })
                .collect(),
            repeat_memory: Duration::from_secs(24 * 3600),
        }
    }

    /// Records one blocked request. A request id seen before in the window counts once.
    pub fn observe(&mut self, source: IpAddr, request_id: &str, now: Instant) -> Vec<Firing> {
        let memory = self.repeat_memory;
        let mut out = Vec::new();
        for book in &mut self.books {
            let window = book.playbook.window;
            let w = book.sources.entry(source).or_default();
            prune(w, now, window);
            if w.ids.insert(request_id.to_owned()) {
                w.events.push_back((now, request_id.to_owned()));
            }
            let count = w.events.len() as u64;
            let Some(tier) = book.playbook.tiers.iter().find(|t| count >= t.threshold) else {
                continue;
            };
            if w.fired.is_some_and(|f| f >= tier.threshold) {
                continue;
            }
            w.fired = Some(tier.threshold);
            book.bans
                .retain(|_, (_, at)| now.duration_since(*at) < memory);
            let previous_bans = book.bans.get(&source).map_or(0, |(n, _)| *n);
            if tier
                .actions
                .iter()
                .any(|a| matches!(a, Action::EdgeBan { .. }))
            {
                book.bans.insert(source, (previous_bans + 1, now));
                // The source is banned: its window starts over, so a repeat offence after the
                // ban counts from zero and escalates.
                book.sources.remove(&source);
            }
            out.push(Firing {
                playbook: book.playbook.name.clone(),
                severity: tier.severity.clone(),
                source,
                count,
                actions: tier.actions.clone(),
                previous_bans,
            });
        }
        out
    }

    /// Drops sources whose windows are empty; call now and then to bound memory.
    pub fn sweep(&mut self, now: Instant) {
        for book in &mut self.books {
            let window = book.playbook.window;
            book.sources.retain(|_, w| {
                prune(w, now, window);
                !w.events.is_empty()
            });
        }
    }

    /// Sources tracked, for status.
    pub fn tracked(&self) -> usize {
        self.books.iter().map(|b| b.sources.len()).sum()
    }
}

fn prune(w: &mut SourceWindow, now: Instant, window: Duration) {
    while let Some((at, _)) = w.events.front() {
        if now.duration_since(*at) >= window {
            if let Some((_, id)) = w.events.pop_front() {
                w.ids.remove(&id);
            }
        } else {
            break;
        }
    }
    if w.events.is_empty() {
        w.fired = None;
    }
}

/// The ban TTL for a source banned `previous_bans` times before: `ttl × factor^n`, capped.
pub fn escalated_ttl(ttl: Duration, factor: u32, max: Duration, previous_bans: u32) -> Duration {
    let mut t = ttl;
    for _ in 0..previous_bans {
        t = t.saturating_mul(factor);
        if t >= max {
            return max;
        }
    }
    t.min(max)
}
