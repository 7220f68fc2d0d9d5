//! One core's whole pipeline (`Worker` on in-memory ports, as the bench and
//! engine/tests/untrusted.rs build it) driven by a script: each step a raw frame on either port,
//! an inner packet sealed with a session's real key (peer-id and packet-id chosen), a sealed
//! frame arriving in outer fragments, return traffic to the ports SNAT gave out (or an ICMP
//! error quoting a frame the core sent), time passing, ARP answers, a rule-table swap, a
//! session removed and added again. Three sessions with three ciphers and different groups
//! (and a fourth on another core's peer-id); the lab's routes allow the VPC and 10.99.0.0/16
//! (group 0 only) and nothing else. The core is one of 256 and knows 64 control peers at most:
//! a lone core's peer-id index (64 MiB) and the default control-peer set, which the address
//! sanitizer zeroes for every input, held the target to 40 executions a second.
//!
//! Oracles beyond "no panic":
//! - every frame the core sends into the subnet is ARP, or IPv4 from the ENI whose header
//!   checksum verifies;
//! - every frame it sends toward the clients is ARP, an ICMP echo reply from the outside
//!   address, or a UDP datagram from the listener (in outer fragments, put back together) that
//!   opens with the key of the session its peer-id names (or of a session it replaced: a
//!   frame sealed before waits while the client's address is resolved again), whose inner
//!   packet is a keepalive ping or IPv4 to that session's virtual address with a verifying
//!   header checksum;
//! - in strict mode (first byte odd) every packet the script injects carries correct
//!   checksums, and then every unfragmented UDP, TCP and ICMP packet the core sends either way
//!   carries a correct transport checksum too (otherwise a wrong one is forwarded as it came,
//!   rightly);
//! - every frame injected is taken (none left waiting in the port), and a frame that is
//!   neither a fragment nor waiting for ARP resolution leads to a frame sent, a punt or
//!   another report, or a counted drop: nothing vanishes uncounted;
//! - the flow table stays within its capacity.
//!
//! Exact conservation (frames in = frames out + held + drops) is not checked: one frame may
//! become several (fragments, an ICMP error and an ARP request) or several one (reassembly),
//! ARP frames are consumed by design, and what the core holds (ARP queue, reassembly, early
//! fragments) is not visible from outside the crate.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice_engine::crypto::Cipher;
use sluice_engine::mailbox::{Command, Mailbox, Report};
use sluice_engine::port::MemPort;
use sluice_engine::rules::GroupMask;
use sluice_engine::testkit::{self, ip, lab, Client};
use sluice_engine::wire::icmp::IcmpPacket;
use sluice_engine::wire::ipv4::{protocol, Ipv4Packet};
use sluice_engine::wire::openvpn::{KeyId, PeerId};
use sluice_engine::wire::tcp::TcpPacket;
use sluice_engine::wire::udp::UdpPacket;
use sluice_engine::worker::Worker;

const OUTSIDE: usize = 0;
const INSIDE: usize = 1;
const FLOWS: usize = 256;
const STEPS: usize = 48;
const CORES: usize = 256;
/// The ENI a rule-table swap moves the target network to.
const ENI2: &str = "172.31.1.6";

/// Where clients send: the VPC host, another VPC address (needs ARP), group 0's network,
/// an address with no route, the tunnel gateway, the appliance's own addresses, broadcast.
const DESTINATIONS: [&str; 8] = [
    lab::HOST_IP,
    "172.31.1.77",
    "10.99.3.4",
    "8.8.8.8",
    "10.200.0.1",
    lab::INSIDE_IP,
    "172.31.1.255",
    "172.31.9.9",
];
const PROTOCOLS: [u8; 4] = [protocol::UDP, protocol::TCP, protocol::ICMP, 47];

struct Session {
    peer: PeerId,
    vip: u32,
    groups: GroupMask,
    cipher: Cipher,
    seed: u8,
    client: Client,
    /// The clients of the sessions this one replaced: a frame sealed before a replacement
    /// may leave after it (held while the client's address is resolved again).
    previous: Vec<Client>,
}

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    /// A length byte (long when its top bit is set: up to about 1.6 KB) and that many bytes.
    fn chunk(&mut self) -> &'a [u8] {
        let l = self.u8();
        let n = if l & 0x80 != 0 {
            usize::from(l & 0x7f) * 13
        } else {
            usize::from(l)
        };
        self.take(n)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Sets the lengths of an IPv4 packet built here (a 20-byte header, then its payload): its
