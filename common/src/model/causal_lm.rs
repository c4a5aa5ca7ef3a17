//! The decoder-only causal language model: embeddings, decoder blocks, final norm and LM head, with
//! the two entry points the rest of rlvr uses on one set of weights:
//!
//! - [`CausalLm::prefill`] and [`CausalLm::decode`]: incremental decoding with a [`KvCache`] for a
//!   batch of sequences of different lengths (the actor);
//! - [`CausalLm::forward`] and [`CausalLm::token_log_probs`]: a full-sequence forward that works under
//!   autodiff (the learner).

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use rand::{Rng, SeedableRng};

use super::config::ModelConfig;
use super::fused::ModelBackend;
use super::kv_cache::KvCache;
use super::layers::{Attention, DecoderLayer, Embedding, Linear, Mlp, RmsNorm, Rope, expected_shapes, param_to_host};
use super::{ModelError, rope};
use crate::checkpoint::{self, HostTensor, SaveDtype};

/// The transformer body (`model.*` in HF checkpoints).
#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
}

/// What [`CausalLm::response_log_probs`] returns beside the log-probs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entropy {
    /// No entropy.
    None,
    /// Each position's entropy, outside the autodiff graph: for logging, at no memory cost in backward.
    Metric,
    /// Each position's entropy, differentiable (for an entropy bonus in the loss).
    Differentiable,
}

/// The body plus the LM head (`lm_head.weight`, absent when tied to the embeddings).
#[derive(Module, Debug)]
pub struct CausalLm<B: Backend> {
    pub model: Model<B>,
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    pub config: ModelConfig,
    #[module(skip)]
    inv_freq: Vec<f32>,
}

/// Host weights being turned into parameters; every key is taken once and shape-checked.
struct WeightTaker<'a, B: Backend> {
    weights: HashMap<String, HostTensor>,
    shapes: HashMap<String, Vec<usize>>,
    device: &'a B::Device,
}

impl<B: Backend> WeightTaker<'_, B> {
    fn host(&mut self, name: &str) -> Result<HostTensor, ModelError> {
        let expected = &self.shapes[name];
        let t = self.weights.remove(name).ok_or_else(|| ModelError::Weight {
            name: name.to_string(),
            message: "is missing from the checkpoint".into(),
        })?;
        if &t.shape != expected {
            return Err(ModelError::Weight {
                name: name.to_string(),
                message: format!("has shape {:?} but config.json implies {expected:?}", t.shape),
            });
        }
        Ok(t)
    }
    fn take<const D: usize>(&mut self, name: &str) -> Result<Param<Tensor<B, D>>, ModelError> {
        let t = self.host(name)?;
        Ok(Param::from_tensor(Tensor::from_data(TensorData::new(t.data, t.shape), self.device)))
    }
    fn linear(&mut self, prefix: &str, bias: bool) -> Result<Linear<B>, ModelError> {
        let weight = self.take(&format!("{prefix}.weight"))?;
        let bias = if bias { Some(self.take(&format!("{prefix}.bias"))?) } else { None };
        Ok(Linear { weight, bias })
    }
    fn norm(&mut self, prefix: &str, eps: f64) -> Result<RmsNorm<B>, ModelError> {
        Ok(RmsNorm { weight: self.take(&format!("{prefix}.weight"))?, eps })
    }
}

