//! What each management verb does to the configuration, and the response it gives.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use toml_edit::{value, Array, InlineTable, Item, Table};

use super::cli::{
    ApplySecurityGroups, Associate, Authorize, Cli, CreateEndpoint, CreateRoute, DeleteRoute,
    DescribeEndpoints, DescribeItems, DescribeTargetNetworks, Disassociate, EndpointIdArg,
    ExportConfiguration, ImportCrl, Listing, ModifyEndpoint, Output, Revoke, Verb,
};
use super::editor::{remove_at, Editor};
use super::export::{ca_for, client_configuration, identity_from_pem};
use super::filters::{json_field, Filters};
use super::paging::{self, Order, Page};
use super::persist::write_atomic;
use super::shorthand::{self, field, flag};
use super::table::{self, Column};
use super::AdminError;
use crate::config::files::{read_regular, read_regular_text, CRL_LIMIT, PKI_LIMIT};
use crate::config::pki::{check_ca, check_crl_pem, check_tls_loads, resolve};
use crate::config::schema::{Endpoint, Grantee, RouteOrigin};
use crate::config::types::{AssociationId, Cidr, EndpointId, SessionTimeoutHours, VpnPort};
use crate::config::{self, Loaded};

/// A verb's answer, ready to print in the requested format.
#[derive(Debug)]
pub struct Response {
    /// The AWS-shaped JSON.
    pub json: Value,
    /// The `--output table` rendering.
    pub table: String,
    /// The `--output text` rendering (the bare value where there is one).
    pub text: String,
}

impl Response {
    /// A response holding `json`, rendered as a table for people.
    pub fn object(json: Value) -> Self {
        let t = table::render_object(&json);
        Self {
            json,
            text: t.clone(),
            table: t,
        }
    }

    /// The rendering for `output`.
    pub fn render(&self, output: Output) -> String {
        match output {
            Output::Json => {
                let mut s = serde_json::to_string_pretty(&self.json).unwrap_or_default();
                s.push('\n');
                s
            }
            Output::Table => self.table.clone(),
            Output::Text => self.text.clone(),
        }
    }
}

/// Runs the verb `cli` names, with relative paths on its command line taken from this process's
/// working directory.
///
/// # Errors
/// Refused requests, invalid configurations and I/O failures, each saying what is wrong.
pub fn run(cli: &Cli) -> Result<Response, AdminError> {
    // The password is read from this process's standard input, which is the administrator's
    // only in the process they run.
    if matches!(cli.verb, Verb::HashPassword) {
        return hash_password();
    }
    run_in(cli, &std::env::current_dir().unwrap_or_default())
}

/// Runs the verb `cli` names for a caller whose working directory is `cwd` (hash-password
/// aside, which only `run` runs: it reads this process's standard input): relative paths on
/// its command line (certificates, keys, users files, log paths, a CRL to import, a client
/// certificate to embed) are resolved against `cwd`, never against this process's (the daemon's
/// is not the caller's). With an empty or relative `cwd`, relative paths are refused.
///
/// # Errors
/// As `run`.
pub fn run_in(cli: &Cli, cwd: &Path) -> Result<Response, AdminError> {
    let path = cli.config.as_path();
    match &cli.verb {
        Verb::Run | Verb::Reload | Verb::Top(_) => Err(AdminError::request(
            "IncorrectState",
            "`run`, `reload` and `top` concern the daemon; the sluice binary handles them itself",
        )),
        Verb::Validate => validate(path),
        // For a caller elsewhere (the daemon's admin socket), reading this process's standard
        // input would wait on the daemon's terminal, its control thread with it.
        Verb::HashPassword => Err(AdminError::request(
            "OperationNotPermitted",
            "hash-password reads the password from the standard input of the process that runs \
             it: run `sluice hash-password` itself, not through the admin socket",
        )),
        Verb::CreateClientVpnEndpoint(a) => create_endpoint(path, a, cwd),
        Verb::ModifyClientVpnEndpoint(a) => modify_endpoint(path, a, cwd),
        Verb::DeleteClientVpnEndpoint(a) => delete_endpoint(path, a),
        Verb::DescribeClientVpnEndpoints(a) => describe_endpoints(path, a, None),
        Verb::AssociateClientVpnTargetNetwork(a) => associate(path, a),
        Verb::DisassociateClientVpnTargetNetwork(a) => disassociate(path, a),
        Verb::DescribeClientVpnTargetNetworks(a) => describe_target_networks(path, a),
        Verb::ApplySecurityGroupsToClientVpnTargetNetwork(a) => apply_security_groups(path, a),
        Verb::AuthorizeClientVpnIngress(a) => authorize(path, a),
        Verb::RevokeClientVpnIngress(a) => revoke(path, a),
        Verb::DescribeClientVpnAuthorizationRules(a) => {
            describe_list(path, a, List::AuthorizationRules)
        }
        Verb::CreateClientVpnRoute(a) => create_route(path, a),
        Verb::DeleteClientVpnRoute(a) => delete_route(path, a),
        Verb::DescribeClientVpnRoutes(a) => describe_list(path, a, List::Routes),
        Verb::ImportClientVpnClientCertificateRevocationList(a) => import_crl(path, a, cwd),
        Verb::ExportClientVpnClientCertificateRevocationList(a) => export_crl(path, a),
        Verb::ExportClientVpnClientConfiguration(a) => export_configuration(path, a, cwd),
        Verb::DescribeClientVpnConnections(_)
        | Verb::TerminateClientVpnConnections(_)
        | Verb::DescribeDataPlane => Err(AdminError::request(
            "OperationNotPermitted",
            "connections exist only in the running appliance: start it with `sluice run`",
        )),
    }
}

