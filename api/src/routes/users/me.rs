//! A user's own profile.

use axum::{Json, extract::State};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::{
    accounts::{self, PASSWORD_LENGTH, User, UserResponse, user_columns},
    auth::{
        CurrentUser,
        throttle::{AccountKey, AccountLimit},
    },
    error::{ApiError, ApiResult, Problem},
    extract::AppJson,
    state::AppState,
    validation::Violations,
};

use super::load;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    #[schema(format = "email", max_length = 254)]
    pub email: Option<String>,
    #[schema(min_length = 3, max_length = 50, pattern = r"^[A-Za-z0-9._-]{3,50}$")]
    pub username: Option<String>,
    #[schema(max_length = 255)]
    pub full_name: Option<String>,
    /// Required to set `new_password`.
    #[schema(min_length = 1, max_length = 128)]
    pub current_password: Option<String>,
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: Option<String>,
    /// `false` stops order emails; `true` resumes them.
    pub order_emails: Option<bool>,
}

/// An admin's changes to any account.
#[utoipa::path(
    get, path = "/api/users/me", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = UserResponse),
        (status = 401, description = "Missing or invalid bearer token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_me(
    State(state): State<AppState>,
    me: CurrentUser,
) -> ApiResult<Json<UserResponse>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(load(&mut conn, me.id).await?.into()))
}

#[utoipa::path(
    put, path = "/api/users/me", tag = "users", security(("bearer" = [])),
    request_body = UpdateMeRequest,
    responses(
        (status = 200, description = "OK", body = UserResponse),
        (status = 401, description = "Missing or invalid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email or username taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, a `role` field, or a wrong current password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords for this account (shared with sign-in); see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_me(
    State(state): State<AppState>,
    me: CurrentUser,
    AppJson(body): AppJson<UpdateMeRequest>,
) -> ApiResult<Json<UserResponse>> {
    let mut v = Violations::new();
    accounts::check_profile(
        &mut v,
        body.email.as_deref(),
        body.username.as_deref(),
        body.full_name.as_deref(),
    );
    if let Some(current_password) = &body.current_password {
        v.length(current_password, "current_password", 1, PASSWORD_LENGTH.1);
    }
    if let Some(new_password) = &body.new_password {
        v.length(
            new_password,
            "new_password",
            PASSWORD_LENGTH.0,
            PASSWORD_LENGTH.1,
        );
        v.check(
            body.current_password.is_some(),
            "current_password",
            "is required to change the password",
        );
    }
    v.finish()?;

    let new_hash = match (body.new_password, body.current_password) {
        (Some(new_password), Some(current_password)) => {
            Some(change_password(&state, me.id, current_password, new_password).await?)
        }
        _ => None,
    };
    let mut tx = state.pool.begin().await?;
    let user: User = sqlx::query_as(concat!(
        "UPDATE users SET email = COALESCE($2, email), username = COALESCE($3, username),
             full_name = COALESCE($4, full_name), password_hash = COALESCE($5, password_hash),
             order_emails = COALESCE($6, order_emails), updated_at = now()
         WHERE id = $1 RETURNING ",
        user_columns!()
    ))
    .bind(me.id)
    .bind(body.email.as_deref().map(str::trim))
    .bind(body.username.as_deref().map(str::trim))
    .bind(body.full_name.as_deref().map(str::trim))
    .bind(&new_hash)
    .bind(body.order_emails)
    .fetch_one(&mut *tx)
    .await
    .map_err(accounts::map_unique)?;
    if new_hash.is_some() {
        // A new password ends every session, this one included: sign in again.
        accounts::end_all_sessions(&mut tx, me.id).await?;
    }
    tx.commit().await?;
    Ok(Json(user.into()))
}

/// Checks `current` (a guess counts against the account's sign-in budget, or this would be
/// an unthrottled password oracle) and hashes `new`.
async fn change_password(
    state: &AppState,
    user_id: uuid::Uuid,
    current: String,
    new: String,
) -> ApiResult<String> {
    let mut conn = state.pool.acquire().await?;
    let stored = load(&mut conn, user_id).await?.password_hash;
    state
        .guards
        .accounts
        .reserve(&mut conn, AccountKey::User(user_id))
        .await?;
    // No connection is held while the hash waits for a slot.
    drop(conn);
    if !state.guards.passwords.verify(current, stored).await? {
        return Err(ApiError::invalid("current_password", "is incorrect"));
    }
    let mut conn = state.pool.acquire().await?;
    AccountLimit::clear(&mut conn, AccountKey::User(user_id)).await?;
    drop(conn);
    state.guards.passwords.hash(new).await
}
