//! What the learner tells operators about a run: Prometheus metrics (step, weights, reward, losses,
//! phase durations, queues, members, run state), live events for the dashboard (each step under
//! verl's metric names, the run's status, new rollout groups) and the last rollout groups with their
//! text, rewards and verdicts. The driver reports into it; the dashboard and `/metrics` read it.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rlvr_actor::actor_loop::Decode;
use rlvr_common::observe::prometheus_client::metrics::counter::Counter;
use rlvr_common::observe::prometheus_client::metrics::family::Family;
use rlvr_common::observe::prometheus_client::metrics::gauge::Gauge;
use rlvr_common::observe::prometheus_client::metrics::histogram::Histogram;
use rlvr_common::observe::prometheus_client::registry::{Registry, Unit};
use rlvr_common::observe::{Endpoints, GaugeF, ReadyCheck, duration_histogram};
use rlvr_common::protocol::{MemberInfo, RunState, ScoredGroup, WeightAnnouncement};
use rlvr_common::transport::Control;
use rlvr_verifier::metrics::VerifierMetrics;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::run::StepMetrics;

/// Rollout groups kept for the viewer.
const KEPT_GROUPS: usize = 24;
/// Text of a prompt or response kept for the viewer.
const MAX_TEXT: usize = 4000;
/// How often the run's status (state, members, queues) is read.
const STATUS_EVERY: Duration = Duration::from_secs(1);

type OneLabel = [(&'static str, &'static str); 1];

/// A boxed future, for the object-safe [`RunView`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// One work queue's backlog.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueRow {
    pub name: &'static str,
    pub length: u64,
    pub pending: u64,
    pub lag: Option<u64>,
}

/// The run as the control plane sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub state: &'static str,
    pub members: Vec<MemberInfo>,
    pub queues: Vec<QueueRow>,
    pub dead_letters: u64,
    pub weights: Option<WeightAnnouncement>,
}

/// The run's control plane and queues, whichever the transport (in process or Redis).
pub trait RunView: Send + Sync {
    fn status(&self) -> BoxFuture<'_, RunStatus>;
    fn set_state(&self, state: RunState) -> BoxFuture<'_, ()>;
    fn request_checkpoint(&self) -> BoxFuture<'_, ()>;
}

/// The members, state and weights every control plane has.
async fn control_status<C: Control>(control: &C, queues: Vec<QueueRow>, dead_letters: u64) -> anyhow::Result<RunStatus> {
    Ok(RunStatus {
        state: control.state().await?.as_str(),
        members: control.members().await?,
        queues,
        dead_letters,
        weights: control.weights().await?,
    })
}

/// A queue's length, read without taking from it.
pub type QueueLength = Box<dyn Fn() -> u64 + Send + Sync>;

/// The embedded run's view: its in-process control plane and queues.
pub struct EmbeddedView {
    pub control: Arc<rlvr_common::transport::memory::MemoryControl>,
    pub queues: Vec<(&'static str, QueueLength)>,
}

impl RunView for EmbeddedView {
    fn status(&self) -> BoxFuture<'_, RunStatus> {
        Box::pin(async move {
            let queues = self
                .queues
                .iter()
                .map(|(name, len)| {
                    // In process a queued message is undelivered: its length is its lag.
                    let length = len();
                    QueueRow { name, length, pending: 0, lag: Some(length) }
                })
                .collect();
            control_status(self.control.as_ref(), queues, 0).await
        })
    }
    fn set_state(&self, state: RunState) -> BoxFuture<'_, ()> {
        Box::pin(async move { Ok(self.control.set_state(state).await?) })
    }
    fn request_checkpoint(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { Ok(self.control.request_checkpoint().await?) })
    }
}

/// A distributed run's view: its Redis streams and keys.
pub struct RedisView(pub rlvr_common::transport::redis::RedisTransport);