/// total length, and a UDP datagram's.
fn set_lengths(p: &mut [u8]) {
    if p[9] == protocol::UDP && p.len() >= 28 {
        let l = (p.len() - 20) as u16;
        p[24..26].copy_from_slice(&l.to_be_bytes());
    }
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
}

/// Makes the IPv4 header checksum and, when the packet is not a fragment, its UDP, TCP or
/// ICMP checksum right (strict mode).
fn fix_checksums(p: &mut [u8]) {
    let Ok(mut ipp) = Ipv4Packet::new_checked(&mut *p) else {
        return;
    };
    ipp.fill_checksum();
    if ipp.is_fragment() {
        return;
    }
    let (src, dst, proto) = (ipp.src(), ipp.dst(), ipp.protocol());
    let payload = ipp.payload_mut();
    match proto {
        protocol::UDP => {
            if let Ok(mut u) = UdpPacket::new_checked(payload) {
                u.fill_checksum(src, dst);
            }
        }
        protocol::TCP => {
            if let Ok(mut t) = TcpPacket::new_checked(payload) {
                t.fill_checksum(src, dst);
            }
        }
        protocol::ICMP => {
            if let Ok(mut i) = IcmpPacket::new_checked(payload) {
                i.fill_checksum();
            }
        }
        _ => {}
    }
}

/// Whether the unfragmented transport checksum of `p` (an IPv4 packet) verifies; true for
/// fragments and other protocols.
fn transport_ok(p: &Ipv4Packet<&[u8]>) -> bool {
    if p.is_fragment() {
        return true;
    }
    let (src, dst) = (p.src(), p.dst());
    match p.protocol() {
        protocol::UDP => {
            UdpPacket::new_checked(p.payload()).map_or(true, |u| u.verify_checksum(src, dst))
        }
        protocol::TCP => {
            TcpPacket::new_checked(p.payload()).map_or(true, |t| t.verify_checksum(src, dst))
        }
        protocol::ICMP => {
            IcmpPacket::new_checked(p.payload()).map_or(true, |i| i.verify_checksum())
        }
        _ => true,
    }
}

struct Rig {
    w: Worker<MemPort>,
    mb: Mailbox,
    now: Instant,
    sessions: Vec<Session>,
    strict: bool,
    rules_version: u64,
    /// The ENI address of the rule table in force, and whether another was ever installed.
    eni: u32,
    moved_eni: bool,
    /// IPv4 packets the core sent into the subnet (return traffic and ICMP errors quote them).
    inside_sent: Vec<Vec<u8>>,
    /// Addresses the core asked for with ARP on each port and not yet answered.
    asked: Vec<(usize, u32)>,
    /// Whether the frame just injected may be held (a fragment, or waiting for ARP).
    may_hold: bool,
}

impl Rig {
    fn new(strict: bool) -> Self {
        // The harness stands in for the worker shell's clock (then moves it on itself).
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mb = Mailbox::new(128);
        let mut cfg = testkit::lab_config(FLOWS, 16);
        cfg.neighbour_capacity = 32;
        cfg.reassembly_capacity = 4;
        cfg.control_peer_capacity = 64;
        // One core of 256: its peer-id index is 256 times smaller than one core's of one (64
        // MiB, which the address sanitizer zeroes on every run), and its SNAT port range is
        // small enough to run out.
        cfg.cores = CORES;
        let mut w = testkit::lab_worker(vec![MemPort::new(), MemPort::new()], cfg, mb.clone(), now);
        let specs = [
            (
                1,
                "10.200.0.2",
                GroupMask::EMPTY.with(0),
                Cipher::Aes256Gcm,
                7,
            ),
            (
                2,
                "10.200.0.3",
                GroupMask::EMPTY,
                Cipher::ChaCha20Poly1305,
                9,
            ),
            (
                3,
                "10.200.0.4",
                GroupMask::EMPTY.with(1),
                Cipher::Aes128Gcm,
                11,
            ),
            (0, "10.200.0.5", GroupMask::EMPTY, Cipher::Aes256Gcm, 13),
        ];
        let mut sessions = Vec::new();
        for (n, vip, groups, cipher, seed) in specs {
            // This core's peer-ids (peer-id modulo the cores), the last one another core's.
            let peer = if n == 0 { 1 } else { n * CORES as u32 };
            let keys = testkit::queue_session(&mb, PeerId(peer), ip(vip), groups, cipher, seed);
            sessions.push(Session {
                peer: PeerId(peer),
                vip: ip(vip),
                groups,
                cipher,
                seed,
                client: Client::new(PeerId(peer), KeyId(0), &keys),
                previous: Vec::new(),
            });
        }
        testkit::apply_commands(&mut w, &mb, now);
        while mb.reports.pop().is_some() {}
        Self {
            w,
            mb,
            now,
            sessions,
            strict,
            rules_version: 1,
            eni: ip(lab::INSIDE_IP),
            moved_eni: false,
            inside_sent: Vec::new(),
            asked: Vec::new(),
            may_hold: false,
        }
    }

