//! `Idempotency-Key` for creating requests, scoped to the user.
//!
//! The first request with a key claims it in its own committed statement; its response is
//! stored in the same transaction as the resource it created, so a replay returns exactly
//! what the first request answered. A second request while the first is still running gets
//! 409; the same key with another body gets 422. A claim whose request died without
//! answering is taken over after a minute. Keys live at least 24 hours.

use std::future::Future;

use axum::{
    Json,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    detach::detached,
    error::{ApiError, ApiResult},
};

pub const HEADER: &str = "idempotency-key";

/// A validated key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Option<Self>> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(None);
        };
        let key = value.to_str().unwrap_or_default();
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(Some(Self(key.to_owned())))
    }
}

/// What the first look at a key decided.
enum Claim {
    /// The key is ours: process the request and `complete` it.
    Proceed,
    /// The key was used for this very request: answer with its stored response.
    Replay(StatusCode, serde_json::Value),
}

/// Fingerprint of a request body; JSON objects hash the same whatever their key order.
pub fn fingerprint(body: &serde_json::Value) -> Vec<u8> {
    let mut hasher = Sha256::new();
    feed(&mut hasher, body);
    hasher.finalize().to_vec()
}

fn feed(hasher: &mut Sha256, value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for key in keys {
                hasher.update(
                    serde_json::Value::String(key.clone())
                        .to_string()
                        .as_bytes(),
                );
                hasher.update(b":");
                feed(hasher, &map[key]);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        serde_json::Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                feed(hasher, item);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

#[derive(sqlx::FromRow)]
struct Stored {
    request_hash: Vec<u8>,
    response_status: Option<i16>,
    response_body: Option<serde_json::Value>,
}

async fn claim(
    pool: &PgPool,
    user_id: Uuid,
    key: &IdempotencyKey,
    request_hash: &[u8],
) -> ApiResult<Claim> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, created_at = now()
         WHERE idempotency_keys.response_status IS NULL
           AND idempotency_keys.created_at < now() - interval '1 minute'",
    )
    .bind(user_id)
    .bind(&key.0)
    .bind(request_hash)
    .execute(pool)
    .await?;
    if claimed.rows_affected() == 1 {
        return Ok(Claim::Proceed);
    }
    let stored: Stored = sqlx::query_as(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(&key.0)
    .fetch_one(pool)
    .await?;
    if stored.request_hash != request_hash {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "was already used with a different request body",
        ));
    }
    match (stored.response_status, stored.response_body) {
        (Some(status), Some(body)) => {
            let status = u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK);
            Ok(Claim::Replay(status, body))
        }
        _ => Err(ApiError::conflict(
            "request_in_flight",
            "A request with this Idempotency-Key is still being processed; retry shortly.",
        )),
    }
}

/// Stores the response of a keyed request, inside the transaction that created the
/// resource; does nothing for a request without a key.
pub async fn complete(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: Option<&IdempotencyKey>,
    status: StatusCode,
    body: &impl Serialize,
) -> ApiResult<()> {
    let Some(key) = key else { return Ok(()) };
    let body = serde_json::to_value(body).map_err(anyhow::Error::from)?;
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = $3, response_body = $4 WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(&key.0)
    .bind(i16::try_from(status.as_u16()).unwrap_or(200))
    .bind(body)
    .execute(conn)
    .await?;
    Ok(())
}

/// What a creating request came to.
pub enum Created<T> {
    /// `create` ran and made this.
    New(T),
    /// The same request was answered before: here is that answer again.
    Replayed(Response),
}

/// Runs a creating request at most once per `Idempotency-Key` (when it has one). `create`
/// gets the key and stores its response with `complete` in its own transaction; when it
/// fails, the key is freed. It runs detached, so a client hanging up cannot leave its key
/// claimed or its transaction half done.
pub async fn once<T, Fut>(
    pool: PgPool,
    user_id: Uuid,
    headers: &HeaderMap,
    body: &serde_json::Value,
    create: impl FnOnce(Option<IdempotencyKey>) -> Fut,
) -> ApiResult<Created<T>>
where
    T: Send + 'static,
    Fut: Future<Output = ApiResult<T>> + Send + 'static,
{
    let key = IdempotencyKey::from_headers(headers)?;
    if let Some(key) = &key
        && let Claim::Replay(status, stored) =
            claim(&pool, user_id, key, &fingerprint(body)).await?
    {
        let replay = (status, [("idempotent-replayed", "true")], Json(stored));
        return Ok(Created::Replayed(replay.into_response()));
    }
    let work = create(key.clone());
    detached(async move {
        let result = work.await;
        if result.is_err()
            && let Some(key) = &key
        {
            release(&pool, user_id, key).await;
        }
        result
    })
    .await
    .map(Created::New)
}

/// Frees the key of a request that failed, so the client may retry it once fixed.
async fn release(pool: &PgPool, user_id: Uuid, key: &IdempotencyKey) {
    let released = sqlx::query(
        "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND response_status IS NULL",
    )
    .bind(user_id)
    .bind(&key.0)
    .execute(pool)
    .await;
    if let Err(error) = released {
        // The claim expires by itself after a minute.
        tracing::warn!(%error, "could not release an idempotency key");
    }
}

#[cfg(test)]
mod tests {
    use super::fingerprint;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_fingerprint() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"a":1,"b":{"x":[1,2],"y":null}}"#).expect("json");
        let b: serde_json::Value =
            serde_json::from_str(r#"{"b":{"y":null,"x":[1,2]},"a":1}"#).expect("json");
        assert_eq!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn different_bodies_differ() {
        assert_ne!(fingerprint(&json!({"a": 1})), fingerprint(&json!({"a": 2})));
        assert_ne!(fingerprint(&json!([1, 2])), fingerprint(&json!([2, 1])));
    }
}
