//! Deterministic simulation: the sans-IO server against a test client built from the same codec
//! and reliability layer plus a rustls client, over a link that loses, duplicates and reorders
//! datagrams, on a virtual clock. The handshake completes, both ends derive the same data keys,
//! and a client-initiated renegotiation installs a second key; for several seeds.

// A simulation harness: it unwraps freely and builds its virtual clock from one real instant.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sluice_control::auth::directory::{hash_matches, hash_password, UsersFileDirectory};
use sluice_control::auth::{totp, EndpointAuth};
use sluice_control::connlog::FailureReason;
use sluice_control::proto::client::Client;
use sluice_control::proto::key_method;
use sluice_control::proto::packet::{opcode, ControlPacket};
use sluice_control::proto::room::CoreRoom;
use sluice_control::proto::server::{
    peer_id_range, Authenticator, CertificateOnly, CloseReason, Event, Float, Server, Settings,
    MAX_HANDSHAKING_PER_SOURCE, MAX_VERIFYING, STOP_LINGER,
};
use sluice_control::proto::session::{KeyPhase, Phase};
use sluice_control::proto::tls::{server_config, ServerTls, TlsFiles};
use sluice_control::proto::verify::{Verdict, Verification};
use sluice_control::proto::Remote;

fn pki() -> &'static Path {
    static PKI: OnceLock<PathBuf> = OnceLock::new();
    sluice_tests::pki_once(&PKI, || {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-pki")
    })
}

fn read(f: &str) -> Vec<u8> {
    std::fs::read(pki().join(f)).unwrap()
}

fn client_config() -> Arc<rustls::ClientConfig> {
    sluice_tests::tls_client(&read("ca.crt"), &read("client1.crt"), &read("client1.key"))
}

/// A link that loses, duplicates and reorders.
struct Link {
    rng: StdRng,
    queue: VecDeque<(Instant, Vec<u8>)>,
    loss: f64,
    dup: f64,
    /// Datagrams it loses for certain, by their number (from 0) in what was sent.
    lose: Vec<usize>,
    sent: usize,
}

impl Link {
    fn new(seed: u64, loss: f64, dup: f64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            queue: VecDeque::new(),
            loss,
            dup,
            lose: Vec::new(),
            sent: 0,
        }
    }

    fn send(&mut self, now: Instant, d: Vec<u8>) {
        self.sent += 1;
        if self.lose.contains(&(self.sent - 1)) || self.rng.gen_bool(self.loss) {
            return;
        }
        let copies = if self.rng.gen_bool(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = Duration::from_millis(self.rng.gen_range(5..300));
            self.queue.push_back((now + delay, d.clone()));
        }
    }

    fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let (ready, later): (Vec<_>, Vec<_>) = self.queue.drain(..).partition(|(t, _)| *t <= now);
        self.queue = later.into();
        ready.into_iter().map(|(_, d)| d).collect()
    }
}

fn simulate(seed: u64, loss: f64, dup: f64) {
    simulate_with(seed, Link::new(seed, loss, dup), Scenario::default());
}

fn tls() -> ServerTls {
    tls_with_crl("crl.pem")
}

/// The server's TLS configuration with the CRL of file `crl` (`crl.pem` revokes client2,
/// `crl-all.pem` client1 too).
fn tls_with_crl(crl: &str) -> ServerTls {
    let (chain, key, ca, crl) = (
        read("server.crt"),
        read("server.key"),
        read("ca.crt"),
        read(crl),
    );
    server_config(&TlsFiles {
        server_chain_pem: &chain,
        server_key_pem: &key,
        client_ca_pem: Some(&ca),
        crl_pem: Some(&crl),
    })
    .unwrap()
}

/// What a simulation does besides the handshake and a renegotiation.
#[derive(Clone, Copy, Default)]
struct Scenario {
    /// Then the virtual clock jumps past this maximum session duration.
    session_timeout: Option<Duration>,
    /// The client's address changes once its first key is up (a NAT rebinding), the data
    /// plane reports the float (`Server::float`), and the renegotiation comes from there.
    float: bool,
    /// The server starts the renegotiation (`Settings::reneg`), not the client.
    server_renegotiates: bool,
}

/// Handshake and renegotiation, as `scenario` says.
/// `up` carries the client's datagrams; the way down is like it, without its certain losses.
fn simulate_with(seed: u64, mut up: Link, scenario: Scenario) {
    let Scenario {
        session_timeout,
        float,
        server_renegotiates,
    } = scenario;
    let tls = tls();
    let mut settings = Settings::new(0, tls, ("10.200.0.0".parse().unwrap(), 20));
    if let Some(t) = session_timeout {
        settings.session_timeout = t;
    }
    if server_renegotiates {
        settings.reneg = Some(Duration::from_secs(30));
    }
    // The second endpoint of three: its peer-ids come from its own part of the space.
    let peer_ids = peer_id_range(1, 3);
    settings.peer_ids = peer_ids.clone();
    let mut server = Server::new(settings, CertificateOnly);
    let mut sid = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut sid);
    let mut client = Client::new(client_config(), "server", sid, None).unwrap();
    let (mut c_addr, s_addr) = (
        Remote {
            ip: 0xc0a8_3202,
            port: 40000,
        },
        Remote {
            ip: 0xc0a8_3201,
            port: 1194,
        },
    );
    let mut down = Link::new(seed ^ 0x5eed, up.loss, up.dup);
    let start = Instant::now();
    let mut now = start;
    let mut server_keys = Vec::new();
    let mut renegotiated = false;
    let mut peer = u32::MAX;
    let mut peers_up = 0;
    while now < start + Duration::from_secs(240) {
        let mut out = Vec::new();
        client.poll(now, &mut out).unwrap();
        for d in out {
            up.send(now, d);
        }
        for d in up.due(now) {
            server.handle_datagram(now, 1_800_000_000, s_addr, c_addr, &[]); // a stray empty datagram is counted, not fatal
            server.handle_datagram(now, 1_800_000_000, c_addr, s_addr, &d);
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        // The timer index says what a scan of the sessions would.
        if let Err(e) = server.check_timers() {
            panic!("seed {seed}: {e}");
        }
        while let Some(t) = server.poll_transmit() {
            assert_eq!(t.remote, c_addr, "seed {seed}: to where the client is");
            down.send(now, t.payload);
        }
        while let Some(e) = server.poll_event() {
            match e {
                Event::KeysReady {
                    key_id,
                    keys,
                    peer_id,
                    ..
                } => {
                    assert!(peer_ids.contains(&peer_id), "peer-id {peer_id}");
                    server_keys.push((key_id, keys));
                    peer = peer_id;
                }
                Event::ControlPeer { remote, present } => {
                    // The session appears at the client's address (and moves with a float).
                    if present {
                        assert_eq!(remote, c_addr, "seed {seed}");
                    }
                    peers_up += usize::from(present);
                }
                other => panic!("seed {seed}: unexpected {other:?}"),
            }
        }
        for d in down.due(now) {
            client.handle(&d).unwrap();
        }
        if server_keys.len() == 1
            && !renegotiated
            && !server_renegotiates
            && client.messages.iter().any(|m| m.starts_with("PUSH_REPLY"))
        {
            client.renegotiate(1).unwrap();
            renegotiated = true;
            if float {
                c_addr.port += 1;
                assert_eq!(server.float(peer, c_addr, now), Float::Moved);
            }
        }
        if server_keys.len() == 2 && client.key_blocks.len() == 2 {
            break;
        }
        now += Duration::from_millis(50);
    }
    assert_eq!(
        server_keys.len(),
        2,
        "seed {seed}: handshake and renegotiation within 240 s of virtual time"
    );
    assert_eq!(
        peers_up,
        1 + usize::from(float),
        "seed {seed}: the cores are told"
    );
    assert!(
        client
            .messages
            .iter()
            .any(|m| m.starts_with("PUSH_REPLY,topology subnet")
                && m.contains("ifconfig 10.200.0.2 255.255.240.0")),
        "seed {seed}: {:?}",
        client.messages
    );
    // Both ends hold the same keys: the server decrypts with the client-to-server half.
    for ((sk_id, sk), (ck_id, kb)) in server_keys.iter().zip(&client.key_blocks) {
        assert_eq!(sk_id, ck_id);
        let expect = key_method::server_keys(sluice_engine::crypto::Cipher::Aes256Gcm, kb);
        assert_eq!(
            (sk.decrypt_key, sk.decrypt_iv, sk.encrypt_key, sk.encrypt_iv),
            (
                expect.decrypt_key,
                expect.decrypt_iv,
                expect.encrypt_key,
                expect.encrypt_iv
            ),
            "seed {seed}"
        );
    }
    assert!(
        server.counters().malformed > 0,
        "the stray datagrams were counted"
    );
    // Once the renegotiation is done, no timer is due until something is (no busy loop in
    // the runtime): a minute and more later, the next timeout is in the future.
    let quiet = now + Duration::from_secs(70);
    server.handle_timeout(quiet);
    assert!(
        server.poll_timeout().is_none_or(|t| t > quiet),
        "seed {seed}: a timer stays due: {:?}",
        server
            .poll_timeout()
            .map(|t| t.saturating_duration_since(start))
    );
    let Some(timeout) = session_timeout else {
        return;
    };
    // Past the maximum session duration: a RESTART message, then the session closes.
    now = start + timeout + Duration::from_secs(1);
    assert!(server.poll_timeout().is_some_and(|t| t <= now));
    server.handle_timeout(now);
    let mut closed = None;
    while let Some(e) = server.poll_event() {
        if let Event::Closed {
            reason,
            established,
            ..
        } = e
        {
            closed = Some((reason, established));
        }
    }
    assert_eq!(closed, Some((CloseReason::SessionTimeout, true)));
    while let Some(t) = server.poll_transmit() {
        client.handle(&t.payload).unwrap();
    }
    assert!(
        client
            .messages
            .iter()
            .any(|m| m == "RESTART,session timeout"),
        "{:?}",
        client.messages
    );
    // The session lingers a few seconds for acknowledgements, then is gone.
    server.handle_timeout(now + Duration::from_secs(10));
    assert_eq!(server.sessions().count(), 0);
    assert_eq!(server.poll_timeout(), None);
    server.check_timers().unwrap();
}

#[test]
fn clean_link() {
    simulate(1, 0.0, 0.0);
}

#[test]
fn lossy_duplicating_reordering_link() {
    for seed in 2..8 {
        simulate(seed, 0.2, 0.1);
    }
}

#[test]
fn session_timeout_disconnects() {
    simulate_with(
        9,
        Link::new(9, 0.0, 0.0),
        Scenario {
            session_timeout: Some(Duration::from_secs(8 * 3600)),
            ..Scenario::default()
        },
    );
}

/// The client's first datagram after our stateless answer (its first TLS record with the
/// acknowledgement that makes the session) is lost: the retransmission carries the
/// acknowledgement again, as OpenVPN 2.6 clients' do, and the handshake completes.
#[test]
fn the_lost_echo_comes_again() {
    let mut up = Link::new(10, 0.0, 0.0);
    up.lose = vec![1];
    simulate_with(10, up, Scenario::default());
}

/// The client's address changes after its first key (its NAT rebinds) and the data plane
/// reports the float: the renegotiation from the new address completes, and the server's
/// control packets go there.
#[test]
fn the_control_channel_follows_a_float() {
    let float = Scenario {
        float: true,
        ..Scenario::default()
    };
    simulate_with(11, Link::new(11, 0.0, 0.0), float);
    simulate_with(12, Link::new(12, 0.2, 0.1), float);
}

/// OpenVPN 2.6's float rule (`multi_process_float`): a session whose packets come from an
/// address another client's session holds (here alice's, forging bob's address, which any
/// user can: her packets are authenticated by her own key) does not take it. Bob's session
/// stays, alice's ends (the core has already moved hers). A session of the same client there
/// (the same user, connected again) is the one that ends, as before.
#[test]
fn a_float_onto_another_clients_address_ends_the_floater_not_the_other() {
    let mut rig = password_rig(&["alice", "bob"], false);
    let alice = rig.addr;
    rig.connect();
    let (client, bob) = password_client("bob", "pw", 2);
    rig.next_client(client, bob);
    rig.connect();
    let peer_at = |rig: &Rig<EndpointAuth>, addr: Remote| {
        let s = rig.server.sessions().find(|s| s.remote == addr);
        s.map(|s| (s.peer_id, s.phase.clone()))
    };
    let (Some((a, _)), Some((b, _))) = (peer_at(&rig, alice), peer_at(&rig, bob)) else {
        panic!("two sessions");
    };
    let now = rig.now;
    assert_eq!(rig.server.float(a, bob, now), Float::Refused);
    assert_eq!(peer_at(&rig, bob), Some((b, Phase::Established)));
    assert!(matches!(peer_at(&rig, alice), Some((p, Phase::Closing { .. })) if p == a));
    let closed: Vec<_> = std::iter::from_fn(|| rig.server.poll_event())
        .filter_map(|e| match e {
            Event::Closed {
                peer_id, reason, ..
            } => Some((peer_id, reason)),
            _ => None,
        })
        .collect();
    assert!(
        matches!(&closed[..], [(p, CloseReason::Terminated(_))] if *p == a),
        "{closed:?}"
    );
    assert_eq!(rig.server.counters().floats_refused, 1);

    // Bob connects again from another address: his session there floats onto his old one's.
    let (client, again) = password_client("bob", "pw", 3);
    rig.next_client(client, again);
    rig.connect();
    let Some((b2, _)) = peer_at(&rig, again) else {
        panic!("bob's second session");
    };
    let now = rig.now;
    assert_eq!(rig.server.float(b2, bob, now), Float::Moved);
    assert_eq!(peer_at(&rig, bob), Some((b2, Phase::Established)));
    assert!(rig.server.sessions().all(|s| s.peer_id != b));
    assert_eq!(rig.server.counters().floats_refused, 1);
}

/// The server renegotiates a key once it is 30 s old (`Settings::reneg`, as OpenVPN's
/// server-side `reneg-sec`; the data plane asks the same way before a packet-id wraps): the
/// client answers the soft reset and both ends hold the same new key.
#[test]
fn the_server_renegotiates() {
    let server = Scenario {
        server_renegotiates: true,
        ..Scenario::default()
    };
    simulate_with(13, Link::new(13, 0.0, 0.0), server);
    simulate_with(14, Link::new(14, 0.2, 0.1), server);
}

fn hard_reset(sid: u8) -> Vec<u8> {
    let p = ControlPacket {
        opcode: opcode::HARD_RESET_CLIENT_V2,
        key_id: 0,
        session_id: client_sid(sid),
        acks: Default::default(),
        remote_session_id: None,
        msg_id: Some(0),
        payload: &[],
    };
    let mut d = Vec::new();
    p.encode(&mut d);
    d
}

fn client_sid(sid: u8) -> [u8; 8] {
    [sid | 1, 2, 3, 4, 5, 6, 7, 8]
}

