//! The embedded loop (`rlvr train`): the actor, the verifier and the learner as tasks in one process,
//! over the in-process transports.
//!
//! ```text
//! prompts ─▶ actor task (engine, run_actor) ─▶ rollouts ─▶ scoring (verifier) ─▶ learner ─▶ weights v+1
//!    ▲                      ▲                                                          │
//!    └── data cursor        └──────────────── InProcessWeights (checksummed) ◀─────────┘
//! ```
//!
//! `sync` mode samples batch k with weights k and then trains on it; `async` mode hands the actor the
//! prompts of batch k+1 before training on batch k, so sampling and training overlap and every batch is
//! one version stale (`runtime.max_staleness` bounds it; older rollouts are dropped and counted).
//!
//! Resume is exact in both modes: a checkpoint holds the learner (weights, optimiser, critic), the data
//! cursor of the next batch and, in async mode, the weights that batch was being sampled with, so the
//! resumed actor samples it with them and takes the current weights only for the batch after, as the
//! uninterrupted run did. (The checkpoint an interrupted run writes on shutdown has no actor weights:
//! the batch in flight is resampled with the saved weights.)

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use rlvr_actor::actor_loop::{ActorConfig, ChannelSink, ChannelSource, PromptItem, run_actor};
use rlvr_actor::engine::{Engine, EngineConfig, RequestParams};
use rlvr_actor::sampling::SamplingParams;
use rlvr_common::checkpoint::{HostTensor, SaveDtype};
use rlvr_common::model::{CausalLm, Cpu, ModelConfig};
use rlvr_common::rollout::Rollout;
use rlvr_common::tokenizer::Tokenizer;
use rlvr_common::weights::{InProcessWeights, WeightPublisher, WeightUpdate};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Mode, RunConfig};
use crate::data::{DataCursor, Problem, ProblemStream};
use crate::eval::{EvalParams, EvalReport, evaluate};
use crate::reward::{Prompter, Reward, Scorer};
use crate::trainer::{Learner, StepStats, TrainSample};

/// Files of a checkpoint directory besides the HF model files.
const STATE_FILE: &str = "trainer_state.json";
const CONFIG_FILE: &str = "run.toml";

/// What is saved beside the weights and the optimiser state to resume exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Rollout batches trained on.
    pub step: usize,
    /// The weight version the saved weights are (= step: version 0 is the initial policy).
    pub weight_version: u64,
    /// Where the training stream continues.
    pub data: DataCursor,
    pub seed: u64,
    /// Held-out results before training, carried to the final summary.
    pub eval_before: Option<EvalReport>,
    /// Async mode: the version of the weights the actor was sampling the next batch with when the
    /// checkpoint was taken (one behind `weight_version`), saved in `actor/`, so that a resumed run
    /// samples that batch with them, as the uninterrupted run did. Absent in sync mode, at the last
    /// step, and in the checkpoint an interrupted run leaves (which then resamples that batch with
    /// the saved weights).
    #[serde(default)]
    pub actor_weight_version: Option<u64>,
}

/// The subdirectory of an async checkpoint with the actor's weights (see
/// [`TrainerState::actor_weight_version`]).
const ACTOR_DIR: &str = "actor";

/// Options that are not part of the run's config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// A checkpoint directory to continue from.
    pub resume: Option<PathBuf>,
    /// Print one metrics line per step on stderr.
    pub verbose: bool,
}

/// The end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub steps: usize,
    pub seconds: f64,
    pub samples: usize,
    pub samples_per_s: f64,
    pub eval_before: Option<EvalReport>,
    pub eval_after: Option<EvalReport>,
    pub final_checkpoint: PathBuf,
}

/// One step's metrics line (also a JSONL record in `metrics.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub step: usize,
    pub weight_version: u64,
    pub reward_mean: f64,
    pub accuracy: f64,
    pub response_len_mean: f64,
    pub groups_kept: usize,
    pub groups_dropped: usize,
    pub stale_dropped: usize,
    pub staleness_max: u64,
    pub rollout_s: f64,
    pub train_s: f64,
    pub sync_s: f64,
    pub tokens_per_s: f64,
    #[serde(flatten)]
    pub train: StepStats,
}

