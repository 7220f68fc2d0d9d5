//! The receive replay window, as OpenVPN 2.6 keeps it per key and direction.
//!
//! Spec: openvpn-protocol.md §7.4: a window of 64 packet-ids; accept an id above the highest
//! seen, or one at most 63 below it that has not been seen. Checked before decryption (cheap
//! rejection), marked only after the tag verified, so forged packets cannot move the window.
//! OpenVPN's time backtrack (marking ids older than 15 s as seen) is not implemented: it only
//! shortens how late a reordered packet may arrive.

/// Window width in packet-ids.
pub const WINDOW: u32 = 64;

/// Why a packet-id is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// Seen before.
    Replayed,
    /// Below the window (or 0, which is never valid).
    TooOld,
}

/// The replay window of one key in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The highest id marked so far (0: none yet).
    highest: u32,
    /// Bit i set: id `highest - i` was seen.
    bits: u64,
}

impl ReplayWindow {
    /// Whether `id` would be accepted; does not change the window.
    ///
    /// # Errors
    /// `Replayed` or `TooOld`.
    #[inline]
    pub fn check(&self, id: u32) -> Result<(), ReplayError> {
        if id == 0 {
            return Err(ReplayError::TooOld);
        }
        if id > self.highest {
            return Ok(());
        }
        let age = self.highest - id;
        if age >= WINDOW {
            return Err(ReplayError::TooOld);
        }
        if self.bits & (1 << age) != 0 {
            Err(ReplayError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Marks `id` as seen; call only after it passed `check` and the packet authenticated.
    #[inline]
    pub fn mark(&mut self, id: u32) {
        if id > self.highest {
            let shift = id - self.highest;
            self.bits = if shift >= WINDOW {
                0
            } else {
                self.bits << shift
            };
            self.bits |= 1;
            self.highest = id;
        } else {
            let age = self.highest - id;
            if age < WINDOW {
                self.bits |= 1 << age;
            }
        }
    }

    /// The highest id seen.
    pub fn highest(&self) -> u32 {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn in_order_reordered_duplicate_old() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check(0), Err(ReplayError::TooOld));
        for id in [1, 2, 5, 4] {
            assert_eq!(w.check(id), Ok(()));
            w.mark(id);
        }
        assert_eq!(w.check(4), Err(ReplayError::Replayed));
        assert_eq!(w.check(3), Ok(()));
        w.mark(100);
        assert_eq!(w.check(36), Err(ReplayError::TooOld));
        assert_eq!(w.check(37), Ok(()));
        assert_eq!(w.check(100), Err(ReplayError::Replayed));
    }

    /// The oracle: a set of seen ids and the highest one.
    fn oracle(seen: &BTreeSet<u32>, id: u32) -> Result<(), ReplayError> {
        let highest = seen.iter().next_back().copied().unwrap_or(0);
        if id == 0 || (id <= highest && highest - id >= WINDOW) {
            Err(ReplayError::TooOld)
        } else if seen.contains(&id) {
            Err(ReplayError::Replayed)
        } else {
            Ok(())
        }
    }

    proptest! {
        #[test]
        fn agrees_with_set(ops in proptest::collection::vec((0u32..300, any::<bool>()), 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = BTreeSet::new();
            for (id, authentic) in ops {
                let got = w.check(id);
                prop_assert_eq!(got, oracle(&seen, id), "id {}", id);
                // Forged packets (failed tag) are checked but never marked.
                if got.is_ok() && authentic {
                    w.mark(id);
                    seen.insert(id);
                }
            }
        }
    }
}
