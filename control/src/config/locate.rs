//! Finds where a `FieldPath` sits in the TOML text, so semantic errors carry a line and column.
//!
//! The typed `Config` has no positions; `toml_edit`'s immutable document keeps the span of every
//! key and value. A path that does not exist in the text (a defaulted field) resolves to its
//! deepest existing ancestor.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table};

use super::error::{FieldPath, Seg};

/// The parsed text, kept for span lookups.
pub struct Locator {
    doc: Option<ImDocument<String>>,
}

impl Locator {
    /// Parses `text`; if it does not parse, every lookup answers the start of the file.
    pub fn new(text: &str) -> Self {
        Self {
            doc: ImDocument::parse(text.to_owned()).ok(),
        }
    }

    /// The byte span of the value at `path`, or of its deepest ancestor that has one.
    pub fn span(&self, path: &FieldPath) -> Range<usize> {
        let Some(doc) = &self.doc else { return 0..0 };
        let mut best = 0..0;
        let mut table: &Table = doc.as_table();
        let mut item: Option<&Item> = None;
        let mut segs = path.0.iter().peekable();
        while let Some(seg) = segs.next() {
            match seg {
                Seg::Key(k) => {
                    let current = match item {
                        None => Some(table),
                        Some(i) => i.as_table_like().and_then(|_| i.as_table()),
                    };
                    let Some(t) = current else { break };
                    let Some(next) = t.get(k) else {
                        if let Some(s) = t.span() {
                            best = s;
                        }
                        break;
                    };
                    // Prefer the value's span; for a table header, the key's.
                    if let Some(s) = next.span().or_else(|| t.key(k).and_then(|key| key.span())) {
                        best = s;
                    }
                    if let Some(inline) = next.as_inline_table() {
                        // Inline tables: descend through their keys by value spans.
                        if let Some(Seg::Key(k2)) = segs.peek() {
                            if let Some(v) = inline.get(k2) {
                                if let Some(s) = v.span() {
                                    best = s;
                                }
                            }
                        }
                        break;
                    }
                    if let Some(t2) = next.as_table() {
                        table = t2;
                        item = None;
                    } else {
                        item = Some(next);
                    }
                }
                Seg::Index(i) => {
                    let Some(it) = item else { break };
                    if let Some(aot) = it.as_array_of_tables() {
                        let Some(t) = aot.get(*i) else { break };
                        if let Some(s) = t.span() {
                            best = s;
                        }
                        table = t;
                        item = None;
                    } else if let Some(arr) = it.as_array() {
                        if let Some(v) = arr.get(*i).and_then(|v| v.span()) {
                            best = v;
                        }
                        break;
                    } else {
                        break;
                    }
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::error::line_col;

    const DOC: &str = "\
[appliance]
state_dir = \"/tmp\"

[[endpoint]]
id = \"x\"
dns_servers = [\"1.1.1.1\", \"8.8.8.8\"]
authentication = { mutual = { client_root_ca = \"ca.crt\" } }

[[endpoint.route]]
destination_cidr = \"10.0.0.0/16\"

[[endpoint.route]]
destination_cidr = \"10.1.0.0/16\"
";

    fn at(path: FieldPath) -> (usize, usize) {
        let l = Locator::new(DOC);
        line_col(DOC, l.span(&path).start)
    }

    #[test]
    fn finds_values_tables_and_arrays() {
        let ep = FieldPath::root().key("endpoint").index(0);
        assert_eq!(
            at(FieldPath::root().key("appliance").key("state_dir")),
            (2, 13)
        );
        assert_eq!(at(ep.key("id")), (5, 6));
        assert_eq!(at(ep.key("dns_servers").index(1)), (6, 27));
        assert_eq!(
            at(ep.key("route").index(1).key("destination_cidr")),
            (13, 20)
        );
        assert_eq!(at(ep.key("authentication").key("mutual")), (7, 29));
        // A missing field resolves to its table.
        let (line, _) = at(ep.key("route").index(1).key("description"));
        assert_eq!(line, 12);
    }
}
