//! `Ipv4Cidr`: an IPv4 network as a `u32` address and a prefix length, the key of every table.

use core::fmt;

/// An IPv4 network; the address has no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    addr: u32,
    len: u8,
}

impl Ipv4Cidr {
    /// The network containing `addr` with prefix `len` (host bits cleared).
    ///
    /// # Panics
    /// Never; a `len` over 32 is clamped to 32.
    pub fn new_truncating(addr: u32, len: u8) -> Self {
        let len = len.min(32);
        Self {
            addr: addr & Self::mask_of(len),
            len,
        }
    }

    /// The network `addr/len`, or `None` if `len > 32` or host bits are set.
    pub fn new(addr: u32, len: u8) -> Option<Self> {
        (len <= 32 && addr & !Self::mask_of(len) == 0).then_some(Self { addr, len })
    }

    /// The netmask of a prefix length.
    pub const fn mask_of(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - len as u32)
        }
    }

    /// The network address.
    pub fn addr(self) -> u32 {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(self) -> u8 {
        self.len
    }

    /// Whether this is 0.0.0.0/0.
    pub fn is_default(self) -> bool {
        self.len == 0
    }

    /// Whether `ip` is a broadcast address of this network, as a host in it would take it: the
    /// last address, or the first (the all-zeros form of older hosts, which RFC 1812 still has
    /// routers recognise); networks of /31 and /32 have none (RFC 3021).
    pub fn is_broadcast(self, ip: u32) -> bool {
        self.len <= 30
            && self.contains(ip)
            && (ip == self.addr || ip == self.addr | !Self::mask_of(self.len))
    }

    /// Whether `ip` is in the network.
    pub fn contains(self, ip: u32) -> bool {
        ip & Self::mask_of(self.len) == self.addr
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.addr.to_be_bytes();
        write!(f, "{a}.{b}.{c}.{d}/{}", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_addresses() {
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        let net = |s: &str, len| Ipv4Cidr::new(ip(s), len).unwrap();
        let a = net("172.31.1.0", 24);
        assert!(a.is_broadcast(ip("172.31.1.255")) && a.is_broadcast(ip("172.31.1.0")));
        assert!(!a.is_broadcast(ip("172.31.1.254")) && !a.is_broadcast(ip("172.31.2.255")));
        let b = net("10.200.0.0", 20);
        assert!(b.is_broadcast(ip("10.200.15.255")) && !b.is_broadcast(ip("10.200.0.255")));
        // /31 and /32 have no broadcast address (RFC 3021).
        assert!(!net("10.0.0.0", 31).is_broadcast(ip("10.0.0.1")));
        assert!(!net("10.0.0.7", 32).is_broadcast(ip("10.0.0.7")));
        assert!(net("10.0.0.0", 30).is_broadcast(ip("10.0.0.3")));
    }

    #[test]
    fn construction_and_membership() {
        let n = Ipv4Cidr::new(0x0a01_0000, 16).unwrap();
        assert_eq!(n.to_string(), "10.1.0.0/16");
        assert!(n.contains(0x0a01_ffff) && !n.contains(0x0a02_0000));
        assert!(Ipv4Cidr::new(0x0a01_0001, 16).is_none());
        assert!(Ipv4Cidr::new(0, 33).is_none());
        assert_eq!(
            Ipv4Cidr::new_truncating(0x0a01_0203, 8),
            Ipv4Cidr::new(0x0a00_0000, 8).unwrap()
        );
        assert!(Ipv4Cidr::new(0, 0).unwrap().contains(u32::MAX));
        assert!(Ipv4Cidr::new(0xffff_ffff, 32).unwrap().contains(u32::MAX));
    }
}
