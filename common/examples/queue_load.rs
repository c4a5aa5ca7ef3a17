//! Load on the Redis Streams transport, for `scripts/bench-distributed.sh` and `scripts/load-test.sh`.
//!
//! `queue_load roundtrip URL GROUPS TOKENS`: one pipeline through the three streams (a prompt task in,
//! a simulated actor completing it with a rollout group of 8 samples x TOKENS response tokens, a
//! simulated verifier completing that with scores, the learner reading and acknowledging), GROUPS times,
//! one at a time; prints round trips/s and bytes/s.
//!
//! `queue_load learner URL SECONDS OUTSTANDING` and `queue_load fleet URL SECONDS ACTORS VERIFIERS
//! TOKENS GROUP_SECONDS`: a simulated learner (issues prompt tasks to keep OUTSTANDING in flight, reads
//! and acknowledges scored groups, trims) and, in another process, a fleet of simulated actors (each
//! takes a task, waits GROUP_SECONDS as a GPU would while sampling, writes a recorded-size group) and
//! verifiers (score instantly), each on its own connection. The learner prints groups/s, bytes/s, its
//! own CPU and Redis's CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rlvr_common::protocol::{self, GroupId, PromptTask, RewardSpec, RolloutGroup, SampleScore, SamplingSpec, ScoredGroup};
use rlvr_common::rollout::{FinishReason, Rollout};
use rlvr_common::transport::redis::{Queue, RedisConfig, RedisTransport};
use rlvr_common::transport::{Inbox, Outbox, Stage};

const RUN: &str = "load";
const SAMPLES: usize = 8;
const PROMPT_TOKENS: usize = 256;

fn task(step: u64, slot: u32) -> PromptTask {
    PromptTask {
        group: GroupId { step, slot },
        prompt_id: format!("p{slot}"),
        prompt_token_ids: (0..PROMPT_TOKENS as u32).map(|t| 1000 + t).collect(),
        sampling: SamplingSpec { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, max_new_tokens: 1024, stop_token_ids: vec![2], seed: 7, n: SAMPLES },
        min_version: 0,
        max_version: 0,
        reward: RewardSpec { data_source: "load".into(), kind: "math".into(), ground_truth: "42".into() },
    }
}

/// A group as an actor writes it: realistic token ids (large ids take 5 bytes each) and log-probs.
fn group_for(t: &PromptTask, tokens: usize) -> RolloutGroup {
    let rollouts = (0..SAMPLES)
        .map(|i| Rollout {
            id: format!("{}/{i}", t.group),
            prompt_id: t.prompt_id.clone(),
            group_id: t.group.to_string(),
            sample_index: i as u32,
            weight_version: 0,
            prompt_token_ids: t.prompt_token_ids.clone(),
            response_token_ids: (0..tokens as u32).map(|k| 30_000 + (k * 7919 + i as u32) % 20_000).collect(),
            log_probs: (0..tokens).map(|k| -((k % 13) as f32) * 0.37 - 0.01).collect(),
            temperature: 1.0,
            finish_reason: FinishReason::Stop,
            timings: Default::default(),
        })
        .collect();
    RolloutGroup { group: t.group, reward: t.reward.clone(), actor: "sim".into(), rollouts, texts: vec!["The answer is \\boxed{42}.".into(); SAMPLES], weights_checksum: None }
}

fn scored(g: RolloutGroup) -> ScoredGroup {
    let scores = vec![SampleScore { reward: 1.0, correct: true, outcome: "correct".into(), detail: String::new() }; g.rollouts.len()];
    ScoredGroup { rollouts: g, scores, verifier: "sim".into() }
}

async fn connect(url: &str) -> RedisTransport {
    RedisTransport::connect(RedisConfig::new(url, RUN)).await.expect("redis")
}

async fn roundtrip(url: &str, groups: usize, tokens: usize) {
    let t = connect(url).await;
    t.delete_run().await.unwrap();
    let prompts = t.outbox(Queue::Prompts);
    let mut actor = t.stage(Queue::Prompts, Queue::Rollouts, "actor").await.unwrap();
    let mut verifier = t.stage(Queue::Rollouts, Queue::Scored, "verifier").await.unwrap();
    let mut learner = t.inbox(Queue::Scored, "learner", false).await.unwrap();
    let template = group_for(&task(0, 0), tokens);
    let group_bytes = protocol::encode(RUN, &template).len();
    let scored_bytes = protocol::encode(RUN, &scored(template)).len();
    let wait = Duration::from_secs(5);
    let start = Instant::now();
    for i in 0..groups {
        prompts.send(&task(0, i as u32)).await.unwrap();
        let d: Vec<rlvr_common::transport::Delivery<PromptTask>> = actor.recv(1, wait).await.unwrap();
        let g = group_for(&d[0].message, tokens);
        Stage::<PromptTask, RolloutGroup>::complete(&mut actor, &d[0].id, &g).await.unwrap();
        let d: Vec<rlvr_common::transport::Delivery<RolloutGroup>> = verifier.recv(1, wait).await.unwrap();
        let s = scored(d[0].message.clone());
        Stage::<RolloutGroup, ScoredGroup>::complete(&mut verifier, &d[0].id, &s).await.unwrap();
        let d: Vec<rlvr_common::transport::Delivery<ScoredGroup>> = learner.recv(1, wait).await.unwrap();
        Inbox::<ScoredGroup>::ack(&mut learner, &[d[0].id.clone()]).await.unwrap();
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "roundtrip groups={groups} tokens={tokens} group_bytes={group_bytes} scored_bytes={scored_bytes} seconds={s:.3} roundtrips_per_s={:.1} mb_per_s={:.1}",
        groups as f64 / s,
        (groups * (group_bytes + scored_bytes)) as f64 / s / 1e6
    );
}

