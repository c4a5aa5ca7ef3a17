//! The transformer's speed on the CPU backend, and the checkpoint round trip into transformers.
//! `scripts/bench-model.sh` runs this beside the PyTorch side (`scripts/bench-model/torch_model.py`)
//! with the same token ids and thread count; run alone (`cargo bench -p rlvr-common --bench model`)
//! it times both workloads on synthetic ids.
//!
//! ```text
//! model [train | generate | save-check | all] [--model DIR] [--tokens FILE] [--out DIR]
//!       [--batch B] [--seq L] [--prompt-len P] [--new N] [--warmup W] [--repeats R]
//! ```
//!
//! - `train`: forward + backward of the mean negative log-likelihood (`token_log_probs`) of a
//!   `batch x seq` batch on `CpuAutodiff`, no optimiser; median seconds over `repeats` after `warmup`.
//! - `generate`: greedy decoding of one prompt on `Cpu`: `prefill`, then `new - 1` `decode` steps, the
//!   argmax taken on the host; median tokens/s (the `new` tokens over prefill + decode).
//! - `save-check`: `CausalLm::save` (f32) of the loaded model into `--out/model`, plus rlvr's logits for
//!   the `check` rows in `--out/expected.safetensors` for `scripts/fixtures/check_hf_load.py`.
//!
//! `--tokens` is a JSON object with `train` (rows), `prompt` (one row) and `check` (equal-length rows),
//! as written by `torch_model.py tokens`; without it the ids are synthetic. Each mode prints one line
//! `JSON {...}` on stdout with its numbers; progress goes to stderr.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::Backend;
use burn::tensor::Tensor;
use rlvr_common::checkpoint::SaveDtype;
use rlvr_common::model::{CausalLm, Cpu, CpuAutodiff};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;

/// Where the real model lives, relative to the workspace root (made by `scripts/setup-model.sh`).
const DEFAULT_MODEL: &str = "models/smollm2-135m-instruct";

struct Args {
    mode: String,
    model: PathBuf,
    tokens: Option<PathBuf>,
    out: Option<PathBuf>,
    batch: usize,
    seq: usize,
    prompt_len: usize,
    new: usize,
    warmup: usize,
    repeats: usize,
}

impl Args {
    fn parse() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut args = Self {
            mode: "all".into(),
            model: root.join(DEFAULT_MODEL),
            tokens: None,
            out: None,
            batch: 8,
            seq: 128,
            prompt_len: 32,
            new: 128,
            warmup: 1,
            repeats: 3,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            let number = |v: String| v.parse::<usize>().with_context(|| format!("{a} {v}: not a number"));
            match a.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--model" => args.model = value()?.into(),
                "--tokens" => args.tokens = Some(value()?.into()),
                "--out" => args.out = Some(value()?.into()),
                "--batch" => args.batch = number(value()?)?,
                "--seq" => args.seq = number(value()?)?,
                "--prompt-len" => args.prompt_len = number(value()?)?,
                "--new" => args.new = number(value()?)?,
                "--warmup" => args.warmup = number(value()?)?,
                "--repeats" => args.repeats = number(value()?)?,
                "train" | "generate" | "save-check" | "all" => args.mode = a,
                other => bail!("unknown argument {other:?}; see the header of common/benches/model.rs"),
            }
        }
        if args.repeats == 0 || args.new == 0 || args.batch == 0 || args.seq < 2 || args.prompt_len == 0 {
            bail!("--repeats, --new, --batch and --prompt-len must be at least 1, --seq at least 2");
        }
        Ok(args)
    }
}

/// The token ids both sides of the benchmark run on.
struct Tokens {
    train: Vec<Vec<u32>>,
    prompt: Vec<u32>,
    check: Vec<Vec<u32>>,
}

