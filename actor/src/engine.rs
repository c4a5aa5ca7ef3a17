//! The generation engine: continuous batching over one KV cache.
//!
//! Requests wait in a queue; each [`Engine::step`] first admits waiting requests while the batch has
//! rows for all their samples (one prefill per prompt, its cache fanned out to the `n` samples of its
//! group), then runs one decoding step for every running sample. Samples that finish leave the batch at
//! once, so one long response does not hold the rows of the others, and their rows go to the next
//! waiting requests.
//!
//! Each sample draws from its own RNG, seeded from its request's seed and its sample index, so its
//! tokens do not depend on what else is in the batch (up to float noise in the batched matmuls).
//! New weights are applied only when the batch is empty ([`Engine::set_weights`]), so every token of a
//! response comes from one weight version.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use rlvr_common::model::{CausalLm, KvCache, ModelBackend, ModelError};
use rlvr_common::rollout::{FinishReason, Rollout, RolloutTimings};
use rlvr_common::weights::{WeightUpdate, WeightsError};

use crate::sampling::{SamplingParams, sample};

/// Tokens decoded again to look for stop strings: enough to hold any stop string plus the token
/// boundaries around it.
const STOP_STRING_TAIL_TOKENS: usize = 32;

/// Turns token ids into text (to match stop strings); the tokenizer's `decode` in practice.
pub type Detokenizer = Arc<dyn Fn(&[u32]) -> String + Send + Sync>;

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("request `{id}`: {message}")]
    Request { id: String, message: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("new weights can only be applied between batches; {0} samples are running")]
    Busy(usize),
}

/// Per-request generation settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RequestParams {
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    /// A sampled stop token ends the response (and is kept in it).
    pub stop_token_ids: Vec<u32>,
    /// A response whose text comes to contain one of these ends there (the token that completed it is
    /// kept). Needs a [`Detokenizer`].
    pub stop_strings: Vec<String>,
    pub seed: u64,
    /// Samples of the prompt (GRPO's group size G); they share one prefill.
    pub n: usize,
}

impl Default for RequestParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_new_tokens: 256,
            stop_token_ids: vec![],
            stop_strings: vec![],
            seed: 0,
            n: 1,
        }
    }
}

/// A prompt to continue `params.n` times.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    pub prompt: Vec<u32>,
    pub params: RequestParams,
}

/// One finished sample of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub request_id: String,
    pub sample_index: usize,
    pub tokens: Vec<u32>,
    /// The log-prob of each token under the distribution it was sampled from (see [`crate::sampling`]).
    pub log_probs: Vec<f32>,
    pub finish_reason: FinishReason,
    pub weight_version: u64,
    pub timings: RolloutTimings,
}

impl Completion {
    /// The rollout record of this sample: `group_id` is the request id, the prompt the request's.
    pub fn into_rollout(self, prompt_id: String, prompt: Vec<u32>, temperature: f32) -> Rollout {
        Rollout {
            id: format!("{}/{}", self.request_id, self.sample_index),
            prompt_id,
            sample_index: self.sample_index as u32,
            weight_version: self.weight_version,
            prompt_token_ids: prompt,
            response_token_ids: self.tokens,
            log_probs: self.log_probs,
            temperature,
            finish_reason: self.finish_reason,
            timings: self.timings,
            group_id: self.request_id,
        }
    }
}

/// Batch limits.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Samples decoded together (rows of the KV cache).
    pub max_batch_rows: usize,
    /// Prompt tokens prefilled in one step (a request longer than this is still admitted alone).
    pub max_prefill_tokens: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { max_batch_rows: 256, max_prefill_tokens: 8192 }
    }
}

/// A waiting request.
struct Waiting {
    request: Arc<Request>,
    arrived: Instant,
}

/// A running sample: one row of the cache.
struct Sample {
    request: Arc<Request>,
    index: usize,
    rng: StdRng,
    tokens: Vec<u32>,
    log_probs: Vec<f32>,
    queued_ms: f64,
    prefill_ms: f64,
    decode_start: Instant,
}

/// The engine: a model at a weight version, a queue and a running batch.
pub struct Engine<B: ModelBackend> {
    model: CausalLm<B>,
    version: u64,
    /// The checksum of the weights, where known (they came as a [`WeightUpdate`]).
    checksum: Option<String>,
    config: EngineConfig,
    detokenizer: Option<Detokenizer>,
    waiting: VecDeque<Waiting>,
    running: Vec<Sample>,
    cache: KvCache<B>,
    /// Whether waiting requests may join (off while the batch drains for new weights).
    admitting: bool,
}

