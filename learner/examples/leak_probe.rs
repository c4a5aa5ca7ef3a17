//! Memory probe: repeated learner updates on a random model must not grow the resident set.
//! `cargo run --release -p rlvr-learner --example leak_probe -- [STEPS]`
use std::collections::HashMap;

use rlvr_common::model::{CausalLm, Cpu, ModelConfig};
use rlvr_learner::config::RunConfig;
use rlvr_learner::trainer::{Learner, TrainSample};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

fn main() {
    let steps: usize = std::env::args().nth(1).map_or(6, |s| s.parse().expect("STEPS"));
    let config = ModelConfig::from_json(serde_json::json!({
        "model_type": "llama", "vocab_size": 49152, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "rope_theta": 10000.0
    }))
    .expect("config");
    let model = CausalLm::<Cpu>::random(config.clone(), 1, &Default::default());
    let weights: HashMap<_, _> = model.to_host_weights().into_iter().collect();
    let run = RunConfig::default();
    let mut learner = Learner::new(&run, config, weights, None, None).expect("learner");
    let samples: Vec<TrainSample> = (0..64)
        .map(|i| TrainSample {
            group: i / 8,
            prompt: (0..50).map(|t| (t * 7 + i as u32) % 49152).collect(),
            response: (0..24).map(|t| (t * 13 + i as u32) % 49152).collect(),
            rollout_log_probs: vec![-10.8; 24],
            reward: (i % 3) as f32,
        })
        .collect();
    for step in 0..steps {
        let t = std::time::Instant::now();
        learner.train_on(&samples).expect("step");
        println!("step {step}: {:.1}s, rss {:.0} MiB", t.elapsed().as_secs_f64(), rss_mib());
    }
}
