//! One client's control channel: its key states (the current one and, during a renegotiation,
//! the previous), the TLS session of each, the key exchange, authentication and the push.
//!
//! Each key state goes `Tls` (handshake) -> `Active` (key method exchanged, keys derived) or
//! `Failed`. The session goes `Handshaking` -> `Established` -> `Closing` (messages flushed,
//! a renegotiation under way completed to carry the last one, then forgotten).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use sluice_engine::crypto::{Cipher, KeyMaterial};

use super::key_method::{self, ClientKeyMethod, PeerInfo};
use super::packet::{opcode, ControlPacket, SessionId};
use super::reliable::{Received, Reliable, ACKS_PER_CONTROL};
use super::room::Place;
use super::tls::{ServerTls, TlsFailure, TlsSession};
use super::Remote;

/// The most bytes of a key's control messages kept unread: an unterminated message, or what a
/// client sent after its key-method message before the key is active.
const MAX_UNREAD: usize = 8192;

/// The largest TLS chunk per CONTROL_V1 so the UDP payload stays within 1222 bytes (§3.4).
pub const MAX_TLS_CHUNK: usize = 1222 - (1 + 8 + 1 + 4 * ACKS_PER_CONTROL + 8 + 4);

/// How long a closing session stays, at least, once the client's soft reset starts the key
/// exchange that carries its last message (`handle_packet`): a TLS handshake and a key-method
/// exchange, a few round trips.
const FINAL_EXCHANGE_LINGER: Duration = Duration::from_secs(5);

/// Where a key state is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPhase {
    /// TLS handshake and key-method exchange under way.
    Tls,
    /// Keys derived and installed.
    Active,
    /// Failed: in the handshake, the session is closing; in a renegotiation, it makes no keys
    /// and the session goes on with its active key until it is abandoned.
    Failed,
}

/// One key_id's control-channel state.
pub struct KeyState {
    /// The key_id (0 for the first, then 1..7).
    pub key_id: u8,
    /// Reliability layer.
    pub reliable: Reliable,
    tls: TlsSession,
    /// The TLS configuration its handshake began under (the client certificate is checked
    /// again at authorisation if the server's has been replaced since).
    tls_config: Arc<rustls::ServerConfig>,
    plain: Vec<u8>,
    /// Messages to write once its key exchange completes, after our key-method reply: a
    /// closing session's last words to a client that already reads this key (`send_final`).
    after_exchange: Vec<Vec<u8>>,
    /// A closing session's last message was written on it (`send_final`).
    carried_final: bool,
    /// Its key-method message was taken (`take_credentials`): OpenVPN reads one per key state,
    /// and what follows it waits, unread, for the key to be active.
    credentials_taken: bool,
    /// Where it is.
    pub phase: KeyPhase,
    /// When its negotiation started.
    pub started: Instant,
}

/// What a session learned from the client's key-method message, for authentication.
pub struct Credentials {
    /// The certificate's common name, if a certificate was presented.
    pub common_name: Option<String>,
    /// The certificate's serial number, if a certificate was presented.
    pub serial: Option<Vec<u8>>,
    /// The key-method message.
    pub message: ClientKeyMethod,
}

/// A session's identity once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Certificate common name.
    pub common_name: Option<String>,
    /// Directory user name.
    pub username: Option<String>,
    /// Directory groups.
    pub groups: Vec<String>,
    /// Client certificate serial number (to find sessions a new CRL revokes).
    pub certificate_serial: Option<Vec<u8>>,
}

impl Identity {
    /// Whether `other` is the same client (OpenVPN compares the certificates' hashes): the same
    /// certificate (common name and serial number) and the same directory user, whatever
    /// their groups.
    pub fn same_client(&self, other: &Self) -> bool {
        self.common_name == other.common_name
            && self.certificate_serial == other.certificate_serial
            && self.username == other.username
    }
}

/// Where the session is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the first key is active.
    Handshaking,
    /// Keys installed, pushed.
    Established,
    /// Final messages going out; forgotten at the deadline.
    Closing {
        /// When it began closing.
        since: Instant,
        /// When to forget it.
        until: Instant,
    },
}

