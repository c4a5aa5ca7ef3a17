//! Turning next-token logits into a token: greedy or temperature / top-k / top-p / min-p sampling,
//! with the log-prob of the chosen token.
//!
//! # Which log-prob is recorded
//! The log-prob of the sampled token under `softmax(logits / temperature)` over the whole vocabulary:
//! after temperature, before top-k / top-p / min-p truncation, as verl and TRL record it, so the learner
//! recomputes it from a plain forward (logits divided by the same temperature) without knowing the
//! truncation. Greedy decoding records the temperature-1 log-prob.
//!
//! # Truncation order
//! As transformers applies its logits warpers: top-k first, then top-p over the renormalised top-k
//! mass, then min-p relative to the most likely token. The kept tokens are sampled in proportion to
//! their probabilities.
//!
//! Only the tokens that can survive truncation are sorted: top-k selects in linear time, and top-p
//! sorts a short list of candidates, falling back to the full vocabulary only when the nucleus is
//! larger than that list.

use rand::Rng;

/// Candidates sorted for top-p before falling back to sorting the whole vocabulary.
const TOP_P_CANDIDATES: usize = 1024;

/// Sampling settings of one request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1.0 = off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep tokens at least `min_p` times as likely as the most likely one (0.0 = off).
    pub min_p: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0 }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }

    /// Checks the ranges, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature is {}; use 0 for greedy or a positive number", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p is {}; it must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p is {}; it must be in [0, 1]", self.min_p));
        }
        Ok(())
    }
}

/// Log-softmax of `logits / temperature` (temperature 0 is treated as 1 for the recorded log-prob).
pub fn log_probs(logits: &[f32], temperature: f32) -> Vec<f32> {
    let (scale, max, sum) = normaliser(logits, temperature);
    let log_z = sum.ln() as f32;
    logits.iter().map(|&l| (l - max) * scale - log_z).collect()
}

/// `(1 / t, max logit, Σ exp((l - max) / t))`, the sum in f64.
fn normaliser(logits: &[f32], temperature: f32) -> (f32, f32, f64) {
    let scale = if temperature > 0.0 { 1.0 / temperature } else { 1.0 };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(((l - max) * scale).exp())).sum();
    (scale, max, sum)
}

/// Picks the next token from one row of logits; returns it and its log-prob (see the module docs).
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut impl Rng) -> (u32, f32) {
    let (scale, max, sum) = normaliser(logits, params.temperature);
    let log_z = sum.ln() as f32;
    let lp = |i: usize| (logits[i] - max) * scale - log_z;
    if params.temperature <= 0.0 {
        // Greedy; ties go to the lowest id, as torch's argmax does.
        let best = logits.iter().enumerate().fold(0, |best, (i, &v)| if v > logits[best] { i } else { best });
        return (best as u32, lp(best));
    }
    let kept = truncate(logits, params, max, scale);
    // Inverse CDF over the kept tokens (in a fixed order), with unnormalised weights.
    let weight = |i: usize| ((logits[i] - max) * scale).exp();
    let choose = |ids: &mut dyn Iterator<Item = usize>, total: f32, rng: &mut dyn rand::RngCore| {
        let mut u = rng.random::<f32>() * total;
        let mut last = 0;
        for i in ids {
            let w = weight(i);
            if w > 0.0 {
                last = i;
            }
            u -= w;
            if u < 0.0 {
                return i;
            }
        }
        // Rounding left a sliver of mass: the last token with any weight takes it.
        last
    };
    let token = match kept {
        // Nothing cut: the normaliser's sum is the total (one pass over the vocabulary saved).
        None => choose(&mut (0..logits.len()), sum as f32, rng),
        Some(ids) => {
            let total: f32 = ids.iter().map(|&i| weight(i)).sum();
            choose(&mut ids.iter().copied(), total, rng)
        }
    };
    (token as u32, lp(token))
}

