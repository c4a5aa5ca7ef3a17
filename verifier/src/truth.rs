//! Ternary truthfulness reward (TruthRL, Wei et al. 2025, "TruthRL: Incentivizing Truthful LLMs via
//! Reinforcement Learning"): +1 when the answer matches an accepted answer, 0 when the response
//! abstains, -1 otherwise. The binary baseline gives +1 / -1 (abstaining is as bad as being wrong).
//!
//! Matching is SQuAD-style: lower-case, drop punctuation and articles, collapse spaces; then exact
//! match, token-F1 above a threshold, or containment of an accepted answer in the response.
//! A judge (any OpenAI-compatible chat endpoint) can decide what string matching cannot; it is off
//! by default.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::verdict::{ErrorKind, Outcome, Verdict};

mod judge;
pub use judge::{HttpJudge, Judge, JudgeConfig, JudgeLabel};

/// Reward scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RewardMode {
    /// +1 correct, 0 abstained, -1 wrong.
    #[default]
    Ternary,
    /// +1 correct, -1 otherwise (the baseline TruthRL compares with).
    Binary,
}

/// How an extracted answer is matched against the accepted answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// Normalised exact match.
    #[default]
    Exact,
    /// Token F1 at least `f1_threshold` (exact matches always pass).
    F1,
    /// An accepted answer appears, as whole tokens, inside the extracted answer.
    Contains,
}

/// Phrases that mean "I do not know" (case-insensitive regexes).
pub const DEFAULT_ABSTENTIONS: &[&str] = &[
    r"\bi (?:do not|don't|dont) know\b",
    r"\bi(?:'m| am) not (?:sure|certain)\b",
    r"\bi(?:'m| am) unsure\b",
    r"\bcannot be determined\b",
    r"\bcan(?:not|'t) (?:answer|determine|say|tell|be sure)\b",
    r"\bunable to (?:answer|determine|say|find|verify)\b",
    r"\bi have no (?:idea|information|way of knowing)\b",
    r"\bno (?:reliable )?information (?:is )?available\b",
    r"\bi (?:do not|don't) have (?:enough |reliable |that |the )?information\b",
    r"\bnot enough information\b",
    r"\bunknown\b",
    r"\bi abstain\b",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TruthConfig {
    pub mode: RewardMode,
    pub match_mode: MatchMode,
    pub f1_threshold: f32,
    /// Abstention regexes (case-insensitive); empty means [`DEFAULT_ABSTENTIONS`].
    pub abstention_patterns: Vec<String>,
    /// An answer that is itself an abstention (e.g. the prompt asked for "I don't know" when unsure).
    pub abstention_answer: Option<String>,
    /// Ask a judge when string matching finds no match (off by default). `rlvr-verifier check` takes it
    /// from its own flags ([`crate::check::Policy`]) and refuses a request that names one.
    pub judge: Option<JudgeConfig>,
}

impl Default for TruthConfig {
    fn default() -> Self {
        TruthConfig {
            mode: RewardMode::Ternary,
            match_mode: MatchMode::Exact,
            f1_threshold: 0.8,
            abstention_patterns: Vec::new(),
            abstention_answer: Some("I don't know".into()),
            judge: None,
        }
    }
}

static ARTICLES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b(?:a|an|the)\b").expect("static regex"));
static ANSWER_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<answer>(.*?)</answer>").expect("static regex"));
static ANSWER_IS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?is)(?:final answer|the answer|answer)\s*(?:is|:)\s*:?\s*(.+)").expect("static regex")
});
static DEFAULT_ABSTENTION_RE: LazyLock<Vec<Regex>> = LazyLock::new(|| compile(DEFAULT_ABSTENTIONS));

fn compile<S: AsRef<str>>(patterns: &[S]) -> Vec<Regex> {
    patterns
        .iter()
        .filter_map(|p| RegexBuilder::new(p.as_ref()).case_insensitive(true).size_limit(1 << 20).build().ok())
        .collect()
}

