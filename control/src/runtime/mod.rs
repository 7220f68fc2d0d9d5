//! `sluice run`: the appliance daemon's control thread, a mio event loop.
//!
//! It owns the configuration in force, the admin socket (root only, mode 0600) and the signals:
//! SIGHUP re-reads the file (an invalid file is refused and the running configuration stays;
//! either way it is in the audit trail, with the process that sent the signal),
//! SIGINT/SIGTERM stop the daemon cleanly (each connection ended first: its client told to
//! restart, which it is given `proto::server::STOP_LINGER` to acknowledge, its last
//! connection-log line written with its core's counters; a second SIGINT or SIGTERM stops it
//! at once, without waiting for the acknowledgements; during the start,
//! the start ends at its next step, at once while it asks whether a daemon is already there,
//! with nothing of it left). Management verbs arriving on the socket run against
//! the daemon's file exactly as offline verbs do (validate, persist atomically), are audited
//! with the peer's Unix credentials, and then the result is applied. A verb whose caller names
//! another configuration file is not served (`Response::not_its_file`): the CLI runs it on that
//! file itself.
//!
//! This is one of the two places allowed to read the clock.

pub mod admin_socket;
#[cfg(feature = "dpdk")]
pub mod dataplane;
pub mod endpoint;
pub mod metrics;
pub mod udp;
pub mod verifier;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::WithOrigin;

use self::admin_socket::{Request, Response, MAX_REQUEST};
use crate::admin::audit::Caller;
use crate::admin::cli::Cli;
use crate::config::{self, Loaded};
use crate::timefmt::rfc3339;

