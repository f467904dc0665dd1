//! Per-source limits: how many connections (TCP) or flows (UDP) each source holds open
//! and how fast it opens new ones, in a table bounded in memory whatever the traffic.
//!
//! A source is a client address cut to a prefix (`/32` for IPv4 and `/64` for IPv6 by
//! default: one IPv6 host usually owns a whole /64). Each has an entry: its open
//! count and a token bucket (rate R per second, burst R). The table is one listener's,
//! shared by its workers, and split into shards behind their own mutex: a worker takes
//! one shard's lock for a few hash operations per new connection and per close, only
//! on listeners that set a per-source limit; two workers meet on a lock only when their
//! sources hash to the same shard.
//!
//! Bounded: at most `capacity` entries (split evenly over the shards). A new source in
//! a full shard evicts the least recently used entry that holds nothing open (losing
//! its bucket: that source starts again with a full burst). Entries holding open
//! connections are never evicted (their counts must stay right); when the few least
//! recently used are all such, the new source is refused (`Full`), which happens only
//! if more sources hold connections at once than the table has room for.
//!
//! [`Shard`] is the pure core (no lock, no clock: the caller passes the time);
//! [`SourceTable`] adds the shards and their locks.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use lru::LruCache;

use crate::dataplane::timers::Millis;

/// `connection_rate_per_source` / `udp_flow_rate_per_source`: a token bucket of
/// `count` tokens per `period`, holding at most `count`. Integer arithmetic: a token is
/// `period_ms` units and every millisecond adds `count` units, so no rounding ever
/// gives or takes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u64,
    period_ms: u64,
}

impl Rate {
    /// `count` new connections per `per` (burst: `count`).
    pub fn new(count: u32, per: std::time::Duration) -> Rate {
        Rate {
            count: u64::from(count),
            period_ms: (per.as_millis() as u64).max(1),
        }
    }

    /// Units of one token.
    fn token(&self) -> u64 {
        self.period_ms
    }

    /// Units of a full bucket.
    fn burst(&self) -> u64 {
        self.count * self.period_ms
    }
}

/// One listener's per-source limits (from its settings; `None` fields are unlimited).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceLimits {
    /// Open connections (or flows) per source.
    max_open: Option<u32>,
    /// New connections (or flows) per source per unit of time.
    rate: Option<Rate>,
    /// IPv4 sources are counted per this prefix length.
    prefix_v4: u8,
    /// IPv6 sources are counted per this prefix length.
    prefix_v6: u8,
}

impl SourceLimits {
    /// At most `max_open` open and `rate` new per source; sources are IPv4 addresses
    /// cut to `prefix_v4` bits and IPv6 ones to `prefix_v6`.
    pub fn new(
        max_open: Option<u32>,
        rate: Option<Rate>,
        prefix_v4: u8,
        prefix_v6: u8,
    ) -> SourceLimits {
        SourceLimits {
            max_open,
            rate,
            prefix_v4,
            prefix_v6,
        }
    }

    /// The rate limit, if any.
    pub fn rate(&self) -> Option<&Rate> {
        self.rate.as_ref()
    }

    /// The source `ip` counts as: its address cut to the prefix of its family.
    pub fn source_of(&self, ip: IpAddr) -> IpAddr {
        source_in(ip, self.prefixes())
    }

    /// The IPv4 and IPv6 prefix lengths a source is cut to.
    pub fn prefixes(&self) -> (u8, u8) {
        (self.prefix_v4, self.prefix_v6)
    }
}

/// `ip` cut to the prefix of its family: `prefix_v4` bits of an IPv4 address (also one
/// mapped into IPv6), `prefix_v6` of an IPv6 one.
pub fn source_in(ip: IpAddr, (prefix_v4, prefix_v6): (u8, u8)) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let bits = u32::from(a) & mask(u32::BITS, prefix_v4) as u32;
            IpAddr::V4(Ipv4Addr::from(bits))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a) & mask(u128::BITS, prefix_v6);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// The top `prefix` of `width` bits set.
fn mask(width: u32, prefix: u8) -> u128 {
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return 0;
    }
    let ones = u128::MAX << (128 - prefix);
    ones >> (128 - width)
}

/// Why a source was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It holds `max_open` already.
    Limit,
    /// Its bucket is empty.
    Rate,
    /// The table is full of sources holding connections.
    Full,
}

/// One source's state.
#[derive(Debug, Clone, Copy)]
struct Entry {
    open: u32,
    /// Bucket level, in units of [`Rate`].
    tokens: u64,
    /// When `tokens` was last brought up to date.
    at: Millis,
}

impl Entry {
    /// Brings the bucket up to `now`.
    fn refill(&mut self, rate: &Rate, now: Millis) {
        let elapsed = now.saturating_sub(self.at);
        let added = elapsed.saturating_mul(rate.count);
        self.tokens = self.tokens.saturating_add(added).min(rate.burst());
        self.at = self.at.max(now);
    }
}

/// Least recently used entries looked at for eviction before a new source is refused.
const EVICTION_TRIES: usize = 8;

/// A part of the table: the pure core.
#[derive(Debug)]
pub struct Shard {
    entries: LruCache<IpAddr, Entry>,
}

impl Default for Shard {
    fn default() -> Self {
        // Unbounded for the crate: the capacity is enforced here, so a reload can
        // change it and no memory is set aside for entries that never come.
        Shard {
            entries: LruCache::unbounded(),
        }
    }
}

