//! Auth-tokens (OpenVPN's `auth-token`, openvpn-protocol.md): pushed to a client that
//! authenticated with a password, which then sends the token instead of its password when it
//! renegotiates, and when it connects again after a restart of its connection (OpenVPN 2.6
//! keeps the token across a ping-restart or a change of network). Without a token that outlives
//! the connection, such a reconnection sends the cached password, whose one-time code is spent,
//! and a user with MFA is refused and the client exits.
//!
//! Stateless, as OpenVPN's own `auth-gen-token`: the token carries the time its user last
//! authenticated with a password, the time it expires (that time plus the endpoint's session
//! timeout in force when it was issued), and a MAC (HMAC-SHA256 under a key the server makes at
//! start) over both times, the endpoint, the username, the certificate's common name and the
//! user's stored password hash. It is good on this server for the same user and certificate,
//! while the user's password hash is the one it was issued under (a password changed in the
//! users file refuses the tokens issued before, which whoever held the old password may have
//! got), until it expires, or sooner if the session timeout in force now is shorter: a session
//! timeout raised later never makes a token good past the expiry it was issued with. A
//! restart of the appliance makes a new key, and the clients' next reconnection asks for their
//! credentials again. A token is a credential: it never appears in logs or Debug output.
//!
//! A token can be revoked before it expires (`Revoked`): an administrator's termination of a
//! connection revokes the token that connection holds, so its client must authenticate again
//! with its password (and one-time code). Only that token: the same user's other connections
//! (other devices, which authenticated at other times, so with other tokens) keep theirs. The
//! server keeps a digest of each revoked token until the expiry the token carries, past which
//! it is refused anyway. A user removed from the users file loses every token issued before
//! (`Revoked::revoke_user`): should the same user line come back within a token lifetime, its
//! password hash unchanged, the old tokens stay refused. The server keeps the name and the
//! time of the removal until every token issued before it has expired (the latest expiry of
//! a token the server issued until then).

use std::collections::HashMap;

use ring::digest;
use ring::hmac;
use ring::rand::SystemRandom;

/// What every token starts with (the format's version: 2 carries its expiry; a token of
/// another version is refused, as any string that is not this server's token). A token is
/// 104 characters: an OpenVPN client built without PKCS#11 keeps a password (and so a token)
/// of 127 at most (`USER_PASS_LEN`).
const PREFIX: &str = "sluice2-";
/// Hex digits of each time in a token.
const TIME: usize = 16;
/// Seconds a token's time may be ahead of the server's clock.
const SKEW: u64 = 60;

/// The server's token key.
pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Whom a token is for.
#[derive(Clone, Copy, Debug)]
pub struct Holder<'a> {
    /// The endpoint (the server's number).
    pub endpoint: u16,
    /// The username.
    pub username: &'a str,
    /// The client certificate's common name, if any.
    pub common_name: Option<&'a str>,
    /// The user's stored password hash (a PHC string), if the directory has one: the token
    /// is bound to it, so a new password refuses it.
    pub password_hash: Option<&'a str>,
}

/// The times a token carries (Unix seconds), both covered by its MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// When its holder last authenticated with a password.
    pub authenticated: u64,
    /// When it expires: `authenticated` plus the session timeout in force when it was issued.
    pub expires: u64,
}

