//! Ethernet II frames.

use super::Malformed;

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = 14;

/// EtherType values sluice handles.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

/// A MAC address.
pub type Mac = [u8; 6];

/// The broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// Whether `mac` is a group address (broadcast or multicast: the I/G bit of its first byte).
pub fn is_group(mac: Mac) -> bool {
    mac[0] & 1 != 0
}

/// A view of an Ethernet II frame.
#[derive(Debug)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// A view after checking the header fits.
    ///
    /// # Errors
    /// `Malformed` if shorter than the header.
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

    /// Destination MAC.
    #[inline]
    pub fn dst(&self) -> Mac {
        let b = self.h();
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    /// Source MAC.
    #[inline]
    pub fn src(&self) -> Mac {
        let b = self.h();
        [b[6], b[7], b[8], b[9], b[10], b[11]]
    }

    /// The EtherType.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = self.h();
        u16::from_be_bytes([b[12], b[13]])
    }

    /// The payload.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    #[inline]
    pub fn set_dst(&mut self, m: Mac) {
        self.buffer.as_mut()[0..6].copy_from_slice(&m);
    }

    /// Sets the source MAC.
    #[inline]
    pub fn set_src(&mut self, m: Mac) {
        self.buffer.as_mut()[6..12].copy_from_slice(&m);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        self.buffer.as_mut()[12..14].copy_from_slice(&t.to_be_bytes());
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// Writes an Ethernet header into the first 14 bytes of `buf`.
pub fn write_header(buf: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 16] = [
        1, 2, 3, 4, 5, 6, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x08, 0x00, 0xaa, 0xbb,
    ];

    #[test]
    fn deconstruct_and_construct() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src(), [0xa, 0xb, 0xc, 0xd, 0xe, 0xf]);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
        let mut buf = [0u8; 16];
        write_header(
            &mut buf,
            [1, 2, 3, 4, 5, 6],
            [0xa, 0xb, 0xc, 0xd, 0xe, 0xf],
            ethertype::IPV4,
        );
        buf[14..].copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(buf, FRAME);
        assert!(EthernetFrame::new_checked(&FRAME[..13]).is_err());
    }
}
