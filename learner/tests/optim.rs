//! The optimiser against PyTorch and against itself:
//!
//! - AdamW + `clip_grad_norm_` + the LR schedule reproduce `torch.optim.AdamW` step by step (fixture
//!   from `scripts/fixtures/adamw_reference.py`), on a small custom module and on a tiny `CausalLm`
//!   whose state keys must be the HF names torch sees;
//! - the schedules match transformers' and verl's lambdas;
//! - saving, reloading model and optimiser, and going on gives bit-identical weights;
//! - clipping, accumulation and loading against the wrong model behave.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use rlvr_common::checkpoint::{SaveDtype, read_safetensors};
use rlvr_common::model::{CausalLm, Cpu, CpuAutodiff, ModelConfig};
use rlvr_learner::optim::{
    AdamW, AdamWConfig, GradAccumulator, LrDecay, LrSchedule, META_FILE, OptimError, STATE_FILE, clip_grad_norm,
    grad_norm, named_params,
};
use serde::Deserialize;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// The fixture.

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
    schedules: Vec<ScheduleCase>,
}

#[derive(Deserialize)]
struct FixTensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    config: AdamWConfig,
    max_grad_norm: f64,
    initial: HashMap<String, FixTensor>,
    steps: Vec<FixStep>,
    final_state: HashMap<String, FixState>,
    model_config: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct FixStep {
    lr: f64,
    grad_norm: f64,
    grads: HashMap<String, Option<FixTensor>>,
    params: HashMap<String, FixTensor>,
}

#[derive(Deserialize)]
struct FixState {
    step: u64,
    exp_avg: FixTensor,
    exp_avg_sq: FixTensor,
}

#[derive(Deserialize)]
struct ScheduleCase {
    schedule: LrSchedule,
    factors: Vec<f64>,
}

fn fixture() -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adamw_reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn case<'a>(fixture: &'a Fixture, name: &str) -> &'a Case {
    fixture.cases.iter().find(|c| c.name == name).unwrap()
}

/// f32 parity, per tensor: `max |got - want| <= 1e-6 * max |want|`. Per tensor rather than per
/// element because a moment that nearly cancels (a sum of clipped gradients of both signs) carries
/// the rounding of its terms, not of its own size. Returns that ratio.
fn assert_close(what: &str, got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, &w| m.max(f64::from(w).abs())).max(f64::MIN_POSITIVE);
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - f64::from(w)).abs())
        .enumerate()
        .fold((0, 0.0f64), |best, (i, e)| if e > best.1 { (i, e) } else { best });
    let (g, w) = (got[i], want[i]);
    assert!(err <= 1e-6 * scale, "{what}[{i}]: got {g:e}, torch {w:e} (error {err:e}, tensor scale {scale:e})");
    err / scale
}

fn assert_close_scalar(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-6 * want.abs() + 1e-12, "{what}: got {got:e}, torch {want:e}");
}

// ---------------------------------------------------------------------------------------------
// Models: a small custom module (Vec and Option fields) and the tiny causal LM.

#[derive(Module, Debug)]
struct Block<B: Backend> {
    weight: Param<Tensor<B, 2>>,
    bias: Option<Param<Tensor<B, 1>>>,
}

#[derive(Module, Debug)]
struct Toy<B: Backend> {
    blocks: Vec<Block<B>>,
    scale: Param<Tensor<B, 1>>,
}

fn param<B: Backend, const D: usize>(t: &FixTensor, device: &B::Device) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device))
}

fn toy(initial: &HashMap<String, FixTensor>) -> Toy<CpuAutodiff> {
    let device = Default::default();
    let p = |name: &str| &initial[name];
    Toy {
        blocks: vec![
            Block { weight: param(p("blocks.0.weight"), &device), bias: Some(param(p("blocks.0.bias"), &device)) },
            Block { weight: param(p("blocks.1.weight"), &device), bias: None },
        ],
        scale: param(p("scale"), &device),
    }
}

/// Every float parameter's values by path, collected independently of the optimiser's naming.
struct Values {
    path: Vec<String>,
    out: HashMap<String, Vec<f32>>,
}

impl<B: Backend> ModuleVisitor<B> for Values {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let data = param.val().into_data().convert::<f32>().into_vec().unwrap();
        self.out.insert(self.path.join("."), data);
    }
}

fn values<B: Backend, M: Module<B>>(model: &M) -> HashMap<String, Vec<f32>> {
    let mut v = Values { path: Vec::new(), out: HashMap::new() };
    model.visit(&mut v);
    v.out
}

/// The HF weights of a causal LM (its own listing, not the module path).
fn hf_values<B: Backend>(model: &CausalLm<B>) -> HashMap<String, Vec<f32>> {
    model.to_host_weights().into_iter().map(|(n, t)| (n, t.data)).collect()
}

