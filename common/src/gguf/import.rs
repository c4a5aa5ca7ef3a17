//! GGUF (`general.architecture = llama`) to a Hugging Face model directory: `model.safetensors` (F32,
//! the exact dequantised values), `config.json`, `generation_config.json`, `tokenizer.json`,
//! `tokenizer_config.json`. transformers' `LlamaForCausalLM` and our model load the result.
//!
//! Two layout differences need undoing (as transformers' `integrations/ggml.py` and llama.cpp's
//! `convert_hf_to_gguf.py` document them):
//! - GGUF dims list the innermost dimension first, so an HF `(out, in)` weight has GGUF dims `[in, out]`
//!   with identical bytes: only the shape is reversed.
//! - llama.cpp permutes the rows of `attn_q` / `attn_k` so that its RoPE can rotate adjacent pairs; HF
//!   rotates the two halves of each head. [`unpermute_qk_rows`] restores HF's order.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use safetensors::{Dtype, View};
use serde::Serialize;
use serde_json::{Value, json};

use super::tokenizer::{tokenizer_config_json, tokenizer_json};
use super::{GgufError, GgufFile, TensorInfo};

/// Per-block GGUF tensor names and their HF names (under `model.layers.N.`), from llama.cpp's
/// `gguf-py/gguf/tensor_mapping.py`.
const BLOCK_TENSORS: [(&str, &str); 9] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// Model-level GGUF tensor names and their HF names.
const GLOBAL_TENSORS: [(&str, &str); 3] = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// The HF name of a llama GGUF weight (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`),
/// `None` for names outside the table.
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    let stem = gguf_name.strip_suffix(".weight")?;
    if let Some((_, hf)) = GLOBAL_TENSORS.iter().find(|(g, _)| *g == stem) {
        return Some(format!("{hf}.weight"));
    }
    let (layer, part) = stem.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, hf) = BLOCK_TENSORS.iter().find(|(g, _)| *g == part)?;
    Some(format!("model.layers.{layer}.{hf}.weight"))
}

/// Undoes llama.cpp's Q/K row permutation of a `(rows, cols)` row-major weight with `n_heads` heads of
/// `rows / n_heads` rows each.
///
/// llama.cpp (`convert_hf_to_gguf.py`, `LlamaModel.permute`) views HF rows as `(n_heads, 2, head_dim/2)`
/// and swaps the last two axes, so GGUF row `2i + j` of a head is HF row `j * head_dim/2 + i`. This views
/// GGUF rows as `(n_heads, head_dim/2, 2)` and swaps them back.
pub fn unpermute_qk_rows(data: &[f32], n_heads: usize, cols: usize) -> Result<Vec<f32>, GgufError> {
    let bad = |why: String| GgufError::Malformed(format!("cannot un-permute Q/K rows: {why}"));
    if cols == 0 || n_heads == 0 || !data.len().is_multiple_of(cols) {
        return Err(bad(format!("{} values are not rows of {cols}", data.len())));
    }
    let rows = data.len() / cols;
    if !rows.is_multiple_of(2 * n_heads) {
        return Err(bad(format!(
            "{rows} rows are not {n_heads} heads of an even head_dim"
        )));
    }
    let head_dim = rows / n_heads;
    let half = head_dim / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * head_dim + 2 * i + j) * cols;
                let dst = (h * head_dim + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&data[src..src + cols]);
            }
        }
    }
    Ok(out)
}

/// The `LlamaForCausalLM` hyper-parameters stored in a llama GGUF.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlamaHyperParams {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

/// An f32 from the file as the shortest decimal that reads back as the same f32 (`1e-5`, not
/// `9.999999747378752e-6`), which is what the HF config held before conversion.
fn tidy_f32(v: f64) -> f64 {
    let s = (v as f32).to_string();
    f64::from_str(&s).unwrap_or(v)
}

