//! The actor loop: prompt tasks from a [`Stage`] become rollout groups written back through it, each
//! group written and its task acknowledged in one step. The same loop runs over the in-process queues
//! (`rlvr train`) and over Redis Streams (`rlvr actor`).
//!
//! The loop is async (one task); the forward passes run on the blocking pool one engine step at a time.
//! Between steps it:
//! - tops the engine's queue up from the stage (continuous batching keeps the batch full), admitting a
//!   task only when the engine's weight version is one the task may be sampled with
//!   (`min_version..=max_version`); a task that needs newer weights waits for them, a task whose
//!   versions are all older than the announced weights is outdated and dropped (the learner re-issues
//!   what it still needs);
//! - watches the weights: when other weights are announced it stops admitting, lets the batch drain,
//!   verifies the new weights' checksum and swaps them in, so every rollout comes from one version;
//!   queued tasks that may not be sampled with the new version go back through admission;
//!   when it is more than `max_staleness` versions behind it aborts what is in flight (the groups go
//!   out with finish reason `abort`, which the learner counts and replaces);
//! - tells the stage it still holds its tasks, so that another actor does not take them over;
//! - on shutdown finishes what it holds, or (`ShutdownMode::Abort`) hands it back at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rlvr_common::model::ModelBackend;
use rlvr_common::protocol::{PromptTask, RolloutGroup};
use rlvr_common::rollout::{FinishReason, Rollout};
use rlvr_common::transport::{Delivery, DeliveryId, Stage, TransportError};
use rlvr_common::weights::WeightSubscriber;
use tokio_util::sync::CancellationToken;

use crate::engine::{Completion, Engine, EngineError, Request, RequestParams};
use crate::sampling::SamplingParams;

/// What to do with the tasks in hand on shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownMode {
    /// Finish the tasks already taken, then stop.
    #[default]
    Finish,
    /// Stop at once and hand the tasks back unacknowledged (another actor redoes them).
    Abort,
}

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct ActorConfig {
    /// Written into every rollout group.
    pub actor_id: String,
    /// Versions the actor may lag the newest announced one before its in-flight work is abandoned.
    pub max_staleness: u64,
    pub shutdown: ShutdownMode,
    /// Tasks kept queued in the engine beyond those running, so freed rows fill at once.
    pub max_waiting: usize,
    /// How often the tasks in hand are kept from being reclaimed.
    pub keep_every: Duration,
    /// Counts completed groups as they go out (for heartbeats).
    pub groups_done: Arc<AtomicU64>,
    /// Start a group only when the engine is idle, so no two groups share a batch and a group's tokens
    /// do not depend on which others an actor happened to take with it.
    pub one_group_at_a_time: bool,
}

impl Default for ActorConfig {
    fn default() -> Self {
        Self {
            actor_id: "actor-0".into(),
            max_staleness: 1,
            shutdown: ShutdownMode::Finish,
            max_waiting: 64,
            keep_every: Duration::from_secs(10),
            groups_done: Arc::default(),
            one_group_at_a_time: false,
        }
    }
}

/// Errors of the loop.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the actor's queues failed: {0}")]
    Transport(#[from] TransportError),
    #[error("an engine step panicked: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What the loop did, for logs, heartbeats and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActorReport {
    /// Groups completed (aborted ones included).
    pub groups: usize,
    pub rollouts: usize,
    /// Samples cut short because the weights moved on past `max_staleness`.
    pub aborted: usize,
    /// Tasks dropped because every version they allow is older than the announced weights.
    pub outdated: usize,
    /// Versions swapped in, in order.
    pub weight_versions: Vec<u64>,
}

/// Turns response tokens into the text the verifier reads.
pub type Decode = Arc<dyn Fn(&[u32]) -> String + Send + Sync>;

/// A task in hand.
struct Held {
    delivery: DeliveryId,
    task: PromptTask,
    rollouts: Vec<Option<Rollout>>,
    remaining: usize,
}

/// The engine's request parameters for a task.
pub fn request_params(task: &PromptTask) -> RequestParams {
    let s = &task.sampling;
    RequestParams {
        sampling: SamplingParams { temperature: s.temperature, top_p: s.top_p, top_k: s.top_k, min_p: s.min_p },
        max_new_tokens: s.max_new_tokens,
        stop_token_ids: s.stop_token_ids.clone(),
        stop_strings: vec![],
        seed: s.seed,
        n: s.n,
    }
}

