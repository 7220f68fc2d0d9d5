//! Per-stage benchmarks of the data plane, and the whole pipeline on in-memory ports.
//!
//! `cargo bench -p sluice-engine --bench stages` (add a filter such as `crypto/` to run one
//! group). Stages: header parsing and checksums (`wire/`), the data channel's AEAD and replay
//! window (`crypto/`), the compiled rule table, the flow table and the session table
//! (`tables/`), and both directions of the pipeline (`pipeline/`). The figures that go into
//! `bench/RESULTS.md` as ratios to the AEAD ceiling come from `sluice-bench` (one run, one
//! process); these locate where a packet's time goes.

// A benchmark is a shell: it reads the clock to measure.
#![allow(missing_docs, clippy::unwrap_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use sluice_engine::crypto::{Cipher, DataKey, ReplayWindow};
use sluice_engine::flow::{FlowKey, FlowTable, PortPool, PortRange, ReverseKey, Timeouts};
use sluice_engine::mailbox::{Command, Mailbox};
use sluice_engine::packet::HeapBuf;
use sluice_engine::port::{BufPool, ReplayPort};
use sluice_engine::rules::{
    AuthzRule, AuthzTable, EndpointTables, Grant, GroupMask, Ipv4Cidr, RuleTable, SecurityPolicy,
    TargetNetwork,
};
use sluice_engine::session::{Session, SessionTable};
use sluice_engine::testkit::{self, ip, lab, Client};
use sluice_engine::wire::checksum;
use sluice_engine::wire::ethernet::EthernetFrame;
use sluice_engine::wire::ipv4::Ipv4Packet;
use sluice_engine::wire::openvpn::{DataPacket, KeyId, PeerId};
use sluice_engine::wire::udp::UdpPacket;
use sluice_engine::worker::Worker;

const SIZES: [usize; 3] = [64, 512, 1400];

/// A deterministic pseudo-random sequence (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn inner(size: usize) -> Vec<u8> {
    testkit::ipv4_udp(
        ip(lab::CLIENT_VIP),
        40_000,
        ip(lab::HOST_IP),
        9000,
        &vec![0x5a; size.saturating_sub(28).max(1)],
    )
}

fn wire(c: &mut Criterion) {
    let (_, client_keys) = testkit::key_pair(Cipher::Aes256Gcm, 1);
    let mut client = Client::new(PeerId(7), KeyId(0), &client_keys);
    let frame = client.frame(&inner(1400));
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("outer_headers_parse_and_verify", |b| {
        b.iter(|| {
            let f = black_box(&frame[..]);
            let e = EthernetFrame::new_checked(f).unwrap();
            let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
            assert!(ip.verify_checksum());
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            let p = DataPacket::new_checked(u.payload()).unwrap();
            (e.ethertype(), u.dst_port(), p.peer_id())
        })
    });
    let header: Vec<u8> = frame[14..34].to_vec();
    g.bench_function("ipv4_header_checksum_full", |b| {
        b.iter(|| checksum::checksum(black_box(&header)))
    });
    g.bench_function("checksum_update32_incremental", |b| {
        b.iter(|| checksum::update32(black_box(0x1234), black_box(0x0a40_0001), 0xac1f_0105))
    });
    let datagram = inner(1400);
    g.throughput(Throughput::Bytes(datagram.len() as u64));
    g.bench_function("checksum_full_1400B", |b| {
        b.iter(|| checksum::checksum(black_box(&datagram)))
    });
    g.finish();
}

