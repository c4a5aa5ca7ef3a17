//! The learner's loop, written once over the transport traits: `rlvr train` runs it over the in-process
//! queues with an actor and a verifier task beside it, `rlvr learner` over Redis Streams with actors
//! and verifiers in other processes.
//!
//! ```text
//! issue prompts ─▶ prompts queue ─▶ actors ─▶ rollouts queue ─▶ verifiers ─▶ scored queue ─▶ collect
//!       ▲                              ▲                                                     │
//!       └── data cursor                └──────────── weights v+1 (checksummed) ◀── train ◀───┘
//! ```
//!
//! One step, one span per phase: `collect` (complete scored groups of the step), `issue` (async mode:
//! the next step's prompts, sampled while we train), `train`, `publish` (the new weights), `record`
//! (metrics), `checkpoint`, then in sync mode `issue` for the next step.
//!
//! Exactly once: every group has a deterministic id (step, slot) and seed. The learner trains on a
//! group at most once (a duplicate is acknowledged and ignored), on every group it issued for a step
//! (a group whose result is overdue is issued again; dynamic sampling and staleness replace a group
//! with a new slot), and acknowledges scored groups only once a checkpoint covers them: a learner that
//! restarts from its checkpoint finds the groups it had collected since still pending and reuses them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rlvr_common::checkpoint::HostTensor;
use rlvr_common::protocol::{GroupId, PromptTask, RewardSpec, RunState, SamplingSpec, ScoredGroup, WeightAnnouncement};
use rlvr_common::rollout::FinishReason;
use rlvr_common::transport::{Control, Delivery, DeliveryId, Inbox, Outbox};
use rlvr_common::weights::tcp::WeightServer;
use rlvr_common::weights::{InProcessWeights, WeightUpdate};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Mode, RunConfig};
use crate::data::{DataCursor, Problem, ProblemStream};
use crate::eval::{EvalParams, EvalReport};
use crate::reward::{Prompter, Reward};
use crate::run::{RunSummary, StepMetrics, TrainOptions, TrainerState, save_checkpoint};
use crate::telemetry::RunTelemetry;
use crate::trainer::{Learner, StepStats, TrainSample};

/// Where the learner's weights go.
pub enum WeightSink {
    /// Shared memory with the embedded actor.
    InProcess(InProcessWeights),
    /// Served over TCP and announced in the control plane (`host` is how actors reach the server).
    Served { server: WeightServer, host: String },
}

/// Everything the loop starts from, built by `rlvr train` or `rlvr learner`.
pub struct DriverStart {
    pub config: RunConfig,
    pub options: TrainOptions,
    pub start: Instant,
    pub learner: Learner,
    pub stream: ProblemStream,
    pub held_out: Arc<Vec<Problem>>,
    pub prompter: Arc<Prompter>,
    /// Scores held-out answers in `eval`.
    pub eval_reward: Arc<dyn Reward>,
    /// Updates trained so far (0 on a fresh run) and the weight version they made.
    pub step: usize,
    pub version: u64,
    pub eval_before: Option<EvalReport>,
    pub resumed: bool,
    /// An async checkpoint's actor weights (the version its prefetched batch was sampled with).
    pub actor_weights: Option<(u64, Vec<(String, HostTensor)>)>,
    /// Where the tokenizer files of checkpoints come from.
    pub tokenizer_dir: PathBuf,
    /// Metrics, live events and rollout groups for operators.
    pub telemetry: Arc<RunTelemetry>,
}

/// One issued group.
struct Issued {
    task: PromptTask,
    issued_at: Instant,
    done: bool,
}

/// A step's groups in flight.
struct Batch {
    step: u64,
    issued: BTreeMap<u32, Issued>,
    next_slot: u32,
}

/// What `collect` gathered for one step.
struct Collected {
    kept: Vec<ScoredGroup>,
    dropped: usize,
    stale_dropped: usize,
    staleness_max: u64,
}

/// Counters over the whole run (the record of what was trained, for the exactly-once checks).
#[derive(Debug, Default)]
struct Ledger {
    duplicates: usize,
    reissued: usize,
    rejected: usize,
}

/// Trained groups kept unacknowledged (for a restarted learner to reuse) until a checkpoint covers
/// them; past this many, they are acknowledged anyway.
const MAX_UNACKED: usize = 4096;

/// Scored groups of later steps that arrived early (a previous incarnation's), kept for reuse.
const MAX_STASH: usize = 100_000;

