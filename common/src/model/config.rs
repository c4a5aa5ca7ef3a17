//! The model configuration, read from an HF `config.json`, validated and resolved into one typed struct.
//!
//! Field names follow transformers' `LlamaConfig`, `Qwen2Config` and `Qwen3Config`. Both the
//! transformers 4 spelling (`rope_theta` + `rope_scaling`) and the transformers 5 one (`rope_parameters`)
//! are read.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ModelError;

/// Which member of the family a checkpoint is; decides the parts that differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Llama,
    Qwen2,
    Qwen3,
}

impl Architecture {
    /// The transformers class name written into `config.json`.
    pub fn hf_class(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
        }
    }
}

/// How RoPE frequencies are rescaled for long context (transformers' `rope_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's piecewise rescaling of the low frequencies.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// A validated model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q, k and v projections (Qwen2 always; Llama and Qwen3 when `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama and Qwen3 with `attention_bias`).
    pub o_bias: bool,
    /// Bias on the MLP projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Per-head RMSNorm of queries and keys before RoPE (Qwen3).
    pub qk_norm: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// The `config.json` as read, so that saving writes back every field we do not model.
    pub raw: Value,
}

fn bad(field: &str, msg: impl std::fmt::Display) -> ModelError {
    ModelError::Config { field: field.to_string(), message: msg.to_string() }
}

fn get_usize(raw: &Value, field: &str) -> Result<usize, ModelError> {
    match raw.get(field) {
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| bad(field, format!("must be a positive integer, found {v}"))),
        None => Err(bad(field, "is missing; every config.json of this family has it")),
    }
}

fn get_f64(raw: &Value, field: &str) -> Result<Option<f64>, ModelError> {
    match raw.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| bad(field, format!("must be a number, found {v}"))),
    }
}

fn get_bool(raw: &Value, field: &str, default: bool) -> Result<bool, ModelError> {
    match raw.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| bad(field, format!("must be true or false, found {v}"))),
    }
}

fn token_ids(raw: &Value, field: &str) -> Result<Vec<u32>, ModelError> {
    let one = |v: &Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(field, format!("must be a token id or a list of them, found {v}")))
    };
    match raw.get(field) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
        let raw: Value = serde_json::from_str(&text)
            .map_err(|e| bad("config.json", format!("{} is not valid JSON: {e}", path.display())))?;
        Self::from_json(raw)
    }

    /// Validates a parsed `config.json`; rejects what the model cannot run, naming the field.
    pub fn from_json(raw: Value) -> Result<Self, ModelError> {
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
        let architecture = match model_type {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "qwen3" => Architecture::Qwen3,
            other => {
                return Err(bad(
                    "model_type",
                    format!("is {other:?}; supported are \"llama\", \"qwen2\" and \"qwen3\""),
                ));
            }
        };
        let hidden_size = get_usize(&raw, "hidden_size")?;
        let num_attention_heads = get_usize(&raw, "num_attention_heads")?;
        let num_key_value_heads = match raw.get("num_key_value_heads") {
            None | Some(Value::Null) => num_attention_heads,
            Some(_) => get_usize(&raw, "num_key_value_heads")?,
        };
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(bad(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = match raw.get("head_dim") {
            None | Some(Value::Null) => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(bad(
                        "head_dim",
                        "is missing and hidden_size is not divisible by num_attention_heads; set head_dim",
                    ));
                }
                hidden_size / num_attention_heads
            }
            Some(_) => get_usize(&raw, "head_dim")?,
        };
        if head_dim % 2 != 0 {
            return Err(bad("head_dim", format!("is {head_dim}; RoPE needs an even head dimension")));
        }
        let act = raw.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
        if act != "silu" {
            return Err(bad("hidden_act", format!("is {act:?}; only \"silu\" (SwiGLU) is supported")));
        }
        if get_bool(&raw, "use_sliding_window", false)? {
            return Err(bad("use_sliding_window", "is true; sliding-window attention is not supported, set it to false"));
        }
        let attention_bias = get_bool(&raw, "attention_bias", false)?;
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            Architecture::Llama | Architecture::Qwen3 => (attention_bias, attention_bias),
        };
        let mlp_bias = get_bool(&raw, "mlp_bias", false)?;
        let (rope_theta, rope_scaling) = parse_rope(&raw)?;
        let eps = get_f64(&raw, "rms_norm_eps")?.unwrap_or(1e-6);
        if eps <= 0.0 {
            return Err(bad("rms_norm_eps", format!("is {eps}; it must be positive")));
        }
        let config = Self {
            architecture,
            vocab_size: get_usize(&raw, "vocab_size")?,
            hidden_size,
            intermediate_size: get_usize(&raw, "intermediate_size")?,
            num_hidden_layers: get_usize(&raw, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings: get_usize(&raw, "max_position_embeddings")?,
            tie_word_embeddings: get_bool(&raw, "tie_word_embeddings", false)?,
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm: architecture == Architecture::Qwen3,
            bos_token_id: token_ids(&raw, "bos_token_id")?.first().copied(),
            eos_token_ids: token_ids(&raw, "eos_token_id")?,
            pad_token_id: token_ids(&raw, "pad_token_id")?.first().copied(),
            raw,
        };
        Ok(config)
    }

    /// The number of query heads sharing one key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// The number of parameters (counting tied embeddings once).
    pub fn num_parameters(&self) -> usize {
        let (h, i, d) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let (q, kv) = (self.num_attention_heads * d, self.num_key_value_heads * d);
        let mut attn = h * q + 2 * h * kv + q * h;
        if self.qkv_bias {
            attn += q + 2 * kv;
        }
        if self.o_bias {
            attn += h;
        }
        if self.qk_norm {
            attn += 2 * d;
        }
        let mut mlp = 3 * h * i;
        if self.mlp_bias {
            mlp += 2 * i + h;
        }
        let layer = attn + mlp + 2 * h;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + self.num_hidden_layers * layer + h
    }

    /// The `config.json` to write beside saved weights: the one read, with `torch_dtype` updated.
    pub fn to_json(&self, dtype: &str) -> Value {
        let mut raw = self.raw.clone();
        if let Value::Object(map) = &mut raw {
            map.insert("torch_dtype".into(), Value::String(dtype.into()));
            map.entry("architectures")
                .or_insert_with(|| Value::Array(vec![Value::String(self.architecture.hf_class().into())]));
        }
        raw
    }
}

