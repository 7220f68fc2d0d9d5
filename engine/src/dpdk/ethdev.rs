//! Ethdev ports: configuration (queues per worker core, RSS where offered, MTU), start/stop,
//! link and statistics; and `DpdkQueue`, one rx/tx queue pair as a `Port`.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

use dpdk_sys::rte_mbuf;

use super::eal::EalError;
use super::mbuf::{Mbuf, Mempool};
use crate::packet::{Burst, DropCounters, DropReason, PacketBuf, BURST_SIZE};
use crate::port::Port;
use crate::wire::ethernet::Mac;

/// How to set a port up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthOptions {
    /// Worker cores that use the port: one tx queue each, and one rx queue each as far as the
    /// device allows (the rest is steered in software through the handoff rings).
    pub queues: u16,
    /// Receive descriptors per queue wanted: fitted to the device's limits
    /// (`DescLimits::fit`); `EthDev::rx_descriptors` says what was set up.
    pub rx_descriptors: u16,
    /// Transmit descriptors per queue wanted, fitted likewise (`EthDev::tx_descriptors`).
    pub tx_descriptors: u16,
    /// IP MTU, if the device lets it be set.
    pub mtu: Option<u16>,
    /// Receive every frame (a port in a bridge or behind a vSwitch may need it).
    pub promiscuous: bool,
}

impl Default for EthOptions {
    fn default() -> Self {
        Self {
            queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mtu: None,
            promiscuous: false,
        }
    }
}

/// What a device offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevInfo {
    /// Driver name (e.g. `net_af_packet`).
    pub driver: String,
    /// Receive queues at most.
    pub max_rx_queues: u16,
    /// Transmit queues at most.
    pub max_tx_queues: u16,
    /// RSS hash functions offered (0: no RSS, steering is done in software).
    pub rss_offloads: u64,
    /// Receive offloads offered (`RTE_ETH_RX_OFFLOAD_*`).
    pub rx_offloads: u64,
    /// Transmit offloads offered (`RTE_ETH_TX_OFFLOAD_*`).
    pub tx_offloads: u64,
    /// What an rx queue's descriptor count must satisfy.
    pub rx_desc_lim: DescLimits,
    /// What a tx queue's descriptor count must satisfy.
    pub tx_desc_lim: DescLimits,
}

impl DevInfo {
    /// The rx and tx queues `EthDev::start` sets up on the device for `cores` worker cores: a
    /// tx queue each (start refuses a device with fewer), and an rx queue each as far as the
    /// device offers them (at least one).
    pub fn queues_for(&self, cores: u16) -> (u16, u16) {
        let want = cores.max(1);
        (want.min(self.max_rx_queues.max(1)), want)
    }

    /// The mbufs the device's rings hold when `EthDev::start` sets it up with `opts`: each
    /// queue's ring as many as it has descriptors, the counts fitted to the device's limits,
    /// over the queues it actually sets up (`queues_for`).
    pub fn ring_mbufs(&self, opts: &EthOptions) -> u64 {
        let (rx, tx) = self.queues_for(opts.queues);
        u64::from(rx) * u64::from(self.rx_desc_lim.fit(opts.rx_descriptors))
            + u64::from(tx) * u64::from(self.tx_desc_lim.fit(opts.tx_descriptors))
    }
}

/// Mbufs a worker core holds outside the devices' rings at most, as the pool is sized: its
/// share of the pool's per-lcore cache, its bursts, the handoff ring it is handed, packets
/// waiting for ARP, fragments held or being reassembled.
pub const POOL_MBUFS_PER_CORE: u64 = 4096;

/// Mbufs of the pool beyond the rings and the cores' share (control's transmits, slack).
pub const POOL_MBUFS_SPARE: u64 = 8192;

