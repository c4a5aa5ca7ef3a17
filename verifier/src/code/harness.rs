//! The in-sandbox test harness (`harness.py`) and the host side of its protocol.
//!
//! The host sends the harness a spec on stdin (`<length>\n<json>`: program, tests, a fresh random
//! nonce). The harness runs the tests and, after each one, writes a record `\x1e<nonce> <fields>\n` to
//! fd 1 (through `os.write` bound before the program ran), then a final `done`.
//! A test passes only if its record is there and says so: a program that exits (`sys.exit`,
//! `os._exit`), crashes the interpreter or swallows the harness's exceptions leaves records missing,
//! and it cannot forge one without the nonce, which it never sees through any channel the host
//! controls (it is not in argv, the environment or stdin once read). The threat this closes is
//! reward hacking through exit paths; a program that searches the interpreter's own memory for the
//! nonce is not covered by this check.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::sandbox::{RunLimits, RunStatus, Sandbox};

pub(crate) const HARNESS: &str = include_str!("harness.py");

/// Loads the harness from marshalled bytecode (hex, the last argument): compiling its source costs
/// ~6 ms in every run, unmarshalling ~0.1 ms.
const BOOT: &str = "import marshal, sys\nexec(marshal.loads(bytes.fromhex(sys.argv.pop())))\n";

/// Marshals the source on stdin with this runtime's own compiler.
const MARSHAL: &str =
    "import marshal, sys\nsys.stdout.write(marshal.dumps(compile(sys.stdin.read(), 'harness', 'exec')).hex())\n";

/// The interpreter arguments that run the harness in `sandbox`: from bytecode marshalled once per
/// runtime (cached for the process), or from source if marshalling failed.
pub(crate) fn harness_args(sandbox: &Sandbox) -> Vec<String> {
    static MARSHALLED: Mutex<Vec<(String, Option<Arc<str>>)>> = Mutex::new(Vec::new());
    let mut cache = MARSHALLED.lock().unwrap_or_else(|e| e.into_inner());
    let sha = sandbox.runtime_sha256();
    let hex = match cache.iter().find(|(k, _)| k == sha) {
        Some((_, hex)) => hex.clone(),
        None => {
            let limits = RunLimits { wall_time: Duration::from_secs(60), ..RunLimits::default() };
            let hex = sandbox
                .run(&[sandbox.interpreter_args(), &["-c", MARSHAL]].concat(), HARNESS.as_bytes().to_vec(), &limits)
                .ok()
                .filter(|o| o.status == RunStatus::Exited(0) && !o.stdout.is_empty())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(Arc::<str>::from);
            if hex.is_none() {
                tracing::warn!("could not marshal the harness; compiling it in every run");
            }
            cache.push((sha.to_string(), hex.clone()));
            hex
        }
    };
    let base = sandbox.interpreter_args().iter().chain(&["-c"]).map(|s| s.to_string());
    match hex {
        Some(hex) => base.chain([BOOT.to_string(), hex.to_string()]).collect(),
        None => base.chain([HARNESS.to_string()]).collect(),
    }
}

/// How tests call the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Run the program as `__main__` with the test's stdin; compare stdout.
    Stdio,
    /// Call `fn_name(*args)` (or `Solution().fn_name`), compare the return value as plain data.
    Call,
    /// HumanEval: exec the test source, then `check(<entry_point>)`.
    Check,
    /// MBPP: exec one assert statement.
    Assert,
}

/// The spec one harness run gets.
#[derive(Debug, Serialize)]
pub(crate) struct Spec<'a> {
    pub nonce: String,
    pub code: &'a str,
    pub mode: Mode,
    pub tests: &'a [serde_json::Value],
    pub stop_on_failure: bool,
    pub output_bytes: usize,
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
    /// `ok`, `wrong`, `error`, `output_limit`.
    pub status: String,
    /// Captured stdout (stdio mode).
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
    if !field.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..field.len()).step_by(2).map(|i| field.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    Some(String::from_utf8_lossy(&bytes?).into_owned())
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
