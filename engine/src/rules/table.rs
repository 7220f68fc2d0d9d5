//! `RuleTable`: everything a core needs to decide where a client's packet may go, compiled by
//! the control thread into immutable lookup structures and swapped whole between bursts.
//!
//! Per endpoint: the authorization table (AWS semantics), the route LPM (destination to the
//! target networks it may leave through) and, per target network, the egress port, the SNAT
//! (ENI) address, the next hop and the security-group egress rules.

use super::authz::{AuthzTable, GroupMask};
use super::cidr::Ipv4Cidr;
use super::lpm::{Lpm, LpmError};
use crate::packet::DropReason;
use crate::wire::ipv4::protocol;

/// Which protocol an egress rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleProtocol {
    /// Every protocol.
    All,
    /// This IP protocol number (TCP and UDP rules may carry a port range).
    Number(u8),
}

/// One security-group egress rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressRule {
    /// Protocol matched.
    pub protocol: RuleProtocol,
    /// Inclusive destination port range for TCP/UDP; `None` means every port.
    pub ports: Option<(u16, u16)>,
    /// Destination network.
    pub destination: Ipv4Cidr,
}

impl EgressRule {
    fn allows(&self, proto: u8, dst: u32, dport: u16) -> bool {
        let proto_ok = match self.protocol {
            RuleProtocol::All => true,
            RuleProtocol::Number(p) => p == proto,
        };
        let port_ok = match (self.ports, proto) {
            (Some((lo, hi)), protocol::TCP | protocol::UDP) => (lo..=hi).contains(&dport),
            _ => true,
        };
        proto_ok && port_ok && self.destination.contains(dst)
    }
}

/// The security groups applied to a target network, flattened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecurityPolicy {
    /// No group applied: the default group, which allows all egress.
    AllowAll,
    /// Allowed if any rule of any applied group matches.
    Rules(Vec<EgressRule>),
}

impl SecurityPolicy {
    /// Whether a packet to `dst` (`proto`, destination port `dport`) may leave.
    pub fn allows(&self, proto: u8, dst: u32, dport: u16) -> bool {
        match self {
            Self::AllowAll => true,
            Self::Rules(r) => r.iter().any(|x| x.allows(proto, dst, dport)),
        }
    }
}

/// An associated subnet, as the data path needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetNetwork {
    /// The data-plane port in the subnet.
    pub port: u16,
    /// The subnet.
    pub subnet: Ipv4Cidr,
    /// The SNAT source address (AWS's ENI).
    pub eni_ip: u32,
    /// The subnet router, next hop for destinations outside the subnet.
    pub gateway: u32,
    /// Egress filtering.
    pub security: SecurityPolicy,
}

impl TargetNetwork {
    /// The next hop for `dst`: itself when on-link, else the gateway.
    pub fn next_hop(&self, dst: u32) -> u32 {
        if self.subnet.contains(dst) {
            dst
        } else {
            self.gateway
        }
    }
}

/// One endpoint's compiled tables.
#[derive(Clone, Debug)]
pub struct EndpointTables {
    /// Who may reach what.
    pub authz: AuthzTable,
    /// Destination to indices into `targets` (several when routes to one destination go
    /// through several subnets; a flow hash picks one).
    routes: Lpm<Vec<u16>>,
    /// The associated subnets.
    pub targets: Vec<TargetNetwork>,
    /// The client address pool.
    pub client_cidr: Ipv4Cidr,
}

