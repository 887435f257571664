//! Timed bans: from the CLI/API (manual), from playbooks and from CrowdSec decisions. One
//! address may carry bans from several sources; the longest active one is what the kernel
//! enforces. Expiry runs on the monotonic clock only.

pub mod book;
pub mod clock;

pub use book::{BanBook, BanError, BanOutcome, BanRecord, BanSource, BanStatus};
pub use clock::{Clock, ManualClock, SystemClock};
