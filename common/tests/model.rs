//! The model's entry points agree with each other: incremental decoding with the KV cache equals the
//! full forward for a batch of different lengths, log-probs equal log-softmax of logits, save then
//! load is the identity, and bad checkpoints are refused with the key named.

use burn::tensor::{Tensor, activation::log_softmax};
use rlvr_common::checkpoint::SaveDtype;
use rlvr_common::model::{CausalLm, Cpu, CpuAutodiff, Entropy, ModelConfig};
use serde_json::json;

fn config(model_type: &str, tied: bool) -> ModelConfig {
    ModelConfig::from_json(json!({
        "model_type": model_type, "vocab_size": 61, "hidden_size": 32, "intermediate_size": 40,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "tie_word_embeddings": tied,
        "rope_theta": 1000.0
    }))
    .unwrap()
}

fn to_vec<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Rows of different lengths (the longest first and last, a single-token one in between).
fn prompts() -> Vec<Vec<u32>> {
    vec![vec![5, 9, 13, 2, 7, 30, 1], vec![40], vec![3, 3, 17, 60], vec![11, 12, 13, 14, 15, 16, 17, 18]]
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    let device = Default::default();
    for (arch, tied) in [("llama", true), ("qwen2", false), ("qwen3", true)] {
        let model = CausalLm::<Cpu>::random(config(arch, tied), 7, &device);
        let prompts = prompts();
        // Continue each prompt with a few fixed tokens, decoded one step at a time.
        let continuation: Vec<Vec<u32>> = (0..prompts.len()).map(|r| (0..5).map(|i| (r * 7 + i * 11) as u32 % 61).collect()).collect();
        let mut cache = model.new_cache();
        let rows: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let mut step_logits = vec![to_vec(model.prefill(&rows, &mut cache).unwrap())];
        for step in 0..5 {
            let tokens: Vec<u32> = continuation.iter().map(|c| c[step]).collect();
            step_logits.push(to_vec(model.decode(&tokens, &mut cache).unwrap()));
        }
        // The full forward of each whole sequence, one at a time (no padding at all).
        let vocab = 61;
        let mut worst = 0.0f32;
        for (r, (p, c)) in prompts.iter().zip(&continuation).enumerate() {
            let full: Vec<u32> = p.iter().chain(c).copied().collect();
            let logits = to_vec(model.forward(&[&full]).unwrap());
            for (step, sl) in step_logits.iter().enumerate() {
                let pos = p.len() - 1 + step;
                let want = &logits[pos * vocab..(pos + 1) * vocab];
                let got = &sl[r * vocab..(r + 1) * vocab];
                worst = worst.max(max_abs_diff(want, got));
            }
        }
        assert!(worst <= 1e-5, "{arch}: cached decoding differs from the full forward by {worst}");
        assert_eq!(cache.lengths(), &[12, 6, 9, 13]);
    }
}

#[test]
fn padded_batch_forward_equals_one_at_a_time() {
    let device = Default::default();
    let model = CausalLm::<Cpu>::random(config("llama", false), 3, &device);
    let prompts = prompts();
    let rows: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let batch = to_vec(model.forward(&rows).unwrap());
    let (seq, vocab) = (8, 61);
    for (r, p) in prompts.iter().enumerate() {
        let alone = to_vec(model.forward(&[p]).unwrap());
        let got = &batch[r * seq * vocab..(r * seq + p.len()) * vocab];
        assert!(max_abs_diff(got, &alone) <= 1e-5, "row {r}");
    }
}

#[test]
fn select_rows_fans_out_a_prefill() {
    let device = Default::default();
    let model = CausalLm::<Cpu>::random(config("qwen3", false), 5, &device);
    let prompts = prompts();
    let rows: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let mut cache = model.new_cache();
    model.prefill(&rows, &mut cache).unwrap();
    // Rows 2 and 0, twice each: as if sampling a group of two from each prompt.
    cache.select_rows(&[2, 2, 0, 0]);
    let got = to_vec(model.decode(&[1, 2, 3, 4], &mut cache).unwrap());
    let vocab = 61;
    for (row, (prompt, tok)) in [(2, 1), (2, 2), (0, 3), (0, 4)].into_iter().enumerate() {
        let full: Vec<u32> = prompts[prompt].iter().copied().chain([tok]).collect();
        let logits = to_vec(model.forward(&[&full]).unwrap());
        let want = &logits[(full.len() - 1) * vocab..full.len() * vocab];
        assert!(max_abs_diff(want, &got[row * vocab..(row + 1) * vocab]) <= 1e-5, "row {row}");
    }
}

#[test]
fn token_log_probs_are_log_softmax_of_the_next_token() {
    let device = Default::default();
    let model = CausalLm::<Cpu>::random(config("qwen2", true), 11, &device);
    let prompts = prompts();
    let rows: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let lp = to_vec(model.token_log_probs(&rows).unwrap());
    let (seq, vocab) = (8, 61);
    for (r, p) in prompts.iter().enumerate() {
        let logits = log_softmax(model.forward(&[p]).unwrap(), 2);
        let logits = to_vec(logits);
        for t in 0..seq - 1 {
            let want = if t + 1 < p.len() { logits[t * vocab + p[t + 1] as usize] } else { 0.0 };
            let got = lp[r * (seq - 1) + t];
            assert!((want - got).abs() <= 1e-5, "row {r} t {t}: {got} vs {want}");
        }
    }
}

