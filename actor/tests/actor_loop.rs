//! The actor loop over in-process channels and weights: every prompt becomes a group of rollouts with
//! unique ids, new weights are verified and swapped in between batches, tampered weights stop the
//! actor, and shutdown aborts or finishes as configured.

use std::sync::Arc;

use rlvr_actor::actor_loop::{ActorConfig, ActorError, ChannelSink, ChannelSource, PromptItem, ShutdownMode, run_actor};
use rlvr_actor::engine::{Engine, EngineConfig, EngineError, RequestParams};
use rlvr_common::model::{CausalLm, Cpu, ModelConfig};
use rlvr_common::rollout::{FinishReason, Rollout};
use rlvr_common::weights::{InProcessWeights, WeightPublisher, WeightUpdate};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn model(seed: u64) -> CausalLm<Cpu> {
    let config = ModelConfig::from_json(json!({
        "model_type": "qwen2", "vocab_size": 50, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "tie_word_embeddings": true
    }))
    .unwrap();
    CausalLm::random(config, seed, &Default::default())
}

fn item(i: usize) -> PromptItem {
    PromptItem {
        prompt_id: format!("p{i}"),
        group_id: format!("step0-p{i}"),
        prompt: vec![1 + i as u32, 7, 9],
        params: RequestParams { n: 2, max_new_tokens: 6, seed: i as u64, ..Default::default() },
    }
}

async fn run(
    weights: InProcessWeights,
    items: usize,
    config: ActorConfig,
    shutdown: CancellationToken,
) -> (Result<rlvr_actor::actor_loop::ActorReport, ActorError>, Vec<Rollout>) {
    let (prompt_tx, prompt_rx) = mpsc::channel(16);
    let (rollout_tx, mut rollout_rx) = mpsc::channel(64);
    for i in 0..items {
        prompt_tx.send(item(i)).await.unwrap();
    }
    drop(prompt_tx);
    let engine = Engine::new(model(1), 0, EngineConfig { max_batch_rows: 4, ..Default::default() });
    let report = run_actor(engine, ChannelSource(prompt_rx), ChannelSink(rollout_tx), Arc::new(weights), config, shutdown).await;
    let mut rollouts = vec![];
    while let Some(r) = rollout_rx.recv().await {
        rollouts.push(r);
    }
    (report, rollouts)
}

#[tokio::test]
async fn prompts_become_groups_of_rollouts() {
    let (report, rollouts) = run(InProcessWeights::new(), 5, ActorConfig::default(), CancellationToken::new()).await;
    let report = report.unwrap();
    assert_eq!(report.rollouts, 10);
    assert_eq!(rollouts.len(), 10);
    let ids: std::collections::HashSet<_> = rollouts.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 10, "rollout ids are unique");
    for r in &rollouts {
        assert_eq!(r.weight_version, 0);
        assert_eq!(r.response_token_ids.len(), r.log_probs.len());
        assert_eq!(r.group_id, format!("step0-{}", r.prompt_id));
        assert_ne!(r.finish_reason, FinishReason::Abort);
    }
}

#[tokio::test]
async fn announced_weights_are_verified_and_swapped_in() {
    let weights = InProcessWeights::new();
    weights.publish(WeightUpdate::new(3, model(2).to_host_weights())).unwrap();
    let (report, rollouts) = run(weights, 2, ActorConfig::default(), CancellationToken::new()).await;
    assert_eq!(report.unwrap().weight_versions, vec![3]);
    assert!(rollouts.iter().all(|r| r.weight_version == 3));

    let weights = InProcessWeights::new();
    let mut tampered = WeightUpdate::new(1, model(2).to_host_weights());
    tampered.checksum = "00".repeat(32);
    weights.publish(tampered).unwrap();
    let (report, rollouts) = run(weights, 2, ActorConfig::default(), CancellationToken::new()).await;
    assert!(matches!(report, Err(ActorError::Engine(EngineError::Weights(_)))), "{report:?}");
    assert!(rollouts.is_empty(), "the actor never samples with unverified weights");
}

#[tokio::test]
async fn shutdown_stops_taking_prompts() {
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    for mode in [ShutdownMode::Abort, ShutdownMode::Finish] {
        let config = ActorConfig { shutdown: mode, ..Default::default() };
        let (report, rollouts) = run(InProcessWeights::new(), 3, config, shutdown.clone()).await;
        assert_eq!(report.unwrap().rollouts, 0, "{mode:?}");
        assert!(rollouts.is_empty());
    }
}
