//! The pipeline on DPDK `net_af_packet` ports over veth pairs, in namespaces this test creates
//! (removed with their processes even when it fails):
//!
//! ```text
//!  client ns 192.168.50.2 ──veth── [outside port 192.168.50.1]  appliance ns (DPDK)
//!  host ns   172.31.1.10  ──veth── [inside port  172.31.1.5 ]
//! ```
//!
//! The kernel of each peer namespace resolves the appliance's addresses with ARP and pings
//! them; a client's encrypted datagram comes out on the inside SNATed to 172.31.1.5, and the
//! host's answer goes back encrypted and opens with the client's key. The appliance resolves
//! the host by ARP itself (no neighbour is primed). `harness = false`: EAL starts once per
//! process.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::crypto::Cipher;
use sluice_engine::dpdk::{Eal, EthDev, EthOptions, Mempool};
use sluice_engine::mailbox::{Command as Cmd, Mailbox};
use sluice_engine::packet::DropReason;
use sluice_engine::rules::GroupMask;
use sluice_engine::testkit::{self, ip, lab};
use sluice_engine::wire::ipv4::Ipv4Packet;
use sluice_engine::wire::openvpn::{KeyId, PeerId};
use sluice_engine::wire::udp::UdpPacket;
use sluice_engine::worker::Worker;
use sluice_tests::{require_root, Netns};

