//! Shared parts of rlvr: checkpoint I/O, the GGUF importer, the tokenizer and chat template, and (with
//! the `model` feature) the transformer.
//!
//! # Layout
//! - [`checkpoint`]: HF safetensors weights on the host (f32/f16/bf16, sharded)
//! - [`gguf`]: GGUF reader, dequantisers and the HF-format importer
//! - [`tokenizer`]: HF tokenizer.json and the Jinja chat template
//! - [`model`]: the Llama / Qwen2 / Qwen3 transformer in burn (feature `model`)
//! - [`rollout`]: the rollout record and its MessagePack encoding
//! - [`process`]: logging and signal handling of every binary
//! - [`protocol`]: the wire messages between learner, actors and verifiers, and their envelope
//! - [`transport`]: the work queues and the control plane, in process and over Redis (feature `redis`)
//! - [`weights`]: weight updates (version + checksum) and their transports
//! - [`observe`]: Prometheus metrics, `/metrics`, `/healthz` and `/readyz` (feature `observe`)

pub mod checkpoint;
pub mod gguf;
pub mod process;
pub mod protocol;
pub mod rollout;
pub mod tokenizer;
pub mod transport;
pub mod weights;
#[cfg(feature = "model")]
pub mod model;
#[cfg(feature = "observe")]
pub mod observe;
