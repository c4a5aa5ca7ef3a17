//! The verifier worker: rollout groups from a [`Stage`] are scored and written back as scored groups,
//! each written and its input acknowledged in one step. The same loop runs in process (`rlvr train`)
//! and over Redis Streams (`rlvr-verifier serve`). It stops between batches, so a batch it took is
//! always finished.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use rayon::prelude::*;
use rlvr_common::protocol::{RewardSettings, RolloutGroup, SampleScore, ScoredGroup};
use rlvr_common::transport::{Stage, TransportError};
use tokio_util::sync::CancellationToken;

use crate::check::{self, CheckRequest, GroundTruth, TaskKind};
use crate::shaping::{Overlong, ShapingConfig};
use crate::verdict::{ErrorKind, Verdict};

/// Scores a group: one score per sample, in order. Model output can make it return error scores,
/// never panic (a panic is caught and scored as an error).
pub trait GroupScorer: Send + Sync {
    fn score(&self, group: &RolloutGroup) -> Vec<SampleScore>;
}

/// Verdict details kept in a score (the rollout viewer shows them).
const MAX_DETAIL_BYTES: usize = 2048;

/// A verdict as score data.
pub fn sample_score(v: &Verdict) -> SampleScore {
    let mut detail = if v.details.is_null() { String::new() } else { v.details.to_string() };
    if detail.len() > MAX_DETAIL_BYTES {
        let mut end = MAX_DETAIL_BYTES;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
    }
    SampleScore {
        reward: if v.reward.is_finite() { v.reward } else { 0.0 },
        correct: v.is_correct(),
        outcome: v.outcome.as_str().to_string(),
        detail,
    }
}

/// Scores with the reward the group names (`math`, `truth`, `code`) and the run's shaping (DAPO's
/// overlong penalty), through the same [`check::score`] as `rlvr-verifier check`.
#[derive(Debug, Clone)]
pub struct RewardScorer {
    shaping: Option<ShapingConfig>,
}

impl RewardScorer {
    pub fn new(settings: &RewardSettings) -> Self {
        let shaping = (settings.overlong_penalty != 0.0).then(|| ShapingConfig {
            overlong: Some(Overlong { max_len: settings.max_new_tokens, buffer: settings.overlong_buffer, weight: settings.overlong_penalty }),
            ..Default::default()
        });
        Self { shaping }
    }

    fn request(&self, group: &RolloutGroup, i: usize) -> Result<CheckRequest, Verdict> {
        let spec = &group.reward;
        let kind = match spec.kind.as_str() {
            "math" => TaskKind::Math,
            "truth" => TaskKind::Truth,
            "code" => TaskKind::Code,
            other => return Err(Verdict::error(ErrorKind::BadRequest, format!("unknown reward kind `{other}`"))),
        };
        // A code ground truth is a JSON object of tests; the others are answers.
        let ground_truth = match kind {
            TaskKind::Code => match serde_json::from_str::<serde_json::Value>(&spec.ground_truth) {
                Ok(serde_json::Value::Object(m)) => GroundTruth::Structured(m),
                _ => GroundTruth::One(spec.ground_truth.clone()),
            },
            _ => GroundTruth::One(spec.ground_truth.clone()),
        };
        Ok(CheckRequest {
            kind,
            response: group.texts[i].clone(),
            ground_truth,
            settings: None,
            shaping: self.shaping.clone(),
            response_tokens: Some(group.rollouts[i].response_token_ids.len()),
            question: None,
        })
    }
}

impl GroupScorer for RewardScorer {
    fn score(&self, group: &RolloutGroup) -> Vec<SampleScore> {
        (0..group.rollouts.len())
            .map(|i| match self.request(group, i) {
                Ok(req) => sample_score(&check::score(&req)),
                Err(v) => sample_score(&v),
            })
            .collect()
    }
}

/// Settings of the worker loop.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Written into every scored group.
    pub verifier_id: String,
    /// Groups taken and scored together (in parallel).
    pub batch: usize,
    /// While a batch is being scored, its groups are kept from being taken over this often (a third
    /// of the run's visibility timeout).
    pub keep_every: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self { verifier_id: "verifier-0".into(), batch: 16, keep_every: Duration::from_secs(10) }
    }
}

/// What the loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    pub groups: usize,
    pub samples: usize,
    /// Samples whose scoring panicked (scored as errors).
    pub panics: usize,
}