impl StepMetrics {
    fn line(&self) -> String {
        let critic = match (self.train.value_loss, self.train.value_clip_fraction, self.train.value_mean) {
            (Some(loss), Some(clip), Some(mean)) => format!(" | value {mean:.3} vloss {loss:.4} vclip {clip:.3}"),
            _ => String::new(),
        };
        format!(
            "step {:>3} v{} | reward {:.3} acc {:.3} len {:.1} | loss {:.4} kl {:.4} ent {:.3} clip {:.3} gnorm {:.3} lr {:.2e} | groups {}/{} stale {} | rollout {:.1}s train {:.1}s sync {:.1}s {:.0} tok/s{critic}",
            self.step,
            self.weight_version,
            self.reward_mean,
            self.accuracy,
            self.response_len_mean,
            self.train.loss,
            self.train.kl,
            self.train.entropy,
            self.train.clip_fraction,
            self.train.grad_norm,
            self.train.lr,
            self.groups_kept,
            self.groups_kept + self.groups_dropped,
            self.staleness_max,
            self.rollout_s,
            self.train_s,
            self.sync_s,
            self.tokens_per_s
        )
    }
}

/// A scored rollout.
struct Scored {
    rollout: Rollout,
    reward: f32,
    correct: bool,
    slot: usize,
}

/// Runs `rlvr train`: [`train_with_reward`] with the math verifier.
pub async fn train(config: RunConfig, options: TrainOptions, shutdown: CancellationToken) -> anyhow::Result<RunSummary> {
    let model_dir = options.resume.clone().unwrap_or_else(|| config.model.path.clone());
    let tokenizer = Tokenizer::from_dir(&model_dir).with_context(|| format!("loading the tokenizer of {}", model_dir.display()))?;
    let reward: Arc<dyn Reward> = Arc::new(Scorer::new(tokenizer, &config));
    train_with_reward(config, options, shutdown, reward).await
}

/// The embedded loop with any reward. Returns when `runtime.steps` batches are trained or `shutdown`
/// fires (after saving a checkpoint at the last completed step).
pub async fn train_with_reward(
    config: RunConfig,
    options: TrainOptions,
    shutdown: CancellationToken,
    reward: Arc<dyn Reward>,
) -> anyhow::Result<RunSummary> {
    config.validate()?;
    let start = Instant::now();
    let run_dir = config.runtime.run_dir.clone();
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating the run directory {}", run_dir.display()))?;
    std::fs::write(run_dir.join(CONFIG_FILE), toml::to_string_pretty(&config)?)?;

    // 1. Model, tokenizer, state: from the config's model or from the checkpoint being resumed.
    let (model_dir, state) = match &options.resume {
        Some(dir) => {
            let text = std::fs::read_to_string(dir.join(STATE_FILE))
                .with_context(|| format!("{} is not an rlvr checkpoint (no {STATE_FILE})", dir.display()))?;
            (dir.clone(), Some(serde_json::from_str::<TrainerState>(&text)?))
        }
        None => (config.model.path.clone(), None),
    };
    let model_config = ModelConfig::from_file(&model_dir.join("config.json"))
        .with_context(|| format!("loading {} (run scripts/setup-model.sh for the default model)", model_dir.display()))?;
    let weights = rlvr_common::checkpoint::read_weights(&model_dir)?;
    let device = Default::default();
    // An async checkpoint carries the weights its prefetched batch was being sampled with.
    let actor_version = match (&state, config.runtime.mode) {
        (Some(TrainerState { actor_weight_version: Some(v), .. }), Mode::Async) => Some(*v),
        _ => None,
    };
    let actor_weights = match actor_version {
        Some(_) => rlvr_common::checkpoint::read_weights(&model_dir.join(ACTOR_DIR))
            .with_context(|| format!("{} is an async checkpoint without its actor weights", model_dir.display()))?,
        None => weights.clone(),
    };
    let actor_model = CausalLm::<Cpu>::from_weights(model_config.clone(), actor_weights, &device)?;
    let reference = if config.algorithm.policy_loss.kl.is_some() {
        // The reference policy is the initial model, also on resume.
        Some(CausalLm::<Cpu>::load(&config.model.path, &device)?)
    } else {
        None
    };
    let learner = Learner::new(&config, model_config.clone(), weights, reference, options.resume.as_deref())?;
    let (mut stream, _) = ProblemStream::open(&config.data.source, config.runtime.seed, config.data.eval_prompts)?;
    let mut step = 0;
    let mut version = 0u64;
    let mut eval_before = None;
    if let Some(s) = &state {
        if s.seed != config.runtime.seed {
            bail!("the checkpoint was trained with runtime.seed = {}, the config says {}; resume with the same seed", s.seed, config.runtime.seed);
        }
        stream.seek(s.data);
        step = s.step;
        version = s.weight_version;
        eval_before = s.eval_before.clone();
    }
    if step >= config.runtime.steps {
        bail!("the checkpoint is at step {step}, and runtime.steps is {}: raise runtime.steps to train further", config.runtime.steps);
    }
    let engine_config = EngineConfig { max_batch_rows: config.rollout.max_batch, ..Default::default() };
    let engine = Engine::new(actor_model, actor_version.unwrap_or(version), engine_config);
    let resumed = Resumed { resumed: state.is_some(), actor_behind: actor_version.is_some() };
    Box::pin(train_loop(config, options, shutdown, engine, learner, stream, step, version, eval_before, resumed, start, reward)).await
}

