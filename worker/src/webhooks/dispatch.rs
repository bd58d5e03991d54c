//! The dispatcher: sends due deliveries, up to `WEBHOOK_CONCURRENCY` at once, and records
//! each attempt. Any number of workers share the work (rows are claimed with `SKIP LOCKED`
//! for longer than an attempt can take); a worker killed mid-attempt lets its claim lapse
//! and the delivery is sent again with the same `webhook-id`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use common::{
    config::Settings,
    webhooks::{SigningSecret, sign},
};
use sqlx::{PgConnection, PgPool};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    schedule::{Verdict, verdict},
    send::{Attempt, Sender, Signed},
};

/// How often the dispatcher looks for due deliveries when nothing wakes it.
const POLL: Duration = Duration::from_secs(1);
/// How long a stopping worker waits for attempts under way: a hanging receiver must not
/// hold up a deploy for a whole `WEBHOOK_TIMEOUT`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// A claim lasts twice the attempt's timeout and this much more, so a live attempt keeps
/// its row (recording included), while one whose worker died is sent again soon after.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

#[derive(sqlx::FromRow)]
struct Due {
    endpoint_id: Uuid,
    event_id: Uuid,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    body: String,
    attempts: i32,
}

pub struct Dispatcher {
    pool: PgPool,
    settings: Arc<Settings>,
    sender: Sender,
    /// Woken by the intake when it records deliveries.
    wake: Arc<Notify>,
    /// The earliest retry this dispatcher scheduled, so a short back-off is kept to the
    /// millisecond rather than to the next poll.
    next_retry: Mutex<Option<Instant>>,
    /// Attempts under way per endpoint, so a failing endpoint gets only its share.
    busy: Mutex<HashMap<Uuid, i64>>,
}

impl Dispatcher {
    pub fn new(pool: PgPool, settings: Arc<Settings>, sender: Sender, wake: Arc<Notify>) -> Self {
        Self {
            pool,
            settings,
            sender,
            wake,
            next_retry: Mutex::new(None),
            busy: Mutex::new(HashMap::new()),
        }
    }

