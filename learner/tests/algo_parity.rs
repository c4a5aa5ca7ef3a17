//! Parity of `rlvr_learner::algo` with the PyTorch reference.
//!
//! `tests/fixtures/algo_parity.json` is written by `scripts/fixtures/algo_reference.py` (float64
//! torch, verl's definitions; rerun instructions in its header). Every case is evaluated here in
//! f64 and in f32, on the plain CPU backend (values) and on the autodiff one (values and
//! d(loss)/d(log_prob)), and compared with `|ours - expected| <= tol * (1 + |expected|)`: tol = 1e-6
//! for f64 and 1e-5 for f32.

use std::collections::BTreeMap;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use rlvr_common::model::{Cpu, CpuAutodiff};
use rlvr_learner::algo::advantage::{self, AdvantageConfig, AdvantageEstimator};
use rlvr_learner::algo::loss::{
    self, ClipRange, KlEstimator, KlLossConfig, LossAgg, PolicyExtras, PolicyInputs,
    PolicyLossConfig, PolicyLossMetrics, PolicyObjective,
};
use serde::Deserialize;

const FIXTURE: &str = include_str!("fixtures/algo_parity.json");

type Mat = Vec<Vec<f64>>;

#[derive(Deserialize)]
struct Fixture {
    torch: String,
    advantage: Vec<AdvantageCase>,
    loss: Vec<LossCase>,
    value: Vec<ValueCase>,
}

/// The critic's clipped value loss, with d(loss)/d(vpreds).
#[derive(Deserialize)]
struct ValueCase {
    name: String,
    vpreds: Mat,
    values: Mat,
    returns: Mat,
    response_mask: Mat,
    clip: f64,
    agg: String,
    expected_loss: f64,
    expected_clip_frac: f64,
    expected_grad: Mat,
}

#[derive(Deserialize)]
struct AdvantageCase {
    name: String,
    estimator: AdvantageEstimator,
    scores: Option<Vec<f64>>,
    group: Option<Vec<u64>>,
    token_rewards: Option<Mat>,
    values: Option<Mat>,
    response_mask: Mat,
    gamma: f64,
    lam: Option<f64>,
    expected_advantages: Mat,
    expected_returns: Option<Mat>,
}

#[derive(Deserialize)]
struct LossCase {
    name: String,
    kind: String,
    loss_mat: Option<Mat>,
    log_prob: Option<Mat>,
    old_log_prob: Option<Mat>,
    advantages: Option<Mat>,
    response_mask: Mat,
    rollout_log_prob: Option<Mat>,
    ref_log_prob: Option<Mat>,
    entropy: Option<Mat>,
    logits: Option<Vec<Mat>>,
    objective: Option<String>,
    agg: Option<String>,
    agg_constant: Option<f64>,
    clip_low: Option<f64>,
    clip_high: Option<f64>,
    dual_clip: Option<f64>,
    tis_cap: Option<f64>,
    kl: Option<KlEstimator>,
    kl_coef: Option<f64>,
    entropy_coeff: Option<f64>,
    expected_loss: Option<f64>,
    expected_metrics: Option<BTreeMap<String, f64>>,
    expected_grad: Option<Mat>,
    expected_kl: Option<Mat>,
    expected_entropy: Option<Mat>,
    expected_tis_weights: Option<Mat>,
}

fn fixture() -> Fixture {
    serde_json::from_str(FIXTURE).expect("algo_parity.json parses")
}

/// Compares values and records the worst error, so a failure lists every mismatch at once.
struct Checker {
    dtype: DType,
    tol: f64,
    failures: Vec<String>,
    worst: f64,
    compared: usize,
}

impl Checker {
    fn new(dtype: DType) -> Self {
        let tol = if dtype == DType::F64 { 1e-6 } else { 1e-5 };
        Self {
            dtype,
            tol,
            failures: Vec::new(),
            worst: 0.0,
            compared: 0,
        }
    }