/// One client.
pub struct Session {
    /// Its outer address.
    pub remote: Remote,
    /// The listener it talks to.
    pub local: Remote,
    /// The client's session id.
    pub client_sid: SessionId,
    /// Ours.
    pub server_sid: SessionId,
    /// Its peer-id.
    pub peer_id: u32,
    /// When the session began.
    pub created: Instant,
    /// Where it is.
    pub phase: Phase,
    /// The current key state and the previous one.
    pub keys: Vec<KeyState>,
    /// Its identity, once authenticated.
    pub identity: Option<Identity>,
    /// Its virtual address, once allocated.
    pub vip: Option<Ipv4Addr>,
    /// Its maximum duration, from `created`: the server's in force when it was authorised.
    pub session_timeout: Option<Duration>,
    /// Its place on a data core (`CoreRoom`), from its authorisation to its end.
    pub place: Option<Place>,
    /// Negotiated cipher and derivation, fixed at key_id 0 (§6.2).
    pub cipher: Option<(Cipher, bool)>,
    /// The client's peer-info.
    pub peer_info: Option<PeerInfo>,
    /// The PUSH_REPLY messages, kept to answer PUSH_REQUEST.
    pub push: Vec<String>,
    /// The auth-token issued at the first authentication (accepted instead of the password
    /// on renegotiation, so one-time codes are not asked again).
    pub auth_token: Option<String>,
    /// The key_id of the next renegotiation, whichever end starts it: one past the last key
    /// state made, 1 to 7 after 0, never 0 again (OpenVPN 2.6's `session->key_id`, advanced
    /// by `key_state_init` in ssl.c). It moves on for a negotiation that is then abandoned,
    /// as both ends' counters do.
    next_key_id: u8,
    /// The last message (`send_final`), NUL-terminated, for a renegotiation the client starts
    /// as the session closes (`handle_packet`).
    final_message: Option<Vec<u8>>,
    /// The password check (`Server::verified`, by job id) a key exchange of it waits for.
    pub verifying: Option<u64>,
    /// When a `PUSH_REQUEST` was last answered with the push (`push`): one within
    /// `PUSH_AGAIN_AFTER` of it is not answered again.
    pub pushed_at: Option<Instant>,
}

/// How long after a push a client's further `PUSH_REQUEST`s are not answered again (as
/// OpenVPN 2.6's server does: `push.c`, its `sent_push_reply_expiry` of 30 s).
pub const PUSH_AGAIN_AFTER: Duration = Duration::from_secs(30);

/// What processing asks of the server.
#[derive(Debug)]
pub enum Step {
    /// Authenticate these credentials (first key) or re-check them (renegotiation).
    Authenticate {
        /// The key state that carries them.
        key_id: u8,
    },
    /// TLS failed.
    TlsFailed(TlsFailure),
    /// The client said EXIT.
    ClientExit,
    /// The client asked for the push again.
    PushRequest,
    /// The peer misbehaved (wrong session id, out-of-sync key_id, queue overflow).
    Misbehaved(&'static str),
}

impl KeyState {
    fn new(
        key_id: u8,
        config: &Arc<rustls::ServerConfig>,
        now: Instant,
    ) -> Result<Self, TlsFailure> {
        Ok(Self {
            key_id,
            reliable: Reliable::default(),
            tls: TlsSession::new(Arc::clone(config))?,
            tls_config: Arc::clone(config),
            plain: Vec::new(),
            after_exchange: Vec::new(),
            carried_final: false,
            credentials_taken: false,
            phase: KeyPhase::Tls,
            started: now,
        })
    }
}

impl Session {
    /// A session for a client that completed the stateless first exchange (`admission`): it
    /// sent its hard reset (msg-pid 0), got our reset (msg-pid 0, session id `server_sid`) and
    /// acknowledged it; TLS starts at msg-pid 1 both ways.
    ///
    /// # Errors
    /// The TLS session could not be created.
    pub fn new(
        remote: Remote,
        local: Remote,
        (client_sid, server_sid): (SessionId, SessionId),
        peer_id: u32,
        tls: Arc<rustls::ServerConfig>,
        now: Instant,
    ) -> Result<Self, TlsFailure> {
        let mut ks = KeyState::new(0, &tls, now)?;
        ks.reliable.skip_first_exchange();
        Ok(Self {
            remote,
            local,
            client_sid,
            server_sid,
            peer_id,
            created: now,
            phase: Phase::Handshaking,
            keys: vec![ks],
            identity: None,
            vip: None,
            session_timeout: None,
            place: None,
            cipher: None,
            peer_info: None,
            push: Vec::new(),
            auth_token: None,
            next_key_id: 1,
            final_message: None,
            verifying: None,
            pushed_at: None,
        })
    }

