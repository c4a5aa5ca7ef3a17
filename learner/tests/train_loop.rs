//! The learner learns, and resumes exactly.
//!
//! - The sign test: a tiny random model, reward 1 when the response's first token is a chosen one; a few
//!   GRPO steps (the actor engine samples, the learner updates, the engine takes the new weights) raise
//!   that token's probability and the mean reward. The same with PPO's GAE and a critic.
//! - Resume: train N steps in one go, or K steps, stop, and resume for the rest; the weights and the
//!   per-step metrics (hence the data order) agree, with GRPO and with GAE (whose critic and its
//!   optimiser are checkpointed too). In async mode, resuming from a checkpoint taken mid-run (whose
//!   next batch was already being sampled with the previous weights) agrees with the run that went on.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::activation::softmax;
use rlvr_actor::engine::{Engine, EngineConfig, Request, RequestParams};
use rlvr_actor::sampling::SamplingParams;
use rlvr_common::checkpoint::{SaveDtype, read_weights};
use rlvr_common::model::{CausalLm, Cpu, ModelConfig};
use rlvr_common::weights::WeightUpdate;
use rlvr_learner::algo::advantage::AdvantageEstimator;
use rlvr_learner::config::{Mode, RunConfig};
use rlvr_learner::data::Problem;
use rlvr_learner::reward::{Reward, Score};
use rlvr_learner::run::{TrainOptions, train_with_reward};
use rlvr_learner::trainer::{Learner, StepStats, TrainSample};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn tiny_config(vocab: usize) -> ModelConfig {
    ModelConfig::from_json(json!({
        "model_type": "llama", "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
        "rope_theta": 10000.0, "eos_token_id": 2
    }))
    .unwrap()
}

fn first_token_probability(model: &CausalLm<Cpu>, prompt: &[u32], token: u32) -> f32 {
    let logits = model.forward(&[prompt]).unwrap();
    let [_, len, vocab] = logits.dims();
    let last = logits.narrow(1, len - 1, 1).reshape([vocab]);
    softmax(last, 0).into_data().convert::<f32>().into_vec::<f32>().unwrap()[token as usize]
}

#[test]
fn grpo_raises_the_probability_of_the_rewarded_first_token() {
    sign_test(&RunConfig::default());
}

#[test]
fn ppo_with_a_critic_raises_the_probability_of_the_rewarded_first_token() {
    let mut config = RunConfig::default();
    config.algorithm.advantage.estimator = AdvantageEstimator::Gae;
    config.algorithm.critic.lr = 1e-2;
    let stats = sign_test(&config);
    let (first, last) = (&stats[0], &stats[stats.len() - 1]);
    eprintln!(
        "value mean {:?} -> {:?}, value loss {:?} -> {:?}",
        first.value_mean, last.value_mean, first.value_loss, last.value_loss
    );
    // The zero-initialised head starts every value at 0 and learns the (positive) rewards.
    assert_eq!(first.value_mean, Some(0.0));
    assert!(last.value_mean.unwrap() > 0.05, "the critic's values stayed at {:?}", last.value_mean);
    assert!(stats.iter().all(|s| s.value_loss.is_some_and(f64::is_finite) && s.critic_grad_norm.is_some()));
}

