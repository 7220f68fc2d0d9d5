//! SNAT port (and ICMP id) pools, partitioned between cores so return traffic names its core.

/// The first port SNAT hands out (below are well-known and registered-system ports).
pub const FIRST_PORT: u16 = 1024;

/// A core's share of the translated port space: `[first, first + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Number of ports.
    pub len: u16,
}

impl PortRange {
    /// Core `core`'s equal, disjoint share of 1024..=65535 among `cores` cores.
    pub fn for_core(core: usize, cores: usize) -> Self {
        let cores = cores.max(1) as u32;
        let span = (65536 - u32::from(FIRST_PORT)) / cores;
        let core = (core as u32).min(cores - 1);
        Self {
            first: (u32::from(FIRST_PORT) + core * span) as u16,
            len: span as u16,
        }
    }

    /// Whether `port` is in the range.
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        port >= self.first && u32::from(port) < u32::from(self.first) + u32::from(self.len)
    }
}

/// The core that owns translated `port` among `cores` cores, if any does.
pub fn core_for_port(port: u16, cores: usize) -> Option<usize> {
    let cores = cores.max(1) as u32;
    let span = (65536 - u32::from(FIRST_PORT)) / cores;
    let core = u32::from(port).checked_sub(u32::from(FIRST_PORT))? / span;
    (core < cores).then_some(core as usize)
}

/// Free and used ports of one range: a bitmap of ports in use with a next-fit cursor for
/// unused ports, and how many flows share each port (a port is reused toward other remote
/// endpoints once every port is taken).
#[derive(Clone, Debug)]
pub struct PortPool {
    range: PortRange,
    used: Vec<u64>,
    users: Vec<u32>,
    cursor: usize,
    free: usize,
}

impl PortPool {
    /// A pool with every port of `range` free.
    pub fn new(range: PortRange) -> Self {
        let n = usize::from(range.len);
        Self {
            range,
            used: vec![0; n.div_ceil(64)],
            users: vec![0; n],
            cursor: 0,
            free: n,
        }
    }

    /// Takes a free port, next-fit from the last one taken. Scans a word (64 ports) at a time:
    /// a nearly exhausted pool costs a thousand word tests at most, not 64k bit tests on every
    /// new flow.
    pub fn alloc(&mut self) -> Option<u16> {
        if self.free == 0 {
            return None;
        }
        let n = usize::from(self.range.len);
        let words = self.used.len();
        let start = self.cursor / 64;
        // The start word from the cursor, every other word, then the start word's low bits.
        for k in 0..=words {
            let w = (start + k) % words;
            let mut free = !self.used[w];
            if k == 0 {
                free &= u64::MAX << (self.cursor % 64);
            }
            if w == words - 1 && n % 64 != 0 {
                free &= (1u64 << (n % 64)) - 1;
            }
            if free != 0 {
                let i = w * 64 + free.trailing_zeros() as usize;
                self.used[w] |= 1 << (i % 64);
                self.users[i] = 1;
                self.free -= 1;
                self.cursor = (i + 1) % n;
                return Some(self.range.first + i as u16);
            }
        }
        None
    }

    /// One more flow uses `port` (already in use, toward another remote endpoint).
    pub fn share(&mut self, port: u16) {
        if !self.range.contains(port) {
            return;
        }
        let i = usize::from(port - self.range.first);
        if self.users[i] == 0 {
            self.used[i / 64] |= 1 << (i % 64);
            self.free -= 1;
        }
        self.users[i] = self.users[i].saturating_add(1);
    }

    /// A flow stops using `port`; it becomes free with its last user. Ports outside the range
    /// or already free are ignored.
    pub fn release(&mut self, port: u16) {
        if !self.range.contains(port) {
            return;
        }
        let i = usize::from(port - self.range.first);
        match self.users[i] {
            0 => {}
            1 => {
                self.users[i] = 0;
                self.used[i / 64] &= !(1 << (i % 64));
                self.free += 1;
            }
            _ => self.users[i] -= 1,
        }
    }

    /// The range.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Ports still free.
    pub fn free(&self) -> usize {
        self.free
    }
}