/// The client's third step: the acknowledgement of the server's reset, echoing its session id.
fn echo(sid: u8, server_sid: [u8; 8]) -> Vec<u8> {
    let p = ControlPacket {
        opcode: opcode::ACK_V1,
        key_id: 0,
        session_id: client_sid(sid),
        acks: [0u32].into_iter().collect(),
        remote_session_id: Some(server_sid),
        msg_id: None,
        payload: &[],
    };
    let mut d = Vec::new();
    p.encode(&mut d);
    d
}

/// The server session ids of the stateless answers sent so far, checking each is one.
fn answers(server: &mut Server<CertificateOnly>) -> Vec<(Remote, [u8; 8])> {
    let mut v = Vec::new();
    while let Some(t) = server.poll_transmit() {
        let p = ControlPacket::parse(&t.payload).unwrap();
        assert_eq!(p.opcode, opcode::HARD_RESET_SERVER_V2);
        assert_eq!((p.acks.as_slice(), p.msg_id), (&[0u32][..], Some(0)));
        v.push((t.remote, p.session_id));
    }
    v
}

const LOCAL: Remote = Remote {
    ip: 0xc0a8_3201,
    port: 1194,
};
const UNIX: u64 = 1_800_000_000;

fn from(ip: u32, port: u16) -> Remote {
    Remote { ip, port }
}

/// A stopping server (`stop_admitting`) takes no new session: a first hard reset gets no
/// answer, the echo of an answer given before opens nothing, both counted; the session there
/// is stays. Found by the appliance end-to-end test of a restart: clients told to restart came
/// straight back to the stopping daemon, were taken, ended and told again, for all its linger.
#[test]
fn a_stopping_server_takes_no_new_session() {
    let mut server = Server::new(
        Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20)),
        CertificateOnly,
    );
    let now = Instant::now();
    let (one, two) = (from(0x0a00_0001, 40000), from(0x0a00_0002, 40000));
    for c in [one, two] {
        server.handle_datagram(now, UNIX, c, LOCAL, &hard_reset(5));
    }
    let [(_, ours_one), (_, ours_two)] = answers(&mut server)[..] else {
        panic!("two answers")
    };
    server.handle_datagram(now, UNIX, one, LOCAL, &echo(5, ours_one));
    assert_eq!(server.sessions().count(), 1);
    server.stop_admitting();
    server.handle_datagram(now, UNIX, from(0x0a00_0003, 40000), LOCAL, &hard_reset(5));
    assert!(server.poll_transmit().is_none(), "no answer");
    server.handle_datagram(now, UNIX, two, LOCAL, &echo(5, ours_two));
    assert_eq!(server.sessions().count(), 1, "no new session");
    assert_eq!(server.sessions().next().unwrap().client_sid, client_sid(5));
    assert_eq!(server.counters().stopping, 2);
    assert!(server.counters().refusals().contains(&("stopping", 2)));
}

/// A first hard reset makes no state, only the 26-byte answer; a session exists once the
/// client echoes the session id we gave, from the address we gave it to, within the handshake
/// window. A forged, misdirected or stale echo opens nothing.
#[test]
fn a_session_needs_the_echo_of_our_stateless_answer() {
    let mut server = Server::new(
        Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20)),
        CertificateOnly,
    );
    let now = Instant::now();
    let client = from(0x0a00_0001, 40000);
    server.handle_datagram(now, UNIX, client, LOCAL, &hard_reset(5));
    assert_eq!(server.sessions().count(), 0);
    assert_eq!(server.counters().stateless_resets, 1);
    let [(to, ours)] = answers(&mut server)[..] else {
        panic!("one answer")
    };
    assert_eq!(to, client);
    // A retransmitted reset gets the same id again (no state, same slot).
    server.handle_datagram(now, UNIX, client, LOCAL, &hard_reset(5));
    assert_eq!(answers(&mut server), vec![(client, ours)]);
    // Forged or misdirected echoes: another id, another port, another client session id.
    let mut forged = ours;
    forged[0] ^= 0x80;
    server.handle_datagram(now, UNIX, client, LOCAL, &echo(5, forged));
    server.handle_datagram(now, UNIX, from(0x0a00_0001, 40001), LOCAL, &echo(5, ours));
    server.handle_datagram(now, UNIX, client, LOCAL, &echo(7, ours));
    assert_eq!(server.counters().bad_session_id, 3);
    // Too late: the id is good for at least the handshake window, not half as long again.
    let stale = now + Duration::from_secs(90);
    server.handle_datagram(stale, UNIX, client, LOCAL, &echo(5, ours));
    assert_eq!(server.counters().bad_session_id, 4);
    assert_eq!(server.sessions().count(), 0);
    // The echo, in time: a session under our id, and nothing sent again (the reset is acked).
    server.handle_datagram(
        now + Duration::from_secs(59),
        UNIX,
        client,
        LOCAL,
        &echo(5, ours),
    );
    let s: Vec<_> = server.sessions().collect();
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].client_sid, s[0].server_sid), (client_sid(5), ours));
    assert!(server.poll_transmit().is_none());
    // A reset of another client session at the same address leaves this one alone until that
    // client echoes too.
    server.handle_datagram(now, UNIX, client, LOCAL, &hard_reset(9));
    let [(_, theirs)] = answers(&mut server)[..] else {
        panic!("one answer")
    };
    assert_eq!(server.sessions().next().unwrap().client_sid, client_sid(5));
    server.handle_datagram(now, UNIX, client, LOCAL, &echo(9, theirs));
    assert_eq!(
        server
            .sessions()
            .filter(|s| s.phase == Phase::Handshaking)
            .count(),
        1
    );
    assert_eq!(
        server
            .sessions()
            .find(|s| s.phase == Phase::Handshaking)
            .unwrap()
            .client_sid,
        client_sid(9)
    );
}

/// Spoofed resets from any number of addresses fill nothing: a real client still connects at
/// once, and each source gets at most its budget of answers.
#[test]
fn spoofed_resets_lock_no_one_out() {
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.max_handshaking = 3;
    settings.answers_per_source = (4, 0);
    let mut server = Server::new(settings, CertificateOnly);
    let now = Instant::now();
    for i in 0..20_000u32 {
        server.handle_datagram(
            now,
            UNIX,
            from(0x0b00_0000 + i, 1000),
            LOCAL,
            &hard_reset(i as u8),
        );
    }
    assert_eq!(server.sessions().count(), 0);
    assert_eq!(answers(&mut server).len(), 20_000);
    // One victim address: four answers, then silence.
    for port in 0..10 {
        server.handle_datagram(now, UNIX, from(0x0c00_0001, port), LOCAL, &hard_reset(3));
    }
    assert_eq!(answers(&mut server).len(), 4);
    assert_eq!(server.counters().answers_limited, 6);
    // A real client, meanwhile.
    let client = from(0x0a00_0001, 40000);
    server.handle_datagram(now, UNIX, client, LOCAL, &hard_reset(5));
    let [(_, ours)] = answers(&mut server)[..] else {
        panic!("one answer")
    };
    server.handle_datagram(now, UNIX, client, LOCAL, &echo(5, ours));
    assert_eq!(server.sessions().count(), 1);
}

/// Runs a client from `addr` against `server` on a clean link until the server decides: `Ok`
/// when it made the client's keys, the reason when it refused the client.
fn handshake(
    server: &mut Server<CertificateOnly>,
    addr: Remote,
    sid: u8,
) -> Result<(), FailureReason> {
    handshake_told(server, addr, sid).0.map(|_| ())
}

/// A first handshake of a client at `addr`: the server's decision (the peer-id it gave, or why
/// it refused) and the control messages the client received by two seconds after it.
fn handshake_told(
    server: &mut Server<CertificateOnly>,
    addr: Remote,
    sid: u8,
) -> (Result<u32, FailureReason>, Vec<String>) {
    handshake_as(server, addr, sid, |_| {})
}

/// `handshake_told` with a client that `setup` changed (say, the IV_PROTO bits it announces;
/// it starts as OpenVPN 2.6.14's).
fn handshake_as(
    server: &mut Server<CertificateOnly>,
    addr: Remote,
    sid: u8,
    setup: impl FnOnce(&mut Client),
) -> (Result<u32, FailureReason>, Vec<String>) {
    let mut client = Client::new(client_config(), "server", [sid; 8], None).unwrap();
    setup(&mut client);
    let start = Instant::now();
    let mut now = start;
    let mut decided: Option<(Result<u32, FailureReason>, Instant)> = None;
    while now < start + Duration::from_secs(60) {
        if decided
            .as_ref()
            .is_some_and(|(_, at)| now >= *at + Duration::from_secs(2))
        {
            break;
        }
        let mut out = Vec::new();
        client.poll(now, &mut out).unwrap();
        for d in out {
            server.handle_datagram(now, UNIX, addr, LOCAL, &d);
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        while let Some(t) = server.poll_transmit() {
            if t.remote == addr {
                // After a refusal the client may find the rest odd: only the server's word counts.
                let _ = client.handle(&t.payload);
            }
        }
        while let Some(e) = server.poll_event() {
            let verdict = match e {
                Event::KeysReady { peer_id, .. } => Ok(peer_id),
                Event::AuthFailed { reason, .. } => Err(reason),
                _ => continue,
            };
            decided.get_or_insert((verdict, now));
        }
        now += Duration::from_millis(10);
    }
    let Some((verdict, _)) = decided else {
        panic!("the server decided nothing about the client at {addr:?}");
    };
    (verdict, client.messages)
}

/// An endpoint's connection limit (`[limits] connections_per_target_network` for each target
/// network): the connection past it is refused; raised (a reload that associates a network),
/// the next one is taken.
#[test]
fn the_connection_limit_refuses_and_follows_a_reload() {
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.max_sessions = 1;
    let mut server = Server::new(settings, CertificateOnly);
    let limit = Err(FailureReason::SessionLimit);
    assert_eq!(handshake(&mut server, from(0x0a00_0001, 40000), 1), Ok(()));
    assert_eq!(handshake(&mut server, from(0x0a00_0002, 40000), 2), limit);
    server.set_max_sessions(2);
    assert_eq!(handshake(&mut server, from(0x0a00_0003, 40000), 3), Ok(()));
    assert_eq!(handshake(&mut server, from(0x0a00_0004, 40000), 4), limit);
    // Refused for want of room, a client that understands it is told to come back later
    // (an OpenVPN 2.6 client then retries after the backoff instead of exiting).
    let (verdict, told) = handshake_told(&mut server, from(0x0a00_0005, 40000), 5);
    assert_eq!(verdict.map(|_| ()), limit);
    assert!(
        told.iter()
            .any(|m| m == "AUTH_FAILED,TEMP[backoff 10]:connection limit reached"),
        "{told:?}"
    );
    // A client without IV_PROTO bit 8 (before 2.6) would give up on any AUTH_FAILED: it is
    // told to restart instead, and comes back by itself.
    let (verdict, told) = handshake_as(&mut server, from(0x0a00_0006, 40000), 6, |c| {
        c.iv_proto = 990 & !256;
    });
    assert_eq!(verdict.map(|_| ()), limit);
    assert!(
        told.iter().any(|m| m == "RESTART,connection limit reached")
            && !told.iter().any(|m| m.starts_with("AUTH_FAILED")),
        "{told:?}"
    );
    let counted = server.counters();
    assert_eq!((counted.refused_for_room, counted.auth_failures), (4, 4));
}

/// An endpoint with no target network (`pending-associate`: the runtime gives it no
/// connection at all) refuses a client with its own reason, in the connection log and to the
/// client, not as one over the connection limit; the client is told to come back later, and
/// once a network is associated (a reload raises the limit) the next one is taken.
#[test]
fn an_endpoint_without_target_network_refuses_with_its_own_reason() {
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.max_sessions = 0;
    let mut server = Server::new(settings, CertificateOnly);
    let (verdict, told) = handshake_told(&mut server, from(0x0a00_0001, 40000), 1);
    let reason = verdict.unwrap_err();
    assert_eq!(reason, FailureReason::NoTargetNetwork);
    // What the connection log's connection-attempt-failure-reason says.
    assert_eq!(
        reason.text(),
        "the endpoint has no target network associated"
    );
    assert!(
        told.iter()
            .any(|m| m == "AUTH_FAILED,TEMP[backoff 10]:the endpoint has no target network"),
        "{told:?}"
    );
    assert!(
        !told.iter().any(|m| m.contains("connection limit")),
        "{told:?}"
    );
    let (verdict, told) = handshake_as(&mut server, from(0x0a00_0002, 40000), 2, |c| {
        c.iv_proto = 990 & !256;
    });
    assert_eq!(verdict.map(|_| ()), Err(FailureReason::NoTargetNetwork));
    assert!(
        told.iter()
            .any(|m| m == "RESTART,the endpoint has no target network"),
        "{told:?}"
    );
    let counted = server.counters();
    assert_eq!((counted.refused_for_room, counted.auth_failures), (0, 2));
    server.set_max_sessions(1);
    assert_eq!(handshake(&mut server, from(0x0a00_0003, 40000), 3), Ok(()));
}

/// As OpenVPN 2.6's server (push.c): `tun-mtu` is pushed only to a client that announced
/// IV_MTU; a client before 2.6 announces none and would take the option as an error.
#[test]
fn tun_mtu_is_pushed_only_to_a_client_that_announced_iv_mtu() {
    let mut server = Server::new(
        Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20)),
        CertificateOnly,
    );
    let push = |told: &[String]| {
        told.iter()
            .find(|m| m.starts_with("PUSH_REPLY,"))
            .cloned()
            .unwrap_or_else(|| panic!("no PUSH_REPLY: {told:?}"))
    };
    let (verdict, told) = handshake_told(&mut server, from(0x0a00_0001, 40000), 1);
    assert!(verdict.is_ok());
    assert!(
        push(&told).split(',').any(|o| o == "tun-mtu 1500"),
        "{told:?}"
    );
    let (verdict, told) = handshake_as(&mut server, from(0x0a00_0002, 40000), 2, |c| {
        c.iv_mtu = None;
    });
    assert!(verdict.is_ok());
    assert!(!push(&told).contains("tun-mtu"), "{told:?}");
}

