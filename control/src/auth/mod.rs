//! Client authentication per endpoint: mutual (the certificate TLS verified), directory
//! (username and password), or both (both must pass), with optional TOTP through OpenVPN's
//! static challenge. Passwords and codes never appear in logs or Debug output.

pub mod directory;
pub mod totp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use base64::Engine;

use crate::connlog::FailureReason;
use crate::proto::key_method::Secret;
use crate::proto::server::Authenticator;
use crate::proto::verify::PasswordCheck;
use directory::Directory;

/// Parses OpenVPN's static-challenge password `SCRV1:<base64 password>:<base64 response>`
/// (openvpn-protocol.md §5.5); `None` if it is not in that form.
pub fn parse_static_challenge(password: &str) -> Option<(Secret, Secret)> {
    let rest = password.strip_prefix("SCRV1:")?;
    let (p, r) = rest.split_once(':')?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let p = String::from_utf8(b64.decode(p).ok()?).ok()?;
    let r = String::from_utf8(b64.decode(r).ok()?).ok()?;
    Some((Secret::new(p), Secret::new(r)))
}

/// An endpoint's authentication policy.
pub struct EndpointAuth {
    /// Client certificates required (TLS verified them; a common name must be present).
    pub mutual: bool,
    /// Username and password checked here, if configured.
    pub directory: Option<Box<dyn Directory>>,
    /// A TOTP code required through the static challenge.
    pub mfa: bool,
    /// The one-time codes the directory's users have spent: this endpoint's own, or shared
    /// with every endpoint that reads the same users file (`share_codes_of`).
    codes: Arc<Mutex<CodeRecord>>,
}

/// What a users file's users did with their one-time codes, kept for every endpoint that
/// reads the file: a code is a credential of the user, not of the endpoint, so one accepted
/// by one endpoint must not be taken again by another within its window, and wrong codes
/// count towards the throttle wherever they are tried.
#[derive(Clone, Default)]
pub struct CodeRecord {
    /// Last accepted TOTP step per user, so a code is not accepted twice.
    last_step: HashMap<String, u64>,
    /// Wrong codes in a row per user (given with the right password) and, once there have
    /// been `CODE_TRIES`, the step before which that user's codes are not checked.
    wrong_codes: HashMap<String, (u32, u64)>,
}

impl CodeRecord {
    /// Adds what `other` recorded: the later step used, the longer run of wrong codes.
    fn absorb(&mut self, other: Self) {
        for (user, step) in other.last_step {
            let s = self.last_step.entry(user).or_insert(step);
            *s = (*s).max(step);
        }
        for (user, (n, until)) in other.wrong_codes {
            let w = self.wrong_codes.entry(user).or_insert((n, until));
            *w = (w.0.max(n), w.1.max(until));
        }
    }
}

/// The records of the users files in use, by canonical path: one per file for the whole
/// process (the file, not an endpoint or a load of the configuration, is what the codes
/// belong to). A record lives while an authenticator holds it, so a reload, which builds the
/// new authenticators while the old ones still serve, finds the same record.
fn records() -> MutexGuard<'static, HashMap<PathBuf, Weak<Mutex<CodeRecord>>>> {
    static RECORDS: OnceLock<Mutex<HashMap<PathBuf, Weak<Mutex<CodeRecord>>>>> = OnceLock::new();
    RECORDS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The record of `codes`, whatever a panic elsewhere left it in (it holds only counts).
fn lock(codes: &Mutex<CodeRecord>) -> MutexGuard<'_, CodeRecord> {
    codes.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wrong one-time codes in a row a user may give before codes are refused unchecked...
const CODE_TRIES: u32 = 5;
/// ... for this many steps (5 minutes); then one code may be tried each time (RFC 4226 §7.3:
/// throttling, without which a million codes, three good at a time, can simply be tried).
const CODE_LOCK_STEPS: u64 = 10;

impl EndpointAuth {
    /// A policy.
    pub fn new(mutual: bool, directory: Option<Box<dyn Directory>>, mfa: bool) -> Self {
        Self {
            mutual,
            directory,
            mfa,
            codes: Arc::default(),
        }
    }

    /// Keeps the one-time codes spent in the record of the users file at `path`, which every
    /// authenticator given the same file (by its canonical path) shares.
    pub fn share_codes_of(mut self, path: &Path) -> Self {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut records = records();
        records.retain(|_, r| r.strong_count() > 0);
        self.codes = match records.get(&key).and_then(Weak::upgrade) {
            Some(shared) => shared,
            None => {
                let shared = Arc::default();
                records.insert(key, Arc::downgrade(&shared));
                shared
            }
        };
        self
    }
}

