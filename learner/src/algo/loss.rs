//! Policy losses: aggregation over tokens, PPO-clip, GSPO, truncated importance sampling, KL
//! penalties to a reference policy, entropy and SFT, and [`policy_loss`] combining them.
//!
//! The definitions are verl's (`verl/trainer/ppo/core_algos.py`: `agg_loss`,
//! `compute_policy_loss_vanilla`, `compute_policy_loss_gspo`, `kl_penalty`; the entropy and TIS
//! pieces from `verl/utils/torch_functional.py` and `verl/trainer/ppo/rollout_corr_helper.py`).
//! Every loss is a differentiable `[1]` tensor; gradients flow into `log_prob` only (old, rollout
//! and reference log-probs and advantages are data). Metrics are read back to the host as f64,
//! one small device-to-host copy each per call.

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};
use serde::{Deserialize, Serialize};

use super::{AlgoError, indicator, masked_mean, masked_values, scalar};

/// Bound on `log_prob - old_log_prob` (and on the TIS log-ratio) before `exp`, as verl.
const LOG_RATIO_BOUND: f64 = 20.0;
/// GSPO's upper bound on the sequence log-ratio before `exp`, as verl.
const GSPO_LOG_RATIO_MAX: f64 = 10.0;
/// k3's bound on its output, as verl's `low_var_kl`.
const K3_BOUND: f64 = 10.0;
/// verl's guard in the per-sequence token mean of [`LossAgg::SeqMeanTokenMean`].
const SEQ_TOKEN_MEAN_EPS: f64 = 1e-8;

/// How a per-token loss `(B, L)` becomes a scalar: verl's `loss_agg_mode`.
///
/// With `n_i` the number of valid tokens of row `i`, `l_it` the per-token loss and `S` the rows
/// with `n_i > 0`:
///
/// | mode | value |
/// |---|---|
/// | `token_mean` | `sum_i sum_t l_it / sum_i n_i` |
/// | `seq_mean_token_mean` | `mean_{i in S} (sum_t l_it / (n_i + 1e-8))` |
/// | `seq_mean_token_sum` | `mean_{i in S} sum_t l_it` |
/// | `seq_mean_token_sum_norm` | `mean_{i < B} (sum_t l_it / constant)` |
///
/// `seq_mean_token_sum_norm` is Dr. GRPO's length-unbiased normaliser (Liu et al. 2025,
/// arXiv:2503.20783): divide every sequence's token sum by one constant (the maximum response
/// length) rather than by its own length. verl's `agg_loss` returns `sum_i sum_t l_it / constant`
/// (not divided by the number of rows) and rescales per micro-batch in its actor; here it is the
/// per-batch mean over all `B` rows, so the loss does not grow with the batch size. The two differ
/// by the factor `B` only.
///
/// Denominators are clamped to at least 1, so a batch with no valid token gives 0 (verl: NaN). verl's
/// `global_batch_size` / `dp_size` arguments are not reproduced: data-parallel scaling belongs to
/// the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAgg {
    /// Mean over every valid token of the batch (DAPO's token-level loss; verl's default).
    #[default]
    TokenMean,
    /// Mean over sequences of each sequence's token mean (the original GRPO / GSPO).
    SeqMeanTokenMean,
    /// Mean over sequences of each sequence's token sum.
    SeqMeanTokenSum,
    /// Mean over sequences of the token sum divided by `constant` (Dr. GRPO).
    SeqMeanTokenSumNorm { constant: f64 },
}

/// Aggregates a per-token loss `(B, L)` over `response_mask` into a `[1]` tensor, see [`LossAgg`].
pub fn agg_loss<B: Backend>(
    loss_mat: Tensor<B, 2>,
    response_mask: Tensor<B, 2>,
    agg: LossAgg,
) -> Tensor<B, 1> {
    let masked = masked_values(loss_mat, response_mask.clone());
    match agg {
        LossAgg::TokenMean => {
            let tokens = response_mask.sum().clamp_min(1.0);
            masked.sum().div(tokens)
        }
        LossAgg::SeqMeanTokenMean => {
            let counts = response_mask.sum_dim(1);
            let per_sequence = masked
                .sum_dim(1)
                .div(counts.clone().add_scalar(SEQ_TOKEN_MEAN_EPS));
            mean_over_nonempty(per_sequence, counts)
        }
        LossAgg::SeqMeanTokenSum => {
            let counts = response_mask.sum_dim(1);
            mean_over_nonempty(masked.sum_dim(1), counts)
        }
        LossAgg::SeqMeanTokenSumNorm { constant } => masked.sum_dim(1).div_scalar(constant).mean(),
    }
}

