//! Auth-tokens (`proto::token`) against arbitrary strings: the input names a holder (endpoint,
//! username, common name, password hash), the times of a token, the clock and the lifetime,
//! and edits to make to the token issued for them (bytes replaced, inserted or removed), or a
//! string of its own. Oracles: a string is accepted only if it is the very token issued for
//! that holder (a token that verifies under another spelling could be presented again after
//! the one issued was revoked, as revocation keeps the issued string's digest); the token
//! issued verifies exactly when its times are good at that clock; `same` holds only for equal
//! strings; `validity` reads the times the token was issued with.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_control::proto::token::{Holder, Revoked, TokenKey, Validity};

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    /// A string of up to 15 bytes (lossy UTF-8).
    fn text(&mut self) -> String {
        let n = usize::from(self.byte() & 15).min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }
}

fuzz_target!(|data: &[u8]| {
    static KEY: OnceLock<TokenKey> = OnceLock::new();
    let key = KEY.get_or_init(|| TokenKey::generate().expect("a token key"));
    let mut input = Input(data);
    let flags = input.byte();
    let endpoint = u16::from(input.byte());
    let username = input.text();
    let common_name = (flags & 1 != 0).then(|| input.text());
    let password_hash = (flags & 2 != 0).then(|| input.text());
    let holder = Holder {
        endpoint,
        username: &username,
        common_name: common_name.as_deref(),
        password_hash: password_hash.as_deref(),
    };
    // Times near each other, so that good tokens are common.
    let authenticated = 1_800_000_000 + u64::from(input.byte()) * 60;
    let validity = Validity {
        authenticated,
        expires: authenticated + u64::from(input.byte()) * 60,
    };
    let now = 1_800_000_000 + u64::from(input.byte()) * 60;
    let lifetime = u64::from(input.byte()) * 60;
    let issued = key.issue(holder, validity);
    assert_eq!(TokenKey::validity(&issued), Some(validity));
    let good = key.verify(&issued, holder, now, lifetime);
    let expires = validity.expires.min(authenticated + lifetime);
    assert_eq!(
        good.is_some(),
        authenticated <= now + 60 && now < expires,
        "the token issued is good exactly while its times are"
    );

    let presented = if flags & 4 != 0 {
        // A string of the fuzzer's own.
        String::from_utf8_lossy(input.0).into_owned()
    } else {
        // The token issued, edited.
        let mut t = issued.clone().into_bytes();
        while !input.0.is_empty() {
            let op = input.byte();
            let at = usize::from(input.byte()) % (t.len() + 1);
            let b = input.byte();
            match op % 3 {
                0 if at < t.len() => t[at] = b,
                1 => t.insert(at, b),
                _ if at < t.len() => {
                    t.remove(at);
                }
                _ => {}
            }
        }
        String::from_utf8_lossy(&t).into_owned()
    };
    if let Some(v) = key.verify(&presented, holder, now, lifetime) {
        assert_eq!(
            presented, issued,
            "a string other than the token issued is accepted as it"
        );
        assert_eq!(Some(v), good);
    }
    assert_eq!(key.same(&issued, &presented), issued == presented);
    // Revoking the token issued refuses it, whatever the clock.
    let mut revoked = Revoked::default();
    revoked.revoke(&issued, validity.expires, now);
    assert!(revoked.is_revoked(&issued));
});
