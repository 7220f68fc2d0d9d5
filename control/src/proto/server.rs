//! The control-channel server of one endpoint: demultiplexes datagrams by client address,
//! answers hard resets with no state and creates a session when the client echoes our session
//! id (`admission`, within limits), authenticates, hands keys to the data plane
//! as events, pushes options, answers renegotiations, and keeps the timers.
//!
//! quinn-shaped sans-IO API: `handle_datagram(now, ...)`, `handle_timeout(now)`,
//! `poll_transmit()`, `poll_timeout()`, `poll_event()`. Wall-clock time (for certificate and
//! one-time-code checks) is passed in as Unix seconds.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::cookie::CookieKey;
use sluice_engine::crypto::{Cipher, KeyMaterial};
use sluice_engine::punt::PuntLimiter;

use super::admission::{self, Cookies};
use super::ippool::IpPool;
use super::key_method::{negotiate_cipher, PeerInfo, Secret};
use super::packet::{opcode, ControlPacket};
use super::push::{push_reply, PushOptions};
use super::room::{CoreRoom, Place};
use super::session::{Credentials, Identity, KeyPhase, Phase, Session, Step, PUSH_AGAIN_AFTER};
use super::tls::{ServerTls, TlsFailure};
use super::token::{Holder, Revoked, TokenKey, Validity};
use super::verify::{PasswordCheck, Verdict, Verification};
use super::Remote;
use crate::connlog::FailureReason;

/// An endpoint's control-channel settings.
#[derive(Clone)]
pub struct Settings {
    /// Endpoint index (as the data plane numbers them).
    pub endpoint: u16,
    /// TLS configuration (server chain, client CA and CRL).
    pub tls: ServerTls,
    /// Client address pool.
    pub pool: (Ipv4Addr, u8),
    /// Split tunnel routes (`None`: full tunnel).
    pub routes: Option<Vec<(Ipv4Addr, Ipv4Addr)>>,
    /// DNS servers pushed.
    pub dns: Vec<Ipv4Addr>,
    /// The client login banner, as the `echo` options pushed (`push::banner_options`).
    pub banner: Arc<[String]>,
    /// Pushed `ping`.
    pub ping: u32,
    /// Pushed `ping-restart`.
    pub ping_restart: u32,
    /// Deadline for a key negotiation (`hand-window`).
    pub hand_window: Duration,
    /// Maximum session duration.
    pub session_timeout: Duration,
    /// How long the previous key stays usable after a renegotiation.
    pub transition_window: Duration,
    /// Renegotiate a session's key when it is this old (OpenVPN's server-side `reneg-sec`);
    /// `None`: only when the client or the data plane asks.
    pub reneg: Option<Duration>,
    /// Connections at most (the quota). 0: the endpoint takes none, as it has no target
    /// network associated (`pending-associate`; the runtime's limit is a positive number per
    /// target network): a client is refused with `FailureReason::NoTargetNetwork`, not as
    /// over a limit.
    pub max_sessions: usize,
    /// Sessions in handshake at most.
    pub max_handshaking: usize,
    /// Sessions in handshake at most from one source address (`MAX_HANDSHAKING_PER_SOURCE`),
    /// so that a few addresses cannot take every handshake slot.
    pub max_handshaking_per_source: usize,
    /// New sessions per source address: a burst, and this many more a second. Counted when a
    /// client completes the stateless first exchange, so only from addresses that receive
    /// what we send.
    pub per_source: (u32, u32),
    /// Answers to first hard resets per source address: a burst, and this many more a second
    /// (what one address can make the server send it before any session exists).
    pub answers_per_source: (u32, u32),
    /// The key of the stateless session ids and the clock origin of its time slots, when
    /// shared with the data cores (which then answer first resets themselves); `None`: a key
    /// of the server's own, time counted from its first answer.
    pub cookies: Option<(Arc<CookieKey>, Instant)>,
    /// Username and password required (directory authentication).
    pub password_required: bool,
    /// The peer-ids this endpoint hands out. Endpoints of one appliance share the data plane,
    /// whose sessions are keyed by peer-id, so their ranges must not overlap
    /// (`peer_id_range`).
    pub peer_ids: Range<u32>,
    /// The data cores' room, shared with the other endpoints' servers: each session is given
    /// a peer-id on a core with room when it is authorised, and refused for now
    /// (`FailureReason::DataPlaneFull`) when no core has any. `None`: no such limit (a data
    /// plane that takes every session).
    pub room: Option<Arc<CoreRoom>>,
    /// Established sessions whose client chain one turn verifies again after `Server::set_tls`
    /// (`REVERIFY_BATCH` by default): the rest wait for the next turns (`handle_timeout`), so
    /// a reload does not hold the control thread for the whole of a big endpoint.
    pub reverify_batch: usize,
}

/// Client chains verified again a turn after a reload (`Settings::reverify_batch`): a chain
/// costs one signature check or more (about 140 µs for the lab's RSA-2048 chain in a debug
/// build, `tls::tests::reverify_cost`, a fraction of that optimised), so a turn takes
/// milliseconds, and 100 000 sessions are gone through over a few hundred turns, not in one
/// that holds every other client's control channel for seconds.
pub const REVERIFY_BATCH: usize = 128;

/// How long a client refused for want of room waits before it tries again
/// (`AUTH_FAILED,TEMP[backoff N]`): long enough not to come back before anything can have
/// changed, short enough that a client gets in soon after a place frees.
pub const FULL_BACKOFF_SECS: u32 = 10;

/// What a client refused for want of room is told (the precise reason is the operator's, in
/// the connection log).
const FULL_MESSAGE: &str = "connection limit reached";

/// What a client of an endpoint with no target network is told (as the runtime tells a
/// connected client when the endpoint's last target network goes).
const NO_TARGET_MESSAGE: &str = "the endpoint has no target network";

/// What a client refused while the password checks are all taken is told.
const BUSY_MESSAGE: &str = "too many sign-ins at once";

/// What a client that offered no data cipher of ours is told: OpenVPN 2.6's server's words, so
/// that its user sees the cause (its own settings) where a plain AUTH_FAILED reads as a
/// refused certificate or password.
const NO_CIPHER_MESSAGE: &str =
    "AUTH_FAILED,Data channel cipher negotiation failed (no shared cipher)";

/// Password checks a server has out at most (`Server::set_verify_elsewhere`): handed out and
/// not yet answered, including those whose session has gone since. A client whose password
/// would be one more is refused for now (`FailureReason::VerifierBusy`, `AUTH_FAILED,TEMP`),
/// so that a flood of password attempts costs a bounded queue, not an unbounded one; a
/// renegotiation that would be one more has its new key fail, the session going on with its
/// active key.
pub const MAX_VERIFYING: usize = 64;

/// Sessions in handshake from one source address at most, by default
/// (`Settings::max_handshaking_per_source`). The per-source rate alone let one address hold
/// 32 + 4/s over a 60 s handshake window, 272 of the 1,024 slots, so four addresses filled
/// them; this cap makes that sixteen. A big NAT is not hindered: its clients complete their
/// handshakes in about a second, so even at its full rate it has a handful under way.
pub const MAX_HANDSHAKING_PER_SOURCE: usize = 64;

/// The largest peer-id: 24 bits, 0xffffff meaning "none" (the reference §7.1).
pub const MAX_PEER_ID: u32 = 0x00ff_fffe;

/// The peer-ids of endpoint `index` of `count`: the 24-bit space cut into equal parts.
pub fn peer_id_range(index: usize, count: usize) -> Range<u32> {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let index = u32::try_from(index).unwrap_or(u32::MAX).min(count - 1);
    let span = (MAX_PEER_ID + 1) / count;
    index * span..(index + 1) * span
}

impl Settings {
    /// Settings with the usual defaults around the given essentials.
    pub fn new(endpoint: u16, tls: ServerTls, pool: (Ipv4Addr, u8)) -> Self {
        Self {
            endpoint,
            tls,
            pool,
            routes: None,
            dns: Vec::new(),
            banner: Arc::from([]),
            ping: 10,
            ping_restart: 60,
            hand_window: Duration::from_secs(60),
            session_timeout: Duration::from_secs(24 * 3600),
            transition_window: Duration::from_secs(3600),
            reneg: None,
            max_sessions: 7000,
            max_handshaking: 1024,
            max_handshaking_per_source: MAX_HANDSHAKING_PER_SOURCE,
            per_source: (32, 4),
            answers_per_source: (32, 8),
            cookies: None,
            password_required: false,
            peer_ids: 0..MAX_PEER_ID + 1,
            room: None,
            reverify_batch: REVERIFY_BATCH,
        }
    }
}

/// Decides whether a client may connect and with which groups.
pub trait Authenticator {
    /// Checks the credentials; `unix_now` is wall-clock seconds (for one-time codes).
    ///
    /// # Errors
    /// The precise reason for refusing.
    fn authenticate(
        &mut self,
        unix_now: u64,
        common_name: Option<&str>,
        username: Option<&str>,
        password: Option<&Secret>,
    ) -> Result<Vec<String>, FailureReason>;

    /// The slow part of `authenticate`, to be run elsewhere (`Server::set_verify_elsewhere`):
    /// the password of these credentials and the hash to check it against, or `None` when
    /// there is none to check (`authenticate` then decides at once).
    ///
    /// # Errors
    /// A refusal that needs no password check (no certificate where one is required, no
    /// username or password, no one-time code in the password). None by default.
    fn password_check(
        &mut self,
        common_name: Option<&str>,
        username: Option<&str>,
        password: Option<&Secret>,
    ) -> Result<Option<PasswordCheck>, FailureReason> {
        let _ = (common_name, username, password);
        Ok(None)
    }