/// The data cores' room (`[dataplane] sessions_per_core`), shared by two endpoints' servers:
/// each session is placed on a core with room (its peer-id names the core), the one past the
/// last place is refused for now, and a place that frees is taken again.
#[test]
fn sessions_go_to_cores_with_room_and_wait_when_none_has_any() {
    let room = Arc::new(CoreRoom::new(2, 2));
    let server = |endpoint: u16, pool: &str| {
        let mut settings = Settings::new(endpoint, tls(), (pool.parse().unwrap(), 20));
        settings.peer_ids = peer_id_range(usize::from(endpoint), 2);
        settings.room = Some(Arc::clone(&room));
        Server::new(settings, CertificateOnly)
    };
    let (mut one, mut two) = (server(0, "10.200.0.0"), server(1, "10.201.0.0"));
    // The first endpoint's peer-ids come in turn (0, 1, 2, ...), so its first three sessions
    // would take two places on core 0; the third goes to core 1 instead.
    let mut peers = Vec::new();
    for i in 0..3u8 {
        let (verdict, _) = handshake_told(&mut one, from(0x0a00_0001, 40000 + u16::from(i)), i);
        peers.push(verdict.unwrap());
    }
    let cores: Vec<usize> = peers.iter().map(|&p| room.core_of(p)).collect();
    assert_eq!(cores, [0, 1, 0], "peer-ids {peers:?}");
    assert_eq!((room.used(0), room.used(1)), (2, 1));
    // The other endpoint's server sees the same room: one place left, on core 1.
    let (last, _) = handshake_told(&mut two, from(0x0a00_0002, 40000), 9);
    let last = last.unwrap();
    assert_eq!(room.core_of(last), 1);
    assert!(peer_id_range(1, 2).contains(&last));
    // Full: refused for now, and the client is told to come back.
    let (verdict, told) = handshake_told(&mut two, from(0x0a00_0002, 40001), 10);
    assert_eq!(verdict, Err(FailureReason::DataPlaneFull));
    assert!(
        told.iter()
            .any(|m| m == "AUTH_FAILED,TEMP[backoff 10]:connection limit reached"),
        "{told:?}"
    );
    assert_eq!((room.used(0), room.used(1)), (2, 2));
    assert_eq!(two.counters().refused_for_room, 1);
    // A session of core 0 ends: its place is the next one's.
    assert!(one.terminate(
        peers[0],
        "HALT",
        CloseReason::Terminated("by an administrator".into()),
        Instant::now()
    ));
    assert_eq!(room.used(0), 1);
    let (verdict, _) = handshake_told(&mut two, from(0x0a00_0002, 40002), 11);
    assert_eq!(room.core_of(verdict.unwrap()), 0);
    assert_eq!((room.used(0), room.used(1)), (2, 2));
    one.check_timers().unwrap();
    two.check_timers().unwrap();
}

/// Sessions go to the emptiest core even when their own peer-id's core has room, so that the
/// cores stay balanced as sessions come and go (the cores' work is their sessions' crypto).
#[test]
fn sessions_balance_the_cores() {
    let room = Arc::new(CoreRoom::new(2, 4));
    // Another endpoint's two sessions on core 1.
    let other = [room.take(1), room.take(1)];
    assert!(other.iter().all(Option::is_some));
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.peer_ids = 1..100;
    settings.room = Some(Arc::clone(&room));
    let mut server = Server::new(settings, CertificateOnly);
    let mut cores = Vec::new();
    for i in 0..4u8 {
        let (verdict, _) = handshake_told(&mut server, from(0x0a00_0001, 40000 + u16::from(i)), i);
        cores.push(room.core_of(verdict.unwrap()));
    }
    // The first three are handed peer-ids of core 1 (1, 3, 5: the ids between went to the
    // sessions that moved); the first two move to core 0, the emptier, and once the cores are
    // even each session keeps its own.
    assert_eq!(cores, [0, 0, 1, 0]);
    assert_eq!((room.used(0), room.used(1)), (3, 3));
    server.check_timers().unwrap();
}

/// The limits on real clients: new sessions per source, the cap on sessions in handshake and
/// the handshake deadline, each refusal counted; the slots come back once the deadline passes.
#[test]
fn limits_rate_handshake_cap_and_deadline() {
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.per_source = (2, 1);
    settings.max_handshaking = 3;
    let mut server = Server::new(settings, CertificateOnly);
    let now = Instant::now();
    let connect = |server: &mut Server<CertificateOnly>, at: Instant, who: Remote, sid: u8| {
        server.handle_datagram(at, UNIX, who, LOCAL, &hard_reset(sid));
        let [(_, ours)] = answers(server)[..] else {
            panic!("one answer")
        };
        server.handle_datagram(at, UNIX, who, LOCAL, &echo(sid, ours));
    };
    // One source: two new sessions, then the rate limit.
    for port in 40000..40003 {
        connect(&mut server, now, from(0x0a00_0001, port), port as u8);
    }
    assert_eq!(server.counters().rate_limited, 1);
    assert_eq!(server.sessions().count(), 2);
    // Other sources: one more fits under the cap of three, the next is refused.
    connect(&mut server, now, from(0x0a00_0002, 1), 1);
    connect(&mut server, now, from(0x0a00_0003, 1), 1);
    assert_eq!(server.counters().handshake_cap, 1);
    assert_eq!(server.sessions().count(), 3);
    // Packets that are neither a first hard reset nor an echo open nothing.
    let mut stray = hard_reset(7);
    stray[0] = opcode::CONTROL_V1 << 3;
    server.handle_datagram(now, UNIX, from(0x0a00_0004, 1), LOCAL, &stray);
    assert_eq!(server.counters().unknown_session, 1);
    // The handshake deadline refuses the silent ones, and they are forgotten after lingering.
    let deadline = server.poll_timeout().unwrap();
    assert!(deadline <= now + Duration::from_secs(60));
    let later = now + Duration::from_secs(61);
    server.handle_timeout(later);
    let mut timeouts = 0;
    while let Some(e) = server.poll_event() {
        if let Event::AuthFailed {
            reason: FailureReason::HandshakeTimeout,
            ..
        } = e
        {
            timeouts += 1;
        }
    }
    assert_eq!(timeouts, 3);
    server.check_timers().unwrap();
    server.handle_timeout(later + Duration::from_secs(10));
    assert_eq!(server.sessions().count(), 0);
    server.check_timers().unwrap();
    while server.poll_transmit().is_some() {}
    connect(&mut server, later, from(0x0a00_0003, 2), 3);
    assert_eq!(server.sessions().count(), 1);
}

/// Random datagrams, and random mutations of valid ones, never panic the server, never
/// open more sessions than the caps allow, and are counted.
#[test]
fn garbage_never_panics_and_stays_bounded() {
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.max_handshaking = 16;
    let mut server = Server::new(settings, CertificateOnly);
    let local = LOCAL;
    let mut rng = StdRng::seed_from_u64(42);
    let start = Instant::now();
    let mut now = start;
    for i in 0..20_000u32 {
        let remote = Remote {
            ip: 0x0a00_0000 | rng.gen_range(0..64),
            port: rng.gen_range(1..4),
        };
        let mut d = if rng.gen_bool(0.3) {
            hard_reset(rng.gen())
        } else {
            let n = rng.gen_range(0..200);
            let mut v = vec![0u8; n];
            rng.fill_bytes(&mut v);
            v
        };
        if !d.is_empty() && rng.gen_bool(0.5) {
            let at = rng.gen_range(0..d.len());
            d[at] ^= rng.gen::<u8>() | 1;
        }
        server.handle_datagram(now, 1_800_000_000, remote, local, &d);
        if i % 100 == 0 {
            now += Duration::from_millis(700);
            server.handle_timeout(now);
        }
        if let Err(e) = server.check_timers() {
            panic!("after datagram {i}: {e}");
        }
        while server.poll_transmit().is_some() {}
        while server.poll_event().is_some() {}
        assert!(server.sessions().count() <= 16 + 64 * 3);
    }
    let c = server.counters();
    assert!(c.malformed > 0 && c.unknown_session > 0, "{c:?}");
    assert_eq!(c.handshakes, 0);
}

/// One client and the server on a clean link, stepped on a virtual clock: what the client
/// sends reaches the server while `up` holds, what the server sends reaches the client while
/// `down` holds; the server's events are kept with the moment they came.
struct Rig<A: Authenticator> {
    server: Server<A>,
    client: Client,
    addr: Remote,
    start: Instant,
    now: Instant,
    up: bool,
    down: bool,
    events: Vec<(Instant, Event)>,
    /// The opcodes and key_ids of the server's datagrams, in order.
    sent: Vec<(u8, u8)>,
}

impl<A: Authenticator> Rig<A> {
    fn new(server: Server<A>, client: Client) -> Self {
        let start = Instant::now();
        Self {
            server,
            client,
            addr: from(0x0a00_0001, 40000),
            start,
            now: start,
            up: true,
            down: true,
            events: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Wall-clock seconds at the virtual `now`.
    fn unix(&self) -> u64 {
        UNIX + (self.now - self.start).as_secs()
    }

    /// One exchange at `now`, then the clock moves on by `dt`.
    fn step(&mut self, dt: Duration) {
        let mut out = Vec::new();
        self.client.poll(self.now, &mut out).unwrap();
        let unix = self.unix();
        for d in out.into_iter().filter(|_| self.up) {
            self.server
                .handle_datagram(self.now, unix, self.addr, LOCAL, &d);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
        }
        self.deliver();
        self.server.check_timers().unwrap();
        self.now += dt;
    }

    /// What the server has to send and say now: its datagrams to the client (while `down`)
    /// and its events.
    fn deliver(&mut self) {
        while let Some(t) = self.server.poll_transmit() {
            let p = ControlPacket::parse(&t.payload).unwrap();
            self.sent.push((p.opcode, p.key_id));
            if self.down && t.remote == self.addr {
                // After a refusal the client may find the rest odd: only the server's word
                // counts.
                let _ = self.client.handle(&t.payload);
            }
        }
        while let Some(e) = self.server.poll_event() {
            self.events.push((self.now, e));
        }
    }

    /// Steps of 10 ms until `done` holds, for `within` at most; whether it came to hold.
    fn run_until(&mut self, within: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let end = self.now + within;
        while self.now < end {
            self.step(Duration::from_millis(10));
            if done(self) {
                return true;
            }
        }
        false
    }

    /// The moment the server made the keys of `key_id`, if it did.
    fn keys_ready(&self, key_id: u8) -> Option<Instant> {
        self.events.iter().find_map(|(at, e)| match e {
            Event::KeysReady { key_id: k, .. } if *k == key_id => Some(*at),
            _ => None,
        })
    }

    /// The reasons of the server's refusals so far.
    fn refusals(&self) -> Vec<FailureReason> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::AuthFailed { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    /// Another client, at `addr`, takes the link (the server and its events stay).
    fn next_client(&mut self, client: Client, addr: Remote) {
        self.client = client;
        self.addr = addr;
    }

    /// The push the client received, its parts joined.
    fn pushed(&self) -> String {
        let parts: Vec<&str> = self
            .client
            .messages
            .iter()
            .filter(|m| m.starts_with("PUSH_REPLY"))
            .map(String::as_str)
            .collect();
        parts.join(",")
    }

    /// The one session's key states: (key_id, phase), oldest first.
    fn keys(&self) -> Vec<(u8, KeyPhase)> {
        let s = self.server.sessions().next().unwrap();
        s.keys.iter().map(|k| (k.key_id, k.phase)).collect()
    }

    /// Connects the client: its first key made and pushed.
    fn connect(&mut self) {
        assert!(
            self.run_until(Duration::from_secs(30), |r| r.client.connected()),
            "connected: {:?}",
            self.refusals()
        );
    }

    /// The client renegotiates `key_id` to the end: the server made the keys and the client
    /// has them too.
    fn renegotiate(&mut self, key_id: u8) -> Instant {
        self.client.renegotiate(key_id).unwrap();
        let blocks = self.client.key_blocks.len();
        assert!(
            self.run_until(Duration::from_secs(30), |r| {
                r.keys_ready(key_id).is_some() && r.client.key_blocks.len() > blocks
            }),
            "renegotiation of key {key_id}: {:?}",
            self.refusals()
        );
        self.keys_ready(key_id).unwrap()
    }
}

fn certificate_client(sid: u8) -> Client {
    Client::new(client_config(), "server", [sid; 8], None).unwrap()
}

/// A server of the lab's TLS for certificates only, and a certificate client of session id
/// `sid`, on a clean link.
fn certificate_rig(sid: u8) -> Rig<CertificateOnly> {
    let server = Server::new(
        Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20)),
        CertificateOnly,
    );
    Rig::new(server, certificate_client(sid))
}

/// OpenVPN 2.6 clients renegotiate every hour (`reneg-sec 3600`), and the previous key is
/// retired an hour (the transition window) after a renegotiation completes: a client's soft
/// reset lands just before the retirement as a matter of course. The retirement takes the
/// previous key, never the active one beneath the new negotiation; when that negotiation
/// then fails, it is abandoned, the session goes on with its active key, no timer stays due,
/// and the client's next renegotiation is taken.
#[test]
fn a_renegotiation_at_the_retirement_of_the_previous_key_keeps_the_active_key() {
    let mut rig = certificate_rig(1);
    rig.connect();
    rig.now += Duration::from_secs(3590);
    let t1 = rig.renegotiate(1);
    assert_eq!(rig.keys(), [(0, KeyPhase::Active), (1, KeyPhase::Active)]);
    // Half a second before key 0 is retired, the client's soft reset for key 2 arrives, then
    // nothing more from the client.
    rig.now = t1 + Duration::from_millis(3_599_500);
    rig.client.renegotiate(2).unwrap();
    rig.step(Duration::from_millis(10));
    assert_eq!(
        rig.keys(),
        [(1, KeyPhase::Active), (2, KeyPhase::Tls)],
        "the soft reset was taken"
    );
    rig.up = false;
    let retired = |r: &Rig<CertificateOnly>| {
        r.events
            .iter()
            .any(|(_, e)| matches!(e, Event::RetirePreviousKey { .. }))
    };
    assert!(rig.run_until(Duration::from_secs(2), retired));
    assert_eq!(
        rig.keys(),
        [(1, KeyPhase::Active), (2, KeyPhase::Tls)],
        "the retirement leaves the active key"
    );
    while rig.now < t1 + Duration::from_secs(3600 + 120) {
        rig.step(Duration::from_millis(100));
    }
    assert_eq!(
        rig.keys(),
        [(1, KeyPhase::Active)],
        "the failed renegotiation was abandoned"
    );
    assert!(
        rig.server.poll_timeout().is_some_and(|t| t > rig.now),
        "a timer stays due: {:?}",
        rig.server
            .poll_timeout()
            .map(|t| t.checked_duration_since(rig.now))
    );
    let closed = rig
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::Closed { .. }));
    assert!(!closed, "the session goes on");
    // The client comes back and renegotiates again: taken.
    rig.up = true;
    rig.renegotiate(3);
    assert_eq!(rig.keys(), [(1, KeyPhase::Active), (3, KeyPhase::Active)]);
    assert!(rig.refusals().is_empty(), "{:?}", rig.refusals());
}

