//! Map layouts, counters and constants shared by the XDP program (`waf-ebpf`) and the agent.
//!
//! Every type here crosses the kernel boundary, so each is `#[repr(C)]` without implicit
//! padding, and its size is asserted at compile time. Addresses are byte arrays in network
//! byte order, as they sit in the packet. Times are `CLOCK_MONOTONIC` nanoseconds, the clock
//! behind `bpf_ktime_get_ns`, so that a wall-clock jump neither lifts nor extends a ban.
#![no_std]

/// Bumped whenever a map's name, key, value or meaning changes. The agent refuses to adopt
/// pinned maps whose `Settings::layout_version` differs, instead of misreading them.
pub const LAYOUT_VERSION: u32 = 2;

/// Names of the maps as they appear in the object file and under the pin directory.
pub mod maps {
    pub const SETTINGS: &str = "SETTINGS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const EVENTS: &str = "EVENTS";
    pub const ALLOW_V4: &str = "ALLOW_V4";
    pub const ALLOW_V6: &str = "ALLOW_V6";
    pub const BAN_V4: &str = "BAN_V4";
    pub const BAN_V6: &str = "BAN_V6";
    pub const DENY_V4: &str = "DENY_V4";
    pub const DENY_V6: &str = "DENY_V6";
    pub const DENY_NET_V4: &str = "DENY_NET_V4";
    pub const DENY_NET_V6: &str = "DENY_NET_V6";
    pub const THROTTLE_V4: &str = "THROTTLE_V4";
    pub const THROTTLE_V6: &str = "THROTTLE_V6";
    pub const RATE: &str = "RATE";
    pub const DENY_HINT_V4: &str = "DENY_HINT_V4";
    pub const DENY_HINT_V6: &str = "DENY_HINT_V6";
    pub const DENY_COVER_V4: &str = "DENY_COVER_V4";

    /// Every map the agent pins, in a stable order.
    pub const ALL: [&str; 17] = [
        SETTINGS,
        COUNTERS,
        EVENTS,
        ALLOW_V4,
        ALLOW_V6,
        BAN_V4,
        BAN_V6,
        DENY_V4,
        DENY_V6,
        DENY_NET_V4,
        DENY_NET_V6,
        THROTTLE_V4,
        THROTTLE_V6,
        RATE,
        DENY_HINT_V4,
        DENY_HINT_V6,
        DENY_COVER_V4,
    ];
}

/// Name of the XDP function in the object file.
pub const PROGRAM_NAME: &str = "waf_xdp";

/// Compile-time capacities of the maps. The agent checks feed sizes against these before it
/// writes, so that a feed never half-applies because the kernel refused an insert.
pub mod capacity {
    pub const ALLOW: u32 = 16_384;
    pub const BAN: u32 = 262_144;
    pub const DENY_EXACT: u32 = 1_048_576;
    pub const DENY_NET: u32 = 524_288;
    pub const THROTTLE: u32 = 65_536;
    /// Rate-limit state. It is an LRU map of its own, so a spoofed-source flood only evicts
    /// other sources' buckets, never a deny or ban entry (those live in plain maps).
    pub const RATE: u32 = 262_144;
    /// Ring buffer for sampled drop events, in bytes (a power of two, page aligned).
    pub const EVENTS_BYTES: u32 = 256 * 1024;
    /// 64-bit words in each deny hint: 2^24 bits, 2 MiB.
    pub const DENY_HINT_WORDS: u32 = 1 << 18;
}

/// Deny hints: a bitmap per family that says which parts of the address space may hold a
/// deny entry. A source whose bits are clear is on no deny list, so the program skips the hash
/// and, above all, the LPM trie lookup, which dominates the cost of a clean packet once the
/// prefix list is long. A set bit only means "look it up": the agent sets bits before it
/// inserts entries and clears them only when it rebuilds the hint from the whole list, so a
/// stale bit costs a lookup and never lets a denied source through.
///
/// IPv4: one bit per /24, the bit index being the /24 itself; a shorter prefix sets the bit
/// of every /24 it covers. IPv6 has two levels in one bitmap, each hashed into half of it: a
/// prefix of /48 or shorter sets the bit of each /48 it covers (all of that half when it
/// covers more than `V6_MAX_EXPAND` of them); a prefix from /49 to /55 sets the bit of the
/// /48 it lies in; a /56 or longer entry sets the bit of each /64 it covers (256 at most).
/// A source may be denied when its /48 bit or its /64 bit is set.
///
/// `DENY_COVER_V4` is the converse for IPv4: one bit per /24 that a deny prefix of /24 or
/// shorter covers whole, so that a source there is dropped without the trie lookup. The
/// agent sets a bit after the prefix is in the trie and clears the bits of a prefix before
/// it leaves the trie (then rebuilds them from the whole list), so a set bit is always
/// backed by an entry, and a cleared one only sends the packet to the full lookup.
pub mod hint {
    use super::capacity::DENY_HINT_WORDS;

