//! Software prefetch: while one packet of a burst is being worked on, the headers and the
//! state the next ones need are already on their way from the last-level cache or memory
//! (where a NIC's DMA left them), as DPDK's examples do with `rte_prefetch0`.
//!
//! The one use of `unsafe` outside `dpdk`: the prefetch intrinsic.

#![allow(unsafe_code)]

/// At most this many bytes of a packet are prefetched (a full-size frame).
const MAX_BYTES: usize = 2048;

/// Asks the CPU to bring the cache lines of `len` bytes at `ptr` into L1. A hint only: it never
/// faults and never reads architecturally, so any address (even a dangling one) is harmless.
#[inline(always)]
pub fn prefetch(ptr: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // Every line the range touches, from the one holding its first byte.
        let skew = ptr as usize & 63;
        let end = len.min(MAX_BYTES) + skew;
        let first = ptr.wrapping_sub(skew);
        let mut off = 0;
        while off < end {
            // SAFETY: PREFETCHT0 is a hint with no architectural effect; it does not fault on
            // any address, so no validity requirement applies to the pointer.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(first.wrapping_add(off).cast::<i8>()) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ptr, len);
    }
}

/// Asks the CPU to bring the one cache line holding `ptr` into L1 (see `prefetch`).
#[inline(always)]
pub fn prefetch_line(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: as in `prefetch`: a hint that never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ptr;
    }
}

/// The 64-byte lines that the byte ranges `(offset, length)` of a line-aligned object touch,
/// as a bit mask (bit `i`: bytes `64 i .. 64 i + 64`); objects of at most 4 KiB.
pub const fn line_mask(spans: &[(usize, usize)]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < spans.len() {
        let (offset, len) = spans[i];
        if len > 0 {
            let mut line = offset / 64;
            let last = (offset + len - 1) / 64;
            assert!(last < 64, "objects of at most 4 KiB");
            while line <= last {
                mask |= 1 << line;
                line += 1;
            }
        }
        i += 1;
    }
    mask
}

/// The byte offsets of the lines in `mask`, in order; `N` is `mask.count_ones()`. A constant
/// table of these makes prefetching an object's hot lines one instruction per line.
pub const fn line_offsets<const N: usize>(mask: u64) -> [usize; N] {
    assert!(mask.count_ones() as usize == N, "N is the number of lines");
    let mut out = [0usize; N];
    let (mut bit, mut n) = (0, 0);
    while bit < 64 {
        if mask & (1 << bit) != 0 {
            out[n] = bit * 64;
            n += 1;
        }
        bit += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_spans() {
        // 0..10 and 60..70 touch lines 0 and 1; 200..201 line 3; an empty span none.
        let m = line_mask(&[(0, 10), (60, 10), (200, 1), (900, 0)]);
        assert_eq!(m, 0b1011);
        assert_eq!(line_offsets::<3>(m), [0, 64, 192]);
        assert_eq!(line_mask(&[(64, 64)]), 0b10);
    }
}
