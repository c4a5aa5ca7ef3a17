//! The learner and the `rlvr` command line.
//!
//! # Layout
//! - [`config`]: the run configuration (`run.toml`), its defaults, validation and `rlvr plan`
//! - [`data`]: training and held-out prompts (JSONL datasets, procedural arithmetic), resumable
//! - [`reward`]: prompts through the chat template; responses scored by the math verifier
//! - [`algo`]: advantage estimators and policy losses (pure functions over tensors)
//! - [`critic`]: PPO's value model (the policy's transformer with a scalar head)
//! - [`optim`]: AdamW, global-norm gradient clipping and learning-rate schedules
//! - [`trainer`]: one learner update from scored rollouts
//! - [`eval`]: pass@1 / pass@k over seeds
//! - [`memory`]: the allocator settings of the `rlvr` process
//! - [`driver`]: the learner's loop over any transport (one function, one span per phase)
//! - [`run`]: the embedded mode of `rlvr train`, the start of a run, checkpoints and resume
//! - [`distributed`]: `rlvr learner`, `rlvr ctl` and `rlvr up` over Redis
//! - [`telemetry`]: the run's Prometheus metrics, live events and last rollout groups
//! - [`dashboard`]: the operator dashboard (axum), with `/metrics`, `/healthz` and `/readyz`
//! - [`cli`]: the `rlvr` commands

pub mod algo;
pub mod cli;
pub mod config;
pub mod critic;
pub mod dashboard;
pub mod data;
pub mod distributed;
pub mod driver;
pub mod eval;
pub mod memory;
pub mod optim;
pub mod reward;
pub mod run;
pub mod telemetry;
pub mod trainer;
