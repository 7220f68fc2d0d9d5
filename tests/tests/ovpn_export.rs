//! The exported `.ovpn` is accepted by the real Debian OpenVPN 2.6 client: it parses every
//! option (the client prints its settings and goes on to resolve the endpoint's name) with no
//! "Options error". Runs the client in an empty network namespace, so nothing leaves the machine.

use std::path::Path;

use sluice_control::admin::cli::Cli;
use sluice_control::admin::verbs;
use sluice_tests::{make_pki, Netns};

fn config(dir: &Path, cert: &str, auth: &str) -> String {
    format!(
        r#"
[[dataplane.port]]
name = "inside"
device = "net_null0"
ip = "172.31.1.5/24"

[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef0"
client_cidr_block = "10.200.0.0/20"
server_certificate = "{d}/pki/{cert}"
server_key = "{d}/pki/server.key"
dns_name = "vpn.example.internal"
{auth}
"#,
        d = dir.display()
    )
}

fn export(config_path: &Path, extra: &[&str]) -> String {
    use clap::Parser;
    let mut args = vec![
        "sluice",
        "--config",
        config_path.to_str().expect("utf-8 path"),
        "--output",
        "text",
        "export-client-vpn-client-configuration",
        "--client-vpn-endpoint-id",
        "cvpn-endpoint-0123456789abcdef0",
    ];
    args.extend_from_slice(extra);
    let cli = Cli::parse_from(args);
    verbs::run(&cli)
        .unwrap_or_else(|e| panic!("export failed: {e}"))
        .text
}

/// Runs the client on `ovpn` for a few seconds; returns its log.
fn run_client(ns: &Netns, dir: &Path, name: &str, ovpn: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, ovpn).expect("write .ovpn");
    let out = ns.exec(&[
        "timeout",
        "4",
        "openvpn",
        "--config",
        file.to_str().expect("utf-8"),
        "--verb",
        "4",
    ]);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !log.contains("Options error"),
        "the client refused the exported file:\n{ovpn}\n---\n{log}"
    );
    assert!(
        log.contains("Current Parameter Settings"),
        "the client did not get past option parsing:\n{log}"
    );
    log
}

#[test]
fn openvpn_client_accepts_exported_configuration() {
    let ns = Netns::new("ovpn");
    let dir = tempfile::tempdir().expect("tempdir");
    make_pki(&dir.path().join("pki"));
    let pki = dir.path().join("pki");

    // Mutual authentication with the client's certificate and key inline.
    let mutual = format!(
        "[endpoint.authentication]\nmutual = {{ client_root_ca = \"{}/ca.crt\" }}\n",
        pki.display()
    );
    let path = dir.path().join("mutual.toml");
    std::fs::write(&path, config(dir.path(), "server.crt", &mutual)).expect("write config");
    let cert = pki.join("client1.crt");
    let key = pki.join("client1.key");
    let ovpn = export(
        &path,
        &[
            "--client-certificate",
            cert.to_str().expect("utf-8"),
            "--client-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let log = run_client(&ns, dir.path(), "mutual.ovpn", &ovpn);
    // It will tell the appliance when it quits (2.6's default is not to).
    assert!(log.contains("explicit_exit_notification = 1"), "{log}");
    // It went on to dial the endpoint: the name (with the random prefix) fails to resolve here.
    assert!(log.contains(".vpn.example.internal:443"), "{log}");

    // An endpoint dialled by address: the client is given no random name label to ignore
    // (it would warn at every connection) and dials the address itself.
    let path = dir.path().join("address.toml");
    let text = config(dir.path(), "server.crt", &mutual).replace(
        "dns_name = \"vpn.example.internal\"",
        "dns_name = \"192.0.2.7\"",
    );
    std::fs::write(&path, text).expect("write config");
    let ovpn = export(
        &path,
        &[
            "--client-certificate",
            cert.to_str().expect("utf-8"),
            "--client-key",
            key.to_str().expect("utf-8"),
        ],
    );
    assert!(ovpn.contains("\nremote 192.0.2.7 443\n"), "{ovpn}");
    let log = run_client(&ns, dir.path(), "address.ovpn", &ovpn);
    assert!(!log.contains("WARNING"), "{log}");
    assert!(log.contains("192.0.2.7:443"), "{log}");

    // Directory authentication with TOTP MFA: the client parses auth-user-pass and the static
    // challenge, then stops only because nobody is there to type a username.
    let users = dir.path().join("users.toml");
    let hash = sluice_control::auth::directory::hash_password("pw").expect("hash");
    std::fs::write(&users, format!("[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n")).expect("write users file");
    // Its TOTP secrets are for the appliance alone: a file others may read is refused.
    std::fs::set_permissions(&users, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod users file");
    let directory = format!(
        "[endpoint.authentication]\ndirectory = {{ users_file = \"{}\" }}\nmfa = \"totp\"\n",
        users.display()
    );
    let path = dir.path().join("directory.toml");
    std::fs::write(&path, config(dir.path(), "server-chain.crt", &directory))
        .expect("write config");
    let ovpn = export(&path, &[]);
    assert!(
        ovpn.contains("auth-user-pass\nstatic-challenge \"Enter MFA code \" 1\n"),
        "{ovpn}"
    );
    let log = run_client(&ns, dir.path(), "directory.ovpn", &ovpn);
    assert!(log.contains("auth_user_pass_file = 'stdin'"), "{log}");
}
