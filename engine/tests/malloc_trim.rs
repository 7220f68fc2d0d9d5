//! `mem::release_free_memory`, in a process of its own (it acts on the whole process's
//! heap): the small blocks of a large answer, freed between blocks still in use, stay
//! resident until it runs, and go back to the kernel when it does.

#![allow(clippy::unwrap_used)]

/// The process's resident anonymous memory, KiB.
fn rss_anon_kib() -> u64 {
    sluice_engine::testkit::own_status_kib("RssAnon")
}

/// 32 MiB in 200-byte blocks (the strings and JSON nodes of a long listing), written, with
/// one block in 256 kept (as the daemon keeps some of what it makes meanwhile: a connection's
/// record, a log line's buffer), then the rest freed: resident until trimmed, then given back
/// but for the pages the kept blocks are on.
#[test]
fn small_blocks_freed_between_live_ones_go_back_when_trimmed() {
    sluice_engine::mem::fixed_mmap_threshold();
    const MIB: u64 = 1024;
    let before = rss_anon_kib();
    let mut blocks: Vec<Option<Box<[u8; 200]>>> = (0..(32 << 20) / 208)
        .map(|i| Some(Box::new([(i % 251) as u8; 200])))
        .collect();
    std::hint::black_box(&blocks);
    for (i, b) in blocks.iter_mut().enumerate() {
        if i % 256 != 0 {
            *b = None;
        }
    }
    let freed = rss_anon_kib();
    assert!(
        freed > before + 16 * MIB,
        "the freed blocks were to stay resident (before {before} KiB, after freeing {freed} KiB)"
    );
    assert!(
        sluice_engine::mem::release_free_memory(),
        "glibc released memory"
    );
    let trimmed = rss_anon_kib();
    assert!(
        trimmed < before + 8 * MIB,
        "resident after trimming: {trimmed} KiB (before {before} KiB, after freeing {freed} KiB)"
    );
    eprintln!("before {before} KiB, after freeing {freed} KiB, trimmed {trimmed} KiB");
    let kept: usize = blocks.iter().flatten().map(|b| usize::from(b[0])).sum();
    assert!(kept > 0);
}