impl EndpointAuth {
    /// What both halves of a check start from: the directory, user and password, once the
    /// certificate is as the policy wants and both credentials were given; `None` without a
    /// directory (the certificate alone decides).
    fn credentials<'a>(
        &'a self,
        common_name: Option<&str>,
        username: Option<&'a str>,
        password: Option<&'a Secret>,
    ) -> Result<Option<(&'a dyn Directory, &'a str, &'a Secret)>, FailureReason> {
        if self.mutual && common_name.is_none() {
            return Err(FailureReason::BadCertificate);
        }
        let Some(dir) = &self.directory else {
            return Ok(None);
        };
        let (Some(user), Some(pass)) = (username, password) else {
            return Err(FailureReason::BadPassword);
        };
        Ok(Some((dir.as_ref(), user, pass)))
    }
}

impl Authenticator for EndpointAuth {
    /// Checks the password here and now (`password_check`, then `authenticate_checked`).
    fn authenticate(
        &mut self,
        unix_now: u64,
        common_name: Option<&str>,
        username: Option<&str>,
        password: Option<&Secret>,
    ) -> Result<Vec<String>, FailureReason> {
        let matches = match self.password_check(common_name, username, password)? {
            Some(c) => directory::hash_matches(&c.hash, c.password.expose()),
            None => true,
        };
        self.authenticate_checked(unix_now, common_name, username, password, matches)
    }

    /// The user's stored hash (or the directory's dummy for an unknown name) and the password
    /// given (without its one-time code), once the certificate is as the policy wants and the
    /// credentials are in the form it wants; `None` without a directory.
    fn password_check(
        &mut self,
        common_name: Option<&str>,
        username: Option<&str>,
        password: Option<&Secret>,
    ) -> Result<Option<PasswordCheck>, FailureReason> {
        let Some((dir, user, pass)) = self.credentials(common_name, username, password)? else {
            return Ok(None);
        };
        let password = if self.mfa {
            parse_static_challenge(pass.expose())
                .ok_or(FailureReason::MfaFailed)?
                .0
        } else {
            pass.clone()
        };
        Ok(Some(PasswordCheck {
            hash: dir.password_hash(user),
            password,
        }))
    }

    /// The rest of `authenticate` once the password was checked (`matches`): the user's
    /// groups, and with MFA the one-time code (its throttling and the steps already used).
    fn authenticate_checked(
        &mut self,
        unix_now: u64,
        common_name: Option<&str>,
        username: Option<&str>,
        password: Option<&Secret>,
        matches: bool,
    ) -> Result<Vec<String>, FailureReason> {
        let Some((dir, user, pass)) = self.credentials(common_name, username, password)? else {
            return Ok(Vec::new());
        };
        let u = match dir.user(user) {
            Some(u) if matches => u,
            _ => return Err(FailureReason::BadPassword),
        };
        if !self.mfa {
            return Ok(u.groups);
        }
        let Some((_, code)) = parse_static_challenge(pass.expose()) else {
            return Err(FailureReason::MfaFailed);
        };
        let secret = u.totp_secret.as_deref().ok_or(FailureReason::MfaFailed)?;
        let now = unix_now / totp::STEP;
        let mut codes = lock(&self.codes);
        if codes
            .wrong_codes
            .get(user)
            .is_some_and(|(n, until)| *n >= CODE_TRIES && now < *until)
        {
            return Err(FailureReason::MfaLocked);
        }
        let Some(step) = totp::verify(secret, code.expose(), unix_now) else {
            let (n, until) = codes.wrong_codes.entry(user.to_owned()).or_insert((0, 0));
            *n = n.saturating_add(1);
            if *n >= CODE_TRIES {
                *until = now + CODE_LOCK_STEPS;
            }
            return Err(FailureReason::MfaFailed);
        };
        codes.wrong_codes.remove(user);
        if codes.last_step.get(user).is_some_and(|s| *s >= step) {
            return Err(FailureReason::MfaFailed);
        }
        if codes.last_step.len() > 100_000 {
            // Only steps from the skew window on can be accepted again: older entries block
            // nothing and go. Newer ones stay, or their codes would be taken a second time.
            codes.last_step.retain(|_, s| s.saturating_add(1) >= now);
        }
        codes.last_step.insert(user.to_owned(), step);
        Ok(u.groups)
    }

