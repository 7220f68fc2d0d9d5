//! IPv4 headers (RFC 791): options skipped by the header length, fragments recognised.

use core::ops::Range;

use super::checksum;
use super::Malformed;

/// The minimum header length.
pub const MIN_HEADER_LEN: usize = 20;

/// The TTL of the datagrams the appliance originates (RFC 1700's recommended default, as Linux
/// and most hosts use): its ICMP errors and echo replies, its control-channel datagrams.
pub const DEFAULT_TTL: u8 = 64;

/// Whether the checksum of an IPv4 header without options (nearly every one) verifies: five
/// 32-bit words, no loop, summed as they lie in memory (a ones' complement sum does not depend
/// on byte order, and all ones, what a correct header sums to, reads the same either way).
#[inline(always)]
pub fn header_checksum_ok(h: &[u8; MIN_HEADER_LEN]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    checksum::fold_wide(w(0) + w(4) + w(8) + w(12) + w(16)) == 0xffff
}

/// `header_checksum_ok` for a header with options (rare: out of line, off the data path's
/// code).
#[cold]
#[inline(never)]
fn options_checksum_ok(header: &[u8]) -> bool {
    checksum::fold(checksum::sum(0, header)) == 0xffff
}

/// Whether the IPv4 `header` (its options included) asks for source routing: a Loose or
/// Strict Source and Record Route option (RFC 791: types 131 and 137). Options that do not
/// parse (a length under 2 or past the header) count as yes: a packet whose options cannot
/// be read is not answered as if it had none. Rare: out of line.
#[cold]
#[inline(never)]
pub fn source_routed(header: &[u8]) -> bool {
    // Loose and strict source route.
    const LSRR: u8 = 131;
    const SSRR: u8 = 137;
    let opts = header.get(MIN_HEADER_LEN..).unwrap_or_default();
    let mut at = 0;
    while let Some(opt) = next_option(opts, at) {
        match opt {
            Ok((LSRR | SSRR, _)) | Err(_) => return true,
            Ok((_, span)) => at = span.end,
        }
    }
    false
}

/// The option of `options` (an IPv4 header's, RFC 791) at or after `at`, no-operations
/// skipped: its kind and where it lies. `None` at the end of the list (an end-of-options, or
/// no bytes left); `Malformed` for an option whose length is missing, under 2 or past the
/// list. An option's kind and length are all this reads, so a caller may change the rest of
/// an option between calls.
fn next_option(options: &[u8], mut at: usize) -> Option<Result<(u8, Range<usize>), Malformed>> {
    const EOL: u8 = 0;
    const NOP: u8 = 1;
    loop {
        match *options.get(at)? {
            EOL => return None,
            NOP => at += 1,
            kind => {
                let len = options.get(at + 1).map(|&l| usize::from(l));
                return Some(match len {
                    Some(len) if len >= 2 && at + len <= options.len() => Ok((kind, at..at + len)),
                    _ => Err(Malformed),
                });
            }
        }
    }
}

/// IP protocol numbers sluice handles.
pub mod protocol {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// A view of an IPv4 packet; `new_checked` guarantees the header and total length fit.
#[derive(Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// The identity of an IPv4 datagram, shared by all its fragments (RFC 791).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DatagramId {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Protocol.
    pub proto: u8,
    /// Identification.
    pub ident: u16,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view after checking version, header length and total length against the buffer.
    ///
    /// # Errors
    /// `Malformed` when any of them is inconsistent.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN || b[0] >> 4 != 4 {
            return Err(Malformed);
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if ihl < MIN_HEADER_LEN || total < ihl || total > b.len() {
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

    /// Header length in bytes (20 without options).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.h()[0] & 0x0f) * 4
    }

