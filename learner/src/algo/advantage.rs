//! Advantage estimators: per-token advantages `(B, L)` from rewards.
//!
//! Each follows the function of the same name in verl's `verl/trainer/ppo/core_algos.py`. All of
//! them return token-level advantages that are zero wherever `response_mask` is zero.
//!
//! **Outcome rewards.** verl stores an outcome reward as `token_level_rewards` `(B, L)`, zero except
//! on the last valid response token, and its outcome estimators read `token_level_rewards.sum(-1)`.
//! Here the outcome estimators take the per-sequence `scores` `(B,)` directly, which is the same
//! number; [`token_rewards_from_scores`] builds verl's layout for the token-level estimators
//! (REINFORCE++, GAE). A sequence with no valid token has nowhere to put its score and gets zero
//! advantage everywhere.
//!
//! **Where the work runs.** Group statistics and the reverse-time scans (REINFORCE++ returns, GAE)
//! are computed on the host in f64: rewards are `B` numbers, the scans are `B * L` multiply-adds,
//! and a scan on the device would be `L` dependent kernel launches. The results are uploaded with
//! the dtype and device of `response_mask`; whitening over the batch and the broadcast over the
//! mask run as tensor ops. Every function is pure (no state, no randomness) and returns tensors.

use std::collections::HashMap;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::{AlgoError, from_host, masked_whiten, to_host};

/// verl's default `epsilon` in the GRPO denominator `std + eps`.
pub const GRPO_EPS: f64 = 1e-6;

/// Which advantage estimator a run uses (`algorithm.estimator` in the run config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageEstimator {
    /// Group-normalised outcome reward, see [`grpo`] with `norm_by_std = true`.
    #[default]
    Grpo,
    /// GRPO without the division by the group's std, see [`grpo`] with `norm_by_std = false`.
    DrGrpo,
    /// Leave-one-out group baseline, see [`rloo`].
    Rloo,
    /// Discounted return whitened over the batch, see [`reinforce_plus_plus`].
    ReinforcePlusPlus,
    /// Group-mean baseline whitened over the batch, see [`reinforce_plus_plus_baseline`].
    ReinforcePlusPlusBaseline,
    /// Generalised advantage estimation with a critic, see [`gae`].
    Gae,
}

impl AdvantageEstimator {
    /// Whether the estimator compares samples of the same prompt (and so needs `group_size >= 2`
    /// to give any sequence a non-trivial advantage).
    pub fn uses_groups(self) -> bool {
        matches!(
            self,
            Self::Grpo | Self::DrGrpo | Self::Rloo | Self::ReinforcePlusPlusBaseline
        )
    }
}

/// Settings of the advantage computation; defaults are verl's (`gamma = lam = 1`, `eps = 1e-6`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvantageConfig {
    pub estimator: AdvantageEstimator,
    /// Discount over response tokens (REINFORCE++, GAE).
    pub gamma: f64,
    /// GAE's lambda.
    pub lam: f64,
    /// Added to the group std before dividing (GRPO).
    pub grpo_eps: f64,
}

impl Default for AdvantageConfig {
    fn default() -> Self {
        Self {
            estimator: AdvantageEstimator::default(),
            gamma: 1.0,
            lam: 1.0,
            grpo_eps: GRPO_EPS,
        }
    }
}

impl AdvantageConfig {
    /// Rejects values outside the range the estimators are defined on.
    pub fn validate(&self) -> Result<(), AlgoError> {
        for (field, value) in [("algorithm.gamma", self.gamma), ("algorithm.lam", self.lam)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(AlgoError::Config {
                    field,
                    message: format!("is {value}: it must lie in [0, 1]"),
                });
            }
        }
        if !(self.grpo_eps.is_finite() && self.grpo_eps > 0.0) {
            return Err(AlgoError::Config {
                field: "algorithm.grpo_eps",
                message: format!("is {}: it must be positive (verl uses 1e-6)", self.grpo_eps),
            });
        }
        Ok(())
    }
}

