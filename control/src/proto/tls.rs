//! The only file that touches rustls connection types: a server-side TLS session fed with the
//! reassembled control-channel byte stream, and the server configuration of an endpoint (its
//! certificate chain, the client CA with its CRL, TLS 1.2 and 1.3, ring provider).
//!
//! Spec: openvpn-protocol.md §4. No SNI or ALPN is required; no session tickets are sent.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, ServerConnection,
    SignatureScheme,
};

/// Why TLS could not go on, with blame assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// The client certificate is revoked.
    Revoked,
    /// The CRL has expired; every new connection is refused until a new one is imported.
    CrlExpired(String),
    /// The client certificate did not verify (unknown CA, expired, ...).
    BadCertificate(String),
    /// Anything else the peer did wrong.
    Protocol(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Revoked => f.write_str("client certificate revoked"),
            Self::CrlExpired(when) => write!(f, "certificate revocation list expired at {when}"),
            Self::BadCertificate(why) => write!(f, "client certificate verification failed: {why}"),
            Self::Protocol(why) => write!(f, "TLS error: {why}"),
        }
    }
}

fn classify(e: &rustls::Error) -> TlsFailure {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::Revoked) => TlsFailure::Revoked,
        Error::General(msg) if msg.starts_with(CRL_EXPIRED) => {
            TlsFailure::CrlExpired(msg[CRL_EXPIRED.len()..].trim().to_owned())
        }
        Error::InvalidCertificate(c) => TlsFailure::BadCertificate(certificate_problem(c)),
        Error::NoCertificatesPresented => {
            TlsFailure::BadCertificate("no client certificate presented".into())
        }
        other => TlsFailure::Protocol(other.to_string()),
    }
}

/// What is wrong with a client certificate, in plain words for the common cases (the status
/// message of a connection a reload ends, a refusal's detail), else as rustls names it.
fn certificate_problem(c: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match c {
        E::UnknownIssuer => "not issued by a client root CA (unknown issuer)".into(),
        E::Expired | E::ExpiredContext { .. } => "expired".into(),
        E::NotValidYet | E::NotValidYetContext { .. } => "not valid yet".into(),
        other => format!("{other:?}"),
    }
}

const CRL_EXPIRED: &str = "certificate revocation list expired at";

/// Refuses every client certificate once the CRL's nextUpdate has passed, then defers to
/// webpki (chain, validity, revocation).
#[derive(Debug)]
struct CrlGuard {
    inner: Arc<dyn ClientCertVerifier>,
    next_update: NextUpdate,
}

