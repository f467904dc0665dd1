//! Counters that continue across a binary upgrade: the old process reads its own
//! `/metrics` text ([`totals`]) and hands the new one every counter and histogram
//! series; the new one adds them to what it counts ([`Offsets`], applied as the text
//! is written). Gauges are not carried: they say what is now.
//!
//! The exposition text is the one place that knows every series, so a counter added
//! later is carried without anyone remembering to: a series is its name and labels,
//! exactly as written, and a series the new config no longer has is simply not shown.

use std::collections::HashMap;

/// Families carried some other way (in the health and upgrade state), not from the
/// text.
pub const NOT_FROM_TEXT: &[&str] = &[
    super::names::HEALTH_CHECKS,
    super::names::HEALTH_CHECK_DURATION,
    super::names::BACKEND_TRANSITIONS,
    super::names::UPGRADES,
];

/// What an old process had counted, per series (`name{labels}` as written).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Offsets(HashMap<String, f64>);

impl Offsets {
    /// The offsets of `series` (`(series, value)` pairs, as [`totals`] gives them).
    pub fn new(series: Vec<(String, f64)>) -> Offsets {
        Offsets(series.into_iter().collect())
    }

    /// The offset of one series (0 when it was not carried).
    pub fn of(&self, series: &str) -> Option<f64> {
        self.0.get(series).copied()
    }

    /// Nothing carried.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every sample of a counter or histogram family of `text` (Prometheus text format,
/// as [`super::render`] writes it), but the families in `skip`: `(series, value)`.
pub fn totals(text: &str, skip: &[&str]) -> Vec<(String, f64)> {
    let mut carried = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            carried = matches!(kind, "counter" | "histogram") && !skip.contains(&name);
            continue;
        }
        if !carried || line.starts_with('#') {
            continue;
        }
        // The value is after the last space (label values may hold spaces).
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        if value != 0.0 && value.is_finite() {
            out.push((series.to_string(), value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::text::Text;

    #[test]
    fn counters_and_histograms_are_read_gauges_and_skipped_families_not() {
        let mut t = Text::default();
        t.family("a_total", "counter", "a");
        t.sample("a_total", &[("l", "x y\"z")], 7u64);
        t.sample("a_total", &[("l", "zero")], 0u64);
        t.family("g", "gauge", "g");
        t.sample("g", &[], 3u64);
        t.family("s_total", "counter", "s");
        t.sample("s_total", &[], 2u64);
        let mut h = crate::metrics::Histogram::default();
        h.record(0.003);
        t.family("d_seconds", "histogram", "d");
        t.histogram("d_seconds", &[("b", "1")], &h);
        let got = totals(&t.finish(), &["s_total"]);
        assert!(
            got.contains(&("a_total{l=\"x y\\\"z\"}".to_string(), 7.0)),
            "{got:?}"
        );
        assert!(got.contains(&("d_seconds_bucket{b=\"1\",le=\"0.005\"}".to_string(), 1.0)));
        assert!(got.contains(&("d_seconds_bucket{b=\"1\",le=\"+Inf\"}".to_string(), 1.0)));
        assert!(got.contains(&("d_seconds_sum{b=\"1\"}".to_string(), 0.003)));
        assert!(got.contains(&("d_seconds_count{b=\"1\"}".to_string(), 1.0)));
        assert!(got
            .iter()
            .all(|(s, _)| !s.starts_with('g') && !s.starts_with("s_total")));
        assert!(got.iter().all(|(_, v)| *v != 0.0), "zeros are not carried");
    }

    #[test]
    fn offsets_continue_the_counts_they_were_read_from() {
        let write = |offsets: Option<&Offsets>, n: u64| {
            let mut t = Text::default().carrying(offsets);
            t.family("a_total", "counter", "a");
            t.sample("a_total", &[("l", "x")], n);
            t.family("g", "gauge", "g");
            t.sample("g", &[], n);
            let mut h = crate::metrics::Histogram::default();
            for _ in 0..n {
                h.record(0.5);
            }
            t.family("d_seconds", "histogram", "d");
            t.histogram("d_seconds", &[], &h);
            t.finish()
        };
        // Process 1 counted 5; process 2 counts 3 more; process 3 counts 1 more.
        let one = Offsets::new(totals(&write(None, 5), &[]));
        let two = Offsets::new(totals(&write(Some(&one), 3), &[]));
        let three = write(Some(&two), 1);
        assert!(three.contains("a_total{l=\"x\"} 9\n"), "{three}");
        assert!(three.contains("\ng 1\n"), "gauges say what is now: {three}");
        assert!(three.contains("d_seconds_count 9\n"), "{three}");
        assert!(
            three.contains("d_seconds_bucket{le=\"+Inf\"} 9\n"),
            "{three}"
        );
        assert!(three.contains("d_seconds_sum 4.5\n"), "{three}");
    }
}