/// User + system CPU seconds of this process.
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn redis_cpu_s(url: &str) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut c).await.unwrap();
    info.lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum()
}

async fn learner(url: &str, seconds: f64, outstanding: usize) {
    let t = connect(url).await;
    let prompts = t.outbox(Queue::Prompts);
    let mut inbox = t.inbox(Queue::Scored, "learner", false).await.unwrap();
    let (mut issued, mut done, mut bytes) = (0u64, 0u64, 0u64);
    let (cpu0, rcpu0) = (process_cpu_s(), redis_cpu_s(url).await);
    let start = Instant::now();
    let mut last_trim = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        while issued - done < outstanding as u64 {
            prompts.send(&task(issued / 1_000_000, (issued % 1_000_000) as u32)).await.unwrap();
            issued += 1;
        }
        let got: Vec<rlvr_common::transport::Delivery<ScoredGroup>> = inbox.recv(256, Duration::from_millis(200)).await.unwrap();
        let ids: Vec<_> = got.iter().map(|d| d.id.clone()).collect();
        for d in &got {
            bytes += protocol::encode(RUN, &d.message).len() as u64;
        }
        Inbox::<ScoredGroup>::ack(&mut inbox, &ids).await.unwrap();
        done += got.len() as u64;
        if last_trim.elapsed() > Duration::from_secs(1) {
            for q in Queue::ALL {
                t.trim(q).await.unwrap();
            }
            last_trim = Instant::now();
        }
    }
    let s = start.elapsed().as_secs_f64();
    let (cpu, rcpu) = (process_cpu_s() - cpu0, redis_cpu_s(url).await - rcpu0);
    println!(
        "learner seconds={s:.1} groups={done} groups_per_s={:.1} scored_mb_per_s={:.1} learner_cpu={:.2} redis_cpu={:.2}",
        done as f64 / s,
        bytes as f64 / s / 1e6,
        cpu / s,
        rcpu / s
    );
}

async fn fleet(url: &str, seconds: f64, actors: usize, verifiers: usize, tokens: usize, group_seconds: f64) {
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for i in 0..actors {
        let (url, done) = (url.to_string(), done.clone());
        tasks.push(tokio::spawn(async move {
            let t = connect(&url).await;
            let mut stage = t.stage(Queue::Prompts, Queue::Rollouts, &format!("sim-actor-{i}")).await.unwrap();
            // Actors start out of phase, as a real fleet does.
            tokio::time::sleep(Duration::from_secs_f64(group_seconds * (i as f64 / actors.max(1) as f64))).await;
            while Instant::now() < stop {
                let got: Vec<rlvr_common::transport::Delivery<PromptTask>> = stage.recv(1, Duration::from_millis(500)).await.unwrap();
                for d in got {
                    tokio::time::sleep(Duration::from_secs_f64(group_seconds)).await;
                    let g = group_for(&d.message, tokens);
                    Stage::<PromptTask, RolloutGroup>::complete(&mut stage, &d.id, &g).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for i in 0..verifiers {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let t = connect(&url).await;
            let mut stage = t.stage(Queue::Rollouts, Queue::Scored, &format!("sim-verifier-{i}")).await.unwrap();
            while Instant::now() < stop {
                let got: Vec<rlvr_common::transport::Delivery<RolloutGroup>> = stage.recv(16, Duration::from_millis(500)).await.unwrap();
                for d in got {
                    let id = d.id.clone();
                    Stage::<RolloutGroup, ScoredGroup>::complete(&mut stage, &id, &scored(d.message)).await.unwrap();
                }
            }
        }));
    }
    let cpu0 = process_cpu_s();
    for t in tasks {
        let _ = t.await;
    }
    println!("fleet actors={actors} verifiers={verifiers} groups={} fleet_cpu={:.2}", done.load(Ordering::Relaxed), (process_cpu_s() - cpu0) / seconds);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| panic!("usage: see the comment at the top of queue_load.rs"));
    let num = |i: usize| arg(i).parse::<f64>().expect("a number");
    match arg(1).as_str() {
        "roundtrip" => roundtrip(&arg(2), num(3) as usize, num(4) as usize).await,
        "learner" => learner(&arg(2), num(3), num(4) as usize).await,
        "fleet" => fleet(&arg(2), num(3), num(4) as usize, num(5) as usize, num(6) as usize, num(7)).await,
        other => panic!("unknown mode {other}"),
    }
}
