//! End to end in a namespace lab: the Debian OpenVPN 2.6 server and sluice (`sluice run` on
//! DPDK `net_af_packet` ports) under the same load, with the same cipher (AES-256-GCM),
//! topology (subnet) and route. The load generator completes real handshakes with
//! `control::proto::client` (TLS 1.3, client certificate, key method 2, EKM) from several
//! sessions, then sends data-channel packets sealed with the derived keys as fast as one thread
//! can; a host behind the server counts what arrives. Reported: packets and Gbit/s delivered,
//! and the server's CPU (user + system time of its process over the run).
//!
//! Needs root, `openvpn`, and `target/release/sluice` (`scripts/bench.sh` builds it).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sluice_control::proto::client::Client;
use sluice_control::proto::key_method::server_keys;
use sluice_engine::crypto::{Cipher, DataKey, KeyMaterial};
use sluice_engine::packet::{HeapBuf, PacketBuf};
use sluice_engine::testkit;
use sluice_engine::wire::openvpn::{KeyId, PeerId};
use sluice_tests::Netns;

use crate::report::Record;

const SERVER: &str = "192.168.60.1";
const HOST: &str = "172.31.1.10";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of the whole line are 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// One established session of the load generator.
struct Session {
    socket: UdpSocket,
    key: DataKey,
    peer: PeerId,
    vip: u32,
}

fn client_config(pki: &Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let r = |f: &str| std::fs::read(pki.join(f)).with_context(|| format!("reading {f}"));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&r("ca.crt")?) {
        roots.add(c?)?;
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&r("client1.crt")?).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&r("client1.key")?)?;
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?,
    ))
}

