//! Smooth weighted round robin as a fixed order of turns: each backend appears
//! weight / g times in a cycle of sum(weight) / g turns (g: the weights' greatest
//! common divisor), spread evenly. Backend `b`'s k-th turn stands at (k + 1/2) /
//! weight(b) of the cycle, and turns are taken in that order (ties by backend
//! order), so no backend waits much longer than its fair gap (NGINX's smooth
//! weighted order has the same property). Built once per backend set; a turn is an
//! index into it.

/// At most this many turns in a cycle: larger weight sums are scaled down (each
/// weight keeps at least one turn).
pub const MAX_TURNS: u64 = 1 << 18;

/// The order of turns.
#[derive(Debug, Clone)]
pub struct Rotation {
    turns: std::sync::Arc<[u32]>,
}

impl Rotation {
    /// The rotation of backends with these weights (in backend order).
    pub fn new(weights: &[u32]) -> Rotation {
        let g = weights.iter().fold(0u32, |g, &w| gcd(g, w)).max(1);
        let mut per: Vec<u64> = weights.iter().map(|&w| u64::from(w / g)).collect();
        let sum: u64 = per.iter().sum();
        if sum > MAX_TURNS {
            for p in &mut per {
                *p = (*p * MAX_TURNS / sum).max(1);
            }
        }
        // Turn k of backend b at (2k + 1) / (2 w_b): compare as fractions.
        let mut turns: Vec<(u64, u64, u32)> = Vec::new();
        for (b, &w) in per.iter().enumerate() {
            for k in 0..w {
                turns.push((2 * k + 1, 2 * w, b as u32));
            }
        }
        turns.sort_by(|x, y| {
            (u128::from(x.0) * u128::from(y.1))
                .cmp(&(u128::from(y.0) * u128::from(x.1)))
                .then(x.2.cmp(&y.2))
        });
        Rotation {
            turns: turns.into_iter().map(|t| t.2).collect(),
        }
    }

    /// The backends of turn `t` and the turns after it, one cycle.
    pub fn from(&self, t: u64) -> impl Iterator<Item = usize> + '_ {
        let len = self.turns.len();
        let start = if len == 0 {
            0
        } else {
            (t % len as u64) as usize
        };
        self.turns[start..]
            .iter()
            .chain(&self.turns[..start])
            .map(|&b| b as usize)
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::Rotation;

    fn cycle(w: &[u32]) -> Vec<usize> {
        let r = Rotation::new(w);
        r.from(0).collect()
    }

    #[test]
    fn equal_weights_take_turns_in_order() {
        assert_eq!(cycle(&[1, 1, 1]), [0, 1, 2]);
        assert_eq!(cycle(&[5, 5]), [0, 1]);
        assert!(cycle(&[]).is_empty());
    }

    #[test]
    fn weights_share_a_cycle_and_spread_out() {
        let c = cycle(&[5, 1, 1]);
        assert_eq!(c.len(), 7);
        assert_eq!(c.iter().filter(|&&b| b == 0).count(), 5);
        // The light ones are not bunched together at one end.
        let pos: Vec<usize> = (0..7).filter(|&i| c[i] != 0).collect();
        assert!(pos[1] - pos[0] >= 1 && pos[0] > 0, "{c:?}");
        // No backend of weight 5 waits more than 2 turns in a row.
        let longest = c.split(|&b| b == 0).map(<[usize]>::len).max().unwrap();
        assert!(longest <= 2, "{c:?}");
    }

    #[test]
    fn turns_wrap_and_start_anywhere() {
        let r = Rotation::new(&[1, 2]);
        let all: Vec<usize> = r.from(0).collect();
        let later: Vec<usize> = r.from(4).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(later[0], all[1]);
    }

    #[test]
    fn huge_weight_sums_are_scaled_down_not_dropped() {
        let w: Vec<u32> = (0..1000).map(|i| 1000 - (i % 2)).collect();
        let r = Rotation::new(&w);
        assert!(r.from(0).count() as u64 <= super::MAX_TURNS + 1000);
        let mut seen = vec![0; 1000];
        for b in r.from(0) {
            seen[b] += 1;
        }
        assert!(seen.iter().all(|&n| n >= 1));
    }
}
