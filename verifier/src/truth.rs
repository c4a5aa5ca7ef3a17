//! Ternary truthfulness reward (TruthRL, Wei et al. 2025, "TruthRL: Incentivizing Truthful LLMs via
//! Reinforcement Learning"): +1 when the answer matches an accepted answer, 0 when the response
//! abstains, -1 otherwise. The binary baseline gives +1 / -1 (abstaining is as bad as being wrong).
//!
//! # Default matching ([`MatchMode::Alias`])
//! 1. The answer: the last `<answer>…</answer>`, else the last `\boxed{…}`, else what follows the last
//!    "the answer is" / "answer:" (up to a blank line), else the whole response when it is at most
//!    [`MAX_BARE_WORDS`] words, else its first sentence (a chatty model leads with its answer).
//! 2. Normalisation (both sides): numbers first (`1,000` → `1000`, `3.50` → `3.5`, `3.0` → `3`, and
//!    the words zero to twenty and the tens → digits), then SQuAD's: lower case, punctuation to
//!    spaces, articles dropped, spaces collapsed.
//! 3. A match: the normalised answer equals an accepted answer (any alias), or contains one as whole
//!    words ("Paris is the capital of France." holds "paris"), unless the answer hedges or negates:
//!    containment never counts when it holds `or`, `either`, `nor`, `not`, `no`, `never` or a `n't`
//!    ("Paris or Lyon", "it is not Paris"). Numbers match as whole tokens (`12` is not in `123`).
//! 4. No match: an abstention ("I don't know", [`DEFAULT_ABSTENTIONS`] or the configured patterns,
//!    compiled once per pattern list; one that does not compile is a config error) scores 0,
//!    anything else -1.
//!
//! `exact` (equality only), `f1` (SQuAD token F1 above a threshold) and `contains` (containment with
//! no hedge guard) are the other modes. A judge (any OpenAI-compatible chat endpoint) can decide what
//! string matching cannot; it is off by default.

use std::sync::{Arc, LazyLock, Mutex};

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
    /// Normalised equality, or an accepted answer inside the answer as whole words when the answer
    /// neither hedges nor negates (the module documentation has the rules).
    #[default]
    Alias,
    /// Normalised exact match.
    Exact,
    /// Token F1 at least `f1_threshold` (exact matches always pass).
    F1,
    /// An accepted answer appears, as whole tokens, inside the extracted answer (no hedge guard).
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
            match_mode: MatchMode::Alias,
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
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?").expect("static regex"));
static SENTENCE_END: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[.!?](?:\s|$)|\n").expect("static regex"));

/// A response without an answer marker is its own answer up to this many words; past it, its first
/// sentence is.
pub const MAX_BARE_WORDS: usize = 40;

/// Words that make containment meaningless: a hedge ("Paris or Lyon") or a negation ("not Paris").
const HEDGES: &[&str] = &["or", "either", "nor", "neither", "not", "no", "never", "t", "cannot"];

const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"), ("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"), ("five", "5"), ("six", "6"),
    ("seven", "7"), ("eight", "8"), ("nine", "9"), ("ten", "10"), ("eleven", "11"), ("twelve", "12"),
    ("thirteen", "13"), ("fourteen", "14"), ("fifteen", "15"), ("sixteen", "16"), ("seventeen", "17"),
    ("eighteen", "18"), ("nineteen", "19"), ("twenty", "20"), ("thirty", "30"), ("forty", "40"),
    ("fifty", "50"), ("sixty", "60"), ("seventy", "70"), ("eighty", "80"), ("ninety", "90"),
];

fn compile(patterns: &[impl AsRef<str>]) -> Result<Vec<Regex>, String> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| {
            RegexBuilder::new(p.as_ref())
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("`abstention_patterns[{i}]` ({:?}) does not compile: {e}", p.as_ref()))
        })
        .collect()
}

static DEFAULT_ABSTENTION_RE: LazyLock<Arc<Vec<Regex>>> =
    LazyLock::new(|| Arc::new(compile(DEFAULT_ABSTENTIONS).expect("the default abstention patterns compile")));

