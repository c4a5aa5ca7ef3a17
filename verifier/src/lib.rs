//! rlvr verifier: turns a model's response and a ground truth into a [`Verdict`], never panicking on
//! what the model printed and never running past its budget.
//!
//! # Layout
//! - [`verdict`]: `Verdict`, `Outcome`, errors.
//! - [`budget`]: time and work budgets enforced by counting (no signals).
//! - [`math`]: answer extraction, normalisation, LaTeX parsing and equivalence.
//! - [`code`]: code rewards: programs run against tests in a wasmtime sandbox (CPython for WASI).
//! - [`truth`]: ternary truthfulness reward (+1 correct, 0 abstained, -1 wrong) and its metrics.
//! - [`shaping`]: format reward and overlong penalty on top of any reward.
//! - [`check`]: the `rlvr-verifier check` batch (JSONL in, JSONL out, in order, all cores).
//! - [`worker`]: the verifier loop: rollout groups in, scored groups out, over any transport.
//! - [`metrics`]: Prometheus metrics of scoring (verdicts by kind and outcome, latency, time-outs).

pub mod budget;
pub mod check;
pub mod code;
pub mod math;
pub mod metrics;
pub mod shaping;
pub mod truth;
pub mod verdict;
pub mod worker;

pub use verdict::{ErrorKind, Outcome, Verdict, VerifierError};
