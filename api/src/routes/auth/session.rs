//! Sessions: issuing a token pair, refresh with rotation (reuse revokes the family, except
//! within the grace window), logout, and logout everywhere.

use axum::{extract::State, http::StatusCode};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    accounts::{self, UserResponse},
    auth::{CurrentUser, refresh},
    detach::detached,
    error::{ApiError, ApiResult, Problem},
    extract::AppJson,
    state::AppState,
    validation::Violations,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(min_length = 1, max_length = 128)]
    pub refresh_token: String,
}

impl RefreshRequest {
    /// A token of a length no token has is refused as invalid input (422), not looked up.
    fn check(&self) -> ApiResult<()> {
        Violations::new()
            .length(&self.refresh_token, "refresh_token", 1, 128)
            .finish()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user: UserResponse,
}

/// The response carrying `refresh_token` (just stored as `issued`) and its access token.
/// The access token takes its id and time from the refresh token's row, so issuing it
/// again for the same row gives the very same token.
fn token_pair(
    state: &AppState,
    user: accounts::User,
    refresh_token: String,
    issued: &refresh::Issued,
) -> ApiResult<TokenResponse> {
    Ok(TokenResponse {
        access_token: state
            .jwt
            .issue(&user.subject(), issued.created_at, issued.id)?,
        refresh_token,
        token_type: "bearer",
        expires_in: state.jwt.ttl().as_secs(),
        user: user.into(),
    })
}

/// A new session for `user`: a random refresh token opening a new family.
pub async fn open_session(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    user: accounts::User,
) -> ApiResult<TokenResponse> {
    let token = refresh::generate();
    let issued = refresh::store(conn, &token, user.id, Uuid::now_v7(), expiry(state)?).await?;
    token_pair(state, user, token, &issued)
}

fn expiry(state: &AppState) -> ApiResult<chrono::DateTime<Utc>> {
    let ttl = chrono::Duration::from_std(state.settings.auth.refresh_token_ttl)
        .map_err(anyhow::Error::from)?;
    Ok(Utc::now() + ttl)
}

const BAD_REFRESH: &str = "The refresh token is invalid, expired or revoked.";

#[utoipa::path(
    post, path = "/api/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair; the old refresh token is spent. \
            Presented again within the grace window it returns the same pair.", body = TokenResponse),
        (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refresh_tokens(
    State(state): State<AppState>,
    AppJson(body): AppJson<RefreshRequest>,
) -> ApiResult<axum::Json<TokenResponse>> {
    body.check()?;
    // A rotation cut off after its commit would leave the client holding a spent token.
    detached(async move { rotate(&state, &body.refresh_token).await.map(axum::Json) }).await
}

/// Spends `token` and issues the next pair of its family; a replayed token revokes the
/// family unless it is replayed within the grace window, which answers the same pair.
async fn rotate(state: &AppState, token: &str) -> ApiResult<TokenResponse> {
    let mut tx = state.pool.begin().await?;
    let stored = refresh::find_for_update(&mut tx, token)
        .await?
        .ok_or(ApiError::Unauthorized(BAD_REFRESH))?;
    if stored.revoked_at.is_some() || stored.expires_at <= Utc::now() {
        return Err(ApiError::Unauthorized(BAD_REFRESH));
    }
    let user = accounts::find_by_id(&mut tx, stored.user_id)
        .await?
        .filter(|user| user.is_active)
        .ok_or(ApiError::Unauthorized(BAD_REFRESH))?;
    let key = state.settings.auth.secret_key.expose().as_bytes();
    let next_token = refresh::successor(key, token);
    if let Some(rotated_at) = stored.rotated_at {
        let grace = chrono::Duration::from_std(state.settings.auth.refresh_reuse_grace)
            .map_err(anyhow::Error::from)?;
        let successor = match stored.replaced_by {
            Some(id) if Utc::now() - rotated_at <= grace => {
                refresh::find_issued(&mut tx, id).await?
            }
            _ => None,
        };
        if let Some(issued) = successor.filter(|issued| issued.revoked_at.is_none()) {
            // Two refreshes raced (two tabs, a retried request): both get the same pair.
            tx.commit().await?;
            return token_pair(state, user, next_token, &issued);
        }
        // A spent token came back: someone holds a copy. End every session of that login.
        refresh::revoke_family(&mut tx, stored.family_id).await?;
        tx.commit().await?;
        tracing::warn!(user_id = %stored.user_id, family_id = %stored.family_id, "refresh token reuse detected; family revoked");
        return Err(ApiError::Unauthorized(BAD_REFRESH));
    }
    let issued = refresh::store(
        &mut tx,
        &next_token,
        user.id,
        stored.family_id,
        expiry(state)?,
    )
    .await?;
    refresh::mark_rotated(&mut tx, stored.id, issued.id).await?;
    tx.commit().await?;
    token_pair(state, user, next_token, &issued)
}

#[utoipa::path(
    post, path = "/api/auth/logout", tag = "auth", security(("bearer" = [])),
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The refresh token and its family are revoked"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(body): AppJson<RefreshRequest>,
) -> ApiResult<StatusCode> {
    body.check()?;
    let mut tx = state.pool.begin().await?;
    // Only the caller's own tokens can be revoked; an unknown one is already useless.
    if let Some(stored) = refresh::find_for_update(&mut tx, &body.refresh_token).await?
        && stored.user_id == user.id
    {
        refresh::revoke_family(&mut tx, stored.family_id).await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/api/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session of the caller ends: all refresh tokens are \
            revoked and every access token issued so far stops working"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout_everywhere(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<StatusCode> {
    let mut tx = state.pool.begin().await?;
    accounts::end_all_sessions(&mut tx, user.id).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "signed out everywhere");
    Ok(StatusCode::NO_CONTENT)
}
