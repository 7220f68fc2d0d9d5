//! Zero heap allocations per packet in steady state, proven with a counting global allocator:
//! after warm-up (flows created, neighbours known), thousands of packets in both directions
//! through `poll_once` allocate nothing.

// A test harness: it unwraps freely and stands in for the worker shell's clock.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use sluice_engine::crypto::Cipher;
use sluice_engine::mailbox::{Command, Mailbox};
use sluice_engine::packet::BURST_SIZE;
use sluice_engine::port::{BufPool, ReplayPort};
use sluice_engine::rules::GroupMask;
use sluice_engine::testkit::{self, ip, lab, Client};
use sluice_engine::wire::ipv4::Ipv4Packet;
use sluice_engine::wire::openvpn::{KeyId, PeerId};
use sluice_engine::wire::udp::UdpPacket;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_allocates_nothing() {
    let now = Instant::now();
    let mb = Mailbox::new(1024);
    let pool = BufPool::new(2048);
    let mut outside = ReplayPort::new(Vec::new(), pool.clone());
    outside.keep_sent = None;
    let mut inside = ReplayPort::new(Vec::new(), pool.clone());
    inside.keep_sent = Some(Vec::new());
    let mut w = testkit::lab_worker(
        vec![outside, inside],
        testkit::lab_config(4096, 16),
        mb.clone(),
        now,
    );
    let (server, client_keys) = testkit::key_pair(Cipher::Aes256Gcm, 9);
    let peer = PeerId(1);
    let info = testkit::lab_session(peer, ip(lab::CLIENT_VIP), GroupMask::EMPTY);
    mb.commands
        .push(Command::AddSession {
            info,
            key_id: KeyId(0),
            keys: Box::new(server.clone()),
        })
        .unwrap();
    w.poll_once(now);

    // 2048 packets over 50 flows, sealed once by the client.
    let mut client = Client::new(peer, KeyId(0), &client_keys);
    let frames: Vec<Vec<u8>> = (0..2048u16)
        .map(|i| {
            client.frame(&testkit::ipv4_udp(
                ip(lab::CLIENT_VIP),
                20_000 + i % 50,
                ip(lab::HOST_IP),
                7,
                &[0xab; 512],
            ))
        })
        .collect();

    // Warm-up pass: flows are created, the inside port learns where replies go.
    w.port_mut(0).unwrap().set_templates(frames.clone());
    for _ in 0..(2048 / BURST_SIZE) {
        w.poll_once(now);
    }
    let sent = w.port_mut(1).unwrap().keep_sent.take().unwrap();
    assert_eq!(sent.len(), 2048, "warm-up forwarded everything");
    // Replies from the host to each translated port.
    let replies: Vec<Vec<u8>> = sent
        .iter()
        .take(50)
        .map(|f| {
            let p = Ipv4Packet::new_checked(&f[14..]).unwrap();
            let nat = UdpPacket::new_checked(p.payload()).unwrap().src_port();
            testkit::eth_ipv4(
                lab::INSIDE_MAC,
                lab::HOST_MAC,
                &testkit::ipv4_udp(ip(lab::HOST_IP), 7, ip(lab::INSIDE_IP), nat, &[0xcd; 512]),
            )
        })
        .collect();
    w.port_mut(1).unwrap().set_templates(replies);
    // A fresh key (same material) gives a fresh replay window, so the same frames replay.
    w.port_mut(0).unwrap().set_templates(Vec::new());
    mb.commands
        .push(Command::InstallKey {
            peer,
            key_id: KeyId(0),
            keys: Box::new(server),
        })
        .unwrap();
    w.poll_once(now);
    w.port_mut(0).unwrap().set_templates(frames);
    let before_out = w.port_mut(0).unwrap().sent;
    let before_in = w.port_mut(1).unwrap().sent;

    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    // 1920 frames each way, less than the 2048 the key's fresh replay window accepts again.
    for _ in 0..(1920 / BURST_SIZE) {
        w.poll_once(now);
    }
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);

    let to_network = w.port_mut(1).unwrap().sent - before_in;
    let to_client = w.port_mut(0).unwrap().sent - before_out;
    assert!(
        to_network >= 1900 && to_client >= 1900,
        "both directions ran: {to_network} / {to_client}"
    );
    assert_eq!(
        w.drops().total(),
        0,
        "{:?}",
        w.drops().iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>()
    );
    assert_eq!(
        allocations,
        0,
        "heap allocations in steady state over {} packets",
        to_network + to_client
    );
}
