//! The pipeline on in-memory ports, end to end through one core: a client's encrypted packet
//! leaves the inside port SNATed with valid checksums; the reply comes back encrypted and
//! opens with the client's key; denials, replays, keepalives and control packets land where
//! they should; a rule-table swap in the middle of a stream loses nothing.

// A test harness: it unwraps freely and stands in for the worker shell's clock.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::cookie::CookieKey;
use sluice_engine::crypto::Cipher;
use sluice_engine::flow::Timeouts;
use sluice_engine::mailbox::{Command, Mailbox, Removal, Report};
use sluice_engine::packet::DropReason;
use sluice_engine::port::MemPort;
use sluice_engine::rules::GroupMask;
use sluice_engine::session::Remote;
use sluice_engine::testkit::{self, ip, lab, Client};
use sluice_engine::wire::checksum;
use sluice_engine::wire::icmp::{kind, IcmpPacket};
use sluice_engine::wire::ipv4::{protocol, Ipv4Packet};
use sluice_engine::wire::openvpn::{KeyId, PeerId};
use sluice_engine::wire::tcp::{flags, TcpPacket};
use sluice_engine::wire::udp::UdpPacket;
use sluice_engine::worker::Worker;

struct Lab {
    w: Worker<MemPort>,
    mb: Mailbox,
    client: Client,
    now: Instant,
}

/// A datagram carrying `payload` from the client's outer address and `port` to the listener,
/// as the outside port receives it (its UDP checksum right).
fn from_client_port(port: u16, payload: &[u8]) -> Vec<u8> {
    let udp = testkit::ipv4_udp(
        ip(lab::CLIENT_OUTER_IP),
        port,
        ip(lab::OUTSIDE_IP),
        lab::VPN_PORT,
        payload,
    );
    testkit::eth_ipv4(lab::OUTSIDE_MAC, lab::CLIENT_MAC, &udp)
}

fn lab_with(groups: GroupMask) -> Lab {
    let now = Instant::now();
    let mb = Mailbox::new(1024);
    let mut w = testkit::lab_worker(
        vec![MemPort::new(), MemPort::new()],
        testkit::lab_config(1024, 64),
        mb.clone(),
        now,
    );
    let client = add_session(&mut w, &mb, PeerId(5), groups, Cipher::Aes256Gcm, now);
    Lab { w, mb, client, now }
}

/// Installs a session for `peer` (the lab client's address, `groups`, keys of `cipher`)
/// through the mailbox, as control does, and returns the client's side.
fn add_session(
    w: &mut Worker<MemPort>,
    mb: &Mailbox,
    peer: PeerId,
    groups: GroupMask,
    cipher: Cipher,
    now: Instant,
) -> Client {
    let client = testkit::queue_session(mb, peer, ip(lab::CLIENT_VIP), groups, cipher, 7);
    w.poll_once(now);
    Client::new(peer, KeyId(0), &client)
}

impl Lab {
    fn send_from_client(&mut self, inner: &[u8]) {
        let f = self.client.frame(inner);
        self.w.port_mut(0).unwrap().inject(&f);
        self.w.poll_once(self.now);
    }

    /// The host's `reply` (an IPv4 packet) arrives on the inside port; returns what the
    /// outside port sent.
    fn reply_from_host(&mut self, reply: &[u8]) -> Vec<Vec<u8>> {
        self.w.port_mut(1).unwrap().inject(&testkit::eth_ipv4(
            lab::INSIDE_MAC,
            lab::HOST_MAC,
            reply,
        ));
        self.w.poll_once(self.now);
        self.outside_sent()
    }

    fn inside_sent(&mut self) -> Vec<Vec<u8>> {
        self.w.port_mut(1).unwrap().take_sent()
    }

    fn outside_sent(&mut self) -> Vec<Vec<u8>> {
        self.w.port_mut(0).unwrap().take_sent()
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.w.drops().get(r)
    }

    /// The client says goodbye on the data channel (OCC exit).
    fn send_exit(&mut self) {
        let mut exit = sluice_engine::crypto::data_channel::OCC_MAGIC.to_vec();
        exit.push(sluice_engine::crypto::data_channel::OCC_EXIT);
        self.send_from_client(&exit);
    }

    /// A control packet (HARD_RESET_CLIENT_V2) from the client's address, port 50,001;
    /// returns its payload.
    fn send_hard_reset(&mut self) -> [u8; 14] {
        let hard_reset = FIRST_RESET;
        self.w
            .port_mut(0)
            .unwrap()
            .inject(&from_client_port(50_001, &hard_reset));
        self.w.poll_once(self.now);
        hard_reset
    }
}

/// `packet` (IPv4) with its TTL set to `ttl`, the header checksum made again.
fn with_ttl(mut packet: Vec<u8>, ttl: u8) -> Vec<u8> {
    packet[8] = ttl;
    packet[10..12].fill(0);
    let c = checksum::checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&c.to_be_bytes());
    packet
}

/// A worker with the lab's rules and one session (peer 1) whose neighbour cache knows only
/// `known` (port, address, MAC): the tests of packets waiting for ARP.
fn one_neighbour_known(
    known: (u16, u32, [u8; 6]),
    cipher: Cipher,
    neighbour_capacity: usize,
) -> (Worker<MemPort>, Client, Instant) {
    let now = Instant::now();
    let mb = Mailbox::new(64);
    let mut cfg = testkit::lab_config(64, 8);
    cfg.neighbour_capacity = neighbour_capacity;
    let mut w = Worker::new(
        cfg,
        vec![MemPort::new(), MemPort::new()],
        mb.clone(),
        None,
        now,
    );
    assert!(mb
        .commands
        .push(Command::InstallRules(Arc::new(testkit::lab_rules(1))))
        .is_ok());
    w.prime_neighbour(known.0, known.1, known.2);
    let client = add_session(&mut w, &mb, PeerId(1), GroupMask::EMPTY, cipher, now);
    (w, client, now)
}

/// The client pings the VPC host, whose MAC the core does not know: expects the core's ARP
/// request, answers it, and checks that the ping then leaves (`answer_arp_request`).
fn ping_host_through_arp(w: &mut Worker<MemPort>, c: &mut Client, now: Instant) {
    w.port_mut(0).unwrap().inject(&c.frame(&testkit::ipv4_echo(
        ip(lab::CLIENT_VIP),
        ip(lab::HOST_IP),
        true,
        1,
        1,
        b"",
    )));
    w.poll_once(now);
    answer_arp_request(
        w,
        1,
        (lab::HOST_MAC, ip(lab::HOST_IP)),
        (lab::INSIDE_MAC, ip(lab::INSIDE_IP)),
        now,
    );
}

/// Expects exactly an ARP request out of `port`, answers it as `neighbour` (MAC, address) to
/// `us`, and returns what the port sent then: the packet that waited, alone, addressed from
/// our MAC to the neighbour's.
fn answer_arp_request(
    w: &mut Worker<MemPort>,
    port: usize,
    neighbour: ([u8; 6], u32),
    us: ([u8; 6], u32),
    now: Instant,
) -> Vec<Vec<u8>> {
    let out = w.port_mut(port).unwrap().take_sent();
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][12..14], &[0x08, 0x06], "an ARP request first");
    w.port_mut(port)
        .unwrap()
        .inject(&testkit::arp_reply(neighbour.0, neighbour.1, us.0, us.1));
    w.poll_once(now);
    let out = w.port_mut(port).unwrap().take_sent();
    assert_eq!(out.len(), 1, "the waiting packet follows the ARP reply");
    assert_eq!(&out[0][0..6], &neighbour.0, "to the neighbour's MAC");
    assert_eq!(&out[0][6..12], &us.0);
    out
}

/// The drop counters that are not zero (for assertion messages).
/// A first hard reset (P_CONTROL_HARD_RESET_CLIENT_V2, key id 0): session id 1 to 8, no acks,
/// packet-id 0.
const FIRST_RESET: [u8; 14] = [0x38, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0];

/// A core of `flows` flows and `sessions` sessions that answers first resets itself (the
/// cookie key set), commanded through `mb`.
fn answering_core(flows: usize, sessions: usize, mb: &Mailbox, now: Instant) -> Worker<MemPort> {
    let mut cfg = testkit::lab_config(flows, sessions);
    cfg.cookies = Some(Arc::new(CookieKey::generate(60).unwrap()));
    testkit::lab_worker(vec![MemPort::new(), MemPort::new()], cfg, mb.clone(), now)
}

fn nonzero_drops(w: &Worker<MemPort>) -> Vec<(&'static str, u64)> {
    w.drops().iter().filter(|(_, n)| *n > 0).collect()
}

/// Checks that `w` dropped nothing, naming what it dropped if it did.
fn assert_no_drops(w: &Worker<MemPort>) {
    let drops = nonzero_drops(w);
    assert!(drops.is_empty(), "{drops:?}");
}

/// Checks a translated ICMP error: its outer (source, destination) and TTL 63, (kind, code),
/// every checksum, the quoted header's (source, destination), and the quoted port or echo id
/// (`(true, p)`: the source port is `p`; `(false, p)`: the destination port; an echo's id is
/// `p` either way). The quote may stop short of the quoted packet's end: its header is read as
/// bytes.
fn check_icmp_error(
    p: &Ipv4Packet<&[u8]>,
    outer: (u32, u32),
    (k, code): (u8, u8),
    quoted_addrs: (u32, u32),
    (source_port, port): (bool, u16),
) {
    assert!(p.verify_checksum());
    assert_eq!(
        (p.src(), p.dst()),
        (outer.0.to_be_bytes(), outer.1.to_be_bytes())
    );
    assert_eq!(p.ttl(), 63);
    let i = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(i.verify_checksum());
    assert_eq!((i.kind(), i.code()), (k, code));
    let quoted = &i.data()[..20];
    assert_eq!(
        checksum::checksum(quoted),
        0,
        "the quoted header's checksum follows"
    );
    assert_eq!(
        (&quoted[12..16], &quoted[16..20]),
        (
            &quoted_addrs.0.to_be_bytes()[..],
            &quoted_addrs.1.to_be_bytes()[..]
        )
    );
    let l4 = &i.data()[20..];
    let at = match (quoted[9], source_port) {
        (protocol::ICMP, _) => 4,
        (_, true) => 0,
        (_, false) => 2,
    };
    assert_eq!(
        u16::from_be_bytes([l4[at], l4[at + 1]]),
        port,
        "the quoted port or echo id"
    );
}

fn ip_of(frame: &[u8]) -> Ipv4Packet<&[u8]> {
    Ipv4Packet::new_checked(&frame[14..]).expect("an IPv4 frame")
}

#[test]
fn ping_through_the_tunnel_and_back() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let echo = testkit::ipv4_echo(
        ip(lab::CLIENT_VIP),
        ip(lab::HOST_IP),
        true,
        0x4242,
        1,
        b"hello",
    );
    lab.send_from_client(&echo);
    let out = lab.inside_sent();
    assert_eq!(out.len(), 1, "drops: {:?}", nonzero_drops(&lab.w));
    let f = &out[0];
    assert_eq!(&f[0..6], &lab::HOST_MAC, "on-link: sent to the host itself");
    assert_eq!(&f[6..12], &lab::INSIDE_MAC);
    let p = ip_of(f);
    assert!(p.verify_checksum());
    assert_eq!(
        p.src(),
        ip(lab::INSIDE_IP).to_be_bytes(),
        "SNAT to the ENI address"
    );
    assert_eq!(p.ttl(), 63);
    let icmp = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let nat_id = icmp.echo_id();
    assert!(nat_id >= 1024);

    // The host answers the ENI; the client gets the reply, encrypted, with its own id back.
    let reply = testkit::ipv4_echo(
        ip(lab::HOST_IP),
        ip(lab::INSIDE_IP),
        false,
        nat_id,
        1,
        b"hello",
    );
    let out = lab.reply_from_host(&reply);
    assert_eq!(out.len(), 1);
    let outer = ip_of(&out[0]);
    assert_eq!(
        (outer.src(), outer.dst()),
        (
            ip(lab::OUTSIDE_IP).to_be_bytes(),
            ip(lab::CLIENT_OUTER_IP).to_be_bytes()
        )
    );
    assert!(outer.verify_checksum());
    assert!(
        !outer.dont_fragment(),
        "a path with a smaller MTU may fragment it"
    );
    let udp = UdpPacket::new_checked(outer.payload()).unwrap();
    assert_eq!(
        (udp.src_port(), udp.dst_port()),
        (lab::VPN_PORT, lab::CLIENT_PORT)
    );
    let inner = lab
        .client
        .open(&out[0])
        .expect("opens with the client's key");
    let p = Ipv4Packet::new_checked(&inner[..]).unwrap();
    assert!(p.verify_checksum());
    assert_eq!(p.dst(), ip(lab::CLIENT_VIP).to_be_bytes());
    let icmp = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.echo_id(), 0x4242);
    let t = lab.w.endpoint_traffic()[0];
    assert_eq!((t.ingress_packets, t.egress_packets), (1, 1));
}

/// An echo with identifier 0, sequence 0 and no data (as the engine_pipeline fuzz target
/// found it): its reply, translated back to identifier 0, is all zero but for its checksum,
/// which must then be 0xffff: the incremental update gave 0x0000, which the client's kernel
/// refuses.
#[test]
fn an_all_zero_echo_reply_reaches_the_client_with_a_valid_checksum() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let (vip, host) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
    lab.send_from_client(&testkit::ipv4_echo(vip, host, true, 0, 0, b""));
    let out = lab.inside_sent();
    assert_eq!(out.len(), 1, "drops: {:?}", nonzero_drops(&lab.w));
    let nat_id = IcmpPacket::new_checked(ip_of(&out[0]).payload())
        .unwrap()
        .echo_id();
    let reply = testkit::ipv4_echo(host, ip(lab::INSIDE_IP), false, nat_id, 0, b"");
    let out = lab.reply_from_host(&reply);
    assert_eq!(out.len(), 1, "drops: {:?}", nonzero_drops(&lab.w));
    let inner = lab
        .client
        .open(&out[0])
        .expect("opens with the client's key");
    let p = Ipv4Packet::new_checked(&inner[..]).unwrap();
    assert_eq!(p.payload(), [0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    assert!(IcmpPacket::new_checked(p.payload())
        .unwrap()
        .verify_checksum());
}

#[test]
fn tcp_and_udp_are_translated_with_valid_checksums_and_mss_clamped() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let syn = testkit::ipv4_tcp(
        ip(lab::CLIENT_VIP),
        40_000,
        ip("172.31.7.7"),
        80,
        flags::SYN,
        Some(1460),
        b"",
    );
    lab.send_from_client(&syn);
    let dns = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 40_001, ip(lab::HOST_IP), 53, b"query");
    lab.send_from_client(&dns);
    let out = lab.inside_sent();
    assert_eq!(out.len(), 2);
    assert_eq!(
        &out[0][0..6],
        &lab::ROUTER_MAC,
        "off-link: through the subnet router"
    );
    let p = ip_of(&out[0]);
    let (src, dst) = (p.src(), p.dst());
    let t = TcpPacket::new_checked(p.payload()).unwrap();
    assert!(t.verify_checksum(src, dst));
    assert_eq!(t.mss(), Some(1328), "MSS clamped for the tunnel");
    let nat_port = t.src_port();
    assert_ne!(nat_port, 40_000);
    let p = ip_of(&out[1]);
    let u = UdpPacket::new_checked(p.payload()).unwrap();
    assert!(u.verify_checksum(p.src(), p.dst()));
    assert_eq!(u.payload(), b"query");

    // SYN-ACK back: translated to the client's port, clamped too.
    let synack = testkit::ipv4_tcp(
        ip("172.31.7.7"),
        80,
        ip(lab::INSIDE_IP),
        nat_port,
        flags::SYN | flags::ACK,
        Some(1460),
        b"",
    );
    lab.w.port_mut(1).unwrap().inject(&testkit::eth_ipv4(
        lab::INSIDE_MAC,
        lab::ROUTER_MAC,
        &synack,
    ));
    lab.w.poll_once(lab.now);
    let out = lab.outside_sent();
    let inner = lab.client.open(&out[0]).unwrap();
    let p = Ipv4Packet::new_checked(&inner[..]).unwrap();
    let t = TcpPacket::new_checked(p.payload()).unwrap();
    assert!(t.verify_checksum(p.src(), p.dst()));
    assert_eq!((t.dst_port(), t.mss()), (40_000, Some(1328)));
}

/// ICMP errors about translated flows (a port unreachable from the host quoting a UDP
/// datagram, a time exceeded from the router quoting a whole echo request) reach the client
/// translated: outer destination, and in the quoted header the client's address (with its
/// header checksum) and port or echo id. One addressed to another host is not translated.
#[test]
fn icmp_errors_about_a_flow_reach_its_client_translated() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let (vip, host, router) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP), ip(lab::ROUTER_IP));
    lab.send_from_client(&testkit::ipv4_udp(vip, 40_001, host, 53, b"query"));
    lab.send_from_client(&testkit::ipv4_echo(vip, host, true, 0x77, 1, b"probe"));
    let out = lab.inside_sent();
    assert_eq!(out.len(), 2);
    let cases = [
        // The host: port unreachable, quoting the IPv4 header and 8 bytes (RFC 792).
        (
            host,
            kind::DEST_UNREACHABLE,
            3,
            &out[0][14..14 + 28],
            40_001,
        ),
        // The router: TTL exceeded, quoting the whole echo request (RFC 1812 allows more).
        (router, kind::TIME_EXCEEDED, 0, &out[1][14..], 0x77),
    ];
    for (from, k, code, quoted, client_port) in cases {
        let error = testkit::ipv4_icmp_error(from, ip(lab::INSIDE_IP), k, code, quoted);
        let sent = lab.reply_from_host(&error);
        assert_eq!(sent.len(), 1, "{:?}", nonzero_drops(&lab.w));
        let inner = lab.client.open(&sent[0]).expect("sealed for the client");
        let p = Ipv4Packet::new_checked(&inner[..]).unwrap();
        // The quoted packet went from the client: its source port is the client's own.
        check_icmp_error(&p, (from, vip), (k, code), (vip, host), (true, client_port));
    }

    // The same error addressed to another host of the subnet (flooded to us by a switch):
    // not ours to translate.
    let not_ours = testkit::ipv4_icmp_error(
        router,
        ip("172.31.1.99"),
        kind::DEST_UNREACHABLE,
        1,
        &out[0][14..14 + 28],
    );
    assert!(lab.reply_from_host(&not_ours).is_empty());
    assert_eq!(lab.drops(DropReason::NotForUs), 1);
}

/// A client's ICMP errors about a flow reach its host translated (RFC 5508): a port
/// unreachable for the host's reply, and a time exceeded for an echo reply, leave the subnet
/// port from the ENI, quoting the packet as the host sent it (to the ENI and the translated
/// port or echo id), every checksum right. An error about no flow of the client's is dropped.
#[test]
fn a_clients_icmp_errors_reach_the_host_translated() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let (vip, host, eni) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP), ip(lab::INSIDE_IP));
    lab.send_from_client(&testkit::ipv4_udp(vip, 40_001, host, 53, b"query"));
    lab.send_from_client(&testkit::ipv4_echo(vip, host, true, 0x77, 1, b"probe"));
    let out = lab.inside_sent();
    assert_eq!(out.len(), 2);
    let nat_udp = UdpPacket::new_checked(ip_of(&out[0]).payload())
        .unwrap()
        .src_port();
    let nat_id = IcmpPacket::new_checked(ip_of(&out[1]).payload())
        .unwrap()
        .echo_id();
    // What the client received back (the host's answers, as the core delivered them).
    let reply = testkit::ipv4_udp(host, 53, vip, 40_001, b"answer");
    let echo_reply = testkit::ipv4_echo(host, vip, false, 0x77, 1, b"probe");
    let cases = [
        (kind::DEST_UNREACHABLE, 3, &reply[..28], nat_udp),
        (kind::TIME_EXCEEDED, 0, &echo_reply[..], nat_id),
    ];
    for (k, code, quoted, translated) in cases {
        lab.send_from_client(&testkit::ipv4_icmp_error(vip, host, k, code, quoted));
        let sent = lab.inside_sent();
        assert_eq!(sent.len(), 1, "{:?}", nonzero_drops(&lab.w));
        // The quoted packet came from the host: its destination port is the translated one.
        let p = ip_of(&sent[0]);
        check_icmp_error(&p, (eni, host), (k, code), (host, eni), (false, translated));
    }
    // About a datagram of no flow (another port): dropped.
    let stray = testkit::ipv4_udp(host, 53, vip, 40_999, b"answer");
    lab.send_from_client(&testkit::ipv4_icmp_error(
        vip,
        host,
        kind::DEST_UNREACHABLE,
        3,
        &stray[..28],
    ));
    assert!(lab.inside_sent().is_empty());
    assert_eq!(lab.drops(DropReason::NoFlow), 1);
}

/// An inner IPv4 header with a bad checksum is discarded (RFC 1812 §5.2.2): nothing leaves,
/// no flow is made, and the drop is malformed_ipv4; the same packet with its checksum right
/// goes through.
#[test]
fn a_clients_packet_with_a_bad_header_checksum_is_dropped() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let good = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 40_003, ip(lab::HOST_IP), 53, b"q");
    let mut bad = good.clone();
    bad[10] ^= 0x40;
    lab.send_from_client(&bad);
    assert!(lab.inside_sent().is_empty());
    assert_eq!(lab.w.flow_count(), 0);
    assert_eq!(
        lab.drops(DropReason::MalformedIpv4),
        1,
        "{:?}",
        nonzero_drops(&lab.w)
    );
    lab.send_from_client(&good);
    assert_eq!(lab.inside_sent().len(), 1);
}

/// ICMP errors whose checksum fails are dropped (RFC 5508 REQ-3), not translated and sent on
/// with a checksum made right: from the host toward the client and from the client toward
/// the host, both malformed_icmp; the same errors intact go through.
#[test]
fn icmp_errors_with_a_bad_checksum_are_dropped_both_ways() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let (vip, host, eni) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP), ip(lab::INSIDE_IP));
    lab.send_from_client(&testkit::ipv4_udp(vip, 40_001, host, 53, b"query"));
    let out = lab.inside_sent();
    assert_eq!(out.len(), 1);
    let corrupt = |mut p: Vec<u8>| {
        let last = p.len() - 1;
        p[last] ^= 0x10;
        p
    };
    // From the host, quoting what the core sent it.
    let error = testkit::ipv4_icmp_error(host, eni, kind::DEST_UNREACHABLE, 3, &out[0][14..]);
    assert!(lab.reply_from_host(&corrupt(error.clone())).is_empty());
    assert_eq!(
        lab.drops(DropReason::MalformedIcmp),
        1,
        "{:?}",
        nonzero_drops(&lab.w)
    );
    assert_eq!(lab.reply_from_host(&error).len(), 1);
    // From the client, quoting the host's reply as the client received it.
    let reply = testkit::ipv4_udp(host, 53, vip, 40_001, b"answer");
    let error = testkit::ipv4_icmp_error(vip, host, kind::DEST_UNREACHABLE, 3, &reply);
    lab.send_from_client(&corrupt(error.clone()));
    assert!(lab.inside_sent().is_empty());
    assert_eq!(
        lab.drops(DropReason::MalformedIcmp),
        2,
        "{:?}",
        nonzero_drops(&lab.w)
    );
    lab.send_from_client(&error);
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 1);
    let p = ip_of(&sent[0]);
    let i = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(i.verify_checksum());
    // The quoted datagram, whole, translated: its UDP checksum still right.
    let q = Ipv4Packet::new_checked(i.data()).unwrap();
    let u = UdpPacket::new_checked(q.payload()).unwrap();
    assert_eq!(q.dst(), eni.to_be_bytes());
    assert!(u.verify_checksum(q.src(), q.dst()));
}

