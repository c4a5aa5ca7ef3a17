//! Advantage estimators and policy losses, as pure functions over burn tensors.
//!
//! Everything here follows the definitions of verl's `verl/trainer/ppo/core_algos.py` (and the
//! masked statistics of `verl/utils/torch_functional.py`), so that a run here and a run there
//! optimise the same objective; `learner/tests/algo_parity.rs` checks every function against a
//! PyTorch re-derivation of those definitions (`scripts/fixtures/algo_reference.py`).
//!
//! Shapes: a batch of `B` sequences right-padded to `L` response tokens. `response_mask` is `(B, L)`
//! with 1.0 on response tokens and 0.0 on padding (or on any span the loss must skip). Functions are
//! generic over the backend and keep the float dtype of their inputs, so one backend serves both
//! f32 and f64 (burn-flex picks the dtype per tensor).
//!
//! # Layout
//! - [`advantage`]: GRPO, Dr. GRPO, RLOO, REINFORCE++ (and its group-baseline variant), GAE
//! - [`loss`]: loss aggregation, PPO-clip, GSPO, truncated importance sampling, KL estimators,
//!   entropy and SFT losses, and [`loss::policy_loss`] combining them under a [`PolicyLossConfig`]
//!
//! Masked statistics shared by both live in this module.

pub mod advantage;
pub mod loss;

pub use advantage::{AdvantageConfig, AdvantageEstimator};
pub use loss::{KlEstimator, LossAgg, PolicyLossConfig, PolicyObjective};

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

/// verl's guard against dividing by a zero token count in [`masked_mean`].
const MASKED_MEAN_EPS: f64 = 1e-8;
/// verl's guard added to the variance in [`masked_whiten`].
const WHITEN_EPS: f64 = 1e-8;

/// Errors of the advantage estimators and of loss-config validation.
///
/// Losses themselves take tensors whose shapes burn checks; they panic on a shape mismatch like
/// any other burn op.
#[derive(Debug, thiserror::Error)]
pub enum AlgoError {
    /// An input's length does not match the batch.
    #[error("{what} has {got} entries but the batch has {expected} sequences")]
    BatchMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Whitening over the batch needs an unbiased variance, so at least two valid tokens.
    #[error(
        "{estimator} whitens advantages over the batch and needs at least 2 valid response tokens, got {valid}"
    )]
    TooFewTokens {
        estimator: &'static str,
        valid: usize,
    },
    /// A config field is out of range or inconsistent with the inputs.
    #[error("`{field}` {message}")]
    Config {
        field: &'static str,
        message: String,
    },
}

/// Sum of `values` over the positions where `mask` is non-zero, as a `[1]` tensor.
///
/// Values outside the mask are replaced by zero before multiplying, as verl's `masked_sum` does,
/// so a NaN or inf in padding cannot leak into the sum (or into its gradient).
pub fn masked_sum<B: Backend, const D: usize>(
    values: Tensor<B, D>,
    mask: Tensor<B, D>,
) -> Tensor<B, 1> {
    masked_values(values, mask).sum()
}

/// Mean of `values` over the mask, `sum(values * mask) / (sum(mask) + 1e-8)` as verl's `masked_mean`.
pub fn masked_mean<B: Backend, const D: usize>(
    values: Tensor<B, D>,
    mask: Tensor<B, D>,
) -> Tensor<B, 1> {
    let count = mask.clone().sum();
    masked_sum(values, mask).div(count.add_scalar(MASKED_MEAN_EPS))
}

/// `(values - mean) / sqrt(var + 1e-8)` with mean and unbiased variance taken over the mask of the
/// whole batch (verl's `masked_whiten` with `shift_mean=True`). Positions outside the mask are
/// transformed too; callers multiply by the mask afterwards.
///
/// The mask must hold at least two valid tokens (Bessel's correction divides by `n - 1`); the
/// estimators that call this check it and return [`AlgoError::TooFewTokens`].
pub fn masked_whiten<B: Backend>(values: Tensor<B, 2>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
    let n = mask.clone().sum();
    let mean = masked_mean(values.clone(), mask.clone());
    let centred = values.sub(mean.unsqueeze::<2>());
    let biased_var = masked_mean(centred.clone().square(), mask);
    let bessel = n.clone().div(n.sub_scalar(1.0));
    let var = biased_var.mul(bessel);
    centred.div(var.add_scalar(WHITEN_EPS).sqrt().unsqueeze::<2>())
}

