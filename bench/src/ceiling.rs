//! The physical ceiling: ring's raw AEAD seal and open of one packet at a time on one core,
//! with the nonce and AAD an OpenVPN P_DATA_V2 packet uses (12-byte nonce, 8-byte AAD).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

use crate::report::{BestWindow, Record};

/// The AEADs the ceiling is measured for.
pub(crate) const ALGORITHMS: &[(&str, &ring::aead::Algorithm)] = &[
    ("aes-256-gcm", &AES_256_GCM),
    ("chacha20-poly1305", &CHACHA20_POLY1305),
];

/// Measures seal and open for every algorithm and size for `per_case` each.
pub(crate) fn run(sizes: &[usize], per_case: Duration) -> Vec<Record> {
    let mut out = Vec::new();
    for (name, alg) in ALGORITHMS {
        for &size in sizes {
            for open in [false, true] {
                let w = measure(alg, size, open, per_case);
                let (ops, secs, pps) = (w.ops(), w.elapsed().as_secs_f64(), w.rate());
                let case = format!("{name} {}", if open { "open" } else { "seal" });
                eprintln!("  ceiling {case:<28} {size:>5} B  {:>8.3} Mpps", pps / 1e6);
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
                });
            }
        }
    }
    out
}

fn measure(
    alg: &'static ring::aead::Algorithm,
    size: usize,
    open: bool,
    dur: Duration,
) -> BestWindow {
    let mut w = BestWindow::new(dur);
    let key_bytes = vec![0x42u8; alg.key_len()];
    let Ok(unbound) = UnboundKey::new(alg, &key_bytes) else {
        return w;
    };
    let key = LessSafeKey::new(unbound);
    let aad = [0x48u8, 0, 0, 1, 0, 0, 0, 1];
    let mut buf = vec![0x5au8; size];
    let mut sealed = buf.clone();
    let nonce = |n: u32| {
        let mut b = [7u8; 12];
        b[..4].copy_from_slice(&n.to_be_bytes());
        Nonce::assume_unique_for_key(b)
    };
    // One sealed packet, restored before each open (as a pipeline decrypts fresh packets).
    let tag = key.seal_in_place_separate_tag(nonce(1), Aad::from(aad), &mut sealed);
    let Ok(tag) = tag else { return w };
    let mut n = 1u32;
    loop {
        let start = Instant::now();
        for _ in 0..256 {
            if open {
                buf.copy_from_slice(&sealed);
                let _ = black_box(key.open_in_place_separate_tag(
                    nonce(1),
                    Aad::from(aad),
                    tag,
                    &mut buf,
                    0..,
                ));
            } else {
                n = n.wrapping_add(1);
                let _ =
                    black_box(key.seal_in_place_separate_tag(nonce(n), Aad::from(aad), &mut buf));
            }
        }
        w.add(256, start.elapsed());
        if w.elapsed() >= dur {
            return w;
        }
    }
}