impl Shard {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What `source` has open.
    pub fn open(&self, source: &IpAddr) -> u32 {
        self.entries.peek(source).map_or(0, |e| e.open)
    }

    /// Admits one more connection of `source` at `now` under `limits`, with room for
    /// `capacity` entries: counts it open and takes a token, or refuses and changes
    /// nothing about the source.
    pub fn admit(
        &mut self,
        source: IpAddr,
        limits: &SourceLimits,
        capacity: usize,
        now: Millis,
    ) -> Result<(), Refusal> {
        if let Some(e) = self.entries.get_mut(&source) {
            if let Some(rate) = &limits.rate {
                e.refill(rate, now);
            }
            if limits.max_open.is_some_and(|m| e.open >= m) {
                return Err(Refusal::Limit);
            }
            if let Some(rate) = &limits.rate {
                if e.tokens < rate.token() {
                    return Err(Refusal::Rate);
                }
                e.tokens -= rate.token();
            }
            e.open += 1;
            return Ok(());
        }
        if limits.max_open == Some(0) {
            return Err(Refusal::Limit);
        }
        let tokens = match &limits.rate {
            Some(r) if r.burst() < r.token() => return Err(Refusal::Rate),
            Some(r) => r.burst() - r.token(),
            None => 0,
        };
        if self.entries.len() >= capacity.max(1) && !self.evict_one() {
            return Err(Refusal::Full);
        }
        self.entries.put(
            source,
            Entry {
                open: 1,
                tokens,
                at: now,
            },
        );
        Ok(())
    }

    /// Evicts the least recently used entry holding nothing open; false when the
    /// few least recently used all hold some.
    fn evict_one(&mut self) -> bool {
        for _ in 0..EVICTION_TRIES {
            let Some((&source, e)) = self.entries.peek_lru() else {
                return false;
            };
            if e.open == 0 {
                self.entries.pop_lru();
                return true;
            }
            // Busy: move it out of the way so the next look finds another.
            self.entries.promote(&source);
        }
        false
    }

    /// One connection of `source` closed at `now`. An entry left with nothing open is
    /// dropped when it carries no rate state worth keeping (no rate limit, or a full
    /// bucket again).
    pub fn release(&mut self, source: &IpAddr, rate: Option<&Rate>, now: Millis) {
        let Some(e) = self.entries.peek_mut(source) else {
            return;
        };
        e.open = e.open.saturating_sub(1);
        if e.open > 0 {
            return;
        }
        let forget = match rate {
            None => true,
            Some(r) => {
                e.refill(r, now);
                e.tokens >= r.burst()
            }
        };
        if forget {
            self.entries.pop(source);
        }
    }

    /// Drops entries beyond `capacity` that hold nothing open (a reload shrank the
    /// table).
    pub fn shrink(&mut self, capacity: usize) {
        while self.entries.len() > capacity.max(1) && self.evict_one() {}
    }
}

/// One listener's table of sources: shards behind mutexes.
#[derive(Debug)]
pub struct SourceTable {
    shards: Box<[Mutex<Shard>]>,
    /// Seeded at random per table: which shard a source lands in cannot be steered.
    hasher: RandomState,
    /// Entries allowed per shard.
    per_shard: AtomicUsize,
}

impl SourceTable {
    /// A table for `capacity` sources, sharded for `workers` workers.
    pub fn new(capacity: usize, workers: usize) -> SourceTable {
        let mut shards = (workers.max(1) * 8).next_power_of_two().min(256);
        while shards > 1 && capacity / shards < 64 {
            shards /= 2;
        }
        let table = SourceTable {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: AtomicUsize::new(0),
        };
        table.set_capacity(capacity);
        table
    }

    /// Changes how many sources it holds (a reload); entries beyond go when nothing
    /// of theirs is open.
    pub fn set_capacity(&self, capacity: usize) {
        let per_shard = capacity.div_ceil(self.shards.len()).max(1);
        if self.per_shard.swap(per_shard, Ordering::Relaxed) > per_shard {
            for shard in self.shards.iter() {
                self.lock(shard).shrink(per_shard);
            }
        }
    }

    /// Sources held now, all shards together.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| self.lock(s).len()).sum()
    }

    /// Whether it holds no source.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits one more connection of `source` (see [`Shard::admit`]).
    pub fn admit(&self, source: IpAddr, limits: &SourceLimits, now: Millis) -> Result<(), Refusal> {
        let capacity = self.per_shard.load(Ordering::Relaxed);
        self.lock(self.shard(&source))
            .admit(source, limits, capacity, now)
    }

    /// One connection of `source` closed (see [`Shard::release`]).
    pub fn release(&self, source: &IpAddr, rate: Option<&Rate>, now: Millis) {
        self.lock(self.shard(source)).release(source, rate, now);
    }

    fn shard(&self, source: &IpAddr) -> &Mutex<Shard> {
        let mut h = self.hasher.build_hasher();
        source.hash(&mut h);
        let i = std::hash::Hasher::finish(&h) as usize & (self.shards.len() - 1);
        &self.shards[i]
    }

    /// A shard's lock. Nothing done under it can panic halfway through an update, so
    /// a poisoned lock (another thread panicked elsewhere while holding it) still
    /// guards consistent data.
    fn lock<'a>(&self, shard: &'a Mutex<Shard>) -> std::sync::MutexGuard<'a, Shard> {
        shard.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
