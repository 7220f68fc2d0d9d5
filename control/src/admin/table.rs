//! Renders a list of JSON objects as aligned columns, for `--output table`.

use serde_json::Value;

/// One column: its header and the JSON pointer of its value in each item.
pub type Column = (&'static str, &'static str);

/// Renders `items` with `columns`; nested values are shown compactly, absent ones as `-`.
pub fn render(title: &str, items: &[Value], columns: &[Column]) -> String {
    let cells: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|(_, ptr)| cell(item.pointer(ptr)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("{title} ({})\n", items.len());
    let line = |row: &mut String, values: &mut dyn Iterator<Item = String>| {
        // Padded by hand: `format!`'s width takes at most 65,535, and a description may be
        // longer (it panicked, and the daemon with it).
        let parts: Vec<String> = values
            .zip(&widths)
            .map(|(mut v, w)| {
                let pad = w.saturating_sub(v.chars().count());
                v.extend(std::iter::repeat_n(' ', pad));
                v
            })
            .collect();
        row.push_str(parts.join("  ").trim_end());
        row.push('\n');
    };
    line(&mut out, &mut columns.iter().map(|(h, _)| (*h).to_owned()));
    line(&mut out, &mut widths.iter().map(|w| "-".repeat(*w)));
    for r in cells {
        line(&mut out, &mut r.into_iter());
    }
    out
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.is_empty() => "-".into(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Renders a single object as `key: value` lines (for mutation responses).
pub fn render_object(v: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(m) = v {
        for (k, val) in m {
            match val {
                Value::Object(inner) => {
                    for (k2, v2) in inner {
                        out.push_str(&format!("{k}.{k2}: {}\n", cell(Some(v2))));
                    }
                }
                other => out.push_str(&format!("{k}: {}\n", cell(Some(other)))),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aligned() {
        let items = vec![
            json!({"A": "x", "B": {"C": 1}}),
            json!({"A": "longer", "B": {}}),
        ];
        let t = render("T", &items, &[("A", "/A"), ("C", "/B/C")]);
        assert_eq!(t, "T (2)\nA       C\n------  -\nx       1\nlonger  -\n");
    }

    /// A cell wider than `format!`'s largest width (65,535) is rendered, not a panic: a
    /// description can be that long, and the table is built for every describe.
    #[test]
    fn a_cell_wider_than_a_format_width_is_rendered() {
        let long = "d".repeat(70_000);
        let items = vec![
            json!({ "Id": "a", "Description": long }),
            json!({ "Id": "bb", "Description": "short" }),
        ];
        let out = render(
            "T",
            &items,
            &[("Description", "/Description"), ("Id", "/Id")],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[3], format!("{long}  a"));
        assert_eq!(lines[4], format!("short{}  bb", " ".repeat(70_000 - 5)));
    }
}
