//! `Dataplane::shutdown` on a data plane started in this process: DPDK on `net_pcap` (the
//! outside port, whose transmissions the test reads back) and `net_null` (inside), one worker
//! core, control-channel sessions made by `proto::client`. The EAL starts once per process:
//! this is the only test of the library that starts it.

// A test: it unwraps freely and waits on real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice_engine::mailbox::{Command, Report};
use sluice_engine::session::Remote;
use sluice_engine::wire::openvpn::PeerId;

use super::Dataplane;
use crate::proto::client::Client;
use crate::proto::packet::{opcode, ControlPacket};
use crate::proto::server::STOP_LINGER;

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VPN_PORT: u16 = 1194;

fn remote(ip: Ipv4Addr, port: u16) -> Remote {
    Remote {
        ip: u32::from(ip),
        port,
    }
}

fn config_text(d: &Path) -> String {
    let (p, d) = (d.join("pki"), d.display());
    let p = p.display();
    format!(
        r#"
[appliance]
admin_socket = "{d}/admin.sock"
state_dir = "{d}/state"
metrics_address = ""

[dataplane]
eal_args = ["--no-pci", "--no-huge", "--no-shconf", "--no-telemetry", "-m", "512", "-l", "0-1",
            "--log-level=lib.eal:error", "--log-level=pmd.*:error"]
outside = "outside"

[[dataplane.port]]
name = "outside"
device = "net_pcap0,rx_pcap={d}/in.pcap,tx_pcap={d}/out.pcap"
ip = "192.0.2.1/24"

[[dataplane.port]]
name = "inside"
device = "net_null0,no-rx=1"
ip = "172.31.1.5/24"

[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef0"
client_cidr_block = "10.200.0.0/20"
server_certificate = "{p}/server.crt"
server_key = "{p}/server.key"
vpn_port = {VPN_PORT}
dns_name = "192.0.2.1"
split_tunnel = true
connection_log = {{ enabled = true, path = "{d}/connections.log" }}
authentication = {{ mutual = {{ client_root_ca = "{p}/ca.crt" }} }}

[[endpoint.target_network]]
association_id = "cvpn-assoc-0123456789abcdef1"
subnet_id = "subnet-0a0000000000000a1"
vpc_id = "vpc-0c0000000000000c1"
vpc_cidr = "172.31.0.0/16"
cidr = "172.31.1.0/24"
availability_zone = "lab-1a"
port = "inside"
eni_ip = "172.31.1.5"
gateway = "172.31.1.1"

[[endpoint.authorization_rule]]
destination_cidr = "172.31.0.0/16"
authorize_all_groups = true

[[endpoint.route]]
destination_cidr = "172.31.0.0/16"
target_subnet = "subnet-0a0000000000000a1"
origin = "associate"
"#
    )
}

/// A pcap file (Ethernet) holding `frames`.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    // The version is two u16s (2, 4), little-endian.
    out[4..8].copy_from_slice(&[2, 0, 4, 0]);
    for f in frames {
        for v in [0u32, 0, f.len() as u32, f.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

/// The frames of a pcap file.
fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap();
    let mut at = 24;
    let mut frames = Vec::new();
    while at + 16 <= b.len() {
        let len = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16;
        frames.push(b[at..(at + len).min(b.len())].to_vec());
        at += len;
    }
    frames
}

/// An ARP request from `ip` (MAC `mac`) for the server's address: the core learns the
/// client's MAC from it, as from any ARP to its address.
fn arp_request(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&SERVER.octets());
    f.resize(60, 0);
    f
}

/// The UDP payloads of `frames` (Ethernet, IPv4) sent to `to`.
fn udp_to(frames: &[Vec<u8>], to: Remote) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter_map(|f| {
            let ip = f.get(14..)?;
            if f[12..14] != [0x08, 0x00] || ip[9] != 17 {
                return None;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let dst = u32::from_be_bytes(ip[16..20].try_into().ok()?);
            let udp = ip.get(ihl..)?;
            let port = u16::from_be_bytes([udp[2], udp[3]]);
            (dst == to.ip && port == to.port).then(|| udp[8..].to_vec())
        })
        .collect()
}

fn client_config(pki: &Path) -> Arc<rustls::ClientConfig> {
    let read = |f: &str| std::fs::read(pki.join(f)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("ca.crt")) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read("client1.crt"))
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&read("client1.key")).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap(),
    )
}

/// Runs `client`'s handshake with the endpoint's server, feeding the server as a core would
/// punt (the server's events go to the data plane as `drain` gives them, its datagrams
/// straight back to the client). With `hold`, stops at the client's second flight (its
/// certificate, Finished and key method: message ids from 2), and returns those datagrams
/// unsent; without, runs until the client is connected.
fn handshake(dp: &mut Dataplane, client: &mut Client, from: Remote, hold: bool) -> Vec<Vec<u8>> {
    let local = remote(SERVER, VPN_PORT);
    let start = Instant::now();
    let mut out = Vec::new();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no handshake within 30 s: {:?}",
            client.messages
        );
        if !hold && client.connected() {
            return Vec::new();
        }
        out.clear();
        client.poll(Instant::now(), &mut out).unwrap();
        let last_flight = out.iter().any(|d| {
            ControlPacket::parse(d)
                .is_ok_and(|p| p.opcode == opcode::CONTROL_V1 && p.msg_id.is_some_and(|id| id >= 2))
        });
        if hold && last_flight {
            return out;
        }
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for d in &out {
            dp.servers[0].handle_datagram(Instant::now(), unix, from, local, d);
        }
        while let Some(ev) = dp.servers[0].poll_event() {
            dp.event(0, ev);
        }
        while let Some(t) = dp.servers[0].poll_transmit() {
            if t.remote == from {
                client.handle(&t.payload).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The connection-log lines of `kind` (`connection-attempt`, `connection-reset`).
fn lines_of<'a>(log: &'a str, kind: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(&format!("\"connection-log-type\":\"{kind}\"")))
        .collect()
}

