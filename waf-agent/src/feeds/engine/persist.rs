//! The engine's writes to the store. A failed write (a full disk) is reported once per
//! outage and retried on every tick: bans by rewriting the whole table, feeds by saving
//! their current list again.

use std::time::Duration;

use ipnet::IpNet;

use super::{Engine, FeedEvent};
use crate::{
    feeds::{event::chain, fetch::Validators, sink::EdgeSink},
    store::{BanWrite, FeedCopy, StoredBan, StoredUnban},
};

impl<S: EdgeSink> Engine<S> {
    /// Caps the store file's size; writes past it fail as on a full disk.
    pub fn set_store_max_bytes(&mut self, bytes: u64) {
        if let Err(e) = self.store.set_max_bytes(bytes) {
            tracing::warn!(error = %chain(&e), "cannot cap the store size");
        }
    }

    pub(super) fn save_copy(&mut self, name: &str, nets: Vec<IpNet>, validators: &Validators) {
        let copy = FeedCopy {
            fetched: self.clock.wall(),
            etag: validators.etag.clone(),
            last_modified: validators.last_modified.clone(),
            nets,
        };
        if let Err(e) = self.store.save_feed(name, &copy) {
            self.feeds_dirty.insert(name.to_owned());
            self.store_failed("feed", &e);
        } else {
            self.feeds_dirty.remove(name);
        }
    }

    pub(super) fn persist(&mut self, writes: Vec<BanWrite>) {
        if writes.is_empty() || !self.store.is_open() {
            return;
        }
        if self.bans_dirty {
            return;
        }
        if let Err(e) = self.store.write_bans(&writes) {
            self.bans_dirty = true;
            self.store_failed("bans", &e);
        }
    }

    pub(super) fn store_failed(&mut self, what: &'static str, e: &crate::store::StoreError) {
        if self.store_failing {
            return;
        }
        self.store_failing = true;
        tracing::warn!(store.what = what, error = %chain(e), "store write failed, will retry");
        self.emit(FeedEvent::StoreWriteFailed {
            what,
            reason: chain(e),
        });
    }

    pub(super) fn retry_store(&mut self) {
        if !self.store.is_open() || (!self.bans_dirty && self.feeds_dirty.is_empty()) {
            return;
        }
        let mut ok = true;
        if self.bans_dirty {
            let now = self.clock.monotonic_ns();
            let bans: Vec<StoredBan> = self
                .bans
                .records()
                .map(|(n, r)| self.stored(*n, &r.source, r.expires_ns, &r.reason))
                .collect();
            let wall = self.clock.wall();
            let unbans: Vec<StoredUnban> = self
                .bans
                .unbans()
                .map(|(n, u)| {
                    let left = Duration::from_nanos(u.saturating_sub(now));
                    StoredUnban {
                        net: *n,
                        wall_until: wall + left,
                        remaining: left,
                    }
                })
                .collect();
            match self.store.replace_bans(&bans, &unbans) {
                Ok(()) => self.bans_dirty = false,
                Err(_) => ok = false,
            }
        }
        for name in std::mem::take(&mut self.feeds_dirty) {
            let Some(nets) = self.reconciler.feed(&name).map(<[IpNet]>::to_vec) else {
                continue;
            };
            let validators = self
                .feeds
                .get(&name)
                .map(|f| f.validators.clone())
                .unwrap_or_default();
            self.save_copy(&name, nets, &validators);
            if self.feeds_dirty.contains(&name) {
                ok = false;
            }
        }
        if ok && self.store_failing {
            self.store_failing = false;
            self.emit(FeedEvent::StoreRecovered);
        }
    }
}
