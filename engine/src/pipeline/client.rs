//! Client to network: outer Ethernet/IPv4/UDP to a listener, then P_DATA_V2 (decrypt, replay,
//! keepalive and OCC), then the inner IPv4 packet (anti-spoofing, authorization, route,
//! security group), SNAT toward the target subnet, MSS clamp, TTL, and out of the target port.
//! Control-channel packets are punted to the control thread.

use crate::crypto::{classify_plaintext, Plaintext};
use crate::flow::{FlowKey, FlowTable, TcpSeen};
use crate::mailbox::Report;
use crate::packet::BURST_SIZE;
use crate::packet::{DropReason, PacketBuf};
use crate::pipeline::l2::IcmpError;
use crate::pipeline::{aead_len_hint, nat, Hint, CLIENT_FRAME_OVERHEAD};
use crate::port::Port;
use crate::rules::GroupMask;
use crate::session::Remote;
use crate::wire::ethernet::{ethertype, EthernetFrame, HEADER_LEN};
use crate::wire::icmp::IcmpPacket;
use crate::wire::ipv4::{protocol, Ipv4Packet};
use crate::wire::openvpn::{DataPacket, Opcode, PeerId};
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::{self, UdpPacket};
use crate::worker::{Listener, Worker};

/// Decrypted packets waiting for the forwarding stage at most (a burst from the client side
/// and packets handed over by other cores): more are forwarded first.
pub(crate) const DECRYPTED_MAX: usize = 2 * BURST_SIZE;

/// What the outer headers of a frame from the client side say.
#[derive(Debug, PartialEq, Eq)]
struct Outer {
    payload_start: usize,
    payload_len: usize,
    remote: Remote,
    local: Remote,
    endpoint: u16,
}

impl<P: Port> Worker<P> {
    /// A frame received on the outside port.
    pub(crate) fn handle_client_side(&mut self, port: u16, buf: P::Buf) {
        // The usual frame (no VLAN tag, no IPv4 options, not fragmented, to a listener) is read
        // at fixed offsets; anything else, or anything wrong, takes the general parse below,
        // which names the drop.
        let usual = usual_outer(
            buf.data(),
            buf.ipv4_checksum_verified(),
            &self.cfg.listeners,
        );
        let (buf, outer) = match usual {
            Some(o) => (buf, o),
            None => match self.outer_in_general(port, buf) {
                Some(taken) => taken,
                None => return,
            },
        };
        let payload = &buf.data()[outer.payload_start..outer.payload_start + outer.payload_len];
        let Some(&byte0) = payload.first() else {
            return self.drop_packet(buf, DropReason::MalformedOpenvpn);
        };
        let opcode = Opcode::of(byte0);
        if opcode != Opcode::DATA_V2 {
            return self.client_control(port, buf, &outer, opcode);
        }
        let Ok(peer) = DataPacket::new_checked(payload).map(|p| p.peer_id()) else {
            return self.drop_packet(buf, DropReason::MalformedOpenvpn);
        };
        let owner = self.sessions.core_of(peer);
        if owner != self.cfg.core {
            return self.hand_off(owner, port, buf);
        }
        let mut buf = buf;
        buf.trim_front(outer.payload_start);
        buf.truncate(outer.payload_len);
        self.client_data(buf, peer, &outer);
    }

    /// The outer headers of a frame `usual_outer` did not take: ARP, a ping, fragments, IPv4
    /// options, or a malformed frame. Returns the frame with its headers when it is for a
    /// listener; `None` when it was dealt with here (answered, reassembled or dropped under
    /// its reason).
    #[cold]
    #[inline(never)]
    fn outer_in_general(&mut self, port: u16, buf: P::Buf) -> Option<(P::Buf, Outer)> {
        let ethertype = match EthernetFrame::new_checked(buf.data()) {
            Ok(e) => e.ethertype(),
            Err(_) => {
                self.drop_packet(buf, DropReason::MalformedEthernet);
                return None;
            }
        };
        match ethertype {
            ethertype::ARP => {
                self.handle_arp(port, buf);
                return None;
            }
            ethertype::IPV4 => {}
            _ => {
                self.drop_packet(buf, DropReason::NotIpv4);
                return None;
            }
        }
        let port_ip = self.cfg.ports.get(usize::from(port)).map(|p| p.ip);
        let parsed = parse_outer(
            buf.data(),
            buf.ipv4_checksum_verified(),
            port_ip,
            &self.cfg.listeners,
        );
        match parsed {
            Ok(Some(o)) => return Some((buf, o)),
            Ok(None) => {
                // Addressed to the appliance but not to a listener: a ping, or nothing for us.
                if let Some(b) = self.answer_ping(port, buf) {
                    self.drop_packet(b, DropReason::NotForUs);
                }
            }
            // UDP to the appliance in fragments: the datagram comes back whole, or not at all.
            Err(DropReason::Ipv4Fragment) => self.reassemble(port, buf),
            Err(reason) => self.drop_packet(buf, reason),
        }
        None
    }

    /// A client's packet that is not P_DATA_V2 (`opcode`): control's, punted within the
    /// limits, or dropped. Cold and out of line: the data path never comes here.
    #[cold]
    #[inline(never)]
    fn client_control(&mut self, port: u16, buf: P::Buf, outer: &Outer, opcode: Opcode) {
        let payload = &buf.data()[outer.payload_start..outer.payload_start + outer.payload_len];
        // sluice always pushes a peer-id, so clients send P_DATA_V2 only (no DATA_V1);
        // control handles the rest of what a client sends, nothing else is punted.
        if !crate::punt::is_client_control(payload) {
            return self.drop_packet(buf, DropReason::MalformedOpenvpn);
        }
        // Only the AEAD covers a data packet; a control packet's reliability header (session
        // ids, acks, packet ids) is covered by nothing without tls-auth or tls-crypt, so its
        // UDP checksum is checked here, as a kernel's UDP stack would, before anything acts on
        // it (the usual parse reads the outer headers at fixed offsets and checks no more).
        if !udp_checksum_ok(buf.data(), outer) {
            return self.drop_packet(buf, DropReason::BadUdpChecksum);
        }
        if let Some(key) = self.cfg.cookies.as_deref() {
            // Control keeps no state before the echo of our session id: a first reset is
            // answered here, and only an address with a session, or a valid echo, reaches
            // control (a spray of spoofed control packets dies on the core).
            if opcode == Opcode::CONTROL_HARD_RESET_CLIENT_V2 {
                return self.answer_reset(port, buf, outer);
            }
            if !self.control_peers.contains(outer.remote)
                && !crate::cookie::is_valid_echo(
                    key,
                    u64::from(self.now_secs),
                    outer.remote,
                    outer.local,
                    payload,
                )
            {
                return self.drop_packet(buf, DropReason::UnknownControlPeer);
            }
        }
        if !self
            .punt_limiter
            .allow(outer.remote.ip, outer.remote.port, self.now_secs)
        {
            return self.drop_packet(buf, DropReason::PuntRateLimited);
        }
        let report = Report::Punted {
            payload: payload.to_vec(),
            remote: outer.remote,
            local: outer.local,
            endpoint: outer.endpoint,
        };
        self.report(report);
        self.consume(buf);
    }

