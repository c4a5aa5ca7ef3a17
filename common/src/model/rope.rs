//! Rotary position embeddings: inverse frequencies with the config's theta and scaling, and the
//! cos/sin tables for arbitrary per-row positions.
//!
//! Follows transformers' `modeling_rope_utils.py` (default, linear and llama3 rope types) and computes
//! the frequencies in f32 exactly as it does, so that logits agree to float noise.

use super::config::RopeScaling;

/// The inverse frequencies of one head: `head_dim / 2` values.
pub fn inv_freq(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Vec<f32> {
    let base = theta as f32;
    let plain = (0..head_dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32));
    match *scaling {
        RopeScaling::Default => plain.collect(),
        RopeScaling::Linear { factor } => plain.map(|f| f / factor as f32).collect(),
        // Llama 3.1: long wavelengths are divided by `factor`, short ones kept, the band between
        // interpolated smoothly.
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            let (factor, low, high, old) =
                (factor as f32, low_freq_factor as f32, high_freq_factor as f32, original_max_position_embeddings as f32);
            let low_wavelen = old / low;
            let high_wavelen = old / high;
            plain
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// `cos` and `sin` tables of shape `(positions.len(), head_dim)` as HF lays them out: the half-size
/// frequency table repeated twice (the rotate-half convention).
pub fn cos_sin(inv_freq: &[f32], positions: impl Iterator<Item = usize>) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = Vec::new();
    let mut sin = Vec::new();
    for p in positions {
        let start = cos.len();
        for &f in inv_freq {
            // The product in f32, as transformers computes `inv_freq @ position_ids` in float32.
            let angle = (p as f32) * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
        cos.extend_from_within(start..start + half);
        sin.extend_from_within(start..start + half);
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frequencies() {
        let f = inv_freq(8, 10_000.0, &RopeScaling::Default);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 0.1).abs() < 1e-7);
        assert!((f[3] - 1e-3).abs() < 1e-9);
    }

    #[test]
    fn llama3_keeps_high_and_scales_low_frequencies() {
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        };
        let plain = inv_freq(16, 10_000.0, &RopeScaling::Default);
        let scaled = inv_freq(16, 10_000.0, &s);
        assert_eq!(scaled[0], plain[0]);
        assert!((scaled[7] - plain[7] / 8.0).abs() < 1e-9);
        assert!(scaled.iter().zip(&plain).all(|(s, p)| s <= p && *s >= p / 8.0 - 1e-9));
    }

    #[test]
    fn tables_repeat_the_half() {
        let (c, s) = cos_sin(&[1.0, 0.5], [0usize, 3].into_iter());
        assert_eq!(c.len(), 8);
        assert_eq!(&c[0..4], &[1.0, 1.0, 1.0, 1.0]);
        assert_eq!(c[4], 3.0f32.cos());
        assert_eq!(s[5], 1.5f32.sin());
        assert_eq!(s[7], s[5]);
    }
}
