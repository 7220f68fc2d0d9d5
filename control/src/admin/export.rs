//! The OpenVPN client configuration an endpoint exports, in the form AWS Client VPN exports it,
//! accepted as is by the OpenVPN 2.6 client.

use std::fmt::Write as _;
use std::path::Path;

use super::AdminError;
use crate::config::files::{read_regular_text, PKI_LIMIT};
use crate::config::schema::Endpoint;
use crate::config::types::Transport;

/// Client certificate and key to embed inline (PEM text).
pub struct ClientIdentity {
    /// The client certificate, PEM.
    pub certificate: String,
    /// Its private key, PEM.
    pub key: String,
}

/// Builds the `.ovpn` text for `ep`; `ca_pem` holds the CA certificates the client verifies the
/// server with, up to a self-signed root (see `ca_for`).
pub fn client_configuration(
    ep: &Endpoint,
    ca_pem: &str,
    identity: Option<&ClientIdentity>,
) -> String {
    let mut s = String::new();
    let proto = match ep.transport_protocol {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    };
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "client\ndev tun\nproto {proto}\nremote {} {}\n",
        ep.dns_name,
        ep.vpn_port.get()
    );
    // The client puts a random label before the name (as AWS's endpoints, which answer every
    // name under theirs). Before an address it cannot: the 2.6 client ignores the option for
    // one, with a warning at every connection.
    if ep.dns_name.parse::<std::net::Ipv4Addr>().is_err() {
        s.push_str("remote-random-hostname\n");
    }
    s.push_str("resolv-retry infinite\nnobind\n");
    // A client that quits says so (by default a 2.6 client does not): the appliance then ends
    // the connection at once, its address and place under the limit free and its log line's
    // end time right, instead of waiting out ping-restart. (UDP only: over TCP the closed
    // connection says it, and 2.6 ignores the option there with a notice.)
    if ep.transport_protocol == Transport::Udp {
        s.push_str("explicit-exit-notify\n");
    }
    s.push_str("remote-cert-tls server\ncipher AES-256-GCM\nverb 3\n");
    let _ = write!(s, "<ca>\n{}\n</ca>\n", pem_only(ca_pem).trim_end());
    s.push_str("\nreneg-sec 0\n");
    if ep.authentication.directory.is_some() {
        s.push_str("auth-user-pass\n");
        if ep.authentication.mfa.is_some() {
            s.push_str("static-challenge \"Enter MFA code \" 1\n");
        }
    }
    if let Some(id) = identity {
        let _ = write!(
            s,
            "\n<cert>\n{}\n</cert>\n\n<key>\n{}\n</key>\n",
            pem_only(&id.certificate).trim_end(),
            id.key.trim_end()
        );
    }
    s
}

/// `text`'s certificates and its private key, each written again as PEM from its DER (as
/// `ClientIdentity` embeds them): a file with anything else inside or between its blocks (a
/// `</key>` line, directives) cannot carry it into the client's configuration, and a file
/// that is not a certificate or a key is refused, naming which.
///
/// # Errors
/// No certificate in `certificate`, or no private key in `key`.
pub fn identity_from_pem(certificate: &str, key: &str) -> Result<ClientIdentity, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(certificate.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the client certificate is not PEM: {e:?}"))?;
    if certs.is_empty() {
        return Err("the client certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| format!("the client key file holds no private key: {e:?}"))?;
    let label = match &key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    Ok(ClientIdentity {
        certificate: certs.iter().map(|c| pem_block("CERTIFICATE", c)).collect(),
        key: pem_block(label, key.secret_der()),
    })
}

/// `der` as a PEM block labelled `label`, 64 base64 characters a line.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The PEM blocks of `text`, without easy-rsa's leading text dump.
pub fn pem_only(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN") {
            inside = true;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
        if line.starts_with("-----END") {
            inside = false;
        }
    }
    out
}

/// One certificate of a PEM file: its PEM text and what links it to its issuer.
struct Certificate {
    pem: String,
    der: Vec<u8>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    /// The subjectKeyIdentifier, when present.
    key_id: Option<Vec<u8>>,
    /// The authorityKeyIdentifier's key identifier, when present.
    issuer_key_id: Option<Vec<u8>>,
    /// A readable subject, for messages.
    name: String,
}

impl Certificate {
    /// Whether `self` issued `child`: its subject is the child's issuer and, where both carry
    /// key identifiers, they agree. (Signatures are not checked: the client does that.)
    fn issued(&self, child: &Self) -> bool {
        self.subject == child.issuer
            && match (&self.key_id, &child.issuer_key_id) {
                (Some(k), Some(a)) => k == a,
                _ => true,
            }
    }

    /// A self-signed certificate: a root the client can end its chain with.
    fn is_root(&self) -> bool {
        self.issued(self)
    }
}

/// Every certificate in `text` (PEM; text outside the blocks is ignored), in order.
fn certificates(text: &str, path: &Path) -> Result<Vec<Certificate>, String> {
    use x509_parser::extensions::ParsedExtension;
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if line == "-----BEGIN CERTIFICATE-----" {
            block = Some(String::new());
        }
        let Some(b) = block.as_mut() else {
            continue;
        };
        b.push_str(line);
        b.push('\n');
        if line != "-----END CERTIFICATE-----" {
            continue;
        }
        let pem = block.take().unwrap_or_default();
        let bad = |e: String| {
            format!(
                "{} holds a certificate that does not parse: {e}",
                path.display()
            )
        };
        let (_, parsed) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let cert = parsed.parse_x509().map_err(|e| bad(e.to_string()))?;
        let mut key_id = None;
        let mut issuer_key_id = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => key_id = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    issuer_key_id = a.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                _ => {}
            }
        }
        let c = Certificate {
            der: parsed.contents.clone(),
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            name: cert.subject().to_string(),
            key_id,
            issuer_key_id,
            pem,
        };
        out.push(c);
    }
    Ok(out)
}

