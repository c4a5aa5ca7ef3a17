//! Math answer verification: extract → normalise → parse → compare, under a budget.

pub mod equiv;
pub mod expr;
pub mod extract;
pub mod normalize;
pub mod parse;

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::budget::{Budget, Exhausted};
use crate::verdict::{ErrorKind, Outcome, Verdict};
pub use equiv::CompareConfig;
pub use expr::Expr;
pub use extract::ExtractConfig;
use extract::{Candidate, Piece};
use parse::ParseError;

/// Settings of a math check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MathConfig {
    pub extract: ExtractConfig,
    /// Decimal places used when a number is written with a decimal point.
    pub precision: u32,
    /// Variable names matter.
    pub strict: bool,
    /// Compare relations in the response with sets in the ground truth.
    pub allow_set_relation: bool,
    /// Extract the ground truth like a response (true), or read it as a bare answer first (false).
    pub gold_extract: bool,
    /// Wall-clock budget of one check.
    pub time_limit_ms: u64,
    /// Work budget of one check (parser and evaluator steps).
    pub max_steps: u64,
    /// Only the last this-many bytes of a longer response are searched for the answer.
    pub max_response_bytes: usize,
}

impl Default for MathConfig {
    fn default() -> Self {
        MathConfig {
            extract: ExtractConfig::default(),
            precision: 6,
            strict: true,
            allow_set_relation: false,
            gold_extract: false,
            time_limit_ms: 1_000,
            max_steps: 2_000_000,
            max_response_bytes: 1 << 20,
        }
    }
}

impl MathConfig {
    fn compare(&self) -> CompareConfig {
        CompareConfig { precision: self.precision, strict: self.strict, allow_set_relation: self.allow_set_relation }
    }
}

/// What was read from one side: parsed answers and the raw text of the first candidate.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub exprs: Vec<Expr>,
    pub fallback: Option<String>,
}

impl Answer {
    pub fn is_empty(&self) -> bool {
        self.exprs.is_empty() && self.fallback.as_deref().is_none_or(|s| s.trim().is_empty())
    }
}

static EQ_SPLIT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"=").expect("static regex"));

/// When the whole fails to parse, try the part after the last `=` (`1 = \zzz = 0` → `0`).
fn last_equation_part(s: &str) -> Option<&str> {
    if s.contains(',') || s.contains(';') {
        return None;
    }
    let b = s.as_bytes();
    let cuts: Vec<usize> = EQ_SPLIT
        .find_iter(s)
        .map(|m| m.start())
        .filter(|&i| i == 0 || !matches!(b[i - 1], b'\\' | b'<' | b'>' | b'!'))
        .collect();
    if cuts.len() >= 2 { cuts.last().map(|&i| &s[i + 1..]) } else { None }
}

fn parse_latex_answer(raw: &str, percent: bool, budget: &Budget) -> Result<(Option<Expr>, String), Exhausted> {
    if raw.len() > parse::MAX_LEN * 4 {
        return Ok((None, String::new()));
    }
    let text = normalize::normalize_latex(&extract::unbox(raw));
    let (body, pct) = normalize::split_percent(&text);
    let percent = percent || pct;
    let parsed = match parse::parse_latex(body, budget) {
        Ok(e) => Some(e),
        Err(ParseError::Budget) => return Err(Exhausted),
        Err(_) => match last_equation_part(body) {
            Some(tail) => match parse::parse_latex(tail, budget) {
                Ok(e) => Some(e),
                Err(ParseError::Budget) => return Err(Exhausted),
                Err(_) => None,
            },
            None => None,
        },
    };
    let parsed = parsed.map(|e| if percent { Expr::Percent(Box::new(e)) } else { e });
    Ok((parsed, text))
}

static THOUSANDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-?[1-9]\d{0,2}(?:[ ,]\d{3})+(?:\.\d+)?$").expect("static regex"));

fn parse_number(text: &str, percent: bool) -> Option<Expr> {
    let cleaned = if THOUSANDS.is_match(text) { text.replace([',', ' '], "") } else { text.replace(',', ".") };
    let (neg, digits) = match cleaned.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, cleaned.as_str()),
    };
    let n = parse::number(digits).ok()?;
    let n = if neg { Expr::Neg(Box::new(n)) } else { n };
    Some(if percent { Expr::Percent(Box::new(n)) } else { n })
}

fn parse_candidate(c: &Candidate, budget: &Budget) -> Result<(Option<Expr>, String), Exhausted> {
    let mut exprs = Vec::new();
    let mut texts = Vec::new();
    for piece in &c.pieces {
        let (e, t) = match piece {
            Piece::Latex { text, percent } => parse_latex_answer(text, *percent, budget)?,
            Piece::Number { text, percent } => (parse_number(text, *percent), text.clone()),
            Piece::Arith(text) => {
                let t = text.replace('×', "*").replace('÷', "/");
                match parse::parse_plain(&t, budget) {
                    Ok(e) => (Some(e), text.clone()),
                    Err(ParseError::Budget) => return Err(Exhausted),
                    Err(_) => (None, text.clone()),
                }
            }
        };
        exprs.push(e);
        texts.push(t);
    }
    if exprs.len() > 1 && exprs.iter().all(Option::is_some) {
        let mut all = Vec::new();
        for e in exprs.into_iter().flatten() {
            match e {
                Expr::Set(items) => all.extend(items),
                other => all.push(other),
            }
        }
        return Ok((Some(Expr::Set(all)), texts.join(",")));
    }
    Ok((exprs.into_iter().next().flatten(), texts.into_iter().next().unwrap_or_default()))
}

