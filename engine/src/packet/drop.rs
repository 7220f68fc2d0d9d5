//! Every reason a core drops (or consumes) a packet, named and counted.
//!
//! A drop is never logged per packet and never silent: the stage that refuses a packet returns
//! its `DropReason` and the core bumps that reason's counter. The names are stable (they are
//! metric labels).

/// Why a packet went no further.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header, or an unhandled EtherType.
    MalformedEthernet,
    /// A bad IPv4 header (version, lengths, header checksum).
    MalformedIpv4,
    /// A bad UDP header.
    MalformedUdp,
    /// A bad TCP header.
    MalformedTcp,
    /// A bad ICMP message.
    MalformedIcmp,
    /// A bad ARP packet.
    MalformedArp,
    /// A bad OpenVPN packet (too short; an opcode neither data nor a client's control).
    MalformedOpenvpn,
    /// An IPv4 fragment that cannot go on: a later fragment of an inner datagram whose first
    /// fragment did not come within two seconds (or with 64 such already waiting on the
    /// core), an ICMP error in fragments, an outer fragment other than UDP to the appliance; a
    /// later fragment from a target subnet that another core handed over and this core would
    /// hand on again (two datagrams with one identification, each core naming the other).
    Ipv4Fragment,
    /// TTL reached zero.
    TtlExceeded,
    /// Not IPv4 (IPv6 from clients' tuns, for example).
    NotIpv4,
    /// A transport protocol SNAT cannot translate.
    UnsupportedProtocol,
    /// A data packet for a peer-id no session has.
    UnknownPeer,
    /// A data packet from an address other than the session's (and not a valid float).
    PeerAddressMismatch,
    /// A data packet with a key-id the session has no key for.
    UnknownKeyId,
    /// AEAD authentication failed.
    BadAeadTag,
    /// A packet-id already seen.
    Replayed,
    /// A packet-id older than the replay window.
    TooOld,
    /// OpenVPN's keepalive ping: consumed, counted, never forwarded.
    Keepalive,
    /// OpenVPN's OCC exit message: consumed; the session is closed.
    OccExit,
    /// Another OCC message (MTU tests): consumed.
    OccOther,
    /// The inner source is not the session's virtual address (spoofing).
    SourceSpoofed,
    /// No route to the destination.
    NoRoute,
    /// No authorization rule grants the user the destination.
    NotAuthorized,
    /// The target network's security groups refuse it.
    SecurityGroupDenied,
    /// No free SNAT port.
    SnatPortExhausted,
    /// The flow table is full.
    FlowTableFull,
    /// Return traffic that matches no flow, or only a flow of a session that ended (retired,
    /// waiting for its removal a bounded number a poll); a later fragment whose first
    /// fragment went to a session that has ended since.
    NoFlow,
    /// Return traffic for a client address no session holds.
    NoSessionForDestination,
    /// Waiting for ARP resolution, and the queue for that neighbour is full (its oldest packet
    /// makes way for the newest, RFC 1122 §2.3.2.2), or the cache holds as many packets or
    /// neighbours as it may.
    ArpQueueFull,
    /// ARP resolution failed.
    ArpUnresolved,
    /// A packet for another core, and the ring to it is full.
    HandoffRingFull,
    /// The NIC did not take the packet.
    TxRingFull,
    /// The report queue to the control thread has no room for a punted datagram (less than a
    /// quarter free: the rest is kept for reports control cannot do without).
    PuntQueueFull,
    /// No head or tail room to add headers or the tag.
    NoRoom,
    /// The packet is bigger than the egress MTU and may not be fragmented.
    TooBig,
    /// A frame not addressed to us (another MAC, or an IP we do not own).
    NotForUs,
    /// The send packet-id would wrap: the session must renegotiate first.
    PacketIdExhausted,
    /// An outer fragment overlapping another of its datagram, or inconsistent with it (the
    /// whole datagram is given up); an inner TCP fragment at offset 8 (RFC 1858).
    FragmentOverlap,
    /// An outer fragment whose datagram did not complete in time, or made way for a newer one
    /// in a full reassembly table.
    ReassemblyTimeout,
    /// An outer fragment of a datagram too long for a buffer, or in too many fragments.
    ReassemblyTooBig,
    /// A control-channel packet over its source's budget (`punt::PuntLimiter`).
    PuntRateLimited,
    /// A client's first hard reset over its address's budget of stateless answers.
    ResetRateLimited,
    /// A control packet from an address control has no session with that does not echo a
    /// session id we gave it (forged, misdirected or stale; only with the cookie key).
    UnknownControlPeer,
    /// A report to control other than a punted datagram (a session's end, float or counters;
    /// a retired table) that found the report queue full (`Mailbox::report`).
    ReportQueueFull,
    /// A renegotiated key (`Command::InstallKey`) for a peer-id the core holds no session of:
    /// the core let the session go first (control hears of that in a `Report::Removed`), or
    /// control sent the key to a core that never held it.
    KeyForUnknownPeer,
    /// A received frame the device delivered as a chain of mbufs (a frame larger than one
    /// buffer's data room, scattered over several): the pipeline parses single-segment frames
    /// only, so the whole chain is freed unread.
    MultiSegment,
    /// An IPv4 fragment that ends past the 65,535 bytes a datagram holds (its offset and
    /// payload after the shortest header; RFC 791, the "ping of death"): it belongs to no valid
    /// datagram, whichever way it goes.
    FragmentTooLong,
    /// ARP whose sender address is its subnet's broadcast or network address (the port's
    /// subnet, /30 and wider): no host has it, so nothing is learned from it nor answered.
    ArpSenderNotHost,
    /// A new flow of a session that already holds as many flows on the core as one session
    /// may (`WorkerConfig::flows_per_session`): one client cannot take the whole flow table
    /// from the others on its core. Its existing flows go on.
    SessionFlowsFull,
    /// A datagram to a listener that is no data packet (a control-channel packet, punted to
    /// control or answered on the core) whose UDP checksum, where present, does not verify:
    /// the reliability layer's header it carries (session ids, acks, packet ids) is covered by
    /// nothing else without tls-auth or tls-crypt, so a corrupted one is dropped, as a kernel's
    /// UDP stack drops it. Data packets are left to their AEAD tag (`bad_aead_tag`), but for
    /// one from an address other than its session's: the tag does not cover the address the
    /// session would float to.
    BadUdpChecksum,
    /// A client's first hard reset while the appliance stops (`Command::StopAnswering`): not
    /// answered, so that the client tries again and finds the next daemon.
    Stopping,
    /// A client's packet to an address no single host has: the broadcast or network address
    /// of the subnet its route leaves into (a directed broadcast, not forwarded by default:
    /// RFC 2644; nor resolved with ARP), the limited broadcast, a multicast group (sluice
    /// routes no multicast), or 0/8, 127/8 or 240/4 (RFC 1812 §5.3.7). A client on a full
    /// tunnel sends its discovery traffic (mDNS, SSDP) this way; none of it takes a flow.
    DestinationNotAHost,
    /// A client's packet to another address of its endpoint's client CIDR (another client's):
    /// sluice carries no traffic between clients, and none lies beyond the VPC there (the
    /// client CIDR may overlap neither the VPC nor a route), so it is not forwarded.
    ClientToClient,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 53] = [
        Self::MalformedEthernet,
        Self::MalformedIpv4,
        Self::MalformedUdp,
        Self::MalformedTcp,
        Self::MalformedIcmp,
        Self::MalformedArp,
        Self::MalformedOpenvpn,
        Self::Ipv4Fragment,
        Self::TtlExceeded,
        Self::NotIpv4,
        Self::UnsupportedProtocol,
        Self::UnknownPeer,
        Self::PeerAddressMismatch,
        Self::UnknownKeyId,
        Self::BadAeadTag,
        Self::Replayed,
        Self::TooOld,
        Self::Keepalive,
        Self::OccExit,
        Self::OccOther,
        Self::SourceSpoofed,
        Self::NoRoute,
        Self::NotAuthorized,
        Self::SecurityGroupDenied,
        Self::SnatPortExhausted,
        Self::FlowTableFull,
        Self::NoFlow,
        Self::NoSessionForDestination,
        Self::ArpQueueFull,
        Self::ArpUnresolved,
        Self::HandoffRingFull,
        Self::TxRingFull,
        Self::PuntQueueFull,
        Self::NoRoom,
        Self::TooBig,
        Self::NotForUs,
        Self::PacketIdExhausted,
        Self::FragmentOverlap,
        Self::ReassemblyTimeout,
        Self::ReassemblyTooBig,
        Self::PuntRateLimited,
        Self::ResetRateLimited,
        Self::UnknownControlPeer,
        Self::ReportQueueFull,
        Self::KeyForUnknownPeer,
        Self::MultiSegment,
        Self::FragmentTooLong,
        Self::ArpSenderNotHost,
        Self::SessionFlowsFull,
        Self::BadUdpChecksum,
        Self::Stopping,
        Self::DestinationNotAHost,
        Self::ClientToClient,
    ];

    /// The number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// The stable snake_case name (a metric label).
    pub const fn name(self) -> &'static str {
        match self {
            Self::MalformedEthernet => "malformed_ethernet",
            Self::MalformedIpv4 => "malformed_ipv4",
            Self::MalformedUdp => "malformed_udp",
            Self::MalformedTcp => "malformed_tcp",
            Self::MalformedIcmp => "malformed_icmp",
            Self::MalformedArp => "malformed_arp",
            Self::MalformedOpenvpn => "malformed_openvpn",
            Self::Ipv4Fragment => "ipv4_fragment",
            Self::TtlExceeded => "ttl_exceeded",
            Self::NotIpv4 => "not_ipv4",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::UnknownPeer => "unknown_peer",
            Self::PeerAddressMismatch => "peer_address_mismatch",
            Self::UnknownKeyId => "unknown_key_id",
            Self::BadAeadTag => "bad_aead_tag",
            Self::Replayed => "replayed",
            Self::TooOld => "too_old",
            Self::Keepalive => "keepalive",
            Self::OccExit => "occ_exit",
            Self::OccOther => "occ_other",
            Self::SourceSpoofed => "source_spoofed",
            Self::NoRoute => "no_route",
            Self::NotAuthorized => "not_authorized",
            Self::SecurityGroupDenied => "security_group_denied",
            Self::SnatPortExhausted => "snat_port_exhausted",
            Self::FlowTableFull => "flow_table_full",
            Self::NoFlow => "no_flow",
            Self::NoSessionForDestination => "no_session_for_destination",
            Self::ArpQueueFull => "arp_queue_full",
            Self::ArpUnresolved => "arp_unresolved",
            Self::HandoffRingFull => "handoff_ring_full",
            Self::TxRingFull => "tx_ring_full",
            Self::PuntQueueFull => "punt_queue_full",
            Self::NoRoom => "no_room",
            Self::TooBig => "too_big",
            Self::NotForUs => "not_for_us",
            Self::PacketIdExhausted => "packet_id_exhausted",
            Self::FragmentOverlap => "fragment_overlap",
            Self::ReassemblyTimeout => "reassembly_timeout",
            Self::ReassemblyTooBig => "reassembly_too_big",
            Self::PuntRateLimited => "punt_rate_limited",
            Self::ResetRateLimited => "reset_rate_limited",
            Self::UnknownControlPeer => "unknown_control_peer",
            Self::ReportQueueFull => "report_queue_full",
            Self::KeyForUnknownPeer => "key_for_unknown_peer",
            Self::MultiSegment => "multi_segment",
            Self::FragmentTooLong => "fragment_too_long",
            Self::ArpSenderNotHost => "arp_sender_not_host",
            Self::SessionFlowsFull => "session_flows_full",
            Self::BadUdpChecksum => "bad_udp_checksum",
            Self::Stopping => "stopping",
            Self::DestinationNotAHost => "destination_not_a_host",
            Self::ClientToClient => "client_to_client",
        }
    }
}

/// A core's drop counters: plain integers, owned by the core, read by control as snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::COUNT]);

impl Default for DropCounters {
    fn default() -> Self {
        Self([0; DropReason::COUNT])
    }
}

impl DropCounters {
    /// Counts one packet dropped for `reason`.
    #[inline]
    pub fn bump(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// The count for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Every reason's name and count.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.0[*r as usize]))
    }

    /// The sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_complete_ordered_and_named_uniquely() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?} out of order");
        }
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        assert!(names.iter().all(|n| n
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    }

    #[test]
    fn counts() {
        let mut c = DropCounters::default();
        c.bump(DropReason::Replayed);
        c.bump(DropReason::Replayed);
        c.bump(DropReason::NoRoute);
        assert_eq!(c.get(DropReason::Replayed), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(
            c.iter().find(|(n, _)| *n == "no_route"),
            Some(("no_route", 1))
        );
    }
}