impl<B: Backend> CausalLm<B> {
    /// Loads `config.json` and the safetensors weights of an HF checkpoint directory.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, ModelError> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let weights = checkpoint::read_weights(dir)?;
        Self::from_weights(config, weights, device)
    }

    /// Builds the model from host weights keyed as in HF checkpoints. Missing, misshapen and
    /// unexpected tensors are errors naming the key.
    pub fn from_weights(
        config: ModelConfig,
        mut weights: HashMap<String, HostTensor>,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        if config.tie_word_embeddings {
            // Some exporters write the tied head anyway; it must equal the embeddings, so drop it.
            weights.remove("lm_head.weight");
        }
        // Non-persistent buffers older exporters saved.
        weights.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
        let shapes = expected_shapes(&config).into_iter().collect();
        let mut w = WeightTaker::<B> { weights, shapes, device };
        let c = &config;
        let eps = c.rms_norm_eps;
        let embed_tokens = Embedding { weight: w.take("model.embed_tokens.weight")? };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let self_attn = Attention {
                q_proj: w.linear(&format!("{p}.self_attn.q_proj"), c.qkv_bias)?,
                k_proj: w.linear(&format!("{p}.self_attn.k_proj"), c.qkv_bias)?,
                v_proj: w.linear(&format!("{p}.self_attn.v_proj"), c.qkv_bias)?,
                o_proj: w.linear(&format!("{p}.self_attn.o_proj"), c.o_bias)?,
                q_norm: if c.qk_norm { Some(w.norm(&format!("{p}.self_attn.q_norm"), eps)?) } else { None },
                k_norm: if c.qk_norm { Some(w.norm(&format!("{p}.self_attn.k_norm"), eps)?) } else { None },
                num_heads: c.num_attention_heads,
                num_kv_heads: c.num_key_value_heads,
                head_dim: c.head_dim,
            };
            let mlp = Mlp {
                gate_proj: w.linear(&format!("{p}.mlp.gate_proj"), c.mlp_bias)?,
                up_proj: w.linear(&format!("{p}.mlp.up_proj"), c.mlp_bias)?,
                down_proj: w.linear(&format!("{p}.mlp.down_proj"), c.mlp_bias)?,
            };
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: w.norm(&format!("{p}.input_layernorm"), eps)?,
                post_attention_layernorm: w.norm(&format!("{p}.post_attention_layernorm"), eps)?,
            });
        }
        let norm = w.norm("model.norm", eps)?;
        let lm_head = if c.tie_word_embeddings { None } else { Some(w.linear("lm_head", false)?) };
        if let Some(extra) = w.weights.keys().min() {
            return Err(ModelError::Weight {
                name: extra.clone(),
                message: format!(
                    "is in the checkpoint but not in a {:?} model with this config.json ({} unexpected tensors)",
                    c.architecture,
                    w.weights.len()
                ),
            });
        }
        let inv_freq = rope::inv_freq(c.head_dim, c.rope_theta, &c.rope_scaling);
        Ok(Self { model: Model { embed_tokens, layers, norm }, lm_head, config, inv_freq })
    }

    /// A model with random weights (normal, std 0.02; norms at 1) from a seed: for tests.
    pub fn random(config: ModelConfig, seed: u64, device: &B::Device) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let weights = expected_shapes(&config)
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let data = if name.ends_with("norm.weight") || name.ends_with("layernorm.weight") {
                    vec![1.0; n]
                } else {
                    // Box-Muller; precision is irrelevant here, determinism is not.
                    (0..n)
                        .map(|_| {
                            let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
                            0.02 * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
                        })
                        .collect()
                };
                (name, HostTensor::new(shape, data))
            })
            .collect();
        Self::from_weights(config, weights, device).expect("random weights match their own shapes")
    }

    /// Every parameter as a host tensor under its HF key.
    pub fn to_host_weights(&self) -> Vec<(String, HostTensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), param_to_host(&self.model.embed_tokens.weight))];
        let linear = |out: &mut Vec<_>, name: String, l: &Linear<B>| out.extend(l.to_host_weights(&name));
        for (i, layer) in self.model.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let a = &layer.self_attn;
            for (n, l) in [("q_proj", &a.q_proj), ("k_proj", &a.k_proj), ("v_proj", &a.v_proj), ("o_proj", &a.o_proj)] {
                linear(&mut out, format!("{p}.self_attn.{n}"), l);
            }
            for (n, norm) in [("q_norm", &a.q_norm), ("k_norm", &a.k_norm)] {
                if let Some(norm) = norm {
                    out.push((format!("{p}.self_attn.{n}.weight"), param_to_host(&norm.weight)));
                }
            }
            let m = &layer.mlp;
            for (n, l) in [("gate_proj", &m.gate_proj), ("up_proj", &m.up_proj), ("down_proj", &m.down_proj)] {
                linear(&mut out, format!("{p}.mlp.{n}"), l);
            }
            out.push((format!("{p}.input_layernorm.weight"), param_to_host(&layer.input_layernorm.weight)));
            out.push((format!("{p}.post_attention_layernorm.weight"), param_to_host(&layer.post_attention_layernorm.weight)));
        }
        out.push(("model.norm.weight".to_string(), param_to_host(&self.model.norm.weight)));
        if let Some(head) = &self.lm_head {
            linear(&mut out, "lm_head".to_string(), head);
        }
        out
    }

    /// Saves as an HF checkpoint directory (`model.safetensors` + `config.json`) that transformers loads.
    pub fn save(&self, dir: &Path, dtype: SaveDtype) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::Io { path: dir.to_path_buf(), source: e })?;
        checkpoint::write_safetensors(&dir.join("model.safetensors"), &self.to_host_weights(), dtype)?;
        let config = serde_json::to_string_pretty(&self.config.to_json(dtype.torch_name()))
            .expect("a JSON value serialises");
        let path = dir.join("config.json");
        std::fs::write(&path, config).map_err(|e| ModelError::Io { path, source: e })
    }
}