#[cfg(test)]
impl PortPool {
    /// How many flows use each port of the range (by offset from its first port), once the
    /// pool's other books are found to agree with these counts: a port is marked in use exactly
    /// when a flow uses it, no mark lies past the range, and `free` counts the ports no flow
    /// uses. `Err` names the first disagreement.
    pub(crate) fn users(&self) -> Result<&[u32], String> {
        for (w, &word) in self.used.iter().enumerate() {
            for b in 0..64 {
                let i = w * 64 + b;
                let marked = word >> b & 1 == 1;
                let used = self.users.get(i).is_some_and(|&u| u > 0);
                if marked != used {
                    let port = u32::from(self.range.first) + i as u32;
                    return Err(format!("port {port}: marked {marked}, used {used}"));
                }
            }
        }
        let unused = self.users.iter().filter(|&&u| u == 0).count();
        if unused != self.free {
            return Err(format!("{} free counted, {unused} unused", self.free));
        }
        Ok(&self.users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_disjointly() {
        for cores in 1..=8 {
            let mut next = FIRST_PORT as u32;
            for c in 0..cores {
                let r = PortRange::for_core(c, cores);
                assert_eq!(u32::from(r.first), next, "cores {cores}, core {c}");
                next += u32::from(r.len);
                assert_eq!(core_for_port(r.first, cores), Some(c));
                let last = (u32::from(r.first) + u32::from(r.len) - 1) as u16;
                assert_eq!(core_for_port(last, cores), Some(c));
            }
            assert!(next <= 65536);
        }
        assert_eq!(core_for_port(80, 2), None);
    }

    #[test]
    fn core_for_port_agrees_with_the_ranges() {
        for cores in 1..=8 {
            for port in 0..=u16::MAX {
                let want = (0..cores).find(|c| PortRange::for_core(*c, cores).contains(port));
                assert_eq!(
                    core_for_port(port, cores),
                    want,
                    "cores {cores}, port {port}"
                );
            }
        }
    }

    proptest::proptest! {
        /// Against a bit-at-a-time next-fit oracle: the same port each time, for ranges not a
        /// multiple of 64 too.
        #[test]
        fn alloc_agrees_with_next_fit(
            len in 1u16..300,
            ops in proptest::collection::vec((proptest::bool::ANY, 0u16..300), 1..400),
        ) {
            let mut p = PortPool::new(PortRange { first: 1000, len });
            let n = usize::from(len);
            let (mut used, mut cursor) = (vec![false; n], 0usize);
            for (take, which) in ops {
                if take {
                    let want = (0..n).map(|s| (cursor + s) % n).find(|&i| !used[i]);
                    if let Some(i) = want {
                        used[i] = true;
                        cursor = (i + 1) % n;
                    }
                    proptest::prop_assert_eq!(p.alloc(), want.map(|i| 1000 + i as u16));
                } else {
                    let i = usize::from(which) % n;
                    used[i] = false;
                    p.release(1000 + i as u16);
                }
                proptest::prop_assert_eq!(p.free(), used.iter().filter(|u| !**u).count());
                let users = p.users().map_err(proptest::test_runner::TestCaseError::fail)?;
                let counts: Vec<u32> = used.iter().map(|&u| u32::from(u)).collect();
                proptest::prop_assert_eq!(users, &counts[..]);
            }
        }
    }

    #[test]
    fn alloc_release_exhaust() {
        let mut p = PortPool::new(PortRange {
            first: 2000,
            len: 3,
        });
        let got: Vec<u16> = std::iter::from_fn(|| p.alloc()).collect();
        assert_eq!(got, vec![2000, 2001, 2002]);
        assert_eq!(p.alloc(), None);
        p.release(2001);
        p.release(2001);
        p.release(9);
        assert_eq!(p.free(), 1);
        assert_eq!(p.alloc(), Some(2001));
        // A shared port is free only after its last user.
        p.share(2000);
        p.release(2000);
        assert_eq!(p.free(), 0);
        p.release(2000);
        assert_eq!(p.free(), 1);
        assert_eq!(p.alloc(), Some(2000));
    }
}