const SIGNALS: Token = Token(0);
const LISTENER: Token = Token(1);
const FIRST_CONN: usize = 2;
/// The start's question to whoever holds the admin socket's path has its answer.
const PROBED: Token = Token(usize::MAX);
/// How often the data plane's counters are copied into the metrics recorder, which the
/// metrics thread renders (the cores publish theirs once a second).
#[cfg(feature = "dpdk")]
const METRICS_EVERY: Duration = Duration::from_millis(250);
/// How long an admin peer has to send its whole request from when it is accepted, and then to
/// take each part of its answer: a peer that sends nothing, or half a line, or reads nothing,
/// is dropped after it (with the reason in the log) rather than holding its descriptor and
/// buffers for ever.
const ADMIN_DEADLINE: Duration = Duration::from_secs(5);
/// How long an admin peer has from when it is accepted for its request and its whole answer,
/// the time its verb took aside (that is not the peer's), however steadily it takes parts of
/// the answer: else a peer that takes a byte now and then of a large answer
/// (`describe-client-vpn-connections` with many clients) keeps its place for as long as it
/// likes. A verb's answer of some MiB is taken in well under a second.
const ADMIN_LIFETIME: Duration = Duration::from_secs(30);
/// How many admin connections are served at once. More wait in the listener's backlog and are
/// accepted as others end, so that peers that never finish cannot take every descriptor the
/// process may open (which would fail the admin socket for everyone, and the files a reload
/// opens).
const MAX_ADMIN_CONNS: usize = 32;
/// Introduces, in a reload's message, what of the file waits for `sluice run` to start again.
const LATER: &str = "changed since the start, applied when `sluice run` starts again";

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// The data plane could not start (EAL, a port, lcores, an endpoint's files).
    #[error("{0}")]
    Dataplane(String),
    /// A SIGINT or SIGTERM (named) came while the daemon was starting: it stopped there, with
    /// nothing of it left (no admin socket, no data plane).
    #[error("stopped while starting ({0})")]
    Stopped(&'static str),
    /// The admin socket, the event loop or the signals could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// Writes one line to the daemon's log (stderr, collected by systemd).
pub fn log(msg: &str) {
    eprintln!("{} sluice: {msg}", rfc3339(SystemTime::now()));
}

/// A name a client chose (username, certificate common name) as a log line may show it: control
/// characters escaped, so that it cannot end the line or forge another, and at most 128
/// characters; `-` for none.
pub fn shown(name: Option<&str>) -> String {
    let Some(name) = name else {
        return "-".into();
    };
    let first: String = name.chars().take(128).collect();
    let mut out = crate::admin::table::printable(&first).into_owned();
    if name.chars().nth(128).is_some() {
        out.push_str("...");
    }
    out
}

/// An admin connection being served.
struct Conn {
    stream: UnixStream,
    caller: Caller,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    written: usize,
    /// When it is dropped if it has not finished (`ADMIN_DEADLINE`): its whole request is due
    /// by then, or, once it has its answer, the next part of it read; never after `ends`.
    until: Instant,
    /// When it is dropped whatever it does (`ADMIN_LIFETIME` from its acceptance, and the time
    /// its verb took).
    ends: Instant,
}

impl Conn {
    /// Who is at the other end, for the log.
    fn peer(&self) -> String {
        match &self.caller {
            Caller::Socket { uid, pid } => format!("uid {uid}, pid {pid}"),
            Caller::Local { uid, .. } => format!("uid {uid}"),
            Caller::Signal { signal, .. } => (*signal).to_owned(),
        }
    }
}

/// The daemon's control-thread state.
pub struct Daemon {
    config_path: PathBuf,
    current: Loaded,
    socket_path: PathBuf,
    poll: Poll,
    listener: UnixListener,
    /// The signals, with the process that sent each (a SIGHUP's is in the audit trail).
    /// (signal-hook-mio offers no origin, so its self-pipe is made here: the same mio pair.)
    signals: SignalDelivery<UnixStream, WithOrigin>,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    running: bool,
    /// Whether the metrics endpoint runs (on its own thread, `serve_metrics`); the data
    /// plane's counters are copied into the recorder every `METRICS_EVERY` (`metrics_at`).
    #[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
    metrics: bool,
    #[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
    metrics_at: Instant,
    #[cfg(feature = "dpdk")]
    dataplane: Option<dataplane::Dataplane>,
    /// The configuration the daemon started with: what a reload cannot change is compared
    /// with it (`config::change::needs_restart`).
    started: config::schema::Config,
    /// The SIGHUPs that came while the daemon started, reloads once it runs.
    hups: Vec<Caller>,
}

/// The signals as the daemon starts: a SIGHUP waits for the loop, a SIGINT or SIGTERM ends the
/// start where it is.
type Signals = SignalDelivery<UnixStream, WithOrigin>;

/// Takes the signals that came while the daemon starts: each SIGHUP is kept in `hups` for the
/// loop.
///
/// # Errors
/// A SIGINT or SIGTERM came: `RunError::Stopped`.
fn stop_while_starting(signals: &mut Signals, hups: &mut Vec<Caller>) -> Result<(), RunError> {
    let mut stop = None;
    for s in signals.pending() {
        match s.signal {
            SIGHUP => hups.push(sighup_caller(&s)),
            SIGINT => stop = stop.or(Some("SIGINT")),
            _ => stop = stop.or(Some("SIGTERM")),
        }
    }
    stop.map_or(Ok(()), |sig| Err(RunError::Stopped(sig)))
}

/// A SIGHUP as the audit trail records it, with the process that sent it.
fn sighup_caller(s: &signal_hook::low_level::siginfo::Origin) -> Caller {
    Caller::Signal {
        signal: "SIGHUP",
        uid: s.process.map(|p| p.uid),
        pid: s.process.map(|p| p.pid),
    }
}

/// Whether a daemon answers on `socket`, asked as any verb asks (`admin_socket::call`, which
/// waits up to a minute for an answer), on a thread of its own while this one waits on the
/// signals too: a SIGINT or SIGTERM ends the start at once, not after whatever holds the
/// socket's path lets the question go. (That thread, left waiting, ends with the process.)
///
/// # Errors
/// A stop signal (`RunError::Stopped`); the thread or its waker cannot be made.
fn daemon_answers(
    socket: &Path,
    poll: &mut Poll,
    signals: &mut Signals,
    hups: &mut Vec<Caller>,
) -> Result<bool, RunError> {
    let waker = std::sync::Arc::new(
        mio::Waker::new(poll.registry(), PROBED).map_err(io_err("making the start's waker"))?,
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let path = socket.to_path_buf();
    let wake = std::sync::Arc::clone(&waker);
    std::thread::Builder::new()
        .name("sluice-probe".into())
        .spawn(move || {
            let request = Request::own_file(vec!["validate".to_owned()]);
            let _ = tx.send(admin_socket::call(&path, &request).is_ok());
            let _ = wake.wake();
        })
        .map_err(io_err("starting the thread that asks for a daemon"))?;
    let mut events = Events::with_capacity(8);
    loop {
        stop_while_starting(signals, hups)?;
        if let Ok(answered) = rx.try_recv() {
            return Ok(answered);
        }
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("waiting for the answer of a daemon")(e)),
        }
    }
}

