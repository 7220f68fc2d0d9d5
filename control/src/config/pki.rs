//! Checks of the files an endpoint names: the server certificate and key, the client root CA,
//! the CRL and the users file. Each must exist and parse; the server certificate must carry
//! extendedKeyUsage serverAuth (the client's `remote-cert-tls server` insists) and a key that
//! sluice accepts: RSA 2048 to 4096 bits, or ECDSA P-256 / P-384.

use std::path::{Path, PathBuf};

use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384};
use x509_parser::pem::Pem;
use x509_parser::public_key::PublicKey;

use super::error::FieldPath;
use super::files::{CRL_LIMIT, PKI_LIMIT};
use super::schema::Config;
use super::validate::Finding;

/// Resolves a path from the configuration against the directory of the configuration file.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Checks every file every endpoint names; `base` is the configuration file's directory.
pub fn check_files(config: &Config, base: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    for (e, ep) in config.endpoints.iter().enumerate() {
        let found = out.len();
        let p = FieldPath::root().key("endpoint").index(e);
        let cert = check_server_certificate(&resolve(base, &ep.server_certificate));
        let cert_spki = match cert {
            Ok(spki) => Some(spki),
            Err(m) => {
                out.push((p.key("server_certificate"), m));
                None
            }
        };
        if let Err(m) = check_server_key(&resolve(base, &ep.server_key), cert_spki.as_deref()) {
            out.push((p.key("server_key"), m));
        }
        let mut ca_subjects = Vec::new();
        if let Some(m) = &ep.authentication.mutual {
            match check_ca(&resolve(base, &m.client_root_ca)) {
                Ok(s) => ca_subjects = s,
                Err(msg) => out.push((
                    p.key("authentication").key("mutual").key("client_root_ca"),
                    msg,
                )),
            }
        }
        if let Some(d) = &ep.authentication.directory {
            let f = resolve(base, &d.users_file);
            match crate::auth::directory::UsersFileDirectory::load(&f) {
                Err(e) => out.push((
                    p.key("authentication").key("directory").key("users_file"),
                    format!("users file {e}"),
                )),
                Ok(dir) if ep.authentication.mfa.is_some() => {
                    if dir.names().count() == 0 {
                        out.push((
                            p.key("authentication").key("directory").key("users_file"),
                            format!("users file {} has no users", f.display()),
                        ));
                    }
                }
                Ok(_) => {}
            }
        }
        if let Some(crl) = &ep.crl {
            if let Err(m) = check_crl(&resolve(base, crl), &ca_subjects) {
                out.push((p.key("crl"), m));
            }
        }
        // Each file passed: the TLS layer must take them together too.
        if out.len() == found {
            if let Err(m) = check_tls_loads(ep, base, None) {
                let field = if ep.crl.is_some() && m.contains("CRL") {
                    "crl"
                } else {
                    "server_certificate"
                };
                out.push((p.key(field), m));
            }
        }
    }
    out
}

/// Builds `ep`'s TLS configuration from its files (`crl_pem` in place of its CRL file, when
/// given) as the daemon does at its start and at every reload (`proto::tls::server_config`).
/// The checks of each file parse it with x509-parser, and the TLS layer with webpki, which
/// refuses some of what x509-parser reads (a CRL whose two signature algorithm fields differ):
/// such a file is refused here, where a verb or a reload can say so, not by the daemon after a
/// verb wrote it.
///
/// # Errors
/// What the TLS layer says, naming the endpoint's file it refused.
pub fn check_tls_loads(
    ep: &super::schema::Endpoint,
    base: &Path,
    crl_pem: Option<&[u8]>,
) -> Result<(), String> {
    let chain = read(
        &resolve(base, &ep.server_certificate),
        "server certificate",
        PKI_LIMIT,
    )?;
    let key = read(&resolve(base, &ep.server_key), "server key", PKI_LIMIT)?;
    let ca = match &ep.authentication.mutual {
        Some(m) => Some(read(
            &resolve(base, &m.client_root_ca),
            "client root CA",
            PKI_LIMIT,
        )?),
        None => None,
    };
    let crl = match (crl_pem, &ep.crl) {
        (Some(pem), _) => Some(pem.to_vec()),
        (None, Some(c)) => Some(read(
            &resolve(base, c),
            "certificate revocation list",
            CRL_LIMIT,
        )?),
        (None, None) => None,
    };
    crate::proto::tls::server_config(&crate::proto::tls::TlsFiles {
        server_chain_pem: &chain,
        server_key_pem: &key,
        client_ca_pem: ca.as_deref(),
        crl_pem: crl.as_deref(),
    })
    .map(|_| ())
    .map_err(|e| format!("the TLS layer refuses the endpoint's files: {e}"))
}

