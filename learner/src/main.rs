use clap::Parser;

/// See [`rlvr_learner::memory`] for why.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    rlvr_learner::memory::keep_freed_memory();
    let cli = rlvr_learner::cli::Cli::parse();
    if rlvr_common::process::parse_only(&cli) {
        return Ok(());
    }
    rlvr_learner::cli::run(cli)
}
