//! The distributed transport: Redis Streams with consumer groups, and the control plane in Redis keys.
//! Every key of run `R` is under `rlvr:{R}:` (the braces are a Redis Cluster hash tag: one run's keys
//! live on one node, so a transaction may span its streams). `docs/protocol.md` lists them.
//!
//! Exactly-once rests on four things here and one in the learner:
//! - a worker writes its result and acknowledges its input in one `MULTI`/`EXEC`;
//! - a consumer that dies leaves its entries pending; a live one takes them over (`XAUTOCLAIM`) once
//!   they have been idle past the visibility timeout, and a worker still busy with an entry says so
//!   (`XCLAIM … JUSTID`) so that it is not taken from it;
//! - an entry delivered more than `max_deliveries` times, or that does not decode, goes to the
//!   dead-letter stream with the reason;
//! - streams are trimmed only below the oldest entry any consumer has not acknowledged;
//! - the learner recognises a group it has already trained on by its deterministic id, and re-issues
//!   a group whose result has not come by a deadline (that covers entries lost in a Redis restart).
//!
//! Every command retries, with backoff, on a connection failure until `reconnect_for` has passed, then
//! fails naming the command and how long Redis was unreachable. Retrying is safe: an `XADD` repeated
//! after a lost reply makes a duplicate, which the consumer downstream recognises by the group id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, RedisError, Value};

use super::{Control, Delivery, DeliveryId, Inbox, Outbox, Stage, TransportError};
use crate::protocol::{self, MemberInfo, Message, RunInfo, RunState, WeightAnnouncement};

/// How to reach Redis and how patient to be with it.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// The run's name: every key is under `rlvr:{run}:`.
    pub run: String,
    /// An entry pending this long without its consumer keeping it is taken over by another consumer.
    pub visibility_timeout: Duration,
    /// Deliveries after which an entry goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// How long to keep retrying while Redis is unreachable before failing.
    pub reconnect_for: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>, run: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            run: run.into(),
            visibility_timeout: Duration::from_secs(60),
            max_deliveries: 5,
            reconnect_for: Duration::from_secs(300),
        }
    }
}

/// The three work queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Groups to sample, read by the actors.
    Prompts,
    /// Sampled groups, read by the verifiers.
    Rollouts,
    /// Scored groups, read by the learner.
    Scored,
}

impl Queue {
    pub const ALL: [Queue; 3] = [Queue::Prompts, Queue::Rollouts, Queue::Scored];

    pub fn name(self) -> &'static str {
        match self {
            Self::Prompts => "prompts",
            Self::Rollouts => "rollouts",
            Self::Scored => "scored",
        }
    }

    /// Its consumer group.
    pub fn group(self) -> &'static str {
        match self {
            Self::Prompts => "actors",
            Self::Rollouts => "verifiers",
            Self::Scored => "learner",
        }
    }
}

/// The names of a run's keys.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(run: &str) -> Self {
        Self { prefix: format!("rlvr:{{{run}}}:") }
    }
    pub fn stream(&self, q: Queue) -> String {
        format!("{}{}", self.prefix, q.name())
    }
    pub fn dead(&self) -> String {
        format!("{}dead", self.prefix)
    }
    pub fn state(&self) -> String {
        format!("{}state", self.prefix)
    }
    pub fn info(&self) -> String {
        format!("{}info", self.prefix)
    }
    pub fn weights(&self) -> String {
        format!("{}weights", self.prefix)
    }
    pub fn checkpoint(&self) -> String {
        format!("{}checkpoint", self.prefix)
    }
    /// Hash of member id -> its last heartbeat record.
    pub fn members(&self) -> String {
        format!("{}members", self.prefix)
    }
    /// Sorted set of member id -> the Unix time (ms) its heartbeat expires.
    pub fn members_expiry(&self) -> String {
        format!("{}members:expiry", self.prefix)
    }
}

/// Dead-letter entries keep at most this much of the refused message.
const DEAD_PAYLOAD_BYTES: usize = 64 << 10;
/// The dead-letter stream is capped (approximately) at this many entries.
const DEAD_MAX_LEN: usize = 100_000;

enum Request<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
}

enum Failure {
    Unreachable(RedisError, Duration),
    Server(RedisError),
}

