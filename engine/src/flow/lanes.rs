//! Eight 32-bit tags compared with one value at once (the flow index's bucket scan).
//!
//! The third module allowed `unsafe` (after `dpdk` and the prefetch hint): the SSE2 intrinsics
//! are `#[target_feature]` functions, and calling one needs `unsafe` even where the feature is
//! part of the target's baseline, as SSE2 is of every x86_64 target. LLVM does not vectorise
//! the scalar loop (it compares lane by lane), and the scan runs for every packet.

#![allow(unsafe_code)]

/// Bit j of the result is set when `lanes[j] == value`.
#[inline]
pub(crate) fn equal_lanes(lanes: &[u32; 8], value: u32) -> u32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi32, _mm_movemask_epi8, _mm_packs_epi16, _mm_packs_epi32, _mm_set1_epi32,
            _mm_set_epi32, _mm_setzero_si128,
        };
        let l = lanes.map(|x| x as i32);
        // SAFETY: SSE2 is enabled (the `cfg` above), which is all these intrinsics require;
        // they take and return values only, no pointers.
        unsafe {
            let lo = _mm_set_epi32(l[3], l[2], l[1], l[0]);
            let hi = _mm_set_epi32(l[7], l[6], l[5], l[4]);
            let v = _mm_set1_epi32(value as i32);
            // Each lane's all-ones/all-zeros mask narrowed to 16, then 8 bits: one byte a lane.
            let words = _mm_packs_epi32(_mm_cmpeq_epi32(lo, v), _mm_cmpeq_epi32(hi, v));
            _mm_movemask_epi8(_mm_packs_epi16(words, _mm_setzero_si128())) as u32
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        let mut m = 0;
        for (j, &x) in lanes.iter().enumerate() {
            m |= u32::from(x == value) << j;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against the lane-by-lane definition, with values drawn from a small set so that
        /// several lanes often match (and with the sign bit set, which the packs saturate).
        #[test]
        fn agrees_with_scalar(lanes in proptest::array::uniform8(prop_oneof![0u32..4, Just(u32::MAX), Just(0x8000_0000)]),
                              value in prop_oneof![0u32..4, Just(u32::MAX), Just(0x8000_0000)]) {
            let mut want = 0;
            for (j, &x) in lanes.iter().enumerate() {
                want |= u32::from(x == value) << j;
            }
            prop_assert_eq!(equal_lanes(&lanes, value), want);
        }
    }
}