/// A client's ICMP error goes only to the sender of the packet it quotes: one about its
/// allowed flow to the host but addressed to 10.99.0.7 (which its groups may not reach) is
/// dropped as about no flow, and nothing leaves toward the VPC; the same error to the host
/// goes through.
#[test]
fn a_clients_icmp_error_goes_only_to_the_flows_remote() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let (vip, host) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
    lab.send_from_client(&testkit::ipv4_udp(vip, 40_001, host, 53, b"query"));
    assert_eq!(lab.inside_sent().len(), 1);
    let reply = testkit::ipv4_udp(host, 53, vip, 40_001, b"answer");
    let elsewhere = ip("10.99.0.7");
    lab.send_from_client(&testkit::ipv4_icmp_error(
        vip,
        elsewhere,
        kind::DEST_UNREACHABLE,
        3,
        &reply[..28],
    ));
    let sent = lab.inside_sent();
    assert!(sent.is_empty(), "sent toward {:?}", ip_of(&sent[0]).dst());
    assert_eq!(
        lab.drops(DropReason::NoFlow),
        1,
        "{:?}",
        nonzero_drops(&lab.w)
    );
    lab.send_from_client(&testkit::ipv4_icmp_error(
        vip,
        host,
        kind::DEST_UNREACHABLE,
        3,
        &reply[..28],
    ));
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 1, "{:?}", nonzero_drops(&lab.w));
    assert_eq!(ip_of(&sent[0]).dst(), host.to_be_bytes());
}

/// Full-size packets (1500 bytes, the pushed tun-mtu) both ways: the client's sealed datagram
/// is longer than the 1500-byte path, so it arrives in two fragments (here in reverse order),
/// which the core reassembles; the reply leaves in two fragments that reassemble into a
/// datagram sealed for the client. A lone fragment is given up after the timeout, and
/// overlapping ones are refused.
#[test]
fn full_size_packets_cross_in_fragments_both_ways() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let (vip, host) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
    let request = testkit::ipv4_udp(vip, 40_002, host, 9, &[0x11; 1472]);
    let frame = lab.client.frame(&request);
    let pieces = testkit::fragment(&frame, 1500);
    assert_eq!(pieces.len(), 2);
    for p in pieces.iter().rev() {
        lab.w.port_mut(0).unwrap().inject(p);
    }
    lab.w.poll_once(lab.now);
    let out = lab.inside_sent();
    assert_eq!(out.len(), 1, "{:?}", nonzero_drops(&lab.w));
    let p = ip_of(&out[0]);
    assert_eq!(p.total_len(), 1500);
    let u = UdpPacket::new_checked(p.payload()).unwrap();
    assert!(u.verify_checksum(p.src(), p.dst()));
    assert_eq!(u.payload(), &[0x11; 1472][..]);

    // The reply, 1500 bytes too.
    let reply = testkit::ipv4_udp(host, 9, ip(lab::INSIDE_IP), u.src_port(), &[0x22; 1472]);
    let sent = lab.reply_from_host(&reply);
    assert_eq!(sent.len(), 2, "two fragments");
    let headers: Vec<_> = sent.iter().map(|f| ip_of(f)).collect();
    for h in &headers {
        assert!(h.total_len() <= 1500 && h.verify_checksum() && !h.dont_fragment());
        assert_eq!(h.ident(), headers[0].ident());
    }
    assert!(headers[0].more_fragments() && headers[0].frag_offset() == 0);
    assert!(!headers[1].more_fragments());
    assert_eq!(headers[1].frag_offset(), headers[0].payload().len());
    // Put the datagram back together as the client's kernel would, and open it.
    let whole = testkit::reassemble(&sent);
    let inner = lab.client.open(&whole[0]).expect("sealed for the client");
    let p = Ipv4Packet::new_checked(&inner[..]).unwrap();
    assert_eq!((p.dst(), p.total_len()), (vip.to_be_bytes(), 1500));
    let u = UdpPacket::new_checked(p.payload()).unwrap();
    assert_eq!((u.dst_port(), u.payload()), (40_002, &[0x22; 1472][..]));

    // A first fragment alone is given up after the timeout; overlapping fragments at once.
    let pieces = testkit::fragment(&lab.client.frame(&request), 1500);
    lab.w.port_mut(0).unwrap().inject(&pieces[0]);
    lab.w.poll_once(lab.now);
    lab.w.poll_once(lab.now + Duration::from_secs(5));
    assert_eq!(lab.drops(DropReason::ReassemblyTimeout), 1);
    let pieces = testkit::fragment(&lab.client.frame(&request), 1500);
    let mut overlapping = pieces[1].clone();
    overlapping[14 + 7] -= 1; // 8 bytes earlier
    Ipv4Packet::new_checked(&mut overlapping[14..])
        .unwrap()
        .fill_checksum();
    lab.w.port_mut(0).unwrap().inject(&pieces[0]);
    lab.w.port_mut(0).unwrap().inject(&overlapping);
    lab.w.poll_once(lab.now + Duration::from_secs(5));
    assert_eq!(lab.drops(DropReason::FragmentOverlap), 2);
    assert!(lab.inside_sent().is_empty());
}

/// The IPv4 `packet` with identification `ident`, in fragments for a path of `mtu` bytes (IPv4
/// packets, no Ethernet header).
fn inner_fragments(packet: &[u8], ident: u16, mtu: usize) -> Vec<Vec<u8>> {
    let mut packet = packet.to_vec();
    packet[4..6].copy_from_slice(&ident.to_be_bytes());
    Ipv4Packet::new_checked(&mut packet[..])
        .unwrap()
        .fill_checksum();
    let frame = testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &packet);
    testkit::fragment(&frame, mtu)
        .into_iter()
        .map(|f| f[14..].to_vec())
        .collect()
}

/// Inner datagrams longer than the tunnel's MTU, in fragments both ways (a `ping -s 2972`
/// and a large UDP datagram from the client, the echo reply from the host): the first
/// fragment goes through its flow, the later ones get the same address translation, and the
/// fragments reassemble into valid datagrams at the host and at the client. A later fragment
/// whose first was never seen has nowhere to go.
#[test]
fn inner_datagrams_in_fragments_cross_both_ways() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let (vip, host, eni) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP), ip(lab::INSIDE_IP));
    // Each datagram with its own identification, as a host's kernel gives them.
    let inner_fragments = |packet: &[u8], ident: u16| inner_fragments(packet, ident, 1500);
    let echo = testkit::ipv4_echo(vip, host, true, 0x99, 1, &[0x5a; 2972]);
    let datagram = testkit::ipv4_udp(vip, 40_003, host, 9, &[0x6b; 2472]);
    for (ident, packet) in [(1, &echo), (2, &datagram)] {
        let pieces = inner_fragments(packet, ident);
        assert!(pieces.len() > 1);
        // Over a 1500-byte path, the full-size ones in outer fragments too, all in one burst:
        // the inner fragments still leave in order (a datagram reassembled from outer
        // fragments is forwarded in the place of its last fragment, not after the burst).
        for p in &pieces {
            let frame = lab.client.frame(p);
            for f in testkit::fragment(&frame, 1500) {
                lab.w.port_mut(0).unwrap().inject(&f);
            }
        }
        lab.w.poll_once(lab.now);
    }
    let out = lab.inside_sent();
    assert_eq!(out.len(), 5, "{:?}", nonzero_drops(&lab.w));
    for f in &out {
        assert!(ip_of(f).verify_checksum());
        assert_eq!(ip_of(f).src(), eni.to_be_bytes(), "every fragment SNATed");
    }
    let whole = testkit::reassemble(&out);
    assert_eq!(whole.len(), 2);
    let p = ip_of(&whole[0]);
    let i = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(
        i.verify_checksum(),
        "the echo's checksum holds over the whole datagram"
    );
    assert_eq!(i.data(), &[0x5a; 2972][..]);
    let nat_id = i.echo_id();
    assert_ne!(nat_id, 0x99);
    let p = ip_of(&whole[1]);
    let u = UdpPacket::new_checked(p.payload()).unwrap();
    assert!(u.verify_checksum(p.src(), p.dst()));
    assert_eq!(u.payload(), &[0x6b; 2472][..]);

    // The host's reply, in fragments too: each is sealed for the client on its own.
    let reply = testkit::ipv4_echo(host, eni, false, nat_id, 1, &[0x5a; 2972]);
    let pieces = inner_fragments(&reply, 3);
    // All in one burst, as a host's kernel sends them.
    for p in &pieces {
        lab.w
            .port_mut(1)
            .unwrap()
            .inject(&testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, p));
    }
    lab.w.poll_once(lab.now);
    let sealed = lab.outside_sent();
    let opened: Vec<Vec<u8>> = testkit::reassemble(&sealed)
        .iter()
        .map(|f| lab.client.open(f).expect("sealed for the client"))
        .collect();
    assert_eq!(opened.len(), pieces.len());
    let framed: Vec<Vec<u8>> = opened
        .iter()
        .map(|p| testkit::eth_ipv4(lab::OUTSIDE_MAC, lab::CLIENT_MAC, p))
        .collect();
    let whole = testkit::reassemble(&framed);
    let p = ip_of(&whole[0]);
    assert_eq!(p.dst(), vip.to_be_bytes());
    let i = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(i.verify_checksum());
    assert_eq!((i.kind(), i.echo_id()), (kind::ECHO_REPLY, 0x99));

    // A later fragment alone (its first never sent), from the client and from the host: held
    // for its first, and given up after two seconds.
    let orphan = testkit::ipv4_echo(vip, host, true, 0x77, 1, &[1; 2972]);
    let orphan = inner_fragments(&orphan, 4);
    lab.send_from_client(&orphan[1]);
    let stray = inner_fragments(
        &testkit::ipv4_echo(host, eni, false, nat_id, 2, &[2; 2972]),
        5,
    );
    assert!(lab.reply_from_host(&stray[1]).is_empty());
    assert!(lab.inside_sent().is_empty());
    lab.now += Duration::from_secs(1);
    lab.w.poll_once(lab.now);
    assert_eq!(lab.drops(DropReason::Ipv4Fragment), 0, "held a second");
    lab.now += Duration::from_secs(2);
    lab.w.poll_once(lab.now);
    assert_eq!(lab.drops(DropReason::Ipv4Fragment), 2, "given up");
    assert!(lab.inside_sent().is_empty() && lab.outside_sent().is_empty());

    // Later fragments before their first (reordered on the way), both ways: held, and sent
    // once the first has passed; the datagrams reassemble.
    let late = inner_fragments(&testkit::ipv4_echo(vip, host, true, 0x99, 3, &[3; 2972]), 6);
    assert_eq!(late.len(), 3);
    for p in [&late[2], &late[1]] {
        lab.send_from_client(p);
    }
    assert!(lab.inside_sent().is_empty());
    lab.send_from_client(&late[0]);
    let out = lab.inside_sent();
    assert_eq!(out.len(), 3, "{:?}", nonzero_drops(&lab.w));
    let whole = testkit::reassemble(&out);
    assert_eq!(whole.len(), 1);
    let p = ip_of(&whole[0]);
    let i = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(i.verify_checksum());
    assert_eq!(i.data(), &[3; 2972][..]);
    let late = inner_fragments(
        &testkit::ipv4_echo(host, eni, false, nat_id, 3, &[4; 2972]),
        7,
    );
    for p in [&late[2], &late[1]] {
        assert!(lab.reply_from_host(p).is_empty());
    }
    let sealed = lab.reply_from_host(&late[0]);
    let framed: Vec<Vec<u8>> = testkit::reassemble(&sealed)
        .iter()
        .map(|f| lab.client.open(f).expect("sealed for the client"))
        .map(|p| testkit::eth_ipv4(lab::OUTSIDE_MAC, lab::CLIENT_MAC, &p))
        .collect();
    assert_eq!(framed.len(), 3);
    let whole = testkit::reassemble(&framed);
    assert_eq!(whole.len(), 1);
    let p = ip_of(&whole[0]);
    let i = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(i.verify_checksum());
    assert_eq!((i.echo_id(), i.data()), (0x99, &[4; 2972][..]));
    assert_eq!(lab.drops(DropReason::Ipv4Fragment), 2);

    // A flood of later fragments with no first holds 64 buffers on the core at most.
    for ident in 100..170u16 {
        let f = inner_fragments(
            &testkit::ipv4_echo(host, eni, false, nat_id, 4, &[5; 2972]),
            ident,
        );
        assert!(lab.reply_from_host(&f[1]).is_empty());
    }
    assert_eq!(lab.drops(DropReason::Ipv4Fragment), 2 + 70 - 64);
    lab.now += Duration::from_secs(3);
    lab.w.poll_once(lab.now);
    assert_eq!(lab.drops(DropReason::Ipv4Fragment), 2 + 70);

    // A TCP fragment at offset 8, after a first that showed the header: it could only rewrite
    // that header's flags at the host (RFC 1858).
    let syn = testkit::ipv4_tcp(vip, 40_004, host, 80, flags::SYN, Some(1460), &[0; 64]);
    let mut head = syn.clone();
    head[4..6].copy_from_slice(&6u16.to_be_bytes());
    head.truncate(20 + 24 + 8);
    head[2..4].copy_from_slice(&((20 + 24 + 8) as u16).to_be_bytes());
    head[6] = 0x20; // MF, offset 0
    let mut tail = syn.clone();
    tail[4..6].copy_from_slice(&6u16.to_be_bytes());
    let body = tail[20 + 8..].to_vec();
    tail.truncate(20);
    tail.extend_from_slice(&body);
    let len = tail.len() as u16;
    tail[2..4].copy_from_slice(&len.to_be_bytes());
    tail[6..8].copy_from_slice(&1u16.to_be_bytes()); // offset 8 bytes, last
    for p in [&mut head, &mut tail] {
        Ipv4Packet::new_checked(&mut p[..]).unwrap().fill_checksum();
        lab.send_from_client(p);
    }
    assert_eq!(lab.inside_sent().len(), 1, "the first fragment only");
    assert_eq!(lab.drops(DropReason::FragmentOverlap), 1);
}

/// Two clients behind one ENI address send a host fragmented datagrams with the same
/// identification (each client's kernel picks its own): they leave with identifications of the
/// core's, one per datagram and the same on all of its fragments, so the host reassembles two
/// intact datagrams instead of one corrupt one.
#[test]
fn clients_fragments_leave_with_identifications_of_their_own() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let second_vip = ip(lab::CLIENT_VIP) + 1;
    let keys = testkit::queue_session(
        &lab.mb,
        PeerId(6),
        second_vip,
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        8,
    );
    lab.w.poll_once(lab.now);
    let mut second = Client::new(PeerId(6), KeyId(0), &keys);
    let host = ip(lab::HOST_IP);
    let first = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 5000, host, 53, &[0x11; 1800]);
    let other = testkit::ipv4_udp(second_vip, 5000, host, 53, &[0x22; 1800]);
    let (a, b) = (
        inner_fragments(&first, 7, 1000),
        inner_fragments(&other, 7, 1000),
    );
    assert_eq!((a.len(), b.len()), (2, 2));
    // Interleaved, as two clients' packets arrive.
    for (x, y) in a.iter().zip(&b) {
        let f = lab.client.frame(x);
        lab.w.port_mut(0).unwrap().inject(&f);
        let f = second.frame(y);
        lab.w.port_mut(0).unwrap().inject(&f);
    }
    lab.w.poll_once(lab.now);
    let out = lab.inside_sent();
    assert_eq!(out.len(), 4, "{:?}", nonzero_drops(&lab.w));
    let idents: Vec<u16> = out.iter().map(|f| ip_of(f).ident()).collect();
    assert!(out.iter().all(|f| ip_of(f).verify_checksum()));
    assert_eq!((idents[0], idents[1]), (idents[2], idents[3]), "{idents:?}");
    assert_ne!(idents[0], idents[1], "{idents:?}");
    two_intact_datagrams(&out);
}

/// The lab's two cores (core 0 and 1 of 2, meshed for handoffs), each with its mailbox, made
/// by `make` from its configuration, two in-memory ports, mailbox and handoff.
fn two_cores(
    make: impl Fn(
        sluice_engine::worker::WorkerConfig,
        Vec<MemPort>,
        &Mailbox,
        Option<sluice_engine::worker::Handoff<<MemPort as sluice_engine::port::Port>::Buf>>,
    ) -> Worker<MemPort>,
) -> Vec<(Worker<MemPort>, Mailbox)> {
    let mut meshes = sluice_engine::worker::Handoff::mesh(2, 64).into_iter();
    (0..2)
        .map(|core| {
            let mb = Mailbox::new(64);
            let mut cfg = testkit::lab_config(64, 8);
            (cfg.core, cfg.cores) = (core, 2);
            let w = make(
                cfg,
                vec![MemPort::new(), MemPort::new()],
                &mb,
                meshes.next(),
            );
            (w, mb)
        })
        .collect()
}

/// Two cores: a reply in fragments reaches the core that does not own its flow (as a NIC's
/// RSS would send it there: fragments are hashed on their addresses). The first fragment's
/// port names the owning core, so it is handed over; the later ones, with no port, follow it
/// there, and the client gets every fragment sealed.
#[test]
fn later_fragments_follow_their_first_to_the_owning_core() {
    let now = Instant::now();
    let mut workers = two_cores(|cfg, ports, mb, handoff| {
        testkit::lab_worker_with(ports, cfg, mb.clone(), handoff, now)
    });
    // Peer-id 5 belongs to core 1 (peer-id modulo the cores).
    let (owner, mb) = &mut workers[1];
    let mut client = add_session(
        owner,
        mb,
        PeerId(5),
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        now,
    );
    let (vip, host, eni) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP), ip(lab::INSIDE_IP));
    owner
        .port_mut(0)
        .unwrap()
        .inject(&client.frame(&testkit::ipv4_echo(vip, host, true, 0x42, 1, b"x")));
    owner.poll_once(now);
    let out = owner.port_mut(1).unwrap().take_sent();
    let nat_id = IcmpPacket::new_checked(ip_of(&out[0]).payload())
        .unwrap()
        .echo_id();

    let mut reply = testkit::ipv4_echo(host, eni, false, nat_id, 1, &[0x3c; 2972]);
    reply[4..6].copy_from_slice(&7u16.to_be_bytes());
    Ipv4Packet::new_checked(&mut reply[..])
        .unwrap()
        .fill_checksum();
    let pieces = testkit::fragment(
        &testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &reply),
        1500,
    );
    assert_eq!(pieces.len(), 3);
    let other = &mut workers[0].0;
    for p in &pieces {
        other.port_mut(1).unwrap().inject(p);
    }
    other.poll_once(now);
    assert!(other.port_mut(0).unwrap().take_sent().is_empty());
    assert_eq!(other.drops().total(), 0, "all handed over");
    let owner = &mut workers[1].0;
    owner.poll_once(now);
    let sealed = owner.port_mut(0).unwrap().take_sent();
    let opened: Vec<Vec<u8>> = testkit::reassemble(&sealed)
        .iter()
        .map(|f| testkit::eth_ipv4(lab::OUTSIDE_MAC, lab::CLIENT_MAC, &client.open(f).unwrap()))
        .collect();
    assert_eq!(opened.len(), 3, "{:?}", nonzero_drops(owner));
    let whole = testkit::reassemble(&opened);
    let p = ip_of(&whole[0]);
    assert_eq!((p.dst(), p.total_len()), (vip.to_be_bytes(), reply.len()));
    let i = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(i.verify_checksum());
    assert_eq!(i.echo_id(), 0x42);
}

/// Two cores each tracking a datagram from one host with one identification, each naming the
/// other as the owner of its flow (here: both first fragments handed over and dropped there,
/// `no_flow`, for flows that do not exist): a later fragment is handed over once and dropped
/// `ipv4_fragment` by the core that would hand it back, not passed back and forth between
/// them until the entries expire.
#[test]
fn a_later_fragment_handed_over_is_not_handed_back() {
    let now = Instant::now();
    let mut workers = two_cores(|cfg, ports, mb, handoff| {
        testkit::lab_worker_with(ports, cfg, mb.clone(), handoff, now)
    });
    let (host, eni) = (ip(lab::HOST_IP), ip(lab::INSIDE_IP));
    let owned_by = |core| {
        (sluice_engine::flow::ports::FIRST_PORT..)
            .find(|&p| sluice_engine::flow::core_for_port(p, 2) == Some(core))
            .unwrap()
    };
    // Echo replies to an id of each core's range, one identification for both.
    let pieces = |nat_id: u16| {
        let mut reply = testkit::ipv4_echo(host, eni, false, nat_id, 1, &[0x3c; 2972]);
        reply[4..6].copy_from_slice(&7u16.to_be_bytes());
        Ipv4Packet::new_checked(&mut reply[..])
            .unwrap()
            .fill_checksum();
        testkit::fragment(
            &testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &reply),
            1500,
        )
    };
    let (to_core_1, to_core_0) = (pieces(owned_by(1)), pieces(owned_by(0)));
    let poll = |w: &mut Worker<MemPort>| {
        w.poll_once(now);
        assert!(w.port_mut(0).unwrap().take_sent().is_empty());
    };
    workers[0].0.port_mut(1).unwrap().inject(&to_core_1[0]);
    poll(&mut workers[0].0);
    workers[1].0.port_mut(1).unwrap().inject(&to_core_0[0]);
    poll(&mut workers[1].0);
    poll(&mut workers[0].0);
    for (w, _) in &workers {
        assert_eq!(nonzero_drops(w), vec![("no_flow", 1)]);
    }

    workers[0].0.port_mut(1).unwrap().inject(&to_core_1[1]);
    for _ in 0..4 {
        poll(&mut workers[0].0);
        poll(&mut workers[1].0);
    }
    assert_eq!(nonzero_drops(&workers[0].0), vec![("no_flow", 1)]);
    assert_eq!(
        nonzero_drops(&workers[1].0),
        vec![("ipv4_fragment", 1), ("no_flow", 1)]
    );
}

