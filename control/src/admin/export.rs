//! The OpenVPN client configuration an endpoint exports, in the form AWS Client VPN exports it,
//! accepted as is by the OpenVPN 2.6 client.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::schema::Endpoint;
use crate::config::types::Transport;

/// Client certificate and key to embed inline (PEM text).
pub struct ClientIdentity {
    /// The client certificate, PEM.
    pub certificate: String,
    /// Its private key, PEM.
    pub key: String,
}

/// Builds the `.ovpn` text for `ep`; `ca_pem` is the CA that issued the server certificate.
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
        "client\ndev tun\nproto {proto}\nremote {} {}\nremote-random-hostname\nresolv-retry infinite\n\
         nobind\nremote-cert-tls server\ncipher AES-256-GCM\nverb 3\n",
        ep.dns_name,
        ep.vpn_port.get()
    );
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

/// The CA certificate(s) to embed: the server chain's issuer, i.e. the chain's certificates
/// after the leaf when present, else the client root CA (easy-rsa issues both from one CA).
pub fn ca_for(ep: &Endpoint, base: &Path) -> Result<String, String> {
    use crate::config::pki::resolve;
    let chain_path = resolve(base, &ep.server_certificate);
    let chain = std::fs::read_to_string(&chain_path)
        .map_err(|e| format!("reading {}: {e}", chain_path.display()))?;
    let blocks: Vec<&str> = chain.split_inclusive("-----END CERTIFICATE-----").collect();
    let issuers: String = blocks
        .iter()
        .skip(1)
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .copied()
        .collect();
    if !issuers.trim().is_empty() {
        return Ok(pem_only(&issuers));
    }
    match &ep.authentication.mutual {
        Some(m) => {
            let p = resolve(base, &m.client_root_ca);
            std::fs::read_to_string(&p)
                .map(|t| pem_only(&t))
                .map_err(|e| format!("reading {}: {e}", p.display()))
        }
        None => Err(format!(
            "the server certificate {} holds no issuer certificate to embed as <ca>; append the \
             CA to it (leaf first, then the chain)",
            chain_path.display()
        )),
    }
}
