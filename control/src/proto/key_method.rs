//! Key method 2 (both directions), peer-info, data-cipher negotiation, and the derivation of
//! data-channel keys: the TLS exporter (tls-ekm) or, for clients that do not announce it, the
//! legacy TLS 1.0 PRF.
//!
//! Spec: openvpn-protocol.md §5 (layouts, options string, peer-info), §6 (key block).

use std::fmt;

use sluice_engine::crypto::{Cipher, KeyMaterial};
use zeroize::Zeroize;

/// A secret string (password) that never appears in Debug output and is zeroed on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret, for the one place that must compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The client's key-method-2 message. Its Debug output leaves out the pre-master secret and
/// the randoms (the legacy PRF derives the data keys from them) and shows no password.
pub struct ClientKeyMethod {
    pre_master: [u8; 48],
    random1: [u8; 32],
    random2: [u8; 32],
    /// The client's options string.
    pub options: String,
    /// The username, if auth-user-pass is used.
    pub username: Option<String>,
    /// The password (or static-challenge response), if given.
    pub password: Option<Secret>,
    /// The peer-info lines.
    pub peer_info: PeerInfo,
}

impl fmt::Debug for ClientKeyMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeyMethod")
            .field("options", &self.options)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("peer_info", &self.peer_info)
            .finish_non_exhaustive()
    }
}

impl Drop for ClientKeyMethod {
    fn drop(&mut self) {
        self.pre_master.zeroize();
    }
}

/// Why a key-method message is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyMethodError {
    /// Not key method 2, or a malformed field.
    Malformed(&'static str),
}

/// Longest username or password accepted (§5.1).
pub const MAX_CREDENTIAL: usize = 4096;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at + n)?;
        self.at += n;
        Some(s)
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A `u16 len || bytes` string whose bytes end in NUL; `None` if not all here yet.
    fn string(&mut self, max: usize) -> Result<Option<Option<String>>, KeyMethodError> {
        let Some(len) = self.u16() else {
            return Ok(None);
        };
        if len > max + 1 {
            return Err(KeyMethodError::Malformed("string too long"));
        }
        let Some(bytes) = self.take(len) else {
            return Ok(None);
        };
        if len == 0 {
            return Ok(Some(None));
        }
        // Readers force the last byte to NUL (§5.1): drop it whatever it is.
        let s = String::from_utf8_lossy(&bytes[..len - 1])
            .trim_end_matches('\0')
            .to_owned();
        Ok(Some(Some(s)))
    }
}

impl ClientKeyMethod {
    /// Parses the message from the start of `buf`; `Ok(None)` if more bytes are needed.
    /// Returns the message and the bytes consumed.
    ///
    /// # Errors
    /// A malformed message.
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, KeyMethodError> {
        let mut r = Reader { b: buf, at: 0 };
        let Some(head) = r.take(5) else {
            return Ok(None);
        };
        if head[..4] != [0, 0, 0, 0] || head[4] & 0x0f != 2 {
            return Err(KeyMethodError::Malformed("not key method 2"));
        }
        let (Some(pm), Some(r1), Some(r2)) = (r.take(48), r.take(32), r.take(32)) else {
            return Ok(None);
        };
        let mut pre_master = [0u8; 48];
        pre_master.copy_from_slice(pm);
        let mut random1 = [0u8; 32];
        random1.copy_from_slice(r1);
        let mut random2 = [0u8; 32];
        random2.copy_from_slice(r2);
        let Some(options) = r.string(1024)? else {
            return Ok(None);
        };
        let Some(username) = r.string(MAX_CREDENTIAL)? else {
            return Ok(None);
        };
        let Some(password) = r.string(MAX_CREDENTIAL)? else {
            return Ok(None);
        };
        // Every 2.4+ client sends peer-info; wait for all of it.
        let Some(peer_info) = r.string(8192)? else {
            return Ok(None);
        };
        let peer_info = peer_info.unwrap_or_default();
        let msg = Self {
            pre_master,
            random1,
            random2,
            options: options.unwrap_or_default(),
            username: username.filter(|u| !u.is_empty()),
            password: password.map(Secret::new),
            peer_info: PeerInfo::parse(&peer_info),
        };
        Ok(Some((msg, r.at)))
    }
}

/// The server's options string (§5.3, recommended form for a UDP server).
pub fn server_options(tcp: bool) -> String {
    if tcp {
        "V4,dev-type tun,link-mtu 1543,tun-mtu 1500,proto TCPv4_SERVER,auth SHA1,keysize 128,key-method 2,tls-server".into()
    } else {
        "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-server".into()
    }
}