#[test]
fn denied_replayed_spoofed_and_unknown_are_counted() {
    let mut lab = lab_with(GroupMask::EMPTY);
    lab.send_from_client(&testkit::ipv4_echo(
        ip(lab::CLIENT_VIP),
        ip("10.99.1.1"),
        true,
        1,
        1,
        b"",
    ));
    assert_eq!(
        lab.drops(DropReason::NotAuthorized),
        1,
        "10.99/16 is for group 0 only"
    );
    lab.send_from_client(&testkit::ipv4_echo(
        ip(lab::CLIENT_VIP),
        ip("8.8.8.8"),
        true,
        1,
        1,
        b"",
    ));
    assert_eq!(
        lab.drops(DropReason::NotAuthorized),
        2,
        "no rule for the internet"
    );
    lab.send_from_client(&testkit::ipv4_echo(
        ip("10.200.0.9"),
        ip(lab::HOST_IP),
        true,
        1,
        1,
        b"",
    ));
    assert_eq!(lab.drops(DropReason::SourceSpoofed), 1);
    assert!(lab.inside_sent().is_empty());

    let f = lab.client.frame(&testkit::ipv4_echo(
        ip(lab::CLIENT_VIP),
        ip(lab::HOST_IP),
        true,
        2,
        2,
        b"",
    ));
    lab.w.port_mut(0).unwrap().inject(&f);
    lab.w.port_mut(0).unwrap().inject(&f);
    lab.w.poll_once(lab.now);
    assert_eq!(lab.inside_sent().len(), 1);
    assert_eq!(lab.drops(DropReason::Replayed), 1);

    let mut stranger = Client::new(
        PeerId(99),
        KeyId(0),
        &testkit::key_pair(Cipher::Aes256Gcm, 1).1,
    );
    lab.w.port_mut(0).unwrap().inject(&stranger.frame(b"x"));
    let mut forger = Client::new(
        PeerId(5),
        KeyId(0),
        &testkit::key_pair(Cipher::Aes256Gcm, 1).1,
    );
    forger.set_next_packet_id(1000); // past the replay window, so the tag check decides
    lab.w.port_mut(0).unwrap().inject(&forger.frame(b"x"));
    lab.w.poll_once(lab.now);
    assert_eq!(lab.drops(DropReason::UnknownPeer), 1);
    assert_eq!(lab.drops(DropReason::BadAeadTag), 1);

    // A reply nobody asked for.
    let stray = testkit::ipv4_udp(ip(lab::HOST_IP), 53, ip(lab::INSIDE_IP), 5000, b"?");
    lab.w
        .port_mut(1)
        .unwrap()
        .inject(&testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &stray));
    lab.w.poll_once(lab.now);
    assert_eq!(
        lab.drops(DropReason::NoFlow),
        1,
        "{:?}",
        nonzero_drops(&lab.w)
    );

    // Group 0 may reach 10.99/16.
    let mut member = lab_with(GroupMask::EMPTY.with(0));
    member.send_from_client(&testkit::ipv4_echo(
        ip(lab::CLIENT_VIP),
        ip("10.99.1.1"),
        true,
        1,
        1,
        b"",
    ));
    assert_eq!(member.inside_sent().len(), 1);
}

/// A reload that numbers the groups anew gives each session its new group set in the same
/// step as the table: the member keeps its access under the new numbering, and a session whose
/// set is emptied loses it, from the first packet after the swap.
#[test]
fn sessions_take_their_new_groups_with_the_table() {
    let mut lab = lab_with(GroupMask::EMPTY.with(0));
    let echo = |seq| testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip("10.99.1.1"), true, 7, seq, b"");
    let push = |lab: &mut Lab, cmd| {
        lab.mb.commands.push(cmd).map_err(|_| ()).unwrap();
        lab.w.poll_once(lab.now);
    };
    lab.send_from_client(&echo(1));
    assert_eq!(lab.inside_sent().len(), 1, "group 0 may reach 10.99/16");

    // The group is now number 1: the table alone would deny the member.
    push(
        &mut lab,
        Command::InstallRules(Arc::new(testkit::lab_rules_for_group(2, 1))),
    );
    lab.send_from_client(&echo(2));
    assert!(lab.inside_sent().is_empty());
    assert_eq!(lab.drops(DropReason::NotAuthorized), 1);

    // With its new set (and an entry for a peer-id this core does not hold, skipped).
    push(
        &mut lab,
        Command::InstallRulesAndGroups {
            rules: Arc::new(testkit::lab_rules_for_group(3, 1)),
            groups: vec![
                (PeerId(77), GroupMask::EMPTY.with(1)),
                (PeerId(5), GroupMask::EMPTY.with(1)),
            ],
        },
    );
    lab.send_from_client(&echo(3));
    assert_eq!(
        lab.inside_sent().len(),
        1,
        "the member under its new number"
    );

    // Its groups no longer name it: no access, at once.
    push(
        &mut lab,
        Command::InstallRulesAndGroups {
            rules: Arc::new(testkit::lab_rules_for_group(4, 1)),
            groups: vec![(PeerId(5), GroupMask::EMPTY)],
        },
    );
    lab.send_from_client(&echo(4));
    assert!(lab.inside_sent().is_empty());
    assert_eq!(lab.drops(DropReason::NotAuthorized), 2);
    let retired = std::iter::from_fn(|| lab.mb.reports.pop())
        .filter(|r| matches!(r, Report::Retired(_)))
        .count();
    assert_eq!(retired, 3, "every old table goes back to control");
}

/// A client that floats (an authenticated packet from a new outer address or port, as after a
/// NAT rebinding) is answered at its new address from then on, and control hears of it.
#[test]
fn replies_follow_a_floated_client() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let echo = |seq| testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip(lab::HOST_IP), true, 3, seq, b"");
    lab.send_from_client(&echo(1));
    // The next packet comes from source port 40000 (UDP checksum 0: none, as allowed).
    let mut f = lab.client.frame(&echo(2));
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[40..42].copy_from_slice(&[0, 0]);
    lab.w.port_mut(0).unwrap().inject(&f);
    lab.w.poll_once(lab.now);
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 2);
    let floated = std::iter::from_fn(|| lab.mb.reports.pop())
        .filter(|r| matches!(r, Report::Floated { remote, .. } if remote.port == 40000))
        .count();
    assert_eq!(floated, 1);
    let nat_id = IcmpPacket::new_checked(ip_of(&sent[1]).payload())
        .unwrap()
        .echo_id();
    let reply = testkit::ipv4_echo(ip(lab::HOST_IP), ip(lab::INSIDE_IP), false, nat_id, 2, b"");
    let out = lab.reply_from_host(&reply);
    assert_eq!(out.len(), 1);
    let outer = ip_of(&out[0]);
    assert!(outer.verify_checksum());
    let udp = UdpPacket::new_checked(outer.payload()).unwrap();
    assert_eq!((udp.src_port(), udp.dst_port()), (lab::VPN_PORT, 40000));
    assert!(lab.client.open(&out[0]).is_some());
}

/// A data packet from a new outer address moves its session there only if its UDP checksum
/// verifies (the AEAD does not cover the address): one whose source port changed on the way,
/// its checksum as sent, is dropped `bad_udp_checksum` unopened, the session stays, and
/// replies go where they went. From the session's own address a wrong checksum is left to the
/// AEAD; and the changed packet, with the checksum its new port makes, floats the session.
#[test]
fn a_float_needs_a_udp_checksum_that_verifies() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let echo = |seq| testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip(lab::HOST_IP), true, 3, seq, b"");
    let floated = |lab: &mut Lab| {
        std::iter::from_fn(|| lab.mb.reports.pop())
            .filter(|r| matches!(r, Report::Floated { .. }))
            .count()
    };
    let reply_port = |lab: &mut Lab, sent: &[u8]| {
        let nat_id = IcmpPacket::new_checked(ip_of(sent).payload())
            .unwrap()
            .echo_id();
        let reply = testkit::ipv4_echo(ip(lab::HOST_IP), ip(lab::INSIDE_IP), false, nat_id, 1, b"");
        let out = lab.reply_from_host(&reply);
        assert_eq!(out.len(), 1);
        assert!(lab.client.open(&out[0]).is_some());
        UdpPacket::new_checked(ip_of(&out[0]).payload())
            .unwrap()
            .dst_port()
    };
    lab.send_from_client(&echo(1));
    let first = lab.inside_sent();
    assert_eq!(first.len(), 1);

    let sealed = lab.client.frame(&echo(2));
    let mut changed = sealed.clone();
    changed[34..36].copy_from_slice(&40_000u16.to_be_bytes());
    lab.w.port_mut(0).unwrap().inject(&changed);
    lab.w.poll_once(lab.now);
    assert!(lab.inside_sent().is_empty());
    assert_eq!(lab.drops(DropReason::BadUdpChecksum), 1);
    assert_eq!(floated(&mut lab), 0);
    assert_eq!(reply_port(&mut lab, &first[0]), lab::CLIENT_PORT);

    let mut own = lab.client.frame(&echo(3));
    own[40] ^= 0xff;
    lab.w.port_mut(0).unwrap().inject(&own);
    lab.w.poll_once(lab.now);
    assert_eq!(
        lab.inside_sent().len(),
        1,
        "the session's own address: the AEAD decides"
    );
    assert_eq!(lab.drops(DropReason::BadUdpChecksum), 1);

    let checked = from_client_port(40_000, &sealed[42..]);
    assert_ne!(checked[40..42], [0, 0]);
    lab.w.port_mut(0).unwrap().inject(&checked);
    lab.w.poll_once(lab.now);
    assert_eq!(lab.inside_sent().len(), 1);
    assert_eq!(floated(&mut lab), 1);
    assert_eq!(reply_port(&mut lab, &first[0]), 40_000);
    assert_eq!(nonzero_drops(&lab.w), vec![("bad_udp_checksum", 1)]);
}

/// A client that floats with every packet (ten source ports in one second) is reported to
/// control once that second, at its first new address, and once at the next, at the address
/// it then has: not once a packet, which would fill the report queue's room for the reports
/// control cannot lose. Replies follow it at once all the same.
#[test]
fn a_client_floating_with_every_packet_is_reported_once_a_second() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let floats = |lab: &mut Lab| {
        std::iter::from_fn(|| lab.mb.reports.pop())
            .filter_map(|r| match r {
                Report::Floated { remote, .. } => Some(remote.port),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    for (seq, port) in (40_000..40_010u16).enumerate() {
        let echo = testkit::ipv4_echo(
            ip(lab::CLIENT_VIP),
            ip(lab::HOST_IP),
            true,
            3,
            seq as u16,
            b"",
        );
        let mut f = lab.client.frame(&echo);
        f[34..36].copy_from_slice(&port.to_be_bytes());
        f[40..42].copy_from_slice(&[0, 0]);
        lab.w.port_mut(0).unwrap().inject(&f);
        lab.w.poll_once(lab.now);
    }
    assert_eq!(lab.inside_sent().len(), 10);
    assert_eq!(floats(&mut lab), [40_000]);
    lab.w.poll_once(lab.now + Duration::from_secs(1));
    assert_eq!(floats(&mut lab), [40_009]);
    lab.w.poll_once(lab.now + Duration::from_secs(2));
    assert!(floats(&mut lab).is_empty(), "told once");
    // The next second, a float is reported at once again.
    let echo = testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip(lab::HOST_IP), true, 3, 99, b"");
    let mut f = lab.client.frame(&echo);
    f[34..36].copy_from_slice(&41_000u16.to_be_bytes());
    f[40..42].copy_from_slice(&[0, 0]);
    lab.w.port_mut(0).unwrap().inject(&f);
    lab.w.poll_once(lab.now + Duration::from_secs(2));
    assert_eq!(floats(&mut lab), [41_000]);
}

/// Datagrams to a client leave with DF clear, so a path with a smaller MTU fragments them:
/// each has an identification of its own (RFC 6864 §4.1), or the client's kernel, holding the
/// fragments of two at once, reassembles pieces of both into one.
#[test]
fn datagrams_to_a_client_carry_identifications_of_their_own() {
    let mut lab = lab_with(GroupMask::EMPTY);
    lab.send_from_client(&testkit::ipv4_echo(
        ip(lab::CLIENT_VIP),
        ip(lab::HOST_IP),
        true,
        3,
        1,
        b"",
    ));
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 1);
    let nat_id = IcmpPacket::new_checked(ip_of(&sent[0]).payload())
        .unwrap()
        .echo_id();
    let mut idents = Vec::new();
    for seq in 1..=3 {
        let reply = testkit::ipv4_echo(
            ip(lab::HOST_IP),
            ip(lab::INSIDE_IP),
            false,
            nat_id,
            seq,
            b"",
        );
        let out = lab.reply_from_host(&reply);
        assert_eq!(out.len(), 1);
        let outer = ip_of(&out[0]);
        assert!(outer.verify_checksum());
        assert!(!outer.dont_fragment());
        assert!(lab.client.open(&out[0]).is_some());
        idents.push(outer.ident());
    }
    idents.sort_unstable();
    idents.dedup();
    assert_eq!(idents.len(), 3, "one identification each: {idents:?}");
}

/// The way back waits for ARP too: a reply toward a client whose outer address is not
/// resolved yet goes out after the client's ARP reply, to its MAC, and opens with its key.
#[test]
fn reply_to_an_unresolved_client_waits_for_arp() {
    let (mut w, mut c, now) = one_neighbour_known(
        (1, ip(lab::HOST_IP), lab::HOST_MAC),
        Cipher::Aes256Gcm,
        4096,
    );
    let echo = testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip(lab::HOST_IP), true, 9, 1, b"hi");
    w.port_mut(0).unwrap().inject(&c.frame(&echo));
    w.poll_once(now);
    let out = w.port_mut(1).unwrap().take_sent();
    assert_eq!(out.len(), 1);
    let nat_id = IcmpPacket::new_checked(ip_of(&out[0]).payload())
        .unwrap()
        .echo_id();
    let reply = testkit::ipv4_echo(
        ip(lab::HOST_IP),
        ip(lab::INSIDE_IP),
        false,
        nat_id,
        1,
        b"hi",
    );
    w.port_mut(1)
        .unwrap()
        .inject(&testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &reply));
    w.poll_once(now);
    let out = answer_arp_request(
        &mut w,
        0,
        (lab::CLIENT_MAC, ip(lab::CLIENT_OUTER_IP)),
        (lab::OUTSIDE_MAC, ip(lab::OUTSIDE_IP)),
        now,
    );
    assert!(ip_of(&out[0]).verify_checksum());
    let inner = c.open(&out[0]).expect("opens with the client's key");
    let p = Ipv4Packet::new_checked(&inner[..]).unwrap();
    assert_eq!(p.dst(), ip(lab::CLIENT_VIP).to_be_bytes());
}

/// Flows remember their forwarding decision, but only under the rule table that made it: a
/// reload that revokes an authorization rule stops the flows it covered at their next packet,
/// and reinstating it lets the same flow (same translated id) through again.
#[test]
fn a_reload_applies_to_established_flows() {
    let mut lab = lab_with(GroupMask::EMPTY.with(0));
    let echo = |seq| testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip("10.99.1.1"), true, 7, seq, b"");
    let install = |lab: &mut Lab, table| {
        lab.mb
            .commands
            .push(Command::InstallRules(Arc::new(table)))
            .map_err(|_| ())
            .unwrap();
        lab.w.poll_once(lab.now);
    };
    let nat_id = |frame: &[u8]| {
        IcmpPacket::new_checked(ip_of(frame).payload())
            .unwrap()
            .echo_id()
    };

    lab.send_from_client(&echo(1));
    lab.send_from_client(&echo(2));
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 2, "group 0 may reach 10.99/16");
    let id = nat_id(&sent[0]);

    install(&mut lab, testkit::lab_rules_vpc_only(2));
    lab.send_from_client(&echo(3));
    assert!(lab.inside_sent().is_empty());
    assert_eq!(
        lab.drops(DropReason::NotAuthorized),
        1,
        "revoked for the existing flow too"
    );

    install(&mut lab, testkit::lab_rules(3));
    lab.send_from_client(&echo(4));
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        nat_id(&sent[0]),
        id,
        "the same flow, still translated the same"
    );
}

/// Return traffic is decided again after a reload as the client's own packets are: a table
/// that still authorizes the flow lets the remote's packets through, one that revokes the
/// rule stops them (not_authorized, as the client side), and the refused packets do not keep
/// the flow alive: a remote sending every 10 s for 1300 s reaches the client never, and the
/// flow expires.
#[test]
fn a_revoked_rule_stops_return_traffic_too() {
    let mut lab = lab_with(GroupMask::EMPTY.with(0));
    let (vip, remote) = (ip(lab::CLIENT_VIP), ip("10.99.1.1"));
    let install = |lab: &mut Lab, table| {
        lab.mb
            .commands
            .push(Command::InstallRules(Arc::new(table)))
            .map_err(|_| ())
            .unwrap();
        lab.w.poll_once(lab.now);
    };
    lab.send_from_client(&testkit::ipv4_udp(vip, 5000, remote, 7000, b"out"));
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 1, "group 0 may reach 10.99/16");
    let nat_port = UdpPacket::new_checked(ip_of(&sent[0]).payload())
        .unwrap()
        .src_port();
    let reply = testkit::ipv4_udp(remote, 7000, ip(lab::INSIDE_IP), nat_port, b"back");
    let from_remote = |lab: &mut Lab| {
        lab.w.port_mut(1).unwrap().inject(&testkit::eth_ipv4(
            lab::INSIDE_MAC,
            lab::ROUTER_MAC,
            &reply,
        ));
        lab.w.poll_once(lab.now);
        // The remote's packets, not the session's keepalive pings.
        let out = lab.outside_sent();
        out.iter()
            .filter_map(|f| lab.client.open(f))
            .filter(|p| p.len() >= 20 && p[12..16] == remote.to_be_bytes())
            .count()
    };
    assert_eq!(from_remote(&mut lab), 1);
    install(&mut lab, testkit::lab_rules(2));
    assert_eq!(from_remote(&mut lab), 1, "still authorized after a reload");

    install(&mut lab, testkit::lab_rules_vpc_only(3));
    let mut delivered = 0;
    for _ in 0..130 {
        lab.now += Duration::from_secs(10);
        delivered += from_remote(&mut lab);
    }
    assert_eq!(delivered, 0, "{:?}", nonzero_drops(&lab.w));
    assert!(lab.drops(DropReason::NotAuthorized) > 0);
    assert_eq!(
        lab.drops(DropReason::NotAuthorized) + lab.drops(DropReason::NoFlow),
        130
    );
    assert_eq!(lab.w.flow_count(), 0, "refused packets keep no flow alive");
    // The client's own packet is refused the same way.
    lab.send_from_client(&testkit::ipv4_udp(vip, 5000, remote, 7000, b"out"));
    assert!(lab.inside_sent().is_empty());
}

/// A reload that moves a flow's route to another ENI translates the flow anew: the client's
/// next packets (every 10 s for 1200 s) leave from the new ENI, under one flow, none dropped;
/// the host's reply to the new translation reaches the client, and one to the old is no_flow.
#[test]
fn a_flow_whose_route_moved_to_another_eni_is_translated_anew() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let (vip, host) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
    let new_eni = ip("172.31.1.6");
    let packet = testkit::ipv4_udp(vip, 5060, host, 5060, b"invite");
    lab.send_from_client(&packet);
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(ip_of(&sent[0]).src(), ip(lab::INSIDE_IP).to_be_bytes());
    let old_port = UdpPacket::new_checked(ip_of(&sent[0]).payload())
        .unwrap()
        .src_port();
    lab.mb
        .commands
        .push(Command::InstallRules(Arc::new(testkit::lab_rules_via_eni(
            2, new_eni,
        ))))
        .map_err(|_| ())
        .unwrap();
    lab.w.poll_once(lab.now);
    let mut delivered = Vec::new();
    for _ in 0..120 {
        lab.now += Duration::from_secs(10);
        // The host and the client stay resolved (this test is not about ARP).
        lab.w.prime_neighbour(1, host, lab::HOST_MAC);
        lab.w
            .prime_neighbour(0, ip(lab::CLIENT_OUTER_IP), lab::CLIENT_MAC);
        lab.send_from_client(&packet);
        delivered.extend(lab.inside_sent());
    }
    assert_eq!(delivered.len(), 120, "{:?}", nonzero_drops(&lab.w));
    let p = ip_of(&delivered[119]);
    assert!(p.verify_checksum());
    assert_eq!(p.src(), new_eni.to_be_bytes());
    let u = UdpPacket::new_checked(p.payload()).unwrap();
    assert!(u.verify_checksum(p.src(), p.dst()));
    let new_port = u.src_port();
    assert!(delivered
        .iter()
        .all(|f| ip_of(f).src() == new_eni.to_be_bytes()));
    assert_eq!(lab.w.flow_count(), 1);
    assert_eq!(lab.drops(DropReason::NoFlow), 0);

    let to_old = testkit::ipv4_udp(host, 5060, ip(lab::INSIDE_IP), old_port, b"old");
    let to_new = testkit::ipv4_udp(host, 5060, new_eni, new_port, b"200 ok");
    // What the client gets of the host's packet (its session's keepalive pings aside).
    let reaches_client = |lab: &mut Lab, packet: &[u8], payload: &[u8]| {
        let out = lab.reply_from_host(packet);
        out.iter()
            .filter_map(|f| lab.client.open(f))
            .any(|p| p.ends_with(payload))
    };
    assert!(!reaches_client(&mut lab, &to_old, b"old"));
    assert_eq!(
        lab.drops(DropReason::NoFlow),
        1,
        "the old translation is gone"
    );
    assert!(
        reaches_client(&mut lab, &to_new, b"200 ok"),
        "{:?}",
        nonzero_drops(&lab.w)
    );
}