/// At SIGTERM every connection ends with its client told to restart and its last
/// connection-log line, including one whose handshake completes while the shutdown waits for
/// the cores; and no `RESTART` is lost to a full command queue on core 0 (which sends every
/// control datagram) when that core is held up meanwhile (preempted, or behind on its work).
/// The shutdown waits for the clients to acknowledge their `RESTART`s, serving the control
/// channels: one whose first `RESTART` was lost gets it again; and a second stop signal ends
/// the wait at once.
#[test]
fn a_shutdown_ends_every_connection_and_loses_no_restart() {
    sluice_tests::require_root("the in-process data plane (DPDK)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sluice_tests::make_pki(&d.join("pki"));
    let (a, b) = (
        remote(Ipv4Addr::new(192, 0, 2, 10), 40_000),
        remote(Ipv4Addr::new(192, 0, 2, 11), 40_001),
    );
    // Both clients are neighbours the core has heard from.
    write_pcap(
        &d.join("in.pcap"),
        &[
            arp_request([2, 0, 0, 0, 0, 10], Ipv4Addr::from(a.ip)),
            arp_request([2, 0, 0, 0, 0, 11], Ipv4Addr::from(b.ip)),
        ],
    );
    std::fs::write(d.join("sluice.toml"), config_text(d)).unwrap();
    let loaded = crate::config::load(&d.join("sluice.toml")).unwrap();
    let mut dp = Dataplane::start(&loaded).unwrap();
    let tls = client_config(&d.join("pki"));

    // A is connected; B has sent all but its last flight, which a core has just punted.
    let mut client_a = Client::new(Arc::clone(&tls), "server", [0x10; 8], None).unwrap();
    handshake(&mut dp, &mut client_a, a, false);
    let mut client_b = Client::new(Arc::clone(&tls), "server", [0x20; 8], None).unwrap();
    let last_flight = handshake(&mut dp, &mut client_b, b, true);
    assert!(!last_flight.is_empty());
    // Core 0 is held up (a real-time task on its CPU) with its command queue full.
    let mut hog = Process::new("timeout")
        .args(["0.4", "chrt", "-f", "50", "taskset", "-c", "1", "yes"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let commands = Arc::clone(&dp.outbox.mailboxes()[0].commands);
    let filled = Instant::now();
    while !commands.is_full() {
        assert!(
            filled.elapsed() < Duration::from_millis(200),
            "core 0 could not be held up (`chrt -f 50 taskset -c 1 yes` on its CPU)"
        );
        // A no-op: no session has that peer-id.
        let _ = commands.push(Command::RetirePreviousKey {
            peer: PeerId(0x00ff_ffff),
        });
    }
    let reports = &dp.outbox.mailboxes()[0].reports;
    for payload in last_flight {
        reports
            .push(Report::Punted {
                payload,
                remote: b,
                local: remote(SERVER, VPN_PORT),
                endpoint: 0,
            })
            .unwrap();
    }

    // No client acknowledges its RESTART: the shutdown waits, serving retransmissions, until
    // a second stop signal comes, 3.6 s in (before `STOP_LINGER` from the last end). A's first
    // RESTART leaves once core 0 has room again, 0.8 to 1.2 s in as measured, and its
    // retransmission 2 s after that: a signal at 3 s came before it in about one run of ten.
    let stopping = Instant::now();
    let signal_at = Duration::from_millis(3600);
    let second_signal = stopping + signal_at;
    dp.shutdown(|| Instant::now() >= second_signal);
    let took = stopping.elapsed();
    let _ = hog.wait();
    drop(dp);
    assert!(
        took >= signal_at && took < STOP_LINGER,
        "the second signal ends the wait at once: {took:?}"
    );

    // A's client read its RESTART off the wire, the first copy lost: the retransmission sent
    // while the shutdown waited for its acknowledgement.
    let to_a = udp_to(&read_pcap(&d.join("out.pcap")), a);
    let control = |d: &[u8]| ControlPacket::parse(d).is_ok_and(|p| p.opcode == opcode::CONTROL_V1);
    let first = to_a.iter().position(|d| control(d)).unwrap();
    for d in to_a.iter().skip(first + 1) {
        let _ = client_a.handle(d);
    }
    assert!(
        client_a
            .messages
            .iter()
            .any(|m| m == "RESTART,the server is shutting down"),
        "A was not told to restart: {:?}",
        client_a.messages
    );
    // B's connection was made during the shutdown, and ended by it like A's.
    let log = std::fs::read_to_string(d.join("connections.log")).unwrap();
    assert_eq!(lines_of(&log, "connection-attempt").len(), 2, "{log}");
    let resets = lines_of(&log, "connection-reset");
    assert_eq!(resets.len(), 2, "a connection has no last line:\n{log}");
}
