//! Running closures on EAL worker lcores (each pinned to its CPU, with its own mempool cache).

use std::ffi::c_void;
use std::fmt;

/// An lcore could not take the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchError {
    /// The lcore.
    pub lcore: u32,
    /// Why (-errno from DPDK).
    pub code: i32,
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot launch on lcore {}: {} (is it a worker lcore of -l, and idle?)",
            self.lcore,
            std::io::Error::from_raw_os_error(-self.code)
        )
    }
}

impl std::error::Error for LaunchError {}

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

unsafe extern "C" fn trampoline(arg: *mut c_void) -> i32 {
    // SAFETY: `arg` is the `Box<Job>` leaked by `launch`, handed over exactly once.
    let job: Box<Job> = unsafe { Box::from_raw(arg.cast::<Job>()) };
    // A panic must not unwind into C (in builds that unwind: tests; release builds abort).
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or(-1)
}

/// Runs `job` on worker lcore `lcore` (`wait_all` waits for it); its return value is the
/// lcore's exit status in DPDK (-1 if it panicked, in builds that unwind; release builds abort
/// the process).
///
/// # Errors
/// The lcore is not a worker lcore of this EAL or is busy.
pub fn launch<F>(lcore: u32, job: F) -> Result<(), LaunchError>
where
    F: FnOnce() -> i32 + Send + 'static,
{
    let boxed: Box<Job> = Box::new(Box::new(job));
    let arg = Box::into_raw(boxed).cast::<c_void>();
    // SAFETY: the trampoline takes ownership of `arg` if and only if the launch succeeds.
    let rc = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if rc != 0 {
        // SAFETY: the launch failed, so the job was not handed over: reclaim it.
        drop(unsafe { Box::from_raw(arg.cast::<Job>()) });
        return Err(LaunchError { lcore, code: rc });
    }
    Ok(())
}

/// Waits until every worker lcore finished its job.
pub fn wait_all() {
    // SAFETY: plain call; EAL is initialised by whoever launched.
    unsafe { dpdk_sys::rte_eal_mp_wait_lcore() }
}
