//! `sluice run` as a process: the admin socket (mode 0600) serves verbs live and audits them with
//! the peer's credentials; an invalid reload (admin request or SIGHUP) is refused and the daemon
//! keeps serving; SIGTERM stops it and removes the socket.

// A process-level test waits on real time.
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any one condition of these tests is awaited.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running `sluice run`; its stderr (the log) is read as it comes, so the test can wait for a
/// line and the daemon never blocks on a full pipe.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start(config: &Path) -> Self {
        Self::start_in(config, None)
    }

    /// `start`, in the working directory `cwd` if given.
    fn start_in(config: &Path, cwd: Option<&Path>) -> Self {
        let mut command = sluice_tests::dying_with_parent(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().expect("start daemon");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock()
                    .expect("log lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            log,
            reader: Some(reader),
        }
    }

    /// The log so far.
    fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits (bounded) for `ready`; panics with the daemon's log if it exits first or the time
    /// runs out.
    fn await_condition(&mut self, what: &str, mut ready: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !ready(self) {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.join_reader();
                panic!(
                    "sluice run exited ({status}) before {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {PATIENCE:?}; the daemon's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the daemon to exit; kills it and panics if it does not.
    fn await_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.join_reader();
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.join_reader();
                panic!(
                    "sluice run did not exit within {PATIENCE:?}; killed. Its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After the daemon exited: the reader has everything once it has seen end of file.
    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_reader();
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
    let deadline = Instant::now() + PATIENCE;
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
    let write_config = |port: u16| {
        std::fs::write(
            &config,
            format!(
                "[appliance]\nadmin_socket = \"{}\"\nstate_dir = \"{}\"\nmetrics_address = \"127.0.0.1:{}\"\n\n[dataplane]\neal_args = [\"--no-pci\", \"--no-huge\", \"--no-shconf\", \"--no-telemetry\", \"-m\", \"512\", \"-l\", \"0-1\", \"--log-level=lib.eal:error\"]\n\n[[dataplane.port]]\nname = \"p\"\ndevice = \"net_null0,no-rx=1\"\nip = \"192.0.2.1/24\"\n",
                socket.display(),
                d.join("state").display(),
                port
            ),
        )
        .expect("write config");
        config.clone()
    };
    let (mut daemon, port) = start_with_metrics(write_config, &socket, free_port);
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
    let want = [
        "sluice_core_polls_total{core=\"0\",kind=\"idle\"}",
        "sluice_core_drops_total{core=\"0\",reason=\"replayed\"} 0",
    ];
    let mut scrape = Err(std::io::Error::other("not scraped yet"));
    daemon.await_condition("per-core counters on the metrics endpoint", |_| {
        scrape = http_get(port);
        scrape
            .as_ref()
            .is_ok_and(|s| want.iter().all(|w| s.contains(w)))
    });
    let scrape = scrape.expect("scrape");
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");

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

    // The data plane is up: connections are listed live (none yet); those of an endpoint
    // that does not exist are neither listed nor terminated, with AWS's error code.
    let (code, out, err) = sluice(&config, &["describe-client-vpn-connections"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"Connections\": []"), "{out}");
    // Paged and filtered as AWS does it: 5 to 1,000 a page, only a token it gave goes on, and
    // only its own filters.
    let (code, out, err) = sluice(
        &config,
        &["describe-client-vpn-connections", "--max-results", "5"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("NextToken"), "{out}");
    let (code, out, err) = sluice(
        &config,
        &[
            "describe-client-vpn-connections",
            "--filters",
            "Name=username,Values=alice",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"Connections\": []"), "{out}");
    for (args, refused) in [
        (["--max-results", "4"], "--max-results"),
        (["--max-results", "1001"], "--max-results"),
        (["--next-token", "zz"], "InvalidPaginationToken"),
        (
            ["--filters", "Name=group-id,Values=x"],
            "connection-id, username",
        ),
    ] {
        let mut argv = vec!["describe-client-vpn-connections"];
        argv.extend(args);
        let (code, _, err) = sluice(&config, &argv);
        assert_eq!(code, 2, "{argv:?}");
        assert!(err.contains(refused), "{argv:?}: {err}");
    }
    let unknown = "cvpn-endpoint-0123456789abcdef0";
    let (code, _, err) = sluice(
        &config,
        &[
            "describe-client-vpn-connections",
            "--client-vpn-endpoint-id",
            unknown,
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("InvalidClientVpnEndpointId.NotFound"), "{err}");
    let (code, _, err) = sluice(
        &config,
        &[
            "terminate-client-vpn-connections",
            "--client-vpn-endpoint-id",
            unknown,
            "--connection-id",
            "cvpn-connection-0123456789abcdef0",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("InvalidClientVpnEndpointId.NotFound"), "{err}");

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
    // The file stays invalid until the daemon has handled the signal.
    daemon.await_condition("refusal of the SIGHUP reload", |d| {
        d.log().contains("reload (SIGHUP) refused")
    });
    std::fs::write(&config, &good).expect("write");
    let (code, out, err) = sluice(&config, &["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reloaded"), "{out}");

    signal(&daemon.child, rustix::process::Signal::TERM);
    let status = daemon.await_exit();
    let log = daemon.log();
    assert!(status.success(), "daemon exit: {status}\n{log}");
    wait_for(&socket, false);
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

/// A loopback port that was free a moment ago (bound to port 0, then released) for the metrics
/// endpoint. Another process can take it before the daemon binds it: `start_with_metrics`
/// starts the daemon again on another.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// How many ports `start_with_metrics` tries.
const METRICS_PORT_TRIES: usize = 5;

/// `sluice run` on the configuration `write_config` writes for a metrics port `pick` chose,
/// started when its admin socket is there (the daemon binds the metrics endpoint before it).
/// A daemon that exits because another process took the port between its pick and the bind
/// (its log names the address) is started again on the next port `pick` gives, a few times at
/// most; any other exit fails the test with the log. Returns the daemon and its port.
fn start_with_metrics(
    write_config: impl Fn(u16) -> PathBuf,
    socket: &Path,
    mut pick: impl FnMut() -> u16,
) -> (Daemon, u16) {
    let mut taken = Vec::new();
    for _ in 0..METRICS_PORT_TRIES {
        let port = pick();
        let mut daemon = Daemon::start(&write_config(port));
        let deadline = Instant::now() + PATIENCE;
        loop {
            if socket.exists() {
                return (daemon, port);
            }
            if let Some(status) = daemon.child.try_wait().expect("try_wait") {
                daemon.join_reader();
                let log = daemon.log();
                assert!(
                    log.contains(&format!("binding the metrics endpoint 127.0.0.1:{port}: ")),
                    "sluice run exited ({status}) before its admin socket was there:\n{log}"
                );
                taken.push(port);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no admin socket within {PATIENCE:?}; the daemon's log:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("the metrics ports {taken:?} were each taken before the daemon could bind them");
}

/// Writes `config`: a daemon with no data plane whose metrics endpoint is 127.0.0.1:`port`;
/// returns its path (for `start_with_metrics`).
fn metrics_only_config(config: &Path, socket: &Path, state: &Path, port: u16) -> PathBuf {
    std::fs::write(
        config,
        format!(
            "[appliance]\nadmin_socket = \"{}\"\nstate_dir = \"{}\"\nmetrics_address = \"127.0.0.1:{port}\"\n",
            socket.display(),
            state.display(),
        ),
    )
    .expect("write config");
    config.to_path_buf()
}

/// A metrics port another process takes between its pick and the daemon's bind costs a
/// restart on another port, not the test (`start_with_metrics`).
#[test]
fn a_metrics_port_taken_before_the_bind_is_picked_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    let config = d.join("sluice.toml");
    let write_config = |port: u16| metrics_only_config(&config, &socket, &d.join("state"), port);
    // The first port picked is taken by the time the daemon binds it.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr").port();
    let mut picks = vec![taken, free_port()].into_iter();
    let (daemon, port) = start_with_metrics(write_config, &socket, || {
        picks.next().expect("a port to pick")
    });
    assert_ne!(port, taken);
    let scrape = http_get(port).expect("a scrape");
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
    drop(daemon);
    drop(squatter);
}

/// `GET /metrics`, with every step bounded.
fn http_get(port: u16) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let timeout = Some(Duration::from_secs(5));
    let mut s = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )?;
    s.set_read_timeout(timeout)?;
    s.set_write_timeout(timeout)?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A PKI made once per run of this test binary (easy-rsa takes a few seconds).
fn pki() -> &'static Path {
    static PKI: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    sluice_tests::pki_once(&PKI, || {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("daemon-pki")
    })
}

/// A configuration without a data plane (so no DPDK), its socket and state under `dir`.
fn plain_config(dir: &Path, name: &str, socket: &Path) -> PathBuf {
    let config = dir.join(name);
    std::fs::write(
        &config,
        format!(
            "[appliance]\nadmin_socket = \"{}\"\nstate_dir = \"{}\"\nmetrics_address = \"\"\n",
            socket.display(),
            dir.join(format!("state-{name}")).display(),
        ),
    )
    .expect("write config");
    config
}

/// `sluice run` on `config` without a data plane, in the working directory `cwd`, once it has
/// started: its admin socket is there and it said so. (The socket appears before the daemon
/// has made its event loop: a test that counts the daemon's descriptors, or signals it, from
/// the socket's appearance alone would race the last steps of its start.)
fn start_plain(config: &Path, socket: &Path, cwd: &Path) -> Daemon {
    let mut daemon = Daemon::start_in(config, Some(cwd));
    daemon.await_condition("its start", |d| {
        socket.exists() && d.log().contains(" sluice: started with ")
    });
    daemon
}

/// `sluice ARGS --config CONFIG` run in the working directory `cwd`.
fn sluice_in(cwd: &Path, config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(cwd)
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The arguments of a `create-client-vpn-endpoint` with the server certificate, key and client
/// root CA at these paths (as given: relative ones stay relative).
fn create_args(cert: &str, key: &str, ca: &str, log: &str) -> Vec<String> {
    [
        "create-client-vpn-endpoint",
        "--client-cidr-block",
        "10.200.0.0/20",
        "--server-certificate-arn",
        cert,
        "--server-key",
        key,
        "--authentication-options",
        &format!(
            "Type=certificate-authentication,MutualAuthentication={{ClientRootCertificateChainArn={ca}}}"
        ),
        "--connection-log-options",
        &format!("Enabled=true,LogPath={log}"),
        "--dns-name",
        "vpn.example.internal",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn endpoint_count(config: &Path) -> usize {
    std::fs::read_to_string(config)
        .expect("read config")
        .matches("[[endpoint]]")
        .count()
}

/// A request the daemon took but did not answer is an error, never applied again offline; only
/// a socket with no daemon behind it sends the verb to the file.
#[test]
fn a_request_taken_but_not_answered_is_not_applied_again_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    let config = plain_config(d, "sluice.toml", &socket);
    let pki = pki();
    let create = create_args(
        &pki.join("server.crt").to_string_lossy(),
        &pki.join("server.key").to_string_lossy(),
        &pki.join("ca.crt").to_string_lossy(),
        &d.join("ep.log").to_string_lossy(),
    );

    // No socket: the verb works on the file.
    let (code, out, err) = sluice_in(d, &config, &["describe-client-vpn-endpoints"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"ClientVpnEndpoints\": []"), "{out}");

    // A listener that takes the request and closes without answering.
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let taker = std::thread::spawn(move || {
        use std::io::BufRead;
        let (s, _) = listener.accept().expect("accept");
        let mut line = String::new();
        std::io::BufReader::new(&s)
            .read_line(&mut line)
            .expect("read request");
        line
    });
    let (code, _, err) = sluice_in(d, &config, &strs(&create));
    let request = taker.join().expect("taker");
    assert!(request.contains("create-client-vpn-endpoint"), "{request}");
    assert_ne!(code, 0, "an unanswered request must fail: {err}");
    assert!(
        err.contains("the daemon did not answer; the change may or may not be in force"),
        "{err}"
    );
    assert_eq!(endpoint_count(&config), 0, "applied again offline");

    // The listener is closed here, but a process another test is starting at this moment may
    // still hold a copy of it (a child has the parent's descriptors from its fork until its
    // exec): a connection then waits in that copy's backlog and is reset when the copy goes,
    // which the CLI rightly takes for a daemon that took the request and did not answer. Wait
    // until no copy is left, so that nobody listens at all.
    let deadline = Instant::now() + PATIENCE;
    loop {
        match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(_) => assert!(
                Instant::now() < deadline,
                "a copy of the listener outlived it"
            ),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A socket file nobody listens on any more: no daemon, so the file is worked on again.
    let (code, _, err) = sluice_in(d, &config, &["describe-client-vpn-endpoints"]);
    assert_eq!(code, 0, "{err}");
}

/// A verb run with `--config OTHER` whose socket is the running daemon's is applied to OTHER,
/// never to the daemon's own file.
#[test]
fn a_verb_for_another_file_leaves_the_daemons_file_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    let config = plain_config(d, "sluice.toml", &socket);
    let scratch = plain_config(d, "scratch.toml", &socket);
    let _daemon = start_plain(&config, &socket, d);
    let before = std::fs::read_to_string(&config).expect("read");
    let pki = pki();
    let create = create_args(
        &pki.join("server.crt").to_string_lossy(),
        &pki.join("server.key").to_string_lossy(),
        &pki.join("ca.crt").to_string_lossy(),
        &d.join("ep.log").to_string_lossy(),
    );
    let (code, out, err) = sluice_in(d, &scratch, &strs(&create));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ClientVpnEndpointId"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&config).expect("read"),
        before,
        "the daemon's file was changed by a verb for another file"
    );
    assert_eq!(
        endpoint_count(&scratch),
        1,
        "the change goes to scratch.toml"
    );
    // The daemon's own file, named another way, is still served live.
    let sub = d.join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let (code, _, err) = sluice_in(&sub, Path::new("../sluice.toml"), &strs(&create));
    assert_eq!(code, 0, "{err}");
    assert_eq!(endpoint_count(&config), 1);
    let trail = std::fs::read_to_string(d.join("state-sluice.toml/audit.log")).expect("trail");
    assert!(
        trail.contains("\"eventName\":\"CreateClientVpnEndpoint\"")
            && trail.contains("\"type\":\"AdminSocket\""),
        "{trail}"
    );
    // `reload` names the daemon's file only.
    let (code, _, err) = sluice_in(d, &scratch, &["reload"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("runs on") && err.contains("not on") && err.contains("scratch.toml"),
        "{err}"
    );
}

/// Relative paths on the command line are the caller's, live as offline: the daemon (here in
/// another working directory) resolves them against the caller's working directory.
#[test]
fn relative_paths_are_the_callers_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let socket = d.join("admin.sock");
    let config = plain_config(d, "sluice.toml", &socket);
    let _daemon = start_plain(&config, &socket, &elsewhere);
    let pki = pki();
    let create = create_args("server.crt", "server.key", "ca.crt", "logs/ep.log");
    let (code, out, err) = sluice_in(pki, &config, &strs(&create));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    // Described through the daemon, which started without it: served after a restart.
    let (code, out, err) = sluice_in(pki, &config, &["describe-client-vpn-endpoints"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let status = &v["ClientVpnEndpoints"][0]["Status"];
    assert_eq!(status["Code"], "pending-associate", "{out}");
    assert_eq!(
        status["Message"], "created since the daemon started; served after a restart",
        "{out}"
    );
    let text = std::fs::read_to_string(&config).expect("read");
    for (name, path) in [
        ("server_certificate", pki.join("server.crt")),
        ("server_key", pki.join("server.key")),
        ("client_root_ca", pki.join("ca.crt")),
        ("path", pki.join("logs/ep.log")),
    ] {
        assert!(
            text.contains(&format!("{name} = \"{}\"", path.display())),
            "{name} is not {} in\n{text}",
            path.display()
        );
    }
    let (code, _, err) = sluice_in(
        pki,
        &config,
        &[
            "modify-client-vpn-endpoint",
            "--client-vpn-endpoint-id",
            &id,
            "--server-certificate-arn",
            "server-ec.crt",
            "--server-key",
            "server-ec.key",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&config).expect("read");
    assert!(
        text.contains(&format!(
            "server_certificate = \"{}\"",
            pki.join("server-ec.crt").display()
        )),
        "{text}"
    );
    let (code, _, err) = sluice_in(
        pki,
        &config,
        &[
            "import-client-vpn-client-certificate-revocation-list",
            "--client-vpn-endpoint-id",
            &id,
            "--certificate-revocation-list",
            "file://crl.pem",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, text, err) = sluice_in(
        pki,
        &config,
        &[
            "export-client-vpn-client-configuration",
            "--client-vpn-endpoint-id",
            &id,
            "--output",
            "text",
            "--client-certificate",
            "client1.crt",
            "--client-key",
            "client1.key",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("<cert>\n-----BEGIN CERTIFICATE-----"),
        "{text}"
    );
    // Every one of them went through the daemon.
    let trail = std::fs::read_to_string(d.join("state-sluice.toml/audit.log")).expect("trail");
    assert_eq!(
        trail.matches("\"type\":\"AdminSocket\"").count(),
        5,
        "{trail}"
    );
}

/// `sluice reload` against the running daemon is in the audit trail, allowed or refused.
#[test]
fn reload_over_the_socket_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    let config = plain_config(d, "sluice.toml", &socket);
    let _daemon = start_plain(&config, &socket, d);
    let (code, out, err) = sluice_in(d, &config, &["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reloaded"), "{out}");
    let good = std::fs::read_to_string(&config).expect("read");
    std::fs::write(&config, format!("bogus = true\n{good}")).expect("write");
    let (code, _, err) = sluice_in(d, &config, &["reload"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown field `bogus`"), "{err}");
    let trail = std::fs::read_to_string(d.join("state-sluice.toml/audit.log")).expect("trail");
    let reloads: Vec<serde_json::Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .filter(|e: &serde_json::Value| e["eventName"] == "Reload")
        .collect();
    assert_eq!(reloads.len(), 2, "{trail}");
    assert_eq!(reloads[0]["userIdentity"]["type"], "AdminSocket");
    assert!(reloads[0].get("errorCode").is_none(), "{}", reloads[0]);
    assert!(
        reloads[1]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("unknown field `bogus`")),
        "{}",
        reloads[1]
    );
}

/// The metrics endpoint is served off the control thread: peers of the metrics port that
/// connect and send nothing do not hold up the admin socket (nor handshakes, timers or
/// signals, which share the control thread with it).
#[test]
fn idle_metrics_peers_do_not_hold_up_the_admin_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    let config = d.join("sluice.toml");
    let write_config = |port: u16| metrics_only_config(&config, &socket, &d.join("state"), port);
    let (_daemon, port) = start_with_metrics(write_config, &socket, free_port);

    // Forty peers connect to the metrics port and say nothing. Served on the control thread,
    // each held it for 200 ms (8 s in all) before it came back to the admin socket.
    let idle: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (code, _, err) = sluice(&config, &["describe-client-vpn-endpoints"]);
    let took = t.elapsed();
    assert_eq!(code, 0, "{err}");
    assert!(
        took < Duration::from_secs(4),
        "an admin verb took {took:?} behind idle metrics peers"
    );

    // Scrapes are still answered, once the idle peers' time is up.
    drop(idle);
    let scrape = http_get(port).expect("a scrape");
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
}

/// Sends `request` (one line) on a new connection to the admin socket, shuts down the writing
/// side, as `socat` and `nc -N` do, and reads the answer (bounded).
fn call_half_closed(socket: &Path, request: &[u8]) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.write_all(request)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

/// A client that writes its request and at once shuts down its writing side still gets its
/// answer (the daemon used to see the end of file in the same read and close without one).
#[test]
fn a_request_followed_by_a_half_close_is_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    let config = plain_config(d, "sluice.toml", &socket);
    let _daemon = start_plain(&config, &socket, d);
    let answer = call_half_closed(
        &socket,
        b"{\"args\": [\"describe-client-vpn-endpoints\"]}\n",
    )
    .expect("an answer");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("one JSON answer");
    assert_eq!(v["exit"], 0, "{answer}");
    assert!(
        v["stdout"]
            .as_str()
            .is_some_and(|s| s.contains("\"ClientVpnEndpoints\": []")),
        "{answer}"
    );
    // Half a line, then the end: an error that says so, not silence.
    let answer = call_half_closed(&socket, b"{\"args\": [\"describe-client").expect("an answer");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("one JSON answer");
    assert_eq!(v["exit"], 2, "{answer}");
    assert!(
        v["stderr"]
            .as_str()
            .is_some_and(|s| s.contains("before the end of its line")),
        "{answer}"
    );
}

/// The descriptors the process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count()
}

/// A peer of the admin socket that sends nothing (or half a request) delays no one, is dropped
/// after a deadline of a few seconds with the reason in the log, and only so many are served at
/// once (the rest wait in the listener's backlog, served as others end).
#[test]
fn silent_admin_peers_are_dropped_after_a_deadline_and_bounded() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    let config = plain_config(d, "sluice.toml", &socket);
    let mut daemon = start_plain(&config, &socket, d);
    let pid = daemon.child.id();
    let baseline = open_fds(pid);

    // One peer says nothing, another sends half a request; other requests are answered at once.
    let connect = || {
        let s = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        s
    };
    let since = Instant::now();
    let mut silent = connect();
    let mut halfway = connect();
    halfway
        .write_all(b"{\"args\": [\"describe-cl")
        .expect("half a request");
    let (code, _, err) = sluice(&config, &["describe-client-vpn-endpoints"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        since.elapsed() < Duration::from_secs(2),
        "a request waited {:?} behind silent peers",
        since.elapsed()
    );
    // Both are closed (end of file, no answer) after the deadline.
    for peer in [&mut silent, &mut halfway] {
        let mut rest = Vec::new();
        let read = peer.read_to_end(&mut rest);
        assert!(
            read.is_ok() && rest.is_empty(),
            "a silent peer was not closed within {PATIENCE:?}: {read:?}; the daemon's log:\n{}",
            daemon.log()
        );
    }
    let took = since.elapsed();
    assert!(took >= Duration::from_secs(2), "closed after only {took:?}");
    daemon.await_condition("the reason in the log", |d| {
        d.log().matches("admin connection").count() >= 2
            && d.log().contains("dropped: no whole request within")
    });

    // Forty silent peers: no more than 32 are held at once.
    let crowd: Vec<_> = (0..40).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let held = open_fds(pid) - baseline;
    assert!(
        (1..=32).contains(&held),
        "{held} admin connections held at once"
    );
    // A request behind them waits its turn and is answered.
    let (code, _, err) = sluice(&config, &["describe-client-vpn-endpoints"]);
    assert_eq!(code, 0, "{err}");
    drop(crowd);
}

/// The `Reload` events of the audit trail at `trail`.
fn reload_events(trail: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(trail)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .filter(|e: &serde_json::Value| e["eventName"] == "Reload")
        .collect()
}

/// The question `daemon`, starting, asks whoever holds its admin socket's path (`holder`,
/// non-blocking), taken and left unanswered: the daemon waits in its start until it closes.
fn question_held(
    holder: &std::os::unix::net::UnixListener,
    daemon: &Daemon,
) -> std::os::unix::net::UnixStream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match holder.accept() {
            Ok((s, _)) => return s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no question from the daemon within {PATIENCE:?}; its log:\n{}",
                    daemon.log()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A SIGHUP that comes while the daemon is still starting (here while it asks whoever holds
/// its admin socket's path whether a daemon answers there) is a reload once it runs: it does
/// not end the daemon (SIGHUP's default action), nor is it lost.
#[test]
fn a_sighup_while_starting_is_a_reload_once_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    let config = plain_config(d, "sluice.toml", &socket);
    // Something at the socket's path takes the daemon's question and holds it unanswered: the
    // daemon waits in its start until the connection closes.
    let holder = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    holder.set_nonblocking(true).expect("nonblocking");
    let mut daemon = Daemon::start_in(&config, Some(d));
    let question = question_held(&holder, &daemon);
    signal(&daemon.child, rustix::process::Signal::HUP);
    // Unanswered: no daemon there after all, and it goes on starting.
    drop(question);
    drop(holder);
    daemon.await_condition("the SIGHUP reload", |d| {
        d.log().contains("(SIGHUP): 0 endpoint(s)")
    });
}

/// A SIGTERM or SIGINT that comes while the daemon is still starting, here while whatever holds
/// its admin socket's path keeps its question unanswered, ends the start at once, cleanly
/// (status 0, saying so): it used to take effect only once the start was over, a minute later
/// when the question timed out. Nothing of the start is left: the path is still the holder's.
#[test]
fn a_stop_signal_while_starting_ends_the_start_at_once() {
    for (sig, name) in [
        (rustix::process::Signal::TERM, "SIGTERM"),
        (rustix::process::Signal::INT, "SIGINT"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let socket = d.join("admin.sock");
        let config = plain_config(d, "sluice.toml", &socket);
        let holder = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        holder.set_nonblocking(true).expect("nonblocking");
        let mut daemon = Daemon::start_in(&config, Some(d));
        let question = question_held(&holder, &daemon);
        let sent = Instant::now();
        signal(&daemon.child, sig);
        // The question stays unanswered all along.
        let status = daemon.await_exit();
        let took = sent.elapsed();
        let log = daemon.log();
        assert_eq!(status.code(), Some(0), "{name}: {log}");
        assert!(
            took < Duration::from_secs(5),
            "{name}: the daemon took {took:?} to stop; its log:\n{log}"
        );
        assert!(
            log.contains(&format!(" sluice: stopped while starting ({name})")),
            "{name}: {log}"
        );
        assert!(!log.contains(" sluice: started with "), "{name}: {log}");
        assert!(
            std::fs::symlink_metadata(&socket).is_ok(),
            "{name}: the holder's socket was removed"
        );
        drop(question);
        drop(holder);
    }
}

/// Every reload leaves the same kind of record as one over the socket: a SIGHUP (with the
/// sending process), and `sluice reload` refused by the CLI itself (no daemon there, or one that
/// runs on another file).
#[test]
fn every_reload_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    let config = plain_config(d, "sluice.toml", &socket);
    let trail = d.join("state-sluice.toml/audit.log");

    // No daemon: refused, and on record with the local user.
    let (code, _, err) = sluice_in(d, &config, &["reload"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no sluice daemon answers"), "{err}");
    let events = reload_events(&trail);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0]["userIdentity"]["type"], "LocalUser",
        "{}",
        events[0]
    );
    assert_eq!(events[0]["errorCode"], "ReloadRefused", "{}", events[0]);
    assert!(
        events[0]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("no sluice daemon answers")),
        "{}",
        events[0]
    );

    // SIGHUP, applied then refused: on record with the signal and its sender.
    let mut daemon = start_plain(&config, &socket, d);
    signal(&daemon.child, rustix::process::Signal::HUP);
    daemon.await_condition("the SIGHUP reload", |d| {
        d.log().contains("(SIGHUP): 0 endpoint(s)")
    });
    let good = std::fs::read_to_string(&config).expect("read");
    std::fs::write(&config, format!("bogus = true\n{good}")).expect("write");
    signal(&daemon.child, rustix::process::Signal::HUP);
    daemon.await_condition("the refused SIGHUP reload", |d| {
        d.log().contains("reload (SIGHUP) refused")
    });
    let events = reload_events(&trail);
    assert_eq!(events.len(), 3, "{events:?}");
    for e in &events[1..] {
        assert_eq!(e["userIdentity"]["type"], "Signal", "{e}");
        assert_eq!(e["userIdentity"]["signal"], "SIGHUP", "{e}");
        assert_eq!(e["userIdentity"]["pid"], std::process::id(), "{e}");
    }
    assert!(events[1].get("errorCode").is_none(), "{}", events[1]);
    assert!(
        events[1]["responseElements"]["Message"]
            .as_str()
            .is_some_and(|m| m.contains("reloaded")),
        "{}",
        events[1]
    );
    assert_eq!(events[2]["errorCode"], "ReloadRefused", "{}", events[2]);
    assert!(
        events[2]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("unknown field `bogus`")),
        "{}",
        events[2]
    );
    std::fs::write(&config, &good).expect("write");

    // `reload` for another file: the daemon does not serve it, the CLI refuses it, on record in
    // that file's trail.
    let scratch = plain_config(d, "scratch.toml", &socket);
    let (code, _, err) = sluice_in(d, &scratch, &["reload"]);
    assert_eq!(code, 1, "{err}");
    let events = reload_events(&d.join("state-scratch.toml/audit.log"));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0]["userIdentity"]["type"], "LocalUser",
        "{}",
        events[0]
    );
    assert_eq!(events[0]["errorCode"], "ReloadRefused", "{}", events[0]);
    assert_eq!(
        reload_events(&trail).len(),
        3,
        "nothing more in the daemon's trail"
    );
}

/// A peer of the admin socket that takes a large answer slowly, each part well within the
/// deadline, is cut off at its lifetime (30 s from its acceptance) with the reason in the log,
/// rather than served for as long as it likes: it sees the end of the answer before all of it.
#[test]
fn a_slow_reader_of_a_large_answer_is_cut_off_at_its_lifetime() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    let config = plain_config(d, "sluice.toml", &socket);
    let pki = pki();
    let create = create_args("server.crt", "server.key", "ca.crt", "logs/ep.log");
    let (code, out, err) = sluice_in(pki, &config, &strs(&create));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let id = v["ClientVpnEndpointId"].as_str().expect("id").to_owned();
    // A hundred rules with long descriptions make the answer to
    // describe-client-vpn-authorization-rules some MiB: at the pace below it takes about a
    // minute to read whole.
    let mut text = std::fs::read_to_string(&config).expect("read");
    let description = "x".repeat(50_000);
    for i in 0..100 {
        text.push_str(&format!(
            "\n[[endpoint.authorization_rule]]\ndestination_cidr = \"10.{i}.0.0/16\"\n\
             authorize_all_groups = true\ndescription = \"{description}\"\n"
        ));
    }
    std::fs::write(&config, text).expect("write");
    let size = 100 * description.len();
    let mut daemon = start_plain(&config, &socket, d);

    let since = Instant::now();
    let mut peer = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    peer.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let request = serde_json::json!({
        "args": ["describe-client-vpn-authorization-rules", "--client-vpn-endpoint-id", id],
    });
    peer.write_all(format!("{request}\n").as_bytes())
        .expect("request");
    let cut = Arc::new(AtomicBool::new(false));
    let told = Arc::clone(&cut);
    // 32 KiB every 300 ms (about 100 KiB/s): the daemon's send buffer drains, and the daemon
    // writes the next part, every second or two, well within each 5 s deadline. Once the
    // daemon said it cut the peer off, the rest already sent is read at once, to the end.
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 << 10];
        let mut got = 0;
        while !told.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(300));
            match peer.read(&mut buf) {
                Ok(0) => return (got, Ok(())),
                Ok(n) => got += n,
                Err(e) => return (got, Err(e)),
            }
        }
        let mut rest = Vec::new();
        let ended = peer.read_to_end(&mut rest).map(|_| ());
        (got + rest.len(), ended)
    });
    // The lifetime, and time to spare; the whole answer takes longer at this pace.
    let give_up = since + Duration::from_secs(45);
    while !daemon
        .log()
        .contains("dropped: its answer not all read within its 30 s")
    {
        if Instant::now() >= give_up {
            cut.store(true, Ordering::Relaxed);
            let _ = reader.join();
            panic!(
                "a slow reader was not cut off within {:?}; the daemon's log:\n{}",
                since.elapsed(),
                daemon.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = since.elapsed();
    cut.store(true, Ordering::Relaxed);
    let (got, ended) = reader.join().expect("reader");
    assert!(
        took >= Duration::from_secs(30),
        "cut off after only {took:?}"
    );
    assert!(ended.is_ok(), "no end of the answer: {ended:?}");
    assert!(
        got < size,
        "the slow reader took the whole answer ({got} bytes)"
    );
    assert!(got > 1 << 20, "only {got} bytes were read before the cut");
    // Others are served meanwhile and after.
    let (code, _, err) = sluice(&config, &["describe-client-vpn-endpoints"]);
    assert_eq!(code, 0, "{err}");
    daemon.await_condition("still running", |_| true);
}

/// `sluice run` on a FIFO is refused at once, saying why: the daemon reads its file again at
/// every reload, and a FIFO, drained at the start, held the control thread at the first SIGHUP
/// until someone wrote to it again (no verb, no stop answered meanwhile). Nothing is left
/// behind.
#[test]
fn run_refuses_a_configuration_that_is_not_a_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    let plain = plain_config(d, "plain.toml", &socket);
    let text = std::fs::read(&plain).expect("read");
    let fifo = d.join("sluice.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    // One writer, once, as a shell's `cat plain.toml > sluice.fifo`: before the fix the daemon
    // started on what it wrote.
    let path = fifo.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = f.write_all(&text);
        }
    });
    let mut daemon = Daemon::start_in(&fifo, Some(d));
    let status = daemon.await_exit();
    assert_eq!(status.code(), Some(2), "{}", daemon.log());
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.starts_with("sluice run: "))
        .unwrap_or("");
    assert!(
        line.contains(&fifo.display().to_string()) && line.contains("not a regular file"),
        "{log}"
    );
    assert!(!socket.exists(), "nothing left behind");
    // The writer still waits for a reader: this one lets it end.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nonblock())
        .open(&fifo)
        .expect("open the FIFO to release the writer");
    writer.join().expect("writer");
}

/// O_NONBLOCK, for opening a FIFO without waiting for its other end.
fn libc_nonblock() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}
