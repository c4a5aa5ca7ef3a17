//! The decoder's operations with their own backward pass: linear layers, attention, RoPE, RMSNorm,
//! SwiGLU and the log-prob of the taken token.
//!
//! Written as compositions of burn ops, all but the linear layer would keep every intermediate for
//! backward under burn's autodiff: attention's exponentials and probabilities (two `(B, heads, L, T)` tensors per
//! layer), RMSNorm's squares and products, SiLU's sigmoid and product, and log-softmax's exponentials over
//! the whole vocabulary. As single autodiff nodes they keep only their inputs (attention also its output)
//! and recompute the rest in backward, as FlashAttention does with the probabilities (Dao et al. 2022,
//! "FlashAttention", §3.1): less memory, and fewer full-size passes in both directions. The linear layer
//! is a node of its own for the layout of its weight's gradient ([`ModelBackend::linear`]).
//!
//! [`ModelBackend`] is the backend trait the model is generic over. Backends without autodiff run the
//! plain forward ([`reference`]); `Autodiff<B>` records one node per operation whose backward runs on
//! `B`. The unfused compositions stay in [`reference`]: the tests check the fused gradients against them.

use std::marker::PhantomData;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bool, IndexingUpdateOp, Int, Tensor, TensorPrimitive};

/// A burn backend with the model's fused operations. Implemented for the CPU backend, CUDA (with the
/// `cuda` feature) and autodiff over any backend.
pub trait ModelBackend: Backend {
    /// `softmax(mask_fill(q kᵀ, mask, -inf)) v` over the last two dimensions: `q: (B, H, L, D)` already
    /// scaled, `k, v: (B, H, T, D)`, `mask: (B, H, L, T)` with `true` = hidden (no row fully hidden).
    /// Returns `(B, H, L, D)`.
    fn attention(q: Tensor<Self, 4>, k: Tensor<Self, 4>, v: Tensor<Self, 4>, mask: Tensor<Self, 4, Bool>) -> Tensor<Self, 4> {
        reference::attention(q, k, v, mask)
    }

    /// A linear layer without bias, `x wᵀ`: `x: (N, in)`, `weight: (out, in)` as HF stores it. Returns
    /// `(N, out)`. Its own node so that the weight's gradient comes out as `(out, in)` in row-major order,
    /// not as the transpose of an `(in, out)` product, which every later elementwise pass over the
    /// gradient (clipping, the optimiser) would have to read with strides.
    fn linear(x: Tensor<Self, 2>, weight: Tensor<Self, 2>) -> Tensor<Self, 2> {
        reference::linear(x, weight)
    }

    /// RMSNorm of each row of `x: (N, d)`: `x / sqrt(mean(x²) + eps) * weight`.
    fn rms_norm(x: Tensor<Self, 2>, weight: Tensor<Self, 1>, eps: f64) -> Tensor<Self, 2> {
        reference::rms_norm(x, weight, eps)
    }

    /// Rotary position embedding, rotate-half convention (as HF's Llama) written as a swap of halves:
    /// `x ∘ cos + swap(x) ∘ sin` with `swap([x₁, x₂]) = [x₂, x₁]` over the last dimension and `sin`'s
    /// first half negated. `x, cos, sin: (B, L, H, D)`; the tables are constants (no gradient).
    fn rope(x: Tensor<Self, 4>, cos: Tensor<Self, 4>, sin: Tensor<Self, 4>) -> Tensor<Self, 4> {
        reference::rope(x, cos, sin)
    }

    /// SwiGLU's gating: `silu(gate) * up`, elementwise over `(N, d)`.
    fn swiglu(gate: Tensor<Self, 2>, up: Tensor<Self, 2>) -> Tensor<Self, 2> {
        reference::swiglu(gate, up)
    }

    /// `log_softmax(logits / temperature)` at each row's target: `logits: (N, vocab)`, `targets: (N)`.
    /// Returns `(N)`.
    fn token_log_probs(logits: Tensor<Self, 2>, targets: Tensor<Self, 1, Int>, temperature: f64) -> Tensor<Self, 1> {
        reference::token_log_probs(logits, targets, temperature)
    }
}

impl ModelBackend for burn::backend::Flex {}

