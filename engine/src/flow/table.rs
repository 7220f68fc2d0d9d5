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
use crate::wire::ipv4::{protocol, DatagramId, Ipv4Packet};
use crate::wire::tcp::{flags, TcpPacket};

/// Idle timeouts in seconds (RFC 5382 REQ-5 for established TCP, at least 2 h 4 min; RFC 4787
/// REQ-5 for UDP, at least 2 min, 5 recommended; ICMP as Linux conntrack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after the handshake completed.
    pub tcp_established: u32,
    /// TCP before the handshake completed or after a FIN or RST (the remote's only within the
    /// client's window: `FlowTable::observe_remote_tcp`).
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
    /// What `client_ack` holds (TCP).
    track: Track,
    /// The client's window scale (RFC 7323): its SYN's option (0 without one, or once the
    /// remote's SYN-ACK shows none); `WSCALE_UNKNOWN` for a flow picked up without its SYN.
    wscale: u8,
    /// `Track::Acked`: the largest window field the client's segments carried since its SYN
    /// (or since the flow was picked up), unscaled (the scale is fixed by then). The remote's
    /// segments are checked against it, as conntrack checks against the largest window seen
    /// (`td_maxwin`): a client that shrinks its window does not make the remote's data or RST
    /// sent into the larger one out of window.
    client_max_window: u16,
    /// `Track::SynSent`: the length of the data the client's SYN carried (TCP Fast Open, RFC
    /// 7413), which the answer may acknowledge too.
    syn_data: u16,
    /// `Track::SynSent`: the client's ISN + 1; `Track::Acked`: the acknowledgment number of
    /// the client's last segment (the left edge of its receive window).
    client_ack: u32,
    last_seen: u32,
    /// The owner's other flows (slots; `NIL` at either end): `remove_owner` visits only the
    /// flows of the session that ended.
    owner_prev: u32,
    owner_next: u32,
}

/// No slot (the ends of an owner's list of flows).
const NIL: u32 = u32::MAX;

/// How far a TCP flow follows the client's side of its connection: what the remote's
/// segments are checked against before they may move the flow's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Track {
    /// Nothing yet (a flow just made, before its first segment is seen; a SYN whose header
    /// could not be read): the remote's segments change nothing.
    Nothing,
    /// The client sent its SYN and no ACK since: only a segment acknowledging that SYN (ACK
    /// = ISN + 1) answers it.
    SynSent,
    /// The client has sent a segment past its SYN (with ACK, unless its TCP is broken): the
    /// remote's segments must fall within its window.
    Acked,
}

/// The window scale assumed for a flow whose SYN was not seen (a table restart, a route that
/// moved): the largest allowed (RFC 7323 §2.3), so that a connection picked up mid-stream is
/// never refused its in-window segments; the check is looser for such flows only.
const WSCALE_UNKNOWN: u8 = 14;

/// What flow tracking reads of a TCP segment's header: its flags, and the acknowledgment
/// number and window it carries (a client's, the receiving side's view the remote's
/// segments are checked against). Zero for other protocols.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSeen {
    /// The flag bits.
    pub flags: u8,
    /// The acknowledgment number (meaningful with ACK).
    pub ack: u32,
    /// The window field, unscaled.
    pub window: u16,
}

impl TcpSeen {
    /// The fields of `t`.
    #[inline(always)]
    pub fn of<T: AsRef<[u8]>>(t: &TcpPacket<T>) -> Self {
        Self {
            flags: t.flags(),
            ack: t.ack(),
            window: t.window(),
        }
    }
}

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

// A flow must stay within its line: a lookup touches one slab line, and the client->net path's
// updates (`touch`, the TCP tracking) write only that line.
const _: () = assert!(core::mem::size_of::<Entry>() == 64);

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
    /// How many flows each owner holds, indexed and sized as `owner_heads`: read and written
    /// only when a flow is made or removed, never for a packet of an existing flow.
    owner_counts: Vec<u32>,
    /// The most flows one owner may hold (`set_flows_per_owner`).
    per_owner: u32,
    /// Owners whose flows are being removed (`retire_owner`), a bounded number a call of
    /// `remove_retired`; room for every owner is reserved with `owner_heads`.
    retiring: Vec<u32>,
    /// Whether each owner is in `retiring` (indexed as `owner_heads`).
    is_retiring: Vec<bool>,
}

