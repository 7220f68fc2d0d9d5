/* See shim.h. Compiled with the flags `pkg-config --cflags libdpdk` prints (rte_config.h is
 * force-included there, and the fast-path headers need its -march baseline). */
#include "shim.h"

int shim_errno(void) { return rte_errno; }
unsigned shim_lcore_id(void) { return rte_lcore_id(); }
uint16_t shim_pktmbuf_headroom(void) { return RTE_PKTMBUF_HEADROOM; }

uint16_t shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int shim_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count)
{
    return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void shim_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void shim_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count)
{
    rte_pktmbuf_free_bulk(mbufs, count);
}

unsigned shim_mempool_avail_count(const struct rte_mempool *mp)
{
    return rte_mempool_avail_count(mp);
}

unsigned shim_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
    return rte_ring_enqueue_burst(r, objs, n, NULL);
}

unsigned shim_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
    return rte_ring_dequeue_burst(r, objs, n, NULL);
}

uint64_t shim_eth_rss_ip(void) { return RTE_ETH_RSS_IP; }
uint64_t shim_eth_rss_udp(void) { return RTE_ETH_RSS_UDP; }
uint64_t shim_eth_rss_tcp(void) { return RTE_ETH_RSS_TCP; }
uint64_t shim_eth_rx_offload_ipv4_cksum(void) { return RTE_ETH_RX_OFFLOAD_IPV4_CKSUM; }
uint64_t shim_eth_rx_offload_udp_cksum(void) { return RTE_ETH_RX_OFFLOAD_UDP_CKSUM; }
uint64_t shim_eth_tx_offload_ipv4_cksum(void) { return RTE_ETH_TX_OFFLOAD_IPV4_CKSUM; }
uint64_t shim_eth_tx_offload_udp_cksum(void) { return RTE_ETH_TX_OFFLOAD_UDP_CKSUM; }
uint64_t shim_eth_tx_offload_mbuf_fast_free(void) { return RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE; }
uint64_t shim_mbuf_f_rx_ip_cksum_mask(void) { return RTE_MBUF_F_RX_IP_CKSUM_MASK; }
uint64_t shim_mbuf_f_rx_ip_cksum_bad(void) { return RTE_MBUF_F_RX_IP_CKSUM_BAD; }
uint64_t shim_mbuf_f_rx_ip_cksum_good(void) { return RTE_MBUF_F_RX_IP_CKSUM_GOOD; }
