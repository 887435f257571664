//! The XDP filter. One decision per packet, by source address, in this order:
//!
//! 1. allow list (IPv4/IPv6 prefixes) → pass;
//! 2. panic mode → drop everything else (ARP and IPv6 neighbour discovery still pass);
//! 3. an unexpired timed ban covering the source → drop;
//! 4. deny list: exact addresses in a hash, prefixes in an LPM trie → drop; both are skipped
//!    when the family's deny hint (`waf_common::hint`) rules the source out;
//! 5. per-source rate limit (GCRA, a playbook's throttle taking precedence) → drop when over;
//! 6. otherwise pass.
//!
//! Malformed-frame policy: a frame that is truncated or inconsistent before its source
//! address can be read (short Ethernet or IP header, bad IP version, IHL < 5, options past
//! the end, more than two VLAN tags), or an IPv6 packet whose extension-header chain is
//! truncated or longer than eight headers, is dropped and counted as `drop_malformed`. The
//! kernel's own stack would discard most of these; dropping them here means no packet shape
//! can carry a denied source past the check. An allow-listed source is judged before its
//! extension headers are walked, so it passes whatever it carries. In monitor mode the frame
//! passes and is counted as `monitor_malformed`.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use waf_common::{
    capacity, hint, present, BanEntry, Counter, DropEvent, Mode, RateKey, RateState, Settings,
    Throttle, COUNTER_COUNT,
};

use crate::parse::{Packet, Src6, V6Tail};

#[map(name = "SETTINGS")]
static SETTINGS: Array<Settings> = Array::pinned(1, 0);
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_COUNT, 0);
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::pinned(capacity::EVENTS_BYTES, 0);

#[map(name = "ALLOW_V4")]
static ALLOW_V4: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(capacity::ALLOW, 0);
#[map(name = "ALLOW_V6")]
static ALLOW_V6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(capacity::ALLOW, 0);
#[map(name = "BAN_V4")]
static BAN_V4: LpmTrie<[u8; 4], BanEntry> = LpmTrie::pinned(capacity::BAN, 0);
#[map(name = "BAN_V6")]
static BAN_V6: LpmTrie<[u8; 16], BanEntry> = LpmTrie::pinned(capacity::BAN, 0);
#[map(name = "DENY_V4")]
static DENY_V4: HashMap<[u8; 4], u32> = HashMap::pinned(capacity::DENY_EXACT, 0);
#[map(name = "DENY_V6")]
static DENY_V6: HashMap<[u8; 16], u32> = HashMap::pinned(capacity::DENY_EXACT, 0);
#[map(name = "DENY_NET_V4")]
static DENY_NET_V4: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(capacity::DENY_NET, 0);
#[map(name = "DENY_NET_V6")]
static DENY_NET_V6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(capacity::DENY_NET, 0);
#[map(name = "THROTTLE_V4")]
static THROTTLE_V4: LpmTrie<[u8; 4], Throttle> = LpmTrie::pinned(capacity::THROTTLE, 0);
#[map(name = "THROTTLE_V6")]
static THROTTLE_V6: LpmTrie<[u8; 16], Throttle> = LpmTrie::pinned(capacity::THROTTLE, 0);
#[map(name = "RATE")]
static RATE: LruHashMap<RateKey, RateState> = LruHashMap::pinned(capacity::RATE, 0);
#[map(name = "DENY_HINT_V4")]
static DENY_HINT_V4: Array<u64> = Array::pinned(capacity::DENY_HINT_WORDS, 0);
#[map(name = "DENY_HINT_V6")]
static DENY_HINT_V6: Array<u64> = Array::pinned(capacity::DENY_HINT_WORDS, 0);
#[map(name = "DENY_COVER_V4")]
static DENY_COVER_V4: Array<u64> = Array::pinned(capacity::DENY_HINT_WORDS, 0);

/// Settings used when the agent has not written any yet: filter nothing, count everything.
const UNCONFIGURED: Settings = Settings::new(Mode::Monitor);

