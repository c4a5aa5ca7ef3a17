//! Reference solutions against gold answers on GSM8K and MATH-500, and the truthfulness reward on
//! SimpleQA. Needs `scripts/setup-data.sh` to have filled `data/`; without it the tests print a notice
//! and pass without checking (a fresh clone has no data).

use std::path::PathBuf;

use rlvr_verifier::math::{self, MathConfig};
use rlvr_verifier::truth::{self, TruthConfig, TruthMetrics};
use rlvr_verifier::verdict::Outcome;
use serde::Deserialize;

#[derive(Deserialize)]
struct Row {
    ground_truth: serde_json::Value,
    extra: serde_json::Value,
}

fn load(rel: &str) -> Option<Vec<Row>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("data").join(rel);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.lines().map(|l| serde_json::from_str(l).expect("data row parses")).collect()),
        // CI runs the setup first, so there a missing file is a failure, not a skip.
        Err(e) if std::env::var_os("CI").is_some() => panic!("{}: {e}; run scripts/setup-data.sh", path.display()),
        Err(_) => {
            println!("NOTICE: {} is missing; run scripts/setup-data.sh to enable this test", path.display());
            None
        }
    }
}

fn gold(r: &Row) -> String {
    r.ground_truth.as_str().unwrap_or_default().to_string()
}

/// Do two gold answers say the same thing? (Judged on the golds alone, both read as bare answers.)
fn coincide(a: &str, b: &str, cfg: &MathConfig) -> bool {
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    squash(a) == squash(b) || math::verify(a, b, &MathConfig { gold_extract: false, ..cfg.clone() }).is_correct()
}

fn reference_vs_gold(rows: &[Row], name: &str) {
    let cfg = MathConfig::default();
    let mut wrong = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let solution = r.extra["solution"].as_str().unwrap_or_default();
        let v = math::verify(solution, &gold(r), &cfg);
        if !v.is_correct() {
            wrong.push((i, gold(r), v.outcome, v.details.to_string()));
        }
    }
    for w in &wrong {
        println!("{name} reference {} not judged correct: gold {:?} -> {:?} {}", w.0, w.1, w.2, w.3);
    }
    assert!(wrong.is_empty(), "{name}: {} of {} reference solutions not judged correct", wrong.len(), rows.len());

    // Against the next problem's gold: incorrect unless the two golds coincide.
    let mut coincidences = 0;
    let mut bad = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let other = &rows[(i + 1) % rows.len()];
        let solution = r.extra["solution"].as_str().unwrap_or_default();
        let v = math::verify(solution, &gold(other), &cfg);
        let same = coincide(&gold(r), &gold(other), &cfg);
        coincidences += usize::from(same);
        if v.is_correct() != same {
            bad.push((i, gold(r), gold(other), v.outcome));
        }
    }
    for b in &bad {
        println!("{name} solution {} (gold {:?}) vs gold {:?}: {:?}", b.0, b.1, b.2, b.3);
    }
    println!("{name}: {} rows, {} shifted pairs whose golds coincide", rows.len(), coincidences);
    assert!(bad.is_empty(), "{name}: {} shifted pairs misjudged", bad.len());
}

#[test]
fn gsm8k_reference_solutions() {
    if let Some(rows) = load("gsm8k/test.jsonl") {
        assert_eq!(rows.len(), 1319);
        reference_vs_gold(&rows, "gsm8k");
    }
}

#[test]
fn math500_reference_solutions() {
    if let Some(rows) = load("math500/test.jsonl") {
        assert_eq!(rows.len(), 500);
        reference_vs_gold(&rows, "math500");
    }
}

#[test]
fn simpleqa_reward_distribution() {
    let Some(rows) = load("simpleqa/test.jsonl") else { return };
    assert_eq!(rows.len(), 4326);
    let cfg = TruthConfig::default();
    let binary = TruthConfig { mode: truth::RewardMode::Binary, ..TruthConfig::default() };
    let mut metrics = TruthMetrics::default();
    let mut binary_sum = 0.0f64;
    let mut ternary_sum = 0.0f64;
    let mut coincidences = 0;
    // A fixed set of responses: a third correct, a third abstaining, a third wrong (another row's answer).
    for (i, r) in rows.iter().enumerate() {
        let accepted: Vec<String> = serde_json::from_value(r.ground_truth.clone()).expect("list of answers");
        let response = match i % 3 {
            0 => format!("The answer is {}.", accepted[0]),
            1 => "I don't know.".to_string(),
            _ => {
                let other: Vec<String> = serde_json::from_value(rows[(i + 7) % rows.len()].ground_truth.clone()).unwrap();
                format!("The answer is {}.", other[0])
            }
        };
        let v = truth::verify(&response, &accepted, &cfg);
        let expected = match i % 3 {
            0 => Outcome::Correct,
            1 => Outcome::Abstained,
            _ => Outcome::Incorrect,
        };
        // A wrong answer may coincide with the right one: two questions with the same answer, or one
        // whose answer holds the other's as whole words ("1 May 1988" for "1988").
        if expected == Outcome::Incorrect && v.outcome == Outcome::Correct {
            let other: Vec<String> = serde_json::from_value(rows[(i + 7) % rows.len()].ground_truth.clone()).unwrap();
            let (o, a) = (truth::normalize_answer(&other[0]), truth::normalize_answer(&accepted[0]));
            assert!(format!(" {o} ").contains(&format!(" {a} ")), "row {i}: {o:?} scored as {a:?}");
            coincidences += 1;
        } else {
            assert_eq!(v.outcome, expected, "row {i}: {response:?} vs {accepted:?}");
        }
        let want_reward = match v.outcome {
            Outcome::Correct => 1.0,
            Outcome::Abstained => 0.0,
            _ => -1.0,
        };
        assert_eq!(v.reward, want_reward);
        ternary_sum += f64::from(v.reward);
        binary_sum += f64::from(truth::verify(&response, &accepted, &binary).reward);
        metrics.add(&v);
    }
    let n = rows.len() as f64;
    println!(
        "simpleqa: accuracy {:.3} abstention {:.3} hallucination {:.3} truthfulness {:.3}; mean reward ternary {:.3} binary {:.3}; {coincidences} wrong answers held the right one",
        metrics.accuracy(),
        metrics.abstention_rate(),
        metrics.hallucination_rate(),
        metrics.truthfulness(),
        ternary_sum / n,
        binary_sum / n
    );
    assert!((metrics.abstention_rate() - 1.0 / 3.0).abs() < 0.01);
    // Ternary mean = accuracy - hallucination; binary treats abstention as wrong.
    assert!((ternary_sum / n - metrics.truthfulness()).abs() < 1e-9);
    assert!((binary_sum / n - (metrics.accuracy() - (1.0 - metrics.accuracy()))).abs() < 1e-9);
}
