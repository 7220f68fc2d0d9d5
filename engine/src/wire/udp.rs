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

/// The IPv4 and UDP headers of datagrams between two fixed endpoints (a session's listener
/// and its client), prepared once: per datagram only the two lengths, the identification and
/// the IPv4 checksum are filled in. Option-less IPv4, TTL 64, UDP checksum 0 (optional over
/// IPv4), as `Ipv4Repr::emit` and `write_header` write them, but with DF clear: a router on a
/// client's path with a smaller MTU (PPPoE's 1492) fragments a full-size datagram instead of
/// dropping it with an ICMP "fragmentation needed" the appliance does not act on (what a
/// kernel's UDP socket does after PMTU discovery, sluice leaves to the path). A datagram that
/// may be fragmented needs an identification of its own (RFC 6864 §4.1): with one for all, the
/// client's kernel reassembled the fragments of two datagrams into one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4UdpHeaders {
    bytes: [u8; Self::LEN],
    /// The ones' complement sum of the IPv4 header words other than length and checksum.
    sum: u32,
}

impl Ipv4UdpHeaders {
    /// Bytes written: the IPv4 header and the UDP header.
    pub const LEN: usize = super::ipv4::MIN_HEADER_LEN + HEADER_LEN;

    /// The headers from `src` to `dst` (address, port).
    pub fn new(src: (u32, u16), dst: (u32, u16)) -> Self {
        let mut bytes = [0u8; Self::LEN];
        super::ipv4::Ipv4Repr {
            src: src.0.to_be_bytes(),
            dst: dst.0.to_be_bytes(),
            protocol: super::ipv4::protocol::UDP,
            payload_len: 0,
            ttl: super::ipv4::DEFAULT_TTL,
        }
        .emit(&mut bytes);
        bytes[6] &= !0x40; // DF
        bytes[10..12].copy_from_slice(&[0, 0]);
        bytes[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum::sum(0, &bytes[..super::ipv4::MIN_HEADER_LEN]);
        write_header(&mut bytes[super::ipv4::MIN_HEADER_LEN..], src.1, dst.1, 0);
        Self { bytes, sum }
    }

    /// Whether these are the headers from `src` to `dst`.
    #[inline]
    pub fn is_between(&self, src: (u32, u16), dst: (u32, u16)) -> bool {
        let b = &self.bytes;
        b[12..16] == src.0.to_be_bytes()
            && b[16..20] == dst.0.to_be_bytes()
            && b[20..22] == src.1.to_be_bytes()
            && b[22..24] == dst.1.to_be_bytes()
    }

    /// Writes the headers for a UDP payload of `payload_len` bytes, with identification
    /// `ident`, into `out`.
    #[inline]
    pub fn write(&self, out: &mut [u8; Self::LEN], payload_len: usize, ident: u16) {
        // In halves at 0 and 16, as a copy of these headers is stored: the pipeline copies a
        // session's headers to the stack (two 16-byte stores) right before this reads them, and
        // a 28-byte copy read them as 16 bytes at 0 and 16 at 12, a load across both stores that
        // the processor cannot forward (the largest cost in `send_to_client` in a profile).
        let (head, tail) = out.split_at_mut(16);
        head.copy_from_slice(&self.bytes[..16]);
        tail.copy_from_slice(&self.bytes[16..]);
        let udp_len = (HEADER_LEN + payload_len) as u16;
        let total = udp_len.wrapping_add(super::ipv4::MIN_HEADER_LEN as u16);
        out[2..4].copy_from_slice(&total.to_be_bytes());
        out[4..6].copy_from_slice(&ident.to_be_bytes());
        // The prepared sum has the identification as 0.
        let c = !checksum::fold(self.sum + u32::from(total) + u32::from(ident));
        out[10..12].copy_from_slice(&c.to_be_bytes());
        out[24..26].copy_from_slice(&udp_len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The prepared headers are byte for byte what `Ipv4Repr::emit` and `write_header`
        /// write for the same datagram, DF cleared and the identification set.
        #[test]
        fn prepared_headers_match_emitted(src: (u32, u16), dst: (u32, u16), len in 0usize..65000, other: (u32, u16), ident: u16) {
            let t = Ipv4UdpHeaders::new(src, dst);
            let mut fast = [0u8; Ipv4UdpHeaders::LEN];
            t.write(&mut fast, len, ident);
            let mut slow = [0u8; Ipv4UdpHeaders::LEN];
            crate::wire::ipv4::Ipv4Repr {
                src: src.0.to_be_bytes(),
                dst: dst.0.to_be_bytes(),
                protocol: crate::wire::ipv4::protocol::UDP,
                payload_len: HEADER_LEN + len,
                ttl: 64,
            }
            .emit(&mut slow);
            slow[4..6].copy_from_slice(&ident.to_be_bytes());
            slow[6] = 0;
            slow[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&slow[..20]);
            slow[10..12].copy_from_slice(&c.to_be_bytes());
            write_header(&mut slow[20..], src.1, dst.1, len);
            proptest::prop_assert_eq!(fast, slow);
            proptest::prop_assert!(t.is_between(src, dst));
            proptest::prop_assert_eq!(t.is_between(src, other), other == dst);
        }
    }

    proptest::proptest! {
        /// A datagram's filled checksum verifies; any one byte changed (header or payload, of
        /// an even or odd length) or another address in the pseudo-header does not, unless the
        /// checksum field is 0 (none). A sum that comes to 0 is sent, and verifies, as 0xffff.
        #[test]
        fn a_changed_byte_fails_the_checksum(
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            at: proptest::sample::Index,
            flip in 1u8..=255,
            src: [u8; 4],
            dst: [u8; 4],
        ) {
            let mut b = vec![0u8; HEADER_LEN + payload.len()];
            write_header(&mut b, 40_000, 1194, payload.len());
            b[HEADER_LEN..].copy_from_slice(&payload);
            UdpPacket::new_checked(&mut b[..]).unwrap().fill_checksum(src, dst);
            let u = UdpPacket::new_checked(&b[..]).unwrap();
            proptest::prop_assert_ne!(u.checksum(), 0);
            proptest::prop_assert!(u.verify_checksum(src, dst));
            let mut other = dst;
            other[3] ^= flip;
            proptest::prop_assert!(!u.verify_checksum(src, other));
            // Any byte but the length field (a changed length is another datagram's view).
            let i = at.index(b.len() - 2);
            let i = if i >= 4 { i + 2 } else { i };
            let mut bad = b.clone();
            bad[i] ^= flip;
            let u = UdpPacket::new_checked(&bad[..]).unwrap();
            let bad_sum_is_zero = (6..8).contains(&i) && u.checksum() == 0;
            proptest::prop_assert_eq!(u.verify_checksum(src, dst), bad_sum_is_zero);
            bad[6..8].copy_from_slice(&[0, 0]);
            proptest::prop_assert!(UdpPacket::new_checked(&bad[..]).unwrap().verify_checksum(src, dst));
        }
    }

    #[test]
    fn a_sum_of_zero_is_sent_and_verified_as_all_ones() {
        // Ports and payload chosen so that the checksum computes to 0: the pseudo-header of
        // 0.0.0.0 to 0.0.0.0 sums to 17 + 10, the header to 1 + 0 + 10, the payload word to
        // 0xffff - 17 - 10 - 1 - 10 = 0xffd9; the ones' complement of 0xffff is 0.
        let mut b = [0u8; 10];
        write_header(&mut b, 1, 0, 2);
        b[8..].copy_from_slice(&0xffd9u16.to_be_bytes());
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        u.fill_checksum([0; 4], [0; 4]);
        assert_eq!(u.checksum(), 0xffff);
        assert!(u.verify_checksum([0; 4], [0; 4]));
        assert!(!u.verify_checksum([0; 4], [0, 0, 0, 1]));
    }

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