/// Eight rollout/update rounds on four prompts, reward 1 when the first response token is the chosen
/// one; asserts that its probability and the mean reward rise, and returns each update's stats.
fn sign_test(base: &RunConfig) -> Vec<StepStats> {
    let device = Default::default();
    let model = CausalLm::<Cpu>::random(tiny_config(61), 3, &device);
    let prompts: Vec<Vec<u32>> = vec![vec![5, 9, 13], vec![7, 1, 30, 4], vec![11, 12], vec![40, 41, 42]];
    // The chosen token: the initially most likely first token of the first prompt (not a stop token).
    let probs: Vec<f32> = (0..61).map(|t| first_token_probability(&model, &prompts[0], t)).collect();
    let chosen = (3..61u32).max_by(|a, b| probs[*a as usize].total_cmp(&probs[*b as usize])).unwrap();
    let p0: Vec<f32> = prompts.iter().map(|p| first_token_probability(&model, p, chosen)).collect();

    let mut config = base.clone();
    config.rollout.group_size = 32;
    config.optimizer.lr = 1e-2;
    config.optimizer.grad_clip = 1.0;
    let weights: HashMap<_, _> = model.to_host_weights().into_iter().collect();
    let mut learner = Learner::new(&config, model.config.clone(), weights, None, None).unwrap();
    let mut engine = Engine::new(model, 0, EngineConfig::default());
    let mut mean_rewards = vec![];
    let mut all_stats = vec![];
    for step in 0..8u64 {
        let requests = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| Request {
                id: format!("{i}"),
                prompt: p.clone(),
                params: RequestParams {
                    sampling: SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0 },
                    max_new_tokens: 2,
                    stop_token_ids: vec![],
                    stop_strings: vec![],
                    seed: step * 100 + i as u64,
                    n: 32,
                },
            })
            .collect();
        let completions = engine.generate(requests).unwrap();
        let samples: Vec<TrainSample> = completions
            .iter()
            .map(|c| {
                let i: usize = c.request_id.parse().unwrap();
                TrainSample {
                    group: i as u64,
                    prompt: prompts[i].clone(),
                    response: c.tokens.clone(),
                    rollout_log_probs: c.log_probs.clone(),
                    reward: if c.tokens[0] == chosen { 1.0 } else { 0.0 },
                }
            })
            .collect();
        mean_rewards.push(samples.iter().map(|s| s.reward).sum::<f32>() / samples.len() as f32);
        let stats = learner.train_on(&samples).unwrap();
        assert!(stats.logprob_mismatch < 1e-4, "actor and learner log-probs differ by {}", stats.logprob_mismatch);
        all_stats.push(stats);
        engine.set_weights(&WeightUpdate::new(step + 1, learner.host_weights())).unwrap();
    }
    let trained = engine.model();
    let p1: Vec<f32> = prompts.iter().map(|p| first_token_probability(trained, p, chosen)).collect();
    eprintln!("p(chosen) before {p0:?} after {p1:?}; mean reward per step {mean_rewards:?}");
    // The prompt whose groups saw the chosen token learns it; the others move through shared weights.
    assert!(p1[0] > 2.0 * p0[0], "p(chosen | prompt 0) only went from {} to {}", p0[0], p1[0]);
    let mean = |p: &[f32]| p.iter().sum::<f32>() / p.len() as f32;
    assert!(mean(&p1) > mean(&p0), "mean p(chosen) went from {} to {}", mean(&p0), mean(&p1));
    let (first, last) = (mean(&mean_rewards[..2]), mean(&mean_rewards[mean_rewards.len() - 2..]));
    assert!(last > first, "mean reward went from {first} to {last} ({mean_rewards:?})");
    all_stats
}

/// A reward that varies with what a random model writes: the fraction of even token ids.
struct EvenTokens;

impl Reward for EvenTokens {
    fn score(&self, _problem: &Problem, response: &[u32]) -> anyhow::Result<Score> {
        let even = response.iter().filter(|t| *t % 2 == 0).count() as f32 / response.len().max(1) as f32;
        Ok(Score { reward: even, correct: even > 0.5, no_answer: false })
    }
}

/// A tiny random model with the real tokenizer (the prompts go through its chat template).
fn tiny_model_dir(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/smollm2-135m-instruct");
    assert!(root.join("tokenizer.json").exists(), "run scripts/setup-model.sh first (the test borrows SmolLM2's tokenizer)");
    let mut config = tiny_config(49152);
    config.eos_token_ids = vec![2];
    CausalLm::<Cpu>::random(config, 9, &Default::default()).save(dir, SaveDtype::F32).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(root.join(f), dir.join(f)).unwrap();
    }
}