    fn values(&mut self, what: &str, ours: &[f64], expected: &[f64]) {
        if ours.len() != expected.len() {
            self.failures.push(format!(
                "{what}: {} values, expected {}",
                ours.len(),
                expected.len()
            ));
            return;
        }
        for (i, (&a, &e)) in ours.iter().zip(expected).enumerate() {
            let err = (a - e).abs() / (1.0 + e.abs());
            self.compared += 1;
            if err.is_nan() || err > self.tol {
                self.failures
                    .push(format!("{what}[{i}]: ours {a}, expected {e}"));
            } else {
                self.worst = self.worst.max(err);
            }
        }
    }

    fn tensor<B: Backend, const D: usize>(
        &mut self,
        what: &str,
        ours: Tensor<B, D>,
        expected: &[f64],
    ) {
        assert_eq!(
            ours.dtype(),
            self.dtype,
            "{what}: the dtype must follow the inputs"
        );
        let ours: Vec<f64> = ours.into_data().iter::<f64>().collect();
        self.values(what, &ours, expected);
    }

    fn metrics(&mut self, what: &str, ours: &PolicyLossMetrics, expected: &BTreeMap<String, f64>) {
        for (key, &value) in expected {
            let ours = match key.as_str() {
                "pg_loss" => Some(ours.pg_loss),
                "clip_frac" => Some(ours.clip_frac),
                "clip_frac_lower" => Some(ours.clip_frac_lower),
                "ppo_kl" => Some(ours.ppo_kl),
                "kl_loss" => ours.kl_loss,
                "entropy" => ours.entropy,
                _ => None,
            };
            match ours {
                Some(ours) => self.values(&format!("{what}.{key}"), &[ours], &[value]),
                None => self.failures.push(format!("{what}: no metric `{key}`")),
            }
        }
    }

    fn finish(self, label: &str) {
        assert!(self.compared > 0, "{label}: nothing compared");
        assert!(
            self.failures.is_empty(),
            "{label}: {} of {} values out of tolerance {}:\n{}",
            self.failures.len(),
            self.compared,
            self.tol,
            self.failures.join("\n")
        );
        eprintln!(
            "{label}: {} values within {} (worst relative error {:.2e})",
            self.compared, self.tol, self.worst
        );
    }
}

fn flat(m: &Mat) -> Vec<f64> {
    m.iter().flatten().copied().collect()
}

fn mat<B: Backend>(m: &Mat, dtype: DType) -> Tensor<B, 2> {
    let shape = [m.len(), m.first().map_or(0, Vec::len)];
    Tensor::from_data(
        TensorData::new(flat(m), shape),
        (&Default::default(), dtype),
    )
}

fn vector<B: Backend>(v: &[f64], dtype: DType) -> Tensor<B, 1> {
    Tensor::from_data(
        TensorData::new(v.to_vec(), [v.len()]),
        (&Default::default(), dtype),
    )
}

fn field<'a, T>(case: &str, name: &str, value: &'a Option<T>) -> &'a T {
    value
        .as_ref()
        .unwrap_or_else(|| panic!("case {case}: fixture lacks `{name}`"))
}

fn agg_of(case: &LossCase) -> LossAgg {
    match field(&case.name, "agg", &case.agg).as_str() {
        "token_mean" => LossAgg::TokenMean,
        "seq_mean_token_mean" => LossAgg::SeqMeanTokenMean,
        "seq_mean_token_sum" => LossAgg::SeqMeanTokenSum,
        "seq_mean_token_sum_norm" => LossAgg::SeqMeanTokenSumNorm {
            constant: *field(&case.name, "agg_constant", &case.agg_constant),
        },
        other => panic!("case {}: unknown agg {other}", case.name),
    }
}

fn clip_of(case: &LossCase) -> ClipRange {
    ClipRange {
        low: *field(&case.name, "clip_low", &case.clip_low),
        high: *field(&case.name, "clip_high", &case.clip_high),
    }
}