    /// Total length (header and payload) from the header.
    #[inline]
    pub fn total_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.h()[2], self.h()[3]]))
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.h()[4], self.h()[5]])
    }

    /// The identity of the datagram this packet is (a fragment of).
    #[inline]
    pub fn datagram_id(&self) -> DatagramId {
        DatagramId {
            src: u32::from_be_bytes(self.src()),
            dst: u32::from_be_bytes(self.dst()),
            proto: self.protocol(),
            ident: self.ident(),
        }
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_fragment(&self) -> bool {
        self.h()[6] & 0x40 != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_fragments(&self) -> bool {
        self.h()[6] & 0x20 != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> usize {
        usize::from(u16::from_be_bytes([self.h()[6], self.h()[7]]) & 0x1fff) * 8
    }

    /// Whether this is a fragment (first, middle or last).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.frag_offset() != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.h()[8]
    }

    /// The payload's protocol.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.h()[9]
    }

    /// The header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.h()[10], self.h()[11]])
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> [u8; 4] {
        let b = self.h();
        [b[12], b[13], b[14], b[15]]
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> [u8; 4] {
        let b = self.h();
        [b[16], b[17], b[18], b[19]]
    }

    /// Whether the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let b = self.b();
        match b.first_chunk::<MIN_HEADER_LEN>() {
            Some(h) if self.header_len() == MIN_HEADER_LEN => header_checksum_ok(h),
            _ => options_checksum_ok(&b[..self.header_len()]),
        }
    }

    /// The payload (after options, up to the total length).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }

    /// The header's options (empty without).
    pub fn options(&self) -> &[u8] {
        &self.b()[MIN_HEADER_LEN..self.header_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the source address, updating the header checksum incrementally.
    #[inline]
    pub fn set_src(&mut self, a: [u8; 4]) {
        let old = u32::from_be_bytes(self.src());
        let hc = checksum::update32(self.checksum(), old, u32::from_be_bytes(a));
        self.m()[12..16].copy_from_slice(&a);
        self.m()[10..12].copy_from_slice(&hc.to_be_bytes());
    }

    /// Sets the destination address, updating the header checksum incrementally.
    #[inline]
    pub fn set_dst(&mut self, a: [u8; 4]) {
        let old = u32::from_be_bytes(self.dst());
        let hc = checksum::update32(self.checksum(), old, u32::from_be_bytes(a));
        self.m()[16..20].copy_from_slice(&a);
        self.m()[10..12].copy_from_slice(&hc.to_be_bytes());
    }

    /// Sets the identification, updating the header checksum incrementally.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        let hc = checksum::update16(self.checksum(), self.ident(), ident);
        self.m()[4..6].copy_from_slice(&ident.to_be_bytes());
        self.m()[10..12].copy_from_slice(&hc.to_be_bytes());
    }

    /// Decrements the TTL, updating the checksum; returns the new TTL (0 if it was 0).
    #[inline]
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        self.set_ttl(ttl - 1);
        ttl - 1
    }

    /// Sets the TTL, updating the header checksum incrementally.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        let old = u16::from_be_bytes([self.b()[8], self.b()[9]]);
        self.m()[8] = ttl;
        let new = u16::from_be_bytes([self.b()[8], self.b()[9]]);
        let hc = checksum::update16(self.checksum(), old, new);
        self.m()[10..12].copy_from_slice(&hc.to_be_bytes());
    }

    /// Recomputes the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.m()[10..12].copy_from_slice(&[0, 0]);
        let hl = self.header_len();
        let c = checksum::checksum(&self.b()[..hl]);
        self.m()[10..12].copy_from_slice(&c.to_be_bytes());
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.m()[h..t]
    }

    /// The header's options (empty without), writable; the caller makes the checksum right.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.m()[MIN_HEADER_LEN..h]
    }
}

/// Adds this host to the Record Route and Timestamp options of `options` (an IPv4 header's,
/// RFC 791), as a host answering an echo request does (RFC 1122 3.2.2.6: SHOULD): `own` (the
/// address the reply leaves from) in a Record Route with room; in a Timestamp, `stamp` alone
/// (flag 0), after `own` (flag 1), or where `own` is the next address asked for (flag 3);
/// a full Timestamp counts one more in its overflow. Other options are left as they are, and
/// so is an option whose pointer is not at an entry's start. Cold: only pings with options
/// come here.
///
/// # Errors
/// `Malformed` where RFC 791 holds the datagram in error: a Timestamp with room for part of
/// an entry, or full with its overflow count at 15; or options that do not parse.
#[cold]
#[inline(never)]
pub fn stamp_options(options: &mut [u8], own: [u8; 4], stamp: u32) -> Result<(), Malformed> {
    const RECORD_ROUTE: u8 = 7;
    const TIMESTAMP: u8 = 68;
    let mut at = 0;
    while let Some(opt) = next_option(options, at) {
        let (kind, span) = opt?;
        at = span.end;
        match kind {
            RECORD_ROUTE => record_route(&mut options[span], own),
            TIMESTAMP => timestamp(&mut options[span], own, stamp)?,
            _ => {}
        }
    }
    Ok(())
}

