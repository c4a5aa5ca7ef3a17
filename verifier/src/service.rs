//! The verifier service loop: take rollouts from a [`RolloutSource`], score them (on the blocking pool,
//! in parallel), hand them to a [`ScoredSink`]. Transports implement the two traits; in-process
//! tokio channels are provided here. The loop stops when the source closes or on cancellation, always
//! between batches, so a scored batch is never half-delivered.

use std::future::Future;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::check::{CheckRequest, score};
use crate::verdict::{Verdict, VerifierError};

/// A rollout to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub request: CheckRequest,
}

/// A rollout with its verdict.
#[derive(Debug, Clone)]
pub struct ScoredRollout {
    pub rollout: Rollout,
    pub verdict: Verdict,
}

/// Where rollouts come from.
pub trait RolloutSource: Send {
    /// Up to `max` rollouts; waits for at least one. An empty batch means the source is closed.
    fn next_batch(&mut self, max: usize) -> impl Future<Output = Result<Vec<Rollout>, VerifierError>> + Send;
}

/// Where scored rollouts go.
pub trait ScoredSink: Send {
    fn send(&mut self, batch: Vec<ScoredRollout>) -> impl Future<Output = Result<(), VerifierError>> + Send;
}

/// In-process source: the receiving end of a bounded channel.
#[derive(Debug)]
pub struct ChannelSource {
    pub rollouts_rx: mpsc::Receiver<Rollout>,
}

impl RolloutSource for ChannelSource {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Rollout>, VerifierError> {
        let mut batch = Vec::new();
        if max == 0 {
            return Ok(batch);
        }
        self.rollouts_rx.recv_many(&mut batch, max).await;
        Ok(batch)
    }
}

/// In-process sink: the sending end of a bounded channel (backpressure when the learner is slow).
#[derive(Debug)]
pub struct ChannelSink {
    pub scored_tx: mpsc::Sender<ScoredRollout>,
}

impl ScoredSink for ChannelSink {
    async fn send(&mut self, batch: Vec<ScoredRollout>) -> Result<(), VerifierError> {
        for s in batch {
            self.scored_tx.send(s).await.map_err(|_| VerifierError::Sink("scored-rollout channel closed".into()))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Rollouts scored together (one parallel batch).
    pub batch_size: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig { batch_size: 256 }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub scored: usize,
    pub batches: usize,
}

/// Score a batch on the blocking pool with rayon, keeping order.
pub async fn score_batch(batch: Vec<Rollout>) -> Result<Vec<ScoredRollout>, VerifierError> {
    tokio::task::spawn_blocking(move || {
        use rayon::prelude::*;
        let verdicts: Vec<Verdict> = batch.par_iter().map(|r| score(&r.request)).collect();
        batch.into_iter().zip(verdicts).map(|(rollout, verdict)| ScoredRollout { rollout, verdict }).collect()
    })
    .await
    .map_err(|e| VerifierError::Source(format!("scoring task failed: {e}")))
}

/// Run until the source closes or `shutdown` is cancelled.
pub async fn run(
    mut source: impl RolloutSource,
    mut sink: impl ScoredSink,
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceStats, VerifierError> {
    let mut stats = ServiceStats::default();
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => break,
            b = source.next_batch(config.batch_size.max(1)) => b?,
        };
        if batch.is_empty() {
            break;
        }
        tracing::debug!(n = batch.len(), "scoring batch");
        let scored = score_batch(batch).await?;
        stats.scored += scored.len();
        stats.batches += 1;
        sink.send(scored).await?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{GroundTruth, TaskKind};
    use crate::verdict::Outcome;

    fn rollout(i: usize, response: &str) -> Rollout {
        Rollout {
            id: format!("r{i}"),
            request: CheckRequest {
                kind: TaskKind::Math,
                response: response.into(),
                ground_truth: GroundTruth::One("7".into()),
                settings: None,
                shaping: None,
                response_tokens: None,
                question: None,
            },
        }
    }

    #[tokio::test]
    async fn scores_everything_in_order_then_stops() {
        let (rollouts_tx, rollouts_rx) = mpsc::channel(8);
        let (scored_tx, mut scored_rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            ChannelSource { rollouts_rx },
            ChannelSink { scored_tx },
            ServiceConfig { batch_size: 3 },
            shutdown.clone(),
        ));
        for i in 0..10 {
            let resp = if i % 2 == 0 { "\\boxed{7}" } else { "\\boxed{8}" };
            rollouts_tx.send(rollout(i, resp)).await.unwrap();
        }
        drop(rollouts_tx);
        let stats = task.await.unwrap().unwrap();
        assert_eq!(stats.scored, 10);
        for i in 0..10 {
            let s = scored_rx.recv().await.unwrap();
            assert_eq!(s.rollout.id, format!("r{i}"));
            let want = if i % 2 == 0 { Outcome::Correct } else { Outcome::Incorrect };
            assert_eq!(s.verdict.outcome, want);
        }
    }

    #[tokio::test]
    async fn cancellation_stops_between_batches() {
        let (_rollouts_tx, rollouts_rx) = mpsc::channel::<Rollout>(8);
        let (scored_tx, _scored_rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let stats = run(ChannelSource { rollouts_rx }, ChannelSink { scored_tx }, ServiceConfig::default(), shutdown)
            .await
            .unwrap();
        assert_eq!(stats.scored, 0);
    }
}