    /// Sends until `stop`, then gives the attempts under way `SHUTDOWN_GRACE` to finish.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.settings.webhooks.concurrency));
        let mut attempts = JoinSet::new();
        while !stop.is_cancelled() {
            while attempts.try_join_next().is_some() {}
            let free = permits.available_permits();
            let due = if free == 0 {
                Vec::new()
            } else {
                self.claim(free).await.unwrap_or_else(|error| {
                    tracing::warn!(%error, "claiming webhook deliveries failed; retrying");
                    Vec::new()
                })
            };
            let full = free > 0 && due.len() == free;
            for delivery in due {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let busy = Busy::start(&self, delivery.endpoint_id);
                attempts.spawn(self.clone().deliver(delivery, permit, busy));
            }
            if full {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(self.next_look()) => {}
                Some(_) = attempts.join_next(), if free == 0 => {}
            }
        }
        // Attempts under way get a moment to finish; the rest are dropped, and their claims
        // lapse so another worker sends them again (same `webhook-id`).
        let finish = async { while attempts.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, finish).await.is_err() {
            tracing::info!(
                dropped = attempts.len(),
                "stopping with webhook attempts under way"
            );
            attempts.abort_all();
        }
    }

    /// The next poll, or the earliest retry this dispatcher scheduled if sooner. A retry is
    /// forgotten only once its time has come, so a wake-up in between does not lose it.
    fn next_look(&self) -> Instant {
        let now = Instant::now();
        let poll = now + POLL;
        let mut next_retry = self.next_retry.lock().unwrap_or_else(|e| e.into_inner());
        match *next_retry {
            Some(retry) if retry <= now => {
                *next_retry = None;
                retry
            }
            Some(retry) if retry < poll => retry,
            _ => poll,
        }
    }

    fn retry_at(&self, at: Instant) {
        let mut next_retry = self.next_retry.lock().unwrap_or_else(|e| e.into_inner());
        if next_retry.is_none_or(|earliest| at < earliest) {
            *next_retry = Some(at);
        }
    }

    /// Takes up to `limit` due deliveries of enabled endpoints, the longest due first. An
    /// endpoint that is failing gets at most a quarter of the slots, so one that is down
    /// (each attempt waiting out `WEBHOOK_TIMEOUT`) cannot hold every slot while the
    /// others' deliveries wait.
    async fn claim(&self, limit: usize) -> sqlx::Result<Vec<Due>> {
        let claim = self.settings.webhooks.timeout * 2 + CLAIM_MARGIN;
        let failing_share = (self.settings.webhooks.concurrency / 4).max(1);
        let (busy_endpoints, busy_attempts): (Vec<Uuid>, Vec<i64>) = self
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(endpoint, attempts)| (*endpoint, *attempts))
            .unzip();
        sqlx::query_as(
            "WITH due AS (
                 SELECT d.endpoint_id, d.event_id
                 FROM webhook_endpoints e
                 LEFT JOIN unnest($3::uuid[], $4::bigint[]) AS busy (endpoint_id, attempts)
                        ON busy.endpoint_id = e.id
                 CROSS JOIN LATERAL (
                     SELECT endpoint_id, event_id, next_attempt_at FROM webhook_deliveries
                     WHERE endpoint_id = e.id AND status = 'pending' AND next_attempt_at <= now()
                     ORDER BY next_attempt_at
                     LIMIT CASE WHEN e.failing_since IS NULL THEN $1
                                ELSE greatest($5 - coalesce(busy.attempts, 0), 0) END
                     FOR UPDATE SKIP LOCKED
                 ) d
                 WHERE e.enabled
                 ORDER BY d.next_attempt_at LIMIT $1
             ), claimed AS (
                 UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $2)
                 FROM due WHERE d.endpoint_id = due.endpoint_id AND d.event_id = due.event_id
                 RETURNING d.endpoint_id, d.event_id, d.body, d.attempts
             )
             SELECT c.endpoint_id, c.event_id, c.body, c.attempts, e.url, e.secret,
                    CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END
                        AS previous_secret
             FROM claimed c JOIN webhook_endpoints e ON e.id = c.endpoint_id",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(claim.as_secs_f64())
        .bind(busy_endpoints)
        .bind(busy_attempts)
        .bind(i64::try_from(failing_share).unwrap_or(1))
        .fetch_all(&self.pool)
        .await
    }

    async fn deliver(self: Arc<Self>, due: Due, _permit: OwnedSemaphorePermit, _busy: Busy) {
        let id = due.event_id.to_string();
        let timestamp = Utc::now().timestamp();
        // During a rotation both secrets sign, so receivers can switch at their own pace.
        let signature = [Some(&due.secret), due.previous_secret.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|secret| SigningSecret::parse(secret))
            .map(|secret| sign(&secret, &id, timestamp, &due.body))
            .collect::<Vec<_>>()
            .join(" ");
        let signed = Signed {
            id: &id,
            timestamp,
            signature: &signature,
        };
        let attempt = self.sender.post(&due.url, &signed, due.body.clone()).await;
        let attempts_before = usize::try_from(due.attempts).unwrap_or_default();
        let verdict = verdict(
            &attempt.result,
            attempts_before,
            &self.settings.webhooks.retry_schedule,
            rand::random(),
        );
        let outcome = match verdict {
            Verdict::Delivered => "delivered",
            Verdict::Gone => "gone",
            Verdict::Retry(_) => "retry",
            Verdict::Failed => "failed",
        };
        metrics::counter!("orderflow_webhook_attempts_total", "outcome" => outcome).increment(1);
        match self.record(&due, &attempt, verdict).await {
            Ok(()) => {
                if let Verdict::Retry(wait) = verdict {
                    self.retry_at(Instant::now() + wait);
                    self.wake.notify_one();
                }
            }
            // The claim lapses and the delivery is attempted again.
            Err(error) => {
                tracing::warn!(%error, event_id = %due.event_id, "recording a webhook attempt failed");
            }
        }
    }

    /// Logs the attempt and moves the delivery (and, on failure, the endpoint) on, in one
    /// transaction.
    async fn record(&self, due: &Due, attempt: &Attempt, verdict: Verdict) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        let (status, excerpt, error) = match &attempt.result {
            Ok(answer) => (
                Some(i32::from(answer.status.as_u16())),
                answer.excerpt.as_str(),
                None,
            ),
            Err(error) => (None, "", Some(error.as_str())),
        };
        sqlx::query(
            "INSERT INTO webhook_attempts
                 (endpoint_id, event_id, response_status, latency_ms, response_excerpt, error)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(due.endpoint_id)
        .bind(due.event_id)
        .bind(status)
        .bind(i32::try_from(attempt.latency.as_millis()).unwrap_or(i32::MAX))
        .bind(excerpt.replace('\0', ""))
        .bind(error)
        .execute(&mut *tx)
        .await?;
        let (new_status, retry_in) = match verdict {
            Verdict::Delivered => ("succeeded", None),
            Verdict::Retry(wait) => ("pending", Some(wait)),
            Verdict::Gone | Verdict::Failed => ("failed", None),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $3, attempts = attempts + 1,
                 last_attempt_at = now(),
                 next_attempt_at = now() + make_interval(secs => coalesce($4, 0))
             WHERE endpoint_id = $1 AND event_id = $2",
        )
        .bind(due.endpoint_id)
        .bind(due.event_id)
        .bind(new_status)
        .bind(retry_in.map(|wait| wait.as_secs_f64()))
        .execute(&mut *tx)
        .await?;
        match verdict {
            Verdict::Delivered => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET failing_since = NULL
                     WHERE id = $1 AND failing_since IS NOT NULL",
                )
                .bind(due.endpoint_id)
                .execute(&mut *tx)
                .await?;
            }
            Verdict::Gone => {
                disable(&mut tx, due.endpoint_id, "the endpoint answered 410 Gone").await?;
            }
            Verdict::Retry(_) | Verdict::Failed => {
                self.note_failure(&mut tx, due.endpoint_id).await?
            }
        }
        tx.commit().await
    }

    /// Starts or continues the endpoint's run of failures; one that has lasted
    /// `WEBHOOK_DISABLE_AFTER` disables it.
    async fn note_failure(&self, conn: &mut PgConnection, endpoint_id: Uuid) -> sqlx::Result<()> {
        let disable_after = self.settings.webhooks.disable_after;
        let overdue: bool = sqlx::query_scalar(
            "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now())
             WHERE id = $1
             RETURNING failing_since <= now() - make_interval(secs => $2)",
        )
        .bind(endpoint_id)
        .bind(disable_after.as_secs_f64())
        .fetch_one(&mut *conn)
        .await?;
        if overdue {
            let reason = format!("no delivery succeeded for {}", humanize(disable_after));
            disable(conn, endpoint_id, &reason).await?;
        }
        Ok(())
    }
}

