//! The building blocks of the decoder, with fields named after the HF checkpoint keys
//! (`q_proj.weight`, `input_layernorm.weight`, …) so loading needs no remap table.

use burn::module::{Module, Param};
use burn::tensor::{Bool, Tensor, backend::Backend};

use super::config::ModelConfig;
use super::fused::ModelBackend;
use super::kv_cache::KvCache;
use crate::checkpoint::HostTensor;

/// A parameter's values on the host (f32).
pub(crate) fn param_to_host<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> HostTensor {
    let t = p.val();
    let shape = t.dims().to_vec();
    HostTensor::new(shape, t.into_data().convert::<f32>().into_vec().expect("f32 tensor data"))
}

/// A linear layer holding its weight as HF stores it: `(out_features, in_features)`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    /// The weight and the bias (if any) on the host, under HF's `{name}.weight` / `{name}.bias`.
    pub fn to_host_weights(&self, name: &str) -> Vec<(String, HostTensor)> {
        let mut out = vec![(format!("{name}.weight"), param_to_host(&self.weight))];
        if let Some(b) = &self.bias {
            out.push((format!("{name}.bias"), param_to_host(b)));
        }
        out
    }
}

impl<B: ModelBackend> Linear<B> {
    /// `(..., in) -> (..., out)`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mut dims = x.dims();
        let rows = dims[..D - 1].iter().product();
        let weight = self.weight.val();
        dims[D - 1] = weight.dims()[0];
        // A 2-D product with the weight's transpose as a strided view: the CPU gemm reads it in place,
        // where burn's `linear` would reshape it to the input's rank and copy every weight every call.
        let y = <B as ModelBackend>::linear(x.reshape([rows, weight.dims()[1]]), weight);
        let y = match &self.bias {
            Some(b) => y.add(b.val().unsqueeze()),
            None => y,
        };
        y.reshape(dims)
    }
}

/// Token embeddings `(vocab, hidden)`.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
}

/// RMSNorm (Zhang & Sennrich 2019): `x / sqrt(mean(x²) + eps) * weight`, over the last dimension.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub eps: f64,
}

impl<B: ModelBackend> RmsNorm<B> {
    /// `(..., d) -> (..., d)`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let d = dims[D - 1];
        B::rms_norm(x.reshape([dims.iter().product::<usize>() / d, d]), self.weight.val(), self.eps).reshape(dims)
    }
}

/// The RoPE tables of one forward pass for the query heads and for the key heads, `(batch, seq, heads,
/// head_dim)` each: repeated over the heads so that the products need no broadcast, and with the first
/// half of `sin` negated, so that rotate-half is a swap of halves ([`ModelBackend::rope`]).
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    pub q_cos: Tensor<B, 4>,
    pub q_sin: Tensor<B, 4>,
    pub k_cos: Tensor<B, 4>,
    pub k_sin: Tensor<B, 4>,
}

/// Multi-head attention with grouped-query key/value heads, optional q/k bias and Qwen3's q/k norm.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub q_norm: Option<RmsNorm<B>>,
    pub k_norm: Option<RmsNorm<B>>,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub num_kv_heads: usize,
    #[module(skip)]
    pub head_dim: usize,
}

impl<B: ModelBackend> Attention<B> {
    /// `x: (batch, seq, hidden)`, `mask: (batch, kv_heads, groups * seq, keys)` with `true` = hidden from
    /// the query (laid out as `KvCache::step_mask` builds it);
    /// with a cache, `keys` counts the cached columns plus this step's. Returns `(batch, seq, hidden)`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        mask: Tensor<B, 4, Bool>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // 1. Projections: (B, L, hidden) -> (B, L, heads, D).
        let q = self.q_proj.forward(x.clone()).reshape([batch, seq, h, d]);
        let k = self.k_proj.forward(x.clone()).reshape([batch, seq, kvh, d]);
        let v = self.v_proj.forward(x).reshape([batch, seq, kvh, d]);
        // 2. Qwen3 normalises each head before RoPE.
        let q = match &self.q_norm {
            Some(norm) => norm.forward(q),
            None => q,
        };
        let k = match &self.k_norm {
            Some(norm) => norm.forward(k),
            None => k,
        };
        // 3. Rotate by position; keys and values to (B, kv_heads, L, D) (strided views).
        let q = B::rope(q, rope.q_cos.clone(), rope.q_sin.clone());
        let k = B::rope(k, rope.k_cos.clone(), rope.k_sin.clone()).swap_dims(1, 2);
        let v = v.swap_dims(1, 2);
        // 4. With a cache: append this step and attend over every cached column.
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        // 5.-6. Attention, then (B, L, heads * D) -> (B, L, hidden).
        self.o_proj.forward(grouped_attention(q, k, v, mask, kvh))
    }
}

