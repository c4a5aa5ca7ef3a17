//! AdamW, global-norm gradient clipping and learning-rate schedules, with optimiser state that is
//! saved beside a checkpoint and resumes bit for bit.
//!
//! - [`AdamW`]: `torch.optim.AdamW` (the single-tensor path of `torch/optim/adam.py`, `amsgrad=False`):
//!   decoupled weight decay `p -= lr * wd * p`, then Adam with bias correction and `eps` added to
//!   `sqrt(v_hat)`.
//! - [`clip_grad_norm`]: `torch.nn.utils.clip_grad_norm_` over every gradient at once.
//! - [`LrSchedule`]: linear warmup, then constant or cosine decay, as `LambdaLR` multipliers.
//! - [`GradAccumulator`]: sums the gradients of micro-batches before one optimiser step.
//!
//! One step of the learner, as verl's `dp_actor.py` does it (a non-finite norm skips the update):
//!
//! ```ignore
//! let mut grads = GradientsParams::from_grads(loss.backward(), &model);
//! let grad_norm = clip_grad_norm(&model, &mut grads, max_grad_norm)?; // Err: skip this step
//! let lr = optim.lr();
//! model = optim.step(model, grads);
//! ```
//!
//! # Why our own AdamW, and how its state is keyed
//!
//! burn's `AdamW` keeps its moments in records keyed by [`ParamId`], which is drawn at random every
//! time a model is built or loaded, so a reloaded model can never find its moments; it also computes
//! `beta^t` and the bias corrections in f32 and clips per parameter, not globally. Here the update is a
//! [`ModuleMapper`] that follows the module tree with `enter_module`/`exit_module` and keys each
//! parameter's state by its path: the field names joined by dots, a `Vec` element by its index and an
//! `Option` by nothing (burn 0.21 calls no hook for it). For [`rlvr_common::model::CausalLm`], whose
//! fields are named after the HF checkpoint keys, that path *is* the HF key
//! (`model.layers.0.self_attn.q_proj.bias`), so the state survives process restarts and can be read
//! next to `model.safetensors`. Gradients are still looked up by `ParamId`, which is stable within one
//! process. The moments live flattened, `(numel,)`, on the inner (non-autodiff) backend, on the
//! parameter's device; scalars (`beta^t`, bias corrections, step size) are computed in f64 as torch
//! does in Python and rounded to f32 where they meet a tensor.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rlvr_common::checkpoint::{self, CheckpointError, HostTensor, SaveDtype};
use serde::{Deserialize, Serialize};

/// The moments, `exp_avg.<name>` and `exp_avg_sq.<name>` in the parameter's shape, f32.
pub const STATE_FILE: &str = "optimizer.safetensors";
/// The step counts and the config the state was written with.
pub const META_FILE: &str = "optimizer.json";
/// Bumped when the layout of [`STATE_FILE`] or [`META_FILE`] changes.
const FORMAT_VERSION: u32 = 1;

/// Errors configuring the optimiser, clipping, and saving or loading its state.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("optimizer config: `{field}` {message}")]
    Config { field: &'static str, message: String },
    #[error("the gradient norm is {0}: skipping this step (the weights and the optimizer state are unchanged)")]
    NonFiniteGradNorm(f64),
    #[error("cannot access {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("optimizer state in {path}: {message}")]
    State { path: PathBuf, message: String },
}

fn config_error(field: &'static str, message: impl Into<String>) -> OptimError {
    OptimError::Config { field, message: message.into() }
}

/// How the learning rate decays after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrDecay {
    /// Stay at the peak (transformers' and verl's `get_constant_schedule_with_warmup`).
    Constant,
    /// Half a cosine (by default) from the peak to `min_lr_ratio` over `total_steps`.
    Cosine,
}

