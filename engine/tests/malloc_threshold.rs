//! `mem::fixed_mmap_threshold`, in a process of its own (the setting is the whole process's):
//! after it, a large block freed goes back to the kernel every time, not only the first.

#![allow(clippy::unwrap_used)]

/// The process's resident total memory, KiB.
fn rss_kib() -> u64 {
    sluice_engine::testkit::own_status_kib("VmRSS")
}

/// An argon2 check's 19 MiB block, written, then freed, with a small allocation kept between
/// each and the next (as a daemon keeps some of what it makes between two logins): what stays
/// resident after each. Unfixed, glibc raises its threshold to the first block's size when it
/// is freed, and the next blocks come from the heap and stay resident when freed.
#[test]
fn large_blocks_freed_leave_no_resident_memory_behind() {
    assert!(
        sluice_engine::mem::fixed_mmap_threshold(),
        "glibc took the setting"
    );
    let mut kept = Vec::new();
    let mut left = Vec::new();
    for _ in 0..4 {
        let before = rss_kib();
        let mut block = vec![0u8; 19 << 20];
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        std::hint::black_box(&block);
        drop(block);
        kept.push(std::hint::black_box(Box::new([7u8; 64])));
        left.push(rss_kib().saturating_sub(before));
    }
    assert!(
        left.iter().all(|&kib| kib < 4096),
        "KiB left resident after each 19 MiB block was freed: {left:?}"
    );
}