struct Driver<P, I, C> {
    config: RunConfig,
    prompts: P,
    scored: I,
    control: Arc<C>,
    weights: WeightSink,
    prompter: Arc<Prompter>,
    stream: ProblemStream,
    batch: Batch,
    stash: BTreeMap<GroupId, Delivery<ScoredGroup>>,
    /// Scored deliveries to acknowledge at the next checkpoint.
    unacked: Vec<DeliveryId>,
    ledger: Ledger,
    /// `trained_groups.jsonl`: the id of every group trained on, per step.
    trained_log: std::fs::File,
    reissue_after: Duration,
    /// The newest announcement, repeated while collecting (an announcement lost with a Redis restart
    /// would leave actors waiting for weights nobody announces).
    announced: Option<(WeightAnnouncement, Instant)>,
    /// The checksum of every version this learner published: a group sampled with other weights under
    /// one of these numbers (by a previous incarnation, another run) is not trained on.
    published: std::collections::HashMap<u64, String>,
}

impl<P: Outbox<PromptTask>, I: Inbox<ScoredGroup>, C: Control> Driver<P, I, C> {
    /// Publishes `tensors` as `version`: to the in-process actor, or served and announced.
    async fn publish(&mut self, version: u64, tensors: Vec<(String, HostTensor)>) -> anyhow::Result<()> {
        let update = tokio::task::spawn_blocking(move || WeightUpdate::new(version, tensors)).await?;
        self.published.insert(version, update.checksum.clone());
        match &self.weights {
            WeightSink::InProcess(w) => w.replace(update),
            WeightSink::Served { server, host } => {
                let bytes = update.tensors.iter().map(|(_, t)| t.data.len() as u64 * 4).sum();
                let announcement = WeightAnnouncement {
                    version,
                    checksum: update.checksum.clone(),
                    address: format!("{host}:{}", server.local_addr().port()),
                    bytes,
                };
                server.publish(update);
                self.control.announce_weights(&announcement).await?;
                self.announced = Some((announcement, Instant::now()));
            }
        }
        Ok(())
    }

    /// Announces the current weights again every few seconds while waiting for results.
    async fn reannounce(&mut self) -> anyhow::Result<()> {
        if let Some((a, at)) = &mut self.announced
            && at.elapsed() > Duration::from_secs(5)
        {
            self.control.announce_weights(a).await?;
            *at = Instant::now();
        }
        Ok(())
    }

    /// The weight versions a group of `step` may be sampled with, issued while the learner is at
    /// `version`: exactly `version` in sync mode; in async mode also the next one, which may arrive
    /// while the group waits.
    fn versions(&self, version: u64) -> (u64, u64) {
        match self.config.runtime.mode {
            Mode::Sync => (version, version),
            Mode::Async => (version, version + 1),
        }
    }

    fn task(&self, group: GroupId, problem: &Problem, versions: (u64, u64)) -> anyhow::Result<PromptTask> {
        let r = &self.config.rollout;
        Ok(PromptTask {
            group,
            prompt_id: problem.id.clone(),
            prompt_token_ids: self.prompter.prompt_ids(problem)?,
            sampling: SamplingSpec {
                temperature: r.temperature,
                top_p: r.top_p,
                top_k: r.top_k,
                min_p: 0.0,
                max_new_tokens: r.max_new_tokens,
                stop_token_ids: self.prompter.stop_token_ids.clone(),
                seed: group.seed(self.config.runtime.seed),
                n: r.group_size,
            },
            min_version: versions.0,
            max_version: versions.1,
            reward: RewardSpec { data_source: String::new(), kind: self.config.reward.kind.clone(), ground_truth: problem.ground_truth.clone() },
        })
    }

    /// Starts a new step's batch of `count` groups.
    async fn issue_batch(&mut self, step: u64, count: usize, version: u64) -> anyhow::Result<()> {
        self.batch = Batch { step, issued: BTreeMap::new(), next_slot: 0 };
        self.issue(count, version).await
    }

    /// Issues `count` more groups of the current step, drawing their prompts from the stream. A result
    /// already waiting for the same group and prompt (a previous incarnation's) is reused, not redone.
    async fn issue(&mut self, count: usize, version: u64) -> anyhow::Result<()> {
        let versions = self.versions(version);
        for _ in 0..count {
            let slot = self.batch.next_slot;
            self.batch.next_slot += 1;
            let problem = self.stream.next_problem();
            let group = GroupId { step: self.batch.step, slot };
            let task = self.task(group, &problem, versions)?;
            let reusable = self.stash.get(&group).is_some_and(|d| d.message.rollouts.rollouts[0].prompt_token_ids == task.prompt_token_ids);
            if !reusable {
                self.prompts.send(&task).await.context("while issuing prompts")?;
            }
            self.batch.issued.insert(slot, Issued { task, issued_at: Instant::now(), done: false });
        }
        Ok(())
    }