impl Tokens {
    fn load(args: &Args, vocab: usize) -> Result<Self> {
        let Some(path) = &args.tokens else {
            // Deterministic ids spread over the vocabulary (a multiplicative hash of the position).
            let id = |i: usize| ((i as u64 * 2_654_435_761 + 12_345) % vocab as u64) as u32;
            let rows = |n: usize, len: usize, base: usize| -> Vec<Vec<u32>> {
                (0..n).map(|r| (0..len).map(|t| id(base + r * len + t)).collect()).collect()
            };
            return Ok(Self {
                train: rows(args.batch, args.seq, 0),
                prompt: rows(1, args.prompt_len, 1 << 20).remove(0),
                check: rows(2, 16, 1 << 21),
            });
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("while reading {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).context("while parsing the tokens file")?;
        let rows = |key: &str| -> Result<Vec<Vec<u32>>> {
            serde_json::from_value(v[key].clone())
                .with_context(|| format!("tokens file: `{key}` is not a list of id rows"))
        };
        let prompt =
            serde_json::from_value(v["prompt"].clone()).context("tokens file: `prompt` is not a list of ids")?;
        Ok(Self { train: rows("train")?, prompt, check: rows("check")? })
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

fn sync<B: Backend>(device: &B::Device) {
    B::sync(device).expect("the CPU backend cannot fail to sync");
}

fn train(args: &Args) -> Result<serde_json::Value> {
    let device = Default::default();
    let model = CausalLm::<CpuAutodiff>::load(&args.model, &device).context("while loading the model")?;
    let tokens = Tokens::load(args, model.config.vocab_size)?;
    let rows: Vec<&[u32]> = tokens.train.iter().map(Vec::as_slice).collect();
    let (batch, seq) = (rows.len(), rows.iter().map(|r| r.len()).max().unwrap_or(0));
    let (mut forward, mut total) = (vec![], vec![]);
    for i in 0..args.warmup + args.repeats {
        let start = Instant::now();
        let lp = model.token_log_probs(&rows)?;
        // Mean negative log-likelihood; the rows are unpadded, so every entry is a real token.
        let loss: Tensor<CpuAutodiff, 1> = lp.mean().neg();
        sync::<CpuAutodiff>(&device);
        let fwd = start.elapsed().as_secs_f64();
        let grads = loss.backward();
        sync::<CpuAutodiff>(&device);
        let secs = start.elapsed().as_secs_f64();
        drop(grads);
        eprintln!("train {batch}x{seq} step {i}: forward {fwd:.3}s, forward+backward {secs:.3}s");
        if i >= args.warmup {
            forward.push(fwd);
            total.push(secs);
        }
    }
    Ok(json!({
        "mode": "train", "batch": batch, "seq": seq, "repeats": args.repeats,
        "forward_s": median(forward), "train_step_s": median(total.clone()), "all_s": total,
        "peak_rss_bytes": peak_rss_bytes(),
    }))
}

fn argmax(logits: Tensor<Cpu, 2>) -> Result<u32> {
    let v: Vec<f32> = logits.into_data().convert::<f32>().into_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (i, _) =
        v.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best });
    Ok(i as u32)
}

/// Greedy decoding of `new` tokens after `prompt`: the generated ids and the seconds taken.
fn greedy(model: &CausalLm<Cpu>, prompt: &[u32], new: usize) -> Result<(Vec<u32>, f64)> {
    let start = Instant::now();
    let mut cache = model.new_cache();
    let mut out = vec![argmax(model.prefill(&[prompt], &mut cache)?)?];
    while out.len() < new {
        let next = argmax(model.decode(&out[out.len() - 1..], &mut cache)?)?;
        out.push(next);
    }
    Ok((out, start.elapsed().as_secs_f64()))
}

fn generate(args: &Args) -> Result<serde_json::Value> {
    let device = Default::default();
    let model = CausalLm::<Cpu>::load(&args.model, &device).context("while loading the model")?;
    let tokens = Tokens::load(args, model.config.vocab_size)?;
    let prompt = &tokens.prompt;
    for _ in 0..args.warmup {
        greedy(&model, prompt, args.new.min(16))?;
    }
    let mut rates = vec![];
    let mut generated = vec![];
    for _ in 0..args.repeats {
        let (ids, secs) = greedy(&model, prompt, args.new)?;
        let rate = ids.len() as f64 / secs;
        eprintln!("generate prompt {} + {} new: {secs:.3}s = {rate:.2} tokens/s", prompt.len(), ids.len());
        rates.push(rate);
        generated = ids;
    }
    Ok(json!({
        "mode": "generate", "prompt_len": prompt.len(), "new": args.new, "repeats": args.repeats,
        "tokens_per_s": median(rates.clone()), "all_tokens_per_s": rates, "generated": generated,
        "peak_rss_bytes": peak_rss_bytes(),
    }))
}

fn save_check(args: &Args) -> Result<serde_json::Value> {
    let out = args.out.as_ref().context("save-check needs --out DIR")?;
    let device = Default::default();
    let model = CausalLm::<Cpu>::load(&args.model, &device).context("while loading the model")?;
    let tokens = Tokens::load(args, model.config.vocab_size)?;
    let dir = out.join("model");
    model.save(&dir, SaveDtype::F32).context("while saving the checkpoint")?;

    let rows: Vec<&[u32]> = tokens.check.iter().map(Vec::as_slice).collect();
    let len = rows[0].len();
    if rows.iter().any(|r| r.len() != len) {
        bail!("tokens file: the `check` rows must all have the same length (transformers runs them unpadded)");
    }
    let logits = model.forward(&rows)?;
    let shape = logits.dims().to_vec();
    let logits: Vec<f32> = logits.into_data().convert::<f32>().into_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let ids: Vec<u8> = rows.iter().flat_map(|r| r.iter()).flat_map(|&t| i64::from(t).to_le_bytes()).collect();
    let logit_bytes: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensors = [
        ("input_ids", TensorView::new(Dtype::I64, vec![rows.len(), len], &ids)?),
        ("logits", TensorView::new(Dtype::F32, shape, &logit_bytes)?),
    ];
    let bytes = safetensors::serialize(tensors, None::<HashMap<String, String>>)?;
    let expected = out.join("expected.safetensors");
    std::fs::write(&expected, bytes).with_context(|| format!("while writing {}", expected.display()))?;
    Ok(json!({ "mode": "save-check", "checkpoint": dir, "expected": expected }))
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    if !args.model.join("config.json").exists() {
        // `cargo bench` over the workspace must not fail on a checkout without the model.
        eprintln!("skipped: no model at {} (run scripts/setup-model.sh)", args.model.display());
        return Ok(());
    }
    let modes: &[&str] = if args.mode == "all" { &["train", "generate"] } else { &[args.mode.as_str()] };
    for mode in modes {
        let report = match *mode {
            "train" => train(&args)?,
            "generate" => generate(&args)?,
            _ => save_check(&args)?,
        };
        println!("JSON {report}");
    }
    Ok(())
}
