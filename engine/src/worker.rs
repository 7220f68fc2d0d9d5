//! `Worker`: everything one core owns (its ports' queues, sessions, flows, neighbours, rule
//! table, counters) and `poll_once`, the loop body of a poll-mode core.
//!
//! Order inside `poll_once(now)`: apply the mailbox (rule swaps happen here, so a burst sees one
//! table), take packets handed over by other cores, receive a burst from each port and run it
//! through the pipeline (`pipeline` module), transmit each port's batch, free dropped buffers in
//! bulk, and do a bounded slice of housekeeping (flow expiry, ARP retries).
//!
//! This is one of the two shells allowed to read the clock; it turns `now` into whole seconds
//! for the tables.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use crossbeam::queue::ArrayQueue;

use crate::cookie::CookieKey;
use crate::crypto::DataKey;
use crate::flow::fragments::FragmentMap;
use crate::flow::{FlowTable, PortRange, Timeouts};
use crate::mailbox::{Command, Mailbox, Removal, Report};
use crate::neighbour::{Housekeeping, NeighbourTable};
use crate::packet::prefetch::{prefetch, prefetch_line};
use crate::packet::{Burst, DropCounters, DropReason, PacketBuf, BURST_SIZE};
use crate::pipeline::Hint;
use crate::port::Port;
use crate::punt::PuntLimiter;
use crate::reassembly::Reassembly;
use crate::rules::RuleTable;
use crate::session::{Session, SessionTable, Traffic};
use crate::stages::{Lap, Stage, StageCycles};
use crate::wire::ethernet::Mac;

/// Bytes of each received frame's headers requested at the start of a burst (outer Ethernet,
/// IPv4, UDP and the P_DATA_V2 header; or Ethernet, IPv4 and TCP).
const HEADER_BYTES: usize = 64;
/// Of a frame longer than `BODY_FROM` bytes, this many bytes past its header are requested
/// while the packet before it is processed (`body_ahead`).
const BODY_AHEAD: usize = 4 * 64;
/// Frames of at most this many bytes have no body requested: the header's lines and the next
/// one or two are all there is, and the requests cost short packets more than they saved.
const BODY_FROM: usize = 256;
/// Sessions whose unreported float a core remembers (a report queue full for long enough to
/// lose more is counted, `report_queue_full`, and control hears of them at their next float).
const UNREPORTED_FLOATS: usize = 256;
/// How many packets ahead of the one being processed its session's state is requested.
const SESSION_AHEAD: usize = 4;
/// Session slots the keepalive sweep visits in one poll at most (a busy core polls far more
/// than a hundred thousand times a second, so it still visits millions of slots a second).
const SWEEP_BUDGET: u64 = 64;
/// A session reports its traffic counters every this many sweeps (seconds).
const TRAFFIC_LAPS: u64 = 5;
/// Commands from control applied in one poll at most: a few microseconds each (a session's
/// keys set up, or its flows removed), so a mass disconnect or reconnect cannot hold the core
/// for milliseconds while its receive rings overflow; a busy core still applies millions a
/// second, far more than control's handshakes produce.
const COMMAND_BUDGET: usize = 64;

/// A port's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// Its MAC address.
    pub mac: Mac,
    /// The appliance's address on it.
    pub ip: u32,
    /// The on-link prefix length.
    pub prefix_len: u8,
    /// The default next hop out of it, if any.
    pub gateway: Option<u32>,
    /// Its MTU: the longest IPv4 packet it sends whole. An inner packet from a client that is
    /// longer leaves in fragments, or is answered with an ICMP fragmentation needed if it may
    /// not be fragmented (`pipeline::fragment`). The outside port's datagrams to clients go by
    /// `WorkerConfig::outside_mtu`.
    pub mtu: u16,
}

impl PortConfig {
    /// Whether `ip` is on-link.
    #[inline]
    pub fn on_link(&self, ip: u32) -> bool {
        // The bits `ip` differs in, shifted past the host part: none left means the same
        // network (a /0 shifts all 32 out; in 64 bits the shift is always defined).
        u64::from(ip ^ self.ip) >> (32 - u32::from(self.prefix_len.min(32))) == 0
    }

    /// Whether `ip` is the port's subnet's broadcast or network address (none on a /31 or
    /// /32, RFC 3021): no host's.
    pub fn is_subnet_broadcast(&self, ip: u32) -> bool {
        crate::rules::Ipv4Cidr::new_truncating(self.ip, self.prefix_len).is_broadcast(ip)
    }

    /// Whether `ip` can be one host's address as seen from this port: `l2::is_one_host`, and
    /// not the subnet's broadcast or network address. What the appliance answers (a ping, a
    /// first reset) goes only to such a source.
    pub fn is_one_host(&self, ip: u32) -> bool {
        crate::pipeline::l2::is_one_host(ip) && !self.is_subnet_broadcast(ip)
    }
}

/// An OpenVPN UDP listener: clients of `endpoint` reach it at `ip:port` on the outside port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Address.
    pub ip: u32,
    /// UDP port.
    pub port: u16,
    /// Endpoint index in the rule table.
    pub endpoint: u16,
}

/// How a core is set up.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This core's index.
    pub core: usize,
    /// How many cores share the work.
    pub cores: usize,
    /// The port clients come through.
    pub outside: u16,
    /// Every port's addresses, indexed like the ports.
    pub ports: Vec<PortConfig>,
    /// The OpenVPN listeners.
    pub listeners: Vec<Listener>,
    /// Sessions this core can hold.
    pub session_capacity: usize,
    /// Flows this core can hold.
    pub flow_capacity: usize,
    /// Flows one session may hold on this core (`flow::default_flows_per_session` of
    /// `flow_capacity` unless configured; set it again after changing `flow_capacity`): past
    /// it the session's new flows are dropped, `session_flows_full`.
    pub flows_per_session: usize,
    /// Neighbours this core can hold.
    pub neighbour_capacity: usize,
    /// TCP MSS clamp for SYNs in both directions (the guide's `mssfix 1328`).
    pub mss_clamp: u16,
    /// Flow idle timeouts.
    pub timeouts: Timeouts,
    /// Flow slots the expiry sweep examines in one poll at most. The sweep goes round the whole
    /// flow table once every eighth of the shortest timeout (1 to 60 s; 7 s by default),
    /// spread evenly (`Worker::sweep_flows`), however often or seldom the core polls: an idle
    /// flow is removed at most that long after its timeout.
    pub expiry_budget: usize,
    /// Flows of ended sessions removed per poll at most (`FlowTable::remove_retired`): a
    /// session's end never walks all its flows in one poll.
    pub removal_budget: usize,
    /// Data-channel keepalive: send a ping to a session after this many seconds without
    /// sending it anything, and report it idle after this many seconds without hearing from it
    /// (OpenVPN's `ping` and `ping-restart` as pushed to clients); `None`: off.
    pub keepalive: Option<(u32, u32)>,
    /// The outside port's MTU: datagrams to clients longer than this leave in fragments.
    pub outside_mtu: u16,
    /// Datagrams from clients this core reassembles at once at most.
    pub reassembly_capacity: usize,
    /// Control-channel packets punted per source (address and port): a burst, and this many
    /// more a second (`punt::PuntLimiter`; a burst of 0: no limit).
    pub punt_budget: (u32, u32),
    /// The key of the server's stateless session ids, shared with control (its clock origin
    /// is the workers' `epoch`): the core answers clients' first hard resets itself and never
    /// punts them (`cookie`). `None`: first resets are punted like other control packets.
    pub cookies: Option<Arc<CookieKey>>,
    /// Answers to first hard resets per source address: a burst, and this many more a second.
    pub answer_budget: (u32, u32),
    /// ICMP errors (time exceeded, fragmentation needed) the core sends each address: a burst,
    /// and this many more a second (RFC 1812 §4.3.2.8: a router limits the errors it
    /// originates).
    pub icmp_error_budget: (u32, u32),
    /// Control-channel sessions (of all endpoints) the core can know the addresses of; past
    /// it, the core stops filtering control packets by address (`punt::ControlPeers`).
    pub control_peer_capacity: usize,
}