impl RunView for RedisView {
    fn status(&self) -> BoxFuture<'_, RunStatus> {
        use rlvr_common::transport::redis::Queue;
        Box::pin(async move {
            let mut queues = vec![];
            for q in Queue::ALL {
                let s = self.0.queue_stats(q).await?;
                queues.push(QueueRow { name: q.name(), length: s.length, pending: s.pending, lag: s.lag });
            }
            control_status(&self.0.control(), queues, self.0.dead_letters().await?).await
        })
    }
    fn set_state(&self, state: RunState) -> BoxFuture<'_, ()> {
        Box::pin(async move { Ok(self.0.control().set_state(state).await?) })
    }
    fn request_checkpoint(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { Ok(self.0.control().request_checkpoint().await?) })
    }
}

/// The learner's metrics.
#[derive(Clone)]
struct LearnerMetrics {
    step: Gauge,
    weight_version: Gauge,
    reward: GaugeF,
    accuracy: GaugeF,
    response_length: GaugeF,
    kl: GaugeF,
    entropy: GaugeF,
    clip_fraction: GaugeF,
    grad_norm: GaugeF,
    policy_loss: GaugeF,
    lr: GaugeF,
    tokens_per_s: GaugeF,
    staleness: Gauge,
    logprob_mismatch: GaugeF,
    phase_seconds: Family<OneLabel, Histogram, fn() -> Histogram>,
    samples: Counter,
    groups: Counter,
    dropped_groups: Counter,
    stale_groups: Counter,
    skipped_updates: Counter,
    state: Family<OneLabel, Gauge>,
    queue_length: Family<OneLabel, Gauge>,
    queue_pending: Family<OneLabel, Gauge>,
    queue_lag: Family<OneLabel, Gauge>,
    dead_letters: Gauge,
    members: Family<OneLabel, Gauge>,
}

impl LearnerMetrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self {
            step: Gauge::default(),
            weight_version: Gauge::default(),
            reward: GaugeF::default(),
            accuracy: GaugeF::default(),
            response_length: GaugeF::default(),
            kl: GaugeF::default(),
            entropy: GaugeF::default(),
            clip_fraction: GaugeF::default(),
            grad_norm: GaugeF::default(),
            policy_loss: GaugeF::default(),
            lr: GaugeF::default(),
            tokens_per_s: GaugeF::default(),
            staleness: Gauge::default(),
            logprob_mismatch: GaugeF::default(),
            phase_seconds: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            samples: Counter::default(),
            groups: Counter::default(),
            dropped_groups: Counter::default(),
            stale_groups: Counter::default(),
            skipped_updates: Counter::default(),
            state: Family::default(),
            queue_length: Family::default(),
            queue_pending: Family::default(),
            queue_lag: Family::default(),
            dead_letters: Gauge::default(),
            members: Family::default(),
        };
        r.register("rlvr_step", "Updates trained so far", m.step.clone());
        r.register("rlvr_weight_version", "The newest weight version published", m.weight_version.clone());
        r.register("rlvr_reward_mean", "Mean reward of the last step's samples", m.reward.clone());
        r.register_with_unit("rlvr_accuracy", "Fraction of the last step's samples scored correct", Unit::Other("ratio".into()), m.accuracy.clone());
        r.register_with_unit("rlvr_response_length_mean", "Mean response length of the last step", Unit::Other("tokens".into()), m.response_length.clone());
        r.register("rlvr_kl", "KL to the reference policy in the last step", m.kl.clone());
        r.register("rlvr_entropy", "Mean token entropy of the policy in the last step", m.entropy.clone());
        r.register_with_unit("rlvr_clip_fraction", "Fraction of tokens whose ratio was clipped in the last step", Unit::Other("ratio".into()), m.clip_fraction.clone());
        r.register("rlvr_grad_norm", "Gradient norm before clipping in the last step", m.grad_norm.clone());
        r.register("rlvr_policy_loss", "Policy loss of the last step", m.policy_loss.clone());
        r.register("rlvr_learning_rate", "The optimiser's learning rate", m.lr.clone());
        r.register("rlvr_train_tokens_per_second", "Tokens trained per second in the last step", m.tokens_per_s.clone());
        r.register("rlvr_staleness_max_versions", "Largest weight-version lag of a group trained in the last step", m.staleness.clone());
        r.register("rlvr_logprob_mismatch", "Mean |sampler - learner| log-prob of the last step's tokens", m.logprob_mismatch.clone());
        r.register_with_unit("rlvr_phase_duration", "Time of each phase of a step", Unit::Seconds, m.phase_seconds.clone());
        r.register("rlvr_trained_samples", "Samples trained on", m.samples.clone());
        r.register("rlvr_trained_groups", "Rollout groups trained on", m.groups.clone());
        r.register("rlvr_dropped_groups", "Groups left out by dynamic sampling", m.dropped_groups.clone());
        r.register("rlvr_stale_groups", "Groups left out as too stale", m.stale_groups.clone());
        r.register("rlvr_skipped_updates", "Updates skipped for a non-finite gradient", m.skipped_updates.clone());
        r.register("rlvr_run_state", "1 for the run's current state", m.state.clone());
        r.register("rlvr_queue_length", "Entries in a work queue", m.queue_length.clone());
        r.register("rlvr_queue_pending", "Entries delivered and not yet acknowledged", m.queue_pending.clone());
        r.register("rlvr_queue_lag", "Entries not yet delivered to any consumer", m.queue_lag.clone());
        r.register("rlvr_dead_letters", "Entries in the dead-letter stream", m.dead_letters.clone());
        r.register("rlvr_members", "Live members of the run, by role", m.members.clone());
        m
    }
}