impl Daemon {
    /// Loads the configuration and opens the admin socket.
    ///
    /// # Errors
    /// An invalid configuration, or a socket that cannot be created (one clear message).
    #[allow(clippy::disallowed_methods)] // the runtime shell reads the clock
    pub fn start(config_path: &Path) -> Result<Self, RunError> {
        // Before any thread: freed large blocks (argon2's, a reload's) go back to the kernel
        // instead of growing the heap at every login and reload (`mem::fixed_mmap_threshold`).
        sluice_engine::mem::fixed_mmap_threshold();
        // The signals first: one sent while the daemon starts (the data plane can take
        // seconds; a supervisor may reload as soon as the admin socket is there) does not take
        // its default action, which for SIGHUP ends the process: a SIGHUP waits for the loop,
        // a SIGINT or SIGTERM ends the start at the next step, or at once while it waits for
        // an answer on the admin socket, with nothing of it left.
        let (read, write) = UnixStream::pair().map_err(io_err("creating the signal pipe"))?;
        let mut signals = SignalDelivery::with_pipe(
            read,
            write,
            WithOrigin::default(),
            [SIGHUP, SIGINT, SIGTERM],
        )
        .map_err(io_err("installing signal handlers"))?;
        let mut poll = Poll::new().map_err(io_err("creating the event loop"))?;
        poll.registry()
            .register(signals.get_read_mut(), SIGNALS, Interest::READABLE)
            .map_err(io_err("registering signals"))?;
        let mut hups = Vec::new();
        // Only a regular file, opened without waiting: the daemon reads it again at every
        // reload, and a FIFO would hold the control thread there until someone wrote to it.
        let text = read_own_config(config_path).map_err(|e| {
            config::ConfigError::whole_file(
                config_path,
                format!("cannot read the configuration: {e}"),
            )
        })?;
        let current = config::check_text(config_path, text, None)?;
        let socket_path =
            config::pki::resolve(&current.base_dir(), &current.config.appliance.admin_socket);
        if let Some(dir) = socket_path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        if daemon_answers(&socket_path, &mut poll, &mut signals, &mut hups)? {
            return Err(RunError::Io {
                what: format!("another sluice daemon answers on {}", socket_path.display()),
                source: io::Error::from(io::ErrorKind::AddrInUse),
            });
        }
        stop_while_starting(&mut signals, &mut hups)?;
        // The data plane first: if it cannot start, nothing is left behind. (Dropped, as on
        // a stop signal below, it stops its cores and ports.)
        #[cfg(feature = "dpdk")]
        let dataplane = if current.config.dataplane.ports.is_empty() {
            None
        } else {
            Some(dataplane::Dataplane::start(&current).map_err(RunError::Dataplane)?)
        };
        let metrics = start_metrics(&current.config.appliance.metrics_address)?;
        // A stop that came meanwhile ends the start before the admin socket is made.
        stop_while_starting(&mut signals, &mut hups)?;
        let _ = std::fs::remove_file(&socket_path);
        let mut listener = UnixListener::bind(&socket_path).map_err(io_err(format!(
            "binding the admin socket {}",
            socket_path.display()
        )))?;
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600)).map_err(
            io_err(format!("setting mode 0600 on {}", socket_path.display())),
        )?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(io_err("registering the admin socket"))?;
        let metrics = match metrics {
            Some(server) => {
                std::thread::Builder::new()
                    .name("sluice-metrics".into())
                    .spawn(move || server.run())
                    .map_err(io_err("starting the metrics thread"))?;
                true
            }
            None => false,
        };
        log(&format!(
            "started with {} ({} endpoint(s)); admin socket {}",
            config_path.display(),
            current.config.endpoints.len(),
            socket_path.display()
        ));
        Ok(Self {
            config_path: config_path.to_path_buf(),
            socket_path,
            poll,
            listener,
            signals,
            conns: HashMap::new(),
            next_token: FIRST_CONN,
            running: true,
            metrics,
            metrics_at: Instant::now(),
            #[cfg(feature = "dpdk")]
            dataplane,
            started: current.config.clone(),
            current,
            hups,
        })
    }

    /// The configuration in force.
    pub fn current(&self) -> &Loaded {
        &self.current
    }

    /// Runs the event loop until SIGINT or SIGTERM.
    ///
    /// # Errors
    /// A failure of the event loop itself.
    #[allow(clippy::disallowed_methods)] // the runtime shell reads the clock
    pub fn run(mut self) -> Result<(), RunError> {
        // The SIGHUPs of the start, in the order they came.
        for caller in std::mem::take(&mut self.hups) {
            let _ = self.audited_reload(&self.reload_cli(), &caller, "SIGHUP");
        }
        let mut events = Events::with_capacity(64);
        while self.running {
            // With a data plane, come back every millisecond for punted packets and timers.
            #[cfg(feature = "dpdk")]
            let wait = self.dataplane.as_ref().map(|_| Duration::from_millis(1));
            #[cfg(not(feature = "dpdk"))]
            let wait: Option<Duration> = None;
            // And by the first admin peer's deadline.
            let first = self.conns.values().map(|c| c.until).min();
            let wait = match (wait, first) {
                (w, None) => w,
                (w, Some(until)) => {
                    let left = until.saturating_duration_since(Instant::now());
                    Some(w.map_or(left, |w| w.min(left)))
                }
            };
            match self.poll.poll(&mut events, wait) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(RunError::Io {
                        what: "polling".into(),
                        source: e,
                    })
                }
            }
            for ev in &events {
                match ev.token() {
                    SIGNALS => self.handle_signals(),
                    LISTENER => self.accept(),
                    t => self.serve(t),
                }
            }
            self.drop_overdue();
            #[cfg(feature = "dpdk")]
            if let Some(dp) = &mut self.dataplane {
                dp.poll();
                if self.metrics && self.metrics_at.elapsed() >= METRICS_EVERY {
                    self.metrics_at = Instant::now();
                    dp.update_metrics();
                }
            }
        }
        #[cfg(feature = "dpdk")]
        if let Some(mut dp) = self.dataplane.take() {
            // A second SIGINT or SIGTERM ends the wait for the clients' acknowledgements.
            let signals = &mut self.signals;
            dp.shutdown(|| signals.pending().any(|s| s.signal != SIGHUP));
        }
        log("stopping");
        let _ = std::fs::remove_file(&self.socket_path);
        Ok(())
    }

    fn handle_signals(&mut self) {
        let pending: Vec<_> = self.signals.pending().collect();
        for s in pending {
            match s.signal {
                SIGHUP => {
                    // On record as a reload over the socket is, with who sent the signal.
                    let _ = self.audited_reload(&self.reload_cli(), &sighup_caller(&s), "SIGHUP");
                }
                _ => self.running = false,
            }
        }
    }

    /// A SIGHUP's reload, as the audit trail records it.
    fn reload_cli(&self) -> Cli {
        Cli {
            config: self.config_path.clone(),
            output: crate::admin::cli::Output::Json,
            verb: crate::admin::cli::Verb::Reload,
        }
    }

    /// Re-reads the file; applies it if valid and allowed as a change, else keeps the running one.
    /// What waits for a restart follows `LATER` in the message.
    fn reload(&mut self, why: &str) -> Result<String, String> {
        let text = read_own_config(&self.config_path).map_err(|e| {
            format!(
                "reload ({why}) refused: cannot read {}: {e}",
                self.config_path.display()
            )
        });
        let result = text.and_then(|t| {
            config::check_text(&self.config_path, t, Some(&self.current.config)).map_err(|e| {
                format!("reload ({why}) refused; the running configuration stays:\n{e}")
            })
        });
        match result {
            Ok(new) => {
                let mut msg = format!(
                    "reloaded {} ({why}): {} endpoint(s)",
                    self.config_path.display(),
                    new.config.endpoints.len()
                );
                #[cfg(feature = "dpdk")]
                if let Some(dp) = &mut self.dataplane {
                    if let Err(e) = dp.apply(&new) {
                        // Nothing of it is in force: the next reload is checked against what
                        // is.
                        let msg = format!(
                            "reload ({why}) not applied; the running configuration stays: {e}"
                        );
                        log(&msg);
                        return Err(msg);
                    }
                }
                let later = config::change::needs_restart(&self.started, &new.config);
                if !later.is_empty() {
                    msg.push_str(&format!("; {LATER}: {}", later.join(", ")));
                }
                self.current = new;
                log(&msg);
                Ok(msg)
            }
            Err(msg) => {
                log(&msg);
                Err(msg)
            }
        }
    }

    /// Accepts what waits on the admin socket while fewer than `MAX_ADMIN_CONNS` are served (the
    /// listener does not signal again for what it already signalled: this is called again when
    /// a connection ends).
    #[allow(clippy::disallowed_methods)] // the runtime shell reads the clock
    fn accept(&mut self) {
        while self.conns.len() < MAX_ADMIN_CONNS {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log(&format!("admin socket accept failed: {e}"));
                    return;
                }
            };
            let cred = match rustix::net::sockopt::socket_peercred(&stream) {
                Ok(c) => c,
                Err(e) => {
                    log(&format!(
                        "admin connection without peer credentials refused: {e}"
                    ));
                    continue;
                }
            };
            let uid = cred.uid.as_raw();
            if uid != 0 && uid != rustix::process::geteuid().as_raw() {
                log(&format!(
                    "admin connection from uid {uid} refused: root only"
                ));
                continue;
            }
            let token = Token(self.next_token);
            self.next_token += 1;
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE)
            {
                log(&format!("admin connection dropped: {e}"));
                continue;
            }
            let caller = Caller::Socket {
                uid,
                pid: cred.pid.as_raw_nonzero().get(),
            };
            let now = Instant::now();
            let ends = now + ADMIN_LIFETIME;
            self.conns.insert(
                token,
                Conn {
                    stream,
                    caller,
                    inbox: Vec::new(),
                    outbox: Vec::new(),
                    written: 0,
                    until: (now + ADMIN_DEADLINE).min(ends),
                    ends,
                },
            );
            if self.conns.len() == MAX_ADMIN_CONNS {
                log(&format!(
                    "{MAX_ADMIN_CONNS} admin connections open: more wait to be accepted until \
                     one ends"
                ));
            }
        }
    }

    /// Drops the admin connections past their deadline, saying why, and takes in what waited
    /// for their places.
    #[allow(clippy::disallowed_methods)] // the runtime shell reads the clock
    fn drop_overdue(&mut self) {
        let now = Instant::now();
        let overdue: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.until <= now)
            .map(|(t, _)| *t)
            .collect();
        if overdue.is_empty() {
            return;
        }
        for token in overdue {
            if let Some(mut conn) = self.conns.remove(&token) {
                let what = if conn.outbox.is_empty() {
                    format!("no whole request within {} s", ADMIN_DEADLINE.as_secs())
                } else if conn.ends <= now {
                    format!(
                        "its answer not all read within its {} s",
                        ADMIN_LIFETIME.as_secs()
                    )
                } else {
                    format!(
                        "the next part of its answer not read within {} s",
                        ADMIN_DEADLINE.as_secs()
                    )
                };
                log(&format!(
                    "admin connection ({}) dropped: {what}",
                    conn.peer()
                ));
                let _ = self.poll.registry().deregister(&mut conn.stream);
            }
        }
        self.accept();
    }

    fn serve(&mut self, token: Token) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let keep = if conn.outbox.is_empty() {
            self.read_request(&mut conn)
        } else {
            true
        };
        let keep = keep && Self::flush(&mut conn);
        let writing = !conn.outbox.is_empty();
        if rearm(self.poll.registry(), &mut conn.stream, token, keep, writing) {
            self.conns.insert(token, conn);
            return;
        }
        drop(conn);
        // Its answer is freed: a long one (describe of a thousand connections is several MiB
        // of small blocks) would otherwise stay resident under what was allocated since.
        sluice_engine::mem::release_free_memory();
        // Its place is free: what waits in the backlog is not signalled again.
        self.accept();
    }

    /// Reads what has arrived; on a full line, answers it. Returns whether to keep the conn.
    ///
    /// The end of the peer's writing side (a client that sends its request and shuts down its
    /// side, as `socat` and `nc -N` do) is read with the request itself, often in the same
    /// turn: the line before it is still answered, on the side that stays open.
    #[allow(clippy::disallowed_methods)] // the runtime shell reads the clock
    fn read_request(&mut self, conn: &mut Conn) -> bool {
        let ended = match read_available(&mut conn.stream, &mut conn.inbox, MAX_REQUEST) {
            Ok(ended) => ended,
            Err(Unread::TooLong) => {
                log("admin request over the size limit dropped");
                return false;
            }
            Err(Unread::Failed) => return false,
        };
        let asked = Instant::now();
        let response = match conn.inbox.iter().position(|b| *b == b'\n') {
            Some(end) => match serde_json::from_slice::<Request>(&conn.inbox[..end]) {
                Ok(req) => self.handle_request(&req, &conn.caller),
                Err(e) => bad_request(&e.to_string()),
            },
            None if !ended => return true,
            // Nothing sent: nobody to answer.
            None if conn.inbox.is_empty() => return false,
            // Only a whole line is acted on (`admin_socket::CallError::Send`).
            None => bad_request(
                "the request ended before the end of its line (a request is one JSON line, \
                 ending with a newline); nothing was done",
            ),
        };
        conn.outbox = serde_json::to_vec(&response).unwrap_or_default();
        conn.outbox.push(b'\n');
        // The time the verb took is not the peer's.
        let now = Instant::now();
        conn.ends += now.saturating_duration_since(asked);
        conn.until = (now + ADMIN_DEADLINE).min(conn.ends);
        true
    }

    /// Writes what it can; returns false once everything is written (close) or on error. A
    /// peer that takes part of its answer has `ADMIN_DEADLINE` again for the next, within its
    /// lifetime.
    fn flush(conn: &mut Conn) -> bool {
        let due = (&mut conn.until, conn.ends, ADMIN_DEADLINE);
        write_pending(&mut conn.stream, &conn.outbox, &mut conn.written, due)
    }

    /// A reload `cli` asked for by `caller` (over the admin socket, or a SIGHUP; `why` in the
    /// log): re-reads the file, and records it in the audit trail with its outcome, as every
    /// verb. The trail is the one of the configuration in force (the file may be broken: that
    /// is why a reload is refused).
    fn audited_reload(&mut self, cli: &Cli, caller: &Caller, why: &str) -> Result<String, String> {
        let result = self.reload(why);
        let trail =
            crate::admin::audit::trail_of(&self.current.base_dir(), &self.current.config.appliance);
        let outcome = result
            .as_ref()
            .map(|msg| serde_json::json!({ "Message": msg }))
            .map_err(|msg| crate::admin::AdminError::request("ReloadRefused", msg.clone()));
        let event = crate::admin::audit::event(cli, caller, SystemTime::now(), outcome.as_ref());
        if let Err(e) = crate::admin::audit::append(&trail, &event) {
            log(&format!(
                "could not append to the audit trail {}: {e}",
                trail.display()
            ));
        }
        // What the reload made and dropped (the file's text, the checks, the configuration
        // replaced) goes back to the kernel: a SIGHUP has no admin connection whose end would
        // do it (`serve`).
        sluice_engine::mem::release_free_memory();
        result
    }

    /// `sluice reload` from the admin socket (`audited_reload`), answered.
    fn reload_request(&mut self, cli: &Cli, caller: &Caller) -> Response {
        match self.audited_reload(cli, caller, "admin request") {
            Ok(msg) => Response {
                exit: 0,
                stdout: format!("{msg}\n"),
                stderr: String::new(),
                not_its_file: false,
            },
            Err(msg) => Response {
                exit: 2,
                stdout: String::new(),
                stderr: format!("{msg}\n"),
                not_its_file: false,
            },
        }
    }

    /// Whether `theirs`, a caller's configuration file, is the file this daemon runs on.
    fn is_own_file(&self, theirs: &Path) -> bool {
        match (
            std::fs::canonicalize(&self.config_path),
            std::fs::canonicalize(theirs),
        ) {
            (Ok(own), Ok(theirs)) => own == theirs,
            _ => false,
        }
    }

    fn handle_request(&mut self, req: &Request, caller: &Caller) -> Response {
        // A verb for another file that names this daemon's socket is not for this daemon: its
        // file must not change. The caller works on its file itself.
        if let Some(theirs) = &req.config {
            if !theirs.is_absolute() {
                return Response {
                    exit: 2,
                    stdout: String::new(),
                    stderr: format!(
                        "bad admin request: the configuration path {} is not absolute\n",
                        theirs.display()
                    ),
                    not_its_file: false,
                };
            }
            if !self.is_own_file(theirs) {
                return Response {
                    exit: 2,
                    stdout: String::new(),
                    stderr: format!(
                        "the sluice daemon on {} runs on {}, not on {}\n",
                        self.socket_path.display(),
                        self.config_path.display(),
                        theirs.display()
                    ),
                    not_its_file: true,
                };
            }
        }
        // The verbs read the file as they read one named on the command line, which may be a
        // pipe: one put in place of the daemon's file since its start would hold this thread.
        if std::fs::metadata(&self.config_path).is_ok_and(|m| !m.is_file()) {
            return Response {
                exit: 2,
                stdout: String::new(),
                stderr: format!(
                    "{} is no longer a regular file: the daemon serves no verb on it\n",
                    self.config_path.display()
                ),
                not_its_file: false,
            };
        }
        let mut argv = vec!["sluice".to_owned()];
        argv.extend(req.args.iter().cloned());
        argv.push("--config".to_owned());
        argv.push(self.config_path.to_string_lossy().into_owned());
        let cli = match Cli::try_parse_from(&argv) {
            Ok(c) => c,
            Err(e) => {
                return Response {
                    exit: 2,
                    stdout: String::new(),
                    stderr: e.to_string(),
                    not_its_file: false,
                }
            }
        };
        let result = match &cli.verb {
            crate::admin::cli::Verb::Reload => return self.reload_request(&cli, caller),
            #[cfg(feature = "dpdk")]
            crate::admin::cli::Verb::DescribeClientVpnConnections(_)
            | crate::admin::cli::Verb::TerminateClientVpnConnections(_)
            | crate::admin::cli::Verb::DescribeDataPlane => {
                let dp = self.dataplane.as_mut();
                crate::admin::execute_with(&cli, caller, SystemTime::now(), |cli| {
                    live_connections(dp, cli)
                })
            }
            // Relative paths in the request are the caller's, not this process's. Describing
            // endpoints says which of the file's this daemon serves only after a restart.
            _ => {
                let cwd = req.cwd.as_deref().unwrap_or(Path::new(""));
                let started = &self.started;
                crate::admin::execute_with(&cli, caller, SystemTime::now(), |cli| {
                    crate::admin::verbs::run_served(cli, cwd, started)
                })
            }
        };
        match result {
            Ok(r) => {
                let stdout = r.render(cli.output);
                let mut stderr = String::new();
                if !crate::admin::audit::is_read_only(&cli)
                    && !matches!(
                        cli.verb,
                        crate::admin::cli::Verb::TerminateClientVpnConnections(_)
                    )
                {
                    // The verb wrote the file; put it in force (a change it allowed is allowed),
                    // and say what is not.
                    match self.reload(&crate::admin::audit::event_name(&cli)) {
                        Ok(msg) => {
                            if let Some((_, later)) = msg.split_once(&format!("; {LATER}: ")) {
                                stderr = format!("note: {LATER}: {later}\n");
                            }
                        }
                        Err(e) => {
                            return Response {
                                exit: 1,
                                stdout,
                                stderr: format!(
                                    "error: the change is in {} but not in force: {e}\n",
                                    self.config_path.display()
                                ),
                                not_its_file: false,
                            }
                        }
                    }
                }
                Response {
                    exit: 0,
                    stdout,
                    stderr,
                    not_its_file: false,
                }
            }
            Err(e) => Response {
                exit: e.exit_code(),
                stdout: String::new(),
                stderr: format!("{e}\n"),
                not_its_file: false,
            },
        }
    }
}

