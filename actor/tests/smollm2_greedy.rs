//! SmolLM2-135M-Instruct, imported from its GGUF by `scripts/setup-model.sh`, continues three chat
//! prompts greedily exactly as transformers does from the same safetensors (fixture written by
//! `scripts/fixtures/make_smollm2_fixture.py`, pinned torch + transformers): same templated prompt ids,
//! same tokens, log-probs within float noise. Skipped, with a notice, when the model is not set up;
//! the test command sets it up.

use std::path::PathBuf;

use rlvr_actor::generate::{FinishReason, GenerateParams, generate};
use rlvr_actor::sampling::SamplingParams;
use rlvr_common::model::{CausalLm, Cpu};
use rlvr_common::tokenizer::{ChatMessage, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    generation: Generation,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Generation {
    max_new_tokens: usize,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    templated_text: String,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    generated_logprobs: Vec<f32>,
    finish_reason: String,
}

fn model_dir() -> PathBuf {
    std::env::var_os("RLVR_SMOLLM2_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/smollm2-135m-instruct")
    })
}

#[test]
fn greedy_continuations_match_transformers() {
    let dir = model_dir();
    if !dir.join("model.safetensors").exists() {
        // CI runs the setup first, so there a missing model is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{} is not set up; run scripts/setup-model.sh", dir.display());
        eprintln!("SKIPPED: {} is not set up; run scripts/setup-model.sh", dir.display());
        return;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_greedy.json");
    let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let model = CausalLm::<Cpu>::load(&dir, &Default::default()).unwrap();

    // 1. The chat template and tokenizer give transformers' prompt ids.
    let mut prompts = vec![];
    for case in &fixture.cases {
        let messages = [ChatMessage::new("user", &case.prompt)];
        let text = tokenizer.apply_chat_template(&messages, true).unwrap();
        assert_eq!(text, case.templated_text, "chat template for {:?}", case.prompt);
        let ids = tokenizer.encode_chat(&messages, true).unwrap();
        assert_eq!(ids, case.prompt_ids, "prompt ids for {:?}", case.prompt);
        prompts.push(ids);
    }

    // 2. Greedy decoding of the three prompts as one batch gives transformers' tokens.
    let params = GenerateParams {
        sampling: SamplingParams::greedy(),
        max_new_tokens: fixture.generation.max_new_tokens,
        stop_token_ids: model.config.eos_token_ids.clone(),
        seed: 0,
    };
    let rows: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let outputs = generate(&model, &rows, &params).unwrap();
    let mut worst = 0.0f32;
    for (case, out) in fixture.cases.iter().zip(&outputs) {
        assert_eq!(out.tokens, case.generated_ids, "tokens for {:?}", case.prompt);
        let want = if case.finish_reason == "stop" { FinishReason::Stop } else { FinishReason::Length };
        assert_eq!(out.finish_reason, want, "{:?}", case.prompt);
        for (a, b) in out.log_probs.iter().zip(&case.generated_logprobs) {
            worst = worst.max((a - b).abs());
        }
    }
    println!("max log-prob difference vs transformers: {worst:.2e}");
    assert!(worst <= 1e-3, "greedy log-probs differ from transformers' by {worst}");
    let text = tokenizer.decode(&outputs[0].tokens, true).unwrap();
    assert!(text.contains("Paris"), "{text}");
}
