//! Control-channel packets (plain: no tls-auth or tls-crypt), parsed and built.
//!
//! Spec: openvpn-protocol.md §2.1: opcode|key_id, the sender's 8-byte session id, an ack count
//! (0 to 8) with that many u32 msg-pids and, when there are acks, the receiver's session id;
//! then, except in P_ACK_V1, the u32 msg-pid and the payload.

use arrayvec::ArrayVec;

/// An 8-byte control-channel session id (never all zero).
pub type SessionId = [u8; 8];

/// Control-channel opcodes (the high 5 bits of the first byte).
pub mod opcode {
    /// Soft reset: a renegotiation.
    pub const SOFT_RESET_V1: u8 = 3;
    /// Reliable packet carrying TLS bytes.
    pub const CONTROL_V1: u8 = 4;
    /// Acknowledgements only.
    pub const ACK_V1: u8 = 5;
    /// The client's first packet.
    pub const HARD_RESET_CLIENT_V2: u8 = 7;
    /// The server's answer.
    pub const HARD_RESET_SERVER_V2: u8 = 8;
    /// The client's first packet with tls-crypt-v2 (not supported: no wrapped key handling).
    pub const HARD_RESET_CLIENT_V3: u8 = 10;
}

/// The most acks one packet may carry.
pub const MAX_ACKS: usize = 8;

/// The longest payload (TLS bytes, or a reset's) a packet may carry. OpenVPN 2.6 cuts its TLS
/// output to fit `tls-mtu` (1250 bytes with the IP and UDP headers, §3.4) and drops a control
/// packet that does not fit its receive buffer ("Incoming control channel packet too big");
/// 2048 is above both. The bound is what keeps a peer's out-of-order messages, which the
/// reliability layer holds until the gap before them fills, from costing a datagram's 64 KiB
/// each.
pub const MAX_PAYLOAD: usize = 2048;

/// Why a datagram is not a control packet sluice accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than its fields say.
    Truncated,
    /// Not a control opcode, or one sluice does not handle.
    BadOpcode,
    /// More than 8 acks.
    TooManyAcks,
    /// An all-zero session id.
    ZeroSessionId,
    /// A payload longer than `MAX_PAYLOAD`.
    TooBig,
}

