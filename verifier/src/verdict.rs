//! Verdicts are data: every check, whatever the model printed, ends in one of these.

use serde::{Deserialize, Serialize};

/// Why a check could not reach a correct/incorrect judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself was malformed (bad JSON, missing field, wrong type).
    BadRequest,
    /// The input exceeded a size limit.
    TooLarge,
    /// The ground truth could not be parsed, so nothing can be compared against it.
    BadGroundTruth,
    /// The optional judge endpoint failed.
    Judge,
    /// The code sandbox could not run (runtime missing, host failure).
    Sandbox,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Correct,
    Incorrect,
    /// The response declined to answer (truthfulness reward).
    Abstained,
    /// No answer could be extracted from the response.
    NoAnswer,
    /// The check ran out of its time or work budget.
    Timeout,
    /// The program hit the sandbox's memory cap.
    OutOfMemory,
    /// The program crashed, exited early or never let the harness confirm its tests.
    RuntimeError,
    Error(ErrorKind),
}

impl Outcome {
    /// The wire name used in `rlvr-verifier check` output.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Correct => "correct",
            Outcome::Incorrect => "incorrect",
            Outcome::Abstained => "abstained",
            Outcome::NoAnswer => "no_answer",
            Outcome::Timeout => "timeout",
            Outcome::OutOfMemory => "out_of_memory",
            Outcome::RuntimeError => "runtime_error",
            Outcome::Error(_) => "error",
        }
    }
}

/// A scored response. `details` is free-form, for logs and dashboards.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub reward: f32,
    pub outcome: Outcome,
    pub details: serde_json::Value,
}

impl Verdict {
    pub fn new(reward: f32, outcome: Outcome) -> Self {
        Verdict { reward, outcome, details: serde_json::Value::Null }
    }

    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Verdict {
            reward: 0.0,
            outcome: Outcome::Error(kind),
            details: serde_json::json!({ "error": message.into(), "kind": kind }),
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn is_correct(&self) -> bool {
        self.outcome == Outcome::Correct
    }

    /// The JSON object written by `rlvr-verifier check`.
    pub fn to_json(&self) -> serde_json::Value {
        let reward = if self.reward.is_finite() { self.reward } else { 0.0 };
        serde_json::json!({
            "reward": reward,
            "outcome": self.outcome.as_str(),
            "details": self.details,
        })
    }
}

/// An infrastructure fault (not a property of the response): a closed channel, a broken pipe.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("while reading input: {0}")]
    Input(#[source] std::io::Error),
    #[error("while writing output: {0}")]
    Output(#[source] std::io::Error),
    #[error("the rollout source failed: {0}")]
    Source(String),
    #[error("the scored-rollout sink failed: {0}")]
    Sink(String),
}
