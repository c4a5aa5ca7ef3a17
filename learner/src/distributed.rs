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
    let fresh = options.resume.is_none();
    let start = prepare(config.clone(), options, eval_reward)?;
    if fresh {
        // A run that starts at step 0 owns its name: whatever an earlier run of that name left in
        // Redis (tasks, results, dead letters) goes.
        transport.delete_run().await?;
    }
    // 1. Publish the run: what an actor or a verifier needs to join it.
    let read = |name: &str| std::fs::read_to_string(start.tokenizer_dir.join(name));
    let info = RunInfo {
        config_toml: toml::to_string_pretty(&config)?,
        model_config_json: start.learner.model_config().to_json("float32").to_string(),
        tokenizer_json: read("tokenizer.json").with_context(|| format!("reading tokenizer.json in {}", start.tokenizer_dir.display()))?,
        tokenizer_config_json: read("tokenizer_config.json").ok(),
        actor: ActorSettings { max_batch: config.rollout.max_batch, max_staleness: config.runtime.max_staleness, group_size: config.rollout.group_size, batch_invariant: config.rollout.batch_invariant },
        reward: reward_settings(&config),
        queues: QueueSettings { visibility_timeout_s: config.distributed.visibility_timeout_s, max_deliveries: config.distributed.max_deliveries },
        seed: config.runtime.seed,
    };
    control.publish_info(&info).await?;
    control.set_state(RunState::Running).await?;
    // The dashboard and /metrics, /healthz, /readyz.
    let web = shutdown.child_token();
    if let Some(addr) = &start.options.dashboard {
        let view = Arc::new(crate::telemetry::RedisView(transport.clone()));
        crate::dashboard::serve(addr, start.telemetry.clone(), view, start.options.dashboard_token.clone(), web.clone()).await?;
    }
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
    // Every 10 s: trim the streams, and publish the run again (a Redis that lost its data would
    // otherwise keep new workers from joining).
    let trimmer = {
        let (t, stop, info) = (transport.clone(), background.clone(), info.clone());
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
                if let Err(e) = t.control().publish_info(&info).await {
                    tracing::warn!(error = %e, "publishing the run failed");
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
    web.cancel();
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
    match command {
        "pause" => control.set_state(RunState::Paused).await?,
        "resume" => control.set_state(RunState::Running).await?,
        "drain" => control.set_state(RunState::Draining).await?,
        "stop" => control.set_state(RunState::Stopped).await?,
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

/// What `rlvr up` starts.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The resolved run config (written to the run directory for the learner to read).
    pub config: RunConfig,
    pub actors: usize,
    pub verifiers: usize,
    /// Use this Redis instead of starting one.
    pub redis: Option<String>,
    /// Extra arguments for `rlvr learner` (`--resume DIR`, `--fresh`, `--quiet`).
    pub learner_args: Vec<String>,
}

/// One child process of `rlvr up`.
struct ChildProcess {
    name: String,
    args: Vec<String>,
    program: PathBuf,
    log: PathBuf,
    child: std::process::Child,
    restarts: u32,
}

impl ChildProcess {
    fn spawn(name: &str, program: &Path, args: Vec<String>, logs: &Path) -> anyhow::Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let child = spawn_logged(program, &args, &log)?;
        Ok(Self { name: name.into(), args, program: program.to_path_buf(), log, child, restarts: 0 })
    }

    fn signal(&self, signal: &str) {
        let _ = std::process::Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
    }
}

fn spawn_logged(program: &Path, args: &[String], log: &Path) -> anyhow::Result<std::process::Child> {
    spawn_with_log(program, args, log, false)
}

/// Starts `program`, its output appended to `log`; with `echo`, its stderr is also copied to ours.
fn spawn_with_log(program: &Path, args: &[String], log: &Path, echo: bool) -> anyhow::Result<std::process::Child> {
    use std::io::{BufRead, Write};
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
    let err = if echo { std::process::Stdio::piped() } else { out.try_clone()?.into() };
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err)
        // Its own process group: a Ctrl-C on the terminal reaches `rlvr up`, which stops the
        // children in order (the learner first, Redis last).
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    if let Some(stderr) = child.stderr.take() {
        let mut file = out;
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let _ = writeln!(file, "{line}");
            }
        });
    }
    Ok(child)
}