impl<B: ModelBackend> std::fmt::Debug for Engine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("version", &self.version)
            .field("config", &self.config)
            .field("waiting", &self.waiting.len())
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

/// The seed of one sample's RNG: SplitMix64 of the request seed and the sample index, so the samples of
/// a group draw independent streams.
fn sample_seed(seed: u64, index: usize) -> u64 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    mix(seed ^ mix(index as u64))
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

impl<B: ModelBackend> Engine<B> {
    pub fn new(model: CausalLm<B>, version: u64, config: EngineConfig) -> Self {
        let cache = model.new_cache();
        Self {
            model,
            version,
            checksum: None,
            config,
            detokenizer: None,
            waiting: VecDeque::new(),
            running: Vec::new(),
            cache,
            admitting: true,
        }
    }

    /// Enables stop strings.
    pub fn with_detokenizer(mut self, detokenizer: Detokenizer) -> Self {
        self.detokenizer = Some(detokenizer);
        self
    }

    pub fn model(&self) -> &CausalLm<B> {
        &self.model
    }

    /// Records the checksum of the weights the engine was built with.
    pub fn with_checksum(mut self, checksum: String) -> Self {
        self.checksum = Some(checksum);
        self
    }

    /// Whether the engine's weights are `(version, checksum)` (by version alone where the engine does
    /// not know its checksum).
    pub fn has_weights(&self, version: u64, checksum: &str) -> bool {
        self.version == version && self.checksum.as_deref().is_none_or(|c| c == checksum)
    }

    /// The checksum of the engine's weights, where known.
    pub fn weight_checksum(&self) -> Option<&str> {
        self.checksum.as_deref()
    }

    pub fn weight_version(&self) -> u64 {
        self.version
    }

    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Samples decoding now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Requests waiting to join.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Nothing running and nothing waiting.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Bytes of the KV cache now.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Lets waiting requests join the batch (on by default); off drains the batch.
    pub fn set_admitting(&mut self, admitting: bool) {
        self.admitting = admitting;
    }

    /// Queues a request after checking it.
    pub fn add(&mut self, request: Request) -> Result<(), EngineError> {
        let bad = |message: String| Err(EngineError::Request { id: request.id.clone(), message });
        let p = &request.params;
        if let Err(m) = p.sampling.validate() {
            return bad(m);
        }
        if p.n == 0 {
            return bad("n is 0; ask for at least one sample".into());
        }
        if p.n > self.config.max_batch_rows {
            return bad(format!("n is {} but the batch holds {} rows", p.n, self.config.max_batch_rows));
        }
        if request.prompt.is_empty() {
            return bad("the prompt has no tokens".into());
        }
        if let Some(t) = request.prompt.iter().find(|&&t| t as usize >= self.model.config.vocab_size) {
            return bad(format!("token id {t} is outside the vocabulary of {}", self.model.config.vocab_size));
        }
        if !p.stop_strings.is_empty() && self.detokenizer.is_none() {
            return bad("stop strings need an engine with a detokenizer".into());
        }
        self.waiting.push_back(Waiting { request: Arc::new(request), arrived: Instant::now() });
        Ok(())
    }

    /// Takes back the waiting requests (none of their samples started) that `withdraw` picks by id;
    /// returns their ids. For requests the next weights must not sample.
    pub fn withdraw_waiting(&mut self, mut withdraw: impl FnMut(&str) -> bool) -> Vec<String> {
        let mut out = vec![];
        self.waiting.retain(|w| {
            let take = withdraw(&w.request.id);
            if take {
                out.push(w.request.id.clone());
            }
            !take
        });
        out
    }

    /// Swaps in new weights after verifying their checksum. Only between batches: the caller drains the
    /// batch first ([`Engine::set_admitting`]).
    pub fn set_weights(&mut self, update: &WeightUpdate) -> Result<(), EngineError> {
        if !self.running.is_empty() {
            return Err(EngineError::Busy(self.running.len()));
        }
        update.verify()?;
        let device = self.model.model.embed_tokens.weight.val().device();
        let weights: HashMap<_, _> = update.tensors.iter().cloned().collect();
        // Built fully before the swap: a failure leaves the old weights in place.
        let model = CausalLm::from_weights(self.model.config.clone(), weights, &device)?;
        self.model = model;
        self.version = update.version;
        self.checksum = Some(update.checksum.clone());
        Ok(())
    }

