//! Weight sync between the learner and the actors: a weight update carries a version and a checksum of
//! its tensors, and a receiver verifies the checksum before it samples with the weights.
//!
//! Transport-agnostic: [`WeightPublisher`] and [`WeightSubscriber`] are what the learner and the actor
//! see; [`InProcessWeights`] implements both for the embedded mode. Across processes the learner serves
//! each version over TCP ([`tcp::WeightServer`]) and announces it in the control plane; an actor's
//! [`tcp::follow`] task fetches and verifies what is announced and hands it to the actor through an
//! [`InProcessWeights`].

pub mod tcp;

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::checkpoint::HostTensor;

/// Errors receiving weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("weights of version {version}: checksum {actual} does not match the announced {announced}")]
    ChecksumMismatch { version: u64, announced: String, actual: String },
    #[error("weight transport: {0}")]
    Transport(String),
    #[error("weights of version {version} from {address}: {phase} did not finish within {limit:?}")]
    Deadline { version: u64, address: String, phase: &'static str, limit: std::time::Duration },
}

/// One published set of weights.
#[derive(Debug, Clone)]
pub struct WeightUpdate {
    /// Strictly increasing over a run; version 0 is the initial policy.
    pub version: u64,
    /// The announced [`checksum`] of `tensors`, lowercase hex.
    pub checksum: String,
    /// Every parameter under its HF key.
    pub tensors: Arc<Vec<(String, HostTensor)>>,
}

impl WeightUpdate {
    /// An update whose checksum is computed from its tensors.
    pub fn new(version: u64, tensors: Vec<(String, HostTensor)>) -> Self {
        let checksum = checksum(&tensors);
        Self { version, checksum, tensors: Arc::new(tensors) }
    }

    /// Recomputes the checksum and compares it with the announced one.
    pub fn verify(&self) -> Result<(), WeightsError> {
        let actual = checksum(&self.tensors);
        if actual == self.checksum {
            Ok(())
        } else {
            Err(WeightsError::ChecksumMismatch { version: self.version, announced: self.checksum.clone(), actual })
        }
    }
}

/// SHA-256 over the tensors in key order: each key, its shape and its f32 values (little-endian), so
/// the order the tensors are listed in does not matter but any changed bit does.
pub fn checksum(tensors: &[(String, HostTensor)]) -> String {
    let mut order: Vec<&(String, HostTensor)> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (name, t) in order {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((t.shape.len() as u64).to_le_bytes());
        for &d in &t.shape {
            h.update((d as u64).to_le_bytes());
        }
        h.update(bytemuck::cast_slice::<f32, u8>(&t.data));
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The learner's side: announces a new version.
pub trait WeightPublisher: Send + Sync {
    fn publish(&self, update: WeightUpdate) -> Result<(), WeightsError>;
}

/// The actor's side: the weights it should sample with.
pub trait WeightSubscriber: Send + Sync {
    /// The version and checksum the actor should be on, if any (cheap: the actor asks between decoding
    /// steps). Versions only go up within a learner's life; a restarted learner announces the version
    /// of the checkpoint it resumed from, which may be below what an actor holds, and the checksum
    /// tells a version number reused with other weights.
    fn latest(&self) -> Option<(u64, String)>;
    /// The current update. The caller verifies it before use.
    fn fetch(&self) -> Result<Option<WeightUpdate>, WeightsError>;
}

/// Weights shared in memory between a learner and the actors of one process.
#[derive(Debug, Default, Clone)]
pub struct InProcessWeights {
    latest: Arc<Mutex<Option<WeightUpdate>>>,
}

impl InProcessWeights {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `update` the current weights whatever its version (an actor following a learner that
    /// restarted from a checkpoint goes back to that checkpoint's version).
    pub fn replace(&self, update: WeightUpdate) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(update);
        }
    }

    /// The current weights.
    pub fn current(&self) -> Option<WeightUpdate> {
        self.latest.lock().ok()?.clone()
    }
}

impl WeightPublisher for InProcessWeights {
    fn publish(&self, update: WeightUpdate) -> Result<(), WeightsError> {
        let mut latest = self.latest.lock().map_err(|_| WeightsError::Transport("poisoned lock".into()))?;
        if let Some(old) = latest.as_ref()
            && old.version >= update.version
        {
            return Err(WeightsError::Transport(format!(
                "version {} published after version {}",
                update.version, old.version
            )));
        }
        *latest = Some(update);
        Ok(())
    }
}

impl WeightSubscriber for InProcessWeights {
    fn latest(&self) -> Option<(u64, String)> {
        self.latest.lock().ok()?.as_ref().map(|u| (u.version, u.checksum.clone()))
    }

    fn fetch(&self) -> Result<Option<WeightUpdate>, WeightsError> {
        let latest = self.latest.lock().map_err(|_| WeightsError::Transport("poisoned lock".into()))?;
        Ok(latest.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors(x: f32) -> Vec<(String, HostTensor)> {
        vec![
            ("b".to_string(), HostTensor::new(vec![2], vec![x, 2.0])),
            ("a".to_string(), HostTensor::new(vec![1, 1], vec![3.0])),
        ]
    }

    #[test]
    fn checksum_ignores_order_and_sees_every_bit() {
        let mut swapped = tensors(1.0);
        swapped.reverse();
        assert_eq!(checksum(&tensors(1.0)), checksum(&swapped));
        assert_ne!(checksum(&tensors(1.0)), checksum(&tensors(f32::from_bits(1.0f32.to_bits() + 1))));
        let mut reshaped = tensors(1.0);
        reshaped[0].1.shape = vec![2, 1];
        assert_ne!(checksum(&tensors(1.0)), checksum(&reshaped));
    }

    #[test]
    fn a_tampered_update_fails_verification() {
        let mut u = WeightUpdate::new(1, tensors(1.0));
        u.verify().unwrap();
        u.tensors = Arc::new(tensors(1.5));
        assert!(matches!(u.verify(), Err(WeightsError::ChecksumMismatch { version: 1, .. })));
    }

    #[test]
    fn in_process_hands_out_only_newer_versions() {
        let w = InProcessWeights::new();
        assert_eq!(w.latest(), None);
        let u = WeightUpdate::new(1, tensors(1.0));
        w.publish(u.clone()).unwrap();
        assert_eq!(w.latest(), Some((1, u.checksum.clone())));
        assert_eq!(w.fetch().unwrap().unwrap().version, 1);
        assert!(w.publish(WeightUpdate::new(1, tensors(2.0))).is_err(), "versions only go up");
    }
}
