//! What a core punts to the control thread: only what can be a client's control-channel
//! packet, and at most a budget per source. (`PuntLimiter` also keeps the budgets per source
//! address of the cores' and control's stateless answers and of control's new sessions.)
//!
//! Every packet to a listener that is not a data packet is copied into the report queue for
//! control. Without a limit, one source sending junk as fast as it can fills that queue (8192
//! reports) and every other client's handshake packets are refused with it
//! (`PuntQueueFull`). Each source (address and port: clients behind one NAT each have their
//! own port) gets a token bucket: `burst` packets, refilled by `per_sec` a second, far more
//! than a handshake or a renegotiation needs (tens of packets). The buckets are a fixed
//! set-associative table (four to a set, the set chosen by a randomly seeded hash; nothing
//! allocated after start): a source finds its own bucket, and a new source takes the stalest
//! of its set, which starts over full. A spray of spoofed sources therefore costs a hash and
//! four compares a packet and cannot drain anyone's budget: it evicts buckets, and an evicted
//! source starts over with a full one (the limit fails open, never shut, under a spray).

use core::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;

use crate::session::Remote;
use crate::wire::openvpn::Opcode;

/// The shortest control packet control accepts: opcode, session id, ack count, message id.
pub const CONTROL_MIN_LEN: usize = 1 + 8 + 1 + 4;

/// Whether a packet to a listener can be a client's control-channel packet (the opcodes
/// control handles, long enough to parse); anything else is dropped on the core.
#[inline]
pub fn is_client_control(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let op = Opcode::of(first);
    payload.len() >= CONTROL_MIN_LEN
        && (op == Opcode::CONTROL_HARD_RESET_CLIENT_V2
            || op == Opcode::CONTROL_V1
            || op == Opcode::ACK_V1
            || op == Opcode::CONTROL_SOFT_RESET_V1)
}

/// The addresses control has a control-channel session with, kept by every core from
/// `Command::ControlPeer`. Preallocated; if control ever names more addresses than the
/// capacity, the set stops filtering for good (every address counts as a peer, as without the
/// cookie key): an address it could not keep must not be shut out later.
pub struct ControlPeers {
    set: hashbrown::HashSet<(u32, u16)>,
    capacity: usize,
    overflowed: bool,
}

impl ControlPeers {
    /// Room for `capacity` addresses.
    pub fn new(capacity: usize) -> Self {
        Self {
            set: hashbrown::HashSet::with_capacity(capacity),
            capacity,
            overflowed: false,
        }
    }

    /// Records that `remote` has a session (`present`) or no longer has.
    pub fn set(&mut self, remote: Remote, present: bool) {
        let key = (remote.ip, remote.port);
        if !present {
            self.set.remove(&key);
        } else if self.set.len() < self.capacity {
            self.set.insert(key);
        } else if !self.set.contains(&key) {
            self.overflowed = true;
        }
    }

    /// Whether `remote` may have a session.
    #[inline]
    pub fn contains(&self, remote: Remote) -> bool {
        self.overflowed || self.set.contains(&(remote.ip, remote.port))
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    ip: u32,
    port: u16,
    used: bool,
    tokens: u32,
    /// The second `tokens` was last refilled.
    stamp: u32,
}

/// Buckets in a set.
const WAYS: usize = 4;

/// Per-source budgets of one core.
pub struct PuntLimiter {
    buckets: Box<[Bucket]>,
    hasher: DefaultHashBuilder,
    burst: u32,
    per_sec: u32,
}

impl PuntLimiter {
    /// At least `sources` token buckets (whole sets of four, a power of two of them) of `burst`
    /// packets refilled by `per_sec` a second; `burst` 0 turns the limit off.
    pub fn new(sources: usize, burst: u32, per_sec: u32) -> Self {
        let sets = sources.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            buckets: vec![Bucket::default(); sets * WAYS].into_boxed_slice(),
            hasher: DefaultHashBuilder::default(),
            burst,
            per_sec,
        }
    }

