//! The store's tables, created or checked on open.

use std::path::Path;

use rusqlite::Connection;

/// Bumped when the tables change; an unknown newer version is treated as unusable.
const VERSION: i64 = 1;

pub(super) fn open(path: &Path) -> Result<Connection, super::StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(2))?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(check),
        )
        .into());
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!("store version {version} is newer than {VERSION}")),
        )
        .into());
    }
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         CREATE TABLE IF NOT EXISTS bans (
             net TEXT NOT NULL,
             source TEXT NOT NULL,
             wall_expires_ms INTEGER NOT NULL,
             remaining_ms INTEGER NOT NULL,
             reason TEXT NOT NULL,
             PRIMARY KEY (net, source)
         );
         CREATE TABLE IF NOT EXISTS unbans (
             net TEXT PRIMARY KEY,
             wall_until_ms INTEGER NOT NULL,
             remaining_ms INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS feeds (
             name TEXT PRIMARY KEY,
             fetched_ms INTEGER NOT NULL,
             etag TEXT,
             last_modified TEXT,
             list TEXT NOT NULL
         );
         PRAGMA user_version = 1;",
    )?;
    Ok(conn)
}
