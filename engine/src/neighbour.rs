//! The ARP neighbour cache of a core: next-hop IPv4 addresses to MAC addresses, per port, with a
//! small queue of packets waiting while an address is being resolved. An entry not refreshed
//! for `REACHABLE_SECS` is checked again while its MAC stays in use (as Linux's stale and probe
//! states): a busy next hop that never sends us ARP (a VPC router) loses no packets every five
//! minutes.
//!
//! Bounded everywhere: a maximum number of neighbours, `QUEUE_LEN` packets per pending one (the
//! latest: a newer packet takes the oldest one's place) and `QUEUED_MAX` in all, `MAX_TRIES`
//! requests one second apart before giving up. Time is seconds passed in.

use arrayvec::ArrayVec;
use hashbrown::HashMap;

use crate::wire::ethernet::Mac;

/// Packets held per unresolved neighbour (Linux holds a few per neighbour too).
pub const QUEUE_LEN: usize = 4;
/// Packets held for all unresolved neighbours of a cache together. The packets are the port's
/// buffers: `QUEUE_LEN` for each of thousands of neighbours (a client sweeping a large target
/// subnet makes one per address) would hold more buffers than the appliance gives a core, or
/// has at all, and receiving would stop for every client. Past it, a new neighbour is still
/// asked for (within a second), but the packet is not held.
pub const QUEUED_MAX: usize = 1024;
/// ARP frames a core passes to the other cores in one second at most (`should_share`): far
/// more than the replies their requests bring, and a bound on what a flood of ARP to one of
/// our addresses costs the other cores and their handoff rings.
pub const SHARED_PER_SEC: u32 = 256;
/// ARP requests sent before a neighbour is declared unreachable.
pub const MAX_TRIES: u8 = 3;
/// How long a resolved entry is trusted without being refreshed, in seconds.
pub const REACHABLE_SECS: u32 = 300;

enum State<B> {
    Resolved {
        mac: Mac,
        refreshed: u32,
    },
    Pending {
        queue: ArrayVec<B, QUEUE_LEN>,
        tries: u8,
        last_request: u32,
    },
    /// Stale and in use: packets still go to `mac` while requests ask for it again; no answer
    /// after `MAX_TRIES`, and the entry goes.
    Probing {
        mac: Mac,
        tries: u8,
        last_request: u32,
    },
}

/// The answer to "how do I reach this next hop?".
pub enum Resolve<B> {
    /// The neighbour is known: send the packet (handed back) to this MAC.
    Mac(Mac, B),
    /// The packet was queued; if `request` the caller must send an ARP request now.
    Queued {
        /// Whether to send an ARP request for it now.
        request: bool,
    },
    /// A packet to drop (counted `arp_queue_full`): this one, if it could not be queued (table
    /// full, or the cache's bound on packets held reached before its neighbour held any), or
    /// the oldest one waiting for the neighbour, which made way for this one (its queue full).
    Full(B),
}

/// What `poll` asks of the caller.
pub enum Housekeeping<B> {
    /// Send (another) ARP request for this neighbour.
    Request {
        /// The port.
        port: u16,
        /// The neighbour's address.
        ip: u32,
    },
    /// Resolution failed: drop these packets (counted `arp_unresolved`).
    GiveUp(ArrayVec<B, QUEUE_LEN>),
}

/// Ports whose last resolved next hop is remembered (`Memo`); others always use the map.
const MEMO_PORTS: usize = 8;

/// The last next hop found resolved on a port. Most packets out of a port go to one next hop
/// (the subnet's router, the outside gateway), so this answers them without hashing; it is a
/// copy of a `Resolved` entry, forgotten whenever that entry changes.
#[derive(Clone, Copy)]
struct Memo {
    ip: u32,
    mac: Mac,
    refreshed: u32,
}

/// The cache.
pub struct NeighbourTable<B> {
    entries: HashMap<(u16, u32), State<B>>,
    capacity: usize,
    /// Packets held in the pending entries' queues.
    queued: usize,
    /// The second of `shared`, and how many ARP frames were passed on in it.
    shared_second: u32,
    shared: u32,
    memo: [Option<Memo>; MEMO_PORTS],
}

