//! The embedded mode (`rlvr train`): the driver ([`crate::driver`]) with an actor task and a verifier
//! task in the same process, over the in-process queues; and what both modes share: loading the start
//! of a run (fresh or from a checkpoint), the checkpoint format, the metrics records.
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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rlvr_actor::actor_loop::{ActorConfig, Decode, run_actor};
use rlvr_actor::engine::{Engine, EngineConfig};
use rlvr_common::checkpoint::{HostTensor, SaveDtype};
use rlvr_common::model::{CausalLm, Cpu, ModelConfig};
use rlvr_common::protocol::{MemberInfo, PromptTask, RewardSettings, Role, RolloutGroup, SampleScore, ScoredGroup};
use rlvr_common::tokenizer::Tokenizer;
use rlvr_common::transport::TransportError;
use rlvr_common::transport::member::spawn_membership;
use rlvr_common::transport::memory::{self, MemoryControl, MemoryStage};
use rlvr_common::weights::{InProcessWeights, WeightSubscriber};
use rlvr_verifier::metrics::Metered;
use rlvr_verifier::worker::{GroupScorer, RewardScorer, WorkerConfig, run_worker};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{Mode, RunConfig};
use crate::data::{DataCursor, Problem, ProblemStream};
use crate::dashboard::serve as serve_dashboard;
use crate::driver::{DriverStart, WeightSink, drive};
use crate::telemetry::{EmbeddedView, RunTelemetry};
use crate::eval::EvalReport;
use crate::reward::{Prompter, Reward, Score, Scorer};
use crate::trainer::{Learner, StepStats};

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
    /// Replace a run already in the run directory (its records and checkpoints are deleted); without
    /// it, and without `resume`, a run directory holding another run is refused.
    pub overwrite: bool,
    /// Print one metrics line per step on stderr.
    pub verbose: bool,
    /// Serve the dashboard, `/metrics`, `/healthz` and `/readyz` here (`127.0.0.1:8080`).
    pub dashboard: Option<String>,
    /// The bearer token the dashboard's controls need (`RLVR_DASHBOARD_TOKEN`); read-only without.
    pub dashboard_token: Option<String>,
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
    /// Scored groups received again after the first copy (redone work after a fault), ignored.
    pub duplicates_ignored: usize,
    /// Groups issued again because their result did not come in time.
    pub groups_reissued: usize,
    /// Scored groups refused as not what was issued under their id (dead-lettered).
    pub groups_rejected: usize,
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
    pub fn line(&self) -> String {
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

/// Runs `rlvr train`: the embedded loop with the verifier's rewards (the same scorer `rlvr-verifier
/// serve` runs), and the math scorer for held-out evaluation.
pub async fn train(config: RunConfig, options: TrainOptions, shutdown: CancellationToken) -> anyhow::Result<RunSummary> {
    let model_dir = options.resume.clone().unwrap_or_else(|| config.model.path.clone());
    let tokenizer = Tokenizer::from_dir(&model_dir).with_context(|| format!("loading the tokenizer of {}", model_dir.display()))?;
    let eval_reward: Arc<dyn Reward> = Arc::new(Scorer::new(tokenizer, &config));
    let scorer: Arc<dyn GroupScorer> = Arc::new(RewardScorer::new(&reward_settings(&config)));
    train_with(config, options, shutdown, scorer, eval_reward).await
}

/// The embedded loop with any [`Reward`] (tests use toy rewards on token ids): it scores the groups
/// and the held-out answers.
pub async fn train_with_reward(config: RunConfig, options: TrainOptions, shutdown: CancellationToken, reward: Arc<dyn Reward>) -> anyhow::Result<RunSummary> {
    let scorer: Arc<dyn GroupScorer> = Arc::new(RewardGroups(reward.clone()));
    train_with(config, options, shutdown, scorer, reward).await
}

/// The embedded loop: the driver over in-process queues, with one actor task and one verifier task.
/// Returns when `runtime.steps` batches are trained or `shutdown` fires (after saving a checkpoint at
/// the last completed step).
pub async fn train_with(
    config: RunConfig,
    options: TrainOptions,
    shutdown: CancellationToken,
    scorer: Arc<dyn GroupScorer>,
    eval_reward: Arc<dyn Reward>,
) -> anyhow::Result<RunSummary> {
    let start = prepare(config, options, eval_reward)?;
    let config = start.config.clone();
    // The actor samples with the weights the driver publishes first (an async checkpoint's actor
    // weights, or the learner's).
    let first = start.actor_weights.clone().unwrap_or_else(|| (start.version, start.learner.host_weights()));
    let model = CausalLm::<Cpu>::from_weights(start.learner.model_config().clone(), weight_map(first.1), &Default::default())?;
    let engine = Engine::new(model, first.0, EngineConfig { max_batch_rows: config.rollout.max_batch, ..Default::default() });
    let (prompts_tx, prompts_rx) = memory::queue::<PromptTask>(4096);
    let (rollouts_tx, rollouts_rx) = memory::queue::<RolloutGroup>(4096);
    let (scored_tx, scored_rx) = memory::queue::<ScoredGroup>(4096);
    let weights = InProcessWeights::new();
    // The workers stop when the driver has stopped (after a signal, at its next safe point), not on the
    // signal itself: an actor gone mid-step would close the queue the driver issues the next batch to.
    let workers = CancellationToken::new();
    let tokenizer = start.prompter.tokenizer().clone();
    let decode: Decode = Arc::new(move |ids: &[u32]| tokenizer.decode(ids, true).unwrap_or_default());
    let actor_config = ActorConfig { max_staleness: config.runtime.max_staleness, one_group_at_a_time: config.rollout.batch_invariant, ..Default::default() };
    let actor_done = actor_config.groups_done.clone();
    let verifier_done = Arc::new(AtomicU64::new(0));
    let scorer: Arc<dyn GroupScorer> = match start.telemetry.verifier_metrics() {
        Some(metrics) => Arc::new(Metered { inner: scorer, metrics, done: verifier_done.clone() }),
        None => scorer,
    };
    let (prompts_len, rollouts_len, scored_len) = (prompts_tx.length_probe(), rollouts_tx.length_probe(), scored_tx.length_probe());
    let weights_view = weights.clone();
    let actor = tokio::spawn(run_actor(engine, MemoryStage { input: prompts_rx, output: rollouts_tx }, Arc::new(weights.clone()), decode, actor_config, workers.clone()));
    let verifier = tokio::spawn(run_worker(MemoryStage { input: rollouts_rx, output: scored_tx }, scorer, WorkerConfig::default(), workers.clone()));
    let control = Arc::new(MemoryControl::default());
    // The dashboard, and the embedded workers as members of the run.
    let telemetry = start.telemetry.clone();
    let view = Arc::new(EmbeddedView {
        control: control.clone(),
        queues: vec![("prompts", Box::new(move || prompts_len() as u64)), ("rollouts", Box::new(move || rollouts_len() as u64)), ("scored", Box::new(move || scored_len() as u64))],
    });
    if let Some(addr) = &start.options.dashboard {
        serve_dashboard(addr, telemetry, view, start.options.dashboard_token.clone(), workers.clone()).await?;
    }
    let host = rlvr_common::transport::member::hostname();
    for (id, role, done) in [("actor-0", Role::Actor, actor_done), ("verifier-0", Role::Verifier, verifier_done)] {
        let (host, weights, start_time) = (host.clone(), weights_view.clone(), Instant::now());
        spawn_membership(
            control.clone(),
            move || {
                let n = done.load(Ordering::Relaxed);
                MemberInfo {
                    id: id.into(),
                    role,
                    host: host.clone(),
                    weight_version: (role == Role::Actor).then(|| weights.latest().map(|(v, _)| v)).flatten(),
                    groups_per_s: n as f64 / start_time.elapsed().as_secs_f64().max(1e-9),
                    groups_done: n,
                    at: rlvr_common::transport::unix_time(),
                }
            },
            Duration::from_secs(1),
            // Its own token: a stopped run ends the heartbeat, and the driver stops the workers.
            workers.child_token(),
        );
    }
    let result = drive(start, prompts_tx, scored_rx, control, WeightSink::InProcess(weights), shutdown).await;
    // Stop the workers (abandoning a prefetched batch) and surface their failures, with their cause:
    // a worker that failed is why the driver stopped, so its error comes first.
    workers.cancel();
    let actor = actor.await;
    let verifier = verifier.await;
    outcome(result, [worker_failure("actor", actor), worker_failure("verifier", verifier)])
}

/// A worker task's failure, with its cause.
fn worker_failure<T, E: Into<anyhow::Error>>(name: &str, joined: Result<Result<T, E>, tokio::task::JoinError>) -> Option<anyhow::Error> {
    match joined {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.into().context(format!("the {name} failed"))),
        Err(e) => Some(anyhow::anyhow!("the {name} task panicked: {e}")),
    }
}

