//! Network to client: a frame from a target subnet to an ENI address is matched to its flow
//! (reverse SNAT; the translated port names the owning core), rewritten to the client's
//! virtual address, encrypted with the session's key and sent to the client's outer address.
//! ICMP errors about translated flows are translated too (outer destination, embedded header).

use crate::flow::{core_for_port, Flow, FlowTable, ReverseKey};
use crate::mailbox::Report;
use crate::packet::{DropReason, PacketBuf, BURST_SIZE};
use crate::pipeline::fragment::FragmentsIn;
use crate::pipeline::l2::IcmpError;
use crate::pipeline::Hint;
use crate::port::Port;
use crate::wire::ethernet::{ethertype, EthernetFrame, HEADER_LEN};
use crate::wire::icmp::IcmpPacket;
use crate::wire::ipv4::{protocol, Ipv4Packet};
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::worker::{Worker, TUNNEL_MTU};

/// How far in front of a frame from a target subnet its reply to the client starts: the
/// prepared outer IPv4 and UDP headers and the P_DATA_V2 header and tag (the reply's Ethernet
/// header takes the place of the received one).
pub(crate) const RETURN_PREPEND: usize =
    crate::wire::udp::Ipv4UdpHeaders::LEN + crate::wire::openvpn::DATA_V2_OVERHEAD;

/// How to rewrite a return packet once its flow is known.
enum Rewrite {
    /// TCP/UDP/ICMP echo: destination address and port (or id).
    Plain,
    /// An ICMP error: the embedded header's source address and port too.
    IcmpError,
}