fn main() {
    require_root("the af_packet test");
    let pid = std::process::id() % 1_000_000;
    let (out_if, in_if) = (format!("so{pid}"), format!("si{pid}"));
    let app = Netns::new("app");
    let client_ns = Netns::new("cli");
    let host_ns = Netns::new("host");
    app.veth_to(&out_if, &client_ns, &format!("co{pid}"), "192.168.50.2/24");
    app.veth_to(&in_if, &host_ns, &format!("hi{pid}"), "172.31.1.10/24");

    let inside_app = app.enter();
    let eal = Eal::init(&[
        "--no-pci".into(),
        "--no-huge".into(),
        "--no-shconf".into(),
        "--no-telemetry".into(),
        "-m".into(),
        "256".into(),
        "-l".into(),
        "0".into(),
        "--log-level=lib.eal:error".into(),
        "--log-level=pmd.*:error".into(),
        "--vdev".into(),
        format!("net_af_packet0,iface={out_if}"),
        "--vdev".into(),
        format!("net_af_packet1,iface={in_if}"),
    ])
    .unwrap();
    let ids = eal
        .require_ports(&["net_af_packet0", "net_af_packet1"])
        .unwrap();
    let pool = Arc::new(Mempool::new(&eal, "afp_pool", 4095, 2176, -1).unwrap());
    let devs: Vec<EthDev> = ids
        .iter()
        .map(|id| EthDev::start(*id, Arc::clone(&pool), EthOptions::default()).unwrap())
        .collect();
    // af_packet opens and starts its sockets by interface name, in the thread's namespace;
    // then back out, before the namespaces are deleted (that kills their processes).
    drop(inside_app);
    println!(
        "dpdk_af_packet: outside {} {:02x?}, inside {} {:02x?}",
        EthDev::info(ids[0]).unwrap().driver,
        devs[0].mac().expect("mac"),
        EthDev::info(ids[1]).unwrap().driver,
        devs[1].mac().expect("mac")
    );

    // The lab worker with the devices' real MACs and nothing primed.
    let mut cfg = testkit::lab_config(4096, 64);
    cfg.ports[0].mac = devs[0].mac().expect("mac");
    cfg.ports[1].mac = devs[1].mac().expect("mac");
    let (server_keys, client_keys) = testkit::key_pair(Cipher::Aes256Gcm, 3);
    let mb = Mailbox::new(64);
    mb.commands
        .push(Cmd::InstallRules(Arc::new(testkit::lab_rules(1))))
        .unwrap();
    mb.commands
        .push(Cmd::AddSession {
            info: testkit::lab_session(PeerId(9), ip(lab::CLIENT_VIP), GroupMask::EMPTY),
            key_id: KeyId(0),
            keys: Box::new(server_keys),
        })
        .unwrap();
    let queues = devs.iter().map(|d| d.queue(0).unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let mb2 = mb.clone();
    let worker = std::thread::spawn(move || {
        let epoch = Instant::now();
        let mut w = Worker::new(cfg, queues, mb2.clone(), None, epoch);
        while !stop2.load(Ordering::Relaxed) {
            w.poll_once(Instant::now());
            while mb2.reports.pop().is_some() {}
        }
        w
    });

    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // ARP and ICMP from both sides, answered by the engine.
        for (ns, target) in [(&client_ns, lab::OUTSIDE_IP), (&host_ns, lab::INSIDE_IP)] {
            let out = ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", target]);
            assert!(
                out.status.success(),
                "ping {target} from {}: {}",
                ns.name(),
                String::from_utf8_lossy(&out.stdout)
            );
            let neigh = ns.exec_ok(&["ip", "neigh", "show", target]);
            let text = String::from_utf8_lossy(&neigh.stdout).to_string();
            assert!(text.contains("lladdr"), "ARP resolved {target}: {text}");
            println!("  ping {target} from {}: ok ({})", ns.name(), text.trim());
        }

        // A client's encrypted datagram out on the inside, SNATed.
        let client_sock =
            client_ns.bind_udp(&format!("{}:{}", lab::CLIENT_OUTER_IP, lab::CLIENT_PORT));
        let host_sock = host_ns.bind_udp(&format!("{}:7777", lab::HOST_IP));
        host_sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client_sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut client = testkit::Client::new(PeerId(9), KeyId(0), &client_keys);
        let hello = testkit::ipv4_udp(
            ip(lab::CLIENT_VIP),
            40_000,
            ip(lab::HOST_IP),
            7777,
            b"hello from the tunnel",
        );
        let frame = client.frame(&hello);
        client_sock
            .send_to(
                &frame[42..],
                format!("{}:{}", lab::OUTSIDE_IP, lab::VPN_PORT),
            )
            .unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = host_sock
            .recv_from(&mut buf)
            .expect("the SNATed datagram reached the host");
        assert_eq!(&buf[..n], b"hello from the tunnel");
        let SocketAddr::V4(from) = from else {
            panic!("{from}")
        };
        assert_eq!(
            *from.ip(),
            lab::INSIDE_IP.parse::<Ipv4Addr>().unwrap(),
            "source NATed to the ENI"
        );
        println!("  client datagram reached the host from {from}");

        // The host answers; the client's kernel gets it encrypted, and it opens.
        host_sock
            .send_to(b"hello back", SocketAddr::V4(from))
            .unwrap();
        let (n, _) = client_sock
            .recv_from(&mut buf)
            .expect("the encrypted reply reached the client");
        let outer = testkit::eth_ipv4(
            lab::CLIENT_MAC,
            lab::OUTSIDE_MAC,
            &testkit::ipv4_udp(
                ip(lab::OUTSIDE_IP),
                lab::VPN_PORT,
                ip(lab::CLIENT_OUTER_IP),
                lab::CLIENT_PORT,
                &buf[..n],
            ),
        );
        let inner = client
            .open(&outer)
            .expect("the reply opens with the client's key");
        let p = Ipv4Packet::new_checked(&inner[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.src(), ip(lab::HOST_IP).to_be_bytes());
        assert_eq!(p.dst(), ip(lab::CLIENT_VIP).to_be_bytes());
        let u = UdpPacket::new_checked(p.payload()).unwrap();
        assert_eq!((u.src_port(), u.dst_port()), (7777, 40_000));
        assert!(
            u.verify_checksum(p.src(), p.dst()),
            "the reverse-translated UDP checksum is right"
        );
        assert_eq!(u.payload(), b"hello back");
        println!("  host reply reached the client encrypted, and opened");
    }));
    stop.store(true, Ordering::Relaxed);
    let w = worker.join().unwrap();
    let drops: Vec<_> = w.drops().iter().filter(|(_, n)| *n > 0).collect();
    println!("  engine drops: {drops:?}");
    let stats: Vec<_> = devs.iter().map(|d| d.stats().expect("stats")).collect();
    println!("  port stats: {stats:?}");
    drop(w);
    drop(devs);
    drop(eal);
    if let Err(e) = run {
        std::panic::resume_unwind(e);
    }
    assert_eq!(w_drops_of(&drops, DropReason::NotAuthorized), 0);
    println!("dpdk_af_packet: ok");
}

fn w_drops_of(drops: &[(&'static str, u64)], r: DropReason) -> u64 {
    drops
        .iter()
        .find(|(n, _)| *n == r.name())
        .map_or(0, |(_, c)| *c)
}
