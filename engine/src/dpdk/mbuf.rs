//! Mbuf pools and `Mbuf`, the `PacketBuf` the pipeline works on in production: one segment
//! (scatter is never enabled), the packet between `data_off` and `data_off + data_len`.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use dpdk_sys::{rte_mbuf, rte_mempool};

use super::eal::{Eal, EalError};
use crate::packet::{NoRoom, PacketBuf};

/// A pool of packet buffers; ports hold it in an `Arc`, and it holds the EAL. Freed on drop
/// if every mbuf is back in it; otherwise left allocated, with the EAL, until the process
/// exits: an `Mbuf` (or a driver's or ring's mbuf) still out points into the pool's memory, and
/// freeing that under it would make its every use a use after free.
#[derive(Debug)]
pub struct Mempool {
    raw: NonNull<rte_mempool>,
    /// Mbufs in the pool when all are back.
    count: u32,
    eal: Arc<Eal>,
}

// SAFETY: an rte_mempool is designed for concurrent use from many lcores (per-lcore caches and
// a lock-free ring); the pointer itself is only freed in `Drop`.
unsafe impl Send for Mempool {}
// SAFETY: as above; shared references only allocate and count.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// A pool of `count` mbufs with `data_room` bytes each (headroom included), with a per-lcore
    /// cache, on NUMA socket `socket` (-1 for any).
    ///
    /// # Errors
    /// DPDK's reason (usually: not enough memory for `-m`, or a duplicate name).
    pub fn new(
        eal: &Arc<Eal>,
        name: &str,
        count: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Self, EalError> {
        let c = CString::new(name).map_err(|_| EalError("mempool name has a NUL byte".into()))?;
        let cache = 256.min(count / 8).min(dpdk_sys::RTE_MEMPOOL_CACHE_MAX_SIZE);
        // SAFETY: `c` is a valid C string; EAL is initialised (`eal` proves it).
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(c.as_ptr(), count, cache, 0, data_room, socket)
        };
        NonNull::new(raw).map(|raw| Self { raw, count, eal: Arc::clone(eal) }).ok_or_else(|| {
            EalError(format!(
                "cannot create mbuf pool {name} ({count} x {data_room} bytes): {} (raise -m or reserve more hugepages)",
                super::last_error()
            ))
        })
    }

    /// The raw pool.
    pub fn as_ptr(&self) -> *mut rte_mempool {
        self.raw.as_ptr()
    }

    /// Mbufs currently free in the pool (caches included).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive.
        unsafe { dpdk_sys::shim_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// A fresh empty mbuf with the default headroom.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is alive; a non-null result is a fresh mbuf we now own.
        NonNull::new(unsafe { dpdk_sys::shim_pktmbuf_alloc(self.raw.as_ptr()) }).map(Mbuf)
    }
}

impl Mempool {
    /// Mbufs out of the pool: held by an `Mbuf`, a driver's ring or a software ring.
    pub fn in_use(&self) -> u32 {
        self.count.saturating_sub(self.available())
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        if self.in_use() > 0 {
            // Left for the process's exit, and the EAL (whose memory the pool is) with it:
            // the mbufs still out stay valid. An mbuf on its way back as this is read only
            // makes the pool stay too.
            std::mem::forget(Arc::clone(&self.eal));
            return;
        }
        // SAFETY: every mbuf is back in the pool (counted above, caches included), so none
        // refers into it any more; no port uses it (ports hold it), and an mbuf cannot come out
        // again (allocating needs `&self`, and this is the last owner).
        unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) }
    }
}

/// One mbuf, owned: dropping it returns it to its pool. Its pointer stays valid for as long
/// as it lives: a `Mempool` is never freed while one of its mbufs is out (see `Mempool`).
#[derive(Debug)]
pub struct Mbuf(NonNull<rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one `Mbuf` at a time; moving it to another core (handoff
// rings) moves that ownership. Freeing from any lcore is allowed by DPDK.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `m` is a valid single-segment mbuf of a pool a `Mempool` owns (so its memory stays
    /// valid while it is out), that nothing else owns or frees.
    pub unsafe fn from_raw(m: NonNull<rte_mbuf>) -> Self {
        Self(m)
    }

    /// Gives up ownership (the caller frees or transmits it).
    pub fn into_raw(self) -> *mut rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }

    /// The raw mbuf, still owned by `self`.
    pub fn as_ptr(&self) -> *mut rte_mbuf {
        self.0.as_ptr()
    }

    fn m(&self) -> &rte_mbuf {
        // SAFETY: we own a valid mbuf for our lifetime.
        unsafe { self.0.as_ref() }
    }

    fn m_mut(&mut self) -> &mut rte_mbuf {
        // SAFETY: we own a valid mbuf exclusively for our lifetime.
        unsafe { self.0.as_mut() }
    }

    /// Segments in the chain (1 for everything the pipeline accepts).
    pub fn segments(&self) -> u16 {
        self.m().nb_segs
    }

    fn set_len(&mut self, len: u16) {
        let m = self.m_mut();
        m.data_len = len;
        m.pkt_len = u32::from(len);
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; after this nothing refers to it.
        unsafe { dpdk_sys::shim_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl PacketBuf for Mbuf {
    fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's data buffer, which we
        // own for as long as `self` is borrowed.
        unsafe {
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m();
        // SAFETY: as in `data`, and the borrow of `self` is exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    fn headroom(&self) -> usize {
        usize::from(self.m().data_off)
    }

    fn tailroom(&self) -> usize {
        let m = self.m();
        usize::from(m.buf_len) - usize::from(m.data_off) - usize::from(m.data_len)
    }

    fn prepend(&mut self, len: usize) -> Result<&mut [u8], NoRoom> {
        if len > self.headroom() {
            return Err(NoRoom);
        }
        let grown = self.len() + len;
        let m = self.m_mut();
        m.data_off -= len as u16;
        self.set_len(grown as u16);
        Ok(&mut self.data_mut()[..len])
    }

    fn append(&mut self, len: usize) -> Result<&mut [u8], NoRoom> {
        if len > self.tailroom() {
            return Err(NoRoom);
        }
        let old = self.len();
        self.set_len((old + len) as u16);
        Ok(&mut self.data_mut()[old..])
    }

    fn trim_front(&mut self, len: usize) {
        let len = len.min(self.len());
        let rest = self.len() - len;
        self.m_mut().data_off += len as u16;
        self.set_len(rest as u16);
    }

    fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.set_len(len as u16);
        }
    }

    fn ipv4_checksum_verified(&self) -> bool {
        let flags = self.m().ol_flags & rx_ip_cksum_mask();
        flags == rx_ip_cksum_good()
    }
}

fn rx_ip_cksum_mask() -> u64 {
    use std::sync::OnceLock;
    static V: OnceLock<u64> = OnceLock::new();
    // SAFETY: the shim returns a constant.
    *V.get_or_init(|| unsafe { dpdk_sys::shim_mbuf_f_rx_ip_cksum_mask() })
}

fn rx_ip_cksum_good() -> u64 {
    use std::sync::OnceLock;
    static V: OnceLock<u64> = OnceLock::new();
    // SAFETY: the shim returns a constant.
    *V.get_or_init(|| unsafe { dpdk_sys::shim_mbuf_f_rx_ip_cksum_good() })
}
