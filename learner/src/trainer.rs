//! One learner update from a batch of scored rollouts: advantages, the policy loss over micro-batches
//! with gradient accumulation, global-norm clipping and the AdamW step.
//!
//! The log-probs the ratio starts from (`old_log_prob`) are the learner's own: with one optimiser step
//! per batch they equal the current policy's, so the ratio's value is 1 and the recompute is skipped
//! (the detached current log-probs are used, as verl does on-policy); with several mini-batches they
//! are recomputed once, before the first update. The actor's recorded log-probs enter only through
//! truncated importance sampling (`algorithm.tis_cap`), which corrects for sampling with older weights.
//!
//! With `advantage.estimator = "gae"` a critic ([`Critic`]) scores every response token before the
//! update (its values at rollout time), GAE turns rewards and values into advantages and returns, and
//! after each policy step the critic takes one step of its own on the same mini-batch (clipped value
//! loss, its own AdamW and gradient clip).

use std::collections::HashMap;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use rlvr_common::checkpoint::{HostTensor, SaveDtype};
use rlvr_common::model::{CausalLm, Cpu, CpuAutodiff, Entropy, ModelConfig};
use serde::Serialize;

use crate::algo::advantage::{AdvantageEstimator, gae, outcome_advantages, token_rewards_from_scores};
use crate::algo::loss::{LossAgg, PolicyExtras, PolicyInputs, policy_loss, value_loss};
use crate::config::{AlgorithmSection, RunConfig};
use crate::critic::Critic;
use crate::optim::{AdamW, AdamWConfig, GradAccumulator, LrSchedule, clip_grad_norm};

/// One sequence to train on.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSample {
    /// Samples of the same prompt share a group.
    pub group: u64,
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    /// The actor's log-prob of each response token.
    pub rollout_log_probs: Vec<f32>,
    pub reward: f32,
}

/// What one update did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StepStats {
    pub loss: f64,
    pub policy_loss: f64,
    /// KL to the reference policy (0 without one).
    pub kl: f64,
    pub entropy: f64,
    pub clip_fraction: f64,
    /// Before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    pub advantage_abs_mean: f64,
    /// Learner log-probs minus the actor's, mean absolute over response tokens: the training/inference
    /// mismatch (0 up to float noise when the rollouts come from the current weights). NaN (`null` in
    /// metrics.jsonl) in a critic warm-up batch, where the policy does no forward pass.
    pub logprob_mismatch: f64,
    pub micro_batches: usize,
    pub optimizer_steps: usize,
    /// Policy updates skipped because the gradient norm was not finite (NaN or infinite): the
    /// mini-batch's accumulated gradients are dropped whole and the weights and optimiser state are
    /// left as they were, as verl's `dp_actor.py` does.
    pub skipped_updates: usize,
    /// The same for the critic (GAE only).
    pub critic_skipped_updates: usize,
    /// The critic's clipped value loss (GAE only).
    pub value_loss: Option<f64>,
    /// Share of response tokens where value clipping was the larger branch (GAE only).
    pub value_clip_fraction: Option<f64>,
    /// The critic's gradient norm before clipping, last mini-batch (GAE only).
    pub critic_grad_norm: Option<f64>,
    /// Mean value over response tokens at rollout time (GAE only).
    pub value_mean: Option<f64>,
}

/// PPO's critic and its optimiser.
#[derive(Debug)]
struct CriticState {
    model: Option<Critic<CpuAutodiff>>,
    optim: AdamW<Cpu>,
}

impl CriticState {
    fn model(&self) -> &Critic<CpuAutodiff> {
        self.model.as_ref().expect("the critic is only taken during an update")
    }
}

/// The subdirectory of a checkpoint holding the critic's optimiser state.
const CRITIC_OPTIM_DIR: &str = "critic";