/// The text of the daemon's configuration file at `path`: a regular file only, opened without
/// waiting, read no further than `files::CONFIG_LIMIT`. The daemon reads it at its start and
/// again at every reload (SIGHUP, `sluice reload`, a verb that changed it); a FIFO (`--config
/// <(...)`) would be drained at the start and hold the control thread at the next reload until
/// a writer came, and a device gives no file to edit. The verbs run on their own
/// (`sluice validate --config <(...)`) still read pipes (`config::read_text`).
///
/// # Errors
/// The open or the read fails; not a regular file, or larger than the limit (each saying why);
/// not UTF-8. The message does not name the file: callers do.
fn read_own_config(path: &Path) -> Result<String, String> {
    use crate::config::files::{self, CONFIG_LIMIT};
    files::read_regular_text(path, CONFIG_LIMIT).map_err(|e| {
        if e == "not a regular file" {
            "not a regular file: the daemon reads its configuration again at every reload \
             (SIGHUP, `sluice reload`, a verb that changes it), which a FIFO or a device cannot \
             give; `sluice run` takes a regular file"
                .to_owned()
        } else if e == files::too_large(CONFIG_LIMIT) {
            format!(
                "{e}: a configuration with thousands of endpoints and rules is a few MiB, so \
                 this is not one, and it is not read whole"
            )
        } else {
            e
        }
    })
}

