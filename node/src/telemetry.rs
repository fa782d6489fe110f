//! Logs (tracing) and metrics (Prometheus text via the `metrics` crate).
//! Names follow `cellpay_<area>_<what>_<unit>`; labels are low-cardinality only.

use std::time::Duration;

use cluster::Shards;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "cellpay_http_requests_total";
pub const HTTP_DURATION: &str = "cellpay_http_request_duration_seconds";
pub const TRANSFERS: &str = "cellpay_transfers_total";
pub const BATCH_SAGA_ITEMS: &str = "cellpay_batch_saga_items_total";
pub const RAFT_TERM: &str = "cellpay_raft_term";
pub const RAFT_LAST_LOG: &str = "cellpay_raft_last_log_index";
pub const RAFT_APPLIED: &str = "cellpay_raft_applied_index";
pub const RAFT_COMMIT: &str = "cellpay_raft_commit_index";
pub const RAFT_SNAPSHOT: &str = "cellpay_raft_snapshot_index";
pub const RAFT_LEADER: &str = "cellpay_raft_is_leader";
pub const SNAPSHOTS_BUILT: &str = "cellpay_raft_snapshots_built_total";
pub const SNAPSHOT_BYTES: &str = "cellpay_raft_snapshot_bytes";
pub const SNAPSHOT_ENCODE: &str = "cellpay_raft_snapshot_encode_seconds";
pub const SNAPSHOT_PERSIST: &str = "cellpay_raft_snapshot_persist_seconds";
pub const BUILD_INFO: &str = "cellpay_build_info";

/// Every metric this node exports, for the golden test and the dashboard (with the actor
/// layer's, `actors::monitor::METRIC_NAMES`).
#[cfg_attr(not(test), allow(dead_code))] // read by the golden test
pub const METRIC_NAMES: &[&str] = &[
    BUILD_INFO,
    HTTP_REQUESTS,
    HTTP_DURATION,
    TRANSFERS,
    BATCH_SAGA_ITEMS,
    RAFT_TERM,
    RAFT_LAST_LOG,
    RAFT_COMMIT,
    RAFT_APPLIED,
    RAFT_SNAPSHOT,
    RAFT_LEADER,
    SNAPSHOTS_BUILT,
    SNAPSHOT_BYTES,
    SNAPSHOT_ENCODE,
    SNAPSHOT_PERSIST,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub fn init_tracing(node_id: u64) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(
        node_id,
        version = env!("CARGO_PKG_VERSION"),
        "cellpay node starting"
    );
}

pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)?
        .install_recorder()?;
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by route and status"
    );
    metrics::describe_counter!(TRANSFERS, "Transfers by kind and outcome");
    metrics::describe_counter!(
        BATCH_SAGA_ITEMS,
        "Cross-shard items of batch requests: answered in lockstep, or driven alone"
    );
    metrics::describe_gauge!(RAFT_TERM, "Current Raft term per shard");
    metrics::describe_gauge!(RAFT_LAST_LOG, "Last Raft log index per shard");
    metrics::describe_gauge!(RAFT_COMMIT, "Last committed Raft log index per shard");
    metrics::describe_gauge!(RAFT_APPLIED, "Last applied Raft log index per shard");
    metrics::describe_gauge!(RAFT_SNAPSHOT, "Last snapshot's log index per shard");
    metrics::describe_gauge!(RAFT_LEADER, "1 when this node leads the shard's group");
    metrics::describe_counter!(
        SNAPSHOTS_BUILT,
        "Snapshots this node has built per shard since it started"
    );
    metrics::describe_gauge!(
        SNAPSHOT_BYTES,
        metrics::Unit::Bytes,
        "Size of the last snapshot this node built per shard"
    );
    metrics::describe_gauge!(
        SNAPSHOT_ENCODE,
        metrics::Unit::Seconds,
        "How long the last snapshot took to encode per shard (the replica's applies wait)"
    );
    metrics::describe_gauge!(
        SNAPSHOT_PERSIST,
        metrics::Unit::Seconds,
        "How long the last snapshot took to write and fsync per shard"
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

pub fn record_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    let [route, _, status] = labels;
    metrics::histogram!(HTTP_DURATION, &[route, status]).record(elapsed.as_secs_f64());
}

pub fn record_transfer(kind: &'static str, outcome: &'static str) {
    metrics::counter!(TRANSFERS, "kind" => kind, "outcome" => outcome).increment(1);
}

/// Counts a batch request's cross-shard items by how they were answered.
pub fn record_batch_sagas(lockstep: usize, alone: usize) {
    metrics::counter!(BATCH_SAGA_ITEMS, "path" => "lockstep").increment(lockstep as u64);
    metrics::counter!(BATCH_SAGA_ITEMS, "path" => "alone").increment(alone as u64);
}

/// Copies every group's Raft metrics into gauges (called on each scrape).
pub fn refresh_raft_gauges(shards: &Shards) {
    for (index, group) in shards.groups().iter().enumerate() {
        let shard = index.to_string();
        let m = group.raft.metrics().borrow().clone();
        let as_f64 = |v: Option<u64>| v.map_or(0.0, |v| v as f64);
        metrics::gauge!(RAFT_TERM, "shard" => shard.clone()).set(m.current_term as f64);
        metrics::gauge!(RAFT_LAST_LOG, "shard" => shard.clone()).set(as_f64(m.last_log_index));
        metrics::gauge!(RAFT_COMMIT, "shard" => shard.clone()).set(group.commit_index() as f64);
        metrics::gauge!(RAFT_APPLIED, "shard" => shard.clone())
            .set(as_f64(m.last_applied.map(|id| id.index)));
        metrics::gauge!(RAFT_SNAPSHOT, "shard" => shard.clone())
            .set(as_f64(m.snapshot.map(|id| id.index)));
        let leading = m.current_leader == Some(shards.node_id());
        metrics::gauge!(RAFT_LEADER, "shard" => shard.clone()).set(if leading { 1.0 } else { 0.0 });
        let snapshots = group.reader.snapshot_stats();
        metrics::counter!(SNAPSHOTS_BUILT, "shard" => shard.clone()).absolute(snapshots.built);
        metrics::gauge!(SNAPSHOT_BYTES, "shard" => shard.clone()).set(snapshots.bytes as f64);
        metrics::gauge!(SNAPSHOT_ENCODE, "shard" => shard.clone())
            .set(Duration::from_millis(snapshots.encode_ms).as_secs_f64());
        metrics::gauge!(SNAPSHOT_PERSIST, "shard" => shard)
            .set(Duration::from_millis(snapshots.persist_ms).as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: metric names are a stable interface for dashboards and alerts. Method: compare the
    /// list with the golden file (regenerate with UPDATE_GOLDEN=1) and check the naming rules.
    #[test]
    fn metric_names_golden() {
        let all = METRIC_NAMES
            .iter()
            .chain(actors::monitor::METRIC_NAMES.iter());
        for name in all.clone() {
            assert!(name.starts_with("cellpay_"), "{name}");
        }
        let text: String = all.map(|name| format!("{name}\n")).collect();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/metric_names.txt");
        if std::env::var("UPDATE_GOLDEN").is_ok() {
            std::fs::write(path, &text).expect("write golden");
        }
        let golden = std::fs::read_to_string(path).expect("golden file exists");
        assert_eq!(
            text, golden,
            "metric names changed: review, then UPDATE_GOLDEN=1"
        );
    }
}