/// A client's soft reset starts a renegotiation only under the next key_id of the cycle
/// (1 to 7 after 0, never 0 again; OpenVPN 2.6's ssl.c drops any other as "key IDs out of
/// sync"): one under another key_id is ignored and counted, and the session goes on and takes
/// the next one. A negotiation abandoned still used its key_id: the server's own next
/// renegotiation comes under the one after, as an OpenVPN client, whose counter moved on too,
/// expects.
#[test]
fn a_soft_reset_under_an_unexpected_key_id_is_ignored() {
    let mut rig = certificate_rig(3);
    rig.connect();
    rig.run_until(Duration::from_secs(1), |_| false);
    let misbehaved = rig.server.counters().misbehaved;
    rig.client.renegotiate(3).unwrap();
    rig.run_until(Duration::from_secs(2), |_| false);
    assert_eq!(
        rig.keys(),
        [(0, KeyPhase::Active)],
        "no key state for key_id 3"
    );
    assert!(rig.server.counters().misbehaved > misbehaved, "counted");
    assert!(rig.refusals().is_empty(), "{:?}", rig.refusals());
    let closed = |r: &Rig<CertificateOnly>| {
        r.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Closed { .. }))
    };
    assert!(!closed(&rig), "the session goes on");
    // The client's renegotiation under key_id 1 is taken.
    rig.renegotiate(1);
    assert_eq!(rig.keys(), [(0, KeyPhase::Active), (1, KeyPhase::Active)]);
    // The client's soft reset for key 2 is taken, then nothing more comes from it: the
    // negotiation is abandoned at the handshake window.
    rig.client.renegotiate(2).unwrap();
    rig.step(Duration::from_millis(10));
    assert_eq!(rig.keys().last(), Some(&(2, KeyPhase::Tls)));
    rig.up = false;
    rig.run_until(Duration::from_secs(70), |r| {
        r.keys().last().is_some_and(|k| k.0 == 1)
    });
    assert_eq!(rig.keys().last(), Some(&(1, KeyPhase::Active)), "abandoned");
    let peer = rig
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::KeysReady { peer_id, .. } => Some(*peer_id),
            _ => None,
        })
        .unwrap();
    rig.sent.clear();
    let now = rig.now;
    assert!(rig.server.renegotiate(peer, now));
    rig.deliver();
    assert!(
        rig.sent.contains(&(opcode::SOFT_RESET_V1, 3)),
        "the server's soft reset: {:?}",
        rig.sent
    );
    assert!(!closed(&rig), "the session goes on");
}

/// A client that exits says so on the data channel (OCC EXIT), and the data plane reports it:
/// its session ends with nothing sent to it (the runtime passes no message), as OpenVPN 2.6's
/// server closes such a client instance silently, rather than an empty control message the
/// client is gone for, retransmitted until the session is forgotten.
#[test]
fn a_client_that_exits_is_sent_nothing() {
    let mut rig = certificate_rig(4);
    rig.connect();
    rig.run_until(Duration::from_secs(1), |_| false);
    let peer = rig
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::KeysReady { peer_id, .. } => Some(*peer_id),
            _ => None,
        })
        .unwrap();
    let told = rig.client.messages.len();
    rig.sent.clear();
    let now = rig.now;
    assert!(rig.server.terminate(peer, "", CloseReason::ClientExit, now));
    rig.run_until(Duration::from_secs(3), |_| false);
    assert!(
        rig.events.iter().any(|(_, e)| matches!(
            e,
            Event::Closed {
                reason: CloseReason::ClientExit,
                ..
            }
        )),
        "the session ended"
    );
    assert_eq!(rig.client.messages[told..], [] as [String; 0]);
    assert!(
        !rig.sent.iter().any(|(op, _)| *op == opcode::CONTROL_V1),
        "no control message: {:?}",
        rig.sent
    );
}

/// The peer-id of the rig's session (its first keys).
fn peer_of(rig: &Rig<CertificateOnly>) -> u32 {
    rig.events
        .iter()
        .find_map(|(_, e)| match e {
            Event::KeysReady { peer_id, .. } => Some(*peer_id),
            _ => None,
        })
        .unwrap()
}

/// Whether the client was told `message`.
fn told(rig: &Rig<CertificateOnly>, message: &str) -> bool {
    rig.client.messages.iter().any(|m| m == message)
}

/// The RESTART the administrator's terminate sends (`terminate_by_admin`).
const ADMIN_RESTART: &str = "RESTART,terminated by an administrator";

/// The administrator terminates `peer`'s session now, as `terminate-client-vpn-connections`
/// does: the session closes with `ADMIN_RESTART` as its last message.
fn terminate_by_admin(rig: &mut Rig<CertificateOnly>, peer: u32) {
    let now = rig.now;
    assert!(rig.server.terminate(
        peer,
        ADMIN_RESTART,
        CloseReason::Terminated("by an administrator".into()),
        now,
    ));
}

/// The client was told `ADMIN_RESTART`, and the key exchange that carried it gave the data
/// plane no keys (the session's first exchange gave the only `KeysReady`).
fn assert_told_restart_without_new_keys(rig: &Rig<CertificateOnly>) {
    assert!(told(rig, ADMIN_RESTART), "{:?}", rig.client.messages);
    assert_eq!(
        rig.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::KeysReady { .. }))
            .count(),
        1,
        "no keys for the data plane from the exchange that carried the RESTART"
    );
}

/// An administrator ends a session while the client's renegotiation is in its handshake. The
/// client (as OpenVPN 2.6's: `Client::handle`) made the new key its primary when it sent its
/// soft reset, and drops what comes under the old key_id: the RESTART reaches it on the new
/// key, whose exchange the closing session completes (without new keys for the data plane),
/// and the session is forgotten soon after, not at the end of the handshake window.
#[test]
fn a_message_during_a_renegotiation_reaches_the_client() {
    let mut rig = certificate_rig(2);
    rig.connect();
    let peer = peer_of(&rig);
    rig.run_until(Duration::from_secs(1), |_| false);
    // The client's soft reset reaches the server and our answer reaches the client; nothing
    // of the client's TLS handshake does.
    rig.client.renegotiate(1).unwrap();
    rig.step(Duration::from_millis(10));
    assert_eq!(rig.keys(), [(0, KeyPhase::Active), (1, KeyPhase::Tls)]);
    assert!(rig.sent.contains(&(opcode::SOFT_RESET_V1, 1)));
    rig.up = false;
    terminate_by_admin(&mut rig, peer);
    rig.deliver();
    rig.up = true;
    rig.run_until(Duration::from_secs(3), |_| false);
    assert_told_restart_without_new_keys(&rig);
    rig.run_until(Duration::from_secs(3), |_| false);
    assert_eq!(
        rig.server.sessions().count(),
        0,
        "forgotten once all is acknowledged"
    );
}

/// An administrator ends a session as the client starts a renegotiation: the client's soft
/// reset is still on its way (found by the soak test: a terminate that met a `reneg-sec`
/// soft reset left the client waiting for its ping-restart, 60 s). The client already reads
/// the new key only and drops the RESTART sent under the old one; its soft reset, arriving at
/// the closing session, is answered, and the RESTART reaches it on the new key.
#[test]
fn a_message_as_the_clients_renegotiation_starts_reaches_the_client() {
    let mut rig = certificate_rig(3);
    rig.connect();
    let peer = peer_of(&rig);
    rig.run_until(Duration::from_secs(1), |_| false);
    rig.up = false;
    rig.client.renegotiate(1).unwrap();
    rig.step(Duration::from_millis(10));
    assert_eq!(
        rig.keys(),
        [(0, KeyPhase::Active)],
        "the soft reset is on its way"
    );
    terminate_by_admin(&mut rig, peer);
    rig.deliver();
    assert!(
        !told(&rig, ADMIN_RESTART),
        "the client drops what comes under the old key"
    );
    rig.up = true;
    rig.run_until(Duration::from_secs(8), |r| told(r, ADMIN_RESTART));
    assert_told_restart_without_new_keys(&rig);
}

/// The same when the server started the renegotiation: once its soft reset reached the client,
/// the client reads the new key only, and the RESTART reaches it there; when the soft reset
/// has not reached it yet, the client still reads the active key, and the RESTART reaches it
/// there first.
#[test]
fn a_message_during_a_renegotiation_of_the_server_reaches_the_client() {
    for soft_reset_reaches_the_client in [true, false] {
        let mut rig = certificate_rig(5);
        rig.connect();
        let peer = peer_of(&rig);
        rig.run_until(Duration::from_secs(1), |_| false);
        let now = rig.now;
        rig.up = false;
        rig.down = soft_reset_reaches_the_client;
        assert!(rig.server.renegotiate(peer, now));
        rig.step(Duration::from_millis(10));
        assert_eq!(rig.keys(), [(0, KeyPhase::Active), (1, KeyPhase::Tls)]);
        terminate_by_admin(&mut rig, peer);
        rig.deliver();
        (rig.up, rig.down) = (true, true);
        rig.run_until(Duration::from_secs(3), |r| told(r, ADMIN_RESTART));
        assert!(
            told(&rig, ADMIN_RESTART),
            "soft reset reached the client: {soft_reset_reaches_the_client}: {:?}",
            rig.client.messages
        );
    }
}

/// The TOTP secret of the users file below (RFC 6238's "12345678901234567890").
const TOTP_SECRET: &[u8] = b"12345678901234567890";

/// A directory authenticator of a users file with `names` (password `pw`, group `g`, the
/// TOTP secret above), asking for a one-time code if `mfa`.
fn users(names: &[&str], mfa: bool) -> EndpointAuth {
    let hash = hash_password("pw").unwrap();
    let text: String = names
        .iter()
        .map(|n| {
            format!(
                "[[user]]\nname = \"{n}\"\npassword_hash = \"{hash}\"\ngroups = [\"g\"]\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n"
            )
        })
        .collect();
    let dir = UsersFileDirectory::parse(&text).unwrap();
    EndpointAuth::new(false, Some(Box::new(dir)), mfa)
}

/// OpenVPN's static-challenge password: the password and the code at `unix`.
fn scrv1(password: &str, unix: u64) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let code = format!("{:06}", totp::code_at(TOTP_SECRET, unix / totp::STEP, 6));
    format!("SCRV1:{}:{}", b64.encode(password), b64.encode(code))
}

/// An MFA user's session gets an auth-token whether its PUSH_REPLY fits one message or is
/// continued (many routes), and the client's renegotiation an hour later, which carries the
/// token instead of the (by then stale) one-time code, is taken.
#[test]
fn an_mfa_user_gets_a_token_and_renegotiates_with_it_whatever_the_push_length() {
    for routes in [2u8, 30] {
        let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
        settings.password_required = true;
        settings.routes = Some(
            (0..routes)
                .map(|i| {
                    (
                        std::net::Ipv4Addr::new(10, i, 0, 0),
                        std::net::Ipv4Addr::new(255, 255, 0, 0),
                    )
                })
                .collect(),
        );
        let server = Server::new(settings, users(&["alice"], true));
        let credentials = ("alice".to_owned(), scrv1("pw", UNIX));
        let client = Client::new(client_config(), "server", [3; 8], Some(credentials)).unwrap();
        let mut rig = Rig::new(server, client);
        rig.connect();
        // Every part of the push came before the client counted itself connected; with 30
        // routes there are several.
        rig.run_until(Duration::from_secs(1), |_| false);
        let pushes: Vec<&String> = rig
            .client
            .messages
            .iter()
            .filter(|m| m.starts_with("PUSH_REPLY"))
            .collect();
        assert_eq!(pushes.len() > 1, routes == 30, "{pushes:?}");
        let tokens = pushes
            .iter()
            .flat_map(|m| m.split(','))
            .filter(|o| o.starts_with("auth-token "))
            .count();
        assert_eq!(tokens, 1, "{routes} routes: one auth-token pushed");
        rig.now += Duration::from_secs(3590);
        rig.renegotiate(1);
        assert!(
            rig.refusals().is_empty(),
            "{routes} routes: {:?}",
            rig.refusals()
        );
    }
}

/// A reload brings a CRL while a client's handshake is under way, after the server's first
/// flight and before the client's certificate: the certificate is verified again under the
/// new configuration before the client is authorised, so one the new CRL revokes is refused;
/// one it does not revoke connects.
#[test]
fn a_crl_loaded_during_a_handshake_applies_to_it() {
    for (crl, verdict) in [
        ("crl-all.pem", Some(FailureReason::CertificateRevoked)),
        ("crl.pem", None),
    ] {
        let mut rig = certificate_rig(4);
        assert!(rig.run_until(Duration::from_secs(5), |r| r
            .sent
            .contains(&(opcode::CONTROL_V1, 0))));
        assert!(
            rig.server
                .sessions()
                .all(|s| s.phase == Phase::Handshaking && s.identity.is_none()),
            "the client's certificate has not come yet"
        );
        let (now, unix) = (rig.now, rig.unix());
        rig.server.set_tls(tls_with_crl(crl), now, unix);
        rig.run_until(Duration::from_secs(10), |r| {
            r.keys_ready(0).is_some() || !r.refusals().is_empty()
        });
        match verdict {
            Some(reason) => {
                assert_eq!(rig.refusals(), [reason], "{crl}");
                assert!(rig.keys_ready(0).is_none(), "{crl}");
            }
            None => {
                assert!(rig.refusals().is_empty(), "{crl}: {:?}", rig.refusals());
                assert!(rig.keys_ready(0).is_some(), "{crl}");
            }
        }
    }
}

