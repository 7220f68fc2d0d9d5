/* sluice's C shim over DPDK 22.11: the `static inline` fast path, the thread-locals and the
 * constants that bindgen cannot reach, under the `shim_` prefix. Every function is a thin call;
 * the Rust side owns all policy. */
#ifndef SLUICE_DPDK_SHIM_H
#define SLUICE_DPDK_SHIM_H

#include <stdint.h>

#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_version.h>

/* Thread-locals and macros. */
int shim_errno(void);
unsigned shim_lcore_id(void);
uint16_t shim_pktmbuf_headroom(void);

/* Bursts. */
uint16_t shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

/* Mbufs. */
struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *mp);
int shim_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void shim_pktmbuf_free(struct rte_mbuf *m);
void shim_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count);
unsigned shim_mempool_avail_count(const struct rte_mempool *mp);

/* Rings (software steering and net_ring devices). */
unsigned shim_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned shim_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);

/* Constants built with RTE_BIT64 and friends. */
uint64_t shim_eth_rss_ip(void);
uint64_t shim_eth_rss_udp(void);
uint64_t shim_eth_rss_tcp(void);
uint64_t shim_eth_rx_offload_ipv4_cksum(void);
uint64_t shim_eth_rx_offload_udp_cksum(void);
uint64_t shim_eth_tx_offload_ipv4_cksum(void);
uint64_t shim_eth_tx_offload_udp_cksum(void);
uint64_t shim_eth_tx_offload_mbuf_fast_free(void);
uint64_t shim_mbuf_f_rx_ip_cksum_mask(void);
uint64_t shim_mbuf_f_rx_ip_cksum_bad(void);
uint64_t shim_mbuf_f_rx_ip_cksum_good(void);

#endif