    /// `authenticate`, with the password already checked against the hash `password_check`
    /// gave (`matches`). By default `authenticate` (for an authenticator that asks for no
    /// check).
    ///
    /// # Errors
    /// As `authenticate`.
    fn authenticate_checked(
        &mut self,
        unix_now: u64,
        common_name: Option<&str>,
        username: Option<&str>,
        password: Option<&Secret>,
        matches: bool,
    ) -> Result<Vec<String>, FailureReason> {
        let _ = matches;
        self.authenticate(unix_now, common_name, username, password)
    }

    /// The groups of `username` (with the client certificate's `common_name`), who presents a
    /// valid auth-token instead of a password (`token`): the user must still be in the
    /// directory, and the certificate still as the policy requires.
    ///
    /// # Errors
    /// The user is no longer known (`BadPassword`, as for a wrong password), or the policy
    /// wants a certificate and there is none; by default tokens are not taken (`BadPassword`).
    fn groups_of(
        &mut self,
        common_name: Option<&str>,
        username: &str,
    ) -> Result<Vec<String>, FailureReason> {
        let _ = (common_name, username);
        Err(FailureReason::BadPassword)
    }

    /// The stored password hash of `username`, which the user's auth-tokens are bound to
    /// (`token::Holder`): once it changes (a new password in a reloaded users file), the
    /// tokens issued under the old one are refused. `None` by default (no such hash).
    fn password_hash(&mut self, username: &str) -> Option<String> {
        let _ = username;
        None
    }

    /// The names of the users it knows (its directory's), so that a reload can revoke the
    /// auth-tokens of those the next authenticator no longer has (`Server::set_authenticator`).
    /// None by default (an authenticator with no users, which no auth-token is issued for).
    fn usernames(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Takes over from `previous`, the authenticator this one replaces at a reload
    /// (`Server::set_authenticator`), what must outlast it: e.g. the one-time-code steps
    /// already used, so that a code accepted just before the reload is not accepted again
    /// after it. Nothing by default (an authenticator that keeps no such state).
    fn take_over(&mut self, previous: &mut Self)
    where
        Self: Sized,
    {
        let _ = previous;
    }
}

/// Accepts any client whose certificate TLS verified; no groups (mutual authentication only).
#[derive(Clone, Copy, Debug, Default)]
pub struct CertificateOnly;

impl Authenticator for CertificateOnly {
    fn authenticate(
        &mut self,
        _: u64,
        common_name: Option<&str>,
        _: Option<&str>,
        _: Option<&Secret>,
    ) -> Result<Vec<String>, FailureReason> {
        match common_name {
            Some(_) => Ok(Vec::new()),
            None => Err(FailureReason::BadCertificate),
        }
    }
}

/// Who a connected client is, for the data plane and the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// Its virtual address.
    pub vip: Ipv4Addr,
    /// Identity.
    pub identity: Identity,
    /// Outer address.
    pub remote: Remote,
    /// Listener.
    pub local: Remote,
    /// Endpoint index.
    pub endpoint: u16,
}

/// What `Server::float` did with a session's float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Float {
    /// The session's control channel is at the new address now.
    Moved,
    /// Another client's session holds the address: the session that floated was ended.
    Refused,
    /// Nothing: no such session, or already there.
    Unchanged,
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client said goodbye.
    ClientExit,
    /// The key negotiation did not finish in time.
    HandshakeTimeout,
    /// The maximum session duration passed.
    SessionTimeout,
    /// An administrator (or a CRL, or a reload) ended it.
    Terminated(String),
    /// Authentication failed.
    AuthFailed,
    /// The client started over with a new session.
    Restarted,
    /// The client broke the protocol.
    PeerMisbehaved(&'static str),
}

/// What the server tells its runtime.
#[derive(Debug)]
pub enum Event {
    /// Install these keys on the data plane.
    KeysReady {
        /// The session.
        peer_id: u32,
        /// The key's id.
        key_id: u8,
        /// Server-side key material.
        keys: Box<KeyMaterial>,
        /// Whether this is the session's first key (else a renegotiation).
        first: bool,
        /// Who the client is.
        client: ClientInfo,
    },
    /// The previous key of a session may be dropped.
    RetirePreviousKey {
        /// The session.
        peer_id: u32,
    },
    /// A session ended (it had keys installed if `established`).
    Closed {
        /// The session.
        peer_id: u32,
        /// Its outer address.
        remote: Remote,
        /// Why.
        reason: CloseReason,
        /// Whether the data plane knows it.
        established: bool,
    },
    /// A control-channel session now exists at `remote` (`present`), or no longer does: the
    /// data cores, which answer first resets themselves, punt other control packets only
    /// from such addresses (and valid echoes of our session id).
    ControlPeer {
        /// The client's address.
        remote: Remote,
        /// Whether a session is there now.
        present: bool,
    },
    /// A connection attempt was refused.
    AuthFailed {
        /// Its outer address.
        remote: Remote,
        /// Certificate common name, if any.
        common_name: Option<String>,
        /// User name, if any.
        username: Option<String>,
        /// Why.
        reason: FailureReason,
        /// The same in plain words, with specifics (for the log), e.g. when the CRL expired.
        detail: String,
    },
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// To.
    pub remote: Remote,
    /// From.
    pub local: Remote,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// Named counters of what the server refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams that did not parse.
    pub malformed: u64,
    /// Packets for no session (and not a hard reset).
    pub unknown_session: u64,
    /// First hard resets answered (with no state kept).
    pub stateless_resets: u64,
    /// First hard resets over the per-source budget of answers, not answered.
    pub answers_limited: u64,
    /// Packets for no session whose echoed session id is not one we gave (forged, for another
    /// address, or older than the handshake window).
    pub bad_session_id: u64,
    /// New sessions over the per-source rate.
    pub rate_limited: u64,
    /// New sessions refused because too many sessions are in handshake.
    pub handshake_cap: u64,
    /// New sessions refused because too many sessions from their source address are in
    /// handshake (`Settings::max_handshaking_per_source`).
    pub source_handshake_cap: u64,
    /// Protocol violations by established peers.
    pub misbehaved: u64,
    /// Sessions ended for floating onto an address another client's session holds
    /// (`Server::float`).
    pub floats_refused: u64,
    /// Authentication failures.
    pub auth_failures: u64,
    /// Of those, clients refused for want of room (`FailureReason::is_for_room`): the
    /// endpoint at its connection limit or out of client addresses, or no data core with room.
    pub refused_for_room: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Password checks handed out (`Server::poll_verification`).
    pub verifications: u64,
    /// Clients refused for now because `MAX_VERIFYING` checks were out
    /// (`FailureReason::VerifierBusy`), or because the checkers had no room (`Verdict::Unchecked`);
    /// and renegotiations refused so (their new key fails, the session goes on).
    pub verifier_busy: u64,
    /// Verdicts that came back for a session gone or restarted since, or no longer waiting
    /// for them: ignored.
    pub stale_verdicts: u64,
    /// Packets that would start a session while the appliance stops (`Server::stop_admitting`):
    /// not answered, so that a client told to restart tries the next daemon, not this one.
    pub stopping: u64,
}

