//! The SNAT header rewrite, both ways: one address and one port (or echo id) replaced, the
//! TTL decremented, the MSS of SYNs clamped.
//!
//! Every field change is gathered per checksum and folded in once (RFC 1624): the IPv4
//! header checksum takes the address and the TTL word, the TCP/UDP checksum takes the
//! pseudo-header address and the port, the ICMP checksum the echo id (ICMP has no
//! pseudo-header). The sums are taken over the fields as they lie in memory, without byte
//! swaps (a ones' complement sum does not depend on byte order). The packet was validated
//! when its flow was looked up; the bounds are checked again here so that a caller's mistake
//! is a skipped rewrite, never a panic.

use crate::wire::checksum::Delta;
use crate::wire::icmp::IcmpPacket;
use crate::wire::ipv4::{protocol, Ipv4Packet, MIN_HEADER_LEN};
use crate::wire::tcp::{flags, TcpPacket};

/// Which address and port the rewrite replaces.
#[derive(Clone, Copy)]
struct Side {
    /// Offset of the address in the IPv4 header.
    addr_at: usize,
    /// Offset of the port in the TCP/UDP header.
    port_at: usize,
}

const SOURCE: Side = Side {
    addr_at: 12,
    port_at: 0,
};
const DESTINATION: Side = Side {
    addr_at: 16,
    port_at: 2,
};

/// Client to network: the source becomes the ENI address and the translated port or id.
#[inline]
pub(crate) fn rewrite_source(data: &mut [u8], addr: u32, port: u16, mss: u16) {
    rewrite(data, SOURCE, addr, port, mss);
}

/// Network to client: the destination becomes the client's address and port or id.
#[inline]
pub(crate) fn rewrite_destination(data: &mut [u8], addr: u32, port: u16, mss: u16) {
    rewrite(data, DESTINATION, addr, port, mss);
}

/// Translates an ICMP error about a translated flow (RFC 5508) in place, toward the client
/// (`to_client`: the outer destination becomes `addr`; the quoted packet went out from the ENI,
/// so its source and source port become `addr` and `port`) or toward the remote (the outer
/// source; the quoted packet came to the client, so its destination and destination port). An
/// echo quoted has its id replaced instead of a port. The TTL is decremented and the outer
/// header's checksum follows.
///
/// The ICMP checksum is verified first (RFC 5508 REQ-3: an error that fails it is dropped, not
/// repaired): false, and nothing changed, if it fails. Then every change inside the message
/// is folded into it (RFC 1624), as is each into the quoted header's checksum and, when the
/// quote holds it, the quoted TCP/UDP/ICMP checksum (the address, in the pseudo-header, and
/// the port or id; as Linux NAT does; a quoted UDP checksum of zero stays zero). Bounds are
/// checked: a message too short to quote a header and 8 bytes is left as it is past the outer
/// header (its callers have refused such messages).
#[inline]
pub(crate) fn translate_icmp_error(data: &mut [u8], to_client: bool, addr: u32, port: u16) -> bool {
    let Ok(mut ip) = Ipv4Packet::new_checked(data) else {
        return false;
    };
    if !IcmpPacket::new_checked(ip.payload()).is_ok_and(|i| i.verify_checksum()) {
        return false;
    }
    let quoted = if to_client {
        ip.set_dst(addr.to_be_bytes());
        SOURCE
    } else {
        ip.set_src(addr.to_be_bytes());
        DESTINATION
    };
    ip.decrement_ttl();
    let icmp = ip.payload_mut();
    if icmp.len() < 8 + MIN_HEADER_LEN + 8 {
        return true;
    }
    let (head, emb) = icmp.split_at_mut(8);
    let ihl = usize::from(emb[0] & 0x0f) * 4;
    if ihl < MIN_HEADER_LEN || emb.len() < ihl + 8 {
        return true;
    }
    // As `rewrite`: the fields as they lie in memory, no byte swaps. `message` gathers every
    // change inside the ICMP message, for its checksum.
    let mut message = Delta::new();
    let at = quoted.addr_at;
    let new_addr = addr.to_be_bytes();
    let old_addr = u32::from_ne_bytes([emb[at], emb[at + 1], emb[at + 2], emb[at + 3]]);
    emb[at..at + 4].copy_from_slice(&new_addr);
    let mut address = Delta::new();
    address.quad(old_addr, u32::from_ne_bytes(new_addr));
    message.quad(old_addr, u32::from_ne_bytes(new_addr));
    let old_hc = u16::from_ne_bytes([emb[10], emb[11]]);
    let new_hc = address.apply(old_hc);
    emb[10..12].copy_from_slice(&new_hc.to_ne_bytes());
    message.word(old_hc, new_hc);
    // Where the port (or id) and the checksum covering it lie in the quoted L4 header, and
    // whether that checksum takes the address too (TCP/UDP: the pseudo-header).
    let (port_at, sum_at, pseudo) = match emb[9] {
        protocol::TCP => (ihl + quoted.port_at, ihl + 16, true),
        protocol::UDP => (ihl + quoted.port_at, ihl + 6, true),
        protocol::ICMP => (ihl + 4, ihl + 2, false),
        _ => {
            apply_to(head, message);
            return true;
        }
    };
    let new_port = port.to_be_bytes();
    let old_port = u16::from_ne_bytes([emb[port_at], emb[port_at + 1]]);
    emb[port_at..port_at + 2].copy_from_slice(&new_port);
    message.word(old_port, u16::from_ne_bytes(new_port));
    // A UDP datagram sent without a checksum keeps none (RFC 768).
    let optional = emb[9] == protocol::UDP;
    if let Some(sum) = emb.get_mut(sum_at..sum_at + 2) {
        let old_sum = u16::from_ne_bytes([sum[0], sum[1]]);
        if !(optional && old_sum == 0) {
            let mut l4 = if pseudo { address } else { Delta::new() };
            l4.word(old_port, u16::from_ne_bytes(new_port));
            let n = l4.apply(old_sum);
            let n = if optional && n == 0 { 0xffff } else { n };
            sum.copy_from_slice(&n.to_ne_bytes());
            message.word(old_sum, n);
        }
    }
    apply_to(head, message);
    true
}