/// Mean of `per_sequence` `(B, 1)` over the rows whose token count is non-zero.
fn mean_over_nonempty<B: Backend>(
    per_sequence: Tensor<B, 2>,
    counts: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let nonempty = indicator(counts.greater_elem(0.0), &per_sequence);
    let rows = nonempty.clone().sum().clamp_min(1.0);
    per_sequence.mul(nonempty).sum().div(rows)
}

/// The per-token tensors every policy-gradient loss reads, all `(B, L)`.
#[derive(Clone, Debug)]
pub struct PolicyInputs<B: Backend> {
    /// Log-probs of the response tokens under the policy being trained (the differentiable input).
    pub log_prob: Tensor<B, 2>,
    /// Log-probs under the policy that generated the batch, as recomputed by the learner before the
    /// first update (`pi_old` of PPO).
    pub old_log_prob: Tensor<B, 2>,
    /// Per-token advantages, see [`super::advantage`].
    pub advantages: Tensor<B, 2>,
    /// 1.0 on tokens the loss counts, 0.0 elsewhere.
    pub response_mask: Tensor<B, 2>,
}

/// The ratio interval `[1 - low, 1 + high]` of a clipped objective.
///
/// Separate bounds are DAPO's "clip-higher" (Yu et al. 2025, "DAPO: An Open-Source LLM
/// Reinforcement Learning System at Scale", arXiv:2503.14476): a larger `high` lets unlikely tokens
/// with positive advantage grow faster.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipRange {
    pub low: f64,
    pub high: f64,
}

impl ClipRange {
    /// The same `eps` on both sides (standard PPO).
    pub fn symmetric(eps: f64) -> Self {
        Self {
            low: eps,
            high: eps,
        }
    }
}

/// A policy loss and what to log about it.
#[derive(Clone, Debug)]
pub struct PolicyLossOutput<B: Backend> {
    /// The scalar to minimise, `[1]`.
    pub loss: Tensor<B, 1>,
    pub metrics: PolicyLossMetrics,
}

/// Host-side statistics of one policy-loss evaluation (verl's `actor/*` metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PolicyLossMetrics {
    /// The policy-gradient term alone (`actor/pg_loss`).
    pub pg_loss: f64,
    /// Fraction of valid tokens where the clipped term is the larger one (`actor/pg_clipfrac`).
    pub clip_frac: f64,
    /// Fraction of valid tokens where the dual clip bounds the loss (`actor/pg_clipfrac_lower`);
    /// 0 without dual clip and for GSPO.
    pub clip_frac_lower: f64,
    /// Masked mean of `old_log_prob - log_prob` (`actor/ppo_kl`).
    pub ppo_kl: f64,
    /// The aggregated KL penalty, when one is in the loss (`actor/kl_loss`).
    pub kl_loss: Option<f64>,
    /// The aggregated entropy, when it was given (`actor/entropy`).
    pub entropy: Option<f64>,
}

/// PPO's clipped surrogate, per token, aggregated with `agg`.
///
/// Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv:1707.06347); verl
/// `compute_policy_loss_vanilla`. With `r = exp(clamp(log_prob - old_log_prob, -20, 20))`:
/// `l = max(-A * r, -A * clip(r, 1 - low, 1 + high))`. With `dual_clip = Some(c)` (Ye et al. 2020,
/// "Mastering Complex Control in MOBA Games with Deep Reinforcement Learning", arXiv:1912.09729),
/// tokens with `A < 0` use `min(l, -A * c)`, bounding the loss when a bad token's ratio explodes.
/// verl applies dual clip with `c = 3` unconditionally; pass `Some(3.0)` to reproduce it exactly.
///
/// `is_weights` (e.g. [`tis_weights`]) multiply the per-token loss after clipping; they are
/// detached here whatever the caller passes.
pub fn ppo_clip_loss<B: Backend>(
    inputs: &PolicyInputs<B>,
    is_weights: Option<Tensor<B, 2>>,
    clip: ClipRange,
    dual_clip: Option<f64>,
    agg: LossAgg,
) -> PolicyLossOutput<B> {
    let mask = inputs.response_mask.clone();
    let advantages = inputs.advantages.clone();

    // 1. Token ratio pi / pi_old from the (bounded) log-ratio.
    let log_ratio = inputs
        .log_prob
        .clone()
        .sub(inputs.old_log_prob.clone())
        .clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND);
    let ppo_kl = scalar(masked_mean(log_ratio.clone().detach().neg(), mask.clone()));
    let ratio = log_ratio.exp();

    // 2. Unclipped and clipped surrogates; the loss is the larger (more pessimistic) one.
    let neg_adv = advantages.clone().neg();
    let unclipped = neg_adv.clone().mul(ratio.clone());
    let clipped = neg_adv
        .clone()
        .mul(ratio.clamp(1.0 - clip.low, 1.0 + clip.high));
    let clip_hit = clipped.clone().greater(unclipped.clone());
    let clip_frac = scalar(masked_mean(indicator(clip_hit, &mask), mask.clone()));
    let surrogate = unclipped.max_pair(clipped);

    // 3. Dual clip: for A < 0, never more than -A * c.
    let (per_token, clip_frac_lower) = match dual_clip {
        Some(c) => {
            let bound = neg_adv.mul_scalar(c);
            let negative: Tensor<B, 2, Bool> = advantages.lower_elem(0.0);
            let lower_hit = surrogate
                .clone()
                .greater(bound.clone())
                .bool_and(negative.clone());
            let frac = scalar(masked_mean(indicator(lower_hit, &mask), mask.clone()));
            let dual = surrogate.clone().min_pair(bound);
            (surrogate.mask_where(negative, dual), frac)
        }
        None => (surrogate, 0.0),
    };

    // 4. Off-policy correction, then aggregation.
    let per_token = apply_is_weights(per_token, is_weights);
    let loss = agg_loss(per_token, mask, agg);
    PolicyLossOutput {
        metrics: PolicyLossMetrics {
            pg_loss: scalar(loss.clone()),
            clip_frac,
            clip_frac_lower,
            ppo_kl,
            kl_loss: None,
            entropy: None,
        },
        loss,
    }
}