/// SQuAD normalisation: lower case, no punctuation, no articles, single spaces.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower.chars().map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' }).collect();
    let no_articles = ARTICLES.replace_all(&no_punct, " ");
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// SQuAD token F1 between two normalised strings.
pub fn token_f1(pred: &str, gold: &str) -> f32 {
    let p: Vec<&str> = pred.split_whitespace().collect();
    let g: Vec<&str> = gold.split_whitespace().collect();
    if p.is_empty() || g.is_empty() {
        return if p == g { 1.0 } else { 0.0 };
    }
    let mut remaining = g.clone();
    let mut common = 0usize;
    for t in &p {
        if let Some(k) = remaining.iter().position(|x| x == t) {
            remaining.swap_remove(k);
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f32 / p.len() as f32;
    let recall = common as f32 / g.len() as f32;
    2.0 * precision * recall / (precision + recall)
}

/// The answer a response commits to: `<answer>…</answer>`, a `\boxed{}`, "the answer is …", else all of it.
pub fn extract_answer(response: &str) -> String {
    if let Some(c) = ANSWER_TAG.captures_iter(response).last().and_then(|c| c.get(1)) {
        return c.as_str().trim().to_string();
    }
    if let Some(start) = response.rfind("\\boxed{") {
        let rest = &response[start + 7..];
        let mut depth = 1usize;
        for (i, ch) in rest.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return rest[..i].trim().to_string();
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(c) = ANSWER_IS.captures_iter(response).last().and_then(|c| c.get(1)) {
        let tail = c.as_str();
        let tail = tail.split("\n\n").next().unwrap_or(tail);
        return tail.trim().trim_end_matches('.').to_string();
    }
    response.trim().to_string()
}

fn matches_accepted(answer: &str, accepted: &[String], cfg: &TruthConfig) -> Option<String> {
    let a = normalize_answer(answer);
    for gold in accepted {
        let g = normalize_answer(gold);
        if g.is_empty() {
            continue;
        }
        let ok = match cfg.match_mode {
            MatchMode::Exact => a == g,
            MatchMode::F1 => a == g || token_f1(&a, &g) >= cfg.f1_threshold,
            MatchMode::Contains => a == g || format!(" {a} ").contains(&format!(" {g} ")),
        };
        if ok {
            return Some(gold.clone());
        }
    }
    None
}

/// Does the response abstain?
pub fn abstains(response: &str, answer: &str, cfg: &TruthConfig) -> bool {
    if let Some(explicit) = &cfg.abstention_answer
        && !normalize_answer(explicit).is_empty()
        && normalize_answer(answer) == normalize_answer(explicit)
    {
        return true;
    }
    let custom;
    let patterns: &[Regex] = if cfg.abstention_patterns.is_empty() {
        &DEFAULT_ABSTENTION_RE
    } else {
        custom = compile(&cfg.abstention_patterns);
        &custom
    };
    // Abstention is judged on the committed answer when there is one, else on the whole response.
    patterns.iter().any(|p| p.is_match(answer)) || (answer == response.trim() && patterns.iter().any(|p| p.is_match(response)))
}

fn reward_for(outcome: Outcome, mode: RewardMode) -> f32 {
    match (outcome, mode) {
        (Outcome::Correct, _) => 1.0,
        (Outcome::Abstained, RewardMode::Ternary) => 0.0,
        _ => -1.0,
    }
}

/// Score a response against its accepted answers, with the judge if configured.
pub fn verify(response: &str, accepted: &[String], cfg: &TruthConfig) -> Verdict {
    verify_with_judge(response, accepted, cfg, None, None)
}

/// As [`verify`], with an explicit judge (tests pass a fake) and the question for it.
pub fn verify_with_judge(
    response: &str,
    accepted: &[String],
    cfg: &TruthConfig,
    judge: Option<&dyn Judge>,
    question: Option<&str>,
) -> Verdict {
    if accepted.iter().all(|a| normalize_answer(a).is_empty()) {
        return Verdict::error(ErrorKind::BadGroundTruth, "no accepted answer");
    }
    let answer = extract_answer(response);
    let mut details = serde_json::json!({ "extracted": answer.chars().take(500).collect::<String>() });
    let outcome = if let Some(m) = matches_accepted(&answer, accepted, cfg) {
        details["matched"] = serde_json::Value::String(m);
        Outcome::Correct
    } else if abstains(response, &answer, cfg) {
        Outcome::Abstained
    } else {
        let http;
        let judge: Option<&dyn Judge> = match (judge, &cfg.judge) {
            (Some(j), _) => Some(j),
            (None, Some(jc)) => {
                http = HttpJudge::new(jc.clone());
                Some(&http)
            }
            (None, None) => None,
        };
        match judge {
            None => Outcome::Incorrect,
            Some(j) => match j.judge(question.unwrap_or(""), response, accepted) {
                Ok(label) => {
                    details["judge"] = serde_json::json!(format!("{label:?}"));
                    match label {
                        JudgeLabel::Correct => Outcome::Correct,
                        JudgeLabel::NotAttempted => Outcome::Abstained,
                        JudgeLabel::Incorrect => Outcome::Incorrect,
                    }
                }
                Err(e) => return Verdict::error(ErrorKind::Judge, e),
            },
        }
    };
    Verdict::new(reward_for(outcome, cfg.mode), outcome).with_details(details)
}

/// Accuracy, abstention and hallucination rates over a set of verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TruthMetrics {
    pub total: usize,
    pub correct: usize,
    pub abstained: usize,
    pub incorrect: usize,
}

impl TruthMetrics {
    pub fn add(&mut self, v: &Verdict) {
        self.total += 1;
        match v.outcome {
            Outcome::Correct => self.correct += 1,
            Outcome::Abstained => self.abstained += 1,
            _ => self.incorrect += 1,
        }
    }
    fn rate(&self, n: usize) -> f64 {
        if self.total == 0 { 0.0 } else { n as f64 / self.total as f64 }
    }
    pub fn accuracy(&self) -> f64 {
        self.rate(self.correct)
    }
    pub fn abstention_rate(&self) -> f64 {
        self.rate(self.abstained)
    }
    pub fn hallucination_rate(&self) -> f64 {
        self.rate(self.incorrect)
    }
    /// Truthfulness = accuracy − hallucination rate (TruthRL's headline metric).
    pub fn truthfulness(&self) -> f64 {
        self.accuracy() - self.hallucination_rate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ternary_outcomes() {
        let cfg = TruthConfig::default();
        let a = acc(&["Paris"]);
        let v = verify("The answer is Paris.", &a, &cfg);
        assert_eq!((v.outcome, v.reward), (Outcome::Correct, 1.0));
        let v = verify("I don't know.", &a, &cfg);
        assert_eq!((v.outcome, v.reward), (Outcome::Abstained, 0.0));
        let v = verify("<answer>I don't know</answer>", &a, &cfg);
        assert_eq!((v.outcome, v.reward), (Outcome::Abstained, 0.0));
        let v = verify("The answer is Lyon.", &a, &cfg);
        assert_eq!((v.outcome, v.reward), (Outcome::Incorrect, -1.0));
    }

    #[test]
    fn binary_baseline_punishes_abstention() {
        let cfg = TruthConfig { mode: RewardMode::Binary, ..TruthConfig::default() };
        let v = verify("I'm not sure.", &acc(&["Paris"]), &cfg);
        assert_eq!((v.outcome, v.reward), (Outcome::Abstained, -1.0));
        let v = verify("Paris", &acc(&["Paris"]), &cfg);
        assert_eq!(v.reward, 1.0);
    }

    #[test]
    fn squad_normalisation_and_modes() {
        assert_eq!(normalize_answer("The  Eiffel Tower!"), "eiffel tower");
        let exact = TruthConfig::default();
        assert!(verify("the eiffel tower", &acc(&["Eiffel Tower"]), &exact).is_correct());
        assert!(!verify("It is the Eiffel Tower in Paris", &acc(&["Eiffel Tower"]), &exact).is_correct());
        let contains = TruthConfig { match_mode: MatchMode::Contains, ..TruthConfig::default() };
        assert!(verify("It is the Eiffel Tower in Paris", &acc(&["Eiffel Tower"]), &contains).is_correct());
        let f1 = TruthConfig { match_mode: MatchMode::F1, f1_threshold: 0.6, ..TruthConfig::default() };
        assert!(verify("Eiffel Tower Paris", &acc(&["Eiffel Tower"]), &f1).is_correct());
        assert!((token_f1("a b c", "a b") - 0.8).abs() < 1e-6);
    }

    #[test]
    fn any_alias_counts() {
        let v = verify("Answer: JFK", &acc(&["John F. Kennedy", "JFK"]), &TruthConfig::default());
        assert!(v.is_correct());
    }

    #[test]
    fn metrics() {
        let cfg = TruthConfig::default();
        let a = acc(&["4"]);
        let mut m = TruthMetrics::default();
        for r in ["4", "4", "I don't know", "5"] {
            m.add(&verify(r, &a, &cfg));
        }
        assert_eq!(m.accuracy(), 0.5);
        assert_eq!(m.abstention_rate(), 0.25);
        assert_eq!(m.hallucination_rate(), 0.25);
        assert_eq!(m.truthfulness(), 0.25);
    }

    struct FakeJudge(JudgeLabel);
    impl Judge for FakeJudge {
        fn judge(&self, _: &str, _: &str, _: &[String]) -> Result<JudgeLabel, String> {
            Ok(self.0)
        }
    }

    #[test]
    fn judge_decides_when_strings_do_not() {
        let cfg = TruthConfig::default();
        let j = FakeJudge(JudgeLabel::Correct);
        let v = verify_with_judge("It was JFK's successor, LBJ", &acc(&["Lyndon B. Johnson"]), &cfg, Some(&j), Some("q"));
        assert!(v.is_correct());
    }
}