/// Folds `changes` into the checksum of the ICMP header `head`.
fn apply_to(head: &mut [u8], changes: Delta) {
    let c = u16::from_ne_bytes([head[2], head[3]]);
    head[2..4].copy_from_slice(&changes.apply(c).to_ne_bytes());
}

fn word(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn rewrite(data: &mut [u8], side: Side, addr: u32, port: u16, mss: u16) {
    let Some(&first) = data.first() else {
        return;
    };
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < MIN_HEADER_LEN || data.len() < ihl {
        return;
    }
    let total = usize::from(word(data, 2));
    if total < ihl || total > data.len() {
        return;
    }
    let (header, rest) = data.split_at_mut(ihl);
    let l4 = &mut rest[..total - ihl];
    let Some(h) = header.first_chunk_mut::<MIN_HEADER_LEN>() else {
        return;
    };

    // The fields as they lie in memory (`Delta` does not mind the byte order): nothing is
    // swapped. The address change is shared by both checksums.
    let a = side.addr_at;
    let old_addr = u32::from_ne_bytes([h[a], h[a + 1], h[a + 2], h[a + 3]]);
    let new_bytes = addr.to_be_bytes();
    h[a..a + 4].copy_from_slice(&new_bytes);
    let mut address = Delta::new();
    address.quad(old_addr, u32::from_ne_bytes(new_bytes));
    let mut ip = address;
    if h[8] > 0 {
        h[8] -= 1;
        // The TTL is the first byte of its word: the word, as a big-endian number, fell by
        // 0x100 (in memory order, that difference read the same way).
        ip.decrease(u16::from_ne_bytes(0x0100u16.to_be_bytes()));
    }
    let hc = u16::from_ne_bytes([h[10], h[11]]);
    h[10..12].copy_from_slice(&ip.apply(hc).to_ne_bytes());

    match h[9] {
        protocol::TCP => {
            // As `TcpPacket::new_checked`: the header and its data offset fit.
            if l4.len() < 20 || !(20..=l4.len()).contains(&(usize::from(l4[12] >> 4) * 4)) {
                return;
            }
            port_and_checksum::<16, false>(l4, side.port_at, port, address);
            if l4[13] & flags::SYN != 0 {
                if let Ok(mut tcp) = TcpPacket::new_checked(l4) {
                    tcp.clamp_mss(mss);
                }
            }
        }
        protocol::UDP => {
            // As `UdpPacket::new_checked`: the header fits and its length field is sane (in
            // the first fragment of a datagram (MF) it is the whole datagram's: longer).
            if l4.len() < 8 {
                return;
            }
            let udp_len = usize::from(word(l4, 4));
            if udp_len < 8 || (udp_len > l4.len() && h[6] & 0x20 == 0) {
                return;
            }
            port_and_checksum::<6, true>(l4, side.port_at, port, address);
        }
        protocol::ICMP => {
            let Some(icmp) = l4.first_chunk_mut::<8>() else {
                return;
            };
            let new_id = port.to_be_bytes();
            let old_id = u16::from_ne_bytes([icmp[4], icmp[5]]);
            icmp[4..6].copy_from_slice(&new_id);
            let mut d = Delta::new();
            d.word(old_id, u16::from_ne_bytes(new_id));
            let c = d.apply(u16::from_ne_bytes([icmp[2], icmp[3]]));
            icmp[2..4].copy_from_slice(&c.to_ne_bytes());
            if c == 0 {
                crate::wire::icmp::after_zero_update(l4);
            }
        }
        _ => {}
    }
}

/// Writes `port` at `port_at` of a TCP/UDP header and folds it and the pseudo-header's
/// `address` change into the checksum at `SUM_AT`. `OPTIONAL` (UDP): a zero checksum means none
/// was computed and stays zero, and a computed zero is sent as all ones (RFC 768). The caller
/// has checked that the header fits.
#[inline(always)]
fn port_and_checksum<const SUM_AT: usize, const OPTIONAL: bool>(
    l4: &mut [u8],
    port_at: usize,
    port: u16,
    address: Delta,
) {
    let new_port = port.to_be_bytes();
    let old_port = u16::from_ne_bytes([l4[port_at], l4[port_at + 1]]);
    l4[port_at..port_at + 2].copy_from_slice(&new_port);
    let c = u16::from_ne_bytes([l4[SUM_AT], l4[SUM_AT + 1]]);
    if OPTIONAL && c == 0 {
        return;
    }
    let mut d = address;
    d.word(old_port, u16::from_ne_bytes(new_port));
    let n = d.apply(c);
    let n = if OPTIONAL && n == 0 { 0xffff } else { n };
    l4[SUM_AT..SUM_AT + 2].copy_from_slice(&n.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;
    use crate::wire::icmp::IcmpPacket;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::udp::UdpPacket;
    use proptest::prelude::*;

    /// The rewrite field by field through the views, one fold per field: what the pipeline
    /// did before the one-fold rewrite, kept as the oracle.
    fn by_views(data: &mut [u8], source: bool, addr: u32, port: u16, mss: u16) {
        let Ok(mut ip) = Ipv4Packet::new_checked(data) else {
            return;
        };
        let old = if source {
            let old = u32::from_be_bytes(ip.src());
            ip.set_src(addr.to_be_bytes());
            old
        } else {
            let old = u32::from_be_bytes(ip.dst());
            ip.set_dst(addr.to_be_bytes());
            old
        };
        ip.decrement_ttl();
        match ip.protocol() {
            protocol::TCP => {
                if let Ok(mut t) = TcpPacket::new_checked(ip.payload_mut()) {
                    t.adjust32(old, addr);
                    if source {
                        t.set_src_port(port);
                    } else {
                        t.set_dst_port(port);
                    }
                    if t.flags() & flags::SYN != 0 {
                        t.clamp_mss(mss);
                    }
                }
            }
            protocol::UDP => {
                if let Ok(mut u) = UdpPacket::new_checked(ip.payload_mut()) {
                    u.adjust32(old, addr);
                    if source {
                        u.set_src_port(port);
                    } else {
                        u.set_dst_port(port);
                    }
                }
            }
            protocol::ICMP => {
                if let Ok(mut i) = IcmpPacket::new_checked(ip.payload_mut()) {
                    i.set_echo_id(port);
                }
            }
            _ => {}
        }
    }

    /// Equal as ones' complement numbers (0x0000 and 0xffff are both zero).
    fn same(a: u16, b: u16) -> bool {
        a == b || (a ^ b == 0xffff && (a == 0 || b == 0))
    }

    /// A packet of `proto` with a correct IPv4 checksum and a correct L4 checksum (or, for
    /// UDP with `no_udp_sum`, none); a TCP SYN carries an MSS option.
    fn packet(
        proto: u8,
        (src, dst): (u32, u32),
        ttl: u8,
        ports: (u16, u16),
        syn_mss: Option<u16>,
        no_udp_sum: bool,
        payload: &[u8],
    ) -> Vec<u8> {
        let l4_header = match proto {
            protocol::TCP if syn_mss.is_some() => 24,
            protocol::TCP => 20,
            _ => 8,
        };
        let total = 20 + l4_header + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = ttl;
        p[9] = proto;
        p[12..16].copy_from_slice(&src.to_be_bytes());
        p[16..20].copy_from_slice(&dst.to_be_bytes());
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let l4 = &mut p[20..];
        l4[l4_header..].copy_from_slice(payload);
        match proto {
            protocol::TCP => {
                l4[0..2].copy_from_slice(&ports.0.to_be_bytes());
                l4[2..4].copy_from_slice(&ports.1.to_be_bytes());
                l4[12] = ((l4_header / 4) as u8) << 4;
                if let Some(mss) = syn_mss {
                    l4[13] = flags::SYN;
                    l4[20] = 2;
                    l4[21] = 4;
                    l4[22..24].copy_from_slice(&mss.to_be_bytes());
                } else {
                    l4[13] = flags::ACK;
                }
                let mut t = TcpPacket::new_checked(&mut *l4).unwrap();
                t.fill_checksum(src.to_be_bytes(), dst.to_be_bytes());
            }
            protocol::UDP => {
                l4[0..2].copy_from_slice(&ports.0.to_be_bytes());
                l4[2..4].copy_from_slice(&ports.1.to_be_bytes());
                let len = l4.len() as u16;
                l4[4..6].copy_from_slice(&len.to_be_bytes());
                if !no_udp_sum {
                    let mut u = UdpPacket::new_checked(&mut *l4).unwrap();
                    u.fill_checksum(src.to_be_bytes(), dst.to_be_bytes());
                }
            }
            _ => {
                l4[0] = 8;
                l4[4..6].copy_from_slice(&ports.0.to_be_bytes());
                let mut i = IcmpPacket::new_checked(&mut *l4).unwrap();
                i.fill_checksum();
            }
        }
        p
    }

    fn l4_verifies(p: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(p).unwrap();
        let (s, d) = (ip.src(), ip.dst());
        match ip.protocol() {
            protocol::TCP => TcpPacket::new_checked(ip.payload())
                .unwrap()
                .verify_checksum(s, d),
            protocol::UDP => UdpPacket::new_checked(ip.payload())
                .unwrap()
                .verify_checksum(s, d),
            _ => IcmpPacket::new_checked(ip.payload())
                .unwrap()
                .verify_checksum(),
        }
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let mut p = packet(
            protocol::UDP,
            (0x0a00_0002, 0xc0a8_0001),
            64,
            (5000, 53),
            None,
            true,
            b"query",
        );
        rewrite_source(&mut p, 0xac10_0005, 1024, 1328);
        assert_eq!(&p[26..28], &[0, 0]);
        assert_eq!(&p[20..22], &1024u16.to_be_bytes());
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
    }

    #[test]
    fn syn_mss_is_clamped_and_checksums_hold() {
        let mut p = packet(
            protocol::TCP,
            (0x0a00_0002, 0xc0a8_0001),
            64,
            (40000, 443),
            Some(1460),
            false,
            &[],
        );
        rewrite_source(&mut p, 0xac10_0005, 2048, 1328);
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.ttl(), 63);
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(t.mss(), Some(1328));
        assert_eq!(t.src_port(), 2048);
        assert!(ip.verify_checksum());
        assert!(l4_verifies(&p));
    }

    #[test]
    fn truncated_or_odd_input_is_left_alone_without_panic() {
        for len in 0..40 {
            let mut p = packet(protocol::TCP, (1, 2), 64, (1, 2), None, false, &[0; 8]);
            p.truncate(len);
            let before = p.clone();
            rewrite_destination(&mut p, 3, 4, 1328);
            if len < 20 {
                assert_eq!(p, before);
            }
        }
    }

    /// An ICMP port unreachable from `src` to `dst` quoting `quoted`, its checksum right.
    fn icmp_error(src: u32, dst: u32, quoted: &[u8]) -> Vec<u8> {
        crate::testkit::ipv4_icmp_error(src, dst, 3, 3, quoted)
    }

    #[test]
    fn an_icmp_error_with_a_bad_checksum_is_refused_untouched() {
        let quoted = packet(protocol::UDP, (1, 2), 64, (1024, 53), None, false, b"q");
        let mut e = icmp_error(2, 1, &quoted);
        e[20 + 8 + 20 + 8] ^= 1;
        let before = e.clone();
        assert!(!translate_icmp_error(&mut e, true, 3, 4000));
        assert_eq!(e, before);
    }

    proptest! {
        /// An ICMP error about a translated packet, either way, quoting the packet whole or
        /// only its header and first 8 bytes: translated, the ICMP checksum and the quoted
        /// header's verify, the quoted L4 checksum (whole quote) verifies over the translated
        /// packet, and the short quote is the whole one's first bytes (its fields folded the
        /// same way). A quoted UDP datagram without a checksum keeps none.
        #[test]
        fn icmp_errors_keep_every_checksum_they_quote(
            proto in prop_oneof![Just(protocol::TCP), Just(protocol::UDP), Just(protocol::ICMP)],
            inside in any::<u32>(), remote in any::<u32>(),
            ports in any::<(u16, u16)>(), no_udp_sum in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..32),
            to_client in any::<bool>(), addr in any::<u32>(), port in any::<u16>(),
        ) {
            // Toward the client the quoted packet went from the ENI (`inside`) to the remote;
            // toward the remote it came from the remote to the client (`inside`).
            let (src, dst) = if to_client { (inside, remote) } else { (remote, inside) };
            let quoted = packet(proto, (src, dst), 64, ports, None, no_udp_sum, &payload);
            let mut whole = icmp_error(remote, inside, &quoted);
            let mut short = icmp_error(remote, inside, &quoted[..28]);
            prop_assert!(translate_icmp_error(&mut whole, to_client, addr, port));
            prop_assert!(translate_icmp_error(&mut short, to_client, addr, port));
            for e in [&whole, &short] {
                let ip = Ipv4Packet::new_checked(&e[..]).unwrap();
                prop_assert!(ip.verify_checksum());
                prop_assert!(IcmpPacket::new_checked(ip.payload()).unwrap().verify_checksum());
                prop_assert_eq!(checksum::checksum(&e[28..48]), 0);
            }
            prop_assert_eq!(&short[28..56], &whole[28..56]);
            let q = &whole[28..];
            let (at, port_at) = if to_client { (12, 0) } else { (16, 2) };
            prop_assert_eq!(&q[at..at + 4], &addr.to_be_bytes()[..]);
            let port_at = if proto == protocol::ICMP { 24 } else { 20 + port_at };
            prop_assert_eq!(&q[port_at..port_at + 2], &port.to_be_bytes()[..]);
            if proto == protocol::UDP && no_udp_sum {
                prop_assert_eq!(&q[26..28], &[0, 0]);
            } else {
                prop_assert!(l4_verifies(q));
            }
        }
    }

    proptest! {
        /// Against the view-by-view rewrite: the same bytes (checksums equal as ones'
        /// complement numbers), and both checksums verify after the rewrite.
        #[test]
        fn one_fold_matches_field_by_field(
            proto in prop_oneof![Just(protocol::TCP), Just(protocol::UDP), Just(protocol::ICMP)],
            src in any::<u32>(), dst in any::<u32>(), ttl in any::<u8>(),
            ports in any::<(u16, u16)>(), syn_mss in proptest::option::of(any::<u16>()),
            no_udp_sum in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            source in any::<bool>(), addr in any::<u32>(), port in any::<u16>(),
            mss in 536u16..1460,
        ) {
            let original = packet(proto, (src, dst), ttl, ports, syn_mss, no_udp_sum, &payload);
            let mut fast = original.clone();
            let mut slow = original.clone();
            if source {
                rewrite_source(&mut fast, addr, port, mss);
            } else {
                rewrite_destination(&mut fast, addr, port, mss);
            }
            by_views(&mut slow, source, addr, port, mss);
            // Same bytes outside the checksum fields.
            let l4_sum = match proto { protocol::TCP => 20 + 16, protocol::UDP => 20 + 6, _ => 20 + 2 };
            for i in 0..fast.len() {
                if !(10..12).contains(&i) && !(l4_sum..l4_sum + 2).contains(&i) {
                    prop_assert_eq!(fast[i], slow[i], "byte {}", i);
                }
            }
            prop_assert!(same(word(&fast, 10), word(&slow, 10)));
            prop_assert!(Ipv4Packet::new_checked(&fast[..]).unwrap().verify_checksum());
            let (f, s) = (word(&fast, l4_sum), word(&slow, l4_sum));
            if proto == protocol::UDP && no_udp_sum {
                prop_assert_eq!(f, 0);
            } else {
                prop_assert!(same(f, s), "{:#x} vs {:#x}", f, s);
                prop_assert!(l4_verifies(&fast));
                if proto == protocol::UDP {
                    prop_assert_ne!(f, 0);
                }
            }
        }
    }
}
