//! The rise/fall hysteresis of one backend. Pure: no I/O, no clock.
//!
//! While up, `fall` consecutive failures take a backend down; while down, `rise`
//! consecutive successes bring it back. A result that agrees with the current state
//! resets the opposite streak, so only uninterrupted runs count, as in HAProxy.
//!
//! A backend with an active check starts *unconfirmed* ([`HealthState::unconfirmed`]):
//! its first check decides, whatever `rise` and `fall` say. A configured backend starts
//! up (traffic flows at once) and its first failed check takes it down, as HAProxy's
//! default `init-state up` does, so a thousand dead backends are out after one check
//! each, not `fall`; a backend discovered in DNS starts down and its first passing check
//! brings it in (a scaled-up service is not ready at its first answer). After that first
//! verdict, rise and fall apply. Without an active check a backend starts up and
//! confirmed ([`HealthState::new`]).
//!
//! Failures seen on the data path (passive checks) bring no successes with them, so
//! they also have to come close together: one more than a `window` after the previous
//! starts the count over (NGINX's `max_fails` within `fail_timeout`). Time is passed
//! in, as a duration since any fixed origin.

use std::time::Duration;

/// A change of state, returned when (and only when) the state flips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The backend was up and is down now.
    Down,
    /// The backend was down and is up now.
    Up,
}

/// Hysteresis thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes that bring a down backend up (>= 1).
    pub rise: u32,
    /// Consecutive failures that take an up backend down (>= 1).
    pub fall: u32,
}

/// The state of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    up: bool,
    /// Consecutive results against the current state.
    streak: u32,
    /// When the last passive failure was seen.
    last_passive: Option<Duration>,
    /// No active check has given its verdict yet: the first one decides.
    unconfirmed: bool,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState::new(true)
    }
}

impl HealthState {
    /// A backend in the given state with no streak.
    pub fn new(up: bool) -> HealthState {
        HealthState {
            up,
            streak: 0,
            last_passive: None,
            unconfirmed: false,
        }
    }

    /// A backend in the given state until its first active check, which decides:
    /// a failure takes an up backend down, a success brings a down one up.
    pub fn unconfirmed(up: bool) -> HealthState {
        HealthState {
            unconfirmed: true,
            ..HealthState::new(up)
        }
    }

    /// Whether no active check has given its verdict yet.
    pub fn is_unconfirmed(&self) -> bool {
        self.unconfirmed
    }

    /// Whether the backend is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Consecutive results so far that point away from the current state.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Records one active check result; returns the transition if this result
    /// completes one.
    pub fn observe(&mut self, ok: bool, t: Thresholds) -> Option<Transition> {
        if std::mem::take(&mut self.unconfirmed) && ok != self.up {
            self.up = ok;
            self.streak = 0;
            return Some(if ok { Transition::Up } else { Transition::Down });
        }
        self.count(ok, t)
    }

    /// One result counted against the thresholds.
    fn count(&mut self, ok: bool, t: Thresholds) -> Option<Transition> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { t.fall } else { t.rise };
        if self.streak < needed.max(1) {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(if ok { Transition::Up } else { Transition::Down })
    }

    /// What an upgrade carries: up, the streak against that, no verdict yet (the time
    /// of the last passive failure is on this process's clock, and is not).
    pub fn parts(&self) -> (bool, u32, bool) {
        (self.up, self.streak, self.unconfirmed)
    }

    /// The state [`HealthState::parts`] gave.
    pub fn from_parts((up, streak, unconfirmed): (bool, u32, bool)) -> HealthState {
        HealthState {
            up,
            streak,
            last_passive: None,
            unconfirmed,
        }
    }