impl Counters {
    /// What the server refused or ignored, by reason (the metrics' `reason` label): datagrams
    /// and sessions an attacker's flood would show in.
    pub const fn refusals(&self) -> [(&'static str, u64); 11] {
        [
            ("malformed", self.malformed),
            ("unknown_session", self.unknown_session),
            ("answers_limited", self.answers_limited),
            ("bad_session_id", self.bad_session_id),
            ("rate_limited", self.rate_limited),
            ("handshake_cap", self.handshake_cap),
            ("source_handshake_cap", self.source_handshake_cap),
            ("misbehaved", self.misbehaved),
            ("floats_refused", self.floats_refused),
            ("stale_verdicts", self.stale_verdicts),
            ("stopping", self.stopping),
        ]
    }
}

/// How long a closing session stays to get its last messages acknowledged.
const LINGER: Duration = Duration::from_secs(5);

/// How long a stopping appliance serves its control channels at most, once every session is
/// ended, for the clients' final messages (`Server::is_delivering`): the first retransmission
/// of a lost `RESTART` goes 2 s after it (`reliable::INITIAL_RTO`), and a client in the middle
/// of a renegotiation needs its key exchange finished first (its own retransmissions are due
/// at 2 s too); 4 s leaves those and their round trips room. The next retransmission, at 6 s,
/// would not be waited for: a stop must stay well within what a service manager allows it
/// (the unit's `TimeoutStopSec` is 15 s, for the pacing of the ends, the cores' final
/// counters and the ports' teardown as well).
pub const STOP_LINGER: Duration = Duration::from_secs(4);
/// Source addresses the per-source budgets keep at least (four-way sets; a fifth address in a
/// set takes the stalest one's place).
const SOURCES: usize = 4096;

/// The control-channel server of one endpoint.
pub struct Server<A: Authenticator> {
    settings: Settings,
    auth: A,
    sessions: HashMap<Remote, Session>,
    by_peer: HashMap<u32, Remote>,
    peer_ids: BTreeSet<u32>,
    next_peer: u32,
    pool: IpPool,
    cookies: Cookies,
    answers: PuntLimiter,
    new_sessions: PuntLimiter,
    /// The origin of the budgets' seconds (the first datagram's `now`).
    origin: Option<Instant>,
    retire_at: HashMap<u32, Instant>,
    /// Every session's next deadline (`deadline`), in order: the timers are an index, so
    /// `poll_timeout` and `handle_timeout` cost what is due, not what exists (the runtime asks
    /// every millisecond; a scan of ten thousand sessions took 1.5 ms).
    timers: BTreeSet<(Instant, u64)>,
    /// Each session's entry in `timers`, by `timer_key` of its address.
    scheduled: HashMap<Remote, Instant>,
    /// Sessions in handshake and established, kept as phases change (a new session is
    /// admitted and a first key authorised against these, without a scan).
    handshaking: usize,
    established: usize,
    /// Sessions in handshake by source address (only addresses with some).
    handshaking_from: HashMap<u32, usize>,
    /// When `set_reneg` last changed the interval.
    reneg_from: Option<Instant>,
    events: VecDeque<Event>,
    outbox: VecDeque<Transmit>,
    counters: Counters,
    /// The key of the auth-tokens this server pushes and takes back (`token`).
    tokens: TokenKey,
    /// The tokens of connections an administrator terminated (`revoke_token`), refused until
    /// they expire.
    revoked: Revoked,
    /// The latest expiry (Unix seconds) of the tokens this server has issued: a user removed
    /// is kept in `revoked` until then, when every token issued before has expired (each
    /// carries its expiry, which a later, longer session timeout does not move).
    tokens_expire: u64,
    /// Whether password checks are handed out (`set_verify_elsewhere`) rather than run here.
    verify_elsewhere: bool,
    /// The checks handed out and not yet answered, by job id, with the authentication each
    /// one's verdict completes if its session still waits for it (`Session::verifying`); each
    /// counts against `MAX_VERIFYING` until it comes back, its session gone or not.
    verifying: HashMap<u64, Parked>,
    /// Checks to be taken by the runtime (`poll_verification`).
    to_verify: VecDeque<Verification>,
    next_job: u64,
    /// Counted up at every `set_authenticator`: a verdict on a hash of the one replaced is not
    /// used, the credentials are checked again under the new one.
    auth_generation: u64,
    /// The established sessions (by peer-id, the last first) whose client chain is still to
    /// be verified under the TLS settings `set_tls` put in force, a batch a turn.
    reverify: Vec<u32>,
    /// When `set_tls` put them in force, on the monotonic and the wall clock (the chains are
    /// verified at the wall-clock time of their turn), and the turn at which the next batch is
    /// due (`poll_timeout`).
    reverify_clock: Option<(Instant, u64, Instant)>,
    /// Whether the appliance stops (`stop_admitting`): no new session.
    stopping: bool,
}

/// An authentication waiting for its password check (`Server::verified`).
struct Parked {
    /// The session (followed through a float), which must still wait for this job
    /// (`Session::verifying`).
    peer_id: u32,
    key_id: u8,
    creds: Credentials,
    first: bool,
    /// The authenticator the hash came from (`Server::auth_generation`).
    auth_generation: u64,
}

/// How far `Server::check` came.
enum Checked {
    /// Authorised: the data cipher and whether keys come from the exporter.
    Ready(Cipher, bool),
    /// The password must be checked first (`Server::verify_elsewhere`).
    Verify(PasswordCheck),
}

/// What the authenticator said of a password.
enum Authn {
    /// Authenticated, with these groups.
    Groups(Vec<String>),
    /// Not yet: this check first.
    Verify(PasswordCheck),
}

impl<A: Authenticator> Server<A> {
    /// A server for one endpoint.
    pub fn new(settings: Settings, auth: A) -> Self {
        let pool = IpPool::new(settings.pool.0, settings.pool.1);
        let next_peer = settings.peer_ids.start;
        let (burst, per_sec) = settings.answers_per_source;
        let answers = PuntLimiter::new(SOURCES, burst, per_sec);
        let (burst, per_sec) = settings.per_source;
        let new_sessions = PuntLimiter::new(SOURCES, burst, per_sec);
        let cookies = match &settings.cookies {
            Some((key, epoch)) => Cookies::new(Arc::clone(key), Some(*epoch)),
            None => Cookies::new(
                Arc::new(
                    CookieKey::generate(settings.hand_window.as_secs())
                        .expect("system random generator"),
                ),
                None,
            ),
        };
        let tokens = TokenKey::generate().expect("system random generator");
        Self {
            settings,
            auth,
            tokens,
            revoked: Revoked::default(),
            tokens_expire: 0,
            sessions: HashMap::new(),
            by_peer: HashMap::new(),
            peer_ids: BTreeSet::new(),
            next_peer,
            pool,
            cookies,
            answers,
            new_sessions,
            origin: None,
            retire_at: HashMap::new(),
            timers: BTreeSet::new(),
            scheduled: HashMap::new(),
            handshaking: 0,
            established: 0,
            handshaking_from: HashMap::new(),
            reneg_from: None,
            events: VecDeque::new(),
            outbox: VecDeque::new(),
            counters: Counters::default(),
            verify_elsewhere: false,
            verifying: HashMap::new(),
            to_verify: VecDeque::new(),
            next_job: 0,
            auth_generation: 0,
            reverify: Vec::new(),
            reverify_clock: None,
            stopping: false,
        }
    }

    /// Takes no new session from now on (the appliance stops): a first hard reset gets no
    /// answer and an echo of one opens nothing (`Counters::stopping`); the sessions there are
    /// go on, to be ended and to get their last messages acknowledged.
    pub fn stop_admitting(&mut self) {
        self.stopping = true;
    }

    /// Hands password checks out (`poll_verification`, `verified`) instead of running them in
    /// `handle_datagram` (the default, for tests and simulations): a runtime whose thread
    /// serves many clients runs them elsewhere, since each takes tens of milliseconds.
    pub fn set_verify_elsewhere(&mut self, on: bool) {
        self.verify_elsewhere = on;
    }

    /// The next password check to run (only with `set_verify_elsewhere`). Its verdict must
    /// come back (`verified`), `Verdict::Unchecked` if it cannot be run: until then it counts
    /// against `MAX_VERIFYING`.
    pub fn poll_verification(&mut self) -> Option<Verification> {
        self.to_verify.pop_front()
    }

    /// Checks handed out (or to be) whose verdict has not come back.
    pub fn verifications_out(&self) -> usize {
        self.verifying.len()
    }

    /// The verdict of password check `id`: the authentication that waits for it completes
    /// as it would have with the password checked in `handle_datagram` (the one-time code,
    /// the groups, the limits, the key exchange and push, or the refusal). A verdict for a
    /// session that has ended, restarted or moved on since is ignored (`stale_verdicts`); one
    /// on a hash of an authenticator replaced since is not used: the credentials are checked
    /// again under the current one.
    pub fn verified(&mut self, now: Instant, unix_now: u64, id: u64, verdict: Verdict) {
        let Some(p) = self.verifying.remove(&id) else {
            self.counters.stale_verdicts += 1;
            return;
        };
        // The session must still wait for this check: not ended, not started over at its
        // address, its key exchange not abandoned (a renegotiation past its handshake window).
        let remote = self.by_peer.get(&p.peer_id).copied();
        let waiting = remote.and_then(|r| self.sessions.get_mut(&r)).filter(|s| {
            s.verifying == Some(id)
                && !matches!(s.phase, Phase::Closing { .. })
                && s.keys
                    .iter()
                    .any(|k| k.key_id == p.key_id && k.phase == KeyPhase::Tls)
        });
        let (Some(remote), Some(s)) = (remote, waiting) else {
            self.counters.stale_verdicts += 1;
            return;
        };
        s.verifying = None;
        let checked = if p.auth_generation != self.auth_generation {
            None
        } else {
            match verdict {
                Verdict::Matches => Some(Ok(true)),
                Verdict::DoesNotMatch => Some(Ok(false)),
                Verdict::Unchecked => Some(Err(FailureReason::VerifierBusy)),
            }
        };
        self.decide(remote, p.key_id, p.creds, p.first, checked, now, unix_now);
        self.flush(remote, now);
    }

    /// Replaces the TLS configuration (a new certificate, client CA or CRL) at `now`
    /// (`unix_now` on the wall clock). New handshakes run under it; one already under way
    /// keeps its own, and its client certificate is verified again under this one before the
    /// client is authorised (first key or renegotiation), so a certificate the new CRL revokes
    /// is refused (`CertificateRevoked`).
    ///
    /// Every established session's client chain is verified again under it too
    /// (`Session::still_verifies_under`): one the new settings no longer accept (not issued by
    /// the new client CA, revoked by the new CRL, expired since its handshake) ends, its
    /// client told `RESTART` (`reverify_ends`), the reason on record in its `Closed` event
    /// (`CloseReason::Terminated`). The first `Settings::reverify_batch` sessions (by peer-id)
    /// are checked now, the others over the next turns (`poll_timeout` is then due at once,
    /// `handle_timeout` checks the next batch), each at the wall-clock time of its turn; a
    /// session that ended or left the established phase meanwhile is skipped, one established
    /// since was verified under these settings at its handshake. Another `set_tls` starts
    /// over. Between reloads a certificate that expires mid-session is not checked again (nor
    /// does OpenVPN 2.6, which verifies a chain at each TLS handshake only).
    pub fn set_tls(&mut self, tls: ServerTls, now: Instant, unix_now: u64) {
        self.settings.tls = tls;
        self.reverify = self
            .sessions
            .values()
            .filter(|s| s.phase == Phase::Established)
            .map(|s| s.peer_id)
            .collect();
        self.reverify.sort_unstable_by(|a, b| b.cmp(a));
        self.reverify_clock = Some((now, unix_now, now));
        self.reverify_some(now);
    }