    /// Issues again every group of the step whose result is overdue (lost with a Redis restart, or
    /// dead-lettered).
    async fn reissue_overdue(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        for issued in self.batch.issued.values_mut().filter(|i| !i.done && now - i.issued_at > self.reissue_after) {
            tracing::warn!(group = %issued.task.group, after_s = self.reissue_after.as_secs_f64(), "no result in time; issuing the group again");
            self.prompts.send(&issued.task).await.context("while re-issuing a prompt")?;
            issued.issued_at = now;
            self.ledger.reissued += 1;
        }
        Ok(())
    }

    /// Collects complete scored groups of the step until the batch is full; with dynamic sampling,
    /// replaces groups whose rewards are all equal while the draw budget lasts.
    async fn collect(&mut self, step: usize, version: u64, shutdown: &CancellationToken) -> anyhow::Result<Option<Collected>> {
        let (r, d) = (&self.config.rollout, &self.config.data);
        let (prompts_per_step, max_draws) = (d.prompts_per_step, d.prompts_per_step * r.max_draw_factor);
        let mut c = Collected { kept: vec![], dropped: 0, stale_dropped: 0, staleness_max: 0 };
        // Results of this step that arrived before it was issued.
        let early: Vec<GroupId> = self.stash.range(GroupId { step: step as u64, slot: 0 }..=GroupId { step: step as u64, slot: u32::MAX }).map(|(g, _)| *g).collect();
        let mut arrived: Vec<Delivery<ScoredGroup>> = early.into_iter().filter_map(|g| self.stash.remove(&g)).collect();
        loop {
            for delivery in std::mem::take(&mut arrived) {
                self.accept(delivery, version, &mut c).await?;
            }
            let outstanding = self.batch.issued.values().filter(|i| !i.done).count();
            if c.kept.len() >= prompts_per_step || outstanding == 0 {
                break;
            }
            // A dropped group is replaced while the draw budget lasts.
            let replacements = (prompts_per_step - c.kept.len()).saturating_sub(outstanding);
            let budget = max_draws.saturating_sub(self.batch.issued.len());
            if replacements > 0 && budget > 0 {
                self.issue(replacements.min(budget), version).await?;
                continue;
            }
            self.reissue_overdue().await?;
            self.reannounce().await?;
            arrived = tokio::select! {
                r = self.scored.recv(256, Duration::from_secs(1)) => r.context("while collecting scored groups")?,
                () = shutdown.cancelled() => return Ok(None),
            };
            // A run stopped mid-step (`rlvr ctl stop`, the dashboard) has no workers left to finish it.
            if arrived.is_empty() && self.control.state().await? == RunState::Stopped {
                tracing::info!(step, "the run was stopped during the step");
                return Ok(None);
            }
        }
        // Groups beyond a full batch (replacements that arrived late) are not trained on.
        c.kept.sort_by_key(|g| g.rollouts.group.slot);
        c.kept.truncate(prompts_per_step);
        Ok(Some(c))
    }