impl Failure {
    fn into_error(self, what: &str) -> TransportError {
        match self {
            Failure::Unreachable(e, after) => TransportError::Unavailable { what: what.to_string(), after, message: e.to_string() },
            Failure::Server(e) => TransportError::Redis { what: what.to_string(), message: e.to_string() },
        }
    }
    /// The consumer group is gone: the stream was deleted (a fresh run of the same name; a Redis that
    /// lost its data), possibly under a blocked read (`UNBLOCKED`).
    fn is_nogroup(&self) -> bool {
        matches!(self, Failure::Server(e) if ["NOGROUP", "UNBLOCKED"].iter().any(|c| e.code() == Some(c) || e.to_string().contains(c)))
    }
}

/// Errors worth retrying: the connection, or a server still loading its data after a restart.
fn retryable(e: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::BusyLoading) | ErrorKind::Server(ServerErrorKind::TryAgain))
}

/// One connection that reconnects with backoff.
struct Conn {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    reconnect_for: Duration,
    /// The longest a reply may take (a blocking read's block time is added).
    response_timeout: Duration,
}

impl Conn {
    fn new(client: redis::Client, reconnect_for: Duration, response_timeout: Duration) -> Self {
        Self { client, conn: None, reconnect_for, response_timeout }
    }

    async fn connection(&mut self) -> Result<&mut MultiplexedConnection, RedisError> {
        if self.conn.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(5)))
                .set_response_timeout(Some(self.response_timeout));
            self.conn = Some(self.client.get_multiplexed_async_connection_with_config(&config).await?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    async fn query<T: FromRedisValue>(&mut self, what: &str, request: Request<'_>) -> Result<T, Failure> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut warned = false;
        loop {
            let result = match self.connection().await {
                Ok(c) => match request {
                    Request::Cmd(cmd) => cmd.query_async(c).await,
                    Request::Pipe(pipe) => pipe.query_async(c).await,
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => {
                    if warned {
                        tracing::info!(what, after_s = start.elapsed().as_secs_f64(), "Redis reachable again");
                    }
                    return Ok(v);
                }
                Err(e) if retryable(&e) => {
                    self.conn = None;
                    let after = start.elapsed();
                    if after >= self.reconnect_for {
                        return Err(Failure::Unreachable(e, after));
                    }
                    if !warned {
                        tracing::warn!(what, error = %e, "Redis unreachable; retrying with backoff");
                        warned = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(Failure::Server(e)),
            }
        }
    }

    async fn cmd<T: FromRedisValue>(&mut self, what: &str, cmd: &Cmd) -> Result<T, TransportError> {
        self.query(what, Request::Cmd(cmd)).await.map_err(|f| f.into_error(what))
    }
}

/// A connection to Redis for one run: makes the queues' ends and the control plane.
#[derive(Clone)]
pub struct RedisTransport {
    client: redis::Client,
    config: Arc<RedisConfig>,
    keys: Keys,
    /// Shared by the outboxes and the control plane (non-blocking commands only).
    shared: Arc<tokio::sync::Mutex<Conn>>,
}

impl std::fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTransport").field("run", &self.config.run).finish_non_exhaustive()
    }
}

impl RedisTransport {
    /// Opens the URL and checks that Redis answers (retrying for `reconnect_for`).
    pub async fn connect(config: RedisConfig) -> Result<Self, TransportError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| TransportError::Redis { what: "opening the Redis URL".into(), message: e.to_string() })?;
        let mut conn = Conn::new(client.clone(), config.reconnect_for, Duration::from_secs(30));
        let _: String = conn.cmd("PING", &redis::cmd("PING")).await?;
        let keys = Keys::new(&config.run);
        Ok(Self { client, config: Arc::new(config), keys, shared: Arc::new(tokio::sync::Mutex::new(conn)) })
    }

    /// The same connection with the run's queue settings (workers take them from the published run).
    pub fn with_queue_settings(&self, settings: &crate::protocol::QueueSettings) -> Self {
        let mut config = (*self.config).clone();
        config.visibility_timeout = Duration::from_secs_f64(settings.visibility_timeout_s);
        config.max_deliveries = settings.max_deliveries;
        Self { config: Arc::new(config), ..self.clone() }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn run(&self) -> &str {
        &self.config.run
    }

    async fn shared_cmd<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T, TransportError> {
        self.shared.lock().await.cmd(what, cmd).await
    }

    /// The sending end of `queue`.
    pub fn outbox(&self, queue: Queue) -> RedisOutbox {
        RedisOutbox { transport: self.clone(), stream: self.keys.stream(queue) }
    }

    /// The consuming end of `queue` for consumer `consumer`, on its own connection (reads block).
    /// With `claim`, it takes over entries other consumers left idle past the visibility timeout (the
    /// workers); without, it only ever sees its own (the learner, the one consumer of its queue).
    pub async fn inbox(&self, queue: Queue, consumer: &str, claim: bool) -> Result<RedisInbox, TransportError> {
        let conn = Conn::new(self.client.clone(), self.config.reconnect_for, Duration::from_secs(30));
        let mut inbox = RedisInbox {
            conn,
            config: self.config.clone(),
            keys: self.keys.clone(),
            queue,
            stream: self.keys.stream(queue),
            consumer: consumer.to_string(),
            claim,
            last_claim: None,
        };
        inbox.create_group().await?;
        Ok(inbox)
    }

    /// A worker reading `input` and writing `output`.
    pub async fn stage(&self, input: Queue, output: Queue, consumer: &str) -> Result<RedisStage, TransportError> {
        Ok(RedisStage { inbox: self.inbox(input, consumer, true).await?, output: self.keys.stream(output) })
    }

    pub fn control(&self) -> RedisControl {
        RedisControl { transport: self.clone() }
    }

    /// Length, pending entries and lag (entries never delivered) of `queue`.
    pub async fn queue_stats(&self, queue: Queue) -> Result<QueueStats, TransportError> {
        let stream = self.keys.stream(queue);
        let length: u64 = self.shared_cmd("XLEN", redis::cmd("XLEN").arg(&stream)).await?;
        let groups: Value = match self.shared_cmd("XINFO GROUPS", redis::cmd("XINFO").arg("GROUPS").arg(&stream)).await {
            Ok(v) => v,
            Err(TransportError::Redis { .. }) => Value::Array(vec![]),
            Err(e) => return Err(e),
        };
        let mut stats = QueueStats { length, ..Default::default() };
        if let Some(fields) = group_fields(&groups, queue.group()) {
            stats.pending = field_u64(&fields, "pending").unwrap_or(0);
            stats.lag = field_u64(&fields, "lag");
        }
        Ok(stats)
    }

    /// Entries in the dead-letter stream.
    pub async fn dead_letters(&self) -> Result<u64, TransportError> {
        self.shared_cmd("XLEN", redis::cmd("XLEN").arg(self.keys.dead())).await
    }

    /// The dead-letter entries' reasons, oldest first (for tests and `rlvr ctl status`).
    pub async fn dead_letter_reasons(&self, max: usize) -> Result<Vec<String>, TransportError> {
        let reply: redis::streams::StreamRangeReply =
            self.shared_cmd("XRANGE", redis::cmd("XRANGE").arg(self.keys.dead()).arg("-").arg("+").arg("COUNT").arg(max)).await?;
        Ok(reply.ids.iter().map(|e| e.get::<String>("reason").unwrap_or_default()).collect())
    }

    /// Removes the entries of `queue` below the oldest one its consumer group has not acknowledged
    /// (nor been delivered); returns how many went.
    pub async fn trim(&self, queue: Queue) -> Result<u64, TransportError> {
        let stream = self.keys.stream(queue);
        let groups: Value = match self.shared_cmd("XINFO GROUPS", redis::cmd("XINFO").arg("GROUPS").arg(&stream)).await {
            Ok(v) => v,
            Err(TransportError::Redis { .. }) => return Ok(0),
            Err(e) => return Err(e),
        };
        let Some(fields) = group_fields(&groups, queue.group()) else { return Ok(0) };
        let Some(last_delivered) = field_str(&fields, "last-delivered-id") else { return Ok(0) };
        // Everything up to last-delivered has been delivered; of that, only what is pending is still needed.
        let mut floor = next_id(&last_delivered);
        let pending: redis::streams::StreamPendingReply =
            self.shared_cmd("XPENDING", redis::cmd("XPENDING").arg(&stream).arg(queue.group())).await?;
        if let redis::streams::StreamPendingReply::Data(d) = pending
            && id_less(&d.start_id, &floor)
        {
            floor = d.start_id;
        }
        self.shared_cmd("XTRIM", redis::cmd("XTRIM").arg(&stream).arg("MINID").arg(&floor)).await
    }

    /// Deletes every key of the run (for tests and `rlvr ctl reset`).
    pub async fn delete_run(&self) -> Result<(), TransportError> {
        let mut keys: Vec<String> = Queue::ALL.iter().map(|q| self.keys.stream(*q)).collect();
        keys.extend([
            self.keys.dead(),
            self.keys.state(),
            self.keys.info(),
            self.keys.weights(),
            self.keys.checkpoint(),
            self.keys.members(),
            self.keys.members_expiry(),
        ]);
        let _: u64 = self.shared_cmd("DEL", redis::cmd("DEL").arg(&keys)).await?;
        Ok(())
    }
}