/// The run's result: a worker's failure first (it is why the driver stopped, and the driver's own
/// error, such as a closed queue, says only that), with the driver's error as context. Once the driver
/// has finished, a worker that found its queue closed was only stopped mid-hand-off (the other side
/// had gone): that is the end of the run, not a failure.
fn outcome<T>(driver: anyhow::Result<T>, workers: [Option<anyhow::Error>; 2]) -> anyhow::Result<T> {
    let closed = |e: &anyhow::Error| e.chain().any(|c| matches!(c.downcast_ref::<TransportError>(), Some(TransportError::Closed)));
    let finished = driver.is_ok();
    match workers.into_iter().flatten().find(|e| !(finished && closed(e))) {
        None => driver,
        Some(e) => Err(match driver {
            Ok(_) => e,
            Err(d) => e.context(format!("the run stopped ({d:#})")),
        }),
    }
}

/// What verifiers take from the run config.
pub fn reward_settings(config: &RunConfig) -> RewardSettings {
    RewardSettings {
        overlong_penalty: config.reward.overlong_penalty,
        overlong_buffer: config.reward.overlong_buffer,
        max_new_tokens: config.rollout.max_new_tokens,
    }
}

/// A [`Reward`] (one response to one problem) scoring whole groups.
struct RewardGroups(Arc<dyn Reward>);

