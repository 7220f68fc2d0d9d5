//! One negative test per validation rule, each checking the message, the field and the position
//! it is reported at; and the positive case, the annotated example.

use std::path::Path;

use super::*;

/// A small valid configuration; tests break one thing at a time with `with`.
pub(super) const BASE: &str = r#"
[dataplane]
[[dataplane.port]]
name = "outside"
device = "net_null0"
ip = "192.168.50.1/24"
[[dataplane.port]]
name = "inside-a"
device = "net_null1"
ip = "172.31.1.5/24"
[[dataplane.port]]
name = "inside-b"
device = "net_null2"
ip = "172.31.2.5/24"

[[security_group]]
id = "sg-1"
[[security_group.egress]]
protocol = "tcp"
from_port = 80
to_port = 443
destination_cidr = "0.0.0.0/0"

[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef0"
client_cidr_block = "10.200.0.0/20"
server_certificate = "server.crt"
server_key = "server.key"
dns_name = "vpn.example.internal"
dns_servers = ["172.31.0.2"]
[endpoint.authentication]
mutual = { client_root_ca = "ca.crt" }

[[endpoint.target_network]]
association_id = "cvpn-assoc-0123456789abcdef1"
subnet_id = "subnet-a"
vpc_id = "vpc-1"
vpc_cidr = "172.31.0.0/16"
cidr = "172.31.1.0/24"
availability_zone = "az-a"
port = "inside-a"
eni_ip = "172.31.1.5"
gateway = "172.31.1.1"

[[endpoint.authorization_rule]]
destination_cidr = "172.31.0.0/16"
authorize_all_groups = true

[[endpoint.route]]
destination_cidr = "172.31.0.0/16"
target_subnet = "subnet-a"
origin = "associate"

[[endpoint.route]]
destination_cidr = "0.0.0.0/0"
target_subnet = "subnet-a"
"#;

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    BASE.replacen(from, to, 1)
}

/// Parses and validates (without reading files); returns the diagnostics.
fn check(text: &str) -> Vec<Diagnostic> {
    let path = Path::new("t.toml");
    match parse(path, text) {
        Err(e) => e.diagnostics,
        Ok(c) => {
            let f = validate::validate(&c);
            if f.is_empty() {
                Vec::new()
            } else {
                diagnose(path, text, f).diagnostics
            }
        }
    }
}

/// Asserts exactly one diagnostic, on `field`, at the line holding `line_has`, saying `says`.
#[track_caller]
fn refused(text: &str, field: &str, line_has: &str, says: &str) {
    let d = check(text);
    assert_eq!(d.len(), 1, "expected one diagnostic, got {d:#?}");
    let d = &d[0];
    assert_eq!(d.field, field, "{d:#?}");
    assert!(
        d.message.contains(says),
        "message {:?} lacks {says:?}",
        d.message
    );
    let line = text.lines().nth(d.line - 1).unwrap_or("");
    assert!(
        line.contains(line_has),
        "line {} is {line:?}, expected one with {line_has:?}",
        d.line
    );
}

#[test]
fn base_is_valid() {
    assert_eq!(check(BASE), vec![]);
}

#[test]
fn example_is_valid() {
    let text = include_str!("../../../docs/sluice.toml");
    assert_eq!(check(text), vec![]);
}

#[test]
fn unknown_field_is_an_error() {
    let d = check(&with("dns_name = ", "dns_nmae = \"x\"\ndns_name = "));
    assert_eq!(d.len(), 1);
    assert!(d[0].message.contains("unknown field `dns_nmae`"), "{d:?}");
    assert_eq!(d[0].field, "dns_nmae");
}

#[test]
fn syntax_error_has_position() {
    let d = check(&with(
        "dns_name = \"vpn.example.internal\"",
        "dns_name = vpn",
    ));
    assert_eq!(d.len(), 1);
    assert!(d[0].line > 1 && d[0].column > 1, "{d:?}");
}