impl WorkerConfig {
    /// A configuration with sensible capacities for `ports`, clients on port `outside`.
    pub fn new(
        core: usize,
        cores: usize,
        outside: u16,
        ports: Vec<PortConfig>,
        listeners: Vec<Listener>,
    ) -> Self {
        Self {
            core,
            cores: cores.max(1),
            outside,
            ports,
            listeners,
            session_capacity: 16_384,
            flow_capacity: 262_144,
            flows_per_session: crate::flow::default_flows_per_session(262_144),
            neighbour_capacity: 4096,
            mss_clamp: 1328,
            timeouts: Timeouts::default(),
            expiry_budget: 64,
            removal_budget: 64,
            keepalive: Some((10, 60)),
            outside_mtu: 1500,
            reassembly_capacity: 64,
            punt_budget: DEFAULT_PUNT_BUDGET,
            cookies: None,
            answer_budget: DEFAULT_ANSWER_BUDGET,
            icmp_error_budget: DEFAULT_ICMP_ERROR_BUDGET,
            control_peer_capacity: 65_536,
        }
    }
}

/// The seconds the flow expiry sweep takes to go round the table: an eighth of the shortest
/// timeout, a second at least and a minute at most (7 s with the default timeouts, ICMP's 60
/// s the shortest). An idle flow is removed that long after its timeout at most; a shorter
/// lap costs a busy core more (with a million flows, a lap a second against 7 s: 1 to 3%
/// fewer 64-byte packets a second, bench/RESULTS.md, 2026-12-06).
fn flow_lap(t: &Timeouts) -> u64 {
    let shortest = t
        .tcp_established
        .min(t.tcp_transitory)
        .min(t.udp)
        .min(t.icmp);
    u64::from(shortest / 8).clamp(1, 60)
}

/// Where a sweep round a table of slots is, a lap every so many seconds spread evenly over
/// them: the slots it has visited since the cores' epoch (lap `n / slots`, slot `n % slots`).
#[derive(Clone, Copy, Debug, Default)]
struct Sweep {
    visited: u64,
}

impl Sweep {
    /// What a poll at `elapsed` visits of a table of `slots` gone round once every `lap`
    /// seconds: from where the sweep is to where it should be by now, `budget` at most. A core
    /// held up longer than a lap resumes one lap behind, not further.
    fn due(
        &mut self,
        elapsed: std::time::Duration,
        (slots, lap): (u64, u64),
        budget: u64,
    ) -> Range<u64> {
        let due = elapsed.as_secs().saturating_mul(slots).saturating_add(
            u64::from(elapsed.subsec_nanos()).saturating_mul(slots) / 1_000_000_000,
        ) / lap.max(1);
        let at = self.visited.max(due.saturating_sub(slots));
        let end = due.min(at.saturating_add(budget)).max(at);
        self.visited = end;
        at..end
    }
}

/// The bytes of a received frame of `len` bytes to request a packet ahead, past those its
/// header's request covered: the first lines of its body. The AEAD then reads the body front
/// to back and the hardware's stream prefetcher takes the rest, as it does unasked only when
/// the frames lie in ascending order of address, one after the other. Buffers come back in
/// any order (a LIFO pool, as DPDK's mempool cache is, hands a burst's out in the reverse of
/// the order they were freed in): with the bench's pool alternating between ascending and
/// descending chunks, the descending ones took 7% longer a packet at 1400 bytes without this.
/// Requesting every line of the body instead took the line-fill buffers the sessions' lines
/// need (bench/RESULTS.md, 2026-12-06).
fn body_ahead(len: usize) -> Range<usize> {
    if len <= BODY_FROM {
        return 0..0;
    }
    HEADER_BYTES..len.min(HEADER_BYTES + BODY_AHEAD)
}

/// IPv4 identifications.
const IDENTS: u32 = 1 << 16;

/// The cores that share the identifications out (`Worker::ident_period`).
fn cores_sharing_idents(cfg: &WorkerConfig) -> u32 {
    u32::try_from(cfg.cores).unwrap_or(IDENTS).clamp(1, IDENTS)
}

/// `WorkerConfig::punt_budget` unless configured: a handshake's worth of control packets per
/// source at once, 32 a second after.
pub const DEFAULT_PUNT_BUDGET: (u32, u32) = (64, 32);
/// `WorkerConfig::answer_budget` unless configured.
pub const DEFAULT_ANSWER_BUDGET: (u32, u32) = (32, 8);
/// The tunnel's MTU: the `tun-mtu` control pushes to clients. An inner packet to a client that
/// is longer is sent in fragments, each sealed on its own, or answered with an ICMP
/// fragmentation needed if it may not be fragmented (`pipeline::fragment`).
pub const TUNNEL_MTU: u16 = 1500;
/// `WorkerConfig::icmp_error_budget` unless configured.
pub const DEFAULT_ICMP_ERROR_BUDGET: (u32, u32) = (16, 8);

/// Per-endpoint traffic of this core.
pub type EndpointTraffic = Vec<Traffic>;

/// Polls that found work versus polls that did not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Polls that received or sent at least one packet.
    pub busy: u64,
    /// Polls that found nothing to do.
    pub idle: u64,
    /// Clients' first hard resets answered without state (`cookie`).
    pub resets_answered: u64,
    /// ICMP errors the core originated (time exceeded, fragmentation needed; to clients and to
    /// hosts).
    pub icmp_errors_sent: u64,
}

/// A ring of packets (with the port they arrived on) from one core to another.
pub type HandoffRing<B> = Arc<ArrayQueue<(u16, B)>>;

/// The rings a core uses to hand packets to the core that owns their session or flow.
pub struct Handoff<B> {
    /// Ring to each core (`None` for itself).
    pub to: Vec<Option<HandoffRing<B>>>,
    /// This core's incoming ring.
    pub from: HandoffRing<B>,
}

impl<B> Handoff<B> {
    /// Rings for `cores` cores, each holding `capacity` packets; element `i` belongs to core i.
    pub fn mesh(cores: usize, capacity: usize) -> Vec<Self> {
        let rings: Vec<HandoffRing<B>> = (0..cores)
            .map(|_| Arc::new(ArrayQueue::new(capacity.max(1))))
            .collect();
        (0..cores)
            .map(|me| Self {
                to: (0..cores)
                    .map(|c| (c != me).then(|| Arc::clone(&rings[c])))
                    .collect(),
                from: Arc::clone(&rings[me]),
            })
            .collect()
    }
}

