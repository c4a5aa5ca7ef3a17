//! The distributed mode: `rlvr learner` (the driver over Redis Streams, the weight server, the run's
//! published info), `rlvr ctl` (the run's state and status) and `rlvr up` (everything on one machine as
//! child processes).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rlvr_common::protocol::{ActorSettings, MemberInfo, QueueSettings, Role, RunInfo, RunState};
use rlvr_common::transport::member::{hostname, spawn_membership};
use rlvr_common::transport::redis::{Queue, RedisConfig, RedisTransport};
use rlvr_common::transport::{Control, unix_time};
use rlvr_common::weights::tcp::WeightServer;
use tokio_util::sync::CancellationToken;

use crate::config::RunConfig;
use crate::driver::{WeightSink, drive};
use crate::reward::{Reward, Scorer};
use crate::run::{RunSummary, TrainOptions, prepare, reward_settings};

/// The Redis settings of a run's config.
pub fn redis_config(url: &str, config: &RunConfig) -> RedisConfig {
    let d = &config.distributed;
    RedisConfig {
        visibility_timeout: Duration::from_secs_f64(d.visibility_timeout_s),
        max_deliveries: d.max_deliveries,
        ..RedisConfig::new(url, d.run.clone())
    }
}

/// The newest checkpoint in `run_dir` (`checkpoints/step-N` with the largest N), if any.
pub fn latest_checkpoint(run_dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(run_dir.join("checkpoints")).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: usize = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join("trainer_state.json").exists().then_some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

/// `rlvr learner`: the driver over Redis. Publishes the run (config, model config, tokenizer, the
/// settings workers take from it), serves the weights, trims the streams, heartbeats; at the end of
/// the run sets its state to `stopped`, which stops the workers.
pub async fn run_learner(config: RunConfig, options: TrainOptions, redis_url: &str, shutdown: CancellationToken) -> anyhow::Result<RunSummary> {
    let transport = RedisTransport::connect(redis_config(redis_url, &config)).await.context("while connecting to Redis")?;
    let control = Arc::new(transport.control());
    let model_dir = options.resume.clone().unwrap_or_else(|| config.model.path.clone());
    let tokenizer = rlvr_common::tokenizer::Tokenizer::from_dir(&model_dir).with_context(|| format!("loading the tokenizer of {}", model_dir.display()))?;
    let eval_reward: Arc<dyn Reward> = Arc::new(Scorer::new(tokenizer, &config));
    let start = prepare(config.clone(), options, eval_reward)?;
    // 1. Publish the run: what an actor or a verifier needs to join it.
    let read = |name: &str| std::fs::read_to_string(start.tokenizer_dir.join(name));
    let info = RunInfo {
        config_toml: toml::to_string_pretty(&config)?,
        model_config_json: start.learner.model_config().to_json("float32").to_string(),
        tokenizer_json: read("tokenizer.json").with_context(|| format!("reading tokenizer.json in {}", start.tokenizer_dir.display()))?,
        tokenizer_config_json: read("tokenizer_config.json").ok(),
        actor: ActorSettings { max_batch: config.rollout.max_batch, max_staleness: config.runtime.max_staleness, group_size: config.rollout.group_size },
        reward: reward_settings(&config),
        queues: QueueSettings { visibility_timeout_s: config.distributed.visibility_timeout_s, max_deliveries: config.distributed.max_deliveries },
        seed: config.runtime.seed,
    };
    control.publish_info(&info).await?;
    control.set_state(RunState::Running).await?;
    // 2. The weight server.
    let server = WeightServer::bind(&config.distributed.weights_bind, shutdown.child_token())
        .await
        .with_context(|| format!("binding the weight server to {}", config.distributed.weights_bind))?;
    let host = config.distributed.weights_host.clone().unwrap_or_else(hostname);
    tracing::info!(address = %server.local_addr(), advertised = %host, run = %config.distributed.run, "learner up");
    // 3. Heartbeat and stream trimming beside the loop.
    let background = shutdown.child_token();
    let host_name = hostname();
    let member = spawn_membership(
        control.clone(),
        move || MemberInfo { id: "learner".into(), role: Role::Learner, host: host_name.clone(), weight_version: None, groups_per_s: 0.0, groups_done: 0, at: unix_time() },
        Duration::from_secs(2),
        background.clone(),
    );
    let trimmer = {
        let (t, stop) = (transport.clone(), background.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
                for q in Queue::ALL {
                    if let Err(e) = t.trim(q).await {
                        tracing::warn!(queue = q.name(), error = %e, "trimming failed");
                    }
                }
            }
        })
    };
    // 4. The loop.
    let prompts = transport.outbox(Queue::Prompts);
    let scored = transport.inbox(Queue::Scored, "learner", false).await?;
    let result = drive(start, prompts, scored, control.clone(), WeightSink::Served { server, host }, shutdown.clone()).await;
    // A finished run stops its workers; an interrupted learner leaves the run as it is, to be resumed.
    if result.is_ok() && !shutdown.is_cancelled() {
        control.set_state(RunState::Stopped).await?;
    }
    background.cancel();
    let _ = member.await;
    let _ = trimmer.await;
    result
}

/// `rlvr ctl`: sets the run's state, asks for a checkpoint, or prints the run's status.
pub async fn ctl(command: &str, redis_url: &str, run: &str) -> anyhow::Result<String> {
    let transport = RedisTransport::connect(RedisConfig { reconnect_for: Duration::from_secs(10), ..RedisConfig::new(redis_url, run) })
        .await
        .context("while connecting to Redis")?;
    let control = transport.control();
    let state = |s: RunState| s;
    match command {
        "pause" => control.set_state(state(RunState::Paused)).await?,
        "resume" => control.set_state(state(RunState::Running)).await?,
        "drain" => control.set_state(state(RunState::Draining)).await?,
        "stop" => control.set_state(state(RunState::Stopped)).await?,
        "checkpoint" => control.request_checkpoint().await?,
        "status" => return status(&transport).await,
        other => anyhow::bail!("unknown command `{other}`: use pause, resume, drain, stop, checkpoint or status"),
    }
    Ok(format!("run {run}: {command} sent (state is now {})", control.state().await?.as_str()))
}

/// The run's state, members, queues and weights, as text.
pub async fn status(transport: &RedisTransport) -> anyhow::Result<String> {
    let control = transport.control();
    let mut out = format!("run {}: {}\n", transport.run(), control.state().await?.as_str());
    if let Some(w) = control.weights().await? {
        out += &format!("weights: version {} ({} bytes) at {}\n", w.version, w.bytes, w.address);
    }
    out += "members:\n";
    for m in control.members().await? {
        let version = m.weight_version.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        out += &format!(
            "  {:<40} {:<8} host {:<20} weights {:<5} groups {:>6} ({:.2}/s) seen {:.1}s ago\n",
            m.id,
            format!("{:?}", m.role).to_lowercase(),
            m.host,
            version,
            m.groups_done,
            m.groups_per_s,
            unix_time() - m.at
        );
    }
    out += "queues:\n";
    for q in Queue::ALL {
        let s = transport.queue_stats(q).await?;
        let lag = s.lag.map(|l| l.to_string()).unwrap_or_else(|| "?".into());
        out += &format!("  {:<9} length {:>7} pending {:>6} lag {:>6}\n", q.name(), s.length, s.pending, lag);
    }
    out += &format!("dead letters: {}\n", transport.dead_letters().await?);
    Ok(out)
}