    /// How many established sessions' client chains wait to be verified again after `set_tls`.
    pub fn reverifying(&self) -> usize {
        self.reverify.len()
    }

    /// Verifies the next batch of established sessions' client chains under the TLS settings
    /// in force (`set_tls`), and ends those that fail.
    fn reverify_some(&mut self, now: Instant) {
        let Some((since, unix_since, _)) = self.reverify_clock else {
            return;
        };
        let unix_now = unix_since + now.saturating_duration_since(since).as_secs();
        let mut ended = Vec::new();
        for _ in 0..self.settings.reverify_batch.max(1) {
            let Some(peer) = self.reverify.pop() else {
                break;
            };
            let Some(s) = self.by_peer.get(&peer).and_then(|r| self.sessions.get(r)) else {
                continue;
            };
            if s.phase != Phase::Established {
                continue;
            }
            if let Err(f) = s.still_verifies_under(&self.settings.tls, unix_now) {
                ended.push((peer, f));
            }
        }
        for (peer, failure) in &ended {
            let (message, why) = reverify_ends(failure);
            self.terminate(*peer, message, CloseReason::Terminated(why), now);
        }
        self.reverify_clock = if self.reverify.is_empty() {
            None
        } else {
            Some((since, unix_since, now))
        };
    }

    /// Replaces the server-side renegotiation interval (`Settings::reneg`) at `now`. A key
    /// already older than the new interval is renegotiated within its first tenth from now,
    /// at a moment fixed for each session, not all at once (a fleet of handshakes in one
    /// second would stall the control thread).
    pub fn set_reneg(&mut self, reneg: Option<Duration>, now: Instant) {
        if reneg == self.settings.reneg {
            return;
        }
        self.settings.reneg = reneg;
        self.reneg_from = Some(now);
        let remotes: Vec<Remote> = self.sessions.keys().copied().collect();
        for remote in remotes {
            self.schedule(remote);
        }
    }

    /// Replaces the pushed routes (split tunnel) for future connections.
    pub fn set_routes(&mut self, routes: Option<Vec<(Ipv4Addr, Ipv4Addr)>>) {
        self.settings.routes = routes;
    }

    /// Replaces the authenticator (a reload: a new users file, with its users, passwords,
    /// groups and one-time-code secrets) at `unix_now` for every authentication from now on:
    /// new connections, and renegotiations that check a password again (those whose client
    /// does not present the session's auth-token). A session authenticated before keeps its
    /// identity and groups, and its auth-token stays good for its renegotiations: ending the
    /// sessions of a user removed is the caller's (`terminate`). An auth-token presented at a
    /// new connection is checked against the user's password hash now (`token::Holder`): one
    /// issued before the user's password changed is refused. A user the old authenticator
    /// has and the new one does not (`Authenticator::usernames`) loses every token issued up
    /// to now (`Revoked::revoke_user`), so that the same user line put back later, its
    /// password hash unchanged, does not make them good again. What the old authenticator
    /// must pass on (the one-time codes already used) is taken over (`Authenticator::take_over`).
    /// A password check out for the old one is not used when it comes back: those credentials
    /// are checked again under the new one (`verified`).
    pub fn set_authenticator(&mut self, mut auth: A, unix_now: u64) {
        let kept: HashSet<String> = auth.usernames().into_iter().collect();
        for gone in self.auth.usernames() {
            if !kept.contains(&gone) {
                self.revoked
                    .revoke_user(&gone, unix_now, self.tokens_expire);
            }
        }
        auth.take_over(&mut self.auth);
        self.auth = auth;
        self.auth_generation += 1;
    }

    /// Replaces the DNS servers pushed (`Settings::dns`) for future connections; a session
    /// already established keeps the push it was given (also when it asks again with
    /// PUSH_REQUEST) until it reconnects.
    pub fn set_dns(&mut self, dns: Vec<Ipv4Addr>) {
        self.settings.dns = dns;
    }

    /// Replaces the client login banner (`Settings::banner`) for future connections.
    pub fn set_banner(&mut self, banner: Arc<[String]>) {
        self.settings.banner = banner;
    }

    /// Replaces the maximum session duration (`Settings::session_timeout`) for sessions
    /// authorised from now on; a session authorised before keeps the duration in force then
    /// (a shorter one does not end established sessions all at once).
    pub fn set_session_timeout(&mut self, timeout: Duration) {
        self.settings.session_timeout = timeout;
    }

    /// Replaces the connection limit (`Settings::max_sessions`) for future connections; those
    /// already established stay, past a lowered limit too.
    pub fn set_max_sessions(&mut self, max: usize) {
        self.settings.max_sessions = max;
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// When the CRL in force expires (`ServerTls::crl_next_update`), seconds since the epoch.
    pub fn crl_next_update(&self) -> Option<u64> {
        self.settings.tls.crl_next_update()
    }

    /// The sessions, by peer-id.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    fn allocate_peer_id(&mut self) -> Option<u32> {
        let range = self.settings.peer_ids.clone();
        for _ in range.clone() {
            let id = self
                .next_peer
                .clamp(range.start, range.end.saturating_sub(1));
            self.next_peer = if id + 1 >= range.end {
                range.start
            } else {
                id + 1
            };
            if self.peer_ids.insert(id) {
                return Some(id);
            }
        }
        None
    }

    /// A place for the session at `remote` on the emptiest data core with room
    /// (`Settings::room`), so that the cores stay balanced as sessions come and go: on its own
    /// peer-id's core when that is as empty as any, else on a free peer-id of the emptiest (the
    /// peer-id reaches the client only in the push that follows). `None` when there is no such
    /// limit.
    ///
    /// # Errors
    /// `DataPlaneFull` when no core has room (no free peer-id on one that has counts as none).
    fn place(&mut self, remote: Remote) -> Result<Option<Place>, FailureReason> {
        let Some(room) = self.settings.room.clone() else {
            return Ok(None);
        };
        let Some(old) = self.sessions.get(&remote).map(|s| s.peer_id) else {
            return Err(FailureReason::Other("session vanished".into()));
        };
        let choices = room.with_room();
        let Some(&emptiest) = choices.first() else {
            return Err(FailureReason::DataPlaneFull);
        };
        let own = room.core_of(old);
        if room.used(own) <= room.used(emptiest) {
            if let Some(place) = room.take(own) {
                return Ok(Some(place));
            }
        }
        for core in choices {
            let free = room
                .peer_ids_of(core, self.settings.peer_ids.clone())
                .find(|id| !self.peer_ids.contains(id));
            let (Some(id), Some(place)) = (free, room.take(core)) else {
                continue;
            };
            self.peer_ids.remove(&old);
            self.by_peer.remove(&old);
            self.peer_ids.insert(id);
            self.by_peer.insert(id, remote);
            if let Some(s) = self.sessions.get_mut(&remote) {
                s.peer_id = id;
            }
            return Ok(Some(place));
        }
        Err(FailureReason::DataPlaneFull)
    }

    /// Handles one datagram from `remote` to our listener `local`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        unix_now: u64,
        remote: Remote,
        local: Remote,
        datagram: &[u8],
    ) {
        let Ok(p) = ControlPacket::parse(datagram) else {
            self.counters.malformed += 1;
            return;
        };
        let known = self.sessions.get(&remote).map(|s| s.client_sid);
        if known != Some(p.session_id)
            && !self.admit(now, remote, local, (&p, datagram), known.is_some())
        {
            return;
        }
        let tls = Arc::clone(&self.settings.tls.config);
        let steps = match self.sessions.get_mut(&remote) {
            Some(s) => s.handle_packet(&p, &tls, now),
            None => Vec::new(),
        };
        for step in steps {
            self.apply(remote, step, now, unix_now);
        }
        self.flush(remote, now);
    }

    /// Whole seconds since the first datagram (the per-source budgets' clock).
    fn seconds(&mut self, now: Instant) -> u32 {
        let origin = *self.origin.get_or_insert(now);
        u32::try_from(now.saturating_duration_since(origin).as_secs()).unwrap_or(u32::MAX)
    }

