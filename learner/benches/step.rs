//! One learner update (GRPO advantages, PPO-clip loss, backward, gradient clipping, AdamW) on the real
//! model: what `rlvr train` spends its training phase on. `scripts/bench-learner.sh` runs this beside
//! the PyTorch implementation of the same step (`scripts/bench-learner/torch_step.py`) on the same batch
//! and thread count.
//!
//! ```text
//! step --batch FILE [--model DIR] [--warmup W] [--repeats R]
//! ```
//!
//! `--batch` is a JSON object written by `torch_step.py batch`: `rows` (token ids, prompt + response),
//! `prompt_len`, `rewards` and `groups` (one per row). The learner uses `rlvr train`'s defaults (GRPO,
//! PPO-clip 0.2, token-mean, AdamW lr 2e-5, clip 1.0, temperature 1.0, one optimiser step per batch),
//! with `runtime.micro_batch_tokens` raised to hold the whole batch, as the PyTorch side does. Prints one
//! line `JSON {...}`: the median seconds per update over `repeats` after `warmup`, and the first update's
//! loss and gradient norm (the two sides start from the same weights, so these must agree).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rlvr_common::model::ModelConfig;
use rlvr_learner::config::RunConfig;
use rlvr_learner::trainer::{Learner, TrainSample};
use serde::Deserialize;
use serde_json::json;

/// As in the `rlvr` binary (see `rlvr_learner::memory`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
struct Batch {
    rows: Vec<Vec<u32>>,
    prompt_len: usize,
    rewards: Vec<f32>,
    groups: Vec<u64>,
}

fn main() -> Result<()> {
    rlvr_learner::memory::keep_freed_memory();
    let mut model = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/smollm2-135m-instruct"));
    let (mut batch, mut warmup, mut repeats) = (None, 1usize, 3usize);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            "--model" => model = value()?.into(),
            "--batch" => batch = Some(PathBuf::from(value()?)),
            "--warmup" => warmup = value()?.parse().context("--warmup")?,
            "--repeats" => repeats = value()?.parse().context("--repeats")?,
            other => bail!("unknown argument {other}; see the doc comment of learner/benches/step.rs"),
        }
    }
    let batch = batch.context("--batch FILE is required (scripts/bench-learner.sh writes it)")?;
    let batch: Batch = serde_json::from_str(&std::fs::read_to_string(&batch).with_context(|| format!("reading {}", batch.display()))?)?;
    let n = batch.rows.len();
    if n == 0 || batch.rewards.len() != n || batch.groups.len() != n {
        bail!("the batch needs rows, and one reward and one group per row");
    }
    if batch.rows.iter().any(|r| r.len() <= batch.prompt_len) {
        bail!("every row must be longer than prompt_len ({})", batch.prompt_len);
    }
    let samples: Vec<TrainSample> = batch
        .rows
        .iter()
        .zip(&batch.rewards)
        .zip(&batch.groups)
        .map(|((row, &reward), &group)| {
            let (prompt, response) = row.split_at(batch.prompt_len);
            TrainSample {
                group,
                prompt: prompt.to_vec(),
                response: response.to_vec(),
                // Only read by truncated importance sampling, which the defaults leave off.
                rollout_log_probs: vec![0.0; response.len()],
                reward,
            }
        })
        .collect();
    let tokens: usize = batch.rows.iter().map(Vec::len).sum();
    let longest = batch.rows.iter().map(Vec::len).max().unwrap_or(0);

    let mut config = RunConfig::default();
    config.model.path = model.clone();
    config.runtime.micro_batch_tokens = config.runtime.micro_batch_tokens.max(longest * n);
    let model_config = ModelConfig::from_file(&model.join("config.json"))
        .with_context(|| format!("loading {} (run scripts/setup-model.sh)", model.display()))?;
    let weights = rlvr_common::checkpoint::read_weights(&model)?;
    let mut learner = Learner::new(&config, model_config, weights, None, None)?;

    let mut times = vec![];
    let mut first = None;
    for i in 0..warmup + repeats {
        let start = Instant::now();
        let stats = learner.train_on(&samples)?;
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "update {i}: {secs:.3}s, loss {:.6}, grad norm {:.6}, {} micro-batch(es)",
            stats.loss, stats.grad_norm, stats.micro_batches
        );
        first.get_or_insert(stats);
        if i >= warmup {
            times.push(secs);
        }
    }
    let first = first.context("no update ran")?;
    // The median as Python's `statistics.median` takes it (the PyTorch side's), the middle two averaged.
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = match sorted.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => sorted[mid],
        _ => (sorted[mid - 1] + sorted[mid]) / 2.0,
    };
    let report = json!({
        "rows": n, "tokens": tokens, "prompt_len": batch.prompt_len, "warmup": warmup, "repeats": repeats,
        "step_s": median, "all_s": times,
        "first_loss": first.loss, "first_grad_norm": first.grad_norm, "micro_batches": first.micro_batches,
    });
    println!("JSON {report}");
    Ok(())
}
