//! A configuration file's text, parsed and validated as `sluice validate` and a reload do:
//! any text gets either a loaded configuration or positioned diagnostics, never a panic or a
//! hang (the diagnostics' placement once took time quadratic in the findings).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A directory that does not exist: certificate paths in the text resolve to nothing.
    let path = Path::new("/nonexistent/sluice-fuzz/sluice.toml");
    if let Err(e) = sluice_control::config::check_text(path, text.to_owned(), None) {
        for d in &e.diagnostics {
            assert!(d.line >= 1, "diagnostic lines count from 1: {d:?}");
        }
    }
});
