//! The rollout engine: batched sampling with the KV cache and per-token log-probs.
//!
//! # Layout
//! - [`sampling`]: greedy / temperature / top-k / top-p choice of one token, with its log-prob
//! - [`generate`]: batched generation over a [`rlvr_common::model::CausalLm`]

pub mod generate;
pub mod sampling;
