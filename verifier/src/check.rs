//! `rlvr-verifier check`: JSONL requests on a reader, one JSONL verdict per line on a writer, in input
//! order, scored in parallel on all cores. A malformed line gets an `error` verdict, never an abort;
//! only I/O failures are errors.
//!
//! Request: `{"kind": "math"|"truth"|"code", "response": "…", "ground_truth": "…" | ["…", …] | {…},
//! "settings": {…}, "shaping": {…}, "response_tokens": n, "id": …}`; `settings` are the
//! [`MathConfig`], [`TruthConfig`] or [`CodeConfig`] fields, `shaping` the [`ShapingConfig`] fields.
//! A code ground truth is an object (or a string holding one), see [`crate::code`]. What a request may
//! not choose is the verifier's [`Policy`]: the judge, and upper bounds of the code limits.

use std::io::{BufRead, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::code::{self, CodeConfig};
use crate::math::{self, MathConfig};
use crate::shaping::{self, ShapingConfig};
use crate::truth::{self, JudgeConfig, TruthConfig};
use crate::verdict::{ErrorKind, Verdict, VerifierError};

/// Longest request line accepted (bytes); longer lines get a `too_large` error verdict.
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// Lines scored per parallel batch (bounds memory on endless input).
const BATCH: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Math,
    Truth,
    Code,
}

/// Ground truth: one answer, a list of accepted answers, or a structured object (code tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroundTruth {
    One(String),
    Many(Vec<String>),
    Structured(serde_json::Map<String, serde_json::Value>),
}

impl GroundTruth {
    pub fn answers(&self) -> Vec<String> {
        match self {
            GroundTruth::One(s) => vec![s.clone()],
            GroundTruth::Many(v) => v.clone(),
            GroundTruth::Structured(m) => vec![serde_json::Value::Object(m.clone()).to_string()],
        }
    }

    /// As one JSON value (strings stay strings).
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            GroundTruth::One(s) => serde_json::Value::String(s.clone()),
            GroundTruth::Many(v) => serde_json::json!(v),
            GroundTruth::Structured(m) => serde_json::Value::Object(m.clone()),
        }
    }
}

/// One scoring request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRequest {
    pub kind: TaskKind,
    pub response: String,
    pub ground_truth: GroundTruth,
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    #[serde(default)]
    pub shaping: Option<ShapingConfig>,
    #[serde(default)]
    pub response_tokens: Option<usize>,
    /// The question, for the truthfulness judge.
    #[serde(default)]
    pub question: Option<String>,
}

fn settings<T: for<'de> Deserialize<'de> + Default>(v: &Option<serde_json::Value>) -> Result<T, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("bad settings: {e}")),
    }
}

/// The verifier's own settings: what a request may not choose. The judge (its URL, model and the
/// environment variable of its API key) is the verifier's alone; a request's code limits may lower
/// these, never raise them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub judge: Option<JudgeConfig>,
    pub code_limits: CodeLimits,
}

/// Upper bounds of a code request's limits (the [`CodeConfig`] fields of the same names).
#[derive(Debug, Clone, PartialEq)]
pub struct CodeLimits {
    pub timeout_ms_per_test: u64,
    pub max_run_ms: u64,
    pub fuel: Option<u64>,
    pub output_bytes: usize,
}

impl Default for CodeLimits {
    /// [`CodeConfig`]'s defaults.
    fn default() -> Self {
        let d = CodeConfig::default();
        Self { timeout_ms_per_test: d.timeout_ms_per_test, max_run_ms: d.max_run_ms, fuel: d.fuel, output_bytes: d.output_bytes }
    }
}

impl Policy {
    /// `cfg` with its limits no higher than the policy's.
    pub fn limit(&self, mut cfg: CodeConfig) -> CodeConfig {
        let cap = &self.code_limits;
        cfg.timeout_ms_per_test = cfg.timeout_ms_per_test.min(cap.timeout_ms_per_test);
        cfg.max_run_ms = cfg.max_run_ms.min(cap.max_run_ms);
        cfg.output_bytes = cfg.output_bytes.min(cap.output_bytes);
        cfg.fuel = match (cfg.fuel, cap.fuel) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (asked, cap) => asked.or(cap),
        };
        cfg
    }
}