/// A reload gives the server new DNS servers and a new maximum session duration: a client
/// connecting afterwards is pushed the new DNS servers and gets the new duration; a session
/// connected before keeps what it had, as far as the `Server` goes (the runtime then ends the
/// connections of an endpoint whose DNS servers changed, as AWS resets them: `verdict`).
#[test]
fn new_dns_and_session_timeout_apply_to_the_next_connection() {
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.dns = vec!["10.0.0.2".parse().unwrap()];
    settings.session_timeout = Duration::from_secs(8 * 3600);
    let server = Server::new(settings, CertificateOnly);
    let mut rig = Rig::new(server, certificate_client(5));
    rig.connect();
    assert!(
        rig.pushed().contains(",dhcp-option DNS 10.0.0.2,"),
        "{}",
        rig.pushed()
    );
    let first = rig.keys_ready(0).unwrap();
    rig.server.set_dns(vec![
        "10.0.0.3".parse().unwrap(),
        "10.0.0.4".parse().unwrap(),
    ]);
    rig.server.set_session_timeout(Duration::from_secs(3600));
    rig.next_client(certificate_client(6), from(0x0a00_0002, 40000));
    rig.connect();
    let pushed = rig.pushed();
    assert!(
        pushed.contains(",dhcp-option DNS 10.0.0.3,dhcp-option DNS 10.0.0.4,")
            && !pushed.contains("10.0.0.2"),
        "{pushed}"
    );
    // An hour on, the second session ends; the first goes on to its eight hours.
    let second = rig
        .events
        .iter()
        .rev()
        .find_map(|(at, e)| matches!(e, Event::KeysReady { .. }).then_some(*at))
        .unwrap();
    assert!(second > first);
    rig.now = second + Duration::from_secs(3601);
    rig.step(Duration::from_millis(10));
    let timeouts = |r: &Rig<CertificateOnly>| {
        r.events
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    Event::Closed {
                        reason: CloseReason::SessionTimeout,
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(timeouts(&rig), 1);
    assert_eq!(
        rig.server
            .sessions()
            .filter(|s| s.phase == Phase::Established)
            .count(),
        1
    );
    rig.now = first + Duration::from_secs(8 * 3600 + 1);
    rig.step(Duration::from_millis(10));
    assert_eq!(timeouts(&rig), 2);
}

/// A reload gives the server a new users file: a user removed from it is refused at the
/// next connection (the others still connect), and a one-time code used just before the
/// reload is not accepted again after it.
#[test]
fn a_new_authenticator_refuses_a_removed_user_at_the_next_connection() {
    let connect = |rig: &mut Rig<EndpointAuth>, who: &str, password: String, n: u8| {
        let client = Client::new(
            client_config(),
            "server",
            [10 + n; 8],
            Some((who.to_owned(), password)),
        )
        .unwrap();
        rig.next_client(client, from(0x0a00_0010 + u32::from(n), 40000));
        let before = rig.events.len();
        rig.run_until(Duration::from_secs(10), |r| {
            r.events[before..]
                .iter()
                .any(|(_, e)| matches!(e, Event::KeysReady { .. } | Event::AuthFailed { .. }))
        });
        rig.events[before..].iter().find_map(|(_, e)| match e {
            Event::KeysReady { .. } => Some(Ok(())),
            Event::AuthFailed { reason, .. } => Some(Err(reason.clone())),
            _ => None,
        })
    };
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.password_required = true;
    let server = Server::new(settings, users(&["alice", "bob"], false));
    let mut rig = Rig::new(server, certificate_client(7));
    assert_eq!(connect(&mut rig, "bob", "pw".into(), 1), Some(Ok(())));
    rig.server
        .set_authenticator(users(&["alice"], false), rig.unix());
    assert_eq!(
        connect(&mut rig, "bob", "pw".into(), 2),
        Some(Err(FailureReason::BadPassword))
    );
    assert_eq!(connect(&mut rig, "alice", "pw".into(), 3), Some(Ok(())));
    // With one-time codes: the code alice used is refused after the reload as before it.
    rig.server
        .set_authenticator(users(&["alice"], true), rig.unix());
    let code = scrv1("pw", rig.unix());
    assert_eq!(connect(&mut rig, "alice", code.clone(), 4), Some(Ok(())));
    rig.server
        .set_authenticator(users(&["alice"], true), rig.unix());
    assert_eq!(
        connect(&mut rig, "alice", code, 5),
        Some(Err(FailureReason::MfaFailed))
    );
}

/// A client that connects again with the auth-token of its earlier connection (an OpenVPN 2.6
/// client keeps it across a restart of its connection: ping-restart, a new network) is taken
/// without its password or one-time code (its cached code is spent), with the same groups,
/// until the session timeout from its last authentication with them. The token of one user
/// is no good for another, nor for a user since removed from the directory.
#[test]
fn a_client_connecting_again_with_its_auth_token_needs_no_new_code() {
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.password_required = true;
    settings.session_timeout = Duration::from_secs(8 * 3600);
    let server = Server::new(settings, users(&["alice", "bob"], true));
    let first = Client::new(
        client_config(),
        "server",
        [3; 8],
        Some(("alice".to_owned(), scrv1("pw", UNIX))),
    )
    .unwrap();
    let mut rig = Rig::new(server, first);
    rig.connect();
    let token = rig
        .client
        .messages
        .iter()
        .flat_map(|m| m.split(','))
        .find_map(|o| o.strip_prefix("auth-token "))
        .expect("an auth-token pushed")
        .to_owned();
    let groups = |rig: &Rig<EndpointAuth>| {
        rig.events.iter().find_map(|(_, e)| match e {
            Event::KeysReady { client, .. } => Some(client.identity.groups.clone()),
            _ => None,
        })
    };
    assert_eq!(groups(&rig), Some(vec!["g".to_owned()]));

    // The same server, a new connection from another port after `after`, with `user` and
    // `password`: its refusals, and whether it got in.
    let mut port = 40000;
    let mut again = |rig: Rig<EndpointAuth>, user: &str, password: &str, after: Duration| {
        port += 1;
        let client = Client::new(
            client_config(),
            "server",
            [port as u8; 8],
            Some((user.to_owned(), password.to_owned())),
        )
        .unwrap();
        let mut next = Rig::new(rig.server, client);
        next.addr = from(0x0a00_0001, port);
        next.start = rig.start;
        next.now = rig.now + after;
        next.run_until(Duration::from_secs(30), |r| {
            r.client.connected() || !r.refusals().is_empty()
        });
        next
    };
    let mut rig = again(rig, "alice", &token, Duration::from_secs(60));
    assert!(rig.refusals().is_empty(), "{:?}", rig.refusals());
    assert!(rig.client.connected());
    assert_eq!(groups(&rig), Some(vec!["g".to_owned()]));
    // Its new connection has a token good as long as the first one's.
    assert!(rig
        .client
        .messages
        .iter()
        .any(|m| m.split(',').any(|o| o == format!("auth-token {token}"))));

    rig = again(rig, "bob", &token, Duration::from_secs(60));
    assert_eq!(
        rig.refusals(),
        [FailureReason::MfaFailed],
        "for bob, alice's token is a (bad) password"
    );
    rig = again(rig, "alice", &token, Duration::from_secs(8 * 3600));
    assert_eq!(
        rig.refusals(),
        [FailureReason::MfaFailed],
        "past the session timeout the token is a (bad) password"
    );
    rig.server
        .set_authenticator(users(&["bob"], true), rig.unix());
    rig.now = rig.start + Duration::from_secs(120);
    rig = again(rig, "alice", &token, Duration::ZERO);
    assert_eq!(
        rig.refusals(),
        [FailureReason::MfaFailed],
        "alice was removed: her token, bound to her hash, is a (bad) password"
    );
}

/// The guide lets the server certificate stand for the client root CA when one CA issued both:
/// a client root CA file that is the server's chain (its leaf, then the CA) lets the CA's
/// clients in, and does not make the server's leaf an issuer of client certificates (a
/// certificate signed with the server's key is refused).
#[test]
fn the_servers_chain_as_client_root_ca_trusts_its_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let chain_as_ca = [read("server.crt"), read("ca.crt")].concat();
    let tls = server_config(&TlsFiles {
        server_chain_pem: &read("server.crt"),
        server_key_pem: &read("server.key"),
        client_ca_pem: Some(&chain_as_ca),
        // No CRL: with one, webpki refuses a certificate whose issuer published none anyway.
        crl_pem: None,
    })
    .unwrap();
    // A client certificate whose issuer is the server's leaf, signed with the server's key.
    let ext = dir.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "extendedKeyUsage = clientAuth\nkeyUsage = digitalSignature\n",
    )
    .unwrap();
    let (csr, forged) = (dir.path().join("f.csr"), dir.path().join("f.crt"));
    let ok = Command::new("openssl")
        .args(["req", "-new", "-subj", "/CN=forged", "-key"])
        .arg(pki().join("client1.key"))
        .arg("-out")
        .arg(&csr)
        .status()
        .unwrap()
        .success()
        && Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(pki().join("server.crt"))
            .arg("-CAkey")
            .arg(pki().join("server.key"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&forged)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl made the forged certificate");
    let forged_client = sluice_tests::tls_client(
        &read("ca.crt"),
        &std::fs::read(&forged).unwrap(),
        &read("client1.key"),
    );
    for (client, admitted) in [(client_config(), true), (forged_client, false)] {
        let server = Server::new(
            Settings::new(0, tls.clone(), ("10.200.0.0".parse().unwrap(), 20)),
            CertificateOnly,
        );
        let mut rig = Rig::new(server, Client::new(client, "server", [7; 8], None).unwrap());
        rig.run_until(Duration::from_secs(10), |r| {
            r.keys_ready(0).is_some() || !r.refusals().is_empty()
        });
        if admitted {
            assert!(rig.refusals().is_empty(), "{:?}", rig.refusals());
            assert!(rig.keys_ready(0).is_some(), "the CA's client is let in");
        } else {
            assert_eq!(rig.refusals(), [FailureReason::BadCertificate]);
            assert!(
                rig.keys_ready(0).is_none(),
                "the server's leaf issues nothing"
            );
        }
    }
}

/// The password checks the server handed out so far (`set_verify_elsewhere`).
fn take_checks(rig: &mut Rig<EndpointAuth>) -> Vec<Verification> {
    std::iter::from_fn(|| rig.server.poll_verification()).collect()
}

/// Runs check `v` as the runtime's checkers do, and gives the server its verdict.
fn answer(rig: &mut Rig<EndpointAuth>, v: &Verification) {
    let verdict = if hash_matches(&v.check.hash, v.check.password.expose()) {
        Verdict::Matches
    } else {
        Verdict::DoesNotMatch
    };
    let unix = rig.unix();
    rig.server.verified(rig.now, unix, v.id, verdict);
    rig.deliver();
}

/// A client of alice's or bob's at address number `n`, with `password`.
fn password_client(who: &str, password: &str, n: u8) -> (Client, Remote) {
    let client = Client::new(
        client_config(),
        "server",
        [n; 8],
        Some((who.to_owned(), password.to_owned())),
    )
    .unwrap();
    (client, from(0x0a01_0000 + u32::from(n), 40000))
}

/// A server that asks users of `names` (all with password "pw", no one-time code) for their
/// password, its checks handed out if `elsewhere` (as the daemon runs them), and alice
/// (`password_client` 1) at its link.
fn password_rig(names: &[&str], elsewhere: bool) -> Rig<EndpointAuth> {
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.password_required = true;
    let mut server = Server::new(settings, users(names, false));
    server.set_verify_elsewhere(elsewhere);
    let (client, addr) = password_client("alice", "pw", 1);
    let mut rig = Rig::new(server, client);
    rig.addr = addr;
    rig
}

/// With password checks handed out (the daemon runs them on threads of their own, since each
/// takes tens of milliseconds of argon2 and the control thread serves every client): the
/// authentication waits for the verdict, the client's retransmissions meanwhile answered by
/// the reliability layer, and completes as before once it comes; a wrong password is refused;
/// a verdict for a session that went away (timeout, a restart at the same address) is
/// ignored, and one on a hash of an authenticator replaced since is not used; past
/// `MAX_VERIFYING` checks out, a client is refused for now, told to come back.
#[test]
fn password_checks_are_handed_out_and_their_verdicts_complete_the_authentication() {
    let mut rig = password_rig(&["alice", "bob"], true);
    // The key-method message is in: a check is handed out, and nothing is decided before its
    // verdict, however long it takes.
    assert!(
        rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
            == 1)
    );
    let checks = take_checks(&mut rig);
    assert_eq!(checks.len(), 1);
    rig.run_until(Duration::from_secs(5), |_| false);
    assert!(rig.keys_ready(0).is_none() && rig.refusals().is_empty());
    assert!(!rig.client.connected());
    assert!(
        take_checks(&mut rig).is_empty(),
        "retransmissions ask for nothing new"
    );
    answer(&mut rig, &checks[0]);
    assert!(rig.keys_ready(0).is_some(), "completed at the verdict");
    rig.connect();
    assert!(rig.pushed().contains("auth-token "), "{}", rig.pushed());
    let groups = rig.events.iter().find_map(|(_, e)| match e {
        Event::KeysReady { client, .. } => Some(client.identity.groups.clone()),
        _ => None,
    });
    assert_eq!(groups, Some(vec!["g".to_owned()]));
    assert_eq!(rig.server.verifications_out(), 0);

    // A renegotiation with the password (no auth-token) waits for its check too. One whose
    // verdict comes after its handshake window is abandoned: the late verdict neither
    // completes it nor ends the session, which goes on with its key; the next completes.
    rig.client.forget_auth_token();
    rig.client.renegotiate(1).unwrap();
    assert!(
        rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
            == 1)
    );
    let reneg = take_checks(&mut rig);
    rig.run_until(Duration::from_secs(61), |_| false);
    answer(&mut rig, &reneg[0]);
    assert!(rig.keys_ready(1).is_none());
    assert_eq!(rig.server.counters().stale_verdicts, 1);
    assert_eq!(rig.keys(), vec![(0, KeyPhase::Active)]);
    assert!(rig.refusals().is_empty(), "{:?}", rig.refusals());
    rig.client.renegotiate(2).unwrap();
    assert!(
        rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
            == 1)
    );
    let reneg = take_checks(&mut rig);
    answer(&mut rig, &reneg[0]);
    assert!(rig.keys_ready(2).is_some());

    // A wrong password: refused at its verdict.
    let (client, addr) = password_client("bob", "not pw", 2);
    rig.next_client(client, addr);
    assert!(
        rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
            == 1)
    );
    let checks = take_checks(&mut rig);
    assert!(rig.refusals().is_empty());
    answer(&mut rig, &checks[0]);
    assert_eq!(rig.refusals(), vec![FailureReason::BadPassword]);
    rig.run_until(Duration::from_secs(1), |_| false);
    assert!(rig.client.messages.iter().any(|m| m == "AUTH_FAILED"));

    // The session goes away while its check runs (its handshake window passes): the verdict,
    // a match, completes nothing.
    let (client, addr) = password_client("bob", "pw", 3);
    rig.next_client(client, addr);
    assert!(
        rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
            == 1)
    );
    let late = take_checks(&mut rig);
    rig.up = false;
    rig.run_until(Duration::from_secs(61), |r| r.refusals().len() == 2);
    assert_eq!(rig.refusals()[1], FailureReason::HandshakeTimeout);
    let handshakes = rig.server.counters().handshakes;
    answer(&mut rig, &late[0]);
    assert_eq!(rig.server.counters().handshakes, handshakes);
    assert_eq!(rig.server.counters().stale_verdicts, 2);
    rig.up = true;

    // The client at an address starts over while the check of its first session runs: that
    // verdict does not complete the new session, which waits for its own.
    let (client, addr) = password_client("bob", "pw", 4);
    rig.next_client(client, addr);
    assert!(
        rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
            == 1)
    );
    let first = take_checks(&mut rig);
    let (client, _) = password_client("bob", "pw", 5);
    rig.next_client(client, addr);
    assert!(
        rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
            == 2)
    );
    let second = take_checks(&mut rig);
    answer(&mut rig, &first[0]);
    assert_eq!(rig.server.counters().stale_verdicts, 3);
    assert_eq!(rig.server.counters().handshakes, handshakes);
    answer(&mut rig, &second[0]);
    assert_eq!(rig.server.counters().handshakes, handshakes + 1);
    rig.connect();

    // A reload while a check runs: bob is no longer in the users file. The verdict on his old
    // hash is not used; his credentials are checked again, under the new file, and refused.
    let (client, addr) = password_client("bob", "pw", 6);
    rig.next_client(client, addr);
    assert!(
        rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
            == 1)
    );
    let before_reload = take_checks(&mut rig);
    rig.server
        .set_authenticator(users(&["alice"], false), rig.unix());
    answer(&mut rig, &before_reload[0]);
    let again = take_checks(&mut rig);
    assert_eq!(
        again.len(),
        1,
        "checked again, an unknown name costing a check too"
    );
    assert_eq!(rig.server.counters().handshakes, handshakes + 1);
    answer(&mut rig, &again[0]);
    assert_eq!(rig.refusals().last(), Some(&FailureReason::BadPassword));

    // At most MAX_VERIFYING checks out: the next client is refused for now, told to come
    // back (a 2.6 client understands AUTH_FAILED,TEMP); so is one whose check could not be
    // run. Once a verdict is back there is room again.
    let mut waiting = Vec::new();
    for n in 0..=MAX_VERIFYING {
        let n = u8::try_from(n).unwrap();
        let (client, addr) = password_client("alice", "pw", 100 + n);
        rig.next_client(client, addr);
        let refused = rig.refusals().len();
        assert!(rig.run_until(Duration::from_secs(10), |r| {
            r.server.verifications_out() > waiting.len() || r.refusals().len() > refused
        }));
        waiting.extend(take_checks(&mut rig));
    }
    assert_eq!(waiting.len(), MAX_VERIFYING);
    assert_eq!(rig.refusals().last(), Some(&FailureReason::VerifierBusy));
    assert_eq!(rig.server.counters().verifier_busy, 1);
    rig.run_until(Duration::from_secs(1), |_| false);
    assert!(
        rig.client
            .messages
            .iter()
            .any(|m| m.starts_with("AUTH_FAILED,TEMP[backoff ")),
        "{:?}",
        rig.client.messages
    );
    let unix = rig.unix();
    rig.server
        .verified(rig.now, unix, waiting[0].id, Verdict::Unchecked);
    assert_eq!(rig.refusals().last(), Some(&FailureReason::VerifierBusy));
    let (client, addr) = password_client("alice", "pw", 200);
    rig.next_client(client, addr);
    assert!(rig.run_until(Duration::from_secs(10), |r| {
        r.server.verifications_out() == MAX_VERIFYING
    }));
    let last = take_checks(&mut rig);
    answer(&mut rig, &last[0]);
    rig.connect();
    assert_eq!(rig.server.counters().verifier_busy, 2);
}

