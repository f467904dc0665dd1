//! Which members a walk of the ring has met: one bit each, allocated at first use
//! (most walks stop at the first member, which needs no memory).

#[derive(Debug, Default)]
pub(crate) struct Seen {
    bits: Vec<u64>,
}

impl Seen {
    /// True the first time `member` (one of `members`) is met, false after.
    pub(crate) fn first(&mut self, member: usize, members: usize) -> bool {
        if self.bits.is_empty() {
            self.bits = vec![0u64; members.div_ceil(64)];
        }
        let (word, bit) = (member / 64, 1u64 << (member % 64));
        let new = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::Seen;

    #[test]
    fn each_member_is_first_once() {
        let mut s = Seen::default();
        assert!(s.bits.is_empty(), "nothing allocated before the first call");
        let got: Vec<bool> = [0, 63, 64, 129, 0, 64, 5, 129]
            .iter()
            .map(|&m| s.first(m, 130))
            .collect();
        assert_eq!(got, [true, true, true, true, false, false, true, false]);
    }
}
