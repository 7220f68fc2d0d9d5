//! The AWS Client VPN rules that relate fields to each other, checked over a parsed `Config`.
//!
//! Each finding names the field by path and says what is wrong in plain words; `load` turns the
//! path into a line and column. Nothing here reads files (see `pki` for certificates) or
//! changes the configuration.

use std::collections::{HashMap, HashSet};

use super::error::FieldPath;
use super::schema::{Config, Endpoint, Grantee, RouteOrigin, DEFAULT_MTU};
use super::types::Transport;

/// One finding: the field and what is wrong.
pub type Finding = (FieldPath, String);

/// The client CIDR prefix lengths AWS accepts today (/12 to /22; the 2020 guide says /16).
pub const CLIENT_CIDR_PREFIXES: std::ops::RangeInclusive<u8> = 12..=22;

/// The longest subnet prefix a target network may have (the guide: "at least a /27 bitmask").
pub const MAX_SUBNET_PREFIX: u8 = 27;

/// Addresses AWS reserves in every subnet (network, router, DNS, future use, broadcast).
pub const RESERVED_PER_SUBNET: u64 = 5;

/// Free addresses a subnet needs to be associated (the guide: "at least 8 available").
pub const MIN_FREE_ADDRESSES: u64 = 8;

/// The longest client login banner AWS accepts, in characters.
pub const MAX_BANNER_CHARS: usize = 1400;

/// The most target networks an endpoint may have: the data plane numbers an endpoint's
/// target networks, and its routes name them, with 16 bits (`rules::EndpointTables`). AWS
/// allows one per availability zone, far fewer.
pub const MAX_TARGET_NETWORKS: usize = u16::MAX as usize + 1;

/// Checks every cross-field rule; returns the findings in document order.
pub fn validate(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let root = FieldPath::root();
    limits(config, &mut out);
    dataplane(config, &mut out);
    security_groups(config, &mut out);

    let eps = root.key("endpoint");
    if config.endpoints.len() > config.limits.endpoints as usize {
        out.push((
            eps.index(config.limits.endpoints as usize),
            format!(
                "{} endpoints exceed the quota of {} (raise [limits] endpoints to allow more)",
                config.endpoints.len(),
                config.limits.endpoints
            ),
        ));
    }
    let mut ids = HashMap::new();
    let mut listeners = HashMap::new();
    let mut assoc_ids = HashMap::new();
    for (e, ep) in config.endpoints.iter().enumerate() {
        let p = eps.index(e);
        if let Some(first) = ids.insert(ep.id.clone(), e) {
            out.push((
                p.key("id"),
                format!("duplicate endpoint id `{}` (also endpoint[{first}])", ep.id),
            ));
        }
        let listen = (ep.transport_protocol, ep.vpn_port);
        if let Some(first) = listeners.insert(listen, e) {
            out.push((
                p.key("vpn_port"),
                format!(
                    "endpoint[{first}] already listens on {} port {}; each endpoint needs its own \
                     transport and port",
                    ep.transport_protocol.as_str(),
                    ep.vpn_port.get()
                ),
            ));
        }
        for (o, other) in config.endpoints.iter().enumerate().take(e) {
            if other.client_cidr_block.overlaps(&ep.client_cidr_block) {
                out.push((
                    p.key("client_cidr_block"),
                    format!(
                        "client CIDR {} overlaps the client CIDR {} of endpoint[{o}] ({}); \
                         return traffic could not tell the clients apart",
                        ep.client_cidr_block, other.client_cidr_block, other.id
                    ),
                ));
            }
        }
        for (t, tn) in ep.target_networks.iter().enumerate() {
            if let Some((fe, ft)) = assoc_ids.insert(tn.association_id.clone(), (e, t)) {
                out.push((
                    p.key("target_network").index(t).key("association_id"),
                    format!(
                        "duplicate association id `{}` (also endpoint[{fe}].target_network[{ft}])",
                        tn.association_id
                    ),
                ));
            }
        }
        endpoint(config, ep, &p, &mut out);
    }
    out
}

