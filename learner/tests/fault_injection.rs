//! Fault injection: a distributed run of a tiny model as real processes (`rlvr learner`, two `rlvr
//! actor`s, two `rlvr-verifier serve`s, one `redis-server` with AOF), during which actors, verifiers
//! and the learner are killed with SIGKILL at seeded random points and restarted, and Redis is killed
//! and restarted on its data. The run must finish; every group the final run trained on must be
//! trained exactly once; and (sync mode) its final weights must equal the fault-free embedded run's.
//!
//! The seed is printed; `RLVR_FAULT_SEED=N` replays one. The whole test is bounded (a deadline fails it
//! rather than letting it hang) and reports how many faults of each kind ran and what they cost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rlvr_common::checkpoint::read_weights;
use rlvr_common::transport::redis_server::{Fsync, RedisServer};
use rlvr_learner::config::RunConfig;

mod support;

const STEPS: usize = 20;

/// A tiny random model with SmolLM2's tokenizer; a sync run that learns from every sampled token (the
/// entropy bonus makes every update depend on what was sampled, even where the math reward is 0).
fn setup(tmp: &Path) -> RunConfig {
    let model_dir = support::tiny_model(tmp, 11);
    let mut config = RunConfig::default();
    config.model.path = model_dir;
    config.rollout.group_size = 4;
    config.rollout.max_new_tokens = 8;
    config.data.prompts_per_step = 4;
    config.optimizer.lr = 1e-3;
    config.algorithm.policy_loss.entropy_coeff = 0.01;
    config.runtime.eval = false;
    config.runtime.steps = STEPS;
    config.runtime.checkpoint_every = 2;
    // Tokens independent of how groups are shared among actors (see `rollout.batch_invariant`).
    config.rollout.batch_invariant = true;
    config.distributed.weights_bind = "127.0.0.1:0".into();
    config.distributed.weights_host = Some("127.0.0.1".into());
    config.distributed.visibility_timeout_s = 2.0;
    config.distributed.reissue_after_s = 6.0;
    config
}

fn rlvr() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rlvr"))
}

fn verifier_exe() -> PathBuf {
    let p = rlvr().with_file_name("rlvr-verifier");
    assert!(p.exists(), "{} is missing: build the workspace (cargo build --workspace)", p.display());
    p
}

/// A supervised child: restarted with the same arguments after each kill.
struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Child,
}

impl Proc {
    fn start(name: &str, program: PathBuf, args: Vec<String>, logs: &Path) -> Self {
        let log = logs.join(format!("{name}.log"));
        let child = spawn(&program, &args, &log);
        Self { name: name.into(), program, args, log, child }
    }

    fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.program, &self.args, &self.log);
    }
}

impl Drop for Proc {
    /// A failed test leaves no process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(program: &Path, args: &[String], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(program)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()))
}

fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Per step, the groups trained on with their content digests.
fn trained_groups(run_dir: &Path) -> BTreeMap<u64, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(run_dir.join("trained_groups.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let strings = |key: &str| v[key].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_string()).collect::<Vec<_>>();
        let groups = strings("groups").into_iter().zip(strings("digests")).collect();
        assert!(out.insert(v["step"].as_u64().unwrap(), groups).is_none(), "step {} recorded twice: {line}", v["step"]);
    }
    out
}

/// The first step at which two runs trained on other groups, or on other contents under the same ids.
fn first_difference(got: &BTreeMap<u64, Vec<(String, String)>>, want: &BTreeMap<u64, Vec<(String, String)>>) -> Option<String> {
    for (step, w) in want {
        let g = got.get(step).map(Vec::as_slice).unwrap_or_default();
        if g != w.as_slice() {
            let ids = |v: &[(String, String)]| v.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
            let detail = if ids(g) != ids(w) {
                format!("groups {:?}, want {:?}", ids(g), ids(w))
            } else {
                let (id, _) = g.iter().zip(w).find(|(a, b)| a != b).expect("some pair differs").0;
                format!("group {id} has other contents (tokens, log-probs or rewards)")
            };
            return Some(format!("step {step}: {detail}"));
        }
    }
    (got.len() != want.len()).then(|| format!("{} steps recorded, want {}", got.len(), want.len()))
}

