//! ARP for IPv4 over Ethernet (RFC 826).

use super::ethernet::Mac;
use super::Malformed;

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// ARP request.
pub const OP_REQUEST: u16 = 1;
/// ARP reply.
pub const OP_REPLY: u16 = 2;

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    /// `OP_REQUEST` or `OP_REPLY`.
    pub operation: u16,
    /// Sender hardware address.
    pub sender_mac: Mac,
    /// Sender protocol address.
    pub sender_ip: [u8; 4],
    /// Target hardware address.
    pub target_mac: Mac,
    /// Target protocol address.
    pub target_ip: [u8; 4],
}

impl ArpRepr {
    /// Parses an ARP packet (the Ethernet payload).
    ///
    /// # Errors
    /// `Malformed` unless it is a well-formed Ethernet/IPv4 ARP request or reply.
    #[inline]
    pub fn parse(b: &[u8]) -> Result<Self, Malformed> {
        if b.len() < PACKET_LEN
            || b[0..2] != [0, 1]
            || b[2..4] != [0x08, 0x00]
            || b[4] != 6
            || b[5] != 4
        {
            return Err(Malformed);
        }
        let operation = u16::from_be_bytes([b[6], b[7]]);
        if operation != OP_REQUEST && operation != OP_REPLY {
            return Err(Malformed);
        }
        let mac = |o: usize| [b[o], b[o + 1], b[o + 2], b[o + 3], b[o + 4], b[o + 5]];
        let ip = |o: usize| [b[o], b[o + 1], b[o + 2], b[o + 3]];
        Ok(Self {
            operation,
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
        })
    }

    /// Writes the packet into the first `PACKET_LEN` bytes of `b`.
    #[inline]
    pub fn emit(&self, b: &mut [u8]) {
        b[0..2].copy_from_slice(&[0, 1]);
        b[2..4].copy_from_slice(&[0x08, 0x00]);
        b[4] = 6;
        b[5] = 4;
        b[6..8].copy_from_slice(&self.operation.to_be_bytes());
        b[8..14].copy_from_slice(&self.sender_mac);
        b[14..18].copy_from_slice(&self.sender_ip);
        b[18..24].copy_from_slice(&self.target_mac);
        b[24..28].copy_from_slice(&self.target_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request "who has 192.168.50.1? tell 192.168.50.2", as tcpdump shows it.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 192,
        168, 50, 2, 0, 0, 0, 0, 0, 0, 192, 168, 50, 1,
    ];

    #[test]
    fn parse_and_emit() {
        let r = ArpRepr::parse(&REQUEST).unwrap();
        assert_eq!(r.operation, OP_REQUEST);
        assert_eq!(r.sender_ip, [192, 168, 50, 2]);
        assert_eq!(r.target_ip, [192, 168, 50, 1]);
        let mut out = [0u8; 28];
        r.emit(&mut out);
        assert_eq!(out, REQUEST);
        let mut bad = REQUEST;
        bad[7] = 9;
        assert!(ArpRepr::parse(&bad).is_err());
        assert!(ArpRepr::parse(&REQUEST[..27]).is_err());
    }
}
