//! AWS-shaped JSON descriptions of the configuration's endpoints, target networks,
//! authorization rules and routes (the `Describe*` responses' items).

use serde_json::{json, Value};

use crate::config::schema::{Endpoint, Grantee};

/// A `ClientVpnEndpoints` item.
pub fn endpoint(ep: &Endpoint) -> Value {
    let auth = &ep.authentication;
    let mut options = Vec::new();
    if let Some(m) = &auth.mutual {
        options.push(json!({
            "Type": "certificate-authentication",
            "MutualAuthentication": { "ClientRootCertificateChain": m.client_root_ca },
        }));
    }
    if let Some(d) = &auth.directory {
        options.push(json!({
            "Type": "directory-service-authentication",
            "ActiveDirectory": { "DirectoryId": d.users_file },
            "MfaEnabled": auth.mfa.is_some(),
        }));
    }
    let mut sgs: Vec<&str> = ep
        .target_networks
        .iter()
        .flat_map(|t| t.security_groups.iter().map(String::as_str))
        .collect();
    sgs.sort_unstable();
    sgs.dedup();
    json!({
        "ClientVpnEndpointId": ep.id.as_str(),
        "Description": ep.description,
        "Status": { "Code": ep.status() },
        "DnsName": ep.dns_name,
        "ClientCidrBlock": ep.client_cidr_block.to_string(),
        "DnsServers": ep.dns_servers,
        "SplitTunnel": ep.split_tunnel,
        "VpnProtocol": "openvpn",
        "TransportProtocol": ep.transport_protocol.as_str(),
        "VpnPort": ep.vpn_port.get(),
        "ServerCertificateArn": ep.server_certificate,
        "AuthenticationOptions": options,
        "ConnectionLogOptions": {
            "Enabled": ep.connection_log.enabled,
            "LogPath": ep.connection_log.path,
        },
        "SecurityGroupIds": sgs,
        "VpcId": ep.vpc_id(),
        "SessionTimeoutHours": ep.session_timeout_hours.hours(),
        "ClientLoginBannerOptions": {
            "Enabled": ep.client_login_banner.is_some(),
            "BannerText": ep.client_login_banner,
        },
        "CertificateRevocationList": ep.crl,
    })
}

/// The `ClientVpnTargetNetworks` items of an endpoint.
pub fn target_networks(ep: &Endpoint) -> Vec<Value> {
    ep.target_networks
        .iter()
        .map(|t| {
            json!({
                "AssociationId": t.association_id.as_str(),
                "VpcId": t.vpc_id,
                "TargetNetworkId": t.subnet_id,
                "ClientVpnEndpointId": ep.id.as_str(),
                "Status": { "Code": "associated" },
                "SecurityGroups": t.security_groups,
                "Cidr": t.cidr.to_string(),
                "AvailabilityZone": t.availability_zone,
                "Port": t.port,
                "EniIp": t.eni_ip.to_string(),
                "Gateway": t.gateway.to_string(),
            })
        })
        .collect()
}

/// The `AuthorizationRules` items of an endpoint.
pub fn authorization_rules(ep: &Endpoint) -> Vec<Value> {
    ep.authorization_rules
        .iter()
        .map(|r| {
            let (group, all) = match r.grantee() {
                Some(Grantee::Group(g)) => (Some(g), false),
                _ => (None, true),
            };
            json!({
                "ClientVpnEndpointId": ep.id.as_str(),
                "Description": r.description,
                "GroupId": group,
                "AccessAll": all,
                "DestinationCidr": r.destination_cidr.to_string(),
                "Status": { "Code": "active" },
            })
        })
        .collect()
}

/// The `Routes` items of an endpoint.
pub fn routes(ep: &Endpoint) -> Vec<Value> {
    ep.routes
        .iter()
        .map(|r| {
            json!({
                "ClientVpnEndpointId": ep.id.as_str(),
                "DestinationCidr": r.destination_cidr.to_string(),
                "TargetSubnet": r.target_subnet,
                "Type": "Nat",
                "Origin": r.origin.as_str(),
                "Status": { "Code": "active" },
                "Description": r.description,
            })
        })
        .collect()
}