impl TokenKey {
    /// A new random key.
    ///
    /// # Errors
    /// The system random generator failed.
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).map(Self)
    }

    /// The token of `holder`, good for `validity`: who authenticated with a password at
    /// `validity.authenticated`, until `validity.expires` (Unix seconds).
    pub fn issue(&self, holder: Holder<'_>, validity: Validity) -> String {
        let tag = hmac::sign(&self.0, &message(holder, validity));
        let mut t = format!(
            "{PREFIX}{:016x}{:016x}",
            validity.authenticated, validity.expires
        );
        for b in tag.as_ref() {
            t.push_str(&format!("{b:02x}"));
        }
        t
    }

    /// What `token` is good for, if it is this key's token for `holder` and good at `now`
    /// (Unix seconds): before the expiry it carries, and less than `lifetime` seconds (the
    /// session timeout in force now) after its holder authenticated. Its expiry is returned
    /// as the sooner of the two (a token issued again for it is good no longer).
    pub fn verify(
        &self,
        token: &str,
        holder: Holder<'_>,
        now: u64,
        lifetime: u64,
    ) -> Option<Validity> {
        let rest = token.strip_prefix(PREFIX)?;
        // Only the spelling `issue` writes, lowercase hex: read leniently (`A` as `a`, `+a`
        // as `0a`), another spelling of a token would verify as it, and a revoked token
        // (`Revoked` keeps the digest of the string issued) come back under a new one.
        if rest.len() != 2 * TIME + 64
            || !rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let tag = &rest[2 * TIME..];
        let validity = Self::validity(token)?;
        let tag = (0..tag.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&tag[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        hmac::verify(&self.0, &message(holder, validity), &tag).ok()?;
        let expires = validity
            .expires
            .min(validity.authenticated.saturating_add(lifetime));
        let fresh = validity.authenticated <= now.saturating_add(SKEW) && now < expires;
        fresh.then_some(Validity {
            expires,
            ..validity
        })
    }

    /// The times `token` carries (its MAC not checked: for a token the server issued
    /// itself).
    pub fn validity(token: &str) -> Option<Validity> {
        let times = token.strip_prefix(PREFIX)?.get(..2 * TIME)?;
        let (authenticated, expires) = times.split_at_checked(TIME)?;
        let time = |t: &str| {
            t.bytes()
                .all(|b| b.is_ascii_hexdigit())
                .then(|| u64::from_str_radix(t, 16).ok())
                .flatten()
        };
        Some(Validity {
            authenticated: time(authenticated)?,
            expires: time(expires)?,
        })
    }

    /// Whether `presented` is the token `issued` (a session's own, which its client sends
    /// instead of its password when it renegotiates), in a time that does not tell how much of
    /// it matched: both are MAC'd under the key and the MACs compared by `hmac::verify`, so
    /// the early exit of a byte-by-byte comparison never depends on the token's bytes.
    pub fn same(&self, issued: &str, presented: &str) -> bool {
        let tag = hmac::sign(&self.0, &compared(issued));
        hmac::verify(&self.0, &compared(presented), tag.as_ref()).is_ok()
    }
}

/// Tokens revoked before their time, each kept (as a SHA-256 digest, not the token) with the
/// expiry it carries, until then (past it the token is refused anyway, whatever the session
/// timeout becomes): at most one entry per connection an administrator terminated within a
/// token lifetime. And the users whose every token issued until a time is revoked (removed
/// from the users file), each kept until those tokens have all expired: at most one entry per
/// user removed within a token lifetime.
#[derive(Default)]
pub struct Revoked {
    /// Digest of the token -> its expiry (Unix seconds).
    tokens: HashMap<[u8; 32], u64>,
    /// The size at which the expired entries are next swept out (twice the size after the
    /// last sweep, so that sweeping costs a constant per revocation).
    sweep_at: usize,
    /// Username -> the time (Unix seconds) up to which its tokens are revoked (those of a
    /// password authentication then or before), and the time by which they have all expired.
    users: HashMap<String, (u64, u64)>,
    /// As `sweep_at`, for `users`.
    users_sweep_at: usize,
    /// The latest time (Unix seconds) a sweep went by: what expired by then may be gone from
    /// both maps (`swept_past`).
    swept_through: u64,
}

impl std::fmt::Debug for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Revoked({} tokens, {} users)",
            self.tokens.len(),
            self.users.len()
        )
    }
}

impl Revoked {
    /// Revokes `token`, which expires at `expires` (`Validity::expires`): refused
    /// (`is_revoked`) until then. Entries of tokens expired by `now` go at the same time, in
    /// sweeps.
    pub fn revoke(&mut self, token: &str, expires: u64, now: u64) {
        if self.tokens.len() >= self.sweep_at {
            self.tokens.retain(|_, expires| now < *expires);
            self.sweep_at = (self.tokens.len() * 2).max(64);
            self.swept_through = self.swept_through.max(now);
        }
        self.tokens.insert(token_digest(token), expires);
    }

    /// Whether `token` was revoked (and has not been swept out since, as expired).
    pub fn is_revoked(&self, token: &str) -> bool {
        !self.tokens.is_empty() && self.tokens.contains_key(&token_digest(token))
    }

