//! Stream tickets. A browser's `EventSource` cannot send an `Authorization` header, so a
//! signed-in client trades its token for a ticket and puts that in the stream's URL. A
//! ticket is random, stored only as a hash, good for one stream, and only for a moment:
//! a URL that ends up in a proxy's log or a browser's history is useless by then.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    accounts,
    auth::{CurrentUser, refresh},
};

/// How long a ticket stays good.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(60);
/// Unused tickets one user may hold; a newer one retires the oldest.
const TICKETS_PER_USER: i64 = 20;

/// Issues a ticket for `user`; returns it (shown once) and when it expires.
pub async fn issue(
    conn: &mut PgConnection,
    user: &CurrentUser,
) -> sqlx::Result<(String, chrono::DateTime<Utc>)> {
    let ticket = refresh::generate();
    let expires_at = Utc::now() + TICKET_LIFETIME;
    sqlx::query(
        "WITH issued AS (
             INSERT INTO stream_tickets (ticket_hash, user_id, token_version, expires_at)
             SELECT $1, id, token_version, $3 FROM users WHERE id = $2
         )
         DELETE FROM stream_tickets WHERE user_id = $2 AND (expires_at < now() OR ticket_hash IN (
             SELECT ticket_hash FROM stream_tickets WHERE user_id = $2
             ORDER BY expires_at DESC OFFSET $4))",
    )
    .bind(refresh::digest(&ticket))
    .bind(user.id)
    .bind(expires_at)
    .bind(TICKETS_PER_USER - 1)
    .execute(conn)
    .await?;
    Ok((ticket, expires_at))
}

/// The user a ticket was issued to, if it is good: it exists (using it deletes it),
/// has not expired, and its user is still active with the same token version.
pub async fn redeem(conn: &mut PgConnection, ticket: &str) -> sqlx::Result<Option<CurrentUser>> {
    let issued: Option<(Uuid, i32)> = sqlx::query_as(
        "DELETE FROM stream_tickets WHERE ticket_hash = $1
         RETURNING user_id, token_version, expires_at > now() AS fresh",
    )
    .bind(refresh::digest(ticket))
    .fetch_optional(&mut *conn)
    .await?
    .and_then(|(user, version, fresh): (Uuid, i32, bool)| fresh.then_some((user, version)));
    let Some((user_id, version)) = issued else {
        return Ok(None);
    };
    Ok(accounts::find_by_id(conn, user_id)
        .await?
        .filter(|user| user.is_active && user.token_version == version)
        .map(|user| CurrentUser {
            id: user.id,
            role: user.role,
            token_version: user.token_version,
        }))
}