impl GroupScorer for RewardGroups {
    fn score(&self, group: &RolloutGroup) -> Vec<SampleScore> {
        let problem = Problem { id: String::new(), question: String::new(), ground_truth: group.reward.ground_truth.clone() };
        group
            .rollouts
            .iter()
            .map(|r| match score_isolated(self.0.as_ref(), &problem, &r.response_token_ids) {
                Ok(s) => SampleScore {
                    reward: s.reward,
                    correct: s.correct,
                    outcome: if s.correct { "correct" } else if s.no_answer { "no_answer" } else { "incorrect" }.into(),
                    detail: String::new(),
                },
                Err(e) => SampleScore { reward: 0.0, correct: false, outcome: "error".into(), detail: format!("{e:#}") },
            })
            .collect()
    }
}

/// One reward call, a panic in it (a verifier bug) caught and returned as that sample's error: the
/// sample gets an error verdict and the run goes on, as `rlvr-verifier check` does per line.
fn score_isolated(reward: &dyn Reward, problem: &Problem, response: &[u32]) -> anyhow::Result<Score> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reward.score(problem, response))).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(anyhow::anyhow!("the reward function panicked: {what}"))
    })
}

/// Loads what the loop starts from: the model and its learner from the config's model or from the
/// checkpoint being resumed, the data stream at its cursor, the prompter.
pub fn prepare(config: RunConfig, options: TrainOptions, eval_reward: Arc<dyn Reward>) -> anyhow::Result<DriverStart> {
    config.validate()?;
    let start = Instant::now();
    let run_dir = config.runtime.run_dir.clone();
    claim_run_dir(&config, &options)?;
    let (model_dir, state) = match &options.resume {
        Some(dir) => {
            let text = std::fs::read_to_string(dir.join(STATE_FILE))
                .with_context(|| format!("{} is not an rlvr checkpoint (no {STATE_FILE})", dir.display()))?;
            check_resumed_config(dir, &config)?;
            (dir.clone(), Some(serde_json::from_str::<TrainerState>(&text)?))
        }
        None => (config.model.path.clone(), None),
    };
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating the run directory {}", run_dir.display()))?;
    std::fs::write(run_dir.join(CONFIG_FILE), toml::to_string_pretty(&config)?)?;
    let model_config = ModelConfig::from_file(&model_dir.join("config.json"))
        .with_context(|| format!("loading {} (run scripts/setup-model.sh for the default model)", model_dir.display()))?;
    let weights = rlvr_common::checkpoint::read_weights(&model_dir)?;
    // An async checkpoint carries the weights its prefetched batch was being sampled with.
    let actor_weights = match (&state, config.runtime.mode) {
        (Some(TrainerState { actor_weight_version: Some(v), .. }), Mode::Async) => {
            let w = rlvr_common::checkpoint::read_weights(&model_dir.join(ACTOR_DIR))
                .with_context(|| format!("{} is an async checkpoint without its actor weights", model_dir.display()))?;
            let mut w: Vec<(String, HostTensor)> = w.into_iter().collect();
            w.sort_by(|a, b| a.0.cmp(&b.0));
            Some((*v, w))
        }
        _ => None,
    };
    let reference = if config.algorithm.policy_loss.kl.is_some() {
        // The reference policy is the initial model, also on resume.
        Some(CausalLm::<Cpu>::load(&config.model.path, &Default::default())?)
    } else {
        None
    };
    let learner = Learner::new(&config, model_config.clone(), weights, reference, options.resume.as_deref())?;
    let (mut stream, held_out) = ProblemStream::open(&config.data.source, config.runtime.seed, config.data.eval_prompts)?;
    let (mut step, mut version, mut eval_before) = (0, 0, None);
    if let Some(s) = &state {
        if s.seed != config.runtime.seed {
            bail!("the checkpoint was trained with runtime.seed = {}, the config says {}; resume with the same seed", s.seed, config.runtime.seed);
        }
        stream.seek(s.data).with_context(|| format!("resuming {}", options.resume.as_deref().unwrap_or(Path::new("?")).display()))?;
        step = s.step;
        version = s.weight_version;
        eval_before = s.eval_before.clone();
    }
    // Records of steps after the starting point belong to an incarnation that died (or to an earlier
    // run in this directory, whose checkpoints a fresh start overwrites too): they are redone.
    for file in ["metrics.jsonl", "trained_groups.jsonl"] {
        truncate_records(&run_dir.join(file), step)?;
    }
    if step >= config.runtime.steps {
        bail!("the checkpoint is at step {step}, and runtime.steps is {}: raise runtime.steps to train further", config.runtime.steps);
    }
    let tokenizer_dir = tokenizer_dir(&config, &options);
    let tokenizer = Tokenizer::from_dir(&tokenizer_dir).with_context(|| format!("loading the tokenizer of {}", tokenizer_dir.display()))?;
    let prompter = Arc::new(Prompter::new(tokenizer, &config, &model_config.eos_token_ids));
    let decoder = prompter.tokenizer().clone();
    let telemetry = Arc::new(RunTelemetry::new(&run_dir, &config.distributed.run, Arc::new(move |ids: &[u32]| decoder.decode(ids, false).unwrap_or_default())));
    Ok(DriverStart {
        resumed: state.is_some(),
        config,
        options,
        start,
        learner,
        stream,
        held_out: Arc::new(held_out),
        prompter,
        eval_reward,
        step,
        version,
        eval_before,
        actor_weights,
        tokenizer_dir,
        telemetry,
    })
}