    /// A packet of a client session we have no state for (`admission`): a first hard reset gets
    /// the stateless answer; a packet echoing a session id we gave makes the session (ending
    /// the one of an earlier client session at the same address), within the limits. Returns
    /// whether the packet now has a session to go to.
    fn admit(
        &mut self,
        now: Instant,
        remote: Remote,
        local: Remote,
        (p, datagram): (&ControlPacket<'_>, &[u8]),
        replaces: bool,
    ) -> bool {
        if self.stopping {
            self.counters.stopping += 1;
            return false;
        }
        let secs = self.seconds(now);
        if p.opcode == opcode::HARD_RESET_CLIENT_V2 {
            if p.key_id != 0 || p.msg_id != Some(0) {
                self.counters.unknown_session += 1;
            } else if !self.answers.allow(remote.ip, 0, secs) {
                self.counters.answers_limited += 1;
            } else {
                let ours = self.cookies.session_id(now, remote, local, &p.session_id);
                self.outbox.push_back(Transmit {
                    remote,
                    local,
                    payload: admission::reset_answer(ours, p.session_id),
                });
                self.counters.stateless_resets += 1;
            }
            return false;
        }
        let Some((client, echoed)) = sluice_engine::cookie::third_step(datagram) else {
            self.counters.unknown_session += 1;
            return false;
        };
        if !self.cookies.verify(now, remote, local, &client, &echoed) {
            self.counters.bad_session_id += 1;
            return false;
        }
        if !self.new_sessions.allow(remote.ip, 0, secs) {
            self.counters.rate_limited += 1;
            return false;
        }
        if self.handshaking >= self.settings.max_handshaking {
            self.counters.handshake_cap += 1;
            return false;
        }
        // The session this one replaces (same address) is not counted against it.
        let from_source = self.handshaking_from.get(&remote.ip).copied().unwrap_or(0);
        let replaced = self
            .sessions
            .get(&remote)
            .is_some_and(|s| s.phase == Phase::Handshaking);
        if from_source.saturating_sub(usize::from(replaced))
            >= self.settings.max_handshaking_per_source
        {
            self.counters.source_handshake_cap += 1;
            return false;
        }
        if replaces {
            // The client at this address started over: its old session ends.
            self.end(remote, CloseReason::Restarted, now);
            self.forget(remote);
        }
        let Some(peer_id) = self.allocate_peer_id() else {
            self.counters.handshake_cap += 1;
            return false;
        };
        match Session::new(
            remote,
            local,
            (client, echoed),
            peer_id,
            Arc::clone(&self.settings.tls.config),
            now,
        ) {
            Ok(s) => {
                self.by_peer.insert(peer_id, remote);
                self.sessions.insert(remote, s);
                self.handshaking += 1;
                *self.handshaking_from.entry(remote.ip).or_insert(0) += 1;
                self.events.push_back(Event::ControlPeer {
                    remote,
                    present: true,
                });
                true
            }
            Err(_) => {
                self.peer_ids.remove(&peer_id);
                false
            }
        }
    }

    fn apply(&mut self, remote: Remote, step: Step, now: Instant, unix_now: u64) {
        match step {
            Step::Authenticate { key_id } => self.authenticate(remote, key_id, now, unix_now),
            Step::TlsFailed(e) => {
                let detail = e.to_string();
                self.refuse_with(remote, None, None, failure_of(e), detail, now);
            }
            Step::ClientExit => self.end(remote, CloseReason::ClientExit, now),
            Step::PushRequest => {
                if let Some(s) = self.sessions.get_mut(&remote) {
                    // Answered within the last 30 s: not again, as an OpenVPN server; a client
                    // that repeats its request (or sends a hundred in a datagram) gets no
                    // hundred pushes to encrypt and queue. The unasked push at establishment
                    // does not count: the first request is answered, as before (a client that
                    // does not take unasked pushes has asked for it).
                    let recent = s
                        .pushed_at
                        .is_some_and(|t| now.saturating_duration_since(t) < PUSH_AGAIN_AFTER);
                    if s.phase == Phase::Established && !recent {
                        for m in s.push.clone() {
                            s.send_text(&m);
                        }
                        s.pushed_at = Some(now);
                    }
                }
            }
            Step::Misbehaved(what) => {
                self.counters.misbehaved += 1;
                let handshaking = self
                    .sessions
                    .get(&remote)
                    .is_some_and(|s| s.phase == Phase::Handshaking);
                if handshaking {
                    self.refuse(
                        remote,
                        None,
                        None,
                        FailureReason::Other(what.to_owned()),
                        now,
                    );
                }
            }
        }
    }

    fn authenticate(&mut self, remote: Remote, key_id: u8, now: Instant, unix_now: u64) {
        let Some(s) = self.sessions.get_mut(&remote) else {
            return;
        };
        let Some(creds) = s.take_credentials(key_id) else {
            return;
        };
        let first = s.phase == Phase::Handshaking;
        self.decide(remote, key_id, creds, first, None, now, unix_now);
    }

    /// Authorises the key exchange `key_id` of the session at `remote` with `creds`, or refuses
    /// it, or hands out the check of its password and waits (`verified`). `checked`: the
    /// verdict of that check, once back (`Err`: it could not be run).
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        remote: Remote,
        key_id: u8,
        creds: Credentials,
        first: bool,
        checked: Option<Result<bool, FailureReason>>,
        now: Instant,
        unix_now: u64,
    ) {
        let cn = creds.common_name.clone();
        let user = self.claimed_username(&creds);
        let Some(s) = self.sessions.get_mut(&remote) else {
            return;
        };
        // A handshake begun before the TLS configuration was replaced (a reload with a new
        // CRL) verified the certificate under the old one: it is checked under the current one
        // (after a password check too: a reload may have come meanwhile).
        let verdict = match (
            s.verify_certificate_under(key_id, &self.settings.tls, unix_now),
            checked,
        ) {
            (Err(e), _) => Err(failure_of(e)),
            (Ok(()), Some(Err(reason))) => Err(reason),
            (Ok(()), checked) => self.check(
                remote,
                &creds,
                first,
                checked.and_then(Result::ok),
                unix_now,
            ),
        };
        let (cipher, ekm) = match verdict {
            Ok(Checked::Ready(cipher, ekm)) => (cipher, ekm),
            Ok(Checked::Verify(_)) if self.verifying.len() >= MAX_VERIFYING && !first => {
                return self.refuse_key_for_now(remote, key_id);
            }
            Err(FailureReason::VerifierBusy) if !first => {
                return self.refuse_key_for_now(remote, key_id);
            }
            Ok(Checked::Verify(_)) if self.verifying.len() >= MAX_VERIFYING => {
                return self.refuse_exchange(
                    remote,
                    key_id,
                    &creds,
                    FailureReason::VerifierBusy,
                    now,
                );
            }
            Ok(Checked::Verify(check)) => return self.park(remote, key_id, creds, first, check),
            Err(reason) => return self.refuse_exchange(remote, key_id, &creds, reason, now),
        };
        let Some(s) = self.sessions.get_mut(&remote) else {
            return;
        };
        let keys = match s.complete_key_exchange(key_id, &creds, cipher, ekm, false) {
            Ok(k) => k,
            Err(e) => {
                self.refuse(
                    remote,
                    cn,
                    user,
                    FailureReason::TlsError(e.to_string()),
                    now,
                );
                return;
            }
        };
        self.counters.handshakes += 1;
        let Some(s) = self.sessions.get_mut(&remote) else {
            return;
        };
        let (Some(identity), Some(vip)) = (s.identity.clone(), s.vip) else {
            return;
        };
        let client = ClientInfo {
            vip,
            identity,
            remote,
            local: s.local,
            endpoint: self.settings.endpoint,
        };
        self.events.push_back(Event::KeysReady {
            peer_id: s.peer_id,
            key_id,
            keys,
            first,
            client,
        });
        if first {
            s.phase = Phase::Established;
            for m in s.push.clone() {
                s.send_text(&m);
            }
            self.established += 1;
            self.handshake_over(remote.ip);
        } else {
            self.retire_at
                .insert(s.peer_id, now + self.settings.transition_window);
        }
    }

    /// The username of `creds` as a refusal names it: the one the client gave where the
    /// endpoint checks passwords (the attempt was made under that name), none where nothing
    /// reads the field.
    fn claimed_username(&self, creds: &Credentials) -> Option<String> {
        creds
            .message
            .username
            .clone()
            .filter(|_| self.settings.password_required)
    }

    /// Parks the key exchange `key_id` of the session at `remote` until the verdict of
    /// `check`, which is handed out (`poll_verification`).
    fn park(
        &mut self,
        remote: Remote,
        key_id: u8,
        creds: Credentials,
        first: bool,
        check: PasswordCheck,
    ) {
        let Some(s) = self.sessions.get_mut(&remote) else {
            return;
        };
        let id = self.next_job;
        self.next_job += 1;
        s.verifying = Some(id);
        self.verifying.insert(
            id,
            Parked {
                peer_id: s.peer_id,
                key_id,
                creds,
                first,
                auth_generation: self.auth_generation,
            },
        );
        self.to_verify.push_back(Verification { id, check });
        self.counters.verifications += 1;
    }

    /// Refuses for now the renegotiation `key_id` of the established session at `remote`,
    /// whose password could not be checked (`MAX_VERIFYING` checks out, or the checkers had no
    /// room): that key state fails (`Session::fail_key`), as one whose handshake window passed
    /// is abandoned, and the session goes on with its active key; the client's next
    /// renegotiation is taken. Not the session's end: a flood of other clients' sign-ins must
    /// not cut the connected ones off.
    fn refuse_key_for_now(&mut self, remote: Remote, key_id: u8) {
        self.counters.verifier_busy += 1;
        if let Some(s) = self.sessions.get_mut(&remote) {
            s.fail_key(key_id);
        }
    }

    /// Refuses the key exchange `key_id` of the session at `remote`: completes it as OpenVPN
    /// does, then says AUTH_FAILED (§5.2, §8.6), and ends the session. A temporary refusal
    /// (room, a target network, a password checker) is said so: a client that understands
    /// that (2.6) tries again after the backoff; an older one is told to restart, since a
    /// plain AUTH_FAILED would make it give up.
    fn refuse_exchange(
        &mut self,
        remote: Remote,
        key_id: u8,
        creds: &Credentials,
        reason: FailureReason,
        now: Instant,
    ) {
        let cn = creds.common_name.clone();
        let user = self.claimed_username(creds);
        let Some(s) = self.sessions.get_mut(&remote) else {
            return;
        };
        let _ = s.complete_key_exchange(key_id, creds, Cipher::Aes256Gcm, false, false);
        if reason == FailureReason::NoSharedCipher {
            s.send_text(NO_CIPHER_MESSAGE);
        } else if !reason.is_temporary() {
            s.send_text("AUTH_FAILED");
        } else {
            let told = if reason.is_for_room() {
                self.counters.refused_for_room += 1;
                FULL_MESSAGE
            } else if reason == FailureReason::VerifierBusy {
                self.counters.verifier_busy += 1;
                BUSY_MESSAGE
            } else {
                NO_TARGET_MESSAGE
            };
            if creds.message.peer_info.has(PeerInfo::AUTH_FAIL_TEMP) {
                s.send_text(&format!(
                    "AUTH_FAILED,TEMP[backoff {FULL_BACKOFF_SECS}]:{told}"
                ));
            } else {
                s.send_text(&format!("RESTART,{told}"));
            }
        }
        self.refuse(remote, cn, user, reason, now);
    }

