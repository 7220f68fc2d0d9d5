//! The sessions a core owns: data-channel keys (current and the previous key_id kept for the
//! transition window), the client's virtual address, groups and outer address, and counters.
//!
//! Looked up by peer-id for traffic from clients and by virtual address for return traffic.
//! Hot state only; the control thread keeps the rest (certificates, usernames, timers).

use std::mem::offset_of;

use hashbrown::HashMap;

use crate::crypto::data_channel::{open_spans, seal_spans, shifted_by, KeyReach};
use crate::crypto::{DataKey, OpenKey, SealKey};
use crate::packet::prefetch::{line_mask, line_offsets, prefetch_line};
use crate::rules::GroupMask;
use crate::wire::openvpn::{KeyId, PeerId};
use crate::wire::udp::Ipv4UdpHeaders;

/// A client's outer address: where its packets come from and where ours go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Remote {
    /// IPv4 address.
    pub ip: u32,
    /// UDP port.
    pub port: u16,
}

/// Per-session traffic counters (inner packets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes received from the client (decrypted payload).
    pub ingress_bytes: u64,
    /// Packets received from the client.
    pub ingress_packets: u64,
    /// Bytes sent to the client (payload before encryption).
    pub egress_bytes: u64,
    /// Packets sent to the client.
    pub egress_packets: u64,
}

/// What the control thread tells a core about a new session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its peer-id.
    pub peer: PeerId,
    /// The endpoint (index in the rule table).
    pub endpoint: u16,
    /// The client's virtual address.
    pub client_ip: u32,
    /// The user's groups.
    pub groups: GroupMask,
    /// Where the client is.
    pub remote: Remote,
    /// The endpoint's listener the client talks to.
    pub local: Remote,
}

/// One session's data-path state, in the order the two directions touch it (`repr(C)`,
/// line-aligned, so every slot's hot lines sit at the same offsets: `OPEN_MASKS`,
/// `SEAL_MASKS`): what opening reads and writes, around the current key's receive half; the
/// send side (`Sender`, from a line boundary); then what no packet reads (the listener, the
/// previous key's receive half, the groups). With AES-GCM on a CPU with VAES, a packet
/// touches 7 lines of its direction under 80 bytes, 8 under 128 and 9 from 128 (`KeyReach`);
/// 10 otherwise.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Session {
    /// Who and where the client is (`Sender` keeps a copy in its own lines).
    id: Identity,
    /// The receive half of the key in use. At 16 bytes in, so that ring's key in it starts 48
    /// bytes into a line: its GHASH table then starts a line, and the powers a short packet
    /// needs are one line (`KeyReach`).
    open: OpenKey,
    /// The client's virtual address. This and the next three share the line of the key's
    /// last bytes (ring's algorithm), which opening reads anyway.
    pub client_ip: u32,
    /// Seconds (caller's clock) of the last authenticated packet received.
    pub last_rx: u32,
    /// Bytes received from the client (decrypted payload).
    pub ingress_bytes: u64,
    /// Packets received from the client.
    pub ingress_packets: u64,
    /// Everything sealing a packet for the client touches.
    send: Sender,
    /// The local address and port the client talks to (the endpoint's listener).
    local: Remote,
    /// The receive half of the previous key, during a renegotiation's transition window.
    previous: Option<OpenKey>,
    /// The user's groups: read only when one of the session's flows decides (once per flow
    /// and rule table), so kept out of the lines every packet needs.
    pub groups: GroupMask,
    /// Whether the core has reported the session idle (once; control then closes it).
    pub(crate) idle_reported: bool,
    /// Whether the core has reported the client's OCC exit (once; control then closes it).
    pub(crate) exit_reported: bool,
    /// The second (caller's clock) the core last reported a float of the session in: one
    /// report a second at most, a later float that second told at the next.
    pub(crate) float_reported: Option<u32>,
}

/// What both directions read of a session, kept once in each direction's lines: its peer-id
/// and endpoint (fixed) and where the client is (changed only by `Session::float_to`, which
/// changes both copies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Identity {
    peer: PeerId,
    endpoint: u16,
    remote: Remote,
}

impl Identity {
    /// The session's peer-id.
    #[inline]
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The session's endpoint (index in the rule table).
    #[inline]
    pub fn endpoint(&self) -> u16 {
        self.endpoint
    }

    /// Where the client is.
    #[inline]
    pub fn remote(&self) -> Remote {
        self.remote
    }
}

