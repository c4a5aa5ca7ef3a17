//! The in-sandbox harnesses and the host side of their protocol.
//!
//! Nothing that decides a verdict is reachable from the program under test. The program runs as
//! arbitrary Python, free to walk the interpreter's frames, closures and heap (`sys._getframe`, `gc`),
//! set trace and audit hooks and patch any builtin or module, so whatever shares its interpreter is
//! the program's to rewrite. Hence:
//! - Stdio and call modes run one instance, `harness.py`, which reports what the program printed or
//!   returned (as JSON); the host compares it with the expected output, which never enters the
//!   sandbox. A program that rewrites the reports must still report the right answers.
//! - Check (HumanEval) and assert (MBPP) modes run the tests' own code, so they run two instances
//!   ([`Sandbox::run_pair`]): `judge.py` runs the tests, with the dataset's prompt or setup code, in an
//!   instance of its own; `serve.py` loads the program in another and answers calls. The names the
//!   tests take from the program are proxies in the judge: a call sends its arguments as a literal
//!   and gets back a literal, which the judge builds as plain data from the compiler's syntax tree
//!   (no code runs, no object of the program's crosses). The judge writes the records, on a stream
//!   the program cannot reach.
//!
//! Records, after each test: `\x1e<nonce> <fields>\n` (the nonce keeps a program's own output from
//! being read as one), then a final `done`. A test passes only if its record is there and says so: a
//! program that exits (`sys.exit`, `os._exit`), crashes the interpreter or swallows exceptions leaves
//! records missing.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::sandbox::{RunLimits, RunStatus, Sandbox, from_hex, hex};

/// A guest script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    /// Stdio and call modes, one instance; the spec on stdin.
    Harness,
    /// The tests' side of a pair run; the spec in the last argument.
    Judge,
    /// The program's side of a pair run; the spec in the last argument.
    Serve,
}

impl Script {
    fn source(self) -> &'static str {
        match self {
            Script::Harness => include_str!("harness.py"),
            Script::Judge => include_str!("judge.py"),
            Script::Serve => include_str!("serve.py"),
        }
    }
}

/// Loads a script from marshalled bytecode (hex, the last argument): compiling its source costs
/// ~6 ms in every run, unmarshalling ~0.1 ms.
const BOOT: &str = "import marshal, sys\nexec(marshal.loads(bytes.fromhex(sys.argv.pop())))\n";

/// Marshals the source on stdin with this runtime's own compiler.
const MARSHAL: &str =
    "import marshal, sys\nsys.stdout.write(marshal.dumps(compile(sys.stdin.read(), 'harness', 'exec')).hex())\n";

/// The interpreter arguments that run `script` in `sandbox` with `spec` (if any) as its last
/// argument: from bytecode marshalled once per runtime (cached for the process), or from source if
/// marshalling failed.
pub(crate) fn guest_args(sandbox: &Sandbox, script: Script, spec: Option<String>) -> Vec<String> {
    type Cache = Vec<((String, &'static str), Option<Arc<str>>)>;
    static MARSHALLED: Mutex<Cache> = Mutex::new(Vec::new());
    let source = script.source();
    let key = (sandbox.runtime_sha256().to_string(), source);
    let hex = {
        let mut cache = MARSHALLED.lock().unwrap_or_else(|e| e.into_inner());
        match cache.iter().find(|(k, _)| *k == key) {
            Some((_, hex)) => hex.clone(),
            None => {
                let limits = RunLimits { wall_time: Duration::from_secs(60), ..RunLimits::default() };
                let hex = sandbox
                    .run(&[sandbox.interpreter_args(), &["-c", MARSHAL]].concat(), source.as_bytes().to_vec(), &limits)
                    .ok()
                    .filter(|o| o.status == RunStatus::Exited(0) && !o.stdout.is_empty())
                    .and_then(|o| String::from_utf8(o.stdout).ok())
                    .map(Arc::<str>::from);
                if hex.is_none() {
                    tracing::warn!(?script, "could not marshal a harness script; compiling it in every run");
                }
                cache.push((key, hex.clone()));
                hex
            }
        }
    };
    let mut args: Vec<String> = sandbox.interpreter_args().iter().map(|s| s.to_string()).collect();
    args.push("-c".into());
    match hex {
        Some(hex) => {
            args.push(BOOT.into());
            args.extend(spec);
            args.push(hex.to_string());
        }
        None => {
            args.push(source.into());
            args.extend(spec);
        }
    }
    args
}

/// How tests call the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Run the program as `__main__` with the test's stdin; compare stdout.
    Stdio,
    /// Call `fn_name(*args)` (or `Solution().fn_name`); the host compares the returned value (as JSON).
    Call,
    /// HumanEval: exec the test source, then `check(<entry_point>)` (in the judge of a pair run).
    Check,
    /// MBPP: exec one assert statement (in the judge of a pair run).
    Assert,
}

/// The spec one `harness.py` run gets.
#[derive(Debug, Serialize)]
pub(crate) struct Spec<'a> {
    pub nonce: String,
    pub code: &'a str,
    pub mode: Mode,
    pub tests: &'a [serde_json::Value],
    pub stop_on_failure: bool,
    pub output_bytes: usize,
}