/// A queue's backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Entries in the stream (acknowledged ones included, until trimmed).
    pub length: u64,
    /// Delivered to a consumer and not yet acknowledged.
    pub pending: u64,
    /// Not yet delivered to any consumer (None where Redis cannot tell).
    pub lag: Option<u64>,
}

/// The fields of consumer group `group` in an `XINFO GROUPS` reply.
fn group_fields(groups: &Value, group: &str) -> Option<Vec<(String, Value)>> {
    let Value::Array(items) = groups else { return None };
    items.iter().find_map(|g| {
        let fields = pairs(g);
        (field_str(&fields, "name").as_deref() == Some(group)).then_some(fields)
    })
}

fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Array(flat) => flat
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => String::from_redis_value(k.clone()).ok().map(|k| (k, v.clone())),
                _ => None,
            })
            .collect(),
        Value::Map(kvs) => kvs.iter().filter_map(|(k, v)| String::from_redis_value(k.clone()).ok().map(|k| (k, v.clone()))).collect(),
        _ => vec![],
    }
}

fn field_str(fields: &[(String, Value)], name: &str) -> Option<String> {
    fields.iter().find(|(k, _)| k == name).and_then(|(_, v)| String::from_redis_value(v.clone()).ok())
}

fn field_u64(fields: &[(String, Value)], name: &str) -> Option<u64> {
    fields.iter().find(|(k, _)| k == name).and_then(|(_, v)| u64::from_redis_value(v.clone()).ok())
}

