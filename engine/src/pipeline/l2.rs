//! Link-level services of a core: ARP (answering for the appliance's addresses, learning
//! neighbours, resolving next hops), answering pings to the appliance's own addresses, and the
//! last stage of every path: add the Ethernet header and queue the frame on its port.

use crate::neighbour::Resolve;
use crate::packet::{DropReason, PacketBuf};
use crate::port::Port;
use crate::session::Remote;
use crate::wire::arp::{ArpRepr, OP_REPLY, OP_REQUEST, PACKET_LEN};
use crate::wire::ethernet::{self, ethertype, BROADCAST, HEADER_LEN};
use crate::wire::icmp::{kind, IcmpPacket};
use crate::wire::ipv4::{
    protocol, source_routed, stamp_options, Ipv4Packet, Ipv4Repr, DEFAULT_TTL, MIN_HEADER_LEN,
};
use crate::wire::udp::Ipv4UdpHeaders;
use crate::worker::Worker;

/// Set on the port number of an ARP frame a core passes to the other cores (`share_arp`): the
/// receiving core learns from it, and neither answers nor passes it on. Such a frame reaches
/// `handle_arp` through the network side's dispatch (its port is not the outside port's).
pub(crate) const SHARED_ARP: u16 = 0x8000;

impl<P: Port> Worker<P> {
    /// Handles an ARP packet received on `port` (the frame still has its Ethernet header), or
    /// passed by another core (`SHARED_ARP`). Cold and out of line, as every path off the data
    /// packets'.
    #[cold]
    #[inline(never)]
    pub(crate) fn handle_arp(&mut self, port: u16, mut buf: P::Buf) {
        let shared = port & SHARED_ARP != 0;
        let port = port & !SHARED_ARP;
        let Some(pc) = self.cfg.ports.get(usize::from(port)).copied() else {
            return self.drop_packet(buf, DropReason::NotForUs);
        };
        let Ok(arp) = ArpRepr::parse(buf.data().get(HEADER_LEN..).unwrap_or(&[])) else {
            return self.drop_packet(buf, DropReason::MalformedArp);
        };
        let sender = u32::from_be_bytes(arp.sender_ip);
        let target = u32::from_be_bytes(arp.target_ip);
        // A sender at the port's subnet's broadcast or network address is no host (RFC 1122
        // §3.2.1.3; RFC 3021: a /31 or /32 has neither): learned, the core's packets to the
        // subnet's broadcast address would go to whoever sent it; nor is it answered.
        if pc.is_subnet_broadcast(sender) {
            return self.drop_packet(buf, DropReason::ArpSenderNotHost);
        }
        // Ours: the port's address, or an ENI address the rules translate to on this port
        // (packets leave from it, so hosts must resolve it for their replies).
        let ours = shared || self.is_port_address(port, target);
        // Learn on-link neighbours from ARP addressed to us (a request for our address, a
        // reply to ours); other ARP only refreshes neighbours already known (`refresh`). A
        // host is at an individual MAC: one that names a broadcast or multicast one for its
        // address is not believed (our packets to it would go to every port of the switch).
        // Nor is a host that claims one of our own addresses on the port (its address or an
        // ENI address on it): what the core sends to that address (a client's packet to the
        // ENI) would go to that host.
        if pc.on_link(sender)
            && !self.is_port_address(port, sender)
            && !ethernet::is_group(arp.sender_mac)
        {
            let now = self.now_secs;
            let share = ours
                && !shared
                && self.handoff.is_some()
                && self
                    .neighbours
                    .should_share(port, sender, arp.sender_mac, now);
            let released = if ours {
                self.neighbours.learn(port, sender, arp.sender_mac, now)
            } else {
                self.neighbours.refresh(port, sender, arp.sender_mac, now)
            };
            for b in released {
                self.send_to_mac(port, arp.sender_mac, b);
            }
            if share {
                self.share_arp(port, &buf);
            }
        }
        if shared {
            return self.consume(buf);
        }
        if arp.operation != OP_REQUEST || !ours {
            return self.consume(buf);
        }
        // Answer in place, for the address asked about.
        let reply = ArpRepr {
            operation: OP_REPLY,
            sender_mac: pc.mac,
            sender_ip: arp.target_ip,
            target_mac: arp.sender_mac,
            target_ip: arp.sender_ip,
        };
        buf.truncate(HEADER_LEN + PACKET_LEN);
        let d = buf.data_mut();
        ethernet::write_header(d, arp.sender_mac, pc.mac, ethertype::ARP);
        reply.emit(&mut d[HEADER_LEN..]);
        self.enqueue_tx(port, buf);
    }

