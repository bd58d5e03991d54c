//! `/api/auth`: register, login, me, refresh (with rotation and reuse detection), logout.

use axum::{
    extract::{FromRequest, Request, State},
    http::StatusCode,
};
use chrono::Utc;
use common::domain::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    accounts::{self, NewUser, UserResponse},
    auth::{CurrentUser, password, refresh},
    detach::detached,
    error::{ApiError, ApiResult, Problem},
    extract::{AppJson, has_content_type, parse_json, read_body},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(me))
        .routes(routes!(refresh_tokens))
        .routes(routes!(logout))
}

/// A new customer account. There is no `role`: self-registration always makes a customer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    pub username: String,
    pub password: String,
    pub full_name: Option<String>,
}

/// Credentials: `username` may also hold the email; or send `email` instead.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: String,
}

/// The OAuth2 password-grant form sent by the docs' Authorize button.
#[derive(Debug, Deserialize)]
struct OAuth2PasswordForm {
    username: String,
    password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
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

#[utoipa::path(
    post, path = "/api/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = UserResponse),
        (status = 409, description = "Email or username taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input, or a `role` field", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    AppJson(body): AppJson<RegisterRequest>,
) -> ApiResult<(StatusCode, axum::Json<UserResponse>)> {
    accounts::validate_new_account(
        &body.email,
        &body.username,
        &body.password,
        body.full_name.as_deref(),
    )?;
    let password_hash = password::hash(body.password).await?;
    let mut conn = state.pool.acquire().await?;
    let user = accounts::insert(
        &mut conn,
        NewUser {
            email: body.email,
            username: body.username,
            full_name: body.full_name,
            password_hash,
            role: Role::Customer,
        },
    )
    .await?;
    tracing::info!(user_id = %user.id, "customer registered");
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

/// Login credentials from a JSON body or an OAuth2 password form.
pub struct Credentials {
    login: String,
    password: String,
}

impl<S: Send + Sync> FromRequest<S> for Credentials {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let headers = request.headers().clone();
        if has_content_type(&headers, "application/x-www-form-urlencoded") {
            let body = read_body(request, state).await?;
            let form: OAuth2PasswordForm = serde_urlencoded_from(&body)?;
            return Ok(Credentials {
                login: form.username,
                password: form.password,
            });
        }
        if !has_content_type(&headers, "application/json") {
            return Err(ApiError::UnsupportedMediaType(
                "Send JSON or an application/x-www-form-urlencoded OAuth2 form.",
            ));
        }
        let body: LoginRequest = parse_json(&read_body(request, state).await?)?;
        let login = body
            .username
            .or(body.email)
            .ok_or_else(|| ApiError::invalid("username", "username or email is required"))?;
        Ok(Credentials {
            login,
            password: body.password,
        })
    }
}

fn serde_urlencoded_from<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body).map_err(|e| ApiError::invalid("form", e.to_string()))
}

const BAD_CREDENTIALS: &str = "Incorrect username or password.";

#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth",
    request_body(content(
        (LoginRequest = "application/json"),
        (LoginRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Wrong credentials or inactive account", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed attempts for this account; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    credentials: Credentials,
) -> ApiResult<axum::Json<TokenResponse>> {
    state.login_throttle.check(&credentials.login)?;
    let mut conn = state.pool.acquire().await?;
    let user = accounts::find_by_login(&mut conn, &credentials.login).await?;
    drop(conn);
    // Verify against a dummy hash for unknown users so both failures cost the same.
    let stored = user.as_ref().map_or_else(
        || state.dummy_password_hash.to_string(),
        |u| u.password_hash.clone(),
    );
    let matches = password::verify(credentials.password, stored).await?;
    let user = match user {
        Some(user) if matches && user.is_active => user,
        _ => {
            state.login_throttle.record_failure(&credentials.login);
            return Err(ApiError::Unauthorized(BAD_CREDENTIALS));
        }
    };
    state.login_throttle.reset(&credentials.login);
    let mut tx = state.pool.begin().await?;
    let response = issue_tokens(&state, &mut tx, user, Uuid::now_v7()).await?;
    tx.commit().await?;
    Ok(axum::Json(response))
}

/// A new access token and a refresh token of `family_id`.
async fn issue_tokens(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    user: accounts::User,
    family_id: Uuid,
) -> ApiResult<TokenResponse> {
    let ttl = chrono::Duration::from_std(state.settings.auth.refresh_token_ttl)
        .map_err(anyhow::Error::from)?;
    let refresh_token = refresh::store(conn, user.id, family_id, Utc::now() + ttl).await?;
    Ok(TokenResponse {
        access_token: state.jwt.issue(user.id, user.role)?,
        refresh_token,
        token_type: "bearer",
        expires_in: state.jwt.ttl().as_secs(),
        user: user.into(),
    })
}

#[utoipa::path(
    get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = UserResponse),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<axum::Json<UserResponse>> {
    let mut conn = state.pool.acquire().await?;
    let user = accounts::find_by_id(&mut conn, user.id)
        .await?
        .ok_or(ApiError::Unauthorized("A valid bearer token is required."))?;
    Ok(axum::Json(user.into()))
}

const BAD_REFRESH: &str = "The refresh token is invalid, expired or revoked.";

#[utoipa::path(
    post, path = "/api/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair; the old refresh token is spent", body = TokenResponse),
        (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refresh_tokens(
    State(state): State<AppState>,
    AppJson(body): AppJson<RefreshRequest>,
) -> ApiResult<axum::Json<TokenResponse>> {
    // A rotation cut off after its commit would leave the client holding a spent token.
    detached(async move { rotate(&state, &body.refresh_token).await.map(axum::Json) }).await
}

/// Spends `token` and issues the next pair of its family; a replayed token revokes the family.
async fn rotate(state: &AppState, token: &str) -> ApiResult<TokenResponse> {
    let mut tx = state.pool.begin().await?;
    let stored = refresh::find_for_update(&mut tx, token)
        .await?
        .ok_or(ApiError::Unauthorized(BAD_REFRESH))?;
    if stored.rotated_at.is_some() && stored.revoked_at.is_none() {
        // A spent token came back: someone holds a copy. End every session of that login.
        refresh::revoke_family(&mut tx, stored.family_id).await?;
        tx.commit().await?;
        tracing::warn!(user_id = %stored.user_id, family_id = %stored.family_id, "refresh token reuse detected; family revoked");
        return Err(ApiError::Unauthorized(BAD_REFRESH));
    }
    if stored.revoked_at.is_some() || stored.expires_at <= Utc::now() {
        return Err(ApiError::Unauthorized(BAD_REFRESH));
    }
    let user = accounts::find_by_id(&mut tx, stored.user_id)
        .await?
        .filter(|user| user.is_active)
        .ok_or(ApiError::Unauthorized(BAD_REFRESH))?;
    refresh::mark_rotated(&mut tx, stored.id).await?;
    let response = issue_tokens(state, &mut tx, user, stored.family_id).await?;
    tx.commit().await?;
    Ok(response)
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
