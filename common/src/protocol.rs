//! The wire messages between the learner, the actors and the verifiers, and their envelope.
//!
//! Every message travels as MessagePack (named fields, so readers ignore fields they do not know) in an
//! [`Envelope`]: `{schema, kind, run, payload}`. A reader checks the envelope before it decodes the
//! payload, and every decoded payload is [`Message::validate`]d: a message from the wire is hostile
//! input like model output, so nothing in it may make a process panic or allocate without bound.
//! `docs/protocol.md` lists every stream, key and field.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::rollout::Rollout;

/// The protocol version. A change to a message's meaning bumps it (and `docs/protocol.md`); added
/// optional fields do not.
pub const SCHEMA: u32 = 1;

/// The largest encoded message accepted (a rollout group of 64 samples x 32k tokens is ~20 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Why a message from the wire was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("not a MessagePack envelope: {0}")]
    Envelope(String),
    #[error("schema {found}, this build speaks {SCHEMA}")]
    Schema { found: u32 },
    #[error("kind `{found}` where `{expected}` was expected")]
    Kind { expected: &'static str, found: String },
    #[error("message of run `{found}` on a stream of run `{expected}`")]
    Run { expected: String, found: String },
    #[error("payload of `{kind}` does not decode: {message}")]
    Payload { kind: &'static str, message: String },
    #[error("invalid `{kind}`: {message}")]
    Invalid { kind: &'static str, message: String },
}

/// A payload type of the protocol.
pub trait Message: Serialize + DeserializeOwned + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The envelope's `kind` for this payload.
    const KIND: &'static str;
    /// Checks what the type system cannot (lengths that must agree, bounds); the reason on failure.
    fn validate(&self) -> Result<(), String>;
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    schema: u32,
    kind: &'a str,
    run: &'a str,
    payload: &'a T,
}

/// The envelope without its payload, decoded first so a wrong schema, kind or run is named as such.
#[derive(Deserialize)]
struct EnvelopeHeader {
    schema: u32,
    kind: String,
    run: String,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    payload: T,
}

/// Encodes `message` of run `run` in its envelope.
pub fn encode<T: Message>(run: &str, message: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(&EnvelopeOut { schema: SCHEMA, kind: T::KIND, run, payload: message })
        .expect("protocol messages serialise")
}

/// Decodes and validates a message of kind `T` for run `run`.
pub fn decode<T: Message>(run: &str, bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let header: EnvelopeHeader = rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Envelope(e.to_string()))?;
    if header.schema != SCHEMA {
        return Err(DecodeError::Schema { found: header.schema });
    }
    if header.kind != T::KIND {
        return Err(DecodeError::Kind { expected: T::KIND, found: truncate(&header.kind) });
    }
    if header.run != run {
        return Err(DecodeError::Run { expected: run.to_string(), found: truncate(&header.run) });
    }
    let envelope: EnvelopeIn<T> =
        rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Payload { kind: T::KIND, message: e.to_string() })?;
    envelope.payload.validate().map_err(|message| DecodeError::Invalid { kind: T::KIND, message })?;
    Ok(envelope.payload)
}

/// A name from the wire, cut short for an error message.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A group's identity: the step it is sampled for and its slot in that step's batch. Deterministic, so a
/// group issued twice (a re-issue after a fault) is recognised, and its seed never depends on which
/// actor samples it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId {
    pub step: u64,
    pub slot: u32,
}

impl GroupId {
    /// The sampling seed of this group in a run seeded with `run_seed`.
    pub fn seed(self, run_seed: u64) -> u64 {
        run_seed.wrapping_mul(0x1000_0000_01b3).wrapping_add(self.step << 20).wrapping_add(u64::from(self.slot))
    }
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}-g{}", self.step, self.slot)
    }
}

/// How to sample a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingSpec {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    #[serde(default)]
    pub min_p: f32,
    pub max_new_tokens: usize,
    pub stop_token_ids: Vec<u32>,
    /// The group's seed ([`GroupId::seed`]).
    pub seed: u64,
    /// Samples in the group.
    pub n: usize,
}

/// Which reward scores a group and against what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardSpec {
    /// The dataset (verl's `data_source`).
    #[serde(default)]
    pub data_source: String,
    /// `math`, `code` or `truth`.
    pub kind: String,
    pub ground_truth: String,
}

/// Limits a prompt or a response may not exceed (a message past them is refused, not truncated).
pub const MAX_TOKENS: usize = 1 << 20;
pub const MAX_GROUP: usize = 4096;