    /// Answers a client's first hard reset from no state (`cookie`): the frame becomes the
    /// 26-byte server reset under our stateless session id, back to where it came from (the
    /// sender's MAC, from the port's, as a ping is answered). A flood of spoofed resets costs
    /// a MAC and a frame each and never reaches control; the echo of the id, when it comes,
    /// is punted. A reset from no single host (its source MAC or address) is not answered,
    /// `not_for_us`.
    fn answer_reset(&mut self, port: u16, mut buf: P::Buf, outer: &Outer) {
        if self.stopping {
            return self.drop_packet(buf, DropReason::Stopping);
        }
        let payload = &buf.data()[outer.payload_start..outer.payload_start + outer.payload_len];
        let Some(client) = crate::cookie::first_reset(payload) else {
            return self.drop_packet(buf, DropReason::MalformedOpenvpn);
        };
        let Some(key) = self.cfg.cookies.as_deref() else {
            return self.drop_packet(buf, DropReason::MalformedOpenvpn);
        };
        let Ok(to) = EthernetFrame::new_checked(buf.data()).map(|e| e.src()) else {
            return self.drop_packet(buf, DropReason::MalformedEthernet);
        };
        let Some(pc) = self.cfg.ports.get(usize::from(port)).copied() else {
            return self.drop_packet(buf, DropReason::NotForUs);
        };
        // The answer goes to the frame's source MAC and the datagram's source address: not
        // when either is no single host's (a group MAC; RFC 1122 §3.2.1.3: 0/8, 127/8, 224/3,
        // or the port's subnet's broadcast or network address), as a ping is not answered
        // (`answer_ping`): every host of the link would receive it, at the sender's choice.
        if crate::wire::ethernet::is_group(to) || !pc.is_one_host(outer.remote.ip) {
            return self.drop_packet(buf, DropReason::NotForUs);
        }
        let from = pc.mac;
        if !self.answer_limiter.allow(outer.remote.ip, 0, self.now_secs) {
            return self.drop_packet(buf, DropReason::ResetRateLimited);
        }
        let ours = key.session_id(u64::from(self.now_secs), outer.remote, outer.local, &client);
        const IP_AT: usize = HEADER_LEN;
        const ANSWER_AT: usize = IP_AT + udp::Ipv4UdpHeaders::LEN;
        const LEN: usize = ANSWER_AT + crate::cookie::ANSWER_LEN;
        let ident = self.take_ident();
        let have = buf.len();
        if have < LEN && buf.append(LEN - have).is_err() {
            return self.drop_packet(buf, DropReason::NoRoom);
        }
        buf.truncate(LEN);
        let Some(d) = buf.data_mut().first_chunk_mut::<LEN>() else {
            return self.drop_packet(buf, DropReason::NoRoom);
        };
        d[0..6].copy_from_slice(&to);
        d[6..12].copy_from_slice(&from);
        d[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        let (headers, answer) = d[IP_AT..].split_at_mut(udp::Ipv4UdpHeaders::LEN);
        if let (Ok(h), Ok(a)) = (headers.try_into(), answer.try_into()) {
            udp::Ipv4UdpHeaders::new(
                (outer.local.ip, outer.local.port),
                (outer.remote.ip, outer.remote.port),
            )
            .write(h, crate::cookie::ANSWER_LEN, ident);
            crate::cookie::write_answer(a, &ours, &client);
        }
        self.stats.resets_answered += 1;
        self.enqueue_tx(port, buf);
    }

    /// Looks ahead over a burst from the client side: requests each frame's peer-id index
    /// entry, then reads them into `hints` (the session slot each frame will most likely use),
    /// for the processing loop to prefetch sessions a few frames ahead. Reads only headers
    /// (already requested) and the index; anything unexpected is left to `process`.
    pub(crate) fn warm_client_burst(&self, frames: &[P::Buf], hints: &mut [Hint]) {
        let mut peers = [None::<PeerId>; BURST_SIZE];
        for (p, b) in peers.iter_mut().zip(frames) {
            *p = data_v2_peer_hint(b.data());
            if let Some(peer) = *p {
                self.sessions.prefetch_peer(peer);
            }
        }
        for ((h, peer), b) in hints.iter_mut().zip(peers).zip(frames) {
            h.session = peer.and_then(|p| self.sessions.slot_hint(p));
            h.aead_len = aead_len_hint(b.data().len(), CLIENT_FRAME_OVERHEAD);
        }
    }

    /// The forwarding stage of the packets decrypted so far, in passes over all of them so
    /// that each pass's memory requests are in flight together: the forward index line of
    /// every packet's flow; then the flow entry each index line names; then each packet is
    /// decided, translated and sent (`forward_inner`). With a million flows (tables far larger
    /// than the caches) requesting each flow entry only four packets ahead, as this did
    /// before, cost about 25 ticks a packet more at 64 bytes (bench/RESULTS.md, 2026-12-04).
    ///
    /// The index lines are requested here, not as each packet is decrypted: on a table larger
    /// than the caches each request waits for DRAM in a line-fill buffer, and while it does,
    /// the session lines the next packets' decryption needs wait behind it (measured: about
    /// 100 cycles a packet more in decryption with a million flows, more than this stage's own
    /// wait for its index lines).
    pub(crate) fn forward_decrypted(&mut self) {
        if self.decrypted.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.decrypted);
        // The slot each prefetch names is kept, so that forwarding looks there first instead
        // of probing the index again.
        for d in &mut batch {
            d.slot = self.flows.prefetch_forward_flow(d.hash);
        }
        for d in batch.drain(..) {
            self.forward_inner(d);
        }
        self.decrypted = batch;
    }

    /// Tells control that the session in slot `idx` floated to `remote`, once a second at
    /// most: a float in a second that already had one, or whose report found no room, is
    /// told a second later (`report_floats_again`, with the address the session then has).
    /// Control would otherwise keep the old address, and refuse the client's control packets
    /// from the new one. A float report cannot be lost, so the queue keeps room for it; a
    /// client that changes its source port with every packet (authenticated, so any user can)
    /// would otherwise fill that room with one report a packet.
    #[cold]
    #[inline(never)]
    fn report_float(&mut self, idx: u32, peer: PeerId, remote: Remote) {
        let now = self.now_secs;
        let this_second = self
            .sessions
            .get_mut(idx)
            .is_some_and(|s| s.float_reported == Some(now));
        if !this_second && self.report(Report::Floated { peer, remote }) {
            if let Some(s) = self.sessions.get_mut(idx) {
                s.float_reported = Some(now);
            }
            return;
        }
        if self.unreported_floats.len() < self.unreported_floats.capacity()
            && !self.unreported_floats.contains(&peer)
        {
            self.unreported_floats.push(peer);
        }
    }