fn run(config: &RunConfig, resume: Option<&Path>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = TrainOptions { resume: resume.map(Path::to_path_buf), overwrite: false, verbose: false, ..Default::default() };
    rt.block_on(train_with_reward(config.clone(), options, CancellationToken::new(), Arc::new(EvenTokens))).unwrap();
}

fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_resumed_run_continues_exactly() {
    resumes_exactly(AdvantageEstimator::Grpo);
}

#[test]
fn a_resumed_run_with_a_critic_continues_exactly() {
    resumes_exactly(AdvantageEstimator::Gae);
}

/// A 3-step run of a tiny model (saved under `tmp/model`) into `tmp/straight`, without evaluation.
fn tiny_run(tmp: &Path) -> RunConfig {
    let model_dir = tmp.join("model");
    tiny_model_dir(&model_dir);
    let mut config = RunConfig::default();
    config.model.path = model_dir;
    config.rollout.group_size = 4;
    config.rollout.max_new_tokens = 6;
    config.data.prompts_per_step = 2;
    config.optimizer.lr = 1e-3;
    config.runtime.eval = false;
    config.runtime.steps = 3;
    config.runtime.run_dir = tmp.join("straight");
    config
}

fn resumes_exactly(estimator: AdvantageEstimator) {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_run(tmp.path());
    config.algorithm.advantage.estimator = estimator;
    config.algorithm.critic.lr = 1e-3;
    run(&config, None);

    let mut first = config.clone();
    first.runtime.steps = 2;
    first.runtime.run_dir = tmp.path().join("resumed");
    run(&first, None);
    let mut second = config.clone();
    second.runtime.run_dir = tmp.path().join("resumed");
    run(&second, Some(&tmp.path().join("resumed/checkpoints/step-2")));

    let (a, b) = (metrics(&tmp.path().join("straight")), metrics(&tmp.path().join("resumed")));
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        for key in ["step", "reward_mean", "response_len_mean"] {
            assert_eq!(x[key], y[key], "{key} at step {}", x["step"]);
        }
        for key in ["loss", "value_loss"] {
            let (lx, ly) = (x[key].as_f64(), y[key].as_f64());
            assert_eq!(lx.is_some(), estimator == AdvantageEstimator::Gae || key == "loss", "{key}: {lx:?}");
            if let (Some(lx), Some(ly)) = (lx, ly) {
                assert!((lx - ly).abs() <= 1e-6 * (1.0 + lx.abs()), "{key} {lx} vs {ly} at step {}", x["step"]);
            }
        }
    }
    let wa = same_final_weights(tmp.path());
    // The weights did move (a test of resume on a run that learns nothing would prove nothing).
    let w0 = read_weights(&config.model.path).unwrap();
    let moved = w0.iter().any(|(k, t)| t.data.iter().zip(&wa[k].data).any(|(x, y)| x != y));
    assert!(moved, "three steps left every weight unchanged");
}

/// Async mode: a run checkpointed every step and resumed from its step-2 checkpoint reproduces the
/// uninterrupted run's third step: batch 3 is sampled with weights 1 (one step off-policy) in both.
#[test]
fn an_async_run_resumed_mid_run_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_run(tmp.path());
    config.runtime.mode = Mode::Async;
    config.runtime.checkpoint_every = 1;
    run(&config, None);
    let checkpoint = tmp.path().join("straight/checkpoints/step-2");
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(checkpoint.join("trainer_state.json")).unwrap()).unwrap();
    assert_eq!(state["actor_weight_version"], 1, "{state}");

    let mut resumed = config.clone();
    resumed.runtime.run_dir = tmp.path().join("resumed");
    run(&resumed, Some(&checkpoint));
    let (a, b) = (metrics(&tmp.path().join("straight")), metrics(&tmp.path().join("resumed")));
    assert_eq!((a.len(), b.len()), (3, 1));
    let (x, y) = (&a[2], &b[0]);
    for key in ["step", "reward_mean", "response_len_mean", "staleness_max"] {
        assert_eq!(x[key], y[key], "{key}");
    }
    let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
    assert!((lx - ly).abs() <= 1e-6 * (1.0 + lx.abs()), "loss {lx} vs {ly}");
    same_final_weights(tmp.path());
}

