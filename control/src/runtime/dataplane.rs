//! The appliance's data plane, driven from the control thread: DPDK ports from
//! `[dataplane]`, one `Worker` per worker lcore, and the glue between the cores and the
//! control channel of every endpoint.
//!
//! - Control-channel packets reach the cores, are punted here (`Report::Punted`), go to the
//!   endpoint's `Server`, and its answers leave through a core (`Command::Transmit`).
//! - Keys, virtual IPs and groups go to the core that owns the session (peer-id modulo the
//!   core count); closes, terminations, idle sessions and client exits remove it there.
//! - The compiled `RuleTable` goes to every core; reloads push a new generation.
//! - Password checks the servers hand out run on the checker threads (`verifier`); their
//!   verdicts are fed back each turn of the loop.
//!
//! A runtime shell: it reads the clock.

#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_engine::cookie::CookieKey;
use sluice_engine::dpdk::{self, Eal, EthDev, EthOptions, Mempool};
use sluice_engine::mailbox::{Command, Mailbox, Outbox, Removal, Report};
use sluice_engine::rules::GroupMask;
use sluice_engine::session::{SessionInfo, Traffic};
use sluice_engine::stats::CoreStats;
use sluice_engine::wire::openvpn::{KeyId, PeerId};
use sluice_engine::worker::{Handoff, Listener, PortConfig, Worker, WorkerConfig};

use super::endpoint;
use super::verifier::{self, Verifier};
use super::{log, shown};
use crate::auth::directory::Directory;
use crate::auth::EndpointAuth;
use crate::compile::{self, GroupIndex};
use crate::config::schema::{Endpoint, DEFAULT_MTU};
use crate::config::Loaded;
use crate::connlog::{self, FailureReason, LogType, RotatingLog};
use crate::proto::room::CoreRoom;
use crate::proto::server::{CloseReason, Event, Float, Server, MAX_VERIFYING, STOP_LINGER};
use crate::timefmt::rfc3339;

/// One client connection, as `describe-client-vpn-connections` shows it.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Connection {
    /// The endpoint.
    pub client_vpn_endpoint_id: String,
    /// `cvpn-connection-` and 17 hex digits.
    pub connection_id: String,
    /// Certificate common name.
    pub common_name: Option<String>,
    /// Directory user name.
    pub username: Option<String>,
    /// The client's virtual address.
    pub client_ip: Ipv4Addr,
    /// Where it connects from.
    pub device_ip: String,
    /// When the handshake completed (RFC 3339).
    pub connection_established_time: String,
    /// Bytes from the client.
    pub ingress_bytes: u64,
    /// Bytes to the client.
    pub egress_bytes: u64,
    /// Packets from the client.
    pub ingress_packets: u64,
    /// Packets to the client.
    pub egress_packets: u64,
    /// `active`, `terminating` (its core's final counters awaited) or `terminated`, with the
    /// reason.
    pub status: ConnectionStatus,
    #[serde(skip)]
    endpoint: u16,
    /// The user's groups, for the session's group set under each rule generation.
    #[serde(skip)]
    groups: Vec<String>,
    #[serde(skip)]
    started: SystemTime,
    #[serde(skip)]
    remote: sluice_engine::session::Remote,
    #[serde(skip)]
    last_logged: Option<Instant>,
    /// Its place in the order connections were established (`next_order`): describe lists
    /// them in this order and its pages go on after it (`paging_key`).
    #[serde(skip)]
    order: u128,
}

impl Connection {
    /// What `describe-client-vpn-connections` sorts and pages by: the order of establishment,
    /// as text that sorts as the number does. A connection established after a page was
    /// given sorts after every item of it, so the next page has it; the RFC 3339 time to the
    /// second (and the random id after it) let one made in the same second as the page's last
    /// item sort before that item about half the time, and be missed.
    pub fn paging_key(&self) -> String {
        format!("{:039}", self.order)
    }
}

/// The order of a connection established at `now`, after one given `last`: nanoseconds since
/// the Unix epoch, but always past `last`, so a clock stepped back, or two connections in the
/// same nanosecond, still order by arrival. Past a restart, the clock has gone on past the
/// last run's connections, whose tokens therefore still go on in order.
fn next_order(last: u128, now: SystemTime) -> u128 {
    let at = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    at.max(last.saturating_add(1))
}

/// AWS's connection status.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectionStatus {
    /// `active`, `failed-to-terminate`, `terminating` or `terminated`.
    pub code: String,
    /// Why, once terminated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How long an ended connection waits for its core's final counters before its last
/// connection-log line is written with the counters it has (a core answers within a poll;
/// this is for a core whose reports could not be queued).
const FINAL_COUNTERS_WAIT: Duration = Duration::from_secs(2);

/// Ended connections `describe-client-vpn-connections` still lists (as `terminated`), the most
/// recent ones; older ones are only in the connection log.
const ENDED_KEPT: usize = 1000;

/// How long `describe-client-vpn-connections` lists a connection after it ended: AWS lists
/// "connections that have been terminated within the last 60 minutes".
const ENDED_LISTED_FOR: Duration = Duration::from_secs(60 * 60);

/// The recently ended connections, oldest first, with when each ended: at most `ENDED_KEPT`,
/// none that ended `ENDED_LISTED_FOR` ago or longer.
#[derive(Default)]
struct Ended(VecDeque<(Instant, Connection)>);

impl Ended {
    /// A connection that ended `now`.
    fn push(&mut self, now: Instant, c: Connection) {
        self.expire(now);
        if self.0.len() >= ENDED_KEPT {
            self.0.pop_front();
        }
        self.0.push_back((now, c));
    }

    /// Forgets those that ended too long before `now`.
    fn expire(&mut self, now: Instant) {
        while self
            .0
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= ENDED_LISTED_FOR)
        {
            self.0.pop_front();
        }
    }

    /// Those describe lists at `now`.
    fn listed(&self, now: Instant) -> impl Iterator<Item = &Connection> {
        self.0
            .iter()
            .filter(move |(at, _)| now.saturating_duration_since(*at) < ENDED_LISTED_FOR)
            .map(|(_, c)| c)
    }
}

/// An ended connection waiting for its final counters.
struct Closing {
    connection: Connection,
    endpoint: usize,
    end: SystemTime,
    until: Instant,
}

/// The running data plane.
pub struct Dataplane {
    stop: Arc<AtomicBool>,
    /// The cores' mailboxes, with what waits for room in their command queues.
    outbox: Outbox,
    servers: Vec<Server<EndpointAuth>>,
    /// The threads the servers' password checks run on (none runs on the control thread).
    verifier: Verifier,
    groups: Vec<GroupIndex>,
    pushed: Vec<Option<Vec<(Ipv4Addr, Ipv4Addr)>>>,
    logs: Vec<Option<RotatingLog>>,
    stats: Vec<Arc<CoreStats>>,
    endpoint_ids: Vec<String>,
    /// The endpoints as last put in force, in the servers' order.
    running: Vec<Endpoint>,
    version: u64,
    /// The cores' room (`[dataplane] sessions_per_core` each), which the servers count
    /// sessions into (`CoreRoom`); it also names each peer-id's core.
    core_room: Arc<CoreRoom>,
    connections: HashMap<u32, Connection>,
    /// The order of the last connection established (`next_order`).
    last_order: u128,
    /// Ended connections whose sessions are being taken off their cores, by peer-id: their
    /// last connection-log line waits for the core's final counters (`Report::Removed`), or
    /// `FINAL_COUNTERS_WAIT`.
    closing: HashMap<u32, Closing>,
    /// The connections ended in the last hour (the last `ENDED_KEPT` of them), for describe.
    ended: Ended,
    // Dropped last, in this order: ports, then the pool and the EAL they hold.
    devs: Vec<EthDev>,
    /// The ports' one mbuf pool, read for the mbufs out of it (`update_metrics`).
    pool: Arc<Mempool>,
    _eal: Arc<Eal>,
}

/// The endpoints a reload puts in force, in the servers' order (`ids`, the endpoints the data
/// plane started with), found by ID in `file` wherever they are; with whether each was deleted
/// since. A deleted one (it had no target network: `check_change`) stays as it ran, with no
/// target network, route or rule, so it takes no connection; so does one deleted and written
/// again since with another client CIDR, authentication or transport, which its server (its
/// address pool, its TLS) cannot take until a restart (`change::needs_restart` names it).
fn served_endpoints(
    ids: &[String],
    running: &[Endpoint],
    file: &[Endpoint],
) -> (Vec<Endpoint>, Vec<bool>) {
    ids.iter()
        .zip(running)
        .map(
            |(id, ran)| match file.iter().find(|n| n.id.to_string() == *id) {
                Some(ep) if crate::config::change::fixed_changes(ran, ep).is_empty() => {
                    (ep.clone(), false)
                }
                _ => {
                    let mut ep = ran.clone();
                    ep.target_networks.clear();
                    ep.routes.clear();
                    ep.authorization_rules.clear();
                    (ep, true)
                }
            },
        )
        .unzip()
}

