//! The decoder-only transformer of the Llama / Qwen2 / Qwen3 family, in burn.
//!
//! # Layout
//! - [`config`]: `config.json` → validated [`ModelConfig`]
//! - [`rope`]: rotary embedding frequencies and tables
//! - [`kv_cache`]: the [`KvCache`] for incremental decoding
//! - [`fused`]: attention, RMSNorm, SwiGLU and token log-probs as single autodiff nodes ([`ModelBackend`])
//! - `layers`: linear, RMSNorm, attention, MLP, decoder block
//! - `causal_lm`: [`CausalLm`], loading and saving HF checkpoints, the forward entry points

pub mod config;
pub mod fused;
pub mod kv_cache;
pub mod rope;

mod causal_lm;
mod layers;

use std::path::PathBuf;

pub use causal_lm::{CausalLm, Entropy, Model};
pub use fused::ModelBackend;
pub use config::{Architecture, ModelConfig, RopeScaling};
pub use kv_cache::KvCache;
pub use layers::{Attention, DecoderLayer, Embedding, Linear, Mlp, RmsNorm};

use crate::checkpoint::CheckpointError;

/// The CPU backend.
pub type Cpu = burn::backend::Flex;
/// The CPU backend with autodiff, for training.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// Errors building or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("config.json: `{field}` {message}")]
    Config { field: String, message: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("weight `{name}` {message}")]
    Weight { name: String, message: String },
    #[error("bad model input: {0}")]
    Input(String),
}
