//! The TOML schema of `sluice.toml`: serde types, unknown fields refused everywhere.
//!
//! This module only describes the shape of the file and the defaults; the rules that relate
//! fields to each other (the AWS Client VPN semantics) live in `validate`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::types::{
    AssociationId, Cidr, EndpointId, IfAddr, Protocol, SessionTimeoutHours, Transport, VpnPort,
};

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the appliance keeps its sockets and state.
    #[serde(default)]
    pub appliance: Appliance,
    /// Quotas, with AWS's current defaults.
    #[serde(default)]
    pub limits: Limits,
    /// The DPDK data plane.
    #[serde(default)]
    pub dataplane: Dataplane,
    /// Security groups that target networks reference.
    #[serde(default, rename = "security_group")]
    pub security_groups: Vec<SecurityGroup>,
    /// The Client VPN endpoints.
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<Endpoint>,
}

/// `[appliance]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    /// The Unix socket of live administration (root only, mode 0600).
    #[serde(default = "default_admin_socket")]
    pub admin_socket: PathBuf,
    /// Where imported CRLs and other state are kept.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The audit trail of management actions (default: `audit.log` in `state_dir`).
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// When an endpoint's pushed routes change, tell its connected clients to reconnect at once
    /// (a `RESTART` message) so they get the new routes; AWS leaves them until their next
    /// connection, which is the default here too.
    #[serde(default)]
    pub reconnect_on_route_change: bool,
    /// Where the Prometheus metrics endpoint listens (`/metrics`); loopback by default, empty
    /// to turn it off.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: String,
    /// Renegotiate each session's data-channel key when it is this many seconds old (OpenVPN's
    /// server-side `reneg-sec`, less up to a tenth for each session so they do not all come at
    /// once). 0, the default, leaves it to the clients, as AWS does (its exported file, and
    /// ours, says `reneg-sec 0`): a key then lasts until the session ends or its packet
    /// counter nears its end.
    #[serde(default)]
    pub reneg_seconds: u32,
}

fn default_metrics_address() -> String {
    "127.0.0.1:9180".into()
}

impl Default for Appliance {
    fn default() -> Self {
        Self {
            admin_socket: default_admin_socket(),
            state_dir: default_state_dir(),
            audit_log: None,
            reconnect_on_route_change: false,
            metrics_address: default_metrics_address(),
            reneg_seconds: 0,
        }
    }
}

fn default_admin_socket() -> PathBuf {
    PathBuf::from("/run/sluice/admin.sock")
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/sluice")
}

/// `[limits]`: AWS Client VPN's default quotas, raisable here as AWS raises them on request.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Client VPN endpoints per appliance (AWS: per Region).
    #[serde(default = "default_endpoints")]
    pub endpoints: u32,
    /// Authorization rules per endpoint.
    #[serde(default = "default_rules")]
    pub authorization_rules_per_endpoint: u32,
    /// Routes per associated target network.
    #[serde(default = "default_routes")]
    pub routes_per_target_network: u32,
    /// Concurrent connections per endpoint, for each associated target network. Unset, an
    /// endpoint takes AWS's quota for its number of target networks
    /// (`AWS_CONNECTIONS_BY_TARGET_NETWORKS`), which does not grow in proportion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_per_target_network: Option<u32>,
}

/// AWS's default quota of concurrent client connections per endpoint for one to five
/// associated subnets ("AWS Client VPN quotas": 7,000, 36,500, 66,500, 96,500, 126,000). AWS
/// gives no figure past five; more target networks keep the last.
pub const AWS_CONNECTIONS_BY_TARGET_NETWORKS: [u32; 5] = [7_000, 36_500, 66_500, 96_500, 126_000];

impl Limits {
    /// The connections an endpoint with `target_networks` associated takes at most: with
    /// `connections_per_target_network` set, that many for each target network; unset, AWS's
    /// quota for that many subnets. None before a target network is associated.
    pub fn connections(&self, target_networks: usize) -> usize {
        match self.connections_per_target_network {
            Some(per) => (per as usize).saturating_mul(target_networks),
            None => target_networks.checked_sub(1).map_or(0, |i| {
                let last = AWS_CONNECTIONS_BY_TARGET_NETWORKS.len() - 1;
                AWS_CONNECTIONS_BY_TARGET_NETWORKS[i.min(last)] as usize
            }),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            endpoints: default_endpoints(),
            authorization_rules_per_endpoint: default_rules(),
            routes_per_target_network: default_routes(),
            connections_per_target_network: None,
        }
    }
}

fn default_endpoints() -> u32 {
    5
}
fn default_rules() -> u32 {
    200
}
fn default_routes() -> u32 {
    100
}