fn limits(config: &Config, out: &mut Vec<Finding>) {
    let p = FieldPath::root().key("limits");
    let l = &config.limits;
    for (name, v) in [
        ("endpoints", Some(l.endpoints)),
        (
            "authorization_rules_per_endpoint",
            Some(l.authorization_rules_per_endpoint),
        ),
        (
            "routes_per_target_network",
            Some(l.routes_per_target_network),
        ),
        (
            "connections_per_target_network",
            l.connections_per_target_network,
        ),
    ] {
        if v == Some(0) {
            out.push((p.key(name), format!("{name} must be at least 1")));
        }
    }
}

/// The outside port's MTU at least: the least every IPv4 host must take whole (RFC 791), so a
/// client's datagram (1,552 bytes at most) leaves in three fragments at most.
const MIN_OUTSIDE_MTU: u16 = 576;
/// Any port's MTU at most: the longest IPv4 packet a 2,048-byte buffer holds after an Ethernet
/// header, with room to spare.
const MAX_MTU: u16 = 2000;
/// Server-side renegotiation every two minutes at the most often (a handshake takes seconds,
/// and a renegotiation gives up after the 60 s hand-window) and once a week at the least.
const MIN_RENEG_SECONDS: u32 = 120;
const MAX_RENEG_SECONDS: u32 = 7 * 86_400;

fn dataplane(config: &Config, out: &mut Vec<Finding>) {
    let p = FieldPath::root().key("dataplane");
    let m = &config.appliance.metrics_address;
    if !m.is_empty() && m.parse::<std::net::SocketAddr>().is_err() {
        out.push((
            FieldPath::root().key("appliance").key("metrics_address"),
            format!("`{m}` is not an address:port like 127.0.0.1:9180 (empty turns metrics off)"),
        ));
    }
    let r = config.appliance.reneg_seconds;
    if r != 0 && !(MIN_RENEG_SECONDS..=MAX_RENEG_SECONDS).contains(&r) {
        out.push((
            FieldPath::root().key("appliance").key("reneg_seconds"),
            format!(
                "{r} is outside {MIN_RENEG_SECONDS}..={MAX_RENEG_SECONDS} (two minutes to a week; 0 leaves renegotiation to the clients)"
            ),
        ));
    }
    if config.dataplane.workers > 128 {
        out.push((
            p.key("workers"),
            format!(
                "{} workers is more than the 128 supported",
                config.dataplane.workers
            ),
        ));
    }
    if !config.dataplane.outside.is_empty() && config.dataplane.outside_index().is_none() {
        out.push((
            p.key("outside"),
            format!(
                "no [[dataplane.port]] is named `{}`",
                config.dataplane.outside
            ),
        ));
    }
    let mut vpn_ports = HashSet::new();
    for (i, ep) in config.endpoints.iter().enumerate() {
        if !config.dataplane.ports.is_empty() && !vpn_ports.insert(ep.vpn_port.get()) {
            out.push((
                FieldPath::root().key("endpoint").index(i).key("vpn_port"),
                format!(
                    "another endpoint already listens on port {} of the outside address",
                    ep.vpn_port.get()
                ),
            ));
        }
    }
    let budgets = [
        ("control_packets", config.dataplane.control_packets),
        ("reset_answers", config.dataplane.reset_answers),
        ("icmp_errors", config.dataplane.icmp_errors),
    ];
    for (name, b) in budgets {
        let max = super::schema::Budget::MAX;
        if !(1..=max).contains(&b.burst) || !(1..=max).contains(&b.per_second) {
            out.push((
                p.key(name),
                format!(
                    "burst {} and per_second {} must each be 1..={max} (a budget of 0 would refuse every packet)",
                    b.burst, b.per_second
                ),
            ));
        }
    }
    let most = super::schema::Dataplane::MAX_SESSIONS_PER_CORE;
    if !(1..=most).contains(&config.dataplane.sessions_per_core) {
        out.push((
            p.key("sessions_per_core"),
            format!(
                "{} is outside 1..={most}",
                config.dataplane.sessions_per_core
            ),
        ));
    }
    let most = super::schema::Dataplane::MAX_FLOWS_PER_SESSION;
    if let Some(n) = config.dataplane.flows_per_session {
        if !(1..=most).contains(&n) {
            out.push((
                p.key("flows_per_session"),
                format!("{n} is outside 1..={most}"),
            ));
        }
    }
    let most = super::schema::FlowTimeouts::MAX;
    for (name, secs) in config.dataplane.flow_timeouts.named() {
        if !(1..=most).contains(&secs) {
            out.push((
                p.key("flow_timeouts").key(name),
                format!("{secs} is outside 1..={most}"),
            ));
        }
    }
    let mut names = HashSet::new();
    for (i, port) in config.dataplane.ports.iter().enumerate() {
        let pp = p.key("port").index(i);
        if port.name.trim().is_empty() {
            out.push((pp.key("name"), "a port needs a name".into()));
        } else if !names.insert(port.name.as_str()) {
            out.push((
                pp.key("name"),
                format!("duplicate port name `{}`", port.name),
            ));
        }
        if port.device.trim().is_empty() {
            out.push((
                pp.key("device"),
                "a port needs a PCI address or a DPDK vdev string".into(),
            ));
        }
        let outside = config.dataplane.outside_index() == Some(i);
        let least = if outside {
            MIN_OUTSIDE_MTU
        } else {
            DEFAULT_MTU
        };
        if !(least..=MAX_MTU).contains(&port.mtu) {
            let why = if outside {
                "the outside port's MTU"
            } else {
                "an inside port's MTU (at least the tunnel's 1500, so that clients' full-size packets leave whole, not in fragments)"
            };
            out.push((
                pp.key("mtu"),
                format!(
                    "{} is outside {least}..={MAX_MTU}, the range of {why}; the data plane's buffers hold frames of up to 2,048 bytes",
                    port.mtu
                ),
            ));
        }
        if let Some(gw) = port.gateway {
            if !port.ip.network.contains(gw) || gw == port.ip.addr {
                out.push((
                    pp.key("gateway"),
                    format!(
                        "gateway {gw} is not another host on the port's network {}",
                        port.ip.network
                    ),
                ));
            }
        }
    }
}