    /// Files one scored group: trains on it at most once, and only if it belongs to this step's batch.
    async fn accept(&mut self, delivery: Delivery<ScoredGroup>, version: u64, c: &mut Collected) -> anyhow::Result<()> {
        let group = delivery.message.rollouts.group;
        let step = self.batch.step;
        let (min_version, max_version) = self.versions(version);
        if group.step > step {
            // A previous incarnation's later step: kept in case that group is issued again.
            if self.stash.len() < MAX_STASH && !self.stash.contains_key(&group) {
                self.stash.insert(group, delivery);
            } else {
                self.ack(&delivery.id).await?;
            }
            return Ok(());
        }
        let Some(issued) = self.batch.issued.get_mut(&group.slot).filter(|_| group.step == step) else {
            // An earlier step's, or a slot this incarnation never issued: a duplicate of work done.
            self.ledger.duplicates += 1;
            return self.ack(&delivery.id).await;
        };
        if issued.done {
            self.ledger.duplicates += 1;
            return self.ack(&delivery.id).await;
        }
        let scored = &delivery.message;
        if let Some(reason) = mismatch(&issued.task, scored) {
            self.ledger.rejected += 1;
            self.scored.reject(&delivery.id, &reason).await?;
            return Ok(());
        }
        let samples = &scored.rollouts.rollouts;
        if samples.iter().any(|s| s.finish_reason == FinishReason::Abort) {
            // An actor gave up on it (its weights moved on mid-group): the same group again, so the
            // batch keeps its prompts.
            tracing::info!(group = %issued.task.group, "an aborted group; issuing it again");
            issued.task.min_version = min_version;
            issued.task.max_version = max_version;
            self.ledger.reissued += 1;
            return self.redo(group.slot, &delivery.id).await;
        }
        let served = matches!(self.weights, WeightSink::Served { .. });
        if let Some(reason) = other_weights(&issued.task, scored, &self.published, served) {
            // Not sampled with the weights this task allows, as this learner made them (a previous
            // incarnation's, a task an actor had queued across a swap): redo it with ours.
            tracing::info!(group = %issued.task.group, reason, "a group sampled with other weights; issuing it again");
            self.ledger.duplicates += 1;
            return self.redo(group.slot, &delivery.id).await;
        }
        issued.done = true;
        self.unacked.push(delivery.id.clone());
        let oldest = samples.iter().map(|s| s.weight_version).min().unwrap_or(version);
        let lag = version.saturating_sub(oldest);
        c.staleness_max = c.staleness_max.max(lag);
        if lag > self.config.runtime.max_staleness {
            c.stale_dropped += 1;
        } else if self.config.rollout.dynamic_sampling && scored.scores.iter().all(|s| s.reward == scored.scores[0].reward) {
            c.dropped += 1;
        } else {
            c.kept.push(delivery.message);
        }
        Ok(())
    }

    /// Acknowledges a result not trained on and issues its group (slot `slot` of the step) again.
    async fn redo(&mut self, slot: u32, result: &DeliveryId) -> anyhow::Result<()> {
        let issued = self.batch.issued.get_mut(&slot).context("re-issuing a group never issued")?;
        issued.issued_at = Instant::now();
        let task = issued.task.clone();
        self.ack(result).await?;
        self.prompts.send(&task).await.context("while re-issuing a group")
    }

    async fn ack(&mut self, id: &DeliveryId) -> anyhow::Result<()> {
        self.scored.ack(std::slice::from_ref(id)).await.context("while acknowledging a scored group")
    }

    /// The run's state between steps: waits while paused; `Some(draining)` to go on, `None` to stop.
    async fn obey_state(&self, shutdown: &CancellationToken) -> anyhow::Result<Option<bool>> {
        let mut announced = false;
        loop {
            match self.control.state().await? {
                RunState::Running => return Ok(Some(false)),
                RunState::Draining => return Ok(Some(true)),
                RunState::Stopped => return Ok(None),
                RunState::Paused => {
                    if !announced {
                        tracing::info!("run paused: no new prompts until it is resumed");
                        announced = true;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(None),
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
            }
        }
    }

    /// Writes the groups a step trained on to `trained_groups.jsonl`, each with its content's digest.
    fn log_trained(&mut self, step: usize, kept: &[ScoredGroup]) -> anyhow::Result<()> {
        let groups: Vec<String> = kept.iter().map(|g| g.rollouts.group.to_string()).collect();
        let digests: Vec<String> = kept.iter().map(ScoredGroup::digest).collect();
        serde_json::to_writer(&mut self.trained_log, &serde_json::json!({ "step": step, "groups": groups, "digests": digests }))?;
        self.trained_log.write_all(b"\n")?;
        Ok(())
    }
}

/// Why a group was not sampled with weights its task allows, as this learner published them
/// (`published`; `served`: actors over the network, which always name their weights' checksum).
fn other_weights(task: &PromptTask, scored: &ScoredGroup, published: &std::collections::HashMap<u64, String>, served: bool) -> Option<String> {
    let samples = &scored.rollouts.rollouts;
    let (oldest, newest) = samples.iter().fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.weight_version), hi.max(s.weight_version)));
    if oldest != newest {
        return Some(format!("its samples come from versions {oldest} to {newest}"));
    }
    if !(task.min_version..=task.max_version).contains(&newest) {
        return Some(format!("version {newest}, the task allows {}..={}", task.min_version, task.max_version));
    }
    match (&scored.rollouts.weights_checksum, published.get(&newest)) {
        (Some(theirs), Some(ours)) if theirs != ours => Some(format!("other weights than ours under version {newest}")),
        (Some(_), None) => Some(format!("version {newest}, which this learner has not published")),
        // The in-process actor knows its first weights by version alone; an actor over the network
        // always names them.
        (None, _) if served => Some("no weights checksum".into()),
        _ => None,
    }
}