/// `[dataplane]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    /// Extra DPDK EAL arguments (for example `["--no-pci", "-l", "0-1"]`).
    #[serde(default)]
    pub eal_args: Vec<String>,
    /// Worker (poll-mode) cores; 0 means one per available core minus the control thread.
    #[serde(default)]
    pub workers: u32,
    /// The port clients reach: each endpoint listens on its address at the endpoint's
    /// `vpn_port`. Empty means the first `[[dataplane.port]]`.
    #[serde(default)]
    pub outside: String,
    /// The data-plane ports.
    #[serde(default, rename = "port")]
    pub ports: Vec<Port>,
    /// Control-channel packets each worker core passes to the control thread per source
    /// address and port (a handshake is 10 to 20 packets; the rest of a flood is dropped on
    /// the core, `punt_rate_limited`).
    #[serde(default = "Budget::control_packets")]
    pub control_packets: Budget,
    /// Clients' first hard resets each worker core answers per source address (every client
    /// behind one NAT shares it: raise it for offices of hundreds that reconnect together;
    /// the rest are dropped, `reset_rate_limited`, and the clients retry).
    #[serde(default = "Budget::reset_answers")]
    pub reset_answers: Budget,
    /// ICMP errors (time exceeded) each worker core sends per destination address.
    #[serde(default = "Budget::icmp_errors")]
    pub icmp_errors: Budget,
    /// Client sessions each worker core holds at most (its table, about 2 KiB a session, is
    /// allocated at start); 1..=`Dataplane::MAX_SESSIONS_PER_CORE`. A client no core has
    /// room for is refused before it connects, as a temporary failure (it retries after its
    /// backoff); one that loses the race for the last place is ended ("its core's session
    /// table is full") and told to start over.
    #[serde(default = "default_sessions_per_core")]
    pub sessions_per_core: u32,
    /// Flows (translated connections) one client session may hold on its core, so that one
    /// client cannot take the core's table (262,144 flows) from the others; past it its new
    /// connections are dropped, `session_flows_full`. 1..=`Dataplane::MAX_FLOWS_PER_SESSION`;
    /// unset: an eighth of the table (32,768), a browser needing hundreds and a scan of the
    /// common ports a few thousand.
    #[serde(default)]
    pub flows_per_session: Option<u32>,
    /// How long a flow (a translated connection) lives without traffic, seconds; each is
    /// 1..=`FlowTimeouts::MAX`. Unset, the NAT RFCs' (RFC 5382, RFC 4787) and conntrack's:
    /// TCP established 7,440, TCP opening or closing 240, UDP 300, ICMP echo 60.
    #[serde(default)]
    pub flow_timeouts: FlowTimeouts,
}

/// `[dataplane] flow_timeouts`: idle timeouts of the cores' flows, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlowTimeouts {
    /// TCP after its handshake completed.
    #[serde(default = "FlowTimeouts::tcp_established")]
    pub tcp_established: u32,
    /// TCP before its handshake completed or after a FIN or RST.
    #[serde(default = "FlowTimeouts::tcp_transitory")]
    pub tcp_transitory: u32,
    /// UDP.
    #[serde(default = "FlowTimeouts::udp")]
    pub udp: u32,
    /// ICMP echo.
    #[serde(default = "FlowTimeouts::icmp")]
    pub icmp: u32,
}

impl FlowTimeouts {
    /// The longest timeout accepted: a day.
    pub const MAX: u32 = 86_400;

    fn tcp_established() -> u32 {
        7_440
    }
    fn tcp_transitory() -> u32 {
        240
    }
    fn udp() -> u32 {
        300
    }
    fn icmp() -> u32 {
        60
    }

    /// Each timeout with its name, in the file's order.
    pub fn named(&self) -> [(&'static str, u32); 4] {
        [
            ("tcp_established", self.tcp_established),
            ("tcp_transitory", self.tcp_transitory),
            ("udp", self.udp),
            ("icmp", self.icmp),
        ]
    }
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        Self {
            tcp_established: Self::tcp_established(),
            tcp_transitory: Self::tcp_transitory(),
            udp: Self::udp(),
            icmp: Self::icmp(),
        }
    }
}

impl Dataplane {
    /// The largest `sessions_per_core` accepted (about 2 GiB of sessions a core).
    pub const MAX_SESSIONS_PER_CORE: u32 = 1 << 20;
    /// The largest `flows_per_session` accepted: a core's whole flow table.
    pub const MAX_FLOWS_PER_SESSION: u32 = 262_144;
}

fn default_sessions_per_core() -> u32 {
    16_384
}

