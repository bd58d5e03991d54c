//! Group commit for order placement. Requests hand their validated order to a few writer
//! tasks; each writer takes every order waiting when it becomes free (up to
//! [`MAX_BATCH`]), prices them all with one catalogue read and writes them all with one
//! statement — one round trip and one WAL flush however many there are — then answers each
//! request with its own order or its own error. Under load, orders arriving while a write
//! is in flight form the next batch; alone, an order is a batch of one and waits for
//! nobody.
//!
//! A batch whose read or write fails (an account deleted meanwhile breaks a foreign key,
//! the database drops the connection) is written again order by order, so one bad order
//! never fails its neighbours and each request gets the error that is its own.

use std::{collections::HashMap, sync::Arc};

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::{
    create::{CreateOrderRequest, new_order, place_alone},
    insert::{NewOrder, insert_orders},
    model::OrderResponse,
    pricing::{Wanted, resolve},
};
use crate::{
    auth::CurrentUser,
    error::{ApiError, ApiResult},
};

/// Most orders written by one statement (each holds at most 100 lines).
pub const MAX_BATCH: usize = 64;

/// The queue to the order writers; cloning it is cheap.
#[derive(Clone)]
pub struct OrderWriter {
    queue: mpsc::Sender<Placement>,
}

/// One request's order, waiting for a writer.
struct Placement {
    user: CurrentUser,
    request_id: String,
    request: CreateOrderRequest,
    answer: oneshot::Sender<ApiResult<OrderResponse>>,
}

impl OrderWriter {
    /// Starts `writers` writer tasks on `pool`. The queue holds `capacity` orders: the
    /// in-flight request bound, so a request never waits to join it. The writers stop once
    /// every handle is dropped and the queue is empty.
    pub fn start(pool: PgPool, writers: usize, capacity: usize) -> Self {
        let (queue, waiting) = mpsc::channel(capacity.max(1));
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..writers.max(1) {
            tokio::spawn(write_batches(pool.clone(), waiting.clone()));
        }
        Self { queue }
    }

    /// Writes `request` as `user`'s order (validated already) and returns it.
    pub(super) async fn place(
        &self,
        user: CurrentUser,
        request_id: String,
        request: CreateOrderRequest,
    ) -> ApiResult<OrderResponse> {
        let (answer, answered) = oneshot::channel();
        let placement = Placement {
            user,
            request_id,
            request,
            answer,
        };
        self.queue
            .send(placement)
            .await
            .map_err(|_| ApiError::Unavailable("The server is shutting down; retry shortly."))?;
        answered
            .await
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("the order writer stopped")))?
    }
}

/// One writer: takes what is waiting, writes it, answers, and goes back for more.
async fn write_batches(pool: PgPool, waiting: Arc<Mutex<mpsc::Receiver<Placement>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // The lock is held only while waiting to take; the other writers wait their turn
        // to take the orders that arrive while this batch is written.
        if waiting.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        metrics::histogram!("orderflow_order_batch_size").record(batch.len() as f64);
        write(&pool, std::mem::take(&mut batch)).await;
    }
}

/// Writes a batch together, or order by order when together fails, and answers each.
async fn write(pool: &PgPool, batch: Vec<Placement>) {
    let answers = match write_together(pool, &batch).await {
        Ok(answers) => answers,
        Err(error) => {
            tracing::warn!(orders = batch.len(), error = %error, "a batch of orders failed; writing them one by one");
            let mut answers = Vec::with_capacity(batch.len());
            for placement in &batch {
                answers.push(
                    place_alone(
                        pool,
                        &placement.user,
                        &placement.request_id,
                        &placement.request,
                    )
                    .await,
                );
            }
            answers
        }
    };
    for (placement, answer) in batch.into_iter().zip(answers) {
        // A request whose client hung up no longer listens; its order is written anyway.
        let _ = placement.answer.send(answer);
    }
}

/// Prices every order of the batch with one read and inserts the valid ones with one
/// statement. An order that cannot be priced gets its error; the others go ahead.
async fn write_together(
    pool: &PgPool,
    batch: &[Placement],
) -> sqlx::Result<Vec<ApiResult<OrderResponse>>> {
    let mut wanted = Wanted::default();
    for placement in batch {
        wanted.add(&placement.request.items);
    }
    let mut conn = pool.acquire().await?;
    let catalogue = wanted.fetch(&mut *conn).await?;
    let orders: Vec<ApiResult<NewOrder>> = batch
        .iter()
        .map(|p| {
            let lines = resolve(&catalogue, &p.request.items)?;
            new_order(&p.user, &p.request_id, &p.request, lines)
        })
        .collect();
    let valid: Vec<&NewOrder> = orders.iter().filter_map(|o| o.as_ref().ok()).collect();
    let mut rows: HashMap<Uuid, _> = if valid.is_empty() {
        HashMap::new()
    } else {
        let inserted = insert_orders(&mut *conn, &valid).await?;
        inserted.into_iter().map(|row| (row.id, row)).collect()
    };
    Ok(orders
        .into_iter()
        .zip(batch)
        .map(|(order, placement)| {
            let order = order?;
            let row = rows.remove(&order.id).ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("the batch insert returned no row"))
            })?;
            Ok(OrderResponse::new(row, order.items, placement.user.role))
        })
        .collect())
}