/// A stream id as (milliseconds, sequence).
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn id_less(a: &str, b: &str) -> bool {
    parse_id(a) < parse_id(b)
}

/// The smallest id after `id`.
fn next_id(id: &str) -> String {
    let (ms, seq) = parse_id(id);
    match seq.checked_add(1) {
        Some(s) => format!("{ms}-{s}"),
        None => format!("{}-0", ms + 1),
    }
}

/// The sending end of a stream.
#[derive(Debug, Clone)]
pub struct RedisOutbox {
    transport: RedisTransport,
    stream: String,
}

impl RedisOutbox {
    /// Appends already-encoded bytes (the load test and the hostile-message tests use this).
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), TransportError> {
        let _: String = self.transport.shared_cmd("XADD", redis::cmd("XADD").arg(&self.stream).arg("*").arg("m").arg(bytes)).await?;
        Ok(())
    }
}

impl<T: Message> Outbox<T> for RedisOutbox {
    async fn send(&self, message: &T) -> Result<(), TransportError> {
        self.send_raw(&protocol::encode(&self.transport.config.run, message)).await
    }
}

/// The consuming end of a stream for one consumer of its group.
pub struct RedisInbox {
    conn: Conn,
    config: Arc<RedisConfig>,
    keys: Keys,
    queue: Queue,
    stream: String,
    consumer: String,
    claim: bool,
    last_claim: Option<Instant>,
}

impl std::fmt::Debug for RedisInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisInbox").field("stream", &self.stream).field("consumer", &self.consumer).finish_non_exhaustive()
    }
}

impl RedisInbox {
    async fn create_group(&mut self) -> Result<(), TransportError> {
        let cmd = redis::cmd("XGROUP").arg("CREATE").arg(&self.stream).arg(self.queue.group()).arg("0").arg("MKSTREAM").clone();
        match self.conn.query::<String>("XGROUP CREATE", Request::Cmd(&cmd)).await {
            Ok(_) => Ok(()),
            Err(Failure::Server(e)) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(f) => Err(f.into_error("XGROUP CREATE")),
        }
    }