/// The server's key-method-2 reply; returns it and the two randoms it carries.
pub fn server_reply(options: &str, random1: [u8; 32], random2: [u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(80 + options.len());
    m.extend_from_slice(&[0, 0, 0, 0, 2]);
    m.extend_from_slice(&random1);
    m.extend_from_slice(&random2);
    let len = (options.len() + 1) as u16;
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(options.as_bytes());
    m.push(0);
    // Username, password, peer-info: absent.
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    m
}

/// The client's peer-info (§5.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// `IV_VER`.
    pub version: Option<String>,
    /// `IV_PLAT`.
    pub platform: Option<String>,
    /// `IV_CIPHERS`, in the client's order.
    pub ciphers: Vec<String>,
    /// `IV_PROTO` bits.
    pub proto: u32,
    /// `IV_NCP`.
    pub ncp: u32,
    /// `IV_MTU`.
    pub mtu: Option<u32>,
}

impl PeerInfo {
    /// IV_PROTO bit: accepts P_DATA_V2 and peer-id.
    pub const DATA_V2: u32 = 1 << 1;
    /// IV_PROTO bit: PUSH_REPLY may come without PUSH_REQUEST.
    pub const REQUEST_PUSH: u32 = 1 << 2;
    /// IV_PROTO bit: derives keys with the TLS exporter.
    pub const TLS_KEY_EXPORT: u32 = 1 << 3;
    /// IV_PROTO bit: control-channel EXIT and protocol-flags.
    pub const CC_EXIT_NOTIFY: u32 = 1 << 7;
    /// IV_PROTO bit: `AUTH_FAILED,TEMP[...]:<reason>` is a temporary refusal (retry later).
    pub const AUTH_FAIL_TEMP: u32 = 1 << 8;

    /// Parses `KEY=VALUE` lines.
    pub fn parse(s: &str) -> Self {
        let mut p = Self::default();
        for line in s.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "IV_VER" => p.version = Some(v.to_owned()),
                "IV_PLAT" => p.platform = Some(v.to_owned()),
                "IV_CIPHERS" => {
                    p.ciphers = v
                        .split(':')
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                "IV_PROTO" => p.proto = v.parse().unwrap_or(0),
                "IV_NCP" => p.ncp = v.parse().unwrap_or(0),
                "IV_MTU" => p.mtu = v.parse().ok(),
                _ => {}
            }
        }
        p
    }

    /// Whether the client uses the TLS exporter for data keys.
    pub fn has(&self, bit: u32) -> bool {
        self.proto & bit != 0
    }
}

/// The server's preference among the data ciphers, first match wins (§11).
pub const SERVER_CIPHERS: [Cipher; 3] = [
    Cipher::Aes256Gcm,
    Cipher::ChaCha20Poly1305,
    Cipher::Aes128Gcm,
];

/// Picks the data cipher: the first of ours the client lists (IV_NCP=2 alone means the two
/// AES-GCM ciphers).
pub fn negotiate_cipher(info: &PeerInfo) -> Option<Cipher> {
    if info.ciphers.is_empty() {
        return (info.ncp >= 2).then_some(Cipher::Aes256Gcm);
    }
    SERVER_CIPHERS.into_iter().find(|c| {
        info.ciphers
            .iter()
            .any(|n| n.eq_ignore_ascii_case(c.name()))
    })
}

/// The exporter label for data keys (§6.2).
pub const EKM_LABEL: &[u8] = b"EXPORTER-OpenVPN-datakeys";

/// The server's key material from a 256-byte key block: it decrypts with the client-to-server
/// half and encrypts with the server-to-client half (§6).
pub fn server_keys(cipher: Cipher, kb: &[u8; 256]) -> KeyMaterial {
    let mut m = KeyMaterial {
        cipher,
        encrypt_key: [0; 32],
        encrypt_iv: [0; 8],
        decrypt_key: [0; 32],
        decrypt_iv: [0; 8],
    };
    m.decrypt_key.copy_from_slice(&kb[0..32]);
    m.decrypt_iv.copy_from_slice(&kb[64..72]);
    m.encrypt_key.copy_from_slice(&kb[128..160]);
    m.encrypt_iv.copy_from_slice(&kb[192..200]);
    m
}

