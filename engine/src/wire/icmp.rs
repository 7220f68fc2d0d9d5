//! ICMP (RFC 792): echo request/reply (id and sequence) and the errors that embed the header of
//! the packet that caused them, which SNAT must translate too.

use super::checksum;
use super::Malformed;

/// Header length (type, code, checksum, rest-of-header).
pub const HEADER_LEN: usize = 8;

/// ICMP types sluice handles.
pub mod kind {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// Codes of destination unreachable (type 3) sluice sends.
pub mod code {
    /// Fragmentation needed and DF set (RFC 792), with the next hop's MTU (RFC 1191).
    pub const FRAGMENTATION_NEEDED: u8 = 4;
}

/// A view of an ICMP message.
#[derive(Debug)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// A view after checking the header fits.
    ///
    /// # Errors
    /// `Malformed` if shorter than 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// The fixed header (`new_checked` saw it whole): constant offsets into it need no bounds
    /// checks, which keeps the accessors small enough to inline.
    #[inline(always)]
    fn h(&self) -> &[u8; HEADER_LEN] {
        const NONE: [u8; HEADER_LEN] = [0; HEADER_LEN];
        self.buffer.as_ref().first_chunk().unwrap_or(&NONE)
    }

    /// The type.
    #[inline]
    pub fn kind(&self) -> u8 {
        self.h()[0]
    }

    /// The code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.h()[1]
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        let b = self.h();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// Whether this is an echo request or reply (which carry an identifier).
    #[inline]
    pub fn is_echo(&self) -> bool {
        matches!(self.kind(), kind::ECHO_REQUEST | kind::ECHO_REPLY)
    }

    /// Whether this is an error that embeds the offending packet's header.
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.kind(),
            kind::DEST_UNREACHABLE | kind::TIME_EXCEEDED | kind::PARAMETER_PROBLEM
        )
    }

    /// The echo identifier.
    #[inline]
    pub fn echo_id(&self) -> u16 {
        let b = self.h();
        u16::from_be_bytes([b[4], b[5]])
    }

    /// The echo sequence number.
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        let b = self.h();
        u16::from_be_bytes([b[6], b[7]])
    }

    /// The next hop's MTU of a fragmentation needed (RFC 1191: the low 16 bits of the rest of
    /// the header).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        let b = self.h();
        u16::from_be_bytes([b[6], b[7]])
    }

    /// The data after the header (for errors: the embedded IPv4 header and 8 bytes).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether the checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(0, self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Folds a 16-bit change into the checksum; call it once the field holds its new value.
    #[inline]
    pub fn adjust16(&mut self, old: u16, new: u16) {
        let c = checksum::update16(self.checksum(), old, new);
        self.buffer.as_mut()[2..4].copy_from_slice(&c.to_be_bytes());
        if c == 0 {
            after_zero_update(self.buffer.as_mut());
        }
    }

    /// Sets the echo identifier, updating the checksum.
    #[inline]
    pub fn set_echo_id(&mut self, id: u16) {
        let old = self.echo_id();
        self.buffer.as_mut()[4..6].copy_from_slice(&id.to_be_bytes());
        self.adjust16(old, id);
    }

    /// The data after the header, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Recomputes the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.buffer.as_mut()[2..4].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(self.buffer.as_ref());
        self.buffer.as_mut()[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

/// Corrects `message` (an ICMP message whose fields hold their new values) where an
/// incremental update (RFC 1624 eqn. 3) wrote the checksum 0x0000. That is right when the
/// other words sum to 0xffff (negative zero), but a message whose other bytes are all zero (an
/// echo reply with identifier, sequence and data 0) sums to positive zero and its checksum is
/// 0xffff, which receivers require: ICMP, with no pseudo-header, is the one checksum here
/// whose other words can all be zero (RFC 1624 §3). Rare, so out of line.
#[cold]
#[inline(never)]
pub fn after_zero_update(message: &mut [u8]) {
    if message.len() >= HEADER_LEN && message[..2].iter().chain(&message[4..]).all(|&x| x == 0) {
        message[2..4].copy_from_slice(&[0xff, 0xff]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_and_error() {
        let mut echo = [kind::ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 7, b'h', b'i'];
        let mut p = IcmpPacket::new_checked(&mut echo[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum() && p.is_echo() && !p.is_error());
        assert_eq!((p.echo_id(), p.echo_seq()), (0x1234, 7));
        p.set_echo_id(0xbeef);
        assert!(p.verify_checksum());
        // An echo reply translated back to identifier 0, with sequence 0 and no data (as the
        // engine_pipeline fuzz target found it): every other byte is zero, so its checksum is
        // 0xffff, not the 0x0000 the incremental update gives.
        let mut reply = [kind::ECHO_REPLY, 0, 0xab, 0xff, 0x54, 0x00, 0, 0];
        let mut p = IcmpPacket::new_checked(&mut reply[..]).unwrap();
        assert!(p.verify_checksum());
        p.set_echo_id(0);
        assert!(p.verify_checksum(), "{reply:02x?}");
        assert_eq!(reply, [kind::ECHO_REPLY, 0, 0xff, 0xff, 0, 0, 0, 0]);
        // A message whose other words sum to 0xffff keeps 0x0000.
        let mut other = [kind::ECHO_REPLY, 0, 0xff, 0xfe, 0, 1, 0xff, 0xff];
        let mut p = IcmpPacket::new_checked(&mut other[..]).unwrap();
        assert!(p.verify_checksum());
        p.set_echo_id(0);
        assert!(p.verify_checksum());
        assert_eq!(other, [kind::ECHO_REPLY, 0, 0, 0, 0, 0, 0xff, 0xff]);
        let err = [kind::TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0, 0x45];
        let e = IcmpPacket::new_checked(&err[..]).unwrap();
        assert!(e.is_error());
        assert_eq!(e.data(), &[0x45]);
        assert!(IcmpPacket::new_checked(&err[..7]).is_err());
        let too_big = [
            kind::DEST_UNREACHABLE,
            code::FRAGMENTATION_NEEDED,
            0,
            0,
            0,
            0,
            5,
            0xdc,
        ];
        let e = IcmpPacket::new_checked(&too_big[..]).unwrap();
        assert!(e.is_error());
        assert_eq!(e.next_hop_mtu(), 1500);
    }
}
