//! The engine on a tiny random model: determinism, batch composition not changing a request's tokens,
//! the recorded log-probs agreeing with a learner-style full forward, groups, stop conditions, aborts
//! and weight swaps.

use burn::tensor::activation::log_softmax;
use rlvr_actor::engine::{Completion, Engine, EngineConfig, EngineError, Request, RequestParams};
use rlvr_actor::sampling::SamplingParams;
use rlvr_common::model::{CausalLm, Cpu, ModelConfig};
use rlvr_common::rollout::FinishReason;
use rlvr_common::weights::WeightUpdate;
use serde_json::json;

const VOCAB: usize = 97;

fn model_with(seed: u64, embedding_scale: f32) -> CausalLm<Cpu> {
    let config = ModelConfig::from_json(json!({
        "model_type": "llama", "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
        "rope_theta": 10000.0
    }))
    .unwrap();
    // `random`'s weights give near-uniform next-token distributions; scaled embeddings sharpen them (a
    // large scale keeps greedy decoding away from near-ties, a moderate one keeps sampling varied).
    let m = CausalLm::<Cpu>::random(config.clone(), seed, &Default::default());
    let weights = m
        .to_host_weights()
        .into_iter()
        .map(|(k, mut t)| {
            if k.contains("embed_tokens") {
                t.data.iter_mut().for_each(|x| *x *= embedding_scale);
            }
            (k, t)
        })
        .collect();
    CausalLm::from_weights(config, weights, &Default::default()).unwrap()
}

/// Sharp distributions, for greedy decoding.
fn model(seed: u64) -> CausalLm<Cpu> {
    model_with(seed, 50.0)
}

/// Varied distributions, for sampling.
fn soft_model(seed: u64) -> CausalLm<Cpu> {
    model_with(seed, 8.0)
}

/// Prompts of different lengths.
fn prompts(count: usize) -> Vec<Vec<u32>> {
    (0..count).map(|i| (0..3 + (i * 5) % 11).map(|t| ((i * 31 + t * 7 + 1) % VOCAB) as u32).collect()).collect()
}

fn request(id: usize, prompt: &[u32], params: &RequestParams) -> Request {
    Request { id: format!("r{id}"), prompt: prompt.to_vec(), params: params.clone() }
}

fn run(model: &CausalLm<Cpu>, rows: usize, requests: Vec<Request>) -> Vec<Completion> {
    let mut engine = Engine::new(model.clone(), 0, EngineConfig { max_batch_rows: rows, max_prefill_tokens: 64 });
    engine.generate(requests).unwrap()
}

fn sampled(temperature: f32, max_new_tokens: usize, seed: u64) -> RequestParams {
    RequestParams {
        sampling: SamplingParams { temperature, top_p: 0.95, top_k: 40, min_p: 0.0 },
        max_new_tokens,
        seed,
        ..Default::default()
    }
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let m = soft_model(1);
    let p = prompts(6);
    let reqs = |seed| p.iter().enumerate().map(|(i, p)| request(i, p, &sampled(1.0, 12, seed + i as u64))).collect();
    let a = run(&m, 6, reqs(3));
    let b = run(&m, 6, reqs(3));
    let strip = |v: &[Completion]| v.iter().map(|c| (c.tokens.clone(), c.log_probs.clone(), c.finish_reason)).collect::<Vec<_>>();
    assert_eq!(strip(&a), strip(&b));
    let c = run(&m, 6, reqs(1000));
    assert_ne!(strip(&a), strip(&c));
}

#[test]
fn batched_greedy_equals_one_at_a_time() {
    let m = model(2);
    let p = prompts(9);
    let params = RequestParams { sampling: SamplingParams::greedy(), max_new_tokens: 20, stop_token_ids: vec![5], ..Default::default() };
    // 9 requests through 4 rows: requests join as others finish (continuous batching).
    let batched = run(&m, 4, p.iter().enumerate().map(|(i, p)| request(i, p, &params)).collect());
    assert_eq!(batched.len(), 9);
    for (i, prompt) in p.iter().enumerate() {
        let alone = run(&m, 1, vec![request(i, prompt, &params)]);
        assert_eq!(batched[i].tokens, alone[0].tokens, "request {i}");
        assert_eq!(batched[i].finish_reason, alone[0].finish_reason, "request {i}");
        let worst = batched[i].log_probs.iter().zip(&alone[0].log_probs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst <= 1e-5, "request {i}: log-probs differ by {worst}");
    }
}