/// The size of the one mbuf pool of `devices` (each set up by `EthDev::start` with `opts`,
/// `opts.queues` the worker cores): what their rings hold (`DevInfo::ring_mbufs`, over the
/// queues each device actually gets: a device with fewer rx queues than cores does not fill
/// an rx ring per core), `POOL_MBUFS_PER_CORE` a core and `POOL_MBUFS_SPARE`, rounded up to
/// a power of two less one (the size a DPDK mempool's ring uses best); at most `u32::MAX`.
pub fn pool_size(devices: &[DevInfo], opts: &EthOptions) -> u32 {
    let rings: u64 = devices.iter().map(|d| d.ring_mbufs(opts)).sum();
    let cores = u64::from(opts.queues.max(1));
    let want = rings + cores * POOL_MBUFS_PER_CORE + POOL_MBUFS_SPARE;
    // A `want` of exactly 2^k gets 2^k - 1, one short: the spare absorbs it, where 2^(k+1) - 1
    // would double the pool (the default single core on two ports wants exactly 16,384).
    u32::try_from(want.next_power_of_two() - 1).unwrap_or(u32::MAX)
}

/// A device's limits on the descriptor count of one queue (`rte_eth_desc_lim`): a queue set up
/// with a count outside them is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescLimits {
    /// At most this many (0: no maximum given).
    pub max: u16,
    /// At least this many.
    pub min: u16,
    /// A multiple of this (0 or 1: any count).
    pub align: u16,
}

impl DescLimits {
    /// `want` descriptors fitted to the limits, as DPDK's `rte_eth_dev_adjust_nb_rx_tx_desc`
    /// fits them: rounded up to a multiple of `align`, then at most `max`, then at least
    /// `min`. A `max` that is not itself a multiple of `align` is rounded down to one first
    /// (DPDK would return `max`, which the device then refuses as unaligned).
    pub fn fit(self, want: u16) -> u16 {
        let align = u32::from(self.align.max(1));
        let mut n = u32::from(want).div_ceil(align) * align;
        if self.max != 0 {
            n = n.min(u32::from(self.max) / align * align);
        }
        n = n.max(u32::from(self.min));
        // At most `max` (a u16) or `min` (a u16) unless `max` is 0, and then `want` rounded
        // up: only the rounding of a `want` near 65535 with no maximum can pass u16::MAX.
        u16::try_from(n).unwrap_or(u16::MAX / self.align.max(1) * self.align.max(1))
    }
}

impl From<dpdk_sys::rte_eth_desc_lim> for DescLimits {
    fn from(l: dpdk_sys::rte_eth_desc_lim) -> Self {
        Self {
            max: l.nb_max,
            min: l.nb_min,
            align: l.nb_align,
        }
    }
}

/// Link state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// Carrier.
    pub up: bool,
    /// Speed in Mbit/s (0 if unknown).
    pub speed_mbps: u32,
}

/// The device's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Packets the device dropped because no rx descriptor was free (the cores fell behind).
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// Receives that failed for lack of mbufs.
    pub rx_nombuf: u64,
}

/// A configured ethdev port. Stopped and closed when it and every `DpdkQueue` it handed out
/// are dropped, whichever goes last: no core can poll a closed port.
#[derive(Debug)]
pub struct EthDev {
    id: u16,
    rx_queues: u16,
    tx_queues: u16,
    /// The port's open state and queues out, shared with its `DpdkQueue`s.
    hold: Arc<PortHold>,
    rss: bool,
    rx_offloads: u64,
    tx_offloads: u64,
    rx_descriptors: u16,
    tx_descriptors: u16,
}

/// What a port and the queue pairs it handed out share: the pool its rx queues fill from, and
/// which pairs are out as `DpdkQueue`s (`EthDev::queue` marks one, the `DpdkQueue`'s drop clears
/// it) and whether the port is started, behind a mutex taken only to hand a pair out, take it
/// back, or stop the port. The port is closed when the last holder (the `EthDev` or a
/// `DpdkQueue`) drops this.
#[derive(Debug)]
struct PortHold {
    id: u16,
    pool: Arc<Mempool>,
    state: Mutex<HoldState>,
}

#[derive(Debug)]
struct HoldState {
    out: Vec<bool>,
    started: bool,
}

