//! Property tests of the management verbs, which take untrusted input (a command line, or an
//! admin-socket request): no argument vector and no request line panics; a verb applied to a
//! valid configuration is either refused, the file left byte-identical, or writes a file that
//! validates again and keeps what the verb did not say it removes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Parser;
use proptest::prelude::*;
use serde_json::Value;

use sluice_control::admin::cli::Cli;
use sluice_control::admin::verbs;
use sluice_control::config;
use sluice_control::runtime::admin_socket::Request;

/// The PKI the configurations name, made once per run of this test binary.
fn pki() -> &'static Path {
    static PKI: OnceLock<PathBuf> = OnceLock::new();
    sluice_tests::pki_once(&PKI, || {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin-props-pki")
    })
}

const A: &str = "cvpn-endpoint-0123456789abcdef0";
const B: &str = "cvpn-endpoint-0123456789abcdef1";
const ASSOC: &str = "cvpn-assoc-0123456789abcdef1";

/// Two endpoints, one with a target network, rules and routes, written with arrays of tables.
const TABLES: &str = r#"# comment
[appliance]
admin_socket = "STATE/admin.sock"
state_dir = "STATE"

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
server_certificate = "PKI/server.crt"
server_key = "PKI/server.key"
dns_name = "vpn.example.internal"
dns_servers = ["172.31.0.2"]
authentication = { mutual = { client_root_ca = "PKI/ca.crt" } }

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

[[endpoint.authorization_rule]]
destination_cidr = "10.9.0.0/16"
access_group_id = "ops"

[[endpoint.route]]
destination_cidr = "172.31.0.0/16"
target_subnet = "subnet-a"
origin = "associate"

[[endpoint.route]]
destination_cidr = "10.9.0.0/16"
target_subnet = "subnet-a"