    /// Passes a copy of the ARP frame in `buf`, addressed to us and received on `port`, to
    /// every other core, which learns its sender too. Each core has its own neighbour cache,
    /// but ARP reaches one core only (a NIC's RSS has no addresses to hash in it and sends it
    /// to one queue; a device with fewer receive queues than cores, to the cores that have
    /// one): the reply to another core's request would otherwise never reach that core, whose
    /// packets to the neighbour would wait and be dropped `arp_unresolved`, again and again.
    /// Within `NeighbourTable::should_share`'s bounds (once a second for what the cache just
    /// learned, `SHARED_PER_SEC` a second), so a flood of ARP to us costs the other cores
    /// little. A copy that finds no buffer is `no_room`; one that finds its ring full,
    /// `handoff_ring_full`.
    fn share_arp(&mut self, port: u16, buf: &P::Buf) {
        let Some(frame) = buf.data().get(..HEADER_LEN + PACKET_LEN) else {
            return;
        };
        let cores = self.handoff.as_ref().map_or(0, |h| h.to.len());
        for core in 0..cores {
            let Some(ring) = self
                .handoff
                .as_ref()
                .and_then(|h| h.to.get(core))
                .and_then(Option::as_ref)
                .map(std::sync::Arc::clone)
            else {
                continue;
            };
            let Some(mut copy) = self.ports.get_mut(usize::from(port)).and_then(Port::alloc) else {
                self.drops.bump(DropReason::NoRoom);
                continue;
            };
            match copy.append(frame.len()) {
                Ok(d) => d.copy_from_slice(frame),
                Err(_) => {
                    self.drop_packet(copy, DropReason::NoRoom);
                    continue;
                }
            }
            if let Err((_, b)) = ring.push((port | SHARED_ARP, copy)) {
                self.drop_packet(b, DropReason::HandoffRingFull);
            }
        }
    }

    /// Sends an ARP request for `ip` out of `port`.
    pub(crate) fn send_arp_request(&mut self, port: u16, ip: u32) {
        let Some(pc) = self.cfg.ports.get(usize::from(port)).copied() else {
            return;
        };
        let Some(p) = self.ports.get_mut(usize::from(port)) else {
            return;
        };
        let Some(mut buf) = p.alloc() else {
            self.drops.bump(DropReason::NoRoom);
            return;
        };
        let Ok(d) = buf.append(HEADER_LEN + PACKET_LEN) else {
            return self.drop_packet(buf, DropReason::NoRoom);
        };
        ethernet::write_header(d, BROADCAST, pc.mac, ethertype::ARP);
        let req = ArpRepr {
            operation: OP_REQUEST,
            sender_mac: pc.mac,
            sender_ip: pc.ip.to_be_bytes(),
            target_mac: [0; 6],
            target_ip: ip.to_be_bytes(),
        };
        req.emit(&mut d[HEADER_LEN..]);
        self.enqueue_tx(port, buf);
    }

    /// Whether `ip` is an address of the appliance on `port`: the port's own, or an ENI
    /// address the installed rule table translates to on that port (a target network's
    /// `eni_ip` need not be the port's). Cold paths only (ARP, pings).
    pub(crate) fn is_port_address(&self, port: u16, ip: u32) -> bool {
        self.cfg
            .ports
            .get(usize::from(port))
            .is_some_and(|pc| pc.ip == ip)
            || self.rules.has_eni_on(port, ip)
    }