impl<P: Port> Worker<P> {
    /// A frame received on a port inside a target subnet; `hint`: what the look-ahead found
    /// (the slot of the frame's flow, its reverse key).
    pub(crate) fn handle_network_side(&mut self, port: u16, buf: P::Buf, hint: Hint) {
        let ethertype = match EthernetFrame::new_checked(buf.data()) {
            Ok(e) => e.ethertype(),
            Err(_) => return self.drop_packet(buf, DropReason::MalformedEthernet),
        };
        match ethertype {
            ethertype::ARP => return self.handle_arp(port, buf),
            ethertype::IPV4 => {}
            _ => return self.drop_packet(buf, DropReason::NotIpv4),
        }
        let hw_checked = buf.ipv4_checksum_verified();
        // One parse of the IPv4 header serves every later check of this packet.
        let (parsed, fragment, ttl, total, tcp_flags) = {
            let Ok(ip) = Ipv4Packet::new_checked(&buf.data()[HEADER_LEN..]) else {
                return self.drop_packet(buf, DropReason::MalformedIpv4);
            };
            if !hw_checked && !ip.verify_checksum() {
                return self.drop_packet(buf, DropReason::MalformedIpv4);
            }
            // A fragment: the first is translated with its flow (and leaves what the later
            // ones need); the later ones, without ports, take their own path.
            let fragment = ip.is_fragment().then(|| ip.ident());
            if fragment.is_some() && ip.frag_offset() != 0 {
                return self.forward_later_fragment_in(port, buf);
            }
            let tcp_flags = if ip.protocol() == protocol::TCP {
                TcpPacket::new_checked(ip.payload()).map_or(0, |t| t.flags())
            } else {
                0
            };
            let parsed = match hint.reverse {
                Some(k) => Ok(Some((k, Rewrite::Plain))),
                None => reverse_key(&ip),
            };
            (parsed, fragment, ip.ttl(), ip.total_len(), tcp_flags)
        };
        let (rkey, rewrite) = match parsed {
            Ok(Some(k)) => k,
            Ok(None) => {
                if let Some(b) = self.answer_ping(port, buf) {
                    self.drop_packet(b, DropReason::NotForUs);
                }
                return;
            }
            Err(reason) => return self.drop_packet(buf, reason),
        };
        let owner_core = if self.flows.owns_port(rkey.nat_port) {
            Some(self.cfg.core)
        } else {
            core_for_port(rkey.nat_port, self.cfg.cores)
        };
        match owner_core {
            Some(c) if c != self.cfg.core => {
                if let Some(ident) = fragment {
                    // Its later fragments, with no port to name the core, follow it there
                    // (those that came before it too: that core holds them for it).
                    let to = FragmentsIn::Core(c);
                    self.fragments_in
                        .insert(rkey.datagram(ident), to, self.now_secs);
                    self.release_early(false, rkey.datagram(ident));
                }
                return self.hand_off(c, port, buf);
            }
            Some(_) => {}
            None => {
                // Below the SNAT range: not a translated flow; maybe a ping to the appliance.
                if let Some(b) = self.answer_ping(port, buf) {
                    self.drop_packet(b, DropReason::NoFlow);
                }
                return;
            }
        }
        let (now, epoch) = (self.now_secs, self.rules_epoch);
        let Some((slot, flow)) = self.flows.find_reverse_at(&rkey, hint.flow) else {
            if let Some(b) = self.answer_ping(port, buf) {
                self.drop_packet(b, DropReason::NoFlow);
            }
            return;
        };
        // A flow decided under an older rule table decides again before its return traffic
        // goes on (as the client side does): a revoked rule stops the flow both ways, and a
        // refused packet does not keep it alive.
        let flow = if flow.decided == epoch {
            flow.touch(now);
            flow
        } else {
            match self.return_deciding(slot) {
                Ok(f) => f,
                Err(reason) => return self.drop_packet(buf, reason),
            }
        };
        if let Rewrite::Plain = rewrite {
            if FlowTable::remote_tcp_matters(flow, tcp_flags) {
                let ip = buf.data().get(HEADER_LEN..).unwrap_or_default();
                FlowTable::observe_remote_tcp(flow, tcp_flags, ip);
            }
        }
        let (client, client_port, owner) = (flow.key.client, flow.key.src_port, flow.owner);
        if let Some(ident) = fragment {
            if let Rewrite::IcmpError = rewrite {
                return self.drop_packet(buf, DropReason::Ipv4Fragment);
            }
            let to = FragmentsIn::Here { client, owner };
            self.fragments_in.insert(rkey.datagram(ident), to, now);
            // Those that came before it go now (the client reassembles in any order).
            self.release_early(false, rkey.datagram(ident));
        }
        if ttl <= 1 {
            return match rewrite {
                Rewrite::Plain => {
                    let error = IcmpError::TIME_EXCEEDED;
                    self.icmp_error_to_host(port, buf, rkey.eni, error, DropReason::TtlExceeded)
                }
                Rewrite::IcmpError => self.drop_packet(buf, DropReason::TtlExceeded),
            };
        }
        if total > usize::from(TUNNEL_MTU) {
            let to = (client, client_port, owner);
            return self.too_long_for_tunnel(port, buf, rkey.eni, rewrite, to, total);
        }
        let mut buf = buf;
        buf.trim_front(HEADER_LEN);
        buf.truncate(total);
        let mss = self.cfg.mss_clamp;
        if let Err(reason) = to_client(buf.data_mut(), rewrite, client, client_port, mss) {
            return self.drop_packet(buf, reason);
        }
        self.encrypt_to_client(buf, owner);
    }

    /// A host's packet to a client (a frame received on `port`, sent to the ENI `eni`; `to`:
    /// the client's address and port or id, and its session's slot) longer than the tunnel's
    /// MTU (`TUNNEL_MTU`, the `tun-mtu` pushed to clients; an inside port's may be up to
    /// 2000), as a router treats it (RFC 1812 §5.2.6, RFC 1191): with DF set, it is answered
    /// with an ICMP fragmentation needed carrying the tunnel's MTU, from the ENI
    /// (`icmp_error_to_host`; over the budget, or about an ICMP error, it is dropped
    /// `too_big`); with DF clear, it is translated and sealed for the client in fragments,
    /// each its own data-channel packet (`seal_in_fragments`).
    #[cold]
    #[inline(never)]
    fn too_long_for_tunnel(
        &mut self,
        port: u16,
        mut buf: P::Buf,
        eni: u32,
        rewrite: Rewrite,
        (client, client_port, owner): (u32, u16, u32),
        total: usize,
    ) {
        let df = buf
            .data()
            .get(HEADER_LEN..)
            .and_then(|d| Ipv4Packet::new_checked(d).ok())
            .is_some_and(|ip| ip.dont_fragment());
        if df {
            let error = IcmpError::fragmentation_needed(TUNNEL_MTU);
            return self.icmp_error_to_host(port, buf, eni, error, DropReason::TooBig);
        }
        buf.trim_front(HEADER_LEN);
        buf.truncate(total);
        let mss = self.cfg.mss_clamp;
        if let Err(reason) = to_client(buf.data_mut(), rewrite, client, client_port, mss) {
            return self.drop_packet(buf, reason);
        }
        self.seal_in_fragments(buf, owner);
    }

