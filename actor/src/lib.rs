//! The rollout engine: batched sampling with the KV cache and per-token log-probs, groups sharing a
//! prefill, continuous batching, weight versions, and the actor loop around it.
//!
//! # Layout
//! - [`sampling`]: greedy / temperature / top-k / top-p / min-p choice of one token, with its log-prob
//! - [`engine`]: the continuous-batching [`engine::Engine`] over a [`rlvr_common::model::CausalLm`]
//! - [`generate`]: one-shot batched generation over the engine
//! - [`batch`]: JSONL prompts in, JSONL rollouts out (`rlvr generate --input`)
//! - [`actor_loop`]: prompt tasks in, rollout groups out (any transport), weight updates, staleness, shutdown
//! - [`service`]: `rlvr actor`, the actor process of a distributed run (Redis)
//! - [`metrics`]: the actor process's Prometheus metrics (weight version and syncs, groups)

pub mod actor_loop;
pub mod batch;
pub mod engine;
pub mod generate;
pub mod metrics;
pub mod sampling;
pub mod service;
