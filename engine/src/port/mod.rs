//! The `Port` trait: a NIC queue pair that moves packets in bursts. DPDK ports implement it in
//! production (feature `dpdk`); `MemPort` (inject frames, collect what was sent) in tests, and
//! `ReplayPort` (replays template frames into recycled buffers) in benchmarks.

pub mod mem;
pub mod replay;

use crate::packet::{Burst, DropCounters, PacketBuf};

pub use mem::MemPort;
pub use replay::{BufPool, ReplayPort};

/// A queue pair of one port, owned by one core.
pub trait Port {
    /// The packet buffer type (mbuf or heap buffer).
    type Buf: PacketBuf;

    /// Appends received packets to `burst` (up to its spare room); returns how many. A frame
    /// the port itself discards (one the pipeline cannot take, such as a DPDK mbuf chain) is
    /// counted in `drops` under its reason, never freed silently.
    fn recv(&mut self, burst: &mut Burst<Self::Buf>, drops: &mut DropCounters) -> usize;

    /// Sends from the front of `burst`; packets the NIC refused stay in `burst`. Returns how
    /// many were sent.
    fn send(&mut self, burst: &mut Burst<Self::Buf>) -> usize;

    /// A fresh empty buffer for a packet the core generates (ARP, ICMP, control-channel).
    fn alloc(&mut self) -> Option<Self::Buf>;

    /// Returns buffers the core is done with (dropped packets), in bulk.
    fn free_bulk(&mut self, bufs: &mut Vec<Self::Buf>) {
        bufs.clear();
    }
}
