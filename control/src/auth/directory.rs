//! The user directory: a `Directory` trait (the seam an LDAP or Active Directory backend will
//! implement), and the embedded default, a TOML users file with argon2id password hashes,
//! group memberships and optional TOTP secrets.
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # sluice hash-password
//! groups = ["engineering"]
//! totp_secret = "JBSWY3DPEHPK3PXP"                         # base32, optional
//! ```
//!
//! As sshd's StrictModes does for its key files, a users file is refused when it is owned by
//! a user other than root and the one the process runs as (its owner may change it whatever the
//! mode), when users other than its owner and group may write it (they could add themselves),
//! or read it while it holds TOTP secrets (kept in plain text, unlike the password hashes).
//! As sshd's `safe_path` does, the directories on its real path (symbolic links resolved), up to
//! `/`, are checked as well: each must be owned by root or the process's user, and writable by
//! no one else (group and others), since whoever may write a directory may put another file in
//! place of what it holds. A directory with the sticky bit (`/tmp`) is the exception sshd does
//! not make: there only an entry's owner may rename or remove it, and the entry is checked in
//! turn.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;

use crate::config::error::line_col;
use crate::config::files::USERS_LIMIT;
use crate::connlog::FailureReason;

/// A user as the directory knows them. Its Debug output shows whether a TOTP secret is set,
/// never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Groups (for authorization rules).
    pub groups: Vec<String>,
    /// TOTP secret (decoded), if MFA is set up.
    pub totp_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("groups", &self.groups)
            .field("totp_secret", &self.totp_secret.as_ref().map(|_| ".."))
            .finish()
    }
}

/// Where users and passwords are checked.
pub trait Directory: Send {
    /// The stored password hash of `username` (a PHC string); for a name the directory does
    /// not have, a hash of the same cost that no password matches, so that checking it takes
    /// as long and the answer's timing does not tell which names exist. The check itself
    /// (`hash_matches`) is slow and is run off the control thread (`proto::verify`).
    fn password_hash(&self, username: &str) -> String;

    /// The user named `username`, if the directory has one (no password checked: for a client
    /// that proved itself with an auth-token, or whose password was checked).
    fn user(&self, username: &str) -> Option<User>;

    /// The names of all its users (a reload compares them, to revoke the auth-tokens of the
    /// users removed: `proto::server::Server::set_authenticator`).
    fn usernames(&self) -> Vec<String>;

    /// Checks a password, here and now (tens of milliseconds); returns the user.
    ///
    /// # Errors
    /// `BadPassword` for an unknown user or a wrong password (the same answer for both).
    fn verify(&self, username: &str, password: &str) -> Result<User, FailureReason> {
        let ok = hash_matches(&self.password_hash(username), password);
        match (ok, self.user(username)) {
            (true, Some(u)) => Ok(u),
            _ => Err(FailureReason::BadPassword),
        }
    }
}

/// Whether `password` matches `hash`, an argon2 PHC string (false if it is none). Costs what
/// the hash's parameters say: about 15 ms at sluice's (m=19456 KiB, t=2, p=1) on one core.
pub fn hash_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default, rename = "user")]
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    totp_secret: Option<String>,
}

/// The embedded directory loaded from a users file.
pub struct UsersFileDirectory {
    users: HashMap<String, (String, User)>,
    /// A hash verified for unknown users, so timing does not tell which names exist: made
    /// with the algorithm and cost of the file's first user (a file's hashes usually share
    /// them), since verifying takes as long as the cost says.
    dummy: String,
}