#[cfg(feature = "cuda")]
impl ModelBackend for burn::backend::Cuda {}

/// The operations as compositions of burn ops: the forward of backends without autodiff, and what the
/// fused backward passes are tested against.
pub mod reference {
    use super::*;

    pub fn attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, mask: Tensor<B, 4, Bool>) -> Tensor<B, 4> {
        probabilities(q, k, mask).matmul(v)
    }

    pub(super) fn probabilities<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, mask: Tensor<B, 4, Bool>) -> Tensor<B, 4> {
        // -inf rather than the lowest float: its exponential is 0 without an underflow.
        softmax(q.matmul(k.transpose()).mask_fill(mask, f32::NEG_INFINITY), 3)
    }

    pub fn linear<B: Backend>(x: Tensor<B, 2>, weight: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(weight.transpose())
    }

    pub fn rms_norm<B: Backend>(x: Tensor<B, 2>, weight: Tensor<B, 1>, eps: f64) -> Tensor<B, 2> {
        normalize(x.clone(), inv_rms(x, eps), weight)
    }

    /// `x ∘ inv_rms ∘ weight`, with `inv_rms: (N, 1)` from [`inv_rms`].
    pub(super) fn normalize<B: Backend>(x: Tensor<B, 2>, inv_rms: Tensor<B, 2>, weight: Tensor<B, 1>) -> Tensor<B, 2> {
        x.mul(inv_rms).mul(weight.unsqueeze())
    }

    /// `1 / sqrt(mean(x²) + eps)` of each row: `(N, 1)`.
    pub(super) fn inv_rms<B: Backend>(x: Tensor<B, 2>, eps: f64) -> Tensor<B, 2> {
        x.powi_scalar(2).mean_dim(1).add_scalar(eps).sqrt().recip()
    }

    pub fn rope<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
        x.clone().mul(cos).add(swap_halves(x).mul(sin))
    }

    /// `[x₁, x₂] -> [x₂, x₁]` over the last dimension.
    pub(super) fn swap_halves<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
        let half = x.dims()[3] / 2;
        Tensor::cat(vec![x.clone().narrow(3, half, half), x.narrow(3, 0, half)], 3)
    }

    pub fn swiglu<B: Backend>(gate: Tensor<B, 2>, up: Tensor<B, 2>) -> Tensor<B, 2> {
        burn::tensor::activation::silu(gate).mul(up)
    }

    pub fn token_log_probs<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>, temperature: f64) -> Tensor<B, 1> {
        burn::tensor::activation::log_softmax(logits.div_scalar(temperature), 1)
            .gather(1, targets.unsqueeze_dim(1))
            .squeeze_dim(1)
    }
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn from_prim<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The inner backend's view of an autodiff tensor (no copy; the tensor type is the same under every
/// checkpoint strategy).
fn inner<B: Backend, const D: usize>(t: &FloatTensor<Autodiff<B>>) -> Tensor<B, D> {
    from_prim(t.primitive.clone())
}

/// The backward of a fused operation with `N` inputs; the implementor holds what it needs.
trait FusedBackward<B: Backend, const N: usize>: Clone + Send + std::fmt::Debug + 'static {
    /// The gradient of each input that needs one (`wanted[i]`), from the output's `grad`.
    fn gradients(self, grad: FloatTensor<B>, wanted: [bool; N]) -> [Option<FloatTensor<B>>; N];
}

/// The autodiff node of a fused operation whose backward state is `S`.
#[derive(Debug)]
struct FusedNode<S>(PhantomData<S>);

impl<B: Backend, S: FusedBackward<B, N>, const N: usize> Backward<B, N> for FusedNode<S> {
    type State = S;

