//! TCP headers (RFC 9293): ports, sequence and acknowledgment numbers, window, flags, the MSS
//! option SNAT clamps and the window scale option (RFC 7323) flow tracking reads.

use super::checksum;
use super::Malformed;

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;

/// TCP flags.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// A view of a TCP segment; `new_checked` guarantees the header (with options) fits.
#[derive(Debug)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// A view after checking the data offset against the buffer.
    ///
    /// # Errors
    /// `Malformed` if the header does not fit.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Malformed);
        }
        let off = usize::from(b[12] >> 4) * 4;
        if off < MIN_HEADER_LEN || off > b.len() {
            return Err(Malformed);
        }
        Ok(Self { buffer })
    }

    /// The fixed header (`new_checked` saw it whole): constant offsets into it need no bounds
    /// checks, which keeps the accessors small enough to inline.
    #[inline(always)]
    fn h(&self) -> &[u8; MIN_HEADER_LEN] {
        const NONE: [u8; MIN_HEADER_LEN] = [0; MIN_HEADER_LEN];
        self.buffer.as_ref().first_chunk().unwrap_or(&NONE)
    }

    #[inline]
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.h()[0], self.h()[1]])
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.h()[2], self.h()[3]])
    }

    /// Sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        let h = self.h();
        u32::from_be_bytes([h[4], h[5], h[6], h[7]])
    }

    /// Acknowledgment number (meaningful with the ACK flag).
    #[inline]
    pub fn ack(&self) -> u32 {
        let h = self.h();
        u32::from_be_bytes([h[8], h[9], h[10], h[11]])
    }

    /// The window field, unscaled.
    #[inline]
    pub fn window(&self) -> u16 {
        u16::from_be_bytes([self.h()[14], self.h()[15]])
    }

    /// Header length with options.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.h()[12] >> 4) * 4
    }

    /// The length of the data after the header.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.b().len().saturating_sub(self.header_len())
    }

    /// The flag bits (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.h()[13]
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.h()[16], self.h()[17]])
    }

    /// Whether the checksum verifies over the whole segment for these addresses.
    #[inline]
    pub fn verify_checksum(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
        let acc =
            checksum::pseudo_header(src, dst, super::ipv4::protocol::TCP, self.b().len() as u16);
        checksum::fold(checksum::sum(acc, self.b())) == 0xffff
    }

    /// The offset of the value of option `want` (whose length, kind and length bytes
    /// included, is `want_len`) within the segment, if present.
    #[inline]
    fn option_offset(&self, want: u8, want_len: usize) -> Option<usize> {
        let b = self.b();
        let mut i = MIN_HEADER_LEN;
        let end = self.header_len();
        while i < end {
            match b[i] {
                0 => return None,
                1 => i += 1,
                kind => {
                    let len = usize::from(*b.get(i + 1)?);
                    if len < 2 || i + len > end {
                        return None;
                    }
                    if kind == want && len == want_len {
                        return Some(i + 2);
                    }
                    i += len;
                }
            }
        }
        None
    }

    /// The offset of the MSS option's value within the segment, if present.
    #[inline]
    fn mss_offset(&self) -> Option<usize> {
        self.option_offset(2, 4)
    }

    /// The window scale option's shift count (RFC 7323 §2.2; a SYN's only), if present, as
    /// sent (the receiver treats more than 14 as 14).
    #[inline]
    pub fn window_scale(&self) -> Option<u8> {
        self.option_offset(3, 3).map(|o| self.b()[o])
    }

    /// The MSS option's value, if present.
    #[inline]
    pub fn mss(&self) -> Option<u16> {
        self.mss_offset()
            .map(|o| u16::from_be_bytes([self.b()[o], self.b()[o + 1]]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    fn set_checksum_field(&mut self, c: u16) {
        self.buffer.as_mut()[16..18].copy_from_slice(&c.to_be_bytes());
    }

    /// Folds a 16-bit change into the checksum.
    #[inline]
    pub fn adjust16(&mut self, old: u16, new: u16) {
        let c = checksum::update16(self.checksum(), old, new);
        self.set_checksum_field(c);
    }

    /// Folds an address change (pseudo-header) into the checksum.
    #[inline]
    pub fn adjust32(&mut self, old: u32, new: u32) {
        let c = checksum::update32(self.checksum(), old, new);
        self.set_checksum_field(c);
    }

    /// Sets the source port, updating the checksum.
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

    /// Lowers the MSS option to `max` if it is larger; returns whether it changed.
    #[inline]
    pub fn clamp_mss(&mut self, max: u16) -> bool {
        let Some(o) = self.mss_offset() else {
            return false;
        };
        let old = u16::from_be_bytes([self.b()[o], self.b()[o + 1]]);
        if old <= max {
            return false;
        }
        self.buffer.as_mut()[o..o + 2].copy_from_slice(&max.to_be_bytes());
        // The option sits at an even offset only if aligned; fold the change as a word at the
        // word boundary it occupies.
        if o % 2 == 0 {
            self.adjust16(old, max);
        } else {
            let w = o - 1;
            let b = self.b();
            let new_hi = u16::from_be_bytes([b[w], b[w + 1]]);
            let new_lo = u16::from_be_bytes([b[w + 2], b[w + 3]]);
            let old_hi = u16::from_be_bytes([b[w], (old >> 8) as u8]);
            let old_lo = u16::from_be_bytes([old as u8, b[w + 3]]);
            self.adjust16(old_hi, new_hi);
            self.adjust16(old_lo, new_lo);
        }
        true
    }

    /// Computes and writes the checksum for these addresses.
    #[inline]
    pub fn fill_checksum(&mut self, src: [u8; 4], dst: [u8; 4]) {
        self.set_checksum_field(0);
        let len = self.b().len();
        let acc = checksum::pseudo_header(src, dst, super::ipv4::protocol::TCP, len as u16);
        let c = !checksum::fold(checksum::sum(acc, self.b()));
        self.set_checksum_field(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN with options MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
    fn syn() -> Vec<u8> {
        let mut b = vec![
            0xc3,
            0x50,
            0x00,
            0x50,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0xa0,
            flags::SYN,
            0xfa,
            0xf0,
            0,
            0,
            0,
            0, // header
            2,
            4,
            0x05,
            0xb4,
            4,
            2,
            8,
            10,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            1,
            3,
            3,
            7,
        ];
        let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
        t.fill_checksum([10, 200, 0, 2], [172, 31, 1, 10]);
        b
    }

    #[test]
    fn parse_and_clamp_mss() {
        let mut b = syn();
        let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(
            (t.src_port(), t.dst_port(), t.header_len()),
            (50000, 80, 40)
        );
        assert_eq!(t.mss(), Some(1460));
        assert_eq!((t.seq(), t.ack(), t.window()), (1, 0, 0xfaf0));
        assert_eq!(t.payload_len(), 0);
        assert_eq!(
            t.window_scale(),
            Some(7),
            "after SACK-permitted, timestamps and a NOP"
        );
        assert!(t.verify_checksum([10, 200, 0, 2], [172, 31, 1, 10]));
        assert!(t.clamp_mss(1328));
        assert_eq!(t.mss(), Some(1328));
        assert!(!t.clamp_mss(1400), "never raises");
        assert!(t.verify_checksum([10, 200, 0, 2], [172, 31, 1, 10]));
        t.set_src_port(61000);
        t.adjust32(
            u32::from_be_bytes([10, 200, 0, 2]),
            u32::from_be_bytes([172, 31, 1, 5]),
        );
        assert!(t.verify_checksum([172, 31, 1, 5], [172, 31, 1, 10]));
    }

    #[test]
    fn odd_aligned_mss_keeps_checksum() {
        // NOP first puts the MSS value at an odd offset.
        let mut b = vec![
            0,
            1,
            0,
            2,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0x60,
            flags::SYN,
            1,
            0,
            0,
            0,
            0,
            0,
            1,
            2,
            4,
            0x05,
        ];
        b.extend_from_slice(&[0xb4, 0, 0, 0]);
        b[12] = 0x70; // 28-byte header
        let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
        t.fill_checksum([1, 1, 1, 1], [2, 2, 2, 2]);
        assert_eq!(t.mss(), Some(1460));
        assert!(t.clamp_mss(1200));
        assert_eq!(t.mss(), Some(1200));
        assert!(t.verify_checksum([1, 1, 1, 1], [2, 2, 2, 2]));
    }

    #[test]
    fn malformed_options_are_harmless() {
        let mut b = syn();
        b[21] = 0; // option length 0
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(t.mss(), None);
        assert_eq!(
            t.window_scale(),
            None,
            "the walk stops at the broken option"
        );
        assert!(TcpPacket::new_checked(&b[..19]).is_err());
        let mut big = syn();
        big[12] = 0xf0; // 60-byte header in a 40-byte segment
        assert!(TcpPacket::new_checked(&big[..]).is_err());
    }
}