#[test]
fn client_cidr_prefix_range() {
    let t = with("\"10.200.0.0/20\"", "\"10.200.0.0/24\"");
    refused(
        &t,
        "endpoint[0].client_cidr_block",
        "client_cidr_block",
        "between /12 and /22",
    );
    let t = with("\"10.200.0.0/20\"", "\"10.0.0.0/8\"");
    refused(
        &t,
        "endpoint[0].client_cidr_block",
        "client_cidr_block",
        "between /12 and /22",
    );
}

#[test]
fn client_cidr_must_be_canonical() {
    let d = check(&with("\"10.200.0.0/20\"", "\"10.200.0.1/20\""));
    assert!(d[0].message.contains("host bits set"), "{d:?}");
}

#[test]
fn client_cidr_must_not_overlap_vpc() {
    let t = with("\"10.200.0.0/20\"", "\"172.31.0.0/20\"");
    refused(
        &t,
        "endpoint[0].client_cidr_block",
        "client_cidr_block",
        "overlaps the CIDR 172.31.0.0/16 of vpc-1",
    );
}

#[test]
fn client_cidr_must_not_overlap_routes_but_default() {
    let t = with(
        "destination_cidr = \"0.0.0.0/0\"\ntarget_subnet",
        "destination_cidr = \"10.200.4.0/24\"\ntarget_subnet",
    );
    refused(
        &t,
        "endpoint[0].client_cidr_block",
        "client_cidr_block",
        "overlaps the destination 10.200.4.0/24",
    );
}

#[test]
fn target_networks_in_one_vpc_one_per_zone() {
    let second = r#"
[[endpoint.target_network]]
association_id = "cvpn-assoc-0123456789abcdef2"
subnet_id = "subnet-b"
vpc_id = "VPC"
vpc_cidr = "172.31.0.0/16"
cidr = "172.31.2.0/24"
availability_zone = "AZ"
port = "inside-b"
eni_ip = "172.31.2.5"
gateway = "172.31.2.1"

[[endpoint.route]]
destination_cidr = "172.31.0.0/16"
target_subnet = "subnet-b"
origin = "associate"
"#;
    let ok = format!(
        "{BASE}{}",
        second.replace("VPC", "vpc-1").replace("AZ", "az-b")
    );
    assert_eq!(check(&ok), vec![]);
    let other_vpc = format!(
        "{BASE}{}",
        second.replace("VPC", "vpc-2").replace("AZ", "az-b")
    );
    refused(
        &other_vpc,
        "endpoint[0].target_network[1].vpc_id",
        "vpc-2",
        "all target networks must be in one VPC",
    );
    let same_zone = format!(
        "{BASE}{}",
        second.replace("VPC", "vpc-1").replace("AZ", "az-a")
    );
    refused(
        &same_zone,
        "endpoint[0].target_network[1].availability_zone",
        "az-a",
        "at most one subnet per zone",
    );
}

#[test]
fn subnet_at_least_slash_27() {
    let t = with("cidr = \"172.31.1.0/24\"", "cidr = \"172.31.1.0/28\"")
        .replace("ip = \"172.31.1.5/24\"", "ip = \"172.31.1.5/28\"");
    refused(
        &t,
        "endpoint[0].target_network[0].cidr",
        "172.31.1.0/28",
        "at least a /27",
    );
}

#[test]
fn subnet_inside_vpc_and_hosts_inside_subnet() {
    let t = with(
        "vpc_cidr = \"172.31.0.0/16\"\ncidr",
        "vpc_cidr = \"172.31.0.0/16\"\ncidr",
    )
    .replacen("eni_ip = \"172.31.1.5\"", "eni_ip = \"172.31.9.5\"", 1);
    refused(
        &t,
        "endpoint[0].target_network[0].eni_ip",
        "eni_ip",
        "not a host address of subnet",
    );
    let t = with("gateway = \"172.31.1.1\"", "gateway = \"172.31.1.255\"");
    refused(
        &t,
        "endpoint[0].target_network[0].gateway",
        "gateway",
        "not another host address",
    );
}