    /// Tells control that the client of the session in slot `idx` said goodbye, once: every
    /// OCC exit it sends after that (a client may repeat it; one that floods them, each with a
    /// fresh packet-id, would otherwise fill the report queue, room kept for the reports
    /// control cannot lose: other sessions' ends and floats) is only counted `occ_exit`. Told
    /// again if the report found no room.
    #[cold]
    #[inline(never)]
    fn client_exited(&mut self, idx: u32, peer: PeerId) {
        if self.sessions.get_mut(idx).is_none_or(|s| s.exit_reported) {
            return;
        }
        let reported = self.report(Report::ClientExited { peer });
        if let Some(s) = self.sessions.get_mut(idx) {
            s.exit_reported = reported;
        }
    }

    /// A P_DATA_V2 packet (outer headers removed, as `outer` read them) of a session this core
    /// owns.
    fn client_data(&mut self, mut buf: P::Buf, peer: PeerId, outer: &Outer) {
        let from = outer.remote;
        let Some(idx) = self.sessions.index_of_peer(peer) else {
            return self.drop_packet(buf, DropReason::UnknownPeer);
        };
        let now = self.now_secs;
        let key_id = crate::wire::openvpn::KeyId::of(buf.data()[0]);
        let Some(s) = self.sessions.get_mut(idx) else {
            return self.drop_packet(buf, DropReason::UnknownPeer);
        };
        // The AEAD covers the payload, not the outer addresses: a packet from an address other
        // than the session's moves the session there once authenticated, so that address must
        // be the one its sender wrote, as far as the UDP checksum can tell (a kernel's UDP
        // stack, under OpenVPN, drops it otherwise). Only then is it checked.
        let floated = s.id().remote() != from;
        if floated && !udp_checksum_ok_under(&mut buf, outer) {
            return self.drop_packet(buf, DropReason::BadUdpChecksum);
        }
        let Some(key) = s.key_mut(key_id) else {
            return self.drop_packet(buf, DropReason::UnknownKeyId);
        };
        let t = crate::stages::stamp();
        let opened = key.open(&mut buf);
        self.stage_cycles.add_aead(t);
        if let Err(reason) = opened {
            return self.drop_packet(buf, reason);
        }
        // Authenticated: it may float to a new address (the reference §7.2).
        s.last_rx = now;
        if floated {
            s.float_to(from);
        }
        let (endpoint, client_ip) = (s.id().endpoint(), s.client_ip);
        if floated {
            self.report_float(idx, peer, from);
        }
        match classify_plaintext(buf.data()) {
            Plaintext::Ip => {}
            Plaintext::Keepalive => return self.drop_packet(buf, DropReason::Keepalive),
            Plaintext::OccExit => {
                self.client_exited(idx, peer);
                return self.drop_packet(buf, DropReason::OccExit);
            }
            Plaintext::OtherOcc => return self.drop_packet(buf, DropReason::OccOther),
        }
        let len = buf.len() as u64;
        if let Some(s) = self.sessions.get_mut(idx) {
            s.ingress_bytes += len;
            s.ingress_packets += 1;
        }
        if let Some(t) = self.endpoint_traffic.get_mut(usize::from(endpoint)) {
            t.ingress_bytes += len;
            t.ingress_packets += 1;
        }
        // The inner packet is checked now, while the plaintext is in L1; the forwarding stage
        // requests its flow's lines.
        let inner = match checked_inner(buf.data(), client_ip) {
            Ok(i) => i,
            Err(DropReason::Ipv4Fragment) => {
                // Its first fragment may still wait for the forwarding stage: that goes
                // first, and leaves the translation this one needs.
                self.forward_decrypted();
                return self.forward_later_fragment(buf);
            }
            Err(DropReason::UnsupportedProtocol) => {
                return self.forward_icmp_error(buf, idx, client_ip)
            }
            Err(DropReason::TtlExceeded) => return self.time_exceeded(buf, idx, endpoint),
            Err(reason) => return self.drop_packet(buf, reason),
        };
        buf.truncate(inner.total);
        let hash = self.flows.hash_forward(&inner.key);
        // The index line is requested now, while the rest of the burst is opened, rather than
        // when the forwarding stage starts: at a million flows it comes from DRAM.
        self.flows.prefetch_forward_bucket(hash);
        if self.decrypted.len() >= DECRYPTED_MAX {
            self.forward_decrypted();
        }
        self.decrypted.push(Decrypted {
            buf,
            owner: idx,
            key: inner.key,
            tcp: inner.tcp,
            first_fragment: inner.first_fragment,
            hash,
            slot: None,
        });
    }

    /// An ICMP error from a client about a packet of one of its flows (a port unreachable
    /// for a VPC host's datagram, a time exceeded): translated as the flow is (RFC 5508: the
    /// source to the ENI; in the quoted header the destination and its port or echo id) and
    /// sent to the flow's host. Anything else that is not TCP, UDP or an echo stays
    /// `unsupported_protocol`; an error about no flow of this session, or addressed to another
    /// than the flow's remote, is `no_flow`; one whose ICMP checksum fails, `malformed_icmp`.
    #[cold]
    fn forward_icmp_error(&mut self, mut buf: P::Buf, owner: u32, client_ip: u32) {
        let (key, total) = match client_icmp_error(buf.data(), client_ip) {
            Ok(k) => k,
            Err(reason) => return self.drop_packet(buf, reason),
        };
        let hash = self.flows.hash_forward(&key);
        let epoch = self.rules_epoch;
        let Some((eni, nat_port, port, next_hop)) = self
            .flows
            .find_hashed(&key, hash)
            .map(|(_, f)| f)
            // Only a flow of this session, decided under the rules in force (errors in the
            // moments after a reload, before the flow's next packet decides again, are lost).
            .filter(|f| f.owner == owner && f.decided == epoch)
            .map(|f| (f.eni, f.nat_port, f.port, f.next_hop))
        else {
            return self.drop_packet(buf, DropReason::NoFlow);
        };
        buf.truncate(total);
        if !nat::translate_icmp_error(buf.data_mut(), false, eni, nat_port) {
            // Its ICMP checksum fails: dropped, not repaired (RFC 5508 REQ-3).
            return self.drop_packet(buf, DropReason::MalformedIcmp);
        }
        self.output_fitting(port, next_hop, buf);
    }

    /// The first fragment of a client's datagram, translated: it leaves with an identification
    /// of the core's, and what its later fragments need is kept (`fragment`).
    #[cold]
    #[inline(never)]
    fn first_fragment_out(
        &mut self,
        buf: &mut P::Buf,
        datagram: crate::wire::ipv4::DatagramId,
        (eni, port, hop): (u32, u16, u32),
    ) {
        let ident = self.take_ident();
        if let Ok(mut ip) = Ipv4Packet::new_checked(buf.data_mut()) {
            ip.set_ident(ident);
        }
        self.fragments_out
            .insert(datagram, (eni, port, hop, ident), self.now_secs);
    }