/// An event for the dashboard's live stream.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub data: String,
}

/// The learner's telemetry (see the module doc).
pub struct RunTelemetry {
    metrics: LearnerMetrics,
    verifier: Mutex<Option<VerifierMetrics>>,
    endpoints: Mutex<Option<Endpoints>>,
    registry: Mutex<Option<Registry>>,
    events: broadcast::Sender<Event>,
    groups: Mutex<VecDeque<Value>>,
    status: Mutex<Option<Value>>,
    decode: Decode,
    ready: AtomicBool,
    pub run_dir: PathBuf,
    pub run_name: String,
}

impl std::fmt::Debug for RunTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunTelemetry").field("run_dir", &self.run_dir).finish_non_exhaustive()
    }
}

impl RunTelemetry {
    /// `decode` turns token ids into text for the rollout viewer.
    pub fn new(run_dir: &Path, run_name: &str, decode: Decode) -> Self {
        let mut registry = Registry::default();
        let metrics = LearnerMetrics::register(&mut registry);
        Self {
            metrics,
            verifier: Mutex::new(None),
            endpoints: Mutex::new(None),
            registry: Mutex::new(Some(registry)),
            events: broadcast::channel(256).0,
            groups: Mutex::new(VecDeque::new()),
            status: Mutex::new(None),
            decode,
            ready: AtomicBool::new(false),
            run_dir: run_dir.to_path_buf(),
            run_name: run_name.to_string(),
        }
    }

    /// Metrics for a verifier in this process (the embedded run's), registered beside the learner's;
    /// `None` once the endpoints are built.
    pub fn verifier_metrics(&self) -> Option<VerifierMetrics> {
        let mut verifier = self.verifier.lock().ok()?;
        if verifier.is_none() {
            let mut registry = self.registry.lock().ok()?;
            *verifier = Some(VerifierMetrics::register(registry.as_mut()?));
        }
        verifier.clone()
    }

    /// `/metrics`, `/healthz` and `/readyz` (ready once the driver runs and while `view` answers).
    pub fn endpoints(self: &Arc<Self>, view: Arc<dyn RunView>) -> Endpoints {
        let mut endpoints = self.endpoints.lock().expect("telemetry lock");
        if let Some(e) = endpoints.as_ref() {
            return e.clone();
        }
        let registry = self.registry.lock().expect("telemetry lock").take().unwrap_or_default();
        let me = self.clone();
        let ready: ReadyCheck = Arc::new(move || {
            let (me, view) = (me.clone(), view.clone());
            Box::pin(async move {
                if !me.ready.load(Ordering::Relaxed) {
                    return Err("the model is not loaded yet".into());
                }
                view.status().await.map(|_| ()).map_err(|e| format!("the control plane is unreachable: {e:#}"))
            })
        });
        let e = Endpoints::new(registry, ready);
        *endpoints = Some(e.clone());
        e
    }

