//! Shared parts of rlvr: checkpoint I/O, the GGUF importer, the tokenizer and chat template, and (with
//! the `model` feature) the transformer.
//!
//! # Layout
//! - [`checkpoint`]: HF safetensors weights on the host (f32/f16/bf16, sharded)
//! - [`gguf`]: GGUF reader, dequantisers and the HF-format importer
//! - [`tokenizer`]: HF tokenizer.json and the Jinja chat template
//! - [`model`]: the Llama / Qwen2 / Qwen3 transformer in burn (feature `model`)

pub mod checkpoint;
pub mod gguf;
pub mod tokenizer;
#[cfg(feature = "model")]
pub mod model;