fn security_groups(config: &Config, out: &mut Vec<Finding>) {
    use super::types::Protocol;
    let p = FieldPath::root().key("security_group");
    let mut ids = HashSet::new();
    for (i, sg) in config.security_groups.iter().enumerate() {
        let sp = p.index(i);
        if sg.id.trim().is_empty() {
            out.push((sp.key("id"), "a security group needs an id".into()));
        } else if !ids.insert(sg.id.as_str()) {
            out.push((
                sp.key("id"),
                format!("duplicate security group id `{}`", sg.id),
            ));
        }
        for (r, rule) in sg.egress.iter().enumerate() {
            let rp = sp.key("egress").index(r);
            let has_ports = rule.from_port.is_some() || rule.to_port.is_some();
            match rule.protocol {
                Protocol::Tcp | Protocol::Udp => {
                    if rule.from_port.is_some() != rule.to_port.is_some() {
                        out.push((
                            rp.key("from_port"),
                            "give both from_port and to_port, or neither for all ports".into(),
                        ));
                    }
                    if let (Some(a), Some(b)) = (rule.from_port, rule.to_port) {
                        if a > b {
                            out.push((
                                rp.key("to_port"),
                                format!("to_port {b} is below from_port {a}"),
                            ));
                        }
                    }
                }
                Protocol::All | Protocol::Icmp if has_ports => {
                    out.push((
                        rp.key("from_port"),
                        "ports apply only to tcp and udp rules".into(),
                    ));
                }
                Protocol::All | Protocol::Icmp => {}
            }
        }
    }
}

