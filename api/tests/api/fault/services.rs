//! Worker processes and the shared services, started and stopped the hard way.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use serde_json::Value;
use sqlx::PgPool;
use tokio::process::{Child, Command};

use crate::helpers::{TestApp, database_url};

/// A real `worker` process consuming this test's queue, and the file its log lines go to: a
/// test that fails while workers run prints the end of that log, which says what they were
/// doing (or failing at).
pub struct WorkerProcess(Child, PathBuf);

/// How much of the workers' log a failing test prints.
const LOG_LINES_SHOWN: usize = 40;

/// The logs already printed: workers started together share one, which a failure shows once.
static LOGS_SHOWN: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if !std::thread::panicking()
            || !LOGS_SHOWN
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(self.1.clone())
        {
            return;
        }
        let log = std::fs::read_to_string(&self.1).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_LINES_SHOWN)..];
        eprintln!(
            "the workers' last {} log lines ({}):\n{}",
            tail.len(),
            self.1.display(),
            tail.join("\n")
        );
    }
}

fn worker_binary() -> PathBuf {
    let path = std::env::var_os("ORDERFLOW_WORKER_BIN").map_or_else(
        || {
            // target/<profile>/deps/api-<hash> → target/<profile>/worker
            let exe = std::env::current_exe().expect("test binary path");
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("target dir")
                .join("worker")
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p worker`",
        path.display()
    );
    path
}

impl WorkerProcess {
    /// Starts a worker whose JSON log lines about handled messages go to `log` (appended).
    pub fn start(app: &TestApp, pool: &PgPool, log: &Path) -> Self {
        Self::start_with(app, pool, log, &[])
    }

    /// `count` of them, logging to the same file.
    pub fn several(count: usize, app: &TestApp, pool: &PgPool, log: &Path) -> Vec<Self> {
        (0..count).map(|_| Self::start(app, pool, log)).collect()
    }

    /// The same, with more settings in its environment.
    pub fn start_with(app: &TestApp, pool: &PgPool, log: &Path, env: &[(&str, &str)]) -> Self {
        let broker = &app.settings().broker;
        let log_path = log.to_path_buf();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("worker log");
        let child = Command::new(worker_binary())
            .env("DATABASE_URL", database_url(pool))
            .env("AMQP_EXCHANGE", &broker.exchange)
            .env("AMQP_QUEUE", &broker.queue)
            .env("LOG_DIR", "")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn,worker::delivery=info")
            .env("LOG_FORMAT", "json")
            .stdout(log)
            .env("WATCHDOG_INTERVAL_SECS", "2")
            .env("STUCK_AFTER_SECS", "5")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("worker starts");
        Self(child, log_path)
    }

    /// SIGKILL: no chance to finish anything.
    pub async fn kill_hard(mut self) {
        self.0.kill().await.expect("kill -9");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), self.0.wait())
            .await
            .expect("worker exits after SIGTERM")
            .expect("exit status")
    }
}

/// Where this test's worker processes write their JSON log lines.
pub fn worker_log(app: &TestApp) -> PathBuf {
    std::env::temp_dir().join(format!("{}.log", app.settings().broker.queue))
}

/// What the workers saw, from their log lines about handled messages.
pub struct WorkerLog {
    /// Deliveries the broker flagged as redelivered.
    pub redelivered: usize,
    /// Deliveries that found their effect already committed (the inbox dropped them).
    pub duplicates: usize,
}

impl WorkerLog {
    pub fn read(log: &Path) -> Self {
        let lines = std::fs::read_to_string(log).expect("worker log");
        let handled: Vec<Value> = lines
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        Self {
            redelivered: handled.iter().filter(|l| l["redelivered"] == true).count(),
            duplicates: handled
                .iter()
                .filter(|l| l["outcome"].as_str() == Some("Duplicate"))
                .count(),
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}

async fn wait_for_port(port: u16, up: bool) {
    for _ in 0..300 {
        if listening(port) == up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "port {port} did not become {}",
        if up { "reachable" } else { "closed" }
    );
}

/// RabbitMQ's application stopped until `start` (or drop, should the test fail first).
pub struct BrokerOutage {
    running: bool,
}

impl BrokerOutage {
    pub async fn begin() -> Self {
        run("rabbitmqctl", &["-q", "stop_app"]);
        wait_for_port(5672, false).await;
        Self { running: false }
    }

    pub async fn end(mut self) {
        run("rabbitmqctl", &["-q", "start_app"]);
        wait_for_port(5672, true).await;
        self.running = true;
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        if !self.running {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["-q", "start_app"])
                .status();
        }
    }
}

fn postgres_cluster() -> String {
    std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut versions| versions.next())
        .and_then(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .expect("a PostgreSQL cluster under /etc/postgresql")
}

/// PostgreSQL stopped until `end` (or drop).
pub struct DatabaseOutage {
    running: bool,
}

impl DatabaseOutage {
    pub async fn begin() -> Self {
        run(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                &postgres_cluster(),
                "main",
                "stop",
                "-m",
                "fast",
            ],
        );
        wait_for_port(5432, false).await;
        Self { running: false }
    }

    pub async fn end(mut self) {
        run(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                &postgres_cluster(),
                "main",
                "start",
            ],
        );
        wait_for_port(5432, true).await;
        self.running = true;
    }
}

impl Drop for DatabaseOutage {
    fn drop(&mut self) {
        if !self.running {
            let _ = std::process::Command::new("pg_ctlcluster")
                .args([
                    "--skip-systemctl-redirect",
                    &postgres_cluster(),
                    "main",
                    "start",
                ])
                .status();
        }
    }
}
