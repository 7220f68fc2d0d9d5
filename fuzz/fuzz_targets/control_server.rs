//! The sans-IO control server (`proto::server`) fed a script: arbitrary datagrams from a few
//! peer addresses, and a real client (`proto::client`, TLS 1.3 and key method 2) whose
//! datagrams the script delivers, corrupts, truncates, duplicates, reorders, drops or sends
//! from another address; whose TLS plaintext it extends with bytes of its own or a key-method
//! message it edits (username, password, peer-info); whose control messages, renegotiations
//! and peer-info it chooses; and clock advances. Oracles: no panic; the server's timers stay
//! consistent (`check_timers`); sessions stay within the limits; one datagram makes a bounded
//! number of datagrams and events; and afterwards a real client at another address, left
//! alone on a clean link, still connects (nothing the fuzzed traffic did takes the server
//! from the clients it should serve).
#![no_main]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice_control::connlog::FailureReason;
use sluice_control::proto::client::Client;
use sluice_control::proto::key_method::Secret;
use sluice_control::proto::server::{Authenticator, Event, Server, Settings};
use sluice_control::proto::tls::{server_config, ServerTls, TlsFiles};
use sluice_control::proto::Remote;

const UNIX: u64 = 1_800_000_000;
const LOCAL: Remote = Remote {
    ip: 0xc0a8_3201,
    port: 1194,
};
const MAX_SESSIONS: usize = 4;
const MAX_HANDSHAKING: usize = 3;
/// What one datagram or timer turn may make the server send or say, at most: a reset's
/// answer, TLS flights (a certificate chain comes in a few datagrams), acks and the push.
const MAX_OUT_PER_STEP: usize = 64;

struct Pki {
    client: Arc<rustls::ClientConfig>,
    tls: ServerTls,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-pki");
        if !dir.join("server-p256.crt").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            sluice_tests::make_pki(&dir);
        }
        let read = |f: &str| std::fs::read(dir.join(f)).expect("PKI file");
        let tls = server_config(&TlsFiles {
            server_chain_pem: &read("server-p256.crt"),
            server_key_pem: &read("server-p256.key"),
            client_ca_pem: Some(&read("ca.crt")),
            crl_pem: Some(&read("crl.pem")),
        })
        .expect("server TLS");
        let client =
            sluice_tests::tls_client(&read("ca.crt"), &read("client1.crt"), &read("client1.key"));
        Pki { client, tls }
    })
}

/// Takes certificates, and a username with it only if it is `user` with the password `pass`;
/// the user's auth-tokens are good.
struct Users;

impl Authenticator for Users {
    fn authenticate(
        &mut self,
        _: u64,
        common_name: Option<&str>,
        username: Option<&str>,
        password: Option<&Secret>,
    ) -> Result<Vec<String>, FailureReason> {
        if common_name.is_none() {
            return Err(FailureReason::BadCertificate);
        }
        match (username, password) {
            (None, _) => Ok(Vec::new()),
            (Some("user"), Some(p)) if p.expose() == "pass" => Ok(vec!["staff".into()]),
            _ => Err(FailureReason::BadPassword),
        }
    }

    fn groups_of(&mut self, _: Option<&str>, username: &str) -> Result<Vec<String>, FailureReason> {
        match username {
            "user" => Ok(vec!["staff".into()]),
            _ => Err(FailureReason::BadPassword),
        }
    }

    fn password_hash(&mut self, username: &str) -> Option<String> {
        (username == "user").then(|| "$argon2id$fuzz".to_owned())
    }

    fn usernames(&mut self) -> Vec<String> {
        vec!["user".into()]
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (usize::from(self.byte()) % (max + 1)).min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        s.to_vec()
    }
}

struct World {
    server: Server<Users>,
    start: Instant,
    now: Instant,
    /// The client's datagrams not yet delivered (the script delivers, drops or alters them).
    up: VecDeque<Vec<u8>>,
    /// Every datagram the client sent, for replays.
    sent: Vec<Vec<u8>>,
    /// The server's datagrams to the client's address not yet delivered.
    down: VecDeque<Vec<u8>>,
}

