//! The Redis Streams transport against a real `redis-server` on a free port: exactly-once hand-offs,
//! reclaiming a dead consumer's entries, dead letters with reasons, hostile messages, trimming that
//! keeps what is unacknowledged, a Redis restart survived, the control plane.

use std::time::Duration;

use rlvr_common::protocol::{self, GroupId, MemberInfo, PromptTask, RewardSpec, Role, RolloutGroup, RunState, SamplingSpec};
use rlvr_common::rollout::{FinishReason, Rollout};
use rlvr_common::transport::redis::{Queue, RedisConfig, RedisTransport};
use rlvr_common::transport::redis_server::{Fsync, RedisServer};
use rlvr_common::transport::{Control, Inbox, Outbox, Stage};

fn server(name: &str) -> (RedisServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(&dir.path().join(name), Fsync::Always).expect("redis-server must be installed (scripts/test.sh installs it)");
    (server, dir)
}

fn config(url: &str) -> RedisConfig {
    RedisConfig { visibility_timeout: Duration::from_millis(300), max_deliveries: 3, reconnect_for: Duration::from_secs(20), ..RedisConfig::new(url, "t") }
}

fn task(slot: u32) -> PromptTask {
    PromptTask {
        group: GroupId { step: 0, slot },
        prompt_id: format!("p{slot}"),
        prompt_token_ids: vec![1, 2, 3],
        sampling: SamplingSpec { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, max_new_tokens: 4, stop_token_ids: vec![], seed: 9, n: 1 },
        min_version: 0,
        max_version: 0,
        reward: RewardSpec { data_source: String::new(), kind: "math".into(), ground_truth: "1".into() },
    }
}

fn answer(t: &PromptTask, actor: &str) -> RolloutGroup {
    RolloutGroup {
        group: t.group,
        reward: t.reward.clone(),
        actor: actor.into(),
        rollouts: vec![Rollout {
            id: format!("{}/0", t.group),
            prompt_id: t.prompt_id.clone(),
            group_id: t.group.to_string(),
            sample_index: 0,
            weight_version: 0,
            prompt_token_ids: t.prompt_token_ids.clone(),
            response_token_ids: vec![5],
            log_probs: vec![-0.5],
            temperature: 1.0,
            finish_reason: FinishReason::Stop,
            timings: Default::default(),
        }],
        texts: vec!["5".into()],
        weights_checksum: None,
    }
}

const WAIT: Duration = Duration::from_millis(200);

#[tokio::test]
async fn two_workers_hand_every_task_on_exactly_once() {
    let (_server, _dir) = server("a");
    let url = _server.url();
    let t = RedisTransport::connect(config(&url)).await.unwrap();
    let prompts = t.outbox(Queue::Prompts);
    for slot in 0..40 {
        prompts.send(&task(slot)).await.unwrap();
    }
    let mut a = t.stage(Queue::Prompts, Queue::Rollouts, "a").await.unwrap();
    let mut b = t.stage(Queue::Prompts, Queue::Rollouts, "b").await.unwrap();
    let mut out = t.inbox(Queue::Rollouts, "v", false).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 40 {
        for (stage, name) in [(&mut a, "a"), (&mut b, "b")] {
            let got: Vec<_> = Inbox::<PromptTask>::recv(stage, 3, WAIT).await.unwrap();
            for d in got {
                Stage::<PromptTask, RolloutGroup>::complete(stage, &d.id, &answer(&d.message, name)).await.unwrap();
            }
        }
        let groups: Vec<_> = Inbox::<RolloutGroup>::recv(&mut out, 100, WAIT).await.unwrap();
        for g in groups {
            assert!(seen.insert(g.message.group.slot), "slot {} handed on twice", g.message.group.slot);
            Inbox::<RolloutGroup>::ack(&mut out, &[g.id]).await.unwrap();
        }
    }
    let stats = t.queue_stats(Queue::Prompts).await.unwrap();
    assert_eq!((stats.pending, stats.lag), (0, Some(0)), "every task acknowledged with its result");
}

