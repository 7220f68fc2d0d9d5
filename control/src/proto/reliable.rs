//! The control channel's reliability layer for one key state: numbered messages, individual
//! acks (duplicates re-acked), a send window of 6 with retransmission every 2, 4, 8 ... s and a
//! fast retransmit after 3 later acks, and a receive window of 12 delivering bytes in order.
//!
//! Spec: openvpn-protocol.md §3.1-3.4. Sans-IO: `now` comes from the caller.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;

use super::packet::MAX_ACKS;

/// Messages in flight at most (2.6 uses 6).
pub const SEND_WINDOW: usize = 6;
/// Out-of-order messages buffered at most (2.6 uses 12).
pub const RECV_WINDOW: u32 = 12;
/// First retransmission timeout (`tls-timeout`).
pub const INITIAL_RTO: Duration = Duration::from_secs(2);
/// The largest retransmission interval.
pub const MAX_RTO: Duration = Duration::from_secs(16);
/// Messages queued for sending at most (bounds memory if the peer never acks).
pub const MAX_QUEUED: usize = 64;
/// Acks a `CONTROL_V1` carries (2.6 puts at most 4 on data-bearing packets).
pub const ACKS_PER_CONTROL: usize = 4;

#[derive(Debug)]
struct Outgoing {
    id: u32,
    opcode: u8,
    payload: Vec<u8>,
    due: Option<Instant>,
    interval: Duration,
    acked: bool,
    later_acks: u8,
    /// Send at the next poll whatever the timer says (fast retransmit, burst).
    force: bool,
}

/// What became of a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// New; buffered for in-order delivery and acked.
    New,
    /// Seen before; acked again, not delivered twice.
    Duplicate,
    /// Beyond the receive window; dropped without an ack.
    OutOfWindow,
}

/// A message to put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound<'a> {
    /// Its opcode.
    pub opcode: u8,
    /// Its msg-pid.
    pub id: u32,
    /// Its payload.
    pub payload: &'a [u8],
}

/// Sending and receiving state of one key state.
#[derive(Debug, Default)]
pub struct Reliable {
    next_send: u32,
    sending: VecDeque<Outgoing>,
    next_recv: u32,
    buffered: BTreeMap<u32, Vec<u8>>,
    pending_acks: VecDeque<u32>,
    /// The ids most recently acknowledged, newest last (`fill_with_recent`).
    recent_acks: ArrayVec<u32, 4>,
}

/// The send queue is full (the peer stopped acknowledging).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

impl Reliable {
    /// Queues a message; it gets the next msg-pid.
    ///
    /// # Errors
    /// `QueueFull` past `MAX_QUEUED` unacknowledged messages.
    pub fn queue(&mut self, opcode: u8, payload: Vec<u8>) -> Result<u32, QueueFull> {
        if self.sending.len() >= MAX_QUEUED {
            return Err(QueueFull);
        }
        let id = self.next_send;
        self.next_send = self.next_send.wrapping_add(1);
        self.sending.push_back(Outgoing {
            id,
            opcode,
            payload,
            due: None,
            interval: INITIAL_RTO,
            acked: false,
            later_acks: 0,
            force: false,
        });
        Ok(id)
    }

    /// Starts past a first exchange that happened before this state existed (the stateless
    /// answer to a hard reset, `admission`): the peer's msg-pid 0 was received and acknowledged,
    /// ours was sent and acknowledged. Next ids are 1 both ways.
    pub fn skip_first_exchange(&mut self) {
        debug_assert!(self.next_send == 0 && self.next_recv == 0 && self.sending.is_empty());
        self.next_send = 1;
        self.next_recv = 1;
    }

    /// Records an ack from the peer (unknown or repeated ids are ignored, and so are ids of
    /// messages queued but never sent: the peer cannot have received them, and taking its
    /// word would drop them unsent and count toward a fast retransmit of earlier ones).
    pub fn on_ack(&mut self, id: u32) {
        let Some(pos) = self.sending.iter().position(|o| o.id == id) else {
            return;
        };
        if self.sending[pos].acked || self.sending[pos].due.is_none() {
            return;
        }
        self.sending[pos].acked = true;
        // Fast retransmit: earlier messages still unacked after 3 later acks go out now.
        for o in self.sending.iter_mut().take(pos) {
            if !o.acked {
                o.later_acks = o.later_acks.saturating_add(1);
                if o.later_acks == 3 {
                    o.force = true;
                }
            }
        }
        while self.sending.front().is_some_and(|o| o.acked) {
            self.sending.pop_front();
        }
    }

