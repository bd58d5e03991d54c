//! A webhook receiver for `bench/webhooks.sh` that takes a fixed time over each request, as
//! a remote system might: `POST /hook` answers 204 after `--delay-ms`; `GET /count` tells
//! how many it took. Requests are served concurrently, so the receiver never becomes the
//! bottleneck it imitates.
//!
//! `cargo run --release -p api --example slow_receiver -- --port 9300 --delay-ms 100`

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 9300)]
    port: u16,
    #[arg(long, default_value_t = 100)]
    delay_ms: u64,
}

#[derive(Clone)]
struct Receiver {
    delay: Duration,
    taken: Arc<AtomicU64>,
}

async fn take(State(receiver): State<Receiver>) -> StatusCode {
    tokio::time::sleep(receiver.delay).await;
    receiver.taken.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn count(State(receiver): State<Receiver>) -> String {
    receiver.taken.load(Ordering::Relaxed).to_string()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let receiver = Receiver {
        delay: Duration::from_millis(args.delay_ms),
        taken: Arc::new(AtomicU64::new(0)),
    };
    let app = Router::new()
        .route("/hook", post(take))
        .route("/count", get(count))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
