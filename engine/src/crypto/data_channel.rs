//! The OpenVPN data channel: in-place AEAD open and seal of P_DATA_V2 packets.
//!
//! Spec: openvpn-protocol.md §7.1. Nonce = data-pid (4 bytes as on the wire) || the sender's
//! 8-byte implicit IV; AAD = bytes 0..8 (opcode/key_id, peer-id, data-pid); the 16-byte tag sits
//! before the ciphertext. Opening decrypts in place and trims the 24-byte header; sealing
//! prepends it into the buffer's headroom. Neither allocates.

use core::fmt;
use core::mem::{offset_of, size_of};

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::Zeroize;

use super::aead::Cipher;
use super::replay::{ReplayError, ReplayWindow};
use crate::packet::{DropReason, PacketBuf};
use crate::wire::openvpn::{
    data_v2_header, DataPacket, KeyId, PeerId, DATA_V2_HEADER_LEN, DATA_V2_OVERHEAD, TAG_LEN,
};

/// The send packet-id at which OpenVPN 2.6 asks for a renegotiation (§7.4).
pub const RENEGOTIATE_AT: u32 = 0xff00_0000;

/// Raw key material for one key_id, as the control channel derives it. Zeroed on drop; never
/// printed.
#[derive(Clone)]
pub struct KeyMaterial {
    /// The negotiated cipher.
    pub cipher: Cipher,
    /// Key for what we send (first `cipher.key_len()` bytes used).
    pub encrypt_key: [u8; 32],
    /// Implicit IV for what we send.
    pub encrypt_iv: [u8; 8],
    /// Key for what we receive.
    pub decrypt_key: [u8; 32],
    /// Implicit IV for what we receive.
    pub decrypt_iv: [u8; 8],
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        self.encrypt_key.zeroize();
        self.encrypt_iv.zeroize();
        self.decrypt_key.zeroize();
        self.decrypt_iv.zeroize();
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// The key could not be set up (cannot happen for the lengths `Cipher` uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyError;

#[cfg(test)]
thread_local! {
    /// Tests: whether `DataKey::new` refuses every key on this thread (`refuse_keys`).
    static REFUSE_KEYS: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Tests: makes `DataKey::new` refuse every key on the calling thread (`on`), or stop. Ring
/// refuses none of the key lengths `Cipher` uses, so what a core does with a refused key
/// cannot be reached otherwise; a test's thread is its own, so other tests are not touched.
#[cfg(test)]
pub(crate) fn refuse_keys(on: bool) {
    REFUSE_KEYS.with(|r| r.set(on));
}

/// What a successful seal asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealOutcome {
    /// Nothing.
    Sent,
    /// The send counter is near its end: renegotiate (the packet was still sent).
    RenegotiateSoon,
}

/// One key_id's data-channel state on the core that owns the session: both directions' keys,
/// the send counter and the replay window. Its halves can be held apart (`split`): a session
/// keeps each half next to the fields the same direction touches, and only the receive half of
/// the previous key.
pub struct DataKey {
    open: OpenKey,
    seal: SealKey,
}

/// The receive half of a key_id: the key, the peer's implicit IV and the replay window.
/// `repr(C)`: the small fields first, then ring's key, so the half is one run of lines.
#[repr(C)]
pub struct OpenKey {
    iv: [u8; 8],
    replay: ReplayWindow,
    key_id: KeyId,
    cipher: Cipher,
    key: LessSafeKey,
}

/// The send half of a key_id: the key, our implicit IV and the packet-id counter.
#[repr(C)]
pub struct SealKey {
    iv: [u8; 8],
    next_send: u32,
    key_id: KeyId,
    key: LessSafeKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("open", &self.open)
            .field("seal", &self.seal)
            .finish()
    }
}

impl fmt::Debug for OpenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenKey")
            .field("key_id", &self.key_id)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealKey")
            .field("key_id", &self.key_id)
            .field("next_send", &self.next_send)
            .finish_non_exhaustive()
    }
}