/// Why a peer's request is not read on (`read_available`): the peer is dropped.
#[derive(Debug, PartialEq, Eq)]
enum Unread {
    /// It is longer than the most accepted.
    TooLong,
    /// The read failed (the peer reset the connection, say).
    Failed,
}

/// Reads what the non-blocking `stream` (an admin or a metrics peer) has until it would block,
/// appending it to `inbox`, which may hold at most `max` bytes. Returns whether the peer ended
/// its writing side: what it sent before is in `inbox` all the same.
///
/// # Errors
/// `inbox` would hold more than `max` bytes, or a read failed.
fn read_available(stream: &mut impl Read, inbox: &mut Vec<u8>, max: usize) -> Result<bool, Unread> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                inbox.extend_from_slice(&buf[..n]);
                if inbox.len() > max {
                    return Err(Unread::TooLong);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Unread::Failed),
        }
    }
}

/// After a turn of serving an admin or a metrics peer: one to keep (`keep`) waits for what it
/// needs next, to write the rest of its answer (`writing`) or to send more of its request.
/// Returns whether it is registered so; if not (or not kept) it is deregistered, to be dropped.
fn rearm(
    registry: &mio::Registry,
    stream: &mut impl mio::event::Source,
    token: Token,
    keep: bool,
    writing: bool,
) -> bool {
    if keep {
        let interest = if writing {
            Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if registry.reregister(stream, token, interest).is_ok() {
            return true;
        }
    }
    let _ = registry.deregister(stream);
    false
}

/// Writes to the non-blocking `stream` (an admin or a metrics peer) what of `outbox` is past
/// `written`, until it would block. Each part the peer takes gives it `deadline` more in `until`
/// (`due`), never past `ends`, its lifetime. Returns whether to keep the peer: true while part
/// of the answer waits, or before there is one (`outbox` empty); false once all of it is
/// written (close) or on error.
#[allow(clippy::disallowed_methods)] // the runtime shells read the clock
fn write_pending(
    stream: &mut impl Write,
    outbox: &[u8],
    written: &mut usize,
    (until, ends, deadline): (&mut Instant, Instant, Duration),
) -> bool {
    while *written < outbox.len() {
        match stream.write(&outbox[*written..]) {
            Ok(n) => {
                *written += n;
                *until = (Instant::now() + deadline).min(ends);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    outbox.is_empty()
}

/// The answer to a request that could not be read.
fn bad_request(why: &str) -> Response {
    Response {
        exit: 2,
        stdout: String::new(),
        stderr: format!("bad admin request: {why}\n"),
        not_its_file: false,
    }
}

/// `describe-` and `terminate-client-vpn-connections` against the running data plane.
#[cfg(feature = "dpdk")]
fn live_connections(
    dp: Option<&mut dataplane::Dataplane>,
    cli: &Cli,
) -> Result<crate::admin::verbs::Response, crate::admin::AdminError> {
    use crate::admin::cli::Verb;
    use crate::admin::verbs::Response;
    use crate::admin::AdminError;
    let Some(dp) = dp else {
        return Err(AdminError::request(
            "OperationNotPermitted",
            "this daemon runs without a data plane (no [[dataplane.port]]), so it has no connections",
        ));
    };
    match &cli.verb {
        Verb::DescribeClientVpnConnections(a) => {
            if let Some(id) = a.client_vpn_endpoint_id.as_deref() {
                if !dp.knows(id) {
                    return Err(AdminError::endpoint_not_found(id));
                }
            }
            use crate::admin::filters::Filters;
            use crate::admin::paging::{self, Order, Page};
            let filters = Filters::parse(&a.listing.filters, &["connection-id", "username"])?;
            let mut list = dp.connections(a.client_vpn_endpoint_id.as_deref());
            list.retain(|c| {
                filters.matches(|name| match name {
                    "connection-id" => Some(c.connection_id.clone()),
                    "username" => c.username.clone(),
                    _ => None,
                })
            });
            let Page {
                items: list,
                next_token,
            } = paging::page(
                list,
                // Not "connections": a token of the earlier key (time, then id) is refused,
                // not read as a place in this order.
                "connections-in-order",
                Order::ByKey,
                |c| c.paging_key(),
                &a.listing,
            )?;
            let json = serde_json::json!({ "Connections": list });
            let items = json["Connections"]
                .as_array()
                .map_or(&[][..], Vec::as_slice);
            let table = crate::admin::table::render(
                "Connections",
                items,
                &[
                    ("ConnectionId", "/ConnectionId"),
                    ("ClientIp", "/ClientIp"),
                    ("CommonName", "/CommonName"),
                    ("Username", "/Username"),
                    ("DeviceIp", "/DeviceIp"),
                    ("Established", "/ConnectionEstablishedTime"),
                    ("InBytes", "/IngressBytes"),
                    ("OutBytes", "/EgressBytes"),
                    ("InPkts", "/IngressPackets"),
                    ("OutPkts", "/EgressPackets"),
                    ("Status", "/Status/Code"),
                    ("Reason", "/Status/Message"),
                ],
            );
            let mut r = Response::object(json);
            r.table = table;
            Ok(paging::with_next_token(r, next_token))
        }
        Verb::TerminateClientVpnConnections(a) => {
            if !dp.knows(&a.client_vpn_endpoint_id) {
                return Err(AdminError::endpoint_not_found(&a.client_vpn_endpoint_id));
            }
            let ended = dp.terminate(
                &a.client_vpn_endpoint_id,
                a.connection_id.as_deref(),
                a.username.as_deref(),
            );
            if ended.is_empty() {
                return Err(AdminError::request(
                    "InvalidClientVpnConnection.NotFound",
                    "no active connection matches",
                ));
            }
            let statuses: Vec<serde_json::Value> = ended
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "ConnectionId": c.connection_id,
                        "PreviousStatus": { "Code": "active" },
                        "CurrentStatus": { "Code": "terminating" },
                    })
                })
                .collect();
            // As AWS's answer: the user name only when the connections were named by it.
            let mut answer = serde_json::json!({
                "ClientVpnEndpointId": a.client_vpn_endpoint_id,
                "ConnectionStatuses": statuses,
            });
            if let Some(u) = &a.username {
                answer["Username"] = serde_json::json!(u);
            }
            Ok(Response::object(answer))
        }
        Verb::DescribeDataPlane => Ok(Response::object(dp.describe())),
        _ => Err(AdminError::Internal("not a connection verb".into())),
    }
}

