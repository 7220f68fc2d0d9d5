//! PUSH_REPLY: the options a client applies after connecting (§8.3-8.5), split into messages of
//! at most 1024 bytes with `push-continuation`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use sluice_engine::crypto::Cipher;

/// What one client is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushOptions {
    /// The client's address.
    pub ifconfig: Ipv4Addr,
    /// The client pool's netmask.
    pub netmask: Ipv4Addr,
    /// The gateway for pushed routes (the pool's first address).
    pub route_gateway: Ipv4Addr,
    /// Split tunnel: these routes; full tunnel: `None` (redirect-gateway def1).
    pub routes: Option<Vec<(Ipv4Addr, Ipv4Addr)>>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// Keepalive interval.
    pub ping: u32,
    /// Restart after this many seconds without traffic.
    pub ping_restart: u32,
    /// The session's peer-id.
    pub peer_id: u32,
    /// The data cipher.
    pub cipher: Cipher,
    /// Keys from the TLS exporter (else the legacy PRF).
    pub tls_ekm: bool,
    /// The client supports control-channel EXIT and protocol-flags.
    pub cc_exit: bool,
    /// The client announced the largest tun MTU it takes (`IV_MTU`, OpenVPN 2.6 and later), so
    /// it accepts a pushed `tun-mtu`; an older client refuses the option (an options error).
    pub pushable_mtu: bool,
    /// The endpoint's client login banner as `echo` options (`banner_options`); empty for
    /// none.
    pub banner: Arc<[String]>,
}

/// The tun MTU pushed to a client that takes one: the size of the largest inner packet the data
/// plane carries (a 2.6 client announces at least 1600, so it never needs to clamp it).
pub const TUN_MTU: u32 = 1500;

/// The longest PUSH_REPLY message (OpenVPN splits at about 1024 bytes).
pub const MAX_MESSAGE: usize = 1024;

/// The PUSH_REPLY message(s), each without its NUL terminator. `auth_token` (a credential for
/// the session, kept out of `PushOptions` so that its Debug output cannot show it) is pushed as
/// an option of its own, `auth-token <token>`, in whichever message of a continued push has room
/// for it: the client applies the options of every part once the last has come.
pub fn push_reply(o: &PushOptions, auth_token: Option<&str>) -> Vec<String> {
    let mut opts = vec![
        "topology subnet".to_owned(),
        format!("route-gateway {}", o.route_gateway),
    ];
    match &o.routes {
        Some(routes) => opts.extend(
            routes
                .iter()
                .map(|(net, mask)| format!("route {net} {mask}")),
        ),
        None => opts.push("redirect-gateway def1".to_owned()),
    }
    opts.extend(o.dns.iter().map(|d| format!("dhcp-option DNS {d}")));
    opts.push(format!("ping {}", o.ping));
    opts.push(format!("ping-restart {}", o.ping_restart));
    opts.push(format!("ifconfig {} {}", o.ifconfig, o.netmask));
    opts.push(format!("peer-id {}", o.peer_id));
    opts.push(format!("cipher {}", o.cipher.name()));
    match (o.cc_exit, o.tls_ekm) {
        (true, true) => opts.push("protocol-flags cc-exit tls-ekm".to_owned()),
        (true, false) => opts.push("protocol-flags cc-exit".to_owned()),
        (false, true) => opts.push("key-derivation tls-ekm".to_owned()),
        (false, false) => {}
    }
    // As OpenVPN 2.6's server: `tun-mtu` goes only to a client that said (IV_MTU) it can take it.
    if o.pushable_mtu {
        opts.push(format!("tun-mtu {TUN_MTU}"));
    }
    opts.extend(o.banner.iter().cloned());
    if let Some(t) = auth_token {
        opts.push(format!("auth-token {t}"));
    }

    // Greedy packing; room is kept for ",push-continuation N".
    const CONT: usize = ",push-continuation 2".len();
    let mut msgs: Vec<String> = Vec::new();
    let mut cur = String::from("PUSH_REPLY");
    for opt in opts {
        if cur.len() + 1 + opt.len() + CONT > MAX_MESSAGE && cur != "PUSH_REPLY" {
            msgs.push(std::mem::replace(&mut cur, String::from("PUSH_REPLY")));
        }
        cur.push(',');
        cur.push_str(&opt);
    }
    msgs.push(cur);
    let n = msgs.len();
    if n > 1 {
        for (i, m) in msgs.iter_mut().enumerate() {
            m.push_str(if i + 1 == n {
                ",push-continuation 1"
            } else {
                ",push-continuation 2"
            });
        }
    }
    msgs
}

