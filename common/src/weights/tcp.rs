//! Weights across processes: the learner serves each version over TCP; an actor fetches the version the
//! control plane announces, checks its SHA-256 against the announcement, and only then uses it.
//!
//! The exchange, one version per connection:
//! - request: `RLVRW1` and the wanted version (u64, little-endian);
//! - reply: a u32 (LE) length and a MessagePack [`WireHeader`] (the version, its checksum and the
//!   tensors' names and shapes, or an error), then each tensor's f32 values, little-endian, in the
//!   header's order.
//!
//! Every phase has a deadline (connect, header, transfer) and a failed fetch leaves the actor on the
//! weights it has. This is the simple, correct transfer; the weight-sync work makes it fast (buckets,
//! relay, deltas, NCCL).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{InProcessWeights, WeightUpdate, WeightsError};
use crate::checkpoint::HostTensor;
use crate::protocol::WeightAnnouncement;
use crate::transport::Control;

const MAGIC: &[u8; 6] = b"RLVRW1";
const MAX_HEADER_BYTES: usize = 64 << 20;
const MAX_TENSORS: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct WireHeader {
    #[serde(default)]
    error: Option<String>,
    version: u64,
    checksum: String,
    tensors: Vec<(String, Vec<u64>)>,
}

/// The learner's weight server: holds the newest version and the one before (an actor that asked for
/// it just before a publish still gets it).
#[derive(Debug, Clone)]
pub struct WeightServer {
    held: Arc<RwLock<Vec<WeightUpdate>>>,
    address: SocketAddr,
}

impl WeightServer {
    /// Listens on `bind` (`host:port`; port 0 picks a free one) until `shutdown`.
    pub async fn bind(bind: &str, shutdown: CancellationToken) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let address = listener.local_addr()?;
        let held: Arc<RwLock<Vec<WeightUpdate>>> = Arc::default();
        let server = Self { held: held.clone(), address };
        tokio::spawn(async move {
            loop {
                let (socket, peer) = tokio::select! {
                    () = shutdown.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "weight server: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let held = held.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(socket, &held).await {
                        tracing::warn!(%peer, error = %e, "weight server: transfer failed");
                    }
                });
            }
        });
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Serves `update` from now on (and the previous version for a while).
    pub fn publish(&self, update: WeightUpdate) {
        if let Ok(mut held) = self.held.write() {
            held.retain(|u| u.version != update.version);
            held.push(update);
            let excess = held.len().saturating_sub(2);
            held.drain(..excess);
        }
    }
}

async fn serve(mut socket: TcpStream, held: &RwLock<Vec<WeightUpdate>>) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut request = [0u8; 14];
    tokio::time::timeout(Duration::from_secs(30), socket.read_exact(&mut request))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request within 30 s"))??;
    if &request[..6] != MAGIC {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a weight request"));
    }
    let version = u64::from_le_bytes(request[6..].try_into().expect("8 bytes"));
    let update = held.read().ok().and_then(|h| h.iter().find(|u| u.version == version).cloned());
    let mut out = BufWriter::with_capacity(1 << 20, socket);
    let header = match &update {
        Some(u) => WireHeader {
            error: None,
            version,
            checksum: u.checksum.clone(),
            tensors: u.tensors.iter().map(|(n, t)| (n.clone(), t.shape.iter().map(|&d| d as u64).collect())).collect(),
        },
        None => {
            let have: Vec<u64> = held.read().map(|h| h.iter().map(|u| u.version).collect()).unwrap_or_default();
            WireHeader { error: Some(format!("version {version} is not held (held: {have:?})")), version, checksum: String::new(), tensors: vec![] }
        }
    };
    let bytes = rmp_serde::to_vec_named(&header).map_err(std::io::Error::other)?;
    out.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
    out.write_all(&bytes).await?;
    if let Some(u) = update {
        for (_, t) in u.tensors.iter() {
            out.write_all(bytemuck::cast_slice::<f32, u8>(&t.data)).await?;
        }
    }
    out.flush().await?;
    out.shutdown().await
}

