//! Software prefetch of packet bytes: while one packet of a burst is being decrypted, the next
//! ones are already on their way from the last-level cache or memory (where a NIC's DMA left
//! them), as DPDK's examples do with `rte_prefetch0`.
//!
//! The one use of `unsafe` outside `dpdk`: the prefetch intrinsic.

#![allow(unsafe_code)]

/// How far ahead in a burst packets are prefetched.
pub const PREFETCH_AHEAD: usize = 2;

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

/// Prefetches the byte ranges `(offset, length)` of an object at `base` (see `prefetch`); the
/// address is only computed, so `base` may be an object not known to be live yet.
#[inline(always)]
pub fn prefetch_spans(base: *const u8, spans: &[(usize, usize)]) {
    for &(offset, len) in spans {
        prefetch(base.wrapping_add(offset), len);
    }
}