fn check_advantages(dtype: DType) {
    let fixture = fixture();
    let mut check = Checker::new(dtype);
    for case in &fixture.advantage {
        let name = case.name.as_str();
        let mask = mat::<Cpu>(&case.response_mask, dtype);
        let config = AdvantageConfig {
            estimator: case.estimator,
            gamma: case.gamma,
            lam: case.lam.unwrap_or(1.0),
            ..AdvantageConfig::default()
        };
        let (advantages, returns) = match (&case.token_rewards, case.estimator) {
            (None, _) => {
                let scores: &Vec<f64> = field(name, "scores", &case.scores);
                let scores = vector::<Cpu>(scores, dtype);
                let group = case.group.clone().unwrap_or_default();
                (
                    advantage::outcome_advantages(&config, scores, mask, &group),
                    None,
                )
            }
            (Some(rewards), AdvantageEstimator::ReinforcePlusPlus) => {
                let out = advantage::reinforce_plus_plus(mat(rewards, dtype), mask, case.gamma);
                let (a, r) = out.unwrap_or_else(|e| panic!("{name}: {e}"));
                (Ok(a), Some(r))
            }
            (Some(rewards), AdvantageEstimator::Gae) => {
                let values = mat(field(name, "values", &case.values), dtype);
                let out =
                    advantage::gae(mat(rewards, dtype), values, mask, config.gamma, config.lam);
                let (a, r) = out.unwrap_or_else(|e| panic!("{name}: {e}"));
                (Ok(a), Some(r))
            }
            (Some(_), other) => panic!("{name}: token rewards given to {other:?}"),
        };
        let advantages = advantages.unwrap_or_else(|e| panic!("{name}: {e}"));
        check.tensor(
            &format!("{name}.advantages"),
            advantages,
            &flat(&case.expected_advantages),
        );
        if let Some(expected) = &case.expected_returns {
            let returns = returns.unwrap_or_else(|| panic!("{name}: no returns computed"));
            check.tensor(&format!("{name}.returns"), returns, &flat(expected));
        }
    }
    check.finish(&format!("advantages {dtype:?} (torch {})", fixture.torch));
}

