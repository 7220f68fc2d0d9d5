//! Full control-channel handshakes against the sans-IO server, in process: clients built on
//! `control::proto::client` (TLS 1.3, key method 2, EKM) connect over a perfect link. The
//! server's share of the time is measured around its calls only, so the figure is what the
//! control thread of an appliance spends per handshake (the clients' work is excluded).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice_control::proto::client::Client;
use sluice_control::proto::server::{CertificateOnly, Event, Server, Settings};
use sluice_control::proto::tls::{server_config, TlsFiles};
use sluice_control::proto::Remote;

use crate::report::Record;

pub(crate) fn pki() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-pki");
    if !dir.join("server-p256.crt").exists() {
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gen-pki.sh"))
            .arg(&dir)
            .output()
            .context("running scripts/gen-pki.sh (needs easy-rsa)")?;
        if !out.status.success() {
            bail!("gen-pki.sh: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(dir)
}

fn read(dir: &Path, f: &str) -> Result<Vec<u8>> {
    std::fs::read(dir.join(f)).with_context(|| format!("reading {f}"))
}

fn client_config(dir: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read(dir, "ca.crt")?) {
        roots.add(c?)?;
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(dir, "client1.crt")?).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&read(dir, "client1.key")?)?;
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?,
    ))
}

/// Connects `n` clients; returns (server seconds, wall seconds) and the server.
fn connect(dir: &Path, cert: &str, n: usize) -> Result<(f64, f64, Server<CertificateOnly>)> {
    let tls = server_config(&TlsFiles {
        server_chain_pem: &read(dir, &format!("{cert}.crt"))?,
        server_key_pem: &read(dir, &format!("{cert}.key"))?,
        client_ca_pem: Some(&read(dir, "ca.crt")?),
        crl_pem: Some(&read(dir, "crl.pem")?),
    })
    .map_err(anyhow::Error::msg)?;
    let mut settings = Settings::new(0, tls, ("10.64.0.0".parse()?, 12));
    settings.max_handshaking = n + 1;
    settings.max_sessions = n + 1;
    let mut server = Server::new(settings, CertificateOnly);
    let config = client_config(dir)?;
    let name = if cert == "server" { "server" } else { cert };
    let local = Remote {
        ip: 0xc0a8_3201,
        port: 443,
    };
    let mut clients: HashMap<Remote, Client> = HashMap::with_capacity(n);
    for i in 0..n {
        let mut sid = [0u8; 8];
        sid[..4].copy_from_slice(&(i as u32).to_be_bytes());
        sid[4] = 0x5a;
        let remote = Remote {
            ip: 0x0a00_0000 + i as u32,
            port: 40_000,
        };
        clients.insert(remote, Client::new(Arc::clone(&config), name, sid, None)?);
    }
    let start = Instant::now();
    let mut server_time = Duration::ZERO;
    let mut connected = 0usize;
    let mut now = start;
    let mut out = Vec::new();
    while connected < n {
        if start.elapsed() > Duration::from_secs(600) {
            bail!("{connected} of {n} handshakes completed in 10 minutes");
        }
        now += Duration::from_millis(1);
        for (remote, c) in &mut clients {
            out.clear();
            c.poll(now, &mut out)?;
            for d in &out {
                let t = Instant::now();
                server.handle_datagram(now, 1_800_000_000, *remote, local, d);
                server_time += t.elapsed();
            }
        }
        let t = Instant::now();
        server.handle_timeout(now);
        let mut replies = Vec::new();
        while let Some(tx) = server.poll_transmit() {
            replies.push(tx);
        }
        while let Some(e) = server.poll_event() {
            match e {
                Event::KeysReady { .. } => connected += 1,
                Event::AuthFailed { detail, .. } => bail!("refused: {detail}"),
                _ => {}
            }
        }
        server_time += t.elapsed();
        for tx in replies {
            if let Some(c) = clients.get_mut(&tx.remote) {
                c.handle(&tx.payload)?;
            }
        }
    }
    Ok((
        server_time.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        server,
    ))
}

/// What the control thread spends on the server's timers in one turn of its loop (which
/// comes back every millisecond): asking when the next timer is due, twice as the runtime
/// does, and running them when due; with `server`'s sessions established and quiet (from
/// `start` on, after what fell due before it has run).
fn timer_turn(server: &mut Server<CertificateOnly>, start: Instant) -> Duration {
    const TURNS: u32 = 2000;
    // What fell due while the clients were connecting (the last acknowledgements) first.
    server.handle_timeout(start);
    while server.poll_transmit().is_some() {}
    while server.poll_event().is_some() {}
    let mut now = start;
    let t = Instant::now();
    for _ in 0..TURNS {
        now += Duration::from_millis(1);
        if server.poll_timeout().is_some_and(|d| d <= now) {
            server.handle_timeout(now);
        }
        std::hint::black_box(server.poll_timeout());
        while server.poll_transmit().is_some() {}
        while server.poll_event().is_some() {}
    }
    t.elapsed() / TURNS
}

/// Handshakes per second of the server's time with RSA-2048 and ECDSA P-256 certificates
/// (`n` clients each), and the time for `reconnect` sessions to reconnect at once.
pub(crate) fn run(n: usize, reconnect: usize) -> Result<Vec<Record>> {
    let dir = pki()?;
    let mut out = Vec::new();
    for (label, cert) in [("rsa-2048", "server"), ("ecdsa-p256", "server-p256")] {
        let (server_s, wall_s, _) = connect(&dir, cert, n)?;
        let rate = n as f64 / server_s;
        eprintln!(
            "  control handshakes tls1.3 {label:<10} {n} clients: {rate:>8.0}/s of server time ({wall_s:.1} s wall with the clients in the same thread)"
        );
        out.push(Record {
            suite: "control".into(),
            case: format!("handshakes/s tls1.3 {label}"),
            size: 0,
            pps: rate,
            gbps: 0.0,
            ratio_to_ceiling: None,
            ops: n as u64,
            seconds: server_s,
            drops: 0,
            proto: None,
        });
    }
    let (server_s, wall_s, mut server) = connect(&dir, "server-p256", reconnect)?;
    eprintln!(
        "  control {reconnect} sessions reconnecting at once (ecdsa-p256): {server_s:.2} s of server time ({wall_s:.1} s wall with the clients)"
    );
    // Quiet from a minute on (the handshakes' last acknowledgements settled).
    let turn = timer_turn(&mut server, Instant::now() + Duration::from_secs(60));
    eprintln!(
        "  control timers with {reconnect} sessions established: {:.0} ns per turn of the loop (every millisecond)",
        turn.as_secs_f64() * 1e9
    );
    out.push(Record {
        suite: "control".into(),
        case: format!("timer turn with {reconnect} sessions (turns/s)"),
        size: 0,
        pps: 1.0 / turn.as_secs_f64().max(1e-12),
        gbps: 0.0,
        ratio_to_ceiling: None,
        ops: 2000,
        seconds: turn.as_secs_f64() * 2000.0,
        drops: 0,
        proto: None,
    });
    out.push(Record {
        suite: "control".into(),
        case: format!("{reconnect} sessions reconnect (server s)"),
        size: 0,
        pps: reconnect as f64 / server_s,
        gbps: 0.0,
        ratio_to_ceiling: None,
        ops: reconnect as u64,
        seconds: server_s,
        drops: 0,
        proto: None,
    });
    Ok(out)
}
