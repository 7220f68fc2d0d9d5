//! The kernel-UDP driver (`runtime::udp`) with real sockets and threads: its control thread
//! goes on serving clients while a password is checked on the checker threads
//! (`runtime::verifier`), as the daemon's does.

// A test over real sockets and the real clock.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sluice_control::auth::directory::{hash_password, UsersFileDirectory};
use sluice_control::auth::EndpointAuth;
use sluice_control::proto::client::Client;
use sluice_control::proto::server::{Event, Server, Settings};
use sluice_control::proto::tls::{server_config, TlsFiles};
use sluice_control::proto::verify::PasswordCheck;
use sluice_control::runtime::udp::UdpDriver;
use sluice_control::runtime::verifier::argon2_check;

fn pki() -> &'static Path {
    static PKI: OnceLock<PathBuf> = OnceLock::new();
    sluice_tests::pki_once(&PKI, || {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("udp-driver-pki")
    })
}

fn read(f: &str) -> Vec<u8> {
    std::fs::read(pki().join(f)).unwrap()
}

fn client_config() -> Arc<rustls::ClientConfig> {
    sluice_tests::tls_client(&read("ca.crt"), &read("client1.crt"), &read("client1.key"))
}

/// How long the check of the password `slow` takes (a directory that answers slowly, or a
/// flood of checks ahead of it).
const SLOW: Duration = Duration::from_secs(4);

fn slow_check(check: &PasswordCheck) -> bool {
    if check.password.expose() == "slow" {
        std::thread::sleep(SLOW);
    }
    argon2_check(check)
}

/// A client over its own UDP socket.
struct Peer {
    socket: UdpSocket,
    client: Client,
    connected_at: Option<Instant>,
}

impl Peer {
    fn new(server: std::net::SocketAddr, user: &str, password: &str, sid: u8) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(server).unwrap();
        socket.set_nonblocking(true).unwrap();
        let credentials = Some((user.to_owned(), password.to_owned()));
        let client = Client::new(client_config(), "server", [sid; 8], credentials).unwrap();
        Self {
            socket,
            client,
            connected_at: None,
        }
    }

    /// One exchange: what the client has to send, then what came back.
    fn step(&mut self) {
        let mut out = Vec::new();
        self.client.poll(Instant::now(), &mut out).unwrap();
        for d in out {
            self.socket.send(&d).unwrap();
        }
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let _ = self.client.handle(&buf[..n]);
        }
        if self.connected_at.is_none() && self.client.connected() {
            self.connected_at = Some(Instant::now());
        }
    }
}

/// Alice's password takes `SLOW` to check; bob, who comes after her, has his whole handshake
/// (TLS, key exchange, his own check, the push) done meanwhile, and alice is let in once hers
/// is done. Were the check run on the driver's thread, bob would wait for it.
#[test]
fn the_control_thread_serves_other_clients_while_a_password_is_checked() {
    let (chain, key, ca) = (read("server.crt"), read("server.key"), read("ca.crt"));
    let tls = server_config(&TlsFiles {
        server_chain_pem: &chain,
        server_key_pem: &key,
        client_ca_pem: Some(&ca),
        crl_pem: None,
    })
    .unwrap();
    let mut settings = Settings::new(0, tls, ("10.200.0.0".parse().unwrap(), 20));
    settings.password_required = true;
    let users = format!(
        "[[user]]\nname = \"alice\"\npassword_hash = \"{}\"\n\n[[user]]\nname = \"bob\"\npassword_hash = \"{}\"\n",
        hash_password("slow").unwrap(),
        hash_password("pw").unwrap()
    );
    let dir = UsersFileDirectory::parse(&users).unwrap();
    let server = Server::new(
        settings,
        EndpointAuth::new(false, Some(Box::new(dir)), false),
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let mut driver =
        UdpDriver::with_check(socket, server, Duration::from_secs(10), slow_check).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        driver
            .run_until(Instant::now() + Duration::from_secs(60), |_| {
                stopped.load(Ordering::Relaxed)
            })
            .unwrap();
        driver
    });
    let start = Instant::now();
    let mut alice = Peer::new(addr, "alice", "slow", 1);
    // Alice's key-method message reaches the server (a local handshake takes milliseconds).
    while start.elapsed() < Duration::from_secs(1) {
        alice.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut bob = Peer::new(addr, "bob", "pw", 2);
    while start.elapsed() < Duration::from_secs(30)
        && (alice.connected_at.is_none() || bob.connected_at.is_none())
    {
        alice.step();
        bob.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let mut driver = thread.join().unwrap();
    let (alice_in, bob_in) = (alice.connected_at.unwrap(), bob.connected_at.unwrap());
    assert!(
        bob_in < alice_in && bob_in - start < SLOW,
        "bob in after {:?}, alice after {:?}",
        bob_in - start,
        alice_in - start
    );
    assert!(alice_in - start >= SLOW);
    let keys = driver
        .events
        .iter()
        .filter(|e| matches!(e, Event::KeysReady { .. }))
        .count();
    assert_eq!(keys, 2);
    assert_eq!(driver.server_mut().counters().verifications, 2);
}
