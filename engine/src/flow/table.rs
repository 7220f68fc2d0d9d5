//! The per-core SNAT flow table: client 5-tuples to translated (ENI address, port) and back.
//!
//! Fixed capacity, chosen at start: the indexes and the slab are allocated once and a full table
//! refuses new flows (a counted drop) instead of growing, so steady state never allocates.
//! Flows live in a slab of cache-line entries; a forward and a reverse `Index` (one cache line
//! per bucket, keyed by hashbrown's randomly seeded hasher) map each direction's tuple to its
//! slot. Both lines of a lookup can be prefetched a stage ahead (`prefetch_*`), which is what
//! keeps a million flows near the speed of a thousand.
//! Expiry is amortised: each call to `expire` examines a bounded number of slots from a
//! clock hand. Time is seconds from an arbitrary origin, passed in by the caller.

use core::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;

use super::index::Index;
use super::ports::{PortPool, PortRange};
use crate::packet::prefetch::prefetch_line;
use crate::packet::DropReason;
use crate::wire::ipv4::{protocol, DatagramId};
use crate::wire::tcp::flags;

/// Idle timeouts in seconds (RFC 5382 REQ-5 for established TCP, at least 2 h 4 min; RFC 4787
/// REQ-5 for UDP, at least 2 min, 5 recommended; ICMP as Linux conntrack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after the handshake completed.
    pub tcp_established: u32,
    /// TCP before the handshake completed or after FIN/RST.
    pub tcp_transitory: u32,
    /// UDP.
    pub udp: u32,
    /// ICMP echo.
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_established: 7440,
            tcp_transitory: 240,
            udp: 300,
            icmp: 60,
        }
    }
}

/// A client-side 5-tuple (ICMP: the echo id as `src_port`, `dst_port` 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The client's virtual address.
    pub client: u32,
    /// IP protocol.
    pub proto: u8,
    /// Source port or echo id.
    pub src_port: u16,
    /// Destination address.
    pub dst: u32,
    /// Destination port (0 for ICMP).
    pub dst_port: u16,
}

/// The 5-tuple of return traffic as it arrives from the target network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReverseKey {
    /// The ENI address (destination of the reply).
    pub eni: u32,
    /// IP protocol.
    pub proto: u8,
    /// The translated port or echo id (destination port of the reply).
    pub nat_port: u16,
    /// The remote address (source of the reply).
    pub remote: u32,
    /// The remote port (0 for ICMP).
    pub remote_port: u16,
}

impl FlowKey {
    /// The identity of this flow's datagram `ident` (for its later fragments).
    pub fn datagram(&self, ident: u16) -> DatagramId {
        DatagramId {
            src: self.client,
            dst: self.dst,
            proto: self.proto,
            ident,
        }
    }
}

impl ReverseKey {
    /// The identity of this return traffic's datagram `ident` (for its later fragments).
    pub fn datagram(&self, ident: u16) -> DatagramId {
        DatagramId {
            src: self.remote,
            dst: self.eni,
            proto: self.proto,
            ident,
        }
    }
}

/// A flow's handle in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowId(u32);

/// A translated flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The client-side tuple.
    pub key: FlowKey,
    /// The SNAT address.
    pub eni: u32,
    /// The translated port or id.
    pub nat_port: u16,
    /// Opaque owner tag (the session's index on this core), for return traffic and cleanup.
    pub owner: u32,
    /// The egress port of the target network (from the forwarding decision).
    pub port: u16,
    /// The next hop toward the destination on `port` (from the forwarding decision).
    pub next_hop: u32,
    /// The rule-table epoch (the owning core's count) whose decision `port`, `eni` and
    /// `next_hop` are; a flow decides again when the core's epoch moves on. 0: none yet.
    pub decided: u32,
    established: bool,
    closing: bool,
    last_seen: u32,
    /// The owner's other flows (slots; `NIL` at either end): `remove_owner` visits only the
    /// flows of the session that ended.
    owner_prev: u32,
    owner_next: u32,
}

/// No slot (the ends of an owner's list of flows).
const NIL: u32 = u32::MAX;

impl Flow {
    fn reverse(&self) -> ReverseKey {
        ReverseKey {
            eni: self.eni,
            proto: self.key.proto,
            nat_port: self.nat_port,
            remote: self.key.dst,
            remote_port: self.key.dst_port,
        }
    }

    /// Marks the flow as seen at `now` (it expires its timeout after the last time).
    #[inline]
    pub fn touch(&mut self, now: u32) {
        self.last_seen = now;
    }

    fn timeout(&self, t: &Timeouts) -> u32 {
        match self.key.proto {
            protocol::TCP if self.established && !self.closing => t.tcp_established,
            protocol::TCP => t.tcp_transitory,
            protocol::UDP => t.udp,
            _ => t.icmp,
        }
    }
}

/// Two seeds from hashbrown's randomly seeded hasher (a fresh random state per table), so
/// bucket placement cannot be predicted from outside.
fn random_seed() -> [u64; 2] {
    let state = DefaultHashBuilder::default();
    [state.hash_one(0x5eed_u64), state.hash_one(0xf10e_u64)]
}