/// For each of `cores` cores, the sessions (peer-id, endpoint number, the user's groups before
/// and after the reload) whose group set differs between the `old` numbering of the groups
/// before and the `new` numbering of the groups after, with their new sets.
fn regroup<'a>(
    cores: usize,
    sessions: impl Iterator<Item = (u32, usize, &'a [String], &'a [String])>,
    old: &[GroupIndex],
    new: &[GroupIndex],
    core_of: impl Fn(u32) -> usize,
) -> Vec<Vec<(PeerId, GroupMask)>> {
    let mut out = vec![Vec::new(); cores];
    for (peer, e, before, after) in sessions {
        let (Some(old), Some(new)) = (old.get(e), new.get(e)) else {
            continue;
        };
        let names = |groups: &'a [String]| groups.iter().map(String::as_str);
        let mask = new.mask(names(after));
        if mask != old.mask(names(before)) {
            if let Some(list) = out.get_mut(core_of(peer)) {
                list.push((PeerId(peer), mask));
            }
        }
    }
    out
}

/// What a reload means for a connection already made, beyond the new rule table.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// It goes on as it is.
    Stays,
    /// It goes on, with the groups the users file now gives its user.
    Regroup(Vec<String>),
    /// It ends: its client is told `message` (a `RESTART`), and `why` goes on record.
    Ends {
        message: &'static str,
        why: &'static str,
    },
}

/// What a reload changed for an endpoint, as `verdict` weighs it for its connections.
struct Reloaded<'a> {
    /// Its directory as the users file now reads (`None`: it authenticates no user, or was
    /// deleted).
    directory: Option<&'a dyn Directory>,
    /// It has no target network left.
    unassociated: bool,
    /// Its DNS servers changed.
    dns_changed: bool,
    /// Its pushed routes changed, and `reconnect_on_route_change` asks its clients to
    /// reconnect for them.
    reconnect_for_routes: bool,
}

/// What the reload described by `r` does to connection `c` of that endpoint (its client
/// certificate was verified again under the new TLS settings before: `Server::set_tls`): a
/// user no longer in the users file ends it (the guide: blacklisting a
/// client "revokes their access", not only its next connection), as does an endpoint left
/// without target networks, new DNS servers (as AWS resets connections then) or, on request,
/// new routes; a user whose groups changed in the
/// users file keeps the connection under the new groups, so a group the user left grants
/// nothing more.
fn verdict(c: &Connection, r: &Reloaded<'_>) -> Verdict {
    let groups = match (r.directory, c.username.as_deref()) {
        (Some(d), Some(name)) => match d.user(name) {
            Some(u) => Some(u.groups),
            None => {
                return Verdict::Ends {
                    message: "RESTART,user removed",
                    why: "the user was removed from the users file",
                }
            }
        },
        _ => None,
    };
    if r.unassociated {
        // The guide: "clients can no longer establish a VPN connection"; those connected are
        // told to reconnect, and are refused for now until a target network is associated.
        return Verdict::Ends {
            message: "RESTART,the endpoint has no target network",
            why: "the endpoint has no target network associated",
        };
    }
    if r.dns_changed {
        // AWS: "Modifying the DNS server resets existing client connections"; a client keeps
        // the servers it was pushed (perhaps ones being retired) until it connects again.
        return Verdict::Ends {
            message: "RESTART,the endpoint's DNS servers changed",
            why: "the endpoint's DNS servers changed",
        };
    }
    if r.reconnect_for_routes {
        return Verdict::Ends {
            message: "RESTART,the endpoint's routes changed",
            why: "asked to reconnect for new routes",
        };
    }
    // The same groups listed in another order are no change.
    fn set(g: &[String]) -> std::collections::BTreeSet<&str> {
        g.iter().map(String::as_str).collect()
    }
    match groups {
        Some(g) if set(&g) != set(&c.groups) => Verdict::Regroup(g),
        _ => Verdict::Stays,
    }
}

fn is_vdev(device: &str) -> bool {
    device.starts_with("net_") || device.contains('=')
}

/// The DPDK port name of a `device` string: the vdev name, or the PCI address.
fn port_name(device: &str) -> &str {
    device.split(',').next().unwrap_or(device)
}

