//! An admin-socket request line (`runtime::admin_socket::Request`, JSON) as the daemon reads
//! it, its words through the command line (`admin::cli::Cli`) as the daemon parses them, and
//! every word that may be a structure parameter through the shorthand/JSON parser
//! (`admin::shorthand`), and as a `--filters` argument (`admin::filters`). Oracles: no panic
//! (a stack overflow aborts: shorthand nesting is bounded); a request re-serialises to one
//! that parses to the same; what shorthand parses gives objects whose keys and string values
//! carry none of its delimiters and no surrounding blanks, and re-rendered as shorthand
//! parses to the same value; a word without delimiters or wildcards, as a filter's one value,
//! matches that word and nothing longer.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice_control::admin::cli::Cli;
use sluice_control::admin::filters::{self, Filters};
use sluice_control::admin::shorthand;
use sluice_control::runtime::admin_socket::{Request, MAX_REQUEST};

/// Renders a value parsed from shorthand back as shorthand.
fn render(v: &Value) -> String {
    let Value::Object(m) = v else {
        panic!("shorthand gives objects: {v}");
    };
    m.iter()
        .map(|(k, v)| {
            assert!(
                !k.contains(['=', '{', '}', ',']) && k.trim() == k,
                "key {k:?}"
            );
            match v {
                Value::String(s) => {
                    assert!(
                        !s.contains(['=', '{', '}', ',']) && s.trim() == s,
                        "value {s:?}"
                    );
                    format!("{k}={s}")
                }
                o => format!("{k}={{{}}}", render(o)),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn shorthand_checks(word: &str) {
    let t = word.trim();
    let json = t.starts_with('{') || t.starts_with('[');
    if let Ok(v) = shorthand::parse(word) {
        if !json {
            let again = render(&v);
            // A first key that starts with `[` would be read as JSON.
            if !again.trim_start().starts_with('[') {
                assert_eq!(shorthand::parse(&again).as_ref(), Ok(&v), "{again}");
            }
        }
    }
}

/// `word` as a `--filters` argument, and as the one value of a filter.
fn filter_checks(word: &str) {
    const NAMES: &[&str] = &["username", "connection-id"];
    if let Ok(f) = Filters::parse(&[word.to_owned()], NAMES) {
        let _ = f.matches(|name| Some(format!("{name}{word}")));
    }
    let v = word.trim();
    if v.is_empty()
        || v.len() > filters::MAX_VALUE
        || v.contains([',', '*', '?', '='])
        || v.starts_with(['[', '{'])
    {
        return;
    }
    let f = Filters::parse(&[format!("Name=username,Values={v}")], NAMES)
        .unwrap_or_else(|e| panic!("{v:?} as a filter's value: {e}"));
    assert!(
        f.matches(|_| Some(v.to_owned())),
        "{v:?} does not match itself"
    );
    assert!(!f.matches(|_| Some(format!("{v}x"))), "{v:?} matches more");
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_REQUEST {
        return;
    }
    let Ok(req) = serde_json::from_slice::<Request>(data) else {
        // Not a request: its text as one word.
        if let Ok(s) = std::str::from_utf8(data) {
            shorthand_checks(s);
            filter_checks(s);
        }
        return;
    };
    let line = serde_json::to_vec(&req).expect("a request serialises");
    let again: Request = serde_json::from_slice(&line).expect("and parses back");
    assert_eq!(
        (&again.args, &again.config, &again.cwd),
        (&req.args, &req.config, &req.cwd)
    );
    let mut argv = vec!["sluice".to_owned()];
    argv.extend(req.args.iter().cloned());
    argv.push("--config".to_owned());
    argv.push("/nonexistent/sluice-fuzz/sluice.toml".to_owned());
    let _ = Cli::try_parse_from(&argv).map(|c| format!("{c:?}"));
    for w in &req.args {
        shorthand_checks(w);
        filter_checks(w);
        if let Some((_, v)) = w.split_once('=') {
            shorthand_checks(v);
        }
    }
});