impl LlamaHyperParams {
    /// Reads and checks the hyper-parameters; fails on any other architecture.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, GgufError> {
        let arch = gguf.require("general.architecture", GgufFile::get_str)?;
        if arch != "llama" {
            return Err(GgufError::UnsupportedArchitecture(arch.to_owned()));
        }
        let int = |key: &str| gguf.require(&format!("llama.{key}"), GgufFile::get_int::<usize>);
        let hidden_size = int("embedding_length")?;
        let num_attention_heads = int("attention.head_count")?;
        let num_key_value_heads = gguf
            .get_int::<usize>("llama.attention.head_count_kv")?
            .unwrap_or(num_attention_heads);
        if num_attention_heads == 0
            || num_key_value_heads == 0
            || !num_attention_heads.is_multiple_of(num_key_value_heads)
        {
            return Err(GgufError::metadata(
                "llama.attention.head_count_kv",
                format!("{num_key_value_heads} KV heads do not divide {num_attention_heads} heads"),
            ));
        }
        let head_dim = match gguf.get_int::<usize>("llama.attention.key_length")? {
            Some(d) => d,
            None if hidden_size.is_multiple_of(num_attention_heads) => {
                hidden_size / num_attention_heads
            }
            None => {
                return Err(GgufError::metadata(
                    "llama.attention.key_length",
                    format!(
                        "is missing and {hidden_size} is not divisible by {num_attention_heads} heads"
                    ),
                ));
            }
        };
        if let Some(rope_dims) = gguf.get_int::<usize>("llama.rope.dimension_count")?
            && rope_dims != head_dim
        {
            return Err(GgufError::metadata(
                "llama.rope.dimension_count",
                format!(
                    "is {rope_dims}, but head_dim is {head_dim}: partial rotary embeddings are not supported"
                ),
            ));
        }
        if let Some(scaling) = gguf.get_str("llama.rope.scaling.type")?
            && scaling != "none"
        {
            return Err(GgufError::metadata(
                "llama.rope.scaling.type",
                format!("is `{scaling}`: RoPE scaling is not supported by the importer"),
            ));
        }
        let embd = gguf
            .tensor("token_embd.weight")
            .ok_or_else(|| GgufError::tensor("token_embd.weight", "is missing"))?;
        let tokens = gguf
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map(<[_]>::len);
        let vocab_size = match gguf.get_int::<usize>("llama.vocab_size")? {
            Some(v) => v,
            None => tokens.unwrap_or_else(|| embd.dims.get(1).copied().unwrap_or(0) as usize),
        };
        let token_id = |key: &str| gguf.get_int::<u32>(&format!("tokenizer.ggml.{key}"));
        Ok(Self {
            vocab_size,
            hidden_size,
            intermediate_size: int("feed_forward_length")?,
            num_hidden_layers: int("block_count")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: tidy_f32(gguf.require(
                "llama.attention.layer_norm_rms_epsilon",
                GgufFile::get_float,
            )?),
            rope_theta: tidy_f32(gguf.get_float("llama.rope.freq_base")?.unwrap_or(10_000.0)),
            max_position_embeddings: int("context_length")?,
            tie_word_embeddings: gguf.tensor("output.weight").is_none(),
            bos_token_id: token_id("bos_token_id")?,
            eos_token_id: token_id("eos_token_id")?,
            pad_token_id: token_id("padding_token_id")?,
        })
    }

    /// The HF shape (outermost first) each weight must have.
    fn expected_shape(&self, hf_name: &str) -> Option<Vec<usize>> {
        let (h, q, kv, ffn, v) = (
            self.hidden_size,
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
            self.intermediate_size,
            self.vocab_size,
        );
        let part = hf_name.strip_suffix(".weight")?;
        // `model.layers.N.self_attn.q_proj` -> `self_attn.q_proj`
        let part = match part.strip_prefix("model.layers.") {
            Some(rest) => rest.split_once('.')?.1,
            None => part,
        };
        Some(match part {
            "model.embed_tokens" | "lm_head" => vec![v, h],
            "model.norm" | "input_layernorm" | "post_attention_layernorm" => vec![h],
            "self_attn.q_proj" => vec![q, h],
            "self_attn.k_proj" | "self_attn.v_proj" => vec![kv, h],
            "self_attn.o_proj" => vec![h, q],
            "mlp.gate_proj" | "mlp.up_proj" => vec![ffn, h],
            "mlp.down_proj" => vec![h, ffn],
            _ => return None,
        })
    }

    /// `config.json` for `LlamaForCausalLM`.
    pub fn config_json(&self) -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "mlp_bias": false,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "pretraining_tp": 1,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": null,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
            "use_cache": true,
            "vocab_size": self.vocab_size,
        })
    }

    /// `generation_config.json`: the special token ids.
    pub fn generation_config_json(&self) -> Value {
        let mut config = serde_json::Map::new();
        for (key, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(id) = id {
                config.insert(key.to_owned(), json!(id));
            }
        }
        Value::Object(config)
    }
}

/// What [`import_gguf`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub architecture: String,
    pub hyper_params: LlamaHyperParams,
    /// Tensors written to `model.safetensors`.
    pub n_tensors: usize,
    pub n_parameters: u64,
    /// How many source tensors had each ggml type, e.g. `{"F32": 61, "Q4_1": 210, "Q8_0": 1}`.
    pub source_types: BTreeMap<String, usize>,
    /// Every file written, in `out_dir`.
    pub files: Vec<PathBuf>,
}

/// A tensor that is dequantised only when the safetensors writer asks for its bytes, so that one
/// tensor at a time is held in f32.
struct PendingTensor<'a> {
    gguf: &'a GgufFile,
    info: &'a TensorInfo,
    shape: Vec<usize>,
    /// `Some(n_heads)` for Q/K weights.
    unpermute_heads: Option<usize>,
    /// The first failure (which validation should make impossible); checked after writing.
    failure: &'a RefCell<Option<GgufError>>,
}

impl PendingTensor<'_> {
    fn values(&self) -> Result<Vec<f32>, GgufError> {
        let values = self.gguf.dequantize_info(self.info)?;
        match (self.unpermute_heads, self.shape.as_slice()) {
            (Some(n_heads), &[_, cols]) => unpermute_qk_rows(&values, n_heads, cols),
            _ => Ok(values),
        }
    }
}

