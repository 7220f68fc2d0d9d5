//! The Internet checksum (RFC 1071), full and incremental (RFC 1624).

/// Adds `data` as big-endian 16-bit words to a 32-bit accumulator (odd byte padded with zero).
///
/// Sums 32-bit words into 64 bits (a 32-bit word is two 16-bit words, and ones' complement
/// addition is carry-agnostic until the fold), so the loop has no per-word fold and
/// vectorizes; the result is folded back to 16 bits.
#[inline]
pub fn sum(acc: u32, data: &[u8]) -> u32 {
    let mut wide = u64::from(acc);
    let mut quads = data.chunks_exact(4);
    for c in &mut quads {
        wide += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = quads.remainder();
    let mut pairs = rest.chunks_exact(2);
    for c in &mut pairs {
        wide += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        wide += u64::from(*last) << 8;
    }
    u32::from(fold_wide(wide))
}

/// Folds a 64-bit accumulator of at most a few thousand 32-bit terms to 16 bits with
/// end-around carry: to 33 bits, then three 16-bit folds (below 2^18, below 2^16 + 2, below
/// 2^16), a fixed sequence with no loop.
#[inline]
pub fn fold_wide(acc: u64) -> u16 {
    let w = (acc & 0xffff_ffff) + (acc >> 32);
    let w = (w & 0xffff) + (w >> 16);
    let w = (w & 0xffff) + (w >> 16);
    let w = (w & 0xffff) + (w >> 16);
    w as u16
}

/// Folds a 32-bit accumulator to 16 bits with end-around carry (two folds always suffice:
/// the first leaves at most 0x1fffe, the second at most 0xffff).
#[inline]
pub fn fold(acc: u32) -> u16 {
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The checksum of `data`: the ones' complement of the ones' complement sum.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// The IPv4 pseudo-header sum for a TCP/UDP checksum.
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], protocol: u8, len: u16) -> u32 {
    let acc = sum(0, &src);
    let acc = sum(acc, &dst);
    acc + u32::from(protocol) + u32::from(len)
}

/// The checksum after a 16-bit field changed from `old` to `new` (RFC 1624 eqn. 3:
/// HC' = ~(~HC + ~m + m')).
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let mut d = Delta::new();
    d.word(old, new);
    d.apply(hc)
}

/// The checksum after a 32-bit field (an address) changed.
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let mut d = Delta::new();
    d.quad(old, new);
    d.apply(hc)
}

/// Several RFC 1624 field changes gathered and folded into a checksum once.
///
/// Each change adds `~old + new`; `apply` computes `~(~HC + sum)` with one fold. A 32-bit
/// field is one term (two 16-bit words summed at once). The values may be taken in either
/// byte order, as long as the checksum is read and written in the same one: a ones'
/// complement sum does not depend on byte order (RFC 1071 §2(B)), so the SNAT rewrite takes
/// the fields as they lie in memory and swaps nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delta(u64);

impl Delta {
    /// No change yet.
    #[inline]
    pub fn new() -> Self {
        Self(0)
    }

    /// A 16-bit word changed from `old` to `new`.
    #[inline]
    pub fn word(&mut self, old: u16, new: u16) {
        self.0 += u64::from(!old) + u64::from(new);
    }

    /// A 16-bit word fell by `by` without borrowing out of it (a TTL decremented): `~m + m'` is
    /// then the constant `0xffff - by`, whatever the word was.
    #[inline]
    pub fn decrease(&mut self, by: u16) {
        self.0 += u64::from(0xffff - by);
    }

    /// A 32-bit field (an address) changed: one term.
    #[inline]
    pub fn quad(&mut self, old: u32, new: u32) {
        self.0 += u64::from(!old) + u64::from(new);
    }

    /// The checksum `hc` with every gathered change folded in.
    #[inline]
    pub fn apply(self, hc: u16) -> u16 {
        !fold_wide(u64::from(!hc) + self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
        assert_eq!(fold(sum(0, &[0xab])), 0xab00);
    }

    /// Equal as ones' complement numbers (0x0000 and 0xffff are both zero).
    fn same(a: u16, b: u16) -> bool {
        a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
    }

    /// The RFC 1071 sum the obvious way: 16-bit words, end-around carry after each.
    fn naive_sum(acc: u16, data: &[u8]) -> u16 {
        let mut s = u32::from(acc);
        for (i, b) in data.iter().enumerate() {
            s += if i % 2 == 0 {
                u32::from(*b) << 8
            } else {
                u32::from(*b)
            };
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    proptest! {
        /// The word-wide sum agrees with the naive one for every length and alignment.
        #[test]
        fn sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..2000), acc in any::<u16>()) {
            let fast = fold(sum(u32::from(acc), &data));
            let slow = naive_sum(acc, &data);
            prop_assert!(same(fast, slow), "{fast:#x} vs {slow:#x}");
        }

        /// Incremental updates agree with recomputing the whole checksum.
        #[test]
        fn incremental_matches_full(mut data in proptest::collection::vec(any::<u8>(), 8..64), at in 0usize..28, new in any::<u32>()) {
            let at = (at % (data.len() / 2 - 1)) * 2;
            let hc = checksum(&data);
            let old16 = u16::from_be_bytes([data[at], data[at + 1]]);
            let mut d16 = data.clone();
            d16[at..at + 2].copy_from_slice(&(new as u16).to_be_bytes());
            let full = checksum(&d16);
            let inc = update16(hc, old16, new as u16);
            // 0x0000 and 0xffff are the same value in ones' complement.
            prop_assert!(same(inc, full), "{inc:#x} vs {full:#x}");
            if at + 4 <= data.len() {
                let old32 = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
                data[at..at + 4].copy_from_slice(&new.to_be_bytes());
                let full = checksum(&data);
                let inc = update32(hc, old32, new);
                prop_assert!(same(inc, full), "{inc:#x} vs {full:#x}");
            }
        }

        /// A TTL decremented, as `decrease` by its word's step, in big-endian values or in
        /// memory order, gives the recomputed checksum.
        #[test]
        fn decrease_matches_full(mut data in proptest::collection::vec(any::<u8>(), 20..21), ttl in 1u8..=255) {
            data[8] = ttl;
            let hc = checksum(&data);
            data[8] -= 1;
            let full = checksum(&data);
            let mut be = Delta::new();
            be.decrease(0x0100);
            prop_assert!(same(be.apply(hc), full));
            let mut ne = Delta::new();
            ne.decrease(u16::from_ne_bytes(0x0100u16.to_be_bytes()));
            // The checksum read as it lies in memory, and written back the same way.
            let in_memory = ne.apply(u16::from_ne_bytes(hc.to_be_bytes()));
            prop_assert!(same(u16::from_be_bytes(in_memory.to_ne_bytes()), full));
        }

        /// Several word changes gathered in a `Delta` give the recomputed checksum.
        #[test]
        fn delta_matches_full(mut data in proptest::collection::vec(any::<u8>(), 2..64), changes in proptest::collection::vec((any::<usize>(), any::<u16>()), 0..12)) {
            let hc = checksum(&data);
            let mut d = Delta::new();
            for (at, new) in changes {
                let at = (at % (data.len() / 2)) * 2;
                let old = u16::from_be_bytes([data[at], data[at + 1]]);
                data[at..at + 2].copy_from_slice(&new.to_be_bytes());
                d.word(old, new);
            }
            let inc = d.apply(hc);
            let full = checksum(&data);
            prop_assert!(same(inc, full), "{inc:#x} vs {full:#x}");
        }
    }
}