/// What a run leaves in its directory.
const RUN_FILES: [&str; 5] = [CONFIG_FILE, "metrics.jsonl", "trained_groups.jsonl", "summary.json", "checkpoints"];

/// A run directory is one run's: starting in one that holds another run is refused unless the start
/// resumes it or replaces it (`overwrite`: its records and checkpoints are deleted). A directory
/// whose run has the same config and no checkpoint yet is that run starting over (a learner restarted
/// before its first checkpoint): nothing of it is lost.
fn claim_run_dir(config: &RunConfig, options: &TrainOptions) -> anyhow::Result<()> {
    let dir = &config.runtime.run_dir;
    let present: Vec<&str> = RUN_FILES.iter().copied().filter(|f| dir.join(f).exists()).collect();
    if present.is_empty() || options.resume.is_some() {
        return Ok(());
    }
    if options.overwrite {
        for f in &present {
            let path = dir.join(f);
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.with_context(|| format!("removing {} (--overwrite)", path.display()))?;
        }
        return Ok(());
    }
    let saved = std::fs::read_to_string(dir.join(CONFIG_FILE)).ok().and_then(|t| toml::from_str::<RunConfig>(&t).ok());
    let checkpoint = crate::distributed::latest_checkpoint(dir);
    if saved.as_ref() == Some(config) && checkpoint.is_none() {
        return Ok(());
    }
    let continue_with = match checkpoint {
        Some(ckpt) => format!("continue it with --resume {}", ckpt.display()),
        None => "it has no checkpoint to resume".into(),
    };
    bail!(
        "the run directory {} already holds a run ({}): {continue_with}, replace it with --overwrite, or set runtime.run_dir (--run-dir) to a new directory",
        dir.display(),
        present.join(", ")
    )
}

