//! A histogram with fixed buckets, counted where the values are observed (the control
//! task, for check durations) and copied into views: no sample is kept, so its size
//! never grows, whether anyone scrapes or not.

use super::names::DURATION_BUCKETS;

/// Buckets of [`DURATION_BUCKETS`] plus `+Inf`.
const SLOTS: usize = crate::shard::DURATION_SLOTS;

/// Counts of observations at or below each bound (not cumulative), their sum and how
/// many.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Histogram {
    counts: [u64; SLOTS],
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::EMPTY
    }
}

impl Histogram {
    /// No observation yet.
    pub const EMPTY: Histogram = Histogram {
        counts: [0; SLOTS],
        sum: 0.0,
    };

    /// The histogram of what `counts` (one per bucket, not cumulative, `+Inf` last)
    /// and `sum` say (the data plane's [`crate::shard::Durations`], summed).
    pub fn from_counts(counts: [u64; SLOTS], sum: f64) -> Histogram {
        Histogram { counts, sum }
    }

    /// Per bucket (not cumulative, `+Inf` last).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The histogram of `counts` (as [`Histogram::counts`] gave them) and `sum`;
    /// `None` when their number is not this binary's.
    pub fn from_parts(counts: &[u64], sum: f64) -> Option<Histogram> {
        Some(Histogram {
            counts: counts.try_into().ok()?,
            sum,
        })
    }

    /// Counts one observation of `value` (seconds).
    pub fn record(&mut self, value: f64) {
        let slot = DURATION_BUCKETS.partition_point(|&b| b < value);
        self.counts[slot] += 1;
        self.sum += value;
    }

    /// `(upper bound, cumulative count)` per bucket, `+Inf` last.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = DURATION_BUCKETS.iter().copied().chain([f64::INFINITY]);
        bounds.zip(self.counts.iter().scan(0u64, |acc, &c| {
            *acc += c;
            Some(*acc)
        }))
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum.
    pub fn sum(&self) -> f64 {
        self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_a_bound_counts_in_that_bucket_and_the_rest_in_inf() {
        let mut h = Histogram::default();
        h.record(0.001);
        h.record(0.0011);
        h.record(99.0);
        let c: Vec<(f64, u64)> = h.cumulative().collect();
        assert_eq!(c[0], (0.0005, 0));
        assert_eq!(c[1], (0.001, 1), "le is inclusive");
        assert_eq!(c[2], (0.0025, 2));
        assert_eq!(*c.last().unwrap(), (f64::INFINITY, 3));
        assert_eq!(h.count(), 3);
        assert!((h.sum() - 99.0021).abs() < 1e-9);
    }
}
