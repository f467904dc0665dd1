//! Who owns each point of a ring: a member index per point, stored in two bytes when
//! the ring has at most 65,536 members (every ring a config can have in practice), four
//! otherwise. A ring of 4,000 backends at 1,024 points each has 4 million points: the
//! narrow table saves 8 MB of its 48.

/// Member indices, one per point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owners {
    /// Up to 65,536 members.
    Narrow(Vec<u16>),
    /// More.
    Wide(Vec<u32>),
}

impl Default for Owners {
    fn default() -> Owners {
        Owners::Narrow(Vec::new())
    }
}

impl Owners {
    /// An empty table with room for `len` points, for a ring of `members` members.
    pub fn with_capacity(len: usize, members: usize) -> Owners {
        if members <= 1 << 16 {
            Owners::Narrow(Vec::with_capacity(len))
        } else {
            Owners::Wide(Vec::with_capacity(len))
        }
    }

    /// The owner of point `i`.
    #[inline]
    pub fn get(&self, i: usize) -> usize {
        match self {
            Owners::Narrow(v) => v[i] as usize,
            Owners::Wide(v) => v[i] as usize,
        }
    }

    /// Makes `owner` the owner of point `i`.
    pub fn set(&mut self, i: usize, owner: usize) {
        match self {
            Owners::Narrow(v) => v[i] = owner as u16,
            Owners::Wide(v) => v[i] = owner as u32,
        }
    }

    /// Swaps the owners of points `i` and `j`.
    pub fn swap(&mut self, i: usize, j: usize) {
        match self {
            Owners::Narrow(v) => v.swap(i, j),
            Owners::Wide(v) => v.swap(i, j),
        }
    }

    /// Appends a point owned by `owner`.
    pub fn push(&mut self, owner: usize) {
        match self {
            Owners::Narrow(v) => v.push(owner as u16),
            Owners::Wide(v) => v.push(owner as u32),
        }
    }

    /// Points.
    pub fn len(&self) -> usize {
        match self {
            Owners::Narrow(v) => v.len(),
            Owners::Wide(v) => v.len(),
        }
    }

    /// Frees spare capacity.
    pub fn shrink_to_fit(&mut self) {
        match self {
            Owners::Narrow(v) => v.shrink_to_fit(),
            Owners::Wide(v) => v.shrink_to_fit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_up_to_65536_members_wide_beyond_and_both_hold_every_index() {
        let mut n = Owners::with_capacity(3, 1 << 16);
        assert!(matches!(n, Owners::Narrow(_)));
        for o in [0, 1, 2] {
            n.push(o);
        }
        n.set(2, 65_535);
        n.swap(0, 2);
        assert_eq!((n.get(0), n.get(2)), (65_535, 0));
        let mut w = Owners::with_capacity(1, (1 << 16) + 1);
        assert!(matches!(w, Owners::Wide(_)));
        w.push(70_000);
        assert_eq!((w.get(0), w.len()), (70_000, 1));
    }
}
