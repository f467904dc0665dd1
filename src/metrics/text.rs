//! The Prometheus text exposition format (version 0.0.4), written straight from
//! ringway's own counters: one family at a time (`# HELP`, `# TYPE`, then its
//! samples), label values escaped, numbers as Prometheus parses them.
//!
//! Rendering from the data where it lives, rather than copying it into a metrics
//! registry on every scrape, keeps no state between scrapes: with thousands of backends
//! a registry held tens of megabytes of series and every check's duration until the
//! next scrape, and took 45 µs of CPU per backend per scrape (docs/BENCHMARKS.md).

use std::fmt::Write as _;

use super::carry::{self, Offsets};

/// A response being written.
#[derive(Debug, Default)]
pub struct Text<'a> {
    out: String,
    /// What an older process counted, added to counters and histograms.
    offsets: Option<&'a Offsets>,
    /// The current family is carried (a counter or a histogram).
    carry: bool,
}

/// A sample's value.
#[derive(Debug, Clone, Copy)]
pub enum Value {
    /// A count.
    Int(u64),
    /// Anything else.
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl<'a> Text<'a> {
    /// An empty response with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Text<'a> {
        Text {
            out: String::with_capacity(capacity),
            offsets: None,
            carry: false,
        }
    }

    /// Adds `offsets` (what an older process counted) to every counter and histogram
    /// series they name, but the families of [`carry::NOT_FROM_TEXT`].
    pub fn carrying(mut self, offsets: Option<&'a Offsets>) -> Text<'a> {
        self.offsets = offsets.filter(|o| !o.is_empty());
        self
    }

    /// Starts a family: its help and type lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self.carry = self.offsets.is_some()
            && matches!(kind, "counter" | "histogram")
            && !carry::NOT_FROM_TEXT.contains(&name);
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        let start = self.out.len();
        self.out.push_str(name);
        self.labels(labels, None);
        self.end(start, value.into());
    }

    /// Ends the sample whose series was written from `start`: its value, plus what
    /// was carried for it.
    fn end(&mut self, start: usize, value: Value) {
        let offset = match self.offsets {
            Some(o) if self.carry => o.of(&self.out[start..]),
            _ => None,
        };
        let value = match (value, offset) {
            (v, None) => v,
            (Value::Int(n), Some(o)) if o >= 0.0 && o.fract() == 0.0 && o < 2f64.powi(63) => {
                Value::Int(n.saturating_add(o as u64))
            }
            (Value::Int(n), Some(o)) => Value::Float(n as f64 + o),
            (Value::Float(f), Some(o)) => Value::Float(f + o),
        };
        self.out.push(' ');
        self.value(value);
        self.out.push('\n');
    }

    /// A histogram's samples: each bucket (cumulative, `le` last among the labels),
    /// then the sum and the count.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &super::histogram::Histogram,
    ) {
        let mut bound = String::new();
        for (le, n) in h.cumulative() {
            bound.clear();
            push_number(&mut bound, le);
            let start = self.out.len();
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&bound));
            self.end(start, Value::Int(n));
        }
        let start = self.out.len();
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        self.end(start, Value::Float(h.sum()));
        let start = self.out.len();
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        self.end(start, Value::Int(h.count()));
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(|v| ("le", v));
        for (i, (k, v)) in labels.iter().copied().chain(le).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_value(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn value(&mut self, v: Value) {
        match v {
            Value::Int(n) => {
                let _ = write!(self.out, "{n}");
            }
            Value::Float(f) => push_number(&mut self.out, f),
        }
    }
}

/// A float as Prometheus parses it (`+Inf`, `-Inf`, `NaN`; otherwise Rust's shortest
/// round-trip form, which Go's `ParseFloat` reads).
fn push_number(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f == f64::INFINITY {
        out.push_str("+Inf");
    } else if f == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{f}");
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A help text with `\` and newlines escaped.
fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_numbers() {
        let mut t = Text::default();
        t.family("x_total", "counter", "Things\\ counted\nhere");
        t.sample("x_total", &[("a", "q\"uo\\te\nd"), ("b", "2")], 7u64);
        t.sample("x_total", &[], 0.25);
        t.sample("x_total", &[], f64::INFINITY);
        t.sample("x_total", &[], 1e-7);
        let s = t.finish();
        assert_eq!(
            s,
            "# HELP x_total Things\\\\ counted\\nhere\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"uo\\\\te\\nd\",b=\"2\"} 7\nx_total 0.25\nx_total +Inf\nx_total 0.0000001\n"
        );
    }

    #[test]
    fn a_histogram_is_cumulative_with_le_last() {
        let mut h = super::super::histogram::Histogram::default();
        h.record(0.003);
        let mut t = Text::default();
        t.histogram("d_seconds", &[("l", "x")], &h);
        let s = t.finish();
        assert!(
            s.contains("d_seconds_bucket{l=\"x\",le=\"0.0025\"} 0\n"),
            "{s}"
        );
        assert!(
            s.contains("d_seconds_bucket{l=\"x\",le=\"0.005\"} 1\n"),
            "{s}"
        );
        assert!(
            s.contains("d_seconds_bucket{l=\"x\",le=\"+Inf\"} 1\n"),
            "{s}"
        );
        assert!(s.contains("d_seconds_sum{l=\"x\"} 0.003\n"), "{s}");
        assert!(s.ends_with("d_seconds_count{l=\"x\"} 1\n"), "{s}");
    }
}