/// `run_in` for the daemon that started with `started` and serves the file `cli` names:
/// describe-client-vpn-endpoints says, in the `Status.Message` of an endpoint the daemon does
/// not serve as the file has it, why and until when (`config::change::not_served_as_written`:
/// created since it started, served after a restart), its `Status.Code` as AWS has it. Every
/// other verb is `run_in`'s.
///
/// # Errors
/// As `run_in`.
pub fn run_served(
    cli: &Cli,
    cwd: &Path,
    started: &config::schema::Config,
) -> Result<Response, AdminError> {
    match &cli.verb {
        Verb::DescribeClientVpnEndpoints(a) => describe_endpoints(&cli.config, a, Some(started)),
        _ => run_in(cli, cwd),
    }
}

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError::request("InvalidParameterValue", message)
}

fn parse_cidr(s: &str, what: &str) -> Result<Cidr, AdminError> {
    s.parse().map_err(|e| invalid(format!("{what}: {e}")))
}

fn parse_ip(s: &str, what: &str) -> Result<std::net::Ipv4Addr, AdminError> {
    s.parse()
        .map_err(|_| invalid(format!("{what}: `{s}` is not an IPv4 address")))
}

/// A path from the command line, resolved against the caller's working directory `cwd`.
fn callers(cwd: &Path, p: &Path) -> Result<PathBuf, AdminError> {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else if cwd.is_absolute() {
        cwd.join(p)
    } else {
        return Err(invalid(format!(
            "{}: a relative path, and the caller's working directory is not known; give an \
             absolute path",
            p.display()
        )));
    };
    // Absolute already: this only tidies `.` components, and never reads this process's cwd.
    std::path::absolute(&joined).map_err(|e| invalid(format!("{}: {e}", p.display())))
}

/// A path from the command line, made absolute (against the caller's working directory `cwd`)
/// so the file does not depend on anyone's working directory.
fn absolute(cwd: &Path, p: &Path) -> Result<String, AdminError> {
    callers(cwd, p).map(|a| a.to_string_lossy().into_owned())
}

fn find<'a>(loaded: &'a Loaded, id: &str) -> Result<&'a Endpoint, AdminError> {
    loaded
        .config
        .endpoints
        .iter()
        .find(|e| e.id.as_str() == id)
        .ok_or_else(|| AdminError::endpoint_not_found(id))
}

fn hash_password() -> Result<Response, AdminError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| AdminError::Io(format!("reading the password: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(invalid("give the password on standard input"));
    }
    let hash = crate::auth::directory::hash_password(password).map_err(AdminError::Internal)?;
    let text = format!("{hash}\n");
    Ok(Response {
        json: json!({ "PasswordHash": hash }),
        table: text.clone(),
        text,
    })
}

fn validate(path: &Path) -> Result<Response, AdminError> {
    let loaded = config::load(path)?;
    let n = loaded.config.endpoints.len();
    let json = json!({ "Valid": true, "Endpoints": n });
    let text = format!(
        "{}: valid ({n} endpoint{})\n",
        path.display(),
        if n == 1 { "" } else { "s" }
    );
    Ok(Response {
        json,
        table: text.clone(),
        text,
    })
}

/// Authentication options from the AWS shorthand/JSON values.
fn authentication_table(
    values: &[String],
    mfa: Option<&str>,
    cwd: &Path,
) -> Result<Table, AdminError> {
    let mut auth = Table::new();
    for v in values {
        let parsed = shorthand::parse(v).map_err(invalid)?;
        let items = match parsed {
            Value::Array(a) => a,
            other => vec![other],
        };
        for item in items {
            match field(&item, "Type") {
                Some("certificate-authentication") => {
                    let ca = item
                        .get("MutualAuthentication")
                        .and_then(|m| field(m, "ClientRootCertificateChainArn").or_else(|| field(m, "ClientRootCertificateChain")))
                        .ok_or_else(|| invalid("certificate-authentication needs MutualAuthentication={ClientRootCertificateChainArn=PATH}"))?;
                    let mut t = InlineTable::new();
                    t.insert("client_root_ca", absolute(cwd, Path::new(ca))?.into());
                    auth.insert("mutual", value(t));
                }
                Some("directory-service-authentication") => {
                    let users = item
                        .get("ActiveDirectory")
                        .and_then(|d| field(d, "DirectoryId"))
                        .ok_or_else(|| invalid("directory-service-authentication needs ActiveDirectory={DirectoryId=USERS_FILE}"))?;
                    let mut t = InlineTable::new();
                    t.insert("users_file", absolute(cwd, Path::new(users))?.into());
                    auth.insert("directory", value(t));
                }
                Some("federated-authentication") => {
                    return Err(invalid("federated (SAML) authentication is not supported by sluice; use certificate or directory authentication"));
                }
                other => {
                    return Err(invalid(format!(
                        "unknown authentication Type {other:?}: use certificate-authentication or directory-service-authentication"
                    )))
                }
            }
        }
    }
    if let Some(m) = mfa {
        auth.insert("mfa", value(m));
    }
    Ok(auth)
}

fn connection_log_table(s: &str, cwd: &Path) -> Result<Table, AdminError> {
    let v = shorthand::parse(s).map_err(invalid)?;
    let enabled = flag(&v, "Enabled")
        .ok_or_else(|| invalid("connection log options need Enabled=true|false"))?;
    let mut t = Table::new();
    t.insert("enabled", value(enabled));
    if let Some(p) = field(&v, "LogPath").or_else(|| field(&v, "CloudwatchLogStream")) {
        t.insert("path", value(absolute(cwd, Path::new(p))?));
    }
    Ok(t)
}

fn banner(s: &str) -> Result<Option<String>, AdminError> {
    let v = shorthand::parse(s).map_err(invalid)?;
    match flag(&v, "Enabled") {
        Some(true) => field(&v, "BannerText")
            .map(|t| Some(t.to_owned()))
            .ok_or_else(|| invalid("an enabled banner needs BannerText=...")),
        Some(false) => Ok(None),
        None => Err(invalid(
            "client login banner options need Enabled=true|false",
        )),
    }
}

