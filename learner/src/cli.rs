//! The `rlvr` command line: argument types and the commands behind them. Every flag also reads an
//! `RLVR_…` environment variable, which is how Kubernetes passes settings.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use rlvr_actor::batch::{BatchJob, run_jsonl};
use rlvr_actor::engine::RequestParams;
use rlvr_actor::generate::{GenerateParams, generate};
use rlvr_actor::sampling::SamplingParams;
use rlvr_common::model::{CausalLm, Cpu, ModelConfig};
use rlvr_common::tokenizer::{ChatMessage, Tokenizer};
use tokio_util::sync::CancellationToken;

use crate::config::{Mode, ModelSize, RunConfig};
use crate::data::ProblemStream;
use crate::eval::{EvalParams, evaluate};
use crate::reward::{Prompter, Scorer};
use crate::run::{TrainOptions, train};
use rlvr_actor::engine::{Engine, EngineConfig};

#[derive(Debug, Parser)]
#[command(name = "rlvr", version, about = "Reinforcement-learning post-training for reasoning language models")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// `text` (human-readable) or `json` (one object per line, for log collectors).
    #[arg(long, global = true, env = "RLVR_LOG_FORMAT", default_value = "text")]
    pub log_format: rlvr_common::process::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run RL post-training in one process (actor, verifier and learner). Without a config file, the
    /// built-in default: GRPO on generated arithmetic with SmolLM2-135M-Instruct.
    Train(TrainArgs),
    /// The learner of a distributed run: the training loop over Redis Streams, serving weights to the
    /// actors. Resumes from the newest checkpoint in the run directory if there is one.
    Learner(LearnerArgs),
    /// An actor of a distributed run: samples rollout groups with the learner's weights (needs only the
    /// Redis URL and the run's name).
    Actor(ActorArgs),
    /// Run the distributed topology on this machine: a redis-server (from PATH, data in the run
    /// directory), the learner, actors and verifiers as child processes, each with its log file.
    Up(UpArgs),
    /// Steer a distributed run: pause, resume, drain, stop, checkpoint, or print its status.
    Ctl(CtlArgs),
    /// Validate a run config and print what one step does (prompts, samples, tokens, micro-batches,
    /// optimiser steps, staleness bound, memory), then exit.
    Plan(PlanArgs),
    /// pass@1 and pass@k of a model on a run's held-out prompts, over several seeds.
    Eval(EvalArgs),
    /// Continue one or more prompts with a model (greedy by default).
    Generate(GenerateArgs),
    /// Model conversion tools.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// GET a health endpoint (`http://127.0.0.1:8080/readyz`) and exit 0 on a 2xx answer: the
    /// container images' healthcheck, as they hold no curl.
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// `http://host:port/path`.
    pub url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5.0)]
    pub timeout_s: f64,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Convert a llama-architecture GGUF file into an HF directory (safetensors, config.json, tokenizer).
    ImportGguf(ImportGgufArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The run config (TOML); fields it does not set take their defaults.
    #[arg(env = "RLVR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Continue from a checkpoint directory (`RUN_DIR/checkpoints/step-N`).
    #[arg(long, env = "RLVR_RESUME")]
    pub resume: Option<PathBuf>,
    /// Overrides `runtime.run_dir`.
    #[arg(long, env = "RLVR_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
    /// Overrides `runtime.steps`.
    #[arg(long, env = "RLVR_STEPS")]
    pub steps: Option<usize>,
    /// Overrides `runtime.seed`.
    #[arg(long, env = "RLVR_SEED")]
    pub seed: Option<u64>,
    /// Overrides `runtime.mode` (`sync` or `async`).
    #[arg(long, env = "RLVR_MODE")]
    pub mode: Option<String>,
    /// No per-step metrics lines (they still go to metrics.jsonl).
    #[arg(long, env = "RLVR_QUIET")]
    pub quiet: bool,
    /// Replace the run already in the run directory (its records and checkpoints are deleted);
    /// without it a run directory holding another run is refused.
    #[arg(long, env = "RLVR_OVERWRITE", conflicts_with = "resume")]
    pub overwrite: bool,
    /// Serve the operator dashboard with `/metrics`, `/healthz` and `/readyz` here (e.g.
    /// `127.0.0.1:8080`; `rlvr up` serves it there by default). Its run controls need the bearer token
    /// in `RLVR_DASHBOARD_TOKEN`; without one it is read-only.
    #[arg(long, env = "RLVR_DASHBOARD")]
    pub dashboard: Option<String>,
}

