//! Observability end to end, with the real binaries: the dashboard of `rlvr train` driven in headless
//! Chromium (`scripts/dashboard_check.py`: charts, rollout viewer, controls with and without the
//! token, pause and resume agreeing with `/metrics`), and the `/metrics`, `/healthz` and `/readyz` of a
//! distributed run's learner, actor and verifier read by a Prometheus parser
//! (`scripts/check_metrics.py`). The Python side needs `scripts/requirements-test.txt` and Debian's
//! chromium, which `scripts/test.sh` installs; it runs the interpreter in `$RLVR_TEST_PYTHON`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rlvr_common::transport::redis_server::{Fsync, RedisServer};
use rlvr_learner::config::RunConfig;

mod support;

use support::{free_port, repo, run_python};


fn rlvr() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rlvr"))
}


/// A tiny random model with SmolLM2's tokenizer and a long sync run of it (the tests stop it).
fn tiny_run(tmp: &Path, steps: usize) -> RunConfig {
    let model_dir = support::tiny_model(tmp, 5);
    let mut config = RunConfig::default();
    config.model.path = model_dir;
    config.rollout.group_size = 4;
    config.rollout.max_new_tokens = 8;
    config.data.prompts_per_step = 2;
    config.optimizer.lr = 1e-3;
    config.runtime.eval = false;
    config.runtime.steps = steps;
    config.runtime.checkpoint_every = 0;
    config.runtime.run_dir = tmp.join("run");
    config.distributed.weights_bind = "127.0.0.1:0".into();
    config.distributed.weights_host = Some("127.0.0.1".into());
    config
}

fn write_config(tmp: &Path, config: &RunConfig) -> PathBuf {
    let path = tmp.join("run.toml");
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    path
}

/// A child process killed when the test ends, whatever happens.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Waits up to `limit` for the process to exit.
    fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

fn spawn_logged(program: &Path, args: &[&str], log: &Path, envs: &[(&str, &str)]) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    Proc(child)
}