/// A parsed control packet borrowing its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPacket<'a> {
    /// The opcode.
    pub opcode: u8,
    /// The key_id.
    pub key_id: u8,
    /// The sender's session id.
    pub session_id: SessionId,
    /// Acknowledged msg-pids.
    pub acks: ArrayVec<u32, MAX_ACKS>,
    /// The receiver's session id (present when there are acks).
    pub remote_session_id: Option<SessionId>,
    /// The msg-pid (absent in P_ACK_V1).
    pub msg_id: Option<u32>,
    /// TLS bytes (or the reset's TLV payload).
    pub payload: &'a [u8],
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], PacketError> {
    if b.len() < n {
        return Err(PacketError::Truncated);
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn sid(b: &[u8]) -> SessionId {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

impl<'a> ControlPacket<'a> {
    /// Parses a datagram.
    ///
    /// # Errors
    /// What makes it unacceptable; never panics.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, PacketError> {
        let mut b = datagram;
        let first = take(&mut b, 1)?[0];
        let (op, key_id) = (first >> 3, first & 7);
        let has_msg = match op {
            opcode::ACK_V1 => false,
            opcode::SOFT_RESET_V1
            | opcode::CONTROL_V1
            | opcode::HARD_RESET_CLIENT_V2
            | opcode::HARD_RESET_SERVER_V2 => true,
            _ => return Err(PacketError::BadOpcode),
        };
        let session_id = sid(take(&mut b, 8)?);
        if session_id == [0; 8] {
            return Err(PacketError::ZeroSessionId);
        }
        let n = usize::from(take(&mut b, 1)?[0]);
        if n > MAX_ACKS {
            return Err(PacketError::TooManyAcks);
        }
        let mut acks = ArrayVec::new();
        for _ in 0..n {
            acks.push(u32_at(take(&mut b, 4)?));
        }
        let remote_session_id = if n > 0 {
            Some(sid(take(&mut b, 8)?))
        } else {
            None
        };
        let msg_id = if has_msg {
            Some(u32_at(take(&mut b, 4)?))
        } else {
            None
        };
        if op == opcode::ACK_V1 && n == 0 {
            return Err(PacketError::Truncated);
        }
        if has_msg && b.len() > MAX_PAYLOAD {
            return Err(PacketError::TooBig);
        }
        Ok(Self {
            opcode: op,
            key_id,
            session_id,
            acks,
            remote_session_id,
            msg_id,
            payload: if has_msg { b } else { &[] },
        })
    }

    /// Appends the packet's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((self.opcode << 3) | (self.key_id & 7));
        out.extend_from_slice(&self.session_id);
        out.push(self.acks.len() as u8);
        for a in &self.acks {
            out.extend_from_slice(&a.to_be_bytes());
        }
        if !self.acks.is_empty() {
            out.extend_from_slice(&self.remote_session_id.unwrap_or([0; 8]));
        }
        if let Some(m) = self.msg_id {
            out.extend_from_slice(&m.to_be_bytes());
            out.extend_from_slice(self.payload);
        }
    }

    /// The encoded length.
    pub fn encoded_len(&self) -> usize {
        1 + 8
            + 1
            + 4 * self.acks.len()
            + if self.acks.is_empty() { 0 } else { 8 }
            + self.msg_id.map_or(0, |_| 4 + self.payload.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn client_hard_reset_is_14_bytes() {
        // §2.1: client hard reset = 14 bytes (no acks, msg-pid 0, empty payload).
        let b = hex("38 0102030405060708 00 00000000");
        let p = ControlPacket::parse(&b).unwrap();
        assert_eq!(
            (p.opcode, p.key_id, p.msg_id, p.acks.len()),
            (opcode::HARD_RESET_CLIENT_V2, 0, Some(0), 0)
        );
        assert_eq!(b.len(), 14);
    }

    #[test]
    fn server_reset_is_26_bytes_and_round_trips() {
        // §12: the 26-byte server reset [sid_s][01][00000000][sid_c][00000000].
        let p = ControlPacket {
            opcode: opcode::HARD_RESET_SERVER_V2,
            key_id: 0,
            session_id: [0x11; 8],
            acks: [0u32].into_iter().collect(),
            remote_session_id: Some([0x22; 8]),
            msg_id: Some(0),
            payload: &[],
        };
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(
            out,
            hex("40 1111111111111111 01 00000000 2222222222222222 00000000")
        );
        assert_eq!(out.len(), 26);
        assert_eq!(p.encoded_len(), 26);
        assert_eq!(ControlPacket::parse(&out).unwrap(), p);
    }

    #[test]
    fn ack_sizes_match_the_reference() {
        for (n, len) in [(2usize, 26usize), (4, 34)] {
            let p = ControlPacket {
                opcode: opcode::ACK_V1,
                key_id: 0,
                session_id: [1; 8],
                acks: (0..n as u32).collect(),
                remote_session_id: Some([2; 8]),
                msg_id: None,
                payload: &[],
            };
            let mut out = Vec::new();
            p.encode(&mut out);
            assert_eq!(out.len(), len);
            assert_eq!(ControlPacket::parse(&out).unwrap(), p);
        }
    }

    #[test]
    fn the_b2_packets_without_their_hmac_parse() {
        // Appendix B.2's server reset with the tls-auth HMAC and replay fields removed.
        let b = hex("40 2477938d221a9057 01 00000000 2048056782ac42a3 00000000");
        let p = ControlPacket::parse(&b).unwrap();
        assert_eq!(
            p.remote_session_id,
            Some([0x20, 0x48, 0x05, 0x67, 0x82, 0xac, 0x42, 0xa3])
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(ControlPacket::parse(&[]), Err(PacketError::Truncated));
        assert_eq!(
            ControlPacket::parse(&hex("48 0102030405060708 00 00000000")),
            Err(PacketError::BadOpcode),
            "data"
        );
        assert_eq!(
            ControlPacket::parse(&hex("08 0102030405060708 00 00000000")),
            Err(PacketError::BadOpcode),
            "v1 reset"
        );
        assert_eq!(
            ControlPacket::parse(&hex("38 0000000000000000 00 00000000")),
            Err(PacketError::ZeroSessionId)
        );
        assert_eq!(
            ControlPacket::parse(&hex("28 0102030405060708 09")),
            Err(PacketError::TooManyAcks)
        );
        assert_eq!(
            ControlPacket::parse(&hex("20 0102030405060708 01 00000001 01020304")),
            Err(PacketError::Truncated)
        );
    }

    /// A packet with more payload than any OpenVPN peer sends is refused, so that the
    /// reliability layer never holds it; one at the limit, and a 2.6 client's largest (1222
    /// bytes in all, §3.4), pass.
    #[test]
    fn oversized_payloads_are_refused() {
        let packet = |payload_len: usize| {
            let p = ControlPacket {
                opcode: opcode::CONTROL_V1,
                key_id: 0,
                session_id: [1; 8],
                acks: [0u32].into_iter().collect(),
                remote_session_id: Some([2; 8]),
                msg_id: Some(5),
                payload: &vec![0x17; payload_len],
            };
            let mut out = Vec::new();
            p.encode(&mut out);
            out
        };
        let largest_of_a_client = packet(1222 - 26);
        assert_eq!(largest_of_a_client.len(), 1222);
        assert!(ControlPacket::parse(&largest_of_a_client).is_ok());
        assert_eq!(
            ControlPacket::parse(&packet(MAX_PAYLOAD))
                .unwrap()
                .payload
                .len(),
            MAX_PAYLOAD
        );
        for len in [MAX_PAYLOAD + 1, 65_000] {
            assert_eq!(
                ControlPacket::parse(&packet(len)),
                Err(PacketError::TooBig),
                "{len}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            if let Ok(p) = ControlPacket::parse(&data) {
                let mut out = Vec::new();
                p.encode(&mut out);
                proptest::prop_assert_eq!(ControlPacket::parse(&out).unwrap(), p);
            }
        }
    }
}
