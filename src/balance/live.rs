//! Which points of a ring are live: one bit per point, plus a summary with one bit per
//! word of points, so that "the first live point at or after `i`" costs a few word
//! operations however sparse the live points are. Pure: no I/O, no clock.
//!
//! This is how a snapshot says which backends take new flows without copying the ring:
//! the ring of every backend is built once and shared; a backend going down clears its
//! points' bits (12 bytes of ring per point, 1 bit here). Looking a key up is the
//! ring's search for its position, then [`Live::next`] from there: the first live point
//! clockwise, exactly what a ring rebuilt without the down backends would give.

/// Bits per word.
const W: usize = 64;

/// A set of point indices `0..len` (the positions in a ring), with cyclic search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    len: usize,
    /// Bit `i % 64` of word `i / 64` is set when point `i` is live.
    words: Vec<u64>,
    /// Bit `w % 64` of word `w / 64` is set when `words[w]` is not zero.
    summary: Vec<u64>,
    /// Live points.
    count: usize,
}

impl Live {
    /// No point of `len` is live.
    pub fn none(len: usize) -> Live {
        let words = len.div_ceil(W);
        Live {
            len,
            words: vec![0; words],
            summary: vec![0; words.div_ceil(W)],
            count: 0,
        }
    }

    /// Every point of `len` is live.
    pub fn all(len: usize) -> Live {
        let mut live = Live::none(len);
        for (w, word) in live.words.iter_mut().enumerate() {
            let bits = (len - w * W).min(W);
            *word = if bits == W { !0 } else { (1u64 << bits) - 1 };
            live.summary[w / W] |= 1 << (w % W);
        }
        live.count = len;
        live
    }

    /// Points (live or not).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no points at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live points.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether point `i` is live.
    ///
    /// # Panics
    /// Panics if `i >= len`.
    pub fn is_live(&self, i: usize) -> bool {
        assert!(i < self.len, "point {i} of {}", self.len);
        self.words[i / W] & (1 << (i % W)) != 0
    }

    /// Makes point `i` live or not; true when that changed it.
    ///
    /// # Panics
    /// Panics if `i >= len`.
    pub fn set(&mut self, i: usize, live: bool) -> bool {
        if self.is_live(i) == live {
            return false;
        }
        let (w, bit) = (i / W, 1u64 << (i % W));
        if live {
            self.words[w] |= bit;
            self.summary[w / W] |= 1 << (w % W);
            self.count += 1;
        } else {
            self.words[w] &= !bit;
            if self.words[w] == 0 {
                self.summary[w / W] &= !(1 << (w % W));
            }
            self.count -= 1;
        }
        true
    }

    /// The first live point at or after `i`, wrapping past the last point to the first;
    /// `None` when none is live.
    pub fn next(&self, i: usize) -> Option<usize> {
        self.next_from(i).or_else(|| self.next_from(0))
    }

    /// The last live point before `i`, wrapping before the first point to the last (`i`
    /// itself when it is the only live point); `None` when none is live.
    pub fn prev(&self, i: usize) -> Option<usize> {
        let before = i.checked_sub(1).and_then(|j| self.prev_from(j));
        before.or_else(|| self.prev_from(self.len.checked_sub(1)?))
    }