    /// Bits in each hint.
    pub const BITS: u32 = DENY_HINT_WORDS * 64;
    /// Bits in each IPv6 level.
    pub const V6_LEVEL_BITS: u32 = BITS / 2;
    /// The most /48s a short IPv6 prefix is expanded into before it saturates its level.
    pub const V6_MAX_EXPAND: u64 = 1 << 16;
    /// The shortest IPv6 prefix recorded at the /64 level.
    pub const V6_FINE_FROM: u8 = 56;

    /// The hint bit of an IPv4 source: its /24.
    #[inline(always)]
    pub const fn v4_bit(addr: [u8; 4]) -> u32 {
        (addr[0] as u32) << 16 | (addr[1] as u32) << 8 | addr[2] as u32
    }

    /// Multiplicative hashing of a prefix into one IPv6 level.
    #[inline(always)]
    const fn level_bit(prefix: u64) -> u32 {
        (prefix.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 41) as u32 & (V6_LEVEL_BITS - 1)
    }

    /// The hint bit of the /48 whose first 48 bits are `top48`.
    #[inline(always)]
    pub const fn v6_bit_48(top48: u64) -> u32 {
        level_bit(top48)
    }

    /// The hint bit of the /64 whose first 64 bits are `top64`.
    #[inline(always)]
    pub const fn v6_bit_64(top64: u64) -> u32 {
        V6_LEVEL_BITS + level_bit(top64)
    }

    /// The /48 and /64 hint bits of an IPv6 source.
    #[inline(always)]
    pub const fn v6_bits(addr: &[u8; 16]) -> (u32, u32) {
        let mut top64 = 0u64;
        let mut i = 0;
        while i < 8 {
            top64 = top64 << 8 | addr[i] as u64;
            i += 1;
        }
        (v6_bit_48(top64 >> 16), v6_bit_64(top64))
    }
}

/// What the program does with packets it would drop.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Count what would be dropped; drop nothing.
    Monitor = 0,
    /// Drop banned, denied and over-rate sources.
    Enforce = 1,
    /// Drop everything that is not allow-listed (ARP and neighbour discovery still pass).
    Panic = 2,
}

impl Mode {
    pub const fn from_u32(v: u32) -> Option<Mode> {
        match v {
            0 => Some(Mode::Monitor),
            1 => Some(Mode::Enforce),
            2 => Some(Mode::Panic),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
            Mode::Panic => "panic",
        }
    }
}

/// One slot of the per-CPU `COUNTERS` array per verdict and reason. Every packet the program
/// sees increments exactly one slot, so the slots sum to the packets seen.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// IP packet from a source that matched nothing.
    PassClean = 0,
    /// Source is on the allow list.
    PassAllow = 1,
    /// ARP and other non-IP frames.
    PassNonIp = 2,
    /// IPv6 neighbour discovery (ICMPv6 133-137 with hop limit 255).
    PassNd = 3,
    DropBan = 4,
    DropDeny = 5,
    DropRate = 6,
    DropPanic = 7,
    /// Truncated or malformed frame; see the policy in `waf-ebpf/src/main.rs`.
    DropMalformed = 8,
    /// Monitor mode: the packet would have been dropped for this reason, and passed.
    MonitorBan = 9,
    MonitorDeny = 10,
    MonitorRate = 11,
    MonitorMalformed = 12,
    /// A sampled drop event did not fit in the ring buffer.
    EventLost = 13,
}

pub const COUNTER_COUNT: u32 = 14;

impl Counter {
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::PassClean,
        Counter::PassAllow,
        Counter::PassNonIp,
        Counter::PassNd,
        Counter::DropBan,
        Counter::DropDeny,
        Counter::DropRate,
        Counter::DropPanic,
        Counter::DropMalformed,
        Counter::MonitorBan,
        Counter::MonitorDeny,
        Counter::MonitorRate,
        Counter::MonitorMalformed,
        Counter::EventLost,
    ];

    pub const fn from_u32(v: u32) -> Option<Counter> {
        if v < COUNTER_COUNT {
            Some(Counter::ALL[v as usize])
        } else {
            None
        }
    }

    /// The verdict part of the slot: `pass`, `drop`, `monitor` (would drop, passed) or
    /// `event_lost`, which is not a packet verdict.
    pub const fn verdict(self) -> &'static str {
        match self {
            Counter::PassClean | Counter::PassAllow | Counter::PassNonIp | Counter::PassNd => {
                "pass"
            }
            Counter::DropBan
            | Counter::DropDeny
            | Counter::DropRate
            | Counter::DropPanic
            | Counter::DropMalformed => "drop",
            Counter::MonitorBan
            | Counter::MonitorDeny
            | Counter::MonitorRate
            | Counter::MonitorMalformed => "monitor",
            Counter::EventLost => "event_lost",
        }
    }

    /// The reason part of the slot.
    pub const fn reason(self) -> &'static str {
        match self {
            Counter::PassClean => "clean",
            Counter::PassAllow => "allow",
            Counter::PassNonIp => "non_ip",
            Counter::PassNd => "nd",
            Counter::DropBan | Counter::MonitorBan => "ban",
            Counter::DropDeny | Counter::MonitorDeny => "deny",
            Counter::DropRate | Counter::MonitorRate => "rate",
            Counter::DropPanic => "panic",
            Counter::DropMalformed | Counter::MonitorMalformed => "malformed",
            Counter::EventLost => "ring_full",
        }
    }

    /// `verdict_reason`, the name used in status output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PassClean => "pass_clean",
            Counter::PassAllow => "pass_allow",
            Counter::PassNonIp => "pass_non_ip",
            Counter::PassNd => "pass_nd",
            Counter::DropBan => "drop_ban",
            Counter::DropDeny => "drop_deny",
            Counter::DropRate => "drop_rate",
            Counter::DropPanic => "drop_panic",
            Counter::DropMalformed => "drop_malformed",
            Counter::MonitorBan => "monitor_ban",
            Counter::MonitorDeny => "monitor_deny",
            Counter::MonitorRate => "monitor_rate",
            Counter::MonitorMalformed => "monitor_malformed",
            Counter::EventLost => "event_lost",
        }
    }
}