#[test]
fn save_then_load_is_the_identity() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    for (arch, tied) in [("llama", true), ("qwen2", false), ("qwen3", false)] {
        let model = CausalLm::<Cpu>::random(config(arch, tied), 1, &device);
        model.save(dir.path(), SaveDtype::F32).unwrap();
        let back = CausalLm::<Cpu>::load(dir.path(), &device).unwrap();
        assert_eq!(back.config.architecture, model.config.architecture);
        assert_eq!(back.to_host_weights(), model.to_host_weights(), "{arch}");
        let rows: [&[u32]; 1] = [&[1, 2, 3]];
        let (a, b) = (to_vec(model.forward(&rows).unwrap()), to_vec(back.forward(&rows).unwrap()));
        assert_eq!(a, b);
    }
}

#[test]
fn bad_checkpoints_name_the_weight() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let model = CausalLm::<Cpu>::random(config("llama", false), 1, &device);
    let mut weights: std::collections::HashMap<_, _> = model.to_host_weights().into_iter().collect();
    let w = weights.remove("model.layers.1.mlp.up_proj.weight").unwrap();
    let err = CausalLm::<Cpu>::from_weights(config("llama", false), weights.clone(), &device).unwrap_err();
    assert!(err.to_string().contains("model.layers.1.mlp.up_proj.weight"), "{err}");
    let mut wrong = w.clone();
    wrong.shape.reverse();
    weights.insert("model.layers.1.mlp.up_proj.weight".into(), wrong);
    let err = CausalLm::<Cpu>::from_weights(config("llama", false), weights.clone(), &device).unwrap_err();
    assert!(err.to_string().contains("shape"), "{err}");
    weights.insert("model.layers.1.mlp.up_proj.weight".into(), w.clone());
    weights.insert("model.layers.9.extra.weight".into(), w);
    let err = CausalLm::<Cpu>::from_weights(config("llama", false), weights, &device).unwrap_err();
    assert!(err.to_string().contains("model.layers.9.extra.weight"), "{err}");
    drop(dir);
    let err = model.decode(&[1], &mut model.new_cache()).unwrap_err();
    assert!(err.to_string().contains("0 rows"), "{err}");
    let err = model.forward(&[&[1, 99]]).unwrap_err();
    assert!(err.to_string().contains("token id 99"), "{err}");
}

#[test]
fn response_log_probs_equal_the_full_forward_at_a_temperature() {
    let device = Default::default();
    let model = CausalLm::<Cpu>::random(config("llama", true), 5, &device);
    let seqs = prompts();
    // Prompt lengths leaving responses of different lengths (the single-token row cannot have one).
    let seqs: Vec<Vec<u32>> = seqs.into_iter().filter(|s| s.len() > 1).collect();
    let prompt_lens = [3, 1, 5];
    let rows: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let temperature = 0.7;
    let (lp, entropy) = model.response_log_probs(&rows, &prompt_lens, temperature, Entropy::Metric).unwrap();
    let longest = seqs.iter().zip(prompt_lens).map(|(s, p)| s.len() - p).max().unwrap();
    assert_eq!(lp.dims(), [3, longest]);
    let (lp, entropy) = (to_vec(lp), to_vec(entropy.unwrap()));
    let vocab = 61;
    for (b, s) in seqs.iter().enumerate() {
        // The naive path: the whole sequence's logits, scaled, log-softmaxed.
        let logp = to_vec(log_softmax(model.forward(&[s]).unwrap().div_scalar(temperature), 2));
        for t in 0..longest {
            let (want_lp, want_h) = if prompt_lens[b] + t < s.len() {
                let pos = prompt_lens[b] - 1 + t;
                let row = &logp[pos * vocab..(pos + 1) * vocab];
                (row[s[pos + 1] as usize], -row.iter().map(|l| l.exp() * l).sum::<f32>())
            } else {
                (0.0, 0.0)
            };
            assert!((lp[b * longest + t] - want_lp).abs() < 1e-5, "row {b} t {t}");
            assert!((entropy[b * longest + t] - want_h).abs() < 1e-4, "row {b} t {t} entropy");
        }
    }
    assert!(model.response_log_probs(&rows, &[3, 7, 5], 1.0, Entropy::None).is_err(), "a prompt filling its row");
}

#[test]
fn entropy_as_a_metric_stays_out_of_the_graph() {
    let device = Default::default();
    let model = CausalLm::<CpuAutodiff>::random(config("llama", true), 5, &device);
    let seqs = [vec![1u32, 2, 3, 4, 5], vec![6, 7, 8, 9, 10]];
    let rows: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let run = |mode| {
        let (lp, entropy) = model.response_log_probs(&rows, &[2, 3], 1.0, mode).unwrap();
        (lp, entropy.unwrap())
    };
    // The gradient of (0 x log-probs + entropy) with respect to the final norm's weight: zero when the
    // entropy is outside the graph.
    let entropy_grad = |mode| {
        let (lp, entropy) = run(mode);
        let grads = lp.sum().mul_scalar(0.0).add(entropy.clone().sum()).backward();
        let grad = model.model.norm.weight.grad(&grads).expect("the final norm is in the graph");
        (to_vec(entropy.inner()), to_vec(grad).iter().map(|g| g.abs()).sum::<f32>())
    };
    let (metric, metric_grad) = entropy_grad(Entropy::Metric);
    let (tracked, tracked_grad) = entropy_grad(Entropy::Differentiable);
    assert_eq!(metric_grad, 0.0, "Entropy::Metric is detached");
    assert!(tracked_grad > 1e-6, "Entropy::Differentiable is tracked: {tracked_grad}");
    // The same numbers either way.
    assert!(metric.iter().zip(&tracked).all(|(a, b)| (a - b).abs() < 1e-6), "{metric:?} vs {tracked:?}");
    assert!(metric.iter().any(|&h| h > 0.1), "a random model's entropy is far from 0: {metric:?}");
}