[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef1"
client_cidr_block = "10.210.0.0/20"
server_certificate = "PKI/server.crt"
server_key = "PKI/server.key"
dns_name = "vpn2.example.internal"
vpn_port = 1194
authentication = { mutual = { client_root_ca = "PKI/ca.crt" } }
"#;

/// The same configuration with every array of tables written as an inline array, as TOML
/// allows and validation accepts.
const INLINE: &str = r#"
security_group = [{ id = "sg-1", egress = [{ protocol = "tcp", from_port = 80, to_port = 443, destination_cidr = "0.0.0.0/0" }] }]

endpoint = [
  { id = "cvpn-endpoint-0123456789abcdef0", client_cidr_block = "10.200.0.0/20", server_certificate = "PKI/server.crt", server_key = "PKI/server.key", dns_name = "vpn.example.internal", dns_servers = ["172.31.0.2"], authentication = { mutual = { client_root_ca = "PKI/ca.crt" } }, target_network = [{ association_id = "cvpn-assoc-0123456789abcdef1", subnet_id = "subnet-a", vpc_id = "vpc-1", vpc_cidr = "172.31.0.0/16", cidr = "172.31.1.0/24", availability_zone = "az-a", port = "inside-a", eni_ip = "172.31.1.5", gateway = "172.31.1.1" }], authorization_rule = [{ destination_cidr = "172.31.0.0/16", authorize_all_groups = true }, { destination_cidr = "10.9.0.0/16", access_group_id = "ops" }], route = [{ destination_cidr = "172.31.0.0/16", target_subnet = "subnet-a", origin = "associate" }, { destination_cidr = "10.9.0.0/16", target_subnet = "subnet-a" }] },
  { id = "cvpn-endpoint-0123456789abcdef1", client_cidr_block = "10.210.0.0/20", server_certificate = "PKI/server.crt", server_key = "PKI/server.key", dns_name = "vpn2.example.internal", vpn_port = 1194, authentication = { mutual = { client_root_ca = "PKI/ca.crt" } } },
]
[appliance]
admin_socket = "STATE/admin.sock"
state_dir = "STATE"

[dataplane]
port = [
  { name = "outside", device = "net_null0", ip = "192.168.50.1/24" },
  { name = "inside-a", device = "net_null1", ip = "172.31.1.5/24" },
  { name = "inside-b", device = "net_null2", ip = "172.31.2.5/24" },
]


"#;

/// The endpoint's own array of tables written as a table inside an array: `[[endpoint]]` with
/// its rules, routes and associations as inline arrays.
const MIXED: &str = r#"
[appliance]
admin_socket = "STATE/admin.sock"
state_dir = "STATE"

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
egress = [{ protocol = "tcp", from_port = 80, to_port = 443, destination_cidr = "0.0.0.0/0" }]

[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef0"
client_cidr_block = "10.200.0.0/20"
server_certificate = "PKI/server.crt"
server_key = "PKI/server.key"
dns_name = "vpn.example.internal"
dns_servers = ["172.31.0.2"]
authentication = { mutual = { client_root_ca = "PKI/ca.crt" } }
connection_log = { enabled = false }
target_network = [{ association_id = "cvpn-assoc-0123456789abcdef1", subnet_id = "subnet-a", vpc_id = "vpc-1", vpc_cidr = "172.31.0.0/16", cidr = "172.31.1.0/24", availability_zone = "az-a", port = "inside-a", eni_ip = "172.31.1.5", gateway = "172.31.1.1" }]
authorization_rule = [
  { destination_cidr = "172.31.0.0/16", authorize_all_groups = true },
  { destination_cidr = "10.9.0.0/16", access_group_id = "ops" },
]
route = [
  { destination_cidr = "172.31.0.0/16", target_subnet = "subnet-a", origin = "associate" },
  { destination_cidr = "10.9.0.0/16", target_subnet = "subnet-a" },
]

[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef1"
client_cidr_block = "10.210.0.0/20"
server_certificate = "PKI/server.crt"
server_key = "PKI/server.key"
dns_name = "vpn2.example.internal"
vpn_port = 1194
authentication = { mutual = { client_root_ca = "PKI/ca.crt" } }
"#;

/// A configuration file in a directory of its own.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("sluice.toml");
        let text = text
            .replace("STATE", &dir.path().join("state").to_string_lossy())
            .replace("PKI", &pki().to_string_lossy());
        std::fs::write(&config, text).expect("write config");
        config::load(&config).expect("the starting configuration is valid");
        Self { dir, config }
    }

    /// Runs `args` (the words after `sluice`) on the file, as the daemon would.
    fn run(&self, args: &[String]) -> Option<Result<verbs::Response, String>> {
        let mut argv = vec!["sluice".to_owned()];
        argv.extend(args.iter().cloned());
        argv.push("--config".to_owned());
        argv.push(self.config.to_string_lossy().into_owned());
        let cli = Cli::try_parse_from(&argv).ok()?;
        Some(verbs::run_in(&cli, self.dir.path()).map_err(|e| e.to_string()))
    }
}

/// What a verb may remove: from which lists, and how many entries.
#[derive(Default)]
struct MayRemove {
    endpoints: usize,
    target_networks: usize,
    rules: usize,
    routes: usize,
}

fn may_remove(verb: &str) -> MayRemove {
    match verb {
        "delete-client-vpn-endpoint" => MayRemove {
            endpoints: 1,
            ..MayRemove::default()
        },
        "disassociate-client-vpn-target-network" => MayRemove {
            target_networks: 1,
            routes: usize::MAX,
            ..MayRemove::default()
        },
        "revoke-client-vpn-ingress" => MayRemove {
            rules: 1,
            ..MayRemove::default()
        },
        "delete-client-vpn-route" => MayRemove {
            routes: 1,
            ..MayRemove::default()
        },
        _ => MayRemove::default(),
    }
}

/// Each entry of `list` in JSON, with how many times it is there (the security groups of an
/// association left out: apply-security-groups changes them).
fn bag(list: &Value) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for item in list.as_array().into_iter().flatten() {
        let mut item = item.clone();
        if let Some(o) = item.as_object_mut() {
            o.remove("security_groups");
        }
        *out.entry(item.to_string()).or_default() += 1;
    }
    out
}

/// How many entries of `before` are missing from `after`.
fn lost(before: &Value, after: &Value) -> usize {
    let (b, a) = (bag(before), bag(after));
    b.iter()
        .map(|(k, n)| n.saturating_sub(a.get(k).copied().unwrap_or(0)))
        .sum()
}

/// Checks that `after` keeps what `before` had, but for what `verb` may remove.
fn kept(verb: &str, before: &config::Config, after: &config::Config) -> Result<(), String> {
    let may = may_remove(verb);
    let json = |c: &config::Config| serde_json::to_value(c).expect("a configuration is JSON");
    let (b, a) = (json(before), json(after));
    let ids = |v: &Value| -> Vec<Value> {
        v["endpoint"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["id"].clone())
            .collect()
    };
    let gone = ids(&b).iter().filter(|id| !ids(&a).contains(id)).count();
    if gone > may.endpoints {
        return Err(format!("{verb} removed {gone} endpoint(s)"));
    }
    if lost(&b["security_group"], &a["security_group"]) > 0 {
        return Err(format!("{verb} removed a security group"));
    }
    for eb in b["endpoint"].as_array().into_iter().flatten() {
        let Some(ea) = a["endpoint"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["id"] == eb["id"])
        else {
            continue;
        };
        for (list, allowed) in [
            ("target_network", may.target_networks),
            ("authorization_rule", may.rules),
            ("route", may.routes),
        ] {
            let n = lost(&eb[list], &ea[list]);
            if n > allowed {
                return Err(format!(
                    "{verb} removed {n} {list}(s) of endpoint {}",
                    eb["id"]
                ));
            }
        }
    }
    Ok(())
}