impl ClientCertVerifier for CrlGuard {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some((next, shown)) = &self.next_update {
            if now.as_secs() > next.as_secs() {
                return Err(rustls::Error::General(format!("{CRL_EXPIRED} {shown}")));
            }
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// When a CRL expires, and the time as its refusal shows it.
type NextUpdate = Option<(UnixTime, String)>;

/// The CRLs of a PEM file, and the earliest of their nextUpdate times (with its text for the
/// refusal): a file may hold several (the root CA's and an intermediate's), and once any of
/// them is out of date, revocations it would list may be missing, so the first to expire
/// governs.
fn read_crls(
    pem: &[u8],
) -> Result<(Vec<CertificateRevocationListDer<'static>>, NextUpdate), String> {
    let mut crls = Vec::new();
    let mut next_update: NextUpdate = None;
    for c in CertificateRevocationListDer::pem_slice_iter(pem) {
        let der = c.map_err(|e| format!("CRL: {e}"))?;
        if let Ok((_, parsed)) = x509_parser::parse_x509_crl(der.as_ref()) {
            if let Some(n) = parsed.next_update() {
                let secs = u64::try_from(n.timestamp()).unwrap_or(0);
                if next_update
                    .as_ref()
                    .is_none_or(|(earliest, _)| secs < earliest.as_secs())
                {
                    next_update = Some((
                        UnixTime::since_unix_epoch(Duration::from_secs(secs)),
                        n.to_string(),
                    ));
                }
            }
        }
        crls.push(der);
    }
    Ok((crls, next_update))
}

/// PEM inputs of an endpoint's TLS configuration.
pub struct TlsFiles<'a> {
    /// Server chain, leaf first.
    pub server_chain_pem: &'a [u8],
    /// Server private key.
    pub server_key_pem: &'a [u8],
    /// Client root CA(s), when client certificates are required.
    pub client_ca_pem: Option<&'a [u8]>,
    /// CRL, if any.
    pub crl_pem: Option<&'a [u8]>,
}

/// An endpoint's TLS: the rustls server configuration, and the client-certificate verifier it
/// holds (rustls keeps a configuration's verifier to itself; a handshake begun under a
/// configuration since replaced, a reload with a new CRL, is checked again with the current
/// one's before its client is authorised: `TlsSession::verify_peer_under`).
#[derive(Clone)]
pub struct ServerTls {
    /// The configuration handshakes run under.
    pub config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
    /// The same without the CRL's nextUpdate guard (webpki alone: CA, validity, the CRL's
    /// serials), for the sessions already established (`TlsSession::still_verifies_under`).
    webpki: Arc<dyn ClientCertVerifier>,
    /// The earliest nextUpdate of its CRLs, seconds since the Unix epoch (`crl_next_update`).
    crl_next_update: Option<u64>,
}

impl ServerTls {
    /// When its CRL expires (the earliest nextUpdate of the file's CRLs), in seconds since the
    /// Unix epoch: from then every client certificate is refused until a newer CRL is
    /// imported. `None` without a CRL, or with CRLs that give no nextUpdate.
    #[must_use]
    pub fn crl_next_update(&self) -> Option<u64> {
        self.crl_next_update
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// Whether `cert` is a CA certificate (basicConstraints CA:TRUE); one that does not parse is
/// not.
fn is_ca(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert.as_ref()).is_ok_and(|(_, c)| c.is_ca())
}

/// Builds an endpoint's rustls server configuration.
///
/// # Errors
/// A message saying which input is wrong.
pub fn server_config(files: &TlsFiles<'_>) -> Result<ServerTls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(files.server_chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("server certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(files.server_key_pem)
        .map_err(|e| format!("server key: {e}"))?;
    let mut crl_next_update = None;
    let (verifier, webpki): (Arc<dyn ClientCertVerifier>, _) = match files.client_ca_pem {
        None => {
            let none = WebPkiClientVerifier::no_client_auth();
            (Arc::clone(&none), none)
        }
        Some(ca) => {
            // The CA certificates of the file only: as the guide allows, it may be the server's
            // chain (its leaf issued by the clients' CA), whose leaf must not become an issuer
            // of client certificates (webpki takes any trust anchor as one).
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| format!("client CA: {e}"))?;
                if is_ca(&c) {
                    roots.add(c).map_err(|e| format!("client CA: {e}"))?;
                }
            }
            if roots.is_empty() {
                return Err("client CA: the file holds no CA certificate".into());
            }
            let (crls, next_update) = match files.crl_pem {
                Some(pem) => read_crls(pem)?,
                None => (Vec::new(), None),
            };
            let inner =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .with_crls(crls)
                    .build()
                    .map_err(|e| format!("client verifier: {e}"))?;
            crl_next_update = next_update.as_ref().map(|(t, _)| t.as_secs());
            let webpki = Arc::clone(&inner);
            (Arc::new(CrlGuard { inner, next_update }), webpki)
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(Arc::clone(&verifier))
        .with_single_cert(chain, key)
        .map_err(|e| format!("server certificate and key: {e}"))?;
    // Spec §4.4: 2.6 never resumes; tickets only add control-channel bytes.
    config.send_tls13_tickets = 0;
    // Nor is a TLS 1.2 session id kept to resume: a resumed session takes the client
    // certificate chain of the session it resumes as verified then, with no check of its
    // validity period or of the CRL now.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(ServerTls {
        config: Arc::new(config),
        verifier,
        webpki,
        crl_next_update,
    })
}

/// The subject common name of the certificate `der`: the last CN of the subject when it has
/// several, as OpenVPN takes it (2.6's `extract_x509_field_ssl` walks the name to the last
/// entry of the field), so that a client is known by the same name as under OpenVPN (its
/// connection-log line, its auth-token, the name a renegotiation must keep). `None` without a
/// CN, or when that last one is not a string.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = parsed.subject().iter_common_name().last()?;
    cn.as_str().ok().map(str::to_owned)
}

