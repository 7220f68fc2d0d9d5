//! The metrics endpoint is served off the control thread: peers of the metrics port that
//! connect and send nothing do not hold up the admin socket (nor handshakes, timers or
//! signals, which share the control thread with it).

// A process-level test waits on real time.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sluice(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn idle_metrics_peers_do_not_hold_up_the_admin_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let socket = d.join("admin.sock");
    // A free port for the metrics endpoint.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = d.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[appliance]\nadmin_socket = \"{}\"\nstate_dir = \"{}\"\nmetrics_address = \"127.0.0.1:{port}\"\n",
            socket.display(),
            d.join("state").display(),
        ),
    )
    .expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .expect("start daemon");
    let _daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the admin socket did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, err) = sluice(&config, &["validate"]);
    assert_eq!(code, 0, "{err}");

    // Forty peers connect to the metrics port and say nothing. Served on the control thread,
    // each held it for 200 ms (8 s in all) before it came back to the admin socket.
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (code, err) = sluice(&config, &["describe-client-vpn-endpoints"]);
    let took = t.elapsed();
    assert_eq!(code, 0, "{err}");
    assert!(
        took < Duration::from_secs(4),
        "an admin verb took {took:?} behind idle metrics peers"
    );

    // Scrapes are still answered, once the idle peers' time is up.
    drop(idle);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
}
