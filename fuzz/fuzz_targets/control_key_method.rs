//! The client's key-method-2 message (`proto::key_method::ClientKeyMethod::parse`: pre-master
//! secret, randoms, options, username, password, peer-info) on arbitrary bytes, as the server
//! reads it from the TLS plaintext, which may come a few bytes at a time. Oracles: what it
//! consumes is within the input; every shorter prefix of a message asks for more bytes (never
//! refused, never a different message), and every prefix of a refused input is refused or
//! asks for more; the message's Debug output never shows the password; peer-info's fields are
//! parsed from the text alone (parsing it again gives the same), and the cipher negotiation
//! takes any peer-info.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control::proto::key_method::{negotiate_cipher, ClientKeyMethod, PeerInfo};

/// The prefixes checked: a few, spread over the input, so that long inputs stay fast.
fn prefixes(len: usize) -> impl Iterator<Item = usize> {
    let step = (len / 32).max(1);
    (0..len).step_by(step).chain(len.checked_sub(1))
}

fuzz_target!(|data: &[u8]| {
    match ClientKeyMethod::parse(data) {
        Ok(Some((m, used))) => {
            assert!(used <= data.len() && used >= 5 + 48 + 64 + 8);
            for n in prefixes(used) {
                assert!(
                    matches!(ClientKeyMethod::parse(&data[..n]), Ok(None)),
                    "a prefix of {n} bytes of a {used}-byte message asks for more"
                );
            }
            let debug = format!("{m:?}");
            if let Some(p) = &m.password {
                let p = p.expose();
                // A password long enough not to be found by chance elsewhere in the output.
                let elsewhere = m.options.contains(p)
                    || m.username.as_deref().is_some_and(|u| u.contains(p))
                    || format!("{:?}", m.peer_info).contains(p);
                if p.len() >= 8 && !elsewhere {
                    assert!(!debug.contains(p), "the password in Debug output: {debug}");
                }
            }
            let _ = negotiate_cipher(&m.peer_info);
        }
        Ok(None) => {}
        Err(_) => {
            for n in prefixes(data.len()) {
                assert!(
                    !matches!(ClientKeyMethod::parse(&data[..n]), Ok(Some(_))),
                    "a prefix of {n} bytes of a refused input is a message"
                );
            }
        }
    }
    // Peer-info alone, as text.
    let text = String::from_utf8_lossy(data);
    let info = PeerInfo::parse(&text);
    assert_eq!(info, PeerInfo::parse(&text));
    assert!(info
        .ciphers
        .iter()
        .all(|c| !c.is_empty() && !c.contains(':')));
    let _ = negotiate_cipher(&info);
});