/// One TLS session (one key_id) on the server side.
pub struct TlsSession {
    conn: ServerConnection,
}

impl TlsSession {
    /// A new session.
    ///
    /// # Errors
    /// rustls refused the configuration (cannot happen for one `server_config` built).
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, TlsFailure> {
        ServerConnection::new(config)
            .map(|conn| Self { conn })
            .map_err(|e| TlsFailure::Protocol(e.to_string()))
    }

    /// Feeds TLS bytes from the peer.
    ///
    /// # Errors
    /// The peer's TLS failed (an alert may then be waiting in `take_outgoing`).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), TlsFailure> {
        while !bytes.is_empty() {
            match self.conn.read_tls(&mut bytes) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(TlsFailure::Protocol(e.to_string())),
            }
            self.conn.process_new_packets().map_err(|e| classify(&e))?;
        }
        Ok(())
    }

    /// Appends TLS bytes to send to `out`.
    pub fn take_outgoing(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// Appends decrypted application bytes to `out`.
    pub fn read_plaintext(&mut self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 4096];
        loop {
            match self.conn.reader().read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Writes one application message (its own TLS record, §4.4).
    ///
    /// # Errors
    /// The session is closed.
    pub fn write_message(&mut self, msg: &[u8]) -> Result<(), TlsFailure> {
        self.conn
            .writer()
            .write_all(msg)
            .map_err(|e| TlsFailure::Protocol(e.to_string()))
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The client certificate's subject common name, if a certificate was presented
    /// (`common_name`).
    pub fn peer_common_name(&self) -> Option<String> {
        common_name(self.conn.peer_certificates()?.first()?.as_ref())
    }

    /// Verifies the client's certificate chain again, with the client verifier of `tls` (CA,
    /// CRL and its expiry) at `unix_now`: for a session whose handshake began under another
    /// configuration, since replaced. No certificate passes only if `tls` asks for none.
    ///
    /// # Errors
    /// The chain does not verify under `tls` (`Revoked` for a certificate its CRL lists).
    pub fn verify_peer_under(&self, tls: &ServerTls, unix_now: u64) -> Result<(), TlsFailure> {
        self.verify_peer_with(&tls.verifier, unix_now)
    }

    /// Whether the client's certificate chain, verified at its handshake, still verifies under
    /// `tls` at `unix_now` (a reload replaced the client CA or the CRL, or the certificate
    /// expired since): webpki's verdict (issuer, validity period, the CRL's serials). Not the
    /// CRL's own nextUpdate: an out-of-date CRL refuses new clients (`verify_peer_under`),
    /// since it may miss revocations, but says nothing against one already verified, so a
    /// reload while it is out of date does not end every connection.
    ///
    /// # Errors
    /// The chain no longer verifies (`Revoked` for a certificate the CRL lists).
    pub fn still_verifies_under(&self, tls: &ServerTls, unix_now: u64) -> Result<(), TlsFailure> {
        self.verify_peer_with(&tls.webpki, unix_now)
    }

    fn verify_peer_with(
        &self,
        verifier: &Arc<dyn ClientCertVerifier>,
        unix_now: u64,
    ) -> Result<(), TlsFailure> {
        let now = UnixTime::since_unix_epoch(Duration::from_secs(unix_now));
        match self.conn.peer_certificates() {
            Some([end_entity, intermediates @ ..]) => verifier
                .verify_client_cert(end_entity, intermediates, now)
                .map(|_| ())
                .map_err(|e| classify(&e)),
            _ if verifier.offer_client_auth() && verifier.client_auth_mandatory() => Err(
                TlsFailure::BadCertificate("no client certificate presented".into()),
            ),
            _ => Ok(()),
        }
    }

    /// The client certificate's serial number (big-endian bytes, as a CRL lists it).
    pub fn peer_serial(&self) -> Option<Vec<u8>> {
        let cert = self.conn.peer_certificates()?.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        Some(parsed.raw_serial().to_vec())
    }

    /// Exports keying material (RFC 5705) with no context, as OpenVPN does (§4.4).
    ///
    /// # Errors
    /// The handshake has not completed.
    pub fn export(&self, label: &[u8], out: &mut [u8]) -> Result<(), TlsFailure> {
        self.conn
            .export_keying_material(out, label, None)
            .map(|_| ())
            .map_err(|e| TlsFailure::Protocol(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate whose subject is `CN=first.example, O=sluice test,
    /// CN=second.example` (made with `openssl req -x509 -subj
    /// "/CN=first.example/O=sluice test/CN=second.example"`).
    const TWO_CNS: &str = "-----BEGIN CERTIFICATE-----
MIIB5DCCAYugAwIBAgIUMsqv/NOANpytyI3OKRwXyDT4MKcwCgYIKoZIzj0EAwIw
RzEWMBQGA1UEAwwNZmlyc3QuZXhhbXBsZTEUMBIGA1UECgwLc2x1aWNlIHRlc3Qx
FzAVBgNVBAMMDnNlY29uZC5leGFtcGxlMCAXDTI2MTIwNTA2MjY1NVoYDzIxMjYx
MTExMDYyNjU1WjBHMRYwFAYDVQQDDA1maXJzdC5leGFtcGxlMRQwEgYDVQQKDAtz
bHVpY2UgdGVzdDEXMBUGA1UEAwwOc2Vjb25kLmV4YW1wbGUwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAATGK/mJToRwYUV6ljVhBh2E8M2KaM6kskOaQ4Ic3OXSdSeh
gKQ8LmT24gncHQ9fvAvdsGQLAiJvyvXuCyWqCD9fo1MwUTAdBgNVHQ4EFgQUWyXl
PIakQnOe2IvBdflOiDH9O9AwHwYDVR0jBBgwFoAUWyXlPIakQnOe2IvBdflOiDH9
O9AwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiAX8Z5kXlVdHLbH
nS+Jr95RAVYpWbWJM960XB7+OhemBQIgUf3PPTjLS85UzjiHAzzqxoEI9Q8rFSbT
G/qXd/Nhc6g=
-----END CERTIFICATE-----
";

    /// Two CRLs, each of its own CA (made with `openssl ca -gencrl -crl_nextupdate`): a root
    /// CA's, next update 2035-01-01, and an intermediate CA's, next update 2030-01-01.
    const ROOT_CRL_2035: &str = "-----BEGIN X509 CRL-----
MIG1MF0CAQEwCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwTc2x1aWNlIHRlc3Qgcm9v
dCBDQRcNMjUwMTAxMDAwMDAwWhcNMzUwMTAxMDAwMDAwWqAOMAwwCgYDVR0UBAMC
AQEwCgYIKoZIzj0EAwIDSAAwRQIgByRNiwfmMzY9cghaqIwYS6vBpZ7k8iEH77xA
V1Z0MKACIQCyiGO/vhUaRV9l5eNT5Hbirq86Fy8aZwR07dpFnF/law==
-----END X509 CRL-----
";
    const INTERMEDIATE_CRL_2030: &str = "-----BEGIN X509 CRL-----
MIG8MGUCAQEwCgYIKoZIzj0EAwIwJjEkMCIGA1UEAwwbc2x1aWNlIHRlc3QgaW50
ZXJtZWRpYXRlIENBFw0yNTAxMDEwMDAwMDBaFw0zMDAxMDEwMDAwMDBaoA4wDDAK
BgNVHRQEAwIBATAKBggqhkjOPQQDAgNHADBEAiBNIvwGxWTwyOje9tNSOACxUQJS
hDWCCvhWZ4XQKBCWiwIgYWt9M8qHiE14bycB44AdUPhpg27GeuT+xWTPrIqF3l0=
-----END X509 CRL-----
";
    /// 2030-01-01 00:00:00 UTC.
    const IN_2030: u64 = 1_893_456_000;

    /// With a root's and an intermediate's CRL in one file, in either order, the earlier
    /// nextUpdate governs: every client certificate is refused once it has passed.
    #[test]
    fn the_earliest_next_update_of_several_crls_governs() {
        for pem in [
            format!("{ROOT_CRL_2035}{INTERMEDIATE_CRL_2030}"),
            format!("{INTERMEDIATE_CRL_2030}{ROOT_CRL_2035}"),
        ] {
            let (crls, next_update) = read_crls(pem.as_bytes()).unwrap();
            assert_eq!(crls.len(), 2);
            let next_update = next_update.unwrap();
            assert_eq!(next_update.0.as_secs(), IN_2030, "{}", next_update.1);
            // Under it, webpki with any root: it refuses the certificate below for itself.
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(TWO_CNS.as_bytes()).unwrap())
                .unwrap();
            let guard = CrlGuard {
                inner: WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(rustls::crypto::ring::default_provider()),
                )
                .build()
                .unwrap(),
                next_update: Some(next_update),
            };
            let anyone = CertificateDer::from(b"not checked".to_vec());
            let at = |secs| UnixTime::since_unix_epoch(Duration::from_secs(secs));
            let late = guard
                .verify_client_cert(&anyone, &[], at(IN_2030 + 1))
                .map(|_| ())
                .map_err(|e| classify(&e));
            assert!(
                matches!(&late, Err(TlsFailure::CrlExpired(when)) if when.contains("2030")),
                "{late:?}"
            );
            let before = guard
                .verify_client_cert(&anyone, &[], at(IN_2030 - 1))
                .map(|_| ())
                .map_err(|e| classify(&e));
            assert!(
                matches!(before, Err(TlsFailure::BadCertificate(_))),
                "{before:?}"
            );
        }
    }

    /// A server session of the lab's `server_tls` whose handshake with a client presenting
    /// `chain` and `key` (PEM files of the lab PKI in `pki`) has completed.
    fn handshaken(pki: &std::path::Path, tls: &ServerTls, chain: &str, key: &str) -> TlsSession {
        let read = |f: &str| std::fs::read(pki.join(f)).unwrap();
        let client_config = sluice_tests::tls_client(&read("ca.crt"), &read(chain), &read(key));
        let mut client =
            rustls::ClientConnection::new(client_config, "server".try_into().unwrap()).unwrap();
        let mut server = TlsSession::new(Arc::clone(&tls.config)).unwrap();
        for _ in 0..10 {
            let mut up = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut up).unwrap();
            }
            server.feed(&up).unwrap();
            let mut down = Vec::new();
            server.take_outgoing(&mut down);
            let mut down = down.as_slice();
            while !down.is_empty() {
                client.read_tls(&mut down).unwrap();
                client.process_new_packets().unwrap();
            }
            if !server.is_handshaking() && !client.is_handshaking() {
                return server;
            }
        }
        panic!("the handshake did not complete");
    }

    /// What verifying every established session again costs a reload (`Server::set_tls`, on
    /// the control thread): a loop over one session's chain (the lab's RSA-2048 CA and client
    /// certificate, with its CRL), the time it took printed per chain and for 100 000
    /// sessions (`--nocapture`; a rough figure of this build, not a benchmark). Also: under
    /// the lab CA's settings a valid certificate still verifies, one the CRL revokes does not.
    #[test]
    #[allow(clippy::disallowed_methods)] // it times its loop
    fn reverify_cost() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        sluice_tests::make_pki(&pki);
        let read = |f: &str| std::fs::read(pki.join(f)).unwrap();
        let (chain, key, ca) = (read("server.crt"), read("server.key"), read("ca.crt"));
        let with_crl = |crl: &str| {
            let crl = read(crl);
            server_config(&TlsFiles {
                server_chain_pem: &chain,
                server_key_pem: &key,
                client_ca_pem: Some(&ca),
                crl_pem: Some(&crl),
            })
            .unwrap()
        };
        let tls = with_crl("crl.pem");
        let session = handshaken(&pki, &tls, "client1.crt", "client1.key");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(session.still_verifies_under(&tls, now), Ok(()));
        assert_eq!(
            session.still_verifies_under(&with_crl("crl-all.pem"), now),
            Err(TlsFailure::Revoked)
        );
        const N: u32 = 2000;
        let start = std::time::Instant::now();
        for _ in 0..N {
            assert_eq!(session.still_verifies_under(&tls, now), Ok(()));
        }
        let each = start.elapsed() / N;
        println!(
            "re-verifying one client chain: {each:?}; 100 000 sessions: {:?}",
            each * 100_000
        );
    }

    #[test]
    fn the_common_name_is_the_last_cn_of_the_subject() {
        let der = CertificateDer::from_pem_slice(TWO_CNS.as_bytes()).unwrap();
        assert_eq!(common_name(der.as_ref()).as_deref(), Some("second.example"));
        assert_eq!(common_name(b"not a certificate"), None);
    }
}