    /// The key state with `key_id`.
    pub fn key_mut(&mut self, key_id: u8) -> Option<&mut KeyState> {
        self.keys.iter_mut().find(|k| k.key_id == key_id)
    }

    /// The newest key state.
    pub fn current(&self) -> Option<&KeyState> {
        self.keys.last()
    }

    /// Starts a renegotiation from our side (the reference §10: a soft reset under the next
    /// key_id, 1 to 7 after 0, wrapping to 1, counted over every key state made, an abandoned
    /// one too); the client answers with its own soft reset and
    /// a TLS handshake, as when it starts one. Only when the current key is active and none is
    /// being negotiated; returns whether one was started.
    pub fn renegotiate(&mut self, tls: &Arc<rustls::ServerConfig>, now: Instant) -> bool {
        if self.phase != Phase::Established {
            return false;
        }
        let Some(current) = self.current() else {
            return false;
        };
        if current.phase != KeyPhase::Active {
            return false;
        }
        self.push_renegotiation(self.next_key_id, tls, now)
    }

    /// A new key state for a renegotiation under `key_id`, our soft reset queued; the current
    /// key stays as the previous one, an older one goes. False if TLS cannot start.
    fn push_renegotiation(
        &mut self,
        key_id: u8,
        tls: &Arc<rustls::ServerConfig>,
        now: Instant,
    ) -> bool {
        let Ok(mut ks) = KeyState::new(key_id, tls, now) else {
            return false;
        };
        self.next_key_id = key_id % 7 + 1;
        // A fresh queue always has room.
        let _ = ks.reliable.queue(opcode::SOFT_RESET_V1, Vec::new());
        self.keys.push(ks);
        // Keep the current and the previous key only.
        while self.keys.len() > 2 {
            self.keys.remove(0);
        }
        true
    }

    /// Drops the key states older than the newest active one: the previous key, at the end of
    /// its transition window. The newest active key stays, and so does a key still being
    /// negotiated above it (a renegotiation the client started just before).
    pub fn retire_previous(&mut self) {
        if let Some(newest_active) = self.keys.iter().rposition(|k| k.phase == KeyPhase::Active) {
            self.keys.drain(..newest_active);
        }
    }

    /// Abandons the negotiations (key states not active) started `hand_window` or more before
    /// `now` that did not complete; the active keys stay. Returns whether an active key
    /// remains to carry the session.
    pub fn abandon_stale_negotiations(&mut self, now: Instant, hand_window: Duration) -> bool {
        self.keys
            .retain(|k| k.phase == KeyPhase::Active || now < k.started + hand_window);
        self.keys.iter().any(|k| k.phase == KeyPhase::Active)
    }

    /// Fails the negotiation of `key_id` (not an active key): it makes no keys, its client's
    /// retransmissions are still acknowledged, and it is abandoned at its handshake window
    /// (`abandon_stale_negotiations`), or when the client starts another.
    pub fn fail_key(&mut self, key_id: u8) {
        if let Some(k) = self.key_mut(key_id).filter(|k| k.phase == KeyPhase::Tls) {
            k.phase = KeyPhase::Failed;
        }
    }