    /// Records a failure seen on the data path at time `at`: it continues the run of
    /// failures only when the previous passive failure came within `window`. It is
    /// not a check's verdict: `fall` of them are needed even before the first check
    /// (and once they took the backend down, `rise` checks bring it back).
    pub fn observe_passive(
        &mut self,
        at: Duration,
        window: Duration,
        t: Thresholds,
    ) -> Option<Transition> {
        let stale = self
            .last_passive
            .is_some_and(|last| at.saturating_sub(last) > window);
        if self.up && stale {
            self.streak = 0;
        }
        self.last_passive = Some(at);
        let tr = self.count(false, t);
        // Taken down is a verdict: from there, `rise` checks bring it back.
        if tr.is_some() {
            self.unconfirmed = false;
        }
        tr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference model: the state after a sequence is decided by the last run of equal
    /// results long enough to flip it, replayed naively.
    fn model(seq: &[bool], t: Thresholds) -> (bool, Vec<(usize, Transition)>) {
        model_from(true, seq, t)
    }

    fn model_from(start: bool, seq: &[bool], t: Thresholds) -> (bool, Vec<(usize, Transition)>) {
        let mut up = start;
        let mut flips = Vec::new();
        let mut run = 0u32;
        for (i, &ok) in seq.iter().enumerate() {
            if ok == up {
                run = 0;
                continue;
            }
            run += 1;
            if run >= if up { t.fall } else { t.rise } {
                up = ok;
                run = 0;
                flips.push((i, if ok { Transition::Up } else { Transition::Down }));
            }
        }
        (up, flips)
    }

    /// Every sequence of up to 12 results, for every rise and fall in 1..=4: the machine
    /// flips exactly where the model does.
    #[test]
    fn exhaustive_against_the_model() {
        for rise in 1..=4 {
            for fall in 1..=4 {
                let t = Thresholds { rise, fall };
                for len in 0..=12usize {
                    for bits in 0u32..(1 << len) {
                        let seq: Vec<bool> = (0..len).map(|i| bits & (1 << i) != 0).collect();
                        let mut s = HealthState::default();
                        let mut flips = Vec::new();
                        for (i, &ok) in seq.iter().enumerate() {
                            if let Some(tr) = s.observe(ok, t) {
                                flips.push((i, tr));
                            }
                        }
                        let (up, want) = model(&seq, t);
                        assert_eq!(s.is_up(), up, "rise {rise} fall {fall} seq {seq:?}");
                        assert_eq!(flips, want, "rise {rise} fall {fall} seq {seq:?}");
                    }
                }
            }
        }
    }

    /// From either unconfirmed start, every sequence of up to 12 results, for every
    /// rise and fall in 1..=4: the first result decides; from there on the machine
    /// flips exactly where the model does from the state that result left.
    #[test]
    fn exhaustive_from_an_unconfirmed_start() {
        for start in [true, false] {
            for rise in 1..=4 {
                for fall in 1..=4 {
                    let t = Thresholds { rise, fall };
                    for len in 1..=12usize {
                        for bits in 0u32..(1 << len) {
                            let seq: Vec<bool> = (0..len).map(|i| bits & (1 << i) != 0).collect();
                            let mut s = HealthState::unconfirmed(start);
                            let mut flips = Vec::new();
                            for (i, &ok) in seq.iter().enumerate() {
                                if let Some(tr) = s.observe(ok, t) {
                                    flips.push((i, tr));
                                }
                            }
                            // The model: the first result sets the state, then rise/fall.
                            let first = seq[0];
                            let mut want = Vec::new();
                            if first != start {
                                want.push((
                                    0,
                                    if first {
                                        Transition::Up
                                    } else {
                                        Transition::Down
                                    },
                                ));
                            }
                            let (up, rest) = model_from(first, &seq[1..], t);
                            want.extend(rest.into_iter().map(|(i, tr)| (i + 1, tr)));
                            assert_eq!(
                                s.is_up(),
                                up,
                                "start {start} rise {rise} fall {fall} seq {seq:?}"
                            );
                            assert_eq!(
                                flips, want,
                                "start {start} rise {rise} fall {fall} seq {seq:?}"
                            );
                            assert!(!s.is_unconfirmed());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn passive_failures_need_fall_and_only_their_verdict_confirms() {
        let t = Thresholds { rise: 2, fall: 3 };
        let w = Duration::from_secs(6);
        let mut s = HealthState::unconfirmed(true);
        assert_eq!(s.observe_passive(Duration::ZERO, w, t), None);
        assert!(s.is_unconfirmed());
        assert_eq!(
            s.observe(false, t),
            Some(Transition::Down),
            "the first check decides"
        );
        let mut s = HealthState::unconfirmed(true);
        s.observe_passive(Duration::ZERO, w, t);
        s.observe_passive(Duration::ZERO, w, t);
        assert_eq!(
            s.observe_passive(Duration::ZERO, w, t),
            Some(Transition::Down)
        );
        assert!(!s.is_unconfirmed());
        assert_eq!(s.observe(true, t), None, "rise = 2 from here");
        assert_eq!(s.observe(true, t), Some(Transition::Up));
    }

    #[test]
    fn fall_failures_in_a_row_take_it_down_and_a_success_resets_the_count() {
        let t = Thresholds { rise: 2, fall: 3 };
        let mut s = HealthState::default();
        assert_eq!(s.observe(false, t), None);
        assert_eq!(s.observe(false, t), None);
        assert_eq!(s.observe(true, t), None, "interrupted");
        assert_eq!(s.observe(false, t), None);
        assert_eq!(s.observe(false, t), None);
        assert_eq!(s.observe(false, t), Some(Transition::Down));
        assert!(!s.is_up());
        assert_eq!(s.observe(true, t), None);
        assert_eq!(s.observe(true, t), Some(Transition::Up));
        assert!(s.is_up());
    }

    #[test]
    fn passive_failures_count_only_when_they_come_close_together() {
        let t = Thresholds { rise: 2, fall: 3 };
        let w = Duration::from_secs(6);
        let secs = Duration::from_secs;
        // One failure every 10 s, for an hour: never down.
        let mut s = HealthState::default();
        for i in 0..360 {
            assert_eq!(s.observe_passive(secs(10 * i), w, t), None, "{i}");
        }
        assert!(s.is_up());
        // Three within the window: down at the third.
        let mut s = HealthState::default();
        assert_eq!(s.observe_passive(secs(100), w, t), None);
        assert_eq!(s.observe_passive(secs(103), w, t), None);
        assert_eq!(s.observe_passive(secs(106), w, t), Some(Transition::Down));
        // While down they change nothing; successes (a re-check) bring it back.
        assert_eq!(s.observe_passive(secs(107), w, t), None);
        assert_eq!(s.observe(true, t), None);
        assert_eq!(s.observe(true, t), Some(Transition::Up));
        // A gap beyond the window in the middle starts the count over.
        let mut s = HealthState::default();
        s.observe_passive(secs(0), w, t);
        s.observe_passive(secs(1), w, t);
        assert_eq!(s.observe_passive(secs(20), w, t), None);
        assert_eq!(s.streak(), 1);
    }

    #[test]
    fn transitions_alternate_and_never_repeat() {
        let t = Thresholds { rise: 1, fall: 1 };
        let mut s = HealthState::default();
        let mut last = None;
        for i in 0..100 {
            if let Some(tr) = s.observe(i % 3 == 0, t) {
                assert_ne!(Some(tr), last);
                last = Some(tr);
            }
        }
    }
}