impl Dataplane {
    /// Starts EAL, the ports and one worker per worker lcore, compiles and installs the rules,
    /// and sets up each endpoint's control channel.
    ///
    /// # Errors
    /// One clear message: EAL, a port, a file of an endpoint, or too few lcores.
    pub fn start(loaded: &Loaded) -> Result<Self, String> {
        let config = &loaded.config;
        let dp = &config.dataplane;
        let outside = dp
            .outside_index()
            .ok_or("[dataplane] has no port for clients to reach")?;
        let mut args = dp.eal_args.clone();
        for p in &dp.ports {
            args.push(if is_vdev(&p.device) { "--vdev" } else { "-a" }.to_owned());
            args.push(p.device.clone());
        }
        let eal = Eal::init(&args).map_err(|e| e.to_string())?;
        let mut lcores = eal.worker_lcores();
        if lcores.is_empty() {
            return Err("the data plane needs a worker lcore besides the main one (the control thread): give EAL two or more cores, e.g. \"-l\", \"0-1\" in [dataplane] eal_args".into());
        }
        if dp.workers > 0 {
            lcores.truncate(dp.workers as usize);
        }
        let cores = lcores.len();
        let names: Vec<&str> = dp.ports.iter().map(|p| port_name(&p.device)).collect();
        let ids = eal.require_ports(&names).map_err(|e| e.to_string())?;
        // Each queue's ring holds as many mbufs as it has descriptors: the counts asked for,
        // fitted to each device's limits, over the queues each device is set up with (as
        // `EthDev::start` sets them up: a device with fewer rx queues than cores has fewer
        // rx rings), and a share for each core (`pool_size`).
        let asked = EthOptions {
            queues: cores as u16,
            ..EthOptions::default()
        };
        let infos = ids
            .iter()
            .map(|id| EthDev::info(*id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let count = sluice_engine::dpdk::pool_size(&infos, &asked);
        let pool = Arc::new(
            Mempool::new(&eal, "sluice_mbufs", count, 2176, -1).map_err(|e| e.to_string())?,
        );
        let mut devs = Vec::with_capacity(ids.len());
        for (id, p) in ids.iter().zip(&dp.ports) {
            let dev = EthDev::start(
                *id,
                Arc::clone(&pool),
                EthOptions {
                    // The device's own default is left alone (virtual devices may refuse any
                    // change).
                    mtu: (p.mtu != DEFAULT_MTU).then_some(p.mtu),
                    ..asked
                },
            )
            .map_err(|e| format!("port {} ({}): {e}", p.name, p.device))?;
            let fitted = (dev.rx_descriptors(), dev.tx_descriptors());
            if fitted != (asked.rx_descriptors, asked.tx_descriptors) {
                log(&format!(
                    "port {} ({}): {} rx and {} tx descriptors a queue, what the device takes (asked for {} and {})",
                    p.name, p.device, fitted.0, fitted.1, asked.rx_descriptors, asked.tx_descriptors
                ));
            }
            devs.push(dev);
        }
        // A port whose MAC cannot be read cannot answer ARP as itself: it does not start.
        let ports: Vec<PortConfig> = devs
            .iter()
            .zip(&dp.ports)
            .map(|(d, p)| {
                Ok(PortConfig {
                    mac: d
                        .mac()
                        .map_err(|e| format!("port {} ({}): {e}", p.name, p.device))?,
                    ip: u32::from(p.ip.addr),
                    prefix_len: p.ip.network.prefix_len(),
                    gateway: p.gateway.map(u32::from),
                    mtu: p.mtu,
                })
            })
            .collect::<Result<_, String>>()?;
        let outside_ip = ports[outside].ip;
        let listeners: Vec<Listener> = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| Listener {
                ip: outside_ip,
                port: ep.vpn_port.get(),
                endpoint: i as u16,
            })
            .collect();
        let compiled = compile::compile(config, 1).map_err(|e| e.to_string())?;
        let table = Arc::new(compiled.table);
        // The cores answer clients' first hard resets themselves under the servers' key and
        // clock (`cookie`); the servers see only the echoes.
        let epoch = Instant::now();
        // Every endpoint's sessions share the cores' tables: the servers place each on a core
        // with room, the same core `core_of` names.
        let core_room = Arc::new(CoreRoom::new(cores, dp.sessions_per_core));
        let mut servers = Vec::new();
        let mut cookies = None;
        for i in 0..config.endpoints.len() {
            let mut settings = endpoint::settings(loaded, i)?;
            let key = match &cookies {
                Some(k) => Arc::clone(k),
                None => {
                    let k = CookieKey::generate(settings.hand_window.as_secs())
                        .map(Arc::new)
                        .map_err(|_| "the system random generator failed".to_owned())?;
                    cookies = Some(Arc::clone(&k));
                    k
                }
            };
            settings.cookies = Some((key, epoch));
            settings.room = Some(Arc::clone(&core_room));
            let mut server = Server::new(settings, endpoint::authenticator(loaded, i)?);
            server.set_verify_elsewhere(true);
            servers.push(server);
        }
        // Each server has at most MAX_VERIFYING checks out, so the queue always has room.
        let verifier = Verifier::start(
            verifier::THREADS,
            MAX_VERIFYING * servers.len(),
            verifier::argon2_check,
            None,
        )
        .map_err(|e| format!("starting the password checkers: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut mailboxes = Vec::with_capacity(cores);
        let stats: Vec<Arc<CoreStats>> = (0..cores)
            .map(|_| Arc::new(CoreStats::new(config.endpoints.len())))
            .collect();
        for (core, (lcore, handoff)) in lcores.iter().zip(Handoff::mesh(cores, 1024)).enumerate() {
            let mailbox = Mailbox::new(8192);
            let _ = mailbox
                .commands
                .push(Command::InstallRules(Arc::clone(&table)));
            let mut cfg = WorkerConfig::new(
                core,
                cores,
                outside as u16,
                ports.clone(),
                listeners.clone(),
            );
            cfg.session_capacity = dp.sessions_per_core as usize;
            apply_file_settings(&mut cfg, dp, outside);
            cfg.cookies = cookies.clone();
            let queues: Result<Vec<_>, _> = devs.iter().map(|d| d.queue(core as u16)).collect();
            let (mb, worker_stop) = (mailbox.clone(), Arc::clone(&stop));
            let published = Arc::clone(&stats[core]);
            let launched = queues.map_err(|e| e.to_string()).and_then(|queues| {
                dpdk::launch(*lcore, move || {
                    let mut w = Worker::new(cfg, queues, mb, Some(handoff), epoch);
                    w.publish_stats(published);
                    while !worker_stop.load(Ordering::Relaxed) {
                        w.poll_once(Instant::now());
                    }
                    0
                })
                .map_err(|e| e.to_string())
            });
            if let Err(e) = launched {
                // The cores already running stop before the ports they poll are closed (the
                // devices drop on the way out).
                stop.store(true, Ordering::Relaxed);
                dpdk::wait_all();
                return Err(e);
            }
            mailboxes.push(mailbox);
        }
        log(&format!(
            "data plane up: {} port(s), {cores} worker core(s) on lcores {lcores:?}, {count} mbufs; clients reach {}",
            devs.len(),
            Ipv4Addr::from(outside_ip)
        ));
        let most: usize = config
            .endpoints
            .iter()
            .map(|ep| endpoint::max_connections(loaded, ep))
            .sum();
        let room = cores * dp.sessions_per_core as usize;
        if most > room {
            log(&format!(
                "note: the endpoints take up to {most} connections and the cores have room for {room} sessions ({cores} x [dataplane] sessions_per_core {}): a connection past that is refused for now (its client tries again)",
                dp.sessions_per_core
            ));
        }
        Ok(Self {
            stop,
            outbox: Outbox::new(mailboxes),
            servers,
            verifier,
            groups: compiled.groups,
            pushed: config
                .endpoints
                .iter()
                .map(endpoint::pushed_routes)
                .collect(),
            logs: open_logs(loaded),
            stats,
            endpoint_ids: config.endpoints.iter().map(|e| e.id.to_string()).collect(),
            running: config.endpoints.clone(),
            version: 1,
            core_room,
            connections: HashMap::new(),
            last_order: 0,
            closing: HashMap::new(),
            ended: Ended::default(),
            devs,
            pool,
            _eal: eal,
        })
    }

    fn core_of(&self, peer: u32) -> usize {
        self.core_room.core_of(peer)
    }

    /// Sends a command to a core: delayed, in order, while its queue is full; never lost but
    /// for a control datagram (`Outbox`).
    fn command(&mut self, core: usize, c: Command) {
        self.outbox.send(core, c);
    }

    /// Serves the cores' reports and the control channels' timers; returns when the control
    /// thread should come back at the latest.
    pub fn poll(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        // What waited for room in the cores' queues goes first (the loop comes back every
        // millisecond, so a core that caught up gets it within one).
        self.outbox.flush();
        for core in 0..self.outbox.mailboxes().len() {
            for _ in 0..4096 {
                let Some(r) = self.outbox.mailboxes()[core].reports.pop() else {
                    break;
                };
                self.report(r, now, unix);
            }
        }
        // The password checks done since the last turn complete their authentications.
        let verdicts: Vec<_> = self.verifier.verdicts().collect();
        for (e, id, verdict) in verdicts {
            if let Some(s) = self.servers.get_mut(e) {
                s.verified(now, unix, id, verdict);
            }
        }
        for i in 0..self.servers.len() {
            if self.servers[i].poll_timeout().is_some_and(|t| t <= now) {
                self.servers[i].handle_timeout(now);
            }
            self.drain(i);
        }
        self.finish_overdue(now);
        self.ended.expire(now);
        let closing = self.closing.values().map(|c| c.until).min();
        self.servers
            .iter()
            .filter_map(Server::poll_timeout)
            .chain(closing)
            .min()
    }

    fn report(&mut self, r: Report, now: Instant, unix: u64) {
        match r {
            Report::Punted {
                payload,
                remote,
                local,
                endpoint,
            } => {
                let e = usize::from(endpoint);
                if let Some(s) = self.servers.get_mut(e) {
                    s.handle_datagram(now, unix, remote, local, &payload);
                    self.drain(e);
                }
            }
            Report::ClientExited { peer } => {
                self.end(peer.0, "", CloseReason::ClientExit, now);
            }
            Report::Idle { peer } => {
                self.end(
                    peer.0,
                    "RESTART,ping-restart",
                    CloseReason::Terminated("no packets for ping-restart seconds".into()),
                    now,
                );
            }
            Report::RenegotiateSoon { peer } => {
                // The send packet-id nears its end: a new key before it wraps.
                for e in 0..self.servers.len() {
                    if self.servers[e].renegotiate(peer.0, now) {
                        log(&format!(
                            "peer {} nears the end of its packet counter: renegotiating",
                            peer.0
                        ));
                        self.drain(e);
                    }
                }
            }
            Report::Floated { peer, remote } => {
                log(&format!(
                    "peer {} floated to {}:{}",
                    peer.0,
                    Ipv4Addr::from(remote.ip),
                    remote.port
                ));
                // The control channel follows (renegotiations come from the new address),
                // unless another client's session is there: then the session that floated ends.
                let mut moved = false;
                for e in 0..self.servers.len() {
                    match self.servers[e].float(peer.0, remote, now) {
                        Float::Moved => moved = true,
                        Float::Refused => log(&format!(
                            "peer {} floated to an address another client's session holds: \
                             ending it",
                            peer.0
                        )),
                        Float::Unchanged => continue,
                    }
                    self.drain(e);
                }
                if let Some(c) = self.connections.get_mut(&peer.0).filter(|_| moved) {
                    c.device_ip = format!("{}:{}", Ipv4Addr::from(remote.ip), remote.port);
                    c.remote = remote;
                }
            }
            Report::Removed { peer, traffic, .. } if self.closing.contains_key(&peer.0) => {
                // The final counters of a connection that ended: its last line now.
                self.finish_closing(peer.0, Some(traffic));
            }
            Report::Removed {
                peer,
                traffic,
                because,
            } if lost(because).is_some() && self.connections.contains_key(&peer.0) => {
                // No core carries this connection: the client is told to start over, and the
                // connection ends with the reason (its status message, the connection log),
                // with these counters, the last any core will send.
                let why = lost(because).unwrap_or_default();
                if let Some(c) = self.connections.get(&peer.0) {
                    log(&format!(
                        "connection {} has no data plane: {why}; ending it",
                        c.connection_id
                    ));
                }
                self.end(
                    peer.0,
                    "RESTART,the server could not take the connection",
                    CloseReason::Terminated(format!("the data plane could not keep it: {why}")),
                    now,
                );
                self.finish_closing(peer.0, Some(traffic));
            }
            Report::Traffic { peer, traffic } | Report::Removed { peer, traffic, .. } => {
                let due = self.connections.get_mut(&peer.0).and_then(|c| {
                    set_traffic(c, traffic);
                    let due = c
                        .last_logged
                        .is_none_or(|t| now.saturating_duration_since(t).as_secs() >= 60);
                    if due {
                        c.last_logged = Some(now);
                    }
                    due.then(|| c.clone())
                });
                if let Some(c) = due {
                    // Counters while connected, once a minute.
                    self.log_line(usize::from(c.endpoint), LogType::Reset, &c, None, None);
                }
            }
            Report::Retired(_) => {}
        }
    }

    fn end(&mut self, peer: u32, message: &str, reason: CloseReason, now: Instant) {
        let Some(e) = self.connections.get(&peer).map(|c| usize::from(c.endpoint)) else {
            return;
        };
        if let Some(s) = self.servers.get_mut(e) {
            s.terminate(peer, message, reason, now);
            self.drain(e);
        }
    }

    /// Ends the connections of `peers`: `message` to each client, `why` on record.
    fn end_each(&mut self, peers: Vec<u32>, message: &str, why: &str, now: Instant) {
        for peer in peers {
            self.end(peer, message, CloseReason::Terminated(why.into()), now);
        }
    }

    fn drain(&mut self, e: usize) {
        // The password checks it asks for go to the checker threads (one they have no room
        // for is refused for now, its events then drained with the rest).
        if let Some(s) = self.servers.get_mut(e) {
            self.verifier.serve(e, s, || {
                let unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |t| t.as_secs());
                (Instant::now(), unix)
            });
        }
        // Events first: a new control peer is known to the cores before our answer to its
        // packet leaves (its next packets need it).
        while let Some(ev) = self.servers.get_mut(e).and_then(Server::poll_event) {
            self.event(e, ev);
        }
        while let Some(t) = self.servers.get_mut(e).and_then(Server::poll_transmit) {
            self.command(
                0,
                Command::Transmit {
                    payload: t.payload,
                    remote: t.remote,
                    local: t.local,
                },
            );
        }
    }

    fn event(&mut self, e: usize, ev: Event) {
        match ev {
            Event::KeysReady {
                peer_id,
                key_id,
                keys,
                first,
                client,
            } => {
                let core = self.core_of(peer_id);
                if first {
                    let groups = self
                        .groups
                        .get(e)
                        .map(|g| g.mask(client.identity.groups.iter().map(String::as_str)));
                    let info = SessionInfo {
                        peer: PeerId(peer_id),
                        endpoint: client.endpoint,
                        client_ip: u32::from(client.vip),
                        groups: groups.unwrap_or_default(),
                        remote: client.remote,
                        local: client.local,
                    };
                    self.command(
                        core,
                        Command::AddSession {
                            info,
                            key_id: KeyId(key_id),
                            keys,
                        },
                    );
                    self.last_order = next_order(self.last_order, SystemTime::now());
                    let c = Connection {
                        client_vpn_endpoint_id: self
                            .endpoint_ids
                            .get(e)
                            .cloned()
                            .unwrap_or_default(),
                        connection_id: connlog::connection_id(),
                        common_name: client.identity.common_name.clone(),
                        username: client.identity.username.clone(),
                        client_ip: client.vip,
                        device_ip: format!(
                            "{}:{}",
                            Ipv4Addr::from(client.remote.ip),
                            client.remote.port
                        ),
                        connection_established_time: rfc3339(SystemTime::now()),
                        ingress_bytes: 0,
                        egress_bytes: 0,
                        ingress_packets: 0,
                        egress_packets: 0,
                        status: ConnectionStatus {
                            code: "active".into(),
                            message: None,
                        },
                        endpoint: e as u16,
                        groups: client.identity.groups.clone(),
                        started: SystemTime::now(),
                        remote: client.remote,
                        last_logged: Some(Instant::now()),
                        order: self.last_order,
                    };
                    self.log_line(e, LogType::Attempt, &c, None, None);
                    log(&format!(
                        "connection {} established: {} (common name {}, username {}) from {}",
                        c.connection_id,
                        c.client_ip,
                        shown(c.common_name.as_deref()),
                        shown(c.username.as_deref()),
                        c.device_ip
                    ));
                    self.connections.insert(peer_id, c);
                } else {
                    self.command(
                        core,
                        Command::InstallKey {
                            peer: PeerId(peer_id),
                            key_id: KeyId(key_id),
                            keys,
                        },
                    );
                }
            }
            Event::RetirePreviousKey { peer_id } => {
                let core = self.core_of(peer_id);
                self.command(
                    core,
                    Command::RetirePreviousKey {
                        peer: PeerId(peer_id),
                    },
                );
            }
            Event::Closed {
                peer_id,
                reason,
                established,
                ..
            } => {
                if established {
                    let core = self.core_of(peer_id);
                    self.command(
                        core,
                        Command::RemoveSession {
                            peer: PeerId(peer_id),
                        },
                    );
                }
                if let Some(mut c) = self.connections.remove(&peer_id) {
                    log(&format!(
                        "connection {} closed: {}",
                        c.connection_id,
                        close_text(&reason)
                    ));
                    c.status = ConnectionStatus {
                        code: "terminating".into(),
                        message: Some(close_text(&reason)),
                    };
                    let end = SystemTime::now();
                    if established {
                        // Its last line waits for what the core counted since its last report.
                        let closing = Closing {
                            connection: c,
                            endpoint: e,
                            end,
                            until: Instant::now() + FINAL_COUNTERS_WAIT,
                        };
                        self.closing.insert(peer_id, closing);
                    } else {
                        self.finish(e, c, end);
                    }
                }
            }
            Event::ControlPeer { remote, present } => {
                self.outbox
                    .broadcast(|| Command::ControlPeer { remote, present });
            }
            Event::AuthFailed {
                remote,
                common_name,
                username,
                detail,
                reason,
            } => {
                let c = Connection {
                    client_vpn_endpoint_id: self.endpoint_ids.get(e).cloned().unwrap_or_default(),
                    connection_id: connlog::connection_id(),
                    common_name: common_name.clone(),
                    username: username.clone(),
                    client_ip: Ipv4Addr::UNSPECIFIED,
                    device_ip: format!("{}:{}", Ipv4Addr::from(remote.ip), remote.port),
                    connection_established_time: String::new(),
                    ingress_bytes: 0,
                    egress_bytes: 0,
                    ingress_packets: 0,
                    egress_packets: 0,
                    status: ConnectionStatus {
                        code: "failed".into(),
                        message: Some(detail.clone()),
                    },
                    endpoint: e as u16,
                    groups: Vec::new(),
                    started: SystemTime::now(),
                    remote,
                    last_logged: None,
                    // Never listed: only its connection-log line is written.
                    order: 0,
                };
                self.log_line(e, LogType::Attempt, &c, Some(&reason), None);
                log(&format!(
                    "connection from {}:{} refused: {detail} (common name {}, username {})",
                    Ipv4Addr::from(remote.ip),
                    remote.port,
                    shown(common_name.as_deref()),
                    shown(username.as_deref())
                ));
            }
        }
    }

    /// Ends every connection before the cores stop: each client is told to restart (so it
    /// comes back as soon as the appliance does, not at its ping-restart), and each
    /// connection's last connection-log line carries its core's final counters (waited for
    /// `FINAL_COUNTERS_WAIT` at most).
    ///
    /// Connections are ended only as fast as core 0, which sends every control datagram, takes
    /// them: a `Transmit` that finds its queue full is dropped, to be retransmitted, which no
    /// longer happens. The reports served while waiting can complete a handshake: that
    /// connection is ended too. The wait lasts until every core has taken every command (a
    /// core stops between polls and applies in one poll what it takes), so the last `RESTART`s
    /// leave before the cores stop; and until every client has acknowledged its `RESTART`
    /// (`Server::is_delivering`), `STOP_LINGER` at most, the control channels served
    /// meanwhile: a client whose `RESTART` was lost gets its retransmission, one in the middle
    /// of a renegotiation the key exchange that carries it.
    ///
    /// `interrupted` is asked while it waits (the daemon: whether a second SIGTERM or SIGINT
    /// came): once it says so, the waits end at once, and what is still open or waiting ends
    /// with the counters it has.
    pub fn shutdown(&mut self, mut interrupted: impl FnMut() -> bool) {
        // A client told to restart comes straight back: it is not taken, nor its connection
        // ended and told again until the linger is out.
        for s in &mut self.servers {
            s.stop_admitting();
        }
        self.outbox.broadcast(|| Command::StopAnswering);
        let mut paced = true;
        let mut hurried = false;
        let open: Vec<u32> = self.connections.keys().copied().collect();
        for peer in open {
            if paced && !hurried {
                match self.await_room_on_core_0(&mut interrupted) {
                    Some(true) => {}
                    Some(false) => {
                        log("core 0 has taken no command for 2 s: the remaining clients may not be told to restart");
                        paced = false;
                    }
                    None => hurried = true,
                }
            }
            self.end_for_shutdown(peer);
        }
        let now = Instant::now();
        let (counters_until, until) = (now + FINAL_COUNTERS_WAIT, now + STOP_LINGER);
        while !hurried {
            // Connections made since (handshakes completed by the reports served).
            let open: Vec<u32> = self.connections.keys().copied().collect();
            for peer in open {
                if self.room_on_core_0() {
                    self.end_for_shutdown(peer);
                }
            }
            let now = Instant::now();
            let settled = self.connections.is_empty()
                && self.closing.is_empty()
                && self.outbox.flush()
                && self
                    .outbox
                    .mailboxes()
                    .iter()
                    .all(|m| m.commands.is_empty());
            let delivering = self.servers.iter().any(|s| s.is_delivering(now));
            if (settled || now >= counters_until) && !delivering {
                break;
            }
            if now >= until {
                // The usual case, not a fault: an OpenVPN 2.6 client acts on a RESTART at once
                // and closes its socket without acknowledging it; the wait served the clients
                // whose first copy was lost (the copy sent again at 2 s).
                log(&format!(
                    "stopping: RESTARTs not acknowledged after {} s (OpenVPN clients close \
                     without acknowledging; lost ones were sent again meanwhile)",
                    STOP_LINGER.as_secs()
                ));
                break;
            }
            if interrupted() {
                hurried = true;
                break;
            }
            self.poll();
            std::thread::sleep(Duration::from_millis(1));
        }
        if hurried {
            log("a second stop signal: stopping at once");
        }
        // What is still open or waiting ends with the counters it has.
        let open: Vec<u32> = self.connections.keys().copied().collect();
        for peer in open {
            self.end_for_shutdown(peer);
        }
        let rest: Vec<u32> = self.closing.keys().copied().collect();
        for peer in rest {
            self.finish_closing(peer, None);
        }
    }

    /// Ends `peer`'s connection because the appliance stops.
    fn end_for_shutdown(&mut self, peer: u32) {
        self.end(
            peer,
            "RESTART,the server is shutting down",
            CloseReason::Terminated("the appliance stopped".into()),
            Instant::now(),
        );
    }

    /// Whether core 0's command queue has room for what ending one more connection sends it
    /// (its `RESTART` and any other datagram its control channel has to send, bounded by the
    /// reliable layer's window; its `RemoveSession`; the `ControlPeer` that forgets it), with
    /// nothing waiting ahead of them.
    fn room_on_core_0(&mut self) -> bool {
        const ONE_END: usize = 64;
        self.outbox.flush()
            && self
                .outbox
                .mailboxes()
                .first()
                .is_none_or(|m| m.commands.capacity() - m.commands.len() >= ONE_END)
    }

    /// Serves the reports until core 0 has room (`room_on_core_0`): `Some(true)` then,
    /// `Some(false)` if it took nothing for `FINAL_COUNTERS_WAIT`, `None` if `interrupted`
    /// said so first.
    fn await_room_on_core_0(&mut self, interrupted: &mut impl FnMut() -> bool) -> Option<bool> {
        let until = Instant::now() + FINAL_COUNTERS_WAIT;
        while !self.room_on_core_0() {
            if interrupted() {
                return None;
            }
            if Instant::now() >= until {
                return Some(false);
            }
            self.poll();
            std::thread::sleep(Duration::from_millis(1));
        }
        Some(true)
    }

    /// An ended connection's last connection-log line, and its place among the recently ended.
    fn finish(&mut self, e: usize, mut c: Connection, end: SystemTime) {
        c.status.code = "terminated".into();
        self.log_line(e, LogType::Reset, &c, None, Some(end));
        self.ended.push(Instant::now(), c);
    }

    /// Finishes the ended connections whose final counters did not come in time.
    fn finish_overdue(&mut self, now: Instant) {
        let overdue: Vec<u32> = self
            .closing
            .iter()
            .filter(|(_, c)| c.until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in overdue {
            self.finish_closing(peer, None);
        }
    }

    /// Finishes the ended connection of `peer` (if it waits), with its core's final counters
    /// when they came.
    fn finish_closing(&mut self, peer: u32, traffic: Option<Traffic>) {
        if let Some(mut c) = self.closing.remove(&peer) {
            if let Some(t) = traffic {
                set_traffic(&mut c.connection, t);
            }
            self.finish(c.endpoint, c.connection, c.end);
        }
    }

    /// Appends one line to the endpoint's connection log, if it has one.
    fn log_line(
        &mut self,
        e: usize,
        kind: LogType,
        c: &Connection,
        failure: Option<&FailureReason>,
        end: Option<SystemTime>,
    ) {
        let Some(Some(file)) = self.logs.get_mut(e) else {
            return;
        };
        let record = connlog::Connection {
            connection_id: c.connection_id.clone(),
            endpoint_id: c.client_vpn_endpoint_id.clone(),
            transport: "udp",
            start: c.started,
            client_ip: (!c.client_ip.is_unspecified()).then_some(c.client_ip),
            common_name: c.common_name.clone(),
            username: c.username.clone(),
            device_ip: std::net::IpAddr::V4(Ipv4Addr::from(c.remote.ip)),
            port: c.remote.port,
            ingress_bytes: c.ingress_bytes,
            egress_bytes: c.egress_bytes,
            ingress_packets: c.ingress_packets,
            egress_packets: c.egress_packets,
        };
        let line = connlog::format_line(kind, &record, failure, SystemTime::now(), end);
        if let Err(err) = file.append(&line) {
            log(&format!("connection log of endpoint {e}: {err}"));
        }
    }

    /// Every core's counters, as JSON for `describe-data-plane` and `sluice top`.
    pub fn describe(&self) -> serde_json::Value {
        let cores: Vec<serde_json::Value> = self
            .stats
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.snapshot();
                let drops: serde_json::Map<String, serde_json::Value> = s
                    .drops
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| ((*r).to_owned(), serde_json::json!(n)))
                    .collect();
                serde_json::json!({
                    "Core": i,
                    "BusyPolls": s.busy,
                    "IdlePolls": s.idle,
                    "RuleTableVersion": s.rules_version,
                    "ResetsAnswered": s.resets_answered,
                    "IcmpErrorsSent": s.icmp_errors_sent,
                    "Sessions": s.sessions,
                    "SessionCapacity": self.core_room.per_core(),
                    "Flows": s.flows,
                    "Drops": drops,
                })
            })
            .collect();
        // What each port was configured with: whether a NIC's offloads took effect is only
        // visible here (the test drivers offer none of them).
        let ports: Vec<serde_json::Value> = self
            .devs
            .iter()
            .map(|d| {
                serde_json::json!({
                    "PortId": d.id(),
                    "Driver": EthDev::info(d.id()).map(|i| i.driver).unwrap_or_default(),
                    "RxQueues": d.rx_queues(),
                    "TxQueues": d.tx_queues(),
                    "Rss": d.rss(),
                    "RxIpv4ChecksumOffload": d.rx_ipv4_checksum_offload(),
                    "TxMbufFastFree": d.tx_mbuf_fast_free(),
                })
            })
            .collect();
        serde_json::json!({
            "Cores": cores,
            "Ports": ports,
            "MbufsInUse": self.pool.in_use(),
            "ControlCommandsDropped": self.outbox.dropped(),
            "ControlCommandsWaiting": self.outbox.waiting(),
        })
    }

