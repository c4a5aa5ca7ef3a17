//! The actor loop: prompts from a [`PromptSource`] become groups of rollouts in a [`RolloutSink`].
//!
//! The loop is async (one task), the forward passes run on the blocking pool one engine step at a time.
//! Between steps it:
//! - tops the engine's queue up from the source (continuous batching keeps the batch full);
//! - watches the weight version: when a newer one is announced it stops admitting, lets the batch
//!   drain, verifies the new weights' checksum and swaps them in, so every rollout comes from one version;
//!   when it is more than `max_staleness` versions behind it aborts what is in flight instead of
//!   finishing rollouts the learner would drop;
//! - on shutdown (the [`CancellationToken`]) finishes or aborts the in-flight requests as configured.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use rlvr_common::model::ModelBackend;
use rlvr_common::rollout::Rollout;
use rlvr_common::weights::WeightSubscriber;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::{Completion, Engine, EngineError, Request, RequestParams};

/// One prompt to sample a group of `params.n` responses for.
#[derive(Debug, Clone)]
pub struct PromptItem {
    pub prompt_id: String,
    /// Unique over the run (the rollouts' ids derive from it).
    pub group_id: String,
    pub prompt: Vec<u32>,
    pub params: RequestParams,
}

/// Where prompts come from.
pub trait PromptSource: Send {
    /// Waits for the next prompt; `None` once the source is closed and empty.
    fn next(&mut self) -> impl Future<Output = Option<PromptItem>> + Send;
    /// A prompt if one is ready now.
    fn try_next(&mut self) -> Option<PromptItem>;
}

/// Where rollouts go.
pub trait RolloutSink: Send {
    fn send(&mut self, rollout: Rollout) -> impl Future<Output = Result<(), ActorError>> + Send;
}

/// What to do with in-flight requests on shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownMode {
    /// Finish the requests already taken from the source, then stop.
    #[default]
    Finish,
    /// Stop at once; in-flight samples are sent with finish reason `abort`.
    Abort,
}

/// Settings of the loop.
#[derive(Debug, Clone, Copy)]
pub struct ActorConfig {
    /// Versions the actor may lag the newest announced one before its in-flight work is abandoned.
    pub max_staleness: u64,
    pub shutdown: ShutdownMode,
    /// Requests kept queued in the engine beyond those running, so freed rows fill at once.
    pub max_waiting: usize,
}

impl Default for ActorConfig {
    fn default() -> Self {
        Self { max_staleness: 1, shutdown: ShutdownMode::Finish, max_waiting: 64 }
    }
}

/// Errors of the loop.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the rollout sink is closed")]
    SinkClosed,
    #[error("an engine step panicked: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What the loop did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActorReport {
    pub rollouts: usize,
    pub aborted: usize,
    /// Versions swapped in, in order.
    pub weight_versions: Vec<u64>,
}

/// A prompt source over a tokio channel.
#[derive(Debug)]
pub struct ChannelSource(pub mpsc::Receiver<PromptItem>);

impl PromptSource for ChannelSource {
    fn next(&mut self) -> impl Future<Output = Option<PromptItem>> + Send {
        self.0.recv()
    }
    fn try_next(&mut self) -> Option<PromptItem> {
        self.0.try_recv().ok()
    }
}

/// A rollout sink over a tokio channel.
#[derive(Debug, Clone)]
pub struct ChannelSink(pub mpsc::Sender<Rollout>);

impl RolloutSink for ChannelSink {
    async fn send(&mut self, rollout: Rollout) -> Result<(), ActorError> {
        self.0.send(rollout).await.map_err(|_| ActorError::SinkClosed)
    }
}

/// The prompt of a group in flight, to turn its completions into rollouts.
struct Group {
    prompt_id: String,
    prompt: Vec<u32>,
    temperature: f32,
    remaining: usize,
}

/// Runs the actor until the source is exhausted and everything is sent, or until `shutdown`.
pub async fn run_actor<B, S, K>(
    mut engine: Engine<B>,
    mut source: S,
    mut sink: K,
    weights: Arc<dyn WeightSubscriber>,
    config: ActorConfig,
    shutdown: CancellationToken,
) -> Result<ActorReport, ActorError>
where
    B: ModelBackend,
    Engine<B>: Send + 'static,
    S: PromptSource,
    K: RolloutSink,
{
    let mut groups: HashMap<String, Group> = HashMap::new();
    let mut report = ActorReport::default();
    let mut source_open = true;
    loop {
        // 1. Shutdown: abort now, or stop taking prompts and drain.
        if shutdown.is_cancelled() {
            source_open = false;
            if config.shutdown == ShutdownMode::Abort {
                let aborted = engine.abort_all();
                report.aborted += aborted.len();
                send_all(&mut sink, &mut groups, aborted, &mut report).await?;
                return Ok(report);
            }
        }
        // 2. Prompts: keep the engine's queue topped up.
        while source_open && engine.waiting() < config.max_waiting {
            let item = if engine.is_idle() {
                tokio::select! {
                    item = source.next() => item,
                    () = shutdown.cancelled() => break,
                }
            } else {
                match source.try_next() {
                    Some(item) => Some(item),
                    None => break,
                }
            };
            let Some(item) = item else {
                source_open = false;
                break;
            };
            groups.insert(
                item.group_id.clone(),
                Group {
                    prompt_id: item.prompt_id,
                    prompt: item.prompt.clone(),
                    temperature: item.params.sampling.temperature,
                    remaining: item.params.n,
                },
            );
            engine.add(Request { id: item.group_id, prompt: item.prompt, params: item.params })?;
        }
        if engine.is_idle() {
            if !source_open {
                return Ok(report);
            }
            continue;
        }
        // 3. Weights (checked after taking prompts, so a batch handed over right after a new version is
        // announced is sampled with it): drain the batch, then verify and swap; abandon the batch when too stale.
        if let Some(latest) = weights.latest_version()
            && latest > engine.weight_version()
        {
            engine.set_admitting(false);
            if latest - engine.weight_version() > config.max_staleness && engine.running() > 0 {
                // Too stale to be trained on: stop sampling these, hand them back as aborted.
                let aborted = engine.abort_all();
                report.aborted += aborted.len();
                send_all(&mut sink, &mut groups, aborted, &mut report).await?;
            }
            if engine.running() == 0 {
                if let Some(update) = weights.fetch_newer(engine.weight_version()).map_err(EngineError::from)? {
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
                }
                engine.set_admitting(true);
            }
        }
        // 4. One engine step on the blocking pool.
        let (back, done) = tokio::task::spawn_blocking(move || {
            let r = engine.step();
            (engine, r)
        })
        .await?;
        engine = back;
        send_all(&mut sink, &mut groups, done?, &mut report).await?;
    }
}

async fn send_all<K: RolloutSink>(
    sink: &mut K,
    groups: &mut HashMap<String, Group>,
    done: Vec<Completion>,
    report: &mut ActorReport,
) -> Result<(), ActorError> {
    for c in done {
        let Some(group) = groups.get_mut(&c.request_id) else { continue };
        let request_id = c.request_id.clone();
        let rollout = c.into_rollout(group.prompt_id.clone(), group.prompt.clone(), group.temperature);
        group.remaining -= 1;
        if group.remaining == 0 {
            groups.remove(&request_id);
        }
        sink.send(rollout).await?;
        report.rollouts += 1;
    }
    Ok(())
}