fn nonce(pid: [u8; 4], iv: &[u8; 8]) -> Nonce {
    // The packet-id and the IV's first half as one 8-byte store and the IV's second half as
    // one 4-byte store: ring reads the nonce as 8 and 4 bytes, and a load that spans two
    // stores still in flight cannot be forwarded from them (it waits for them to reach L1).
    let (front, back) = iv.split_at(4);
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&pid);
    head[4..].copy_from_slice(front);
    let head = u64::from_ne_bytes(head);
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&head.to_ne_bytes());
    n[8..].copy_from_slice(back);
    Nonce::assume_unique_for_key(n)
}

/// How much of ring's key opening or sealing a packet reads, by the number of bytes the AEAD
/// covers: what a core requests ahead of each packet (`SessionTable::prefetch_open`). Only a
/// prefetch plan: a wrong one costs time, never correctness.
///
/// ring 0.17.14 keeps an AES-GCM key in a 544-byte `LessSafeKey` on x86_64 (its private types,
/// laid out by rustc; `ring_reads_what_key_reach_says` checks the layout and the reads): the
/// variants' tags in bytes 0..16; the GHASH table in 16..272 (H^8 down to H^1 in 16-byte
/// entries at 16..144, their folded halves at 144..208, 208..272 unused); the AES round keys
/// and their count in 272..516; the algorithm (whose functions are called) at 528..536. On a
/// CPU with VAES, VPCLMULQDQ and AVX2, ring's AES-GCM reads only the powers the data needs:
/// under 128 bytes, the entries at 144 - 16 max(1, n / 16) .. 144 (H^1, at 128, also for the
/// AAD and length blocks); from 128 bytes, 16..208. ChaCha20-Poly1305 keeps its key in 8..40,
/// whose part past 16 a `Short` reach does not request: one miss a short packet of a
/// ChaCha20 session, to save one on every short AES-GCM packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyReach {
    /// Under 80 bytes: four powers of H at most (GHASH table 80..144).
    Short,
    /// 80 to 127 bytes: seven at most (16..144).
    Medium,
    /// 128 bytes or more: all eight, and the folded halves (16..208).
    Long,
    /// All of the key: on a CPU where ring takes another path, whose reads are not mapped here.
    #[default]
    Whole,
}

impl KeyReach {
    /// How many there are (for tables indexed by `KeyReach as usize`).
    pub const COUNT: usize = 4;

    /// The reach of opening or sealing `len` bytes (`mapped`: ring takes the path described
    /// above on this CPU).
    #[inline]
    pub fn of(len: usize, mapped: bool) -> Self {
        match (mapped, len) {
            (false, _) => Self::Whole,
            (true, 0..80) => Self::Short,
            (true, 80..128) => Self::Medium,
            (true, _) => Self::Long,
        }
    }

    /// Whether ring's AES-GCM takes, on this CPU, the path whose reads `KeyReach` maps: the
    /// features ring 0.17.14 asks for it (AES, PCLMULQDQ, AVX2, VAES, VPCLMULQDQ).
    pub fn mapped_here() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("vaes")
                && std::arch::is_x86_feature_detected!("vpclmulqdq")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Byte ranges (offset, length) of ring's `LessSafeKey` this reach reads; all of it
    /// unless the key has the size of the layout mapped above.
    const fn ring_spans(self) -> [(usize, usize); 3] {
        const WHOLE: [(usize, usize); 3] = [(0, size_of::<LessSafeKey>()), (0, 0), (0, 0)];
        if !cfg!(target_arch = "x86_64") || size_of::<LessSafeKey>() != 544 {
            return WHOLE;
        }
        // The tags; the GHASH entries; the round keys, their count, the algorithm.
        let tags = (0, 16);
        let rounds = (272, 536 - 272);
        match self {
            Self::Short => [tags, (80, 64), rounds],
            Self::Medium => [tags, (16, 128), rounds],
            Self::Long => [tags, (16, 192), rounds],
            Self::Whole => WHOLE,
        }
    }
}

