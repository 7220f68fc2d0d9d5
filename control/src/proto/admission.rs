//! Who gets an answer and who gets a session: the stateless first exchange and the per-source
//! budget of answers.
//!
//! Without tls-auth or tls-crypt anyone can send a client hard reset from any address. A
//! session made for each (a peer-id, a TLS connection, a minute of retransmissions to the
//! claimed address) would let spoofed resets fill the cap on sessions in handshake and lock real
//! clients out for the handshake window, and would make the server send a minute of datagrams
//! to addresses that never asked. So, as OpenVPN 2.6 servers do (the reference §3.9; 2.6's
//! `mudp.c`), a first reset is answered from no state: the server's session id is a MAC of the
//! time slot, both addresses and the client's session id. Only a packet that echoes it back (the
//! client's acknowledgement of our reset, which every OpenVPN client sends, alone or with its
//! first TLS record) makes a session, and such a packet comes from an address that receives our
//! datagrams. A session id stays valid for two to three slots of half the handshake window.
//! The ids themselves are `sluice_engine::cookie`'s: with the DPDK data plane the cores answer
//! first resets under the same key and clock origin, and only the echoes reach this server.
//!
//! Answers themselves are budgeted per source address (the cores' `punt::PuntLimiter`, keyed by
//! address alone), so the server cannot be made to send a stream of datagrams to one address,
//! and a spray of spoofed addresses costs a hash per packet.

use std::sync::Arc;
use std::time::Instant;

use sluice_engine::cookie::{self, CookieKey};

use super::packet::SessionId;
use super::Remote;

/// The server's stateless session ids: the key (shared with the data cores when they answer
/// first resets themselves) and the clock origin its time slots count from.
pub struct Cookies {
    key: Arc<CookieKey>,
    epoch: Option<Instant>,
}

impl Cookies {
    /// Ids under `key`, time counted from `epoch` (the data cores' clock origin when they
    /// share the key; `None`: from the first id given out).
    pub fn new(key: Arc<CookieKey>, epoch: Option<Instant>) -> Self {
        Self { key, epoch }
    }

    /// Our session id for the client session `client` at `remote`, now.
    pub fn session_id(
        &mut self,
        now: Instant,
        remote: Remote,
        local: Remote,
        client: &SessionId,
    ) -> SessionId {
        let epoch = *self.epoch.get_or_insert(now);
        let secs = now.saturating_duration_since(epoch).as_secs();
        self.key.session_id(secs, remote, local, client)
    }

    /// Whether `echoed` is a session id we gave `client` at `remote` within its validity (at
    /// least the handshake window).
    pub fn verify(
        &self,
        now: Instant,
        remote: Remote,
        local: Remote,
        client: &SessionId,
        echoed: &SessionId,
    ) -> bool {
        let Some(epoch) = self.epoch else {
            return false;
        };
        let secs = now.saturating_duration_since(epoch).as_secs();
        self.key.verify(secs, remote, local, client, echoed)
    }
}

/// Our stateless answer to a client's first hard reset: the 26-byte server reset (the
/// reference §12), msg-pid 0, acknowledging the client's msg-pid 0.
pub fn reset_answer(ours: SessionId, client: SessionId) -> Vec<u8> {
    let mut d = [0u8; cookie::ANSWER_LEN];
    cookie::write_answer(&mut d, &ours, &client);
    d.to_vec()
}

#[cfg(test)]
// Tests take one real instant as the origin of a virtual clock.
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::time::Duration;

    use super::super::packet::{opcode, ControlPacket};
    use super::*;

    fn addr(ip: u32, port: u16) -> Remote {
        Remote { ip, port }
    }

    fn cookies(epoch: Option<Instant>) -> Cookies {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]);
        Cookies::new(Arc::new(CookieKey::with_key(key, 60)), epoch)
    }

    #[test]
    fn ids_count_time_from_the_shared_origin_or_the_first_answer() {
        let t0 = Instant::now();
        let (r, l, sid) = (addr(0x0a00_0001, 40000), addr(0xc0a8_0001, 1194), [1u8; 8]);
        let mut own = cookies(None);
        assert!(
            !own.verify(t0, r, l, &sid, &[1; 8]),
            "nothing given out yet"
        );
        let id = own.session_id(t0 + Duration::from_secs(100), r, l, &sid);
        // Valid for the slot it was given in (30 s from the first answer) and two more.
        assert!(own.verify(t0 + Duration::from_secs(189), r, l, &sid, &id));
        assert!(!own.verify(t0 + Duration::from_secs(190), r, l, &sid, &id));
        // With the cores' origin, the id a core gave at its second 100 verifies here.
        let shared = cookies(Some(t0));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]);
        let core = CookieKey::with_key(key, 60).session_id(100, r, l, &sid);
        assert!(shared.verify(t0 + Duration::from_secs(100), r, l, &sid, &core));
        assert!(shared.verify(t0 + Duration::from_secs(179), r, l, &sid, &core));
        assert!(!shared.verify(t0 + Duration::from_secs(180), r, l, &sid, &core));
    }

    #[test]
    fn the_answer_is_the_26_byte_server_reset() {
        let d = reset_answer([0x11; 8], [0x22; 8]);
        assert_eq!(d.len(), 26);
        let p = ControlPacket::parse(&d).unwrap();
        assert_eq!(p.opcode, opcode::HARD_RESET_SERVER_V2);
        assert_eq!(
            (p.session_id, p.remote_session_id),
            ([0x11; 8], Some([0x22; 8]))
        );
        assert_eq!((p.acks.as_slice(), p.msg_id), (&[0u32][..], Some(0)));
    }

    #[test]
    fn only_the_first_exchange_can_be_a_third_step() {
        let base = ControlPacket {
            opcode: opcode::CONTROL_V1,
            key_id: 0,
            session_id: [1; 8],
            acks: [0u32].into_iter().collect(),
            remote_session_id: Some([9; 8]),
            msg_id: Some(1),
            payload: &[],
        };
        // The shape rule is the cores' (`cookie::third_step`), on the encoded datagram.
        let echoed = |p: &ControlPacket<'_>| {
            let mut d = Vec::new();
            p.encode(&mut d);
            cookie::third_step(&d).map(|(_, echoed)| echoed)
        };
        assert_eq!(echoed(&base), Some([9; 8]));
        let ack = ControlPacket {
            opcode: opcode::ACK_V1,
            msg_id: None,
            ..base.clone()
        };
        assert_eq!(echoed(&ack), Some([9; 8]));
        for bad in [
            ControlPacket {
                key_id: 1,
                ..base.clone()
            },
            ControlPacket {
                opcode: opcode::SOFT_RESET_V1,
                ..base.clone()
            },
            ControlPacket {
                msg_id: Some(2),
                ..base.clone()
            },
            ControlPacket {
                acks: [0u32, 5].into_iter().collect(),
                ..base.clone()
            },
            ControlPacket {
                acks: Default::default(),
                remote_session_id: None,
                ..base.clone()
            },
        ] {
            assert_eq!(echoed(&bad), None, "{bad:?}");
        }
    }
}