fn string_array(items: &[String]) -> Array {
    items.iter().map(String::as_str).collect()
}

fn check_port(p: u16) -> Result<i64, AdminError> {
    VpnPort::try_from(i64::from(p))
        .map(i64::from)
        .map_err(invalid)
}

fn check_timeout(h: u8) -> Result<i64, AdminError> {
    SessionTimeoutHours::try_from(i64::from(h))
        .map(i64::from)
        .map_err(invalid)
}

/// The DNS servers of `--dns-servers`: a plain list (`a b`, as create-client-vpn-endpoint takes
/// them), or modify-client-vpn-endpoint's structure in shorthand
/// (`CustomDnsServers=a,b,Enabled=true`) or JSON (`{"CustomDnsServers": ["a"], "Enabled": true}`).
/// `Enabled=false` deletes the servers (AWS: "Specify False to delete the existing DNS servers").
fn dns_servers(list: &[String]) -> Result<Vec<String>, AdminError> {
    let mut given: Vec<String> = Vec::new();
    let mut enabled = None;
    for item in list {
        let item = item.trim();
        if item.starts_with('{') {
            let v = shorthand::parse(item).map_err(|e| invalid(format!("dns-servers: {e}")))?;
            let Value::Object(fields) = v else {
                return Err(invalid(format!(
                    "dns-servers: `{item}` is not a JSON object"
                )));
            };
            for (key, v) in &fields {
                match (key.as_str(), v) {
                    ("CustomDnsServers", Value::Array(ips)) => {
                        for ip in ips {
                            let ip = ip.as_str().ok_or_else(|| {
                                invalid(format!("dns-servers: {ip} is not an address string"))
                            })?;
                            given.push(ip.to_owned());
                        }
                    }
                    ("Enabled", v) => enabled = Some(enabled_flag(v)?),
                    _ => return Err(invalid(format!("dns-servers: unexpected `{key}: {v}`; give CustomDnsServers (a list of addresses) and Enabled"))),
                }
            }
            continue;
        }
        for part in item.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("CustomDnsServers", ip)) => given.push(ip.trim().to_owned()),
                Some(("Enabled", b)) => {
                    enabled = Some(enabled_flag(&Value::String(b.trim().to_owned()))?);
                }
                Some((key, _)) => {
                    return Err(invalid(format!(
                        "dns-servers: unknown key `{key}`; give CustomDnsServers=ADDRESS,...,Enabled=true|false"
                    )))
                }
                None => given.push(part.to_owned()),
            }
        }
    }
    let mut out = Vec::with_capacity(given.len());
    for ip in &given {
        out.push(parse_ip(ip, "dns-servers")?.to_string());
    }
    match enabled {
        Some(false) => Ok(Vec::new()),
        Some(true) if out.is_empty() => Err(invalid(
            "dns-servers: Enabled=true needs CustomDnsServers=ADDRESS[,ADDRESS]",
        )),
        _ => Ok(out),
    }
}

/// The `Enabled` of a `--dns-servers` structure (a JSON boolean, or `true`/`false` as text).
fn enabled_flag(v: &Value) -> Result<bool, AdminError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
        _ => Err(invalid(format!(
            "dns-servers: Enabled must be true or false, not {v}"
        ))),
    }
}

fn create_endpoint(path: &Path, a: &CreateEndpoint, cwd: &Path) -> Result<Response, AdminError> {
    let mut ed = Editor::open(path)?;
    parse_cidr(&a.client_cidr_block, "client-cidr-block")?;
    // AWS's two values; validation refuses tcp with its reason (sluice serves UDP only).
    let transport = match a.transport_protocol.as_str() {
        t @ ("udp" | "tcp") => t,
        other => {
            return Err(invalid(format!(
                "transport-protocol `{other}` is not supported: sluice serves OpenVPN over UDP \
                 only (udp)"
            )))
        }
    };
    let mut used = std::collections::HashSet::new();
    for e in &ed.old().config.endpoints {
        used.insert(e.id.clone());
    }
    let id = std::iter::repeat_with(EndpointId::generate)
        .find(|i| !used.contains(i))
        .unwrap_or_else(EndpointId::generate);
    let mut t = Table::new();
    t.insert("id", value(id.as_str()));
    t.insert("description", value(&a.description));
    t.insert("client_cidr_block", value(&a.client_cidr_block));
    t.insert(
        "server_certificate",
        value(absolute(cwd, &a.server_certificate_arn)?),
    );
    t.insert("server_key", value(absolute(cwd, &a.server_key)?));
    t.insert("transport_protocol", value(transport));
    t.insert("vpn_port", value(check_port(a.vpn_port)?));
    t.insert("dns_name", value(&a.dns_name));
    t.insert(
        "dns_servers",
        value(string_array(&dns_servers(&a.dns_servers)?)),
    );
    t.insert("split_tunnel", value(a.split_tunnel && !a.no_split_tunnel));
    t.insert(
        "session_timeout_hours",
        value(check_timeout(a.session_timeout_hours)?),
    );
    if let Some(b) = &a.client_login_banner_options {
        if let Some(text) = banner(b)? {
            t.insert("client_login_banner", value(text));
        }
    }
    t.insert(
        "authentication",
        Item::Table(authentication_table(
            &a.authentication_options,
            a.mfa.as_deref(),
            cwd,
        )?),
    );
    if let Some(c) = &a.connection_log_options {
        t.insert("connection_log", Item::Table(connection_log_table(c, cwd)?));
    }
    ed.endpoints_mut()?.push(t);
    ed.commit()?;
    Ok(Response::object(json!({
        "ClientVpnEndpointId": id.as_str(),
        "Status": { "Code": "pending-associate" },
        "DnsName": a.dns_name,
    })))
}