fn endpoint(config: &Config, ep: &Endpoint, p: &FieldPath, out: &mut Vec<Finding>) {
    let client = ep.client_cidr_block;
    if !CLIENT_CIDR_PREFIXES.contains(&client.prefix_len()) {
        out.push((
            p.key("client_cidr_block"),
            format!(
                "client CIDR {client} has prefix length /{}; it must be between /{} and /{}",
                client.prefix_len(),
                CLIENT_CIDR_PREFIXES.start(),
                CLIENT_CIDR_PREFIXES.end()
            ),
        ));
    }
    if ep.transport_protocol == Transport::Tcp {
        out.push((
            p.key("transport_protocol"),
            "sluice serves OpenVPN over UDP only; transport_protocol \"tcp\" is not supported \
             (use \"udp\", the default)"
                .into(),
        ));
    }
    if !is_hostname(&ep.dns_name) {
        out.push((
            p.key("dns_name"),
            format!(
                "dns_name `{}` is not a DNS name or IPv4 address clients can dial",
                ep.dns_name
            ),
        ));
    }
    if ep.dns_servers.len() > 2 {
        out.push((
            p.key("dns_servers").index(2),
            format!(
                "{} DNS servers given; an endpoint has at most 2",
                ep.dns_servers.len()
            ),
        ));
    }
    if let Some(b) = &ep.client_login_banner {
        if b.chars().count() > MAX_BANNER_CHARS {
            out.push((
                p.key("client_login_banner"),
                format!("the banner is longer than {MAX_BANNER_CHARS} characters"),
            ));
        }
    }
    let auth = &ep.authentication;
    let ap = p.key("authentication");
    if auth.mutual.is_none() && auth.directory.is_none() {
        out.push((
            ap.clone(),
            "give mutual (client certificates), directory (users), or both".into(),
        ));
    }
    if auth.mfa.is_some() && auth.directory.is_none() {
        out.push((
            ap.key("mfa"),
            "MFA needs directory authentication (it asks for a code after the password)".into(),
        ));
    }
    if ep.crl.is_some() && auth.mutual.is_none() {
        // Without mutual authentication the TLS layer asks no client for a certificate
        // (`proto::tls::server_config` leaves the CRL out): the CRL would pass here and revoke
        // nothing in the daemon.
        out.push((
            p.key("crl"),
            "a certificate revocation list revokes client certificates, and this endpoint takes \
             none (no mutual authentication): the daemon would ignore it; remove `crl`"
                .into(),
        ));
    }
    if ep.connection_log.enabled && ep.connection_log.path.is_none() {
        out.push((
            p.key("connection_log").key("path"),
            "an enabled connection log needs a path".into(),
        ));
    }
    target_networks(config, ep, p, out);
    routes(config, ep, p, out);
    authorization_rules(config, ep, p, out);
}