/// The send side of a session: its fields, then the current key's send half.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Sender {
    /// The session's identity (a copy).
    id: Identity,
    /// Seconds of the last packet sent.
    pub last_tx: u32,
    /// Packets sent to the client.
    pub egress_packets: u64,
    /// At 32 bytes in, so that ring's key in it starts 48 bytes into a line, as the receive
    /// half's does (`Session::open`).
    key: SealKey,
    /// Bytes sent to the client (payload before encryption). This and `outer` share the line
    /// of the key's last bytes.
    pub egress_bytes: u64,
    /// The outer IPv4 and UDP headers of packets to the client, from the listener to `remote`.
    outer: Ipv4UdpHeaders,
}

impl Sender {
    /// The session's peer-id, endpoint and client address, from the send side's lines.
    #[inline]
    pub fn id(&self) -> &Identity {
        &self.id
    }

    /// The outer headers of packets to the client.
    #[inline]
    pub fn outer_headers(&self) -> &Ipv4UdpHeaders {
        &self.outer
    }

    /// The key to send with (the newest).
    #[inline]
    pub fn key(&mut self) -> &mut SealKey {
        &mut self.key
    }
}

/// The outer headers from a listener to a client.
fn headers_between(local: Remote, remote: Remote) -> Ipv4UdpHeaders {
    Ipv4UdpHeaders::new((local.ip, local.port), (remote.ip, remote.port))
}

/// What opening a packet reads and writes in a `Session`, besides the receive half of the
/// current key: the fields before it and after it.
const OPEN_FIELDS: [(usize, usize); 2] = [
    (0, offset_of!(Session, open)),
    (
        offset_of!(Session, client_ip),
        offset_of!(Session, ingress_packets) + 8 - offset_of!(Session, client_ip),
    ),
];
/// What sealing touches besides the send half of the key: the send side's other fields.
const SEAL_FIELDS: [(usize, usize); 2] = [
    (offset_of!(Session, send), offset_of!(Sender, key)),
    (
        offset_of!(Session, send) + offset_of!(Sender, egress_bytes),
        offset_of!(Sender, outer) + size_of::<Ipv4UdpHeaders>() - offset_of!(Sender, egress_bytes),
    ),
];

/// The lines of a `Session` opening a packet of each `KeyReach` touches, as masks.
const OPEN_MASKS: [u64; KeyReach::COUNT] = [
    open_mask(KeyReach::Short),
    open_mask(KeyReach::Medium),
    open_mask(KeyReach::Long),
    open_mask(KeyReach::Whole),
];
/// The same for sealing.
const SEAL_MASKS: [u64; KeyReach::COUNT] = [
    seal_mask(KeyReach::Short),
    seal_mask(KeyReach::Medium),
    seal_mask(KeyReach::Long),
    seal_mask(KeyReach::Whole),
];

const fn open_mask(reach: KeyReach) -> u64 {
    line_mask(&OPEN_FIELDS) | line_mask(&shifted_by(open_spans(reach), offset_of!(Session, open)))
}

const fn seal_mask(reach: KeyReach) -> u64 {
    let at = offset_of!(Session, send) + offset_of!(Sender, key);
    line_mask(&SEAL_FIELDS) | line_mask(&shifted_by(seal_spans(reach), at))
}

/// The offsets of the lines in each mask: constant tables, so that requesting them is one
/// instruction a line (`SessionTable::prefetch_open`, `prefetch_seal`). Named one by one and
/// matched on by each of the two: one helper choosing from an array of the tables read the
/// same, but cost 5 to 7 ticks a packet at 1k sessions (bench/RESULTS.md, 2026-12-06).
const OPEN_SHORT: [usize; OPEN_MASKS[0].count_ones() as usize] = line_offsets(OPEN_MASKS[0]);
const OPEN_MEDIUM: [usize; OPEN_MASKS[1].count_ones() as usize] = line_offsets(OPEN_MASKS[1]);
const OPEN_LONG: [usize; OPEN_MASKS[2].count_ones() as usize] = line_offsets(OPEN_MASKS[2]);
const OPEN_WHOLE: [usize; OPEN_MASKS[3].count_ones() as usize] = line_offsets(OPEN_MASKS[3]);
const SEAL_SHORT: [usize; SEAL_MASKS[0].count_ones() as usize] = line_offsets(SEAL_MASKS[0]);
const SEAL_MEDIUM: [usize; SEAL_MASKS[1].count_ones() as usize] = line_offsets(SEAL_MASKS[1]);
const SEAL_LONG: [usize; SEAL_MASKS[2].count_ones() as usize] = line_offsets(SEAL_MASKS[2]);
const SEAL_WHOLE: [usize; SEAL_MASKS[3].count_ones() as usize] = line_offsets(SEAL_MASKS[3]);

