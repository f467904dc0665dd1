//! How a pool chooses among its live backends (`balance`, `balance_factor`): the one
//! question the data plane asks per new connection or flow, and `ringway route` asks
//! for an idle node.
//!
//! - `ring` (the default): the key's owner on the consistent-hash ring. With
//!   `balance_factor`, bounded loads (Mirrokni, Thorup and Zadimoghaddam, "Consistent
//!   hashing with bounded loads"): a backend holding its cap, ceil(factor x (open + 1)
//!   x its weight / the live weight), is passed over for the next backend clockwise
//!   that is under its own. Below the caps every key lands where the ring says.
//! - `least-connections`: the fewest open connections per unit of weight; among
//!   equals, the ring's pick when it is one of them (so a light load stays where the
//!   ring puts it), else the first after it in backend order. Read from a min-tree
//!   ([`LeastTree`]) where the counter keeps one, else by a scan.
//! - `round-robin`: smooth weighted turns ([`Rotation`]), one turn per new
//!   connection, shared by every worker.
//! - `maglev`: the Maglev lookup table of the live backends ([`Maglev`]); with
//!   `balance_factor`, bounded like the ring, walking on in table order.
//!
//! `slow_start`: a backend ramping up (its snapshot says by how much) takes a key its
//! ring mode would give it only when the key's draw (0..1000, fixed per key) is under
//! its ramp, else the key goes on clockwise; least connections weighs it by its ramp;
//! round robin skips its turn unless the turn's draw is under its ramp.
//!
//! Loads come from outside ([`Loads`]): the data plane reads its live counts, `route`
//! reads an idle node ([`Idle`]). Nothing here reads a clock or does I/O.

use std::sync::Arc;

use super::least::{LeastTree, EMPTY};
use super::maglev::{table_size, Maglev};
use super::rotation::Rotation;
use super::{Backend, Snapshot};

/// `balance = "ring" | "least-connections" | "round-robin" | "maglev"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The consistent-hash ring (optionally bounded).
    #[default]
    Ring,
    /// Fewest open connections per unit of weight.
    LeastConnections,
    /// Smooth weighted round robin.
    RoundRobin,
    /// The Maglev lookup table (optionally bounded).
    Maglev,
}

impl Mode {
    /// Every mode, by its config name.
    pub const ALL: [Mode; 4] = [
        Mode::Ring,
        Mode::LeastConnections,
        Mode::RoundRobin,
        Mode::Maglev,
    ];

    /// Its name in the config, `/status` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Ring => "ring",
            Mode::LeastConnections => "least-connections",
            Mode::RoundRobin => "round-robin",
            Mode::Maglev => "maglev",
        }
    }

    /// The mode called `name`.
    pub fn parse(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// A pool's `balance` and `balance_factor`, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Balance {
    /// The mode.
    pub mode: Mode,
    /// Bounded loads on the ring: the cap over the weighted average (> 1).
    pub factor: Option<f64>,
}

/// What a pool's backends carry now: open connections (TCP, connecting ones too) or
/// flows (UDP), and round-robin turns.
pub trait Loads {
    /// Open on backend `b` (an index of the snapshot's backends).
    fn open(&self, b: usize) -> u64;
    /// Open on the whole pool.
    fn total(&self) -> u64;
    /// A turn number for round robin: successive calls give successive numbers.
    fn turn(&self) -> u64;
    /// The loads per unit of weight as a min-tree over the live backends, kept up
    /// to date by whoever counts (least connections then reads O(log n) nodes);
    /// `None`: scan every backend.
    fn least(&self) -> Option<&LeastTree> {
        None
    }
}

/// An idle node: nothing open; each call takes the next turn, from the first (what
/// `ringway route` shows: each line a new connection, none staying open).
#[derive(Debug, Default)]
pub struct Idle {
    turns: std::cell::Cell<u64>,
}

impl Loads for Idle {
    fn open(&self, _: usize) -> u64 {
        0
    }
    fn total(&self) -> u64 {
        0
    }
    fn turn(&self) -> u64 {
        let t = self.turns.get();
        self.turns.set(t + 1);
        t
    }
}

/// A choice: the backend, and whether it is not the one the ring names for the key
/// (bounded loads passed the ring's pick over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index of the backend.
    pub backend: usize,
    /// `balance_factor` sent it past the ring's pick, which held its cap.
    pub overflowed: bool,
}

