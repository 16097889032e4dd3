//! A `.dockerignore` and paths from arbitrary bytes: the file is read as
//! Docker reads it, compiled into a matcher, and every path (the lines after
//! a NUL byte) is matched, alone and with its parents' results. Nothing may
//! panic; an invalid pattern must be an error.

#![no_main]

use kiln_context::{Matcher, read_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ignore, paths) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let Ok(patterns) = read_all(ignore, std::path::Path::new(".dockerignore")) else {
        return;
    };
    let Ok(m) = Matcher::new(&patterns) else {
        return;
    };
    for p in paths.split(|&b| b == b'\n') {
        let _ = m.matches(p);
        let _ = m.matches_or_parent_matches(p);
    }
});
