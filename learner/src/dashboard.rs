//! The operator dashboard, served by the learner (`rlvr train --dashboard ADDR`, `rlvr learner
//! --dashboard ADDR`) beside `/metrics`, `/healthz` and `/readyz`:
//!
//! - `/`: the page (charts under verl's metric names, members, queues, weight syncs, the rollout
//!   viewer, run controls); its script, styles and uPlot are embedded in the binary, and every
//!   response carries `Content-Security-Policy: default-src 'self'`, so nothing is fetched elsewhere.
//! - `/api/history`: every recorded step (from `metrics.jsonl`, so a reload shows the whole run).
//! - `/api/events`: server-sent events: `step`, `status` (state, members, queues, weights, every
//!   second), `rollouts` (new groups to view), `eval`.
//! - `/api/status`, `/api/rollouts`: the last status and the last rollout groups.
//! - `POST /api/control/{pause|resume|drain|stop|checkpoint}`: needs `Authorization: Bearer TOKEN`
//!   where TOKEN is `RLVR_DASHBOARD_TOKEN`; without a token set the dashboard is read-only.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::Stream;
use rlvr_common::protocol::RunState;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{RunTelemetry, RunView, history};

const INDEX: &str = include_str!("../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../assets/dashboard/app.js");
const STYLE: &str = include_str!("../assets/dashboard/style.css");
const UPLOT_JS: &str = include_str!("../assets/dashboard/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/dashboard/uplot/uPlot.min.css");

/// Every response's policy: scripts, styles, connections and images from this origin only.
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The dashboard's state.
struct Dashboard {
    telemetry: Arc<RunTelemetry>,
    view: Arc<dyn RunView>,
    /// The bearer token the controls need; `None`: read-only.
    token: Option<String>,
}

/// Serves the dashboard and the metrics endpoints on `addr` until `shutdown`; returns the bound
/// address (port 0 picks one) and starts reading the run's status every second.
pub async fn serve(
    addr: &str,
    telemetry: Arc<RunTelemetry>,
    view: Arc<dyn RunView>,
    token: Option<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let token = token.filter(|t| !t.is_empty());
    let endpoints = telemetry.endpoints(view.clone());
    telemetry.spawn_status_task(view.clone(), shutdown.clone());
    let controls = token.is_some();
    let state = Arc::new(Dashboard { telemetry, view, token });
    let app = router(state).merge(endpoints.router()).layer(axum::middleware::map_response(secure_headers));
    let (local, _task) = rlvr_common::observe::serve(addr, app, shutdown).await.map_err(|e| anyhow::anyhow!("binding the dashboard to {addr}: {e}"))?;
    eprintln!("dashboard: http://{local}/ ({})", if controls { "controls need the bearer token in RLVR_DASHBOARD_TOKEN" } else { "read-only: set RLVR_DASHBOARD_TOKEN for the controls" });
    Ok(local)
}

fn router(state: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/uplot/uPlot.iife.min.js", get(|| async { asset("text/javascript; charset=utf-8", UPLOT_JS) }))
        .route("/uplot/uPlot.min.css", get(|| async { asset("text/css; charset=utf-8", UPLOT_CSS) }))
        // No icon: answered, so browsers log no failed load.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/history", get(api_history))
        .route("/api/status", get(api_status))
        .route("/api/rollouts", get(api_rollouts))
        .route("/api/events", get(api_events))
        .route("/api/control/{action}", post(api_control))
        .with_state(state)
}

async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn api_history(State(d): State<Arc<Dashboard>>) -> Response {
    let run_dir = d.telemetry.run_dir.clone();
    match tokio::task::spawn_blocking(move || history(&run_dir)).await {
        Ok(steps) => axum::Json(json!({ "run": d.telemetry.run_name, "steps": steps, "controls": d.token.is_some() })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reading the history: {e}")).into_response(),
    }
}

async fn api_status(State(d): State<Arc<Dashboard>>) -> Response {
    match d.telemetry.last_status() {
        Some(s) => axum::Json(s).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no status read yet").into_response(),
    }
}

async fn api_rollouts(State(d): State<Arc<Dashboard>>) -> Response {
    axum::Json(d.telemetry.groups()).into_response()
}

async fn api_events(State(d): State<Arc<Dashboard>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = d.telemetry.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((Ok(Event::default().event(e.name).data(e.data)), rx)),
                // A slow client skips what it missed (a reload fetches the history).
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Whether `headers` carry the bearer token (compared in constant time).
fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn api_control(State(d): State<Arc<Dashboard>>, Path(action): Path<String>, headers: HeaderMap) -> Response {
    let Some(token) = d.token.as_deref() else {
        return (StatusCode::FORBIDDEN, "read-only: the learner was started without RLVR_DASHBOARD_TOKEN\n").into_response();
    };
    if !authorised(&headers, token) {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a valid bearer token is needed\n").into_response();
    }
    let done = match action.as_str() {
        "pause" => d.view.set_state(RunState::Paused).await,
        "resume" => d.view.set_state(RunState::Running).await,
        "drain" => d.view.set_state(RunState::Draining).await,
        "stop" => d.view.set_state(RunState::Stopped).await,
        "checkpoint" => d.view.request_checkpoint().await,
        other => return (StatusCode::NOT_FOUND, format!("unknown control `{other}`: pause, resume, drain, stop or checkpoint\n")).into_response(),
    };
    match done {
        Ok(()) => {
            tracing::info!(action, "run control from the dashboard");
            axum::Json(json!({ "ok": true, "action": action })).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{action} failed: {e:#}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_authorises() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(authorised(&with("Bearer s3cret"), "s3cret"));
        assert!(!authorised(&with("Bearer s3cre"), "s3cret"));
        assert!(!authorised(&with("Bearer s3cretx"), "s3cret"));
        assert!(!authorised(&with("Basic s3cret"), "s3cret"));
        assert!(!authorised(&HeaderMap::new(), "s3cret"));
    }
}
