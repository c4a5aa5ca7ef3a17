use clap::Parser;

/// mimalloc rather than glibc's malloc: with the forward passes spread over the tokio blocking pool and
/// rayon's threads, glibc keeps a heap arena per thread and holds on to freed activations in each, which
/// grew `rlvr train` by gigabytes per step until it was killed (a single arena kept it flat).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    rlvr_learner::cli::run(rlvr_learner::cli::Cli::parse())
}
