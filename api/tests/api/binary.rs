//! The real `api` binary, started for a test against the test's database and exchanges.

use std::{
    pin::Pin,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::StatusCode;
use sqlx::PgPool;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Child,
};

use crate::helpers::{TestApp, database_url, wait_until};

/// The `api` binary, running.
pub struct Api {
    pub process: Child,
    pub base: String,
    /// Everything it printed so far.
    pub output: Arc<Mutex<String>>,
}

/// Starts the `api` binary on a free port against the test's database and exchanges, with
/// `env` added; returns it once ready.
pub async fn start_api(app: &TestApp, pool: &PgPool, env: &[(&str, &str)]) -> Api {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("address")
        .port();
    let broker = &app.settings().broker;
    let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_api"))
        .env("DATABASE_URL", database_url(pool))
        .env("AMQP_EXCHANGE", &broker.exchange)
        .env("AMQP_QUEUE", &broker.queue)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("LOG_DIR", "")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("api starts");
    let output = Arc::new(Mutex::new(String::new()));
    let stdout = process.stdout.take().expect("stdout");
    let stderr = process.stderr.take().expect("stderr");
    for stream in [
        Box::pin(stdout) as Pin<Box<dyn AsyncRead + Send>>,
        Box::pin(stderr),
    ] {
        let output = output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut output = output.lock().expect("output");
                output.push_str(&line);
                output.push('\n');
            }
        });
    }
    let base = format!("http://127.0.0.1:{port}");
    wait_until("the api is ready", Duration::from_secs(20), || async {
        let ready = app.client.get(format!("{base}/health/ready")).send().await;
        ready.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    Api {
        process,
        base,
        output,
    }
}

pub fn terminate(api: &Api) {
    let pid = api.process.id().expect("running").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
}
