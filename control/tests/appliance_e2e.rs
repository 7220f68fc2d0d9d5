//! The appliance end to end: `sluice run` with the DPDK data plane on af_packet ports in a
//! namespace, the Debian OpenVPN 2.6 client in another with the exported configuration, and a
//! VPC host behind the inside port:
//!
//! ```text
//!  client ns (openvpn, tun 10.200.0.x) ─ 192.168.50.2 ══ [outside 192.168.50.1]
//!                                                          appliance ns: sluice run (DPDK)
//!  vpc ns (host 172.31.1.10)          ══════════════════ [inside-a 172.31.1.5, ENI]
//! ```
//!
//! The client connects, pings the VPC host through the tunnel, its UDP datagram reaches the
//! host from the ENI address (SNAT), the connection is listed live with its traffic, a denied
//! destination gets nothing, and terminating the connection disconnects the client. The
//! daemon then stops cleanly on SIGTERM. Also: groups through a full tunnel, two endpoints
//! with a client each at once, path MTU discovery through the appliance both ways, clients on
//! the other data ciphers through renegotiations and a float, and a CBC-only one refused.
//! Namespaces and processes go away even on failure.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{make_pki, require_root, Netns};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sluice(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sets `endpoint`'s client login banner to `text` with the admin verb (in force at the next
/// reload).
fn set_banner(config: &Path, endpoint: &str, text: &str) {
    let (code, _, err) = sluice(
        config,
        &[
            "modify-client-vpn-endpoint",
            "--client-vpn-endpoint-id",
            endpoint,
            "--client-login-banner-options",
            &format!("Enabled=true,BannerText={text}"),
        ],
    );
    assert_eq!(code, 0, "{err}");
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

const ENDPOINT: &str = "cvpn-endpoint-0123456789abcdef0";

/// The lab's configuration: the appliance on two af_packet ports, one endpoint with a target
/// network in 172.31.1.0/24; `appliance`, `endpoint` and `rules` add the test's own lines.
fn lab_toml(
    dir: &Path,
    pki: &Path,
    ifs: (&str, &str),
    appliance: &str,
    endpoint: &str,
    rules: &str,
) -> String {
    let (p, d) = (pki.display(), dir.display());
    let (out_if, in_if) = ifs;
    format!(
        r#"
[appliance]
admin_socket = "{d}/run/admin.sock"
state_dir = "{d}/state"
{appliance}

[dataplane]
eal_args = ["--no-pci", "--no-huge", "--no-shconf", "--no-telemetry", "-m", "512", "-l", "0-1",
            "--log-level=lib.eal:error", "--log-level=pmd.*:error"]
outside = "outside"

[[dataplane.port]]
name = "outside"
device = "net_af_packet0,iface={out_if}"
ip = "192.168.50.1/24"

[[dataplane.port]]
name = "inside-a"
device = "net_af_packet1,iface={in_if}"
ip = "172.31.1.5/24"

[[endpoint]]
id = "{ENDPOINT}"
client_cidr_block = "10.200.0.0/20"
server_certificate = "{p}/server.crt"
server_key = "{p}/server.key"
dns_name = "192.168.50.1"
{endpoint}

[[endpoint.target_network]]
association_id = "cvpn-assoc-0123456789abcdef1"
subnet_id = "subnet-0a0000000000000a1"
vpc_id = "vpc-0c0000000000000c1"
vpc_cidr = "172.31.0.0/16"
cidr = "172.31.1.0/24"
availability_zone = "lab-1a"
port = "inside-a"
eni_ip = "172.31.1.5"
gateway = "172.31.1.1"

[[endpoint.route]]
destination_cidr = "172.31.0.0/16"
target_subnet = "subnet-0a0000000000000a1"
origin = "associate"
{rules}
"#
    )
}

fn write_config(dir: &Path, pki: &Path, out_if: &str, in_if: &str) -> PathBuf {
    let (p, d) = (pki.display(), dir.display());
    let text = lab_toml(
        dir,
        pki,
        (out_if, in_if),
        "reconnect_on_route_change = true",
        &format!(
            r#"vpn_port = 443
split_tunnel = true
crl = "{p}/crl.pem"
connection_log = {{ enabled = true, path = "{d}/connections.log" }}
authentication = {{ mutual = {{ client_root_ca = "{p}/ca.crt" }} }}"#
        ),
        r#"
[[endpoint.authorization_rule]]
destination_cidr = "172.31.1.0/25"
authorize_all_groups = true
"#,
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The appliance tests take both cores (a DPDK worker polls one): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What an appliance test starts from: its turn, root, a directory with a fresh PKI, and
/// interface names unique to this process.
struct Start {
    _one: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    pki: PathBuf,
    pid: u32,
    out_if: String,
    in_if: String,
}

impl Start {
    fn new() -> Self {
        let one = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        require_root("the appliance end-to-end test");
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        make_pki(&pki);
        let pid = std::process::id() % 1_000_000;
        Self {
            _one: one,
            dir,
            pki,
            pid,
            out_if: format!("so{pid}"),
            in_if: format!("si{pid}"),
        }
    }
}

#[test]
fn client_reaches_the_vpc_through_the_dpdk_data_plane() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    require_root("the appliance end-to-end test");
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    make_pki(&pki);
    let pid = std::process::id() % 1_000_000;
    let (out_if, in_if) = (format!("so{pid}"), format!("si{pid}"));
    let app = Netns::new("e2eapp");
    let cli = Netns::new("e2ecli");
    let vpc = Netns::new("e2evpc");
    app.veth_to(&out_if, &cli, &format!("co{pid}"), "192.168.50.2/24");
    app.veth_to(&in_if, &vpc, &format!("vi{pid}"), "172.31.1.10/24");
    // A second host address in the VPC subnet that no rule authorizes.
    vpc.exec_ok(&[
        "ip",
        "addr",
        "add",
        "172.31.1.200/24",
        "dev",
        &format!("vi{pid}"),
    ]);
    let config = write_config(dir.path(), &pki, &out_if, &in_if);
    // The clients' link is narrower than Ethernet (as behind PPPoE or a tunnel): the outside
    // port says so, and the client's end takes no frame longer than that.
    let text = read(&config).replacen(
        "ip = \"192.168.50.1/24\"",
        "ip = \"192.168.50.1/24\"\nmtu = 1400",
        1,
    );
    std::fs::write(&config, text).unwrap();
    cli.exec_ok(&["ip", "link", "set", &format!("co{pid}"), "mtu", "1400"]);

    let ovpn = validate_and_export(&config, &pki, &dir.path().join("client1.ovpn"));

    // The appliance.
    let daemon_log = dir.path().join("sluice.log");
    let mut daemon = start_daemon(&app, &config, &daemon_log);

    // The client.
    let client_log = dir.path().join("client.log");
    let _client = start_client(&cli, &ovpn, &client_log, &[]);
    wait_for("the client to connect", Duration::from_secs(40), || {
        read(&client_log).contains("Initialization Sequence Completed")
    });
    let clog = read(&client_log);
    assert!(
        clog.contains("route 172.31.0.0 255.255.0.0") || clog.contains("172.31.0.0/16"),
        "split tunnel pushes the VPC route:\n{clog}"
    );
    assert!(
        !clog.contains("redirect-gateway"),
        "split tunnel does not redirect the default route"
    );

    // Ping through the tunnel.
    let ping = cli.exec(&["ping", "-c", "3", "-i", "0.3", "-W", "2", "172.31.1.10"]);
    assert!(
        ping.status.success(),
        "ping through the tunnel:\n{}\nclient log:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&ping.stdout),
        read(&client_log),
        read(&daemon_log)
    );
    // The tunnel's own address answers pings, and a probe whose TTL ends at the appliance
    // gets a time exceeded from it (the first hop of a traceroute through the tunnel).
    let gw = cli.exec(&["ping", "-c", "2", "-i", "0.3", "-W", "2", "10.200.0.1"]);
    assert!(
        gw.status.success(),
        "ping of the tunnel gateway:\n{}",
        String::from_utf8_lossy(&gw.stdout)
    );
    let hop = cli.exec(&["ping", "-c", "1", "-W", "2", "-t", "1", "172.31.1.10"]);
    let said = String::from_utf8_lossy(&hop.stdout);
    assert!(
        said.contains("From 10.200.0.1") && said.contains("Time to live exceeded"),
        "a TTL-1 probe:\n{said}"
    );

    // Full-size packets both ways: a 1500-byte echo (the pushed tun-mtu) seals into an outer
    // datagram longer than the clients' link (1400 bytes), so the client's kernel sends it in
    // two fragments and the reply has to leave the appliance in two of at most 1400 bytes (one
    // of 1500, as without the port's `mtu`, would not reach the client).
    let big = cli.exec(&[
        "ping",
        "-c",
        "2",
        "-i",
        "0.3",
        "-W",
        "2",
        "-s",
        "1472",
        "172.31.1.10",
    ]);
    assert!(
        big.status.success(),
        "a full-size ping through the tunnel:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&big.stdout),
        read(&daemon_log)
    );

    // SNAT: the host sees the ENI address.
    let host = vpc.bind_udp("172.31.1.10:7777");
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    cli.exec_ok(&[
        "python3",
        "-c",
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'through sluice', ('172.31.1.10', 7777))",
    ]);
    let mut buf = [0u8; 64];
    let (n, from) = host
        .recv_from(&mut buf)
        .expect("the datagram reached the VPC host");
    assert_eq!(&buf[..n], b"through sluice");
    assert_eq!(
        from.ip().to_string(),
        "172.31.1.5",
        "source NATed to the ENI"
    );

    // A datagram longer than the tunnel's MTU: the client's kernel sends it in inner
    // fragments, each sealed on its own; the core translates the first with its flow and the
    // others by what the first left, and the host's kernel puts them back together. (The
    // other way cannot be shown here: the af_packet PMD's socket fanout asks the kernel to
    // defragment what it receives, so a core on net_af_packet gets inner fragments from the
    // VPC as one datagram cut to its 2 KiB frames. The pipeline tests cover that way.)
    cli.exec_ok(&[
        "python3",
        "-c",
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x' * 3000, ('172.31.1.10', 7777))",
    ]);
    let mut big = [0u8; 4096];
    let (n, from) = host
        .recv_from(&mut big)
        .expect("the 3000-byte datagram reached the VPC host");
    assert_eq!((n, from.ip().to_string()), (3000, "172.31.1.5".to_owned()));

    // A destination no rule authorizes gets nothing.
    let denied = cli.exec(&["ping", "-c", "2", "-W", "1", "172.31.1.200"]);
    assert!(!denied.status.success(), "172.31.1.200 is not authorized");

    // A rule added live grants access at once, without reconnecting.
    let (code, _, err) = sluice(
        &config,
        &[
            "authorize-client-vpn-ingress",
            "--client-vpn-endpoint-id",
            ENDPOINT,
            "--target-network-cidr",
            "172.31.1.128/25",
            "--authorize-all-groups",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let granted = cli.exec(&["ping", "-c", "2", "-W", "2", "172.31.1.200"]);
    assert!(
        granted.status.success(),
        "the new rule grants 172.31.1.200 without a reconnect:\n{}",
        read(&daemon_log)
    );

    // An invalid file on reload is refused, and the service keeps running on the old one.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{good}\n[[endpoint.route]]\ndestination_cidr = \"nonsense\"\n"),
    )
    .unwrap();
    let (code, _, err) = sluice(&config, &["reload"]);
    assert_ne!(code, 0, "an invalid reload is refused");
    assert!(err.contains("running configuration stays"), "{err}");
    let still = cli.exec(&["ping", "-c", "1", "-W", "2", "172.31.1.10"]);
    assert!(
        still.status.success(),
        "the service runs on after an invalid reload"
    );
    std::fs::write(&config, &good).unwrap();
    let (code, _, err) = sluice(&config, &["reload"]);
    assert_eq!(code, 0, "{err}");

    // Access withdrawn stops at once, for the established session too.
    let (code, _, err) = sluice(
        &config,
        &[
            "revoke-client-vpn-ingress",
            "--client-vpn-endpoint-id",
            ENDPOINT,
            "--target-network-cidr",
            "172.31.1.128/25",
            "--revoke-all-groups",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !cli.exec(&["ping", "-c", "2", "-W", "1", "172.31.1.200"])
            .status
            .success(),
        "a revoked rule stops traffic of the established session at once"
    );

    // New routes: with reconnect_on_route_change the client is told to reconnect and comes
    // back with the new route (AWS would leave it until its next connection).
    let (code, _, err) = sluice(
        &config,
        &[
            "create-client-vpn-route",
            "--client-vpn-endpoint-id",
            ENDPOINT,
            "--destination-cidr-block",
            "10.99.0.0/16",
            "--target-vpc-subnet-id",
            "subnet-0a0000000000000a1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    wait_for(
        "the client to reconnect with the new route",
        Duration::from_secs(30),
        || read(&client_log).contains("route 10.99.0.0 255.255.0.0"),
    );
    wait_for(
        "the reconnected client's tunnel",
        Duration::from_secs(20),
        || {
            read(&client_log)
                .matches("Initialization Sequence Completed")
                .count()
                >= 2
                && cli
                    .exec(&["ping", "-c", "1", "-W", "1", "172.31.1.10"])
                    .status
                    .success()
        },
    );

    // Metrics: the counters agree with what the test sent (scraped inside the appliance's
    // namespace, where the endpoint listens on loopback).
    let m = scrape(&app);
    let ep = format!("{{endpoint=\"{ENDPOINT}\"}}");
    assert_eq!(
        metric(&m, &format!("sluice_active_connections_count{ep}")),
        1.0,
        "{m}"
    );
    assert!(
        metric(&m, &format!("sluice_ingress_packets_total{ep}")) >= 6.0,
        "pings and the datagram:\n{m}"
    );
    assert!(
        metric(&m, &format!("sluice_egress_packets_total{ep}")) >= 3.0,
        "{m}"
    );
    // What the control channel refused, by reason: nothing here, but every reason is there to
    // alert on.
    for reason in [
        "malformed",
        "rate_limited",
        "handshake_cap",
        "source_handshake_cap",
    ] {
        let series =
            format!("sluice_control_refused_total{{endpoint=\"{ENDPOINT}\",reason=\"{reason}\"}}");
        assert_eq!(metric(&m, &series), 0.0, "{series}:\n{m}");
    }
    // When the CRL in force expires (every client is refused from then on), for alerting.
    assert_eq!(
        metric(&m, &format!("sluice_crl_next_update_timestamp_seconds{ep}")),
        crl_next_update(&pki.join("crl.pem")),
        "{m}"
    );
    assert!(
        metric(
            &m,
            "sluice_core_drops_total{core=\"0\",reason=\"not_authorized\"}"
        ) >= 2.0,
        "the denied pings are counted:\n{m}"
    );
    assert!(
        metric(&m, "sluice_core_rule_table_version{core=\"0\"}") >= 2.0,
        "{m}"
    );
    // The client's first hard reset was answered by a core, without state (the control
    // thread only saw the echo of the session id, under the cores' key and clock).
    assert!(
        metric_sum(&m, "sluice_core_resets_answered_total") >= 1.0,
        "{m}"
    );
    // The time exceeded sent for the TTL-1 probe is counted, and the control thread has no
    // command waiting for a core.
    assert!(
        metric_sum(&m, "sluice_core_icmp_errors_sent_total") >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "sluice_control_commands_waiting"), 0.0, "{m}");
    let (code, out, err) = sluice(&config, &["describe-data-plane"]);
    assert_eq!(code, 0, "{err}");
    let dp: serde_json::Value = serde_json::from_str(&out).expect("describe-data-plane JSON");
    assert_eq!(dp["ControlCommandsWaiting"], 0, "{out}");
    // Each port with what it was configured with (af_packet offers neither offload).
    let ports = dp["Ports"].as_array().expect("Ports");
    assert!(!ports.is_empty(), "{out}");
    for p in ports {
        assert_eq!(p["Driver"], "net_af_packet", "{out}");
        assert_eq!(p["TxMbufFastFree"], false, "{out}");
        assert_eq!(p["RxIpv4ChecksumOffload"], false, "{out}");
        assert!(p["TxQueues"].as_u64() >= Some(1), "{out}");
    }
    assert!(
        dp["Cores"][0]["IcmpErrorsSent"].as_u64() >= Some(1),
        "{out}"
    );
    // And no packet of the real client was taken for a spoofed one on the way.
    let refused: Vec<f64> = m
        .lines()
        .filter(|l| {
            l.starts_with("sluice_core_drops_total{")
                && l.contains("reason=\"unknown_control_peer\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    assert!(
        !refused.is_empty() && refused.iter().all(|n| *n == 0.0),
        "{m}"
    );

    let (code, out, err) = sluice(&config, &["top", "--once", "--interval", "0.3"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("active connections: 1") && out.contains("client1.domain.tld"),
        "{out}"
    );

    // The connection, live, with its traffic (the cores report every 5 s).
    let mut listed = String::new();
    wait_for("the connection's traffic", Duration::from_secs(15), || {
        let (code, out, _) = sluice(&config, &["describe-client-vpn-connections"]);
        listed = out;
        code == 0
            && listed.contains("\"IngressPackets\": ")
            && !listed.contains("\"IngressPackets\": 0,")
    });
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let c = v["Connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Status"]["Code"] == "active")
        .unwrap();
    assert_eq!(c["CommonName"], "client1.domain.tld", "{listed}");
    assert_eq!(c["Status"]["Code"], "active");
    assert!(c["ClientIp"].as_str().unwrap().starts_with("10.200.0."));
    let id = c["ConnectionId"].as_str().unwrap().to_owned();

    // Terminate: the client is told to go.
    let (code, out, err) = sluice(
        &config,
        &[
            "terminate-client-vpn-connections",
            "--client-vpn-endpoint-id",
            ENDPOINT,
            "--connection-id",
            &id,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id));
    assert!(
        !out.contains("Username"),
        "named by its ID, not by user:\n{out}"
    );
    // One no longer active, on an endpoint that exists: AWS's error for the connection.
    let (code, _, err) = sluice(
        &config,
        &[
            "terminate-client-vpn-connections",
            "--client-vpn-endpoint-id",
            ENDPOINT,
            "--connection-id",
            &id,
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("InvalidClientVpnConnection.NotFound"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read(&client_log).contains("server-pushed-connection-reset") {
        assert!(
            Instant::now() < deadline,
            "the client was not disconnected:\nclient log:\n{}\ndaemon log:\n{}",
            read(&client_log),
            read(&daemon_log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, out, _) = sluice(&config, &["describe-client-vpn-connections"]);
    assert!(out.contains("terminated by the administrator"), "{out}");

    // The client reconnects by itself; a new CRL that revokes its certificate ends it at once
    // and refuses it from then on.
    wait_for("the client to reconnect", Duration::from_secs(30), || {
        let (_, out, _) = sluice(&config, &["describe-client-vpn-connections"]);
        out.contains("\"Code\": \"active\"")
    });
    let crl_all = format!("file://{}", pki.join("crl-all.pem").display());
    let (code, _, err) = sluice(
        &config,
        &[
            "import-client-vpn-client-certificate-revocation-list",
            "--client-vpn-endpoint-id",
            ENDPOINT,
            "--certificate-revocation-list",
            &crl_all,
        ],
    );
    assert_eq!(code, 0, "{err}");
    wait_for(
        "the revoked client to be cut off",
        Duration::from_secs(10),
        || {
            let (_, out, _) = sluice(&config, &["describe-client-vpn-connections"]);
            !out.contains("\"Code\": \"active\"") && out.contains("revoked by the CRL")
        },
    );
    wait_for(
        "its next attempt to be refused",
        Duration::from_secs(30),
        || read(&daemon_log).contains("refused: client certificate revoked"),
    );

    let m = scrape(&app);
    assert!(
        metric(&m, &format!("sluice_authentication_failures_total{ep}")) >= 1.0,
        "the refused attempt is counted:\n{m}"
    );
    assert_eq!(
        metric(&m, &format!("sluice_crl_next_update_timestamp_seconds{ep}")),
        crl_next_update(&pki.join("crl-all.pem")),
        "the imported CRL's expiry:\n{m}"
    );

    // The connection log (AWS's field names): a successful attempt, a reset with its end, and
    // the refused attempt with its precise reason; never a secret.
    let conn_log = read(&dir.path().join("connections.log"));
    let lines: Vec<serde_json::Value> = conn_log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["connection-log-type"] == "connection-attempt"
                && l["connection-attempt-status"] == "successful"
                && l["common-name"] == "client1.domain.tld"
                && l["client-ip"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("10.200.0.")),
        "{conn_log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["connection-log-type"] == "connection-reset"
                && l["connection-end-time"] != "NA"
                && l["ingress-packets"] != "0"),
        "{conn_log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["connection-attempt-status"] == "failed"
                && l["connection-attempt-failure-reason"] == "client certificate revoked"),
        "{conn_log}"
    );
    assert!(!conn_log.contains("PRIVATE KEY"));

    // The audit trail: every verb the test used, live through the socket (with the caller's
    // uid) or offline before the daemon started, allowed or refused.
    let trail = read(&dir.path().join("state/audit.log"));
    let events: Vec<serde_json::Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for name in [
        "Validate",
        "ExportClientVpnClientConfiguration",
        "AuthorizeClientVpnIngress",
        "RevokeClientVpnIngress",
        "CreateClientVpnRoute",
        "DescribeClientVpnConnections",
        "TerminateClientVpnConnections",
        "ImportClientVpnClientCertificateRevocationList",
    ] {
        assert!(
            events.iter().any(|e| e["eventName"] == name),
            "{name} is in the audit trail:\n{trail}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["eventName"] == "AuthorizeClientVpnIngress"
                && e["userIdentity"]["type"] == "AdminSocket"
                && e["userIdentity"]["uid"] == 0),
        "{trail}"
    );

    // A clean stop.
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sluice run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", read(&daemon_log));
    assert!(read(&daemon_log).contains("data plane stopped"));
}

/// Validates the configuration and exports the `.ovpn` with client1's certificate to `to`.
fn validate_and_export(config: &Path, pki: &Path, to: &Path) -> PathBuf {
    export_for(config, ENDPOINT, pki, to)
}

/// `validate_and_export` for the endpoint `endpoint`.
fn export_for(config: &Path, endpoint: &str, pki: &Path, to: &Path) -> PathBuf {
    let (code, _, err) = sluice(config, &["validate"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = sluice(
        config,
        &[
            "export-client-vpn-client-configuration",
            "--client-vpn-endpoint-id",
            endpoint,
            "--client-certificate",
            pki.join("client1.crt").to_str().unwrap(),
            "--client-key",
            pki.join("client1.key").to_str().unwrap(),
            "--output",
            "text",
        ],
    );
    assert_eq!(code, 0, "{err}");
    std::fs::write(to, out).unwrap();
    to.to_path_buf()
}

fn start_daemon(app: &Netns, config: &Path, log: &Path) -> Proc {
    let mut daemon = Proc(
        app.command(&[
            env!("CARGO_BIN_EXE_sluice"),
            "run",
            "--config",
            config.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap(),
    );
    wait_for("the data plane", Duration::from_secs(20), || {
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "sluice run exited:\n{}",
            read(log)
        );
        read(log).contains("data plane up")
    });
    daemon
}

fn start_client(ns: &Netns, ovpn: &Path, log: &Path, extra: &[&str]) -> Proc {
    let mut argv = vec![
        "openvpn",
        "--config",
        ovpn.to_str().unwrap(),
        "--verb",
        "4",
        "--log",
        log.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    Proc(
        ns.command(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The appliance's outside port and two client namespaces (192.168.50.2 and .3) on one bridge,
/// as clients on one network; and the VPC namespace, not linked yet.
struct Bridged {
    wan: Netns,
    app: Netns,
    clients: [Netns; 2],
    vpc: Netns,
}

impl Bridged {
    fn new(tag: &str, pid: u32, out_if: &str) -> Self {
        let wan = Netns::new(&format!("{tag}-wan"));
        let app = Netns::new(&format!("{tag}-app"));
        let clients = [
            Netns::new(&format!("{tag}-c1")),
            Netns::new(&format!("{tag}-c2")),
        ];
        let vpc = Netns::new(&format!("{tag}-vpc"));
        wan.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        wan.exec_ok(&["ip", "link", "set", "br0", "up"]);
        app.veth_to(out_if, &wan, &format!("wa{pid}"), "");
        for (i, c) in clients.iter().enumerate() {
            let (w, ci) = (["wb", "wc"][i], ["ca", "cb"][i]);
            let addr = format!("192.168.50.{}/24", i + 2);
            wan.veth_to(&format!("{w}{pid}"), c, &format!("{ci}{pid}"), &addr);
        }
        for port in ["wa", "wb", "wc"] {
            wan.exec_ok(&[
                "ip",
                "link",
                "set",
                &format!("{port}{pid}"),
                "master",
                "br0",
            ]);
        }
        Self {
            wan,
            app,
            clients,
            vpc,
        }
    }
}

/// Whether a password client's `log` shows, after the server told it to reconnect, its
/// auth-token refused and then a connection made with its password (an OpenVPN 2.6 client
/// drops a refused token and gives its credentials again).
fn token_refused_then_password_taken(log: &str) -> bool {
    let after = log
        .split("server-pushed-connection-reset")
        .nth(1)
        .unwrap_or_default();
    after.contains("auth-failure (auth-token)")
        && after
            .split("AUTH_FAILED")
            .nth(1)
            .is_some_and(|rest| rest.contains("Initialization Sequence Completed"))
}

fn reaches(ns: &Netns, dst: &str) -> bool {
    ns.exec(&["ping", "-c", "2", "-i", "0.3", "-W", "2", dst])
        .status
        .success()
}

/// The first lab's three namespaces (client, appliance, VPC host at 172.31.1.10) with its
/// configuration, the inside port's `mtu` and the VPC host's link at `inside_mtu`, the daemon
/// running and the client connected with `client_args` besides its `.ovpn`. Dropped, the
/// client and the daemon stop before the namespaces and the directory go.
///
/// DPDK 22.11's af_packet PMD takes no MTU over 1500 (its largest frame is 1518 bytes: the
/// port does not start), nor does its TAP PMD (1522), so an inside port with a wider MTU is a
/// pcap PMD port on the same veth instead; it takes frames of any length, and fragments as
/// they come (no socket fanout reassembles them first, as af_packet's does).
struct OneClient {
    _client: Proc,
    _daemon: Proc,
    client_log: PathBuf,
    daemon_log: PathBuf,
    cli: Netns,
    vpc: Netns,
    _app: Netns,
    _start: Start,
}

impl OneClient {
    fn start(tag: &str, inside_mtu: u16, client_args: &[&str]) -> Self {
        let start = Start::new();
        let (pid, d) = (start.pid, start.dir.path());
        let app = Netns::new(&format!("{tag}-app"));
        let cli = Netns::new(&format!("{tag}-cli"));
        let vpc = Netns::new(&format!("{tag}-vpc"));
        let vpc_if = format!("vi{pid}");
        app.veth_to(&start.out_if, &cli, &format!("co{pid}"), "192.168.50.2/24");
        app.veth_to(&start.in_if, &vpc, &vpc_if, "172.31.1.10/24");
        let mtu = inside_mtu.to_string();
        app.exec_ok(&["ip", "link", "set", &start.in_if, "mtu", &mtu]);
        vpc.exec_ok(&["ip", "link", "set", &vpc_if, "mtu", &mtu]);
        let config = write_config(d, &start.pki, &start.out_if, &start.in_if);
        let text = read(&config);
        let inside = "ip = \"172.31.1.5/24\"";
        assert!(text.contains(inside), "the lab's inside port:\n{text}");
        let mut text = text.replacen(inside, &format!("{inside}\nmtu = {inside_mtu}"), 1);
        if inside_mtu > 1500 {
            let af_packet = format!("net_af_packet1,iface={}", start.in_if);
            assert!(text.contains(&af_packet), "the lab's inside port:\n{text}");
            text = text.replacen(&af_packet, &format!("net_pcap0,iface={}", start.in_if), 1);
        }
        std::fs::write(&config, text).unwrap();
        let ovpn = validate_and_export(&config, &start.pki, &d.join("client1.ovpn"));
        let daemon_log = d.join("sluice.log");
        let daemon = start_daemon(&app, &config, &daemon_log);
        let client_log = d.join("client.log");
        let client = start_client(&cli, &ovpn, &client_log, client_args);
        wait_for("the client to connect", Duration::from_secs(40), || {
            read(&client_log).contains("Initialization Sequence Completed")
        });
        Self {
            _client: client,
            _daemon: daemon,
            client_log,
            daemon_log,
            cli,
            vpc,
            _app: app,
            _start: start,
        }
    }

    /// The client's and the daemon's logs, for a failure's message.
    fn logs(&self) -> String {
        format!(
            "client log:\n{}\ndaemon log:\n{}",
            read(&self.client_log),
            read(&self.daemon_log)
        )
    }
}

/// What `ip route get <dst>` says in `ns` (with the PMTU the kernel has cached for `dst`, if
/// any, on its `cache` line).
fn route_to(ns: &Netns, dst: &str) -> String {
    String::from_utf8_lossy(&ns.exec_ok(&["ip", "route", "get", dst]).stdout).into_owned()
}

/// Path MTU discovery through the appliance, as a VPC host's kernel and the client's see it,
/// with the inside link wider than the tunnel (inside port `mtu = 2000`, the host's link too;
/// the tunnel's is the pushed tun-mtu 1500). A host cannot send to a client's tunnel address
/// unasked (clients are SNATed to the ENI, as on AWS), so what the host sends are replies to
/// the client's traffic, addressed to the ENI.
///
/// DF clear: the client's `ping -M dont -s 1800` leaves it in inner fragments, the host puts
/// them together and answers with one 1828-byte echo reply (a kernel's ICMP replies do not
/// set DF), which the appliance cuts into fragments sealed each on its own, and the client's
/// kernel reassembles. DF set: the host answers the client's datagram with 1800 bytes from a
/// plain UDP socket (the kernel sets DF on what fits its PMTU); the appliance answers with a
/// fragmentation needed carrying 1500, and the host's kernel caches PMTU 1500 for the ENI;
/// the same datagram sent again leaves the host in fragments and reaches the client.
///
/// The other way (client to network, against an inside port's MTU) needs a client packet
/// longer than the inside MTU, at least 1500 in the configuration, so a client at the pushed
/// tun-mtu 1500 never sends one; `a_client_with_a_wider_tunnel_learns_the_inside_mtu` raises
/// the client's own tun-mtu for that.
#[test]
fn a_vpc_host_on_a_wider_link_learns_the_tunnels_mtu_and_its_long_replies_reach_the_client() {
    let lab = OneClient::start("pmtu", 2000, &[]);
    let (cli, vpc) = (&lab.cli, &lab.vpc);

    let ping = cli.exec(&[
        "ping",
        "-M",
        "dont",
        "-s",
        "1800",
        "-c",
        "2",
        "-i",
        "0.3",
        "-W",
        "2",
        "172.31.1.10",
    ]);
    let said = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success() && said.contains("1808 bytes from 172.31.1.10"),
        "an 1828-byte echo through the tunnel, DF clear:\n{said}\n{}",
        lab.logs()
    );

    let host = vpc.bind_udp("172.31.1.10:7777");
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let client = cli
        .command(&[
            "python3",
            "-c",
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.settimeout(5)\n\
             s.sendto(b'hello', ('172.31.1.10', 7777))\n\
             got = []\n\
             try:\n\
             \x20   while not got or got[-1] < 1800:\n\
             \x20       got.append(len(s.recv(4096)))\n\
             except socket.timeout:\n\
             \x20   pass\n\
             print(got)",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, eni) = host
        .recv_from(&mut buf)
        .expect("the client's datagram reached the VPC host");
    assert_eq!(
        (&buf[..n], eni.ip().to_string()),
        (&b"hello"[..], "172.31.1.5".to_owned())
    );
    assert!(
        !route_to(vpc, "172.31.1.5").contains("mtu"),
        "no PMTU cached before:\n{}",
        route_to(vpc, "172.31.1.5")
    );
    let reply = [b'r'; 1800];
    host.send_to(&reply, eni).unwrap();
    let mut cached = route_to(vpc, "172.31.1.5");
    for _ in 0..50 {
        if cached.contains("mtu 1500") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        cached = route_to(vpc, "172.31.1.5");
    }
    assert!(
        cached.contains("mtu 1500"),
        "the host's kernel learns the tunnel's MTU from the appliance's answer:\n{cached}\n{}",
        lab.logs()
    );
    host.send_to(&reply, eni).unwrap();
    let out = client.wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        got.trim(),
        "[1800]",
        "what reached the client: the first 1800 bytes were answered, the second reached it in \
         fragments:\n{}\nhost's route: {cached}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.logs()
    );
}

/// Path MTU discovery through the appliance the other way, as the client's kernel sees it: a
/// client that set its own tun-mtu 1600 (ignoring the pushed 1500) sends packets longer than
/// the inside port's MTU (1500). DF clear: its `ping -M dont -s 1572` leaves the appliance for
/// the host in fragments, and the host's 1600-byte reply, which its kernel sends in fragments,
/// reaches the client cut to the tunnel's MTU. DF set: its `ping -M do` gets a fragmentation
/// needed carrying 1500 from the tunnel's gateway, and the client's kernel caches PMTU 1500
/// for the host.
#[test]
fn a_client_with_a_wider_tunnel_learns_the_inside_mtu() {
    let wider = ["--tun-mtu", "1600", "--pull-filter", "ignore", "tun-mtu"];
    let lab = OneClient::start("pmtuc", 1500, &wider);
    let cli = &lab.cli;
    assert!(
        read(&lab.client_log).contains("mtu 1600 for tun0"),
        "the client's own tun-mtu:\n{}",
        lab.logs()
    );
    let ping = |df: &str, count: &str| {
        let out = cli.exec(&[
            "ping",
            "-M",
            df,
            "-s",
            "1572",
            "-c",
            count,
            "-i",
            "0.3",
            "-W",
            "2",
            "172.31.1.10",
        ]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), said)
    };
    let (ok, said) = ping("dont", "2");
    assert!(
        ok && said.contains("1580 bytes from 172.31.1.10"),
        "a 1600-byte echo through the tunnel, DF clear:\n{said}\n{}",
        lab.logs()
    );
    assert!(
        !route_to(cli, "172.31.1.10").contains("mtu"),
        "no PMTU cached before:\n{}",
        route_to(cli, "172.31.1.10")
    );
    let (ok, said) = ping("do", "1");
    let cached = route_to(cli, "172.31.1.10");
    assert!(
        !ok && said.contains("From 10.200.0.1")
            && said.contains("mtu = 1500")
            && cached.contains("mtu 1500"),
        "a 1600-byte echo with DF set:\n{said}\nthe client's route: {cached}\n{}",
        lab.logs()
    );
}

/// The guide's scenarios with groups: a VPC, a peered VPC (route plus rule for engineering),
/// an on-premises network (route plus rule for operations) and the internet (0.0.0.0/0 for
/// everyone, evaluated last, so it does not open the on-premises network to engineering).
/// Full tunnel. Two users on one client certificate plus their passwords (mutual and directory
/// authentication), each in its own namespace behind a shared "internet" bridge.
#[test]
fn groups_reach_their_networks_through_a_full_tunnel() {
    let Start {
        _one,
        dir,
        pki,
        pid,
        out_if,
        in_if,
    } = Start::new();
    let d = dir.path();
    let Bridged {
        wan: _wan,
        app,
        clients: [alice_ns, bob_ns],
        vpc,
    } = Bridged::new("g", pid, &out_if);
    // The VPC side: the subnet router .1 and a host .10 on the inside link, and behind the
    // router a peered VPC, an on-premises network and an "internet" host.
    app.veth_to(&in_if, &vpc, &format!("vi{pid}"), "172.31.1.1/24");
    vpc.exec_ok(&[
        "ip",
        "addr",
        "add",
        "172.31.1.10/24",
        "dev",
        &format!("vi{pid}"),
    ]);
    for a in ["172.16.0.10/32", "192.168.100.10/32", "198.18.0.10/32"] {
        vpc.exec_ok(&["ip", "addr", "add", a, "dev", "lo"]);
    }

    let users = d.join("users.toml");
    let hash = |p: &str| sluice_control::auth::directory::hash_password(p).unwrap();
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{}\"\ngroups = [\"engineering\"]\n\n[[user]]\nname = \"bob\"\npassword_hash = \"{}\"\ngroups = [\"operations\"]\n",
            hash("alice-secret"),
            hash("bob-secret")
        ),
    )
    .unwrap();
    let (p, dd) = (pki.display(), d.display());
    let config = d.join("sluice.toml");
    let rules = r#"
[[endpoint.authorization_rule]]
destination_cidr = "172.31.0.0/16"
authorize_all_groups = true

[[endpoint.authorization_rule]]
destination_cidr = "172.16.0.0/16"
access_group_id = "engineering"

[[endpoint.authorization_rule]]
destination_cidr = "192.168.100.0/24"
access_group_id = "operations"

[[endpoint.authorization_rule]]
destination_cidr = "0.0.0.0/0"
authorize_all_groups = true

[[endpoint.route]]
destination_cidr = "172.16.0.0/16"
target_subnet = "subnet-0a0000000000000a1"

[[endpoint.route]]
destination_cidr = "192.168.100.0/24"
target_subnet = "subnet-0a0000000000000a1"

[[endpoint.route]]
destination_cidr = "0.0.0.0/0"
target_subnet = "subnet-0a0000000000000a1"
"#;
    let endpoint = format!(
        r#"split_tunnel = false
connection_log = {{ enabled = true, path = "{dd}/connections.log" }}
authentication = {{ mutual = {{ client_root_ca = "{p}/ca.crt" }}, directory = {{ users_file = "{dd}/users.toml" }} }}"#
    );
    std::fs::write(
        &config,
        lab_toml(d, &pki, (&out_if, &in_if), "", &endpoint, rules),
    )
    .unwrap();
    let ovpn = validate_and_export(&config, &pki, &d.join("client.ovpn"));
    let ovpn_text = read(&ovpn);
    assert!(ovpn_text.contains("auth-user-pass"), "{ovpn_text}");

    let daemon_log = d.join("sluice.log");
    let _daemon = start_daemon(&app, &config, &daemon_log);
    let mut clients = Vec::new();
    for (name, ns) in [("alice", &alice_ns), ("bob", &bob_ns)] {
        let pass = d.join(format!("{name}.pass"));
        std::fs::write(&pass, format!("{name}\n{name}-secret\n")).unwrap();
        let log = d.join(format!("{name}.log"));
        clients.push(start_client(
            ns,
            &ovpn,
            &log,
            &["--auth-user-pass", pass.to_str().unwrap()],
        ));
        wait_for(
            &format!("{name} to connect"),
            Duration::from_secs(40),
            || read(&log).contains("Initialization Sequence Completed"),
        );
        assert!(
            read(&log).contains("redirect-gateway"),
            "full tunnel redirects the default route:\n{}",
            read(&log)
        );
    }

    // A wrong password is refused, counted and logged with its reason.
    let bad = d.join("mallory.pass");
    std::fs::write(&bad, "alice\nnot-her-password\n").unwrap();
    let bad_log = d.join("mallory.log");
    let _mallory = start_client(
        &alice_ns,
        &ovpn,
        &bad_log,
        &["--auth-user-pass", bad.to_str().unwrap(), "--dev", "tun9"],
    );
    wait_for(
        "the wrong password to be refused",
        Duration::from_secs(30),
        || read(&bad_log).contains("AUTH_FAILED"),
    );
    drop(_mallory);
    let conn_log = read(&d.join("connections.log"));
    assert!(
        conn_log
            .lines()
            .any(|l| l.contains("\"connection-attempt-status\":\"failed\"")
                && l.contains("bad username or password")
                && l.contains("\"username\":\"alice\"")),
        "{conn_log}"
    );
    assert!(
        !conn_log.contains("not-her-password"),
        "no secrets in the log"
    );

    let matrix = [
        (
            "alice",
            &alice_ns,
            "172.31.1.10",
            true,
            "the VPC, for everyone",
        ),
        (
            "alice",
            &alice_ns,
            "172.16.0.10",
            true,
            "the peered VPC, for engineering",
        ),
        (
            "alice",
            &alice_ns,
            "192.168.100.10",
            false,
            "on-premises is operations only; 0.0.0.0/0 comes last",
        ),
        (
            "alice",
            &alice_ns,
            "198.18.0.10",
            true,
            "the internet, for everyone",
        ),
        ("bob", &bob_ns, "172.31.1.10", true, "the VPC, for everyone"),
        (
            "bob",
            &bob_ns,
            "172.16.0.10",
            false,
            "the peered VPC is engineering only",
        ),
        (
            "bob",
            &bob_ns,
            "192.168.100.10",
            true,
            "on-premises, for operations",
        ),
        (
            "bob",
            &bob_ns,
            "198.18.0.10",
            true,
            "the internet, for everyone",
        ),
    ];
    for (who, ns, dst, expect, why) in matrix {
        assert_eq!(
            reaches(ns, dst),
            expect,
            "{who} -> {dst}: {why}\ndaemon log:\n{}",
            read(&daemon_log)
        );
    }

    let (code, out, err) = sluice(&config, &["describe-client-vpn-connections"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"Username\": \"alice\"") && out.contains("\"Username\": \"bob\""),
        "{out}"
    );

    // Terminate by user name.
    let (code, out, err) = sluice(
        &config,
        &[
            "terminate-client-vpn-connections",
            "--client-vpn-endpoint-id",
            ENDPOINT,
            "--username",
            "bob",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"Username\": \"bob\""), "{out}");
    wait_for("bob to be disconnected", Duration::from_secs(10), || {
        read(&d.join("bob.log")).contains("server-pushed-connection-reset")
    });
    assert!(reaches(&alice_ns, "172.31.1.10"), "alice stays connected");

    // A reload with a new users file, bob removed and alice moved from engineering to
    // operations: the connections made follow at once. Bob (back after the terminate) is
    // ended and refused when he tries again; alice keeps her connection, with the access of
    // her new group only.
    // His auth-token went with the terminated connection: the client comes back with it, is
    // refused, and signs in again with his password (from its file here; a person is asked).
    wait_for("bob to connect again", Duration::from_secs(40), || {
        read(&d.join("bob.log"))
            .matches("Initialization Sequence Completed")
            .count()
            >= 2
    });
    let bob_log = read(&d.join("bob.log"));
    assert!(
        token_refused_then_password_taken(&bob_log),
        "the token refused, then the password taken:\n{bob_log}"
    );
    let refusals = |log: &str| log.matches("AUTH_FAILED").count();
    let refused_before = refusals(&bob_log);
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{}\"\ngroups = [\"operations\"]\n",
            hash("alice-secret")
        ),
    )
    .unwrap();
    let (code, _, err) = sluice(&config, &["reload"]);
    assert_eq!(code, 0, "{err}");
    wait_for("bob to be refused", Duration::from_secs(60), || {
        refusals(&read(&d.join("bob.log"))) > refused_before
    });
    let (code, out, err) = sluice(&config, &["describe-client-vpn-connections"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("the user was removed from the users file"),
        "{out}"
    );
    assert!(
        reaches(&alice_ns, "192.168.100.10"),
        "alice, now in operations, reaches on-premises\ndaemon log:\n{}",
        read(&daemon_log)
    );
    assert!(
        !reaches(&alice_ns, "172.16.0.10"),
        "and no longer the peered VPC, engineering's"
    );
}

/// Two endpoints on one appliance, each with a connected client at the same time: both reach
/// the VPC host. The data plane keys sessions by peer-id, so the endpoints must not hand out
/// the same ones (each endpoint's first client used to get peer-id 0, and the second session
/// replaced the first on the core).
#[test]
fn two_endpoints_carry_their_clients_at_once() {
    let lab = TwoEndpoints::start("two", "");
    let (config, daemon_log) = (&lab.config, &lab.daemon_log);
    let ([first_ns, second_ns], [first_ovpn, second_ovpn]) = (&lab.clients, &lab.ovpn);
    let second = SECOND;
    assert!(read(second_ovpn).contains("1194"), "{}", read(second_ovpn));
    let d = lab.start.dir.path();
    let (first_log, second_log) = (d.join("first.log"), d.join("second.log"));
    let _first = start_client(first_ns, first_ovpn, &first_log, &[]);
    let _second = start_client(second_ns, second_ovpn, &second_log, &[]);
    for log in [&first_log, &second_log] {
        wait_for("both clients to connect", Duration::from_secs(40), || {
            read(log).contains("Initialization Sequence Completed")
        });
    }
    assert!(
        read(&first_log).contains("10.200.0."),
        "{}",
        read(&first_log)
    );
    assert!(
        read(&second_log).contains("10.210.0."),
        "{}",
        read(&second_log)
    );
    for (ns, log) in [(&first_ns, &first_log), (&second_ns, &second_log)] {
        assert!(
            reaches(ns, "172.31.1.10"),
            "{} reaches the VPC host while the other endpoint's client is connected:\n{}\ndaemon log:\n{}",
            ns.name(),
            read(log),
            read(daemon_log)
        );
    }
    let (code, out, err) = sluice(config, &["describe-client-vpn-connections"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut active: Vec<String> = v["Connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["Status"]["Code"] == "active")
        .map(|c| c["ClientVpnEndpointId"].as_str().unwrap_or("").to_owned())
        .collect();
    active.sort();
    assert_eq!(
        active,
        [ENDPOINT, second],
        "one active connection per endpoint:\n{out}"
    );
}

/// Two worker cores (both on the machine's second CPU: lcores 1 and 2 on CPU 1), each with a
/// client's session, on ports of two queue pairs the kernel fans frames out over by hash: a
/// packet that arrives at a core that does not own its session or flow is handed to the one
/// that does, and each core has its own neighbour cache while the VPC host's ARP replies (to
/// the same address, from the same host) all reach one queue, so the other core learns the
/// host's MAC only from what that one passes on. Both clients reach the VPC host.
#[test]
fn two_worker_cores_carry_a_client_each_through_one_receive_queue() {
    let lab = TwoEndpoints::start_on("cores", "", Some("0@0,1@1,2@1"));
    let (daemon_log, d) = (&lab.daemon_log, lab.start.dir.path());
    assert!(
        read(daemon_log).contains("2 worker core(s)"),
        "{}",
        read(daemon_log)
    );
    let ([first_ns, second_ns], [first_ovpn, second_ovpn]) = (&lab.clients, &lab.ovpn);
    let (first_log, second_log) = (d.join("first.log"), d.join("second.log"));
    let first = start_client(first_ns, first_ovpn, &first_log, &[]);
    let _second = start_client(second_ns, second_ovpn, &second_log, &[]);
    for log in [&first_log, &second_log] {
        wait_for("both clients to connect", Duration::from_secs(40), || {
            read(log).contains("Initialization Sequence Completed")
        });
    }
    // Placed on the core with the fewest sessions: one each.
    let m = scrape(&lab.app);
    for core in ["0", "1"] {
        assert_eq!(
            metric(&m, &format!("sluice_core_sessions{{core=\"{core}\"}}")),
            1.0,
            "a session on core {core}:\n{m}"
        );
    }
    for (ns, log) in [(&first_ns, &first_log), (&second_ns, &second_log)] {
        assert!(
            reaches(ns, "172.31.1.10"),
            "{} reaches the VPC host:\n{}\ndaemon log:\n{}\nmetrics:\n{}",
            ns.name(),
            read(log),
            read(daemon_log),
            scrape(&lab.app)
        );
    }
    // A client that quits says so (the exported file's explicit-exit-notify), on the data
    // channel, whichever core has its session: its connection ends at once, not at its
    // ping-restart a minute later.
    let _ = Command::new("kill")
        .args(["-TERM", &first.0.id().to_string()])
        .status();
    wait_for(
        "the quitting client's connection to end",
        Duration::from_secs(10),
        || {
            let (_, out, _) = sluice(&lab.config, &["describe-client-vpn-connections"]);
            out.contains("the client disconnected")
        },
    );
}

#[test]
fn a_connection_no_core_has_room_for_waits_and_an_ended_one_keeps_its_last_counts() {
    // One worker core with room for one session; each endpoint would take 7000.
    let lab = TwoEndpoints::start("full", "sessions_per_core = 1");
    let (config, daemon_log) = (&lab.config, &lab.daemon_log);
    let ([first_ns, second_ns], [first_ovpn, second_ovpn]) = (&lab.clients, &lab.ovpn);
    let d = lab.start.dir.path();
    let (first_log, second_log) = (d.join("first.log"), d.join("second.log"));
    let _first = start_client(first_ns, first_ovpn, &first_log, &[]);
    wait_for(
        "the first client to connect",
        Duration::from_secs(40),
        || read(&first_log).contains("Initialization Sequence Completed"),
    );
    assert!(reaches(first_ns, "172.31.1.10"), "{}", read(&first_log));

    // The core has no room for a second session (of the other endpoint: the room is the
    // cores', shared): the second client is refused before it is connected, as a temporary
    // failure, so that it tries again after the backoff where a plain AUTH_FAILED would make
    // it exit. Its endpoint's connection log has the attempt and the reason.
    let _second = start_client(second_ns, second_ovpn, &second_log, &[]);
    refused_for_now(
        &second_log,
        &d.join("connections-2.log"),
        "no room on the data cores",
    );
    let log = read(daemon_log);
    assert!(
        log.contains(
            "the endpoints take up to 14000 connections and the cores have room for 1 sessions (1 x [dataplane] sessions_per_core 1)"
        ) && !log.contains("has no data plane"),
        "{log}"
    );
    let (code, out, err) = sluice(config, &["describe-client-vpn-connections"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let active: Vec<&serde_json::Value> = v["Connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["Status"]["Code"] == "active")
        .collect();
    assert!(
        active.len() == 1 && active[0]["ClientVpnEndpointId"] == ENDPOINT,
        "{out}"
    );
    // The first client was not disturbed; the core shows it full.
    assert!(reaches(first_ns, "172.31.1.10"), "{}", read(&first_log));
    // The cores publish their counters once a second.
    let mut out = String::new();
    wait_for(
        "the core to show its session",
        Duration::from_secs(5),
        || {
            out = sluice(config, &["describe-data-plane"]).1;
            serde_json::from_str::<serde_json::Value>(&out)
                .is_ok_and(|dp| dp["Cores"][0]["Sessions"] == 1)
        },
    );
    let dp: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dp["Cores"][0]["SessionCapacity"], 1, "{out}");

    // Ended, a connection keeps its core's last counts: a burst of echo requests just before
    // the end is all counted (the cores' periodic reports come only every fifth second).
    let first = |config: &Path| -> serde_json::Value {
        let (_, out, _) = sluice(config, &["describe-client-vpn-connections"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["Connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["ClientVpnEndpointId"] == ENDPOINT)
            .cloned()
            .unwrap_or_else(|| panic!("no connection of the first endpoint:\n{out}"))
    };
    // Just after a periodic report (the pings above are in it), so that the next one comes
    // about five seconds after the end.
    let packets = |c: &serde_json::Value| c["IngressPackets"].as_u64().unwrap();
    let before = packets(&first(config));
    let mut was = first(config);
    wait_for("a periodic report", Duration::from_secs(12), || {
        was = first(config);
        packets(&was) > before
    });
    let counted = packets(&was);
    // Meanwhile the second client has come back after its backoff (it did not exit), and was
    // refused for now again.
    wait_for(
        "the second client to try again",
        Duration::from_secs(30),
        || read(&second_log).matches("auth-temp-failure").count() >= 2,
    );
    let burst = first_ns.exec(&["ping", "-c", "5", "-i", "0.2", "-W", "2", "172.31.1.10"]);
    assert!(burst.status.success(), "{}", read(&first_log));
    let id = was["ConnectionId"].as_str().unwrap();
    let (code, _, err) = sluice(
        config,
        &[
            "terminate-client-vpn-connections",
            "--client-vpn-endpoint-id",
            ENDPOINT,
            "--connection-id",
            id,
        ],
    );
    assert_eq!(code, 0, "{err}");
    wait_for(
        "the first connection to end",
        Duration::from_secs(10),
        || first(config)["Status"]["Code"] == "terminated",
    );
    let ended = first(config);
    assert!(
        packets(&ended) >= counted + 5,
        "{counted} counted before a burst of 5; ended with {ended}"
    );

    // A clean stop ends the connection that is up again (whichever client took the slot): its
    // client is told to restart, and its connection log has its end.
    let mut up = serde_json::Value::Null;
    wait_for("a client to connect again", Duration::from_secs(40), || {
        let (_, out, _) = sluice(config, &["describe-client-vpn-connections"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        up = v["Connections"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["Status"]["Code"] == "active"))
            .cloned()
            .unwrap_or_default();
        !up.is_null()
    });
    let (client_log, conn_log) = if up["ClientVpnEndpointId"] == ENDPOINT {
        (&first_log, d.join("connections-1.log"))
    } else {
        (&second_log, d.join("connections-2.log"))
    };
    let told = |log: &Path| read(log).matches("server-pushed-connection-reset").count();
    let told_before = told(client_log);
    let _ = Command::new("kill")
        .args(["-TERM", &lab.daemon.0.id().to_string()])
        .status();
    wait_for("sluice run to stop", Duration::from_secs(10), || {
        !read(daemon_log).is_empty() && read(daemon_log).contains("data plane stopped")
    });
    wait_for("the client to be told", Duration::from_secs(10), || {
        told(client_log) > told_before
    });
    let id = up["ConnectionId"].as_str().unwrap();
    let lines = read(&conn_log);
    assert!(
        lines.lines().any(|l| {
            let l: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            l["connection-id"] == id
                && l["connection-log-type"] == "connection-reset"
                && l["connection-end-time"] != "NA"
        }),
        "no end of {id} in its connection log:\n{lines}\ndaemon log:\n{}",
        read(daemon_log)
    );
}

/// An endpoint at its connection limit (`[limits] connections_per_target_network` for each of
/// its target networks) refuses a client for now, and the client tries again by itself; a
/// reload that raises the limit lets it in at its next try.
#[test]
fn a_client_past_the_connection_limit_waits_and_a_reload_that_raises_it_lets_it_in() {
    let lab = TwoEndpoints::start("limit", "\n[limits]\nconnections_per_target_network = 1");
    let (config, daemon_log) = (&lab.config, &lab.daemon_log);
    let [first_ns, second_ns] = &lab.clients;
    let d = lab.start.dir.path();
    let (first_log, second_log) = (d.join("first.log"), d.join("second.log"));
    // Both clients are the first endpoint's.
    let ovpn = &lab.ovpn[0];
    let _first = start_client(first_ns, ovpn, &first_log, &[]);
    wait_for(
        "the first client to connect",
        Duration::from_secs(40),
        || read(&first_log).contains("Initialization Sequence Completed"),
    );
    let _second = start_client(second_ns, ovpn, &second_log, &[]);
    refused_for_now(
        &second_log,
        &d.join("connections-1.log"),
        "connection limit reached",
    );
    let m = scrape(&lab.app);
    assert!(
        metric(
            &m,
            &format!("sluice_connections_refused_for_room_total{{endpoint=\"{ENDPOINT}\"}}")
        ) >= 1.0,
        "the refusal is counted:\n{m}"
    );
    let text = read(config);
    let raised = text.replacen(
        "connections_per_target_network = 1",
        "connections_per_target_network = 2",
        1,
    );
    assert_ne!(raised, text, "the lab's configuration sets the limit");
    std::fs::write(config, raised).unwrap();
    let (code, _, err) = sluice(config, &["reload"]);
    assert_eq!(code, 0, "{err}\n{}", read(daemon_log));
    wait_for(
        "the second client to get in at its next try",
        Duration::from_secs(30),
        || read(&second_log).contains("Initialization Sequence Completed"),
    );
    assert!(reaches(second_ns, "172.31.1.10"), "{}", read(&second_log));
    assert!(reaches(first_ns, "172.31.1.10"), "{}", read(&first_log));
}

/// Waits for the client logging to `client_log` to be refused for want of room, as a temporary
/// failure (an OpenVPN 2.6 client then tries again by itself after the backoff, where a plain
/// AUTH_FAILED would make it exit), and checks that its endpoint's connection log `conn_log`
/// has the failed attempt with a reason containing `reason`.
fn refused_for_now(client_log: &Path, conn_log: &Path, reason: &str) {
    wait_for(
        "the client to be told to come back later",
        Duration::from_secs(40),
        || read(client_log).contains("auth-temp-failure"),
    );
    let told = read(client_log);
    assert!(
        told.contains("AUTH_FAILED,TEMP[backoff 10]:connection limit reached"),
        "{told}"
    );
    let attempts = read(conn_log);
    assert!(
        attempts.lines().any(|l| {
            let l: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            l["connection-attempt-status"] == "failed"
                && l["connection-attempt-failure-reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(reason))
        }),
        "no failed attempt for {reason:?} in:\n{attempts}"
    );
}

/// The lab of `two_endpoints_config` with the daemon running: the VPC host at 172.31.1.10, a
/// client namespace and an exported `.ovpn` for each endpoint. Dropped, the daemon stops
/// before the namespaces and the directory go.
struct TwoEndpoints {
    daemon: Proc,
    config: PathBuf,
    daemon_log: PathBuf,
    ovpn: [PathBuf; 2],
    clients: [Netns; 2],
    app: Netns,
    vpc: Netns,
    _wan: Netns,
    start: Start,
}

impl TwoEndpoints {
    fn start(tag: &str, dataplane: &str) -> Self {
        Self::start_on(tag, dataplane, None)
    }

    /// `start`, with EAL's `--lcores` map `lcores` in place of `-l 0-1` when given.
    fn start_on(tag: &str, dataplane: &str, lcores: Option<&str>) -> Self {
        let start = Start::new();
        let Bridged {
            wan,
            app,
            clients,
            vpc,
        } = Bridged::new(tag, start.pid, &start.out_if);
        let pid = start.pid;
        app.veth_to(&start.in_if, &vpc, &format!("vi{pid}"), "172.31.1.10/24");
        let d = start.dir.path();
        let ifs = (start.out_if.as_str(), start.in_if.as_str());
        let config = two_endpoints_config(d, &start.pki, ifs, dataplane);
        if let Some(map) = lcores {
            let text = std::fs::read_to_string(&config).unwrap();
            let one_worker = "\"-l\", \"0-1\"";
            assert!(
                text.contains(one_worker),
                "the lab's EAL arguments:\n{text}"
            );
            // A queue pair per worker core on each af_packet port (the kernel fans the
            // frames out over them by hash).
            let text = text
                .replacen(one_worker, &format!("\"--lcores\", \"{map}\""), 1)
                .replace(",iface=", ",qpairs=2,iface=");
            std::fs::write(&config, text).unwrap();
        }
        let ovpn = [
            export_for(&config, ENDPOINT, &start.pki, &d.join("first.ovpn")),
            export_for(&config, SECOND, &start.pki, &d.join("second.ovpn")),
        ];
        let daemon_log = d.join("sluice.log");
        let daemon = start_daemon(&app, &config, &daemon_log);
        Self {
            daemon,
            config,
            daemon_log,
            ovpn,
            clients,
            app,
            vpc,
            _wan: wan,
            start,
        }
    }
}

/// The second endpoint of `two_endpoints_config`.
const SECOND: &str = "cvpn-endpoint-0b0000000000000b2";

/// The lab with a second endpoint (`SECOND`, clients in 10.210.0.0/20 on port 1194) beside the
/// first (port 443), both into the same target network, their connection logs
/// `connections-1.log` and `connections-2.log` in `d`; `dataplane` adds lines to
/// `[dataplane]`. Returns the configuration's path.
fn two_endpoints_config(d: &Path, pki: &Path, ifs: (&str, &str), dataplane: &str) -> PathBuf {
    let (p, dd) = (pki.display(), d.display());
    let rest = format!(
        r#"
[[endpoint.authorization_rule]]
destination_cidr = "172.31.1.0/24"
authorize_all_groups = true

[[endpoint]]
id = "{SECOND}"
client_cidr_block = "10.210.0.0/20"
server_certificate = "{p}/server.crt"
server_key = "{p}/server.key"
dns_name = "192.168.50.1"
vpn_port = 1194
split_tunnel = true
connection_log = {{ enabled = true, path = "{dd}/connections-2.log" }}
authentication = {{ mutual = {{ client_root_ca = "{p}/ca.crt" }} }}

[[endpoint.target_network]]
association_id = "cvpn-assoc-0b0000000000000b2"
subnet_id = "subnet-0a0000000000000a1"
vpc_id = "vpc-0c0000000000000c1"
vpc_cidr = "172.31.0.0/16"
cidr = "172.31.1.0/24"
availability_zone = "lab-1a"
port = "inside-a"
eni_ip = "172.31.1.5"
gateway = "172.31.1.1"

[[endpoint.route]]
destination_cidr = "172.31.0.0/16"
target_subnet = "subnet-0a0000000000000a1"
origin = "associate"

[[endpoint.authorization_rule]]
destination_cidr = "172.31.1.0/24"
authorize_all_groups = true
"#
    );
    let text = lab_toml(
        d,
        pki,
        ifs,
        "",
        &format!(
            r#"vpn_port = 443
split_tunnel = true
connection_log = {{ enabled = true, path = "{dd}/connections-1.log" }}
authentication = {{ mutual = {{ client_root_ca = "{p}/ca.crt" }} }}"#
        ),
        &rest,
    );
    let line = "outside = \"outside\"\n";
    assert!(
        text.contains(line),
        "the lab's [dataplane] names its outside port"
    );
    let text = text.replacen(line, &format!("{line}{dataplane}\n"), 1);
    let config = d.join("sluice.toml");
    std::fs::write(&config, text).unwrap();
    config
}

/// Has `two_endpoints_config`'s second endpoint (in `config`, in `d`) take a username and
/// password besides the certificate: `bob` (groups `operations`) from a users file in `d`.
/// Returns the file with bob's credentials for `--auth-user-pass`.
fn second_endpoint_takes_passwords(config: &Path, d: &Path, pki: &Path) -> PathBuf {
    let users = d.join("users.toml");
    let hash = sluice_control::auth::directory::hash_password("bob-secret").unwrap();
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"bob\"\npassword_hash = \"{hash}\"\ngroups = [\"operations\"]\n"
        ),
    )
    .unwrap();
    let text = read(config);
    let at = text.find(&format!("id = \"{SECOND}\"")).unwrap();
    let mutual = format!(
        "mutual = {{ client_root_ca = \"{}/ca.crt\" }}",
        pki.display()
    );
    let (head, tail) = text.split_at(at);
    assert!(tail.contains(&mutual), "the lab's second endpoint:\n{text}");
    let tail = tail.replacen(
        &mutual,
        &format!(
            "{mutual}, directory = {{ users_file = \"{}\" }}",
            users.display()
        ),
        1,
    );
    std::fs::write(config, format!("{head}{tail}")).unwrap();
    let pass = d.join("bob.pass");
    std::fs::write(&pass, "bob\nbob-secret\n").unwrap();
    pass
}

fn scrape(app: &Netns) -> String {
    // The cores publish once a second.
    std::thread::sleep(Duration::from_millis(1100));
    let out = app.exec_ok(&[
        "python3",
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9180/metrics', timeout=5).read().decode())",
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PEM CRL's nextUpdate, seconds since the epoch.
fn crl_next_update(path: &Path) -> f64 {
    let pem = std::fs::read(path).unwrap();
    let (_, der) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der.contents).unwrap();
    crl.next_update().unwrap().timestamp() as f64
}

/// The sum of every sample of `name` with labels (all cores) in Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{");
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of the sample `name{labels}` in Prometheus text, or -1 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(-1.0)
}

/// A second CA, made with easy-rsa as the lab's (`scripts/gen-pki.sh`) in `dir`/ca2: its
/// certificate and its CRL (empty), PEM files.
fn second_ca(dir: &Path) -> (PathBuf, PathBuf) {
    let work = dir.join("ca2");
    std::fs::create_dir_all(&work).unwrap();
    let ok = Command::new("cp")
        .args(["-r", "/usr/share/easy-rsa/."])
        .arg(&work)
        .status()
        .unwrap()
        .success();
    assert!(ok, "copy easy-rsa");
    for args in [
        &["init-pki"][..],
        &["--req-cn=sluice second CA", "build-ca", "nopass"],
        &["gen-crl"],
    ] {
        let out = Command::new(work.join("easyrsa"))
            .args(args)
            .current_dir(&work)
            .env("EASYRSA_BATCH", "1")
            .env("EASYRSA_ALGO", "rsa")
            .env("EASYRSA_KEY_SIZE", "2048")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "easyrsa {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (work.join("pki/ca.crt"), work.join("pki/crl.pem"))
}

/// An operator replaces the endpoint's client root CA (after the old one's compromise, say)
/// with another, and its CRL with that CA's, writing the new files over the old ones (the
/// file's path is part of the authentication options, which cannot change), and reloads: the
/// OpenVPN 2.6 client of the old CA, connected (its profile has `reneg-sec 0`, and the server
/// renegotiates only on request, so no handshake would check its certificate again for up to
/// the 24-hour session timeout), is told to reconnect at once, describe gives the reason, and
/// its next attempt is refused.
#[test]
fn a_reload_that_replaces_the_client_root_ca_ends_the_old_cas_connection() {
    let lab = OneClient::start("newca", 1500, &[]);
    let d = lab._start.dir.path();
    let config = d.join("sluice.toml");
    let (ca2, crl2) = second_ca(d);
    let pki = &lab._start.pki;
    assert!(
        read(&config).contains(&format!("client_root_ca = \"{}/ca.crt\"", pki.display())),
        "the lab's client root CA:\n{}",
        read(&config)
    );
    std::fs::copy(&ca2, pki.join("ca.crt")).unwrap();
    std::fs::copy(&crl2, pki.join("crl.pem")).unwrap();
    let (code, _, err) = sluice(&config, &["reload"]);
    assert_eq!(code, 0, "{err}\n{}", lab.logs());
    wait_for(
        "the old CA's client to be told to reconnect",
        Duration::from_secs(15),
        || read(&lab.client_log).contains("server-pushed-connection-reset"),
    );
    let (code, out, err) = sluice(&config, &["describe-client-vpn-connections"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "the reloaded TLS settings no longer accept the client certificate: \
             not issued by a client root CA (unknown issuer)"
        ),
        "{out}"
    );
    wait_for(
        "its next attempt to be refused",
        Duration::from_secs(30),
        || {
            read(&lab.daemon_log).contains(
                "refused: client certificate verification failed: not issued by a client root CA",
            )
        },
    );
}

/// Real OpenVPN 2.6 clients on the data ciphers other than the default, on one daemon: one
/// with only AES-128-GCM (client A), one with only CHACHA20-POLY1305 (client B), each
/// renegotiating every 10 s (`--reneg-sec 10`), and one with only AES-256-CBC (client C).
///
/// A and B connect on their cipher, ping the VPC host without a loss through a renegotiation,
/// and move 4 MiB each way over TCP (the host echoes what it gets; the client checks the
/// bytes), the two at once. C is refused: no AEAD cipher in common (the connection log's
/// reason), its client told so in its `AUTH_FAILED`, and the others go on.
///
/// Then A floats: while it pings, its namespace's address changes from 192.168.50.2 to
/// 192.168.50.12 (the old address goes, so nothing reaches A there), and its client, whose
/// UDP socket is bound to no address, sends from the new one. The core follows the
/// authenticated packets' new source, the return traffic goes there, control moves the
/// connection (describe's `DeviceIp`, the connection log's `device-ip`) and A's control
/// channel (its next renegotiation comes from the new address), and A never restarts.
///
/// No core counts a drop that these clients' traffic should never cause.
#[test]
fn clients_on_each_data_cipher_renegotiate_under_traffic_float_and_a_cbc_only_one_is_refused() {
    let lab = TwoEndpoints::start("ciph", "");
    let (config, daemon_log) = (&lab.config, &lab.daemon_log);
    let [a_ns, b_ns] = &lab.clients;
    let d = lab.start.dir.path();
    let pid = lab.start.pid;
    let ovpn = &lab.ovpn[0];
    let (a_log, b_log, c_log) = (
        d.join("aes128.log"),
        d.join("chacha.log"),
        d.join("cbc.log"),
    );
    let conn_log = d.join("connections-1.log");
    let logs = || {
        format!(
            "AES-128-GCM client:\n{}\nCHACHA20-POLY1305 client:\n{}\ndaemon log:\n{}",
            read(&a_log),
            read(&b_log),
            read(daemon_log)
        )
    };
    let a_client = start_client(
        a_ns,
        ovpn,
        &a_log,
        &["--data-ciphers", "AES-128-GCM", "--reneg-sec", "10"],
    );
    let _b_client = start_client(
        b_ns,
        ovpn,
        &b_log,
        &["--data-ciphers", "CHACHA20-POLY1305", "--reneg-sec", "10"],
    );
    let _c_client = start_client(b_ns, ovpn, &c_log, &["--data-ciphers", "AES-256-CBC"]);
    wait_for(
        "the AEAD clients to connect",
        Duration::from_secs(40),
        || {
            read(&a_log).contains("Initialization Sequence Completed")
                && read(&b_log).contains("Initialization Sequence Completed")
        },
    );
    // The keys each client made (once at the start, again at each renegotiation).
    let keys = |log: &Path, cipher: &str, bits: u32| {
        read(log)
            .matches(&format!(
                "Outgoing Data Channel: Cipher '{cipher}' initialized with {bits} bit key"
            ))
            .count()
    };
    for (log, cipher, bits) in [
        (&a_log, "AES-128-GCM", 128),
        (&b_log, "CHACHA20-POLY1305", 256),
    ] {
        let text = read(log);
        assert!(
            text.contains(&format!("Data Channel: cipher '{cipher}'"))
                && keys(log, cipher, bits) == 1,
            "{cipher}:\n{}",
            logs()
        );
    }

    // The CBC-only client is refused, as OpenVPN 2.6's server refuses it.
    wait_for(
        "the CBC-only client to be refused",
        Duration::from_secs(30),
        || read(&c_log).contains("AUTH_FAILED"),
    );
    let told = read(&c_log);
    assert!(
        told.contains("AUTH_FAILED,Data channel cipher negotiation failed (no shared cipher)")
            && !told.contains("Initialization Sequence Completed"),
        "the CBC-only client:\n{told}"
    );
    let attempts = read(&conn_log);
    assert!(
        attempts.lines().any(|l| {
            let l: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            l["connection-attempt-status"] == "failed"
                && l["connection-attempt-failure-reason"] == "no common data cipher in IV_CIPHERS"
        }),
        "{attempts}"
    );

    // Pings and a TCP transfer each way on both ciphers, through a renegotiation of both.
    let pinging = |ns: &Netns, count: &str| {
        ns.command(&["ping", "-i", "0.2", "-c", count, "-W", "2", "172.31.1.10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A ping's replies, of `sent`, at most `lost` of them lost.
    let replied = |ping: Child, sent: u32, lost: u32, what: &str| {
        let out = ping.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        let received = said
            .split_once(" received")
            .and_then(|(before, _)| before.rsplit(' ').next()?.parse::<u32>().ok());
        assert!(
            received.is_some_and(|r| r + lost >= sent),
            "{what}:\n{said}\n{}",
            logs()
        );
    };
    let _echo = Proc(
        lab.vpc
            .command(&["python3", "-c", ECHO_SERVER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "the VPC host's echo server",
        Duration::from_secs(10),
        || {
            String::from_utf8_lossy(&lab.vpc.exec_ok(&["ss", "-ltn"]).stdout)
                .contains("172.31.1.10:9000")
        },
    );
    let (a_ping, b_ping) = (pinging(a_ns, "70"), pinging(b_ns, "70"));
    let transfer = |ns: &Netns| {
        ns.command(&["python3", "-c", ECHO_CLIENT])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a_tcp, b_tcp) = (transfer(a_ns), transfer(b_ns));
    for (t, cipher) in [(a_tcp, "AES-128-GCM"), (b_tcp, "CHACHA20-POLY1305")] {
        let out = t.wait_with_output().unwrap();
        assert!(
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).trim() == "4194304 bytes back as sent",
            "4 MiB each way on {cipher}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            logs()
        );
    }
    // The pings took 14 s, the renegotiations came 10 s after the connections.
    replied(a_ping, 70, 0, "AES-128-GCM pings through a renegotiation");
    replied(
        b_ping,
        70,
        0,
        "CHACHA20-POLY1305 pings through a renegotiation",
    );
    assert!(
        keys(&a_log, "AES-128-GCM", 128) >= 2 && keys(&b_log, "CHACHA20-POLY1305", 256) >= 2,
        "both clients renegotiated under the pings:\n{}",
        logs()
    );
    // The CBC-only client gave up (an AUTH_FAILED without TEMP): nothing of it is left.
    let described = sluice(config, &["describe-client-vpn-connections"]).1;
    let v: serde_json::Value = serde_json::from_str(&described).unwrap();
    let active: Vec<&serde_json::Value> = v["Connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["Status"]["Code"] == "active")
        .collect();
    assert_eq!(active.len(), 2, "{described}");

    // A floats to 192.168.50.12 while it pings.
    let a_if = format!("ca{pid}");
    let a_conn = |config: &Path| -> serde_json::Value {
        let (_, out, _) = sluice(config, &["describe-client-vpn-connections"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["Connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["Status"]["Code"] == "active"
                    && c["DeviceIp"].as_str().is_some_and(|ip| {
                        ip.starts_with("192.168.50.2:") || ip.starts_with("192.168.50.12:")
                    })
            })
            .cloned()
            .unwrap_or_else(|| panic!("no active connection of client A:\n{out}"))
    };
    let before = a_conn(config);
    let device = before["DeviceIp"].as_str().unwrap().to_owned();
    let port = device
        .strip_prefix("192.168.50.2:")
        .unwrap_or_else(|| panic!("{before}"))
        .to_owned();
    let keys_before = keys(&a_log, "AES-128-GCM", 128);
    let a_ping = pinging(a_ns, "50");
    std::thread::sleep(Duration::from_secs(1));
    // The old address goes and the new one takes its place (its subnet route with it).
    a_ns.exec_ok(&[
        "sysctl",
        "-q",
        "-w",
        &format!("net.ipv4.conf.{a_if}.promote_secondaries=1"),
    ]);
    a_ns.exec_ok(&["ip", "addr", "add", "192.168.50.12/24", "dev", &a_if]);
    a_ns.exec_ok(&["ip", "addr", "del", "192.168.50.2/24", "dev", &a_if]);
    let moved = format!("192.168.50.12:{port}");
    wait_for(
        "the connection to follow the float",
        Duration::from_secs(10),
        || a_conn(config)["DeviceIp"] == moved.as_str(),
    );
    assert!(
        read(daemon_log).contains(&format!("floated to {moved}")),
        "{}",
        logs()
    );
    // Its control channel moved too: a renegotiation from the new address completes.
    wait_for(
        "client A to renegotiate after the float",
        Duration::from_secs(30),
        || keys(&a_log, "AES-128-GCM", 128) > keys_before,
    );
    // One reply may be lost: on its way to the old address as it went.
    replied(
        a_ping,
        50,
        1,
        "client A's pings through its float and a renegotiation",
    );
    assert!(reaches(a_ns, "172.31.1.10"), "{}", logs());
    let after = a_conn(config);
    // The same connection, with the same tunnel address (AWS's ClientIp); only the device's
    // address moved.
    assert!(
        after["ConnectionId"] == before["ConnectionId"] && after["ClientIp"] == before["ClientIp"],
        "before the float: {before}\nafter: {after}"
    );
    let text = read(&a_log);
    assert!(
        text.matches("Initialization Sequence Completed").count() == 1
            && !text.contains("SIGUSR1")
            && !text.contains("Restart pause"),
        "client A never restarted:\n{}",
        logs()
    );
    assert!(reaches(b_ns, "172.31.1.10"), "{}", logs());

    // No core counted a drop that none of this should cause.
    let m = scrape(&lab.app);
    for reason in UNCAUSED_DROPS {
        assert_eq!(core_drops(&m, reason), 0.0, "{reason} drops:\n{m}");
    }

    // The connection log has A's end at its new address once it quits.
    let _ = Command::new("kill")
        .args(["-TERM", &a_client.0.id().to_string()])
        .status();
    wait_for(
        "client A's connection to end",
        Duration::from_secs(15),
        || {
            read(&conn_log).lines().any(|l| {
                let l: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                l["connection-id"] == before["ConnectionId"]
                    && l["connection-log-type"] == "connection-reset"
                    && l["connection-end-time"] != "NA"
            })
        },
    );
    let lines = read(&conn_log);
    let end = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|l| l["connection-id"] == before["ConnectionId"])
        .unwrap();
    assert_eq!(end["device-ip"], "192.168.50.12", "{lines}");
}

/// Drop reasons that clients connecting, renegotiating, floating and carrying traffic to a
/// VPC host they are authorized for never cause.
const UNCAUSED_DROPS: &[&str] = &[
    "malformed_openvpn",
    "unknown_peer",
    "peer_address_mismatch",
    "unknown_key_id",
    "bad_aead_tag",
    "replayed",
    "too_old",
    "source_spoofed",
    "no_route",
    "not_authorized",
    "snat_port_exhausted",
    "flow_table_full",
    "no_session_for_destination",
    "handoff_ring_full",
    "tx_ring_full",
    "punt_queue_full",
    "no_room",
    "too_big",
    "packet_id_exhausted",
    "unknown_control_peer",
    "report_queue_full",
    "key_for_unknown_peer",
    "multi_segment",
    "session_flows_full",
    "destination_not_a_host",
    "client_to_client",
];

/// The drops of `reason` every core counted, in Prometheus text.
fn core_drops(m: &str, reason: &str) -> f64 {
    m.lines()
        .filter(|l| {
            l.starts_with("sluice_core_drops_total{") && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The VPC host's TCP echo on 172.31.1.10:9000: for each connection, everything it reads until
/// the client's end, then all of it back.
const ECHO_SERVER: &str = "import socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('172.31.1.10', 9000))
s.listen(8)
def serve(c):
    got = bytearray()
    while True:
        b = c.recv(65536)
        if not b:
            break
        got += b
    c.sendall(got)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
";

/// A client of `ECHO_SERVER`: 4 MiB of pseudo-random bytes there and back, compared.
const ECHO_CLIENT: &str = "import random, socket
data = random.Random(7).randbytes(4 << 20)
c = socket.create_connection(('172.31.1.10', 9000), timeout=30)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
got = bytearray()
while True:
    b = c.recv(65536)
    if not b:
        break
    got += b
print(f'{len(got)} bytes back as sent' if got == data else f'{len(got)} bytes back, not as sent')
";

/// An appliance upgrade: the daemon stopped (SIGTERM) and started again under two connected
/// clients, one with its certificate only (the first endpoint, mutual authentication) and
/// one with a username and password besides (the second, mutual and directory, `bob` from a
/// file). Before the stop, a client login banner set through `modify-client-vpn-endpoint`
/// and a reload: the certificate client, connected before, keeps its connection; the
/// password client, connecting after, is shown the banner.
///
/// On the stop each client is told to restart (a server-pushed restart, not a ping-restart
/// timeout) and the daemon exits within its linger (all of it: an OpenVPN 2.6 client closes
/// its socket on a RESTART without acknowledging it), taking no new connection meanwhile; the
/// connection logs end the old connections (their format has no reason), the daemon's log
/// with the stop's. Once the daemon is back both clients
/// reconnect by themselves: the password client's auth-token was the last run's, so it is
/// refused and the client signs in again with the password from its file instead of exiting.
/// Both reach the VPC host again and are listed as new connections.
///
/// The clients run with `--connect-retry 1 1` (at most 1 s between attempts, where OpenVPN
/// slows down to minutes after five failed ones) and `--server-poll-timeout 4` (an attempt
/// unanswered for 4 s starts over at once, where the handshake's retransmissions back off to
/// 8 s and more while the daemon is down).
#[test]
fn the_daemon_restarted_under_connected_clients_tells_them_and_they_come_back() {
    let start = Start::new();
    let Bridged {
        wan: _wan,
        app,
        clients: [cert_ns, pass_ns],
        vpc,
    } = Bridged::new("up", start.pid, &start.out_if);
    let pid = start.pid;
    app.veth_to(&start.in_if, &vpc, &format!("vi{pid}"), "172.31.1.10/24");
    let d = start.dir.path();
    let ifs = (start.out_if.as_str(), start.in_if.as_str());
    let config = two_endpoints_config(d, &start.pki, ifs, "");
    let pass = second_endpoint_takes_passwords(&config, d, &start.pki);
    let cert_ovpn = export_for(&config, ENDPOINT, &start.pki, &d.join("first.ovpn"));
    let pass_ovpn = export_for(&config, SECOND, &start.pki, &d.join("second.ovpn"));
    assert!(read(&pass_ovpn).contains("auth-user-pass"));
    assert!(!read(&cert_ovpn).contains("auth-user-pass"));

    let first_log = d.join("sluice-1.log");
    let mut daemon = start_daemon(&app, &config, &first_log);
    let retry = ["--connect-retry", "1", "1", "--server-poll-timeout", "4"];
    let (cert_log, pass_log) = (d.join("cert.log"), d.join("bob.log"));
    let mut cert = start_client(&cert_ns, &cert_ovpn, &cert_log, &retry);
    let connected = |log: &Path| {
        read(log)
            .matches("Initialization Sequence Completed")
            .count()
    };
    wait_for("the certificate client", Duration::from_secs(40), || {
        connected(&cert_log) == 1
    });

    // The banner, on both endpoints, by the admin verb and a reload.
    let banner = "Lab appliance: authorized use only";
    for ep in [ENDPOINT, SECOND] {
        set_banner(&config, ep, banner);
    }
    let (code, _, err) = sluice(&config, &["reload"]);
    assert_eq!(code, 0, "{err}\n{}", read(&first_log));
    let mut args = vec!["--auth-user-pass", pass.to_str().unwrap()];
    args.extend_from_slice(&retry);
    let mut bob = start_client(&pass_ns, &pass_ovpn, &pass_log, &args);
    wait_for("the password client", Duration::from_secs(40), || {
        connected(&pass_log) == 1
    });
    let shown = "ECHO-PULL:msg Lab%20appliance:%20authorized%20use%20only";
    assert!(read(&pass_log).contains(shown), "{}", read(&pass_log));
    assert!(
        read(&pass_log).contains(&format!("ECHO-PULL:msg-window {SECOND}")),
        "{}",
        read(&pass_log)
    );
    for (ns, log) in [(&cert_ns, &cert_log), (&pass_ns, &pass_log)] {
        assert!(
            reaches(ns, "172.31.1.10"),
            "{}\ndaemon log:\n{}",
            read(log),
            read(&first_log)
        );
    }
    // The client connected before the banner was not disturbed.
    let before = read(&cert_log);
    assert!(
        connected(&cert_log) == 1 && !before.contains("SIGUSR1") && !before.contains("ECHO-PULL"),
        "{before}"
    );

    // Who is connected, by endpoint.
    let active = || {
        let (code, out, err) = sluice(&config, &["describe-client-vpn-connections"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut ids: Vec<(String, String, String)> = v["Connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["Status"]["Code"] == "active")
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or("").to_owned();
                (s("ClientVpnEndpointId"), s("ConnectionId"), s("Username"))
            })
            .collect();
        ids.sort();
        ids
    };
    let old = active();
    assert_eq!(old.len(), 2, "{old:?}");
    assert_eq!(
        (old[0].0.as_str(), old[1].0.as_str(), old[1].2.as_str()),
        (ENDPOINT, SECOND, "bob"),
        "{old:?}"
    );

    // The stop.
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status();
    let stopped = Instant::now();
    for log in [&cert_log, &pass_log] {
        wait_for("the clients to be told", Duration::from_secs(3), || {
            read(log).contains("server-pushed-connection-reset")
        });
    }
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(8),
            "sluice run did not stop within its linger:\n{}",
            read(&first_log)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", read(&first_log));
    // Told to restart, the clients came straight back (1 s later): the stopping daemon took
    // no new connection (to end and tell again until its linger was out), nor answered them
    // (a session id the next daemon does not know would hold them to their handshake window).
    let said = read(&first_log);
    assert_eq!(
        said.matches(" established: ").count(),
        2,
        "no connection made while stopping:\n{said}"
    );
    for (i, (_, id, _)) in old.iter().enumerate() {
        assert!(
            said.contains(&format!("connection {id} closed: the appliance stopped")),
            "{said}"
        );
        let lines = read(&d.join(format!("connections-{}.log", i + 1)));
        assert!(
            lines.lines().any(|l| {
                let l: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                l["connection-id"] == id.as_str()
                    && l["connection-log-type"] == "connection-reset"
                    && l["connection-end-time"] != "NA"
            }),
            "no end of {id}:\n{lines}"
        );
    }

    // The daemon back.
    let second_log = d.join("sluice-2.log");
    let _daemon = start_daemon(&app, &config, &second_log);
    for log in [&cert_log, &pass_log] {
        wait_for("both clients to come back", Duration::from_secs(30), || {
            connected(log) == 2
        });
    }
    assert!(cert.0.try_wait().unwrap().is_none() && bob.0.try_wait().unwrap().is_none());
    for (log, what) in [(&cert_log, "certificate"), (&pass_log, "password")] {
        let text = read(log);
        assert!(
            !text.contains("Inactivity timeout") && !text.contains("[soft,ping-restart]"),
            "the {what} client was told, not timed out:\n{text}"
        );
        let after = text
            .split("server-pushed-connection-reset")
            .nth(1)
            .unwrap_or_default();
        assert!(
            after.contains(shown),
            "the {what} client sees the banner:\n{text}"
        );
    }
    let bob_text = read(&pass_log);
    assert!(
        token_refused_then_password_taken(&bob_text),
        "the last run's token refused, then the password from the file taken:\n{bob_text}"
    );
    for (ns, log) in [(&cert_ns, &cert_log), (&pass_ns, &pass_log)] {
        assert!(
            reaches(ns, "172.31.1.10"),
            "{}\ndaemon log:\n{}",
            read(log),
            read(&second_log)
        );
    }
    let new = active();
    assert_eq!(new.len(), 2, "{new:?}");
    assert_eq!(
        (new[0].0.as_str(), new[1].0.as_str(), new[1].2.as_str()),
        (ENDPOINT, SECOND, "bob"),
        "{new:?}"
    );
    assert!(
        new.iter().all(|n| old.iter().all(|o| o.1 != n.1)),
        "new connections:\n{old:?}\n{new:?}"
    );
}

/// The VPC host's UDP echo on 172.31.1.10:9001: every datagram back to where it came from.
const UDP_ECHO_SERVER: &str = "import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('172.31.1.10', 9001))
while True:
    b, a = s.recvfrom(2048)
    s.sendto(b, a)
";

/// A client's short-lived flows for `argv[1]` seconds: a new TCP connection to `ECHO_SERVER`
/// (512 bytes there and back) and a UDP datagram from a new source port to `UDP_ECHO_SERVER`,
/// again and again; prints the TCP and UDP exchanges that came back as sent, and those that
/// failed.
const CHURN: &str = "import socket, sys, time
end = time.time() + float(sys.argv[1])
tcp = udp = failed = 0
while time.time() < end:
    try:
        c = socket.create_connection(('172.31.1.10', 9000), timeout=5)
        c.sendall(b'x' * 512)
        c.shutdown(socket.SHUT_WR)
        got = b''
        while True:
            b = c.recv(4096)
            if not b:
                break
            got += b
        c.close()
        if got == b'x' * 512:
            tcp += 1
        else:
            failed += 1
    except OSError:
        failed += 1
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(3)
    try:
        u.sendto(b'y' * 64, ('172.31.1.10', 9001))
        if u.recv(2048) == b'y' * 64:
            udp += 1
        else:
            failed += 1
    except OSError:
        failed += 1
    u.close()
print(tcp, udp, failed)
";

/// The daemon's resident memory (KiB) and open file descriptors.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

/// A soak: the appliance under clients that come and go for `SLUICE_SOAK_SECONDS` (80 by
/// default; `scripts/soak.sh` runs it longer), then back where it started.
///
/// Three clients on the bridged lab: A (certificate, first endpoint, AES-128-GCM), B (bob
/// with certificate and password, second endpoint, CHACHA20-POLY1305) and C (certificate,
/// first endpoint, AES-256-GCM), each renegotiating every 10 s (`--reneg-sec 10`). The
/// daemon's flows time out in seconds (`[dataplane] flow_timeouts`). Each cycle: all three
/// carry traffic at once for 8 s, new TCP connections and UDP source ports one after another
/// (`CHURN`) and pings, so that flows are made and expire all along; then A is stopped
/// (SIGTERM) and started again, C is killed (SIGKILL: the appliance times it out after the
/// pushed ping-restart, 60 s; when less than that is left of the run it gets a SIGTERM
/// instead), bob's connection is terminated by the administrator (his client comes back by
/// itself, with his password once his token is refused), the banner is changed and the
/// configuration reloaded; and the next cycle waits for all three to be back.
///
/// At the end, the clients gone and the timeouts past: every connection is terminated in
/// describe and the metrics count none active and no session on any core; every flow table
/// is empty; the mbufs out of the pool are as many as after start-up; the daemon's resident
/// memory grew less than `RSS_SLACK_KIB` and its open descriptors not at all since the end of
/// the first cycle; no core counted a drop the churn cannot cause; and each connection the
/// clients made has its end in the connection logs.
#[test]
fn soak_clients_come_and_go_and_the_appliance_returns_to_where_it_started() {
    const RSS_SLACK_KIB: u64 = 8 * 1024;
    let seconds: u64 = std::env::var("SLUICE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(80);
    let start = Start::new();
    let Bridged {
        wan,
        app,
        clients: [a_ns, b_ns],
        vpc,
    } = Bridged::new("soak", start.pid, &start.out_if);
    let pid = start.pid;
    let c_ns = Netns::new("soak-c3");
    wan.veth_to(
        &format!("wd{pid}"),
        &c_ns,
        &format!("cc{pid}"),
        "192.168.50.4/24",
    );
    wan.exec_ok(&["ip", "link", "set", &format!("wd{pid}"), "master", "br0"]);
    app.veth_to(&start.in_if, &vpc, &format!("vi{pid}"), "172.31.1.10/24");
    let d = start.dir.path();
    let ifs = (start.out_if.as_str(), start.in_if.as_str());
    let config = two_endpoints_config(
        d,
        &start.pki,
        ifs,
        "flow_timeouts = { tcp_established = 10, tcp_transitory = 3, udp = 3, icmp = 3 }",
    );
    let pass = second_endpoint_takes_passwords(&config, d, &start.pki);
    let cert_ovpn = export_for(&config, ENDPOINT, &start.pki, &d.join("first.ovpn"));
    let pass_ovpn = export_for(&config, SECOND, &start.pki, &d.join("second.ovpn"));
    let daemon_log = d.join("sluice.log");
    let daemon = start_daemon(&app, &config, &daemon_log);
    let daemon_pid = daemon.0.id();
    let _servers: Vec<Proc> = [ECHO_SERVER, UDP_ECHO_SERVER]
        .iter()
        .map(|code| {
            Proc(
                vpc.command(&["python3", "-c", code])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    wait_for(
        "the VPC host's echo servers",
        Duration::from_secs(10),
        || {
            String::from_utf8_lossy(&vpc.exec_ok(&["ss", "-ltnu"]).stdout)
                .contains("172.31.1.10:9001")
                && String::from_utf8_lossy(&vpc.exec_ok(&["ss", "-ltn"]).stdout)
                    .contains("172.31.1.10:9000")
        },
    );
    let m = scrape(&app);
    let mbufs_at_start = metric(&m, "sluice_mbufs_in_use");
    assert!(mbufs_at_start >= 0.0, "no mbuf gauge:\n{m}");

    // The clients: namespace, profile, extra options; each launch logs to a file of its own.
    let retry = ["--connect-retry", "1", "1", "--server-poll-timeout", "4"];
    let pass_arg = pass.to_str().unwrap();
    let specs: [(&str, &Netns, &Path, Vec<&str>); 3] = [
        (
            "a",
            &a_ns,
            &cert_ovpn,
            vec!["--data-ciphers", "AES-128-GCM"],
        ),
        (
            "b",
            &b_ns,
            &pass_ovpn,
            vec![
                "--data-ciphers",
                "CHACHA20-POLY1305",
                "--auth-user-pass",
                pass_arg,
            ],
        ),
        (
            "c",
            &c_ns,
            &cert_ovpn,
            vec!["--data-ciphers", "AES-256-GCM"],
        ),
    ];
    let mut logs: Vec<PathBuf> = Vec::new();
    let launch = |i: usize, logs: &mut Vec<PathBuf>| -> (Proc, PathBuf) {
        let (name, ns, ovpn, extra) = &specs[i];
        let log = d.join(format!("{name}-{}.log", logs.len()));
        let mut args = extra.clone();
        args.extend_from_slice(&["--reneg-sec", "10"]);
        args.extend_from_slice(&retry);
        logs.push(log.clone());
        (start_client(ns, ovpn, &log, &args), log)
    };
    let completed = |log: &Path| {
        read(log)
            .matches("Initialization Sequence Completed")
            .count()
    };
    let all_logs = |logs: &[PathBuf]| {
        let mut out = String::new();
        for l in logs {
            out += &format!("{}:\n{}\n", l.display(), read(l));
        }
        out + &format!("daemon log:\n{}", read(&daemon_log))
    };
    let mut running: Vec<(Proc, PathBuf)> = (0..3).map(|i| launch(i, &mut logs)).collect();
    // Connections each client log has seen completed when its client was last waited for.
    let mut seen = [0usize; 3];

    let began = Instant::now();
    let mut first_cycle: Option<(u64, usize)> = None;
    let (mut cycles, mut exchanges, mut peak_flows) = (0u32, [0u64; 3], 0.0f64);
    let mut banner = 0u32;
    loop {
        // All three (back) up.
        for (i, (_, log)) in running.iter().enumerate() {
            let (before, since) = (seen[i], Instant::now());
            // Told to restart, a client is back in seconds; one not told would wait for its
            // ping-restart (60 s), as bob did when his terminate met his soft reset.
            while completed(log) <= before {
                assert!(
                    since.elapsed() < Duration::from_secs(30),
                    "client {} did not connect within 30 s in cycle {cycles}:\n{}",
                    specs[i].0,
                    all_logs(&logs)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            seen[i] = completed(log);
        }
        for (name, ns, _, _) in &specs {
            if !reaches(ns, "172.31.1.10") {
                std::thread::sleep(Duration::from_secs(3));
                let later = reaches(ns, "172.31.1.10");
                let m = scrape(&app);
                panic!(
                    "client {name} does not reach the VPC host in cycle {cycles} (3 s later: {later}):\n{}\n{m}",
                    all_logs(&logs)
                );
            }
        }
        // Traffic from all three at once.
        let churn: Vec<Child> = specs
            .iter()
            .map(|(_, ns, _, _)| {
                ns.command(&["python3", "-c", CHURN, "8"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let pings: Vec<Child> = specs
            .iter()
            .map(|(_, ns, _, _)| {
                ns.command(&[
                    "ping",
                    "-q",
                    "-i",
                    "0.2",
                    "-c",
                    "35",
                    "-W",
                    "2",
                    "172.31.1.10",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_secs(6));
        peak_flows = peak_flows.max(metric_sum(&scrape(&app), "sluice_core_flows"));
        for (i, c) in churn.into_iter().enumerate() {
            let out = c.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&out.stdout).into_owned();
            let n: Vec<u64> = said
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            assert!(
                n.len() == 3 && n[0] > 0 && n[1] > 0 && n[2] * 100 <= n[0] + n[1],
                "client {}'s flows in cycle {cycles} (TCP, UDP, failed): {said}{}\n{}",
                specs[i].0,
                String::from_utf8_lossy(&out.stderr),
                all_logs(&logs)
            );
            exchanges[i] += n[0] + n[1];
        }
        for mut p in pings {
            let _ = p.wait();
        }
        cycles += 1;
        if first_cycle.is_none() {
            first_cycle = Some(rss_and_fds(daemon_pid));
        }
        if began.elapsed() >= Duration::from_secs(seconds) {
            break;
        }

        // The churn. A stops and comes back.
        let (a, _) = &running[0];
        let _ = Command::new("kill")
            .args(["-TERM", &a.0.id().to_string()])
            .status();
        // C is killed, or stopped if its timeout would outlast the run.
        let (c, _) = &mut running[2];
        let left = Duration::from_secs(seconds).saturating_sub(began.elapsed());
        if left > Duration::from_secs(61) {
            let _ = c.0.kill();
        } else {
            let _ = Command::new("kill")
                .args(["-TERM", &c.0.id().to_string()])
                .status();
        }
        // Each comes back once the old one is gone (its tunnel and route with it).
        for i in [0, 2] {
            let _ = running[i].0 .0.wait();
            running[i] = launch(i, &mut logs);
            seen[i] = 0;
        }
        // Bob is terminated by the administrator.
        let (code, out, err) = sluice(
            &config,
            &[
                "terminate-client-vpn-connections",
                "--client-vpn-endpoint-id",
                SECOND,
                "--username",
                "bob",
            ],
        );
        assert!(code == 0 && out.contains("bob"), "{out}{err}");
        // A new banner, by the verb and a reload.
        banner += 1;
        set_banner(&config, ENDPOINT, &format!("Soak cycle {banner}"));
        let (code, _, err) = sluice(&config, &["reload"]);
        assert_eq!(code, 0, "{err}\n{}", read(&daemon_log));
    }

    // The end: every client stopped, the timeouts past.
    for (p, _) in &running {
        let _ = Command::new("kill")
            .args(["-TERM", &p.0.id().to_string()])
            .status();
    }
    for (mut p, _) in running.drain(..) {
        let _ = p.0.wait();
    }
    let connections = |config: &Path| -> Vec<serde_json::Value> {
        let (code, out, err) = sluice(config, &["describe-client-vpn-connections"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["Connections"].as_array().unwrap().clone()
    };
    wait_for(
        "every connection to end (a killed client's after ping-restart)",
        Duration::from_secs(75),
        || {
            connections(&config)
                .iter()
                .all(|c| c["Status"]["Code"] == "terminated")
        },
    );
    let mut m = scrape(&app);
    let flows_gone = Instant::now();
    while metric_sum(&m, "sluice_core_flows") > 0.0
        && flows_gone.elapsed() < Duration::from_secs(20)
    {
        m = scrape(&app);
    }
    let (rss_first, fds_first) = first_cycle.unwrap();
    let (rss_last, fds_last) = rss_and_fds(daemon_pid);
    let made: usize = logs.iter().map(|l| completed(l)).sum();
    let renegotiations: usize = logs
        .iter()
        .map(|l| {
            let keys = read(l).matches("Outgoing Data Channel: Cipher").count();
            keys.saturating_sub(completed(l))
        })
        .sum();
    let listed = connections(&config);
    let figures = format!(
        "soak: {seconds} s asked, {:.0} s run, {cycles} cycles, {made} connections, {renegotiations} renegotiations, flow exchanges (TCP+UDP) per client {exchanges:?}, peak flows {peak_flows}, RSS {rss_first} -> {rss_last} KiB, fds {fds_first} -> {fds_last}, mbufs in use {mbufs_at_start} -> {}",
        began.elapsed().as_secs_f64(),
        metric(&m, "sluice_mbufs_in_use"),
    );
    eprintln!("{figures}");
    // The counters, for the record (docs/SOAK.md): every series not zero.
    for l in m.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) != Some(0.0) {
            eprintln!("soak counter: {l}");
        }
    }
    let active: Vec<f64> = [ENDPOINT, SECOND]
        .iter()
        .map(|e| {
            metric(
                &m,
                &format!("sluice_active_connections_count{{endpoint=\"{e}\"}}"),
            )
        })
        .collect();
    assert_eq!(
        active,
        [0.0, 0.0],
        "active connections in the metrics:\n{m}"
    );
    assert_eq!(
        metric_sum(&m, "sluice_core_sessions"),
        0.0,
        "sessions left on the cores:\n{m}"
    );
    assert_eq!(
        metric_sum(&m, "sluice_core_flows"),
        0.0,
        "flows left in the tables:\n{m}"
    );
    assert!(peak_flows > 0.0, "the flow tables never filled: {figures}");
    assert_eq!(
        metric(&m, "sluice_mbufs_in_use"),
        mbufs_at_start,
        "mbufs in use drifted: {figures}\n{m}"
    );
    assert!(
        rss_last <= rss_first + RSS_SLACK_KIB,
        "resident memory grew: {figures}"
    );
    assert!(fds_last <= fds_first, "open descriptors grew: {figures}");
    // The churn itself causes two: a stopped or terminated client's data and control packets
    // still on their way when its session goes (`unknown_peer`, `unknown_control_peer`).
    for reason in UNCAUSED_DROPS
        .iter()
        .filter(|r| !["unknown_peer", "unknown_control_peer"].contains(r))
    {
        assert_eq!(
            core_drops(&m, reason),
            0.0,
            "{reason} drops: {figures}\n{m}"
        );
    }
    assert!(
        made >= 3 * cycles as usize,
        "{figures}\n{}",
        all_logs(&logs)
    );
    // Each connection made has its end in its endpoint's log, and is listed terminated
    // (describe lists those ended in the last hour, the last 1,000 at most: every one, in a
    // soak shorter than that).
    let logged: String = read(&d.join("connections-1.log")) + &read(&d.join("connections-2.log"));
    let ends: Vec<String> = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| {
            l["connection-log-type"] == "connection-reset" && l["connection-end-time"] != "NA"
        })
        .filter_map(|l| Some(l["connection-id"].as_str()?.to_owned()))
        .collect();
    assert_eq!(
        ends.len(),
        made,
        "connection ends logged: {figures}\n{logged}"
    );
    if began.elapsed() < Duration::from_secs(55 * 60) {
        assert_eq!(listed.len(), made.min(1000), "{figures}\n{listed:?}");
    } else {
        assert!(
            !listed.is_empty() && listed.len() <= made.min(1000),
            "{figures}\n{listed:?}"
        );
    }
    for c in &listed {
        let id = c["ConnectionId"].as_str().unwrap();
        assert!(
            ends.iter().any(|e| e == id),
            "no end of {id} in the connection logs:\n{logged}"
        );
    }
    // The same list in pages of 5 (`--max-results`, then each answer's NextToken): every
    // connection once, in the same order, the last page without a token.
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut args = vec!["describe-client-vpn-connections", "--max-results", "5"];
        if let Some(t) = &token {
            args.extend(["--next-token", t]);
        }
        let (code, out, err) = sluice(&config, &args);
        assert_eq!(code, 0, "{err}");
        let page: serde_json::Value = serde_json::from_str(&out).unwrap();
        let items = page["Connections"].as_array().unwrap();
        assert!(!items.is_empty() && items.len() <= 5, "{out}");
        paged.extend(items.iter().cloned());
        match page["NextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert!(listed.len() > 5, "one page only: {figures}");
    assert_eq!(
        paged, listed,
        "the pages of describe-client-vpn-connections"
    );
    // And filtered: bob's connections, and one connection by its id (with a wildcard).
    let filtered = |filter: &str| -> Vec<serde_json::Value> {
        let (code, out, err) = sluice(
            &config,
            &["describe-client-vpn-connections", "--filters", filter],
        );
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["Connections"].as_array().unwrap().clone()
    };
    let bobs: Vec<serde_json::Value> = listed
        .iter()
        .filter(|c| c["Username"] == "bob")
        .cloned()
        .collect();
    assert!(!bobs.is_empty(), "no connection of bob's listed: {figures}");
    assert_eq!(filtered("Name=username,Values=bob"), bobs);
    let id = listed[3]["ConnectionId"].as_str().unwrap();
    let pattern = format!("Name=connection-id,Values=nobody,{}*", &id[..id.len() - 2]);
    let by_id = filtered(&pattern);
    assert!(by_id.contains(&listed[3]), "{pattern}: {by_id:?}");
    drop(daemon);
}