impl World {
    fn unix(&self) -> u64 {
        UNIX + (self.now - self.start).as_secs()
    }

    fn send_to_server(&mut self, from: Remote, d: &[u8]) {
        let unix = self.unix();
        self.server.handle_datagram(self.now, unix, from, LOCAL, d);
        self.settle(from);
    }

    /// Checks the server after a step and collects what it sends to `client`.
    fn settle(&mut self, client: Remote) {
        if let Err(e) = self.server.check_timers() {
            panic!("timers: {e}");
        }
        let mut n = 0;
        while let Some(t) = self.server.poll_transmit() {
            n += 1;
            if t.remote == client && self.down.len() < 256 {
                self.down.push_back(t.payload);
            }
        }
        while let Some(e) = self.server.poll_event() {
            n += 1;
            if let Event::KeysReady { client: info, .. } = &e {
                assert!(!format!("{info:?}").contains("pass"));
            }
        }
        assert!(
            n <= MAX_OUT_PER_STEP,
            "{n} datagrams and events from one step"
        );
        let sessions = self.server.sessions().count();
        assert!(
            sessions <= MAX_SESSIONS + MAX_HANDSHAKING,
            "{sessions} sessions"
        );
    }

    fn advance(&mut self, by: Duration, client: Remote) {
        self.now += by;
        if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
        }
        self.settle(client);
    }
}

fn peer(i: u8) -> Remote {
    Remote {
        ip: 0x0a00_0000 | u32::from(i % 4),
        port: 40_000 + u16::from(i / 4 % 2),
    }
}