/// Requests the lines at `offsets` of the object at `base`.
#[inline(always)]
fn prefetch_lines(base: *const u8, offsets: &[usize]) {
    for &off in offsets {
        prefetch_line(base.wrapping_add(off));
    }
}

impl Session {
    /// A session with its first key.
    pub fn new(info: SessionInfo, key: DataKey, now: u32) -> Self {
        let SessionInfo {
            peer,
            endpoint,
            client_ip,
            groups,
            remote,
            local,
        } = info;
        let (open, seal) = key.split();
        let id = Identity {
            peer,
            endpoint,
            remote,
        };
        Self {
            id,
            client_ip,
            last_rx: now,
            ingress_bytes: 0,
            ingress_packets: 0,
            open,
            send: Sender {
                id,
                last_tx: now,
                egress_bytes: 0,
                egress_packets: 0,
                outer: headers_between(local, remote),
                key: seal,
            },
            local,
            previous: None,
            groups,
            idle_reported: false,
            exit_reported: false,
            float_reported: None,
        }
    }

    /// Its peer-id, endpoint and client address, from the opening side's lines.
    #[inline]
    pub fn id(&self) -> &Identity {
        &self.id
    }

    /// The listener the client talks to.
    #[inline]
    pub fn local(&self) -> Remote {
        self.local
    }

    /// The send side: sealing, counters and outer headers toward the client.
    #[inline]
    pub fn sender(&mut self) -> &mut Sender {
        &mut self.send
    }

    /// Seconds of the last packet sent.
    #[inline]
    pub fn last_tx(&self) -> u32 {
        self.send.last_tx
    }

    /// The session's counters.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            ingress_bytes: self.ingress_bytes,
            ingress_packets: self.ingress_packets,
            egress_bytes: self.send.egress_bytes,
            egress_packets: self.send.egress_packets,
        }
    }

    /// The client now is at `remote` (an authenticated packet came from there).
    pub fn float_to(&mut self, remote: Remote) {
        self.id.remote = remote;
        self.send.id.remote = remote;
        self.send.outer = headers_between(self.local, remote);
    }

    /// The receive half of the key for `key_id`, current or previous.
    #[inline]
    pub fn key_mut(&mut self, key_id: KeyId) -> Option<&mut OpenKey> {
        if self.open.key_id() == key_id {
            return Some(&mut self.open);
        }
        self.previous.as_mut().filter(|k| k.key_id() == key_id)
    }

    /// Installs a new key; the current one's receive half becomes the previous (kept until
    /// retired: packets the client sealed before it switched still open). Sealing uses the
    /// new key at once.
    pub fn install_key(&mut self, key: DataKey) {
        let (open, seal) = key.split();
        self.previous = Some(std::mem::replace(&mut self.open, open));
        self.send.key = seal;
    }

    /// Drops the previous key (the transition window is over).
    pub fn retire_previous(&mut self) {
        self.previous = None;
    }
}

/// The sessions of one core.
pub struct SessionTable {
    slab: Vec<Option<Session>>,
    free: Vec<u32>,
    /// For each peer-id this core can own (`peer / stride`): its slot plus one, 0 for none. A
    /// flat array, so the entry of a packet's peer-id is an address the burst's look-ahead can
    /// prefetch; zeroed on allocation, so only the pages of peer-ids in use are ever touched.
    by_peer: Vec<u32>,
    stride: u32,
    /// `log2(stride)` when the stride is a power of two (any core count up to 2^24 that is
    /// one): the per-packet division becomes a shift.
    stride_shift: Option<u32>,
    live: usize,
    /// Empty slots not given out again yet (`hold`): a caller's state by slot (the worker's
    /// flows) is still being cleared.
    held: Vec<bool>,
    held_count: usize,
    by_ip: HashMap<u32, u32>,
    /// Where a session sits inside its `Option` slot (one offset for the type), learnt at the
    /// first insert; lets the look-ahead compute a slot's field addresses without reading it.
    payload: Option<usize>,
    /// Whether ring takes, on this CPU, the AES-GCM path whose reads `KeyReach` maps (else
    /// every packet's prefetch requests the whole key).
    reach_mapped: bool,
}

