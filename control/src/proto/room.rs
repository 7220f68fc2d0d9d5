//! The data cores' room for sessions, shared by the servers of every endpoint of one appliance.
//!
//! A session lives on the core its peer-id names (`core_of`: the peer-id modulo the cores, as
//! the data plane's `Dataplane::core_of` reads it), and each core's session table holds
//! `per_core` sessions (`[dataplane] sessions_per_core`). A server counts a session in when it
//! authorises it, having picked its peer-id on the emptiest core with room (`Server::place`),
//! and counts it out when it ends the session (the data plane is told to forget it then). A
//! core's commands come to it in order, so it has removed an ended session before it is asked
//! to add the one that took its place: the count never runs ahead of the core's table.

use std::sync::atomic::{AtomicU32, Ordering};

/// How many sessions each data core holds and may hold.
#[derive(Debug)]
pub struct CoreRoom {
    per_core: u32,
    used: Vec<AtomicU32>,
}

impl CoreRoom {
    /// Room for `per_core` sessions on each of `cores` cores (at least one).
    pub fn new(cores: usize, per_core: u32) -> Self {
        Self {
            per_core,
            used: (0..cores.max(1)).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The number of cores.
    pub fn cores(&self) -> usize {
        self.used.len()
    }

    /// The core that carries peer-id `peer`.
    pub fn core_of(&self, peer: u32) -> usize {
        peer as usize % self.used.len()
    }

    /// Sessions counted on `core` now.
    pub fn used(&self, core: usize) -> u32 {
        self.used.get(core).map_or(0, |u| u.load(Ordering::Relaxed))
    }

    /// Counts a session in on `core`; `false` (and nothing counted) when it is full.
    pub fn take(&self, core: usize) -> bool {
        let per_core = self.per_core;
        self.used.get(core).is_some_and(|u| {
            u.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < per_core).then_some(n + 1)
            })
            .is_ok()
        })
    }

    /// Counts a session out of `core`.
    pub fn give(&self, core: usize) {
        if let Some(u) = self.used.get(core) {
            let _ = u.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// The cores with room, the emptiest first (ties to the lower core).
    pub fn with_room(&self) -> Vec<usize> {
        let mut cores: Vec<(u32, usize)> = (0..self.used.len())
            .map(|c| (self.used(c), c))
            .filter(|&(n, _)| n < self.per_core)
            .collect();
        cores.sort_unstable();
        cores.into_iter().map(|(_, c)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_and_out_within_each_core() {
        let room = CoreRoom::new(2, 2);
        assert_eq!(room.core_of(7), 1);
        assert!(room.take(0) && room.take(0));
        assert!(!room.take(0), "a full core takes nothing more");
        assert_eq!(room.used(0), 2);
        assert_eq!(room.with_room(), vec![1]);
        assert!(room.take(1));
        assert_eq!(room.with_room(), vec![1]);
        assert!(room.take(1));
        assert!(room.with_room().is_empty());
        room.give(0);
        assert_eq!(room.with_room(), vec![0]);
        assert!(room.take(0));
        // Nothing below zero, and no core past the last.
        let empty = CoreRoom::new(1, 1);
        empty.give(0);
        assert_eq!(empty.used(0), 0);
        assert!(!empty.take(5));
        empty.give(5);
    }
}
