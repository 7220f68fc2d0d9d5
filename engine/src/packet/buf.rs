//! `PacketBuf`: packet bytes with head and tail room, so outer headers are prepended and AEAD
//! tags appended in place. A DPDK mbuf implements it in production; `HeapBuf` in tests,
//! benchmarks and in-memory ports.

/// Not enough head or tail room for the requested growth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom;

/// Packet bytes with room to grow at both ends.
pub trait PacketBuf {
    /// The packet.
    fn data(&self) -> &[u8];
    /// The packet, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Bytes free before the packet.
    fn headroom(&self) -> usize;
    /// Bytes free after the packet.
    fn tailroom(&self) -> usize;
    /// Grows the packet by `len` bytes at the front and returns them.
    ///
    /// # Errors
    /// `NoRoom` when the headroom is smaller than `len` (the packet is unchanged).
    fn prepend(&mut self, len: usize) -> Result<&mut [u8], NoRoom>;
    /// Grows the packet by `len` bytes at the end and returns them.
    ///
    /// # Errors
    /// `NoRoom` when the tailroom is smaller than `len` (the packet is unchanged).
    fn append(&mut self, len: usize) -> Result<&mut [u8], NoRoom>;
    /// Removes `len` bytes from the front (all of them if `len` is larger).
    fn trim_front(&mut self, len: usize);
    /// Shortens the packet to `len` bytes (no effect if it is shorter).
    fn truncate(&mut self, len: usize);

    /// Whether the NIC already verified this packet's IPv4 header checksum (receive checksum
    /// offload); the pipeline then skips its own check. `false` unless a device says so.
    fn ipv4_checksum_verified(&self) -> bool {
        false
    }

    /// The packet length.
    fn len(&self) -> usize {
        self.data().len()
    }

    /// Whether the packet has no bytes.
    fn is_empty(&self) -> bool {
        self.data().is_empty()
    }
}

/// A heap-backed packet buffer with fixed capacity; it never reallocates.
///
/// The packet's bounds are one word, always written whole. A buffer moves through the
/// pipeline by value, copied right after a trim or a prepend changed its bounds; with the
/// bounds in two fields, that copy read them at once, which the processor cannot forward from
/// two separate stores still in flight, and the copy waited for both to reach L1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapBuf {
    storage: Box<[u8]>,
    /// The packet's first byte in `storage` (low 32 bits) and the byte after its last (high 32).
    span: u64,
}

/// `start` and `end` as a `HeapBuf::span`.
#[inline]
fn span(start: usize, end: usize) -> u64 {
    start as u64 | (end as u64) << 32
}

impl HeapBuf {
    /// Headroom new buffers get by default: outer Ethernet + IPv4 + UDP + P_DATA_V2 header, with
    /// margin (like DPDK's `RTE_PKTMBUF_HEADROOM` of 128).
    pub const DEFAULT_HEADROOM: usize = 128;
    /// Total capacity new buffers get by default (a DPDK 2 KiB data room plus headroom).
    pub const DEFAULT_CAPACITY: usize = 2048 + Self::DEFAULT_HEADROOM;

    /// An empty buffer of `capacity` bytes (at most 4 GiB) with `headroom` reserved at the
    /// front.
    pub fn with_capacity(capacity: usize, headroom: usize) -> Self {
        let capacity = capacity.min(u32::MAX as usize);
        let headroom = headroom.min(capacity);
        Self {
            storage: vec![0; capacity].into_boxed_slice(),
            span: span(headroom, headroom),
        }
    }

    #[inline]
    fn start(&self) -> usize {
        self.span as u32 as usize
    }

    #[inline]
    fn end(&self) -> usize {
        (self.span >> 32) as usize
    }

    /// A buffer holding `bytes` after the default headroom.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let cap = Self::DEFAULT_CAPACITY.max(bytes.len() + Self::DEFAULT_HEADROOM + 64);
        let mut b = Self::with_capacity(cap, Self::DEFAULT_HEADROOM);
        b.set(bytes);
        b
    }

    /// Replaces the contents with `bytes` after the default headroom (for reusing a buffer).
    ///
    /// # Panics
    /// If `bytes` does not fit (a caller bug; tests and benchmarks size their buffers).
    pub fn set(&mut self, bytes: &[u8]) {
        let head = Self::DEFAULT_HEADROOM.min(self.storage.len());
        assert!(
            head + bytes.len() <= self.storage.len(),
            "HeapBuf::set: {} bytes do not fit",
            bytes.len()
        );
        self.span = span(head, head + bytes.len());
        self.storage[head..head + bytes.len()].copy_from_slice(bytes);
    }
}

impl PacketBuf for HeapBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.storage[self.start()..self.end()]
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.start(), self.end());
        &mut self.storage[start..end]
    }

    #[inline]
    fn headroom(&self) -> usize {
        self.start()
    }

    /// From the bounds alone (they never cross: every change keeps `start <= end`), not from
    /// a bounds-checked slice of the storage as the trait's default does.
    #[inline]
    fn len(&self) -> usize {
        self.end().saturating_sub(self.start())
    }

    #[inline]
    fn tailroom(&self) -> usize {
        self.storage.len() - self.end()
    }

    #[inline]
    fn prepend(&mut self, len: usize) -> Result<&mut [u8], NoRoom> {
        let (start, end) = (self.start(), self.end());
        if len > start {
            return Err(NoRoom);
        }
        self.span = span(start - len, end);
        Ok(&mut self.storage[start - len..start])
    }

    #[inline]
    fn append(&mut self, len: usize) -> Result<&mut [u8], NoRoom> {
        if len > self.tailroom() {
            return Err(NoRoom);
        }
        let (start, end) = (self.start(), self.end());
        self.span = span(start, end + len);
        Ok(&mut self.storage[end..end + len])
    }

    #[inline]
    fn trim_front(&mut self, len: usize) {
        let end = self.end();
        self.span = span(self.start().saturating_add(len).min(end), end);
    }

    #[inline]
    fn truncate(&mut self, len: usize) {
        let start = self.start();
        self.span = span(start, self.end().min(start.saturating_add(len)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_shrinks_in_place() {
        let mut b = HeapBuf::with_capacity(64, 16);
        b.append(4).unwrap().copy_from_slice(b"body");
        b.prepend(3).unwrap().copy_from_slice(b"hdr");
        assert_eq!(b.data(), b"hdrbody");
        assert_eq!(b.len(), 7);
        assert_eq!((b.headroom(), b.tailroom()), (13, 44));
        assert_eq!(b.prepend(14), Err(NoRoom));
        assert_eq!(b.append(45), Err(NoRoom));
        assert_eq!(
            b.data(),
            b"hdrbody",
            "a refused growth leaves the packet alone"
        );
        b.trim_front(3);
        b.truncate(2);
        assert_eq!(b.data(), b"bo");
        assert_eq!(b.len(), 2);
        b.trim_front(10);
        assert!(b.is_empty());
        assert_eq!(b.len(), 0);
    }
}