#[test]
fn target_network_port_must_exist_and_sit_in_subnet() {
    let t = with("port = \"inside-a\"", "port = \"nowhere\"");
    refused(
        &t,
        "endpoint[0].target_network[0].port",
        "nowhere",
        "no [[dataplane.port]] is named `nowhere`",
    );
    let t = with("port = \"inside-a\"", "port = \"inside-b\"");
    refused(
        &t,
        "endpoint[0].target_network[0].port",
        "inside-b",
        "outside subnet 172.31.1.0/24",
    );
}

#[test]
fn association_needs_its_local_route() {
    let t = with("origin = \"associate\"", "origin = \"add-route\"");
    refused(
        &t,
        "endpoint[0].target_network[0]",
        "[[endpoint.target_network]]",
        "has no local route",
    );
}

#[test]
fn associate_origin_only_for_local_routes() {
    let t = with(
        "destination_cidr = \"0.0.0.0/0\"\ntarget_subnet = \"subnet-a\"",
        "destination_cidr = \"0.0.0.0/0\"\ntarget_subnet = \"subnet-a\"\norigin = \"associate\"",
    );
    refused(
        &t,
        "endpoint[0].route[1].origin",
        "associate",
        "use `add-route`",
    );
}

#[test]
fn route_target_must_be_associated() {
    let t = with(
        "destination_cidr = \"0.0.0.0/0\"\ntarget_subnet = \"subnet-a\"",
        "destination_cidr = \"0.0.0.0/0\"\ntarget_subnet = \"subnet-z\"",
    );
    refused(
        &t,
        "endpoint[0].route[1].target_subnet",
        "subnet-z",
        "not associated",
    );
}

#[test]
fn duplicate_route() {
    let t = format!("{BASE}\n[[endpoint.route]]\ndestination_cidr = \"0.0.0.0/0\"\ntarget_subnet = \"subnet-a\"\n");
    refused(
        &t,
        "endpoint[0].route[2].destination_cidr",
        "0.0.0.0/0",
        "duplicates route[1]",
    );
}

#[test]
fn route_quota() {
    let t = format!("[limits]\nroutes_per_target_network = 2\n{BASE}\n[[endpoint.route]]\ndestination_cidr = \"192.168.0.0/16\"\ntarget_subnet = \"subnet-a\"\n");
    refused(
        &t,
        "endpoint[0].route[2]",
        "[[endpoint.route]]",
        "more than 2 routes target subnet subnet-a",
    );
}

#[test]
fn largest_quotas_are_valid() {
    // Every quota at u32::MAX is checked without overflowing (a debug build panicked on the
    // routes quota).
    let t = format!(
        "[limits]\nendpoints = 4294967295\nauthorization_rules_per_endpoint = 4294967295\n\
         routes_per_target_network = 4294967295\nconnections_per_target_network = 4294967295\n{BASE}"
    );
    assert_eq!(check(&t), vec![]);
    // A small quota still refuses the first route past it.
    let t = format!("[limits]\nroutes_per_target_network = 1\n{BASE}");
    refused(
        &t,
        "endpoint[0].route[1]",
        "[[endpoint.route]]",
        "more than 1 routes target subnet subnet-a",
    );
}

#[test]
fn rule_needs_exactly_one_grantee() {
    let t = with(
        "authorize_all_groups = true",
        "authorize_all_groups = true\naccess_group_id = \"g\"",
    );
    refused(
        &t,
        "endpoint[0].authorization_rule[0].access_group_id",
        "access_group_id",
        "exactly one of",
    );
    let t = with("authorize_all_groups = true", "description = \"none\"");
    refused(
        &t,
        "endpoint[0].authorization_rule[0].access_group_id",
        "[[endpoint.authorization_rule]]",
        "exactly one of",
    );
}

