//! Deployment, run for real: the container images built from this checkout's binaries
//! (`scripts/build-images.sh`), the docker-compose stack running a run to its end while an actor and a
//! verifier container are killed, and the Kubernetes manifests rendered, validated against the
//! Kubernetes schemas and checked for policy (`scripts/check_k8s.py`). Needs Docker with Compose
//! (`docker compose` or `docker-compose`) and kubectl; `scripts/test.sh` sets up the test Python.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rlvr_learner::config::RunConfig;

mod support;

use support::{free_port, repo, run_python};


fn rlvr() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rlvr"))
}


/// Runs `command`, failing the test with its output unless it succeeds; returns its stdout.
fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// `docker compose` (v2) where it is installed, else `docker-compose` (v1.29): the file suits both.
fn compose_program() -> Vec<String> {
    let v2 = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    if v2 { vec!["docker".into(), "compose".into()] } else { vec!["docker-compose".into()] }
}

/// A compose project of the repository's docker-compose.yml under its own name, with the images
/// tagged for this test; dropping it takes the stack down with its volumes and removes the images.
struct Stack {
    program: Vec<String>,
    project: String,
    tag: String,
    env: Vec<(String, String)>,
}

impl Stack {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program[0]);
        c.args(&self.program[1..])
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(repo().join("docker-compose.yml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn container(&self, service: &str) -> String {
        let id = run(&mut self.command(&["ps", "-q", service])).trim().to_string();
        assert!(!id.is_empty(), "no container for service {service}");
        id
    }

    fn logs(&self) -> String {
        self.command(&["logs", "--no-color", "--tail", "40"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// What docker still holds of the project: its containers and volumes.
    fn leftovers(&self) -> String {
        let label = format!("label=com.docker.compose.project={}", self.project);
        docker(&["ps", "-a", "-q", "--filter", &label]) + &docker(&["volume", "ls", "-q", "--filter", &label])
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.command(&["down", "-v", "--remove-orphans"]).output();
        for image in ["rlvr", "rlvr-verifier", "rlvr-redis"] {
            let _ = Command::new("docker").args(["rmi", "-f", &format!("{image}:{}", self.tag)]).output();
        }
    }
}

/// GET over HTTP/1.0; the body, or None where nothing answers yet.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// The learner's `rlvr_step` gauge, read from its `/metrics`.
fn learner_step(port: u16) -> Option<u64> {
    let metrics = http_get(port, "/metrics")?;
    metrics.lines().find_map(|l| l.strip_prefix("rlvr_step ")).and_then(|v| v.trim().parse::<f64>().ok()).map(|v| v as u64)
}

/// Per step, the ids of the groups trained on.
fn trained_groups(run_dir: &Path) -> Vec<(u64, Vec<String>)> {
    let text = std::fs::read_to_string(run_dir.join("trained_groups.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let groups = v["groups"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_string()).collect();
            (v["step"].as_u64().unwrap(), groups)
        })
        .collect()
}

const STEPS: usize = 8;

#[test]
fn compose_stack_finishes_the_run_through_container_kills_and_leaves_nothing_behind() {
    let repo = repo();
    let tag = format!("test-{}", std::process::id());
    let bin_dir = rlvr().parent().unwrap().to_path_buf();
    let t = Instant::now();
    let sizes = run(Command::new(repo.join("scripts/build-images.sh"))
        .args(["--no-build", "--tag", &tag, "--bin-dir"])
        .arg(&bin_dir)
        .current_dir(&repo));
    eprintln!("images built in {:.1} s:\n{sizes}", t.elapsed().as_secs_f64());

    // The run: a tiny model, long enough that the kills land mid-run, batch-invariant so that the
    // distributed run must end with the embedded run's weights bit for bit.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The containers run as uid 10001: the mounted folders must be readable by it.
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    support::tiny_model(&root.join("models"), 5);
    std::fs::create_dir_all(root.join("data")).unwrap();
    let mut config = RunConfig::default();
    config.model.path = PathBuf::from("models/model");
    config.rollout.group_size = 4;
    config.rollout.max_new_tokens = 16;
    config.rollout.batch_invariant = true;
    config.data.prompts_per_step = 4;
    config.data.eval_prompts = 8;
    config.optimizer.lr = 1e-3;
    // Every update depends on what was sampled, even where the math reward of a random model is 0.
    config.algorithm.policy_loss.entropy_coeff = 0.01;
    config.runtime.steps = STEPS;
    config.runtime.eval_samples = 2;
    config.runtime.run_dir = PathBuf::from("runs/default");
    // A killed worker's groups go to another within seconds, not the default minute.
    config.distributed.visibility_timeout_s = 4.0;
    std::fs::write(root.join("run.toml"), toml::to_string_pretty(&config).unwrap()).unwrap();

    let port = free_port();
    let stack = Stack {
        program: compose_program(),
        project: format!("rlvrtest{}", std::process::id()),
        tag: tag.clone(),
        env: vec![
            ("RLVR_TAG".into(), tag.clone()),
            ("RLVR_MODELS".into(), root.join("models").display().to_string()),
            ("RLVR_DATA".into(), root.join("data").display().to_string()),
            ("RLVR_CONFIG_FILE".into(), root.join("run.toml").display().to_string()),
            ("RLVR_DASHBOARD_PUBLISH".into(), format!("127.0.0.1:{port}")),
        ],
    };
    let t = Instant::now();
    run(&mut stack.command(&["up", "-d"]));

    // Kill an actor and a verifier once the first update is in: the run is under way, with the
    // next step's groups out.
    let limit = Duration::from_secs(300);
    let step = loop {
        match learner_step(port) {
            Some(s) if s >= 1 => break s,
            _ => {}
        }
        assert!(t.elapsed() < limit, "no step done after {limit:?}:\n{}", stack.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    let (actor, verifier, learner) = (stack.container("actor-1"), stack.container("verifier-1"), stack.container("learner"));
    docker(&["kill", &actor]);
    docker(&["kill", &verifier]);
    eprintln!("killed actor-1 and verifier-1 at step {step} of {STEPS}");

    // The learner exits 0 when the run is done.
    let exit = loop {
        let state = docker(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", &learner]);
        if let Some(code) = state.trim().strip_prefix("exited ") {
            break code.to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(600), "the run did not end:\n{}", stack.logs());
        std::thread::sleep(Duration::from_millis(500));
    };
    let compose_s = t.elapsed().as_secs_f64();
    assert_eq!(exit, "0", "the learner failed:\n{}", stack.logs());
    docker(&["cp", &format!("{learner}:/rlvr/runs/default"), &root.join("compose").display().to_string()]);

    // Every issued group trained exactly once, as the embedded run trained them.
    let got = trained_groups(&root.join("compose"));
    assert_eq!(got.len(), STEPS, "steps recorded: {got:?}");
    for (step, groups) in &got {
        let unique: BTreeSet<_> = groups.iter().collect();
        assert_eq!((unique.len(), groups.len()), (config.data.prompts_per_step, config.data.prompts_per_step), "step {step}: {groups:?}");
    }
    let t = Instant::now();
    run(Command::new(rlvr()).args(["train", "run.toml", "--quiet", "--run-dir", "embedded"]).current_dir(root));
    let embedded_s = t.elapsed().as_secs_f64();
    assert_eq!(got, trained_groups(&root.join("embedded")));
    let summary = |dir: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root.join(dir).join("summary.json")).unwrap()).unwrap()
    };
    let (compose, embedded) = (summary("compose"), summary("embedded"));
    for key in ["eval_before", "eval_after"] {
        assert!(!embedded[key].is_null(), "summary.json has no {key}: {embedded}");
        assert_eq!(compose[key], embedded[key], "{key}: compose vs embedded");
    }
    let last = format!("checkpoints/step-{STEPS}/model.safetensors");
    let weights = |dir: &str| std::fs::read(root.join(dir).join(&last)).unwrap();
    assert!(weights("compose") == weights("embedded"), "the compose run's final weights differ from the embedded run's");
    assert!(weights("embedded") != std::fs::read(root.join("models/model/model.safetensors")).unwrap(), "the run changed no weight");

    let restarts = docker(&["inspect", "-f", "{{.RestartCount}}", &actor, &verifier]);
    eprintln!(
        "compose run {compose_s:.1} s (embedded {embedded_s:.1} s); restarts of the killed actor and verifier: {}; groups reissued {}, duplicates ignored {}",
        restarts.split_whitespace().collect::<Vec<_>>().join(", "),
        compose["groups_reissued"],
        compose["duplicates_ignored"]
    );

    run(&mut stack.command(&["down", "-v"]));
    let left = stack.leftovers();
    assert!(left.trim().is_empty(), "`down -v` left containers or volumes behind:\n{left}");
}

#[test]
fn kubernetes_manifests_render_validate_and_follow_the_policy() {
    let arg = |p: PathBuf| p.display().to_string();
    run_python("check_k8s.py", &["--rlvr".into(), arg(rlvr()), "--rlvr-verifier".into(), arg(rlvr().with_file_name("rlvr-verifier"))]);
}