/// Byte ranges of an `OpenKey` that opening a packet of `reach` touches: its own fields (the
/// IV, the replay window, the key_id and cipher) and what ring reads of its key.
pub(crate) const fn open_spans(reach: KeyReach) -> [(usize, usize); 4] {
    let [a, b, c] = shifted_by(reach.ring_spans(), offset_of!(OpenKey, key));
    [(0, offset_of!(OpenKey, key)), a, b, c]
}

/// The same for sealing with a `SealKey` (the IV, the counter, the key_id, and ring's key).
pub(crate) const fn seal_spans(reach: KeyReach) -> [(usize, usize); 4] {
    let [a, b, c] = shifted_by(reach.ring_spans(), offset_of!(SealKey, key));
    [(0, offset_of!(SealKey, key)), a, b, c]
}

/// `spans` moved `by` bytes further into an enclosing object.
pub(crate) const fn shifted_by<const N: usize>(
    mut spans: [(usize, usize); N],
    by: usize,
) -> [(usize, usize); N] {
    let mut i = 0;
    while i < N {
        spans[i].0 += by;
        i += 1;
    }
    spans
}

impl DataKey {
    /// Sets up the keys of `key_id` from `m`; the first packet sent will carry data-pid 1.
    ///
    /// # Errors
    /// `KeyError` if ring refuses the key (never for the lengths used).
    pub fn new(key_id: KeyId, m: &KeyMaterial) -> Result<Self, KeyError> {
        #[cfg(test)]
        if REFUSE_KEYS.with(core::cell::Cell::get) {
            return Err(KeyError);
        }
        let alg = m.cipher.algorithm();
        let len = m.cipher.key_len();
        let seal = UnboundKey::new(alg, &m.encrypt_key[..len]).map_err(|_| KeyError)?;
        let open = UnboundKey::new(alg, &m.decrypt_key[..len]).map_err(|_| KeyError)?;
        Ok(Self {
            open: OpenKey {
                iv: m.decrypt_iv,
                replay: ReplayWindow::default(),
                key_id,
                cipher: m.cipher,
                key: LessSafeKey::new(open),
            },
            seal: SealKey {
                iv: m.encrypt_iv,
                next_send: 1,
                key_id,
                key: LessSafeKey::new(seal),
            },
        })
    }

    /// The two halves, to be kept apart.
    pub fn split(self) -> (OpenKey, SealKey) {
        (self.open, self.seal)
    }

    /// The key_id.
    pub fn key_id(&self) -> KeyId {
        self.open.key_id
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.open.cipher
    }

    /// The data-pid the next sealed packet will carry.
    pub fn next_send(&self) -> u32 {
        self.seal.next_send
    }

    /// Sets the next send data-pid (tests of the wrap behaviour).
    pub fn set_next_send(&mut self, pid: u32) {
        self.seal.next_send = pid;
    }

    /// See `OpenKey::precheck`.
    ///
    /// # Errors
    /// `MalformedOpenvpn`, `Replayed` or `TooOld`.
    pub fn precheck(&self, packet: &[u8]) -> Result<u32, DropReason> {
        self.open.precheck(packet)
    }

    /// See `OpenKey::open`.
    ///
    /// # Errors
    /// `MalformedOpenvpn`, `Replayed`, `TooOld` or `BadAeadTag`; `buf` is then unspecified.
    #[inline]
    pub fn open<B: PacketBuf>(&mut self, buf: &mut B) -> Result<(), DropReason> {
        self.open.open(buf)
    }

    /// See `SealKey::seal`.
    ///
    /// # Errors
    /// `PacketIdExhausted` or `NoRoom`; `buf` is then unchanged.
    #[inline]
    pub fn seal<B: PacketBuf>(
        &mut self,
        buf: &mut B,
        peer: PeerId,
    ) -> Result<SealOutcome, DropReason> {
        self.seal.seal(buf, peer)
    }
}