/// Scaled dot-product attention with grouped-query key/value heads (query head `i` reads key/value head
/// `i / (heads / kv_heads)`, as HF's `repeat_kv`), without materialising the repeated keys and values:
/// the query heads of one key/value head are stacked as rows of one matrix instead. The products read
/// the keys and values as strided views, so a cache is never copied to attend over it.
///
/// `q: (B, L, heads, D)`, `k, v: (B, kv_heads, T, D)`, `mask: (B, kv_heads, g * L, T)` with `true` =
/// hidden (every query sees at least key 0, so no row is fully masked). Returns `(B, L, heads * D)`.
fn grouped_attention<B: ModelBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Tensor<B, 4, Bool>,
    kv_heads: usize,
) -> Tensor<B, 3> {
    let [b, l, h, d] = q.dims();
    let g = h / kv_heads;
    // (B, L, heads, D) -> (B, kv_heads, g * L, D); free when L = 1 (decoding).
    let q = q.mul_scalar(1.0 / (d as f64).sqrt());
    let q = if l == 1 {
        q.reshape([b, kv_heads, g, d])
    } else {
        q.reshape([b, l, kv_heads, g, d]).permute([0, 2, 3, 1, 4]).reshape([b, kv_heads, g * l, d])
    };
    let out = <B as ModelBackend>::attention(q, k, v, mask);
    if l == 1 {
        out.reshape([b, 1, h * d])
    } else {
        out.reshape([b, kv_heads, g, l, d]).permute([0, 3, 1, 2, 4]).reshape([b, l, h * d])
    }
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: ModelBackend> Mlp<B> {
    /// `(B, L, hidden) -> (B, L, hidden)`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, l, hidden] = x.dims();
        let x = x.reshape([b * l, hidden]);
        let gated = B::swiglu(self.gate_proj.forward(x.clone()), self.up_proj.forward(x));
        self.down_proj.forward(gated).reshape([b, l, hidden])
    }
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub self_attn: Attention<B>,
    pub mlp: Mlp<B>,
    pub input_layernorm: RmsNorm<B>,
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: ModelBackend> DecoderLayer<B> {
    /// `(B, L, hidden) -> (B, L, hidden)`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        mask: Tensor<B, 4, Bool>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let h = x.clone().add(self.self_attn.forward(self.input_layernorm.forward(x), rope, mask, cache));
        h.clone().add(self.mlp.forward(self.post_attention_layernorm.forward(h)))
    }
}

/// The shapes every parameter must have under `config`, by HF key (used to check loaded weights and to
/// initialise random models).
pub fn expected_shapes(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (hs, is, d) = (config.hidden_size, config.intermediate_size, config.head_dim);
    let (q, kv) = (config.num_attention_heads * d, config.num_key_value_heads * d);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![config.vocab_size, hs])];
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut push = |name: &str, shape: Vec<usize>| out.push((format!("{p}.{name}"), shape));
        push("self_attn.q_proj.weight", vec![q, hs]);
        push("self_attn.k_proj.weight", vec![kv, hs]);
        push("self_attn.v_proj.weight", vec![kv, hs]);
        push("self_attn.o_proj.weight", vec![hs, q]);
        if config.qkv_bias {
            push("self_attn.q_proj.bias", vec![q]);
            push("self_attn.k_proj.bias", vec![kv]);
            push("self_attn.v_proj.bias", vec![kv]);
        }
        if config.o_bias {
            push("self_attn.o_proj.bias", vec![hs]);
        }
        if config.qk_norm {
            push("self_attn.q_norm.weight", vec![d]);
            push("self_attn.k_norm.weight", vec![d]);
        }
        push("mlp.gate_proj.weight", vec![is, hs]);
        push("mlp.up_proj.weight", vec![is, hs]);
        push("mlp.down_proj.weight", vec![hs, is]);
        if config.mlp_bias {
            push("mlp.gate_proj.bias", vec![is]);
            push("mlp.up_proj.bias", vec![is]);
            push("mlp.down_proj.bias", vec![hs]);
        }
        push("input_layernorm.weight", vec![hs]);
        push("post_attention_layernorm.weight", vec![hs]);
    }
    out.push(("model.norm.weight".to_string(), vec![hs]));
    if !config.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![config.vocab_size, hs]));
    }
    out
}
