//! Operator commands: system statistics and resolving stalled orders (dead letters are in
//! `common::dead_letters`).

use anyhow::Context;
use common::{
    broker::{self, Topology},
    config::Settings,
    events::Actor,
    outbox, stall,
};
use lapin::{options::QueueDeclareOptions, types::FieldTable};
use serde::Serialize;
use sqlx::PgPool;

/// Counts an operator watches.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub orders_pending: i64,
    /// Orders whose oldest unapplied command is older than `STUCK_AFTER_SECS`: what the
    /// watchdog looks at.
    pub orders_stuck: i64,
    pub outbox_unpublished: i64,
    /// Rows the relay set aside (`worker outbox parked`).
    pub outbox_parked: i64,
    /// Orders flagged stalled (`worker orders stalled`).
    pub orders_stalled: i64,
    pub work_queue_messages: u32,
    pub dead_letters: u32,
    /// Webhook deliveries waiting for an attempt or a retry.
    pub webhook_deliveries_pending: i64,
    /// Webhook deliveries whose retries are spent (re-send them from the delivery log).
    pub webhook_deliveries_failed: i64,
    /// Endpoints switched off, by an admin or by the system (`disabled_reason`).
    pub webhook_endpoints_disabled: i64,
    /// Events waiting for a worker's webhook intake.
    pub webhook_queue_messages: u32,
}

pub async fn stats(pool: &PgPool, settings: &Settings) -> anyhow::Result<Stats> {
    let (orders_pending, orders_stuck, orders_stalled): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders WHERE status = 'pending'),
                (SELECT count(*) FROM orders o JOIN outbox x ON x.order_id = o.id AND x.seq = o.applied_seq + 1
                   AND x.routing_key NOT IN ('order.status_changed', 'order.stall_changed', 'order.payment_changed')
                 WHERE o.applied_seq < o.last_seq AND x.created_at < now() - make_interval(secs => $1)),
                (SELECT count(*) FROM orders WHERE stalled_at IS NOT NULL)",
    )
    .bind(settings.worker.stuck_after.as_secs_f64())
    .fetch_one(pool)
    .await?;
    let (webhook_deliveries_pending, webhook_deliveries_failed, webhook_endpoints_disabled): (
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed'),
                (SELECT count(*) FROM webhook_endpoints WHERE NOT enabled)
         FROM webhook_deliveries",
    )
    .fetch_one(pool)
    .await?;
    let backlog = outbox::backlog(pool).await?;
    let topology = Topology::new(&settings.broker);
    let connection = broker::connect(&settings.broker, "orderflow-ops").await?;
    let channel = connection.create_channel().await?;
    let count = |queue: String| {
        let channel = channel.clone();
        async move {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .map(|q| q.message_count())
                .with_context(|| format!("queue {queue} does not exist yet: start a worker once"))
        }
    };
    let work_queue_messages = count(topology.queue.clone()).await?;
    let dead_letters = count(topology.dead_letter_queue.clone()).await?;
    let webhook_queue_messages = count(topology.webhook_queue.clone()).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(Stats {
        orders_pending,
        orders_stuck,
        outbox_unpublished: backlog.pending + backlog.parked,
        outbox_parked: backlog.parked,
        orders_stalled,
        work_queue_messages,
        dead_letters,
        webhook_deliveries_pending,
        webhook_deliveries_failed,
        webhook_endpoints_disabled,
        webhook_queue_messages,
    })
}

/// What to do about stalled orders.
pub enum OrderAction {
    ListStalled {
        limit: i64,
    },
    Redrive {
        order_id: uuid::Uuid,
    },
    Skip {
        order_id: uuid::Uuid,
        reason: String,
    },
}

/// Runs `action`, printing what it did. A skip is recorded as done by the system, on an
/// operator's word.
pub async fn orders(pool: &PgPool, action: OrderAction) -> anyhow::Result<()> {
    let resolved = match action {
        OrderAction::ListStalled { limit } => {
            for order in stall::list(pool, limit).await? {
                println!("{}", serde_json::to_string(&order)?);
            }
            return Ok(());
        }
        OrderAction::Redrive { order_id } => {
            let mut tx = pool.begin().await?;
            let resolved = stall::redrive(&mut tx, order_id, &Actor::system()).await?;
            tx.commit().await?;
            resolved
        }
        OrderAction::Skip { order_id, reason } => {
            anyhow::ensure!(!reason.trim().is_empty(), "--reason must say why");
            let mut tx = pool.begin().await?;
            let resolved = stall::skip(&mut tx, order_id, &Actor::system(), reason.trim()).await?;
            tx.commit().await?;
            resolved
        }
    };
    println!("{}", serde_json::to_string(&resolved)?);
    Ok(())
}