    /// Live events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, name: &'static str, data: &Value) {
        // No subscriber is not an error.
        let _ = self.events.send(Event { name, data: data.to_string() });
    }

    /// The driver has the model and runs.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Time spent in one phase of a step.
    pub fn phase(&self, phase: &'static str, seconds: f64) {
        self.metrics.phase_seconds.get_or_create(&[("phase", phase)]).observe(seconds);
    }

    /// A trained step: its metrics, and its groups for the viewer.
    pub fn step(&self, m: &StepMetrics, groups: &[ScoredGroup]) {
        let x = &self.metrics;
        x.step.set(m.step as i64);
        x.weight_version.set(i64::try_from(m.weight_version).unwrap_or(i64::MAX));
        x.reward.set(m.reward_mean);
        x.accuracy.set(m.accuracy);
        x.response_length.set(m.response_len_mean);
        x.kl.set(m.train.kl);
        x.entropy.set(m.train.entropy);
        x.clip_fraction.set(m.train.clip_fraction);
        x.grad_norm.set(m.train.grad_norm);
        x.policy_loss.set(m.train.policy_loss);
        x.lr.set(m.train.lr);
        x.tokens_per_s.set(m.tokens_per_s);
        x.staleness.set(i64::try_from(m.staleness_max).unwrap_or(i64::MAX));
        x.logprob_mismatch.set(m.train.logprob_mismatch);
        x.samples.inc_by(groups.iter().map(|g| g.scores.len() as u64).sum());
        x.groups.inc_by(m.groups_kept as u64);
        x.dropped_groups.inc_by(m.groups_dropped as u64);
        x.stale_groups.inc_by(m.stale_dropped as u64);
        x.skipped_updates.inc_by(m.train.skipped_updates as u64);
        self.emit("step", &Value::Object(verl_record(m)));
        let views: Vec<Value> = groups.iter().map(|g| self.group_view(m.step, g)).collect();
        if let Ok(mut kept) = self.groups.lock() {
            for v in views {
                if kept.len() == KEPT_GROUPS {
                    kept.pop_front();
                }
                kept.push_back(v);
            }
        }
        self.emit("rollouts", &json!({ "step": m.step }));
    }

    /// A held-out evaluation (`when` is `before` or `after`).
    pub fn eval(&self, when: &'static str, pass_at_1: f64, summary: &str) {
        self.emit("eval", &json!({ "when": when, "pass_at_1": pass_at_1, "summary": summary }));
    }

    /// The last rollout groups, newest first.
    pub fn groups(&self) -> Vec<Value> {
        self.groups.lock().map(|g| g.iter().rev().cloned().collect()).unwrap_or_default()
    }

    /// The last status read.
    pub fn last_status(&self) -> Option<Value> {
        self.status.lock().ok().and_then(|s| s.clone())
    }

    fn group_view(&self, step: usize, g: &ScoredGroup) -> Value {
        let r = &g.rollouts;
        let prompt = r.rollouts.first().map(|x| clip((self.decode)(&x.prompt_token_ids))).unwrap_or_default();
        let samples: Vec<Value> = r
            .rollouts
            .iter()
            .zip(&g.scores)
            .enumerate()
            .map(|(i, (x, s))| {
                json!({
                    "text": clip(r.texts.get(i).cloned().unwrap_or_else(|| (self.decode)(&x.response_token_ids))),
                    "tokens": x.response_token_ids.len(),
                    "finish_reason": x.finish_reason,
                    "weight_version": x.weight_version,
                    "reward": s.reward,
                    "correct": s.correct,
                    "outcome": s.outcome,
                    "detail": s.detail,
                })
            })
            .collect();
        json!({
            "step": step,
            "group": r.group.to_string(),
            "kind": r.reward.kind,
            "ground_truth": clip(r.reward.ground_truth.clone()),
            "actor": r.actor,
            "verifier": g.verifier,
            "prompt": prompt,
            "samples": samples,
        })
    }

    /// Copies a status into the metrics and the live stream.
    fn record_status(&self, status: &RunStatus) {
        let x = &self.metrics;
        for s in [RunState::Running, RunState::Paused, RunState::Draining, RunState::Stopped] {
            x.state.get_or_create(&[("state", s.as_str())]).set(i64::from(s.as_str() == status.state));
        }
        for q in &status.queues {
            x.queue_length.get_or_create(&[("queue", q.name)]).set(q.length as i64);
            x.queue_pending.get_or_create(&[("queue", q.name)]).set(q.pending as i64);
            x.queue_lag.get_or_create(&[("queue", q.name)]).set(q.lag.map_or(-1, |l| l as i64));
        }
        x.dead_letters.set(status.dead_letters as i64);
        for role in ["learner", "actor", "verifier"] {
            let n = status.members.iter().filter(|m| format!("{:?}", m.role).eq_ignore_ascii_case(role)).count();
            x.members.get_or_create(&[("role", role)]).set(n as i64);
        }
        let now = rlvr_common::transport::unix_time();
        let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
        if let Some(members) = v.get_mut("members").and_then(Value::as_array_mut) {
            for m in members {
                let at = m.get("at").and_then(Value::as_f64).unwrap_or(now);
                m["seen_s_ago"] = json!(((now - at) * 10.0).round() / 10.0);
            }
        }
        v["run"] = json!(self.run_name);
        v["step"] = json!(x.step.get());
        if let Ok(mut s) = self.status.lock() {
            *s = Some(v.clone());
        }
        self.emit("status", &v);
    }

    /// Reads the run's status every second (into the metrics and the live stream) until `stop`.
    pub fn spawn_status_task(self: &Arc<Self>, view: Arc<dyn RunView>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match view.status().await {
                    Ok(status) => me.record_status(&status),
                    Err(e) => tracing::debug!(error = %format!("{e:#}"), "reading the run's status failed"),
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(STATUS_EVERY) => {}
                }
            }
        })
    }
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// verl's name for each field of a step record (`StepMetrics`, flattened), so charts read as a verl user
/// expects (`critic/score/mean`, `actor/pg_clipfrac`, `response_length/mean`, `timing_s/gen`, …). Names
/// verl has no counterpart for keep verl's `section/name` shape.
const VERL_NAMES: [(&str, &str); 28] = [
    ("training/global_step", "step"),
    ("training/weight_version", "weight_version"),
    ("critic/score/mean", "reward_mean"),
    ("critic/rewards/mean", "reward_mean"),
    ("critic/accuracy/mean", "accuracy"),
    ("response_length/mean", "response_len_mean"),
    ("actor/pg_loss", "policy_loss"),
    ("actor/loss", "loss"),
    ("actor/kl_loss", "kl"),
    ("actor/entropy", "entropy"),
    ("actor/pg_clipfrac", "clip_fraction"),
    ("actor/grad_norm", "grad_norm"),
    ("actor/lr", "lr"),
    ("actor/advantages_abs/mean", "advantage_abs_mean"),
    ("training/rollout_probs_diff_mean", "logprob_mismatch"),
    ("actor/skipped_updates", "skipped_updates"),
    ("critic/vf_loss", "value_loss"),
    ("critic/vf_clipfrac", "value_clip_fraction"),
    ("critic/grad_norm", "critic_grad_norm"),
    ("critic/values/mean", "value_mean"),
    ("batch/groups_kept", "groups_kept"),
    ("batch/groups_dropped", "groups_dropped"),
    ("batch/stale_dropped", "stale_dropped"),
    ("rollout/staleness_max", "staleness_max"),
    ("timing_s/gen", "rollout_s"),
    ("timing_s/update_actor", "train_s"),
    ("timing_s/sync_weights", "sync_s"),
    ("perf/throughput", "tokens_per_s"),
];