/// Advantages `(B, L)` of an outcome-reward estimator, selected by `config.estimator`.
///
/// `scores` `(B,)` holds one reward per sequence, `group` the prompt id of each sequence (ids in
/// any order, groups of any size). REINFORCE++ places each score on the last valid token first
/// ([`token_rewards_from_scores`]) and discounts with `config.gamma`. GAE needs a critic's values
/// and is rejected here: call [`gae`].
pub fn outcome_advantages<B: Backend>(
    config: &AdvantageConfig,
    scores: Tensor<B, 1>,
    response_mask: Tensor<B, 2>,
    group: &[u64],
) -> Result<Tensor<B, 2>, AlgoError> {
    config.validate()?;
    match config.estimator {
        AdvantageEstimator::Grpo => grpo(scores, response_mask, group, true, config.grpo_eps),
        AdvantageEstimator::DrGrpo => grpo(scores, response_mask, group, false, config.grpo_eps),
        AdvantageEstimator::Rloo => rloo(scores, response_mask, group),
        AdvantageEstimator::ReinforcePlusPlus => {
            let rewards = token_rewards_from_scores(scores, response_mask.clone())?;
            reinforce_plus_plus(rewards, response_mask, config.gamma)
                .map(|(advantages, _)| advantages)
        }
        AdvantageEstimator::ReinforcePlusPlusBaseline => {
            reinforce_plus_plus_baseline(scores, response_mask, group)
        }
        AdvantageEstimator::Gae => Err(AlgoError::Config {
            field: "algorithm.estimator",
            message: "is `gae`, which needs a critic's per-token values: call `advantage::gae`"
                .into(),
        }),
    }
}

/// GRPO: each score minus its group's mean, divided by the group's std plus `eps`.
///
/// Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language
/// Models" (arXiv:2402.03300); verl `compute_grpo_outcome_advantage`. With `norm_by_std = false`
/// the division is skipped: Dr. GRPO, Liu et al. 2025, "Understanding R1-Zero-Like Training: A
/// Critical Perspective" (arXiv:2503.20783).
///
/// As in verl: the std is the unbiased one (`torch.std`, divisor `n - 1`); a group of one sequence
/// uses mean 0 and std 1, so its advantage is `score / (1 + eps)` (`score` without std
/// normalisation), not zero; a group whose scores are all equal has std 0 and gets advantage
/// `0 / eps = 0`. The per-sequence value is broadcast over `response_mask`.
pub fn grpo<B: Backend>(
    scores: Tensor<B, 1>,
    response_mask: Tensor<B, 2>,
    group: &[u64],
    norm_by_std: bool,
    eps: f64,
) -> Result<Tensor<B, 2>, AlgoError> {
    let scores = host_scores(scores, &response_mask, group)?;
    let mut advantages = vec![0.0; scores.len()];
    for members in group_members(group) {
        let (mean, std) = if members.len() == 1 {
            (0.0, 1.0)
        } else {
            mean_and_unbiased_std(members.iter().map(|&i| scores[i]))
        };
        for i in members {
            let centred = scores[i] - mean;
            advantages[i] = if norm_by_std {
                centred / (std + eps)
            } else {
                centred
            };
        }
    }
    Ok(broadcast_over_mask(advantages, response_mask))
}

/// RLOO: each score minus the mean of the *other* scores of its group.
///
/// Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning
/// from Human Feedback in LLMs" (arXiv:2402.14740); verl `compute_rloo_outcome_advantage`, which
/// writes it as `score * n/(n-1) - mean * n/(n-1)` with `mean` over the whole group of `n`.
///
/// A group of one keeps its raw score (baseline 0), as verl's `rloo` does. (verl's
/// `rloo_vectorized` gives such a sequence 0 instead; we follow the non-vectorised estimator,
/// which is also what GRPO's mean-0 rule for singletons amounts to.)
pub fn rloo<B: Backend>(
    scores: Tensor<B, 1>,
    response_mask: Tensor<B, 2>,
    group: &[u64],
) -> Result<Tensor<B, 2>, AlgoError> {
    let scores = host_scores(scores, &response_mask, group)?;
    let mut advantages = scores.clone();
    for members in group_members(group) {
        let n = members.len() as f64;
        if members.len() > 1 {
            let mean = members.iter().map(|&i| scores[i]).sum::<f64>() / n;
            for i in members {
                advantages[i] = scores[i] * n / (n - 1.0) - mean * n / (n - 1.0);
            }
        }
    }
    Ok(broadcast_over_mask(advantages, response_mask))
}