/// A learning-rate schedule as a multiplier of the peak learning rate, evaluated at the number of
/// optimiser steps already taken (`LambdaLR`'s `last_epoch`: the first update uses `factor(0)`).
///
/// - warmup, `step < warmup_steps`:
///   `warmup_init_ratio + (1 - warmup_init_ratio) * step / max(1, warmup_steps)`;
/// - then [`LrDecay::Constant`]: `1`;
/// - or [`LrDecay::Cosine`], with `progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)`:
///   `max(min_lr_ratio, min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + cos(2π · num_cycles · progress)))`.
///
/// These are verl's `get_cosine_schedule_with_warmup` and `get_constant_schedule_with_warmup`
/// (`verl/utils/torch_functional.py`, whose cosine takes `min_lr_ratio` and `init_lr_ratio`), and
/// with `warmup_init_ratio = 0` transformers' `get_cosine_schedule_with_warmup` (`min_lr_rate`) and
/// `get_constant_schedule_with_warmup` (`transformers/optimization.py`). Like them, the cosine is not
/// clamped past `total_steps`: with `num_cycles = 0.5` it climbs back up. verl's
/// `lr_warmup_steps_ratio` is `warmup_steps = ratio * total_steps`, resolved by whoever builds this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LrSchedule {
    /// Optimiser steps of linear warmup (0: none).
    pub warmup_steps: u64,
    /// The multiplier warmup starts from (verl's `init_lr_ratio`; 0 as transformers).
    pub warmup_init_ratio: f64,
    pub decay: LrDecay,
    /// The run's total optimiser steps; needed by the cosine.
    pub total_steps: u64,
    /// The multiplier the cosine decays to (verl's `min_lr_ratio`, transformers' `min_lr_rate`).
    pub min_lr_ratio: f64,
    /// Cosine waves over the decay (0.5: one half-wave from the peak down to the minimum).
    pub num_cycles: f64,
}

impl Default for LrSchedule {
    /// A constant learning rate, no warmup.
    fn default() -> Self {
        Self {
            warmup_steps: 0,
            warmup_init_ratio: 0.0,
            decay: LrDecay::Constant,
            total_steps: 0,
            min_lr_ratio: 0.0,
            num_cycles: 0.5,
        }
    }
}

impl LrSchedule {
    /// The multiplier of the peak learning rate for the update after `step` updates.
    pub fn factor(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            let progress = step as f64 / self.warmup_steps.max(1) as f64;
            return self.warmup_init_ratio + (1.0 - self.warmup_init_ratio) * progress;
        }
        match self.decay {
            LrDecay::Constant => 1.0,
            LrDecay::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let progress = (step - self.warmup_steps) as f64 / span as f64;
                let wave = (std::f64::consts::PI * self.num_cycles * 2.0 * progress).cos();
                let (coef, intercept) = ((1.0 - self.min_lr_ratio) * 0.5, (1.0 + self.min_lr_ratio) * 0.5);
                (wave * coef + intercept).max(self.min_lr_ratio)
            }
        }
    }

    /// Rejects schedules the formulas above do not define.
    pub fn validate(&self) -> Result<(), OptimError> {
        let ratio = |field, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(config_error(field, format!("is {v}; it must lie in [0, 1]")))
            }
        };
        ratio("schedule.warmup_init_ratio", self.warmup_init_ratio)?;
        ratio("schedule.min_lr_ratio", self.min_lr_ratio)?;
        if self.decay == LrDecay::Cosine {
            if self.total_steps == 0 {
                return Err(config_error(
                    "schedule.total_steps",
                    "is 0: cosine decay needs the run's total number of optimizer steps",
                ));
            }
            if self.warmup_steps > self.total_steps {
                return Err(config_error(
                    "schedule.warmup_steps",
                    format!(
                        "is {} but `schedule.total_steps` is {}: warmup must fit in the run",
                        self.warmup_steps, self.total_steps
                    ),
                ));
            }
            if !(self.num_cycles.is_finite() && self.num_cycles > 0.0) {
                let message = format!("is {}; use a positive number (0.5: one half-cosine)", self.num_cycles);
                return Err(config_error("schedule.num_cycles", message));
            }
        }
        Ok(())
    }
}

/// The hyper-parameters of [`AdamW`], with `torch.optim.AdamW`'s defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// The peak learning rate; [`LrSchedule`] scales it per step.
    pub lr: f64,
    pub betas: (f64, f64),
    /// Added to `sqrt(v_hat)`.
    pub eps: f64,
    /// Decoupled decay, `p -= lr * weight_decay * p` (Loshchilov & Hutter 2019). 0.01 is torch's
    /// default and verl's.
    pub weight_decay: f64,
    /// Leave 1-D parameters (biases, norm weights) undecayed. verl hands every parameter to torch's
    /// AdamW, so everything is decayed by default; HF Trainer (and with it TRL) puts biases and norm
    /// weights in a no-decay group, which this reproduces for the Llama/Qwen family.
    pub exclude_1d_from_decay: bool,
    pub schedule: LrSchedule,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
            exclude_1d_from_decay: false,
            schedule: LrSchedule::default(),
        }
    }
}