    fn port(&mut self, i: usize) -> &mut MemPort {
        match self.w.port_mut(i) {
            Some(p) => p,
            None => unreachable!("the lab has two ports"),
        }
    }

    /// Injects `frames` on `port`, polls, and checks what came out.
    fn inject(&mut self, port: usize, frames: &[Vec<u8>]) {
        for f in frames {
            self.port(port).inject(f);
        }
        let drops = self.w.drops().total();
        self.w.poll_once(self.now);
        assert_eq!(
            self.port(port).pending_rx(),
            0,
            "a frame left waiting in the port"
        );
        let reports = self.drain_reports();
        let sent = self.check_sent();
        let counted = self.w.drops().total() > drops;
        if !self.may_hold && self.asked.is_empty() && !frames.is_empty() {
            assert!(
                sent > 0 || reports > 0 || counted,
                "a frame vanished uncounted: {:02x?}",
                frames
            );
        }
        self.may_hold = false;
    }

    fn drain_reports(&mut self) -> usize {
        let mut n = 0;
        while let Some(r) = self.mb.reports.pop() {
            if !matches!(r, Report::Retired(_)) {
                n += 1;
            }
        }
        n
    }

    /// A frame the core sent on `port` (`toward`: where that leads, for the messages): an ARP
    /// frame is checked and taken (`saw_arp`, None); anything else must be IPv4 with a header
    /// that parses and a checksum that verifies, and is returned.
    fn ipv4_sent<'f>(
        &mut self,
        port: usize,
        f: &'f [u8],
        toward: &str,
    ) -> Option<Ipv4Packet<&'f [u8]>> {
        assert!(f.len() >= 14, "a runt frame {toward}");
        if f[12..14] == [0x08, 0x06] {
            self.saw_arp(port, f);
            return None;
        }
        assert_eq!(f[12..14], [0x08, 0x00], "not IPv4 {toward}");
        let Ok(p) = Ipv4Packet::new_checked(&f[14..]) else {
            panic!("an IPv4 header that does not parse {toward}: {f:02x?}")
        };
        assert!(
            p.verify_checksum(),
            "a wrong header checksum {toward}: {f:02x?}"
        );
        Some(p)
    }

    /// Checks every frame sent since the last call; returns how many there were.
    fn check_sent(&mut self) -> usize {
        let inside = self.port(INSIDE).take_sent();
        let outside = self.port(OUTSIDE).take_sent();
        let n = inside.len() + outside.len();
        for f in inside {
            let Some(p) = self.ipv4_sent(INSIDE, &f, "into the subnet") else {
                continue;
            };
            // From the ENI (a flow made under a table with another ENI keeps that one).
            let src = u32::from_be_bytes(p.src());
            let enis = [self.eni, ip(lab::INSIDE_IP), ip(ENI2)];
            assert!(
                src == self.eni || (self.moved_eni && enis.contains(&src)),
                "not from the ENI: {f:02x?}"
            );
            assert!(
                !self.strict || transport_ok(&p),
                "a wrong transport checksum into the subnet: {f:02x?}"
            );
            if self.inside_sent.len() < 16 {
                self.inside_sent.push(f[14..14 + p.total_len()].to_vec());
            }
        }
        let mut whole = Vec::new();
        let mut pieces = Vec::new();
        for f in outside {
            let Some(p) = self.ipv4_sent(OUTSIDE, &f, "toward the clients") else {
                continue;
            };
            if p.is_fragment() {
                pieces.push(f);
            } else {
                whole.push(f);
            }
        }
        // Outer fragments are sent together: they must make whole datagrams (the testkit's
        // reassembly panics on a gap, an overlap or a missing last fragment).
        whole.extend(testkit::reassemble(&pieces));
        for f in whole {
            self.check_to_client(&f);
        }
        n
    }

    fn check_to_client(&mut self, f: &[u8]) {
        let p = match Ipv4Packet::new_checked(&f[14..]) {
            Ok(p) => p,
            Err(_) => panic!("reassembled wrong"),
        };
        assert_eq!(u32::from_be_bytes(p.src()), ip(lab::OUTSIDE_IP));
        match p.protocol() {
            protocol::ICMP => {
                let i = IcmpPacket::new_checked(p.payload());
                assert!(
                    i.is_ok_and(|i| i.kind() == 0 && i.verify_checksum()),
                    "ICMP toward the clients"
                );
            }
            protocol::UDP => {
                let Ok(u) = UdpPacket::new_checked(p.payload()) else {
                    panic!("a UDP header that does not parse toward the clients")
                };
                assert_eq!(u.src_port(), lab::VPN_PORT);
                assert!(
                    u.verify_checksum(p.src(), p.dst()),
                    "a wrong outer UDP checksum"
                );
                let pl = u.payload();
                if pl.first().map(|b| b >> 3) != Some(9) {
                    // Not P_DATA_V2: a control packet control asked to transmit (none here).
                    panic!("a non-data packet toward the clients: {pl:02x?}");
                }
                let peer = u32::from_be_bytes([0, pl[1], pl[2], pl[3]]);
                let Some(s) = self.sessions.iter_mut().find(|s| s.peer.0 == peer) else {
                    panic!("sealed for peer-id {peer}, no such session")
                };
                let opened = match s.client.open(f) {
                    Some(inner) => Some(inner),
                    None => s.previous.iter_mut().find_map(|c| c.open(f)),
                };
                let Some(inner) = opened else {
                    panic!("does not open with session {peer}'s key")
                };
                if inner == sluice_engine::crypto::data_channel::PING_MAGIC {
                    return;
                }
                let Ok(ip_in) = Ipv4Packet::new_checked(&inner[..]) else {
                    panic!("sealed toward the client, not IPv4: {inner:02x?}")
                };
                assert!(
                    ip_in.verify_checksum(),
                    "a wrong inner header checksum: {inner:02x?}"
                );
                assert_eq!(
                    u32::from_be_bytes(ip_in.dst()),
                    s.vip,
                    "sealed for session {peer}, to another address"
                );
                assert!(
                    !self.strict || transport_ok(&ip_in),
                    "a wrong inner transport checksum: {inner:02x?}"
                );
            }
            other => panic!("IPv4 protocol {other} toward the clients"),
        }
    }

    fn saw_arp(&mut self, port: usize, f: &[u8]) {
        // A request from the core (opcode 1, from our address): remember what it asked for.
        if f.len() >= 42 && f[21] == 1 {
            let target = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
            if !self.asked.contains(&(port, target)) && self.asked.len() < 16 {
                self.asked.push((port, target));
            }
        }
    }

    fn answer_arp(&mut self) {
        // Nobody answers for the appliance's own addresses (a client's packet to the ENI is
        // routed into the subnet and waits for ARP until dropped, `arp_unresolved`): those
        // stay asked, and the check for frames vanishing uncounted stays off.
        let own = [ip(lab::INSIDE_IP), ip(ENI2), ip(lab::OUTSIDE_IP)];
        let (unanswered, asked): (Vec<_>, Vec<_>) = std::mem::take(&mut self.asked)
            .into_iter()
            .partition(|(_, target)| own.contains(target));
        self.asked = unanswered;
        for (port, target) in asked {
            let (mac, to_mac, to_ip) = if port == INSIDE {
                (
                    [2, 0, 0, 0, 3, target as u8],
                    lab::INSIDE_MAC,
                    ip(lab::INSIDE_IP),
                )
            } else {
                (
                    [2, 0, 0, 0, 4, target as u8],
                    lab::OUTSIDE_MAC,
                    ip(lab::OUTSIDE_IP),
                )
            };
            let reply = testkit::arp_reply(mac, target, to_mac, to_ip);
            self.port(port).inject(&reply);
        }
        self.w.poll_once(self.now);
        self.drain_reports();
        self.check_sent();
    }

    fn seal(&mut self, s: usize, pid: Option<u32>, inner: &[u8]) -> Vec<u8> {
        let c = &mut self.sessions[s].client;
        if let Some(pid) = pid {
            c.set_next_packet_id(pid);
        }
        c.frame(inner)
    }

    /// An inner packet from session `s` built from the script.
    fn inner_packet(&mut self, s: usize, b: &mut Bytes) -> Vec<u8> {
        let sel = b.u8();
        let body = b.chunk();
        let mut p = if sel & 0x80 != 0 {
            // The script's own bytes, whole.
            body.to_vec()
        } else {
            let src = if sel & 0x40 != 0 {
                u32::from_be_bytes([10, 200, 0, b.u8()])
            } else {
                self.sessions[s].vip
            };
            let dst = ip(DESTINATIONS[usize::from(sel & 7)]);
            let proto = PROTOCOLS[usize::from((sel >> 3) & 3)];
            let frag = if sel & 0x20 != 0 { b.u16() } else { 0x4000 };
            let ttl = b.u8();
            let mut p = vec![0u8; 20];
            p[0] = 0x45;
            p[6..8].copy_from_slice(&frag.to_be_bytes());
            p[4..6].copy_from_slice(&[0x12, s as u8]);
            p[8] = ttl;
            p[9] = proto;
            p[12..16].copy_from_slice(&src.to_be_bytes());
            p[16..20].copy_from_slice(&dst.to_be_bytes());
            p.extend_from_slice(body);
            set_lengths(&mut p);
            self.may_hold |= frag & 0x3fff != 0;
            p
        };
        if self.strict {
            fix_checksums(&mut p);
        }
        p
    }

    fn step(&mut self, b: &mut Bytes) {
        // The low nibble chooses the step (modulo 10), the high one varies it.
        let op = b.u8();
        let kind = (op & 0x0f) % 10;
        match kind {
            // A raw frame on the outside or inside port (Ethernet header given, or ours).
            0 | 1 => {
                let port = usize::from(kind);
                let kind = b.u8();
                let body = b.chunk();
                let mut f = if kind & 1 != 0 {
                    let (dst, src) = if port == INSIDE {
                        (lab::INSIDE_MAC, lab::HOST_MAC)
                    } else {
                        (lab::OUTSIDE_MAC, lab::CLIENT_MAC)
                    };
                    let et: [u8; 2] = if kind & 2 != 0 { [8, 6] } else { [8, 0] };
                    [&dst[..], &src[..], &et[..], body].concat()
                } else {
                    body.to_vec()
                };
                if self.strict && f.len() > 14 {
                    fix_checksums(&mut f[14..]);
                }
                self.may_hold = f.len() > 21 && (f[20] & 0x3f != 0 || f[21] != 0);
                self.inject(port, &[f]);
            }
            // An inner packet sealed with a session's key.
            2 | 3 => {
                let s = usize::from(b.u8()) % self.sessions.len();
                let pid = (op & 0x10 != 0).then(|| u32::from(b.u16()));
                let inner = self.inner_packet(s, b);
                let f = self.seal(s, pid, &inner);
                self.inject(OUTSIDE, &[f]);
            }
            // A sealed frame in outer fragments, in some order.
            4 => {
                let s = usize::from(b.u8()) % self.sessions.len();
                let mtu = 68 + usize::from(b.u8()) * 4;
                let rot = usize::from(b.u8());
                let inner = self.inner_packet(s, b);
                let f = self.seal(s, None, &inner);
                let mut pieces = testkit::fragment(&f, mtu);
                let n = pieces.len();
                pieces.rotate_left(rot % n);
                if rot & 0x80 != 0 {
                    pieces.truncate(n.saturating_sub(1).max(1));
                }
                self.may_hold = true;
                self.inject(OUTSIDE, &pieces);
            }
            // Return traffic from the VPC to the ENI: to a port SNAT gave out, or chosen.
            5 | 6 => {
                let sel = b.u8();
                let body = b.chunk();
                let mut p = vec![0u8; 20];
                let known = self.inside_sent.get(usize::from(sel >> 4)).cloned();
                let (src, mut proto, ports) = match &known {
                    Some(k) if k.len() >= 24 && sel & 8 == 0 => {
                        let ihl = usize::from(k[0] & 0xf) * 4;
                        // The ports swapped, or an echo's identifier.
                        let pp = match k.get(ihl..ihl + 8) {
                            Some(x) if k[9] == protocol::ICMP => [x[4], x[5], 0, 0],
                            Some(x) => [x[2], x[3], x[0], x[1]],
                            None => [0; 4],
                        };
                        ([k[16], k[17], k[18], k[19]], k[9], pp)
                    }
                    _ => (
                        ip(lab::HOST_IP).to_be_bytes(),
                        PROTOCOLS[usize::from(sel & 3)],
                        [b.u8(), b.u8(), b.u8(), b.u8()],
                    ),
                };
                if kind == 6 {
                    proto = protocol::ICMP;
                }
                let frag = if op & 0x80 != 0 { b.u16() } else { 0 };
                self.may_hold = frag & 0x3fff != 0;
                p[0] = 0x45;
                p[4..6].copy_from_slice(&[0x34, sel]);
                p[6..8].copy_from_slice(&frag.to_be_bytes());
                p[8] = if sel & 4 != 0 { 1 } else { 64 };
                p[9] = proto;
                p[12..16].copy_from_slice(&src);
                p[16..20].copy_from_slice(&self.eni.to_be_bytes());
                if kind == 6 {
                    // An ICMP error (unreachable, or time exceeded) quoting a packet the core
                    // sent.
                    let quoted = known.unwrap_or_default();
                    p.extend_from_slice(&[
                        3 + (sel & 8),
                        body.first().copied().unwrap_or(4),
                        0,
                        0,
                        0,
                        0,
                        5,
                        0xdc,
                    ]);
                    p.extend_from_slice(&quoted[..quoted.len().min(576)]);
                    p.extend_from_slice(body);
                } else if proto == protocol::ICMP {
                    // An echo reply to an identifier the core gave out.
                    p.extend_from_slice(&[0, 0, 0, 0]);
                    p.extend_from_slice(&ports[..2]);
                    p.extend_from_slice(body);
                } else {
                    p.extend_from_slice(&ports);
                    p.extend_from_slice(body);
                }
                set_lengths(&mut p);
                if self.strict {
                    fix_checksums(&mut p);
                }
                let f = testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &p);
                self.inject(INSIDE, &[f]);
            }
            // Time passes: milliseconds, or seconds.
            7 => {
                let v = u64::from(b.u8());
                self.now += if op & 0x80 != 0 {
                    Duration::from_secs(v)
                } else {
                    Duration::from_millis(v * 8)
                };
                self.w.poll_once(self.now);
                self.drain_reports();
                self.check_sent();
            }
            // The neighbours the core asked for answer.
            8 => self.answer_arp(),
            // A rule-table swap, or a session removed and added again.
            _ => {
                let which = b.u8();
                self.rules_version += 1;
                let v = self.rules_version;
                if which % 5 != 4 {
                    self.eni = if which % 5 == 3 {
                        ip(ENI2)
                    } else {
                        ip(lab::INSIDE_IP)
                    };
                    self.moved_eni |= which % 5 == 3;
                }
                let cmd = match which % 5 {
                    0 => Command::InstallRules(Arc::new(testkit::lab_rules(v))),
                    1 => Command::InstallRules(Arc::new(testkit::lab_rules_vpc_only(v))),
                    2 => Command::InstallRules(Arc::new(testkit::lab_rules_for_group(v, 1))),
                    3 => Command::InstallRules(Arc::new(testkit::lab_rules_via_eni(v, ip(ENI2)))),
                    _ => {
                        let s = usize::from(which >> 3) % self.sessions.len();
                        let peer = self.sessions[s].peer;
                        let _ = self.mb.commands.push(Command::RemoveSession { peer });
                        let ss = &mut self.sessions[s];
                        ss.seed = ss.seed.wrapping_add(100);
                        let keys = testkit::queue_session(
                            &self.mb, peer, ss.vip, ss.groups, ss.cipher, ss.seed,
                        );
                        let old =
                            std::mem::replace(&mut ss.client, Client::new(peer, KeyId(0), &keys));
                        ss.previous.push(old);
                        testkit::apply_commands(&mut self.w, &self.mb, self.now);
                        self.drain_reports();
                        self.check_sent();
                        return;
                    }
                };
                let _ = self.mb.commands.push(cmd);
                testkit::apply_commands(&mut self.w, &self.mb, self.now);
                self.drain_reports();
                self.check_sent();
            }
        }
        assert!(
            self.w.flow_count() <= FLOWS,
            "the flow table grew past its capacity"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let strict = b.u8() & 1 != 0;
    let mut rig = Rig::new(strict);
    for _ in 0..STEPS {
        if b.is_empty() {
            break;
        }
        rig.step(&mut b);
    }
    // Whatever was held comes out or is dropped in time.
    rig.now += Duration::from_secs(3);
    rig.w.poll_once(rig.now);
    rig.drain_reports();
    rig.check_sent();
});
