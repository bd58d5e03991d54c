//! Open-loop load for `bench/run.sh`: places orders at a fixed rate, whatever the answers
//! take, so a slow server meets a growing queue instead of a politely waiting client (the
//! coordinated-omission trap of closed-loop tools). Each request's latency counts from the
//! moment it was due, not from when it was sent. Unlike oha, every order can name different
//! products. Prints one JSON line: requests due, answered, failed (by status), not sent (the
//! in-flight bound was reached), and latency percentiles of the successes in milliseconds.
//!
//! `cargo run --release -p api --example open_loop -- --rate 500 --secs 30 --products 30`

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use rand::Rng;
use serde_json::json;
use tokio::{sync::Semaphore, task::JoinSet};

#[derive(Parser)]
struct Args {
    /// The api's base address.
    #[arg(long, default_value = "http://127.0.0.1:8099")]
    url: String,
    /// The customer's bearer token.
    #[arg(long, env = "TOKEN")]
    token: String,
    /// Orders per second.
    #[arg(long)]
    rate: u32,
    #[arg(long, default_value_t = 10)]
    secs: u32,
    /// Orders name products BENCH-1 … BENCH-n, chosen at random.
    #[arg(long, default_value_t = 1)]
    products: u32,
    /// Lines per order (different products).
    #[arg(long, default_value_t = 1)]
    lines: u32,
    /// Requests waiting for an answer at most; a request due beyond it is not sent.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    worker::webhooks::install_tls_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_in_flight)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}/api/orders", args.url);
    let auth = format!("Bearer {}", args.token);
    let slots = Arc::new(Semaphore::new(args.max_in_flight));
    let due_total = u64::from(args.rate) * u64::from(args.secs);
    let interval = Duration::from_secs(1) / args.rate.max(1);
    let start = Instant::now();
    let mut requests = JoinSet::new();
    let mut tally = Tally::default();
    let mut not_sent = 0u64;
    for i in 0..due_total {
        let due = start + interval * u32::try_from(i)?;
        tokio::time::sleep_until(due.into()).await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            not_sent += 1;
            continue;
        };
        let request = client
            .post(&url)
            .header("authorization", &auth)
            .json(&order(args.products, args.lines));
        requests.spawn(async move {
            let answer = match request.send().await {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some(response.status().as_u16().to_string()),
                Err(_) => Some("no answer".to_owned()),
            };
            drop(slot);
            (answer, due.elapsed())
        });
        // Reap finished requests as we go, so their results do not pile up.
        while let Some(done) = requests.try_join_next() {
            tally.record(done?);
        }
    }
    while let Some(done) = requests.join_next().await {
        tally.record(done?);
    }
    let mut latencies = tally.latencies;
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{}",
        json!({
            "rate": args.rate,
            "due": due_total,
            "ok": tally.ok,
            "failed": tally.failed.values().sum::<u64>(),
            "failures": tally.failed,
            "not_sent": not_sent,
            "achieved_per_sec": tally.ok as f64 / start.elapsed().as_secs_f64(),
            "p50_ms": percentile(0.50),
            "p90_ms": percentile(0.90),
            "p99_ms": percentile(0.99),
            "max_ms": percentile(1.0),
        })
    );
    Ok(())
}

/// An order of `lines` consecutive products starting at a random one of `products`.
fn order(products: u32, lines: u32) -> serde_json::Value {
    let first = rand::rng().random_range(0..products.max(1));
    let items: Vec<_> = (0..lines.min(products).max(1))
        .map(|i| json!({ "product_sku": format!("BENCH-{}", (first + i) % products.max(1) + 1), "quantity": 1 }))
        .collect();
    json!({
        "items": items,
        "customer_name": "Bench",
        "customer_email": "bench@example.com",
        "shipping_address": "1 Load Street",
    })
}

#[derive(Default)]
struct Tally {
    ok: u64,
    /// Failed requests by HTTP status, or "no answer".
    failed: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

impl Tally {
    /// A request's failure (`None`: it succeeded) and latency.
    fn record(&mut self, (failure, latency): (Option<String>, Duration)) {
        match failure {
            None => {
                self.ok += 1;
                self.latencies.push(latency);
            }
            Some(failure) => *self.failed.entry(failure).or_default() += 1,
        }
    }
}
