//! Batch generation over JSONL files: prompts in, one rollout per sample out (the `rlvr generate
//! --input … --output …` command), with a progress bar on stderr.

use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use rlvr_common::model::{CausalLm, ModelBackend};
use rlvr_common::rollout::Rollout;
use rlvr_common::tokenizer::{ChatMessage, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineConfig, Request, RequestParams};

/// One input line.
#[derive(Debug, Deserialize)]
struct PromptLine {
    /// Defaults to the line number.
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    prompt_token_ids: Option<Vec<u32>>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: String,
}

/// One output line: the rollout plus its decoded text.
#[derive(Debug, Serialize)]
struct RolloutLine<'a> {
    #[serde(flatten)]
    rollout: &'a Rollout,
    response_text: String,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct BatchJob {
    /// Every prompt's parameters; prompt `i` samples with seed `params.seed + i`.
    pub params: RequestParams,
    pub max_batch_rows: usize,
    /// Prompts are raw text rather than a user message in the chat template.
    pub raw: bool,
    pub system: Option<String>,
    pub progress: bool,
}

/// What a batch run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchReport {
    pub rollouts: usize,
    pub tokens: usize,
    /// From the first prefill to the last token.
    pub seconds: f64,
    pub peak_cache_bytes: usize,
}

fn prompt_ids(line: &PromptLine, tokenizer: &Tokenizer, job: &BatchJob) -> anyhow::Result<Vec<u32>> {
    if let Some(ids) = &line.prompt_token_ids {
        return Ok(ids.clone());
    }
    let mut messages = vec![];
    if let Some(system) = &job.system {
        messages.push(ChatMessage::new("system", system));
    }
    match (&line.prompt, &line.messages) {
        (Some(text), _) if job.raw => return Ok(tokenizer.encode(text, true)?),
        (Some(text), None) => messages.push(ChatMessage::new("user", text)),
        (None, Some(list)) => messages.extend(list.iter().map(|m| ChatMessage::new(&m.role, &m.content))),
        _ => bail!("a line needs one of `prompt`, `messages` or `prompt_token_ids`"),
    }
    Ok(tokenizer.encode_chat(&messages, true)?)
}

/// Reads the prompts, generates `job.params.n` samples for each with continuous batching, and writes
/// one JSON rollout per line (in prompt order, then sample order).
pub fn run_jsonl<B: ModelBackend>(
    model: CausalLm<B>,
    tokenizer: Tokenizer,
    input: &Path,
    output: &Path,
    job: &BatchJob,
) -> anyhow::Result<BatchReport> {
    let file = std::fs::File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let mut requests = vec![];
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("while reading {}", input.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: PromptLine = serde_json::from_str(&line).with_context(|| format!("line {}", i + 1))?;
        let id = match &parsed.id {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => i.to_string(),
        };
        let prompt = prompt_ids(&parsed, &tokenizer, job).with_context(|| format!("line {}", i + 1))?;
        let params = RequestParams { seed: job.params.seed.wrapping_add(requests.len() as u64), ..job.params.clone() };
        requests.push(Request { id, prompt, params });
    }
    let tokenizer = Arc::new(tokenizer);
    let detok = tokenizer.clone();
    let config = EngineConfig { max_batch_rows: job.max_batch_rows, ..Default::default() };
    let mut engine = Engine::new(model, 0, config)
        .with_detokenizer(Arc::new(move |ids: &[u32]| detok.decode(ids, false).unwrap_or_default()));
    let prompts: std::collections::HashMap<String, (usize, Vec<u32>)> =
        requests.iter().enumerate().map(|(i, r)| (r.id.clone(), (i, r.prompt.clone()))).collect();
    if prompts.len() != requests.len() {
        bail!("prompt ids must be unique");
    }
    let total = requests.len() * job.params.n;
    for r in requests {
        engine.add(r)?;
    }
    let mut bar = Progress::new(total, job.progress);
    let start = Instant::now();
    let mut report = BatchReport::default();
    let mut done = vec![];
    while !engine.is_idle() {
        let finished = engine.step()?;
        report.peak_cache_bytes = report.peak_cache_bytes.max(engine.cache_bytes());
        report.tokens += finished.iter().map(|c| c.tokens.len()).sum::<usize>();
        done.extend(finished);
        bar.update(done.len(), report.tokens, start);
    }
    report.seconds = start.elapsed().as_secs_f64();
    bar.finish();
    done.sort_by_key(|c| (prompts[&c.request_id].0, c.sample_index));
    let out = std::fs::File::create(output).with_context(|| format!("cannot create {}", output.display()))?;
    let mut out = BufWriter::new(out);
    for c in done {
        let (prompt_id, prompt) = (c.request_id.clone(), prompts[&c.request_id].1.clone());
        let rollout = c.into_rollout(prompt_id, prompt, job.params.sampling.temperature);
        let response_text = tokenizer.decode(&rollout.response_token_ids, true)?;
        serde_json::to_writer(&mut out, &RolloutLine { rollout: &rollout, response_text })?;
        out.write_all(b"\n")?;
        report.rollouts += 1;
    }
    out.flush()?;
    Ok(report)
}

/// A one-line progress bar on stderr, redrawn at most ten times a second.
struct Progress {
    total: usize,
    enabled: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new(total: usize, enabled: bool) -> Self {
        Self { total, enabled: enabled && std::io::stderr().is_terminal(), last: None }
    }

    fn update(&mut self, done: usize, tokens: usize, start: Instant) {
        if !self.enabled || self.last.is_some_and(|t| t.elapsed().as_millis() < 100) && done < self.total {
            return;
        }
        self.last = Some(Instant::now());
        let width = 30;
        let filled = (done * width).checked_div(self.total).unwrap_or(width);
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r[{}{}] {done}/{} samples, {tokens} tokens, {:.1} tokens/s ",
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.total,
            tokens as f64 / secs
        );
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}