/// GSPO: PPO-style clipping of a *sequence*-level ratio.
///
/// Zheng et al. 2025, "Group Sequence Policy Optimization" (arXiv:2507.18071); verl
/// `compute_policy_loss_gspo`. The sequence ratio is the geometric mean of the token ratios,
/// `s_i = exp(mean_t (log_prob - old_log_prob))` over valid tokens. Each token uses
/// `s_it = sg[s_i] * pi_t / sg[pi_t]` (`sg` = stop-gradient): its value is `s_i` but its gradient
/// flows through its own log-prob only, as in the paper's GSPO-token form. The log of `s_it` is
/// clamped to at most 10. The loss is `max(-A * s_it, -A * clip(s_it, 1 - low, 1 + high))`,
/// aggregated with `seq_mean_token_mean` whatever the run's `agg` (verl hard-codes it for GSPO).
/// The paper's clip range is tiny (`low = 3e-4`, `high = 4e-4`), since sequence ratios stay near 1.
pub fn gspo_loss<B: Backend>(
    inputs: &PolicyInputs<B>,
    is_weights: Option<Tensor<B, 2>>,
    clip: ClipRange,
) -> PolicyLossOutput<B> {
    let mask = inputs.response_mask.clone();
    let log_prob = inputs.log_prob.clone();

    // 1. Per-sequence mean log-ratio over valid tokens, (B, 1).
    let log_ratio = log_prob.clone().sub(inputs.old_log_prob.clone());
    let ppo_kl = scalar(masked_mean(log_ratio.clone().detach().neg(), mask.clone()));
    let lengths = mask.clone().sum_dim(1).clamp_min(1.0);
    let seq_log_ratio = masked_values(log_ratio, mask.clone())
        .sum_dim(1)
        .div(lengths);

    // 2. Token-level ratio with the sequence value and the token's own gradient.
    let token_log_ratio = log_prob
        .clone()
        .sub(log_prob.detach())
        .add(seq_log_ratio.detach());
    let ratio = token_log_ratio.clamp_max(GSPO_LOG_RATIO_MAX).exp();

    // 3. Clipped surrogate.
    let neg_adv = inputs.advantages.clone().neg();
    let unclipped = neg_adv.clone().mul(ratio.clone());
    let clipped = neg_adv.mul(ratio.clamp(1.0 - clip.low, 1.0 + clip.high));
    let clip_hit = clipped.clone().greater(unclipped.clone());
    let clip_frac = scalar(masked_mean(indicator(clip_hit, &mask), mask.clone()));
    let per_token = apply_is_weights(unclipped.max_pair(clipped), is_weights);

    let loss = agg_loss(per_token, mask, LossAgg::SeqMeanTokenMean);
    PolicyLossOutput {
        metrics: PolicyLossMetrics {
            pg_loss: scalar(loss.clone()),
            clip_frac,
            clip_frac_lower: 0.0,
            ppo_kl,
            kl_loss: None,
            entropy: None,
        },
        loss,
    }
}

/// Truncated importance-sampling weights, token level:
/// `min(exp(clamp(old_log_prob - rollout_log_prob, -20, 20)), cap)` on valid tokens, 0 elsewhere,
/// detached.
///
/// Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training": the
/// actor's sampler (`rollout_log_prob`, recorded while generating) and the learner's recompute of
/// the same policy (`old_log_prob`) disagree numerically, so the batch is slightly off-policy; the
/// weight corrects for it and the cap bounds its variance. verl `compute_rollout_correction_weights`
/// with `rollout_is = "token"` (no batch normalisation).
pub fn tis_weights<B: Backend>(
    old_log_prob: Tensor<B, 2>,
    rollout_log_prob: Tensor<B, 2>,
    response_mask: Tensor<B, 2>,
    cap: f64,
) -> Tensor<B, 2> {
    let log_ratio = old_log_prob
        .sub(rollout_log_prob)
        .clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND);
    masked_values(log_ratio.exp(), response_mask)
        .clamp_max(cap)
        .detach()
}