fn crypto(c: &mut Criterion) {
    let mut g = c.benchmark_group("crypto");
    for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
        let (server_keys, client_keys) = testkit::key_pair(cipher, 3);
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let plain = inner(size);
            // Open: a freshly sealed packet each time (packet-ids only grow; the seal is setup).
            let mut server = DataKey::new(KeyId(0), &server_keys).unwrap();
            let mut client = DataKey::new(KeyId(0), &client_keys).unwrap();
            g.bench_with_input(
                BenchmarkId::new(format!("{cipher:?}/open"), size),
                &size,
                |b, _| {
                    b.iter_batched_ref(
                        || {
                            let mut buf = HeapBuf::from_slice(&plain);
                            client.seal(&mut buf, PeerId(7)).unwrap();
                            buf
                        },
                        |buf| server.open(buf).unwrap(),
                        BatchSize::SmallInput,
                    )
                },
            );
            let mut sealer = DataKey::new(KeyId(0), &server_keys).unwrap();
            g.bench_with_input(
                BenchmarkId::new(format!("{cipher:?}/seal"), size),
                &size,
                |b, _| {
                    b.iter_batched_ref(
                        || HeapBuf::from_slice(&plain),
                        |buf| sealer.seal(buf, PeerId(7)).unwrap(),
                        BatchSize::SmallInput,
                    )
                },
            );
        }
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("replay_window_check_and_mark", |b| {
        let mut w = ReplayWindow::default();
        let mut id = 0u32;
        b.iter(|| {
            id += 1;
            // Mostly in order, sometimes a little late, as on a real link.
            let pid = if id % 8 == 0 { id - 3 } else { id };
            if w.check(pid).is_ok() {
                w.mark(pid);
            }
        })
    });
    g.finish();
}

/// An endpoint with `n` routes and `n` authorization rules (random /24s in 10.0.0.0/8 and
/// 172.16.0.0/12 by group), and the destinations they cover.
fn big_rule_table(n: usize) -> (RuleTable, Vec<u32>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut dsts = Vec::with_capacity(n);
    let mut rules = Vec::with_capacity(n + 1);
    let mut routes = Vec::with_capacity(n);
    for i in 0..n {
        let net = 0x0a00_0000 | ((rng.next() as u32) & 0x00ff_ff00);
        let cidr = Ipv4Cidr::new_truncating(net, 24);
        rules.push(AuthzRule {
            destination: cidr,
            grant: if i % 4 == 0 {
                Grant::AllUsers
            } else {
                Grant::Group(i % 64)
            },
        });
        routes.push((cidr, 0u16));
        dsts.push(net | 17);
    }
    rules.push(AuthzRule {
        destination: Ipv4Cidr::new_truncating(0, 0),
        grant: Grant::AllUsers,
    });
    routes.push((Ipv4Cidr::new_truncating(0, 0), 0));
    let authz = AuthzTable::build(&rules).unwrap();
    let target = TargetNetwork {
        port: 1,
        subnet: Ipv4Cidr::new_truncating(ip(lab::INSIDE_IP), 24),
        eni_ip: ip(lab::INSIDE_IP),
        gateway: ip(lab::ROUTER_IP),
        security: SecurityPolicy::AllowAll,
    };
    let ep = EndpointTables::new(
        authz,
        &routes,
        vec![target],
        Ipv4Cidr::new_truncating(0x0a40_0000, 16),
    )
    .unwrap();
    (RuleTable::new(1, vec![ep]), dsts)
}

/// `n` flows, ten to a session (flow `i` owned by session `i % (n / 10)`).
fn flow_table(n: usize) -> (FlowTable, Vec<FlowKey>, Vec<ReverseKey>) {
    let mut t = FlowTable::new(
        n + n / 4 + 16,
        PortRange::for_core(0, 1),
        Timeouts::default(),
    );
    let mut keys = Vec::with_capacity(n);
    let mut rev = Vec::with_capacity(n);
    let eni = ip(lab::INSIDE_IP);
    for i in 0..n {
        let key = FlowKey {
            client: 0x0a40_0000 + (i % 4096) as u32,
            proto: 17,
            src_port: 1024 + (i / 4096) as u16,
            dst: ip(lab::HOST_IP),
            dst_port: 9000 + (i % 61) as u16,
        };
        let f = t.create(key, eni, 1, (i % owners(n)) as u32, 0).unwrap();
        rev.push(ReverseKey {
            eni,
            proto: 17,
            nat_port: f.nat_port,
            remote: key.dst,
            remote_port: key.dst_port,
        });
        keys.push(key);
    }
    (t, keys, rev)
}

fn owners(n: usize) -> usize {
    (n / 10).max(1)
}