    fn backward(self, ops: Ops<S, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let wanted = ops.parents.each_ref().map(Option::is_some);
        for (parent, g) in ops.parents.into_iter().zip(ops.state.gradients(grad, wanted)) {
            if let (Some(node), Some(g)) = (parent, g) {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// Records `output`, computed on the inner backend from `inputs`, as one autodiff node with `state`'s
/// backward.
fn record<B, C, S, const N: usize, const D: usize>(
    inputs: [&FloatTensor<Autodiff<B, C>>; N],
    state: S,
    output: Tensor<B, D>,
) -> Tensor<Autodiff<B, C>, D>
where
    B: Backend,
    C: CheckpointStrategy,
    S: FusedBackward<B, N>,
{
    let nodes = inputs.map(|t| t.node.clone());
    let out = match FusedNode::<S>(PhantomData).prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, prim(output)),
        OpsKind::UnTracked(prep) => prep.finish(prim(output)),
    };
    from_prim(out)
}

#[derive(Clone, Debug)]
struct AttentionGrad<B: Backend> {
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Tensor<B, 4, Bool>,
    out: Tensor<B, 4>,
}

impl<B: Backend> FusedBackward<B, 3> for AttentionGrad<B> {
    /// With the probabilities `P` recomputed and `dO` the output's gradient: `dV = Pᵀ dO`,
    /// `dS = P ∘ (dO Vᵀ - rowsum(dO ∘ O))`, `dQ = dS K`, `dK = dSᵀ Q` (FlashAttention's backward, §B.2).
    fn gradients(self, grad: FloatTensor<B>, [wq, wk, wv]: [bool; 3]) -> [Option<FloatTensor<B>>; 3] {
        let Self { q, k, v, mask, out } = self;
        let grad: Tensor<B, 4> = from_prim(grad);
        let p = reference::probabilities(q.clone(), k.clone(), mask);
        let dv = wv.then(|| prim(p.clone().transpose().matmul(grad.clone())));
        let row = grad.clone().mul(out).sum_dim(3);
        let ds = grad.matmul(v.transpose()).sub(row).mul(p);
        let dq = wq.then(|| prim(ds.clone().matmul(k)));
        let dk = wk.then(|| prim(ds.transpose().matmul(q)));
        [dq, dk, dv]
    }
}

#[derive(Clone, Debug)]
struct LinearGrad<B: Backend> {
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
}

impl<B: Backend> FusedBackward<B, 2> for LinearGrad<B> {
    /// `dx = g w`, `dw = gᵀ x`.
    fn gradients(self, grad: FloatTensor<B>, [wx, ww]: [bool; 2]) -> [Option<FloatTensor<B>>; 2] {
        let grad: Tensor<B, 2> = from_prim(grad);
        let dw = ww.then(|| prim(grad.clone().transpose().matmul(self.x)));
        [wx.then(|| prim(grad.matmul(self.weight))), dw]
    }
}

#[derive(Clone, Debug)]
struct RmsNormGrad<B: Backend> {
    x: Tensor<B, 2>,
    weight: Tensor<B, 1>,
    inv_rms: Tensor<B, 2>,
}

impl<B: Backend> FusedBackward<B, 2> for RmsNormGrad<B> {
    /// With `r = 1 / rms(x)`, `x̂ = x r` and `g` the output's gradient: `dw = Σ_rows g ∘ x̂`,
    /// `dx = r (g∘w - x̂ mean(g∘w∘x̂))`.
    fn gradients(self, grad: FloatTensor<B>, [wx, ww]: [bool; 2]) -> [Option<FloatTensor<B>>; 2] {
        let Self { x, weight, inv_rms } = self;
        let grad: Tensor<B, 2> = from_prim(grad);
        let d = weight.dims()[0];
        let normed = x.mul(inv_rms.clone());
        let dw = ww.then(|| prim(grad.clone().mul(normed.clone()).sum_dim(0).reshape([d])));
        let dx = wx.then(|| {
            let gw = grad.mul(weight.unsqueeze());
            let mean = gw.clone().mul(normed.clone()).mean_dim(1);
            prim(gw.sub(normed.mul(mean)).mul(inv_rms))
        });
        [dx, dw]
    }
}

#[derive(Clone, Debug)]
struct RopeGrad<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
}

impl<B: Backend> FusedBackward<B, 1> for RopeGrad<B> {
    /// The swap is its own transpose: `dx = g ∘ cos + swap(g ∘ sin)`.
    fn gradients(self, grad: FloatTensor<B>, [wanted]: [bool; 1]) -> [Option<FloatTensor<B>>; 1] {
        let grad: Tensor<B, 4> = from_prim(grad);
        [wanted.then(|| prim(grad.clone().mul(self.cos).add(reference::swap_halves(grad.mul(self.sin)))))]
    }
}

#[derive(Clone, Debug)]
struct SwigluGrad<B: Backend> {
    gate: Tensor<B, 2>,
    up: Tensor<B, 2>,
}

impl<B: Backend> FusedBackward<B, 2> for SwigluGrad<B> {
    /// With `s = σ(gate)`: `d up = g ∘ gate ∘ s`, `d gate = g ∘ up ∘ s ∘ (1 + gate ∘ (1 - s))`.
    fn gradients(self, grad: FloatTensor<B>, [wg, wu]: [bool; 2]) -> [Option<FloatTensor<B>>; 2] {
        let Self { gate, up } = self;
        let grad: Tensor<B, 2> = from_prim(grad);
        let s = burn::tensor::activation::sigmoid(gate.clone());
        let du = wu.then(|| prim(grad.clone().mul(gate.clone()).mul(s.clone())));
        let dg = wg.then(|| {
            let slope = gate.mul(s.clone().neg().add_scalar(1.0)).add_scalar(1.0).mul(s);
            prim(grad.mul(up).mul(slope))
        });
        [dg, du]
    }
}

#[derive(Clone, Debug)]
struct TokenLogProbsGrad<B: Backend> {
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    temperature: f64,
}

impl<B: Backend> FusedBackward<B, 1> for TokenLogProbsGrad<B> {
    /// With `p = softmax(logits / T)`: `d logits = g / T ∘ (onehot(target) - p)`.
    fn gradients(self, grad: FloatTensor<B>, [wanted]: [bool; 1]) -> [Option<FloatTensor<B>>; 1] {
        let Self { logits, targets, temperature } = self;
        let scaled: Tensor<B, 2> = from_prim::<B, 1>(grad).div_scalar(temperature).unsqueeze_dim(1);
        let d = wanted.then(|| {
            let p = softmax(logits.div_scalar(temperature), 1);
            prim(p.mul(scaled.clone().neg()).scatter(1, targets.unsqueeze_dim(1), scaled, IndexingUpdateOp::Add))
        });
        [d]
    }
}

/// `log_softmax(logits / T)` at the targets through the log-sum-exp, without the full log-softmax.
fn token_log_probs_forward<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>, temperature: f64) -> Tensor<B, 1> {
    let scaled = logits.div_scalar(temperature);
    let max = scaled.clone().max_dim(1);
    let lse = scaled.clone().sub(max.clone()).exp().sum_dim(1).log().add(max);
    scaled.gather(1, targets.unsqueeze_dim(1)).sub(lse).squeeze_dim(1)
}

