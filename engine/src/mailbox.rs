//! What the control thread and a core say to each other, through two bounded lock-free queues
//! per core. Commands are applied at the top of `poll_once` only, so a burst is processed under
//! exactly one rule table and one set of sessions.
//!
//! Neither side loses a message the other cannot do without when a queue fills (a control
//! thread busy with a storm of handshakes, a core behind on its commands): control keeps the
//! commands a core has no room for in order, in an `Outbox`, and delivers them before anything
//! newer; a core queues punted datagrams and periodic counters, which can be lost (clients
//! retransmit, the next count supersedes), only while a quarter of its report queue is still
//! free (`Mailbox::report`), which keeps that quarter for the reports that cannot.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::crypto::KeyMaterial;
use crate::rules::{GroupMask, RuleTable};
use crate::session::{Remote, SessionInfo, Traffic};
use crate::wire::openvpn::{KeyId, PeerId};

/// Control to core.
#[derive(Debug)]
pub enum Command {
    /// Swap in a new rule table; the old one comes back as `Report::Retired`.
    InstallRules(Arc<RuleTable>),
    /// Swap in a new rule table and, in the same step, give sessions of this core the group
    /// sets that its group numbering gives their users (a reload that names groups anew). No
    /// packet is decided under the new table with a session's old groups, or the reverse.
    /// Peer-ids this core does not hold are skipped. The old table comes back as
    /// `Report::Retired`.
    InstallRulesAndGroups {
        /// The new table.
        rules: Arc<RuleTable>,
        /// Each session whose group set changes, with its new set.
        groups: Vec<(PeerId, GroupMask)>,
    },
    /// A session finished its handshake: its first key.
    AddSession {
        /// Who and where.
        info: SessionInfo,
        /// The key's id.
        key_id: KeyId,
        /// Its material.
        keys: Box<KeyMaterial>,
    },
    /// A renegotiation produced a new key; the current one is kept as the previous. A key the
    /// core refuses ends the session (`Report::Removed`, `Removal::KeysRefused`): left on the
    /// current key, it would fall silent when the client moves to the new one. A peer-id the
    /// core holds no session of is counted (`key_for_unknown_peer`).
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
    /// The appliance stops: first hard resets are answered no more (`DropReason::Stopping`),
    /// so that a client told to restart finds the next daemon, not a session id of this one's
    /// that the next does not know. The control packets of its sessions still go on to control.
    StopAnswering,
}

