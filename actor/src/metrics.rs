//! An actor process's Prometheus metrics: the weight version it samples with, its weight syncs
//! (count, failures, duration, bytes) and the groups it has sampled. They are copied from the weight
//! follower's [`SyncStats`] and the loop's counter when scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rlvr_common::observe::prometheus_client::metrics::counter::Counter;
use rlvr_common::observe::prometheus_client::metrics::gauge::Gauge;
use rlvr_common::observe::prometheus_client::metrics::histogram::Histogram;
use rlvr_common::observe::prometheus_client::registry::{Registry, Unit};
use rlvr_common::observe::{Refresh, duration_histogram};
use rlvr_common::weights::tcp::SyncStats;

/// Registers the actor's metrics in `registry` and returns the refresh that updates them from `sync`
/// and `groups_done`.
pub fn register(registry: &mut Registry, sync: Arc<Mutex<SyncStats>>, groups_done: Arc<AtomicU64>) -> Refresh {
    let version: Gauge = Gauge::default();
    let syncs: Counter = Counter::default();
    let failures: Counter = Counter::default();
    let bytes: Counter = Counter::default();
    let seconds: Histogram = duration_histogram();
    let groups: Counter = Counter::default();
    registry.register("rlvr_actor_weight_version", "The weight version this actor samples with (-1 before the first)", version.clone());
    registry.register("rlvr_weight_syncs", "Weight versions fetched and verified", syncs.clone());
    registry.register("rlvr_weight_sync_failures", "Weight fetches that failed (the actor kept its weights)", failures.clone());
    registry.register_with_unit("rlvr_weight_sync", "Weight bytes fetched", Unit::Bytes, bytes.clone());
    registry.register_with_unit("rlvr_weight_sync_duration", "Time to fetch and verify one weight version", Unit::Seconds, seconds.clone());
    registry.register("rlvr_actor_groups", "Rollout groups sampled", groups.clone());
    // Counters only go up: each refresh adds what changed since the last.
    let seen = Mutex::new((0u64, 0u64, 0u64, 0u64));
    Arc::new(move || {
        let Ok(mut seen) = seen.lock() else { return };
        if let Ok(mut s) = sync.lock() {
            version.set(s.last_version.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)));
            syncs.inc_by(s.syncs.saturating_sub(seen.0));
            failures.inc_by(s.failures.saturating_sub(seen.1));
            bytes.inc_by(s.bytes.saturating_sub(seen.2));
            (seen.0, seen.1, seen.2) = (s.syncs, s.failures, s.bytes);
            for x in s.recent_seconds.drain(..) {
                seconds.observe(x);
            }
        }
        let n = groups_done.load(Ordering::Relaxed);
        groups.inc_by(n.saturating_sub(seen.3));
        seen.3 = n;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_copy_the_follower_and_loop_state() {
        let mut registry = Registry::default();
        let sync: Arc<Mutex<SyncStats>> = Arc::default();
        let groups = Arc::new(AtomicU64::new(0));
        let refresh = register(&mut registry, sync.clone(), groups.clone());
        let text = |refresh: &Refresh| {
            refresh();
            let mut out = String::new();
            rlvr_common::observe::prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        assert!(text(&refresh).contains("rlvr_actor_weight_version -1"));
        {
            let mut s = sync.lock().unwrap();
            s.syncs = 2;
            s.bytes = 1000;
            s.last_version = Some(2);
            s.recent_seconds = vec![0.5, 0.25];
        }
        groups.store(5, Ordering::Relaxed);
        let out = text(&refresh);
        assert!(out.contains("rlvr_actor_weight_version 2"), "{out}");
        assert!(out.contains("rlvr_weight_syncs_total 2"), "{out}");
        assert!(out.contains("rlvr_weight_sync_bytes_total 1000"), "{out}");
        assert!(out.contains("rlvr_weight_sync_duration_seconds_count 2"), "{out}");
        assert!(out.contains("rlvr_actor_groups_total 5"), "{out}");
        // A second scrape with nothing new adds nothing.
        let again = text(&refresh);
        assert!(again.contains("rlvr_weight_syncs_total 2") && again.contains("rlvr_actor_groups_total 5"), "{again}");
    }
}
