//! IPv4 fragments: outer ones on the clients' side, both ways, and inner ones through SNAT.
//!
//! Clients are pushed `tun-mtu 1500`, so a full-size inner packet seals into a UDP datagram of
//! about 1,550 bytes: longer than the 1,500 bytes of most paths. A client's kernel sends it in
//! fragments, which the core reassembles (`reassemble`, with `crate::reassembly`) before the
//! usual path; the core sends a datagram longer than the outside port's MTU in fragments
//! (`send_fragments_to_client`), as the OpenVPN server's kernel would. Neither runs for a
//! datagram that fits: only oversized traffic pays for the copies.
//!
//! With RSS, a NIC hashes every fragment of a datagram on its addresses alone (the IPv4
//! fragment type is in `RTE_ETH_RSS_IP`), so all of them reach one core, which reassembles
//! them; the whole datagram then goes to its session's core like any other packet.
//!
//! Inner datagrams longer than the tunnel's MTU (a client's `ping -s 3000`, a large UDP answer
//! from the VPC) come in fragments that are not reassembled (they would not fit a buffer):
//! the first, which has the ports, goes through its flow like any packet and leaves in
//! `flow::fragments` what its translation was; the later ones get the same address
//! translation from there (`forward_later_fragment`, `forward_later_fragment_in`). One that
//! comes before its first (reordered on the way) is held, a few per core for at most two
//! seconds, until the first has passed (`Early`). A client's datagram also leaves with an
//! identification of the core's (`take_ident`): clients behind one ENI address pick theirs
//! independently, and two of their datagrams to one host with the same identification would
//! be reassembled there into one corrupt datagram. From a target subnet, the core that
//! received a first fragment but handed it to its flow's core also hands the later ones
//! there.
//!
//! An inner packet longer than the link it leaves on is treated as a router treats it (RFC
//! 791, RFC 1191, RFC 1812 §5.2.6): a client's, longer than the inside port's MTU (a client
//! that raised its `tun-mtu` sends up to about 1,980 bytes): with DF set it is answered with
//! an ICMP fragmentation needed carrying the port's MTU, sealed for the client; with DF clear
//! it leaves in fragments (`output_in_fragments`, `split_ipv4`). A host's, longer than the
//! tunnel's MTU (`TUNNEL_MTU`, the pushed `tun-mtu`; an inside port's may be up to 2000): with
//! DF set it is answered with an ICMP fragmentation needed carrying 1500, back to the host;
//! with DF clear it is sealed for the client in fragments, each its own data-channel packet
//! (`seal_in_fragments`). Only such packets pay for it: the usual paths make one comparison.

use crate::packet::{DropReason, PacketBuf};
use crate::port::Port;
use crate::reassembly::{Fragments, Piece};
use crate::wire::checksum;
use crate::wire::ethernet::HEADER_LEN;
use crate::wire::ipv4::{protocol, DatagramId, Ipv4Packet, MIN_HEADER_LEN};
use crate::wire::udp::{self, Ipv4UdpHeaders};
use crate::worker::{Worker, TUNNEL_MTU};

/// Payload bytes a reassembled datagram may have at most: what a 2,048-byte buffer holds
/// after an Ethernet header and the longest IPv4 header (DPDK's default mbuf and `HeapBuf`
/// both have 2,048 bytes after their headroom).
pub(crate) const REASSEMBLED_MAX: usize = 2048 - HEADER_LEN - 60;

/// Fragments a datagram is sent in at most.
const SEND_FRAGMENTS_MAX: usize = 8;

/// Where the later fragments of an inner datagram from a target subnet go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FragmentsIn {
    /// To the client at this address, of the session in this slot, on this core.
    Here { client: u32, owner: u32 },
    /// To the core that owns the flow.
    Core(usize),
}

/// Set on the port number of a later fragment one core hands another
/// (`forward_later_fragment_in`, its first fragment having gone there): the receiving core
/// forwards it, holds it for its first, or drops it (`ipv4_fragment`), but never hands it on.
/// Two datagrams from one host with one identification can be tracked on two cores each
/// naming the other (both first fragments handed over and refused there, a ring full, a
/// flow gone): without the mark, a later fragment went back and forth between them, a ring
/// slot at each pass, until the entries expired two or three seconds later. Such a fragment
/// reaches `forward_later_fragment_in` through the network side's dispatch, as `SHARED_ARP`
/// reaches `handle_arp`.
pub(crate) const HANDED_FRAGMENT: u16 = 0x4000;

/// Later fragments held at most, per core, while their first fragment is awaited.
pub(crate) const EARLY_MAX: usize = 64;

/// Seconds a later fragment waits for its first at most (1 to 2 by the once-a-second check).
const EARLY_HOLD_SECS: u32 = 2;