/// Runs a closure on the blocking pool (forward passes never run on the async reactor).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await.context("a compute task panicked")
}

#[allow(clippy::too_many_arguments)]
async fn train_loop(
    config: RunConfig,
    options: TrainOptions,
    shutdown: CancellationToken,
    engine: Engine<Cpu>,
    mut learner: Learner,
    mut stream: ProblemStream,
    mut step: usize,
    mut version: u64,
    mut eval_before: Option<EvalReport>,
    resumed: Resumed,
    start: Instant,
    scorer: Arc<dyn Reward>,
) -> anyhow::Result<RunSummary> {
    let run_dir = config.runtime.run_dir.clone();
    let tokenizer_from = tokenizer_dir(&config, &options);
    let tokenizer = Tokenizer::from_dir(&tokenizer_from).with_context(|| format!("loading the tokenizer of {}", tokenizer_from.display()))?;
    let prompter = Arc::new(Prompter::new(tokenizer.clone(), &config, &learner.model_config().eos_token_ids));
    let (_, held_out) = ProblemStream::open(&config.data.source, config.runtime.seed, config.data.eval_prompts)?;
    let held_out = Arc::new(held_out);
    let eval_params = EvalParams {
        samples: config.runtime.eval_samples,
        temperature: config.runtime.eval_temperature,
        top_p: 1.0,
        max_new_tokens: config.rollout.max_new_tokens,
        seeds: vec![config.runtime.seed],
    };

    // 2. Held-out evaluation before training (once per run, not again on resume).
    let mut engine = engine;
    if config.runtime.eval && !resumed.resumed {
        let t = Instant::now();
        let (p, s, h, params) = (prompter.clone(), scorer.clone(), held_out.clone(), eval_params.clone());
        let (back, report) = blocking(move || {
            let r = evaluate(&mut engine, &h, &p, s.as_ref(), &params);
            (engine, r)
        })
        .await?;
        engine = back;
        let report = report?;
        eprintln!("eval before: {} in {:.1}s", report.summary(), t.elapsed().as_secs_f64());
        eval_before = Some(report);
    }

    // 3. The actor task.
    let weights = Arc::new(InProcessWeights::new());
    let (prompt_tx, prompt_rx) = mpsc::channel::<PromptItem>(1024);
    let (rollout_tx, mut rollout_rx) = mpsc::channel::<Rollout>(4096);
    let actor_shutdown = shutdown.child_token();
    let actor_config = ActorConfig { max_staleness: config.runtime.max_staleness, ..Default::default() };
    let actor = tokio::spawn(run_actor(
        engine,
        ChannelSource(prompt_rx),
        ChannelSink(rollout_tx),
        weights.clone(),
        actor_config,
        actor_shutdown.clone(),
    ));
    let metrics_path = run_dir.join("metrics.jsonl");
    let mut metrics_file = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path)?;
    let (r, d) = (&config.rollout, &config.data);
    let request_params = |seed: u64| RequestParams {
        sampling: SamplingParams { temperature: r.temperature, top_p: r.top_p, top_k: r.top_k, min_p: 0.0 },
        max_new_tokens: r.max_new_tokens,
        stop_token_ids: prompter.stop_token_ids.clone(),
        stop_strings: vec![],
        seed,
        n: r.group_size,
    };
    // Prompts of a batch: (slot -> problem), sent to the actor.
    let mut draws = 0usize;
    let send_batch = |stream: &mut ProblemStream, step: usize, count: usize, first_slot: usize| -> anyhow::Result<Vec<(usize, Problem, PromptItem)>> {
        let mut out = vec![];
        for slot in first_slot..first_slot + count {
            let problem = stream.next_problem();
            let seed = config.runtime.seed.wrapping_mul(0x1000_0000_01b3).wrapping_add((step as u64) << 20).wrapping_add(slot as u64);
            let item = PromptItem {
                prompt_id: problem.id.clone(),
                group_id: format!("s{step}-g{slot}"),
                prompt: prompter.prompt_ids(&problem)?,
                params: request_params(seed),
            };
            out.push((slot, problem, item));
        }
        Ok(out)
    };
    let mut pending: BTreeMap<String, (usize, Problem)> = BTreeMap::new();
    // The cursor before the batch in flight was drawn: what a checkpoint must resume from.
    let mut batch_cursor = stream.cursor();
    let queue = |items: Vec<(usize, Problem, PromptItem)>, pending: &mut BTreeMap<String, (usize, Problem)>| {
        let mut sends = vec![];
        for (slot, problem, item) in items {
            pending.insert(item.group_id.clone(), (slot, problem));
            sends.push(item);
        }
        sends
    };
    for item in queue(send_batch(&mut stream, step, d.prompts_per_step, 0)?, &mut pending) {
        prompt_tx.send(item).await.context("the actor stopped")?;
    }
    draws += d.prompts_per_step;
    let mut total_samples = 0usize;
    let mut last_checkpoint = None;
    let mut actor_behind = resumed.actor_behind;
    let every = config.runtime.checkpoint_every;
    let checkpoint_due = |step: usize| (every > 0 && step.is_multiple_of(every)) || step == config.runtime.steps;
    // A checkpoint after `step` updates, with the async actor's weights when it has a batch in flight.
    let checkpoint = |learner: &Learner, step, version, data, eval_before: &Option<EvalReport>, actor: Option<&(u64, Vec<(String, HostTensor)>)>| {
        let state = TrainerState {
            step,
            weight_version: version,
            data,
            seed: config.runtime.seed,
            eval_before: eval_before.clone(),
            actor_weight_version: actor.map(|(v, _)| *v),
        };
        save_checkpoint(&run_dir, &config, learner, &state, actor.map(|(_, w)| w.as_slice()), &tokenizer_dir(&config, &options))
    };
    while step < config.runtime.steps {
        if shutdown.is_cancelled() {
            break;
        }
        // 4. Rollout: collect complete groups; score them; with dynamic sampling, replace groups whose
        // rewards are all equal until the batch is full or the draw budget is spent.
        let t_rollout = Instant::now();
        let mut groups: BTreeMap<String, Vec<Scored>> = BTreeMap::new();
        let mut kept: Vec<Vec<Scored>> = vec![];
        let (mut dropped, mut stale_dropped, mut staleness_max) = (0usize, 0usize, 0u64);
        let mut next_slot = d.prompts_per_step;
        let mut outstanding = pending.len();
        while kept.len() < d.prompts_per_step && outstanding > 0 {
            let rollout = tokio::select! {
                r = rollout_rx.recv() => r.context("the actor stopped before the batch was complete")?,
                () = shutdown.cancelled() => break,
            };
            let Some((slot, problem)) = pending.get(&rollout.group_id).cloned() else { continue };
            let sc = scorer.clone();
            let (rollout, score) = blocking(move || {
                let s = sc.score(&problem, &rollout.response_token_ids);
                (rollout, s)
            })
            .await?;
            let score = score?;
            let g = groups.entry(rollout.group_id.clone()).or_default();
            g.push(Scored { rollout, reward: score.reward, correct: score.correct, slot });
            if g.len() < r.group_size {
                continue;
            }
            let gid = g[0].rollout.group_id.clone();
            let group = groups.remove(&gid).expect("just filled");
            pending.remove(&gid);
            outstanding -= 1;
            let lag = version.saturating_sub(group[0].rollout.weight_version);
            staleness_max = staleness_max.max(lag);
            let aborted = group.iter().any(|s| s.rollout.finish_reason == rlvr_common::rollout::FinishReason::Abort);
            if lag > config.runtime.max_staleness || aborted {
                stale_dropped += 1;
            } else if r.dynamic_sampling && group.iter().all(|s| s.reward == group[0].reward) {
                dropped += 1;
            } else {
                kept.push(group);
                continue;
            }
            // Replace a dropped group while the draw budget lasts.
            if draws < d.prompts_per_step * r.max_draw_factor * (step + 1) {
                for item in queue(send_batch(&mut stream, step, 1, next_slot)?, &mut pending) {
                    prompt_tx.send(item).await.context("the actor stopped")?;
                }
                next_slot += 1;
                draws += 1;
                outstanding += 1;
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        let rollout_s = t_rollout.elapsed().as_secs_f64();
        // Groups beyond a full batch (replacements that arrived late) are not trained on.
        kept.truncate(d.prompts_per_step);
        kept.sort_by_key(|g| g[0].slot);
        // 5. Async: hand the actor the next batch now, sampled with the current weights while we train.
        let next_cursor = stream.cursor();
        if config.runtime.mode == Mode::Async && step + 1 < config.runtime.steps {
            if std::mem::take(&mut actor_behind) {
                // Resumed with the actor one version behind: it has just sampled the batch it had in
                // flight with those weights; the uninterrupted run had published the current ones by now.
                let host = learner.host_weights();
                let v = version;
                weights.publish(blocking(move || WeightUpdate::new(v, host)).await?)?;
            }
            pending.clear();
            for item in queue(send_batch(&mut stream, step + 1, d.prompts_per_step, 0)?, &mut pending) {
                prompt_tx.send(item).await.context("the actor stopped")?;
            }
            draws = d.prompts_per_step * (step + 1) + d.prompts_per_step;
        }
        // 6. Train.
        let t_train = Instant::now();
        let samples: Vec<TrainSample> = kept
            .iter()
            .flatten()
            .map(|s| TrainSample {
                group: s.slot as u64,
                prompt: s.rollout.prompt_token_ids.clone(),
                response: s.rollout.response_token_ids.clone(),
                rollout_log_probs: s.rollout.log_probs.clone(),
                reward: s.reward,
            })
            .collect();
        let n_samples = samples.len();
        let tokens: usize = samples.iter().map(|s| s.prompt.len() + s.response.len()).sum();
        let all: Vec<&Scored> = kept.iter().flatten().collect();
        // Async: the weights the prefetched batch is sampled with, for a checkpoint after this step.
        let actor_weights = (config.runtime.mode == Mode::Async && step + 1 < config.runtime.steps && checkpoint_due(step + 1))
            .then(|| (version, learner.host_weights()));
        let (train_stats, back) = if samples.is_empty() {
            (StepStats::default(), learner)
        } else {
            let (l, stats) = blocking(move || {
                let stats = learner.train_on(&samples);
                (learner, stats)
            })
            .await?;
            (stats?, l)
        };
        learner = back;
        let train_s = t_train.elapsed().as_secs_f64();
        // 7. Publish the new weights (checksummed) for the actor.
        let t_sync = Instant::now();
        version += 1;
        step += 1;
        let host = learner.host_weights();
        let update = blocking(move || WeightUpdate::new(version, host)).await?;
        weights.publish(update)?;
        let sync_s = t_sync.elapsed().as_secs_f64();
        total_samples += n_samples;
        let m = StepMetrics {
            step,
            weight_version: version,
            reward_mean: mean(all.iter().map(|s| f64::from(s.reward))),
            accuracy: mean(all.iter().map(|s| f64::from(u8::from(s.correct)))),
            response_len_mean: mean(all.iter().map(|s| s.rollout.response_token_ids.len() as f64)),
            groups_kept: kept.len(),
            groups_dropped: dropped,
            stale_dropped,
            staleness_max,
            rollout_s,
            train_s,
            sync_s,
            tokens_per_s: tokens as f64 / train_s.max(1e-9),
            train: train_stats,
        };
        if options.verbose {
            eprintln!("{}", m.line());
        }
        serde_json::to_writer(&mut metrics_file, &m)?;
        metrics_file.write_all(b"\n")?;
        metrics_file.flush()?;
        // 8. Sync mode: the next batch, sampled with the weights just published.
        batch_cursor = if config.runtime.mode == Mode::Sync { stream.cursor() } else { next_cursor };
        if checkpoint_due(step) {
            last_checkpoint = Some(checkpoint(&learner, step, version, batch_cursor, &eval_before, actor_weights.as_ref())?);
        }
        if config.runtime.mode == Mode::Sync && step < config.runtime.steps {
            pending.clear();
            for item in queue(send_batch(&mut stream, step, d.prompts_per_step, 0)?, &mut pending) {
                prompt_tx.send(item).await.context("the actor stopped")?;
            }
            draws = d.prompts_per_step * step + d.prompts_per_step;
        }
    }
    // 9. Stop the actor (abandoning a prefetched batch) and save where we are.
    actor_shutdown.cancel();
    drop(prompt_tx);
    let _ = actor.await;
    if last_checkpoint.is_none() || shutdown.is_cancelled() {
        last_checkpoint = Some(checkpoint(&learner, step, version, batch_cursor, &eval_before, None)?);
    }
    let final_checkpoint = last_checkpoint.expect("saved above");
    // 10. Held-out evaluation after training, with the final weights.
    let mut eval_after = None;
    if config.runtime.eval && !shutdown.is_cancelled() {
        let t = Instant::now();
        let model = CausalLm::<Cpu>::from_weights(learner.model_config().clone(), learner.host_weights().into_iter().collect(), &Default::default())?;
        let mut engine = Engine::new(model, version, EngineConfig { max_batch_rows: config.rollout.max_batch, ..Default::default() });
        let (p, s, params) = (prompter.clone(), scorer.clone(), eval_params.clone());
        let report = blocking(move || evaluate(&mut engine, &held_out, &p, s.as_ref(), &params)).await??;
        eprintln!("eval after: {} in {:.1}s", report.summary(), t.elapsed().as_secs_f64());
        eval_after = Some(report);
    }
    let seconds = start.elapsed().as_secs_f64();
    let summary = RunSummary {
        steps: step,
        seconds,
        samples: total_samples,
        samples_per_s: total_samples as f64 / seconds,
        eval_before,
        eval_after,
        final_checkpoint,
    };
    std::fs::write(run_dir.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    Ok(summary)
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for x in xs {
        sum += x;
        n += 1;
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Where the tokenizer files come from (the base model, or the checkpoint being resumed).
fn tokenizer_dir(config: &RunConfig, options: &TrainOptions) -> PathBuf {
    if config.model.path.join("tokenizer.json").exists() {
        config.model.path.clone()
    } else {
        options.resume.clone().unwrap_or_else(|| config.model.path.clone())
    }
}

/// How a run started.
#[derive(Debug, Clone, Copy)]
struct Resumed {
    /// From a checkpoint.
    resumed: bool,
    /// From an async checkpoint whose actor weights are one version behind the learner's.
    actor_behind: bool,
}

/// Writes `run_dir/checkpoints/step-N`: HF weights + config.json + tokenizer files (transformers loads
/// the directory), the optimiser state (and the critic's), the trainer state, the resolved config and,
/// in async mode, `actor_weights` (the weights the prefetched batch is being sampled with) in `actor/`.
/// Written to a temporary directory first and renamed, so a crash never leaves a half-written checkpoint.
pub fn save_checkpoint(
    run_dir: &Path,
    config: &RunConfig,
    learner: &Learner,
    state: &TrainerState,
    actor_weights: Option<&[(String, HostTensor)]>,
    tokenizer_from: &Path,
) -> anyhow::Result<PathBuf> {
    let dir = run_dir.join("checkpoints").join(format!("step-{}", state.step));
    let tmp = run_dir.join("checkpoints").join(format!(".step-{}.tmp", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    learner.save(&tmp, SaveDtype::F32)?;
    if let Some(w) = actor_weights {
        std::fs::create_dir_all(tmp.join(ACTOR_DIR))?;
        rlvr_common::checkpoint::write_safetensors(&tmp.join(ACTOR_DIR).join("model.safetensors"), w, SaveDtype::F32)?;
    }
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
        let src = tokenizer_from.join(f);
        if src.exists() {
            std::fs::copy(&src, tmp.join(f))?;
        }
    }
    std::fs::write(tmp.join(STATE_FILE), serde_json::to_string_pretty(state)?)?;
    std::fs::write(tmp.join(CONFIG_FILE), toml::to_string_pretty(config)?)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    Ok(dir)
}

/// Host copies of weights as a map (for building models).
pub fn weight_map(weights: Vec<(String, HostTensor)>) -> std::collections::HashMap<String, HostTensor> {
    weights.into_iter().collect()
}
