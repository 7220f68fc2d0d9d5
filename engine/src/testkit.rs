//! Builders for tests and benchmarks: frames as a client, a neighbour or a host would send
//! them, the key material of both ends of a session, and a ready `Worker` on in-memory ports.
//! Not used on the data path.

use std::sync::Arc;
use std::time::Instant;

use crate::crypto::{Cipher, DataKey, KeyMaterial};
use crate::mailbox::{Command, Mailbox};
use crate::packet::HeapBuf;
use crate::port::Port;
use crate::rules::authz::{AuthzRule, AuthzTable, Grant};
use crate::rules::{EndpointTables, Ipv4Cidr, RuleTable, SecurityPolicy, TargetNetwork};
use crate::session::{Remote, SessionInfo};
use crate::wire::arp::{ArpRepr, OP_REPLY};
use crate::wire::ethernet::{self, ethertype, Mac};
use crate::wire::ipv4::{protocol, Ipv4Repr};
use crate::wire::openvpn::{KeyId, PeerId};
use crate::wire::{icmp, tcp, udp};
use crate::worker::{Listener, PortConfig, Worker, WorkerConfig};

/// An IPv4 address from its dotted form (panics on a typo: test code).
pub fn ip(s: &str) -> u32 {
    match s.parse::<std::net::Ipv4Addr>() {
        Ok(a) => u32::from(a),
        Err(_) => panic!("bad address {s}"),
    }
}

/// A CIDR from its text form (panics on a typo: test code).
pub fn cidr(s: &str) -> Ipv4Cidr {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    Ipv4Cidr::new_truncating(ip(a), l.parse().unwrap_or(32))
}

/// The lab's addresses, used by tests and benchmarks alike.
pub mod lab {
    /// Appliance outside MAC.
    pub const OUTSIDE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    /// Appliance inside MAC.
    pub const INSIDE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    /// The client host's MAC.
    pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
    /// The VPC host's MAC.
    pub const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
    /// The subnet router's MAC.
    pub const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 2, 254];
    /// Appliance outside address.
    pub const OUTSIDE_IP: &str = "192.168.50.1";
    /// Client host (outer) address.
    pub const CLIENT_OUTER_IP: &str = "192.168.50.2";
    /// Client virtual address.
    pub const CLIENT_VIP: &str = "10.200.0.2";
    /// Appliance inside address (also the ENI).
    pub const INSIDE_IP: &str = "172.31.1.5";
    /// The subnet router.
    pub const ROUTER_IP: &str = "172.31.1.1";
    /// A VPC host.
    pub const HOST_IP: &str = "172.31.1.10";
    /// The OpenVPN port.
    pub const VPN_PORT: u16 = 443;
    /// The client's outer source port.
    pub const CLIENT_PORT: u16 = 50_000;
}

/// Both ends' key material of one session: (server's, client's).
pub fn key_pair(cipher: Cipher, seed: u8) -> (KeyMaterial, KeyMaterial) {
    let a = [seed; 32];
    let b = [seed.wrapping_add(1); 32];
    let (ia, ib) = ([seed.wrapping_add(2); 8], [seed.wrapping_add(3); 8]);
    (
        KeyMaterial {
            cipher,
            encrypt_key: a,
            encrypt_iv: ia,
            decrypt_key: b,
            decrypt_iv: ib,
        },
        KeyMaterial {
            cipher,
            encrypt_key: b,
            encrypt_iv: ib,
            decrypt_key: a,
            decrypt_iv: ia,
        },
    )
}

/// An Ethernet frame around an IPv4 packet.
pub fn eth_ipv4(dst: Mac, src: Mac, ip_packet: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN];
    ethernet::write_header(&mut f, dst, src, ethertype::IPV4);
    f.extend_from_slice(ip_packet);
    f
}

/// An IPv4 packet with a UDP datagram (checksum filled).
pub fn ipv4_udp(src: u32, sport: u16, dst: u32, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 28 + payload.len()];
    Ipv4Repr {
        src: src.to_be_bytes(),
        dst: dst.to_be_bytes(),
        protocol: protocol::UDP,
        payload_len: 8 + payload.len(),
        ttl: 64,
    }
    .emit(&mut p);
    udp::write_header(&mut p[20..], sport, dport, payload.len());
    p[28..].copy_from_slice(payload);
    if let Ok(mut u) = udp::UdpPacket::new_checked(&mut p[20..]) {
        u.fill_checksum(src.to_be_bytes(), dst.to_be_bytes());
    }
    p
}

