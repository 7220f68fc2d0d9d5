//! The sluice benchmark harness: one entry point for every figure, measured in one run so ratios
//! hold on a noisy machine.
//!
//! `cargo run -p sluice-bench --release -- all [--quick] [--json PATH]`
//!
//! Suites: `ceiling` (ring's raw AEAD per core), `engine` (the pipeline per core on in-memory
//! ports, both directions, by size, sessions and flows, as a ratio to the ceiling; UDP inner
//! packets, or with `--proto tcp` the segments of established TCP connections). Progress goes to stderr, a table to stdout, and
//! the records to a JSON file. `--quick` runs every suite briefly to prove the harness works; it
//! asserts only that the figures are sane and non-zero, never a speed.

// The harness is a shell: it reads the clock to measure.
#![allow(clippy::disallowed_methods)]

mod ceiling;
mod control;
mod dpdk;
mod engine;
mod handshake;
mod lab;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

struct Options {
    suites: Vec<String>,
    quick: bool,
    /// The dpdk suite's EAL on reserved 2 MiB pages (`--in-memory`) instead of `--no-huge`.
    hugepages: bool,
    /// The dpdk suite's mbuf pool (`--mbufs`; `dpdk::RIG_MBUFS` when not given).
    mbufs: u32,
    json: PathBuf,
    seconds: Option<f64>,
    sizes: Option<Vec<usize>>,
    shapes: Option<Vec<engine::Shape>>,
    chart: Option<PathBuf>,
    directions: engine::Directions,
    /// The inner packets' transport in the engine and dpdk suites.
    proto: engine::Proto,
}

fn parse_args() -> Result<Options> {
    parse_args_from(std::env::args().skip(1))
}

