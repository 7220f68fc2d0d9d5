//! Value types of the configuration: each parses from its TOML string form and refuses a bad
//! value with a message in plain words, so `toml` reports it at the value's line and column.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ip_network::Ipv4Network;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network in CIDR notation, canonical (no host bits set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(pub Ipv4Network);

impl Cidr {
    /// Whether this is 0.0.0.0/0, the default route.
    pub fn is_default_route(&self) -> bool {
        self.prefix_len() == 0
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.0.network_address()
    }

    /// The prefix length, 0 to 32.
    pub fn prefix_len(&self) -> u8 {
        self.0.netmask()
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains(ip)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.contains(other.addr()) || other.contains(self.addr())
    }

    /// Whether `other` lies entirely inside this network.
    pub fn covers(&self, other: &Self) -> bool {
        self.prefix_len() <= other.prefix_len() && self.contains(other.addr())
    }

    /// The number of addresses in the network.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len()))
    }

    /// The last address of the network (the broadcast address for prefixes shorter than /31).
    pub fn last(&self) -> Ipv4Addr {
        self.0.broadcast_address()
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not in CIDR notation (a.b.c.d/n)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` in `{s}` is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("`/{len}` in `{s}` is not a prefix length from 0 to 32"))?;
        Ipv4Network::new(addr, len).map(Self).map_err(|_| {
            let canonical = Ipv4Network::new_truncate(addr, len)
                .map(|n| n.to_string())
                .unwrap_or_default();
            format!("`{s}` has host bits set; did you mean `{canonical}`?")
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix_len())
    }
}

/// An interface address with its prefix length, like `192.0.2.1/24` (host bits allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfAddr {
    /// The address itself.
    pub addr: Ipv4Addr,
    /// The on-link network.
    pub network: Cidr,
}

impl FromStr for IfAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            format!("`{s}` must be an address with its prefix, like 192.0.2.1/24")
        })?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` in `{s}` is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| (1..=32).contains(l))
            .ok_or_else(|| format!("`/{len}` in `{s}` is not a prefix length from 1 to 32"))?;
        let network = Ipv4Network::new_truncate(addr, len)
            .map(Cidr)
            .map_err(|_| format!("`{s}` is not a valid interface address"))?;
        Ok(Self { addr, network })
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.network.prefix_len())
    }
}

/// Implements serde for a type through its `FromStr` and `Display`.
macro_rules! serde_via_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}

serde_via_str!(Cidr, IfAddr, EndpointId, AssociationId);

/// Writes `prefix` followed by 17 random lowercase hex digits, the AWS resource-id form.
fn random_id(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(prefix.len() + 17);
    s.push_str(prefix);
    for _ in 0..17 {
        let d: u32 = rng.gen_range(0..16);
        s.push(char::from_digit(d, 16).unwrap_or('0'));
    }
    s
}

/// Checks `s` is `prefix` followed by exactly 17 lowercase hex digits.
fn check_id(s: &str, prefix: &str, what: &str) -> Result<(), String> {
    let ok = s.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 17
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a {what} id (`{prefix}` followed by 17 lowercase hex digits)"
        ))
    }
}

/// A Client VPN endpoint id, `cvpn-endpoint-` followed by 17 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(String);

impl EndpointId {
    const PREFIX: &'static str = "cvpn-endpoint-";

    /// A fresh random id.
    pub fn generate() -> Self {
        Self(random_id(Self::PREFIX))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EndpointId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        check_id(s, Self::PREFIX, "Client VPN endpoint").map(|()| Self(s.to_owned()))
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A target-network association id, `cvpn-assoc-` followed by 17 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssociationId(String);

impl AssociationId {
    const PREFIX: &'static str = "cvpn-assoc-";

    /// A fresh random id.
    pub fn generate() -> Self {
        Self(random_id(Self::PREFIX))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AssociationId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        check_id(s, Self::PREFIX, "target-network association").map(|()| Self(s.to_owned()))
    }
}

impl fmt::Display for AssociationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The VPN transport, fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// OpenVPN over UDP (the default, and the fast path).
    Udp,
    /// OpenVPN over TCP.
    Tcp,
}

impl Transport {
    /// The name as in the AWS API and in OpenVPN's `proto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// The port clients dial: AWS accepts 443 and 1194 only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct VpnPort(u16);

impl VpnPort {
    /// The default, 443.
    pub const DEFAULT: Self = Self(443);