/// A keyed hash of a 5-tuple packed into two words: two folded 64x64→128-bit multiplies (the
/// construction of foldhash and wyhash), about a nanosecond.
#[inline]
fn mix(seed: [u64; 2], a: u64, b: u64) -> u64 {
    let fold = |x: u64, y: u64| {
        let p = u128::from(x).wrapping_mul(u128::from(y));
        (p as u64) ^ ((p >> 64) as u64)
    };
    fold(
        fold(a ^ seed[0], b ^ seed[1]) ^ 0x243f_6a88_85a3_08d3,
        seed[0] ^ 0x1319_8a2e_0370_7344,
    )
}

/// A slab entry: one cache line.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Entry(Option<Flow>);

/// The flow table of one core.
pub struct FlowTable {
    forward: Index,
    reverse: Index,
    seed: [u64; 2],
    slab: Vec<Entry>,
    free_slots: Vec<u32>,
    pools: Vec<((u32, u8), PortPool)>,
    range: PortRange,
    timeouts: Timeouts,
    hand: usize,
    len: usize,
    /// The first flow (slot) of each owner, `NIL` if none; indexed by owner, grown to the
    /// largest owner seen (`reserve_owners` sizes it up front, off the packet path).
    owner_heads: Vec<u32>,
}

impl FlowTable {
    /// Whether translated `port` is in this table's range (its flows are this core's).
    #[inline]
    pub fn owns_port(&self, port: u16) -> bool {
        self.range.contains(port)
    }

    /// A table for at most `capacity` flows, translating into `range`.
    pub fn new(capacity: usize, range: PortRange, timeouts: Timeouts) -> Self {
        let capacity = capacity.max(1);
        Self {
            forward: Index::new(capacity),
            reverse: Index::new(capacity),
            seed: random_seed(),
            slab: crate::mem::huge_vec(capacity, Entry(None)),
            free_slots: (0..capacity as u32).rev().collect(),
            pools: Vec::new(),
            range,
            timeouts,
            hand: 0,
            len: 0,
            owner_heads: Vec::new(),
        }
    }

    /// Makes room for owners `0..owners` (a core's session slots) now, so that the first flow
    /// of a session never allocates on the packet path.
    pub fn reserve_owners(&mut self, owners: usize) {
        if owners > self.owner_heads.len() {
            self.owner_heads.resize(owners, NIL);
        }
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hash a client-side tuple is indexed by.
    #[inline]
    pub fn hash_forward(&self, key: &FlowKey) -> u64 {
        mix(
            self.seed,
            u64::from(key.client) << 32 | u64::from(key.dst),
            u64::from(key.src_port) << 32 | u64::from(key.dst_port) << 8 | u64::from(key.proto),
        )
    }

    /// The hash a return tuple is indexed by.
    #[inline]
    pub fn hash_reverse(&self, key: &ReverseKey) -> u64 {
        mix(
            self.seed,
            u64::from(key.eni) << 32 | u64::from(key.remote),
            u64::from(key.nat_port) << 32 | u64::from(key.remote_port) << 8 | u64::from(key.proto),
        )
    }

    /// Starts bringing in the index line of a forward lookup (from `hash_forward`).
    #[inline]
    pub fn prefetch_forward_bucket(&self, hash: u64) {
        prefetch_line(self.forward.bucket_addr(hash));
    }

    /// Starts bringing in the index line of a reverse lookup (from `hash_reverse`).
    #[inline]
    pub fn prefetch_reverse_bucket(&self, hash: u64) {
        prefetch_line(self.reverse.bucket_addr(hash));
    }

    /// Starts bringing in the flow a forward lookup will most likely land on (reads the index
    /// line, which should have been prefetched); returns its slot, a guess for
    /// `find_hashed_at` (not checked against the key).
    #[inline]
    pub fn prefetch_forward_flow(&self, hash: u64) -> Option<u32> {
        let slot = self.forward.candidate(hash);
        self.prefetch_slot(slot);
        slot
    }

    /// The same for a reverse lookup; returns the slot it requested (almost always the flow
    /// the lookup finds, but not checked against the key: a look-ahead's guess).
    #[inline]
    pub fn prefetch_reverse_flow(&self, hash: u64) -> Option<u32> {
        let slot = self.reverse.candidate(hash);
        self.prefetch_slot(slot);
        slot
    }

    /// The session slot owning the flow in slot `s`, if there is one.
    #[inline]
    pub fn owner_at(&self, s: u32) -> Option<u32> {
        self.flow_at(s).map(|f| f.owner)
    }

    #[inline]
    fn prefetch_slot(&self, slot: Option<u32>) {
        if let Some(e) = slot.and_then(|s| self.slab.get(s as usize)) {
            prefetch_line(std::ptr::from_ref(e).cast());
        }
    }

    /// The flow in slot `s`, if any.
    #[inline]
    fn flow_at(&self, s: u32) -> Option<&Flow> {
        self.slab.get(s as usize)?.0.as_ref()
    }

    fn find_forward(&self, key: &FlowKey, hash: u64) -> Option<u32> {
        self.forward
            .find(hash, |s| self.flow_at(s).is_some_and(|f| f.key == *key))
    }

    fn find_reverse(&self, key: &ReverseKey, hash: u64) -> Option<u32> {
        self.reverse.find(hash, |s| {
            self.flow_at(s).is_some_and(|f| f.reverse() == *key)
        })
    }

    /// The flow in slot `i` (from `find_hashed`, say), refreshed.
    #[inline]
    pub fn refresh(&mut self, i: u32, now: u32) -> Option<&mut Flow> {
        let f = self.slab.get_mut(i as usize)?.0.as_mut()?;
        f.last_seen = now;
        Some(f)
    }

    /// The flow of a client-side tuple, refreshed.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, now: u32) -> Option<&mut Flow> {
        self.lookup_hashed(key, self.hash_forward(key), now)
    }

