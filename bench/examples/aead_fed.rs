//! How much of a packet's decryption is its bytes arriving from memory: ring's AES-256-GCM
//! open on frames written into `depth` buffers (2 KiB apart, as mbufs) just before they are
//! opened in order, for several depths. Depth 1 is the hot case the ceiling measures.
//!
//! `cargo run --release -p sluice-bench --example aead_fed`

// A benchmark is a shell: it reads the clock.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

const STRIDE: usize = 2176;
const HEADROOM: usize = 128;

fn main() {
    let Ok(unbound) = UnboundKey::new(&AES_256_GCM, &[0x42; 32]) else {
        return eprintln!("no AES-256-GCM key");
    };
    let key = LessSafeKey::new(unbound);
    let aad = [0x48u8, 0, 0, 1, 0, 0, 0, 1];
    let nonce = || Nonce::assume_unique_for_key([7u8; 12]);
    println!(
        "{:>6} {:>6} {:>12}",
        "size", "depth", "ns per open (best of 5)"
    );
    for size in [64usize, 512, 1400] {
        let mut sealed = vec![0x5au8; size];
        let Ok(tag) = key.seal_in_place_separate_tag(nonce(), Aad::from(aad), &mut sealed) else {
            return eprintln!("seal failed");
        };
        for depth in [32usize, 1024, 2048, 4096, 8192] {
            let mut bufs = vec![0u8; depth * STRIDE];
            let mut best = f64::MAX;
            for _ in 0..5 {
                let (mut secs, mut n) = (0f64, 0u64);
                while n < 200_000 {
                    for frame in bufs.chunks_exact_mut(STRIDE) {
                        frame[HEADROOM..HEADROOM + size].copy_from_slice(&sealed);
                    }
                    let start = Instant::now();
                    for frame in bufs.chunks_exact_mut(STRIDE) {
                        let b = &mut frame[HEADROOM..HEADROOM + size];
                        let _ = black_box(key.open_in_place_separate_tag(
                            nonce(),
                            Aad::from(aad),
                            tag,
                            b,
                            0..,
                        ));
                    }
                    secs += start.elapsed().as_secs_f64();
                    n += depth as u64;
                }
                best = best.min(secs / n as f64 * 1e9);
            }
            println!("{size:>6} {depth:>6} {best:>12.0}");
        }
    }
}
