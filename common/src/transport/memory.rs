//! The in-process transport of the embedded mode: bounded tokio channels (backpressure when a consumer
//! is slow) and a control plane in shared memory. Nothing is lost in process, so `ack` and `keep` do
//! nothing and a rejected message is only logged and counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Control, Delivery, DeliveryId, Inbox, Outbox, Stage, TransportError};
use crate::protocol::{MemberInfo, Message, RunInfo, RunState, WeightAnnouncement};

/// A bounded in-process queue: any number of senders and of consumers (which share the messages).
pub fn queue<T: Message>(capacity: usize) -> (MemoryTx<T>, MemoryRx<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let rx = MemoryRx { rx: Arc::new(tokio::sync::Mutex::new(rx)), next_id: Arc::new(AtomicU64::new(0)), rejected: Arc::default() };
    (MemoryTx { tx }, rx)
}

/// The sending end of an in-process queue; the queue closes when every clone is dropped.
#[derive(Debug)]
pub struct MemoryTx<T> {
    tx: mpsc::Sender<T>,
}

impl<T: Send + 'static> MemoryTx<T> {
    /// Reads how many messages are queued and not yet taken, without keeping the queue open (it
    /// closes when every sender is dropped, probe or not).
    pub fn length_probe(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let weak = self.tx.downgrade();
        move || weak.upgrade().map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }
}

impl<T> Clone for MemoryTx<T> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<T: Message> Outbox<T> for MemoryTx<T> {
    async fn send(&self, message: &T) -> Result<(), TransportError> {
        self.tx.send(message.clone()).await.map_err(|_| TransportError::Closed)
    }
}

/// The consuming end of an in-process queue; clones share its messages.
#[derive(Debug)]
pub struct MemoryRx<T> {
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<T>>>,
    next_id: Arc<AtomicU64>,
    rejected: Arc<Mutex<Vec<String>>>,
}

impl<T> Clone for MemoryRx<T> {
    fn clone(&self) -> Self {
        Self { rx: self.rx.clone(), next_id: self.next_id.clone(), rejected: self.rejected.clone() }
    }
}

impl<T> MemoryRx<T> {
    /// The reasons of every rejected message so far.
    pub fn rejected(&self) -> Vec<String> {
        self.rejected.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl<T: Message> Inbox<T> for MemoryRx<T> {
    async fn recv(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<T>>, TransportError> {
        let deadline = Instant::now() + wait;
        let mut rx = match tokio::time::timeout_at(deadline.into(), self.rx.lock()).await {
            Ok(rx) => rx,
            Err(_) => return Ok(vec![]),
        };
        let first = match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(TransportError::Closed),
            Err(_) => return Ok(vec![]),
        };
        let mut out = vec![first];
        while out.len() < max {
            match rx.try_recv() {
                Ok(m) => out.push(m),
                Err(_) => break,
            }
        }
        Ok(out
            .into_iter()
            .map(|message| Delivery { id: DeliveryId(self.next_id.fetch_add(1, Ordering::Relaxed).to_string()), message, attempts: 1 })
            .collect())
    }

    async fn pending(&mut self, _max: usize) -> Result<Vec<Delivery<T>>, TransportError> {
        Ok(vec![])
    }

    async fn ack(&mut self, _ids: &[DeliveryId]) -> Result<(), TransportError> {
        Ok(())
    }

    async fn reject(&mut self, id: &DeliveryId, reason: &str) -> Result<(), TransportError> {
        tracing::warn!(kind = T::KIND, id = %id.0, reason, "message rejected");
        if let Ok(mut r) = self.rejected.lock() {
            r.push(reason.to_string());
        }
        Ok(())
    }

    async fn keep(&mut self, _ids: &[DeliveryId]) -> Result<(), TransportError> {
        Ok(())
    }

    /// In process a released message is dropped: only shutdown releases, and everything stops then.
    async fn release(&mut self, _ids: &[DeliveryId]) -> Result<(), TransportError> {
        Ok(())
    }
}

/// A worker's two ends in process.
#[derive(Debug)]
pub struct MemoryStage<I, O> {
    pub input: MemoryRx<I>,
    pub output: MemoryTx<O>,
}

impl<I: Message, O: Message> Inbox<I> for MemoryStage<I, O> {
    fn recv(&mut self, max: usize, wait: Duration) -> impl Future<Output = Result<Vec<Delivery<I>>, TransportError>> + Send {
        self.input.recv(max, wait)
    }
    fn pending(&mut self, max: usize) -> impl Future<Output = Result<Vec<Delivery<I>>, TransportError>> + Send {
        self.input.pending(max)
    }
    fn ack(&mut self, ids: &[DeliveryId]) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.input.ack(ids)
    }
    fn reject(&mut self, id: &DeliveryId, reason: &str) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.input.reject(id, reason)
    }
    fn keep(&mut self, ids: &[DeliveryId]) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.input.keep(ids)
    }
    fn release(&mut self, ids: &[DeliveryId]) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.input.release(ids)
    }
}

impl<I: Message, O: Message> Stage<I, O> for MemoryStage<I, O> {
    async fn complete(&mut self, _input: &DeliveryId, output: &O) -> Result<(), TransportError> {
        self.output.send(output).await
    }
}