/// A Record Route option (`opt`, whole): `own` at its pointer if four bytes fit there.
fn record_route(opt: &mut [u8], own: [u8; 4]) {
    let Some(&ptr) = opt.get(2) else { return };
    let p = usize::from(ptr);
    if p >= 4 && p % 4 == 0 && p + 3 <= opt.len() {
        opt[p - 1..p + 3].copy_from_slice(&own);
        opt[2] = ptr + 4;
    }
}

/// A Timestamp option (`opt`, whole): see `stamp_options`.
fn timestamp(opt: &mut [u8], own: [u8; 4], stamp: u32) -> Result<(), Malformed> {
    let (Some(&ptr), Some(&of)) = (opt.get(2), opt.get(3)) else {
        return Ok(());
    };
    let (overflow, flag) = (of >> 4, of & 0x0f);
    let entry = match flag {
        0 => 4,
        1 | 3 => 8,
        _ => return Ok(()),
    };
    let p = usize::from(ptr);
    if p < 5 || (p - 5) % entry != 0 {
        return Ok(());
    }
    if p > opt.len() {
        // Full: counted, or in error when the count itself would overflow.
        if overflow == 0x0f {
            return Err(Malformed);
        }
        opt[3] = ((overflow + 1) << 4) | flag;
        return Ok(());
    }
    if p + entry - 1 > opt.len() {
        // Some room, not enough for an entry: in error (RFC 791).
        return Err(Malformed);
    }
    let at = p - 1;
    match flag {
        0 => opt[at..at + 4].copy_from_slice(&stamp.to_be_bytes()),
        1 => {
            opt[at..at + 4].copy_from_slice(&own);
            opt[at + 4..at + 8].copy_from_slice(&stamp.to_be_bytes());
        }
        _ if opt[at..at + 4] == own => opt[at + 4..at + 8].copy_from_slice(&stamp.to_be_bytes()),
        _ => return Ok(()),
    }
    // Every entry is at most 8 bytes and the option at most 40: no overflow of the u8.
    opt[2] = ptr + entry as u8;
    Ok(())
}

/// The fields needed to build an option-less IPv4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Payload protocol.
    pub protocol: u8,
    /// Payload length.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
}