    /// The flow that return traffic belongs to, refreshed.
    #[inline]
    pub fn lookup_reverse(&mut self, key: &ReverseKey, now: u32) -> Option<&mut Flow> {
        self.lookup_reverse_at(key, None, now)
    }

    /// The flow of a client-side tuple whose `hash_forward` is already known, refreshed.
    #[inline]
    pub fn lookup_hashed(&mut self, key: &FlowKey, hash: u64, now: u32) -> Option<&mut Flow> {
        let i = self.find_forward(key, hash)?;
        self.refresh(i, now)
    }

    /// The slot of the flow of a client-side tuple and that flow, not refreshed; `hash` is
    /// `hash_forward(key)`.
    #[inline]
    pub fn find_hashed(&self, key: &FlowKey, hash: u64) -> Option<(u32, &Flow)> {
        let i = self.find_forward(key, hash)?;
        Some((i, self.flow_at(i)?))
    }

    /// `find_hashed`, trying slot `hint` first (what `prefetch_forward_flow` returned for the
    /// same hash; the flow there is used only if it is the key's).
    #[inline]
    pub fn find_hashed_at(
        &self,
        key: &FlowKey,
        hash: u64,
        hint: Option<u32>,
    ) -> Option<(u32, &Flow)> {
        if let Some((i, f)) = hint.and_then(|i| Some((i, self.flow_at(i)?))) {
            if f.key == *key {
                return Some((i, f));
            }
        }
        self.find_hashed(key, hash)
    }

    /// `lookup_reverse`, trying slot `hint` first (what a look-ahead found for the same key;
    /// the flow there is used only if it is the key's).
    #[inline]
    pub fn lookup_reverse_at(
        &mut self,
        key: &ReverseKey,
        hint: Option<u32>,
        now: u32,
    ) -> Option<&mut Flow> {
        let (_, f) = self.find_reverse_at(key, hint)?;
        f.touch(now);
        Some(f)
    }

    /// The slot of the flow that return traffic belongs to and that flow, not refreshed (the
    /// caller refreshes it once it is sure the packet goes on: `Flow::touch`), trying slot
    /// `hint` first as `lookup_reverse_at` does. Out of line: once `drop_packet` went cold,
    /// LLVM inlined the lookup into `handle_network_side`, and net->client took 8 ticks a
    /// packet more at 64 bytes for 11 instructions fewer (bench/RESULTS.md, eleventh session).
    #[inline(never)]
    pub fn find_reverse_at(
        &mut self,
        key: &ReverseKey,
        hint: Option<u32>,
    ) -> Option<(u32, &mut Flow)> {
        let hit = hint.filter(|&i| self.flow_at(i).is_some_and(|f| f.reverse() == *key));
        let i = match hit {
            Some(i) => i,
            None => self.find_reverse(key, self.hash_reverse(key))?,
        };
        Some((i, self.flow_at_mut(i)?))
    }

    /// The flow in slot `i`, not refreshed.
    #[inline]
    pub fn get(&self, i: u32) -> Option<&Flow> {
        self.flow_at(i)
    }

    /// The slot of the flow that return traffic belongs to and that flow, without refreshing
    /// it (a look ahead); `hash` is `hash_reverse(key)`.
    #[inline]
    pub fn peek_reverse_hashed(&self, key: &ReverseKey, hash: u64) -> Option<(u32, &Flow)> {
        let i = self.find_reverse(key, hash)?;
        Some((i, self.flow_at(i)?))
    }

    fn pool(&mut self, eni: u32, proto: u8) -> &mut PortPool {
        let i = match self.pools.iter().position(|(k, _)| *k == (eni, proto)) {
            Some(i) => i,
            None => {
                // First flow to a new (ENI, protocol): the one allocation, at configuration scale.
                self.pools.push(((eni, proto), PortPool::new(self.range)));
                self.pools.len() - 1
            }
        };
        &mut self.pools[i].1
    }

    /// Creates the flow of `key`, translated to `eni` and a free port of this core.
    ///
    /// # Errors
    /// `FlowTableFull` or `SnatPortExhausted`.
    pub fn create(
        &mut self,
        key: FlowKey,
        eni: u32,
        port: u16,
        owner: u32,
        now: u32,
    ) -> Result<&mut Flow, DropReason> {
        if self.free_slots.is_empty() {
            return Err(DropReason::FlowTableFull);
        }
        let nat_port = match self.pool(eni, key.proto).alloc() {
            Some(p) => p,
            None => self.reuse_port(eni, &key)?,
        };
        let flow = Flow {
            key,
            eni,
            nat_port,
            owner,
            port,
            next_hop: 0,
            decided: 0,
            established: false,
            closing: false,
            last_seen: now,
            owner_prev: NIL,
            owner_next: NIL,
        };
        let (fh, rh) = (self.hash_forward(&key), self.hash_reverse(&flow.reverse()));
        // A slot, then both index entries; anything missing undoes the rest.
        let slot = self.free_slots.pop();
        let indexed = slot.filter(|&s| {
            if !self.forward.insert(fh, s) {
                return false;
            }
            if !self.reverse.insert(rh, s) {
                self.forward.remove(fh, s);
                return false;
            }
            true
        });
        let Some(slot) = indexed else {
            self.free_slots.extend(slot);
            self.pool(eni, key.proto).release(nat_port);
            return Err(DropReason::FlowTableFull);
        };
        self.len += 1;
        self.slab[slot as usize].0 = Some(flow);
        self.link_owner(slot, owner);
        self.slab[slot as usize]
            .0
            .as_mut()
            .ok_or(DropReason::FlowTableFull)
    }