/// An IPv4 ICMP echo request (or reply) with `data`.
pub fn ipv4_echo(src: u32, dst: u32, request: bool, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 28 + data.len()];
    Ipv4Repr {
        src: src.to_be_bytes(),
        dst: dst.to_be_bytes(),
        protocol: protocol::ICMP,
        payload_len: 8 + data.len(),
        ttl: 64,
    }
    .emit(&mut p);
    p[20] = if request {
        icmp::kind::ECHO_REQUEST
    } else {
        icmp::kind::ECHO_REPLY
    };
    p[24..26].copy_from_slice(&id.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    p[28..].copy_from_slice(data);
    if let Ok(mut i) = icmp::IcmpPacket::new_checked(&mut p[20..]) {
        i.fill_checksum();
    }
    p
}

/// An Ethernet frame with an option-less IPv4 datagram cut into IPv4 fragments of at most
/// `mtu` bytes, as a host's kernel sends a datagram longer than its path's MTU.
///
/// # Panics
/// If `frame` is not such a frame (test code).
pub fn fragment(frame: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let (eth, ip) = frame.split_at(ethernet::HEADER_LEN);
    assert_eq!(ip[0], 0x45, "an option-less IPv4 header");
    let payload = &ip[20..usize::from(u16::from_be_bytes([ip[2], ip[3]]))];
    let per = (mtu - 20) / 8 * 8;
    payload
        .chunks(per)
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = eth.to_vec();
            f.extend_from_slice(&ip[..20]);
            f.extend_from_slice(chunk);
            let h = &mut f[ethernet::HEADER_LEN..ethernet::HEADER_LEN + 20];
            h[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
            let more = (i + 1) * per < payload.len();
            let flags = if more { 0x2000 } else { 0 } | (i * per / 8) as u16;
            h[6..8].copy_from_slice(&flags.to_be_bytes());
            if let Ok(mut p) =
                crate::wire::ipv4::Ipv4Packet::new_checked(&mut f[ethernet::HEADER_LEN..])
            {
                p.fill_checksum();
            }
            f
        })
        .collect()
}

/// `frames` (Ethernet, IPv4) with the fragments among them put back together as a host's
/// kernel would: each datagram whole, with its first fragment's header (total length, flags
/// and checksum made whole), after the frames that were not fragments, in the order of their
/// identities.
///
/// # Panics
/// If a datagram's fragments do not cover it exactly once, or its last is missing (test
/// code).
pub fn reassemble(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    fn ip(f: &[u8]) -> Option<crate::wire::ipv4::Ipv4Packet<&[u8]>> {
        crate::wire::ipv4::Ipv4Packet::new_checked(f.get(ethernet::HEADER_LEN..)?).ok()
    }
    let (mut out, fragments): (Vec<Vec<u8>>, Vec<&Vec<u8>>) = (
        frames
            .iter()
            .filter(|f| !ip(f).is_some_and(|p| p.is_fragment()))
            .cloned()
            .collect(),
        frames
            .iter()
            .filter(|f| ip(f).is_some_and(|p| p.is_fragment()))
            .collect(),
    );
    // A datagram is its source, destination, protocol and identification (RFC 791).
    let id = |p: crate::wire::ipv4::Ipv4Packet<&[u8]>| (p.src(), p.dst(), p.protocol(), p.ident());
    let mut ids: Vec<_> = fragments.iter().filter_map(|f| ip(f)).map(id).collect();
    ids.sort_unstable();
    ids.dedup();
    for datagram in ids {
        let mut parts: Vec<&Vec<u8>> = fragments
            .iter()
            .copied()
            .filter(|f| ip(f).is_some_and(|p| id(p) == datagram))
            .collect();
        parts.sort_by_key(|f| ip(f).map_or(0, |p| p.frag_offset()));
        let hl = ip(parts[0]).map_or(20, |p| p.header_len());
        let mut whole = parts[0][..ethernet::HEADER_LEN + hl].to_vec();
        let mut more = true;
        for f in &parts {
            let p = ip(f).expect("a fragment");
            assert_eq!(
                p.frag_offset(),
                whole.len() - ethernet::HEADER_LEN - hl,
                "a gap or an overlap"
            );
            whole.extend_from_slice(p.payload());
            more = p.more_fragments();
        }
        assert!(!more, "the last fragment is missing");
        let total = (whole.len() - ethernet::HEADER_LEN) as u16;
        let h = &mut whole[ethernet::HEADER_LEN..];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[6] &= 0x40;
        h[7] = 0;
        if let Ok(mut p) = crate::wire::ipv4::Ipv4Packet::new_checked(h) {
            p.fill_checksum();
        }
        out.push(whole);
    }
    out
}