/// The values a flag of each kind is given.
fn value_of(kind: &str) -> BoxedStrategy<String> {
    let v = |xs: &[&str]| {
        proptest::sample::select(xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).boxed()
    };
    let text = v(&[
        "",
        " ",
        "ops",
        "a\nb",
        "\u{1b}[31mred",
        "quote\"back\\slash",
        "\u{202e}é\u{1F600}",
        "a\u{0}b",
    ])
    .prop_union(Just("x".repeat(70_000)).boxed())
    .or(".{0,16}".boxed())
    .boxed();
    match kind {
        "id" => v(&[A, A, A, A, B, B, "cvpn-endpoint-0123456789abcdef9", ""]),
        "cidr" => v(&[
            "0.0.0.0/0",
            "255.255.255.255/32",
            "10.0.0.0/33",
            "10.9.0.0/16",
            "10.200.0.0/20",
            "10.220.0.0/16",
            "10.220.0.0/12",
            "10.220.0.0/23",
            "172.31.0.0/16",
            "172.31.2.0/24",
            "172.31.2.0/28",
            "172.31.1.0/24",
            "10.1.2.3/8",
            "",
        ]),
        "ip" => v(&[
            "172.31.2.5",
            "172.31.2.1",
            "172.31.2.0",
            "172.31.2.255",
            "0.0.0.0",
            "255.255.255.255",
            "1.1.1.1",
            "::1",
            "",
        ]),
        "subnet" => v(&["subnet-a", "subnet-b", "", "subnet-a "]),
        "vpc" => v(&["vpc-1", "vpc-2", ""]),
        "az" => v(&["az-a", "az-b", ""]),
        "port" => v(&["inside-a", "inside-b", "outside", "nowhere", ""]),
        "assoc" => v(&[ASSOC, "cvpn-assoc-0123456789abcdef9", ""]),
        "sg" => v(&["sg-1", "sg-2", ""]),
        "number" => v(&[
            "443", "1194", "0", "-1", "8", "10", "24", "255", "256", "65536", "99999999999",
        ]),
        "transport" => v(&["udp", "tcp", "UDP", ""]),
        "cert" => v(&["PKI/server.crt", "PKI/ca.crt", "/nonexistent", "", "relative.crt"]),
        "key" => v(&["PKI/server.key", "PKI/server-ec.key", "/nonexistent", ""]),
        "auth" => v(&[
            "Type=certificate-authentication,MutualAuthentication={ClientRootCertificateChainArn=PKI/ca.crt}",
            "Type=directory-service-authentication,ActiveDirectory={DirectoryId=PKI/none.toml}",
            "Type=federated-authentication",
            r#"{"Type": "certificate-authentication", "MutualAuthentication": {"ClientRootCertificateChain": "PKI/ca.crt"}}"#,
            "[1, 2]",
            "Type={A={B={C=}}}",
            "Type",
            "",
        ]),
        "log" => v(&[
            "Enabled=true,LogPath=logs/ep.log",
            "Enabled=true",
            "Enabled=false",
            "Enabled=maybe",
            r#"{"Enabled": true, "LogPath": "/dev/null"}"#,
            "Enabled=true,LogPath=",
            "",
        ]),
        "banner" => v(&[
            "Enabled=true,BannerText=hello",
            "Enabled=true",
            "Enabled=false",
            r#"{"Enabled": true, "BannerText": "a\nb"}"#,
            "",
        ])
        .prop_union(Just(format!("Enabled=true,BannerText={}", "b".repeat(1401))).boxed())
        .boxed(),
        "dns" => v(&[
            "172.31.0.2",
            "1.1.1.1 8.8.8.8",
            "CustomDnsServers=1.1.1.1,Enabled=true",
            "Enabled=false",
            r#"{"CustomDnsServers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"], "Enabled": true}"#,
            r#"{"CustomDnsServers": [1], "Enabled": "yes"}"#,
            "x",
            "",
        ]),
        "crl" => v(&[
            "file://PKI/crl.pem",
            "fileb://PKI/crl-all.pem",
            "PKI/ca.crt",
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
            "",
        ]),
        "dnsname" => v(&["vpn.example.internal", "-bad-", "1.2.3.4", "", "a..b"]),
        "mfa" => v(&["totp", "sms"]),
        _ => text,
    }
}