/// The learner's view: a full forward of prompt + response, logits divided by the temperature.
fn learner_log_probs(m: &CausalLm<Cpu>, prompt: &[u32], response: &[u32], temperature: f32) -> Vec<f32> {
    let full: Vec<u32> = prompt.iter().chain(response).copied().collect();
    let logits = m.forward(&[&full]).unwrap().div_scalar(temperature);
    let lp: Vec<f32> = log_softmax(logits, 2).into_data().convert::<f32>().into_vec().unwrap();
    (0..response.len()).map(|t| lp[(prompt.len() - 1 + t) * VOCAB + response[t] as usize]).collect()
}

#[test]
fn sampled_log_probs_equal_the_learner_forward_at_batch_1_and_16() {
    let m = soft_model(3);
    let p = prompts(16);
    for batch in [1, 16] {
        let reqs = p[..batch].iter().enumerate().map(|(i, p)| request(i, p, &sampled(0.7, 24, 7 + i as u64))).collect();
        let out = run(&m, batch, reqs);
        let mut worst = 0.0f32;
        for (c, prompt) in out.iter().zip(&p) {
            let want = learner_log_probs(&m, prompt, &c.tokens, 0.7);
            for (a, b) in c.log_probs.iter().zip(&want) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst <= 1e-4, "batch {batch}: actor and learner log-probs differ by {worst}");
    }
}

#[test]
fn a_group_shares_one_prefill_and_its_samples_differ() {
    let m = soft_model(4);
    let p = prompts(3);
    let params = RequestParams { n: 4, ..sampled(1.0, 10, 11) };
    let out = run(&m, 8, p.iter().enumerate().map(|(i, p)| request(i, p, &params)).collect());
    assert_eq!(out.len(), 12);
    for (r, group) in out.chunks(4).enumerate() {
        assert!(group.iter().enumerate().all(|(i, c)| c.sample_index == i && c.request_id == format!("r{r}")));
        let distinct: std::collections::HashSet<_> = group.iter().map(|c| &c.tokens).collect();
        assert!(distinct.len() > 1, "the samples of a group draw independent streams");
        // Each sample's log-probs are those of its own tokens.
        for c in group {
            let want = learner_log_probs(&m, &p[r], &c.tokens, 1.0);
            assert!(c.log_probs.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-4));
        }
    }
    // Sample 0 of a group is the request with n = 1 and the same seed.
    let single = run(&m, 1, vec![request(0, &p[0], &RequestParams { n: 1, ..params })]);
    assert_eq!(single[0].tokens, out[0].tokens);
}

#[test]
fn stop_tokens_stop_strings_and_length() {
    let m = model(5);
    let p = prompts(1);
    let greedy = RequestParams { sampling: SamplingParams::greedy(), max_new_tokens: 12, ..Default::default() };
    let free = run(&m, 1, vec![request(0, &p[0], &greedy)]).remove(0);
    assert_eq!((free.tokens.len(), free.finish_reason), (12, FinishReason::Length));
    // Stop at the fourth token's id.
    let stop = free.tokens[3];
    let first = free.tokens.iter().position(|&t| t == stop).unwrap();
    let out = run(&m, 1, vec![request(0, &p[0], &RequestParams { stop_token_ids: vec![stop], ..greedy.clone() })]).remove(0);
    assert_eq!(out.tokens, free.tokens[..=first]);
    assert_eq!(out.finish_reason, FinishReason::Stop);
    // A stop string over the text of tokens: token t renders as "<t>".
    let detok = std::sync::Arc::new(|ids: &[u32]| ids.iter().map(|t| format!("<{t}>")).collect::<String>());
    let text = format!("<{}><{}>", free.tokens[4], free.tokens[5]);
    let mut engine = Engine::new(m.clone(), 0, EngineConfig::default()).with_detokenizer(detok);
    let params = RequestParams { stop_strings: vec![text.clone()], ..greedy.clone() };
    let out = engine.generate(vec![request(0, &p[0], &params)]).unwrap().remove(0);
    let rendered: String = out.tokens.iter().map(|t| format!("<{t}>")).collect();
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert!(rendered.ends_with(&text) && out.tokens.len() <= 6, "{rendered}");
    // Zero new tokens is an immediate, empty completion.
    let out = run(&m, 1, vec![request(0, &p[0], &RequestParams { max_new_tokens: 0, ..greedy })]).remove(0);
    assert_eq!((out.tokens.len(), out.finish_reason), (0, FinishReason::Length));
}

