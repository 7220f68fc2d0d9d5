//! The `sluice` command line: verbs and flags named as in the AWS CLI's Client VPN commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// sluice: a self-hosted Client VPN appliance.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Json)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
}

/// Output formats, as in the AWS CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// JSON shaped like the AWS API's responses.
    Json,
    /// Aligned columns for people.
    Table,
    /// The bare value, for verbs that return one (a configuration file, a CRL).
    Text,
}

/// The verbs.
#[derive(Debug, Subcommand, Serialize)]
pub enum Verb {
    /// Run the appliance daemon (control thread, admin socket, signals) in the foreground.
    Run,
    /// Ask the running daemon to re-read its configuration (same as SIGHUP).
    Reload,
    /// Check the configuration file against every rule.
    Validate,
    /// Hash a password (read from stdin) for a users file (argon2id PHC string).
    HashPassword,
    /// A live view of the running appliance: connections with their rates, cores, drops.
    Top(TopArgs),
    /// The running data plane's per-core counters (drops, polls, sessions, flows, rules).
    DescribeDataPlane,
    /// Create a Client VPN endpoint (status pending-associate until a target network is associated).
    CreateClientVpnEndpoint(CreateEndpoint),
    /// Change the fields of an endpoint that may change after creation.
    ModifyClientVpnEndpoint(ModifyEndpoint),
    /// Delete an endpoint without associated target networks.
    DeleteClientVpnEndpoint(EndpointIdArg),
    /// Describe endpoints.
    DescribeClientVpnEndpoints(DescribeEndpoints),
    /// Associate a subnet; the first association makes the endpoint available and adds the VPC route.
    AssociateClientVpnTargetNetwork(Associate),
    /// Disassociate a subnet, with the routes through it (its association's and those added).
    DisassociateClientVpnTargetNetwork(Disassociate),
    /// Describe target networks.
    DescribeClientVpnTargetNetworks(DescribeTargetNetworks),
    /// Apply security groups to the endpoint's target networks in a VPC.
    ApplySecurityGroupsToClientVpnTargetNetwork(ApplySecurityGroups),
    /// Add an authorization rule.
    AuthorizeClientVpnIngress(Authorize),
    /// Remove an authorization rule.
    RevokeClientVpnIngress(Revoke),
    /// Describe authorization rules.
    DescribeClientVpnAuthorizationRules(DescribeItems),
    /// Add a route.
    CreateClientVpnRoute(CreateRoute),
    /// Delete a route that was added with create-client-vpn-route.
    DeleteClientVpnRoute(DeleteRoute),
    /// Describe routes.
    DescribeClientVpnRoutes(DescribeItems),
    /// Import a certificate revocation list for client certificates.
    ImportClientVpnClientCertificateRevocationList(ImportCrl),
    /// Export the certificate revocation list.
    ExportClientVpnClientCertificateRevocationList(EndpointIdArg),
    /// Export the OpenVPN client configuration (.ovpn).
    ExportClientVpnClientConfiguration(ExportConfiguration),
    /// List the client connections of the running appliance (active and recently ended).
    DescribeClientVpnConnections(DescribeItems),
    /// Disconnect client connections by connection id or by user name.
    TerminateClientVpnConnections(TerminateConnections),
}

/// `top`.
#[derive(Debug, Args, Serialize)]
pub struct TopArgs {
    /// Seconds between refreshes (a positive number; 0.1 at least, 3600 at most).
    #[arg(long, default_value_t = 1.0, value_parser = positive_seconds)]
    pub interval: f64,
    /// Print one frame (after two samples, for the rates) and exit.
    #[arg(long)]
    pub once: bool,
}

/// A number of seconds that is finite and above zero (`nan`, `inf`, 0 and negatives are refused).
fn positive_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("`{s}` is not a positive, finite number of seconds"))
    }
}

/// `terminate-client-vpn-connections`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminateConnections {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
    /// The connection to end.
    #[arg(
        long,
        required_unless_present = "username",
        conflicts_with = "username"
    )]
    pub connection_id: Option<String>,
    /// End every connection of this user.
    #[arg(long)]
    pub username: Option<String>,
}

/// `--client-vpn-endpoint-id`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointIdArg {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
}

/// An optional `--client-vpn-endpoint-id` (all endpoints when absent), filters and the page.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeItems {
    /// The endpoint (default: every endpoint).
    #[arg(long)]
    pub client_vpn_endpoint_id: Option<String>,
    /// Which items, and which page of them.
    #[command(flatten)]
    #[serde(flatten)]
    pub listing: Listing,
}

