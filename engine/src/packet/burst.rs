//! `Burst<B>`: up to `BURST_SIZE` packets moved and processed together (DPDK's MAX_PKT_BURST).
//! Its storage is inline: creating, filling and draining a burst never allocates.

use arrayvec::ArrayVec;

/// Packets per burst. DPDK's examples take 32; the pipeline takes 64 because each burst's
/// look-ahead waits out a few memory round trips once (the first frames' index lines, flows
/// and sessions: DRAM at a million flows), and a larger burst spreads that over more packets.
/// Release builds, 64 B (bench/RESULTS.md, twelfth session): 100k sessions / 1M flows
/// client->net +5%, net->client +7%; 1k/1k +2% both ways. 128 measured no better than 64.
pub const BURST_SIZE: usize = 64;

/// A batch of packets.
#[derive(Debug)]
pub struct Burst<B> {
    bufs: ArrayVec<B, BURST_SIZE>,
}

impl<B> Default for Burst<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> Burst<B> {
    /// An empty burst.
    pub fn new() -> Self {
        Self {
            bufs: ArrayVec::new(),
        }
    }

    /// Packets held.
    #[inline]
    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    /// Whether it holds no packet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Room left.
    #[inline]
    pub fn spare(&self) -> usize {
        BURST_SIZE - self.bufs.len()
    }

    /// Adds a packet; gives it back when the burst is full.
    ///
    /// # Errors
    /// The packet itself, when there is no room.
    #[inline]
    pub fn push(&mut self, b: B) -> Result<(), B> {
        self.bufs.try_push(b).map_err(|e| e.element())
    }

    /// Takes the last packet.
    #[inline]
    pub fn pop(&mut self) -> Option<B> {
        self.bufs.pop()
    }

    /// The packets.
    #[inline]
    pub fn as_slice(&self) -> &[B] {
        &self.bufs
    }

    /// The packets, writable.
    pub fn as_mut_slice(&mut self) -> &mut [B] {
        &mut self.bufs
    }

    /// Removes and yields every packet, front first.
    pub fn drain(&mut self) -> arrayvec::Drain<'_, B, BURST_SIZE> {
        self.bufs.drain(..)
    }

    /// Removes the first `n` packets (those a port accepted), keeping the rest in order.
    pub fn consume_front(&mut self, n: usize) -> arrayvec::Drain<'_, B, BURST_SIZE> {
        let n = n.min(self.bufs.len());
        self.bufs.drain(..n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_drains() {
        let mut b: Burst<u32> = Burst::new();
        for i in 0..BURST_SIZE as u32 {
            b.push(i).unwrap();
        }
        assert_eq!(b.push(99), Err(99));
        assert_eq!(b.spare(), 0);
        let first: Vec<u32> = b.consume_front(2).collect();
        assert_eq!(first, vec![0, 1]);
        assert_eq!(b.as_slice()[0], 2);
        assert_eq!(b.drain().count(), BURST_SIZE - 2);
        assert!(b.is_empty());
    }
}