/// The longest option a client takes from a PUSH_REPLY: OpenVPN reads each into a buffer of
/// 256 bytes (`OPTION_PARM_SIZE`), its NUL included; a longer one is cut there, and what
/// follows the cut is read as another option.
pub const MAX_OPTION: usize = 255;

/// The client login banner `text` as the `echo` options OpenVPN GUI shows in a window titled
/// `title`: each line as `echo msg <line>` (a long line in pieces, `echo msg-n` but for the
/// last), then `echo msg-window <title>`. The client applies `echo` from a push (every 2.x
/// hands it to its management interface, where the GUI shows the text; from 2.5.1 on it also
/// logs each as `ECHO-PULL:msg ...`), and the GUI percent-decodes it. So every byte a push
/// option could not carry as it is (a comma ends the option, white space splits it, quotes,
/// backslashes, and a `#` or `;` beginning a parameter, which comments out the rest, are the
/// option parser's), every `%`, and everything outside printable ASCII (UTF-8 included,
/// decoded by the GUI back to the same bytes) is written `%XX`; a piece ends on a character
/// boundary, never inside an escape or a character, and no option is longer than
/// `MAX_OPTION`. No text (or only white space): no options.
pub fn banner_options(title: &str, text: &str) -> Vec<String> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    let mut opts = Vec::new();
    for line in text.trim_end().split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        // A NUL would end the GUI's decoded text there: left out.
        let line = line.replace('\0', "");
        let mut pieces = pieces(&line, MAX_OPTION - "echo msg-n ".len()).peekable();
        if pieces.peek().is_none() {
            opts.push("echo msg".to_owned());
        }
        while let Some(p) = pieces.next() {
            let verb = if pieces.peek().is_some() {
                "msg-n"
            } else {
                "msg"
            };
            opts.push(format!("echo {verb} {p}"));
        }
    }
    let title = title.replace('\0', "");
    let title = pieces(&title, MAX_OPTION - "echo msg-window ".len())
        .next()
        .unwrap_or_default();
    opts.push(format!("echo msg-window {title}"));
    opts
}

