//! The server's stateless session ids (OpenVPN 2.6's "HMAC cookie", the reference §3.9),
//! shared by the control thread and the data cores.
//!
//! A client's first hard reset is answered from no state: the server's session id is the first
//! 8 bytes of HMAC-SHA256 over the time slot (half the handshake window), both addresses and
//! the client's session id. A session is made only for a packet that echoes it, which comes
//! from an address that receives what we send. The cores answer first resets themselves (a
//! flood of spoofed resets costs each core a MAC and one 68-byte frame per packet and never
//! reaches the control thread's queue); control checks the echo with the same key and clock.

use ring::hmac;

use crate::session::Remote;

/// The answer to a client's first hard reset: the 26-byte server reset (the reference §12).
pub const ANSWER_LEN: usize = 26;
/// The shortest client hard reset: opcode, session id, no acks, msg-pid (the reference §2.1).
pub const RESET_MIN_LEN: usize = 14;

const HARD_RESET_CLIENT_V2_KEY0: u8 = 7 << 3;
const HARD_RESET_SERVER_V2_KEY0: u8 = 8 << 3;

/// Time slots a server session id stays valid in: the current and the two before (OpenVPN 2.6
/// checks the same three).
const SLOTS_VALID: u64 = 3;

/// The key and slot length of stateless session ids.
pub struct CookieKey {
    key: hmac::Key,
    slot_secs: u64,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieKey")
            .field("slot_secs", &self.slot_secs)
            .finish_non_exhaustive()
    }
}

impl CookieKey {
    /// A fresh random key for a handshake window of `hand_window_secs`.
    ///
    /// # Errors
    /// The system's random generator failed.
    pub fn generate(hand_window_secs: u64) -> Result<Self, ring::error::Unspecified> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())?;
        Ok(Self::with_key(key, hand_window_secs))
    }

    /// Ids under `key` (tests that need a known key).
    pub fn with_key(key: hmac::Key, hand_window_secs: u64) -> Self {
        Self {
            key,
            slot_secs: hand_window_secs.div_ceil(2).max(1),
        }
    }

    fn id_in(&self, slot: u64, remote: Remote, local: Remote, client: &[u8; 8]) -> [u8; 8] {
        let mut m = [0u8; 8 + 6 + 6 + 8];
        m[..8].copy_from_slice(&slot.to_be_bytes());
        m[8..12].copy_from_slice(&remote.ip.to_be_bytes());
        m[12..14].copy_from_slice(&remote.port.to_be_bytes());
        m[14..18].copy_from_slice(&local.ip.to_be_bytes());
        m[18..20].copy_from_slice(&local.port.to_be_bytes());
        m[20..].copy_from_slice(client);
        let tag = hmac::sign(&self.key, &m);
        let mut id = [0u8; 8];
        id.copy_from_slice(&tag.as_ref()[..8]);
        // A session id is never all zero (clients and our codec refuse it).
        id[7] |= u8::from(id == [0; 8]);
        id
    }

    /// Our session id for client session `client` at `remote` talking to our listener `local`,
    /// `secs` seconds after the clock origin the key's users share.
    pub fn session_id(
        &self,
        secs: u64,
        remote: Remote,
        local: Remote,
        client: &[u8; 8],
    ) -> [u8; 8] {
        self.id_in(secs / self.slot_secs, remote, local, client)
    }

    /// Whether `echoed` is an id we gave `client` at `remote` within its validity: at least
    /// the handshake window, at most half as long again.
    pub fn verify(
        &self,
        secs: u64,
        remote: Remote,
        local: Remote,
        client: &[u8; 8],
        echoed: &[u8; 8],
    ) -> bool {
        let slot = secs / self.slot_secs;
        (0..SLOTS_VALID)
            .filter_map(|back| slot.checked_sub(back))
            .any(|s| same(&self.id_in(s, remote, local, client), echoed))
    }
}