    /// Puts the flow in `slot` at the front of `owner`'s list.
    fn link_owner(&mut self, slot: u32, owner: u32) {
        let o = owner as usize;
        if o >= self.owner_heads.len() {
            // Only for an owner beyond `reserve_owners` (tests; a worker reserves its sessions).
            self.owner_heads.resize(o + 1, NIL);
        }
        let next = self.owner_heads[o];
        if let Some(f) = self.flow_at_mut(next) {
            f.owner_prev = slot;
        }
        if let Some(f) = self.flow_at_mut(slot) {
            f.owner_prev = NIL;
            f.owner_next = next;
        }
        self.owner_heads[o] = slot;
    }

    /// Takes `flow` (just removed from its slot) out of its owner's list.
    fn unlink_owner(&mut self, flow: &Flow) {
        let (prev, next) = (flow.owner_prev, flow.owner_next);
        if let Some(f) = self.flow_at_mut(next) {
            f.owner_prev = prev;
        }
        match self.flow_at_mut(prev) {
            Some(f) => f.owner_next = next,
            None => {
                if let Some(h) = self.owner_heads.get_mut(flow.owner as usize) {
                    *h = next;
                }
            }
        }
    }

    #[inline]
    fn flow_at_mut(&mut self, s: u32) -> Option<&mut Flow> {
        self.slab.get_mut(s as usize)?.0.as_mut()
    }

    /// Every port is in use: pick one whose reverse tuple toward this flow's remote endpoint is
    /// free (address-and-port-dependent mapping, as Linux does once ports run out), probing a
    /// bounded number of ports from a hash of the flow. The limit is then about 64k flows per
    /// (ENI, protocol, remote address, remote port) and core, not 64k per ENI.
    fn reuse_port(&mut self, eni: u32, key: &FlowKey) -> Result<u16, DropReason> {
        const PROBES: u32 = 64;
        let range = self.pool(eni, key.proto).range();
        let len = u32::from(range.len.max(1));
        let mut h =
            u64::from(key.client) << 32 | u64::from(key.src_port) << 16 | u64::from(key.dst_port);
        h ^= u64::from(key.dst).rotate_left(17);
        h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let start = (h >> 32) as u32 % len;
        for step in 0..PROBES.min(len) {
            let port = range.first + ((start + step * 7919) % len) as u16;
            let rk = ReverseKey {
                eni,
                proto: key.proto,
                nat_port: port,
                remote: key.dst,
                remote_port: key.dst_port,
            };
            if self.find_reverse(&rk, self.hash_reverse(&rk)).is_none() {
                self.pool(eni, key.proto).share(port);
                return Ok(port);
            }
        }
        Err(DropReason::SnatPortExhausted)
    }

    /// Updates a TCP flow's state from the flags of a segment; `from_remote` for replies. A
    /// client's SYN (without ACK) opens the tuple anew: a connection that reuses the tuple of
    /// one that closed (within its transitory timeout) is tracked as new, not as closing for
    /// the rest of its life (RFC 5382 wants two hours of idle for an established one).
    pub fn observe_tcp(flow: &mut Flow, tcp_flags: u8, from_remote: bool) {
        if tcp_flags & (flags::FIN | flags::RST) != 0 {
            flow.closing = true;
        } else if !from_remote && tcp_flags & (flags::SYN | flags::ACK) == flags::SYN {
            flow.closing = false;
            flow.established = false;
        } else if from_remote && tcp_flags & flags::ACK != 0 {
            flow.established = true;
        }
    }

    fn remove_slot(&mut self, slot: usize) {
        let Some(flow) = self.slab.get_mut(slot).and_then(|e| e.0.take()) else {
            return;
        };
        let (fh, rh) = (
            self.hash_forward(&flow.key),
            self.hash_reverse(&flow.reverse()),
        );
        self.forward.remove(fh, slot as u32);
        self.reverse.remove(rh, slot as u32);
        self.unlink_owner(&flow);
        self.pool(flow.eni, flow.key.proto).release(flow.nat_port);
        self.free_slots.push(slot as u32);
        self.len -= 1;
    }

    /// Removes the flow in slot `i` (both index entries, its owner's list, its port), if any.
    pub fn remove(&mut self, i: u32) {
        self.remove_slot(i as usize);
    }

    /// Examines at most `budget` slots from the clock hand and removes idle flows; returns how
    /// many were removed.
    pub fn expire(&mut self, now: u32, budget: usize) -> usize {
        let n = self.slab.len();
        let mut removed = 0;
        // The hand steps without a division: a `%` here (a 32-bit `div` in the dependency
        // chain from one slot to the next) was most of the sweep's time in a sampling profile.
        let mut hand = self.hand;
        for _ in 0..budget.min(n) {
            let i = hand;
            hand = if hand + 1 >= n { 0 } else { hand + 1 };
            let expired = self.slab[i]
                .0
                .as_ref()
                .is_some_and(|f| now.saturating_sub(f.last_seen) > f.timeout(&self.timeouts));
            if expired {
                self.remove_slot(i);
                removed += 1;
            }
        }
        self.hand = hand;
        removed
    }