/// Waits for `pattern` in the log at `path`; returns the rest of its line.
fn wait_for_line(path: &Path, pattern: &str, limit: Duration) -> String {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find_map(|l| l.split_once(pattern).map(|(_, rest)| rest.to_string())) {
            return line;
        }
        assert!(t.elapsed() < limit, "no `{pattern}` in {} after {limit:?}:\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Steps recorded in a run's metrics.jsonl.
fn steps_done(run_dir: &Path) -> usize {
    std::fs::read_to_string(run_dir.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
}

#[test]
fn the_dashboard_in_a_browser_shows_the_run_and_steers_it_with_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_run(tmp.path(), 100_000);
    let config_path = write_config(tmp.path(), &config);
    let log = tmp.path().join("train.log");
    let token = "test-token-4f1c";
    let mut train = spawn_logged(
        &rlvr(),
        &["train", config_path.to_str().unwrap(), "--dashboard", "127.0.0.1:0", "--quiet"],
        &log,
        &[("RLVR_DASHBOARD_TOKEN", token)],
    );
    let url = wait_for_line(&log, "dashboard: ", Duration::from_secs(120));
    let url = url.split_whitespace().next().unwrap().to_string();
    let screenshot = std::env::var("RLVR_DASHBOARD_SCREENSHOT").unwrap_or_else(|_| tmp.path().join("dashboard.png").display().to_string());
    run_python("dashboard_check.py", &[url, "--token".into(), token.into(), "--screenshot".into(), screenshot.clone(), "--stop".into()]);
    assert!(std::fs::metadata(&screenshot).map(|m| m.len() > 10_000).unwrap_or(false), "no screenshot at {screenshot}");
    // Stopped from the page: the run checkpoints and exits cleanly.
    let status = train.wait_for_exit(Duration::from_secs(120)).unwrap_or_else(|| panic!("the run did not stop:\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    assert!(status.success(), "rlvr train exited with {status}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(config.runtime.run_dir.join("summary.json")).unwrap()).unwrap();
    assert!(summary["steps"].as_u64().unwrap() >= 2, "{summary}");
}

#[test]
fn every_process_serves_conventional_metrics_and_probes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_run(tmp.path(), 100_000);
    config.distributed.run = "observed".into();
    let config_path = write_config(tmp.path(), &config);
    let redis_dir = tmp.path().join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let server = RedisServer::start(&redis_dir, Fsync::EverySec).expect("redis-server must be installed (scripts/test.sh installs it)");
    let url = server.url();
    let (learner_port, actor_port, verifier_port) = (free_port(), free_port(), free_port());
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let logs = tmp.path();
    let learner = spawn_logged(
        &rlvr(),
        &["learner", config_path.to_str().unwrap(), "--redis", &url, "--dashboard", &addr(learner_port), "--quiet"],
        &logs.join("learner.log"),
        &[],
    );
    let actor = spawn_logged(&rlvr(), &["actor", "--redis", &url, "--run", "observed", "--metrics-addr", &addr(actor_port)], &logs.join("actor.log"), &[]);
    let verifier = rlvr().with_file_name("rlvr-verifier");
    assert!(verifier.exists(), "{} is missing: build the workspace (cargo build --workspace)", verifier.display());
    let verifier_proc = spawn_logged(
        &verifier,
        &["serve", "--redis", &url, "--run", "observed", "--metrics-addr", &addr(verifier_port)],
        &logs.join("verifier.log"),
        &[],
    );
    let t = Instant::now();
    while steps_done(&config.runtime.run_dir) < 3 {
        assert!(t.elapsed() < Duration::from_secs(180), "the distributed run trained {} steps in 180 s; learner log:\n{}", steps_done(&config.runtime.run_dir), std::fs::read_to_string(logs.join("learner.log")).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The status (members, queues) is read every second: let the learner's gauges catch up.
    std::thread::sleep(Duration::from_secs(2));
    let url_of = |role: &str, p: u16| format!("{role}=http://127.0.0.1:{p}");
    let grafana = repo().join("grafana/dashboards/rlvr.json").display().to_string();
    run_python("check_metrics.py", &["--grafana".into(), grafana, url_of("learner", learner_port), url_of("actor", actor_port), url_of("verifier", verifier_port)]);
    // Stop the run; every process exits on its own.
    let out = Command::new(rlvr()).args(["ctl", "stop", "--redis", &url, "--run", "observed"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, mut p) in [("learner", learner), ("actor", actor), ("verifier", verifier_proc)] {
        let status = p.wait_for_exit(Duration::from_secs(60));
        assert!(status.is_some_and(|s| s.success()), "{name} did not exit cleanly ({status:?}):\n{}", std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default());
    }
}

#[test]
fn rlvr_up_runs_the_topology_to_the_end_with_the_dashboard_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_run(tmp.path(), 3);
    config.distributed.run = "up-test".into();
    let config_path = write_config(tmp.path(), &config);
    let log = tmp.path().join("up.log");
    let mut up = spawn_logged(
        &rlvr(),
        &["up", config_path.to_str().unwrap(), "--actors", "2", "--verifiers", "1", "--dashboard", "127.0.0.1:0", "--quiet"],
        &log,
        &[],
    );
    let status = up.wait_for_exit(Duration::from_secs(240)).unwrap_or_else(|| panic!("rlvr up did not finish:\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "rlvr up exited with {status}:\n{text}");
    assert!(text.contains("dashboard: http://127.0.0.1:"), "the learner served no dashboard:\n{text}");
    let run_dir = &config.runtime.run_dir;
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 3, "{summary}");
    assert_eq!(steps_done(run_dir), 3);
    for name in ["learner", "actor-0", "actor-1", "verifier-0"] {
        assert!(run_dir.join(format!("logs/{name}.log")).exists(), "no log for {name}");
    }
}
