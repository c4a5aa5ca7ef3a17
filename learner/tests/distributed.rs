//! The distributed runtime against a real `redis-server`: the learner, actors and verifiers over Redis
//! Streams (here as tasks of one test process; `scripts/fault-injection.sh` runs them as processes and
//! kills them). In sync mode a run with 1 or 3 actors and 2 verifiers trains on exactly the groups the
//! embedded run trains on, each once, and ends with the same weights.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rlvr_common::checkpoint::read_weights;
use rlvr_common::protocol::{RolloutGroup, SampleScore};
use rlvr_common::transport::redis::{Queue, RedisConfig, RedisTransport};
use rlvr_common::transport::redis_server::{Fsync, RedisServer};
use rlvr_learner::config::RunConfig;
use rlvr_learner::reward::{Reward, Score};
use rlvr_learner::run::{RunSummary, TrainOptions, train_with};
use rlvr_verifier::worker::{GroupScorer, WorkerConfig, run_worker};
use tokio_util::sync::CancellationToken;

mod support;

/// Reward: the fraction of even token ids (a random model's outputs vary in it, so the run learns).
struct EvenTokens;

fn even(response: &[u32]) -> f32 {
    response.iter().filter(|t| *t % 2 == 0).count() as f32 / response.len().max(1) as f32
}

impl GroupScorer for EvenTokens {
    fn score(&self, group: &RolloutGroup) -> Vec<SampleScore> {
        group
            .rollouts
            .iter()
            .map(|r| {
                let reward = even(&r.response_token_ids);
                SampleScore { reward, correct: reward > 0.5, outcome: "scored".into(), detail: String::new() }
            })
            .collect()
    }
}

impl Reward for EvenTokens {
    fn score(&self, _problem: &rlvr_learner::data::Problem, response: &[u32]) -> anyhow::Result<Score> {
        let reward = even(response);
        Ok(Score { reward, correct: reward > 0.5, no_answer: false })
    }
}

/// A tiny random model with SmolLM2's tokenizer, and a 3-step sync run of it.
fn tiny_run(tmp: &Path) -> RunConfig {
    let model_dir = support::tiny_model(tmp, 9);
    let mut config = RunConfig::default();
    config.model.path = model_dir;
    config.rollout.group_size = 4;
    config.rollout.max_new_tokens = 6;
    config.data.prompts_per_step = 3;
    config.optimizer.lr = 1e-3;
    config.runtime.eval = false;
    config.runtime.steps = 3;
    config.distributed.weights_bind = "127.0.0.1:0".into();
    config.distributed.weights_host = Some("127.0.0.1".into());
    config
}

fn embedded(config: &RunConfig) -> RunSummary {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = TrainOptions { resume: None, overwrite: false, verbose: false, ..Default::default() };
    rt.block_on(train_with(config.clone(), options, CancellationToken::new(), Arc::new(EvenTokens), Arc::new(EvenTokens))).unwrap()
}

/// The learner, `actors` actors and `verifiers` verifiers as tasks over one Redis.
fn distributed(config: &RunConfig, redis_dir: &Path, actors: usize, verifiers: usize) -> RunSummary {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        let server = RedisServer::start(redis_dir, Fsync::EverySec).expect("redis-server must be installed (scripts/test.sh installs it)");
        let url = server.url();
        let run = config.distributed.run.clone();
        let shutdown = CancellationToken::new();
        let mut workers = vec![];
        for i in 0..actors {
            let config = rlvr_actor::service::ActorProcessConfig {
                redis: RedisConfig::new(url.clone(), run.clone()),
                actor_id: format!("actor-{i}"),
                abort_on_shutdown: false,
                metrics_addr: None,
            };
            let token = shutdown.child_token();
            workers.push(tokio::spawn(async move { rlvr_actor::service::run(config, token).await.map(|_| ()) }));
        }
        for i in 0..verifiers {
            let (url, run, token) = (url.clone(), run.clone(), shutdown.child_token());
            workers.push(tokio::spawn(async move {
                let t = RedisTransport::connect(RedisConfig::new(url, run)).await?;
                let stage = t.stage(Queue::Rollouts, Queue::Scored, &format!("verifier-{i}")).await?;
                run_worker(stage, Arc::new(EvenTokens), WorkerConfig { verifier_id: format!("verifier-{i}"), batch: 4, ..Default::default() }, token).await?;
                anyhow::Ok(())
            }));
        }
        let options = TrainOptions { resume: None, overwrite: false, verbose: false, ..Default::default() };
        let summary = rlvr_learner::distributed::run_learner(config.clone(), options, &url, shutdown.clone()).await.unwrap();
        // The finished run is `stopped`: the actors see it and leave; the verifiers are told.
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.cancel();
        for w in workers {
            let r: anyhow::Result<()> = tokio::time::timeout(Duration::from_secs(30), w).await.expect("a worker did not stop").unwrap();
            r.unwrap();
        }
        summary
    })
}

fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every (step, group) trained on, from `trained_groups.jsonl`; panics on a group trained twice.
fn trained_groups(run_dir: &Path) -> BTreeSet<(u64, String)> {
    let mut seen = BTreeSet::new();
    for line in std::fs::read_to_string(run_dir.join("trained_groups.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for g in v["groups"].as_array().unwrap() {
            assert!(seen.insert((v["step"].as_u64().unwrap(), g.as_str().unwrap().to_string())), "{g} trained twice");
        }
    }
    seen
}

fn max_weight_difference(a: &Path, b: &Path) -> f32 {
    let (wa, wb): (HashMap<_, _>, HashMap<_, _>) = (read_weights(a).unwrap(), read_weights(b).unwrap());
    assert_eq!(wa.len(), wb.len());
    wa.iter().map(|(k, ta)| ta.data.iter().zip(&wb[k].data).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)).fold(0.0, f32::max)
}

#[test]
fn sync_runs_with_one_or_three_actors_match_the_embedded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_run(tmp.path());
    config.runtime.run_dir = tmp.path().join("embedded");
    let base = embedded(&config);
    assert_eq!(base.steps, 3);
    let want = trained_groups(&config.runtime.run_dir);
    assert_eq!(want.len(), 9, "3 steps x 3 groups");
    let base_metrics = metrics(&config.runtime.run_dir);
    for actors in [1, 3] {
        let mut c = config.clone();
        c.runtime.run_dir = tmp.path().join(format!("distributed-{actors}"));
        c.distributed.run = format!("t{actors}");
        let summary = distributed(&c, &tmp.path().join(format!("redis-{actors}")), actors, 2);
        assert_eq!(summary.steps, 3);
        assert_eq!(trained_groups(&c.runtime.run_dir), want, "{actors} actors trained on other groups");
        let m = metrics(&c.runtime.run_dir);
        for (x, y) in base_metrics.iter().zip(&m) {
            for key in ["reward_mean", "response_len_mean", "groups_kept"] {
                assert_eq!(x[key], y[key], "{key} at step {} with {actors} actors", x["step"]);
            }
        }
        let diff = max_weight_difference(&config.runtime.run_dir.join("checkpoints/step-3"), &c.runtime.run_dir.join("checkpoints/step-3"));
        assert_eq!(diff, 0.0, "{actors} actors: the final weights differ from the embedded run's by up to {diff}");
    }
    // The run did learn something (equal weights of a run that moved nothing would prove nothing).
    let moved = max_weight_difference(&config.model.path, &config.runtime.run_dir.join("checkpoints/step-3"));
    assert!(moved > 0.0);
}