/// `GradientsParams` holding the fixture's gradients, found by parameter name.
fn fixture_grads<M>(model: &M, grads: &HashMap<String, Option<FixTensor>>) -> GradientsParams
where
    M: AutodiffModule<CpuAutodiff>,
{
    let device = Default::default();
    let mut out = GradientsParams::new();
    let names = named_params(model);
    for (name, g) in grads {
        let Some(g) = g else { continue };
        let found = names.iter().find(|(n, _, _)| n == name);
        let (_, id, shape) = found.unwrap_or_else(|| panic!("no parameter `{name}`"));
        assert_eq!(shape, &g.shape, "{name}");
        let data = TensorData::new(g.data.clone(), g.shape.clone());
        match shape.len() {
            1 => out.register::<Cpu, 1>(*id, Tensor::from_data(data, &device)),
            2 => out.register::<Cpu, 2>(*id, Tensor::from_data(data, &device)),
            d => panic!("{d}-D parameter {name}"),
        }
    }
    out
}

/// Runs a fixture case through our optimiser, checking lr, grad norm and weights after each step and
/// the saved moments at the end. `read` lists the weights under the names the fixture uses.
fn check_case<M, R>(case: &Case, mut model: M, read: R)
where
    M: AutodiffModule<CpuAutodiff>,
    R: Fn(&M) -> HashMap<String, Vec<f32>>,
{
    let mut optim = AdamW::<Cpu>::new(case.config.clone()).unwrap();
    let mut worst = 0.0f64;
    for (i, step) in case.steps.iter().enumerate() {
        let what = format!("{} step {}", case.name, i + 1);
        let mut grads = fixture_grads(&model, &step.grads);
        assert_close_scalar(&format!("{what} lr"), optim.lr(), step.lr);
        let norm = clip_grad_norm(&model, &mut grads, case.max_grad_norm).unwrap();
        assert_close_scalar(&format!("{what} grad_norm"), norm, step.grad_norm);
        model = optim.step(model, grads);
        let now = read(&model);
        assert_eq!(now.len(), step.params.len(), "{what}: parameter count");
        for (name, want) in &step.params {
            worst = worst.max(assert_close(&format!("{what} {name}"), &now[name], &want.data));
        }
    }
    assert_eq!(optim.steps(), case.steps.len() as u64);
    // The saved state is torch's `optimizer.state`, keyed by the same names.
    let dir = tempfile::tempdir().unwrap();
    optim.save(dir.path()).unwrap();
    let saved: HashMap<_, _> = read_safetensors(&dir.path().join(STATE_FILE)).unwrap().into_iter().collect();
    assert_eq!(saved.len(), 2 * case.final_state.len());
    let meta = std::fs::read_to_string(dir.path().join(META_FILE)).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    for (name, want) in &case.final_state {
        let (m, v) = (&saved[&format!("exp_avg.{name}")], &saved[&format!("exp_avg_sq.{name}")]);
        assert_eq!(m.shape, want.exp_avg.shape, "{name}");
        worst = worst.max(assert_close(&format!("{} exp_avg.{name}", case.name), &m.data, &want.exp_avg.data));
        worst = worst.max(assert_close(&format!("{} exp_avg_sq.{name}", case.name), &v.data, &want.exp_avg_sq.data));
        assert_eq!(meta["param_steps"][name], json!(want.step), "{name}");
    }
    eprintln!("{}: worst error vs torch, relative to the tensor's largest value: {worst:.2e}", case.name);
}