    /// Records a received message.
    pub fn on_message(&mut self, id: u32, payload: &[u8]) -> Received {
        let ahead = id.wrapping_sub(self.next_recv);
        if ahead >= RECV_WINDOW {
            // Below next_recv (wrapped to a huge distance) is a duplicate; beyond is dropped.
            if ahead > u32::MAX / 2 {
                self.ack(id);
                return Received::Duplicate;
            }
            return Received::OutOfWindow;
        }
        self.ack(id);
        if self.buffered.contains_key(&id) {
            return Received::Duplicate;
        }
        self.buffered.insert(id, payload.to_vec());
        Received::New
    }

    fn ack(&mut self, id: u32) {
        if !self.pending_acks.contains(&id) {
            if self.pending_acks.len() >= 64 {
                self.pending_acks.pop_front();
            }
            self.pending_acks.push_back(id);
        }
    }

    /// Takes the payloads that are now in order, appending them to `out`; returns whether any.
    pub fn take_in_order(&mut self, out: &mut Vec<u8>) -> bool {
        let mut any = false;
        while let Some(p) = self.buffered.remove(&self.next_recv) {
            out.extend_from_slice(&p);
            self.next_recv = self.next_recv.wrapping_add(1);
            any = true;
        }
        any
    }

    /// Takes the message that is due, in window order, and schedules its retransmission.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Outbound<'_>> {
        let o = self
            .sending
            .iter_mut()
            .take(SEND_WINDOW)
            .find(|o| !o.acked && (o.force || o.due.is_none_or(|d| d <= now)))?;
        o.force = false;
        o.due = Some(now + o.interval);
        o.interval = (o.interval * 2).min(MAX_RTO);
        Some(Outbound {
            opcode: o.opcode,
            id: o.id,
            payload: &o.payload,
        })
    }

    /// Sends every unacked in-window message again now (the burst on a peer's retransmitted
    /// reset, §3.3).
    pub fn retransmit_all(&mut self) {
        for o in self.sending.iter_mut().take(SEND_WINDOW) {
            if !o.acked {
                o.force = true;
            }
        }
    }

    /// The acks to send, at most `max`, oldest first.
    pub fn take_acks(&mut self, max: usize) -> ArrayVec<u32, MAX_ACKS> {
        let mut v = ArrayVec::new();
        while v.len() < max.min(MAX_ACKS) {
            let Some(a) = self.pending_acks.pop_front() else {
                break;
            };
            v.push(a);
            if self.recent_acks.is_full() {
                self.recent_acks.remove(0);
            }
            self.recent_acks.push(a);
        }
        v
    }

    /// Adds ids acknowledged recently, newest first, to `acks` up to `max`: what OpenVPN 2.6
    /// does with spare room in a control packet, so that a lost acknowledgement reaches the
    /// peer with the next retransmission (the server's stateless first exchange needs the
    /// client's acknowledgement of its reset to arrive at least once).
    pub fn fill_with_recent(&self, acks: &mut ArrayVec<u32, MAX_ACKS>, max: usize) {
        for &a in self.recent_acks.iter().rev() {
            if acks.len() >= max.min(MAX_ACKS) {
                break;
            }
            if !acks.contains(&a) {
                acks.push(a);
            }
        }
    }

    /// Whether acks are waiting to be sent.
    pub fn has_pending_acks(&self) -> bool {
        !self.pending_acks.is_empty()
    }

    /// When the next retransmission is due.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.sending
            .iter()
            .take(SEND_WINDOW)
            .filter(|o| !o.acked)
            .filter_map(|o| o.due)
            .min()
    }

    /// Whether everything sent was acknowledged.
    pub fn all_acked(&self) -> bool {
        self.sending.is_empty()
    }

    /// Whether a message should go out at the next poll (never sent, or forced).
    pub fn has_unsent(&self) -> bool {
        self.sending
            .iter()
            .take(SEND_WINDOW)
            .any(|o| !o.acked && (o.due.is_none() || o.force))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_retransmission_and_backoff() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut r = Reliable::default();
        for i in 0..8u8 {
            r.queue(4, vec![i]).unwrap();
        }
        let sent: Vec<u32> = std::iter::from_fn(|| r.poll_transmit(t0).map(|o| o.id)).collect();
        assert_eq!(sent, vec![0, 1, 2, 3, 4, 5], "six in flight at most");
        assert!(r.poll_transmit(t0 + Duration::from_secs(1)).is_none());
        assert_eq!(r.next_timeout(), Some(t0 + INITIAL_RTO));
        let again: Vec<u32> =
            std::iter::from_fn(|| r.poll_transmit(t0 + INITIAL_RTO).map(|o| o.id)).collect();
        assert_eq!(again, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(
            r.next_timeout(),
            Some(t0 + INITIAL_RTO + 2 * INITIAL_RTO),
            "doubled"
        );
        r.on_ack(0);
        r.on_ack(0);
        r.on_ack(99);
        assert_eq!(
            r.poll_transmit(t0 + INITIAL_RTO).map(|o| o.id),
            Some(6),
            "the window slid"
        );
        for id in 1..8 {
            r.on_ack(id);
        }
        assert_eq!(
            r.poll_transmit(t0 + INITIAL_RTO).map(|o| o.id),
            Some(7),
            "7 was never sent: its early ack did not count"
        );
        r.on_ack(7);
        assert!(r.all_acked());
    }

    #[test]
    fn fast_retransmit_after_three_later_acks() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut r = Reliable::default();
        for i in 0..4u8 {
            r.queue(4, vec![i]).unwrap();
        }
        while r.poll_transmit(t0).is_some() {}
        r.on_ack(1);
        r.on_ack(2);
        assert!(r.poll_transmit(t0).is_none());
        r.on_ack(3);
        assert_eq!(r.poll_transmit(t0).map(|o| o.id), Some(0));
    }

    /// A peer that acknowledges msg-pids queued but not yet sent (beyond the window) is not
    /// believed: they still go out once the window reaches them, and their acks count for no
    /// fast retransmit of the messages before them.
    #[test]
    fn acks_for_messages_never_sent_are_ignored() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut r = Reliable::default();
        for i in 0..8u8 {
            r.queue(4, vec![i]).unwrap();
        }
        while r.poll_transmit(t0).is_some() {}
        r.on_ack(6);
        r.on_ack(7);
        r.on_ack(5);
        assert!(
            r.poll_transmit(t0).is_none(),
            "one real later ack is no reason to retransmit 0..4"
        );
        for id in 0..5 {
            r.on_ack(id);
        }
        assert!(!r.all_acked());
        let sent: Vec<u32> = std::iter::from_fn(|| r.poll_transmit(t0).map(|o| o.id)).collect();
        assert_eq!(sent, vec![6, 7], "sent once the window slid");
        r.on_ack(6);
        r.on_ack(7);
        assert!(r.all_acked());
    }

    #[test]
    fn receive_orders_acks_duplicates_and_drops_beyond_window() {
        let mut r = Reliable::default();
        assert_eq!(r.on_message(1, b"b"), Received::New);
        let mut out = Vec::new();
        assert!(!r.take_in_order(&mut out));
        assert_eq!(r.on_message(0, b"a"), Received::New);
        assert!(r.take_in_order(&mut out));
        assert_eq!(out, b"ab");
        assert_eq!(r.on_message(0, b"a"), Received::Duplicate);
        assert_eq!(r.on_message(2 + RECV_WINDOW, b"z"), Received::OutOfWindow);
        assert_eq!(r.take_acks(8).as_slice(), &[1, 0]);
        assert!(!r.has_pending_acks());
    }

    proptest! {
        /// Whatever the order, duplication and loss, delivered bytes are the sent bytes in
        /// order, once.
        #[test]
        fn delivers_in_order_once(order in proptest::collection::vec(0u32..10, 0..60)) {
            let mut r = Reliable::default();
            let mut out = Vec::new();
            for id in order {
                r.on_message(id, &[id as u8]);
                r.take_in_order(&mut out);
            }
            for (i, b) in out.iter().enumerate() {
                prop_assert_eq!(*b as usize, i);
            }
        }
    }
}