    /// A command on this inbox's stream; recreates the consumer group if it vanished (a Redis that
    /// restarted without its data) and tries once more.
    async fn run<T: FromRedisValue>(&mut self, what: &str, request: Request<'_>) -> Result<T, TransportError> {
        match self.conn.query(what, clone_request(&request)).await {
            Err(f) if f.is_nogroup() => {
                tracing::warn!(stream = %self.stream, "consumer group missing (Redis lost its data?); recreating it");
                self.create_group().await?;
                self.conn.query(what, request).await.map_err(|f| f.into_error(what))
            }
            r => r.map_err(|f| f.into_error(what)),
        }
    }

    /// Moves an entry to the dead-letter stream with `reason` and acknowledges it, in one transaction.
    async fn dead_letter(&mut self, id: &str, payload: Option<&[u8]>, reason: &str) -> Result<(), TransportError> {
        tracing::warn!(stream = %self.stream, id, reason, "message moved to the dead-letter stream");
        let mut pipe = redis::pipe();
        pipe.atomic();
        let xadd = pipe.cmd("XADD").arg(self.keys.dead()).arg("MAXLEN").arg("~").arg(DEAD_MAX_LEN).arg("*");
        xadd.arg("stream").arg(&self.stream).arg("id").arg(id).arg("consumer").arg(&self.consumer).arg("reason").arg(reason);
        if let Some(p) = payload {
            xadd.arg("bytes").arg(p.len()).arg("m").arg(&p[..p.len().min(DEAD_PAYLOAD_BYTES)]);
        }
        pipe.ignore();
        pipe.cmd("XACK").arg(&self.stream).arg(self.queue.group()).arg(id).ignore();
        self.run::<()>("XADD dead + XACK", Request::Pipe(&pipe)).await
    }

    /// Decodes entries; those that do not decode are dead-lettered, those whose data is gone are acked.
    async fn decode_entries<T: Message>(&mut self, entries: Vec<StreamId>, counts: &HashMap<String, u64>, default_attempts: u64) -> Result<Vec<Delivery<T>>, TransportError> {
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let bytes: Option<Vec<u8>> = entry.map.get("m").and_then(|v| Vec::<u8>::from_redis_value(v.clone()).ok());
            let Some(bytes) = bytes else {
                let reason = if entry.map.is_empty() { "entry deleted before it was processed" } else { "entry has no `m` field" };
                if entry.map.is_empty() {
                    Inbox::<T>::ack(self, &[DeliveryId(entry.id.clone())]).await?;
                } else {
                    self.dead_letter(&entry.id, None, reason).await?;
                }
                continue;
            };
            match protocol::decode::<T>(&self.config.run, &bytes) {
                Ok(message) => {
                    let attempts = counts.get(&entry.id).copied().unwrap_or(default_attempts);
                    out.push(Delivery { id: DeliveryId(entry.id), message, attempts });
                }
                Err(e) => self.dead_letter(&entry.id, Some(&bytes), &e.to_string()).await?,
            }
        }
        Ok(out)
    }

    /// Takes over entries other consumers left idle past the visibility timeout; dead-letters those
    /// delivered too often.
    async fn claim_idle<T: Message>(&mut self, max: usize) -> Result<Vec<Delivery<T>>, TransportError> {
        let idle_ms = self.config.visibility_timeout.as_millis() as u64;
        let cmd = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(self.queue.group())
            .arg(&self.consumer)
            .arg(idle_ms)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .clone();
        let reply: StreamAutoClaimReply = self.run("XAUTOCLAIM", Request::Cmd(&cmd)).await?;
        if reply.claimed.is_empty() {
            return Ok(vec![]);
        }
        // How often each was delivered (XAUTOCLAIM counted this delivery).
        let first = reply.claimed.first().map(|e| e.id.clone()).unwrap_or_default();
        let last = reply.claimed.last().map(|e| e.id.clone()).unwrap_or_default();
        let cmd = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(self.queue.group())
            .arg(&first)
            .arg(&last)
            .arg(reply.claimed.len())
            .arg(&self.consumer)
            .clone();
        let pending: StreamPendingCountReply = self.run("XPENDING", Request::Cmd(&cmd)).await?;
        let counts: HashMap<String, u64> = pending.ids.iter().map(|p| (p.id.clone(), p.times_delivered as u64)).collect();
        let mut keep = vec![];
        for entry in reply.claimed {
            let n = counts.get(&entry.id).copied().unwrap_or(1);
            if n > self.config.max_deliveries {
                let bytes = entry.map.get("m").and_then(|v| Vec::<u8>::from_redis_value(v.clone()).ok());
                let reason = format!("delivered {n} times (max_deliveries {}); its consumers died or failed on it", self.config.max_deliveries);
                self.dead_letter(&entry.id, bytes.as_deref(), &reason).await?;
            } else {
                tracing::info!(stream = %self.stream, id = %entry.id, deliveries = n, "took over an entry left idle by another consumer");
                keep.push(entry);
            }
        }
        self.decode_entries(keep, &counts, 1).await
    }
}