/// `prompts` stream: one group to sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptTask {
    pub group: GroupId,
    /// The dataset prompt (for the rollout viewer and logs).
    pub prompt_id: String,
    pub prompt_token_ids: Vec<u32>,
    pub sampling: SamplingSpec,
    /// The weight versions the group may be sampled with: `min_version..=max_version`.
    pub min_version: u64,
    pub max_version: u64,
    pub reward: RewardSpec,
}

impl Message for PromptTask {
    const KIND: &'static str = "prompt";
    fn validate(&self) -> Result<(), String> {
        if self.prompt_token_ids.is_empty() || self.prompt_token_ids.len() > MAX_TOKENS {
            return Err(format!("prompt of {} tokens", self.prompt_token_ids.len()));
        }
        let s = &self.sampling;
        if s.n == 0 || s.n > MAX_GROUP {
            return Err(format!("group of {} samples", s.n));
        }
        if s.max_new_tokens > MAX_TOKENS {
            return Err(format!("max_new_tokens {}", s.max_new_tokens));
        }
        if !(s.temperature.is_finite() && s.temperature >= 0.0 && s.top_p.is_finite() && s.min_p.is_finite()) {
            return Err("non-finite or negative sampling parameter".into());
        }
        if self.min_version > self.max_version {
            return Err(format!("weight versions {}..={} are empty", self.min_version, self.max_version));
        }
        Ok(())
    }
}

/// `rollouts` stream: a sampled group, every sample with its tokens, log-probs, weight version and
/// finish reason, and its decoded text (the verifier needs no tokenizer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutGroup {
    pub group: GroupId,
    pub reward: RewardSpec,
    /// The actor that sampled it.
    pub actor: String,
    pub rollouts: Vec<Rollout>,
    /// `rollouts[i]`'s response as text.
    pub texts: Vec<String>,
    /// The checksum of the weights that sampled the group, where the actor knows it: a learner that
    /// published other weights under the same version number (a restart, another run) does not train
    /// on it.
    #[serde(default)]
    pub weights_checksum: Option<String>,
}

impl Message for RolloutGroup {
    const KIND: &'static str = "rollouts";
    fn validate(&self) -> Result<(), String> {
        if self.rollouts.is_empty() || self.rollouts.len() > MAX_GROUP {
            return Err(format!("group of {} rollouts", self.rollouts.len()));
        }
        if self.texts.len() != self.rollouts.len() {
            return Err(format!("{} texts for {} rollouts", self.texts.len(), self.rollouts.len()));
        }
        for (i, r) in self.rollouts.iter().enumerate() {
            if r.log_probs.len() != r.response_token_ids.len() {
                return Err(format!("rollout {i}: {} log-probs for {} tokens", r.log_probs.len(), r.response_token_ids.len()));
            }
            if r.response_token_ids.len() > MAX_TOKENS || r.prompt_token_ids.len() > MAX_TOKENS {
                return Err(format!("rollout {i} is too long"));
            }
            if r.sample_index as usize != i {
                return Err(format!("rollout {i} has sample index {}", r.sample_index));
            }
            if r.log_probs.iter().any(|l| !l.is_finite() || *l > 0.0) {
                return Err(format!("rollout {i} has a log-prob that is not finite or is positive"));
            }
        }
        Ok(())
    }
}

/// One sample's verdict, as data for the learner and the rollout viewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleScore {
    /// The reward trained on (correctness plus shaping).
    pub reward: f32,
    pub correct: bool,
    /// The verdict's outcome (`correct`, `incorrect`, `no_answer`, `timeout`, `error`, …).
    pub outcome: String,
    #[serde(default)]
    pub detail: String,
}

/// `scored` stream: a group with one score per sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredGroup {
    pub rollouts: RolloutGroup,
    pub scores: Vec<SampleScore>,
    /// The verifier that scored it.
    pub verifier: String,
}