/// Each verb and its flags, with the kind of value each takes (`flag` for a switch).
const VERBS: &[(&str, &[(&str, &str)])] = &[
    (
        "create-client-vpn-endpoint",
        &[
            ("--client-cidr-block", "cidr"),
            ("--server-certificate-arn", "cert"),
            ("--server-key", "key"),
            ("--authentication-options", "auth"),
            ("--mfa", "mfa"),
            ("--connection-log-options", "log"),
            ("--dns-name", "dnsname"),
            ("--dns-servers", "dns"),
            ("--transport-protocol", "transport"),
            ("--vpn-port", "number"),
            ("--description", "text"),
            ("--split-tunnel", "flag"),
            ("--no-split-tunnel", "flag"),
            ("--session-timeout-hours", "number"),
            ("--client-login-banner-options", "banner"),
        ],
    ),
    (
        "modify-client-vpn-endpoint",
        &[
            ("--client-vpn-endpoint-id", "id"),
            ("--server-certificate-arn", "cert"),
            ("--server-key", "key"),
            ("--connection-log-options", "log"),
            ("--dns-servers", "dns"),
            ("--vpn-port", "number"),
            ("--description", "text"),
            ("--split-tunnel", "flag"),
            ("--no-split-tunnel", "flag"),
            ("--session-timeout-hours", "number"),
            ("--client-login-banner-options", "banner"),
            ("--dns-name", "dnsname"),
        ],
    ),
    (
        "delete-client-vpn-endpoint",
        &[("--client-vpn-endpoint-id", "id")],
    ),
    (
        "associate-client-vpn-target-network",
        &[
            ("--client-vpn-endpoint-id", "id"),
            ("--subnet-id", "subnet"),
            ("--vpc-id", "vpc"),
            ("--vpc-cidr", "cidr"),
            ("--cidr", "cidr"),
            ("--availability-zone", "az"),
            ("--port", "port"),
            ("--eni-ip", "ip"),
            ("--gateway", "ip"),
        ],
    ),
    (
        "disassociate-client-vpn-target-network",
        &[
            ("--client-vpn-endpoint-id", "id"),
            ("--association-id", "assoc"),
        ],
    ),
    (
        "apply-security-groups-to-client-vpn-target-network",
        &[
            ("--client-vpn-endpoint-id", "id"),
            ("--vpc-id", "vpc"),
            ("--security-group-ids", "sg"),
        ],
    ),
    (
        "authorize-client-vpn-ingress",
        &[
            ("--client-vpn-endpoint-id", "id"),
            ("--target-network-cidr", "cidr"),
            ("--access-group-id", "text"),
            ("--authorize-all-groups", "flag"),
            ("--description", "text"),
        ],
    ),
    (
        "revoke-client-vpn-ingress",
        &[
            ("--client-vpn-endpoint-id", "id"),
            ("--target-network-cidr", "cidr"),
            ("--access-group-id", "text"),
            ("--revoke-all-groups", "flag"),
        ],
    ),
    (
        "create-client-vpn-route",
        &[
            ("--client-vpn-endpoint-id", "id"),
            ("--destination-cidr-block", "cidr"),
            ("--target-vpc-subnet-id", "subnet"),
            ("--description", "text"),
        ],
    ),
    (
        "delete-client-vpn-route",
        &[
            ("--client-vpn-endpoint-id", "id"),
            ("--destination-cidr-block", "cidr"),
            ("--target-vpc-subnet-id", "subnet"),
        ],
    ),
    (
        "import-client-vpn-client-certificate-revocation-list",
        &[
            ("--client-vpn-endpoint-id", "id"),
            ("--certificate-revocation-list", "crl"),
        ],
    ),
    (
        "export-client-vpn-client-certificate-revocation-list",
        &[("--client-vpn-endpoint-id", "id")],
    ),
    (
        "export-client-vpn-client-configuration",
        &[("--client-vpn-endpoint-id", "id")],
    ),
    (
        "describe-client-vpn-endpoints",
        &[("--client-vpn-endpoint-ids", "id")],
    ),
    (
        "describe-client-vpn-target-networks",
        &[
            ("--client-vpn-endpoint-id", "id"),
            ("--association-ids", "assoc"),
        ],
    ),
    (
        "describe-client-vpn-authorization-rules",
        &[("--client-vpn-endpoint-id", "id")],
    ),
    (
        "describe-client-vpn-routes",
        &[("--client-vpn-endpoint-id", "id")],
    ),
    ("validate", &[]),
];