    /// The authenticator's word on the password of `creds`: at once, or (with
    /// `verify_elsewhere`, before the check is back) the check to hand out. `checked`: whether
    /// the password matched, once checked.
    fn password(
        &mut self,
        creds: &Credentials,
        checked: Option<bool>,
        unix_now: u64,
    ) -> Result<Authn, FailureReason> {
        let cn = creds.common_name.as_deref();
        let user = creds.message.username.as_deref();
        let pass = creds.message.password.as_ref();
        if let Some(matches) = checked {
            return self
                .auth
                .authenticate_checked(unix_now, cn, user, pass, matches)
                .map(Authn::Groups);
        }
        if self.verify_elsewhere {
            if let Some(check) = self.auth.password_check(cn, user, pass)? {
                return Ok(Authn::Verify(check));
            }
        }
        self.auth
            .authenticate(unix_now, cn, user, pass)
            .map(Authn::Groups)
    }

    /// Authentication, cipher and address for a key exchange; sets the session's identity.
    /// Or, before its password is checked (`checked`, whether it matched) when checks are
    /// handed out, the check.
    fn check(
        &mut self,
        remote: Remote,
        creds: &Credentials,
        first: bool,
        checked: Option<bool>,
        unix_now: u64,
    ) -> Result<Checked, FailureReason> {
        let password_required = self.settings.password_required;
        let Some(s) = self.sessions.get(&remote) else {
            return Err(FailureReason::Other("session vanished".into()));
        };
        let msg = &creds.message;
        if !first {
            // Renegotiation: same certificate and user; the auth-token stands in for the
            // password (one-time codes are not asked again).
            let id = s.identity.clone().ok_or(FailureReason::Other(
                "renegotiation before authentication".into(),
            ))?;
            if id.common_name != creds.common_name
                || (password_required && id.username != msg.username)
            {
                return Err(FailureReason::Other(
                    "identity changed on renegotiation".into(),
                ));
            }
            if password_required {
                // Compared in constant time (`TokenKey::same`): the token is a credential.
                let token_ok = s.auth_token.as_deref().is_some_and(|t| {
                    msg.password
                        .as_ref()
                        .is_some_and(|p| self.tokens.same(t, p.expose()))
                });
                if !token_ok {
                    if let Authn::Verify(check) = self.password(creds, checked, unix_now)? {
                        return Ok(Checked::Verify(check));
                    }
                }
            }
            let s = self.sessions.get(&remote);
            let (cipher, ekm) = s
                .and_then(|s| s.cipher)
                .ok_or(FailureReason::Other("no cipher".into()))?;
            return Ok(Checked::Ready(cipher, ekm));
        }
        if password_required && (msg.username.is_none() || msg.password.is_none()) {
            return Err(FailureReason::BadPassword);
        }
        // A client connecting again with the auth-token of an earlier connection (OpenVPN 2.6
        // keeps it across restarts of its connection): no password or one-time code, until the
        // token expires (the session timeout in force when it was issued, or now if shorter,
        // from the last authentication with them).
        let lifetime = self.settings.session_timeout.as_secs();
        // Tokens are bound to the user's password hash in force (a changed password refuses
        // those issued before).
        let bound = match (password_required, msg.username.as_deref()) {
            (true, Some(u)) => self.auth.password_hash(u),
            _ => None,
        };
        let holder = msg.username.as_deref().map(|username| Holder {
            endpoint: self.settings.endpoint,
            username,
            common_name: creds.common_name.as_deref(),
            password_hash: bound.as_deref(),
        });
        let by_token = match (password_required, holder, msg.password.as_ref()) {
            (true, Some(h), Some(p)) => self.tokens.verify(p.expose(), h, unix_now, lifetime),
            _ => None,
        };
        let revoked = match (by_token, holder) {
            (Some(v), Some(h)) => {
                self.revoked.is_revoked_for(h.username, v.authenticated)
                    || self.revoked.swept_past(v.expires)
                    || msg
                        .password
                        .as_ref()
                        .is_some_and(|p| self.revoked.is_revoked(p.expose()))
            }
            _ => false,
        };
        if revoked {
            // The token of a connection an administrator terminated, or of a user removed
            // since (and put back): its client must give its password again (an OpenVPN 2.6
            // client, refused with a token, drops it and asks for its credentials).
            return Err(FailureReason::BadPassword);
        }
        let groups = match (by_token, holder) {
            (Some(_), Some(h)) => self.auth.groups_of(h.common_name, h.username)?,
            _ => match self.password(creds, checked, unix_now)? {
                Authn::Groups(g) => g,
                Authn::Verify(check) => return Ok(Checked::Verify(check)),
            },
        };
        // A client we could never serve is told so before the limits' refusals for now, which
        // would have it come back again and again. Only a password check refused for now
        // (`VerifierBusy`, `decide`) comes earlier: the client comes back, and is told once
        // its password has been checked.
        let info: PeerInfo = msg.peer_info.clone();
        let cipher = negotiate_cipher(&info).ok_or(FailureReason::NoSharedCipher)?;
        if self.settings.max_sessions == 0 {
            return Err(FailureReason::NoTargetNetwork);
        }
        if self.established >= self.settings.max_sessions {
            return Err(FailureReason::SessionLimit);
        }
        let ekm = info.has(PeerInfo::TLS_KEY_EXPORT);
        let vip = self.pool.allocate().ok_or(FailureReason::SessionLimit)?;
        let place = match self.place(remote) {
            Ok(place) => place,
            Err(e) => {
                self.pool.release(vip);
                return Err(e);
            }
        };
        let settings = &self.settings;
        let gateway = self.pool.gateway();
        let netmask = Ipv4Addr::from(sluice_engine::rules::Ipv4Cidr::mask_of(settings.pool.1));
        let Some(s) = self.sessions.get_mut(&remote) else {
            self.pool.release(vip);
            return Err(FailureReason::Other("session vanished".into()));
        };
        // A token taken is issued again as it was (or expiring sooner, under a shorter
        // session timeout since); a password's is good for the session timeout now.
        let token = match (password_required, holder) {
            (true, Some(h)) => {
                let validity = by_token.unwrap_or(Validity {
                    authenticated: unix_now,
                    expires: unix_now.saturating_add(settings.session_timeout.as_secs()),
                });
                self.tokens_expire = self.tokens_expire.max(validity.expires);
                Some(self.tokens.issue(h, validity))
            }
            _ => None,
        };
        // The token is a credential for this session: it stays out of the logs.
        let push = push_reply(
            &PushOptions {
                ifconfig: vip,
                netmask,
                route_gateway: gateway,
                routes: settings.routes.clone(),
                dns: settings.dns.clone(),
                ping: settings.ping,
                ping_restart: settings.ping_restart,
                peer_id: s.peer_id,
                cipher,
                tls_ekm: ekm,
                cc_exit: info.has(PeerInfo::CC_EXIT_NOTIFY),
                pushable_mtu: info.mtu.is_some(),
                banner: settings.banner.clone(),
            },
            token.as_deref(),
        );
        s.identity = Some(Identity {
            common_name: creds.common_name.clone(),
            // Only a username the directory checked is the session's: without one, nothing
            // verified what the client wrote there.
            username: msg.username.clone().filter(|_| password_required),
            groups,
            certificate_serial: creds.serial.clone(),
        });
        s.vip = Some(vip);
        s.session_timeout = Some(settings.session_timeout);
        s.place = place;
        s.cipher = Some((cipher, ekm));
        s.peer_info = Some(info);
        s.push = push;
        s.auth_token = token;
        Ok(Checked::Ready(cipher, ekm))
    }

    /// Refuses a session in handshake: event, counter, closing.
    fn refuse(
        &mut self,
        remote: Remote,
        common_name: Option<String>,
        username: Option<String>,
        reason: FailureReason,
        now: Instant,
    ) {
        let detail = reason.text();
        self.refuse_with(remote, common_name, username, reason, detail, now);
    }

    fn refuse_with(
        &mut self,
        remote: Remote,
        common_name: Option<String>,
        username: Option<String>,
        reason: FailureReason,
        detail: String,
        now: Instant,
    ) {
        self.counters.auth_failures += 1;
        self.events.push_back(Event::AuthFailed {
            remote,
            common_name,
            username,
            reason,
            detail,
        });
        self.end(remote, CloseReason::AuthFailed, now);
    }

    /// Ends a session: the data plane forgets it now; messages linger a few seconds.
    fn end(&mut self, remote: Remote, reason: CloseReason, now: Instant) {
        let Some(s) = self.sessions.get_mut(&remote) else {
            return;
        };
        if matches!(s.phase, Phase::Closing { .. }) {
            return;
        }
        let was = s.phase.clone();
        let established = was == Phase::Established;
        let peer_id = s.peer_id;
        // A last message waiting for a key exchange under way (`Session::send_final`) has the
        // handshake window to get there.
        let linger = if s.final_pending() {
            self.settings.hand_window.max(LINGER)
        } else {
            LINGER
        };
        s.close(now, linger);
        // A password check out for it is answered to no one (`verified`).
        s.verifying = None;
        if let Some(vip) = s.vip.take() {
            self.pool.release(vip);
        }
        // Out of its core's room: the data plane is told to forget it now.
        s.place = None;
        self.count_out(&was, remote.ip);
        self.retire_at.remove(&peer_id);
        if established || reason != CloseReason::AuthFailed {
            self.events.push_back(Event::Closed {
                peer_id,
                remote,
                reason,
                established,
            });
        }
    }

