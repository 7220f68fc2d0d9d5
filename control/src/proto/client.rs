//! A minimal OpenVPN client of the control channel, sans-IO like the server: hard reset, TLS
//! through rustls, key method 2 (the server pushes its reply unasked), and renegotiation. It exists to drive the
//! server without a real `openvpn` process: the deterministic simulation, benchmarks (handshake
//! rate, reconnection storms) and load generators. It is not a VPN client for people.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;

use super::key_method::EKM_LABEL;
use super::packet::{opcode, ControlPacket, SessionId};
use super::reliable::Reliable;

/// Why the client gave up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server's datagram did not parse.
    #[error("malformed control packet")]
    Malformed,
    /// TLS failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The reliability layer's send window is full.
    #[error("send window full")]
    WindowFull,
}

struct KeyState {
    key_id: u8,
    rel: Reliable,
    tls: rustls::ClientConnection,
    plain: Vec<u8>,
    sent_key_method: bool,
    reply_seen: bool,
    /// Our reset was acknowledged: TLS may go out.
    started: bool,
    /// The server's key-method reply came and all we sent was acknowledged (OpenVPN's
    /// `S_ACTIVE`, which the key keeps): its control messages are read.
    active: bool,
}

/// The length of the server's key-method-2 reply at the start of `b`, once it is complete:
/// zeros, method 2, two randoms, the options string, then username, password and peer-info
/// (each a u16 length and bytes; an OpenVPN server sends them empty).
fn server_reply_len(b: &[u8]) -> Option<usize> {
    if b.len() < 5 || b[..4] != [0, 0, 0, 0] || b[4] & 0x0f != 2 {
        return None;
    }
    let mut at = 5 + 64;
    for _ in 0..4 {
        let len = usize::from(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]));
        at += 2 + len;
        if at > b.len() {
            return None;
        }
    }
    Some(at)
}

/// One client session.
pub struct Client {
    sid: SessionId,
    server_sid: Option<SessionId>,
    keys: Vec<KeyState>,
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    credentials: Option<(String, String)>,
    /// Control messages received (`PUSH_REPLY,...`, `RESTART,...`, `AUTH_FAILED`, ...).
    pub messages: Vec<String>,
    /// Key blocks derived per key_id (the EKM output both ends split into data keys).
    pub key_blocks: Vec<(u8, [u8; 256])>,
    /// Send `PUSH_REQUEST` once the first key is up (a real OpenVPN server may wait for it;
    /// sluice pushes unasked).
    pub push_request: bool,
    push_requested: bool,
    /// The `auth-token` the server pushed, sent instead of the password in later key
    /// exchanges (renegotiations), as OpenVPN 2.6 clients do.
    auth_token: Option<String>,
    /// The IV_PROTO bits announced in the key exchange (an OpenVPN 2.6.14 client's, 990,
    /// unless changed before the TLS handshake completes).
    pub iv_proto: u32,
    /// The largest tun MTU announced as IV_MTU (an OpenVPN 2.6 client's is at least 1600;
    /// `None` for a client before 2.6, which sends none).
    pub iv_mtu: Option<u32>,
    /// The data ciphers announced as IV_CIPHERS (an OpenVPN 2.6 client's default list unless
    /// changed before the TLS handshake completes).
    pub iv_ciphers: String,
}

fn string(t: &str) -> Vec<u8> {
    let mut v = ((t.len() + 1) as u16).to_be_bytes().to_vec();
    v.extend_from_slice(t.as_bytes());
    v.push(0);
    v
}