#[test]
fn a_session_the_core_cannot_add_is_reported_with_the_reason() {
    // Two sessions a core (of two, this one core 0: even peer-ids are its own).
    let now = Instant::now();
    let mb = Mailbox::new(64);
    let mut cfg = testkit::lab_config(64, 2);
    cfg.cores = 2;
    let mut w = testkit::lab_worker(vec![MemPort::new(), MemPort::new()], cfg, mb.clone(), now);
    let mut add = |peer: u32| {
        let vip = ip("10.64.0.0") + peer;
        testkit::queue_session(
            &mb,
            PeerId(peer),
            vip,
            GroupMask::EMPTY,
            Cipher::Aes256Gcm,
            1,
        );
        testkit::apply_commands(&mut w, &mb, now);
        std::iter::from_fn(|| mb.reports.pop())
            .filter_map(|r| match r {
                Report::Removed { peer, because, .. } => Some((peer.0, because)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // Peer 1 is core 1's, though its index entry here is free: held here, its packets would
    // all go to core 1, and it would keep peer 0 out.
    assert_eq!(add(1), [(1, Removal::WrongCore)]);
    assert_eq!(add(2), []);
    // Peer 3 is core 1's: its index entry here is peer 2's.
    assert_eq!(add(3), [(3, Removal::WrongCore)]);
    assert_eq!(add(4), []);
    assert_eq!(add(6), [(6, Removal::TableFull)], "both slots are taken");
    // Peer 2 added again: control's own doing, not a connection lost.
    assert_eq!(add(2), [(2, Removal::Asked)]);
    assert_eq!(w.sessions().len(), 2);
}

#[test]
fn a_session_displaced_by_another_with_its_address_takes_its_flows_with_it() {
    // Group 0 may reach 10.99/16; a session without it may not.
    let mut lab = lab_with(GroupMask::EMPTY.with(0));
    let echo = |seq| testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip("10.99.1.1"), true, 7, seq, b"");
    lab.send_from_client(&echo(1));
    assert_eq!(lab.inside_sent().len(), 1, "group 0 may reach 10.99/16");
    assert_eq!(lab.w.flow_count(), 1);
    // A new session with the same virtual address and no groups replaces peer 5 (the table
    // holds one session an address). Peer 5's flow, and the decision made for it, go with it
    // (within the poll: fewer than a poll's removals), and control hears that peer 5 is gone.
    let mut other = add_session(
        &mut lab.w,
        &lab.mb,
        PeerId(6),
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        lab.now,
    );
    assert_eq!(lab.w.flow_count(), 0);
    let removed = std::iter::from_fn(|| lab.mb.reports.pop()).find_map(|r| match r {
        Report::Removed {
            peer,
            traffic,
            because,
        } => Some((peer, traffic.ingress_packets, because)),
        _ => None,
    });
    assert_eq!(removed, Some((PeerId(5), 1, Removal::Replaced)));
    let f = other.frame(&echo(2));
    lab.w.port_mut(0).unwrap().inject(&f);
    lab.w.poll_once(lab.now);
    assert!(lab.inside_sent().is_empty(), "not under peer 5's decision");
    assert_eq!(lab.drops(DropReason::NotAuthorized), 1);
}

/// A client at its limit of flows on the core has its new flows dropped,
/// `session_flows_full`, while its existing flows go on and another client on the same core
/// still makes flows of its own (the table is far from full).
#[test]
fn a_client_past_its_flow_limit_is_dropped_while_another_still_makes_flows() {
    const LIMIT: usize = 4;
    let now = Instant::now();
    let mb = Mailbox::new(64);
    let mut cfg = testkit::lab_config(1024, 8);
    cfg.flows_per_session = LIMIT;
    let mut w = testkit::lab_worker(vec![MemPort::new(), MemPort::new()], cfg, mb.clone(), now);
    let mut busy = add_session(
        &mut w,
        &mb,
        PeerId(5),
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        now,
    );
    let other_vip = ip("10.200.0.3");
    let keys = testkit::queue_session(
        &mb,
        PeerId(6),
        other_vip,
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        8,
    );
    w.poll_once(now);
    let mut other = Client::new(PeerId(6), KeyId(0), &keys);
    let send = |w: &mut Worker<MemPort>, c: &mut Client, vip: u32, sport: u16| {
        let udp = testkit::ipv4_udp(vip, sport, ip(lab::HOST_IP), 9, b"x");
        w.port_mut(0).unwrap().inject(&c.frame(&udp));
        w.poll_once(now);
        w.port_mut(1).unwrap().take_sent().len()
    };
    let vip = ip(lab::CLIENT_VIP);
    let sent: Vec<usize> = (0..LIMIT as u16 + 3)
        .map(|i| send(&mut w, &mut busy, vip, 1000 + i))
        .collect();
    assert_eq!(
        sent,
        [1, 1, 1, 1, 0, 0, 0],
        "the first {LIMIT} flows, no more"
    );
    assert_eq!(w.drops().get(DropReason::SessionFlowsFull), 3);
    assert_eq!(w.flow_count(), LIMIT);
    assert_eq!(
        send(&mut w, &mut busy, vip, 1000),
        1,
        "an existing flow goes on"
    );
    for i in 0..LIMIT as u16 {
        assert_eq!(send(&mut w, &mut other, other_vip, 2000 + i), 1, "flow {i}");
    }
    assert_eq!(w.flow_count(), 2 * LIMIT);
    assert_eq!(w.drops().get(DropReason::SessionFlowsFull), 3);
    assert_eq!(w.drops().get(DropReason::FlowTableFull), 0);
}

/// A session that ends with many flows has them removed a bounded number a poll, not all in
/// the poll of its end; its slot is held until the last is gone, so a new session with its
/// address (a client reconnecting) neither takes over its flows nor loses its own with them,
/// and the session that gets the slot afterwards starts with none.
#[test]
fn an_ended_sessions_flows_go_over_several_polls_and_its_slot_waits_for_them() {
    const BUDGET: usize = 8;
    const FLOWS: u16 = 100;
    let now = Instant::now();
    let mb = Mailbox::new(64);
    let mut cfg = testkit::lab_config(1024, 8);
    cfg.removal_budget = BUDGET;
    let mut w = testkit::lab_worker(vec![MemPort::new(), MemPort::new()], cfg, mb.clone(), now);
    let vip = ip(lab::CLIENT_VIP);
    let mut old = add_session(
        &mut w,
        &mb,
        PeerId(5),
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        now,
    );
    let udp =
        |sport: u16, payload: &[u8]| testkit::ipv4_udp(vip, sport, ip(lab::HOST_IP), 9, payload);
    for batch in [0..FLOWS / 2, FLOWS / 2..FLOWS] {
        for sport in batch {
            let f = old.frame(&udp(1000 + sport, b"old"));
            w.port_mut(0).unwrap().inject(&f);
        }
        w.poll_once(now);
    }
    assert_eq!(w.port_mut(1).unwrap().take_sent().len(), usize::from(FLOWS));
    assert_eq!(w.flow_count(), usize::from(FLOWS));
    let old_slot = w.sessions().index_of_peer(PeerId(5)).unwrap();

    // The session ends: one poll removes BUDGET of its flows, no more.
    assert!(mb
        .commands
        .push(Command::RemoveSession { peer: PeerId(5) })
        .is_ok());
    w.poll_once(now);
    assert_eq!(w.flow_count(), usize::from(FLOWS) - BUDGET);
    // The client comes back at once, under a new peer-id, with the same address: it gets
    // another slot, and a flow of its own for a tuple an old flow still has.
    let keys = testkit::queue_session(&mb, PeerId(6), vip, GroupMask::EMPTY, Cipher::Aes256Gcm, 9);
    w.poll_once(now);
    let mut back = Client::new(PeerId(6), KeyId(0), &keys);
    let new_slot = w.sessions().index_of_peer(PeerId(6)).unwrap();
    assert_ne!(
        new_slot, old_slot,
        "the slot is held while its flows remain"
    );
    // (The most recent flows go first: the oldest, 1000's, is there till the end.)
    w.port_mut(0)
        .unwrap()
        .inject(&back.frame(&udp(1000, b"new")));
    w.poll_once(now);
    let sent = w.port_mut(1).unwrap().take_sent();
    assert_eq!(sent.len(), 1);
    let nat_port = UdpPacket::new_checked(ip_of(&sent[0]).payload())
        .unwrap()
        .src_port();
    let reply = |w: &mut Worker<MemPort>| {
        let r = testkit::ipv4_udp(ip(lab::HOST_IP), 9, ip(lab::INSIDE_IP), nat_port, b"reply");
        let f = testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &r);
        w.port_mut(1).unwrap().inject(&f);
        w.poll_once(now);
        w.port_mut(0).unwrap().take_sent()
    };
    let got = reply(&mut w);
    assert_eq!(
        got.len(),
        1,
        "the reply goes to the session that made the flow"
    );
    assert!(back.open(&got[0]).is_some());

    // Each poll removes at most BUDGET more; the old flows are all gone in the end, the new
    // session's stays, and the slot is free again.
    let mut polls = 0;
    while w.flow_count() > 1 {
        let before = w.flow_count();
        w.poll_once(now);
        assert!(
            before - w.flow_count() <= BUDGET,
            "{before} -> {}",
            w.flow_count()
        );
        polls += 1;
        assert!(polls <= usize::from(FLOWS), "the old flows never all went");
    }
    assert!(polls >= usize::from(FLOWS) / BUDGET - 3, "{polls} polls");
    w.poll_once(now);
    assert_eq!(w.flow_count(), 1, "the new session's flow stays");
    let got = reply(&mut w);
    assert_eq!(got.len(), 1);
    assert!(back.open(&got[0]).is_some());
    let keys = testkit::queue_session(
        &mb,
        PeerId(7),
        ip("10.200.0.3"),
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        10,
    );
    w.poll_once(now);
    assert_eq!(
        w.sessions().index_of_peer(PeerId(7)),
        Some(old_slot),
        "the slot is free again"
    );
    let mut next = Client::new(PeerId(7), KeyId(0), &keys);
    let f = next.frame(&testkit::ipv4_udp(
        ip("10.200.0.3"),
        1000,
        ip(lab::HOST_IP),
        9,
        b"x",
    ));
    w.port_mut(0).unwrap().inject(&f);
    w.poll_once(now);
    assert_eq!(w.port_mut(1).unwrap().take_sent().len(), 1);
    assert_eq!(w.flow_count(), 2);
    assert_eq!(w.drops().get(DropReason::FlowTableFull), 0);
}

/// Return traffic of an ended session's flows, kept until housekeeping removes them a budget
/// a poll, is dropped `no_flow`, as it is once they are gone (a few polls later), not
/// `no_session_for_destination`, which says no session holds the client's address: when the
/// flow's decision stands, for the later fragments of a datagram whose first went to the
/// client before the end, and when a rule-table swap has the flow decided again.
#[test]
fn return_traffic_of_an_ended_sessions_retired_flows_is_dropped_no_flow() {
    let now = Instant::now();
    let (mut w, mb, _, _) = ten_flows_on_a_core(8, 1, now);
    // The oldest flow (source port 1000) is the last of them to go.
    let nat_port = oldest_nat_port(&mut w);
    let reply = |w: &mut Worker<MemPort>| {
        let r = testkit::ipv4_udp(ip(lab::HOST_IP), 9, ip(lab::INSIDE_IP), nat_port, b"reply");
        let f = testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &r);
        w.port_mut(1).unwrap().inject(&f);
        w.poll_once(now);
        w.port_mut(0).unwrap().take_sent()
    };
    assert_eq!(
        reply(&mut w).len(),
        1,
        "the flow's reply reaches its client"
    );
    // A reply in fragments whose first goes to the client before the session ends.
    let later = first_fragment_to_the_client(&mut w, nat_port, now);

    assert!(mb
        .commands
        .push(Command::RemoveSession { peer: PeerId(5) })
        .is_ok());
    w.poll_once(now);
    assert!(w.flow_count() >= 8, "{} flows left", w.flow_count());
    assert!(reply(&mut w).is_empty());
    assert_eq!(nonzero_drops(&w), vec![("no_flow", 1)]);
    // Its later fragments, which follow the first's translation, not the flow.
    for f in &later {
        w.port_mut(1).unwrap().inject(f);
    }
    w.poll_once(now);
    assert!(w.port_mut(0).unwrap().take_sent().is_empty());
    assert_eq!(nonzero_drops(&w), vec![("no_flow", 3)]);

    assert!(mb
        .commands
        .push(Command::InstallRules(Arc::new(testkit::lab_rules(2))))
        .is_ok());
    assert!(reply(&mut w).is_empty());
    assert!(w.flow_count() >= 5, "{} flows left", w.flow_count());
    assert_eq!(nonzero_drops(&w), vec![("no_flow", 4)]);
}

/// A core of `sessions` session slots that removes `removal_budget` flows of an ended session
/// a poll, with client 5 (its virtual address last) and its ten flows (`open_ten_flows`),
/// made.
fn ten_flows_on_a_core(
    sessions: usize,
    removal_budget: usize,
    now: Instant,
) -> (Worker<MemPort>, Mailbox, Client, u32) {
    let mb = Mailbox::new(64);
    let mut cfg = testkit::lab_config(1024, sessions);
    cfg.removal_budget = removal_budget;
    let mut w = testkit::lab_worker(vec![MemPort::new(), MemPort::new()], cfg, mb.clone(), now);
    let vip = ip(lab::CLIENT_VIP);
    let mut c = add_session(
        &mut w,
        &mb,
        PeerId(5),
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        now,
    );
    open_ten_flows(&mut w, &mut c, vip);
    w.poll_once(now);
    assert_eq!(w.flow_count(), 10);
    (w, mb, c, vip)
}

/// The translated port of the first of the ten flows `ten_flows_on_a_core` made (source port
/// 1000), from their datagrams sent out of the inside port.
fn oldest_nat_port(w: &mut Worker<MemPort>) -> u16 {
    let sent = w.port_mut(1).unwrap().take_sent();
    assert_eq!(sent.len(), 10);
    UdpPacket::new_checked(ip_of(&sent[0]).payload())
        .unwrap()
        .src_port()
}

/// A 300-byte reply to that flow's port, cut in three fragments, the first of them received
/// and sent on to the client; the other two, not yet received.
fn first_fragment_to_the_client(
    w: &mut Worker<MemPort>,
    nat_port: u16,
    now: Instant,
) -> Vec<Vec<u8>> {
    let big = testkit::ipv4_udp(ip(lab::HOST_IP), 9, ip(lab::INSIDE_IP), nat_port, &[7; 300]);
    let mut fragments = testkit::fragment(
        &testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &big),
        124,
    );
    assert_eq!(fragments.len(), 3);
    w.port_mut(1).unwrap().inject(&fragments.remove(0));
    w.poll_once(now);
    assert_eq!(w.port_mut(0).unwrap().take_sent().len(), 1);
    fragments
}

/// Queues ten datagrams of client `c` (virtual address `vip`) from source ports 1000 to 1009
/// to the host on the outside port: ten flows at the next poll.
fn open_ten_flows(w: &mut Worker<MemPort>, c: &mut Client, vip: u32) {
    for sport in 0..10 {
        let f = c.frame(&testkit::ipv4_udp(
            vip,
            1000 + sport,
            ip(lab::HOST_IP),
            9,
            b"x",
        ));
        w.port_mut(0).unwrap().inject(&f);
    }
}

/// On a core whose session table is full, a slot held for an ended session's flows counts as
/// taken (a new session is refused `TableFull`, not `WrongCore`), but a session that replaces
/// one of the core's own (a client reconnecting with its address) still gets in: it takes the
/// replaced session's slot, whose flows then go at once, as before slots were held.
#[test]
fn a_full_core_still_takes_a_session_that_replaces_one_of_its_own() {
    let now = Instant::now();
    let (mut w, mb, _, vip) = ten_flows_on_a_core(1, 1, now);
    let removals = |mb: &Mailbox| {
        std::iter::from_fn(|| mb.reports.pop())
            .filter_map(|r| match r {
                Report::Removed { peer, because, .. } => Some((peer.0, because)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // Reconnecting under a new peer-id with its address, the client replaces its session.
    let keys = testkit::queue_session(&mb, PeerId(6), vip, GroupMask::EMPTY, Cipher::Aes256Gcm, 3);
    w.poll_once(now);
    assert_eq!(removals(&mb), [(5, Removal::Replaced)]);
    assert_eq!(w.sessions().len(), 1);
    assert_eq!(
        w.flow_count(),
        0,
        "the replaced session's flows went at once"
    );
    let mut c = Client::new(PeerId(6), KeyId(0), &keys);
    open_ten_flows(&mut w, &mut c, vip);
    w.poll_once(now);
    assert_eq!(w.flow_count(), 10);
    // Ended, its flows going one a poll: its slot is held, and the core is full till then.
    assert!(mb
        .commands
        .push(Command::RemoveSession { peer: PeerId(6) })
        .is_ok());
    w.poll_once(now);
    assert_eq!(removals(&mb), [(6, Removal::Asked)]);
    testkit::queue_session(
        &mb,
        PeerId(7),
        ip("10.200.0.3"),
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        4,
    );
    w.poll_once(now);
    assert_eq!(removals(&mb), [(7, Removal::TableFull)]);
    while w.flow_count() > 0 {
        w.poll_once(now);
    }
    w.poll_once(now);
    testkit::queue_session(
        &mb,
        PeerId(7),
        ip("10.200.0.3"),
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        4,
    );
    w.poll_once(now);
    assert_eq!(removals(&mb), []);
    assert!(w.sessions().index_of_peer(PeerId(7)).is_some());
}

#[test]
fn keepalive_exit_and_control_packets() {
    let mut lab = lab_with(GroupMask::EMPTY);
    lab.send_from_client(&sluice_engine::crypto::data_channel::PING_MAGIC);
    assert_eq!(lab.drops(DropReason::Keepalive), 1);
    lab.send_exit();
    assert_eq!(lab.drops(DropReason::OccExit), 1);
    // Neither is tunnel traffic: no ingress counted, for the session or its endpoint.
    let t = lab
        .w
        .sessions()
        .iter()
        .find(|(_, s)| s.id().peer().0 == 5)
        .map(|(_, s)| s.traffic())
        .expect("the session is still there");
    assert_eq!((t.ingress_packets, t.ingress_bytes), (0, 0));
    assert_eq!(lab.w.endpoint_traffic()[0].ingress_packets, 0);
    // A control packet (HARD_RESET_CLIENT_V2) is punted with its addresses.
    let hard_reset = lab.send_hard_reset();
    let reports: Vec<Report> = std::iter::from_fn(|| lab.mb.reports.pop()).collect();
    assert!(reports
        .iter()
        .any(|r| matches!(r, Report::ClientExited { peer } if peer.0 == 5)));
    assert!(reports.iter().any(
        |r| matches!(r, Report::Punted { payload, remote, endpoint: 0, .. }
        if payload.as_slice() == hard_reset && remote.port == 50_001)
    ));
    // And control can answer through the core.
    let cmd = Command::Transmit {
        payload: vec![0x40, 9, 9],
        remote: sluice_engine::session::Remote {
            ip: ip(lab::CLIENT_OUTER_IP),
            port: 50_001,
        },
        local: sluice_engine::session::Remote {
            ip: ip(lab::OUTSIDE_IP),
            port: lab::VPN_PORT,
        },
    };
    assert!(lab.mb.commands.push(cmd).is_ok());
    lab.w.poll_once(lab.now);
    let out = lab.outside_sent();
    assert_eq!(out.len(), 1);
    let u = UdpPacket::new_checked(ip_of(&out[0]).payload())
        .unwrap()
        .payload()
        .to_vec();
    assert_eq!(u, vec![0x40, 9, 9]);
}

/// A client that sends its OCC exit again and again (each a fresh packet-id, so each opens)
/// is reported to control once: the rest are only counted, and leave the report queue's room
/// to the reports of other sessions. One whose report found the queue full is reported with
/// the next exit.
#[test]
fn a_clients_repeated_exits_are_reported_once() {
    let mut lab = lab_with(GroupMask::EMPTY);
    for _ in 0..50 {
        lab.send_exit();
    }
    assert_eq!(lab.drops(DropReason::OccExit), 50);
    let reports: Vec<Report> = std::iter::from_fn(|| lab.mb.reports.pop()).collect();
    let exits = reports
        .iter()
        .filter(|r| matches!(r, Report::ClientExited { peer } if peer.0 == 5))
        .count();
    assert_eq!(exits, 1, "{reports:?}");

    let mut lab = lab_with(GroupMask::EMPTY);
    while lab
        .mb
        .reports
        .push(Report::Idle { peer: PeerId(9) })
        .is_ok()
    {}
    lab.send_exit();
    assert_eq!(lab.drops(DropReason::ReportQueueFull), 1);
    while lab.mb.reports.pop().is_some() {}
    lab.send_exit();
    lab.send_exit();
    let reports: Vec<Report> = std::iter::from_fn(|| lab.mb.reports.pop()).collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(matches!(reports[0], Report::ClientExited { peer } if peer.0 == 5));
}

/// A control thread that stops reading (a storm of handshakes) lets the report queue fill with
/// punts only up to three quarters: a session's end still reaches it, and the punts past that
/// are counted.
#[test]
fn punts_leave_room_for_the_reports_control_cannot_lose() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let r = Remote { ip: 1, port: 1 };
    while lab.mb.reports.len() < 768 {
        let punt = Report::Punted {
            payload: vec![0x38],
            remote: r,
            local: r,
            endpoint: 0,
        };
        assert!(lab.mb.reports.push(punt).is_ok());
    }
    lab.send_hard_reset();
    assert_eq!(lab.drops(DropReason::PuntQueueFull), 1);
    lab.send_exit();
    assert_eq!(lab.drops(DropReason::ReportQueueFull), 0);
    let reports: Vec<Report> = std::iter::from_fn(|| lab.mb.reports.pop()).collect();
    assert_eq!(reports.len(), 769);
    assert!(matches!(reports.last(), Some(Report::ClientExited { peer }) if peer.0 == 5));
}

/// Only what can be a client's control packet is punted, and at most a budget per source
/// (address and port): a source sending as fast as it can is cut off at its burst and then at
/// its rate, while another source (here another port of the same address, as behind a NAT)
/// still gets through.
#[test]
fn control_packets_are_punted_within_a_budget_per_source() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let (burst, per_sec) = testkit::lab_config(1, 1).punt_budget;
    let frame = from_client_port;
    let hard_reset = FIRST_RESET;
    let punted = |lab: &mut Lab| {
        std::iter::from_fn(|| lab.mb.reports.pop())
            .filter(|r| matches!(r, Report::Punted { .. }))
            .count() as u32
    };
    let flood = frame(40_000, &hard_reset);
    for _ in 0..burst + 40 {
        lab.w.port_mut(0).unwrap().inject(&flood);
    }
    lab.w
        .port_mut(0)
        .unwrap()
        .inject(&frame(40_001, &hard_reset));
    // Junk opcodes (P_DATA_V1, opcode 12) and a truncated reset are not punted at all.
    lab.w
        .port_mut(0)
        .unwrap()
        .inject(&frame(40_001, &[6 << 3, 0, 0, 0, 0]));
    lab.w
        .port_mut(0)
        .unwrap()
        .inject(&frame(40_001, &[12 << 3; 20]));
    lab.w
        .port_mut(0)
        .unwrap()
        .inject(&frame(40_001, &hard_reset[..13]));
    for _ in 0..10 {
        lab.w.poll_once(lab.now);
    }
    assert_eq!(punted(&mut lab), burst + 1);
    assert_eq!(lab.drops(DropReason::PuntRateLimited), 40);
    assert_eq!(lab.drops(DropReason::MalformedOpenvpn), 3);
    // A second later the flooding source has its rate again, and no more.
    let later = lab.now + Duration::from_secs(1);
    for _ in 0..per_sec + 5 {
        lab.w.port_mut(0).unwrap().inject(&flood);
    }
    for _ in 0..10 {
        lab.w.poll_once(later);
    }
    assert_eq!(punted(&mut lab), per_sec);
    assert_eq!(lab.drops(DropReason::PuntRateLimited), 45);
}

/// A control packet is punted only if its UDP checksum verifies (or it has none): an ack
/// whose acked packet-id was corrupted on the way, its checksum left as sent, is dropped
/// `bad_udp_checksum` and never reaches control, whole or reassembled from fragments; the same
/// ack unharmed is punted, and so is a corrupted one sent without a checksum (nothing to
/// check it by). With the cookie key, a corrupted first reset is not answered on the core.
#[test]
fn a_control_packet_with_a_bad_udp_checksum_is_not_punted() {
    let mut lab = lab_with(GroupMask::EMPTY);
    // P_ACK_V1: session id, one ack (packet-id 7), the remote session id.
    let mut ack = vec![5 << 3, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0, 0, 0, 7];
    ack.extend_from_slice(&[9; 8]);
    // Padded past one fragment's room, for the fragmented copy.
    ack.resize(200, 0);
    let good = from_client_port(50_001, &ack);
    let payload_at = 14 + 20 + 8;
    let mut corrupted = good.clone();
    corrupted[payload_at + 13] ^= 0x04;
    let mut unchecked = corrupted.clone();
    unchecked[payload_at - 2..payload_at].copy_from_slice(&[0, 0]);
    let punted = |lab: &mut Lab| -> Vec<Vec<u8>> {
        std::iter::from_fn(|| lab.mb.reports.pop())
            .filter_map(|r| match r {
                Report::Punted { payload, .. } => Some(payload),
                _ => None,
            })
            .collect()
    };

    lab.w.port_mut(0).unwrap().inject(&corrupted);
    lab.w.poll_once(lab.now);
    assert_eq!(punted(&mut lab), Vec::<Vec<u8>>::new());
    assert_eq!(lab.drops(DropReason::BadUdpChecksum), 1);

    for f in testkit::fragment(&corrupted, 100) {
        lab.w.port_mut(0).unwrap().inject(&f);
    }
    lab.w.poll_once(lab.now);
    assert_eq!(punted(&mut lab), Vec::<Vec<u8>>::new());
    assert_eq!(lab.drops(DropReason::BadUdpChecksum), 2);

    lab.w.port_mut(0).unwrap().inject(&good);
    for f in testkit::fragment(&good, 100) {
        lab.w.port_mut(0).unwrap().inject(&f);
    }
    lab.w.port_mut(0).unwrap().inject(&unchecked);
    lab.w.poll_once(lab.now);
    let mut changed = ack.clone();
    changed[13] ^= 0x04;
    assert_eq!(punted(&mut lab), vec![ack.clone(), ack, changed]);
    assert_eq!(lab.drops(DropReason::BadUdpChecksum), 2);
    assert_eq!(nonzero_drops(&lab.w), vec![("bad_udp_checksum", 2)]);

    // With the cookie key, a first reset with a changed byte is not answered on the core
    // either; the reset unharmed is.
    let now = Instant::now();
    let mut w = answering_core(64, 8, &Mailbox::new(64), now);
    let reset = FIRST_RESET;
    let good = from_client_port(50_001, &reset);
    let mut corrupted = good.clone();
    corrupted[payload_at + 3] ^= 0x10;
    w.port_mut(0).unwrap().inject(&corrupted);
    w.poll_once(now);
    assert!(w.port_mut(0).unwrap().take_sent().is_empty());
    assert_eq!(nonzero_drops(&w), vec![("bad_udp_checksum", 1)]);
    w.port_mut(0).unwrap().inject(&good);
    w.poll_once(now);
    assert_eq!(w.port_mut(0).unwrap().take_sent().len(), 1);
    assert_eq!(nonzero_drops(&w), vec![("bad_udp_checksum", 1)]);
}

/// With the servers' cookie key (`WorkerConfig::cookies`), the core answers a client's first
/// hard reset itself: the 26-byte server reset under a session id that verifies with the key,
/// back to the sender, nothing punted. A spray of spoofed resets is all answered and reaches
/// control not at all; one address gets its budget of answers and no more. The echo is
/// punted; other control packets only from addresses control named (`Command::ControlPeer`).
#[test]
fn first_resets_are_answered_on_the_core() {
    let now = Instant::now();
    let mb = Mailbox::new(1024);
    let key = Arc::new(CookieKey::generate(60).unwrap());
    let mut cfg = testkit::lab_config(1024, 64);
    cfg.cookies = Some(Arc::clone(&key));
    let (burst, _) = cfg.answer_budget;
    let mut w = testkit::lab_worker(vec![MemPort::new(), MemPort::new()], cfg, mb.clone(), now);
    let frame = |src: u32, port: u16, payload: &[u8]| {
        let udp = testkit::ipv4_udp(src, port, ip(lab::OUTSIDE_IP), lab::VPN_PORT, payload);
        testkit::eth_ipv4(lab::OUTSIDE_MAC, lab::CLIENT_MAC, &udp)
    };
    let client = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut reset = vec![0x38];
    reset.extend(client);
    reset.extend([0, 0, 0, 0, 0]);
    // 2.6 clients append early-negotiation TLVs; they change nothing.
    reset.extend([0, 1, 0, 2, 0, 0]);
    let later = now + Duration::from_secs(7);
    w.port_mut(0)
        .unwrap()
        .inject(&frame(ip(lab::CLIENT_OUTER_IP), 50_001, &reset));
    w.poll_once(later);
    let out = w.port_mut(0).unwrap().take_sent();
    assert_eq!(out.len(), 1, "{:?}", nonzero_drops(&w));
    assert_eq!(
        (&out[0][0..6], &out[0][6..12]),
        (&lab::CLIENT_MAC[..], &lab::OUTSIDE_MAC[..])
    );
    let outer = ip_of(&out[0]);
    assert!(outer.verify_checksum());
    assert_eq!(
        (outer.src(), outer.dst()),
        (
            ip(lab::OUTSIDE_IP).to_be_bytes(),
            ip(lab::CLIENT_OUTER_IP).to_be_bytes()
        )
    );
    let u = UdpPacket::new_checked(outer.payload()).unwrap();
    assert_eq!((u.src_port(), u.dst_port()), (lab::VPN_PORT, 50_001));
    assert!(u.verify_checksum(outer.src(), outer.dst()));
    let answer = u.payload();
    assert_eq!(answer.len(), 26);
    assert_eq!(
        (answer[0], answer[9], &answer[14..22]),
        (0x40, 1, &client[..])
    );
    let ours: [u8; 8] = answer[1..9].try_into().unwrap();
    let (remote, local) = (
        Remote {
            ip: ip(lab::CLIENT_OUTER_IP),
            port: 50_001,
        },
        Remote {
            ip: ip(lab::OUTSIDE_IP),
            port: lab::VPN_PORT,
        },
    );
    assert!(
        key.verify(7, remote, local, &client, &ours),
        "the core's clock is the epoch's"
    );
    assert!(mb.reports.pop().is_none(), "nothing punted");
    // A spray from 10,000 addresses: every one answered, nothing punted, nothing dropped.
    let mut answered = 0;
    for i in 0..10_000u32 {
        w.port_mut(0)
            .unwrap()
            .inject(&frame(0x0b00_0000 + i, 1000, &reset));
        if i % 32 == 31 {
            w.poll_once(later);
            answered += w.port_mut(0).unwrap().take_sent().len();
        }
    }
    w.poll_once(later);
    answered += w.port_mut(0).unwrap().take_sent().len();
    assert_eq!(answered, 10_000, "{:?}", nonzero_drops(&w));
    assert!(mb.reports.pop().is_none());
    assert_eq!(nonzero_drops(&w), vec![]);
    // One address, any ports: its burst of answers, then `reset_rate_limited`.
    for port in 0..burst + 10 {
        w.port_mut(0)
            .unwrap()
            .inject(&frame(0x0c00_0001, port as u16, &reset));
    }
    for _ in 0..4 {
        w.poll_once(later);
    }
    assert_eq!(w.port_mut(0).unwrap().take_sent().len(), burst as usize);
    assert_eq!(w.drops().get(DropReason::ResetRateLimited), 10);
    // The client's echo (an ACK_V1 of our reset) goes to control.
    let mut ack = vec![5 << 3];
    ack.extend(client);
    ack.extend([1, 0, 0, 0, 0]);
    ack.extend(ours);
    w.port_mut(0)
        .unwrap()
        .inject(&frame(ip(lab::CLIENT_OUTER_IP), 50_001, &ack));
    w.poll_once(later);
    assert!(matches!(mb.reports.pop(), Some(Report::Punted { payload, .. }) if payload == ack));
    // Other control packets reach control only from an address it has a session with: a
    // forged echo, and a spray of later-looking control packets from 5,000 addresses, die
    // here.
    let mut forged = ack.clone();
    forged[14] ^= 1;
    let mut tls = vec![4 << 3];
    tls.extend(client);
    tls.extend([1, 0, 0, 0, 3]);
    tls.extend(ours);
    tls.extend([0, 0, 0, 5, 0x17, 3, 3]);
    w.port_mut(0)
        .unwrap()
        .inject(&frame(ip(lab::CLIENT_OUTER_IP), 50_001, &forged));
    w.poll_once(later);
    for i in 0..5_000u32 {
        w.port_mut(0)
            .unwrap()
            .inject(&frame(0x0d00_0000 + i, 2000, &tls));
        if i % 32 == 31 {
            w.poll_once(later);
        }
    }
    w.poll_once(later);
    assert!(mb.reports.pop().is_none(), "nothing punted");
    assert_eq!(w.drops().get(DropReason::UnknownControlPeer), 5_001);
    // Once control says a session is there, its packets go through, until it says it is gone.
    let peer = Remote {
        ip: 0x0d00_0007,
        port: 2000,
    };
    let from_peer = frame(peer.ip, peer.port, &tls);
    for present in [true, false] {
        assert!(mb
            .commands
            .push(Command::ControlPeer {
                remote: peer,
                present
            })
            .is_ok());
        w.poll_once(later);
        w.port_mut(0).unwrap().inject(&from_peer);
        w.poll_once(later);
        let punted =
            matches!(mb.reports.pop(), Some(Report::Punted { payload, .. }) if payload == tls);
        assert_eq!(punted, present);
    }
    assert_eq!(w.drops().get(DropReason::UnknownControlPeer), 5_002);
}

/// A core told the appliance stops (`Command::StopAnswering`) answers no first reset (counted
/// `stopping`): a client told to restart must find the next daemon, not get a session id from
/// this one that the next does not know (it would wait out its 60 s handshake window there).
/// The control packets of a session control has go on being punted, for its last acks.
#[test]
fn a_stopping_core_answers_no_first_reset() {
    let now = Instant::now();
    let mb = Mailbox::new(1024);
    let mut w = answering_core(1024, 64, &mb, now);
    let frame = |src: u32, port: u16, payload: &[u8]| {
        let udp = testkit::ipv4_udp(src, port, ip(lab::OUTSIDE_IP), lab::VPN_PORT, payload);
        testkit::eth_ipv4(lab::OUTSIDE_MAC, lab::CLIENT_MAC, &udp)
    };
    let client = &FIRST_RESET[1..9];
    let reset = frame(ip(lab::CLIENT_OUTER_IP), 50_001, &FIRST_RESET);
    w.port_mut(0).unwrap().inject(&reset);
    w.poll_once(now);
    assert_eq!(w.port_mut(0).unwrap().take_sent().len(), 1, "answered");
    let peer = Remote {
        ip: ip(lab::CLIENT_OUTER_IP),
        port: 50_002,
    };
    for c in [
        Command::ControlPeer {
            remote: peer,
            present: true,
        },
        Command::StopAnswering,
    ] {
        assert!(mb.commands.push(c).is_ok());
    }
    w.poll_once(now);
    w.port_mut(0).unwrap().inject(&reset);
    w.poll_once(now);
    assert!(
        w.port_mut(0).unwrap().take_sent().is_empty(),
        "not answered"
    );
    assert_eq!(nonzero_drops(&w), vec![("stopping", 1)]);
    let mut ack = vec![5 << 3];
    ack.extend(client);
    ack.extend([1, 0, 0, 0, 0]);
    ack.extend([9; 8]);
    w.port_mut(0)
        .unwrap()
        .inject(&frame(peer.ip, peer.port, &ack));
    w.poll_once(now);
    assert!(
        matches!(mb.reports.pop(), Some(Report::Punted { payload, .. }) if payload == ack),
        "the session's packet still goes to control"
    );
}

#[test]
fn arp_and_ping_of_the_appliance() {
    let mut lab = lab_with(GroupMask::EMPTY);
    // Who has 172.31.1.5? The inside port answers.
    let mut req = vec![0u8; 42];
    sluice_engine::wire::ethernet::write_header(&mut req, [0xff; 6], lab::HOST_MAC, 0x0806);
    sluice_engine::wire::arp::ArpRepr {
        operation: 1,
        sender_mac: lab::HOST_MAC,
        sender_ip: ip(lab::HOST_IP).to_be_bytes(),
        target_mac: [0; 6],
        target_ip: ip(lab::INSIDE_IP).to_be_bytes(),
    }
    .emit(&mut req[14..]);
    lab.w.port_mut(1).unwrap().inject(&req);
    let ping = testkit::ipv4_echo(ip(lab::HOST_IP), ip(lab::INSIDE_IP), true, 7, 1, b"x");
    lab.w
        .port_mut(1)
        .unwrap()
        .inject(&testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &ping));
    lab.w.poll_once(lab.now);
    let out = lab.inside_sent();
    assert_eq!(out.len(), 2);
    let arp = sluice_engine::wire::arp::ArpRepr::parse(&out[0][14..]).unwrap();
    assert_eq!(
        (arp.operation, arp.sender_mac, arp.target_mac),
        (2, lab::INSIDE_MAC, lab::HOST_MAC)
    );
    let p = ip_of(&out[1]);
    assert_eq!(p.dst(), ip(lab::HOST_IP).to_be_bytes());
    let icmp = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum() && icmp.kind() == 0);
}