/// A later fragment of an inner datagram that arrived before its first (reordered on the
/// way), held until the first leaves its translation or `EARLY_HOLD_SECS` pass.
pub(crate) struct Early<B> {
    /// From a client (decrypted; `forward_later_fragment`) or from a target subnet (as
    /// received on `port`; `forward_later_fragment_in`).
    from_client: bool,
    id: DatagramId,
    since: u32,
    port: u16,
    buf: B,
}

/// The translation of an inner datagram from a client, for its later fragments: the ENI
/// address, the egress port, the next hop and the identification it leaves with.
pub(crate) type FragmentsOut = (u32, u16, u32, u16);

impl<P: Port> Worker<P> {
    /// An outer UDP fragment addressed to the appliance (its header checksum checked): held
    /// until its datagram is complete, which is then rebuilt in a fresh buffer and received as
    /// if it had come whole, in the place of the fragment that completed it (`process` calls
    /// `receive_reassembled`; calling it from here would make the client-side stage recursive
    /// and keep it from being inlined).
    #[cold]
    #[inline(never)]
    pub(crate) fn reassemble(&mut self, port: u16, buf: P::Buf) {
        let parsed = buf
            .data()
            .get(HEADER_LEN..)
            .and_then(|d| Ipv4Packet::new_checked(d).ok())
            .map(|ip| {
                let piece = Piece {
                    offset: ip.frag_offset(),
                    len: ip.payload().len(),
                    more: ip.more_fragments(),
                };
                (ip.datagram_id(), piece)
            });
        let Some((key, piece)) = parsed else {
            return self.drop_packet(buf, DropReason::MalformedIpv4);
        };
        let added = self.reassembly.add(key, piece, buf, self.now_secs);
        for (b, reason) in added.dropped {
            self.drop_packet(b, reason);
        }
        let Some(fragments) = added.complete else {
            return;
        };
        let whole = self.ports.get_mut(usize::from(port)).and_then(Port::alloc);
        let Some(mut whole) = whole else {
            for (_, b) in fragments {
                self.drop_packet(b, DropReason::NoRoom);
            }
            return;
        };
        match rebuild(&fragments, &mut whole) {
            Ok(()) => {
                for (_, b) in fragments {
                    self.consume(b);
                }
                self.reassembled = Some((port, whole));
            }
            Err(reason) => {
                self.consume(whole);
                for (_, b) in fragments {
                    self.drop_packet(b, reason);
                }
            }
        }
    }

    /// Receives the datagram just reassembled.
    #[cold]
    #[inline(never)]
    pub(crate) fn receive_reassembled(&mut self) {
        if let Some((port, b)) = self.reassembled.take() {
            self.process(port, b, crate::pipeline::Hint::default());
        }
    }

    /// A later fragment of a client's inner datagram (decrypted, from the session's own
    /// address): translated as its first fragment was, or dropped if that was not seen.
    #[cold]
    #[inline(never)]
    pub(crate) fn forward_later_fragment(&mut self, mut buf: P::Buf) {
        let (id, total, ttl, offset) = match later_fragment(buf.data()) {
            Ok(f) => f,
            Err(reason) => return self.drop_packet(buf, reason),
        };
        // A TCP fragment at offset 8 can only serve to overwrite, in the receiver's
        // reassembly, the flags and options of the header its first fragment showed us
        // (RFC 1858, section 4: drop it).
        if id.proto == protocol::TCP && offset == 8 {
            return self.drop_packet(buf, DropReason::FragmentOverlap);
        }
        let Some((eni, port, hop, ident)) = self.fragments_out.get(&id, self.now_secs) else {
            return self.hold_early(true, id, 0, buf);
        };
        if ttl <= 1 {
            return self.drop_packet(buf, DropReason::TtlExceeded);
        }
        buf.truncate(total);
        if let Ok(mut ip) = Ipv4Packet::new_checked(buf.data_mut()) {
            ip.set_src(eni.to_be_bytes());
            ip.set_ident(ident);
            ip.decrement_ttl();
        }
        self.output_fitting(port, hop, buf);
    }