    /// The appliance's own address on an endpoint's client side: the first of its client CIDR
    /// (the route-gateway pushed to clients, OpenVPN's server address in the tunnel).
    fn tunnel_gateway(&self, endpoint: u16) -> Option<u32> {
        self.rules
            .endpoint(usize::from(endpoint))
            .map(|t| t.client_cidr.addr().wrapping_add(1))
    }

    /// A client's packet whose TTL ends here (a traceroute's first probe): answered, as a
    /// router does, with an ICMP time exceeded from the tunnel's gateway address
    /// (`icmp_error_to_client`). Otherwise the drop stays `ttl_exceeded`. A packet to the
    /// tunnel's gateway address itself is not forwarded, so its TTL does not matter (RFC 1812
    /// §5.3.1): it goes where any other packet to that address goes (`for_tunnel_gateway`);
    /// nor is one to an inside address of the appliance's own (`ttl_ends_at_own_address`).
    /// Checked only here, off the path every packet takes.
    #[cold]
    #[inline(never)]
    fn time_exceeded(&mut self, buf: P::Buf, owner: u32, endpoint: u16) {
        let gateway = self.tunnel_gateway(endpoint);
        let dst = buf
            .data()
            .get(16..20)
            .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
        if gateway.is_some() && dst == gateway {
            return self.for_tunnel_gateway(buf, owner);
        }
        let Err(buf) = self.ttl_ends_at_own_address(buf, owner, endpoint) else {
            return;
        };
        let error = IcmpError::TIME_EXCEEDED;
        self.icmp_error_to_client(buf, owner, endpoint, error, DropReason::TtlExceeded);
    }

    /// `time_exceeded` for a packet to one of the appliance's own inside addresses (the port's,
    /// or an ENI there) that its route leaves by: such a packet is not forwarded either, so it
    /// is answered or refused as `forward_deciding` does with any TTL (a ping answered, the
    /// rest `not_for_us`; an unauthorized one dropped under the rule table's reason). Returns
    /// the packet when it is not one, or its transport header is not readable.
    fn ttl_ends_at_own_address(
        &mut self,
        buf: P::Buf,
        owner: u32,
        endpoint: u16,
    ) -> Result<(), P::Buf> {
        let key = {
            let Ok(ip) = Ipv4Packet::new_checked(buf.data()) else {
                return Err(buf);
            };
            let dst = u32::from_be_bytes(ip.dst());
            let ours = (0..self.cfg.ports.len())
                .filter_map(|p| u16::try_from(p).ok())
                .any(|p| self.is_port_address(p, dst));
            let l4 = match ip.is_fragment() {
                false => l4_of(&ip),
                true => l4_of_first_fragment(&ip),
            };
            let (true, Ok((src_port, dst_port, _))) = (ours, l4) else {
                return Err(buf);
            };
            FlowKey {
                client: u32::from_be_bytes(ip.src()),
                proto: ip.protocol(),
                src_port,
                dst,
                dst_port,
            }
        };
        let Some((_, groups)) = self.endpoint_and_groups(owner) else {
            return Err(buf);
        };
        match self.decide_flow(endpoint, &groups, &key) {
            Err(reason) => self.drop_packet(buf, reason),
            Ok((port, _, _)) if self.is_port_address(port, key.dst) => {
                self.for_tunnel_gateway(buf, owner)
            }
            Ok(_) => return Err(buf),
        }
        Ok(())
    }

    /// Answers a client's packet (decrypted, of the session in slot `owner`, a client of
    /// `endpoint`) with the ICMP `error` from the tunnel's gateway address, quoting its header
    /// and first 8 bytes as the client sent them (RFC 792, RFC 1812 §4.3.2), sealed for the
    /// client, within a budget per client address; never about an ICMP error, a later fragment
    /// or a packet to a broadcast address. The packet is dropped under `refused` when no error
    /// may be sent.
    #[cold]
    #[inline(never)]
    fn icmp_error_to_client(
        &mut self,
        mut buf: P::Buf,
        owner: u32,
        endpoint: u16,
        error: IcmpError,
        refused: DropReason,
    ) {
        let (Some((client, quoted)), Some(gateway)) = (
            super::l2::icmp_error_about(buf.data()),
            self.tunnel_gateway(endpoint),
        ) else {
            return self.drop_packet(buf, refused);
        };
        // Nor about one to a subnet's broadcast address (RFC 1812 §4.3.2.7), which only the
        // endpoint's tables tell apart from a host's.
        let dst = buf.data().get(16..20).and_then(|d| d.first_chunk::<4>());
        if dst.is_some_and(|d| {
            self.rules
                .is_broadcast_for(usize::from(endpoint), u32::from_be_bytes(*d))
        }) {
            return self.drop_packet(buf, refused);
        }
        if !self.icmp_limiter.allow(client, 0, self.now_secs) {
            return self.drop_packet(buf, refused);
        }
        if super::l2::write_icmp_error(&mut buf, error, quoted, gateway, client).is_err() {
            return self.drop_packet(buf, DropReason::NoRoom);
        }
        self.stats.icmp_errors_sent += 1;
        self.encrypt_to_client(buf, owner);
    }

    /// A client's packet to the tunnel's gateway address: an echo request is answered (a
    /// client's check that the tunnel is up); anything else is `not_for_us`. Never a flow.
    #[cold]
    #[inline(never)]
    fn for_tunnel_gateway(&mut self, mut buf: P::Buf, owner: u32) {
        let stamp = super::l2::ip_timestamp(self.elapsed);
        if !super::l2::echo_reply_in_place(buf.data_mut(), stamp) {
            return self.drop_packet(buf, DropReason::NotForUs);
        }
        self.encrypt_to_client(buf, owner);
    }

    /// A checked inner packet (`checked_inner`): decides, translates and sends it.
    fn forward_inner(&mut self, d: Decrypted<P::Buf>) {
        // A flow remembers the decision of the rule table it was last decided under: the
        // decision is a function of the table, the endpoint and groups (fixed for the life of
        // the session that owns the flow) and the flow's own tuple, so it only has to be made
        // again after a table swap, or for a packet of another session than the owner. Every
        // other packet of a flow takes this path.
        let (now, epoch) = (self.now_secs, self.rules_epoch);
        let found = self
            .flows
            .find_hashed_at(&d.key, d.hash, d.slot)
            .map(|(slot, f)| (slot, f.decided == epoch && f.owner == d.owner));
        let decided = found.and_then(|(slot, decided)| decided.then_some(slot));
        let Some(flow) = decided.and_then(|slot| self.flows.refresh(slot, now)) else {
            return self.forward_deciding(d, found.map(|(slot, _)| slot));
        };
        if FlowTable::observe_client_tcp(flow, d.tcp) {
            FlowTable::client_control(flow, d.tcp.flags, d.buf.data());
        }
        let (eni, nat_port, port, next_hop) = (flow.eni, flow.nat_port, flow.port, flow.next_hop);
        self.send_translated(d, eni, nat_port, port, next_hop);
    }

