//! How the learner, the actors and the verifiers talk: three work queues (prompts to actors, rollout
//! groups to verifiers, scored groups to the learner) and a control plane (run state, member registry,
//! run info, weight announcements). The loops are written once against these traits; the embedded mode
//! runs them over [`memory`] (bounded channels), the distributed one over [`redis`] (Redis Streams with
//! consumer groups; feature `redis`).
//!
//! A consumer takes [`Delivery`]s from an [`Inbox`]; a worker ([`Stage`]) writes its result and
//! acknowledges its input in one step, so a crash leaves the input pending (redone elsewhere after a
//! visibility timeout) and never half-done. A message that cannot be decoded, or that the consumer finds
//! does not belong (another run, a step long gone), is [`Inbox::reject`]ed to the dead-letter stream
//! with its reason.

use std::future::Future;
use std::time::Duration;

use crate::protocol::{MemberInfo, Message, RunInfo, RunState, WeightAnnouncement};

pub mod member;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub mod redis_server;

/// Errors of a transport (never of the messages it carries: those are rejected as data).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the queue is closed")]
    Closed,
    #[error("{what}: Redis unreachable for {after:?}: {message}")]
    Unavailable { what: String, after: Duration, message: String },
    #[error("{what}: {message}")]
    Redis { what: String, message: String },
}

/// Identifies a delivery to its inbox (a stream entry id; a sequence number in process).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub String);

/// A message taken from an inbox, to be acknowledged, completed or rejected.
#[derive(Debug, Clone)]
pub struct Delivery<T> {
    pub id: DeliveryId,
    pub message: T,
    /// How many times it has been delivered, this one included.
    pub attempts: u64,
}

/// The sending end of a work queue.
pub trait Outbox<T: Message>: Send + Sync {
    fn send(&self, message: &T) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// The consuming end of a work queue.
pub trait Inbox<T: Message>: Send {
    /// Up to `max` messages, waiting at most `wait` for the first; empty if none came in time.
    /// `Err(Closed)` once an in-process queue is closed and drained.
    fn recv(&mut self, max: usize, wait: Duration) -> impl Future<Output = Result<Vec<Delivery<T>>, TransportError>> + Send;
    /// Messages delivered to this consumer before (by a previous incarnation with the same name) and
    /// never acknowledged. The learner reads these first on a restart.
    fn pending(&mut self, max: usize) -> impl Future<Output = Result<Vec<Delivery<T>>, TransportError>> + Send;
    /// Done with these: they are never delivered again.
    fn ack(&mut self, ids: &[DeliveryId]) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Moves a message to the dead-letter stream with `reason`, and acknowledges it.
    fn reject(&mut self, id: &DeliveryId, reason: &str) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Still working on these: keeps them from being reclaimed by another consumer.
    fn keep(&mut self, ids: &[DeliveryId]) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Hands these back unfinished: another consumer may take them at once.
    fn release(&mut self, ids: &[DeliveryId]) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// A worker between two queues.
pub trait Stage<I: Message, O: Message>: Inbox<I> {
    /// Writes `output` to the next queue and acknowledges `input`, atomically.
    fn complete(&mut self, input: &DeliveryId, output: &O) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// The control plane of a run.
pub trait Control: Send + Sync {
    fn state(&self) -> impl Future<Output = Result<RunState, TransportError>> + Send;
    fn set_state(&self, state: RunState) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Registers or refreshes a member; it disappears `ttl` after its last heartbeat.
    fn heartbeat(&self, member: &MemberInfo, ttl: Duration) -> impl Future<Output = Result<(), TransportError>> + Send;
    fn members(&self) -> impl Future<Output = Result<Vec<MemberInfo>, TransportError>> + Send;
    fn leave(&self, id: &str) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Asks the learner for a checkpoint at its next safe point.
    fn request_checkpoint(&self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Whether a checkpoint was asked for since the last call (clears the request).
    fn take_checkpoint_request(&self) -> impl Future<Output = Result<bool, TransportError>> + Send;
    fn publish_info(&self, info: &RunInfo) -> impl Future<Output = Result<(), TransportError>> + Send;
    fn info(&self) -> impl Future<Output = Result<Option<RunInfo>, TransportError>> + Send;
    fn announce_weights(&self, announcement: &WeightAnnouncement) -> impl Future<Output = Result<(), TransportError>> + Send;
    fn weights(&self) -> impl Future<Output = Result<Option<WeightAnnouncement>, TransportError>> + Send;
}

/// Seconds since the Unix epoch, for heartbeats.
pub fn unix_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
