//! Sampling correctness: over many draws with a fixed seed, the empirical distribution of top-k /
//! top-p / min-p sampling matches the truncated, renormalised distribution (Pearson's chi-square test
//! at the 0.1% level), and no truncated token is ever drawn. The expected distribution is computed the
//! simple way (sort everything), independently of the sampler's partial selection.

use rand::SeedableRng;
use rlvr_actor::sampling::{SamplingParams, log_probs, sample};

/// Chi-square critical values at p = 0.001 for 1..=10 degrees of freedom.
const CHI2_999: [f64; 10] = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59];

/// The truncated distribution, naively: sort, top-k, top-p over the renormalised rest, min-p.
fn expected(logits: &[f32], p: &SamplingParams) -> Vec<f64> {
    let probs: Vec<f64> = log_probs(logits, p.temperature).iter().map(|&l| f64::from(l).exp()).collect();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    if p.top_k > 0 {
        order.truncate(p.top_k);
    }
    let total: f64 = order.iter().map(|&i| probs[i]).sum();
    let mut mass = 0.0;
    let mut keep = vec![];
    for &i in &order {
        keep.push(i);
        mass += probs[i] / total;
        if mass >= f64::from(p.top_p) {
            break;
        }
    }
    let max = probs[order[0]];
    keep.retain(|&i| probs[i] >= f64::from(p.min_p) * max);
    let total: f64 = keep.iter().map(|&i| probs[i]).sum();
    let mut out = vec![0.0; logits.len()];
    for i in keep {
        out[i] = probs[i] / total;
    }
    out
}

fn chi_square(logits: &[f32], params: &SamplingParams, draws: usize, seed: u64) {
    let want = expected(logits, params);
    let mut counts = vec![0usize; logits.len()];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let full = log_probs(logits, params.temperature);
    for _ in 0..draws {
        let (tok, lp) = sample(logits, params, &mut rng);
        counts[tok as usize] += 1;
        assert_eq!(lp, full[tok as usize], "the recorded log-prob is the untruncated one");
    }
    let mut stat = 0.0;
    let mut cells = 0;
    for (i, (&c, &p)) in counts.iter().zip(&want).enumerate() {
        if p == 0.0 {
            assert_eq!(c, 0, "{params:?}: token {i} was truncated but drawn {c} times");
            continue;
        }
        let e = p * draws as f64;
        stat += (c as f64 - e).powi(2) / e;
        cells += 1;
    }
    assert!(cells >= 2, "{params:?}: the test needs at least two kept tokens");
    let critical = CHI2_999[cells - 2];
    assert!(stat < critical, "{params:?}: chi-square {stat:.2} with {} degrees of freedom exceeds {critical}", cells - 1);
}

#[test]
fn empirical_distributions_match_the_truncated_ones() {
    let logits = [2.0f32, 1.5, 1.2, 0.9, 0.3, 0.0, -0.5, -1.0, -2.0, -3.0, 1.0];
    let cases = [
        SamplingParams { temperature: 1.0, ..Default::default() },
        SamplingParams { temperature: 0.7, top_k: 4, ..Default::default() },
        SamplingParams { temperature: 1.0, top_p: 0.8, ..Default::default() },
        SamplingParams { temperature: 1.3, top_k: 6, top_p: 0.9, ..Default::default() },
        SamplingParams { temperature: 1.0, min_p: 0.2, ..Default::default() },
    ];
    for (i, params) in cases.iter().enumerate() {
        chi_square(&logits, params, 40_000, 17 + i as u64);
    }
}

#[test]
fn a_skewed_sampler_fails_the_test() {
    // The test has power: sampling at the wrong temperature is caught.
    let logits = [2.0f32, 1.5, 1.2, 0.9, 0.3, 0.0];
    let wrong = SamplingParams { temperature: 0.9, ..Default::default() };
    let want = expected(&logits, &SamplingParams::default());
    let mut counts = [0usize; 6];
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let draws = 40_000;
    for _ in 0..draws {
        counts[sample(&logits, &wrong, &mut rng).0 as usize] += 1;
    }
    let stat: f64 = counts.iter().zip(&want).map(|(&c, &p)| (c as f64 - p * draws as f64).powi(2) / (p * draws as f64)).sum();
    assert!(stat > CHI2_999[4], "chi-square {stat:.2} should reject a temperature of 0.9 for 1.0");
}