    /// The flow in `slot`, whose return traffic arrived after a rule-table swap, decided again
    /// as the client side decides it (`decide_flow`, with the owning session's endpoint and
    /// groups), and refreshed if it may go on. Refused: the reason the client side drops it
    /// under; `no_flow` if its route has moved to another ENI (the client's next packet
    /// replaces the flow). Cold and out of line: once per flow per installed table.
    #[cold]
    #[inline(never)]
    fn return_deciding(&mut self, slot: u32) -> Result<&mut Flow, DropReason> {
        let (now, epoch) = (self.now_secs, self.rules_epoch);
        let (key, owner, eni) = self
            .flows
            .get(slot)
            .map(|f| (f.key, f.owner, f.eni))
            .ok_or(DropReason::NoFlow)?;
        let (endpoint, groups) = self
            .endpoint_and_groups(owner)
            .ok_or_else(|| self.ownerless_reason(owner))?;
        let (port, next_hop, decided_eni) = self.decide_flow(endpoint, &groups, &key)?;
        if decided_eni != eni {
            return Err(DropReason::NoFlow);
        }
        let f = self.flows.refresh(slot, now).ok_or(DropReason::NoFlow)?;
        f.port = port;
        f.next_hop = next_hop;
        f.decided = epoch;
        Ok(f)
    }

    /// Looks ahead over a burst from a target subnet, in stages over the whole burst so that
    /// each stage's memory requests are in flight together: the reverse index line of each
    /// frame's flow; then the flow it names, whose slot goes into `hints`; then that flow's
    /// owner (the session each frame will most likely be sealed for), for the processing
    /// loop to prefetch sessions a few frames ahead. Reads only headers (already requested)
    /// and lines requested by an earlier stage; anything unexpected is left to `process`.
    pub(crate) fn warm_network_burst(&self, frames: &[P::Buf], hints: &mut [Hint]) {
        let mut keys = [None::<(ReverseKey, u64, bool)>; BURST_SIZE];
        for (k, b) in keys.iter_mut().zip(frames) {
            let Some(ip) = super::ipv4_hint(b.data()) else {
                continue;
            };
            if let Ok(Some((rkey, rewrite))) = reverse_key(&ip) {
                let h = self.flows.hash_reverse(&rkey);
                self.flows.prefetch_reverse_bucket(h);
                *k = Some((rkey, h, matches!(rewrite, Rewrite::Plain)));
            }
        }
        for ((hint, k), b) in hints.iter_mut().zip(&keys).zip(frames) {
            hint.aead_len = super::aead_len_hint(b.data().len(), HEADER_LEN);
            let Some((rkey, h, plain)) = k else { continue };
            hint.reverse = plain.then_some(*rkey);
            hint.flow = self.flows.prefetch_reverse_flow(*h);
        }
        // The slot is the index's candidate, not checked against the key here: `process`
        // checks it, and probes the index itself when it is another key's flow (one with the
        // same 31-bit tag in the home bucket: rare) or when there was none (no flow, or the
        // key's entry lives past a full home bucket). The flow's owner, the session to seal
        // for, is read from the flow later, a few frames ahead of processing
        // (`Worker::session_hint`): read here, right after the flow was requested, every
        // burst waited for one DRAM round trip at a million flows.
    }

