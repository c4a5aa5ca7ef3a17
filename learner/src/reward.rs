//! From problems to prompt tokens, and from response tokens to rewards: the chat template on one side,
//! the math verifier (and DAPO's overlong shaping) on the other.

use rlvr_common::tokenizer::{ChatMessage, Tokenizer};
use rlvr_verifier::math::{self, MathConfig};
use rlvr_verifier::shaping::{self, Overlong, ShapingConfig};
use rlvr_verifier::verdict::Outcome;

use crate::config::RunConfig;
use crate::data::Problem;

/// Turns a problem into prompt token ids: an optional system message, then the question and the
/// instruction as the user message, through the model's chat template.
#[derive(Debug, Clone)]
pub struct Prompter {
    tokenizer: Tokenizer,
    system: Option<String>,
    instruction: String,
    /// Tokens that end a response (the model's EOS ids).
    pub stop_token_ids: Vec<u32>,
}

impl Prompter {
    pub fn new(tokenizer: Tokenizer, config: &RunConfig, eos_token_ids: &[u32]) -> Self {
        let mut stop_token_ids = eos_token_ids.to_vec();
        stop_token_ids.extend(tokenizer.eos_token_id());
        stop_token_ids.sort_unstable();
        stop_token_ids.dedup();
        Self {
            tokenizer,
            system: config.model.system_prompt.clone(),
            instruction: config.data.instruction.clone(),
            stop_token_ids,
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn prompt_ids(&self, problem: &Problem) -> anyhow::Result<Vec<u32>> {
        let mut messages = vec![];
        if let Some(system) = &self.system {
            messages.push(ChatMessage::new("system", system));
        }
        let user = if self.instruction.is_empty() {
            problem.question.clone()
        } else {
            format!("{} {}", problem.question, self.instruction)
        };
        messages.push(ChatMessage::new("user", &user));
        Ok(self.tokenizer.encode_chat(&messages, true)?)
    }
}

/// One scored response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The reward trained on (correctness plus shaping).
    pub reward: f32,
    pub correct: bool,
    /// No answer could be read from the response.
    pub no_answer: bool,
}

/// A reward: scores one response to one problem. The embedded loop and `eval` take any; `rlvr train`
/// uses [`Scorer`] (math answers).
pub trait Reward: Send + Sync {
    /// Only infrastructure faults are errors; anything the model wrote gets a score.
    fn score(&self, problem: &Problem, response: &[u32]) -> anyhow::Result<Score>;
}

/// Scores responses to math problems.
#[derive(Debug, Clone)]
pub struct Scorer {
    tokenizer: Tokenizer,
    math: MathConfig,
    shaping: ShapingConfig,
}

impl Scorer {
    pub fn new(tokenizer: Tokenizer, config: &RunConfig) -> Self {
        let r = &config.reward;
        let overlong = (r.overlong_penalty != 0.0).then_some(Overlong {
            max_len: config.rollout.max_new_tokens,
            buffer: r.overlong_buffer,
            weight: r.overlong_penalty,
        });
        Self { tokenizer, math: MathConfig::default(), shaping: ShapingConfig { overlong, ..Default::default() } }
    }

}

impl Reward for Scorer {
    /// Decodes and verifies one response. Only infrastructure faults (an undecodable token id) are
    /// errors; anything the model wrote gets a verdict.
    fn score(&self, problem: &Problem, response: &[u32]) -> anyhow::Result<Score> {
        let text = self.tokenizer.decode(response, true)?;
        let verdict = math::verify(&text, &problem.ground_truth, &self.math);
        let correct = verdict.is_correct();
        let no_answer = matches!(verdict.outcome, Outcome::NoAnswer);
        let verdict = if self.shaping.is_identity() {
            verdict
        } else {
            shaping::shape(verdict, &text, Some(response.len()), &self.shaping)
        };
        Ok(Score { reward: verdict.reward, correct, no_answer })
    }
}
