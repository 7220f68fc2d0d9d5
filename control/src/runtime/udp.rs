//! A kernel-UDP driver of the control-channel server: one socket, the server's timers, and the
//! data channel's keepalives (pings decrypted with the derived keys, and sent every `ping`
//! seconds). It does not forward tunnel traffic: in the appliance the DPDK engine does; this
//! driver serves development, tests, and checking the control channel against real clients.
//! Password checks run on the checker threads (`verifier`), as in the daemon.
//!
//! A runtime shell: it reads the clock.

#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use sluice_engine::crypto::data_channel::PING_MAGIC;
use sluice_engine::crypto::{classify_plaintext, DataKey, Plaintext};
use sluice_engine::packet::{HeapBuf, PacketBuf};
use sluice_engine::wire::openvpn::{DataPacket, KeyId, Opcode, PeerId};

use super::verifier::{self, CheckFn, Verifier};
use crate::proto::server::{Authenticator, Event, Server, MAX_VERIFYING};
use crate::proto::Remote;

const SOCKET: Token = Token(0);
const VERDICTS: Token = Token(1);

/// A data-channel session as this driver keeps it.
struct DataSession {
    keys: Vec<DataKey>,
    remote: Remote,
    last_ping_sent: Instant,
}

/// What the driver observed, for tests and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Keepalive pings received and authenticated.
    pub pings_received: u64,
    /// Pings sent.
    pub pings_sent: u64,
    /// Other authenticated data packets (tunnel traffic, not forwarded here).
    pub data_received: u64,
    /// Data packets that failed to open.
    pub data_rejected: u64,
    /// Key installations (first keys and renegotiations).
    pub keys_installed: u64,
}

/// The driver.
pub struct UdpDriver<A: Authenticator> {
    socket: UdpSocket,
    local: Remote,
    poll: Poll,
    server: Server<A>,
    verifier: Verifier,
    data: HashMap<u32, DataSession>,
    ping: Duration,
    /// Events seen, for the caller (tests, logs).
    pub events: Vec<Event>,
    /// Counters.
    pub stats: Stats,
}

fn remote_of(a: SocketAddr) -> Option<Remote> {
    match a.ip() {
        IpAddr::V4(ip) => Some(Remote {
            ip: u32::from(ip),
            port: a.port(),
        }),
        IpAddr::V6(_) => None,
    }
}

impl<A: Authenticator> UdpDriver<A> {
    /// Wraps a bound socket (IPv4) and a server; its password checks run on checker threads
    /// (`verifier::argon2_check`).
    ///
    /// # Errors
    /// The socket cannot be registered with the event loop, or the threads cannot start.
    pub fn new(socket: std::net::UdpSocket, server: Server<A>, ping: Duration) -> io::Result<Self> {
        Self::with_check(socket, server, ping, verifier::argon2_check)
    }

