//! Rules about changing a configuration that is already in force: what AWS fixes at creation,
//! and what cannot be removed while something depends on it.

use super::error::FieldPath;
use super::schema::{Config, Endpoint};
use super::validate::Finding;

/// What of `new` differs from `started` (the configuration the daemon started with) and takes
/// effect only when `sluice run` starts again: the data plane's ports, cores and MTUs, the
/// sockets the daemon listens on, the endpoints created or deleted since (or deleted and
/// created again with another client CIDR, authentication or transport), and an endpoint's
/// port. A reload applies everything else.
pub fn needs_restart(started: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if started.dataplane != new.dataplane {
        out.push("[dataplane]".to_owned());
    }
    if started.appliance.admin_socket != new.appliance.admin_socket {
        out.push("appliance.admin_socket".to_owned());
    }
    if started.appliance.metrics_address != new.appliance.metrics_address {
        out.push("appliance.metrics_address".to_owned());
    }
    for before in &started.endpoints {
        match new.endpoints.iter().find(|n| n.id == before.id) {
            None => out.push(format!(
                "endpoint {} deleted (its listener stays open, taking no connection)",
                before.id
            )),
            Some(after) => {
                // Deleted and created again with the same ID in a later reload (a change in one
                // is refused): what is fixed at creation is served so after a restart, and the
                // endpoint takes no connection meanwhile (`runtime::dataplane`).
                let fixed = fixed_changes(before, after);
                if !fixed.is_empty() {
                    let what: Vec<&str> = fixed.iter().map(|(_, what)| *what).collect();
                    out.push(format!(
                        "endpoint {} recreated with another {} (it takes no connection meanwhile)",
                        before.id,
                        what.join(", ")
                    ));
                } else if after.vpn_port != before.vpn_port {
                    out.push(format!("endpoint {} vpn_port", before.id));
                }
            }
        }
    }
    for after in &new.endpoints {
        if !started.endpoints.iter().any(|b| b.id == after.id) {
            out.push(format!("endpoint {} created (not served yet)", after.id));
        }
    }
    out
}

/// Why the daemon that started with `started` does not serve `ep`, an endpoint of the file now,
/// as the file has it, until it starts again (`None`: it does): created since it started (a
/// reload serves the endpoints it started with), deleted and created again since with another
/// client CIDR, authentication or transport (it takes no connection meanwhile), or moved to
/// another `vpn_port` (served on the old one meanwhile). As `needs_restart` names them, for
/// one endpoint and in the words of a `Status.Message`.
pub fn not_served_as_written(started: &Config, ep: &Endpoint) -> Option<String> {
    let Some(before) = started.endpoints.iter().find(|b| b.id == ep.id) else {
        return Some("created since the daemon started; served after a restart".to_owned());
    };
    let fixed = fixed_changes(before, ep);
    if !fixed.is_empty() {
        let what: Vec<&str> = fixed.iter().map(|(_, what)| *what).collect();
        return Some(format!(
            "created again since the daemon started, with another {}; takes no connection until \
             a restart",
            what.join(", ")
        ));
    }
    (ep.vpn_port != before.vpn_port).then(|| {
        format!(
            "vpn_port changed since the daemon started; served on port {} until a restart",
            before.vpn_port.get()
        )
    })
}

/// Checks that `new` may replace `old`: an endpoint keeps its client CIDR, authentication
/// methods (MFA may be turned on or off) and transport, and an endpoint with associated target
/// networks cannot disappear.
pub fn check_change(old: &Config, new: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let eps = FieldPath::root().key("endpoint");
    for before in &old.endpoints {
        let Some((e, after)) = new
            .endpoints
            .iter()
            .enumerate()
            .find(|(_, n)| n.id == before.id)
        else {
            if !before.target_networks.is_empty() {
                out.push((
                    eps.clone(),
                    format!(
                        "endpoint {} has {} associated target network(s); disassociate them before \
                         deleting it",
                        before.id,
                        before.target_networks.len()
                    ),
                ));
            }
            continue;
        };
        let p = eps.index(e);
        for (key, field) in fixed_changes(before, after) {
            out.push((
                p.key(key),
                format!(
                    "the {field} of endpoint {} cannot change after creation; delete and recreate \
                     the endpoint",
                    before.id
                ),
            ));
        }
    }
    out
}

/// What of `after` differs from `before` (the same endpoint) that AWS fixes at creation: the
/// client CIDR, the authentication methods and the transport, as (key, what it is).
pub fn fixed_changes(before: &Endpoint, after: &Endpoint) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if after.client_cidr_block != before.client_cidr_block {
        out.push(("client_cidr_block", "client CIDR"));
    }
    // MFA is the directory's, which may turn it on or off later (the guide: "if you enable
    // multi-factor authentication (MFA) on your directory after you distribute the client
    // configuration file, you must download a new file"); the methods themselves are fixed.
    let methods = |a: &super::schema::Authentication| (a.mutual.clone(), a.directory.clone());
    if methods(&after.authentication) != methods(&before.authentication) {
        out.push(("authentication", "authentication options"));
    }
    if after.transport_protocol != before.transport_protocol {
        out.push(("transport_protocol", "transport protocol"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(endpoints: &[(&str, u16)]) -> Config {
        let text: String = endpoints
            .iter()
            .map(|(id, port)| crate::config::endpoint_toml(id, "10.200.0.0/20", *port, ""))
            .collect();
        crate::config::parse(Path::new("t.toml"), &text).expect("parses")
    }

    /// A reload serves the endpoints the daemon started with, on their ports: one created,
    /// deleted or moved to another port since is named for a restart, wherever it sits in the
    /// file.
    #[test]
    fn endpoints_created_deleted_or_moved_wait_for_a_restart() {
        const A: &str = "cvpn-endpoint-0123456789abcdef0";
        const B: &str = "cvpn-endpoint-0123456789abcdef1";
        const C: &str = "cvpn-endpoint-0123456789abcdef2";
        let started = config(&[(A, 443), (B, 1194)]);
        assert!(needs_restart(&started, &config(&[(B, 1194), (A, 443)])).is_empty());
        assert_eq!(
            needs_restart(&started, &config(&[(B, 1194), (C, 443)])),
            [
                format!("endpoint {A} deleted (its listener stays open, taking no connection)"),
                format!("endpoint {C} created (not served yet)"),
            ]
        );
        assert_eq!(
            needs_restart(&config(&[(A, 443)]), &config(&[(A, 1194)])),
            [format!("endpoint {A} vpn_port")]
        );
    }

    /// An endpoint deleted in one reload and written again with the same ID but another
    /// client CIDR in a later one (each reload on its own allowed: the first deletes an
    /// endpoint without target networks, the second finds no endpoint of that ID to keep
    /// fixed) is named for a restart: the daemon serves it with what it started with.
    #[test]
    fn an_endpoint_recreated_with_another_client_cidr_waits_for_a_restart() {
        const A: &str = "cvpn-endpoint-0123456789abcdef0";
        let started = config(&[(A, 443)]);
        let mut recreated = started.clone();
        recreated.endpoints[0].client_cidr_block = "10.210.0.0/20".parse().expect("cidr");
        assert!(check_change(&config(&[]), &recreated).is_empty());
        assert_eq!(
            needs_restart(&started, &recreated),
            [format!(
                "endpoint {A} recreated with another client CIDR (it takes no connection \
                 meanwhile)"
            )]
        );
        assert_eq!(
            fixed_changes(&started.endpoints[0], &recreated.endpoints[0]),
            [("client_cidr_block", "client CIDR")]
        );
    }
}