impl EndpointTables {
    /// Compiles routes given as (destination, target index) pairs.
    ///
    /// # Errors
    /// `LpmError::TooLarge` for absurd sizes.
    pub fn new(
        authz: AuthzTable,
        routes: &[(Ipv4Cidr, u16)],
        targets: Vec<TargetNetwork>,
        client_cidr: Ipv4Cidr,
    ) -> Result<Self, LpmError> {
        // Grouped by destination in the order given, found by a map (a linear search per
        // route made compiling quadratic in the routes, on the control thread at each reload).
        let mut grouped: Vec<(Ipv4Cidr, Vec<u16>)> = Vec::new();
        let mut at: hashbrown::HashMap<Ipv4Cidr, usize> = hashbrown::HashMap::new();
        for (dst, t) in routes {
            if usize::from(*t) >= targets.len() {
                continue;
            }
            match at.get(dst).and_then(|&i| grouped.get_mut(i)) {
                Some((_, v)) => v.push(*t),
                None => {
                    at.insert(*dst, grouped.len());
                    grouped.push((*dst, vec![*t]));
                }
            }
        }
        Ok(Self {
            authz,
            routes: Lpm::build(grouped)?,
            targets,
            client_cidr,
        })
    }
}

/// Where an allowed packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The target network it leaves through.
    pub target: &'a TargetNetwork,
    /// Its index in the endpoint's targets.
    pub target_index: u16,
    /// The next hop to resolve.
    pub next_hop: u32,
}

/// All endpoints' tables, one generation.
#[derive(Clone, Debug, Default)]
pub struct RuleTable {
    /// Increases with every compilation; reported by the cores.
    pub version: u64,
    endpoints: Vec<EndpointTables>,
}

impl RuleTable {
    /// A generation of tables.
    pub fn new(version: u64, endpoints: Vec<EndpointTables>) -> Self {
        Self { version, endpoints }
    }

    /// The tables of endpoint `ep`.
    pub fn endpoint(&self, ep: usize) -> Option<&EndpointTables> {
        self.endpoints.get(ep)
    }

    /// The number of endpoints.
    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether `ip` is a broadcast address (`Ipv4Cidr::is_broadcast`) of endpoint `ep`'s client
    /// CIDR or of one of its target networks: no ICMP error is sent about a packet to it (RFC
    /// 1812 §4.3.2.7). A walk over the targets: for cold paths only.
    pub fn is_broadcast_for(&self, ep: usize, ip: u32) -> bool {
        self.endpoints.get(ep).is_some_and(|e| {
            e.client_cidr.is_broadcast(ip) || e.targets.iter().any(|t| t.subnet.is_broadcast(ip))
        })
    }

    /// Whether some endpoint's target network on data-plane `port` translates to `ip` (its
    /// ENI address): an address of the appliance on that port. A walk over the targets: for
    /// ARP and pings, not for the data path.
    pub fn has_eni_on(&self, port: u16, ip: u32) -> bool {
        self.endpoints
            .iter()
            .flat_map(|e| &e.targets)
            .any(|t| t.port == port && t.eni_ip == ip)
    }

