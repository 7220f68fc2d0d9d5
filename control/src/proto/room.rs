//! The data cores' room for sessions, shared by the servers of every endpoint of one appliance.
//!
//! A session lives on the core its peer-id names (`core_of`: the peer-id modulo the cores, as
//! the data plane's `Dataplane::core_of` reads it), and each core's session table holds
//! `per_core` sessions (`[dataplane] sessions_per_core`). A server takes a `Place` for a
//! session when it authorises it, having picked its peer-id on the emptiest core with room
//! (`Server::place`), and drops it when it ends the session (the data plane is told to forget
//! it then). A core's commands come to it in order, so it has removed an ended session before
//! it is asked to add the one that took its place: the count never runs ahead of the core's
//! table.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// How many sessions each data core holds and may hold.
#[derive(Debug)]
pub struct CoreRoom {
    per_core: u32,
    used: Vec<AtomicU32>,
}

/// One session's place on a core, counted out of its core when dropped (the session ends,
/// or is forgotten, or its authorisation fails after all).
#[derive(Debug)]
pub struct Place {
    room: Arc<CoreRoom>,
    core: usize,
}

impl Place {
    /// The core.
    pub fn core(&self) -> usize {
        self.core
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(u) = self.room.used.get(self.core) {
            let _ = u.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

impl CoreRoom {
    /// Room for `per_core` sessions on each of `cores` cores (at least one).
    pub fn new(cores: usize, per_core: u32) -> Self {
        Self {
            per_core,
            used: (0..cores.max(1)).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Sessions each core may hold.
    pub fn per_core(&self) -> u32 {
        self.per_core
    }

    /// The core that carries peer-id `peer`.
    pub fn core_of(&self, peer: u32) -> usize {
        peer as usize % self.used.len()
    }

    /// The peer-ids of `range` that `core` carries, in order.
    pub fn peer_ids_of(&self, core: usize, range: Range<u32>) -> impl Iterator<Item = u32> {
        let cores = self.used.len();
        let first = range.start as usize + (core + cores - range.start as usize % cores) % cores;
        (first..range.end as usize)
            .step_by(cores)
            .filter_map(|id| u32::try_from(id).ok())
    }

    /// Sessions counted on `core` now.
    pub fn used(&self, core: usize) -> u32 {
        self.used.get(core).map_or(0, |u| u.load(Ordering::Relaxed))
    }

    /// A place on `core`, counted in until it is dropped; `None` (and nothing counted) when
    /// the core is full.
    pub fn take(self: &Arc<Self>, core: usize) -> Option<Place> {
        let per_core = self.per_core;
        let counted = self.used.get(core).is_some_and(|u| {
            u.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < per_core).then_some(n + 1)
            })
            .is_ok()
        });
        counted.then(|| Place {
            room: Arc::clone(self),
            core,
        })
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
        let room = Arc::new(CoreRoom::new(2, 2));
        assert_eq!(room.core_of(7), 1);
        let (a, b) = (room.take(0), room.take(0));
        assert!(a.is_some() && b.is_some());
        assert!(room.take(0).is_none(), "a full core takes nothing more");
        assert_eq!(room.used(0), 2);
        assert_eq!(room.with_room(), vec![1]);
        let c = room.take(1);
        assert!(c.is_some());
        assert_eq!(room.with_room(), vec![1]);
        let d = room.take(1);
        assert!(d.is_some());
        assert!(room.with_room().is_empty());
        drop(a);
        assert_eq!(room.with_room(), vec![0]);
        assert!(room.take(0).is_some());
        // No core past the last.
        let one = Arc::new(CoreRoom::new(1, 1));
        assert!(one.take(5).is_none());
        assert_eq!(one.used(0), 0);
        // The peer-ids a core carries.
        let ids: Vec<u32> = CoreRoom::new(3, 1).peer_ids_of(1, 5..15).collect();
        assert_eq!(ids, [7, 10, 13]);
        drop((b, c, d));
    }
}