/// One poll-mode core.
pub struct Worker<P: Port> {
    pub(crate) cfg: WorkerConfig,
    pub(crate) ports: Vec<P>,
    pub(crate) rules: Arc<RuleTable>,
    /// Which installed rule table `rules` is, counted by this core from 1 (0 is never used):
    /// a flow's cached forwarding decision is valid only under the epoch that made it.
    pub(crate) rules_epoch: u32,
    pub(crate) sessions: SessionTable,
    pub(crate) flows: FlowTable,
    pub(crate) neighbours: NeighbourTable<P::Buf>,
    /// Datagrams from clients arriving in fragments (`pipeline::fragment`).
    pub(crate) reassembly: Reassembly<P::Buf>,
    /// How the first fragments of clients' inner datagrams were translated.
    pub(crate) fragments_out: FragmentMap<crate::pipeline::fragment::FragmentsOut>,
    /// Where the first fragments of inner datagrams from target subnets went.
    pub(crate) fragments_in: FragmentMap<crate::pipeline::fragment::FragmentsIn>,
    /// Later fragments that came before their first (`pipeline::fragment::Early`).
    pub(crate) early: Vec<crate::pipeline::fragment::Early<P::Buf>>,
    /// A datagram just reassembled, with its port (`process` receives it at once).
    pub(crate) reassembled: Option<(u16, P::Buf)>,
    /// The IPv4 identification of the next datagram sent to a client or cut into fragments;
    /// steps by the number of cores from this core's index and wraps at `ident_period`, so
    /// cores sending from one address never take each other's (`take_ident`).
    pub(crate) next_ident: u16,
    /// The identifications the cores share out: the largest multiple of the number of cores
    /// up to 65,536, so that a core's sequence wraps back onto its own numbers.
    pub(crate) ident_period: u32,
    /// Per-source budgets of control-channel packets punted to control.
    pub(crate) punt_limiter: PuntLimiter,
    /// Per-address budgets of stateless answers to first hard resets.
    pub(crate) answer_limiter: PuntLimiter,
    /// Whether the appliance stops (`Command::StopAnswering`): first resets are not answered.
    pub(crate) stopping: bool,
    /// ICMP errors the core originates, per client address (`WorkerConfig::icmp_error_budget`).
    pub(crate) icmp_limiter: PuntLimiter,
    /// The addresses control has a control-channel session with (`Command::ControlPeer`).
    pub(crate) control_peers: crate::punt::ControlPeers,
    pub(crate) drops: DropCounters,
    pub(crate) endpoint_traffic: EndpointTraffic,
    pub(crate) mailbox: Mailbox,
    pub(crate) handoff: Option<Handoff<P::Buf>>,
    pub(crate) tx: Vec<Burst<P::Buf>>,
    pub(crate) trash: Vec<P::Buf>,
    pub(crate) decrypted: Vec<crate::pipeline::client::Decrypted<P::Buf>>,
    housekeeping: Vec<Housekeeping<P::Buf>>,
    /// Sessions whose float control has not heard of (the report found its queue full): told
    /// again once a second (`UNREPORTED_FLOATS` at most; preallocated).
    pub(crate) unreported_floats: Vec<crate::wire::openvpn::PeerId>,
    epoch: Instant,
    pub(crate) stats: PollStats,
    pub(crate) now_secs: u32,
    /// `now` of the current poll, from `epoch`.
    pub(crate) elapsed: std::time::Duration,
    /// The second the once-a-second work (neighbour timers, published counters) last ran.
    last_second: u32,
    /// The keepalive sweep over the session slots (`sweep_sessions`).
    session_sweep: Sweep,
    /// The expiry sweep over the flow slots (`sweep_flows`), and the seconds it takes to go
    /// round them (`flow_lap`).
    flow_sweep: Sweep,
    flow_lap: u64,
    published: Option<Arc<crate::stats::CoreStats>>,
    pub(crate) stage_cycles: StageCycles,
}

impl<P: Port> Worker<P> {
    /// A core with its ports (indexed like `cfg.ports`) and mailbox; `epoch` is the clock
    /// origin all cores share.
    pub fn new(
        cfg: WorkerConfig,
        ports: Vec<P>,
        mailbox: Mailbox,
        handoff: Option<Handoff<P::Buf>>,
        epoch: Instant,
    ) -> Self {
        let range = PortRange::for_core(cfg.core, cfg.cores);
        let flow_lap = flow_lap(&cfg.timeouts);
        let mut flows = FlowTable::new(cfg.flow_capacity, range, cfg.timeouts);
        flows.set_flows_per_owner(cfg.flows_per_session);
        // Flows are owned by session slots, `0..session_capacity`.
        flows.reserve_owners(cfg.session_capacity.max(1));
        Self {
            sessions: SessionTable::for_core(cfg.session_capacity, cfg.cores),
            flows,
            neighbours: NeighbourTable::new(cfg.neighbour_capacity),
            reassembly: Reassembly::new(
                cfg.reassembly_capacity,
                crate::pipeline::fragment::REASSEMBLED_MAX,
            ),
            reassembled: None,
            fragments_out: FragmentMap::new(1024),
            fragments_in: FragmentMap::new(1024),
            early: Vec::with_capacity(crate::pipeline::fragment::EARLY_MAX),
            punt_limiter: PuntLimiter::new(4096, cfg.punt_budget.0, cfg.punt_budget.1),
            answer_limiter: PuntLimiter::new(4096, cfg.answer_budget.0, cfg.answer_budget.1),
            stopping: false,
            icmp_limiter: PuntLimiter::new(4096, cfg.icmp_error_budget.0, cfg.icmp_error_budget.1),
            control_peers: crate::punt::ControlPeers::new(cfg.control_peer_capacity),
            next_ident: cfg.core as u16,
            ident_period: IDENTS / cores_sharing_idents(&cfg) * cores_sharing_idents(&cfg),
            tx: ports.iter().map(|_| Burst::new()).collect(),
            trash: Vec::with_capacity(4 * crate::packet::BURST_SIZE),
            decrypted: Vec::with_capacity(crate::pipeline::client::DECRYPTED_MAX),
            housekeeping: Vec::with_capacity(64),
            unreported_floats: Vec::with_capacity(UNREPORTED_FLOATS),
            rules: Arc::new(RuleTable::default()),
            rules_epoch: 1,
            drops: DropCounters::default(),
            endpoint_traffic: Vec::new(),
            cfg,
            ports,
            mailbox,
            handoff,
            epoch,
            stats: PollStats::default(),
            now_secs: 0,
            elapsed: std::time::Duration::ZERO,
            last_second: 0,
            session_sweep: Sweep::default(),
            flow_sweep: Sweep::default(),
            flow_lap,
            published: None,
            stage_cycles: StageCycles::default(),
        }
    }