/// A DNS name (letters, digits, hyphens, dots; labels of 1 to 63) or an IPv4 literal.
fn is_hostname(s: &str) -> bool {
    if s.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    !s.is_empty()
        && s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn target_networks(config: &Config, ep: &Endpoint, p: &FieldPath, out: &mut Vec<Finding>) {
    let Some(first) = ep.target_networks.first() else {
        return;
    };
    if ep.target_networks.len() > MAX_TARGET_NETWORKS {
        out.push((
            p.key("target_network").index(MAX_TARGET_NETWORKS),
            format!(
                "{} target networks; an endpoint has at most {MAX_TARGET_NETWORKS} (the data \
                 plane numbers them with 16 bits)",
                ep.target_networks.len()
            ),
        ));
    }
    let mut zones = HashMap::new();
    let mut subnets = HashMap::new();
    let sg_ids: HashSet<&str> = config
        .security_groups
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    // ENI addresses of every endpoint, per subnet, for the free-address count.
    let mut enis_in: HashMap<&str, HashSet<std::net::Ipv4Addr>> = HashMap::new();
    for e in &config.endpoints {
        for t in &e.target_networks {
            enis_in
                .entry(t.subnet_id.as_str())
                .or_default()
                .insert(t.eni_ip);
        }
    }
    for (t, tn) in ep.target_networks.iter().enumerate() {
        let tp = p.key("target_network").index(t);
        if tn.vpc_id != first.vpc_id {
            out.push((
                tp.key("vpc_id"),
                format!(
                    "subnet {} is in {} but the endpoint's first association is in {}; all target \
                     networks must be in one VPC",
                    tn.subnet_id, tn.vpc_id, first.vpc_id
                ),
            ));
        } else if tn.vpc_cidr != first.vpc_cidr {
            out.push((
                tp.key("vpc_cidr"),
                format!(
                    "vpc_cidr {} differs from {} given for {} in target_network[0]",
                    tn.vpc_cidr, first.vpc_cidr, tn.vpc_id
                ),
            ));
        }
        if let Some(f) = zones.insert(tn.availability_zone.as_str(), t) {
            out.push((
                tp.key("availability_zone"),
                format!(
                    "target_network[{f}] is already in availability zone {}; associate at most one \
                     subnet per zone",
                    tn.availability_zone
                ),
            ));
        }
        if let Some(f) = subnets.insert(tn.subnet_id.as_str(), t) {
            out.push((
                tp.key("subnet_id"),
                format!(
                    "subnet {} is already associated as target_network[{f}]",
                    tn.subnet_id
                ),
            ));
        }
        if tn.cidr.prefix_len() > MAX_SUBNET_PREFIX {
            out.push((
                tp.key("cidr"),
                format!("subnet {} is smaller than a /{MAX_SUBNET_PREFIX}; a target network needs at least a /{MAX_SUBNET_PREFIX}", tn.cidr),
            ));
        } else {
            let used = enis_in
                .get(tn.subnet_id.as_str())
                .map_or(0, |s| s.len() as u64);
            let free = tn.cidr.size().saturating_sub(RESERVED_PER_SUBNET + used);
            if free < MIN_FREE_ADDRESSES {
                out.push((
                    tp.key("cidr"),
                    format!("subnet {} has {free} free addresses; association needs at least {MIN_FREE_ADDRESSES}", tn.cidr),
                ));
            }
        }
        if !tn.vpc_cidr.covers(&tn.cidr) {
            out.push((
                tp.key("cidr"),
                format!(
                    "subnet {} is not inside its VPC's CIDR {}",
                    tn.cidr, tn.vpc_cidr
                ),
            ));
        }
        let host = |ip: std::net::Ipv4Addr| {
            tn.cidr.contains(ip) && ip != tn.cidr.addr() && ip != tn.cidr.last()
        };
        if !host(tn.eni_ip) {
            out.push((
                tp.key("eni_ip"),
                format!(
                    "eni_ip {} is not a host address of subnet {}",
                    tn.eni_ip, tn.cidr
                ),
            ));
        }
        if !host(tn.gateway) || tn.gateway == tn.eni_ip {
            out.push((
                tp.key("gateway"),
                format!(
                    "gateway {} is not another host address of subnet {}",
                    tn.gateway, tn.cidr
                ),
            ));
        }
        match config.dataplane.ports.iter().find(|x| x.name == tn.port) {
            None => out.push((
                tp.key("port"),
                format!("no [[dataplane.port]] is named `{}`", tn.port),
            )),
            Some(port) if !tn.cidr.contains(port.ip.addr) => out.push((
                tp.key("port"),
                format!(
                    "port `{}` has address {}, outside subnet {}",
                    tn.port, port.ip.addr, tn.cidr
                ),
            )),
            Some(_) => {}
        }
        for (g, sg) in tn.security_groups.iter().enumerate() {
            if !sg_ids.contains(sg.as_str()) {
                out.push((
                    tp.key("security_groups").index(g),
                    format!("no [[security_group]] has id `{sg}`"),
                ));
            }
        }
        if ep.client_cidr_block.overlaps(&tn.vpc_cidr) {
            out.push((
                p.key("client_cidr_block"),
                format!(
                    "client CIDR {} overlaps the CIDR {} of {}, the VPC of associated subnet {}",
                    ep.client_cidr_block, tn.vpc_cidr, tn.vpc_id, tn.subnet_id
                ),
            ));
        }
        let has_local_route = ep.routes.iter().any(|r| {
            r.origin == RouteOrigin::Associate
                && r.target_subnet == tn.subnet_id
                && r.destination_cidr == tn.vpc_cidr
        });
        if !has_local_route {
            out.push((
                tp.clone(),
                format!(
                    "association {} has no local route: add a [[endpoint.route]] with \
                     destination_cidr = \"{}\", target_subnet = \"{}\", origin = \"associate\" \
                     (associate-client-vpn-target-network adds it for you)",
                    tn.association_id, tn.vpc_cidr, tn.subnet_id
                ),
            ));
        }
    }
}

fn routes(config: &Config, ep: &Endpoint, p: &FieldPath, out: &mut Vec<Finding>) {
    let mut seen = HashMap::new();
    // Routes seen so far per target subnet.
    let mut per_subnet: HashMap<&str, u64> = HashMap::new();
    let limit = u64::from(config.limits.routes_per_target_network);
    for (r, route) in ep.routes.iter().enumerate() {
        let rp = p.key("route").index(r);
        let target = ep
            .target_networks
            .iter()
            .find(|t| t.subnet_id == route.target_subnet);
        match target {
            None => out.push((
                rp.key("target_subnet"),
                format!(
                    "subnet {} is not associated with this endpoint",
                    route.target_subnet
                ),
            )),
            Some(tn) => {
                if route.origin == RouteOrigin::Associate && route.destination_cidr != tn.vpc_cidr {
                    out.push((
                        rp.key("origin"),
                        format!(
                            "only the VPC local route ({}) of an association has origin `associate`; \
                             use `add-route`",
                            tn.vpc_cidr
                        ),
                    ));
                }
            }
        }
        if let Some(f) = seen.insert((route.destination_cidr, route.target_subnet.as_str()), r) {
            out.push((
                rp.key("destination_cidr"),
                format!(
                    "route to {} via {} duplicates route[{f}]",
                    route.destination_cidr, route.target_subnet
                ),
            ));
        }
        let n = per_subnet.entry(route.target_subnet.as_str()).or_default();
        // Reported once, at the first route past the quota; counted in u64 so that no quota
        // (up to u32::MAX) can overflow the comparison.
        let over = *n == limit;
        *n += 1;
        if over {
            out.push((
                rp.clone(),
                format!(
                    "more than {} routes target subnet {} (raise [limits] routes_per_target_network)",
                    config.limits.routes_per_target_network, route.target_subnet
                ),
            ));
        }
        // The local routes of associations are covered by the VPC-overlap rule.
        if route.origin == RouteOrigin::AddRoute
            && !route.destination_cidr.is_default_route()
            && route.destination_cidr.overlaps(&ep.client_cidr_block)
        {
            out.push((
                p.key("client_cidr_block"),
                format!(
                    "client CIDR {} overlaps the destination {} of route[{r}]; only 0.0.0.0/0 may cover it",
                    ep.client_cidr_block, route.destination_cidr
                ),
            ));
        }
    }
}

fn authorization_rules(config: &Config, ep: &Endpoint, p: &FieldPath, out: &mut Vec<Finding>) {
    let limit = config.limits.authorization_rules_per_endpoint as usize;
    if ep.authorization_rules.len() > limit {
        out.push((
            p.key("authorization_rule").index(limit),
            format!(
                "{} authorization rules exceed the quota of {limit} (raise [limits] authorization_rules_per_endpoint)",
                ep.authorization_rules.len()
            ),
        ));
    }
    let groups: HashSet<&str> = ep
        .authorization_rules
        .iter()
        .filter_map(|r| r.access_group_id.as_deref())
        .collect();
    if groups.len() > sluice_engine::rules::authz::MAX_GROUPS {
        out.push((
            p.key("authorization_rule"),
            format!(
                "the rules name {} distinct groups; an endpoint's rules may name at most {}",
                groups.len(),
                sluice_engine::rules::authz::MAX_GROUPS
            ),
        ));
    }
    let mut seen = HashMap::new();
    for (a, rule) in ep.authorization_rules.iter().enumerate() {
        let rp = p.key("authorization_rule").index(a);
        match rule.grantee() {
            None => out.push((
                rp.key("access_group_id"),
                "give exactly one of access_group_id or authorize_all_groups = true".into(),
            )),
            Some(Grantee::Group(g)) if g.trim().is_empty() => {
                out.push((rp.key("access_group_id"), "access_group_id is empty".into()));
            }
            Some(g) => {
                if let Some(f) = seen.insert((rule.destination_cidr, g), a) {
                    out.push((
                        rp.key("destination_cidr"),
                        format!(
                            "this rule for {} duplicates authorization_rule[{f}]",
                            rule.destination_cidr
                        ),
                    ));
                }
            }
        }
    }
}
