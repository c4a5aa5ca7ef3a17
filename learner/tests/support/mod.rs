//! What the learner's integration tests share: a tiny random model that speaks SmolLM2's tokenizer,
//! where the repository and the test Python are, a Python check script run, and a free port.

use std::path::{Path, PathBuf};

use rlvr_common::checkpoint::SaveDtype;
use rlvr_common::model::{CausalLm, Cpu, ModelConfig};
use serde_json::json;

/// Writes a tiny random Llama (2 layers, hidden 32) with SmolLM2's 49,152-token vocabulary and its
/// tokenizer files into `dir/model`, initialised from `seed`, and returns that directory.
pub fn tiny_model(dir: &Path, seed: u64) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/smollm2-135m-instruct");
    assert!(root.join("tokenizer.json").exists(), "run scripts/setup-model.sh first (the test borrows SmolLM2's tokenizer)");
    let model_dir = dir.join("model");
    let mut model_config = ModelConfig::from_json(json!({
        "model_type": "llama", "vocab_size": 49152, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
        "rope_theta": 10000.0, "eos_token_id": 2
    }))
    .unwrap();
    model_config.eos_token_ids = vec![2];
    CausalLm::<Cpu>::random(model_config, seed, &Default::default()).save(&model_dir, SaveDtype::F32).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(root.join(f), model_dir.join(f)).unwrap();
    }
    model_dir
}

/// The repository's root.
#[allow(dead_code)] // not every test binary uses each helper
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// The Python with `scripts/requirements-test.txt` installed: `$RLVR_TEST_PYTHON` (set by
/// `scripts/test.sh`), else `.venv-test`, else `python3`.
#[allow(dead_code)]
pub fn python() -> String {
    std::env::var("RLVR_TEST_PYTHON").unwrap_or_else(|_| {
        let venv = repo().join(".venv-test/bin/python");
        if venv.exists() { venv.display().to_string() } else { "python3".into() }
    })
}

/// Runs `scripts/SCRIPT` with the test Python, failing the test unless it exits 0.
#[allow(dead_code)]
pub fn run_python(script: &str, args: &[String]) {
    let status = std::process::Command::new(python())
        .arg(repo().join("scripts").join(script))
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running {script} with {}: {e} (scripts/test.sh sets up the test Python)", python()));
    assert!(status.success(), "{script} failed ({status}): see its output above");
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