fn modify_endpoint(path: &Path, a: &ModifyEndpoint, cwd: &Path) -> Result<Response, AdminError> {
    let mut ed = Editor::open(path)?;
    let i = ed.endpoint_index(&a.client_vpn_endpoint_id)?;
    let servers = a.dns_servers.as_deref().map(dns_servers).transpose()?;
    let log = a
        .connection_log_options
        .as_deref()
        .map(|c| connection_log_table(c, cwd))
        .transpose()?;
    let banner = a
        .client_login_banner_options
        .as_deref()
        .map(banner)
        .transpose()?;
    let port = a.vpn_port.map(check_port).transpose()?;
    let timeout = a.session_timeout_hours.map(check_timeout).transpose()?;
    let cert = a
        .server_certificate_arn
        .as_deref()
        .map(|c| absolute(cwd, c))
        .transpose()?;
    let key = a
        .server_key
        .as_deref()
        .map(|k| absolute(cwd, k))
        .transpose()?;
    let t = ed.endpoint_mut(i)?;
    if let Some(c) = cert {
        t["server_certificate"] = value(c);
    }
    if let Some(k) = key {
        t["server_key"] = value(k);
    }
    if let Some(s) = servers {
        t["dns_servers"] = value(string_array(&s));
    }
    if let Some(l) = log {
        t["connection_log"] = Item::Table(l);
    }
    match banner {
        Some(Some(text)) => t["client_login_banner"] = value(text),
        Some(None) => {
            t.remove("client_login_banner");
        }
        None => {}
    }
    if let Some(p) = port {
        t["vpn_port"] = value(p);
    }
    if let Some(h) = timeout {
        t["session_timeout_hours"] = value(h);
    }
    if let Some(d) = &a.description {
        t["description"] = value(d);
    }
    if let Some(n) = &a.dns_name {
        t["dns_name"] = value(n);
    }
    if a.split_tunnel || a.no_split_tunnel {
        t["split_tunnel"] = value(a.split_tunnel);
    }
    ed.commit()?;
    Ok(Response::object(json!({ "Return": true })))
}

fn delete_endpoint(path: &Path, a: &EndpointIdArg) -> Result<Response, AdminError> {
    let mut ed = Editor::open(path)?;
    let i = ed.endpoint_index(&a.client_vpn_endpoint_id)?;
    let n = ed.old().config.endpoints[i].target_networks.len();
    if n > 0 {
        return Err(AdminError::request(
            "IncorrectState",
            format!(
                "endpoint {} has {n} associated target network(s); disassociate them before deleting it",
                a.client_vpn_endpoint_id
            ),
        ));
    }
    remove_at(ed.endpoints_mut()?, i)?;
    ed.commit()?;
    Ok(Response::object(json!({ "Status": { "Code": "deleted" } })))
}

/// describe-client-vpn-endpoints; with `started`, the configuration the daemon serving the file
/// started with, each endpoint it does not serve as written says so (`run_served`).
fn describe_endpoints(
    path: &Path,
    a: &DescribeEndpoints,
    started: Option<&config::schema::Config>,
) -> Result<Response, AdminError> {
    let loaded = config::load(path)?;
    for id in &a.client_vpn_endpoint_ids {
        find(&loaded, id)?;
    }
    let items: Vec<Value> = loaded
        .config
        .endpoints
        .iter()
        .filter(|e| {
            a.client_vpn_endpoint_ids.is_empty()
                || a.client_vpn_endpoint_ids.iter().any(|i| i == e.id.as_str())
        })
        .map(|e| {
            let mut item = super::describe::endpoint(e);
            if let Some(why) = started.and_then(|s| config::change::not_served_as_written(s, e)) {
                item["Status"]["Message"] = Value::String(why);
            }
            item
        })
        .collect();
    let Page { items, next_token } = selected(
        items,
        "endpoints",
        &[
            ("endpoint-id", "/ClientVpnEndpointId"),
            ("transport-protocol", "/TransportProtocol"),
        ],
        &["/ClientVpnEndpointId"],
        &a.listing,
    )?;
    const COLUMNS: &[Column] = &[
        ("ClientVpnEndpointId", "/ClientVpnEndpointId"),
        ("Status", "/Status/Code"),
        ("ClientCidrBlock", "/ClientCidrBlock"),
        ("DnsName", "/DnsName"),
        ("Transport", "/TransportProtocol"),
        ("Port", "/VpnPort"),
        ("SplitTunnel", "/SplitTunnel"),
        ("VpcId", "/VpcId"),
        ("Description", "/Description"),
    ];
    // The message's column, after the status, only when an endpoint has one: the table is as
    // before otherwise.
    let mut columns = COLUMNS.to_vec();
    if items.iter().any(|i| i.pointer("/Status/Message").is_some()) {
        columns.insert(2, ("StatusMessage", "/Status/Message"));
    }
    let table = table::render("ClientVpnEndpoints", &items, &columns);
    let response = Response {
        json: json!({ "ClientVpnEndpoints": items }),
        text: table.clone(),
        table,
    };
    Ok(paging::with_next_token(response, next_token))
}

/// Lists an endpoint's items for a describe verb.
type ItemsOf = fn(&Endpoint) -> Vec<Value>;

#[derive(Clone, Copy)]
enum List {
    TargetNetworks,
    AuthorizationRules,
    Routes,
}