    /// Answers an ICMP echo request addressed to the appliance on `port` (its address, an
    /// ENI address on it, or a listener's; frame with Ethernet header, IPv4 at `HEADER_LEN`),
    /// in place, from the port's MAC. Returns the buffer if it is not one: a ping to any other
    /// address (another host, a broadcast or multicast address, one routed elsewhere) is not
    /// ours to answer in that address's name, and one sent to a link-layer broadcast or
    /// multicast address is not answered (RFC 1122 §3.3.6: a unicast datagram received so is
    /// discarded). Nor is one whose source is no single host (RFC 1122 §3.2.1.3 has a host
    /// discard it: 0/8, 127/8, a multicast, the limited broadcast or the port's subnet's
    /// broadcast address), or whose link-layer source is a group address: the answer would go
    /// to every host of the link (a reflection anyone on it could aim). Cold and out of line:
    /// data packets never come here.
    #[cold]
    #[inline(never)]
    pub(crate) fn answer_ping(&mut self, port: u16, mut buf: P::Buf) -> Option<P::Buf> {
        let Ok((src_mac, dst_mac)) =
            ethernet::EthernetFrame::new_checked(buf.data()).map(|e| (e.src(), e.dst()))
        else {
            return Some(buf);
        };
        let Some(pc) = self.cfg.ports.get(usize::from(port)).copied() else {
            return Some(buf);
        };
        if ethernet::is_group(dst_mac) || ethernet::is_group(src_mac) {
            return Some(buf);
        }
        let stamp = ip_timestamp(self.elapsed);
        let answerable = |src: u32, dst: u32| {
            pc.is_one_host(src)
                && (self.is_port_address(port, dst)
                    || self.cfg.listeners.iter().any(|l| l.ip == dst))
        };
        if !buf
            .data_mut()
            .get_mut(HEADER_LEN..)
            .is_some_and(|ip| echo_reply_in_place_if(ip, stamp, answerable))
        {
            return Some(buf);
        }
        let d = buf.data_mut();
        d[0..6].copy_from_slice(&src_mac);
        d[6..12].copy_from_slice(&pc.mac);
        self.enqueue_tx(port, buf);
        None
    }

    /// Adds the Ethernet header to an IPv4 packet and queues it on `port` toward `next_hop`,
    /// resolving the next hop's MAC (the packet waits in the neighbour queue if needed).
    pub(crate) fn output(&mut self, port: u16, next_hop: u32, buf: P::Buf) {
        self.output_under(port, next_hop, buf, |_: &mut [u8; 0]| {});
    }

    /// `output` with `N` more header bytes between Ethernet and the packet, written by
    /// `write`: one prepend for all of them. Always inlined: with the fragment paths as
    /// callers too, LLVM stopped inlining it into the per-packet ones (callgrind: about 20
    /// instructions a packet).
    #[inline(always)]
    pub(super) fn output_under<const N: usize>(
        &mut self,
        port: u16,
        next_hop: u32,
        mut buf: P::Buf,
        write: impl FnOnce(&mut [u8; N]),
    ) {
        let Some(src) = self.cfg.ports.get(usize::from(port)).map(|pc| pc.mac) else {
            return self.drop_packet(buf, DropReason::NoRoute);
        };
        let known = self.neighbours.lookup(port, next_hop, self.now_secs);
        let Ok(h) = buf.prepend(HEADER_LEN + N) else {
            return self.drop_packet(buf, DropReason::NoRoom);
        };
        let (eth, inner) = h.split_at_mut(HEADER_LEN);
        // Broadcast stands in while the next hop resolves; resolution writes its MAC.
        ethernet::write_header(eth, known.unwrap_or(BROADCAST), src, ethertype::IPV4);
        if let Ok(inner) = <&mut [u8; N]>::try_from(inner) {
            write(inner);
        }
        self.queue_frame(port, next_hop, known.is_some(), buf);
    }

    /// Queues a frame whose Ethernet header is written: for transmission if its next hop's MAC
    /// was `known` (and written), else until the next hop resolves.
    #[inline]
    fn queue_frame(&mut self, port: u16, next_hop: u32, known: bool, buf: P::Buf) {
        if known {
            return self.enqueue_tx(port, buf);
        }
        self.await_neighbour(port, next_hop, buf);
    }

