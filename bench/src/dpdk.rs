//! The engine suite through real DPDK ports: frames are written into mbufs before each timed
//! chunk and looped through a `net_ring` port (rx and tx bursts through the ethdev API, as from
//! a NIC queue), and what the core sends goes to a `net_null` port (`no-rx`), which frees it. EAL runs
//! without hugepages (`--no-huge`) unless `--hugepages` is given: then on 2 MiB pages reserved
//! beforehand (`--in-memory`; 600 pages: `echo 600 > /proc/sys/vm/nr_hugepages`), as the
//! appliance runs. On 4 KiB pages every mbuf of a chunk is a page of its own to the TLB, and
//! the rates are lower (bench/RESULTS.md, 2026-12-04 ninth session).

use std::collections::VecDeque;
use std::sync::Arc;

use anyhow::{Context, Result};
use sluice_engine::dpdk::{DpdkQueue, Eal, EthDev, EthOptions, Mbuf, Mempool};
use sluice_engine::packet::{Burst, DropCounters, PacketBuf};
use sluice_engine::port::Port;

use crate::engine::BenchPort;

/// The rig's mbuf pool unless `--mbufs` says otherwise: what the appliance makes for one
/// worker core on two ports (`sluice_engine::dpdk::pool_size`). The rig takes a chunk's 1024
/// mbufs at once, past the 256-mbuf lcore cache, so it cycles the whole pool; a NIC's receive
/// ring, refilled from the cache a few mbufs at a time, may cycle far fewer (bench/RESULTS.md,
/// twenty-seventh session). A smaller pool shows what that costs.
pub(crate) const RIG_MBUFS: u32 = 16_383;

/// The smallest pool the rig takes: twice a chunk's 1024 frames, less one (the size a
/// ring-backed pool uses best); the suite was run with it (bench/RESULTS.md).
pub(crate) const RIG_MBUFS_MIN: u32 = 2047;

/// The largest: about 160 MiB of the EAL's 1024 (`-m`).
pub(crate) const RIG_MBUFS_MAX: u32 = 65_535;

/// The EAL and the four devices, kept for the whole run (a closed vdev port cannot restart).
pub(crate) struct Rig {
    pool: Arc<Mempool>,
    rings: [EthDev; 2],
    sinks: [EthDev; 2],
}

impl Rig {
    /// Starts DPDK with the rig's devices and a pool of `mbufs` mbufs.
    pub(crate) fn start(hugepages: bool, mbufs: u32) -> Result<Self> {
        let args: Vec<String> = [
            "--no-pci",
            if hugepages {
                "--in-memory"
            } else {
                "--no-huge"
            },
            "--no-shconf",
            "--no-telemetry",
            "-m",
            "1024",
            "-l",
            "0",
            "--log-level=lib.eal:error",
            "--log-level=pmd.*:error",
            "--vdev",
            "net_ring0",
            "--vdev",
            "net_ring1",
            "--vdev",
            "net_null0,no-rx=1",
            "--vdev",
            "net_null1,no-rx=1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let eal = Eal::init(&args).context(if hugepages {
            "starting DPDK for the dpdk suite on hugepages (run as root, with 2 MiB pages reserved: echo 600 > /proc/sys/vm/nr_hugepages)"
        } else {
            "starting DPDK for the dpdk suite (run as root)"
        })?;
        let ids = eal.require_ports(&["net_ring0", "net_ring1", "net_null0", "net_null1"])?;
        let pool = Arc::new(Mempool::new(&eal, "bench_pool", mbufs, 2176, -1)?);
        let start = |id: u16| EthDev::start(id, Arc::clone(&pool), EthOptions::default());
        Ok(Self {
            rings: [start(ids[0])?, start(ids[1])?],
            sinks: [start(ids[2])?, start(ids[3])?],
            pool,
        })
    }

    /// Outside and inside ports for one measurement, with empty rings.
    pub(crate) fn ports(&self) -> Vec<DpdkBenchPort> {
        (0..2)
            .map(|i| {
                let mut p = DpdkBenchPort {
                    ring: self.rings[i]
                        .queue(0)
                        .expect("one measurement's ports at a time"),
                    sink: self.sinks[i]
                        .queue(0)
                        .expect("one measurement's ports at a time"),
                    pool: Arc::clone(&self.pool),
                    loaded: VecDeque::new(),
                    in_ring: 0,
                    sent: 0,
                    keep: None,
                };
                let mut b = Burst::new();
                while p.ring.recv(&mut b, &mut DropCounters::default()) > 0 {
                    b.drain().for_each(drop);
                }
                p
            })
            .collect()
    }
}