    /// `forward_inner` for a packet whose flow has no decision under the current rule table
    /// (a new flow, the first packet after a table swap, or another session's packet; `found`:
    /// its flow's slot, if it has one): the rule table decides, and the flow is made or
    /// updated. Cold and out of line, so that the decision's code stays out of the path every
    /// other packet takes.
    #[cold]
    #[inline(never)]
    fn forward_deciding(&mut self, d: Decrypted<P::Buf>, found: Option<u32>) {
        let (now, epoch, owner, key) = (self.now_secs, self.rules_epoch, d.owner, d.key);
        // The session's endpoint and groups, read only now that they are needed (the session
        // lives at least until the end of this burst).
        let Some((endpoint, groups)) = self.endpoint_and_groups(owner) else {
            return self.drop_packet(d.buf, DropReason::UnknownPeer);
        };
        // The appliance's own tunnel address is never a destination behind it (and, with no
        // flow made, every packet to it comes this way).
        if self.tunnel_gateway(endpoint) == Some(key.dst) {
            return self.for_tunnel_gateway(d.buf, owner);
        }
        // Nor is a broadcast or multicast address, or a martian one, whatever the routes say: a
        // full tunnel's routes cover them, and clients send their discovery traffic there.
        let ep = usize::from(endpoint);
        if !super::l2::is_one_host(key.dst) || self.rules.is_broadcast_for(ep, key.dst) {
            return self.drop_packet(d.buf, DropReason::DestinationNotAHost);
        }
        // Nor is another client's address (the endpoint's client CIDR, which overlaps neither
        // the VPC nor a route): sluice carries nothing between clients, and SNATed toward the
        // VPC, such a packet would reach no client.
        if self
            .rules
            .endpoint(ep)
            .is_some_and(|t| t.client_cidr.contains(key.dst))
        {
            return self.drop_packet(d.buf, DropReason::ClientToClient);
        }
        let (target_port, next_hop, eni) = match self.decide_flow(endpoint, &groups, &key) {
            Ok(c) => c,
            Err(reason) => return self.drop_packet(d.buf, reason),
        };
        // Nor is an address of the appliance's own on the port the route leaves by (the port's,
        // an ENI there): routed on, it would take a flow and an ARP request for our own
        // address, and wait out the resolution to be dropped `arp_unresolved`. Authorized and
        // routed, it is treated as the gateway's: a ping answered, the rest `not_for_us`.
        if self.is_port_address(target_port, key.dst) {
            return self.for_tunnel_gateway(d.buf, owner);
        }
        // Nor is that port's subnet's broadcast or network address a host to forward to: routed
        // on, it took a flow and an ARP request for an address no host has, and waited out the
        // resolution in the queue.
        if self
            .cfg
            .ports
            .get(usize::from(target_port))
            .is_some_and(|p| p.is_subnet_broadcast(key.dst))
        {
            return self.drop_packet(d.buf, DropReason::DestinationNotAHost);
        }
        // A flow whose route moved to another ENI (a reload) has a stale translation: it makes
        // way for a new one (its port and reverse entry go with it; return traffic to the old
        // translation is no_flow from now on). So does a flow of another session: one that
        // ended, its flows not all removed yet (`FlowTable::retire_owner`), whose address
        // this session now has; its replies would go to the ended session's slot.
        let kept = found.filter(|&slot| {
            self.flows
                .get(slot)
                .is_some_and(|f| f.eni == eni && f.owner == owner)
        });
        if let (Some(stale), None) = (found, kept) {
            self.flows.remove(stale);
        }
        let flow = match kept.and_then(|slot| self.flows.refresh(slot, now)) {
            Some(f) => f,
            None => match self.flows.create(key, eni, target_port, owner, now) {
                Ok(f) => f,
                Err(reason) => return self.drop_packet(d.buf, reason),
            },
        };
        flow.port = target_port;
        flow.next_hop = next_hop;
        flow.decided = epoch;
        if FlowTable::observe_client_tcp(flow, d.tcp) {
            FlowTable::client_control(flow, d.tcp.flags, d.buf.data());
        }
        let nat_port = flow.nat_port;
        self.send_translated(d, eni, nat_port, target_port, next_hop);
    }

    /// The endpoint and groups of the session in slot `owner` (what a flow's decision depends
    /// on besides the rule table and the flow's tuple).
    pub(super) fn endpoint_and_groups(&mut self, owner: u32) -> Option<(u16, GroupMask)> {
        self.sessions
            .get_mut(owner)
            .map(|s| (s.id().endpoint(), s.groups))
    }

    /// The forwarding decision of the installed rule table for flow `key` of a client of
    /// `endpoint` with `groups` (authorization, route, security group): the egress port, the
    /// next hop and the ENI address. Both directions decide a flow with it, so that they agree.
    #[inline]
    pub(super) fn decide_flow(
        &self,
        endpoint: u16,
        groups: &GroupMask,
        key: &FlowKey,
    ) -> Result<(u16, u32, u32), DropReason> {
        let route_hash = flow_hash(key.client, key.dst, key.src_port, key.dst_port, key.proto);
        self.rules
            .decide(
                usize::from(endpoint),
                groups,
                key.dst,
                key.proto,
                key.dst_port,
                route_hash,
            )
            .map(|c| (c.target.port, c.next_hop, c.target.eni_ip))
    }

    /// Translates a client's packet to `eni` and `nat_port` and sends it on `port` toward
    /// `next_hop`. One longer than the port's MTU takes `send_translated_too_long`.
    #[inline(always)]
    fn send_translated(
        &mut self,
        d: Decrypted<P::Buf>,
        eni: u32,
        nat_port: u16,
        port: u16,
        next_hop: u32,
    ) {
        if d.buf.len() > self.port_mtu(port) {
            return self.send_translated_too_long(d, eni, nat_port, port, next_hop);
        }
        let (buf, datagram) = self.translate(d, eni, nat_port, port, next_hop);
        self.output(port, next_hop, buf);
        // Its later fragments that came before it follow it (in this branch, after the send,
        // interleaved ticks read 5-13 a packet fewer at 64 B than releasing them with the
        // entry, as the target-subnet side does).
        if let Some(id) = datagram {
            self.release_early(true, id);
        }
    }

    /// `send_translated` for a packet longer than the MTU of `port` (a client that raised its
    /// `tun-mtu`, an inside port's MTU below the tunnel's): with DF set, it is answered with an
    /// ICMP fragmentation needed carrying the port's MTU (RFC 1191, RFC 1812 §5.2.6), within
    /// the client's ICMP budget (over it, or about an ICMP error, it is dropped `too_big`);
    /// with DF clear, it is translated and leaves in fragments (`output_in_fragments`).
    #[cold]
    #[inline(never)]
    fn send_translated_too_long(
        &mut self,
        d: Decrypted<P::Buf>,
        eni: u32,
        nat_port: u16,
        port: u16,
        next_hop: u32,
    ) {
        let mtu = self.port_mtu(port);
        let df = Ipv4Packet::new_checked(d.buf.data()).is_ok_and(|ip| ip.dont_fragment());
        if df {
            let owner = d.owner;
            let Some((endpoint, _)) = self.endpoint_and_groups(owner) else {
                return self.drop_packet(d.buf, DropReason::UnknownPeer);
            };
            let error = IcmpError::fragmentation_needed(mtu as u16);
            return self.icmp_error_to_client(d.buf, owner, endpoint, error, DropReason::TooBig);
        }
        let (buf, datagram) = self.translate(d, eni, nat_port, port, next_hop);
        self.output_in_fragments(port, next_hop, buf, mtu);
        if let Some(id) = datagram {
            self.release_early(true, id);
        }
    }