/// Why a scored group cannot be what the learner issued under its id (another run's, a forged one).
fn mismatch(task: &PromptTask, scored: &ScoredGroup) -> Option<String> {
    let samples = &scored.rollouts.rollouts;
    if samples.len() != task.sampling.n {
        return Some(format!("group {} has {} samples, {} were asked for", task.group, samples.len(), task.sampling.n));
    }
    if samples.iter().any(|s| s.prompt_token_ids != task.prompt_token_ids) {
        return Some(format!("group {} answers another prompt than the one issued", task.group));
    }
    None
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for x in xs {
        sum += x;
        n += 1;
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Runs the loop until `runtime.steps` updates are trained, the run is stopped or drained, or
/// `shutdown` fires (then at the next safe point, with a checkpoint of the last completed step).
pub async fn drive<P, I, C>(
    start: DriverStart,
    prompts: P,
    scored: I,
    control: Arc<C>,
    weights: WeightSink,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary>
where
    P: Outbox<PromptTask>,
    I: Inbox<ScoredGroup>,
    C: Control,
{
    let DriverStart { config, options, start, mut learner, stream, held_out, prompter, eval_reward, mut step, mut version, mut eval_before, resumed, actor_weights, tokenizer_dir, telemetry } = start;
    telemetry.set_ready();
    let run_dir = config.runtime.run_dir.clone();
    let reissue_after = Duration::from_secs_f64(config.distributed.reissue_after_s);
    let trained_log = std::fs::OpenOptions::new().create(true).append(true).open(run_dir.join("trained_groups.jsonl"))?;
    let mut d = Driver {
        config: config.clone(),
        prompts,
        scored,
        control,
        weights,
        prompter: prompter.clone(),
        stream,
        batch: Batch { step: step as u64, issued: BTreeMap::new(), next_slot: 0 },
        stash: BTreeMap::new(),
        unacked: vec![],
        ledger: Ledger::default(),
        trained_log,
        reissue_after,
        announced: None,
        published: Default::default(),
    };
    let eval_params = EvalParams {
        samples: config.runtime.eval_samples,
        temperature: config.runtime.eval_temperature,
        top_p: 1.0,
        max_new_tokens: config.rollout.max_new_tokens,
        seeds: vec![config.runtime.seed],
    };

    // 1. The starting weights for the actors (an async checkpoint's actor weights first).
    let mut actor_behind = actor_weights.is_some();
    match actor_weights {
        Some((v, w)) => d.publish(v, w).await?,
        None => d.publish(version, learner.host_weights()).await?,
    }
    // 2. Held-out evaluation before training (once per run, not again on resume).
    if config.runtime.eval && !resumed {
        let t = Instant::now();
        let report = evaluate_weights(&learner, &config, &held_out, &prompter, &eval_reward, &eval_params).instrument(tracing::info_span!("eval")).await?;
        eprintln!("eval before: {} in {:.1}s", report.summary(), t.elapsed().as_secs_f64());
        telemetry.phase("eval", t.elapsed().as_secs_f64());
        telemetry.eval("before", report.pass_at_1_mean, &report.summary());
        eval_before = Some(report);
    }
    // 3. Results a previous incarnation collected and never saw checkpointed: reused where they fit.
    for delivery in d.scored.pending(usize::MAX).await.context("while reading the learner's pending groups")? {
        let g = delivery.message.rollouts.group;
        if g.step >= step as u64 && !d.stash.contains_key(&g) {
            d.stash.insert(g, delivery);
        } else {
            d.ack(&delivery.id).await?;
        }
    }
    if !d.stash.is_empty() {
        tracing::info!(groups = d.stash.len(), "found scored groups from before the restart; reusing those that match");
    }
    let prompts_per_step = config.data.prompts_per_step;
    // The cursor before the batch in flight was drawn: what a checkpoint must resume from.
    let mut batch_cursor = d.stream.cursor();
    let issue_version = if actor_behind { version.saturating_sub(1) } else { version };
    d.issue_batch(step as u64, prompts_per_step, issue_version).instrument(tracing::info_span!("issue", step)).await?;

    let metrics_path = run_dir.join("metrics.jsonl");
    let mut metrics_file = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path)?;
    let mut total_samples = 0usize;
    let mut last_checkpoint = None;
    let every = config.runtime.checkpoint_every;
    let checkpoint_due = |step: usize| (every > 0 && step.is_multiple_of(every)) || step == config.runtime.steps;
    let save = |learner: &Learner, step, version, data: DataCursor, eval_before: &Option<EvalReport>, actor: Option<&(u64, Vec<(String, HostTensor)>)>| {
        let state = TrainerState { step, weight_version: version, data, seed: config.runtime.seed, eval_before: eval_before.clone(), actor_weight_version: actor.map(|(v, _)| *v) };
        save_checkpoint(&run_dir, &config, learner, &state, actor.map(|(_, w)| w.as_slice()), &tokenizer_dir)
    };
    // A progress bar over the steps when stderr is a terminal (hidden otherwise).
    let progress = indicatif::ProgressBar::new(config.runtime.steps as u64).with_position(step as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} {msg} (eta {eta})").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while step < config.runtime.steps && !shutdown.is_cancelled() {
        // 0. The run's state: paused waits here; stopped ends the run; draining ends it after this step.
        let Some(draining) = d.obey_state(&shutdown).await? else { break };
        // 1. Collect the step's scored groups.
        let t_rollout = Instant::now();
        let Some(collected) = d.collect(step, version, &shutdown).instrument(tracing::info_span!("collect", step)).await? else { break };
        let rollout_s = t_rollout.elapsed().as_secs_f64();
        telemetry.phase("collect", rollout_s);
        // 2. Async: hand the actors the next batch now, sampled with the current weights while we train.
        let next_cursor = d.stream.cursor();
        let prefetch = config.runtime.mode == Mode::Async && step + 1 < config.runtime.steps && !draining;
        if prefetch {
            if std::mem::take(&mut actor_behind) {
                // Resumed with the actors one version behind: they have just sampled the batch that was
                // in flight with those weights; the uninterrupted run had published the current ones by now.
                d.publish(version, learner.host_weights()).await?;
            }
            d.issue_batch(step as u64 + 1, prompts_per_step, version).instrument(tracing::info_span!("issue", step = step + 1)).await?;
        }
        // 3. Train.
        let t_train = Instant::now();
        let samples: Vec<TrainSample> = collected
            .kept
            .iter()
            .flat_map(|g| {
                g.rollouts.rollouts.iter().zip(&g.scores).map(|(r, s)| TrainSample {
                    group: u64::from(g.rollouts.group.slot),
                    prompt: r.prompt_token_ids.clone(),
                    response: r.response_token_ids.clone(),
                    rollout_log_probs: r.log_probs.clone(),
                    reward: s.reward,
                })
            })
            .collect();
        let n_samples = samples.len();
        let tokens: usize = samples.iter().map(|s| s.prompt.len() + s.response.len()).sum();
        // Async: the weights the prefetched batch is sampled with, for a checkpoint after this step.
        let actor_weights = (prefetch && checkpoint_due(step + 1)).then(|| (version, learner.host_weights()));
        let train_stats = if samples.is_empty() {
            StepStats::default()
        } else {
            let (back, stats) = tokio::task::spawn_blocking(move || {
                let stats = learner.train_on(&samples);
                (learner, stats)
            })
            .instrument(tracing::info_span!("train", step))
            .await
            .context("a training task panicked")?;
            learner = back;
            stats?
        };
        let train_s = t_train.elapsed().as_secs_f64();
        telemetry.phase("train", train_s);
        // 4. Publish the new weights (checksummed).
        let t_sync = Instant::now();
        version += 1;
        step += 1;
        d.publish(version, learner.host_weights()).instrument(tracing::info_span!("publish", version)).await?;
        let sync_s = t_sync.elapsed().as_secs_f64();
        telemetry.phase("publish", sync_s);
        // 5. Record.
        total_samples += n_samples;
        let all: Vec<(&rlvr_common::rollout::Rollout, &rlvr_common::protocol::SampleScore)> =
            collected.kept.iter().flat_map(|g| g.rollouts.rollouts.iter().zip(&g.scores)).collect();
        let m = StepMetrics {
            step,
            weight_version: version,
            reward_mean: mean(all.iter().map(|(_, s)| f64::from(s.reward))),
            accuracy: mean(all.iter().map(|(_, s)| f64::from(u8::from(s.correct)))),
            response_len_mean: mean(all.iter().map(|(r, _)| r.response_token_ids.len() as f64)),
            groups_kept: collected.kept.len(),
            groups_dropped: collected.dropped,
            stale_dropped: collected.stale_dropped,
            staleness_max: collected.staleness_max,
            rollout_s,
            train_s,
            sync_s,
            tokens_per_s: tokens as f64 / train_s.max(1e-9),
            train: train_stats,
        };
        if options.verbose {
            if progress.is_hidden() {
                eprintln!("{}", m.line());
            } else {
                progress.println(m.line());
            }
        }
        progress.set_position(step as u64);
        progress.set_message(format!("reward {:.3}", m.reward_mean));
        serde_json::to_writer(&mut metrics_file, &m)?;
        metrics_file.write_all(b"\n")?;
        metrics_file.flush()?;
        telemetry.step(&m, &collected.kept);
        d.log_trained(step, &collected.kept)?;
        // 6. Checkpoint when due, asked for (`rlvr ctl checkpoint`) or draining; then the scored groups it
        // covers are acknowledged.
        batch_cursor = if config.runtime.mode == Mode::Sync { d.stream.cursor() } else { next_cursor };
        let asked = d.control.take_checkpoint_request().await?;
        if checkpoint_due(step) || asked || draining {
            let t = Instant::now();
            last_checkpoint = Some(tracing::info_span!("checkpoint", step).in_scope(|| save(&learner, step, version, batch_cursor, &eval_before, actor_weights.as_ref()))?);
            telemetry.phase("checkpoint", t.elapsed().as_secs_f64());
            let ids = std::mem::take(&mut d.unacked);
            d.scored.ack(&ids).await?;
        }
        if d.unacked.len() > MAX_UNACKED {
            // Without a checkpoint for this long, the groups stop being kept in Redis for a restart to
            // reuse (a restarted learner recomputes them instead): Redis's memory stays bounded.
            tracing::info!(groups = d.unacked.len(), "no checkpoint for a while: acknowledging the trained groups without one");
            let ids = std::mem::take(&mut d.unacked);
            d.scored.ack(&ids).await?;
        }
        if draining {
            tracing::info!(step, "drained: checkpoint written, stopping the run");
            d.control.set_state(RunState::Stopped).await?;
            break;
        }
        // 7. Sync mode: the next batch, sampled with the weights just published.
        if config.runtime.mode == Mode::Sync && step < config.runtime.steps && !shutdown.is_cancelled() {
            d.issue_batch(step as u64, prompts_per_step, version).instrument(tracing::info_span!("issue", step)).await?;
        }
    }
    progress.finish_and_clear();
    // 8. Save where we are (also when stopped early: the batch in flight is redone on resume).
    let stopped_early = step < config.runtime.steps;
    if last_checkpoint.as_ref().is_none_or(|p: &PathBuf| !p.ends_with(format!("step-{step}"))) || stopped_early {
        last_checkpoint = Some(save(&learner, step, version, batch_cursor, &eval_before, None)?);
        let ids = std::mem::take(&mut d.unacked);
        d.scored.ack(&ids).await?;
    }
    if stopped_early {
        eprintln!("stopped at step {step}; the checkpoint {} resumes it", last_checkpoint.as_ref().expect("saved above").display());
    }
    let final_checkpoint = last_checkpoint.expect("saved above");
    tracing::info!(duplicates = d.ledger.duplicates, reissued = d.ledger.reissued, rejected = d.ledger.rejected, "run accounting");
    // 9. Held-out evaluation after training, with the final weights.
    let mut eval_after = None;
    if config.runtime.eval && !stopped_early {
        let t = Instant::now();
        let report = evaluate_weights(&learner, &config, &held_out, &prompter, &eval_reward, &eval_params).instrument(tracing::info_span!("eval")).await?;
        eprintln!("eval after: {} in {:.1}s", report.summary(), t.elapsed().as_secs_f64());
        telemetry.phase("eval", t.elapsed().as_secs_f64());
        telemetry.eval("after", report.pass_at_1_mean, &report.summary());
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
        duplicates_ignored: d.ledger.duplicates,
        groups_reissued: d.ledger.reissued,
        groups_rejected: d.ledger.rejected,
    };
    std::fs::write(run_dir.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    if summary.steps == 0 && stopped_early {
        bail!("stopped before the first step");
    }
    Ok(summary)
}

/// pass@k on the held-out prompts with the learner's current weights.
async fn evaluate_weights(
    learner: &Learner,
    config: &RunConfig,
    held_out: &Arc<Vec<Problem>>,
    prompter: &Arc<Prompter>,
    reward: &Arc<dyn Reward>,
    params: &EvalParams,
) -> anyhow::Result<EvalReport> {
    use rlvr_actor::engine::{Engine, EngineConfig};
    use rlvr_common::model::{CausalLm, Cpu};
    let model = CausalLm::<Cpu>::from_weights(learner.model_config().clone(), learner.host_weights().into_iter().collect(), &Default::default())?;
    let mut engine = Engine::new(model, 0, EngineConfig { max_batch_rows: config.rollout.max_batch, ..Default::default() });
    let (h, p, r, params) = (held_out.clone(), prompter.clone(), reward.clone(), params.clone());
    tokio::task::spawn_blocking(move || crate::eval::evaluate(&mut engine, &h, &p, r.as_ref(), &params)).await.context("the evaluation panicked")?
}

#[cfg(test)]
mod tests {
    use rlvr_common::protocol::{RolloutGroup, SampleScore};
    use rlvr_common::rollout::Rollout;

    use super::*;

    fn task(versions: (u64, u64)) -> PromptTask {
        PromptTask {
            group: GroupId { step: 3, slot: 0 },
            prompt_id: "p".into(),
            prompt_token_ids: vec![1, 2],
            sampling: SamplingSpec { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, max_new_tokens: 4, stop_token_ids: vec![], seed: 0, n: 2 },
            min_version: versions.0,
            max_version: versions.1,
            reward: RewardSpec { data_source: String::new(), kind: "math".into(), ground_truth: "1".into() },
        }
    }

    fn scored(versions: [u64; 2], checksum: Option<&str>) -> ScoredGroup {
        let rollout = |i: usize| Rollout {
            id: format!("3/0/{i}"),
            prompt_id: "p".into(),
            group_id: "3/0".into(),
            sample_index: i as u32,
            weight_version: versions[i],
            prompt_token_ids: vec![1, 2],
            response_token_ids: vec![5],
            log_probs: vec![-0.5],
            temperature: 1.0,
            finish_reason: FinishReason::Stop,
            timings: Default::default(),
        };
        ScoredGroup {
            rollouts: RolloutGroup {
                group: GroupId { step: 3, slot: 0 },
                reward: task((0, 0)).reward,
                actor: "a".into(),
                rollouts: vec![rollout(0), rollout(1)],
                texts: vec!["5".into(), "5".into()],
                weights_checksum: checksum.map(str::to_string),
            },
            scores: vec![SampleScore { reward: 1.0, correct: true, outcome: "correct".into(), detail: String::new() }; 2],
            verifier: "v".into(),
        }
    }

    #[test]
    fn a_group_is_trained_on_only_if_sampled_with_weights_its_task_allows_as_published() {
        let published: std::collections::HashMap<u64, String> = [(2, "ours2".to_string()), (3, "ours3".to_string())].into();
        let other = |versions, checksum, served| other_weights(&task((2, 2)), &scored(versions, checksum), &published, served);
        assert_eq!(other([2, 2], Some("ours2"), true), None);
        // Sampled with the next version (a task queued across a swap), or a mix of versions.
        assert!(other([3, 3], Some("ours3"), true).unwrap().contains("allows 2..=2"));
        assert!(other([2, 3], Some("ours2"), true).unwrap().contains("from versions 2 to 3"));
        // The right number, other weights: a previous incarnation's, another run's.
        assert!(other([2, 2], Some("theirs"), true).unwrap().contains("other weights"));
        // No checksum: fine from the in-process actor, not from one over the network.
        assert_eq!(other([2, 2], None, false), None);
        assert!(other([2, 2], None, true).is_some());
        // A version this learner never published, though the task allows it.
        let allows_4 = other_weights(&task((2, 4)), &scored([4, 4], Some("x")), &published, true);
        assert!(allows_4.unwrap().contains("not published"));
    }

    #[test]
    fn digests_see_every_trained_field() {
        let base = scored([2, 2], Some("ours2"));
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(base.digest()));
        let changes: [fn(&mut ScoredGroup); 8] = [
            |g| g.rollouts.rollouts[0].weight_version = 7,
            |g| g.rollouts.rollouts[1].response_token_ids.push(9),
            |g| g.rollouts.rollouts[0].prompt_token_ids[0] = 3,
            |g| g.rollouts.rollouts[0].log_probs[0] = -0.25,
            |g| g.rollouts.rollouts[1].temperature = 0.7,
            |g| g.rollouts.rollouts[1].finish_reason = FinishReason::Length,
            |g| g.scores[1].reward = 0.5,
            |g| g.scores[0].correct = false,
        ];
        for change in changes {
            let mut g = base.clone();
            change(&mut g);
            assert!(seen.insert(g.digest()), "a change left the digest as it was");
        }
        // What is not trained on (which actor, which verifier, the decoded text) does not count.
        let mut g = base.clone();
        g.rollouts.actor = "b".into();
        g.verifier = "w".into();
        g.rollouts.texts[0] = "five".into();
        assert_eq!(g.digest(), base.digest());
    }
}
