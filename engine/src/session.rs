//! The sessions a core owns: data-channel keys (current and the previous key_id kept for the
//! transition window), the client's virtual address, groups and outer address, and counters.
//!
//! Looked up by peer-id for traffic from clients and by virtual address for return traffic.
//! Hot state only; the control thread keeps the rest (certificates, usernames, timers).

use hashbrown::HashMap;

use crate::crypto::DataKey;
use crate::packet::prefetch::prefetch;
use crate::rules::GroupMask;
use crate::wire::openvpn::{KeyId, PeerId};

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

/// One session's data-path state.
#[derive(Debug)]
pub struct Session {
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
    /// The local address and port the client talks to (the endpoint's listener).
    pub local: Remote,
    /// The key in use (always present: a session starts with one and a new one replaces it).
    current: DataKey,
    /// The previous key, during a renegotiation's transition window.
    previous: Option<DataKey>,
    /// Counters.
    pub traffic: Traffic,
    /// Seconds (caller's clock) of the last authenticated packet received.
    pub last_rx: u32,
    /// Seconds of the last packet sent.
    pub last_tx: u32,
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
        Self {
            peer,
            endpoint,
            client_ip,
            groups,
            remote,
            local,
            current: key,
            previous: None,
            traffic: Traffic::default(),
            last_rx: now,
            last_tx: now,
        }
    }

    /// The key for `key_id`, current or previous.
    #[inline]
    pub fn key_mut(&mut self, key_id: KeyId) -> Option<&mut DataKey> {
        if self.current.key_id() == key_id {
            return Some(&mut self.current);
        }
        self.previous.as_mut().filter(|k| k.key_id() == key_id)
    }

    /// The key to send with (the newest).
    #[inline]
    pub fn send_key(&mut self) -> Option<&mut DataKey> {
        Some(&mut self.current)
    }

    /// Installs a new key; the current one becomes the previous (kept until retired).
    pub fn install_key(&mut self, key: DataKey) {
        self.previous = Some(std::mem::replace(&mut self.current, key));
    }

    /// Drops the previous key (the transition window is over).
    pub fn retire_previous(&mut self) {
        self.previous = None;
    }

    /// Starts bringing into the cache what opening a packet of the current key touches: the
    /// session's scalar fields and the key's receive half. A hint: the address is computed,
    /// nothing is read.
    #[inline]
    pub fn prefetch_open(&self) {
        prefetch_fields(self);
        self.current.prefetch_open();
    }

    /// The same for sealing a packet to the client.
    #[inline]
    pub fn prefetch_seal(&self) {
        prefetch_fields(self);
        self.current.prefetch_seal();
    }
}

/// The cache lines of a session's scalar fields (everything but its keys).
#[inline]
fn prefetch_fields(s: &Session) {
    for p in [
        std::ptr::from_ref(&s.peer).cast::<u8>(),
        std::ptr::from_ref(&s.groups).cast(),
        std::ptr::from_ref(&s.remote).cast(),
        std::ptr::from_ref(&s.traffic).cast(),
        std::ptr::from_ref(&s.last_rx).cast(),
    ] {
        prefetch(p, 1);
    }
}

/// The sessions of one core.
pub struct SessionTable {
    slab: Vec<Option<Session>>,
    free: Vec<u32>,
    by_peer: HashMap<u32, u32>,
    by_ip: HashMap<u32, u32>,
}

/// A session's slot on its core (stable while it lives; flow tables record it as owner).
pub type SessionIndex = u32;

impl SessionTable {
    /// A table for at most `capacity` sessions.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let mut slab = Vec::with_capacity(capacity);
        slab.resize_with(capacity, || None);
        Self {
            slab,
            free: (0..capacity as u32).rev().collect(),
            by_peer: HashMap::with_capacity(capacity),
            by_ip: HashMap::with_capacity(capacity),
        }
    }

    /// Adds a session, replacing one with the same peer-id or address.
    ///
    /// # Errors
    /// The session back when the table is full.
    pub fn insert(&mut self, s: Session) -> Result<SessionIndex, Box<Session>> {
        self.remove_peer(s.peer);
        if let Some(&i) = self.by_ip.get(&s.client_ip) {
            self.remove(i);
        }
        let Some(i) = self.free.pop() else {
            return Err(Box::new(s));
        };
        self.by_peer.insert(s.peer.0, i);
        self.by_ip.insert(s.client_ip, i);
        self.slab[i as usize] = Some(s);
        Ok(i)
    }

    /// Removes a session by slot.
    pub fn remove(&mut self, i: SessionIndex) -> Option<Session> {
        let s = self.slab.get_mut(i as usize)?.take()?;
        self.by_peer.remove(&s.peer.0);
        self.by_ip.remove(&s.client_ip);
        self.free.push(i);
        Some(s)
    }

    /// Removes the session of a peer-id; returns its slot and state.
    pub fn remove_peer(&mut self, peer: PeerId) -> Option<(SessionIndex, Session)> {
        let i = *self.by_peer.get(&peer.0)?;
        self.remove(i).map(|s| (i, s))
    }

    /// The slot of a peer-id.
    #[inline]
    pub fn index_of_peer(&self, peer: PeerId) -> Option<SessionIndex> {
        self.by_peer.get(&peer.0).copied()
    }

    /// The slot of a virtual address.
    #[inline]
    pub fn index_of_ip(&self, ip: u32) -> Option<SessionIndex> {
        self.by_ip.get(&ip).copied()
    }

    /// Prefetches what opening a packet of `peer` touches (see `Session::prefetch_open`).
    #[inline]
    pub fn prefetch_open(&self, peer: PeerId) {
        if let Some(s) = self
            .index_of_peer(peer)
            .and_then(|i| self.slab.get(i as usize))
            .and_then(Option::as_ref)
        {
            s.prefetch_open();
        }
    }

    /// Prefetches what sealing a packet for the session in slot `i` touches.
    #[inline]
    pub fn prefetch_seal(&self, i: SessionIndex) {
        if let Some(s) = self.slab.get(i as usize).and_then(Option::as_ref) {
            s.prefetch_seal();
        }
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
        self.by_peer.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
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
    fn key_rollover() {
        let mut s = session(1, 1);
        s.install_key(key(1));
        assert!(s.key_mut(KeyId(0)).is_some() && s.key_mut(KeyId(1)).is_some());
        assert_eq!(s.send_key().map(|k| k.key_id()), Some(KeyId(1)));
        s.retire_previous();
        assert!(s.key_mut(KeyId(0)).is_none());
    }
}
