//! Hostile input: nothing may panic, and every check ends within its budget.
//!
//! The bound: a math check stops after `time_limit_ms` (default 1000 ms) plus at most 256 budget steps,
//! or after `max_steps` (default 2,000,000) parser/evaluator steps, whichever comes first; extraction
//! is linear in the response (one brace-matching pass, `regex` crate automata, binary searches).
//! The tests below assert the wall-clock side with a wide margin (3x) so that they do not flake on a
//! loaded machine; the bench reports real latencies.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use rlvr_verifier::check::check_line;
use rlvr_verifier::math::{MathConfig, verify};
use rlvr_verifier::truth::{self, TruthConfig};
use rlvr_verifier::verdict::Outcome;

fn bounded(response: &str, gold: &str) -> Outcome {
    let cfg = MathConfig::default();
    let t = Instant::now();
    let v = verify(response, gold, &cfg);
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(cfg.time_limit_ms * 3),
        "check took {took:?} (> 3x the {} ms budget)",
        cfg.time_limit_ms
    );
    v.outcome
}

#[test]
fn one_megabyte_of_nested_braces() {
    let n = 512 * 1024;
    let s = format!("\\boxed{{{}{}}}", "{".repeat(n), "}".repeat(n));
    assert_eq!(s.len(), 2 * n + 8);
    let o = bounded(&s, "1");
    assert!(matches!(o, Outcome::Incorrect | Outcome::NoAnswer | Outcome::Timeout), "{o:?}");
    // Unbalanced: only openers.
    let s = format!("\\boxed{{{}", "{".repeat(1 << 20));
    bounded(&s, "1");
    let s = "$".repeat(1 << 20);
    bounded(&s, "1");
    let s = "\\(".repeat(1 << 19);
    bounded(&s, "1");
}

#[test]
fn towers_of_powers() {
    for s in ["\\boxed{10^{10^{10^{10}}}}", "$10^10^10^10$", "\\boxed{2^{2^{2^{2^{2^{2^{2}}}}}}}", "\\boxed{(10^{100})!}", "\\boxed{1000000!}"] {
        let o = bounded(s, "1");
        assert!(matches!(o, Outcome::Incorrect | Outcome::Timeout), "{s}: {o:?}");
    }
    // Equal towers still compare (structurally) without being computed.
    assert_eq!(bounded("\\boxed{10^{10^{10^{10}}}}", "10^{10^{10^{10}}}"), Outcome::Correct);
}

#[test]
fn ten_thousand_term_sum() {
    let sum = vec!["1"; 10_000].join("+");
    assert_eq!(bounded(&format!("\\boxed{{{sum}}}"), "10000"), Outcome::Correct);
    assert_eq!(bounded(&format!("\\boxed{{{sum}}}"), "10001"), Outcome::Incorrect);
    let sum = vec!["x"; 1_000].join("+");
    let o = bounded(&format!("\\boxed{{{sum}}}"), "1000x");
    assert_eq!(o, Outcome::Correct);
}

#[test]
fn deep_nesting() {
    let frac = (0..2_000).fold("1".to_string(), |acc, _| format!("\\frac{{1}}{{{acc}}}"));
    bounded(&format!("\\boxed{{{frac}}}"), "1");
    let parens = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    bounded(&format!("${parens}$"), "1");
    let sqrt = (0..5_000).fold("2".to_string(), |acc, _| format!("\\sqrt{{{acc}}}"));
    bounded(&format!("\\boxed{{{sqrt}}}"), "1");
}

#[test]
fn huge_numbers() {
    let digits = "9".repeat(100_000);
    bounded(&format!("\\boxed{{{digits}}}"), "1");
    bounded(&format!("The answer is {digits}"), &digits);
    bounded("\\boxed{0.000000000000000000000000000000000000000001}", "10^{-42}");
}

#[test]
fn malformed_check_lines() {
    for line in ["", "{", "[]", "null", "{\"kind\":\"math\"}", "{\"kind\":\"poetry\",\"response\":\"x\",\"ground_truth\":\"y\"}", "{\"kind\":\"truth\",\"response\":\"x\",\"ground_truth\":[]}"] {
        let v = check_line(line);
        assert_eq!(v["outcome"], "error", "{line}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn math_never_panics_on_latexish_text(s in r"[\\{}()\[\]$^_0-9a-z+\-*/=<>,.!| %&]{0,200}") {
        bounded(&s, "1");
        bounded("\\boxed{2}", &s);
        bounded(&s, &s);
    }

    #[test]
    fn math_never_panics_on_command_soup(parts in prop::collection::vec(prop::sample::select(vec![
        "\\frac", "\\sqrt", "{", "}", "(", ")", "[", "]", "^", "_", "\\pm", "\\boxed", "$", "\\left(", "\\right)",
        "\\begin{pmatrix}", "\\end{pmatrix}", "&", "\\\\", "x", "2", "0", "-", "=", "\\leq", "\\infty", "\\cup", ",",
        "\\text{", "%", "!", "\\sin", "\\log_", "|", "\\{", "\\}", ".", "10^", "e", "\\pi", "i", ":", ";",
    ]), 0..60)) {
        let s = parts.concat();
        bounded(&s, "1");
        bounded(&format!("\\boxed{{{s}}}"), &s);
    }

    #[test]
    fn truth_never_panics(s in ".{0,300}", g in ".{0,40}") {
        let _ = truth::verify(&s, &[g], &TruthConfig::default());
    }

    #[test]
    fn check_line_never_panics(s in ".{0,300}") {
        let v = check_line(&s);
        prop_assert!(v.get("outcome").is_some());
    }

    #[test]
    fn integers_compare_exactly(a in -1_000_000_000i64..1_000_000_000, b in -1_000_000_000i64..1_000_000_000) {
        let o = bounded(&format!("\\boxed{{{a}}}"), &b.to_string());
        prop_assert_eq!(o == Outcome::Correct, a == b);
    }

    #[test]
    fn fractions_compare_by_value(n in 1i64..10_000, d in 1i64..10_000, k in 1i64..50) {
        let o = bounded(&format!("\\boxed{{\\frac{{{}}}{{{}}}}}", n * k, d * k), &format!("\\frac{{{n}}}{{{d}}}"));
        prop_assert_eq!(o, Outcome::Correct);
    }
}
