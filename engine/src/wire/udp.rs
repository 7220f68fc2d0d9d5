//! UDP headers (RFC 768).

use super::checksum;
use super::Malformed;

/// Header length.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram; `new_checked` guarantees the length field fits the buffer.
#[derive(Debug)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// A view after checking the header and the length field.
    ///
    /// # Errors
    /// `Malformed` if the header does not fit or the length field is inconsistent.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Malformed);
        }
        let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        if len < HEADER_LEN || len > b.len() {
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

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        let b = self.h();
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        let b = self.h();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// The length field (header and payload).
    #[inline]
    pub fn len(&self) -> usize {
        let b = self.h();
        usize::from(u16::from_be_bytes([b[4], b[5]]))
    }

    /// Whether the datagram has no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN
    }

    /// The checksum field (0: none).
    #[inline]
    pub fn checksum(&self) -> u16 {
        let b = self.h();
        u16::from_be_bytes([b[6], b[7]])
    }

    /// The payload.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len()]
    }

    /// Whether the checksum verifies (or is absent) for these IPv4 addresses.
    #[inline]
    pub fn verify_checksum(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let b = &self.buffer.as_ref()[..self.len()];
        let acc = checksum::pseudo_header(src, dst, super::ipv4::protocol::UDP, self.len() as u16);
        checksum::fold(checksum::sum(acc, b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    fn set_checksum_field(&mut self, c: u16) {
        self.buffer.as_mut()[6..8].copy_from_slice(&c.to_be_bytes());
    }

    /// Sets the source port; `pseudo` is the address change to fold into the checksum too.
    #[inline]
    pub fn set_src_port(&mut self, p: u16) {
        let old = self.src_port();
        self.buffer.as_mut()[0..2].copy_from_slice(&p.to_be_bytes());
        self.adjust16(old, p);
    }

    /// Sets the destination port, updating the checksum.
    #[inline]
    pub fn set_dst_port(&mut self, p: u16) {
        let old = self.dst_port();
        self.buffer.as_mut()[2..4].copy_from_slice(&p.to_be_bytes());
        self.adjust16(old, p);
    }

    /// Folds a 16-bit change into the checksum (if there is one).
    #[inline]
    pub fn adjust16(&mut self, old: u16, new: u16) {
        let c = self.checksum();
        if c != 0 {
            let n = checksum::update16(c, old, new);
            self.set_checksum_field(if n == 0 { 0xffff } else { n });
        }
    }

    /// Folds an address change (pseudo-header) into the checksum (if there is one).
    #[inline]
    pub fn adjust32(&mut self, old: u32, new: u32) {
        let c = self.checksum();
        if c != 0 {
            let n = checksum::update32(c, old, new);
            self.set_checksum_field(if n == 0 { 0xffff } else { n });
        }
    }

    /// Computes and writes the checksum for these IPv4 addresses.
    #[inline]
    pub fn fill_checksum(&mut self, src: [u8; 4], dst: [u8; 4]) {
        self.set_checksum_field(0);
        let len = self.len();
        let acc = checksum::pseudo_header(src, dst, super::ipv4::protocol::UDP, len as u16);
        let c = !checksum::fold(checksum::sum(acc, &self.buffer.as_ref()[..len]));
        self.set_checksum_field(if c == 0 { 0xffff } else { c });
    }
}

/// Writes a UDP header for a payload of `payload_len` bytes, checksum left 0.
pub fn write_header(b: &mut [u8], src_port: u16, dst_port: u16, payload_len: usize) {
    b[0..2].copy_from_slice(&src_port.to_be_bytes());
    b[2..4].copy_from_slice(&dst_port.to_be_bytes());
    b[4..6].copy_from_slice(&((HEADER_LEN + payload_len) as u16).to_be_bytes());
    b[6..8].copy_from_slice(&[0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construct_parse_checksum() {
        let mut b = [0u8; 12];
        write_header(&mut b, 5353, 53, 4);
        b[8..].copy_from_slice(b"ping");
        let (src, dst) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        u.fill_checksum(src, dst);
        assert!(u.verify_checksum(src, dst));
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (5353, 53, 12));
        u.set_src_port(40000);
        u.adjust32(u32::from_be_bytes(src), u32::from_be_bytes([172, 31, 1, 5]));
        assert!(u.verify_checksum([172, 31, 1, 5], dst));
        assert_eq!(u.payload(), b"ping");
        assert!(UdpPacket::new_checked(&b[..7]).is_err());
        let mut bad = b;
        bad[5] = 13;
        assert!(UdpPacket::new_checked(&bad[..]).is_err());
    }
}
