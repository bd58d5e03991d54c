//! `worker` binary: consumes order commands until Ctrl-C or SIGTERM (the default), or runs
//! an operator command.

use std::sync::Arc;

use clap::{Parser, Subcommand};
use common::{config::Settings, db, shutdown, telemetry};
use tokio_util::sync::CancellationToken;
use worker::{consumer::Worker, ops, watchdog};

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version,
    about = "Orderflow worker: applies order events from RabbitMQ to PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Migrate, then consume until Ctrl-C or SIGTERM (the default).
    Run,
    /// Print pending, stuck and unpublished counts and queue depths as JSON.
    Stats,
    /// Inspect or re-drive the dead-letter queue.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// Print dead letters (they stay in the queue) as JSON lines.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Publish dead letters back to the work queue.
    Redrive {
        /// Only these message ids (the events' `event_id`).
        #[arg(long = "message-id", required_unless_present = "all")]
        message_ids: Vec<String>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "message_ids")]
        all: bool,
    },
}

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => consume(settings).await,
        Command::Stats => {
            let pool = db::connect(&settings.database).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&ops::stats(&pool, &settings).await?)?
            );
            Ok(())
        }
        Command::DeadLetters(DeadLetterCommand::List { limit }) => {
            for letter in ops::list_dead_letters(&settings, limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
            Ok(())
        }
        Command::DeadLetters(DeadLetterCommand::Redrive { message_ids, all }) => {
            let selection = if all {
                ops::Selection::All
            } else {
                ops::Selection::MessageIds(message_ids)
            };
            println!("re-driven: {}", ops::redrive(&settings, selection).await?);
            Ok(())
        }
    }
}

async fn consume(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&settings.log, "worker")?;
    // Every message in flight holds a connection, and the watchdog needs one more.
    let mut database = settings.database.clone();
    database.max_connections = database
        .max_connections
        .max(u32::from(settings.worker.prefetch) + 1);
    let pool = db::connect(&database).await?;
    db::migrate(&pool).await?;
    let shutdown = CancellationToken::new();
    shutdown::cancel_on_signal(shutdown.clone());
    let watchdog = tokio::spawn(watchdog::run(
        pool.clone(),
        settings.worker.clone(),
        shutdown.clone(),
    ));
    Worker {
        pool,
        settings: Arc::new(settings),
    }
    .run(shutdown)
    .await;
    watchdog.await?;
    Ok(())
}