    /// One iteration of the core's loop.
    pub fn poll_once(&mut self, now: Instant) {
        let mut lap = Lap::start();
        self.elapsed = now.saturating_duration_since(self.epoch);
        self.now_secs = self.elapsed.as_secs() as u32;
        let mut work = self.apply_commands();
        work |= self.take_handoffs();
        lap.lap(&mut self.stage_cycles, Stage::Commands);
        // The burst lives on this frame's stack (only its length is initialised): no copy of
        // its slots in or out of the worker per poll.
        let mut rx = Burst::new();
        for p in 0..self.ports.len() {
            let port = p as u16;
            let received = self.ports[p].recv(&mut rx, &mut self.drops);
            lap.lap(&mut self.stage_cycles, Stage::Receive);
            if received == 0 {
                continue;
            }
            self.stage_cycles.count_packets(received);
            work = true;
            // The burst in passes, so that the memory each packet needs is requested before
            // the packet waits for it: the headers of every packet; then the index lines that
            // name each packet's session (and, from a target subnet, its flow), read into
            // `hints`; then the packets themselves, with their sessions' fields and keys
            // requested a few packets ahead (a whole burst of sessions, 7 to 10 lines each, would
            // not stay in L1 until used), and the first lines of the next frame's body
            // (`body_ahead`).
            let from_clients = port == self.cfg.outside;
            // Where each frame's body to request starts, and its length (0: none).
            let mut bodies = [(std::ptr::null::<u8>(), 0); BURST_SIZE];
            for (b, body) in rx.as_slice().iter().zip(bodies.iter_mut()) {
                let at = b.data().as_ptr();
                prefetch(at, HEADER_BYTES);
                let span = body_ahead(b.len());
                *body = (at.wrapping_add(span.start), span.len());
                if !from_clients {
                    // The way back to a client writes in front of the frame (its headroom,
                    // which no NIC wrote): that line too, or every reply stalls on a write
                    // miss there.
                    prefetch_line(at.wrapping_sub(crate::pipeline::network::RETURN_PREPEND));
                }
            }
            let mut hints = [Hint::default(); BURST_SIZE];
            if from_clients {
                self.warm_client_burst(rx.as_slice(), &mut hints);
            } else {
                self.warm_network_burst(rx.as_slice(), &mut hints);
            }
            lap.lap(&mut self.stage_cycles, Stage::LookAhead);
            for h in hints.iter().take(SESSION_AHEAD) {
                self.prefetch_session(h, from_clients);
            }
            for ((i, buf), &hint) in rx.drain().enumerate().zip(hints.iter()) {
                if let Some(h) = hints.get(i + SESSION_AHEAD) {
                    self.prefetch_session(h, from_clients);
                }
                if let Some(&(at, len)) = bodies.get(i + 1).filter(|(_, len)| *len > 0) {
                    prefetch(at, len);
                }
                self.process(port, buf, hint);
            }
            lap.lap(&mut self.stage_cycles, Stage::Process);
            self.forward_decrypted();
            lap.lap(&mut self.stage_cycles, Stage::Forward);
        }
        work |= self.flush_all();
        lap.lap(&mut self.stage_cycles, Stage::Transmit);
        self.free_trash();
        self.housekeep();
        lap.lap(&mut self.stage_cycles, Stage::Housekeeping);
        if work {
            self.stats.busy += 1;
        } else {
            self.stats.idle += 1;
        }
    }

    /// The session slot a frame will most likely use: the look-ahead's, or the owner of the
    /// flow it found (read now, when the flow's line has had time to arrive).
    #[inline]
    pub(crate) fn session_hint(&self, h: &Hint) -> Option<u32> {
        h.session
            .or_else(|| h.flow.and_then(|slot| self.flows.owner_at(slot)))
    }

    /// Requests the session state the packet of `h` will use: for opening (from a client) or
    /// sealing.
    #[inline]
    fn prefetch_session(&self, h: &Hint, open: bool) {
        let Some(slot) = self.session_hint(h) else {
            return;
        };
        let len = usize::from(h.aead_len);
        if open {
            self.sessions.prefetch_open(slot, len);
        } else {
            self.sessions.prefetch_seal(slot, len);
        }
    }

    /// Routes one received packet to its direction.
    pub(crate) fn process(&mut self, port: u16, buf: P::Buf, hint: Hint) {
        if port == self.cfg.outside {
            self.handle_client_side(port, buf);
            // A fragment that completed a datagram: the datagram, now, in its place (the
            // fragments of a client's inner datagram must stay in order).
            if self.reassembled.is_some() {
                self.receive_reassembled();
            }
        } else {
            self.handle_network_side(port, buf, hint);
        }
    }

    /// Swaps in a new rule table; every flow decides again under it (on its next packet), and
    /// the old table goes back to control to be freed.
    fn install_rules(&mut self, new: Arc<RuleTable>) {
        let n = new.endpoints();
        if self.endpoint_traffic.len() < n {
            self.endpoint_traffic.resize(n, Traffic::default());
        }
        let old = std::mem::replace(&mut self.rules, new);
        self.rules_epoch = self.rules_epoch.checked_add(1).unwrap_or(1);
        self.report(Report::Retired(old));
    }

    /// Applies at most `COMMAND_BUDGET` commands from control (the rest wait for the next
    /// polls, in order).
    fn apply_commands(&mut self) -> bool {
        let mut any = false;
        for _ in 0..COMMAND_BUDGET {
            let Some(cmd) = self.mailbox.commands.pop() else {
                break;
            };
            any = true;
            match cmd {
                Command::InstallRules(new) => self.install_rules(new),
                Command::InstallRulesAndGroups { rules, groups } => {
                    // Between two bursts, as one step with the table.
                    for (peer, mask) in groups {
                        if let Some(s) = self
                            .sessions
                            .index_of_peer(peer)
                            .and_then(|i| self.sessions.get_mut(i))
                        {
                            s.groups = mask;
                        }
                    }
                    self.install_rules(rules);
                }
                Command::AddSession { info, .. }
                    if self.sessions.core_of(info.peer) != self.cfg.core =>
                {
                    // Another core's peer-id (a misdirected command): its packets would all be
                    // handed to that core, and it would hold an index entry of this core's.
                    self.report(Report::Removed {
                        peer: info.peer,
                        traffic: Traffic::default(),
                        because: Removal::WrongCore,
                    });
                }
                Command::AddSession { info, key_id, keys } => match DataKey::new(key_id, &keys) {
                    Ok(k) => {
                        // The sessions it replaces (its peer-id's, its address's) go with their
                        // flows, whose decisions were made for their groups (the new session
                        // may take over a slot, which the flows name as owner), and control
                        // hears of them.
                        let replaced = self.sessions.remove_replaced(info.peer, info.client_ip);
                        let mut freed = None;
                        for (i, old) in replaced.into_iter().flatten() {
                            self.retire_slot(i);
                            freed = Some(i);
                            let peer = old.id().peer();
                            self.report(Report::Removed {
                                peer,
                                traffic: old.traffic(),
                                because: if peer == info.peer {
                                    Removal::Asked
                                } else {
                                    Removal::Replaced
                                },
                            });
                        }
                        if let (Some(i), false) = (freed, self.sessions.has_room()) {
                            // A full table, the other slots held or taken: the new session
                            // takes a replaced one's slot now, as before slots were held, its
                            // flows removed at once (at most `flows_per_session` of them).
                            self.flows.remove_owner(i);
                            self.sessions.release(i);
                        }
                        // (Slots held for ended sessions' flows count as taken.)
                        let full = !self.sessions.has_room();
                        if let Err(s) = self.sessions.insert(Session::new(info, k, self.now_secs)) {
                            self.report(Report::Removed {
                                peer: s.id().peer(),
                                traffic: Traffic::default(),
                                because: if full {
                                    Removal::TableFull
                                } else {
                                    Removal::WrongCore
                                },
                            });
                        }
                    }
                    Err(_) => {
                        self.report(Report::Removed {
                            peer: info.peer,
                            traffic: Traffic::default(),
                            because: Removal::KeysRefused,
                        });
                    }
                },
                Command::InstallKey { peer, key_id, keys } => {
                    let Some(i) = self.sessions.index_of_peer(peer) else {
                        // Control hears (or heard) of the session's end in its `Removed`.
                        self.drops.bump(DropReason::KeyForUnknownPeer);
                        continue;
                    };
                    match DataKey::new(key_id, &keys) {
                        Ok(k) => {
                            if let Some(s) = self.sessions.get_mut(i) {
                                s.install_key(k);
                            }
                        }
                        Err(_) => {
                            // Kept on its current key, the session would fall silent once the
                            // client moves to the new one: it ends, with its flows, and control
                            // ends the connection (the client starts over).
                            if let Some((i, s)) = self.sessions.remove_peer(peer) {
                                self.retire_slot(i);
                                self.report(Report::Removed {
                                    peer,
                                    traffic: s.traffic(),
                                    because: Removal::KeysRefused,
                                });
                            }
                        }
                    }
                }
                Command::RetirePreviousKey { peer } => {
                    if let Some(s) = self
                        .sessions
                        .index_of_peer(peer)
                        .and_then(|i| self.sessions.get_mut(i))
                    {
                        s.retire_previous();
                    }
                }
                Command::RemoveSession { peer } => {
                    if let Some((i, s)) = self.sessions.remove_peer(peer) {
                        self.retire_slot(i);
                        self.report(Report::Removed {
                            peer,
                            traffic: s.traffic(),
                            because: Removal::Asked,
                        });
                    }
                }
                Command::Transmit {
                    payload,
                    remote,
                    local,
                } => self.transmit_control(&payload, remote, local),
                Command::ControlPeer { remote, present } => {
                    self.control_peers.set(remote, present);
                }
                Command::StopAnswering => self.stopping = true,
            }
        }
        any
    }