/// The subnet port answers pings to its own address only: echo requests from the host to
/// another host of the subnet, the subnet's broadcast, the limited broadcast, an address
/// outside the subnet and a multicast group are not answered in those addresses' names.
#[test]
fn the_subnet_port_answers_pings_to_its_own_address_only() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let others = [
        "172.31.1.99",
        "172.31.1.255",
        "255.255.255.255",
        "8.8.8.8",
        "224.0.0.1",
    ];
    for (seq, to) in others.iter().enumerate() {
        let ping = testkit::ipv4_echo(ip(lab::HOST_IP), ip(to), true, 7, seq as u16, b"x");
        lab.w.port_mut(1).unwrap().inject(&testkit::eth_ipv4(
            lab::INSIDE_MAC,
            lab::HOST_MAC,
            &ping,
        ));
        lab.w.poll_once(lab.now);
        let out = lab.inside_sent();
        assert!(out.is_empty(), "answered in the name of {to}");
    }
    assert!(lab.outside_sent().is_empty());
    assert_eq!(
        lab.drops(DropReason::NotForUs),
        others.len() as u64,
        "{:?}",
        nonzero_drops(&lab.w)
    );
    // Its own address still answers.
    let ping = testkit::ipv4_echo(ip(lab::HOST_IP), ip(lab::INSIDE_IP), true, 7, 9, b"x");
    lab.w
        .port_mut(1)
        .unwrap()
        .inject(&testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &ping));
    lab.w.poll_once(lab.now);
    let out = lab.inside_sent();
    assert_eq!(out.len(), 1);
    assert_eq!(ip_of(&out[0]).src(), ip(lab::INSIDE_IP).to_be_bytes());
}

/// A ping to the port's own address from no single host (RFC 1122 §3.2.1.3: "this network",
/// loopback, multicast, the limited broadcast, the subnet's broadcast or network address), or
/// in a frame from a group MAC, is not answered: the answer would go to a broadcast or group
/// address, to every host of the link. Each is dropped `not_for_us`. From the host, in a frame
/// from its own MAC, it still is.
#[test]
fn pings_from_no_single_host_are_not_answered() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let to = ip(lab::INSIDE_IP);
    let froms = [
        ("0.0.0.0", lab::HOST_MAC),
        ("127.0.0.1", lab::HOST_MAC),
        ("224.0.0.1", lab::HOST_MAC),
        ("255.255.255.255", lab::HOST_MAC),
        ("172.31.1.255", lab::HOST_MAC),
        ("172.31.1.0", lab::HOST_MAC),
        (lab::HOST_IP, [0xff; 6]),
        (lab::HOST_IP, [0x01, 0, 0x5e, 0, 0, 1]),
    ];
    for (seq, (from, mac)) in froms.iter().enumerate() {
        let ping = testkit::ipv4_echo(ip(from), to, true, 7, seq as u16, b"x");
        lab.w
            .port_mut(1)
            .unwrap()
            .inject(&testkit::eth_ipv4(lab::INSIDE_MAC, *mac, &ping));
        lab.w.poll_once(lab.now);
        let out = lab.inside_sent();
        assert!(out.is_empty(), "answered {from} from {mac:?}");
    }
    assert_eq!(
        lab.drops(DropReason::NotForUs),
        froms.len() as u64,
        "{:?}",
        nonzero_drops(&lab.w)
    );
    let ping = testkit::ipv4_echo(ip(lab::HOST_IP), to, true, 7, 99, b"x");
    lab.w
        .port_mut(1)
        .unwrap()
        .inject(&testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &ping));
    lab.w.poll_once(lab.now);
    let out = lab.inside_sent();
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][..6], &lab::HOST_MAC[..]);
}

/// The lab with its target network reached through ENI address `eni` on the inside port
/// (`testkit::lab_rules_via_eni`), not the port's own address.
fn lab_via_eni(eni: u32) -> Lab {
    lab_under(testkit::lab_rules_via_eni(2, eni))
}

/// The lab with `rules` installed in place of its first table.
fn lab_under(rules: sluice_engine::rules::RuleTable) -> Lab {
    let mut lab = lab_with(GroupMask::EMPTY);
    lab.mb
        .commands
        .push(Command::InstallRules(Arc::new(rules)))
        .map_err(|_| ())
        .unwrap();
    lab.w.poll_once(lab.now);
    lab
}

/// A target network whose ENI address (172.31.1.6) is not the port's own (172.31.1.5): the
/// port answers ARP for it with its MAC, and pings to it from it; ARP for an address that is
/// neither is not answered.
#[test]
fn arp_and_ping_of_an_eni_other_than_the_ports_address() {
    let eni = ip("172.31.1.6");
    let mut lab = lab_via_eni(eni);
    let ask = |lab: &mut Lab, target: u32| {
        lab.w.port_mut(1).unwrap().inject(&testkit::arp_request(
            lab::HOST_MAC,
            ip(lab::HOST_IP),
            target,
        ));
        lab.w.poll_once(lab.now);
        lab.inside_sent()
    };
    let out = ask(&mut lab, eni);
    assert_eq!(out.len(), 1, "{:?}", nonzero_drops(&lab.w));
    assert_eq!(
        (&out[0][0..6], &out[0][6..12]),
        (&lab::HOST_MAC[..], &lab::INSIDE_MAC[..])
    );
    let arp = sluice_engine::wire::arp::ArpRepr::parse(&out[0][14..]).unwrap();
    assert_eq!(
        (arp.operation, arp.sender_mac, arp.sender_ip),
        (2, lab::INSIDE_MAC, eni.to_be_bytes())
    );
    assert_eq!(
        (arp.target_mac, arp.target_ip),
        (lab::HOST_MAC, ip(lab::HOST_IP).to_be_bytes())
    );
    assert!(ask(&mut lab, ip("172.31.1.7")).is_empty(), "not ours");
    // The port's own address is still answered, from itself.
    let out = ask(&mut lab, ip(lab::INSIDE_IP));
    let arp = sluice_engine::wire::arp::ArpRepr::parse(&out[0][14..]).unwrap();
    assert_eq!(arp.sender_ip, ip(lab::INSIDE_IP).to_be_bytes());

    let ping = testkit::ipv4_echo(ip(lab::HOST_IP), eni, true, 7, 1, b"x");
    lab.w
        .port_mut(1)
        .unwrap()
        .inject(&testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &ping));
    lab.w.poll_once(lab.now);
    let out = lab.inside_sent();
    assert_eq!(out.len(), 1, "{:?}", nonzero_drops(&lab.w));
    let p = ip_of(&out[0]);
    assert_eq!(
        (p.src(), p.dst()),
        (eni.to_be_bytes(), ip(lab::HOST_IP).to_be_bytes())
    );
}

/// ARP from a host of the subnet that claims an ENI address of the port (172.31.1.6, not the
/// port's own) draws no traffic to the claimant: a client's ping to that address is answered by
/// the appliance itself, and nothing leaves on the inside port (no frame to the claimant's MAC,
/// no ARP request for our own address).
#[test]
fn arp_claiming_an_eni_address_is_not_learned() {
    let eni = ip("172.31.1.6");
    let mut lab = lab_via_eni(eni);
    let claimant = [2, 0, 0, 0, 2, 99];
    for target in [ip(lab::INSIDE_IP), eni] {
        lab.w
            .port_mut(1)
            .unwrap()
            .inject(&testkit::arp_request(claimant, eni, target));
        lab.w.poll_once(lab.now);
    }
    let _answers = lab.inside_sent();
    lab.send_from_client(&testkit::ipv4_echo(
        ip(lab::CLIENT_VIP),
        eni,
        true,
        3,
        1,
        b"",
    ));
    let out = lab.inside_sent();
    assert!(out.is_empty(), "{out:02x?} {:?}", nonzero_drops(&lab.w));
    let answered = lab.outside_sent();
    assert_eq!(answered.len(), 1, "{:?}", nonzero_drops(&lab.w));
    let reply = lab
        .client
        .open(&answered[0])
        .expect("sealed for the client");
    assert_eq!(
        Ipv4Packet::new_checked(&reply[..]).unwrap().src(),
        eni.to_be_bytes()
    );
}

/// ARP whose sender is the subnet's broadcast (172.31.1.255) or network (172.31.1.0) address,
/// a request for the port's address or a reply to it, comes from no host: it is neither
/// answered nor learned, and each is dropped `arp_sender_not_host`. The host's own request is
/// still answered.
#[test]
fn arp_from_the_subnets_broadcast_or_network_address_is_dropped() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let claimant = [2, 0, 0, 0, 2, 99];
    for sender in ["172.31.1.255", "172.31.1.0"] {
        let frames = [
            testkit::arp_request(claimant, ip(sender), ip(lab::INSIDE_IP)),
            testkit::arp_reply(claimant, ip(sender), lab::INSIDE_MAC, ip(lab::INSIDE_IP)),
        ];
        for f in frames {
            lab.w.port_mut(1).unwrap().inject(&f);
            lab.w.poll_once(lab.now);
            let out = lab.inside_sent();
            assert!(out.is_empty(), "answered {sender}: {out:?}");
        }
    }
    assert_eq!(
        lab.drops(DropReason::ArpSenderNotHost),
        4,
        "{:?}",
        nonzero_drops(&lab.w)
    );
    lab.w.port_mut(1).unwrap().inject(&testkit::arp_request(
        lab::HOST_MAC,
        ip(lab::HOST_IP),
        ip(lab::INSIDE_IP),
    ));
    lab.w.poll_once(lab.now);
    assert_eq!(lab.inside_sent().len(), 1);
    assert_eq!(lab.drops(DropReason::ArpSenderNotHost), 4);
}

/// ARP that gives a multicast MAC for a host's address teaches the core nothing: the
/// client's packet to that host waits for the core's own request, and goes to the MAC the
/// answer gives, not to every port of the switch.
#[test]
fn arp_naming_a_multicast_mac_is_not_learned() {
    let (mut w, mut c, now) = one_neighbour_known(
        (0, ip(lab::CLIENT_OUTER_IP), lab::CLIENT_MAC),
        Cipher::Aes256Gcm,
        4096,
    );
    let group = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    let mut req = testkit::arp_request(lab::HOST_MAC, ip(lab::HOST_IP), ip(lab::INSIDE_IP));
    req[22..28].copy_from_slice(&group);
    w.port_mut(1).unwrap().inject(&req);
    w.poll_once(now);
    let _answer = w.port_mut(1).unwrap().take_sent();
    ping_host_through_arp(&mut w, &mut c, now);
}

#[test]
fn unresolved_next_hop_waits_for_arp() {
    let (mut w, mut c, now) = one_neighbour_known(
        (0, ip(lab::CLIENT_OUTER_IP), lab::CLIENT_MAC),
        Cipher::ChaCha20Poly1305,
        4096,
    );
    ping_host_through_arp(&mut w, &mut c, now);
    // A neighbour that never answers: three requests, then the packet is dropped and counted.
    w.port_mut(0).unwrap().inject(&c.frame(&testkit::ipv4_echo(
        ip(lab::CLIENT_VIP),
        ip("172.31.1.99"),
        true,
        2,
        1,
        b"",
    )));
    for s in 0..5 {
        w.poll_once(now + Duration::from_secs(s));
    }
    assert_eq!(w.drops().get(DropReason::ArpUnresolved), 1);
}

