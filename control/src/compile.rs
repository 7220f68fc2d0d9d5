//! Compiles the configuration into the engine's immutable tables, off the data path.
//!
//! Group names become bit numbers per endpoint (`GroupIndex`), so a session carries its groups
//! as one `GroupMask` and the cores test access with a mask instead of strings. A reload keeps
//! the numbers of the groups its rules still name (`compile_numbered`), so only the sessions
//! whose groups gained or lost a number need new masks (`GroupIndex::mask`, old and new).

use std::collections::HashMap;

use sluice_engine::rules::{
    AuthzRule, AuthzTable, EgressRule, EndpointTables, Grant, GroupMask, Ipv4Cidr, LpmError,
    RuleProtocol, RuleTable, SecurityPolicy, TargetNetwork,
};
use sluice_engine::wire::ipv4::protocol;

use crate::config::schema::{Config, Endpoint, Grantee};
use crate::config::types::{Cidr, Protocol};

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
    authorization_rules_numbered(ep, None)
}

/// The same, keeping `previous`'s number for every group the rules still name; a group new to
/// them takes the lowest number free (one that a group no longer named gave up included).
pub fn authorization_rules_numbered(
    ep: &Endpoint,
    previous: Option<&GroupIndex>,
) -> (Vec<AuthzRule>, GroupIndex) {
    let named: std::collections::HashSet<&str> = ep
        .authorization_rules
        .iter()
        .filter_map(|r| match r.grantee()? {
            Grantee::Group(g) => Some(g),
            Grantee::AllUsers => None,
        })
        .collect();
    let mut index = GroupIndex::default();
    if let Some(prev) = previous {
        for (g, b) in &prev.bits {
            if named.contains(g.as_str()) {
                index.bits.insert(g.clone(), *b);
            }
        }
    }
    let mut taken: std::collections::BTreeSet<usize> = index.bits.values().copied().collect();
    let rules = ep
        .authorization_rules
        .iter()
        .filter_map(|r| {
            let grant = match r.grantee()? {
                Grantee::AllUsers => Grant::AllUsers,
                Grantee::Group(g) => Grant::Group(match index.bits.get(g) {
                    Some(b) => *b,
                    None => {
                        let free = (0..).find(|b| !taken.contains(b)).unwrap_or(0);
                        taken.insert(free);
                        index.bits.insert(g.to_owned(), free);
                        free
                    }
                }),
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

/// The compiled tables of a configuration, with each endpoint's group numbering.
#[derive(Debug)]
pub struct Compiled {
    /// The tables the cores use.
    pub table: RuleTable,
    /// Per endpoint (same order as the configuration), its group numbering.
    pub groups: Vec<GroupIndex>,
}

/// Compiles every endpoint of a validated configuration into generation `version`.
///
/// Ports are numbered in `[[dataplane.port]]` order. Target networks whose port does not exist
/// (impossible in a validated configuration) are left out, and so are routes through them.
///
/// # Errors
/// Only for rule sets far past any quota, or an endpoint with more target networks than a
/// 16-bit index names (`validate::MAX_TARGET_NETWORKS`).
pub fn compile(config: &Config, version: u64) -> Result<Compiled, LpmError> {
    compile_numbered(config, version, &[])
}

/// `compile`, with each endpoint keeping the group numbers of `previous` (same order as the
/// configuration's endpoints; missing entries number from scratch) for the groups its rules
/// still name.
///
/// # Errors
/// As `compile`.
pub fn compile_numbered(
    config: &Config,
    version: u64,
    previous: &[GroupIndex],
) -> Result<Compiled, LpmError> {
    let port_index = |name: &str| {
        config
            .dataplane
            .ports
            .iter()
            .position(|p| p.name == name)
            .and_then(|i| u16::try_from(i).ok())
    };
    let mut endpoints = Vec::with_capacity(config.endpoints.len());
    let mut groups = Vec::with_capacity(config.endpoints.len());
    for (e, ep) in config.endpoints.iter().enumerate() {
        let (rules, index) = authorization_rules_numbered(ep, previous.get(e));
        let authz = AuthzTable::build(&rules)?;
        let mut targets = Vec::new();
        let mut subnet_target = HashMap::new();
        for tn in &ep.target_networks {
            let Some(port) = port_index(&tn.port) else {
                continue;
            };
            let security = if tn.security_groups.is_empty() {
                SecurityPolicy::AllowAll
            } else {
                SecurityPolicy::Rules(
                    config
                        .security_groups
                        .iter()
                        .filter(|g| tn.security_groups.contains(&g.id))
                        .flat_map(|g| g.egress.iter())
                        .map(|r| EgressRule {
                            protocol: match r.protocol {
                                Protocol::All => RuleProtocol::All,
                                Protocol::Tcp => RuleProtocol::Number(protocol::TCP),
                                Protocol::Udp => RuleProtocol::Number(protocol::UDP),
                                Protocol::Icmp => RuleProtocol::Number(protocol::ICMP),
                            },
                            ports: r.from_port.zip(r.to_port),
                            destination: cidr(r.destination_cidr),
                        })
                        .collect(),
                )
            };
            // Routes name a target network by a 16-bit index: past it, a wrapped index would
            // send them through another target network (validation refuses so many).
            let index = u16::try_from(targets.len()).map_err(|_| LpmError::TooLarge)?;
            subnet_target.insert(tn.subnet_id.as_str(), index);
            targets.push(TargetNetwork {
                port,
                subnet: cidr(tn.cidr),
                eni_ip: u32::from(tn.eni_ip),
                gateway: u32::from(tn.gateway),
                security,
            });
        }
        let routes: Vec<(Ipv4Cidr, u16)> = ep
            .routes
            .iter()
            .filter_map(|r| {
                subnet_target
                    .get(r.target_subnet.as_str())
                    .map(|t| (cidr(r.destination_cidr), *t))
            })
            .collect();
        endpoints.push(EndpointTables::new(
            authz,
            &routes,
            targets,
            cidr(ep.client_cidr_block),
        )?);
        groups.push(index);
    }
    Ok(Compiled {
        table: RuleTable::new(version, endpoints),
        groups,
    })
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

    /// The guide's example as a table, its rules given in its order (Rule 1, Rule 2 for each
    /// of its three groups, Rule 3), then with Rules 1 and 3 removed: "If you remove Rules 1
    /// and 3, all three groups have access to all networks." A user in no group named reaches
    /// nothing either way.
    #[test]
    fn guide_example_and_with_rules_1_and_3_removed() {
        let rule = |cidr: &str, group: &str| {
            format!(
                "[[endpoint.authorization_rule]]\ndestination_cidr = \"{cidr}\"\naccess_group_id = \"{group}\"\n"
            )
        };
        let rule_1 = rule("10.1.0.0/16", "Group 1");
        let rule_2 = ["Group 1", "Group 2", "Group 3"]
            .map(|g| rule("0.0.0.0/0", g))
            .concat();
        let rule_3 = rule("172.131.0.0/16", "Group 2");
        let table_of = |rules: &str| {
            let text = crate::config::endpoint_toml(
                "cvpn-endpoint-0123456789abcdef0",
                "10.200.0.0/20",
                443,
                rules,
            );
            let config = crate::config::parse(Path::new("t.toml"), &text).unwrap();
            authorization(&config.endpoints[0]).unwrap()
        };
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        let destinations = ["10.1.0.1", "172.131.0.1", "8.8.8.8"];
        // (rules, group, whether it reaches each of `destinations`)
        let all_three = format!("{rule_1}{rule_2}{rule_3}");
        let cases: &[(&str, &str, [bool; 3])] = &[
            (&all_three, "Group 1", [true, false, true]),
            (&all_three, "Group 2", [false, true, true]),
            (&all_three, "Group 3", [false, false, true]),
            (&all_three, "Group 4", [false, false, false]),
            (&rule_2, "Group 1", [true, true, true]),
            (&rule_2, "Group 2", [true, true, true]),
            (&rule_2, "Group 3", [true, true, true]),
            (&rule_2, "Group 4", [false, false, false]),
        ];
        for (rules, group, want) in cases {
            let (table, groups) = table_of(rules);
            for (dst, want) in destinations.iter().zip(want) {
                assert_eq!(
                    table.is_authorized(&groups.mask([*group]), ip(dst)),
                    *want,
                    "{group} to {dst} under {} rules",
                    rules.matches("[[").count()
                );
            }
        }
    }

    /// A reload keeps the numbers of the groups still named, so a connected user's mask means
    /// the same groups under the new table; a revoked group's number goes to the next new
    /// group, and its members' masks must change with the table (their old mask would now
    /// name the new group).
    #[test]
    fn a_reload_keeps_group_numbers() {
        let with_rules = |rules: &str| {
            let text = crate::config::endpoint_toml(
                "cvpn-endpoint-0123456789abcdef0",
                "10.200.0.0/20",
                443,
                rules,
            );
            crate::config::parse(Path::new("t.toml"), &text).unwrap()
        };
        let rule = |cidr: &str, group: &str| {
            format!(
                "[[endpoint.authorization_rule]]\ndestination_cidr = \"{cidr}\"\naccess_group_id = \"{group}\"\n"
            )
        };
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        let before =
            with_rules(&(rule("10.1.0.0/16", "contractors") + &rule("10.2.0.0/16", "finance")));
        let old = compile(&before, 1).unwrap();
        let contractor = old.groups[0].mask(["contractors"]);
        let accountant = old.groups[0].mask(["finance"]);

        // contractors revoked: finance keeps its number, so the accountant's mask still works
        // and the contractor's reaches nothing.
        let after = with_rules(&rule("10.2.0.0/16", "finance"));
        let new = compile_numbered(&after, 2, &old.groups).unwrap();
        let authz = &new.table.endpoint(0).unwrap().authz;
        assert!(authz.is_authorized(&accountant, ip("10.2.0.1")));
        assert_eq!(new.groups[0].mask(["finance"]), accountant);
        assert!(!authz.is_authorized(&contractor, ip("10.2.0.1")));
        let scratch = compile(&after, 2).unwrap();
        assert!(
            scratch
                .table
                .endpoint(0)
                .unwrap()
                .authz
                .is_authorized(&contractor, ip("10.2.0.1")),
            "numbered from scratch, finance takes the contractors' number: the contractor's old \
             mask reaches finance's network"
        );
        assert_ne!(scratch.groups[0].mask(["finance"]), accountant);

        // A new group takes the number contractors gave up: the contractor's old mask now
        // names it, which is why its session gets its mask from the new numbering.
        let later = with_rules(&(rule("10.2.0.0/16", "finance") + &rule("10.3.0.0/16", "ops")));
        let newer = compile_numbered(&later, 3, &new.groups).unwrap();
        assert_eq!(newer.groups[0].mask(["ops"]), contractor);
        assert_eq!(newer.groups[0].mask(["contractors"]), GroupMask::EMPTY);
        assert_eq!(newer.groups[0].mask(["finance"]), accountant);
    }

    /// The annotated example compiles into tables that route, authorize and filter as written.
    #[test]
    fn example_compiles() {
        use sluice_engine::packet::DropReason;
        let text = include_str!("../../docs/sluice.toml");
        let config = crate::config::parse(Path::new("sluice.toml"), text).unwrap();
        let c = compile(&config, 3).unwrap();
        assert_eq!(c.table.version, 3);
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        let (t, g) = (&c.table, &c.groups[0]);
        let everyone = g.mask([]);
        let eng = g.mask(["engineering"]);
        // The VPC through subnet a (port 1) or b (port 2), on-link in a.
        let d = t
            .decide(0, &everyone, ip("172.31.1.10"), protocol::ICMP, 0, 0)
            .unwrap();
        assert_eq!(
            (d.target.port, d.next_hop, d.target.eni_ip),
            (1, ip("172.31.1.10"), ip("172.31.1.5"))
        );
        // Subnet b has the web/DNS/ICMP security group.
        let d = t.decide(0, &everyone, ip("172.31.2.10"), protocol::TCP, 22, 1);
        assert_eq!(d, Err(DropReason::SecurityGroupDenied));
        assert!(t
            .decide(0, &everyone, ip("172.31.2.10"), protocol::TCP, 443, 1)
            .is_ok());
        // The peered VPC needs the engineering group.
        assert_eq!(
            t.decide(0, &everyone, ip("172.16.3.3"), protocol::ICMP, 0, 0),
            Err(DropReason::NotAuthorized)
        );
        let d = t
            .decide(0, &eng, ip("172.16.3.3"), protocol::ICMP, 0, 0)
            .unwrap();
        assert_eq!((d.target.port, d.next_hop), (1, ip("172.31.1.1")));
        // The internet, for everyone, through subnet a's router.
        assert_eq!(
            t.decide(0, &everyone, ip("198.51.100.1"), protocol::UDP, 53, 0)
                .map(|d| d.next_hop),
            Ok(ip("172.31.1.1"))
        );
    }

    /// An endpoint with `n` target networks: subnet-a on port inside-a, then subnets on
    /// inside-b, and a route to 10.99.0.0/16 through the last one.
    fn with_target_networks(n: usize) -> Config {
        let tn = |subnet: &str, port: &str| {
            format!(
                "[[endpoint.target_network]]\nassociation_id = \"cvpn-assoc-0123456789abcdef1\"\n\
                 subnet_id = \"{subnet}\"\nvpc_id = \"vpc-1\"\nvpc_cidr = \"172.31.0.0/16\"\n\
                 cidr = \"172.31.1.0/24\"\navailability_zone = \"{subnet}\"\nport = \"{port}\"\n\
                 eni_ip = \"172.31.1.5\"\ngateway = \"172.31.1.1\"\n"
            )
        };
        let mut text = String::from(
            "[[dataplane.port]]\nname = \"outside\"\ndevice = \"net_null0\"\nip = \"192.168.50.1/24\"\n\
             [[dataplane.port]]\nname = \"inside-a\"\ndevice = \"net_null1\"\nip = \"172.31.1.5/24\"\n\
             [[dataplane.port]]\nname = \"inside-b\"\ndevice = \"net_null2\"\nip = \"172.31.1.6/24\"\n",
        );
        let rules = format!(
            "{}{}[[endpoint.authorization_rule]]\ndestination_cidr = \"0.0.0.0/0\"\n\
             authorize_all_groups = true\n",
            tn("subnet-a", "inside-a"),
            tn("subnet-b", "inside-b"),
        );
        text.push_str(&crate::config::endpoint_toml(
            "cvpn-endpoint-0123456789abcdef0",
            "10.200.0.0/20",
            443,
            &rules,
        ));
        let mut config = crate::config::parse(Path::new("t.toml"), &text).unwrap();
        let ep = &mut config.endpoints[0];
        let template = ep.target_networks[1].clone();
        for k in 2..n {
            let mut t = template.clone();
            t.subnet_id = format!("subnet-{k}");
            t.availability_zone = t.subnet_id.clone();
            ep.target_networks.push(t);
        }
        let last = ep.target_networks.last().unwrap().subnet_id.clone();
        ep.routes.push(crate::config::schema::Route {
            destination_cidr: "10.99.0.0/16".parse().unwrap(),
            target_subnet: last,
            description: String::new(),
            origin: crate::config::schema::RouteOrigin::AddRoute,
        });
        config
    }

    /// An endpoint's target networks are numbered with 16 bits. The index of the 65,537th
    /// was `targets.len() as u16`, 0: its routes went out through the first target network
    /// (another port, another subnet). Such an endpoint is now refused (validation says so
    /// first: `MAX_TARGET_NETWORKS`); 65,536 still compile, the last one routed to.
    #[test]
    fn a_target_network_past_a_16_bit_index_is_refused_not_wrapped() {
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        let fits = compile(&with_target_networks(65_536), 1).unwrap();
        let t = &fits.table;
        let d = t
            .decide(0, &GroupMask::EMPTY, ip("10.99.0.1"), protocol::UDP, 53, 0)
            .unwrap();
        assert_eq!((d.target_index, d.target.port), (u16::MAX, 2));
        let past = compile(&with_target_networks(65_537), 1).map(|c| {
            c.table
                .decide(0, &GroupMask::EMPTY, ip("10.99.0.1"), protocol::UDP, 53, 0)
                .map(|d| (d.target_index, d.target.port))
        });
        assert!(
            matches!(past, Err(LpmError::TooLarge)),
            "compiled, the route through the last target network going to {past:?}"
        );
    }
}
