//! CLI round trips against a temporary configuration, through the real `sluice` binary: create,
//! associate, authorize, route, describe, refuse, delete; refused changes leave the file
//! byte-identical; certificates are checked. The PKI comes from easy-rsa (scripts/gen-pki.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// A PKI made once per run of this test binary (easy-rsa takes a few seconds).
fn pki() -> &'static Path {
    static PKI: OnceLock<PathBuf> = OnceLock::new();
    sluice_tests::pki_once(&PKI, || {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-pki")
    })
}

struct Env {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

const START: &str = r#"# sluice test configuration
# (this comment must survive every verb)

[appliance]
admin_socket = "STATE/admin.sock"
state_dir = "STATE"

[[dataplane.port]]
name = "outside"   # toward clients
device = "net_null0"
ip = "192.168.50.1/24"

[[dataplane.port]]
name = "inside-a"
device = "net_null1"
ip = "172.31.1.5/24"
"#;

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("sluice.toml");
        let state = dir.path().join("state");
        std::fs::write(&config, START.replace("STATE", &state.to_string_lossy()))
            .expect("write config");
        Self { _dir: dir, config }
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run sluice");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> Value {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "sluice {args:?} failed: {err}");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("sluice {args:?} printed non-JSON ({e}): {out}"))
    }

    /// Runs a verb that must be refused: exit 2, the file unchanged, stderr mentioning `says`.
    #[track_caller]
    fn refused(&self, args: &[&str], says: &str) -> String {
        let before = std::fs::read(&self.config).expect("read");
        let (code, _, err) = self.run(args);
        assert_eq!(
            code, 2,
            "sluice {args:?} should be refused with exit 2; stderr: {err}"
        );
        assert!(
            err.contains(says),
            "stderr of {args:?} lacks {says:?}: {err}"
        );
        assert_eq!(
            std::fs::read(&self.config).expect("read"),
            before,
            "a refused change altered the file"
        );
        err
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.config).expect("read")
    }
}

fn p(name: &str) -> String {
    pki().join(name).to_string_lossy().into_owned()
}

fn create(env: &Env, cert: &str, key: &str) -> (i32, String, String) {
    create_with(env, &p(cert), &p(key), &p("ca.crt"), &[])
}

/// Creates an endpoint from the certificate, key and client root CA at these paths, with
/// `extra` arguments.
fn create_with(
    env: &Env,
    cert: &str,
    key: &str,
    root_ca: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let auth = format!(
        "Type=certificate-authentication,MutualAuthentication={{ClientRootCertificateChainArn={root_ca}}}"
    );
    let mut args = vec![
        "create-client-vpn-endpoint",
        "--client-cidr-block",
        "10.200.0.0/20",
        "--server-certificate-arn",
        cert,
        "--server-key",
        key,
        "--authentication-options",
        &auth,
        "--dns-name",
        "vpn.example.internal",
        "--dns-servers",
        "172.31.0.2",
        "--split-tunnel",
        "--description",
        "test endpoint",
    ];
    args.extend_from_slice(extra);
    env.run(&args)
}

fn associate(env: &Env, id: &str) -> String {
    associate_subnet(env, id, 'a', 1)
}

/// Associates subnet-`name`, 172.31.`third`.0/24 of vpc-1 (ENI .5, gateway .1) through port
/// inside-`name`; its association ID.
fn associate_subnet(env: &Env, id: &str, name: char, third: u8) -> String {
    let (subnet, cidr, zone, port) = (
        format!("subnet-{name}"),
        format!("172.31.{third}.0/24"),
        format!("az-{name}"),
        format!("inside-{name}"),
    );
    let (eni, gateway) = (format!("172.31.{third}.5"), format!("172.31.{third}.1"));
    let v = env.ok(&[
        "associate-client-vpn-target-network",
        "--client-vpn-endpoint-id",
        id,
        "--subnet-id",
        &subnet,
        "--vpc-id",
        "vpc-1",
        "--vpc-cidr",
        "172.31.0.0/16",
        "--cidr",
        &cidr,
        "--availability-zone",
        &zone,
        "--port",
        &port,
        "--eni-ip",
        &eni,
        "--gateway",
        &gateway,
    ]);
    assert_eq!(v["Status"]["Code"], "associated");
    v["AssociationId"]
        .as_str()
        .expect("association id")
        .to_owned()
}