/// The first step whose training statistics (loss, KL, grad norm, …) differ between two runs.
fn first_other_update(got: &Path, want: &Path) -> String {
    let stats = |dir: &Path| -> BTreeMap<u64, serde_json::Value> {
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).map(|v| (v["step"].as_u64().unwrap_or(0), v["train"].clone())).collect()
    };
    let (got, want) = (stats(got), stats(want));
    match want.iter().find(|(step, w)| got.get(step) != Some(w)) {
        Some((step, w)) => format!("the first update that differs is step {step}: {} vs the embedded run's {w}", got.get(step).map_or("nothing".into(), |g| g.to_string())),
        None => "every recorded step's statistics agree".into(),
    }
}

fn max_difference(a: &Path, b: &Path) -> f32 {
    let (wa, wb) = (read_weights(a).unwrap(), read_weights(b).unwrap());
    wa.iter().map(|(k, t)| t.data.iter().zip(&wb[k].data).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)).fold(0.0, f32::max)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillActor,
    KillVerifier,
    KillLearner,
    RestartRedis,
}

/// Runs the distributed topology as processes, injecting `faults` (in a seeded order, at seeded
/// moments); returns the wall time.
fn distributed_run(config: &RunConfig, tmp: &Path, name: &str, faults: &[Fault], seed: u64) -> f64 {
    let run_dir = tmp.join(name);
    let logs = run_dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut config = config.clone();
    config.runtime.run_dir = run_dir.clone();
    config.distributed.run = name.into();
    let config_path = run_dir.join("run.toml.in");
    std::fs::write(&config_path, toml::to_string_pretty(&config).unwrap()).unwrap();
    let mut redis = RedisServer::start(&run_dir.join("redis"), Fsync::EverySec).expect("redis-server must be installed (scripts/test.sh installs it)");
    let url = redis.url();
    let start = Instant::now();
    let mut learner = Proc::start("learner", rlvr(), vec!["learner".into(), config_path.display().to_string(), "--redis".into(), url.clone(), "--quiet".into()], &logs);
    let mut actors: Vec<Proc> = (0..2)
        .map(|i| Proc::start(&format!("actor-{i}"), rlvr(), vec!["actor".into(), "--redis".into(), url.clone(), "--run".into(), name.into(), "--id".into(), format!("actor-{i}")], &logs))
        .collect();
    let mut verifiers: Vec<Proc> = (0..2)
        .map(|i| Proc::start(&format!("verifier-{i}"), verifier_exe(), vec!["serve".into(), "--redis".into(), url.clone(), "--run".into(), name.into(), "--id".into(), format!("verifier-{i}")], &logs))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pending: Vec<Fault> = faults.to_vec();
    let mut next_fault = Instant::now() + Duration::from_millis(rng.random_range(1000..2000));
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = learner.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the run did not finish within 300 s; the learner's log ends:\n{}", tail(&learner.log, 40));
        if !pending.is_empty() && Instant::now() >= next_fault {
            let fault = pending.remove(rng.random_range(0..pending.len()));
            match fault {
                Fault::KillActor => {
                    let i = rng.random_range(0..actors.len());
                    eprintln!("[{:>5.1}s] kill -9 {}", start.elapsed().as_secs_f64(), actors[i].name);
                    actors[i].kill_and_restart();
                }
                Fault::KillVerifier => {
                    let i = rng.random_range(0..verifiers.len());
                    eprintln!("[{:>5.1}s] kill -9 {}", start.elapsed().as_secs_f64(), verifiers[i].name);
                    verifiers[i].kill_and_restart();
                }
                Fault::KillLearner => {
                    eprintln!("[{:>5.1}s] kill -9 learner", start.elapsed().as_secs_f64());
                    learner.kill_and_restart();
                }
                Fault::RestartRedis => {
                    eprintln!("[{:>5.1}s] kill -9 redis-server, restart on its AOF", start.elapsed().as_secs_f64());
                    redis.kill();
                    std::thread::sleep(Duration::from_millis(300));
                    redis.restart().unwrap();
                }
            }
            next_fault = Instant::now() + Duration::from_millis(rng.random_range(500..1200));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let seconds = start.elapsed().as_secs_f64();
    assert!(status.success(), "the learner failed ({status}); its log ends:\n{}", tail(&learner.log, 40));
    assert!(pending.is_empty(), "the run finished before faults {pending:?} could be injected: make it longer");
    // The finished run is `stopped`: the workers leave by themselves.
    for p in actors.iter_mut().chain(verifiers.iter_mut()) {
        let t = Instant::now();
        while p.child.try_wait().unwrap().is_none() {
            assert!(t.elapsed() < Duration::from_secs(30), "{} did not leave the stopped run", p.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    seconds
}

#[test]
fn killed_processes_and_a_redis_restart_lose_nothing_and_change_nothing() {
    let seed = std::env::var("RLVR_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::rng().random::<u64>());
    eprintln!("fault-injection seed {seed} (RLVR_FAULT_SEED={seed} replays it)");
    // RLVR_FAULT_KEEP=1 keeps the run directories (logs, metrics, checkpoints) for inspection.
    let tmp_dir = tempfile::tempdir().unwrap();
    let tmp = tmp_dir.path().to_path_buf();
    let _cleanup = if std::env::var_os("RLVR_FAULT_KEEP").is_some() {
        eprintln!("keeping {}", tmp_dir.keep().display());
        None
    } else {
        Some(tmp_dir)
    };
    let mut config = setup(&tmp);

    // The reference: the embedded run, `rlvr train`, as a process like the others (same allocator).
    config.runtime.run_dir = tmp.as_path().join("embedded");
    let config_path = tmp.as_path().join("embedded.toml");
    std::fs::write(&config_path, toml::to_string_pretty(&config).unwrap()).unwrap();
    let t = Instant::now();
    let out = Command::new(rlvr()).arg("train").arg(&config_path).arg("--quiet").output().unwrap();
    assert!(out.status.success(), "rlvr train failed: {}", String::from_utf8_lossy(&out.stderr));
    let embedded_s = t.elapsed().as_secs_f64();
    let want = trained_groups(&config.runtime.run_dir);
    assert_eq!(want.len(), STEPS);

    let clean_s = distributed_run(&config, tmp.as_path(), "clean", &[], seed);
    let faults = [Fault::KillActor, Fault::KillActor, Fault::KillVerifier, Fault::KillVerifier, Fault::KillLearner, Fault::RestartRedis];
    let faulty_s = distributed_run(&config, tmp.as_path(), "faulty", &faults, seed);

    for name in ["clean", "faulty"] {
        let run_dir = tmp.as_path().join(name);
        let got = trained_groups(&run_dir);
        if let Some(difference) = first_difference(&got, &want) {
            panic!("{name}: the run trained on other data than the embedded run: {difference}");
        }
        for (step, groups) in &got {
            let unique: BTreeSet<_> = groups.iter().map(|(id, _)| id).collect();
            assert_eq!(unique.len(), groups.len(), "{name}: a group trained twice at step {step}");
        }
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["steps"], STEPS, "{name}");
        let diff = max_difference(&config.runtime.run_dir.join(format!("checkpoints/step-{STEPS}")), &run_dir.join(format!("checkpoints/step-{STEPS}")));
        assert_eq!(diff, 0.0, "{name}: final weights differ from the embedded run's by up to {diff}; {}", first_other_update(&run_dir, &config.runtime.run_dir));
    }
    let moved = max_difference(&config.model.path, &config.runtime.run_dir.join(format!("checkpoints/step-{STEPS}")));
    assert!(moved > 0.0, "the run changed no weight: equal final weights would prove nothing");
    let mut counts: BTreeMap<Fault, usize> = BTreeMap::new();
    for f in faults {
        *counts.entry(f).or_default() += 1;
    }
    eprintln!(
        "faults {counts:?}: embedded {embedded_s:.1} s, distributed {clean_s:.1} s, with faults {faulty_s:.1} s ({:.1} s of redone work and recovery)",
        faulty_s - clean_s
    );
}

fn sigterm(child: &Child) {
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
}

fn wait_exit(p: &mut Proc, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "{} did not exit within {limit:?} of SIGTERM; its log ends:\n{}", p.name, tail(&p.log, 30));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM stops every process at a safe point, a worker with exit status 0 after the work in hand,
/// the learner after writing a checkpoint of the step it reached, with exit status 75 (the run is not
/// done: a supervisor must start it again), from which a new learner continues.
#[test]
fn sigterm_stops_each_process_at_a_safe_point() {
    let tmp_dir = tempfile::tempdir().unwrap();
    let tmp = tmp_dir.path();
    let mut config = setup(tmp);
    config.runtime.steps = 10_000;
    config.runtime.checkpoint_every = 0;
    let run_dir = tmp.join("term");
    let logs = run_dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    config.runtime.run_dir = run_dir.clone();
    config.distributed.run = "term".into();
    let config_path = tmp.join("term.toml");
    std::fs::write(&config_path, toml::to_string_pretty(&config).unwrap()).unwrap();
    let redis = RedisServer::start(&run_dir.join("redis"), Fsync::EverySec).expect("redis-server must be installed (scripts/test.sh installs it)");
    let url = redis.url();
    let learner_args = |extra: &[&str]| {
        let mut a = vec!["learner".to_string(), config_path.display().to_string(), "--redis".into(), url.clone(), "--quiet".into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let mut learner = Proc::start("learner", rlvr(), learner_args(&[]), &logs);
    let mut actor = Proc::start("actor", rlvr(), vec!["actor".into(), "--redis".into(), url.clone(), "--run".into(), "term".into()], &logs);
    let mut verifier = Proc::start("verifier", verifier_exe(), vec!["serve".into(), "--redis".into(), url.clone(), "--run".into(), "term".into()], &logs);
    let steps = || std::fs::read_to_string(run_dir.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
    let wait_steps = |n: usize| {
        let start = Instant::now();
        while steps() < n {
            assert!(start.elapsed() < Duration::from_secs(120), "no progress past step {}", steps());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_steps(2);
    for worker in [&mut actor, &mut verifier] {
        sigterm(&worker.child);
        let status = wait_exit(worker, Duration::from_secs(30));
        assert!(status.success(), "{} exited with {status} on SIGTERM", worker.name);
        worker.child = spawn(&worker.program, &worker.args, &worker.log);
    }
    let before = steps();
    wait_steps(before + 2);
    sigterm(&learner.child);
    let status = wait_exit(&mut learner, Duration::from_secs(60));
    // Stopped before its last step: not done, so a supervisor must run it again (EX_TEMPFAIL).
    assert_eq!(status.code(), Some(75), "the learner exited with {status} on SIGTERM; its log ends:\n{}", tail(&learner.log, 30));
    let reached = steps();
    assert!(run_dir.join(format!("checkpoints/step-{reached}/trainer_state.json")).exists(), "no checkpoint of step {reached}");
    // A new learner continues from it and finishes two steps later.
    learner.args = learner_args(&["--steps", &(reached + 2).to_string()]);
    learner.child = spawn(&learner.program, &learner.args, &learner.log);
    let status = wait_exit(&mut learner, Duration::from_secs(120));
    assert!(status.success(), "the resumed learner failed: {}", tail(&learner.log, 30));
    let groups = trained_groups(&run_dir);
    assert_eq!(groups.keys().copied().collect::<Vec<_>>(), (1..=(reached as u64 + 2)).collect::<Vec<_>>());
    for worker in [&mut actor, &mut verifier] {
        let status = wait_exit(worker, Duration::from_secs(30));
        assert!(status.success(), "{} did not leave the finished run cleanly ({status})", worker.name);
    }
    drop(redis);
}