impl AdamWConfig {
    /// The learning rate of the update after `step` updates: `lr * schedule.factor(step)`.
    pub fn lr_at(&self, step: u64) -> f64 {
        self.lr * self.schedule.factor(step)
    }

    /// torch's own checks (`0 <= lr`, `0 <= eps`, `0 <= beta < 1`, `0 <= weight_decay`) plus the
    /// schedule's.
    pub fn validate(&self) -> Result<(), OptimError> {
        let non_negative = |field, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(config_error(field, format!("is {v}; it must be a finite number >= 0")))
            }
        };
        non_negative("lr", self.lr)?;
        non_negative("eps", self.eps)?;
        non_negative("weight_decay", self.weight_decay)?;
        for (field, beta) in [("betas[0]", self.betas.0), ("betas[1]", self.betas.1)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(config_error(field, format!("is {beta}; it must lie in [0, 1)")));
            }
        }
        self.schedule.validate()
    }
}

/// Scales every gradient by `max_norm / (total + 1e-6)` when that is below 1, where `total` is the L2
/// norm of all gradients together, as `torch.nn.utils.clip_grad_norm_`. Returns the norm before
/// clipping (the `grad_norm` metric).
///
/// A non-finite norm is [`OptimError::NonFiniteGradNorm`] and leaves the gradients untouched: skip
/// the step, as verl does, rather than let NaN into the weights. Parameters without a gradient are
/// ignored, as torch ignores `grad is None`.
pub fn clip_grad_norm<B, M>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> Result<f64, OptimError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(config_error("max_grad_norm", format!("is {max_norm}; it must be a positive number")));
    }
    let total = grad_norm(model, grads);
    if !total.is_finite() {
        return Err(OptimError::NonFiniteGradNorm(total));
    }
    // torch computes the coefficient in f32 from its f32 norm; here it is f64, rounded to f32 when it
    // scales the gradients: a difference of an ulp or so.
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        model.visit(&mut GradScaler::<B> { grads, factor: coef, backend: std::marker::PhantomData });
    }
    Ok(total)
}

/// The L2 norm of all gradients of `model` together (each tensor's sum of squares in its own dtype,
/// one read back to the host). NaN or infinite when any gradient is: check before stepping, or use
/// [`clip_grad_norm`], which does.
pub fn grad_norm<B, M>(model: &M, grads: &GradientsParams) -> f64
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let mut visitor = SquaredNorm::<B> { grads, total: None };
    model.visit(&mut visitor);
    visitor.total.map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt())
}

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sq = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t.add(sq),
                None => sq,
            });
        }
    }
}

struct GradScaler<'a, B> {
    grads: &'a mut GradientsParams,
    factor: f64,
    backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradScaler<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Sums the gradients of several micro-batches into one [`GradientsParams`] for one optimiser step.
/// It sums; scale each micro-batch's loss by its share of the mini-batch (verl divides by the number
/// of micro-batches, or weighs by tokens) so the sum is the mini-batch's gradient.
#[derive(Debug, Default)]
pub struct GradAccumulator {
    grads: GradientsParams,
    micro_batches: usize,
}

impl GradAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one micro-batch's gradients (from `GradientsParams::from_grads(loss.backward(), model)`).
    pub fn add<B: AutodiffBackend, M: AutodiffModule<B>>(&mut self, model: &M, grads: GradientsParams) {
        model.visit(&mut AddGrads::<B> { sum: &mut self.grads, new: grads, backend: std::marker::PhantomData });
        self.micro_batches += 1;
    }

    /// How many micro-batches were added since the last [`take`](Self::take).
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// The summed gradients; the accumulator starts over empty.
    pub fn take(&mut self) -> GradientsParams {
        self.micro_batches = 0;
        std::mem::take(&mut self.grads)
    }
}

struct AddGrads<'a, B> {
    sum: &'a mut GradientsParams,
    new: GradientsParams,
    backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for AddGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(new) = self.new.remove::<B::InnerBackend, D>(param.id) {
            let sum = match self.sum.remove::<B::InnerBackend, D>(param.id) {
                Some(old) => old.add(new),
                None => new,
            };
            self.sum.register(param.id, sum);
        }
    }
}

/// Every float parameter of `model` by path (for [`rlvr_common::model::CausalLm`]: its HF key), in
/// visiting order. The names [`AdamW`] keys its state by.
pub fn named_params<B: Backend, M: Module<B>>(model: &M) -> Vec<(String, ParamId, Vec<usize>)> {
    let mut visitor = ParamNames { path: Vec::new(), out: Vec::new() };
    model.visit(&mut visitor);
    visitor.out
}