/// A step record (a `StepMetrics` as JSON, as in `metrics.jsonl`) under verl's names. A value that is
/// not a number (a NaN is written as `null`) is left out.
pub fn verl_record_json(record: &Value) -> Map<String, Value> {
    let mut r = Map::new();
    let num = |field: &str| record.get(field).and_then(Value::as_f64).filter(|v| v.is_finite());
    for (name, field) in VERL_NAMES {
        if let Some(v) = num(field) {
            r.insert(name.to_string(), json!(v));
        }
    }
    if let (Some(a), Some(b), Some(c)) = (num("rollout_s"), num("train_s"), num("sync_s")) {
        r.insert("timing_s/step".into(), json!(a + b + c));
    }
    r
}

/// A step's metrics under verl's names ([`verl_record_json`]).
pub fn verl_record(m: &StepMetrics) -> Map<String, Value> {
    verl_record_json(&serde_json::to_value(m).unwrap_or(Value::Null))
}

/// Every step recorded in the run's `metrics.jsonl`, under verl's names (the dashboard's history).
pub fn history(run_dir: &Path) -> Vec<Map<String, Value>> {
    let Ok(text) = std::fs::read_to_string(run_dir.join("metrics.jsonl")) else { return vec![] };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("step").is_some())
        .map(|v| verl_record_json(&v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::StepStats;

    fn metrics(step: usize) -> StepMetrics {
        StepMetrics {
            step,
            weight_version: step as u64,
            reward_mean: 0.5,
            accuracy: 0.25,
            response_len_mean: 12.0,
            groups_kept: 2,
            groups_dropped: 1,
            stale_dropped: 0,
            staleness_max: 0,
            rollout_s: 1.0,
            train_s: 2.0,
            sync_s: 0.5,
            tokens_per_s: 100.0,
            train: StepStats { clip_fraction: 0.1, kl: f64::NAN, ..Default::default() },
        }
    }

    #[test]
    fn steps_read_under_verls_names_and_history_skips_what_is_not_a_step() {
        let r = verl_record(&metrics(3));
        assert_eq!(r["training/global_step"], json!(3.0));
        assert_eq!(r["critic/score/mean"], json!(0.5));
        assert_eq!(r["actor/pg_clipfrac"], json!(0.1));
        assert_eq!(r["response_length/mean"], json!(12.0));
        assert_eq!(r["timing_s/gen"], json!(1.0));
        assert_eq!(r["timing_s/step"], json!(3.5));
        assert!(!r.contains_key("actor/kl_loss"), "a NaN is left out, not sent as null");
        let dir = tempfile::tempdir().unwrap();
        let lines = [serde_json::to_string(&metrics(1)).unwrap(), "not json".into(), serde_json::to_string(&metrics(2)).unwrap()];
        std::fs::write(dir.path().join("metrics.jsonl"), lines.join("\n")).unwrap();
        let h = history(dir.path());
        assert_eq!(h.iter().map(|r| r["training/global_step"].as_f64().unwrap()).collect::<Vec<_>>(), [1.0, 2.0]);
        assert!(history(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn status_sets_one_state_and_the_queue_gauges() {
        let t = Arc::new(RunTelemetry::new(Path::new("/nonexistent"), "r", Arc::new(|ids: &[u32]| format!("{ids:?}"))));
        let mut events = t.subscribe();
        let status = RunStatus {
            state: "paused",
            members: vec![],
            queues: vec![QueueRow { name: "rollouts", length: 7, pending: 2, lag: Some(5) }],
            dead_letters: 1,
            weights: None,
        };
        t.record_status(&status);
        let endpoints = t.endpoints(Arc::new(NoView));
        let text = endpoints.encode();
        assert!(text.contains(r#"rlvr_run_state{state="paused"} 1"#), "{text}");
        assert!(text.contains(r#"rlvr_run_state{state="running"} 0"#), "{text}");
        assert!(text.contains(r#"rlvr_queue_lag{queue="rollouts"} 5"#), "{text}");
        assert!(text.contains("rlvr_dead_letters 1"), "{text}");
        let e = events.try_recv().unwrap();
        assert_eq!(e.name, "status");
        assert_eq!(serde_json::from_str::<Value>(&e.data).unwrap()["state"], "paused");
    }

    struct NoView;

    impl RunView for NoView {
        fn status(&self) -> BoxFuture<'_, RunStatus> {
            Box::pin(async { anyhow::bail!("no control plane") })
        }
        fn set_state(&self, _: RunState) -> BoxFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn request_checkpoint(&self) -> BoxFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
    }
}
