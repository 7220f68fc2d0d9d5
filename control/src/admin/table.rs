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
    let mut out = format!("{} ({})\n", printable(title), items.len());
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

/// `s` as one line of printable text: control characters (a newline that would start another
/// row, an escape sequence the terminal would obey) are written escaped, as `\n` or
/// `\u{1b}`. Names and descriptions in the tables come from the configuration, from users
/// files and from client certificates.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect::<String>()
        .into()
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => printable(s).into_owned(),
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
                        out.push_str(&format!(
                            "{}.{}: {}\n",
                            printable(k),
                            printable(k2),
                            cell(Some(v2))
                        ));
                    }
                }
                other => out.push_str(&format!("{}: {}\n", printable(k), cell(Some(other)))),
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

    /// What the property below finds (shrunk: a NUL in a cell), in the cases that matter: a
    /// name with a newline was written as it is, so it started a row of its own, and one with
    /// an escape sequence had the terminal obey it.
    #[test]
    fn control_characters_in_a_cell_are_escaped() {
        let items = vec![json!({ "User": "eve\nforged  row", "CN": "\u{1b}[2Jcn\u{0}" })];
        let out = render("T", &items, &[("User", "/User"), ("CN", "/CN")]);
        assert_eq!(
            out,
            "T (1)\nUser              CN\n----------------  ----------------\n\
             eve\\nforged  row  \\u{1b}[2Jcn\\u{0}\n"
        );
        let obj = render_object(&json!({ "Username": "a\rb", "S": { "Code": "x\ny" } }));
        assert_eq!(obj, "S.Code: x\\ny\nUsername: a\\rb\n");
    }

    proptest::proptest! {
        /// Whatever the strings, a table has its title, header and rule lines and one line per
        /// item, and no control character but the newlines that end them.
        #[test]
        fn a_table_has_one_line_per_item(
            values in proptest::collection::vec(
                (proptest::string::string_regex("(.|[\\x00-\\x1f\\x7f\\u{85}\\u{2028}])*").expect("regex"),
                 proptest::option::of(".*")),
                0..6,
            )
        ) {
            let items: Vec<Value> = values
                .iter()
                .map(|(a, b)| json!({ "A": a, "B": { "C": b } }))
                .collect();
            let out = render("T", &items, &[("A", "/A"), ("C", "/B/C")]);
            proptest::prop_assert_eq!(out.lines().count(), 3 + items.len(), "{:?}", out);
            proptest::prop_assert!(
                !out.chars().any(|c| c.is_control() && c != '\n'),
                "{:?}",
                out
            );
            proptest::prop_assert!(out.ends_with('\n'));
            for item in &items {
                let o = render_object(item);
                proptest::prop_assert_eq!(o.lines().count(), 2, "{:?}", o);
                proptest::prop_assert!(!o.chars().any(|c| c.is_control() && c != '\n'));
            }
        }
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