/// describe-client-vpn-target-networks: `describe_list`, narrowed to `--association-ids` when
/// given (each must exist on the endpoints described).
fn describe_target_networks(
    path: &Path,
    a: &DescribeTargetNetworks,
) -> Result<Response, AdminError> {
    let loaded = config::load(path)?;
    let mut items = list_items(
        &loaded,
        a.client_vpn_endpoint_id.as_deref(),
        List::TargetNetworks,
    )?;
    for id in &a.association_ids {
        if !items.iter().any(|t| t["AssociationId"] == id.as_str()) {
            return Err(AdminError::request(
                "InvalidClientVpnAssociationId.NotFound",
                format!("the association {id} does not exist"),
            ));
        }
    }
    if !a.association_ids.is_empty() {
        items.retain(|t| {
            a.association_ids
                .iter()
                .any(|id| t["AssociationId"] == id.as_str())
        });
    }
    list_response(List::TargetNetworks, items, &a.listing)
}

const TARGET_NETWORK_COLUMNS: &[Column] = &[
    ("ClientVpnEndpointId", "/ClientVpnEndpointId"),
    ("AssociationId", "/AssociationId"),
    ("TargetNetworkId", "/TargetNetworkId"),
    ("VpcId", "/VpcId"),
    ("Cidr", "/Cidr"),
    ("AvailabilityZone", "/AvailabilityZone"),
    ("Port", "/Port"),
    ("EniIp", "/EniIp"),
    ("SecurityGroups", "/SecurityGroups"),
    ("Status", "/Status/Code"),
];

/// A describe verb's answer: of `items`, those `asked`'s filters match, the page of them it
/// asks for, under the list's key, and their table.
fn list_response(list: List, items: Vec<Value>, asked: &Listing) -> Result<Response, AdminError> {
    let (key, columns, identity) = list.shape();
    let Page { items, next_token } = selected(items, key, list.filters(), identity, asked)?;
    let table = table::render(key, &items, columns);
    let response = Response {
        json: json!({ key: items }),
        text: table.clone(),
        table,
    };
    Ok(paging::with_next_token(response, next_token))
}

fn describe_list(path: &Path, a: &DescribeItems, list: List) -> Result<Response, AdminError> {
    let items = list_items(
        &config::load(path)?,
        a.client_vpn_endpoint_id.as_deref(),
        list,
    )?;
    list_response(list, items, &a.listing)
}

/// Of a configured list's `items` (the list `list`, in its configured order), those every
/// filter of `asked` matches, and the page of them it asks for. `fields` names each filter's
/// field and `identity` the fields that name an item (JSON pointers into an item).
///
/// # Errors
/// As `Filters::parse` and `paging::page`.
fn selected(
    mut items: Vec<Value>,
    list: &str,
    fields: &[(&str, &str)],
    identity: &[&str],
    asked: &Listing,
) -> Result<Page<Value>, AdminError> {
    let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    let filters = Filters::parse(&asked.filters, &names)?;
    if !filters.is_empty() {
        items.retain(|item| {
            filters.matches(|name| {
                let (_, pointer) = fields.iter().find(|(n, _)| *n == name)?;
                json_field(item, pointer)
            })
        });
    }
    paging::page(
        items,
        list,
        Order::AsListed,
        |i| paging::key_of(i, identity),
        asked,
    )
}

/// The items of `list` of the endpoint `endpoint` (each endpoint's, in turn, when `None`).
fn list_items(
    loaded: &Loaded,
    endpoint: Option<&str>,
    list: List,
) -> Result<Vec<Value>, AdminError> {
    use super::describe;
    if let Some(id) = endpoint {
        find(loaded, id)?;
    }
    let f: ItemsOf = match list {
        List::TargetNetworks => describe::target_networks,
        List::AuthorizationRules => describe::authorization_rules,
        List::Routes => describe::routes,
    };
    Ok(loaded
        .config
        .endpoints
        .iter()
        .filter(|e| endpoint.is_none_or(|id| id == e.id.as_str()))
        .flat_map(f)
        .collect())
}

impl List {
    /// The filters AWS gives the list's describe verb, and the field each matches.
    fn filters(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::TargetNetworks => &[
                ("association-id", "/AssociationId"),
                ("target-network-id", "/TargetNetworkId"),
                ("vpc-id", "/VpcId"),
            ],
            Self::AuthorizationRules => &[
                ("description", "/Description"),
                ("destination-cidr", "/DestinationCidr"),
                ("group-id", "/GroupId"),
            ],
            Self::Routes => &[
                ("destination-cidr", "/DestinationCidr"),
                ("origin", "/Origin"),
                ("target-subnet", "/TargetSubnet"),
            ],
        }
    }

    /// The list's key in the answer, its table's columns, and the members that name one of
    /// its items (for the page tokens).
    fn shape(self) -> (&'static str, &'static [Column], &'static [&'static str]) {
        match self {
            Self::TargetNetworks => (
                "ClientVpnTargetNetworks",
                TARGET_NETWORK_COLUMNS,
                &["/AssociationId"],
            ),
            Self::AuthorizationRules => (
                "AuthorizationRules",
                &[
                    ("ClientVpnEndpointId", "/ClientVpnEndpointId"),
                    ("DestinationCidr", "/DestinationCidr"),
                    ("GroupId", "/GroupId"),
                    ("AccessAll", "/AccessAll"),
                    ("Status", "/Status/Code"),
                    ("Description", "/Description"),
                ],
                &[
                    "/ClientVpnEndpointId",
                    "/DestinationCidr",
                    "/GroupId",
                    "/AccessAll",
                ],
            ),
            Self::Routes => (
                "Routes",
                &[
                    ("ClientVpnEndpointId", "/ClientVpnEndpointId"),
                    ("DestinationCidr", "/DestinationCidr"),
                    ("TargetSubnet", "/TargetSubnet"),
                    ("Type", "/Type"),
                    ("Origin", "/Origin"),
                    ("Status", "/Status/Code"),
                    ("Description", "/Description"),
                ],
                &["/ClientVpnEndpointId", "/DestinationCidr", "/TargetSubnet"],
            ),
        }
    }
}