/// An IPv4 ICMP error (`kind`, `code`) from `src` to `dst` quoting `quoted` (the start of the
/// packet it is about, as RFC 792 has it: its IPv4 header and at least 8 bytes more).
pub fn ipv4_icmp_error(src: u32, dst: u32, kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 28 + quoted.len()];
    Ipv4Repr {
        src: src.to_be_bytes(),
        dst: dst.to_be_bytes(),
        protocol: protocol::ICMP,
        payload_len: 8 + quoted.len(),
        ttl: 64,
    }
    .emit(&mut p);
    p[20] = kind;
    p[21] = code;
    p[28..].copy_from_slice(quoted);
    if let Ok(mut i) = icmp::IcmpPacket::new_checked(&mut p[20..]) {
        i.fill_checksum();
    }
    p
}

/// An IPv4 TCP segment with `tcp_flags`, an MSS option of `mss` when given, and `data`.
pub fn ipv4_tcp(
    src: u32,
    sport: u16,
    dst: u32,
    dport: u16,
    tcp_flags: u8,
    mss: Option<u16>,
    data: &[u8],
) -> Vec<u8> {
    let opt = if mss.is_some() { 4 } else { 0 };
    let tl = 20 + opt + data.len();
    let mut p = vec![0u8; 20 + tl];
    Ipv4Repr {
        src: src.to_be_bytes(),
        dst: dst.to_be_bytes(),
        protocol: protocol::TCP,
        payload_len: tl,
        ttl: 64,
    }
    .emit(&mut p);
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    t[12] = (((20 + opt) / 4) as u8) << 4;
    t[13] = tcp_flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    if let Some(m) = mss {
        t[20..24].copy_from_slice(&[2, 4, (m >> 8) as u8, m as u8]);
    }
    t[20 + opt..].copy_from_slice(data);
    if let Ok(mut seg) = tcp::TcpPacket::new_checked(&mut p[20..]) {
        seg.fill_checksum(src.to_be_bytes(), dst.to_be_bytes());
    }
    p
}

/// A broadcast ARP request from `mac`/`from_ip` asking for `target_ip`.
pub fn arp_request(mac: Mac, from_ip: u32, target_ip: u32) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 28];
    ethernet::write_header(&mut f, ethernet::BROADCAST, mac, ethertype::ARP);
    ArpRepr {
        operation: crate::wire::arp::OP_REQUEST,
        sender_mac: mac,
        sender_ip: from_ip.to_be_bytes(),
        target_mac: [0; 6],
        target_ip: target_ip.to_be_bytes(),
    }
    .emit(&mut f[14..]);
    f
}

/// An ARP reply from `ip`/`mac` to the appliance.
pub fn arp_reply(mac: Mac, from_ip: u32, to_mac: Mac, to_ip: u32) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 28];
    ethernet::write_header(&mut f, to_mac, mac, ethertype::ARP);
    ArpRepr {
        operation: OP_REPLY,
        sender_mac: mac,
        sender_ip: from_ip.to_be_bytes(),
        target_mac: to_mac,
        target_ip: to_ip.to_be_bytes(),
    }
    .emit(&mut f[14..]);
    f
}

/// A client of a session: seals inner packets into the frames the appliance receives, and
/// opens what the appliance sends back.
pub struct Client {
    key: DataKey,
    /// Its peer-id.
    pub peer: PeerId,
}

impl Client {
    /// A client with its side of the key material.
    pub fn new(peer: PeerId, key_id: KeyId, material: &KeyMaterial) -> Self {
        match DataKey::new(key_id, material) {
            Ok(key) => Self { key, peer },
            Err(_) => panic!("client key"),
        }
    }

    /// Makes the next packet carry data-pid `pid`.
    pub fn set_next_packet_id(&mut self, pid: u32) {
        self.key.set_next_send(pid);
    }