fn apply_is_weights<B: Backend>(
    per_token: Tensor<B, 2>,
    is_weights: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    match is_weights {
        Some(weights) => per_token.mul(weights.detach()),
        None => per_token,
    }
}

/// A per-token estimator of `KL(pi || pi_ref)` from the sampled token's log-probs.
///
/// Schulman 2020, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html); verl
/// `kl_penalty`, whose names are accepted as aliases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// `log_prob - ref_log_prob`: unbiased, high variance, can be negative (verl `kl`).
    #[serde(alias = "kl")]
    K1,
    /// `0.5 * (log_prob - ref_log_prob)^2` (verl `mse`).
    #[serde(alias = "mse")]
    K2,
    /// `exp(d) - d - 1` with `d = clamp(ref_log_prob - log_prob, -20, 20)`, clamped to `[-10, 10]`:
    /// unbiased, non-negative, low variance (verl `low_var_kl`, its default for the KL loss).
    #[default]
    #[serde(alias = "low_var_kl")]
    K3,
    /// `|log_prob - ref_log_prob|`.
    Abs,
}

/// The per-token KL estimate `(B, L)` between the policy and a reference, see [`KlEstimator`].
pub fn kl_penalty<B: Backend>(
    log_prob: Tensor<B, 2>,
    ref_log_prob: Tensor<B, 2>,
    kind: KlEstimator,
) -> Tensor<B, 2> {
    match kind {
        KlEstimator::K1 => log_prob.sub(ref_log_prob),
        KlEstimator::K2 => log_prob.sub(ref_log_prob).square().mul_scalar(0.5),
        KlEstimator::K3 => {
            let d = ref_log_prob
                .sub(log_prob)
                .clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND);
            d.clone()
                .exp()
                .sub(d)
                .sub_scalar(1.0)
                .clamp(-K3_BOUND, K3_BOUND)
        }
        KlEstimator::Abs => log_prob.sub(ref_log_prob).abs(),
    }
}

/// Entropy of the categorical distribution at every position: `(B, L, V)` logits → `(B, L)`.
///
/// `logsumexp(z) - sum_v softmax(z)_v * z_v`, verl `entropy_from_logits`. Differentiable; the
/// logsumexp is shifted by the (detached) row maximum for stability. Materialises a `(B, L, V)`
/// softmax: chunk over `B` or `L` for large vocabularies.
pub fn entropy_from_logits<B: Backend>(logits: Tensor<B, 3>) -> Tensor<B, 2> {
    // 1. (B, L, V) -> (B, L, 1) logsumexp.
    let max = logits.clone().max_dim(2).detach();
    let log_sum_exp = logits
        .clone()
        .sub(max.clone())
        .exp()
        .sum_dim(2)
        .log()
        .add(max);
    // 2. (B, L, V) -> (B, L, 1) expected logit under the softmax.
    let expected_logit = softmax(logits.clone(), 2).mul(logits).sum_dim(2);
    // 3. (B, L, 1) -> (B, L)
    log_sum_exp.sub(expected_logit).squeeze_dim(2)
}

/// Supervised fine-tuning loss: the negative log-likelihood of the response tokens, aggregated.
pub fn sft_loss<B: Backend>(
    log_prob: Tensor<B, 2>,
    response_mask: Tensor<B, 2>,
    agg: LossAgg,
) -> Tensor<B, 1> {
    agg_loss(log_prob.neg(), response_mask, agg)
}

/// What [`value_loss`] returns: the loss and the share of tokens where the clipped branch was the
/// larger (verl's `vf_clipfrac`).
#[derive(Debug, Clone)]
pub struct ValueLoss<B: Backend> {
    pub loss: Tensor<B, 1>,
    pub clip_frac: f64,
}