fn associate(path: &Path, a: &Associate) -> Result<Response, AdminError> {
    let mut ed = Editor::open(path)?;
    let i = ed.endpoint_index(&a.client_vpn_endpoint_id)?;
    let vpc_cidr = parse_cidr(&a.vpc_cidr, "vpc-cidr")?;
    parse_cidr(&a.cidr, "cidr")?;
    parse_ip(&a.eni_ip, "eni-ip")?;
    parse_ip(&a.gateway, "gateway")?;
    let ep = &ed.old().config.endpoints[i];
    if ep
        .target_networks
        .iter()
        .any(|t| t.subnet_id == a.subnet_id)
    {
        return Err(AdminError::request(
            "InvalidClientVpnSubnetId.DuplicateAssociation",
            format!(
                "subnet {} is already associated with {}",
                a.subnet_id, a.client_vpn_endpoint_id
            ),
        ));
    }
    // Security groups apply to the endpoint, not to one association (the guide: "You can change
    // the security groups applied to the Client VPN endpoint after you associate the first
    // target network"), so a further association in the VPC gets those already applied there,
    // as describe-client-vpn-endpoints reports them. The first association keeps none: the
    // VPC's default security group, which sluice models as allowing all.
    let mut groups: Vec<&str> = Vec::new();
    for g in ep
        .target_networks
        .iter()
        .filter(|t| t.vpc_id == a.vpc_id)
        .flat_map(|t| t.security_groups.iter())
    {
        if !groups.contains(&g.as_str()) {
            groups.push(g);
        }
    }
    let assoc = AssociationId::generate();
    let mut t = Table::new();
    t.insert("association_id", value(assoc.as_str()));
    t.insert("subnet_id", value(&a.subnet_id));
    t.insert("vpc_id", value(&a.vpc_id));
    t.insert("vpc_cidr", value(vpc_cidr.to_string()));
    t.insert("cidr", value(&a.cidr));
    t.insert("availability_zone", value(&a.availability_zone));
    t.insert("port", value(&a.port));
    t.insert("eni_ip", value(&a.eni_ip));
    t.insert("gateway", value(&a.gateway));
    if !groups.is_empty() {
        t.insert(
            "security_groups",
            value(groups.into_iter().collect::<Array>()),
        );
    }
    let mut r = Table::new();
    r.insert("destination_cidr", value(vpc_cidr.to_string()));
    r.insert("target_subnet", value(&a.subnet_id));
    r.insert("description", value("Default Route"));
    r.insert("origin", value(RouteOrigin::Associate.as_str()));
    ed.endpoint_array_mut(i, "target_network")?.push(t);
    ed.endpoint_array_mut(i, "route")?.push(r);
    ed.commit()?;
    Ok(Response::object(
        json!({ "AssociationId": assoc.as_str(), "Status": { "Code": "associated" } }),
    ))
}

fn disassociate(path: &Path, a: &Disassociate) -> Result<Response, AdminError> {
    let mut ed = Editor::open(path)?;
    let i = ed.endpoint_index(&a.client_vpn_endpoint_id)?;
    let ep = &ed.old().config.endpoints[i];
    let t = ep
        .target_networks
        .iter()
        .position(|t| t.association_id.as_str() == a.association_id)
        .ok_or_else(|| {
            AdminError::request(
                "InvalidClientVpnAssociationId.NotFound",
                format!(
                    "association {} does not exist on {}",
                    a.association_id, a.client_vpn_endpoint_id
                ),
            )
        })?;
    // AWS ("Disassociate a target network from an AWS Client VPN endpoint"): the routes
    // added by hand through the target network go with it, as does the route its
    // association created. Routes through another associated subnet stay; authorization rules
    // name destinations, not subnets, and stay too.
    let subnet = &ep.target_networks[t].subnet_id;
    let through: Vec<usize> = ep
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| &r.target_subnet == subnet)
        .map(|(k, _)| k)
        .collect();
    let routes = ed.endpoint_array_mut(i, "route")?;
    for k in through.into_iter().rev() {
        remove_at(routes, k)?;
    }
    remove_at(ed.endpoint_array_mut(i, "target_network")?, t)?;
    ed.commit()?;
    Ok(Response::object(
        json!({ "AssociationId": a.association_id, "Status": { "Code": "disassociated" } }),
    ))
}

fn apply_security_groups(path: &Path, a: &ApplySecurityGroups) -> Result<Response, AdminError> {
    let mut ed = Editor::open(path)?;
    let i = ed.endpoint_index(&a.client_vpn_endpoint_id)?;
    let targets: Vec<usize> = ed.old().config.endpoints[i]
        .target_networks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.vpc_id == a.vpc_id)
        .map(|(k, _)| k)
        .collect();
    if targets.is_empty() {
        return Err(invalid(format!(
            "endpoint {} has no target network in {}",
            a.client_vpn_endpoint_id, a.vpc_id
        )));
    }
    let tns = ed.endpoint_array_mut(i, "target_network")?;
    for k in targets {
        if let Some(t) = tns.get_mut(k) {
            t["security_groups"] = value(string_array(&a.security_group_ids));
        }
    }
    ed.commit()?;
    Ok(Response::object(
        json!({ "SecurityGroupIds": a.security_group_ids }),
    ))
}

fn grantee_matches(g: Option<Grantee<'_>>, group: Option<&str>) -> bool {
    match (g, group) {
        (Some(Grantee::AllUsers), None) => true,
        (Some(Grantee::Group(a)), Some(b)) => a == b,
        _ => false,
    }
}

