//! Latency and throughput of the code sandbox against native `python3` subprocesses under rlimits, on
//! the same programs, at 1 and 2 threads. Driven by `scripts/bench-sandbox.sh`. Programs: a trivial
//! stdio one, a compute-heavy one, and a HumanEval-style check of ten asserts (`check`), which the
//! sandbox runs as a pair of instances (the tests in one, the program in the other: see
//! `code/harness.rs`) and native Python in one process.
//!
//!   sandbox_bench RUNTIME NATIVE_PYTHON [TRIVIAL_RUNS] [COMPUTE_RUNS]
//!
//! The sandbox side is a whole check (harness, nonce, record parsing, output comparison), as a verifier
//! pays it; the native side is `prlimit --as --cpu python3 -S -c PROGRAM` with the test's stdin.
//! Last line: `RESULT sandbox_trivial_p50_ms=… baseline=<native p50> ratio=… native_p50_ms=…`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rlvr_verifier::code::{self, CodeConfig, CodeTests, Sandbox, SandboxConfig};
use rlvr_verifier::verdict::Outcome;

const TRIVIAL: &str = "a, b = map(int, input().split())\nprint(a + b)\n";
const ADD: &str = "def add(a, b):\n    return a + b\n";
const CHECK_TEST: &str = "def check(candidate):\n    for a in range(10):\n        assert candidate(a, 2 * a) == 3 * a\n";
const COMPUTE: &str = "n = int(input())\ns = 0\nfor i in range(n):\n    s = (s + i * i) % 1000003\nprint(s)\n";

fn native(python: &str, program: &str, stdin: &str) -> String {
    let mut child = Command::new("prlimit")
        .args(["--as=1073741824", "--cpu=10", "--nproc=64", "--", python, "-S", "-c", program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_clear()
        .spawn()
        .expect("spawning python3");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("writing stdin");
    let out = child.wait_with_output().expect("python3 ran");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Stats {
    p50: f64,
    p99: f64,
    per_s: f64,
}

/// `runs` runs of `one` spread over `threads` threads.
fn measure(runs: usize, threads: usize, one: &(dyn Fn() + Sync)) -> Stats {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let mut times: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < runs {
                        let t = Instant::now();
                        one();
                        mine.push(t.elapsed());
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("bench thread")).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    Stats { p50: at(0.5), p99: at(0.99), per_s: times.len() as f64 / wall }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (runtime, python) = (args.get(1).expect("RUNTIME"), args.get(2).expect("NATIVE_PYTHON"));
    let trivial_runs: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(200);
    let compute_runs: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(10);

    let t = Instant::now();
    let mut config = SandboxConfig::for_runtime(runtime);
    config.max_concurrency = 2;
    let sb = Sandbox::new(config).expect("sandbox");
    println!("sandbox ready in {:.0} ms (compiled or loaded from cache)", t.elapsed().as_secs_f64() * 1e3);

    let trivial = CodeTests::Stdio { inputs: vec!["2 3\n".into()], outputs: vec!["5\n".into()] };
    let n = 2_000_000;
    let want: u64 = (0..n as u64).fold(0, |s, i| (s + i * i) % 1_000_003);
    let compute = CodeTests::Stdio { inputs: vec![format!("{n}\n")], outputs: vec![format!("{want}\n")] };
    let check = CodeTests::Check { test: CHECK_TEST.into(), entry_point: "add".into(), prompt: None };
    let check_native = format!("{ADD}{CHECK_TEST}check(add)\nprint('ok')\n");
    let cfg = CodeConfig { timeout_ms_per_test: 30_000, max_run_ms: 60_000, ..CodeConfig::default() };

    // Warm up and check both sides agree on the answers.
    for (tests, program, input, expect) in
        [(&trivial, TRIVIAL, "2 3\n", "5"), (&compute, COMPUTE, &*format!("{n}\n"), &*want.to_string())]
    {
        let v = code::run_tests(&sb, program, tests, &cfg);
        assert_eq!(v.outcome, Outcome::Correct, "{}", v.details);
        assert_eq!(native(python, program, input).trim(), expect);
    }
    let v = code::run_tests(&sb, ADD, &check, &cfg);
    assert_eq!(v.outcome, Outcome::Correct, "{}", v.details);
    assert_eq!(native(python, &check_native, "").trim(), "ok");

    println!("{:<9} {:<8} {:>7} {:>9} {:>9} {:>9}", "program", "side", "threads", "p50_ms", "p99_ms", "runs/s");
    let (mut trivial_p50, mut check_p50) = ((0.0, 0.0), (0.0, 0.0));
    for (name, tests, program, native_program, input, runs) in [
        ("trivial", &trivial, TRIVIAL, TRIVIAL, "2 3\n".to_string(), trivial_runs),
        ("check", &check, ADD, check_native.as_str(), String::new(), trivial_runs),
        ("compute", &compute, COMPUTE, COMPUTE, format!("{n}\n"), compute_runs),
    ] {
        for threads in [1, 2] {
            let s = measure(runs, threads, &|| {
                let v = code::run_tests(&sb, program, tests, &cfg);
                assert_eq!(v.outcome, Outcome::Correct);
            });
            println!("{name:<9} {:<8} {threads:>7} {:>9.1} {:>9.1} {:>9.1}", "sandbox", s.p50, s.p99, s.per_s);
            let n_ = measure(runs, threads, &|| {
                native(python, native_program, &input);
            });
            println!("{name:<9} {:<8} {threads:>7} {:>9.1} {:>9.1} {:>9.1}", "native", n_.p50, n_.p99, n_.per_s);
            if name == "trivial" && threads == 1 {
                trivial_p50 = (s.p50, n_.p50);
            }
            if name == "check" && threads == 1 {
                check_p50 = (s.p50, n_.p50);
            }
        }
    }
    let (s, n_) = trivial_p50;
    let (c, cn) = check_p50;
    println!(
        "RESULT sandbox_trivial_p50_ms={s:.1} baseline={n_:.1} ratio={:.2} native_p50_ms={n_:.1} check_p50_ms={c:.1} check_native_p50_ms={cn:.1} check_ratio={:.2}",
        s / n_,
        c / cn
    );
}