    /// Handles a packet of this session; returns what the server must do next.
    pub fn handle_packet(
        &mut self,
        p: &ControlPacket<'_>,
        tls: &Arc<rustls::ServerConfig>,
        now: Instant,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        if p.remote_session_id.is_some_and(|r| r != self.server_sid) {
            steps.push(Step::Misbehaved("acknowledgement for another session id"));
            return steps;
        }
        let closing = matches!(self.phase, Phase::Closing { .. });
        let carries_final = self.keys.iter().any(|k| {
            k.key_id == p.key_id && k.phase == KeyPhase::Tls && !k.after_exchange.is_empty()
        });
        if closing && carries_final {
            // The key exchange that carries our last message goes on to its end; nothing of it
            // concerns the server any more (no authorisation, no keys, no refusal).
            let _ = self.handle_key_packet(p, tls, now, true);
            return steps;
        }
        if closing && p.opcode == opcode::SOFT_RESET_V1 && self.key_mut(p.key_id).is_none() {
            // The client started a renegotiation as the session closed, its soft reset on its
            // way as our last message left under the old key: it reads the new key only (as
            // OpenVPN 2.6 does once it sent its soft reset) and drops that message. The new
            // key's exchange is answered and carries the message, as for a renegotiation under
            // way at `send_final`; the session stays a linger more for it. Once only: soft
            // resets on further key ids (a client has one renegotiation under way; anyone else
            // would be keeping a closed session's slot) extend nothing.
            if let Some(m) = self.final_message.clone() {
                let _ = self.handle_key_packet(p, tls, now, true);
                if let Some(k) = self.key_mut(p.key_id).filter(|k| k.phase == KeyPhase::Tls) {
                    k.after_exchange.push(m);
                    self.final_message = None;
                    if let Phase::Closing { until, .. } = &mut self.phase {
                        *until = (*until).max(now + FINAL_EXCHANGE_LINGER);
                    }
                }
            }
            return steps;
        }
        if closing {
            // Still ack what arrives so the client's final messages settle.
            if let Some(k) = self.key_mut(p.key_id) {
                for a in &p.acks {
                    k.reliable.on_ack(*a);
                }
                if let Some(id) = p.msg_id {
                    k.reliable.on_message(id, p.payload);
                }
            }
            return steps;
        }
        self.handle_key_packet(p, tls, now, false)
    }

    /// `handle_packet` for a packet of a key state (a new one for a client's soft reset):
    /// reliability, TLS, the key-method message, then text messages. `closing`: the session
    /// is closing and this key carries its last message (`send_final`): its key exchange is
    /// completed here, with no step for the server.
    fn handle_key_packet(
        &mut self,
        p: &ControlPacket<'_>,
        tls: &Arc<rustls::ServerConfig>,
        now: Instant,
        closing: bool,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        if p.opcode == opcode::SOFT_RESET_V1 && self.key_mut(p.key_id).is_none() {
            // A renegotiation that failed on an established session (`fail_key`) gives way to
            // the client's next one: the active key beneath it is current again.
            if self.phase == Phase::Established
                && self.current().is_some_and(|k| k.phase == KeyPhase::Failed)
                && self.keys.iter().any(|k| k.phase == KeyPhase::Active)
            {
                self.keys.retain(|k| k.phase != KeyPhase::Failed);
            }
            // A renegotiation the client started (§10.2): only once the current key is active.
            let current_active = self.current().is_some_and(|k| k.phase == KeyPhase::Active);
            if !current_active {
                steps.push(Step::Misbehaved(
                    "soft reset before the current key is active",
                ));
                return steps;
            }
            // Only under the next key_id in the cycle (OpenVPN 2.6's server makes the new key
            // state under its own next key_id, then drops a packet whose key_id differs as
            // "key IDs out of sync"): any other is ignored and counted; the session goes on.
            if p.key_id != self.next_key_id {
                steps.push(Step::Misbehaved("soft reset under an unexpected key_id"));
                return steps;
            }
            if !self.push_renegotiation(p.key_id, tls, now) {
                steps.push(Step::Misbehaved("TLS session for renegotiation"));
                return steps;
            }
        }
        let Some(k) = self.key_mut(p.key_id) else {
            steps.push(Step::Misbehaved("key_id out of sync"));
            return steps;
        };
        for a in &p.acks {
            k.reliable.on_ack(*a);
        }
        let Some(id) = p.msg_id else { return steps };
        match k.reliable.on_message(id, p.payload) {
            Received::OutOfWindow => return steps,
            Received::Duplicate => {
                if matches!(
                    p.opcode,
                    opcode::HARD_RESET_CLIENT_V2 | opcode::SOFT_RESET_V1
                ) {
                    // The client missed our reset: resend everything in flight (§3.3 burst).
                    k.reliable.retransmit_all();
                }
                return steps;
            }
            Received::New => {}
        }
        let mut bytes = Vec::new();
        k.reliable.take_in_order(&mut bytes);
        if bytes.is_empty() {
            return steps;
        }
        if let Err(e) = k.tls.feed(&bytes) {
            k.phase = KeyPhase::Failed;
            steps.push(Step::TlsFailed(e));
            return steps;
        }
        if k.tls.is_handshaking() {
            return steps;
        }
        k.tls.read_plaintext(&mut k.plain);
        if k.phase == KeyPhase::Tls && k.credentials_taken {
            // Its key-method message is being authenticated (a password check may be out):
            // another is not read as one, so one key state costs one check. What came after it
            // is read as messages once the key is active, within the same bound.
            if k.plain.len() > MAX_UNREAD {
                k.plain.clear();
                k.phase = KeyPhase::Failed;
                steps.push(Step::Misbehaved("unterminated control message"));
            }
            return steps;
        }
        if k.phase == KeyPhase::Tls {
            match ClientKeyMethod::parse(&k.plain) {
                Ok(Some(_)) if closing => {
                    let key_id = k.key_id;
                    self.complete_for_final(key_id);
                }
                Ok(Some(_)) => steps.push(Step::Authenticate { key_id: k.key_id }),
                Ok(None) => {}
                Err(_) => {
                    k.phase = KeyPhase::Failed;
                    steps.push(Step::Misbehaved("malformed key-method message"));
                }
            }
            return steps;
        }
        // Text messages after the key exchange, NUL-terminated (§8.1).
        while let Some(end) = k.plain.iter().position(|b| *b == 0) {
            let msg: Vec<u8> = k.plain.drain(..=end).collect();
            let text = String::from_utf8_lossy(&msg[..msg.len() - 1]);
            let text = text.trim_end_matches(['\r', '\n']);
            if text == "EXIT" {
                steps.push(Step::ClientExit);
            } else if text.starts_with("PUSH_REQUEST") {
                steps.push(Step::PushRequest);
            }
        }
        if k.plain.len() > MAX_UNREAD {
            k.plain.clear();
            steps.push(Step::Misbehaved("unterminated control message"));
        }
        steps
    }

