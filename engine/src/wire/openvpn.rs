//! OpenVPN's first byte (opcode and key_id) and the P_DATA_V2 data packet.
//!
//! Spec: openvpn-protocol.md §1.2 (opcodes), §7.1 (P_DATA_V2 layout: byte0, peer-id u24,
//! data-pid u32, 16-byte tag, ciphertext; AAD is bytes 0..8).

use super::Malformed;

/// An OpenVPN opcode (the high 5 bits of the first byte); open, with the known values as consts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Opcode(pub u8);

impl Opcode {
    /// Soft reset (renegotiation).
    pub const CONTROL_SOFT_RESET_V1: Self = Self(3);
    /// Reliable control packet carrying TLS bytes.
    pub const CONTROL_V1: Self = Self(4);
    /// Acknowledgements only.
    pub const ACK_V1: Self = Self(5);
    /// Data packet without peer-id.
    pub const DATA_V1: Self = Self(6);
    /// The client's first packet.
    pub const CONTROL_HARD_RESET_CLIENT_V2: Self = Self(7);
    /// The server's answer to it.
    pub const CONTROL_HARD_RESET_SERVER_V2: Self = Self(8);
    /// Data packet with a 24-bit peer-id.
    pub const DATA_V2: Self = Self(9);
    /// The client's first packet with tls-crypt-v2.
    pub const CONTROL_HARD_RESET_CLIENT_V3: Self = Self(10);
    /// Control packet with a wrapped client key (tls-crypt-v2).
    pub const CONTROL_WKC_V1: Self = Self(11);

    /// The opcode of a packet's first byte.
    #[inline]
    pub fn of(byte0: u8) -> Self {
        Self(byte0 >> 3)
    }

    /// Whether this is a data-channel opcode.
    #[inline]
    pub fn is_data(self) -> bool {
        self == Self::DATA_V2 || self == Self::DATA_V1
    }
}

/// The key_id (low 3 bits of the first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId(pub u8);

impl KeyId {
    /// The key_id of a packet's first byte.
    #[inline]
    pub fn of(byte0: u8) -> Self {
        Self(byte0 & 0x07)
    }
}

/// A session's 24-bit peer-id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

impl PeerId {
    /// "No peer-id" on the wire.
    pub const NONE: Self = Self(0x00ff_ffff);
}

/// Header length of P_DATA_V2 before the tag: byte0, peer-id, data-pid.
pub const DATA_V2_HEADER_LEN: usize = 8;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Bytes P_DATA_V2 adds to a plaintext.
pub const DATA_V2_OVERHEAD: usize = DATA_V2_HEADER_LEN + TAG_LEN;

/// A view of a P_DATA_V2 packet; `new_checked` guarantees the header, the tag and at least one
/// byte of ciphertext are present.
#[derive(Debug)]
pub struct DataPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DataPacket<T> {
    /// A view after checking the opcode and the length.
    ///
    /// # Errors
    /// `Malformed` if not P_DATA_V2 or too short.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() <= DATA_V2_OVERHEAD || Opcode::of(b[0]) != Opcode::DATA_V2 {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// The fixed header (`new_checked` saw it whole): constant offsets into it need no bounds
    /// checks, which keeps the accessors small enough to inline.
    #[inline(always)]
    fn h(&self) -> &[u8; DATA_V2_HEADER_LEN] {
        const NONE: [u8; DATA_V2_HEADER_LEN] = [0; DATA_V2_HEADER_LEN];
        self.buffer.as_ref().first_chunk().unwrap_or(&NONE)
    }

    /// The key_id.
    #[inline]
    pub fn key_id(&self) -> KeyId {
        KeyId::of(self.h()[0])
    }

    /// The peer-id.
    #[inline]
    pub fn peer_id(&self) -> PeerId {
        let b = self.h();
        PeerId(u32::from_be_bytes([0, b[1], b[2], b[3]]))
    }

    /// The data packet-id.
    #[inline]
    pub fn packet_id(&self) -> u32 {
        let b = self.h();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
}

/// Writes the 8-byte P_DATA_V2 header into `b`.
pub fn write_data_v2_header(b: &mut [u8], key_id: KeyId, peer: PeerId, packet_id: u32) {
    b[..DATA_V2_HEADER_LEN].copy_from_slice(&data_v2_header(key_id, peer, packet_id));
}

/// The 8-byte P_DATA_V2 header (also the AEAD's associated data), built in registers.
#[inline]
pub fn data_v2_header(key_id: KeyId, peer: PeerId, packet_id: u32) -> [u8; DATA_V2_HEADER_LEN] {
    let op = u32::from((Opcode::DATA_V2.0 << 3) | (key_id.0 & 0x07));
    let first = op << 24 | (peer.0 & 0x00ff_ffff);
    (u64::from(first) << 32 | u64::from(packet_id)).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's Appendix B.4 packet: peer-id 0, key_id 0, data-pid 1.
    const B4: [u8; 40] = [
        0x48, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x90, 0x03, 0x33, 0x8d, 0x2e, 0x5d, 0xbd,
        0xd9, 0xac, 0x18, 0x1b, 0xcb, 0x3b, 0x86, 0x15, 0x9d, 0x72, 0x56, 0x03, 0x82, 0xbf, 0x76,
        0x4e, 0x4c, 0x9e, 0x63, 0xec, 0x11, 0xf7, 0x7a, 0xd9, 0x48,
    ];

    #[test]
    fn deconstruct_b4() {
        let p = DataPacket::new_checked(&B4[..]).unwrap();
        assert_eq!(
            (p.key_id(), p.peer_id(), p.packet_id()),
            (KeyId(0), PeerId(0), 1)
        );
        let mut h = [0u8; 8];
        write_data_v2_header(&mut h, KeyId(0), PeerId(0), 1);
        assert_eq!(h, B4[..8]);
        write_data_v2_header(&mut h, KeyId(2), PeerId(0x0a0b0c), 0xdead_beef);
        let p = DataPacket::new_checked([&h[..], &[0; 17]].concat()).unwrap();
        assert_eq!(
            (p.key_id(), p.peer_id(), p.packet_id()),
            (KeyId(2), PeerId(0x0a0b0c), 0xdead_beef)
        );
    }

    #[test]
    fn refuses_short_or_other_opcodes() {
        assert!(DataPacket::new_checked(&B4[..24]).is_err(), "no ciphertext");
        let mut ctl = B4;
        ctl[0] = 0x20;
        assert!(DataPacket::new_checked(&ctl[..]).is_err());
        assert_eq!(Opcode::of(0x38), Opcode::CONTROL_HARD_RESET_CLIENT_V2);
        assert!(Opcode::of(0x4a).is_data() && !Opcode::of(0x28).is_data());
    }
}