fn tables(c: &mut Criterion) {
    let mut g = c.benchmark_group("tables");
    g.throughput(Throughput::Elements(1));
    for n in [100, 10_000] {
        let (table, dsts) = big_rule_table(n);
        let groups = GroupMask::EMPTY.with(5);
        let mut rng = Rng(7);
        g.bench_with_input(
            BenchmarkId::new("rule_decide_routes_and_rules", n),
            &n,
            |b, _| {
                b.iter(|| {
                    let d = dsts[rng.next() as usize % dsts.len()];
                    table.decide(0, &groups, d, 17, 9000, d).is_ok()
                })
            },
        );
    }
    for n in [1000, 1_000_000] {
        let (mut t, keys, rev) = flow_table(n);
        let mut rng = Rng(11);
        g.bench_with_input(BenchmarkId::new("flow_lookup", n), &n, |b, _| {
            b.iter(|| {
                let k = &keys[rng.next() as usize % keys.len()];
                t.lookup(k, 1).map(|f| f.nat_port)
            })
        });
        g.bench_with_input(BenchmarkId::new("flow_lookup_reverse", n), &n, |b, _| {
            b.iter(|| {
                let k = &rev[rng.next() as usize % rev.len()];
                t.lookup_reverse(k, 1).map(|f| f.owner)
            })
        });
        // A session ends (its ten flows go) and another starts them again: what a disconnect
        // costs the core, which must not grow with the table.
        let eni = ip(lab::INSIDE_IP);
        g.bench_with_input(
            BenchmarkId::new("session_flows_removed_and_made", n),
            &n,
            |b, _| {
                b.iter(|| {
                    let o = rng.next() as usize % owners(n);
                    let removed = t.remove_owner(o as u32);
                    for k in keys.iter().skip(o).step_by(owners(n)) {
                        let _ = t.create(*k, eni, 1, o as u32, 0);
                    }
                    removed
                })
            },
        );
    }
    // A new flow when the core's SNAT ports toward an ENI are all taken but one (a random one
    // freed each time): the pool's search for it.
    let range = PortRange::for_core(0, 1);
    let mut pool = PortPool::new(range);
    let mut rng = Rng(17);
    while pool.alloc().is_some() {}
    g.bench_function("snat_port_alloc_one_free", |b| {
        b.iter(|| {
            pool.release(range.first + (rng.next() % u64::from(range.len)) as u16);
            pool.alloc()
        })
    });
    for n in [1000, 100_000] {
        let mut t = SessionTable::new(n);
        for i in 0..n {
            let (server, _) = testkit::key_pair(Cipher::Aes256Gcm, i as u8);
            let info =
                testkit::lab_session(PeerId(i as u32), 0x0a40_0000 + i as u32, GroupMask::EMPTY);
            t.insert(Session::new(
                info,
                DataKey::new(KeyId(0), &server).unwrap(),
                0,
            ))
            .unwrap();
        }
        let mut rng = Rng(13);
        g.bench_with_input(BenchmarkId::new("session_by_peer_id", n), &n, |b, _| {
            b.iter(|| {
                let peer = PeerId((rng.next() % n as u64) as u32);
                let i = t.index_of_peer(peer).unwrap();
                t.get_mut(i).map(|s| s.client_ip)
            })
        });
    }
    g.finish();
}

/// One core with `sessions` sessions and as many flows, fed chunks of frames written into its
/// port buffers before the timed part (as a NIC's DMA would).
struct Rig {
    w: Worker<ReplayPort>,
    clients: Vec<Client>,
    replies: Vec<Vec<u8>>,
    size: usize,
    next: usize,
    now: Instant,
}

/// Frames loaded before each timed run: a receive ring's worth, as `sluice-bench` does.
const CHUNK: usize = 1024;

fn vip(i: usize) -> u32 {
    0x0a40_0000 + i as u32
}