/// Two cores and one receive queue (as with a device that has fewer rx queues than cores, or
/// a NIC's RSS, which sends every ARP frame to one queue): core 1's ARP request is answered
/// to core 0, which passes what it learned to core 1; the packet core 1 held goes out, and
/// the answer is not answered again.
#[test]
fn an_arp_reply_received_by_another_core_resolves_the_core_that_asked() {
    let now = Instant::now();
    // The host is not primed: the cores resolve it.
    let mut workers = two_cores(|cfg, ports, mb, handoff| {
        let mut w = Worker::new(cfg, ports, mb.clone(), handoff, now);
        assert!(mb
            .commands
            .push(Command::InstallRules(Arc::new(testkit::lab_rules(1))))
            .is_ok());
        w.prime_neighbour(0, ip(lab::CLIENT_OUTER_IP), lab::CLIENT_MAC);
        w
    });
    // Peer-id 5 belongs to core 1 (peer-id modulo the cores).
    let (owner, mb) = &mut workers[1];
    let mut client = add_session(
        owner,
        mb,
        PeerId(5),
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        now,
    );
    let ping = testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip(lab::HOST_IP), true, 1, 1, b"");
    // Everything arrives at core 0, which hands the client's packet to its owner.
    workers[0]
        .0
        .port_mut(0)
        .unwrap()
        .inject(&client.frame(&ping));
    workers[0].0.poll_once(now);
    workers[1].0.poll_once(now);
    let asked = workers[1].0.port_mut(1).unwrap().take_sent();
    assert_eq!(asked.len(), 1);
    assert_eq!(&asked[0][12..14], &[0x08, 0x06], "core 1 asks for the host");
    workers[0]
        .0
        .port_mut(1)
        .unwrap()
        .inject(&testkit::arp_reply(
            lab::HOST_MAC,
            ip(lab::HOST_IP),
            lab::INSIDE_MAC,
            ip(lab::INSIDE_IP),
        ));
    workers[0].0.poll_once(now);
    assert!(workers[0].0.port_mut(1).unwrap().take_sent().is_empty());
    workers[1].0.poll_once(now);
    let out = workers[1].0.port_mut(1).unwrap().take_sent();
    assert_eq!(out.len(), 1, "{:?}", nonzero_drops(&workers[1].0));
    assert_eq!(&out[0][0..6], &lab::HOST_MAC, "the ping, to the host's MAC");
    assert_eq!(ip_of(&out[0]).dst(), ip(lab::HOST_IP).to_be_bytes());
    // A host's request for our address is answered once, by the core that received it; the
    // other core learns the host from it without answering.
    let other = ip("172.31.1.77");
    workers[0]
        .0
        .port_mut(1)
        .unwrap()
        .inject(&testkit::arp_request(
            [2, 0, 0, 0, 0, 0x77],
            other,
            ip(lab::INSIDE_IP),
        ));
    workers[0].0.poll_once(now);
    assert_eq!(
        workers[0].0.port_mut(1).unwrap().take_sent().len(),
        1,
        "one answer"
    );
    workers[1].0.poll_once(now);
    assert!(workers[1].0.port_mut(1).unwrap().take_sent().is_empty());
    for (w, _) in &workers {
        assert_eq!(w.drops().total(), 0, "{:?}", nonzero_drops(w));
    }
}

/// A flood of ARP to one of our addresses, from a thousand senders and again and again from
/// one: the core passes the other cores `SHARED_PER_SEC` copies a second at most, and one of
/// a neighbour's repeats in a second.
#[test]
fn a_flood_of_arp_costs_the_other_cores_a_bounded_number_of_copies() {
    let now = Instant::now();
    let mut meshes = sluice_engine::worker::Handoff::mesh(2, 4096);
    let to_core_1 = Arc::clone(&meshes[1].from);
    let mut cfg = testkit::lab_config(64, 8);
    (cfg.core, cfg.cores) = (0, 2);
    cfg.ports[1].prefix_len = 16;
    let mut w = Worker::new(
        cfg,
        vec![MemPort::new(), MemPort::new()],
        Mailbox::new(64),
        meshes.drain(..1).next(),
        now,
    );
    let request = |from: u32| testkit::arp_request([2, 0, 0, 0, 0, 0x77], from, ip(lab::INSIDE_IP));
    for _ in 0..50 {
        w.port_mut(1).unwrap().inject(&request(ip("172.31.9.9")));
    }
    w.poll_once(now);
    w.poll_once(now);
    assert_eq!(to_core_1.len(), 1, "one copy for the neighbour's repeats");
    for i in 0..1000u32 {
        w.port_mut(1)
            .unwrap()
            .inject(&request(ip("172.31.10.0") + i));
        if i % 32 == 31 {
            w.poll_once(now);
        }
    }
    w.poll_once(now);
    assert_eq!(
        to_core_1.len(),
        sluice_engine::neighbour::SHARED_PER_SEC as usize
    );
    assert_eq!(
        w.port_mut(1).unwrap().take_sent().len(),
        1050,
        "each answered"
    );
}

#[test]
fn rule_swap_mid_stream_loses_nothing() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let mut sent = 0;
    for version in 2..6u64 {
        for i in 0..50u16 {
            let p = testkit::ipv4_udp(
                ip(lab::CLIENT_VIP),
                30_000 + i,
                ip(lab::HOST_IP),
                9,
                b"payload",
            );
            let f = lab.client.frame(&p);
            lab.w.port_mut(0).unwrap().inject(&f);
            sent += 1;
            if i == 25 {
                assert!(lab
                    .mb
                    .commands
                    .push(Command::InstallRules(Arc::new(testkit::lab_rules(version))))
                    .is_ok());
            }
            if i % 7 == 0 {
                lab.w.poll_once(lab.now);
            }
        }
        lab.w.poll_once(lab.now);
        assert_eq!(lab.w.rules_version(), version);
    }
    while lab.w.port_mut(0).unwrap().pending_rx() > 0 {
        lab.w.poll_once(lab.now);
    }
    assert_eq!(lab.inside_sent().len(), sent);
    assert_eq!(lab.w.drops().total(), 0);
    let retired = std::iter::from_fn(|| lab.mb.reports.pop())
        .filter(|r| matches!(r, Report::Retired(_)))
        .count();
    assert_eq!(
        retired, 4,
        "every old table goes back to control to be freed there"
    );
}

#[test]
fn session_removal_and_renegotiated_keys() {
    let mut lab = lab_with(GroupMask::EMPTY);
    lab.send_from_client(&testkit::ipv4_udp(
        ip(lab::CLIENT_VIP),
        1000,
        ip(lab::HOST_IP),
        9,
        b"a",
    ));
    assert_eq!(lab.w.flow_count(), 1);
    // A new key_id: the old client key still works during the transition, the new one too.
    let (server2, client2) = testkit::key_pair(Cipher::Aes256Gcm, 40);
    assert!(lab
        .mb
        .commands
        .push(Command::InstallKey {
            peer: PeerId(5),
            key_id: KeyId(1),
            keys: Box::new(server2)
        })
        .is_ok());
    lab.w.poll_once(lab.now);
    let mut new_client = Client::new(PeerId(5), KeyId(1), &client2);
    lab.send_from_client(&testkit::ipv4_udp(
        ip(lab::CLIENT_VIP),
        1000,
        ip(lab::HOST_IP),
        9,
        b"b",
    ));
    let f = new_client.frame(&testkit::ipv4_udp(
        ip(lab::CLIENT_VIP),
        1000,
        ip(lab::HOST_IP),
        9,
        b"c",
    ));
    lab.w.port_mut(0).unwrap().inject(&f);
    lab.w.poll_once(lab.now);
    assert_eq!(lab.inside_sent().len(), 3);
    assert!(lab
        .mb
        .commands
        .push(Command::RetirePreviousKey { peer: PeerId(5) })
        .is_ok());
    lab.w.poll_once(lab.now);
    lab.send_from_client(&testkit::ipv4_udp(
        ip(lab::CLIENT_VIP),
        1000,
        ip(lab::HOST_IP),
        9,
        b"d",
    ));
    assert_eq!(lab.drops(DropReason::UnknownKeyId), 1);
    // Removal forgets the session and its flows and reports the counters.
    assert!(lab
        .mb
        .commands
        .push(Command::RemoveSession { peer: PeerId(5) })
        .is_ok());
    lab.w.poll_once(lab.now);
    assert_eq!(lab.w.flow_count(), 0);
    let removed = std::iter::from_fn(|| lab.mb.reports.pop()).find_map(|r| match r {
        Report::Removed {
            traffic, because, ..
        } => Some((traffic.ingress_packets, because)),
        _ => None,
    });
    assert_eq!(removed, Some((3, Removal::Asked)));
}

#[test]
fn keepalive_pings_and_idle_report() {
    let mut lab = lab_with(GroupMask::EMPTY);
    // Nothing sent to the client for 10 s: a ping, sealed with the session's key.
    lab.w.poll_once(lab.now + Duration::from_secs(5));
    assert!(lab.outside_sent().is_empty(), "no ping before 10 s");
    lab.w.poll_once(lab.now + Duration::from_secs(10));
    let sent = lab.outside_sent();
    assert_eq!(sent.len(), 1, "one ping");
    let inner = lab
        .client
        .open(&sent[0])
        .expect("the ping opens with the client's key");
    assert_eq!(inner, sluice_engine::crypto::data_channel::PING_MAGIC);
    // Still nothing: the next one 10 s later, not on every poll.
    lab.w.poll_once(lab.now + Duration::from_secs(11));
    assert!(lab.outside_sent().is_empty());
    // Nothing heard for more than 60 s: reported idle once, for control to close.
    while lab.mb.reports.pop().is_some() {}
    lab.w.poll_once(lab.now + Duration::from_secs(61));
    lab.w.poll_once(lab.now + Duration::from_secs(62));
    let idle = std::iter::from_fn(|| lab.mb.reports.pop())
        .filter(|r| matches!(r, Report::Idle { peer } if *peer == PeerId(5)))
        .count();
    assert_eq!(idle, 1);
}

/// A busy next hop whose entry went stale (no ARP from it for five minutes: a VPC router
/// never sends us any) keeps getting its packets while it is asked for again: a burst then is
/// sent, not held four at a time and the rest dropped.
#[test]
fn a_stale_next_hop_in_use_keeps_its_packets_while_asked_again() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let (vip, host) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
    let later = lab.now + Duration::from_secs(301);
    for i in 0..32u16 {
        let f = lab
            .client
            .frame(&testkit::ipv4_udp(vip, 40_000 + i, host, 53, b"q"));
        lab.w.port_mut(0).unwrap().inject(&f);
    }
    lab.w.poll_once(later);
    let sent = lab.inside_sent();
    let to_host = sent
        .iter()
        .filter(|f| f[12..14] == [0x08, 0x00] && f[0..6] == lab::HOST_MAC)
        .count();
    assert_eq!(to_host, 32, "{:?}", nonzero_drops(&lab.w));
    assert_eq!(lab.drops(DropReason::ArpQueueFull), 0);
    // And it is asked for again, once a second until it answers.
    let arp = |frames: &[Vec<u8>]| frames.iter().filter(|f| f[12..14] == [0x08, 0x06]).count();
    assert_eq!(arp(&sent), 1, "an ARP request for the stale next hop");
    lab.w.port_mut(1).unwrap().inject(&testkit::arp_reply(
        lab::HOST_MAC,
        host,
        lab::INSIDE_MAC,
        ip(lab::INSIDE_IP),
    ));
    for s in 1..4 {
        lab.w.poll_once(later + Duration::from_secs(s));
    }
    assert_eq!(arp(&lab.inside_sent()), 0, "answered: no more requests");
}

/// Reports control must get are sent again when the report queue had no room for them: an
/// idle session is reported at the next lap of the sweep once there is room (it would
/// otherwise stay on the core and in control for good), and so is a float (control would
/// keep the old address).
#[test]
fn reports_that_found_the_queue_full_go_again() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let fill = |lab: &mut Lab| {
        while lab
            .mb
            .reports
            .push(Report::ClientExited { peer: PeerId(999) })
            .is_ok()
        {}
    };
    let of_peer_5 = |lab: &mut Lab| {
        std::iter::from_fn(|| lab.mb.reports.pop())
            .filter_map(|r| match r {
                Report::Idle { peer: PeerId(5) } => Some("idle".to_owned()),
                Report::Floated {
                    peer: PeerId(5),
                    remote,
                } => Some(format!("floated to {}", remote.port)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };

    // A packet from a new port while the queue is full: the float is not heard of.
    fill(&mut lab);
    let echo = testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip(lab::HOST_IP), true, 3, 1, b"");
    let mut f = lab.client.frame(&echo);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[40..42].copy_from_slice(&[0, 0]);
    lab.w.port_mut(0).unwrap().inject(&f);
    lab.w.poll_once(lab.now);
    assert!(of_peer_5(&mut lab).is_empty());
    lab.w.poll_once(lab.now + Duration::from_secs(1));
    lab.w.poll_once(lab.now + Duration::from_secs(2));
    assert_eq!(of_peer_5(&mut lab), ["floated to 40000"]);
    lab.w.poll_once(lab.now + Duration::from_secs(3));
    assert!(of_peer_5(&mut lab).is_empty(), "told once");

    // Idle past 60 s while the queue is full; then room again.
    fill(&mut lab);
    lab.w.poll_once(lab.now + Duration::from_secs(61));
    lab.w.poll_once(lab.now + Duration::from_secs(62));
    assert!(of_peer_5(&mut lab).is_empty());
    lab.w.poll_once(lab.now + Duration::from_secs(63));
    lab.w.poll_once(lab.now + Duration::from_secs(64));
    assert_eq!(of_peer_5(&mut lab), ["idle"]);
    lab.w.poll_once(lab.now + Duration::from_secs(65));
    assert!(of_peer_5(&mut lab).is_empty(), "told once");
}

/// The per-session timers are spread over each second, not run for every session at once:
/// with six times more sessions than the report queue holds, every session's traffic still
/// reaches control (drained every millisecond, as the control thread does) and nothing is
/// refused; no poll produces more than a few dozen reports or pings; every session gets its
/// ping once its ping interval has passed.
#[test]
fn session_timers_are_spread_over_the_second() {
    const SESSIONS: usize = 6000;
    let start = Instant::now();
    let mb = Mailbox::new(1024);
    let mut w = testkit::lab_worker(
        vec![MemPort::new(), MemPort::new()],
        testkit::lab_config(1024, SESSIONS),
        mb.clone(),
        start,
    );
    for s in 0..SESSIONS {
        let vip = ip(lab::CLIENT_VIP) + s as u32;
        let peer = PeerId(s as u32);
        testkit::queue_session(&mb, peer, vip, GroupMask::EMPTY, Cipher::Aes256Gcm, s as u8);
        if s % 1000 == 999 {
            testkit::apply_commands(&mut w, &mb, start);
        }
    }
    testkit::apply_commands(&mut w, &mb, start);
    assert_eq!(w.sessions().len(), SESSIONS);
    while mb.reports.pop().is_some() {}
    let mut reported = vec![0u32; SESSIONS];
    let (mut most_reports, mut most_pings, mut pings) = (0, 0, 0);
    for ms in 1..=11_000u64 {
        w.poll_once(start + Duration::from_millis(ms));
        let mut n = 0;
        while let Some(r) = mb.reports.pop() {
            n += 1;
            if let Report::Traffic { peer, .. } = r {
                reported[peer.0 as usize] += 1;
            }
        }
        most_reports = most_reports.max(n);
        let sent = w.port_mut(0).unwrap().take_sent().len();
        most_pings = most_pings.max(sent);
        pings += sent;
        if ms == 6000 {
            assert!(
                reported.iter().all(|&n| n >= 1),
                "every session's traffic reported within 6 s ({} not)",
                reported.iter().filter(|&&n| n == 0).count()
            );
        }
    }
    assert_eq!(w.drops().get(DropReason::PuntQueueFull), 0);
    assert!(most_reports <= 64, "{most_reports} reports in one poll");
    assert!(most_pings <= 64, "{most_pings} pings in one poll");
    assert_eq!(pings, SESSIONS, "one ping per session between 10 and 11 s");
}

/// ARP between other hosts of a target subnet (requests for addresses not ours) makes no
/// neighbour entries: with a small cache, a next hop we need still resolves afterwards (when
/// every ARP sender was learned, the chatter filled the cache and the packet was dropped).
#[test]
fn arp_between_other_hosts_does_not_fill_the_neighbour_cache() {
    let (mut w, mut c, now) = one_neighbour_known(
        (0, ip(lab::CLIENT_OUTER_IP), lab::CLIENT_MAC),
        Cipher::Aes256Gcm,
        4,
    );
    for host in 50..60u8 {
        let mac = [2, 0, 0, 0, 1, host];
        let mut req = vec![0u8; 42];
        sluice_engine::wire::ethernet::write_header(&mut req, [0xff; 6], mac, 0x0806);
        sluice_engine::wire::arp::ArpRepr {
            operation: 1,
            sender_mac: mac,
            sender_ip: ip(&format!("172.31.1.{host}")).to_be_bytes(),
            target_mac: [0; 6],
            target_ip: ip("172.31.1.200").to_be_bytes(),
        }
        .emit(&mut req[14..]);
        w.port_mut(1).unwrap().inject(&req);
    }
    w.poll_once(now);
    assert!(
        w.port_mut(1).unwrap().take_sent().is_empty(),
        "not ours to answer"
    );
    ping_host_through_arp(&mut w, &mut c, now);
    assert_eq!(w.drops().get(DropReason::ArpQueueFull), 0);
}

/// A client's traceroute through the tunnel: a probe with TTL 1 gets an ICMP time exceeded
/// from the tunnel's gateway address (the first of the client CIDR), sealed for the client,
/// quoting the probe's header and first 8 bytes; within a budget per client, and never about
/// an ICMP error.
#[test]
fn a_probe_whose_ttl_ends_here_gets_a_time_exceeded_from_the_tunnel_gateway() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let probe = testkit::ipv4_udp(
        ip(lab::CLIENT_VIP),
        40_000,
        ip(lab::HOST_IP),
        33_434,
        b"traceroute probe",
    );
    let probe = with_ttl(probe, 1);
    lab.send_from_client(&probe);
    let out = lab.outside_sent();
    assert_eq!(out.len(), 1, "one answer to the client");
    let answer = lab.client.open(&out[0]).expect("sealed for the client");
    let ip_answer = Ipv4Packet::new_checked(&answer[..]).unwrap();
    assert!(ip_answer.verify_checksum());
    assert_eq!(ip_answer.src(), ip("10.200.0.1").to_be_bytes());
    assert_eq!(ip_answer.dst(), ip(lab::CLIENT_VIP).to_be_bytes());
    assert_eq!(ip_answer.protocol(), protocol::ICMP);
    let icmp = IcmpPacket::new_checked(ip_answer.payload()).unwrap();
    assert_eq!((icmp.kind(), icmp.code()), (kind::TIME_EXCEEDED, 0));
    assert!(icmp.verify_checksum());
    assert_eq!(
        icmp.data(),
        &probe[..28],
        "the probe's header and first 8 bytes"
    );
    assert_eq!(lab.drops(DropReason::TtlExceeded), 0);
    assert_eq!(lab.w.poll_stats().icmp_errors_sent, 1);
    // No error about an error: a client's port unreachable with TTL 1 is only dropped.
    let error = testkit::ipv4_icmp_error(
        ip(lab::CLIENT_VIP),
        ip(lab::HOST_IP),
        kind::DEST_UNREACHABLE,
        3,
        &probe[..28],
    );
    let error = with_ttl(error, 1);
    lab.send_from_client(&error);
    assert!(lab.outside_sent().is_empty());
    assert_eq!(lab.drops(DropReason::TtlExceeded), 1);
    // A flood of probes: a burst of answers, then drops.
    for _ in 0..30 {
        lab.send_from_client(&probe);
    }
    assert_eq!(
        lab.outside_sent().len(),
        15,
        "the budget's burst of 16, one already spent"
    );
    assert_eq!(lab.drops(DropReason::TtlExceeded), 1 + 15);
}

/// No time exceeded about a client's datagram to a multicast or broadcast address (RFC 1812
/// §4.3.2.7): the LLMNR queries, IGMP reports and SSDP searches a client's system sends into
/// the tunnel with a TTL of 1 or 2 are dropped `ttl_exceeded` with no answer.
#[test]
fn no_time_exceeded_about_a_datagram_to_a_group_or_broadcast() {
    let mut lab = lab_with(GroupMask::EMPTY);
    for (n, dst) in ["224.0.0.252", "239.255.255.250", "255.255.255.255"]
        .into_iter()
        .enumerate()
    {
        let query = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 50_000, ip(dst), 5355, b"wpad");
        lab.send_from_client(&with_ttl(query, 1));
        assert!(lab.outside_sent().is_empty(), "{dst}");
        assert_eq!(lab.drops(DropReason::TtlExceeded), n as u64 + 1);
    }
    assert_eq!(lab.w.poll_stats().icmp_errors_sent, 0);
}

/// Nor about one to a subnet's broadcast address, which only the endpoint's tables tell from a
/// host's: a target subnet's (172.31.1.255, or the all-zeros 172.31.1.0) or the client CIDR's
/// (10.200.15.255, where a client's NetBIOS broadcasts go). A host next to them (172.31.1.254)
/// still gets its answer.
#[test]
fn no_time_exceeded_about_a_datagram_to_a_subnets_broadcast_address() {
    let mut lab = lab_with(GroupMask::EMPTY);
    for (n, dst) in ["172.31.1.255", "172.31.1.0", "10.200.15.255"]
        .into_iter()
        .enumerate()
    {
        let query = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 50_000, ip(dst), 137, b"nbns");
        lab.send_from_client(&with_ttl(query, 1));
        assert!(lab.outside_sent().is_empty(), "{dst}");
        assert_eq!(lab.drops(DropReason::TtlExceeded), n as u64 + 1);
    }
    assert_eq!(lab.w.poll_stats().icmp_errors_sent, 0);
    let query = testkit::ipv4_udp(
        ip(lab::CLIENT_VIP),
        50_000,
        ip("172.31.1.254"),
        137,
        b"nbns",
    );
    lab.send_from_client(&with_ttl(query, 1));
    assert_eq!(lab.outside_sent().len(), 1, "a host's is answered");
    assert_eq!(lab.w.poll_stats().icmp_errors_sent, 1);
}

/// A client pings the tunnel's gateway address (is the tunnel up?): the appliance answers
/// itself, with no flow and nothing sent toward the VPC; anything else to that address is
/// `not_for_us`.
#[test]
fn the_tunnel_gateway_answers_pings() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let gateway = ip("10.200.0.1");
    for seq in 0..3 {
        let echo = testkit::ipv4_echo(ip(lab::CLIENT_VIP), gateway, true, 77, seq, b"up?");
        lab.send_from_client(&echo);
        let out = lab.outside_sent();
        assert_eq!(out.len(), 1, "answered");
        let reply = lab.client.open(&out[0]).expect("sealed for the client");
        let want = testkit::ipv4_echo(gateway, ip(lab::CLIENT_VIP), false, 77, seq, b"up?");
        let r = Ipv4Packet::new_checked(&reply[..]).unwrap();
        assert!(r.verify_checksum());
        assert_eq!(
            (r.src(), r.dst()),
            (gateway.to_be_bytes(), ip(lab::CLIENT_VIP).to_be_bytes())
        );
        let i = IcmpPacket::new_checked(r.payload()).unwrap();
        assert!(i.verify_checksum());
        assert_eq!(r.payload(), &want[20..]);
    }
    assert!(
        lab.w.port_mut(1).unwrap().take_sent().is_empty(),
        "nothing toward the VPC"
    );
    assert_eq!(lab.w.flow_count(), 0);
    // Addressed to the appliance itself, a ping is answered whatever its TTL (RFC 1812
    // §5.3.1: only forwarded packets have theirs checked), not met with a time exceeded.
    for ttl in [1, 0] {
        let echo = testkit::ipv4_echo(ip(lab::CLIENT_VIP), gateway, true, 78, 1, b"ttl");
        lab.send_from_client(&with_ttl(echo, ttl));
        let out = lab.outside_sent();
        assert_eq!(out.len(), 1, "ttl {ttl}: {:?}", nonzero_drops(&lab.w));
        let reply = lab.client.open(&out[0]).expect("sealed for the client");
        let r = Ipv4Packet::new_checked(&reply[..]).unwrap();
        assert!(r.verify_checksum());
        assert_eq!(r.src(), gateway.to_be_bytes());
        let i = IcmpPacket::new_checked(r.payload()).unwrap();
        assert_eq!((i.kind(), i.echo_id()), (kind::ECHO_REPLY, 78), "ttl {ttl}");
        assert!(i.verify_checksum());
    }
    assert_eq!(lab.w.poll_stats().icmp_errors_sent, 0);
    let udp = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 5000, gateway, 53, b"q");
    lab.send_from_client(&udp);
    assert!(lab.outside_sent().is_empty());
    assert_eq!(lab.drops(DropReason::NotForUs), 1);
}

