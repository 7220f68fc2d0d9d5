//! DPDK with virtual devices, no hugepages, one EAL for the whole binary (it starts once per
//! process), so this is a `harness = false` test with its own `main`:
//!
//! - refusals: a missing device, a bad core list and a second EAL start each give one clear
//!   error and a non-zero exit, quickly (run as child processes of this binary);
//! - `net_ring`: frames sent on the loopback port come back byte for byte, and every mbuf
//!   returns to its pool; a queue pair is handed out once at a time;
//! - `net_pcap` golden test: a capture of a client's traffic replayed through the pipeline on
//!   DPDK ports gives exactly, byte for byte, the frames the same pipeline gives on in-memory
//!   ports, and those frames are the right ones (ARP and ping answered, the client's packet
//!   decrypted and SNATed, a denied and a replayed packet dropped under their counters);
//! - lcores: a `Worker` runs on a worker lcore over `net_ring` and stops on request;
//! - software steering: two workers (the main lcore and a worker lcore) share ports with one
//!   rx queue; a client packet of a session core 1 owns arrives at core 0, is handed to core 1,
//!   and leaves SNATed on core 1's tx queue; the reply to core 1's port range arrives at core 0
//!   too and leaves encrypted on core 1's tx queue;
//! - chains: a frame `net_pcap` delivers as a chain of mbufs is counted (`multi_segment`) and
//!   every segment of it freed;
//! - descriptors: the counts asked for are fitted as DPDK's own adjustment fits them;
//! - held open: a port is neither stopped nor closed while a queue of it is out;
//! - pool outlived: a mempool is not freed while one of its mbufs is out.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::crypto::Cipher;
use sluice_engine::dpdk::{self, mbuf_from, Eal, EthDev, EthOptions, Mempool};
use sluice_engine::flow::PortRange;
use sluice_engine::mailbox::{Command as Cmd, Mailbox};
use sluice_engine::packet::{Burst, DropCounters, DropReason, PacketBuf};
use sluice_engine::port::{MemPort, Port};
use sluice_engine::rules::GroupMask;
use sluice_engine::testkit::{self, ip, lab};
use sluice_engine::wire::ethernet;
use sluice_engine::wire::openvpn::{KeyId, PeerId};
use sluice_engine::worker::{Handoff, Worker};
use sluice_tests::pcap;

const QUIET: [&str; 2] = ["--log-level=lib.eal:error", "--log-level=pmd.*:error"];