/// The single entry of the `SETTINGS` array. Written by the agent (and by the CLI for the
/// panic button), read by the program on every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `LAYOUT_VERSION` of the agent that created the maps.
    pub layout_version: u32,
    /// A `Mode` as u32.
    pub mode: u32,
    /// Per-source rate limit as a GCRA emission interval: nanoseconds per packet
    /// (10^9 / packets per second). 0 turns the rate limit off.
    pub rate_interval_ns: u64,
    /// Burst tolerance in nanoseconds (interval × burst).
    pub rate_tolerance_ns: u64,
    /// Emit one drop event per this many drops of a reason on a CPU; 0 sends none.
    pub sample_every: u32,
    /// Prefix length that groups IPv6 sources for the rate limit (64 = per /64).
    pub rate_v6_prefix: u32,
    /// `present::*` bits: which optional maps hold entries. The agent sets a bit after the
    /// first insert and clears it after the last removal, so the program can skip a trie
    /// lookup on an empty map.
    pub present: u32,
    /// The mode to return to when panic mode ends (`panic off`, or its expiry).
    pub saved_mode: u32,
    /// Monotonic nanoseconds at which panic mode lifts by itself; 0 for never. The program
    /// applies `saved_mode` once this has passed, so a panic TTL holds with the agent down.
    pub panic_until_ns: u64,
}

/// Bits of `Settings::present`.
pub mod present {
    pub const ALLOW_V4: u32 = 1 << 0;
    pub const ALLOW_V6: u32 = 1 << 1;
    pub const BAN_V4: u32 = 1 << 2;
    pub const BAN_V6: u32 = 1 << 3;
    pub const DENY_NET_V4: u32 = 1 << 4;
    pub const DENY_NET_V6: u32 = 1 << 5;
    pub const THROTTLE_V4: u32 = 1 << 6;
    pub const THROTTLE_V6: u32 = 1 << 7;
    pub const DENY_V4: u32 = 1 << 8;
    pub const DENY_V6: u32 = 1 << 9;
}

impl Settings {
    pub const fn new(mode: Mode) -> Settings {
        Settings {
            layout_version: LAYOUT_VERSION,
            mode: mode as u32,
            rate_interval_ns: 0,
            rate_tolerance_ns: 0,
            sample_every: 64,
            rate_v6_prefix: 64,
            present: 0,
            saved_mode: mode as u32,
            panic_until_ns: 0,
        }
    }
}

/// Value of the `BAN_V4`/`BAN_V6` tries, keyed by the banned prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanEntry {
    /// Monotonic nanoseconds at which the ban ends. The program treats an entry whose time
    /// has passed as absent; the agent removes it.
    pub expires_ns: u64,
}

/// Value of the `THROTTLE_V4`/`THROTTLE_V6` tries: a lower per-source rate for sources a
/// playbook throttles, in the same units as `Settings`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub rate_interval_ns: u64,
    pub rate_tolerance_ns: u64,
    pub expires_ns: u64,
}

/// Key of the `RATE` LRU map: an IPv4 source as `::ffff:a.b.c.d`, an IPv6 source cut to
/// `Settings::rate_v6_prefix` bits, so one host cannot escape its limit by rotating the
/// low bits of its address.
pub type RateKey = [u8; 16];

/// Value of the `RATE` map: the GCRA theoretical arrival time in monotonic nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateState {
    pub tat_ns: u64,
}

/// A sampled drop (or would-drop) sent to the agent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    /// Source address; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    pub ts_ns: u64,
    pub ifindex: u32,
    /// A `Counter` as u32.
    pub counter: u32,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 7],
}

const _: () = assert!(core::mem::size_of::<Settings>() == 48);
const _: () = assert!(core::mem::size_of::<BanEntry>() == 8);
const _: () = assert!(core::mem::size_of::<Throttle>() == 24);
const _: () = assert!(core::mem::size_of::<RateState>() == 8);
const _: () = assert!(core::mem::size_of::<DropEvent>() == 40);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are plain `#[repr(C)]` integers and byte arrays with no padding
    // (sizes asserted above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::BanEntry {}
    unsafe impl aya::Pod for super::Throttle {}
    unsafe impl aya::Pod for super::RateState {}
    unsafe impl aya::Pod for super::DropEvent {}
}
