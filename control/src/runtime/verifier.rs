//! The password checkers: a few threads of the runtime's own that run the argon2 checks the
//! control-channel servers hand out (`proto::verify`), so that the control thread goes on
//! serving every client (handshakes, retransmissions, renegotiations, the admin socket) while
//! a check takes its tens of milliseconds. Checks go to the threads over a bounded channel;
//! verdicts come back over another, and the control thread feeds them to their servers on its
//! next turn (`Verifier::serve`, `Verifier::verdicts`).
//!
//! What it costs: `THREADS` threads, idle (blocked on the channel) but for the checks; each
//! check holds one thread for its time and 19 MiB of argon2 memory, so at most `THREADS`
//! checks run at once. They do not make checks cheaper: on a machine whose one core beside the
//! data core is shared with the control thread, the checks of a thousand users reconnecting
//! still take their 15-30 s of that core's time, but the kernel's scheduler shares it with the
//! control thread instead of the control thread stopping for them.
//!
//! A runtime shell: it runs threads and may block (the threads do, the control thread never).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{self, Receiver, Sender, TrySendError};

use crate::auth::directory::hash_matches;
use crate::proto::server::{Authenticator, Server};
use crate::proto::verify::{PasswordCheck, Verdict, Verification};

/// The checker threads the runtime starts.
pub const THREADS: usize = 2;

/// Runs a check: whether the password matches the hash.
pub type CheckFn = fn(&PasswordCheck) -> bool;

/// The check the daemon runs: argon2 (`directory::hash_matches`).
pub fn argon2_check(check: &PasswordCheck) -> bool {
    hash_matches(&check.hash, check.password.expose())
}

/// A check of server number `server`.
struct Job {
    server: usize,
    verification: Verification,
}

/// The checker threads and their channels.
pub struct Verifier {
    jobs: Option<Sender<Job>>,
    verdicts: Receiver<(usize, u64, Verdict)>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Verifier {
    /// Starts `threads` checker threads running `check`, with room for `capacity` checks
    /// queued; `waker` is woken at each verdict (for an event loop that does not come back by
    /// itself every millisecond).
    ///
    /// # Errors
    /// A thread could not be started.
    pub fn start(
        threads: usize,
        capacity: usize,
        check: CheckFn,
        waker: Option<Arc<mio::Waker>>,
    ) -> io::Result<Self> {
        let (jobs, queue) = channel::bounded::<Job>(capacity.max(1));
        // Never more verdicts than jobs taken: bounded by the jobs' channel and the threads.
        let (verdicts_in, verdicts) = channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(threads);
        for n in 0..threads.max(1) {
            let (queue, verdicts_in, stop) = (queue.clone(), verdicts_in.clone(), stop.clone());
            let waker = waker.clone();
            let handle = std::thread::Builder::new()
                .name(format!("sluice-verify-{n}"))
                .spawn(move || {
                    while let Ok(job) = queue.recv() {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let verdict = if check(&job.verification.check) {
                            Verdict::Matches
                        } else {
                            Verdict::DoesNotMatch
                        };
                        if verdicts_in
                            .send((job.server, job.verification.id, verdict))
                            .is_err()
                        {
                            return;
                        }
                        if let Some(w) = &waker {
                            let _ = w.wake();
                        }
                    }
                });
            match handle {
                Ok(h) => handles.push(h),
                Err(e) => {
                    drop(jobs);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Self {
            jobs: Some(jobs),
            verdicts,
            stop,
            threads: handles,
        })
    }

    /// Hands the checks server number `index` asks for to the threads; one there is no room
    /// for is answered at once, `Verdict::Unchecked` (its client refused for now), at the
    /// time `clock` gives (monotonic, Unix seconds), read only then.
    pub fn serve<A: Authenticator>(
        &self,
        index: usize,
        server: &mut Server<A>,
        clock: impl Fn() -> (std::time::Instant, u64),
    ) {
        while let Some(verification) = server.poll_verification() {
            let Some(jobs) = &self.jobs else { return };
            let job = Job {
                server: index,
                verification,
            };
            match jobs.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                    let (now, unix_now) = clock();
                    server.verified(now, unix_now, job.verification.id, Verdict::Unchecked);
                }
            }
        }
    }

    /// The verdicts come back since the last call: (server number, job id, verdict).
    pub fn verdicts(&self) -> impl Iterator<Item = (usize, u64, Verdict)> + '_ {
        self.verdicts.try_iter()
    }
}

impl Drop for Verifier {
    /// The threads finish the check each is running (a few tens of milliseconds) and stop;
    /// the checks queued are dropped.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs = None;
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}
