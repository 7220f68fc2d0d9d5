//! The DPDK data plane (feature `dpdk`): safe wrappers over `dpdk-sys` for the EAL lifecycle,
//! mbuf pools, ethdev ports and lcores, and `DpdkQueue`, the `Port` the pipeline runs on in
//! production.
//!
//! Ownership: `Eal` must outlive everything else here; a `Mempool` outlives the ports and mbufs
//! that draw from it (ports hold it in an `Arc`; dropped with mbufs out, it is not freed, and
//! keeps the EAL); an `EthDev` is configured and started by the
//! main thread, then each worker core owns one `DpdkQueue` (an rx/tx queue pair) of it, handed
//! out once; the port is stopped and closed only when the `EthDev` and every `DpdkQueue` of it
//! are gone.

#![allow(unsafe_code)]

mod eal;
mod ethdev;
mod lcore;
mod mbuf;

pub use eal::{Eal, EalError};
pub use ethdev::{
    mbuf_from, pool_size, DescLimits, DevInfo, DpdkQueue, EthDev, EthOptions, LinkStatus,
    PortStats, POOL_MBUFS_PER_CORE, POOL_MBUFS_SPARE,
};
pub use lcore::{launch, wait_all, LaunchError};
pub use mbuf::{Mbuf, Mempool};

use std::ffi::CStr;

/// The last DPDK error of this thread, as DPDK words it.
pub(crate) fn last_error() -> String {
    // SAFETY: `shim_errno` reads a thread-local; `rte_strerror` returns a pointer to a static
    // or thread-local string that stays valid until the next call on this thread.
    unsafe {
        let e = dpdk_sys::shim_errno();
        CStr::from_ptr(dpdk_sys::rte_strerror(e))
            .to_string_lossy()
            .into_owned()
    }
}

/// The DPDK version string (e.g. `DPDK 22.11.11`).
pub fn version() -> String {
    // SAFETY: `rte_version` returns a pointer to a static NUL-terminated string.
    unsafe {
        CStr::from_ptr(dpdk_sys::rte_version())
            .to_string_lossy()
            .into_owned()
    }
}
