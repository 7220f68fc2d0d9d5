//! Client addresses: the endpoint's client CIDR, minus its network, first (gateway) and
//! broadcast addresses, handed out without duplicates and taken back on disconnect.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The address pool of one endpoint.
#[derive(Clone, Debug)]
pub struct IpPool {
    first: u32,
    last: u32,
    next: u32,
    used: BTreeSet<u32>,
}

impl IpPool {
    /// A pool over `network/prefix_len` (prefix at most 30).
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Self {
        let base = u32::from(network);
        let size = 1u64 << (32 - u32::from(prefix_len.min(30)));
        // .0 is the network, .1 the route-gateway, the last the broadcast.
        let first = base + 2;
        let last = (u64::from(base) + size - 2) as u32;
        Self {
            first,
            last,
            next: first,
            used: BTreeSet::new(),
        }
    }

    /// The gateway address pushed to clients (the pool's first host).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.first - 1)
    }

    /// Takes a free address, next-fit.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let n = self.last - self.first + 1;
        for i in 0..n {
            let a = self.first + (self.next - self.first + i) % n;
            if self.used.insert(a) {
                self.next = if a == self.last { self.first } else { a + 1 };
                return Some(Ipv4Addr::from(a));
            }
        }
        None
    }

    /// Returns an address.
    pub fn release(&mut self, a: Ipv4Addr) {
        self.used.remove(&u32::from(a));
    }

    /// Addresses in use.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_duplicates_and_reuse_after_release() {
        let mut p = IpPool::new(Ipv4Addr::new(10, 200, 0, 0), 29);
        assert_eq!(p.gateway(), Ipv4Addr::new(10, 200, 0, 1));
        let got: Vec<Ipv4Addr> = std::iter::from_fn(|| p.allocate()).collect();
        assert_eq!(
            got.len(),
            5,
            "8 addresses minus network, gateway and broadcast"
        );
        assert_eq!(got[0], Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 200, 0, 6));
        p.release(got[2]);
        assert_eq!(p.allocate(), Some(got[2]));
        assert_eq!(p.allocate(), None);
        assert_eq!(p.in_use(), 5);
    }
}