/// How long each phase of a fetch may take.
#[derive(Debug, Clone, Copy)]
pub struct FetchDeadlines {
    pub connect: Duration,
    pub header: Duration,
    pub transfer: Duration,
}

impl Default for FetchDeadlines {
    fn default() -> Self {
        Self { connect: Duration::from_secs(10), header: Duration::from_secs(30), transfer: Duration::from_secs(600) }
    }
}

/// Fetches the announced version and verifies it against the announced checksum.
pub async fn fetch(announcement: &WeightAnnouncement, deadlines: FetchDeadlines) -> Result<WeightUpdate, WeightsError> {
    let a = announcement;
    let deadline = |phase, limit| WeightsError::Deadline { version: a.version, address: a.address.clone(), phase, limit };
    let io = |e: std::io::Error| WeightsError::Transport(format!("weights of version {} from {}: {e}", a.version, a.address));
    let mut socket = tokio::time::timeout(deadlines.connect, TcpStream::connect(&a.address))
        .await
        .map_err(|_| deadline("connect", deadlines.connect))?
        .map_err(io)?;
    socket.set_nodelay(true).map_err(io)?;
    let mut request = MAGIC.to_vec();
    request.extend_from_slice(&a.version.to_le_bytes());
    socket.write_all(&request).await.map_err(io)?;
    let header = tokio::time::timeout(deadlines.header, async {
        let mut len = [0u8; 4];
        socket.read_exact(&mut len).await?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_HEADER_BYTES {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("header of {len} bytes")));
        }
        let mut bytes = vec![0u8; len];
        socket.read_exact(&mut bytes).await?;
        rmp_serde::from_slice::<WireHeader>(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })
    .await
    .map_err(|_| deadline("header", deadlines.header))?
    .map_err(io)?;
    if let Some(e) = header.error {
        return Err(WeightsError::Transport(format!("the weight server at {}: {e}", a.address)));
    }
    if header.version != a.version || header.checksum != a.checksum {
        return Err(WeightsError::Transport(format!(
            "the weight server at {} offers version {} ({}), not the announced {} ({})",
            a.address, header.version, header.checksum, a.version, a.checksum
        )));
    }
    if header.tensors.len() > MAX_TENSORS {
        return Err(WeightsError::Transport(format!("{} tensors in a weight header", header.tensors.len())));
    }
    let mut total: u64 = 0;
    for (_, shape) in &header.tensors {
        let n = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).and_then(|n| n.checked_mul(4));
        total = n.and_then(|n| total.checked_add(n)).ok_or_else(|| WeightsError::Transport("tensor sizes overflow".into()))?;
    }
    if total != a.bytes {
        return Err(WeightsError::Transport(format!("the header describes {total} bytes, the announcement {}", a.bytes)));
    }
    let tensors = tokio::time::timeout(deadlines.transfer, async {
        let mut tensors = Vec::with_capacity(header.tensors.len());
        for (name, shape) in header.tensors {
            let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
            let mut data = vec![0f32; shape.iter().product()];
            socket.read_exact(bytemuck::cast_slice_mut::<f32, u8>(&mut data)).await?;
            tensors.push((name, HostTensor::new(shape, data)));
        }
        Ok::<_, std::io::Error>(tensors)
    })
    .await
    .map_err(|_| deadline("transfer", deadlines.transfer))?
    .map_err(io)?;
    let update = WeightUpdate { version: a.version, checksum: a.checksum.clone(), tensors: Arc::new(tensors) };
    tokio::task::spawn_blocking(move || update.verify().map(|()| update))
        .await
        .map_err(|e| WeightsError::Transport(format!("verifying weights: {e}")))?
}

/// What an actor's weight follower has done, for heartbeats and metrics.
#[derive(Debug, Clone, Default)]
pub struct SyncStats {
    pub syncs: u64,
    pub failures: u64,
    pub last_version: Option<u64>,
    pub last_seconds: f64,
    pub bytes: u64,
    pub last_error: Option<String>,
    /// Durations of the syncs since the metrics last took them (at most [`SyncStats::KEPT`]).
    pub recent_seconds: Vec<f64>,
}