/// A client that repeats its PUSH_REQUEST (or sends a hundred in a datagram) is pushed once
/// in 30 s, as by an OpenVPN server, not once for each; after 30 s it is answered again.
#[test]
fn repeated_push_requests_within_30_s_are_not_answered_again() {
    let mut rig = certificate_rig(9);
    rig.connect();
    let replies = |r: &Rig<CertificateOnly>| {
        r.client
            .messages
            .iter()
            .filter(|m| m.starts_with("PUSH_REPLY"))
            .count()
    };
    // The unasked push at establishment, then the first request answered.
    let pushed = replies(&rig);
    assert!(pushed >= 1);
    rig.client.send_message("PUSH_REQUEST").unwrap();
    rig.run_until(Duration::from_secs(3), |_| false);
    assert_eq!(replies(&rig), 2 * pushed, "the first request is answered");
    for _ in 0..20 {
        rig.client.send_message("PUSH_REQUEST").unwrap();
    }
    rig.run_until(Duration::from_secs(3), |_| false);
    assert_eq!(replies(&rig), 2 * pushed, "no push again within 30 s");
    rig.run_until(Duration::from_secs(30), |_| false);
    rig.client.send_message("PUSH_REQUEST").unwrap();
    rig.run_until(Duration::from_secs(3), |_| false);
    assert_eq!(replies(&rig), 3 * pushed, "answered again after 30 s");
}

/// A client that sends more key-method messages on its key state while its password is being
/// checked gets no more checks: OpenVPN reads one key-method message per key state, and so does
/// the server. Before, each further message (one per datagram) handed out a check of its own
/// (an argon2 run, and a password guess that cost no new handshake), until `MAX_VERIFYING`
/// were out and every other client was refused for now. The client connects at the verdict of
/// its one check.
#[test]
fn a_key_state_takes_one_key_method_message_and_hands_out_one_check() {
    let mut rig = password_rig(&["alice"], true);
    assert!(
        rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
            == 1)
    );
    assert!(rig.client.sent_key_method());
    for _ in 0..3 {
        let again = rig.client.key_method_message();
        rig.client.send_raw(&again).unwrap();
        rig.run_until(Duration::from_secs(1), |_| false);
    }
    let checks = take_checks(&mut rig);
    assert_eq!(checks.len(), 1, "one check for the key state");
    assert_eq!(rig.server.verifications_out(), 1);
    assert!(rig.refusals().is_empty(), "{:?}", rig.refusals());
    answer(&mut rig, &checks[0]);
    assert!(rig.keys_ready(0).is_some(), "completed at the verdict");
    rig.connect();
    assert_eq!(rig.server.verifications_out(), 0);
}

/// A client of an endpoint that checks no password (mutual authentication only) may still send
/// a username: nothing verifies it, so it is not the session's (the connection list, the
/// connection log and a termination by username would take it for one), as OpenVPN keeps only
/// a username its auth-user-pass verification accepted.
#[test]
fn an_unchecked_username_is_not_the_sessions() {
    let server = Server::new(
        Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20)),
        CertificateOnly,
    );
    let client = Client::new(
        client_config(),
        "server",
        [4; 8],
        Some(("alice".to_owned(), "anything".to_owned())),
    )
    .unwrap();
    let mut rig = Rig::new(server, client);
    rig.connect();
    let identity = rig.events.iter().find_map(|(_, e)| match e {
        Event::KeysReady { client, .. } => Some(client.identity.clone()),
        _ => None,
    });
    let identity = identity.unwrap();
    assert_eq!(identity.username, None);
    assert_eq!(identity.common_name.as_deref(), Some("client1.domain.tld"));
    // Its renegotiation, with the same unchecked username, is taken as before.
    rig.renegotiate(1);
    // Nor does a refusal name it (here: the endpoint at its connection limit).
    rig.server.set_max_sessions(1);
    let client = Client::new(
        client_config(),
        "server",
        [5; 8],
        Some(("mallory".to_owned(), "anything".to_owned())),
    )
    .unwrap();
    rig.next_client(client, from(0x0a00_0002, 40000));
    rig.run_until(Duration::from_secs(10), |r| !r.refusals().is_empty());
    let refused = rig.events.iter().find_map(|(_, e)| match e {
        Event::AuthFailed {
            reason, username, ..
        } => Some((reason.clone(), username.clone())),
        _ => None,
    });
    assert_eq!(refused, Some((FailureReason::SessionLimit, None)));
}

/// Runs `openssl args` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client certificate of the lab's CA (CN short.domain.tld, EC P-256) that expires `valid`
/// from now, made with `openssl ca`: its chain and key, PEM, and when it expires.
fn short_lived_certificate(valid: Duration) -> (Vec<u8>, Vec<u8>, std::time::SystemTime) {
    // A directory of its own: tests run at once, and two calls in one directory (each
    // emptying it first) took each other's files.
    let tmp = tempfile::Builder::new()
        .prefix("sim-short-lived")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = short\n[short]\ndatabase = index.txt\nnew_certs_dir = .\n\
         serial = serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
         x509_extensions = ext\n[any]\ncommonName = supplied\n[ext]\n\
         basicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n\
         keyUsage = digitalSignature\n",
    )
    .unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    let run = |args: &[&str]| openssl(&dir, args);
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "short.key",
        "-subj",
        "/CN=short.domain.tld",
        "-out",
        "short.csr",
    ]);
    // openssl ca's dates: YYMMDDHHMMSSZ, UTC.
    let at = |t: std::time::SystemTime| {
        let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{secs}"), "+%y%m%d%H%M%SZ"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (ca, ca_key) = (pki().join("ca.crt"), pki().join("ca.key"));
    let now = std::time::SystemTime::now();
    run(&[
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-cert",
        ca.to_str().unwrap(),
        "-keyfile",
        ca_key.to_str().unwrap(),
        "-in",
        "short.csr",
        "-out",
        "short.crt",
        "-notext",
        "-startdate",
        &at(now - Duration::from_secs(60)),
        "-enddate",
        &at(now + valid),
    ]);
    (
        std::fs::read(dir.join("short.crt")).unwrap(),
        std::fs::read(dir.join("short.key")).unwrap(),
        now + valid,
    )
}

/// Every key state's TLS handshake verifies the client's certificate. A TLS 1.2 client could
/// resume an earlier session of its own instead (rustls's default server session cache, which
/// OpenVPN 2.6 clients never use), and the server then took the certificate chain of that
/// session as verified then: a certificate past its notAfter (or past the CRL's nextUpdate)
/// still let its holder in, on a new connection or a renegotiation. Shown with a certificate
/// that expires a few seconds after its first connection: the second, from the same client
/// configuration (which offers to resume), is refused.
#[test]
fn an_expired_certificate_cannot_resume_its_way_in() {
    let valid = Duration::from_secs(6);
    let (chain, key, expires) = short_lived_certificate(valid);
    // TLS 1.2 only: the version whose session ids the server could resume.
    let config = {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&read("ca.crt")) {
            roots.add(c.unwrap()).unwrap();
        }
        let chain = CertificateDer::pem_slice_iter(&chain)
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(&key).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
        )
    };
    let mut rig = Rig::new(
        Server::new(
            Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20)),
            CertificateOnly,
        ),
        Client::new(Arc::clone(&config), "server", [5; 8], None).unwrap(),
    );
    rig.connect();
    assert!(
        std::time::SystemTime::now() < expires,
        "connected before the certificate expired"
    );
    // Past its notAfter (whole seconds), the same client configuration connects again.
    while std::time::SystemTime::now() < expires + Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = Client::new(Arc::clone(&config), "server", [6; 8], None).unwrap();
    rig.next_client(again, from(0x0a00_0002, 40000));
    rig.run_until(Duration::from_secs(10), |r| {
        r.client.connected() || !r.refusals().is_empty()
    });
    assert_eq!(rig.refusals(), [FailureReason::BadCertificate]);
    assert!(!rig.client.connected());
}

/// A new connection of `user` with `password` from address number `n` to the rig's server,
/// `after` from its clock: the rig on it, with its refusals, pushes and events.
fn connect_anew(
    rig: Rig<EndpointAuth>,
    user: &str,
    password: &str,
    n: u8,
    after: Duration,
) -> Rig<EndpointAuth> {
    let client = Client::new(
        client_config(),
        "server",
        [n; 8],
        Some((user.to_owned(), password.to_owned())),
    )
    .unwrap();
    let mut next = Rig::new(rig.server, client);
    next.addr = from(0x0a02_0000 + u32::from(n), 40000);
    next.start = rig.start;
    next.now = rig.now + after;
    next.run_until(Duration::from_secs(30), |r| {
        r.client.connected() || !r.refusals().is_empty()
    });
    next
}

/// The auth-token pushed to the rig's client, and its session's peer-id.
fn token_and_peer(rig: &Rig<EndpointAuth>) -> (String, u32) {
    let token = rig
        .pushed()
        .split(',')
        .find_map(|o| o.strip_prefix("auth-token "))
        .expect("an auth-token pushed")
        .to_owned();
    let peer = rig
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::KeysReady { peer_id, .. } => Some(*peer_id),
            _ => None,
        })
        .unwrap();
    (token, peer)
}

/// An administrator terminates one of alice's two connections (two devices, which signed in
/// at different times): that connection's auth-token is refused from then on, so its client
/// must give its password and one-time code again (a 2.6 client refused with a token drops it
/// and asks); her other device's token still reconnects.
#[test]
fn an_administrators_termination_revokes_that_connections_auth_token_only() {
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.password_required = true;
    let server = Server::new(settings, users(&["alice"], true));
    let client = Client::new(
        client_config(),
        "server",
        [1; 8],
        Some(("alice".to_owned(), scrv1("pw", UNIX))),
    )
    .unwrap();
    let mut laptop = Rig::new(server, client);
    laptop.connect();
    let (laptop_token, laptop_peer) = token_and_peer(&laptop);
    // Her phone signs in a minute later (the next one-time code).
    let mut phone = connect_anew(
        laptop,
        "alice",
        &scrv1("pw", UNIX + 60),
        2,
        Duration::from_secs(60),
    );
    assert!(phone.client.connected(), "{:?}", phone.refusals());
    let (phone_token, _) = token_and_peer(&phone);
    assert_ne!(laptop_token, phone_token);

    let unix = phone.unix();
    assert!(phone.server.revoke_token(laptop_peer, unix));
    let now = phone.now;
    assert!(phone.server.terminate(
        laptop_peer,
        "RESTART,terminated by the administrator",
        CloseReason::Terminated("terminated by the administrator".into()),
        now,
    ));
    // The laptop reconnects at once with its token: refused, told AUTH_FAILED.
    let laptop = connect_anew(phone, "alice", &laptop_token, 3, Duration::from_secs(1));
    assert_eq!(laptop.refusals(), [FailureReason::BadPassword]);
    assert!(!laptop.client.connected());
    let mut laptop = laptop;
    laptop.run_until(Duration::from_secs(1), |_| false);
    assert!(laptop.client.messages.iter().any(|m| m == "AUTH_FAILED"));
    // And later too, within the token's lifetime.
    let laptop = connect_anew(laptop, "alice", &laptop_token, 4, Duration::from_secs(3600));
    assert_eq!(laptop.refusals(), [FailureReason::BadPassword]);
    // The phone's token is still good; the laptop gets in with its password and a new code.
    let phone = connect_anew(laptop, "alice", &phone_token, 5, Duration::from_secs(1));
    assert!(phone.client.connected(), "{:?}", phone.refusals());
    let code = scrv1("pw", phone.unix() + 30);
    let laptop = connect_anew(phone, "alice", &code, 6, Duration::from_secs(30));
    assert!(laptop.client.connected(), "{:?}", laptop.refusals());
    let (new_token, _) = token_and_peer(&laptop);
    assert_ne!(new_token, laptop_token);
}

/// A directory authenticator of a users file with alice alone, of password hash `hash` (group
/// `g`, the TOTP secret above), asking for a one-time code.
fn alice_with_hash(hash: &str) -> EndpointAuth {
    let text = format!(
        "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ngroups = [\"g\"]\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n"
    );
    let dir = UsersFileDirectory::parse(&text).unwrap();
    EndpointAuth::new(false, Some(Box::new(dir)), true)
}

/// A user's auth-token is bound to the password hash in force when it was issued: a reload of
/// the same users file leaves it good, one that changes her password refuses it (whoever got a
/// token with the old password keeps no access), and the new password gets her in.
#[test]
fn a_changed_password_refuses_the_auth_tokens_issued_before() {
    let old_hash = hash_password("pw").unwrap();
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.password_required = true;
    let server = Server::new(settings, alice_with_hash(&old_hash));
    let client = Client::new(
        client_config(),
        "server",
        [1; 8],
        Some(("alice".to_owned(), scrv1("pw", UNIX))),
    )
    .unwrap();
    let mut rig = Rig::new(server, client);
    rig.connect();
    let (token, _) = token_and_peer(&rig);
    // The same file again: the token still reconnects.
    rig.server
        .set_authenticator(alice_with_hash(&old_hash), rig.unix());
    let mut rig = connect_anew(rig, "alice", &token, 2, Duration::from_secs(60));
    assert!(rig.client.connected(), "{:?}", rig.refusals());
    // Her password changed: the token is refused.
    rig.server.set_authenticator(
        alice_with_hash(&hash_password("new pw").unwrap()),
        rig.unix(),
    );
    let rig = connect_anew(rig, "alice", &token, 3, Duration::from_secs(60));
    assert_eq!(rig.refusals(), [FailureReason::MfaFailed]);
    assert!(!rig.client.connected());
    let code = scrv1("new pw", rig.unix() + 60);
    let rig = connect_anew(rig, "alice", &code, 4, Duration::from_secs(60));
    assert!(rig.client.connected(), "{:?}", rig.refusals());
}