impl<B: Backend, C: CheckpointStrategy> ModelBackend for Autodiff<B, C> {
    fn attention(q: Tensor<Self, 4>, k: Tensor<Self, 4>, v: Tensor<Self, 4>, mask: Tensor<Self, 4, Bool>) -> Tensor<Self, 4> {
        let (q, k, v) = (prim(q), prim(k), prim(v));
        let mask: Tensor<B, 4, Bool> = Tensor::from_primitive(mask.into_primitive());
        let (qi, ki, vi): (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) = (inner(&q), inner(&k), inner(&v));
        let out = reference::attention(qi.clone(), ki.clone(), vi.clone(), mask.clone());
        record([&q, &k, &v], AttentionGrad { q: qi, k: ki, v: vi, mask, out: out.clone() }, out)
    }

    fn linear(x: Tensor<Self, 2>, weight: Tensor<Self, 2>) -> Tensor<Self, 2> {
        let (x, weight) = (prim(x), prim(weight));
        let (xi, wi): (Tensor<B, 2>, Tensor<B, 2>) = (inner(&x), inner(&weight));
        let out = reference::linear(xi.clone(), wi.clone());
        record([&x, &weight], LinearGrad { x: xi, weight: wi }, out)
    }

    fn rms_norm(x: Tensor<Self, 2>, weight: Tensor<Self, 1>, eps: f64) -> Tensor<Self, 2> {
        let (x, weight) = (prim(x), prim(weight));
        let (xi, wi): (Tensor<B, 2>, Tensor<B, 1>) = (inner(&x), inner(&weight));
        let inv_rms = reference::inv_rms(xi.clone(), eps);
        let out = reference::normalize(xi.clone(), inv_rms.clone(), wi.clone());
        record([&x, &weight], RmsNormGrad { x: xi, weight: wi, inv_rms }, out)
    }

