//! `PacketBuf`: packet bytes with head and tail room, so outer headers are prepended and AEAD
//! tags appended in place. A DPDK mbuf implements it in production; `HeapBuf` in tests,
//! benchmarks and in-memory ports.

use std::ptr::NonNull;

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
    /// Grows the packet by `len` bytes at the front and returns them, as the buffer holds them
    /// (a front trimmed off comes back as it was).
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
/// Two words, so that it moves in two registers as an mbuf pointer moves in one: the storage's
/// address, and its capacity with the packet's bounds packed in one word, always written whole.
/// A buffer moves through the pipeline by value, right after a trim or a prepend changed its
/// bounds. As a `Box<[u8]>` and a bounds word (three words), every move went through a copy
/// on the stack, written a word at a time and read back 16 bytes at once: a load the processor
/// cannot forward from two stores still in flight, so each move waited for them to reach L1
/// (the largest single cost a sampling profile found in the transmit path). With the bounds in
/// two fields before that, the copy read them at once for the same reason.
pub struct HeapBuf {
    /// The storage's first byte: a `Box<[u8]>` of `capacity()` bytes that this buffer owns
    /// (made in `with_capacity`, freed in `Drop`).
    ptr: NonNull<u8>,
    /// The packet's first byte in the storage (bits 0-20), the byte after its last (bits
    /// 21-41) and the storage's length (bits 42-62). Always `start <= end <= capacity`.
    span: u64,
}

// SAFETY: a `HeapBuf` owns its storage alone, as the `Box<[u8]>` it was made from did; it
// hands out references to it only through `&self` and `&mut self`.
#[allow(unsafe_code)]
unsafe impl Send for HeapBuf {}
// SAFETY: as above: `&HeapBuf` gives only shared access to the bytes.
#[allow(unsafe_code)]
unsafe impl Sync for HeapBuf {}

/// Bits of each field of `HeapBuf::span`.
const FIELD_BITS: u32 = 21;
/// The mask of one field.
const FIELD: u64 = (1 << FIELD_BITS) - 1;

/// `start`, `end` and `capacity` as a `HeapBuf::span` (each at most `HeapBuf::MAX_CAPACITY`).
#[inline]
fn span(start: usize, end: usize, capacity: usize) -> u64 {
    start as u64 | (end as u64) << FIELD_BITS | (capacity as u64) << (2 * FIELD_BITS)
}

impl HeapBuf {
    /// Headroom new buffers get by default: outer Ethernet + IPv4 + UDP + P_DATA_V2 header, with
    /// margin (like DPDK's `RTE_PKTMBUF_HEADROOM` of 128).
    pub const DEFAULT_HEADROOM: usize = 128;
    /// Total capacity new buffers get by default (a DPDK 2 KiB data room plus headroom).
    pub const DEFAULT_CAPACITY: usize = 2048 + Self::DEFAULT_HEADROOM;
    /// The largest capacity (2 MiB less a byte: far more than any datagram).
    pub const MAX_CAPACITY: usize = FIELD as usize;

    /// An empty buffer of `capacity` bytes (at most `MAX_CAPACITY`; larger is cut to it) with
    /// `headroom` reserved at the front.
    pub fn with_capacity(capacity: usize, headroom: usize) -> Self {
        let capacity = capacity.min(Self::MAX_CAPACITY);
        let headroom = headroom.min(capacity);
        Self::owning(vec![0; capacity].into_boxed_slice(), headroom, headroom)
    }

    /// A buffer that owns `storage` (at most `MAX_CAPACITY` bytes), its packet at
    /// `start..end` (`start <= end <= storage.len()`).
    fn owning(storage: Box<[u8]>, start: usize, end: usize) -> Self {
        let capacity = storage.len();
        debug_assert!(capacity <= Self::MAX_CAPACITY && start <= end && end <= capacity);
        let storage: &'static mut [u8] = Box::leak(storage);
        Self {
            ptr: NonNull::from(storage).cast(),
            span: span(start, end, capacity),
        }
    }

    #[inline]
    fn start(&self) -> usize {
        (self.span & FIELD) as usize
    }

    #[inline]
    fn end(&self) -> usize {
        (self.span >> FIELD_BITS & FIELD) as usize
    }

    /// The storage's length.
    #[inline]
    pub fn capacity(&self) -> usize {
        (self.span >> (2 * FIELD_BITS)) as usize
    }

    /// Moves the bounds (callers keep `start <= end <= capacity`).
    #[inline]
    fn set_bounds(&mut self, start: usize, end: usize) {
        debug_assert!(start <= end && end <= self.capacity());
        self.span = span(start, end, self.capacity());
    }