impl OpenKey {
    /// The key_id.
    #[inline]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Checks the packet in `buf` against the replay window only (before any decryption).
    ///
    /// # Errors
    /// `MalformedOpenvpn`, `Replayed` or `TooOld`.
    pub fn precheck(&self, packet: &[u8]) -> Result<u32, DropReason> {
        let p = DataPacket::new_checked(packet).map_err(|_| DropReason::MalformedOpenvpn)?;
        let pid = p.packet_id();
        self.replay.check(pid).map_err(|e| match e {
            ReplayError::Replayed => DropReason::Replayed,
            ReplayError::TooOld => DropReason::TooOld,
        })?;
        Ok(pid)
    }

    /// Opens the P_DATA_V2 packet in `buf` in place; on success `buf` holds the plaintext.
    ///
    /// # Errors
    /// `MalformedOpenvpn`, `Replayed`, `TooOld` or `BadAeadTag`; `buf` is then unspecified.
    pub fn open<B: PacketBuf>(&mut self, buf: &mut B) -> Result<(), DropReason> {
        let pid = self.precheck(buf.data())?;
        let data = buf.data_mut();
        let mut aad = [0u8; DATA_V2_HEADER_LEN];
        aad.copy_from_slice(&data[..DATA_V2_HEADER_LEN]);
        let tag = Tag::try_from(&data[DATA_V2_HEADER_LEN..DATA_V2_OVERHEAD])
            .map_err(|_| DropReason::MalformedOpenvpn)?;
        let n = nonce(pid.to_be_bytes(), &self.iv);
        self.key
            .open_in_place_separate_tag(n, Aad::from(aad), tag, &mut data[DATA_V2_OVERHEAD..], 0..)
            .map_err(|_| DropReason::BadAeadTag)?;
        self.replay.mark(pid);
        buf.trim_front(DATA_V2_OVERHEAD);
        Ok(())
    }
}

impl SealKey {
    /// The key_id.
    #[inline]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Seals the plaintext in `buf` into a P_DATA_V2 packet for `peer`, in place.
    ///
    /// # Errors
    /// `PacketIdExhausted` when the counter is at its end (renegotiate first), `NoRoom` when the
    /// buffer lacks 24 bytes of headroom; `buf` is then unchanged.
    pub fn seal<B: PacketBuf>(
        &mut self,
        buf: &mut B,
        peer: PeerId,
    ) -> Result<SealOutcome, DropReason> {
        let pid = self.next_send;
        if pid == u32::MAX {
            return Err(DropReason::PacketIdExhausted);
        }
        buf.prepend(DATA_V2_OVERHEAD)
            .map_err(|_| DropReason::NoRoom)?;
        let data = buf.data_mut();
        // Built in registers and stored once: read back from the packet, the header's
        // narrower stores could not be forwarded to the AAD's wider load.
        let aad = data_v2_header(self.key_id, peer, pid);
        data[..DATA_V2_HEADER_LEN].copy_from_slice(&aad);
        let n = nonce(pid.to_be_bytes(), &self.iv);
        let sealed =
            self.key
                .seal_in_place_separate_tag(n, Aad::from(aad), &mut data[DATA_V2_OVERHEAD..]);
        let Ok(tag) = &sealed else {
            return Err(DropReason::NoRoom);
        };
        let (Ok(from), Some(Ok(to))) = (
            <&[u8; TAG_LEN]>::try_from(tag.as_ref()),
            data.get_mut(DATA_V2_HEADER_LEN..DATA_V2_OVERHEAD)
                .map(<&mut [u8; TAG_LEN]>::try_from),
        ) else {
            return Err(DropReason::NoRoom);
        };
        copy_tag(from, to);
        self.next_send = pid + 1;
        Ok(if pid >= RENEGOTIATE_AT {
            SealOutcome::RenegotiateSoon
        } else {
            SealOutcome::Sent
        })
    }
}

