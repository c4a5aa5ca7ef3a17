//! PPO's critic: a copy of the policy's transformer with a scalar value head, trained with its own
//! optimiser on GAE's returns (verl's `dp_critic.py`: `AutoModelForTokenClassification` with one label,
//! initialised from the actor's weights).
//!
//! The value of response token `t` is read where the policy predicts that token (the hidden state
//! before it), as verl slices `values = output[:, -response_length - 1 : -1]`. The head (`score`, HF's
//! name for a token-classification head, with a bias) starts at zero, so every value starts at 0 and
//! the first advantages are the discounted rewards-to-go.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rlvr_common::checkpoint::{self, HostTensor, SaveDtype};
use rlvr_common::model::{CausalLm, Linear, ModelBackend, ModelConfig, ModelError};

/// The file a checkpoint keeps the critic's weights in (its optimiser state goes to `critic/`).
pub const CRITIC_FILE: &str = "critic.safetensors";
const HEAD: &str = "score";

/// A transformer with a scalar head.
#[derive(Module, Debug)]
pub struct Critic<B: Backend> {
    pub backbone: CausalLm<B>,
    pub score: Linear<B>,
}

impl<B: ModelBackend> Critic<B> {
    /// The policy's weights with a zero value head.
    pub fn from_policy(config: ModelConfig, weights: HashMap<String, HostTensor>, device: &B::Device) -> Result<Self, ModelError> {
        let hidden = config.hidden_size;
        let backbone = CausalLm::from_weights(config, weights, device)?;
        let score = Linear {
            weight: Param::from_tensor(Tensor::zeros([1, hidden], device)),
            bias: Some(Param::from_tensor(Tensor::zeros([1], device))),
        };
        Ok(Self { backbone, score })
    }

    /// What [`save`](Self::save) wrote into `dir`.
    pub fn load(dir: &Path, config: ModelConfig, device: &B::Device) -> anyhow::Result<Self> {
        let path = dir.join(CRITIC_FILE);
        let mut weights: HashMap<String, HostTensor> = checkpoint::read_safetensors(&path)?.into_iter().collect();
        let mut take = |name: String| {
            weights.remove(&name).ok_or_else(|| anyhow::anyhow!("{} has no `{name}`; was it written by `rlvr train` with a critic?", path.display()))
        };
        let (w, b) = (take(format!("{HEAD}.weight"))?, take(format!("{HEAD}.bias"))?);
        let hidden = config.hidden_size;
        anyhow::ensure!(
            w.shape == [1, hidden] && b.shape == [1],
            "{}: the value head has shapes {:?} and {:?}, expected [1, {hidden}] and [1]",
            path.display(),
            w.shape,
            b.shape
        );
        let backbone = CausalLm::from_weights(config, weights, device)?;
        let score = Linear {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(w.data, w.shape), device)),
            bias: Some(Param::from_tensor(Tensor::from_data(TensorData::new(b.data, b.shape), device))),
        };
        Ok(Self { backbone, score })
    }

    /// Writes the weights (f32, the backbone under its HF names plus `score.weight` / `score.bias`) to
    /// `dir/critic.safetensors`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let mut tensors = self.backbone.to_host_weights();
        tensors.extend(self.score.to_host_weights(HEAD));
        std::fs::create_dir_all(dir)?;
        checkpoint::write_safetensors(&dir.join(CRITIC_FILE), &tensors, SaveDtype::F32)?;
        Ok(())
    }

    /// The value of every response token, `(batch, longest response)`, zero past each response
    /// (`rows[b]` = prompt + response, the first `prompt_lens[b]` tokens the prompt). Differentiable.
    pub fn values(&self, rows: &[&[u32]], prompt_lens: &[usize]) -> Result<Tensor<B, 2>, ModelError> {
        let h = self.backbone.response_hidden(rows, prompt_lens)?;
        let [batch, longest, _] = h.dims();
        let values = self.score.forward(h).squeeze_dim::<2>(2);
        let valid: Vec<f32> = rows
            .iter()
            .zip(prompt_lens)
            .flat_map(|(r, &p)| (0..longest).map(move |t| if t < r.len() - p { 1.0 } else { 0.0 }))
            .collect();
        let device = values.device();
        Ok(values.mul(Tensor::from_data(TensorData::new(valid, [batch, longest]), &device)))
    }
}