fn read(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>, String> {
    super::files::read_regular(path, limit)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// Every PEM block labelled `label` in `data`, as DER; a block that does not decode is an
/// error, as it is to the TLS layer, which reads every block of the file.
fn pem_blocks(data: &[u8], label: &str, path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(data) {
        let block = block.map_err(|e| {
            format!(
                "{} holds a PEM block that does not decode: {e}",
                path.display()
            )
        })?;
        if block.label == label {
            out.push(block.contents);
        }
    }
    Ok(out)
}

fn parse_cert<'a>(der: &'a [u8], path: &Path) -> Result<X509Certificate<'a>, String> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| {
            format!(
                "{} holds a certificate that does not parse: {e}",
                path.display()
            )
        })
}

/// Checks the leaf of the server chain; returns its SubjectPublicKeyInfo DER.
fn check_server_certificate(path: &Path) -> Result<Vec<u8>, String> {
    let data = read(path, "server certificate", PKI_LIMIT)?;
    let blocks = pem_blocks(&data, "CERTIFICATE", path)?;
    let leaf = blocks
        .first()
        .ok_or_else(|| format!("{} holds no PEM CERTIFICATE block", path.display()))?;
    let cert = parse_cert(leaf, path)?;
    let eku = cert
        .extended_key_usage()
        .map_err(|e| format!("{}: bad extendedKeyUsage extension: {e}", path.display()))?;
    if !eku.is_some_and(|e| e.value.server_auth) {
        return Err(format!(
            "the server certificate {} lacks extendedKeyUsage serverAuth; OpenVPN clients with \
             `remote-cert-tls server` refuse it (easy-rsa's build-server-full adds it)",
            path.display()
        ));
    }
    // `remote-cert-tls server` also requires a keyUsage extension (OpenVPN 2.6:
    // `--remote-cert-ku` without values, "Certificate does not have key usage extension"),
    // whose value the client's TLS library then checks: the server signs every handshake.
    let ku = cert
        .key_usage()
        .map_err(|e| format!("{}: bad keyUsage extension: {e}", path.display()))?;
    match ku {
        None => {
            return Err(format!(
                "the server certificate {} has no keyUsage extension; OpenVPN clients with \
                 `remote-cert-tls server` refuse it (easy-rsa's build-server-full adds \
                 digitalSignature, keyEncipherment)",
                path.display()
            ))
        }
        Some(ku) if !ku.value.digital_signature() => {
            return Err(format!(
                "the server certificate {}'s keyUsage lacks digitalSignature, with which the \
                 server signs its handshakes",
                path.display()
            ))
        }
        Some(_) => {}
    }
    check_key_kind(&cert, path)?;
    if !cert.validity().is_valid() {
        return Err(format!(
            "the server certificate {} is not valid now (valid from {} to {})",
            path.display(),
            cert.validity().not_before,
            cert.validity().not_after
        ));
    }
    Ok(cert.public_key().raw.to_vec())
}

/// RSA 2048 to 4096 bits, or ECDSA on P-256 or P-384.
fn check_key_kind(cert: &X509Certificate<'_>, path: &Path) -> Result<(), String> {
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if bits < 2048 {
                Err(format!(
                    "{} has a {bits}-bit RSA key; RSA keys shorter than 2048 bits can be factored \
                     with modest resources and OpenSSL 3 clients refuse them at their default \
                     security level: reissue it with 2048 to 4096 bits (or ECDSA P-256)",
                    path.display()
                ))
            } else if bits > 4096 {
                Err(format!(
                    "{} has a {bits}-bit RSA key; sluice accepts 2048 to 4096 bits",
                    path.display()
                ))
            } else {
                Ok(())
            }
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 => Ok(()),
                _ => Err(format!(
                    "{} has an ECDSA key on a curve other than P-256 or P-384",
                    path.display()
                )),
            }
        }
        Ok(_) => Err(format!(
            "{} has a key type sluice does not accept; use RSA 2048-4096 or ECDSA P-256/P-384",
            path.display()
        )),
        Err(e) => Err(format!(
            "{}: the public key does not parse: {e}",
            path.display()
        )),
    }
}