impl ScoredGroup {
    /// SHA-256 (hex) of everything a learner trains on in this group: per sample its weight version,
    /// prompt and response tokens, log-probs, temperature, finish reason, reward and correctness. Two
    /// runs trained alike exactly when their groups' digests agree.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let tokens = |ids: &[u32], h: &mut Sha256| {
            h.update((ids.len() as u64).to_le_bytes());
            ids.iter().for_each(|t| h.update(t.to_le_bytes()));
        };
        for (r, s) in self.rollouts.rollouts.iter().zip(&self.scores) {
            h.update(r.weight_version.to_le_bytes());
            tokens(&r.prompt_token_ids, &mut h);
            tokens(&r.response_token_ids, &mut h);
            h.update((r.log_probs.len() as u64).to_le_bytes());
            r.log_probs.iter().for_each(|x| h.update(x.to_bits().to_le_bytes()));
            h.update(r.temperature.to_bits().to_le_bytes());
            h.update(r.finish_reason.as_str().as_bytes());
            h.update(s.reward.to_bits().to_le_bytes());
            h.update([u8::from(s.correct)]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Message for ScoredGroup {
    const KIND: &'static str = "scored";
    fn validate(&self) -> Result<(), String> {
        self.rollouts.validate()?;
        if self.scores.len() != self.rollouts.rollouts.len() {
            return Err(format!("{} scores for {} rollouts", self.scores.len(), self.rollouts.rollouts.len()));
        }
        if self.scores.iter().any(|s| !s.reward.is_finite()) {
            return Err("a non-finite reward".into());
        }
        Ok(())
    }
}

/// The run's state, set by `rlvr ctl` and the dashboard, obeyed by every process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Working.
    Running,
    /// The learner issues no new prompts; workers finish what they hold and wait.
    Paused,
    /// The learner finishes the step in hand, checkpoints and stops; then the run is `stopped`.
    Draining,
    /// Every process exits.
    Stopped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Draining => "draining",
            Self::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "paused" => Some(Self::Paused),
            "draining" => Some(Self::Draining),
            "stopped" => Some(Self::Stopped),
            _ => None,
        }
    }
}

/// A process's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Learner,
    Actor,
    Verifier,
}

/// A member's heartbeat record (`rlvr:{R}:member:{id}`, with a TTL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: String,
    pub role: Role,
    pub host: String,
    /// The weight version it samples with (actors) or publishes (learner).
    #[serde(default)]
    pub weight_version: Option<u64>,
    /// Groups per second over its last report interval.
    #[serde(default)]
    pub groups_per_s: f64,
    /// Groups it has completed.
    #[serde(default)]
    pub groups_done: u64,
    /// Unix time of the heartbeat, in seconds.
    pub at: f64,
}

impl Message for MemberInfo {
    const KIND: &'static str = "member";
    fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 256 {
            return Err("member id empty or longer than 256 bytes".into());
        }
        Ok(())
    }
}

/// `rlvr:{R}:weights`: the newest weights, and where to fetch them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightAnnouncement {
    pub version: u64,
    /// The SHA-256 of the version's tensors ([`crate::weights::checksum`]).
    pub checksum: String,
    /// `host:port` of the learner's weight server.
    pub address: String,
    /// Bytes of tensor data.
    pub bytes: u64,
}

impl Message for WeightAnnouncement {
    const KIND: &'static str = "weights";
    fn validate(&self) -> Result<(), String> {
        if self.checksum.len() != 64 || !self.checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("checksum is not 64 hex digits".into());
        }
        if self.address.is_empty() || self.address.len() > 512 {
            return Err("weight server address empty or too long".into());
        }
        Ok(())
    }
}

/// `rlvr:{R}:info`: what a worker needs to join the run, published by the learner: the model's
/// `config.json` and tokenizer files, and the settings actors and verifiers take from the run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run's resolved config, as TOML (for operators).
    pub config_toml: String,
    /// The model's `config.json`.
    pub model_config_json: String,
    /// `tokenizer.json` and, where present, `tokenizer_config.json`.
    pub tokenizer_json: String,
    #[serde(default)]
    pub tokenizer_config_json: Option<String>,
    pub actor: ActorSettings,
    pub reward: RewardSettings,
    pub queues: QueueSettings,
    /// The run's seed (groups' seeds derive from it).
    pub seed: u64,
}

/// What actors take from the run config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ActorSettings {
    /// Rows sampled together (the engine's batch).
    pub max_batch: usize,
    /// Versions an actor may lag the newest weights before it abandons what it is sampling.
    pub max_staleness: u64,
    /// Samples per group (an actor queues about one batch of groups beyond those running).
    pub group_size: usize,
    /// Sample one group at a time (`rollout.batch_invariant`).
    #[serde(default)]
    pub batch_invariant: bool,
}

/// How long a worker may hold an entry without saying it is busy with it, and how often an entry may
/// be delivered before it is dead-lettered: the same for every consumer of the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueueSettings {
    pub visibility_timeout_s: f64,
    pub max_deliveries: u64,
}

/// What verifiers take from the run config (shaping that depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RewardSettings {
    /// DAPO's overlong penalty: its weight (0 = off), the response budget and the buffer before it.
    pub overlong_penalty: f32,
    pub overlong_buffer: usize,
    pub max_new_tokens: usize,
}