/// One attempt under way, counted against its endpoint until dropped.
struct Busy {
    dispatcher: Arc<Dispatcher>,
    endpoint_id: Uuid,
}

impl Busy {
    fn start(dispatcher: &Arc<Dispatcher>, endpoint_id: Uuid) -> Self {
        let mut busy = dispatcher.busy.lock().unwrap_or_else(|e| e.into_inner());
        *busy.entry(endpoint_id).or_default() += 1;
        Self {
            dispatcher: dispatcher.clone(),
            endpoint_id,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut busy = self
            .dispatcher
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(attempts) = busy.get_mut(&self.endpoint_id) {
            *attempts -= 1;
            if *attempts <= 0 {
                busy.remove(&self.endpoint_id);
            }
        }
    }
}

/// Switches the endpoint off (its pending deliveries wait) and tells every active admin.
async fn disable(conn: &mut PgConnection, endpoint_id: Uuid, reason: &str) -> sqlx::Result<()> {
    let url: Option<String> = sqlx::query_scalar(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = now()
         WHERE id = $1 AND enabled RETURNING url",
    )
    .bind(endpoint_id)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(url) = url else {
        return Ok(());
    };
    let shown = url.split(['?', '#']).next().unwrap_or_default();
    tracing::warn!(%endpoint_id, url = shown, reason, "webhook endpoint disabled");
    metrics::counter!("orderflow_webhook_endpoints_disabled_total").increment(1);
    let admins: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE role = 'admin' AND is_active")
            .fetch_all(&mut *conn)
            .await?;
    let ids: Vec<Uuid> = admins.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO notifications (id, user_id, kind, message)
         SELECT id, user_id, 'webhook_endpoint_disabled', $3
         FROM unnest($1::uuid[], $2::uuid[]) AS n (id, user_id)",
    )
    .bind(ids)
    .bind(admins)
    .bind(format!(
        "Webhook endpoint {shown} ({endpoint_id}) was disabled: {reason}. \
         Fix the receiver, enable the endpoint again and re-send its failed deliveries."
    ))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `5 days`, `1 hour`, `90 seconds`.
fn humanize(duration: Duration) -> String {
    let (count, unit) = match duration.as_secs() {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => (s / 3_600, "hour"),
        s => (s, "second"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural}")
}
