//! What the control thread and a core say to each other, through two bounded lock-free queues
//! per core. Commands are applied at the top of `poll_once` only, so a burst is processed under
//! exactly one rule table and one set of sessions.

use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::crypto::KeyMaterial;
use crate::rules::RuleTable;
use crate::session::{Remote, SessionInfo, Traffic};
use crate::wire::openvpn::{KeyId, PeerId};

/// Control to core.
#[derive(Debug)]
pub enum Command {
    /// Swap in a new rule table; the old one comes back as `Report::Retired`.
    InstallRules(Arc<RuleTable>),
    /// A session finished its handshake: its first key.
    AddSession {
        /// Who and where.
        info: SessionInfo,
        /// The key's id.
        key_id: KeyId,
        /// Its material.
        keys: Box<KeyMaterial>,
    },
    /// A renegotiation produced a new key; the current one is kept as the previous.
    InstallKey {
        /// The session.
        peer: PeerId,
        /// The new key's id.
        key_id: KeyId,
        /// Its material.
        keys: Box<KeyMaterial>,
    },
    /// The transition window is over: drop the previous key.
    RetirePreviousKey {
        /// The session.
        peer: PeerId,
    },
    /// The session ended (disconnect, terminate, timeout, revocation): forget it and its flows.
    RemoveSession {
        /// The session.
        peer: PeerId,
    },
    /// A control-channel session exists at `remote` (`present`), or no longer does: with the
    /// cookie key configured, a core punts control packets (other than first resets, which it
    /// answers, and echoes of our session id, which it checks) only from such addresses.
    ControlPeer {
        /// The client's address.
        remote: Remote,
        /// Whether it has a session now.
        present: bool,
    },
    /// Send a control-channel datagram to a client.
    Transmit {
        /// The UDP payload (an OpenVPN control packet).
        payload: Vec<u8>,
        /// The client.
        remote: Remote,
        /// The endpoint's listener.
        local: Remote,
    },
}

/// Core to control.
#[derive(Debug)]
pub enum Report {
    /// The previous rule table, to be freed off the data core.
    Retired(Arc<RuleTable>),
    /// A control-channel datagram from a client.
    Punted {
        /// The UDP payload.
        payload: Vec<u8>,
        /// The client.
        remote: Remote,
        /// The listener it reached.
        local: Remote,
        /// The endpoint of that listener.
        endpoint: u16,
    },
    /// The client said goodbye on the data channel (OCC exit).
    ClientExited {
        /// The session.
        peer: PeerId,
    },
    /// Nothing heard from the session for `ping-restart` seconds (reported once).
    Idle {
        /// The session.
        peer: PeerId,
    },
    /// A session's send counter nears its end: renegotiate.
    RenegotiateSoon {
        /// The session.
        peer: PeerId,
    },
    /// An authenticated packet came from a new outer address; the session follows it.
    Floated {
        /// The session.
        peer: PeerId,
        /// Its new address.
        remote: Remote,
    },
    /// A session was removed; its final counters.
    Removed {
        /// The session.
        peer: PeerId,
        /// What it carried.
        traffic: Traffic,
    },
    /// Periodic counters of live sessions.
    Traffic {
        /// The session.
        peer: PeerId,
        /// What it carried so far.
        traffic: Traffic,
    },
}

/// One core's pair of queues.
#[derive(Clone, Debug)]
pub struct Mailbox {
    /// Control to core.
    pub commands: Arc<ArrayQueue<Command>>,
    /// Core to control.
    pub reports: Arc<ArrayQueue<Report>>,
}

impl Mailbox {
    /// Queues holding `capacity` messages each.
    pub fn new(capacity: usize) -> Self {
        Self {
            commands: Arc::new(ArrayQueue::new(capacity.max(1))),
            reports: Arc::new(ArrayQueue::new(capacity.max(1))),
        }
    }
}