/// The legacy key block (§6.1): TLS 1.0 PRF over the randoms of both key-method messages and
/// both session ids.
pub fn legacy_key_block(
    client: &ClientKeyMethod,
    server_random1: &[u8; 32],
    server_random2: &[u8; 32],
    client_sid: &[u8; 8],
    server_sid: &[u8; 8],
) -> [u8; 256] {
    let mut seed = Vec::with_capacity(21 + 64);
    seed.extend_from_slice(b"OpenVPN master secret");
    seed.extend_from_slice(&client.random1);
    seed.extend_from_slice(server_random1);
    let mut master = [0u8; 48];
    tls1_prf(&client.pre_master, &seed, &mut master);
    let mut seed = Vec::with_capacity(21 + 64 + 16);
    seed.extend_from_slice(b"OpenVPN key expansion");
    seed.extend_from_slice(&client.random2);
    seed.extend_from_slice(server_random2);
    seed.extend_from_slice(client_sid);
    seed.extend_from_slice(server_sid);
    let mut kb = [0u8; 256];
    tls1_prf(&master, &seed, &mut kb);
    master.zeroize();
    kb
}

/// The TLS 1.0 PRF: P_MD5(S1, seed) XOR P_SHA1(S2, seed) (RFC 2246 §5).
pub fn tls1_prf(secret: &[u8], seed: &[u8], out: &mut [u8]) {
    let half = secret.len().div_ceil(2);
    let (s1, s2) = (&secret[..half], &secret[secret.len() - half..]);
    out.fill(0);
    p_hash::<hmac::Hmac<md5::Md5>>(s1, seed, out);
    p_hash::<hmac::Hmac<sha1::Sha1>>(s2, seed, out);
}

