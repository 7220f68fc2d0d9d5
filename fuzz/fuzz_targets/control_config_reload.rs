//! A reload: the previous configuration's text and the new one's (split at the first NUL),
//! through `config::check_text(path, new, Some(&previous))`, which adds the checks of what a
//! change may not do (fields fixed at creation, deletions) to the new text's own. Oracles: no
//! panic or hang; diagnostics are positioned (line and column from 1); a configuration is
//! always a change its own text allows (checked against itself, it has no finding it does not
//! have alone).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control::config::{check_text, parse};
use std::path::Path;

fn findings(
    r: Result<sluice_control::config::Loaded, sluice_control::config::error::ConfigError>,
) -> Vec<String> {
    match r {
        Ok(_) => Vec::new(),
        Err(e) => e
            .diagnostics
            .iter()
            .map(|d| {
                assert!(
                    d.line >= 1 && d.column >= 1,
                    "diagnostics are positioned: {d:?}"
                );
                format!("{}:{}: {}: {}", d.line, d.column, d.field, d.message)
            })
            .collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (old, new) = text.split_once('\0').unwrap_or((text, text));
    // A directory that does not exist: certificate paths in the text resolve to nothing.
    let path = Path::new("/nonexistent/sluice-fuzz/sluice.toml");
    let Ok(previous) = parse(path, old) else {
        return;
    };
    let _ = findings(check_text(path, new.to_owned(), Some(&previous)));
    // Against itself.
    let alone = findings(check_text(path, old.to_owned(), None));
    let against_itself = findings(check_text(path, old.to_owned(), Some(&previous)));
    assert_eq!(
        against_itself, alone,
        "a configuration checked against itself"
    );
});