impl UsersFileDirectory {
    /// Loads and checks a users file, its permissions included (the module's doc).
    ///
    /// # Errors
    /// `file:line:column: message` for the first problem in the text; `file: message` when it
    /// cannot be read or is not a regular file, is owned by a user other than root and this
    /// process's, or others than its owner and group may write it, or read it and it holds
    /// TOTP secrets.
    pub fn load(path: &Path) -> Result<Self, String> {
        let at = |e: String| format!("{}: {e}", path.display());
        // Without waiting, and only a regular file: a FIFO would hold the control thread (a
        // reload), a device (/dev/zero) fill the memory. The owner and mode are those of the
        // file read, not of whatever the name points to a moment later.
        let (file, meta) = crate::config::files::open_regular(path).map_err(at)?;
        let mode = meta.permissions().mode() & 0o7777;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != me {
            return Err(at(format!(
                "owned by uid {}, neither root nor this process's user (uid {me}): its owner \
                 may rewrite it whatever its mode (and add themselves); chown root it",
                meta.uid()
            )));
        }
        if mode & 0o002 != 0 {
            return Err(at(format!(
                "mode {mode:04o} lets any user write it (and add themselves); \
                 chmod 600 (or 640 for a group of readers) it"
            )));
        }
        safe_directories(path, me).map_err(at)?;
        let text = crate::config::files::read_opened(file, &meta, USERS_LIMIT).map_err(at)?;
        let text = String::from_utf8(text)
            .map_err(|_| at("stream did not contain valid UTF-8".to_owned()))?;
        let dir = Self::parse(&text).map_err(|e| format!("{}:{e}", path.display()))?;
        if mode & 0o004 != 0 && dir.users.values().any(|(_, u)| u.totp_secret.is_some()) {
            return Err(at(format!(
                "mode {mode:04o} lets any user read the TOTP secrets it holds; \
                 chmod 600 (or 640 for a group of readers) it"
            )));
        }
        Ok(dir)
    }

    /// Parses users-file text.
    ///
    /// # Errors
    /// `line:column: message` for the first problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| {
            let (l, c) = line_col(text, e.span().map_or(0, |s| s.start));
            format!("{l}:{c}: {}", e.message())
        })?;
        let mut users = HashMap::new();
        // Hashed with once every user's hash is known to be affordable (`verifiable`).
        let first_hash = file.users.first().map(|u| u.password_hash.clone());
        for u in file.users {
            let at = |msg: String| {
                let off = text.find(&format!("\"{}\"", u.name)).unwrap_or(0);
                let (l, c) = line_col(text, off);
                format!("{l}:{c}: user {}: {msg}", u.name)
            };
            let hash = PasswordHash::new(&u.password_hash)
                .map_err(|e| at(format!("password_hash is not a PHC string: {e}")))?;
            verifiable(&hash).map_err(at)?;
            let totp_secret = match &u.totp_secret {
                Some(s) => Some(
                    super::totp::base32_decode(s)
                        .filter(|k| k.len() >= 10)
                        .ok_or_else(
                            || at("totp_secret is not base32 of at least 80 bits".into()),
                        )?,
                ),
                None => None,
            };
            if users
                .insert(
                    u.name.clone(),
                    (
                        u.password_hash,
                        User {
                            groups: u.groups,
                            totp_secret,
                        },
                    ),
                )
                .is_some()
            {
                return Err(at("defined twice".into()));
            }
        }
        let dummy = match first_hash {
            Some(h) => hash_like(&h),
            None => hash_password("not a password").ok(),
        };
        Ok(Self {
            users,
            dummy: dummy.unwrap_or_default(),
        })
    }

    /// The users' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

impl Directory for UsersFileDirectory {
    fn user(&self, username: &str) -> Option<User> {
        self.users.get(username).map(|(_, u)| u.clone())
    }

    fn password_hash(&self, username: &str) -> String {
        match self.users.get(username) {
            Some((h, _)) => h.clone(),
            None => self.dummy.clone(),
        }
    }

    fn usernames(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }
}