/// `--filters`, `--max-results` and `--next-token` of a describe verb, as the AWS API takes
/// them.
#[derive(Clone, Debug, Default, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    /// Only the items every filter matches: `Name=NAME,Values=V1,V2` or JSON, as in the AWS
    /// CLI (`*` and `?` as wildcards).
    #[arg(long, num_args = 1..)]
    pub filters: Vec<String>,
    /// At most this many items (5 to 1000); the answer's NextToken asks for the next page.
    #[arg(long, value_parser = clap::value_parser!(u16).range(5..=1000))]
    pub max_results: Option<u16>,
    /// The NextToken of the previous answer: the page that follows it.
    #[arg(long)]
    pub next_token: Option<String>,
}

/// `describe-client-vpn-target-networks`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeTargetNetworks {
    /// The endpoint (default: every endpoint).
    #[arg(long)]
    pub client_vpn_endpoint_id: Option<String>,
    /// Only these associations.
    #[arg(long, num_args = 1..)]
    pub association_ids: Vec<String>,
    /// Which items, and which page of them.
    #[command(flatten)]
    #[serde(flatten)]
    pub listing: Listing,
}

/// `describe-client-vpn-endpoints`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeEndpoints {
    /// Only these endpoints.
    #[arg(long, num_args = 1..)]
    pub client_vpn_endpoint_ids: Vec<String>,
    /// Which items, and which page of them.
    #[command(flatten)]
    #[serde(flatten)]
    pub listing: Listing,
}

/// `create-client-vpn-endpoint`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateEndpoint {
    /// The client IPv4 CIDR, /12 to /22; fixed at creation.
    #[arg(long)]
    pub client_cidr_block: String,
    /// The server certificate chain (PEM file; the AWS CLI's ARN).
    #[arg(long, alias = "server-certificate")]
    pub server_certificate_arn: PathBuf,
    /// The server private key (PEM file).
    #[arg(long)]
    pub server_key: PathBuf,
    /// Authentication options, shorthand or JSON, e.g.
    /// `Type=certificate-authentication,MutualAuthentication={ClientRootCertificateChainArn=ca.crt}`
    /// or `Type=directory-service-authentication,ActiveDirectory={DirectoryId=users.toml}`.
    #[arg(long, num_args = 1..=2, required = true)]
    pub authentication_options: Vec<String>,
    /// Require a TOTP code through the static challenge (with directory authentication).
    #[arg(long, value_parser = ["totp"])]
    pub mfa: Option<String>,
    /// Connection logging, e.g. `Enabled=true,LogPath=/var/log/sluice/ep.log`.
    #[arg(long)]
    pub connection_log_options: Option<String>,
    /// The name clients dial.
    #[arg(long)]
    pub dns_name: String,
    /// At most two DNS servers.
    #[arg(long, num_args = 1..)]
    pub dns_servers: Vec<String>,
    /// `udp` (the only transport sluice serves; `tcp` is refused).
    #[arg(long, default_value = "udp")]
    pub transport_protocol: String,
    /// 443 or 1194.
    #[arg(long, default_value_t = 443)]
    pub vpn_port: u16,
    /// Free text.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Push only the endpoint's routes.
    #[arg(long, overrides_with = "no_split_tunnel")]
    pub split_tunnel: bool,
    /// Redirect all client traffic (the default).
    #[arg(long)]
    pub no_split_tunnel: bool,
    /// 8, 10, 12 or 24.
    #[arg(long, default_value_t = 24)]
    pub session_timeout_hours: u8,
    /// `Enabled=true,BannerText=...`.
    #[arg(long)]
    pub client_login_banner_options: Option<String>,
}

/// `modify-client-vpn-endpoint`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModifyEndpoint {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
    /// A new server certificate chain.
    #[arg(long, alias = "server-certificate")]
    pub server_certificate_arn: Option<PathBuf>,
    /// The new certificate's key.
    #[arg(long)]
    pub server_key: Option<PathBuf>,
    /// Connection logging.
    #[arg(long)]
    pub connection_log_options: Option<String>,
    /// DNS servers: `CustomDnsServers=a,b,Enabled=true` (shorthand or JSON; `Enabled=false`
    /// deletes them) or a plain list.
    #[arg(long, num_args = 1..)]
    pub dns_servers: Option<Vec<String>>,
    /// 443 or 1194.
    #[arg(long)]
    pub vpn_port: Option<u16>,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// Push only the endpoint's routes.
    #[arg(long, conflicts_with = "no_split_tunnel")]
    pub split_tunnel: bool,
    /// Redirect all client traffic.
    #[arg(long)]
    pub no_split_tunnel: bool,
    /// 8, 10, 12 or 24.
    #[arg(long)]
    pub session_timeout_hours: Option<u8>,
    /// `Enabled=true,BannerText=...` or `Enabled=false`.
    #[arg(long)]
    pub client_login_banner_options: Option<String>,
    /// The name clients dial.
    #[arg(long)]
    pub dns_name: Option<String>,
}

