//! At most one log line a second per kind of event, counting the ones held back.

use super::timers::Millis;

/// One second.
const EVERY: Millis = 1000;

/// Allows one log line per second and counts the ones it held back.
#[derive(Debug, Default)]
pub struct RateLimit {
    last: Option<Millis>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(lines held back since the last one allowed)` when a line may be logged now.
    pub fn allow(&mut self, now: Millis) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_sub(t) < EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second() {
        let mut r = RateLimit::default();
        assert_eq!(r.allow(0), Some(0));
        assert_eq!(r.allow(10), None);
        assert_eq!(r.allow(999), None);
        assert_eq!(r.allow(1000), Some(2));
        assert_eq!(r.allow(1500), None);
    }
}
