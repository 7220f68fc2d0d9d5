//! Results: one record per measurement, printed as a table and written as JSON.

use serde::Serialize;

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Record {
    /// The suite (`ceiling`, `engine`, ...).
    pub(crate) suite: String,
    /// What was measured, e.g. `aes-256-gcm open`.
    pub(crate) case: String,
    /// Inner packet (plaintext) size in bytes.
    pub(crate) size: usize,
    /// Packets (or operations) per second on one core.
    pub(crate) pps: f64,
    /// Plaintext gigabits per second on one core.
    pub(crate) gbps: f64,
    /// The ratio to the ceiling measured in the same run, where one applies.
    pub(crate) ratio_to_ceiling: Option<f64>,
    /// Operations performed.
    pub(crate) ops: u64,
    /// Seconds measured.
    pub(crate) seconds: f64,
    /// Packets the pipeline dropped during the case (must be 0: the traffic is all valid).
    pub(crate) drops: u64,
}

/// Prints `records` as an aligned table.
pub(crate) fn print_table(records: &[Record]) {
    println!(
        "{:<10} {:<40} {:>6} {:>12} {:>9} {:>8}",
        "suite", "case", "bytes", "Mpps", "Gbit/s", "ratio"
    );
    for r in records.iter().filter(|r| r.suite != "control") {
        let ratio = r
            .ratio_to_ceiling
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
        println!(
            "{:<10} {:<40} {:>6} {:>12.3} {:>9.2} {:>8}",
            r.suite,
            r.case,
            r.size,
            r.pps / 1e6,
            r.gbps,
            ratio
        );
    }
    let control: Vec<&Record> = records.iter().filter(|r| r.suite == "control").collect();
    if !control.is_empty() {
        println!(
            "\n{:<10} {:<40} {:>12} {:>12}",
            "suite", "case", "per second", "seconds"
        );
        for r in control {
            println!(
                "{:<10} {:<40} {:>12.1} {:>12.4}",
                r.suite, r.case, r.pps, r.seconds
            );
        }
    }
}
