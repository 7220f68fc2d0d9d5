//! Authorization with AWS Client VPN semantics.
//!
//! Spec (the guide, "Authorization Rules for Active Directory Groups Not Working as Expected"):
//! rules are indexed on destination CIDRs and evaluated by longest-prefix match, 0.0.0.0/0
//! last. For a destination d, among the rules whose CIDR contains d only those with the
//! longest prefix count; access is granted if any of them authorizes all users or one of the
//! user's groups. A longer rule for another group therefore shadows a shorter one.
//!
//! `authorize_naive` is that specification as a linear scan; `AuthzTable` is the compiled form
//! the cores use (one LPM lookup and a mask test), and the two are tested to agree.

use super::cidr::Ipv4Cidr;
use super::lpm::{Lpm, LpmError};

/// The largest number of distinct groups one endpoint's rules may name.
pub const MAX_GROUPS: usize = 256;

/// A set of groups as bits; the compiler numbers each endpoint's groups from 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GroupMask([u64; MAX_GROUPS / 64]);

impl GroupMask {
    /// No group.
    pub const EMPTY: Self = Self([0; MAX_GROUPS / 64]);

    /// The set with `bit` added; bits at or past `MAX_GROUPS` are ignored.
    #[must_use]
    pub fn with(mut self, bit: usize) -> Self {
        if let Some(w) = self.0.get_mut(bit / 64) {
            *w |= 1 << (bit % 64);
        }
        self
    }

    /// Whether the sets share a group.
    #[inline]
    pub fn intersects(&self, other: &Self) -> bool {
        self.0.iter().zip(other.0.iter()).any(|(a, b)| a & b != 0)
    }

    /// Whether `bit` is in the set.
    pub fn contains(&self, bit: usize) -> bool {
        self.0
            .get(bit / 64)
            .is_some_and(|w| w & (1 << (bit % 64)) != 0)
    }
}

/// Who a rule grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Grant {
    /// Every authenticated user.
    AllUsers,
    /// Members of the group with this bit.
    Group(usize),
}

/// One authorization rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AuthzRule {
    /// The destination network.
    pub destination: Ipv4Cidr,
    /// Who may reach it.
    pub grant: Grant,
}

/// The specification: a linear scan over the rules.
pub fn authorize_naive(rules: &[AuthzRule], groups: &GroupMask, dst: u32) -> bool {
    let Some(longest) = rules
        .iter()
        .filter(|r| r.destination.contains(dst))
        .map(|r| r.destination.prefix_len())
        .max()
    else {
        return false;
    };
    rules
        .iter()
        .filter(|r| r.destination.contains(dst) && r.destination.prefix_len() == longest)
        .any(|r| match r.grant {
            Grant::AllUsers => true,
            Grant::Group(g) => groups.contains(g),
        })
}

/// What the rules of one prefix grant together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Grants {
    all_users: bool,
    groups: GroupMask,
}

/// The compiled authorization table of one endpoint.
#[derive(Clone, Debug)]
pub struct AuthzTable {
    lpm: Lpm<Grants>,
}

impl AuthzTable {
    /// Compiles `rules` (group bits must be below `MAX_GROUPS`).
    ///
    /// # Errors
    /// `LpmError::TooLarge` for absurd rule counts.
    pub fn build(rules: &[AuthzRule]) -> Result<Self, LpmError> {
        let mut by_prefix: Vec<(Ipv4Cidr, Grants)> = Vec::new();
        for r in rules {
            let i = match by_prefix.iter().position(|(c, _)| *c == r.destination) {
                Some(i) => i,
                None => {
                    by_prefix.push((r.destination, Grants::default()));
                    by_prefix.len() - 1
                }
            };
            let g = &mut by_prefix[i].1;
            match r.grant {
                Grant::AllUsers => g.all_users = true,
                Grant::Group(bit) => g.groups = g.groups.with(bit),
            }
        }
        Ok(Self {
            lpm: Lpm::build(by_prefix)?,
        })
    }