/// Compares without an early exit (the time must not tell how many bytes matched).
fn same(a: &[u8; 8], b: &[u8; 8]) -> bool {
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The client session id of a first hard reset (key_id 0, no acks, msg-pid 0), or `None`
/// for anything else. Bytes after the msg-pid (2.6's early-negotiation TLVs) are ignored.
pub fn first_reset(payload: &[u8]) -> Option<[u8; 8]> {
    let p = payload.get(..RESET_MIN_LEN)?;
    if p[0] != HARD_RESET_CLIENT_V2_KEY0 || p[9] != 0 || p[10..14] != [0; 4] {
        return None;
    }
    let mut sid = [0u8; 8];
    sid.copy_from_slice(&p[1..9]);
    (sid != [0; 8]).then_some(sid)
}

/// A client's third step of the first exchange, as OpenVPN 2.6 accepts it: a P_CONTROL_V1 or
/// P_ACK_V1 of key_id 0 whose acknowledgements and msg-pid stay within the first exchange (ids
/// 0 and 1) and whose acknowledgement block names a session id. Returns the client's session
/// id and the one it echoes, or `None`. Parses only the fixed fields; control uses it on
/// datagrams it has parsed, the cores on raw payloads (`is_valid_echo`).
pub fn third_step(payload: &[u8]) -> Option<([u8; 8], [u8; 8])> {
    const CONTROL_V1_KEY0: u8 = 4 << 3;
    const ACK_V1_KEY0: u8 = 5 << 3;
    let (&first, &acks) = (payload.first()?, payload.get(9)?);
    let acks = usize::from(acks);
    if !(first == CONTROL_V1_KEY0 || first == ACK_V1_KEY0) || !(1..=8).contains(&acks) {
        return None;
    }
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let ids_at = 10;
    let sid_at = ids_at + 4 * acks;
    if payload
        .get(ids_at..sid_at)?
        .chunks_exact(4)
        .any(|id| word(id) > 1)
    {
        return None;
    }
    let mut echoed = [0u8; 8];
    echoed.copy_from_slice(payload.get(sid_at..sid_at + 8)?);
    if first == CONTROL_V1_KEY0 && word(payload.get(sid_at + 8..sid_at + 12)?) > 1 {
        return None;
    }
    let mut client = [0u8; 8];
    client.copy_from_slice(&payload[1..9]);
    Some((client, echoed))
}

/// Whether `payload` is a client's third step (`third_step`) echoing an id we gave it
/// (`CookieKey::verify`).
pub fn is_valid_echo(
    key: &CookieKey,
    secs: u64,
    remote: Remote,
    local: Remote,
    payload: &[u8],
) -> bool {
    third_step(payload)
        .is_some_and(|(client, echoed)| key.verify(secs, remote, local, &client, &echoed))
}

/// Writes our answer: the server reset with session id `ours`, acknowledging msg-pid 0 of
/// client session `client`, msg-pid 0, no payload.
pub fn write_answer(out: &mut [u8; ANSWER_LEN], ours: &[u8; 8], client: &[u8; 8]) {
    out[0] = HARD_RESET_SERVER_V2_KEY0;
    out[1..9].copy_from_slice(ours);
    out[9] = 1;
    out[10..14].copy_from_slice(&[0; 4]);
    out[14..22].copy_from_slice(client);
    out[22..26].copy_from_slice(&[0; 4]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: u32, port: u16) -> Remote {
        Remote { ip, port }
    }

    fn key() -> CookieKey {
        CookieKey::with_key(hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]), 60)
    }

    #[test]
    fn an_echoed_id_verifies_only_for_its_client_and_within_the_window() {
        let c = key();
        let (r, l, sid) = (addr(0x0a00_0001, 40000), addr(0xc0a8_0001, 1194), [1u8; 8]);
        let t0 = 1_000;
        let id = c.session_id(t0, r, l, &sid);
        assert_ne!(id, [0; 8]);
        assert!(c.verify(t0, r, l, &sid, &id));
        // Slots are 30 s and t0 starts its slot at 990: valid to 1079, not from 1080.
        assert!(c.verify(1_079, r, l, &sid, &id));
        assert!(!c.verify(1_080, r, l, &sid, &id));
        assert!(
            !c.verify(t0 - 30, r, l, &sid, &id),
            "not before it was given"
        );
        // Another port, address, listener or client session id: not ours.
        assert!(!c.verify(t0, addr(0x0a00_0001, 40001), l, &sid, &id));
        assert!(!c.verify(t0, addr(0x0a00_0002, 40000), l, &sid, &id));
        assert!(!c.verify(t0, r, addr(0xc0a8_0001, 1195), &sid, &id));
        assert!(!c.verify(t0, r, l, &[2u8; 8], &id));
        let mut off = id;
        off[3] ^= 0x10;
        assert!(!c.verify(t0, r, l, &sid, &off));
        // Another key (another appliance, or after a restart): not ours.
        let other = CookieKey::generate(60).unwrap();
        assert_ne!(other.session_id(t0, r, l, &sid), id);
        assert!(!other.verify(t0, r, l, &sid, &id));
    }

    #[test]
    fn echoes_are_recognised_only_within_the_first_exchange() {
        let c = key();
        let (r, l, sid) = (addr(0x0a00_0001, 40000), addr(0xc0a8_0001, 1194), [1u8; 8]);
        let ours = c.session_id(100, r, l, &sid);
        let packet = |op: u8, acks: &[u32], msg: Option<u32>, echoed: [u8; 8]| {
            let mut p = vec![op << 3];
            p.extend(sid);
            p.push(acks.len() as u8);
            for a in acks {
                p.extend(a.to_be_bytes());
            }
            p.extend(echoed);
            if let Some(m) = msg {
                p.extend(m.to_be_bytes());
                p.extend([0x16, 3, 1]);
            }
            p
        };
        assert!(is_valid_echo(&c, 100, r, l, &packet(5, &[0], None, ours)));
        assert!(is_valid_echo(
            &c,
            100,
            r,
            l,
            &packet(4, &[0], Some(1), ours)
        ));
        assert!(is_valid_echo(
            &c,
            100,
            r,
            l,
            &packet(4, &[1, 0], Some(1), ours)
        ));
        let mut forged = ours;
        forged[0] ^= 1;
        for bad in [
            packet(5, &[0], None, forged),
            packet(5, &[2], None, ours),
            packet(4, &[0], Some(2), ours),
            packet(3, &[0], Some(1), ours),
            packet(4, &[], Some(1), ours),
        ] {
            assert!(!is_valid_echo(&c, 100, r, l, &bad), "{bad:02x?}");
        }
        assert!(!is_valid_echo(
            &c,
            100,
            addr(0x0a00_0001, 40001),
            l,
            &packet(5, &[0], None, ours)
        ));
        let whole = packet(4, &[0], Some(1), ours);
        for cut in 0..whole.len() - 3 {
            assert!(!is_valid_echo(&c, 100, r, l, &whole[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn first_resets_are_recognised_and_answered_in_26_bytes() {
        let mut reset = vec![0x38, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0];
        assert_eq!(first_reset(&reset), Some([1, 2, 3, 4, 5, 6, 7, 8]));
        reset.extend_from_slice(&[0, 1, 0, 2, 0, 1]);
        assert_eq!(
            first_reset(&reset),
            Some([1, 2, 3, 4, 5, 6, 7, 8]),
            "TLVs after"
        );
        for (at, v) in [(0, 0x39), (0, 0x20), (9, 1), (13, 1)] {
            let mut bad = reset.clone();
            bad[at] = v;
            assert_eq!(first_reset(&bad), None, "byte {at} = {v:#x}");
        }
        assert_eq!(first_reset(&reset[..13]), None);
        let mut zero = reset.clone();
        zero[1..9].copy_from_slice(&[0; 8]);
        assert_eq!(first_reset(&zero), None);
        let mut out = [0u8; ANSWER_LEN];
        write_answer(&mut out, &[0x11; 8], &[0x22; 8]);
        let mut expect = vec![0x40];
        expect.extend([0x11; 8]);
        expect.extend([1, 0, 0, 0, 0]);
        expect.extend([0x22; 8]);
        expect.extend([0, 0, 0, 0]);
        assert_eq!(out.to_vec(), expect);
    }
}