/// A session's slot on its core (stable while it lives; flow tables record it as owner).
pub type SessionIndex = u32;

/// Peer-ids are 24 bits (0xffffff means none).
const PEER_IDS: u32 = 1 << 24;

impl SessionTable {
    /// A table for at most `capacity` sessions of any peer-id.
    pub fn new(capacity: usize) -> Self {
        Self::for_core(capacity, 1)
    }

    /// A table for at most `capacity` sessions on one of `cores` cores, which owns the
    /// peer-ids `p` with `p % cores` its number (the peer-id index is `cores` times smaller).
    pub fn for_core(capacity: usize, cores: usize) -> Self {
        let capacity = capacity.max(1);
        let stride = u32::try_from(cores.max(1))
            .unwrap_or(PEER_IDS)
            .min(PEER_IDS);
        let by_peer = vec![0u32; (PEER_IDS / stride + 1) as usize];
        // Zeroed lazily by the kernel: advising it now still precedes every write.
        crate::mem::advise_huge_pages(by_peer.as_ptr().cast(), by_peer.len() * 4);
        Self {
            slab: crate::mem::huge_vec_with(capacity, || None),
            free: (0..capacity as u32).rev().collect(),
            by_peer,
            stride,
            stride_shift: stride.is_power_of_two().then(|| stride.trailing_zeros()),
            live: 0,
            held: vec![false; capacity],
            held_count: 0,
            by_ip: HashMap::with_capacity(capacity),
            payload: None,
            reach_mapped: KeyReach::mapped_here(),
        }
    }

    #[inline]
    fn peer_entry(&self, peer: PeerId) -> usize {
        match self.stride_shift {
            Some(shift) => (peer.0 >> shift) as usize,
            None => (peer.0 / self.stride) as usize,
        }
    }

    /// The core (of the table's `cores`) that owns `peer`'s session: `peer % cores`.
    #[inline]
    pub fn core_of(&self, peer: PeerId) -> usize {
        match self.stride_shift {
            Some(_) => (peer.0 & (self.stride - 1)) as usize,
            None => (peer.0 % self.stride) as usize,
        }
    }

    /// Adds a session, replacing one with the same peer-id or address (`remove_replaced`). A
    /// caller that keeps state by slot (the worker's flows) takes the replaced sessions out
    /// first with `remove_replaced` itself.
    ///
    /// # Errors
    /// The session back when the table is full, or when its peer-id is not one this core
    /// owns and another session holds its index entry.
    pub fn insert(&mut self, s: Session) -> Result<SessionIndex, Box<Session>> {
        self.remove_replaced(s.id().peer(), s.client_ip);
        let e = self.peer_entry(s.id().peer());
        if self.by_peer.get(e) != Some(&0) {
            return Err(Box::new(s));
        }
        let Some(i) = self.free.pop() else {
            return Err(Box::new(s));
        };
        self.by_peer[e] = i + 1;
        self.by_ip.insert(s.client_ip, i);
        let slot = &mut self.slab[i as usize];
        let at = std::ptr::from_ref(slot).addr();
        let placed = slot.insert(s);
        self.payload = Some(std::ptr::from_ref(placed).addr() - at);
        self.live += 1;
        Ok(i)
    }

    /// Removes the sessions a new one for `peer` at `client_ip` replaces: the one with its
    /// peer-id and the one with its address (the table holds one session an address). Returns
    /// them with the slots they had.
    pub fn remove_replaced(
        &mut self,
        peer: PeerId,
        client_ip: u32,
    ) -> [Option<(SessionIndex, Session)>; 2] {
        let same_peer = self.remove_peer(peer);
        let same_ip = self
            .by_ip
            .get(&client_ip)
            .copied()
            .and_then(|i| self.remove(i).map(|s| (i, s)));
        [same_peer, same_ip]
    }

    /// Removes a session by slot.
    pub fn remove(&mut self, i: SessionIndex) -> Option<Session> {
        let s = self.slab.get_mut(i as usize)?.take()?;
        let e = self.peer_entry(s.id().peer());
        self.by_peer[e] = 0;
        self.by_ip.remove(&s.client_ip);
        self.free.push(i);
        self.live -= 1;
        Some(s)
    }

