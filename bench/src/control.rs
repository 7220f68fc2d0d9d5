//! Control-plane figures: compiling a configuration with 10k routes and 10k authorization rules
//! into a rule table, and pushing it to a core in the middle of a packet stream (packets lost
//! during the push must be 0; the core swaps tables between bursts).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::report::Record;

/// The lab's endpoint (the engine suite's addresses) plus `n` routes and `n` rules.
fn config_text(n: usize) -> String {
    let mut t = String::from(
        r#"
[limits]
authorization_rules_per_endpoint = 100000
routes_per_target_network = 100000

[[dataplane.port]]
name = "outside"
device = "net_null0"
ip = "192.168.50.1/24"

[[dataplane.port]]
name = "inside"
device = "net_null1"
ip = "172.31.1.5/24"
gateway = "172.31.1.1"

[[endpoint]]
id = "cvpn-endpoint-0123456789abcdef0"
client_cidr_block = "10.64.0.0/12"
server_certificate = "s.crt"
server_key = "s.key"
dns_name = "vpn.example.internal"
authentication = { mutual = { client_root_ca = "ca.crt" } }

[[endpoint.target_network]]
association_id = "cvpn-assoc-0123456789abcdef1"
subnet_id = "subnet-1"
vpc_id = "vpc-1"
vpc_cidr = "172.31.0.0/16"
cidr = "172.31.1.0/24"
availability_zone = "lab-1a"
port = "inside"
eni_ip = "172.31.1.5"
gateway = "172.31.1.1"

[[endpoint.authorization_rule]]
destination_cidr = "172.31.0.0/16"
authorize_all_groups = true

[[endpoint.route]]
destination_cidr = "172.31.0.0/16"
target_subnet = "subnet-1"
origin = "associate"
"#,
    );
    for i in 0..n {
        // Distinct /24s in 100.64.0.0/10, beside the lab's traffic.
        let (a, b) = (64 + (i >> 8) % 64, i & 0xff);
        let _ = write!(
            t,
            "\n[[endpoint.route]]\ndestination_cidr = \"100.{a}.{b}.0/24\"\ntarget_subnet = \"subnet-1\"\n\n[[endpoint.authorization_rule]]\ndestination_cidr = \"100.{a}.{b}.0/24\"\naccess_group_id = \"group-{}\"\n",
            i % 100
        );
    }
    t
}

/// Compiles and pushes a 10k/10k table (`n` entries each).
pub(crate) fn run(n: usize) -> Result<Vec<Record>> {
    let text = config_text(n);
    let config = sluice_control::config::parse(Path::new("bench.toml"), &text)
        .context("the benchmark configuration")?;
    let start = Instant::now();
    let compiled = sluice_control::compile::compile(&config, 2).context("compile")?;
    let compile_secs = start.elapsed().as_secs_f64();
    eprintln!(
        "  control compile {n} routes + {n} rules: {:.1} ms",
        compile_secs * 1e3
    );
    let (frames, lost, drops, polls) = crate::engine::push_under_load(Arc::new(compiled.table), 9);
    let Some(polls) = polls else {
        bail!(
            "the rule push: the core never returned its old table (the new one was not swapped in)"
        );
    };
    eprintln!(
        "  control push to a core under load: {lost} packets lost, {drops} dropped of {frames}; the core swapped within {polls} poll(s)"
    );
    if lost != 0 || drops != 0 {
        bail!("the rule push lost {lost} and dropped {drops} packets (must be 0)");
    }
    Ok(vec![Record {
        suite: "control".into(),
        case: format!("compile {n} routes + {n} rules"),
        size: 0,
        pps: 1.0 / compile_secs,
        gbps: 0.0,
        ratio_to_ceiling: None,
        ops: 1,
        seconds: compile_secs,
        drops: drops + lost,
        proto: None,
    }])
}