/// XORs P_hash(secret, seed) into `out` (RFC 2246 §5).
fn p_hash<M: hmac::Mac + hmac::digest::KeyInit + Clone>(
    secret: &[u8],
    seed: &[u8],
    out: &mut [u8],
) {
    let Ok(mac) = <M as hmac::digest::KeyInit>::new_from_slice(secret) else {
        return;
    };
    let mut a = {
        let mut m = mac.clone();
        m.update(seed);
        m.finalize().into_bytes().to_vec()
    };
    let mut done = 0;
    while done < out.len() {
        let mut m = mac.clone();
        m.update(&a);
        m.update(seed);
        let block = m.finalize().into_bytes();
        for (o, b) in out[done..].iter_mut().zip(block.iter()) {
            *o ^= b;
        }
        done += block.len();
        let mut m = mac.clone();
        m.update(&a);
        a = m.finalize().into_bytes().to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn seq(from: u8, n: usize) -> Vec<u8> {
        (0..n).map(|i| from.wrapping_add(i as u8)).collect()
    }

    fn string(s: &str) -> Vec<u8> {
        let mut v = ((s.len() + 1) as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        v
    }

    fn client_message(user: Option<&str>, pass: Option<&str>) -> Vec<u8> {
        let mut m = vec![0, 0, 0, 0, 2];
        m.extend(seq(0x00, 48));
        m.extend(seq(0x40, 32));
        m.extend(seq(0x60, 32));
        m.extend(string("V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-client"));
        match user {
            Some(u) => m.extend(string(u)),
            None => m.extend([0, 0]),
        }
        match pass {
            Some(p) => m.extend(string(p)),
            None => m.extend([0, 0]),
        }
        m.extend(string("IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\nIV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n"));
        m
    }

    #[test]
    fn parses_a_2_6_client_message_incrementally() {
        let m = client_message(Some("alice"), Some("SCRV1:c2VjcmV0:MTIzNDU2"));
        for cut in [0, 4, 50, 120, m.len() - 1] {
            assert!(
                ClientKeyMethod::parse(&m[..cut]).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        let mut with_more = m.clone();
        with_more.extend_from_slice(b"PUSH_REQUEST\0");
        let (k, used) = ClientKeyMethod::parse(&with_more).unwrap().unwrap();
        assert_eq!(used, m.len());
        assert_eq!(k.username.as_deref(), Some("alice"));
        assert_eq!(
            k.password.as_ref().map(Secret::expose),
            Some("SCRV1:c2VjcmV0:MTIzNDU2")
        );
        assert!(!format!("{k:?}").contains("SCRV1"), "no password in Debug");
        assert_eq!(k.peer_info.version.as_deref(), Some("2.6.14"));
        assert_eq!(k.peer_info.proto, 990);
        assert!(
            k.peer_info.has(PeerInfo::TLS_KEY_EXPORT) && k.peer_info.has(PeerInfo::CC_EXIT_NOTIFY)
        );
        assert_eq!(negotiate_cipher(&k.peer_info), Some(Cipher::Aes256Gcm));
        let (k, _) = ClientKeyMethod::parse(&client_message(None, None))
            .unwrap()
            .unwrap();
        assert!(k.username.is_none() && k.password.is_none());
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let m = client_message(Some("alice"), Some("pw"));
        let (k, _) = ClientKeyMethod::parse(&m).unwrap().unwrap();
        for shown in [format!("{k:?}"), format!("{k:#?}")] {
            assert!(
                shown.contains("alice") && shown.contains("2.6.14"),
                "{shown}"
            );
            assert!(!shown.contains("\"pw\""), "no password: {shown}");
            // The pre-master secret (00..2f) and the randoms (40..7f): neither their names
            // nor a run of their bytes as Debug writes an array.
            for (name, bytes) in [
                ("pre_master", seq(0x00, 48)),
                ("random1", seq(0x40, 32)),
                ("random2", seq(0x60, 32)),
            ] {
                assert!(!shown.contains(name), "{name} in {shown}");
                let run = format!("{:?}", &bytes[8..16]);
                let run = run.trim_start_matches('[').trim_end_matches(']');
                assert!(!shown.contains(run), "{name}'s bytes in {shown}");
            }
        }
    }

    #[test]
    fn refuses_other_key_methods_and_oversized_strings() {
        let mut m = client_message(None, None);
        m[4] = 1;
        assert!(ClientKeyMethod::parse(&m).is_err());
        let mut m = client_message(None, None);
        let off = 5 + 48 + 64;
        m[off..off + 2].copy_from_slice(&5000u16.to_be_bytes());
        assert!(ClientKeyMethod::parse(&m).is_err());
    }

    #[test]
    fn server_reply_layout() {
        // §5.1: the 2.6 server's reply with its 100-character options string is 178 bytes.
        let opts = server_options(false);
        assert_eq!(opts.len(), 100);
        let r = server_reply(&opts, [1; 32], [2; 32]);
        assert_eq!(r.len(), 178);
        assert_eq!(&r[..5], &[0, 0, 0, 0, 2]);
    }

    #[test]
    fn cipher_negotiation() {
        let p = |c: &str| PeerInfo {
            ciphers: c.split(':').map(str::to_owned).collect(),
            ..PeerInfo::default()
        };
        assert_eq!(
            negotiate_cipher(&p("CHACHA20-POLY1305")),
            Some(Cipher::ChaCha20Poly1305)
        );
        assert_eq!(
            negotiate_cipher(&p("AES-128-GCM:CHACHA20-POLY1305")),
            Some(Cipher::ChaCha20Poly1305)
        );
        assert_eq!(negotiate_cipher(&p("AES-128-GCM")), Some(Cipher::Aes128Gcm));
        assert_eq!(negotiate_cipher(&p("BF-CBC")), None);
        assert_eq!(
            negotiate_cipher(&PeerInfo {
                ncp: 2,
                ..PeerInfo::default()
            }),
            Some(Cipher::Aes256Gcm)
        );
    }

    /// Appendix B.5: the legacy PRF key expansion.
    #[test]
    fn legacy_prf_vector_b5() {
        let mut m = client_message(None, None);
        // client random1 = 40..5f, random2 = 60..7f already; pre_master = 00..2f.
        m.truncate(m.len());
        let (client, _) = ClientKeyMethod::parse(&m).unwrap().unwrap();
        let mut sr1 = [0u8; 32];
        sr1.copy_from_slice(&seq(0x80, 32));
        let mut sr2 = [0u8; 32];
        sr2.copy_from_slice(&seq(0xa0, 32));
        let kb = legacy_key_block(
            &client,
            &sr1,
            &sr2,
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18],
        );
        assert_eq!(
            kb[0..32],
            hex("5f55fce5fcbf1345f7287765e26b01f71d17712425900e1adf7f5752a3f26131")[..]
        );
        assert_eq!(kb[64..72], hex("a1f4ec72dee73239")[..]);
        assert_eq!(
            kb[128..160],
            hex("72cd8a845d827854399052337a6f8cdf947255829e69473b3515b5826b0dc62f")[..]
        );
        assert_eq!(kb[192..200], hex("9aeadb982a7a6767")[..]);
        let mut master = [0u8; 48];
        let mut seed = b"OpenVPN master secret".to_vec();
        seed.extend(seq(0x40, 32));
        seed.extend(seq(0x80, 32));
        tls1_prf(&seq(0, 48), &seed, &mut master);
        assert_eq!(master[..], hex("9999e37f41b205a8183ce835da7daacfd52553e542564d04e4292100b00f5f1fe967f9d4f3888f285a5f119aff451e0d")[..]);
        let keys = server_keys(Cipher::Aes256Gcm, &kb);
        assert_eq!(keys.decrypt_key[..], kb[0..32]);
        assert_eq!(keys.encrypt_iv[..], kb[192..200]);
    }
}