    /// Holds a frame until its next hop resolves (asking for it if nobody has yet).
    #[cold]
    #[inline(never)]
    fn await_neighbour(&mut self, port: u16, next_hop: u32, buf: P::Buf) {
        match self.neighbours.resolve(port, next_hop, buf, self.now_secs) {
            // Resolved since the caller looked (not today: both happen in one call on one
            // core); send it rather than lose it.
            Resolve::Mac(mac, b) => self.send_to_mac(port, mac, b),
            Resolve::Queued { request } => {
                if request {
                    self.send_arp_request(port, next_hop);
                }
            }
            Resolve::Full(b) => self.drop_packet(b, DropReason::ArpQueueFull),
        }
    }

    /// Queues a frame that waited for its next hop, now at `mac` (written as its destination).
    fn send_to_mac(&mut self, port: u16, mac: crate::wire::ethernet::Mac, mut buf: P::Buf) {
        if let Some(d) = buf.data_mut().get_mut(0..6) {
            d.copy_from_slice(&mac);
        }
        self.enqueue_tx(port, buf);
    }

    /// The next hop toward an outer address on the outside port.
    pub(crate) fn outside_next_hop(&self, ip: u32) -> Option<u32> {
        let pc = self.cfg.ports.get(usize::from(self.cfg.outside))?;
        if pc.on_link(ip) {
            Some(ip)
        } else {
            pc.gateway
        }
    }

    /// Wraps the OpenVPN packet in `buf` in the prepared UDP and IPv4 `headers` (toward the
    /// client at `remote_ip`) and Ethernet, and sends it out of the outside port: all three
    /// written at once, in the headroom; in fragments if it is longer than the port's MTU.
    pub(crate) fn send_to_client(&mut self, buf: P::Buf, headers: &Ipv4UdpHeaders, remote_ip: u32) {
        let len = buf.len();
        let Some(hop) = self.outside_next_hop(remote_ip) else {
            return self.drop_packet(buf, DropReason::NoRoute);
        };
        if Ipv4UdpHeaders::LEN + len > usize::from(self.cfg.outside_mtu) {
            return self.send_fragments_to_client(buf, headers, hop);
        }
        let outside = self.cfg.outside;
        let ident = self.take_ident();
        self.output_under(outside, hop, buf, |h: &mut [u8; Ipv4UdpHeaders::LEN]| {
            headers.write(h, len, ident);
        });
    }

    /// Sends a control-channel datagram from the control thread.
    pub(crate) fn transmit_control(&mut self, payload: &[u8], remote: Remote, local: Remote) {
        let outside = usize::from(self.cfg.outside);
        let Some(mut buf) = self.ports.get_mut(outside).and_then(Port::alloc) else {
            self.drops.bump(DropReason::NoRoom);
            return;
        };
        match buf.append(payload.len()) {
            Ok(d) => d.copy_from_slice(payload),
            Err(_) => return self.drop_packet(buf, DropReason::NoRoom),
        }
        let headers = Ipv4UdpHeaders::new((local.ip, local.port), (remote.ip, remote.port));
        self.send_to_client(buf, &headers, remote.ip);
    }
}

/// Turns the IPv4 packet in `ip`, if it is a whole (not fragmented) ICMP echo request, into
/// its reply, in place: addresses swapped, the type changed, the TTL a fresh `DEFAULT_TTL`
/// (the request's may have been spent to 1 on its way, and a reply sent with what was left
/// would die at the first router back), both checksums updated incrementally. Record Route and
/// Timestamp options get this host's entry (`wire::ipv4::stamp_options`, the timestamp
/// `stamp`). False, and `ip` untouched, if it is anything else.
pub(crate) fn echo_reply_in_place(ip: &mut [u8], stamp: u32) -> bool {
    echo_reply_in_place_if(ip, stamp, |_, _| true)
}

/// An IPv4 timestamp (RFC 791) for `elapsed` on a core's clock: milliseconds, with the high
/// bit set, which says they are not since midnight UT (a core has no wall clock).
pub(crate) fn ip_timestamp(elapsed: std::time::Duration) -> u32 {
    (elapsed.as_millis() as u32 & 0x7fff_ffff) | 0x8000_0000
}