impl PortHold {
    fn with<T>(&self, f: impl FnOnce(&mut HoldState) -> T) -> T {
        // A panic while the lock was held left nothing half-done (a bool is written, or the
        // port stopped and then marked so).
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for PortHold {
    fn drop(&mut self) {
        // A drop has nowhere to report a failure to (`EthDev::stop` reports the stop's, for
        // the runtime to log); nothing here uses the port after either way.
        let started = self.with(|s| s.started);
        if started {
            // SAFETY: no `DpdkQueue` of the port is left (each holds this), so no core polls it.
            let _ = unsafe { dpdk_sys::rte_eth_dev_stop(self.id) };
        }
        // SAFETY: the port is stopped and no core polls it; closing releases its queues (their
        // mbufs go back to the pool, which is still alive: we hold it).
        let _ = unsafe { dpdk_sys::rte_eth_dev_close(self.id) };
    }
}

fn check(rc: i32, what: &str, port: u16) -> Result<(), EalError> {
    if rc < 0 {
        // Ethdev calls return -errno.
        let msg = std::io::Error::from_raw_os_error(-rc);
        return Err(EalError(format!("port {port}: {what} failed: {msg}")));
    }
    Ok(())
}

impl EthDev {
    /// The device's capabilities.
    ///
    /// # Errors
    /// The port does not exist.
    pub fn info(id: u16) -> Result<DevInfo, EalError> {
        // SAFETY: all-zero is a valid rte_eth_dev_info (a plain C struct of integers and
        // pointers); the call fills it.
        let mut info: dpdk_sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        check(
            // SAFETY: `info` is a valid out-pointer.
            unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) },
            "reading device info",
            id,
        )?;
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: a non-null driver name is a static NUL-terminated string of the driver.
            unsafe { std::ffi::CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(DevInfo {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads,
            rx_offloads: info.rx_offload_capa,
            tx_offloads: info.tx_offload_capa,
            rx_desc_lim: info.rx_desc_lim.into(),
            tx_desc_lim: info.tx_desc_lim.into(),
        })
    }

    /// Configures port `id` with queues for `opts.queues` cores and starts it. Ports that
    /// pass mbufs to each other must share `pool`: transmit asks for mbuf fast free where the
    /// driver offers it (`tx_offloads`), which returns sent mbufs to one pool. The descriptor
    /// counts asked for are fitted to the device's limits (`DescLimits::fit`): see
    /// `rx_descriptors` and `tx_descriptors` for what was set up.
    ///
    /// # Errors
    /// The device refused a step; the message names the port and the step.
    pub fn start(id: u16, pool: Arc<Mempool>, opts: EthOptions) -> Result<Self, EalError> {
        let info = Self::info(id)?;
        // Every core needs a tx queue of its own (tx bursts are not thread-safe); rx queues
        // may be fewer (the rest is steered in software). `pool_size` counts the same queues.
        let (rx_queues, tx_queues) = info.queues_for(opts.queues);
        if info.max_tx_queues < tx_queues {
            return Err(EalError(format!(
                "port {id} ({}) offers {} tx queues, {tx_queues} worker cores need one each",
                info.driver, info.max_tx_queues
            )));
        }
        // A count outside the device's limits fails queue setup (a NIC with fewer than 1024
        // descriptors a ring, or a larger minimum or another alignment, would not start).
        let rx_descriptors = info.rx_desc_lim.fit(opts.rx_descriptors);
        let tx_descriptors = info.tx_desc_lim.fit(opts.tx_descriptors);
        // SAFETY: the shim returns constants.
        let wanted_rss = unsafe {
            dpdk_sys::shim_eth_rss_ip()
                | dpdk_sys::shim_eth_rss_udp()
                | dpdk_sys::shim_eth_rss_tcp()
        };
        let rss_hf = info.rss_offloads & wanted_rss;
        let rss = rx_queues > 1 && rss_hf != 0;
        // Receive IPv4 checksum offload where offered: the pipeline then trusts the NIC's
        // verdict instead of summing each header (transmit checksums are updated incrementally
        // in software, which costs less than describing each packet to the NIC).
        // SAFETY: the shim returns a constant.
        let rx_ipv4_cksum = unsafe { dpdk_sys::shim_eth_rx_offload_ipv4_cksum() };
        let rx_offloads = info.rx_offloads & rx_ipv4_cksum;
        // SAFETY: all-zero is DPDK's documented default for rte_eth_conf.
        let mut conf: dpdk_sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        let tx_offloads = tx_offloads(info.tx_offloads);
        conf.rxmode.offloads = rx_offloads;
        conf.txmode.offloads = tx_offloads;
        if rss {
            conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        check(
            // SAFETY: `conf` is a valid configuration for the duration of the call.
            unsafe { dpdk_sys::rte_eth_dev_configure(id, rx_queues, tx_queues, &conf) },
            "configure",
            id,
        )?;
        // From here on, dropping `dev` (a later step failing) closes the port.
        let dev = Self {
            id,
            rx_queues,
            tx_queues,
            hold: Arc::new(PortHold {
                id,
                pool,
                state: Mutex::new(HoldState {
                    out: vec![false; usize::from(tx_queues)],
                    started: false,
                }),
            }),
            rss,
            rx_offloads,
            tx_offloads,
            rx_descriptors,
            tx_descriptors,
        };
        if let Some(mtu) = opts.mtu {
            // SAFETY: plain call on a configured port.
            let rc = unsafe { dpdk_sys::rte_eth_dev_set_mtu(id, mtu) };
            // Virtual devices often cannot change it: not fatal (-ENOTSUP).
            if rc < 0 && rc != -(95) {
                check(rc, "set MTU", id)?;
            }
        }
        // SAFETY: plain call.
        let socket = queue_socket(unsafe { dpdk_sys::rte_eth_dev_socket_id(id) });
        for q in 0..rx_queues {
            check(
                // SAFETY: the port is configured with `rx_queues` queues; a null rxconf means
                // the driver's defaults; the pool outlives the port (we hold it).
                unsafe {
                    dpdk_sys::rte_eth_rx_queue_setup(
                        id,
                        q,
                        rx_descriptors,
                        socket,
                        std::ptr::null(),
                        dev.hold.pool.as_ptr(),
                    )
                },
                "rx queue setup",
                id,
            )?;
        }
        for q in 0..tx_queues {
            check(
                // SAFETY: as above, for tx.
                unsafe {
                    dpdk_sys::rte_eth_tx_queue_setup(
                        id,
                        q,
                        tx_descriptors,
                        socket,
                        std::ptr::null(),
                    )
                },
                "tx queue setup",
                id,
            )?;
        }
        // SAFETY: plain call on a configured port.
        check(unsafe { dpdk_sys::rte_eth_dev_start(id) }, "start", id)?;
        dev.hold.with(|s| s.started = true);
        if opts.promiscuous {
            // SAFETY: plain call on a started port; failure is harmless (not offered).
            let _ = unsafe { dpdk_sys::rte_eth_promiscuous_enable(id) };
        }
        Ok(dev)
    }

    /// Port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Receive queues configured.
    pub fn rx_queues(&self) -> u16 {
        self.rx_queues
    }

    /// Transmit queues configured.
    pub fn tx_queues(&self) -> u16 {
        self.tx_queues
    }

    /// Descriptors of each rx queue: the count asked for, fitted to the device's limits.
    pub fn rx_descriptors(&self) -> u16 {
        self.rx_descriptors
    }

    /// Descriptors of each tx queue: the count asked for, fitted to the device's limits.
    pub fn tx_descriptors(&self) -> u16 {
        self.tx_descriptors
    }

    /// Whether the device spreads flows over the rx queues by RSS.
    pub fn rss(&self) -> bool {
        self.rss
    }

    /// Whether the device checks received IPv4 header checksums (the pipeline then trusts
    /// its verdict).
    pub fn rx_ipv4_checksum_offload(&self) -> bool {
        // SAFETY: the shim returns a constant.
        self.rx_offloads & unsafe { dpdk_sys::shim_eth_rx_offload_ipv4_cksum() } != 0
    }

    /// Whether the device returns sent mbufs to the pool in bulk (mbuf fast free).
    pub fn tx_mbuf_fast_free(&self) -> bool {
        // SAFETY: the shim returns a constant.
        self.tx_offloads & unsafe { dpdk_sys::shim_eth_tx_offload_mbuf_fast_free() } != 0
    }

    /// The port's MAC address.
    ///
    /// # Errors
    /// The device did not give it (DPDK's reason, with the port): the appliance cannot answer
    /// ARP or address frames as this port without it.
    pub fn mac(&self) -> Result<Mac, EalError> {
        mac_of(self.id)
    }

    /// Link state, without waiting.
    ///
    /// # Errors
    /// The device did not say (DPDK's reason, with the port); "down" would be a guess.
    pub fn link(&self) -> Result<LinkStatus, EalError> {
        link_of(self.id)
    }

    /// The device's counters.
    ///
    /// # Errors
    /// The device did not give them (DPDK's reason, with the port); zeros would read as
    /// counters that went back.
    pub fn stats(&self) -> Result<PortStats, EalError> {
        stats_of(self.id)
    }

    /// The queue pair of worker `core`: it receives on rx queue `core` when the device has that
    /// many (else nothing: its traffic arrives through the handoff rings) and sends on tx
    /// queue `core`, its own. Each queue pair is handed out once: until the `DpdkQueue` is
    /// dropped, asking for it again is refused (two cores polling one queue would race in the
    /// driver, which does not lock).
    ///
    /// # Errors
    /// `core` is not below the worker count the port was started for, its queue pair is
    /// already out, or the port was stopped.
    pub fn queue(&self, core: u16) -> Result<DpdkQueue, EalError> {
        if core >= self.tx_queues {
            return Err(EalError(format!(
                "port {} was started for {} cores, not core {core}",
                self.id, self.tx_queues
            )));
        }
        self.hold.with(|s| {
            if !s.started {
                return Err(EalError(format!("port {} is stopped", self.id)));
            }
            if std::mem::replace(&mut s.out[usize::from(core)], true) {
                return Err(EalError(format!(
                    "port {}: the queue pair of core {core} is already out (one core polls a queue)",
                    self.id
                )));
            }
            Ok(())
        })?;
        Ok(DpdkQueue {
            port: self.id,
            rxq: (core < self.rx_queues).then_some(core),
            txq: core,
            hold: Arc::clone(&self.hold),
        })
    }

    /// Stops the port, once every queue pair it handed out is back (dropped): stopping a port
    /// a core still polls races with that core's bursts in the driver.
    ///
    /// # Errors
    /// A queue pair is still out, or the driver refused to stop (its errno); the port is left
    /// running (closing it, when its last holder goes, tries the stop again).
    pub fn stop(&mut self) -> Result<(), EalError> {
        self.hold.with(|s| {
            let out = s.out.iter().filter(|o| **o).count();
            if out > 0 {
                return Err(EalError(format!(
                    "port {}: not stopped, {out} queue pair(s) still out (a core may poll them)",
                    self.id
                )));
            }
            if s.started {
                // SAFETY: no `DpdkQueue` of the port is out (checked under the lock, which
                // `queue` takes to hand one out), so no core polls it.
                let rc = unsafe { dpdk_sys::rte_eth_dev_stop(self.id) };
                check(rc, "rte_eth_dev_stop", self.id)?;
                s.started = false;
            }
            Ok(())
        })
    }
}

/// The NUMA socket to set a port's queues up on, from `rte_eth_dev_socket_id`: the device's
/// own, or `SOCKET_ID_ANY` when DPDK does not know it (-1: a virtual device, or a PCI device
/// whose firmware names no node, as in many VMs). Socket 0 in its place would fail the queue
/// setup on a machine with no hugepages on node 0 (`--socket-mem 0,1024`), where the pool
/// (made on any socket) was allocated fine.
fn queue_socket(socket: i32) -> u32 {
    u32::try_from(socket).unwrap_or(dpdk_sys::SOCKET_ID_ANY as u32)
}

/// The MAC address of port `id` (`EthDev::mac`).
fn mac_of(id: u16) -> Result<Mac, EalError> {
    let mut a = dpdk_sys::rte_ether_addr::default();
    check(
        // SAFETY: `a` is a valid out-pointer; an unknown port is refused by DPDK (-ENODEV).
        unsafe { dpdk_sys::rte_eth_macaddr_get(id, &mut a) },
        "reading the MAC address",
        id,
    )?;
    Ok(a.addr_bytes)
}

/// The link state of port `id`, without waiting (`EthDev::link`).
fn link_of(id: u16) -> Result<LinkStatus, EalError> {
    let mut l = dpdk_sys::rte_eth_link::default();
    check(
        // SAFETY: `l` is a valid out-pointer; an unknown port is refused by DPDK (-ENODEV).
        unsafe { dpdk_sys::rte_eth_link_get_nowait(id, &mut l) },
        "reading the link state",
        id,
    )?;
    Ok(LinkStatus {
        up: l.link_status() != 0,
        speed_mbps: l.link_speed,
    })
}

/// The counters of port `id` (`EthDev::stats`).
fn stats_of(id: u16) -> Result<PortStats, EalError> {
    let mut s = dpdk_sys::rte_eth_stats::default();
    check(
        // SAFETY: `s` is a valid out-pointer; an unknown port is refused by DPDK (-ENODEV).
        unsafe { dpdk_sys::rte_eth_stats_get(id, &mut s) },
        "reading the counters",
        id,
    )?;
    Ok(PortStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    })
}

/// The transmit offloads to ask of a device that offers `offered`: mbuf fast free where offered
/// (the driver returns sent mbufs to their pool in bulk, without checking each one's pool and
/// reference count). It holds here because every mbuf the appliance sends comes from the one
/// pool its ports share, and none is ever cloned or attached (reference count 1, direct, one
/// segment: `Mbuf`). Transmit checksums are not offloaded (see `EthDev::start`).
fn tx_offloads(offered: u64) -> u64 {
    // SAFETY: the shim returns a constant.
    offered & unsafe { dpdk_sys::shim_eth_tx_offload_mbuf_fast_free() }
}

/// One core's rx/tx queue pair of a port, the only handle of it (`EthDev::queue`): dropping it
/// gives the pair back.
#[derive(Debug)]
pub struct DpdkQueue {
    port: u16,
    rxq: Option<u16>,
    txq: u16,
    /// Keeps the port open while this handle lives; its pool gives generated packets their
    /// mbufs.
    hold: Arc<PortHold>,
}

impl Drop for DpdkQueue {
    fn drop(&mut self) {
        self.hold.with(|s| s.out[usize::from(self.txq)] = false);
    }
}

impl DpdkQueue {
    /// The port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// Whether this queue pair receives (else it only transmits).
    pub fn receives(&self) -> bool {
        self.rxq.is_some()
    }
}

impl Port for DpdkQueue {
    type Buf = Mbuf;

