//! The run configuration: one TOML file with the sections `[model]`, `[data]`, `[rollout]`, `[reward]`,
//! `[algorithm]`, `[optimizer]`, `[runtime]`. Every field has a documented default, so an empty file (or
//! none) is the built-in run: GRPO on generated arithmetic with SmolLM2-135M-Instruct, sized for a
//! 2-core laptop. Unknown fields are errors (a typo must not silently fall back to a default), and
//! [`RunConfig::validate`] names the field and the fix for every inconsistent setting.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rlvr_common::model::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::algo::advantage::{AdvantageConfig, AdvantageEstimator};
use crate::algo::loss::PolicyLossConfig;
use crate::data::DataSource;
use crate::optim::{AdamWConfig, LrDecay, LrSchedule, OptimError};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    pub data: DataSection,
    pub rollout: RolloutSection,
    pub reward: RewardSection,
    pub algorithm: AlgorithmSection,
    pub optimizer: OptimizerSection,
    pub runtime: RuntimeSection,
    pub distributed: DistributedSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// An HF checkpoint directory (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub path: PathBuf,
    /// A system message put before every prompt (the chat template's default when absent).
    pub system_prompt: Option<String>,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self { path: PathBuf::from("models/smollm2-135m-instruct"), system_prompt: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    pub source: DataSource,
    /// Text appended to every question (the answer format the reward expects).
    pub instruction: String,
    /// Prompts per rollout batch (each sampled `rollout.group_size` times).
    pub prompts_per_step: usize,
    /// Held-out prompts, never trained on, for `eval` before and after training.
    pub eval_prompts: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            source: DataSource::default(),
            instruction: "Reply with only the final answer as a number.".into(),
            prompts_per_step: 8,
            eval_prompts: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutSection {
    /// Samples per prompt (GRPO's G).
    pub group_size: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    pub max_new_tokens: usize,
    /// Rows decoded together by the actor.
    pub max_batch: usize,
    /// DAPO dynamic sampling: drop groups whose rewards are all equal and draw more prompts until the
    /// batch has `data.prompts_per_step` informative groups (at most `max_draw_factor` times as many
    /// prompts drawn).
    pub dynamic_sampling: bool,
    pub max_draw_factor: usize,
    /// Sample each group alone (its samples batched together, never with another group's), so that a
    /// group's tokens do not depend on which groups shared its batch: CPU matmuls sum in an order that
    /// depends on the batch's size, and a last-bit difference in a logit occasionally flips a sampled
    /// token. Makes distributed runs reproduce the embedded run bit for bit whatever the actors' share
    /// of the work, at the cost of cross-group batching (slower sampling).
    pub batch_invariant: bool,
}

impl Default for RolloutSection {
    fn default() -> Self {
        Self {
            group_size: 8,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 24,
            max_batch: 256,
            dynamic_sampling: false,
            max_draw_factor: 3,
            batch_invariant: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardSection {
    /// `math` (answer equivalence; the only reward the embedded loop trains on for now).
    pub kind: String,
    /// DAPO's soft overlong penalty: the last `overlong_buffer` tokens before `rollout.max_new_tokens`
    /// cost up to `overlong_penalty` (0 = off).
    pub overlong_buffer: usize,
    pub overlong_penalty: f32,
}

impl Default for RewardSection {
    fn default() -> Self {
        Self { kind: "math".into(), overlong_buffer: 0, overlong_penalty: 0.0 }
    }
}

/// `[algorithm]`: the advantage estimator (`[algorithm.advantage]`: `estimator`, `gamma`, `lam`,
/// `grpo_eps`) and the policy loss (`[algorithm.policy_loss]`: `objective`, `agg`, `tis_cap`, `kl`,
/// `entropy_coeff`), with verl's defaults: GRPO, PPO-clip at 0.2 on both sides, token-mean, no KL, no
/// entropy bonus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlgorithmSection {
    pub advantage: AdvantageConfig,
    pub policy_loss: PolicyLossConfig,
    /// Optimiser steps per rollout batch (the batch is split into this many mini-batches, in order).
    pub mini_batches: usize,
    /// The critic, trained only with `advantage.estimator = "gae"`.
    pub critic: CriticSection,
    /// How async mode corrects for rollouts sampled with older weights (sync mode has none to
    /// correct): `"tis"` (default) or `"none"`.
    pub stale_correction: StaleCorrection,
}

impl Default for AlgorithmSection {
    fn default() -> Self {
        Self {
            advantage: AdvantageConfig::default(),
            policy_loss: PolicyLossConfig::default(),
            mini_batches: 1,
            critic: CriticSection::default(),
            stale_correction: StaleCorrection::default(),
        }
    }
}

/// The correction async mode applies to stale rollouts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleCorrection {
    /// Truncated importance sampling against the actor's own log-probs (Yao et al. 2025, "Your
    /// Efficient RL Framework Secretly Brings You Off-Policy RL Training"; verl's
    /// `rollout_is = "token"`): each token's loss weighted by `min(pi_old / pi_rollout, cap)`, with
    /// `policy_loss.tis_cap` as the cap, [`DEFAULT_TIS_CAP`] when it is unset.
    #[default]
    Tis,
    /// No correction: the stale samples train as if fresh (ratios against the learner's recomputed
    /// log-probs only).
    None,
}

/// The TIS cap async mode uses when `policy_loss.tis_cap` is unset (verl's default threshold).
pub const DEFAULT_TIS_CAP: f64 = 2.0;

/// `[algorithm.critic]`: PPO's value model (the policy's transformer with a scalar head, initialised
/// from the policy's weights), used when `algorithm.advantage.estimator = "gae"`. verl's defaults:
/// AdamW at 1e-5 (the policy's betas, eps and weight decay, a constant schedule), value clipping at 0.5,
/// token-mean loss, grad-norm clip 1.0, no warm-up; one critic step per policy step, on the same
/// mini-batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriticSection {
    pub lr: f64,
    /// A value may move at most this far from its rollout-time value in one update (`cliprange_value`).
    pub value_clip: f64,
    /// Global gradient-norm clip of the critic (0 = off).
    pub grad_clip: f64,
    /// Rollout batches at the start of a run that train only the critic (verl's `critic_warmup`),
    /// so that the first policy updates see values rather than the head's initial zeros.
    pub warmup_steps: usize,
}

impl Default for CriticSection {
    fn default() -> Self {
        Self { lr: 1e-5, value_clip: 0.5, grad_clip: 1.0, warmup_steps: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerSection {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    pub warmup_steps: usize,
    /// `constant` or `cosine` after the warmup.
    pub schedule: String,
    pub min_lr_ratio: f64,
}

impl Default for OptimizerSection {
    fn default() -> Self {
        Self {
            lr: 2e-5,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: 1.0,
            warmup_steps: 0,
            schedule: "constant".into(),
            min_lr_ratio: 0.0,
        }
    }
}

/// How rollout and training overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Generate a batch, then train on it.
    Sync,
    /// One step off-policy: the actor samples batch k+1 with weights k while the learner trains on batch k.
    Async,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSection {
    /// Rollout batches (= weight versions published).
    pub steps: usize,
    pub mode: Mode,
    /// Versions a rollout may lag the learner's weights when trained on.
    pub max_staleness: u64,
    /// Tokens (prompt + response) per micro-batch; gradients accumulate over micro-batches.
    pub micro_batch_tokens: usize,
    pub seed: u64,
    pub run_dir: PathBuf,
    /// Save a checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Evaluate the held-out set before and after training.
    pub eval: bool,
    /// Samples per held-out prompt in evaluation (pass@k for k up to this).
    pub eval_samples: usize,
    pub eval_temperature: f32,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        Self {
            steps: 12,
            mode: Mode::Sync,
            max_staleness: 1,
            micro_batch_tokens: 4096,
            seed: 0,
            run_dir: PathBuf::from("runs/default"),
            checkpoint_every: 0,
            eval: true,
            eval_samples: 4,
            eval_temperature: 1.0,
        }
    }
}

/// `[distributed]`: how `rlvr learner` and its workers meet in Redis (ignored by `rlvr train`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributedSection {
    /// The run's name: every Redis key of the run is under `rlvr:{run}:`.
    pub run: String,
    /// Where the learner's weight server listens (port 0: any free port).
    pub weights_bind: String,
    /// The host name actors reach the weight server by (default: this machine's host name).
    pub weights_host: Option<String>,
    /// A task or group held this long by a worker that stopped saying it is busy with it is given to
    /// another worker.
    pub visibility_timeout_s: f64,
    /// Deliveries of one entry before it goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// A group whose scored result has not arrived this long after it was issued is issued again
    /// (covers entries lost in a Redis restart, and dead-lettered ones).
    pub reissue_after_s: f64,
}

impl Default for DistributedSection {
    fn default() -> Self {
        Self {
            run: "default".into(),
            weights_bind: "0.0.0.0:0".into(),
            weights_host: None,
            visibility_timeout_s: 60.0,
            max_deliveries: 5,
            reissue_after_s: 300.0,
        }
    }
}

/// What `rlvr plan`'s memory estimate needs to know of the model.
#[derive(Clone, Debug)]
pub struct ModelSize {
    pub params: usize,
    pub hidden: usize,
    pub kv_dim: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub vocab: usize,
}

impl ModelSize {
    pub fn of(config: &ModelConfig, params: usize) -> Self {
        Self {
            params,
            hidden: config.hidden_size,
            kv_dim: config.num_key_value_heads * config.head_dim,
            intermediate: config.intermediate_size,
            layers: config.num_hidden_layers,
            vocab: config.vocab_size,
        }
    }

    /// SmolLM2-135M-Instruct, the default model: for a plan made before it is set up.
    pub fn smollm2_135m() -> Self {
        Self { params: 134_515_008, hidden: 576, kv_dim: 192, intermediate: 1536, layers: 30, vocab: 49_152 }
    }

    /// What backward keeps of a micro-batch of `tokens` tokens, `response_tokens` of them through the
    /// LM head. Per token and layer the model's fused nodes keep the layer's input and its norm's
    /// output twice over (attention and MLP halves), q, k, v and the attention's output, the output
    /// projection's input, and the MLP's gate, up and gated product: `7 hidden + 2 kv + 3 intermediate`
    /// floats. The head keeps its logits, and backward adds their softmax and gradient.
    pub fn activation_bytes(&self, tokens: usize, response_tokens: usize) -> usize {
        let per_token_layer = 7 * self.hidden + 2 * self.kv_dim + 3 * self.intermediate;
        4 * (tokens * self.layers * per_token_layer + 3 * response_tokens * self.vocab)
    }
}

impl RunConfig {
    /// Reads a TOML file; fields it does not set keep their defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the run config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting that can be wrong on its own or together; errors name the field and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        let (r, a, o, rt, d) = (&self.rollout, &self.algorithm, &self.optimizer, &self.runtime, &self.data);
        let estimator = a.advantage.estimator;
        if estimator.uses_groups() && r.group_size < 2 {
            bail!(
                "`rollout.group_size` is {}: {estimator:?} compares samples of the same prompt and needs at least 2 per prompt; \
                 set rollout.group_size = 8 (or use algorithm.advantage.estimator = \"reinforce_plus_plus\")",
                r.group_size
            );
        }
        let c = &a.critic;
        if !(c.lr.is_finite() && c.lr > 0.0) {
            bail!("`algorithm.critic.lr` is {}: it must be above 0 (verl uses 1e-5)", c.lr);
        }
        if !(c.value_clip.is_finite() && c.value_clip > 0.0) {
            bail!("`algorithm.critic.value_clip` is {}: it must be above 0 (verl uses 0.5)", c.value_clip);
        }
        if !(c.grad_clip.is_finite() && c.grad_clip >= 0.0) {
            bail!("`algorithm.critic.grad_clip` is {}: it must be 0 (off) or above", c.grad_clip);
        }
        a.advantage.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        a.policy_loss.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        if r.group_size == 0 || d.prompts_per_step == 0 {
            bail!("`rollout.group_size` and `data.prompts_per_step` must be at least 1");
        }
        if r.temperature.is_nan() || r.temperature <= 0.0 {
            bail!("`rollout.temperature` is {}: RL needs sampling, set it above 0 (1.0 is usual)", r.temperature);
        }
        if !(r.top_p > 0.0 && r.top_p <= 1.0) {
            bail!("`rollout.top_p` is {}: it must be in (0, 1]", r.top_p);
        }
        if r.max_batch < r.group_size {
            bail!(
                "`rollout.max_batch` ({}) is smaller than `rollout.group_size` ({}): the actor samples a whole group in one batch; raise max_batch to at least group_size",
                r.max_batch,
                r.group_size
            );
        }
        if r.max_new_tokens == 0 {
            bail!("`rollout.max_new_tokens` is 0: allow at least one generated token");
        }
        if r.dynamic_sampling && r.max_draw_factor < 1 {
            bail!("`rollout.max_draw_factor` must be at least 1 with dynamic sampling");
        }
        if self.reward.kind != "math" {
            bail!("`reward.kind` is {:?}: the embedded loop scores \"math\" answers; truth and code rewards run in `rlvr-verifier`", self.reward.kind);
        }
        if self.reward.overlong_buffer >= r.max_new_tokens && self.reward.overlong_penalty != 0.0 {
            bail!("`reward.overlong_buffer` ({}) must be smaller than `rollout.max_new_tokens` ({})", self.reward.overlong_buffer, r.max_new_tokens);
        }
        if a.mini_batches == 0 || a.mini_batches > d.prompts_per_step {
            bail!("`algorithm.mini_batches` is {}: it must be between 1 and data.prompts_per_step ({})", a.mini_batches, d.prompts_per_step);
        }
        if !(o.lr > 0.0 && o.lr < 1.0) {
            bail!("`optimizer.lr` is {}: use a small positive learning rate such as 1e-6 to 1e-4", o.lr);
        }
        if !(0.0..1.0).contains(&o.betas.0) || !(0.0..1.0).contains(&o.betas.1) {
            bail!("`optimizer.betas` must both be in [0, 1) (got {:?})", o.betas);
        }
        if o.schedule != "constant" && o.schedule != "cosine" {
            bail!("`optimizer.schedule` is {:?}: use \"constant\" or \"cosine\"", o.schedule);
        }
        if rt.steps == 0 {
            bail!("`runtime.steps` is 0: nothing would be trained; set it to at least 1");
        }
        // What the optimiser itself would refuse when the run builds it (eps, weight decay, the
        // schedule's ratios and warm-up), refused here too, with the run config's field names.
        match self.adamw_config().validate() {
            Ok(()) => {}
            // `[optimizer]` holds the schedule's fields too.
            Err(OptimError::Config { field, message }) => bail!("`optimizer.{}` {message}", field.trim_start_matches("schedule.")),
            Err(e) => bail!("{e}"),
        }
        if rt.mode == Mode::Async && rt.max_staleness < 1 {
            bail!("`runtime.mode = \"async\"` trains on rollouts one version old, but `runtime.max_staleness` is 0; set it to 1 or use mode = \"sync\"");
        }
        if rt.micro_batch_tokens < r.max_new_tokens + 1 {
            bail!("`runtime.micro_batch_tokens` ({}) cannot hold one sequence of rollout.max_new_tokens ({}) plus its prompt", rt.micro_batch_tokens, r.max_new_tokens);
        }
        let dist = &self.distributed;
        if dist.run.is_empty() || !dist.run.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            bail!("`distributed.run` is {:?}: use letters, digits, `-`, `_` and `.` only", dist.run);
        }
        if !(dist.visibility_timeout_s.is_finite() && dist.visibility_timeout_s >= 1.0) {
            bail!("`distributed.visibility_timeout_s` is {}: it must be at least 1 second", dist.visibility_timeout_s);
        }
        if !(dist.reissue_after_s.is_finite() && dist.reissue_after_s >= dist.visibility_timeout_s) {
            bail!("`distributed.reissue_after_s` ({}) must be at least `distributed.visibility_timeout_s` ({}): a group held by a dead worker is reclaimed before it is re-issued", dist.reissue_after_s, dist.visibility_timeout_s);
        }
        if dist.max_deliveries == 0 {
            bail!("`distributed.max_deliveries` is 0: allow at least one delivery");
        }
        if rt.eval && (d.eval_prompts == 0 || rt.eval_samples == 0) {
            bail!("`runtime.eval` needs `data.eval_prompts` and `runtime.eval_samples` of at least 1 (or set runtime.eval = false)");
        }
        Ok(())
    }

    /// The policy's optimiser, as the learner builds it: `[optimizer]` with the run's total number of
    /// optimiser steps for the schedule.
    pub fn adamw_config(&self) -> AdamWConfig {
        let o = &self.optimizer;
        AdamWConfig {
            lr: o.lr,
            betas: o.betas,
            eps: o.eps,
            weight_decay: o.weight_decay,
            exclude_1d_from_decay: false,
            schedule: LrSchedule {
                warmup_steps: o.warmup_steps as u64,
                decay: if o.schedule == "cosine" { LrDecay::Cosine } else { LrDecay::Constant },
                total_steps: (self.runtime.steps * self.algorithm.mini_batches) as u64,
                min_lr_ratio: o.min_lr_ratio,
                ..Default::default()
            },
        }
    }

    /// The policy loss as trained: in async mode with `stale_correction = "tis"`, TIS is on (at
    /// `tis_cap`, or [`DEFAULT_TIS_CAP`] when unset); otherwise `policy_loss` as written.
    pub fn effective_policy_loss(&self) -> PolicyLossConfig {
        let mut loss = self.algorithm.policy_loss;
        if self.runtime.mode == Mode::Async && self.algorithm.stale_correction == StaleCorrection::Tis {
            loss.tis_cap = Some(loss.tis_cap.unwrap_or(DEFAULT_TIS_CAP));
        }
        loss
    }

    /// The derived quantities `rlvr plan` prints: what one step really does.
    /// `prompt_tokens` (the longest prompt) and `model` are `Err(why)` when they could not be
    /// measured: what depends on them is then printed as unknown, with the reason, never guessed.
    pub fn plan(&self, prompt_tokens: Result<usize, String>, model: Result<&ModelSize, String>) -> Vec<(String, String)> {
        let (r, d, rt, a) = (&self.rollout, &self.data, &self.runtime, &self.algorithm);
        let samples = d.prompts_per_step * r.group_size;
        let critic = a.advantage.estimator == AdvantageEstimator::Gae;
        let unknown = |why: &str| format!("unknown: {why}");
        let per_token = prompt_tokens.as_ref().map(|&p| {
            let seq = p + r.max_new_tokens;
            let per_micro = (rt.micro_batch_tokens / seq).max(1);
            (p, seq, per_micro)
        });
        let (tokens, micro) = match &per_token {
            Ok((p, seq, per_micro)) => {
                let per_mini = samples.div_ceil(a.mini_batches);
                let micro = per_mini.div_ceil(*per_micro) * a.mini_batches;
                (
                    format!("{} (prompt <= {p} + {} new per sample)", samples * seq, r.max_new_tokens),
                    format!("{micro} (~{per_micro} sequences of <= {seq} tokens in {} tokens)", rt.micro_batch_tokens),
                )
            }
            Err(why) => (unknown(why), unknown(why)),
        };
        // Training memory: f32 weights, grads and two Adam moments, plus one micro-batch's activations.
        let memory = match (&per_token, &model) {
            (Ok((_, seq, per_micro)), Ok(model)) => {
                let weights = model.params * 4;
                let mut memory = weights * 4 + model.activation_bytes(per_micro * seq, per_micro * r.max_new_tokens);
                if critic {
                    // A second model with its own grads and Adam moments; its micro-batches have no logits.
                    memory += weights * 4;
                }
                format!("{:.1} GiB (weights+grads+Adam {:.1} GiB)", memory as f64 / 2f64.powi(30), (weights * 4) as f64 / 2f64.powi(30))
            }
            (Err(why), _) => unknown(why),
            (_, Err(why)) => unknown(why),
        };
        vec![
            ("prompts per step".into(), format!("{}", d.prompts_per_step)),
            ("samples per step".into(), format!("{samples} ({} prompts x group_size {})", d.prompts_per_step, r.group_size)),
            ("tokens per step (at most)".into(), tokens),
            (
                "optimiser steps per rollout batch".into(),
                if critic { format!("{} (and as many critic steps)", a.mini_batches) } else { format!("{}", a.mini_batches) },
            ),
            ("micro-batches per step".into(), micro),
            ("total samples".into(), format!("{}", samples * rt.steps)),
            (
                "staleness bound".into(),
                match rt.mode {
                    Mode::Sync => "0 (sync: every batch sampled with the weights it trains)".into(),
                    Mode::Async => format!("{} (async, one step off-policy)", rt.max_staleness),
                },
            ),
            (
                "stale-rollout correction".into(),
                match (rt.mode, self.effective_policy_loss().tis_cap) {
                    (Mode::Sync, None) => "none needed (sync)".into(),
                    (Mode::Async, None) => "none (algorithm.stale_correction = \"none\")".into(),
                    (_, Some(cap)) => format!("truncated importance sampling against the actor's log-probs, cap {cap}"),
                },
            ),
            ("memory estimate".into(), memory),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_run() {
        assert_eq!(RunConfig::from_toml("").unwrap(), RunConfig::default());
    }

    #[test]
    fn plan_rejects_what_the_run_rejects_and_guesses_nothing() {
        let err = RunConfig::from_toml("[rollout]\ngroup_size = 16\nmax_batch = 8\n").unwrap_err().to_string();
        assert!(err.contains("`rollout.max_batch` (8)"), "{err}");
        let err = RunConfig::from_toml("[optimizer]\neps = -1.0\n").unwrap_err().to_string();
        assert!(err.contains("`optimizer.eps`"), "{err}");
        let err = RunConfig::from_toml("[optimizer]\nmin_lr_ratio = 2.0\n").unwrap_err().to_string();
        assert!(err.contains("`optimizer.min_lr_ratio`"), "{err}");
        let plan = RunConfig::default().plan(Err("no tokenizer".into()), Err("no weights".into()));
        let get = |k: &str| plan.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("tokens per step (at most)"), "unknown: no tokenizer");
        assert_eq!(get("memory estimate"), "unknown: no tokenizer");
        assert_eq!(get("samples per step"), "64 (8 prompts x group_size 8)");
        let model = ModelSize::smollm2_135m();
        let plan = RunConfig::default().plan(Ok(40), Err("no weights".into()));
        assert!(plan.iter().any(|(k, v)| k == "memory estimate" && v == "unknown: no weights"));
        assert!(RunConfig::default().plan(Ok(40), Ok(&model)).iter().all(|(_, v)| !v.starts_with("unknown")));
    }

    #[test]
    fn async_mode_corrects_stale_rollouts_by_default() {
        let sync = RunConfig::default();
        assert_eq!(sync.effective_policy_loss().tis_cap, None);
        let mut run = RunConfig::from_toml("[runtime]\nmode = \"async\"\n").unwrap();
        assert_eq!(run.effective_policy_loss().tis_cap, Some(DEFAULT_TIS_CAP));
        run.algorithm.policy_loss.tis_cap = Some(3.0);
        assert_eq!(run.effective_policy_loss().tis_cap, Some(3.0));
        let off = RunConfig::from_toml("[runtime]\nmode = \"async\"\n[algorithm]\nstale_correction = \"none\"\n").unwrap();
        assert_eq!(off.effective_policy_loss().tis_cap, None);
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        let e = RunConfig::from_toml("[rollout]\ngroup_size = 1\n").unwrap_err().to_string();
        assert!(e.contains("rollout.group_size") && e.contains("at least 2"), "{e}");
        let e = RunConfig::from_toml("[rollout]\ngroup_sise = 4\n").unwrap_err().to_string();
        assert!(e.contains("group_sise"), "{e}");
        let e = RunConfig::from_toml("[optimizer]\nschedule = \"linear\"\n").unwrap_err().to_string();
        assert!(e.contains("optimizer.schedule"), "{e}");
        let e = RunConfig::from_toml("[runtime]\nmode = \"async\"\nmax_staleness = 0\n").unwrap_err().to_string();
        assert!(e.contains("max_staleness"), "{e}");
    }

    #[test]
    fn sections_override_only_what_they_set() {
        let c = RunConfig::from_toml("[rollout]\ngroup_size = 4\n[data.source]\nkind = \"arithmetic\"\nmax_level = 3\n").unwrap();
        assert_eq!(c.rollout.group_size, 4);
        assert_eq!(c.rollout.temperature, 1.0);
        assert_eq!(c.data.source, DataSource::Arithmetic { min_level: 1, max_level: 3 });
    }
}
