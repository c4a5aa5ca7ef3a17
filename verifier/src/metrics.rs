//! The verifier's Prometheus metrics: verdicts by reward kind and outcome, the time to score a group,
//! and sandbox time-outs. [`Metered`] wraps any [`GroupScorer`] with them; `rlvr-verifier serve` and the
//! embedded loop of `rlvr train` both use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rlvr_common::observe::duration_histogram;
use rlvr_common::observe::prometheus_client::metrics::counter::Counter;
use rlvr_common::observe::prometheus_client::metrics::family::Family;
use rlvr_common::observe::prometheus_client::metrics::histogram::Histogram;
use rlvr_common::observe::prometheus_client::registry::{Registry, Unit};
use rlvr_common::protocol::{RolloutGroup, SampleScore};

use crate::worker::GroupScorer;

type KindOutcome = [(&'static str, &'static str); 2];
type KindLabel = [(&'static str, &'static str); 1];

/// The reward kinds a label may name; anything else is `other` (label values stay a small set).
fn kind_label(kind: &str) -> &'static str {
    match kind {
        "math" => "math",
        "code" => "code",
        "truth" => "truth",
        _ => "other",
    }
}

/// The outcomes a label may name (`crate::verdict::Outcome::as_str`); anything else is `other`.
fn outcome_label(outcome: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["correct", "incorrect", "abstained", "no_answer", "timeout", "out_of_memory", "runtime_error", "error", "scored"];
    KNOWN.into_iter().find(|k| *k == outcome).unwrap_or("other")
}

/// Metrics of scoring.
#[derive(Clone, Debug)]
pub struct VerifierMetrics {
    verdicts: Family<KindOutcome, Counter>,
    group_seconds: Family<KindLabel, Histogram, fn() -> Histogram>,
    groups: Counter,
    sandbox_timeouts: Counter,
}

impl VerifierMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            verdicts: Family::default(),
            group_seconds: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            groups: Counter::default(),
            sandbox_timeouts: Counter::default(),
        };
        registry.register("rlvr_verdicts", "Samples scored, by reward kind and outcome", m.verdicts.clone());
        registry.register_with_unit("rlvr_verify_group_duration", "Time to score one rollout group, by reward kind", Unit::Seconds, m.group_seconds.clone());
        registry.register("rlvr_verified_groups", "Rollout groups scored", m.groups.clone());
        registry.register("rlvr_sandbox_timeouts", "Code samples stopped at the sandbox's deadline", m.sandbox_timeouts.clone());
        m
    }

    /// Records one scored group.
    pub fn observe(&self, kind: &str, scores: &[SampleScore], seconds: f64) {
        let kind = kind_label(kind);
        self.groups.inc();
        self.group_seconds.get_or_create(&[("kind", kind)]).observe(seconds);
        for s in scores {
            let outcome = outcome_label(&s.outcome);
            self.verdicts.get_or_create(&[("kind", kind), ("outcome", outcome)]).inc();
            if kind == "code" && outcome == "timeout" {
                self.sandbox_timeouts.inc();
            }
        }
    }
}

/// A scorer that records what it scores (and counts groups for the heartbeat).
pub struct Metered {
    pub inner: Arc<dyn GroupScorer>,
    pub metrics: VerifierMetrics,
    pub done: Arc<AtomicU64>,
}

impl GroupScorer for Metered {
    fn score(&self, group: &RolloutGroup) -> Vec<SampleScore> {
        let t = Instant::now();
        let scores = self.inner.score(group);
        self.metrics.observe(&group.reward.kind, &scores, t.elapsed().as_secs_f64());
        self.done.fetch_add(1, Ordering::Relaxed);
        scores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_counted_by_bounded_labels() {
        let mut registry = Registry::default();
        let m = VerifierMetrics::register(&mut registry);
        let score = |outcome: &str| SampleScore { reward: 0.0, correct: false, outcome: outcome.into(), detail: String::new() };
        m.observe("code", &[score("timeout"), score("correct"), score("made-up")], 0.5);
        m.observe("x".repeat(100).as_str(), &[score("incorrect")], 0.1);
        let mut out = String::new();
        rlvr_common::observe::prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains(r#"rlvr_verdicts_total{kind="code",outcome="timeout"} 1"#), "{out}");
        assert!(out.contains(r#"rlvr_verdicts_total{kind="code",outcome="other"} 1"#), "{out}");
        assert!(out.contains(r#"rlvr_verdicts_total{kind="other",outcome="incorrect"} 1"#), "{out}");
        assert!(out.contains("rlvr_sandbox_timeouts_total 1"), "{out}");
        assert!(out.contains("rlvr_verified_groups_total 2"), "{out}");
        assert!(out.contains(r#"rlvr_verify_group_duration_seconds_count{kind="code"} 1"#), "{out}");
    }
}