#[xdp]
pub fn waf_xdp(ctx: XdpContext) -> u32 {
    // Read in place: a copy of the settings on every packet costs more than the lookups
    // it would save.
    let stored = match SETTINGS.get(0) {
        Some(s) => s,
        None => &UNCONFIGURED,
    };
    let lifted;
    let settings = if stored.mode == Mode::Panic as u32
        && stored.panic_until_ns != 0
        && unsafe { bpf_ktime_get_ns() } >= stored.panic_until_ns
    {
        lifted = Settings {
            mode: stored.saved_mode,
            ..*stored
        };
        &lifted
    } else {
        stored
    };
    let verdict = decide(&ctx, settings);
    act(&ctx, settings, verdict)
}

/// Counts the verdict, samples it to the ring buffer, and turns it into an XDP action,
/// downgrading drops to monitor counters in monitor mode.
#[inline(always)]
fn act(ctx: &XdpContext, settings: &Settings, verdict: Verdict) -> u32 {
    let (counter, src, family) = match verdict {
        Verdict::Pass(c) => {
            count(c);
            return xdp_action::XDP_PASS;
        }
        Verdict::Drop(c, src, family) => (c, src, family),
    };
    let (counter, action) = if settings.mode == Mode::Monitor as u32 {
        (monitor_counter(counter), xdp_action::XDP_PASS)
    } else {
        (counter, xdp_action::XDP_DROP)
    };
    let seen = count(counter);
    let every = settings.sample_every as u64;
    if every != 0 && seen % every == 1 % every {
        emit(ctx, counter, src, family);
    }
    action
}

enum Verdict {
    Pass(Counter),
    /// A drop reason with the source (IPv4 in the first four bytes) and its family.
    Drop(Counter, Addr16, u8),
}

/// A 16-byte address or rate key as two words, so that building one takes two stores: as a
/// byte array LLVM fills the zeroes with calls to a byte-at-a-time `memset` subprogram,
/// which cost the pass path more than any map lookup.
#[derive(Clone, Copy)]
#[repr(C)]
struct Addr16([u64; 2]);

impl Addr16 {
    const ZERO: Addr16 = Addr16([0; 2]);

    #[inline(always)]
    fn v4(src: [u8; 4]) -> Addr16 {
        Addr16([u64::from(u32::from_ne_bytes(src)), 0])
    }

    /// The IPv4-mapped IPv6 form (`::ffff:a.b.c.d`), the rate limit's key for IPv4.
    #[inline(always)]
    fn v4_mapped(src: [u8; 4]) -> Addr16 {
        let mapped = u64::from_ne_bytes([0, 0, 0xff, 0xff, 0, 0, 0, 0]);
        Addr16([0, mapped | u64::from(u32::from_ne_bytes(src)) << 32])
    }

    #[inline(always)]
    fn v6(src: &Src6) -> Addr16 {
        // SAFETY: `Src6` is 16 plain bytes aligned to 8; any bit pattern is a valid
        // `[u64; 2]`.
        Addr16(unsafe { *(core::ptr::from_ref(src).cast::<[u64; 2]>()) })
    }

    /// Keeps the first `prefix` bits (in network order) and clears the rest.
    #[inline(always)]
    fn masked(self, prefix: u32) -> Addr16 {
        let mask = |bits: u32| -> u64 {
            // The mask in network order, then stored as the word is laid out in memory.
            let be = match bits {
                0 => 0,
                1..=63 => !0u64 << (64 - bits),
                _ => !0,
            };
            be.to_be()
        };
        let hi_bits = prefix.saturating_sub(64);
        Addr16([self.0[0] & mask(prefix.min(64)), self.0[1] & mask(hi_bits)])
    }

    /// The same 16 bytes as a map key, without copying them.
    #[inline(always)]
    fn as_key(&self) -> &[u8; 16] {
        // SAFETY: `[u8; 16]` has the size of `[u64; 2]` and a weaker alignment.
        unsafe { &*(self.0.as_ptr().cast::<[u8; 16]>()) }
    }

    #[inline(always)]
    fn bytes(self) -> [u8; 16] {
        // SAFETY: as in `v6`.
        unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(self.0) }
    }
}

#[inline(always)]
fn drop_v4(counter: Counter, src: [u8; 4]) -> Verdict {
    Verdict::Drop(counter, Addr16::v4(src), 4)
}

#[inline(always)]
fn decide(ctx: &XdpContext, settings: &Settings) -> Verdict {
    match parse::parse(ctx) {
        Packet::NonIp => Verdict::Pass(Counter::PassNonIp),
        Packet::Malformed => Verdict::Drop(Counter::DropMalformed, Addr16::ZERO, 0),
        Packet::V4 { src } => decide_v4(settings, src),
        Packet::V6 { src, tail } => decide_v6(settings, &src, tail),
    }
}

