//! Parity with transformers: each tiny reference checkpoint under `tests/fixtures/models/` (written by
//! `scripts/fixtures/make_model_fixtures.py`, pinned torch + transformers) is loaded and run on the
//! same input ids; the logits must match transformers' within 1e-4 max abs error in f32.

use std::path::{Path, PathBuf};

use rlvr_common::checkpoint::SaveDtype;
use rlvr_common::model::{CausalLm, Cpu};
use safetensors::{Dtype, SafeTensors};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

struct Expected {
    input_ids: Vec<Vec<u32>>,
    logits: Vec<f32>,
}

fn expected(dir: &Path) -> Expected {
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    assert_eq!(ids.dtype(), Dtype::I64);
    let [rows, cols] = [ids.shape()[0], ids.shape()[1]];
    let flat: Vec<u32> =
        ids.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect();
    let logits = st.tensor("logits").unwrap();
    assert_eq!(logits.dtype(), Dtype::F32);
    let logits = logits.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    Expected { input_ids: (0..rows).map(|r| flat[r * cols..(r + 1) * cols].to_vec()).collect(), logits }
}

fn max_err(model: &CausalLm<Cpu>, exp: &Expected) -> f32 {
    let rows: Vec<&[u32]> = exp.input_ids.iter().map(Vec::as_slice).collect();
    let got: Vec<f32> = model.forward(&rows).unwrap().into_data().convert::<f32>().into_vec().unwrap();
    assert_eq!(got.len(), exp.logits.len());
    got.iter().zip(&exp.logits).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

const MODELS: [&str; 11] = [
    "llama-tied",
    "llama-untied-rope-llama3",
    "llama-linear-rope",
    "qwen2-untied",
    "qwen3-tied",
    "qwen3-untied",
    "llama-tied-bf16",
    "llama-tied-f16",
    "qwen2-sharded",
    "llama3-rope-legacy-config",
    "llama-linear-rope-legacy-config",
];

#[test]
fn logits_match_transformers() {
    let device = Default::default();
    let mut report = vec![];
    for name in MODELS {
        let dir = fixtures().join(name);
        let model = CausalLm::<Cpu>::load(&dir, &device).unwrap_or_else(|e| panic!("{name}: {e}"));
        let err = max_err(&model, &expected(&dir));
        report.push(format!("{name}: {err:.2e}"));
        assert!(err <= 1e-4, "{name}: logits differ from transformers' by {err}");
    }
    println!("max abs logit error vs transformers:\n  {}", report.join("\n  "));
}

#[test]
fn saved_checkpoints_reproduce_the_reference() {
    // Save in f32 and reload: the same logits as transformers'. Saving in bf16 then reloading gives the
    // logits of the bf16 reference checkpoint (same random weights, rounded the same way).
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    for name in ["qwen2-sharded", "qwen3-untied", "llama-untied-rope-llama3"] {
        let model = CausalLm::<Cpu>::load(&fixtures().join(name), &device).unwrap();
        model.save(dir.path(), SaveDtype::F32).unwrap();
        let back = CausalLm::<Cpu>::load(dir.path(), &device).unwrap();
        let err = max_err(&back, &expected(&fixtures().join(name)));
        assert!(err <= 1e-4, "{name} after save/load: {err}");
    }
    let model = CausalLm::<Cpu>::load(&fixtures().join("llama-tied"), &device).unwrap();
    for (dtype, reference) in [(SaveDtype::Bf16, "llama-tied-bf16"), (SaveDtype::F16, "llama-tied-f16")] {
        model.save(dir.path(), dtype).unwrap();
        let back = CausalLm::<Cpu>::load(dir.path(), &device).unwrap();
        let err = max_err(&back, &expected(&fixtures().join(reference)));
        assert!(err <= 1e-4, "{dtype:?} save vs {reference}: {err}");
    }
}