/// The policy being trained, its optimiser and the frozen reference.
#[derive(Debug)]
pub struct Learner {
    model: Option<CausalLm<CpuAutodiff>>,
    reference: Option<CausalLm<Cpu>>,
    optim: AdamW<Cpu>,
    algo: AlgorithmSection,
    grad_clip: f64,
    temperature: f32,
    micro_batch_tokens: usize,
    critic: Option<CriticState>,
}

impl Learner {
    /// Builds the policy from host weights; `resume` is a checkpoint directory whose optimiser state is
    /// loaded (its weights are the ones passed in).
    pub fn new(
        config: &RunConfig,
        model_config: ModelConfig,
        weights: HashMap<String, HostTensor>,
        reference: Option<CausalLm<Cpu>>,
        resume: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let device = Default::default();
        let use_critic = config.algorithm.advantage.estimator == AdvantageEstimator::Gae;
        let critic_weights = use_critic.then(|| weights.clone());
        let critic_model_config = model_config.clone();
        let model = CausalLm::<CpuAutodiff>::from_weights(model_config, weights, &device)?;
        let adam = config.adamw_config();
        let total = adam.schedule.total_steps;
        let optim = match resume {
            Some(dir) => {
                // A resumed run continues the same run: the checkpoint's optimiser settings win.
                let optim = AdamW::load(dir, &model)?;
                if optim.config() != &adam {
                    tracing::warn!(
                        "resuming {}: the optimiser keeps the checkpoint's settings {:?}, not the run config's {:?}; start a new run (no --resume) to change them",
                        dir.display(),
                        optim.config(),
                        adam
                    );
                }
                optim
            }
            None => AdamW::new(adam.clone())?,
        };
        let critic = match critic_weights {
            None => None,
            Some(weights) => {
                let c = &config.algorithm.critic;
                let critic_adam = AdamWConfig {
                    lr: c.lr,
                    schedule: LrSchedule { total_steps: total, ..Default::default() },
                    ..adam
                };
                let (model, optim) = match resume {
                    Some(dir) => {
                        let model = Critic::load(dir, critic_model_config, &device)?;
                        let optim = AdamW::load(&dir.join(CRITIC_OPTIM_DIR), &model)?;
                        (model, optim)
                    }
                    None => (Critic::from_policy(critic_model_config, weights, &device)?, AdamW::new(critic_adam)?),
                };
                Some(CriticState { model: Some(model), optim })
            }
        };
        Ok(Self {
            model: Some(model),
            reference,
            optim,
            // Async mode's stale-rollout correction is part of the loss as trained.
            algo: AlgorithmSection { policy_loss: config.effective_policy_loss(), ..config.algorithm.clone() },
            grad_clip: config.optimizer.grad_clip,
            temperature: config.rollout.temperature,
            micro_batch_tokens: config.runtime.micro_batch_tokens,
            critic,
        })
    }

    fn model(&self) -> &CausalLm<CpuAutodiff> {
        self.model.as_ref().expect("the model is only taken during an update")
    }

    pub fn model_config(&self) -> &ModelConfig {
        &self.model().config
    }

    /// The current weights under their HF keys (what is published to the actors).
    pub fn host_weights(&self) -> Vec<(String, HostTensor)> {
        self.model().valid().to_host_weights()
    }

    /// Saves the weights (HF layout) and the optimiser state into `dir`.
    pub fn save(&self, dir: &Path, dtype: SaveDtype) -> anyhow::Result<()> {
        self.model().valid().save(dir, dtype)?;
        self.optim.save(dir)?;
        if let Some(critic) = &self.critic {
            critic.model().valid().save(dir)?;
            critic.optim.save(&dir.join(CRITIC_OPTIM_DIR))?;
        }
        Ok(())
    }

