//! A users file's text (`auth::directory::UsersFileDirectory::parse`: TOML with argon2 PHC
//! hashes, groups and base32 TOTP secrets), as a reload reads it. Oracles: no panic and no
//! hang (a hash's cost is bounded before anything is hashed with it: the parser makes one
//! hash like the first user's); an error is `line:column: message` with both from 1 and
//! never shows a TOTP secret (a long base32 value of a `totp_secret` line); what loads has exactly the users named in the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control::auth::directory::{Directory, UsersFileDirectory};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match UsersFileDirectory::parse(text) {
        Ok(dir) => {
            let mut names: Vec<&str> = dir.names().collect();
            names.sort_unstable();
            let mut listed = dir.usernames();
            listed.sort_unstable();
            assert_eq!(names, listed);
            for n in &names {
                let user = dir.user(n).expect("a named user is there");
                assert!(!format!("{user:?}").contains("totp_secret: Some([")); // shown as ".."
            }
        }
        Err(e) => {
            let mut parts = e.splitn(3, ':');
            let line: usize = parts.next().and_then(|l| l.parse().ok()).expect(&e);
            let col: usize = parts.next().and_then(|c| c.parse().ok()).expect(&e);
            assert!(line >= 1 && col >= 1, "{e}");
            // A TOTP secret (the value of a `totp_secret = "..."` line) in the message.
            for l in text.lines() {
                let l = l.trim();
                if let Some(v) = l.strip_prefix("totp_secret") {
                    let v = v
                        .trim_start()
                        .trim_start_matches('=')
                        .trim()
                        .trim_matches('"');
                    // One that looks like a secret (base32, long) and that the text holds
                    // nowhere else, as a key the message could rightly name.
                    let base32 = v
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
                    if v.len() >= 16 && base32 && text.matches(v).count() == 1 {
                        assert!(!e.contains(v), "a TOTP secret in the error: {e}");
                    }
                }
            }
        }
    }
});