impl Default for Dataplane {
    fn default() -> Self {
        Self {
            eal_args: Vec::new(),
            workers: 0,
            outside: String::new(),
            ports: Vec::new(),
            control_packets: Budget::control_packets(),
            reset_answers: Budget::reset_answers(),
            icmp_errors: Budget::icmp_errors(),
            sessions_per_core: default_sessions_per_core(),
            flows_per_session: None,
            flow_timeouts: FlowTimeouts::default(),
        }
    }
}

/// A per-source budget: `burst` at once, then `per_second` a second (a token bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// What a source may spend at once (the bucket's size).
    pub burst: u32,
    /// What it gets back each second.
    pub per_second: u32,
}

impl Budget {
    /// The largest `burst` or `per_second` accepted.
    pub const MAX: u32 = 1_000_000;

    fn of((burst, per_second): (u32, u32)) -> Self {
        Self { burst, per_second }
    }

    fn control_packets() -> Self {
        Self::of(sluice_engine::worker::DEFAULT_PUNT_BUDGET)
    }

    fn reset_answers() -> Self {
        Self::of(sluice_engine::worker::DEFAULT_ANSWER_BUDGET)
    }

    fn icmp_errors() -> Self {
        Self::of(sluice_engine::worker::DEFAULT_ICMP_ERROR_BUDGET)
    }

    /// As the engine takes it.
    pub fn pair(self) -> (u32, u32) {
        (self.burst, self.per_second)
    }
}

impl Dataplane {
    /// The index of the port clients reach, if there is one.
    pub fn outside_index(&self) -> Option<usize> {
        if self.outside.is_empty() {
            (!self.ports.is_empty()).then_some(0)
        } else {
            self.ports.iter().position(|p| p.name == self.outside)
        }
    }
}

/// `[[dataplane.port]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// The name target networks refer to.
    pub name: String,
    /// A PCI address (`0000:03:00.0`) or a DPDK vdev string (`net_af_packet0,iface=eth1`).
    pub device: String,
    /// The appliance's address on this port, with the prefix length.
    pub ip: IfAddr,
    /// The default next hop out of this port, if any.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The link's MTU. On the outside port, datagrams to clients longer than this leave in
    /// fragments (a PPPoE or tunnelled uplink: 1492, 1420); inside ports carry clients'
    /// packets of up to 1,500 bytes unfragmented, so theirs is at least 1500.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

/// The usual Ethernet MTU.
pub const DEFAULT_MTU: u16 = 1500;

fn default_mtu() -> u16 {
    DEFAULT_MTU
}

/// `[[security_group]]`: egress rules applied to the traffic of a target network.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    /// The id target networks refer to, like `sg-0123456789abcdef0`.
    pub id: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Egress rules; a packet leaves if any rule of any applied group allows it.
    #[serde(default, rename = "egress")]
    pub egress: Vec<EgressRule>,
}

/// `[[security_group.egress]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    /// `all`, `tcp`, `udp` or `icmp`.
    pub protocol: Protocol,
    /// First destination port (tcp/udp only).
    #[serde(default)]
    pub from_port: Option<u16>,
    /// Last destination port (tcp/udp only).
    #[serde(default)]
    pub to_port: Option<u16>,
    /// Destination network.
    pub destination_cidr: Cidr,
}

/// `[[endpoint]]`: a Client VPN endpoint.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `cvpn-endpoint-` followed by 17 hex digits; generated at creation.
    pub id: EndpointId,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The pool client addresses come from (/12 to /22); fixed at creation.
    pub client_cidr_block: Cidr,
    /// PEM server certificate chain, leaf first.
    pub server_certificate: PathBuf,
    /// PEM private key of the server certificate.
    pub server_key: PathBuf,
    /// `udp` or `tcp`; fixed at creation.
    #[serde(default = "default_transport")]
    pub transport_protocol: Transport,
    /// 443 or 1194.
    #[serde(default = "default_vpn_port")]
    pub vpn_port: VpnPort,
    /// The name clients dial (the exported configuration's `remote`).
    pub dns_name: String,
    /// At most two DNS servers pushed to clients.
    #[serde(default)]
    pub dns_servers: Vec<Ipv4Addr>,
    /// Push only the endpoint's routes instead of redirecting all traffic.
    #[serde(default)]
    pub split_tunnel: bool,
    /// Maximum session duration.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_hours: SessionTimeoutHours,
    /// Text shown to clients after they connect (AWS's client login banner).
    #[serde(default)]
    pub client_login_banner: Option<String>,
    /// PEM certificate revocation list for client certificates.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// How clients authenticate; fixed at creation but for `mfa`, which the directory may turn
    /// on or off later.
    pub authentication: Authentication,
    /// The connection log.
    #[serde(default)]
    pub connection_log: ConnectionLog,
    /// Associated subnets.
    #[serde(default, rename = "target_network")]
    pub target_networks: Vec<TargetNetwork>,
    /// Who may reach which destination.
    #[serde(default, rename = "authorization_rule")]
    pub authorization_rules: Vec<AuthorizationRule>,
    /// The endpoint's route table.
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
}

