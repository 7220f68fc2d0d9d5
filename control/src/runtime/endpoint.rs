//! Builds, from the configuration in force, what the control channel of each endpoint needs:
//! the `Server` settings (TLS with the endpoint's certificate, client CA and CRL; pool; pushed
//! routes and DNS; timers; quota) and its authenticator (certificates, the users-file
//! directory, TOTP). Used by the appliance and reused on reloads.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::directory::UsersFileDirectory;
use crate::auth::EndpointAuth;
use crate::config::files::{read_regular, CRL_LIMIT, PKI_LIMIT};
use crate::config::pki::resolve;
use crate::config::schema::Endpoint;
use crate::config::Loaded;
use crate::proto::push;
use crate::proto::server::{peer_id_range, Settings};
use crate::proto::tls::{server_config, ServerTls, TlsFiles};

fn read(base: &Path, p: &Path, what: &str, limit: u64) -> Result<Vec<u8>, String> {
    let path = resolve(base, p);
    read_regular(&path, limit).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The TLS configuration of endpoint `ep`: its chain and key, its client root CA (mutual
/// authentication) and its CRL.
///
/// # Errors
/// A file cannot be read or does not parse.
pub fn tls(loaded: &Loaded, ep: &Endpoint) -> Result<ServerTls, String> {
    let base = loaded.base_dir();
    let chain = read(
        &base,
        &ep.server_certificate,
        "server certificate",
        PKI_LIMIT,
    )?;
    let key = read(&base, &ep.server_key, "server key", PKI_LIMIT)?;
    let ca = match &ep.authentication.mutual {
        Some(m) => Some(read(&base, &m.client_root_ca, "client root CA", PKI_LIMIT)?),
        None => None,
    };
    let crl = match &ep.crl {
        Some(c) => Some(read(&base, c, "CRL", CRL_LIMIT)?),
        None => None,
    };
    server_config(&TlsFiles {
        server_chain_pem: &chain,
        server_key_pem: &key,
        client_ca_pem: ca.as_deref(),
        crl_pem: crl.as_deref(),
    })
    .map_err(|e| format!("endpoint {}: {e}", ep.id))
}

/// The routes pushed to split-tunnel clients (`None`: full tunnel, `redirect-gateway`).
pub fn pushed_routes(ep: &Endpoint) -> Option<Vec<(Ipv4Addr, Ipv4Addr)>> {
    if !ep.split_tunnel {
        return None;
    }
    let mut routes: Vec<(Ipv4Addr, Ipv4Addr)> = ep
        .routes
        .iter()
        .map(|r| {
            let c = r.destination_cidr;
            let mask = u32::MAX
                .checked_shl(32 - u32::from(c.prefix_len()))
                .unwrap_or(0);
            (c.addr(), Ipv4Addr::from(mask))
        })
        .collect();
    routes.sort();
    routes.dedup();
    Some(routes)
}

/// The control-channel settings of endpoint number `index`.
///
/// # Errors
/// Its files cannot be read or parsed.
pub fn settings(loaded: &Loaded, index: usize) -> Result<Settings, String> {
    let ep = loaded
        .config
        .endpoints
        .get(index)
        .ok_or_else(|| format!("no endpoint number {index}"))?;
    let endpoint = u16::try_from(index).map_err(|_| "too many endpoints".to_owned())?;
    let mut s = Settings::new(
        endpoint,
        tls(loaded, ep)?,
        (
            ep.client_cidr_block.addr(),
            ep.client_cidr_block.prefix_len(),
        ),
    );
    s.routes = pushed_routes(ep);
    s.dns = ep.dns_servers.clone();
    s.banner = banner(ep);
    s.session_timeout = session_timeout(ep);
    s.reneg = reneg(loaded);
    s.max_sessions = max_connections(loaded, ep);
    s.password_required = ep.authentication.directory.is_some();
    s.peer_ids = peer_id_range(index, loaded.config.endpoints.len());
    Ok(s)
}

/// `ep`'s client login banner as the options pushed (none when it has none), in a window
/// titled with its description, or its ID without one.
pub fn banner(ep: &Endpoint) -> Arc<[String]> {
    let Some(text) = &ep.client_login_banner else {
        return Arc::from([]);
    };
    let title = if ep.description.trim().is_empty() {
        ep.id.to_string()
    } else {
        ep.description.clone()
    };
    push::banner_options(&title, text).into()
}

/// How long a connection of `ep` lasts at most (`session_timeout_hours`).
pub fn session_timeout(ep: &Endpoint) -> Duration {
    Duration::from_secs(u64::from(ep.session_timeout_hours.hours()) * 3600)
}

/// The connections `ep` takes at most: `[limits] connections_per_target_network` for each of
/// its target networks when set, else AWS's quota for as many subnets (`Limits::connections`);
/// none before one is associated (`pending-associate`: the guide's "clients can no longer
/// establish a VPN connection" once all are disassociated).
pub fn max_connections(loaded: &Loaded, ep: &Endpoint) -> usize {
    loaded.config.limits.connections(ep.target_networks.len())
}

/// Server-side renegotiation (`[appliance] reneg_seconds`; 0: none).
pub fn reneg(loaded: &Loaded) -> Option<Duration> {
    let r = loaded.config.appliance.reneg_seconds;
    (r > 0).then(|| Duration::from_secs(u64::from(r)))
}

/// The authenticator of endpoint number `index`. Endpoints that read the same users file
/// share one record of the one-time codes spent (`EndpointAuth::share_codes_of`).
///
/// # Errors
/// The users file cannot be read or parsed.
pub fn authenticator(loaded: &Loaded, index: usize) -> Result<EndpointAuth, String> {
    let ep = loaded
        .config
        .endpoints
        .get(index)
        .ok_or_else(|| format!("no endpoint number {index}"))?;
    let a = &ep.authentication;
    let Some(d) = &a.directory else {
        return Ok(EndpointAuth::new(a.mutual.is_some(), None, a.mfa.is_some()));
    };
    let path = resolve(&loaded.base_dir(), &d.users_file);
    let dir = UsersFileDirectory::load(&path)
        .map_err(|e| format!("users file {}: {e}", path.display()))?;
    // The one-time codes spent are the file's users', whichever endpoint took them.
    Ok(
        EndpointAuth::new(a.mutual.is_some(), Some(Box::new(dir)), a.mfa.is_some())
            .share_codes_of(&path),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connlog::FailureReason;

    #[test]
    fn split_tunnel_pushes_each_route_once_as_network_and_mask() {
        let text = r#"
[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef0"
client_cidr_block = "10.200.0.0/20"
server_certificate = "s.crt"
server_key = "s.key"
dns_name = "vpn.example.internal"
split_tunnel = true
authentication = { mutual = { client_root_ca = "ca.crt" } }
[[endpoint.route]]
destination_cidr = "172.31.0.0/16"
target_subnet = "subnet-1"
[[endpoint.route]]
destination_cidr = "10.99.0.0/24"
target_subnet = "subnet-1"
"#;
        let config: crate::config::schema::Config = toml::from_str(text).expect("parses");
        let ep = &config.endpoints[0];
        assert_eq!(
            pushed_routes(ep),
            Some(vec![
                (
                    "10.99.0.0".parse().expect("ip"),
                    "255.255.255.0".parse().expect("ip")
                ),
                (
                    "172.31.0.0".parse().expect("ip"),
                    "255.255.0.0".parse().expect("ip")
                ),
            ])
        );
        let mut full = ep.clone();
        full.split_tunnel = false;
        assert_eq!(pushed_routes(&full), None);
    }

    /// A server certificate that is a FIFO or a device, and a CRL that is a sparse 2 GiB file,
    /// are refused at once with an error naming them, not waited on or read whole.
    #[test]
    fn files_not_regular_or_too_large_are_refused_at_once() {
        use crate::config::files::tests::{fifo_in, huge_in, within};
        use crate::config::files::{CRL_LIMIT, PKI_LIMIT};

        let d = tempfile::tempdir().expect("temporary directory");
        let fifo = fifo_in(d.path());
        let huge = huge_in(d.path());
        let loaded_with = |cert: &std::path::Path, crl: &std::path::Path| {
            let text = crate::config::endpoint_toml(
                "cvpn-endpoint-0123456789abcdef0",
                "10.200.0.0/20",
                443,
                &format!("crl = {:?}\n", crl.display().to_string()),
            )
            .replace("\"s.crt\"", &format!("{:?}", cert.display().to_string()));
            let config: crate::config::schema::Config = toml::from_str(&text).expect("parses");
            Loaded {
                path: d.path().join("sluice.toml"),
                text,
                config,
            }
        };
        for cert in [
            fifo.clone(),
            std::path::PathBuf::from("/dev/zero"),
            huge.clone(),
        ] {
            let loaded = loaded_with(&cert, &huge);
            let e = within(&format!("reading {}", cert.display()), move || {
                let ep = &loaded.config.endpoints[0];
                tls(&loaded, ep).map(|_| ())
            })
            .expect_err("refused");
            let why = if cert == huge {
                format!("larger than {PKI_LIMIT} bytes (the limit)")
            } else {
                "not a regular file".to_owned()
            };
            assert_eq!(e, format!("server certificate {}: {why}", cert.display()));
        }
        // The other files read (their content is not looked at before the CRL is read).
        for f in ["s.crt", "s.key", "ca.crt"] {
            std::fs::write(d.path().join(f), "x").expect("write");
        }
        for crl in [fifo, std::path::PathBuf::from("/dev/zero"), huge.clone()] {
            let loaded = loaded_with(&d.path().join("s.crt"), &crl);
            let e = within(&format!("reading {}", crl.display()), move || {
                let ep = &loaded.config.endpoints[0];
                tls(&loaded, ep).map(|_| ())
            })
            .expect_err("refused");
            let why = if crl == huge {
                format!("larger than {CRL_LIMIT} bytes (the limit)")
            } else {
                "not a regular file".to_owned()
            };
            assert_eq!(e, format!("CRL {}: {why}", crl.display()));
        }
    }

    /// Two endpoints that read one users file (one through a symbolic link) take a one-time
    /// code once between them, and still so after a reload.
    #[test]
    fn endpoints_sharing_a_users_file_take_a_code_once_between_them() {
        use crate::auth::{directory::hash_password, totp};
        use crate::proto::key_method::Secret;
        use crate::proto::server::Authenticator;
        use base64::Engine;

        let d = tempfile::tempdir().expect("temporary directory");
        let hash = hash_password("pw").expect("hash");
        std::fs::write(
            d.path().join("users.toml"),
            format!("[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n"),
        )
        .expect("users file");
        std::fs::set_permissions(
            d.path().join("users.toml"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("users.toml", d.path().join("link.toml")).expect("link");
        let endpoint = |n: u8, users: &str| {
            format!(
                r#"
[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef{n}"
client_cidr_block = "10.{n}.0.0/20"
server_certificate = "s.crt"
server_key = "s.key"
dns_name = "vpn.example.internal"
authentication = {{ directory = {{ users_file = "{users}" }}, mfa = "totp" }}
"#
            )
        };
        let text = endpoint(1, "users.toml") + &endpoint(2, "link.toml");
        let loaded = Loaded {
            path: d.path().join("sluice.toml"),
            config: toml::from_str(&text).expect("parses"),
            text,
        };
        let now = 1_111_111_111;
        let sign_in = |auth: &mut EndpointAuth, at: u64| {
            let code = totp::code_at(b"12345678901234567890", at / totp::STEP, 6);
            let b = base64::engine::general_purpose::STANDARD;
            let password = format!(
                "SCRV1:{}:{}",
                b.encode("pw"),
                b.encode(format!("{code:06}"))
            );
            auth.authenticate(at, None, Some("alice"), Some(&Secret::new(password)))
        };
        let mut a = authenticator(&loaded, 0).expect("endpoint 1");
        let mut b = authenticator(&loaded, 1).expect("endpoint 2");
        assert!(sign_in(&mut a, now).is_ok());
        assert_eq!(
            sign_in(&mut b, now),
            Err(FailureReason::MfaFailed),
            "the code endpoint 1 took is refused by endpoint 2"
        );
        // A reload: new authenticators take over from the old ones, endpoint by endpoint.
        let later = now + totp::STEP;
        let mut b2 = authenticator(&loaded, 1).expect("endpoint 2");
        b2.take_over(&mut b);
        assert!(sign_in(&mut b2, later).is_ok());
        let mut a2 = authenticator(&loaded, 0).expect("endpoint 1");
        a2.take_over(&mut a);
        assert_eq!(sign_in(&mut a2, later), Err(FailureReason::MfaFailed));
        assert_eq!(sign_in(&mut a2, now), Err(FailureReason::MfaFailed));
        // A reload that gives endpoint 1 another users file: it brings the codes used along,
        // and endpoint 2, still on the first file, keeps them too. As the runtime does, every
        // new authenticator is made before any takes over.
        std::fs::copy(d.path().join("users.toml"), d.path().join("other.toml")).expect("copy");
        let text = endpoint(1, "other.toml") + &endpoint(2, "link.toml");
        let moved = Loaded {
            path: d.path().join("sluice.toml"),
            config: toml::from_str(&text).expect("parses"),
            text,
        };
        let mut a3 = authenticator(&moved, 0).expect("endpoint 1");
        let mut b3 = authenticator(&moved, 1).expect("endpoint 2");
        a3.take_over(&mut a2);
        b3.take_over(&mut b2);
        assert_eq!(sign_in(&mut a3, later), Err(FailureReason::MfaFailed));
        assert_eq!(sign_in(&mut b3, later), Err(FailureReason::MfaFailed));
    }

    /// The banner goes out as `echo` options titled with the description, or the ID when the
    /// description is blank; no banner, no options.
    #[test]
    fn the_banner_is_titled_with_the_description_or_the_id() {
        let text = crate::config::endpoint_toml(
            "cvpn-endpoint-0123456789abcdef0",
            "10.200.0.0/20",
            443,
            "",
        );
        let config: crate::config::schema::Config = toml::from_str(&text).expect("parses");
        let mut ep = config.endpoints[0].clone();
        assert!(banner(&ep).is_empty());
        ep.client_login_banner = Some("Hello, world".into());
        assert_eq!(
            &*banner(&ep),
            [
                "echo msg Hello%2C%20world",
                "echo msg-window cvpn-endpoint-0123456789abcdef0"
            ]
        );
        ep.description = "Corp VPN".into();
        assert_eq!(
            banner(&ep).last().map(String::as_str),
            Some("echo msg-window Corp%20VPN")
        );
    }

    /// Without `[limits] connections_per_target_network`, an endpoint takes AWS's quota for
    /// its number of associated subnets ("AWS Client VPN quotas": 7,000 for one, 36,500 for
    /// two, ... 126,000 for five), not 7,000 times their number (14,000 for two); past five,
    /// AWS's last figure. Set, the figure is per target network, as before.
    ///
    /// None for an endpoint with no target network (`pending-associate`).
    #[test]
    fn connections_follow_aws_steps_unless_set_per_target_network() {
        const TARGET_NETWORK: &str = r#"
[[endpoint.target_network]]
association_id = "cvpn-assoc-0123456789abcdef1"
subnet_id = "subnet-0a0000000000000a1"
vpc_id = "vpc-0c0000000000000c1"
vpc_cidr = "172.31.0.0/16"
cidr = "172.31.1.0/24"
availability_zone = "lab-1a"
port = "inside-a"
eni_ip = "172.31.1.5"
gateway = "172.31.1.1"
"#;
        let loaded = |limits: &str| {
            let text = limits.to_owned()
                + &crate::config::endpoint_toml(
                    "cvpn-endpoint-0123456789abcdef0",
                    "10.200.0.0/20",
                    443,
                    TARGET_NETWORK,
                );
            Loaded {
                path: "t.toml".into(),
                config: toml::from_str(&text).expect("parses"),
                text,
            }
        };
        let with = |loaded: &Loaded, n: usize| {
            let mut ep = loaded.config.endpoints[0].clone();
            let t = ep.target_networks[0].clone();
            ep.target_networks = vec![t; n];
            max_connections(loaded, &ep)
        };
        let aws = loaded("");
        let by_count: Vec<usize> = (0..=6).map(|n| with(&aws, n)).collect();
        assert_eq!(
            by_count,
            [0, 7_000, 36_500, 66_500, 96_500, 126_000, 126_000]
        );
        let set = loaded("[limits]\nconnections_per_target_network = 50\n");
        let by_count: Vec<usize> = (0..=3).map(|n| with(&set, n)).collect();
        assert_eq!(by_count, [0, 50, 100, 150]);
        let mut none = set.config.endpoints[0].clone();
        none.target_networks.clear();
        assert_eq!(none.status(), "pending-associate");
    }
}