    /// Brings the metrics up to date (AWS's per-endpoint names in Prometheus style, per core
    /// every drop reason, busy and idle polls, rule-table version, sessions and flows, and the
    /// mbufs out of the pool).
    pub fn update_metrics(&self) {
        let snaps: Vec<_> = self.stats.iter().map(|s| s.snapshot()).collect();
        for (e, id) in self.endpoint_ids.iter().enumerate() {
            let active = self
                .connections
                .values()
                .filter(|c| usize::from(c.endpoint) == e)
                .count();
            metrics::gauge!("sluice_active_connections_count", "endpoint" => id.clone())
                .set(active as f64);
            if let Some(s) = self.servers.get(e) {
                let c = s.counters();
                metrics::counter!("sluice_authentication_failures_total", "endpoint" => id.clone())
                    .absolute(c.auth_failures);
                metrics::counter!("sluice_handshakes_total", "endpoint" => id.clone())
                    .absolute(c.handshakes);
                metrics::counter!("sluice_connections_refused_for_room_total", "endpoint" => id.clone())
                    .absolute(c.refused_for_room);
                metrics::counter!("sluice_password_checks_total", "endpoint" => id.clone())
                    .absolute(c.verifications);
                metrics::counter!("sluice_password_checks_refused_total", "endpoint" => id.clone())
                    .absolute(c.verifier_busy);
                for (reason, n) in c.refusals() {
                    metrics::counter!("sluice_control_refused_total", "endpoint" => id.clone(), "reason" => reason)
                        .absolute(n);
                }
                // Set on every update, so that a reload that drops the CRL drops the gauge too
                // (gauges not set for `GAUGE_IDLE` leave the scrape).
                if let Some(t) = s.crl_next_update() {
                    metrics::gauge!("sluice_crl_next_update_timestamp_seconds", "endpoint" => id.clone())
                        .set(t as f64);
                }
            }
            let mut t = Traffic::default();
            for s in &snaps {
                if let Some(x) = s.endpoints.get(e) {
                    t.ingress_bytes += x.ingress_bytes;
                    t.ingress_packets += x.ingress_packets;
                    t.egress_bytes += x.egress_bytes;
                    t.egress_packets += x.egress_packets;
                }
            }
            metrics::counter!("sluice_ingress_bytes_total", "endpoint" => id.clone())
                .absolute(t.ingress_bytes);
            metrics::counter!("sluice_ingress_packets_total", "endpoint" => id.clone())
                .absolute(t.ingress_packets);
            metrics::counter!("sluice_egress_bytes_total", "endpoint" => id.clone())
                .absolute(t.egress_bytes);
            metrics::counter!("sluice_egress_packets_total", "endpoint" => id.clone())
                .absolute(t.egress_packets);
        }
        for (core, s) in snaps.iter().enumerate() {
            let core = core.to_string();
            for (reason, n) in &s.drops {
                metrics::counter!("sluice_core_drops_total", "core" => core.clone(), "reason" => *reason)
                    .absolute(*n);
            }
            metrics::counter!("sluice_core_polls_total", "core" => core.clone(), "kind" => "busy")
                .absolute(s.busy);
            metrics::counter!("sluice_core_polls_total", "core" => core.clone(), "kind" => "idle")
                .absolute(s.idle);
            metrics::counter!("sluice_core_resets_answered_total", "core" => core.clone())
                .absolute(s.resets_answered);
            metrics::counter!("sluice_core_icmp_errors_sent_total", "core" => core.clone())
                .absolute(s.icmp_errors_sent);
            metrics::gauge!("sluice_core_rule_table_version", "core" => core.clone())
                .set(s.rules_version as f64);
            metrics::gauge!("sluice_core_sessions", "core" => core.clone()).set(s.sessions as f64);
            metrics::gauge!("sluice_core_session_capacity", "core" => core.clone())
                .set(f64::from(self.core_room.per_core()));
            metrics::gauge!("sluice_core_flows", "core" => core.clone()).set(s.flows as f64);
        }
        metrics::counter!("sluice_control_commands_dropped_total").absolute(self.outbox.dropped());
        metrics::gauge!("sluice_control_commands_waiting").set(self.outbox.waiting() as f64);
        // Out of the pool: on the ports' rings, in the cores' hands, queued for a neighbour or
        // a fragment (steady under steady traffic; a count that keeps growing is a leak).
        metrics::gauge!("sluice_mbufs_in_use").set(f64::from(self.pool.in_use()));
    }