    /// Completes the key exchange of `key_id` for a closing session's last message only: our
    /// key-method reply, then the message (`send_final`). No keys are derived: nothing of this
    /// exchange reaches the data plane, so the client gets nothing of it but the message. The
    /// client's key-method message must be in (read here if it was not yet, its credentials
    /// unused: a closing session authorises nothing).
    fn complete_for_final(&mut self, key_id: u8) {
        let unread = self.key_mut(key_id).is_some_and(|k| !k.credentials_taken);
        if unread && self.take_credentials(key_id).is_none() {
            return;
        }
        let Some(k) = self.key_mut(key_id) else {
            return;
        };
        let mut r1 = [0u8; 32];
        let mut r2 = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut r1);
        rand::thread_rng().fill_bytes(&mut r2);
        let reply = key_method::server_reply(&key_method::server_options(false), r1, r2);
        if k.tls.write_message(&reply).is_err() {
            k.phase = KeyPhase::Failed;
            return;
        }
        k.phase = KeyPhase::Active;
        for msg in std::mem::take(&mut k.after_exchange) {
            k.carried_final = true;
            let _ = k.tls.write_message(&msg);
        }
    }

    /// Takes the parsed key-method message of key state `key_id` (after `Step::Authenticate`).
    pub fn take_credentials(&mut self, key_id: u8) -> Option<Credentials> {
        let k = self.key_mut(key_id)?;
        let (message, used) = ClientKeyMethod::parse(&k.plain).ok()??;
        k.plain.drain(..used);
        k.credentials_taken = true;
        let common_name = k.tls.peer_common_name();
        let serial = k.tls.peer_serial();
        Some(Credentials {
            common_name,
            serial,
            message,
        })
    }

    /// Checks the client certificate of key state `key_id` against `current`, the server's TLS
    /// configuration now, if its handshake began under another (replaced since, e.g. by a
    /// reload with a new CRL): a certificate revoked meanwhile is not authorised.
    ///
    /// # Errors
    /// The certificate does not verify under `current`, or there is no such key state.
    pub fn verify_certificate_under(
        &self,
        key_id: u8,
        current: &ServerTls,
        unix_now: u64,
    ) -> Result<(), TlsFailure> {
        let k = self
            .keys
            .iter()
            .find(|k| k.key_id == key_id)
            .ok_or_else(|| TlsFailure::Protocol("no such key state".into()))?;
        if Arc::ptr_eq(&k.tls_config, &current.config) {
            return Ok(());
        }
        k.tls.verify_peer_under(current, unix_now)
    }