    fn rope(x: Tensor<Self, 4>, cos: Tensor<Self, 4>, sin: Tensor<Self, 4>) -> Tensor<Self, 4> {
        let x = prim(x);
        let (cos, sin): (Tensor<B, 4>, Tensor<B, 4>) = (inner(&prim(cos)), inner(&prim(sin)));
        let out = reference::rope(inner(&x), cos.clone(), sin.clone());
        record([&x], RopeGrad { cos, sin }, out)
    }

    fn swiglu(gate: Tensor<Self, 2>, up: Tensor<Self, 2>) -> Tensor<Self, 2> {
        let (gate, up) = (prim(gate), prim(up));
        let (gi, ui): (Tensor<B, 2>, Tensor<B, 2>) = (inner(&gate), inner(&up));
        let out = reference::swiglu(gi.clone(), ui.clone());
        record([&gate, &up], SwigluGrad { gate: gi, up: ui }, out)
    }

    fn token_log_probs(logits: Tensor<Self, 2>, targets: Tensor<Self, 1, Int>, temperature: f64) -> Tensor<Self, 1> {
        let logits = prim(logits);
        let (li, targets): (Tensor<B, 2>, Tensor<B, 1, Int>) = (inner(&logits), Tensor::from_primitive(targets.into_primitive()));
        let out = token_log_probs_forward(li.clone(), targets.clone(), temperature);
        record([&logits], TokenLogProbsGrad { logits: li, targets, temperature }, out)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::model::{Cpu, CpuAutodiff as Ad};

    /// A leaf with uniform values in [-2, 2) that asks for its gradient.
    fn leaf<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Ad, D> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data: Vec<f32> = (0..shape.iter().product()).map(|_| rng.random_range(-2.0..2.0)).collect();
        Tensor::from_data(TensorData::new(data, shape), &Default::default()).require_grad()
    }

    /// The output and `d(Σ out ∘ w) / d leaf` for each leaf, with `w` random so that every output
    /// element gets its own gradient.
    fn value_and_grads<const D: usize, const L: usize>(out: Tensor<Ad, D>, leaves: [&Tensor<Ad, 2>; L]) -> (Tensor<Cpu, D>, [Tensor<Cpu, 2>; L]) {
        let w = leaf(out.dims(), 99).detach();
        let grads = out.clone().mul(w).sum().backward();
        (out.inner(), leaves.map(|l| l.grad(&grads).expect("every leaf gets a gradient")))
    }

    fn assert_close<const D: usize>(what: &str, fused: Tensor<Cpu, D>, reference: Tensor<Cpu, D>) {
        assert_eq!(fused.dims(), reference.dims(), "{what}: shapes differ");
        let to_vec = |t: Tensor<Cpu, D>| t.into_data().to_vec::<f32>().expect("f32 data");
        for (i, (f, r)) in to_vec(fused).into_iter().zip(to_vec(reference)).enumerate() {
            assert!((f - r).abs() <= 1e-5 + 1e-4 * r.abs(), "{what}[{i}]: fused {f}, composition {r}");
        }
    }

    /// Checks a two-input operation on 2-D leaves against its composition: the output and both
    /// gradients.
    fn assert_matches_composition(
        fused: impl Fn(Tensor<Ad, 2>, Tensor<Ad, 2>) -> Tensor<Ad, 2>,
        composition: impl Fn(Tensor<Ad, 2>, Tensor<Ad, 2>) -> Tensor<Ad, 2>,
        a: Tensor<Ad, 2>,
        b: Tensor<Ad, 2>,
    ) {
        let (fv, [fa, fb]) = value_and_grads(fused(a.clone(), b.clone()), [&a, &b]);
        let (rv, [ra, rb]) = value_and_grads(composition(a.clone(), b.clone()), [&a, &b]);
        assert_close("output", fv, rv);
        assert_close("first input's gradient", fa, ra);
        assert_close("second input's gradient", fb, rb);
    }