    /// Puts a new configuration in force: a new rule generation on every core, with the
    /// sessions' group sets under its group numbering in the same step; new TLS settings
    /// (certificate, CRL: a handshake under way is checked against the new one too), users
    /// file, connection limits, pushed routes and DNS servers and session timeout for new
    /// connections; connection logs reopened where their settings changed. Connections made
    /// follow it: one whose client certificate the new TLS settings no longer accept (another
    /// client CA, revoked by the CRL, expired since) ends (`Server::set_tls`); of the others,
    /// as `verdict` says, one whose user the users file no longer has or whose endpoint's DNS
    /// servers changed ends, one whose user's groups changed there has its new group set put
    /// in force with the table.
    ///
    /// The endpoints served are those the data plane started with, matched by ID wherever
    /// they are in the file. One created since is served after a restart; one deleted since
    /// (it had no target network left: `check_change`) stays with none, so it takes no
    /// connection (`config::change::needs_restart` names both).
    ///
    /// # Errors
    /// A file of an endpoint cannot be read, or the rules do not compile; nothing changed.
    pub fn apply(&mut self, loaded: &Loaded) -> Result<(), String> {
        let mut view = loaded.clone();
        let gone;
        (view.config.endpoints, gone) =
            served_endpoints(&self.endpoint_ids, &self.running, &loaded.config.endpoints);
        let config = &view.config;
        let compiled = compile::compile_numbered(config, self.version + 1, &self.groups)
            .map_err(|e| e.to_string())?;
        // Everything read from files first: a reload that cannot be read changes nothing.
        let mut files = Vec::new();
        for (e, (ep, gone)) in config.endpoints.iter().zip(&gone).enumerate() {
            if *gone {
                files.push(None);
            } else {
                files.push(Some((
                    endpoint::tls(&view, ep)?,
                    endpoint::authenticator(&view, e)?,
                )));
            }
        }
        // The new TLS settings first: each server verifies its established sessions' client
        // chains again under them, and ends those they no longer accept (another client CA,
        // revoked by the CRL, expired since), the reason on record (`Server::set_tls`): a
        // batch now, whose ends are taken in before the rest of the reload weighs the
        // connections left, the others over the next turns.
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        for (e, f) in files.iter().enumerate() {
            if let (Some((tls, _)), Some(s)) = (f, self.servers.get_mut(e)) {
                s.set_tls(tls.clone(), now, unix);
            }
            self.drain(e);
        }
        // The routes each endpoint pushes from now on.
        let pushed: Vec<_> = config
            .endpoints
            .iter()
            .map(endpoint::pushed_routes)
            .collect();
        // What the reload does to each connection left: its user removed ends it, a user's
        // new groups are put in force with the table.
        let reloaded: Vec<Reloaded<'_>> = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(e, ep)| Reloaded {
                directory: files
                    .get(e)
                    .and_then(Option::as_ref)
                    .and_then(|(_, auth)| auth.directory.as_deref()),
                unassociated: ep.target_networks.is_empty(),
                dns_changed: self
                    .running
                    .get(e)
                    .is_some_and(|r| r.dns_servers != ep.dns_servers),
                reconnect_for_routes: config.appliance.reconnect_on_route_change
                    && self.pushed.get(e) != pushed.get(e),
            })
            .collect();
        let verdicts: HashMap<u32, Verdict> = self
            .connections
            .iter()
            .filter_map(|(p, c)| {
                let v = verdict(c, reloaded.get(usize::from(c.endpoint))?);
                (v != Verdict::Stays).then_some((*p, v))
            })
            .collect();
        drop(reloaded);
        self.version += 1;
        // Each session's groups under the new numbering, with the table: a core never decides
        // a packet under one and the other's old self. A connection about to end has none.
        let regroup = regroup(
            self.outbox.mailboxes().len(),
            self.connections.iter().map(|(p, c)| {
                let after = match verdicts.get(p) {
                    Some(Verdict::Regroup(g)) => g.as_slice(),
                    Some(Verdict::Ends { .. }) => &[],
                    _ => c.groups.as_slice(),
                };
                (*p, usize::from(c.endpoint), c.groups.as_slice(), after)
            }),
            &self.groups,
            &compiled.groups,
            |peer| self.core_room.core_of(peer),
        );
        let table = Arc::new(compiled.table);
        for (core, groups) in regroup.into_iter().enumerate() {
            let rules = Arc::clone(&table);
            self.command(
                core,
                if groups.is_empty() {
                    Command::InstallRules(rules)
                } else {
                    Command::InstallRulesAndGroups { rules, groups }
                },
            );
        }
        self.groups = compiled.groups;
        let mut ends = Vec::new();
        for (peer, v) in verdicts {
            match v {
                Verdict::Regroup(groups) => {
                    if let Some(c) = self.connections.get_mut(&peer) {
                        log(&format!(
                            "connection {}: the users file now gives {} the groups [{}]",
                            c.connection_id,
                            shown(c.username.as_deref()),
                            groups.join(", ")
                        ));
                        c.groups = groups;
                    }
                }
                Verdict::Ends { message, why } => ends.push((peer, message, why)),
                Verdict::Stays => {}
            }
        }
        for (e, ((s, f), ep)) in self
            .servers
            .iter_mut()
            .zip(files)
            .zip(&config.endpoints)
            .enumerate()
        {
            // The users file too: a user removed or changed there is checked so at the next
            // authentication (and, connected, was weighed above).
            if let Some((_, auth)) = f {
                s.set_authenticator(auth, unix);
            }
            s.set_dns(ep.dns_servers.clone());
            s.set_banner(endpoint::banner(ep));
            s.set_session_timeout(endpoint::session_timeout(ep));
            if self.running.get(e).map(|r| &r.connection_log) != Some(&ep.connection_log) {
                if let Some(l) = self.logs.get_mut(e) {
                    *l = open_log(&view, ep);
                }
            }
            s.set_reneg(endpoint::reneg(&view), Instant::now());
            // A target network associated or disassociated changes the endpoint's limit.
            s.set_max_sessions(endpoint::max_connections(&view, ep));
            s.set_routes(pushed.get(e).cloned().flatten());
        }
        self.pushed = pushed;
        // New routes reach clients at their next connection; on request, right away (above).
        let now = Instant::now();
        ends.sort_unstable_by_key(|(peer, ..)| *peer);
        for (peer, message, why) in ends {
            self.end(peer, message, CloseReason::Terminated(why.into()), now);
        }
        self.running = view.config.endpoints;
        Ok(())
    }

    /// Whether an endpoint of ID `id` exists: one the data plane serves (it started with it; a
    /// deleted one is served too, taking no connection, until a restart) or one the running
    /// configuration has (created since, served after a restart).
    pub fn knows(&self, id: &str) -> bool {
        self.endpoint_ids.iter().any(|e| e == id)
            || self.running.iter().any(|e| e.id.to_string() == id)
    }

    /// The connections of `endpoint` (all when `None`), active and recently ended, in no
    /// particular order: describe's pages sort them (`admin::paging`, by establishment, then
    /// connection id).
    pub fn connections(&self, endpoint: Option<&str>) -> Vec<&Connection> {
        self.connections
            .values()
            .chain(self.closing.values().map(|c| &c.connection))
            .chain(self.ended.listed(Instant::now()))
            .filter(|c| endpoint.is_none_or(|e| c.client_vpn_endpoint_id == e))
            .collect()
    }

    /// Terminates the active connections of `endpoint` with `connection_id` or `username`;
    /// returns them as they were.
    pub fn terminate(
        &mut self,
        endpoint: &str,
        connection_id: Option<&str>,
        username: Option<&str>,
    ) -> Vec<Connection> {
        let hits: Vec<(u32, Connection)> = self
            .connections
            .iter()
            .filter(|(_, c)| c.client_vpn_endpoint_id == endpoint)
            .filter(|(_, c)| {
                connection_id.is_some_and(|id| c.connection_id == id)
                    || username.is_some_and(|u| c.username.as_deref() == Some(u))
            })
            .map(|(p, c)| (*p, c.clone()))
            .collect();
        // The administrator wants the user to authenticate again: each connection's
        // auth-token is refused from now on (its client, refused with it at its reconnection,
        // asks for its password), the user's other connections keeping theirs.
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        for (peer, c) in &hits {
            if let Some(s) = self.servers.get_mut(usize::from(c.endpoint)) {
                s.revoke_token(*peer, unix);
            }
        }
        let peers = hits.iter().map(|(p, _)| *p).collect();
        self.end_each(
            peers,
            "RESTART,terminated by the administrator",
            "terminated by the administrator",
            Instant::now(),
        );
        hits.into_iter().map(|(_, c)| c).collect()
    }
}