/// Score one request under the default [`Policy`] (no judge, the default code limits).
pub fn score(req: &CheckRequest) -> Verdict {
    score_with(req, &Policy::default())
}

/// Score one request under `policy`. Never panics outward: a panic inside becomes an error verdict.
pub fn score_with(req: &CheckRequest, policy: &Policy) -> Verdict {
    let run = || -> Verdict {
        let verdict = match req.kind {
            TaskKind::Math => {
                let cfg: MathConfig = match settings(&req.settings) {
                    Ok(c) => c,
                    Err(e) => return Verdict::error(ErrorKind::BadRequest, e),
                };
                // Any accepted answer counts.
                let mut best: Option<Verdict> = None;
                for gt in req.ground_truth.answers() {
                    let v = math::verify(&req.response, &gt, &cfg);
                    if v.is_correct() {
                        best = Some(v);
                        break;
                    }
                    if best.is_none() {
                        best = Some(v);
                    }
                }
                best.unwrap_or_else(|| Verdict::error(ErrorKind::BadGroundTruth, "empty ground truth"))
            }
            TaskKind::Truth => {
                if req.settings.as_ref().and_then(|s| s.get("judge")).is_some_and(|j| !j.is_null()) {
                    return Verdict::error(
                        ErrorKind::BadRequest,
                        "a request may not choose the judge: it is the verifier's setting (rlvr-verifier check --judge-url)",
                    );
                }
                let mut cfg: TruthConfig = match settings(&req.settings) {
                    Ok(c) => c,
                    Err(e) => return Verdict::error(ErrorKind::BadRequest, e),
                };
                cfg.judge = policy.judge.clone();
                truth::verify_with_judge(&req.response, &req.ground_truth.answers(), &cfg, None, req.question.as_deref())
            }
            TaskKind::Code => {
                let cfg: CodeConfig = match settings(&req.settings) {
                    Ok(c) => c,
                    Err(e) => return Verdict::error(ErrorKind::BadRequest, e),
                };
                code::verify(&req.response, &req.ground_truth.to_value(), &policy.limit(cfg))
            }
        };
        match &req.shaping {
            Some(s) => shaping::shape(verdict, &req.response, req.response_tokens, s),
            None => verdict,
        }
    };
    catch_unwind(AssertUnwindSafe(run))
        .unwrap_or_else(|_| Verdict::error(ErrorKind::BadRequest, "internal error while scoring (a bug; please report)"))
}

/// Score one input line under `policy`, adding `"elapsed_us"` (for benchmarks).
pub fn check_line_timed(line: &str, policy: &Policy) -> serde_json::Value {
    let t = std::time::Instant::now();
    let mut v = check_line_with(line, policy);
    let us = t.elapsed().as_micros() as u64;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("elapsed_us".into(), serde_json::json!(us));
    }
    v
}

/// Score one input line (JSON) into one output object, under the default [`Policy`].
pub fn check_line(line: &str) -> serde_json::Value {
    check_line_with(line, &Policy::default())
}

/// Score one input line (JSON) into one output object, under `policy`.
pub fn check_line_with(line: &str, policy: &Policy) -> serde_json::Value {
    if line.len() > MAX_LINE_BYTES {
        return Verdict::error(ErrorKind::TooLarge, format!("line longer than {MAX_LINE_BYTES} bytes")).to_json();
    }
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Verdict::error(ErrorKind::BadRequest, format!("invalid JSON: {e}")).to_json(),
    };
    let id = value.get("id").cloned();
    let mut out = match serde_json::from_value::<CheckRequest>(value) {
        Ok(req) => score_with(&req, policy).to_json(),
        Err(e) => Verdict::error(ErrorKind::BadRequest, format!("invalid request: {e}")).to_json(),
    };
    if let (Some(id), Some(obj)) = (id, out.as_object_mut()) {
        obj.insert("id".into(), id);
    }
    out
}