/// `s` percent-encoded (`banner_options`) in pieces of at most `room` bytes each, cut between
/// characters.
fn pieces(s: &str, room: usize) -> impl Iterator<Item = String> + '_ {
    let mut chars = s.chars().peekable();
    std::iter::from_fn(move || {
        chars.peek()?;
        let mut piece = String::new();
        while let Some(&c) = chars.peek() {
            let mut utf8 = [0u8; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            let kept =
                matches!(c, '!'..='~') && !matches!(c, '%' | ',' | '"' | '\'' | '\\' | '#' | ';');
            let len = if kept { 1 } else { 3 * bytes.len() };
            if piece.len() + len > room && !piece.is_empty() {
                break;
            }
            if kept {
                piece.push(c);
            } else {
                for b in bytes {
                    piece.push_str(&format!("%{b:02X}"));
                }
            }
            chars.next();
        }
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PushOptions {
        PushOptions {
            ifconfig: Ipv4Addr::new(10, 100, 0, 6),
            netmask: Ipv4Addr::new(255, 255, 252, 0),
            route_gateway: Ipv4Addr::new(10, 100, 0, 1),
            routes: Some(vec![
                (
                    Ipv4Addr::new(192, 168, 50, 0),
                    Ipv4Addr::new(255, 255, 255, 0),
                ),
                (Ipv4Addr::new(10, 20, 0, 0), Ipv4Addr::new(255, 255, 0, 0)),
            ]),
            dns: vec![Ipv4Addr::new(10, 100, 0, 1)],
            ping: 10,
            ping_restart: 60,
            peer_id: 3,
            cipher: Cipher::Aes256Gcm,
            tls_ekm: true,
            cc_exit: true,
            pushable_mtu: true,
            banner: Arc::from([]),
        }
    }

    #[test]
    fn reference_examples() {
        // §8.5, split tunnel, word for word.
        assert_eq!(
            push_reply(&base(), None),
            vec!["PUSH_REPLY,topology subnet,route-gateway 10.100.0.1,route 192.168.50.0 255.255.255.0,route 10.20.0.0 255.255.0.0,dhcp-option DNS 10.100.0.1,ping 10,ping-restart 60,ifconfig 10.100.0.6 255.255.252.0,peer-id 3,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm,tun-mtu 1500"]
        );
        let full = PushOptions {
            routes: None,
            ..base()
        };
        assert_eq!(
            push_reply(&full, None),
            vec!["PUSH_REPLY,topology subnet,route-gateway 10.100.0.1,redirect-gateway def1,dhcp-option DNS 10.100.0.1,ping 10,ping-restart 60,ifconfig 10.100.0.6 255.255.252.0,peer-id 3,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm,tun-mtu 1500"]
        );
        let legacy = PushOptions {
            tls_ekm: false,
            cc_exit: false,
            ..base()
        };
        assert!(!push_reply(&legacy, None)[0].contains("tls-ekm"));
    }

    #[test]
    fn tun_mtu_is_pushed_only_to_a_client_that_announced_iv_mtu() {
        let old = PushOptions {
            pushable_mtu: false,
            ..base()
        };
        assert_eq!(
            push_reply(&old, None),
            vec!["PUSH_REPLY,topology subnet,route-gateway 10.100.0.1,route 192.168.50.0 255.255.255.0,route 10.20.0.0 255.255.0.0,dhcp-option DNS 10.100.0.1,ping 10,ping-restart 60,ifconfig 10.100.0.6 255.255.252.0,peer-id 3,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm"]
        );
        assert!(push_reply(&base(), None)[0].ends_with(",tun-mtu 1500"));
    }

    /// `base()` with `n` split-tunnel routes, 10.i.0.0/16.
    fn with_routes(n: u8) -> PushOptions {
        PushOptions {
            routes: Some(
                (0..n)
                    .map(|i| (Ipv4Addr::new(10, i, 0, 0), Ipv4Addr::new(255, 255, 0, 0)))
                    .collect(),
            ),
            ..base()
        }
    }

    #[test]
    fn long_replies_are_continued() {
        let msgs = push_reply(&with_routes(100), None);
        assert!(msgs.len() >= 3);
        for (i, m) in msgs.iter().enumerate() {
            assert!(
                m.starts_with("PUSH_REPLY,") && m.len() <= MAX_MESSAGE,
                "{m}"
            );
            assert!(m.ends_with(if i + 1 == msgs.len() {
                ",push-continuation 1"
            } else {
                ",push-continuation 2"
            }));
        }
        let all = msgs.join(",");
        assert_eq!(all.matches(",route 10.").count(), 100);
    }

    #[test]
    fn the_auth_token_is_pushed_in_one_message_or_continued() {
        let token = "0123456789abcdef0123456789abcdef0123456789abcdef";
        for n in [0u8, 2, 30, 100] {
            let msgs = push_reply(&with_routes(n), Some(token));
            let with: Vec<_> = msgs
                .iter()
                .filter(|m| m.split(',').any(|o| o == format!("auth-token {token}")))
                .collect();
            assert_eq!(with.len(), 1, "{n} routes: {msgs:?}");
            assert!(msgs.iter().all(|m| m.len() <= MAX_MESSAGE), "{n} routes");
            assert_eq!(msgs.join(",").matches(",route 10.").count(), usize::from(n));
            assert_eq!(msgs.len() > 1, n >= 30, "{n} routes: {msgs:?}");
        }
    }

    /// What OpenVPN GUI shows for the `echo` options of `msgs` (`echo.c`): each option taken
    /// as the client's parser would (the push split at commas, then at white space), then
    /// percent-decoded; `msg` appends its text and a line end, `msg-n` its text alone. With
    /// the window's title.
    fn shown(msgs: &[String]) -> (String, Option<String>) {
        let mut text = Vec::new();
        let mut title = None;
        for m in msgs {
            for opt in m.split(',').skip(1) {
                assert!(opt.len() <= MAX_OPTION, "{opt}");
                let p: Vec<&str> = opt.split_whitespace().collect();
                if p.first() != Some(&"echo") {
                    continue;
                }
                assert!(p.len() <= 3, "one parameter: {opt}");
                let arg = decode(p.get(2).copied().unwrap_or_default());
                match p[1] {
                    "msg" => {
                        text.extend_from_slice(&arg);
                        text.extend_from_slice(b"\r\n");
                    }
                    "msg-n" => text.extend_from_slice(&arg),
                    "msg-window" => title = Some(String::from_utf8(arg).expect("UTF-8")),
                    other => panic!("echo {other}"),
                }
            }
        }
        (String::from_utf8(text).expect("UTF-8"), title)
    }

    fn decode(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    fn with_banner(title: &str, text: &str) -> Vec<String> {
        let o = PushOptions {
            banner: banner_options(title, text).into(),
            ..base()
        };
        push_reply(&o, Some("tok"))
    }

    #[test]
    fn the_banner_is_pushed_as_echo_options_the_gui_shows_as_written() {
        let (text, title) = shown(&with_banner(
            "Corp VPN, \"prod\"",
            "Authorised use only; 100% logged.\n\n#1: café, \\\\share\\x  'quoted'\r\nlast",
        ));
        assert_eq!(
            text,
            "Authorised use only; 100% logged.\r\n\r\n#1: café, \\\\share\\x  'quoted'\r\nlast\r\n"
        );
        assert_eq!(title.as_deref(), Some("Corp VPN, \"prod\""));
        // The longest banner AWS takes, of 4-byte characters: many options, many messages,
        // each within the client's limits, cut between characters.
        let long: String = "𝄞".repeat(1400);
        let msgs = with_banner("t", &long);
        assert!(msgs.iter().all(|m| m.len() <= MAX_MESSAGE));
        assert_eq!(shown(&msgs).0, format!("{long}\r\n"));
        assert!(msgs.iter().any(|m| m.contains(",auth-token tok")));
        // A NUL would end the GUI's text there: left out.
        assert_eq!(
            shown(&with_banner("a\0b", "x\0y")),
            ("xy\r\n".into(), Some("ab".into()))
        );
        // No banner: no echo, and nothing else moves.
        assert_eq!(banner_options("t", " \n "), Vec::<String>::new());
        assert_eq!(with_banner("t", ""), push_reply(&base(), Some("tok")));
    }

    proptest::proptest! {
        #[test]
        fn any_banner_reads_back_whole(text in "(?s).{0,300}", title in ".{0,300}") {
            let msgs = with_banner(&title, &text);
            let (shown_text, shown_title) = shown(&msgs);
            let want: String = if text.trim().is_empty() {
                String::new()
            } else {
                text.trim_end()
                    .split('\n')
                    .map(|l| format!("{}\r\n", l.strip_suffix('\r').unwrap_or(l).replace('\0', "")))
                    .collect()
            };
            proptest::prop_assert_eq!(shown_text, want);
            if !text.trim().is_empty() {
                let t = shown_title.expect("a title");
                proptest::prop_assert!(title.replace('\0', "").starts_with(&t));
            }
        }
    }
}