impl<B> NeighbourTable<B> {
    /// A cache for at most `capacity` neighbours.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::with_capacity(capacity),
            capacity: capacity.max(1),
            queued: 0,
            shared_second: 0,
            shared: 0,
            memo: [None; MEMO_PORTS],
        }
    }

    /// The MAC of `ip` on `port` if resolved and fresh.
    #[inline]
    pub fn lookup(&mut self, port: u16, ip: u32, now: u32) -> Option<Mac> {
        let fresh = |refreshed: u32| now.saturating_sub(refreshed) <= REACHABLE_SECS;
        let memo = self.memo.get_mut(usize::from(port));
        if let Some(Some(m)) = memo.as_deref() {
            if m.ip == ip && fresh(m.refreshed) {
                return Some(m.mac);
            }
        }
        match *self.entries.get(&(port, ip))? {
            State::Resolved { mac, refreshed } if fresh(refreshed) => {
                if let Some(slot) = memo {
                    *slot = Some(Memo { ip, mac, refreshed });
                }
                Some(mac)
            }
            State::Probing { mac, .. } => Some(mac),
            _ => None,
        }
    }

    /// Forgets the memo of `port` if it is about `ip` (its entry is changing).
    fn forget(&mut self, port: u16, ip: u32) {
        if let Some(slot) = self.memo.get_mut(usize::from(port)) {
            if slot.is_some_and(|m| m.ip == ip) {
                *slot = None;
            }
        }
    }

    /// Resolves `ip` on `port` for `buf`: the MAC (with `buf` handed back to send), or `buf`
    /// queued until the reply comes.
    pub fn resolve(&mut self, port: u16, ip: u32, buf: B, now: u32) -> Resolve<B> {
        if let Some(mac) = self.lookup(port, ip, now) {
            return Resolve::Mac(mac, buf);
        }
        self.forget(port, ip);
        let len = self.entries.len();
        let room = self.queued < QUEUED_MAX;
        match self.entries.get_mut(&(port, ip)) {
            Some(State::Pending { queue, .. }) if room && !queue.is_full() => {
                queue.push(buf);
                self.queued += 1;
                Resolve::Queued { request: false }
            }
            Some(State::Pending { queue, .. }) => Self::displace_oldest(queue, buf),
            Some(state @ State::Resolved { .. }) => {
                // Stale and in use: keep sending to its MAC while asking again (the first
                // request at the next `poll`, within a second).
                let State::Resolved { mac, .. } = *state else {
                    return Resolve::Full(buf);
                };
                *state = State::Probing {
                    mac,
                    tries: 0,
                    last_request: now.saturating_sub(1),
                };
                Resolve::Mac(mac, buf)
            }
            Some(State::Probing { mac, .. }) => Resolve::Mac(*mac, buf),
            None if len >= self.capacity => Resolve::Full(buf),
            None if !room => {
                // Asked for at the next `poll` (within a second), the packet not held.
                self.entries.insert(
                    (port, ip),
                    State::Pending {
                        queue: ArrayVec::new(),
                        tries: 0,
                        last_request: now.saturating_sub(1),
                    },
                );
                Resolve::Full(buf)
            }
            None => {
                let mut queue = ArrayVec::new();
                queue.push(buf);
                self.queued += 1;
                self.entries.insert(
                    (port, ip),
                    State::Pending {
                        queue,
                        tries: 1,
                        last_request: now,
                    },
                );
                Resolve::Queued { request: true }
            }
        }
    }

    /// Queues `buf` in the full `queue` (or one that may hold no more, the cache's bound
    /// reached) in place of its oldest packet, handed back to drop: RFC 1122 §2.3.2.2 has the
    /// latest packet kept, and the latest are what a sender retransmitting or a stream going on
    /// needs once the neighbour answers. `buf` itself is handed back if the queue is empty (the
    /// bound was reached before the entry held any). No allocation: the queue moves up by one.
    #[cold]
    #[inline(never)]
    fn displace_oldest(queue: &mut ArrayVec<B, QUEUE_LEN>, buf: B) -> Resolve<B> {
        if queue.is_empty() {
            return Resolve::Full(buf);
        }
        let oldest = queue.remove(0);
        queue.push(buf);
        Resolve::Full(oldest)
    }

    /// Records that `ip` on `port` is at `mac` if the cache already has an entry for it
    /// (resolved or being resolved), as from ARP that was not addressed to us (a request for
    /// another host, a gratuitous announcement): neighbours are only made for hosts that talk
    /// to us or that we look for, or every ARP broadcast of a large subnet would fill the cache
    /// and leave no room for the next hops we need. Returns the packets that were waiting.
    pub fn refresh(&mut self, port: u16, ip: u32, mac: Mac, now: u32) -> ArrayVec<B, QUEUE_LEN> {
        if !self.entries.contains_key(&(port, ip)) {
            return ArrayVec::new();
        }
        self.learn(port, ip, mac, now)
    }

    /// Records that `ip` on `port` is at `mac` (from ARP addressed to us); returns the
    /// packets that were waiting for it. A neighbour the cache does not hold yet is made only
    /// while fewer than `learn_limit` are held: any on-link host can send us ARP in the name
    /// of thousands of addresses, and the entries it makes stay for ten minutes; the rest of
    /// the cache stays for the next hops the core asks for itself (`resolve`).
    pub fn learn(&mut self, port: u16, ip: u32, mac: Mac, now: u32) -> ArrayVec<B, QUEUE_LEN> {
        self.forget(port, ip);
        let key = (port, ip);
        if self.entries.len() >= self.learn_limit() && !self.entries.contains_key(&key) {
            return ArrayVec::new();
        }
        let resolved = State::Resolved {
            mac,
            refreshed: now,
        };
        match self.entries.insert(key, resolved) {
            Some(State::Pending { queue, .. }) => {
                self.queued = self.queued.saturating_sub(queue.len());
                queue
            }
            _ => ArrayVec::new(),
        }
    }

    /// Whether ARP saying that `ip` on `port` is at `mac`, received at second `now`, is to be
    /// passed to the other cores (counted if so; call before `learn`): not when this cache
    /// learned exactly that in the same second (a copy went then), and `SHARED_PER_SEC` a
    /// second at most.
    pub fn should_share(&mut self, port: u16, ip: u32, mac: Mac, now: u32) -> bool {
        let repeated = matches!(
            self.entries.get(&(port, ip)),
            Some(State::Resolved { mac: m, refreshed }) if *m == mac && *refreshed == now
        );
        if repeated {
            return false;
        }
        if self.shared_second != now {
            (self.shared_second, self.shared) = (now, 0);
        }
        if self.shared >= SHARED_PER_SEC {
            return false;
        }
        self.shared += 1;
        true
    }

    /// Neighbours held at most for `learn` to make one more: three quarters of the capacity.
    fn learn_limit(&self) -> usize {
        self.capacity - self.capacity / 4
    }

    /// Retries pending resolutions once a second and gives up after `MAX_TRIES`; forgets
    /// entries stale for long. Call from the core's housekeeping.
    pub fn poll(&mut self, now: u32, out: &mut Vec<Housekeeping<B>>) {
        // Entries may be dropped below; the memos are refilled by the next lookups.
        self.memo = [None; MEMO_PORTS];
        let mut give_up = Vec::new();
        for (&(port, ip), state) in &mut self.entries {
            match state {
                State::Pending {
                    tries,
                    last_request,
                    ..
                }
                | State::Probing {
                    tries,
                    last_request,
                    ..
                } if now.saturating_sub(*last_request) >= 1 => {
                    if *tries >= MAX_TRIES {
                        give_up.push((port, ip));
                    } else {
                        *tries += 1;
                        *last_request = now;
                        out.push(Housekeeping::Request { port, ip });
                    }
                }
                State::Resolved { refreshed, .. }
                    if now.saturating_sub(*refreshed) > 2 * REACHABLE_SECS =>
                {
                    give_up.push((port, ip));
                }
                _ => {}
            }
        }
        for k in give_up {
            if let Some(State::Pending { queue, .. }) = self.entries.remove(&k) {
                self.queued = self.queued.saturating_sub(queue.len());
                out.push(Housekeeping::GiveUp(queue));
            }
        }
    }

    /// Neighbours held (resolved or pending).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [2, 0, 0, 0, 0, 9];

    #[test]
    fn queue_until_resolved() {
        let mut t: NeighbourTable<u32> = NeighbourTable::new(8);
        assert!(matches!(
            t.resolve(1, 10, 100, 0),
            Resolve::Queued { request: true }
        ));
        assert!(matches!(
            t.resolve(1, 10, 101, 0),
            Resolve::Queued { request: false }
        ));
        for p in 102..104 {
            assert!(matches!(t.resolve(1, 10, p, 0), Resolve::Queued { .. }));
        }
        assert!(
            matches!(t.resolve(1, 10, 104, 0), Resolve::Full(100)),
            "bounded queue: the oldest makes way (RFC 1122 §2.3.2.2)"
        );
        assert!(matches!(t.resolve(1, 10, 105, 0), Resolve::Full(101)));
        assert_eq!(t.queued, QUEUE_LEN, "a packet for a packet");
        let released = t.learn(1, 10, MAC, 0);
        assert_eq!(
            released.as_slice(),
            &[102, 103, 104, 105],
            "the latest, in order"
        );
        assert_eq!(t.queued, 0);
        assert!(matches!(t.resolve(1, 10, 106, 1), Resolve::Mac(MAC, 106)));
        assert_eq!(t.lookup(2, 10, 1), None, "per port");
    }

    #[test]
    fn refresh_updates_known_neighbours_only() {
        const OTHER: Mac = [2, 0, 0, 0, 0, 7];
        let mut t: NeighbourTable<u32> = NeighbourTable::new(8);
        assert!(t.refresh(1, 10, MAC, 0).is_empty());
        assert!(t.is_empty(), "a stranger's ARP makes no entry");
        assert!(matches!(
            t.resolve(1, 10, 100, 0),
            Resolve::Queued { request: true }
        ));
        assert_eq!(
            t.refresh(1, 10, MAC, 0).as_slice(),
            &[100],
            "a pending one resolves"
        );
        let _ = t.refresh(1, 10, OTHER, 1);
        assert_eq!(t.lookup(1, 10, 1), Some(OTHER), "a known one moves");
    }

    #[test]
    fn retries_then_gives_up() {
        let mut t: NeighbourTable<u32> = NeighbourTable::new(8);
        let _ = t.resolve(0, 7, 1, 0);
        let mut out = Vec::new();
        t.poll(0, &mut out);
        assert!(out.is_empty(), "not before a second passed");
        for now in 1..=2 {
            t.poll(now, &mut out);
        }
        assert_eq!(
            out.iter()
                .filter(|h| matches!(h, Housekeeping::Request { ip: 7, .. }))
                .count(),
            2
        );
        out.clear();
        t.poll(3, &mut out);
        assert!(matches!(out.as_slice(), [Housekeeping::GiveUp(q)] if q.as_slice() == [1]));
        assert!(t.is_empty());
    }

    #[test]
    fn bounded_table_and_staleness() {
        let mut t: NeighbourTable<u32> = NeighbourTable::new(1);
        let _ = t.learn(0, 1, MAC, 0);
        assert!(matches!(t.resolve(0, 2, 9, 0), Resolve::Full(9)));
        let stale = REACHABLE_SECS + 1;
        assert_eq!(
            t.lookup(0, 1, stale),
            None,
            "a stale entry is not used as it is"
        );
        // Still in use: sent to its MAC while it is asked for again, a request a second.
        assert!(matches!(t.resolve(0, 1, 3, stale), Resolve::Mac(MAC, 3)));
        assert_eq!(t.lookup(0, 1, stale), Some(MAC));
        let requests = |out: &[Housekeeping<u32>]| {
            out.iter()
                .filter(|h| matches!(h, Housekeeping::Request { port: 0, ip: 1 }))
                .count()
        };
        let mut out = Vec::new();
        t.poll(stale, &mut out);
        t.poll(stale, &mut out);
        assert_eq!(requests(&out), 1, "one request a second");
        // Answered: fresh again, for another five minutes.
        let _ = t.learn(0, 1, MAC, stale + 1);
        t.poll(stale + 2, &mut out);
        assert_eq!(requests(&out), 1);
        assert_eq!(t.lookup(0, 1, stale + 2 + REACHABLE_SECS - 1), Some(MAC));
        // Not answered: after `MAX_TRIES` requests the entry goes, and the next packet waits
        // for a new resolution.
        let later = stale + 1 + REACHABLE_SECS + 1;
        assert!(matches!(t.resolve(0, 1, 4, later), Resolve::Mac(MAC, 4)));
        let mut out = Vec::new();
        for s in 0..=u32::from(MAX_TRIES) {
            t.poll(later + s, &mut out);
        }
        assert_eq!(requests(&out), usize::from(MAX_TRIES));
        assert!(t.is_empty());
        assert!(matches!(
            t.resolve(0, 1, 5, later + 5),
            Resolve::Queued { request: true }
        ));
    }

    #[test]
    fn arp_from_strangers_leaves_room_for_the_next_hops_we_ask_for() {
        // ARP in the name of a hundred addresses (one spoofing host can send it): a quarter of
        // the cache stays free.
        let mut t: NeighbourTable<u32> = NeighbourTable::new(8);
        for ip in 0..100 {
            assert!(t.learn(1, ip, MAC, 0).is_empty());
        }
        assert_eq!(t.len(), 6);
        assert_eq!(t.lookup(1, 99, 0), None, "not learned past the limit");
        assert_eq!(t.lookup(1, 0, 0), Some(MAC));
        // The next hops the core needs still resolve, up to the capacity, and their answers
        // are taken.
        for ip in [1000, 1001] {
            assert!(matches!(
                t.resolve(1, ip, ip, 0),
                Resolve::Queued { request: true }
            ));
        }
        assert!(matches!(t.resolve(1, 1002, 7, 0), Resolve::Full(7)));
        assert_eq!(t.learn(1, 1000, MAC, 0).as_slice(), &[1000]);
        assert_eq!(t.lookup(1, 1000, 0), Some(MAC));
        // A known neighbour is always refreshed.
        const OTHER: Mac = [2, 0, 0, 0, 0, 7];
        let _ = t.learn(1, 0, OTHER, 1);
        assert_eq!(t.lookup(1, 0, 1), Some(OTHER));
    }

    #[test]
    fn arp_is_shared_once_a_second_per_neighbour_and_within_a_budget() {
        let mut t: NeighbourTable<u32> = NeighbourTable::new(8192);
        assert!(t.should_share(1, 10, MAC, 5));
        let _ = t.learn(1, 10, MAC, 5);
        assert!(!t.should_share(1, 10, MAC, 5), "the same, the same second");
        assert!(t.should_share(1, 10, [2, 0, 0, 0, 0, 7], 5), "a new MAC");
        assert!(t.should_share(1, 10, MAC, 6), "the next second");
        let shared = (100..1100)
            .filter(|&ip| t.should_share(1, ip, MAC, 6))
            .count();
        assert_eq!(shared, SHARED_PER_SEC as usize - 1);
        assert!(
            t.should_share(1, 2000, MAC, 7),
            "a new second, a new budget"
        );
    }

    #[test]
    fn packets_held_for_all_neighbours_are_bounded() {
        // A sweep of a large subnet: every address a new neighbour, four packets each.
        let mut t: NeighbourTable<u32> = NeighbourTable::new(8192);
        let mut held = 0;
        for ip in 0..2048u32 {
            for n in 0..QUEUE_LEN as u32 {
                match t.resolve(1, ip, ip * 8 + n, 0) {
                    Resolve::Queued { .. } => held += 1,
                    Resolve::Full(_) => {}
                    Resolve::Mac(..) => panic!("nobody answered"),
                }
            }
        }
        assert_eq!(held, QUEUED_MAX, "held in all");
        assert_eq!(t.queued, QUEUED_MAX);
        // At the bound, a newer packet for a neighbour that holds some takes its oldest one's
        // place; one for a neighbour that holds none is not held.
        assert!(matches!(t.resolve(1, 0, 9000, 0), Resolve::Full(0)));
        assert!(matches!(t.resolve(1, 2000, 9001, 0), Resolve::Full(9001)));
        assert_eq!(t.queued, QUEUED_MAX);
        // Every address is still asked for, the ones past the bound at the next poll.
        assert_eq!(t.len(), 2048);
        let mut out = Vec::new();
        t.poll(1, &mut out);
        let requests = |out: &[Housekeeping<u32>]| {
            out.iter()
                .filter(|h| matches!(h, Housekeeping::Request { .. }))
                .count()
        };
        assert_eq!(requests(&out), 2048);
        // An answer releases what waited and makes room again.
        assert_eq!(t.learn(1, 0, MAC, 1).len(), QUEUE_LEN);
        assert_eq!(t.queued, QUEUED_MAX - QUEUE_LEN);
        assert!(matches!(
            t.resolve(1, 5000, 1, 1),
            Resolve::Queued { request: true }
        ));
        // Giving up frees the rest: nothing is counted held that is not.
        out.clear();
        for now in 2..=5 {
            t.poll(now, &mut out);
        }
        let given_up: usize = out
            .iter()
            .map(|h| match h {
                Housekeeping::GiveUp(q) => q.len(),
                Housekeeping::Request { .. } => 0,
            })
            .sum();
        assert_eq!(given_up, QUEUED_MAX - QUEUE_LEN + 1);
        assert_eq!((t.queued, t.len()), (0, 1), "only the answered one stays");
    }

    #[test]
    fn remembered_next_hop_follows_its_entry() {
        const OTHER: Mac = [2, 0, 0, 0, 0, 7];
        let mut t: NeighbourTable<u32> = NeighbourTable::new(8);
        let _ = t.learn(1, 10, MAC, 0);
        let _ = t.learn(1, 11, OTHER, 0);
        assert_eq!(t.lookup(1, 10, 1), Some(MAC));
        assert_eq!(
            t.lookup(1, 11, 1),
            Some(OTHER),
            "another hop on the same port"
        );
        assert_eq!(t.lookup(1, 10, 1), Some(MAC));
        // The neighbour moves to another MAC: the next lookup sees it.
        let _ = t.learn(1, 10, OTHER, 2);
        assert_eq!(t.lookup(1, 10, 3), Some(OTHER));
        // Stale is stale, remembered or not; a stale entry in use is asked for again, its
        // MAC kept meanwhile.
        assert_eq!(t.lookup(1, 10, 3 + REACHABLE_SECS), None);
        assert!(matches!(
            t.resolve(1, 10, 5, 3 + REACHABLE_SECS),
            Resolve::Mac(OTHER, 5)
        ));
        assert_eq!(t.lookup(1, 10, 3 + REACHABLE_SECS), Some(OTHER));
        // Forgotten by housekeeping: not answered from memory.
        let _ = t.learn(2, 20, MAC, 0);
        assert_eq!(t.lookup(2, 20, 0), Some(MAC));
        let mut out = Vec::new();
        t.poll(2 * REACHABLE_SECS + 1, &mut out);
        assert_eq!(t.lookup(2, 20, 0), None);
        // Ports past the remembered ones use the map alone.
        let _ = t.learn(40, 1, MAC, 0);
        assert_eq!(t.lookup(40, 1, 0), Some(MAC));
        assert_eq!(t.lookup(40, 2, 0), None);
    }
}