/// Connects one session from `ns` to `server:port` and derives its data-channel key.
fn connect(ns: &Netns, config: &Arc<rustls::ClientConfig>, i: u8, port: u16) -> Result<Session> {
    let socket = ns.bind_udp("192.168.60.2:0");
    let server: SocketAddr = format!("{SERVER}:{port}").parse()?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut sid = [0u8; 8];
    sid[0] = i;
    sid[7] = 0xa5;
    let mut c = Client::new(Arc::clone(config), "server", sid, None)?;
    c.push_request = true;
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !c.connected() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("session {i}: no PUSH_REPLY within 20 s: {:?}", c.messages);
        }
        out.clear();
        c.poll(Instant::now(), &mut out)?;
        for d in &out {
            socket.send(d)?;
        }
        if let Ok(n) = socket.recv(&mut buf) {
            // Data-channel packets (pings) may arrive too; the client only takes control ones.
            if n > 0 && buf[0] >> 3 != 9 {
                c.handle(&buf[..n])?;
            }
        }
    }
    let push = c
        .messages
        .iter()
        .find(|m| m.starts_with("PUSH_REPLY"))
        .cloned()
        .unwrap_or_default();
    let field = |name: &str| {
        push.split(',')
            .find_map(|o| o.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let peer: u32 = field("peer-id ").and_then(|v| v.parse().ok()).unwrap_or(0);
    let vip: std::net::Ipv4Addr = field("ifconfig ")
        .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        .and_then(|v| v.parse().ok())
        .context("no ifconfig in the PUSH_REPLY")?;
    if field("cipher ").as_deref() != Some("AES-256-GCM") {
        bail!("session {i}: the server chose another cipher: {push}");
    }
    let kb = c.key_blocks.first().context("no key block")?.1;
    let s = server_keys(Cipher::Aes256Gcm, &kb);
    let mine = KeyMaterial {
        cipher: Cipher::Aes256Gcm,
        encrypt_key: s.decrypt_key,
        encrypt_iv: s.decrypt_iv,
        decrypt_key: s.encrypt_key,
        decrypt_iv: s.encrypt_iv,
    };
    let key = DataKey::new(KeyId(0), &mine).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(Session {
        socket,
        key,
        peer: PeerId(peer),
        vip: u32::from(vip),
    })
}

/// Calls `round` (one packet from each session; it returns how many were sent) until `secs`
/// seconds have passed, reading the clock every 32 rounds whatever was sent; returns the
/// packets sent.
fn send_for(secs: f64, mut round: impl FnMut() -> Result<u64>) -> Result<u64> {
    let start = Instant::now();
    let mut sent = 0u64;
    for r in 1u64.. {
        sent += round()?;
        if r % 32 == 0 && start.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    Ok(sent)
}

/// Sends for `secs` seconds from every session in turn; the host counts. Returns
/// (packets sent, packets received, bytes received).
fn blast(
    sessions: &mut [Session],
    host: &UdpSocket,
    size: usize,
    secs: f64,
) -> Result<(u64, u64, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (pkts, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let rx = host.try_clone()?;
    rx.set_read_timeout(Some(Duration::from_millis(100)))?;
    let counter = {
        let (stop, pkts, bytes) = (Arc::clone(&stop), Arc::clone(&pkts), Arc::clone(&bytes));
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = rx.recv(&mut buf) {
                    pkts.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let payload = vec![0x5au8; size.saturating_sub(28).max(1)];
    let inner: Vec<Vec<u8>> = sessions
        .iter()
        .map(|s| testkit::ipv4_udp(s.vip, 40_000, testkit::ip(HOST), 9, &payload))
        .collect();
    let mut b = HeapBuf::with_capacity(HeapBuf::DEFAULT_CAPACITY, HeapBuf::DEFAULT_HEADROOM);
    let sent = send_for(secs, || {
        let mut sent = 0;
        for (s, p) in sessions.iter_mut().zip(&inner) {
            b.set(p);
            if s.key.seal(&mut b, s.peer).is_err() {
                bail!("seal failed");
            }
            if s.socket.send(b.data()).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    })?;
    // Let the last packets land.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let _ = counter.join();
    Ok((
        sent,
        pkts.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
    ))
}

struct Lab {
    lg: Netns,
    server: Netns,
    host: Netns,
}

fn lab(tag: &str, dpdk: bool) -> Lab {
    let pid = std::process::id() % 100_000;
    let lg = Netns::new(&format!("b{tag}lg"));
    let server = Netns::new(&format!("b{tag}sv"));
    let host = Netns::new(&format!("b{tag}ho"));
    let (outside, inside) = (format!("so{pid}"), format!("si{pid}"));
    server.veth_to(&outside, &lg, &format!("lo{pid}"), "192.168.60.2/24");
    server.veth_to(&inside, &host, &format!("ho{pid}"), "172.31.1.10/24");
    if !dpdk {
        // The kernel of the OpenVPN server's namespace routes between its tun and the host.
        server.exec_ok(&["ip", "addr", "add", "192.168.60.1/24", "dev", &outside]);
        server.exec_ok(&["ip", "addr", "add", "172.31.1.5/24", "dev", &inside]);
        server.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        host.exec_ok(&["ip", "route", "add", "10.200.0.0/20", "via", "172.31.1.5"]);
    }
    Lab { lg, server, host }
}

fn start_openvpn(l: &Lab, pki: &Path, dir: &Path) -> Result<Proc> {
    let log = dir.join("openvpn.log");
    let p = |f: &str| pki.join(f).to_string_lossy().into_owned();
    let child = l
        .server
        .command(&[
            "openvpn",
            "--mode",
            "server",
            "--tls-server",
            "--dev",
            "tun",
            "--proto",
            "udp",
            "--port",
            "1194",
            "--topology",
            "subnet",
            "--server",
            "10.200.0.0",
            "255.255.240.0",
            "--ca",
            &p("ca.crt"),
            "--cert",
            &p("server.crt"),
            "--key",
            &p("server.key"),
            "--dh",
            "none",
            "--data-ciphers",
            "AES-256-GCM",
            "--push",
            "route 172.31.0.0 255.255.0.0",
            "--duplicate-cn",
            "--keepalive",
            "10",
            "60",
            "--verb",
            "3",
            "--log",
            &log.to_string_lossy(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting openvpn")?;
    let proc_ = Proc(child);
    wait_for("the OpenVPN server", Duration::from_secs(20), || {
        read(&log).contains("Initialization Sequence Completed")
    })?;
    Ok(proc_)
}

fn sluice_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("sluice");
    if !p.exists() {
        bail!("{} is missing: build it with `cargo build --release -p sluice-control` (scripts/bench.sh does)", p.display());
    }
    Ok(p)
}

fn start_sluice(l: &Lab, pki: &Path, dir: &Path) -> Result<Proc> {
    let pid = std::process::id() % 100_000;
    let (p, d) = (pki.display(), dir.display());
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[appliance]
admin_socket = "{d}/admin.sock"
state_dir = "{d}/state"
metrics_address = ""

[dataplane]
eal_args = ["--no-pci", "--no-huge", "--no-shconf", "--no-telemetry", "-m", "1024", "-l", "0-1",
            "--log-level=lib.eal:error", "--log-level=pmd.*:error"]

[[dataplane.port]]
name = "outside"
device = "net_af_packet0,iface=so{pid}"
ip = "192.168.60.1/24"

[[dataplane.port]]
name = "inside"
device = "net_af_packet1,iface=si{pid}"
ip = "172.31.1.5/24"

[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef0"
client_cidr_block = "10.200.0.0/20"
server_certificate = "{p}/server.crt"
server_key = "{p}/server.key"
vpn_port = 1194
dns_name = "192.168.60.1"
split_tunnel = true
authentication = {{ mutual = {{ client_root_ca = "{p}/ca.crt" }} }}

[[endpoint.target_network]]
association_id = "cvpn-assoc-0123456789abcdef1"
subnet_id = "subnet-1"
vpc_id = "vpc-1"
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
target_subnet = "subnet-1"
origin = "associate"
"#
        ),
    )?;
    let log = dir.join("sluice.log");
    let child = l
        .server
        .command(&[
            &sluice_binary()?.to_string_lossy(),
            "run",
            "--config",
            &config.to_string_lossy(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let proc_ = Proc(child);
    wait_for("sluice run", Duration::from_secs(30), || {
        read(&log).contains("data plane up")
    })
    .with_context(|| read(&log))?;
    Ok(proc_)
}

/// Runs both servers with `sessions` sessions for `secs` seconds at `size`-byte inner packets.
pub(crate) fn run(sessions: u8, size: usize, secs: f64) -> Result<Vec<Record>> {
    let pki = crate::handshake::pki()?;
    let config = client_config(&pki)?;
    let mut out = Vec::new();
    for (name, dpdk) in [("openvpn-2.6", false), ("sluice", true)] {
        let dir = tempfile::tempdir()?;
        let l = lab(if dpdk { "s" } else { "o" }, dpdk);
        let server = if dpdk {
            start_sluice(&l, &pki, dir.path())?
        } else {
            start_openvpn(&l, &pki, dir.path())?
        };
        let port = 1194;
        let mut s = Vec::new();
        for i in 0..sessions {
            s.push(
                connect(&l.lg, &config, i + 1, port)
                    .with_context(|| format!("{name}: session {i}"))?,
            );
        }
        let host = l.host.bind_udp(&format!("{HOST}:9"));
        let cpu0 = cpu_seconds(server.0.id());
        let t0 = Instant::now();
        let (sent, got, bytes) = blast(&mut s, &host, size, secs)?;
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(server.0.id()) - cpu0;
        let pps = got as f64 / secs;
        let gbps = (bytes as f64 + 28.0 * got as f64) * 8.0 / secs / 1e9;
        let cores = cpu / wall;
        eprintln!(
            "  lab {name:<12} {sessions} sessions {size:>5} B: {:>8.3} Mpps {gbps:>6.2} Gbit/s delivered ({got} of {sent} sent), server CPU {cores:.2} cores{}",
            pps / 1e6,
            if dpdk { " (a poll-mode worker is always 1 core)" } else { "" }
        );
        out.push(Record {
            suite: "lab".into(),
            case: format!("{name} c2n {sessions} sessions, {cores:.2} cores"),
            size,
            pps,
            gbps,
            ratio_to_ceiling: None,
            ops: got,
            seconds: secs,
            drops: sent.saturating_sub(got),
            proto: None,
        });
        drop(s);
        drop(server);
        drop(l);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A send that fails (a full socket buffer, an ICMP error on the connected socket) does
    /// not keep the sender going: it stops when the time is up. (It read the clock only when
    /// the packets sent were a multiple of 256, which one failed send in a round of 8
    /// sessions put out of reach for good.)
    #[test]
    fn a_failed_send_does_not_keep_the_sender_going() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            let sent = send_for(0.05, || {
                rounds += 1;
                // Eight sessions; the first round's first send fails.
                Ok(if rounds == 1 { 7 } else { 8 })
            });
            let _ = tx.send(sent.ok());
        });
        let sent = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the sender stopped within 10 s of its 50 ms");
        assert!(sent.is_some_and(|n| n % 8 == 7), "{sent:?}");
    }
}
