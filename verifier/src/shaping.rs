//! Reward shaping on top of any verdict: a format reward (required tags, e.g. `<think>…</think>` then
//! `<answer>…</answer>`) and DAPO's soft overlong punishment (Yu et al. 2025, "DAPO", eq. 13):
//!
//! ```text
//! R_len(L) = 0                          if L <= L_max - L_buffer
//!          = ((L_max - L_buffer) - L) / L_buffer   if L_max - L_buffer < L <= L_max
//!          = -1                         if L > L_max
//! ```
//!
//! The shaped reward is `correctness_weight * reward + format term + overlong_weight * R_len`.

use serde::{Deserialize, Serialize};

use crate::verdict::Verdict;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FormatRule {
    /// Tags that must each appear exactly once, in this order, as `<tag>…</tag>`.
    pub required_tags: Vec<String>,
    /// Added when the format holds.
    pub reward: f32,
    /// Added when it does not (usually zero or negative).
    pub penalty: f32,
}

impl Default for FormatRule {
    fn default() -> Self {
        FormatRule { required_tags: vec!["think".into(), "answer".into()], reward: 0.0, penalty: -1.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Overlong {
    /// L_max: the generation limit, in tokens.
    pub max_len: usize,
    /// L_buffer: the soft zone before it.
    pub buffer: usize,
    pub weight: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShapingConfig {
    pub correctness_weight: f32,
    pub format: Option<FormatRule>,
    pub overlong: Option<Overlong>,
}

impl Default for ShapingConfig {
    fn default() -> Self {
        ShapingConfig { correctness_weight: 1.0, format: None, overlong: None }
    }
}

impl ShapingConfig {
    pub fn is_identity(&self) -> bool {
        self.correctness_weight == 1.0 && self.format.is_none() && self.overlong.is_none()
    }
}

/// Do the required tags each appear once, closed, in order?
pub fn format_ok(response: &str, tags: &[String]) -> bool {
    let mut pos = 0;
    for tag in tags {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        if response.matches(&open).count() != 1 || response.matches(&close).count() != 1 {
            return false;
        }
        let Some(o) = response[pos..].find(&open).map(|i| i + pos) else { return false };
        let Some(c) = response[o..].find(&close).map(|i| i + o) else { return false };
        pos = c + close.len();
    }
    true
}

/// DAPO's soft overlong punishment for a response of `len` tokens.
pub fn overlong_penalty(len: usize, max_len: usize, buffer: usize) -> f32 {
    let soft_start = max_len.saturating_sub(buffer);
    if len <= soft_start {
        0.0
    } else if len <= max_len {
        if buffer == 0 { 0.0 } else { -((len - soft_start) as f32) / buffer as f32 }
    } else {
        -1.0
    }
}

/// Apply shaping. `response_tokens` is the response length in tokens (characters when unknown).
pub fn shape(mut verdict: Verdict, response: &str, response_tokens: Option<usize>, cfg: &ShapingConfig) -> Verdict {
    if cfg.is_identity() {
        return verdict;
    }
    let base = verdict.reward;
    let mut reward = cfg.correctness_weight * base;
    let mut shaping = serde_json::Map::new();
    shaping.insert("base_reward".into(), serde_json::json!(base));
    if let Some(f) = &cfg.format {
        let ok = format_ok(response, &f.required_tags);
        reward += if ok { f.reward } else { f.penalty };
        shaping.insert("format_ok".into(), serde_json::json!(ok));
    }
    if let Some(o) = cfg.overlong {
        let len = response_tokens.unwrap_or_else(|| response.chars().count());
        let p = overlong_penalty(len, o.max_len, o.buffer);
        reward += o.weight * p;
        shaping.insert("overlong_penalty".into(), serde_json::json!(p));
    }
    if !verdict.details.is_object() {
        verdict.details = serde_json::json!({});
    }
    if let Some(obj) = verdict.details.as_object_mut() {
        obj.insert("shaping".into(), serde_json::Value::Object(shaping));
    }
    verdict.reward = if reward.is_finite() { reward } else { 0.0 };
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Outcome;

    #[test]
    fn dapo_overlong() {
        assert_eq!(overlong_penalty(100, 1000, 200), 0.0);
        assert_eq!(overlong_penalty(800, 1000, 200), 0.0);
        assert_eq!(overlong_penalty(900, 1000, 200), -0.5);
        assert_eq!(overlong_penalty(1000, 1000, 200), -1.0);
        assert_eq!(overlong_penalty(1001, 1000, 200), -1.0);
    }

    #[test]
    fn format() {
        let tags = vec!["think".to_string(), "answer".to_string()];
        assert!(format_ok("<think>x</think> <answer>4</answer>", &tags));
        assert!(!format_ok("<answer>4</answer><think>x</think>", &tags));
        assert!(!format_ok("<think>x</think>", &tags));
        assert!(!format_ok("<think><think>x</think></think><answer>4</answer>", &tags));
    }

    #[test]
    fn weights_combine() {
        let cfg = ShapingConfig {
            correctness_weight: 1.0,
            format: Some(FormatRule { reward: 0.1, penalty: -0.5, ..FormatRule::default() }),
            overlong: Some(Overlong { max_len: 10, buffer: 4, weight: 1.0 }),
        };
        let v = shape(Verdict::new(1.0, Outcome::Correct), "<think>a</think><answer>4</answer>", Some(8), &cfg);
        assert!((v.reward - (1.0 + 0.1 - 0.5)).abs() < 1e-6);
        let v = shape(Verdict::new(0.0, Outcome::Incorrect), "4", Some(3), &cfg);
        assert!((v.reward - -0.5).abs() < 1e-6);
    }
}
