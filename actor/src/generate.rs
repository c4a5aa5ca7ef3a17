//! Batched generation with the KV cache: prefill a batch of prompts of different lengths, then decode
//! them together, each row stopping at its own EOS or token limit.

use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rlvr_common::model::{CausalLm, ModelError};

use crate::sampling::{SamplingParams, sample};

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It produced a stop token (included in the output).
    Stop,
    /// It reached `max_new_tokens`.
    Length,
}

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

/// Generates a continuation of every prompt. Row `i` draws from its own RNG seeded with `seed + i`, so
/// its tokens do not depend on the rest of the batch.
pub fn generate<B: Backend>(
    model: &CausalLm<B>,
    prompts: &[&[u32]],
    params: &GenerateParams,
) -> Result<Vec<Generation>, ModelError> {
    let mut rngs: Vec<_> = (0..prompts.len()).map(|i| rand::rngs::StdRng::seed_from_u64(params.seed.wrapping_add(i as u64))).collect();
    let mut out: Vec<Generation> = prompts
        .iter()
        .map(|_| Generation { tokens: vec![], log_probs: vec![], finish_reason: FinishReason::Length })
        .collect();
    if params.max_new_tokens == 0 {
        return Ok(out);
    }
    let mut cache = model.new_cache();
    let mut logits = model.prefill(prompts, &mut cache)?;
    // `active[j]` is the output row that cache row `j` feeds.
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    loop {
        let [_, vocab] = logits.dims();
        let flat: Vec<f32> = logits.into_data().convert::<f32>().into_vec().expect("f32 logits");
        let mut next = Vec::with_capacity(active.len());
        let mut still = Vec::with_capacity(active.len());
        for (j, &row) in active.iter().enumerate() {
            let (tok, lp) = sample(&flat[j * vocab..(j + 1) * vocab], &params.sampling, &mut rngs[row]);
            let g = &mut out[row];
            g.tokens.push(tok);
            g.log_probs.push(lp);
            if params.stop_token_ids.contains(&tok) {
                g.finish_reason = FinishReason::Stop;
            } else if g.tokens.len() < params.max_new_tokens {
                still.push(j);
                next.push(tok);
            }
        }
        if still.is_empty() {
            return Ok(out);
        }
        if still.len() != active.len() {
            // Finished rows leave the batch.
            cache.select_rows(&still);
            active = still.iter().map(|&j| active[j]).collect();
        }
        logits = model.decode(&next, &mut cache)?;
    }
}