    /// Translates a client's packet to `eni` and `nat_port`, toward `next_hop` on `port`; the
    /// first fragment of a datagram also leaves what its later fragments need, and its datagram
    /// is returned (its later fragments held for it go after it).
    #[inline(always)]
    fn translate(
        &mut self,
        d: Decrypted<P::Buf>,
        eni: u32,
        nat_port: u16,
        port: u16,
        next_hop: u32,
    ) -> (P::Buf, Option<crate::wire::ipv4::DatagramId>) {
        let Decrypted {
            mut buf,
            key,
            first_fragment,
            ..
        } = d;
        nat::rewrite_source(buf.data_mut(), eni, nat_port, self.cfg.mss_clamp);
        let datagram = first_fragment.map(|ident| key.datagram(ident));
        if let Some(id) = datagram {
            self.first_fragment_out(&mut buf, id, (eni, port, next_hop));
        }
        (buf, datagram)
    }
}

/// Ethernet, IPv4 and UDP headers of the usual frame from a client, without VLAN tag or IPv4
/// options: 42 bytes.
const USUAL_OUTER_LEN: usize = HEADER_LEN + 20 + udp::HEADER_LEN;

/// The outer headers of a frame to a listener in their usual form (IPv4 without options, not
/// a fragment, UDP), read at fixed offsets from one 42-byte view, with every check the general
/// parse (`parse_outer`) makes: where this returns headers, so would it. `None` is no verdict:
/// the frame takes the general parse, which names what is wrong or deals with what is
/// unusual. The general parse spent about a hundred instructions a packet, many of them in
/// bounds checks and second reads of the same fields; this read is about 48 fewer (callgrind,
/// bench/RESULTS.md, thirteenth session).
#[inline(always)]
fn usual_outer(frame: &[u8], hw_checked: bool, listeners: &[Listener]) -> Option<Outer> {
    let h: &[u8; USUAL_OUTER_LEN] = frame.first_chunk()?;
    let be16 = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    const IP: usize = HEADER_LEN;
    const UDP: usize = IP + 20;
    // IPv4 without options, UDP, neither a later fragment nor one with more to come.
    if be16(12) != ethertype::IPV4 || h[IP] != 0x45 || h[IP + 9] != protocol::UDP {
        return None;
    }
    if be16(IP + 6) & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(be16(IP + 2));
    let udp_len = usize::from(be16(UDP + 4));
    if total > frame.len() - HEADER_LEN || udp_len < udp::HEADER_LEN || udp_len + 20 > total {
        return None;
    }
    if !hw_checked
        && !h[IP..]
            .first_chunk()
            .is_some_and(crate::wire::ipv4::header_checksum_ok)
    {
        return None;
    }
    let (dst, dst_port) = (be32(IP + 16), be16(UDP + 2));
    let l = listeners
        .iter()
        .find(|l| l.ip == dst && l.port == dst_port)?;
    Some(Outer {
        payload_start: USUAL_OUTER_LEN,
        payload_len: udp_len - udp::HEADER_LEN,
        remote: Remote {
            ip: be32(IP + 12),
            port: be16(UDP),
        },
        local: Remote {
            ip: dst,
            port: l.port,
        },
        endpoint: l.endpoint,
    })
}

/// Whether the UDP checksum of the datagram `outer` was read from (the frame `frame`) verifies,
/// or is absent (0: optional over IPv4, RFC 768).
fn udp_checksum_ok(frame: &[u8], outer: &Outer) -> bool {
    let Some(start) = outer.payload_start.checked_sub(udp::HEADER_LEN) else {
        return false;
    };
    frame
        .get(start..outer.payload_start + outer.payload_len)
        .and_then(|d| UdpPacket::new_checked(d).ok())
        .is_some_and(|u| {
            u.verify_checksum(outer.remote.ip.to_be_bytes(), outer.local.ip.to_be_bytes())
        })
}

/// `udp_checksum_ok` for a datagram whose outer headers (`outer`) were trimmed off `buf`:
/// they are still in front of it, and are trimmed off again.
#[cold]
#[inline(never)]
fn udp_checksum_ok_under<B: PacketBuf>(buf: &mut B, outer: &Outer) -> bool {
    if buf.prepend(outer.payload_start).is_err() {
        return false;
    }
    let ok = udp_checksum_ok(buf.data(), outer);
    buf.trim_front(outer.payload_start);
    ok
}

/// Checks Ethernet (as IPv4), IPv4 and UDP of any form and finds the listener; `Ok(None)` for
/// IPv4 to the appliance (`port_ip`, the receiving port's address, or a listener's) that is
/// not OpenVPN.
fn parse_outer(
    frame: &[u8],
    hw_checked: bool,
    port_ip: Option<u32>,
    listeners: &[Listener],
) -> Result<Option<Outer>, DropReason> {
    let ip = frame
        .get(HEADER_LEN..)
        .and_then(|b| Ipv4Packet::new_checked(b).ok())
        .ok_or(DropReason::MalformedIpv4)?;
    if !hw_checked && !ip.verify_checksum() {
        return Err(DropReason::MalformedIpv4);
    }
    let dst = u32::from_be_bytes(ip.dst());
    let is_ours = port_ip == Some(dst) || listeners.iter().any(|l| l.ip == dst);
    if !is_ours {
        return Err(DropReason::NotForUs);
    }
    if ip.protocol() != protocol::UDP {
        return Ok(None);
    }
    if ip.is_fragment() {
        return Err(DropReason::Ipv4Fragment);
    }
    let u = UdpPacket::new_checked(ip.payload()).map_err(|_| DropReason::MalformedUdp)?;
    let Some(l) = listeners
        .iter()
        .find(|l| l.ip == dst && l.port == u.dst_port())
    else {
        return Ok(None);
    };
    Ok(Some(Outer {
        payload_start: HEADER_LEN + ip.header_len() + udp::HEADER_LEN,
        payload_len: u.len() - udp::HEADER_LEN,
        remote: Remote {
            ip: u32::from_be_bytes(ip.src()),
            port: u.src_port(),
        },
        local: Remote {
            ip: dst,
            port: l.port,
        },
        endpoint: l.endpoint,
    }))
}

