//! Compiles the configuration into the engine's immutable tables, off the data path.
//!
//! Group names become bit numbers per endpoint (`GroupIndex`), so a session carries its groups
//! as one `GroupMask` and the cores test access with a mask instead of strings.

use std::collections::HashMap;

use sluice_engine::rules::{AuthzRule, AuthzTable, Grant, GroupMask, Ipv4Cidr, LpmError};

use crate::config::schema::{Endpoint, Grantee};
use crate::config::types::Cidr;

/// The bit number of each group an endpoint's rules name.
#[derive(Clone, Debug, Default)]
pub struct GroupIndex {
    bits: HashMap<String, usize>,
}

impl GroupIndex {
    /// The mask of a user's groups; groups no rule names do not matter and are left out.
    pub fn mask<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> GroupMask {
        groups
            .into_iter()
            .filter_map(|g| self.bits.get(g))
            .fold(GroupMask::EMPTY, |m, b| m.with(*b))
    }

    /// How many distinct groups the rules name.
    pub fn len(&self) -> usize {
        self.bits.len()
    }

    /// Whether no rule names a group.
    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }
}

/// Converts a configuration CIDR to the engine's.
pub fn cidr(c: Cidr) -> Ipv4Cidr {
    Ipv4Cidr::new_truncating(u32::from(c.addr()), c.prefix_len())
}

/// The endpoint's rules in the engine's form, with the group numbering they use.
pub fn authorization_rules(ep: &Endpoint) -> (Vec<AuthzRule>, GroupIndex) {
    let mut index = GroupIndex::default();
    let rules = ep
        .authorization_rules
        .iter()
        .filter_map(|r| {
            let grant = match r.grantee()? {
                Grantee::AllUsers => Grant::AllUsers,
                Grantee::Group(g) => {
                    let next = index.bits.len();
                    Grant::Group(*index.bits.entry(g.to_owned()).or_insert(next))
                }
            };
            Some(AuthzRule {
                destination: cidr(r.destination_cidr),
                grant,
            })
        })
        .collect();
    (rules, index)
}

/// The endpoint's compiled authorization table.
///
/// # Errors
/// Only for rule sets far past any quota.
pub fn authorization(ep: &Endpoint) -> Result<(AuthzTable, GroupIndex), LpmError> {
    let (rules, index) = authorization_rules(ep);
    Ok((AuthzTable::build(&rules)?, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The guide's example, as an administrator would write it in the configuration.
    #[test]
    fn guide_example_from_configuration() {
        let text = r#"
[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef0"
client_cidr_block = "10.200.0.0/20"
server_certificate = "s.crt"
server_key = "s.key"
dns_name = "vpn.example.internal"
authentication = { mutual = { client_root_ca = "ca.crt" } }
[[endpoint.authorization_rule]]
destination_cidr = "10.1.0.0/16"
access_group_id = "Group 1"
[[endpoint.authorization_rule]]
destination_cidr = "0.0.0.0/0"
access_group_id = "Group 1"
[[endpoint.authorization_rule]]
destination_cidr = "0.0.0.0/0"
access_group_id = "Group 2"
[[endpoint.authorization_rule]]
destination_cidr = "0.0.0.0/0"
access_group_id = "Group 3"
[[endpoint.authorization_rule]]
destination_cidr = "172.131.0.0/16"
access_group_id = "Group 2"
"#;
        let config = crate::config::parse(Path::new("t.toml"), text).unwrap();
        let (table, groups) = authorization(&config.endpoints[0]).unwrap();
        assert_eq!(groups.len(), 3);
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        let can = |g: &str, d: &str| table.is_authorized(&groups.mask([g]), ip(d));
        assert!(can("Group 1", "10.1.0.1") && !can("Group 1", "172.131.0.1"));
        assert!(!can("Group 2", "10.1.0.1") && can("Group 2", "172.131.0.1"));
        assert!(!can("Group 3", "10.1.0.1") && !can("Group 3", "172.131.0.1"));
        for g in ["Group 1", "Group 2", "Group 3"] {
            assert!(can(g, "8.8.8.8") && can(g, "192.168.1.1"), "{g}");
        }
        assert!(
            !can("Group 4", "8.8.8.8"),
            "a group no rule names reaches nothing"
        );
        assert!(!table.is_authorized(&groups.mask(["Group 1", "Group 9"]), ip("172.131.0.1")));
        assert!(table.is_authorized(&groups.mask(["Group 1", "Group 2"]), ip("172.131.0.1")));
    }
}
