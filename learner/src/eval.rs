//! Held-out evaluation: pass@1 and pass@k with fixed sampling parameters over several seeds, reported
//! as mean and spread ("A Sober Look at Progress in Language Model Reasoning", Hochlehnert et al. 2025:
//! single-seed numbers on small sets move by several points from the seed alone).

use std::collections::HashMap;

use rlvr_actor::engine::{Engine, Request, RequestParams};
use rlvr_actor::sampling::SamplingParams;
use rlvr_common::model::Cpu;
use serde::{Deserialize, Serialize};

use crate::data::Problem;
use crate::reward::{Prompter, Reward};

/// What to sample per problem.
#[derive(Debug, Clone)]
pub struct EvalParams {
    /// Samples per problem (pass@k for k up to this).
    pub samples: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub max_new_tokens: usize,
    pub seeds: Vec<u64>,
}

/// Results of one seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    /// Mean over problems of the fraction of correct samples (the unbiased pass@1).
    pub pass_at_1: f64,
    /// pass@k for k = 1, 2, 4, … up to the samples (Chen et al. 2021's unbiased estimator).
    pub pass_at_k: Vec<(usize, f64)>,
    pub mean_reward: f64,
    pub mean_response_tokens: f64,
    /// Samples whose answer could not be read at all.
    pub no_answer_rate: f64,
}

/// Results over seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub problems: usize,
    pub samples: usize,
    pub seeds: Vec<SeedResult>,
    pub pass_at_1_mean: f64,
    /// Sample standard deviation over seeds (0 for one seed).
    pub pass_at_1_std: f64,
}

impl EvalReport {
    pub fn summary(&self) -> String {
        let ks = self.seeds.first().map(|s| s.pass_at_k.clone()).unwrap_or_default();
        let mut out = format!(
            "pass@1 {:.3} ± {:.3} over {} seeds ({} problems x {} samples)",
            self.pass_at_1_mean,
            self.pass_at_1_std,
            self.seeds.len(),
            self.problems,
            self.samples
        );
        for (i, (k, _)) in ks.iter().enumerate().skip(1) {
            let mean = self.seeds.iter().map(|s| s.pass_at_k[i].1).sum::<f64>() / self.seeds.len() as f64;
            out.push_str(&format!(", pass@{k} {mean:.3}"));
        }
        out
    }
}

/// Chen et al. 2021 (Codex), eq. 1: the probability that at least one of `k` samples drawn without
/// replacement from `n` with `c` correct is correct, `1 - C(n-c, k) / C(n, k)`, as a stable product.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

/// Samples every problem `params.samples` times per seed with `engine` and scores the answers.
pub fn evaluate(
    engine: &mut Engine<Cpu>,
    problems: &[Problem],
    prompter: &Prompter,
    reward: &dyn Reward,
    params: &EvalParams,
) -> anyhow::Result<EvalReport> {
    let mut seeds = vec![];
    for &seed in &params.seeds {
        let mut requests = Vec::with_capacity(problems.len());
        for (i, p) in problems.iter().enumerate() {
            requests.push(Request {
                id: format!("eval-{i}"),
                prompt: prompter.prompt_ids(p)?,
                params: RequestParams {
                    sampling: SamplingParams { temperature: params.temperature, top_p: params.top_p, top_k: 0, min_p: 0.0 },
                    max_new_tokens: params.max_new_tokens,
                    stop_token_ids: prompter.stop_token_ids.clone(),
                    stop_strings: vec![],
                    seed: seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                    n: params.samples,
                },
            });
        }
        let completions = engine.generate(requests)?;
        let mut correct: HashMap<usize, usize> = HashMap::new();
        let (mut reward_sum, mut tokens, mut no_answer) = (0.0, 0usize, 0usize);
        for c in &completions {
            let i: usize = c.request_id["eval-".len()..].parse().expect("ids made above");
            let score = reward.score(&problems[i], &c.tokens)?;
            reward_sum += f64::from(score.reward);
            tokens += c.tokens.len();
            no_answer += usize::from(score.no_answer);
            *correct.entry(i).or_default() += usize::from(score.correct);
        }
        let n = params.samples;
        let mut ks = vec![];
        let mut k = 1;
        while k <= n {
            let mean = (0..problems.len()).map(|i| pass_at_k(n, correct.get(&i).copied().unwrap_or(0), k)).sum::<f64>()
                / problems.len() as f64;
            ks.push((k, mean));
            k *= 2;
        }
        let total = completions.len().max(1) as f64;
        seeds.push(SeedResult {
            seed,
            pass_at_1: ks[0].1,
            pass_at_k: ks,
            mean_reward: reward_sum / total,
            mean_response_tokens: tokens as f64 / total,
            no_answer_rate: no_answer as f64 / total,
        });
    }
    let m = seeds.len() as f64;
    let mean = seeds.iter().map(|s| s.pass_at_1).sum::<f64>() / m;
    let std = if seeds.len() > 1 {
        (seeds.iter().map(|s| (s.pass_at_1 - mean).powi(2)).sum::<f64>() / (m - 1.0)).sqrt()
    } else {
        0.0
    };
    Ok(EvalReport { problems: problems.len(), samples: params.samples, seeds, pass_at_1_mean: mean, pass_at_1_std: std })
}

#[cfg(test)]
mod tests {
    use super::pass_at_k;

    #[test]
    fn pass_at_k_matches_the_binomial_formula() {
        let binom = |n: u64, k: u64| -> f64 { (0..k).map(|i| (n - i) as f64 / (i + 1) as f64).product() };
        for n in 1..10usize {
            for c in 0..=n {
                for k in 1..=n {
                    let want =
                        if n - c < k { 1.0 } else { 1.0 - binom((n - c) as u64, k as u64) / binom(n as u64, k as u64) };
                    assert!((pass_at_k(n, c, k) - want).abs() < 1e-12, "n {n} c {c} k {k}");
                }
            }
        }
        assert_eq!(pass_at_k(4, 1, 1), 0.25);
    }
}