/// The tail of `s` no longer than `max` bytes, cut at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Extract and parse the answer a response gives.
pub fn read_answer(text: &str, cfg: &MathConfig, budget: &Budget) -> Result<Answer, Exhausted> {
    let text = tail(text, cfg.max_response_bytes);
    let cands = extract::candidates(text, &cfg.extract, budget)?;
    let mut answer = Answer::default();
    for c in &cands {
        let (e, t) = parse_candidate(c, budget)?;
        if answer.fallback.is_none() && !t.trim().is_empty() {
            answer.fallback = Some(t.chars().take(parse::MAX_LEN).collect());
        }
        if let Some(e) = e {
            answer.exprs.push(e);
            break;
        }
    }
    Ok(answer)
}

/// Read a ground truth: as a bare answer first (datasets store `\frac{14}{3}`, `72`), else by extraction.
pub fn read_gold(text: &str, cfg: &MathConfig, budget: &Budget) -> Result<Answer, Exhausted> {
    if !cfg.gold_extract {
        let bare = text.trim();
        let unescaped = bare.replace("\\$", "");
        let looks_wrapped = unescaped.contains('$') || bare.contains("\\(") || bare.contains("\\[");
        if !looks_wrapped && !bare.is_empty() {
            let (e, t) = parse_latex_answer(bare, false, budget)?;
            if let Some(e) = e {
                return Ok(Answer { exprs: vec![e], fallback: Some(t) });
            }
        }
    }
    read_answer(text, cfg, budget)
}

/// Compare two read answers: any parsed pair equivalent, or the raw texts equal.
pub fn answers_match(gold: &Answer, pred: &Answer, cfg: &MathConfig, budget: &Budget) -> Result<bool, Exhausted> {
    let cmp = cfg.compare();
    for g in &gold.exprs {
        for p in &pred.exprs {
            if equiv::equivalent(g, p, &cmp, budget)? {
                return Ok(true);
            }
        }
    }
    if let (Some(g), Some(p)) = (&gold.fallback, &pred.fallback) {
        let (g, p) = (g.trim(), p.trim());
        if !g.is_empty() && g == p {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Judge a response against a ground-truth answer. Never panics; budget overruns are `Timeout`.
pub fn verify(response: &str, ground_truth: &str, cfg: &MathConfig) -> Verdict {
    let budget = Budget::new(Duration::from_millis(cfg.time_limit_ms), cfg.max_steps);
    let result = (|| -> Result<Verdict, Exhausted> {
        let gold = read_gold(ground_truth, cfg, &budget)?;
        if gold.is_empty() {
            return Ok(Verdict::error(ErrorKind::BadGroundTruth, "no answer could be read from the ground truth"));
        }
        let pred = read_answer(response, cfg, &budget)?;
        if pred.is_empty() {
            return Ok(Verdict::new(0.0, Outcome::NoAnswer)
                .with_details(serde_json::json!({ "gold": gold.fallback })));
        }
        let ok = answers_match(&gold, &pred, cfg, &budget)?;
        let details = serde_json::json!({ "extracted": pred.fallback, "gold": gold.fallback });
        Ok(if ok {
            Verdict::new(1.0, Outcome::Correct).with_details(details)
        } else {
            Verdict::new(0.0, Outcome::Incorrect).with_details(details)
        })
    })();
    result.unwrap_or_else(|Exhausted| {
        Verdict::new(0.0, Outcome::Timeout).with_details(serde_json::json!({
            "time_limit_ms": cfg.time_limit_ms,
            "max_steps": cfg.max_steps,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(resp: &str, gold: &str) -> bool {
        verify(resp, gold, &MathConfig::default()).is_correct()
    }

    #[test]
    fn common_forms() {
        assert!(ok("The answer is $\\boxed{\\dfrac{14}{3}}$.", "\\frac{14}{3}"));
        assert!(ok("so she pays 18 dollars.\n#### 18", "18"));
        assert!(ok("Thus $x = \\boxed{3 \\pm 2\\sqrt{2}}$", "3 \\pm 2 \\sqrt{2}"));
        assert!(!ok("\\boxed{5}", "6"));
        // Several boxes: the last one, unless only separators join them into one answer.
        assert!(ok("I got \\boxed{12} at first; rechecking, it is \\boxed{14}.", "14"));
        assert!(!ok("I got \\boxed{12} at first; rechecking, it is \\boxed{14}.", "12"));
        assert!(ok("\\boxed{1}, \\boxed{2}", "\\{1, 2\\}"));
        assert_eq!(verify("no numbers here", "6", &MathConfig::default()).outcome, Outcome::NoAnswer);
    }
}
