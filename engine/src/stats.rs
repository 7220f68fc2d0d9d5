//! Per-core statistics published for the control thread: the core keeps its plain counters
//! and, once a second (in housekeeping, never per packet), copies them into relaxed atomics
//! that the control thread reads for metrics. No locks, no allocation.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::packet::{DropCounters, DropReason};
use crate::session::Traffic;
use crate::worker::PollStats;

/// One core's published statistics.
#[derive(Debug)]
pub struct CoreStats {
    drops: Vec<AtomicU64>,
    busy: AtomicU64,
    idle: AtomicU64,
    resets_answered: AtomicU64,
    icmp_errors_sent: AtomicU64,
    rules_version: AtomicU64,
    sessions: AtomicU64,
    flows: AtomicU64,
    endpoints: Vec<[AtomicU64; 4]>,
}

/// A copy of one core's statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreSnapshot {
    /// Every drop reason's name and count.
    pub drops: Vec<(&'static str, u64)>,
    /// Polls that found work.
    pub busy: u64,
    /// Polls that found nothing.
    pub idle: u64,
    /// Clients' first hard resets answered without state.
    pub resets_answered: u64,
    /// ICMP errors the core originated.
    pub icmp_errors_sent: u64,
    /// The rule-table generation in force.
    pub rules_version: u64,
    /// Sessions held.
    pub sessions: u64,
    /// Flows held.
    pub flows: u64,
    /// Per endpoint: ingress bytes, ingress packets, egress bytes, egress packets.
    pub endpoints: Vec<Traffic>,
}

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

impl CoreStats {
    /// Statistics for a core serving `endpoints` endpoints.
    pub fn new(endpoints: usize) -> Self {
        Self {
            drops: (0..DropReason::COUNT).map(|_| AtomicU64::new(0)).collect(),
            busy: AtomicU64::new(0),
            idle: AtomicU64::new(0),
            resets_answered: AtomicU64::new(0),
            icmp_errors_sent: AtomicU64::new(0),
            rules_version: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            flows: AtomicU64::new(0),
            endpoints: (0..endpoints).map(|_| zeros()).collect(),
        }
    }

    /// Called by the core: copies its counters.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn publish(
        &self,
        drops: &DropCounters,
        polls: PollStats,
        rules_version: u64,
        sessions: usize,
        flows: usize,
        traffic: &[Traffic],
    ) {
        for (a, (_, n)) in self.drops.iter().zip(drops.iter()) {
            a.store(n, Ordering::Relaxed);
        }
        self.busy.store(polls.busy, Ordering::Relaxed);
        self.idle.store(polls.idle, Ordering::Relaxed);
        self.resets_answered
            .store(polls.resets_answered, Ordering::Relaxed);
        self.icmp_errors_sent
            .store(polls.icmp_errors_sent, Ordering::Relaxed);
        self.rules_version.store(rules_version, Ordering::Relaxed);
        self.sessions.store(sessions as u64, Ordering::Relaxed);
        self.flows.store(flows as u64, Ordering::Relaxed);
        for (a, t) in self.endpoints.iter().zip(traffic) {
            a[0].store(t.ingress_bytes, Ordering::Relaxed);
            a[1].store(t.ingress_packets, Ordering::Relaxed);
            a[2].store(t.egress_bytes, Ordering::Relaxed);
            a[3].store(t.egress_packets, Ordering::Relaxed);
        }
    }

    /// Read by the control thread.
    pub fn snapshot(&self) -> CoreSnapshot {
        CoreSnapshot {
            drops: DropReason::ALL
                .iter()
                .zip(&self.drops)
                .map(|(r, a)| (r.name(), a.load(Ordering::Relaxed)))
                .collect(),
            busy: self.busy.load(Ordering::Relaxed),
            idle: self.idle.load(Ordering::Relaxed),
            resets_answered: self.resets_answered.load(Ordering::Relaxed),
            icmp_errors_sent: self.icmp_errors_sent.load(Ordering::Relaxed),
            rules_version: self.rules_version.load(Ordering::Relaxed),
            sessions: self.sessions.load(Ordering::Relaxed),
            flows: self.flows.load(Ordering::Relaxed),
            endpoints: self
                .endpoints
                .iter()
                .map(|a| Traffic {
                    ingress_bytes: a[0].load(Ordering::Relaxed),
                    ingress_packets: a[1].load(Ordering::Relaxed),
                    egress_bytes: a[2].load(Ordering::Relaxed),
                    egress_packets: a[3].load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}