    /// A later fragment of an inner datagram from a target subnet (a frame received on
    /// `port`): translated and sealed as its first fragment was, handed to the core that took
    /// the first, or dropped if no first was seen.
    #[cold]
    #[inline(never)]
    pub(crate) fn forward_later_fragment_in(&mut self, port: u16, mut buf: P::Buf) {
        let ip = buf.data().get(HEADER_LEN..).unwrap_or_default();
        let (id, total, ttl, _) = match later_fragment(ip) {
            Ok(f) => f,
            Err(reason) => return self.drop_packet(buf, reason),
        };
        // (Held for its first, it keeps the mark: released, it is not handed on either.)
        let (client, owner) = match self.fragments_in.get(&id, self.now_secs) {
            Some(FragmentsIn::Here { client, owner }) => (client, owner),
            Some(FragmentsIn::Core(_)) if port & HANDED_FRAGMENT != 0 => {
                return self.drop_packet(buf, DropReason::Ipv4Fragment);
            }
            Some(FragmentsIn::Core(c)) => return self.hand_off(c, port | HANDED_FRAGMENT, buf),
            None => return self.hold_early(false, id, port, buf),
        };
        if ttl <= 1 {
            return self.drop_packet(buf, DropReason::TtlExceeded);
        }
        // The session in that slot must still be the one the first fragment went to. If not,
        // that session ended, and the first fragment's flow was one of its flows, retired or
        // already gone (this entry outlives them): `no_flow`, as for the flow's other return
        // traffic, whether the slot is still held for them, free, or another session's.
        if self.sessions.get_mut(owner).map(|s| s.client_ip) != Some(client) {
            return self.drop_packet(buf, DropReason::NoFlow);
        }
        buf.trim_front(HEADER_LEN);
        buf.truncate(total);
        if let Ok(mut ip) = Ipv4Packet::new_checked(buf.data_mut()) {
            ip.set_dst(client.to_be_bytes());
            ip.decrement_ttl();
        }
        self.seal_fitting(buf, owner);
    }

    /// Holds a later fragment whose first has not been seen (`Early`); dropped
    /// `ipv4_fragment` when `EARLY_MAX` are held already.
    fn hold_early(&mut self, from_client: bool, id: DatagramId, port: u16, buf: P::Buf) {
        if self.early.len() >= EARLY_MAX {
            return self.drop_packet(buf, DropReason::Ipv4Fragment);
        }
        self.early.push(Early {
            from_client,
            id,
            since: self.now_secs,
            port,
            buf,
        });
    }

    /// The first fragment of datagram `id` has just left its translation: the later ones
    /// held for it go on, in the order they came.
    #[inline]
    pub(crate) fn release_early(&mut self, from_client: bool, id: DatagramId) {
        if !self.early.is_empty() {
            self.release_early_held(from_client, id);
        }
    }

    #[cold]
    #[inline(never)]
    fn release_early_held(&mut self, from_client: bool, id: DatagramId) {
        // Taken out first, then sent: one that finds no translation after all is held again,
        // not met again here.
        for e in self.take_early(|e| e.from_client == from_client && e.id == id) {
            if from_client {
                self.forward_later_fragment(e.buf);
            } else {
                self.forward_later_fragment_in(e.port, e.buf);
            }
        }
    }

    /// Takes out of the held fragments, in the order they came, those `pick` chooses.
    fn take_early(
        &mut self,
        pick: impl Fn(&Early<P::Buf>) -> bool,
    ) -> arrayvec::ArrayVec<Early<P::Buf>, EARLY_MAX> {
        let mut taken = arrayvec::ArrayVec::new();
        let mut i = 0;
        while i < self.early.len() {
            if !pick(&self.early[i]) {
                i += 1;
                continue;
            }
            // At most EARLY_MAX are held, so all of them fit.
            if let Err(full) = taken.try_push(self.early.remove(i)) {
                self.drop_packet(full.element().buf, DropReason::Ipv4Fragment);
            }
        }
        taken
    }

    /// An identification for a datagram this core sends to a client (whole, DF clear: a path
    /// may fragment it, or in fragments), or translates from fragments: the cores take turns
    /// (core `c` of `n` uses `c`, `c + n`, ... below `ident_period`, then `c` again), so no two
    /// datagrams leaving one address at once share one (RFC 6864: a source must not reuse an
    /// identification within a datagram's lifetime). With a number of cores that does not
    /// divide 65,536, wrapping at 65,536 would move a core onto another's numbers.
    #[inline]
    pub(crate) fn take_ident(&mut self) -> u16 {
        let ident = self.next_ident;
        let next = u32::from(ident) + (self.cfg.cores as u32);
        let next = if next >= self.ident_period {
            next - self.ident_period
        } else {
            next
        };
        self.next_ident = next as u16;
        ident
    }

    /// Gives up the datagrams that did not complete in time, and the later fragments whose
    /// first did not come (once a second).
    pub(crate) fn expire_fragments(&mut self) {
        let now = self.now_secs;
        for e in self.take_early(|e| now.saturating_sub(e.since) >= EARLY_HOLD_SECS) {
            self.drop_packet(e.buf, DropReason::Ipv4Fragment);
        }
        loop {
            let gone = self.reassembly.expire(self.now_secs);
            if gone.is_empty() {
                return;
            }
            for (b, reason) in gone {
                self.drop_packet(b, reason);
            }
        }
    }