    /// The flows of the session just removed from slot `i` go, a bounded number a poll
    /// (`housekeep`); until the last is gone the slot is held from new sessions, so that
    /// none takes over (or loses with them) flows that name the slot as their owner.
    fn retire_slot(&mut self, i: crate::session::SessionIndex) {
        if self.flows.retire_owner(i) {
            self.sessions.hold(i);
        }
    }

    fn take_handoffs(&mut self) -> bool {
        let Some(h) = &self.handoff else { return false };
        let from = Arc::clone(&h.from);
        let mut any = false;
        for _ in 0..crate::packet::BURST_SIZE {
            let Some((port, buf)) = from.pop() else { break };
            any = true;
            self.process(port, buf, Hint::default());
        }
        self.forward_decrypted();
        any
    }

    /// Hands `buf` (received on `port`) to `core`.
    pub(crate) fn hand_off(&mut self, core: usize, port: u16, buf: P::Buf) {
        let ring = self
            .handoff
            .as_ref()
            .and_then(|h| h.to.get(core))
            .and_then(Option::as_ref);
        match ring {
            Some(r) => {
                if let Err((_, b)) = r.push((port, buf)) {
                    self.drop_packet(b, DropReason::HandoffRingFull);
                }
            }
            None => self.drop_packet(buf, DropReason::HandoffRingFull),
        }
    }

    /// Counts and discards a packet. Out of line and cold: every check on the packet path
    /// ends here when it fails, and inlined, the pushes of all of them crowded the hot code.
    #[cold]
    #[inline(never)]
    pub(crate) fn drop_packet(&mut self, buf: P::Buf, reason: DropReason) {
        self.drops.bump(reason);
        self.trash.push(buf);
    }

    /// Why a packet of a flow owned by slot `owner`, which holds no session, goes no further:
    /// `no_flow` when the slot is held for an ended session's flows (`retire_slot`), as the
    /// flow is one of them, left for `remove_retired` and gone a few polls later; otherwise
    /// `no_session_for_destination`.
    #[cold]
    #[inline(never)]
    pub(crate) fn ownerless_reason(&self, owner: u32) -> DropReason {
        if self.sessions.is_held(owner) {
            DropReason::NoFlow
        } else {
            DropReason::NoSessionForDestination
        }
    }

    /// Discards a packet that was consumed (punted, answered in place elsewhere).
    #[inline]
    pub(crate) fn consume(&mut self, buf: P::Buf) {
        self.trash.push(buf);
    }

    /// Queues a finished frame for `port`, sending the batch when it is full.
    #[inline]
    pub(crate) fn enqueue_tx(&mut self, port: u16, buf: P::Buf) {
        match self.tx.get_mut(usize::from(port)) {
            Some(batch) if batch.spare() > 0 => {
                if let Err(buf) = batch.push(buf) {
                    self.drop_packet(buf, DropReason::TxRingFull);
                }
            }
            _ => self.enqueue_tx_full(port, buf),
        }
    }

    /// `enqueue_tx` when the batch is full (send it first) or the port does not exist.
    #[cold]
    #[inline(never)]
    fn enqueue_tx_full(&mut self, port: u16, buf: P::Buf) {
        let p = usize::from(port);
        if p >= self.tx.len() {
            self.drop_packet(buf, DropReason::NoRoute);
            return;
        }
        self.flush(p);
        if let Err(buf) = self.tx[p].push(buf) {
            self.drop_packet(buf, DropReason::TxRingFull);
        }
    }

    fn flush(&mut self, p: usize) -> bool {
        if self.tx[p].is_empty() {
            return false;
        }
        self.ports[p].send(&mut self.tx[p]);
        // What the NIC refused is dropped, not retried: the next burst is already coming.
        while let Some(b) = self.tx[p].pop() {
            self.drop_packet(b, DropReason::TxRingFull);
        }
        true
    }

    fn flush_all(&mut self) -> bool {
        let mut any = false;
        for p in 0..self.tx.len() {
            any |= self.flush(p);
        }
        any
    }

    fn free_trash(&mut self) {
        if !self.trash.is_empty() {
            if let Some(p) = self.ports.first_mut() {
                p.free_bulk(&mut self.trash);
            }
            self.trash.clear();
        }
    }

    /// Queues a report for control (`Mailbox::report`); one with no room is counted. Returns
    /// whether it was queued. Cold and out of line: a data packet reports only when its
    /// session floats, ends or must renegotiate.
    #[cold]
    #[inline(never)]
    pub(crate) fn report(&mut self, r: Report) -> bool {
        match self.mailbox.report(r) {
            Ok(()) => true,
            Err(r) => {
                self.drops.bump(match r {
                    Report::Punted { .. } => DropReason::PuntQueueFull,
                    _ => DropReason::ReportQueueFull,
                });
                false
            }
        }
    }