#[test]
fn duplicate_rule_and_quota() {
    let extra = "\n[[endpoint.authorization_rule]]\ndestination_cidr = \"172.31.0.0/16\"\nauthorize_all_groups = true\n";
    let t = format!("{BASE}{extra}");
    refused(
        &t,
        "endpoint[0].authorization_rule[1].destination_cidr",
        "172.31.0.0/16",
        "duplicates authorization_rule[0]",
    );
    let extra = "\n[[endpoint.authorization_rule]]\ndestination_cidr = \"10.9.0.0/16\"\naccess_group_id = \"g\"\n";
    let t = format!("[limits]\nauthorization_rules_per_endpoint = 1\n{BASE}{extra}");
    refused(
        &t,
        "endpoint[0].authorization_rule[1]",
        "[[endpoint.authorization_rule]]",
        "exceed the quota of 1",
    );
}

#[test]
fn at_most_two_dns_servers() {
    let t = with(
        "[\"172.31.0.2\"]",
        "[\"172.31.0.2\", \"172.31.0.3\", \"1.1.1.1\"]",
    );
    refused(&t, "endpoint[0].dns_servers[2]", "dns_servers", "at most 2");
}

#[test]
fn endpoint_quota() {
    let t = format!("[limits]\nendpoints = 0\n{BASE}");
    let d = check(&t);
    assert!(
        d.iter()
            .any(|d| d.field == "limits.endpoints" && d.message.contains("at least 1")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|d| d.message.contains("exceed the quota of 0")),
        "{d:#?}"
    );
}

#[test]
fn restricted_values() {
    let d = check(&with("dns_servers =", "vpn_port = 8443\ndns_servers ="));
    assert!(d[0].message.contains("443 or 1194"), "{d:?}");
    assert_eq!(d[0].field, "vpn_port");
    let d = check(&with(
        "dns_servers =",
        "session_timeout_hours = 9\ndns_servers =",
    ));
    assert!(d[0].message.contains("8, 10, 12 or 24"), "{d:?}");
    let d = check(&with(
        "dns_servers =",
        "transport_protocol = \"sctp\"\ndns_servers =",
    ));
    assert!(d[0].message.contains("unknown variant `sctp`"), "{d:?}");
    refused(
        &with(
            "dns_servers =",
            "transport_protocol = \"tcp\"\ndns_servers =",
        ),
        "endpoint[0].transport_protocol",
        "transport_protocol = \"tcp\"",
        "sluice serves OpenVPN over UDP only",
    );
    assert_eq!(
        check(&with(
            "dns_servers =",
            "transport_protocol = \"udp\"\ndns_servers =",
        )),
        vec![]
    );
    let d = check(&with(
        "id = \"cvpn-endpoint-0123456789abcdef0\"",
        "id = \"cvpn-endpoint-42\"",
    ));
    assert!(d[0].message.contains("17 lowercase hex digits"), "{d:?}");
}

#[test]
fn authentication_rules() {
    let t = with("mutual = { client_root_ca = \"ca.crt\" }", "");
    refused(
        &t,
        "endpoint[0].authentication",
        "[endpoint.authentication]",
        "mutual (client certificates), directory",
    );
    let t = with(
        "mutual = { client_root_ca = \"ca.crt\" }",
        "mutual = { client_root_ca = \"ca.crt\" }\nmfa = \"totp\"",
    );
    refused(
        &t,
        "endpoint[0].authentication.mfa",
        "mfa",
        "needs directory authentication",
    );
}

#[test]
fn connection_log_needs_path() {
    let t = format!("{BASE}\n[endpoint.connection_log]\nenabled = true\n");
    let d = check(&t);
    assert!(
        d.iter()
            .any(|d| d.field == "endpoint[0].connection_log.path"
                && d.message.contains("needs a path")),
        "{d:#?}"
    );
}

#[test]
fn dns_name_must_be_a_name() {
    let t = with("\"vpn.example.internal\"", "\"vpn example\"");
    refused(&t, "endpoint[0].dns_name", "dns_name", "not a DNS name");
}