    fn recv(&mut self, burst: &mut Burst<Mbuf>, drops: &mut DropCounters) -> usize {
        let Some(q) = self.rxq else { return 0 };
        let room = burst.spare().min(BURST_SIZE);
        if room == 0 {
            return 0;
        }
        let mut raw = [std::ptr::null_mut::<rte_mbuf>(); BURST_SIZE];
        // SAFETY: `raw` has room for `room` pointers; rx queue `q` is set up and its port open
        // (it closes only once this handle's `hold` is dropped), and this `DpdkQueue` is the
        // queue's only handle (`EthDev::queue` hands each pair out once) and is borrowed
        // mutably, so no other thread polls the queue meanwhile.
        let n = usize::from(unsafe {
            dpdk_sys::shim_rx_burst(self.port, q, raw.as_mut_ptr(), room as u16)
        });
        let mut taken = 0;
        for p in &raw[..n] {
            let Some(p) = NonNull::new(*p) else { continue };
            // SAFETY: `p` came from rx_burst, which hands us ownership of each returned mbuf;
            // nothing else refers to it.
            if unsafe { p.as_ref() }.nb_segs != 1 {
                // Scatter is never asked for, but a driver may still chain a frame larger than
                // one buffer (net_pcap does): never parse half a packet.
                drop_chain(p, drops);
                continue;
            }
            // SAFETY: as above, and it is a single segment.
            let m = unsafe { Mbuf::from_raw(p) };
            if burst.push(m).is_ok() {
                taken += 1;
            }
        }
        taken
    }

