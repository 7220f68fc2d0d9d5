//! The physical ceiling: ring's raw AEAD seal and open of one packet at a time on one core,
//! with the nonce and AAD an OpenVPN P_DATA_V2 packet uses (12-byte nonce, 8-byte AAD).
//!
//! Two ways of feeding it, both reported:
//! - `fed` (the yardstick of the engine's ratios): packets reach the AEAD as they reach the
//!   pipeline. Before each timed chunk `CHUNK` fresh frames are written into the same kind of
//!   buffers the in-memory ports use (untimed, as a NIC's DMA fills its receive ring); then each
//!   is opened or sealed in place, in order (timed). The pipeline can reach this rate only by
//!   doing nothing but the AEAD: its frames arrive the same way.
//! - `hot`: one buffer, already in L1, sealed or opened over and over (for open, one sealed
//!   packet copied back before each open). No pipeline can reach it, since every received
//!   packet's bytes come from memory; kept for comparison with earlier runs, which used it as
//!   the yardstick.
//!
//! The engine suite measures the yardstick again before each of its cases and keeps the
//! higher figure (`remeasure`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use sluice_engine::packet::{HeapBuf, PacketBuf};

use crate::engine::CHUNK;
use crate::report::{BestWindow, Record};

/// The AEADs the ceiling is measured for.
pub(crate) const ALGORITHMS: &[(&str, &ring::aead::Algorithm)] = &[
    ("aes-256-gcm", &AES_256_GCM),
    ("chacha20-poly1305", &CHACHA20_POLY1305),
];

/// How packets reach the AEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Feed {
    /// Fresh frames in port buffers, a receive ring's worth per chunk.
    Fed,
    /// One buffer, hot in L1.
    Hot,
}

/// A ceiling case's name, e.g. `aes-256-gcm open, fed`.
fn case(alg: &str, open: bool, feed: Feed) -> String {
    format!(
        "{alg} {}, {}",
        if open { "open" } else { "seal" },
        if feed == Feed::Fed { "fed" } else { "hot" }
    )
}

/// The ceiling case the engine's ratio in direction `open` (client to network) or seal
/// (network to client) is taken against.
pub(crate) fn yardstick(open: bool) -> String {
    case("aes-256-gcm", open, Feed::Fed)
}

/// The yardstick record of direction `open` at `size` among a run's `records`.
fn yardstick_in(records: &mut [Record], open: bool, size: usize) -> Option<&mut Record> {
    let case = yardstick(open);
    records
        .iter_mut()
        .find(|r| r.suite == "ceiling" && r.case == case && r.size == size)
}

/// `pps` as a ratio to the yardstick of direction `open` at `size` among a run's `records`.
pub(crate) fn ratio(records: &mut [Record], open: bool, size: usize, pps: f64) -> Option<f64> {
    yardstick_in(records, open, size).map(|r| pps / r.pps)
}

/// Measures seal and open for every algorithm and size, fed and hot, for `per_case` each.
pub(crate) fn run(sizes: &[usize], per_case: Duration) -> Vec<Record> {
    let mut out = Vec::new();
    for (name, alg) in ALGORITHMS {
        for &size in sizes {
            for feed in [Feed::Fed, Feed::Hot] {
                for open in [false, true] {
                    let w = measure(alg, size, open, feed, per_case);
                    let (ops, secs, pps) = (w.ops(), w.elapsed().as_secs_f64(), w.rate());
                    let case = case(name, open, feed);
                    eprintln!("  ceiling {case:<33} {size:>5} B  {:>8.3} Mpps", pps / 1e6);
                    out.push(Record {
                        suite: "ceiling".into(),
                        case,
                        size,
                        pps,
                        gbps: pps * size as f64 * 8.0 / 1e9,
                        ratio_to_ceiling: None,
                        ops,
                        seconds: secs,
                        drops: 0,
                        proto: None,
                    });
                }
            }
        }
    }
    out
}

/// Measures the yardstick cases (AES-256-GCM open and seal, fed) at `size` again for `dur`
/// each and keeps, in the run's `records`, the better of the two figures: the engine suite does this
/// before each of its cases, so that a ceiling measured while another tenant had the core
/// cannot make a ratio look better than it is (on a shared machine a rate is only ever
/// measured too low).
pub(crate) fn remeasure(records: &mut [Record], size: usize, dur: Duration) {
    for open in [true, false] {
        let w = measure(&AES_256_GCM, size, open, Feed::Fed, dur);
        let Some(r) = yardstick_in(records, open, size) else {
            continue;
        };
        r.ops += w.ops();
        r.seconds += w.elapsed().as_secs_f64();
        if w.rate() > r.pps {
            eprintln!(
                "  ceiling {:<33} {size:>5} B  {:>8.3} Mpps (again, was {:.3})",
                r.case,
                w.rate() / 1e6,
                r.pps / 1e6
            );
            r.pps = w.rate();
            r.gbps = r.pps * size as f64 * 8.0 / 1e9;
        }
    }
}

fn measure(
    alg: &'static ring::aead::Algorithm,
    size: usize,
    open: bool,
    feed: Feed,
    dur: Duration,
) -> BestWindow {
    let mut w = BestWindow::new(dur);
    let key_bytes = vec![0x42u8; alg.key_len()];
    let Ok(unbound) = UnboundKey::new(alg, &key_bytes) else {
        return w;
    };
    let key = LessSafeKey::new(unbound);
    let aad = [0x48u8, 0, 0, 1, 0, 0, 0, 1];
    let nonce = |n: u32| {
        let mut b = [7u8; 12];
        b[..4].copy_from_slice(&n.to_be_bytes());
        Nonce::assume_unique_for_key(b)
    };
    // One sealed packet: what every open opens (as a pipeline decrypts fresh packets).
    let plain = vec![0x5au8; size];
    let mut sealed = plain.clone();
    let Ok(tag) = key.seal_in_place_separate_tag(nonce(1), Aad::from(aad), &mut sealed) else {
        return w;
    };
    let mut n = 1u32;
    let mut one = |buf: &mut [u8]| {
        if open {
            let _ =
                black_box(key.open_in_place_separate_tag(nonce(1), Aad::from(aad), tag, buf, 0..));
        } else {
            n = n.wrapping_add(1);
            let _ = black_box(key.seal_in_place_separate_tag(nonce(n), Aad::from(aad), buf));
        }
    };
    match feed {
        Feed::Fed => {
            let source = if open { &sealed } else { &plain };
            let mut bufs: Vec<HeapBuf> = (0..CHUNK)
                .map(|_| {
                    HeapBuf::with_capacity(HeapBuf::DEFAULT_CAPACITY, HeapBuf::DEFAULT_HEADROOM)
                })
                .collect();
            loop {
                for b in &mut bufs {
                    b.set(source);
                }
                let start = Instant::now();
                for b in &mut bufs {
                    one(b.data_mut());
                }
                w.add(CHUNK as u64, start.elapsed());
                if w.elapsed() >= dur {
                    return w;
                }
            }
        }
        Feed::Hot => {
            let mut buf = if open { sealed.clone() } else { plain };
            loop {
                let start = Instant::now();
                for _ in 0..256 {
                    if open {
                        buf.copy_from_slice(&sealed);
                    }
                    one(&mut buf);
                }
                w.add(256, start.elapsed());
                if w.elapsed() >= dur {
                    return w;
                }
            }
        }
    }
}