fn base_args() -> Vec<String> {
    let mut a: Vec<String> = [
        "--no-pci",
        "--no-huge",
        "--no-shconf",
        "--no-telemetry",
        "-m",
        "256",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.extend(QUIET.iter().map(|s| (*s).to_owned()));
    a
}

/// Child mode: start EAL with the given arguments and require the named ports, the way the
/// appliance starts; print the refusal and exit 1.
fn child(spec: &str) -> ! {
    let (args, ports) = spec.split_once('|').unwrap_or((spec, ""));
    let args: Vec<String> = args
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let eal = match Eal::init(&args) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let names: Vec<&str> = ports.split(',').filter(|s| !s.is_empty()).collect();
    if let Err(e) = eal.require_ports(&names) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    if std::env::var_os("SLUICE_EAL_TWICE").is_some() {
        if let Err(e) = Eal::init(&args) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    std::process::exit(0);
}

fn refused(spec: &str, twice: bool, expect: &str) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = sluice_tests::dying_with_parent(exe);
    cmd.env("SLUICE_EAL_CHILD", spec)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if twice {
        cmd.env("SLUICE_EAL_TWICE", "1");
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("refusal for {spec:?} hung for 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{spec:?} was accepted:\n{err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or("");
    assert!(
        line.contains(expect),
        "{spec:?}: expected an error line with {expect:?}, got:\n{err}"
    );
    println!("  refused: {line}");
}

fn refusals() {
    let base = base_args().join(" ");
    // A device that is not there (a typo in the vdev string probes nothing).
    refused(
        &format!("{base} --vdev net_nosuchdriver0|net_nosuchdriver0"),
        false,
        "DPDK EAL could not start: No such device",
    );
    refused(
        &format!("{base} --vdev net_ring0|net_ring1"),
        false,
        "port net_ring1 is missing",
    );
    // A core list naming CPUs this machine does not have.
    refused(&format!("{base} -l 200"), false, "DPDK EAL could not start");
    // EAL starts once per process.
    refused(&format!("{base}|"), true, "already started");
}

fn ring_loopback(eal: &Arc<Eal>) {
    let pool = Arc::new(Mempool::new(eal, "ring_pool", 2047, 2176, -1).unwrap());
    let full = pool.available();
    let id = eal.port_by_name("net_ring0").unwrap();
    let dev = EthDev::start(id, Arc::clone(&pool), EthOptions::default()).unwrap();
    assert!(dev.link().expect("link").up, "net_ring links are up");
    let mut q = dev.queue(0).unwrap();
    let frames: Vec<Vec<u8>> = (0..100u8)
        .map(|i| {
            (0..(60 + usize::from(i) * 13))
                .map(|j| (j as u8) ^ i)
                .collect()
        })
        .collect();
    let mut got = Vec::new();
    let mut drops = DropCounters::default();
    for chunk in frames.chunks(20) {
        let mut burst = Burst::new();
        for f in chunk {
            burst.push(mbuf_from(&pool, f).unwrap()).unwrap();
        }
        assert_eq!(q.send(&mut burst), chunk.len());
        let mut rx = Burst::new();
        q.recv(&mut rx, &mut drops);
        got.extend(rx.drain().map(|m| m.data().to_vec()));
    }
    assert_eq!(got, frames, "net_ring returns what was sent, byte for byte");
    // Receive checksum offload: the pipeline trusts a NIC's GOOD verdict, nothing else.
    // (RTE_MBUF_F_RX_IP_CKSUM_GOOD is bit 7, BAD bit 4, in DPDK 22.11.)
    let m = mbuf_from(&pool, &frames[0]).unwrap();
    assert!(!m.ipv4_checksum_verified(), "no verdict without offload");
    for (flags, verified) in [
        (1u64 << 7, true),
        (1u64 << 4, false),
        ((1 << 7) | (1 << 4), false),
    ] {
        // SAFETY: `m` owns a valid mbuf; only its flags word is written.
        unsafe { (*m.as_ptr()).ol_flags = flags };
        assert_eq!(m.ipv4_checksum_verified(), verified, "ol_flags {flags:#x}");
    }
    // SAFETY: as above.
    unsafe { (*m.as_ptr()).ol_flags = 0 };
    drop(m);
    let s = dev.stats().expect("stats");
    assert_eq!((s.ipackets, s.opackets), (100, 100), "{s:?}");
    // Bulk free: every mbuf goes home.
    let mut bufs: Vec<_> = (0..100).map(|_| pool.alloc().unwrap()).collect();
    q.free_bulk(&mut bufs);
    assert_eq!(pool.available(), full, "no mbuf leaked");
    // One handle per queue pair: asking again is refused while it is out, not a second handle
    // for another core to poll the same queues with.
    let again = dev.queue(0).unwrap_err();
    assert!(again.0.contains("already out"), "{again}");
    assert!(dev.queue(1).is_err(), "the port has one core's queues");
    drop(q);
    let q = dev
        .queue(0)
        .expect("the pair is given back when its handle drops");
    drop(q);
    println!("  net_ring loopback: 100 frames, stats and pool balanced, one handle per queue");
}

/// Descriptor counts are fitted to the device's limits as DPDK's own
/// `rte_eth_dev_adjust_nb_rx_tx_desc` fits them, and the port is set up with the fitted counts.
/// (No virtual device of DPDK 22.11 states limits tighter than DPDK's defaults, so the fitting
/// against tight limits is the unit test `descriptor_counts_are_fitted_to_the_device_limits`.)
fn descriptors(eal: &Arc<Eal>) {
    let id = eal.port_by_name("net_null0").unwrap();
    let info = EthDev::info(id).unwrap();
    for want in [1u16, 100, 1000, 1024, 4096, u16::MAX] {
        let (mut rx, mut tx) = (want, want);
        // SAFETY: a probed port id and two valid in/out pointers.
        let rc = unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rx, &mut tx) };
        assert_eq!(rc, 0);
        assert_eq!(
            (info.rx_desc_lim.fit(want), info.tx_desc_lim.fit(want)),
            (rx, tx),
            "{want} descriptors under {:?} / {:?}",
            info.rx_desc_lim,
            info.tx_desc_lim
        );
    }
    let pool = Arc::new(Mempool::new(eal, "desc_pool", 2047, 2176, -1).unwrap());
    let opts = EthOptions {
        rx_descriptors: 1000,
        tx_descriptors: 512,
        ..EthOptions::default()
    };
    let dev = EthDev::start(id, Arc::clone(&pool), opts).unwrap();
    assert_eq!(
        (dev.rx_descriptors(), dev.tx_descriptors()),
        (info.rx_desc_lim.fit(1000), info.tx_desc_lim.fit(512))
    );
    println!(
        "  descriptors: fitted as DPDK fits them ({} rx, {} tx on {})",
        dev.rx_descriptors(),
        dev.tx_descriptors(),
        info.driver
    );
}

/// A port is not stopped or closed under a core that still has its queue: `stop` is refused
/// while a queue pair is out, and a dropped `EthDev` leaves the port open (and its queue
/// working) until the last queue is dropped, which closes it.
fn held_open(eal: &Arc<Eal>) {
    let pool = Arc::new(Mempool::new(eal, "held_pool", 255, 2176, -1).unwrap());
    let id = eal.port_by_name("net_ring2").unwrap();
    let mut dev = EthDev::start(id, Arc::clone(&pool), EthOptions::default()).unwrap();
    let mut q = dev.queue(0).unwrap();
    let refused = dev.stop().unwrap_err();
    assert!(refused.0.contains("still out"), "{refused}");
    drop(dev);
    assert_eq!(
        eal.port_by_name("net_ring2"),
        Some(id),
        "the port stays open while its queue lives"
    );
    let mut b = Burst::new();
    b.push(mbuf_from(&pool, &[7u8; 64]).unwrap()).unwrap();
    assert_eq!(q.send(&mut b), 1, "the queue still sends");
    let mut rx = Burst::new();
    assert_eq!(
        q.recv(&mut rx, &mut DropCounters::default()),
        1,
        "and receives"
    );
    assert_eq!(
        rx.drain().map(|m| m.data().to_vec()).collect::<Vec<_>>(),
        vec![vec![7u8; 64]]
    );
    drop(q);
    assert_eq!(
        eal.port_by_name("net_ring2"),
        None,
        "closed (and so released) when its last queue went"
    );
    assert_eq!(pool.available(), 255, "every mbuf back");
    // With its queues back, the port stops, and hands out no queue any more.
    let id = eal.port_by_name("net_null1").unwrap();
    let mut dev = EthDev::start(id, Arc::clone(&pool), EthOptions::default()).unwrap();
    drop(dev.queue(0).unwrap());
    dev.stop().unwrap();
    assert!(dev.queue(0).unwrap_err().0.contains("stopped"));
    drop(dev);
    assert_eq!(eal.port_by_name("net_null1"), None, "closed on drop");
    println!("  held open: stop refused and close put off while a queue is out");
}

/// A pool dropped while one of its mbufs is out is not freed under it (the mbuf's data stays
/// readable and it can still be freed); a pool with every mbuf back is freed.
fn pool_outlived(eal: &Arc<Eal>) {
    let exists = |name: &str| {
        let c = std::ffi::CString::new(name).unwrap();
        // SAFETY: `c` is a valid C string; the call only searches the pool list.
        !unsafe { dpdk_sys::rte_mempool_lookup(c.as_ptr()) }.is_null()
    };
    let pool = Mempool::new(eal, "outlived_pool", 63, 2176, -1).unwrap();
    let m = mbuf_from(&pool, b"still here").unwrap();
    assert_eq!(pool.in_use(), 1);
    drop(pool);
    assert!(exists("outlived_pool"), "not freed while an mbuf is out");
    assert_eq!(m.data(), b"still here");
    drop(m);
    let pool = Mempool::new(eal, "freed_pool", 63, 2176, -1).unwrap();
    drop(mbuf_from(&pool, b"back").unwrap());
    assert_eq!(pool.in_use(), 0);
    drop(pool);
    assert!(!exists("freed_pool"), "freed with every mbuf back");
    println!("  pool outlived: kept while an mbuf was out, freed when all were back");
}

/// A frame larger than one mbuf's data room comes from `net_pcap` as a chain of mbufs: the
/// port counts it (`multi_segment`) and frees every segment of it, and the frames around it
/// come through.
fn chains(eal: &Arc<Eal>) {
    // 2048 bytes of data room after the 128 of headroom: the 5000-byte frame takes three.
    let pool = Arc::new(Mempool::new(eal, "chain_pool", 1023, 2176, -1).unwrap());
    let full = pool.available();
    let id = eal.port_by_name("net_pcap4").unwrap();
    let dev = EthDev::start(id, Arc::clone(&pool), EthOptions::default()).unwrap();
    let mut q = dev.queue(0).unwrap();
    let mut drops = DropCounters::default();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 || drops.total() < 1 {
        assert!(
            Instant::now() < deadline,
            "net_pcap4 gave {} frames and {:?} in 10 s",
            got.len(),
            drops.iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>()
        );
        let mut rx = Burst::new();
        q.recv(&mut rx, &mut drops);
        got.extend(rx.drain().map(|m| m.data().to_vec()));
    }
    assert_eq!(
        got,
        chain_frames()[..1]
            .iter()
            .chain(&chain_frames()[2..])
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        drops.get(DropReason::MultiSegment),
        1,
        "the chained frame is counted"
    );
    assert_eq!(drops.total(), 1);
    assert_eq!(
        dev.stats().expect("stats").ipackets,
        3,
        "the device delivered all three"
    );
    assert_eq!(
        pool.available(),
        full,
        "every segment of the chain went back to the pool"
    );
    println!("  net_pcap chain: counted as multi_segment, all three segments freed");
}

/// A small frame, one of 5000 bytes (three mbufs of 2048 bytes), a small frame.
fn chain_frames() -> Vec<Vec<u8>> {
    [100usize, 5000, 200]
        .iter()
        .map(|&n| (0..n).map(|i| (i % 251) as u8).collect())
        .collect()
}

struct Traffic {
    outside: Vec<Vec<u8>>,
    inside: Vec<Vec<u8>>,
    server_keys: sluice_engine::crypto::KeyMaterial,
    client_keys: sluice_engine::crypto::KeyMaterial,
}

fn traffic() -> Traffic {
    let (server_keys, client_keys) = testkit::key_pair(Cipher::Aes256Gcm, 7);
    let mut client = testkit::Client::new(PeerId(5), KeyId(0), &client_keys);
    let vip = ip(lab::CLIENT_VIP);
    let hello = testkit::ipv4_udp(
        vip,
        40_000,
        ip(lab::HOST_IP),
        7777,
        b"hello through the tunnel",
    );
    let denied = testkit::ipv4_udp(vip, 40_001, ip("10.99.1.1"), 7777, b"not for you");
    let to_host = client.frame(&hello);
    let outside = vec![
        testkit::arp_request(
            lab::CLIENT_MAC,
            ip(lab::CLIENT_OUTER_IP),
            ip(lab::OUTSIDE_IP),
        ),
        testkit::eth_ipv4(
            lab::OUTSIDE_MAC,
            lab::CLIENT_MAC,
            &testkit::ipv4_echo(
                ip(lab::CLIENT_OUTER_IP),
                ip(lab::OUTSIDE_IP),
                true,
                9,
                1,
                b"ping",
            ),
        ),
        to_host.clone(),
        client.frame(&denied),
        to_host, // a replay
    ];
    let inside = vec![testkit::arp_request(
        lab::HOST_MAC,
        ip(lab::HOST_IP),
        ip(lab::INSIDE_IP),
    )];
    Traffic {
        outside,
        inside,
        server_keys,
        client_keys,
    }
}

/// Runs the lab pipeline over `ports` until `done` says so; returns the worker.
fn run_lab<P: Port>(
    ports: Vec<P>,
    t: &Traffic,
    mut done: impl FnMut(&mut Worker<Shared<P>>) -> bool,
) -> Worker<Shared<P>> {
    let gate = Arc::new(AtomicBool::new(false));
    let ports = ports
        .into_iter()
        .map(|inner| Shared {
            inner,
            open: Arc::clone(&gate),
        })
        .collect();
    let epoch = Instant::now();
    let mailbox = Mailbox::new(64);
    let mut w = testkit::lab_worker(ports, testkit::lab_config(4096, 64), mailbox.clone(), epoch);
    mailbox
        .commands
        .push(Cmd::AddSession {
            info: testkit::lab_session(PeerId(5), ip(lab::CLIENT_VIP), GroupMask::EMPTY),
            key_id: KeyId(0),
            keys: Box::new(t.server_keys.clone()),
        })
        .unwrap();
    w.poll_once(epoch);
    gate.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&mut w) {
        assert!(
            Instant::now() < deadline,
            "the pipeline did not finish in 10 s"
        );
        w.poll_once(epoch);
    }
    w
}

