//! What every distributed process does besides its work: register with a heartbeat, watch the run's
//! state, and wait for the learner to publish the run before joining it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Control, TransportError};
use crate::protocol::{MemberInfo, RunInfo, RunState};

/// Heartbeats `member()` every `every` (it expires after three missed beats) and cancels `shutdown`
/// when the run's state becomes `stopped`. Leaves the registry when `shutdown` fires.
pub fn spawn_membership<C, F>(control: Arc<C>, member: F, every: Duration, shutdown: CancellationToken) -> tokio::task::JoinHandle<()>
where
    C: Control + 'static,
    F: Fn() -> MemberInfo + Send + 'static,
{
    tokio::spawn(async move {
        let id = member().id;
        loop {
            let m = member();
            if let Err(e) = control.heartbeat(&m, every * 3).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
            match control.state().await {
                Ok(RunState::Stopped) => {
                    tracing::info!("the run is stopped; shutting down");
                    shutdown.cancel();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the run state"),
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
        let _ = control.leave(&id).await;
    })
}

/// Waits until the learner has published the run (`None` if `shutdown` fires first).
pub async fn wait_for_run<C: Control>(control: &C, shutdown: &CancellationToken) -> Result<Option<RunInfo>, TransportError> {
    let mut logged = false;
    loop {
        if let Some(info) = control.info().await? {
            return Ok(Some(info));
        }
        if !logged {
            tracing::info!("waiting for the learner to publish the run");
            logged = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// This machine's name, for the member registry.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A member id unique to this process: `{role}-{host}-{pid}`.
pub fn member_id(role: &str) -> String {
    format!("{role}-{}-{}", hostname(), std::process::id())
}