/// A client's packet to one of the appliance's own inside addresses (the port's, or the ENI
/// its target network translates to): a ping is answered from that address, as the tunnel's
/// gateway answers, and anything else is `not_for_us` at once. Before, it was routed into the
/// subnet like a host's: it took a flow, the core asked ARP for its own address, and the packet
/// waited 3 s to be dropped `arp_unresolved` (found by the engine_pipeline fuzz target). Such a
/// packet is not forwarded, so a TTL of 1 or 0 does not end it here either (RFC 1812 §5.3.1):
/// no time exceeded, which it used to get, as if it were to be routed on.
#[test]
fn a_clients_packets_to_the_appliances_inside_addresses_are_answered_or_refused_at_once() {
    let eni = ip("172.31.1.9");
    for (lab, addresses) in [
        (lab_with(GroupMask::EMPTY), vec![ip(lab::INSIDE_IP)]),
        (lab_via_eni(eni), vec![eni, ip(lab::INSIDE_IP)]),
    ] {
        let mut lab = lab;
        let mut refused = 0;
        for &to in &addresses {
            for ttl in [64, 1, 0] {
                let echo = testkit::ipv4_echo(ip(lab::CLIENT_VIP), to, true, 90, 1, b"me?");
                lab.send_from_client(&with_ttl(echo, ttl));
                let out = lab.outside_sent();
                assert_eq!(
                    out.len(),
                    1,
                    "{to:x} ttl {ttl}: {:?}",
                    nonzero_drops(&lab.w)
                );
                let reply = lab.client.open(&out[0]).expect("sealed for the client");
                let r = Ipv4Packet::new_checked(&reply[..]).unwrap();
                assert!(r.verify_checksum());
                assert_eq!(
                    (r.src(), r.dst(), r.ttl()),
                    (to.to_be_bytes(), ip(lab::CLIENT_VIP).to_be_bytes(), 64)
                );
                let i = IcmpPacket::new_checked(r.payload()).unwrap();
                assert_eq!((i.kind(), i.echo_id()), (kind::ECHO_REPLY, 90), "ttl {ttl}");
                assert!(i.verify_checksum());
            }
            for ttl in [64, 1] {
                let udp = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 5000, to, 53, b"q");
                lab.send_from_client(&with_ttl(udp, ttl));
                refused += 1;
                assert!(lab.outside_sent().is_empty(), "{to:x} ttl {ttl}");
                assert_eq!(lab.drops(DropReason::NotForUs), refused, "{to:x}");
            }
            assert!(
                lab.inside_sent().is_empty(),
                "{to:x}: no ARP for our own address"
            );
            assert_eq!(lab.w.flow_count(), 0, "{to:x}");
        }
        assert_eq!(lab.w.poll_stats().icmp_errors_sent, 0);
        assert_eq!(lab.drops(DropReason::TtlExceeded), 0);
        // Nothing waits to be dropped later.
        lab.now += Duration::from_secs(5);
        lab.w.poll_once(lab.now);
        assert_eq!(lab.drops(DropReason::ArpUnresolved), 0);
    }
}

/// A client's packet to an inside address of the appliance's that the rule table does not
/// authorize is dropped under the table's reason whatever its TTL, not answered with a time
/// exceeded; a host's packet whose TTL ends here still is.
#[test]
fn an_unauthorized_packet_to_an_inside_address_is_dropped_whatever_its_ttl() {
    // Only the host 172.31.1.10 is authorized.
    let mut lab = lab_with(GroupMask::EMPTY);
    let host_only = sluice_engine::rules::authz::AuthzRule {
        destination: testkit::cidr("172.31.1.10/32"),
        grant: sluice_engine::rules::authz::Grant::AllUsers,
    };
    lab.mb
        .commands
        .push(Command::InstallRules(Arc::new(
            testkit::lab_rules_authorizing(2, &[host_only]),
        )))
        .map_err(|_| ())
        .unwrap();
    lab.w.poll_once(lab.now);
    for ttl in [64, 1] {
        let echo = testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip(lab::INSIDE_IP), true, 92, 1, b"");
        lab.send_from_client(&with_ttl(echo, ttl));
        assert!(lab.outside_sent().is_empty(), "ttl {ttl}");
    }
    assert_eq!(lab.drops(DropReason::NotAuthorized), 2);
    assert_eq!(lab.w.poll_stats().icmp_errors_sent, 0);
    // A host's packet whose TTL ends here still gets its time exceeded.
    let echo = testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip(lab::HOST_IP), true, 93, 1, b"");
    lab.send_from_client(&with_ttl(echo, 1));
    assert_eq!(lab.outside_sent().len(), 1);
    assert_eq!(lab.w.poll_stats().icmp_errors_sent, 1);
}

/// What the core answers leaves from the port's own MAC, whatever the frame it answers was
/// addressed to (a frame from ff:ff:ff:ff:ff:ff is not one any switch or host takes); a ping
/// or a probe sent to a link-layer broadcast or multicast address is not answered (RFC 1122
/// §3.3.6, RFC 1812 §4.3.2.7).
#[test]
fn answers_leave_from_the_ports_mac_and_link_broadcasts_get_none() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let ping = testkit::ipv4_echo(ip(lab::HOST_IP), ip(lab::INSIDE_IP), true, 7, 1, b"x");
    for group in [[0xff; 6], [0x01, 0x00, 0x5e, 0, 0, 1]] {
        lab.w
            .port_mut(1)
            .unwrap()
            .inject(&testkit::eth_ipv4(group, lab::HOST_MAC, &ping));
        lab.w.poll_once(lab.now);
        assert!(lab.inside_sent().is_empty(), "{group:02x?}");
    }
    assert_eq!(lab.drops(DropReason::NotForUs), 2);
    // To another unicast MAC (a port in promiscuous mode sees such frames): answered, from ours.
    lab.w.port_mut(1).unwrap().inject(&testkit::eth_ipv4(
        [2, 0, 0, 0, 0, 0x42],
        lab::HOST_MAC,
        &ping,
    ));
    lab.w.poll_once(lab.now);
    let out = lab.inside_sent();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (&out[0][0..6], &out[0][6..12]),
        (&lab::HOST_MAC[..], &lab::INSIDE_MAC[..])
    );
    // A host's probe on a client's flow, its TTL ending here, in a broadcast frame: dropped
    // without an error.
    let udp = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 5353, ip(lab::HOST_IP), 9000, b"hi");
    lab.send_from_client(&udp);
    let sent = lab.inside_sent();
    let nat_port = UdpPacket::new_checked(ip_of(&sent[0]).payload())
        .unwrap()
        .src_port();
    let probe = testkit::ipv4_udp(ip(lab::HOST_IP), 9000, ip(lab::INSIDE_IP), nat_port, b"p");
    lab.w.port_mut(1).unwrap().inject(&testkit::eth_ipv4(
        [0xff; 6],
        lab::HOST_MAC,
        &with_ttl(probe, 1),
    ));
    lab.w.poll_once(lab.now);
    assert!(lab.inside_sent().is_empty() && lab.outside_sent().is_empty());
    assert_eq!(lab.drops(DropReason::TtlExceeded), 1);
}

/// The stateless answer to a first reset leaves from the outside port's MAC, whatever the
/// reset's frame was addressed to.
#[test]
fn a_first_reset_is_answered_from_the_ports_mac() {
    let now = Instant::now();
    let mut w = answering_core(64, 8, &Mailbox::new(64), now);
    let reset = FIRST_RESET;
    let udp = testkit::ipv4_udp(
        ip(lab::CLIENT_OUTER_IP),
        50_001,
        ip(lab::OUTSIDE_IP),
        lab::VPN_PORT,
        &reset,
    );
    w.port_mut(0)
        .unwrap()
        .inject(&testkit::eth_ipv4([0xff; 6], lab::CLIENT_MAC, &udp));
    w.poll_once(now);
    let out = w.port_mut(0).unwrap().take_sent();
    assert_eq!(out.len(), 1, "{:?}", nonzero_drops(&w));
    assert_eq!(
        (&out[0][0..6], &out[0][6..12]),
        (&lab::CLIENT_MAC[..], &lab::OUTSIDE_MAC[..])
    );
}

/// A first reset from no single host is not answered on the core: from 0.0.0.0, 127.0.0.1,
/// 224.0.0.1, 255.255.255.255, the outside subnet's broadcast or network address, or in a
/// frame whose source MAC is a group address. The answer would go to that address or MAC,
/// every host of the link, at the sender's choice. Each is dropped `not_for_us`; a client's
/// own reset is still answered.
#[test]
fn a_first_reset_from_no_single_host_is_not_answered() {
    let now = Instant::now();
    let mb = Mailbox::new(64);
    let mut w = answering_core(64, 8, &mb, now);
    let reset = FIRST_RESET;
    let frame = |from: &str, mac: [u8; 6]| {
        let udp = testkit::ipv4_udp(ip(from), 50_001, ip(lab::OUTSIDE_IP), lab::VPN_PORT, &reset);
        testkit::eth_ipv4(lab::OUTSIDE_MAC, mac, &udp)
    };
    let froms = [
        ("0.0.0.0", lab::CLIENT_MAC),
        ("127.0.0.1", lab::CLIENT_MAC),
        ("224.0.0.1", lab::CLIENT_MAC),
        ("255.255.255.255", lab::CLIENT_MAC),
        ("192.168.50.255", lab::CLIENT_MAC),
        ("192.168.50.0", lab::CLIENT_MAC),
        (lab::CLIENT_OUTER_IP, [0xff; 6]),
        (lab::CLIENT_OUTER_IP, [0x01, 0, 0x5e, 0, 0, 1]),
    ];
    for (from, mac) in froms {
        w.port_mut(0).unwrap().inject(&frame(from, mac));
        w.poll_once(now);
        let out = w.port_mut(0).unwrap().take_sent();
        assert!(out.is_empty(), "answered {from} from {mac:?}");
    }
    assert_eq!(
        w.drops().get(DropReason::NotForUs),
        froms.len() as u64,
        "{:?}",
        nonzero_drops(&w)
    );
    assert!(mb.reports.pop().is_none(), "nothing punted");
    w.port_mut(0)
        .unwrap()
        .inject(&frame(lab::CLIENT_OUTER_IP, lab::CLIENT_MAC));
    w.poll_once(now);
    let out = w.port_mut(0).unwrap().take_sent();
    assert_eq!(out.len(), 1, "{:?}", nonzero_drops(&w));
    assert_eq!(&out[0][0..6], &lab::CLIENT_MAC[..]);
}

/// A traceroute from the VPC to a client: a host's packet on a client's flow whose TTL ends
/// at the appliance gets a time exceeded from the ENI, back to the host's MAC, quoting the
/// packet as it arrived; nothing reaches the client.
#[test]
fn a_hosts_probe_whose_ttl_ends_here_gets_a_time_exceeded_from_the_eni() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let out = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 5353, ip(lab::HOST_IP), 9000, b"hi");
    lab.send_from_client(&out);
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 1);
    let nat_port = UdpPacket::new_checked(ip_of(&sent[0]).payload())
        .unwrap()
        .src_port();
    let probe = testkit::ipv4_udp(ip(lab::HOST_IP), 9000, ip(lab::INSIDE_IP), nat_port, b"p");
    let probe = with_ttl(probe, 1);
    assert!(
        lab.reply_from_host(&probe).is_empty(),
        "nothing to the client"
    );
    let back = lab.inside_sent();
    assert_eq!(back.len(), 1);
    assert_eq!(&back[0][0..6], &lab::HOST_MAC);
    assert_eq!(&back[0][6..12], &lab::INSIDE_MAC);
    let p = ip_of(&back[0]);
    assert!(p.verify_checksum());
    assert_eq!(
        (p.src(), p.dst()),
        (
            ip(lab::INSIDE_IP).to_be_bytes(),
            ip(lab::HOST_IP).to_be_bytes()
        )
    );
    let icmp = IcmpPacket::new_checked(p.payload()).unwrap();
    assert_eq!((icmp.kind(), icmp.code()), (kind::TIME_EXCEEDED, 0));
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.data(), &probe[..28]);
    assert_eq!(lab.drops(DropReason::TtlExceeded), 0);
}

/// The lab with the inside port's MTU at `mtu` (the configuration allows 1500 to 2000).
fn lab_with_inside_mtu(mtu: u16) -> Lab {
    let now = Instant::now();
    let mb = Mailbox::new(1024);
    let mut cfg = testkit::lab_config(1024, 64);
    cfg.ports[1].mtu = mtu;
    let mut w = testkit::lab_worker(vec![MemPort::new(), MemPort::new()], cfg, mb.clone(), now);
    let client = add_session(
        &mut w,
        &mb,
        PeerId(5),
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        now,
    );
    Lab { w, mb, client, now }
}

/// `packet` (an option-less IPv4 header first) with DF clear.
fn without_df(mut packet: Vec<u8>) -> Vec<u8> {
    packet[6] &= !0x40;
    packet[10..12].fill(0);
    let c = checksum::checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&c.to_be_bytes());
    packet
}

/// Checks the fragments of one datagram, in the order sent (IPv4 frames): each at most `mtu`
/// bytes with its header checksum right and DF clear, one identification, offsets that follow
/// on from each other from 0, every payload but the last a multiple of 8, MF on all but the
/// last.
fn check_fragments(frames: &[Vec<u8>], mtu: usize) {
    assert!(frames.len() >= 2, "{} fragments", frames.len());
    let headers: Vec<_> = frames.iter().map(|f| ip_of(f)).collect();
    let mut offset = 0;
    for (n, h) in headers.iter().enumerate() {
        let last = n + 1 == headers.len();
        assert!(
            h.total_len() <= mtu,
            "fragment {n}: {} bytes",
            h.total_len()
        );
        assert!(h.verify_checksum(), "fragment {n}: header checksum");
        assert!(!h.dont_fragment(), "fragment {n}: DF");
        assert_eq!(h.ident(), headers[0].ident(), "fragment {n}");
        assert_eq!(h.frag_offset(), offset, "fragment {n}");
        assert_eq!(h.more_fragments(), !last, "fragment {n}: MF");
        if !last {
            assert_eq!(h.payload().len() % 8, 0, "fragment {n}: a multiple of 8");
        }
        offset += h.payload().len();
    }
}

/// A client with a tun-mtu of 1900 sends a 5000-byte datagram in three fragments: each, the
/// first and the later ones, is cut again to at most the inside port's MTU, the offsets
/// following on from its own and MF kept on all but the datagram's last, so that the host
/// reassembles the whole translated datagram.
#[test]
fn a_clients_fragments_longer_than_the_inside_mtu_are_cut_again() {
    let mut lab = lab_with_inside_mtu(1500);
    let (vip, host) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
    let data: Vec<u8> = (0..5000 - 28).map(|i| (i * 11) as u8).collect();
    let datagram = testkit::ipv4_udp(vip, 40_004, host, 9000, &data);
    let frames = testkit::fragment(&testkit::eth_ipv4([0; 6], [0; 6], &datagram), 1900);
    assert_eq!(frames.len(), 3);
    for f in &frames {
        lab.send_from_client(&f[14..]);
    }
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 5, "{:?}", nonzero_drops(&lab.w));
    check_fragments(&sent, 1500);
    let (whole, _) = whole_udp(&sent, 5000, &data);
    assert_eq!(ip_of(&whole).src(), ip(lab::INSIDE_IP).to_be_bytes());
    assert_no_drops(&lab.w);
}

/// A client that raised its tun-mtu sends a packet longer than the inside port's MTU, DF set:
/// nothing goes toward the VPC; the client gets an ICMP fragmentation needed (type 3, code 4)
/// from the tunnel's gateway address carrying the port's MTU, quoting the packet's header and
/// first 8 bytes as the client sent them (its own addresses and port, not the translation),
/// within its ICMP budget (past it, `too_big`). A packet of exactly the MTU passes whole.
#[test]
fn a_clients_packet_longer_than_the_inside_mtu_with_df_gets_fragmentation_needed() {
    let mut lab = lab_with_inside_mtu(1600);
    let (vip, host) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
    let exact = testkit::ipv4_udp(vip, 40_000, host, 9000, &[0x33; 1600 - 28]);
    lab.send_from_client(&exact);
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 1, "{:?}", nonzero_drops(&lab.w));
    let p = ip_of(&sent[0]);
    assert_eq!((p.total_len(), p.is_fragment()), (1600, false));
    assert!(p.dont_fragment() && p.verify_checksum());
    assert!(lab.outside_sent().is_empty());

    let long = testkit::ipv4_udp(vip, 40_000, host, 9000, &[0x44; 1601 - 28]);
    lab.send_from_client(&long);
    assert!(lab.inside_sent().is_empty(), "nothing toward the VPC");
    let out = lab.outside_sent();
    assert_eq!(out.len(), 1, "one answer: {:?}", nonzero_drops(&lab.w));
    let answer = lab.client.open(&out[0]).expect("sealed for the client");
    let a = Ipv4Packet::new_checked(&answer[..]).unwrap();
    assert!(a.verify_checksum());
    assert_eq!(
        (a.src(), a.dst(), a.protocol()),
        (
            ip("10.200.0.1").to_be_bytes(),
            vip.to_be_bytes(),
            protocol::ICMP
        )
    );
    let icmp = IcmpPacket::new_checked(a.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.kind(), icmp.code()), (kind::DEST_UNREACHABLE, 4));
    assert_eq!(&a.payload()[4..6], &[0, 0], "unused");
    assert_eq!(icmp.next_hop_mtu(), 1600);
    assert_eq!(icmp.data(), &long[..28], "the header and 8 bytes as sent");
    assert_eq!(checksum::checksum(&icmp.data()[..20]), 0);
    assert_eq!(lab.w.poll_stats().icmp_errors_sent, 1);
    assert_eq!(lab.drops(DropReason::TooBig), 0);
    // A flood of them: the budget's burst of answers, then drops.
    for _ in 0..30 {
        lab.send_from_client(&long);
    }
    assert_eq!(lab.outside_sent().len(), 15, "the burst of 16, one spent");
    assert_eq!(lab.drops(DropReason::TooBig), 15);
    assert!(lab.inside_sent().is_empty());
}

/// A client's packet longer than the inside port's MTU, DF clear: it leaves translated in
/// fragments of at most the MTU (offsets, flags and header checksums right), which
/// reassemble into the translated packet, its UDP checksum right; no ICMP error.
#[test]
fn a_clients_packet_longer_than_the_inside_mtu_without_df_leaves_in_fragments() {
    let mut lab = lab_with_inside_mtu(1500);
    let (vip, host) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
    let data: Vec<u8> = (0..1900 - 28).map(|i| i as u8).collect();
    let long = without_df(testkit::ipv4_udp(vip, 40_001, host, 9000, &data));
    lab.send_from_client(&long);
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 2, "{:?}", nonzero_drops(&lab.w));
    check_fragments(&sent, 1500);
    assert_eq!(
        ip_of(&sent[0]).total_len(),
        1500,
        "as long as the MTU allows"
    );
    for f in &sent {
        let p = ip_of(f);
        assert_eq!(
            (p.src(), p.dst(), p.ttl()),
            (ip(lab::INSIDE_IP).to_be_bytes(), host.to_be_bytes(), 63)
        );
        assert_eq!(
            (&f[0..6], &f[6..12]),
            (&lab::HOST_MAC[..], &lab::INSIDE_MAC[..])
        );
    }
    assert_eq!(whole_udp(&sent, 1900, &data).1, 9000);
    assert!(lab.outside_sent().is_empty());
    assert_eq!(lab.w.poll_stats().icmp_errors_sent, 0);
    assert_no_drops(&lab.w);
}

/// Two clients behind one ENI address each send the host a whole packet longer than the
/// inside port's MTU, DF clear, with the same identification (each client's kernel picks its
/// own): the core cuts them with identifications of its own, one per datagram and the same on
/// all of its fragments, so the host reassembles two intact datagrams instead of one corrupt
/// one.
#[test]
fn whole_packets_cut_for_the_inside_mtu_leave_with_identifications_of_the_cores() {
    let mut lab = lab_with_inside_mtu(1500);
    let second_vip = ip(lab::CLIENT_VIP) + 1;
    let keys = testkit::queue_session(
        &lab.mb,
        PeerId(6),
        second_vip,
        GroupMask::EMPTY,
        Cipher::Aes256Gcm,
        8,
    );
    lab.w.poll_once(lab.now);
    let mut second = Client::new(PeerId(6), KeyId(0), &keys);
    let host = ip(lab::HOST_IP);
    let first = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 5000, host, 53, &[0x11; 1800]);
    let other = testkit::ipv4_udp(second_vip, 5000, host, 53, &[0x22; 1800]);
    let (first, other) = (without_df(first), without_df(other));
    assert_eq!(ip_of_packet(&first).ident(), ip_of_packet(&other).ident());
    let f = lab.client.frame(&first);
    lab.w.port_mut(0).unwrap().inject(&f);
    let f = second.frame(&other);
    lab.w.port_mut(0).unwrap().inject(&f);
    lab.w.poll_once(lab.now);
    let out = lab.inside_sent();
    assert_eq!(out.len(), 4, "{:?}", nonzero_drops(&lab.w));
    let idents: Vec<u16> = out.iter().map(|f| ip_of(f).ident()).collect();
    assert!(out.iter().all(|f| ip_of(f).verify_checksum()));
    assert_eq!((idents[0], idents[2]), (idents[1], idents[3]), "{idents:?}");
    assert_ne!(idents[0], idents[2], "{idents:?}");
    two_intact_datagrams(&out);
}

/// What two clients sent the host, 1800 bytes of UDP payload each (all 0x11 from one, all 0x22
/// from the other), in the fragments `out`: they reassemble into exactly two intact datagrams,
/// one of each, not into one made of both.
fn two_intact_datagrams(out: &[Vec<u8>]) {
    let whole = testkit::reassemble(out);
    assert_eq!(whole.len(), 2);
    let mut payloads: Vec<u8> = whole
        .iter()
        .map(|w| {
            let p = ip_of(w);
            let u = UdpPacket::new_checked(p.payload()).unwrap();
            assert!(u.verify_checksum(p.src(), p.dst()), "intact at the host");
            assert_eq!(u.payload().len(), 1800);
            assert!(u.payload().iter().all(|&x| x == u.payload()[0]));
            u.payload()[0]
        })
        .collect();
    payloads.sort_unstable();
    assert_eq!(payloads, [0x11, 0x22]);
}

/// The one datagram `frames` reassemble into (a frame): `total` bytes of IPv4, UDP with its
/// checksum right, carrying `data`; returned with its UDP destination port for the caller's
/// other checks.
fn whole_udp(frames: &[Vec<u8>], total: usize, data: &[u8]) -> (Vec<u8>, u16) {
    let mut whole = testkit::reassemble(frames);
    assert_eq!(whole.len(), 1, "one datagram");
    let frame = whole.remove(0);
    let p = ip_of(&frame);
    assert_eq!(p.total_len(), total);
    let u = UdpPacket::new_checked(p.payload()).unwrap();
    assert!(u.verify_checksum(p.src(), p.dst()));
    assert_eq!(u.payload(), data);
    let port = u.dst_port();
    (frame, port)
}

/// The IPv4 header of `packet` (no Ethernet header).
fn ip_of_packet(packet: &[u8]) -> Ipv4Packet<&[u8]> {
    Ipv4Packet::new_checked(packet).unwrap()
}