/// Counts of a batch run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckStats {
    pub lines: usize,
    pub errors: usize,
}

/// Read JSONL from `input`, write one verdict per line to `output`, in order.
pub fn run_check(input: impl BufRead, output: impl Write) -> Result<CheckStats, VerifierError> {
    run_check_with(input, output, false, &Policy::default())
}

/// As [`run_check`], under `policy`; with `timings`, each output line also carries `elapsed_us`.
pub fn run_check_with(mut input: impl BufRead, mut output: impl Write, timings: bool, policy: &Policy) -> Result<CheckStats, VerifierError> {
    let mut stats = CheckStats::default();
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH {
            match read_line(&mut input, MAX_LINE_BYTES).map_err(VerifierError::Input)? {
                Some(line) => batch.push(line),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        let results: Vec<serde_json::Value> = batch
            .par_iter()
            .map(|line| match line {
                Line::Text(l) if l.trim().is_empty() => None,
                Line::Text(l) if timings => Some(check_line_timed(l, policy)),
                Line::Text(l) => Some(check_line_with(l, policy)),
                Line::NotUtf8(at) => Some(Verdict::error(ErrorKind::BadRequest, format!("the line is not UTF-8 (at byte {at})")).to_json()),
                Line::TooLong(n) => {
                    Some(Verdict::error(ErrorKind::TooLarge, format!("a line of {n} bytes, longer than {MAX_LINE_BYTES}")).to_json())
                }
            })
            .flatten()
            .collect();
        for r in &results {
            stats.lines += 1;
            if r["outcome"] == "error" {
                stats.errors += 1;
            }
            serde_json::to_writer(&mut output, r).map_err(|e| VerifierError::Output(e.into()))?;
            output.write_all(b"\n").map_err(VerifierError::Output)?;
        }
        output.flush().map_err(VerifierError::Output)?;
    }
    Ok(stats)
}

/// One input line as read: its text, or why it cannot be scored.
enum Line {
    Text(String),
    /// Not UTF-8 (valid up to this byte).
    NotUtf8(usize),
    /// Longer than the cap (its length in bytes).
    TooLong(u64),
}

/// Reads the next line (without its `\n` or `\r\n`), keeping at most `cap` bytes of it in memory: the
/// rest of a longer line is read and dropped. `None` at the end of the input.
fn read_line(input: &mut impl BufRead, cap: usize) -> std::io::Result<Option<Line>> {
    let (mut kept, mut len, mut any) = (Vec::new(), 0u64, false);
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        any = true;
        let end = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..end.unwrap_or(buf.len())];
        len += chunk.len() as u64;
        let room = (cap + 1).saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let consumed = end.map_or(buf.len(), |i| i + 1);
        input.consume(consumed);
        if end.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if len > cap as u64 {
        return Ok(Some(Line::TooLong(len)));
    }
    if kept.last() == Some(&b'\r') {
        kept.pop();
    }
    Ok(Some(match String::from_utf8(kept) {
        Ok(text) => Line::Text(text),
        Err(e) => Line::NotUtf8(e.utf8_error().valid_up_to()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_is_not_utf8_or_too_long_gets_an_error_verdict_and_the_rest_are_scored() {
        let mut input = b"{\"kind\":\"math\",\"response\":\"\\\\boxed{4}\",\"ground_truth\":\"4\"}\n".to_vec();
        input.extend_from_slice(b"{\"kind\":\"math\",\"response\":\"\xff\xfe\",\"ground_truth\":\"4\"}\n");
        input.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES + 10));
        input.extend_from_slice(b"\r\n{\"kind\":\"math\",\"response\":\"\\\\boxed{5}\",\"ground_truth\":\"4\"}\r\n");
        let mut out = Vec::new();
        let stats = run_check(&input[..], &mut out).unwrap();
        let verdicts: Vec<serde_json::Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(stats.lines, 4);
        let outcomes: Vec<&str> = verdicts.iter().map(|v| v["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["correct", "error", "error", "incorrect"], "{verdicts:?}");
        assert!(verdicts[1].to_string().contains("not UTF-8"), "{}", verdicts[1]);
        assert!(verdicts[2].to_string().contains("longer than"), "{}", verdicts[2]);
    }

    #[test]
    fn long_lines_are_capped_while_reading() {
        let mut input = vec![b'x'; 1000];
        input.extend_from_slice(b"\nok");
        let mut reader = std::io::BufReader::with_capacity(64, &input[..]);
        assert!(matches!(read_line(&mut reader, 100).unwrap(), Some(Line::TooLong(1000))));
        assert!(matches!(read_line(&mut reader, 100).unwrap(), Some(Line::Text(t)) if t == "ok"));
        assert!(read_line(&mut reader, 100).unwrap().is_none());
    }

    #[test]
    fn a_request_may_not_choose_the_judge() {
        let line = r#"{"kind":"truth","response":"Paris","ground_truth":["Paris"],"settings":{"judge":{"url":"http://198.51.100.7/v1","api_key_env":"HOME"}}}"#;
        let v = check_line(line);
        assert_eq!(v["outcome"], "error", "{v}");
        assert!(v["details"].to_string().contains("may not choose the judge"), "{v}");
        // Without one, the request is scored; the policy's judge is the only judge.
        let v = check_line(r#"{"kind":"truth","response":"Paris","ground_truth":["Paris"],"settings":{"judge":null}}"#);
        assert_eq!(v["outcome"], "correct", "{v}");
    }

    #[test]
    fn a_request_may_only_lower_the_code_limits() {
        let policy = Policy { judge: None, code_limits: CodeLimits { timeout_ms_per_test: 2_000, max_run_ms: 5_000, fuel: Some(1_000), output_bytes: 4096 } };
        let asked = CodeConfig { timeout_ms_per_test: u64::MAX, max_run_ms: 1 << 40, fuel: None, output_bytes: usize::MAX, ..Default::default() };
        let got = policy.limit(asked);
        assert_eq!((got.timeout_ms_per_test, got.max_run_ms, got.fuel, got.output_bytes), (2_000, 5_000, Some(1_000), 4096));
        let lower = CodeConfig { timeout_ms_per_test: 10, max_run_ms: 20, fuel: Some(5), output_bytes: 7, ..Default::default() };
        let got = policy.limit(lower.clone());
        assert_eq!(got, lower);
        // The default policy caps at the defaults.
        let got = Policy::default().limit(CodeConfig { max_run_ms: u64::MAX, ..Default::default() });
        assert_eq!(got.max_run_ms, CodeConfig::default().max_run_ms);
    }

    #[test]
    fn lines_in_order_with_errors_inline() {
        let input = concat!(
            r#"{"kind":"math","response":"\\boxed{4}","ground_truth":"4","id":1}"#,
            "\n",
            "this is not json\n",
            r#"{"kind":"truth","response":"I don't know","ground_truth":["Paris"]}"#,
            "\n",
            r#"{"kind":"math","response":"5"}"#,
            "\n",
            r#"{"kind":"math","response":"x","ground_truth":"4","settings":{"precision":"six"}}"#,
            "\n",
        );
        let mut out = Vec::new();
        let stats = run_check(input.as_bytes(), &mut out).unwrap();
        let lines: Vec<serde_json::Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(stats, CheckStats { lines: 5, errors: 3 });
        assert_eq!(lines[0]["outcome"], "correct");
        assert_eq!(lines[0]["id"], 1);
        assert_eq!(lines[1]["outcome"], "error");
        assert_eq!(lines[2]["outcome"], "abstained");
        assert_eq!(lines[2]["reward"], 0.0);
        assert_eq!(lines[3]["outcome"], "error");
        assert_eq!(lines[4]["outcome"], "error");
    }
}