    /// Bytes `from..to` of the storage (`from <= to <= capacity`, which every caller has
    /// from the bounds' invariant or has checked).
    #[inline]
    fn bytes(&self, from: usize, to: usize) -> &[u8] {
        debug_assert!(from <= to && to <= self.capacity());
        // SAFETY: `ptr` is the first byte of `capacity()` initialised bytes this buffer owns,
        // and `from <= to <= capacity()`; the borrow of `self` keeps them alive and unaliased
        // by writes.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(from), to - from)
        }
    }

    /// Bytes `from..to` of the storage, writable (as `bytes`).
    #[inline]
    fn bytes_mut(&mut self, from: usize, to: usize) -> &mut [u8] {
        debug_assert!(from <= to && to <= self.capacity());
        // SAFETY: as in `bytes`; `&mut self` makes the borrow exclusive.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(from), to - from)
        }
    }

    /// A buffer holding `bytes` after the default headroom.
    ///
    /// # Panics
    /// If `bytes` is longer than `MAX_CAPACITY` less the headroom.
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
        let cap = self.capacity();
        let head = Self::DEFAULT_HEADROOM.min(cap);
        assert!(
            bytes.len() <= cap - head,
            "HeapBuf::set: {} bytes do not fit",
            bytes.len()
        );
        self.set_bounds(head, head + bytes.len());
        self.bytes_mut(head, head + bytes.len())
            .copy_from_slice(bytes);
    }
}

impl Drop for HeapBuf {
    fn drop(&mut self) {
        let storage = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.capacity());
        // SAFETY: `ptr` and `capacity()` are the `Box<[u8]>` leaked in `with_capacity`, which
        // nothing else owns; it is freed once, here.
        #[allow(unsafe_code)]
        drop(unsafe { Box::from_raw(storage) });
    }
}

impl Clone for HeapBuf {
    fn clone(&self) -> Self {
        Self::owning(
            self.bytes(0, self.capacity()).into(),
            self.start(),
            self.end(),
        )
    }
}

impl PartialEq for HeapBuf {
    fn eq(&self, other: &Self) -> bool {
        self.span == other.span
            && self.bytes(0, self.capacity()) == other.bytes(0, other.capacity())
    }
}

impl Eq for HeapBuf {}

impl std::fmt::Debug for HeapBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapBuf")
            .field("capacity", &self.capacity())
            .field("start", &self.start())
            .field("end", &self.end())
            .field("data", &self.data())
            .finish()
    }
}

impl PacketBuf for HeapBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        self.bytes(self.start(), self.end())
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.start(), self.end());
        self.bytes_mut(start, end)
    }

    #[inline]
    fn headroom(&self) -> usize {
        self.start()
    }

    /// From the bounds alone (they never cross: every change keeps `start <= end`).
    #[inline]
    fn len(&self) -> usize {
        self.end() - self.start()
    }

    #[inline]
    fn tailroom(&self) -> usize {
        self.capacity() - self.end()
    }

    #[inline]
    fn prepend(&mut self, len: usize) -> Result<&mut [u8], NoRoom> {
        let (start, end) = (self.start(), self.end());
        if len > start {
            return Err(NoRoom);
        }
        self.set_bounds(start - len, end);
        Ok(self.bytes_mut(start - len, start))
    }

    #[inline]
    fn append(&mut self, len: usize) -> Result<&mut [u8], NoRoom> {
        if len > self.tailroom() {
            return Err(NoRoom);
        }
        let (start, end) = (self.start(), self.end());
        self.set_bounds(start, end + len);
        Ok(self.bytes_mut(end, end + len))
    }

    #[inline]
    fn trim_front(&mut self, len: usize) {
        let end = self.end();
        self.set_bounds(self.start().saturating_add(len).min(end), end);
    }

    #[inline]
    fn truncate(&mut self, len: usize) {
        let start = self.start();
        self.set_bounds(start, self.end().min(start.saturating_add(len)));
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

    #[test]
    fn two_words_that_own_their_storage() {
        assert_eq!(size_of::<HeapBuf>(), 16);
        let mut a = HeapBuf::from_slice(b"packet");
        let b = a.clone();
        a.data_mut()[0] = b'P';
        assert_eq!((a.data(), b.data()), (&b"Packet"[..], &b"packet"[..]));
        assert_ne!(a, b);
        a.data_mut()[0] = b'p';
        assert_eq!(a, b);
        let moved = std::thread::spawn(move || a).join().unwrap();
        assert_eq!(moved.data(), b"packet");
    }

    #[test]
    fn capacity_is_bounded_and_every_byte_of_it_usable() {
        let mut big = HeapBuf::with_capacity(usize::MAX, 0);
        assert_eq!(big.capacity(), HeapBuf::MAX_CAPACITY);
        let all = big.append(HeapBuf::MAX_CAPACITY).unwrap();
        all[HeapBuf::MAX_CAPACITY - 1] = 7;
        assert_eq!(big.tailroom(), 0);
        assert_eq!(big.append(1), Err(NoRoom));
        big.trim_front(HeapBuf::MAX_CAPACITY - 1);
        assert_eq!(
            (big.data(), big.headroom()),
            (&[7][..], HeapBuf::MAX_CAPACITY - 1)
        );
        let mut empty = HeapBuf::with_capacity(0, 5);
        assert_eq!((empty.len(), empty.headroom(), empty.tailroom()), (0, 0, 0));
        assert_eq!(empty.prepend(1), Err(NoRoom));
        assert_eq!(empty.clone(), empty);
    }
}
