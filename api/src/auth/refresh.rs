//! Refresh tokens: 256 bits shown once to the client, stored only as SHA-256.
//! Each use rotates the token; presenting an already-rotated token revokes its family,
//! since it means the token was copied — unless it comes back within the grace window,
//! when two tabs refreshing at once both get the same successor.
//!
//! A login's first token is random. Each successor is an HMAC of its predecessor under the
//! server key, so the successor can be shown again during the grace window without storing
//! any token in plain text; without the key it cannot be derived.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

/// A random token, the first of a login's family.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The token that replaces `token` when it is rotated.
pub fn successor(key: &[u8], token: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"orderflow-refresh-successor:");
    mac.update(token.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A stored token's identity, which the access token issued beside it reuses.
#[derive(sqlx::FromRow)]
pub struct Issued {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Stores `token` as the newest of `family_id` for `user_id`.
pub async fn store(
    conn: &mut PgConnection,
    token: &str,
    user_id: Uuid,
    family_id: Uuid,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<Issued> {
    sqlx::query_as(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5) RETURNING id, created_at, revoked_at",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(family_id)
    .bind(digest(token))
    .bind(expires_at)
    .fetch_one(conn)
    .await
}

pub async fn find_issued(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Issued>> {
    sqlx::query_as("SELECT id, created_at, revoked_at FROM refresh_tokens WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A stored token row, locked for the rest of the transaction.
#[derive(sqlx::FromRow)]
pub struct StoredToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub family_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The token that replaced this one at rotation.
    pub replaced_by: Option<Uuid>,
}

pub async fn find_for_update(
    conn: &mut PgConnection,
    token: &str,
) -> sqlx::Result<Option<StoredToken>> {
    sqlx::query_as(
        "SELECT id, user_id, family_id, expires_at, rotated_at, revoked_at, replaced_by
         FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(digest(token))
    .fetch_optional(conn)
    .await
}

pub async fn mark_rotated(
    conn: &mut PgConnection,
    id: Uuid,
    replaced_by: Uuid,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE refresh_tokens SET rotated_at = now(), replaced_by = $2 WHERE id = $1")
        .bind(id)
        .bind(replaced_by)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn revoke_family(conn: &mut PgConnection, family_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes every session of a user (deactivation, password change, logout everywhere).
pub async fn revoke_all_for_user(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}
