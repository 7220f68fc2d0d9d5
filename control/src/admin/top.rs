//! `sluice top`: a live view of the running appliance built from two admin-socket answers
//! (`describe-client-vpn-connections` and `describe-data-plane`), with rates computed from the
//! previous sample. Rendering is a pure function; the binary owns the loop and the terminal.

use serde_json::Value;

use super::table::printable;

/// One sample of the daemon's state.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was taken, in seconds from any fixed origin.
    pub at: f64,
    /// `describe-client-vpn-connections` JSON.
    pub connections: Value,
    /// `describe-data-plane` JSON.
    pub data_plane: Value,
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn rate(cur: u64, prev: Option<u64>, dt: f64) -> f64 {
    match prev {
        Some(p) if dt > 0.0 && cur >= p => (cur - p) as f64 / dt,
        _ => 0.0,
    }
}

fn si(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.1}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The frame for `cur`, with rates against `prev`.
pub fn render(prev: Option<&Sample>, cur: &Sample, clock: &str) -> String {
    let dt = prev.map_or(0.0, |p| cur.at - p.at);
    let conns = cur.connections["Connections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let active: Vec<&Value> = conns
        .iter()
        .filter(|c| c["Status"]["Code"] == "active")
        .collect();
    let find_prev = |id: &Value| {
        prev.and_then(|p| {
            p.connections["Connections"]
                .as_array()?
                .iter()
                .find(|c| &c["ConnectionId"] == id)
                .cloned()
        })
    };
    let mut out = format!(
        "sluice top  {clock}  active connections: {}  (refresh {dt:.1}s, Ctrl-C quits)\n\n",
        active.len()
    );
    out.push_str(&format!(
        "{:<34} {:<24} {:<15} {:<21} {:>9} {:>9} {:>10} {:>10}\n",
        "CONNECTION",
        "USER / COMMON NAME",
        "CLIENT IP",
        "DEVICE",
        "IN pkt/s",
        "OUT pkt/s",
        "IN bit/s",
        "OUT bit/s"
    ));
    for c in &active {
        let p = find_prev(&c["ConnectionId"]);
        let field = |k: &str| u(&c[k]);
        let pf = |k: &str| p.as_ref().map(|p| u(&p[k]));
        let who = c["Username"]
            .as_str()
            .or_else(|| c["CommonName"].as_str())
            .unwrap_or("-");
        let shown = |v: Option<&str>| printable(v.unwrap_or("-")).into_owned();
        out.push_str(&format!(
            "{:<34} {:<24} {:<15} {:<21} {:>9} {:>9} {:>10} {:>10}\n",
            shown(c["ConnectionId"].as_str()),
            shown(Some(who)),
            shown(c["ClientIp"].as_str()),
            shown(c["DeviceIp"].as_str()),
            si(rate(field("IngressPackets"), pf("IngressPackets"), dt)),
            si(rate(field("EgressPackets"), pf("EgressPackets"), dt)),
            si(8.0 * rate(field("IngressBytes"), pf("IngressBytes"), dt)),
            si(8.0 * rate(field("EgressBytes"), pf("EgressBytes"), dt)),
        ));
    }
    out.push_str(&format!(
        "\n{:<5} {:>6} {:>9} {:>9} {:>6}  {}\n",
        "CORE", "BUSY%", "SESSIONS", "FLOWS", "RULES", "DROPS/s (since start)"
    ));
    let cores = cur.data_plane["Cores"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in &cores {
        let pc = prev.and_then(|p| {
            p.data_plane["Cores"]
                .as_array()?
                .iter()
                .find(|x| x["Core"] == c["Core"])
                .cloned()
        });
        let (busy, idle) = (u(&c["BusyPolls"]), u(&c["IdlePolls"]));
        let (pb, pi) = pc
            .as_ref()
            .map_or((0, 0), |p| (u(&p["BusyPolls"]), u(&p["IdlePolls"])));
        let polls = (busy + idle).saturating_sub(pb + pi);
        let busy_pct = if polls > 0 {
            100.0 * busy.saturating_sub(pb) as f64 / polls as f64
        } else {
            0.0
        };
        let mut drops: Vec<(String, u64, f64)> = c["Drops"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let before = pc.as_ref().map(|p| u(&p["Drops"][k]));
                        (k.clone(), u(v), rate(u(v), before, dt))
                    })
                    .collect()
            })
            .unwrap_or_default();
        drops.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.1.cmp(&a.1)));
        let d: Vec<String> = drops
            .iter()
            .take(4)
            .map(|(k, n, r)| format!("{k} {}/s ({n})", si(*r)))
            .collect();
        out.push_str(&format!(
            "{:<5} {:>5.1}% {:>9} {:>9} {:>6}  {}\n",
            u(&c["Core"]),
            busy_pct,
            u(&c["Sessions"]),
            u(&c["Flows"]),
            u(&c["RuleTableVersion"]),
            if d.is_empty() {
                "-".to_owned()
            } else {
                d.join(", ")
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rates_from_two_samples() {
        let conn = |pkts: u64, bytes: u64| {
            json!({"Connections": [{"ConnectionId": "cvpn-connection-1", "Username": "alice",
                "ClientIp": "10.200.0.2", "DeviceIp": "192.168.50.2:5000", "IngressPackets": pkts,
                "EgressPackets": pkts, "IngressBytes": bytes, "EgressBytes": bytes,
                "Status": {"Code": "active"}}]})
        };
        let dp = |busy: u64, idle: u64, drops: u64| {
            json!({"Cores": [{"Core": 0, "BusyPolls": busy, "IdlePolls": idle, "Sessions": 1,
                "Flows": 3, "RuleTableVersion": 2, "Drops": {"not_authorized": drops}}]})
        };
        let a = Sample {
            at: 10.0,
            connections: conn(100, 10_000),
            data_plane: dp(10, 90, 4),
        };
        let b = Sample {
            at: 12.0,
            connections: conn(300, 260_000),
            data_plane: dp(60, 140, 10),
        };
        let f = render(Some(&a), &b, "now");
        assert!(f.contains("active connections: 1"), "{f}");
        let row = f
            .lines()
            .find(|l| l.starts_with("cvpn-connection-1"))
            .unwrap();
        assert!(
            row.contains("alice") && row.contains("100") && row.contains("1.0M"),
            "{row}"
        );
        let core = f.lines().find(|l| l.starts_with("0 ")).unwrap();
        assert!(
            core.contains("50.0%") && core.contains("not_authorized 3/s (10)"),
            "{core}"
        );
    }

    /// A common name (from a client certificate) with a newline or an escape sequence is shown
    /// escaped in its row, not as a row of its own or an order to the terminal.
    #[test]
    fn a_name_with_control_characters_stays_in_its_row() {
        let conns = json!({"Connections": [{"ConnectionId": "cvpn-connection-1",
            "CommonName": "mallory\ncvpn-connection-2 forged\u{1b}[2J",
            "Status": {"Code": "active"}}]});
        let s = Sample {
            at: 1.0,
            connections: conns,
            data_plane: json!({"Cores": []}),
        };
        let f = render(None, &s, "now");
        assert!(!f.chars().any(|c| c.is_control() && c != '\n'), "{f:?}");
        let rows: Vec<&str> = f
            .lines()
            .filter(|l| l.starts_with("cvpn-connection-"))
            .collect();
        assert_eq!(rows.len(), 1, "{f}");
        assert!(
            rows[0].contains("mallory\\ncvpn-connection-2 forged\\u{1b}[2J"),
            "{}",
            rows[0]
        );
    }
}
