//! Time-based one-time passwords (RFC 6238, HMAC-SHA1, 30-second steps) and base32 secrets
//! (RFC 4648). Time is passed in as Unix seconds.

use ring::hmac;

/// Seconds per step.
pub const STEP: u64 = 30;

/// Decodes RFC 4648 base32 (case-insensitive, padding and spaces ignored).
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The code for `step` with `digits` digits (RFC 4226 dynamic truncation).
pub fn code_at(secret: &[u8], step: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let h = tag.as_ref();
    let off = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[off]) & 0x7f) << 24
        | u32::from(h[off + 1]) << 16
        | u32::from(h[off + 2]) << 8
        | u32::from(h[off + 3]);
    bin % 10u32.pow(digits)
}

/// Checks a 6-digit code at `unix_now`, allowing one step of clock skew either way; returns
/// the step it matched, so the caller can refuse its reuse.
pub fn verify(secret: &[u8], code: &str, unix_now: u64) -> Option<u64> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let want: u32 = code.parse().ok()?;
    let now = unix_now / STEP;
    [now, now.saturating_sub(1), now + 1]
        .into_iter()
        .find(|s| code_at(secret, *s, 6) == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA1 column (8 digits).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, want) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(code_at(secret, t / STEP, 8), want, "T={t}");
        }
    }

    #[test]
    fn base32_and_skew() {
        assert_eq!(
            base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").as_deref(),
            Some(&b"12345678901234567890"[..])
        );
        // RFC 4648 §10: BASE32("foobar") = "MZXW6YTBOI======"; case and spaces do not matter.
        assert_eq!(
            base32_decode("MZXW6YTBOI======").as_deref(),
            Some(&b"foobar"[..])
        );
        assert_eq!(
            base32_decode("mzxw 6ytb oi").as_deref(),
            Some(&b"foobar"[..])
        );
        assert!(base32_decode("1").is_none());
        let secret = b"12345678901234567890";
        let at = 1_111_111_111;
        let code = format!("{:06}", code_at(secret, at / STEP, 6));
        assert_eq!(verify(secret, &code, at), Some(at / STEP));
        assert!(
            verify(secret, &code, at + STEP).is_some(),
            "one step late is accepted"
        );
        assert!(
            verify(secret, &code, at + 3 * STEP).is_none(),
            "three steps late is not"
        );
        assert!(verify(secret, "12345", at).is_none());
        assert!(verify(secret, "abcdef", at).is_none());
    }
}