/// The options in `args` (the command line without the program's name).
fn parse_args_from(mut args: impl Iterator<Item = String>) -> Result<Options> {
    let mut suites = Vec::new();
    let mut quick = false;
    let mut hugepages = false;
    let mut mbufs = dpdk::RIG_MBUFS;
    let mut json = PathBuf::from("target/bench-results.json");
    let mut chart = None;
    let mut seconds = None;
    let mut sizes = None;
    let mut shapes = None;
    let mut directions = engine::Directions::BOTH;
    let mut proto = engine::Proto::Udp;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--hugepages" => hugepages = true,
            "--mbufs" => {
                let n: u32 = args
                    .next()
                    .context("--mbufs needs a count")?
                    .parse()
                    .context("--mbufs")?;
                if !(dpdk::RIG_MBUFS_MIN..=dpdk::RIG_MBUFS_MAX).contains(&n) {
                    bail!(
                        "--mbufs must be {} (two chunks of frames) to {} (within the EAL's memory)",
                        dpdk::RIG_MBUFS_MIN,
                        dpdk::RIG_MBUFS_MAX
                    );
                }
                mbufs = n;
            }
            "--json" => json = args.next().context("--json needs a path")?.into(),
            "--seconds" => {
                seconds = Some(
                    args.next()
                        .context("--seconds needs a number")?
                        .parse()
                        .context("--seconds")?,
                )
            }
            "--shapes" => {
                let list = args.next().context(
                    "--shapes needs a list like 1000x1000,100000x1000000 (sessions x flows)",
                )?;
                let parsed: Result<Vec<engine::Shape>, anyhow::Error> = list
                    .split(',')
                    .map(|p| {
                        let (s, f) = p.split_once('x').context("a shape is SESSIONSxFLOWS")?;
                        Ok(engine::Shape {
                            sessions: s.parse()?,
                            flows: f.parse()?,
                        })
                    })
                    .collect();
                shapes = Some(parsed?);
            }
            "--direction" => {
                directions = match args.next().as_deref() {
                    Some("client-net") => engine::Directions {
                        to_net: true,
                        to_client: false,
                    },
                    Some("net-client") => engine::Directions {
                        to_net: false,
                        to_client: true,
                    },
                    Some("both") => engine::Directions::BOTH,
                    _ => bail!("--direction needs client-net, net-client or both"),
                }
            }
            "--proto" => {
                proto = match args.next().as_deref() {
                    Some("udp") => engine::Proto::Udp,
                    Some("tcp") => engine::Proto::Tcp,
                    _ => bail!("--proto needs udp or tcp"),
                }
            }
            "--chart" => {
                chart = Some(PathBuf::from(args.next().context("--chart needs a path")?));
            }
            "--sizes" => {
                let list = args.next().context("--sizes needs a list like 64,1400")?;
                sizes = Some(
                    list.split(',')
                        .map(str::parse)
                        .collect::<Result<Vec<usize>, _>>()
                        .context("--sizes")?,
                );
            }
            "all" => suites.extend([
                "ceiling".to_owned(),
                "engine".to_owned(),
                "dpdk".to_owned(),
                "control".to_owned(),
                "lab".to_owned(),
            ]),
            "ceiling" | "engine" | "dpdk" | "control" | "lab" => suites.push(a),
            "-h" | "--help" => {
                println!("usage: sluice-bench [all|ceiling|engine|dpdk|control|lab]... [--quick] [--seconds S] [--sizes 64,512,1400] [--shapes SxF,...] [--direction client-net|net-client|both] [--proto udp|tcp] [--hugepages] [--mbufs N] [--json PATH] [--chart SVG]");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    if suites.is_empty() {
        suites.push("ceiling".to_owned());
    }
    Ok(Options {
        chart,
        suites,
        quick,
        hugepages,
        mbufs,
        json,
        seconds,
        sizes,
        shapes,
        directions,
        proto,
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let opts = parse_args()?;
    let sizes = opts.sizes.clone().unwrap_or_else(|| vec![64, 512, 1400]);
    let per_case = match opts.seconds {
        Some(s) => Duration::from_secs_f64(s),
        None if opts.quick => Duration::from_millis(100),
        None => Duration::from_secs(2),
    };
    let mut records = Vec::new();
    let shapes: Vec<engine::Shape> = if let Some(s) = opts.shapes.clone() {
        s
    } else if opts.quick {
        vec![engine::Shape {
            sessions: 1000,
            flows: 1000,
        }]
    } else {
        vec![
            engine::Shape {
                sessions: 1000,
                flows: 1000,
            },
            engine::Shape {
                sessions: 100_000,
                flows: 1000,
            },
            engine::Shape {
                sessions: 1000,
                flows: 1_000_000,
            },
            engine::Shape {
                sessions: 100_000,
                flows: 1_000_000,
            },
        ]
    };
    let mut suites = opts.suites.clone();
    // Ratios need the ceiling of the same run.
    if suites.iter().any(|s| s == "engine" || s == "dpdk") && !suites.iter().any(|s| s == "ceiling")
    {
        suites.insert(0, "ceiling".to_owned());
    }
    for suite in &suites {
        eprintln!("== {suite}");
        match suite.as_str() {
            "ceiling" => records.extend(ceiling::run(&sizes, per_case)),
            "engine" => {
                let out = engine::run(
                    "engine",
                    &sizes,
                    &shapes,
                    per_case,
                    opts.directions,
                    opts.proto,
                    engine::Order::Interleaved,
                    &mut records,
                    engine::memory_ports,
                )
                .map_err(anyhow::Error::msg)?;
                records.extend(out);
            }
            "control" => {
                records.extend(control::run(if opts.quick { 1000 } else { 10_000 })?);
                let (n, reconnect) = if opts.quick {
                    (50, 100)
                } else {
                    (1000, 10_000)
                };
                records.extend(handshake::run(n, reconnect)?);
                let (answers, rate, missing) =
                    engine::spoofed_resets(per_case).map_err(anyhow::Error::msg)?;
                eprintln!(
                    "  control spoofed first resets answered by one core: {:.3} M/s ({missing} not answered)",
                    rate / 1e6
                );
                if missing != 0 {
                    bail!(
                        "{missing} spoofed resets were punted, dropped or lost instead of answered"
                    );
                }
                records.push(report::Record {
                    suite: "control".into(),
                    case: "spoofed first resets answered (1 core)".into(),
                    size: 0,
                    pps: rate,
                    gbps: 0.0,
                    ratio_to_ceiling: None,
                    ops: answers,
                    seconds: per_case.as_secs_f64(),
                    drops: missing,
                    proto: None,
                });
            }
            "lab" => records.extend(lab::run(8, 1400, if opts.quick { 2.0 } else { 10.0 })?),
            "dpdk" => {
                let rig = dpdk::Rig::start(opts.hugepages, opts.mbufs)?;
                let out = engine::run(
                    "dpdk",
                    &sizes,
                    &shapes,
                    per_case,
                    opts.directions,
                    opts.proto,
                    engine::Order::Sequential,
                    &mut records,
                    || rig.ports(),
                )
                .map_err(anyhow::Error::msg)?;
                records.extend(out);
            }
            _ => {}
        }
    }
    report::print_table(&records);
    for r in &records {
        if !(r.pps.is_finite() && r.pps > 0.0 && r.ops > 0) {
            bail!(
                "insane result for {} {} at {} B: {} pps",
                r.suite,
                r.case,
                r.size,
                r.pps
            );
        }
    }
    if let Some(dir) = opts.json.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let json = serde_json::json!({
        "machine": machine(),
        "quick": opts.quick,
        "dpdk": rig_settings(&opts),
        "records": records,
    });
    std::fs::write(&opts.json, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", opts.json.display()))?;
    eprintln!("results written to {}", opts.json.display());
    if let Some(chart) = &opts.chart {
        report::write_svg(&records, 1400, chart)
            .with_context(|| format!("writing {}", chart.display()))?;
        eprintln!("chart written to {}", chart.display());
    }
    Ok(())
}

/// How the dpdk suite's rig was set up, for the record (null when the suite did not run): its
/// rates depend on both (bench/RESULTS.md).
fn rig_settings(opts: &Options) -> serde_json::Value {
    if opts.suites.iter().any(|s| s == "dpdk") {
        serde_json::json!({ "hugepages": opts.hugepages, "mbufs": opts.mbufs })
    } else {
        serde_json::Value::Null
    }
}

/// The CPU model and core count, for the record.
fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
    serde_json::json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options> {
        parse_args_from(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn the_dpdk_suites_pool_is_the_appliances_unless_told() {
        assert_eq!(parse(&["dpdk"]).unwrap().mbufs, dpdk::RIG_MBUFS);
        assert_eq!(parse(&["dpdk", "--mbufs", "4095"]).unwrap().mbufs, 4095);
        for bad in ["100", "0", "99999999", "many", "-1"] {
            let e = parse(&["dpdk", "--mbufs", bad])
                .err()
                .map(|e| format!("{e:#}"));
            assert!(
                e.as_deref().is_some_and(|e| e.contains("--mbufs")),
                "{bad}: {e:?}"
            );
        }
        assert!(parse(&["dpdk", "--mbufs"]).is_err());
    }

    #[test]
    fn a_runs_json_says_how_its_dpdk_rig_was_set_up() {
        let rig = rig_settings(&parse(&["dpdk", "--hugepages", "--mbufs", "4095"]).unwrap());
        assert_eq!(rig, serde_json::json!({ "hugepages": true, "mbufs": 4095 }));
        let rig = rig_settings(&parse(&["all"]).unwrap());
        assert_eq!(
            rig,
            serde_json::json!({ "hugepages": false, "mbufs": dpdk::RIG_MBUFS })
        );
        assert!(rig_settings(&parse(&["engine"]).unwrap()).is_null());
    }
}