#[inline(never)]
fn decide_v4(settings: &Settings, src: [u8; 4]) -> Verdict {
    let key = Key::new(32, src);
    if settings.present & present::ALLOW_V4 != 0 && ALLOW_V4.get(&key).is_some() {
        return Verdict::Pass(Counter::PassAllow);
    }
    if settings.mode == Mode::Panic as u32 {
        return drop_v4(Counter::DropPanic, src);
    }
    let mut now = 0;
    if settings.present & present::BAN_V4 != 0 {
        if let Some(ban) = BAN_V4.get(&key) {
            now = unsafe { bpf_ktime_get_ns() };
            if ban.expires_ns > now {
                return drop_v4(Counter::DropBan, src);
            }
        }
    }
    let bit = hint::v4_bit(src);
    let hinted = settings.present & (present::DENY_V4 | present::DENY_NET_V4) != 0
        && hint_set(&DENY_HINT_V4, bit);
    if hinted && settings.present & present::DENY_NET_V4 != 0 && cover_set(bit) {
        return drop_v4(Counter::DropDeny, src);
    }
    // SAFETY: DENY_V4 is only read here, and its value is copied out at once.
    if hinted && settings.present & present::DENY_V4 != 0 && unsafe { DENY_V4.get(&src) }.is_some()
    {
        return drop_v4(Counter::DropDeny, src);
    }
    if hinted && settings.present & present::DENY_NET_V4 != 0 && DENY_NET_V4.get(&key).is_some() {
        return drop_v4(Counter::DropDeny, src);
    }
    let mut interval = settings.rate_interval_ns;
    let mut tolerance = settings.rate_tolerance_ns;
    if settings.present & present::THROTTLE_V4 != 0 {
        if let Some(t) = THROTTLE_V4.get(&key) {
            if now == 0 {
                now = unsafe { bpf_ktime_get_ns() };
            }
            if t.expires_ns > now {
                interval = t.rate_interval_ns;
                tolerance = t.rate_tolerance_ns;
            }
        }
    }
    if interval != 0 && over_rate(Addr16::v4_mapped(src).as_key(), now, interval, tolerance) {
        return drop_v4(Counter::DropRate, src);
    }
    Verdict::Pass(Counter::PassClean)
}

#[inline(never)]
fn decide_v6(settings: &Settings, src: &Src6, tail: V6Tail) -> Verdict {
    // Built only on the paths that look a prefix up.
    let key = || Key::new(128, src.0);
    if settings.present & present::ALLOW_V6 != 0 && ALLOW_V6.get(&key()).is_some() {
        return Verdict::Pass(Counter::PassAllow);
    }
    match tail {
        V6Tail::Malformed => return Verdict::Drop(Counter::DropMalformed, Addr16::v6(src), 6),
        V6Tail::NeighbourDiscovery => return Verdict::Pass(Counter::PassNd),
        V6Tail::Other => {}
    }
    if settings.mode == Mode::Panic as u32 {
        return Verdict::Drop(Counter::DropPanic, Addr16::v6(src), 6);
    }
    let mut now = 0;
    if settings.present & present::BAN_V6 != 0 {
        if let Some(ban) = BAN_V6.get(&key()) {
            now = unsafe { bpf_ktime_get_ns() };
            if ban.expires_ns > now {
                return Verdict::Drop(Counter::DropBan, Addr16::v6(src), 6);
            }
        }
    }
    // The first 64 bits as one word load and a byte swap; `hint::v6_bits` reads bytes.
    let top64 = u64::from_be(Addr16::v6(src).0[0]);
    let (bit48, bit64) = (hint::v6_bit_48(top64 >> 16), hint::v6_bit_64(top64));
    let hinted = settings.present & (present::DENY_V6 | present::DENY_NET_V6) != 0
        && (hint_set(&DENY_HINT_V6, bit48) || hint_set(&DENY_HINT_V6, bit64));
    // SAFETY: as in `decide_v4`.
    if hinted
        && settings.present & present::DENY_V6 != 0
        && unsafe { DENY_V6.get(&src.0) }.is_some()
    {
        return Verdict::Drop(Counter::DropDeny, Addr16::v6(src), 6);
    }
    if hinted && settings.present & present::DENY_NET_V6 != 0 && DENY_NET_V6.get(&key()).is_some() {
        return Verdict::Drop(Counter::DropDeny, Addr16::v6(src), 6);
    }
    let mut interval = settings.rate_interval_ns;
    let mut tolerance = settings.rate_tolerance_ns;
    if settings.present & present::THROTTLE_V6 != 0 {
        if let Some(t) = THROTTLE_V6.get(&key()) {
            if now == 0 {
                now = unsafe { bpf_ktime_get_ns() };
            }
            if t.expires_ns > now {
                interval = t.rate_interval_ns;
                tolerance = t.rate_tolerance_ns;
            }
        }
    }
    if interval != 0 {
        let rate_key = Addr16::v6(src).masked(settings.rate_v6_prefix);
        if over_rate(rate_key.as_key(), now, interval, tolerance) {
            return Verdict::Drop(Counter::DropRate, Addr16::v6(src), 6);
        }
    }
    Verdict::Pass(Counter::PassClean)
}