impl Ipv4Repr {
    /// Parses the fields of a checked packet.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Self {
        Self {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: p.total_len() - p.header_len(),
            ttl: p.ttl(),
        }
    }

    /// Writes a 20-byte header (DF set, ident 0) with its checksum into `b`.
    #[inline]
    pub fn emit(&self, b: &mut [u8]) {
        let total = (MIN_HEADER_LEN + self.payload_len) as u16;
        b[0] = 0x45;
        b[1] = 0;
        b[2..4].copy_from_slice(&total.to_be_bytes());
        b[4..6].copy_from_slice(&[0, 0]);
        b[6..8].copy_from_slice(&[0x40, 0]);
        b[8] = self.ttl;
        b[9] = self.protocol;
        b[12..16].copy_from_slice(&self.src);
        b[16..20].copy_from_slice(&self.dst);
        // The checksum from the fields themselves (ident and fragment offset are zero).
        let (s, d) = (u32::from_be_bytes(self.src), u32::from_be_bytes(self.dst));
        let acc = 0x4500
            + u32::from(total)
            + 0x4000
            + (u32::from(self.ttl) << 8 | u32::from(self.protocol))
            + (s >> 16)
            + (s & 0xffff)
            + (d >> 16)
            + (d & 0xffff);
        b[10..12].copy_from_slice(&(!checksum::fold(acc)).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Record Route and Timestamp option of up to 16 bytes with every length, pointer
    /// and flag byte that matter, alone or after a no-operation and before more bytes: stamped
    /// or refused, never a panic (the bounds are where a mistake would show); stamping keeps
    /// the options' length and only ever moves the pointer forward by one entry.
    #[test]
    fn stamping_any_small_option_never_panics() {
        for kind in [7u8, 68] {
            for total in 0..=16usize {
                for len in 0..=17u8 {
                    for ptr in 0..=17u8 {
                        for flags in [0u8, 1, 2, 3, 0xe1, 0xf0, 0xf3] {
                            for lead in [0usize, 1] {
                                let mut o = vec![0u8; total + lead];
                                if lead == 1 {
                                    o[0] = 1;
                                }
                                for (i, b) in [kind, len, ptr, flags].into_iter().enumerate() {
                                    if let Some(x) = o.get_mut(lead + i) {
                                        *x = b;
                                    }
                                }
                                let before = o.clone();
                                if stamp_options(&mut o, [10, 0, 0, 1], 0x8000_0001).is_ok() {
                                    assert_eq!(o.len(), before.len());
                                    if let (Some(&p0), Some(&p1)) =
                                        (before.get(lead + 2), o.get(lead + 2))
                                    {
                                        assert!(
                                            p1 == p0 || [4, 8].contains(&(p1 - p0)),
                                            "{before:?} -> {o:?}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `stamp_options` against RFC 791's rules, one case a line: the options before, the
    /// options after (or `None`: in error).
    #[test]
    fn record_route_and_timestamp_get_this_host() {
        let own = [10, 0, 0, 1];
        let stamp = 0x8000_00ff_u32;
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            // Record Route: added where there is room; a full one or a misplaced pointer left.
            (&[7, 7, 4, 0, 0, 0, 0, 0], Some(&[7, 7, 8, 10, 0, 0, 1, 0])),
            (&[7, 7, 8, 9, 9, 9, 9, 0], Some(&[7, 7, 8, 9, 9, 9, 9, 0])),
            (&[7, 7, 5, 0, 0, 0, 0, 0], Some(&[7, 7, 5, 0, 0, 0, 0, 0])),
            // Timestamp, flag 0: the stamp; full: the overflow counted; at 15, in error.
            (
                &[68, 8, 5, 0, 0, 0, 0, 0],
                Some(&[68, 8, 9, 0, 0x80, 0, 0, 0xff]),
            ),
            (
                &[68, 8, 9, 0x20, 1, 2, 3, 4],
                Some(&[68, 8, 9, 0x30, 1, 2, 3, 4]),
            ),
            (&[68, 8, 9, 0xf0, 1, 2, 3, 4], None),
            // Flag 1: the address and the stamp; room for part of an entry: in error.
            (
                &[68, 12, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0],
                Some(&[68, 12, 13, 1, 10, 0, 0, 1, 0x80, 0, 0, 0xff]),
            ),
            (&[68, 8, 5, 1, 0, 0, 0, 0], None),
            // Flag 3: stamped where this host is the next address asked for, else left.
            (
                &[68, 12, 5, 3, 10, 0, 0, 1, 0, 0, 0, 0],
                Some(&[68, 12, 13, 3, 10, 0, 0, 1, 0x80, 0, 0, 0xff]),
            ),
            (
                &[68, 12, 5, 3, 10, 0, 0, 7, 0, 0, 0, 0],
                Some(&[68, 12, 5, 3, 10, 0, 0, 7, 0, 0, 0, 0]),
            ),
            // An unknown flag, no-operations and other options: left; options that do not
            // parse: in error; after the end of the list: not read.
            (&[68, 8, 5, 2, 0, 0, 0, 0], Some(&[68, 8, 5, 2, 0, 0, 0, 0])),
            (
                &[1, 148, 4, 0, 0, 7, 3, 4],
                Some(&[1, 148, 4, 0, 0, 7, 3, 4]),
            ),
            (&[1, 7, 9, 4, 0, 0, 0, 0], None),
            (&[0, 7, 3, 4, 0, 0, 0, 0], Some(&[0, 7, 3, 4, 0, 0, 0, 0])),
        ];
        for (before, after) in cases {
            let mut o = before.to_vec();
            let got = stamp_options(&mut o, own, stamp);
            match after {
                Some(a) => assert_eq!((got, &o[..]), (Ok(()), *a), "{before:?}"),
                None => assert_eq!(got, Err(Malformed), "{before:?}"),
            }
        }
    }

    /// An ICMP echo request 10.200.0.2 -> 172.31.1.10, TTL 64, as captured.
    const PACKET: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 200, 0, 2, 172,
        31, 1, 10, 0x08, 0x00, 0xf7, 0xfe, 0x00, 0x01, 0x00, 0x00,
    ];

    fn packet() -> [u8; 28] {
        let mut p = PACKET;
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn deconstruct() {
        let b = packet();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.header_len(), p.total_len(), p.ttl(), p.protocol()),
            (20, 28, 64, protocol::ICMP)
        );
        assert_eq!(p.src(), [10, 200, 0, 2]);
        assert!(p.dont_fragment() && !p.is_fragment());
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn rewrite_keeps_checksum_valid() {
        let mut b = packet();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src([172, 31, 1, 5]);
        p.set_dst([8, 8, 8, 8]);
        assert_eq!(p.decrement_ttl(), 63);
        assert!(p.verify_checksum());
    }

    #[test]
    fn emit_matches_parse() {
        let r = Ipv4Repr {
            src: [1, 2, 3, 4],
            dst: [5, 6, 7, 8],
            protocol: protocol::UDP,
            payload_len: 8,
            ttl: 64,
        };
        let mut b = [0u8; 28];
        r.emit(&mut b);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p), r);
    }

    #[test]
    fn options_and_fragments() {
        let mut b = [0u8; 32];
        b[0] = 0x46; // IHL 6: 4 bytes of options
        b[2..4].copy_from_slice(&32u16.to_be_bytes());
        b[6] = 0x20; // more fragments
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.payload().len(), 8);
        assert!(p.is_fragment());
        b[6] = 0x00;
        b[7] = 0x02; // offset 16
        assert!(Ipv4Packet::new_checked(&b[..]).unwrap().is_fragment());
    }

    #[test]
    fn refuses_inconsistent_lengths() {
        let b = packet();
        assert!(
            Ipv4Packet::new_checked(&b[..27]).is_err(),
            "total length beyond the buffer"
        );
        let mut v6 = b;
        v6[0] = 0x65;
        assert!(Ipv4Packet::new_checked(&v6[..]).is_err());
        let mut short_ihl = b;
        short_ihl[0] = 0x44;
        assert!(Ipv4Packet::new_checked(&short_ihl[..]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            if let Ok(p) = Ipv4Packet::new_checked(&data[..]) {
                let _ = (p.payload(), p.verify_checksum(), p.is_fragment());
            }
        }

        /// The unrolled verification agrees with the RFC 1071 sum over the header, with and
        /// without options.
        #[test]
        fn verify_matches_full_sum(mut data in proptest::collection::vec(proptest::prelude::any::<u8>(), 60), ihl in 5u8..=15, valid: bool) {
            data[0] = 0x40 | ihl;
            data[2..4].copy_from_slice(&60u16.to_be_bytes());
            let hl = usize::from(ihl) * 4;
            if valid {
                data[10..12].copy_from_slice(&[0, 0]);
                let c = checksum::checksum(&data[..hl]);
                data[10..12].copy_from_slice(&c.to_be_bytes());
            }
            let p = Ipv4Packet::new_checked(&data[..]).unwrap();
            let oracle = checksum::fold(checksum::sum(0, &data[..hl])) == 0xffff;
            proptest::prop_assert_eq!(p.verify_checksum(), oracle);
            if valid {
                proptest::prop_assert!(p.verify_checksum());
            }
        }

        /// The checksum `emit` computes from the fields is the checksum of the bytes it wrote.
        #[test]
        fn emitted_checksum_is_the_header_checksum(src: [u8; 4], dst: [u8; 4], protocol: u8, ttl: u8, payload_len in 0usize..65515) {
            let r = Ipv4Repr { src, dst, protocol, payload_len, ttl };
            let mut b = [0u8; 20];
            r.emit(&mut b);
            let written = u16::from_be_bytes([b[10], b[11]]);
            b[10..12].copy_from_slice(&[0, 0]);
            proptest::prop_assert_eq!(written, checksum::checksum(&b));
        }
    }
}