/// PPO's clipped value loss (verl `compute_value_loss`):
/// `0.5 * agg(max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2))` with `V` the critic's
/// predictions, `V_old` its values when the rollouts were scored, `R` GAE's returns and `c` =
/// `clip_range`, so one update cannot move a value further than `c` from where it started.
pub fn value_loss<B: Backend>(
    vpreds: Tensor<B, 2>,
    old_values: Tensor<B, 2>,
    returns: Tensor<B, 2>,
    response_mask: Tensor<B, 2>,
    clip_range: f64,
    agg: LossAgg,
) -> ValueLoss<B> {
    let clipped = vpreds
        .clone()
        .sub(old_values.clone())
        .clamp(-clip_range, clip_range)
        .add(old_values);
    let unclipped_loss = vpreds.sub(returns.clone()).powi_scalar(2);
    let clipped_loss = clipped.sub(returns).powi_scalar(2);
    let hit = clipped_loss.clone().greater(unclipped_loss.clone());
    let clip_frac = scalar(masked_mean(indicator(hit, &response_mask), response_mask.clone()));
    let worst = unclipped_loss.max_pair(clipped_loss);
    ValueLoss { loss: agg_loss(worst, response_mask, agg).mul_scalar(0.5), clip_frac }
}

/// The policy-gradient objective of a run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyObjective {
    /// Token-level clipped ratio, see [`ppo_clip_loss`].
    PpoClip {
        /// `eps_low`: the ratio is clipped below at `1 - clip_low`.
        #[serde(default = "default_ppo_clip")]
        clip_low: f64,
        /// `eps_high`: the ratio is clipped above at `1 + clip_high` (DAPO uses 0.28).
        #[serde(default = "default_ppo_clip")]
        clip_high: f64,
        /// Dual-clip constant `c > 1` for negative advantages; absent = off. verl always applies
        /// `c = 3`.
        #[serde(default)]
        dual_clip: Option<f64>,
    },
    /// Sequence-level clipped ratio, see [`gspo_loss`].
    Gspo {
        #[serde(default = "default_gspo_clip_low")]
        clip_low: f64,
        #[serde(default = "default_gspo_clip_high")]
        clip_high: f64,
    },
}

fn default_ppo_clip() -> f64 {
    0.2
}

fn default_gspo_clip_low() -> f64 {
    3e-4
}

fn default_gspo_clip_high() -> f64 {
    4e-4
}

impl Default for PolicyObjective {
    /// PPO-clip with verl's `clip_ratio = 0.2` on both sides, no dual clip.
    fn default() -> Self {
        Self::PpoClip {
            clip_low: default_ppo_clip(),
            clip_high: default_ppo_clip(),
            dual_clip: None,
        }
    }
}

/// A KL penalty to the reference policy inside the loss (verl `use_kl_loss`, as GRPO does).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlLossConfig {
    /// Weight of the aggregated KL in the loss (verl `kl_loss_coef`, default 0.001).
    #[serde(default = "default_kl_coef")]
    pub coef: f64,
    /// Estimator (verl `kl_loss_type`, default `low_var_kl` = k3).
    #[serde(default)]
    pub estimator: KlEstimator,
}

fn default_kl_coef() -> f64 {
    0.001
}

/// The actor's loss (`[policy_loss]` in the run config). Defaults are verl's actor defaults: PPO-clip
/// with `clip_low = clip_high = 0.2`, `token_mean`, no KL loss, entropy coefficient 0, no TIS. One
/// departure: dual clip is off unless `dual_clip` is set (verl always uses `c = 3`).
///
/// ```toml
/// [policy_loss]
/// agg = "token_mean"
/// tis_cap = 2.0
/// entropy_coeff = 0.0
/// objective = { kind = "ppo_clip", clip_low = 0.2, clip_high = 0.28, dual_clip = 3.0 }
/// kl = { coef = 0.001, estimator = "k3" }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyLossConfig {
    pub objective: PolicyObjective,
    /// Aggregation of the PPO-clip term and of the KL and entropy terms (GSPO's own term always
    /// uses `seq_mean_token_mean`).
    pub agg: LossAgg,
    /// Cap of the truncated importance-sampling weights ([`tis_weights`]); absent = no correction.
    pub tis_cap: Option<f64>,
    /// KL penalty to the reference policy; absent = none.
    pub kl: Option<KlLossConfig>,
    /// Weight of the entropy bonus (subtracted from the loss); 0 = none.
    pub entropy_coeff: f64,
}

