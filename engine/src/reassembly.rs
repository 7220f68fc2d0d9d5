//! Reassembly of the outer IPv4 datagrams a client sends in fragments.
//!
//! OpenVPN clients get `tun-mtu 1500` pushed, so a full-size inner packet seals into a UDP
//! datagram of about 1,550 bytes, which the client's kernel sends in two fragments over a
//! 1,500-byte path. The OpenVPN server has its kernel reassemble them; a core does it here.
//!
//! The table is small and fixed (no allocation after start): at most `capacity` datagrams in
//! progress, each of at most `MAX_FRAGMENTS` fragments, none longer than `max_len` bytes of
//! payload, none waiting longer than `TIMEOUT_SECS`. A datagram that would not fit is refused
//! at its first fragment that shows it; when the table is full the oldest datagram in progress
//! gives way (the fragments of a real datagram arrive back to back, so under a flood of
//! fragments that never complete, new ones still get through). Overlapping or inconsistent
//! fragments give the whole datagram up (the old overlap attacks: RFC 1858, and RFC 5722 for
//! IPv6). Every fragment that does not end up in a datagram is returned with its reason, to be
//! counted.

use arrayvec::ArrayVec;

use crate::packet::DropReason;
use crate::wire::ipv4::DatagramId;

/// Fragments of one datagram at most (a 1,552-byte datagram over a 576-byte path is three).
pub const MAX_FRAGMENTS: usize = 8;

/// Seconds a datagram may stay incomplete (its age counted in whole seconds: it is given up
/// between `TIMEOUT_SECS` and one second later).
pub const TIMEOUT_SECS: u32 = 2;

/// Where a fragment's payload goes in its datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Byte offset of the payload in the datagram's payload.
    pub offset: usize,
    /// Payload bytes.
    pub len: usize,
    /// Whether more fragments follow (MF).
    pub more: bool,
}

impl Piece {
    /// Where its payload ends in the datagram's payload.
    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// The fragments of a complete datagram, in offset order: the first carries the header to
/// keep, and together their payloads cover the datagram's payload exactly once.
pub type Fragments<B> = ArrayVec<(Piece, B), MAX_FRAGMENTS>;

/// Fragments given up, each with its reason: room for two datagrams and one more fragment
/// (what one call can give up: an expired datagram, a datagram refused or making way, and the
/// fragment at hand).
pub type Dropped<B> = ArrayVec<(B, DropReason), { 2 * MAX_FRAGMENTS + 1 }>;

/// What `Reassembly::add` did with a fragment.
pub struct Added<B> {
    /// The datagram it completed, if it did.
    pub complete: Option<Fragments<B>>,
    /// Fragments given up (this one or others).
    pub dropped: Dropped<B>,
}

struct Pending<B> {
    key: DatagramId,
    /// When its first fragment came (seconds).
    born: u32,
    fragments: Fragments<B>,
}

/// A core's datagrams in reassembly.
pub struct Reassembly<B> {
    pending: Vec<Pending<B>>,
    capacity: usize,
    max_len: usize,
}

impl<B> Reassembly<B> {
    /// A table for `capacity` datagrams in progress, of at most `max_len` payload bytes each.
    pub fn new(capacity: usize, max_len: usize) -> Self {
        Self {
            pending: Vec::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            max_len,
        }
    }

    /// Datagrams in progress.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is in progress.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes a fragment (its buffer `buf` holds it whole; `piece` says where its payload goes).
    pub fn add(&mut self, key: DatagramId, piece: Piece, buf: B, now: u32) -> Added<B> {
        let mut dropped = Dropped::new();
        // One expired datagram a call (the rest go at the next calls or in `expire`).
        self.expire_one(now, &mut dropped);
        // Every fragment but the last carries a multiple of 8 bytes (the offset's unit).
        if (piece.more && (piece.len == 0 || piece.len % 8 != 0)) || piece.end() > self.max_len {
            let reason = if piece.end() > self.max_len {
                DropReason::ReassemblyTooBig
            } else {
                DropReason::MalformedIpv4
            };
            keep(&mut dropped, (buf, reason));
            if let Some(i) = self.position(&key) {
                self.give_up(i, reason, &mut dropped);
            }
            return Added {
                complete: None,
                dropped,
            };
        }
        let i = match self.position(&key) {
            Some(i) => i,
            None => {
                if self.pending.len() >= self.capacity {
                    // The oldest datagram in progress gives way.
                    if let Some(oldest) =
                        (0..self.pending.len()).min_by_key(|&i| self.pending[i].born)
                    {
                        self.give_up(oldest, DropReason::ReassemblyTimeout, &mut dropped);
                    }
                }
                self.pending.push(Pending {
                    key,
                    born: now,
                    fragments: ArrayVec::new(),
                });
                self.pending.len() - 1
            }
        };
        let p = &self.pending[i];
        let reason = if p.fragments.iter().any(|(q, _)| inconsistent(q, &piece)) {
            Some(DropReason::FragmentOverlap)
        } else if p.fragments.is_full() {
            Some(DropReason::ReassemblyTooBig)
        } else {
            None
        };
        if let Some(reason) = reason {
            keep(&mut dropped, (buf, reason));
            self.give_up(i, reason, &mut dropped);
            return Added {
                complete: None,
                dropped,
            };
        }
        let p = &mut self.pending[i];
        p.fragments.push((piece, buf));
        let whole = p
            .fragments
            .iter()
            .find(|(q, _)| !q.more)
            .is_some_and(|(last, _)| {
                p.fragments.iter().map(|(q, _)| q.len).sum::<usize>() == last.end()
            });
        let complete = whole.then(|| {
            let mut f = self.pending.swap_remove(i).fragments;
            f.sort_unstable_by_key(|(q, _)| q.offset);
            f
        });
        Added { complete, dropped }
    }

