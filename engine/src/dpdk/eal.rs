//! The EAL: initialised once per process with arguments from `[dataplane]`, cleaned up on drop.

use std::ffi::{c_char, CString};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why the EAL did not start; the message says what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EalError(pub String);

impl fmt::Display for EalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EalError {}

// SAFETY: the argv pointers are only kept alive for EAL, never dereferenced by us; EAL's own
// state is process-wide and its API is callable from any thread.
unsafe impl Send for Eal {}
// SAFETY: as above; `&Eal` only offers read-only queries.
unsafe impl Sync for Eal {}

static STARTED: AtomicBool = AtomicBool::new(false);

/// The running EAL, shared: mempools hold it (and ports hold their mempool), so
/// `rte_eal_cleanup` runs only after the last of them is gone.
#[derive(Debug)]
pub struct Eal {
    // EAL keeps pointers into argv: the strings live as long as the EAL.
    _args: Vec<CString>,
    _argv: Vec<*mut c_char>,
}

impl Eal {
    /// Starts the EAL with `args` (without the program name). The calling thread becomes the
    /// main lcore and is pinned to its CPU.
    ///
    /// # Errors
    /// A second start in this process (DPDK allows one), an argument with a NUL byte, or the
    /// EAL's refusal with its reason and a hint.
    pub fn init(args: &[String]) -> Result<Arc<Self>, EalError> {
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(EalError(
                "the DPDK EAL was already started in this process (it starts once per process)"
                    .into(),
            ));
        }
        let mut owned = vec![CString::new("sluice").map_err(|e| EalError(e.to_string()))?];
        for a in args {
            owned.push(
                CString::new(a.as_str())
                    .map_err(|_| EalError(format!("EAL argument {a:?} contains a NUL byte")))?,
            );
        }
        let mut argv: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr().cast_mut()).collect();
        let argc = argv.len() as i32;
        // SAFETY: argv holds `argc` valid NUL-terminated strings that outlive the EAL (kept in
        // `Self`); EAL may permute the pointer array, which we own. Called once per process
        // (guarded by STARTED).
        let rc = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            let why = super::last_error();
            let hint = if args.iter().any(|a| a == "--no-huge") {
                "check the -l core list, the -m memory size and the --vdev strings"
            } else {
                "are 2 MiB hugepages reserved (echo 256 > /proc/sys/vm/nr_hugepages), or is --no-huge wanted?"
            };
            return Err(EalError(format!(
                "DPDK EAL could not start: {why} ({hint}); arguments: {}",
                args.join(" ")
            )));
        }
        Ok(Arc::new(Self {
            _args: owned,
            _argv: argv,
        }))
    }

    /// How many ethdev ports probed successfully.
    pub fn port_count(&self) -> u16 {
        // SAFETY: EAL is initialised (we exist).
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }

    /// How many lcores EAL runs (the main one included).
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: EAL is initialised.
        unsafe { dpdk_sys::rte_lcore_count() }
    }

    /// The worker lcores (every lcore but the main one), in order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = u32::MAX;
        loop {
            // SAFETY: EAL is initialised; `rte_get_next_lcore` only reads its lcore tables.
            // Starting from u32::MAX (-1) yields the first worker; RTE_MAX_LCORE ends the walk.
            i = unsafe { dpdk_sys::rte_get_next_lcore(i, 1, 0) };
            if i >= dpdk_sys::RTE_MAX_LCORE {
                break;
            }
            out.push(i);
        }
        out
    }

    /// The port ids of the named devices, in order; a missing one is refused with the names
    /// of the ports that did probe (a vdev with a typo probes nothing and EAL carries on).
    ///
    /// # Errors
    /// The first missing port.
    pub fn require_ports(&self, names: &[&str]) -> Result<Vec<u16>, EalError> {
        names
            .iter()
            .map(|n| {
                self.port_by_name(n).ok_or_else(|| {
                    let probed = self.port_names();
                    EalError(format!(
                        "DPDK port {n} is missing (probed: {}); check its --vdev or PCI address and its driver",
                        if probed.is_empty() { "none".to_owned() } else { probed.join(", ") }
                    ))
                })
            })
            .collect()
    }

    /// The names of every probed port.
    pub fn port_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for id in 0..dpdk_sys::RTE_MAX_ETHPORTS as u16 {
            // SAFETY: plain query.
            if unsafe { dpdk_sys::rte_eth_dev_is_valid_port(id) } == 0 {
                continue;
            }
            let mut buf = [0 as c_char; dpdk_sys::RTE_ETH_NAME_MAX_LEN as usize];
            // SAFETY: `buf` has RTE_ETH_NAME_MAX_LEN bytes, as the call requires.
            if unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) } == 0 {
                // SAFETY: on success the name is NUL-terminated inside `buf`.
                let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
                out.push(name.to_string_lossy().into_owned());
            }
        }
        out
    }

    /// The ethdev port id of a device by name (e.g. `net_ring0`).
    pub fn port_by_name(&self, name: &str) -> Option<u16> {
        let c = CString::new(name).ok()?;
        let mut id = 0u16;
        // SAFETY: `c` is a valid C string; `id` is a valid out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        (rc == 0).then_some(id)
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: EAL was initialised by us, and this is its last owner: every mempool is gone
        // (and so every port: ports hold their pool), and freed with every mbuf back in it (a
        // pool dropped with mbufs out keeps the EAL forever). Lcore jobs are waited for by
        // their launcher.
        unsafe {
            dpdk_sys::rte_eal_cleanup();
        }
    }
}
