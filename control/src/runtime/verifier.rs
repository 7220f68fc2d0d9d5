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
//! control thread instead of the control thread stopping for them; and since each thread
//! lowers its own priority (`NICE`), the scheduler gives the control thread, which carries
//! every handshake and keepalive, the core first when both want it.
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

/// How many nice steps below the thread that starts them the checker threads run (Linux
/// keeps a nice value per thread): a flood of checks then takes what the control thread
/// leaves of the core, not half of it.
pub const NICE: i32 = 10;

/// Lowers the calling thread's priority by `NICE` (to 19 at most, the lowest).
fn lower_priority() -> io::Result<()> {
    let me = rustix::thread::gettid();
    let nice = rustix::process::getpriority_process(Some(me))?;
    rustix::process::setpriority_process(Some(me), (nice + NICE).min(19))?;
    Ok(())
}

/// Runs a check: whether the password matches the hash.
pub type CheckFn = fn(&PasswordCheck) -> bool;

/// The check the daemon runs: argon2 (`directory::hash_matches`).
pub fn argon2_check(check: &PasswordCheck) -> bool {
    hash_matches(&check.hash, check.password.expose())
}

/// The name of checker thread number `n` (at most 15 bytes: the kernel's thread name).
fn name(n: usize) -> String {
    format!("sluice-verify-{n}")
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
            let handle = std::thread::Builder::new().name(name(n)).spawn(move || {
                if let Err(e) = lower_priority() {
                    // It checks all the same, at the control thread's priority.
                    super::log(&format!("{}: cannot lower its priority: {e}", name(n)));
                }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::proto::key_method::Secret;

    /// The nice value (field 19) of thread `tid` of this process.
    fn nice_of(tid: i32) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("stat");
        // The name, in parentheses, may hold spaces: fields are counted after it, from 3.
        let after = &stat[stat.rfind(')').expect("name") + 1..];
        after
            .split_whitespace()
            .nth(19 - 3)
            .and_then(|f| f.parse().ok())
            .expect("nice field")
    }

    /// The thread id of the checker that ran `record`.
    static CHECKER: AtomicI32 = AtomicI32::new(0);

    fn record(_: &PasswordCheck) -> bool {
        CHECKER.store(
            rustix::thread::gettid().as_raw_nonzero().get(),
            Ordering::SeqCst,
        );
        true
    }

    #[test]
    fn the_checker_threads_run_below_the_control_threads_priority() {
        let verifier = Verifier::start(1, 1, record, None).expect("start");
        let check = PasswordCheck {
            hash: String::new(),
            password: Secret::new("pw".into()),
        };
        let jobs = verifier.jobs.as_ref().expect("running");
        jobs.send(Job {
            server: 0,
            verification: Verification { id: 7, check },
        })
        .expect("queued");
        let verdict = verifier
            .verdicts
            .recv_timeout(Duration::from_secs(10))
            .expect("a verdict");
        assert_eq!(verdict, (0, 7, Verdict::Matches));
        // The checker waits for its next job meanwhile: its task is still there to read.
        let me = rustix::thread::gettid().as_raw_nonzero().get();
        let checker = CHECKER.load(Ordering::SeqCst);
        assert_ne!(checker, me);
        assert_eq!(nice_of(checker), (nice_of(me) + NICE).min(19));
    }
}