fuzz_target!(|data: &[u8]| {
    let pki = pki();
    let mut input = Input(data);
    let mut settings = Settings::new(0, pki.tls.clone(), ("10.200.0.0".parse().unwrap(), 24));
    settings.max_sessions = MAX_SESSIONS;
    settings.max_handshaking = MAX_HANDSHAKING;
    settings.hand_window = Duration::from_secs(10);
    // The harness is the server's shell: one clock reading as the start, then time moves only
    // as the script says.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut world = World {
        server: Server::new(settings, Users),
        start,
        now: start,
        up: VecDeque::new(),
        sent: Vec::new(),
        down: VecDeque::new(),
    };
    // The client of the script: its peer-info and credentials first.
    let header = input.byte();
    let credentials = match header & 3 {
        0 => None,
        1 => Some(("user".to_owned(), "pass".to_owned())),
        2 => Some(("user".to_owned(), "wrong".to_owned())),
        _ => Some((
            String::from_utf8_lossy(&input.bytes(16)).into_owned(),
            String::from_utf8_lossy(&input.bytes(16)).into_owned(),
        )),
    };
    let mut client = Client::new(
        Arc::clone(&pki.client),
        "server-p256",
        [0x11; 8],
        credentials,
    )
    .expect("client");
    if header & 4 != 0 {
        client.iv_proto = u32::from(input.byte()) << 2 | u32::from(input.byte());
        client.iv_mtu = (header & 8 != 0).then(|| u32::from(input.byte()) * 16);
        client.iv_ciphers = String::from_utf8_lossy(&input.bytes(48)).replace(['\n', '\0'], "");
    }
    client.push_request = header & 16 != 0;
    let home = peer(0);
    let mut out = Vec::new();
    let mut steps = 0;
    while !input.0.is_empty() && steps < 200 {
        steps += 1;
        match input.byte() % 16 {
            // The client's turn: what it has to send is queued.
            0 | 1 => {
                out.clear();
                if client.poll(world.now, &mut out).is_ok() {
                    for d in out.drain(..) {
                        if world.up.len() < 64 {
                            world.up.push_back(d.clone());
                        }
                        if world.sent.len() < 64 {
                            world.sent.push(d);
                        }
                    }
                }
            }
            // Its next datagram delivered.
            2 | 3 => {
                if let Some(d) = world.up.pop_front() {
                    world.send_to_server(home, &d);
                }
            }
            // The server's datagrams delivered to it (all, or the first dropped).
            4 | 5 => {
                if input.byte() & 1 == 0 {
                    world.down.pop_front();
                }
                while let Some(d) = world.down.pop_front() {
                    let _ = client.handle(&d);
                }
            }
            // Its next datagram corrupted or truncated.
            6 => {
                if let Some(mut d) = world.up.pop_front() {
                    let at = usize::from(input.byte());
                    let x = input.byte();
                    if x == 0 {
                        d.truncate(at);
                    } else if !d.is_empty() {
                        let at = at % d.len();
                        d[at] ^= x;
                    }
                    world.send_to_server(home, &d);
                }
            }
            // Dropped, duplicated, or swapped with the next.
            7 => match input.byte() % 3 {
                0 => {
                    world.up.pop_front();
                }
                1 => {
                    if let Some(d) = world.up.front().cloned() {
                        world.send_to_server(home, &d);
                    }
                }
                _ => {
                    if world.up.len() >= 2 {
                        world.up.swap(0, 1);
                    }
                }
            },
            // An earlier datagram of the client's again, from its address or another.
            8 => {
                let i = usize::from(input.byte());
                let from = peer(input.byte());
                if !world.sent.is_empty() {
                    let d = world.sent[i % world.sent.len()].clone();
                    world.send_to_server(from, &d);
                }
            }
            // A datagram of the fuzzer's own from one of the peers.
            9 | 10 => {
                let from = peer(input.byte());
                let d = input.bytes(255);
                world.send_to_server(from, &d);
            }
            // The clock moves on.
            11 => {
                let b = input.byte();
                let by = Duration::from_millis(u64::from(b) * u64::from(b) * 4);
                world.advance(by, home);
            }
            // TLS plaintext of the fuzzer's own from the client.
            12 => {
                let b = input.bytes(255);
                let _ = client.send_raw(&b);
            }
            // A key-method message of the client's, edited, from the client.
            13 => {
                let mut m = client.key_method_message();
                for _ in 0..(input.byte() % 4) {
                    let at = usize::from(input.byte()) << 1;
                    let x = input.byte();
                    let len = m.len();
                    match x % 3 {
                        0 => m.truncate(at % (len + 1)),
                        1 if len > 0 => m[at % len] ^= x,
                        1 => {}
                        _ => m.insert(at % (len + 1), x),
                    }
                }
                let _ = client.send_raw(&m);
            }
            // A control message of the fuzzer's own.
            14 => {
                let text = String::from_utf8_lossy(&input.bytes(64)).into_owned();
                let _ = client.send_message(&text);
            }
            // A renegotiation.
            _ => {
                let _ = client.renegotiate(input.byte() % 8);
            }
        }
    }

    // The fuzzed traffic's handshakes time out, then a client nobody touches connects from an
    // address of its own on a clean link.
    world.advance(Duration::from_secs(30), home);
    world.advance(Duration::from_secs(30), home);
    let fresh = Remote {
        ip: 0x0a00_0100,
        port: 50_000,
    };
    let mut good =
        Client::new(Arc::clone(&pki.client), "server-p256", [0x22; 8], None).expect("client");
    world.down.clear();
    for _ in 0..500 {
        out.clear();
        good.poll(world.now, &mut out).expect("the clean client");
        for d in out.drain(..) {
            world.send_to_server(fresh, &d);
        }
        world.advance(Duration::from_millis(10), fresh);
        while let Some(d) = world.down.pop_front() {
            good.handle(&d)
                .expect("the server's datagrams to the clean client");
        }
        if good.connected() {
            return;
        }
    }
    panic!(
        "a client left alone did not connect after the fuzzed traffic: {:?}",
        world.server.counters()
    );
});
