//! The math path on arbitrary text, as a response and as a ground truth: extraction, normalisation,
//! the parser and the comparison must give a verdict (never panic, never overflow the stack).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rlvr_verifier::math::{MathConfig, verify};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let cfg = MathConfig { time_limit_ms: 200, max_steps: 200_000, ..MathConfig::default() };
    let _ = verify(text, "1", &cfg);
    let _ = verify(&format!("\\boxed{{{text}}}"), "x^2+1", &cfg);
    let _ = verify("\\boxed{1}", text, &cfg);
});