    /// A host's packet (a frame received on `port`, sent to the ENI `eni`) answered with the
    /// ICMP `error` from that ENI, quoting the packet as it arrived, back to the MAC it came
    /// from (the host or its router) from the port's, within the budget per address (a
    /// traceroute from the VPC: time exceeded). Dropped under `refused` when no error may be
    /// sent, as when it came to a link-layer broadcast or multicast address (RFC 1812
    /// §4.3.2.7: no ICMP error about it).
    #[cold]
    #[inline(never)]
    fn icmp_error_to_host(
        &mut self,
        port: u16,
        mut buf: P::Buf,
        eni: u32,
        error: IcmpError,
        refused: DropReason,
    ) {
        let about = buf
            .data()
            .get(HEADER_LEN..)
            .and_then(super::l2::icmp_error_about);
        let macs = EthernetFrame::new_checked(buf.data())
            .ok()
            .filter(|e| !crate::wire::ethernet::is_group(e.dst()))
            .map(|e| e.src());
        let from_mac = self.cfg.ports.get(usize::from(port)).map(|pc| pc.mac);
        let (Some((host, quoted)), Some(to_mac), Some(from_mac)) = (about, macs, from_mac) else {
            return self.drop_packet(buf, refused);
        };
        if !self.icmp_limiter.allow(host, 0, self.now_secs) {
            return self.drop_packet(buf, refused);
        }
        buf.trim_front(HEADER_LEN);
        if super::l2::write_icmp_error(&mut buf, error, quoted, eni, host).is_err() {
            return self.drop_packet(buf, DropReason::NoRoom);
        }
        let Ok(h) = buf.prepend(HEADER_LEN) else {
            return self.drop_packet(buf, DropReason::NoRoom);
        };
        h[0..6].copy_from_slice(&to_mac);
        h[6..12].copy_from_slice(&from_mac);
        h[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        self.stats.icmp_errors_sent += 1;
        self.enqueue_tx(port, buf);
    }

    /// Encrypts an inner packet for the session in slot `owner` and sends it.
    pub(super) fn encrypt_to_client(&mut self, mut buf: P::Buf, owner: u32) {
        let now = self.now_secs;
        let len = buf.len() as u64;
        let Some(s) = self.sessions.get_mut(owner).map(|s| s.sender()) else {
            let reason = self.ownerless_reason(owner);
            return self.drop_packet(buf, reason);
        };
        let peer = s.id().peer();
        let t = crate::stages::stamp();
        let sealed = s.key().seal(&mut buf, peer);
        self.stage_cycles.add_aead(t);
        let outcome = match sealed {
            Ok(o) => o,
            Err(reason) => return self.drop_packet(buf, reason),
        };
        s.egress_bytes += len;
        s.egress_packets += 1;
        s.last_tx = now;
        let (headers, remote, endpoint) = (*s.outer_headers(), s.id().remote(), s.id().endpoint());
        if outcome == crate::crypto::SealOutcome::RenegotiateSoon && key_at_threshold(&buf) {
            self.report(Report::RenegotiateSoon { peer });
        }
        if let Some(t) = self.endpoint_traffic.get_mut(usize::from(endpoint)) {
            t.egress_bytes += len;
            t.egress_packets += 1;
        }
        self.send_to_client(buf, &headers, remote.ip);
    }
}

/// Rewrites a return packet (IPv4, from its header on) to the client's address `client` and
/// port or id `port`, as `rewrite` says; an ICMP error whose checksum fails is
/// `malformed_icmp`: dropped, not repaired (RFC 5508 REQ-3).
#[inline(always)]
fn to_client(
    data: &mut [u8],
    rewrite: Rewrite,
    client: u32,
    port: u16,
    mss: u16,
) -> Result<(), DropReason> {
    match rewrite {
        Rewrite::Plain => super::nat::rewrite_destination(data, client, port, mss),
        Rewrite::IcmpError => {
            if !super::nat::translate_icmp_error(data, true, client, port) {
                return Err(DropReason::MalformedIcmp);
            }
        }
    }
    Ok(())
}

/// Packets between two reports of a session past the renegotiation threshold: control is asked
/// again (16 times before the wrap) in case a renegotiation it started did not complete.
const ASK_AGAIN_EVERY: u32 = 1 << 20;

/// Whether a sealed packet with send packet-id `pid` reports that its session must renegotiate:
/// at the threshold, and every `ASK_AGAIN_EVERY` packets after it.
fn asks_for_renegotiation(pid: u32) -> bool {
    let at = crate::crypto::data_channel::RENEGOTIATE_AT;
    pid >= at && (pid - at) % ASK_AGAIN_EVERY == 0
}

/// Whether the sealed packet is one that asks for a renegotiation (`asks_for_renegotiation`).
fn key_at_threshold(sealed: &impl PacketBuf) -> bool {
    crate::wire::openvpn::DataPacket::new_checked(sealed.data())
        .is_ok_and(|p| asks_for_renegotiation(p.packet_id()))
}

/// The reverse-SNAT key of a return packet; `Ok(None)` when it cannot be translated traffic
/// (then it may be for the appliance itself).
// Inlined, as `checked_inner` is and likely for the same reason (its key, returned through
// memory, was read straight back wider than it was written): 5 ticks a packet fewer in the
// look-ahead.
#[inline(always)]
fn reverse_key<T: AsRef<[u8]>>(
    ip: &Ipv4Packet<T>,
) -> Result<Option<(ReverseKey, Rewrite)>, DropReason> {
    let (src, dst) = (u32::from_be_bytes(ip.src()), u32::from_be_bytes(ip.dst()));
    let proto = ip.protocol();
    let key = |nat_port, remote_port| ReverseKey {
        eni: dst,
        proto,
        nat_port,
        remote: src,
        remote_port,
    };
    Ok(match proto {
        protocol::TCP => {
            let t = TcpPacket::new_checked(ip.payload()).map_err(|_| DropReason::MalformedTcp)?;
            Some((key(t.dst_port(), t.src_port()), Rewrite::Plain))
        }
        protocol::UDP => match UdpPacket::new_checked(ip.payload()) {
            Ok(u) => Some((key(u.dst_port(), u.src_port()), Rewrite::Plain)),
            // The first fragment of a datagram: its UDP length is the whole datagram's.
            Err(_) if ip.more_fragments() && ip.payload().len() >= 8 => {
                let p = ip.payload();
                let port = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
                Some((key(port(2), port(0)), Rewrite::Plain))
            }
            Err(_) => return Err(DropReason::MalformedUdp),
        },
        protocol::ICMP => {
            let i = IcmpPacket::new_checked(ip.payload()).map_err(|_| DropReason::MalformedIcmp)?;
            if i.kind() == crate::wire::icmp::kind::ECHO_REPLY {
                Some((key(i.echo_id(), 0), Rewrite::Plain))
            } else if i.is_error() {
                // The embedded packet went from the ENI to the remote: its source port is ours.
                let emb = i.data();
                let Some(ihl) = emb.first().map(|b| usize::from(b & 0x0f) * 4) else {
                    return Err(DropReason::MalformedIcmp);
                };
                if emb.len() < ihl + 8 || ihl < 20 {
                    return Err(DropReason::MalformedIcmp);
                }
                let e_proto = emb[9];
                let e_src = u32::from_be_bytes([emb[12], emb[13], emb[14], emb[15]]);
                let e_dst = u32::from_be_bytes([emb[16], emb[17], emb[18], emb[19]]);
                if e_src != dst {
                    // About a packet from an ENI, but addressed elsewhere: not ours.
                    return Ok(None);
                }
                let l4 = &emb[ihl..];
                let (nat_port, remote_port) = match e_proto {
                    protocol::TCP | protocol::UDP => (
                        u16::from_be_bytes([l4[0], l4[1]]),
                        u16::from_be_bytes([l4[2], l4[3]]),
                    ),
                    protocol::ICMP => (u16::from_be_bytes([l4[4], l4[5]]), 0),
                    _ => return Err(DropReason::UnsupportedProtocol),
                };
                Some((
                    ReverseKey {
                        eni: e_src,
                        proto: e_proto,
                        nat_port,
                        remote: e_dst,
                        remote_port,
                    },
                    Rewrite::IcmpError,
                ))
            } else {
                None
            }
        }
        _ => None,
    })
}

#[cfg(test)]
mod renegotiation_tests {
    use super::{asks_for_renegotiation, ASK_AGAIN_EVERY};
    use crate::crypto::data_channel::RENEGOTIATE_AT;