    /// One rollout batch: advantages over the whole batch, then `algorithm.mini_batches` optimiser steps.
    pub fn train_on(&mut self, samples: &[TrainSample]) -> anyhow::Result<StepStats> {
        anyhow::ensure!(!samples.is_empty(), "an empty batch");
        if let Some(s) = samples.iter().find(|s| s.response.is_empty() || s.rollout_log_probs.len() != s.response.len()) {
            anyhow::bail!(
                "a sample of group {} has {} response tokens and {} log-probs; every trained sample needs at least one token and one log-prob per token",
                s.group,
                s.response.len(),
                s.rollout_log_probs.len()
            );
        }
        let device = Default::default();
        let n = samples.len();
        let longest = samples.iter().map(|s| s.response.len()).max().unwrap_or(0);
        // 1. Advantages (token level, broadcast over each response).
        let mask = mask_tensor::<Cpu>(samples, longest);
        let scores = Tensor::<Cpu, 1>::from_data(TensorData::new(samples.iter().map(|s| s.reward).collect(), [n]), &device);
        let groups: Vec<u64> = samples.iter().map(|s| s.group).collect();
        let valid_tokens: usize = samples.iter().map(|s| s.response.len()).sum();
        let mut stats = StepStats::default();
        // With a critic: its values now, GAE's advantages and the returns it regresses on.
        let (advantages, critic_targets) = if self.critic.is_some() {
            let values = self.values_no_grad(samples, longest)?;
            stats.value_mean = Some(values.iter().map(|&v| f64::from(v)).sum::<f64>() / valid_tokens as f64);
            let values_t = Tensor::<Cpu, 2>::from_data(TensorData::new(values.clone(), [n, longest]), &device);
            let a = &self.algo.advantage;
            let (advantages, returns) = gae(token_rewards_from_scores(scores, mask.clone())?, values_t, mask.clone(), a.gamma, a.lam)?;
            (advantages, Some((values, to_host(returns))))
        } else {
            (outcome_advantages(&self.algo.advantage, scores, mask.clone(), &groups)?, None)
        };
        let adv_host = to_host(advantages);
        stats.advantage_abs_mean = samples
            .iter()
            .enumerate()
            .map(|(i, s)| (0..s.response.len()).map(|t| f64::from(adv_host[i * longest + t].abs())).sum::<f64>())
            .sum::<f64>()
            / valid_tokens as f64;
        // Critic warm-up: the first `critic.warmup_steps` batches train only the critic.
        let warmup = (self.algo.critic.warmup_steps * self.algo.mini_batches) as u64;
        let train_policy = self.critic.as_ref().is_none_or(|c| c.optim.steps() >= warmup);
        // 2. Old log-probs: recomputed before the first update when there are several.
        let old: Option<Vec<Vec<f32>>> =
            (train_policy && self.algo.mini_batches > 1).then(|| self.log_probs_no_grad(samples)).transpose()?;
        // 3. Mini-batches (by group order), each one optimiser step over accumulated micro-batches.
        let per_mini = n.div_ceil(self.algo.mini_batches);
        let mut weighted = WeightedMeans::default();
        let mut critic_means = WeightedMeans::<2>::default();
        for chunk in (0..n).collect::<Vec<_>>().chunks(per_mini) {
            let mini: Vec<usize> = chunk.to_vec();
            let mini_tokens: usize = mini.iter().map(|&i| samples[i].response.len()).sum();
            if train_policy {
                let mut acc = GradAccumulator::new();
                for micro in self.micro_batches(samples, &mini) {
                    let (seqs, prompt_lens) = sequences(samples, &micro);
                    let rows: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
                    // The entropy is a metric unless the loss has an entropy bonus.
                    let entropy_mode = if self.algo.policy_loss.entropy_coeff == 0.0 { Entropy::Metric } else { Entropy::Differentiable };
                    let (logp, entropy) = self.model().response_log_probs(&rows, &prompt_lens, self.temperature, entropy_mode)?;
                    let width = logp.dims()[1];
                    let pick = |f: &dyn Fn(usize, usize) -> f32| -> Tensor<CpuAutodiff, 2> { host_matrix(&micro, width, &device, f) };
                    let in_resp = |i: usize, t: usize| t < samples[i].response.len();
                    let mask = pick(&|i, t| if in_resp(i, t) { 1.0 } else { 0.0 });
                    let adv = pick(&|i, t| if in_resp(i, t) { adv_host[i * longest + t] } else { 0.0 });
                    let rollout_lp = pick(&|i, t| if in_resp(i, t) { samples[i].rollout_log_probs[t] } else { 0.0 });
                    let old_lp = match &old {
                        Some(old) => pick(&|i, t| if in_resp(i, t) { old[i][t] } else { 0.0 }),
                        None => logp.clone().detach(),
                    };
                    // The training/inference mismatch, measured where it matters.
                    let lp_host = to_host(logp.clone().detach().inner());
                    let mut mismatch = 0.0;
                    for (r, &i) in micro.iter().enumerate() {
                        for t in 0..samples[i].response.len() {
                            mismatch += f64::from((lp_host[r * width + t] - samples[i].rollout_log_probs[t]).abs());
                        }
                    }
                    let micro_tokens: usize = micro.iter().map(|&i| samples[i].response.len()).sum();
                    // Each micro-batch's share of the mini-batch objective: tokens for token-mean, sequences otherwise.
                    let share = match self.algo.policy_loss.agg {
                        LossAgg::TokenMean => micro_tokens as f64 / mini_tokens as f64,
                        _ => micro.len() as f64 / mini.len() as f64,
                    };
                    // 4. The objective.
                    let loss_cfg = &self.algo.policy_loss;
                    let ref_log_prob = match (&self.reference, loss_cfg.kl) {
                        (Some(reference), Some(_)) => {
                            let (ref_lp, _) = reference.response_log_probs(&rows, &prompt_lens, self.temperature, Entropy::None)?;
                            Some(Tensor::<CpuAutodiff, 2>::from_data(ref_lp.into_data(), &device))
                        }
                        _ => None,
                    };
                    let inputs = PolicyInputs { log_prob: logp, old_log_prob: old_lp, advantages: adv, response_mask: mask };
                    let extras = PolicyExtras { rollout_log_prob: Some(rollout_lp), ref_log_prob, entropy };
                    let out = policy_loss(loss_cfg, &inputs, &extras)?;
                    let total = out.loss;
                    let m = out.metrics;
                    let total_value = scalar(&total);
                    let grads = total.mul_scalar(share).backward();
                    acc.add(self.model(), GradientsParams::from_grads(grads, self.model()));
                    weighted.add(share / self.algo.mini_batches as f64, &[
                        total_value,
                        m.pg_loss,
                        m.kl_loss.unwrap_or(0.0),
                        m.entropy.unwrap_or(0.0),
                        m.clip_frac,
                    ]);
                    stats.logprob_mismatch += mismatch;
                    stats.micro_batches += 1;
                }
                // 5. Clip and step.
                let mut grads = acc.take();
                let model = self.model.take().expect("present between updates");
                let norm = if self.grad_clip > 0.0 {
                    clip_grad_norm(&model, &mut grads, self.grad_clip)
                } else {
                    let norm = crate::optim::grad_norm(&model, &grads);
                    if norm.is_finite() { Ok(norm) } else { Err(crate::optim::OptimError::NonFiniteGradNorm(norm)) }
                };
                match norm {
                    Ok(norm) => {
                        stats.grad_norm = norm;
                        stats.lr = self.optim.lr();
                        self.model = Some(self.optim.step(model, grads));
                        stats.optimizer_steps += 1;
                    }
                    Err(e) => {
                        // No partial update: the micro-batches' gradients go, the weights stay.
                        tracing::warn!(error = %e, "skipped a policy update: the gradient is not finite");
                        self.model = Some(model);
                        stats.grad_norm = f64::NAN;
                        stats.skipped_updates += 1;
                    }
                }
            }
            // 6. The critic's step on the same mini-batch.
            if let Some((old_values, returns)) = &critic_targets {
                let micros = self.micro_batches(samples, &mini);
                self.critic_step(samples, &micros, mini_tokens, longest, old_values, returns, &mut critic_means, &mut stats)?;
            }
        }
        if critic_targets.is_some() {
            let [loss, clip] = critic_means.values();
            stats.value_loss = Some(loss);
            stats.value_clip_fraction = Some(clip);
        }
        let [total, pg, kl, entropy, clip] = weighted.values();
        stats.loss = total;
        stats.policy_loss = pg;
        stats.kl = kl;
        stats.entropy = entropy;
        stats.clip_fraction = clip;
        stats.logprob_mismatch /= if train_policy { valid_tokens as f64 } else { f64::NAN };
        Ok(stats)
    }

