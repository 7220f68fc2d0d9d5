//! `Lpm<V>`: an immutable IPv4 longest-prefix-match table, built once by the control thread and
//! read by the cores.
//!
//! A 16-8-8 multibit trie with controlled prefix expansion (the DIR-16-8-8 shape of DPDK's
//! `rte_lpm` with a smaller first level): at most three dependent loads per lookup, no
//! branches on prefix lengths, and memory proportional to the prefixes longer than /16 (one
//! 1 KiB chunk per distinct /24 and per distinct /16 they fall in). The first level is 256 KiB,
//! shared by nothing: one table per compiled `RuleTable` generation.

use super::cidr::Ipv4Cidr;

/// A slot: 0 is empty; `CHILD | i` points at chunk `i`; otherwise `value index + 1`.
type Slot = u32;
const CHILD: u32 = 1 << 31;

/// The longest-prefix-match table.
#[derive(Clone, Debug)]
pub struct Lpm<V> {
    /// 65536 slots for the top 16 bits.
    top: Box<[Slot]>,
    /// 256-slot chunks for bits 16..24 and 24..32.
    chunks: Vec<[Slot; 256]>,
    values: Vec<V>,
}

/// Why a table could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LpmError {
    /// More values or chunks than the slot encoding can address (2^31).
    TooLarge,
}

impl core::fmt::Display for LpmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the prefix table is too large")
    }
}

impl std::error::Error for LpmError {}

impl<V> Lpm<V> {
    /// Builds the table; for a prefix given twice, the later value wins.
    ///
    /// # Errors
    /// `TooLarge` past 2^31 values or chunks.
    pub fn build(entries: impl IntoIterator<Item = (Ipv4Cidr, V)>) -> Result<Self, LpmError> {
        let mut list: Vec<(Ipv4Cidr, V)> = entries.into_iter().collect();
        // Shorter prefixes first, so longer ones overwrite their expansion; stable, so a later
        // duplicate overwrites an earlier one.
        list.sort_by_key(|(c, _)| c.prefix_len());
        let mut lpm = Self {
            top: vec![0; 1 << 16].into_boxed_slice(),
            chunks: Vec::new(),
            values: Vec::new(),
        };
        for (cidr, v) in list {
            if lpm.values.len() >= (CHILD - 1) as usize {
                return Err(LpmError::TooLarge);
            }
            lpm.values.push(v);
            let slot = lpm.values.len() as u32;
            lpm.insert(cidr, slot)?;
        }
        Ok(lpm)
    }

    fn new_chunk(&mut self, fill: Slot) -> Result<u32, LpmError> {
        let i = self.chunks.len();
        if i >= (CHILD - 1) as usize {
            return Err(LpmError::TooLarge);
        }
        self.chunks.push([fill; 256]);
        Ok(CHILD | i as u32)
    }

    fn insert(&mut self, cidr: Ipv4Cidr, slot: Slot) -> Result<(), LpmError> {
        let addr = cidr.addr();
        let len = u32::from(cidr.prefix_len());
        if len <= 16 {
            let first = (addr >> 16) as usize;
            let count = 1usize << (16 - len);
            for s in &mut self.top[first..first + count] {
                Self::overwrite(s, slot, &mut self.chunks);
            }
            return Ok(());
        }
        let hi = (addr >> 16) as usize;
        let mid_chunk = self.child_of_top(hi)?;
        let mid = ((addr >> 8) & 0xff) as usize;
        if len <= 24 {
            let count = 1usize << (24 - len);
            for i in mid..mid + count {
                let mut s = self.chunks[mid_chunk][i];
                Self::overwrite(&mut s, slot, &mut self.chunks);
                self.chunks[mid_chunk][i] = s;
            }
            return Ok(());
        }
        let low_chunk = self.child_of_chunk(mid_chunk, mid)?;
        let low = (addr & 0xff) as usize;
        let count = 1usize << (32 - len);
        for s in &mut self.chunks[low_chunk][low..low + count] {
            *s = slot;
        }
        Ok(())
    }

    /// Sets a slot to a value; if it points at a child, fills the child's inherited slots too
    /// (a longer prefix inserted earlier never happens: prefixes go in by length).
    fn overwrite(s: &mut Slot, slot: Slot, chunks: &mut [[Slot; 256]]) {
        if *s & CHILD != 0 {
            let c = (*s & !CHILD) as usize;
            let mut child = chunks[c];
            for x in child.iter_mut() {
                Self::overwrite(x, slot, chunks);
            }
            chunks[c] = child;
        } else {
            *s = slot;
        }
    }

