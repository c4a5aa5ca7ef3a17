//! Turning next-token logits into a token: greedy or temperature / top-k / top-p sampling, with the
//! log-prob of the chosen token under the distribution it was drawn from (after temperature, before
//! truncation, as verl and TRL record it).

use rand::Rng;

/// Sampling settings of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1.0 = off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 1.0, top_p: 1.0, top_k: 0 }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }
}

/// Log-softmax of `logits / temperature` (temperature 0 is treated as 1 for the recorded log-prob).
pub fn log_probs(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(((l - max) / t).exp())).sum();
    let log_z = sum.ln() as f32;
    logits.iter().map(|&l| (l - max) / t - log_z).collect()
}

/// Picks the next token from one row of logits; returns it and its log-prob.
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut impl Rng) -> (u32, f32) {
    let lp = log_probs(logits, params.temperature);
    if params.temperature <= 0.0 {
        // Greedy; ties go to the lowest id, as torch's argmax does.
        let best = lp.iter().enumerate().fold(0, |best, (i, &v)| if v > lp[best] { i } else { best });
        return (best as u32, lp[best]);
    }
    let mut order: Vec<usize> = (0..lp.len()).collect();
    order.sort_unstable_by(|&a, &b| lp[b].total_cmp(&lp[a]).then(a.cmp(&b)));
    let mut keep = if params.top_k > 0 { params.top_k.min(order.len()) } else { order.len() };
    if params.top_p < 1.0 {
        let mut mass = 0.0f32;
        for (n, &i) in order.iter().enumerate().take(keep) {
            mass += lp[i].exp();
            if mass >= params.top_p {
                keep = n + 1;
                break;
            }
        }
    }
    let kept = &order[..keep.max(1)];
    let total: f32 = kept.iter().map(|&i| lp[i].exp()).sum();
    let mut u = rng.random::<f32>() * total;
    for &i in kept {
        u -= lp[i].exp();
        if u <= 0.0 {
            return (i as u32, lp[i]);
        }
    }
    let last = kept[kept.len() - 1];
    (last as u32, lp[last])
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
        let params = SamplingParams { temperature: 0.7, top_p: 1.0, top_k: 1 };
        let (tok, lp) = sample(&logits, &params, &mut rng);
        assert_eq!(tok, 1);
        let full = log_probs(&logits, 0.7);
        assert_eq!(lp, full[1]);
        assert!(lp < 0.0, "the recorded log-prob is before truncation");
    }
}