struct ParamNames {
    path: Vec<String>,
    out: Vec<(String, ParamId, Vec<usize>)>,
}

impl<B: Backend> ModuleVisitor<B> for ParamNames {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.push((self.path.join("."), param.id, param.lazy_shape().to_vec()));
    }
}

/// One parameter's Adam state.
#[derive(Debug)]
struct ParamState<B: Backend> {
    /// Updates this parameter has had (torch's per-parameter `state["step"]`, for bias correction).
    step: u64,
    shape: Vec<usize>,
    moments: Moments<B>,
}

#[derive(Debug)]
enum Moments<B: Backend> {
    /// Read from a checkpoint; moved to the parameter's device at its next update.
    Host { exp_avg: Vec<f32>, exp_avg_sq: Vec<f32> },
    /// Flattened to `(numel,)`.
    Device { exp_avg: Tensor<B, 1>, exp_avg_sq: Tensor<B, 1> },
}

impl<B: Backend> Moments<B> {
    fn into_device(self, numel: usize, device: &B::Device) -> (Tensor<B, 1>, Tensor<B, 1>) {
        match self {
            Self::Device { exp_avg, exp_avg_sq } => (exp_avg, exp_avg_sq),
            Self::Host { exp_avg, exp_avg_sq } => {
                let up = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [numel]), device);
                (up(exp_avg), up(exp_avg_sq))
            }
        }
    }

    fn to_host(&self) -> (Vec<f32>, Vec<f32>) {
        let host = |t: &Tensor<B, 1>| {
            t.clone().into_data().convert::<f32>().into_vec::<f32>().expect("f32 tensor data")
        };
        match self {
            Self::Host { exp_avg, exp_avg_sq } => (exp_avg.clone(), exp_avg_sq.clone()),
            Self::Device { exp_avg, exp_avg_sq } => (host(exp_avg), host(exp_avg_sq)),
        }
    }
}

/// `torch.optim.AdamW` over any burn module on an autodiff backend whose inner backend is `B`, with
/// its learning rate from [`AdamWConfig::schedule`] and its state keyed by parameter path (see the
/// module docs).
#[derive(Debug)]
pub struct AdamW<B: Backend> {
    config: AdamWConfig,
    /// Updates taken: the schedule's position.
    step: u64,
    state: HashMap<String, ParamState<B>>,
}

/// What [`AdamW::save`] writes to [`META_FILE`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateMeta {
    format_version: u32,
    step: u64,
    config: AdamWConfig,
    /// Per-parameter update counts (equal to `step` unless a parameter went without a gradient).
    param_steps: BTreeMap<String, u64>,
}

impl<B: Backend> AdamW<B> {
    /// A fresh optimiser (no moments, step 0); rejects a config torch would reject.
    pub fn new(config: AdamWConfig) -> Result<Self, OptimError> {
        config.validate()?;
        Ok(Self { config, step: 0, state: HashMap::new() })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The learning rate the next [`step`](Self::step) will use.
    pub fn lr(&self) -> f64 {
        self.config.lr_at(self.step)
    }

    /// One AdamW update of every parameter that has a gradient in `grads` (others are left alone,
    /// weight decay included, as torch skips `grad is None`), at learning rate [`lr`](Self::lr).
    /// Clip first with [`clip_grad_norm`].
    ///
    /// # Panics
    /// If a parameter's shape differs from the state kept under its name: the model is not the one
    /// this optimiser was stepping or was [`load`](Self::load)ed against.
    pub fn step<AB, M>(&mut self, model: M, mut grads: GradientsParams) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let lr = self.lr();
        let (config, state, grads, path) = (&self.config, &mut self.state, &mut grads, Vec::new());
        let model = model.map(&mut UpdateMapper::<AB> { config, lr, state, grads, path });
        self.step += 1;
        model
    }