#[derive(Debug, Args)]
pub struct LearnerArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    #[arg(long, env = "RLVR_REDIS_URL")]
    pub redis: String,
    /// Overrides `distributed.run`, the run's name in Redis.
    #[arg(long, env = "RLVR_RUN")]
    pub run: Option<String>,
    /// Overrides `distributed.weights_bind` (where the weight server listens).
    #[arg(long, env = "RLVR_WEIGHTS_BIND")]
    pub weights_bind: Option<String>,
    /// Overrides `distributed.weights_host` (the host name actors reach the weight server by).
    #[arg(long, env = "RLVR_WEIGHTS_HOST")]
    pub weights_host: Option<String>,
    /// Start from step 0 even if the run directory holds checkpoints (the run there is replaced: its
    /// records and checkpoints are deleted).
    #[arg(long, env = "RLVR_FRESH", conflicts_with = "resume")]
    pub fresh: bool,
}

#[derive(Debug, Args)]
pub struct ActorArgs {
    #[arg(long, env = "RLVR_REDIS_URL")]
    pub redis: String,
    /// The run's name (the learner's `distributed.run`).
    #[arg(long, env = "RLVR_RUN", default_value = "default")]
    pub run: String,
    /// This actor's id among the run's members (default `actor-{host}-{pid}`).
    #[arg(long, env = "RLVR_ID")]
    pub id: Option<String>,
    /// On SIGTERM hand the tasks in hand back at once instead of finishing them.
    #[arg(long, env = "RLVR_ABORT_ON_SHUTDOWN")]
    pub abort_on_shutdown: bool,
    /// Serve `/metrics`, `/healthz` and `/readyz` here (e.g. `0.0.0.0:9090`).
    #[arg(long, env = "RLVR_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// Actor processes.
    #[arg(long, env = "RLVR_ACTORS", default_value_t = 2)]
    pub actors: usize,
    /// Verifier processes.
    #[arg(long, env = "RLVR_VERIFIERS", default_value_t = 2)]
    pub verifiers: usize,
    /// Use this Redis instead of starting a redis-server.
    #[arg(long, env = "RLVR_REDIS_URL")]
    pub redis: Option<String>,
    /// Overrides `distributed.run`.
    #[arg(long, env = "RLVR_RUN")]
    pub run: Option<String>,
    /// Start from step 0 even if the run directory holds checkpoints.
    #[arg(long, env = "RLVR_FRESH", conflicts_with = "resume")]
    pub fresh: bool,
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// `pause`, `resume`, `drain` (finish the step, checkpoint, stop), `stop`, `checkpoint` or `status`.
    pub command: String,
    #[arg(long, env = "RLVR_REDIS_URL")]
    pub redis: String,
    #[arg(long, env = "RLVR_RUN", default_value = "default")]
    pub run: String,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The run config (TOML); the default run without one.
    #[arg(env = "RLVR_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model (an HF directory or a checkpoint).
    #[arg(long, env = "RLVR_MODEL")]
    pub model: PathBuf,
    /// The run config whose held-out prompts, instruction and reward to use (the default run without one).
    #[arg(long, env = "RLVR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Sampling seeds (the spread over them is reported).
    #[arg(long, env = "RLVR_SEEDS", value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// Samples per prompt (pass@k up to this).
    #[arg(long, env = "RLVR_SAMPLES")]
    pub samples: Option<usize>,
    #[arg(long, env = "RLVR_TEMPERATURE")]
    pub temperature: Option<f32>,
    /// Write the report as JSON here.
    #[arg(long, env = "RLVR_OUTPUT")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportGgufArgs {
    /// The GGUF file.
    #[arg(long, env = "RLVR_GGUF")]
    pub gguf: PathBuf,
    /// The directory to write.
    #[arg(long, env = "RLVR_OUT")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// An HF model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, env = "RLVR_MODEL")]
    pub model: PathBuf,
    /// A prompt; repeat the flag to generate for several prompts as one batch.
    #[arg(long, required_unless_present = "input")]
    pub prompt: Vec<String>,
    /// Batch mode: a JSONL file of prompts, one `{"id": …, "prompt": "…"}` (or `"messages": [{"role":
    /// …, "content": …}]`, or `"prompt_token_ids": […]`) per line.
    #[arg(long, env = "RLVR_INPUT", requires = "output", conflicts_with = "prompt")]
    pub input: Option<PathBuf>,
    /// Batch mode: the JSONL file of rollouts to write, one per sample.
    #[arg(long, env = "RLVR_OUTPUT", requires = "input")]
    pub output: Option<PathBuf>,
    /// Samples per prompt (a group sharing one prefill).
    #[arg(long, env = "RLVR_N", default_value_t = 1)]
    pub n: usize,
    /// Samples decoded together; finished ones are replaced by waiting ones.
    #[arg(long, env = "RLVR_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
    /// A stop string; repeat the flag for several.
    #[arg(long, env = "RLVR_STOP")]
    pub stop: Vec<String>,
    /// Hide the progress bar.
    #[arg(long, env = "RLVR_QUIET")]
    pub quiet: bool,
    /// Feed the prompt as raw text instead of a user message in the model's chat template.
    #[arg(long, env = "RLVR_RAW")]
    pub raw: bool,
    /// A system message to put before the prompt (chat template only).
    #[arg(long, env = "RLVR_SYSTEM")]
    pub system: Option<String>,
    #[arg(long, env = "RLVR_MAX_NEW_TOKENS", default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Do not stop at the end-of-sequence token: every sample runs to --max-new-tokens (or a --stop
    /// string), as vLLM's `ignore_eos`; for benchmarks with a fixed amount of work.
    #[arg(long, env = "RLVR_IGNORE_EOS")]
    pub ignore_eos: bool,
    /// 0 is greedy decoding.
    #[arg(long, env = "RLVR_TEMPERATURE", default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, env = "RLVR_TOP_P", default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 keeps every token.
    #[arg(long, env = "RLVR_TOP_K", default_value_t = 0)]
    pub top_k: usize,
    /// 0 keeps every token.
    #[arg(long, env = "RLVR_MIN_P", default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, env = "RLVR_SEED", default_value_t = 0)]
    pub seed: u64,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    rlvr_common::process::init_logging(cli.log_format);
    match cli.command {
        Command::Train(args) => run_train(args),
        Command::Learner(args) => run_learner(args),
        Command::Actor(args) => run_actor_process(args),
        Command::Up(args) => run_up(args),
        Command::Ctl(args) => {
            let runtime = tokio::runtime::Runtime::new()?;
            println!("{}", runtime.block_on(crate::distributed::ctl(&args.command, &args.redis, &args.run))?);
            Ok(())
        }
        Command::Plan(args) => run_plan(args),
        Command::Eval(args) => run_eval(args),
        Command::Generate(args) => run_generate(args),
        Command::Model { command: ModelCommand::ImportGguf(args) } => run_import(args),
        Command::Probe(args) => Ok(rlvr_common::process::probe(&args.url, std::time::Duration::from_secs_f64(args.timeout_s))?),
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<RunConfig> {
    match path {
        Some(p) => RunConfig::from_file(p),
        None => Ok(RunConfig::default()),
    }
}

/// The run config with the command line's overrides.
fn train_config(args: &TrainArgs) -> anyhow::Result<RunConfig> {
    let mut config = load_config(args.config.as_ref())?;
    if let Some(d) = &args.run_dir {
        config.runtime.run_dir = d.clone();
    }
    if let Some(s) = args.steps {
        config.runtime.steps = s;
    }
    if let Some(s) = args.seed {
        config.runtime.seed = s;
    }
    if let Some(m) = &args.mode {
        config.runtime.mode = match m.as_str() {
            "sync" => Mode::Sync,
            "async" => Mode::Async,
            other => bail!("--mode {other:?}: use `sync` or `async`"),
        };
    }
    Ok(config)
}

fn report(summary: &crate::run::RunSummary) {
    eprintln!(
        "trained {} steps in {:.0}s ({:.2} samples/s); checkpoint {}",
        summary.steps,
        summary.seconds,
        summary.samples_per_s,
        summary.final_checkpoint.display()
    );
    if let (Some(b), Some(a)) = (&summary.eval_before, &summary.eval_after) {
        eprintln!("held-out pass@1: {:.3} -> {:.3}", b.pass_at_1_mean, a.pass_at_1_mean);
    }
}

fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let config = train_config(&args)?;
    config.validate()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        rlvr_common::process::stop_on_signals(shutdown.clone(), "training");
        let options = TrainOptions { resume: args.resume, overwrite: args.overwrite, verbose: !args.quiet, dashboard: args.dashboard, dashboard_token: dashboard_token() };
        train(config.clone(), options, shutdown).await
    })?;
    report(&summary);
    Ok(())
}

