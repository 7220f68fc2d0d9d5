//! Interop with the real Debian OpenVPN 2.6 client, in network namespaces, against sluice's
//! control channel driven over a kernel UDP socket: certificate authentication with split and
//! full tunnel, a revoked certificate refused, an expired CRL refusing everyone, and a long run
//! with renegotiations where keepalives flow both ways with the derived keys.
//!
//! Needs root (namespaces). Run only these with
//! `cargo test -p sluice-tests --test interop_openvpn -- --test-threads 1`.

// A test harness: it reads the clock to bound its waits.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_control::auth::directory::{hash_password, UsersFileDirectory};
use sluice_control::auth::{totp, EndpointAuth};
use sluice_control::connlog::FailureReason;
use sluice_control::proto::push;
use sluice_control::proto::server::{Authenticator, CertificateOnly, Event, Server, Settings};
use sluice_control::proto::tls::{server_config, TlsFiles};
use sluice_control::runtime::udp::{Stats, UdpDriver};
use sluice_tests::{make_pki, Netns};

struct Lab {
    cli: Netns,
    srv: Netns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let cli = Netns::new(&format!("{tag}c"));
        let srv = Netns::new(&format!("{tag}s"));
        cli.link(&srv, "192.168.50.2/24", "192.168.50.1/24");
        let dir = tempfile::tempdir().expect("tempdir");
        make_pki(&dir.path().join("pki"));
        Self { cli, srv, dir }
    }

    fn pki(&self, f: &str) -> PathBuf {
        self.dir.path().join("pki").join(f)
    }

    fn read(&self, f: &str) -> Vec<u8> {
        std::fs::read(self.pki(f)).expect("read PKI file")
    }

    fn settings(
        &self,
        crl: Option<&[u8]>,
        routes: Option<Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>>,
    ) -> Settings {
        let (chain, key, ca) = (
            self.read("server.crt"),
            self.read("server.key"),
            self.read("ca.crt"),
        );
        let tls = server_config(&TlsFiles {
            server_chain_pem: &chain,
            server_key_pem: &key,
            client_ca_pem: Some(&ca),
            crl_pem: crl,
        })
        .expect("TLS config");
        let mut s = Settings::new(0, tls, ("10.200.0.0".parse().expect("ip"), 20));
        s.routes = routes;
        s.dns = vec!["172.31.0.2".parse().expect("ip")];
        s
    }

    /// The exported client configuration for this lab, with `client`'s certificate inline.
    fn client_config(&self, client: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[[dataplane.port]]
name = "outside"
device = "net_null0"
ip = "192.168.50.1/24"
[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef0"
client_cidr_block = "10.200.0.0/20"
server_certificate = "{p}/server.crt"
server_key = "{p}/server.key"
vpn_port = 1194
dns_name = "192.168.50.1"
authentication = {{ mutual = {{ client_root_ca = "{p}/ca.crt" }} }}
"#,
            p = self.dir.path().join("pki").display()
        );
        let cfg = sluice_control::config::parse(Path::new("lab.toml"), &text).expect("lab config");
        let ep = &cfg.endpoints[0];
        let ca = String::from_utf8(self.read("ca.crt")).expect("utf-8");
        let id = sluice_control::admin::export::ClientIdentity {
            certificate: String::from_utf8(self.read(&format!("{client}.crt"))).expect("utf-8"),
            key: String::from_utf8(self.read(&format!("{client}.key"))).expect("utf-8"),
        };
        let mut ovpn = sluice_control::admin::export::client_configuration(ep, &ca, Some(&id));
        ovpn.push_str(extra);
        let path = self.dir.path().join(format!("{client}.ovpn"));
        std::fs::write(&path, ovpn).expect("write .ovpn");
        path
    }

    fn start_client(&self, ovpn: &Path, log: &Path, args: &[&str]) -> Child {
        let mut argv = vec![
            "openvpn",
            "--config",
            ovpn.to_str().expect("utf-8"),
            "--verb",
            "4",
            "--log",
            log.to_str().expect("utf-8"),
        ];
        argv.extend_from_slice(args);
        self.cli
            .command(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openvpn")
    }
}

/// Runs the driver on `settings` while the client runs; stops when `done` says so (on the
/// client's log) or at `limit`. Returns the driver's events and stats and the client's log.
fn run(
    lab: &Lab,
    settings: Settings,
    ping: Duration,
    ovpn: &Path,
    limit: Duration,
    done: impl Fn(&str) -> bool + Send + 'static,
) -> (Vec<Event>, Stats, String) {
    run_with(lab, settings, CertificateOnly, ping, ovpn, &[], limit, done)
}

