//! Property tests: a configuration file is untrusted input, so no text, however mutated, may
//! panic the path a reload takes (parse, validate, the checks against the configuration in
//! force, positioned diagnostics, compiling the rule tables), and every configuration that
//! validation accepts must compile.
//!
//! The mutations start from the annotated example and the small test configuration and
//! replace values with edge values (huge, negative and zero integers, empty, very long,
//! unicode and NUL strings, edge CIDRs, the other endpoint's or association's IDs, arrays of
//! thousands), remove or duplicate tables and array entries, and edit the text itself.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use toml::Value;

use super::{change, diagnose, parse, validate, Config};
use crate::compile;

/// The annotated example.
const EXAMPLE: &str = include_str!("../../../docs/sluice.toml");

/// One step into a TOML tree.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    At(usize),
}

/// Every node of `v` (tables, arrays and leaves), by path, the root excluded.
fn nodes(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        Value::Table(t) => {
            for (k, child) in t {
                here.push(Step::Key(k.clone()));
                out.push(here.clone());
                nodes(child, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                here.push(Step::At(i));
                out.push(here.clone());
                nodes(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(root: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(root, |v, step| match (step, v) {
        (Step::Key(k), Value::Table(t)) => t.get_mut(k),
        (Step::At(i), Value::Array(a)) => a.get_mut(*i),
        _ => None,
    })
}

/// Edge values a field may be given.
fn edge_value() -> impl Strategy<Value = Value> {
    let strings = prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        Just("0.0.0.0/0".to_owned()),
        Just("0.0.0.0/32".to_owned()),
        Just("255.255.255.255/32".to_owned()),
        Just("255.255.255.255/0".to_owned()),
        Just("10.0.0.0/33".to_owned()),
        Just("10.0.0.0/-1".to_owned()),
        Just("10.0.0.0/8".to_owned()),
        Just("10.200.0.0/20".to_owned()),
        Just("10.200.0.0/12".to_owned()),
        Just("172.31.0.0/16".to_owned()),
        Just("172.31.1.0/24".to_owned()),
        Just("172.31.1.0/27".to_owned()),
        Just("172.31.1.0/28".to_owned()),
        Just("172.31.1.5/24".to_owned()),
        Just("172.31.1.5".to_owned()),
        Just("172.31.1.1".to_owned()),
        Just("0.0.0.0".to_owned()),
        Just("255.255.255.255".to_owned()),
        Just("127.0.0.1:0".to_owned()),
        Just("[::1]:9180".to_owned()),
        Just("cvpn-endpoint-0123456789abcdef0".to_owned()),
        Just("cvpn-endpoint-0123456789abcdef1".to_owned()),
        Just("cvpn-assoc-0123456789abcdef1".to_owned()),
        Just("cvpn-assoc-0123456789abcdef2".to_owned()),
        Just("subnet-a".to_owned()),
        Just("subnet-0a0000000000000a1".to_owned()),
        Just("inside-a".to_owned()),
        Just("outside".to_owned()),
        Just("sg-1".to_owned()),
        Just("engineering".to_owned()),
        Just("tcp".to_owned()),
        Just("all".to_owned()),
        Just("totp".to_owned()),
        Just("associate".to_owned()),
        Just("-1".to_owned()),
        Just("\0".to_owned()),
        Just("a\0b".to_owned()),
        Just("\u{202e}é\u{1F600}\u{FFFF}".to_owned()),
        Just("line\nbreak\r\"quote\\".to_owned()),
        Just("/".to_owned()),
        Just("x".repeat(70_000)),
        Just("a.".repeat(200)),
        ".{0,24}",
    ];
    let integers = prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(443),
        Just(1194),
        Just(8),
        Just(24),
        Just(65_535),
        Just(65_536),
        Just(i64::from(u16::MAX) + 1),
        Just(i64::from(u32::MAX)),
        Just(i64::from(u32::MAX) + 1),
        Just(1 << 20),
        Just((1 << 20) + 1),
        Just(128),
        Just(129),
        Just(576),
        Just(1500),
        Just(2000),
        Just(2001),
        Just(120),
        Just(7 * 86_400),
        Just(1_000_000),
        any::<i64>(),
    ];
    let leaf = prop_oneof![
        6 => strings.prop_map(Value::String),
        3 => integers.prop_map(Value::Integer),
        1 => any::<bool>().prop_map(Value::Boolean),
        1 => prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(1e300)]
            .prop_map(Value::Float),
    ];
    // Thousands of entries, of short values only (thousands of very long strings is a file
    // past the size limit).
    let short = prop_oneof![
        Just(Value::String("172.31.0.2".to_owned())),
        Just(Value::String("10.1.0.0/16".to_owned())),
        Just(Value::String("sg-1".to_owned())),
        Just(Value::String(String::new())),
        Just(Value::Integer(-1)),
        Just(Value::Boolean(true)),
    ];
    prop_oneof![
        8 => leaf.clone(),
        1 => Just(Value::Array(Vec::new())),
        1 => Just(Value::Table(toml::Table::new())),
        1 => (leaf, 2usize..4).prop_map(|(v, n)| Value::Array(vec![v; n])),
        1 => short.prop_map(|v| Value::Array(vec![v; 3000])),
    ]
}

/// One change to the parsed document.
#[derive(Clone, Debug)]
enum Mutation {
    /// Replace the node at the index with a value.
    Replace(Index, Value),
    /// Remove the node (a key of a table, an entry of an array).
    Remove(Index),
    /// Repeat the node (an array entry: it is appended this many times, within a few MiB; a
    /// table's key: its value made an array of copies).
    Duplicate(Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<Index>(), edge_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        2 => any::<Index>().prop_map(Mutation::Remove),
        2 => (any::<Index>(), prop_oneof![Just(1usize), Just(2), Just(2000)])
            .prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(doc: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    nodes(doc, &mut Vec::new(), &mut all);
    if all.is_empty() {
        return;
    }
    let (Mutation::Replace(i, _) | Mutation::Remove(i) | Mutation::Duplicate(i, _)) = m;
    let path = all[i.index(all.len())].clone();
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    match m {
        Mutation::Replace(_, v) => {
            if let Some(node) = node_mut(doc, &path) {
                *node = v.clone();
            }
        }
        Mutation::Remove(_) => match (node_mut(doc, parent), last) {
            (Some(Value::Table(t)), Step::Key(k)) => {
                t.remove(k);
            }
            (Some(Value::Array(a)), Step::At(i)) => {
                a.remove(*i);
            }
            _ => {}
        },
        Mutation::Duplicate(_, n) => match (node_mut(doc, parent), last) {
            (Some(Value::Array(a)), Step::At(i)) => {
                let copy = a[*i].clone();
                // No further than a file of a few MiB (the limit is 16).
                let n = if copy.to_string().len().saturating_mul(*n) > 4 << 20 {
                    (*n).min(2)
                } else {
                    *n
                };
                a.extend(std::iter::repeat_n(copy, n));
            }
            (Some(Value::Table(t)), Step::Key(k)) => {
                // A key given twice is a syntax error; the nearest thing in a tree is its
                // value made an array of copies.
                if let Some(v) = t.get(k).cloned() {
                    t.insert(k.clone(), Value::Array(vec![v; (*n).min(3)]));
                }
            }
            _ => {}
        },
    }
}

/// Edits of the text itself, which the tree cannot express (syntax errors, a table header
/// given twice, stray bytes).
#[derive(Clone, Debug)]
enum TextEdit {
    /// Repeat a line.
    RepeatLine(Index),
    /// Drop a line.
    DropLine(Index),
    /// Insert a string at a character position.
    Insert(Index, String),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        any::<Index>().prop_map(TextEdit::RepeatLine),
        any::<Index>().prop_map(TextEdit::DropLine),
        (
            any::<Index>(),
            prop_oneof![
                Just("\0".to_owned()),
                Just("\n[[endpoint]]\n".to_owned()),
                Just("\n[dataplane]\n".to_owned()),
                Just("\"".to_owned()),
                Just("é".to_owned()),
                Just("\u{FEFF}".to_owned()),
                Just("99999999999999999999999".to_owned()),
                ".{0,8}",
            ]
        )
            .prop_map(|(i, s)| TextEdit::Insert(i, s)),
    ]
}

fn edit_text(text: &str, e: &TextEdit) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    match e {
        TextEdit::RepeatLine(i) if !lines.is_empty() => {
            let k = i.index(lines.len());
            lines.insert(k, lines[k]);
            lines.join("\n")
        }
        TextEdit::DropLine(i) if !lines.is_empty() => {
            lines.remove(i.index(lines.len()));
            lines.join("\n")
        }
        TextEdit::Insert(i, s) => {
            let bounds: Vec<usize> = text
                .char_indices()
                .map(|(b, _)| b)
                .chain([text.len()])
                .collect();
            let at = bounds[i.index(bounds.len())];
            format!("{}{s}{}", &text[..at], &text[at..])
        }
        _ => text.to_owned(),
    }
}

/// The whole path of a reload from `old` to `text`, without the data plane; returns whether
/// validation accepted it (and then it compiled).
fn reload_path(old: &Config, text: &str) -> bool {
    let path = Path::new("sluice.toml");
    // Positions of a syntax error, and of every finding, in this text.
    let Ok(config) = parse(path, text) else {
        return false;
    };
    let mut findings = validate::validate(&config);
    let accepted = findings.is_empty();
    findings.extend(change::check_change(old, &config));
    let _ = change::needs_restart(old, &config);
    if !findings.is_empty() {
        let e = diagnose(path, text, findings);
        assert!(!e.diagnostics.is_empty());
        let _ = e.to_string();
    }
    // The files it names (none of them exists here, or they are not what they should be).
    let _ = super::pki::check_files(&config, Path::new("/nonexistent-sluice-proptest"));
    if accepted {
        let previous = compile::compile(old, 1)
            .expect("the configuration in force compiles")
            .groups;
        let c = compile::compile_numbered(&config, 2, &previous).unwrap_or_else(|e| {
            panic!("validation accepted a configuration that does not compile: {e}\n{text}")
        });
        assert_eq!(c.table.endpoints(), config.endpoints.len());
        for (e, ep) in config.endpoints.iter().enumerate() {
            let t = c.table.endpoint(e).expect("compiled endpoint");
            assert_eq!(
                t.targets.len(),
                ep.target_networks.len(),
                "a validated target network was left out of the tables"
            );
        }
    }
    if std::env::var("XDBG").is_ok() {
        eprintln!("ACCEPTED {accepted}");
    }
    accepted
}

fn base(text: &str) -> (Config, Value) {
    let config = parse(Path::new("t.toml"), text).expect("the base parses");
    assert!(validate::validate(&config).is_empty(), "the base is valid");
    let tree: Value = Value::Table(text.parse::<toml::Table>().expect("TOML"));
    (config, tree)
}

fn mutated(tree: &Value, ms: &[Mutation]) -> Option<String> {
    let mut doc = tree.clone();
    for m in ms {
        apply(&mut doc, m);
    }
    // A tree toml cannot write (a float NaN is written; an array of tables mixed with values
    // is not) is no file anyone could give.
    toml::to_string(&doc).ok()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 160,
        failure_persistence: None, ..ProptestConfig::default() })]

    /// The annotated example, mutated in up to three places.
    #[test]
    fn mutated_example_never_panics_and_what_validates_compiles(
        ms in proptest::collection::vec(mutation(), 1..=3)
    ) {
        let (old, tree) = base(EXAMPLE);
        if let Some(text) = mutated(&tree, &ms) {
            reload_path(&old, &text);
        }
    }

    /// The small test configuration, mutated in up to three places.
    #[test]
    fn mutated_test_configuration_never_panics_and_what_validates_compiles(
        ms in proptest::collection::vec(mutation(), 1..=3)
    ) {
        let (old, tree) = base(super::tests::BASE);
        if let Some(text) = mutated(&tree, &ms) {
            reload_path(&old, &text);
        }
    }

    /// The example's text itself edited: lines repeated or dropped, bytes inserted.
    #[test]
    fn edited_example_text_never_panics(
        edits in proptest::collection::vec(text_edit(), 1..=3)
    ) {
        let (old, _) = base(EXAMPLE);
        let text = edits.iter().fold(EXAMPLE.to_owned(), |t, e| edit_text(&t, e));
        reload_path(&old, &text);
    }
}