/// Whether a password could ever match `hash`: an argon2 PHC string with its salt and hash
/// and parameters Argon2 takes. Any other PHC string parses, but every password is then refused
/// in silence, so the users file is refused instead. The check hashes at the lowest cost (the
/// stored parameters are checked, not worked through), so loading stays quick.
/// Checks the directories on the real path of the file at `path` (the module's doc), from its
/// own up to `/`; `me` is the process's user.
///
/// # Errors
/// The path cannot be resolved, a directory cannot be looked at, is owned by a user other than
/// root and `me`, or may be written by its group or others without the sticky bit: the message
/// names the directory.
fn safe_directories(path: &Path, me: u32) -> Result<(), String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("resolving its path: {e}"))?;
    let mut dir = real.parent();
    while let Some(d) = dir {
        let meta =
            std::fs::metadata(d).map_err(|e| format!("its directory {}: {e}", d.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.uid() != 0 && meta.uid() != me {
            return Err(format!(
                "its directory {} is owned by uid {}, neither root nor this process's user \
                 (uid {me}): its owner may put another users file in its place; chown root it",
                d.display(),
                meta.uid()
            ));
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "its directory {} has mode {mode:04o}: users other than its owner may put \
                 another users file in its place; chmod go-w it",
                d.display()
            ));
        }
        dir = d.parent();
    }
    Ok(())
}

/// The most memory an argon2 password hash of a users file may ask for, in KiB: 256 MiB, 13
/// times what `sluice hash-password` uses (19 MiB).
pub const MAX_HASH_MEMORY_KIB: u32 = 256 << 10;
/// The most work one may ask for, memory times passes (KiB): 64 times `sluice hash-password`'s
/// (19,456 KiB, 2 passes), about a second.
pub const MAX_HASH_WORK: u64 = 64 * 19_456 * 2;

/// Whether `hash` is an argon2 hash the appliance can check, at a cost it can pay: loading a
/// users file hashes a password with its first user's parameters (the cost an unknown name's
/// check must match), on the thread that loads it (`sluice validate`, any verb, the daemon's
/// reload), and every login pays its user's. `m=4294967295` asked for 4 TiB (the failed
/// allocation aborts the process), `t=4294967295` hashed for hours.
fn verifiable(hash: &PasswordHash<'_>) -> Result<(), String> {
    argon2::Algorithm::try_from(hash.algorithm).map_err(|_| {
        format!(
            "password_hash is a `{}` hash; sluice verifies argon2 hashes (sluice hash-password \
             makes one)",
            hash.algorithm
        )
    })?;
    let (Some(salt), Some(output)) = (hash.salt, hash.hash) else {
        return Err("password_hash has no salt or no hash".into());
    };
    let params =
        argon2::Params::try_from(hash).map_err(|e| format!("password_hash parameters: {e}"))?;
    let (m, t) = (params.m_cost(), params.t_cost());
    if m > MAX_HASH_MEMORY_KIB || u64::from(m) * u64::from(t) > MAX_HASH_WORK {
        return Err(format!(
            "password_hash asks for {m} KiB and {t} passes; sluice takes at most \
             {MAX_HASH_MEMORY_KIB} KiB, and {MAX_HASH_WORK} KiB-passes in all (its checks run on \
             the appliance at every login; sluice hash-password makes one)"
        ));
    }
    let cheapest = argon2::Params::new(
        argon2::Params::MIN_M_COST,
        argon2::Params::MIN_T_COST,
        argon2::Params::MIN_P_COST,
        Some(output.len()),
    )
    .map_err(|e| format!("password_hash: {e}"))?;
    Argon2::default()
        .hash_password_customized(b"", Some(hash.algorithm), hash.version, cheapest, salt)
        .map(|_| ())
        .map_err(|e| format!("password_hash cannot be verified: {e}"))
}

/// A hash of a password no one has, with the algorithm, version and parameters of `like`;
/// `None` if `like` is no argon2 hash (the file is then refused anyway).
fn hash_like(like: &str) -> Option<String> {
    let like = PasswordHash::new(like).ok()?;
    let argon2 = Argon2::new(
        argon2::Algorithm::try_from(like.algorithm).ok()?,
        like.version
            .map_or(Ok(argon2::Version::default()), argon2::Version::try_from)
            .ok()?,
        argon2::Params::try_from(&like).ok()?,
    );
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2
        .hash_password(b"not a password", &salt)
        .map(|h| h.to_string())
        .ok()
}

