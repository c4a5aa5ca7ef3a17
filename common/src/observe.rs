//! What every process serves for operators (feature `observe`): Prometheus metrics in the OpenMetrics
//! text format at `/metrics`, `/healthz` (the process is alive; it checks nothing, so a probe never
//! restarts a pod because Redis blinked) and `/readyz` (the process can work: its own check, such as
//! Redis reachable and the model loaded).
//!
//! Metric names follow Prometheus's conventions: an `rlvr_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` on counters (added by the encoder), and label values from small
//! fixed sets (a phase, a queue, a reward kind, an outcome), never an id.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
pub use prometheus_client;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// A float gauge.
pub type GaugeF = Gauge<f64, std::sync::atomic::AtomicU64>;

/// A future returned by a readiness check.
pub type ReadyFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The readiness check of a process: `Err(why)` while it cannot work.
pub type ReadyCheck = Arc<dyn Fn() -> ReadyFuture + Send + Sync>;

/// Called before each scrape, to copy state kept elsewhere into the metrics.
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// How long `/readyz` waits for the check before it answers "not ready".
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets for durations from 1 ms to about 9 min (doubling).
pub fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// Ready once `joined` holds the run's control plane (set when the process can work) and while that
/// answers; `waiting` says what it waits for until then.
pub fn ready_when_joined<C: crate::transport::Control + 'static>(joined: Arc<std::sync::OnceLock<Arc<C>>>, waiting: &'static str) -> ReadyCheck {
    Arc::new(move || {
        let control = joined.get().cloned();
        Box::pin(async move {
            let control = control.ok_or(waiting)?;
            control.state().await.map(|_| ()).map_err(|e| format!("the control plane is unreachable: {e}"))
        })
    })
}

/// A readiness check that always passes.
pub fn always_ready() -> ReadyCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

/// The metrics registry and readiness check of one process, and the routes that serve them.
#[derive(Clone)]
pub struct Endpoints {
    registry: Arc<Registry>,
    ready: ReadyCheck,
    refresh: Option<Refresh>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").finish_non_exhaustive()
    }
}

impl Endpoints {
    pub fn new(registry: Registry, ready: ReadyCheck) -> Self {
        Self { registry: Arc::new(registry), ready, refresh: None }
    }

    /// Runs `refresh` before every scrape.
    pub fn with_refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = Some(refresh);
        self
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        if let Some(refresh) = &self.refresh {
            refresh();
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Whether the process can work, within [`READY_TIMEOUT`].
    pub async fn ready(&self) -> Result<(), String> {
        match tokio::time::timeout(READY_TIMEOUT, (self.ready)()).await {
            Ok(r) => r,
            Err(_) => Err(format!("the readiness check took over {READY_TIMEOUT:?}")),
        }
    }

    /// `/metrics`, `/healthz` and `/readyz`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }
}

async fn metrics(State(e): State<Endpoints>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], e.encode())
}

async fn readyz(State(e): State<Endpoints>) -> impl IntoResponse {
    match e.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

/// Binds `addr` and serves `router` until `shutdown` fires. Returns the bound address (bind port 0 to
/// have one chosen) and the server's task.
pub async fn serve(addr: &str, router: Router, shutdown: CancellationToken) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the HTTP server stopped");
        }
    });
    Ok((local, task))
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` when one is given (`--metrics-addr`), logging
/// where.
pub async fn serve_endpoints(addr: Option<&str>, endpoints: &Endpoints, shutdown: CancellationToken) -> std::io::Result<Option<SocketAddr>> {
    let Some(addr) = addr else { return Ok(None) };
    let (local, _task) = serve(addr, endpoints.router(), shutdown).await?;
    tracing::info!(address = %local, "serving /metrics, /healthz and /readyz");
    Ok(Some(local))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn endpoints_serve_metrics_health_and_readiness() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("rlvr_things", "Things done", counter.clone());
        counter.inc_by(3);
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ready.clone();
        let check: ReadyCheck = Arc::new(move || {
            let ok = r.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { if ok { Ok(()) } else { Err("model not loaded".into()) } })
        });
        let endpoints = Endpoints::new(registry, check);
        let shutdown = CancellationToken::new();
        let (addr, task) = serve("127.0.0.1:0", endpoints.router(), shutdown.clone()).await.unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let m = get("/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("rlvr_things_total 3"), "{m}");
        assert!(m.contains("# EOF"), "{m}");
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        let not_ready = get("/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503") && not_ready.contains("model not loaded"), "{not_ready}");
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        shutdown.cancel();
        task.await.unwrap();
    }
}