#[test]
fn abort_keeps_what_was_sampled() {
    let m = soft_model(6);
    let p = prompts(3);
    let mut engine = Engine::new(m, 0, EngineConfig { max_batch_rows: 2, ..Default::default() });
    for (i, prompt) in p.iter().enumerate() {
        engine.add(request(i, prompt, &sampled(1.0, 50, i as u64))).unwrap();
    }
    for _ in 0..3 {
        assert!(engine.step().unwrap().is_empty());
    }
    let out = engine.abort_all();
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|c| c.finish_reason == FinishReason::Abort));
    assert_eq!(out.iter().map(|c| c.tokens.len()).collect::<Vec<_>>(), vec![4, 4, 0], "two ran four steps, one waited");
    assert!(engine.is_idle());
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let mut engine = Engine::new(model(7), 0, EngineConfig { max_batch_rows: 4, ..Default::default() });
    let bad = |params: RequestParams, prompt: Vec<u32>| Request { id: "x".into(), prompt, params };
    let err = |e: Result<(), EngineError>| e.unwrap_err().to_string();
    assert!(err(engine.add(bad(RequestParams { n: 5, ..Default::default() }, vec![1]))).contains("4 rows"));
    assert!(err(engine.add(bad(RequestParams::default(), vec![]))).contains("no tokens"));
    assert!(err(engine.add(bad(RequestParams::default(), vec![500]))).contains("500"));
    let hot = RequestParams { sampling: SamplingParams { top_p: 0.0, ..Default::default() }, ..Default::default() };
    assert!(err(engine.add(bad(hot, vec![1]))).contains("top_p"));
    let stops = RequestParams { stop_strings: vec!["x".into()], ..Default::default() };
    assert!(err(engine.add(bad(stops, vec![1]))).contains("detokenizer"));
}

#[test]
fn weights_swap_between_batches_and_bad_checksums_are_refused() {
    let (a, b) = (model(8), model(9));
    let p = prompts(1);
    let greedy = RequestParams { sampling: SamplingParams::greedy(), max_new_tokens: 8, ..Default::default() };
    let mut engine = Engine::new(a, 0, EngineConfig::default());
    let with_b = run(&b, 1, vec![request(0, &p[0], &greedy)]);

    let mut tampered = WeightUpdate::new(1, b.to_host_weights());
    tampered.checksum = "0".repeat(64);
    assert!(matches!(engine.set_weights(&tampered), Err(EngineError::Weights(_))));
    assert_eq!(engine.weight_version(), 0, "refused weights leave the old ones");

    engine.add(request(0, &p[0], &greedy)).unwrap();
    engine.step().unwrap();
    let update = WeightUpdate::new(1, b.to_host_weights());
    assert!(matches!(engine.set_weights(&update), Err(EngineError::Busy(1))), "never mid-batch");
    while !engine.is_idle() {
        engine.step().unwrap();
    }
    engine.set_weights(&update).unwrap();
    let out = engine.generate(vec![request(0, &p[0], &greedy)]).unwrap();
    assert_eq!(out[0].weight_version, 1);
    assert_eq!(out[0].tokens, with_b[0].tokens);
}