impl Message for RunInfo {
    const KIND: &'static str = "run_info";
    fn validate(&self) -> Result<(), String> {
        if self.actor.max_batch == 0 {
            return Err("actor.max_batch is 0".into());
        }
        if !(self.queues.visibility_timeout_s.is_finite() && self.queues.visibility_timeout_s > 0.0) {
            return Err("queues.visibility_timeout_s is not a positive number".into());
        }
        if !self.reward.overlong_penalty.is_finite() {
            return Err("reward.overlong_penalty is not finite".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{FinishReason, RolloutTimings};

    fn group() -> RolloutGroup {
        let rollout = |i: u32| Rollout {
            id: format!("s3-g1/{i}"),
            prompt_id: "p7".into(),
            group_id: "s3-g1".into(),
            sample_index: i,
            weight_version: 3,
            prompt_token_ids: vec![1, 2, 3],
            response_token_ids: vec![40, 41, 2],
            log_probs: vec![-0.5, -1.25, -0.001],
            temperature: 1.0,
            finish_reason: FinishReason::Stop,
            timings: RolloutTimings::default(),
        };
        RolloutGroup {
            group: GroupId { step: 3, slot: 1 },
            reward: RewardSpec { data_source: "arith".into(), kind: "math".into(), ground_truth: "7".into() },
            actor: "a0".into(),
            rollouts: vec![rollout(0), rollout(1)],
            texts: vec!["\\boxed{7}".into(), "8".into()],
            weights_checksum: None,
        }
    }

    #[test]
    fn round_trip_and_envelope_checks() {
        let g = group();
        let bytes = encode("r1", &g);
        assert_eq!(decode::<RolloutGroup>("r1", &bytes).unwrap(), g);
        assert!(matches!(decode::<RolloutGroup>("r2", &bytes), Err(DecodeError::Run { .. })));
        assert!(matches!(decode::<ScoredGroup>("r1", &bytes), Err(DecodeError::Kind { .. })));
        assert!(matches!(decode::<RolloutGroup>("r1", &bytes[..bytes.len() / 2]), Err(DecodeError::Envelope(_))), "a cut message is not an envelope");
        assert!(matches!(decode::<RolloutGroup>("r1", b"\xc1"), Err(DecodeError::Envelope(_))));
        let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(decode::<RolloutGroup>("r1", &big), Err(DecodeError::TooLarge(_))));
    }

    #[test]
    fn another_schema_is_refused_by_name() {
        #[derive(Serialize)]
        struct Future<'a> {
            schema: u32,
            kind: &'a str,
            run: &'a str,
            payload: u8,
        }
        let bytes = rmp_serde::to_vec_named(&Future { schema: 99, kind: "rollouts", run: "r1", payload: 0 }).unwrap();
        assert_eq!(decode::<RolloutGroup>("r1", &bytes).unwrap_err(), DecodeError::Schema { found: 99 });
    }

    #[test]
    fn inconsistent_groups_are_invalid() {
        let mut g = group();
        g.texts.pop();
        assert!(matches!(decode::<RolloutGroup>("r", &encode("r", &g)), Err(DecodeError::Invalid { .. })));
        let mut g = group();
        g.rollouts[1].log_probs.push(-1.0);
        assert!(matches!(decode::<RolloutGroup>("r", &encode("r", &g)), Err(DecodeError::Invalid { .. })));
        let mut g = group();
        g.rollouts[0].log_probs[0] = f32::NAN;
        assert!(matches!(decode::<RolloutGroup>("r", &encode("r", &g)), Err(DecodeError::Invalid { .. })));
    }

    #[test]
    fn seeds_depend_on_the_group_only() {
        let a = GroupId { step: 2, slot: 5 };
        assert_eq!(a.seed(7), GroupId { step: 2, slot: 5 }.seed(7));
        assert_ne!(a.seed(7), GroupId { step: 2, slot: 6 }.seed(7));
        assert_ne!(a.seed(7), GroupId { step: 3, slot: 5 }.seed(7));
        assert_ne!(a.seed(7), a.seed(8));
        assert_eq!(a.to_string(), "s2-g5");
    }

    proptest::proptest! {
        // Arbitrary bytes, and valid messages with bytes flipped or cut, never panic the decoder.
        #[test]
        fn the_decoder_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode::<RolloutGroup>("r", &bytes);
            let _ = decode::<ScoredGroup>("r", &bytes);
            let _ = decode::<PromptTask>("r", &bytes);
        }

        #[test]
        fn corrupted_messages_never_panic(at in 0usize..4096, byte in proptest::num::u8::ANY, cut in 0usize..4096) {
            let mut bytes = encode("r", &group());
            let at = at % bytes.len();
            bytes[at] = byte;
            bytes.truncate(cut.max(1).min(bytes.len()));
            let _ = decode::<RolloutGroup>("r", &bytes);
        }
    }
}