/// `rlvr ctl` on a live run: `pause` holds the learner between steps, `resume` lets it go on,
/// `checkpoint` writes one at the next step, `drain` finishes the step, checkpoints and stops the run
/// (and with it the workers).
#[test]
fn pause_resume_checkpoint_and_drain_steer_a_live_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_run(tmp.path());
    config.runtime.steps = 1000;
    config.runtime.run_dir = tmp.path().join("steered");
    config.distributed.run = "steered".into();
    let run_dir = config.runtime.run_dir.clone();
    let lines = |dir: &Path| std::fs::read_to_string(dir.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        let server = RedisServer::start(&tmp.path().join("redis"), Fsync::EverySec).expect("redis-server must be installed (scripts/test.sh installs it)");
        let url = server.url();
        let shutdown = CancellationToken::new();
        let actor = rlvr_actor::service::ActorProcessConfig { redis: RedisConfig::new(url.clone(), "steered"), actor_id: "actor-0".into(), abort_on_shutdown: false, metrics_addr: None };
        let actor = tokio::spawn(rlvr_actor::service::run(actor, shutdown.child_token()));
        let verifier = {
            let (url, token) = (url.clone(), shutdown.child_token());
            tokio::spawn(async move {
                let t = RedisTransport::connect(RedisConfig::new(url, "steered")).await?;
                let stage = t.stage(Queue::Rollouts, Queue::Scored, "verifier-0").await?;
                run_worker(stage, Arc::new(EvenTokens), WorkerConfig::default(), token).await?;
                anyhow::Ok(())
            })
        };
        let learner = {
            let (config, url, token) = (config.clone(), url.clone(), shutdown.clone());
            tokio::spawn(async move { rlvr_learner::distributed::run_learner(config, TrainOptions { resume: None, overwrite: false, verbose: false, ..Default::default() }, &url, token).await })
        };
        let wait_for = |what: &'static str, f: Box<dyn Fn() -> bool + Send>| async move {
            let start = std::time::Instant::now();
            while !f() {
                assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let dir = run_dir.clone();
        wait_for("the first step", Box::new(move || lines(&dir) >= 1)).await;
        let ctl = |cmd: &'static str| {
            let url = url.clone();
            async move { rlvr_learner::distributed::ctl(cmd, &url, "steered").await.unwrap() }
        };
        // Pause: at most the step in hand finishes, then nothing.
        ctl("pause").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let paused_at = lines(&run_dir);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(lines(&run_dir), paused_at, "the learner trained while paused");
        let status = ctl("status").await;
        assert!(status.contains("paused") && status.contains("actor-0") && status.contains("learner"), "{status}");
        // Resume, ask for a checkpoint, then drain.
        ctl("resume").await;
        let dir = run_dir.clone();
        wait_for("a step after resuming", Box::new(move || lines(&dir) > paused_at + 1)).await;
        ctl("checkpoint").await;
        let dir = run_dir.clone();
        wait_for("the requested checkpoint", Box::new(move || std::fs::read_dir(dir.join("checkpoints")).map(|d| d.count() > 0).unwrap_or(false))).await;
        ctl("drain").await;
        let summary = tokio::time::timeout(Duration::from_secs(60), learner).await.expect("drain did not stop the learner").unwrap().unwrap();
        assert!(summary.steps < 1000);
        assert!(summary.final_checkpoint.ends_with(format!("step-{}", summary.steps)), "{:?}", summary.final_checkpoint);
        assert_eq!(lines(&run_dir), summary.steps);
        // The stopped run stops its workers.
        tokio::time::timeout(Duration::from_secs(30), actor).await.expect("the actor did not leave the stopped run").unwrap().unwrap();
        shutdown.cancel();
        verifier.await.unwrap().unwrap();
        assert!(ctl("status").await.starts_with("run steered: stopped"));
    });
}

/// Async mode across the queues: the actors sample step k+1 while the learner trains on step k; every
/// step trains on a full batch of distinct groups, sampled at most one version behind.
#[test]
fn an_async_run_across_the_queues_trains_every_step_on_a_full_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_run(tmp.path());
    config.runtime.mode = rlvr_learner::config::Mode::Async;
    config.runtime.steps = 4;
    config.runtime.run_dir = tmp.path().join("async");
    config.distributed.run = "async".into();
    let summary = distributed(&config, &tmp.path().join("redis"), 2, 1);
    assert_eq!(summary.steps, 4);
    let groups = trained_groups(&config.runtime.run_dir);
    assert_eq!(groups.len(), 4 * 3, "4 steps x 3 groups, each once");
    for m in metrics(&config.runtime.run_dir) {
        assert_eq!(m["groups_kept"], 3, "{m}");
        assert!(m["staleness_max"].as_u64().unwrap() <= 1, "{m}");
    }
}
