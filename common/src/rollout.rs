//! The rollout record: one sampled response to one prompt, with everything the learner needs to train on
//! it (token ids, the sampler's log-probs, the weight version that sampled it) and to account for it
//! (unique id, prompt and group, finish reason, timings). Encoded as MessagePack with named fields, so
//! readers ignore fields they do not know.

use serde::{Deserialize, Serialize};

/// Why a response stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// It produced a stop token (included in the response) or a stop string.
    Stop,
    /// It reached its `max_new_tokens`.
    Length,
    /// The actor shut down (or the request was cancelled) before it finished.
    Abort,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }
}

/// Where the time of one rollout went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RolloutTimings {
    /// From the request reaching the actor to its prefill starting.
    pub queued_ms: f64,
    /// The prefill of its prompt (shared by the group).
    pub prefill_ms: f64,
    /// From the end of the prefill to its last token.
    pub decode_ms: f64,
}

/// One sampled response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Unique over a run: `{group_id}/{sample_index}`.
    pub id: String,
    /// The dataset prompt it answers.
    pub prompt_id: String,
    /// The group of samples that share the prompt (GRPO's G responses); one per prompt per step.
    pub group_id: String,
    /// Its index in the group, `0..n`.
    pub sample_index: u32,
    /// The weight version that sampled every token of it.
    pub weight_version: u64,
    pub prompt_token_ids: Vec<u32>,
    pub response_token_ids: Vec<u32>,
    /// The log-prob of each response token under the distribution it was sampled from (after
    /// temperature, before top-k/top-p/min-p truncation).
    pub log_probs: Vec<f32>,
    /// The sampling temperature, which the learner needs to recompute the log-probs.
    pub temperature: f32,
    pub finish_reason: FinishReason,
    #[serde(default)]
    pub timings: RolloutTimings,
}

impl Rollout {
    /// MessagePack with named fields.
    pub fn to_msgpack(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("a rollout serialises")
    }

    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout() -> Rollout {
        Rollout {
            id: "p7-s3/2".into(),
            prompt_id: "p7".into(),
            group_id: "p7-s3".into(),
            sample_index: 2,
            weight_version: 3,
            prompt_token_ids: vec![1, 2, 3],
            response_token_ids: vec![40, 41, 2],
            log_probs: vec![-0.5, -1.25, -0.001],
            temperature: 0.7,
            finish_reason: FinishReason::Stop,
            timings: RolloutTimings { queued_ms: 1.0, prefill_ms: 2.5, decode_ms: 30.0 },
        }
    }

    #[test]
    fn msgpack_round_trip_is_the_identity() {
        let r = rollout();
        assert_eq!(Rollout::from_msgpack(&r.to_msgpack()).unwrap(), r);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        #[derive(Serialize)]
        struct Newer<'a> {
            #[serde(flatten)]
            rollout: &'a Rollout,
            reward: f32,
        }
        let r = rollout();
        let bytes = rmp_serde::to_vec_named(&Newer { rollout: &r, reward: 1.0 }).unwrap();
        assert_eq!(Rollout::from_msgpack(&bytes).unwrap(), r);
    }

    proptest::proptest! {
        #[test]
        fn any_rollout_round_trips(tokens in proptest::collection::vec(0u32..200_000, 0..64), lp in -30.0f32..0.0, v in 0u64..u64::MAX) {
            let mut r = rollout();
            r.log_probs = vec![lp; tokens.len()];
            r.response_token_ids = tokens;
            r.weight_version = v;
            proptest::prop_assert_eq!(Rollout::from_msgpack(&r.to_msgpack()).unwrap(), r);
        }
    }
}
