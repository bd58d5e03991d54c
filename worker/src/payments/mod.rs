//! Calls to Stripe, made outside every order's transaction: the batch that decided a call
//! wrote it to `payment_calls`; here workers claim due calls (`SKIP LOCKED`, one at a time
//! per order, in the order they were decided), make them with their idempotency key, and
//! record the answer as an `order.payment_observed` command in the transaction that marks
//! the call done. A worker that dies mid-call leaves the call to be claimed again once its
//! lease runs out; Stripe answers the repeated call as the first, and the ledger's
//! references apply its effect once.

mod client;
mod expiry;

use std::{sync::Arc, time::Duration};

use common::{
    config::Settings,
    events::{EventType, PaymentObserved},
    stripe::{Observed, PaymentIntent},
    system_commands,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use client::{CallError, StripeClient};
pub use expiry::expire_unpaid;

/// Calls one worker makes at once.
const CONCURRENCY: i64 = 16;
/// How often an idle worker looks for due calls.
const POLL: Duration = Duration::from_millis(250);
/// The longest wait before a call that keeps failing is tried again.
const MAX_RETRY_WAIT_SECS: f64 = 3600.0;

#[derive(Debug, sqlx::FromRow)]
struct Call {
    id: Uuid,
    order_id: Uuid,
    kind: String,
    amount_minor: i64,
    idempotency_key: String,
    payment_intent_id: Option<String>,
    currency: String,
}

/// What a call came to.
enum Answer {
    /// The PaymentIntent was created: the order keeps its id and client secret.
    Created(PaymentIntent),
    /// What the provider did, for the order's queue; empty when it changed nothing.
    Observed(PaymentObserved),
}

/// The kinds of call, and what became of one.
const KINDS: [&str; 4] = ["create_intent", "capture", "cancel", "refund"];
const OUTCOMES: [&str; 3] = ["succeeded", "refused", "retried"];

/// Exports every call kind and outcome at zero, so an alert on refused calls sees the first.
pub fn zero_counters() {
    for kind in KINDS {
        for outcome in OUTCOMES {
            metrics::counter!("orderflow_payment_calls_total", "kind" => kind, "outcome" => outcome)
                .absolute(0);
        }
    }
}

/// Checks the Stripe settings at start-up, so a worker that could not call Stripe says so
/// before it consumes anything.
pub fn check(settings: &Settings) -> anyhow::Result<()> {
    if let Some(stripe) = &settings.payments.stripe {
        StripeClient::new(stripe)?;
    }
    Ok(())
}

/// Makes due calls until `stop`; returns at once unless Stripe is the provider.
pub async fn run(
    pool: PgPool,
    settings: Arc<Settings>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Some(stripe) = &settings.payments.stripe else {
        return Ok(());
    };
    let client = StripeClient::new(stripe)?;
    // Long enough for a call and its retries; a lease that ran out lets another worker
    // repeat the call, which its idempotency key makes harmless.
    let lease = stripe.call_timeout * 5 + Duration::from_secs(10);
    while !stop.is_cancelled() {
        let claimed = claim(&pool, lease).await;
        let idle = match claimed {
            Ok(calls) if !calls.is_empty() => {
                let made = calls.into_iter().map(|call| make(&pool, &client, call));
                futures_util::future::join_all(made).await;
                false
            }
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, "cannot claim payment calls");
                true
            }
        };
        if idle {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
    Ok(())
}

/// Due calls, each the oldest undone call of its order, leased to this worker.
async fn claim(pool: &PgPool, lease: Duration) -> sqlx::Result<Vec<Call>> {
    sqlx::query_as(
        "UPDATE payment_calls c SET attempts = c.attempts + 1,
             next_attempt_at = now() + make_interval(secs => $2)
         FROM orders o
         WHERE c.id IN (
             SELECT d.id FROM payment_calls d
             WHERE d.done_at IS NULL AND d.next_attempt_at <= now()
               AND NOT EXISTS (SELECT 1 FROM payment_calls e
                               WHERE e.order_id = d.order_id AND e.done_at IS NULL AND e.id < d.id)
             ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED)
           AND o.id = c.order_id
         RETURNING c.id, c.order_id, c.kind, c.amount_minor, c.idempotency_key,
                   o.payment_intent_id, o.currency",
    )
    .bind(CONCURRENCY)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

async fn make(pool: &PgPool, client: &StripeClient, call: Call) {
    let answer = ask(client, &call).await;
    let outcome = match &answer {
        Ok(_) => "succeeded",
        Err(CallError::Refused { .. }) => "refused",
        Err(CallError::Unavailable(_)) => "retried",
    };
    metrics::counter!("orderflow_payment_calls_total", "kind" => call.kind.clone(), "outcome" => outcome)
        .increment(1);
    let recorded = match answer {
        Ok(answer) => record(pool, &call, answer, None).await,
        Err(CallError::Refused { status, message }) => {
            tracing::warn!(order_id = %call.order_id, kind = call.kind, status, message, "Stripe refused a call");
            let error = format!("HTTP {status}: {message}");
            let observed = refusal(&call, &error);
            record(pool, &call, Answer::Observed(observed), Some(error)).await
        }
        Err(CallError::Unavailable(error)) => {
            tracing::warn!(order_id = %call.order_id, kind = call.kind, error, "Stripe call failed; retried later");
            retry_later(pool, &call, &error).await
        }
    };
    if let Err(error) = recorded {
        // The lease runs out and the call is made again, with the same key.
        tracing::warn!(order_id = %call.order_id, %error, "cannot record a payment call's answer");
    }
}

async fn ask(client: &StripeClient, call: &Call) -> Result<Answer, CallError> {
    let key = &call.idempotency_key;
    if call.kind == "create_intent" {
        let intent = client
            .create_intent(call.order_id, call.amount_minor, &call.currency, key)
            .await?;
        return Ok(Answer::Created(intent));
    }
    let Some(intent) = &call.payment_intent_id else {
        // Its PaymentIntent was never created (Stripe refused it): nothing to act on.
        return Ok(Answer::Observed(observed(call, Vec::new())));
    };
    if call.kind == "refund" {
        let refund = client.refund(intent, call.amount_minor, key).await?;
        return Ok(Answer::Observed(observed(call, refund.implied())));
    }
    let answer = if call.kind == "capture" {
        client.capture(intent, call.amount_minor, key).await
    } else {
        client.cancel(intent, key).await
    };
    let operations = match answer {
        Ok(intent) => intent.implied(false),
        // Captured or cancelled already (by this very call made before a crash, where the
        // server keeps no idempotency keys, or from Stripe's dashboard): apply what the
        // PaymentIntent is now.
        Err(CallError::Refused { .. }) => client.retrieve(intent).await?.implied(false),
        Err(error) => return Err(error),
    };
    Ok(Answer::Observed(observed(call, operations)))
}

fn observed(call: &Call, operations: Vec<Observed>) -> PaymentObserved {
    PaymentObserved {
        source: format!("stripe {} call", call.kind),
        operations,
        refund_refused: 0,
    }
}

/// A call Stripe refused: a refund gives its room back; others change nothing here.
fn refusal(call: &Call, error: &str) -> PaymentObserved {
    PaymentObserved {
        source: format!("stripe {} call refused: {error}", call.kind),
        operations: Vec::new(),
        refund_refused: if call.kind == "refund" {
            call.amount_minor
        } else {
            0
        },
    }
}

/// Marks the call done and queues what it observed, in one transaction; a call another
/// worker already recorded (its lease ran out) records nothing again.
async fn record(
    pool: &PgPool,
    call: &Call,
    answer: Answer,
    error: Option<String>,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE payment_calls SET done_at = now(), last_error = $2 WHERE id = $1 AND done_at IS NULL",
    )
    .bind(call.id)
    .bind(&error)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(());
    }
    match answer {
        Answer::Created(intent) => {
            sqlx::query(
                "UPDATE orders SET payment_intent_id = $2, payment_client_secret = $3, updated_at = now()
                 WHERE id = $1 AND payment_intent_id IS NULL",
            )
            .bind(call.order_id)
            .bind(&intent.id)
            .bind(&intent.client_secret)
            .execute(&mut *tx)
            .await?;
        }
        Answer::Observed(observed)
            if !observed.operations.is_empty() || observed.refund_refused > 0 =>
        {
            let correlation = format!("payment-call-{}", call.id);
            let kind = EventType::PaymentObserved;
            system_commands::queue(&mut tx, call.order_id, kind, &observed, &correlation).await?;
        }
        Answer::Observed(_) => {}
    }
    tx.commit().await
}

async fn retry_later(pool: &PgPool, call: &Call, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE payment_calls SET last_error = $2,
             next_attempt_at = now() + make_interval(secs => least(power(2, attempts), $3))
         WHERE id = $1 AND done_at IS NULL",
    )
    .bind(call.id)
    .bind(error)
    .bind(MAX_RETRY_WAIT_SECS)
    .execute(pool)
    .await?;
    Ok(())
}
