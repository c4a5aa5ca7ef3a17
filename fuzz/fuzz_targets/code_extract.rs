//! The program extracted from a response (fenced blocks, `<think>` sections, unclosed fences): any
//! text gives a result, and what is extracted is a part of the response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rlvr_verifier::code::extract::{ExtractConfig, extract_code};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(code) = extract_code(text, &ExtractConfig::default()) {
        assert!(text.contains(code.as_str()), "extracted text that is not in the response");
    }
});