impl PolicyLossConfig {
    /// Rejects values the losses are not defined for, naming the field.
    pub fn validate(&self) -> Result<(), AlgoError> {
        let (clip_low, clip_high) = match self.objective {
            PolicyObjective::PpoClip {
                clip_low,
                clip_high,
                dual_clip,
            } => {
                if let Some(c) = dual_clip
                    && !(c.is_finite() && c > 1.0)
                {
                    return Err(config_error(
                        "policy_loss.objective.dual_clip",
                        format!(
                            "is {c}: the dual-clip constant must be greater than 1 (verl uses 3.0)"
                        ),
                    ));
                }
                (clip_low, clip_high)
            }
            PolicyObjective::Gspo {
                clip_low,
                clip_high,
            } => (clip_low, clip_high),
        };
        if !(0.0..1.0).contains(&clip_low) {
            return Err(config_error(
                "policy_loss.objective.clip_low",
                format!(
                    "is {clip_low}: it must lie in [0, 1) so that 1 - clip_low is a positive ratio"
                ),
            ));
        }
        if !(clip_high.is_finite() && clip_high >= 0.0) {
            return Err(config_error(
                "policy_loss.objective.clip_high",
                format!("is {clip_high}: it must be finite and non-negative"),
            ));
        }
        if let LossAgg::SeqMeanTokenSumNorm { constant } = self.agg
            && !(constant.is_finite() && constant > 0.0)
        {
            return Err(config_error(
                "policy_loss.agg.seq_mean_token_sum_norm.constant",
                format!(
                    "is {constant}: use a positive constant such as the maximum response length"
                ),
            ));
        }
        if let Some(cap) = self.tis_cap
            && !(cap.is_finite() && cap > 0.0)
        {
            return Err(config_error(
                "policy_loss.tis_cap",
                format!("is {cap}: it must be positive (2.0 is common); remove it to turn TIS off"),
            ));
        }
        if let Some(kl) = self.kl
            && !(kl.coef.is_finite() && kl.coef >= 0.0)
        {
            return Err(config_error(
                "policy_loss.kl.coef",
                format!("is {}: it must be finite and non-negative", kl.coef),
            ));
        }
        if !self.entropy_coeff.is_finite() {
            return Err(config_error(
                "policy_loss.entropy_coeff",
                format!("is {}: it must be finite", self.entropy_coeff),
            ));
        }
        Ok(())
    }
}

fn config_error(field: &'static str, message: String) -> AlgoError {
    AlgoError::Config { field, message }
}

/// Per-token tensors that only some configurations read, all `(B, L)`.
#[derive(Clone, Debug)]
pub struct PolicyExtras<B: Backend> {
    /// The sampler's log-probs recorded by the actor; needed when `tis_cap` is set.
    pub rollout_log_prob: Option<Tensor<B, 2>>,
    /// The reference policy's log-probs; needed when `kl` is set.
    pub ref_log_prob: Option<Tensor<B, 2>>,
    /// Per-token entropy of the current policy (e.g. [`entropy_from_logits`], kept differentiable to
    /// let the bonus train); needed when `entropy_coeff != 0`, logged whenever given.
    pub entropy: Option<Tensor<B, 2>>,
}

impl<B: Backend> Default for PolicyExtras<B> {
    fn default() -> Self {
        Self {
            rollout_log_prob: None,
            ref_log_prob: None,
            entropy: None,
        }
    }
}