/// `rlvr up`: Redis (unless one is given), the learner, actors and verifiers as child processes on this
/// machine, each logging to `RUN_DIR/logs/NAME.log`. A worker that crashes is restarted; the run ends
/// when the learner exits. Ctrl-C (or SIGTERM) stops the learner at its next safe point (it writes a
/// checkpoint), then the workers, then Redis; a second one kills them all.
pub async fn up(options: UpOptions) -> anyhow::Result<std::process::ExitStatus> {
    use rlvr_common::transport::redis_server::{Fsync, RedisServer};
    let config = &options.config;
    let run_dir = config.runtime.run_dir.clone();
    let logs = run_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let exe = std::env::current_exe().context("locating the rlvr binary")?;
    let verifier_exe = exe.with_file_name("rlvr-verifier");
    anyhow::ensure!(
        verifier_exe.exists(),
        "{} not found beside {}: build it too (cargo build --release --workspace)",
        verifier_exe.display(),
        exe.display()
    );
    // 1. Redis, with its data (AOF) in the run directory.
    let mut server = None;
    let url = match &options.redis {
        Some(url) => url.clone(),
        None => {
            let s = RedisServer::start(&run_dir.join("redis"), Fsync::EverySec).context("starting redis-server")?;
            let url = s.url();
            eprintln!("redis:      {url} (data in {}, log {})", run_dir.join("redis").display(), run_dir.join("redis/redis.log").display());
            server = Some(s);
            url
        }
    };
    // 2. The learner, with the resolved config.
    let config_path = run_dir.join("up.toml");
    std::fs::write(&config_path, toml::to_string_pretty(config)?)?;
    let run = config.distributed.run.clone();
    let mut learner_args = vec!["learner".into(), config_path.display().to_string(), "--redis".into(), url.clone()];
    learner_args.extend(options.learner_args.iter().cloned());
    let log = logs.join("learner.log");
    let child = spawn_with_log(&exe, &learner_args, &log, true)?;
    let mut learner = ChildProcess { name: "learner".into(), program: exe.clone(), args: learner_args, log, child, restarts: 0 };
    eprintln!("learner:    {} (and here)", learner.log.display());
    // 3. The workers.
    let mut workers = vec![];
    for i in 0..options.actors {
        let name = format!("actor-{i}");
        let args = vec!["actor".into(), "--redis".into(), url.clone(), "--run".into(), run.clone(), "--id".into(), name.clone()];
        workers.push(ChildProcess::spawn(&name, &exe, args, &logs)?);
    }
    for i in 0..options.verifiers {
        let name = format!("verifier-{i}");
        let args = vec!["serve".into(), "--redis".into(), url.clone(), "--run".into(), run.clone(), "--id".into(), name.clone()];
        workers.push(ChildProcess::spawn(&name, &verifier_exe, args, &logs)?);
    }
    for w in &workers {
        eprintln!("{:<11} {}", format!("{}:", w.name), w.log.display());
    }
    eprintln!("`rlvr ctl status --redis {url} --run {run}` shows the run; Ctrl-C stops it (checkpointing first)");
    // 4. Supervise until the learner exits.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut signals = 0;
    let status = loop {
        if let Some(status) = learner.child.try_wait()? {
            break status;
        }
        for w in workers.iter_mut() {
            // A clean exit is a worker leaving a stopped run; a crash is restarted.
            if let Some(status) = w.child.try_wait()?
                && signals == 0
                && !status.success()
            {
                w.restarts += 1;
                eprintln!("{} exited ({status}); restarting it (restart {}), see {}", w.name, w.restarts, w.log.display());
                tokio::time::sleep(Duration::from_millis(500 * u64::from(w.restarts.min(10)))).await;
                w.child = spawn_logged(&w.program, &w.args, &w.log)?;
            }
        }
        let signalled = tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => false,
            _ = tokio::signal::ctrl_c() => true,
            _ = term.recv() => true,
        };
        if signalled {
            signals += 1;
            if signals == 1 {
                eprintln!("stopping: the learner checkpoints at its next safe point (again to kill everything)");
                learner.signal("TERM");
            } else {
                eprintln!("killing every process");
                learner.signal("KILL");
                for w in &workers {
                    w.signal("KILL");
                }
                break learner.child.wait()?;
            }
        }
    };
    // 5. The workers leave on their own once the run is stopped; the rest get SIGTERM.
    for w in &workers {
        w.signal("TERM");
    }
    for w in workers.iter_mut() {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while w.child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                eprintln!("{} did not stop in 30 s; killing it", w.name);
                w.signal("KILL");
                let _ = w.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if let Some(mut s) = server {
        s.stop();
    }
    Ok(status)
}
