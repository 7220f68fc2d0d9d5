//! The sluice benchmark harness: one entry point for every figure, measured in one run so ratios
//! hold on a noisy machine.
//!
//! `cargo run -p sluice-bench --release -- all [--quick] [--json PATH]`
//!
//! Suites: `ceiling` (ring's raw AEAD per core). Progress goes to stderr, a table to stdout, and
//! the records to a JSON file. `--quick` runs every suite briefly to prove the harness works; it
//! asserts only that the figures are sane and non-zero, never a speed.

// The harness is a shell: it reads the clock to measure.
#![allow(clippy::disallowed_methods)]

mod ceiling;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

struct Options {
    suites: Vec<String>,
    quick: bool,
    json: PathBuf,
}

fn parse_args() -> Result<Options> {
    let mut suites = Vec::new();
    let mut quick = false;
    let mut json = PathBuf::from("target/bench-results.json");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--json" => json = args.next().context("--json needs a path")?.into(),
            "all" => suites.push("ceiling".to_owned()),
            "ceiling" => suites.push(a),
            "-h" | "--help" => {
                println!("usage: sluice-bench [all|ceiling]... [--quick] [--json PATH]");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    if suites.is_empty() {
        suites.push("ceiling".to_owned());
    }
    Ok(Options {
        suites,
        quick,
        json,
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
    let sizes = [64usize, 512, 1400];
    let per_case = if opts.quick {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(2)
    };
    let mut records = Vec::new();
    for suite in &opts.suites {
        eprintln!("== {suite}");
        if suite.as_str() == "ceiling" {
            records.extend(ceiling::run(&sizes, per_case));
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
        "records": records,
    });
    std::fs::write(&opts.json, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", opts.json.display()))?;
    eprintln!("results written to {}", opts.json.display());
    Ok(())
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