/// The spec of the judge in a pair run.
#[derive(Debug, Serialize)]
pub(crate) struct JudgeSpec<'a> {
    pub nonce: String,
    pub mode: Mode,
    pub tests: &'a [serde_json::Value],
    pub stop_on_failure: bool,
    /// Sources run in the judge before the tests (HumanEval's prompt, MBPP's setup code), so that
    /// the helpers the tests call are the dataset's, not the program's.
    pub trusted: Vec<&'a str>,
    /// Largest reply the judge accepts from the program.
    pub reply_bytes: usize,
}

/// The spec of the program's side of a pair run.
#[derive(Debug, Serialize)]
pub(crate) struct ServeSpec<'a> {
    pub code: &'a str,
    pub output_bytes: usize,
}

/// `spec` as the argument a judge or server reads: a Python literal, hex-encoded (arguments are
/// NUL-terminated strings).
pub(crate) fn spec_arg(spec: &impl Serialize) -> String {
    let mut literal = String::new();
    py_literal(&serde_json::to_value(spec).unwrap_or_default(), &mut literal);
    hex(literal.as_bytes())
}

/// A fresh unguessable nonce (128 bits from the process's hash keys, a counter and the clock).
pub(crate) fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut d = Sha256::new();
    d.update(h.finish().to_le_bytes());
    d.update(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes());
    let mut h2 = RandomState::new().build_hasher();
    h2.write_u64(0x5eed);
    d.update(h2.finish().to_le_bytes());
    d.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The stdin of one harness run: `<length>\n<spec as a Python literal>` (the harness reads it with
/// `eval` and no builtins, which avoids importing `json` in every run).
pub(crate) fn stdin_for(spec: &Spec<'_>) -> Vec<u8> {
    let mut literal = String::new();
    py_literal(&serde_json::to_value(spec).unwrap_or_default(), &mut literal);
    let mut out = format!("{}\n", literal.len()).into_bytes();
    out.extend_from_slice(literal.as_bytes());
    out
}

/// `v` as a Python literal. JSON's string escapes and number syntax are valid Python; only the
/// keywords differ.
pub(crate) fn py_literal(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(_) | Value::String(_) => out.push_str(&v.to_string()),
        Value::Array(items) => {
            out.push('[');
            for item in items {
                py_literal(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (k, item) in map {
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                py_literal(item, out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

/// One test's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// `ok`, `error`, `output_limit`.
    pub status: String,
    /// Captured stdout (stdio mode) or the returned value as JSON (call mode).
    pub stdout: String,
    pub error: Option<String>,
}

/// What the harness reported.
#[derive(Debug, Default)]
pub(crate) struct Records {
    /// Per test index, its record (if any).
    pub tests: Vec<Option<Record>>,
    /// The program failed to compile or load, with the error.
    pub load_error: Option<String>,
    pub done: bool,
}

fn unhex(field: &str) -> Option<String> {
    if field == "-" {
        return Some(String::new());
    }
    from_hex(field).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Pick the records carrying `nonce` out of the run's stdout. Lines: `<test> <status> <hex stdout>
/// <hex error>`, `load <hex error>`, `done` (hex fields are `-` when empty).
pub(crate) fn parse_records(stdout: &[u8], nonce: &str, n_tests: usize) -> Records {
    let marker = format!("\x1e{nonce} ");
    let marker = marker.as_bytes();
    let mut records = Records { tests: vec![None; n_tests], ..Default::default() };
    let mut i = 0;
    while let Some(at) = find(&stdout[i..], marker) {
        let start = i + at + marker.len();
        let end = stdout[start..].iter().position(|&b| b == b'\n').map_or(stdout.len(), |p| start + p);
        i = end;
        let Ok(line) = std::str::from_utf8(&stdout[start..end]) else { continue };
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["done"] => records.done = true,
            ["load", err] => records.load_error = Some(unhex(err).unwrap_or_default()),
            [test, status, out, err] => {
                let (Ok(t), Some(out), Some(err)) = (test.parse::<usize>(), unhex(out), unhex(err)) else { continue };
                if let Some(slot) = records.tests.get_mut(t) {
                    let error = (!err.is_empty()).then_some(err);
                    *slot = Some(Record { status: status.to_string(), stdout: out, error });
                }
            }
            _ => {}
        }
    }
    records
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Output lines with whitespace runs collapsed and trailing blank lines dropped.
pub(crate) fn normalise(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Compare stdout with the expected output: every expected line must match, and no extra lines.
/// `Err` carries a short diff of the first difference.
pub(crate) fn compare_stdout(got: &str, expected: &str) -> Result<(), serde_json::Value> {
    let (g, e) = (normalise(got), normalise(expected));
    if g == e {
        return Ok(());
    }
    let line = g.iter().zip(&e).position(|(a, b)| a != b).unwrap_or(g.len().min(e.len()));
    Err(serde_json::json!({
        "line": line + 1,
        "expected": e.get(line).map(|s| truncate(s, 200)),
        "got": g.get(line).map(|s| truncate(s, 200)),
        "expected_lines": e.len(),
        "got_lines": g.len(),
    }))
}

pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    let mut out: String = s.chars().take(max_chars).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_need_the_nonce() {
        let out = b"noise\n\x1eabc 0 ok 330a -\n\x1ezzz 1 ok - -\n\x1eabc 1 ok zz -\n\x1eabc done\n";
        let r = parse_records(out, "abc", 2);
        assert!(r.done);
        assert_eq!(r.tests[0], Some(Record { status: "ok".into(), stdout: "3\n".into(), error: None }));
        assert!(r.tests[1].is_none(), "a record with the wrong nonce is ignored");
    }

    #[test]
    fn stdout_comparison() {
        assert!(compare_stdout("1  2 \n3\n\n", "1 2\n3").is_ok());
        let d = compare_stdout("1 2\n", "1 2\n3\n").unwrap_err();
        assert_eq!(d["line"], 2);
        assert_eq!(d["got"], serde_json::Value::Null);
        assert!(compare_stdout("1 2\n3\n4\n", "1 2\n3\n").is_err(), "extra lines fail");
        assert!(compare_stdout("", "").is_ok());
    }

    #[test]
    fn python_literals() {
        let mut s = String::new();
        py_literal(&serde_json::json!({"a": [1, 2.5, -3e300, null, true, false], "b\"": "x\n\u{1}é\\"}), &mut s);
        assert_eq!(s, r#"{"a":[1,2.5,-3e+300,None,True,False,],"b\"":"x\n\u0001é\\",}"#);
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
        assert_eq!(nonce().len(), 32);
    }
}