/// Runs the actor until its stage is closed and everything taken is done, or until `shutdown`.
pub async fn run_actor<B, S>(
    mut engine: Engine<B>,
    mut stage: S,
    weights: Arc<dyn WeightSubscriber>,
    decode: Decode,
    config: ActorConfig,
    shutdown: CancellationToken,
) -> Result<ActorReport, ActorError>
where
    B: ModelBackend,
    Engine<B>: Send + 'static,
    S: Stage<PromptTask, RolloutGroup>,
{
    // Keyed by delivery id, which is also the engine's request id (a group re-issued twice is two tasks).
    let mut held: HashMap<DeliveryId, Held> = HashMap::new();
    // Tasks waiting for weights they may be sampled with.
    let mut deferred: Vec<Delivery<PromptTask>> = vec![];
    let mut report = ActorReport::default();
    let mut open = true;
    let mut last_keep = Instant::now();
    loop {
        // 1. Shutdown: hand everything back now, or stop taking tasks and finish.
        if shutdown.is_cancelled() && open {
            open = false;
            if config.shutdown == ShutdownMode::Abort {
                engine.abort_all();
                let ids: Vec<DeliveryId> = held.keys().cloned().chain(deferred.iter().map(|d| d.id.clone())).collect();
                tracing::info!(tasks = ids.len(), "actor stopping: handing its tasks back");
                stage.release(&ids).await?;
                return Ok(report);
            }
            // Deferred tasks have not started: hand them back.
            let ids: Vec<DeliveryId> = deferred.drain(..).map(|d| d.id).collect();
            stage.release(&ids).await?;
        }
        // 2. Intake: keep the engine's queue topped up. Tasks waiting for weights do not stop it: they
        // may wait for a version that needs other tasks done first (a restarted learner's).
        while open
            && deferred.len() < config.max_waiting
            && engine.waiting() < config.max_waiting
            && (!config.one_group_at_a_time || (engine.is_idle() && held.is_empty()))
        {
            let wait = if engine.is_idle() && deferred.is_empty() { Duration::from_millis(500) } else { Duration::ZERO };
            let max = if config.one_group_at_a_time { 1 } else { config.max_waiting - engine.waiting() };
            let got = tokio::select! {
                r = stage.recv(max, wait) => r,
                () = shutdown.cancelled() => break,
            };
            let deliveries = match got {
                Ok(d) => d,
                Err(TransportError::Closed) => {
                    open = false;
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            if deliveries.is_empty() {
                break;
            }
            for d in deliveries {
                admit_or_defer(&mut engine, &mut stage, &mut held, &mut deferred, d, weights.as_ref(), &mut report).await?;
            }
        }
        // 3. Weights: drain the batch, then verify and swap; abandon the batch when too stale.
        if let Some((latest, checksum)) = weights.latest()
            && !engine.has_weights(latest, &checksum)
        {
            engine.set_admitting(false);
            if latest.saturating_sub(engine.weight_version()) > config.max_staleness && engine.running() > 0 {
                let aborted = engine.abort_all();
                report.aborted += aborted.len();
                let checksum = engine.weight_checksum().map(str::to_string);
                collect(&mut stage, &mut held, aborted, &decode, &config, checksum.as_deref(), &mut report).await?;
                // Their groups can never complete now: send them as aborted.
                flush_aborted(&mut stage, &mut held, &decode, &config, checksum.as_deref(), &mut report).await?;
            }
            if engine.running() == 0 {
                if let Some(update) = weights.fetch().map_err(EngineError::from)?
                    && !engine.has_weights(update.version, &update.checksum)
                {
                    let version = update.version;
                    let (back, swapped) = tokio::task::spawn_blocking(move || {
                        let r = engine.set_weights(&update);
                        (engine, r)
                    })
                    .await?;
                    engine = back;
                    swapped?;
                    report.weight_versions.push(version);
                    tracing::info!(version, "actor swapped in new weights");
                    // Queued tasks these weights must not sample go back through admission.
                    let outside = |id: &str| held.get(&DeliveryId(id.to_string())).is_some_and(|h| !(h.task.min_version..=h.task.max_version).contains(&version));
                    for id in engine.withdraw_waiting(outside) {
                        let h = held.remove(&DeliveryId(id)).expect("withdrawn tasks are held");
                        deferred.push(Delivery { id: h.delivery, message: h.task, attempts: 0 });
                    }
                }
                engine.set_admitting(true);
            }
        }
        // 4. Deferred tasks whose versions the engine now has.
        if !deferred.is_empty() && engine.running() == 0 {
            for d in std::mem::take(&mut deferred) {
                if config.one_group_at_a_time && !held.is_empty() {
                    deferred.push(d);
                } else {
                    admit_or_defer(&mut engine, &mut stage, &mut held, &mut deferred, d, weights.as_ref(), &mut report).await?;
                }
            }
        }
        // 5. Keep the tasks in hand from being taken over.
        if last_keep.elapsed() >= config.keep_every {
            let ids: Vec<DeliveryId> = held.keys().cloned().chain(deferred.iter().map(|d| d.id.clone())).collect();
            stage.keep(&ids).await?;
            last_keep = Instant::now();
        }
        if engine.is_idle() {
            if !open && deferred.is_empty() {
                return Ok(report);
            }
            if !deferred.is_empty() {
                // Waiting for the weights these tasks need.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            continue;
        }
        // 6. One engine step on the blocking pool.
        let (back, done) = tokio::task::spawn_blocking(move || {
            let r = engine.step();
            (engine, r)
        })
        .await?;
        engine = back;
        let checksum = engine.weight_checksum().map(str::to_string);
        collect(&mut stage, &mut held, done?, &decode, &config, checksum.as_deref(), &mut report).await?;
    }
}

/// Starts a task if the engine's weights are among those it allows; holds it back if it needs newer
/// ones; drops it if every version it allows is behind the announced weights.
async fn admit_or_defer<B: ModelBackend, S: Stage<PromptTask, RolloutGroup>>(
    engine: &mut Engine<B>,
    stage: &mut S,
    held: &mut HashMap<DeliveryId, Held>,
    deferred: &mut Vec<Delivery<PromptTask>>,
    d: Delivery<PromptTask>,
    weights: &dyn WeightSubscriber,
    report: &mut ActorReport,
) -> Result<(), ActorError> {
    let t = &d.message;
    // The engine's version counts only if its weights are the announced ones when the numbers agree.
    let have = engine.weight_version();
    let latest = weights.latest();
    let announced = latest.as_ref().map_or(have, |(v, _)| *v);
    let current = latest.as_ref().is_none_or(|(v, c)| engine.has_weights(*v, c));
    let allowed = t.min_version..=t.max_version;
    if announced > t.max_version {
        tracing::info!(group = %t.group, versions = ?(t.min_version, t.max_version), announced, "dropping an outdated task");
        report.outdated += 1;
        stage.ack(&[d.id]).await?;
    } else if allowed.contains(&have) && (current || !allowed.contains(&announced)) {
        let request = Request { id: d.id.0.clone(), prompt: t.prompt_token_ids.clone(), params: request_params(t) };
        engine.add(request)?;
        held.insert(d.id.clone(), Held { delivery: d.id, remaining: t.sampling.n, rollouts: vec![None; t.sampling.n], task: d.message });
    } else {
        deferred.push(d);
    }
    Ok(())
}

/// Files completions under their tasks; writes every group that is complete.
async fn collect<S: Stage<PromptTask, RolloutGroup>>(
    stage: &mut S,
    held: &mut HashMap<DeliveryId, Held>,
    done: Vec<Completion>,
    decode: &Decode,
    config: &ActorConfig,
    checksum: Option<&str>,
    report: &mut ActorReport,
) -> Result<(), ActorError> {
    for c in done {
        let id = DeliveryId(c.request_id.clone());
        let Some(h) = held.get_mut(&id) else { continue };
        let index = c.sample_index;
        let mut rollout = c.into_rollout(h.task.prompt_id.clone(), h.task.prompt_token_ids.clone(), h.task.sampling.temperature);
        rollout.group_id = h.task.group.to_string();
        rollout.id = format!("{}/{index}", rollout.group_id);
        if let Some(slot) = h.rollouts.get_mut(index)
            && slot.is_none()
        {
            *slot = Some(rollout);
            h.remaining -= 1;
        }
        if h.remaining == 0 {
            let h = held.remove(&id).expect("present above");
            send_group(stage, h, decode, config, checksum, report).await?;
        }
    }
    Ok(())
}

/// After an abort: every held group that lost samples goes out with its missing samples aborted.
async fn flush_aborted<S: Stage<PromptTask, RolloutGroup>>(
    stage: &mut S,
    held: &mut HashMap<DeliveryId, Held>,
    decode: &Decode,
    config: &ActorConfig,
    checksum: Option<&str>,
    report: &mut ActorReport,
) -> Result<(), ActorError> {
    for (_, mut h) in held.drain() {
        for (i, slot) in h.rollouts.iter_mut().enumerate() {
            if slot.is_none() {
                *slot = Some(Rollout {
                    id: format!("{}/{i}", h.task.group),
                    prompt_id: h.task.prompt_id.clone(),
                    group_id: h.task.group.to_string(),
                    sample_index: i as u32,
                    weight_version: 0,
                    prompt_token_ids: h.task.prompt_token_ids.clone(),
                    response_token_ids: vec![],
                    log_probs: vec![],
                    temperature: h.task.sampling.temperature,
                    finish_reason: FinishReason::Abort,
                    timings: Default::default(),
                });
            }
        }
        send_group(stage, h, decode, config, checksum, report).await?;
    }
    Ok(())
}

async fn send_group<S: Stage<PromptTask, RolloutGroup>>(
    stage: &mut S,
    h: Held,
    decode: &Decode,
    config: &ActorConfig,
    checksum: Option<&str>,
    report: &mut ActorReport,
) -> Result<(), ActorError> {
    let rollouts: Vec<Rollout> = h.rollouts.into_iter().map(|r| r.expect("complete group")).collect();
    let texts = rollouts.iter().map(|r| decode(&r.response_token_ids)).collect();
    report.rollouts += rollouts.len();
    report.groups += 1;
    let group = RolloutGroup {
        group: h.task.group,
        reward: h.task.reward,
        actor: config.actor_id.clone(),
        rollouts,
        texts,
        weights_checksum: checksum.map(str::to_string),
    };
    stage.complete(&h.delivery, &group).await?;
    config.groups_done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