impl<B: ModelBackend> CausalLm<B> {
    fn device(&self) -> B::Device {
        self.model.embed_tokens.weight.val().device()
    }

    /// The mask of the step `cache` has just begun, in the layout the attention reads
    /// ([`KvCache::step_mask`]).
    fn attention_mask(&self, cache: &KvCache<B>, new_columns: usize) -> Tensor<B, 4, Bool> {
        let c = &self.config;
        let groups = c.num_attention_heads / c.num_key_value_heads;
        cache.step_mask(new_columns, c.num_key_value_heads, groups, &self.device())
    }

    /// RoPE tables for row-major positions, in [`Rope`]'s layout.
    fn rope(&self, positions: &[usize], batch: usize, seq: usize) -> Rope<B> {
        let (cos, sin) = rope::cos_sin(&self.inv_freq, positions.iter().copied());
        let device = self.device();
        let d = self.config.head_dim;
        // Each position's row repeated over `heads`; `negate` flips the sign of its first half.
        let table = |v: &[f32], heads: usize, negate: bool| {
            let mut out = Vec::with_capacity(v.len() * heads);
            for row in v.chunks(d) {
                for _ in 0..heads {
                    out.extend(row.iter().enumerate().map(|(i, &x)| if negate && i < d / 2 { -x } else { x }));
                }
            }
            Tensor::from_data(TensorData::new(out, [batch, seq, heads, d]), &device)
        };
        let (h, kvh) = (self.config.num_attention_heads, self.config.num_key_value_heads);
        Rope { q_cos: table(&cos, h, false), q_sin: table(&sin, h, true), k_cos: table(&cos, kvh, false), k_sin: table(&sin, kvh, true) }
    }

    /// Token ids `(batch, seq)` from rows right-padded with `pad`.
    fn token_tensor(&self, rows: &[&[u32]], seq: usize, pad: u32) -> Tensor<B, 2, Int> {
        let ids: Vec<i64> = rows
            .iter()
            .flat_map(|r| (0..seq).map(move |i| i64::from(*r.get(i).unwrap_or(&pad))))
            .collect();
        Tensor::from_data(TensorData::new(ids, [rows.len(), seq]), &self.device())
    }

