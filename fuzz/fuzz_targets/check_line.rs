//! `rlvr-verifier check`'s line decoder and dispatch on arbitrary bytes: every line gets one verdict,
//! a JSON object with an outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rlvr_verifier::check::check_line;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let verdict = check_line(&line);
    assert!(verdict["outcome"].is_string(), "no outcome for {line:?}: {verdict}");
});