impl Client {
    /// A client with TLS `config` (its certificate, and the roots it trusts) that expects the
    /// server certificate to name `server_name`, session id `sid`, and optional username and
    /// password.
    ///
    /// # Errors
    /// The name is not a valid server name, or the TLS session cannot be created.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
        mut sid: SessionId,
        credentials: Option<(String, String)>,
    ) -> Result<Self, ClientError> {
        sid[0] |= 1;
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut c = Self {
            sid,
            server_sid: None,
            keys: Vec::new(),
            config,
            server_name,
            credentials,
            messages: Vec::new(),
            key_blocks: Vec::new(),
            push_request: false,
            push_requested: false,
            auth_token: None,
            iv_proto: 990,
            iv_mtu: Some(1600),
            iv_ciphers: "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305".to_owned(),
        };
        c.start_key(0, opcode::HARD_RESET_CLIENT_V2)?;
        Ok(c)
    }

    fn start_key(&mut self, key_id: u8, reset: u8) -> Result<(), ClientError> {
        let tls = rustls::ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut rel = Reliable::default();
        rel.queue(reset, Vec::new())
            .map_err(|_| ClientError::WindowFull)?;
        self.keys.push(KeyState {
            key_id,
            rel,
            tls,
            plain: Vec::new(),
            sent_key_method: false,
            reply_seen: false,
            started: false,
            active: false,
        });
        Ok(())
    }

    /// Starts a renegotiation with `key_id` (1..=7), as a soft reset.
    ///
    /// # Errors
    /// The TLS session cannot be created.
    pub fn renegotiate(&mut self, key_id: u8) -> Result<(), ClientError> {
        self.start_key(key_id, opcode::SOFT_RESET_V1)
    }

    /// Writes `text` (a control message, NUL-terminated here) on the newest active key, as
    /// a client's own messages go (`PUSH_REQUEST` again, say); sent at the next `poll`.
    ///
    /// # Errors
    /// No key is active, or TLS refuses the write.
    pub fn send_message(&mut self, text: &str) -> Result<(), ClientError> {
        let k = self
            .keys
            .iter_mut()
            .rev()
            .find(|k| k.active)
            .ok_or_else(|| ClientError::Tls("no active key".into()))?;
        let mut m = text.as_bytes().to_vec();
        m.push(0);
        k.tls
            .writer()
            .write_all(&m)
            .map_err(|e| ClientError::Tls(e.to_string()))
    }

    /// Writes `bytes` as they are on the newest key's TLS session, whether or not its key
    /// exchange is done: what a misbehaving client sends, for tests of the server. Sent at the
    /// next `poll` once TLS is up.
    ///
    /// # Errors
    /// There is no key state, or TLS refuses the write.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let k = self
            .keys
            .last_mut()
            .ok_or_else(|| ClientError::Tls("no key state".into()))?;
        k.tls
            .writer()
            .write_all(bytes)
            .map_err(|e| ClientError::Tls(e.to_string()))
    }

    /// A key-method-2 message as this client sends it (fresh randoms, its credentials or
    /// auth-token, its peer-info), for `send_raw`.
    pub fn key_method_message(&self) -> Vec<u8> {
        self.key_method()
    }

    /// Whether the newest key state sent its key-method message.
    pub fn sent_key_method(&self) -> bool {
        self.keys.last().is_some_and(|k| k.sent_key_method)
    }

    /// Forgets the `auth-token` the server pushed: its next key exchange sends the password
    /// again (as a client that kept no token, or whose server pushed none).
    pub fn forget_auth_token(&mut self) {
        self.auth_token = None;
    }

    /// Whether the first key is up and the server's PUSH_REPLY arrived.
    pub fn connected(&self) -> bool {
        !self.key_blocks.is_empty() && self.messages.iter().any(|m| m.starts_with("PUSH_REPLY"))
    }

    fn key_method(&self) -> Vec<u8> {
        let mut m = vec![0, 0, 0, 0, 2];
        let mut r = [0u8; 112];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut r);
        m.extend_from_slice(&r);
        m.extend(string(
            "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-client",
        ));
        match &self.credentials {
            Some((u, p)) => {
                m.extend(string(u));
                m.extend(string(self.auth_token.as_deref().unwrap_or(p)));
            }
            None => m.extend([0, 0, 0, 0]),
        }
        let mut info = format!(
            "IV_VER=2.6.14\nIV_PLAT=linux\nIV_CIPHERS={}\nIV_PROTO={}\n",
            self.iv_ciphers, self.iv_proto
        );
        if let Some(mtu) = self.iv_mtu {
            info.push_str(&format!("IV_MTU={mtu}\n"));
        }
        m.extend(string(&info));
        m
    }

    /// Takes a datagram from the server.
    ///
    /// As an OpenVPN 2.6 client (ssl.c), it takes control packets of its primary key only: the
    /// newest key state, which a renegotiation replaces from the moment the client sends or
    /// takes a soft reset (`key_state_soft_reset` moves the old key aside at once), so a packet
    /// of the previous key_id is dropped unacknowledged (`tls_pre_decrypt`: "local/remote key
    /// IDs out of sync"); and it reads the control messages of that key only once the key is
    /// active, the server's key-method reply in and its own messages acknowledged
    /// (`tls_rec_payload` reads `get_key_scan(multi, 0)`, the primary key, from `S_ACTIVE`).
    ///
    /// # Errors
    /// It does not parse, or TLS fails.
    pub fn handle(&mut self, d: &[u8]) -> Result<(), ClientError> {
        let p = ControlPacket::parse(d).map_err(|_| ClientError::Malformed)?;
        if self.server_sid.is_none() {
            self.server_sid = Some(p.session_id);
        }
        if p.opcode == opcode::SOFT_RESET_V1 && !self.keys.iter().any(|k| k.key_id == p.key_id) {
            // The server starts a renegotiation: our own soft reset for its key_id, then TLS.
            self.start_key(p.key_id, opcode::SOFT_RESET_V1)?;
            while self.keys.len() > 2 {
                self.keys.remove(0);
            }
        }
        let Some(k) = self.keys.last_mut().filter(|k| k.key_id == p.key_id) else {
            return Ok(());
        };
        for a in &p.acks {
            k.rel.on_ack(*a);
        }
        if let Some(id) = p.msg_id {
            k.rel.on_message(id, p.payload);
            let mut bytes = Vec::new();
            k.rel.take_in_order(&mut bytes);
            let mut rd = &bytes[..];
            while !rd.is_empty() {
                match k.tls.read_tls(&mut rd) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(ClientError::Tls(e.to_string())),
                }
                k.tls
                    .process_new_packets()
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
            }
        }
        if k.tls.is_handshaking() {
            return Ok(());
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = k.tls.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            k.plain.extend_from_slice(&buf[..n]);
        }
        if let (false, Some(used)) = (k.reply_seen, server_reply_len(&k.plain)) {
            k.plain.drain(..used);
            k.reply_seen = true;
            let mut kb = [0u8; 256];
            k.tls
                .export_keying_material(&mut kb, EKM_LABEL, None)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            self.key_blocks.push((k.key_id, kb));
        }
        k.active |= k.reply_seen && k.rel.all_acked();
        if !k.active {
            return Ok(());
        }
        while let Some(end) = k.plain.iter().position(|b| *b == 0) {
            let m: Vec<u8> = k.plain.drain(..=end).collect();
            let m = String::from_utf8_lossy(&m[..m.len() - 1]).into_owned();
            if let Some(options) = m.strip_prefix("PUSH_REPLY,") {
                if let Some(t) = options
                    .split(',')
                    .find_map(|o| o.strip_prefix("auth-token "))
                {
                    self.auth_token = Some(t.to_owned());
                }
            }
            self.messages.push(m);
        }
        Ok(())
    }

    /// Appends the datagrams due at `now` to `out`.
    ///
    /// # Errors
    /// TLS fails or the send window is full.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) -> Result<(), ClientError> {
        let key_method = self.key_method();
        let want_push = self.push_request
            && !self.push_requested
            && self.key_blocks.iter().any(|(id, _)| *id == 0);
        if want_push {
            self.push_requested = true;
        }
        for k in &mut self.keys {
            if want_push && k.key_id == 0 {
                k.tls
                    .writer()
                    .write_all(b"PUSH_REQUEST\0")
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
            }
            // The client writes its key-method message once its reset is acknowledged.
            if !k.sent_key_method && k.rel.all_acked() {
                k.tls
                    .writer()
                    .write_all(&key_method)
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                k.sent_key_method = true;
            }
            // TLS starts once our reset is acknowledged (OpenVPN's S_PRE_START -> S_START):
            // the server keeps no state before it, so a record sent earlier would be lost.
            k.started |= k.rel.all_acked();
            let mut tls_out = Vec::new();
            while k.started && k.tls.wants_write() {
                k.tls
                    .write_tls(&mut tls_out)
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
            }
            for c in tls_out.chunks(1100) {
                k.rel
                    .queue(opcode::CONTROL_V1, c.to_vec())
                    .map_err(|_| ClientError::WindowFull)?;
            }
            loop {
                let mut acks = k.rel.take_acks(4);
                let pending = !acks.is_empty();
                k.rel.fill_with_recent(&mut acks, 4);
                let remote = self.server_sid.filter(|_| !acks.is_empty());
                let Some(o) = k.rel.poll_transmit(now) else {
                    if pending {
                        let p = ControlPacket {
                            opcode: opcode::ACK_V1,
                            key_id: k.key_id,
                            session_id: self.sid,
                            acks,
                            remote_session_id: self.server_sid,
                            msg_id: None,
                            payload: &[],
                        };
                        let mut d = Vec::new();
                        p.encode(&mut d);
                        out.push(d);
                    }
                    break;
                };
                let p = ControlPacket {
                    opcode: o.opcode,
                    key_id: k.key_id,
                    session_id: self.sid,
                    acks,
                    remote_session_id: remote,
                    msg_id: Some(o.id),
                    payload: o.payload,
                };
                let mut d = Vec::new();
                p.encode(&mut d);
                out.push(d);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::server_reply_len;

    #[test]
    fn server_reply_is_measured_by_its_fields() {
        let opts = "V4,dev-type tun";
        let mut r = vec![0, 0, 0, 0, 2];
        r.extend([7u8; 64]);
        r.extend(((opts.len() + 1) as u16).to_be_bytes());
        r.extend(opts.as_bytes());
        r.push(0);
        r.extend([0, 0, 0, 0, 0, 0]);
        let n = r.len();
        assert_eq!(server_reply_len(&r), Some(n));
        assert_eq!(server_reply_len(&r[..n - 1]), None, "incomplete");
        r.extend(b"PUSH_REPLY,route 10.0.0.0\0");
        assert_eq!(
            server_reply_len(&r),
            Some(n),
            "what follows is not part of it"
        );
        assert_eq!(n, 4 + 1 + 64 + 2 + opts.len() + 1 + 6);
    }
}