#[test]
fn round_trip() {
    let env = Env::new();
    let (code, out, err) = create(&env, "server.crt", "server.key");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["Status"]["Code"], "pending-associate");
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    assert!(
        id.starts_with("cvpn-endpoint-") && id.len() == 14 + 17,
        "{id}"
    );

    let d = env.ok(&["describe-client-vpn-endpoints"]);
    assert_eq!(
        d["ClientVpnEndpoints"][0]["Status"]["Code"],
        "pending-associate"
    );
    assert_eq!(d["ClientVpnEndpoints"][0]["SplitTunnel"], true);
    assert_eq!(
        d["ClientVpnEndpoints"][0]["AuthenticationOptions"][0]["Type"],
        "certificate-authentication"
    );

    // A route before any association is refused: there is no subnet to target.
    env.refused(
        &[
            "create-client-vpn-route",
            "--client-vpn-endpoint-id",
            &id,
            "--destination-cidr-block",
            "0.0.0.0/0",
            "--target-vpc-subnet-id",
            "subnet-a",
        ],
        "InvalidClientVpnSubnetId.NotFound",
    );

    let assoc = associate(&env, &id);
    let d = env.ok(&[
        "describe-client-vpn-endpoints",
        "--client-vpn-endpoint-ids",
        &id,
    ]);
    assert_eq!(d["ClientVpnEndpoints"][0]["Status"]["Code"], "available");
    let r = env.ok(&[
        "describe-client-vpn-routes",
        "--client-vpn-endpoint-id",
        &id,
    ]);
    assert_eq!(r["Routes"][0]["DestinationCidr"], "172.31.0.0/16");
    assert_eq!(r["Routes"][0]["Origin"], "associate");
    let t = env.ok(&[
        "describe-client-vpn-target-networks",
        "--client-vpn-endpoint-id",
        &id,
    ]);
    assert_eq!(
        t["ClientVpnTargetNetworks"][0]["AssociationId"],
        assoc.as_str()
    );

    env.ok(&[
        "authorize-client-vpn-ingress",
        "--client-vpn-endpoint-id",
        &id,
        "--target-network-cidr",
        "172.31.0.0/16",
        "--authorize-all-groups",
    ]);
    env.ok(&[
        "authorize-client-vpn-ingress",
        "--client-vpn-endpoint-id",
        &id,
        "--target-network-cidr",
        "10.50.0.0/16",
        "--access-group-id",
        "engineering",
        "--description",
        "peered",
    ]);
    env.refused(
        &[
            "authorize-client-vpn-ingress",
            "--client-vpn-endpoint-id",
            &id,
            "--target-network-cidr",
            "10.50.0.0/16",
            "--access-group-id",
            "engineering",
        ],
        "InvalidClientVpnDuplicateAuthorizationRule",
    );
    let rules = env.ok(&[
        "describe-client-vpn-authorization-rules",
        "--client-vpn-endpoint-id",
        &id,
    ]);
    assert_eq!(
        rules["AuthorizationRules"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(rules["AuthorizationRules"][1]["GroupId"], "engineering");

    env.ok(&[
        "create-client-vpn-route",
        "--client-vpn-endpoint-id",
        &id,
        "--destination-cidr-block",
        "10.50.0.0/16",
        "--target-vpc-subnet-id",
        "subnet-a",
        "--description",
        "peered",
    ]);
    // A route that overlaps the client CIDR is refused by validation, with its position.
    let err = env.refused(
        &[
            "create-client-vpn-route",
            "--client-vpn-endpoint-id",
            &id,
            "--destination-cidr-block",
            "10.200.4.0/24",
            "--target-vpc-subnet-id",
            "subnet-a",
        ],
        "overlaps the destination 10.200.4.0/24",
    );
    assert!(err.contains("sluice.toml:"), "{err}");
    env.refused(
        &[
            "create-client-vpn-route",
            "--client-vpn-endpoint-id",
            &id,
            "--destination-cidr-block",
            "10.50.0.1/16",
            "--target-vpc-subnet-id",
            "subnet-a",
        ],
        "host bits set",
    );
    env.refused(
        &[
            "delete-client-vpn-route",
            "--client-vpn-endpoint-id",
            &id,
            "--destination-cidr-block",
            "172.31.0.0/16",
        ],
        "disassociate the subnet",
    );
    env.refused(
        &[
            "delete-client-vpn-endpoint",
            "--client-vpn-endpoint-id",
            &id,
        ],
        "disassociate them before deleting it",
    );
    env.refused(
        &[
            "describe-client-vpn-routes",
            "--client-vpn-endpoint-id",
            "cvpn-endpoint-00000000000000000",
        ],
        "NotFound",
    );

    // Comments and layout of untouched parts survive.
    let text = env.text();
    assert!(
        text.starts_with("# sluice test configuration\n# (this comment must survive every verb)\n"),
        "{text}"
    );
    assert!(
        text.contains("name = \"outside\"   # toward clients"),
        "{text}"
    );

    // Tear it all down again.
    env.ok(&[
        "revoke-client-vpn-ingress",
        "--client-vpn-endpoint-id",
        &id,
        "--target-network-cidr",
        "10.50.0.0/16",
        "--access-group-id",
        "engineering",
    ]);
    env.ok(&[
        "delete-client-vpn-route",
        "--client-vpn-endpoint-id",
        &id,
        "--destination-cidr-block",
        "10.50.0.0/16",
    ]);
    env.ok(&[
        "disassociate-client-vpn-target-network",
        "--client-vpn-endpoint-id",
        &id,
        "--association-id",
        &assoc,
    ]);
    let d = env.ok(&["describe-client-vpn-endpoints"]);
    assert_eq!(
        d["ClientVpnEndpoints"][0]["Status"]["Code"],
        "pending-associate"
    );
    assert_eq!(
        env.ok(&["describe-client-vpn-routes"])["Routes"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    env.ok(&[
        "delete-client-vpn-endpoint",
        "--client-vpn-endpoint-id",
        &id,
    ]);
    assert_eq!(
        env.ok(&["describe-client-vpn-endpoints"])["ClientVpnEndpoints"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert!(env.text().starts_with("# sluice test configuration\n"));

    // Every action, allowed or refused, is in the audit trail with who, what and the result.
    let trail = std::fs::read_to_string(env.config.parent().expect("dir").join("state/audit.log"))
        .expect("audit trail");
    let events: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let first = &events[0];
    assert_eq!(first["eventName"], "CreateClientVpnEndpoint");
    assert_eq!(first["readOnly"], false);
    assert_eq!(
        first["requestParameters"]["clientCidrBlock"],
        "10.200.0.0/20"
    );
    assert_eq!(
        first["responseElements"]["ClientVpnEndpointId"],
        id.as_str()
    );
    assert_eq!(first["userIdentity"]["type"], "LocalUser");
    assert!(first["eventTime"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("errorCode").is_some())
        .collect();
    assert!(refused
        .iter()
        .any(|e| e["eventName"] == "CreateClientVpnRoute"
            && e["errorCode"] == "InvalidClientVpnSubnetId.NotFound"));
    assert!(refused
        .iter()
        .any(|e| e["errorCode"] == "InvalidConfiguration"));
    for verb in [
        "AssociateClientVpnTargetNetwork",
        "AuthorizeClientVpnIngress",
        "RevokeClientVpnIngress",
        "DeleteClientVpnRoute",
        "DisassociateClientVpnTargetNetwork",
        "DeleteClientVpnEndpoint",
        "DescribeClientVpnRoutes",
    ] {
        assert!(
            events.iter().any(|e| e["eventName"] == verb),
            "no {verb} event in the trail"
        );
    }
}

#[test]
fn a_further_association_gets_the_endpoints_security_groups() {
    let env = Env::new();
    let mut text = env.text();
    text.push_str(
        r#"
[[dataplane.port]]
name = "inside-b"
device = "net_null2"
ip = "172.31.2.5/24"

[[security_group]]
id = "sg-web"
[[security_group.egress]]
protocol = "tcp"
from_port = 443
to_port = 443
destination_cidr = "0.0.0.0/0"
"#,
    );
    std::fs::write(&env.config, text).expect("write config");
    let (_, out, err) = create(&env, "server.crt", "server.key");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{err}"));
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    // The first association gets the VPC's default group (none written: allow all).
    let first = associate(&env, &id);
    let t = env.ok(&[
        "describe-client-vpn-target-networks",
        "--client-vpn-endpoint-id",
        &id,
    ]);
    assert_eq!(
        t["ClientVpnTargetNetworks"][0]["SecurityGroups"],
        serde_json::json!([])
    );
    env.ok(&[
        "authorize-client-vpn-ingress",
        "--client-vpn-endpoint-id",
        &id,
        "--target-network-cidr",
        "172.31.0.0/16",
        "--authorize-all-groups",
    ]);
    env.ok(&[
        "apply-security-groups-to-client-vpn-target-network",
        "--client-vpn-endpoint-id",
        &id,
        "--vpc-id",
        "vpc-1",
        "--security-group-ids",
        "sg-web",
    ]);
    associate_subnet(&env, &id, 'b', 2);
    let t = env.ok(&[
        "describe-client-vpn-target-networks",
        "--client-vpn-endpoint-id",
        &id,
    ]);
    let nets = t["ClientVpnTargetNetworks"].as_array().expect("list");
    assert_eq!(nets.len(), 2, "{t}");
    for n in nets {
        assert_eq!(n["SecurityGroups"], serde_json::json!(["sg-web"]), "{t}");
    }
    // --association-ids narrows the list, as in the AWS CLI; an unknown one is an error.
    let one = env.ok(&[
        "describe-client-vpn-target-networks",
        "--client-vpn-endpoint-id",
        &id,
        "--association-ids",
        &first,
    ]);
    let one = one["ClientVpnTargetNetworks"].as_array().expect("list");
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0]["AssociationId"], first.as_str());
    assert_eq!(one[0]["TargetNetworkId"], "subnet-a");
    env.refused(
        &[
            "describe-client-vpn-target-networks",
            "--client-vpn-endpoint-id",
            &id,
            "--association-ids",
            "cvpn-assoc-00000000000000000",
        ],
        "InvalidClientVpnAssociationId.NotFound",
    );
    let d = env.ok(&["describe-client-vpn-endpoints"]);
    assert_eq!(
        d["ClientVpnEndpoints"][0]["SecurityGroupIds"],
        serde_json::json!(["sg-web"])
    );

    // The compiled tables filter traffic through either subnet by sg-web: the VPC's local route
    // goes through both, the flow hash choosing one.
    let loaded = sluice_control::config::load(&env.config).expect("valid");
    let c = sluice_control::compile::compile(&loaded.config, 1).expect("compiles");
    let (tcp, dst) = (6, u32::from(std::net::Ipv4Addr::new(172, 31, 2, 10)));
    let everyone = c.groups[0].mask([]);
    let mut ports = Vec::new();
    for hash in 0..2 {
        let web = c.table.decide(0, &everyone, dst, tcp, 443, hash);
        match web {
            Ok(d) => ports.push(d.target.port),
            Err(e) => panic!("flow hash {hash}: tcp 443 dropped ({e:?})"),
        }
        let ssh = c
            .table
            .decide(0, &everyone, dst, tcp, 22, hash)
            .map(|d| d.target.port);
        assert_eq!(
            ssh,
            Err(sluice_engine::packet::DropReason::SecurityGroupDenied),
            "flow hash {hash}: ssh got through"
        );
    }
    ports.sort_unstable();
    assert_eq!(ports, [1, 2], "tcp 443 goes through inside-a and inside-b");
}

#[test]
fn modify_and_fixed_fields() {
    let env = Env::new();
    let (_, out, err) = create(&env, "server.crt", "server.key");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{err}"));
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    env.ok(&[
        "modify-client-vpn-endpoint",
        "--client-vpn-endpoint-id",
        &id,
        "--vpn-port",
        "1194",
        "--session-timeout-hours",
        "12",
        "--dns-servers",
        "172.31.0.2",
        "172.31.0.3",
        "--client-login-banner-options",
        "Enabled=true,BannerText=Hello",
    ]);
    let d = env.ok(&["describe-client-vpn-endpoints"]);
    let e = &d["ClientVpnEndpoints"][0];
    assert_eq!(e["VpnPort"], 1194);
    assert_eq!(e["SessionTimeoutHours"], 12);
    assert_eq!(e["ClientLoginBannerOptions"]["BannerText"], "Hello");
    // modify-client-vpn-endpoint's --dns-servers is a structure, in the AWS shorthand or JSON;
    // Enabled=false deletes the servers.
    let dns = |arg: &str| {
        env.ok(&[
            "modify-client-vpn-endpoint",
            "--client-vpn-endpoint-id",
            &id,
            "--dns-servers",
            arg,
        ]);
        env.ok(&["describe-client-vpn-endpoints"])["ClientVpnEndpoints"][0]["DnsServers"].clone()
    };
    assert_eq!(
        dns(r#"{"CustomDnsServers": ["172.31.0.4"], "Enabled": true}"#),
        serde_json::json!(["172.31.0.4"])
    );
    assert_eq!(
        dns("CustomDnsServers=172.31.0.2,172.31.0.3,Enabled=true"),
        serde_json::json!(["172.31.0.2", "172.31.0.3"])
    );
    assert_eq!(
        dns("CustomDnsServers=172.31.0.2,Enabled=false"),
        serde_json::json!([])
    );
    env.refused(
        &[
            "modify-client-vpn-endpoint",
            "--client-vpn-endpoint-id",
            &id,
            "--vpn-port",
            "8443",
        ],
        "443 or 1194",
    );
    env.refused(
        &[
            "modify-client-vpn-endpoint",
            "--client-vpn-endpoint-id",
            &id,
            "--dns-servers",
            "1.1.1.1",
            "8.8.8.8",
            "9.9.9.9",
        ],
        "at most 2",
    );
    env.refused(
        &[
            "modify-client-vpn-endpoint",
            "--client-vpn-endpoint-id",
            &id,
            "--session-timeout-hours",
            "9",
        ],
        "8, 10, 12 or 24",
    );

    // Editing a fixed field by hand is caught when compared with the file in force.
    let old = sluice_control::config::load(&env.config).expect("valid");
    let edited = env.text().replace("10.200.0.0/20", "10.201.0.0/20");
    let e = sluice_control::config::check_text(&env.config, edited, Some(&old.config))
        .expect_err("refused");
    assert!(
        e.to_string().contains("delete and recreate the endpoint"),
        "{e}"
    );
}

#[test]
fn only_udp_is_served() {
    let env = Env::new();
    let (code, _, err) = create_with(
        &env,
        &p("server.crt"),
        &p("server.key"),
        &p("ca.crt"),
        &["--transport-protocol", "tcp"],
    );
    assert_eq!(code, 2, "tcp must be refused: {err}");
    assert!(
        err.contains("transport_protocol") && err.contains("sluice serves OpenVPN over UDP only"),
        "{err}"
    );
    assert!(!env.text().contains("[[endpoint]]"), "{}", env.text());
    let (code, _, err) = create_with(
        &env,
        &p("server.crt"),
        &p("server.key"),
        &p("ca.crt"),
        &["--transport-protocol", "sctp"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("UDP only"), "{err}");
    let (code, _, err) = create_with(
        &env,
        &p("server.crt"),
        &p("server.key"),
        &p("ca.crt"),
        &["--transport-protocol", "udp"],
    );
    assert_eq!(code, 0, "{err}");
    let d = env.ok(&["describe-client-vpn-endpoints"]);
    assert_eq!(d["ClientVpnEndpoints"][0]["TransportProtocol"], "udp");
}

/// Runs openssl in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root CA, an intermediate CA it issued, and a server certificate the intermediate issued
/// (serverAuth), made with openssl in `dir`: root.crt, inter.crt, server.crt, server.key, and the
/// chain files chain.crt (server, intermediate) and chain-root.crt (server, intermediate, root).
fn intermediate_pki(dir: &Path) {
    // One file for req (which needs a [req] section) and for the extensions.
    std::fs::write(
        dir.join("pki.cnf"),
        "[req]\ndistinguished_name = dn\n[dn]\n\
         [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n\
         [server]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid:always\n",
    )
    .expect("write pki.cnf");
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut root = vec![
        "req",
        "-x509",
        "-days",
        "30",
        "-subj",
        "/CN=sluice test root",
        "-config",
        "pki.cnf",
        "-extensions",
        "ca",
        "-keyout",
        "root.key",
        "-out",
        "root.crt",
    ];
    root.extend_from_slice(&key);
    openssl(dir, &root);
    for (name, cn, issuer, serial, ext) in [
        ("inter", "/CN=sluice test intermediate", "root", "2", "ca"),
        ("server", "/CN=vpn.example.internal", "inter", "3", "server"),
    ] {
        let (csr, keyf, crt) = (
            format!("{name}.csr"),
            format!("{name}.key"),
            format!("{name}.crt"),
        );
        let mut req = vec![
            "req", "-config", "pki.cnf", "-subj", cn, "-keyout", &keyf, "-out", &csr,
        ];
        req.extend_from_slice(&key);
        openssl(dir, &req);
        let (ca, ca_key) = (format!("{issuer}.crt"), format!("{issuer}.key"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "30",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-set_serial",
                serial,
                "-extfile",
                "pki.cnf",
                "-extensions",
                ext,
                "-out",
                &crt,
            ],
        );
    }
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).expect("read certificate");
    let (server, inter, root) = (read("server.crt"), read("inter.crt"), read("root.crt"));
    std::fs::write(dir.join("chain.crt"), format!("{server}{inter}")).expect("write chain");
    std::fs::write(dir.join("chain-root.crt"), format!("{server}{inter}{root}"))
        .expect("write chain");
}

/// Exports `id`'s configuration and writes its `<ca>` block to `file`.
fn exported_ca(env: &Env, id: &str, file: &Path) -> String {
    let c = env.ok(&[
        "export-client-vpn-client-configuration",
        "--client-vpn-endpoint-id",
        id,
    ]);
    let ovpn = c["ClientConfiguration"].as_str().expect("text");
    let ca = ovpn
        .split_once("<ca>\n")
        .and_then(|(_, rest)| rest.split_once("</ca>"))
        .map(|(ca, _)| ca.to_owned())
        .unwrap_or_else(|| panic!("no <ca> block in\n{ovpn}"));
    std::fs::write(file, &ca).expect("write exported CA");
    ca
}

/// Whether OpenSSL verifies `cert` against the CA file `ca` alone, with the server's other
/// certificates `untrusted` as the server sends them (as OpenVPN 2.6 does, without partial
/// chains).
fn verifies(dir: &Path, ca: &Path, untrusted: Option<&str>, cert: &str) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir)
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .args(untrusted.map(|u| ["-untrusted", u]).into_iter().flatten())
        .arg(cert);
    let out = cmd.output().expect("run openssl verify");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn exported_ca_completes_a_chain_with_an_intermediate() {
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let dir = pki_dir.path();
    intermediate_pki(dir);
    let f = |n: &str| dir.join(n).to_string_lossy().into_owned();

    // The usual chain file, leaf and intermediate: the root comes from the client root CA.
    let env = Env::new();
    let (code, out, err) =
        create_with(&env, &f("chain.crt"), &f("server.key"), &f("root.crt"), &[]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    let ca_file = dir.join("exported-ca.pem");
    let ca = exported_ca(&env, &id, &ca_file);
    assert_eq!(ca.matches("-----BEGIN CERTIFICATE-----").count(), 2, "{ca}");
    let (ok, log) = verifies(dir, &ca_file, Some("inter.crt"), "server.crt");
    assert!(
        ok,
        "the exported <ca> does not verify the server: {log}\n{ca}"
    );
    let (ok, log) = verifies(dir, &ca_file, None, "server.crt");
    assert!(
        ok,
        "the exported <ca> does not verify the server: {log}\n{ca}"
    );

    // A chain file with its root needs nothing else, whatever the client root CA.
    let env = Env::new();
    let (code, out, err) = create_with(
        &env,
        &f("chain-root.crt"),
        &f("server.key"),
        &p("ca.crt"),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    let ca = exported_ca(&env, &id, &ca_file);
    let (ok, log) = verifies(dir, &ca_file, Some("inter.crt"), "server.crt");
    assert!(
        ok,
        "the exported <ca> does not verify the server: {log}\n{ca}"
    );

    // Without the root anywhere the export is refused, asking for it.
    let env = Env::new();
    let (code, out, err) = create_with(&env, &f("chain.crt"), &f("server.key"), &p("ca.crt"), &[]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    let err = env.refused(
        &[
            "export-client-vpn-client-configuration",
            "--client-vpn-endpoint-id",
            &id,
        ],
        "append the root CA certificate",
    );
    assert!(err.contains("sluice test intermediate"), "{err}");
}

/// A self-signed P-256 server certificate `NAME.crt` (and key) beside the test's configuration,
/// with serverAuth and the extra extension lines `ext` (none by default: no keyUsage).
fn self_signed_server(env: &Env, name: &str, ext: &str) -> (String, String) {
    let dir = env.config.with_file_name("");
    let cnf = dir.join(format!("{name}.cnf"));
    std::fs::write(
        &cnf,
        format!(
            "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n[dn]\nCN = {name}.example\n[ext]\nbasicConstraints = critical,CA:FALSE\nextendedKeyUsage = serverAuth\n{ext}"
        ),
    )
    .expect("write");
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-config"])
        .arg(&cnf)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl req for {name}");
    (
        crt.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

#[test]
fn certificates_are_checked() {
    let env = Env::new();
    let (code, _, err) = create(&env, "weak.crt", "weak.key");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("1024-bit RSA key") && err.contains("2048"),
        "{err}"
    );
    let (code, _, err) = create(&env, "noeku.crt", "client1.key");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("lacks extendedKeyUsage serverAuth"), "{err}");
    // serverAuth but no keyUsage: a 2.6 client's `remote-cert-tls server` refuses it.
    let (noku_crt, noku_key) = self_signed_server(&env, "noku", "");
    let (code, _, err) = create_with(&env, &noku_crt, &noku_key, &p("ca.crt"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has no keyUsage extension"), "{err}");
    let (ku_crt, ku_key) = self_signed_server(&env, "ku", "keyUsage = keyEncipherment\n");
    let (code, _, err) = create_with(&env, &ku_crt, &ku_key, &p("ca.crt"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("lacks digitalSignature"), "{err}");
    let (code, _, err) = create(&env, "server.crt", "client1.key");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("does not match the server certificate"),
        "{err}"
    );
    // A PEM block that does not decode is refused here, as the TLS layer would refuse it.
    let broken = env.config.with_file_name("broken-ca.crt");
    let ca = std::fs::read_to_string(p("ca.crt")).expect("ca");
    std::fs::write(
        &broken,
        format!("{ca}-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n"),
    )
    .expect("write");
    let (code, _, err) = create_with(
        &env,
        &p("server.crt"),
        &p("server.key"),
        &broken.to_string_lossy(),
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("client_root_ca") && err.contains("PEM block that does not decode"),
        "{err}"
    );
    let (code, _, err) = create(&env, "server-ec.crt", "server-ec.key");
    assert_eq!(code, 0, "ECDSA P-384 must be accepted: {err}");
    assert!(!env.text().contains("weak.crt"));
    let env = Env::new();
    let (ok_crt, ok_key) = self_signed_server(&env, "ok", "keyUsage = digitalSignature\n");
    let (code, _, err) = create_with(&env, &ok_crt, &ok_key, &p("ca.crt"), &[]);
    assert_eq!(code, 0, "serverAuth and digitalSignature are enough: {err}");

    // The guide lets the server certificate stand for the client root CA: the server's chain
    // (leaf, then its CA) is taken, the leaf alone is not (no CA to trust).
    let env = Env::new();
    let (code, _, err) = create_with(
        &env,
        &p("server.crt"),
        &p("server.key"),
        &p("server.crt"),
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds no CA certificate"), "{err}");
    let chain = env.config.with_file_name("server-chain.crt");
    std::fs::write(
        &chain,
        [
            std::fs::read(p("server.crt")).expect("crt"),
            std::fs::read(p("ca.crt")).expect("ca"),
        ]
        .concat(),
    )
    .expect("write");
    let chain = chain.to_string_lossy().into_owned();
    let (code, _, err) = create_with(&env, &chain, &p("server.key"), &chain, &[]);
    assert_eq!(code, 0, "the server's chain as client root CA: {err}");
}

#[test]
fn crl_import_export_and_client_configuration() {
    let env = Env::new();
    let (_, out, err) = create(&env, "server.crt", "server.key");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{err}"));
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    // The AWS CLI's fileb:// and the guide's `file:path_to_CRL_file` are read as file:// is.
    for prefix in ["fileb://", "file:", "file://"] {
        let crl = format!("{prefix}{}", p("crl.pem"));
        env.ok(&[
            "import-client-vpn-client-certificate-revocation-list",
            "--client-vpn-endpoint-id",
            &id,
            "--certificate-revocation-list",
            &crl,
        ]);
    }
    let e = env.ok(&[
        "export-client-vpn-client-certificate-revocation-list",
        "--client-vpn-endpoint-id",
        &id,
    ]);
    assert_eq!(e["Status"]["Code"], "active");
    assert!(e["CertificateRevocationList"]
        .as_str()
        .is_some_and(|s| s.contains("BEGIN X509 CRL")));
    env.refused(
        &[
            "import-client-vpn-client-certificate-revocation-list",
            "--client-vpn-endpoint-id",
            &id,
            "--certificate-revocation-list",
            &format!("file://{}", p("ca.crt")),
        ],
        "no PEM X509 CRL block",
    );
    // Every CRL in the file is checked, not only the first: the TLS layer takes them all.
    let two = env.config.with_file_name("two-crls.pem");
    let valid = std::fs::read_to_string(p("crl.pem")).expect("crl");
    std::fs::write(
        &two,
        format!("{valid}-----BEGIN X509 CRL-----\nMIIBAAAA\n-----END X509 CRL-----\n"),
    )
    .expect("write");
    env.refused(
        &[
            "import-client-vpn-client-certificate-revocation-list",
            "--client-vpn-endpoint-id",
            &id,
            "--certificate-revocation-list",
            &format!("file://{}", two.display()),
        ],
        "(number 2 in the file) that does not parse",
    );

    let c = env.ok(&[
        "export-client-vpn-client-configuration",
        "--client-vpn-endpoint-id",
        &id,
    ]);
    let ovpn = c["ClientConfiguration"].as_str().expect("text");
    for line in [
        "client",
        "dev tun",
        "proto udp",
        "remote vpn.example.internal 443",
        "remote-random-hostname",
        "resolv-retry infinite",
        "nobind",
        "remote-cert-tls server",
        "cipher AES-256-GCM",
        "verb 3",
        "<ca>",
        "reneg-sec 0",
    ] {
        assert!(
            ovpn.lines().any(|l| l == line),
            "missing {line:?} in\n{ovpn}"
        );
    }
    assert!(
        !ovpn.contains("auth-user-pass"),
        "certificate-only endpoints ask no password"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("exported-ca.pem");
    exported_ca(&env, &id, &ca_file);
    let (ok, log) = verifies(dir.path(), &ca_file, None, &p("server.crt"));
    assert!(ok, "the exported <ca> does not verify the server: {log}");
    let (code, text, err) = env.run(&[
        "export-client-vpn-client-configuration",
        "--client-vpn-endpoint-id",
        &id,
        "--output",
        "text",
        "--client-certificate",
        &p("client1.crt"),
        "--client-key",
        &p("client1.key"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("<cert>\n-----BEGIN CERTIFICATE-----")
            && text.contains("<key>\n-----BEGIN PRIVATE KEY-----"),
        "{text}"
    );

    // What a key or certificate file holds besides its PEM blocks stays out of the client's
    // file: a key file that goes on with `</key>` and directives embeds the key alone, the
    // same as the clean file. A file that is not what its flag says is refused.
    let key = std::fs::read_to_string(p("client1.key")).expect("key");
    let tampered = dir.path().join("tampered.key");
    std::fs::write(
        &tampered,
        format!("{key}</key>\nremote evil.example 443\nup /tmp/x.sh\n<key>\n{key}"),
    )
    .expect("write");
    let export = |cert: &str, key: &str| {
        env.run(&[
            "export-client-vpn-client-configuration",
            "--client-vpn-endpoint-id",
            &id,
            "--output",
            "text",
            "--client-certificate",
            cert,
            "--client-key",
            key,
        ])
    };
    let (code, with_tampered, err) = export(&p("client1.crt"), tampered.to_str().unwrap());
    assert_eq!(code, 0, "{err}");
    assert!(
        !with_tampered.contains("evil.example") && !with_tampered.contains("up /tmp"),
        "{with_tampered}"
    );
    assert_eq!(with_tampered, text);
    for (cert, key, says) in [
        (p("client1.key"), p("client1.key"), "holds no certificate"),
        (p("client1.crt"), p("client1.crt"), "holds no private key"),
    ] {
        let (code, _, err) = export(&cert, &key);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(says), "{err}");
    }
}

/// `top --interval` takes a finite, positive number of seconds; anything else is a clear usage
/// error, never a panic.
#[test]
fn top_refuses_an_interval_that_is_not_a_positive_number() {
    let env = Env::new();
    for bad in ["nan", "NaN", "inf", "-inf", "0", "-1", "soon"] {
        let (code, out, err) = env.run(&["top", "--once", &format!("--interval={bad}")]);
        assert_eq!(code, 2, "--interval {bad}: {out}{err}");
        assert!(
            err.contains("--interval") && !err.contains("panicked"),
            "--interval {bad}: {err}"
        );
    }
    // A good one gets past the argument check (and finds no daemon here).
    let (code, _, err) = env.run(&["top", "--once", "--interval", "0.5"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no sluice daemon answers"), "{err}");
}

/// A verb given a configuration file that cannot be read records nothing: the default trail
/// (/var/lib/sluice/audit.log) is no trail of that file, and the file names none. Run in a
/// mount namespace of its own with a tmpfs on /var/lib, so the real one is never touched.
#[test]
fn a_verb_on_an_unreadable_file_writes_no_audit_trail() {
    sluice_tests::require_root("a mount namespace with a tmpfs on /var/lib");
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    let (bin, config) = (env!("CARGO_BIN_EXE_sluice"), missing.display());
    // The exit statuses say which step went wrong; the output is what /var/lib then holds.
    let script = format!(
        "mount -t tmpfs sluice-test /var/lib || exit 90
         echo pw | '{bin}' hash-password --config '{config}' >/dev/null || exit 91
         '{bin}' validate --config '{config}' 2>/dev/null && exit 92
         ls -A /var/lib"
    );
    nothing_under_var_lib(&script);
}

/// A verb given a configuration file that is not TOML (or whose `[appliance]` table does not
/// parse) records nothing either, as one given a file it cannot read: such a file names no
/// trail, and the default one (/var/lib/sluice/audit.log) got the line before. Run as
/// `a_verb_on_an_unreadable_file_writes_no_audit_trail`, with a tmpfs on /var/lib.
#[test]
fn a_verb_on_a_file_that_is_not_toml_writes_no_audit_trail() {
    sluice_tests::require_root("a mount namespace with a tmpfs on /var/lib");
    let dir = tempfile::tempdir().expect("tempdir");
    let not_toml = dir.path().join("not.toml");
    std::fs::write(&not_toml, "this is = not = TOML\n").expect("write");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[appliance]\nstate_dir = 5\n").expect("write");
    let bin = env!("CARGO_BIN_EXE_sluice");
    let (a, b) = (not_toml.display(), broken.display());
    let script = format!(
        "mount -t tmpfs sluice-test /var/lib || exit 90
         for c in '{a}' '{b}'; do
           '{bin}' validate --config \"$c\" 2>/dev/null && exit 91
           '{bin}' delete-client-vpn-endpoint --client-vpn-endpoint-id cvpn-endpoint-0 \\
             --config \"$c\" 2>/dev/null && exit 92
         done
         ls -A /var/lib"
    );
    nothing_under_var_lib(&script);
}

/// Runs `sluice args --config ...` as `run_limited` does: returns its exit code and stderr,
/// or `None` when it had to be killed.
fn run_within(env: &Env, args: &[&str]) -> Option<(i32, String)> {
    run_limited(&env.config.to_string_lossy(), args, b"").map(|(code, _, err)| (code, err))
}

/// A file given to a verb (a CRL to import, a client certificate or key to embed) that is a
/// FIFO, a device or a sparse 2 GiB file is refused at once with an error naming it, not
/// waited on or read whole.
#[test]
fn files_given_to_verbs_must_be_regular_and_not_too_large() {
    let env = Env::new();
    let (_, out, err) = create(&env, "server.crt", "server.key");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{err}"));
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("a.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    let huge = dir.path().join("huge.pem");
    std::fs::File::create(&huge)
        .expect("create")
        .set_len(2 << 30)
        .expect("set_len");
    let fifo = fifo.to_string_lossy().into_owned();
    let huge = huge.to_string_lossy().into_owned();
    let before = std::fs::read(&env.config).expect("read");
    for (file, why) in [
        (fifo.as_str(), "not a regular file"),
        ("/dev/zero", "not a regular file"),
        (huge.as_str(), "larger than 67108864 bytes (the limit)"),
    ] {
        let crl = format!("file://{file}");
        let args = [
            "import-client-vpn-client-certificate-revocation-list",
            "--client-vpn-endpoint-id",
            &id,
            "--certificate-revocation-list",
            &crl,
        ];
        let (code, err) = run_within(&env, &args).unwrap_or_else(|| panic!("{args:?} did not end"));
        assert_eq!(code, 2, "{args:?}: {err}");
        let says = format!("cannot read CRL {file}: {why}");
        assert!(err.contains(&says), "{args:?}: {err:?} lacks {says:?}");
    }
    for (file, why) in [
        (fifo.as_str(), "not a regular file"),
        ("/dev/zero", "not a regular file"),
        (huge.as_str(), "larger than 1048576 bytes (the limit)"),
    ] {
        let cert = p("client1.crt");
        let key = p("client1.key");
        for (c, k) in [(file, key.as_str()), (cert.as_str(), file)] {
            let args = [
                "export-client-vpn-client-configuration",
                "--client-vpn-endpoint-id",
                &id,
                "--client-certificate",
                c,
                "--client-key",
                k,
            ];
            let (code, err) =
                run_within(&env, &args).unwrap_or_else(|| panic!("{args:?} did not end"));
            assert_eq!(code, 2, "{args:?}: {err}");
            let says = format!("cannot read {file}: {why}");
            assert!(err.contains(&says), "{args:?}: {err:?} lacks {says:?}");
        }
    }
    assert_eq!(std::fs::read(&env.config).expect("read"), before);
}

/// Runs `sluice args --config config` with `stdin` on its standard input, in a shell that
/// limits it to 512 MiB of address space (a regression that reads without end fails at once
/// instead of taking the machine's memory), killed after 20 s: its exit code, stdout and
/// stderr, or `None` when it had to be killed.
#[allow(clippy::disallowed_methods)] // a test waits for the process it ran
fn run_limited(config: &str, args: &[&str], stdin: &[u8]) -> Option<(i32, String, String)> {
    use std::io::{Read, Write};
    use std::process::Stdio;
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -v 524288 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .args(["--config", config])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    // It may end without reading all (a refusal): the error of the write is no matter.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let read = |r: Option<&mut dyn Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let _ = writer.join();
            let out = read(child.stdout.as_mut().map(|s| s as &mut dyn Read));
            let err = read(child.stderr.as_mut().map(|s| s as &mut dyn Read));
            return Some((status.code().unwrap_or(-1), out, err));
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A configuration file is read no further than 16 MiB: `/dev/zero` or a sparse 2 GiB file
/// named as one is refused at once with an error that says why, not read until the memory runs
/// out; a pipe (`--config <(...)`, here standard input) is still read.
#[test]
fn a_configuration_past_the_limit_is_refused_and_a_pipe_is_read() {
    let env = Env::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let huge = dir.path().join("huge.toml");
    std::fs::File::create(&huge)
        .expect("create")
        .set_len(2 << 30)
        .expect("set_len");
    let huge = huge.to_string_lossy().into_owned();
    for config in ["/dev/zero", huge.as_str()] {
        let (code, _, err) = run_limited(config, &["validate"], b"")
            .unwrap_or_else(|| panic!("validate {config} did not end"));
        assert_eq!(code, 2, "{config}: {err}");
        let says = "cannot read the configuration: larger than 16777216 bytes (the limit): \
                    a configuration with thousands of endpoints and rules is a few MiB";
        assert!(err.contains(says), "{config}: {err:?} lacks {says:?}");
    }
    let text = std::fs::read(&env.config).expect("read");
    let (code, out, err) = run_limited("/dev/stdin", &["validate"], &text)
        .unwrap_or_else(|| panic!("validate from a pipe did not end"));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["Valid"], true, "{out}");
}

/// A named FIFO as the configuration: the verb reads it once and ends. The audit trail is not
/// looked for in it afterwards (opening it again waited for a writer for good, so `validate`
/// never ended); a configuration that is not a regular file names no trail, and its
/// `[appliance]` trail gets no line.
#[test]
fn a_fifo_as_the_configuration_is_read_once() {
    let env = Env::new();
    let fifo = env.config.parent().expect("dir").join("config.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let text = std::fs::read(&env.config).expect("read");
    let path = fifo.clone();
    // One writer, once: as a shell's `cat config > fifo`.
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open the FIFO");
        f.write_all(&text).expect("write");
    });
    let (code, out, err) = run_limited(&fifo.to_string_lossy(), &["validate"], b"")
        .unwrap_or_else(|| panic!("validate on a FIFO did not end"));
    writer.join().expect("writer");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["Valid"], true, "{out}");
    let trail = env.config.parent().expect("dir").join("state/audit.log");
    assert!(!trail.exists(), "no trail line for a FIFO's verb");
}

/// Verbs started at once change the file one after the other: while another change holds the
/// file a verb waits for it, and every rule the verbs add is there at the end (each read the
/// same file and the last to write undid the others' changes, all having said they succeeded).
#[test]
#[allow(clippy::disallowed_methods)] // a test waits for the processes it ran
fn verbs_started_at_once_each_keep_their_change() {
    let env = Env::new();
    let (code, out, err) = create(&env, "server.crt", "server.key");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    associate(&env, &id);

    // Another change holds the file.
    let held = std::fs::File::open(&env.config).expect("open");
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).expect("lock");
    let cidrs: Vec<String> = (0..6).map(|k| format!("10.{}.0.0/16", 60 + k)).collect();
    let mut verbs: Vec<std::process::Child> = cidrs
        .iter()
        .map(|cidr| {
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args([
                    "authorize-client-vpn-ingress",
                    "--client-vpn-endpoint-id",
                    &id,
                    "--target-network-cidr",
                    cidr,
                    "--authorize-all-groups",
                    "--config",
                ])
                .arg(&env.config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run sluice")
        })
        .collect();
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(2) {
        for v in &mut verbs {
            assert!(
                v.try_wait().expect("wait").is_none(),
                "a verb changed the file while another change held it"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(held);
    for v in verbs {
        let out = v.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = env.ok(&[
        "describe-client-vpn-authorization-rules",
        "--client-vpn-endpoint-id",
        &id,
    ]);
    let got: Vec<&str> = rules["AuthorizationRules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["DestinationCidr"].as_str())
        .collect();
    for cidr in &cidrs {
        assert!(got.contains(&cidr.as_str()), "{cidr} lost: {got:?}");
    }

    // A lock held far longer than a change takes (not a verb's: any process that can open the
    // file can take it) is not waited on for ever: the verb is refused after 10 s, saying so,
    // and the file is left as it was.
    let before = std::fs::read(&env.config).expect("read");
    let held = std::fs::File::open(&env.config).expect("open");
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).expect("lock");
    let start = std::time::Instant::now();
    let (code, _, err) = env.run(&[
        "authorize-client-vpn-ingress",
        "--client-vpn-endpoint-id",
        &id,
        "--target-network-cidr",
        "10.99.0.0/16",
        "--authorize-all-groups",
    ]);
    let waited = start.elapsed();
    assert_ne!(code, 0);
    assert!(err.contains("held its lock for 10 s"), "{err}");
    assert!(
        waited >= std::time::Duration::from_secs(10) && waited < std::time::Duration::from_secs(30),
        "{waited:?}"
    );
    assert_eq!(std::fs::read(&env.config).expect("read"), before);
    drop(held);
}

/// Runs `script` with `sh` in a mount namespace of its own (which it gives a tmpfs on
/// /var/lib, exiting 90 if it cannot): it must succeed and print nothing, its last command
/// listing what /var/lib then holds.
fn nothing_under_var_lib(script: &str) {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .output()
        .expect("run unshare");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert_eq!(stdout, "", "written under /var/lib: {stdout}");
}

/// An endpoint with subnets a and b associated (a second inside port for b) and two routes
/// added through each: 10.50.0.0/16 and 10.60.0.0/16 through a, 10.50.0.0/16 and
/// 10.70.0.0/16 through b. Returns the endpoint's ID and the two associations'.
fn two_subnets_with_routes(env: &Env) -> (String, String, String) {
    let mut text = env.text();
    text.push_str(
        r#"
[[dataplane.port]]
name = "inside-b"
device = "net_null2"
ip = "172.31.2.5/24"
"#,
    );
    std::fs::write(&env.config, text).expect("write config");
    let (_, out, err) = create(env, "server.crt", "server.key");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{err}"));
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    let a = associate(env, &id);
    let b = associate_subnet(env, &id, 'b', 2);
    for (dst, subnet) in [
        ("10.50.0.0/16", "subnet-a"),
        ("10.60.0.0/16", "subnet-a"),
        ("10.50.0.0/16", "subnet-b"),
        ("10.70.0.0/16", "subnet-b"),
    ] {
        env.ok(&[
            "create-client-vpn-route",
            "--client-vpn-endpoint-id",
            &id,
            "--destination-cidr-block",
            dst,
            "--target-vpc-subnet-id",
            subnet,
        ]);
    }
    (id, a, b)
}

/// AWS's guide ("Disassociate a target network from an AWS Client VPN endpoint"): the routes
/// added by hand through a target network are deleted with it, as is its association's route.
/// Before, disassociating was refused while a manual route went through the subnet. Routes
/// through the other associated subnet and the authorization rules stay.
#[test]
fn disassociating_removes_the_routes_through_that_subnet_only() {
    let env = Env::new();
    let (id, a, b) = two_subnets_with_routes(&env);
    env.ok(&[
        "authorize-client-vpn-ingress",
        "--client-vpn-endpoint-id",
        &id,
        "--target-network-cidr",
        "10.60.0.0/16",
        "--authorize-all-groups",
    ]);
    let routes = |env: &Env| -> Vec<(String, String, String)> {
        let r = env.ok(&[
            "describe-client-vpn-routes",
            "--client-vpn-endpoint-id",
            &id,
        ]);
        let mut out: Vec<_> = r["Routes"]
            .as_array()
            .expect("routes")
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().expect("string").to_owned();
                (s("DestinationCidr"), s("TargetSubnet"), s("Origin"))
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(routes(&env).len(), 6);
    let d = env.ok(&[
        "disassociate-client-vpn-target-network",
        "--client-vpn-endpoint-id",
        &id,
        "--association-id",
        &a,
    ]);
    assert_eq!(d["Status"]["Code"], "disassociated");
    let r = |d: &str, s: &str, o: &str| (d.to_owned(), s.to_owned(), o.to_owned());
    assert_eq!(
        routes(&env),
        vec![
            r("10.50.0.0/16", "subnet-b", "add-route"),
            r("10.70.0.0/16", "subnet-b", "add-route"),
            r("172.31.0.0/16", "subnet-b", "associate"),
        ]
    );
    let rules = env.ok(&[
        "describe-client-vpn-authorization-rules",
        "--client-vpn-endpoint-id",
        &id,
    ]);
    assert_eq!(
        rules["AuthorizationRules"].as_array().map(Vec::len),
        Some(1)
    );
    let t = env.ok(&[
        "describe-client-vpn-target-networks",
        "--client-vpn-endpoint-id",
        &id,
    ]);
    let nets = t["ClientVpnTargetNetworks"].as_array().expect("list");
    assert_eq!(nets.len(), 1, "{t}");
    assert_eq!(nets[0]["AssociationId"], b.as_str());
    // The last one goes with its manual routes too, and the endpoint waits for an association.
    env.ok(&[
        "disassociate-client-vpn-target-network",
        "--client-vpn-endpoint-id",
        &id,
        "--association-id",
        &b,
    ]);
    assert!(routes(&env).is_empty());
    let e = env.ok(&["describe-client-vpn-endpoints"]);
    assert_eq!(
        e["ClientVpnEndpoints"][0]["Status"]["Code"],
        "pending-associate"
    );
}

/// An endpoint without mutual authentication takes no client certificate, and the daemon's TLS
/// leaves a CRL out there: importing one is refused before anything is written, as validation
/// refuses the file that names one.
#[test]
fn a_crl_for_an_endpoint_without_client_certificates_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let users = env.config.with_file_name("users.toml");
    std::fs::write(
        &users,
        "[[user]]\nname = \"alice\"\npassword_hash = \
         \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA\"\n",
    )
    .expect("write users");
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let auth = format!(
        "Type=directory-service-authentication,ActiveDirectory={{DirectoryId={}}}",
        users.display()
    );
    let v = env.ok(&[
        "create-client-vpn-endpoint",
        "--client-cidr-block",
        "10.200.0.0/20",
        "--server-certificate-arn",
        &p("server.crt"),
        "--server-key",
        &p("server.key"),
        "--authentication-options",
        &auth,
        "--dns-name",
        "vpn.example.internal",
    ]);
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    env.refused(
        &[
            "import-client-vpn-client-certificate-revocation-list",
            "--client-vpn-endpoint-id",
            &id,
            "--certificate-revocation-list",
            &format!("file://{}", p("crl.pem")),
        ],
        "OperationNotPermitted",
    );
    let state = env.config.with_file_name("state").join(&id);
    assert!(
        !state.join("crl.pem").exists(),
        "the refused CRL was written under the state directory"
    );
}

/// Every page of a describe verb's list (`--max-results 5`, then each answer's NextToken).
fn pages(env: &Env, verb: &[&str], key: &str) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut args = verb.to_vec();
        args.extend(["--max-results", "5"]);
        if let Some(t) = &token {
            args.extend(["--next-token", t]);
        }
        let page = env.ok(&args);
        out.push(page[key].as_array().expect("items").clone());
        match page["NextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return out,
        }
    }
}

/// The describe verbs page their lists as the AWS API does: `--max-results` (5 to 1,000)
/// items at most, a NextToken while more follow, the pages together the whole list in its
/// order. A token goes on after its item: one whose item was deleted since is refused, and so
/// is a token of another list; the table shows the token too. Their `--filters` keep the
/// items every filter matches, shorthand or JSON, and the pages are of those.
#[test]
fn describe_verbs_answer_in_pages() {
    let env = Env::new();
    let (id, _, _) = two_subnets_with_routes(&env);
    for third in 0..11 {
        env.ok(&[
            "authorize-client-vpn-ingress",
            "--client-vpn-endpoint-id",
            &id,
            "--target-network-cidr",
            &format!("10.80.{third}.0/24"),
            "--authorize-all-groups",
        ]);
    }
    for (verb, key, sizes) in [
        ("describe-client-vpn-routes", "Routes", vec![5, 1]),
        (
            "describe-client-vpn-authorization-rules",
            "AuthorizationRules",
            vec![5, 5, 1],
        ),
    ] {
        let whole = env.ok(&[verb])[key].as_array().expect("items").clone();
        let paged = pages(&env, &[verb, "--client-vpn-endpoint-id", &id], key);
        assert_eq!(
            paged.iter().map(Vec::len).collect::<Vec<_>>(),
            sizes,
            "{verb}"
        );
        assert_eq!(paged.concat(), whole, "{verb}");
    }
    assert_eq!(
        pages(
            &env,
            &["describe-client-vpn-target-networks"],
            "ClientVpnTargetNetworks"
        )
        .len(),
        1
    );
    assert_eq!(
        pages(
            &env,
            &["describe-client-vpn-endpoints"],
            "ClientVpnEndpoints"
        )
        .len(),
        1
    );

    let first = env.ok(&["describe-client-vpn-routes", "--max-results", "5"]);
    let token = first["NextToken"].as_str().expect("a token").to_owned();
    let (code, table, err) = env.run(&[
        "describe-client-vpn-routes",
        "--max-results",
        "5",
        "--output",
        "table",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(table.ends_with(&format!("NextToken: {token}\n")), "{table}");
    env.refused(
        &[
            "describe-client-vpn-authorization-rules",
            "--next-token",
            &token,
        ],
        "InvalidPaginationToken",
    );
    for bad in ["4", "1001", "many"] {
        env.refused(
            &["describe-client-vpn-routes", "--max-results", bad],
            "--max-results",
        );
    }
    // Filters, as AWS's: every filter must match, any of its values (wildcards allowed), and
    // the pages are of what they keep.
    let cidrs = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["DestinationCidr"].as_str().expect("cidr").to_owned())
            .collect()
    };
    let via_b = env.ok(&[
        "describe-client-vpn-routes",
        "--filters",
        "Name=target-subnet,Values=subnet-b",
        "Name=destination-cidr,Values=10.*",
    ]);
    assert_eq!(cidrs(&via_b, "Routes"), ["10.50.0.0/16", "10.70.0.0/16"]);
    let some = pages(
        &env,
        &[
            "describe-client-vpn-authorization-rules",
            "--filters",
            r#"[{"Name": "destination-cidr", "Values": ["10.80.1*", "10.80.2.0/24"]}]"#,
        ],
        "AuthorizationRules",
    );
    assert_eq!(some.iter().map(Vec::len).collect::<Vec<_>>(), [3]);
    let tcp = env.ok(&[
        "describe-client-vpn-endpoints",
        "--filters",
        "Name=transport-protocol,Values=tcp",
    ]);
    assert_eq!(tcp["ClientVpnEndpoints"], serde_json::json!([]));
    let vpc = env.ok(&[
        "describe-client-vpn-target-networks",
        "--filters",
        "Name=target-network-id,Values=subnet-a,subnet-b",
        "Name=vpc-id,Values=vpc-?",
    ]);
    assert_eq!(
        vpc["ClientVpnTargetNetworks"].as_array().map(Vec::len),
        Some(2)
    );
    env.refused(
        &[
            "describe-client-vpn-routes",
            "--filters",
            "Name=group-id,Values=x",
        ],
        "origin, target-subnet",
    );
    env.refused(
        &["describe-client-vpn-routes", "--filters", "Name=origin"],
        "InvalidParameterValue",
    );
    // The fifth route, the one the token goes on after, is deleted: the token is refused.
    let fifth = &first["Routes"][4];
    env.ok(&[
        "delete-client-vpn-route",
        "--client-vpn-endpoint-id",
        &id,
        "--destination-cidr-block",
        fifth["DestinationCidr"].as_str().expect("cidr"),
        "--target-vpc-subnet-id",
        fifth["TargetSubnet"].as_str().expect("subnet"),
    ]);
    env.refused(
        &["describe-client-vpn-routes", "--next-token", &token],
        "InvalidPaginationToken",
    );
}