/// What `[dataplane]` sets on each core: the outside port's MTU and the per-source budgets;
/// the flows one session may hold (the default, from the core's flow capacity) and their
/// idle timeouts.
fn apply_file_settings(
    cfg: &mut WorkerConfig,
    dp: &crate::config::schema::Dataplane,
    outside: usize,
) {
    if let Some(p) = dp.ports.get(outside) {
        cfg.outside_mtu = p.mtu;
    }
    cfg.punt_budget = dp.control_packets.pair();
    cfg.answer_budget = dp.reset_answers.pair();
    cfg.icmp_error_budget = dp.icmp_errors.pair();
    // Unset: the default share of the core's flow table.
    cfg.flows_per_session = dp.flows_per_session.map_or_else(
        || sluice_engine::flow::default_flows_per_session(cfg.flow_capacity),
        |n| (n as usize).min(cfg.flow_capacity),
    );
    let t = dp.flow_timeouts;
    cfg.timeouts = sluice_engine::flow::Timeouts {
        tcp_established: t.tcp_established,
        tcp_transitory: t.tcp_transitory,
        udp: t.udp,
        icmp: t.icmp,
    };
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        dpdk::wait_all();
        for d in &mut self.devs {
            // The cores are done and their queues dropped with them, so none is out; what can
            // still fail is the driver's own stop, logged here (a port that still had a queue
            // out would be closed when that queue goes).
            if let Err(e) = d.stop() {
                log(&e.to_string());
            }
        }
        log("data plane stopped");
    }
}