    /// Revokes every token of `username` whose holder authenticated with a password at `now`
    /// or before (the user was removed): `is_revoked_for` refuses them until they expire, the
    /// tokens of a later authentication (the user added back, signing in again) being good.
    /// A later revocation of the same user moves the time on. The entry is kept until
    /// `expired`, by when every token issued until `now` has expired (the latest expiry of
    /// the tokens issued); entries whose time has come by `now` go at the same time, in sweeps.
    pub fn revoke_user(&mut self, username: &str, now: u64, expired: u64) {
        if self.users.len() >= self.users_sweep_at {
            self.users.retain(|_, (_, expired)| now < *expired);
            self.users_sweep_at = (self.users.len() * 2).max(64);
            self.swept_through = self.swept_through.max(now);
        }
        let (at, until) = self
            .users
            .entry(username.to_owned())
            .or_insert((now, expired));
        *at = (*at).max(now);
        *until = (*until).max(expired);
    }

    /// Whether a token of `username`, whose holder authenticated with a password at
    /// `authenticated`, was revoked with the user (`revoke_user`).
    pub fn is_revoked_for(&self, username: &str, authenticated: u64) -> bool {
        self.users
            .get(username)
            .is_some_and(|(at, _)| authenticated <= *at)
    }

    /// Whether a token that expires at `expires` may have been forgotten here: a sweep went
    /// past that time, and took the revocations of every token expired by then, this one's
    /// with them if it was revoked. Such a token is refused as revoked. Only a wall clock
    /// that went back since the sweep can present one still within its time; without this,
    /// a revoked token swept out as expired would verify again, until its expiry came round
    /// once more.
    pub fn swept_past(&self, expires: u64) -> bool {
        expires <= self.swept_through
    }