/// Checks the private key loads for TLS and, when the certificate parsed, that it matches it.
fn check_server_key(path: &Path, cert_spki: Option<&[u8]>) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let data = read(path, "server key", PKI_LIMIT)?;
    let key = PrivateKeyDer::from_pem_slice(&data).map_err(|_| {
        format!(
            "{} holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)",
            path.display()
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        format!(
            "{}: the private key cannot be used for TLS: {e}",
            path.display()
        )
    })?;
    if let (Some(cert), Some(public)) = (cert_spki, signing.public_key()) {
        if cert != public.as_ref() {
            return Err(format!(
                "{} does not match the server certificate's public key",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Checks a CA bundle; returns the raw subject names of its CA certificates. As the guide
/// allows ("you can continue to use the server certificate ARN for the client certificate
/// ARN" when one CA issued both), it may be the server's chain: certificates that are not CAs
/// are passed over (the TLS layer does not trust them as issuers), but one CA at least must
/// be there.
///
/// # Errors
/// What is wrong with it, in plain words.
pub fn check_ca(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let data = read(path, "client root CA", PKI_LIMIT)?;
    let blocks = pem_blocks(&data, "CERTIFICATE", path)?;
    if blocks.is_empty() {
        return Err(format!("{} holds no PEM CERTIFICATE block", path.display()));
    }
    let mut subjects = Vec::new();
    for der in &blocks {
        let cert = parse_cert(der, path)?;
        if cert.is_ca() {
            subjects.push(cert.subject().as_raw().to_vec());
        }
    }
    if subjects.is_empty() {
        return Err(format!(
            "{} holds no CA certificate (basicConstraints CA:TRUE): a server certificate file \
             serves as client root CA only with its CA in it (append the CA certificate)",
            path.display()
        ));
    }
    Ok(subjects)
}

/// Checks a CRL parses and, when the CA is known, that the CA issued it.
fn check_crl(path: &Path, ca_subjects: &[Vec<u8>]) -> Result<(), String> {
    let data = read(path, "certificate revocation list", CRL_LIMIT)?;
    check_crl_pem(&data, path, ca_subjects)
}

/// Checks CRL text (PEM) the way `check_files` checks a CRL file; `path` names it in messages.
/// Every CRL in it is checked, as the TLS layer takes every one (the earliest nextUpdate of
/// them governs whether clients are let in).
///
/// # Errors
/// What is wrong with it, in plain words.
pub fn check_crl_pem(data: &[u8], path: &Path, ca_subjects: &[Vec<u8>]) -> Result<(), String> {
    let mut count = 0;
    for der in pem_blocks(data, "X509 CRL", path)? {
        count += 1;
        let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| {
            format!(
                "{} holds a CRL (number {count} in the file) that does not parse: {e}",
                path.display()
            )
        })?;
        if !ca_subjects.is_empty()
            && !ca_subjects
                .iter()
                .any(|s| s.as_slice() == crl.issuer().as_raw())
        {
            return Err(format!(
                "the CRL {} (number {count} in the file) was issued by {}, not by the endpoint's \
                 client root CA",
                path.display(),
                crl.issuer()
            ));
        }
    }
    if count == 0 {
        return Err(format!("{} holds no PEM X509 CRL block", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A users file holding one user whose hash has the parameters `params`, in a directory of
    /// its own (root's, mode 0600, as the directory's load insists).
    fn users_file(dir: &Path, params: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("users.toml");
        let text = format!(
            "[[user]]\nname = \"mallory\"\npassword_hash = \
             \"$argon2id$v=19${params}$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA\"\n"
        );
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// Found by reading the load: a users file's first hash sets the cost of the dummy hash
    /// its load computes, on the validating thread. With `m=4294967295` that asked for 4 TiB,
    /// and the failed allocation aborted the process (`sluice validate`, any verb, the
    /// daemon's reload); with `t=4294967295` it hashed for hours. Both are refused before the
    /// load, naming the user and the limits; the parameters sluice hash-password uses pass.
    #[test]
    fn a_users_file_with_costly_hash_parameters_is_refused_before_it_is_hashed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for params in [
            "m=4294967295,t=1,p=1",
            "m=8,t=4294967295,p=1",
            "m=262145,t=1,p=1",
            "m=262144,t=10,p=4",
        ] {
            let path = users_file(dir.path(), params);
            let e = crate::auth::directory::UsersFileDirectory::load(&path)
                .map(|_| ())
                .expect_err(params);
            assert!(
                e.contains("user mallory: password_hash asks for")
                    && e.contains("sluice takes at most 262144 KiB"),
                "{e}"
            );
            // Through the checks a load runs: the finding, not an abort.
            let text = crate::config::endpoint_toml(
                "cvpn-endpoint-0123456789abcdef0",
                "10.200.0.0/20",
                443,
                "",
            )
            .replace(
                "authentication = { mutual = { client_root_ca = \"ca.crt\" } }",
                &format!(
                    "authentication = {{ directory = {{ users_file = {:?} }} }}",
                    path.to_string_lossy()
                ),
            );
            let config = crate::config::parse(Path::new("t.toml"), &text).expect("parses");
            let findings = check_files(&config, dir.path());
            assert!(
                findings.iter().any(|(f, m)| f.to_string()
                    == "endpoint[0].authentication.directory.users_file"
                    && m.contains("password_hash asks for")),
                "{findings:?}"
            );
        }
        let path = users_file(dir.path(), "m=19456,t=2,p=1");
        crate::auth::directory::UsersFileDirectory::load(&path)
            .expect("sluice hash-password's parameters");
    }
}
