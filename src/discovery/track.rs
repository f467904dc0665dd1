//! What each answer does to a set, over time. Pure: no I/O, no clock.
//!
//! - A set of addresses replaces the set's members.
//! - A failure (timeout, SERVFAIL, refused, an answer with no addresses) keeps the last
//!   good set: DNS trouble must not empty a working pool.
//! - NXDOMAIN keeps it too, until `nxdomain_after` NXDOMAINs in a row: then the set is
//!   emptied (the name was removed on purpose; waiting longer would keep dead backends).
//!
//! Every failed or NXDOMAIN answer is counted (`ringway_resolver_errors_total`); a
//! [`Note`] is returned only when the state changes, so the log says each change once.

use super::Answer;
use crate::config::Member;

/// What to do with the set's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Make these the members.
    Apply(Vec<Member>),
    /// Keep the members it has.
    Keep,
    /// Empty the set.
    Empty,
}

/// A change of state worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Answers again after failures or NXDOMAINs.
    Recovered,
    /// Started failing: why (the set is kept).
    Failing(String),
    /// The first NXDOMAIN in a row: kept for now.
    Missing,
    /// `nxdomain_after` NXDOMAINs in a row: emptied.
    Emptied(u32),
}

/// One set's history.
#[derive(Debug, Default, Clone)]
pub struct SetTrack {
    state: State,
    nxdomains: u32,
    errors: u64,
    /// Addresses left out of answers so far.
    refused: u64,
    /// What the last answer left out (a change is logged, a repeat is not).
    last_refused: super::filter::Refused,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Good,
    Failing,
    Missing,
}

impl SetTrack {
    /// Failed and NXDOMAIN answers so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Addresses left out of answers so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Counts what an answer left out; true when it differs from what the previous
    /// answer left out (worth a log line).
    pub fn left_out(&mut self, refused: &super::filter::Refused) -> bool {
        self.refused += refused.len() as u64;
        if *refused == self.last_refused {
            return false;
        }
        self.last_refused = refused.clone();
        !refused.is_empty()
    }

    /// Takes one answer.
    pub fn answer(&mut self, answer: &Answer, nxdomain_after: u32) -> (Verdict, Option<Note>) {
        let was = self.state;
        match answer {
            Answer::Found { members, .. } => {
                self.state = State::Good;
                self.nxdomains = 0;
                let note = (was != State::Good).then_some(Note::Recovered);
                (Verdict::Apply(members.clone()), note)
            }
            Answer::Failed(why) => {
                self.errors += 1;
                self.state = State::Failing;
                self.nxdomains = 0;
                let note = (was != State::Failing).then(|| Note::Failing(why.clone()));
                (Verdict::Keep, note)
            }
            Answer::NxDomain => {
                self.errors += 1;
                self.state = State::Missing;
                self.nxdomains = self.nxdomains.saturating_add(1);
                if self.nxdomains >= nxdomain_after {
                    let note =
                        (self.nxdomains == nxdomain_after).then_some(Note::Emptied(nxdomain_after));
                    (Verdict::Empty, note)
                } else {
                    let note = (was != State::Missing).then_some(Note::Missing);
                    (Verdict::Keep, note)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn found(n: u8) -> Answer {
        Answer::Found {
            members: (1..=n)
                .map(|i| Member {
                    addr: format!("10.0.0.{i}:80").parse().unwrap(),
                    weight: 1,
                })
                .collect(),
            ttl: Duration::from_secs(5),
        }
    }

    #[test]
    fn failures_keep_the_set_and_are_noted_once() {
        let mut t = SetTrack::default();
        assert!(matches!(t.answer(&found(2), 3), (Verdict::Apply(m), None) if m.len() == 2));
        let fail = Answer::Failed("timed out".into());
        assert_eq!(
            t.answer(&fail, 3),
            (Verdict::Keep, Some(Note::Failing("timed out".into())))
        );
        for _ in 0..10 {
            assert_eq!(t.answer(&fail, 3), (Verdict::Keep, None));
        }
        assert_eq!(t.errors(), 11);
        assert!(matches!(
            t.answer(&found(1), 3),
            (Verdict::Apply(_), Some(Note::Recovered))
        ));
        assert!(matches!(t.answer(&found(1), 3), (Verdict::Apply(_), None)));
    }

    #[test]
    fn nxdomain_empties_only_after_n_in_a_row() {
        let mut t = SetTrack::default();
        let nx = Answer::NxDomain;
        assert_eq!(t.answer(&nx, 3), (Verdict::Keep, Some(Note::Missing)));
        assert_eq!(t.answer(&nx, 3), (Verdict::Keep, None));
        // A failure in between restarts the count: only NXDOMAINs in a row empty a set.
        t.answer(&Answer::Failed("servfail".into()), 3);
        assert_eq!(t.answer(&nx, 3), (Verdict::Keep, Some(Note::Missing)));
        assert_eq!(t.answer(&nx, 3), (Verdict::Keep, None));
        assert_eq!(t.answer(&nx, 3), (Verdict::Empty, Some(Note::Emptied(3))));
        assert_eq!(t.answer(&nx, 3), (Verdict::Empty, None));
        assert!(matches!(
            t.answer(&found(1), 3),
            (Verdict::Apply(_), Some(Note::Recovered))
        ));
        assert_eq!(t.answer(&nx, 1), (Verdict::Empty, Some(Note::Emptied(1))));
    }

    #[test]
    fn any_sequence_counts_every_bad_answer_and_empties_only_after_a_run() {
        // Exhaustive over every sequence of 8 answers from {found, failed, nxdomain}.
        let answers = [found(1), Answer::Failed("x".into()), Answer::NxDomain];
        for code in 0..3u32.pow(8) {
            let mut t = SetTrack::default();
            let (mut c, mut run, mut bad) = (code, 0, 0);
            for _ in 0..8 {
                let a = &answers[(c % 3) as usize];
                c /= 3;
                let (v, _) = t.answer(a, 3);
                run = if matches!(a, Answer::NxDomain) {
                    run + 1
                } else {
                    0
                };
                bad += u64::from(!matches!(a, Answer::Found { .. }));
                match a {
                    Answer::Found { .. } => assert!(matches!(v, Verdict::Apply(_))),
                    Answer::Failed(_) => assert_eq!(v, Verdict::Keep),
                    Answer::NxDomain if run >= 3 => assert_eq!(v, Verdict::Empty),
                    Answer::NxDomain => assert_eq!(v, Verdict::Keep),
                }
            }
            assert_eq!(t.errors(), bad);
        }
    }
}