    /// A fresh buffer of `port` holding `len` bytes, to be written (`None` when there is no
    /// buffer or it is too small).
    fn fresh(&mut self, port: u16, len: usize) -> Option<P::Buf> {
        let mut t = self
            .ports
            .get_mut(usize::from(port))
            .and_then(Port::alloc)?;
        if t.append(len).is_err() {
            self.consume(t);
            return None;
        }
        Some(t)
    }

    /// A fresh buffer of the outside port holding a copy of `bytes` (`None` when there is no
    /// buffer or it is too small).
    fn copied_to_outside(&mut self, bytes: &[u8]) -> Option<P::Buf> {
        let mut t = self.fresh(self.cfg.outside, bytes.len())?;
        t.data_mut().copy_from_slice(bytes);
        Some(t)
    }

    /// The MTU of `port`: the longest IPv4 packet it sends whole (no limit for a port that
    /// does not exist: sending there drops it `no_route`).
    #[inline(always)]
    pub(crate) fn port_mtu(&self, port: u16) -> usize {
        self.cfg
            .ports
            .get(usize::from(port))
            .map_or(usize::MAX, |pc| usize::from(pc.mtu))
    }

    /// Sends an inner IPv4 packet (translated) out of `port` toward `hop`, in fragments if it
    /// is longer than the port's MTU; one that is and has DF set is dropped `too_big`. For the
    /// paths that answer no ICMP error about what they send (later fragments, ICMP errors).
    pub(crate) fn output_fitting(&mut self, port: u16, hop: u32, buf: P::Buf) {
        let mtu = self.port_mtu(port);
        if buf.len() <= mtu {
            return self.output(port, hop, buf);
        }
        if Ipv4Packet::new_checked(buf.data()).is_ok_and(|ip| ip.dont_fragment()) {
            return self.drop_packet(buf, DropReason::TooBig);
        }
        self.output_in_fragments(port, hop, buf, mtu);
    }

    /// Sends an inner IPv4 packet (translated, DF clear) out of `port` toward `hop` in
    /// fragments of at most `mtu` bytes (`split_ipv4`), each resolved and queued like any
    /// packet. A whole packet's fragments carry an identification of the core's
    /// (`take_ident`), not the client's: after the translation, every client behind the ENI
    /// sends from its address, and two clients' datagrams cut with one identification would
    /// be reassembled by the host into one corrupt datagram (RFC 6864). A fragment's already
    /// is the core's (`first_fragment_out`, `forward_later_fragment`).
    #[cold]
    #[inline(never)]
    pub(crate) fn output_in_fragments(&mut self, port: u16, hop: u32, mut buf: P::Buf, mtu: usize) {
        if let Ok(mut ip) = Ipv4Packet::new_checked(buf.data_mut()) {
            if !ip.is_fragment() {
                ip.set_ident(self.take_ident());
            }
        }
        match self.split_ipv4(port, buf, mtu) {
            Ok(pieces) => {
                for p in pieces {
                    self.output(port, hop, p);
                }
            }
            Err((buf, reason)) => self.drop_packet(buf, reason),
        }
    }

    /// Seals an inner packet (translated) for the session in slot `owner`, in fragments if it
    /// is longer than the tunnel's MTU; one that is and has DF set is dropped `too_big`. For
    /// the paths that answer no ICMP error about what they send (later fragments).
    pub(crate) fn seal_fitting(&mut self, buf: P::Buf, owner: u32) {
        if buf.len() <= usize::from(TUNNEL_MTU) {
            return self.encrypt_to_client(buf, owner);
        }
        if Ipv4Packet::new_checked(buf.data()).is_ok_and(|ip| ip.dont_fragment()) {
            return self.drop_packet(buf, DropReason::TooBig);
        }
        self.seal_in_fragments(buf, owner);
    }

    /// Seals an inner packet (translated, DF clear) for the session in slot `owner` in
    /// fragments of at most the tunnel's MTU (`split_ipv4`, the later ones in buffers of the
    /// outside port), each its own data-channel packet.
    #[cold]
    #[inline(never)]
    pub(crate) fn seal_in_fragments(&mut self, buf: P::Buf, owner: u32) {
        let outside = self.cfg.outside;
        match self.split_ipv4(outside, buf, usize::from(TUNNEL_MTU)) {
            Ok(pieces) => {
                for p in pieces {
                    self.encrypt_to_client(p, owner);
                }
            }
            Err((buf, reason)) => self.drop_packet(buf, reason),
        }
    }