/// Why a core let a session go (`Report::Removed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Control asked: `Command::RemoveSession`, or an `AddSession` of the same peer-id again.
    Asked,
    /// A session of another peer-id took its client address (`Command::AddSession`).
    Replaced,
    /// It was never added: the core's session table was full.
    TableFull,
    /// Its data-channel keys were refused: the first (`AddSession`; it was never added), or a
    /// renegotiated one (`InstallKey`; it was removed with its flows).
    KeysRefused,
    /// It was never added: its peer-id is another core's (`SessionTable::core_of`).
    WrongCore,
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
    /// A session was removed, or could not be added; its final counters.
    Removed {
        /// The session.
        peer: PeerId,
        /// What it carried.
        traffic: Traffic,
        /// Why: anything but `Asked` means control still holds a connection that no core
        /// carries.
        because: Removal,
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

impl Report {
    /// Whether control can do without this report: a punted datagram (its sender sends it
    /// again) or a periodic count of a live session (the next one supersedes it). Every other
    /// report changes what control knows for good (a session ended, floated, must renegotiate;
    /// a table to free off the data core).
    pub fn is_expendable(&self) -> bool {
        matches!(self, Self::Punted { .. } | Self::Traffic { .. })
    }
}

impl Mailbox {
    /// Queues holding `capacity` messages each.
    pub fn new(capacity: usize) -> Self {
        Self {
            commands: Arc::new(ArrayQueue::new(capacity.max(1))),
            reports: Arc::new(ArrayQueue::new(capacity.max(1))),
        }
    }

    /// Queues a report for control: an expendable one (`Report::is_expendable`) only while a
    /// quarter of the queue is free, so a flood of punts cannot take the room of the reports
    /// control must get; gives the report back when it was not queued.
    ///
    /// # Errors
    /// The report, when there was no room for it.
    pub fn report(&self, r: Report) -> Result<(), Report> {
        let q = &self.reports;
        if r.is_expendable() && q.len() >= q.capacity() - q.capacity() / 4 {
            return Err(r);
        }
        q.push(r)
    }
}

/// Control's side of every core's command queue. A command a core's queue has no room for
/// waits in that core's backlog and goes, in order, before anything sent to the core later
/// (`send` and `flush` deliver the backlog first), so a full queue delays a rule table, a
/// session, a key or a control peer but never loses it. The exception is a control-channel
/// datagram (`Command::Transmit`): it is given up, counted, when it cannot go at once, as a
/// lost datagram would be (the reliability layer sends it again).
#[derive(Debug)]
pub struct Outbox {
    mailboxes: Vec<Mailbox>,
    waiting: Vec<VecDeque<Command>>,
    dropped: u64,
}

impl Outbox {
    /// The senders to these cores' mailboxes (indexed by core).
    pub fn new(mailboxes: Vec<Mailbox>) -> Self {
        let waiting = mailboxes.iter().map(|_| VecDeque::new()).collect();
        Self {
            mailboxes,
            waiting,
            dropped: 0,
        }
    }

    /// Sends `c` to `core` (nothing if there is no such core): after everything waiting for
    /// that core, and into its backlog if its queue is full (a `Transmit` is dropped then).
    pub fn send(&mut self, core: usize, c: Command) {
        let (Some(mb), Some(waiting)) = (self.mailboxes.get(core), self.waiting.get_mut(core))
        else {
            return;
        };
        // Behind what waits, or into a full queue: it waits too (a datagram is given up).
        let Err(c) = (if deliver(mb, waiting) {
            mb.commands.push(c)
        } else {
            Err(c)
        }) else {
            return;
        };
        if matches!(c, Command::Transmit { .. }) {
            self.dropped += 1;
        } else {
            waiting.push_back(c);
        }
    }

    /// Sends a command made by `make` to every core (`send` to each, in core order).
    pub fn broadcast(&mut self, make: impl Fn() -> Command) {
        for core in 0..self.mailboxes.len() {
            self.send(core, make());
        }
    }

    /// Delivers what waits, as far as the queues have room; whether nothing waits any more.
    pub fn flush(&mut self) -> bool {
        let mut all = true;
        for (mb, waiting) in self.mailboxes.iter().zip(&mut self.waiting) {
            all &= deliver(mb, waiting);
        }
        all
    }

    /// Commands waiting for room, over all cores.
    pub fn waiting(&self) -> usize {
        self.waiting.iter().map(VecDeque::len).sum()
    }

    /// Control-channel datagrams given up so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The cores' mailboxes (their reports are read from here).
    pub fn mailboxes(&self) -> &[Mailbox] {
        &self.mailboxes
    }
}

/// Moves what waits for one core into its queue while there is room; whether all of it went.
fn deliver(mb: &Mailbox, waiting: &mut VecDeque<Command>) -> bool {
    while let Some(c) = waiting.pop_front() {
        if let Err(c) = mb.commands.push(c) {
            waiting.push_front(c);
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{Command, Mailbox, Outbox, Report};
    use crate::session::{Remote, Traffic};
    use crate::wire::openvpn::PeerId;

    fn retire(peer: u32) -> Command {
        Command::RetirePreviousKey { peer: PeerId(peer) }
    }

    fn transmit() -> Command {
        let r = Remote { ip: 1, port: 2 };
        Command::Transmit {
            payload: vec![0x20],
            remote: r,
            local: r,
        }
    }

    fn peer_of(c: &Command) -> u32 {
        match c {
            Command::RetirePreviousKey { peer } => peer.0,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_full_command_queue_delays_commands_in_order_and_drops_only_transmits() {
        let mb = Mailbox::new(2);
        let mut out = Outbox::new(vec![mb.clone()]);
        for p in 1..=3 {
            out.send(0, retire(p));
        }
        out.send(0, transmit());
        out.send(0, retire(4));
        assert_eq!((out.waiting(), out.dropped()), (2, 1));
        // The core applies one; the next send delivers what waited first.
        assert_eq!(mb.commands.pop().map(|c| peer_of(&c)), Some(1));
        out.send(0, retire(5));
        assert_eq!(out.waiting(), 2);
        // A datagram behind waiting commands is not sent ahead of them.
        out.send(0, transmit());
        assert_eq!(out.dropped(), 2);
        let mut applied = Vec::new();
        while out.waiting() > 0 {
            while let Some(c) = mb.commands.pop() {
                applied.push(peer_of(&c));
            }
            out.flush();
        }
        applied.extend(std::iter::from_fn(|| mb.commands.pop()).map(|c| peer_of(&c)));
        assert_eq!(applied, [2, 3, 4, 5]);
        assert!(out.flush());
        // With room again, a datagram goes straight to the queue.
        out.send(0, transmit());
        assert!(matches!(mb.commands.pop(), Some(Command::Transmit { .. })));
        assert_eq!(out.dropped(), 2);
        // No such core: nothing happens.
        out.send(7, retire(9));
        assert_eq!(out.waiting(), 0);
    }

    #[test]
    fn punts_and_counts_leave_a_quarter_of_the_report_queue_to_the_rest() {
        let mb = Mailbox::new(8);
        let r = Remote { ip: 1, port: 2 };
        let punt = || Report::Punted {
            payload: vec![0x38],
            remote: r,
            local: r,
            endpoint: 0,
        };
        let count = || Report::Traffic {
            peer: PeerId(1),
            traffic: Traffic::default(),
        };
        let accepted = (0..8).filter(|_| mb.report(punt()).is_ok()).count();
        assert_eq!(accepted, 6);
        assert!(mb.report(count()).is_err());
        assert!(mb.report(Report::ClientExited { peer: PeerId(1) }).is_ok());
        assert!(mb.report(Report::Idle { peer: PeerId(1) }).is_ok());
        assert!(mb.report(Report::Idle { peer: PeerId(2) }).is_err());
        assert!(punt().is_expendable() && count().is_expendable());
        assert!(!Report::Idle { peer: PeerId(1) }.is_expendable());
    }
}