/// A port whose receive side is fed with loaded mbufs through `net_ring` and whose transmit side
/// is `net_null`.
pub(crate) struct DpdkBenchPort {
    ring: DpdkQueue,
    sink: DpdkQueue,
    pool: Arc<Mempool>,
    loaded: VecDeque<Mbuf>,
    in_ring: usize,
    sent: u64,
    keep: Option<Vec<Vec<u8>>>,
}

impl Port for DpdkBenchPort {
    type Buf = Mbuf;

    fn recv(&mut self, burst: &mut Burst<Mbuf>, drops: &mut DropCounters) -> usize {
        if !self.loaded.is_empty() {
            let mut feed = Burst::new();
            while feed.spare() > 0 {
                let Some(m) = self.loaded.pop_front() else {
                    break;
                };
                if let Err(m) = feed.push(m) {
                    self.loaded.push_front(m);
                    break;
                }
            }
            self.in_ring += self.ring.send(&mut feed);
            // What the ring refused goes back to the front, in order.
            while let Some(m) = feed.pop() {
                self.loaded.push_front(m);
            }
        }
        let n = self.ring.recv(burst, drops);
        self.in_ring = self.in_ring.saturating_sub(n);
        n
    }

    fn send(&mut self, burst: &mut Burst<Mbuf>) -> usize {
        if let Some(keep) = &mut self.keep {
            keep.extend(burst.as_slice().iter().map(|m| m.data().to_vec()));
        }
        let n = self.sink.send(burst);
        self.sent += n as u64;
        n
    }

    fn alloc(&mut self) -> Option<Mbuf> {
        self.pool.alloc()
    }

    fn free_bulk(&mut self, bufs: &mut Vec<Mbuf>) {
        self.ring.free_bulk(bufs);
    }
}

impl BenchPort for DpdkBenchPort {
    fn load(&mut self, frame: &[u8]) -> bool {
        let Some(mut m) = self.pool.alloc() else {
            return false;
        };
        match m.append(frame.len()) {
            Ok(room) => room.copy_from_slice(frame),
            Err(_) => return false,
        }
        self.loaded.push_back(m);
        true
    }

    fn loaded(&self) -> usize {
        // Frames still in the ring count too: they have not reached the core.
        self.loaded.len() + self.in_ring
    }

    fn sent(&self) -> u64 {
        self.sent
    }

    fn keep_sent(&mut self, keep: Option<Vec<Vec<u8>>>) -> Option<Vec<Vec<u8>>> {
        std::mem::replace(&mut self.keep, keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::dpdk::{pool_size, DescLimits, DevInfo};

    /// The rig's default pool is what `pool_size` gives the appliance for one worker core on
    /// two single-queue ports with the default descriptor counts, so the default stays "as the
    /// appliance" if that sizing changes.
    #[test]
    fn the_rigs_default_pool_is_the_appliances_for_one_core_on_two_ports() {
        let any = DescLimits {
            max: 0,
            min: 0,
            align: 1,
        };
        let port = DevInfo {
            driver: "net_ring".into(),
            max_rx_queues: 1,
            max_tx_queues: 1,
            rss_offloads: 0,
            rx_offloads: 0,
            tx_offloads: 0,
            rx_desc_lim: any,
            tx_desc_lim: any,
        };
        assert_eq!(
            pool_size(&[port.clone(), port], &EthOptions::default()),
            RIG_MBUFS
        );
        assert!((RIG_MBUFS_MIN..=RIG_MBUFS_MAX).contains(&RIG_MBUFS));
    }
}