/// REINFORCE++: the discounted return of every token, whitened over all valid tokens of the batch.
///
/// Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models"
/// (arXiv:2501.03262); verl `compute_reinforce_plus_plus_outcome_advantage`. `token_rewards` is
/// `(B, L)` (see [`token_rewards_from_scores`] for outcome rewards; dense per-token rewards such as
/// a KL penalty work too). Returns `(advantages, returns)`, both `(B, L)`.
///
/// The return runs backwards, `G_t = r_t + gamma * G_{t+1}`, and is reset to zero *before* each
/// masked position, exactly as verl's loop (`running *= mask[t]` after storing `G_t`). Both
/// outputs are zero on masked positions; verl leaves its unmasked `returns` there, which no loss
/// reads.
pub fn reinforce_plus_plus<B: Backend>(
    token_rewards: Tensor<B, 2>,
    response_mask: Tensor<B, 2>,
    gamma: f64,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>), AlgoError> {
    let [batch, len] = response_mask.dims();
    check_same_dims("token_rewards", token_rewards.dims(), [batch, len])?;
    let rewards = to_host(token_rewards);
    let mask = to_host(response_mask.clone());
    check_whitenable("reinforce_plus_plus", &mask)?;

    let mut returns = vec![0.0; batch * len];
    for row in 0..batch {
        let mut running = 0.0;
        for t in (0..len).rev() {
            let k = row * len + t;
            running = rewards[k] + gamma * running;
            returns[k] = running;
            running *= mask[k];
        }
    }
    let returns: Tensor<B, 2> = from_host(returns, [batch, len], &response_mask);
    let advantages =
        masked_whiten(returns.clone(), response_mask.clone()).mul(response_mask.clone());
    Ok((advantages, returns.mul(response_mask)))
}

/// REINFORCE++ with a group baseline: score minus its group's mean, broadcast over the mask, then
/// whitened over all valid tokens of the batch.
///
/// Hu 2025 (arXiv:2501.03262), the "REINFORCE++-baseline" variant; verl
/// `compute_reinforce_plus_plus_baseline_outcome_advantage`. A group of one has baseline 0 (verl).
/// Whitening is token-weighted: a long sequence counts once per valid token in the batch
/// statistics, as in verl.
pub fn reinforce_plus_plus_baseline<B: Backend>(
    scores: Tensor<B, 1>,
    response_mask: Tensor<B, 2>,
    group: &[u64],
) -> Result<Tensor<B, 2>, AlgoError> {
    let scores = host_scores(scores, &response_mask, group)?;
    check_whitenable(
        "reinforce_plus_plus_baseline",
        &to_host(response_mask.clone()),
    )?;
    let mut centred = scores.clone();
    for members in group_members(group) {
        if members.len() > 1 {
            let mean = members.iter().map(|&i| scores[i]).sum::<f64>() / members.len() as f64;
            for i in members {
                centred[i] = scores[i] - mean;
            }
        }
    }
    let tiled = broadcast_over_mask(centred, response_mask.clone());
    Ok(masked_whiten(tiled, response_mask.clone()).mul(response_mask))
}

/// Generalised advantage estimation over token rewards and a critic's values, whitened over the
/// batch. Returns `(advantages, returns)`, both `(B, L)`, with `returns = GAE + values` taken
/// before whitening (the critic's regression target).
///
/// Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
/// Estimation" (arXiv:1506.02438); verl `compute_gae_advantage_return`:
/// `delta_t = r_t + gamma * V_{t+1} - V_t`, `A_t = delta_t + gamma * lam * A_{t+1}`, where a masked
/// position neither bootstraps nor accumulates: `V_{t+1}` and `A_{t+1}` are those of the next
/// *valid* token (so a masked tool-output span inside a response is skipped, and right padding
/// acts as the end of the episode).
///
/// Both outputs are zero on masked positions. verl leaves whitened values (advantages) and the raw
/// values (returns) there; every loss masks them out, and zeros make the tensors easier to check.
pub fn gae<B: Backend>(
    token_rewards: Tensor<B, 2>,
    values: Tensor<B, 2>,
    response_mask: Tensor<B, 2>,
    gamma: f64,
    lam: f64,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>), AlgoError> {
    let [batch, len] = response_mask.dims();
    check_same_dims("token_rewards", token_rewards.dims(), [batch, len])?;
    check_same_dims("values", values.dims(), [batch, len])?;
    let rewards = to_host(token_rewards);
    let values = to_host(values);
    let mask = to_host(response_mask.clone());
    check_whitenable("gae", &mask)?;

    let mut advantages = vec![0.0; batch * len];
    let mut returns = vec![0.0; batch * len];
    for row in 0..batch {
        let (mut next_value, mut last_gae) = (0.0, 0.0);
        for t in (0..len).rev() {
            let k = row * len + t;
            let delta = rewards[k] + gamma * next_value - values[k];
            let gae_t = delta + gamma * lam * last_gae;
            // verl's masked update, written the same way so that fractional masks agree too.
            next_value = values[k] * mask[k] + (1.0 - mask[k]) * next_value;
            last_gae = gae_t * mask[k] + (1.0 - mask[k]) * last_gae;
            advantages[k] = last_gae;
            returns[k] = last_gae + values[k];
        }
    }
    let advantages: Tensor<B, 2> = from_host(advantages, [batch, len], &response_mask);
    let returns: Tensor<B, 2> = from_host(returns, [batch, len], &response_mask);
    let advantages = masked_whiten(advantages, response_mask.clone()).mul(response_mask.clone());
    Ok((advantages, returns.mul(response_mask)))
}