fn authorize(path: &Path, a: &Authorize) -> Result<Response, AdminError> {
    let mut ed = Editor::open(path)?;
    let i = ed.endpoint_index(&a.client_vpn_endpoint_id)?;
    let dst = parse_cidr(&a.target_network_cidr, "target-network-cidr")?;
    let group = if a.authorize_all_groups {
        None
    } else {
        a.access_group_id.as_deref()
    };
    let ep = &ed.old().config.endpoints[i];
    if ep
        .authorization_rules
        .iter()
        .any(|r| r.destination_cidr == dst && grantee_matches(r.grantee(), group))
    {
        return Err(AdminError::request(
            "InvalidClientVpnDuplicateAuthorizationRule",
            format!("an authorization rule for {dst} and this group already exists"),
        ));
    }
    let mut t = Table::new();
    t.insert("destination_cidr", value(dst.to_string()));
    match group {
        Some(g) => t.insert("access_group_id", value(g)),
        None => t.insert("authorize_all_groups", value(true)),
    };
    t.insert("description", value(&a.description));
    ed.endpoint_array_mut(i, "authorization_rule")?.push(t);
    ed.commit()?;
    Ok(Response::object(json!({ "Status": { "Code": "active" } })))
}

fn revoke(path: &Path, a: &Revoke) -> Result<Response, AdminError> {
    let mut ed = Editor::open(path)?;
    let i = ed.endpoint_index(&a.client_vpn_endpoint_id)?;
    let dst = parse_cidr(&a.target_network_cidr, "target-network-cidr")?;
    let group = if a.revoke_all_groups {
        None
    } else {
        a.access_group_id.as_deref()
    };
    let k = ed.old().config.endpoints[i]
        .authorization_rules
        .iter()
        .position(|r| r.destination_cidr == dst && grantee_matches(r.grantee(), group))
        .ok_or_else(|| {
            AdminError::request(
                "InvalidClientVpnEndpointAuthorizationRuleNotFound",
                format!("no authorization rule for {dst} and this group"),
            )
        })?;
    remove_at(ed.endpoint_array_mut(i, "authorization_rule")?, k)?;
    ed.commit()?;
    Ok(Response::object(
        json!({ "Status": { "Code": "revoking" } }),
    ))
}

fn create_route(path: &Path, a: &CreateRoute) -> Result<Response, AdminError> {
    let mut ed = Editor::open(path)?;
    let i = ed.endpoint_index(&a.client_vpn_endpoint_id)?;
    let dst = parse_cidr(&a.destination_cidr_block, "destination-cidr-block")?;
    let ep = &ed.old().config.endpoints[i];
    if !ep
        .target_networks
        .iter()
        .any(|t| t.subnet_id == a.target_vpc_subnet_id)
    {
        return Err(AdminError::request(
            "InvalidClientVpnSubnetId.NotFound",
            format!(
                "subnet {} is not associated with {}",
                a.target_vpc_subnet_id, a.client_vpn_endpoint_id
            ),
        ));
    }
    if ep
        .routes
        .iter()
        .any(|r| r.destination_cidr == dst && r.target_subnet == a.target_vpc_subnet_id)
    {
        return Err(AdminError::request(
            "InvalidClientVpnDuplicateRoute",
            format!(
                "a route to {dst} through {} already exists",
                a.target_vpc_subnet_id
            ),
        ));
    }
    let mut t = Table::new();
    t.insert("destination_cidr", value(dst.to_string()));
    t.insert("target_subnet", value(&a.target_vpc_subnet_id));
    t.insert("description", value(&a.description));
    ed.endpoint_array_mut(i, "route")?.push(t);
    ed.commit()?;
    Ok(Response::object(
        json!({ "Status": { "Code": "creating" } }),
    ))
}

fn delete_route(path: &Path, a: &DeleteRoute) -> Result<Response, AdminError> {
    let mut ed = Editor::open(path)?;
    let i = ed.endpoint_index(&a.client_vpn_endpoint_id)?;
    let dst = parse_cidr(&a.destination_cidr_block, "destination-cidr-block")?;
    let ep = &ed.old().config.endpoints[i];
    let matches: Vec<usize> = ep
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.destination_cidr == dst
                && a.target_vpc_subnet_id
                    .as_deref()
                    .is_none_or(|s| s == r.target_subnet)
        })
        .map(|(k, _)| k)
        .collect();
    let k = match matches.as_slice() {
        [] => {
            return Err(AdminError::request(
                "InvalidClientVpnRouteNotFound",
                format!("no route to {dst} on {}", a.client_vpn_endpoint_id),
            ))
        }
        [k] => *k,
        _ => {
            return Err(invalid(format!(
                "several routes go to {dst}; name one with --target-vpc-subnet-id"
            )))
        }
    };
    if ep.routes[k].origin == RouteOrigin::Associate {
        return Err(AdminError::request(
            "InvalidParameterValue",
            format!(
                "the route to {dst} was added when subnet {} was associated; disassociate the subnet to remove it",
                ep.routes[k].target_subnet
            ),
        ));
    }
    remove_at(ed.endpoint_array_mut(i, "route")?, k)?;
    ed.commit()?;
    Ok(Response::object(
        json!({ "Status": { "Code": "deleting" } }),
    ))
}

