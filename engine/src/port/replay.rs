//! `ReplayPort`: receives frames loaded in advance (`load`: written into pool buffers before the
//! core runs, as a NIC's DMA fills its ring) and then copies of template frames, round robin,
//! into buffers from a pool shared by a core's ports; returns sent buffers to the pool. After
//! warm-up it never allocates, so benchmarks and the zero-allocation test measure the pipeline
//! alone.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::Port;
use crate::packet::{Burst, DropCounters, HeapBuf, PacketBuf};

/// Buffers shared by the ports of one core (single-threaded, like a per-lcore mempool cache).
#[derive(Clone, Debug, Default)]
pub struct BufPool(Rc<RefCell<Vec<HeapBuf>>>);

impl BufPool {
    /// A pool of `n` default-sized buffers.
    pub fn new(n: usize) -> Self {
        Self(Rc::new(RefCell::new(
            (0..n)
                .map(|_| {
                    HeapBuf::with_capacity(HeapBuf::DEFAULT_CAPACITY, HeapBuf::DEFAULT_HEADROOM)
                })
                .collect(),
        )))
    }

    fn take(&self) -> Option<HeapBuf> {
        self.0.borrow_mut().pop()
    }

    fn give(&self, b: HeapBuf) {
        self.0.borrow_mut().push(b);
    }

    /// Gives back many buffers under one borrow (a burst at a time, as a mempool's bulk put).
    fn give_all(&self, bufs: impl Iterator<Item = HeapBuf>) {
        self.0.borrow_mut().extend(bufs);
    }

    /// Buffers available.
    pub fn available(&self) -> usize {
        self.0.borrow().len()
    }
}

/// A port that replays templates and counts what it sent.
#[derive(Debug)]
pub struct ReplayPort {
    loaded: VecDeque<HeapBuf>,
    templates: Vec<Vec<u8>>,
    next: usize,
    pool: BufPool,
    /// Frames received so far.
    pub received: u64,
    /// Frames sent so far.
    pub sent: u64,
    /// Bytes sent so far.
    pub sent_bytes: u64,
    /// Keeps a copy of sent frames (tests); off for benchmarks.
    pub keep_sent: Option<Vec<Vec<u8>>>,
    /// Frames still to replay; `None` replays forever.
    pub budget: Option<u64>,
}

impl ReplayPort {
    /// A port replaying `templates` (none: it receives nothing) with buffers from `pool`.
    pub fn new(templates: Vec<Vec<u8>>, pool: BufPool) -> Self {
        Self {
            loaded: VecDeque::new(),
            templates,
            next: 0,
            pool,
            received: 0,
            sent: 0,
            sent_bytes: 0,
            keep_sent: None,
            budget: None,
        }
    }

    /// Replaces the templates (e.g. with freshly sealed packets).
    pub fn set_templates(&mut self, templates: Vec<Vec<u8>>) {
        self.templates = templates;
        self.next = 0;
    }

    /// Writes `frame` into a pool buffer now; it is received, before any template, in the order
    /// loaded. Returns `false` (nothing loaded) when the pool is empty.
    pub fn load(&mut self, frame: &[u8]) -> bool {
        let Some(mut b) = self.pool.take() else {
            return false;
        };
        b.set(frame);
        self.loaded.push_back(b);
        true
    }

    /// Loaded frames not received yet.
    pub fn loaded(&self) -> usize {
        self.loaded.len()
    }
}

impl Port for ReplayPort {
    type Buf = HeapBuf;

    fn recv(&mut self, burst: &mut Burst<HeapBuf>, _drops: &mut DropCounters) -> usize {
        // Loaded frames first, as many as fit: no push can be refused.
        let mut n = burst.spare().min(self.loaded.len());
        for b in self.loaded.drain(..n) {
            let _ = burst.push(b);
        }
        if self.templates.is_empty() {
            self.received += n as u64;
            return n;
        }
        while burst.spare() > 0 && self.budget != Some(0) {
            let Some(mut b) = self.pool.take() else { break };
            if let Some(left) = &mut self.budget {
                *left -= 1;
            }
            b.set(&self.templates[self.next]);
            self.next = (self.next + 1) % self.templates.len();
            if let Err(b) = burst.push(b) {
                self.pool.give(b);
                break;
            }
            n += 1;
        }
        self.received += n as u64;
        n
    }

    fn send(&mut self, burst: &mut Burst<HeapBuf>) -> usize {
        let n = burst.len();
        let bytes: usize = burst.as_slice().iter().map(PacketBuf::len).sum();
        if let Some(keep) = &mut self.keep_sent {
            keep.extend(burst.as_slice().iter().map(|b| b.data().to_vec()));
        }
        self.sent += n as u64;
        self.sent_bytes += bytes as u64;
        self.pool.give_all(burst.drain());
        n
    }

    fn alloc(&mut self) -> Option<HeapBuf> {
        let mut b = self.pool.take()?;
        b.set(&[]);
        Some(b)
    }

    fn free_bulk(&mut self, bufs: &mut Vec<HeapBuf>) {
        self.pool.give_all(bufs.drain(..));
    }
}