/// As `run`, with an authenticator and extra client arguments.
#[allow(clippy::too_many_arguments)]
fn run_with<A: Authenticator>(
    lab: &Lab,
    settings: Settings,
    auth: A,
    ping: Duration,
    ovpn: &Path,
    args: &[&str],
    limit: Duration,
    done: impl Fn(&str) -> bool + Send + 'static,
) -> (Vec<Event>, Stats, String) {
    let socket = lab.srv.bind_udp("192.168.50.1:1194");
    let mut driver = UdpDriver::new(socket, Server::new(settings, auth), ping).expect("driver");
    let log = lab
        .dir
        .path()
        .join(format!("client-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut client = lab.start_client(ovpn, &log, args);
    let stop = Arc::new(AtomicBool::new(false));
    let log2 = log.clone();
    let stop2 = Arc::clone(&stop);
    let watcher = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit && !stop2.load(Ordering::SeqCst) {
            let text = std::fs::read_to_string(&log2).unwrap_or_default();
            if done(&text) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        stop2.store(true, Ordering::SeqCst);
    });
    let deadline = Instant::now() + limit + Duration::from_secs(2);
    let stop3 = Arc::clone(&stop);
    driver
        .run_until(deadline, move |_| stop3.load(Ordering::SeqCst))
        .expect("driver loop");
    stop.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    let _ = client.kill();
    let _ = client.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    (
        std::mem::take(&mut driver.events),
        driver.stats.clone(),
        text,
    )
}

fn connected(log: &str) -> bool {
    log.contains("Initialization Sequence Completed")
}

#[test]
fn certificate_split_and_full_tunnel_revocation_and_expired_crl() {
    let lab = Lab::new("io1");
    let crl = lab.read("crl.pem");
    let route = |n: &str, m: &str| (n.parse().expect("ip"), m.parse().expect("mask"));

    // (a) split tunnel: the address, the routes and DNS pushed; keys installed.
    let ovpn = lab.client_config("client1", "");
    let settings = lab.settings(
        Some(&crl),
        Some(vec![
            route("172.31.0.0", "255.255.0.0"),
            route("172.16.0.0", "255.255.0.0"),
        ]),
    );
    let (events, stats, log) = run(
        &lab,
        settings,
        Duration::from_secs(10),
        &ovpn,
        Duration::from_secs(30),
        connected,
    );
    assert!(connected(&log), "client did not connect:\n{log}");
    assert!(
        log.contains("10.200.0.2/20") || log.contains("10.200.0.2 255.255.240.0"),
        "address:\n{log}"
    );
    assert!(
        log.contains("route-gateway 10.200.0.1") && log.contains("route 172.31.0.0 255.255.0.0"),
        "routes:\n{log}"
    );
    assert!(
        !log.contains("redirect-gateway"),
        "split tunnel must not redirect:\n{log}"
    );
    assert!(log.contains("dhcp-option DNS 172.31.0.2"), "{log}");
    assert!(log.contains("Data Channel: cipher 'AES-256-GCM'"), "{log}");
    assert_eq!(stats.keys_installed, 1);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::KeysReady { client, first: true, .. }
        if client.identity.common_name.as_deref() == Some("client1.domain.tld"))));

    // Full tunnel: redirect-gateway def1. With a client login banner, which the client takes
    // as `echo` options (an option it refused would stop it short of connecting) and logs.
    let mut settings = lab.settings(Some(&crl), None);
    settings.banner =
        push::banner_options("Corp VPN", "Authorised use only, 100% logged.\n\nCafé: 2").into();
    let (_, _, log) = run(
        &lab,
        settings,
        Duration::from_secs(10),
        &ovpn,
        Duration::from_secs(30),
        connected,
    );
    assert!(connected(&log), "{log}");
    assert!(log.contains("redirect-gateway def1"), "{log}");
    let echoes: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("ECHO-PULL:").map(|(_, e)| e))
        .collect();
    assert_eq!(
        echoes,
        [
            "msg Authorised%20use%20only%2C%20100%25%20logged.",
            "msg",
            "msg Caf%C3%A9:%202",
            "msg-window Corp%20VPN"
        ],
        "{log}"
    );

    // (b) a revoked certificate is refused, and the refusal names the reason.
    let revoked = lab.client_config("client2", "");
    let settings = lab.settings(Some(&crl), None);
    let (events, _, log) = run(
        &lab,
        settings,
        Duration::from_secs(10),
        &revoked,
        Duration::from_secs(15),
        |l| l.contains("TLS Error") || l.contains("TLS_ERROR") || l.contains("SIGUSR1"),
    );
    assert!(!connected(&log), "a revoked client connected:\n{log}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::AuthFailed {
                reason: FailureReason::CertificateRevoked,
                ..
            }
        )),
        "{events:?}"
    );

    // (c) an expired CRL refuses every new connection, with when it expired.
    let expired = expired_crl(&lab);
    let settings = lab.settings(Some(&expired), None);
    let (events, _, log) = run(
        &lab,
        settings,
        Duration::from_secs(10),
        &ovpn,
        Duration::from_secs(15),
        |l| l.contains("TLS Error") || l.contains("SIGUSR1"),
    );
    assert!(!connected(&log), "connected despite an expired CRL:\n{log}");
    assert!(
        events.iter().any(
            |e| matches!(e, Event::AuthFailed { reason: FailureReason::CrlExpired, detail, .. }
            if detail.starts_with("certificate revocation list expired at ") && detail.len() > 40)
        ),
        "the refusal says the CRL expired and when: {events:?}"
    );
}