    /// Whether a user with `groups` may reach `dst`.
    #[inline]
    pub fn is_authorized(&self, groups: &GroupMask, dst: u32) -> bool {
        self.lpm
            .lookup(dst)
            .is_some_and(|g| g.all_users || g.groups.intersects(groups))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        let (a, l) = s.split_once('/').unwrap();
        let ip: std::net::Ipv4Addr = a.parse().unwrap();
        Ipv4Cidr::new(u32::from(ip), l.parse().unwrap()).unwrap()
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    /// The guide's example, word for word: Rule 1 = Group 1 to 10.1.0.0/16, Rule 2 = Groups 1,
    /// 2 and 3 to 0.0.0.0/0, Rule 3 = Group 2 to 172.131.0.0/16.
    #[test]
    fn guide_example() {
        let (g1, g2, g3) = (0, 1, 2);
        let rules = [
            AuthzRule {
                destination: cidr("10.1.0.0/16"),
                grant: Grant::Group(g1),
            },
            AuthzRule {
                destination: cidr("0.0.0.0/0"),
                grant: Grant::Group(g1),
            },
            AuthzRule {
                destination: cidr("0.0.0.0/0"),
                grant: Grant::Group(g2),
            },
            AuthzRule {
                destination: cidr("0.0.0.0/0"),
                grant: Grant::Group(g3),
            },
            AuthzRule {
                destination: cidr("172.131.0.0/16"),
                grant: Grant::Group(g2),
            },
        ];
        let table = AuthzTable::build(&rules).unwrap();
        let member = |g| GroupMask::EMPTY.with(g);
        let cases = [
            // (group, destination, expected)
            (g1, "10.1.2.3", true),
            (g1, "172.131.5.5", false),
            (g2, "10.1.2.3", false),
            (g2, "172.131.5.5", true),
            (g3, "10.1.2.3", false),
            (g3, "172.131.5.5", false),
            (g1, "8.8.8.8", true),
            (g2, "192.168.7.7", true),
            (g3, "10.2.0.1", true),
        ];
        for (g, dst, want) in cases {
            assert_eq!(
                table.is_authorized(&member(g), ip(dst)),
                want,
                "group {} to {dst}",
                g + 1
            );
            assert_eq!(
                authorize_naive(&rules, &member(g), ip(dst)),
                want,
                "naive: group {} to {dst}",
                g + 1
            );
        }
        // "If you remove Rules 1 and 3, all three groups have access to all networks."
        let only_default: Vec<AuthzRule> = rules
            .iter()
            .copied()
            .filter(|r| r.destination.is_default())
            .collect();
        let table = AuthzTable::build(&only_default).unwrap();
        for g in [g1, g2, g3] {
            for dst in ["10.1.2.3", "172.131.5.5", "8.8.8.8"] {
                assert!(table.is_authorized(&member(g), ip(dst)));
            }
        }
    }

    #[test]
    fn no_rules_no_access_and_all_users() {
        let table = AuthzTable::build(&[]).unwrap();
        assert!(!table.is_authorized(&GroupMask::EMPTY.with(0), ip("10.0.0.1")));
        let rules = [AuthzRule {
            destination: cidr("10.0.0.0/8"),
            grant: Grant::AllUsers,
        }];
        let table = AuthzTable::build(&rules).unwrap();
        assert!(table.is_authorized(&GroupMask::EMPTY, ip("10.9.9.9")));
        assert!(!table.is_authorized(&GroupMask::EMPTY, ip("11.0.0.1")));
    }

    #[test]
    fn group_bits_span_words() {
        let m = GroupMask::EMPTY.with(3).with(200);
        assert!(m.contains(200) && m.contains(3) && !m.contains(199));
        assert!(m.intersects(&GroupMask::EMPTY.with(200)));
        assert!(!m.intersects(&GroupMask::EMPTY.with(64)));
        assert_eq!(GroupMask::EMPTY.with(MAX_GROUPS), GroupMask::EMPTY);
    }

    fn arb_rule() -> impl Strategy<Value = AuthzRule> {
        let cidr =
            (0u32..4, any::<u32>(), prop_oneof![Just(0u8), 1u8..=32]).prop_map(|(hi, lo, len)| {
                Ipv4Cidr::new_truncating((hi << 30) | (lo & 0x00ff_ffff), len)
            });
        let grant = prop_oneof![Just(Grant::AllUsers), (0usize..6).prop_map(Grant::Group)];
        (cidr, grant).prop_map(|(destination, grant)| AuthzRule { destination, grant })
    }

    proptest! {
        /// The compiled table against the specification.
        #[test]
        fn compiled_agrees_with_naive(
            rules in proptest::collection::vec(arb_rule(), 0..40),
            users in proptest::collection::vec(proptest::collection::vec(0usize..6, 0..3), 1..4),
            probes in proptest::collection::vec(any::<u32>(), 40),
        ) {
            let table = AuthzTable::build(&rules).unwrap();
            for groups in &users {
                let mask = groups.iter().fold(GroupMask::EMPTY, |m, g| m.with(*g));
                let edges = rules.iter().flat_map(|r| [r.destination.addr(), r.destination.addr() | !Ipv4Cidr::mask_of(r.destination.prefix_len())]);
                for p in probes.iter().map(|p| (p & 0x00ff_ffff) | (p & 0xc000_0000)).chain(edges) {
                    prop_assert_eq!(table.is_authorized(&mask, p), authorize_naive(&rules, &mask, p));
                }
            }
        }
    }
}