/// `values` with every position outside `mask` set to exactly zero, then multiplied by the mask.
pub(crate) fn masked_values<B: Backend, const D: usize>(
    values: Tensor<B, D>,
    mask: Tensor<B, D>,
) -> Tensor<B, D> {
    let outside: Tensor<B, D, Bool> = mask.clone().equal_elem(0.0);
    values.mask_fill(outside, 0.0).mul(mask)
}

/// A float tensor of the same shape, dtype and device as `like`, 1.0 where `cond` holds.
///
/// `Tensor::float()` on a bool tensor would pick the device's default float dtype; building from
/// `like` keeps f64 inputs in f64.
pub(crate) fn indicator<B: Backend, const D: usize>(
    cond: Tensor<B, D, Bool>,
    like: &Tensor<B, D>,
) -> Tensor<B, D> {
    like.zeros_like().mask_fill(cond, 1.0)
}

/// The values of a float tensor on the host, as f64, in row-major order.
pub(crate) fn to_host<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f64> {
    tensor.into_data().iter::<f64>().collect()
}

/// The single value of a `[1]` tensor on the host, as f64 (detached first).
pub(crate) fn scalar<B: Backend>(tensor: Tensor<B, 1>) -> f64 {
    to_host(tensor.detach())
        .first()
        .copied()
        .unwrap_or(f64::NAN)
}

/// A float tensor from host values, with the dtype and device of `like`.
pub(crate) fn from_host<B: Backend, const D: usize, const DL: usize>(
    values: Vec<f64>,
    shape: [usize; D],
    like: &Tensor<B, DL>,
) -> Tensor<B, D> {
    Tensor::from_data(
        TensorData::new(values, shape),
        (&like.device(), like.dtype()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::DType;
    use rlvr_common::model::Cpu;

    fn t2(values: &[f64], shape: [usize; 2]) -> Tensor<Cpu, 2> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), shape),
            (&Default::default(), DType::F64),
        )
    }

    #[test]
    fn masked_sum_ignores_nan_in_padding() {
        let values = t2(&[1.0, f64::NAN, 2.0, f64::INFINITY], [2, 2]);
        let mask = t2(&[1.0, 0.0, 1.0, 0.0], [2, 2]);
        assert_eq!(scalar(masked_sum(values, mask)), 3.0);
    }

    #[test]
    fn masked_whiten_has_zero_mean_unit_variance_over_the_mask() {
        let values = t2(&[1.0, 4.0, -2.0, 100.0, 0.5, 3.0], [2, 3]);
        let mask = t2(&[1.0, 1.0, 1.0, 0.0, 1.0, 1.0], [2, 3]);
        let white = to_host(masked_whiten(values, mask.clone()));
        let valid: Vec<f64> = white
            .iter()
            .zip(to_host(mask))
            .filter(|(_, m)| *m > 0.0)
            .map(|(w, _)| *w)
            .collect();
        let n = valid.len() as f64;
        let mean = valid.iter().sum::<f64>() / n;
        let var = valid.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // Not exactly 0: verl's mean divides by `n + 1e-8`, leaving an offset of order 1e-9.
        assert!(mean.abs() < 1e-7, "mean {mean}");
        assert!((var - 1.0).abs() < 1e-6, "var {var}");
    }

    #[test]
    fn indicator_keeps_the_dtype_of_its_template() {
        let like = t2(&[0.5, -1.0], [1, 2]);
        let ind = indicator(like.clone().greater_elem(0.0), &like);
        assert_eq!(ind.dtype(), DType::F64);
        assert_eq!(to_host(ind), vec![1.0, 0.0]);
    }
}