/// `associate-client-vpn-target-network`. AWS looks the subnet up; sluice is told.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Associate {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
    /// The subnet's id.
    #[arg(long)]
    pub subnet_id: String,
    /// The subnet's VPC.
    #[arg(long)]
    pub vpc_id: String,
    /// The VPC's CIDR.
    #[arg(long)]
    pub vpc_cidr: String,
    /// The subnet's CIDR.
    #[arg(long)]
    pub cidr: String,
    /// The subnet's availability zone.
    #[arg(long)]
    pub availability_zone: String,
    /// The data-plane port in the subnet.
    #[arg(long)]
    pub port: String,
    /// The SNAT address in the subnet.
    #[arg(long)]
    pub eni_ip: String,
    /// The subnet's router.
    #[arg(long)]
    pub gateway: String,
}

/// `disassociate-client-vpn-target-network`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Disassociate {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
    /// The association.
    #[arg(long)]
    pub association_id: String,
}

/// `apply-security-groups-to-client-vpn-target-network`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplySecurityGroups {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
    /// The VPC whose target networks get the groups.
    #[arg(long)]
    pub vpc_id: String,
    /// The groups (replacing those applied before).
    #[arg(long, num_args = 1.., required = true)]
    pub security_group_ids: Vec<String>,
}

/// `authorize-client-vpn-ingress`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorize {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
    /// The destination network.
    #[arg(long)]
    pub target_network_cidr: String,
    /// The group granted access.
    #[arg(
        long,
        conflicts_with = "authorize_all_groups",
        required_unless_present = "authorize_all_groups"
    )]
    pub access_group_id: Option<String>,
    /// Grant every user.
    #[arg(long)]
    pub authorize_all_groups: bool,
    /// Free text.
    #[arg(long, default_value = "")]
    pub description: String,
}

/// `revoke-client-vpn-ingress`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revoke {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
    /// The destination network of the rule.
    #[arg(long)]
    pub target_network_cidr: String,
    /// The group of the rule.
    #[arg(
        long,
        conflicts_with = "revoke_all_groups",
        required_unless_present = "revoke_all_groups"
    )]
    pub access_group_id: Option<String>,
    /// The rule that grants every user.
    #[arg(long)]
    pub revoke_all_groups: bool,
}

/// `create-client-vpn-route`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRoute {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
    /// The destination network.
    #[arg(long)]
    pub destination_cidr_block: String,
    /// The associated subnet traffic leaves through.
    #[arg(long)]
    pub target_vpc_subnet_id: String,
    /// Free text.
    #[arg(long, default_value = "")]
    pub description: String,
}

/// `delete-client-vpn-route`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRoute {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
    /// The destination network.
    #[arg(long)]
    pub destination_cidr_block: String,
    /// The target subnet (needed when routes to one destination go through several subnets).
    #[arg(long)]
    pub target_vpc_subnet_id: Option<String>,
}

/// `import-client-vpn-client-certificate-revocation-list`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportCrl {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
    /// The PEM CRL: `file://PATH` (or `fileb://PATH`, or `file:PATH` as the guide writes it), a
    /// path, or the PEM text itself (which starts with dashes: taken as the value, not as a flag).
    #[arg(long, allow_hyphen_values = true)]
    pub certificate_revocation_list: String,
}

/// `export-client-vpn-client-configuration`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportConfiguration {
    /// The endpoint.
    #[arg(long)]
    pub client_vpn_endpoint_id: String,
    /// A client certificate to embed inline (the guide's manual step, done for you).
    #[arg(long, requires = "client_key")]
    pub client_certificate: Option<PathBuf>,
    /// Its private key.
    #[arg(long, requires = "client_certificate")]
    pub client_key: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found writing a property test: the PEM text itself, as `--certificate-revocation-list
    /// "$(cat crl.pem)"` gives it, starts with dashes, and clap took it for a flag and refused
    /// the command ("unexpected argument '-----BEGIN X509 CRL-----...'"), though it is one of
    /// the three forms the flag documents.
    #[test]
    fn a_crl_given_as_its_pem_text_is_the_flags_value() {
        let pem = "-----BEGIN X509 CRL-----\nMIIB\n-----END X509 CRL-----\n";
        let cli = Cli::try_parse_from([
            "sluice",
            "import-client-vpn-client-certificate-revocation-list",
            "--client-vpn-endpoint-id",
            "cvpn-endpoint-0123456789abcdef0",
            "--certificate-revocation-list",
            pem,
        ])
        .expect("parses");
        let Verb::ImportClientVpnClientCertificateRevocationList(a) = cli.verb else {
            panic!("another verb: {:?}", cli.verb);
        };
        assert_eq!(a.certificate_revocation_list, pem);
    }
}