    /// The critic's value of every response token, without a graph: `(n, longest)` row-major, zero
    /// past each response.
    fn values_no_grad(&self, samples: &[TrainSample], longest: usize) -> anyhow::Result<Vec<f32>> {
        let critic = self.critic.as_ref().expect("called with a critic").model().valid();
        let all: Vec<usize> = (0..samples.len()).collect();
        let mut out = vec![0.0; samples.len() * longest];
        for micro in self.micro_batches(samples, &all) {
            let (seqs, prompt_lens) = sequences(samples, &micro);
            let rows: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            let v = critic.values(&rows, &prompt_lens)?;
            let width = v.dims()[1];
            let host = to_host(v);
            for (r, &i) in micro.iter().enumerate() {
                let len = samples[i].response.len();
                out[i * longest..i * longest + len].copy_from_slice(&host[r * width..r * width + len]);
            }
        }
        Ok(out)
    }

    /// One critic step over a mini-batch's micro-batches: the clipped value loss against `returns`
    /// (both `(n, longest)` row-major), token-mean over the mini-batch.
    #[allow(clippy::too_many_arguments)]
    fn critic_step(
        &mut self,
        samples: &[TrainSample],
        micros: &[Vec<usize>],
        mini_tokens: usize,
        longest: usize,
        old_values: &[f32],
        returns: &[f32],
        means: &mut WeightedMeans<2>,
        stats: &mut StepStats,
    ) -> anyhow::Result<()> {
        let mini_batches = self.algo.mini_batches as f64;
        let clip = self.algo.critic.value_clip;
        let grad_clip = self.algo.critic.grad_clip;
        let critic = self.critic.as_mut().expect("called with a critic");
        let device = Default::default();
        let mut acc = GradAccumulator::new();
        for micro in micros {
            let (seqs, prompt_lens) = sequences(samples, micro);
            let rows: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            let vpreds = critic.model().values(&rows, &prompt_lens)?;
            let width = vpreds.dims()[1];
            let in_resp = |i: usize, t: usize| t < samples[i].response.len();
            let at = |data: &[f32]| host_matrix(micro, width, &device, |i, t| if in_resp(i, t) { data[i * longest + t] } else { 0.0 });
            let mask = host_matrix(micro, width, &device, |i, t| if in_resp(i, t) { 1.0 } else { 0.0 });
            let out = value_loss(vpreds, at(old_values), at(returns), mask, clip, LossAgg::TokenMean);
            let micro_tokens: usize = micro.iter().map(|&i| samples[i].response.len()).sum();
            let share = micro_tokens as f64 / mini_tokens as f64;
            means.add(share / mini_batches, &[scalar(&out.loss), out.clip_frac]);
            let grads = out.loss.mul_scalar(share).backward();
            acc.add(critic.model(), GradientsParams::from_grads(grads, critic.model()));
        }
        let mut grads = acc.take();
        let model = critic.model.take().expect("present between updates");
        let norm = if grad_clip > 0.0 {
            clip_grad_norm(&model, &mut grads, grad_clip)
        } else {
            let norm = crate::optim::grad_norm(&model, &grads);
            if norm.is_finite() { Ok(norm) } else { Err(crate::optim::OptimError::NonFiniteGradNorm(norm)) }
        };
        match norm {
            Ok(norm) => {
                stats.critic_grad_norm = Some(norm);
                critic.model = Some(critic.optim.step(model, grads));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "skipped a critic update: the gradient is not finite");
                critic.model = Some(model);
                stats.critic_skipped_updates += 1;
                Ok(())
            }
        }
    }

    /// Response log-probs under the current weights without a graph (for several mini-batches).
    fn log_probs_no_grad(&self, samples: &[TrainSample]) -> anyhow::Result<Vec<Vec<f32>>> {
        let model = self.model().valid();
        let all: Vec<usize> = (0..samples.len()).collect();
        let mut out = vec![vec![]; samples.len()];
        for micro in self.micro_batches(samples, &all) {
            let (seqs, prompt_lens) = sequences(samples, &micro);
            let rows: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            let (lp, _) = model.response_log_probs(&rows, &prompt_lens, self.temperature, Entropy::None)?;
            let width = lp.dims()[1];
            let host = to_host(lp);
            for (r, &i) in micro.iter().enumerate() {
                out[i] = host[r * width..r * width + samples[i].response.len()].to_vec();
            }
        }
        Ok(out)
    }

    /// Splits `indices` into micro-batches whose padded size (rows x longest sequence) fits the token budget.
    fn micro_batches(&self, samples: &[TrainSample], indices: &[usize]) -> Vec<Vec<usize>> {
        let mut out: Vec<Vec<usize>> = vec![];
        let mut current: Vec<usize> = vec![];
        let mut longest = 0;
        for &i in indices {
            let len = samples[i].prompt.len() + samples[i].response.len();
            let grown = longest.max(len);
            if !current.is_empty() && grown * (current.len() + 1) > self.micro_batch_tokens {
                out.push(std::mem::take(&mut current));
                longest = 0;
            }
            longest = longest.max(len);
            current.push(i);
        }
        if !current.is_empty() {
            out.push(current);
        }
        out
    }
}