fn default_transport() -> Transport {
    Transport::Udp
}
fn default_vpn_port() -> VpnPort {
    VpnPort::DEFAULT
}
fn default_session_timeout() -> SessionTimeoutHours {
    SessionTimeoutHours::DEFAULT
}

impl Endpoint {
    /// `available` once a target network is associated, `pending-associate` before.
    pub fn status(&self) -> &'static str {
        if self.target_networks.is_empty() {
            "pending-associate"
        } else {
            "available"
        }
    }

    /// The VPC the endpoint's target networks are in, if any is associated.
    pub fn vpc_id(&self) -> Option<&str> {
        self.target_networks.first().map(|t| t.vpc_id.as_str())
    }
}

/// `[endpoint.authentication]`: mutual, directory, or both (both must pass).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    /// Client certificates, verified against this root CA.
    #[serde(default)]
    pub mutual: Option<MutualAuthentication>,
    /// Username and password from a user directory.
    #[serde(default)]
    pub directory: Option<DirectoryAuthentication>,
    /// Multi-factor authentication on top of the directory.
    #[serde(default)]
    pub mfa: Option<Mfa>,
}

/// `mutual = { client_root_ca = "..." }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MutualAuthentication {
    /// PEM root CA (chain) that issued the client certificates.
    pub client_root_ca: PathBuf,
}

/// `directory = { users_file = "..." }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryAuthentication {
    /// The embedded directory: users, argon2 password hashes, groups.
    pub users_file: PathBuf,
}

/// The MFA method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mfa {
    /// RFC 6238 time-based one-time codes through OpenVPN's static challenge.
    Totp,
}

/// `[endpoint.connection_log]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLog {
    /// Whether connection attempts and resets are logged.
    #[serde(default)]
    pub enabled: bool,
    /// JSON-lines file the log goes to.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// `[[endpoint.target_network]]`: a subnet the appliance sits in.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetNetwork {
    /// `cvpn-assoc-` followed by 17 hex digits; generated by associate.
    pub association_id: AssociationId,
    /// The subnet's id, like `subnet-0123456789abcdef0`.
    pub subnet_id: String,
    /// The VPC the subnet is in.
    pub vpc_id: String,
    /// The VPC's CIDR (the local route that association adds).
    pub vpc_cidr: Cidr,
    /// The subnet's CIDR.
    pub cidr: Cidr,
    /// The availability zone (at most one association per zone).
    pub availability_zone: String,
    /// The data-plane port that sits in this subnet.
    pub port: String,
    /// The address SNAT uses toward this subnet (AWS's ENI).
    pub eni_ip: Ipv4Addr,
    /// The subnet router, next hop for destinations outside the subnet.
    pub gateway: Ipv4Addr,
    /// Security groups applied to this association; none means the default (allow all).
    #[serde(default)]
    pub security_groups: Vec<String>,
}

/// `[[endpoint.authorization_rule]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRule {
    /// The network access is granted to.
    pub destination_cidr: Cidr,
    /// The group granted access (exclusive with `authorize_all_groups`).
    #[serde(default)]
    pub access_group_id: Option<String>,
    /// Grant every user.
    #[serde(default)]
    pub authorize_all_groups: bool,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Who a rule grants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Grantee<'a> {
    /// Every user.
    AllUsers,
    /// Members of this group.
    Group(&'a str),
}

impl AuthorizationRule {
    /// Who the rule grants, or `None` when it names neither or both (a validation error).
    pub fn grantee(&self) -> Option<Grantee<'_>> {
        match (&self.access_group_id, self.authorize_all_groups) {
            (Some(g), false) => Some(Grantee::Group(g)),
            (None, true) => Some(Grantee::AllUsers),
            _ => None,
        }
    }
}

/// `[[endpoint.route]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination network.
    pub destination_cidr: Cidr,
    /// The associated subnet traffic leaves through.
    pub target_subnet: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `add-route` (by the admin) or `associate` (added by an association).
    #[serde(default)]
    pub origin: RouteOrigin,
}

/// How a route came to be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum RouteOrigin {
    /// Created by `create-client-vpn-route`.
    #[default]
    #[serde(rename = "add-route")]
    AddRoute,
    /// The VPC local route added by an association.
    #[serde(rename = "associate")]
    Associate,
}

impl RouteOrigin {
    /// The name as in the AWS API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AddRoute => "add-route",
            Self::Associate => "associate",
        }
    }
}