    /// Removes every flow of `owner` (a session that ended): a walk of that owner's list, so
    /// the core pauses for the session's own flows, not for the whole table (a full scan of a
    /// million-flow table took milliseconds, enough to overflow a receive ring at every
    /// disconnect).
    pub fn remove_owner(&mut self, owner: u32) -> usize {
        let mut removed = 0;
        let mut s = self.owner_heads.get(owner as usize).copied().unwrap_or(NIL);
        while let Some(next) = self.flow_at(s).map(|f| f.owner_next) {
            self.remove_slot(s as usize);
            removed += 1;
            s = next;
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap as Oracle;

    fn key(client: u32, sport: u16) -> FlowKey {
        FlowKey {
            client,
            proto: protocol::UDP,
            src_port: sport,
            dst: 0x0808_0808,
            dst_port: 53,
        }
    }

    #[test]
    fn translate_and_return() {
        let mut t = FlowTable::new(
            8,
            PortRange {
                first: 5000,
                len: 100,
            },
            Timeouts::default(),
        );
        let f = *t.create(key(1, 40000), 0xac1f_0105, 1, 7, 0).unwrap();
        assert_eq!((f.nat_port, f.owner), (5000, 7));
        let r = ReverseKey {
            eni: 0xac1f_0105,
            proto: protocol::UDP,
            nat_port: 5000,
            remote: 0x0808_0808,
            remote_port: 53,
        };
        assert_eq!(t.lookup_reverse(&r, 1).map(|f| f.key), Some(key(1, 40000)));
        assert!(t.lookup(&key(1, 40000), 1).is_some());
        assert!(
            t.lookup_reverse(
                &ReverseKey {
                    remote_port: 54,
                    ..r
                },
                1
            )
            .is_none(),
            "another remote port is not this flow"
        );
        // Look-ahead results: a right hint is used, a wrong or stale one falls back.
        let g = *t.create(key(2, 40000), 0xac1f_0105, 1, 8, 0).unwrap();
        let (slot, _) = t.peek_reverse_hashed(&r, t.hash_reverse(&r)).unwrap();
        let r2 = ReverseKey {
            nat_port: g.nat_port,
            ..r
        };
        let (slot2, _) = t.peek_reverse_hashed(&r2, t.hash_reverse(&r2)).unwrap();
        for hint in [Some(slot), Some(slot2), Some(999), None] {
            let got = t
                .lookup_reverse_at(&r, hint, 2)
                .map(|f| (f.key, f.last_seen));
            assert_eq!(got, Some((key(1, 40000), 2)), "{hint:?}");
        }
        let h = t.hash_forward(&key(2, 40000));
        assert_eq!(
            t.lookup_hashed(&key(2, 40000), h, 3).map(|f| f.owner),
            Some(8)
        );
        // The same for the forward direction's guess: the prefetch names the flow's slot.
        let guess = t.prefetch_forward_flow(h);
        let (own, _) = t.find_hashed(&key(2, 40000), h).unwrap();
        assert_eq!(guess, Some(own));
        let (other, _) = t
            .find_hashed(&key(1, 40000), t.hash_forward(&key(1, 40000)))
            .unwrap();
        for hint in [Some(own), Some(other), Some(999), None] {
            let got = t
                .find_hashed_at(&key(2, 40000), h, hint)
                .map(|(s, f)| (s, f.owner));
            assert_eq!(got, Some((own, 8)), "{hint:?}");
        }
        assert!(t
            .find_hashed_at(&key(3, 40000), t.hash_forward(&key(3, 40000)), Some(own))
            .is_none());
    }

    #[test]
    fn a_removed_flow_takes_its_indexes_owner_link_and_port() {
        let mut t = FlowTable::new(
            4,
            PortRange {
                first: 5000,
                len: 1,
            },
            Timeouts::default(),
        );
        let f = *t.create(key(1, 40000), 0xac1f_0105, 1, 7, 0).unwrap();
        let (slot, _) = t
            .find_hashed(&key(1, 40000), t.hash_forward(&key(1, 40000)))
            .unwrap();
        t.remove(slot);
        t.remove(slot);
        assert_eq!(t.len(), 0);
        assert!(t.lookup(&key(1, 40000), 1).is_none());
        assert!(t.lookup_reverse(&f.reverse(), 1).is_none());
        assert_eq!(t.remove_owner(7), 0);
        let g = t.create(key(1, 40000), 0xac1f_0106, 1, 7, 1).unwrap();
        assert_eq!((g.nat_port, g.eni), (5000, 0xac1f_0106));
    }

    #[test]
    fn full_table_and_port_exhaustion_are_counted_drops() {
        let mut t = FlowTable::new(
            2,
            PortRange {
                first: 5000,
                len: 100,
            },
            Timeouts::default(),
        );
        t.create(key(1, 1), 9, 0, 0, 0).unwrap();
        t.create(key(1, 2), 9, 0, 0, 0).unwrap();
        assert_eq!(
            t.create(key(1, 3), 9, 0, 0, 0).map(|_| ()),
            Err(DropReason::FlowTableFull)
        );
        let mut t = FlowTable::new(
            10,
            PortRange {
                first: 5000,
                len: 1,
            },
            Timeouts::default(),
        );
        t.create(key(1, 1), 9, 0, 0, 0).unwrap();
        assert_eq!(
            t.create(key(1, 2), 9, 0, 0, 0).map(|_| ()),
            Err(DropReason::SnatPortExhausted),
            "the one port toward this remote endpoint is taken"
        );
        assert!(
            t.create(key(1, 2), 10, 0, 0, 0).is_ok(),
            "another ENI has its own ports"
        );
    }

    #[test]
    fn ports_are_reused_toward_other_remote_endpoints() {
        let mut t = FlowTable::new(
            64,
            PortRange {
                first: 5000,
                len: 4,
            },
            Timeouts::default(),
        );
        let to = |client: u32, dst_port: u16| FlowKey {
            client,
            proto: protocol::UDP,
            src_port: 1,
            dst: 0x0808_0808,
            dst_port,
        };
        // Four flows toward port 53 take the four ports; a fifth toward 53 cannot be told apart.
        for c in 0..4 {
            t.create(to(c, 53), 9, 0, c, 0).unwrap();
        }
        assert_eq!(
            t.create(to(9, 53), 9, 0, 9, 0).map(|_| ()),
            Err(DropReason::SnatPortExhausted)
        );
        // Toward other remote ports, every port is usable again, and each reply finds its flow.
        let mut seen = std::collections::HashSet::new();
        for c in 10..26 {
            let dport = 100 + (c % 4) as u16;
            let f = *t.create(to(c, dport), 9, 0, c, 0).unwrap();
            assert!(
                seen.insert((f.nat_port, dport)),
                "a reverse tuple used twice"
            );
            let r = ReverseKey {
                eni: 9,
                proto: protocol::UDP,
                nat_port: f.nat_port,
                remote: 0x0808_0808,
                remote_port: dport,
            };
            assert_eq!(t.lookup_reverse(&r, 0).map(|f| f.key), Some(to(c, dport)));
        }
        assert_eq!(t.len(), 20);
        // A shared port is freed only with its last flow.
        assert_eq!(t.remove_owner(0), 1);
        t.expire(1_000_000, 64);
        assert!(t.is_empty());
        assert_eq!(t.pool(9, protocol::UDP).free(), 4);
    }

    /// A small table with default timeouts, and the key of a TCP connection to `dst_port`.
    fn tcp_table(dst_port: u16) -> (FlowTable, FlowKey, Timeouts) {
        let tm = Timeouts::default();
        let t = FlowTable::new(
            4,
            PortRange {
                first: 5000,
                len: 10,
            },
            tm,
        );
        let k = FlowKey {
            client: 1,
            proto: protocol::TCP,
            src_port: 1,
            dst: 2,
            dst_port,
        };
        (t, k, tm)
    }

    #[test]
    fn tcp_timeouts_follow_state() {
        let (mut t, k, tm) = tcp_table(80);
        t.create(k, 9, 0, 0, 0).unwrap();
        assert_eq!(t.expire(tm.tcp_transitory, 4), 0);
        assert_eq!(
            t.expire(tm.tcp_transitory + 1, 4),
            1,
            "an unanswered SYN is transitory"
        );
        let f = t.create(k, 9, 0, 0, 100).unwrap();
        FlowTable::observe_tcp(f, flags::SYN | flags::ACK, true);
        assert_eq!(
            t.expire(100 + tm.tcp_transitory + 1, 4),
            0,
            "established lives longer"
        );
        let f = t.lookup(&k, 200).unwrap();
        FlowTable::observe_tcp(f, flags::FIN | flags::ACK, false);
        assert_eq!(t.expire(200 + tm.tcp_transitory + 1, 4), 1);
        assert!(t.is_empty());
    }

    /// A new connection on the tuple of one that closed a moment ago (a reused source port)
    /// is tracked as a new connection: once answered, established, not closing for good.
    #[test]
    fn a_reused_tuple_opens_anew() {
        let (mut t, k, tm) = tcp_table(22);
        let f = t.create(k, 9, 0, 0, 0).unwrap();
        FlowTable::observe_tcp(f, flags::SYN | flags::ACK, true);
        let f = t.lookup(&k, 10).unwrap();
        FlowTable::observe_tcp(f, flags::FIN | flags::ACK, false);
        // The same tuple again, 100 s later: SYN, SYN-ACK, ACK.
        let f = t.lookup(&k, 110).unwrap();
        FlowTable::observe_tcp(f, flags::SYN, false);
        let r = f.reverse();
        let f = t.lookup_reverse(&r, 110).unwrap();
        FlowTable::observe_tcp(f, flags::SYN | flags::ACK, true);
        let f = t.lookup(&k, 110).unwrap();
        FlowTable::observe_tcp(f, flags::ACK, false);
        assert_eq!(
            t.expire(110 + tm.tcp_transitory + 60, 4),
            0,
            "the new connection is established, not closing"
        );
        assert_eq!(t.expire(110 + tm.tcp_established + 1, 4), 1);
    }

    #[test]
    fn remove_owner_frees_ports() {
        let mut t = FlowTable::new(
            4,
            PortRange {
                first: 5000,
                len: 2,
            },
            Timeouts::default(),
        );
        t.create(key(1, 1), 9, 0, 3, 0).unwrap();
        t.create(key(2, 1), 9, 0, 4, 0).unwrap();
        assert_eq!(t.remove_owner(3), 1);
        assert!(
            t.create(key(5, 5), 9, 0, 5, 0).is_ok(),
            "the port came back"
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Create(u16),
        Lookup(u16),
        Advance(u32),
        Expire(usize),
        RemoveOwner(u32),
    }

    /// Every owner's list holds exactly the flows it owns, linked both ways.
    fn owner_lists_agree(t: &FlowTable) -> bool {
        let mut listed = std::collections::HashSet::new();
        for (o, &head) in t.owner_heads.iter().enumerate() {
            let (mut prev, mut s) = (NIL, head);
            while let Some(f) = t.flow_at(s) {
                if f.owner as usize != o || f.owner_prev != prev || !listed.insert(s) {
                    return false;
                }
                (prev, s) = (s, f.owner_next);
            }
            if s != NIL {
                return false;
            }
        }
        let held = t.slab.iter().filter(|e| e.0.is_some()).count();
        listed.len() == held
    }

    /// Each (ENI, protocol)'s port pool counts exactly the live flows on each of its ports: no
    /// port held for a flow that is gone (a leak the reuse of ports would hide: it probes the
    /// reverse index, not the pool), none freed while a flow still uses it (a double release),
    /// and no live flow without its pool. `Err` names the first disagreement.
    fn pools_agree(t: &FlowTable) -> Result<(), String> {
        let len = usize::from(t.range.len);
        let mut live: Oracle<(u32, u8), Vec<u32>> = Oracle::new();
        for f in t.slab.iter().filter_map(|e| e.0.as_ref()) {
            if !t.range.contains(f.nat_port) {
                return Err(format!("{:?} translated outside the range", f.key));
            }
            let i = usize::from(f.nat_port - t.range.first);
            live.entry((f.eni, f.key.proto))
                .or_insert_with(|| vec![0; len])[i] += 1;
        }
        for (which, pool) in &t.pools {
            let want = live.remove(which).unwrap_or_else(|| vec![0; len]);
            let got = pool.users().map_err(|e| format!("pool {which:?}: {e}"))?;
            if let Some(i) = (0..len).find(|&i| got[i] != want[i]) {
                return Err(format!(
                    "pool {which:?}: port {} counts {} users, {} live flows use it",
                    usize::from(t.range.first) + i,
                    got[i],
                    want[i]
                ));
            }
        }
        match live.keys().next() {
            Some(which) => Err(format!("live flows of {which:?} have no pool")),
            None => Ok(()),
        }
    }

    #[derive(Clone, Debug)]
    enum Op2 {
        Create(u16, bool),
        Remove(u16),
        RemoveOwner(u32),
        Advance(u32),
        Expire(usize),
    }

    /// Flow `s` of the shared-port test: to one of three remotes, so that with fewer ports
    /// than flows a port serves several remotes (`reuse_port`).
    fn shared_key(s: u16) -> FlowKey {
        FlowKey {
            dst: 0x0808_0800 + u32::from(s % 3),
            ..key(1, s)
        }
    }

    proptest! {
        /// With fewer ports than flows (ports shared among remotes), through creates, removals
        /// by slot (`remove`, as a flow whose route moved), by owner and by expiry: every live
        /// flow is found both ways, by its own key and its own reverse key; no two share a
        /// reverse key; the port pool counts exactly the live flows on each port
        /// (`pools_agree`); and at the end, the table emptied, as many flows to one remote as
        /// there are ports fit, and not one more.
        #[test]
        fn shared_ports_and_removals_keep_both_indexes(ops in proptest::collection::vec(prop_oneof![
            (0u16..24).prop_map(|s| Op2::Create(s, false)), (0u16..24).prop_map(Op2::Remove),
            (0u32..4).prop_map(Op2::RemoveOwner), (0u32..200).prop_map(Op2::Advance),
            (0usize..40).prop_map(Op2::Expire)], 1..200)) {
            let tm = Timeouts::default();
            let mut t = FlowTable::new(16, PortRange { first: 5000, len: 6 }, tm);
            let mut now = 0u32;
            for op in ops {
                match op {
                    Op2::Create(s, other_eni) => {
                        if t.lookup(&shared_key(s), now).is_none() {
                            let eni = if other_eni { 10 } else { 9 };
                            let _ = t.create(shared_key(s), eni, 0, u32::from(s % 4), now);
                        }
                    }
                    Op2::Remove(s) => {
                        let k = shared_key(s);
                        if let Some(slot) = t.find_forward(&k, t.hash_forward(&k)) {
                            t.remove(slot);
                            prop_assert!(t.find_forward(&k, t.hash_forward(&k)).is_none());
                        }
                    }
                    Op2::RemoveOwner(o) => {
                        t.remove_owner(o);
                    }
                    Op2::Advance(d) => now += d,
                    Op2::Expire(b) => {
                        t.expire(now, b);
                    }
                }
                let mut reverse = std::collections::HashSet::new();
                let mut live = 0;
                for (i, e) in t.slab.iter().enumerate() {
                    let Some(f) = &e.0 else { continue };
                    live += 1;
                    let (k, r) = (f.key, f.reverse());
                    prop_assert_eq!(t.find_forward(&k, t.hash_forward(&k)), Some(i as u32));
                    prop_assert_eq!(
                        t.peek_reverse_hashed(&r, t.hash_reverse(&r)).map(|(s, _)| s),
                        Some(i as u32)
                    );
                    prop_assert!(reverse.insert(r), "two flows share a reverse key");
                }
                prop_assert_eq!(t.len(), live);
                prop_assert!(owner_lists_agree(&t));
                pools_agree(&t).map_err(TestCaseError::fail)?;
            }
            for o in 0..4 {
                t.remove_owner(o);
            }
            prop_assert!(t.is_empty());
            pools_agree(&t).map_err(TestCaseError::fail)?;
            // As many flows to one remote as there are ports (none can share a port with
            // another to the same remote), then the shared ones.
            for s in 0..6 {
                prop_assert!(t.create(key(1, 100 + s), 9, 0, 0, now).is_ok(), "port {} lost", s);
            }
            prop_assert!(t.create(key(1, 106), 9, 0, 0, now).is_err(), "six ports, not more");
            for s in 0..10 {
                prop_assert!(t.create(shared_key(s), 9, 0, 0, now).is_ok(), "flow {} finds no port", s);
            }
        }

        /// Port accounting under pressure: three ports for each (ENI, protocol), flows of two
        /// ENIs and two protocols toward four remotes, so that ports are shared by up to four
        /// flows and run out; through creates (refused ones too), removals by slot, by owner
        /// and by expiry, every pool counts exactly the live flows on each port
        /// (`pools_agree`), and once every flow is gone every port is free.
        #[test]
        fn port_pools_count_exactly_the_live_flows(ops in proptest::collection::vec(prop_oneof![
            4 => (0u16..48, any::<bool>()).prop_map(|(s, e)| Op2::Create(s, e)),
            1 => (0u16..48).prop_map(Op2::Remove), 1 => (0u32..4).prop_map(Op2::RemoveOwner),
            1 => (0u32..100).prop_map(Op2::Advance), 1 => (0usize..40).prop_map(Op2::Expire)],
            1..300)) {
            let mut t = FlowTable::new(32, PortRange { first: 5000, len: 3 }, Timeouts::default());
            let flow = |s: u16| FlowKey {
                proto: if s % 2 == 0 { protocol::UDP } else { protocol::TCP },
                dst: 0x0808_0800 + u32::from(s / 2 % 4),
                ..key(1, s)
            };
            let mut now = 0u32;
            for op in ops {
                match op {
                    Op2::Create(s, other_eni) => {
                        if t.lookup(&flow(s), now).is_none() {
                            let eni = if other_eni { 10 } else { 9 };
                            let _ = t.create(flow(s), eni, 0, u32::from(s % 4), now);
                        }
                    }
                    Op2::Remove(s) => {
                        if let Some(slot) = t.find_forward(&flow(s), t.hash_forward(&flow(s))) {
                            t.remove(slot);
                        }
                    }
                    Op2::RemoveOwner(o) => {
                        t.remove_owner(o);
                    }
                    Op2::Advance(d) => now += d,
                    Op2::Expire(b) => {
                        t.expire(now, b);
                    }
                }
                pools_agree(&t).map_err(TestCaseError::fail)?;
            }
            for o in 0..4 {
                t.remove_owner(o);
            }
            prop_assert!(t.is_empty());
            pools_agree(&t).map_err(TestCaseError::fail)?;
            for (which, pool) in &t.pools {
                prop_assert_eq!(pool.free(), 3, "pool {:?}", which);
            }
        }

        /// Against a HashMap oracle: presence after creates, lookups (which refresh), expiry
        /// (eventually complete, never early) and removal by owner (flow `s` is owner `s % 4`'s);
        /// the owners' lists always hold exactly their flows.
        #[test]
        fn agrees_with_hashmap(ops in proptest::collection::vec(prop_oneof![
            (0u16..20).prop_map(Op::Create), (0u16..20).prop_map(Op::Lookup),
            (0u32..200).prop_map(Op::Advance), (0usize..40).prop_map(Op::Expire),
            (0u32..5).prop_map(Op::RemoveOwner)], 1..200)) {
            let tm = Timeouts::default();
            let mut t = FlowTable::new(16, PortRange { first: 5000, len: 64 }, tm);
            let mut oracle: Oracle<u16, u32> = Oracle::new();
            let mut now = 0u32;
            for op in ops {
                match op {
                    Op::Create(s) => {
                        if t.lookup(&key(1, s), now).is_some() {
                            oracle.insert(s, now);
                        } else {
                            let r = t.create(key(1, s), 9, 0, u32::from(s % 4), now).map(|_| ());
                            if oracle.len() < 16 { prop_assert!(r.is_ok()); oracle.insert(s, now); }
                            else { prop_assert_eq!(r, Err(DropReason::FlowTableFull)); }
                        }
                    }
                    Op::Lookup(s) => {
                        let got = t.lookup(&key(1, s), now).is_some();
                        prop_assert_eq!(got, oracle.contains_key(&s));
                        if got { oracle.insert(s, now); }
                    }
                    Op::Advance(d) => now += d,
                    Op::RemoveOwner(o) => {
                        let before = oracle.len();
                        oracle.retain(|s, _| u32::from(s % 4) != o);
                        prop_assert_eq!(t.remove_owner(o), before - oracle.len());
                    }
                    Op::Expire(b) => {
                        t.expire(now, b);
                        // Never early: whatever is gone had been idle past its timeout.
                        oracle.retain(|s, seen| {
                            let k = key(1, *s);
                            let present = t.find_forward(&k, t.hash_forward(&k)).is_some();
                            assert!(present || now - *seen > tm.udp, "flow {s} expired early");
                            present
                        });
                    }
                }
                prop_assert_eq!(t.len(), oracle.len());
                prop_assert!(owner_lists_agree(&t));
                pools_agree(&t).map_err(TestCaseError::fail)?;
            }
            // A full sweep removes everything idle.
            now += tm.udp + 1;
            t.expire(now, 16);
            prop_assert!(t.is_empty());
        }
    }
}