/// `echo_reply_in_place` for a request whose source and destination are `answerable` only
/// (asked only of an echo request). A request that asks for source routing is not answered:
/// the reply would carry the route unreversed, where RFC 1122 (3.2.2.6) wants it reversed,
/// and RFC 7126 has routers drop such packets anyway.
pub(crate) fn echo_reply_in_place_if(
    ip: &mut [u8],
    stamp: u32,
    answerable: impl FnOnce(u32, u32) -> bool,
) -> bool {
    let header_len = ip.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
    if header_len > MIN_HEADER_LEN && ip.get(..header_len).is_none_or(source_routed) {
        return false;
    }
    let Ok(mut ip) = Ipv4Packet::new_checked(ip) else {
        return false;
    };
    let is_request = ip.protocol() == protocol::ICMP
        && !ip.is_fragment()
        && IcmpPacket::new_checked(ip.payload()).is_ok_and(|i| i.kind() == kind::ECHO_REQUEST);
    if !is_request || !answerable(u32::from_be_bytes(ip.src()), u32::from_be_bytes(ip.dst())) {
        return false;
    }
    // The options are stamped on a copy first: a request they make in error stays untouched.
    let mut options = [0u8; 40];
    let n = ip.header_len() - MIN_HEADER_LEN;
    if n > 0 {
        options[..n].copy_from_slice(ip.options());
        if stamp_options(&mut options[..n], ip.dst(), stamp).is_err() {
            return false;
        }
    }
    let (src, dst) = (ip.src(), ip.dst());
    ip.set_src(dst);
    ip.set_dst(src);
    ip.set_ttl(DEFAULT_TTL);
    if n > 0 {
        ip.options_mut().copy_from_slice(&options[..n]);
        ip.fill_checksum();
    }
    ip.payload_mut()[0] = kind::ECHO_REPLY;
    let Ok(mut icmp) = IcmpPacket::new_checked(ip.payload_mut()) else {
        return false;
    };
    let old = u16::from_be_bytes([kind::ECHO_REQUEST, 0]);
    let new = u16::from_be_bytes([kind::ECHO_REPLY, 0]);
    icmp.adjust16(old, new);
    true
}

/// An ICMP error the core originates: its type, code and the rest of its header (RFC 792).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IcmpError {
    kind: u8,
    code: u8,
    rest: [u8; 4],
}

impl IcmpError {
    /// Time exceeded in transit (type 11, code 0).
    pub(crate) const TIME_EXCEEDED: Self = Self {
        kind: kind::TIME_EXCEEDED,
        code: 0,
        rest: [0; 4],
    };

    /// Destination unreachable, fragmentation needed and DF set (type 3, code 4), with the
    /// next hop's `mtu` in the low half of the rest of the header (RFC 1191).
    pub(crate) fn fragmentation_needed(mtu: u16) -> Self {
        let [hi, lo] = mtu.to_be_bytes();
        Self {
            kind: kind::DEST_UNREACHABLE,
            code: crate::wire::icmp::code::FRAGMENTATION_NEEDED,
            rest: [0, 0, hi, lo],
        }
    }
}

/// Whether an ICMP error may be sent about the IPv4 packet `ip` (RFC 1812 §4.3.2.7: not about
/// an ICMP error, nor a fragment but the first, nor a datagram to a multicast or broadcast
/// address, nor one whose source is not one host's): its source, and how much of it the error
/// quotes (its header and first 8 bytes). A client's own LLMNR query, IGMP report or SSDP
/// search leaves with a TTL of 1 or 2 toward a group: no error for it.
pub(crate) fn icmp_error_about(ip: &[u8]) -> Option<(u32, usize)> {
    let ip = Ipv4Packet::new_checked(ip).ok()?;
    let about_error = ip.protocol() == protocol::ICMP
        && IcmpPacket::new_checked(ip.payload()).map_or(true, |i| !i.is_echo());
    let unicast = is_one_host(u32::from_be_bytes(ip.src())) && ip.dst()[0] < 224;
    (!about_error && unicast && ip.frag_offset() == 0).then(|| {
        (
            u32::from_be_bytes(ip.src()),
            (ip.header_len() + 8).min(ip.total_len()),
        )
    })
}