    /// Keeps empty slot `i` (a session's just removed) from new sessions until `release`:
    /// what a caller keeps by slot for the old session is not cleared yet. A slot that is not
    /// free is left as it is.
    pub fn hold(&mut self, i: SessionIndex) {
        // The slot just removed is the last one freed: found at once.
        if let Some(at) = self.free.iter().rposition(|&f| f == i) {
            self.free.remove(at);
            self.held[i as usize] = true;
            self.held_count += 1;
        }
    }

    /// Gives held slot `i` (`hold`) back to new sessions; any other slot is left as it is.
    pub fn release(&mut self, i: SessionIndex) {
        if let Some(h) = self.held.get_mut(i as usize).filter(|h| **h) {
            *h = false;
            self.held_count -= 1;
            self.free.push(i);
        }
    }

    /// Whether slot `i` is held empty (`hold`) for what an ended session left.
    pub fn is_held(&self, i: SessionIndex) -> bool {
        self.held.get(i as usize).is_some_and(|h| *h)
    }

    /// Slots held empty (`hold`).
    pub fn held(&self) -> usize {
        self.held_count
    }

    /// Whether a new session would find a free slot.
    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    /// Removes the session of a peer-id; returns its slot and state.
    pub fn remove_peer(&mut self, peer: PeerId) -> Option<(SessionIndex, Session)> {
        let i = self.index_of_peer(peer)?;
        self.remove(i).map(|s| (i, s))
    }

    /// The slot of a peer-id.
    #[inline]
    pub fn index_of_peer(&self, peer: PeerId) -> Option<SessionIndex> {
        let i = self.slot_hint(peer)?;
        let s = self.slab.get(i as usize)?.as_ref()?;
        (s.id.peer == peer).then_some(i)
    }

    /// The slot of a virtual address.
    #[inline]
    pub fn index_of_ip(&self, ip: u32) -> Option<SessionIndex> {
        self.by_ip.get(&ip).copied()
    }

    /// First look-ahead step for a packet of `peer`: requests its peer-id index entry (four
    /// aligned bytes: one line).
    #[inline]
    pub fn prefetch_peer(&self, peer: PeerId) {
        let e = self.peer_entry(peer).min(self.by_peer.len() - 1);
        prefetch_line(self.by_peer.as_ptr().wrapping_add(e).cast());
    }

    /// Second step: reads the entry (requested by `prefetch_peer`): the slot a packet of
    /// `peer` will most likely use (`index_of_peer` checks it).
    #[inline]
    pub fn slot_hint(&self, peer: PeerId) -> Option<SessionIndex> {
        self.by_peer.get(self.peer_entry(peer))?.checked_sub(1)
    }

    /// Requests what opening a packet of `len` bytes (its ciphertext) with the current key of
    /// the session in slot `i` touches: its fields and what ring reads of the key's receive
    /// half. Reads nothing (the slot may be empty).
    #[inline]
    pub fn prefetch_open(&self, i: SessionIndex, len: usize) {
        if let Some(base) = self.slot_base(i) {
            match KeyReach::of(len, self.reach_mapped) {
                KeyReach::Short => prefetch_lines(base, &OPEN_SHORT),
                KeyReach::Medium => prefetch_lines(base, &OPEN_MEDIUM),
                KeyReach::Long => prefetch_lines(base, &OPEN_LONG),
                KeyReach::Whole => prefetch_lines(base, &OPEN_WHOLE),
            }
        }
    }

    /// The same for sealing a packet of `len` bytes (its plaintext) for the session in slot
    /// `i`.
    #[inline]
    pub fn prefetch_seal(&self, i: SessionIndex, len: usize) {
        if let Some(base) = self.slot_base(i) {
            match KeyReach::of(len, self.reach_mapped) {
                KeyReach::Short => prefetch_lines(base, &SEAL_SHORT),
                KeyReach::Medium => prefetch_lines(base, &SEAL_MEDIUM),
                KeyReach::Long => prefetch_lines(base, &SEAL_LONG),
                KeyReach::Whole => prefetch_lines(base, &SEAL_WHOLE),
            }
        }
    }

    /// Where the session in slot `i` would start (computed, not read: the slot may be empty).
    #[inline]
    fn slot_base(&self, i: SessionIndex) -> Option<*const u8> {
        let i = i as usize;
        if i >= self.slab.len() {
            return None;
        }
        let slot = self.slab.as_ptr().wrapping_add(i).cast::<u8>();
        Some(slot.wrapping_add(self.payload?))
    }