impl RedisInbox {
    /// Resets how long these entries count as idle (`XCLAIM … IDLE ms JUSTID`: ownership stays, the
    /// delivery count does not grow).
    async fn set_idle(&mut self, ids: &[DeliveryId], idle_ms: u64) -> Result<(), TransportError> {
        if ids.is_empty() {
            return Ok(());
        }
        let cmd = redis::cmd("XCLAIM")
            .arg(&self.stream)
            .arg(self.queue.group())
            .arg(&self.consumer)
            .arg(0)
            .arg(ids.iter().map(|i| i.0.as_str()).collect::<Vec<_>>())
            .arg("IDLE")
            .arg(idle_ms)
            .arg("JUSTID")
            .clone();
        let _: Value = self.run("XCLAIM JUSTID", Request::Cmd(&cmd)).await?;
        Ok(())
    }
}

fn clone_request<'a>(r: &Request<'a>) -> Request<'a> {
    match r {
        Request::Cmd(c) => Request::Cmd(c),
        Request::Pipe(p) => Request::Pipe(p),
    }
}

impl<T: Message> Inbox<T> for RedisInbox {
    async fn recv(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<T>>, TransportError> {
        let max = max.max(1);
        if self.claim && self.last_claim.is_none_or(|t| t.elapsed() >= self.config.visibility_timeout / 4) {
            self.last_claim = Some(Instant::now());
            let claimed = self.claim_idle::<T>(max).await?;
            if !claimed.is_empty() {
                return Ok(claimed);
            }
        }
        let block_ms = wait.as_millis().clamp(1, 60_000) as u64;
        // A blocking read needs a reply timeout longer than its block time.
        self.conn.response_timeout = Duration::from_millis(block_ms) + Duration::from_secs(30);
        let cmd = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(self.queue.group())
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .clone();
        let reply: Option<StreamReadReply> = self.run("XREADGROUP", Request::Cmd(&cmd)).await?;
        let entries: Vec<StreamId> = reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default();
        self.decode_entries(entries, &HashMap::new(), 1).await
    }

    async fn pending(&mut self, max: usize) -> Result<Vec<Delivery<T>>, TransportError> {
        let mut out = vec![];
        let mut from = "0".to_string();
        while out.len() < max {
            let cmd = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(self.queue.group())
                .arg(&self.consumer)
                .arg("COUNT")
                .arg((max - out.len()).min(1000))
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(&from)
                .clone();
            let reply: Option<StreamReadReply> = self.run("XREADGROUP (own pending)", Request::Cmd(&cmd)).await?;
            let entries: Vec<StreamId> = reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default();
            let Some(last) = entries.last().map(|e| e.id.clone()) else { break };
            from = last;
            out.extend(self.decode_entries::<T>(entries, &HashMap::new(), 2).await?);
        }
        Ok(out)
    }

    async fn ack(&mut self, ids: &[DeliveryId]) -> Result<(), TransportError> {
        for chunk in ids.chunks(1000) {
            let cmd = redis::cmd("XACK").arg(&self.stream).arg(self.queue.group()).arg(chunk.iter().map(|i| i.0.as_str()).collect::<Vec<_>>()).clone();
            let _: u64 = self.run("XACK", Request::Cmd(&cmd)).await?;
        }
        Ok(())
    }

    async fn reject(&mut self, id: &DeliveryId, reason: &str) -> Result<(), TransportError> {
        let cmd = redis::cmd("XRANGE").arg(&self.stream).arg(&id.0).arg(&id.0).clone();
        let entry: redis::streams::StreamRangeReply = self.run("XRANGE", Request::Cmd(&cmd)).await?;
        let bytes = entry.ids.first().and_then(|e| e.map.get("m")).and_then(|v| Vec::<u8>::from_redis_value(v.clone()).ok());
        self.dead_letter(&id.0, bytes.as_deref(), reason).await
    }

    async fn keep(&mut self, ids: &[DeliveryId]) -> Result<(), TransportError> {
        self.set_idle(ids, 0).await
    }

    /// Marks them idle for a whole visibility timeout, so the next consumer to look takes them over.
    async fn release(&mut self, ids: &[DeliveryId]) -> Result<(), TransportError> {
        let idle = self.config.visibility_timeout.as_millis() as u64;
        self.set_idle(ids, idle).await
    }
}

/// A worker between two streams.
#[derive(Debug)]
pub struct RedisStage {
    inbox: RedisInbox,
    output: String,
}

impl<I: Message> Inbox<I> for RedisStage {
    fn recv(&mut self, max: usize, wait: Duration) -> impl Future<Output = Result<Vec<Delivery<I>>, TransportError>> + Send {
        Inbox::<I>::recv(&mut self.inbox, max, wait)
    }
    fn pending(&mut self, max: usize) -> impl Future<Output = Result<Vec<Delivery<I>>, TransportError>> + Send {
        Inbox::<I>::pending(&mut self.inbox, max)
    }
    fn ack(&mut self, ids: &[DeliveryId]) -> impl Future<Output = Result<(), TransportError>> + Send {
        Inbox::<I>::ack(&mut self.inbox, ids)
    }
    fn reject(&mut self, id: &DeliveryId, reason: &str) -> impl Future<Output = Result<(), TransportError>> + Send {
        Inbox::<I>::reject(&mut self.inbox, id, reason)
    }
    fn keep(&mut self, ids: &[DeliveryId]) -> impl Future<Output = Result<(), TransportError>> + Send {
        Inbox::<I>::keep(&mut self.inbox, ids)
    }
    fn release(&mut self, ids: &[DeliveryId]) -> impl Future<Output = Result<(), TransportError>> + Send {
        Inbox::<I>::release(&mut self.inbox, ids)
    }
}

impl<I: Message, O: Message> Stage<I, O> for RedisStage {
    async fn complete(&mut self, input: &DeliveryId, output: &O) -> Result<(), TransportError> {
        let bytes = protocol::encode(&self.inbox.config.run, output);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XADD").arg(&self.output).arg("*").arg("m").arg(bytes).ignore();
        pipe.cmd("XACK").arg(&self.inbox.stream).arg(self.inbox.queue.group()).arg(&input.0).ignore();
        self.inbox.run::<()>("XADD + XACK", Request::Pipe(&pipe)).await
    }
}

/// The control plane in Redis keys.
#[derive(Debug, Clone)]
pub struct RedisControl {
    transport: RedisTransport,
}

impl RedisControl {
    async fn get_message<T: Message>(&self, key: &str) -> Result<Option<T>, TransportError> {
        let bytes: Option<Vec<u8>> = self.transport.shared_cmd("GET", redis::cmd("GET").arg(key)).await?;
        match bytes {
            None => Ok(None),
            Some(b) => protocol::decode::<T>(&self.transport.config.run, &b)
                .map(Some)
                .map_err(|e| TransportError::Redis { what: format!("reading {key}"), message: e.to_string() }),
        }
    }