    fn housekeep(&mut self) {
        let now = self.now_secs;
        self.sweep_flows();
        if self.flows.retiring() {
            let sessions = &mut self.sessions;
            self.flows
                .remove_retired(self.cfg.removal_budget, |i| sessions.release(i));
        }
        let mut hk = std::mem::take(&mut self.housekeeping);
        // Neighbour timers are whole seconds and a first request goes out when an entry is
        // made, so the cache (thousands of slots) is walked once per second, not per poll.
        if now != self.last_second {
            self.neighbours.poll(now, &mut hk);
            self.expire_fragments();
            self.report_floats_again();
        }
        for h in hk.drain(..) {
            match h {
                Housekeeping::Request { port, ip } => self.send_arp_request(port, ip),
                Housekeeping::GiveUp(bufs) => {
                    for b in bufs {
                        self.drop_packet(b, DropReason::ArpUnresolved);
                    }
                }
            }
        }
        self.housekeeping = hk;
        if now != self.last_second {
            self.last_second = now;
            if let Some(p) = &self.published {
                p.publish(
                    &self.drops,
                    self.stats,
                    self.rules.version,
                    self.sessions.len(),
                    self.flows.len(),
                    &self.endpoint_traffic,
                );
            }
        }
        self.sweep_sessions();
        self.free_trash();
        self.flush_all();
    }

    /// The per-session timers, as a sweep that visits every session slot once a second, spread
    /// evenly over the second and at most `SWEEP_BUDGET` slots a poll: a ping to a session we
    /// have sent nothing for `ping` seconds, an idle report (once) for one not heard from for
    /// `ping-restart` seconds, and every fifth lap its traffic counters for control (each slot
    /// in a different lap, so a fifth of the sessions report each second). Visiting a hundred
    /// thousand sessions at once stalled the core for milliseconds, and their traffic reports
    /// overflowed the report queue, taking punted control packets with them.
    fn sweep_sessions(&mut self) {
        let slots = self.sessions.capacity() as u64;
        for at in self
            .session_sweep
            .due(self.elapsed, (slots, 1), SWEEP_BUDGET)
        {
            self.visit_session((at % slots) as u32, at / slots);
        }
    }

    /// The flow expiry sweep: every flow slot once a lap (`flow_lap`), spread evenly over it,
    /// and at most `expiry_budget` slots a poll. A fixed number of slots a poll instead made
    /// an idle core, polling millions of times a second, read its whole table from memory
    /// over and over, and a busy core examine a slot a packet (bench/RESULTS.md, 2026-12-06).
    fn sweep_flows(&mut self) {
        let slots = self.flows.capacity() as u64;
        let budget = self.cfg.expiry_budget as u64;
        let visits = self
            .flow_sweep
            .due(self.elapsed, (slots, self.flow_lap), budget);
        self.flows
            .expire(self.now_secs, (visits.end - visits.start) as usize);
    }

    /// The sweep's visit of session slot `slot` in lap `lap`.
    fn visit_session(&mut self, slot: u32, lap: u64) {
        let now = self.now_secs;
        let (ping, restart) = self.cfg.keepalive.unwrap_or((0, 0));
        let Some(s) = self.sessions.get_mut(slot) else {
            return;
        };
        let peer = s.id().peer();
        let traffic = ((lap + u64::from(slot)) % TRAFFIC_LAPS == 0).then(|| s.traffic());
        let idle = restart > 0 && now.saturating_sub(s.last_rx) > restart && !s.idle_reported;
        let ping = ping > 0 && now.saturating_sub(s.last_tx()) >= ping && !idle && !s.idle_reported;
        if let Some(traffic) = traffic {
            self.report(Report::Traffic { peer, traffic });
        }
        // Reports control must get are marked sent only once queued: one that found the
        // queue full goes again at the next lap.
        if idle && self.report(Report::Idle { peer }) {
            if let Some(s) = self.sessions.get_mut(slot) {
                s.idle_reported = true;
            }
        }
        if ping {
            self.send_ping(slot, peer);
        }
    }

    /// Tells control again of the floats it has not heard of, while the report queue takes
    /// them (each session's address as it is now).
    fn report_floats_again(&mut self) {
        while let Some(&peer) = self.unreported_floats.last() {
            if let Some(remote) = self
                .sessions
                .index_of_peer(peer)
                .and_then(|i| self.sessions.get_mut(i))
                .map(|s| s.id().remote())
            {
                if !self.report(Report::Floated { peer, remote }) {
                    return;
                }
            }
            self.unreported_floats.pop();
        }
    }

    /// Sends the keepalive ping to the session in `slot`.
    fn send_ping(&mut self, slot: u32, peer: crate::wire::openvpn::PeerId) {
        let now = self.now_secs;
        let outside = usize::from(self.cfg.outside);
        let Some(mut buf) = self.ports.get_mut(outside).and_then(Port::alloc) else {
            self.drops.bump(DropReason::NoRoom);
            return;
        };
        match buf.append(crate::crypto::data_channel::PING_MAGIC.len()) {
            Ok(d) => d.copy_from_slice(&crate::crypto::data_channel::PING_MAGIC),
            Err(_) => return self.drop_packet(buf, DropReason::NoRoom),
        }
        let Some(s) = self.sessions.get_mut(slot) else {
            return self.drop_packet(buf, DropReason::NoSessionForDestination);
        };
        let s = s.sender();
        s.last_tx = now;
        let (headers, remote) = (*s.outer_headers(), s.id().remote());
        if let Err(reason) = s.key().seal(&mut buf, peer) {
            return self.drop_packet(buf, reason);
        }
        self.send_to_client(buf, &headers, remote.ip);
    }

    /// Publishes this core's counters into `stats` once a second from now on.
    pub fn publish_stats(&mut self, stats: Arc<crate::stats::CoreStats>) {
        self.published = Some(stats);
    }

    /// This core's drop counters.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Per-endpoint traffic on this core.
    pub fn endpoint_traffic(&self) -> &[Traffic] {
        &self.endpoint_traffic
    }

    /// Busy and idle polls.
    pub fn poll_stats(&self) -> PollStats {
        self.stats
    }

    /// Ticks per stage so far (all zero without the `stage-cycles` feature).
    pub fn stage_cycles(&self) -> StageCycles {
        self.stage_cycles
    }

    /// The rule table in force.
    pub fn rules_version(&self) -> u64 {
        self.rules.version
    }

    /// A port (tests and benchmarks inject and inspect through it).
    pub fn port_mut(&mut self, i: usize) -> Option<&mut P> {
        self.ports.get_mut(i)
    }