/// A verb with each of its flags given (mostly) or left out, each with a value of its kind.
fn argv() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::select((0..VERBS.len()).collect::<Vec<_>>()).prop_flat_map(|v| {
        let (verb, flags) = VERBS[v];
        let each: Vec<BoxedStrategy<Vec<String>>> = flags
            .iter()
            .map(|(flag, kind)| {
                let flag = (*flag).to_owned();
                if *kind == "flag" {
                    prop_oneof![Just(vec![]), Just(vec![flag])].boxed()
                } else {
                    let present = (value_of(kind), any::<u8>())
                        .prop_map(move |(value, _)| vec![flag.clone(), value]);
                    prop_oneof![1 => Just(vec![]), 12 => present].boxed()
                }
            })
            .collect();
        (each, prop_oneof![Just("json"), Just("table"), Just("text")]).prop_map(
            move |(parts, output)| {
                let mut args = vec![verb.to_owned(), "--output".to_owned(), output.to_owned()];
                args.extend(parts.into_iter().flatten());
                let pki = pki().to_string_lossy().into_owned();
                args.into_iter().map(|a| a.replace("PKI", &pki)).collect()
            },
        )
    })
}

/// `args`, each cut to 40 characters, for failure messages.
fn shown(args: &[String]) -> Vec<String> {
    args.iter().map(|a| a.chars().take(40).collect()).collect()
}