/// A CRL from the lab's CA whose nextUpdate is already past (openssl ca, 1-second validity).
fn expired_crl(lab: &Lab) -> Vec<u8> {
    let d = lab.dir.path().join("crl-ca");
    std::fs::create_dir_all(d.join("newcerts")).expect("mkdir");
    std::fs::write(d.join("index.txt"), "").expect("index");
    std::fs::write(d.join("crlnumber"), "01\n").expect("crlnumber");
    let conf = format!(
        "[ca]\ndefault_ca = x\n[x]\ndir = {d}\ndatabase = {d}/index.txt\ncrlnumber = {d}/crlnumber\ndefault_md = sha256\ncertificate = {ca}\nprivate_key = {key}\n",
        d = d.display(),
        ca = lab.pki("ca.crt").display(),
        key = lab.dir.path().join("pki/ca.key").display()
    );
    std::fs::write(d.join("ca.cnf"), conf).expect("conf");
    let out = d.join("expired.pem");
    let st = std::process::Command::new("openssl")
        .args(["ca", "-batch", "-gencrl", "-crlsec", "1", "-config"])
        .arg(d.join("ca.cnf"))
        .arg("-out")
        .arg(&out)
        .output()
        .expect("openssl");
    assert!(
        st.status.success(),
        "openssl ca -gencrl: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::thread::sleep(Duration::from_secs(2));
    std::fs::read(out).expect("read CRL")
}

/// The client connected once and stayed up (no ping-restart, no restart, no errors), and the
/// server saw at least `min` renegotiations.
fn stayed_up_and_renegotiated(log: &str, events: &[Event], min: usize) {
    assert!(connected(log), "{log}");
    assert!(
        !log.contains("Inactivity timeout"),
        "the client's ping-restart fired:\n{log}"
    );
    assert!(
        !log.contains("Initialization Sequence Completed With Errors"),
        "{log}"
    );
    assert_eq!(
        log.matches("Initialization Sequence Completed").count(),
        1,
        "the client restarted:\n{log}"
    );
    let renegotiations = events
        .iter()
        .filter(|e| matches!(e, Event::KeysReady { first: false, .. }))
        .count();
    assert!(
        renegotiations >= min,
        "renegotiations: {renegotiations}\n{log}"
    );
}

#[test]
fn renegotiations_and_keepalives_with_the_derived_keys() {
    let lab = Lab::new("io2");
    let crl = lab.read("crl.pem");
    // (f) reneg-sec 20 on the client; (g) pings every 5 s both ways, ping-restart 15 s: if
    // either side's keys were wrong, the client would restart within the run.
    let ovpn = lab.client_config("client1", "reneg-sec 20\n");
    let mut settings = lab.settings(Some(&crl), None);
    settings.ping = 5;
    settings.ping_restart = 15;
    let (events, stats, log) = run(
        &lab,
        settings,
        Duration::from_secs(5),
        &ovpn,
        Duration::from_secs(62),
        |_| false,
    );
    stayed_up_and_renegotiated(&log, &events, 2);
    // The client pings only after 5 s without sending anything, so data packets and the
    // renegotiations' timing move the count (7 to 12 seen in 62 s); at least one per 15 s
    // ping-restart window must have decrypted, or the session would have been restarted.
    assert!(
        stats.pings_received >= 4,
        "pings from the client decrypted: {stats:?}"
    );
    assert!(stats.pings_sent >= 8, "{stats:?}");
    assert_eq!(stats.data_rejected, 0, "{stats:?}");
}

/// The server renegotiates (its `reneg` at 12 s; the client's own reneg-sec stays at its
/// default hour): the Debian client answers the soft reset, the new keys carry the pings both
/// ways, and it never restarts. The same path serves the data plane's request before a send
/// packet-id wraps.
#[test]
fn the_server_renegotiates_with_a_real_client() {
    let lab = Lab::new("io4");
    let crl = lab.read("crl.pem");
    let ovpn = lab.client_config("client1", "");
    let mut settings = lab.settings(Some(&crl), None);
    settings.ping = 3;
    settings.ping_restart = 12;
    settings.reneg = Some(Duration::from_secs(12));
    let (events, stats, log) = run(
        &lab,
        settings,
        Duration::from_secs(3),
        &ovpn,
        Duration::from_secs(40),
        |_| false,
    );
    stayed_up_and_renegotiated(&log, &events, 2);
    assert!(stats.pings_received >= 4, "{stats:?}");
    assert_eq!(stats.data_rejected, 0, "{stats:?}");
}

/// Writes a credentials file for `--auth-user-pass`.
fn creds(lab: &Lab, name: &str, user: &str, password: &str) -> String {
    let p = lab.dir.path().join(name);
    std::fs::write(&p, format!("{user}\n{password}\n")).expect("write credentials");
    p.to_string_lossy().into_owned()
}

#[test]
fn passwords_and_one_time_codes() {
    let lab = Lab::new("io3");
    let crl = lab.read("crl.pem");
    let hash = hash_password("correct horse").expect("hash");
    let users = format!("[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ngroups = [\"engineering\"]\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n");
    let dir = || {
        Box::new(UsersFileDirectory::parse(&users).expect("users"))
            as Box<dyn sluice_control::auth::directory::Directory>
    };
    // The exported file asks for a username and password; the test gives them in a file.
    let ovpn = lab.client_config("client1", "auth-user-pass\n");
    let mut settings = lab.settings(Some(&crl), None);
    settings.password_required = true;

    // (d) the right password connects, with the user's groups; a wrong one gets AUTH_FAILED.
    let good = creds(&lab, "good.txt", "alice", "correct horse");
    let (events, _, log) = run_with(
        &lab,
        settings.clone(),
        EndpointAuth::new(true, Some(dir()), false),
        Duration::from_secs(10),
        &ovpn,
        &["--auth-user-pass", &good],
        Duration::from_secs(30),
        connected,
    );
    assert!(connected(&log), "{log}");
    assert!(events.iter().any(|e| matches!(e, Event::KeysReady { client, .. }
        if client.identity.username.as_deref() == Some("alice") && client.identity.groups == ["engineering"])));
    let bad = creds(&lab, "bad.txt", "alice", "wrong");
    let (events, _, log) = run_with(
        &lab,
        settings.clone(),
        EndpointAuth::new(true, Some(dir()), false),
        Duration::from_secs(10),
        &ovpn,
        &["--auth-user-pass", &bad],
        Duration::from_secs(20),
        |l| l.contains("AUTH_FAILED"),
    );
    assert!(log.contains("AUTH_FAILED") && !connected(&log), "{log}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::AuthFailed {
                reason: FailureReason::BadPassword,
                ..
            }
        )),
        "{events:?}"
    );

    // (e) TOTP through the static challenge: the password field carries
    // SCRV1:base64(password):base64(code), exactly what the client's static challenge sends.
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let code = format!(
        "{:06}",
        totp::code_at(b"12345678901234567890", now / totp::STEP, 6)
    );
    let with_code = creds(
        &lab,
        "totp.txt",
        "alice",
        &format!("SCRV1:{}:{}", b64("correct horse"), b64(&code)),
    );
    let (_, _, log) = run_with(
        &lab,
        settings.clone(),
        EndpointAuth::new(true, Some(dir()), true),
        Duration::from_secs(10),
        &ovpn,
        &["--auth-user-pass", &with_code],
        Duration::from_secs(30),
        connected,
    );
    assert!(connected(&log), "{log}");
    let wrong_code = creds(
        &lab,
        "totp-bad.txt",
        "alice",
        &format!("SCRV1:{}:{}", b64("correct horse"), b64("000000")),
    );
    let (events, _, log) = run_with(
        &lab,
        settings,
        EndpointAuth::new(true, Some(dir()), true),
        Duration::from_secs(10),
        &ovpn,
        &["--auth-user-pass", &wrong_code],
        Duration::from_secs(20),
        |l| l.contains("AUTH_FAILED"),
    );
    assert!(log.contains("AUTH_FAILED") && !connected(&log), "{log}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::AuthFailed {
                reason: FailureReason::MfaFailed,
                ..
            }
        )),
        "{events:?}"
    );
}
