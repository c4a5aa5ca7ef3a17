//! One-shot batched generation: a thin wrapper over the [`Engine`](crate::engine::Engine) for callers
//! with a fixed list of prompts and one set of parameters (the `rlvr generate` command, tests).

use rlvr_common::model::{CausalLm, ModelBackend};

pub use rlvr_common::rollout::FinishReason;

use crate::engine::{Engine, EngineConfig, EngineError, Request, RequestParams};
use crate::sampling::SamplingParams;

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    /// The log-prob of each token under the distribution it was sampled from.
    pub log_probs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// Settings shared by a batch.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    pub stop_token_ids: Vec<u32>,
    pub seed: u64,
}

/// Generates a continuation of every prompt, all in one batch. Prompt `i` samples with seed `seed + i`,
/// so its tokens do not depend on the rest of the batch.
pub fn generate<B: ModelBackend>(
    model: &CausalLm<B>,
    prompts: &[&[u32]],
    params: &GenerateParams,
) -> Result<Vec<Generation>, EngineError> {
    let config = EngineConfig { max_batch_rows: prompts.len().max(1), ..Default::default() };
    let mut engine = Engine::new(model.clone(), 0, config);
    let requests = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Request {
            id: i.to_string(),
            prompt: p.to_vec(),
            params: RequestParams {
                sampling: params.sampling.clone(),
                max_new_tokens: params.max_new_tokens,
                stop_token_ids: params.stop_token_ids.clone(),
                stop_strings: vec![],
                seed: params.seed.wrapping_add(i as u64),
                n: 1,
            },
        })
        .collect();
    Ok(engine
        .generate(requests)?
        .into_iter()
        .map(|c| Generation { tokens: c.tokens, log_probs: c.log_probs, finish_reason: c.finish_reason })
        .collect())
}