/// Applies `args` to a fresh copy of `start` and checks the outcome.
fn check_verb(start: &str, args: &[String]) -> Result<(), TestCaseError> {
    let setup = Setup::new(start);
    let before_text = std::fs::read(&setup.config).expect("read");
    let before = config::load(&setup.config).expect("valid").config;
    let Some(outcome) = setup.run(args) else {
        return Ok(());
    };
    let after_text = std::fs::read(&setup.config).expect("read");
    match outcome {
        Err(_) => prop_assert!(
            before_text == after_text,
            "a refused verb changed the file: {:?}",
            shown(args)
        ),
        Ok(response) => {
            for output in [
                sluice_control::admin::cli::Output::Json,
                sluice_control::admin::cli::Output::Table,
                sluice_control::admin::cli::Output::Text,
            ] {
                let _ = response.render(output);
            }
            let after = config::load(&setup.config);
            prop_assert!(
                after.is_ok(),
                "{:?} wrote a file validation refuses: {}",
                shown(args),
                after
                    .as_ref()
                    .err()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            );
            let after = after
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .config;
            if let Err(e) = kept(&args[0], &before, &after) {
                return Err(TestCaseError::fail(format!("{e}: {:?}", shown(args))));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 120,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Verbs on a file written with arrays of tables.
    #[test]
    fn verbs_on_tables_refuse_or_write_a_valid_file_that_keeps_the_rest(args in argv()) {
        check_verb(TABLES, &args)?;
    }

    /// Verbs on a file with one endpoint (so that another can be created).
    #[test]
    fn verbs_on_one_endpoint_refuse_or_write_a_valid_file_that_keeps_the_rest(args in argv()) {
        let one = &TABLES[..TABLES.rfind("[[endpoint]]").expect("two endpoints")];
        check_verb(one, &args)?;
    }

    /// Verbs on a file written with inline arrays throughout.
    #[test]
    fn verbs_on_inline_arrays_refuse_or_write_a_valid_file_that_keeps_the_rest(args in argv()) {
        check_verb(INLINE, &args)?;
    }

    /// Verbs on a file whose endpoints are tables with inline arrays.
    #[test]
    fn verbs_on_mixed_arrays_refuse_or_write_a_valid_file_that_keeps_the_rest(args in argv()) {
        check_verb(MIXED, &args)?;
    }

    /// Any words after `sluice` are parsed or refused, never a panic.
    #[test]
    fn any_argument_vector_is_parsed_or_refused(
        words in proptest::collection::vec(
            prop_oneof![
                3 => proptest::sample::select(
                    VERBS.iter().map(|(v, _)| (*v).to_owned()).collect::<Vec<_>>()
                ),
                3 => proptest::sample::select(
                    VERBS
                        .iter()
                        .flat_map(|(_, f)| f.iter().map(|(f, _)| (*f).to_owned()))
                        .chain(["--output".to_owned(), "--config".to_owned(), "--help".to_owned(), "--version".to_owned(), "--".to_owned(), "-".to_owned()])
                        .collect::<Vec<_>>()
                ),
                2 => ".{0,12}",
            ],
            0..10,
        )
    ) {
        let mut argv = vec!["sluice".to_owned()];
        argv.extend(words);
        let _ = Cli::try_parse_from(&argv).map_err(|e| e.to_string());
    }

    /// Any request line is decoded or refused, never a panic.
    #[test]
    fn any_request_line_is_decoded_or_refused(
        line in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            ".{0,64}".prop_map(String::into_bytes),
            (proptest::collection::vec(".{0,12}", 0..6), proptest::option::of(".{0,12}"), proptest::option::of(".{0,12}"))
                .prop_map(|(args, config, cwd)| {
                    serde_json::json!({ "args": args, "config": config, "cwd": cwd }).to_string().into_bytes()
                }),
        ]
    ) {
        if let Ok(r) = serde_json::from_slice::<Request>(&line) {
            let mut argv = vec!["sluice".to_owned()];
            argv.extend(r.args);
            let _ = Cli::try_parse_from(&argv);
        }
    }
}

/// The cases the properties found, shrunk: an endpoint's rules written as an inline array
/// (`authorization_rule = [{ ... }, { ... }]`), then one rule authorized. The verb replaced
/// the array with a new one holding only its rule, so the file it wrote (valid: fewer rules
/// are allowed) had silently revoked the other two. A verb that removes an entry from such an
/// array (revoke, delete-route, delete-endpoint) removed it from the new, empty one: a panic,
/// which on the admin socket ends the daemon. So for every list a verb adds to or removes
/// from, and for the endpoints themselves: what was there stays, but for what it removes.
#[test]
fn a_verb_changes_an_inline_array_of_tables_and_keeps_its_other_entries() {
    let pki = pki().to_string_lossy().into_owned();
    let associate = [
        "associate-client-vpn-target-network",
        "--client-vpn-endpoint-id",
        A,
        "--subnet-id",
        "subnet-b",
        "--vpc-id",
        "vpc-1",
        "--vpc-cidr",
        "172.31.0.0/16",
        "--cidr",
        "172.31.2.0/24",
        "--availability-zone",
        "az-b",
        "--port",
        "inside-b",
        "--eni-ip",
        "172.31.2.5",
        "--gateway",
        "172.31.2.1",
    ];
    let on_a = |verb: &str, rest: &[&str]| -> Vec<String> {
        [verb, "--client-vpn-endpoint-id", A]
            .iter()
            .chain(rest)
            .map(|s| (*s).to_owned())
            .collect()
    };
    // (file, verb, list, entries of the list after it)
    let cases: Vec<(&str, Vec<String>, &str, usize)> = vec![
        (
            MIXED,
            on_a(
                "authorize-client-vpn-ingress",
                &[
                    "--target-network-cidr",
                    "10.9.0.0/16",
                    "--access-group-id",
                    "dev",
                ],
            ),
            "authorization_rule",
            3,
        ),
        (
            MIXED,
            on_a(
                "revoke-client-vpn-ingress",
                &[
                    "--target-network-cidr",
                    "10.9.0.0/16",
                    "--access-group-id",
                    "ops",
                ],
            ),
            "authorization_rule",
            1,
        ),
        (
            MIXED,
            on_a(
                "create-client-vpn-route",
                &[
                    "--destination-cidr-block",
                    "10.8.0.0/16",
                    "--target-vpc-subnet-id",
                    "subnet-a",
                ],
            ),
            "route",
            3,
        ),
        (
            MIXED,
            on_a(
                "delete-client-vpn-route",
                &["--destination-cidr-block", "10.9.0.0/16"],
            ),
            "route",
            1,
        ),
        (
            MIXED,
            associate.iter().map(|s| (*s).to_owned()).collect(),
            "target_network",
            2,
        ),
        (
            INLINE,
            vec![
                "delete-client-vpn-endpoint".to_owned(),
                "--client-vpn-endpoint-id".to_owned(),
                B.to_owned(),
            ],
            "endpoint",
            1,
        ),
    ];
    for (start, args, list, want) in cases {
        let setup = Setup::new(start);
        let args: Vec<String> = args.iter().map(|a| a.replace("PKI", &pki)).collect();
        let response = setup.run(&args).expect("parses");
        assert!(response.is_ok(), "{}: {:?}", args[0], response.err());
        let after = config::load(&setup.config).expect("valid").config;
        let a = &after.endpoints[0];
        let n = match list {
            "authorization_rule" => a.authorization_rules.len(),
            "route" => a.routes.len(),
            "target_network" => a.target_networks.len(),
            _ => after.endpoints.len(),
        };
        assert_eq!(n, want, "{} left {n} {list}(s)", args[0]);
        assert_eq!(a.id.as_str(), A);
        if list == "endpoint" {
            assert_eq!(a.authorization_rules.len(), 2);
            assert_eq!(a.routes.len(), 2);
        }
    }
}

/// `pem` with the DER of its first block changed by `edit`, written back as PEM.
fn with_der(pem: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let lines: Vec<&str> = pem.lines().collect();
    let begin = lines
        .iter()
        .position(|l| l.starts_with("-----BEGIN"))
        .expect("BEGIN");
    let end = lines
        .iter()
        .position(|l| l.starts_with("-----END"))
        .expect("END");
    let mut der = engine
        .decode(lines[begin + 1..end].concat())
        .expect("base64");
    edit(&mut der);
    let body = engine.encode(&der);
    let wrapped: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ASCII"))
        .collect();
    format!("{}\n{}\n{}\n", lines[begin], wrapped.join("\n"), lines[end])
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A CRL with a byte of its DER changed, or cut short: validation (what
    /// import-client-vpn-client-certificate-revocation-list and every load check) refuses it,
    /// or the daemon takes it, building the endpoint's TLS and reading its revoked serials.
    #[test]
    fn a_crl_validation_accepts_is_one_the_daemon_loads(
        at in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
        cut in proptest::bool::weighted(0.1),
    ) {
        let setup = Setup::new(TABLES);
        let pem = std::fs::read_to_string(pki().join("crl.pem")).expect("crl.pem");
        let mutated = with_der(&pem, |der| {
            let i = at.index(der.len());
            if cut {
                der.truncate(i);
            } else {
                der[i] = byte;
            }
        });
        let crl = setup.dir.path().join("mutated-crl.pem");
        std::fs::write(&crl, &mutated).expect("write");
        let text = std::fs::read_to_string(&setup.config).expect("read");
        let text = text.replacen(
            "dns_servers = [\"172.31.0.2\"]",
            &format!("dns_servers = [\"172.31.0.2\"]\ncrl = {:?}", crl.to_string_lossy()),
            1,
        );
        std::fs::write(&setup.config, text).expect("write");
        if let Ok(loaded) = config::load(&setup.config) {
            let ep = &loaded.config.endpoints[0];
            prop_assert!(ep.crl.is_some());
            let tls = sluice_control::runtime::endpoint::tls(&loaded, ep);
            prop_assert!(tls.is_ok(), "validation accepted a CRL the daemon refuses: {:?}", tls.err());
        }
    }
}

/// The case the property above found, as webpki names it: a CRL whose signature algorithm
/// inside (tbsCertList) differs from the one outside. x509-parser reads it, so validation
/// took it, and webpki refuses it (`SignatureAlgorithmMismatch`), so the daemon could not
/// build the endpoint's TLS: import-client-vpn-client-certificate-revocation-list wrote the
/// file and its commit passed, and the reload then refused the configuration (at a start, the
/// daemon did not start). Now validation builds the TLS as the daemon does and refuses it, and
/// the import refuses it before it replaces the CRL in force.
#[test]
fn a_crl_with_mismatched_signature_algorithms_is_refused_before_it_is_written() {
    const SHA256_WITH_RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b,
    ];
    let pem = std::fs::read_to_string(pki().join("crl.pem")).expect("crl.pem");
    let mismatched = with_der(&pem, |der| {
        let at = der
            .windows(SHA256_WITH_RSA.len())
            .position(|w| w == SHA256_WITH_RSA)
            .expect("the CRL is signed with sha256WithRSAEncryption");
        // sha384WithRSAEncryption inside, sha256WithRSAEncryption outside.
        der[at + SHA256_WITH_RSA.len() - 1] = 0x0c;
    });

    // Named by the configuration: refused, on the endpoint's crl.
    let setup = Setup::new(TABLES);
    let crl = setup.dir.path().join("mismatched-crl.pem");
    std::fs::write(&crl, &mismatched).expect("write");
    let good = std::fs::read_to_string(&setup.config).expect("read");
    let text = good.replacen(
        "dns_servers = [\"172.31.0.2\"]",
        &format!(
            "dns_servers = [\"172.31.0.2\"]\ncrl = {:?}",
            crl.to_string_lossy()
        ),
        1,
    );
    std::fs::write(&setup.config, &text).expect("write");
    let e = config::load(&setup.config).expect_err("refused");
    let d = &e.diagnostics[0];
    assert_eq!(d.field, "endpoint[0].crl", "{e}");
    assert!(
        d.message.contains("the TLS layer refuses")
            && d.message.contains("SignatureAlgorithmMismatch"),
        "{e}"
    );

    // Imported over a CRL in force: refused, and neither the file nor the CRL changes.
    std::fs::write(&setup.config, &good).expect("write");
    let import = |crl: &str| {
        setup.run(&[
            "import-client-vpn-client-certificate-revocation-list".to_owned(),
            "--client-vpn-endpoint-id".to_owned(),
            A.to_owned(),
            // The PEM text itself, which starts with dashes: given with `=`.
            format!("--certificate-revocation-list={crl}"),
        ])
    };
    import(&pem)
        .expect("parses")
        .expect("a good CRL is imported");
    let config_before = std::fs::read(&setup.config).expect("read");
    let in_force = config::load(&setup.config).expect("valid").config.endpoints[0]
        .crl
        .clone()
        .expect("a CRL");
    let e = import(&mismatched).expect("parses").expect_err("refused");
    assert!(e.contains("SignatureAlgorithmMismatch"), "{e}");
    assert_eq!(std::fs::read(&setup.config).expect("read"), config_before);
    assert_eq!(std::fs::read_to_string(&in_force).expect("read"), pem);
    let loaded = config::load(&setup.config).expect("still valid");
    assert!(sluice_control::runtime::endpoint::tls(&loaded, &loaded.config.endpoints[0]).is_ok());
}

/// describe-client-vpn-endpoints as the daemon that serves the file would run it
/// (`verbs::run_served`, with the configuration it started with): an endpoint created since
/// it started keeps AWS's `Status.Code` and says in `Status.Message` that it is served after a
/// restart; one written again with another client CIDR, or moved to another port, says so too;
/// the endpoints served as written have no message. Offline (`run_in`) none has one.
#[test]
fn describe_says_which_endpoints_the_daemon_serves_after_a_restart() {
    let setup = Setup::new(TABLES);
    let started = config::load(&setup.config).expect("valid").config;
    let describe = |served: bool| {
        let argv = [
            "sluice",
            "describe-client-vpn-endpoints",
            "--config",
            &setup.config.to_string_lossy(),
        ];
        let cli = Cli::try_parse_from(argv).expect("parses");
        let r = if served {
            verbs::run_served(&cli, setup.dir.path(), &started)
        } else {
            verbs::run_in(&cli, setup.dir.path())
        }
        .expect("described");
        let items = r.json["ClientVpnEndpoints"]
            .as_array()
            .cloned()
            .expect("list");
        let by_id: BTreeMap<String, Value> = items
            .into_iter()
            .map(|e| {
                (
                    e["ClientVpnEndpointId"].as_str().expect("id").to_owned(),
                    e["Status"].clone(),
                )
            })
            .collect();
        (by_id, r.table)
    };
    let (now, table) = describe(true);
    assert!(now.values().all(|s| s.get("Message").is_none()), "{now:?}");
    assert!(!table.contains("StatusMessage"), "{table}");

    // B deleted, and C created on its port (1194), as verbs on the daemon do.
    setup
        .run(&[
            "delete-client-vpn-endpoint".to_owned(),
            "--client-vpn-endpoint-id".to_owned(),
            B.to_owned(),
        ])
        .expect("parses")
        .expect("deleted");
    let created = setup
        .run(&[
            "create-client-vpn-endpoint".to_owned(),
            "--client-cidr-block".to_owned(),
            "10.220.0.0/20".to_owned(),
            "--server-certificate-arn".to_owned(),
            pki().join("server.crt").to_string_lossy().into_owned(),
            "--server-key".to_owned(),
            pki().join("server.key").to_string_lossy().into_owned(),
            "--authentication-options".to_owned(),
            format!(
                "Type=certificate-authentication,MutualAuthentication={{ClientRootCertificateChainArn={}}}",
                pki().join("ca.crt").display()
            ),
            "--dns-name".to_owned(),
            "vpn3.example.internal".to_owned(),
            "--vpn-port".to_owned(),
            "1194".to_owned(),
        ])
        .expect("parses")
        .expect("created");
    let c = created.json["ClientVpnEndpointId"]
        .as_str()
        .expect("id")
        .to_owned();
    let (now, table) = describe(true);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now[A].get("Message").is_none(), "{now:?}");
    assert_eq!(
        now[&c],
        serde_json::json!({
            "Code": "pending-associate",
            "Message": "created since the daemon started; served after a restart",
        })
    );
    assert!(
        table.contains("StatusMessage") && table.contains("served after a restart"),
        "{table}"
    );
    let (offline, _) = describe(false);
    assert!(
        offline.values().all(|s| s.get("Message").is_none()),
        "{offline:?}"
    );

    // C written again as B, with another client CIDR than B started with.
    let text = std::fs::read_to_string(&setup.config)
        .expect("read")
        .replace(&c, B);
    std::fs::write(&setup.config, text).expect("write");
    let (now, _) = describe(true);
    assert_eq!(
        now[B],
        serde_json::json!({
            "Code": "pending-associate",
            "Message": "created again since the daemon started, with another client CIDR; takes \
                        no connection until a restart",
        })
    );

    // A and B as they started, but each on the other's port.
    let swapped = TABLES
        .replace("vpn_port = 1194", "vpn_port = 443")
        .replace(
            "dns_servers = [\"172.31.0.2\"]",
            "dns_servers = [\"172.31.0.2\"]\nvpn_port = 1194",
        )
        .replace("STATE", &setup.dir.path().join("state").to_string_lossy())
        .replace("PKI", &pki().to_string_lossy());
    std::fs::write(&setup.config, swapped).expect("write");
    let (now, _) = describe(true);
    assert_eq!(
        now[A],
        serde_json::json!({
            "Code": "available",
            "Message": "vpn_port changed since the daemon started; served on port 443 until a \
                        restart",
        })
    );
    assert_eq!(
        now[B]["Message"],
        "vpn_port changed since the daemon started; served on port 1194 until a restart"
    );
}