/// Why a connection has no data plane, for a core's `Removal` other than `Asked`.
fn lost(because: Removal) -> Option<&'static str> {
    match because {
        Removal::Asked => None,
        Removal::Replaced => Some("another session took its client address on its core"),
        Removal::TableFull => {
            Some("its core's session table is full (dataplane.sessions_per_core)")
        }
        Removal::KeysRefused => Some("its core refused its data-channel keys"),
        Removal::WrongCore => Some("it was sent to a core that does not own its peer-id"),
    }
}

fn set_traffic(c: &mut Connection, t: Traffic) {
    c.ingress_bytes = t.ingress_bytes;
    c.egress_bytes = t.egress_bytes;
    c.ingress_packets = t.ingress_packets;
    c.egress_packets = t.egress_packets;
}

fn close_text(r: &CloseReason) -> String {
    match r {
        CloseReason::ClientExit => "the client disconnected".into(),
        CloseReason::HandshakeTimeout => "handshake timeout".into(),
        CloseReason::SessionTimeout => "session timeout".into(),
        CloseReason::Terminated(why) => why.clone(),
        CloseReason::AuthFailed => "authentication failed".into(),
        CloseReason::Restarted => "the client reconnected".into(),
        CloseReason::PeerMisbehaved(what) => format!("protocol violation: {what}"),
    }
}

/// The connection log of every endpoint that has one enabled (10 MiB files, 5 kept).
fn open_logs(loaded: &Loaded) -> Vec<Option<RotatingLog>> {
    loaded
        .config
        .endpoints
        .iter()
        .map(|ep| open_log(loaded, ep))
        .collect()
}

/// The connection log of `ep`, if it keeps one (a log that cannot be opened now is said, and
/// opened at its first line that can be written).
fn open_log(loaded: &Loaded, ep: &Endpoint) -> Option<RotatingLog> {
    if !ep.connection_log.enabled {
        return None;
    }
    let path = match &ep.connection_log.path {
        Some(p) => crate::config::pki::resolve(&loaded.base_dir(), p),
        None => crate::config::pki::resolve(
            &loaded.base_dir(),
            &loaded
                .config
                .appliance
                .state_dir
                .join(format!("{}.log", ep.id)),
        ),
    };
    let (file, err) = RotatingLog::open_or_later(&path, 10 << 20, 5);
    if let Some(err) = err {
        log(&format!(
            "connection log {} cannot be opened: {err}; endpoint {} tries again at each line",
            path.display(),
            ep.id
        ));
    }
    Some(file)
}

