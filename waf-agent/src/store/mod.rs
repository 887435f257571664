//! The embedded store: bans, manual unbans and the last good copy of every feed, in one
//! SQLite file under the state directory, so that a restart or a reboot comes back with
//! what was in force.
//!
//! A file that cannot be opened or read as a store is moved aside once
//! (`state.db.corrupt-<unix seconds>`) and a fresh one is started; if even that fails the
//! agent runs without a store on its config and feeds. Write failures (a full disk) are
//! returned to the caller, which reports them and retries; nothing here panics.
//!
//! Ban times: a ban is kept as its wall-clock end and its remaining duration at the time
//! of writing. On load the remaining time is taken from the wall clock, capped by the
//! stored duration: across a reboot the monotonic clock starts again and wall time is all
//! there is, and the cap keeps a clock set backwards from extending a ban.

mod schema;

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use rusqlite::{params, Connection, OptionalExtension};

use crate::bans::BanSource;

pub const FILE_NAME: &str = "state.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store is not open")]
    Closed,
    #[error("cannot create state directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store query failed")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot move corrupt store aside to {path}")]
    SetAside {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One source's ban as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBan {
    pub net: IpNet,
    pub source: BanSource,
    pub wall_expires: SystemTime,
    /// Remaining duration when written.
    pub remaining: Duration,
    pub reason: String,
}

impl StoredBan {
    /// Time left at `now` on the wall clock, capped by the stored remaining duration.
    pub fn remaining_at(&self, now: SystemTime) -> Duration {
        self.wall_expires
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(self.remaining)
    }
}

/// A manual unban as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUnban {
    pub net: IpNet,
    pub wall_until: SystemTime,
    pub remaining: Duration,
}

/// The last good copy of a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCopy {
    pub fetched: SystemTime,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub nets: Vec<IpNet>,
}

/// A change to the ban tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanWrite {
    Put(StoredBan),
    Delete {
        net: IpNet,
        source: BanSource,
    },
    /// Every source's ban on the prefix (a manual unban).
    DeleteAll(IpNet),
    PutUnban(StoredUnban),
    DeleteUnban(IpNet),
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// An existing store, or a new one where there was none.
    Ready,
    /// The file could not be used and was moved to `moved_to`; a fresh store was started.
    SetAside { moved_to: PathBuf },
    /// No store could be opened at all; the agent persists nothing.
    Unavailable { reason: String },
}

#[derive(Debug)]
pub struct Store {
    conn: Option<Connection>,
    path: PathBuf,
}

pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens `dir/state.db`, setting a corrupt file aside once. Never fails: the outcome
    /// says what happened, and an unavailable store accepts no reads or writes.
    pub fn open(dir: &Path, now: SystemTime) -> (Store, Opened) {
        let path = dir.join(FILE_NAME);
        if let Err(source) = std::fs::create_dir_all(dir) {
            let e = StoreError::Dir {
                path: dir.to_owned(),
                source,
            };
            return (Store { conn: None, path }, unavailable(&e));
        }
        match schema::open(&path) {
            Ok(conn) => {
                return (
                    Store {
                        conn: Some(conn),
                        path,
                    },
                    Opened::Ready,
                )
            }
            Err(e) => {
                tracing::warn!(store.path = %path.display(), error = %crate::feeds::event::chain(&e), "store unusable, setting it aside")
            }
        }
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let moved_to = path.with_file_name(format!("{FILE_NAME}.corrupt-{secs}"));
        if let Err(source) = std::fs::rename(&path, &moved_to) {
            let e = StoreError::SetAside {
                path: moved_to,
                source,
            };
            return (Store { conn: None, path }, unavailable(&e));
        }
        for suffix in ["-wal", "-shm", "-journal"] {
            let side = path.with_file_name(format!("{FILE_NAME}{suffix}"));
            let _ = std::fs::remove_file(side);
        }
        match schema::open(&path) {
            Ok(conn) => (
                Store {
                    conn: Some(conn),
                    path,
                },
                Opened::SetAside { moved_to },
            ),
            Err(e) => (Store { conn: None, path }, unavailable(&e)),
        }
    }

    /// A store that persists nothing (no state directory).
    pub fn disabled() -> Store {
        Store {
            conn: None,
            path: PathBuf::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_open(&self) -> bool {
        self.conn.is_some()
    }

    fn conn(&mut self) -> Result<&mut Connection, StoreError> {
        self.conn.as_mut().ok_or(StoreError::Closed)
    }

    /// Caps the file at about `bytes`; writes past it fail as on a full disk. Keeps a
    /// runaway feed from filling the state partition.
    pub fn set_max_bytes(&mut self, bytes: u64) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = (bytes / page.max(1) as u64).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        Ok(())
    }

    /// Drops bans and unbans whose wall-clock end has passed, then reads the rest.
    pub fn load_bans(
        &mut self,
        now: SystemTime,
    ) -> Result<(Vec<StoredBan>, Vec<StoredUnban>), StoreError> {
        let conn = self.conn()?;
        let now_ms = unix_ms(now);
        conn.execute(
            "DELETE FROM bans WHERE wall_expires_ms <= ?1",
            params![now_ms],
        )?;
        conn.execute(
            "DELETE FROM unbans WHERE wall_until_ms <= ?1",
            params![now_ms],
        )?;
        let mut bans = Vec::new();
        let mut stmt =
            conn.prepare("SELECT net, source, wall_expires_ms, remaining_ms, reason FROM bans")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        for row in rows {
            let (net, source, exp, rem, reason) = row?;
            let (Ok(net), Some(source)) = (IpNet::from_str(&net), BanSource::parse(&source)) else {
                continue;
            };
            bans.push(StoredBan {
                net,
                source,
                wall_expires: from_unix_ms(exp),
                remaining: Duration::from_millis(rem.max(0).unsigned_abs()),
                reason,
            });
        }
        drop(stmt);
        let mut unbans = Vec::new();
        let mut stmt = conn.prepare("SELECT net, wall_until_ms, remaining_ms FROM unbans")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (net, until, rem) = row?;
            let Ok(net) = IpNet::from_str(&net) else {
                continue;
            };
            unbans.push(StoredUnban {
                net,
                wall_until: from_unix_ms(until),
                remaining: Duration::from_millis(rem.max(0).unsigned_abs()),
            });
        }
        Ok((bans, unbans))
    }

    /// Applies ban changes in one transaction.
    pub fn write_bans(&mut self, writes: &[BanWrite]) -> Result<(), StoreError> {
        let tx = self.conn()?.transaction()?;
        for w in writes {
            write_one(&tx, w)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces every ban and unban (after a failed write, to catch up in one go).
    pub fn replace_bans(
        &mut self,
        bans: &[StoredBan],
        unbans: &[StoredUnban],
    ) -> Result<(), StoreError> {
        let tx = self.conn()?.transaction()?;
        tx.execute("DELETE FROM bans", [])?;
        tx.execute("DELETE FROM unbans", [])?;
        for b in bans {
            write_one(&tx, &BanWrite::Put(b.clone()))?;
        }
        for u in unbans {
            write_one(&tx, &BanWrite::PutUnban(u.clone()))?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn save_feed(&mut self, name: &str, copy: &FeedCopy) -> Result<(), StoreError> {
        let mut text = String::with_capacity(copy.nets.len() * 18);
        for n in &copy.nets {
            use std::fmt::Write;
            let _ = writeln!(text, "{n}");
        }
        self.conn()?.execute(
            "INSERT INTO feeds (name, fetched_ms, etag, last_modified, list) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET fetched_ms = ?2, etag = ?3, last_modified = ?4, list = ?5",
            params![name, unix_ms(copy.fetched), copy.etag, copy.last_modified, text],
        )?;
        Ok(())
    }

    /// Stamps a feed's copy as confirmed (a 304) without rewriting the list.
    pub fn touch_feed(&mut self, name: &str, fetched: SystemTime) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE feeds SET fetched_ms = ?2 WHERE name = ?1",
            params![name, unix_ms(fetched)],
        )?;
        Ok(())
    }

    pub fn load_feed(&mut self, name: &str) -> Result<Option<FeedCopy>, StoreError> {
        let row = self
            .conn()?
            .query_row(
                "SELECT fetched_ms, etag, last_modified, list FROM feeds WHERE name = ?1",
                params![name],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.map(|(fetched, etag, last_modified, list)| FeedCopy {
            fetched: from_unix_ms(fetched),
            etag,
            last_modified,
            nets: list.lines().filter_map(|l| l.parse().ok()).collect(),
        }))
    }
}

fn unavailable(e: &StoreError) -> Opened {
    Opened::Unavailable {
        reason: crate::feeds::event::chain(e),
    }
}

fn write_one(tx: &rusqlite::Transaction<'_>, w: &BanWrite) -> Result<(), StoreError> {
    match w {
        BanWrite::Put(b) => {
            tx.execute(
                "INSERT INTO bans (net, source, wall_expires_ms, remaining_ms, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(net, source) DO UPDATE SET wall_expires_ms = ?3, remaining_ms = ?4, reason = ?5",
                params![
                    b.net.to_string(),
                    b.source.to_string(),
                    unix_ms(b.wall_expires),
                    ms(b.remaining),
                    b.reason
                ],
            )?;
        }
        BanWrite::Delete { net, source } => {
            tx.execute(
                "DELETE FROM bans WHERE net = ?1 AND source = ?2",
                params![net.to_string(), source.to_string()],
            )?;
        }
        BanWrite::DeleteAll(net) => {
            tx.execute("DELETE FROM bans WHERE net = ?1", params![net.to_string()])?;
        }
        BanWrite::PutUnban(u) => {
            tx.execute(
                "INSERT INTO unbans (net, wall_until_ms, remaining_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(net) DO UPDATE SET wall_until_ms = ?2, remaining_ms = ?3",
                params![u.net.to_string(), unix_ms(u.wall_until), ms(u.remaining)],
            )?;
        }
        BanWrite::DeleteUnban(net) => {
            tx.execute(
                "DELETE FROM unbans WHERE net = ?1",
                params![net.to_string()],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