    /// The live points in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * W + b
                })
            })
        })
    }

    /// The first live point in `i..len`.
    fn next_from(&self, i: usize) -> Option<usize> {
        if i >= self.len {
            return None;
        }
        let w = i / W;
        let here = self.words[w] & (!0u64 << (i % W));
        if here != 0 {
            return Some(w * W + here.trailing_zeros() as usize);
        }
        let w = self.next_word(w + 1)?;
        Some(w * W + self.words[w].trailing_zeros() as usize)
    }

    /// The last live point in `0..=i`.
    fn prev_from(&self, i: usize) -> Option<usize> {
        let i = i.min(self.len.checked_sub(1)?);
        let w = i / W;
        let keep = i % W;
        let mask = if keep == W - 1 {
            !0
        } else {
            (1u64 << (keep + 1)) - 1
        };
        let here = self.words[w] & mask;
        if here != 0 {
            return Some(w * W + (W - 1 - here.leading_zeros() as usize));
        }
        let w = self.prev_word(w.checked_sub(1)?)?;
        Some(w * W + (W - 1 - self.words[w].leading_zeros() as usize))
    }

    /// The first word at or after `w` that is not zero.
    fn next_word(&self, w: usize) -> Option<usize> {
        let mut s = w / W;
        let mut bits = *self.summary.get(s)? & (!0u64 << (w % W));
        loop {
            if bits != 0 {
                return Some(s * W + bits.trailing_zeros() as usize);
            }
            s += 1;
            bits = *self.summary.get(s)?;
        }
    }

    /// The last word at or before `w` that is not zero.
    fn prev_word(&self, w: usize) -> Option<usize> {
        let mut s = w / W;
        let keep = w % W;
        let mask = if keep == W - 1 {
            !0
        } else {
            (1u64 << (keep + 1)) - 1
        };
        let mut bits = self.summary[s] & mask;
        loop {
            if bits != 0 {
                return Some(s * W + (W - 1 - bits.leading_zeros() as usize));
            }
            s = s.checked_sub(1)?;
            bits = self.summary[s];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model: a plain list of flags.
    fn model_next(flags: &[bool], i: usize) -> Option<usize> {
        let n = flags.len();
        (0..n).map(|d| (i + d) % n).find(|&j| flags[j])
    }

    fn model_prev(flags: &[bool], i: usize) -> Option<usize> {
        let n = flags.len();
        (1..=n).map(|d| (i + n - d) % n).find(|&j| flags[j])
    }

    fn build(flags: &[bool]) -> Live {
        let mut live = Live::none(flags.len());
        for (i, &f) in flags.iter().enumerate() {
            live.set(i, f);
        }
        live
    }

    #[test]
    fn all_and_none() {
        for len in [0usize, 1, 63, 64, 65, 4095, 4096, 4097, 300_000] {
            let all = Live::all(len);
            assert_eq!(all.count(), len);
            assert_eq!(all.iter().count(), len);
            assert_eq!(all, build(&vec![true; len]), "len {len}");
            let none = Live::none(len);
            assert_eq!(none.next(0), None);
            assert_eq!(none.prev(0), None);
        }
    }

    #[test]
    fn a_single_live_point_is_its_own_neighbour() {
        let mut l = Live::none(10_000);
        l.set(7_777, true);
        assert_eq!(l.next(0), Some(7_777));
        assert_eq!(l.next(7_778), Some(7_777));
        assert_eq!(l.prev(7_777), Some(7_777));
        assert_eq!(l.prev(0), Some(7_777));
    }

    /// Sparse and dense patterns across word and summary boundaries, against the model.
    #[test]
    fn boundaries_against_the_model() {
        for len in [1usize, 64, 65, 4096, 4160, 9000] {
            for stride in [1usize, 2, 63, 64, 65, 4095, 4096, 4097] {
                let flags: Vec<bool> = (0..len).map(|i| i % stride == stride - 1).collect();
                let l = build(&flags);
                for i in (0..len).step_by((len / 97).max(1)).chain([0, len - 1]) {
                    assert_eq!(
                        l.next(i),
                        model_next(&flags, i),
                        "len {len} stride {stride} next {i}"
                    );
                    assert_eq!(
                        l.prev(i),
                        model_prev(&flags, i),
                        "len {len} stride {stride} prev {i}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn random_sets_and_clears_agree_with_the_model(
            len in 1usize..20_000,
            ops in proptest::collection::vec((any::<usize>(), any::<bool>()), 0..400),
            probes in proptest::collection::vec(any::<usize>(), 1..50),
        ) {
            let mut flags = vec![false; len];
            let mut l = Live::none(len);
            for (i, on) in ops {
                let i = i % len;
                prop_assert_eq!(l.set(i, on), flags[i] != on);
                flags[i] = on;
            }
            prop_assert_eq!(l.count(), flags.iter().filter(|&&f| f).count());
            prop_assert_eq!(l.iter().collect::<Vec<_>>(), (0..len).filter(|&i| flags[i]).collect::<Vec<_>>());
            for p in probes {
                let p = p % len;
                prop_assert_eq!(l.next(p), model_next(&flags, p));
                prop_assert_eq!(l.prev(p), model_prev(&flags, p));
            }
        }
    }
}
