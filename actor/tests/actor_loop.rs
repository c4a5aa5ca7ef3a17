//! The actor loop over the in-process queues and weights: every task becomes a complete group with
//! unique ids, sampled only with weights the task allows; new weights are verified and swapped in
//! between batches, tampered weights stop the actor, outdated tasks are dropped, and shutdown finishes
//! or hands back as configured.

use std::sync::Arc;
use std::time::Duration;

use rlvr_actor::actor_loop::{ActorConfig, ActorError, ActorReport, Decode, ShutdownMode, run_actor};
use rlvr_actor::engine::{Engine, EngineConfig, EngineError};
use rlvr_common::model::{CausalLm, Cpu, ModelConfig};
use rlvr_common::protocol::{GroupId, PromptTask, RewardSpec, RolloutGroup, SamplingSpec};
use rlvr_common::rollout::FinishReason;
use rlvr_common::transport::memory::{MemoryStage, queue};
use rlvr_common::transport::{Inbox, Outbox};
use rlvr_common::weights::{InProcessWeights, WeightPublisher, WeightUpdate};
use serde_json::json;
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

fn task(i: u32, versions: (u64, u64)) -> PromptTask {
    PromptTask {
        group: GroupId { step: 0, slot: i },
        prompt_id: format!("p{i}"),
        prompt_token_ids: vec![1 + i, 7, 9],
        sampling: SamplingSpec { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, max_new_tokens: 6, stop_token_ids: vec![], seed: u64::from(i), n: 2 },
        min_version: versions.0,
        max_version: versions.1,
        reward: RewardSpec { data_source: String::new(), kind: "math".into(), ground_truth: "1".into() },
    }
}

fn decode() -> Decode {
    Arc::new(|ids: &[u32]| ids.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" "))
}

async fn run(weights: InProcessWeights, tasks: Vec<PromptTask>, config: ActorConfig, shutdown: CancellationToken) -> (Result<ActorReport, ActorError>, Vec<RolloutGroup>) {
    let (task_tx, task_rx) = queue::<PromptTask>(64);
    let (group_tx, mut group_rx) = queue::<RolloutGroup>(64);
    for t in &tasks {
        task_tx.send(t).await.unwrap();
    }
    drop(task_tx);
    let engine = Engine::new(model(1), 0, EngineConfig { max_batch_rows: 4, ..Default::default() });
    let stage = MemoryStage { input: task_rx, output: group_tx };
    let report = run_actor(engine, stage, Arc::new(weights), decode(), config, shutdown).await;
    let mut groups = vec![];
    while let Ok(batch) = group_rx.recv(64, Duration::from_millis(10)).await {
        if batch.is_empty() {
            break;
        }
        groups.extend(batch.into_iter().map(|d| d.message));
    }
    (report, groups)
}

#[tokio::test]
async fn tasks_become_complete_groups() {
    let tasks: Vec<_> = (0..5).map(|i| task(i, (0, 0))).collect();
    let (report, groups) = run(InProcessWeights::new(), tasks, ActorConfig::default(), CancellationToken::new()).await;
    let report = report.unwrap();
    assert_eq!((report.groups, report.rollouts), (5, 10));
    assert_eq!(groups.len(), 5);
    for g in &groups {
        assert_eq!(g.rollouts.len(), 2);
        assert_eq!(g.texts.len(), 2);
        for (i, r) in g.rollouts.iter().enumerate() {
            assert_eq!(r.sample_index as usize, i);
            assert_eq!(r.id, format!("{}/{i}", g.group));
            assert_eq!(r.group_id, g.group.to_string());
            assert_eq!(r.weight_version, 0);
            assert_eq!(r.response_token_ids.len(), r.log_probs.len());
            assert_ne!(r.finish_reason, FinishReason::Abort);
            assert_eq!(g.texts[i], r.response_token_ids.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" "));
        }
    }
}

#[tokio::test]
async fn a_group_samples_the_same_tokens_whoever_takes_it() {
    // Alone, or behind other groups in a batch: same seed, same weights, same tokens.
    let (_, alone) = run(InProcessWeights::new(), vec![task(3, (0, 0))], ActorConfig::default(), CancellationToken::new()).await;
    let tasks: Vec<_> = (0..4).map(|i| task(i, (0, 0))).collect();
    let (_, crowd) = run(InProcessWeights::new(), tasks, ActorConfig::default(), CancellationToken::new()).await;
    let in_crowd = crowd.iter().find(|g| g.group.slot == 3).unwrap();
    for (a, b) in alone[0].rollouts.iter().zip(&in_crowd.rollouts) {
        assert_eq!(a.response_token_ids, b.response_token_ids);
    }
}