/// A client sends the first fragment of a TCP SYN, then a later fragment at offset 64,064
/// with 1,504 bytes (a datagram past 65,535 bytes: a "ping of death"), longer than the inside
/// port's MTU: it is dropped `fragment_too_long`, not cut into a piece whose offset, past the 13
/// bits of its field, would spill into the flags and leave with MF set at offset 8, over the
/// TCP header the first fragment showed (what RFC 1858 has a filter refuse).
#[test]
fn a_clients_fragment_ending_past_65535_bytes_is_not_cut_into_one_at_its_start() {
    let mut lab = lab_with_inside_mtu(1500);
    let (vip, host) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
    let syn = testkit::ipv4_tcp(vip, 40_005, host, 80, flags::SYN, Some(1460), &[]);
    let mut head = syn.clone();
    head[4..6].copy_from_slice(&9u16.to_be_bytes());
    head[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // MF, offset 0
    let mut tail = syn[..20].to_vec();
    tail.extend_from_slice(&[0x77; 1504]);
    let len = tail.len() as u16;
    tail[2..4].copy_from_slice(&len.to_be_bytes());
    tail[4..6].copy_from_slice(&9u16.to_be_bytes());
    tail[6..8].copy_from_slice(&(64_064u16 / 8).to_be_bytes()); // last, DF clear
    for p in [&mut head, &mut tail] {
        Ipv4Packet::new_checked(&mut p[..]).unwrap().fill_checksum();
        lab.send_from_client(p);
    }
    let sent = lab.inside_sent();
    for f in &sent[1..] {
        let p = ip_of(f);
        assert!(
            p.frag_offset() >= 64_064,
            "a piece at offset {} (MF {})",
            p.frag_offset(),
            p.more_fragments()
        );
    }
    assert_eq!(sent.len(), 1, "the first fragment only");
    assert_eq!(lab.drops(DropReason::FragmentTooLong), 1);
}

/// The later fragment of `first` (an IPv4 packet with its identification) at `offset` with
/// `len` bytes of payload, the last (MF clear), its header checksum right.
fn later_piece(first: &[u8], offset: usize, len: usize) -> Vec<u8> {
    let mut p = first[..20].to_vec();
    p.resize(20 + len, 0x33);
    p[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
    p[6..8].copy_from_slice(&((offset / 8) as u16).to_be_bytes());
    Ipv4Packet::new_checked(&mut p[..]).unwrap().fill_checksum();
    p
}

/// Later fragments short enough for any link but ending past the 65,535 bytes a datagram
/// holds (offset 65,000, 600 bytes: a "ping of death" that needs no cutting), after a first
/// fragment that was translated: from a client, not sent to the host; from the host, not
/// sealed for the client; each dropped `fragment_too_long`. One ending at 65,512 bytes (the
/// most a datagram with a 20-byte header holds, to a multiple of 8) passes either way.
#[test]
fn later_fragments_ending_past_65535_bytes_are_dropped_both_ways() {
    let mut lab = lab_with(GroupMask::EMPTY);
    let (vip, host, eni) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP), ip(lab::INSIDE_IP));
    let mut head = testkit::ipv4_udp(vip, 40_006, host, 9, &[0x11; 64]);
    head[4..6].copy_from_slice(&21u16.to_be_bytes());
    head[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // MF, offset 0
    Ipv4Packet::new_checked(&mut head[..])
        .unwrap()
        .fill_checksum();
    lab.send_from_client(&head);
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 1, "{:?}", nonzero_drops(&lab.w));
    let nat_port = UdpPacket::new_checked(ip_of(&sent[0]).payload())
        .unwrap()
        .src_port();
    lab.send_from_client(&later_piece(&head, 65_000, 600));
    assert!(
        lab.inside_sent().is_empty(),
        "past the limit, from the client"
    );
    assert_eq!(lab.drops(DropReason::FragmentTooLong), 1);
    lab.send_from_client(&later_piece(&head, 64_912, 600));
    assert_eq!(lab.inside_sent().len(), 1, "at the limit, from the client");

    let mut answer = testkit::ipv4_udp(host, 9, eni, nat_port, &[0x22; 64]);
    answer[4..6].copy_from_slice(&22u16.to_be_bytes());
    answer[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
    Ipv4Packet::new_checked(&mut answer[..])
        .unwrap()
        .fill_checksum();
    assert_eq!(lab.reply_from_host(&answer).len(), 1, "the first, sealed");
    assert!(
        lab.reply_from_host(&later_piece(&answer, 65_000, 600))
            .is_empty(),
        "past the limit, from the host"
    );
    assert_eq!(lab.drops(DropReason::FragmentTooLong), 2);
    assert_eq!(
        lab.reply_from_host(&later_piece(&answer, 64_912, 600))
            .len(),
        1,
        "at the limit, from the host"
    );
    assert_eq!(lab.drops(DropReason::FragmentTooLong), 2);
}

/// A client's packet with IPv4 options, longer than the inside port's MTU, DF clear: the first
/// fragment keeps every option, the later ones only those whose copy bit is set (RFC 791
/// §3.1: the router alert, not the record route), each header's length and checksum right,
/// and the fragments reassemble into the translated packet.
#[test]
fn a_clients_fragmented_packet_copies_only_the_options_to_copy() {
    let mut lab = lab_with_inside_mtu(1500);
    let (vip, host) = (ip(lab::CLIENT_VIP), ip(lab::HOST_IP));
    let data: Vec<u8> = (0..3000 - 28 - 12).map(|i| (i / 3) as u8).collect();
    let plain = testkit::ipv4_udp(vip, 40_003, host, 9000, &data);
    // Router alert (copied), record route with one slot (not copied), a no-operation.
    let options = [0x94, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 1];
    let mut long = plain[..20].to_vec();
    long.extend_from_slice(&options);
    long.extend_from_slice(&plain[20..]);
    long[0] = 0x48;
    let total = long.len() as u16;
    long[2..4].copy_from_slice(&total.to_be_bytes());
    long[6] = 0;
    long[10..12].fill(0);
    let c = checksum::checksum(&long[..32]);
    long[10..12].copy_from_slice(&c.to_be_bytes());
    lab.send_from_client(&long);
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 3, "{:?}", nonzero_drops(&lab.w));
    check_fragments(&sent, 1500);
    let first = ip_of(&sent[0]);
    assert_eq!(first.header_len(), 32);
    assert_eq!(&sent[0][14 + 20..14 + 32], &options[..]);
    for later in &sent[1..] {
        let p = ip_of(later);
        assert_eq!(p.header_len(), 24);
        assert_eq!(&later[14 + 20..14 + 24], &[0x94, 4, 0, 0]);
    }
    whole_udp(&sent, 3000, &data);
}
/// The NAT port of a flow the lab's client opens to the lab's host, UDP port 9000.
fn open_flow(lab: &mut Lab, src_port: u16) -> u16 {
    let out = testkit::ipv4_udp(ip(lab::CLIENT_VIP), src_port, ip(lab::HOST_IP), 9000, b"hi");
    lab.send_from_client(&out);
    let sent = lab.inside_sent();
    assert_eq!(sent.len(), 1);
    UdpPacket::new_checked(ip_of(&sent[0]).payload())
        .unwrap()
        .src_port()
}

/// A host's packet to a client longer than the tunnel's MTU (1500, the pushed tun-mtu), DF
/// set: nothing reaches the client; the host gets an ICMP fragmentation needed carrying 1500
/// from the ENI, back to its MAC, quoting the packet as it arrived. A packet of exactly 1500
/// bytes reaches the client whole.
#[test]
fn a_hosts_packet_longer_than_the_tunnel_mtu_with_df_gets_fragmentation_needed() {
    let mut lab = lab_with_inside_mtu(2000);
    let nat_port = open_flow(&mut lab, 5353);
    let (eni, host) = (ip(lab::INSIDE_IP), ip(lab::HOST_IP));
    let exact = testkit::ipv4_udp(host, 9000, eni, nat_port, &[0x55; 1500 - 28]);
    let sent = lab.reply_from_host(&exact);
    let whole = testkit::reassemble(&sent);
    assert_eq!(whole.len(), 1, "{:?}", nonzero_drops(&lab.w));
    let inner = lab.client.open(&whole[0]).expect("sealed for the client");
    let p = Ipv4Packet::new_checked(&inner[..]).unwrap();
    assert_eq!((p.total_len(), p.is_fragment()), (1500, false));
    assert_eq!(p.dst(), ip(lab::CLIENT_VIP).to_be_bytes());

    let long = testkit::ipv4_udp(host, 9000, eni, nat_port, &[0x66; 1501 - 28]);
    assert!(
        lab.reply_from_host(&long).is_empty(),
        "nothing to the client"
    );
    let back = lab.inside_sent();
    assert_eq!(back.len(), 1, "{:?}", nonzero_drops(&lab.w));
    assert_eq!(
        (&back[0][0..6], &back[0][6..12]),
        (&lab::HOST_MAC[..], &lab::INSIDE_MAC[..])
    );
    let p = ip_of(&back[0]);
    assert!(p.verify_checksum());
    assert_eq!(
        (p.src(), p.dst(), p.protocol()),
        (eni.to_be_bytes(), host.to_be_bytes(), protocol::ICMP)
    );
    let icmp = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.kind(), icmp.code()), (kind::DEST_UNREACHABLE, 4));
    assert_eq!(&p.payload()[4..6], &[0, 0], "unused");
    assert_eq!(icmp.next_hop_mtu(), 1500);
    assert_eq!(
        icmp.data(),
        &long[..28],
        "the header and 8 bytes as they came"
    );
    assert_eq!(lab.w.poll_stats().icmp_errors_sent, 1);
    assert_eq!(lab.drops(DropReason::TooBig), 0);
}

/// A host's packet to a client longer than the tunnel's MTU, DF clear: it reaches the client
/// in fragments of at most 1500 bytes, each sealed on its own (offsets, flags and header
/// checksums right), which reassemble into the packet translated to the client, its UDP
/// checksum right.
#[test]
fn a_hosts_packet_longer_than_the_tunnel_mtu_without_df_reaches_the_client_in_fragments() {
    let mut lab = lab_with_inside_mtu(2000);
    let nat_port = open_flow(&mut lab, 5354);
    let (eni, host) = (ip(lab::INSIDE_IP), ip(lab::HOST_IP));
    let data: Vec<u8> = (0..2000 - 28).map(|i| (i * 7) as u8).collect();
    let long = without_df(testkit::ipv4_udp(host, 9000, eni, nat_port, &data));
    let sent = lab.reply_from_host(&long);
    let datagrams = testkit::reassemble(&sent);
    assert_eq!(datagrams.len(), 2, "{:?}", nonzero_drops(&lab.w));
    let mut inner: Vec<Vec<u8>> = datagrams
        .iter()
        .map(|d| {
            let i = lab.client.open(d).expect("each sealed for the client");
            testkit::eth_ipv4(lab::OUTSIDE_MAC, lab::CLIENT_MAC, &i)
        })
        .collect();
    inner.sort_by_key(|f| ip_of(f).frag_offset());
    check_fragments(&inner, 1500);
    assert_eq!(
        ip_of(&inner[0]).total_len(),
        1500,
        "as long as the tunnel allows"
    );
    for f in &inner {
        let p = ip_of(f);
        assert_eq!((p.dst(), p.ttl()), (ip(lab::CLIENT_VIP).to_be_bytes(), 63));
    }
    assert_eq!(whole_udp(&inner, 2000, &data).1, 5354);
    assert!(lab.inside_sent().is_empty());
    assert_eq!(lab.w.poll_stats().icmp_errors_sent, 0);
    assert_no_drops(&lab.w);
}

/// A host's datagram that comes in fragments of 2000 bytes (an inside port's MTU of 2000):
/// each fragment, the first and the later ones, is cut again to at most the tunnel's MTU, the
/// offsets following on from its own and MF kept on all but the datagram's last, so that
/// the client reassembles the whole datagram.
#[test]
fn a_hosts_fragments_longer_than_the_tunnel_mtu_are_cut_again() {
    let mut lab = lab_with_inside_mtu(2000);
    let nat_port = open_flow(&mut lab, 5355);
    let (eni, host) = (ip(lab::INSIDE_IP), ip(lab::HOST_IP));
    let data: Vec<u8> = (0..5000 - 28).map(|i| (i * 13) as u8).collect();
    let datagram = testkit::ipv4_udp(host, 9000, eni, nat_port, &data);
    let frames = testkit::fragment(
        &testkit::eth_ipv4(lab::INSIDE_MAC, lab::HOST_MAC, &datagram),
        2000,
    );
    assert_eq!(frames.len(), 3);
    for f in &frames {
        lab.w.port_mut(1).unwrap().inject(f);
    }
    lab.w.poll_once(lab.now);
    let sent = lab.outside_sent();
    let mut inner: Vec<Vec<u8>> = testkit::reassemble(&sent)
        .iter()
        .map(|d| {
            let i = lab.client.open(d).expect("each sealed for the client");
            testkit::eth_ipv4(lab::OUTSIDE_MAC, lab::CLIENT_MAC, &i)
        })
        .collect();
    assert_eq!(inner.len(), 5, "{:?}", nonzero_drops(&lab.w));
    inner.sort_by_key(|f| ip_of(f).frag_offset());
    check_fragments(&inner, 1500);
    let (whole, port) = whole_udp(&inner, 5000, &data);
    assert_eq!(
        (ip_of(&whole).dst(), port),
        (ip(lab::CLIENT_VIP).to_be_bytes(), 5355)
    );
    assert_no_drops(&lab.w);
}

/// A TCP segment (testkit's, without options or data) with these sequence and acknowledgment
/// numbers and window, its checksum made again.
fn tcp_segment(
    (src, sport): (u32, u16),
    (dst, dport): (u32, u16),
    tcp_flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
) -> Vec<u8> {
    let mut p = testkit::ipv4_tcp(src, sport, dst, dport, tcp_flags, None, b"");
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[34..36].copy_from_slice(&window.to_be_bytes());
    TcpPacket::new_checked(&mut p[20..])
        .unwrap()
        .fill_checksum(src.to_be_bytes(), dst.to_be_bytes());
    p
}

/// The TCP state of a translated flow moves only for the remote's segments that belong to the
/// connection, through the whole path: a blind RST (its sequence number half the space from
/// the client's window) reaches the client but leaves the idle connection its established
/// timeout; a RST in the window closes it (transitory timeout); a spoofed ACK to a flow whose
/// SYN is unanswered does not give it the established timeout.
#[test]
fn only_segments_of_the_connection_move_a_tcp_flows_state() {
    const CLIENT_ISN: u32 = 7_000;
    const REMOTE_ISN: u32 = 4_000_000_000;
    let mut lab = lab_with(GroupMask::EMPTY);
    let (vip, remote) = (ip(lab::CLIENT_VIP), ip("172.31.7.7"));
    let from_client = |lab: &mut Lab, sport: u16, tcp_flags: u8, seq: u32, ack: u32| {
        let s = tcp_segment((vip, sport), (remote, 22), tcp_flags, seq, ack, 1000);
        lab.send_from_client(&s);
        let sent = lab.inside_sent();
        assert_eq!(sent.len(), 1);
        TcpPacket::new_checked(ip_of(&sent[0]).payload())
            .unwrap()
            .src_port()
    };
    // The remote's segment to translated port `nat_port`; returns the flags of what reached
    // the client (not its keepalive pings).
    let from_remote = |lab: &mut Lab, nat_port: u16, tcp_flags: u8, seq: u32, ack: u32| {
        let s = tcp_segment(
            (remote, 22),
            (ip(lab::INSIDE_IP), nat_port),
            tcp_flags,
            seq,
            ack,
            1000,
        );
        lab.w
            .port_mut(1)
            .unwrap()
            .inject(&testkit::eth_ipv4(lab::INSIDE_MAC, lab::ROUTER_MAC, &s));
        lab.w.poll_once(lab.now);
        let out = lab.outside_sent();
        out.iter()
            .filter_map(|f| lab.client.open(f))
            .filter(|p| p.len() >= 40 && p[12..16] == remote.to_be_bytes())
            .map(|p| p[33])
            .collect::<Vec<u8>>()
    };
    // The expiry sweep visits a bounded number of slots a poll: enough polls to see them all.
    let later = |lab: &mut Lab, secs: u64| {
        lab.now += Duration::from_secs(secs);
        for _ in 0..64 {
            lab.w.poll_once(lab.now);
        }
        lab.outside_sent();
    };
    let transitory = u64::from(Timeouts::default().tcp_transitory);

    // An SSH connection, its handshake done.
    let ssh = from_client(&mut lab, 40_000, flags::SYN, CLIENT_ISN, 0);
    let synack = flags::SYN | flags::ACK;
    assert_eq!(
        from_remote(&mut lab, ssh, synack, REMOTE_ISN, CLIENT_ISN + 1),
        [synack]
    );
    from_client(&mut lab, 40_000, flags::ACK, CLIENT_ISN + 1, REMOTE_ISN + 1);
    // A connection attempt the remote has not answered; a spoofed ACK of it.
    let half_open = from_client(&mut lab, 40_001, flags::SYN, CLIENT_ISN, 0);
    let spoofed = from_remote(&mut lab, half_open, flags::ACK, 1, CLIENT_ISN + 1);
    assert_eq!(spoofed, [flags::ACK], "forwarded: the client's TCP decides");
    // A blind RST toward the SSH connection, far from its window.
    let blind = REMOTE_ISN.wrapping_add(1 + (1 << 31));
    assert_eq!(
        from_remote(&mut lab, ssh, flags::RST, blind, 0),
        [flags::RST],
        "forwarded: the client's TCP decides"
    );
    assert_eq!(lab.w.flow_count(), 2);

    later(&mut lab, transitory + 1);
    assert_eq!(
        lab.w.flow_count(),
        1,
        "the half-open flow expired, spoofed ACK or not"
    );
    assert!(from_remote(&mut lab, half_open, flags::ACK, 1, CLIENT_ISN + 1).is_empty());
    assert_eq!(
        from_remote(&mut lab, ssh, flags::ACK, REMOTE_ISN + 1, CLIENT_ISN + 1),
        [flags::ACK],
        "the idle SSH connection is still established after the blind RST"
    );

    // A RST in the window closes it: gone after the transitory timeout.
    assert_eq!(
        from_remote(&mut lab, ssh, flags::RST, REMOTE_ISN + 1, 0),
        [flags::RST]
    );
    later(&mut lab, transitory + 1);
    assert_eq!(lab.w.flow_count(), 0, "{:?}", nonzero_drops(&lab.w));
}

/// The later fragments of a reply whose first fragment went to a session's client are dropped
/// `no_flow` once that session has ended, also after its flows are gone and its slot is free
/// again (the entry the first fragment left outlives them, two seconds): the first fragment's
/// flow was the ended session's, as it is while the flows wait for their removal.
#[test]
fn later_fragments_after_an_ended_sessions_flows_are_gone_are_dropped_no_flow() {
    let now = Instant::now();
    let (mut w, mb, _, _) = ten_flows_on_a_core(8, 64, now);
    let nat_port = oldest_nat_port(&mut w);
    let later = first_fragment_to_the_client(&mut w, nat_port, now);

    assert!(mb
        .commands
        .push(Command::RemoveSession { peer: PeerId(5) })
        .is_ok());
    for _ in 0..3 {
        w.poll_once(now);
    }
    assert_eq!(w.flow_count(), 0, "the ended session's flows are gone");
    assert_eq!(w.sessions().held(), 0, "its slot is free again");
    for f in &later {
        w.port_mut(1).unwrap().inject(f);
    }
    w.poll_once(now);
    assert!(w.port_mut(0).unwrap().take_sent().is_empty());
    assert_eq!(nonzero_drops(&w), vec![("no_flow", 2)]);
}

/// The lab with a full tunnel's rules (`testkit::lab_rules_full_tunnel`) in force.
fn lab_on_full_tunnel() -> Lab {
    lab_under(testkit::lab_rules_full_tunnel(2))
}

/// A client's packet to an address no single host has is dropped, `destination_not_a_host`:
/// the broadcast or network address of the target subnet (a directed broadcast: not forwarded,
/// RFC 2644; it used to take a flow and an ARP request for an address no host has, and wait
/// in the queue, uncounted until the resolution gave up; found by the engine_pipeline fuzz
/// target), and, on a full tunnel whose route covers them, the limited broadcast, multicast
/// groups (mDNS, SSDP) and 0/8, 127/8 and 240/4. No flow is made, nothing is sent, no ARP. A
/// host's address in the subnet, and one the default route leads to, still go through.
#[test]
fn a_packet_to_no_single_host_is_dropped_not_forwarded() {
    let mut lab = lab_on_full_tunnel();
    let dsts = [
        "172.31.1.255",
        "172.31.1.0",
        "255.255.255.255",
        "224.0.0.251",
        "239.255.255.250",
        "0.1.2.3",
        "127.0.0.1",
        "240.0.0.1",
    ];
    for (n, dst) in dsts.into_iter().enumerate() {
        let udp = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 5353, ip(dst), 5353, b"x");
        lab.send_from_client(&udp);
        let ping = testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip(dst), true, 9, 1, b"");
        lab.send_from_client(&ping);
        assert!(lab.inside_sent().is_empty(), "{dst}: nothing sent, no ARP");
        assert_eq!(
            lab.drops(DropReason::DestinationNotAHost),
            2 * n as u64 + 2,
            "{dst}"
        );
    }
    assert_eq!(lab.w.flow_count(), 0);
    assert_eq!(
        nonzero_drops(&lab.w),
        vec![("destination_not_a_host", 2 * dsts.len() as u64)]
    );
    for dst in [lab::HOST_IP, "8.8.8.8"] {
        lab.send_from_client(&testkit::ipv4_echo(
            ip(lab::CLIENT_VIP),
            ip(dst),
            true,
            9,
            2,
            b"",
        ));
        assert_eq!(lab.inside_sent().len(), 1, "{dst}");
    }
}

/// On a full tunnel, whose default route covers the endpoint's client CIDR, a client's packet
/// to another client's address is dropped, `client_to_client`, and one to the CIDR's broadcast
/// or network address (a Windows client's NetBIOS broadcasts) `destination_not_a_host`: each
/// used to take a flow and leave SNATed toward the VPC, where no client is. The tunnel's
/// gateway address is still answered.
#[test]
fn a_packet_to_another_client_is_dropped_not_sent_to_the_vpc() {
    let mut lab = lab_on_full_tunnel();
    for (dst, reason) in [
        ("10.200.0.9", "client_to_client"),
        ("10.200.15.254", "client_to_client"),
        ("10.200.15.255", "destination_not_a_host"),
        ("10.200.0.0", "destination_not_a_host"),
    ] {
        let before = nonzero_drops(&lab.w);
        let p = testkit::ipv4_udp(ip(lab::CLIENT_VIP), 137, ip(dst), 137, b"x");
        lab.send_from_client(&p);
        assert!(lab.inside_sent().is_empty(), "{dst}");
        let count = |d: &[(&str, u64)]| d.iter().find(|(r, _)| *r == reason).map_or(0, |x| x.1);
        assert_eq!(count(&nonzero_drops(&lab.w)), count(&before) + 1, "{dst}");
    }
    assert_eq!(lab.w.flow_count(), 0);
    let ping = testkit::ipv4_echo(ip(lab::CLIENT_VIP), ip("10.200.0.1"), true, 9, 1, b"");
    lab.send_from_client(&ping);
    assert_eq!(lab.outside_sent().len(), 1, "the gateway answers");
}