/// Scores one group, catching a panic of the scorer (a bug) as error scores for the whole group.
pub fn score_group(scorer: &dyn GroupScorer, group: &RolloutGroup) -> (Vec<SampleScore>, bool) {
    match catch_unwind(AssertUnwindSafe(|| scorer.score(group))) {
        Ok(scores) if scores.len() == group.rollouts.len() => (scores, false),
        Ok(scores) => {
            let v = Verdict::error(ErrorKind::BadRequest, format!("the scorer returned {} scores for {} samples (a bug)", scores.len(), group.rollouts.len()));
            (vec![sample_score(&v); group.rollouts.len()], true)
        }
        Err(_) => {
            tracing::error!(group = %group.group, "the scorer panicked (a bug); the group is scored as errors");
            let v = Verdict::error(ErrorKind::BadRequest, "internal error while scoring (a bug; please report)");
            (vec![sample_score(&v); group.rollouts.len()], true)
        }
    }
}

/// Runs until the stage closes or `shutdown` (between batches).
pub async fn run_worker<S: Stage<RolloutGroup, ScoredGroup>>(
    mut stage: S,
    scorer: Arc<dyn GroupScorer>,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<WorkerReport, TransportError> {
    let mut report = WorkerReport::default();
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => break,
            r = stage.recv(config.batch.max(1), Duration::from_millis(500)) => match r {
                Ok(b) => b,
                Err(TransportError::Closed) => break,
                Err(e) => return Err(e),
            },
        };
        if batch.is_empty() {
            continue;
        }
        let ids: Vec<_> = batch.iter().map(|d| d.id.clone()).collect();
        let s = scorer.clone();
        let mut scoring = tokio::task::spawn_blocking(move || {
            batch.into_par_iter().map(|d| {
                let (scores, panicked) = score_group(s.as_ref(), &d.message);
                (d, scores, panicked)
            }).collect::<Vec<_>>()
        });
        // A slow batch (code runs to their deadlines) stays this worker's while it is scored.
        let scored = loop {
            tokio::select! {
                r = &mut scoring => break r.map_err(|e| TransportError::Redis { what: "scoring".into(), message: e.to_string() })?,
                () = tokio::time::sleep(config.keep_every) => stage.keep(&ids).await?,
            }
        };
        for (d, scores, panicked) in scored {
            report.groups += 1;
            report.samples += scores.len();
            report.panics += usize::from(panicked) * scores.len();
            let out = ScoredGroup { rollouts: d.message, scores, verifier: config.verifier_id.clone() };
            stage.complete(&d.id, &out).await?;
        }
    }
    Ok(report)
}

