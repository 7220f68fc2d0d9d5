//! Packet buffers, bursts and drop reasons: the vocabulary every stage of the pipeline speaks.

pub mod buf;
pub mod burst;
pub mod drop;
pub mod prefetch;

pub use buf::{HeapBuf, NoRoom, PacketBuf};
pub use burst::{Burst, BURST_SIZE};
pub use drop::{DropCounters, DropReason};
