//! `MemPort`: a port backed by two queues, for tests: frames injected are received, frames
//! sent are collected.

use std::collections::VecDeque;

use super::Port;
use crate::packet::{Burst, DropCounters, HeapBuf, PacketBuf};

/// An in-memory port.
#[derive(Debug, Default)]
pub struct MemPort {
    rx: VecDeque<HeapBuf>,
    tx: Vec<Vec<u8>>,
    /// Packets accepted per `send` call at most (models a full TX ring when small).
    pub tx_limit: Option<usize>,
}

impl MemPort {
    /// An empty port.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a frame to be received.
    pub fn inject(&mut self, frame: &[u8]) {
        self.rx.push_back(HeapBuf::from_slice(frame));
    }

    /// Takes every frame sent so far.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.tx)
    }

    /// Frames waiting to be received.
    pub fn pending_rx(&self) -> usize {
        self.rx.len()
    }
}

impl Port for MemPort {
    type Buf = HeapBuf;

    fn recv(&mut self, burst: &mut Burst<HeapBuf>, _drops: &mut DropCounters) -> usize {
        let mut n = 0;
        while burst.spare() > 0 {
            let Some(b) = self.rx.pop_front() else { break };
            if let Err(b) = burst.push(b) {
                self.rx.push_front(b);
                break;
            }
            n += 1;
        }
        n
    }

    fn send(&mut self, burst: &mut Burst<HeapBuf>) -> usize {
        let n = self.tx_limit.map_or(burst.len(), |l| l.min(burst.len()));
        for b in burst.consume_front(n) {
            self.tx.push(b.data().to_vec());
        }
        n
    }

    fn alloc(&mut self) -> Option<HeapBuf> {
        Some(HeapBuf::with_capacity(
            HeapBuf::DEFAULT_CAPACITY,
            HeapBuf::DEFAULT_HEADROOM,
        ))
    }
}