#[tokio::test]
async fn a_dead_workers_tasks_are_taken_over_and_dead_lettered_after_max_deliveries() {
    let (_server, _dir) = server("b");
    let t = RedisTransport::connect(config(&_server.url())).await.unwrap();
    t.outbox(Queue::Prompts).send(&task(7)).await.unwrap();
    // Worker `dead` takes it and never finishes.
    let mut dead = t.stage(Queue::Prompts, Queue::Rollouts, "dead").await.unwrap();
    let got: Vec<protocol_delivery::D> = Inbox::<PromptTask>::recv(&mut dead, 1, WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    // A live worker sees nothing until the visibility timeout has passed, then takes it over.
    let mut live = t.stage(Queue::Prompts, Queue::Rollouts, "live").await.unwrap();
    let early: Vec<protocol_delivery::D> = Inbox::<PromptTask>::recv(&mut live, 1, Duration::from_millis(50)).await.unwrap();
    assert!(early.is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut live = t.stage(Queue::Prompts, Queue::Rollouts, "live2").await.unwrap();
    let taken: Vec<protocol_delivery::D> = Inbox::<PromptTask>::recv(&mut live, 1, WAIT).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].attempts, 2);
    // Taken over and abandoned again and again: after max_deliveries it is a dead letter.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut w = t.stage(Queue::Prompts, Queue::Rollouts, &format!("w{i}")).await.unwrap();
        let _: Vec<protocol_delivery::D> = Inbox::<PromptTask>::recv(&mut w, 1, WAIT).await.unwrap();
    }
    let reasons = t.dead_letter_reasons(10).await.unwrap();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("delivered 4 times"), "{reasons:?}");
    assert_eq!(t.queue_stats(Queue::Prompts).await.unwrap().pending, 0);
}

/// Short names for the delivery types in the assertions above.
mod protocol_delivery {
    pub type D = rlvr_common::transport::Delivery<rlvr_common::protocol::PromptTask>;
}

#[tokio::test]
async fn keep_holds_a_task_and_release_hands_it_back_at_once() {
    let (_server, _dir) = server("c");
    let t = RedisTransport::connect(config(&_server.url())).await.unwrap();
    t.outbox(Queue::Prompts).send(&task(1)).await.unwrap();
    let mut busy = t.stage(Queue::Prompts, Queue::Rollouts, "busy").await.unwrap();
    let got: Vec<protocol_delivery::D> = Inbox::<PromptTask>::recv(&mut busy, 1, WAIT).await.unwrap();
    let id = got[0].id.clone();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Inbox::<PromptTask>::keep(&mut busy, std::slice::from_ref(&id)).await.unwrap();
    }
    let mut other = t.stage(Queue::Prompts, Queue::Rollouts, "other").await.unwrap();
    let none: Vec<protocol_delivery::D> = Inbox::<PromptTask>::recv(&mut other, 1, WAIT).await.unwrap();
    assert!(none.is_empty(), "a kept task is not taken over (600 ms > the 300 ms visibility timeout)");
    Inbox::<PromptTask>::release(&mut busy, std::slice::from_ref(&id)).await.unwrap();
    let mut third = t.stage(Queue::Prompts, Queue::Rollouts, "third").await.unwrap();
    let taken: Vec<protocol_delivery::D> = Inbox::<PromptTask>::recv(&mut third, 1, WAIT).await.unwrap();
    assert_eq!(taken.len(), 1, "a released task is taken at once");
}