    /// Tokens kept (revoked one by one; not the users').
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Users kept (`revoke_user`).
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// What `TokenKey::same` MACs of a token: apart from `message`'s by its first bytes.
fn compared(token: &str) -> Vec<u8> {
    let mut m = b"sluice auth-token comparison 1".to_vec();
    m.extend_from_slice(token.as_bytes());
    m
}

/// What a token's MAC covers: its times, and each field with its length, so that no two
/// holders share one.
fn message(holder: Holder<'_>, validity: Validity) -> Vec<u8> {
    let mut m = b"sluice auth-token 3".to_vec();
    m.extend_from_slice(&holder.endpoint.to_be_bytes());
    m.extend_from_slice(&validity.authenticated.to_be_bytes());
    m.extend_from_slice(&validity.expires.to_be_bytes());
    for field in [
        Some(holder.username),
        holder.common_name,
        holder.password_hash,
    ] {
        match field {
            Some(f) => {
                m.push(1);
                m.extend_from_slice(&(f.len() as u64).to_be_bytes());
                m.extend_from_slice(f.as_bytes());
            }
            None => m.push(0),
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Good for `lifetime` seconds from `authenticated`.
    fn good(authenticated: u64, lifetime: u64) -> Validity {
        Validity {
            authenticated,
            expires: authenticated + lifetime,
        }
    }

    const ALICE: Holder<'static> = Holder {
        endpoint: 0,
        username: "alice",
        common_name: Some("laptop-1"),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA"),
    };

    #[test]
    fn a_token_is_good_for_its_holder_within_its_lifetime_only() {
        let key = TokenKey::generate().unwrap();
        let t = key.issue(ALICE, good(1_000_000, 3600));
        assert!(t.starts_with(PREFIX) && t.len() == PREFIX.len() + 96);
        assert!(t.len() <= 127, "fits an OpenVPN client's password buffer");
        let v = good(1_000_000, 3600);
        assert_eq!(key.verify(&t, ALICE, 1_000_000, 3600), Some(v));
        assert_eq!(key.verify(&t, ALICE, 1_003_599, 3600), Some(v));
        assert_eq!(key.verify(&t, ALICE, 1_003_600, 3600), None, "expired");
        assert_eq!(
            key.verify(&t, ALICE, 999_000, 3600),
            None,
            "from the future"
        );
        for other in [
            Holder {
                username: "bob",
                ..ALICE
            },
            Holder {
                endpoint: 1,
                ..ALICE
            },
            Holder {
                common_name: Some("laptop-2"),
                ..ALICE
            },
            Holder {
                common_name: None,
                ..ALICE
            },
            Holder {
                password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$b3RoZXI"),
                ..ALICE
            },
            Holder {
                password_hash: None,
                ..ALICE
            },
        ] {
            assert_eq!(key.verify(&t, other, 1_000_000, 3600), None, "{other:?}");
        }
        let other_key = TokenKey::generate().unwrap();
        assert_eq!(
            other_key.verify(&t, ALICE, 1_000_000, 3600),
            None,
            "another server's"
        );
    }

    /// A renegotiation's token against the session's: the same one is taken; one that
    /// differs in its last byte only, or is cut short or extended, is not.
    #[test]
    fn a_session_takes_back_its_own_token_only() {
        let key = TokenKey::generate().unwrap();
        let t = key.issue(ALICE, good(1_000_000, 3600));
        assert!(key.same(&t, &t.clone()));
        let mut last = t.clone().into_bytes();
        let end = last.len() - 1;
        last[end] = if last[end] == b'0' { b'1' } else { b'0' };
        let last = String::from_utf8(last).unwrap();
        assert!(!key.same(&t, &last));
        for other in [&t[..t.len() - 1], &format!("{t}0"), "", "pw"] {
            assert!(!key.same(&t, other), "{other:?}");
        }
    }

    /// A token is good until the expiry it was issued with, whatever the lifetime (session
    /// timeout) is when it is checked; a shorter lifetime now ends it sooner, and says so.
    #[test]
    fn a_token_never_outlives_the_lifetime_it_was_issued_with() {
        let key = TokenKey::generate().unwrap();
        let t = key.issue(ALICE, good(1_000_000, 3600));
        assert_eq!(
            key.verify(&t, ALICE, 1_003_599, 86_400),
            Some(good(1_000_000, 3600))
        );
        assert_eq!(
            key.verify(&t, ALICE, 1_003_600, 86_400),
            None,
            "a longer timeout since does not make it good"
        );
        assert_eq!(
            key.verify(&t, ALICE, 1_000_100, 600),
            Some(good(1_000_000, 600)),
            "a shorter timeout since ends it sooner"
        );
        assert_eq!(key.verify(&t, ALICE, 1_000_600, 600), None);
        assert_eq!(
            TokenKey::validity(&t),
            Some(good(1_000_000, 3600)),
            "the times it carries"
        );
        assert_eq!(TokenKey::validity("sluice1-00"), None);
    }

    /// Found by the `control_token` fuzz target: a token with one hex digit of its expiry
    /// in uppercase verified as the token issued, and so did one with a byte of its MAC
    /// written `+a` for `0a` (`from_str_radix` takes a sign): a terminated connection's
    /// client, whose token was revoked by its digest, could present such a spelling and be
    /// let in again without its password.
    #[test]
    fn only_the_spelling_issued_verifies_so_a_revoked_token_stays_refused() {
        let key = TokenKey::generate().unwrap();
        let tag = PREFIX.len() + 2 * TIME;
        // A token with a byte of its MAC below 0x10 (one in eight tokens has none).
        let (t, v, zero) = (0..)
            .find_map(|i| {
                let v = good(1_000_000 + i, 3600);
                let t = key.issue(ALICE, v);
                let zero = (tag..t.len()).step_by(2).find(|&at| &t[at..=at] == "0")?;
                Some((t, v, zero))
            })
            .unwrap();
        assert_eq!(key.verify(&t, ALICE, 1_000_100, 3600), Some(v));
        let mut revoked = Revoked::default();
        revoked.revoke(&t, v.expires, 1_000_100);
        // The last letter of the times' digits (there are some: 1_003_600 is 0xf5050),
        // uppercased; and the first digit of that MAC byte written as a sign.
        let at = t[..tag].rfind(|c: char| c.is_ascii_lowercase()).unwrap();
        let upper = format!("{}{}{}", &t[..at], t[at..=at].to_uppercase(), &t[at + 1..]);
        let signed = format!("{}+{}", &t[..zero], &t[zero + 1..]);
        for other in [upper, signed] {
            assert_ne!(other, t);
            assert!(!revoked.is_revoked(&other));
            assert_eq!(key.verify(&other, ALICE, 1_000_100, 3600), None, "{other}");
        }
    }

    /// A revoked token is refused until it would have expired, and then swept out: the set
    /// holds no more than the tokens revoked within a lifetime.
    #[test]
    fn a_revoked_token_is_kept_until_it_expires() {
        let key = TokenKey::generate().unwrap();
        let t = key.issue(ALICE, good(1_000_000, 3600));
        let other = key.issue(ALICE, good(1_000_001, 3600));
        let mut revoked = Revoked::default();
        assert!(!revoked.is_revoked(&t));
        revoked.revoke(&t, 1_003_600, 1_000_100);
        assert!(revoked.is_revoked(&t));
        assert!(!revoked.is_revoked(&other), "another session's token");
        // A sweep past t's expiry drops it; those still good stay.
        for i in 0..200u64 {
            revoked.revoke(&format!("t{i}"), 1_005_600 + i, 1_003_700);
        }
        assert!(!revoked.is_revoked(&t), "expired, swept out");
        // The clock goes back before t's expiry: t verifies again, but is refused as one a
        // sweep went past (it may have been revoked); tokens expiring later are not.
        assert_eq!(
            key.verify(&t, ALICE, 1_000_200, 3600).map(|v| v.expires),
            Some(1_003_600)
        );
        assert!(revoked.swept_past(1_003_600) && revoked.swept_past(1_003_700));
        assert!(!revoked.swept_past(1_003_701));
        assert!(revoked.is_revoked("t0") && revoked.is_revoked("t199"));
        for i in 0..1000u64 {
            revoked.revoke(&format!("u{i}"), 1_013_600, 1_010_000 + i);
        }
        assert_eq!(revoked.len(), 1000, "the t's expired and went");
        assert!(!format!("{revoked:?}").contains("u1"));
    }

    /// A user revoked at a time loses the tokens of authentications then and before, not those
    /// of later ones nor other users'; the entry goes once those tokens have all expired.
    #[test]
    fn a_users_revocation_takes_its_earlier_tokens_until_they_expire() {
        let mut revoked = Revoked::default();
        revoked.revoke_user("alice", 1_000_000, 2_000_100);
        assert!(revoked.is_revoked_for("alice", 999_000));
        assert!(
            revoked.is_revoked_for("alice", 1_000_000),
            "the same second"
        );
        assert!(
            !revoked.is_revoked_for("alice", 1_000_001),
            "signed in again since"
        );
        assert!(!revoked.is_revoked_for("bob", 999_000));
        // Removed again later: the time moves on, never back.
        revoked.revoke_user("alice", 1_000_050, 2_000_100);
        revoked.revoke_user("alice", 1_000_020, 2_000_100);
        assert!(revoked.is_revoked_for("alice", 1_000_040));
        // Sweeps drop the users whose tokens have all expired, and keep the others.
        for i in 0..200u64 {
            revoked.revoke_user(&format!("u{i}"), 2_100_000 + i, 3_100_100);
        }
        assert!(!revoked.is_revoked_for("alice", 999_000), "swept out");
        assert!(revoked.is_revoked_for("u0", 2_000_000));
        assert!(revoked.users() <= 200, "{revoked:?}");
        assert!(!format!("{revoked:?}").contains("u1"), "no names in Debug");
    }

    #[test]
    fn a_changed_or_malformed_token_is_refused() {
        let key = TokenKey::generate().unwrap();
        let t = key.issue(ALICE, good(1_000_000, 3600));
        // A later time, or a later expiry, with the same MAC (a token made to last longer).
        let later = t.replacen(
            &format!("{:016x}", 1_000_000u64),
            &format!("{:016x}", 1_003_000u64),
            1,
        );
        assert_eq!(key.verify(&later, ALICE, 1_003_500, 3600), None);
        let longer = t.replacen(
            &format!("{:016x}", 1_003_600u64),
            &format!("{:016x}", 1_086_400u64),
            1,
        );
        assert_ne!(longer, t);
        assert_eq!(key.verify(&longer, ALICE, 1_000_000, 86_400), None);
        // The first format (no expiry), and times that are not plain hex digits.
        let first = format!("sluice1-{:016x}{}", 1_000_000u64, &t[t.len() - 64..]);
        assert_eq!(key.verify(&first, ALICE, 1_000_000, 3600), None);
        let plus = t
            .replacen(PREFIX, &format!("{PREFIX}+"), 1)
            .replacen("0", "", 1);
        assert_eq!(plus.len(), t.len());
        assert_eq!(key.verify(&plus, ALICE, 1_000_000, 3600), None);
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(key.verify(&flipped, ALICE, 1_000_000, 3600), None);
        for bad in [
            "",
            PREFIX,
            "sluice1-zz",
            &t[..t.len() - 2],
            &format!("{t}00"),
            "pw",
            "é",
        ] {
            assert_eq!(key.verify(bad, ALICE, 1_000_000, 3600), None, "{bad:?}");
        }
        let non_ascii = format!(
            "{PREFIX}{}é{}",
            &t[PREFIX.len()..PREFIX.len() + 10],
            &t[PREFIX.len() + 12..]
        );
        assert_eq!(key.verify(&non_ascii, ALICE, 1_000_000, 3600), None);
    }
}
