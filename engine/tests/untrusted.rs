//! Untrusted input through the whole pipeline of one core, as a property: arbitrary frames on
//! both ports, mutations of real ones (the client's sealed frames, return traffic, ICMP errors
//! quoting translated packets, ARP, fragments of the client's frames), and authenticated packets
//! from the client whose inner bytes are arbitrary or mutated, interleaved with time passing. Whatever arrives:
//!
//! - the core does not panic (a release build aborts on panic: the appliance would be down);
//! - nothing leaves toward the clients but ARP, ICMP from the appliance's own address,
//!   packets sealed with the session's key and stateless answers to hard resets whose session
//!   id verifies under the core's key (no plaintext, no reflected garbage);
//! - nothing enters a target subnet but ARP and IPv4 from the ENI address (SNAT never leaks
//!   a client's virtual address);
//! - the session survives: a ping through the tunnel and back works afterwards.

// A test harness: it unwraps freely and stands in for the worker shell's clock.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use sluice_engine::cookie::CookieKey;
use sluice_engine::crypto::Cipher;
use sluice_engine::mailbox::Mailbox;
use sluice_engine::port::MemPort;
use sluice_engine::rules::GroupMask;
use sluice_engine::session::Remote;
use sluice_engine::testkit::{self, ip, lab, Client};
use sluice_engine::wire::icmp::{kind, IcmpPacket};
use sluice_engine::wire::ipv4::{protocol, Ipv4Packet};
use sluice_engine::wire::openvpn::{KeyId, PeerId};
use sluice_engine::wire::tcp::{flags, TcpPacket};
use sluice_engine::wire::udp::UdpPacket;
use sluice_engine::worker::Worker;

const OUTSIDE: usize = 0;
const INSIDE: usize = 1;
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

/// Byte overwrites (position taken modulo the length) and a cut (modulo the length plus one).
#[derive(Clone, Debug)]
struct Mutation {
    writes: Vec<(usize, u8)>,
    cut: Option<usize>,
}

impl Mutation {
    fn apply(&self, mut p: Vec<u8>) -> Vec<u8> {
        if !p.is_empty() {
            for &(at, v) in &self.writes {
                let n = p.len();
                p[at % n] = v;
            }
        }
        if let Some(c) = self.cut {
            p.truncate(c % (p.len() + 1));
        }
        p
    }
}

#[derive(Clone, Debug)]
enum Event {
    /// The client seals arbitrary bytes as an inner packet.
    Sealed(Vec<u8>),
    /// The client seals one of its first packets, mutated.
    SealedMutant(usize, Mutation),
    /// A frame the client sent earlier arrives again, mutated.
    ClientFrameMutant(usize, Mutation),
    /// Return traffic to a translated flow (or an ICMP error about one), or ARP, mutated.
    InsideMutant(usize, Mutation),
    /// An Ethernet header to the appliance (IPv4 or ARP) and arbitrary bytes after it.
    Raw {
        inside: bool,
        arp: bool,
        body: Vec<u8>,
    },
    /// The client seals one of its first packets (or a full-size one), and the frame arrives
    /// in fragments of at most `mtu` bytes, rotated, one perhaps mutated (its header checksum
    /// made right again or not).
    Fragmented {
        which: usize,
        mtu: usize,
        rotate: usize,
        mutated: Option<(usize, Mutation, bool)>,
    },
    /// The client sends one of its first packets in inner fragments of at most `mtu` bytes,
    /// each sealed on its own, in rotated order (a later one before its first, at times).
    InnerFragments {
        which: usize,
        mtu: usize,
        rotate: usize,
    },
    /// Time passes.
    Wait(u16),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        proptest::option::weighted(0.2, any::<usize>()),
    )
        .prop_map(|(writes, cut)| Mutation { writes, cut })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..120).prop_map(Event::Sealed),
        4 => (any::<usize>(), mutation()).prop_map(|(i, m)| Event::SealedMutant(i, m)),
        2 => (any::<usize>(), mutation()).prop_map(|(i, m)| Event::ClientFrameMutant(i, m)),
        5 => (any::<usize>(), mutation()).prop_map(|(i, m)| Event::InsideMutant(i, m)),
        2 => (any::<bool>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..100))
            .prop_map(|(inside, arp, body)| Event::Raw { inside, arp, body }),
        3 => (
            any::<usize>(),
            576usize..1500,
            any::<usize>(),
            proptest::option::of((any::<usize>(), mutation(), any::<bool>())),
        )
            .prop_map(|(which, mtu, rotate, mutated)| Event::Fragmented {
                which,
                mtu,
                rotate,
                mutated
            }),
        2 => (any::<usize>(), 576usize..1400, any::<usize>())
            .prop_map(|(which, mtu, rotate)| Event::InnerFragments { which, mtu, rotate }),
        1 => (0u16..400).prop_map(Event::Wait),
    ]
}