    /// Writes [`STATE_FILE`] (the moments under `exp_avg.<name>` / `exp_avg_sq.<name>`, f32, in each
    /// parameter's shape) and [`META_FILE`] (step counts and config) into `dir`, creating it. Each
    /// file is written to a temporary name and renamed into place.
    pub fn save(&self, dir: &Path) -> Result<(), OptimError> {
        std::fs::create_dir_all(dir).map_err(|source| OptimError::Io { path: dir.to_path_buf(), source })?;
        let mut tensors = Vec::with_capacity(2 * self.state.len());
        let mut param_steps = BTreeMap::new();
        for (name, s) in &self.state {
            let (m, v) = s.moments.to_host();
            tensors.push((format!("exp_avg.{name}"), HostTensor::new(s.shape.clone(), m)));
            tensors.push((format!("exp_avg_sq.{name}"), HostTensor::new(s.shape.clone(), v)));
            param_steps.insert(name.clone(), s.step);
        }
        checkpoint::write_safetensors(&dir.join(STATE_FILE), &tensors, SaveDtype::F32)?;
        let config = self.config.clone();
        let meta = StateMeta { format_version: FORMAT_VERSION, step: self.step, config, param_steps };
        let json = serde_json::to_string_pretty(&meta).expect("optimizer metadata serialises");
        let path = dir.join(META_FILE);
        let tmp = dir.join(format!("{META_FILE}.tmp"));
        std::fs::write(&tmp, json).map_err(|source| OptimError::Io { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, &path).map_err(|source| OptimError::Io { path, source })
    }

    /// Restores what [`save`](Self::save) wrote in `dir`, config included, and checks it against
    /// `model`: every saved name must be a parameter of `model` with the saved shape. Parameters
    /// without saved state start fresh, as in torch.
    pub fn load<MB: Backend, M: Module<MB>>(dir: &Path, model: &M) -> Result<Self, OptimError> {
        let meta_path = dir.join(META_FILE);
        let bad = |message: String| OptimError::State { path: meta_path.clone(), message };
        let text = std::fs::read_to_string(&meta_path)
            .map_err(|source| OptimError::Io { path: meta_path.clone(), source })?;
        let meta: StateMeta = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(bad(format!("format_version is {}; this build reads {FORMAT_VERSION}", meta.format_version)));
        }
        meta.config.validate()?;
        let state_path = dir.join(STATE_FILE);
        let mut tensors: HashMap<String, HostTensor> = checkpoint::read_safetensors(&state_path)?.into_iter().collect();
        let params: HashMap<String, Vec<usize>> = named_params(model).into_iter().map(|(n, _, s)| (n, s)).collect();
        let mut state = HashMap::with_capacity(meta.param_steps.len());
        for (name, step) in meta.param_steps {
            let mut take = |key: String| {
                tensors.remove(&key).ok_or_else(|| OptimError::State {
                    path: state_path.clone(),
                    message: format!("`{key}` is missing although {META_FILE} lists `{name}`"),
                })
            };
            let (m, v) = (take(format!("exp_avg.{name}"))?, take(format!("exp_avg_sq.{name}"))?);
            let Some(shape) = params.get(&name) else {
                return Err(bad(format!("there is state for `{name}`, which is not a parameter of this model")));
            };
            if &m.shape != shape || &v.shape != shape {
                return Err(bad(format!(
                    "the state of `{name}` has shape {:?} but the parameter has shape {shape:?}",
                    m.shape
                )));
            }
            let moments = Moments::Host { exp_avg: m.data, exp_avg_sq: v.data };
            state.insert(name, ParamState { step, shape: shape.clone(), moments });
        }
        if let Some(extra) = tensors.keys().min() {
            return Err(OptimError::State {
                path: state_path,
                message: format!("`{extra}` belongs to no parameter listed in {META_FILE}"),
            });
        }
        Ok(Self { config: meta.config, step: meta.step, state })
    }
}