    /// Whether a packet from `ip:port` may pass at second `now` (spends a token if so).
    pub fn allow(&mut self, ip: u32, port: u16, now: u32) -> bool {
        if self.burst == 0 {
            return true;
        }
        let sets = self.buckets.len() / WAYS;
        let set = self.hasher.hash_one((ip, port)) as usize & (sets - 1);
        let Some(set) = self.buckets.get_mut(set * WAYS..(set + 1) * WAYS) else {
            return true;
        };
        let b = match set
            .iter()
            .position(|b| b.used && b.ip == ip && b.port == port)
        {
            Some(i) => &mut set[i],
            None => {
                // The stalest bucket (or an unused one) starts over, full, for this source.
                let i = (0..WAYS)
                    .min_by_key(|&i| (set[i].used, set[i].stamp))
                    .unwrap_or(0);
                set[i] = Bucket {
                    ip,
                    port,
                    used: true,
                    tokens: self.burst,
                    stamp: now,
                };
                &mut set[i]
            }
        };
        if now > b.stamp {
            let add = (now - b.stamp).saturating_mul(self.per_sec);
            b.tokens = b.tokens.saturating_add(add).min(self.burst);
            b.stamp = now;
        }
        if b.tokens == 0 {
            return false;
        }
        b.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut l = PuntLimiter::new(1024, 5, 2);
        assert_eq!((0..10).filter(|_| l.allow(1, 1000, 7)).count(), 5);
        assert!(l.allow(2, 1000, 7), "another source has its own budget");
        assert!(
            l.allow(1, 1001, 7),
            "so has another port of the same address"
        );
        assert_eq!((0..10).filter(|_| l.allow(1, 1000, 8)).count(), 2);
        assert_eq!(
            (0..10).filter(|_| l.allow(1, 1000, 100)).count(),
            5,
            "refilled to the burst, no more"
        );
    }

    #[test]
    fn a_spray_of_sources_drains_no_one() {
        let mut l = PuntLimiter::new(64, 3, 1);
        for ip in 0..100_000u32 {
            assert!(l.allow(ip, 7, 5), "a new source starts with a full budget");
            assert!(l.allow(ip, 7, 5) && l.allow(ip, 7, 5) && !l.allow(ip, 7, 5));
        }
        assert!(l.allow(1_000_000, 7, 5));
    }

    #[test]
    fn control_peers_are_kept_and_a_full_set_fails_open() {
        let at = |port| Remote { ip: 7, port };
        let mut c = ControlPeers::new(4);
        c.set(at(1), true);
        c.set(at(2), true);
        assert!(c.contains(at(1)) && c.contains(at(2)) && !c.contains(at(3)));
        c.set(at(1), false);
        assert!(!c.contains(at(1)));
        for p in 10..13 {
            c.set(at(p), true);
        }
        assert!(!c.contains(at(99)), "full, not over");
        c.set(at(13), true);
        assert!(
            c.contains(at(99)),
            "over the capacity: every address passes"
        );
        for p in [2, 10, 11, 12] {
            c.set(at(p), false);
        }
        assert!(c.contains(at(13)), "the one it could not keep still passes");
    }

    #[test]
    fn zero_burst_is_no_limit() {
        let mut l = PuntLimiter::new(1, 0, 0);
        assert!((0..1000).all(|_| l.allow(1, 1, 0)));
    }

    #[test]
    fn only_the_opcodes_control_handles_are_punted() {
        let mut p = [0u8; CONTROL_MIN_LEN];
        for op in 0u8..32 {
            p[0] = op << 3 | 1;
            let control = matches!(op, 3 | 4 | 5 | 7);
            assert_eq!(is_client_control(&p), control, "opcode {op}");
        }
        p[0] = 7 << 3;
        assert!(!is_client_control(&p[..CONTROL_MIN_LEN - 1]));
        assert!(!is_client_control(&[]));
    }
}