/// The actor's loss under `config`, as verl's `dp_actor` assembles it:
/// `pg_loss - entropy_coeff * agg(entropy) + kl.coef * agg(kl_penalty(log_prob, ref_log_prob))`,
/// where `pg_loss` is [`ppo_clip_loss`] or [`gspo_loss`], weighted by [`tis_weights`] when
/// `tis_cap` is set.
///
/// Fails when the config is invalid or asks for an input that `extras` lacks.
pub fn policy_loss<B: Backend>(
    config: &PolicyLossConfig,
    inputs: &PolicyInputs<B>,
    extras: &PolicyExtras<B>,
) -> Result<PolicyLossOutput<B>, AlgoError> {
    config.validate()?;
    let mask = inputs.response_mask.clone();

    let is_weights = match (config.tis_cap, &extras.rollout_log_prob) {
        (None, _) => None,
        (Some(cap), Some(rollout)) => Some(tis_weights(
            inputs.old_log_prob.clone(),
            rollout.clone(),
            mask.clone(),
            cap,
        )),
        (Some(_), None) => {
            return Err(config_error(
                "policy_loss.tis_cap",
                "is set but the batch has no rollout log-probs: record them in the actor or remove tis_cap".into(),
            ));
        }
    };

    let PolicyLossOutput {
        mut loss,
        mut metrics,
    } = match config.objective {
        PolicyObjective::PpoClip {
            clip_low,
            clip_high,
            dual_clip,
        } => ppo_clip_loss(
            inputs,
            is_weights,
            ClipRange {
                low: clip_low,
                high: clip_high,
            },
            dual_clip,
            config.agg,
        ),
        PolicyObjective::Gspo {
            clip_low,
            clip_high,
        } => gspo_loss(
            inputs,
            is_weights,
            ClipRange {
                low: clip_low,
                high: clip_high,
            },
        ),
    };

    match &extras.entropy {
        Some(entropy) => {
            let entropy = agg_loss(entropy.clone(), mask.clone(), config.agg);
            metrics.entropy = Some(scalar(entropy.clone()));
            if config.entropy_coeff != 0.0 {
                loss = loss.sub(entropy.mul_scalar(config.entropy_coeff));
            }
        }
        None if config.entropy_coeff != 0.0 => {
            return Err(config_error(
                "policy_loss.entropy_coeff",
                "is non-zero but no per-token entropy was given: compute it from the logits or set it to 0".into(),
            ));
        }
        None => {}
    }

    if let Some(kl) = config.kl {
        let Some(ref_log_prob) = &extras.ref_log_prob else {
            return Err(config_error(
                "policy_loss.kl",
                "is set but the batch has no reference log-probs: run the reference model or remove `kl`".into(),
            ));
        };
        let per_token = kl_penalty(inputs.log_prob.clone(), ref_log_prob.clone(), kl.estimator);
        let kl_loss = agg_loss(per_token, mask, config.agg);
        metrics.kl_loss = Some(scalar(kl_loss.clone()));
        loss = loss.add(kl_loss.mul_scalar(kl.coef));
    }

    Ok(PolicyLossOutput { loss, metrics })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::to_host;
    use burn::tensor::{DType, TensorData};
    use rlvr_common::model::{Cpu, CpuAutodiff};

    fn t2<B: Backend>(values: Vec<f64>, shape: [usize; 2]) -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(values, shape),
            (&Default::default(), DType::F64),
        )
    }

    fn inputs<B: Backend>(
        log_prob: Vec<f64>,
        old: Vec<f64>,
        adv: Vec<f64>,
        mask: Vec<f64>,
        shape: [usize; 2],
    ) -> PolicyInputs<B> {
        PolicyInputs {
            log_prob: t2(log_prob, shape),
            old_log_prob: t2(old, shape),
            advantages: t2(adv, shape),
            response_mask: t2(mask, shape),
        }
    }

    #[test]
    fn on_policy_ppo_loss_is_minus_mean_advantage_with_no_clipping() {
        let logp = vec![-0.5, -1.0, -2.0, -0.1];
        let out = ppo_clip_loss(
            &inputs::<Cpu>(
                logp.clone(),
                logp,
                vec![1.0, 1.0, -2.0, 7.0],
                vec![1.0, 1.0, 1.0, 0.0],
                [2, 2],
            ),
            None,
            ClipRange::symmetric(0.2),
            Some(3.0),
            LossAgg::TokenMean,
        );
        assert!(
            (scalar(out.loss) - 0.0).abs() < 1e-12,
            "(-1 - 1 + 2) / 3 = 0"
        );
        assert_eq!(out.metrics.clip_frac, 0.0);
        assert_eq!(out.metrics.clip_frac_lower, 0.0);
        assert_eq!(out.metrics.ppo_kl, 0.0);
    }

    #[test]
    fn clipped_tokens_get_no_gradient() {
        // Token 0: A > 0, ratio e^0.5 > 1.2 → clipped, zero gradient. Token 1: A > 0, ratio 1 → -A.
        let logp = t2::<CpuAutodiff>(vec![-0.5, -1.0], [1, 2]).require_grad();
        let batch = PolicyInputs {
            log_prob: logp.clone(),
            old_log_prob: t2(vec![-1.0, -1.0], [1, 2]),
            advantages: t2(vec![1.0, 2.0], [1, 2]),
            response_mask: t2(vec![1.0, 1.0], [1, 2]),
        };
        let out = ppo_clip_loss(
            &batch,
            None,
            ClipRange::symmetric(0.2),
            None,
            LossAgg::TokenMean,
        );
        // verl's masked_mean: 1 clipped token / (2 tokens + 1e-8).
        assert!((out.metrics.clip_frac - 1.0 / (2.0 + 1e-8)).abs() < 1e-15);
        let grads = out.loss.backward();
        let grad = to_host(logp.grad(&grads).unwrap());
        assert_eq!(grad[0], 0.0);
        assert!((grad[1] + 1.0).abs() < 1e-12, "{grad:?}");
    }

    #[test]
    fn every_aggregation_of_a_constant_loss_is_that_constant_up_to_the_norm() {
        let loss = t2::<Cpu>(vec![2.0; 6], [2, 3]);
        let mask = t2::<Cpu>(vec![1.0, 1.0, 0.0, 1.0, 0.0, 0.0], [2, 3]);
        let value = |agg| scalar(agg_loss(loss.clone(), mask.clone(), agg));
        assert_eq!(value(LossAgg::TokenMean), 2.0);
        assert!((value(LossAgg::SeqMeanTokenMean) - 2.0).abs() < 1e-7);
        assert_eq!(value(LossAgg::SeqMeanTokenSum), (4.0 + 2.0) / 2.0);
        assert_eq!(
            value(LossAgg::SeqMeanTokenSumNorm { constant: 3.0 }),
            (4.0 / 3.0 + 2.0 / 3.0) / 2.0
        );
    }

    #[test]
    fn an_empty_batch_gives_a_zero_loss_and_zero_gradient() {
        let logp = t2::<CpuAutodiff>(vec![-1.0, f64::NAN], [1, 2]).require_grad();
        let mask = t2::<CpuAutodiff>(vec![0.0, 0.0], [1, 2]);
        for agg in [
            LossAgg::TokenMean,
            LossAgg::SeqMeanTokenMean,
            LossAgg::SeqMeanTokenSum,
            LossAgg::SeqMeanTokenSumNorm { constant: 4.0 },
        ] {
            let loss = sft_loss(logp.clone(), mask.clone(), agg);
            assert_eq!(scalar(loss.clone()), 0.0, "{agg:?}");
            let grad = to_host(logp.grad(&loss.backward()).unwrap());
            assert!(grad.iter().all(|g| *g == 0.0), "{agg:?}: {grad:?}");
        }
    }

    #[test]
    fn kl_estimators_vanish_when_policies_agree_and_k3_is_bounded() {
        let logp = t2::<Cpu>(vec![-0.3, -2.0, -5.0], [1, 3]);
        for kind in [
            KlEstimator::K1,
            KlEstimator::K2,
            KlEstimator::K3,
            KlEstimator::Abs,
        ] {
            let kl = to_host(kl_penalty(logp.clone(), logp.clone(), kind));
            assert!(kl.iter().all(|k| k.abs() < 1e-15), "{kind:?}: {kl:?}");
        }
        let far = to_host(kl_penalty(
            logp.clone(),
            logp.add_scalar(40.0),
            KlEstimator::K3,
        ));
        assert!(far.iter().all(|&k| k == K3_BOUND), "{far:?}");
    }

    #[test]
    fn entropy_of_uniform_logits_is_log_vocab() {
        let logits: Tensor<Cpu, 3> = Tensor::from_data(
            TensorData::new(vec![3.0; 2 * 5], [1, 2, 5]),
            (&Default::default(), DType::F64),
        );
        let entropy = to_host(entropy_from_logits(logits));
        assert!(
            entropy.iter().all(|h| (h - 5f64.ln()).abs() < 1e-12),
            "{entropy:?}"
        );
    }

    #[test]
    fn tis_weights_are_capped_masked_and_one_on_policy() {
        let old = t2::<Cpu>(vec![-1.0, -1.0, -1.0], [1, 3]);
        let rollout = t2::<Cpu>(vec![-1.0, -3.0, -0.5], [1, 3]);
        let mask = t2::<Cpu>(vec![1.0, 1.0, 0.0], [1, 3]);
        assert_eq!(
            to_host(tis_weights(old, rollout, mask, 2.0)),
            vec![1.0, 2.0, 0.0]
        );
    }

    #[test]
    fn config_parses_from_toml_with_defaults_and_rejects_bad_fields() {
        let config: PolicyLossConfig = toml::from_str(
            r#"
            agg = { seq_mean_token_sum_norm = { constant = 4096.0 } }
            tis_cap = 2.0
            objective = { kind = "gspo" }
            kl = { estimator = "low_var_kl" }
            "#,
        )
        .unwrap();
        assert_eq!(
            config.objective,
            PolicyObjective::Gspo {
                clip_low: 3e-4,
                clip_high: 4e-4
            }
        );
        assert_eq!(
            config.agg,
            LossAgg::SeqMeanTokenSumNorm { constant: 4096.0 }
        );
        assert_eq!(
            config.kl,
            Some(KlLossConfig {
                coef: 0.001,
                estimator: KlEstimator::K3
            })
        );
        config.validate().unwrap();

        let default: PolicyLossConfig = toml::from_str("").unwrap();
        assert_eq!(default, PolicyLossConfig::default());
        assert_eq!(default.agg, LossAgg::TokenMean);

        assert!(toml::from_str::<PolicyLossConfig>("clip = 0.2").is_err());
        let bad: PolicyLossConfig =
            toml::from_str(r#"objective = { kind = "ppo_clip", dual_clip = 0.5 }"#).unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("policy_loss.objective.dual_clip"), "{err}");
    }

    #[test]
    fn policy_loss_names_the_missing_input() {
        let batch = inputs::<Cpu>(vec![-1.0], vec![-1.0], vec![1.0], vec![1.0], [1, 1]);
        let config = PolicyLossConfig {
            kl: Some(KlLossConfig {
                coef: 0.1,
                estimator: KlEstimator::K3,
            }),
            ..PolicyLossConfig::default()
        };
        let err = policy_loss(&config, &batch, &PolicyExtras::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("policy_loss.kl"), "{err}");
        let config = PolicyLossConfig {
            tis_cap: Some(2.0),
            ..PolicyLossConfig::default()
        };
        let err = policy_loss(&config, &batch, &PolicyExtras::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("policy_loss.tis_cap"), "{err}");
    }
}