fn tiny_config(arch: &str, tied: bool) -> ModelConfig {
    ModelConfig::from_json(json!({
        "model_type": arch, "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4,
        "max_position_embeddings": 32, "rms_norm_eps": 1e-6, "tie_word_embeddings": tied, "rope_theta": 10000.0
    }))
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Parity with PyTorch.

#[test]
fn custom_module_matches_torch_adamw() {
    let fixture = fixture();
    let case = case(&fixture, "toy_constant");
    // Exercises: Vec and Option paths, a no-decay group for 1-D parameters, a step where `scale` has no
    // gradient, warmup from a ratio, and steps that clip next to steps that do not.
    check_case(case, toy(&case.initial), values);
}

#[test]
fn causal_lm_matches_torch_adamw_under_hf_names() {
    let fixture = fixture();
    let case = case(&fixture, "tiny_qwen2_cosine");
    let config = ModelConfig::from_json(case.model_config.clone().unwrap()).unwrap();
    let weights = case
        .initial
        .iter()
        .map(|(n, t)| (n.clone(), rlvr_common::checkpoint::HostTensor::new(t.shape.clone(), t.data.clone())))
        .collect();
    let model = CausalLm::<CpuAutodiff>::from_weights(config, weights, &Default::default()).unwrap();
    // The optimiser's names are the HF keys torch used.
    let mut ours: Vec<String> = named_params(&model).into_iter().map(|(n, _, _)| n).collect();
    let mut hf: Vec<String> = case.initial.keys().cloned().collect();
    ours.sort();
    hf.sort();
    assert_eq!(ours, hf);
    check_case(case, model, hf_values);
}

#[test]
fn schedules_match_transformers_and_verl() {
    for case in fixture().schedules {
        case.schedule.validate().unwrap();
        for (step, &want) in case.factors.iter().enumerate() {
            let got = case.schedule.factor(step as u64);
            assert!((got - want).abs() <= 1e-12, "{:?} at step {step}: {got} vs {want}", case.schedule);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Training on the tiny model: resume, accumulation, clipping.

fn batches() -> Vec<Vec<Vec<u32>>> {
    vec![
        vec![vec![1, 5, 9, 2, 7, 30], vec![3, 3, 17, 20, 11]],
        vec![vec![4, 8, 15, 16, 23, 31, 0], vec![6, 1]],
        vec![vec![12, 13, 14], vec![2, 29, 28, 27, 26, 25]],
    ]
}

/// Summed negative log-likelihood of `rows` and its gradients.
fn nll_grads(model: &CausalLm<CpuAutodiff>, rows: &[Vec<u32>]) -> GradientsParams {
    let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let loss = model.token_log_probs(&rows).unwrap().sum().neg();
    GradientsParams::from_grads(loss.backward(), model)
}

fn train_step(optim: &mut AdamW<Cpu>, model: CausalLm<CpuAutodiff>, rows: &[Vec<u32>]) -> CausalLm<CpuAutodiff> {
    let mut grads = nll_grads(&model, rows);
    clip_grad_norm(&model, &mut grads, 1.0).unwrap();
    optim.step(model, grads)
}

fn training_config() -> AdamWConfig {
    AdamWConfig {
        lr: 1e-2,
        betas: (0.9, 0.95),
        weight_decay: 0.1,
        schedule: LrSchedule {
            warmup_steps: 1,
            warmup_init_ratio: 0.5,
            decay: LrDecay::Cosine,
            total_steps: 3,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn resume_from_checkpoint_is_bit_identical() {
    let config = tiny_config("qwen2", false);
    let device = Default::default();
    let batches = batches();

    // Three steps without interruption.
    let mut optim = AdamW::<Cpu>::new(training_config()).unwrap();
    let mut model = CausalLm::<CpuAutodiff>::random(config.clone(), 11, &device);
    for rows in &batches {
        model = train_step(&mut optim, model, rows);
    }
    let straight = hf_values(&model);
    let straight_dir = tempfile::tempdir().unwrap();
    optim.save(straight_dir.path()).unwrap();

    // One step, save both, drop everything, reload both, two more steps.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut optim = AdamW::<Cpu>::new(training_config()).unwrap();
        let model = CausalLm::<CpuAutodiff>::random(config, 11, &device);
        let model = train_step(&mut optim, model, &batches[0]);
        model.save(dir.path(), SaveDtype::F32).unwrap();
        optim.save(dir.path()).unwrap();
    }
    let mut model = CausalLm::<CpuAutodiff>::load(dir.path(), &device).unwrap();
    let mut optim = AdamW::<Cpu>::load(dir.path(), &model).unwrap();
    assert_eq!(optim.steps(), 1);
    assert_eq!(optim.config(), &training_config());
    for rows in &batches[1..] {
        model = train_step(&mut optim, model, rows);
    }
    let resumed = hf_values(&model);

    assert_eq!(straight.len(), resumed.len());
    for (name, want) in &straight {
        let same = want.iter().zip(&resumed[name]).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{name} differs after resuming");
    }
    // The moments too, byte for byte.
    let resumed_dir = tempfile::tempdir().unwrap();
    optim.save(resumed_dir.path()).unwrap();
    let read = |d: &Path| std::fs::read(d.join(STATE_FILE)).unwrap();
    assert!(read(straight_dir.path()) == read(resumed_dir.path()), "optimizer state differs after resuming");
}

#[test]
fn accumulated_micro_batches_equal_one_batch() {
    let model = CausalLm::<CpuAutodiff>::random(tiny_config("llama", true), 5, &Default::default());
    let rows = &batches()[1];
    let mut acc = GradAccumulator::new();
    for row in rows {
        acc.add(&model, nll_grads(&model, std::slice::from_ref(row)));
    }
    assert_eq!(acc.micro_batches(), 2);
    let summed = acc.take();
    assert_eq!(acc.micro_batches(), 0);
    let whole = nll_grads(&model, rows);
    // Equal per parameter, within f32 reassociation.
    for (name, id, shape) in named_params(&model) {
        let get = |g: &GradientsParams| -> Vec<f32> {
            let t = match shape.len() {
                1 => g.get::<Cpu, 1>(id).unwrap().into_data(),
                _ => g.get::<Cpu, 2>(id).unwrap().into_data(),
            };
            t.convert::<f32>().into_vec().unwrap()
        };
        let (a, b) = (get(&summed), get(&whole));
        let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
        let diff = a.iter().zip(&b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-4 * scale, "{name}: accumulated vs whole batch differ by {diff:e} (scale {scale:e})");
    }
}

#[test]
fn clipping_scales_to_max_norm_and_refuses_non_finite() {
    let model = CausalLm::<CpuAutodiff>::random(tiny_config("qwen3", true), 3, &Default::default());
    let rows = &batches()[0];
    let host_norm = |g: &GradientsParams| -> f64 {
        named_params(&model)
            .iter()
            .map(|(_, id, shape)| {
                let t = match shape.len() {
                    1 => g.get::<Cpu, 1>(*id).unwrap().into_data(),
                    _ => g.get::<Cpu, 2>(*id).unwrap().into_data(),
                };
                t.convert::<f64>().into_vec::<f64>().unwrap().iter().map(|x| x * x).sum::<f64>()
            })
            .sum::<f64>()
            .sqrt()
    };

    let mut grads = nll_grads(&model, rows);
    let before = host_norm(&grads);
    assert!((grad_norm(&model, &grads) - before).abs() <= 1e-5 * before);
    // Above the norm: returns the pre-clip norm and scales to max_norm.
    let max_norm = before / 4.0;
    let reported = clip_grad_norm(&model, &mut grads, max_norm).unwrap();
    assert!((reported - before).abs() <= 1e-5 * before, "{reported} vs {before}");
    let after = host_norm(&grads);
    assert!((after - max_norm).abs() <= 1e-5 * max_norm, "{after} vs {max_norm}");
    // Below it: untouched.
    let untouched = host_norm(&grads);
    clip_grad_norm(&model, &mut grads, 10.0 * before).unwrap();
    assert_eq!(host_norm(&grads), untouched);

    // A NaN anywhere: an error, and the gradients are left as they were.
    let (_, id, shape) = named_params(&model).into_iter().find(|(n, _, _)| n == "model.norm.weight").unwrap();
    let nan = TensorData::new(vec![f32::NAN; shape[0]], shape.clone());
    let nan = Tensor::<Cpu, 1>::from_data(nan, &Default::default());
    grads.register::<Cpu, 1>(id, nan);
    let first = named_params(&model)[0].1;
    let embed_before = grads.get::<Cpu, 2>(first).unwrap().into_data();
    match clip_grad_norm(&model, &mut grads, 1.0) {
        Err(OptimError::NonFiniteGradNorm(n)) => assert!(n.is_nan()),
        other => panic!("expected a non-finite norm error, got {other:?}"),
    }
    assert_eq!(grads.get::<Cpu, 2>(first).unwrap().into_data(), embed_before);
    assert!(matches!(clip_grad_norm(&model, &mut grads, 0.0), Err(OptimError::Config { field: "max_grad_norm", .. })));
}

#[test]
fn loading_against_another_model_names_the_parameter() {
    let device = Default::default();
    let model = CausalLm::<CpuAutodiff>::random(tiny_config("qwen2", false), 1, &device);
    let mut optim = AdamW::<Cpu>::new(AdamWConfig::default()).unwrap();
    let model = train_step(&mut optim, model, &batches()[0]);
    let dir = tempfile::tempdir().unwrap();
    optim.save(dir.path()).unwrap();
    assert!(AdamW::<Cpu>::load(dir.path(), &model).is_ok());

    // Same names, other shapes.
    let mut wider = tiny_config("qwen2", false).raw;
    wider["vocab_size"] = json!(40);
    let wider = CausalLm::<CpuAutodiff>::random(ModelConfig::from_json(wider).unwrap(), 1, &device);
    let err = AdamW::<Cpu>::load(dir.path(), &wider).unwrap_err().to_string();
    assert!(err.contains("has shape") && (err.contains("embed_tokens") || err.contains("lm_head")), "{err}");

    // Other names: the tied model has no lm_head.
    let tied = CausalLm::<CpuAutodiff>::random(tiny_config("qwen2", true), 1, &device);
    let err = AdamW::<Cpu>::load(dir.path(), &tied).unwrap_err().to_string();
    assert!(err.contains("`lm_head.weight`") && err.contains("not a parameter"), "{err}");

    // A missing file is an I/O error naming it.
    let empty = tempfile::tempdir().unwrap();
    let err = AdamW::<Cpu>::load(empty.path(), &model).unwrap_err().to_string();
    assert!(err.contains(META_FILE), "{err}");
}