    /// Ends every running and waiting request with [`FinishReason::Abort`], keeping the tokens sampled
    /// so far.
    pub fn abort_all(&mut self) -> Vec<Completion> {
        let running = std::mem::take(&mut self.running);
        let mut out: Vec<Completion> = running.into_iter().map(|s| self.finish_sample(s, FinishReason::Abort)).collect();
        for w in self.waiting.drain(..) {
            for index in 0..w.request.params.n {
                out.push(Completion {
                    request_id: w.request.id.clone(),
                    sample_index: index,
                    tokens: vec![],
                    log_probs: vec![],
                    finish_reason: FinishReason::Abort,
                    weight_version: self.version,
                    timings: RolloutTimings { queued_ms: ms(w.arrived), ..Default::default() },
                });
            }
        }
        self.cache = self.model.new_cache();
        out
    }

    /// Runs requests to completion; the completions come back in request order, then sample order.
    pub fn generate(&mut self, requests: Vec<Request>) -> Result<Vec<Completion>, EngineError> {
        let order: HashMap<String, usize> = requests.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
        for r in requests {
            self.add(r)?;
        }
        let mut out = vec![];
        while !self.is_idle() {
            out.extend(self.step()?);
        }
        out.sort_by_key(|c| (order.get(&c.request_id).copied().unwrap_or(usize::MAX), c.sample_index));
        Ok(out)
    }

    /// One engine step: admit what fits, then decode one token for every running sample. Returns the
    /// samples that finished.
    pub fn step(&mut self) -> Result<Vec<Completion>, EngineError> {
        let mut done = vec![];
        if self.admitting {
            self.admit(&mut done)?;
        }
        if self.running.is_empty() {
            return Ok(done);
        }
        let tokens: Vec<u32> = self.running.iter().map(|s| *s.tokens.last().expect("a running sample has a token")).collect();
        let logits = self.model.decode(&tokens, &mut self.cache)?;
        let rows = self.sample_rows(logits, (0..self.running.len()).collect());
        let mut keep = Vec::with_capacity(self.running.len());
        let mut finished = vec![];
        for (j, (token, lp)) in rows.into_iter().enumerate() {
            let s = &mut self.running[j];
            s.tokens.push(token);
            s.log_probs.push(lp);
            match self.finish_reason(&self.running[j]) {
                Some(reason) => finished.push((j, reason)),
                None => keep.push(j),
            }
        }
        if !finished.is_empty() {
            // Finished samples leave the batch; the cache keeps the other rows.
            self.cache.select_rows(&keep);
            let mut samples: Vec<Option<Sample>> = self.running.drain(..).map(Some).collect();
            for (j, reason) in finished {
                let s = samples[j].take().expect("each row finishes once");
                done.push(self.finish_sample(s, reason));
            }
            self.running = keep.into_iter().map(|j| samples[j].take().expect("kept rows are present")).collect();
            if self.running.is_empty() {
                self.cache = self.model.new_cache();
            }
        }
        Ok(done)
    }