#[tokio::test]
async fn hostile_messages_go_to_the_dead_letter_stream_with_a_reason() {
    let (_server, _dir) = server("d");
    // Held longer than the test runs: the good task is delivered once.
    let t = RedisTransport::connect(RedisConfig { visibility_timeout: Duration::from_secs(60), ..config(&_server.url()) }).await.unwrap();
    let out = t.outbox(Queue::Prompts);
    let good = protocol::encode("t", &task(1));
    out.send_raw(b"\xc1 not msgpack").await.unwrap();
    out.send_raw(&good[..good.len() / 2]).await.unwrap();
    out.send_raw(&protocol::encode("another-run", &task(2))).await.unwrap();
    out.send_raw(&protocol::encode("t", &answer(&task(3), "a"))).await.unwrap();
    out.send_raw(&vec![0x90u8; 100 << 20]).await.unwrap();
    let mut future = rmp_serde::to_vec_named(&serde_json::json!({"schema": 99, "kind": "prompt", "run": "t", "payload": {}})).unwrap();
    out.send_raw(&future).await.unwrap();
    future.clear();
    let mut invalid = task(4);
    invalid.sampling.n = 0;
    out.send_raw(&protocol::encode("t", &invalid)).await.unwrap();
    out.send(&task(5)).await.unwrap();
    let mut w = t.stage(Queue::Prompts, Queue::Rollouts, "w").await.unwrap();
    let mut good_ones = vec![];
    for _ in 0..5 {
        let got: Vec<protocol_delivery::D> = Inbox::<PromptTask>::recv(&mut w, 10, WAIT).await.unwrap();
        good_ones.extend(got);
    }
    assert_eq!(good_ones.len(), 1, "{:?}", good_ones.iter().map(|d| &d.message).collect::<Vec<_>>());
    assert_eq!(good_ones[0].message.group.slot, 5);
    let reasons = t.dead_letter_reasons(100).await.unwrap();
    assert_eq!(reasons.len(), 7, "{reasons:#?}");
    for want in ["wrong msgpack marker", "unexpected end of file", "run `another-run`", "kind `rollouts`", "exceeds the limit", "schema 99", "group of 0 samples"] {
        assert!(reasons.iter().any(|r| r.contains(want)), "no dead letter says {want:?}: {reasons:#?}");
    }
    // The learner rejects what decodes but does not belong, with its own reason.
    Inbox::<PromptTask>::reject(&mut w, &good_ones[0].id, "step 9 was never issued").await.unwrap();
    assert!(t.dead_letter_reasons(100).await.unwrap().iter().any(|r| r == "step 9 was never issued"));
    assert_eq!(t.queue_stats(Queue::Prompts).await.unwrap().pending, 0);
}

#[tokio::test]
async fn trimming_never_drops_what_is_unacknowledged() {
    let (_server, _dir) = server("e");
    let t = RedisTransport::connect(config(&_server.url())).await.unwrap();
    let out = t.outbox(Queue::Scored);
    for slot in 0..10 {
        out.send(&answer(&task(slot), "a")).await.unwrap();
    }
    let mut learner = t.inbox(Queue::Scored, "learner", false).await.unwrap();
    let got: Vec<rlvr_common::transport::Delivery<RolloutGroup>> = learner.recv(6, WAIT).await.unwrap();
    assert_eq!(got.len(), 6);
    // Acknowledge 0, 1 and 3: 2 is pending, 6..10 never delivered.
    let ack: Vec<_> = [0, 1, 3].iter().map(|&i| got[i].id.clone()).collect();
    Inbox::<RolloutGroup>::ack(&mut learner, &ack).await.unwrap();
    let removed = t.trim(Queue::Scored).await.unwrap();
    assert_eq!(removed, 2, "only the entries below the oldest pending one go");
    // A restarted learner still finds its pending entries, then the undelivered ones.
    let mut again = t.inbox(Queue::Scored, "learner", false).await.unwrap();
    let pending: Vec<rlvr_common::transport::Delivery<RolloutGroup>> = again.pending(100).await.unwrap();
    let slots: Vec<u32> = pending.iter().map(|d| d.message.group.slot).collect();
    assert_eq!(slots, [2, 4, 5]);
    let rest: Vec<rlvr_common::transport::Delivery<RolloutGroup>> = again.recv(100, WAIT).await.unwrap();
    assert_eq!(rest.iter().map(|d| d.message.group.slot).collect::<Vec<_>>(), [6, 7, 8, 9]);
}

