//! The building blocks of the decoder, with fields named after the HF checkpoint keys
//! (`q_proj.weight`, `input_layernorm.weight`, …) so loading needs no remap table.

use burn::module::{Module, Param};
use burn::tensor::activation::silu;
use burn::tensor::module::{attention, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor, backend::Backend};

use super::config::ModelConfig;
use super::kv_cache::KvCache;

/// A linear layer holding its weight as HF stores it: `(out_features, in_features)`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    /// `(..., in) -> (..., out)`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // The transpose is a strided view; the CPU backend's gemm reads it without a copy.
        linear(x, self.weight.val().transpose(), self.bias.as_ref().map(|b| b.val()))
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

impl<B: Backend> RmsNorm<B> {
    /// `(..., d) -> (..., d)`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let inv_rms = x.clone().powi_scalar(2).mean_dim(D - 1).add_scalar(self.eps).sqrt().recip();
        x.mul(inv_rms).mul(self.weight.val().unsqueeze())
    }
}

/// The RoPE tables of one forward pass, `(batch, 1, seq, head_dim)` each.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    pub cos: Tensor<B, 4>,
    pub sin: Tensor<B, 4>,
}

impl<B: Backend> Rope<B> {
    /// Rotates `(batch, heads, seq, head_dim)` by position, rotate-half convention (as HF's Llama).
    fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, _, d] = x.dims();
        let half = d / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x.mul(self.cos.clone()).add(rotated.mul(self.sin.clone()))
    }
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

impl<B: Backend> Attention<B> {
    /// `x: (batch, seq, hidden)`, `mask: (batch, 1, seq, keys)` with `true` = hidden from the query;
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
        // 3. (B, L, heads, D) -> (B, heads, L, D), then rotate by position.
        let q = rope.apply(q.swap_dims(1, 2));
        let k = rope.apply(k.swap_dims(1, 2));
        let v = v.swap_dims(1, 2);
        // 4. With a cache: append this step and attend over every cached column.
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        // 5. Grouped-query attention: each key/value head serves `h / kvh` query heads.
        let (k, v) = (repeat_kv(k, h / kvh), repeat_kv(v, h / kvh));
        let out = attention(q, k, v, Some(mask), None, AttentionModuleOptions::default());
        // 6. (B, heads, L, D) -> (B, L, heads * D) -> (B, L, hidden).
        self.o_proj.forward(out.swap_dims(1, 2).reshape([batch, seq, h * d]))
    }
}

/// `(B, kv_heads, L, D) -> (B, kv_heads * groups, L, D)`, each head repeated `groups` times in place
/// (HF's `repeat_kv`).
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, groups: usize) -> Tensor<B, 4> {
    if groups == 1 {
        return x;
    }
    let [b, kvh, l, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kvh, groups, l, d]).reshape([b, kvh * groups, l, d])
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// `(B, L, hidden) -> (B, L, hidden)`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate.mul(self.up_proj.forward(x)))
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

impl<B: Backend> DecoderLayer<B> {
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