    /// The frame carrying `inner` (an IPv4 packet) from the client to the appliance.
    pub fn frame(&mut self, inner: &[u8]) -> Vec<u8> {
        let mut b = HeapBuf::from_slice(inner);
        if self.key.seal(&mut b, self.peer).is_err() {
            panic!("client seal");
        }
        let udp = ipv4_udp(
            ip(lab::CLIENT_OUTER_IP),
            lab::CLIENT_PORT,
            ip(lab::OUTSIDE_IP),
            lab::VPN_PORT,
            crate::packet::PacketBuf::data(&b),
        );
        eth_ipv4(lab::OUTSIDE_MAC, lab::CLIENT_MAC, &udp)
    }

    /// Opens a frame the appliance sent to the client; returns the inner packet.
    pub fn open(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        let ipp = crate::wire::ipv4::Ipv4Packet::new_checked(frame.get(14..)?).ok()?;
        let u = udp::UdpPacket::new_checked(ipp.payload()).ok()?;
        let mut b = HeapBuf::from_slice(u.payload());
        self.key.open(&mut b).ok()?;
        Some(crate::packet::PacketBuf::data(&b).to_vec())
    }
}

/// The lab's single-endpoint rule table: the VPC for everyone, 10.99.0.0/16 for group 0 only.
pub fn lab_rules(version: u64) -> RuleTable {
    lab_rules_for_group(version, 0)
}

/// `lab_rules` after a reload that revoked group 0's rule: the VPC for everyone, nothing else
/// (the routes are unchanged).
pub fn lab_rules_vpc_only(version: u64) -> RuleTable {
    lab_rules_authorizing(
        version,
        &[AuthzRule {
            destination: cidr("172.31.0.0/16"),
            grant: Grant::AllUsers,
        }],
    )
}

/// `lab_rules` with 10.99.0.0/16 granted to group number `bit` instead of 0 (a reload that
/// numbered the groups anew).
pub fn lab_rules_for_group(version: u64, bit: usize) -> RuleTable {
    lab_rules_authorizing(
        version,
        &[
            AuthzRule {
                destination: cidr("172.31.0.0/16"),
                grant: Grant::AllUsers,
            },
            AuthzRule {
                destination: cidr("10.99.0.0/16"),
                grant: Grant::Group(bit),
            },
        ],
    )
}

/// `lab_rules` after a reload that moved the target network (port 1, 172.31.1.0/24) to
/// another ENI address `eni` (AWS may give a subnet's association another ENI than the
/// port's own address).
pub fn lab_rules_via_eni(version: u64, eni: u32) -> RuleTable {
    lab_rules_with(
        version,
        &[
            AuthzRule {
                destination: cidr("172.31.0.0/16"),
                grant: Grant::AllUsers,
            },
            AuthzRule {
                destination: cidr("10.99.0.0/16"),
                grant: Grant::Group(0),
            },
        ],
        eni,
        &[],
    )
}

/// The lab's table (its routes, its target network on the inside port's own address) with
/// the authorization rules `rules`.
pub fn lab_rules_authorizing(version: u64, rules: &[AuthzRule]) -> RuleTable {
    lab_rules_with(version, rules, ip(lab::INSIDE_IP), &[])
}

/// `lab_rules` with a full tunnel's routes: 0.0.0.0/0 through the target network too, every
/// destination authorized for all.
pub fn lab_rules_full_tunnel(version: u64) -> RuleTable {
    let all = [AuthzRule {
        destination: cidr("0.0.0.0/0"),
        grant: Grant::AllUsers,
    }];
    lab_rules_with(version, &all, ip(lab::INSIDE_IP), &[cidr("0.0.0.0/0")])
}

/// The lab's table: the VPC and 10.99.0.0/16 routed through the target network, and `more`.
fn lab_rules_with(version: u64, rules: &[AuthzRule], eni: u32, more: &[Ipv4Cidr]) -> RuleTable {
    let Ok(authz) = AuthzTable::build(rules) else {
        panic!("authz")
    };
    let target = TargetNetwork {
        port: 1,
        subnet: cidr("172.31.1.0/24"),
        eni_ip: eni,
        gateway: ip(lab::ROUTER_IP),
        security: SecurityPolicy::AllowAll,
    };
    let mut routes = vec![(cidr("172.31.0.0/16"), 0), (cidr("10.99.0.0/16"), 0)];
    routes.extend(more.iter().map(|c| (*c, 0)));
    match EndpointTables::new(authz, &routes, vec![target], cidr("10.200.0.0/20")) {
        Ok(ep) => RuleTable::new(version, vec![ep]),
        Err(_) => panic!("tables"),
    }
}