#[cfg(test)]
mod shutdown_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each connection orders after the one before, at the clock's nanosecond or, if the
    /// clock has not moved or stepped back, the nanosecond after the last.
    #[test]
    fn connections_order_by_arrival_whatever_the_clock_does() {
        let at = |ns: u64| UNIX_EPOCH + Duration::from_nanos(ns);
        assert_eq!(next_order(0, at(5_000)), 5_000);
        assert_eq!(next_order(5_000, at(9_000)), 9_000);
        // The same nanosecond, and a clock stepped back: still after.
        assert_eq!(next_order(9_000, at(9_000)), 9_001);
        assert_eq!(next_order(9_001, at(1_000)), 9_002);
        // A clock before the epoch, and a last order at the end of the range.
        assert_eq!(next_order(7, UNIX_EPOCH - Duration::from_secs(1)), 8);
        assert_eq!(next_order(u128::MAX, at(1)), u128::MAX);
        // The key sorts as the number does.
        let key = |order| {
            Connection {
                order,
                ..made(None, &[])
            }
            .paging_key()
        };
        assert!(key(9) < key(10) && key(10) < key(u128::MAX));
    }

    /// A connection established after a page was given comes on a later page, even when it
    /// was made in the same second as the page's last item and its random id sorts before
    /// that item's: keyed by time and id, as before, it was skipped.
    #[test]
    fn a_connection_made_in_the_same_second_as_a_pages_last_is_on_the_next_page() {
        use crate::admin::cli::Listing;
        use crate::admin::paging::{page, Order};
        let made_at = |order: u128, id: &str| Connection {
            connection_id: id.to_owned(),
            connection_established_time: "2026-12-06T09:00:00Z".to_owned(),
            order,
            ..made(None, &[])
        };
        let mut list: Vec<Connection> = (1..=5)
            .map(|i| {
                made_at(
                    i,
                    &format!("cvpn-connection-{:017x}", 0xf_u64 << 60 | i as u64),
                )
            })
            .collect();
        fn ask(
            list: &[Connection],
            token: Option<String>,
        ) -> crate::admin::paging::Page<&Connection> {
            page(
                list.iter().collect::<Vec<_>>(),
                "connections-in-order",
                Order::ByKey,
                |c| c.paging_key(),
                &Listing {
                    max_results: Some(5),
                    next_token: token,
                    ..Listing::default()
                },
            )
            .unwrap()
        }
        let first = ask(&list, None);
        assert_eq!(first.items.len(), 5);
        assert!(first.next_token.is_none(), "five of five: the last page");
        // Six now: the first page of five, with a token after its last item.
        list.push(made_at(6, "cvpn-connection-e0000000000000006"));
        let first = ask(&list, None);
        let token = first.next_token.clone();
        assert_eq!(first.items.last().map(|c| c.order), Some(5));
        // Made in the same second, after the page was given, its id before every listed one.
        list.push(made_at(7, "cvpn-connection-00000000000000007"));
        let next = ask(&list, token);
        let ids: Vec<&str> = next
            .items
            .iter()
            .map(|c| c.connection_id.as_str())
            .collect();
        assert_eq!(
            ids,
            [
                "cvpn-connection-e0000000000000006",
                "cvpn-connection-00000000000000007"
            ]
        );
    }

    #[test]
    fn the_file_sets_each_cores_mtu_budgets_and_flow_timeouts() {
        let dp: crate::config::schema::Dataplane = toml::from_str(
            r#"
            outside = "up"
            reset_answers = { burst = 2000, per_second = 200 }
            control_packets = { burst = 10, per_second = 5 }
            icmp_errors = { burst = 3, per_second = 2 }
            [[port]]
            name = "in"
            device = "net_null0"
            ip = "172.31.1.5/24"
            [[port]]
            name = "up"
            device = "net_null1"
            ip = "192.168.50.1/24"
            mtu = 1420
            "#,
        )
        .expect("parses");
        let mut cfg = WorkerConfig::new(0, 1, 1, Vec::new(), Vec::new());
        apply_file_settings(&mut cfg, &dp, 1);
        assert_eq!(cfg.outside_mtu, 1420);
        assert_eq!(cfg.answer_budget, (2000, 200));
        assert_eq!(cfg.punt_budget, (10, 5));
        assert_eq!(cfg.icmp_error_budget, (3, 2));
        let mut cfg = WorkerConfig::new(0, 1, 0, Vec::new(), Vec::new());
        apply_file_settings(&mut cfg, &crate::config::schema::Dataplane::default(), 0);
        assert_eq!(
            cfg.answer_budget,
            sluice_engine::worker::DEFAULT_ANSWER_BUDGET
        );
        assert_eq!(cfg.outside_mtu, DEFAULT_MTU);
        // A session's share of the core's flows follows the flow table's capacity.
        assert_eq!(cfg.flows_per_session, 32_768);
        cfg.flow_capacity = 1 << 20;
        apply_file_settings(&mut cfg, &crate::config::schema::Dataplane::default(), 0);
        assert_eq!(cfg.flows_per_session, 1 << 17);
        // Or the file's `flows_per_session`.
        let dp = crate::config::schema::Dataplane {
            flows_per_session: Some(100_000),
            ..crate::config::schema::Dataplane::default()
        };
        apply_file_settings(&mut cfg, &dp, 0);
        assert_eq!(cfg.flows_per_session, 100_000);
        // Flow timeouts: unset, the engine's own; or the file's.
        assert_eq!(cfg.timeouts, sluice_engine::flow::Timeouts::default());
        let dp = crate::config::schema::Dataplane {
            flow_timeouts: crate::config::schema::FlowTimeouts {
                tcp_established: 600,
                tcp_transitory: 5,
                udp: 7,
                icmp: 3,
            },
            ..crate::config::schema::Dataplane::default()
        };
        apply_file_settings(&mut cfg, &dp, 0);
        let t = cfg.timeouts;
        assert_eq!(
            (t.tcp_established, t.tcp_transitory, t.udp, t.icmp),
            (600, 5, 7, 3)
        );
    }

    fn endpoints(text: &str) -> Vec<Endpoint> {
        crate::config::parse(std::path::Path::new("t.toml"), text)
            .expect("parses")
            .endpoints
    }

    /// Two endpoints; the first's rules name two groups.
    fn two() -> String {
        crate::config::endpoint_toml(
            "cvpn-endpoint-0123456789abcdef0",
            "10.200.0.0/20",
            443,
            r#"
[[endpoint.authorization_rule]]
destination_cidr = "10.1.0.0/16"
access_group_id = "contractors"
[[endpoint.authorization_rule]]
destination_cidr = "10.2.0.0/16"
access_group_id = "finance""#,
        ) + &crate::config::endpoint_toml(
            "cvpn-endpoint-0123456789abcdef1",
            "10.210.0.0/20",
            1194,
            "",
        )
    }

    /// A reload finds the running endpoints by ID, not by place: a file that lists them the
    /// other way round, or deleted one and created another, does not give one endpoint's
    /// settings to another's server.
    #[test]
    fn a_reload_serves_the_running_endpoints_by_id() {
        let running = endpoints(&two());
        let ids: Vec<String> = running.iter().map(|e| e.id.to_string()).collect();
        let mut swapped = running.clone();
        swapped.reverse();
        let (served, gone) = served_endpoints(&ids, &running, &swapped);
        assert_eq!(gone, [false, false]);
        assert_eq!(served[0].client_cidr_block, running[0].client_cidr_block);
        assert_eq!(served[1].client_cidr_block, running[1].client_cidr_block);

        // The first deleted, a third created: the third waits for a restart, the first stays
        // with nothing to reach, the second is the second.
        let mut other = running[1].clone();
        other.id = "cvpn-endpoint-0123456789abcdef2".parse().expect("id");
        other.client_cidr_block = "10.220.0.0/20".parse().expect("cidr");
        let file = vec![running[1].clone(), other];
        let (served, gone) = served_endpoints(&ids, &running, &file);
        assert_eq!(gone, [true, false]);
        assert_eq!(served.len(), 2);
        assert_eq!(served[0].id, running[0].id);
        assert!(served[0].authorization_rules.is_empty() && served[0].target_networks.is_empty());
        assert_eq!(served[1].client_cidr_block, running[1].client_cidr_block);

        // The first written again with its ID but another client CIDR (it was deleted in an
        // earlier reload): it stays as it ran, taking no connection, until a restart.
        let mut again = running[0].clone();
        again.client_cidr_block = "10.230.0.0/20".parse().expect("cidr");
        let file = vec![again, running[1].clone()];
        let (served, gone) = served_endpoints(&ids, &running, &file);
        assert_eq!(gone, [true, false]);
        assert_eq!(served[0].client_cidr_block, running[0].client_cidr_block);
        assert!(served[0].target_networks.is_empty() && served[0].routes.is_empty());
    }

    /// Only the sessions whose groups gained or lost a number get a new set, on their own
    /// core: a revoked group's members lose theirs, and so stay out of a group that takes the
    /// number next.
    #[test]
    fn a_reload_regroups_the_sessions_its_numbering_changes() {
        let running = endpoints(&two());
        let old = compile::compile(
            &crate::config::parse(std::path::Path::new("t.toml"), &two()).expect("parses"),
            1,
        )
        .expect("compiles")
        .groups;
        let mut file = running.clone();
        file[0].authorization_rules.remove(0); // contractors revoked
        let mut config =
            crate::config::parse(std::path::Path::new("t.toml"), &two()).expect("parses");
        config.endpoints = file;
        let new = compile::compile_numbered(&config, 2, &old)
            .expect("compiles")
            .groups;
        let g = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let (contractor, accountant, both, nobody) = (
            g(&["contractors"]),
            g(&["finance"]),
            g(&["contractors", "finance"]),
            g(&[]),
        );
        let sessions = [
            (1u32, 0usize, contractor.as_slice(), contractor.as_slice()),
            (2, 0, accountant.as_slice(), accountant.as_slice()),
            (3, 0, both.as_slice(), both.as_slice()),
            (4, 0, nobody.as_slice(), nobody.as_slice()),
            (5, 1, contractor.as_slice(), contractor.as_slice()),
        ];
        let out = regroup(2, sessions.into_iter(), &old, &new, |peer| {
            peer as usize % 2
        });
        assert_eq!(
            out[1],
            [
                (PeerId(1), GroupMask::EMPTY),
                (PeerId(3), new[0].mask(["finance"]))
            ]
        );
        assert!(out[0].is_empty(), "{:?}", out[0]);
    }

    /// A users file as a directory: names and groups (passwords are not checked here).
    struct Users(Vec<(&'static str, &'static [&'static str])>);

    impl Directory for Users {
        fn password_hash(&self, _: &str) -> String {
            String::new()
        }

        fn user(&self, username: &str) -> Option<crate::auth::directory::User> {
            let (_, groups) = self.0.iter().find(|(n, _)| *n == username)?;
            Some(crate::auth::directory::User {
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                totp_secret: None,
            })
        }

        fn usernames(&self) -> Vec<String> {
            self.0.iter().map(|(n, _)| (*n).to_owned()).collect()
        }
    }

    /// A connection of endpoint 0 made by `username` (none: a certificate only) with
    /// `groups`.
    fn made(username: Option<&str>, groups: &[&str]) -> Connection {
        Connection {
            client_vpn_endpoint_id: "cvpn-endpoint-0123456789abcdef0".into(),
            connection_id: connlog::connection_id(),
            common_name: Some("client1".into()),
            username: username.map(str::to_owned),
            client_ip: Ipv4Addr::new(10, 200, 0, 2),
            device_ip: "192.0.2.10:40000".into(),
            connection_established_time: String::new(),
            ingress_bytes: 0,
            egress_bytes: 0,
            ingress_packets: 0,
            egress_packets: 0,
            status: ConnectionStatus {
                code: "active".into(),
                message: None,
            },
            endpoint: 0,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            started: SystemTime::now(),
            remote: sluice_engine::session::Remote {
                ip: 0xc000_020a,
                port: 40_000,
            },
            last_logged: None,
            order: 0,
        }
    }

    /// The users file governs the connections made, not only the next ones: a user no longer
    /// in it is ended (and told to reconnect, which the new file refuses), a user moved to
    /// other groups keeps the connection under the new groups only, and their session on its
    /// core gets the new set with the table although the groups' numbering did not change.
    #[test]
    fn a_reload_ends_a_removed_users_connection_and_regroups_a_moved_one() {
        let users = Users(vec![("alice", &["finance"]), ("carol", &["contractors"])]);
        let r = Reloaded {
            directory: Some(&users),
            unassociated: false,
            dns_changed: false,
            reconnect_for_routes: false,
        };
        let alice = made(Some("alice"), &["contractors"]);
        let g = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(verdict(&alice, &r), Verdict::Regroup(g(&["finance"])));
        assert_eq!(
            verdict(&made(Some("bob"), &["finance"]), &r),
            Verdict::Ends {
                message: "RESTART,user removed",
                why: "the user was removed from the users file",
            }
        );
        assert_eq!(
            verdict(&made(Some("carol"), &["contractors"]), &r),
            Verdict::Stays
        );
        let dave = Users(vec![("dave", &["finance", "contractors"])]);
        let r_dave = Reloaded {
            directory: Some(&dave),
            ..r
        };
        assert_eq!(
            verdict(&made(Some("dave"), &["contractors", "finance"]), &r_dave),
            Verdict::Stays
        );
        // A certificate alone names no user: nothing in the users file bears on it.
        assert_eq!(verdict(&made(None, &[]), &r), Verdict::Stays);

        // Alice's session leaves contractors for finance on its core, under an unchanged
        // numbering.
        let config = crate::config::parse(std::path::Path::new("t.toml"), &two()).expect("parses");
        let numbering = compile::compile(&config, 1).expect("compiles").groups;
        let new = compile::compile_numbered(&config, 2, &numbering)
            .expect("compiles")
            .groups;
        let (before, after) = (g(&["contractors"]), g(&["finance"]));
        let out = regroup(
            1,
            [(7u32, 0usize, before.as_slice(), after.as_slice())].into_iter(),
            &numbering,
            &new,
            |_| 0,
        );
        assert_eq!(out[0], [(PeerId(7), new[0].mask(["finance"]))]);
    }

    /// Describe lists an ended connection for an hour, as AWS does ("terminated within the
    /// last 60 minutes"), and the last `ENDED_KEPT` at most; those past the hour are forgotten.
    #[test]
    fn ended_connections_are_listed_for_an_hour_and_a_thousand_at_most() {
        let t0 = Instant::now();
        let minutes = |m: u64| t0 + Duration::from_secs(60 * m);
        let names = |e: &Ended, at: Instant| -> Vec<String> {
            e.listed(at).filter_map(|c| c.username.clone()).collect()
        };
        let mut e = Ended::default();
        e.push(t0, made(Some("alice"), &[]));
        e.push(minutes(30), made(Some("bob"), &[]));
        assert_eq!(names(&e, minutes(59)), ["alice", "bob"]);
        assert_eq!(names(&e, minutes(60)), ["bob"]);
        e.expire(minutes(60));
        assert_eq!(e.0.len(), 1, "alice's is forgotten, not only unlisted");
        for i in 0..ENDED_KEPT {
            e.push(minutes(31), made(Some(&format!("u{i}")), &[]));
        }
        let listed = names(&e, minutes(31));
        assert_eq!(listed.len(), ENDED_KEPT);
        assert_eq!(
            listed.first().map(String::as_str),
            Some("u0"),
            "bob's made room"
        );
        assert!(names(&e, minutes(91)).is_empty());
    }

    /// New DNS servers reset the endpoint's connections, as AWS's do ("Modifying the DNS
    /// server resets existing client connections"): each client is told to reconnect and is
    /// pushed the new servers; a reload that leaves them be keeps every connection.
    #[test]
    fn new_dns_servers_reset_the_endpoints_connections() {
        let users = Users(vec![("alice", &["finance"])]);
        let reload = |dns_changed| Reloaded {
            directory: Some(&users),
            unassociated: false,
            dns_changed,
            reconnect_for_routes: false,
        };
        for c in [made(Some("alice"), &["finance"]), made(None, &[])] {
            assert_eq!(
                verdict(&c, &reload(true)),
                Verdict::Ends {
                    message: "RESTART,the endpoint's DNS servers changed",
                    why: "the endpoint's DNS servers changed",
                }
            );
            assert_eq!(verdict(&c, &reload(false)), Verdict::Stays);
        }
    }
}
