//! Password checks handed out of the control channel. A check costs tens of milliseconds of
//! argon2 (m=19456 KiB, t=2): the server does not run it (it serves every client's control
//! channel on one thread) but asks for it (`Verification`, `Server::poll_verification`) and
//! takes its verdict back (`Verdict`, `Server::verified`); the runtime runs it on threads of
//! its own (`runtime::verifier`). Sans-IO: no threads, no clock here.
//!
//! Neither the stored hash nor the password appears in Debug output.

use std::fmt;

use super::key_method::Secret;

/// A password to check against a stored hash (a PHC string; for an unknown user, a hash of
/// the same cost no password matches, so the answer's timing does not tell which names exist).
pub struct PasswordCheck {
    /// The stored hash.
    pub hash: String,
    /// The password the client gave (without a one-time code).
    pub password: Secret,
}

impl fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordCheck(..)")
    }
}

/// A check the server asks for, under the id its verdict comes back with.
#[derive(Debug)]
pub struct Verification {
    /// The job's id (unique in its server).
    pub id: u64,
    /// What to check.
    pub check: PasswordCheck,
}

/// What came of a `Verification`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password matches the hash.
    Matches,
    /// It does not (or the hash cannot be read).
    DoesNotMatch,
    /// The check was not run (the checkers had no room for it): the client is refused for
    /// now (`FailureReason::VerifierBusy`), as neither answer is known; a renegotiation's new
    /// key fails, and the session goes on with its active key.
    Unchecked,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_neither_hash_nor_password() {
        let v = Verification {
            id: 7,
            check: PasswordCheck {
                hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
                password: Secret::new("hunter2".into()),
            },
        };
        let shown = format!("{v:?}");
        assert_eq!(shown, "Verification { id: 7, check: PasswordCheck(..) }");
    }
}