/// The most flows one session may hold on a core whose table holds `capacity`, unless
/// configured: an eighth of the table, so that it takes eight clients each at its limit to fill
/// it, and one client (a compromised host, a runaway program) leaves seven eighths to the
/// others; but never fewer than 1,024 (or the whole of a smaller table), so that a small table
/// does not refuse a heavy legitimate client. With the default 262,144 that is 32,768: a
/// browser holds a few hundred connections and a port scan of the common ports a thousand or
/// two, both far below it; only tens of thousands of flows at once (a scan of every port of a
/// host, a load generator) reach it, and are refused new flows until their own expire.
pub fn default_flows_per_session(capacity: usize) -> usize {
    (capacity / 8).max(capacity.min(1024)).max(1)
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
            owner_counts: Vec::new(),
            retiring: Vec::new(),
            is_retiring: Vec::new(),
            per_owner: u32::try_from(default_flows_per_session(capacity)).unwrap_or(u32::MAX),
        }
    }

    /// Sets the most flows one owner (a session) may hold; past it `create` refuses its new
    /// flows with `SessionFlowsFull` (the default: `default_flows_per_session`).
    pub fn set_flows_per_owner(&mut self, limit: usize) {
        self.per_owner = u32::try_from(limit.max(1)).unwrap_or(u32::MAX);
    }

    /// How many flows `owner` holds.
    pub fn owner_len(&self, owner: u32) -> usize {
        self.owner_counts
            .get(owner as usize)
            .map_or(0, |&n| n as usize)
    }

    /// Makes room for owners `0..owners` (a core's session slots) now, so that the first flow
    /// of a session never allocates on the packet path.
    pub fn reserve_owners(&mut self, owners: usize) {
        if owners > self.owner_heads.len() {
            self.owner_heads.resize(owners, NIL);
            self.owner_counts.resize(owners, 0);
            self.is_retiring.resize(owners, false);
            self.retiring.reserve(owners - self.retiring.len());
        }
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Flow slots: the most flows the table holds, and what the expiry sweep goes round.
    pub fn capacity(&self) -> usize {
        self.slab.len()
    }

    /// The expiry sweep's clock hand: the next slot it examines.
    #[cfg(test)]
    pub(crate) fn hand(&self) -> usize {
        self.hand
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
    /// `FlowTableFull`, `SessionFlowsFull` (`owner` holds as many flows as one may) or
    /// `SnatPortExhausted`.
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
        if self.owner_len(owner) >= self.per_owner as usize {
            return Err(DropReason::SessionFlowsFull);
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
            track: Track::Nothing,
            wscale: WSCALE_UNKNOWN,
            client_max_window: 0,
            syn_data: 0,
            client_ack: 0,
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
            self.owner_counts.resize(o + 1, 0);
            self.is_retiring.resize(o + 1, false);
        }
        self.owner_counts[o] += 1;
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
        if let Some(n) = self.owner_counts.get_mut(flow.owner as usize) {
            *n = n.saturating_sub(1);
        }
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

    /// Updates a TCP flow from a client's segment, the common case, inlined: the segment's
    /// acknowledgment number becomes the client's and its window raises the client's largest
    /// (three stores, one after a compare, into the flow's own line, which the caller has just
    /// refreshed). Unconditional, so that a mix of TCP and UDP
    /// flows mispredicts nothing: a UDP or ICMP flow's fields take zeros it never reads, and a
    /// TCP segment without ACK leaves a meaningless number there, which the client's next ACK
    /// replaces (a SYN's is replaced at once by `client_control`; a segment with neither, RFC
    /// 9293 §3.10.7.4 has the remote drop: the client can only blur its own flow's tracking).
    /// True if the segment has SYN, FIN or RST: the caller then hands it with its IPv4 packet
    /// to `client_control`, out of line.
    #[inline(always)]
    #[must_use]
    pub fn observe_client_tcp(flow: &mut Flow, seen: TcpSeen) -> bool {
        flow.client_ack = seen.ack;
        flow.client_max_window = flow.client_max_window.max(seen.window);
        flow.track = Track::Acked;
        seen.flags & (flags::SYN | flags::FIN | flags::RST) != 0
    }

    /// A client's SYN, FIN or RST. Its FIN or RST closes the flow (its own connection: the
    /// client is authenticated). Its SYN (without ACK) opens the tuple anew: a connection that
    /// reuses the tuple of one that closed (within its transitory timeout) is tracked as new,
    /// not as closing for the rest of its life (RFC 5382 wants two hours of idle for an
    /// established one); the SYN's sequence number and window scale are kept for the answer.
    #[cold]
    #[inline(never)]
    pub fn client_control(flow: &mut Flow, tcp_flags: u8, ip: &[u8]) {
        if tcp_flags & (flags::FIN | flags::RST) != 0 {
            flow.closing = true;
        } else if tcp_flags & (flags::SYN | flags::ACK) == flags::SYN {
            flow.closing = false;
            flow.established = false;
            flow.track = Track::Nothing;
            // The SYN's own window is never scaled (RFC 7323 §2.2): the largest starts again
            // with the client's next segment.
            flow.client_max_window = 0;
            let Some(t) = tcp_of(ip) else {
                return;
            };
            flow.track = Track::SynSent;
            flow.client_ack = t.seq().wrapping_add(1);
            flow.syn_data = t.payload_len().try_into().unwrap_or(u16::MAX);
            flow.wscale = t.window_scale().map_or(0, |s| s.min(14));
        }
    }

    /// Whether a remote's segment with `tcp_flags` may change the flow (`observe_remote_tcp`
    /// must see it): one with SYN, FIN or RST, or, before the flow is established, with ACK.
    /// A data segment or ACK of an established flow (nearly all) does not. A mask, no branch.
    #[inline(always)]
    pub fn remote_tcp_matters(flow: &Flow, tcp_flags: u8) -> bool {
        let watched =
            flags::SYN | flags::FIN | flags::RST | (u8::from(!flow.established) * flags::ACK);
        tcp_flags & watched != 0
    }

    /// Updates a TCP flow from a remote's segment that `remote_tcp_matters`; `ip` is the
    /// remote's IPv4 packet. Only a segment that belongs to the connection counts (anyone can
    /// send one with the remote's address and the translated port):
    ///
    /// - while the client's SYN is unanswered, one that acknowledges it (ACK = ISN + 1, or
    ///   up to the end of the data of a Fast Open SYN): a SYN-ACK establishes the flow, a RST
    ///   closes it. That is what the client's TCP accepts in SYN-SENT (RFC 9293 §3.10.7.3: an
    ///   ACK in (ISS, SND.NXT]; a RST without ACK is ignored). Linux conntrack is looser here
    ///   (a RST without ACK passes as if it had one), but a RST taken for the flow's would
    ///   leave it closing, and so transitory, after its real SYN-ACK, for the connection's
    ///   life: a blind RST without ACK must not do that. Anything else is left to the client.
    /// - once the client has acknowledged, one whose sequence number is within the client's
    ///   receive window, [ACK − window, ACK + window) with the largest window the client
    ///   advertised (serial arithmetic, so across the wrap):
    ///   its RST or FIN closes the flow (RFC 5961 §3 accepts a RST only in the window), its
    ///   ACK (a flow picked up mid-connection) establishes it. A window's worth below the
    ///   client's ACK is allowed, as conntrack allows below the highest sequence number seen:
    ///   a keepalive probe (SND.NXT − 1), a FIN retransmitted because its ACK was lost, a RST
    ///   answering an older client segment all fall there, legitimately; it doubles the space
    ///   a blind attacker must hit, no more.
    ///
    /// A segment that fails is still forwarded (the client's TCP decides, and sends an RFC
    /// 5961 challenge ACK if it wants); it only leaves the flow's state as it was, so that a
    /// spoofed RST cannot cut an idle connection's timeout to the transitory one, nor a
    /// spoofed ACK give a half-open flow the established one.
    #[cold]
    #[inline(never)]
    pub fn observe_remote_tcp(flow: &mut Flow, tcp_flags: u8, ip: &[u8]) {
        let Some(t) = tcp_of(ip) else {
            return;
        };
        match flow.track {
            Track::Nothing => {}
            Track::SynSent => {
                // ACK = ISN + 1, or up to the end of the SYN's data if it carried some.
                let acks_syn = t.ack().wrapping_sub(flow.client_ack) <= u32::from(flow.syn_data);
                if tcp_flags & flags::ACK == 0 || !acks_syn {
                    return;
                }
                if tcp_flags & flags::RST != 0 {
                    flow.closing = true;
                } else if tcp_flags & flags::SYN != 0 {
                    flow.established = true;
                    // Scaling is on only if both sides offered it (RFC 7323 §2.2).
                    if t.window_scale().is_none() {
                        flow.wscale = 0;
                    }
                }
            }
            Track::Acked => {
                if !in_client_window(flow, t.seq()) {
                    return;
                }
                if tcp_flags & (flags::FIN | flags::RST) != 0 {
                    flow.closing = true;
                } else if tcp_flags & flags::ACK != 0 {
                    flow.established = true;
                }
            }
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

    /// Removes every flow of `owner` at once: a walk of that owner's list, so the call costs
    /// the owner's own flows, not the whole table (a full scan of a million-flow table took
    /// milliseconds, enough to overflow a receive ring at every disconnect). A core uses
    /// `retire_owner` instead, which spreads even that over its polls; an owner retired and
    /// not done yet is done by this call.
    pub fn remove_owner(&mut self, owner: u32) -> usize {
        // Retired, its removal is done now: `remove_retired` must not take the flows of
        // whoever has the number next.
        if let Some(r) = self.is_retiring.get_mut(owner as usize).filter(|r| **r) {
            *r = false;
            if let Some(at) = self.retiring.iter().position(|&o| o == owner) {
                self.retiring.swap_remove(at);
            }
        }
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

impl FlowTable {
    /// Starts removing the flows of `owner` (a session that ended), to be done by
    /// `remove_retired` a bounded number at a time, so that no single call walks all of a
    /// session's flows (up to `set_flows_per_owner`'s limit, tens of thousands). True if it
    /// holds flows: the owner's number (a session slot) must then not be given to a new owner
    /// until `remove_retired` reports it done, or the new owner would take over the old
    /// one's flows and lose them with it. False: nothing to remove, the number is free now.
    pub fn retire_owner(&mut self, owner: u32) -> bool {
        let o = owner as usize;
        if self.owner_heads.get(o).is_none_or(|&h| h == NIL) {
            return false;
        }
        if let Some(r) = self.is_retiring.get_mut(o).filter(|r| !**r) {
            *r = true;
            self.retiring.push(owner);
        }
        true
    }

    /// Removes at most `budget` flows of retired owners (`retire_owner`), and calls `done`
    /// with each owner whose flows are all gone (its number may be given out again); returns
    /// how many flows were removed. A flow that expired or was removed meanwhile is simply
    /// no longer on its owner's list.
    pub fn remove_retired(&mut self, budget: usize, mut done: impl FnMut(u32)) -> usize {
        let mut removed = 0;
        while let Some(&owner) = self.retiring.last() {
            let head = self.owner_heads.get(owner as usize).copied().unwrap_or(NIL);
            if self.flow_at(head).is_some() {
                if removed == budget {
                    break;
                }
                self.remove_slot(head as usize);
                removed += 1;
                continue;
            }
            self.retiring.pop();
            if let Some(r) = self.is_retiring.get_mut(owner as usize) {
                *r = false;
            }
            done(owner);
        }
        removed
    }

    /// Whether flows of retired owners remain to be removed.
    pub fn retiring(&self) -> bool {
        !self.retiring.is_empty()
    }
}

/// The TCP header of IPv4 packet `ip`, if it has a whole one.
fn tcp_of(ip: &[u8]) -> Option<TcpPacket<&[u8]>> {
    let p = Ipv4Packet::new_checked(ip).ok()?;
    if p.protocol() != protocol::TCP {
        return None;
    }
    TcpPacket::new_checked(ip.get(p.header_len()..p.total_len())?).ok()
}

/// Whether sequence number `seq` of a remote's segment lies within [ACK − window, ACK +
/// window) of the client's last ACK and largest scaled window (at least 1, so that a zero
/// window still takes a segment at its edge), in serial arithmetic (RFC 1982): the offset from
/// the low end, modulo 2^32, is below twice the window (at most 2^31, the scale being at most
/// 14).
fn in_client_window(flow: &Flow, seq: u32) -> bool {
    let window = (u32::from(flow.client_max_window) << flow.wscale.min(14)).max(1);
    seq.wrapping_sub(flow.client_ack.wrapping_sub(window)) < 2 * window
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap as Oracle;

    /// A table of `capacity` flows translating to `ports` ports from 5000, default timeouts.
    fn table(capacity: usize, ports: u16) -> FlowTable {
        FlowTable::new(
            capacity,
            PortRange {
                first: 5000,
                len: ports,
            },
            Timeouts::default(),
        )
    }

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
        let mut t = table(8, 100);
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
        let mut t = table(4, 1);
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
        let mut t = table(2, 100);
        t.create(key(1, 1), 9, 0, 0, 0).unwrap();
        t.create(key(1, 2), 9, 0, 0, 0).unwrap();
        assert_eq!(
            t.create(key(1, 3), 9, 0, 0, 0).map(|_| ()),
            Err(DropReason::FlowTableFull)
        );
        let mut t = table(10, 1);
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
        let mut t = table(64, 4);
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

    /// An IPv4 packet carrying a TCP segment with these fields and, with `wscale`, a window
    /// scale option (no checksums: tracking reads none).
    fn segment(tcp_flags: u8, seq: u32, ack: u32, window: u16, wscale: Option<u8>) -> Vec<u8> {
        let opt = if wscale.is_some() { 4 } else { 0 };
        let total = 40 + opt;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[9] = protocol::TCP;
        let t = &mut p[20..];
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = ((20 + opt) as u8 / 4) << 4;
        t[13] = tcp_flags;
        t[14..16].copy_from_slice(&window.to_be_bytes());
        if let Some(s) = wscale {
            t[20..24].copy_from_slice(&[1, 3, 3, s]);
        }
        p
    }

    /// A client's segment through the tracking, as the client->net path takes it.
    fn client_sends(
        f: &mut Flow,
        tcp_flags: u8,
        (seq, ack, window): (u32, u32, u16),
        wscale: Option<u8>,
    ) {
        let ip = segment(tcp_flags, seq, ack, window, wscale);
        let t = tcp_of(&ip).unwrap();
        if FlowTable::observe_client_tcp(f, TcpSeen::of(&t)) {
            FlowTable::client_control(f, tcp_flags, &ip);
        }
    }

    /// A remote's segment through the tracking, as the net->client path takes it.
    fn remote_sends(f: &mut Flow, tcp_flags: u8, seq: u32, ack: u32, wscale: Option<u8>) {
        let ip = segment(tcp_flags, seq, ack, 1000, wscale);
        if FlowTable::remote_tcp_matters(f, tcp_flags) {
            FlowTable::observe_remote_tcp(f, tcp_flags, &ip);
        }
    }

    const SYN: u8 = flags::SYN;
    const ACK: u8 = flags::ACK;
    const FIN_ACK: u8 = flags::FIN | flags::ACK;
    const RST: u8 = flags::RST;

    /// The client's ISN and the remote's, and the client's window in the tests below.
    const CLIENT_ISN: u32 = 1000;
    const REMOTE_ISN: u32 = 3_000_000_000;
    const WINDOW: u16 = 1000;

    /// Flow `k` opened at `now` and its handshake done: the client's SYN (window scale 7,
    /// if `scaled`), the remote's SYN-ACK (with window scale 7 too), the client's ACK of it
    /// with a window of `WINDOW`. The client's next byte to receive is `REMOTE_ISN + 1`.
    fn handshake(t: &mut FlowTable, k: FlowKey, now: u32, scaled: bool) {
        let f = match t.lookup(&k, now) {
            Some(f) => f,
            None => t.create(k, 9, 0, 0, now).unwrap(),
        };
        let ws = scaled.then_some(7);
        client_sends(f, SYN, (CLIENT_ISN, 0, 64240), ws);
        remote_sends(f, SYN | ACK, REMOTE_ISN, CLIENT_ISN + 1, Some(7));
        client_sends(f, ACK, (CLIENT_ISN + 1, REMOTE_ISN + 1, WINDOW), None);
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
        t.create(k, 9, 0, 0, 100).unwrap();
        handshake(&mut t, k, 100, false);
        assert_eq!(
            t.expire(100 + tm.tcp_transitory + 1, 4),
            0,
            "established lives longer"
        );
        let f = t.lookup(&k, 200).unwrap();
        remote_sends(f, FIN_ACK, REMOTE_ISN + 1, CLIENT_ISN + 1, None);
        assert_eq!(t.expire(200 + tm.tcp_transitory + 1, 4), 1);
        assert!(t.is_empty());
    }

    /// A new connection on the tuple of one that closed a moment ago (a reused source port)
    /// is tracked as a new connection: once answered, established, not closing for good.
    #[test]
    fn a_reused_tuple_opens_anew() {
        let (mut t, k, tm) = tcp_table(22);
        handshake(&mut t, k, 0, true);
        let f = t.lookup(&k, 10).unwrap();
        client_sends(f, FIN_ACK, (CLIENT_ISN + 1, REMOTE_ISN + 1, WINDOW), None);
        // The same tuple again, 100 s later: SYN, SYN-ACK, ACK.
        handshake(&mut t, k, 110, true);
        assert_eq!(
            t.expire(110 + tm.tcp_transitory + 60, 4),
            0,
            "the new connection is established, not closing"
        );
        assert_eq!(t.expire(110 + tm.tcp_established + 1, 4), 1);
    }

    /// A remote's RST closes an established flow only with a sequence number in the client's
    /// window, [ACK − window, ACK + window) scaled (here 1000 << 7): a blind RST elsewhere is
    /// forwarded but leaves the flow its established timeout.
    #[test]
    fn only_a_remote_rst_in_the_clients_window_closes() {
        let (mut t, k, tm) = tcp_table(22);
        handshake(&mut t, k, 0, true);
        let next = REMOTE_ISN + 1;
        let window = u32::from(WINDOW) << 7;
        for blind in [
            next.wrapping_add(1 << 31),
            next + window,
            next - window - 1,
            0,
            u32::MAX,
        ] {
            remote_sends(t.lookup(&k, 0).unwrap(), RST, blind, 0, None);
            remote_sends(t.lookup(&k, 0).unwrap(), FIN_ACK, blind, 0, None);
        }
        assert!(!t.lookup(&k, 0).unwrap().closing);
        assert_eq!(
            t.expire(tm.tcp_transitory + 1, 4),
            0,
            "out-of-window RSTs and FINs leave the flow established"
        );
        // Either edge of the window, and the middle: each closes.
        for seq in [next, next + window - 1, next - window] {
            let (mut t, k, tm) = tcp_table(22);
            handshake(&mut t, k, 0, true);
            remote_sends(t.lookup(&k, 0).unwrap(), RST, seq, 0, None);
            assert!(t.lookup(&k, 0).unwrap().closing, "{seq}");
            assert_eq!(t.expire(tm.tcp_transitory + 1, 4), 1, "{seq}");
        }
    }

    /// A client that shrinks its window (here from 1000 to 10, scaled by 2^7) does not make
    /// the remote's segments sent into the larger window out of window: a RST within the
    /// largest window the client advertised closes the flow, as conntrack's `td_maxwin` has
    /// it; one beyond it still does not. A new SYN on the tuple starts the largest again.
    #[test]
    fn a_remote_rst_within_the_clients_largest_window_closes() {
        let (mut t, k, tm) = tcp_table(22);
        handshake(&mut t, k, 0, true);
        let next = REMOTE_ISN + 1;
        let largest = u32::from(WINDOW) << 7;
        let f = t.lookup(&k, 0).unwrap();
        client_sends(f, ACK, (CLIENT_ISN + 1, next, 10), None);
        remote_sends(f, RST, next + largest, 0, None);
        remote_sends(f, RST, next - largest - 1, 0, None);
        assert!(!f.closing, "beyond the largest window");
        remote_sends(f, RST, next + largest / 2, 0, None);
        assert!(f.closing, "within the largest window, beyond the latest");
        assert_eq!(t.expire(tm.tcp_transitory + 1, 4), 1);

        // The tuple reused: the old connection's window is not the new one's.
        handshake(&mut t, k, 0, true);
        let f = t.lookup(&k, 0).unwrap();
        client_sends(f, ACK, (CLIENT_ISN + 1, next, 10), None);
        client_sends(f, SYN, (CLIENT_ISN, 0, 64240), Some(7));
        remote_sends(f, SYN | ACK, REMOTE_ISN, CLIENT_ISN + 1, Some(7));
        client_sends(f, ACK, (CLIENT_ISN + 1, next, 10), None);
        remote_sends(f, RST, next + (10 << 7), 0, None);
        assert!(!f.closing, "the new connection's window is 10 << 7");
        remote_sends(f, RST, next + (10 << 7) - 1, 0, None);
        assert!(f.closing);
    }

    /// Without the remote's agreement (no window scale option in its SYN-ACK) the client's
    /// window is not scaled (RFC 7323 §2.2): a RST past the unscaled window changes nothing.
    #[test]
    fn the_window_is_scaled_only_if_both_sides_offered_it() {
        let (mut t, k, _) = tcp_table(22);
        let f = t.create(k, 9, 0, 0, 0).unwrap();
        client_sends(f, SYN, (CLIENT_ISN, 0, 64240), Some(7));
        remote_sends(f, SYN | ACK, REMOTE_ISN, CLIENT_ISN + 1, None);
        client_sends(f, ACK, (CLIENT_ISN + 1, REMOTE_ISN + 1, WINDOW), None);
        remote_sends(f, RST, REMOTE_ISN + 1 + u32::from(WINDOW), 0, None);
        assert!(f.established && !f.closing);
        remote_sends(f, RST, REMOTE_ISN + u32::from(WINDOW), 0, None);
        assert!(f.closing);
    }

    /// Before the client has acknowledged anything, only a segment acknowledging its SYN
    /// answers it: a SYN-ACK with ACK = ISN + 1 establishes the flow, a RST with that ACK
    /// closes it; a bare ACK, a SYN-ACK or RST with another ACK, a RST without ACK (RFC 9293
    /// §3.10.7.3: the client ignores it) change nothing, and the flow stays transitory.
    #[test]
    fn a_syn_only_flow_is_established_only_by_its_answer() {
        let (mut t, k, tm) = tcp_table(22);
        let f = t.create(k, 9, 0, 0, 0).unwrap();
        client_sends(f, SYN, (CLIENT_ISN, 0, 64240), None);
        for ack in [
            0,
            CLIENT_ISN,
            CLIENT_ISN + 2,
            CLIENT_ISN.wrapping_add(1 << 31),
        ] {
            remote_sends(f, ACK, REMOTE_ISN, ack, None);
            remote_sends(f, SYN | ACK, REMOTE_ISN, ack, None);
            remote_sends(f, RST | ACK, 0, ack, None);
        }
        remote_sends(f, ACK, REMOTE_ISN, CLIENT_ISN + 1, None);
        remote_sends(f, RST, 0, CLIENT_ISN + 1, None);
        remote_sends(f, FIN_ACK, REMOTE_ISN, CLIENT_ISN + 1, None);
        assert!(!f.established && !f.closing);
        assert_eq!(
            t.expire(tm.tcp_transitory + 1, 4),
            1,
            "spoofed ACKs do not give a half-open flow the established timeout"
        );

        let f = t.create(k, 9, 0, 0, 0).unwrap();
        client_sends(f, SYN, (CLIENT_ISN, 0, 64240), None);
        remote_sends(f, RST | ACK, 0, CLIENT_ISN + 1, None);
        assert!(f.closing, "the RST answering the SYN");
        let f = t.lookup(&k, 0).unwrap();
        client_sends(f, SYN, (CLIENT_ISN, 0, 64240), None);
        remote_sends(f, SYN | ACK, REMOTE_ISN, CLIENT_ISN + 1, None);
        assert!(f.established && !f.closing, "the SYN-ACK answering it");
    }

    /// A SYN carrying data (TCP Fast Open, RFC 7413) is answered by a SYN-ACK acknowledging
    /// its data or only the SYN (data refused): either establishes the flow; an ACK beyond
    /// the data does not.
    #[test]
    fn a_fast_open_syn_is_answered_up_to_the_end_of_its_data() {
        let (mut t, k, _) = tcp_table(443);
        for (ack, answers) in [(1001, true), (1101, true), (1102, false), (1000, false)] {
            let f = match t.lookup(&k, 0) {
                Some(f) => f,
                None => t.create(k, 9, 0, 0, 0).unwrap(),
            };
            let mut syn = segment(SYN, CLIENT_ISN, 0, 64240, None);
            syn.extend_from_slice(&[0; 100]);
            syn[2..4].copy_from_slice(&140u16.to_be_bytes());
            if FlowTable::observe_client_tcp(f, TcpSeen::of(&tcp_of(&syn).unwrap())) {
                FlowTable::client_control(f, SYN, &syn);
            }
            remote_sends(f, SYN | ACK, REMOTE_ISN, ack, None);
            assert_eq!(f.established, answers, "ACK {ack}");
        }
    }

    /// A flow picked up mid-connection (no SYN seen: a table restart, a route that moved) is
    /// established by a remote's ACK in the client's window, not by one outside it.
    #[test]
    fn a_flow_picked_up_mid_connection_is_established_by_an_ack_in_the_window() {
        let (mut t, k, tm) = tcp_table(22);
        let f = t.create(k, 9, 0, 0, 0).unwrap();
        remote_sends(f, ACK, 5000, 0, None);
        assert!(!f.established, "nothing seen of the client yet");
        client_sends(f, ACK, (1, 5000, 10), None);
        // Its scale unknown, the window is taken at the largest scale: 10 << 14.
        remote_sends(
            f,
            ACK,
            5000u32.wrapping_sub(10 << 14).wrapping_sub(1),
            0,
            None,
        );
        remote_sends(f, ACK, 5000 + (10 << 14), 0, None);
        assert!(!f.established);
        assert_eq!(t.expire(tm.tcp_transitory + 1, 4), 1);

        let f = t.create(k, 9, 0, 0, 0).unwrap();
        client_sends(f, ACK, (1, 5000, 10), None);
        remote_sends(f, ACK, 4999, 0, None);
        assert!(f.established, "a keepalive probe (SND.NXT - 1)");
        assert_eq!(t.expire(tm.tcp_transitory + 1, 4), 0);
    }

    /// The window check across the wrap of sequence numbers: a client whose ACK is just below
    /// 2^32, a RST just past it (in the window) closes, one half the space away does not.
    #[test]
    fn the_window_wraps_around() {
        let (mut t, k, _) = tcp_table(22);
        let f = t.create(k, 9, 0, 0, 0).unwrap();
        client_sends(f, SYN, (u32::MAX, 0, 64240), None);
        // The ISN + 1 wraps too: the SYN-ACK acknowledging it is ACK 0.
        remote_sends(f, SYN | ACK, u32::MAX - 100, 0, None);
        assert!(f.established);
        client_sends(f, ACK, (0, u32::MAX - 99, 4096), None);
        for seq in [1u32 << 31, u32::MAX - 99 - 4097, 4096 - 100] {
            remote_sends(f, RST, seq, 0, None);
            assert!(!f.closing, "{seq:#x}");
        }
        remote_sends(f, RST, 50, 0, None);
        assert!(f.closing, "ACK 0xffffff9d + 150 wraps to 50, within 4096");
    }

    proptest! {
        /// `in_client_window` against the definition: `seq` is within the window if it is
        /// `ack + d` modulo 2^32 for some d in [−window, window).
        #[test]
        fn the_window_check_is_serial_arithmetic(
            ack in any::<u32>(), window in any::<u16>(), wscale in 0u8..16,
            d in -(1i64 << 31)..(1i64 << 31), near in any::<bool>(),
        ) {
            let f = Flow {
                client_ack: ack,
                client_max_window: window,
                wscale,
                ..*FlowTable::new(1, PortRange { first: 1, len: 1 }, Timeouts::default())
                    .create(key(1, 1), 9, 0, 0, 0)
                    .unwrap()
            };
            let w = i64::from((u32::from(window) << wscale.min(14)).max(1));
            // Half the cases near the edges, where a mistake would show.
            let d = if near { d % (w + 2) } else { d };
            let seq = (i64::from(ack) + d).rem_euclid(1 << 32) as u32;
            prop_assert_eq!(in_client_window(&f, seq), -w <= d && d < w);
        }
    }

    #[test]
    fn remove_owner_frees_ports() {
        let mut t = table(4, 2);
        t.create(key(1, 1), 9, 0, 3, 0).unwrap();
        t.create(key(2, 1), 9, 0, 4, 0).unwrap();
        assert_eq!(t.remove_owner(3), 1);
        assert!(
            t.create(key(5, 5), 9, 0, 5, 0).is_ok(),
            "the port came back"
        );
    }

    /// A session at its limit is refused new flows, `session_flows_full`, without a port
    /// taken, while another session of the core still makes its own; one of its flows gone
    /// (removed or expired), it may make one again, and its count follows every way out.
    #[test]
    fn one_owner_holds_at_most_its_limit() {
        let mut t = table(64, 64);
        assert_eq!(t.per_owner, 64, "a small table: the floor, the whole table");
        t.set_flows_per_owner(3);
        for s in 0..3 {
            t.create(key(1, s), 9, 0, 7, 0).unwrap();
        }
        assert_eq!(t.owner_len(7), 3);
        let free = t.pool(9, protocol::UDP).free();
        assert_eq!(
            t.create(key(1, 3), 9, 0, 7, 0).map(|_| ()),
            Err(DropReason::SessionFlowsFull)
        );
        assert_eq!(t.pool(9, protocol::UDP).free(), free, "no port taken");
        assert_eq!(t.len(), 3);
        // Another session of the core is not held back.
        for s in 0..3 {
            t.create(key(2, s), 9, 0, 8, 0).unwrap();
        }
        // One of owner 7's flows removed, one expired: room for as many again.
        let k = key(1, 0);
        let slot = t.find_forward(&k, t.hash_forward(&k)).unwrap();
        t.remove(slot);
        assert_eq!(t.owner_len(7), 2);
        t.create(key(1, 3), 9, 0, 7, 0).unwrap();
        t.lookup(&key(1, 1), 1000).unwrap();
        t.lookup(&key(1, 3), 1000).unwrap();
        t.expire(1000, 64);
        assert_eq!((t.owner_len(7), t.owner_len(8)), (2, 0));
        t.create(key(1, 4), 9, 0, 7, 1000).unwrap();
        assert!(t.create(key(1, 5), 9, 0, 7, 1000).is_err());
        assert_eq!(t.remove_owner(7), 3);
        assert_eq!(t.owner_len(7), 0);
        t.create(key(1, 5), 9, 0, 7, 1000).unwrap();
        // The default: an eighth of a large table, at least 1,024 (or all of a small one).
        assert_eq!(default_flows_per_session(262_144), 32_768);
        assert_eq!(default_flows_per_session(4096), 1024);
        assert_eq!(default_flows_per_session(100), 100);
        assert_eq!(default_flows_per_session(0), 1);
    }

    /// A retired owner's flows go at most `budget` a call, from several owners in turn; an
    /// owner is reported done once, when its last flow is gone (however it went), and not
    /// before; an owner without flows is not retired at all; `remove_owner` finishes a
    /// retired owner at once, so that its number's next owner keeps its flows.
    #[test]
    fn retired_owners_go_a_budget_at_a_time() {
        let mut t = table(64, 64);
        t.reserve_owners(8);
        for s in 0..10 {
            t.create(key(1, s), 9, 0, 1, 0).unwrap();
        }
        for s in 0..3 {
            t.create(key(2, s), 9, 0, 2, 0).unwrap();
            t.create(key(3, s), 9, 0, 3, 0).unwrap();
        }
        assert!(!t.retire_owner(4), "no flows: nothing to wait for");
        assert!(t.retire_owner(1));
        assert!(t.retire_owner(1), "twice is once");
        assert!(t.retire_owner(2));
        let mut done = Vec::new();
        assert_eq!(t.remove_retired(4, |o| done.push(o)), 4);
        // The last retired first: owner 2's three, then one of owner 1's.
        assert_eq!(
            (t.len(), t.owner_len(1), done.as_slice()),
            (12, 9, &[2][..])
        );
        // One of owner 1's flows expires meanwhile (the others are refreshed).
        for s in 0..10 {
            if s != 5 {
                let _ = t.lookup(&key(1, s), 500);
            }
        }
        for s in 0..3 {
            t.lookup(&key(3, s), 500).unwrap();
        }
        t.expire(500, 64);
        let before = t.len();
        assert_eq!((before, t.owner_len(1)), (11, 8));
        assert_eq!(t.remove_retired(4, |o| done.push(o)), 4);
        assert_eq!(t.len(), before - 4);
        while t.retiring() {
            assert!(t.remove_retired(4, |o| done.push(o)) <= 4);
        }
        done.sort_unstable();
        assert_eq!(done, [1, 2]);
        assert_eq!((t.len(), t.owner_len(3)), (3, 3), "owner 3 keeps its flows");
        assert_eq!(pools_agree(&t), Ok(()));
        // Retired, then finished at once: a later call does not take its next owner's flows.
        assert!(t.retire_owner(3));
        assert_eq!(t.remove_owner(3), 3);
        t.create(key(4, 0), 9, 0, 3, 0).unwrap();
        let mut done = Vec::new();
        assert_eq!(t.remove_retired(64, |o| done.push(o)), 0);
        assert!(done.is_empty() && !t.retiring());
        assert_eq!(t.owner_len(3), 1);
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
            let counted = t.owner_counts.get(o).copied().unwrap_or(0) as usize;
            if counted
                != listed
                    .iter()
                    .filter(|&&s| t.owner_at(s) == Some(o as u32))
                    .count()
            {
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
        Retire(u32),
        RemoveRetired(usize),
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
            (0usize..40).prop_map(Op2::Expire), (0u32..4).prop_map(Op2::Retire),
            (0usize..6).prop_map(Op2::RemoveRetired)], 1..200)) {
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
                    Op2::Retire(o) => {
                        t.retire_owner(o);
                    }
                    Op2::RemoveRetired(b) => {
                        t.remove_retired(b, |_| {});
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
            1 => (0u32..100).prop_map(Op2::Advance), 1 => (0usize..40).prop_map(Op2::Expire),
            1 => (0u32..4).prop_map(Op2::Retire), 1 => (0usize..6).prop_map(Op2::RemoveRetired)],
            1..300)) {
            let mut t = FlowTable::new(32, PortRange { first: 5000, len: 3 }, Timeouts::default());
            let mut retired = [false; 4];
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
                        // Done at once, retired or not.
                        retired[o as usize] = false;
                    }
                    Op2::Advance(d) => now += d,
                    Op2::Expire(b) => {
                        t.expire(now, b);
                    }
                    Op2::Retire(o) => {
                        retired[o as usize] |= t.retire_owner(o);
                    }
                    Op2::RemoveRetired(b) => {
                        let before = t.len();
                        let mut done = Vec::new();
                        let removed = t.remove_retired(b, |o| done.push(o));
                        prop_assert!(removed <= b);
                        prop_assert_eq!(before - t.len(), removed);
                        for o in done {
                            prop_assert!(retired[o as usize], "owner {} done unretired", o);
                            prop_assert_eq!(t.owner_len(o), 0);
                            retired[o as usize] = false;
                        }
                    }
                }
                pools_agree(&t).map_err(TestCaseError::fail)?;
            }
            while t.retiring() {
                t.remove_retired(1, |o| retired[o as usize] = false);
            }
            prop_assert!(retired.iter().all(|r| !r), "a retired owner never reported done");
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