fn pcap_golden(eal: &Arc<Eal>, dir: &Path) {
    let t = traffic();
    // The oracle: the same pipeline on in-memory ports.
    let (mut o, mut i) = (MemPort::new(), MemPort::new());
    for f in &t.outside {
        o.inject(f);
    }
    for f in &t.inside {
        i.inject(f);
    }
    let mut polls = 0;
    let mut mem = run_lab(vec![o, i], &t, |_| {
        polls += 1;
        polls > 4
    });
    let want_out = mem.port_mut(0).unwrap().inner.take_sent();
    let want_in = mem.port_mut(1).unwrap().inner.take_sent();

    // The same through DPDK: net_pcap0 is the outside port, net_pcap1 the inside one.
    let pool = Arc::new(Mempool::new(eal, "pcap_pool", 4095, 2176, -1).unwrap());
    let ids = eal.require_ports(&["net_pcap0", "net_pcap1"]).unwrap();
    let devs: Vec<EthDev> = ids
        .iter()
        .map(|id| EthDev::start(*id, Arc::clone(&pool), EthOptions::default()).unwrap())
        .collect();
    let queues = devs.iter().map(|d| d.queue(0).unwrap()).collect();
    let expected = t.outside.len() as u64 + t.inside.len() as u64;
    let w = run_lab(queues, &t, |w| {
        let seen: u64 = devs
            .iter()
            .map(|d| d.stats().expect("stats").ipackets)
            .sum();
        seen >= expected && w.poll_stats().idle > 10
    });
    let drops = w.drops().clone();
    let nonzero: Vec<_> = drops.iter().filter(|(_, n)| *n > 0).collect();
    println!("  drops: {nonzero:?}");
    drop(w);
    drop(devs); // closing flushes the tx captures
    let got_out = pcap::read(&dir.join("outside-tx.pcap")).unwrap();
    let got_in = pcap::read(&dir.join("inside-tx.pcap")).unwrap();
    assert_eq!(
        got_out, want_out,
        "outside frames through DPDK equal the in-memory pipeline's"
    );
    assert_eq!(
        got_in, want_in,
        "inside frames through DPDK equal the in-memory pipeline's"
    );

    // And they are the right frames.
    assert_eq!(got_out.len(), 2, "ARP reply and echo reply: {got_out:02x?}");
    assert_eq!(&got_out[0][12..14], &[0x08, 0x06]);
    assert_eq!(&got_out[0][20..22], &[0, 2], "an ARP reply");
    assert_eq!(&got_out[0][28..32], &ip(lab::OUTSIDE_IP).to_be_bytes());
    assert_eq!(got_out[1][34], 0, "an echo reply");
    assert_eq!(
        got_in.len(),
        2,
        "ARP reply and the SNATed datagram: {got_in:02x?}"
    );
    // The outside port is polled first: the client's datagram leaves before the ARP reply.
    let arp = got_in.iter().find(|f| f[12..14] == [0x08, 0x06]).unwrap();
    assert_eq!(&arp[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&arp[28..32], &ip(lab::INSIDE_IP).to_be_bytes());
    let snat = got_in.iter().find(|f| f[12..14] == [0x08, 0x00]).unwrap();
    assert_eq!(&snat[0..6], &lab::HOST_MAC);
    assert_eq!(
        &snat[26..30],
        &ip(lab::INSIDE_IP).to_be_bytes(),
        "source NATed to the ENI"
    );
    assert_eq!(&snat[30..34], &ip(lab::HOST_IP).to_be_bytes());
    assert!(snat.ends_with(b"hello through the tunnel"));
    let ipv4 =
        sluice_engine::wire::ipv4::Ipv4Packet::new_checked(&snat[ethernet::HEADER_LEN..]).unwrap();
    assert!(ipv4.verify_checksum(), "IPv4 checksum");
    assert_eq!(drops.get(DropReason::NotAuthorized), 1);
    assert_eq!(drops.get(DropReason::Replayed), 1);
    let _ = &t.client_keys;
    println!(
        "  net_pcap golden: {} + {} frames identical to the in-memory pipeline",
        got_out.len(),
        got_in.len()
    );
}

fn lcores(eal: &Arc<Eal>) {
    let workers = eal.worker_lcores();
    assert_eq!(workers.len(), 1, "-l 0-1 gives one worker lcore");
    let pool = Arc::new(Mempool::new(eal, "lcore_pool", 2047, 2176, -1).unwrap());
    let id = eal.port_by_name("net_ring1").unwrap();
    let dev = EthDev::start(id, Arc::clone(&pool), EthOptions::default()).unwrap();
    let q = dev.queue(0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let t = traffic();
    // The looped-back client packet goes round: the worker keeps receiving its own output on
    // this loopback port; all that matters here is that it runs on the lcore and stops.
    let keys = t.server_keys.clone();
    let frame = t.outside[2].clone();
    let pool2 = Arc::clone(&pool);
    dpdk::launch(workers[0], move || {
        let epoch = Instant::now();
        let mailbox = Mailbox::new(64);
        let mut w = testkit::lab_worker(
            vec![q],
            testkit::lab_config(4096, 64),
            mailbox.clone(),
            epoch,
        );
        let _ = mailbox.commands.push(Cmd::AddSession {
            info: testkit::lab_session(PeerId(5), ip(lab::CLIENT_VIP), GroupMask::EMPTY),
            key_id: KeyId(0),
            keys: Box::new(keys),
        });
        let mut b = Burst::new();
        let _ = b.push(mbuf_from(&pool2, &frame).unwrap());
        let _ = w.port_mut(0).unwrap().send(&mut b);
        while !stop2.load(Ordering::Relaxed) {
            w.poll_once(Instant::now());
        }
        let busy = w.poll_stats().busy;
        i32::from(busy > 0)
    })
    .unwrap();
    // Until the worker has received (bounded); it is stopped either way before the verdict.
    let deadline = Instant::now() + Duration::from_secs(10);
    while dev.stats().expect("stats").ipackets < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    dpdk::wait_all();
    assert!(
        dev.stats().expect("stats").ipackets >= 1,
        "the worker lcore received from net_ring1 (within 10 s)"
    );
    drop(dev);
    assert_eq!(
        pool.available(),
        2047,
        "every mbuf back in the pool after the worker stopped"
    );
    println!(
        "  worker on lcore {}: ran, stopped, pool balanced",
        workers[0]
    );
}

/// A port that receives nothing until its gate opens (the worker set up first: rules,
/// session, neighbours), so a capture is replayed into a ready pipeline; the gate may be opened
/// from another thread.
struct Shared<P> {
    inner: P,
    open: Arc<AtomicBool>,
}

impl<P: Port> Port for Shared<P> {
    type Buf = P::Buf;

    fn recv(&mut self, burst: &mut Burst<P::Buf>, drops: &mut DropCounters) -> usize {
        if self.open.load(Ordering::Acquire) {
            self.inner.recv(burst, drops)
        } else {
            0
        }
    }

    fn send(&mut self, burst: &mut Burst<P::Buf>) -> usize {
        self.inner.send(burst)
    }

    fn alloc(&mut self) -> Option<P::Buf> {
        self.inner.alloc()
    }

    fn free_bulk(&mut self, bufs: &mut Vec<P::Buf>) {
        self.inner.free_bulk(bufs);
    }
}

fn steering(eal: &Arc<Eal>, dir: &Path) {
    let workers = eal.worker_lcores();
    let pool = Arc::new(Mempool::new(eal, "steer_pool", 4095, 2176, -1).unwrap());
    let ids = eal.require_ports(&["net_pcap2", "net_pcap3"]).unwrap();
    let opts = EthOptions {
        queues: 2,
        ..EthOptions::default()
    };
    let devs: Vec<EthDev> = ids
        .iter()
        .map(|id| EthDev::start(*id, Arc::clone(&pool), opts).unwrap())
        .collect();
    assert_eq!(
        devs[0].rx_queues(),
        1,
        "net_pcap with one rx_pcap has one rx queue"
    );
    let (server_keys, client_keys) = testkit::key_pair(Cipher::Aes256Gcm, 11);
    let peer = PeerId(1); // owned by core 1 of 2
    let gates = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];
    let mut meshes = Handoff::mesh(2, 256).into_iter();
    let epoch = Instant::now();
    let mut make = |core: u16| {
        let mailbox = Mailbox::new(64);
        if core == 1 {
            mailbox
                .commands
                .push(Cmd::AddSession {
                    info: testkit::lab_session(peer, ip(lab::CLIENT_VIP), GroupMask::EMPTY),
                    key_id: KeyId(0),
                    keys: Box::new(server_keys.clone()),
                })
                .unwrap();
        }
        let mut cfg = testkit::lab_config(4096, 64);
        cfg.core = usize::from(core);
        cfg.cores = 2;
        let ports = devs
            .iter()
            .zip(&gates)
            .map(|(d, g)| Shared {
                inner: d.queue(core).unwrap(),
                open: Arc::clone(g),
            })
            .collect();
        let w = testkit::lab_worker_with(ports, cfg, mailbox.clone(), meshes.next(), epoch);
        (w, mailbox)
    };
    let (mut w0, _mb0) = make(0);
    let (mut w1, _mb1) = make(1);
    assert_eq!(w1.sessions().len(), 1, "core 1 owns the session");
    let stop = Arc::new(AtomicBool::new(false));
    let stop1 = Arc::clone(&stop);
    dpdk::launch(workers[0], move || {
        while !stop1.load(Ordering::Relaxed) {
            w1.poll_once(Instant::now());
        }
        drop(w1);
        0
    })
    .unwrap();
    // The client's packet first; the reply only once the flow exists.
    gates[0].store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(10);
    while devs[1].stats().expect("stats").opackets < 1 {
        assert!(Instant::now() < deadline, "nothing left on the inside");
        w0.poll_once(epoch);
    }
    gates[1].store(true, Ordering::Release);
    while devs[0].stats().expect("stats").opackets < 1 {
        assert!(Instant::now() < deadline, "nothing left on the outside");
        w0.poll_once(epoch);
    }
    for _ in 0..100 {
        w0.poll_once(epoch);
    }
    stop.store(true, Ordering::Relaxed);
    dpdk::wait_all();
    let drops0: Vec<_> = w0.drops().iter().filter(|(_, n)| *n > 0).collect();
    drop(w0);
    drop(devs);
    let read = |f: &str| pcap::read(&dir.join(f)).unwrap();
    assert!(
        read("steer-in-tx0.pcap").is_empty() && read("steer-out-tx0.pcap").is_empty(),
        "core 0 sent nothing: {drops0:?}"
    );
    let snat = read("steer-in-tx1.pcap");
    assert_eq!(snat.len(), 1, "core 1 sent the SNATed packet");
    let nat_port = u16::from_be_bytes([snat[0][34], snat[0][35]]);
    assert_eq!(&snat[0][26..30], &ip(lab::INSIDE_IP).to_be_bytes());
    assert_eq!(
        nat_port,
        PortRange::for_core(1, 2).first,
        "from core 1's port range"
    );
    let enc = read("steer-out-tx1.pcap");
    assert_eq!(enc.len(), 1, "core 1 sent the encrypted reply");
    let mut client = testkit::Client::new(peer, KeyId(0), &client_keys);
    let inner = client.open(&enc[0]).expect("the reply opens");
    assert!(inner.ends_with(b"steered back"));
    println!(
        "  steering: core 0 received both directions, core 1 (lcore {}) processed and sent them",
        workers[0]
    );
}

fn steering_captures(dir: &Path) {
    let (_, client_keys) = testkit::key_pair(Cipher::Aes256Gcm, 11);
    let mut client = testkit::Client::new(PeerId(1), KeyId(0), &client_keys);
    let hello = testkit::ipv4_udp(
        ip(lab::CLIENT_VIP),
        41_000,
        ip(lab::HOST_IP),
        7777,
        b"steered out",
    );
    pcap::write(&dir.join("steer-out-rx.pcap"), &[client.frame(&hello)]).unwrap();
    let nat = PortRange::for_core(1, 2).first;
    let reply = testkit::eth_ipv4(
        lab::INSIDE_MAC,
        lab::HOST_MAC,
        &testkit::ipv4_udp(
            ip(lab::HOST_IP),
            7777,
            ip(lab::INSIDE_IP),
            nat,
            b"steered back",
        ),
    );
    pcap::write(&dir.join("steer-in-rx.pcap"), &[reply]).unwrap();
}

fn main() {
    if let Ok(spec) = std::env::var("SLUICE_EAL_CHILD") {
        child(&spec);
    }
    println!("dpdk_vdev: DPDK {}", dpdk::version());
    refusals();
    let dir = tempfile::tempdir().unwrap();
    let t = traffic();
    pcap::write(&dir.path().join("outside-rx.pcap"), &t.outside).unwrap();
    pcap::write(&dir.path().join("inside-rx.pcap"), &t.inside).unwrap();
    steering_captures(dir.path());
    pcap::write(&dir.path().join("chain-rx.pcap"), &chain_frames()).unwrap();
    let d = dir.path().display();
    let mut args = base_args();
    args.extend([
        "-l".to_owned(),
        "0-1".to_owned(),
        "--vdev".to_owned(),
        "net_ring0".to_owned(),
        "--vdev".to_owned(),
        "net_ring1".to_owned(),
        "--vdev".to_owned(),
        format!("net_pcap0,rx_pcap={d}/outside-rx.pcap,tx_pcap={d}/outside-tx.pcap"),
        "--vdev".to_owned(),
        format!("net_pcap1,rx_pcap={d}/inside-rx.pcap,tx_pcap={d}/inside-tx.pcap"),
        "--vdev".to_owned(),
        format!("net_pcap2,rx_pcap={d}/steer-out-rx.pcap,tx_pcap={d}/steer-out-tx0.pcap,tx_pcap={d}/steer-out-tx1.pcap"),
        "--vdev".to_owned(),
        format!("net_pcap3,rx_pcap={d}/steer-in-rx.pcap,tx_pcap={d}/steer-in-tx0.pcap,tx_pcap={d}/steer-in-tx1.pcap"),
        "--vdev".to_owned(),
        format!("net_pcap4,rx_pcap={d}/chain-rx.pcap,tx_pcap={d}/chain-tx.pcap"),
        "--vdev".to_owned(),
        "net_null0".to_owned(),
        "--vdev".to_owned(),
        "net_ring2".to_owned(),
        "--vdev".to_owned(),
        "net_null1".to_owned(),
    ]);
    let eal = Eal::init(&args).unwrap();
    println!("  ports: {}", eal.port_names().join(", "));
    ring_loopback(&eal);
    pcap_golden(&eal, dir.path());
    lcores(&eal);
    steering(&eal, dir.path());
    chains(&eal);
    descriptors(&eal);
    held_open(&eal);
    // Last: the pool it leaves keeps the EAL to the end of the process.
    pool_outlived(&eal);
    drop(eal);
    println!("dpdk_vdev: ok");
}