/// Asserts that the straight and the resumed run end with the same weights (within 1e-6); returns them.
fn same_final_weights(tmp: &Path) -> HashMap<String, rlvr_common::checkpoint::HostTensor> {
    let wa = read_weights(&tmp.join("straight/checkpoints/step-3")).unwrap();
    let wb = read_weights(&tmp.join("resumed/checkpoints/step-3")).unwrap();
    assert_eq!(wa.len(), wb.len());
    for (k, ta) in &wa {
        let diff = ta.data.iter().zip(&wb[k].data).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-6, "{k} differs by {diff}");
    }
    wa
}

/// `algorithm.critic.warmup_steps`: the first batches train only the critic; the policy's weights do
/// not move until the warm-up is over.
#[test]
fn critic_warmup_trains_only_the_critic_first() {
    let model = CausalLm::<Cpu>::random(tiny_config(61), 5, &Default::default());
    let mut config = RunConfig::default();
    config.algorithm.advantage.estimator = AdvantageEstimator::Gae;
    config.algorithm.critic.lr = 1e-2;
    config.algorithm.critic.warmup_steps = 2;
    config.optimizer.lr = 1e-2;
    let initial: HashMap<_, _> = model.to_host_weights().into_iter().collect();
    let mut learner = Learner::new(&config, model.config.clone(), initial.clone(), None, None).unwrap();
    let samples: Vec<TrainSample> = (0..8u32)
        .map(|i| TrainSample {
            group: u64::from(i / 4),
            prompt: vec![5, 9, 13 + i],
            response: vec![20 + i, 21, 22 + i % 3],
            rollout_log_probs: vec![-1.0; 3],
            reward: (i % 2) as f32,
        })
        .collect();
    let unchanged = |learner: &Learner| learner.host_weights().iter().all(|(k, t)| t.data == initial[k].data);
    let mut value_means = vec![];
    for batch in 0..3 {
        let stats = learner.train_on(&samples).unwrap();
        value_means.push(stats.value_mean.unwrap());
        assert_eq!(stats.optimizer_steps, usize::from(batch >= 2), "batch {batch}");
        assert_eq!(unchanged(&learner), batch < 2, "batch {batch}: the policy must move only after the warm-up");
        assert!(stats.critic_grad_norm.is_some(), "batch {batch}: the critic trains from the start");
    }
    assert_eq!(value_means[0], 0.0);
    assert!(value_means[2] != 0.0, "the critic did not move during the warm-up: {value_means:?}");
}