/// A KiB figure of this process's `/proc/self/status` (`VmRSS`, `RssAnon`, ...), for the
/// tests of the process's malloc settings (`mem`). Panics where there is none (not Linux).
pub fn own_status_kib(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        panic!("no /proc/self/status")
    };
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    let Some(kib) = value else {
        panic!("no {field} in /proc/self/status")
    };
    kib
}

/// The lab's worker config: port 0 outside, port 1 in subnet 172.31.1.0/24.
pub fn lab_config(flow_capacity: usize, session_capacity: usize) -> WorkerConfig {
    let ports = vec![
        PortConfig {
            mac: lab::OUTSIDE_MAC,
            ip: ip(lab::OUTSIDE_IP),
            prefix_len: 24,
            gateway: None,
            mtu: 1500,
        },
        PortConfig {
            mac: lab::INSIDE_MAC,
            ip: ip(lab::INSIDE_IP),
            prefix_len: 24,
            gateway: Some(ip(lab::ROUTER_IP)),
            mtu: 1500,
        },
    ];
    let listeners = vec![Listener {
        ip: ip(lab::OUTSIDE_IP),
        port: lab::VPN_PORT,
        endpoint: 0,
    }];
    let mut cfg = WorkerConfig::new(0, 1, 0, ports, listeners);
    cfg.flow_capacity = flow_capacity;
    cfg.flows_per_session = crate::flow::default_flows_per_session(flow_capacity);
    cfg.session_capacity = session_capacity;
    cfg
}

/// The session the lab's client has, with virtual address `vip`.
pub fn lab_session(peer: PeerId, vip: u32, groups: crate::rules::GroupMask) -> SessionInfo {
    SessionInfo {
        peer,
        endpoint: 0,
        client_ip: vip,
        groups,
        remote: Remote {
            ip: ip(lab::CLIENT_OUTER_IP),
            port: lab::CLIENT_PORT,
        },
        local: Remote {
            ip: ip(lab::OUTSIDE_IP),
            port: lab::VPN_PORT,
        },
    }
}

/// Queues, as control does, the lab session of `peer` at virtual address `vip` with key_id 0
/// and keys of `cipher` made from `seed`; returns the client's side of the keys.
///
/// # Panics
/// If the mailbox is full (a test's sizing mistake).
pub fn queue_session(
    mailbox: &Mailbox,
    peer: PeerId,
    vip: u32,
    groups: crate::rules::GroupMask,
    cipher: Cipher,
    seed: u8,
) -> KeyMaterial {
    let (server, client) = key_pair(cipher, seed);
    let cmd = Command::AddSession {
        info: lab_session(peer, vip, groups),
        key_id: KeyId(0),
        keys: Box::new(server),
    };
    assert!(mailbox.commands.push(cmd).is_ok(), "mailbox full");
    client
}

/// Polls `w` at `now` until control's commands in `mailbox` are all applied (a poll applies a
/// bounded number).
pub fn apply_commands<P: Port>(w: &mut Worker<P>, mailbox: &Mailbox, now: Instant) {
    w.poll_once(now);
    while !mailbox.commands.is_empty() {
        w.poll_once(now);
    }
}

/// A lab worker on `ports` with the lab rules installed and the neighbours (client host, VPC
/// host, router) already resolved, ready for traffic.
pub fn lab_worker<P: Port>(
    ports: Vec<P>,
    cfg: WorkerConfig,
    mailbox: Mailbox,
    epoch: Instant,
) -> Worker<P> {
    lab_worker_with(ports, cfg, mailbox, None, epoch)
}

/// `lab_worker` with the handoff rings of a multi-core setup.
pub fn lab_worker_with<P: Port>(
    ports: Vec<P>,
    cfg: WorkerConfig,
    mailbox: Mailbox,
    handoff: Option<crate::worker::Handoff<P::Buf>>,
    epoch: Instant,
) -> Worker<P> {
    let mut w = Worker::new(cfg, ports, mailbox.clone(), handoff, epoch);
    if mailbox
        .commands
        .push(Command::InstallRules(Arc::new(lab_rules(1))))
        .is_err()
    {
        panic!("mailbox full");
    }
    w.poll_once(epoch);
    w.prime_neighbour(0, ip(lab::CLIENT_OUTER_IP), lab::CLIENT_MAC);
    w.prime_neighbour(1, ip(lab::HOST_IP), lab::HOST_MAC);
    w.prime_neighbour(1, ip(lab::ROUTER_IP), lab::ROUTER_MAC);
    while mailbox.reports.pop().is_some() {}
    w
}