/// How long a gauge stays in the scrape once nothing sets it: the data plane sets each of its
/// gauges every `METRICS_EVERY`, so one that is no longer set describes something gone (a CRL
/// a reload removed) and must not go on reading as current.
const GAUGE_IDLE: Duration = Duration::from_secs(10);

/// Installs the Prometheus recorder and binds its listener, unless turned off: the endpoint,
/// served once its thread runs it (`metrics::MetricsServer::run`).
fn start_metrics(address: &str) -> Result<Option<metrics::MetricsServer>, RunError> {
    if address.is_empty() {
        return Ok(None);
    }
    let addr: std::net::SocketAddr = address.parse().map_err(|_| RunError::Io {
        what: format!("metrics address `{address}`"),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    let listener = std::net::TcpListener::bind(addr)
        .map_err(io_err(format!("binding the metrics endpoint {addr}")))?;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install_recorder()
        .map_err(|e| RunError::Io {
            what: format!("installing the metrics recorder: {e}"),
            source: io::Error::other("recorder"),
        })?;
    let server = metrics::MetricsServer::new(listener, handle, metrics::DEADLINE)
        .map_err(io_err("starting the metrics endpoint"))?;
    Ok(Some(server))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io::{self, Read};

    use super::{read_available, shown, Unread};

    /// A peer's side as reads see it: each step a part of what it sent, or an error; past the
    /// steps, the end of its writing side.
    struct Peer(VecDeque<io::Result<Vec<u8>>>);

    impl Read for Peer {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(Ok(part)) => {
                    let n = part.len().min(buf.len());
                    buf[..n].copy_from_slice(&part[..n]);
                    if n < part.len() {
                        self.0.push_front(Ok(part[n..].to_vec()));
                    }
                    Ok(n)
                }
                Some(Err(e)) => Err(e),
            }
        }
    }

    fn peer(steps: Vec<io::Result<&[u8]>>) -> Peer {
        Peer(steps.into_iter().map(|s| s.map(<[u8]>::to_vec)).collect())
    }

    fn would_block() -> io::Result<&'static [u8]> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// What has arrived is read until the peer would block (an interrupted read is tried
    /// again), or to its end (what came before it is kept); more than the most accepted, or a
    /// failed read, is refused.
    #[test]
    fn a_request_is_read_until_it_would_block_or_ends() {
        let mut inbox = b"{".to_vec();
        let mut p = peer(vec![
            Ok(b"\"args\""),
            Err(io::ErrorKind::Interrupted.into()),
            Ok(b": []"),
            would_block(),
            Ok(b"}\n"),
        ]);
        assert_eq!(read_available(&mut p, &mut inbox, 64), Ok(false));
        assert_eq!(inbox, b"{\"args\": []");
        assert_eq!(read_available(&mut p, &mut inbox, 64), Ok(true));
        assert_eq!(inbox, b"{\"args\": []}\n");

        let long = vec![b'x'; 10_000];
        let mut inbox = Vec::new();
        let mut p = peer(vec![Ok(&long[..]), would_block()]);
        assert_eq!(
            read_available(&mut p, &mut inbox, 9_999),
            Err(Unread::TooLong)
        );
        let mut inbox = Vec::new();
        let mut p = peer(vec![Ok(&long[..]), would_block()]);
        assert_eq!(read_available(&mut p, &mut inbox, 10_000), Ok(false));
        assert_eq!(inbox.len(), 10_000);

        let mut inbox = Vec::new();
        let mut p = peer(vec![Ok(b"GET"), Err(io::ErrorKind::ConnectionReset.into())]);
        assert_eq!(read_available(&mut p, &mut inbox, 64), Err(Unread::Failed));
    }

    /// A name a client chose cannot end a log line or forge another, nor run on for pages.
    #[test]
    fn client_chosen_names_stay_on_their_line() {
        assert_eq!(shown(None), "-");
        assert_eq!(shown(Some("alice")), "alice");
        let forged = "x\n2030-01-01T00:00:00Z sluice: connection established\u{1b}[2J\r";
        let s = shown(Some(forged));
        assert!(!s.chars().any(char::is_control), "{s}");
        assert!(s.starts_with("x\\n2030"), "{s}");
        assert_eq!(shown(Some("é")), "é");
        let long = "a".repeat(5000);
        assert_eq!(shown(Some(&long)), format!("{}...", "a".repeat(128)));
    }
}