/// The tokens that survive top-k, top-p and min-p, most likely first; `None` when nothing is cut.
fn truncate(logits: &[f32], params: &SamplingParams, max: f32, scale: f32) -> Option<Vec<usize>> {
    let vocab = logits.len();
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let weight = |i: usize| ((logits[i] - max) * scale).exp();
    let top_k = if params.top_k > 0 && params.top_k < vocab { params.top_k } else { vocab };
    let top_p = params.top_p < 1.0;
    let min_p = params.min_p > 0.0;
    if top_k == vocab && !top_p && !min_p {
        return None;
    }
    // 1. Sorted candidates: the top-k, or a short list the nucleus usually fits in.
    let sorted_prefix = |n: usize| -> Vec<usize> {
        let mut ids: Vec<usize> = (0..vocab).collect();
        if n < vocab {
            ids.select_nth_unstable_by(n - 1, by_logit);
            ids.truncate(n);
        }
        ids.sort_unstable_by(by_logit);
        ids
    };
    let mut ids = if top_k < vocab { sorted_prefix(top_k) } else if top_p { sorted_prefix(TOP_P_CANDIDATES.min(vocab)) } else { (0..vocab).collect() };
    // 2. Top-p over the mass that top-k kept.
    if top_p {
        let total: f32 = if top_k < vocab { ids.iter().map(|&i| weight(i)).sum() } else { (0..vocab).map(weight).sum() };
        let mut cut = None;
        let mut mass = 0.0f32;
        for (n, &i) in ids.iter().enumerate() {
            mass += weight(i) / total;
            if mass >= params.top_p {
                cut = Some(n + 1);
                break;
            }
        }
        match cut {
            Some(n) => ids.truncate(n),
            // The nucleus is wider than the candidate list: sort everything.
            None if ids.len() < top_k => {
                ids = sorted_prefix(vocab);
                let mut mass = 0.0f32;
                let n = ids.iter().position(|&i| {
                    mass += weight(i) / total;
                    mass >= params.top_p
                });
                ids.truncate(n.map_or(vocab, |n| n + 1));
            }
            None => {}
        }
    }
    // 3. Min-p relative to the most likely token (weight 1 at the max logit).
    if min_p {
        ids.retain(|&i| weight(i) >= params.min_p);
    }
    if ids.is_empty() {
        // Never reached with valid parameters (the most likely token always survives); be safe.
        ids.push(sorted_prefix(1)[0]);
    }
    Some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn greedy_takes_the_argmax() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let (tok, lp) = sample(&[0.1, 3.0, -1.0, 3.0], &SamplingParams::greedy(), &mut rng);
        assert_eq!(tok, 1);
        assert!(lp < 0.0);
    }

    #[test]
    fn top_k_one_is_greedy_and_log_prob_is_untruncated() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let logits = [1.0, 2.0, 0.5];
        let params = SamplingParams { temperature: 0.7, top_k: 1, ..Default::default() };
        let (tok, lp) = sample(&logits, &params, &mut rng);
        assert_eq!(tok, 1);
        let full = log_probs(&logits, 0.7);
        assert_eq!(lp, full[1]);
        assert!(lp < 0.0, "the recorded log-prob is before truncation");
    }

    #[test]
    fn truncation_keeps_the_expected_sets() {
        // Probabilities at t = 1 after softmax: roughly 0.64, 0.24, 0.09, 0.03.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let (_, max, _) = normaliser(&logits, 1.0);
        let keep = |p: SamplingParams| truncate(&logits, &p, max, 1.0);
        assert_eq!(keep(SamplingParams::default()), None);
        assert_eq!(keep(SamplingParams { top_k: 2, ..Default::default() }), Some(vec![0, 1]));
        assert_eq!(keep(SamplingParams { top_p: 0.8, ..Default::default() }), Some(vec![0, 1]));
        assert_eq!(keep(SamplingParams { top_p: 0.5, ..Default::default() }), Some(vec![0]));
        // exp(-2) = 0.135 >= 0.1 keeps token 2; exp(-3) = 0.05 drops token 3.
        assert_eq!(keep(SamplingParams { min_p: 0.1, ..Default::default() }), Some(vec![0, 1, 2]));
        // top-p after top-k renormalises: token 0 holds 0.73 of the top-2 mass.
        assert_eq!(keep(SamplingParams { top_k: 2, top_p: 0.7, ..Default::default() }), Some(vec![0]));
    }

    #[test]
    fn wide_nucleus_falls_back_to_the_full_sort() {
        let logits: Vec<f32> = (0..3000).map(|i| -(i as f32) * 1e-4).collect();
        let (_, max, _) = normaliser(&logits, 1.0);
        let kept = truncate(&logits, &SamplingParams { top_p: 0.9, ..Default::default() }, max, 1.0).unwrap();
        assert!(kept.len() > TOP_P_CANDIDATES && kept.len() < 3000, "{}", kept.len());
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "most likely first");
    }
}
