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
        Error::InvalidCertificate(c) => TlsFailure::BadCertificate(format!("{c:?}")),
        Error::NoCertificatesPresented => {
            TlsFailure::BadCertificate("no client certificate presented".into())
        }
        other => TlsFailure::Protocol(other.to_string()),
    }
}

const CRL_EXPIRED: &str = "certificate revocation list expired at";

/// Refuses every client certificate once the CRL's nextUpdate has passed, then defers to
/// webpki (chain, validity, revocation).
#[derive(Debug)]
struct CrlGuard {
    inner: Arc<dyn ClientCertVerifier>,
    next_update: Option<(UnixTime, String)>,
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
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
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
    let verifier: Arc<dyn ClientCertVerifier> = match files.client_ca_pem {
        None => WebPkiClientVerifier::no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                roots
                    .add(c.map_err(|e| format!("client CA: {e}"))?)
                    .map_err(|e| format!("client CA: {e}"))?;
            }
            let mut crls = Vec::new();
            let mut next_update = None;
            if let Some(pem) = files.crl_pem {
                for c in CertificateRevocationListDer::pem_slice_iter(pem) {
                    let der = c.map_err(|e| format!("CRL: {e}"))?;
                    if let Ok((_, parsed)) = x509_parser::parse_x509_crl(der.as_ref()) {
                        if let Some(n) = parsed.next_update() {
                            let secs = u64::try_from(n.timestamp()).unwrap_or(0);
                            next_update = Some((
                                UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
                                n.to_string(),
                            ));
                        }
                    }
                    crls.push(der);
                }
            }
            let inner =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .with_crls(crls)
                    .build()
                    .map_err(|e| format!("client verifier: {e}"))?;
            Arc::new(CrlGuard { inner, next_update })
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
    Ok(ServerTls {
        config: Arc::new(config),
        verifier,
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
        let verifier = &tls.verifier;
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

    #[test]
    fn the_common_name_is_the_last_cn_of_the_subject() {
        let der = CertificateDer::from_pem_slice(TWO_CNS.as_bytes()).unwrap();
        assert_eq!(common_name(der.as_ref()).as_deref(), Some("second.example"));
        assert_eq!(common_name(b"not a certificate"), None);
    }
}