/// The client's first packets: valid and authorized, so that each makes a flow.
fn first_packets() -> Vec<Vec<u8>> {
    let (c, h) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
    vec![
        testkit::ipv4_tcp(c, 40_000, h, 80, flags::SYN, Some(1460), b""),
        testkit::ipv4_tcp(c, 40_000, h, 80, flags::ACK, None, b"GET /"),
        testkit::ipv4_udp(c, 5000, h, 53, b"query"),
        testkit::ipv4_udp(c, 5001, h, 4789, &[0x5a; 1200]),
        testkit::ipv4_tcp(c, 40_001, h, 443, flags::ACK, None, &[0xa5; 300]),
        testkit::ipv4_echo(c, h, true, 7, 1, b"ping"),
        testkit::ipv4_udp(c, 5002, h, 9, &[0x77; 1472]),
    ]
}

/// What the host sends back to a translated packet `t` (IPv4, as it left the inside port),
/// and ICMP errors from the router and the host quoting it.
fn return_traffic(t: &[u8]) -> Vec<Vec<u8>> {
    let p = Ipv4Packet::new_checked(t).unwrap();
    let (eni, host) = (u32::from_be_bytes(p.src()), u32::from_be_bytes(p.dst()));
    let reply = match p.protocol() {
        protocol::TCP => {
            let s = TcpPacket::new_checked(p.payload()).unwrap();
            testkit::ipv4_tcp(
                host,
                s.dst_port(),
                eni,
                s.src_port(),
                flags::SYN | flags::ACK,
                Some(1460),
                b"",
            )
        }
        protocol::UDP => {
            // As long as the request: the full-size one leaves in fragments.
            let u = UdpPacket::new_checked(p.payload()).unwrap();
            let answer = vec![0x33; u.payload().len()];
            testkit::ipv4_udp(host, u.dst_port(), eni, u.src_port(), &answer)
        }
        _ => {
            let i = IcmpPacket::new_checked(p.payload()).unwrap();
            testkit::ipv4_echo(host, eni, false, i.echo_id(), 1, b"pong")
        }
    };
    let mut out = vec![reply];
    for (from, k, code) in [
        (ip(lab::ROUTER_IP), kind::TIME_EXCEEDED, 0),
        (host, kind::DEST_UNREACHABLE, 3),
    ] {
        let quoted = &t[..t.len().min(20 + 28)];
        out.push(testkit::ipv4_icmp_error(from, eni, k, code, quoted));
    }
    out
}