#[test]
fn security_group_references_and_ports() {
    let t = with(
        "gateway = \"172.31.1.1\"",
        "gateway = \"172.31.1.1\"\nsecurity_groups = [\"sg-9\"]",
    );
    refused(
        &t,
        "endpoint[0].target_network[0].security_groups[0]",
        "sg-9",
        "no [[security_group]] has id `sg-9`",
    );
    let t = with("to_port = 443", "to_port = 20");
    refused(
        &t,
        "security_group[0].egress[0].to_port",
        "to_port",
        "below from_port",
    );
}

#[test]
fn endpoints_must_not_collide() {
    let ep = BASE.split("[[endpoint]]").nth(1).unwrap_or("");
    let t = format!("{BASE}\n[[endpoint]]{ep}");
    let d = check(&t);
    assert!(
        d.iter()
            .any(|d| d.message.contains("duplicate endpoint id")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|d| d.message.contains("already listens on udp port 443")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|d| d.message.contains("overlaps the client CIDR")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|d| d.message.contains("duplicate association id")),
        "{d:#?}"
    );
}

#[test]
fn fixed_fields_cannot_change() {
    let path = Path::new("t.toml");
    let old = parse(path, BASE).unwrap();
    let changed = parse(path, &with("\"10.200.0.0/20\"", "\"10.201.0.0/20\"")).unwrap();
    let f = change::check_change(&old, &changed);
    assert_eq!(f.len(), 1);
    assert!(f[0].1.contains("delete and recreate the endpoint"), "{f:?}");
    let changed = parse(
        path,
        &with(
            "dns_servers =",
            "transport_protocol = \"tcp\"\ndns_servers =",
        ),
    )
    .unwrap();
    assert!(change::check_change(&old, &changed)[0]
        .1
        .contains("transport protocol"));
    let changed = parse(
        path,
        &with(
            "mutual = { client_root_ca = \"ca.crt\" }",
            "mutual = { client_root_ca = \"other.crt\" }",
        ),
    )
    .unwrap();
    assert!(change::check_change(&old, &changed)[0]
        .1
        .contains("authentication options"));
    // MFA is the directory's and may be turned on (or off) after creation; the directory
    // itself may not change.
    let mutual = "mutual = { client_root_ca = \"ca.crt\" }";
    let directory = |users: &str, mfa: &str| {
        parse(
            path,
            &with(
                mutual,
                &format!("{mutual}\ndirectory = {{ users_file = \"{users}\" }}{mfa}"),
            ),
        )
        .unwrap()
    };
    let without = directory("users.toml", "");
    let with_mfa = directory("users.toml", "\nmfa = \"totp\"");
    assert!(validate::validate(&with_mfa).is_empty());
    assert_eq!(change::check_change(&without, &with_mfa), vec![]);
    assert_eq!(change::check_change(&with_mfa, &without), vec![]);
    let moved = directory("other.toml", "\nmfa = \"totp\"");
    assert!(change::check_change(&with_mfa, &moved)[0]
        .1
        .contains("authentication options"));
    let gone = parse(path, BASE.split("[[endpoint]]").next().unwrap_or("")).unwrap();
    assert!(change::check_change(&old, &gone)[0]
        .1
        .contains("disassociate them before deleting it"));
    assert!(change::check_change(&old, &old).is_empty());
}

#[test]
fn at_most_256_groups_per_endpoint() {
    let mut t = format!("[limits]\nauthorization_rules_per_endpoint = 1000\n{BASE}");
    for g in 0..257 {
        t.push_str(&format!("\n[[endpoint.authorization_rule]]\ndestination_cidr = \"10.9.0.0/16\"\naccess_group_id = \"g{g}\"\n"));
    }
    let d = check(&t);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].message.contains("257 distinct groups") && d[0].message.contains("at most 256"),
        "{d:?}"
    );
}