/// Hashes a password into an argon2id PHC string (for `sluice hash-password`).
///
/// # Errors
/// The hasher failed (cannot happen with the default parameters).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> String {
        let h = hash_password("correct horse").unwrap();
        format!("[[user]]\nname = \"alice\"\npassword_hash = \"{h}\"\ngroups = [\"engineering\", \"ops\"]\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n\n[[user]]\nname = \"bob\"\npassword_hash = \"{h}\"\n")
    }

    #[test]
    fn verifies_passwords_and_returns_groups() {
        let d = UsersFileDirectory::parse(&file()).unwrap();
        let alice = d.verify("alice", "correct horse").unwrap();
        assert_eq!(alice.groups, vec!["engineering", "ops"]);
        assert_eq!(
            alice.totp_secret.as_deref(),
            Some(&b"12345678901234567890"[..])
        );
        assert_eq!(d.verify("alice", "wrong"), Err(FailureReason::BadPassword));
        assert_eq!(
            d.verify("mallory", "correct horse"),
            Err(FailureReason::BadPassword),
            "unknown users look the same"
        );
        assert!(d.verify("bob", "correct horse").unwrap().groups.is_empty());
    }

    #[test]
    fn unknown_users_are_checked_at_the_cost_of_known_ones() {
        // A hash made elsewhere, at a cost other than hash-password's.
        let params = argon2::Params::new(4096, 3, 1, None).unwrap();
        let argon2 = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let h = argon2.hash_password(b"pw", &salt).unwrap().to_string();
        let d = UsersFileDirectory::parse(&format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{h}\"\n"
        ))
        .unwrap();
        let known = PasswordHash::new(&h).unwrap();
        let dummy = PasswordHash::new(&d.dummy).unwrap();
        assert_eq!(
            (dummy.algorithm, dummy.version, dummy.params.to_string()),
            (known.algorithm, known.version, known.params.to_string()),
            "an unknown name must cost what a known one costs"
        );
        assert_ne!(dummy.salt, known.salt);
        assert_eq!(d.verify("mallory", "pw"), Err(FailureReason::BadPassword));
        assert!(d.verify("alice", "pw").is_ok());
    }

    #[test]
    fn debug_output_shows_no_totp_secret() {
        let d = UsersFileDirectory::parse(&file()).unwrap();
        let alice = format!("{:?}", d.verify("alice", "correct horse"));
        // The secret decodes to the bytes of "12345678901234567890".
        assert!(!alice.contains("49, 50, 51"), "{alice}");
        assert!(!alice.contains("GEZDGNBV"), "{alice}");
        assert_eq!(
            alice,
            r#"Ok(User { groups: ["engineering", "ops"], totp_secret: Some("..") })"#
        );
        let bob = format!("{:?}", d.user("bob"));
        assert_eq!(bob, "Some(User { groups: [], totp_secret: None })");
    }

    #[test]
    fn refuses_bad_files_with_positions() {
        let e = UsersFileDirectory::parse("[[user]]\nname = \"x\"\npassword_hash = \"plain\"\n")
            .err()
            .unwrap();
        assert!(e.starts_with("2:") && e.contains("not a PHC string"), "{e}");
        let e = UsersFileDirectory::parse("[[user]]\nname = \"x\"\npasword_hash = \"a\"\n")
            .err()
            .unwrap();
        assert!(e.contains("unknown field `pasword_hash`"), "{e}");
        let h = hash_password("p").unwrap();
        let e = UsersFileDirectory::parse(&format!(
            "[[user]]\nname = \"x\"\npassword_hash = \"{h}\"\ntotp_secret = \"!!\"\n"
        ))
        .err()
        .unwrap();
        assert!(e.contains("totp_secret"), "{e}");
    }

    #[test]
    fn refuses_hashes_no_password_can_match() {
        let refused = |hash: &str, why: &str| {
            let e = UsersFileDirectory::parse(&format!(
                "[[user]]\nname = \"x\"\npassword_hash = \"{hash}\"\n"
            ))
            .err()
            .unwrap_or_else(|| panic!("{hash} was taken"));
            assert!(e.starts_with("2:") && e.contains(why), "{hash}: {e}");
        };
        // Each is a well-formed PHC string, which the file used to take.
        refused(
            "$pbkdf2-sha256$i=1000$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaA",
            "`pbkdf2-sha256` hash",
        );
        refused(
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA",
            "no salt or no hash",
        );
        refused(
            "$argon2id$v=19$m=19456,t=2,p=1,x=3$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaA",
            "parameters",
        );
        refused(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA",
            "cannot be verified",
        );
        refused(
            "$argon2id$v=18$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaA",
            "cannot be verified",
        );
        let good = hash_password("p").unwrap();
        let d = UsersFileDirectory::parse(&format!(
            "[[user]]\nname = \"x\"\npassword_hash = \"{good}\"\n"
        ))
        .unwrap();
        assert!(d.verify("x", "p").is_ok());
    }

    /// A users file that is a FIFO or a device is refused at once, not waited on or read
    /// without end.
    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let d = tempfile::tempdir().expect("temporary directory");
        let fifo = d.path().join("users.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        for path in [fifo, std::path::PathBuf::from("/dev/zero")] {
            let (tx, rx) = std::sync::mpsc::channel();
            let p = path.clone();
            std::thread::spawn(move || {
                let _ = tx.send(UsersFileDirectory::load(&p).map(|_| ()));
            });
            let e = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("loading {} did not end", path.display()))
                .expect_err("not a users file");
            assert_eq!(e, format!("{}: not a regular file", path.display()));
        }
    }

    /// A users file larger than USERS_LIMIT (a sparse 2 GiB file) is refused at once, not read
    /// whole.
    #[test]
    fn refuses_a_file_too_large() {
        use crate::config::files::tests::{huge_in, within};
        let d = tempfile::tempdir().expect("temporary directory");
        let huge = huge_in(d.path());
        let p = huge.clone();
        let e = within("loading a 2 GiB users file", move || {
            UsersFileDirectory::load(&p).map(|_| ())
        })
        .expect_err("too large");
        assert_eq!(
            e,
            format!(
                "{}: larger than {USERS_LIMIT} bytes (the limit)",
                huge.display()
            )
        );
    }

    /// A users file owned by another user than root and the process's is refused, whatever
    /// its mode: that user could rewrite it.
    #[test]
    fn refuses_a_file_another_user_owns() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED refuses_a_file_another_user_owns: giving a file away needs root");
            return;
        }
        let d = tempfile::tempdir().expect("temporary directory");
        let h = hash_password("pw").expect("hash");
        let path = d.path().join("users.toml");
        std::fs::write(
            &path,
            format!("[[user]]\nname = \"alice\"\npassword_hash = \"{h}\"\n"),
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(UsersFileDirectory::load(&path).is_ok(), "root's own file");
        // nobody's: 65534.
        std::os::unix::fs::chown(&path, Some(65534), None).expect("chown");
        let e = UsersFileDirectory::load(&path)
            .map(|_| ())
            .expect_err("another user's file");
        assert!(
            e.starts_with(&path.display().to_string())
                && e.contains("owned by uid 65534, neither root nor this process's user (uid 0)")
                && e.contains("chown root"),
            "{e}"
        );
        // Its group may be anyone's: the group's write bit is the administrator's choice.
        std::os::unix::fs::chown(&path, Some(0), Some(65534)).expect("chown");
        assert!(
            UsersFileDirectory::load(&path).is_ok(),
            "root's, another group's"
        );
    }

    /// A users file in a directory, or under one, that another user could put another file in
    /// (writable by its group or others without the sticky bit, or owned by another user than
    /// root and the process's) is refused, naming that directory: the file's own modes do not
    /// keep it from being replaced. A sticky directory others may write (`/tmp`) is not.
    #[test]
    fn refuses_a_file_in_a_directory_others_may_write() {
        let d = tempfile::tempdir().expect("temporary directory");
        let h = hash_password("pw").expect("hash");
        let outer = d.path().join("outer");
        let inner = outer.join("inner");
        std::fs::create_dir_all(&inner).expect("mkdir");
        let path = inner.join("users.toml");
        std::fs::write(
            &path,
            format!("[[user]]\nname = \"alice\"\npassword_hash = \"{h}\"\n"),
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let chmod = |dir: &Path, mode: u32| {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        chmod(&outer, 0o755);
        chmod(&inner, 0o755);
        assert!(UsersFileDirectory::load(&path).is_ok(), "0755 directories");
        let refused = |dir: &Path, says: &str| {
            let e = UsersFileDirectory::load(&path)
                .map(|_| ())
                .expect_err("refused");
            assert!(
                e.starts_with(&format!(
                    "{}: its directory {} ",
                    path.display(),
                    dir.display()
                )) && e.contains(says),
                "{e}"
            );
        };
        // Its own directory, then one further up, writable by others, then by the group.
        chmod(&inner, 0o757);
        refused(&inner, "has mode 0757: users other than its owner may put");
        chmod(&inner, 0o755);
        chmod(&outer, 0o777);
        refused(&outer, "has mode 0777");
        chmod(&outer, 0o775);
        refused(&outer, "has mode 0775");
        // Sticky, as /tmp: only an entry's owner may rename or remove it.
        chmod(&outer, 0o1777);
        assert!(
            UsersFileDirectory::load(&path).is_ok(),
            "a sticky directory"
        );
        chmod(&outer, 0o755);
        // Through a symbolic link, the real path's directories are the ones checked.
        let link = d.path().join("link.toml");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        chmod(&inner, 0o777);
        let e = UsersFileDirectory::load(&link)
            .map(|_| ())
            .expect_err("refused through a link");
        assert!(
            e.contains(&format!("its directory {} has mode 0777", inner.display())),
            "{e}"
        );
        chmod(&inner, 0o755);
        // A directory another user owns: that user may replace what it holds. (Giving it away
        // needs root, as the crate's lib tests do already for DPDK.)
        std::os::unix::fs::chown(&outer, Some(65534), None).expect("chown (needs root)");
        refused(
            &outer,
            "is owned by uid 65534, neither root nor this process's user (uid 0)",
        );
    }

    /// A users file others may write is refused, and one others may read when it holds TOTP
    /// secrets; the owner's and the group's modes are the administrator's choice.
    #[test]
    fn refuses_files_others_may_write_or_read_secrets_in() {
        let d = tempfile::tempdir().expect("temporary directory");
        let h = hash_password("pw").expect("hash");
        let plain = format!("[[user]]\nname = \"alice\"\npassword_hash = \"{h}\"\n");
        let secret = format!("{plain}totp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n");
        let load = |text: &str, mode: u32| {
            let path = d.path().join(format!("users-{mode:o}-{}.toml", text.len()));
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            UsersFileDirectory::load(&path).map(|_| ()).map_err(|e| {
                assert!(e.starts_with(&path.display().to_string()), "{e}");
                e
            })
        };
        for text in [&plain, &secret] {
            let e = load(text, 0o646).expect_err("others may write it");
            assert!(
                e.contains("mode 0646 lets any user write it") && e.contains("chmod 600"),
                "{e}"
            );
            assert!(load(text, 0o600).is_ok());
            assert!(load(text, 0o640).is_ok());
            assert!(load(text, 0o660).is_ok(), "the group may write it");
        }
        let e = load(&secret, 0o644).expect_err("others may read its secrets");
        assert!(
            e.contains("mode 0644 lets any user read the TOTP secrets") && e.contains("chmod 600"),
            "{e}"
        );
        assert!(load(&plain, 0o644).is_ok(), "hashes alone may be read");
    }
}
