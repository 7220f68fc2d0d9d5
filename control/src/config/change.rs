//! Rules about changing a configuration that is already in force: what AWS fixes at creation,
//! and what cannot be removed while something depends on it.

use super::error::FieldPath;
use super::schema::Config;
use super::validate::Finding;

/// What of `new` differs from `started` (the configuration the daemon started with) and takes
/// effect only when `sluice run` starts again: the data plane's ports, cores and MTUs, and the
/// sockets the daemon listens on. A reload applies everything else.
pub fn needs_restart(started: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if started.dataplane != new.dataplane {
        out.push("[dataplane]");
    }
    if started.appliance.admin_socket != new.appliance.admin_socket {
        out.push("appliance.admin_socket");
    }
    if started.appliance.metrics_address != new.appliance.metrics_address {
        out.push("appliance.metrics_address");
    }
    out
}

/// Checks that `new` may replace `old`: an endpoint keeps its client CIDR, authentication and
/// transport, and an endpoint with associated target networks cannot disappear.
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
        let fixed = |field: &str| {
            format!(
                "the {field} of endpoint {} cannot change after creation; delete and recreate the \
                 endpoint",
                before.id
            )
        };
        if after.client_cidr_block != before.client_cidr_block {
            out.push((p.key("client_cidr_block"), fixed("client CIDR")));
        }
        if after.authentication != before.authentication {
            out.push((p.key("authentication"), fixed("authentication options")));
        }
        if after.transport_protocol != before.transport_protocol {
            out.push((p.key("transport_protocol"), fixed("transport protocol")));
        }
    }
    out
}