/// What a loss case computes: a scalar loss (if any) and per-token tensors to compare.
struct Evaluated<B: Backend> {
    loss: Option<Tensor<B, 1>>,
    metrics: Option<PolicyLossMetrics>,
    per_token: Vec<(&'static str, Tensor<B, 2>, Mat)>,
}

fn evaluate<B: Backend>(
    case: &LossCase,
    log_prob: Option<Tensor<B, 2>>,
    dtype: DType,
) -> Evaluated<B> {
    let name = case.name.as_str();
    let mask = mat::<B>(&case.response_mask, dtype);
    let log_prob = || {
        log_prob
            .clone()
            .unwrap_or_else(|| panic!("case {name}: needs log_prob"))
    };
    let inputs = || PolicyInputs {
        log_prob: log_prob(),
        old_log_prob: mat(field(name, "old_log_prob", &case.old_log_prob), dtype),
        advantages: mat(field(name, "advantages", &case.advantages), dtype),
        response_mask: mask.clone(),
    };
    let tis = || {
        case.tis_cap.map(|cap| {
            let rollout = mat(
                field(name, "rollout_log_prob", &case.rollout_log_prob),
                dtype,
            );
            let old = mat(field(name, "old_log_prob", &case.old_log_prob), dtype);
            loss::tis_weights(old, rollout, mask.clone(), cap)
        })
    };
    let mut per_token = Vec::new();
    let (loss, metrics) = match case.kind.as_str() {
        "agg" => {
            let loss_mat = mat(field(name, "loss_mat", &case.loss_mat), dtype);
            (Some(loss::agg_loss(loss_mat, mask, agg_of(case))), None)
        }
        "ppo_clip" | "gspo" => {
            let weights = tis();
            if let (Some(w), Some(expected)) = (&weights, &case.expected_tis_weights) {
                per_token.push(("tis_weights", w.clone(), expected.clone()));
            }
            let out = if case.kind == "ppo_clip" {
                loss::ppo_clip_loss(
                    &inputs(),
                    weights,
                    clip_of(case),
                    case.dual_clip,
                    agg_of(case),
                )
            } else {
                loss::gspo_loss(&inputs(), weights, clip_of(case))
            };
            (Some(out.loss), Some(out.metrics))
        }
        "kl" => {
            let kind = *field(name, "kl", &case.kl);
            let reference = mat(field(name, "ref_log_prob", &case.ref_log_prob), dtype);
            let kl = loss::kl_penalty(log_prob(), reference, kind);
            per_token.push((
                "kl",
                kl.clone(),
                field(name, "expected_kl", &case.expected_kl).clone(),
            ));
            (Some(loss::agg_loss(kl, mask, LossAgg::TokenMean)), None)
        }
        "entropy" => {
            let logits = field(name, "logits", &case.logits);
            let shape = [logits.len(), logits[0].len(), logits[0][0].len()];
            let values: Vec<f64> = logits.iter().flatten().flatten().copied().collect();
            let logits: Tensor<B, 3> =
                Tensor::from_data(TensorData::new(values, shape), (&Default::default(), dtype));
            let entropy = loss::entropy_from_logits(logits);
            let expected = field(name, "expected_entropy", &case.expected_entropy).clone();
            per_token.push(("entropy", entropy.clone(), expected));
            (Some(loss::agg_loss(entropy, mask, agg_of(case))), None)
        }
        "sft" => (Some(loss::sft_loss(log_prob(), mask, agg_of(case))), None),
        "policy" => {
            let objective = match field(name, "objective", &case.objective).as_str() {
                "ppo_clip" => PolicyObjective::PpoClip {
                    clip_low: clip_of(case).low,
                    clip_high: clip_of(case).high,
                    dual_clip: case.dual_clip,
                },
                "gspo" => PolicyObjective::Gspo {
                    clip_low: clip_of(case).low,
                    clip_high: clip_of(case).high,
                },
                other => panic!("case {name}: unknown objective {other}"),
            };
            let config = PolicyLossConfig {
                objective,
                agg: agg_of(case),
                tis_cap: case.tis_cap,
                kl: Some(KlLossConfig {
                    coef: *field(name, "kl_coef", &case.kl_coef),
                    estimator: *field(name, "kl", &case.kl),
                }),
                entropy_coeff: *field(name, "entropy_coeff", &case.entropy_coeff),
            };
            let extras = PolicyExtras {
                rollout_log_prob: case.rollout_log_prob.as_ref().map(|m| mat(m, dtype)),
                ref_log_prob: case.ref_log_prob.as_ref().map(|m| mat(m, dtype)),
                entropy: case.entropy.as_ref().map(|m| mat(m, dtype)),
            };
            let out = loss::policy_loss(&config, &inputs(), &extras)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (Some(out.loss), Some(out.metrics))
        }
        other => panic!("case {name}: unknown kind {other}"),
    };
    Evaluated {
        loss,
        metrics,
        per_token,
    }
}

fn compare<B: Backend>(check: &mut Checker, case: &LossCase, evaluated: Evaluated<B>) {
    let name = &case.name;
    if let Some(expected) = case.expected_loss {
        let loss = evaluated
            .loss
            .unwrap_or_else(|| panic!("{name}: no loss computed"));
        check.tensor(&format!("{name}.loss"), loss.detach(), &[expected]);
    }
    if let Some(expected) = &case.expected_metrics {
        let metrics = evaluated
            .metrics
            .unwrap_or_else(|| panic!("{name}: no metrics computed"));
        check.metrics(name, &metrics, expected);
    }
    for (what, tensor, expected) in evaluated.per_token {
        check.tensor(&format!("{name}.{what}"), tensor.detach(), &flat(&expected));
    }
}

/// Values on the plain backend: the functions must not need autodiff.
fn check_loss_values(dtype: DType) {
    let fixture = fixture();
    let mut check = Checker::new(dtype);
    for case in &fixture.loss {
        let log_prob = case.log_prob.as_ref().map(|m| mat::<Cpu>(m, dtype));
        let evaluated = evaluate(case, log_prob, dtype);
        compare(&mut check, case, evaluated);
    }
    check.finish(&format!("loss values {dtype:?}"));
}

/// Values and d(loss)/d(log_prob) on the autodiff backend.
fn check_loss_gradients<B: AutodiffBackend>(dtype: DType) {
    let fixture = fixture();
    let mut check = Checker::new(dtype);
    let mut with_grad = 0;
    for case in &fixture.loss {
        let log_prob = case
            .log_prob
            .as_ref()
            .map(|m| mat::<B>(m, dtype).require_grad());
        let evaluated = evaluate(case, log_prob.clone(), dtype);
        let loss = evaluated.loss.clone();
        compare(&mut check, case, evaluated);
        if let Some(expected) = &case.expected_grad {
            let (loss, log_prob) = (loss.expect("a loss"), log_prob.expect("log_prob"));
            let grads = loss.backward();
            let grad = log_prob
                .grad(&grads)
                .unwrap_or_else(|| panic!("{}: no gradient reached log_prob", case.name));
            check.tensor(&format!("{}.grad", case.name), grad, &flat(expected));
            with_grad += 1;
        }
    }
    assert!(with_grad >= 10, "only {with_grad} cases carried gradients");
    check.finish(&format!("loss values and gradients {dtype:?}"));
}

#[test]
fn fixture_covers_every_estimator_and_loss() {
    let fixture = fixture();
    for estimator in [
        AdvantageEstimator::Grpo,
        AdvantageEstimator::DrGrpo,
        AdvantageEstimator::Rloo,
        AdvantageEstimator::ReinforcePlusPlus,
        AdvantageEstimator::ReinforcePlusPlusBaseline,
        AdvantageEstimator::Gae,
    ] {
        let n = fixture
            .advantage
            .iter()
            .filter(|c| c.estimator == estimator)
            .count();
        assert!(n >= 2, "{estimator:?}: {n} cases");
    }
    for kind in ["agg", "ppo_clip", "gspo", "kl", "entropy", "sft", "policy"] {
        assert!(
            fixture.loss.iter().any(|c| c.kind == kind),
            "no `{kind}` case"
        );
    }
    for kl in [
        KlEstimator::K1,
        KlEstimator::K2,
        KlEstimator::K3,
        KlEstimator::Abs,
    ] {
        assert!(
            fixture
                .loss
                .iter()
                .any(|c| c.kind == "kl" && c.kl == Some(kl)),
            "{kl:?}"
        );
    }
    assert!(
        fixture
            .loss
            .iter()
            .any(|c| c.tis_cap.is_some() && c.kind == "ppo_clip")
    );
    assert!(fixture.loss.iter().any(|c| c.dual_clip.is_some()));
}

#[test]
fn advantages_match_reference_f64() {
    check_advantages(DType::F64);
}

#[test]
fn advantages_match_reference_f32() {
    check_advantages(DType::F32);
}

#[test]
fn losses_match_reference_f64() {
    check_loss_values(DType::F64);
}

#[test]
fn losses_match_reference_f32() {
    check_loss_values(DType::F32);
}

#[test]
fn loss_gradients_match_reference_f64() {
    check_loss_gradients::<CpuAutodiff>(DType::F64);
}

#[test]
fn loss_gradients_match_reference_f32() {
    check_loss_gradients::<CpuAutodiff>(DType::F32);
}

/// The clipped value loss, its clip fraction and d(loss)/d(vpreds), on the autodiff backend.
fn check_value_loss<B: AutodiffBackend>(dtype: DType) {
    let fixture = fixture();
    assert!(fixture.value.len() >= 4, "the fixture has {} value-loss cases", fixture.value.len());
    let mut check = Checker::new(dtype);
    for case in &fixture.value {
        let agg = match case.agg.as_str() {
            "token_mean" => LossAgg::TokenMean,
            "seq_mean_token_mean" => LossAgg::SeqMeanTokenMean,
            other => panic!("{}: agg `{other}`", case.name),
        };
        let vpreds = mat::<B>(&case.vpreds, dtype).require_grad();
        let out = loss::value_loss(
            vpreds.clone(),
            mat(&case.values, dtype),
            mat(&case.returns, dtype),
            mat(&case.response_mask, dtype),
            case.clip,
            agg,
        );
        check.tensor(&format!("{}.loss", case.name), out.loss.clone().detach(), &[case.expected_loss]);
        check.values(&format!("{}.clip_frac", case.name), &[out.clip_frac], &[case.expected_clip_frac]);
        let grads = out.loss.backward();
        let grad = vpreds.grad(&grads).unwrap_or_else(|| panic!("{}: no gradient reached vpreds", case.name));
        check.tensor(&format!("{}.grad", case.name), grad, &flat(&case.expected_grad));
    }
    check.finish(&format!("value loss {dtype:?}"));
}

#[test]
fn value_loss_matches_reference_f64() {
    check_value_loss::<CpuAutodiff>(DType::F64);
}

#[test]
fn value_loss_matches_reference_f32() {
    check_value_loss::<CpuAutodiff>(DType::F32);
}