impl SyncStats {
    pub const KEPT: usize = 256;
}

/// Follows the weights the control plane announces: fetches each new version, verifies it and makes it
/// current in `weights` (which the actor loop swaps in between batches). A failed fetch is retried at
/// the next poll; the actor keeps its weights meanwhile. What it does goes into `stats`.
pub fn follow<C: Control + 'static>(
    control: Arc<C>,
    weights: InProcessWeights,
    poll: Duration,
    deadlines: FetchDeadlines,
    stats: Arc<Mutex<SyncStats>>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let s = stats;
    tokio::spawn(async move {
        let mut failures_in_a_row = 0u32;
        loop {
            let announced = match control.weights().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the weight announcement");
                    None
                }
            };
            let have = weights.current().map(|u| (u.version, u.checksum));
            if let Some(a) = announced
                && have.as_ref().is_none_or(|(v, c)| *v != a.version || *c != a.checksum)
            {
                let t = Instant::now();
                match fetch(&a, deadlines).await {
                    Ok(update) => {
                        failures_in_a_row = 0;
                        tracing::info!(version = a.version, checksum = &a.checksum[..12], seconds = t.elapsed().as_secs_f64(), bytes = a.bytes, "fetched and verified weights");
                        weights.replace(update);
                        if let Ok(mut s) = s.lock() {
                            s.syncs += 1;
                            s.last_version = Some(a.version);
                            s.last_seconds = t.elapsed().as_secs_f64();
                            s.bytes += a.bytes;
                            if s.recent_seconds.len() < SyncStats::KEPT {
                                let seconds = s.last_seconds;
                                s.recent_seconds.push(seconds);
                            }
                        }
                    }
                    Err(e) => {
                        failures_in_a_row += 1;
                        tracing::warn!(version = a.version, error = %e, "weight fetch failed; keeping the current weights");
                        if let Ok(mut s) = s.lock() {
                            s.failures += 1;
                            s.last_error = Some(e.to_string());
                        }
                    }
                }
            }
            let wait = poll * 2u32.pow(failures_in_a_row.min(5));
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(version: u64, x: f32) -> WeightUpdate {
        WeightUpdate::new(version, vec![("w".into(), HostTensor::new(vec![2, 3], vec![x; 6])), ("b".into(), HostTensor::new(vec![3], vec![1.0, 2.0, 3.0]))])
    }

    fn announce(server: &WeightServer, u: &WeightUpdate) -> WeightAnnouncement {
        WeightAnnouncement { version: u.version, checksum: u.checksum.clone(), address: server.local_addr().to_string(), bytes: 36 }
    }

    #[tokio::test]
    async fn fetches_the_announced_version_bit_exactly() {
        let shutdown = CancellationToken::new();
        let server = WeightServer::bind("127.0.0.1:0", shutdown.clone()).await.unwrap();
        let u = update(3, 0.5);
        server.publish(u.clone());
        let got = fetch(&announce(&server, &u), FetchDeadlines::default()).await.unwrap();
        assert_eq!(got.version, 3);
        assert_eq!(*got.tensors, *u.tensors);
        // A version the server does not hold, or a checksum it does not match, is refused.
        let mut wrong = announce(&server, &u);
        wrong.version = 9;
        assert!(fetch(&wrong, FetchDeadlines::default()).await.unwrap_err().to_string().contains("not held"));
        let mut wrong = announce(&server, &u);
        wrong.checksum = "0".repeat(64);
        assert!(fetch(&wrong, FetchDeadlines::default()).await.is_err());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_silent_server_misses_the_header_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let _hold = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let a = WeightAnnouncement { version: 1, checksum: "0".repeat(64), address, bytes: 4 };
        let deadlines = FetchDeadlines { header: Duration::from_millis(200), ..Default::default() };
        let e = fetch(&a, deadlines).await.unwrap_err();
        assert!(matches!(e, WeightsError::Deadline { phase: "header", .. }), "{e}");
    }
}