/// A renegotiation that needs a password check while `MAX_VERIFYING` checks are out (a flood
/// of sign-ins), or whose check the checkers had no room for, is refused for now, not the
/// session: its new key fails, the session goes on with its active key, and the client's next
/// renegotiation is taken once there is room.
#[test]
fn a_busy_verifier_refuses_a_renegotiations_key_not_the_session() {
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.password_required = true;
    let mut server = Server::new(settings, users(&["alice", "bob"], false));
    server.set_verify_elsewhere(true);
    let (client, addr) = password_client("alice", "pw", 1);
    let mut rig = Rig::new(server, client);
    rig.addr = addr;
    assert!(
        rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
            == 1)
    );
    let checks = take_checks(&mut rig);
    answer(&mut rig, &checks[0]);
    rig.connect();
    // Alice's client renegotiates with her password (a client that kept no token).
    rig.client.forget_auth_token();
    let alice_addr = addr;
    let alice = (
        addr,
        std::mem::replace(&mut rig.client, certificate_client(0)),
    );
    let keys_at = |rig: &Rig<EndpointAuth>, addr: Remote| -> Vec<(u8, KeyPhase)> {
        let s = rig.server.sessions().find(|s| s.remote == addr).unwrap();
        s.keys.iter().map(|k| (k.key_id, k.phase)).collect()
    };

    // Bob's sign-ins take every check.
    let mut waiting = Vec::new();
    for n in 0..MAX_VERIFYING {
        let n = u8::try_from(n).unwrap();
        let (client, addr) = password_client("bob", "pw", 100 + n);
        rig.next_client(client, addr);
        assert!(rig.run_until(Duration::from_secs(10), |r| {
            r.server.verifications_out() > waiting.len()
        }));
        waiting.extend(take_checks(&mut rig));
    }
    assert_eq!(rig.server.verifications_out(), MAX_VERIFYING);
    let events = rig.events.len();
    rig.next_client(alice.1, alice.0);
    rig.client.renegotiate(1).unwrap();
    let busy = rig.server.counters().verifier_busy;
    assert!(rig.run_until(Duration::from_secs(10), |r| {
        r.server.counters().verifier_busy > busy
    }));
    rig.run_until(Duration::from_secs(2), |_| false);
    assert!(rig.keys_ready(1).is_none());
    let ended = rig.events[events..]
        .iter()
        .any(|(_, e)| matches!(e, Event::Closed { .. } | Event::AuthFailed { .. }));
    assert!(!ended, "the session goes on");
    assert_eq!(
        keys_at(&rig, alice_addr),
        vec![(0, KeyPhase::Active), (1, KeyPhase::Failed)]
    );
    assert!(
        !rig.client
            .messages
            .iter()
            .any(|m| m.starts_with("AUTH_FAILED") || m.starts_with("RESTART")),
        "{:?}",
        rig.client.messages
    );

    // Room again: the client's next renegotiation hands out its check, which comes back
    // unchecked (the checkers had no room): refused for now too, and the session goes on.
    answer(&mut rig, &waiting[0]);
    take_checks(&mut rig);
    rig.client.renegotiate(2).unwrap();
    assert!(rig.run_until(Duration::from_secs(10), |r| {
        r.server.verifications_out() == MAX_VERIFYING
    }));
    let reneg = take_checks(&mut rig);
    assert_eq!(reneg.len(), 1);
    let unix = rig.unix();
    rig.server
        .verified(rig.now, unix, reneg[0].id, Verdict::Unchecked);
    rig.deliver();
    assert_eq!(rig.server.counters().verifier_busy, busy + 2);
    assert_eq!(
        keys_at(&rig, alice_addr),
        vec![(0, KeyPhase::Active), (2, KeyPhase::Failed)]
    );
    // The next one is checked and completes.
    rig.client.renegotiate(3).unwrap();
    assert!(rig.run_until(Duration::from_secs(10), |r| {
        r.server.verifications_out() == MAX_VERIFYING
    }));
    let reneg = take_checks(&mut rig);
    answer(&mut rig, &reneg[0]);
    assert!(rig.run_until(Duration::from_secs(10), |r| r.keys_ready(3).is_some()));
    assert_eq!(
        keys_at(&rig, alice_addr),
        vec![(0, KeyPhase::Active), (3, KeyPhase::Active)]
    );
    let ended = rig.events[events..]
        .iter()
        .any(|(_, e)| matches!(e, Event::Closed { .. } | Event::AuthFailed { .. }));
    assert!(!ended, "the session goes on");
}

/// One source address holds at most `MAX_HANDSHAKING_PER_SOURCE` sessions in handshake: at
/// its full per-source rate (32, then 4 a second) over a handshake window it would otherwise
/// hold 272 of the 1,024 slots, and four addresses all of them. Those over the cap are
/// refused and counted; other addresses still get in, and so does the first once its
/// handshakes are over.
#[test]
fn one_source_cannot_take_more_than_its_share_of_the_handshake_slots() {
    let mut server = Server::new(
        Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20)),
        CertificateOnly,
    );
    let start = Instant::now();
    let connect = |server: &mut Server<CertificateOnly>, at: Instant, who: Remote| {
        let sid = who.port as u8;
        server.handle_datagram(at, UNIX, who, LOCAL, &hard_reset(sid));
        if let [(_, ours)] = answers(server)[..] {
            server.handle_datagram(at, UNIX, who, LOCAL, &echo(sid, ours));
        }
        server.check_timers().unwrap();
    };
    let from_source = |server: &Server<CertificateOnly>, ip: u32| {
        server
            .sessions()
            .filter(|s| s.remote.ip == ip && s.phase == Phase::Handshaking)
            .count()
    };
    // Two addresses, each a new session every 100 ms for 59 s, none completing.
    for i in 0..590u16 {
        let at = start + Duration::from_millis(100 * u64::from(i));
        connect(&mut server, at, from(0x0a00_0001, 1000 + i));
        connect(&mut server, at, from(0x0a00_0002, 1000 + i));
    }
    let c = server.counters();
    assert_eq!(
        from_source(&server, 0x0a00_0001),
        MAX_HANDSHAKING_PER_SOURCE
    );
    assert_eq!(
        from_source(&server, 0x0a00_0002),
        MAX_HANDSHAKING_PER_SOURCE
    );
    assert!(c.source_handshake_cap > 300, "{c:?}");
    assert_eq!(c.handshake_cap, 0);
    // A third address still gets in.
    let at = start + Duration::from_secs(59);
    connect(&mut server, at, from(0x0a00_0003, 1));
    assert_eq!(from_source(&server, 0x0a00_0003), 1);
    // Once the first sessions' handshake window passed, the first address gets in again.
    let later = start + Duration::from_secs(61);
    server.handle_timeout(later);
    server.check_timers().unwrap();
    assert!(from_source(&server, 0x0a00_0001) < MAX_HANDSHAKING_PER_SOURCE);
    let before = server.counters().source_handshake_cap;
    connect(&mut server, later, from(0x0a00_0001, 9));
    assert_eq!(server.counters().source_handshake_cap, before);
    assert!(server
        .sessions()
        .any(|s| s.remote == from(0x0a00_0001, 9) && s.phase == Phase::Handshaking));
}

/// Another CA (CN "sluice other CA", EC P-256, made with openssl) and a client certificate it
/// issued (CN other.domain.tld): the CA, the client's chain and key, PEM.
fn other_ca() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    // A directory of its own: tests run at once, and two calls in one directory (each
    // emptying it first) took each other's files.
    let tmp = tempfile::Builder::new()
        .prefix("sim-other-ca")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n\
         keyUsage = digitalSignature\n",
    )
    .unwrap();
    let run = |args: &[&str]| openssl(&dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-subj",
            "/CN=sluice other CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.crt",
        ],
    ]
    .concat());
    run(&[
        &["req", "-new"][..],
        &ec,
        &[
            "-keyout",
            "client.key",
            "-subj",
            "/CN=other.domain.tld",
            "-out",
            "client.csr",
        ],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-extfile",
        "client.ext",
        "-out",
        "client.crt",
    ]);
    let f = |n: &str| std::fs::read(dir.join(n)).unwrap();
    (f("ca.crt"), f("client.crt"), f("client.key"))
}

/// The lab's server certificate, with the client root CAs of `client_ca` and no CRL (webpki
/// would refuse the other CA's clients for want of one of theirs).
fn tls_trusting(client_ca: &[u8]) -> ServerTls {
    server_config(&TlsFiles {
        server_chain_pem: &read("server.crt"),
        server_key_pem: &read("server.key"),
        client_ca_pem: Some(client_ca),
        crl_pem: None,
    })
    .unwrap()
}

/// The wall clock, in seconds since the Unix epoch (certificates expire on it).
fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Why the session at `addr` closed, if it did with a reason on record.
fn closed_why<A: Authenticator>(rig: &Rig<A>, addr: Remote) -> Option<String> {
    rig.events.iter().find_map(|(_, e)| match e {
        Event::Closed {
            remote,
            reason: CloseReason::Terminated(why),
            ..
        } if *remote == addr => Some(why.clone()),
        _ => None,
    })
}

/// Whether the session at `addr` is established.
fn established_at<A: Authenticator>(rig: &Rig<A>, addr: Remote) -> bool {
    rig.server
        .sessions()
        .any(|s| s.remote == addr && s.phase == Phase::Established)
}

/// An operator replaces the client root CA (after its compromise, say): a reload's TLS
/// settings verify every connected client's certificate chain again, and end the connections
/// of the certificates the new CA did not issue, each client told to reconnect (where the new
/// settings refuse it) and the reason on record; a client of the CA kept stays. Before, such
/// clients stayed connected until their session timeout (up to 24 hours: nothing renegotiates
/// by default).
#[test]
fn a_reload_that_replaces_the_client_ca_ends_the_connections_it_no_longer_trusts() {
    let (other_ca, other_chain, other_key) = other_ca();
    let both = [read("ca.crt"), other_ca.clone()].concat();
    let server = Server::new(
        Settings::new(0, tls_trusting(&both), ("10.200.0.0".parse().unwrap(), 20)),
        CertificateOnly,
    );
    let other = sluice_tests::tls_client(&read("ca.crt"), &other_chain, &other_key);
    let mut rig = Rig::new(server, Client::new(other, "server", [8; 8], None).unwrap());
    rig.connect();
    let (kept, ended) = (rig.addr, from(0x0a00_0002, 40000));
    rig.next_client(certificate_client(9), ended);
    rig.connect();

    // Only the other CA from now on: the lab CA's client1 goes, the other CA's client stays.
    reload_tls(&mut rig, tls_trusting(&other_ca), wall_clock());
    assert!(
        told(&rig, "RESTART,certificate no longer accepted"),
        "{:?}",
        rig.client.messages
    );
    let why = closed_why(&rig, ended).expect("client1's session closed with its reason");
    assert!(why.contains("unknown issuer"), "{why}");
    assert!(!established_at(&rig, ended));
    assert!(established_at(&rig, kept), "the other CA's client stays");
    assert_eq!(closed_why(&rig, kept), None);

    // Client1 comes back and is refused by the new settings.
    rig.next_client(certificate_client(10), from(0x0a00_0003, 40000));
    rig.run_until(Duration::from_secs(10), |r| {
        r.client.connected() || !r.refusals().is_empty()
    });
    assert_eq!(rig.refusals(), [FailureReason::BadCertificate]);
}

/// A reload's new TLS settings, `unix` the wall clock then; the rig runs until its client is
/// told to restart (a second at most).
fn reload_tls(rig: &mut Rig<CertificateOnly>, tls: ServerTls, unix: u64) {
    let now = rig.now;
    rig.server.set_tls(tls, now, unix);
    rig.run_until(Duration::from_secs(1), |r| {
        r.client.messages.iter().any(|m| m.starts_with("RESTART"))
    });
}

/// A reload verifies the connected clients' certificates at the time it happens: one that
/// expired since its handshake ends ("expired" on record), one still valid stays; and a new
/// CRL that revokes a connected client's certificate ends that connection with the revocation
/// as the reason (the same check, no longer a match of serial numbers alone). Without a
/// reload nothing is checked again during a session, as with OpenVPN 2.6.
#[test]
fn a_reload_ends_the_connections_of_certificates_expired_or_revoked_since() {
    let (chain, key, expires) = short_lived_certificate(Duration::from_secs(3600));
    let mut rig = certificate_rig(11);
    rig.connect();
    let client1 = rig.addr;
    let short = sluice_tests::tls_client(&read("ca.crt"), &chain, &key);
    let short_addr = from(0x0a00_0002, 40000);
    let first = std::mem::replace(
        &mut rig.client,
        Client::new(short, "server", [12; 8], None).unwrap(),
    );
    rig.addr = short_addr;
    rig.connect();

    // The same settings, reloaded an hour and a minute later on the wall clock (the
    // virtual one does not move certificates): the short-lived certificate has expired.
    let later = expires
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    reload_tls(&mut rig, tls(), later);
    assert!(
        told(&rig, "RESTART,certificate no longer accepted"),
        "{:?}",
        rig.client.messages
    );
    let why = closed_why(&rig, short_addr).expect("the expired certificate's session closed");
    assert!(why.contains("expired"), "{why}");
    assert!(
        established_at(&rig, client1),
        "client1's certificate is valid"
    );

    // A CRL that revokes client1.
    rig.next_client(first, client1);
    reload_tls(&mut rig, tls_with_crl("crl-all.pem"), wall_clock());
    assert!(
        told(&rig, "RESTART,certificate revoked"),
        "{:?}",
        rig.client.messages
    );
    assert_eq!(
        closed_why(&rig, client1).as_deref(),
        Some("the client certificate was revoked by the CRL")
    );
    assert!(!established_at(&rig, client1));
}

/// A reload's re-verification of the connected clients' certificates goes a batch a turn
/// (`Settings::reverify_batch`), so that an endpoint of 100 000 sessions does not hold the
/// control thread for seconds (each chain costs a signature check or more): with a batch of
/// one, three sessions whose CA the reload replaced end one a turn, the server due at once
/// (`poll_timeout`) until the last has been checked, and not after.
#[test]
fn a_reloads_re_verification_goes_a_batch_a_turn() {
    let (other_ca, _, _) = other_ca();
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.reverify_batch = 1;
    let mut rig = Rig::new(
        Server::new(settings, CertificateOnly),
        certificate_client(13),
    );
    rig.connect();
    for n in 2..=3u8 {
        rig.next_client(
            certificate_client(13 + n),
            from(0x0a00_0000 + u32::from(n), 40000),
        );
        rig.connect();
    }
    let closed = |rig: &mut Rig<CertificateOnly>| {
        rig.deliver();
        rig.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Closed { .. }))
            .count()
    };
    assert_eq!(closed(&mut rig), 0);
    let now = rig.now;
    rig.server
        .set_tls(tls_trusting(&other_ca), now, wall_clock());
    assert_eq!(closed(&mut rig), 1, "the first batch at once");
    assert_eq!(rig.server.reverifying(), 2);
    for n in 2..=3 {
        assert!(
            rig.server.poll_timeout().is_some_and(|t| t <= now),
            "due at once"
        );
        rig.server.handle_timeout(now);
        assert_eq!(closed(&mut rig), n);
        rig.server.check_timers().unwrap();
    }
    assert_eq!(rig.server.reverifying(), 0);
    let (closing, established) = rig
        .server
        .sessions()
        .fold((0, 0), |(c, e), s| match s.phase {
            Phase::Closing { .. } => (c + 1, e),
            Phase::Established => (c, e + 1),
            Phase::Handshaking => (c, e),
        });
    assert_eq!((closing, established), (3, 0));
    // Nothing more to check: the next deadline is the closing sessions' own.
    assert!(rig.server.poll_timeout().is_some_and(|t| t > now));
}