    /// Sessions on this core.
    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    /// Flows on this core.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Records a neighbour as if it had answered ARP (tests, benchmarks, static neighbours).
    pub fn prime_neighbour(&mut self, port: u16, ip: u32, mac: Mac) {
        let _ = self.neighbours.learn(port, ip, mac, self.now_secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HeapBuf;
    use crate::port::MemPort;
    use crate::testkit;
    use proptest::prelude::*;

    proptest! {
        /// On-link is membership of the port's network, whatever the prefix (0 to 32, and
        /// longer ones taken as 32), against the CIDR type's own test.
        #[test]
        fn on_link_is_membership_of_the_ports_network(
            ip in any::<u32>(), other in any::<u32>(), prefix_len in 0u8..40, near in any::<bool>(),
        ) {
            // Half the cases share a random-length prefix with the port's address.
            let other = if near { ip ^ (other >> (other % 33).min(31)) } else { other };
            let pc = PortConfig { mac: [2, 0, 0, 0, 0, 1], ip, prefix_len, gateway: None, mtu: 1500 };
            let oracle = crate::rules::Ipv4Cidr::new_truncating(ip, prefix_len).contains(other);
            prop_assert_eq!(pc.on_link(other), oracle);
        }
    }

    /// The transmit batch of a port: full batches go out as they fill, the rest at the end of
    /// the poll; what a port refuses is dropped as TxRingFull, a port that does not exist is
    /// NoRoute.
    #[test]
    // A test stands in for the worker shell, which owns the clock.
    #[allow(clippy::disallowed_methods)]
    fn transmit_batches_fill_flush_and_count_refusals() {
        let now = Instant::now();
        let mut w = testkit::lab_worker(
            vec![MemPort::new(), MemPort::new()],
            testkit::lab_config(16, 4),
            Mailbox::new(16),
            now,
        );
        let frame = |i: u8| HeapBuf::from_slice(&[i; 60]);
        let n = 2 * BURST_SIZE + 6;
        for i in 0..n {
            w.enqueue_tx(1, frame(i as u8));
        }
        let sent = w.port_mut(1).map(MemPort::take_sent).unwrap_or_default();
        assert_eq!(
            sent.len(),
            2 * BURST_SIZE,
            "two full batches went out as they filled"
        );
        w.poll_once(now);
        let rest = w.port_mut(1).map(MemPort::take_sent).unwrap_or_default();
        assert_eq!(rest.len(), n - 2 * BURST_SIZE);
        assert_eq!(rest.last().map(|f| f[0]), Some((n - 1) as u8), "in order");
        assert_eq!(w.drops().total(), 0);

        if let Some(p) = w.port_mut(1) {
            p.tx_limit = Some(10);
        }
        for i in 0..BURST_SIZE as u8 + 1 {
            w.enqueue_tx(1, frame(i));
        }
        assert_eq!(
            w.drops().get(DropReason::TxRingFull),
            BURST_SIZE as u64 - 10
        );
        w.enqueue_tx(7, frame(0));
        assert_eq!(w.drops().get(DropReason::NoRoute), 1);
    }

    /// The lab client's UDP datagram to the lab host (port 9), carrying `payload`.
    fn to_host(payload: &[u8]) -> Vec<u8> {
        use testkit::{ip, lab};
        testkit::ipv4_udp(ip(lab::CLIENT_VIP), 1000, ip(lab::HOST_IP), 9, payload)
    }

    /// The `Report::Removed`s in `mb`'s report queue: peer-id, packets from the client, why.
    fn removals(mb: &Mailbox) -> Vec<(u32, u64, Removal)> {
        std::iter::from_fn(|| mb.reports.pop())
            .filter_map(|r| match r {
                Report::Removed {
                    peer,
                    traffic,
                    because,
                } => Some((peer.0, traffic.ingress_packets, because)),
                _ => None,
            })
            .collect()
    }

    /// A sweep is where its lap puts it, a budget a poll at most; a poll at the same instant
    /// again visits nothing; a core held up for laps resumes one lap behind; a clock that
    /// steps back visits nothing until it has caught up.
    #[test]
    fn a_sweep_goes_round_once_a_lap_a_budget_a_poll() {
        use std::time::Duration;
        let ms = Duration::from_millis;
        let mut s = Sweep::default();
        let a_second = (1000, 1);
        assert_eq!(s.due(ms(250), a_second, 64), 0..64);
        assert_eq!(s.due(ms(250), a_second, 64), 64..128);
        assert_eq!(s.due(ms(250), a_second, 1000), 128..250);
        assert_eq!(s.due(ms(250), a_second, 1000), 250..250, "caught up");
        assert_eq!(s.due(ms(251), a_second, 1000), 250..251);
        // Nine seconds later: one lap behind, then a budget a poll.
        assert_eq!(s.due(ms(9251), a_second, 64), 8251..8315);
        assert_eq!(s.due(ms(9251), a_second, 10_000), 8315..9251);
        // A clock that steps back.
        assert_eq!(s.due(ms(5000), a_second, 64), 9251..9251);
        assert_eq!(s.due(ms(9300), a_second, 64), 9251..9300);
        // A lap of 7 s.
        let mut s = Sweep::default();
        assert_eq!(s.due(ms(3500), (1000, 7), 1000), 0..500);
        assert_eq!(s.due(ms(7000), (1000, 7), 1000), 500..1000);
        assert_eq!(s.due(ms(70_000), (1000, 7), 1000), 9000..10_000);
        // Tables far larger than a second's nanoseconds, and times far out, do not overflow.
        let mut s = Sweep::default();
        let r = s.due(Duration::from_secs(u64::MAX / 2), (u64::MAX / 4, 60), 64);
        assert_eq!(r.end - r.start, 64);
    }

    /// A frame's body is requested from past its header, at most `BODY_AHEAD` bytes of it and
    /// never past its end; a short frame's not at all.
    #[test]
    fn a_frames_body_is_requested_past_its_header_and_within_it() {
        assert_eq!(body_ahead(0), 0..0);
        assert_eq!(body_ahead(106), 0..0);
        assert_eq!(body_ahead(BODY_FROM), 0..0);
        assert_eq!(body_ahead(BODY_FROM + 1), HEADER_BYTES..BODY_FROM + 1);
        assert_eq!(body_ahead(300), HEADER_BYTES..300);
        assert_eq!(body_ahead(1474), HEADER_BYTES..HEADER_BYTES + BODY_AHEAD);
        assert_eq!(
            body_ahead(usize::MAX),
            HEADER_BYTES..HEADER_BYTES + BODY_AHEAD
        );
    }

    /// The flow expiry lap: an eighth of the shortest timeout, 1 to 60 s.
    #[test]
    fn the_flow_lap_is_an_eighth_of_the_shortest_timeout() {
        let t = Timeouts::default();
        assert_eq!(flow_lap(&t), 7, "ICMP's 60 s");
        assert_eq!(flow_lap(&Timeouts { udp: 3, ..t }), 1);
        assert_eq!(flow_lap(&Timeouts { udp: 16, ..t }), 2);
        let day = 86_400;
        let long = Timeouts {
            tcp_established: day,
            tcp_transitory: day,
            udp: day,
            icmp: day,
        };
        assert_eq!(flow_lap(&long), 60);
    }

    /// The flow expiry sweep is paced by the clock, not by polls: an idle core polled a hundred
    /// thousand times in half a lap has examined half its flow slots, not 64 a poll; an idle
    /// flow goes within a lap after its timeout.
    #[test]
    fn flow_expiry_goes_round_the_table_once_a_lap() {
        use std::time::Duration;
        let (now, _, mut w) = lab_core_with(100_000);
        let (slots, lap) = (w.flows.capacity() as u64, w.flow_lap);
        assert_eq!((slots, lap), (100_000, 7));
        for i in 0..100_000u64 {
            w.poll_once(now + Duration::from_nanos(i * lap * 5_000));
        }
        let half = w.flow_sweep.visited;
        assert!(
            (slots / 2 - 64..=slots / 2).contains(&half),
            "{half} slots examined in half a lap"
        );
        assert_eq!(
            w.flows.hand() as u64,
            half,
            "the table examined what the sweep says"
        );

        let (start, mb, mut w) = lab_core();
        let keys = testkit::queue_session(
            &mb,
            crate::wire::openvpn::PeerId(5),
            testkit::ip(testkit::lab::CLIENT_VIP),
            Default::default(),
            crate::crypto::Cipher::Aes256Gcm,
            7,
        );
        w.poll_once(start);
        let mut client = testkit::Client::new(
            crate::wire::openvpn::PeerId(5),
            crate::wire::openvpn::KeyId(0),
            &keys,
        );
        if let Some(p) = w.port_mut(0) {
            p.inject(&client.frame(&to_host(b"a")));
        }
        w.poll_once(start);
        assert_eq!(w.flow_count(), 1);
        let (udp, lap) = (u64::from(w.cfg.timeouts.udp), w.flow_lap);
        // Polled every 10 ms: still there a whole second past its timeout's second, gone
        // within a lap after.
        let mut gone = None;
        for t in 0..(udp + lap + 2) * 100 {
            let at = Duration::from_millis(t * 10);
            w.poll_once(start + at);
            if w.flow_count() == 0 {
                gone = Some(at);
                break;
            }
        }
        let gone = gone.expect("the flow expired");
        assert!(
            gone > Duration::from_secs(udp + 1) && gone <= Duration::from_secs(udp + 1 + lap),
            "removed {gone:?} after it was last seen (timeout {udp} s, lap {lap} s)"
        );
    }

    /// The lab's core on two in-memory ports, its mailbox, and the time it started.
    fn lab_core() -> (Instant, Mailbox, Worker<MemPort>) {
        lab_core_with(16)
    }

    /// `lab_core` with room for `flows` flows.
    #[allow(clippy::disallowed_methods)]
    fn lab_core_with(flows: usize) -> (Instant, Mailbox, Worker<MemPort>) {
        let now = Instant::now();
        let mb = Mailbox::new(16);
        let w = testkit::lab_worker(
            vec![MemPort::new(), MemPort::new()],
            testkit::lab_config(flows, 4),
            mb.clone(),
            now,
        );
        (now, mb, w)
    }

    /// A session whose keys the core refuses is never added: control hears it removed with
    /// `KeysRefused` (and ends the connection), and the client's packets under those keys
    /// find no session.
    #[test]
    #[allow(clippy::disallowed_methods)]
    fn a_session_whose_keys_are_refused_is_reported_and_takes_no_traffic() {
        use crate::wire::openvpn::{KeyId, PeerId};
        let (now, mb, mut w) = lab_core();
        let (vip, cipher) = (
            testkit::ip(testkit::lab::CLIENT_VIP),
            crate::crypto::Cipher::Aes256Gcm,
        );
        crate::crypto::data_channel::refuse_keys(true);
        let keys = testkit::queue_session(&mb, PeerId(5), vip, Default::default(), cipher, 7);
        w.poll_once(now);
        crate::crypto::data_channel::refuse_keys(false);
        assert_eq!(removals(&mb), [(5, 0, Removal::KeysRefused)]);
        assert!(w.sessions().index_of_peer(PeerId(5)).is_none());
        assert_eq!(w.sessions().len(), 0);
        let mut client = testkit::Client::new(PeerId(5), KeyId(0), &keys);
        if let Some(p) = w.port_mut(0) {
            p.inject(&client.frame(&to_host(b"a")));
        }
        w.poll_once(now);
        let sent = w.port_mut(1).map(MemPort::take_sent).unwrap_or_default();
        assert!(sent.is_empty(), "nothing reached the target network");
        assert_eq!(w.drops().get(DropReason::UnknownPeer), 1);
        assert_eq!(w.flow_count(), 0);
    }

    /// A renegotiated key the core refuses ends the session rather than leave it on the key
    /// the client is about to stop using: the session and its flows go, control hears it
    /// removed with `KeysRefused` and its counters, and the client's packets find no session.
    /// A key for a peer-id the core does not hold is counted, `key_for_unknown_peer`.
    #[test]
    #[allow(clippy::disallowed_methods)]
    fn a_refused_renegotiated_key_ends_the_session() {
        use crate::wire::openvpn::{KeyId, PeerId};
        let (now, mb, mut w) = lab_core();
        let (vip, cipher) = (
            testkit::ip(testkit::lab::CLIENT_VIP),
            crate::crypto::Cipher::Aes256Gcm,
        );
        let keys = testkit::queue_session(&mb, PeerId(5), vip, Default::default(), cipher, 7);
        let mut client = testkit::Client::new(PeerId(5), KeyId(0), &keys);
        let send = |w: &mut Worker<MemPort>, c: &mut testkit::Client, payload: &[u8]| {
            if let Some(p) = w.port_mut(0) {
                p.inject(&c.frame(&to_host(payload)));
            }
            w.poll_once(now);
            w.port_mut(1)
                .map(MemPort::take_sent)
                .unwrap_or_default()
                .len()
        };
        assert_eq!(
            send(&mut w, &mut client, b"a"),
            1,
            "the session carries traffic"
        );
        assert_eq!(w.flow_count(), 1);
        let renegotiated = |peer: u32| Command::InstallKey {
            peer: PeerId(peer),
            key_id: KeyId(1),
            keys: Box::new(testkit::key_pair(cipher, 8).0),
        };
        crate::crypto::data_channel::refuse_keys(true);
        assert!(mb.commands.push(renegotiated(5)).is_ok());
        w.poll_once(now);
        crate::crypto::data_channel::refuse_keys(false);
        assert_eq!(removals(&mb), [(5, 1, Removal::KeysRefused)]);
        assert!(w.sessions().index_of_peer(PeerId(5)).is_none());
        assert_eq!(w.flow_count(), 0, "its flows went with it");
        assert_eq!(send(&mut w, &mut client, b"b"), 0);
        assert_eq!(w.drops().get(DropReason::UnknownPeer), 1);
        // Peer 5 is gone now: its key, accepted or not, is counted, and nothing else happens.
        assert!(mb.commands.push(renegotiated(5)).is_ok());
        w.poll_once(now);
        assert_eq!(w.drops().get(DropReason::KeyForUnknownPeer), 1);
        assert_eq!(removals(&mb), []);
        assert_eq!(w.sessions().len(), 0);
    }

    /// A poll applies at most `COMMAND_BUDGET` of control's commands; the rest wait, in order,
    /// for the next polls.
    #[test]
    #[allow(clippy::disallowed_methods)]
    fn commands_are_applied_a_budget_a_poll_in_order() {
        let now = Instant::now();
        let mb = Mailbox::new(256);
        let mut w = testkit::lab_worker(
            vec![MemPort::new(), MemPort::new()],
            testkit::lab_config(16, 256),
            mb.clone(),
            now,
        );
        let sessions = COMMAND_BUDGET + 10;
        for s in 0..sessions {
            let peer = crate::wire::openvpn::PeerId(s as u32);
            let (vip, cipher) = (0x0a40_0000 + s as u32, crate::crypto::Cipher::Aes256Gcm);
            testkit::queue_session(&mb, peer, vip, Default::default(), cipher, s as u8);
        }
        w.poll_once(now);
        assert_eq!(w.sessions().len(), COMMAND_BUDGET);
        let first_late = crate::wire::openvpn::PeerId(COMMAND_BUDGET as u32);
        assert!(w.sessions().index_of_peer(first_late).is_none());
        w.poll_once(now);
        assert_eq!(w.sessions().len(), sessions);
        assert!(w.sessions().index_of_peer(first_late).is_some());
    }
}