    /// The port number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<i64> for VpnPort {
    type Error = String;

    fn try_from(v: i64) -> Result<Self, String> {
        match v {
            443 | 1194 => Ok(Self(v as u16)),
            _ => Err(format!(
                "vpn_port {v} is not allowed: it must be 443 or 1194"
            )),
        }
    }
}

impl From<VpnPort> for i64 {
    fn from(p: VpnPort) -> Self {
        Self::from(p.0)
    }
}

/// The maximum VPN session duration: AWS accepts 8, 10, 12 or 24 hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct SessionTimeoutHours(u8);

impl SessionTimeoutHours {
    /// The default, 24 hours.
    pub const DEFAULT: Self = Self(24);

    /// The number of hours.
    pub fn hours(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for SessionTimeoutHours {
    type Error = String;

    fn try_from(v: i64) -> Result<Self, String> {
        match v {
            8 | 10 | 12 | 24 => Ok(Self(v as u8)),
            _ => Err(format!(
                "session_timeout_hours {v} is not allowed: it must be 8, 10, 12 or 24"
            )),
        }
    }
}

impl From<SessionTimeoutHours> for i64 {
    fn from(h: SessionTimeoutHours) -> Self {
        Self::from(h.0)
    }
}

/// The protocol a security-group egress rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Every protocol (AWS's `-1`).
    All,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_refuses_host_bits() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert_eq!(c.prefix_len(), 16);
        assert_eq!(c.to_string(), "10.1.0.0/16");
        let e = "10.1.2.0/16".parse::<Cidr>().unwrap_err();
        assert!(e.contains("did you mean `10.1.0.0/16`"), "{e}");
        assert!("10.1.0.0".parse::<Cidr>().is_err());
        assert!("10.1.0.0/33".parse::<Cidr>().is_err());
        assert!("300.1.0.0/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn cidr_relations() {
        let a: Cidr = "10.0.0.0/8".parse().unwrap();
        let b: Cidr = "10.5.0.0/16".parse().unwrap();
        let c: Cidr = "11.0.0.0/8".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
        assert!(a.covers(&b) && !b.covers(&a));
        assert_eq!(b.size(), 65536);
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.is_default_route() && all.covers(&a));
    }

    #[test]
    fn ids() {
        let id = EndpointId::generate();
        assert_eq!(id.as_str().parse::<EndpointId>().unwrap(), id);
        assert!("cvpn-endpoint-0123456789abcdef"
            .parse::<EndpointId>()
            .is_err());
        assert!("cvpn-endpoint-0123456789ABCDEF0"
            .parse::<EndpointId>()
            .is_err());
        assert!("cvpn-endpoint-0123456789abcdef0"
            .parse::<EndpointId>()
            .is_ok());
        let a = AssociationId::generate();
        assert_eq!(a.as_str().parse::<AssociationId>().unwrap(), a);
    }

    #[test]
    fn restricted_numbers() {
        assert!(VpnPort::try_from(443).is_ok() && VpnPort::try_from(1194).is_ok());
        assert!(VpnPort::try_from(8443).is_err());
        assert!(SessionTimeoutHours::try_from(12).is_ok());
        assert!(SessionTimeoutHours::try_from(9).is_err());
    }

    #[test]
    fn ifaddr() {
        let a: IfAddr = "192.0.2.1/24".parse().unwrap();
        assert_eq!(a.network.to_string(), "192.0.2.0/24");
        assert!("192.0.2.1".parse::<IfAddr>().is_err());
    }
}