    /// Final hidden states to logits: `(B, L, hidden) -> (B, L, vocab)`.
    fn logits(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.model.norm.forward(h);
        match &self.lm_head {
            Some(head) => head.forward(h),
            // The embeddings as the head's weight (no copy of the table).
            None => {
                let [b, l, hidden] = h.dims();
                let embed = self.model.embed_tokens.weight.val();
                let vocab = embed.dims()[0];
                <B as ModelBackend>::linear(h.reshape([b * l, hidden]), embed).reshape([b, l, vocab])
            }
        }
    }

    /// The decoder stack over embedded tokens.
    fn body(&self, tokens: Tensor<B, 2, Int>, rope: &Rope<B>, mask: Tensor<B, 4, Bool>, mut cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let mut h = burn::tensor::module::embedding(self.model.embed_tokens.weight.val(), tokens);
        for (i, layer) in self.model.layers.iter().enumerate() {
            h = layer.forward(h, rope, mask.clone(), cache.as_deref_mut().map(|c| (c, i)));
        }
        h
    }

    fn check_tokens(&self, rows: &[&[u32]]) -> Result<usize, ModelError> {
        let bad = |m: String| Err(ModelError::Input(m));
        if rows.is_empty() {
            return bad("the batch is empty".into());
        }
        if let Some(i) = rows.iter().position(|r| r.is_empty()) {
            return bad(format!("sequence {i} is empty; every sequence needs at least one token"));
        }
        let vocab = self.config.vocab_size;
        for (i, r) in rows.iter().enumerate() {
            if let Some(t) = r.iter().find(|&&t| t as usize >= vocab) {
                return bad(format!("sequence {i} holds token id {t}, outside the vocabulary of {vocab}"));
            }
        }
        Ok(rows.iter().map(|r| r.len()).max().unwrap_or(0))
    }

    /// Full-sequence forward of right-padded sequences of different lengths:
    /// `rows` -> logits `(batch, longest, vocab)`. Logits at padding positions are meaningless.
    pub fn forward(&self, rows: &[&[u32]]) -> Result<Tensor<B, 3>, ModelError> {
        let seq = self.check_tokens(rows)?;
        let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let mut cache = KvCache::new(0);
        let positions = cache.begin_step(&lengths, seq);
        let mask = self.attention_mask(&cache, seq);
        let rope = self.rope(&positions, rows.len(), seq);
        let tokens = self.token_tensor(rows, seq, 0);
        Ok(self.logits(self.body(tokens, &rope, mask, None)))
    }

    /// The log-probability of each token given the ones before it: `(batch, longest - 1)`, entry
    /// `[b, t]` = log p(rows[b][t + 1] | rows[b][..=t]); zero past the end of a row. Differentiable.
    pub fn token_log_probs(&self, rows: &[&[u32]]) -> Result<Tensor<B, 2>, ModelError> {
        let seq = self.check_tokens(rows)?;
        if seq < 2 {
            return Err(ModelError::Input("log-probs need sequences of at least two tokens".into()));
        }
        let batch = rows.len();
        let logits = self.forward(rows)?.narrow(1, 0, seq - 1);
        let vocab = logits.dims()[2];
        let targets = self.token_tensor(&rows.iter().map(|r| &r[1.min(r.len())..]).collect::<Vec<_>>(), seq - 1, 0);
        let n = batch * (seq - 1);
        let lp = B::token_log_probs(logits.reshape([n, vocab]), targets.reshape([n]), 1.0).reshape([batch, seq - 1]);
        let valid: Vec<f32> = rows
            .iter()
            .flat_map(|r| (0..seq - 1).map(move |t| if t + 1 < r.len() { 1.0 } else { 0.0 }))
            .collect();
        Ok(lp.mul(Tensor::from_data(TensorData::new(valid, [batch, seq - 1]), &self.device())))
    }

