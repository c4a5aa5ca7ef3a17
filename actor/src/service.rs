//! `rlvr actor`: one actor process of a distributed run. It needs only the Redis URL and the run's
//! name: the model's config and tokenizer come from the run the learner published, the weights from
//! the learner's weight server (verified against the announced checksum before the first sample).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use rlvr_common::model::{CausalLm, Cpu, ModelConfig};
use rlvr_common::protocol::{MemberInfo, Role};
use rlvr_common::tokenizer::Tokenizer;
use rlvr_common::transport::member::{hostname, spawn_membership, wait_for_run};
use rlvr_common::observe::prometheus_client::registry::Registry;
use rlvr_common::observe::{Endpoints, ready_when_joined, serve_endpoints};
use rlvr_common::transport::redis::{Queue, RedisConfig, RedisControl, RedisTransport};
use rlvr_common::transport::unix_time;
use rlvr_common::weights::InProcessWeights;
use rlvr_common::weights::tcp::{FetchDeadlines, SyncStats, follow};
use tokio_util::sync::CancellationToken;

use crate::actor_loop::{ActorConfig, ActorReport, ShutdownMode, run_actor};
use crate::engine::{Engine, EngineConfig};

/// Settings of an actor process.
#[derive(Debug, Clone)]
pub struct ActorProcessConfig {
    pub redis: RedisConfig,
    /// Unique among the run's members (default `actor-{host}-{pid}`).
    pub actor_id: String,
    /// On shutdown, hand the tasks in hand back at once instead of finishing them.
    pub abort_on_shutdown: bool,
    /// Serve `/metrics`, `/healthz` and `/readyz` here.
    pub metrics_addr: Option<String>,
}

/// Joins the run and samples until the run stops or `shutdown` fires.
pub async fn run(config: ActorProcessConfig, shutdown: CancellationToken) -> anyhow::Result<ActorReport> {
    // 0. The endpoints first: alive at once, ready once the model is built and while Redis answers.
    let sync_stats: Arc<Mutex<SyncStats>> = Arc::default();
    let groups_done = Arc::new(AtomicU64::new(0));
    let loaded: Arc<OnceLock<Arc<RedisControl>>> = Arc::default();
    let mut registry = Registry::default();
    let refresh = crate::metrics::register(&mut registry, sync_stats.clone(), groups_done.clone());
    let ready = ready_when_joined(loaded.clone(), "the model is not loaded yet");
    serve_endpoints(config.metrics_addr.as_deref(), &Endpoints::new(registry, ready).with_refresh(refresh), shutdown.clone())
        .await
        .with_context(|| format!("binding the metrics endpoint {}", config.metrics_addr.as_deref().unwrap_or_default()))?;
    let transport = RedisTransport::connect(config.redis.clone()).await.context("while connecting to Redis")?;
    let control = Arc::new(transport.control());
    // 1. The run: model config and tokenizer.
    let Some(info) = wait_for_run(control.as_ref(), &shutdown).await? else { return Ok(ActorReport::default()) };
    let model_config = ModelConfig::from_json(serde_json::from_str(&info.model_config_json).context("the run's model config is not JSON")?)
        .context("while reading the run's model config")?;
    let tokenizer = Tokenizer::from_json(&info.tokenizer_json, info.tokenizer_config_json.as_deref()).context("while loading the run's tokenizer")?;
    // 2. Weights: follow the announcements; the first version builds the model.
    let weights = InProcessWeights::new();
    let follower = follow(control.clone(), weights.clone(), Duration::from_millis(200), FetchDeadlines::default(), sync_stats.clone(), shutdown.child_token());
    let t = Instant::now();
    let first = loop {
        if let Some(u) = weights.current() {
            break u;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(ActorReport::default()),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    };
    tracing::info!(version = first.version, seconds = t.elapsed().as_secs_f64(), "first weights fetched and verified");
    let tensors = first.tensors.iter().cloned().collect();
    let model = CausalLm::<Cpu>::from_weights(model_config, tensors, &Default::default()).context("while building the model from the learner's weights")?;
    let engine = Engine::new(model, first.version, EngineConfig { max_batch_rows: info.actor.max_batch, ..Default::default() }).with_checksum(first.checksum.clone());
    let _ = loaded.set(control.clone());
    // 3. Membership: a heartbeat with the weights it holds and its throughput.
    let (id, host, done, stats) = (config.actor_id.clone(), hostname(), groups_done.clone(), sync_stats.clone());
    let started = Instant::now();
    let member = spawn_membership(
        control.clone(),
        move || {
            let n = done.load(Ordering::Relaxed);
            MemberInfo {
                id: id.clone(),
                role: Role::Actor,
                host: host.clone(),
                weight_version: stats.lock().ok().and_then(|s| s.last_version),
                groups_per_s: n as f64 / started.elapsed().as_secs_f64().max(1e-9),
                groups_done: n,
                at: unix_time(),
            }
        },
        Duration::from_secs(2),
        shutdown.clone(),
    );
    // 4. Sample: tasks in, groups out; one batch's worth queued beyond the running rows.
    let transport = transport.with_queue_settings(&info.queues);
    let stage = transport.stage(Queue::Prompts, Queue::Rollouts, &config.actor_id).await?;
    let decoder = tokenizer.clone();
    let decode = Arc::new(move |ids: &[u32]| decoder.decode(ids, true).unwrap_or_default());
    let actor_config = ActorConfig {
        actor_id: config.actor_id.clone(),
        max_staleness: info.actor.max_staleness,
        shutdown: if config.abort_on_shutdown { ShutdownMode::Abort } else { ShutdownMode::Finish },
        max_waiting: (info.actor.max_batch / info.actor.group_size.max(1)).max(1),
        one_group_at_a_time: info.actor.batch_invariant,
        keep_every: Duration::from_secs_f64(info.queues.visibility_timeout_s / 3.0),
        groups_done,
    };
    let report = run_actor(engine, stage, Arc::new(weights), decode, actor_config, shutdown.clone()).await;
    shutdown.cancel();
    let _ = follower.await;
    let _ = member.await;
    let report = report?;
    tracing::info!(groups = report.groups, rollouts = report.rollouts, outdated = report.outdated, "actor stopped");
    Ok(report)
}