/// Copies a tag where ring left it (in the result it returns, written with one 16-byte store)
/// with one 16-byte load. Moved out of the result the usual way, LLVM copied it through the
/// stack as a byte and two overlapping words and read a word back across both stores: a load
/// the processor cannot forward, so each sealed packet waited for the stores to reach L1
/// (about two thirds of `SealKey::seal`'s own time in a sampling profile at 64 B).
#[inline(always)]
fn copy_tag(from: &[u8; TAG_LEN], to: &mut [u8; TAG_LEN]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};
        // SAFETY: `from` and `to` are 16 bytes (their types), the unaligned forms need no
        // alignment, and SSE2 is part of x86_64.
        #[allow(unsafe_code)]
        unsafe {
            let tag = _mm_loadu_si128(from.as_ptr().cast::<__m128i>());
            _mm_storeu_si128(to.as_mut_ptr().cast::<__m128i>(), tag);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        *to = *from;
    }
}

/// OpenVPN's keepalive ping payload (§9.1).
pub const PING_MAGIC: [u8; 16] = [
    0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48,
];

/// The prefix of OCC messages (§9.3).
pub const OCC_MAGIC: [u8; 16] = [
    0x28, 0x7f, 0x34, 0x6b, 0xd4, 0xef, 0x7a, 0x81, 0x2d, 0x56, 0xb8, 0xd3, 0xaf, 0xc5, 0x45, 0x9c,
];

/// The OCC_EXIT message type.
pub const OCC_EXIT: u8 = 6;

/// What a decrypted payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plaintext {
    /// An IP packet for the tunnel.
    Ip,
    /// The keepalive ping: consume, never forward.
    Keepalive,
    /// OCC_EXIT: the client is leaving.
    OccExit,
    /// Another OCC message (MTU tests): consume.
    OtherOcc,
}

