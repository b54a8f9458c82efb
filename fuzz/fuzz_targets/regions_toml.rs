//! `regions.toml` validation on arbitrary text. Parsing must not panic, every
//! diagnostic must point inside the text (1-based line and column), and a
//! file that validates must summarise without panicking.
#![no_main]

use std::path::Path;

use georelay::config::Fleet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative paths resolve under a directory that does not exist, so the
    // target never opens a real file.
    match Fleet::parse(text, Path::new("/nonexistent/georelay-fuzz/regions.toml")) {
        Ok(fleet) => {
            let _ = fleet.summary();
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            let lines = text.split('\n').count();
            for diagnostic in &errors.0 {
                assert!(diagnostic.line >= 1 && diagnostic.line <= lines, "{diagnostic}");
                assert!(diagnostic.column >= 1, "{diagnostic}");
            }
        }
    }
});