/// A pool's balance with what it needs of its backend set (the round-robin order):
/// built once per backend set, shared by every routing of it.
#[derive(Debug, Clone)]
pub struct Policy {
    balance: Balance,
    rotation: Option<Rotation>,
    /// `maglev`: the table of the live set it was last published with.
    maglev: Option<Arc<Maglev>>,
}

impl Policy {
    /// The policy `balance` over `backends` (in snapshot order).
    pub fn new(balance: Balance, backends: &[Backend]) -> Policy {
        let rotation = (balance.mode == Mode::RoundRobin).then(|| {
            let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
            Rotation::new(&weights)
        });
        Policy {
            balance,
            rotation,
            maglev: None,
        }
    }

    /// This policy for the live backends of `s` (what a publish hands workers):
    /// with `maglev`, the table of that live set, built anew only when it changed.
    pub fn for_snapshot(&self, s: &Snapshot) -> Policy {
        let mut p = self.clone();
        if self.balance.mode == Mode::Maglev {
            let live: Vec<bool> = (0..s.backends().len()).map(|i| s.is_live(i)).collect();
            if !self.maglev.as_ref().is_some_and(|t| t.built_for(&live)) {
                let m = table_size(s.backends().len());
                p.maglev = Some(Arc::new(Maglev::build(s.backends(), &live, m)));
            }
        }
        p
    }

    /// The plain ring, unbounded.
    pub fn ring() -> Policy {
        Policy {
            balance: Balance::default(),
            rotation: None,
            maglev: None,
        }
    }

    /// The balance it applies.
    pub fn balance(&self) -> Balance {
        self.balance
    }

    /// The backend for a new connection or flow with key `key`, among the live
    /// backends of `s` that `skip` does not rule out (backends a retry already
    /// tried); `None` when there is none.
    #[inline]
    pub fn choose(
        &self,
        s: &Snapshot,
        key: u64,
        loads: &impl Loads,
        skip: impl Fn(usize) -> bool,
    ) -> Option<Choice> {
        match self.balance.mode {
            Mode::Ring => match self.balance.factor {
                None => ring(s, key, skip),
                Some(f) => bounded(s, key, loads, f, skip),
            },
            Mode::LeastConnections => least(s, key, loads, skip),
            Mode::RoundRobin => match &self.rotation {
                Some(r) => turn(r, s, loads.turn(), skip),
                None => ring(s, key, skip),
            },
            Mode::Maglev => match &self.maglev {
                Some(t) => maglev(t, s, key, (loads, self.balance.factor), skip),
                None => ring(s, key, skip),
            },
        }
    }
}

fn plain(backend: usize) -> Choice {
    Choice {
        backend,
        overflowed: false,
    }
}