fn import_crl(path: &Path, a: &ImportCrl, cwd: &Path) -> Result<Response, AdminError> {
    let mut ed = Editor::open(path)?;
    let i = ed.endpoint_index(&a.client_vpn_endpoint_id)?;
    let arg = a.certificate_revocation_list.as_str();
    let pem = if arg.contains("-----BEGIN") {
        arg.as_bytes().to_vec()
    } else {
        // The AWS CLI's `file://` and `fileb://`, and `file:` as the guide writes it
        // ("--certificate-revocation-list file:path_to_CRL_file").
        let p = ["fileb://", "file://", "file:"]
            .iter()
            .find_map(|prefix| arg.strip_prefix(prefix))
            .unwrap_or(arg);
        let file = callers(cwd, Path::new(p))?;
        read_regular(&file, CRL_LIMIT)
            .map_err(|e| invalid(format!("cannot read CRL {}: {e}", file.display())))?
    };
    let base = ed.base_dir();
    let ep = &ed.old().config.endpoints[i];
    // Refused before the file is written, as validation would refuse it after.
    let Some(mutual) = &ep.authentication.mutual else {
        return Err(AdminError::request(
            "OperationNotPermitted",
            format!(
                "endpoint {} authenticates no client certificate (no mutual authentication): a \
                 certificate revocation list would revoke nothing",
                a.client_vpn_endpoint_id
            ),
        ));
    };
    let subjects = check_ca(&resolve(&base, &mutual.client_root_ca)).map_err(invalid)?;
    check_crl_pem(&pem, Path::new("the imported CRL"), &subjects).map_err(invalid)?;
    // Before it replaces the CRL in force: one the TLS layer refuses would be found only by
    // the commit, after the file was written.
    check_tls_loads(ep, &base, Some(&pem)).map_err(invalid)?;
    let state = resolve(&base, &ed.old().config.appliance.state_dir);
    let dir = state.join(ep.id.as_str());
    std::fs::create_dir_all(&dir)
        .map_err(|e| AdminError::Io(format!("creating {}: {e}", dir.display())))?;
    let target: PathBuf = dir.join("crl.pem");
    write_atomic(&target, &pem)
        .map_err(|e| AdminError::Io(format!("writing {}: {e}", target.display())))?;
    ed.endpoint_mut(i)?["crl"] = value(target.to_string_lossy().as_ref());
    ed.commit()?;
    Ok(Response::object(json!({ "Return": true })))
}

fn export_crl(path: &Path, a: &EndpointIdArg) -> Result<Response, AdminError> {
    let loaded = config::load(path)?;
    let ep = find(&loaded, &a.client_vpn_endpoint_id)?;
    let (crl, status) = match &ep.crl {
        Some(p) => {
            let p = resolve(&loaded.base_dir(), p);
            let text = read_regular_text(&p, CRL_LIMIT)
                .map_err(|e| AdminError::Io(format!("reading {}: {e}", p.display())))?;
            (Some(text), "active")
        }
        None => (None, "pending"),
    };
    let text = crl.clone().unwrap_or_default();
    Ok(Response {
        json: json!({ "CertificateRevocationList": crl, "Status": { "Code": status } }),
        table: format!("Status: {status}\n{text}"),
        text,
    })
}

fn export_configuration(
    path: &Path,
    a: &ExportConfiguration,
    cwd: &Path,
) -> Result<Response, AdminError> {
    let loaded = config::load(path)?;
    let ep = find(&loaded, &a.client_vpn_endpoint_id)?;
    let ca = ca_for(ep, &loaded.base_dir())?;
    let identity = match (&a.client_certificate, &a.client_key) {
        (Some(c), Some(k)) => {
            let (c, k) = (callers(cwd, c)?, callers(cwd, k)?);
            let certificate = read_regular_text(&c, PKI_LIMIT)
                .map_err(|e| invalid(format!("cannot read {}: {e}", c.display())))?;
            let key = read_regular_text(&k, PKI_LIMIT)
                .map_err(|e| invalid(format!("cannot read {}: {e}", k.display())))?;
            Some(identity_from_pem(&certificate, &key).map_err(invalid)?)
        }
        _ => None,
    };
    let text = client_configuration(ep, &ca, identity.as_ref());
    Ok(Response {
        json: json!({ "ClientConfiguration": text }),
        table: text.clone(),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found reading the daemon's request handling: hash-password sent to the admin socket
    /// (`{"args": ["hash-password"]}`) read the daemon's standard input, so a daemon started in
    /// a terminal held its control thread until someone typed a line there. For another
    /// caller it is refused at once, without reading anything.
    #[test]
    fn hash_password_for_another_caller_is_refused_without_reading_stdin() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["sluice", "hash-password", "--config", "/nonexistent"])
            .expect("parses");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run_in(&cli, Path::new("/")).map(|r| r.json));
        });
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("answered at once, not waiting on standard input")
            .expect_err("refused");
        assert!(
            e.to_string().contains("OperationNotPermitted")
                && e.to_string().contains("not through the admin socket"),
            "{e}"
        );
    }

    #[test]
    fn command_line_paths_are_the_callers() {
        let cwd = Path::new("/home/alice/pki");
        assert_eq!(
            absolute(cwd, Path::new("server.crt")).expect("relative"),
            "/home/alice/pki/server.crt"
        );
        assert_eq!(
            absolute(cwd, Path::new("./users/list.toml")).expect("dot"),
            "/home/alice/pki/users/list.toml"
        );
        assert_eq!(
            absolute(cwd, Path::new("/etc/sluice/ca.crt")).expect("absolute"),
            "/etc/sluice/ca.crt"
        );
        // Without the caller's directory a relative path is refused, never taken from this
        // process's own working directory.
        for unknown in [Path::new(""), Path::new("relative/dir")] {
            let e = absolute(unknown, Path::new("server.crt")).expect_err("refused");
            assert!(e.to_string().contains("give an absolute path"), "{e}");
            assert_eq!(
                absolute(unknown, Path::new("/etc/sluice/ca.crt")).expect("absolute"),
                "/etc/sluice/ca.crt"
            );
        }
        let table = connection_log_table("Enabled=true,LogPath=logs/ep.log", cwd).expect("log");
        assert_eq!(table["path"].as_str(), Some("/home/alice/pki/logs/ep.log"));
        let auth = authentication_table(
            &[
                "Type=directory-service-authentication,ActiveDirectory={DirectoryId=users.toml}"
                    .to_owned(),
            ],
            None,
            cwd,
        )
        .expect("directory");
        assert_eq!(
            auth["directory"]["users_file"].as_str(),
            Some("/home/alice/pki/users.toml")
        );
    }
}