/// A non-finite gradient (here from non-finite rewards, which make the advantages NaN) skips that
/// mini-batch's update whole: no error, the weights and optimiser state as they were, the skip
/// counted; the next batch trains as usual. With a critic, its update is skipped the same way.
#[test]
fn a_non_finite_gradient_skips_the_update_and_is_counted() {
    for estimator in [AdvantageEstimator::Grpo, AdvantageEstimator::Gae] {
        let device = Default::default();
        let model = CausalLm::<Cpu>::random(tiny_config(61), 5, &device);
        let mut config = RunConfig::default();
        config.algorithm.advantage.estimator = estimator;
        config.algorithm.mini_batches = 2;
        config.optimizer.grad_clip = 1.0;
        let weights: HashMap<_, _> = model.to_host_weights().into_iter().collect();
        let mut learner = Learner::new(&config, model.config.clone(), weights.clone(), None, None).unwrap();
        let sample = |group: u64, response: Vec<u32>, reward: f32| TrainSample {
            group,
            prompt: vec![5, 9, 13],
            rollout_log_probs: vec![-1.0; response.len()],
            response,
            reward,
        };
        // Every reward non-finite, so that every mini-batch (however the batch is split) sees it.
        let poisoned: Vec<TrainSample> = (0..8u32)
            .map(|i| sample(u64::from(i / 4), vec![3 + i, 4], if i % 2 == 0 { f32::NAN } else { f32::INFINITY }))
            .collect();
        let stats = learner.train_on(&poisoned).expect("a non-finite gradient does not end the run");
        assert_eq!(stats.optimizer_steps, 0, "{estimator:?}: {stats:?}");
        assert_eq!(stats.skipped_updates, 2, "{estimator:?}: {stats:?}");
        if estimator == AdvantageEstimator::Gae {
            assert_eq!(stats.critic_skipped_updates, 2, "{stats:?}");
        }
        let after: HashMap<_, _> = learner.host_weights().into_iter().collect();
        for (name, w) in &weights {
            assert_eq!(w.data, after[name].data, "{estimator:?}: {name} changed after skipped updates");
        }
        // The skip is in the metrics (null grad norm, the counter) and the next batch trains.
        let metrics = serde_json::to_value(stats).unwrap();
        assert_eq!(metrics["skipped_updates"], 2);
        let clean: Vec<TrainSample> = (0..8u32).map(|i| sample(u64::from(i / 4), vec![3 + i, 4], (i % 2) as f32)).collect();
        let stats = learner.train_on(&clean).unwrap();
        assert_eq!((stats.optimizer_steps, stats.skipped_updates), (2, 0), "{estimator:?}: {stats:?}");
        let trained: HashMap<_, _> = learner.host_weights().into_iter().collect();
        assert!(weights.iter().any(|(name, w)| w.data != trained[name].data), "{estimator:?}: nothing trained");
    }
}

fn try_run(config: &RunConfig, resume: Option<&Path>, overwrite: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = TrainOptions { resume: resume.map(Path::to_path_buf), overwrite, verbose: false, ..Default::default() };
    rt.block_on(train_with_reward(config.clone(), options, CancellationToken::new(), Arc::new(EvenTokens))).map(|_| ())
}

/// A run directory holds one run: starting another there is refused unless it resumes the run or
/// replaces it (`--overwrite`); resuming with another model, data, algorithm or seed is refused, naming
/// each difference; raising `runtime.steps` is not a difference.
#[test]
fn a_run_directory_is_never_silently_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_run(tmp.path());
    config.runtime.steps = 1;
    config.runtime.checkpoint_every = 1;
    config.runtime.run_dir = tmp.path().join("run");
    try_run(&config, None, false).unwrap();
    let checkpoint = config.runtime.run_dir.join("checkpoints/step-1");
    assert!(checkpoint.join("trainer_state.json").exists());

    let err = format!("{:#}", try_run(&config, None, false).unwrap_err());
    assert!(err.contains("already holds a run") && err.contains("--resume") && err.contains("--overwrite"), "{err}");
    assert_eq!(metrics(&config.runtime.run_dir).len(), 1, "the refused start changed the run");

    // Resuming with a changed algorithm and seed names both; with more steps only, it continues.
    let mut changed = config.clone();
    changed.runtime.steps = 2;
    changed.runtime.seed += 1;
    changed.algorithm.mini_batches += 1;
    let err = format!("{:#}", try_run(&changed, Some(&checkpoint), false).unwrap_err());
    assert!(err.contains("runtime.seed: 0 -> 1") && err.contains("algorithm.mini_batches: 1 -> 2"), "{err}");
    let mut more = config.clone();
    more.runtime.steps = 2;
    try_run(&more, Some(&checkpoint), false).unwrap();
    assert_eq!(metrics(&config.runtime.run_dir).len(), 2);

    // --overwrite replaces it: its checkpoints and records go, a fresh one-step run is there.
    try_run(&config, None, true).unwrap();
    assert_eq!(metrics(&config.runtime.run_dir).len(), 1);
    assert!(!config.runtime.run_dir.join("checkpoints/step-2").exists(), "an old checkpoint survived --overwrite");
}