#[test]
fn outside_port_must_exist() {
    let t = with("[dataplane]", "[dataplane]\noutside = \"nowhere\"");
    refused(
        &t,
        "dataplane.outside",
        "nowhere",
        "no [[dataplane.port]] is named `nowhere`",
    );
}

#[test]
fn port_mtus() {
    let outside = "ip = \"192.168.50.1/24\"";
    let inside = "ip = \"172.31.1.5/24\"";
    assert_eq!(
        check(&with(outside, &format!("{outside}\nmtu = 1492"))),
        vec![]
    );
    assert_eq!(
        check(&with(inside, &format!("{inside}\nmtu = 1900"))),
        vec![]
    );
    refused(
        &with(outside, &format!("{outside}\nmtu = 500")),
        "dataplane.port[0].mtu",
        "mtu = 500",
        "500 is outside 576..=2000, the range of the outside port's MTU",
    );
    refused(
        &with(outside, &format!("{outside}\nmtu = 9000")),
        "dataplane.port[0].mtu",
        "mtu = 9000",
        "frames of up to 2,048 bytes",
    );
    refused(
        &with(inside, &format!("{inside}\nmtu = 1492")),
        "dataplane.port[1].mtu",
        "mtu = 1492",
        "1492 is outside 1500..=2000, the range of an inside port's MTU",
    );
}

#[test]
fn per_source_budgets() {
    let parsed = |t: &str| parse(Path::new("t.toml"), t).expect("parses");
    let d = parsed(BASE).dataplane;
    assert_eq!(
        (
            d.control_packets.pair(),
            d.reset_answers.pair(),
            d.icmp_errors.pair()
        ),
        (
            sluice_engine::worker::DEFAULT_PUNT_BUDGET,
            sluice_engine::worker::DEFAULT_ANSWER_BUDGET,
            sluice_engine::worker::DEFAULT_ICMP_ERROR_BUDGET
        )
    );
    assert_eq!(schema::Dataplane::default().reset_answers, d.reset_answers);
    let set = |line: &str| with("[dataplane]", &format!("[dataplane]\n{line}"));
    let office = set("reset_answers = { burst = 2000, per_second = 200 }");
    assert_eq!(check(&office), vec![]);
    let d = parsed(&office).dataplane;
    assert_eq!(d.reset_answers.pair(), (2000, 200));
    assert_eq!(
        d.control_packets.pair(),
        sluice_engine::worker::DEFAULT_PUNT_BUDGET
    );
    refused(
        &set("control_packets = { burst = 0, per_second = 32 }"),
        "dataplane.control_packets",
        "control_packets",
        "burst 0 and per_second 32 must each be 1..=1000000",
    );
    refused(
        &set("icmp_errors = { burst = 16, per_second = 2000000 }"),
        "dataplane.icmp_errors",
        "icmp_errors",
        "per_second 2000000 must each be 1..=1000000",
    );
    assert!(check(&set("reset_answers = { burst = 5 }"))[0]
        .message
        .contains("per_second"));
}

#[test]
fn sessions_per_core_range() {
    let parsed = |t: &str| parse(Path::new("t.toml"), t).expect("parses");
    assert_eq!(parsed(BASE).dataplane.sessions_per_core, 16_384);
    let set = |line: &str| with("[dataplane]", &format!("[dataplane]\n{line}"));
    let small = set("sessions_per_core = 1");
    assert_eq!(check(&small), vec![]);
    assert_eq!(parsed(&small).dataplane.sessions_per_core, 1);
    assert_eq!(check(&set("sessions_per_core = 1048576")), vec![]);
    refused(
        &set("sessions_per_core = 0"),
        "dataplane.sessions_per_core",
        "sessions_per_core",
        "0 is outside 1..=1048576",
    );
    refused(
        &set("sessions_per_core = 1048577"),
        "dataplane.sessions_per_core",
        "sessions_per_core",
        "1048577 is outside 1..=1048576",
    );
}