    #[test]
    fn a_session_past_the_threshold_asks_sixteen_times_before_the_wrap() {
        assert!(!asks_for_renegotiation(RENEGOTIATE_AT - 1));
        assert!(asks_for_renegotiation(RENEGOTIATE_AT));
        assert!(!asks_for_renegotiation(RENEGOTIATE_AT + 1));
        assert!(asks_for_renegotiation(RENEGOTIATE_AT + ASK_AGAIN_EVERY));
        let asks = (RENEGOTIATE_AT..=u32::MAX)
            .step_by(4096)
            .filter(|&p| asks_for_renegotiation(p))
            .count();
        assert_eq!(asks, 16);
    }
}

#[cfg(test)]
mod look_ahead_tests {
    use super::*;
    use crate::flow::FlowKey;
    use crate::mailbox::Mailbox;
    use crate::packet::HeapBuf;
    use crate::port::MemPort;
    use crate::testkit::{self, ip, lab};

    fn reply_to(nat_port: u16) -> HeapBuf {
        HeapBuf::from_slice(&testkit::eth_ipv4(
            lab::INSIDE_MAC,
            lab::HOST_MAC,
            &testkit::ipv4_udp(ip(lab::HOST_IP), 53, ip(lab::INSIDE_IP), nat_port, b"x"),
        ))
    }