    /// The session in a slot.
    #[inline]
    pub fn get_mut(&mut self, i: SessionIndex) -> Option<&mut Session> {
        self.slab.get_mut(i as usize)?.as_mut()
    }

    /// Every live session.
    pub fn iter(&self) -> impl Iterator<Item = (SessionIndex, &Session)> {
        self.slab
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i as u32, s)))
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Slots (the most sessions the table holds).
    pub fn capacity(&self) -> usize {
        self.slab.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Cipher, KeyMaterial};

    fn key(id: u8) -> DataKey {
        let m = KeyMaterial {
            cipher: Cipher::Aes256Gcm,
            encrypt_key: [1; 32],
            encrypt_iv: [2; 8],
            decrypt_key: [3; 32],
            decrypt_iv: [4; 8],
        };
        DataKey::new(KeyId(id), &m).unwrap()
    }

    fn session(peer: u32, ip: u32) -> Session {
        let r = Remote { ip: 1, port: 2 };
        let info = SessionInfo {
            peer: PeerId(peer),
            endpoint: 0,
            client_ip: ip,
            groups: GroupMask::EMPTY,
            remote: r,
            local: r,
        };
        Session::new(info, key(0), 0)
    }

    /// Every slot starts on a cache line, so the constant line tables name the same bytes in
    /// every slot, and they cover every byte the spans name.
    #[test]
    fn hot_lines_are_the_same_in_every_slot() {
        let mut t = SessionTable::new(8);
        for p in 0..5 {
            let i = t.insert(session(p, 100 + p)).unwrap();
            let base = t.slot_base(i).unwrap();
            assert_eq!(base.addr() % 64, 0, "slot {i}");
            let s = t.get_mut(i).unwrap();
            assert_eq!(std::ptr::from_mut(s).cast::<u8>().cast_const(), base);
        }
        let reaches = [
            KeyReach::Short,
            KeyReach::Medium,
            KeyReach::Long,
            KeyReach::Whole,
        ];
        for (r, reach) in reaches.into_iter().enumerate() {
            assert_eq!(reach as usize, r, "the masks are indexed by reach");
            let open_key = shifted_by(open_spans(reach), offset_of!(Session, open));
            let seal_key = shifted_by(
                seal_spans(reach),
                offset_of!(Session, send) + offset_of!(Sender, key),
            );
            for (mask, spans) in [
                (OPEN_MASKS[r], [&OPEN_FIELDS[..], &open_key[..]]),
                (SEAL_MASKS[r], [&SEAL_FIELDS[..], &seal_key[..]]),
            ] {
                for &(off, len) in spans.iter().flat_map(|s| s.iter()) {
                    for byte in off..off + len {
                        assert!(mask & (1 << (byte / 64)) != 0, "{reach:?}: byte {byte}");
                    }
                }
            }
        }
    }

    /// The lines a packet needs of its direction's state: the fields share the lines of its
    /// half of ring's key (544 bytes with AES-GCM on x86_64, 8.5 lines), placed so that the
    /// GHASH table starts a line; the other direction's state and the cold fields stay out of
    /// them. If ring's key changes, this fails: look at the layout again (`KeyReach`).
    #[test]
    fn each_direction_touches_seven_to_ten_lines() {
        let counts = |masks: [u64; KeyReach::COUNT]| masks.map(u64::count_ones);
        if cfg!(target_arch = "x86_64") && size_of::<ring::aead::LessSafeKey>() == 544 {
            assert_eq!(counts(OPEN_MASKS), [7, 8, 9, 10]);
            assert_eq!(counts(SEAL_MASKS), [7, 8, 9, 10]);
        }
        assert!(counts(OPEN_MASKS).iter().all(|&n| n <= 11));
        assert!(counts(SEAL_MASKS).iter().all(|&n| n <= 11));
        let line = |off: usize| 1u64 << (off / 64);
        let seal_first = offset_of!(Session, send);
        let cold = offset_of!(Session, local);
        for m in OPEN_MASKS {
            assert!(m < line(seal_first), "opening stays before the send side");
        }
        for m in SEAL_MASKS {
            assert!(
                m & (line(seal_first) - 1) == 0,
                "sealing stays in the send side"
            );
            assert!(m < line(cold), "and before the cold fields");
        }
    }

    #[test]
    fn lookup_replace_remove() {
        let mut t = SessionTable::new(2);
        let a = t.insert(session(1, 100)).unwrap();
        let b = t.insert(session(2, 200)).unwrap();
        assert_eq!(
            (t.index_of_peer(PeerId(1)), t.index_of_ip(200)),
            (Some(a), Some(b))
        );
        assert!(t.insert(session(3, 300)).is_err(), "full");
        // Same address again (a reconnect): replaces the old session.
        let c = t.insert(session(3, 100)).unwrap();
        assert_eq!(t.index_of_ip(100), Some(c));
        assert_eq!(t.index_of_peer(PeerId(1)), None);
        assert!(t.remove_peer(PeerId(2)).is_some());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn peer_index_of_a_core() {
        // Core 0 of 2 owns the even peer-ids; the index is halved, so peer-ids 4 and 5 share an
        // entry: the odd one (not this core's) is refused rather than taking it over.
        let mut t = SessionTable::for_core(8, 2);
        let a = t.insert(session(4, 100)).unwrap();
        assert!(t.insert(session(5, 101)).is_err());
        assert_eq!(t.index_of_peer(PeerId(4)), Some(a));
        assert_eq!(
            t.index_of_peer(PeerId(5)),
            None,
            "same entry, other peer-id"
        );
        let top = t.insert(session(0x00ff_fffe, 102)).unwrap();
        assert_eq!(t.index_of_peer(PeerId(0x00ff_fffe)), Some(top));
        assert_eq!(t.index_of_peer(PeerId(0x00ff_ffff)), None);
        // Replacing and removing keep the index exact.
        let b = t.insert(session(4, 103)).unwrap();
        assert_eq!(
            (t.index_of_peer(PeerId(4)), t.index_of_ip(100)),
            (Some(b), None)
        );
        assert!(t.remove_peer(PeerId(4)).is_some());
        assert_eq!((t.index_of_peer(PeerId(4)), t.len()), (None, 1));
        t.prefetch_peer(PeerId(0x00ff_ffff));
        assert_eq!(t.slot_hint(PeerId(6)), None);
        assert_eq!(t.slot_hint(PeerId(0x00ff_fffe)), Some(top));
        t.prefetch_open(u32::MAX, 64);
        t.prefetch_seal(u32::MAX, 1400);
    }

    #[test]
    fn owning_core_and_index_entry_with_any_core_count() {
        // Powers of two take the shift path, the others the division; both must agree with
        // `p % cores` and `p / cores`, and a core's own peer-ids must all be found.
        for cores in [1usize, 2, 3, 4, 5, 8] {
            for core in 0..cores {
                let mut t = SessionTable::for_core(16, cores);
                for p in [0u32, 1, 2, 3, 7, 8, 9, 1000, 0x00ff_fffe, 0x00ff_ffff] {
                    assert_eq!(t.core_of(PeerId(p)), p as usize % cores, "{p} on {cores}");
                    assert_eq!(t.peer_entry(PeerId(p)), p as usize / cores);
                }
                let mine: Vec<u32> = (0..40u32).filter(|p| *p as usize % cores == core).collect();
                for (n, &p) in mine.iter().take(16).enumerate() {
                    t.insert(session(p, 1000 + n as u32)).unwrap();
                }
                for &p in mine.iter().take(16) {
                    assert!(
                        t.index_of_peer(PeerId(p)).is_some(),
                        "{p} on core {core}/{cores}"
                    );
                }
            }
        }
    }

    #[test]
    fn computed_slot_address_is_the_session() {
        let mut t = SessionTable::new(4);
        assert_eq!(t.slot_base(0), None, "layout not learnt before an insert");
        for peer in 0..4 {
            let i = t.insert(session(peer, 100 + peer)).unwrap();
            let at = t.slot_base(i).unwrap();
            let s = t.get_mut(i).unwrap();
            assert_eq!(at, std::ptr::from_ref(s).cast::<u8>());
        }
    }

    #[test]
    fn key_rollover() {
        let mut s = session(1, 1);
        s.install_key(key(1));
        assert!(s.key_mut(KeyId(0)).is_some() && s.key_mut(KeyId(1)).is_some());
        assert_eq!(s.sender().key().key_id(), KeyId(1));
        s.retire_previous();
        assert!(s.key_mut(KeyId(0)).is_none());
    }
}