fn read_certificates(path: &Path, what: &str) -> Result<Vec<Certificate>, AdminError> {
    let text = read_regular_text(path, PKI_LIMIT)
        .map_err(|e| AdminError::Io(format!("reading {what} {}: {e}", path.display())))?;
    certificates(&text, path).map_err(|m| AdminError::request("InvalidParameterValue", m))
}

/// The CA certificates to embed as `<ca>`, with which the client verifies the server: the
/// server chain's certificates after the leaf, ending with the self-signed root. A chain file
/// without its root (the usual leaf and intermediates) is completed from the client root CA
/// file (easy-rsa issues both from one CA), by subject and key identifier; OpenVPN's OpenSSL
/// accepts only a chain that reaches a self-signed root it trusts.
///
/// # Errors
/// A file cannot be read or parsed, or no root is found: then the message asks for it.
pub fn ca_for(ep: &Endpoint, base: &Path) -> Result<String, AdminError> {
    use crate::config::pki::resolve;
    let chain_path = resolve(base, &ep.server_certificate);
    let chain = read_certificates(&chain_path, "the server certificate")?;
    let Some(leaf) = chain.first() else {
        return Err(AdminError::request(
            "InvalidParameterValue",
            format!("{} holds no PEM CERTIFICATE block", chain_path.display()),
        ));
    };
    let mut ca: Vec<&Certificate> = chain.iter().skip(1).collect();
    let top = ca.last().copied().unwrap_or(leaf);
    if top.is_root() {
        if ca.is_empty() {
            ca.push(leaf);
        }
        return Ok(ca.iter().map(|c| c.pem.as_str()).collect());
    }
    let configured = match &ep.authentication.mutual {
        Some(m) => read_certificates(&resolve(base, &m.client_root_ca), "the client root CA")?,
        None => Vec::new(),
    };
    // Climb from the chain's last certificate through the configured CAs to a root; each step
    // adds a certificate not yet taken, so this ends.
    let mut top = top;
    loop {
        let Some(next) = configured
            .iter()
            .find(|c| c.issued(top) && !ca.iter().any(|t| t.der == c.der))
        else {
            let root_ca = match &ep.authentication.mutual {
                Some(m) => format!(
                    "the client root CA {}",
                    resolve(base, &m.client_root_ca).display()
                ),
                None => "a client root CA (the endpoint has none)".to_owned(),
            };
            return Err(AdminError::request(
                "IncorrectState",
                format!(
                    "cannot export a configuration whose clients can verify the server: the \
                     chain {} does not end in a self-signed root CA, and neither it nor {root_ca} \
                     holds the CA that issued `{}`; append the root CA certificate to {} (the \
                     leaf first, then the intermediate CAs, then the root)",
                    chain_path.display(),
                    top.name,
                    chain_path.display()
                ),
            ));
        };
        ca.push(next);
        if next.is_root() {
            return Ok(ca.iter().map(|c| c.pem.as_str()).collect());
        }
        top = next;
    }
}