/// The peer-id of a frame that looks like P_DATA_V2 over IPv4/UDP (a look-ahead: `process`
/// checks everything, and `index_of_peer` checks the slot this names). Reads the few bytes
/// at their offsets without building views: any answer is safe, a wrong one costs a lookup.
fn data_v2_peer_hint(frame: &[u8]) -> Option<PeerId> {
    let ip = frame.get(HEADER_LEN..HEADER_LEN + 20)?;
    if frame[12..14] != ethertype::IPV4.to_be_bytes() || ip[0] >> 4 != 4 {
        return None;
    }
    if ip[9] != protocol::UDP {
        return None;
    }
    let at = HEADER_LEN + usize::from(ip[0] & 0x0f) * 4 + udp::HEADER_LEN;
    let &[op, a, b, c] = frame.get(at..at + 4)? else {
        return None;
    };
    (Opcode::of(op) == Opcode::DATA_V2).then_some(PeerId(u32::from_be_bytes([0, a, b, c])))
}

/// Source port (or echo id), destination port and what flow tracking reads of a TCP header
/// (flags, ACK, window; zero for other protocols) of an inner packet (inlined into
/// `checked_inner`, though the first-fragment path calls it too).
#[inline(always)]
fn l4_of<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>) -> Result<(u16, u16, TcpSeen), DropReason> {
    match ip.protocol() {
        protocol::TCP => TcpPacket::new_checked(ip.payload())
            .map(|t| (t.src_port(), t.dst_port(), TcpSeen::of(&t)))
            .map_err(|_| DropReason::MalformedTcp),
        protocol::UDP => UdpPacket::new_checked(ip.payload())
            .map(|u| (u.src_port(), u.dst_port(), TcpSeen::default()))
            .map_err(|_| DropReason::MalformedUdp),
        protocol::ICMP => match IcmpPacket::new_checked(ip.payload()) {
            Ok(i) if i.is_echo() => Ok((i.echo_id(), 0, TcpSeen::default())),
            Ok(_) => Err(DropReason::UnsupportedProtocol),
            Err(_) => Err(DropReason::MalformedIcmp),
        },
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

/// What forwarding needs of a decrypted inner packet.
struct Inner {
    key: FlowKey,
    tcp: TcpSeen,
    /// The first fragment of a datagram: its identification.
    first_fragment: Option<u16>,
    /// The IPv4 total length (the plaintext may carry padding after it).
    total: usize,
}

/// Checks a decrypted inner packet: IPv4 (not IPv6, well formed, its header checksum right),
/// from the client's own address, not a fragment, TTL above 1, a TCP/UDP/ICMP echo header.
// Inlined, so that the result stays in registers: 9-10 ticks a packet fewer (bench/RESULTS.md,
// 2026-12-04 ninth session). Returned through memory, its fields were stored one by one and
// read straight back, wider, into `Decrypted`; such a load cannot be forwarded from the
// narrower stores still in flight and waits for them to reach L1 (the likely cause).
#[inline(always)]
fn checked_inner(data: &[u8], client_ip: u32) -> Result<Inner, DropReason> {
    if data.first().is_some_and(|b| b >> 4 == 6) {
        return Err(DropReason::NotIpv4);
    }
    let ip = Ipv4Packet::new_checked(data).map_err(|_| DropReason::MalformedIpv4)?;
    // A header with a bad checksum is discarded (RFC 1812 §5.2.2), not forwarded with a
    // checksum the rewrite would carry along. Without options, one fold of five words.
    if !ip.verify_checksum() {
        return Err(DropReason::MalformedIpv4);
    }
    if u32::from_be_bytes(ip.src()) != client_ip {
        return Err(DropReason::SourceSpoofed);
    }
    let first_fragment = if ip.is_fragment() {
        // The first of a datagram's fragments is translated with its flow; the others by
        // what it left (`forward_later_fragment`).
        if ip.frag_offset() != 0 {
            return Err(DropReason::Ipv4Fragment);
        }
        Some(ip.ident())
    } else {
        None
    };
    if ip.ttl() <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let (src_port, dst_port, tcp) = match first_fragment {
        None => l4_of(&ip)?,
        Some(_) => l4_of_first_fragment(&ip)?,
    };
    Ok(Inner {
        key: FlowKey {
            client: client_ip,
            proto: ip.protocol(),
            src_port,
            dst: u32::from_be_bytes(ip.dst()),
            dst_port,
        },
        tcp,
        first_fragment,
        total: ip.total_len(),
    })
}

/// The flow an ICMP error from a client is about, and the packet's length: a whole (not
/// fragmented) ICMP error from the client's address to the sender of the packet it quotes, a
/// packet to the client (TCP or UDP with its ports, or an ICMP echo with its id).
fn client_icmp_error(data: &[u8], client_ip: u32) -> Result<(FlowKey, usize), DropReason> {
    let ip = Ipv4Packet::new_checked(data).map_err(|_| DropReason::MalformedIpv4)?;
    if ip.protocol() != protocol::ICMP {
        return Err(DropReason::UnsupportedProtocol);
    }
    let i = IcmpPacket::new_checked(ip.payload()).map_err(|_| DropReason::MalformedIcmp)?;
    if !i.is_error() {
        return Err(DropReason::UnsupportedProtocol);
    }
    if ip.is_fragment() {
        return Err(DropReason::Ipv4Fragment);
    }
    let emb = i.data();
    let ihl = usize::from(emb.first().ok_or(DropReason::MalformedIcmp)? & 0x0f) * 4;
    if ihl < 20 || emb.len() < ihl + 8 {
        return Err(DropReason::MalformedIcmp);
    }
    let quoted_src = u32::from_be_bytes([emb[12], emb[13], emb[14], emb[15]]);
    let quoted_dst = u32::from_be_bytes([emb[16], emb[17], emb[18], emb[19]]);
    if quoted_dst != client_ip {
        // About a packet the client did not receive from us.
        return Err(DropReason::NoFlow);
    }
    if u32::from_be_bytes(ip.dst()) != quoted_src {
        // An error goes back to the sender of the packet it quotes (the flow's remote); to any
        // other address it is no error about that flow, and would reach a destination the
        // client's rules may not grant (the flow authorized only its remote).
        return Err(DropReason::NoFlow);
    }
    let l4 = &emb[ihl..];
    let word = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let (src_port, dst_port) = match emb[9] {
        // The quoted packet came from the remote: its destination port is the client's.
        protocol::TCP | protocol::UDP => (word(2), word(0)),
        protocol::ICMP => (word(4), 0),
        _ => return Err(DropReason::UnsupportedProtocol),
    };
    let key = FlowKey {
        client: client_ip,
        proto: emb[9],
        src_port,
        dst: quoted_src,
        dst_port,
    };
    Ok((key, ip.total_len()))
}

/// `l4_of` for the first fragment of a datagram: the same header, but a UDP length (the whole
/// datagram's) longer than the fragment.
#[cold]
fn l4_of_first_fragment<T: AsRef<[u8]>>(
    ip: &Ipv4Packet<T>,
) -> Result<(u16, u16, TcpSeen), DropReason> {
    let l4 = ip.payload();
    let word = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    match ip.protocol() {
        protocol::UDP if l4.len() >= udp::HEADER_LEN && word(4) >= 8 => {
            Ok((word(0), word(2), TcpSeen::default()))
        }
        protocol::UDP => Err(DropReason::MalformedUdp),
        _ => l4_of(ip),
    }
}

/// A checked inner packet waiting for the burst's forwarding stage, with its session's slot
/// (the session's endpoint and groups are read from there only when a flow has to decide).
pub(crate) struct Decrypted<B> {
    buf: B,
    owner: u32,
    key: FlowKey,
    tcp: TcpSeen,
    first_fragment: Option<u16>,
    /// `key`'s forward hash (its index line has been requested).
    hash: u64,
    /// The slot of the flow its prefetch requested: a guess, checked against `key`.
    slot: Option<u32>,
}

/// A cheap, well-mixed hash of a 5-tuple (picks among equal routes).
#[inline]
pub(crate) fn flow_hash(a: u32, b: u32, sp: u16, dp: u16, proto: u8) -> u32 {
    let mut h = u64::from(a) << 32 | u64::from(b);
    h ^= (u64::from(sp) << 24) | (u64::from(dp) << 8) | u64::from(proto);
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Cipher;
    use crate::testkit::{self, ip, lab};
    use crate::wire::openvpn::KeyId;
    use proptest::prelude::*;

    #[test]
    fn peer_hint_names_the_peer_of_a_data_frame_only() {
        let (_, client) = testkit::key_pair(Cipher::Aes256Gcm, 3);
        let mut c = testkit::Client::new(PeerId(0x00ab_cdef), KeyId(0), &client);
        let frame = c.frame(&testkit::ipv4_udp(
            ip(lab::CLIENT_VIP),
            1,
            ip(lab::HOST_IP),
            2,
            b"x",
        ));
        assert_eq!(data_v2_peer_hint(&frame), Some(PeerId(0x00ab_cdef)));
        let mut control = frame.clone();
        let at = HEADER_LEN + 20 + udp::HEADER_LEN;
        control[at] = 0x38; // P_ACK_V1, key_id 0
        assert_eq!(data_v2_peer_hint(&control), None);
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
        assert_eq!(data_v2_peer_hint(&arp), None);
        assert_eq!(data_v2_peer_hint(&frame[..at + 3]), None);
    }

    /// The listeners of the outer-header tests: the lab's, after a decoy on the same address.
    fn listeners() -> [Listener; 2] {
        [
            Listener {
                ip: ip(lab::OUTSIDE_IP),
                port: 1194,
                endpoint: 7,
            },
            Listener {
                ip: ip(lab::OUTSIDE_IP),
                port: lab::VPN_PORT,
                endpoint: 3,
            },
        ]
    }

    fn client_frame(payload: &[u8]) -> Vec<u8> {
        let (_, client) = testkit::key_pair(Cipher::Aes256Gcm, 5);
        let mut c = testkit::Client::new(PeerId(9), KeyId(0), &client);
        c.frame(&testkit::ipv4_udp(
            ip(lab::CLIENT_VIP),
            1,
            ip(lab::HOST_IP),
            2,
            payload,
        ))
    }

    #[test]
    fn usual_outer_reads_a_client_frame_as_the_general_parse_does() {
        let frame = client_frame(b"hello");
        let fast = usual_outer(&frame, false, &listeners());
        // The lab client's addresses, as its session knows them.
        let lab = testkit::lab_session(PeerId(9), 0, crate::rules::GroupMask::EMPTY);
        let expected = Outer {
            payload_start: USUAL_OUTER_LEN,
            payload_len: frame.len() - USUAL_OUTER_LEN,
            remote: lab.remote,
            local: lab.local,
            endpoint: 3,
        };
        assert_eq!(fast, Some(expected));
        assert_eq!(
            parse_outer(&frame, false, None, &listeners()),
            Ok(usual_outer(&frame, false, &listeners()))
        );
        // Each thing it does not take is left to the general parse.
        let mut bad_sum = frame.clone();
        bad_sum[HEADER_LEN + 10] ^= 1;
        assert_eq!(usual_outer(&bad_sum, false, &listeners()), None);
        assert!(usual_outer(&bad_sum, true, &listeners()).is_some());
        let mut fragment = frame.clone();
        fragment[HEADER_LEN + 6] |= 0x20;
        assert_eq!(usual_outer(&fragment, true, &listeners()), None);
        let mut options = frame.clone();
        options[HEADER_LEN] = 0x46;
        assert_eq!(usual_outer(&options, true, &listeners()), None);
        let mut other_port = frame.clone();
        other_port[HEADER_LEN + 22..HEADER_LEN + 24].copy_from_slice(&444u16.to_be_bytes());
        assert_eq!(usual_outer(&other_port, true, &listeners()), None);
        // A UDP length one past the IPv4 payload, and one short of the UDP header.
        let udp_len_at = HEADER_LEN + 24;
        let udp_len = u16::from_be_bytes([frame[udp_len_at], frame[udp_len_at + 1]]);
        for wrong in [udp_len + 1, 7] {
            let mut long = frame.clone();
            long[udp_len_at..udp_len_at + 2].copy_from_slice(&wrong.to_be_bytes());
            assert_eq!(usual_outer(&long, true, &listeners()), None);
            assert!(parse_outer(&long, true, None, &listeners()).is_err());
        }
        assert_eq!(
            usual_outer(&frame[..frame.len() - 1], false, &listeners()),
            None
        );
        assert_eq!(
            usual_outer(&frame[..USUAL_OUTER_LEN - 1], false, &listeners()),
            None
        );
    }

    proptest! {
        /// Any bytes at all: an answer or none, never a panic.
        #[test]
        fn peer_hint_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = data_v2_peer_hint(&frame);
        }

        /// Where the fixed-offset parse takes a frame, the general one reads the same headers
        /// from it: frames from a client with some bytes of their headers changed (the IPv4
        /// checksum made right again or not), cut short or not.
        #[test]
        fn usual_outer_takes_only_what_the_general_parse_takes(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            changes in proptest::collection::vec((0usize..50, any::<u8>()), 0..4),
            cut in 0usize..130,
            fix_sum in any::<bool>(),
            hw_checked in any::<bool>(),
        ) {
            let mut frame = client_frame(&payload);
            for (at, value) in changes {
                frame[at] = value;
            }
            if fix_sum && frame[HEADER_LEN] == 0x45 {
                if let Ok(mut ip) = Ipv4Packet::new_checked(&mut frame[HEADER_LEN..]) {
                    ip.fill_checksum();
                }
            }
            frame.truncate(frame.len().saturating_sub(cut % 3 * cut));
            if let Some(o) = usual_outer(&frame, hw_checked, &listeners()) {
                prop_assert_eq!(
                    parse_outer(&frame, hw_checked, Some(ip(lab::OUTSIDE_IP)), &listeners()),
                    Ok(Some(o))
                );
            }
        }
    }
}