    async fn set_message<T: Message>(&self, key: &str, message: &T) -> Result<(), TransportError> {
        let bytes = protocol::encode(&self.transport.config.run, message);
        let _: () = self.transport.shared_cmd("SET", redis::cmd("SET").arg(key).arg(bytes)).await?;
        Ok(())
    }
}

fn now_ms() -> u64 {
    (super::unix_time() * 1000.0) as u64
}

impl Control for RedisControl {
    async fn state(&self) -> Result<RunState, TransportError> {
        let s: Option<String> = self.transport.shared_cmd("GET state", redis::cmd("GET").arg(self.transport.keys.state())).await?;
        Ok(s.as_deref().and_then(RunState::parse).unwrap_or(RunState::Running))
    }

    async fn set_state(&self, state: RunState) -> Result<(), TransportError> {
        let _: () = self.transport.shared_cmd("SET state", redis::cmd("SET").arg(self.transport.keys.state()).arg(state.as_str())).await?;
        Ok(())
    }

    async fn heartbeat(&self, member: &MemberInfo, ttl: Duration) -> Result<(), TransportError> {
        let keys = &self.transport.keys;
        let bytes = protocol::encode(&self.transport.config.run, member);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("HSET").arg(keys.members()).arg(&member.id).arg(bytes).ignore();
        pipe.cmd("ZADD").arg(keys.members_expiry()).arg(now_ms() + ttl.as_millis() as u64).arg(&member.id).ignore();
        self.transport.shared.lock().await.query::<()>("heartbeat", Request::Pipe(&pipe)).await.map_err(|f| f.into_error("heartbeat"))
    }