/// Reads RoPE settings in either spelling: transformers 4 (`rope_theta`, `rope_scaling`) or
/// transformers 5 (`rope_parameters` holding `rope_type`, `rope_theta` and the scaling fields).
fn parse_rope(raw: &Value) -> Result<(f64, RopeScaling), ModelError> {
    let params = raw.get("rope_parameters").filter(|v| v.is_object());
    let scaling = params.or_else(|| raw.get("rope_scaling").filter(|v| v.is_object()));
    let field = if params.is_some() { "rope_parameters" } else { "rope_scaling" };
    let theta = match params.and_then(|p| p.get("rope_theta")) {
        Some(v) => v.as_f64().ok_or_else(|| bad("rope_parameters.rope_theta", "must be a number"))?,
        None => get_f64(raw, "rope_theta")?.unwrap_or(10_000.0),
    };
    if theta <= 0.0 {
        return Err(bad("rope_theta", format!("is {theta}; it must be positive")));
    }
    let Some(s) = scaling else { return Ok((theta, RopeScaling::Default)) };
    let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default");
    let num = |name: &str| -> Result<f64, ModelError> {
        s.get(name)
            .and_then(Value::as_f64)
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| bad(&format!("{field}.{name}"), format!("is required by rope_type {kind:?} and must be a positive number")))
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: num("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => {
            return Err(bad(
                &format!("{field}.rope_type"),
                format!("is {other:?}; supported are \"default\", \"linear\" and \"llama3\""),
            ));
        }
    };
    Ok((theta, scaling))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "llama", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 48,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "max_position_embeddings": 64, "rms_norm_eps": 1e-5})
    }

    #[test]
    fn defaults_and_derived_fields() {
        let c = ModelConfig::from_json(base()).unwrap();
        assert_eq!(c.head_dim, 8);
        assert_eq!(c.group_size(), 2);
        assert_eq!(c.rope_theta, 10_000.0);
        assert_eq!(c.rope_scaling, RopeScaling::Default);
        assert!(!c.qkv_bias && !c.qk_norm);
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            ("model_type", json!("gpt2")),
            ("hidden_act", json!("gelu")),
            ("num_key_value_heads", json!(3)),
            ("use_sliding_window", json!(true)),
            ("hidden_size", json!(0)),
        ];
        for (field, value) in cases {
            let mut raw = base();
            raw[field] = value;
            let err = ModelConfig::from_json(raw).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let mut raw = base();
        raw["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        let err = ModelConfig::from_json(raw).unwrap_err().to_string();
        assert!(err.contains("rope_scaling.rope_type") && err.contains("yarn"), "{err}");
    }

    #[test]
    fn both_rope_spellings() {
        let mut v4 = base();
        v4["rope_theta"] = json!(500000.0);
        v4["rope_scaling"] = json!({"rope_type": "linear", "factor": 2.0});
        let mut v5 = base();
        v5["rope_parameters"] = json!({"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0});
        let (a, b) = (ModelConfig::from_json(v4).unwrap(), ModelConfig::from_json(v5).unwrap());
        assert_eq!((a.rope_theta, &a.rope_scaling), (b.rope_theta, &b.rope_scaling));
        assert_eq!(a.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    }
}