#[test]
fn flows_per_session_range() {
    let parsed = |t: &str| parse(Path::new("t.toml"), t).expect("parses");
    assert_eq!(parsed(BASE).dataplane.flows_per_session, None);
    let set = |line: &str| with("[dataplane]", &format!("[dataplane]\n{line}"));
    for ok in [1, 100_000, 262_144] {
        let text = set(&format!("flows_per_session = {ok}"));
        assert_eq!(check(&text), vec![]);
        assert_eq!(parsed(&text).dataplane.flows_per_session, Some(ok));
    }
    for bad in [0, 262_145] {
        refused(
            &set(&format!("flows_per_session = {bad}")),
            "dataplane.flows_per_session",
            "flows_per_session",
            &format!("{bad} is outside 1..=262144"),
        );
    }
}

#[test]
fn flow_timeouts_range() {
    let parsed = |t: &str| parse(Path::new("t.toml"), t).expect("parses");
    let d = parsed(BASE).dataplane.flow_timeouts;
    assert_eq!(
        (d.tcp_established, d.tcp_transitory, d.udp, d.icmp),
        (7_440, 240, 300, 60)
    );
    let set = |line: &str| with("[dataplane]", &format!("[dataplane]\n{line}"));
    let text = set("flow_timeouts = { udp = 5, icmp = 86400 }");
    assert_eq!(check(&text), vec![]);
    let t = parsed(&text).dataplane.flow_timeouts;
    assert_eq!(
        (t.tcp_established, t.tcp_transitory, t.udp, t.icmp),
        (7_440, 240, 5, 86_400)
    );
    for (name, bad) in [("tcp_transitory", 0), ("udp", 86_401)] {
        refused(
            &set(&format!("flow_timeouts = {{ {name} = {bad} }}")),
            &format!("dataplane.flow_timeouts.{name}"),
            name,
            &format!("{bad} is outside 1..=86400"),
        );
    }
}

#[test]
fn reneg_seconds_range() {
    let at = |r: u32| {
        with(
            "[dataplane]",
            &format!("[appliance]\nreneg_seconds = {r}\n[dataplane]"),
        )
    };
    for ok in [0, 120, 3600, 604_800] {
        assert_eq!(check(&at(ok)), vec![], "{ok}");
    }
    for bad in [1, 119, 604_801] {
        refused(
            &at(bad),
            "appliance.reneg_seconds",
            "reneg_seconds",
            &format!("{bad} is outside 120..=604800"),
        );
    }
}

#[test]
fn what_a_reload_cannot_change() {
    let parsed = |t: &str| parse(Path::new("t.toml"), t).expect("parses");
    let base = parsed(BASE);
    assert!(change::needs_restart(&base, &base).is_empty());
    let mtu = parsed(&with(
        "ip = \"192.168.50.1/24\"",
        "ip = \"192.168.50.1/24\"\nmtu = 1492",
    ));
    assert_eq!(change::needs_restart(&base, &mtu), ["[dataplane]"]);
    let metrics = parsed(&with(
        "[dataplane]",
        "[appliance]\nmetrics_address = \"\"\nreneg_seconds = 3600\n[dataplane]",
    ));
    assert_eq!(
        change::needs_restart(&base, &metrics),
        ["appliance.metrics_address"]
    );
}