    /// Removes a session's state entirely.
    fn forget(&mut self, remote: Remote) {
        if let Some(s) = self.sessions.remove(&remote) {
            self.count_out(&s.phase, remote.ip);
            self.schedule(remote);
            self.events.push_back(Event::ControlPeer {
                remote,
                present: false,
            });
            self.by_peer.remove(&s.peer_id);
            self.peer_ids.remove(&s.peer_id);
            if let Some(vip) = s.vip {
                self.pool.release(vip);
            }
        }
    }

    /// Starts a renegotiation of session `peer_id` from the server's side (the data plane asks
    /// for one before a send packet-id wraps; `Settings::reneg` asks for one by key age).
    /// Returns whether one was started (not while one is under way or before the first key).
    pub fn renegotiate(&mut self, peer_id: u32, now: Instant) -> bool {
        let Some(&remote) = self.by_peer.get(&peer_id) else {
            return false;
        };
        let tls = Arc::clone(&self.settings.tls.config);
        let started = self
            .sessions
            .get_mut(&remote)
            .is_some_and(|s| s.renegotiate(&tls, now));
        if started {
            self.flush(remote, now);
        }
        started
    }

    /// The data plane saw the session `peer_id` float to `remote` (an authenticated data packet
    /// from there, the reference's float): its control channel moves too, so the client's
    /// renegotiations and messages from the new address reach it and ours go there.
    ///
    /// If another session is at `remote`, OpenVPN 2.6's rule (`multi_process_float`) decides:
    /// one of the same client (the same certificate, the same user) is ended, the address being
    /// no longer its; one of another client keeps it, and the float is refused. A core has
    /// already moved the session by then (it cannot see other cores' sessions), so a refused
    /// float ends the session that floated, whose packets come from an address another client
    /// holds: a client that forges another's address (any user can, its packets being
    /// authenticated by its own key) ends its own session, not the other's, and has its return
    /// traffic sent there no longer. A session still in its handshake at `remote` is no client
    /// yet, and gives way.
    pub fn float(&mut self, peer_id: u32, remote: Remote, now: Instant) -> Float {
        let Some(&old) = self.by_peer.get(&peer_id) else {
            return Float::Unchanged;
        };
        if old == remote {
            return Float::Unchanged;
        }
        if let Some(there) = self.sessions.get(&remote) {
            let same_client = match (&there.identity, self.sessions.get(&old)) {
                (Some(theirs), Some(s)) => {
                    s.identity.as_ref().is_some_and(|i| i.same_client(theirs))
                }
                _ => true,
            };
            let other_client = there.identity.is_some()
                && !same_client
                && !matches!(there.phase, Phase::Closing { .. });
            if other_client {
                self.counters.floats_refused += 1;
                self.end(
                    old,
                    CloseReason::Terminated(
                        "its packets came from an address another client's session holds".into(),
                    ),
                    now,
                );
                self.flush(old, now);
                return Float::Refused;
            }
            self.end(remote, CloseReason::Restarted, now);
            self.forget(remote);
        }
        let Some(mut s) = self.sessions.remove(&old) else {
            return Float::Unchanged;
        };
        if s.phase == Phase::Handshaking {
            // Counted at its new address now.
            self.handshake_over(old.ip);
            self.handshaking += 1;
            *self.handshaking_from.entry(remote.ip).or_insert(0) += 1;
        }
        s.remote = remote;
        self.sessions.insert(remote, s);
        self.schedule(old);
        self.schedule(remote);
        self.by_peer.insert(peer_id, remote);
        self.events.push_back(Event::ControlPeer {
            remote: old,
            present: false,
        });
        self.events.push_back(Event::ControlPeer {
            remote,
            present: true,
        });
        Float::Moved
    }

    /// Ends a session by peer-id with a message to the client (`HALT` keeps it from
    /// reconnecting; `RESTART` makes it reconnect at once), or none when `message` is empty:
    /// a client that said it exits (OCC EXIT on the data channel) is told nothing, as OpenVPN
    /// 2.6's server closes such an instance silently; an empty control message would reach no
    /// one, or a client that logs it as unknown, and be retransmitted until the session is
    /// forgotten.
    pub fn terminate(
        &mut self,
        peer_id: u32,
        message: &str,
        reason: CloseReason,
        now: Instant,
    ) -> bool {
        let Some(&remote) = self.by_peer.get(&peer_id) else {
            return false;
        };
        if let Some(s) = self
            .sessions
            .get_mut(&remote)
            .filter(|_| !message.is_empty())
        {
            s.send_final(message);
        }
        self.end(remote, reason, now);
        self.flush(remote, now);
        true
    }

    /// Revokes the auth-token of session `peer_id` (an administrator terminates it): a client
    /// that presents it from now on is refused, and must authenticate again with its password
    /// (and one-time code). The tokens of the user's other sessions stay good. Returns whether
    /// the session had a token.
    pub fn revoke_token(&mut self, peer_id: u32, unix_now: u64) -> bool {
        let token = self
            .by_peer
            .get(&peer_id)
            .and_then(|r| self.sessions.get(r))
            .and_then(|s| s.auth_token.as_deref());
        let Some((token, validity)) = token.and_then(|t| Some((t, TokenKey::validity(t)?))) else {
            return false;
        };
        self.revoked.revoke(token, validity.expires, unix_now);
        true
    }

    fn flush(&mut self, remote: Remote, now: Instant) {
        let Some(s) = self.sessions.get_mut(&remote) else {
            return;
        };
        if !s.pump_tls() {
            self.counters.misbehaved += 1;
            self.end(
                remote,
                CloseReason::PeerMisbehaved("control messages never acknowledged"),
                now,
            );
        }
        let Some(s) = self.sessions.get_mut(&remote) else {
            return;
        };
        let mut out = Vec::new();
        s.poll_datagrams(now, &mut out);
        let local = s.local;
        self.outbox.extend(out.into_iter().map(|payload| Transmit {
            remote,
            local,
            payload,
        }));
        // Everything that changes a session ends here (a datagram, a timer, a renegotiation
        // or termination asked for): its next deadline is taken again.
        self.schedule(remote);
    }

    /// A session leaves the phase it was counted in (closing or forgotten); `ip` is its
    /// source address.
    fn count_out(&mut self, phase: &Phase, ip: u32) {
        match phase {
            Phase::Handshaking => self.handshake_over(ip),
            Phase::Established => self.established = self.established.saturating_sub(1),
            Phase::Closing { .. } => {}
        }
    }

