//! The Prometheus metrics endpoint: a thread of its own with a small mio loop that answers any
//! HTTP request with the recorder's text (a HEAD with its head alone), one exchange a
//! connection.
//!
//! Several scrapers are served at once (`MAX_PEERS`; more wait in the listener's backlog and
//! are taken as others end), each with `DEADLINE` to send its request and again to take each
//! part of the answer, as the admin socket's peers, and `LIFETIME` from its acceptance for the
//! whole exchange: a peer that connects and sends nothing, or reads nothing, is dropped then,
//! one that reads ever so slowly at its `LIFETIME`, and meanwhile none delays another scrape. Nothing here touches
//! the control thread (admin verbs, handshakes, timers, signals), which only updates the
//! recorder.
//!
//! A runtime shell: it reads the clock and blocks in `poll`.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::{log, read_available, rearm, write_pending};

/// How long a scraper has to send its request from when it is accepted, and then to take each
/// part of the answer (the admin socket's `ADMIN_DEADLINE`).
pub const DEADLINE: Duration = Duration::from_secs(5);
/// How long a scraper has from when it is accepted for its request and the whole answer, however
/// steadily it takes parts of it: else a few peers that each take a byte now and then would
/// keep every place for as long as they like.
pub const LIFETIME: Duration = Duration::from_secs(10);
/// How many scrapers are served at once; more wait to be accepted, so that peers that never
/// finish cannot take every descriptor the process may open.
pub const MAX_PEERS: usize = 16;
/// The longest request head read: a scraper's is a few hundred bytes.
const MAX_REQUEST: usize = 8192;
/// How soon to try accepting again after the listener failed (out of descriptors, say).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// After a line about a peer dropped at a limit, how long the next ones are only counted: a
/// flood of stalled peers costs a line per this time at most, with how many there were.
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

const LISTENER: Token = Token(usize::MAX);

/// A scraper being served.
struct Peer {
    stream: TcpStream,
    /// Where it connected from, for the log line if it is dropped.
    addr: SocketAddr,
    inbox: Vec<u8>,
    /// The answer, once the request is in.
    outbox: Vec<u8>,
    written: usize,
    /// When it is dropped if it has not finished (`deadline` from its acceptance, from its
    /// answer, and from each part of it taken; never after `ends`).
    until: Instant,
    /// When it is dropped whatever it does (`lifetime` from its acceptance).
    ends: Instant,
}

/// The endpoint's listener, recorder handle and the scrapers being served.
pub struct MetricsServer {
    poll: Poll,
    listener: TcpListener,
    handle: PrometheusHandle,
    peers: Vec<Option<Peer>>,
    deadline: Duration,
    /// Each peer's time for its whole exchange.
    lifetime: Duration,
    /// When to try accepting again after a failure, if one is pending.
    accept_at: Option<Instant>,
    /// The lines about peers dropped at a limit, rate-limited.
    drops: DropLog,
    /// Where log lines go (the daemon's log; a test's own sink).
    log: Box<dyn FnMut(&str) + Send>,
}

/// The log lines about peers dropped at a limit: the first at once, those that follow within
/// `every` of it only counted, and summed up in one line when that time is up (with the last
/// peer and its limit), after which the next is again logged at once. So each drop is in the
/// log, one by one or in a count, and a flood of stalled peers costs a line per `every`.
struct DropLog {
    every: Duration,
    /// Until when drops are only counted.
    quiet_until: Option<Instant>,
    /// How many were counted since the last line, and the last of them.
    held: usize,
    last: String,
}

impl DropLog {
    fn new(every: Duration) -> Self {
        Self {
            every,
            quiet_until: None,
            held: 0,
            last: String::new(),
        }
    }

    /// A peer dropped at `now` (`what`: its address and the limit): the line to log now, if
    /// any.
    fn dropped(&mut self, now: Instant, what: String) -> Option<String> {
        if self.quiet_until.is_some_and(|t| now < t) {
            self.held += 1;
            self.last = what;
            return None;
        }
        // A count still held (its time came before the loop woke for it) goes first.
        let before = self.summary();
        self.quiet_until = Some(now + self.every);
        let line = format!("metrics peer {what}");
        Some(match before {
            Some(b) => format!("{b}; then {line}"),
            None => line,
        })
    }

    /// When the count held is due to be logged, if one is.
    fn due(&self) -> Option<Instant> {
        self.quiet_until.filter(|_| self.held > 0)
    }

    /// The line summing up the drops counted, if its time has come at `now`.
    fn flush(&mut self, now: Instant) -> Option<String> {
        if self.due().is_some_and(|t| t <= now) {
            self.quiet_until = Some(now + self.every);
            self.summary()
        } else {
            None
        }
    }