    /// The look-ahead's guesses are hints only (`process` checks them), so a wrong one loses
    /// no packet, only the prefetches: this checks that they are right.
    #[test]
    fn the_look_ahead_names_each_replys_flow_and_owner() {
        #[allow(clippy::disallowed_methods)]
        let now = std::time::Instant::now();
        let ports = vec![MemPort::new(), MemPort::new()];
        let mut w = testkit::lab_worker(ports, testkit::lab_config(64, 16), Mailbox::new(16), now);
        let mut nat = Vec::new();
        for (src_port, owner) in [(5000, 7), (5001, 3)] {
            let key = FlowKey {
                client: ip(lab::CLIENT_VIP),
                proto: protocol::UDP,
                src_port,
                dst: ip(lab::HOST_IP),
                dst_port: 53,
            };
            let Ok(f) = w.flows.create(key, ip(lab::INSIDE_IP), 1, owner, 0) else {
                panic!("the flow table has room");
            };
            nat.push(f.nat_port);
        }
        let unknown = nat.iter().max().map_or(0, |p| p + 1);
        let frames = [reply_to(nat[0]), reply_to(unknown), reply_to(nat[1])];
        let mut hints = [Hint::default(); BURST_SIZE];
        w.warm_network_burst(&frames, &mut hints);
        for (i, owner) in [(0, 7), (2, 3)] {
            let key = ReverseKey {
                eni: ip(lab::INSIDE_IP),
                proto: protocol::UDP,
                nat_port: nat[i / 2],
                remote: ip(lab::HOST_IP),
                remote_port: 53,
            };
            let slot = w
                .flows
                .peek_reverse_hashed(&key, w.flows.hash_reverse(&key))
                .map(|(s, _)| s);
            assert!(slot.is_some());
            assert_eq!(hints[i].flow, slot, "frame {i}");
            assert_eq!(w.session_hint(&hints[i]), Some(owner), "frame {i}");
            assert_eq!(hints[i].reverse, Some(key), "frame {i}");
        }
        assert_eq!((hints[1].flow, w.session_hint(&hints[1])), (None, None));
    }
}
