//! `worker` binary: consumes order commands until Ctrl-C or SIGTERM (the default), or runs
//! an operator command.

use std::sync::Arc;

use clap::{Parser, Subcommand};
use common::{config::Settings, db, dead_letters, metrics, outbox, relay, shutdown, telemetry};
use tokio_util::sync::CancellationToken;
use worker::{consumer::Worker, mail::Mailer, ops, watchdog, webhooks};

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
    /// List or resolve stalled orders.
    #[command(subcommand)]
    Orders(OrderCommand),
    /// List or re-queue outbox rows the relay parked.
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

#[derive(Debug, Subcommand)]
enum OrderCommand {
    /// Print stalled orders (longest-stalled first) as JSON lines.
    Stalled {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Publish the order's unapplied commands again and clear its stalled flag.
    Redrive { order_id: uuid::Uuid },
    /// Record the command the order is stalled on as done without effect, then re-drive
    /// the rest.
    Skip {
        order_id: uuid::Uuid,
        /// Why; kept on the order's timeline.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Print parked rows as JSON lines.
    Parked {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Hand parked rows back to the relay with a fresh attempt budget.
    Requeue {
        /// Only these outbox row ids.
        #[arg(long = "id", required_unless_present = "all")]
        ids: Vec<i64>,
        /// Every parked row.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
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
            for letter in dead_letters::list(&settings, limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
            Ok(())
        }
        Command::DeadLetters(DeadLetterCommand::Redrive { message_ids, all }) => {
            let selection = if all {
                dead_letters::Selection::All
            } else {
                dead_letters::Selection::MessageIds(message_ids)
            };
            println!(
                "re-driven: {}",
                dead_letters::redrive(&settings, selection).await?
            );
            Ok(())
        }
        Command::Orders(command) => {
            let pool = db::connect(&settings.database).await?;
            ops::orders(&pool, command.into()).await
        }
        Command::Outbox(OutboxCommand::Parked { limit }) => {
            let pool = db::connect(&settings.database).await?;
            for row in outbox::parked(&pool, limit).await? {
                println!("{}", serde_json::to_string(&row)?);
            }
            Ok(())
        }
        Command::Outbox(OutboxCommand::Requeue { ids, all }) => {
            let pool = db::connect(&settings.database).await?;
            let ids = (!all).then_some(ids.as_slice());
            println!("re-queued: {}", outbox::requeue(&pool, ids).await?);
            Ok(())
        }
    }
}

impl From<OrderCommand> for ops::OrderAction {
    fn from(command: OrderCommand) -> Self {
        match command {
            OrderCommand::Stalled { limit } => ops::OrderAction::ListStalled { limit },
            OrderCommand::Redrive { order_id } => ops::OrderAction::Redrive { order_id },
            OrderCommand::Skip { order_id, reason } => ops::OrderAction::Skip { order_id, reason },
        }
    }
}

async fn consume(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&settings.log, "worker")?;
    Mailer::check(&settings.email)?;
    webhooks::Sender::new(&settings.webhooks)?;
    worker::payments::check(&settings)?;
    // Every batch in flight holds a connection (its fallback too, one at a time); the relay
    // and the watchdog need one each.
    let mut database = settings.database.clone();
    let needed = u32::try_from(settings.worker.batches_in_flight()).unwrap_or(u32::MAX);
    database.max_connections = database.max_connections.max(needed.saturating_add(2));
    let pool = db::connect(&database).await?;
    db::migrate(&pool).await?;
    let metrics_listener = match &settings.metrics.worker_addr {
        Some(address) => Some(metrics::listen(address).await?),
        None => None,
    };
    metrics::handle();
    relay::zero_counters();
    worker::delivery::zero_counters();
    if settings.payments.stripe.is_some() {
        worker::payments::zero_counters();
    }
    let shutdown = CancellationToken::new();
    shutdown::cancel_on_signal(shutdown.clone());
    if let Some(listener) = metrics_listener {
        tokio::spawn(metrics::serve(listener, shutdown.clone()));
    }
    tokio::spawn(outbox::export_backlog(pool.clone(), shutdown.clone()));
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