/// The configured abstention patterns, compiled once per distinct list (a small cache: a run uses
/// one or a few lists).
fn abstention_patterns(cfg: &TruthConfig) -> Result<Arc<Vec<Regex>>, String> {
    type Cache = Vec<(Vec<String>, Result<Arc<Vec<Regex>>, String>)>;
    static CACHE: Mutex<Cache> = Mutex::new(Vec::new());
    if cfg.abstention_patterns.is_empty() {
        return Ok(DEFAULT_ABSTENTION_RE.clone());
    }
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, compiled)) = cache.iter().find(|(k, _)| *k == cfg.abstention_patterns) {
        return compiled.clone();
    }
    let compiled = compile(&cfg.abstention_patterns).map(Arc::new);
    if cache.len() >= 16 {
        drop(cache.remove(0));
    }
    cache.push((cfg.abstention_patterns.clone(), compiled.clone()));
    compiled
}

impl TruthConfig {
    /// Refuse a configuration that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        abstention_patterns(self).map(|_| ())?;
        if !(0.0..=1.0).contains(&self.f1_threshold) {
            return Err(format!("`f1_threshold` is {}: it must lie in [0, 1]", self.f1_threshold));
        }
        Ok(())
    }
}

/// Numbers in one written form: digit-group commas dropped, trailing decimal zeros dropped, and the
/// words zero to twenty and the tens as digits.
fn canonical_numbers(lower: &str) -> String {
    let digits = NUMBER.replace_all(lower, |c: &regex::Captures<'_>| {
        let n = c[0].replace(',', "");
        match n.split_once('.') {
            Some((int, frac)) => {
                let frac = frac.trim_end_matches('0');
                if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") }
            }
            None => n,
        }
    });
    let mut out = String::with_capacity(digits.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match NUMBER_WORDS.iter().find(|(w, _)| *w == word.as_str()) {
            Some((_, d)) => out.push_str(d),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in digits.chars() {
        if c.is_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Normalisation: numbers in one form ([`canonical_numbers`]), then SQuAD's: lower case, no
/// punctuation, no articles, single spaces.
pub fn normalize_answer(s: &str) -> String {
    let lower = canonical_numbers(&s.to_lowercase());
    let no_punct: String = lower.chars().map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' }).collect();
    let no_articles = ARTICLES.replace_all(&no_punct, " ");
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `gold` as whole tokens inside `answer` (both normalised).
fn contains_tokens(answer: &str, gold: &str) -> bool {
    format!(" {answer} ").contains(&format!(" {gold} "))
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
    let response = response.trim();
    if response.split_whitespace().count() <= MAX_BARE_WORDS {
        return response.to_string();
    }
    let first = SENTENCE_END.find(response).map_or(response, |m| &response[..m.start()]);
    first.trim().to_string()
}

fn matches_accepted(answer: &str, accepted: &[String], cfg: &TruthConfig) -> Option<String> {
    let a = normalize_answer(answer);
    for gold in accepted {
        let g = normalize_answer(gold);
        if g.is_empty() {
            continue;
        }
        let ok = match cfg.match_mode {
            MatchMode::Alias => {
                a == g || (!a.split(' ').any(|t| HEDGES.contains(&t)) && contains_tokens(&a, &g))
            }
            MatchMode::Exact => a == g,
            MatchMode::F1 => a == g || token_f1(&a, &g) >= cfg.f1_threshold,
            MatchMode::Contains => a == g || contains_tokens(&a, &g),
        };
        if ok {
            return Some(gold.clone());
        }
    }
    None
}

/// Does the response abstain? `Err` when the configured patterns do not compile.
pub fn abstains(response: &str, answer: &str, cfg: &TruthConfig) -> Result<bool, String> {
    if let Some(explicit) = &cfg.abstention_answer
        && !normalize_answer(explicit).is_empty()
        && normalize_answer(answer) == normalize_answer(explicit)
    {
        return Ok(true);
    }
    let patterns = abstention_patterns(cfg)?;
    // Abstention is judged on the committed answer when there is one, else on the whole response.
    Ok(patterns.iter().any(|p| p.is_match(answer))
        || (answer == response.trim() && patterns.iter().any(|p| p.is_match(response))))
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
    if let Err(e) = cfg.validate() {
        return Verdict::error(ErrorKind::BadRequest, e);
    }
    if accepted.iter().all(|a| normalize_answer(a).is_empty()) {
        return Verdict::error(ErrorKind::BadGroundTruth, "no accepted answer");
    }
    let answer = extract_answer(response);
    let mut details = serde_json::json!({ "extracted": answer.chars().take(500).collect::<String>() });
    let outcome = if let Some(m) = matches_accepted(&answer, accepted, cfg) {
        details["matched"] = serde_json::Value::String(m);
        Outcome::Correct
    } else if abstains(response, &answer, cfg).unwrap_or(false) {
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
        let exact = TruthConfig { match_mode: MatchMode::Exact, ..TruthConfig::default() };
        assert!(verify("the eiffel tower", &acc(&["Eiffel Tower"]), &exact).is_correct());
        assert!(!verify("It is the Eiffel Tower in Paris", &acc(&["Eiffel Tower"]), &exact).is_correct());
        let contains = TruthConfig { match_mode: MatchMode::Contains, ..TruthConfig::default() };
        assert!(verify("It is the Eiffel Tower in Paris", &acc(&["Eiffel Tower"]), &contains).is_correct());
        let f1 = TruthConfig { match_mode: MatchMode::F1, f1_threshold: 0.6, ..TruthConfig::default() };
        assert!(verify("Eiffel Tower Paris", &acc(&["Eiffel Tower"]), &f1).is_correct());
        assert!((token_f1("a b c", "a b") - 0.8).abs() < 1e-6);
    }

    #[test]
    fn correct_sentences_are_correct() {
        let cfg = TruthConfig::default();
        let paris = acc(&["Paris"]);
        for r in ["Paris is the capital of France.", "It's Paris.", "The capital of France is Paris.", "paris"] {
            let v = verify(r, &paris, &cfg);
            assert_eq!((v.outcome, v.reward), (Outcome::Correct, 1.0), "{r}");
        }
        // Hedges and negations earn nothing by containment.
        for r in ["Paris or Lyon.", "Either Paris or Marseille.", "It is not Paris.", "It isn't Paris, it's Lyon.", "Never Paris."] {
            let v = verify(r, &paris, &cfg);
            assert_eq!(v.outcome, Outcome::Incorrect, "{r}");
        }
        // Whole words only.
        assert_eq!(verify("Parisian cafés", &paris, &cfg).outcome, Outcome::Incorrect);
        // A long response without a marker is judged on its first sentence.
        let long = format!("Lyon is my answer. {}", "Paris is lovely in spring and I have been there many times. ".repeat(4));
        assert_eq!(verify(&long, &paris, &cfg).outcome, Outcome::Incorrect);
        let long = format!("Paris, of course. {}", "Lyon is lovely in spring and I have been there many times. ".repeat(4));
        assert_eq!(verify(&long, &paris, &cfg).outcome, Outcome::Correct);
        // Exact mode keeps the old meaning.
        let exact = TruthConfig { match_mode: MatchMode::Exact, ..TruthConfig::default() };
        assert_eq!(verify("Paris is the capital of France.", &paris, &exact).outcome, Outcome::Incorrect);
    }

    #[test]
    fn numbers_in_any_written_form() {
        let cfg = TruthConfig::default();
        for (r, gold) in [("1,000", "1000"), ("It has 3.50 metres.", "3.5"), ("three", "3"), ("There were twelve.", "12"), ("7.0", "7")] {
            assert!(verify(r, &acc(&[gold]), &cfg).is_correct(), "{r} vs {gold}");
        }
        assert!(!verify("123", &acc(&["12"]), &cfg).is_correct());
        assert!(!verify("It was 1,200 people.", &acc(&["200"]), &cfg).is_correct());
        assert_eq!(normalize_answer("The 1,000.50 Club!"), "1000 5 club");
    }

    #[test]
    fn abstention_patterns_are_config() {
        let bad = TruthConfig { abstention_patterns: vec!["fine".into(), "(unclosed".into()], ..TruthConfig::default() };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("abstention_patterns[1]"), "{err}");
        let v = verify("whatever", &acc(&["Paris"]), &bad);
        assert_eq!(v.outcome, Outcome::Error(ErrorKind::BadRequest));
        let custom = TruthConfig { abstention_patterns: vec![r"\bno clue\b".into()], ..TruthConfig::default() };
        assert_eq!(verify("No clue, sorry", &acc(&["Paris"]), &custom).outcome, Outcome::Abstained);
        // Compiled once per list.
        let (a, b) = (abstention_patterns(&custom).unwrap(), abstention_patterns(&custom.clone()).unwrap());
        assert!(Arc::ptr_eq(&a, &b));
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