/// `rlvr-verifier serve`: joins a distributed run and scores its rollout groups until the run stops
/// or `shutdown` fires (finishing the batch in hand). With `metrics_addr`, serves `/metrics`,
/// `/healthz` and `/readyz` there (ready once it has joined the run and while Redis answers).
pub async fn serve(
    redis: rlvr_common::transport::redis::RedisConfig,
    verifier_id: String,
    metrics_addr: Option<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<WorkerReport> {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use anyhow::Context;
    use rlvr_common::observe::{Endpoints, prometheus_client::registry::Registry, ready_when_joined, serve_endpoints};
    use rlvr_common::protocol::{MemberInfo, Role};
    use rlvr_common::transport::member::{hostname, spawn_membership, wait_for_run};
    use rlvr_common::transport::redis::{Queue, RedisControl, RedisTransport};

    // 1. The endpoints first: alive at once, ready once the run is joined.
    let mut registry = Registry::default();
    let metrics = crate::metrics::VerifierMetrics::register(&mut registry);
    let joined: Arc<OnceLock<Arc<RedisControl>>> = Arc::default();
    let ready = ready_when_joined(joined.clone(), "waiting for the run to start");
    serve_endpoints(metrics_addr.as_deref(), &Endpoints::new(registry, ready), shutdown.clone())
        .await
        .with_context(|| format!("binding the metrics endpoint {}", metrics_addr.as_deref().unwrap_or_default()))?;
    // 2. The run.
    let transport = RedisTransport::connect(redis).await.context("while connecting to Redis")?;
    let control = Arc::new(transport.control());
    let Some(info) = wait_for_run(control.as_ref(), &shutdown).await? else { return Ok(WorkerReport::default()) };
    let _ = joined.set(control.clone());
    let transport = transport.with_queue_settings(&info.queues);
    let done = Arc::new(AtomicU64::new(0));
    let (id, host, counter, started) = (verifier_id.clone(), hostname(), done.clone(), Instant::now());
    let member = spawn_membership(
        control.clone(),
        move || {
            let n = counter.load(Ordering::Relaxed);
            MemberInfo {
                id: id.clone(),
                role: Role::Verifier,
                host: host.clone(),
                weight_version: None,
                groups_per_s: n as f64 / started.elapsed().as_secs_f64().max(1e-9),
                groups_done: n,
                at: rlvr_common::transport::unix_time(),
            }
        },
        Duration::from_secs(2),
        shutdown.clone(),
    );
    let stage = transport.stage(Queue::Rollouts, Queue::Scored, &verifier_id).await?;
    let scorer: Arc<dyn GroupScorer> = Arc::new(crate::metrics::Metered { inner: Arc::new(RewardScorer::new(&info.reward)), metrics, done });
    tracing::info!(id = %verifier_id, run = %transport.run(), "verifier up");
    let keep_every = Duration::from_secs_f64(info.queues.visibility_timeout_s / 3.0);
    let report = run_worker(stage, scorer, WorkerConfig { verifier_id, keep_every, ..Default::default() }, shutdown.clone()).await;
    shutdown.cancel();
    let _ = member.await;
    Ok(report?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlvr_common::protocol::{GroupId, RewardSpec};
    use rlvr_common::rollout::{FinishReason, Rollout};
    use rlvr_common::transport::memory::{MemoryStage, queue};
    use rlvr_common::transport::{Inbox, Outbox};

    pub(crate) fn group(slot: u32, texts: &[&str], kind: &str, truth: &str) -> RolloutGroup {
        let rollouts = texts
            .iter()
            .enumerate()
            .map(|(i, _)| Rollout {
                id: format!("s0-g{slot}/{i}"),
                prompt_id: "p".into(),
                group_id: format!("s0-g{slot}"),
                sample_index: i as u32,
                weight_version: 0,
                prompt_token_ids: vec![1],
                response_token_ids: vec![5; 10],
                log_probs: vec![-1.0; 10],
                temperature: 1.0,
                finish_reason: FinishReason::Stop,
                timings: Default::default(),
            })
            .collect();
        RolloutGroup {
            group: GroupId { step: 0, slot },
            reward: RewardSpec { data_source: "t".into(), kind: kind.into(), ground_truth: truth.into() },
            actor: "a".into(),
            rollouts,
            texts: texts.iter().map(|t| t.to_string()).collect(),
            weights_checksum: None,
        }
    }

    #[tokio::test]
    async fn scores_every_group_with_its_reward_then_stops() {
        let (in_tx, in_rx) = queue::<RolloutGroup>(8);
        let (out_tx, mut out_rx) = queue::<ScoredGroup>(8);
        let settings = RewardSettings { overlong_penalty: 0.0, overlong_buffer: 0, max_new_tokens: 16 };
        let task = tokio::spawn(run_worker(MemoryStage { input: in_rx, output: out_tx }, Arc::new(RewardScorer::new(&settings)), WorkerConfig::default(), CancellationToken::new()));
        in_tx.send(&group(0, &["\\boxed{7}", "\\boxed{8}"], "math", "7")).await.unwrap();
        in_tx.send(&group(1, &["x"], "poetry", "7")).await.unwrap();
        drop(in_tx);
        let report = task.await.unwrap().unwrap();
        assert_eq!((report.groups, report.samples, report.panics), (2, 3, 0));
        let got = out_rx.recv(8, Duration::from_secs(1)).await.unwrap();
        let by_slot = |s: u32| got.iter().find(|d| d.message.rollouts.group.slot == s).unwrap().message.clone();
        let g0 = by_slot(0);
        assert_eq!(g0.scores.iter().map(|s| s.correct).collect::<Vec<_>>(), [true, false]);
        assert_eq!(by_slot(1).scores[0].outcome, "error", "an unknown reward kind is an error verdict");
    }

    struct Panics;
    impl GroupScorer for Panics {
        fn score(&self, _group: &RolloutGroup) -> Vec<SampleScore> {
            panic!("scorer bug")
        }
    }

    #[test]
    fn a_panicking_scorer_gives_error_scores() {
        let (scores, panicked) = score_group(&Panics, &group(0, &["a", "b"], "math", "1"));
        assert!(panicked);
        assert_eq!(scores.len(), 2);
        assert!(scores.iter().all(|s| s.outcome == "error" && s.reward == 0.0));
    }

    #[test]
    fn overlong_shaping_comes_from_the_run_settings() {
        let settings = RewardSettings { overlong_penalty: 1.0, overlong_buffer: 4, max_new_tokens: 10 };
        let scores = RewardScorer::new(&settings).score(&group(0, &["\\boxed{7}"], "math", "7"));
        assert!(scores[0].correct);
        assert!(scores[0].reward < 1.0, "10 tokens of a 10-token budget with a 4-token buffer are penalised: {:?}", scores[0]);
    }
}