/// The validation of the files an endpoint names refuses, at once and naming it, a server
/// certificate or a CRL that is a FIFO or a device, or too large, rather than wait on it or
/// read it whole.
#[test]
fn named_files_not_regular_or_too_large_are_refused_at_once() {
    use files::tests::{fifo_in, huge_in, within};
    use files::{CRL_LIMIT, PKI_LIMIT};

    let d = tempfile::tempdir().expect("temporary directory");
    let fifo = fifo_in(d.path());
    let huge = huge_in(d.path());
    let zero = std::path::PathBuf::from("/dev/zero");
    for (named, why) in [
        (&fifo, "not a regular file".to_owned()),
        (&zero, "not a regular file".to_owned()),
        (&huge, format!("larger than {PKI_LIMIT} bytes (the limit)")),
    ] {
        let crl_why = if named == &huge {
            format!("larger than {CRL_LIMIT} bytes (the limit)")
        } else {
            why.clone()
        };
        let n = format!("{:?}", named.display().to_string());
        let text = with(
            "server_certificate = \"server.crt\"",
            &format!("server_certificate = {n}\ncrl = {n}"),
        );
        let config = parse(Path::new("t.toml"), &text).expect("parses");
        let base = d.path().to_path_buf();
        let findings = within(&format!("checking {}", named.display()), move || {
            pki::check_files(&config, &base)
        });
        let said = |field: &str| {
            findings
                .iter()
                .find(|(f, _)| f.to_string() == field)
                .map(|(_, m)| m.clone())
                .unwrap_or_else(|| panic!("no finding on {field}: {findings:?}"))
        };
        assert_eq!(
            said("endpoint[0].server_certificate"),
            format!("cannot read server certificate {}: {why}", named.display())
        );
        assert_eq!(
            said("endpoint[0].crl"),
            format!(
                "cannot read certificate revocation list {}: {crl_why}",
                named.display()
            )
        );
    }
}

/// An endpoint's target networks are numbered with 16 bits in the data plane (compile): one
/// past `MAX_TARGET_NETWORKS` is refused on the first that does not fit, not numbered from 0
/// again; as many as fit pass this rule.
#[test]
fn more_target_networks_than_16_bits_number_are_refused() {
    let with = |n: usize| {
        let mut config = parse(Path::new("t.toml"), BASE).expect("parses");
        let ep = &mut config.endpoints[0];
        let template = ep.target_networks[0].clone();
        for k in 1..n {
            let mut t = template.clone();
            t.subnet_id = format!("subnet-{k}");
            t.availability_zone = format!("az-{k}");
            ep.target_networks.push(t);
        }
        validate::validate(&config)
            .into_iter()
            .filter(|(_, m)| m.contains("16 bits"))
            .map(|(f, m)| (f.to_string(), m))
            .collect::<Vec<_>>()
    };
    assert!(with(validate::MAX_TARGET_NETWORKS).is_empty());
    assert_eq!(
        with(validate::MAX_TARGET_NETWORKS + 1),
        vec![(
            "endpoint[0].target_network[65536]".to_owned(),
            "65537 target networks; an endpoint has at most 65536 (the data plane numbers them \
             with 16 bits)"
                .to_owned()
        )]
    );
}

/// Without mutual authentication the TLS layer requests no client certificate and leaves the
/// CRL out (`proto::tls::server_config`), and validation parsed the CRL only: a CRL on a
/// users-only endpoint passed and revoked nothing in the daemon. It is refused, on `crl`.
#[test]
fn a_crl_without_mutual_authentication_is_refused() {
    let users_only = with(
        "mutual = { client_root_ca = \"ca.crt\" }",
        "directory = { users_file = \"users.toml\" }",
    );
    let text = users_only.replacen(
        "dns_servers = [\"172.31.0.2\"]",
        "dns_servers = [\"172.31.0.2\"]\ncrl = \"crl.pem\"",
        1,
    );
    refused(
        &text,
        "endpoint[0].crl",
        "crl = ",
        "revokes client certificates, and this endpoint takes none",
    );
    assert_eq!(check(&users_only), vec![]);
    // With mutual authentication, as with both, a CRL is the TLS layer's (checked with it).
    let both = with(
        "mutual = { client_root_ca = \"ca.crt\" }",
        "mutual = { client_root_ca = \"ca.crt\" }\ndirectory = { users_file = \"users.toml\" }",
    )
    .replacen(
        "dns_servers = [\"172.31.0.2\"]",
        "dns_servers = [\"172.31.0.2\"]\ncrl = \"crl.pem\"",
        1,
    );
    assert_eq!(check(&both), vec![]);
}
