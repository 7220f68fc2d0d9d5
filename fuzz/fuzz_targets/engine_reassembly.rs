//! The outer-IPv4 reassembly table (`engine::reassembly`) fed arbitrary fragment sequences:
//! each 4-byte record is a fragment (one of four datagrams, an offset in 8-byte units, a
//! length, more-fragments) or time passing. Each fragment's buffer is a number, so the oracle
//! can follow every one.
//!
//! Oracles beyond "no panic" (the table's own `debug_assert` that a call never gives up more
//! than its return has room for included):
//! - conservation: every fragment added comes back exactly once, in a completed datagram or
//!   given up with a reason, or is still held; after the timeout, `expire` returns every one
//!   still held;
//! - a completed datagram is one key's fragments in offset order covering its payload exactly
//!   once from 0, ending with its only last fragment, every other one a multiple of 8 bytes;
//! - at most `capacity` datagrams are in progress, none of more than `MAX_FRAGMENTS`, none
//!   past `max_len`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_engine::reassembly::{Piece, Reassembly, MAX_FRAGMENTS, TIMEOUT_SECS};
use sluice_engine::wire::ipv4::DatagramId;

const CAPACITY: usize = 3;
const MAX_LEN: usize = 2000;

fuzz_target!(|data: &[u8]| {
    let mut r: Reassembly<u32> = Reassembly::new(CAPACITY, MAX_LEN);
    // Where each fragment is: 0 not yet added, 1 held, 2 returned.
    let mut state: Vec<u8> = Vec::new();
    let mut pieces: Vec<(u8, Piece)> = Vec::new();
    let mut now = 0u32;
    let give_back = |id: u32, state: &mut Vec<u8>| {
        let s = &mut state[id as usize];
        assert_eq!(*s, 1, "fragment {id} returned twice or never added");
        *s = 2;
    };
    for rec in data.chunks_exact(4) {
        if rec[0] & 0x80 != 0 {
            now = now.saturating_add(u32::from(rec[1] % 4));
            let out = r.expire(now);
            for (id, _) in out {
                give_back(id, &mut state);
            }
            continue;
        }
        let which = rec[0] & 3;
        let key = DatagramId {
            src: 1,
            dst: 2,
            proto: 17,
            ident: u16::from(which),
        };
        let piece = Piece {
            offset: usize::from(rec[1]) * 8,
            len: usize::from(u16::from_be_bytes([rec[2] & 0x07, rec[3]])),
            more: rec[0] & 4 != 0,
        };
        let id = state.len() as u32;
        state.push(1);
        pieces.push((which, piece));
        let added = r.add(key, piece, id, now);
        for (id, _) in added.dropped {
            give_back(id, &mut state);
        }
        if let Some(done) = added.complete {
            assert!(done.len() <= MAX_FRAGMENTS);
            let mut at = 0;
            for (i, (p, id)) in done.iter().enumerate() {
                give_back(*id, &mut state);
                assert_eq!(
                    pieces[*id as usize],
                    (which, *p),
                    "another datagram's fragment"
                );
                assert_eq!(p.offset, at, "a gap or an overlap");
                at = p.end();
                let last = i + 1 == done.len();
                assert_eq!(p.more, !last, "the last fragment is not last");
                assert!(
                    last || (p.len > 0 && p.len % 8 == 0),
                    "a middle fragment of {} bytes",
                    p.len
                );
            }
            assert!(at <= MAX_LEN);
        }
        assert!(r.len() <= CAPACITY);
        let held = state.iter().filter(|&&s| s == 1).count();
        assert!(held <= CAPACITY * MAX_FRAGMENTS, "{held} fragments held");
    }
    // Everything still held comes back after the timeout.
    now = now.saturating_add(TIMEOUT_SECS + 1);
    while !r.is_empty() {
        let out = r.expire(now);
        assert!(
            !out.is_empty(),
            "a datagram past its timeout is not given up"
        );
        for (id, _) in out {
            give_back(id, &mut state);
        }
    }
    assert!(
        state.iter().all(|&s| s == 2),
        "a fragment was lost uncounted"
    );
});