impl View for PendingTensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self.values() {
            Ok(values) => Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            Err(e) => {
                self.failure.borrow_mut().get_or_insert(e);
                Cow::Owned(vec![0; self.data_len()])
            }
        }
    }

    fn data_len(&self) -> usize {
        self.info.n_elements as usize * 4
    }
}

fn write_json(path: &Path, value: &Value, pretty: bool) -> Result<(), GgufError> {
    let mut bytes = if pretty {
        serde_json::to_vec_pretty(value)?
    } else {
        serde_json::to_vec(value)?
    };
    bytes.push(b'\n');
    std::fs::write(path, bytes).map_err(|e| GgufError::io("write", path, e))
}

/// Converts a llama GGUF file into an HF model directory `out_dir` (created if needed; files already
/// there with the same names are replaced).
pub fn import_gguf(gguf_path: &Path, out_dir: &Path) -> Result<ImportReport, GgufError> {
    let gguf = GgufFile::open(gguf_path)?;
    let params = LlamaHyperParams::from_gguf(&gguf)?;

    // 1. Build the tokenizer first: it is cheap, and a bad vocabulary should fail before 500 MB are written.
    let tokenizer = tokenizer_json(&gguf)?;
    let tokenizer_text = serde_json::to_string(&tokenizer)?;
    tokenizers::Tokenizer::from_str(&tokenizer_text).map_err(|e| {
        GgufError::Tokenizer(format!("the converted tokenizer.json does not load: {e}"))
    })?;
    let tokenizer_config = tokenizer_config_json(&gguf)?;

    // 2. Map and check every tensor before writing any.
    let failure = RefCell::new(None);
    let mut pending = Vec::with_capacity(gguf.tensors().len());
    let mut source_types = BTreeMap::new();
    let mut seen = HashMap::new();
    for info in gguf.tensors() {
        let hf_name = hf_tensor_name(&info.name).ok_or_else(|| {
            GgufError::tensor(
                &info.name,
                "has no Hugging Face llama name (unsupported tensor for this importer)",
            )
        })?;
        if !info.ggml_type.can_dequantize() {
            return Err(GgufError::UnsupportedType {
                name: info.name.clone(),
                ty: info.ggml_type,
                supported: super::GgmlType::supported_list(),
            });
        }
        let shape = info.shape();
        let expected = params.expected_shape(&hf_name).unwrap_or_default();
        if shape != expected {
            return Err(GgufError::tensor(
                &info.name,
                format!(
                    "has HF shape {shape:?}, but the metadata implies {expected:?} for `{hf_name}`"
                ),
            ));
        }
        let unpermute_heads = if info.name.ends_with(".attn_q.weight") {
            Some(params.num_attention_heads)
        } else if info.name.ends_with(".attn_k.weight") {
            Some(params.num_key_value_heads)
        } else {
            None
        };
        *source_types.entry(info.ggml_type.to_string()).or_insert(0) += 1;
        seen.insert(hf_name.clone(), ());
        pending.push((
            hf_name,
            PendingTensor {
                gguf: &gguf,
                info,
                shape,
                unpermute_heads,
                failure: &failure,
            },
        ));
    }
    let mut required: Vec<String> = vec![
        "model.embed_tokens.weight".into(),
        "model.norm.weight".into(),
    ];
    for layer in 0..params.num_hidden_layers {
        required.extend(
            BLOCK_TENSORS
                .iter()
                .map(|(_, hf)| format!("model.layers.{layer}.{hf}.weight")),
        );
    }
    if let Some(missing) = required.iter().find(|name| !seen.contains_key(*name)) {
        return Err(GgufError::tensor(missing, "is missing from the GGUF file"));
    }
    let n_parameters = gguf.tensors().iter().map(|t| t.n_elements).sum();
    let n_tensors = pending.len();

    // 3. Write. The weights go to a temporary name first so that an interrupted import never leaves a
    //    plausible-looking `model.safetensors`.
    std::fs::create_dir_all(out_dir).map_err(|e| GgufError::io("create", out_dir, e))?;
    let weights = out_dir.join("model.safetensors");
    let partial = out_dir.join("model.safetensors.partial");
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let written = safetensors::serialize_to_file(pending, Some(metadata), &partial);
    let written = match failure.into_inner() {
        Some(e) => Err(e),
        None => written.map_err(GgufError::from),
    };
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &weights)
        .map_err(|e| GgufError::io("rename into place", &weights, e))?;

    let mut files = vec![weights];
    for (name, value, pretty) in [
        ("config.json", params.config_json(), true),
        (
            "generation_config.json",
            params.generation_config_json(),
            true,
        ),
        ("tokenizer.json", tokenizer, false),
        ("tokenizer_config.json", tokenizer_config, true),
    ] {
        let path = out_dir.join(name);
        write_json(&path, &value, pretty)?;
        files.push(path);
    }
    tracing::info!(tensors = n_tensors, parameters = n_parameters, out = %out_dir.display(), "imported GGUF");

    Ok(ImportReport {
        architecture: "llama".to_owned(),
        hyper_params: params,
        n_tensors,
        n_parameters,
        source_types,
        files,
    })
}