#[tokio::test]
async fn a_redis_restart_is_survived_with_its_streams() {
    let (mut server, _dir) = server("f");
    let t = RedisTransport::connect(config(&server.url())).await.unwrap();
    let out = t.outbox(Queue::Prompts);
    out.send(&task(1)).await.unwrap();
    let mut w = t.stage(Queue::Prompts, Queue::Rollouts, "w").await.unwrap();
    let got: Vec<protocol_delivery::D> = Inbox::<PromptTask>::recv(&mut w, 1, WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    // Redis dies; a send waits for it to come back.
    server.kill();
    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(500));
        server.restart().unwrap();
        server
    });
    out.send(&task(2)).await.expect("the send retries until Redis is back");
    let _server = restart.await.unwrap();
    // The pending task survived (AOF), and completing it works on the new connection.
    Stage::<PromptTask, RolloutGroup>::complete(&mut w, &got[0].id, &answer(&got[0].message, "w")).await.unwrap();
    let next: Vec<protocol_delivery::D> = Inbox::<PromptTask>::recv(&mut w, 5, WAIT).await.unwrap();
    assert_eq!(next.iter().map(|d| d.message.group.slot).collect::<Vec<_>>(), [2]);
    assert_eq!(t.queue_stats(Queue::Rollouts).await.unwrap().length, 1);
}

#[tokio::test]
async fn an_unreachable_redis_fails_naming_the_command_and_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let port = rlvr_common::transport::redis_server::free_port().unwrap();
    let config = RedisConfig { reconnect_for: Duration::from_millis(300), ..RedisConfig::new(format!("redis://127.0.0.1:{port}"), "t") };
    let e = RedisTransport::connect(config).await.unwrap_err().to_string();
    assert!(e.contains("PING") && e.contains("unreachable"), "{e}");
    drop(dir);
}

#[tokio::test]
async fn a_password_is_taken_from_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let port = rlvr_common::transport::redis_server::free_port().unwrap();
    let server = RedisServer::start_on(dir.path(), port, Fsync::EverySec, Some("s3cret".into())).unwrap();
    let t = RedisTransport::connect(config(&server.url())).await.unwrap();
    t.control().set_state(RunState::Paused).await.unwrap();
    let wrong = RedisConfig { reconnect_for: Duration::from_millis(200), ..RedisConfig::new(format!("redis://:wrong@127.0.0.1:{port}"), "t") };
    assert!(RedisTransport::connect(wrong).await.is_err());
}

#[tokio::test]
async fn the_control_plane_round_trips() {
    let (_server, _dir) = server("g");
    let t = RedisTransport::connect(config(&_server.url())).await.unwrap();
    let c = t.control();
    assert_eq!(c.state().await.unwrap(), RunState::Running, "a run nobody set is running");
    c.set_state(RunState::Draining).await.unwrap();
    assert_eq!(c.state().await.unwrap(), RunState::Draining);
    let m = MemberInfo { id: "a1".into(), role: Role::Actor, host: "h".into(), weight_version: Some(3), groups_per_s: 1.5, groups_done: 7, at: 1.0 };
    c.heartbeat(&m, Duration::from_millis(300)).await.unwrap();
    assert_eq!(c.members().await.unwrap(), vec![m.clone()]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(c.members().await.unwrap().is_empty(), "a member whose heartbeat expired is gone");
    assert!(!c.take_checkpoint_request().await.unwrap());
    c.request_checkpoint().await.unwrap();
    assert!(c.take_checkpoint_request().await.unwrap());
    assert!(!c.take_checkpoint_request().await.unwrap());
    assert_eq!(c.weights().await.unwrap(), None);
    let w = protocol::WeightAnnouncement { version: 2, checksum: "a".repeat(64), address: "h:1".into(), bytes: 8 };
    c.announce_weights(&w).await.unwrap();
    assert_eq!(c.weights().await.unwrap(), Some(w));
}
