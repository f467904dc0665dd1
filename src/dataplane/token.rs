//! Tokens: what an epoll event belongs to, and which life of it.
//!
//! A slot of a slab is reused as soon as its connection closes, so a token that named
//! only the slot could deliver an event of a connection closed earlier in the same
//! `epoll_wait` batch to the new connection that took its place (tokio's I/O driver
//! guards against this the same way). Every token therefore carries a [`Key`]: the
//! slot's index and the generation it had when the socket was registered. [`Slots`]
//! hands out keys and answers only to the current generation of a slot, so a stale
//! event finds nothing. This module is the one place where tokens are made and read.
//!
//! Layout of the 64 bits: kind (3) | index (32) | generation (29).

use mio::Token;
use slab::Slab;

/// Generations wrap after 2^29 insertions into one slab: a stale event would have to
/// survive that many new connections on one worker to be mistaken.
const GEN_BITS: u32 = 29;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
const KIND_BITS: u32 = 3;

const _: () = assert!(usize::BITS == 64, "tokens pack 64 bits");

/// One life of one slot: its index and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    index: u32,
    gen: u32,
}

impl std::hash::Hash for Key {
    /// One write of the packed bits (flow-table keys are hashed per datagram).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.pack());
    }
}

impl Key {
    /// The key packed into 61 bits (for timers).
    pub fn pack(self) -> u64 {
        (u64::from(self.index) << GEN_BITS) | u64::from(self.gen)
    }

    /// The inverse of [`Key::pack`].
    pub fn unpack(bits: u64) -> Key {
        Key {
            index: (bits >> GEN_BITS) as u32,
            gen: (bits as u32) & GEN_MASK,
        }
    }
}

/// What a token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The worker's waker (commands from the control plane).
    Waker,
    /// A TCP listening socket.
    TcpListener,
    /// A UDP listening socket.
    UdpListener,
    /// The client socket of a TCP session.
    Client,
    /// The backend socket of a TCP session.
    Backend,
    /// The upstream socket of a UDP flow.
    Flow,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Waker,
        Kind::TcpListener,
        Kind::UdpListener,
        Kind::Client,
        Kind::Backend,
        Kind::Flow,
    ];

    fn bits(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// The waker's token.
pub const WAKER: Token = Token(0);

/// The token of `kind` for `key`.
pub fn token(kind: Kind, key: Key) -> Token {
    Token((key.pack() as usize) << KIND_BITS | kind.bits())
}

/// What `token` names, `None` for a token no [`token`] call makes.
pub fn decode(token: Token) -> Option<(Kind, Key)> {
    let kind = *Kind::ALL.get(token.0 & ((1 << KIND_BITS) - 1))?;
    Some((kind, Key::unpack((token.0 >> KIND_BITS) as u64)))
}

/// A slab whose entries are reached by [`Key`]: a key of an entry removed since (even
/// if its slot holds a new entry now) finds nothing.
#[derive(Debug)]
pub struct Slots<T> {
    slab: Slab<(u32, T)>,
    next_gen: u32,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            slab: Slab::new(),
            next_gen: 0,
        }
    }
}

impl<T> Slots<T> {
    /// Builds an entry with the key it will have (so its sockets can be registered
    /// under their tokens first) and inserts it; inserts nothing when `build` fails.
    pub fn insert_with<E>(&mut self, build: impl FnOnce(Key) -> Result<T, E>) -> Result<Key, E> {
        let key = Key {
            index: u32::try_from(self.slab.vacant_key()).expect("fewer than 2^32 entries"),
            gen: self.next_gen,
        };
        let value = build(key)?;
        self.next_gen = (self.next_gen + 1) & GEN_MASK;
        self.slab.insert((key.gen, value));
        Ok(key)
    }

    /// The entry of `key`, if it is still that entry.
    pub fn get(&self, key: Key) -> Option<&T> {
        match self.slab.get(key.index as usize) {
            Some((gen, value)) if *gen == key.gen => Some(value),
            _ => None,
        }
    }

    /// The entry of `key`, mutably, if it is still that entry.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.slab.get_mut(key.index as usize) {
            Some((gen, value)) if *gen == key.gen => Some(value),
            _ => None,
        }
    }

    /// Removes and returns the entry of `key`, if it is still that entry.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        self.get(key)?;
        Some(self.slab.remove(key.index as usize).1)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// No entries.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every entry with its key.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.slab.iter().map(|(i, (gen, v))| {
            (
                Key {
                    index: i as u32,
                    gen: *gen,
                },
                v,
            )
        })
    }

    /// Every entry with its key, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut T)> {
        self.slab.iter_mut().map(|(i, (gen, v))| {
            (
                Key {
                    index: i as u32,
                    gen: *gen,
                },
                v,
            )
        })
    }

    /// The keys of the entries `keep` selects.
    pub fn keys_where(&self, mut keep: impl FnMut(&T) -> bool) -> Vec<Key> {
        self.iter()
            .filter(|(_, v)| keep(v))
            .map(|(k, _)| k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        assert_eq!(decode(WAKER).map(|(k, _)| k), Some(Kind::Waker));
        let mut slots = Slots::default();
        for _ in 0..3 {
            let key = slots.insert_with(|_| Ok::<_, ()>(())).unwrap();
            for kind in Kind::ALL {
                assert_eq!(decode(token(kind, key)), Some((kind, key)));
            }
        }
        let big = Key {
            index: u32::MAX,
            gen: GEN_MASK,
        };
        assert_eq!(decode(token(Kind::Flow, big)), Some((Kind::Flow, big)));
        assert_eq!(Key::unpack(big.pack()), big);
        assert_eq!(decode(Token(7)), None, "no kind 7");
    }

    /// The stale-event risk, disproved at its root: a key of a closed entry does not
    /// reach the entry that reused its slot.
    #[test]
    fn a_reused_slot_does_not_answer_the_old_key() {
        let mut slots = Slots::default();
        let old = slots.insert_with(|_| Ok::<_, ()>("old")).unwrap();
        assert_eq!(slots.remove(old), Some("old"));
        let new = slots.insert_with(|_| Ok::<_, ()>("new")).unwrap();
        assert_eq!(old.index, new.index, "the slot is reused");
        assert_eq!(slots.get(old), None);
        assert_eq!(slots.get_mut(old), None);
        assert_eq!(slots.remove(old), None);
        assert_eq!(slots.get(new), Some(&"new"));
        // An event for the old life decodes to a key that finds nothing.
        let (_, key) = decode(token(Kind::Backend, old)).unwrap();
        assert_eq!(slots.get(key), None);
    }

    #[test]
    fn a_failed_build_inserts_nothing() {
        let mut slots: Slots<u8> = Slots::default();
        let key = Key { index: 0, gen: 0 };
        assert_eq!(slots.insert_with(Err::<u8, Key>), Err(key));
        assert!(slots.is_empty());
        let k = slots.insert_with(|_| Ok::<_, ()>(1)).unwrap();
        assert_eq!(slots.get(k), Some(&1));
        assert_eq!(slots.keys_where(|v| *v == 1), vec![k]);
    }
}