impl Rig {
    fn new(sessions: usize, size: usize) -> Self {
        let now = Instant::now();
        let mb = Mailbox::new(sessions + 64);
        let pool = BufPool::new(CHUNK + 1024);
        let ports = vec![
            ReplayPort::new(Vec::new(), pool.clone()),
            ReplayPort::new(Vec::new(), pool),
        ];
        let cfg = testkit::lab_config(sessions * 2 + 1024, sessions + 16);
        let mut w = testkit::lab_worker(ports, cfg, mb.clone(), now);
        let mut clients = Vec::with_capacity(sessions);
        for s in 0..sessions {
            let (server, client) = testkit::key_pair(Cipher::Aes256Gcm, (s % 251) as u8);
            let info = testkit::lab_session(PeerId(s as u32), vip(s), GroupMask::EMPTY);
            let _ = mb.commands.push(Command::AddSession {
                info,
                key_id: KeyId(0),
                keys: Box::new(server),
            });
            clients.push(Client::new(PeerId(s as u32), KeyId(0), &client));
        }
        testkit::apply_commands(&mut w, &mb, now);
        let mut rig = Self {
            w,
            clients,
            replies: Vec::new(),
            size,
            next: 0,
            now,
        };
        // One packet per session creates its flow; the translated ports give the replies.
        rig.w.port_mut(1).unwrap().keep_sent = Some(Vec::new());
        let mut done = 0;
        while done < sessions {
            let n = CHUNK.min(sessions - done);
            rig.load_c2n(n);
            rig.drain(0);
            done += n;
        }
        let sent = rig.w.port_mut(1).unwrap().keep_sent.take().unwrap();
        let payload = vec![0xa5; size.saturating_sub(28).max(1)];
        rig.replies = sent
            .iter()
            .map(|f| {
                let p = Ipv4Packet::new_checked(&f[14..]).unwrap();
                let u = UdpPacket::new_checked(p.payload()).unwrap();
                testkit::eth_ipv4(
                    lab::INSIDE_MAC,
                    lab::HOST_MAC,
                    &testkit::ipv4_udp(
                        ip(lab::HOST_IP),
                        u.dst_port(),
                        ip(lab::INSIDE_IP),
                        u.src_port(),
                        &payload,
                    ),
                )
            })
            .collect();
        assert_eq!(rig.replies.len(), sessions, "every session got its flow");
        rig
    }

    fn load_c2n(&mut self, n: usize) {
        let payload = vec![0x5a; self.size.saturating_sub(28).max(1)];
        for _ in 0..n {
            let s = self.next % self.clients.len();
            self.next += 1;
            let p = testkit::ipv4_udp(vip(s), 1024, ip(lab::HOST_IP), 9000, &payload);
            let f = self.clients[s].frame(&p);
            assert!(self.w.port_mut(0).unwrap().load(&f));
        }
    }

    fn load_n2c(&mut self, n: usize) {
        for _ in 0..n {
            let f = &self.replies[self.next % self.replies.len()];
            self.next += 1;
            assert!(self.w.port_mut(1).unwrap().load(f));
        }
    }

    fn drain(&mut self, port: usize) -> Duration {
        let start = Instant::now();
        while self.w.port_mut(port).unwrap().loaded() > 0 {
            self.w.poll_once(self.now);
        }
        start.elapsed()
    }

    /// Times `iters` packets in one direction, loading untimed between chunks.
    fn run(&mut self, iters: u64, to_net: bool) -> Duration {
        let mut left = iters;
        let mut total = Duration::ZERO;
        while left > 0 {
            let n = (left as usize).min(CHUNK);
            if to_net {
                self.load_c2n(n);
                total += self.drain(0);
            } else {
                self.load_n2c(n);
                total += self.drain(1);
            }
            left -= n as u64;
        }
        assert_eq!(self.w.drops().total(), 0, "the pipeline dropped packets");
        total
    }
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    for size in SIZES {
        let mut rig = Rig::new(1000, size);
        g.bench_with_input(
            BenchmarkId::new("client_to_net_1k_sessions", size),
            &size,
            |b, _| b.iter_custom(|iters| rig.run(iters, true)),
        );
        g.bench_with_input(
            BenchmarkId::new("net_to_client_1k_sessions", size),
            &size,
            |b, _| b.iter_custom(|iters| rig.run(iters, false)),
        );
    }
    g.finish();
}

criterion_group!(benches, wire, crypto, tables, pipeline);
criterion_main!(benches);