    async fn members(&self) -> Result<Vec<MemberInfo>, TransportError> {
        let keys = &self.transport.keys;
        let now = now_ms();
        // Forget the expired, then read the live.
        let expired: Vec<String> =
            self.transport.shared_cmd("ZRANGEBYSCORE", redis::cmd("ZRANGEBYSCORE").arg(keys.members_expiry()).arg("-inf").arg(now)).await?;
        if !expired.is_empty() {
            let mut pipe = redis::pipe();
            pipe.atomic();
            pipe.cmd("HDEL").arg(keys.members()).arg(&expired).ignore();
            pipe.cmd("ZREM").arg(keys.members_expiry()).arg(&expired).ignore();
            self.transport.shared.lock().await.query::<()>("forget members", Request::Pipe(&pipe)).await.map_err(|f| f.into_error("forget members"))?;
        }
        let all: Vec<Vec<u8>> = self.transport.shared_cmd("HVALS", redis::cmd("HVALS").arg(keys.members())).await?;
        let mut members: Vec<MemberInfo> = all.iter().filter_map(|b| protocol::decode(&self.transport.config.run, b).ok()).collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(members)
    }

    async fn leave(&self, id: &str) -> Result<(), TransportError> {
        let keys = &self.transport.keys;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("HDEL").arg(keys.members()).arg(id).ignore();
        pipe.cmd("ZREM").arg(keys.members_expiry()).arg(id).ignore();
        self.transport.shared.lock().await.query::<()>("leave", Request::Pipe(&pipe)).await.map_err(|f| f.into_error("leave"))
    }

    async fn request_checkpoint(&self) -> Result<(), TransportError> {
        let _: () = self.transport.shared_cmd("SET checkpoint", redis::cmd("SET").arg(self.transport.keys.checkpoint()).arg(1)).await?;
        Ok(())
    }

    async fn take_checkpoint_request(&self) -> Result<bool, TransportError> {
        let v: Option<String> = self.transport.shared_cmd("GETDEL checkpoint", redis::cmd("GETDEL").arg(self.transport.keys.checkpoint())).await?;
        Ok(v.is_some())
    }

    async fn publish_info(&self, info: &RunInfo) -> Result<(), TransportError> {
        self.set_message(&self.transport.keys.info(), info).await
    }

    async fn info(&self) -> Result<Option<RunInfo>, TransportError> {
        self.get_message(&self.transport.keys.info()).await
    }

    async fn announce_weights(&self, announcement: &WeightAnnouncement) -> Result<(), TransportError> {
        self.set_message(&self.transport.keys.weights(), announcement).await
    }

    async fn weights(&self) -> Result<Option<WeightAnnouncement>, TransportError> {
        self.get_message(&self.transport.keys.weights()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_and_succeed() {
        assert!(id_less("5-3", "5-4"));
        assert!(id_less("5-9", "6-0"));
        assert!(!id_less("6-0", "6-0"));
        assert_eq!(next_id("5-3"), "5-4");
        assert_eq!(next_id(&format!("5-{}", u64::MAX)), "6-0");
    }

    #[test]
    fn keys_share_the_run_hash_tag() {
        let k = Keys::new("r1");
        assert_eq!(k.stream(Queue::Prompts), "rlvr:{r1}:prompts");
        assert_eq!(k.dead(), "rlvr:{r1}:dead");
    }
}
