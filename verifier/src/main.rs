//! `rlvr-verifier`: score responses. `check` reads JSONL requests on stdin and writes one verdict per
//! line on stdout, in order, using all cores.

use std::io::{BufReader, BufWriter};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "rlvr-verifier", version, about = "Score model responses: math, truthfulness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// JSONL requests on stdin, JSONL verdicts on stdout (one per line, in input order).
    Check {
        /// Worker threads (default: all cores).
        #[arg(long, env = "RLVR_VERIFIER_THREADS")]
        threads: Option<usize>,
        /// Add `elapsed_us` (scoring time of the line) to every verdict.
        #[arg(long, env = "RLVR_VERIFIER_TIMINGS")]
        timings: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { threads, timings } => {
            if let Some(n) = threads {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .build_global()
                    .context("while starting the worker pool")?;
            }
            let stdin = BufReader::new(std::io::stdin().lock());
            let stdout = BufWriter::new(std::io::stdout().lock());
            let stats = rlvr_verifier::check::run_check_with(stdin, stdout, timings).context("while checking")?;
            eprintln!("rlvr-verifier: {} lines, {} errors", stats.lines, stats.errors);
        }
    }
    Ok(())
}