fn run_learner(args: LearnerArgs) -> anyhow::Result<()> {
    let mut config = train_config(&args.train)?;
    if let Some(r) = args.run {
        config.distributed.run = r;
    }
    if let Some(b) = args.weights_bind {
        config.distributed.weights_bind = b;
    }
    if let Some(h) = args.weights_host {
        config.distributed.weights_host = Some(h);
    }
    config.validate()?;
    // A learner is a service its supervisor restarts: it continues from its newest checkpoint.
    let resume = match (args.train.resume, args.fresh || args.train.overwrite) {
        (Some(r), _) => Some(r),
        (None, true) => None,
        (None, false) => crate::distributed::latest_checkpoint(&config.runtime.run_dir),
    };
    if let Some(r) = &resume {
        let state: Option<crate::run::TrainerState> = std::fs::read_to_string(r.join("trainer_state.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
        if let Some(s) = state.filter(|s| s.step >= config.runtime.steps) {
            bail!(
                "the run in {} is complete ({} of {} steps): start another with --fresh (or another --run-dir), or raise runtime.steps to train further",
                config.runtime.run_dir.display(),
                s.step,
                config.runtime.steps
            );
        }
        eprintln!("resuming from {}", r.display());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let steps = config.runtime.steps;
    let shutdown = CancellationToken::new();
    let signalled = shutdown.clone();
    let summary = runtime.block_on(async {
        rlvr_common::process::stop_on_signals(shutdown.clone(), "the learner");
        let options = TrainOptions {
            resume,
            overwrite: args.fresh || args.train.overwrite,
            verbose: !args.train.quiet,
            dashboard: args.train.dashboard,
            dashboard_token: dashboard_token(),
        };
        crate::distributed::run_learner(config, options, &args.redis, shutdown).await
    })?;
    report(&summary);
    // Stopped by its supervisor (a pod evicted, `docker stop`) before the last step: the run is not
    // done, and a Job or restart policy must run the learner again to resume it. `rlvr ctl stop` is an
    // operator's choice and ends it with 0.
    if signalled.is_cancelled() && summary.steps < steps {
        eprintln!(
            "stopped by a signal at step {} of {steps}: exit status {INTERRUPTED_EXIT}, so that a supervisor runs the learner again to resume",
            summary.steps
        );
        std::process::exit(INTERRUPTED_EXIT);
    }
    Ok(())
}

/// `rlvr learner`'s exit status when a signal stopped it before its last step (after it checkpointed):
/// sysexits' EX_TEMPFAIL, "try again later".
pub const INTERRUPTED_EXIT: i32 = 75;

/// Where `rlvr up` serves the dashboard unless told otherwise.
const DEFAULT_DASHBOARD: &str = "127.0.0.1:8080";

fn run_up(args: UpArgs) -> anyhow::Result<()> {
    let mut config = train_config(&args.train)?;
    if let Some(r) = args.run {
        config.distributed.run = r;
    }
    // Everything runs on this machine.
    config.distributed.weights_host.get_or_insert_with(|| "127.0.0.1".into());
    config.validate()?;
    let mut learner_args = vec![];
    if let Some(r) = &args.train.resume {
        learner_args.extend(["--resume".to_string(), r.display().to_string()]);
    }
    if args.fresh || args.train.overwrite {
        learner_args.push("--fresh".into());
    }
    if args.train.quiet {
        learner_args.push("--quiet".into());
    }
    // The dashboard is on by default here (`--dashboard off` turns it off).
    match args.train.dashboard.as_deref() {
        Some("off") => {}
        addr => learner_args.extend(["--dashboard".to_string(), addr.unwrap_or(DEFAULT_DASHBOARD).to_string()]),
    }
    let options = crate::distributed::UpOptions { config, actors: args.actors.max(1), verifiers: args.verifiers.max(1), redis: args.redis, learner_args };
    let runtime = tokio::runtime::Runtime::new()?;
    let status = runtime.block_on(crate::distributed::up(options))?;
    if status.code() == Some(INTERRUPTED_EXIT) {
        eprintln!("the run stopped before its last step, checkpointed: `rlvr up` again resumes it");
        return Ok(());
    }
    if !status.success() {
        bail!("the learner exited with {status}");
    }
    Ok(())
}

/// The dashboard's bearer token, from the environment only (a flag would show in `ps`).
fn dashboard_token() -> Option<String> {
    std::env::var("RLVR_DASHBOARD_TOKEN").ok().filter(|t| !t.is_empty())
}

fn run_actor_process(args: ActorArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        rlvr_common::process::stop_on_signals(shutdown.clone(), "the actor");
        let config = rlvr_actor::service::ActorProcessConfig {
            redis: rlvr_common::transport::redis::RedisConfig::new(args.redis, args.run),
            actor_id: args.id.unwrap_or_else(|| rlvr_common::transport::member::member_id("actor")),
            abort_on_shutdown: args.abort_on_shutdown,
            metrics_addr: args.metrics_addr,
        };
        rlvr_actor::service::run(config, shutdown).await
    })?;
    eprintln!("actor: sampled {} groups ({} rollouts)", report.groups, report.rollouts);
    Ok(())
}

fn run_plan(args: PlanArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_ref())?;
    let dir = &config.model.path;
    let model_config = ModelConfig::from_file(&dir.join("config.json"));
    // What cannot be measured (no tokenizer, no weights) is reported as unknown, never guessed.
    let prompt_tokens = match Tokenizer::from_dir(dir) {
        Ok(tok) => {
            let eos = model_config.as_ref().map(|c| c.eos_token_ids.clone()).unwrap_or_default();
            let prompter = Prompter::new(tok, &config, &eos);
            let (_, probe) = ProblemStream::open(&config.data.source, config.runtime.seed, 8)?;
            let lens = probe.iter().map(|p| prompter.prompt_ids(p).map(|ids| ids.len())).collect::<Result<Vec<_>, _>>()?;
            Ok(lens.into_iter().max().unwrap_or(0))
        }
        Err(e) => Err(format!("no tokenizer in {} ({e}); run scripts/setup-model.sh", dir.display())),
    };
    let model = match (model_config, rlvr_common::checkpoint::read_weights(dir)) {
        (Ok(c), Ok(w)) => Ok(ModelSize::of(&c, w.values().map(|t| t.data.len()).sum())),
        (Err(e), _) => Err(format!("no model config in {} ({e:#})", dir.display())),
        (_, Err(e)) => Err(format!("no weights in {} ({e:#})", dir.display())),
    };
    println!("config valid: {}", args.config.as_ref().map_or("built-in default".to_string(), |p| p.display().to_string()));
    for (k, v) in config.plan(prompt_tokens, model.as_ref().map_err(Clone::clone)) {
        println!("  {k:<36} {v}");
    }
    Ok(())
}

fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_ref())?;
    let device = Default::default();
    let model = CausalLm::<Cpu>::load(&args.model, &device).with_context(|| format!("loading {}", args.model.display()))?;
    let tokenizer = Tokenizer::from_dir(&args.model).with_context(|| format!("loading the tokenizer of {}", args.model.display()))?;
    let prompter = Prompter::new(tokenizer.clone(), &config, &model.config.eos_token_ids);
    let scorer = Scorer::new(tokenizer, &config);
    let (_, held_out) = ProblemStream::open(&config.data.source, config.runtime.seed, config.data.eval_prompts)?;
    let params = EvalParams {
        samples: args.samples.unwrap_or(config.runtime.eval_samples),
        temperature: args.temperature.unwrap_or(config.runtime.eval_temperature),
        top_p: 1.0,
        max_new_tokens: config.rollout.max_new_tokens,
        seeds: args.seeds,
    };
    let mut engine = Engine::new(model, 0, EngineConfig { max_batch_rows: config.rollout.max_batch, ..Default::default() });
    let report = evaluate(&mut engine, &held_out, &prompter, &scorer, &params)?;
    println!("{}", report.summary());
    if let Some(out) = args.output {
        std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

fn run_import(args: ImportGgufArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let report = rlvr_common::gguf::import_gguf(&args.gguf, &args.out)
        .with_context(|| format!("while importing {}", args.gguf.display()))?;
    eprintln!(
        "imported {} ({} tensors, {} parameters, source types {:?}) into {} in {:.1}s",
        report.architecture,
        report.n_tensors,
        report.n_parameters,
        report.source_types,
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_generate(args: GenerateArgs) -> anyhow::Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature is {}; use 0 for greedy or a positive number", args.temperature);
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p is {}; it must be in (0, 1]", args.top_p);
    }
    let device = Default::default();
    let start = Instant::now();
    let model = CausalLm::<Cpu>::load(&args.model, &device)
        .with_context(|| format!("while loading the model from {}", args.model.display()))?;
    let tokenizer = Tokenizer::from_dir(&args.model)
        .with_context(|| format!("while loading the tokenizer from {}", args.model.display()))?;
    eprintln!("loaded {} in {:.1}s", args.model.display(), start.elapsed().as_secs_f64());
    let stop_token_ids = if args.ignore_eos {
        vec![]
    } else {
        let mut ids = model.config.eos_token_ids.clone();
        ids.extend(tokenizer.eos_token_id());
        ids
    };
    if let (Some(input), Some(output)) = (&args.input, &args.output) {
        let job = BatchJob {
            params: RequestParams {
                sampling: SamplingParams { temperature: args.temperature, top_p: args.top_p, top_k: args.top_k, min_p: args.min_p },
                max_new_tokens: args.max_new_tokens,
                stop_token_ids,
                stop_strings: args.stop.clone(),
                seed: args.seed,
                n: args.n,
            },
            max_batch_rows: args.max_batch,
            raw: args.raw,
            system: args.system.clone(),
            progress: !args.quiet,
        };
        let report = run_jsonl(model, tokenizer, input, output, &job)
            .with_context(|| format!("while generating for {}", input.display()))?;
        eprintln!(
            "{} rollouts, {} tokens in {:.2}s ({:.1} tokens/s), peak KV cache {:.0} MiB",
            report.rollouts,
            report.tokens,
            report.seconds,
            report.tokens as f64 / report.seconds,
            report.peak_cache_bytes as f64 / (1 << 20) as f64
        );
        return Ok(());
    }

    let mut prompts = Vec::with_capacity(args.prompt.len());
    for text in &args.prompt {
        let ids = if args.raw {
            tokenizer.encode(text, true)?
        } else {
            let mut messages = vec![];
            if let Some(system) = &args.system {
                messages.push(ChatMessage::new("system", system));
            }
            messages.push(ChatMessage::new("user", text));
            tokenizer.encode_chat(&messages, true).context("while applying the chat template (use --raw to skip it)")?
        };
        prompts.push(ids);
    }
    let params = GenerateParams {
        sampling: SamplingParams { temperature: args.temperature, top_p: args.top_p, top_k: args.top_k, min_p: args.min_p },
        max_new_tokens: args.max_new_tokens,
        stop_token_ids,
        seed: args.seed,
    };
    let rows: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let start = Instant::now();
    let outputs = generate(&model, &rows, &params)?;
    let secs = start.elapsed().as_secs_f64();
    let tokens: usize = outputs.iter().map(|g| g.tokens.len()).sum();
    for (prompt, g) in args.prompt.iter().zip(&outputs) {
        let text = tokenizer.decode(&g.tokens, true)?;
        if args.prompt.len() > 1 {
            println!("### {prompt}");
        }
        println!("{}", text.trim_end());
    }
    eprintln!("{tokens} tokens in {secs:.2}s ({:.1} tokens/s)", tokens as f64 / secs);
    Ok(())
}
