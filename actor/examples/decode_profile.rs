//! Times the phases of batched decoding on a real checkpoint: prefill, the decode forward, the logits'
//! transfer to the host and sampling, per step.
//!
//! `cargo run --release -p rlvr-actor --example decode_profile -- MODEL_DIR [BATCH] [STEPS]`

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rlvr_actor::sampling::{SamplingParams, sample};
use rlvr_common::model::{CausalLm, Cpu};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: decode_profile MODEL_DIR [BATCH] [STEPS]"));
    let batch: usize = args.next().map_or(8, |s| s.parse().expect("BATCH"));
    let steps: usize = args.next().map_or(32, |s| s.parse().expect("STEPS"));
    let model = CausalLm::<Cpu>::load(&dir, &Default::default()).expect("model");
    let prompts: Vec<Vec<u32>> = (0..batch).map(|i| (0..20 + i % 7).map(|t| (100 + 37 * t + i) as u32).collect()).collect();
    let rows: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let params = SamplingParams::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut cache = model.new_cache();
    let t = Instant::now();
    let mut logits = model.prefill(&rows, &mut cache).expect("prefill");
    let prefill = t.elapsed();
    let (mut fwd, mut host, mut samp) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..steps {
        let t = Instant::now();
        let [_, vocab] = logits.dims();
        let flat: Vec<f32> = logits.into_data().convert::<f32>().into_vec().expect("f32");
        host += t.elapsed();
        let t = Instant::now();
        let next: Vec<u32> = flat.chunks(vocab).map(|row| sample(row, &params, &mut rng).0).collect();
        samp += t.elapsed();
        let t = Instant::now();
        logits = model.decode(&next, &mut cache).expect("decode");
        fwd += t.elapsed();
    }
    let total = prefill + fwd + host + samp;
    println!(
        "batch {batch} steps {steps}: prefill {:.3}s, decode forward {:.3}s ({:.1} ms/step), host transfer {:.3}s, sampling {:.3}s; {:.1} tokens/s",
        prefill.as_secs_f64(),
        fwd.as_secs_f64(),
        fwd.as_secs_f64() * 1e3 / steps as f64,
        host.as_secs_f64(),
        samp.as_secs_f64(),
        (batch * steps) as f64 / total.as_secs_f64()
    );
}