    fn send(&mut self, burst: &mut Burst<Mbuf>) -> usize {
        let n = burst.len();
        if n == 0 {
            return 0;
        }
        let mut raw = [std::ptr::null_mut::<rte_mbuf>(); BURST_SIZE];
        for (r, m) in raw.iter_mut().zip(burst.as_slice()) {
            *r = m.as_ptr();
        }
        // SAFETY: `raw` holds `n` valid mbufs we own; the driver takes ownership of the first
        // `sent` of them, which we then forget. Tx queue `txq` is this handle's alone, as in
        // `recv`.
        let sent = usize::from(unsafe {
            dpdk_sys::shim_tx_burst(self.port, self.txq, raw.as_mut_ptr(), n as u16)
        });
        for m in burst.consume_front(sent) {
            let _ = m.into_raw();
        }
        sent
    }

    fn alloc(&mut self) -> Option<Mbuf> {
        self.hold.pool.alloc()
    }

    fn free_bulk(&mut self, bufs: &mut Vec<Mbuf>) {
        let mut raw = [std::ptr::null_mut::<rte_mbuf>(); BURST_SIZE];
        while !bufs.is_empty() {
            let k = bufs.len().min(BURST_SIZE);
            for (r, m) in raw.iter_mut().zip(bufs.drain(bufs.len() - k..)) {
                *r = m.into_raw();
            }
            // SAFETY: the `k` pointers are mbufs we owned and gave up above.
            unsafe { dpdk_sys::shim_pktmbuf_free_bulk(raw.as_mut_ptr(), k as u32) }
        }
    }
}

/// Counts (`MultiSegment`) and frees a received mbuf chain, every segment of it
/// (`rte_pktmbuf_free` follows `next` to the last). Out of line: no frame on the common path
/// is chained.
#[cold]
#[inline(never)]
fn drop_chain(m: NonNull<rte_mbuf>, drops: &mut DropCounters) {
    drops.bump(DropReason::MultiSegment);
    // SAFETY: we own the chain (rx_burst handed it over) and nothing else refers to it or to
    // any of its segments.
    unsafe { dpdk_sys::shim_pktmbuf_free(m.as_ptr()) }
}

/// Writes `frame` into a fresh mbuf (for tests and generated packets).
pub fn mbuf_from(pool: &Mempool, frame: &[u8]) -> Option<Mbuf> {
    let mut m = pool.alloc()?;
    m.append(frame.len()).ok()?.copy_from_slice(frame);
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mbuf_fast_free_is_asked_for_and_only_where_offered() {
        // SAFETY: the shim returns constants.
        let (fast, ipv4, udp) = unsafe {
            (
                dpdk_sys::shim_eth_tx_offload_mbuf_fast_free(),
                dpdk_sys::shim_eth_tx_offload_ipv4_cksum(),
                dpdk_sys::shim_eth_tx_offload_udp_cksum(),
            )
        };
        assert_ne!(fast, 0);
        assert_eq!(tx_offloads(0), 0);
        assert_eq!(tx_offloads(ipv4 | udp), 0);
        assert_eq!(tx_offloads(fast | ipv4 | udp), fast);
    }

    /// A port DPDK cannot read gives an error naming the port and what failed, not a MAC of
    /// zeros, a link down or counters of zero.
    #[test]
    fn a_port_that_cannot_be_read_is_an_error() {
        // No port has this id (far above RTE_MAX_ETHPORTS): DPDK refuses every read of it
        // (-ENODEV), with or without an EAL.
        let id = u16::MAX;
        let errors = [
            mac_of(id).err().map(|e| e.0),
            link_of(id).err().map(|e| e.0),
            stats_of(id).err().map(|e| e.0),
        ];
        for (e, what) in errors.iter().zip(["MAC address", "link state", "counters"]) {
            let e = e
                .as_deref()
                .unwrap_or_else(|| panic!("reading the {what} succeeded"));
            assert!(
                e.starts_with("port 65535: reading the ") && e.contains(what),
                "{e}"
            );
        }
    }

    /// A device whose NUMA node DPDK does not know has its queues set up on any socket
    /// (`SOCKET_ID_ANY`, as its pool is), not on socket 0; a known node is kept.
    #[test]
    fn queues_of_a_device_on_no_known_socket_go_on_any() {
        assert_eq!(queue_socket(dpdk_sys::SOCKET_ID_ANY), u32::MAX);
        assert_eq!(queue_socket(-1), dpdk_sys::SOCKET_ID_ANY as u32);
        assert_eq!(queue_socket(0), 0);
        assert_eq!(queue_socket(1), 1);
    }

    fn dev(max_rx_queues: u16, rx: DescLimits, tx: DescLimits) -> DevInfo {
        DevInfo {
            driver: "test".into(),
            max_rx_queues,
            max_tx_queues: 64,
            rss_offloads: 0,
            rx_offloads: 0,
            tx_offloads: 0,
            rx_desc_lim: rx,
            tx_desc_lim: tx,
        }
    }

    /// The pool holds the rings of the queues each device is set up with: a device with one
    /// rx queue (af_packet, a VF) fills one rx ring whatever the cores, not one a core, and
    /// the fitted descriptor counts are those counted; then the cores' share and the spare.
    #[test]
    fn the_pool_is_sized_from_the_queues_set_up() {
        let any = DescLimits {
            max: u16::MAX,
            min: 0,
            align: 1,
        };
        let opts = |cores| EthOptions {
            queues: cores,
            ..EthOptions::default()
        };
        let single = dev(1, any, any);
        let rss = dev(16, any, any);
        assert_eq!(single.queues_for(4), (1, 4));
        assert_eq!(rss.queues_for(4), (4, 4));
        assert_eq!(rss.queues_for(0), (1, 1));
        assert_eq!(single.ring_mbufs(&opts(4)), 1024 + 4 * 1024);
        assert_eq!(rss.ring_mbufs(&opts(4)), 4 * 1024 + 4 * 1024);
        // Two single-queue ports, four cores: 2 x 5,120 in the rings, 16,384 for the cores,
        // 8,192 spare: 34,816, in a pool of 65,535. Counting an rx ring a core (8,192 a
        // port) came to 49,152, the same pool; with six cores the two differ.
        let spare = POOL_MBUFS_SPARE;
        let share = |cores: u64| cores * POOL_MBUFS_PER_CORE;
        assert_eq!(2 * single.ring_mbufs(&opts(4)) + share(4) + spare, 34_816);
        assert_eq!(
            pool_size(&[single.clone(), single.clone()], &opts(4)),
            65_535
        );
        // Eight cores: 2 x 9,216 + 32,768 + 8,192 = 59,392, a pool of 65,535; an rx ring a
        // core would have been 2 x 16,384 + 40,960 = 73,728, a pool of 131,071.
        assert_eq!(
            pool_size(&[single.clone(), single.clone()], &opts(8)),
            65_535
        );
        assert_eq!(pool_size(&[rss.clone(), rss.clone()], &opts(8)), 131_071);
        // Fitted counts: a tx ring of at most 512 holds 512.
        let small_tx = dev(
            16,
            any,
            DescLimits {
                max: 512,
                min: 0,
                align: 1,
            },
        );
        assert_eq!(small_tx.ring_mbufs(&opts(2)), 2 * 1024 + 2 * 512);
        // No device: the cores' share and the spare, 12,288, in a pool of 16,383.
        assert_eq!(pool_size(&[], &opts(1)), 16_383);
        // Two cores and no device want 16,384 exactly: a pool of 16,383 (the spare absorbs
        // the one short), not 32,767.
        assert_eq!(share(2) + spare, 16_384);
        assert_eq!(pool_size(&[], &opts(2)), 16_383);
        // Past u32: the largest count a pool takes.
        let huge = dev(u16::MAX, any, any);
        let max = EthOptions {
            queues: u16::MAX,
            rx_descriptors: u16::MAX,
            tx_descriptors: u16::MAX,
            ..EthOptions::default()
        };
        assert_eq!(pool_size(&[huge], &max), u32::MAX);
    }

    #[test]
    fn descriptor_counts_are_fitted_to_the_device_limits() {
        let lim = |max, min, align| DescLimits { max, min, align };
        // DPDK's defaults for a device that states none: anything goes.
        let any = lim(u16::MAX, 0, 1);
        for n in [0, 1, 1000, 1024, 4096, u16::MAX] {
            assert_eq!(any.fit(n), n);
        }
        // A smaller ring (ENA's tx queue with large LLQ headers: 512).
        assert_eq!(lim(512, 0, 1).fit(1024), 512);
        // A larger minimum.
        assert_eq!(lim(4096, 2048, 1).fit(1024), 2048);
        // An alignment 1024 does not satisfy: rounded up.
        assert_eq!(lim(4096, 64, 1000).fit(1024), 2000);
        assert_eq!(lim(4096, 64, 32).fit(1000), 1024);
        assert_eq!(lim(4096, 64, 32).fit(1024), 1024);
        // Rounded up past the maximum: the largest aligned count under it.
        assert_eq!(lim(4090, 32, 8).fit(u16::MAX), 4088);
        assert_eq!(lim(1000, 0, 64).fit(1024), 960);
        // Below the minimum after everything else.
        assert_eq!(lim(4096, 64, 32).fit(1), 64);
        // No maximum stated and the rounding passes 65535: the largest aligned u16.
        assert_eq!(lim(0, 0, 32).fit(u16::MAX), 65504);
        assert_eq!(lim(0, 0, 0).fit(7), 7);
    }
}
