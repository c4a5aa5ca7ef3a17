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

/// Chains of every operator and bracket kind, `depth` deep: what a degenerate policy prints.
pub fn deep_chains(depth: usize) -> Vec<(String, String)> {
    let rep = |s: &str| s.repeat(depth);
    let chain = |unit: &str, op: &str| vec![unit; depth].join(op);
    let wrap = |open: &str, inner: &str, close: &str| format!("{}{inner}{}", open.repeat(depth), close.repeat(depth));
    let mut out = vec![
        ("factorial".to_string(), format!("7{}", rep("!"))),
        ("power".into(), chain("y", "^")),
        ("braced power".into(), wrap("y^{", "y", "}")),
        ("double-star power".into(), chain("y", "**")),
        ("subscript".into(), chain("x", "_")),
        ("braced subscript".into(), wrap("x_{", "2", "}")),
        ("prime".into(), format!("f{}", rep("'"))),
        ("division".into(), chain("a", "/")),
        ("ratio".into(), chain("a", ":")),
        ("\\div".into(), chain("a", "\\div ")),
        ("product".into(), chain("a", "\\cdot ")),
        ("implicit product".into(), chain("a", " ")),
        ("difference".into(), chain("a", "-")),
        ("plus-minus".into(), chain("a", "\\pm ")),
        ("union".into(), chain("A", "\\cup ")),
        ("intersection".into(), chain("A", "\\cap ")),
        ("set minus".into(), chain("A", "\\setminus ")),
        ("equation chain".into(), chain("a", "=")),
        ("inequality chain".into(), chain("a", "<")),
        ("list".into(), chain("1", ",")),
        ("arrow".into(), chain("a", "\\to ")),
        ("negation".into(), format!("{}7", rep("-"))),
        ("unary plus".into(), format!("{}7", rep("+"))),
        ("prefix plus-minus".into(), format!("{}7", rep("\\pm "))),
        ("parentheses".into(), wrap("(", "2", ")")),
        ("brackets".into(), wrap("[", "2", "]")),
        ("braces".into(), wrap("{", "2", "}")),
        ("escaped braces".into(), wrap("\\{", "2", "\\}")),
        ("left-right".into(), wrap("\\left(", "2", "\\right)")),
        ("absolute value".into(), wrap("|", "2", "|")),
        ("floor".into(), wrap("\\lfloor ", "2", "\\rfloor")),
        ("angle".into(), wrap("\\langle ", "2", "\\rangle")),
        ("fraction".into(), wrap("\\frac{1}{", "2", "}")),
        ("dfrac".into(), wrap("\\dfrac{", "2", "}{2}")),
        ("sqrt".into(), wrap("\\sqrt{", "2", "}")),
        ("nth root".into(), wrap("\\sqrt[3]{", "2", "}")),
        ("text".into(), wrap("\\text{", "2", "}")),
        ("mathrm".into(), wrap("\\mathrm{", "2", "}")),
        ("boxed".into(), wrap("\\boxed{", "2", "}")),
        ("sin".into(), wrap("\\sin(", "2", ")")),
        ("log".into(), format!("{}x", rep("\\log "))),
        ("exp".into(), wrap("e^{", "2", "}")),
        ("percent".into(), format!("7{}", rep("\\%"))),
        ("degrees".into(), format!("7{}", rep("^\\circ"))),
        ("mixed postfix and power".into(), chain("7!", "^")),
        ("begin-end".into(), wrap("\\begin{pmatrix}", "2", "\\end{pmatrix}")),
    ];
    out.push(("everything".into(), out.iter().map(|(_, s)| s.chars().take(depth).collect::<String>()).collect::<Vec<_>>().join("+")));
    out
}

/// Runs `f` on a thread with the 2 MiB stack a Tokio blocking or plain spawned thread gets: a
/// recursion the input controls would overflow it and abort the whole process.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(2 << 20).spawn(f).expect("spawn").join().expect("no panic")
}

#[test]
fn deep_chains_of_every_operator_give_verdicts() {
    for depth in [5_000, 30_000] {
        for (name, s) in deep_chains(depth) {
            println!("{name} x {depth}");
            let (boxed, inline, plain) = (format!("\\boxed{{{s}}}"), format!("${s}$"), format!("The answer is {s}"));
            let s2 = s.clone();
            let outcomes = on_small_stack(move || {
                let cfg = MathConfig::default();
                [
                    verify(&boxed, "1", &cfg).outcome,
                    verify(&inline, "1", &cfg).outcome,
                    verify(&plain, "1", &cfg).outcome,
                    verify("\\boxed{1}", &s2, &cfg).outcome,
                    verify(&boxed, &s2, &cfg).outcome,
                    truth::verify(&plain, &["1".to_string()], &TruthConfig::default()).outcome,
                ]
            });
            // One verdict each; as a response, never an error (a parse that gives up is a verdict). As
            // a ground truth it may be refused (`bad_ground_truth`): that is the dataset's to fix.
            let response_side = [outcomes[0], outcomes[1], outcomes[2], outcomes[5]];
            assert!(!response_side.iter().any(|o| matches!(o, Outcome::Error(_))), "{name} x {depth}: {outcomes:?}");
            assert!(!matches!(outcomes[5], Outcome::Error(_)), "{name} x {depth}: truth gave {:?}", outcomes[5]);
            if name != "list" {
                // (A list of ones is the set {1}, equal to 1.)
                assert_ne!(outcomes[0], Outcome::Correct, "{name} x {depth}: {outcomes:?}");
            }
        }
    }
}

/// The deep-chain corpus (every chain kind at 5k, 30k and 100k deep, as math responses, as math
/// ground truths and as truthfulness responses) through `rlvr-verifier check` in one batch: the
/// process exits 0 and writes one verdict per line, in order.
#[test]
fn deep_chain_corpus_through_check() {
    let mut lines = Vec::new();
    for depth in [5_000, 30_000, 100_000] {
        for (_, s) in deep_chains(depth) {
            lines.push(serde_json::json!({"kind": "math", "response": format!("\\boxed{{{s}}}"), "ground_truth": "1"}));
            lines.push(serde_json::json!({"kind": "math", "response": "\\boxed{1}", "ground_truth": s}));
            lines.push(serde_json::json!({"kind": "truth", "response": format!("The answer is {s}."), "ground_truth": ["1"]}));
        }
    }
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rlvr-verifier"))
        .args(["check", "--threads", "2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rlvr-verifier starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, input.as_bytes()));
    let out = child.wait_with_output().expect("rlvr-verifier ran");
    writer.join().expect("writer").expect("stdin written");
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let verdicts: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a verdict is JSON")).collect();
    assert_eq!(verdicts.len(), lines.len(), "one verdict per line");
    for (line, v) in lines.iter().zip(&verdicts) {
        assert!(v["outcome"].is_string(), "{v}");
        if line["ground_truth"] == "1" {
            assert_ne!(v["outcome"], "error", "a response gets a verdict, not an error: {v}");
        }
    }
    println!("{} deep-chain lines, {} verdicts", lines.len(), verdicts.len());
}