    /// Cuts the IPv4 packet in `buf` (DF clear, its header checksum right; whole, or itself a
    /// fragment) into fragments of at most `mtu` bytes, as RFC 791 has a router do: the first
    /// in `buf` itself, with the whole header; each later one in a fresh buffer of `port`,
    /// with only the options whose copy bit is set (RFC 791 §3.1). Every fragment's payload
    /// but the last is a multiple of 8 bytes; offsets count from the packet's own; every
    /// fragment has MF set but the last, which has it if the packet had; the identification
    /// and everything else of the header is the packet's, and each header checksum is made
    /// right. Refused: `too_big` when the header leaves no room for 8 bytes or it would take
    /// more than `SEND_FRAGMENTS_MAX` fragments; `malformed_ipv4` for options that do not
    /// parse; `fragment_too_long` for a fragment that ends past 65,535 bytes; `no_room` when
    /// there is no buffer.
    #[allow(clippy::type_complexity)]
    fn split_ipv4(
        &mut self,
        port: u16,
        mut buf: P::Buf,
        mtu: usize,
    ) -> Result<arrayvec::ArrayVec<P::Buf, SEND_FRAGMENTS_MAX>, (P::Buf, DropReason)> {
        let Some((hl, total, offset, more, ident)) = Ipv4Packet::new_checked(buf.data())
            .ok()
            .map(|ip| {
                let f = (ip.frag_offset(), ip.more_fragments(), ip.ident());
                (ip.header_len(), ip.total_len(), f.0, f.1, f.2)
            })
            .filter(|&(_, total, ..)| total <= buf.len())
        else {
            return Err((buf, DropReason::MalformedIpv4));
        };
        // The header of the later fragments: the fixed part and the options to copy.
        let mut later = [0u8; 60];
        later[..MIN_HEADER_LEN].copy_from_slice(&buf.data()[..MIN_HEADER_LEN]);
        let Some(copied) = copied_options(&buf.data()[MIN_HEADER_LEN..hl], &mut later[20..]) else {
            return Err((buf, DropReason::MalformedIpv4));
        };
        let later_hl = MIN_HEADER_LEN + copied;
        later[0] = 0x40 | (later_hl / 4) as u8;
        let first = mtu.saturating_sub(hl) / 8 * 8;
        let per = mtu.saturating_sub(later_hl) / 8 * 8;
        let payload = total - hl;
        // A fragment that would end past the 65,535 bytes a datagram holds (a "ping of
        // death"; the later-fragment paths drop it before it comes here): the offset of a
        // piece cut from it could pass the 13 bits of its field, and spill into the flags (MF
        // set, offset wrapped to the datagram's start, over the header its first fragment
        // showed).
        if past_datagram_limit(offset, payload) {
            return Err((buf, DropReason::FragmentTooLong));
        }
        if first == 0
            || per == 0
            || 1 + payload.saturating_sub(first).div_ceil(per) > SEND_FRAGMENTS_MAX
        {
            return Err((buf, DropReason::TooBig));
        }
        let mut pieces = arrayvec::ArrayVec::<P::Buf, SEND_FRAGMENTS_MAX>::new();
        for at in (first..payload).step_by(per) {
            let chunk = per.min(payload - at);
            let Some(mut t) = self.fresh(port, later_hl + chunk) else {
                for t in pieces {
                    self.consume(t);
                }
                return Err((buf, DropReason::NoRoom));
            };
            let (h, data) = t.data_mut().split_at_mut(later_hl);
            h.copy_from_slice(&later[..later_hl]);
            data.copy_from_slice(&buf.data()[hl + at..hl + at + chunk]);
            let last = at + chunk == payload;
            fragment_header(h, chunk, offset + at, more || !last, ident);
            // At most SEND_FRAGMENTS_MAX - 1 of them, as checked above.
            pieces.push(t);
        }
        let first = first.min(payload);
        buf.truncate(hl + first);
        fragment_header(
            &mut buf.data_mut()[..hl],
            first,
            offset,
            more || first < payload,
            ident,
        );
        pieces.insert(0, buf);
        Ok(pieces)
    }