/// Response masks `(n, longest)`.
fn mask_tensor<B: burn::tensor::backend::Backend>(samples: &[TrainSample], longest: usize) -> Tensor<B, 2> {
    let data: Vec<f32> = samples.iter().flat_map(|s| (0..longest).map(move |t| if t < s.response.len() { 1.0 } else { 0.0 })).collect();
    Tensor::from_data(TensorData::new(data, [samples.len(), longest]), &Default::default())
}

fn to_host<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 tensor data")
}

fn scalar<B: burn::tensor::backend::Backend>(t: &Tensor<B, 1>) -> f64 {
    f64::from(to_host(t.clone())[0])
}

/// The prompt + response sequences of `micro` and their prompt lengths.
fn sequences(samples: &[TrainSample], micro: &[usize]) -> (Vec<Vec<u32>>, Vec<usize>) {
    let seqs = micro.iter().map(|&i| [samples[i].prompt.as_slice(), &samples[i].response].concat()).collect();
    (seqs, micro.iter().map(|&i| samples[i].prompt.len()).collect())
}

/// A `(micro.len(), width)` tensor whose entry `[r, t]` is `f(micro[r], t)`.
fn host_matrix<B: burn::tensor::backend::Backend>(micro: &[usize], width: usize, device: &B::Device, f: impl Fn(usize, usize) -> f32) -> Tensor<B, 2> {
    let data: Vec<f32> = micro.iter().flat_map(|&i| (0..width).map(move |t| (i, t))).map(|(i, t)| f(i, t)).collect();
    Tensor::from_data(TensorData::new(data, [micro.len(), width]), device)
}

/// Running weighted means of a fixed set of metrics.
#[derive(Debug)]
struct WeightedMeans<const N: usize = 5> {
    sums: [f64; N],
    weight: f64,
}

impl<const N: usize> Default for WeightedMeans<N> {
    fn default() -> Self {
        Self { sums: [0.0; N], weight: 0.0 }
    }
}

impl<const N: usize> WeightedMeans<N> {
    fn add(&mut self, w: f64, values: &[f64; N]) {
        for (s, v) in self.sums.iter_mut().zip(values) {
            *s += w * v;
        }
        self.weight += w;
    }
    fn values(&self) -> [f64; N] {
        self.sums.map(|s| if self.weight > 0.0 { s / self.weight } else { 0.0 })
    }
}