    /// A user presenting an auth-token: still in the directory, with a certificate if the
    /// policy asks for one; the user's groups as the directory has them now.
    fn groups_of(
        &mut self,
        common_name: Option<&str>,
        username: &str,
    ) -> Result<Vec<String>, FailureReason> {
        if self.mutual && common_name.is_none() {
            return Err(FailureReason::BadCertificate);
        }
        let Some(dir) = &self.directory else {
            return Ok(Vec::new());
        };
        dir.user(username)
            .map(|u| u.groups)
            .ok_or(FailureReason::BadPassword)
    }

    /// The user's stored hash, which the user's auth-tokens are bound to; `None` without a
    /// directory (for a name the directory does not have, its dummy: `groups_of` refuses such
    /// a user anyway).
    fn password_hash(&mut self, username: &str) -> Option<String> {
        self.directory.as_ref().map(|d| d.password_hash(username))
    }

    /// The directory's users; none without one.
    fn usernames(&mut self) -> Vec<String> {
        self.directory
            .as_ref()
            .map(|d| d.usernames())
            .unwrap_or_default()
    }

    /// The one-time-code steps already used carry over a reload, so a code accepted just
    /// before it is not accepted again after it; so do wrong codes counted against a user.
    /// With the same users file the record is already the same; else (another file, or none
    /// shared) what the previous one recorded is added to this one's.
    fn take_over(&mut self, previous: &mut Self) {
        if !Arc::ptr_eq(&self.codes, &previous.codes) {
            // A copy: the previous record may still be another endpoint's (its file's).
            let old = lock(&previous.codes).clone();
            lock(&self.codes).absorb(old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use directory::{hash_password, UsersFileDirectory};

    fn dir() -> Box<dyn Directory> {
        let h = hash_password("pw").unwrap();
        Box::new(UsersFileDirectory::parse(&format!("[[user]]\nname = \"alice\"\npassword_hash = \"{h}\"\ngroups = [\"g\"]\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n")).unwrap())
    }

    fn scrv1(p: &str, r: &str) -> Secret {
        let b = base64::engine::general_purpose::STANDARD;
        Secret::new(format!("SCRV1:{}:{}", b.encode(p), b.encode(r)))
    }

    #[test]
    fn static_challenge_format() {
        // The reference's example: password `secret`, response `123456`.
        let (p, r) = parse_static_challenge("SCRV1:c2VjcmV0:MTIzNDU2").unwrap();
        assert_eq!((p.expose(), r.expose()), ("secret", "123456"));
        assert!(parse_static_challenge("secret").is_none());
        assert!(parse_static_challenge("SCRV1:!!:MTIz").is_none());
        assert!(parse_static_challenge("SCRV1:c2VjcmV0").is_none());
        let (p, r) = parse_static_challenge("SCRV1::").unwrap();
        assert_eq!((p.expose(), r.expose()), ("", ""));
    }

    proptest::proptest! {
        #[test]
        fn static_challenge_never_panics(s in ".{0,80}") {
            let _ = parse_static_challenge(&s);
        }
    }

    #[test]
    fn policies() {
        let now = 1_111_111_111;
        let code = format!(
            "{:06}",
            totp::code_at(b"12345678901234567890", now / totp::STEP, 6)
        );
        let mut mutual = EndpointAuth::new(true, None, false);
        assert_eq!(mutual.authenticate(now, Some("cn"), None, None), Ok(vec![]));
        assert_eq!(
            mutual.authenticate(now, None, None, None),
            Err(FailureReason::BadCertificate)
        );
        let mut pw = EndpointAuth::new(false, Some(dir()), false);
        assert_eq!(
            pw.authenticate(now, None, Some("alice"), Some(&Secret::new("pw".into()))),
            Ok(vec!["g".to_owned()])
        );
        assert_eq!(
            pw.authenticate(now, None, Some("alice"), Some(&Secret::new("no".into()))),
            Err(FailureReason::BadPassword)
        );
        assert_eq!(
            pw.authenticate(now, None, Some("alice"), None),
            Err(FailureReason::BadPassword)
        );
        let mut both = EndpointAuth::new(true, Some(dir()), false);
        assert_eq!(
            both.authenticate(now, None, Some("alice"), Some(&Secret::new("pw".into()))),
            Err(FailureReason::BadCertificate),
            "both must pass"
        );
        let mut mfa = EndpointAuth::new(false, Some(dir()), true);
        assert_eq!(
            mfa.authenticate(now, None, Some("alice"), Some(&scrv1("pw", &code))),
            Ok(vec!["g".to_owned()])
        );
        assert_eq!(
            mfa.authenticate(now, None, Some("alice"), Some(&scrv1("pw", &code))),
            Err(FailureReason::MfaFailed),
            "a code is used once"
        );
        assert_eq!(
            mfa.authenticate(now + 60, None, Some("alice"), Some(&scrv1("pw", "000000"))),
            Err(FailureReason::MfaFailed)
        );
        assert_eq!(
            mfa.authenticate(now, None, Some("alice"), Some(&Secret::new("pw".into()))),
            Err(FailureReason::MfaFailed),
            "no code"
        );
        assert_eq!(
            mfa.authenticate(now + 90, None, Some("alice"), Some(&scrv1("bad", &code))),
            Err(FailureReason::BadPassword)
        );
    }

    #[test]
    fn wrong_codes_in_a_row_stop_codes_being_checked_for_a_while() {
        let mut mfa = EndpointAuth::new(false, Some(dir()), true);
        let now = 1_111_111_111;
        let code = |at: u64| {
            format!(
                "{:06}",
                totp::code_at(b"12345678901234567890", at / totp::STEP, 6)
            )
        };
        let wrong = |at: u64| {
            let c: u32 = code(at).parse().unwrap();
            format!("{:06}", (c + 500_000) % 1_000_000)
        };
        let try_code = |mfa: &mut EndpointAuth, at: u64, c: &str| {
            mfa.authenticate(at, None, Some("alice"), Some(&scrv1("pw", c)))
        };
        for _ in 0..CODE_TRIES {
            assert_eq!(
                try_code(&mut mfa, now, &wrong(now)),
                Err(FailureReason::MfaFailed)
            );
        }
        // The right code, now, is not even checked: guessing stops here for five minutes.
        assert_eq!(
            try_code(&mut mfa, now, &code(now)),
            Err(FailureReason::MfaLocked)
        );
        let later = now + CODE_LOCK_STEPS * totp::STEP;
        assert_eq!(
            try_code(&mut mfa, later - totp::STEP, &code(later - totp::STEP)),
            Err(FailureReason::MfaLocked)
        );
        // Then one try at a time: a wrong one locks again, a right one clears the count.
        assert_eq!(
            try_code(&mut mfa, later, &wrong(later)),
            Err(FailureReason::MfaFailed)
        );
        assert_eq!(
            try_code(&mut mfa, later, &code(later)),
            Err(FailureReason::MfaLocked)
        );
        let after = later + CODE_LOCK_STEPS * totp::STEP;
        assert_eq!(
            try_code(&mut mfa, after, &code(after)),
            Ok(vec!["g".to_owned()])
        );
        assert_eq!(
            try_code(&mut mfa, after + totp::STEP, &wrong(after + totp::STEP)),
            Err(FailureReason::MfaFailed),
            "counted from nothing again"
        );
        let next = after + 2 * totp::STEP;
        assert_eq!(
            try_code(&mut mfa, next, &code(next)),
            Ok(vec!["g".to_owned()])
        );
        // A wrong password is not a wrong code.
        for _ in 0..CODE_TRIES {
            assert_eq!(
                mfa.authenticate(now, None, Some("alice"), Some(&scrv1("no", "000000"))),
                Err(FailureReason::BadPassword)
            );
        }
        assert!(!lock(&mfa.codes).wrong_codes.contains_key("alice"));
    }

    #[test]
    fn a_used_code_stays_used_when_many_users_have_signed_in() {
        let h = hash_password("pw").unwrap();
        let user = |name: &str| {
            format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{h}\"\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n")
        };
        let text = format!("{}{}", user("alice"), user("bob"));
        let dir = UsersFileDirectory::parse(&text).unwrap();
        let mut mfa = EndpointAuth::new(false, Some(Box::new(dir)), true);
        let now = 1_111_111_111;
        let step = now / totp::STEP;
        let code = |at: u64| format!("{:06}", totp::code_at(b"12345678901234567890", at, 6));
        let alice = scrv1("pw", &code(step));
        assert!(mfa
            .authenticate(now, None, Some("alice"), Some(&alice))
            .is_ok());
        // More users signed in than the table keeps, long enough ago to be forgotten.
        for i in 0..100_001 {
            lock(&mfa.codes)
                .last_step
                .insert(format!("user{i}"), step - 10);
        }
        let bob = scrv1("pw", &code(step));
        assert!(mfa.authenticate(now, None, Some("bob"), Some(&bob)).is_ok());
        assert_eq!(
            mfa.authenticate(now, None, Some("alice"), Some(&alice)),
            Err(FailureReason::MfaFailed),
            "alice's code, used a moment ago, is still used"
        );
        assert_eq!(
            lock(&mfa.codes).last_step.len(),
            2,
            "the old steps are forgotten"
        );
    }
}