    /// Sends the OpenVPN packet in `buf` to a client (via `hop`) in IPv4 fragments of at most
    /// the outside port's MTU: the first in `buf` itself with the UDP header, the others in
    /// fresh buffers.
    #[cold]
    #[inline(never)]
    pub(crate) fn send_fragments_to_client(
        &mut self,
        mut buf: P::Buf,
        headers: &Ipv4UdpHeaders,
        hop: u32,
    ) {
        let len = buf.len();
        let mut template = [0u8; Ipv4UdpHeaders::LEN];
        // The identification is the fragments' own, written by `fragment_header`.
        headers.write(&mut template, len, 0);
        // IPv4 payload bytes a fragment carries (but the last): a multiple of 8.
        let per = usize::from(self.cfg.outside_mtu).saturating_sub(MIN_HEADER_LEN) / 8 * 8;
        let datagram = udp::HEADER_LEN + len;
        if per <= udp::HEADER_LEN || datagram.div_ceil(per) > SEND_FRAGMENTS_MAX {
            return self.drop_packet(buf, DropReason::TooBig);
        }
        // The datagram's payload from `per` on goes in fresh buffers, `per` bytes each.
        let mut rest = arrayvec::ArrayVec::<(usize, P::Buf), SEND_FRAGMENTS_MAX>::new();
        for at in (per..datagram).step_by(per) {
            let from = at - udp::HEADER_LEN;
            let chunk = buf.data().get(from..from + per.min(datagram - at));
            match chunk.and_then(|c| self.copied_to_outside(c)) {
                // At most SEND_FRAGMENTS_MAX - 1 of them, as checked above.
                Some(t) => rest.push((at, t)),
                None => {
                    for (_, t) in rest {
                        self.consume(t);
                    }
                    return self.drop_packet(buf, DropReason::NoRoom);
                }
            }
        }
        let ident = self.take_ident();
        buf.truncate(per - udp::HEADER_LEN);
        let outside = self.cfg.outside;
        self.output_under(outside, hop, buf, |h: &mut [u8; Ipv4UdpHeaders::LEN]| {
            *h = template;
            fragment_header(&mut h[..MIN_HEADER_LEN], per, 0, true, ident);
        });
        for (offset, t) in rest {
            let chunk = t.len();
            let more = offset + chunk < datagram;
            self.output_under(outside, hop, t, |h: &mut [u8; MIN_HEADER_LEN]| {
                h.copy_from_slice(&template[..MIN_HEADER_LEN]);
                fragment_header(h, chunk, offset, more, ident);
            });
        }
    }
}

/// The identity, total length, TTL and fragment offset of the IPv4 packet at the start of
/// `data`: `malformed_ipv4` if its header does not parse, `fragment_too_long` if it ends past
/// 65,535 bytes (checked before it is held, translated or handed to another core).
fn later_fragment(data: &[u8]) -> Result<(DatagramId, usize, u8, usize), DropReason> {
    let ip = Ipv4Packet::new_checked(data).map_err(|_| DropReason::MalformedIpv4)?;
    let (total, offset) = (ip.total_len(), ip.frag_offset());
    if past_datagram_limit(offset, total - ip.header_len()) {
        return Err(DropReason::FragmentTooLong);
    }
    Ok((ip.datagram_id(), total, ip.ttl(), offset))
}

/// Whether a fragment at `offset` with `payload` bytes ends past the 65,535 bytes an IPv4
/// datagram holds with the shortest header (RFC 791): no valid datagram has it (the "ping of
/// death"), and the offset of a piece cut from it could pass the 13 bits of its field.
fn past_datagram_limit(offset: usize, payload: usize) -> bool {
    offset + payload > usize::from(u16::MAX) - MIN_HEADER_LEN
}