    #[test]
    fn attention_matches_its_composition_in_value_and_gradients() {
        // (B, H, L, T, D) with a causal mask and, in the second sequence, two padded keys.
        let (b, h, l, d) = (2, 3, 5, 4);
        let flat = |x: Tensor<Ad, 4>| x.reshape([b * h * l, d]);
        let (q, k, v) = (leaf([b * h * l, d], 1), leaf([b * h * l, d], 2), leaf([b * h * l, d], 3));
        let hidden: Vec<bool> =
            (0..b * h * l * l).map(|i| (i % l > (i / l) % l) || (i / (h * l * l) == 1 && i % l >= 3 && (i / l) % l >= 3 && i % l != 3)).collect();
        let mask = Tensor::<Ad, 4, Bool>::from_data(TensorData::new(hidden, [b, h, l, l]), &Default::default());
        let shaped = |x: &Tensor<Ad, 2>| x.clone().reshape([b, h, l, d]);
        let fused = <Ad as ModelBackend>::attention(shaped(&q), shaped(&k), shaped(&v), mask.clone());
        let reference = reference::attention(shaped(&q), shaped(&k), shaped(&v), mask);
        let (fv, fg) = value_and_grads(flat(fused), [&q, &k, &v]);
        let (rv, rg) = value_and_grads(flat(reference), [&q, &k, &v]);
        assert_close("output", fv, rv);
        for ((name, f), r) in ["dq", "dk", "dv"].into_iter().zip(fg).zip(rg) {
            assert_close(name, f, r);
        }
    }

    #[test]
    fn linear_matches_its_composition_in_value_and_gradients() {
        assert_matches_composition(<Ad as ModelBackend>::linear, reference::linear, leaf([5, 7], 12), leaf([3, 7], 13));
    }

    #[test]
    fn rms_norm_matches_its_composition_in_value_and_gradients() {
        let fused = |x, w: Tensor<Ad, 2>| <Ad as ModelBackend>::rms_norm(x, w.reshape([8]), 1e-6);
        let composition = |x, w: Tensor<Ad, 2>| reference::rms_norm(x, w.reshape([8]), 1e-6);
        assert_matches_composition(fused, composition, leaf([6, 8], 4), leaf([1, 8], 5));
    }

    #[test]
    fn rope_matches_its_composition_in_value_and_gradients() {
        let (b, l, h, d) = (2, 3, 2, 6);
        let x = leaf([b * l * h, d], 9);
        let table = |seed| leaf([b, l, h, d], seed).detach();
        let (cos, sin) = (table(10), table(11));
        let shaped = || x.clone().reshape([b, l, h, d]);
        let flat = |y: Tensor<Ad, 4>| y.reshape([b * l * h, d]);
        let (fv, [fx]) = value_and_grads(flat(<Ad as ModelBackend>::rope(shaped(), cos.clone(), sin.clone())), [&x]);
        let (rv, [rx]) = value_and_grads(flat(reference::rope(shaped(), cos, sin)), [&x]);
        assert_close("output", fv, rv);
        assert_close("dx", fx, rx);
    }

    #[test]
    fn swiglu_matches_its_composition_in_value_and_gradients() {
        assert_matches_composition(<Ad as ModelBackend>::swiglu, reference::swiglu, leaf([6, 8], 6), leaf([6, 8], 7));
    }

    #[test]
    fn token_log_probs_match_log_softmax_in_value_and_gradients() {
        let logits = leaf([6, 11], 8).mul_scalar(4.0);
        let logits = logits.detach().require_grad();
        let targets = Tensor::<Ad, 1, Int>::from_data(TensorData::new(vec![0i64, 10, 3, 3, 7, 1], [6]), &Default::default());
        for temperature in [1.0, 0.6] {
            let fused = <Ad as ModelBackend>::token_log_probs(logits.clone(), targets.clone(), temperature);
            let reference = reference::token_log_probs(logits.clone(), targets.clone(), temperature);
            let (fv, [fg]) = value_and_grads(fused, [&logits]);
            let (rv, [rg]) = value_and_grads(reference, [&logits]);
            assert_close("log-probs", fv, rv);
            assert_close("dlogits", fg, rg);
        }
    }
}