    /// Prefills the waiting requests that fit and adds their samples to the batch, each with its first
    /// token sampled from the prompt's logits.
    fn admit(&mut self, done: &mut Vec<Completion>) -> Result<(), EngineError> {
        let mut free = self.config.max_batch_rows - self.running.len();
        let mut prompt_tokens = 0;
        let mut batch: Vec<Waiting> = vec![];
        while let Some(w) = self.waiting.front() {
            let (n, len) = (w.request.params.n, w.request.prompt.len());
            let fits_tokens = batch.is_empty() || prompt_tokens + len <= self.config.max_prefill_tokens;
            if n > free || !fits_tokens {
                break;
            }
            free -= n;
            prompt_tokens += len;
            batch.push(self.waiting.pop_front().expect("front exists"));
        }
        // Requests that ask for no tokens are done without a prefill.
        let (empty, batch): (Vec<_>, Vec<_>) = batch.into_iter().partition(|w| w.request.params.max_new_tokens == 0);
        for w in empty {
            for index in 0..w.request.params.n {
                done.push(Completion {
                    request_id: w.request.id.clone(),
                    sample_index: index,
                    tokens: vec![],
                    log_probs: vec![],
                    finish_reason: FinishReason::Length,
                    weight_version: self.version,
                    timings: RolloutTimings { queued_ms: ms(w.arrived), ..Default::default() },
                });
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let prompts: Vec<&[u32]> = batch.iter().map(|w| w.request.prompt.as_slice()).collect();
        let mut cache = self.model.new_cache();
        let logits = self.model.prefill(&prompts, &mut cache)?;
        let prefill_ms = ms(start);
        // Fan each prompt's logits row out to its samples.
        let mut samples = vec![];
        let mut rows = vec![];
        for (p, w) in batch.iter().enumerate() {
            for index in 0..w.request.params.n {
                rows.push(p);
                samples.push(Sample {
                    request: w.request.clone(),
                    index,
                    rng: StdRng::seed_from_u64(sample_seed(w.request.params.seed, index)),
                    tokens: vec![],
                    log_probs: vec![],
                    queued_ms: (start - w.arrived).as_secs_f64() * 1e3,
                    prefill_ms,
                    decode_start: Instant::now(),
                });
            }
        }
        let first = sample_rows_of(&mut samples, logits, &rows);
        let mut keep = vec![];
        for (j, (token, lp)) in first.into_iter().enumerate() {
            samples[j].tokens.push(token);
            samples[j].log_probs.push(lp);
            if let Some(reason) = self.finish_reason(&samples[j]) {
                keep.push((j, Some(reason)));
            } else {
                keep.push((j, None));
            }
        }
        // The cache rows of the samples that go on: the prompt's row, once per sample.
        let cache_rows: Vec<usize> = keep.iter().filter(|(_, r)| r.is_none()).map(|&(j, _)| rows[j]).collect();
        let mut samples: Vec<Option<Sample>> = samples.into_iter().map(Some).collect();
        for (j, reason) in keep {
            let s = samples[j].take().expect("each sample once");
            match reason {
                Some(reason) => done.push(self.finish_sample(s, reason)),
                None => self.running.push(s),
            }
        }
        if !cache_rows.is_empty() {
            cache.select_rows(&cache_rows);
            self.cache.append_rows(cache);
        }
        Ok(())
    }

    /// Samples one token for each running row `j` of `rows` from its logits row.
    fn sample_rows(&mut self, logits: burn::tensor::Tensor<B, 2>, rows: Vec<usize>) -> Vec<(u32, f32)> {
        sample_rows_of(&mut self.running, logits, &rows)
    }

    fn finish_reason(&self, s: &Sample) -> Option<FinishReason> {
        let p = &s.request.params;
        let last = *s.tokens.last()?;
        if p.stop_token_ids.contains(&last) {
            return Some(FinishReason::Stop);
        }
        if !p.stop_strings.is_empty()
            && let Some(detok) = &self.detokenizer
        {
            let tail = &s.tokens[s.tokens.len().saturating_sub(STOP_STRING_TAIL_TOKENS)..];
            let text = detok(tail);
            // Only a match that the last token completed: earlier text was checked at earlier steps.
            let before = detok(&tail[..tail.len() - 1]);
            if p.stop_strings.iter().any(|stop| text.contains(stop.as_str()) && !before.contains(stop.as_str())) {
                return Some(FinishReason::Stop);
            }
        }
        (s.tokens.len() >= p.max_new_tokens).then_some(FinishReason::Length)
    }

    fn finish_sample(&self, s: Sample, reason: FinishReason) -> Completion {
        Completion {
            request_id: s.request.id.clone(),
            sample_index: s.index,
            tokens: s.tokens,
            log_probs: s.log_probs,
            finish_reason: reason,
            weight_version: self.version,
            timings: RolloutTimings { queued_ms: s.queued_ms, prefill_ms: s.prefill_ms, decode_ms: ms(s.decode_start) },
        }
    }
}

/// Samples one token per sample `j`, from row `rows[j]` of `logits` `(rows, vocab)`, with the sample's
/// own parameters and RNG. Rows are sampled in parallel (each owns its RNG, so the result does not
/// depend on the thread count or the order).
fn sample_rows_of<B: burn::tensor::backend::Backend>(samples: &mut [Sample], logits: burn::tensor::Tensor<B, 2>, rows: &[usize]) -> Vec<(u32, f32)> {
    let [_, vocab] = logits.dims();
    let flat: Vec<f32> = logits.into_data().convert::<f32>().into_vec().expect("f32 logits");
    samples
        .par_iter_mut()
        .zip(rows)
        .map(|(s, &r)| sample(&flat[r * vocab..(r + 1) * vocab], &s.request.params.sampling, &mut s.rng))
        .collect()
}