    /// Gives up datagrams older than `TIMEOUT_SECS` (two at most: call until it returns
    /// none); returns their fragments.
    pub fn expire(&mut self, now: u32) -> Dropped<B> {
        let mut out = Dropped::new();
        for _ in 0..2 {
            if !self.expire_one(now, &mut out) {
                break;
            }
        }
        out
    }

    /// Gives up one datagram older than `TIMEOUT_SECS`, if there is one.
    fn expire_one(&mut self, now: u32, out: &mut Dropped<B>) -> bool {
        let old = self
            .pending
            .iter()
            .position(|p| now.saturating_sub(p.born) > TIMEOUT_SECS);
        if let Some(i) = old {
            self.give_up(i, DropReason::ReassemblyTimeout, out);
        }
        old.is_some()
    }

    fn position(&self, key: &DatagramId) -> Option<usize> {
        self.pending.iter().position(|p| p.key == *key)
    }

    /// Removes datagram `i`, its fragments into `out` with `reason`.
    fn give_up(&mut self, i: usize, reason: DropReason, out: &mut Dropped<B>) {
        let p = self.pending.swap_remove(i);
        for (_, b) in p.fragments {
            keep(out, (b, reason));
        }
    }
}

/// Adds a given-up fragment to `out`. `Dropped` has room for what one call gives up; were it
/// ever short, the fragment would be freed uncounted rather than abort the core.
fn keep<B>(out: &mut Dropped<B>, d: (B, DropReason)) {
    let full = out.try_push(d).is_err();
    debug_assert!(!full, "Dropped is sized for one call");
}

/// Whether two fragments of one datagram cannot both be right: they overlap, both claim to be
/// the last, or one reaches past the other's claim to be the last.
fn inconsistent(a: &Piece, b: &Piece) -> bool {
    let overlap = a.offset < b.end() && b.offset < a.end();
    let past_last =
        |last: &Piece, other: &Piece| !last.more && (other.end() > last.end() || !other.more);
    overlap || past_last(a, b) || past_last(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: DatagramId = DatagramId {
        src: 1,
        dst: 2,
        proto: 17,
        ident: 7,
    };

    fn piece(offset: usize, len: usize, more: bool) -> Piece {
        Piece { offset, len, more }
    }

    fn reasons(a: &Added<u32>) -> Vec<(u32, DropReason)> {
        a.dropped.iter().copied().collect()
    }

    #[test]
    fn two_fragments_in_either_order() {
        for order in [[0, 1], [1, 0]] {
            let mut r = Reassembly::new(4, 2000);
            let pieces = [piece(0, 1480, true), piece(1480, 72, false)];
            let first = r.add(KEY, pieces[order[0]], order[0] as u32, 10);
            assert!(first.complete.is_none() && first.dropped.is_empty());
            assert_eq!(r.len(), 1);
            let second = r.add(KEY, pieces[order[1]], order[1] as u32, 10);
            let done = second.complete.expect("complete");
            assert_eq!(
                done.iter().map(|(p, b)| (p.offset, *b)).collect::<Vec<_>>(),
                vec![(0, 0), (1480, 1)]
            );
            assert!(r.is_empty());
        }
    }

    #[test]
    fn overlaps_and_two_lasts_give_the_datagram_up() {
        let mut r = Reassembly::new(4, 4000);
        assert!(r.add(KEY, piece(0, 1480, true), 1, 0).dropped.is_empty());
        let a = r.add(KEY, piece(1472, 80, false), 2, 0);
        assert_eq!(
            reasons(&a),
            vec![
                (2, DropReason::FragmentOverlap),
                (1, DropReason::FragmentOverlap)
            ]
        );
        assert!(r.is_empty());
        // Two last fragments, and a middle one past the last.
        assert!(r.add(KEY, piece(1480, 8, false), 1, 0).dropped.is_empty());
        assert_eq!(r.add(KEY, piece(2000, 8, false), 2, 0).dropped.len(), 2);
        assert!(r.add(KEY, piece(1480, 8, false), 1, 0).dropped.is_empty());
        assert_eq!(r.add(KEY, piece(1488, 8, true), 2, 0).dropped.len(), 2);
        // An exact duplicate is an overlap too.
        assert!(r.add(KEY, piece(0, 8, true), 1, 0).dropped.is_empty());
        assert_eq!(r.add(KEY, piece(0, 8, true), 2, 0).dropped.len(), 2);
        assert!(r.is_empty());
    }

    #[test]
    fn too_big_odd_and_too_many_are_refused() {
        let mut r = Reassembly::new(4, 1600);
        let a = r.add(KEY, piece(1480, 200, false), 1, 0);
        assert_eq!(reasons(&a), vec![(1, DropReason::ReassemblyTooBig)]);
        let a = r.add(KEY, piece(0, 100, true), 2, 0);
        assert_eq!(
            reasons(&a),
            vec![(2, DropReason::MalformedIpv4)],
            "not a multiple of 8"
        );
        for i in 0..MAX_FRAGMENTS {
            assert!(r
                .add(KEY, piece(i * 8, 8, true), i as u32, 0)
                .dropped
                .is_empty());
        }
        let a = r.add(KEY, piece(800, 8, false), 99, 0);
        assert_eq!(a.dropped.len(), MAX_FRAGMENTS + 1);
        assert!(a
            .dropped
            .iter()
            .all(|(_, r)| *r == DropReason::ReassemblyTooBig));
        assert!(r.is_empty());
    }

    #[test]
    fn old_datagrams_expire_and_the_oldest_gives_way_when_full() {
        let mut r = Reassembly::new(2, 2000);
        let key = |ident| DatagramId { ident, ..KEY };
        assert!(r.add(key(1), piece(0, 8, true), 1, 100).dropped.is_empty());
        assert!(r.add(key(2), piece(0, 8, true), 2, 101).dropped.is_empty());
        let a = r.add(key(3), piece(0, 8, true), 3, 101);
        assert_eq!(reasons(&a), vec![(1, DropReason::ReassemblyTimeout)]);
        assert_eq!(r.len(), 2);
        assert!(r.expire(101 + TIMEOUT_SECS).is_empty());
        let gone = r.expire(102 + TIMEOUT_SECS);
        assert_eq!(gone.len(), 2);
        assert!(r.is_empty());
    }

    proptest! {
        /// Any datagram cut into fragments of multiples of 8 bytes, arriving in any order,
        /// comes back whole, in order, exactly once; other datagrams in between do not disturb
        /// it.
        #[test]
        fn any_cut_in_any_order_comes_back_whole(
            len in 1usize..1600,
            cuts in proptest::collection::vec(1usize..200, 0..(MAX_FRAGMENTS - 1)),
            order in any::<proptest::sample::Index>(),
            noise in any::<bool>(),
        ) {
            let mut bounds = vec![0];
            for c in cuts {
                let b = bounds.last().unwrap() + c * 8;
                if b >= len { break; }
                bounds.push(b);
            }
            bounds.push(len);
            let mut pieces: Vec<Piece> = bounds
                .windows(2)
                .map(|w| piece(w[0], w[1] - w[0], w[1] < len))
                .collect();
            let n = pieces.len();
            pieces.rotate_left(order.index(n));
            let mut r = Reassembly::new(4, 2000);
            let mut done = None;
            for (i, p) in pieces.iter().enumerate() {
                if noise {
                    let other = DatagramId { ident: 99, ..KEY };
                    prop_assert!(r.add(other, piece(i * 8, 8, true), 1000, 0).dropped.is_empty());
                }
                let a = r.add(KEY, *p, p.offset, 0);
                prop_assert!(a.dropped.is_empty());
                if let Some(c) = a.complete {
                    prop_assert_eq!(i, n - 1, "complete only with the last fragment in");
                    done = Some(c);
                }
            }
            let done = done.unwrap();
            let mut at = 0;
            for (p, b) in &done {
                prop_assert_eq!(p.offset, at);
                prop_assert_eq!(*b, p.offset);
                at = p.end();
            }
            prop_assert_eq!(at, len);
        }
    }
}
