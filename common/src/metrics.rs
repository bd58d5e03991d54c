//! Prometheus metrics: one recorder per process with explicit histogram buckets (without
//! them the exporter renders summaries, which cannot be aggregated across processes), its
//! periodic upkeep, and the `/metrics` scrape endpoint.

use std::{sync::OnceLock, time::Duration};

use anyhow::Context;
use axum::{Router, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Bucket bounds in seconds for every histogram: request and handling times (milliseconds)
/// up to queue lag during an outage (minutes).
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Bucket bounds for the worker's batch sizes (commands applied per transaction).
const BATCH_SIZE_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
/// Upkeep drains histogram samples into buckets; without it their memory only grows.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder on first use and returns the handle that renders it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .expect("the bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("orderflow_worker_batch_size".into()),
                    &BATCH_SIZE_BUCKETS,
                )
                .expect("the bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawning the metrics upkeep thread");
            handle
        })
        .clone()
}

/// `GET /metrics` in the Prometheus text format.
pub fn router() -> Router {
    let handle = handle();
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    )
}

/// Binds the scrape listener; failing here stops start-up with the fix.
pub async fn listen(address: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.with_context(|| {
        format!(
            "cannot listen for metrics scrapes on {address}: is another process using the port? \
             give each process its own address, or set it empty to turn the listener off"
        )
    })
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, shutdown: CancellationToken) {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "metrics at /metrics");
    }
    let served = axum::serve(listener, router())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "metrics listener failed");
    }
}