    /// Whether the client certificate of its newest active key still verifies under `current`
    /// at `unix_now` (`TlsSession::still_verifies_under`): a reload replaced the server's TLS
    /// settings (another client CA, a new CRL) or the certificate has expired since its
    /// handshake. A session with no active key has nothing to check.
    ///
    /// # Errors
    /// The chain no longer verifies.
    pub fn still_verifies_under(
        &self,
        current: &ServerTls,
        unix_now: u64,
    ) -> Result<(), TlsFailure> {
        match self.keys.iter().rev().find(|k| k.phase == KeyPhase::Active) {
            Some(k) => k.tls.still_verifies_under(current, unix_now),
            None => Ok(()),
        }
    }

    /// Completes the key exchange of `key_id`: writes our key-method reply and derives the
    /// server's key material. `ekm` selects the exporter, else the legacy PRF.
    ///
    /// # Errors
    /// The TLS session refused the write or the export.
    pub fn complete_key_exchange(
        &mut self,
        key_id: u8,
        creds: &Credentials,
        cipher: Cipher,
        ekm: bool,
        tcp: bool,
    ) -> Result<Box<KeyMaterial>, TlsFailure> {
        let (client_sid, server_sid) = (self.client_sid, self.server_sid);
        let k = self
            .key_mut(key_id)
            .ok_or_else(|| TlsFailure::Protocol("no such key state".into()))?;
        let mut r1 = [0u8; 32];
        let mut r2 = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut r1);
        rand::thread_rng().fill_bytes(&mut r2);
        let reply = key_method::server_reply(&key_method::server_options(tcp), r1, r2);
        k.tls.write_message(&reply)?;
        let mut kb = [0u8; 256];
        if ekm {
            k.tls.export(key_method::EKM_LABEL, &mut kb)?;
        } else {
            kb = key_method::legacy_key_block(&creds.message, &r1, &r2, &client_sid, &server_sid);
        }
        let m = Box::new(key_method::server_keys(cipher, &kb));
        zeroize::Zeroize::zeroize(&mut kb);
        k.phase = KeyPhase::Active;
        for msg in std::mem::take(&mut k.after_exchange) {
            k.carried_final = true;
            let _ = k.tls.write_message(&msg);
        }
        Ok(m)
    }

    /// Writes a text control message (NUL-terminated, one TLS record) on the newest active key,
    /// never on one still in handshake: TLS would send it before our key-method reply, where
    /// the client expects that reply. Before the first key is active there is nowhere to write
    /// it. During a renegotiation the client may already read the new key only: a session's
    /// last message goes by `send_final`.
    pub fn send_text(&mut self, text: &str) {
        let Some(k) = self
            .keys
            .iter_mut()
            .rev()
            .find(|k| k.phase == KeyPhase::Active)
        else {
            return;
        };
        let mut m = text.as_bytes().to_vec();
        m.push(0);
        let _ = k.tls.write_message(&m);
    }

    /// Writes the last message of a session about to close (`RESTART`, `HALT`) where the client
    /// reads it. That is the newest active key (`send_text`) unless a renegotiation is under
    /// way: an OpenVPN 2.6 client takes control packets of its primary key only, which is the
    /// new one from the moment it sends or takes the soft reset (ssl.c: `key_state_soft_reset`
    /// moves the old key aside at once, `tls_pre_decrypt` drops packets of another key_id as
    /// "key IDs out of sync"), and reads messages there once that key is active
    /// (`tls_rec_payload`). Whether the client has switched is not known (our soft reset may
    /// not have reached it), so the message goes on the active key now and on the key being
    /// negotiated once its key exchange completes: the closing session finishes that exchange,
    /// without authorising it or making keys for the data plane (`handle_packet`). A key whose
    /// key-method message is already in (its authentication waiting for a password check,
    /// `Server::verified`, or refused for now, `fail_key`) gets no more from its client, which
    /// waits for our reply: that exchange is completed so now, the message right after it.
    pub fn send_final(&mut self, text: &str) {
        self.send_text(text);
        let Some(active) = self.keys.iter().rposition(|k| k.phase == KeyPhase::Active) else {
            return;
        };
        self.keys[active].carried_final = true;
        let mut m = text.as_bytes().to_vec();
        m.push(0);
        self.final_message = Some(m.clone());
        let mut answered = Vec::new();
        for k in &mut self.keys[active + 1..] {
            let read = k.credentials_taken && k.phase != KeyPhase::Active;
            if k.phase == KeyPhase::Tls || read {
                k.after_exchange.push(m.clone());
            }
            if read {
                answered.push(k.key_id);
            }
        }
        for key_id in answered {
            self.complete_for_final(key_id);
        }
    }

    /// Moves TLS output into reliable CONTROL_V1 messages; false if the peer stopped acking.
    pub fn pump_tls(&mut self) -> bool {
        for k in &mut self.keys {
            let mut out = Vec::new();
            k.tls.take_outgoing(&mut out);
            for chunk in out.chunks(MAX_TLS_CHUNK) {
                if k.reliable
                    .queue(opcode::CONTROL_V1, chunk.to_vec())
                    .is_err()
                {
                    return false;
                }
            }
        }
        true
    }

    /// Appends the datagrams due now to `out`.
    pub fn poll_datagrams(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        let (sid, remote_sid) = (self.server_sid, self.client_sid);
        for k in &mut self.keys {
            loop {
                let acks = k.reliable.take_acks(ACKS_PER_CONTROL);
                let Some(o) = k.reliable.poll_transmit(now) else {
                    if !acks.is_empty() || k.reliable.has_pending_acks() {
                        let mut all = acks;
                        for a in k.reliable.take_acks(super::packet::MAX_ACKS - all.len()) {
                            all.push(a);
                        }
                        let p = ControlPacket {
                            opcode: opcode::ACK_V1,
                            key_id: k.key_id,
                            session_id: sid,
                            acks: all,
                            remote_session_id: Some(remote_sid),
                            msg_id: None,
                            payload: &[],
                        };
                        let mut d = Vec::with_capacity(p.encoded_len());
                        p.encode(&mut d);
                        out.push(d);
                    }
                    break;
                };
                let p = ControlPacket {
                    opcode: o.opcode,
                    key_id: k.key_id,
                    session_id: sid,
                    remote_session_id: (!acks.is_empty()).then_some(remote_sid),
                    acks,
                    msg_id: Some(o.id),
                    payload: o.payload,
                };
                let mut d = Vec::with_capacity(p.encoded_len());
                p.encode(&mut d);
                out.push(d);
            }
        }
    }

    /// The earliest retransmission due.
    pub fn next_retransmit(&self) -> Option<Instant> {
        self.keys
            .iter()
            .filter_map(|k| k.reliable.next_timeout())
            .min()
    }

    /// Whether all of our messages were acknowledged.
    pub fn all_acked(&self) -> bool {
        self.keys.iter().all(|k| k.reliable.all_acked())
    }

    /// Starts closing: final messages get `linger` to be acknowledged.
    pub fn close(&mut self, now: Instant, linger: Duration) {
        if !matches!(self.phase, Phase::Closing { .. }) {
            self.phase = Phase::Closing {
                since: now,
                until: now + linger,
            };
        }
    }

    /// Whether a closing session has nothing more to deliver: its last message (`send_final`)
    /// acknowledged on a key that carried it (the client read that key; the other one it may
    /// never acknowledge, as it drops packets of a key it has moved on from), or else all of
    /// its messages acknowledged and none waiting for a key exchange.
    pub fn settled(&self) -> bool {
        let delivered = self
            .keys
            .iter()
            .any(|k| k.carried_final && k.reliable.all_acked());
        delivered || (self.all_acked() && !self.final_pending())
    }

    /// Whether a final message waits for a key exchange still under way (`send_final`).
    pub fn final_pending(&self) -> bool {
        self.keys
            .iter()
            .any(|k| k.phase == KeyPhase::Tls && !k.after_exchange.is_empty())
    }
}