/// A client that offers no data cipher of ours is told so (`AUTH_FAILED` with OpenVPN 2.6's
/// words), also where a refusal for now would apply: an endpoint full or without a target
/// network would otherwise tell it to come back later, and it would, again and again.
#[test]
fn a_client_without_a_shared_cipher_is_told_so_before_any_refusal_for_now() {
    for (max_sessions, filled) in [(0, 0), (1, 1), (4, 0)] {
        let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
        settings.max_sessions = max_sessions;
        let mut server = Server::new(settings, CertificateOnly);
        for i in 0..filled {
            assert_eq!(
                handshake(&mut server, from(0x0a00_0100 + i, 40000), 9),
                Ok(())
            );
        }
        let (verdict, told) = handshake_as(&mut server, from(0x0a00_0001, 40000), 1, |c| {
            c.iv_ciphers = "AES-256-CBC".into();
        });
        assert_eq!(
            verdict.map(|_| ()),
            Err(FailureReason::NoSharedCipher),
            "limit {max_sessions}"
        );
        assert!(
            told.iter().any(|m| m.starts_with("AUTH_FAILED,")
                && m.contains("cipher")
                && !m.contains("TEMP")),
            "limit {max_sessions}: {told:?}"
        );
    }
}

/// An established session renegotiates with its password (a client that kept no auth-token),
/// and the password check is out when the session ends: an administrator terminates it, or
/// its session timeout passes; or the check came back unrun (the new key refused for now,
/// `Verdict::Unchecked`) and then an administrator terminates it. The client (as OpenVPN
/// 2.6's) reads the new key only, whose key-method message the server has taken and answers
/// nothing to before the verdict: the closing session completes that exchange at once, the
/// RESTART right after our reply, and the client has it within a second, not at its
/// hand-window. No keys reach the data plane, a late verdict is ignored, and the session is
/// forgotten once the RESTART is acknowledged.
#[test]
fn a_session_ended_while_its_renegotiation_waits_for_a_password_check_tells_its_client() {
    for (timeout, refused_for_now) in [(false, false), (true, false), (false, true)] {
        let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
        settings.password_required = true;
        settings.session_timeout = Duration::from_secs(30);
        let mut server = Server::new(settings, users(&["alice"], false));
        server.set_verify_elsewhere(true);
        let (client, addr) = password_client("alice", "pw", 1);
        let mut rig = Rig::new(server, client);
        rig.addr = addr;
        assert!(
            rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
                == 1)
        );
        let first = take_checks(&mut rig);
        answer(&mut rig, &first[0]);
        rig.connect();
        let peer = rig
            .events
            .iter()
            .find_map(|(_, e)| match e {
                Event::KeysReady { peer_id, .. } => Some(*peer_id),
                _ => None,
            })
            .unwrap();
        if timeout {
            // A renegotiation just before the session timeout (at 30 s).
            rig.run_until(Duration::from_secs(60), |r| {
                r.now >= r.start + Duration::from_secs(29)
            });
        }
        rig.client.forget_auth_token();
        rig.client.renegotiate(1).unwrap();
        assert!(
            rig.run_until(Duration::from_secs(10), |r| r.server.verifications_out()
                == 1)
        );
        let parked = take_checks(&mut rig);
        assert_eq!(rig.keys(), [(0, KeyPhase::Active), (1, KeyPhase::Tls)]);
        if refused_for_now {
            let unix = rig.unix();
            rig.server
                .verified(rig.now, unix, parked[0].id, Verdict::Unchecked);
            rig.deliver();
            assert_eq!(rig.keys(), [(0, KeyPhase::Active), (1, KeyPhase::Failed)]);
        }
        let ended_at = if timeout {
            rig.start + Duration::from_secs(30)
        } else {
            let now = rig.now;
            assert!(rig.server.terminate(
                peer,
                "RESTART,terminated by the administrator",
                CloseReason::Terminated("terminated by the administrator".into()),
                now,
            ));
            rig.deliver();
            now
        };
        let restart =
            |r: &Rig<EndpointAuth>| r.client.messages.iter().any(|m| m.starts_with("RESTART,"));
        rig.run_until(Duration::from_secs(5), |r| {
            restart(r) && r.now >= ended_at + Duration::from_secs(1)
        });
        let told = rig
            .client
            .messages
            .iter()
            .find(|m| m.starts_with("RESTART,"))
            .cloned();
        let want = if timeout {
            "RESTART,session timeout"
        } else {
            "RESTART,terminated by the administrator"
        };
        assert_eq!(
            told.as_deref(),
            Some(want),
            "session timeout: {timeout}, refused for now: {refused_for_now}: {:?}",
            rig.client.messages
        );
        let closed_at = rig.events.iter().find_map(|(at, e)| match e {
            Event::Closed { .. } => Some(*at),
            _ => None,
        });
        assert!(
            closed_at.is_some_and(|at| at >= ended_at && at < ended_at + Duration::from_secs(1)),
            "ended at its time: {closed_at:?}"
        );
        if !refused_for_now {
            // The verdict comes back: ignored.
            let stale = rig.server.counters().stale_verdicts;
            answer(&mut rig, &parked[0]);
            assert_eq!(rig.server.counters().stale_verdicts, stale + 1);
        }
        assert!(rig.keys_ready(1).is_none(), "no keys from that exchange");
        rig.run_until(Duration::from_secs(3), |_| false);
        assert_eq!(
            rig.server.sessions().count(),
            0,
            "forgotten once the RESTART is acknowledged, not at the handshake window"
        );
    }
}

/// What a stopping runtime waits for (`Server::is_delivering`): a session ended with a
/// `RESTART` is delivering until its client acknowledges it. The first copy lost, the
/// retransmission reaches the client within `STOP_LINGER`; a client in the middle of a
/// renegotiation has it once the key exchange that carries it completes, within
/// `STOP_LINGER` too. A client that never answers leaves the session delivering until its
/// linger ends (the runtime waits `STOP_LINGER` at most).
#[test]
fn a_stopping_server_is_delivering_until_each_restart_is_acknowledged() {
    for case in ["restart lost", "renegotiating", "client gone"] {
        let mut rig = certificate_rig(21);
        rig.connect();
        let peer = peer_of(&rig);
        rig.run_until(Duration::from_secs(1), |_| false);
        assert!(!rig.server.is_delivering(rig.now));
        if case == "renegotiating" {
            rig.client.renegotiate(1).unwrap();
            rig.step(Duration::from_millis(10));
            assert_eq!(rig.keys(), [(0, KeyPhase::Active), (1, KeyPhase::Tls)]);
            rig.up = false;
        } else {
            rig.down = false;
        }
        let now = rig.now;
        assert!(rig.server.terminate(
            peer,
            "RESTART,the server is shutting down",
            CloseReason::Terminated("the appliance stopped".into()),
            now,
        ));
        rig.deliver();
        assert!(rig.server.is_delivering(now), "{case}");
        if case == "client gone" {
            rig.up = false;
            rig.run_until(Duration::from_secs(4), |_| false);
            assert!(
                rig.server.is_delivering(rig.now),
                "{case}: within its linger"
            );
            rig.run_until(Duration::from_secs(2), |_| false);
            assert!(
                !rig.server.is_delivering(rig.now),
                "{case}: its linger over"
            );
            continue;
        }
        (rig.up, rig.down) = (true, true);
        assert!(
            rig.run_until(STOP_LINGER, |r| !r.server.is_delivering(r.now)),
            "{case}: still delivering after {STOP_LINGER:?}"
        );
        assert!(told(&rig, "RESTART,the server is shutting down"), "{case}");
    }
}

/// A user removed from the users file loses the auth-tokens issued before, even when the same
/// user line (the same password hash) comes back within their lifetime: the administrator who
/// removed her meant every token of hers dead. The reload that puts her back lets her in with
/// her password and code, and the token of that new sign-in is good.
#[test]
fn a_user_removed_and_put_back_does_not_get_her_old_tokens_back() {
    let hash = hash_password("pw").unwrap();
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.password_required = true;
    let server = Server::new(settings, alice_with_hash(&hash));
    let client = Client::new(
        client_config(),
        "server",
        [1; 8],
        Some(("alice".to_owned(), scrv1("pw", UNIX))),
    )
    .unwrap();
    let mut rig = Rig::new(server, client);
    rig.connect();
    let (token, _) = token_and_peer(&rig);
    // Removed (another user stays), then put back with the same line.
    rig.now += Duration::from_secs(60);
    let bob_only = format!(
        "[[user]]\nname = \"bob\"\npassword_hash = \"{hash}\"\ngroups = [\"g\"]\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n"
    );
    let bob_only = EndpointAuth::new(
        false,
        Some(Box::new(UsersFileDirectory::parse(&bob_only).unwrap())),
        true,
    );
    rig.server.set_authenticator(bob_only, rig.unix());
    rig.now += Duration::from_secs(60);
    rig.server
        .set_authenticator(alice_with_hash(&hash), rig.unix());
    let rig = connect_anew(rig, "alice", &token, 2, Duration::from_secs(60));
    assert_eq!(rig.refusals(), [FailureReason::BadPassword]);
    assert!(!rig.client.connected());
    // Her password and a new code get her in; that sign-in's token reconnects.
    let code = scrv1("pw", rig.unix() + 60);
    let rig = connect_anew(rig, "alice", &code, 3, Duration::from_secs(60));
    assert!(rig.client.connected(), "{:?}", rig.refusals());
    let (new_token, _) = token_and_peer(&rig);
    assert_ne!(new_token, token);
    let rig = connect_anew(rig, "alice", &new_token, 4, Duration::from_secs(60));
    assert!(rig.client.connected(), "{:?}", rig.refusals());
    // The old token stays refused, until it would have expired anyway.
    let rig = connect_anew(rig, "alice", &token, 5, Duration::from_secs(3600));
    assert_eq!(rig.refusals(), [FailureReason::BadPassword]);
}

/// A session timeout raised by a reload makes no auth-token good past the expiry it was issued
/// with: not a token of a user removed (whose entry the server drops once it would have
/// expired), nor one an administrator revoked, nor one never revoked but past its issue-time
/// lifetime. A password sign-in after the raise gets a token of the new lifetime.
#[test]
fn a_raised_session_timeout_makes_no_auth_token_good_again() {
    let mut settings = Settings::new(0, tls(), ("10.200.0.0".parse().unwrap(), 20));
    settings.password_required = true;
    settings.session_timeout = Duration::from_secs(3600);
    // 64 others, removed with bob, fill the server's record of removals to its first sweep.
    // Every user keeps one password hash throughout (a new hash would refuse the tokens).
    let others: Vec<String> = (0..64).map(|i| format!("u{i}")).collect();
    let hash = hash_password("pw").unwrap();
    let with = |names: &[&str], others: &[String]| {
        let text: String = names
            .iter()
            .copied()
            .chain(others.iter().map(String::as_str))
            .map(|n| {
                format!(
                    "[[user]]\nname = \"{n}\"\npassword_hash = \"{hash}\"\ngroups = [\"g\"]\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n"
                )
            })
            .collect();
        EndpointAuth::new(
            false,
            Some(Box::new(UsersFileDirectory::parse(&text).unwrap())),
            true,
        )
    };
    let server = Server::new(settings, with(&["alice", "bob"], &others));
    let client = Client::new(
        client_config(),
        "server",
        [1; 8],
        Some(("alice".to_owned(), scrv1("pw", UNIX))),
    )
    .unwrap();
    let mut laptop = Rig::new(server, client);
    laptop.connect();
    let (laptop_token, laptop_peer) = token_and_peer(&laptop);
    let code = scrv1("pw", laptop.unix() + 60);
    let bob = connect_anew(laptop, "bob", &code, 2, Duration::from_secs(60));
    assert!(bob.client.connected(), "{:?}", bob.refusals());
    let (bob_token, _) = token_and_peer(&bob);
    let code = scrv1("pw", bob.unix() + 60);
    let mut phone = connect_anew(bob, "alice", &code, 3, Duration::from_secs(60));
    assert!(phone.client.connected(), "{:?}", phone.refusals());
    let (phone_token, _) = token_and_peer(&phone);

    // The laptop's connection is terminated, its token revoked; bob is removed, with all but
    // one of the others.
    let unix = phone.unix();
    assert!(phone.server.revoke_token(laptop_peer, unix));
    let now = phone.now;
    assert!(phone.server.terminate(
        laptop_peer,
        "RESTART,terminated by the administrator",
        CloseReason::Terminated("terminated by the administrator".into()),
        now,
    ));
    phone
        .server
        .set_authenticator(with(&["alice"], &others[63..]), unix);
    // Two hours on, past every token's lifetime, the last one goes (the record is swept),
    // then a reload raises the session timeout to a day and puts bob back.
    let mut rig = phone;
    rig.now += Duration::from_secs(2 * 3600);
    rig.server
        .set_authenticator(with(&["alice"], &[]), rig.unix());
    rig.server
        .set_session_timeout(Duration::from_secs(24 * 3600));
    rig.server
        .set_authenticator(with(&["alice", "bob"], &[]), rig.unix());

    for (n, (user, token, what)) in [
        ("bob", &bob_token, "a removed user's"),
        ("alice", &laptop_token, "a terminated connection's"),
        ("alice", &phone_token, "an unrevoked one past its lifetime"),
    ]
    .into_iter()
    .enumerate()
    {
        let n = 4 + u8::try_from(n).unwrap();
        rig = connect_anew(rig, user, token, n, Duration::ZERO);
        assert!(!rig.client.connected(), "{what} token taken");
        assert_eq!(
            rig.refusals(),
            [FailureReason::MfaFailed],
            "{what} token is expired, a (bad) password"
        );
    }
    // Her password and a code: a token good for the day.
    let code = scrv1("pw", rig.unix() + 60);
    let rig = connect_anew(rig, "alice", &code, 7, Duration::from_secs(60));
    assert!(rig.client.connected(), "{:?}", rig.refusals());
    let (token, _) = token_and_peer(&rig);
    let rig = connect_anew(rig, "alice", &token, 8, Duration::from_secs(3 * 3600));
    assert!(rig.client.connected(), "{:?}", rig.refusals());
}