    /// `new`, the password checks run by `check` (a test's, e.g. one that takes its time).
    ///
    /// # Errors
    /// As `new`.
    pub fn with_check(
        socket: std::net::UdpSocket,
        mut server: Server<A>,
        ping: Duration,
        check: CheckFn,
    ) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let local = match socket.local_addr()? {
            SocketAddr::V4(a) => Remote {
                ip: u32::from(*a.ip()),
                port: a.port(),
            },
            SocketAddr::V6(_) => return Err(io::Error::other("IPv4 only")),
        };
        let mut socket = UdpSocket::from_std(socket);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), VERDICTS)?);
        let verifier = Verifier::start(verifier::THREADS, MAX_VERIFYING, check, Some(waker))?;
        server.set_verify_elsewhere(true);
        Ok(Self {
            socket,
            local,
            poll,
            server,
            verifier,
            data: HashMap::new(),
            ping,
            events: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// The server.
    pub fn server_mut(&mut self) -> &mut Server<A> {
        &mut self.server
    }

    /// Runs until `deadline`, or until `stop` returns true (checked every loop).
    ///
    /// # Errors
    /// The event loop failed.
    pub fn run_until(
        &mut self,
        deadline: Instant,
        mut stop: impl FnMut(&Self) -> bool,
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; 65536];
        loop {
            let now = Instant::now();
            if now >= deadline || stop(self) {
                return Ok(());
            }
            let mut wait = deadline - now;
            if let Some(t) = self.server.poll_timeout() {
                wait = wait.min(t.saturating_duration_since(now));
            }
            wait = wait.min(Duration::from_millis(500));
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            loop {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if let Some(remote) = remote_of(from) {
                            self.handle(remote, &buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            let unix = unix_seconds();
            let verdicts: Vec<_> = self.verifier.verdicts().collect();
            for (_, id, verdict) in verdicts {
                self.server.verified(now, unix, id, verdict);
            }
            self.server.handle_timeout(now);
            self.drain();
            self.send_pings(now);
        }
    }

    fn handle(&mut self, remote: Remote, d: &[u8]) {
        let Some(&b0) = d.first() else { return };
        if Opcode::of(b0) == Opcode::DATA_V2 {
            self.handle_data(remote, d);
            return;
        }
        self.server
            .handle_datagram(Instant::now(), unix_seconds(), remote, self.local, d);
        self.drain();
    }

    fn handle_data(&mut self, remote: Remote, d: &[u8]) {
        let Ok(p) = DataPacket::new_checked(d) else {
            return;
        };
        let (peer, key_id) = (p.peer_id(), p.key_id());
        let Some(s) = self.data.get_mut(&peer.0) else {
            self.stats.data_rejected += 1;
            return;
        };
        let Some(k) = s.keys.iter_mut().find(|k| k.key_id() == key_id) else {
            self.stats.data_rejected += 1;
            return;
        };
        let mut buf = HeapBuf::from_slice(d);
        if k.open(&mut buf).is_err() {
            self.stats.data_rejected += 1;
            return;
        }
        s.remote = remote;
        match classify_plaintext(buf.data()) {
            Plaintext::Keepalive => self.stats.pings_received += 1,
            Plaintext::OccExit => {}
            _ => self.stats.data_received += 1,
        }
    }

    fn send_pings(&mut self, now: Instant) {
        let mut out = Vec::new();
        for (peer, s) in &mut self.data {
            if now.saturating_duration_since(s.last_ping_sent) < self.ping {
                continue;
            }
            s.last_ping_sent = now;
            let Some(k) = s.keys.last_mut() else { continue };
            let mut buf = HeapBuf::from_slice(&PING_MAGIC);
            if k.seal(&mut buf, PeerId(*peer)).is_ok() {
                out.push((s.remote, buf.data().to_vec()));
            }
        }
        for (remote, d) in out {
            self.send(remote, &d);
            self.stats.pings_sent += 1;
        }
    }

    fn send(&mut self, to: Remote, d: &[u8]) {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(to.ip)), to.port);
        let _ = self.socket.send_to(d, addr);
    }

    fn drain(&mut self) {
        self.verifier
            .serve(0, &mut self.server, || (Instant::now(), unix_seconds()));
        while let Some(t) = self.server.poll_transmit() {
            self.send(t.remote, &t.payload);
        }
        while let Some(e) = self.server.poll_event() {
            match &e {
                Event::KeysReady {
                    peer_id,
                    key_id,
                    keys,
                    client,
                    first,
                } => {
                    if let Ok(k) = DataKey::new(KeyId(*key_id), keys) {
                        self.stats.keys_installed += 1;
                        let s = self.data.entry(*peer_id).or_insert_with(|| DataSession {
                            keys: Vec::new(),
                            remote: client.remote,
                            last_ping_sent: Instant::now(),
                        });
                        if *first {
                            s.keys.clear();
                        }
                        s.keys.push(k);
                        while s.keys.len() > 2 {
                            s.keys.remove(0);
                        }
                    }
                }
                Event::RetirePreviousKey { peer_id } => {
                    if let Some(s) = self.data.get_mut(peer_id) {
                        while s.keys.len() > 1 {
                            s.keys.remove(0);
                        }
                    }
                }
                Event::Closed { peer_id, .. } => {
                    self.data.remove(peer_id);
                }
                // The kernel's socket hands every datagram to the server; nothing to filter.
                Event::ControlPeer { .. } => {}
                Event::AuthFailed {
                    remote,
                    common_name,
                    username,
                    detail,
                    ..
                } => {
                    super::log(&format!(
                        "connection from {}:{} refused: {detail} (common name {}, username {})",
                        Ipv4Addr::from(remote.ip),
                        remote.port,
                        super::shown(common_name.as_deref()),
                        super::shown(username.as_deref())
                    ));
                }
            }
            self.events.push(e);
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_secs())
}
