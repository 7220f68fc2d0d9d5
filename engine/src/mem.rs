//! Large per-core tables on transparent huge pages.
//!
//! A core's flow slab and indexes and its session slab reach tens to hundreds of MiB at a
//! million flows or a hundred thousand sessions. On 4 KiB pages nearly every lookup there also
//! misses the TLB (a page walk on top of the cache miss, which prefetching does not hide as
//! well); on 2 MiB pages the whole table needs a few hundred TLB entries. Linux backs a range
//! with huge pages when it is advised so (`MADV_HUGEPAGE`; `transparent_hugepage` in `madvise`
//! or `always` mode), so the tables are advised before they are first written. Where the
//! kernel declines (THP off, another OS), the tables work the same on small pages.
//!
//! Also the process's malloc settings for a daemon that runs for months
//! (`fixed_mmap_threshold`, `release_free_memory`).
//!
//! Holds three `unsafe` blocks: the `madvise`, `mallopt` and `malloc_trim` calls.

#![allow(unsafe_code)]

/// A huge page on x86_64.
const HUGE_PAGE: usize = 2 << 20;

/// `n` copies of `value`, in memory advised for huge pages before it is written.
pub(crate) fn huge_vec<T: Clone>(n: usize, value: T) -> Vec<T> {
    huge_vec_with(n, || value.clone())
}

/// `n` elements made by `f`, in memory advised for huge pages before it is written.
pub(crate) fn huge_vec_with<T>(n: usize, f: impl FnMut() -> T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise_huge_pages(v.as_ptr().cast(), n * size_of::<T>());
    v.resize_with(n, f);
    v
}

/// Advises the whole 2 MiB pages inside `len` bytes at `ptr` (an allocation of ours) for
/// transparent huge pages; ranges smaller than a huge page are left alone. Returns whether
/// the kernel took the advice (for tests; callers ignore it).
pub(crate) fn advise_huge_pages(ptr: *const u8, len: usize) -> bool {
    let start = ptr.addr().next_multiple_of(HUGE_PAGE);
    let end = ptr.addr().saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: MADV_HUGEPAGE changes neither the contents nor the protection of a mapping,
        // only how the kernel backs it; the range is inside an allocation the caller owns
        // (rounded inward to huge-page boundaries), so no other object is affected. Failure
        // (EINVAL where THP is not built in) is reported, not acted on.
        let rc = unsafe {
            libc::madvise(
                ptr.with_addr(start).cast_mut().cast(),
                end - start,
                libc::MADV_HUGEPAGE,
            )
        };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Allocations from this size up get a mapping of their own, returned to the kernel when
/// freed: glibc's default threshold, 128 KiB.
pub const MMAP_THRESHOLD: usize = 128 << 10;

/// Fixes glibc's mmap threshold at `MMAP_THRESHOLD` for the whole process; call it once,
/// before the threads start. glibc's threshold otherwise follows the largest mapped block
/// freed so far (up to 32 MiB), and from then on blocks that size come from the heap and its
/// arenas, where the small long-lived allocations made between them keep the space they
/// leave from going back: a daemon that makes a 19 MiB argon2 block at each password check and
/// at each users-file load grew by about that much at every reload and login (the soak test,
/// `control/tests/appliance_e2e.rs`). Fixed, such blocks are mapped and unmapped each time.
/// Returns whether the setting was taken (never on other C libraries).
pub fn fixed_mmap_threshold() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt changes only malloc's tuning parameters, under malloc's own lock;
        // M_MMAP_THRESHOLD with a value within glibc's limits (0..=32 MiB) is documented to
        // be accepted at any time, and it changes no allocation already made.
        let rc = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) };
        rc == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Gives the free memory inside malloc's heap and arenas back to the kernel (glibc's
/// `malloc_trim(0)`), where freeing alone leaves it resident: the many small blocks of a large
/// answer (an admin request listing a thousand connections made several MiB of strings and
/// JSON nodes), or of a reload, are freed below allocations made since, which keep the heap
/// from shrinking from its top. The next such answer takes the pages back from the kernel.
/// For the control thread between requests, never a data core: it walks every arena, under
/// each one's lock. Returns whether memory was released (never on other C libraries).
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free pages of malloc's own arenas to the kernel,
        // under their locks; no allocation is moved or changed.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_covers_whole_huge_pages_only() {
        // Less than a huge page: nothing to advise.
        let small = huge_vec(1000, 0u64);
        assert!(!advise_huge_pages(small.as_ptr().cast(), 8000));
        assert!(small.iter().all(|&x| x == 0));
        // 8 MiB holds at least three whole huge pages; Linux with THP built in accepts.
        let big: Vec<u64> = huge_vec_with(1 << 20, || 7);
        assert_eq!(big.len(), 1 << 20);
        assert!(big.iter().all(|&x| x == 7));
        let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists();
        assert_eq!(advise_huge_pages(big.as_ptr().cast(), 8 << 20), thp);
    }
}
