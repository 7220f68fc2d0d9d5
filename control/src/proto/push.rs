//! PUSH_REPLY: the options a client applies after connecting (§8.3-8.5), split into messages of
//! at most 1024 bytes with `push-continuation`.

use std::net::Ipv4Addr;

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
}