/// Whether `bit` is set in a deny hint. A missing word (never, with an index below
/// `hint::BITS`) reads as set: the hint may only ever send a packet to the full lookup.
#[inline(always)]
fn hint_set(map: &Array<u64>, bit: u32) -> bool {
    match map.get(bit / 64) {
        Some(word) => *word & (1u64 << (bit % 64)) != 0,
        None => true,
    }
}

/// Whether a deny prefix covers the whole /24 of hint bit `bit`. A missing word reads as
/// clear: this check may only ever spare a lookup, never decide a drop on its own.
#[inline(always)]
fn cover_set(bit: u32) -> bool {
    match DENY_COVER_V4.get(bit / 64) {
        Some(word) => *word & (1u64 << (bit % 64)) != 0,
        None => false,
    }
}

/// GCRA: a source may send when its theoretical arrival time is no further ahead of now
/// than the burst tolerance. Concurrent updates from several CPUs may lose an increment,
/// which lets a source through slightly over its rate, never under it.
#[inline(always)]
fn over_rate(key: &RateKey, now: u64, interval: u64, tolerance: u64) -> bool {
    let now = if now == 0 {
        unsafe { bpf_ktime_get_ns() }
    } else {
        now
    };
    match RATE.get_ptr_mut(key) {
        Some(state) => {
            // SAFETY: the pointer comes from a successful lookup and is used at once.
            let tat = unsafe { (*state).tat_ns };
            let tat = if tat > now { tat } else { now };
            if tat - now > tolerance {
                return true;
            }
            unsafe { (*state).tat_ns = tat + interval };
            false
        }
        None => {
            let state = RateState {
                tat_ns: now + interval,
            };
            // A failed insert only forgets this source's history; it is not a drop.
            let _ = RATE.insert(key, &state, 0);
            false
        }
    }
}

/// Increments a per-CPU counter and returns its new value on this CPU.
#[inline(always)]
fn count(counter: Counter) -> u64 {
    match COUNTERS.get_ptr_mut(counter as u32) {
        Some(slot) => {
            // SAFETY: per-CPU slot, no other writer on this CPU while we run.
            unsafe {
                *slot += 1;
                *slot
            }
        }
        None => 0,
    }
}

#[inline(always)]
fn monitor_counter(counter: Counter) -> Counter {
    match counter {
        Counter::DropBan => Counter::MonitorBan,
        Counter::DropDeny => Counter::MonitorDeny,
        Counter::DropRate => Counter::MonitorRate,
        Counter::DropMalformed => Counter::MonitorMalformed,
        other => other,
    }
}

#[inline(never)]
fn emit(ctx: &XdpContext, counter: Counter, addr: Addr16, family: u8) {
    match EVENTS.reserve::<DropEvent>(0) {
        Some(mut entry) => {
            entry.write(DropEvent {
                addr: addr.bytes(),
                ts_ns: unsafe { bpf_ktime_get_ns() },
                ifindex: ctx.ingress_ifindex() as u32,
                counter: counter as u32,
                family,
                _pad: [0; 7],
            });
            entry.submit(0);
        }
        None => {
            count(Counter::EventLost);
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
