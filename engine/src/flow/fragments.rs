//! Where the later fragments of an inner datagram go.
//!
//! Only the first fragment of a datagram carries its ports, so only it can be looked up in
//! the flow table. When a core translates a first fragment it remembers, under the datagram's
//! identity (RFC 791: source, destination, protocol, identification), what the translation
//! was; the later fragments are translated by that (the address only: they have no ports)
//! without being reassembled, as NATs do ("virtual reassembly"). A later fragment that arrives
//! before its first is held a moment for it (`pipeline::fragment`, `EARLY_MAX` a core, for
//! `EARLY_HOLD_SECS`); one whose first was seen too long ago has nowhere to go and is dropped.
//!
//! A small fixed table (no allocation after start): sets of `WAYS` entries under a randomly
//! seeded hash; an entry lives `TTL_SECS`; a full set gives up its oldest entry.

use core::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;

pub use crate::wire::ipv4::DatagramId;

/// Entries per set.
const WAYS: usize = 4;

/// Seconds an entry is good for (its age in whole seconds: between this and one more).
pub const TTL_SECS: u32 = 2;

#[derive(Clone, Copy, Debug)]
struct Entry<V> {
    id: DatagramId,
    born: u32,
    value: V,
}

/// Datagrams whose first fragment was translated, and what their later fragments need.
pub struct FragmentMap<V> {
    sets: Box<[[Option<Entry<V>>; WAYS]]>,
    hasher: DefaultHashBuilder,
}

impl<V: Copy> FragmentMap<V> {
    /// A map for about `capacity` datagrams in flight (rounded up to whole sets, a power of
    /// two of them).
    pub fn new(capacity: usize) -> Self {
        let sets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            sets: vec![[None; WAYS]; sets].into_boxed_slice(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn set(&mut self, id: &DatagramId) -> &mut [Option<Entry<V>>; WAYS] {
        let i = self.hasher.hash_one(id) as usize & (self.sets.len() - 1);
        &mut self.sets[i]
    }

    /// Remembers `value` for datagram `id` at second `now` (replacing what it had).
    pub fn insert(&mut self, id: DatagramId, value: V, now: u32) {
        let set = self.set(&id);
        let fresh = Entry {
            id,
            born: now,
            value,
        };
        // Its own entry, else a free or stale one, else the oldest.
        let at = set
            .iter()
            .position(|e| e.is_some_and(|e| e.id == id))
            .or_else(|| {
                set.iter()
                    .position(|e| e.is_none_or(|e| now.saturating_sub(e.born) > TTL_SECS))
            })
            .unwrap_or_else(|| {
                (0..WAYS)
                    .min_by_key(|&i| set[i].map_or(0, |e| e.born))
                    .unwrap_or(0)
            });
        set[at] = Some(fresh);
    }

    /// What was remembered for datagram `id`, if it is still good at second `now`.
    pub fn get(&mut self, id: &DatagramId, now: u32) -> Option<V> {
        self.set(id)
            .iter()
            .flatten()
            .find(|e| e.id == *id && now.saturating_sub(e.born) <= TTL_SECS)
            .map(|e| e.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ident: u16) -> DatagramId {
        DatagramId {
            src: 1,
            dst: 2,
            proto: 17,
            ident,
        }
    }

    #[test]
    fn remembers_for_a_while_and_replaces() {
        let mut m = FragmentMap::new(16);
        m.insert(id(1), 'a', 10);
        assert_eq!(m.get(&id(1), 10 + TTL_SECS), Some('a'));
        assert_eq!(m.get(&id(2), 10), None);
        assert_eq!(m.get(&id(1), 11 + TTL_SECS), None, "too old");
        m.insert(id(1), 'b', 20);
        m.insert(id(1), 'c', 20);
        assert_eq!(m.get(&id(1), 20), Some('c'));
    }

    #[test]
    fn a_full_set_gives_up_its_oldest() {
        // One set: every id lands in it.
        let mut m = FragmentMap::new(1);
        for i in 0..WAYS as u16 {
            m.insert(id(i), i, 100 + u32::from(i % 2));
        }
        m.insert(id(99), 99, 101);
        assert_eq!(m.get(&id(0), 101), None, "the oldest made way");
        assert!((1..WAYS as u16).all(|i| m.get(&id(i), 101).is_some()));
        assert_eq!(m.get(&id(99), 101), Some(99));
    }
}