/// A key's or a turn's draw for `slow_start`, 0..1000: independent of where the key
/// falls on the ring, fixed for the key, so the keys a ramping backend takes only
/// grow as its ramp does.
#[inline]
fn draw(x: u64) -> u16 {
    ((x.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 1000) as u16
}

/// Whether backend `b`, ramping up at its thousandths, takes a connection with draw
/// `d`: always at a full share.
#[inline]
fn admitted(s: &Snapshot, b: usize, d: u16) -> bool {
    d < s.ramp(b)
}

/// The ring's pick, or the first backend clockwise that `skip` leaves (and, while
/// backends ramp up, that takes the key's draw; else the first left).
fn ring(s: &Snapshot, key: u64, skip: impl Fn(usize) -> bool) -> Option<Choice> {
    let first = s.pick(key)?;
    // Without a ramp every backend admits every draw: the first not skipped.
    let d = draw(key);
    if !skip(first) && admitted(s, first, d) {
        return Some(plain(first));
    }
    s.candidates(key)
        .find(|&b| !skip(b) && admitted(s, b, d))
        .or_else(|| s.candidates(key).find(|&b| !skip(b)))
        .map(plain)
}

/// The most backend `b` may hold with `total` open on the pool (the new one
/// included): ceil(factor x total x weight / live weight), at least 1.
pub fn cap(factor: f64, total: u64, weight: u32, live_weight: u64) -> u64 {
    let fair = total as f64 * f64::from(weight) / live_weight.max(1) as f64;
    ((factor * fair).ceil() as u64).max(1)
}

/// Bounded loads: the first backend clockwise from the key under its cap.
fn bounded(
    s: &Snapshot,
    key: u64,
    loads: &impl Loads,
    factor: f64,
    skip: impl Fn(usize) -> bool,
) -> Option<Choice> {
    let total = loads.total() + 1;
    let live_weight = s.live_weight();
    let weight = |b: usize| s.backends()[b].weight;
    let d = draw(key);
    let under =
        |b: usize| loads.open(b) < cap(factor, total, weight(b), live_weight) && admitted(s, b, d);
    let first = s.pick(key)?;
    if !skip(first) && under(first) {
        return Some(plain(first));
    }
    let mut fallback = None;
    for b in s.candidates(key).filter(|&b| !skip(b)) {
        if under(b) {
            return Some(Choice {
                backend: b,
                overflowed: b != first,
            });
        }
        fallback.get_or_insert(b);
    }
    // Every backend left holds its cap (only when retries ruled the others out):
    // the first of them, as without a bound.
    fallback.map(|b| Choice {
        backend: b,
        overflowed: b != first,
    })
}

/// Maglev: the key's entry, or (passed over by a retry, a ramp or a bound) the next
/// distinct backend in table order that takes it.
fn maglev(
    t: &Maglev,
    s: &Snapshot,
    key: u64,
    (loads, factor): (&impl Loads, Option<f64>),
    skip: impl Fn(usize) -> bool,
) -> Option<Choice> {
    let first = t.lookup(key)?;
    let d = draw(key);
    let total = loads.total() + 1;
    let under = |b: usize| {
        factor
            .is_none_or(|f| loads.open(b) < cap(f, total, s.backends()[b].weight, s.live_weight()))
    };
    let takes = |b: usize| !skip(b) && admitted(s, b, d) && under(b);
    if takes(first) {
        return Some(plain(first));
    }
    match t.walk(key).find(|&b| takes(b)) {
        Some(b) => Some(Choice {
            backend: b,
            overflowed: factor.is_some() && !under(first),
        }),
        None => t.walk(key).find(|&b| !skip(b)).map(plain),
    }
}

/// Least connections per unit of weight; ties go to the ring's pick, then to the
/// first after it in backend order.
fn least(
    s: &Snapshot,
    key: u64,
    loads: &impl Loads,
    skip: impl Fn(usize) -> bool,
) -> Option<Choice> {
    let first = s.pick(key)?;
    if let Some(t) = loads.least() {
        let m = t.min();
        let found = match m {
            EMPTY => None,
            m if t.key_of(first) <= m => Some(first),
            m => t.first_from(first, m),
        };
        // The tree knows the live backends, not which ones a retry rules out: the
        // least of all, when it is not ruled out, is the least of the rest too.
        if let Some(b) = found.filter(|&b| s.is_live(b) && !skip(b)) {
            return Some(plain(b));
        }
    }
    let backends = s.backends();
    let n = backends.len();
    // (open, weight x ramp) of the best so far: a/wa < b/wb  <=>  a*wb < b*wa.
    let mut best: Option<(usize, u128, u128)> = None;
    for b in (first..n).chain(0..first) {
        if !s.is_live(b) || skip(b) {
            continue;
        }
        let open = u128::from(loads.open(b));
        let weight = u128::from(backends[b].weight) * u128::from(s.ramp(b).max(1));
        match best {
            Some((_, bo, bw)) if open * bw >= bo * weight => {}
            _ => best = Some((b, open, weight)),
        }
    }
    best.map(|(b, _, _)| plain(b))
}

/// Round robin: the live backend of turn `t`, or of the turns after it (a backend
/// ramping up takes its turn with the probability of its ramp).
fn turn(r: &Rotation, s: &Snapshot, t: u64, skip: impl Fn(usize) -> bool) -> Option<Choice> {
    let usable = |b: usize| s.is_live(b) && !skip(b);
    r.from(t)
        .zip(t..)
        .find(|&(b, u)| usable(b) && admitted(s, b, draw(u)))
        .map(|(b, _)| b)
        .or_else(|| r.from(t).find(|&b| usable(b)))
        .map(plain)
}

#[cfg(test)]
mod tests;