    /// A session from `ip` is no longer in handshake.
    fn handshake_over(&mut self, ip: u32) {
        self.handshaking = self.handshaking.saturating_sub(1);
        if let Some(n) = self.handshaking_from.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.handshaking_from.remove(&ip);
            }
        }
    }

    /// When session `s` needs `handle_timeout` next: a retransmission, the end of
    /// its handshake window, its session timeout, its renegotiation (or the end of one that
    /// does not complete), its previous key's retirement, or its forgetting once closed.
    fn deadline(&self, s: &Session) -> Option<Instant> {
        let mut t = s.next_retransmit();
        let mut at = |x: Instant| t = Some(t.map_or(x, |y: Instant| y.min(x)));
        match s.phase {
            Phase::Handshaking => at(s.created + self.settings.hand_window),
            Phase::Established => {
                at(s.created + self.session_timeout(s));
                if let Some(k) = s.keys.last() {
                    if k.phase != KeyPhase::Active {
                        // A renegotiation under way: abandoned at the handshake window.
                        at(k.started + self.settings.hand_window);
                    } else if let Some(r) = self.settings.reneg {
                        at(renegotiate_at(k.started, r, s.peer_id, self.reneg_from));
                    }
                }
                if let Some(r) = self.retire_at.get(&s.peer_id) {
                    at(*r);
                }
            }
            Phase::Closing { since, until } => {
                at(until);
                if s.settled() {
                    at(since + Duration::from_secs(1));
                }
            }
        }
        t
    }

    /// The maximum duration of session `s`: the one in force when it was authorised.
    fn session_timeout(&self, s: &Session) -> Duration {
        s.session_timeout.unwrap_or(self.settings.session_timeout)
    }

    /// Takes the next deadline of the session at `remote` again (none, and out of the index,
    /// if it is gone).
    fn schedule(&mut self, remote: Remote) {
        let next = self.sessions.get(&remote).and_then(|s| self.deadline(s));
        let old = self.scheduled.get(&remote).copied();
        if old == next {
            return;
        }
        if let Some(o) = old {
            self.timers.remove(&(o, timer_key(remote)));
        }
        match next {
            Some(n) => {
                self.timers.insert((n, timer_key(remote)));
                self.scheduled.insert(remote, n);
            }
            None => {
                self.scheduled.remove(&remote);
            }
        }
    }

    /// Checks the timer index and the phase counts against a scan of every session: `Ok` if
    /// they agree. For tests (it costs a pass over all sessions).
    ///
    /// # Errors
    /// What disagrees.
    pub fn check_timers(&self) -> Result<(), String> {
        for (remote, s) in &self.sessions {
            let want = self.deadline(s);
            let have = self.scheduled.get(remote).copied();
            if want != have {
                return Err(format!("{remote:?}: scheduled {have:?}, due {want:?}"));
            }
        }
        if self.scheduled.len() > self.sessions.len() || self.timers.len() != self.scheduled.len() {
            return Err(format!(
                "{} timers, {} scheduled, {} sessions",
                self.timers.len(),
                self.scheduled.len(),
                self.sessions.len()
            ));
        }
        let count = |p: Phase| self.sessions.values().filter(|s| s.phase == p).count();
        let phases = (count(Phase::Handshaking), count(Phase::Established));
        if phases != (self.handshaking, self.established) {
            return Err(format!(
                "phases {phases:?}, counted {:?}",
                (self.handshaking, self.established)
            ));
        }
        let mut from: HashMap<u32, usize> = HashMap::new();
        for (remote, s) in &self.sessions {
            if s.phase == Phase::Handshaking {
                *from.entry(remote.ip).or_insert(0) += 1;
            }
        }
        if from != self.handshaking_from {
            return Err(format!(
                "handshaking by source {from:?}, counted {:?}",
                self.handshaking_from
            ));
        }
        Ok(())
    }

    /// Runs the timers due at `now` (only the sessions whose deadline came), and the next batch
    /// of client chains to verify again after a `set_tls`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.reverify_clock.is_some_and(|(_, _, next)| next <= now) {
            self.reverify_some(now);
        }
        let due: Vec<Remote> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|&(_, k)| remote_of(k))
            .collect();
        for remote in due {
            let Some(s) = self.sessions.get_mut(&remote) else {
                continue;
            };
            match s.phase {
                Phase::Closing { since, until }
                    if now >= until || (s.settled() && now >= since + Duration::from_secs(1)) =>
                {
                    self.forget(remote);
                    continue;
                }
                Phase::Closing { .. } => {}
                Phase::Handshaking if now >= s.created + self.settings.hand_window => {
                    let cn = s.identity.as_ref().and_then(|i| i.common_name.clone());
                    self.refuse(remote, cn, None, FailureReason::HandshakeTimeout, now);
                }
                Phase::Established
                    if now
                        >= s.created
                            + s.session_timeout.unwrap_or(self.settings.session_timeout) =>
                {
                    s.send_final("RESTART,session timeout");
                    self.end(remote, CloseReason::SessionTimeout, now);
                }
                Phase::Established => {
                    // A renegotiation that never completed is abandoned (the active key stays).
                    if !s.abandon_stale_negotiations(now, self.settings.hand_window) {
                        // No active key is left to carry the session (retirement keeps the
                        // newest one, so this is not expected): it ends, rather than stay due.
                        self.end(remote, CloseReason::HandshakeTimeout, now);
                        self.flush(remote, now);
                        continue;
                    }
                    if let Some(r) = self.settings.reneg {
                        let peer = s.peer_id;
                        let from = self.reneg_from;
                        if s.current()
                            .is_some_and(|k| now >= renegotiate_at(k.started, r, peer, from))
                        {
                            s.renegotiate(&self.settings.tls.config, now);
                        }
                    }
                    let peer = s.peer_id;
                    if self.retire_at.get(&peer).is_some_and(|t| now >= *t) {
                        self.retire_at.remove(&peer);
                        // Only the key before the newest active one goes: a renegotiation the
                        // client started just before keeps the active key beneath it.
                        s.retire_previous();
                        self.events
                            .push_back(Event::RetirePreviousKey { peer_id: peer });
                    }
                }
                Phase::Handshaking => {}
            }
            self.flush(remote, now);
        }
    }

    /// Whether a closing session still has its last messages to get acknowledged at `now`
    /// (not `Session::settled`, its linger not over): its `RESTART` or `HALT` not yet
    /// acknowledged, or waiting for the key exchange that carries it. A stopping runtime
    /// serves the control channels while it is so (`STOP_LINGER` at most), so that a client
    /// whose `RESTART` was lost gets its retransmission before the process exits, rather than
    /// reconnecting only at its ping-restart. It stops at the first such session, so a wait
    /// costs a pass over all sessions only when there is none.
    pub fn is_delivering(&self, now: Instant) -> bool {
        self.sessions.values().any(|s| match s.phase {
            Phase::Closing { until, .. } => now < until && !s.settled(),
            _ => false,
        })
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must run next: at once while client chains wait to be verified
    /// again after a `set_tls`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.timers.first().map(|&(t, _)| t);
        let reverify = self.reverify_clock.map(|(_, _, next)| next);
        timers.into_iter().chain(reverify).min()
    }
}

/// What an established session whose certificate a reload's TLS settings refuse
/// (`Server::set_tls`) is told, and the reason on record.
fn reverify_ends(failure: &TlsFailure) -> (&'static str, String) {
    match failure {
        TlsFailure::Revoked => (
            "RESTART,certificate revoked",
            "the client certificate was revoked by the CRL".into(),
        ),
        TlsFailure::BadCertificate(why)
        | TlsFailure::CrlExpired(why)
        | TlsFailure::Protocol(why) => (
            "RESTART,certificate no longer accepted",
            format!("the reloaded TLS settings no longer accept the client certificate: {why}"),
        ),
    }
}

/// The connection-log reason for a TLS failure.
fn failure_of(e: TlsFailure) -> FailureReason {
    match e {
        TlsFailure::Revoked => FailureReason::CertificateRevoked,
        TlsFailure::CrlExpired(_) => FailureReason::CrlExpired,
        TlsFailure::BadCertificate(_) => FailureReason::BadCertificate,
        TlsFailure::Protocol(m) => FailureReason::TlsError(m),
    }
}

/// A session's address as the timer index orders it.
fn timer_key(r: Remote) -> u64 {
    (u64::from(r.ip) << 16) | u64::from(r.port)
}

fn remote_of(k: u64) -> Remote {
    Remote {
        ip: (k >> 16) as u32,
        port: k as u16,
    }
}

/// When session `peer_id`'s key that became current at `started` is renegotiated under
/// `Settings::reneg` (`every`, in force since `from` if it was changed while running): up to a
/// tenth earlier, by an amount fixed for each session (as OpenVPN's server takes a random
/// tenth off its `reneg-sec`), so sessions that connected together (after a restart) do not
/// all renegotiate in the same second; and no earlier than the same amount after `from`, so a
/// new interval shorter than the keys' age does not renegotiate them all at once either.
fn renegotiate_at(
    started: Instant,
    every: Duration,
    peer_id: u32,
    from: Option<Instant>,
) -> Instant {
    // 0..=99 thousandths, spread over peer-ids by a multiplicative hash.
    let thousandths = (peer_id.wrapping_mul(0x9e37_79b9) >> 16) % 100;
    let tenth = every * thousandths / 1000;
    let due = started + every - tenth;
    from.map_or(due, |f| due.max(f + tenth))
}

#[cfg(test)]
mod reneg_tests {
    use super::renegotiate_at;
    use std::time::{Duration, Instant};

    #[test]
    #[allow(clippy::disallowed_methods)] // a test's clock origin
    fn sessions_renegotiate_within_the_last_tenth_and_spread_over_it() {
        let t0 = Instant::now();
        let every = Duration::from_secs(3600);
        let at: Vec<Duration> = (0..1000)
            .map(|p| renegotiate_at(t0, every, p, None) - t0)
            .collect();
        assert!(at.iter().all(|d| *d > every * 9 / 10 && *d <= every));
        // Spread: no six minutes' tenth holds more than a fifth of the sessions.
        let mut buckets = [0usize; 10];
        for d in &at {
            let i = ((every - *d).as_secs() * 10 / 361) as usize;
            buckets[i.min(9)] += 1;
        }
        assert!(buckets.iter().all(|&n| n < 200), "{buckets:?}");
        assert_eq!(
            renegotiate_at(t0, every, 7, None),
            renegotiate_at(t0, every, 7, None)
        );
        // Keys ten hours old when the interval is set: within its first tenth from then,
        // spread, not at once; a key younger than the interval keeps its own time.
        let from = t0 + every * 10;
        let late: Vec<Duration> = (0..1000)
            .map(|p| renegotiate_at(t0, every, p, Some(from)) - from)
            .collect();
        assert!(late.iter().all(|d| *d < every / 10));
        let mut minutes = [0usize; 6];
        for d in &late {
            minutes[(d.as_secs() / 60).min(5) as usize] += 1;
        }
        assert!(minutes.iter().all(|&n| n < 250), "{minutes:?}");
        let young = from - Duration::from_secs(60);
        assert_eq!(
            renegotiate_at(young, every, 7, Some(from)),
            renegotiate_at(young, every, 7, None)
        );
    }
}

#[cfg(test)]
mod peer_id_tests {
    use super::{peer_id_range, MAX_PEER_ID};

    #[test]
    fn endpoint_ranges_are_disjoint_and_within_24_bits() {
        for count in [1usize, 2, 3, 7, 64] {
            let ranges: Vec<_> = (0..count).map(|i| peer_id_range(i, count)).collect();
            for (i, r) in ranges.iter().enumerate() {
                assert!(
                    r.start < r.end && r.end <= MAX_PEER_ID + 1,
                    "{count}: {r:?}"
                );
                if let Some(next) = ranges.get(i + 1) {
                    assert_eq!(r.end, next.start, "{count}: adjacent, no overlap");
                }
            }
        }
        assert_eq!(peer_id_range(0, 1), 0..MAX_PEER_ID + 1);
    }
}