    fn summary(&mut self) -> Option<String> {
        if self.held == 0 {
            return None;
        }
        let line = format!(
            "{} more metrics peer(s) dropped within {} s, not logged one by one; the last {}",
            self.held,
            self.every.as_secs_f64(),
            self.last
        );
        self.held = 0;
        Some(line)
    }
}

impl MetricsServer {
    /// Serves `handle`'s text on `listener` once `run`, each peer having `deadline` for each
    /// step and `LIFETIME` for the whole exchange (`with_lifetime`).
    ///
    /// # Errors
    /// The listener cannot be made non-blocking, or the event loop cannot be made.
    pub fn new(
        listener: std::net::TcpListener,
        handle: PrometheusHandle,
        deadline: Duration,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Self {
            poll,
            listener,
            handle,
            peers: (0..MAX_PEERS).map(|_| None).collect(),
            deadline,
            lifetime: LIFETIME,
            accept_at: None,
            drops: DropLog::new(DROP_LOG_EVERY),
            log: Box::new(log),
        })
    }

    /// Sends its log lines to `sink`, and counts the drops that follow a logged one for
    /// `every` (`DROP_LOG_EVERY`) instead.
    #[must_use]
    pub fn with_log(mut self, sink: impl FnMut(&str) + Send + 'static, every: Duration) -> Self {
        self.log = Box::new(sink);
        self.drops = DropLog::new(every);
        self
    }

    /// Gives each peer `lifetime` from its acceptance for the whole exchange instead.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// As `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves scrapers until the event loop fails (it is logged); the process's end ends it.
    #[allow(clippy::disallowed_methods)] // a shell's thread: it reads the clock
    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            let next = self
                .peers
                .iter()
                .flatten()
                .map(|p| p.until)
                .chain(self.accept_at)
                .chain(self.drops.due())
                .min();
            let timeout = next.map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                (self.log)(&format!("metrics endpoint stopped: {e}"));
                return;
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    Token(slot) => self.serve(slot),
                }
            }
            self.drop_overdue();
        }
    }

    /// Accepts what waits while a place is free (the listener does not signal again for what
    /// it already signalled: this is called again when a peer ends, and after a failure).
    #[allow(clippy::disallowed_methods)] // a shell's thread: it reads the clock
    fn accept(&mut self) {
        self.accept_at = None;
        while let Some(slot) = self.peers.iter().position(Option::is_none) {
            let (mut stream, addr) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(_) => {
                    // Out of descriptors, say: the peer stays in the backlog; try again shortly
                    // rather than spin.
                    self.accept_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            };
            if self
                .poll
                .registry()
                .register(&mut stream, Token(slot), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            let now = Instant::now();
            let ends = now + self.lifetime;
            self.peers[slot] = Some(Peer {
                stream,
                addr,
                inbox: Vec::new(),
                outbox: Vec::new(),
                written: 0,
                until: (now + self.deadline).min(ends),
                ends,
            });
        }
    }

    /// Drops the peers past their deadline, saying why (`DropLog`), takes in what waited for
    /// their places, and tries the listener again when a failure asked for it.
    #[allow(clippy::disallowed_methods)] // a shell's thread: it reads the clock
    fn drop_overdue(&mut self) {
        let now = Instant::now();
        let mut freed = false;
        for place in &mut self.peers {
            if place.as_ref().is_some_and(|p| p.until <= now) {
                if let Some(mut peer) = place.take() {
                    let _ = self.poll.registry().deregister(&mut peer.stream);
                    let what = if peer.outbox.is_empty() {
                        format!("no whole request within {:?}", self.deadline)
                    } else if peer.ends <= now {
                        format!("its answer not all read within its {:?}", self.lifetime)
                    } else {
                        format!(
                            "the next part of its answer not read within {:?}",
                            self.deadline
                        )
                    };
                    let line = self
                        .drops
                        .dropped(now, format!("{} dropped: {what}", peer.addr));
                    if let Some(line) = line {
                        (self.log)(&line);
                    }
                }
                freed = true;
            }
        }
        if let Some(line) = self.drops.flush(now) {
            (self.log)(&line);
        }
        if freed || self.accept_at.is_some_and(|t| t <= now) {
            self.accept();
        }
    }

    fn serve(&mut self, slot: usize) {
        let Some(mut peer) = self.peers.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let keep =
            (!peer.outbox.is_empty() || self.read_request(&mut peer)) && self.flush(&mut peer);
        let writing = !peer.outbox.is_empty();
        if rearm(
            self.poll.registry(),
            &mut peer.stream,
            Token(slot),
            keep,
            writing,
        ) {
            self.peers[slot] = Some(peer);
            return;
        }
        drop(peer);
        // Its place is free: what waits in the backlog is not signalled again.
        self.accept();
    }

    /// Reads what has arrived; once the request's head is in (or the peer ended its side after
    /// sending something), makes the answer. Returns whether to keep the peer.
    #[allow(clippy::disallowed_methods)] // a shell's thread: it reads the clock
    fn read_request(&self, peer: &mut Peer) -> bool {
        let Ok(ended) = read_available(&mut peer.stream, &mut peer.inbox, MAX_REQUEST) else {
            return false;
        };
        let head_in = peer.inbox.windows(4).any(|w| w == b"\r\n\r\n")
            || peer.inbox.windows(2).any(|w| w == b"\n\n");
        // A head cut short by the end of the peer's side is answered too.
        let asked = head_in || (ended && !peer.inbox.is_empty());
        if !asked {
            // Nothing sent and gone: nobody to answer.
            return !ended;
        }
        // Any request gets the text, whatever its path; a HEAD gets only the head the text
        // would have (RFC 9110 §9.3.2: no content in answer to HEAD).
        let body = self.handle.render();
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        if !peer.inbox.starts_with(b"HEAD ") {
            answer.push_str(&body);
        }
        peer.outbox = answer.into_bytes();
        peer.until = (Instant::now() + self.deadline).min(peer.ends);
        true
    }

    /// Writes what it can; returns false once everything is written (close) or on error. A
    /// peer that takes part of its answer has the deadline again for the next, within its
    /// lifetime.
    fn flush(&self, peer: &mut Peer) -> bool {
        let due = (&mut peer.until, peer.ends, self.deadline);
        write_pending(&mut peer.stream, &peer.outbox, &mut peer.written, due)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use super::*;

    /// A server with its own recorder (the process-wide one is not installed), on a loopback
    /// port of its own, each peer having `deadline`; running on a thread that ends with the
    /// test process.
    fn started(deadline: Duration) -> SocketAddr {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = MetricsServer::new(listener, recorder.handle(), deadline).expect("server");
        let addr = server.local_addr().expect("address");
        std::thread::spawn(move || server.run());
        addr
    }

    /// A peer that connects and sends nothing.
    fn stalled(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s
    }

    /// `GET /metrics`, each step bounded by `within`.
    fn scrape(addr: SocketAddr, within: Duration) -> io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, within)?;
        s.set_read_timeout(Some(within))?;
        s.set_write_timeout(Some(within))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// A HEAD is answered with the head a GET gets, its Content-Length included, and no
    /// content after it.
    #[test]
    fn a_head_request_gets_the_head_alone() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            ::metrics::counter!("sluice_test_total").increment(1);
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = MetricsServer::new(listener, handle.clone(), DEADLINE).expect("server");
        let addr = server.local_addr().expect("address");
        std::thread::spawn(move || server.run());
        let body = handle.render();
        assert!(!body.is_empty());
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("request");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\n"),
            "content after the head: {answer}"
        );
    }

    /// Peers that connect and never send hold no other scrape: a scraper is answered while
    /// they wait (one place short of all taken), at once rather than after their time.
    #[test]
    fn stalled_peers_do_not_hold_up_a_scrape() {
        let addr = started(DEADLINE);
        let quiet: Vec<TcpStream> = (1..MAX_PEERS).map(|_| stalled(addr)).collect();
        let answer = scrape(addr, Duration::from_secs(3)).expect("answered while they stall");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("Connection: close\r\n"), "{answer}");
        drop(quiet);
    }

    /// A peer that sends nothing is dropped at its deadline; with every place taken by such
    /// peers, a scraper waits in the backlog for a place, and is then answered.
    #[test]
    fn a_stalled_peer_is_dropped_at_its_deadline_and_its_place_taken() {
        let addr = started(Duration::from_millis(300));
        let mut quiet: Vec<TcpStream> = (0..MAX_PEERS).map(|_| stalled(addr)).collect();
        let answer = scrape(addr, Duration::from_secs(10)).expect("answered once a place frees");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        let mut buf = [0u8; 16];
        for q in &mut quiet {
            assert_eq!(q.read(&mut buf).expect("closed, not timed out"), 0);
        }
    }

    /// A peer dropped at its deadline is in the log with its address and the limit; a flood of
    /// them costs one line, and one more with how many followed it within the log's quiet time.
    #[test]
    #[allow(clippy::disallowed_methods)] // a test waits and reads the clock
    fn stalled_peers_dropped_are_logged_without_flooding_the_log() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = std::sync::Arc::clone(&lines);
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = MetricsServer::new(listener, recorder.handle(), Duration::from_millis(300))
            .expect("server")
            .with_log(
                move |l: &str| sink.lock().expect("lock").push(l.to_owned()),
                Duration::from_secs(3),
            );
        let addr = server.local_addr().expect("address");
        std::thread::spawn(move || server.run());
        // More than there are places: those in the backlog are dropped in their turn.
        let mut quiet: Vec<TcpStream> = (0..MAX_PEERS + 4).map(|_| stalled(addr)).collect();
        let first = quiet[0].local_addr().expect("address");
        let mut buf = [0u8; 16];
        for q in &mut quiet {
            assert_eq!(q.read(&mut buf).expect("closed, not timed out"), 0);
        }
        // Within the quiet time, one line: the first peer dropped, at its limit.
        let logged = lines.lock().expect("lock").clone();
        assert_eq!(logged.len(), 1, "{logged:#?}");
        assert!(
            logged[0].starts_with("metrics peer ")
                && logged[0].contains(&format!("{first} dropped: no whole request within 300ms")),
            "{logged:#?}"
        );
        // Then the others, counted, in one line.
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while lines.lock().expect("lock").len() < 2 && std::time::Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(50));
        }
        let logged = lines.lock().expect("lock").clone();
        assert_eq!(logged.len(), 2, "{logged:#?}");
        assert!(
            logged[1].starts_with(&format!(
                "{} more metrics peer(s) dropped within 3 s, not logged one by one; the last \
                 127.0.0.1:",
                MAX_PEERS + 3
            )) && logged[1].ends_with(" dropped: no whole request within 300ms"),
            "{logged:#?}"
        );
    }

    /// Peers that take their answer ever so slowly, a part now and then, are dropped at their
    /// lifetime however steadily they read: with every place taken by such peers, a scraper
    /// waiting in the backlog is answered once their lifetime is up. The answer is made large
    /// (long label values) and the sockets' buffers small, so that the answer is taken in many
    /// parts.
    #[test]
    #[allow(clippy::disallowed_methods)] // a test's peers wait and read the clock
    fn slow_readers_are_dropped_at_their_lifetime() {
        use std::os::fd::AsFd;

        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let pad = "x".repeat(10_000);
        ::metrics::with_local_recorder(&recorder, || {
            for i in 0..100 {
                ::metrics::counter!("sluice_test_total", "i" => i.to_string(), "pad" => pad.clone())
                    .increment(1);
            }
        });
        let size = handle.render().len();
        assert!(size > 1_000_000, "{size}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        // The accepted sockets take the listener's send buffer: small, the answer goes in
        // parts.
        rustix::net::sockopt::set_socket_send_buffer_size(listener.as_fd(), 4096)
            .expect("SO_SNDBUF");
        let server = MetricsServer::new(listener, handle, Duration::from_secs(2))
            .expect("server")
            .with_lifetime(Duration::from_secs(4));
        let addr = server.local_addr().expect("address");
        std::thread::spawn(move || server.run());

        // Past their lifetime they take what was already sent, and then see the end.
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        let readers: Vec<_> = (0..MAX_PEERS)
            .map(|_| {
                let fd = rustix::net::socket(
                    rustix::net::AddressFamily::INET,
                    rustix::net::SocketType::STREAM,
                    None,
                )
                .expect("socket");
                rustix::net::sockopt::set_socket_recv_buffer_size(&fd, 4096).expect("SO_RCVBUF");
                rustix::net::connect(&fd, &addr).expect("connect");
                let mut s = TcpStream::from(fd);
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .expect("request");
                // A kilobyte every 200 ms: a part taken well within each deadline.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    let mut got = 0;
                    while std::time::Instant::now() < give_up {
                        std::thread::sleep(Duration::from_millis(200));
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return (got, true),
                            Ok(n) => got += n,
                        }
                    }
                    (got, false)
                })
            })
            .collect();
        // Let them take every place first.
        std::thread::sleep(Duration::from_millis(500));
        let answer = scrape(addr, Duration::from_secs(15));
        let answer = answer.expect("answered once the slow readers' lifetime is up");
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "{}",
            &answer[..100]
        );
        assert!(answer.len() > size, "{}", answer.len());
        for r in readers {
            let (got, ended) = r.join().expect("reader");
            assert!(ended, "a slow reader was not dropped (took {got} bytes)");
            assert!(got < size, "a slow reader took the whole answer");
        }
    }
}