/// Writes a fragment's length, identification, flags (DF clear) and offset into the IPv4
/// header `h` (all of it, options included), and its checksum.
fn fragment_header(h: &mut [u8], payload: usize, offset: usize, more: bool, ident: u16) {
    let total = (h.len() + payload) as u16;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&ident.to_be_bytes());
    let flags = if more { 0x2000 } else { 0 } | (offset / 8) as u16;
    h[6..8].copy_from_slice(&flags.to_be_bytes());
    h[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Copies into `out` the IPv4 options of `options` whose copy bit is set (those every fragment
/// carries, RFC 791 §3.1), padded with end-of-options to a multiple of 4 bytes; returns their
/// length. `None` if the options do not parse (a length past their end, or below 2).
fn copied_options(options: &[u8], out: &mut [u8]) -> Option<usize> {
    const END: u8 = 0;
    const NO_OPERATION: u8 = 1;
    const COPIED: u8 = 0x80;
    let (mut at, mut n) = (0, 0);
    while let Some(&kind) = options.get(at) {
        match kind {
            END => break,
            NO_OPERATION => at += 1,
            _ => {
                let len = usize::from(*options.get(at + 1)?);
                let option = options.get(at..at + len).filter(|_| len >= 2)?;
                if kind & COPIED != 0 {
                    out.get_mut(n..n + len)?.copy_from_slice(option);
                    n += len;
                }
                at += len;
            }
        }
    }
    let padded = n.div_ceil(4) * 4;
    out.get_mut(n..padded)?.fill(END);
    Some(padded)
}

/// Writes the datagram of complete `fragments` (Ethernet and IPv4 header of the first, then
/// every payload in place) into the empty buffer `whole`, with its IPv4 header made whole
/// again (total length, no fragment flags or offset, checksum).
fn rebuild<B: PacketBuf>(fragments: &Fragments<B>, whole: &mut B) -> Result<(), DropReason> {
    let (Some((_, first)), Some((last, _))) = (fragments.first(), fragments.last()) else {
        return Err(DropReason::MalformedIpv4);
    };
    let header_len = |b: &B| {
        b.data()
            .get(HEADER_LEN..)
            .and_then(|d| Ipv4Packet::new_checked(d).ok())
            .map(|ip| ip.header_len())
    };
    let hl = header_len(first).ok_or(DropReason::MalformedIpv4)?;
    let total = hl + last.offset + last.len;
    if total > usize::from(u16::MAX) {
        return Err(DropReason::ReassemblyTooBig);
    }
    let out = whole
        .append(HEADER_LEN + total)
        .map_err(|_| DropReason::ReassemblyTooBig)?;
    let head = first
        .data()
        .get(..HEADER_LEN + hl)
        .ok_or(DropReason::MalformedIpv4)?;
    out[..HEADER_LEN + hl].copy_from_slice(head);
    for (piece, b) in fragments {
        let at = HEADER_LEN + header_len(b).ok_or(DropReason::MalformedIpv4)?;
        let from = b.data().get(at..at + piece.len);
        let to = out.get_mut(HEADER_LEN + hl + piece.offset..HEADER_LEN + hl + piece.end());
        match (from, to) {
            (Some(f), Some(t)) => t.copy_from_slice(f),
            _ => return Err(DropReason::MalformedIpv4),
        }
    }
    let ip = &mut out[HEADER_LEN..];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[6] &= 0x40; // keep DF; MF and the offset go
    ip[7] = 0;
    let mut ip = Ipv4Packet::new_checked(ip).map_err(|_| DropReason::MalformedIpv4)?;
    ip.fill_checksum();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::copied_options;

    /// Three cores (65,536 is no multiple of 3): each keeps to its own numbers through
    /// several wraps, and takes each of them once a period.
    #[test]
    fn cores_keep_their_own_identifications_across_the_wrap() {
        let cores = 3;
        let mut seen = vec![None::<usize>; 1 << 16];
        for core in 0..cores {
            let mut cfg = crate::testkit::lab_config(16, 16);
            cfg.core = core;
            cfg.cores = cores;
            let mb = crate::mailbox::Mailbox::new(16);
            let ports = vec![crate::port::MemPort::new(), crate::port::MemPort::new()];
            // A clock read in a test: the worker never reads it for identifications.
            #[allow(clippy::disallowed_methods)]
            let now = std::time::Instant::now();
            let mut w = crate::testkit::lab_worker(ports, cfg, mb, now);
            let period = (1 << 16) / cores * cores;
            for n in 0..3 * period {
                let ident = usize::from(w.take_ident());
                assert_eq!(ident % cores, core, "core {core}, take {n}");
                assert!(ident < period);
                match seen[ident] {
                    None => seen[ident] = Some(core),
                    Some(c) => assert_eq!(c, core, "{ident} taken by cores {c} and {core}"),
                }
            }
        }
    }

    #[test]
    fn only_the_options_with_the_copy_bit_are_copied_and_bad_ones_refused() {
        let mut out = [0xaa; 40];
        // Router alert (copied), a no-operation, a loose source route (copied), record route.
        let options = [0x94, 4, 0, 0, 1, 0x83, 7, 4, 1, 2, 3, 4, 7, 3, 4, 0];
        assert_eq!(copied_options(&options, &mut out), Some(12));
        assert_eq!(&out[..12], &[0x94, 4, 0, 0, 0x83, 7, 4, 1, 2, 3, 4, 0]);
        // Nothing after the end of the options is read.
        assert_eq!(copied_options(&[0, 0x94, 4, 0, 0], &mut out), Some(0));
        for bad in [&[0x94, 5, 0, 0][..], &[0x94, 1, 0, 0], &[0x94], &[7, 0]] {
            assert_eq!(copied_options(bad, &mut out), None, "{bad:?}");
        }
    }
}

#[cfg(test)]
mod split {
    use crate::mailbox::Mailbox;
    use crate::packet::{DropReason, PacketBuf};
    use crate::port::{MemPort, Port};
    use crate::wire::ipv4::Ipv4Packet;
    use proptest::prelude::*;

    /// Options to pick from: (bytes, whether their copy bit is set).
    const OPTIONS: [(&[u8], bool); 5] = [
        (&[1], false),                         // no-operation
        (&[0x94, 4, 0, 0], true),              // router alert
        (&[7, 7, 4, 0, 0, 0, 0], false),       // record route, one slot
        (&[0x83, 7, 4, 10, 0, 0, 9], true),    // loose source route
        (&[0x44, 8, 5, 0, 0, 0, 0, 0], false), // timestamp
    ];

    /// The options of `picks` that fit in 40 bytes, padded to 4 with end-of-options; and the
    /// same for only those with the copy bit set (what a later fragment carries).
    fn options(picks: &[usize]) -> (Vec<u8>, Vec<u8>) {
        let (mut all, mut copied) = (Vec::new(), Vec::new());
        for &i in picks {
            let (bytes, copy) = OPTIONS[i % OPTIONS.len()];
            if all.len() + bytes.len() > 40 {
                break;
            }
            all.extend_from_slice(bytes);
            if copy {
                copied.extend_from_slice(bytes);
            }
        }
        for o in [&mut all, &mut copied] {
            o.resize(o.len().div_ceil(4) * 4, 0);
        }
        (all, copied)
    }

    proptest! {
        /// Any packet, whole or itself a fragment, with any options, cut for any MTU: every
        /// piece fits the MTU with its header checksum right and DF clear; the first keeps the
        /// packet's header, the later ones its fixed part and only the options to copy; the
        /// offsets follow on from the packet's own, every payload but the last is a multiple of
        /// 8, MF is on all but the last, which has the packet's; and the payloads put back
        /// together are the packet's. A fragment ending past 65,535 bytes is refused.
        #[test]
        fn cut_pieces_put_back_together_are_the_packet(
            picks in proptest::collection::vec(0usize..5, 0..8),
            len in 1usize..1900, units in 0usize..8192, more in any::<bool>(),
            mtu in 576usize..2000, ident in any::<u16>(), tos in any::<u8>(), ttl in 2u8..,
        ) {
            let (opts, copied) = options(&picks);
            let hl = 20 + opts.len();
            // A fragment with MF has a payload that is a multiple of 8.
            let len = if more { (len / 8 * 8).max(8) } else { len };
            let offset = units * 8;
            let total = hl + len;
            let mut p = vec![0u8; total];
            p[0] = 0x40 | (hl / 4) as u8;
            p[1] = tos;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&ident.to_be_bytes());
            let frag = u16::from(more) << 13 | units as u16;
            p[6..8].copy_from_slice(&frag.to_be_bytes());
            p[8] = ttl;
            p[9] = 17;
            p[12..20].copy_from_slice(&[10, 200, 0, 2, 172, 31, 1, 10]);
            p[20..hl].copy_from_slice(&opts);
            for (i, b) in p[hl..].iter_mut().enumerate() {
                *b = (i * 7 + i / 251) as u8;
            }
            Ipv4Packet::new_checked(&mut p[..]).unwrap().fill_checksum();

            let cfg = crate::testkit::lab_config(16, 4);
            let ports = vec![MemPort::new(), MemPort::new()];
            // A test stands in for the worker shell, which owns the clock.
            #[allow(clippy::disallowed_methods)]
            let now = std::time::Instant::now();
            let mut w = crate::testkit::lab_worker(ports, cfg, Mailbox::new(16), now);
            let mut buf = w.ports[1].alloc().unwrap();
            buf.append(total).unwrap().copy_from_slice(&p);
            let pieces = match w.split_ipv4(1, buf, mtu) {
                Ok(pieces) => pieces,
                Err((_, reason)) => {
                    prop_assert_eq!(reason, DropReason::FragmentTooLong);
                    prop_assert!(offset + len > 65_535 - 20, "refused at {} + {}", offset, len);
                    return Ok(());
                }
            };
            prop_assert!(offset + len <= 65_535 - 20, "cut at {} + {}", offset, len);
            let (mut at, mut payload) = (offset, Vec::new());
            for (n, piece) in pieces.iter().enumerate() {
                let last = n + 1 == pieces.len();
                let ip = Ipv4Packet::new_checked(piece.data()).unwrap();
                prop_assert_eq!(ip.total_len(), piece.len());
                prop_assert!(piece.len() <= mtu, "piece {}: {} bytes", n, piece.len());
                prop_assert!(ip.verify_checksum());
                prop_assert!(!ip.dont_fragment());
                prop_assert_eq!(ip.frag_offset(), at, "piece {}", n);
                prop_assert_eq!(ip.more_fragments(), more || !last, "piece {}", n);
                let h = &piece.data()[..ip.header_len()];
                prop_assert_eq!((h[1], ip.ident(), h[8], h[9]), (tos, ident, ttl, 17));
                prop_assert_eq!(&h[12..20], &p[12..20]);
                let want: &[u8] = if n == 0 { &opts } else { &copied };
                prop_assert_eq!(&h[20..], want, "piece {}", n);
                if !last {
                    prop_assert_eq!(ip.payload().len() % 8, 0, "piece {}", n);
                }
                at += ip.payload().len();
                payload.extend_from_slice(ip.payload());
            }
            prop_assert_eq!(&payload[..], &p[hl..]);
            for piece in pieces {
                w.consume(piece);
            }
        }
    }
}