#[tokio::test]
async fn announced_weights_are_verified_and_swapped_in() {
    let weights = InProcessWeights::new();
    weights.publish(WeightUpdate::new(3, model(2).to_host_weights())).unwrap();
    let (report, groups) = run(weights, vec![task(0, (3, 3)), task(1, (3, 3))], ActorConfig::default(), CancellationToken::new()).await;
    assert_eq!(report.unwrap().weight_versions, vec![3]);
    assert!(groups.iter().flat_map(|g| &g.rollouts).all(|r| r.weight_version == 3));

    let weights = InProcessWeights::new();
    let mut tampered = WeightUpdate::new(1, model(2).to_host_weights());
    tampered.checksum = "00".repeat(32);
    weights.publish(tampered).unwrap();
    let (report, groups) = run(weights, vec![task(0, (1, 1))], ActorConfig::default(), CancellationToken::new()).await;
    assert!(matches!(report, Err(ActorError::Engine(EngineError::Weights(_)))), "{report:?}");
    assert!(groups.is_empty(), "the actor never samples with unverified weights");
}

#[tokio::test]
async fn a_task_waits_for_the_weights_it_needs() {
    // The task needs version 2; the actor has 0. It must not sample until version 2 arrives.
    let weights = InProcessWeights::new();
    let late = weights.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        late.publish(WeightUpdate::new(2, model(3).to_host_weights())).unwrap();
    });
    let (report, groups) = run(weights, vec![task(0, (2, 2))], ActorConfig::default(), CancellationToken::new()).await;
    assert_eq!(report.unwrap().weight_versions, vec![2]);
    assert!(groups[0].rollouts.iter().all(|r| r.weight_version == 2));
}

#[tokio::test]
async fn an_outdated_task_is_dropped_not_sampled() {
    let weights = InProcessWeights::new();
    weights.publish(WeightUpdate::new(5, model(2).to_host_weights())).unwrap();
    // Allowed versions 0..=1, but the weights are at 5: the learner has moved on.
    let (report, groups) = run(weights, vec![task(0, (5, 5)), task(1, (0, 1))], ActorConfig::default(), CancellationToken::new()).await;
    let report = report.unwrap();
    assert_eq!(report.outdated, 1);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].group.slot, 0);
}

#[tokio::test]
async fn shutdown_stops_taking_tasks() {
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    for mode in [ShutdownMode::Abort, ShutdownMode::Finish] {
        let config = ActorConfig { shutdown: mode, ..Default::default() };
        let tasks: Vec<_> = (0..3).map(|i| task(i, (0, 0))).collect();
        let (report, groups) = run(InProcessWeights::new(), tasks, config, shutdown.clone()).await;
        assert_eq!(report.unwrap().groups, 0, "{mode:?}");
        assert!(groups.is_empty());
    }
}

#[tokio::test]
async fn a_task_waiting_for_future_weights_does_not_hold_up_the_others() {
    // A restarted learner's old task (version 2) comes first; the current step's task (version 0) must
    // still be sampled, or the learner would never get to version 2.
    let weights = InProcessWeights::new();
    let late = weights.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        late.publish(WeightUpdate::new(2, model(3).to_host_weights())).unwrap();
    });
    let (report, groups) = run(weights, vec![task(0, (2, 2)), task(1, (0, 0))], ActorConfig::default(), CancellationToken::new()).await;
    report.unwrap();
    let version = |slot: u32| groups.iter().find(|g| g.group.slot == slot).map(|g| g.rollouts[0].weight_version);
    assert_eq!(version(1), Some(0), "the current task was held up behind the waiting one");
    assert_eq!(version(0), Some(2));
}

#[tokio::test]
async fn queued_tasks_are_not_sampled_with_weights_they_do_not_allow() {
    // Forty tasks for version 0 queue in the engine (two groups run at a time); version 1 arrives
    // after the first group. The queued tasks must not be sampled with version 1: they are outdated.
    let (task_tx, task_rx) = queue::<PromptTask>(64);
    let (group_tx, mut group_rx) = queue::<RolloutGroup>(64);
    for i in 0..40 {
        let mut t = task(i, (0, 0));
        t.sampling.max_new_tokens = 32;
        task_tx.send(&t).await.unwrap();
    }
    drop(task_tx);
    let weights = InProcessWeights::new();
    let engine = Engine::new(model(1), 0, EngineConfig { max_batch_rows: 4, ..Default::default() });
    let actor = tokio::spawn(run_actor(engine, MemoryStage { input: task_rx, output: group_tx }, Arc::new(weights.clone()), decode(), ActorConfig::default(), CancellationToken::new()));
    let mut groups = vec![];
    while groups.is_empty() {
        groups.extend(group_rx.recv(64, Duration::from_millis(10)).await.unwrap().into_iter().map(|d| d.message));
    }
    weights.publish(WeightUpdate::new(1, model(2).to_host_weights())).unwrap();
    let report = actor.await.unwrap().unwrap();
    while let Ok(batch) = group_rx.recv(64, Duration::from_millis(10)).await {
        if batch.is_empty() {
            break;
        }
        groups.extend(batch.into_iter().map(|d| d.message));
    }
    assert_eq!(report.weight_versions, vec![1]);
    for g in &groups {
        assert!(g.rollouts.iter().all(|r| r.weight_version == 0), "group {} was sampled with version {}", g.group, g.rollouts[0].weight_version);
    }
    assert!(report.outdated > 0, "no task was queued when the weights changed: the test proves nothing");
    assert_eq!(report.outdated + groups.len(), 40);
}
