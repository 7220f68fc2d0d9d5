//! A fixed-size hash index from a key's 64-bit hash to slot numbers of a slab, built so that a
//! burst can ask for its memory before it needs it.
//!
//! Buckets are one cache line: seven (tag, slot) pairs and an overflow count (the tags take
//! eight lanes, the last always empty, so a lookup compares them all at once). A key's home
//! bucket is computed from its hash alone (`bucket_of`), so the line can be prefetched before
//! the lookup; its tag (32 other bits of the hash) names the candidate slot without touching
//! the slab, so the slab entry can be prefetched next. Entries never move once inserted: a key
//! whose home bucket is full goes to the next bucket with room, and every bucket it passed
//! counts it in `overflow`, which is what tells a lookup to go on past a bucket (deletions leave
//! holes, so "the bucket has room" cannot). With at least twice as many entries as keys,
//! overflow is rare and a lookup reads one line of index and one of slab.
//!
//! The index stores no keys: the caller's `is` closure checks a candidate slot against the
//! slab. Hashes come from the caller (a randomly seeded hasher), so a client cannot aim flows
//! at one bucket.

/// Pairs per bucket (eight tag lanes, seven slots and the overflow count fill 64 bytes).
const WAYS: usize = 7;
/// Tag lanes per bucket: `WAYS` and one that stays empty, so the compare is eight lanes wide.
const LANES: usize = 8;

/// Buckets a lookup or an insertion may walk from the home bucket before giving up.
const MAX_PROBE: usize = 64;

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    /// 0: empty; lane `WAYS` is always empty.
    tags: [u32; LANES],
    slots: [u32; WAYS],
    /// Entries whose home bucket is at or before this one and that live after it.
    overflow: u32,
}

/// The index.
pub(crate) struct Index {
    buckets: Vec<Bucket>,
    mask: usize,
}

impl Bucket {
    /// Bit j set: way j holds `tag` (usually one bit).
    #[inline]
    fn matches(&self, tag: u32) -> u32 {
        super::lanes::equal_lanes(&self.tags, tag)
    }
}

#[inline]
fn tag_of(hash: u64) -> u32 {
    // Never 0 (the empty mark); the bucket comes from the low bits, the tag from the high ones.
    ((hash >> 32) as u32) | 1
}

impl Index {
    /// An index for at most `capacity` keys (twice as many pairs, a power of two of buckets).
    pub(crate) fn new(capacity: usize) -> Self {
        let buckets = (capacity.max(1) * 2).div_ceil(WAYS).next_power_of_two();
        Self {
            buckets: crate::mem::huge_vec(buckets, Bucket::default()),
            mask: buckets - 1,
        }
    }

    /// The home bucket of `hash`.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask
    }

    /// Where the home bucket of `hash` is, to prefetch it.
    #[inline]
    pub(crate) fn bucket_addr(&self, hash: u64) -> *const u8 {
        let b = self.home(hash);
        self.buckets
            .get(b)
            .map_or(std::ptr::null(), |b| std::ptr::from_ref(b).cast())
    }

    /// The first slot whose tag matches `hash` in its home bucket (almost always the one
    /// `find` will return), to prefetch the slab entry; reads only the bucket.
    #[inline]
    pub(crate) fn candidate(&self, hash: u64) -> Option<u32> {
        let tag = tag_of(hash);
        let b = self.buckets.get(self.home(hash))?;
        let m = b.matches(tag);
        (m != 0).then(|| b.slots[m.trailing_zeros() as usize])
    }

    /// The slot of the key with `hash` for which `is(slot)` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag_of(hash);
        let mut b = self.home(hash);
        for _ in 0..MAX_PROBE.min(self.buckets.len()) {
            let bucket = &self.buckets[b];
            let mut m = bucket.matches(tag);
            while m != 0 {
                let slot = bucket.slots[m.trailing_zeros() as usize];
                if is(slot) {
                    return Some(slot);
                }
                m &= m - 1;
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    /// Records `slot` under `hash`; `false` when no bucket within reach has room (the caller
    /// counts it as a full table).
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) -> bool {
        let home = self.home(hash);
        let mut b = home;
        for _ in 0..MAX_PROBE.min(self.buckets.len()) {
            if let Some(j) = self.buckets[b].tags[..WAYS].iter().position(|&t| t == 0) {
                self.buckets[b].tags[j] = tag_of(hash);
                self.buckets[b].slots[j] = slot;
                self.count_passed(home, b, true);
                return true;
            }
            b = (b + 1) & self.mask;
        }
        false
    }

    /// Counts an entry that lives in bucket `at` in the overflow of every bucket from its
    /// `home` up to `at` (`add`), or stops counting it.
    fn count_passed(&mut self, home: usize, at: usize, add: bool) {
        let mut p = home;
        while p != at {
            let o = &mut self.buckets[p].overflow;
            *o = if add { *o + 1 } else { *o - 1 };
            p = (p + 1) & self.mask;
        }
    }

    /// Forgets `slot` under `hash`; `false` if it was not there.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let (tag, home) = (tag_of(hash), self.home(hash));
        let mut b = home;
        for _ in 0..MAX_PROBE.min(self.buckets.len()) {
            let bucket = &mut self.buckets[b];
            if let Some(j) = (0..WAYS).find(|&j| bucket.tags[j] == tag && bucket.slots[j] == slot) {
                bucket.tags[j] = 0;
                self.count_passed(home, b, false);
                return true;
            }
            if bucket.overflow == 0 {
                return false;
            }
            b = (b + 1) & self.mask;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn a_bucket_is_a_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    #[test]
    fn overflow_past_a_full_bucket_and_back() {
        let mut ix = Index::new(4); // 2 buckets
                                    // Ten keys with the same home bucket and distinct tags: three spill into the next.
        let h = |i: u64| (i << 33) | 1;
        for i in 0..10 {
            assert!(ix.insert(h(i), i as u32));
        }
        for i in 0..10 {
            assert_eq!(ix.find(h(i), |s| s == i as u32), Some(i as u32));
        }
        // Deleting from the full bucket leaves a hole; the spilled keys are still found.
        assert!(ix.remove(h(0), 0));
        assert_eq!(ix.find(h(9), |s| s == 9), Some(9));
        assert!(!ix.remove(h(0), 0));
        for i in 1..10 {
            assert!(ix.remove(h(i), i as u32));
        }
        assert!(ix
            .buckets
            .iter()
            .all(|b| b.overflow == 0 && b.tags == [0; LANES]));
    }

    proptest! {
        /// Against a HashMap: keys hashed into few buckets (so overflow and holes are common),
        /// inserted and removed in any order, are found exactly while present.
        #[test]
        fn agrees_with_hashmap(ops in proptest::collection::vec((any::<bool>(), 0u32..40), 1..400)) {
            let mut ix = Index::new(16);
            let mut oracle: HashMap<u32, ()> = HashMap::new();
            // Few distinct homes, colliding tags: the closure must tell slots apart.
            let hash = |k: u32| u64::from(k % 5) | (u64::from(k % 3) << 32);
            for (add, k) in ops {
                if add && !oracle.contains_key(&k) && oracle.len() < 30 {
                    prop_assert!(ix.insert(hash(k), k));
                    oracle.insert(k, ());
                } else if !add {
                    prop_assert_eq!(ix.remove(hash(k), k), oracle.remove(&k).is_some());
                }
                for q in 0..40 {
                    prop_assert_eq!(ix.find(hash(q), |s| s == q), oracle.contains_key(&q).then_some(q));
                }
            }
        }
    }
}