/// The update as a module map: the path tracks the parameter's name, the grad comes by `ParamId`.
struct UpdateMapper<'a, AB: AutodiffBackend> {
    config: &'a AdamWConfig,
    lr: f64,
    state: &'a mut HashMap<String, ParamState<AB::InnerBackend>>,
    grads: &'a mut GradientsParams,
    path: Vec<String>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for UpdateMapper<'_, AB> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<AB::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let name = self.path.join(".");
        let require_grad = tensor.is_require_grad();
        let dims = tensor.dims();
        let numel = dims.iter().product();
        let device = grad.device();
        let p = tensor.inner().reshape([numel]);
        let g = grad.reshape([numel]);
        let s = self.state.entry(name).or_insert_with_key(|_| ParamState {
            step: 0,
            shape: dims.to_vec(),
            moments: Moments::Device {
                exp_avg: Tensor::zeros([numel], &device),
                exp_avg_sq: Tensor::zeros([numel], &device),
            },
        });
        assert_eq!(
            s.shape,
            dims,
            "optimizer state of `{}` has shape {:?} but the parameter has shape {dims:?}: \
             not the model this optimizer steps",
            self.path.join("."),
            s.shape
        );
        let moments = std::mem::replace(&mut s.moments, Moments::Host { exp_avg: Vec::new(), exp_avg_sq: Vec::new() });
        let (m, v) = moments.into_device(numel, &device);
        s.step += 1;

        // The statement order and operand order of torch's `_single_tensor_adam` (`decoupled_weight_decay`).
        let c = self.config;
        let (lr, (beta1, beta2)) = (self.lr, c.betas);
        // 1. p *= 1 - lr * wd.
        let decay = c.weight_decay != 0.0 && !(c.exclude_1d_from_decay && D == 1);
        let p = if decay { p.mul_scalar(1.0 - lr * c.weight_decay) } else { p };
        // 2. m.lerp_(g, 1 - beta1) = m + (1 - beta1) * (g - m); v = v * beta2 + (1 - beta2) * g * g.
        let m = m.clone().add(g.clone().sub(m).mul_scalar(1.0 - beta1));
        let v = v.mul_scalar(beta2).add(g.clone().mul_scalar(1.0 - beta2).mul(g));
        // 3. Bias corrections in f64, as Python floats.
        let t = s.step as f64;
        let step_size = lr / (1.0 - beta1.powf(t));
        let bias_correction2_sqrt = (1.0 - beta2.powf(t)).sqrt();
        // 4. p += -step_size * m / (sqrt(v) / sqrt(bc2) + eps).
        let denom = v.clone().sqrt().div_scalar(bias_correction2_sqrt).add_scalar(c.eps);
        let p = p.add(m.clone().mul_scalar(-step_size).div(denom));
        s.moments = Moments::Device { exp_avg: m, exp_avg_sq: v };

        let mut tensor = Tensor::from_inner(p.reshape(dims));
        if require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(warmup_steps: u64, total_steps: u64, min_lr_ratio: f64) -> LrSchedule {
        LrSchedule { warmup_steps, total_steps, min_lr_ratio, decay: LrDecay::Cosine, ..LrSchedule::default() }
    }

    #[test]
    fn warmup_then_constant() {
        let s = LrSchedule { warmup_steps: 4, ..LrSchedule::default() };
        let f: Vec<f64> = (0..6).map(|t| s.factor(t)).collect();
        assert_eq!(f, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]);
        let s = LrSchedule { warmup_steps: 4, warmup_init_ratio: 0.2, ..LrSchedule::default() };
        assert_eq!(s.factor(0), 0.2);
        assert!((s.factor(2) - 0.6).abs() < 1e-15);
        assert_eq!(LrSchedule::default().factor(0), 1.0);
    }

    #[test]
    fn cosine_reaches_peak_half_and_floor() {
        let s = cosine(2, 12, 0.1);
        assert_eq!(s.factor(2), 1.0);
        assert!((s.factor(7) - 0.55).abs() < 1e-12, "{}", s.factor(7));
        assert!((s.factor(12) - 0.1).abs() < 1e-12);
        // Monotone between warmup and the end.
        assert!((2..12).all(|t| s.factor(t + 1) <= s.factor(t)));
    }

    #[test]
    fn bad_configs_name_their_field() {
        let field = |c: AdamWConfig| match c.validate() {
            Err(OptimError::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(AdamWConfig { lr: -1.0, ..Default::default() }), "lr");
        assert_eq!(field(AdamWConfig { betas: (0.9, 1.0), ..Default::default() }), "betas[1]");
        assert_eq!(field(AdamWConfig { schedule: cosine(0, 0, 0.0), ..Default::default() }), "schedule.total_steps");
        assert_eq!(field(AdamWConfig { schedule: cosine(5, 4, 0.0), ..Default::default() }), "schedule.warmup_steps");
        assert_eq!(field(AdamWConfig { schedule: cosine(0, 4, 1.5), ..Default::default() }), "schedule.min_lr_ratio");
        assert!(AdamWConfig::default().validate().is_ok());
    }

    #[test]
    fn config_reads_from_toml_with_defaults() {
        let c: AdamWConfig = toml::from_str(
            "lr = 1e-6\nweight_decay = 0.0\n[schedule]\ndecay = \"cosine\"\nwarmup_steps = 10\ntotal_steps = 100\n",
        )
        .unwrap();
        assert_eq!(c.betas, (0.9, 0.999));
        assert_eq!(c.schedule.num_cycles, 0.5);
        assert_eq!(c.lr_at(5), 0.5e-6);
        assert!(toml::from_str::<AdamWConfig>("learning_rate = 1.0").is_err());
    }
}