/// Resuming with a different model, data, algorithm or seed is refused, naming each difference (other
/// fields, such as `runtime.steps`, may change).
fn check_resumed_config(checkpoint: &Path, config: &RunConfig) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(checkpoint.join(CONFIG_FILE)) else {
        tracing::warn!("{} has no {CONFIG_FILE}: resuming without comparing configs", checkpoint.display());
        return Ok(());
    };
    let saved: RunConfig =
        toml::from_str(&text).with_context(|| format!("reading {}", checkpoint.join(CONFIG_FILE).display()))?;
    let changes = config_changes(&saved, config);
    if !changes.is_empty() {
        bail!(
            "resuming {} with a config that differs from the one it was trained with: {}; resume with the same settings, or start a new run (another runtime.run_dir, or --overwrite) to change them",
            checkpoint.display(),
            changes.join("; ")
        );
    }
    Ok(())
}

/// The differences, as `path: old -> new`, between two configs in what a resumed run must keep: the
/// model, the data, the algorithm and the seed.
pub fn config_changes(saved: &RunConfig, new: &RunConfig) -> Vec<String> {
    fn diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = serde_json::Value::Null;
                    diff(&format!("{path}.{k}"), x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), out);
                }
            }
            _ if a != b => out.push(format!("{path}: {a} -> {b}")),
            _ => {}
        }
    }
    let (a, b) = (serde_json::to_value(saved).unwrap_or_default(), serde_json::to_value(new).unwrap_or_default());
    let mut out = Vec::new();
    for section in ["model", "data", "algorithm"] {
        diff(section, &a[section], &b[section], &mut out);
    }
    diff("runtime.seed", &a["runtime"]["seed"], &b["runtime"]["seed"], &mut out);
    out
}

/// Keeps the JSONL records of `path` whose `step` is at most `step` (the rest are redone on resume).
fn truncate_records(path: &Path, step: usize) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let keep: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s as usize <= step))
        .collect();
    let dropped = text.lines().count() - keep.len();
    if dropped > 0 {
        tracing::warn!(file = %path.display(), dropped, from_step = step + 1, "dropping records of steps this run starts before (they are redone)");
        let mut out = keep.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        std::fs::write(path, out)?;
    }
    Ok(())
}

/// Where the tokenizer files come from (the base model, or the checkpoint being resumed).
fn tokenizer_dir(config: &RunConfig, options: &TrainOptions) -> PathBuf {
    if config.model.path.join("tokenizer.json").exists() {
        config.model.path.clone()
    } else {
        options.resume.clone().unwrap_or_else(|| config.model.path.clone())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rlvr_actor::actor_loop::ActorError;

    struct Panics;
    impl Reward for Panics {
        fn score(&self, _: &Problem, response: &[u32]) -> anyhow::Result<Score> {
            if response.is_empty() {
                panic!("index out of bounds in a verifier");
            }
            Ok(Score { reward: 1.0, correct: true, no_answer: false })
        }
    }

    #[test]
    fn a_panicking_reward_gives_that_sample_an_error_verdict() {
        let problem = Problem { id: String::new(), question: String::new(), ground_truth: String::new() };
        let e = score_isolated(&Panics, &problem, &[]).unwrap_err();
        assert!(format!("{e}").contains("panicked: index out of bounds in a verifier"), "{e}");
        assert!(score_isolated(&Panics, &problem, &[1]).unwrap().correct);
    }

    #[test]
    fn a_failed_worker_is_the_error_with_its_cause() {
        let actor = || worker_failure::<(), _>("actor", Ok(Err(anyhow::anyhow!("weights of the wrong shape"))));
        let driver: anyhow::Result<u32> = Err(anyhow::anyhow!("the rollout queue closed"));
        let text = format!("{:#}", outcome(driver, [actor(), None]).unwrap_err());
        assert!(text.starts_with("the run stopped (the rollout queue closed): the actor failed: weights of the wrong shape"), "{text}");
        // A worker that failed after the driver finished still fails the run.
        let text = format!("{:#}", outcome(Ok(1), [None, worker_failure::<(), _>("verifier", Ok(Err(anyhow::anyhow!("boom"))))]).unwrap_err());
        assert_eq!(text, "the verifier failed: boom");
        assert_eq!(outcome(Ok(1), [None, None]).unwrap(), 1);
        // ...unless it only found its queue closed as the run ended.
        let closed = || worker_failure::<(), _>("actor", Ok(Err(ActorError::Transport(TransportError::Closed))));
        assert_eq!(outcome(Ok(1), [closed(), None]).unwrap(), 1);
        assert!(outcome(Err::<u32, _>(anyhow::anyhow!("stopped")), [closed(), None]).is_err());
        assert!(worker_failure::<(), anyhow::Error>("actor", Ok(Ok(()))).is_none());
    }
}