/// `frames` sent toward the clients with the fragments among them put back together: none
/// may be longer than the 1500-byte MTU or carry DF, and every fragment has to be part of one
/// complete datagram (a core sends all of a datagram's at once).
fn reassembled(frames: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, TestCaseError> {
    for f in &frames {
        if f.len() < 34 || f[12..14] != ETHERTYPE_IPV4 {
            continue;
        }
        if let Ok(p) = Ipv4Packet::new_checked(&f[14..]) {
            if p.is_fragment() {
                prop_assert!(p.total_len() <= 1500 && p.verify_checksum() && !p.dont_fragment());
            }
        }
    }
    Ok(testkit::reassemble(&frames))
}

/// What `check_sent` found: IPv4 frames into the subnet, and the inner packets sealed for the
/// client.
type Sent = (Vec<Vec<u8>>, Vec<Vec<u8>>);

struct Rig {
    w: Worker<MemPort>,
    client: Client,
    /// The core's cookie key: it answers first hard resets itself.
    cookies: std::sync::Arc<CookieKey>,
    epoch: Instant,
    now: Instant,
    /// Every frame the client sent.
    client_frames: Vec<Vec<u8>>,
    /// IPv4 packets a target subnet sends toward the appliance, and ARP frames.
    inside_templates: Vec<Vec<u8>>,
}

impl Rig {
    fn new() -> Self {
        let now = Instant::now();
        let mb = Mailbox::new(1024);
        let cookies = std::sync::Arc::new(CookieKey::generate(60).unwrap());
        let mut cfg = testkit::lab_config(1024, 64);
        cfg.cookies = Some(std::sync::Arc::clone(&cookies));
        let mut w = testkit::lab_worker(vec![MemPort::new(), MemPort::new()], cfg, mb.clone(), now);
        let keys = testkit::queue_session(
            &mb,
            PeerId(5),
            ip(lab::CLIENT_VIP),
            GroupMask::EMPTY,
            Cipher::Aes256Gcm,
            7,
        );
        testkit::apply_commands(&mut w, &mb, now);
        let mut rig = Self {
            w,
            client: Client::new(PeerId(5), KeyId(0), &keys),
            cookies,
            epoch: now,
            now,
            client_frames: Vec::new(),
            inside_templates: Vec::new(),
        };
        for p in first_packets() {
            rig.send_from_client(&p);
        }
        let (sent, _) = rig.check_sent().unwrap();
        assert_eq!(sent.len(), first_packets().len(), "the first packets pass");
        // A client's first hard reset, which the core answers (its mutants come as client
        // frames).
        let reset = testkit::ipv4_udp(
            ip(lab::CLIENT_OUTER_IP),
            50_000,
            ip(lab::OUTSIDE_IP),
            lab::VPN_PORT,
            &[0x38, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0],
        );
        let reset = testkit::eth_ipv4(lab::OUTSIDE_MAC, lab::CLIENT_MAC, &reset);
        rig.inject(OUTSIDE, &reset);
        rig.client_frames.push(reset);
        let answers = rig.w.port_mut(OUTSIDE).unwrap().take_sent();
        assert_eq!(answers.len(), 1, "the reset is answered");
        for f in &sent {
            for p in return_traffic(&f[14..]) {
                let frame = testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &p);
                // The long ones in fragments too.
                if p.len() > 576 {
                    rig.inside_templates.extend(testkit::fragment(&frame, 576));
                }
                rig.inside_templates.push(frame);
            }
        }
        rig.inside_templates.push(testkit::arp_request(
            lab::HOST_MAC,
            ip(lab::HOST_IP),
            ip(lab::INSIDE_IP),
        ));
        rig.inside_templates.push(testkit::arp_reply(
            lab::ROUTER_MAC,
            ip(lab::ROUTER_IP),
            lab::INSIDE_MAC,
            ip(lab::INSIDE_IP),
        ));
        rig
    }

    fn send_from_client(&mut self, inner: &[u8]) {
        let f = self.client.frame(inner);
        self.inject(OUTSIDE, &f);
        self.client_frames.push(f);
    }

    fn inject(&mut self, port: usize, frame: &[u8]) {
        self.w.port_mut(port).unwrap().inject(frame);
        self.w.poll_once(self.now);
    }

    fn apply(&mut self, e: &Event) {
        match e {
            Event::Sealed(bytes) => self.send_from_client(bytes),
            Event::SealedMutant(i, m) => {
                let firsts = first_packets();
                let p = m.apply(firsts[i % firsts.len()].clone());
                self.send_from_client(&p);
            }
            Event::ClientFrameMutant(i, m) => {
                let f = m.apply(self.client_frames[i % self.client_frames.len()].clone());
                self.inject(OUTSIDE, &f);
            }
            Event::InsideMutant(i, m) => {
                let t = &self.inside_templates;
                let f = m.apply(t[i % t.len()].clone());
                self.inject(INSIDE, &f);
            }
            Event::Raw { inside, arp, body } => {
                let (port, dst, src) = if *inside {
                    (INSIDE, lab::INSIDE_MAC, lab::HOST_MAC)
                } else {
                    (OUTSIDE, lab::OUTSIDE_MAC, lab::CLIENT_MAC)
                };
                let mut f = [&dst[..], &src[..]].concat();
                f.extend_from_slice(if *arp {
                    &ETHERTYPE_ARP
                } else {
                    &ETHERTYPE_IPV4
                });
                f.extend_from_slice(body);
                self.inject(port, &f);
            }
            Event::Fragmented {
                which,
                mtu,
                rotate,
                mutated,
            } => {
                let firsts = first_packets();
                let f = self.client.frame(&firsts[which % firsts.len()]);
                self.client_frames.push(f.clone());
                let mut pieces = testkit::fragment(&f, *mtu);
                let n = pieces.len();
                pieces.rotate_left(rotate % n);
                if let Some((i, m, fix)) = mutated {
                    let p = &mut pieces[i % n];
                    *p = m.apply(std::mem::take(p));
                    if *fix && p.len() >= 34 {
                        if let Ok(mut h) = Ipv4Packet::new_checked(&mut p[14..]) {
                            h.fill_checksum();
                        }
                    }
                }
                for p in &pieces {
                    self.w.port_mut(OUTSIDE).unwrap().inject(p);
                }
                self.w.poll_once(self.now);
            }
            Event::InnerFragments { which, mtu, rotate } => {
                let firsts = first_packets();
                let frame = testkit::eth_ipv4(
                    lab::INSIDE_MAC,
                    lab::HOST_MAC,
                    &firsts[which % firsts.len()],
                );
                let mut pieces = testkit::fragment(&frame, *mtu);
                let n = pieces.len();
                pieces.rotate_left(rotate % n);
                for p in &pieces {
                    self.send_from_client(&p[14..]);
                }
            }
            Event::Wait(s) => {
                self.now += Duration::from_secs(u64::from(*s));
                self.w.poll_once(self.now);
            }
        }
    }

    /// Checks what left each port since the last call (see the module's invariants); answers
    /// ARP requests for the lab's neighbours (a frame that waited for one is checked on the
    /// next call). Returns the IPv4 frames that left the inside port and the inner packets of
    /// those that left toward the client.
    fn check_sent(&mut self) -> Result<Sent, TestCaseError> {
        let mut inside = Vec::new();
        for f in self.w.port_mut(INSIDE).unwrap().take_sent() {
            prop_assert!(f.len() >= 14, "a runt frame into the subnet");
            if f[12..14] == ETHERTYPE_ARP {
                self.answer_arp(INSIDE, &f);
                continue;
            }
            prop_assert_eq!(&f[12..14], &ETHERTYPE_IPV4[..]);
            let p = Ipv4Packet::new_checked(&f[14..]);
            prop_assert!(p.is_ok(), "an IPv4 header that does not parse: {:02x?}", f);
            let src = p.unwrap().src();
            prop_assert_eq!(
                u32::from_be_bytes(src),
                ip(lab::INSIDE_IP),
                "into the subnet from another address than the ENI"
            );
            inside.push(f);
        }
        let mut opened = Vec::new();
        let sent = reassembled(self.w.port_mut(OUTSIDE).unwrap().take_sent())?;
        for f in sent {
            prop_assert!(f.len() >= 14, "a runt frame toward the clients");
            if f[12..14] == ETHERTYPE_ARP {
                self.answer_arp(OUTSIDE, &f);
                continue;
            }
            prop_assert_eq!(&f[12..14], &ETHERTYPE_IPV4[..]);
            let p = Ipv4Packet::new_checked(&f[14..]);
            prop_assert!(p.is_ok(), "an IPv4 header that does not parse: {:02x?}", f);
            let p = p.unwrap();
            prop_assert_eq!(u32::from_be_bytes(p.src()), ip(lab::OUTSIDE_IP));
            match p.protocol() {
                protocol::ICMP => {
                    let i = IcmpPacket::new_checked(p.payload());
                    prop_assert!(i.is_ok_and(|i| i.kind() == kind::ECHO_REPLY));
                }
                protocol::UDP => {
                    let u = UdpPacket::new_checked(p.payload());
                    prop_assert!(u.as_ref().is_ok_and(|u| u.src_port() == lab::VPN_PORT));
                    let u = u.unwrap();
                    if u.payload().first() == Some(&0x40) {
                        // A stateless answer: a server reset under an id of the core's key.
                        let a = u.payload();
                        prop_assert_eq!(a.len(), 26);
                        let to = Remote {
                            ip: u32::from_be_bytes(p.dst()),
                            port: u.dst_port(),
                        };
                        let from = Remote {
                            ip: ip(lab::OUTSIDE_IP),
                            port: lab::VPN_PORT,
                        };
                        let (ours, client) =
                            (a[1..9].try_into().unwrap(), a[14..22].try_into().unwrap());
                        let secs = self.now.duration_since(self.epoch).as_secs();
                        prop_assert!(self.cookies.verify(secs, to, from, &client, &ours));
                        continue;
                    }
                    let inner = self.client.open(&f);
                    prop_assert!(inner.is_some(), "not sealed with the session's key");
                    opened.push(inner.unwrap());
                }
                other => prop_assert!(false, "IPv4 protocol {} toward the clients", other),
            }
        }
        Ok((inside, opened))
    }

    /// Answers an ARP request from the core for one of the lab's neighbours.
    fn answer_arp(&mut self, port: usize, f: &[u8]) {
        if f.len() < 42 || f[21] != 1 {
            return;
        }
        let target = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
        let (us_mac, us_ip) = if port == INSIDE {
            (lab::INSIDE_MAC, ip(lab::INSIDE_IP))
        } else {
            (lab::OUTSIDE_MAC, ip(lab::OUTSIDE_IP))
        };
        let mac = if target == ip(lab::HOST_IP) {
            lab::HOST_MAC
        } else if target == ip(lab::ROUTER_IP) {
            lab::ROUTER_MAC
        } else if target == ip(lab::CLIENT_OUTER_IP) {
            lab::CLIENT_MAC
        } else {
            return;
        };
        self.w
            .port_mut(port)
            .unwrap()
            .inject(&testkit::arp_reply(mac, target, us_mac, us_ip));
    }

    /// A ping through the tunnel to the host and its reply back to the client.
    fn ping_round_trip(&mut self) -> Result<(), TestCaseError> {
        const ID: u16 = 0xbeef;
        let (vip, host) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
        self.send_from_client(&testkit::ipv4_echo(vip, host, true, ID, 9, b"after"));
        let mut request = None;
        for _ in 0..3 {
            let (inside, _) = self.check_sent()?;
            request = inside.into_iter().find(|f| {
                let p = Ipv4Packet::new_checked(&f[14..]).unwrap();
                u32::from_be_bytes(p.dst()) == host
                    && p.protocol() == protocol::ICMP
                    && IcmpPacket::new_checked(p.payload())
                        .is_ok_and(|i| i.kind() == kind::ECHO_REQUEST && i.data() == b"after")
            });
            if request.is_some() {
                break;
            }
            self.w.poll_once(self.now);
        }
        prop_assert!(request.is_some(), "the ping did not reach the host");
        let request = request.unwrap();
        let reply = return_traffic(&request[14..]).swap_remove(0);
        self.inject(
            INSIDE,
            &testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &reply),
        );
        for _ in 0..3 {
            let (_, opened) = self.check_sent()?;
            let answered = opened.iter().any(|p| {
                let p = Ipv4Packet::new_checked(&p[..]).unwrap();
                u32::from_be_bytes(p.dst()) == vip
                    && IcmpPacket::new_checked(p.payload())
                        .is_ok_and(|i| i.kind() == kind::ECHO_REPLY && i.echo_id() == ID)
            });
            if answered {
                return Ok(());
            }
            self.w.poll_once(self.now);
        }
        prop_assert!(false, "the reply did not reach the client");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn untrusted_input_is_dropped_or_forwarded_safely(
        events in proptest::collection::vec(event(), 1..40),
    ) {
        let mut rig = Rig::new();
        rig.check_sent()?;
        for e in &events {
            rig.apply(e);
            rig.check_sent()?;
        }
        rig.ping_round_trip()?;
    }
}
