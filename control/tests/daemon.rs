//! `sluice run` as a process: the admin socket (mode 0600) serves verbs live and audits them with
//! the peer's credentials; an invalid reload (admin request or SIGHUP) is refused and the daemon
//! keeps serving; SIGTERM stops it and removes the socket.

// A process-level test waits on real time.
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sluice(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_for(path: &Path, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() != present {
        assert!(
            Instant::now() < deadline,
            "{} did not {} in time",
            path.display(),
            if present { "appear" } else { "go away" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), sig)
        .unwrap_or_else(|e| panic!("signal {sig:?} to the daemon: {e}"));
}

#[test]
fn live_verbs_reloads_and_clean_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket: PathBuf = d.join("run/admin.sock");
    let config = d.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[appliance]\nadmin_socket = \"{}\"\nstate_dir = \"{}\"\nmetrics_address = \"127.0.0.1:{}\"\n\n[dataplane]\neal_args = [\"--no-pci\", \"--no-huge\", \"--no-shconf\", \"--no-telemetry\", \"-m\", \"512\", \"-l\", \"0-1\", \"--log-level=lib.eal:error\"]\n\n[[dataplane.port]]\nname = \"p\"\ndevice = \"net_null0,no-rx=1\"\nip = \"192.0.2.1/24\"\n",
            socket.display(),
            d.join("state").display(),
            metrics_port()
        ),
    )
    .expect("write config");

    let child = sluice_tests::dying_with_parent(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start daemon");
    let mut daemon = Daemon { child };
    wait_for(&socket, true);
    assert_eq!(
        std::fs::metadata(&socket)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // A second daemon on the same socket refuses to start, with one clear message.
    let (code, _, err) = sluice(&config, &["run"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("another sluice daemon answers"), "{err}");

    // The metrics endpoint answers with the per-core counters (after the cores' first second).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let scrape = http_get(metrics_port());
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
    assert!(
        scrape.contains("sluice_core_polls_total{core=\"0\",kind=\"idle\"}"),
        "{scrape}"
    );
    assert!(
        scrape.contains("sluice_core_drops_total{core=\"0\",reason=\"replayed\"} 0"),
        "{scrape}"
    );

    // `sluice top` draws a frame from two samples.
    let (code, out, err) = sluice(&config, &["top", "--once", "--interval", "0.2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sluice top") && out.contains("active connections: 0"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("0 ")),
        "core 0 is shown:\n{out}"
    );

    // The data plane is up: connections are listed live (none yet); terminating an unknown
    // one is refused with AWS's error code.
    let (code, out, err) = sluice(&config, &["describe-client-vpn-connections"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"Connections\": []"), "{out}");
    let (code, _, err) = sluice(
        &config,
        &[
            "terminate-client-vpn-connections",
            "--client-vpn-endpoint-id",
            "cvpn-endpoint-0123456789abcdef0",
            "--connection-id",
            "cvpn-connection-0123456789abcdef0",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("InvalidClientVpnConnection.NotFound"), "{err}");

    // Verbs go through the daemon and are audited with the socket peer's identity.
    let (code, out, err) = sluice(&config, &["describe-client-vpn-endpoints"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"ClientVpnEndpoints\": []"), "{out}");
    let trail = std::fs::read_to_string(d.join("state/audit.log")).expect("audit trail");
    assert!(trail.contains("\"type\":\"AdminSocket\""), "{trail}");

    // An invalid file is refused on reload, by request and by SIGHUP; the daemon keeps serving.
    let good = std::fs::read_to_string(&config).expect("read");
    std::fs::write(&config, format!("{good}bogus = true\n")).expect("write");
    let (code, _, err) = sluice(&config, &["reload"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the running configuration stays") && err.contains("unknown field `bogus`"),
        "{err}"
    );
    signal(&daemon.child, rustix::process::Signal::HUP);
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&config, &good).expect("write");
    let (code, out, err) = sluice(&config, &["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reloaded"), "{out}");

    signal(&daemon.child, rustix::process::Signal::TERM);
    let status = daemon.child.wait().expect("wait");
    assert!(status.success(), "daemon exit: {status}");
    wait_for(&socket, false);
    let mut log = String::new();
    if let Some(mut e) = daemon.child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut log);
    }
    assert!(log.contains("reload (SIGHUP) refused"), "{log}");
    assert!(log.contains("stopping"), "{log}");

    // Without a daemon, verbs work on the file, and reload says there is none.
    let (code, _, err) = sluice(&config, &["describe-client-vpn-endpoints"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = sluice(&config, &["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("no sluice daemon answers"), "{err}");
}

/// `sluice run` refuses with one clear line, quickly, when DPDK cannot start a port.
#[test]
fn run_refuses_a_data_plane_that_cannot_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let config = d.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[appliance]\nadmin_socket = \"{}\"\nstate_dir = \"{}\"\n\n[dataplane]\neal_args = [\"--no-pci\", \"--no-huge\", \"--no-shconf\", \"--no-telemetry\", \"-m\", \"256\", \"-l\", \"0-1\", \"--log-level=lib.eal:error\"]\n\n[[dataplane.port]]\nname = \"p\"\ndevice = \"net_pcap0,rx_pcap=/nonexistent/in.pcap,tx_pcap=/nonexistent/out.pcap\"\nip = \"192.0.2.1/24\"\n",
            d.join("admin.sock").display(),
            d.join("state").display()
        ),
    )
    .expect("write config");
    let start = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "no hang"
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("sluice run: "))
        .unwrap_or("");
    assert!(
        line.contains("DPDK") && (line.contains("net_pcap0") || line.contains("could not start")),
        "{err}"
    );
    assert!(!d.join("admin.sock").exists(), "nothing left behind");
}

/// A port for this test run's metrics endpoint (loopback; unlikely to be taken).
fn metrics_port() -> u16 {
    20_000 + (std::process::id() % 20_000) as u16
}

fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}