/// Classifies a decrypted payload.
pub fn classify_plaintext(p: &[u8]) -> Plaintext {
    if p == PING_MAGIC {
        Plaintext::Keepalive
    } else if p.len() > 16 && p[..16] == OCC_MAGIC {
        if p[16] == OCC_EXIT {
            Plaintext::OccExit
        } else {
            Plaintext::OtherOcc
        }
    } else {
        Plaintext::Ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HeapBuf;

    const B4_KEY: &str = "10653c5e5dcd1de189231a1fff6c1e0ce68e3b3673ceb7478fb07dc652249fad";
    const B4_IV: &str = "27f1f24cfb7ed8ac";
    const B4_PACKET: &str =
        "4800000000000001 9003338d2e5dbdd9ac181bcb3b86159d 72560382bf764e4c9e63ec11f77ad948";

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `KeyReach` says which bytes of ring's key opening and sealing read; ring's layout is
    /// private, so this checks it the only way it can: a key with 16 bytes changed seals
    /// differently, or refuses to open, exactly when those bytes are read. Every 16 bytes of
    /// the GHASH table and the round keys (plain data, where changing a byte cannot break
    /// ring), at lengths on both sides of each reach's bounds: what is read must be in the
    /// reach. Where ring takes another path on this CPU, only the layout's size is checked
    /// (every reach is then `Whole`).
    #[test]
    #[allow(unsafe_code)]
    fn ring_reads_what_key_reach_says() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        assert_eq!(
            size_of::<LessSafeKey>(),
            544,
            "ring's key changed: map its layout again (KeyReach)"
        );
        if !KeyReach::mapped_here() {
            eprintln!("this CPU has no VAES path in ring: reads not checked");
            return;
        }
        let raw: Vec<u8> = (1..=32).collect();
        let key = || {
            Box::new(LessSafeKey::new(
                UnboundKey::new(&ring::aead::AES_256_GCM, &raw).unwrap(),
            ))
        };
        let nonce = || Nonce::assume_unique_for_key([7; 12]);
        let aad = [1u8; 8];
        let seal = |k: &LessSafeKey, len: usize| {
            let mut d = vec![0x5a; len];
            let tag = k
                .seal_in_place_separate_tag(nonce(), Aad::from(aad), &mut d)
                .unwrap();
            (d, tag.as_ref().to_vec())
        };
        let mut read_somewhere = [false; 512 / 16];
        for len in [
            1, 15, 16, 17, 63, 64, 65, 79, 80, 81, 100, 127, 128, 129, 200, 1400,
        ] {
            let reach = KeyReach::of(len, true);
            let spans = reach.ring_spans();
            let (sealed, tag) = seal(&key(), len);
            for (chunk, read) in read_somewhere.iter_mut().enumerate().skip(1) {
                let at = chunk * 16;
                let mut k = key();
                let bytes = std::ptr::from_mut::<LessSafeKey>(&mut *k).cast::<u8>();
                for i in at..at + 16 {
                    // SAFETY: inside the key, in bytes that hold the GHASH table or round keys
                    // (u32 and u128 arrays: any value is valid), as the size check pins.
                    unsafe { *bytes.add(i) ^= 0x11 };
                }
                let seal_reads = seal(&k, len) != (sealed.clone(), tag.clone());
                let mut d = sealed.clone();
                let t = Tag::try_from(&tag[..]).unwrap();
                let open_reads = k
                    .open_in_place_separate_tag(nonce(), Aad::from(aad), t, &mut d, 0..)
                    .is_err();
                if seal_reads || open_reads {
                    *read = true;
                    let covered = spans.iter().any(|&(o, l)| o <= at && at + 16 <= o + l);
                    assert!(
                        covered,
                        "{len} bytes ({reach:?}) read key bytes {at}..{}",
                        at + 16
                    );
                }
            }
        }
        // The mapping is not vacuous: the table's powers and the round keys were found read.
        assert!(
            read_somewhere[1..13].iter().all(|&r| r),
            "{read_somewhere:?}"
        );
        assert!(
            read_somewhere[17..32].iter().all(|&r| r),
            "{read_somewhere:?}"
        );
        assert!(
            !read_somewhere[13..17].iter().any(|&r| r),
            "{read_somewhere:?}"
        );
    }

    /// Keys where `ours` (the B.4 client->server key) is used in the direction `decrypt`.
    fn material(cipher: Cipher, b4_is_decrypt: bool) -> KeyMaterial {
        let mut k = [0u8; 32];
        k.copy_from_slice(&hex(B4_KEY));
        let mut iv = [0u8; 8];
        iv.copy_from_slice(&hex(B4_IV));
        let (other_k, other_iv) = ([7u8; 32], [9u8; 8]);
        if b4_is_decrypt {
            KeyMaterial {
                cipher,
                encrypt_key: other_k,
                encrypt_iv: other_iv,
                decrypt_key: k,
                decrypt_iv: iv,
            }
        } else {
            KeyMaterial {
                cipher,
                encrypt_key: k,
                encrypt_iv: iv,
                decrypt_key: other_k,
                decrypt_iv: other_iv,
            }
        }
    }

    #[test]
    fn reference_vector_opens_to_the_ping() {
        let mut server = DataKey::new(KeyId(0), &material(Cipher::Aes256Gcm, true)).unwrap();
        let mut buf = HeapBuf::from_slice(&hex(B4_PACKET));
        server.open(&mut buf).unwrap();
        assert_eq!(buf.data(), PING_MAGIC);
        assert_eq!(classify_plaintext(buf.data()), Plaintext::Keepalive);
        // The same packet again is a replay.
        let mut again = HeapBuf::from_slice(&hex(B4_PACKET));
        assert_eq!(server.open(&mut again), Err(DropReason::Replayed));
    }

    #[test]
    fn reference_vector_seals_byte_for_byte() {
        let mut client = DataKey::new(KeyId(0), &material(Cipher::Aes256Gcm, false)).unwrap();
        let mut buf = HeapBuf::from_slice(&PING_MAGIC);
        assert_eq!(client.seal(&mut buf, PeerId(0)), Ok(SealOutcome::Sent));
        assert_eq!(buf.data(), hex(B4_PACKET).as_slice());
        assert_eq!(client.next_send(), 2);
    }

    #[test]
    fn tampering_fails_and_does_not_move_the_window() {
        let mut server = DataKey::new(KeyId(0), &material(Cipher::Aes256Gcm, true)).unwrap();
        let mut bytes = hex(B4_PACKET);
        bytes[30] ^= 1;
        let mut buf = HeapBuf::from_slice(&bytes);
        assert_eq!(server.open(&mut buf), Err(DropReason::BadAeadTag));
        let mut good = HeapBuf::from_slice(&hex(B4_PACKET));
        assert_eq!(
            server.open(&mut good),
            Ok(()),
            "a forged packet must not mark its id"
        );
    }

    #[test]
    fn round_trip_every_cipher() {
        for cipher in [
            Cipher::Aes256Gcm,
            Cipher::Aes128Gcm,
            Cipher::ChaCha20Poly1305,
        ] {
            let mut a = DataKey::new(KeyId(3), &material(cipher, false)).unwrap();
            let mut b = DataKey::new(KeyId(3), &material(cipher, true)).unwrap();
            for n in 1..=3u8 {
                let payload = vec![n; 100 * usize::from(n)];
                let mut buf = HeapBuf::from_slice(&payload);
                a.seal(&mut buf, PeerId(0x123456)).unwrap();
                let p = DataPacket::new_checked(buf.data()).unwrap();
                assert_eq!(
                    (p.key_id(), p.peer_id(), p.packet_id()),
                    (KeyId(3), PeerId(0x123456), u32::from(n))
                );
                b.open(&mut buf).unwrap();
                assert_eq!(buf.data(), payload.as_slice(), "{cipher:?}");
            }
        }
    }

    #[test]
    fn send_counter_asks_for_renegotiation_and_stops() {
        let mut a = DataKey::new(KeyId(1), &material(Cipher::Aes256Gcm, false)).unwrap();
        a.set_next_send(RENEGOTIATE_AT);
        let mut buf = HeapBuf::from_slice(b"x");
        assert_eq!(
            a.seal(&mut buf, PeerId(1)),
            Ok(SealOutcome::RenegotiateSoon)
        );
        a.set_next_send(u32::MAX);
        let mut buf = HeapBuf::from_slice(b"x");
        assert_eq!(
            a.seal(&mut buf, PeerId(1)),
            Err(DropReason::PacketIdExhausted)
        );
        assert_eq!(buf.data(), b"x");
    }

    #[test]
    fn no_room_leaves_the_packet() {
        let mut a = DataKey::new(KeyId(1), &material(Cipher::Aes256Gcm, false)).unwrap();
        let mut buf = HeapBuf::with_capacity(64, 8);
        buf.append(4).unwrap().copy_from_slice(b"data");
        assert_eq!(a.seal(&mut buf, PeerId(1)), Err(DropReason::NoRoom));
        assert_eq!(buf.data(), b"data");
        assert_eq!(a.next_send(), 1);
    }

    #[test]
    fn classifies_occ_and_keys_stay_secret() {
        let mut exit = OCC_MAGIC.to_vec();
        exit.push(OCC_EXIT);
        assert_eq!(classify_plaintext(&exit), Plaintext::OccExit);
        exit[16] = 4;
        assert_eq!(classify_plaintext(&exit), Plaintext::OtherOcc);
        assert_eq!(classify_plaintext(&[0x45, 0, 0, 20]), Plaintext::Ip);
        let m = material(Cipher::Aes256Gcm, true);
        let shown = format!("{m:?} {:?}", DataKey::new(KeyId(0), &m).unwrap());
        assert!(
            !shown.contains("16") && !shown.to_lowercase().contains("10653c"),
            "{shown}"
        );
    }
}