/// Whether `ip` can be one host's address, as a source (RFC 1122 §3.2.1.3): not in 0/8
/// ("this network"), 127/8 (loopback), nor multicast, reserved or the limited broadcast
/// (224/3).
pub(crate) fn is_one_host(ip: u32) -> bool {
    !matches!(ip >> 24, 0 | 127 | 224..=255)
}

/// Turns the IPv4 packet at the front of `buf` into the ICMP `error` from `from` to `to`,
/// quoting its first `quoted` bytes (`icmp_error_about`).
pub(crate) fn write_icmp_error(
    buf: &mut impl PacketBuf,
    error: IcmpError,
    quoted: usize,
    from: u32,
    to: u32,
) -> Result<(), crate::packet::NoRoom> {
    const ICMP_HEADER: usize = 8;
    buf.truncate(quoted);
    let h = buf.prepend(MIN_HEADER_LEN + ICMP_HEADER)?;
    Ipv4Repr {
        src: from.to_be_bytes(),
        dst: to.to_be_bytes(),
        protocol: protocol::ICMP,
        payload_len: ICMP_HEADER + quoted,
        ttl: DEFAULT_TTL,
    }
    .emit(h);
    let [r0, r1, r2, r3] = error.rest;
    h[MIN_HEADER_LEN..].copy_from_slice(&[error.kind, error.code, 0, 0, r0, r1, r2, r3]);
    if let Ok(mut ip) = Ipv4Packet::new_checked(buf.data_mut()) {
        if let Ok(mut icmp) = IcmpPacket::new_checked(ip.payload_mut()) {
            icmp.fill_checksum();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{echo_reply_in_place, icmp_error_about};
    use crate::testkit::{ip, ipv4_echo, ipv4_udp};
    use crate::wire::checksum;
    use crate::wire::icmp::IcmpPacket;
    use crate::wire::ipv4::Ipv4Packet;

    /// An echo request from 10.0.0.2 to 10.0.0.1 with `options` in its header (a multiple of
    /// four bytes), its header checksum right.
    fn echo_with_options(options: &[u8]) -> Vec<u8> {
        let plain = ipv4_echo(ip("10.0.0.2"), ip("10.0.0.1"), true, 7, 1, b"ping");
        let mut p = plain[..20].to_vec();
        p.extend_from_slice(options);
        p.extend_from_slice(&plain[20..]);
        p[0] = 0x40 | (u8::try_from(p.len() - plain.len() + 20).expect("short") / 4);
        let total = u16::try_from(p.len()).expect("short");
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let hl = usize::from(p[0] & 0x0f) * 4;
        let sum = !checksum::fold(checksum::sum(0, &p[..hl]));
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    }

    /// A timestamp as a core writes one (`ip_timestamp`).
    const STAMP: u32 = 0x8000_1234;

    /// RFC 1122 3.2.2.6: a source route in an echo request MUST be reversed in the reply;
    /// the appliance does not answer such a request (nor one whose options do not parse).
    #[test]
    fn a_ping_asking_for_a_source_route_is_not_answered() {
        let route = [10, 0, 0, 9, 172, 31, 1, 10];
        for kind in [131u8, 137] {
            let mut opts = vec![1, kind, 11, 4];
            opts.extend_from_slice(&route);
            let mut p = echo_with_options(&opts);
            let before = p.clone();
            assert!(!echo_reply_in_place(&mut p, STAMP), "option {kind}");
            assert_eq!(p, before, "untouched");
        }
        // An option whose length runs past the header: not answered.
        let mut p = echo_with_options(&[7, 40, 4, 0]);
        assert!(!echo_reply_in_place(&mut p, STAMP));
    }

    /// RFC 1122 3.2.2.6: Record Route and Timestamp options in an echo request SHOULD be
    /// updated to include this host and sent back in the reply: the reply's source address
    /// (the request's destination, 10.0.0.1) recorded, the timestamp added, the header
    /// checksum right. A Timestamp RFC 791 holds in error is not answered.
    #[test]
    fn a_ping_with_record_route_or_timestamp_gets_this_host_added() {
        let checked = |p: &[u8]| {
            let ip = Ipv4Packet::new_checked(p).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!((ip.src(), ip.dst()), ([10, 0, 0, 1], [10, 0, 0, 2]));
            assert_eq!(ip.payload()[0], 0, "an echo reply");
            assert_eq!(checksum::fold(checksum::sum(0, ip.payload())), 0xffff);
        };
        // Record Route with one hop recorded and room for another, then end of options.
        let rr = [7, 11, 8, 10, 0, 0, 9, 0, 0, 0, 0, 0];
        let mut p = echo_with_options(&rr);
        assert!(echo_reply_in_place(&mut p, STAMP));
        assert_eq!(&p[20..32], &[7, 11, 12, 10, 0, 0, 9, 10, 0, 0, 1, 0]);
        checked(&p);
        // Timestamps only (flag 0), room for two.
        let ts = [68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut p = echo_with_options(&ts);
        assert!(echo_reply_in_place(&mut p, STAMP));
        assert_eq!(&p[20..32], &[68, 12, 9, 0, 0x80, 0, 0x12, 0x34, 0, 0, 0, 0]);
        checked(&p);
        // Some room, not enough for an entry (flag 1 needs 8 bytes): in error, not answered.
        let ts = [68, 8, 5, 1, 0, 0, 0, 0];
        let mut p = echo_with_options(&ts);
        let before = p.clone();
        assert!(!echo_reply_in_place(&mut p, STAMP));
        assert_eq!(p, before, "untouched");
    }

    /// A ping to the appliance with identifier 0, sequence 0 and no data is answered with
    /// the checksum 0xffff (the reply is all zero but for it), not 0x0000.
    #[test]
    fn an_all_zero_echo_reply_has_a_valid_checksum() {
        let mut p = ipv4_echo(ip("10.0.0.2"), ip("10.0.0.1"), true, 0, 0, b"");
        assert!(echo_reply_in_place(&mut p, STAMP));
        assert_eq!(p[20..], [0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    }

    /// The reply leaves with a TTL of its own (64), whatever was left of the request's: a
    /// host two routers away that pings with a TTL of 3 (its request arrives with 1) gets its
    /// reply, which with a TTL of 1 the first router back would drop.
    #[test]
    fn an_echo_reply_leaves_with_a_fresh_ttl() {
        for ttl in [0u8, 1, 2, 64, 255] {
            let mut p = ipv4_echo(ip("10.0.0.2"), ip("10.0.0.1"), true, 7, 1, b"ttl");
            let mut ip4 = Ipv4Packet::new_checked(&mut p[..]).unwrap();
            ip4.set_ttl(ttl);
            assert!(ip4.verify_checksum());
            assert!(echo_reply_in_place(&mut p, STAMP));
            let r = Ipv4Packet::new_checked(&p[..]).unwrap();
            assert_eq!(r.ttl(), 64, "request ttl {ttl}");
            assert!(r.verify_checksum(), "request ttl {ttl}");
            assert!(IcmpPacket::new_checked(r.payload())
                .unwrap()
                .verify_checksum());
        }
    }

    #[test]
    fn an_icmp_error_is_only_about_one_hosts_datagram_to_another() {
        let about = |src: &str, dst: &str| {
            icmp_error_about(&ipv4_udp(ip(src), 1000, ip(dst), 2000, b"probe"))
        };
        assert_eq!(about("10.0.0.2", "172.31.1.10"), Some((ip("10.0.0.2"), 28)));
        for (src, dst) in [
            ("10.0.0.2", "224.0.0.252"),
            ("10.0.0.2", "255.255.255.255"),
            ("10.0.0.2", "240.0.0.1"),
            ("0.0.0.0", "172.31.1.10"),
            ("127.0.0.1", "172.31.1.10"),
            ("224.0.0.5", "172.31.1.10"),
            ("255.255.255.255", "172.31.1.10"),
        ] {
            assert_eq!(about(src, dst), None, "{src} to {dst}");
        }
    }
}
