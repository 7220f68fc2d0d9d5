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
    /// The inner packets' transport (`udp`, `tcp`), where the suite chooses it (`engine`,
    /// `dpdk`: `--proto`); left out of the JSON for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) proto: Option<&'static str>,
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

/// Writes an SVG bar chart of client→network Gbit/s at `size` bytes on one core: the AEAD
/// ceiling, the engine on in-memory and DPDK ports, and, from the lab, sluice and OpenVPN
/// end to end. Bars that the run did not measure are left out.
pub(crate) fn write_svg(
    records: &[Record],
    size: usize,
    path: &std::path::Path,
) -> std::io::Result<()> {
    let pick = |suite: &str, case_start: &str| {
        records
            .iter()
            .find(|r| r.suite == suite && r.size == size && r.case.starts_with(case_start))
            .map(|r| r.gbps)
    };
    let bars: Vec<(String, f64, &str)> = [
        (
            "AES-256-GCM open (ceiling)",
            pick("ceiling", &crate::ceiling::yardstick(true)),
            "#888888",
        ),
        (
            "sluice engine, in-memory ports",
            pick("engine", "client->net 1ks/1kf"),
            "#1f77b4",
        ),
        (
            "sluice engine, DPDK net_ring",
            pick("dpdk", "client->net 1ks/1kf"),
            "#2ca02c",
        ),
        (
            "sluice end to end (af_packet lab)",
            pick("lab", "sluice"),
            "#17becf",
        ),
        (
            "OpenVPN 2.6 end to end (lab)",
            pick("lab", "openvpn"),
            "#d62728",
        ),
    ]
    .into_iter()
    .filter_map(|(l, v, c)| v.map(|v| (l.to_owned(), v, c)))
    .collect();
    let max = bars.iter().map(|b| b.1).fold(1.0_f64, f64::max);
    let (w, row, left) = (760.0, 34.0, 260.0);
    let h = 60.0 + row * bars.len() as f64 + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"24\" font-size=\"16\">client→network, {size}-byte packets, one core, Gbit/s (same run)</text>\n"
    );
    for (i, (label, v, color)) in bars.iter().enumerate() {
        let y = 50.0 + row * i as f64;
        let bw = (w - left - 90.0) * v / max;
        s.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{label}</text>\n\
             <rect x=\"{left}\" y=\"{:.0}\" width=\"{bw:.1}\" height=\"22\" fill=\"{color}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.0}\">{v:.2}</text>\n",
            left - 8.0,
            y + 16.0,
            y,
            left + bw + 6.0,
            y + 16.0
        ));
    }
    s.push_str("</svg>\n");
    std::fs::write(path, s)
}

/// Rates over consecutive windows of a measurement, keeping the best: on a shared machine a
/// window in which another tenant took the core or the cache is slower, never faster, so the
/// best window is the closest to the machine's own figure. Used for the ceiling and for the
/// engine alike, so their ratio compares like with like.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BestWindow {
    window: std::time::Duration,
    win_time: std::time::Duration,
    win_ops: u64,
    best: Option<f64>,
    total_time: std::time::Duration,
    total_ops: u64,
}

impl BestWindow {
    /// Windows of an eighth of `per_case` (at least 50 ms).
    pub(crate) fn new(per_case: std::time::Duration) -> Self {
        Self {
            window: (per_case / 8).max(std::time::Duration::from_millis(50)),
            win_time: std::time::Duration::ZERO,
            win_ops: 0,
            best: None,
            total_time: std::time::Duration::ZERO,
            total_ops: 0,
        }
    }

    /// Records `ops` done in `time`.
    pub(crate) fn add(&mut self, ops: u64, time: std::time::Duration) {
        self.win_time += time;
        self.win_ops += ops;
        self.total_time += time;
        self.total_ops += ops;
        if self.win_time >= self.window {
            let rate = self.win_ops as f64 / self.win_time.as_secs_f64();
            self.best = Some(self.best.map_or(rate, |b: f64| b.max(rate)));
            self.win_time = std::time::Duration::ZERO;
            self.win_ops = 0;
        }
    }

    /// Time measured so far.
    pub(crate) fn elapsed(&self) -> std::time::Duration {
        self.total_time
    }

    /// Operations counted so far.
    pub(crate) fn ops(&self) -> u64 {
        self.total_ops
    }

    /// The best window's rate (the overall rate if no window completed).
    pub(crate) fn rate(&self) -> f64 {
        self.best
            .unwrap_or_else(|| self.total_ops as f64 / self.total_time.as_secs_f64().max(1e-9))
    }
}