#[derive(Debug)]
struct ControlState {
    state: RunState,
    members: BTreeMap<String, (MemberInfo, Instant)>,
    checkpoint_requested: bool,
    info: Option<RunInfo>,
    weights: Option<WeightAnnouncement>,
}

/// The control plane in process.
#[derive(Debug, Clone)]
pub struct MemoryControl {
    inner: Arc<Mutex<ControlState>>,
}

impl Default for MemoryControl {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(ControlState {
                state: RunState::Running,
                members: BTreeMap::new(),
                checkpoint_requested: false,
                info: None,
                weights: None,
            })),
        }
    }
}

impl MemoryControl {
    fn with<R>(&self, f: impl FnOnce(&mut ControlState) -> R) -> Result<R, TransportError> {
        let mut g = self.inner.lock().map_err(|_| TransportError::Closed)?;
        Ok(f(&mut g))
    }
}

impl Control for MemoryControl {
    async fn state(&self) -> Result<RunState, TransportError> {
        self.with(|s| s.state)
    }
    async fn set_state(&self, state: RunState) -> Result<(), TransportError> {
        self.with(|s| s.state = state)
    }
    async fn heartbeat(&self, member: &MemberInfo, ttl: Duration) -> Result<(), TransportError> {
        self.with(|s| {
            s.members.insert(member.id.clone(), (member.clone(), Instant::now() + ttl));
        })
    }
    async fn members(&self) -> Result<Vec<MemberInfo>, TransportError> {
        self.with(|s| {
            let now = Instant::now();
            s.members.retain(|_, (_, until)| *until > now);
            s.members.values().map(|(m, _)| m.clone()).collect()
        })
    }
    async fn leave(&self, id: &str) -> Result<(), TransportError> {
        self.with(|s| {
            s.members.remove(id);
        })
    }
    async fn request_checkpoint(&self) -> Result<(), TransportError> {
        self.with(|s| s.checkpoint_requested = true)
    }
    async fn take_checkpoint_request(&self) -> Result<bool, TransportError> {
        self.with(|s| std::mem::take(&mut s.checkpoint_requested))
    }
    async fn publish_info(&self, info: &RunInfo) -> Result<(), TransportError> {
        self.with(|s| s.info = Some(info.clone()))
    }
    async fn info(&self) -> Result<Option<RunInfo>, TransportError> {
        self.with(|s| s.info.clone())
    }
    async fn announce_weights(&self, announcement: &WeightAnnouncement) -> Result<(), TransportError> {
        self.with(|s| s.weights = Some(announcement.clone()))
    }
    async fn weights(&self) -> Result<Option<WeightAnnouncement>, TransportError> {
        self.with(|s| s.weights.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{GroupId, PromptTask, RewardSpec, SamplingSpec};

    fn task(slot: u32) -> PromptTask {
        PromptTask {
            group: GroupId { step: 0, slot },
            prompt_id: format!("p{slot}"),
            prompt_token_ids: vec![1, 2],
            sampling: SamplingSpec { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, max_new_tokens: 4, stop_token_ids: vec![], seed: 1, n: 2 },
            min_version: 0,
            max_version: 0,
            reward: RewardSpec { data_source: String::new(), kind: "math".into(), ground_truth: "1".into() },
        }
    }

    #[tokio::test]
    async fn consumers_share_the_messages_and_see_the_close() {
        let (tx, mut a) = queue::<PromptTask>(8);
        let mut b = a.clone();
        for slot in 0..4 {
            tx.send(&task(slot)).await.unwrap();
        }
        let first = a.recv(3, Duration::from_millis(10)).await.unwrap();
        let rest = b.recv(3, Duration::from_millis(10)).await.unwrap();
        assert_eq!(first.len() + rest.len(), 4);
        let ids: std::collections::HashSet<_> = first.iter().chain(&rest).map(|d| d.id.clone()).collect();
        assert_eq!(ids.len(), 4, "delivery ids are unique across consumers");
        assert!(a.recv(1, Duration::from_millis(5)).await.unwrap().is_empty());
        drop(tx);
        assert!(matches!(b.recv(1, Duration::from_millis(5)).await, Err(TransportError::Closed)));
    }

    #[tokio::test]
    async fn members_expire_and_checkpoint_requests_are_taken_once() {
        let c = MemoryControl::default();
        let m = MemberInfo { id: "a0".into(), role: crate::protocol::Role::Actor, host: "h".into(), weight_version: Some(1), groups_per_s: 0.0, groups_done: 0, at: 0.0 };
        c.heartbeat(&m, Duration::from_secs(60)).await.unwrap();
        assert_eq!(c.members().await.unwrap(), vec![m.clone()]);
        c.heartbeat(&m, Duration::ZERO).await.unwrap();
        assert!(c.members().await.unwrap().is_empty());
        assert!(!c.take_checkpoint_request().await.unwrap());
        c.request_checkpoint().await.unwrap();
        assert!(c.take_checkpoint_request().await.unwrap());
        assert!(!c.take_checkpoint_request().await.unwrap());
    }
}