    fn child_of_top(&mut self, i: usize) -> Result<usize, LpmError> {
        let s = self.top[i];
        if s & CHILD != 0 {
            return Ok((s & !CHILD) as usize);
        }
        let c = self.new_chunk(s)?;
        self.top[i] = c;
        Ok((c & !CHILD) as usize)
    }

    fn child_of_chunk(&mut self, chunk: usize, i: usize) -> Result<usize, LpmError> {
        let s = self.chunks[chunk][i];
        if s & CHILD != 0 {
            return Ok((s & !CHILD) as usize);
        }
        let c = self.new_chunk(s)?;
        self.chunks[chunk][i] = c;
        Ok((c & !CHILD) as usize)
    }

    /// The value of the longest prefix containing `ip`.
    #[inline]
    pub fn lookup(&self, ip: u32) -> Option<&V> {
        let mut s = self.top[(ip >> 16) as usize];
        if s & CHILD != 0 {
            s = self.chunks[(s & !CHILD) as usize][((ip >> 8) & 0xff) as usize];
            if s & CHILD != 0 {
                s = self.chunks[(s & !CHILD) as usize][(ip & 0xff) as usize];
            }
        }
        // Slot 0 is empty; `checked_sub` turns it into None without a branch on the value.
        (s as usize).checked_sub(1).and_then(|i| self.values.get(i))
    }

    /// The number of prefixes.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the table has no prefix.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(a: [u8; 4], len: u8) -> Ipv4Cidr {
        Ipv4Cidr::new_truncating(u32::from_be_bytes(a), len)
    }

    #[test]
    fn longest_wins_at_every_level() {
        let lpm = Lpm::build([
            (c([0, 0, 0, 0], 0), "default"),
            (c([10, 0, 0, 0], 8), "ten"),
            (c([10, 1, 0, 0], 16), "ten-one"),
            (c([10, 1, 2, 0], 24), "ten-one-two"),
            (c([10, 1, 2, 128], 25), "upper-half"),
            (c([10, 1, 2, 200], 32), "host"),
            (c([10, 1, 3, 0], 20), "twenty"),
        ])
        .unwrap();
        let at = |a: [u8; 4]| lpm.lookup(u32::from_be_bytes(a)).copied();
        assert_eq!(at([1, 2, 3, 4]), Some("default"));
        assert_eq!(at([10, 9, 0, 1]), Some("ten"));
        assert_eq!(at([10, 1, 9, 1]), Some("twenty"));
        assert_eq!(at([10, 1, 16, 1]), Some("ten-one"));
        assert_eq!(at([10, 1, 2, 1]), Some("ten-one-two"));
        assert_eq!(at([10, 1, 2, 129]), Some("upper-half"));
        assert_eq!(at([10, 1, 2, 200]), Some("host"));
        let empty: Lpm<u8> = Lpm::build([]).unwrap();
        assert_eq!(empty.lookup(0), None);
    }

    #[test]
    fn later_duplicate_wins() {
        let lpm = Lpm::build([(c([10, 0, 0, 0], 8), 1), (c([10, 0, 0, 0], 8), 2)]).unwrap();
        assert_eq!(lpm.lookup(0x0a00_0001), Some(&2));
    }

    fn naive(entries: &[(Ipv4Cidr, u32)], ip: u32) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        for (cidr, v) in entries {
            if cidr.contains(ip) && best.is_none_or(|(l, _)| cidr.prefix_len() >= l) {
                best = Some((cidr.prefix_len(), *v));
            }
        }
        best.map(|(_, v)| v)
    }

    fn arb_cidr() -> impl Strategy<Value = Ipv4Cidr> {
        // Cluster addresses so prefixes nest and overlap often.
        (0u32..4, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, len)| {
            Ipv4Cidr::new_truncating((hi << 30) | (lo & 0x00ff_ffff), len)
        })
    }

    proptest! {
        #[test]
        fn agrees_with_linear_scan(
            entries in proptest::collection::vec((arb_cidr(), any::<u32>()), 0..60),
            probes in proptest::collection::vec(any::<u32>(), 50),
        ) {
            let lpm = Lpm::build(entries.clone()).unwrap();
            for p in probes.iter().copied().chain(entries.iter().flat_map(|(c, _)| [c.addr(), c.addr() | !Ipv4Cidr::mask_of(c.prefix_len())])) {
                let probe = (p & 0x00ff_ffff) | (p & 0xc000_0000);
                prop_assert_eq!(lpm.lookup(probe).copied(), naive(&entries, probe), "probe {:#x}", probe);
            }
        }
    }
}