    /// Authorization, route and security group for one packet of a client of endpoint `ep`.
    ///
    /// # Errors
    /// `NotAuthorized`, `NoRoute` or `SecurityGroupDenied`.
    #[inline]
    pub fn decide(
        &self,
        ep: usize,
        groups: &GroupMask,
        dst: u32,
        proto: u8,
        dport: u16,
        flow_hash: u32,
    ) -> Result<Decision<'_>, DropReason> {
        let t = self.endpoints.get(ep).ok_or(DropReason::NoRoute)?;
        if !t.authz.is_authorized(groups, dst) {
            return Err(DropReason::NotAuthorized);
        }
        let candidates = t.routes.lookup(dst).ok_or(DropReason::NoRoute)?;
        let n = candidates.len();
        if n == 0 {
            return Err(DropReason::NoRoute);
        }
        let target_index = candidates[flow_hash as usize % n];
        let target = t
            .targets
            .get(usize::from(target_index))
            .ok_or(DropReason::NoRoute)?;
        if !target.security.allows(proto, dst, dport) {
            return Err(DropReason::SecurityGroupDenied);
        }
        Ok(Decision {
            target,
            target_index,
            next_hop: target.next_hop(dst),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::authz::{AuthzRule, Grant};

    fn c(s: &str) -> Ipv4Cidr {
        let (a, l) = s.split_once('/').unwrap();
        Ipv4Cidr::new(
            u32::from(a.parse::<std::net::Ipv4Addr>().unwrap()),
            l.parse().unwrap(),
        )
        .unwrap()
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    fn table() -> RuleTable {
        let authz = AuthzTable::build(&[
            AuthzRule {
                destination: c("172.31.0.0/16"),
                grant: Grant::AllUsers,
            },
            AuthzRule {
                destination: c("192.168.100.0/24"),
                grant: Grant::Group(0),
            },
            AuthzRule {
                destination: c("0.0.0.0/0"),
                grant: Grant::AllUsers,
            },
        ])
        .unwrap();
        let a = TargetNetwork {
            port: 1,
            subnet: c("172.31.1.0/24"),
            eni_ip: ip("172.31.1.5"),
            gateway: ip("172.31.1.1"),
            security: SecurityPolicy::AllowAll,
        };
        let web_only = SecurityPolicy::Rules(vec![EgressRule {
            protocol: RuleProtocol::Number(protocol::TCP),
            ports: Some((80, 443)),
            destination: c("0.0.0.0/0"),
        }]);
        let b = TargetNetwork {
            port: 2,
            subnet: c("172.31.2.0/24"),
            eni_ip: ip("172.31.2.5"),
            gateway: ip("172.31.2.1"),
            security: web_only,
        };
        let routes = [
            (c("172.31.0.0/16"), 0),
            (c("172.31.0.0/16"), 1),
            (c("192.168.100.0/24"), 0),
            (c("10.50.0.0/16"), 1),
        ];
        let ep = EndpointTables::new(authz, &routes, vec![a, b], c("10.200.0.0/20")).unwrap();
        RuleTable::new(7, vec![ep])
    }

    #[test]
    fn enis_are_known_by_port() {
        let t = table();
        assert!(t.has_eni_on(1, ip("172.31.1.5")));
        assert!(t.has_eni_on(2, ip("172.31.2.5")));
        assert!(!t.has_eni_on(1, ip("172.31.2.5")), "another port's ENI");
        assert!(!t.has_eni_on(1, ip("172.31.1.10")));
        assert!(!RuleTable::default().has_eni_on(1, ip("172.31.1.5")));
    }

    #[test]
    fn decides_authorization_route_and_security_group() {
        let t = table();
        let g0 = GroupMask::EMPTY.with(0);
        let none = GroupMask::EMPTY;
        let d = t
            .decide(0, &none, ip("172.31.1.10"), protocol::ICMP, 0, 0)
            .unwrap();
        assert_eq!(
            (d.target.port, d.next_hop),
            (1, ip("172.31.1.10")),
            "on-link"
        );
        let d = t
            .decide(0, &none, ip("172.31.1.10"), protocol::TCP, 80, 1)
            .unwrap();
        assert_eq!(
            (d.target.port, d.next_hop),
            (2, ip("172.31.2.1")),
            "second path, via the gateway"
        );
        assert_eq!(
            t.decide(0, &none, ip("172.31.9.9"), protocol::UDP, 53, 1),
            Err(DropReason::SecurityGroupDenied)
        );
        assert_eq!(
            t.decide(0, &none, ip("192.168.100.7"), protocol::ICMP, 0, 0),
            Err(DropReason::NotAuthorized)
        );
        assert!(t
            .decide(0, &g0, ip("192.168.100.7"), protocol::ICMP, 0, 0)
            .is_ok());
        assert_eq!(
            t.decide(0, &g0, ip("8.8.8.8"), protocol::ICMP, 0, 0),
            Err(DropReason::NoRoute),
            "authorized but no route"
        );
        assert_eq!(
            t.decide(1, &g0, ip("172.31.1.1"), protocol::ICMP, 0, 0),
            Err(DropReason::NoRoute),
            "no such endpoint"
        );
        assert_eq!(t.version, 7);
    }
}
