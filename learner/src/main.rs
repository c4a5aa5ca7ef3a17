use clap::Parser;

fn main() -> anyhow::Result<()> {
    rlvr_learner::cli::run(rlvr_learner::cli::Cli::parse())
}