    /// The learner's forward over prompt + response sequences: the log-probability of every response
    /// token under the sampling distribution at `temperature` (logits divided by it, as the actor
    /// samples), and each position's entropy as `entropy` asks. `rows[b]` is the whole sequence, whose
    /// first `prompt_lens[b]` tokens are the prompt. Returns `(batch, longest response)` tensors, zero
    /// past a row's response. The log-probs are differentiable.
    ///
    /// Only the positions that predict response tokens go through the LM head, which for a small model
    /// with a large vocabulary is a good share of the compute (SmolLM2: 28M of 135M parameters).
    pub fn response_log_probs(
        &self,
        rows: &[&[u32]],
        prompt_lens: &[usize],
        temperature: f32,
        entropy: Entropy,
    ) -> Result<(Tensor<B, 2>, Option<Tensor<B, 2>>), ModelError> {
        if temperature.is_nan() || temperature <= 0.0 {
            return Err(ModelError::Input(format!("temperature {temperature} must be above 0")));
        }
        let h = self.response_states(rows, prompt_lens)?;
        let [batch, longest, _] = h.dims();
        let resp: Vec<usize> = rows.iter().zip(prompt_lens).map(|(r, &p)| r.len() - p).collect();
        let resp = resp.as_slice();
        let logits = self.logits(h);
        let vocab = logits.dims()[2];
        let targets: Vec<i64> = (0..batch)
            .flat_map(|b| (0..longest).map(move |t| i64::from(rows[b][prompt_lens[b] + t.min(resp[b] - 1)])))
            .collect();
        let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [batch * longest]), &self.device());
        let valid = self.response_valid(resp, longest);
        // The entropy of each position's distribution at `temperature`.
        let entropy_of = |logits: Tensor<B, 3>| {
            let logp = log_softmax(logits.div_scalar(temperature), 2);
            logp.clone().exp().mul(logp).sum_dim(2).squeeze_dim::<2>(2).neg().mul(valid.clone())
        };
        let entropy = match entropy {
            Entropy::None => None,
            // Outside the graph: the (rows, positions, vocab) intermediates are not kept for backward.
            Entropy::Metric => Some(entropy_of(logits.clone().detach())),
            Entropy::Differentiable => Some(entropy_of(logits.clone())),
        };
        let taken = B::token_log_probs(logits.reshape([batch * longest, vocab]), targets, f64::from(temperature));
        let taken = taken.reshape([batch, longest]).mul(valid);
        Ok((taken, entropy))
    }

    /// The final hidden states (after the last norm) at the positions that predict each response
    /// token, `(batch, longest response, hidden)`, as [`response_log_probs`](Self::response_log_probs)
    /// takes them: what a value head reads (a critic's value of response token `t` is computed where
    /// the policy predicts it). Past a row's response the row's last state repeats. Differentiable.
    pub fn response_hidden(&self, rows: &[&[u32]], prompt_lens: &[usize]) -> Result<Tensor<B, 3>, ModelError> {
        Ok(self.model.norm.forward(self.response_states(rows, prompt_lens)?))
    }

    /// 1 on response tokens, 0 past each row's response: `(batch, longest)`.
    fn response_valid(&self, resp: &[usize], longest: usize) -> Tensor<B, 2> {
        let valid: Vec<f32> = resp.iter().flat_map(|&n| (0..longest).map(move |t| if t < n { 1.0 } else { 0.0 })).collect();
        Tensor::from_data(TensorData::new(valid, [resp.len(), longest]), &self.device())
    }

    /// The body over whole prompt + response sequences, gathered at the positions that predict
    /// response tokens (before the final norm).
    fn response_states(&self, rows: &[&[u32]], prompt_lens: &[usize]) -> Result<Tensor<B, 3>, ModelError> {
        let seq = self.check_tokens(rows)?;
        if prompt_lens.len() != rows.len() {
            return Err(ModelError::Input(format!("{} prompt lengths for {} sequences", prompt_lens.len(), rows.len())));
        }
        if let Some(b) = (0..rows.len()).find(|&b| prompt_lens[b] == 0 || prompt_lens[b] >= rows[b].len()) {
            return Err(ModelError::Input(format!(
                "sequence {b}: its prompt of {} tokens leaves no response in {} tokens (the prompt needs at least one token)",
                prompt_lens[b],
                rows[b].len()
            )));
        }
        let batch = rows.len();
        let resp_lens: Vec<usize> = rows.iter().zip(prompt_lens).map(|(r, &p)| r.len() - p).collect();
        let resp = resp_lens.as_slice();
        let longest = resp.iter().copied().max().unwrap_or(0);
        // 1. The body over every token.
        let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let mut cache = KvCache::new(0);
        let positions = cache.begin_step(&lengths, seq);
        let mask = self.attention_mask(&cache, seq);
        let rope = self.rope(&positions, batch, seq);
        let h = self.body(self.token_tensor(rows, seq, 0), &rope, mask, None);
        // 2. The hidden states that predict response tokens: position p - 1 + t for response token t.
        let hidden = self.config.hidden_size;
        let index: Vec<i64> =
            (0..batch).flat_map(|b| (0..longest).map(move |t| (prompt_lens[b] - 1 + t.min(resp[b] - 1)) as i64)).collect();
        let index = Tensor::<B, 2, Int>::from_data(TensorData::new(index, [batch, longest]), &self.device())
            .unsqueeze_dim::<3>(2)
            .expand([batch, longest, hidden]);
        Ok(h.gather(1, index))
    }

    /// Starts incremental decoding: runs the prompts through the model, filling `cache` (which must be
    /// empty), and returns each prompt's next-token logits `(batch, vocab)`.
    pub fn prefill(&self, prompts: &[&[u32]], cache: &mut KvCache<B>) -> Result<Tensor<B, 2>, ModelError> {
        let seq = self.check_tokens(prompts)?;
        if cache.batch_size() != 0 {
            return Err(ModelError::Input("prefill needs an empty cache".into()));
        }
        if cache.num_layers() != self.config.num_hidden_layers {
            return Err(ModelError::Input(format!(
                "the cache has {} layers, the model {}",
                cache.num_layers(),
                self.config.num_hidden_layers
            )));
        }
        let lengths: Vec<usize> = prompts.iter().map(|r| r.len()).collect();
        let positions = cache.begin_step(&lengths, seq);
        let mask = self.attention_mask(cache, seq);
        let rope = self.rope(&positions, prompts.len(), seq);
        let tokens = self.token_tensor(prompts, seq, 0);
        let h = self.body(tokens, &rope, mask, Some(cache));
        // Each row's last real token.
        let last: Vec<i64> = lengths.iter().map(|&l| (l - 1) as i64).collect();
        let [b, _, hidden] = h.dims();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(last, [b]), &self.device())
            .reshape([b, 1, 1])
            .expand([b, 1, hidden]);
        Ok(self.logits(h.gather(1, index)).squeeze_dim(1))
    }

    /// One decoding step: appends one token per row and returns the next-token logits `(batch, vocab)`.
    pub fn decode(&self, tokens: &[u32], cache: &mut KvCache<B>) -> Result<Tensor<B, 2>, ModelError> {
        if tokens.len() != cache.batch_size() {
            return Err(ModelError::Input(format!(
                "{} tokens for a cache of {} rows",
                tokens.len(),
                cache.batch_size()
            )));
        }
        let rows: Vec<&[u32]> = tokens.chunks(1).collect();
        self.check_tokens(&rows)?;
        let positions = cache.begin_step(&vec![1; tokens.len()], 1);
        let mask = self.attention_mask(cache, 1);
        let rope = self.rope(&positions, tokens.len(), 1);
        let h = self.body(self.token_tensor(&rows, 1, 0), &rope, mask, Some(cache));
        Ok(self.logits(h).squeeze_dim(1))
    }

    /// An empty cache sized for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.config.num_hidden_layers)
    }
}