/// verl's `token_level_rewards` layout for outcome rewards: `scores[i]` on the last position of row
/// `i` where `response_mask` is non-zero, zero elsewhere. A row with no valid position is all zero.
pub fn token_rewards_from_scores<B: Backend>(
    scores: Tensor<B, 1>,
    response_mask: Tensor<B, 2>,
) -> Result<Tensor<B, 2>, AlgoError> {
    let [batch, len] = response_mask.dims();
    check_len("scores", scores.dims()[0], batch)?;
    let scores = to_host(scores);
    let mask = to_host(response_mask.clone());
    let mut rewards = vec![0.0; batch * len];
    for (row, score) in scores.iter().enumerate() {
        let row_mask = &mask[row * len..(row + 1) * len];
        if let Some(last) = row_mask.iter().rposition(|&m| m != 0.0) {
            rewards[row * len + last] = *score;
        }
    }
    Ok(from_host(rewards, [batch, len], &response_mask))
}

/// Indices of each group, groups in order of first appearance, members in batch order.
fn group_members(group: &[u64]) -> Vec<Vec<usize>> {
    let mut slot: HashMap<u64, usize> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, id) in group.iter().enumerate() {
        let s = *slot.entry(*id).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[s].push(i);
    }
    members
}

/// Mean and unbiased standard deviation (divisor `n - 1`) of at least two values.
fn mean_and_unbiased_std(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count() as f64;
    let mean = values.clone().sum::<f64>() / n;
    let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The scores on the host after checking that scores, mask and group ids describe one batch.
fn host_scores<B: Backend>(
    scores: Tensor<B, 1>,
    response_mask: &Tensor<B, 2>,
    group: &[u64],
) -> Result<Vec<f64>, AlgoError> {
    let [batch, _] = response_mask.dims();
    check_len("scores", scores.dims()[0], batch)?;
    check_len("group", group.len(), batch)?;
    Ok(to_host(scores))
}

/// Per-sequence values `(B,)` broadcast to `(B, L)` and multiplied by the mask.
fn broadcast_over_mask<B: Backend>(
    per_sequence: Vec<f64>,
    response_mask: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let batch = per_sequence.len();
    let column: Tensor<B, 2> = from_host(per_sequence, [batch, 1], &response_mask);
    column.mul(response_mask)
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), AlgoError> {
    if got == expected {
        Ok(())
    } else {
        Err(AlgoError::BatchMismatch {
            what,
            expected,
            got,
        })
    }
}

fn check_same_dims(
    what: &'static str,
    got: [usize; 2],
    expected: [usize; 2],
) -> Result<(), AlgoError> {
    check_len(what, got[0], expected[0])?;
    if got[1] != expected[1] {
        return Err(AlgoError::Config {
            field: what,
            message: format!(
                "has {} tokens per row but response_mask has {}",
                got[1], expected[1]
            ),
        });
    }
    Ok(())
}

fn check_whitenable(estimator: &'static str, mask: &[f64]) -> Result<(), AlgoError> {
    let valid = mask.iter().filter(|&&m| m != 0.0).count();
    if valid < 2 {
        return Err(AlgoError::TooFewTokens { estimator, valid });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{DType, TensorData};
    use proptest::prelude::*;
    use rlvr_common::model::Cpu;

    fn t1(values: &[f64]) -> Tensor<Cpu, 1> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [values.len()]),
            (&Default::default(), DType::F64),
        )
    }

    fn t2(values: Vec<f64>, shape: [usize; 2]) -> Tensor<Cpu, 2> {
        Tensor::from_data(
            TensorData::new(values, shape),
            (&Default::default(), DType::F64),
        )
    }

    fn right_padded(lengths: &[usize], len: usize) -> Tensor<Cpu, 2> {
        let values = lengths
            .iter()
            .flat_map(|&n| (0..len).map(move |t| if t < n { 1.0 } else { 0.0 }))
            .collect();
        t2(values, [lengths.len(), len])
    }

    /// Per-sequence advantage (column 0; every test row has a valid first token).
    fn first_column(advantages: Tensor<Cpu, 2>) -> Vec<f64> {
        let [_, len] = advantages.dims();
        to_host(advantages).chunks(len).map(|row| row[0]).collect()
    }

    #[test]
    fn grpo_group_of_one_uses_mean_zero_std_one() {
        let adv = grpo(t1(&[0.8]), right_padded(&[3], 3), &[5], true, GRPO_EPS).unwrap();
        let expected = 0.8 / (1.0 + GRPO_EPS);
        assert!(to_host(adv).iter().all(|a| (a - expected).abs() < 1e-15));
        let adv = grpo(t1(&[0.8]), right_padded(&[3], 3), &[5], false, GRPO_EPS).unwrap();
        assert!(to_host(adv).iter().all(|a| (a - 0.8).abs() < 1e-15));
    }

    #[test]
    fn grpo_all_equal_group_is_zero_and_padding_is_zero() {
        let adv = grpo(
            t1(&[1.0, 1.0, 1.0, 0.0, 1.0]),
            right_padded(&[2, 4, 1, 4, 4], 4),
            &[9, 9, 9, 3, 3],
            true,
            GRPO_EPS,
        )
        .unwrap();
        let adv = to_host(adv);
        assert!(adv[..12].iter().all(|&a| a == 0.0), "{adv:?}");
        // Group 3 = {0, 1}: mean 0.5, std sqrt(0.5); padding stays zero.
        let expected = 0.5 / (0.5f64.sqrt() + GRPO_EPS);
        assert!((adv[12] + expected).abs() < 1e-12 && (adv[16] - expected).abs() < 1e-12);
    }

    #[test]
    fn rloo_singleton_keeps_its_score_and_pairs_are_antisymmetric() {
        let adv = first_column(
            rloo(
                t1(&[0.3, 1.0, 0.0]),
                right_padded(&[1, 1, 1], 1),
                &[1, 2, 2],
            )
            .unwrap(),
        );
        assert_eq!(adv, vec![0.3, 1.0, -1.0]);
    }

    #[test]
    fn outcome_dispatch_rejects_gae_and_mismatched_groups() {
        let config = AdvantageConfig {
            estimator: AdvantageEstimator::Gae,
            ..AdvantageConfig::default()
        };
        let err = outcome_advantages(&config, t1(&[1.0, 0.0]), right_padded(&[1, 1], 1), &[0, 0]);
        assert!(matches!(
            err,
            Err(AlgoError::Config {
                field: "algorithm.estimator",
                ..
            })
        ));
        let err = outcome_advantages(
            &AdvantageConfig::default(),
            t1(&[1.0, 0.0]),
            right_padded(&[1, 1], 1),
            &[0],
        );
        assert!(matches!(
            err,
            Err(AlgoError::BatchMismatch {
                what: "group",
                expected: 2,
                got: 1
            })
        ));
    }

    #[test]
    fn whitening_estimators_need_two_valid_tokens() {
        let err = reinforce_plus_plus(t2(vec![1.0, 0.0], [1, 2]), right_padded(&[1], 2), 1.0);
        assert!(matches!(err, Err(AlgoError::TooFewTokens { valid: 1, .. })));
    }

    #[test]
    fn token_rewards_go_on_the_last_valid_token() {
        // Row 0 has a masked hole, row 1 right padding, row 2 no valid token (its score is dropped).
        let mask = t2(vec![1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], [3, 3]);
        let rewards = token_rewards_from_scores(t1(&[2.0, -1.0, 5.0]), mask).unwrap();
        assert_eq!(
            to_host(rewards),
            vec![0.0, 0.0, 2.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn gae_with_gamma_lambda_one_and_zero_values_is_reward_to_go() {
        // Before whitening, GAE(1, 1) with V = 0 is the undiscounted reward-to-go; `returns`
        // (taken before whitening) shows it directly.
        let rewards = t2(vec![0.5, 0.0, 1.0, 2.0, -1.0, 0.0], [2, 3]);
        let values = t2(vec![0.0; 6], [2, 3]);
        let (_, returns) = gae(rewards, values, right_padded(&[3, 2], 3), 1.0, 1.0).unwrap();
        assert_eq!(to_host(returns), vec![1.5, 1.0, 1.0, 1.0, -1.0, 0.0]);
    }

    #[test]
    fn estimator_names_are_snake_case() {
        let names: Vec<String> = [
            AdvantageEstimator::Grpo,
            AdvantageEstimator::DrGrpo,
            AdvantageEstimator::Rloo,
            AdvantageEstimator::ReinforcePlusPlus,
            AdvantageEstimator::ReinforcePlusPlusBaseline,
            AdvantageEstimator::Gae,
        ]
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
        assert_eq!(
            names,
            [
                "\"grpo\"",
                "\"dr_grpo\"",
                "\"rloo\"",
                "\"reinforce_plus_plus\"",
                "\"reinforce_plus_plus_baseline\"",
                "\"gae\""
            ]
        );
        let config: AdvantageConfig = serde_json::from_str(r#"{"estimator": "dr_grpo"}"#).unwrap();
        assert_eq!(config.estimator, AdvantageEstimator::DrGrpo);
        assert_eq!(config.gamma, 1.0);
        assert!(
            AdvantageConfig {
                gamma: 1.5,
                ..config
            }
            .validate()
            .is_err()
        );
    }

    /// A batch of 1..24 sequences in up to 5 groups (ids shuffled by construction), scores in
    /// {-1, 0, 1} or arbitrary.
    fn batch() -> impl Strategy<Value = (Vec<f64>, Vec<u64>)> {
        (1usize..24).prop_flat_map(|n| {
            let score = prop_oneof![prop::sample::select(vec![-1.0, 0.0, 1.0]), -5.0f64..5.0,];
            (
                prop::collection::vec(score, n),
                prop::collection::vec(0u64..5, n),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn group_relative_advantages_sum_to_zero_per_group((scores, group) in batch()) {
            let n = scores.len();
            let mask = right_padded(&vec![1; n], 1);
            let estimators: [(&str, Vec<f64>); 3] = [
                ("grpo", first_column(grpo(t1(&scores), mask.clone(), &group, true, GRPO_EPS).unwrap())),
                ("dr_grpo", first_column(grpo(t1(&scores), mask.clone(), &group, false, GRPO_EPS).unwrap())),
                ("rloo", first_column(rloo(t1(&scores), mask.clone(), &group).unwrap())),
            ];
            for members in group_members(&group) {
                let all_equal = members.iter().all(|&i| scores[i] == scores[members[0]]);
                for (name, adv) in &estimators {
                    if members.len() > 1 {
                        let sum: f64 = members.iter().map(|&i| adv[i]).sum();
                        prop_assert!(sum.abs() < 1e-9, "{name}: group sum {sum}");
                        if all_equal {
                            prop_assert!(members.iter().all(|&i| adv[i].abs() < 1e-9), "{name}: {adv:?}");
                        }
                    }
                }
                // Dr. GRPO is GRPO times (std + eps), group by group.
                if members.len() > 1 && !all_equal {
                    let (_, std) = mean_and_unbiased_std(members.iter().map(|&i| scores[i]));
                    for &i in &members {
                        let scaled = estimators[0].1[i] * (std + GRPO_EPS);
                        prop_assert!((scaled - estimators[1].1[i]).abs() < 1e-9);
                    }
                }
            }
        }

        #[test]
        fn advantages_follow_their_sequence_under_permutation(
            (scores, group) in batch(),
            seed in any::<u64>(),
        ) {
            use rand::{SeedableRng, seq::SliceRandom};
            let n = scores.len();
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let permuted_scores: Vec<f64> = order.iter().map(|&i| scores[i]).collect();
            let permuted_group: Vec<u64> = order.iter().map(|&i| group[i]).collect();
            let mask = right_padded(&vec![1; n], 1);
            let adv = first_column(grpo(t1(&scores), mask.clone(), &group, true, GRPO_EPS).unwrap());
            let permuted = first_column(grpo(t1(&permuted_scores), mask, &permuted_group, true, GRPO_EPS).unwrap());
            for (k, &i) in order.iter().enumerate() {
                prop_assert!((permuted[k] - adv[i]).abs() < 1e-9);
            }
        }
    }
}
