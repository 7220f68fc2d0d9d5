//! The stages a packet goes through on a core, as `impl Worker` blocks: `client` (client to
//! network: decrypt, authorize, route, SNAT), `network` (network to client: reverse SNAT,
//! encrypt) and `l2` (ARP, pings to the appliance, Ethernet output).
//!
//! Every stage ends a packet in exactly one of: queued for transmission, handed to the owning
//! core, punted to control (copied), queued waiting for ARP, or dropped with a named reason.

pub(crate) mod client;
pub(crate) mod fragment;
pub(crate) mod l2;
pub(crate) mod nat;
pub(crate) mod network;

use crate::wire::ethernet::{ethertype, HEADER_LEN};
use crate::wire::ipv4::Ipv4Packet;

/// The IPv4 header of an Ethernet frame, for the look-ahead stages of a burst (no checksum
/// check: what they find is only a hint; `process` validates).
pub(crate) fn ipv4_hint(frame: &[u8]) -> Option<Ipv4Packet<&[u8]>> {
    if frame.get(12..14) != Some(&ethertype::IPV4.to_be_bytes()[..]) {
        return None;
    }
    Ipv4Packet::new_checked(frame.get(HEADER_LEN..)?).ok()
}

/// The bytes a client's P_DATA_V2 frame carries besides its ciphertext: Ethernet, and what a
/// reply to a client has in front of its ciphertext (IPv4 without options, UDP, the P_DATA_V2
/// header and the tag).
pub(crate) const CLIENT_FRAME_OVERHEAD: usize = HEADER_LEN + network::RETURN_PREPEND;

/// `Hint::aead_len` of a frame of `frame_len` bytes, `overhead` of them not covered.
#[inline]
pub(crate) fn aead_len_hint(frame_len: usize, overhead: usize) -> u16 {
    u16::try_from(frame_len.saturating_sub(overhead)).unwrap_or(u16::MAX)
}

/// What a burst's look-ahead found for one frame. Hints only: `process` uses a slot after
/// checking it holds what the frame names, and looks up the usual way otherwise.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Hint {
    /// The session slot the frame will most likely use (from a client; from a target subnet
    /// it is the owner of `flow`, read later: `Worker::session_hint`).
    pub session: Option<u32>,
    /// From a target subnet: the slot of the frame's flow.
    pub flow: Option<u32>,
    /// From a target subnet: the frame's reverse-SNAT key, when it is plain return traffic
    /// (TCP, UDP, echo reply). Derived from the frame's own bytes by the same function
    /// `process` would call, so `process` uses it instead of parsing the ports again; it
    /// still validates the header and compares the key with the flow it finds.
    pub reverse: Option<crate::flow::ReverseKey>,
    /// How many bytes the frame's AEAD call will cover, from its length (a guess: the
    /// ciphertext of a client's P_DATA_V2, the plaintext of a packet to seal), for the lines
    /// of the key requested ahead of it (`KeyReach`).
    pub aead_len: u16,
}
